-- sub_list.lua: the live subscriptions of one tenant (expired ones are dropped on the way).
-- KEYS[1] records hash, KEYS[2] expiry zset, KEYS[3] the tenant's index set (keys.py).
-- ARGV: none.
-- Returns {record JSON, ...}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local raw = redis.call('HGET', KEYS[1], id)
  if raw and cjson.decode(raw).expiresAt > now then
    out[#out + 1] = raw
  else
    redis.call('HDEL', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
    redis.call('SREM', KEYS[3], id)
  end
end
return out
