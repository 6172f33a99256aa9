-- result.lua: record workers' final results (COMPLETED or FAILED); terminal, not the DLQ.
-- One or more results of one partition: the store merges the results workers send in the same
-- instant into one call (codeq/store/merge.py), each still checked and applied on its own, in
-- item order, exactly as if they had come one after the other.
-- KEYS[1..15] partition keys (lib.lua).
-- ARGV[1] n; then per item 8 values: tenant, task id, workerId, leaseId or '',
--   'COMPLETED' | 'FAILED', result JSON text (stored as is), error or '', retention ms.
-- Returns one entry per item: {'OK', record} | an owner error (see heartbeat.lua).
-- Events: task.completed or task.failed (with webhook when the task has one).
-- Shape: the records are read in one HMGET and written in one HSET, the results in one HSET,
-- the leases removed in one ZREM and the expiry entries added in one ZADD; the events stay per
-- task, the leased counters and the outcome totals (`tally`) per queue; the listing entries
-- move from R to C or F in one ZREM and one ZADD.
local now = now_ms()
local n = tonumber(ARGV[1])
local out = {}
local ids = {}
for i = 1, n do ids[i] = ARGV[2 + (i - 1) * 8 + 1] end
local raws = redis.call('HMGET', K.tasks, unpack(ids))
local recs = {}  -- id -> the record as this call has left it (a task named twice sees the first)
local records, results, expiry = {}, {}, {}
local ix_out, ix_in = {}, {}  -- by_status members, before and after
local leases, queues = {}, {}  -- queue -> ids whose lease goes; the queues in first-seen order
local ends = {}  -- retention text -> the expiry score's text (now + retention)
local outcomes, seen = {}, {}  -- "<q>!n:<completed|failed>" -> count; its keys in first-seen order
for i = 1, n do
  local b = 2 + (i - 1) * 8
  local tenant, id, worker, lease_id = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local rec = recs[id]
  if rec == nil and raws[i] then rec = decode_rec(raws[i], id) end
  local err = check_owner(rec, tenant, worker, lease_id)
  if err then
    out[i] = err
  else
    -- leave_current, grouped: an in-progress task is in the leased set
    if rec.loc == 'INPROG_SET' then
      if not leases[rec.q] then leases[rec.q] = {}; queues[#queues + 1] = rec.q end
      local mine = leases[rec.q]
      mine[#mine + 1] = id
    end
    ix_out[#ix_out + 1] = ix_status_member(rec, ix_code(rec))
    rec.loc = 'NONE'
    rec.status = ARGV[b + 4]
    rec.leaseId = nil
    rec.leaseUntil = nil
    rec.completedAt = now
    -- a COMPLETED task carries no error; a FAILED one carries the worker's (earlier nack
    -- reasons go)
    if ARGV[b + 6] ~= '' then rec.error = ARGV[b + 6] else rec.error = nil end
    results[#results + 1] = id
    results[#results + 1] = ARGV[b + 5]
    local keep = ARGV[b + 7]  -- the retention: the same for most items of a call
    local until_text = ends[keep]
    if not until_text then until_text = int(now + keep); ends[keep] = until_text end
    expiry[#expiry + 1] = until_text
    expiry[#expiry + 1] = id
    local extra = nil
    if rec.webhook then extra = {'webhook', rec.webhook} end
    local kind = 'failed'
    if rec.status == 'COMPLETED' then
      kind = 'completed'
      emit('task.completed', rec, now, extra)
    else
      emit('task.failed', rec, now, extra)
    end
    local field = rec.q .. '!n:' .. kind
    if not outcomes[field] then outcomes[field] = 0; seen[#seen + 1] = field end
    outcomes[field] = outcomes[field] + 1
    rec.updatedAt = now
    ix_in[#ix_in + 1] = '0'
    ix_in[#ix_in + 1] = ix_status_member(rec, ix_code(rec))
    local raw = cjson.encode(rec)
    recs[id] = rec
    records[#records + 1] = id
    records[#records + 1] = raw
    out[i] = {'OK', raw}
  end
end
for _, q in ipairs(queues) do
  local removed = redis.call('ZREM', K.leased, unpack(leases[q]))
  if removed > 0 then qcount(q, 'leased', -removed) end
end
for _, field in ipairs(seen) do redis.call('HINCRBY', K.qstats, field, outcomes[field]) end
bulk('HSET', K.results, results)
bulk('ZADD', K.expiry, expiry)
bulk('HSET', K.tasks, records)
if #ix_out > 0 then
  redis.call('ZREM', K.by_status, unpack(ix_out))  -- at most one per result of the call
  bulk('ZADD', K.by_status, ix_in)
end
return out
