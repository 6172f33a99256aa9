-- create.lua: create one or more tasks in one partition: a batch, or single creates that
-- arrived together (the store merges concurrent creates of a partition into one call, at most
-- MAX_SCRIPT_ITEMS items, see codeq/store/merge.py).
-- KEYS[1..15] partition keys (lib.lua); KEYS[16..] idempotency keys named by the items.
-- ARGV[1] idempotency TTL ms; ARGV[2] n; then per item 6 values:
--   record JSON (id, command, q, tenant, priority, maxAttempts, webhook?, idempotencyKey?,
--   traceParent?, traceState?, payloadHash), payload JSON text, runAt ms or '',
--   delay ms or '', index into KEYS of its idempotency key or '0', queue registry JSON.
-- Returns one entry per item: {'OK', record} | {'DUP', record, payload} | {'CONFLICT', id}.
-- Two items with the same idempotency key: the first creates, the second is its DUP (or a
-- CONFLICT), exactly as if they had come one after the other.
-- Events: task.created, then task.ready when visible at once (per task, in item order).
-- Listing: every new task joins by_status (as P) and by_command, in one ZADD each per call.
--
-- Shape: every item is read and decided before the first write, then the writes are grouped:
-- one HSET of the records, one of the payloads, one ZADD per sorted set, one INCRBY of seq, and
-- per queue one HSETNX of the registry, one HGET of the head mark and one HINCRBY per counter
-- (the depths and the created total; for delayed tasks one read of the delayed floor).
-- A call of n tasks makes 2n + a few redis.calls (the two events of each task, plus its
-- idempotency key) instead of 10n: KVRocks spends ~7 µs on each beyond the command itself.
local now = now_ms()
local ttl = ARGV[1]
local n = tonumber(ARGV[2])
local out = {}
local new = {}      -- the tasks this call creates, in item order
local by_key = {}   -- idempotency key -> the new task of this call that took it
local dups = {}     -- item index -> the new task it repeats (answered once that one is written)

-- 1. decide
for i = 1, n do
  local b = 2 + (i - 1) * 6
  local rec = cjson.decode(ARGV[b + 1])
  local ik = tonumber(ARGV[b + 5])
  local key = nil
  if ik > 0 then key = KEYS[ik] end
  local first = key and by_key[key]
  if first then
    if first.rec.q ~= rec.q or first.rec.payloadHash ~= rec.payloadHash then
      out[i] = {'CONFLICT', first.rec.id}
    else
      dups[i] = first
    end
  else
    local existing = key and redis.call('GET', key)
    local old, old_raw = nil, nil
    if existing then old, old_raw = load_rec(existing) end
    if old then
      if old.q ~= rec.q or old.payloadHash ~= rec.payloadHash then
        out[i] = {'CONFLICT', existing}
      else
        out[i] = {'DUP', old_raw, redis.call('HGET', K.payloads, existing) or ''}
      end
    else
      local run_at, delay = tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4])
      local visible = now
      if run_at then visible = run_at elseif delay then visible = now + delay end
      local task = {i = i, rec = rec, payload = ARGV[b + 2], visible = visible, key = key,
                    meta = ARGV[b + 6]}
      new[#new + 1] = task
      if key then by_key[key] = task end
    end
  end
end

-- 2. reserve: sequence numbers, queue registry, counters, head marks
local queues, order, ready_n = {}, {}, 0
for _, task in ipairs(new) do
  local q = task.rec.q
  local s = queues[q]
  if not s then
    s = {ready = 0, delayed = 0, meta = task.meta}
    queues[q] = s
    order[#order + 1] = q
  end
  if task.visible > now then s.delayed = s.delayed + 1 else s.ready = s.ready + 1; ready_n = ready_n + 1 end
end
local seq = 0
if ready_n > 0 then seq = redis.call('INCRBY', K.seq, ready_n) - ready_n end
for _, q in ipairs(order) do
  local s = queues[q]
  redis.call('HSETNX', K.queues, q, s.meta)
  if s.ready > 0 then
    s.depth = qcount(q, 'ready', s.ready) - s.ready
    s.head = redis.call('HGET', K.qstats, q .. '!head')
  end
  if s.delayed > 0 then qcount(q, 'delayed', s.delayed) end
  tally(q, 'created', s.ready + s.delayed)
end

-- 3. write: events one by one (stream order is item order), everything else grouped
local records, payloads, ready, delayed = {}, {}, {}, {}
local by_status, by_command = {}, {}
local soonest = nil  -- the earliest visibility among the delayed ones
for _, task in ipairs(new) do
  local rec = task.rec
  local s = queues[rec.q]
  rec.status = 'PENDING'
  rec.attempts = 0
  rec.createdAt = now
  if task.visible > now then
    rec.loc = 'DELAYED_ZSET'
    rec.runAt = task.visible
    emit('task.created', rec, now, {'priority', rec.priority, 'runAt', int(task.visible)})
    delayed[#delayed + 1] = int(task.visible)
    delayed[#delayed + 1] = rec.id
    if not soonest or task.visible < soonest then soonest = task.visible end
  else
    emit('task.created', rec, now, {'priority', rec.priority})
    seq = seq + 1
    rec.seq = seq
    rec.loc = 'PENDING_LIST'
    local member = ready_member(rec)
    ready[#ready + 1] = 0
    ready[#ready + 1] = member
    if s.head and member < s.head then s.head, s.moved = member, true end
    s.depth = s.depth + 1
    local was_empty = 0
    if s.depth == 1 then was_empty = 1 end
    emit('task.ready', rec, now, {'depth', s.depth, 'wasEmpty', was_empty})
  end
  rec.updatedAt = now
  by_status[#by_status + 1] = 0
  by_status[#by_status + 1] = ix_status_member(rec, 'P')
  by_command[#by_command + 1] = 0
  by_command[#by_command + 1] = ix_command_member(rec)
  task.raw = cjson.encode(rec)
  records[#records + 1] = rec.id
  records[#records + 1] = task.raw
  payloads[#payloads + 1] = rec.id
  payloads[#payloads + 1] = task.payload
  if task.key then redis.call('SET', task.key, rec.id, 'PX', ttl) end
  out[task.i] = {'OK', task.raw}
end
bulk('HSET', K.payloads, payloads)
bulk('HSET', K.tasks, records)
bulk('ZADD', K.ready, ready)
bulk('ZADD', K.delayed, delayed)
bulk('ZADD', K.by_status, by_status)
bulk('ZADD', K.by_command, by_command)
if soonest then lower_floor('!delayed_floor', soonest) end
for _, q in ipairs(order) do
  local s = queues[q]
  if s.moved then redis.call('HSET', K.qstats, q .. '!head', s.head) end
end
for i, first in pairs(dups) do out[i] = {'DUP', first.raw, first.payload} end
return out
