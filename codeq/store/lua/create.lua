-- create.lua: create one or more tasks in one partition: a batch, or single creates that
-- arrived together (the store merges concurrent creates of a partition into one call, at most
-- MAX_SCRIPT_ITEMS items, see codeq/store/merge.py).
-- KEYS[1..15] partition keys (lib.lua); KEYS[16..] idempotency keys named by the items.
-- ARGV[1] idempotency TTL ms; ARGV[2] n; then per item 12 values:
--   the record's head (its JSON without the closing brace: id, command, q, tenant, priority,
--   maxAttempts, webhook?, idempotencyKey?, traceParent?, traceState?, payloadHash?), payload
--   JSON text, runAt ms or '', delay ms or '', index into KEYS of its idempotency key or '0',
--   queue registry JSON, and the head's id, q, tenant, command, priority and payloadHash.
-- Returns one entry per item: tail | {'DUP', record, payload} | {'CONFLICT', id}, where tail (a
-- string, not a table: every created task's entry, so the reply is one array of strings, ~5 %
-- of a create's instructions on Redis less than {'OK', tail}, bench/instructions.py) is what
-- the script appended to the item's head (the record is head .. tail: the caller has the head,
-- and it need not travel back).
-- Two items with the same idempotency key: the first creates, the second is its DUP (or a
-- CONFLICT), exactly as if they had come one after the other.
-- Events: one task.created per task (in item order); a task visible at once carries its
-- task.ready's depth and wasEmpty in it (one entry, not two: 6-8 % of a create's script time
-- on Redis, 10-13 % on KVRocks, docs/performance.md §22), and every reader takes it for both
-- events.
-- Listing: every new task joins by_status (as P, or W when delayed) and by_command, in one ZADD
-- each per call.
--
-- Shape: every item is read and decided before the first write (an item the script cannot
-- take fails the call before it writes anything), then the writes are grouped: one HSET of the
-- records, one of the payloads, one ZADD per sorted set, one INCRBY of seq, per queue one
-- HSETNX of the registry, and for all queues one HMGET and one HSET of their counters (the
-- depths and the created totals), head marks and the delayed floor. A call of n tasks makes
-- n + a few redis.calls (the event of each task, plus its idempotency key).
--
-- The script decodes and encodes no JSON: Python hands it the record's head and the fields it
-- acts on, and it appends what only the store knows (the time, the sequence, where the task
-- is, its history of one entry); the reply is only that tail. No cjson either way, no event
-- tables, no history table: a create's script time fell from 32 to 19 µs on Redis and from 67
-- to 48 µs on KVRocks (docs/performance.md §18).
local now = now_ms()
local now_s = int(now)
local now13 = string.format('%013d', now)
local ttl = ARGV[1]
local n = tonumber(ARGV[2])
local W = 12        -- values per item
local out = room(n)
-- the tasks this call creates, in item order, as arrays (not a table each, ~3 % of a create's
-- instructions on Redis): their items' ARGV offsets (b), when they become visible, their
-- idempotency keys (false: none); a new task's record and payload are records[2j] and
-- payloads[2j] once written
local new, vis, keyed, n_new = room(n), room(n), room(n), 0
local by_key = {}   -- idempotency key -> the new task of this call that took it (its place)
local dups = {}     -- item index -> the new task it repeats (answered once that one is written)

