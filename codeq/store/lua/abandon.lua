-- abandon.lua: give a leased task back at once, to the back of its ready order.
-- KEYS[1..15] partition keys (lib.lua).
-- ARGV[1] tenant, ARGV[2] task id, ARGV[3] workerId, ARGV[4] leaseId or ''.
-- Attempts are unchanged (the claim counted). Returns {'OK', record} or an owner error
-- (see heartbeat.lua). Events: task.abandoned, task.ready.
local now = now_ms()
local rec = load_rec(ARGV[2])
local err = check_owner(rec, ARGV[1], ARGV[3], ARGV[4])
if err then return err end
local was = ix_code(rec)  -- the listing status: R, then P
leave_current(rec)
emit('task.abandoned', rec, now, {'workerId', rec.workerId or ''})
clear_lease(rec)
make_ready(rec, now)
ix_move(rec, was)
return {'OK', save_rec(rec, now)}
