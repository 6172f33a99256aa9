-- ep_put.lua: store a new webhook endpoint of this tenant (changes go through ep_patch.lua and
-- ep_rotate.lua, which cannot lose a concurrent change).
-- KEYS[1] records hash, KEYS[2] the tenant's index set (keys.py).
-- ARGV[1] id, ARGV[2] record JSON.
-- Returns 1.
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
return 1
