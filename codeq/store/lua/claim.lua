-- claim.lua: lease the best ready task of the given queues, after a bounded repair.
-- KEYS[1..13] partition keys (lib.lua).
-- ARGV[1] workerId, ARGV[2] new leaseId, ARGV[3] lease ms, ARGV[4] repair bound,
-- ARGV[5] backoff table "ms,ms,..." (attempt 1..n), ARGV[6] DLQ retention ms,
-- ARGV[7..] queue segments in request order.
-- Order: highest priority first across all queues; ties go to the earlier queue in ARGV;
-- FIFO inside a priority (ready member order).
-- A task whose attempts already reached maxAttempts (it was abandoned on its last attempt) is
-- dead-lettered with MAX_ATTEMPTS instead of being handed out again: a task goes to workers
-- at most maxAttempts times.
-- Returns {'OK', record, payload} | {'EMPTY'}.
-- A ready entry whose record is poison (lib.lua `quarantine`) goes to the DLQ on its own, and
-- the claim goes on to the next task.
-- Events: repair ones (task.ready, task.lease_expired, task.dead_lettered), then task.claimed.
local now = now_ms()
local limit = tonumber(ARGV[4])
local delays = parse_delays(ARGV[5])
local dlq_retention = tonumber(ARGV[6])
-- the two floors and every queue's head mark in one read (KVRocks charges ~7 µs a call)
local fields = {'!delayed_floor', '!leased_floor'}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] .. '!head' end
local marks = redis.call('HMGET', K.qstats, unpack(fields))
local moved = promote_due(now, limit, false, marks[1])
moved = moved + expire_leases(now, limit, delays, dlq_retention, false, marks[2])
-- heads[i]: the head mark of ARGV[i] (false: none). A task the repair made ready may have
-- lowered a mark: then they are read again.
local heads = {}
for i = 7, #ARGV do
  if moved == 0 then heads[i] = marks[i - 4] else heads[i] = redis.call('HGET', K.qstats, ARGV[i] .. '!head') or false end
end

for _ = 1, limit do
  local best, best_i, best_rank = nil, nil, 99
  for i = 7, #ARGV do
    local lo, hi = qrange(ARGV[i])
    -- from the queue's head mark, not its start: the members claimed before it are deleted
    -- entries that KVRocks would step over one by one (6 ms a claim after 10^5 of them)
    if heads[i] then lo = '[' .. heads[i] end
    local m = redis.call('ZRANGEBYLEX', K.ready, lo, hi, 'LIMIT', 0, 1)[1]
    if m then
      local rank = tonumber(string.sub(m, #ARGV[i] + 2, #ARGV[i] + 2))
      if rank < best_rank then best, best_i, best_rank = m, i, rank end
      if rank == 0 then break end
    end
  end
  if not best then return {'EMPTY'} end
  local best_q = ARGV[best_i]
  redis.call('ZREM', K.ready, best)
  qcount(best_q, 'ready', -1)
  redis.call('HSET', K.qstats, best_q .. '!head', best)  -- every member before it is gone
  heads[best_i] = best
  local id = member_id(best)
  local rec, raw, poison = load_rec(id)
  if poison then
    quarantine(id, raw, best_q, now, dlq_retention)  -- then on to the next task
  elseif rec and rec.loc == 'PENDING_LIST' and rec.status == 'PENDING'
      and rec.attempts >= rec.maxAttempts then
    rec.loc = 'NONE'
    to_dlq(rec, now, 'MAX_ATTEMPTS', dlq_retention)
    save_rec(rec, now)
  elseif rec and rec.loc == 'PENDING_LIST' and rec.status == 'PENDING' then
    rec.loc = 'INPROG_SET'
    rec.status = 'IN_PROGRESS'
    rec.attempts = rec.attempts + 1
    rec.workerId = ARGV[1]
    rec.leaseId = ARGV[2]
    rec.leaseUntil = now + tonumber(ARGV[3])
    redis.call('ZADD', K.leased, rec.leaseUntil, id)
    lower_floor('!leased_floor', rec.leaseUntil)
    qcount(rec.q, 'leased', 1)
    emit('task.claimed', rec, now, {'workerId', ARGV[1], 'attempt', rec.attempts})
    local raw = save_rec(rec, now)
    return {'OK', raw, redis.call('HGET', K.payloads, id) or ''}
  end
  -- a stale entry (should not exist with single-script transitions): dropped, try the next
end
return {'EMPTY'}
