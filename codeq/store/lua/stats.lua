-- stats.lua: depths of the queues of one partition, from the queue registry. Read-only.
-- KEYS[1..15] partition keys (lib.lua).
-- ARGV[1] 'all' | 'prefix' | 'list'; ARGV[2..] for 'prefix' one queue-segment prefix (a
-- tenant's "escaped-tenant/"), for 'list' the queue segments wanted.
-- Returns a flat list: q, registry JSON, ready, delayed, inProgress, dlq, q, ...
-- (registry JSON is '' for a listed queue that was never created).
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
local out = {}
for i, q in ipairs(qs) do
  local counts = redis.call('HMGET', K.qstats, q .. '!ready', q .. '!delayed', q .. '!leased',
                            q .. '!dlq')
  out[#out + 1] = q
  out[#out + 1] = metas[i]
  for j = 1, 4 do out[#out + 1] = tonumber(counts[j] or 0) end
end
return out