-- 1. decide
for i = 1, n do
  local b = 2 + (i - 1) * W
  local q, hash = ARGV[b + 8], ARGV[b + 12]
  if not RANK[ARGV[b + 11]] then  -- the engine clamps it; any other caller is refused whole
    return redis.error_reply('create: priority must be one digit 0-9, got ' .. ARGV[b + 11])
  end
  local ik = ARGV[b + 5]
  local key = nil
  if ik ~= '0' then key = KEYS[tonumber(ik)] end
  local first = key and by_key[key]
  if first then
    local fb = new[first]
    if ARGV[fb + 8] ~= q or ARGV[fb + 12] ~= hash then
      out[i] = {'CONFLICT', ARGV[fb + 7]}
    else
      dups[i] = first
    end
  else
    local existing = key and redis.call('GET', key)
    local old, old_raw = nil, nil
    if existing then old, old_raw = load_rec(existing) end
    if old then
      if old.q ~= q or (old.payloadHash or '') ~= hash then
        out[i] = {'CONFLICT', existing}
      else
        out[i] = {'DUP', old_raw, redis.call('HGET', K.payloads, existing) or ''}
      end
    else
      local run_at, delay = ARGV[b + 3], ARGV[b + 4]
      local visible = now
      if run_at ~= '' then
        visible = tonumber(run_at)
      elseif delay ~= '' then
        visible = now + tonumber(delay)
      end
      n_new = n_new + 1
      new[n_new], vis[n_new], keyed[n_new] = b, visible, key or false
      if key then by_key[key] = n_new end
    end
  end
end

