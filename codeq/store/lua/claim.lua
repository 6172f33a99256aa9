-- claim.lua: lease the best ready tasks of the given queues, one per claim, after a bounded
-- repair. Claims of one partition that share a lease: the store merges the claims workers make
-- in the same instant into one call (codeq/store/merge.py), in groups that name the same
-- queues; a group's claims are served in item order, exactly as if they had come one after
-- the other, and the groups one after the other (a member an earlier group took is passed
-- over by a later one whose queues overlap).
-- KEYS[1..15] partition keys (lib.lua).
-- ARGV[1] lease ms, ARGV[2] repair bound, ARGV[3] backoff table "ms,ms,..." (attempt 1..n),
-- ARGV[4] DLQ retention ms, ARGV[5] g groups, then per group: m, m queue segments in request
-- order, k, then per claim: workerId, new leaseId.
-- Order: highest priority first across a group's queues; ties go to the earlier queue in ARGV;
-- FIFO inside a priority (ready member order).
-- A task whose attempts already reached maxAttempts (it was abandoned on its last attempt) is
-- dead-lettered with MAX_ATTEMPTS instead of being handed out again: a task goes to workers
-- at most maxAttempts times. A ready entry whose record is poison (lib.lua `quarantine`) goes
-- to the DLQ on its own. Either way the claim goes on to the next task.
-- Returns one entry per claim, in group order: {'OK', record, payload} | {'EMPTY'}.
-- Events: repair ones (task.ready, task.lease_expired, task.dead_lettered), then task.claimed.
-- Shape: the floors, head marks and ready counts are read in one HMGET, the candidates of a
-- queue in one ZRANGEBYLEX (none for a queue its count says is empty), their records in one
-- HMGET; the ready members go in one ZREM, the head marks in
-- one HSET, the leases in one ZADD, the records in one HSET, the payloads come in one HMGET;
-- the events stay per task, the counters per queue; the leased tasks' listing entries
-- move from P to R in one ZREM and one ZADD: for the whole call, whatever its groups.
local now = now_ms()
local lease_ms = tonumber(ARGV[1])
-- every lease of the call ends then; its text made once (a number handed to redis.call is
-- written with "%.17g", several times what '%d' costs)
local lease_until = now + lease_ms
local lease_until_text = int(lease_until)
local limit = tonumber(ARGV[2])
local delays = ARGV[3]  -- the backoff table's text: expire_leases reads it when it must
local dlq_retention = tonumber(ARGV[4])
local groups, names, named = {}, {}, {}  -- names: every queue of the call, once
local p = 6
for _ = 1, tonumber(ARGV[5]) do
  local m = tonumber(ARGV[p])
  local qs, in_group = {}, {}
  for i = 1, m do
    local q = ARGV[p + i]
    if not in_group[q] then  -- a queue named twice would offer its members twice
      in_group[q] = true
      qs[#qs + 1] = q
      if not named[q] then named[q] = true; names[#names + 1] = q end
    end
  end
  p = p + m + 1
  local claims = {}
  for j = 1, tonumber(ARGV[p]) do
    claims[j] = {worker = ARGV[p + 2 * j - 1], lease = ARGV[p + 2 * j]}
  end
  p = p + 2 * #claims + 1
  groups[#groups + 1] = {qs = qs, claims = claims}
end

-- the two floors, the layout mark, and every queue's head mark and ready count in one read
-- (KVRocks charges ~7 µs a call); last, where delayed tasks are listed (lib.lua `ixw`), which
-- a task made ready or retried asks
local fields = {'!delayed_floor', '!leased_floor', '!counted'}
for i = 1, #names do
  fields[#fields + 1] = names[i] .. '!head'
  fields[#fields + 1] = names[i] .. '!ready'
end
fields[#fields + 1] = '!ixw'
local function read_marks() return redis.call('HMGET', K.qstats, unpack(fields)) end
local marks = read_marks()
ixw(marks[#fields])
local moved = promote_due(now, limit, false, marks[1])
moved = moved + expire_leases(now, limit, delays, dlq_retention, false, marks[2])
-- heads[q]: the head mark of queue q (false: none); counts[q]: its ready members, when the
-- partition's counters are exact (`!counted`, lib.lua), else nil. A count below zero proves
-- they are not: the mark goes, every queue of the partition is read again until the
-- sweeper's recount sets it. A task the repair made ready may have lowered a mark and raised
-- a count: then they are read again.
if moved > 0 then marks = read_marks() end
local exact = marks[3] == '1'
local heads, counts = {}, {}
for i = 1, #names do
  heads[names[i]] = marks[2 * i + 2]
  local c = tonumber(marks[2 * i + 3]) or 0
  if c < 0 and exact then
    exact = false
    redis.call('HDEL', K.qstats, '!counted')
  end
  counts[names[i]] = c
end
if not exact then counts = {} end
local after = {}  -- queue -> the last member an earlier group took (a later one pages past it)
local total = 0   -- claims in the call: the repair bound is one budget for all of them
for _, group in ipairs(groups) do total = total + #group.claims end
local examined = 0

local out = {}
local removed = {}              -- the ready members taken out
local gone = {}                 -- the same, as a set: a later group passes over them
local taken_from = {}           -- queue -> how many, and its last member
local leases, records = {}, {}  -- ZADD and HSET arguments
local ix_out, ix_in = {}, {}    -- the leased tasks' by_status members, before and after
local won = {}                  -- out positions of the leased tasks, for their payloads
local won_ids = {}
local leased_n = {}             -- queue -> how many it leased (one HINCRBY per queue)

for _, group in ipairs(groups) do
  local qs, claims = group.qs, group.claims
  local m, n, base = #qs, #claims, #out
  -- The ready members of each queue, fetched a page at a time from its head mark on (from the
  -- mark, not the queue's start: the members claimed before it are deleted entries that
  -- KVRocks would step over one by one, 6 ms a claim after 10^5 of them), never more than
  -- the queue's count says are left, and not at all when it says none: a range read that
  -- finds fewer members than it asked for goes on past the queue's end, over the deleted
  -- entries of the queues that sort after it (up to 4.4 ms a read on KVRocks after a few
  -- rounds of load, docs/performance.md §20).
  local pages, at, last_fetched, done = {}, {}, {}, {}
  local left = {}  -- queue index -> members not yet fetched, by the count (nil: unknown)
  for i = 1, m do
    local c = counts[qs[i]]
    if c then left[i] = c - (taken_from[qs[i]] and taken_from[qs[i]].count or 0) end
  end
  local function peek(i)
    while true do
      if not (pages[i] and at[i] <= #pages[i]) then
        if done[i] or (left[i] and left[i] <= 0) then return nil end
        local lo, hi = qrange(qs[i])
        if last_fetched[i] then
          lo = '(' .. last_fetched[i]
        elseif after[qs[i]] then
          lo = '(' .. after[qs[i]]
        elseif heads[qs[i]] then
          lo = '[' .. heads[qs[i]]
        end
        local want = n
        if left[i] and left[i] < want then want = left[i] end
        local page = redis.call('ZRANGEBYLEX', K.ready, lo, hi, 'LIMIT', 0, want)
        pages[i], at[i] = page, 1
        if left[i] then left[i] = left[i] - #page end
        if #page < want then done[i] = true end
        if #page == 0 then return nil end
        last_fetched[i] = page[#page]
      end
      local member = pages[i][at[i]]
      if not gone[member] then return member end
      at[i] = at[i] + 1  -- an earlier group of this call took it
    end
  end

  local served = 0                -- claims of the group answered with a task
  while served < n and examined < total + limit do
    -- this round's candidates: the best members, in claim order, one per claim still open
    local round = {}
    while #round < n - served do
      local best, best_i, best_rank = nil, nil, 99
      for i = 1, m do
        local member = peek(i)
        if member then
          local rank = string.byte(member, #qs[i] + 2) - 48  -- its priority's digit
          if rank < best_rank then best, best_i, best_rank = member, i, rank end
          if rank == 0 then break end
        end
      end
      if not best then break end
      at[best_i] = at[best_i] + 1
      round[#round + 1] = {member = best, q = qs[best_i], id = ready_member_id(best, qs[best_i])}
    end
    if #round == 0 then break end
    local ids = {}
    for k, c in ipairs(round) do ids[k] = c.id end
    local raws = redis.call('HMGET', K.tasks, unpack(ids))
    for k, c in ipairs(round) do
      examined = examined + 1
      removed[#removed + 1] = c.member
      gone[c.member] = true
      local t = taken_from[c.q]
      if not t then t = {count = 0}; taken_from[c.q] = t end
      t.count, t.last = t.count + 1, c.member
      local rec = nil
      if raws[k] then rec = decode_rec(raws[k], c.id) end
      if raws[k] and not rec then
        quarantine(c.id, raws[k], c.q, now, dlq_retention)
      elseif rec and rec.loc == 'PENDING_LIST' and rec.status == 'PENDING'
          and rec.attempts >= rec.maxAttempts then
        rec.loc = 'NONE'
        to_dlq(rec, now, 'MAX_ATTEMPTS', dlq_retention)
        ix_move(rec, 'P')
        save_rec(rec, now)
      elseif rec and rec.loc == 'PENDING_LIST' and rec.status == 'PENDING' then
        served = served + 1
        local claim = claims[served]
        ix_out[#ix_out + 1] = ix_status_member(rec, 'P')
        rec.loc = 'INPROG_SET'
        rec.status = 'IN_PROGRESS'
        rec.attempts = rec.attempts + 1
        rec.workerId = claim.worker
        rec.leaseId = claim.lease
        rec.leaseUntil = lease_until
        leases[#leases + 1] = lease_until_text
        leases[#leases + 1] = c.id
        leased_n[rec.q] = (leased_n[rec.q] or 0) + 1
        emit('task.claimed', rec, now, {'workerId', claim.worker, 'attempt', rec.attempts})
        rec.updatedAt = now
        ix_in[#ix_in + 1] = '0'
        ix_in[#ix_in + 1] = ix_status_member(rec, 'R')
        local raw = cjson.encode(rec)
        records[#records + 1] = c.id
        records[#records + 1] = raw
        out[base + served] = {'OK', raw}
        won[#won + 1] = base + served
        won_ids[#won_ids + 1] = c.id
      end
      -- else a stale entry (should not exist with single-script transitions): dropped
    end
  end
  for k = served + 1, n do out[base + k] = {'EMPTY'} end
  for q, t in pairs(taken_from) do after[q] = t.last end
end

if #removed > 0 then
  redis.call('ZREM', K.ready, unpack(removed))
  local head_args = {}
  for q, t in pairs(taken_from) do
    qcount(q, 'ready', -t.count)
    head_args[#head_args + 1] = q .. '!head'  -- every member before it is gone
    head_args[#head_args + 1] = t.last
  end
  redis.call('HSET', K.qstats, unpack(head_args))
end
if #won > 0 then
  for q, k in pairs(leased_n) do qcount(q, 'leased', k) end
  bulk('ZADD', K.leased, leases)
  lower_floor('!leased_floor', lease_until)
  bulk('HSET', K.tasks, records)
  redis.call('ZREM', K.by_status, unpack(ix_out))  -- at most one per claim of the call
  bulk('ZADD', K.by_status, ix_in)
  local payloads = redis.call('HMGET', K.payloads, unpack(won_ids))
  for k = 1, #won do out[won[k]][3] = payloads[k] or '' end
end
return out
