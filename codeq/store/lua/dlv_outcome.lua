-- dlv_outcome.lua: record attempts of deliveries and decide where each goes next (the attempts
-- that ended in the same instant share one call).
-- KEYS[1..13] delivery keys (dlv_lib.lua).
-- ARGV[1] attempts kept; then quadruples: delivery id, outcome ('succeeded' | 'retry' | 'dead'
-- | 'gone'), delay ms until the next attempt (retry), attempt JSON.
-- Each record's attempt count grows by one, or to the attempts begun (`started`) when one
-- begun before was never recorded (its deliverer died); its attempts log keeps the newest
-- ARGV[1]. An attempt's `request` (the headers it was sent with) becomes the record's
-- `request`, replacing the previous attempt's, and stays out of the log: a record keeps one.
-- The record's index entries and counters follow its status (`ix_move`), and so does its place
-- in `ended` (retention); a call's changes are applied together (`ix_flush`). An attempt that was made (it has a `request`) to an endpoint counts
-- in the endpoint's statistics (`stats_note`): ok or not, and its latency when it has one.
-- A delivery that goes to the delivery DLQ ('dead') appends `delivery.exhausted` to the
-- partition stream in the same step (`exhausted`): the deliverers tell the tenant's operator
-- endpoints.
-- Returns {status, attempts, ...}, two per delivery; status 'MISSING' (attempts 0) for a
-- delivery that no longer exists.

-- What the tenant's operator endpoints are told of a delivery that went to the DLQ: endpoint
-- deliveries and result callbacks only. Not of a notification (advisory: tried thrice, and
-- dropping one is normal), a test send (whoever sent it saw its answer) or an operational
-- delivery (an event about an event would never end).
local QUIET = {['webhook.test'] = true, ['endpoint.disabled'] = true,
               ['endpoint.enabled'] = true, ['delivery.exhausted'] = true}

-- At most n bytes of s, never cutting a UTF-8 character (the deliverers decode stream fields
-- as UTF-8: a cut one would make the entry undecodable).
local function clip(s, n)
  if #s <= n then return s end
  while n > 0 and string.byte(s, n + 1) >= 128 and string.byte(s, n + 1) < 192 do n = n - 1 end
  return string.sub(s, 1, n)
end

local function exhausted(rec, id, attempt, now)
  local kind, tenant, event = str(rec.kind), str(rec.tenant), str(rec.eventType)
  if (kind ~= 'endpoint' and kind ~= 'callback') or not tenant or not event or QUIET[event] then
    return
  end
  local more = {}
  for _, field in ipairs({'endpointId', 'taskId'}) do
    if str(rec[field]) then
      more[#more + 1] = field
      more[#more + 1] = rec[field]
    end
  end
  if type(attempt.statusCode) == 'number' then
    more[#more + 1] = 'lastStatusCode'
    more[#more + 1] = int(attempt.statusCode)
  end
  if str(attempt.error) then
    more[#more + 1] = 'lastError'
    more[#more + 1] = clip(attempt.error, 200)
  end
  redis.call('XADD', D.events, '*', 'type', 'delivery.exhausted', 'id', id, 'tenant', tenant,
             'at', int(now), 'deliveryId', id, 'kind', kind, 'eventType', event,
             'attempts', int(rec.attempts), unpack(more))
end

local now = now_ms()
local kept = tonumber(ARGV[1])
ix_check_indexed()
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
    local was = status_of(rec)
    rec.attempts = math.max((tonumber(rec.attempts) or 0) + 1, tonumber(rec.started) or 0)
    local attempt = cjson.decode(ARGV[i + 3])
    local sent = attempt.request
    if sent then
      rec.request = sent
      attempt.request = nil
    end
    local log = rec.log or {}
    log[#log + 1] = attempt
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
      if outcome == 'dead' then
        redis.call('ZADD', D.dead, now, id)
        if was ~= 'dead' then exhausted(rec, id, attempt, now) end
      end
    end
    redis.call('HSET', D.records, id, cjson.encode(rec))
    ix_move(rec, id, was, rec.status)
    ended_move(id, was, rec.status)
    if sent and str(rec.endpointId) then
      local latency = tonumber(attempt.latencyMs)
      if type(attempt.statusCode) ~= 'number' and (latency or 0) <= 0 then latency = nil end
      stats_note(rec.endpointId, outcome == 'succeeded', latency)
    end
    out[#out + 1] = rec.status
    out[#out + 1] = rec.attempts
  end
end
ix_flush(now)
return out