-- 2. reserve: sequence numbers, queue registry, counters, head marks
local queues, order, ready_n = {}, {}, 0
for j = 1, n_new do
  local b = new[j]
  local q = ARGV[b + 8]
  local s = queues[q]
  if not s then
    -- every field the call sets, so the table is never resized
    s = {ready = 0, delayed = 0, meta = ARGV[b + 6], at = 0, ix = false, ixw = false,
         depth = 0, head = false, moved = false}
    queues[q] = s
    order[#order + 1] = q
  end
  if vis[j] > now then s.delayed = s.delayed + 1 else s.ready = s.ready + 1; ready_n = ready_n + 1 end
end
local seq = 0
if ready_n > 0 then seq = redis.call('INCRBY', K.seq, ready_n) - ready_n end
-- No sequence number was ever taken here: the partition has never had a ready member, so its
-- counters are exact from this call on; say so (`!counted`, which claims trust) without
-- waiting for the sweeper's recount.
local fresh = ready_n > 0 and seq == 0
-- the queues' counters and head marks (and the delayed floor): read in one HMGET, written in
-- one HSET at the end, not an HINCRBY or HGET each (a redis.call costs ~0.5-1 µs on Redis and
-- ~1.5-4 µs on KVRocks beyond its command, bench/scriptcost.py)
local fields, nf, any_delayed = room(2 + 4 * #order), 1, false
fields[1] = '!ixw'
for _, q in ipairs(order) do
  local s = queues[q]
  redis.call('HSETNX', K.queues, q, s.meta)
  s.at = nf
  fields[nf + 1] = q .. '!ready'
  fields[nf + 2] = q .. '!head'
  fields[nf + 3] = q .. '!delayed'
  fields[nf + 4] = q .. '!n:created'
  nf = nf + 4
  if s.delayed > 0 then any_delayed = true end
  s.ix = ix_status_prefix(q, 'P')
  s.ixw = ix_status_prefix(q, 'W')
end
if any_delayed then
  nf = nf + 1
  fields[nf] = '!delayed_floor'
end
local got = {}
-- at most 4 * 16 + 2 fields, the first '!ixw' (lib.lua `ixw`): whether delayed tasks are
-- listed under W here
if #order > 0 then
  got = redis.call('HMGET', K.qstats, unpack(fields, 1, nf))
  ixw(got[1])
end
for _, q in ipairs(order) do
  local s = queues[q]
  s.depth = tonumber(got[s.at + 1]) or 0
  s.head = got[s.at + 2]
end

-- 3. write: events one by one (stream order is item order), everything else grouped; arrays
-- filled by position from counters (`#t + 1` searches for the length every time)
local two = 2 * n_new  -- two values a task: field and value, score and member
local records, payloads, ready, delayed = room(two), room(two), room(two), {}
local by_status, by_command = room(two), room(two)
local soonest = nil  -- the earliest visibility among the delayed ones
local created = ',"status":"PENDING","attempts":0,"createdAt":' .. now_s .. ',"updatedAt":' .. now_s
local nr, nd, ns = 0, 0, 0  -- the lengths of ready, delayed and by_status so far
for j = 1, n_new do
  local b = new[j]
  local id, q, visible = ARGV[b + 7], ARGV[b + 8], vis[j]
  local s = queues[q]
  local tenant, command, priority = ARGV[b + 9], ARGV[b + 10], ARGV[b + 11]
  local tail, ix = nil, s.ix
  if visible > now then
    if ixw() then ix = s.ixw end
    local at = int(visible)
    redis.call('XADD', K.events, '*', 'type', 'task.created', 'id', id, 'tenant', tenant,
               'command', command, 'at', now_s, 'priority', priority, 'runAt', at)
    tail = created .. ',"loc":"DELAYED_ZSET","runAt":' .. at
          .. ',"hist":[["task.created",' .. now_s .. ',"runAt",' .. at .. ']]}'
    delayed[nd + 1] = at
    delayed[nd + 2] = id
    nd = nd + 2
    if not soonest or visible < soonest then soonest = visible end
  else
    seq = seq + 1
    local digits = int(seq)
    local member = ready_member_of(q, RANK[priority], digits, id)
    ready[nr + 1] = '0'
    ready[nr + 2] = member
    nr = nr + 2
    if s.head and member < s.head then s.head, s.moved = member, true end
    s.depth = s.depth + 1
    local was_empty = '0'
    if s.depth == 1 then was_empty = '1' end
    -- one entry for both events: a task.created with depth and wasEmpty is also the task's
    -- task.ready (codeq.domain.makes_ready; the history leaves that task.ready out, as the
    -- same millisecond as task.created)
    redis.call('XADD', K.events, '*', 'type', 'task.created', 'id', id, 'tenant', tenant,
               'command', command, 'at', now_s, 'priority', priority, 'depth', int(s.depth),
               'wasEmpty', was_empty)
    tail = created .. ',"loc":"PENDING_LIST","seq":' .. digits
          .. ',"hist":[["task.created",' .. now_s .. ']]}'
  end
  if ix then
    by_status[ns + 1] = '0'
    by_status[ns + 2] = ix_status_member_of(ix, now13, id)
    ns = ns + 2
  end
  local k = 2 * j
  by_command[k - 1] = '0'
  by_command[k] = ix_command_member_of(q, now13, id)
  records[k - 1] = id
  records[k] = ARGV[b + 1] .. tail
  payloads[k - 1] = id
  payloads[k] = ARGV[b + 2]
  if keyed[j] then redis.call('SET', keyed[j], id, 'PX', ttl) end
  out[(b - 2) / W + 1] = tail  -- its item's place (b = 2 + (i - 1) * W)
end
bulk('HSET', K.payloads, payloads)
bulk('HSET', K.tasks, records)
bulk('ZADD', K.ready, ready)
bulk('ZADD', K.delayed, delayed)
bulk('ZADD', K.by_status, by_status)
bulk('ZADD', K.by_command, by_command)
local counts, nc = room(4 + 8 * #order), 0  -- four pairs a queue, the floor, the mark
for _, q in ipairs(order) do
  local s = queues[q]
  local base = s.at
  if s.ready > 0 then
    counts[nc + 1], counts[nc + 2], nc = fields[base + 1], int(s.depth), nc + 2
  end
  if s.moved then
    counts[nc + 1], counts[nc + 2], nc = fields[base + 2], s.head, nc + 2
  end
  if s.delayed > 0 then
    counts[nc + 1] = fields[base + 3]
    counts[nc + 2] = int((tonumber(got[base + 3]) or 0) + s.delayed)
    nc = nc + 2
  end
  counts[nc + 1] = fields[base + 4]
  counts[nc + 2] = int((tonumber(got[base + 4]) or 0) + s.ready + s.delayed)
  nc = nc + 2
end
-- the delayed floor is lowered, never set where there is none (see lib.lua, floors)
local floor = any_delayed and tonumber(got[nf])
if soonest and floor and soonest < floor then
  counts[nc + 1], counts[nc + 2], nc = '!delayed_floor', int(soonest), nc + 2
end
if fresh then
  counts[nc + 1], counts[nc + 2], nc = '!counted', '1', nc + 2
end
bulk('HSET', K.qstats, counts)
for i, first in pairs(dups) do out[i] = {'DUP', records[2 * first], payloads[2 * first]} end
return out
