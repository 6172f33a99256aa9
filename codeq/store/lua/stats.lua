-- stats.lua: depths, outcome totals and rate snapshots of the queues of one partition, from the
-- queue registry. Read-only.
-- KEYS[1..15] partition keys (lib.lua); KEYS[16] the rates ring (sweep.lua).
-- ARGV[1] 'all' | 'prefix' | 'list'; ARGV[2..] for 'prefix' one queue-segment prefix (a
-- tenant's "escaped-tenant/"), for 'list' the queue segments wanted.
-- Returns a flat list: the time of the ring's last snapshot ('' when none), then 27 entries per queue: q, registry JSON, ready, delayed, inProgress, dlq,
-- the five totals of OUTCOMES (lib.lua), then the RATE_SLOTS snapshots of the rates ring ('' where
-- there is none) (registry JSON is '' for a listed queue that was never created).
local mode = ARGV[1]
local qs, metas = {}, {}
if mode == 'list' then
  for i = 2, #ARGV do
    qs[#qs + 1] = ARGV[i]
    metas[#qs] = redis.call('HGET', K.queues, ARGV[i]) or ''
  end
else
  local all = redis.call('HGETALL', K.queues)
  local prefix = ARGV[2] or ''
  for i = 1, #all, 2 do
    if mode == 'all' or string.sub(all[i], 1, #prefix) == prefix then
      qs[#qs + 1] = all[i]
      metas[#qs] = all[i + 1]
    end
  end
end
local RATE_SLOTS = 16
local out = {redis.call('HGET', KEYS[16], '!at') or ''}
for i, q in ipairs(qs) do
  local fields = {q .. '!ready', q .. '!delayed', q .. '!leased', q .. '!dlq'}
  for _, kind in ipairs(OUTCOMES) do fields[#fields + 1] = q .. '!n:' .. kind end
  local counts = redis.call('HMGET', K.qstats, unpack(fields))
  out[#out + 1] = q
  out[#out + 1] = metas[i]
  for j = 1, #fields do out[#out + 1] = tonumber(counts[j] or 0) end
  local slots = {}
  for j = 0, RATE_SLOTS - 1 do slots[#slots + 1] = q .. '!' .. j end
  for _, v in ipairs(redis.call('HMGET', KEYS[16], unpack(slots))) do out[#out + 1] = v or '' end
end
return out
