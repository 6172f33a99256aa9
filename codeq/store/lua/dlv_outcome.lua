-- dlv_outcome.lua: record one attempt of a delivery and decide where it goes next.
-- KEYS[1..7] delivery keys (dlv_lib.lua).
-- ARGV[1] delivery id, ARGV[2] outcome: 'succeeded' | 'retry' | 'dead' | 'gone',
-- ARGV[3] delay ms until the next attempt (retry), ARGV[4] attempt JSON, ARGV[5] attempts kept.
-- The record's attempt count grows by one; the attempts log keeps the newest ARGV[5].
-- Returns {status, attempts}; {'MISSING'} when the delivery no longer exists.
local now = now_ms()
local id, outcome = ARGV[1], ARGV[2]
local raw = redis.call('HGET', D.records, id)
if not raw then
  redis.call('ZREM', D.due, id)
  return {'MISSING'}
end
local rec = cjson.decode(raw)
rec.attempts = (rec.attempts or 0) + 1
local log = rec.log or {}
log[#log + 1] = cjson.decode(ARGV[4])
local kept = tonumber(ARGV[5])
while #log > kept do table.remove(log, 1) end
rec.log = log
rec.updatedAt = now
if outcome == 'succeeded' then
  rec.status = 'succeeded'
  rec.nextAt = nil
  redis.call('ZREM', D.due, id)
elseif outcome == 'retry' then
  rec.status = 'retrying'
  rec.nextAt = now + tonumber(ARGV[3])
  redis.call('ZADD', D.due, rec.nextAt, id)
else
  rec.status = outcome == 'gone' and 'gone' or 'dead'
  rec.nextAt = nil
  rec.deadAt = now
  redis.call('ZREM', D.due, id)
  if outcome == 'dead' then redis.call('ZADD', D.dead, now, id) end
end
redis.call('HSET', D.records, id, cjson.encode(rec))
return {rec.status, rec.attempts}
