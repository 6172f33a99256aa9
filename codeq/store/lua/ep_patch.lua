-- ep_patch.lua: change some fields of a webhook endpoint of this tenant, in place.
-- KEYS[1] records hash, KEYS[2] the tenant's index set, KEYS[3] the {hooks} event stream
-- (keys.py).
-- ARGV[1] id, ARGV[2] tenant, ARGV[3] JSON object of the fields to set, any of url,
-- eventTypes, commands, description, enabled, headers, rateLimit, channels, metadata. A field
-- not named keeps its stored value, so concurrent changes of different fields all survive.
-- An empty list or object (commands, headers, channels, metadata) and a rateLimit of 0 remove
-- the field. enabled = true also ends the failing streak and forgets why the endpoint was
-- disabled. A change of `enabled` appends `endpoint.enabled` or `endpoint.disabled` (trigger
-- manual) to the {hooks} stream in the same step, for the deliverers to tell the tenant's
-- operator endpoints; setting it to what it was appends nothing.
-- Returns the record JSON after the change, or false when the endpoint is unknown or foreign.
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return false end
local rec = cjson.decode(raw)
if rec.tenant ~= ARGV[2] then return false end
local changes = cjson.decode(ARGV[3])
for _, field in ipairs({'url', 'eventTypes', 'description'}) do
  if changes[field] ~= nil then rec[field] = changes[field] end
end
for _, field in ipairs({'commands', 'headers', 'channels', 'metadata'}) do
  local value = changes[field]
  if value ~= nil then
    if type(value) == 'table' and next(value) == nil then rec[field] = nil else rec[field] = value end
  end
end
if changes.rateLimit ~= nil then
  if changes.rateLimit == 0 then rec.rateLimit = nil else rec.rateLimit = changes.rateLimit end
end
local was_enabled = rec.enabled ~= false
if changes.enabled ~= nil then
  rec.enabled = changes.enabled
  if changes.enabled then
    rec.failingSince = nil
    rec.disabledReason = nil
    rec.disabledAt = nil
  end
end
local out = cjson.encode(rec)
redis.call('HSET', KEYS[1], ARGV[1], out)
if changes.enabled ~= nil and changes.enabled ~= was_enabled then
  local t = redis.call('TIME')
  local at = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
  if changes.enabled then
    redis.call('XADD', KEYS[3], '*', 'type', 'endpoint.enabled', 'id', ARGV[1],
               'tenant', ARGV[2], 'at', at, 'endpointId', ARGV[1])
  else
    redis.call('XADD', KEYS[3], '*', 'type', 'endpoint.disabled', 'id', ARGV[1],
               'tenant', ARGV[2], 'at', at, 'endpointId', ARGV[1], 'trigger', 'manual')
  end
end
return out
