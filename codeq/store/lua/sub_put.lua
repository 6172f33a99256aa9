-- sub_put.lua: create or renew a worker availability subscription.
-- KEYS[1] records hash, KEYS[2] expiry zset, KEYS[3] the tenant's index set (keys.py).
-- ARGV[1] id, ARGV[2] tenant, ARGV[3] record JSON ('' = renew only), ARGV[4] ttl ms.
-- A renewal of an unknown, expired or foreign subscription changes nothing.
-- Returns {'OK', expiresAt} or {'NOT_FOUND'}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id, tenant, ttl = ARGV[1], ARGV[2], tonumber(ARGV[4])
local rec
if ARGV[3] ~= '' then
  rec = cjson.decode(ARGV[3])
else
  local raw = redis.call('HGET', KEYS[1], id)
  if not raw then return {'NOT_FOUND'} end
  rec = cjson.decode(raw)
  if rec.tenant ~= tenant or rec.expiresAt <= now then return {'NOT_FOUND'} end
end
rec.expiresAt = now + ttl
redis.call('HSET', KEYS[1], id, cjson.encode(rec))
redis.call('ZADD', KEYS[2], rec.expiresAt, id)
redis.call('SADD', KEYS[3], id)
return {'OK', string.format('%d', rec.expiresAt)}
