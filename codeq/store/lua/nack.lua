-- nack.lua: a worker could not finish; retry after a delay, or dead-letter on the last attempt.
-- KEYS[1..15] partition keys (lib.lua).
-- ARGV[1] tenant, ARGV[2] task id, ARGV[3] workerId, ARGV[4] leaseId or '',
-- ARGV[5] delay override ms or '' (already capped), ARGV[6] reason or '',
-- ARGV[7] backoff table "ms,ms,..." (attempt 1..n), ARGV[8] DLQ retention ms.
-- Returns {'REQUEUED', delay ms, record} | {'DLQ', 0, record} | an owner error.
-- Events: task.nacked, then task.ready (no delay) or task.dead_lettered.
local now = now_ms()
local rec = load_rec(ARGV[2])
local err = check_owner(rec, ARGV[1], ARGV[3], ARGV[4])
if err then return err end
local reason = ARGV[6]
local was = ix_code(rec)  -- the listing status: R, and P or D after
leave_current(rec)
clear_lease(rec)
if reason ~= '' then rec.error = reason end
if rec.attempts >= rec.maxAttempts then
  emit('task.nacked', rec, now, {'delayMs', 0, 'reason', reason})
  local cause = reason
  if cause == '' then cause = 'MAX_ATTEMPTS' end
  to_dlq(rec, now, cause, tonumber(ARGV[8]))
  ix_move(rec, was)
  return {'DLQ', 0, save_rec(rec, now)}
end
local d = tonumber(ARGV[5])
if not d then d = delay_for(parse_delays(ARGV[7]), rec.attempts) end
emit('task.nacked', rec, now, {'delayMs', int(d), 'reason', reason})
if d <= 0 then make_ready(rec, now) else make_delayed(rec, now + d) end
ix_move(rec, was)
return {'REQUEUED', d, save_rec(rec, now)}
