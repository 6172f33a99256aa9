-- dlv_defer.lua: put off a delivery's attempt without making one (its target's rate limit).
-- KEYS[1..7] delivery keys (dlv_lib.lua).
-- ARGV[1] delivery id, ARGV[2] delay ms.
-- The record is left as it is: no attempt is counted or logged, the retry schedule does not
-- move; only the delivery's place in the schedule (its lease) becomes now + delay.
-- Returns {'OK', due at ms}; {'MISSING'} when the delivery no longer exists, {'DONE'} when it
-- is no longer scheduled (finished, dead or gone meanwhile).
local now = now_ms()
local id = ARGV[1]
if redis.call('HEXISTS', D.records, id) == 0 then
  redis.call('ZREM', D.due, id)
  return {'MISSING'}
end
if not redis.call('ZSCORE', D.due, id) then return {'DONE'} end
local due = now + tonumber(ARGV[2])
redis.call('ZADD', D.due, due, id)
return {'OK', int(due)}
