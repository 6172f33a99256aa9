-- ep_mark.lua: record how a delivery to an endpoint went.
-- KEYS[1] records hash, KEYS[2] the tenant's index set, KEYS[3] the {hooks} event stream
-- (keys.py).
-- ARGV[1] id, ARGV[2] outcome 'ok' | 'failed' | 'gone', ARGV[3] disable after ms of failing.
-- 'ok' clears the failing streak; 'failed' starts one (failingSince) and disables the endpoint
-- once it has lasted ARGV[3]; 'gone' (410) disables at once. An endpoint this disables (it was
-- enabled) gets `endpoint.disabled` (trigger automatic, reason gone | failing) appended to the
-- {hooks} stream in the same step, for the deliverers to tell the tenant's operator endpoints.
-- Returns {enabled 1|0} or {} when the endpoint no longer exists.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return {} end
local rec = cjson.decode(raw)
local was_enabled = rec.enabled ~= false
local reason = nil
if ARGV[2] == 'ok' then
  rec.failingSince = nil
elseif ARGV[2] == 'gone' then
  rec.enabled = false
  rec.disabledReason = '410 Gone'
  rec.disabledAt = now
  reason = 'gone'
else
  rec.failingSince = rec.failingSince or now
  if now - rec.failingSince >= tonumber(ARGV[3]) then
    rec.enabled = false
    rec.disabledReason = 'failing'
    rec.disabledAt = now
    reason = 'failing'
  end
end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(rec))
if was_enabled and reason then
  local more = {}
  if type(rec.failingSince) == 'number' then
    more = {'failingSince', string.format('%d', rec.failingSince)}
  end
  redis.call('XADD', KEYS[3], '*', 'type', 'endpoint.disabled', 'id', ARGV[1],
             'tenant', tostring(rec.tenant or ''), 'at', string.format('%d', now),
             'endpointId', ARGV[1], 'trigger', 'automatic', 'reason', reason, unpack(more))
end
return {rec.enabled and 1 or 0}
