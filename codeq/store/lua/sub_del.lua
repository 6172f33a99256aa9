-- sub_del.lua: delete a subscription of this tenant.
-- KEYS[1] records hash, KEYS[2] expiry zset, KEYS[3] the tenant's index set (keys.py).
-- ARGV[1] id, ARGV[2] tenant.
-- Returns 1 when deleted, 0 when unknown or foreign.
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
if cjson.decode(raw).tenant ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
return 1
