-- ep_rotate.lua: a new signing secret for a webhook endpoint of this tenant; the secrets in
-- force keep signing beside it until their grace period ends.
-- KEYS[1] records hash, KEYS[2] the tenant's index set (keys.py).
-- ARGV[1] id, ARGV[2] tenant, ARGV[3] the new secret (an ed25519 endpoint's: a whsk_ signing
-- key, an HMAC endpoint's: anything else), ARGV[4] grace period in ms.
-- The current secret (no expiresAt) gets expiresAt = now + grace, rotated ones keep theirs,
-- expired ones are dropped; the new secret goes first, as the current one. Concurrent
-- rotations therefore each leave their secret in force: none overwrites another.
-- Returns {now + grace} (ms, server clock), or {} when the endpoint is unknown or foreign, or
-- the new secret is not of the endpoint's scheme (its scheme never changes).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return {} end
local rec = cjson.decode(raw)
if rec.tenant ~= ARGV[2] then return {} end
local signing_key = string.sub(ARGV[3], 1, 5) == 'whsk_'
if signing_key ~= (rec.signatureScheme == 'ed25519') then return {} end
local expires = now + tonumber(ARGV[4])
local secrets = {{secret = ARGV[3]}}
for _, s in ipairs(type(rec.secrets) == 'table' and rec.secrets or {}) do
  if type(s.expiresAt) ~= 'number' then
    secrets[#secrets + 1] = {secret = s.secret, expiresAt = expires}
  elseif s.expiresAt > now then
    secrets[#secrets + 1] = {secret = s.secret, expiresAt = s.expiresAt}
  end
end
rec.secrets = secrets
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(rec))
return {string.format('%d', expires)}
