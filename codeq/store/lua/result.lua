-- result.lua: record a worker's final result (COMPLETED or FAILED); terminal, not the DLQ.
-- KEYS[1..13] partition keys (lib.lua).
-- ARGV[1] tenant, ARGV[2] task id, ARGV[3] workerId, ARGV[4] leaseId or '',
-- ARGV[5] 'COMPLETED' | 'FAILED', ARGV[6] result JSON text (stored as is),
-- ARGV[7] error or '', ARGV[8] retention ms.
-- Returns {'OK', record} | an owner error (see heartbeat.lua).
-- Events: task.completed or task.failed (with webhook when the task has one).
local now = now_ms()
local rec = load_rec(ARGV[2])
local err = check_owner(rec, ARGV[1], ARGV[3], ARGV[4])
if err then return err end
leave_current(rec)
rec.status = ARGV[5]
rec.leaseId = nil
rec.leaseUntil = nil
rec.completedAt = now
-- a COMPLETED task carries no error; a FAILED one carries the worker's (earlier nack reasons go)
if ARGV[7] ~= '' then rec.error = ARGV[7] else rec.error = nil end
redis.call('HSET', K.results, rec.id, ARGV[6])
redis.call('ZADD', K.expiry, now + tonumber(ARGV[8]), rec.id)
local extra = nil
if rec.webhook then extra = {'webhook', rec.webhook} end
if rec.status == 'COMPLETED' then
  emit('task.completed', rec, now, extra)
else
  emit('task.failed', rec, now, extra)
end
return {'OK', save_rec(rec, now)}
