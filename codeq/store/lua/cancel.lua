-- cancel.lua: a producer withdraws a task nobody holds: PENDING (ready or delayed) -> CANCELLED,
-- terminal (kept for the result retention, then purged like a finished task).
-- KEYS[1..15] partition keys (lib.lua).
-- ARGV[1] tenant, ARGV[2] task id, ARGV[3] retention ms, ARGV[4] reason or ''.
-- Returns {'OK', record} (also when it was cancelled already: cancelling is idempotent) |
-- {'NOT_FOUND'} (absent, another tenant's, or a record nobody can read) |
-- {'NOT_CANCELLABLE', status} (in progress: its worker holds it; finished; dead-lettered).
-- Events: task.cancelled (with webhook when the task has one).
local now = now_ms()
local rec = load_rec(ARGV[2])
if not rec or rec.tenant ~= ARGV[1] then return {'NOT_FOUND'} end
if rec.status == 'CANCELLED' then return {'OK', cjson.encode(rec)} end
if rec.status ~= 'PENDING' or (rec.loc ~= 'PENDING_LIST' and rec.loc ~= 'DELAYED_ZSET') then
  return {'NOT_CANCELLABLE', rec.status}
end
local was = ix_code(rec)
leave_current(rec)
rec.status = 'CANCELLED'
rec.completedAt = now
if ARGV[4] ~= '' then rec.error = ARGV[4] else rec.error = nil end
redis.call('ZADD', K.expiry, now + tonumber(ARGV[3]), rec.id)
tally(rec.q, 'cancelled', 1)
local extra = {'reason', ARGV[4]}
if rec.webhook then extra[#extra + 1] = 'webhook'; extra[#extra + 1] = rec.webhook end
emit('task.cancelled', rec, now, extra)
ix_move(rec, was)
return {'OK', save_rec(rec, now)}
