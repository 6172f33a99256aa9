-- ep_del.lua: delete a webhook endpoint of this tenant.
-- KEYS[1] records hash, KEYS[2] the tenant's index set (keys.py).
-- ARGV[1] id, ARGV[2] tenant.
-- Returns 1 when deleted, 0 when unknown or foreign.
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw or cjson.decode(raw).tenant ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[2], ARGV[1])
return 1
