-- purge.lua: delete terminal tasks (with payload and result) whose retention ended before a
-- time. Never touches a pending or in-progress task: only ids in the expiry zset, and only
-- when their record is COMPLETED or FAILED. Bounded: at most ARGV[2] entries are looked at.
-- KEYS[1..15] partition keys (lib.lua).
-- ARGV[1] before ms or '' (= now), ARGV[2] bound, ARGV[3] tenant or '' (all tenants),
-- ARGV[4] score and ARGV[5] member of the last entry a previous call looked at, or '' ''.
-- Returns {purged, more (0|1), last score or '', last member or '', entries looked at}.
local before = tonumber(ARGV[1]) or now_ms()
local tenant = ARGV[3]
if tenant == '' then tenant = nil end
local after = tonumber(ARGV[4])
local purged, more, score, member, looked = purge_expired(before, tonumber(ARGV[2]), tenant, after, ARGV[5])
local flag = 0
if more then flag = 1 end
return {purged, flag, score or '', member or '', looked}
