-- dlv_outcome.lua: record attempts of deliveries and decide where each goes next (the attempts
-- that ended in the same instant share one call).
-- KEYS[1..8] delivery keys (dlv_lib.lua).
-- ARGV[1] attempts kept; then quadruples: delivery id, outcome ('succeeded' | 'retry' | 'dead'
-- | 'gone'), delay ms until the next attempt (retry), attempt JSON.
-- Each record's attempt count grows by one, or to the attempts begun (`started`) when one
-- begun before was never recorded (its deliverer died); its attempts log keeps the newest
-- ARGV[1].
-- Returns {status, attempts, ...}, two per delivery; status 'MISSING' (attempts 0) for a
-- delivery that no longer exists.
local now = now_ms()
local kept = tonumber(ARGV[1])
local out = {}
for i = 2, #ARGV, 4 do
  local id, outcome = ARGV[i], ARGV[i + 1]
  local raw = redis.call('HGET', D.records, id)
  if not raw then
    redis.call('ZREM', D.due, id)
    out[#out + 1] = 'MISSING'
    out[#out + 1] = 0
  else
    local rec = cjson.decode(raw)
    rec.attempts = math.max((tonumber(rec.attempts) or 0) + 1, tonumber(rec.started) or 0)
    local log = rec.log or {}
    log[#log + 1] = cjson.decode(ARGV[i + 3])
    while #log > kept do table.remove(log, 1) end
    rec.log = log
    rec.updatedAt = now
    if outcome == 'succeeded' then
      rec.status = 'succeeded'
      rec.nextAt = nil
      redis.call('ZREM', D.due, id)
    elseif outcome == 'retry' then
      rec.status = 'retrying'
      rec.nextAt = now + tonumber(ARGV[i + 2])
      redis.call('ZADD', D.due, rec.nextAt, id)
    else
      rec.status = outcome == 'gone' and 'gone' or 'dead'
      rec.nextAt = nil
      rec.deadAt = now
      redis.call('ZREM', D.due, id)
      if outcome == 'dead' then redis.call('ZADD', D.dead, now, id) end
    end
    redis.call('HSET', D.records, id, cjson.encode(rec))
    out[#out + 1] = rec.status
    out[#out + 1] = rec.attempts
  end
end
return out
