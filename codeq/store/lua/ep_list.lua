-- ep_list.lua: every webhook endpoint of one tenant. Read-only.
-- KEYS[1] records hash, KEYS[2] the tenant's index set (keys.py).
-- ARGV: none.
-- Returns {record JSON, ...}.
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local raw = redis.call('HGET', KEYS[1], id)
  if raw then out[#out + 1] = raw end
end
return out
