-- ep_patch.lua: change some fields of a webhook endpoint of this tenant, in place.
-- KEYS[1] records hash, KEYS[2] the tenant's index set (keys.py).
-- ARGV[1] id, ARGV[2] tenant, ARGV[3] JSON object of the fields to set, any of url,
-- eventTypes, commands, description, enabled. A field not named keeps its stored value, so
-- concurrent changes of different fields all survive. enabled = true also ends the failing
-- streak and forgets why the endpoint was disabled.
-- Returns the record JSON after the change, or false when the endpoint is unknown or foreign.
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return false end
local rec = cjson.decode(raw)
if rec.tenant ~= ARGV[2] then return false end
local changes = cjson.decode(ARGV[3])
for _, field in ipairs({'url', 'eventTypes', 'commands', 'description'}) do
  if changes[field] ~= nil then rec[field] = changes[field] end
end
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
return out
