-- purge.lua: delete terminal tasks (with payload and result) whose retention ended before a
-- time. Never touches a pending or in-progress task: only ids in the expiry zset, and only
-- when their record is COMPLETED or FAILED.
-- KEYS[1..13] partition keys (lib.lua).
-- ARGV[1] before ms or '' (= now), ARGV[2] bound, ARGV[3] tenant or '' (all tenants).
-- Returns {purged, more (0|1)}.
local before = tonumber(ARGV[1]) or now_ms()
local tenant = ARGV[3]
if tenant == '' then tenant = nil end
local purged, more = purge_expired(before, tonumber(ARGV[2]), tenant)
if more then return {purged, 1} end
return {purged, 0}
