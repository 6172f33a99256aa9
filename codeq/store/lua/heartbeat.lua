-- heartbeat.lua: extend the lease of an in-progress task, lease holder only.
-- KEYS[1..15] partition keys (lib.lua).
-- ARGV[1] tenant, ARGV[2] task id, ARGV[3] workerId, ARGV[4] leaseId or '', ARGV[5] extend ms.
-- Returns {'OK', record} | {'NOT_FOUND'} | {'NOT_OWNER'} | {'NOT_IN_PROGRESS', status}
--       | {'LEASE_MISMATCH'} | {'LEASE_EXPIRED'}.
-- No event: a heartbeat changes no state that anyone subscribes to.
local now = now_ms()
local rec = load_rec(ARGV[2])
local err = check_owner(rec, ARGV[1], ARGV[3], ARGV[4])
if err then return err end
if rec.leaseUntil <= now then return {'LEASE_EXPIRED'} end
rec.leaseUntil = now + tonumber(ARGV[5])
redis.call('ZADD', K.leased, int(rec.leaseUntil), rec.id)
lower_floor('!leased_floor', rec.leaseUntil)
return {'OK', save_rec(rec, now)}
