-- requeue_dlq.lua: move dead-lettered tasks of one queue back to ready, attempts reset to 0.
-- KEYS[1..15] partition keys (lib.lua).
-- ARGV[1] tenant, ARGV[2] queue segment, ARGV[3] bound, ARGV[4..] task ids (none = the oldest
-- dead tasks of the queue, up to the bound).
-- Ids that are not dead tasks of this tenant's queue are skipped.
-- Returns {count, id, id, ...}. Events: task.ready for each.
local now = now_ms()
local tenant, q, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local ids = {}
if #ARGV >= 4 then
  for i = 4, #ARGV do ids[#ids + 1] = ARGV[i] end
else
  local lo, hi = qrange(q)
  for _, m in ipairs(redis.call('ZRANGEBYLEX', K.dlq, lo, hi, 'LIMIT', 0, limit)) do
    ids[#ids + 1] = member_id(m)
  end
end
local done = {0}
for _, id in ipairs(ids) do
  local rec = load_rec(id)
  if rec and rec.tenant == tenant and rec.q == q and rec.loc == 'DLQ_SET' then
    leave_current(rec)
    redis.call('ZREM', K.expiry, id)
    rec.attempts = 0
    rec.error = nil
    rec.deadAt = nil
    make_ready(rec, now)
    ix_move(rec, 'D')
    save_rec(rec, now)
    done[1] = done[1] + 1
    done[#done + 1] = id
  end
end
return done
