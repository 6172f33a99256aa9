-- rate_limit.lua: take one token from a token bucket (spec 04, "Rate limits").
-- KEYS[1] the bucket hash of one scope + tenant + subject (keys.py, KeySchema.rate_limit):
-- fields 'tokens' (a fraction) and 'at' (ms of the last take, server time).
-- ARGV[1] refill rate in tokens per minute (requestsPerMinute), ARGV[2] capacity (burstSize).
-- Time is the server's (TIME), so every gateway replica and deliverer agrees on the refill.
-- The hash expires when a full bucket would be back (PEXPIRE), so idle callers cost nothing.
-- Returns {1, 0, tokens left} when a token was taken, {0, retry-after ms, 0} when the bucket
-- was empty (nothing taken; retry-after = when the next whole token is there).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local per_ms = tonumber(ARGV[1]) / 60000
local burst = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(state[1]), tonumber(state[2])
if tokens == nil or at == nil then
  tokens, at = burst, now
elseif now > at then
  tokens = math.min(burst, tokens + (now - at) * per_ms)
  at = now
end
-- (now < at only if the server's clock stepped back: the bucket then waits for it to catch up)
local allowed, retry = 0, 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  retry = math.max(1, math.ceil((1 - tokens) / per_ms))
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'at', string.format('%.3f', at))
redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil((burst - tokens) / per_ms + (at - now))))
return {allowed, retry, math.floor(tokens)}
