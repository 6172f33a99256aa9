-- sweep.lua: the sweeper's pass over one partition, under the partition's sweep lock.
-- KEYS[1..15] partition keys (lib.lua); KEYS[13] is the lock.
-- ARGV[1] lock token (the sweeping process), ARGV[2] lock ms, ARGV[3] bound per step,
-- ARGV[4] backoff table "ms,ms,...", ARGV[5] DLQ retention ms.
-- The lock is re-entrant for its holder, so a pass that hit its bound can go on at once.
-- Returns {'LOCKED'} | {'OK', promoted, expired, purged, more (0|1)}.
-- Events: those of promotion (task.ready) and lease expiry.
local holder = redis.call('GET', K.lock)
if holder and holder ~= ARGV[1] then return {'LOCKED'} end
redis.call('SET', K.lock, ARGV[1], 'PX', ARGV[2])
local now = now_ms()
local limit = tonumber(ARGV[3])
-- Data written before the scripts kept ready/dlq counters (they counted by lex range): count
-- once, exactly, in this step, and mark the partition so it never happens again.
if redis.call('HGET', K.qstats, '!counted') ~= '1' then
  local all = redis.call('HGETALL', K.queues)
  for i = 1, #all, 2 do
    local lo, hi = qrange(all[i])
    redis.call('HSET', K.qstats, all[i] .. '!ready', redis.call('ZLEXCOUNT', K.ready, lo, hi),
               all[i] .. '!dlq', redis.call('ZLEXCOUNT', K.dlq, lo, hi))
  end
  redis.call('HSET', K.qstats, '!counted', '1')
end
-- from -inf (true): the sweeper's pass is the safety net under the claims' scan hints
redis.call('HDEL', K.qstats, '!delayed_from', '!leased_from')  -- the scan hints floors replaced
local promoted, m1 = promote_due(now, limit, true)
local expired, m2 = expire_leases(now, limit, parse_delays(ARGV[4]), tonumber(ARGV[5]), true)
local purged, m3 = purge_expired(now, limit, nil)
local more = 0
if m1 or m2 or m3 then more = 1 end
return {'OK', promoted, expired, purged, more}
