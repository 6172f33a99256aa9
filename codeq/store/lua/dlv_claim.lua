-- dlv_claim.lua: lease the deliveries whose next attempt is due.
-- KEYS[1..13] delivery keys (dlv_lib.lua).
-- ARGV[1] lease ms, ARGV[2] limit.
-- Each due delivery's score moves to now + lease, so no other deliverer takes it while this
-- one attempts it; a deliverer that dies mid-attempt leaves it due again when the lease ends.
-- The attempt about to be made is counted in the record first (`started`, the number of the
-- attempt begun last): after a crash mid-attempt the next one knows its number.
-- Returns {id, record JSON (as changed), ...}.
local now = now_ms()
local lease, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', D.due, '-inf', now, 'LIMIT', 0, limit)) do
  local raw = redis.call('HGET', D.records, id)
  if raw then
    local rec = cjson.decode(raw)
    rec.started = math.max(tonumber(rec.started) or 0, tonumber(rec.attempts) or 0) + 1
    raw = cjson.encode(rec)
    redis.call('HSET', D.records, id, raw)
    redis.call('ZADD', D.due, now + lease, id)
    out[#out + 1] = id
    out[#out + 1] = raw
  else
    redis.call('ZREM', D.due, id)
  end
end
return out
