-- dlv_defer.lua: put off a delivery's attempt without making one (its target's rate limit, or
-- no connection slot for its host in time).
-- KEYS[1..13] delivery keys (dlv_lib.lua).
-- ARGV[1] delivery id, ARGV[2] delay ms.
-- No attempt is counted or logged and the retry schedule does not move: the attempt counted
-- as begun when the delivery was leased (`started`) is taken back, and the delivery's place in
-- the schedule (its lease) becomes now + delay.
-- Returns {'OK', due at ms}; {'MISSING'} when the delivery no longer exists, {'DONE'} when it
-- is no longer scheduled (finished, dead or gone meanwhile).
local now = now_ms()
local id = ARGV[1]
local raw = redis.call('HGET', D.records, id)
if not raw then
  redis.call('ZREM', D.due, id)
  return {'MISSING'}
end
if not redis.call('ZSCORE', D.due, id) then return {'DONE'} end
local rec = cjson.decode(raw)
local started, attempts = tonumber(rec.started) or 0, tonumber(rec.attempts) or 0
if started > attempts then
  rec.started = started - 1
  redis.call('HSET', D.records, id, cjson.encode(rec))
end
local due = now + tonumber(ARGV[2])
redis.call('ZADD', D.due, due, id)
return {'OK', int(due)}
