-- dlv_enqueue.lua: write the deliveries one stream entry causes and acknowledge the entry, in
-- one step: a crash before it repeats the entry, a crash after it loses nothing.
-- KEYS[1..7] delivery keys (dlv_lib.lua).
-- ARGV[1] group, ARGV[2] stream entry id, ARGV[3] lease ms (the caller attempts at once; the
-- lease keeps other deliverers off until then), ARGV[4..] pairs of delivery id, record JSON.
-- A delivery id that already exists is left alone (a repeated entry does not duplicate it).
-- Returns {id, ...} of the deliveries written now (the caller attempts exactly these).
local now = now_ms()
local lease = tonumber(ARGV[3])
local out = {}
for i = 4, #ARGV, 2 do
  local id, rec = ARGV[i], ARGV[i + 1]
  if redis.call('HSETNX', D.records, id, rec) == 1 then
    redis.call('ZADD', D.due, now + lease, id)
    out[#out + 1] = id
  end
end
redis.call('XACK', D.events, ARGV[1], ARGV[2])
return out
