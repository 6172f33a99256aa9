-- ep_put.lua: create or replace a webhook endpoint of this tenant.
-- KEYS[1] records hash, KEYS[2] the tenant's index set (keys.py).
-- ARGV[1] id, ARGV[2] tenant, ARGV[3] record JSON, ARGV[4] '1' = must exist (update).
-- An update of an unknown or foreign endpoint changes nothing.
-- Returns 1 when written, 0 when not found.
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[4] == '1' then
  if not raw or cjson.decode(raw).tenant ~= ARGV[2] then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
return 1
