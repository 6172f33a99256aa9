-- lib.lua: helpers shared by every task script. Each script is a function of a library that
-- starts with this file (codeq/store/scripts.py): the file runs once, when the library is
-- loaded, and each call of the function starts with `begin(KEYS)` (at the end of this file).
--
-- KEYS[1..15] of every task script are the fixed keys of ONE partition, in this order (see
-- codeq/store/keys.py, PartitionKeys.all). Scripts that need more (idempotency keys) take them
-- from KEYS[16..]. Every key a script touches is declared, so KVRocks can run scripts in
-- parallel with lua-strict-key-accessing, and Redis Cluster sees a single slot.
--
-- Structures of a partition:
--   tasks    hash  id -> record JSON (our own fields only; user JSON is never decoded here)
--   payloads hash  id -> payload JSON text (written once)
--   results  hash  id -> result JSON text
--   ready    zset  score 0, member "<q>!<9-priority>!<seq:15>!<id>" (lex order = claim order)
--   delayed  zset  id, score = visible-at ms
--   leased   zset  id, score = lease deadline ms
--   dlq      zset  score 0, member "<q>!<deadAt:13>!<id>" (lex order = per queue, by death)
--   queues   hash  <q> -> {"tenant","command"} registry
--   qstats   hash  "<q>!ready", "<q>!delayed", "<q>!leased", "<q>!dlq" -> depth counters, kept
--                  by the scripts with every change of those structures (a lex-range count
--                  walks the range: its cost grew with the queue, ~0.5 ms at 10^4 on KVRocks);
--                  "!counted" -> the counters are exact: set by the first create of a
--                  partition that never had a ready member, else by the recount in
--                  sweep.lua (data from before the counters); claims trust "<q>!ready"
--                  only under it (a queue it says is empty is not read at all), and
--                  take it away when they see a count below zero; listings cap their
--                  reads by the counters under it too (list_tasks.lua);
--                  "!uncertain" -> a quarantine from delayed or leased took one off the
--                  queue an unreadable record names (`uncertain`): listings stop capping;
--                  "!delayed_floor", "!leased_floor" -> no member of delayed (leased) scores
--                  below it: where due-scans start, and whether a claim scans at all (due);
--                  "<q>!head" -> no ready member of q sorts before it (where a claim looks)
--   events   stream of the partition
--   expiry   zset  terminal ids, score = purge time ms
--   seq      string counter giving FIFO order inside a priority
--   lock     string sweeper lock
--   by_status  zset score 0, member "<esc tenant>!<S>!<createdAt:13>!<id>", S the task's
--                  listing status (`ix_code`): the tenant's tasks of one status, newest last
--                  (qstats "!ixw" -> the partition lists delayed tasks under W, `ix_code`)
--   by_command zset score 0, member "<q>!<createdAt:13>!<id>": the tasks of one queue
--                  (the listing indexes of issue 17: every transition that changes S moves the
--                  task's by_status member in the same script; by_command is written by create
--                  and removed by purge only, a task's command never changes)
-- This call's keys, bound by `begin` (below), every task function's first step.
local K = {}

local function int(x)
  return string.format('%d', x)
end

-- (TIME's two strings become numbers by the arithmetic: `tonumber` converts a string twice,
-- once to ask whether it is a number and once to give it; strtod is ~500 instructions a call)
local function now_ms()
  local t = redis.call('TIME')
  return t[1] * 1000 + math.floor(t[2] / 1000)
end

-- A record the scripts can act on: the fields every script reads, of the right types, integers
-- whole and below 10^14 (cjson writes larger numbers in exponent form, which no reader takes
-- for an integer). Anything else (written by an older version, by hand, by a bug) is poison.
local STATUSES = {PENDING = true, IN_PROGRESS = true, COMPLETED = true, FAILED = true,
                  CANCELLED = true}
local LOCS = {PENDING_LIST = true, DELAYED_ZSET = true, INPROG_SET = true, DLQ_SET = true, NONE = true}
local INT_FIELDS = {'attempts', 'maxAttempts', 'createdAt', 'updatedAt'}
local OPT_INT_FIELDS = {'seq', 'runAt', 'leaseUntil', 'deadAt', 'completedAt'}
local OPT_STR_FIELDS = {'webhook', 'workerId', 'leaseId', 'error', 'idempotencyKey',
                        'traceParent', 'traceState', 'payloadHash'}

-- (`x % 1`, not math.floor: no function call; NaN and infinities fail the comparisons)
local function whole(x)
  return type(x) == 'number' and x >= 0 and x < 1e14 and x % 1 == 0
end

-- Every script checks every record it reads, so this runs on each: numeric loops over the field
-- lists (not ipairs, a function call a step) and only the fields present checked further
-- (bench/instructions.py).
local function sound_rec(rec, id)
  if type(rec) ~= 'table' or rec.id ~= id or type(rec.q) ~= 'string'
      or type(rec.tenant) ~= 'string' or type(rec.command) ~= 'string'
      or not STATUSES[rec.status] or (rec.loc ~= nil and not LOCS[rec.loc])
      or not whole(rec.priority) or rec.priority > 9 then
    return false
  end
  for i = 1, #INT_FIELDS do
    local v = rec[INT_FIELDS[i]]
    if v ~= nil and not whole(v) then return false end
  end
  for i = 1, #OPT_INT_FIELDS do
    local v = rec[OPT_INT_FIELDS[i]]
    if v ~= nil and not whole(v) then return false end
  end
  for i = 1, #OPT_STR_FIELDS do
    local v = rec[OPT_STR_FIELDS[i]]
    if v ~= nil and type(v) ~= 'string' then return false end
  end
  return true
end

-- The record `raw` of `id`, or nil when it is poison (see `quarantine`).
local function decode_rec(raw, id)
  local ok, rec = pcall(cjson.decode, raw)
  if ok and sound_rec(rec, id) then return rec end
  return nil
end

-- The record of `id`: (rec, raw), (nil, nil) when absent, (nil, raw, true) when it is poison:
-- a script never fails on a record, and never acts on one it cannot read.
local function load_rec(id)
  local raw = redis.call('HGET', K.tasks, id)
  if not raw then return nil, nil end
  local rec = decode_rec(raw, id)
  if not rec then return nil, raw, true end
  return rec, raw
end

local function save_rec(rec, now)
  rec.updatedAt = now
  local raw = cjson.encode(rec)
  redis.call('HSET', K.tasks, rec.id, raw)
  return raw
end

-- The task's own history (`rec.hist`, read by GET /tasks/{id}/history): every event of the
-- task, as {type, at, field, value, ...} with the fields of HIST_FIELDS, newest last. The
-- stream is trimmed after eventRetentionSeconds and is per partition; this lives and dies with
-- the record, costs no command (it is part of the record the transition writes anyway) and is
-- bounded: past HIST_MAX entries the oldest after the first (task.created) go. A task.ready in
-- the same millisecond as the entry before it says nothing new and is left out.
local HIST_MAX = 32
local HIST_FIELDS = {workerId = true, attempt = true, reason = true, error = true,
                     delayMs = true, runAt = true}
local HIST_TEXT_MAX = 200

local function remember(kind, rec, now, extra)
  local hist = rec.hist
  if type(hist) ~= 'table' then hist = {}; rec.hist = hist end
  local last = hist[#hist]
  if kind == 'task.ready' and last and last[2] == now then return end
  local entry = {kind, now}
  if extra then
    for i = 1, #extra - 1, 2 do
      local v = extra[i + 1]
      if HIST_FIELDS[extra[i]] and v ~= '' then
        if type(v) == 'string' and #v > HIST_TEXT_MAX then v = string.sub(v, 1, HIST_TEXT_MAX) end
        entry[#entry + 1] = extra[i]
        entry[#entry + 1] = v
      end
    end
  end
  hist[#hist + 1] = entry
  while #hist > HIST_MAX do table.remove(hist, 2) end
end

-- Append one event to the partition stream and to the task's history. `extra` is a flat list
-- of field, value. Whole numbers (as `whole` takes them: integers from 0 below 10^14) go to
-- the stream written with '%d' (`tostring` writes a number with "%.14g", glibc's exact float
-- formatting, several times the instructions; the text is the same), any other value with
-- `tostring`; the call's time is written once (`begin` forgets it: nothing of one call reaches
-- the next).
local at_ms = nil    -- the `now` this call's last event was made at
local at_text = nil  -- and its text

local function emit(kind, rec, now, extra)
  remember(kind, rec, now, extra)
  if now ~= at_ms then at_ms, at_text = now, int(now) end
  local args = {'XADD', K.events, '*', 'type', kind, 'id', rec.id, 'tenant', rec.tenant,
                'command', rec.command, 'at', at_text}
  if extra then
    local n = #args
    for i = 1, #extra do
      local v = extra[i]
      if whole(v) then
        v = int(v)
      else
        v = tostring(v)
      end
      args[n + i] = v
    end
  end
  return redis.call(unpack(args))
end

local function qrange(q)
  return '[' .. q .. '!', '(' .. q .. '"'
end

-- priority -> the digit that sorts first for the highest (9 - priority), as text (create.lua;
-- a constant of the library, not a table built on every call): a number joined to a string or
-- handed to redis.call is formatted by printf's float path ("%.14g", "%.17g"), ~5 % of
-- redis-server's time in a create run before (perf); scores go as '0' too
local RANK = {['0'] = '9', ['1'] = '8', ['2'] = '7', ['3'] = '6', ['4'] = '5', ['5'] = '4',
              ['6'] = '3', ['7'] = '2', ['8'] = '1', ['9'] = '0'}

-- A ready member from its parts (`rank`: 9 - priority, as text; `seq`: the sequence number's
-- digits, `int`); create.lua builds its members from the parts it was handed, every other
-- script from a record (`ready_member`). The digits are padded to 15 by a string of zeros
-- (ZEROS[number of digits]), not by string.format('%015d'): create.lua formats the digits for
-- the record anyway, and a second format of the same number was ~1.5 % of a create's
-- instructions on Redis (bench/instructions.py). Written out: a library's top level cannot
-- reach `string` on Redis.
local ZEROS = {'00000000000000', '0000000000000', '000000000000', '00000000000', '0000000000',
               '000000000', '00000000', '0000000', '000000', '00000', '0000', '000', '00', '0',
               ''}

local function ready_member_of(q, rank, seq, id)
  return q .. '!' .. rank .. '!' .. (ZEROS[#seq] or '') .. seq .. '!' .. id
end

local function ready_member(rec)
  return ready_member_of(rec.q, int(9 - rec.priority), int(rec.seq), rec.id)
end

local function dlq_member(rec)
  return rec.q .. '!' .. string.format('%013d', rec.deadAt) .. '!' .. rec.id
end

-- The id a member ends with (after its last '!'). Anchored: an unanchored '([^!]+)$' is tried
-- from every position of the member, each try running to the next '!' and back (~30k
-- instructions on Redis for a ready member, a tenth of a claim, bench/instructions.py); this
-- one runs to the end once and steps back to the last '!' (~6k).
local function member_id(member)
  return string.match(member, '^.*!([^!]+)$') or string.match(member, '^([^!]+)$')
end

-- The id of queue `q`'s ready member `member`: after the '!' that ends its sequence number,
-- found by a plain search from where the number begins (member_id's pattern still steps back
-- through the id one match attempt a character: ~6k instructions, 2 % of a claim). A member
-- not of that shape (no writer makes one) is read as member_id reads it, or whole: never nil,
-- which would leave a hole in the ids a claim reads (its record is then missing, and the
-- member dropped as stale).
local function ready_member_id(member, q)
  local at = string.find(member, '!', #q + 4, true)
  if at then return string.sub(member, at + 1) end
  return member_id(member) or member
end

-- An empty array with room for `n` values (up to 32: two per item of a call of at most
-- MAX_SCRIPT_ITEMS = 16, codeq/store/merge.py; past that, the room for 32): a table that grows
-- by appending is rebuilt at every power of two, six times on the way to 32, and a create fills
-- a dozen of them (~4 % of its instructions on Redis, bench/instructions.py). A constructor of
-- nils sizes the table and leaves it empty; it may still grow past its room. Sized to the call,
-- not always for 32: room a call does not use is garbage the collector walks.
local function room(n)
  if n <= 2 then return {nil, nil} end
  if n <= 4 then return {nil, nil, nil, nil} end
  if n <= 8 then return {nil, nil, nil, nil, nil, nil, nil, nil} end
  if n <= 16 then
    return {nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil}
  end
  return {nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil,
          nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil}
end

-- One command over many field/value (or score/member) pairs of `key`, `flat` = {a1, b1, a2,
-- b2, ...}: in slices, so no call passes more arguments than Lua's stack takes.
local function bulk(cmd, key, flat)
  for i = 1, #flat, 1000 do
    redis.call(cmd, key, unpack(flat, i, math.min(i + 999, #flat)))
  end
end

-- The listing indexes (issue 17). A task's listing status S: P (PENDING and ready), W
-- (PENDING and waiting in the delayed set), R (IN_PROGRESS), C (COMPLETED), F (FAILED by a
-- worker's result), D (FAILED and in the DLQ: "DEAD") or X (CANCELLED). PENDING is listed from
-- two ranges, P and W, so that a task waiting long (a delay of hours) does not sit in P below
-- the deleted entries of every task claimed since it was created: on KVRocks a range read steps
-- over those one by one (docs/performance.md §25).
-- Releases before W list delayed tasks under P, and their scripts may run beside these during a
-- rolling update; so a partition lists its delayed tasks under W only once qstats "!ixw" says
-- so: '0' (they go under W; the sweeper is moving the older ones, and P may still hold some),
-- '1' (all under W). Without it, every script writes and reads delayed tasks where those
-- releases do. The switch (codeq.store.upkeep `list_waiting_apart`): a server's start on a
-- store no release can have used, `codeq serve` on its private store, or the operator once no
-- older process runs (docs/deploy.md).
local IX_CODES = {PENDING = 'P', IN_PROGRESS = 'R', COMPLETED = 'C', FAILED = 'F', CANCELLED = 'X'}
local pmarks = {}  -- this call's view of the partition's marks in qstats (false: absent)

-- The partition's "!ixw" (false when absent); `known`: the value the caller has read.
local function ixw(known)
  local m = pmarks.ixw
  if m == nil then
    if known == nil then known = redis.call('HGET', K.qstats, '!ixw') end
    m = known or false
    pmarks.ixw = m
  end
  return m
end

local function ix_code(rec)
  local loc = rec.loc
  if loc == 'DLQ_SET' then return 'D' end
  if loc == 'DELAYED_ZSET' and rec.status == 'PENDING' and ixw() then return 'W' end
  return IX_CODES[rec.status]
end

-- "<createdAt:13>!<id>": where a task sorts in every listing (the same in both indexes).
-- The members below end in it, each joined in one step from its parts (`created13`: the
-- creation time formatted so): a position joined first and then prefixed is one string more
-- per member, and a create writes two members a task (bench/instructions.py).
local function ix_position(rec)
  return string.format('%013d', rec.createdAt) .. '!' .. rec.id
end

-- "<esc tenant>!<S>!": where the by_status members of queue `q`'s tasks of status code
-- `code` begin; nil when `q` has no tenant segment (a quarantined record of an unknown queue).
-- (A plain find of the first '/', not the pattern '^([^/]*)/': a tenth of the instructions.)
local function ix_status_prefix(q, code)
  local slash = string.find(q, '/', 1, true)
  if not slash then return nil end
  return string.sub(q, 1, slash - 1) .. '!' .. code .. '!'
end

-- A by_status member: `prefix` (`ix_status_prefix`) and the position.
local function ix_status_member_of(prefix, created13, id)
  return prefix .. created13 .. '!' .. id
end

-- The task's by_status member for status code `code`; nil without a tenant segment or a
-- creation time.
local function ix_status_member(rec, code)
  if not rec.createdAt or not code then return nil end
  local prefix = ix_status_prefix(rec.q, code)
  return prefix and ix_status_member_of(prefix, string.format('%013d', rec.createdAt), rec.id)
end

-- A by_command member: "<q>!" and the position.
local function ix_command_member_of(q, created13, id)
  return q .. '!' .. created13 .. '!' .. id
end

local function ix_command_member(rec)
  if not rec.createdAt then return nil end
  return ix_command_member_of(rec.q, string.format('%013d', rec.createdAt), rec.id)
end

-- A transition moved `rec` from listing status `was` to its status now: move its member.
-- Leaving W, the task's P member goes too: a delayed task written before the partition's
-- switch is listed under P until the sweeper moves it (sweep.lua).
local function ix_move(rec, was)
  local now_code = ix_code(rec)
  if now_code == was then return end
  local old = ix_status_member(rec, was)
  if old then
    if was == 'W' then
      redis.call('ZREM', K.by_status, old, ix_status_member(rec, 'P'))
    else
      redis.call('ZREM', K.by_status, old)
    end
  end
  local new = ix_status_member(rec, now_code)
  if new then redis.call('ZADD', K.by_status, '0', new) end
end

-- A task leaves both indexes (purge). `code`: its listing status.
local function ix_remove(rec, code)
  local m = ix_status_member(rec, code)
  if m then redis.call('ZREM', K.by_status, m) end
  m = ix_command_member(rec)
  if m then redis.call('ZREM', K.by_command, m) end
end

-- Add `delta` to one of a queue's depth counters; returns the new depth.
local function qcount(q, field, delta)
  return redis.call('HINCRBY', K.qstats, q .. '!' .. field, delta)
end

-- A queue's outcome totals: qstats "<q>!n:<kind>", kind one of OUTCOMES, counted up by the
-- transitions (never down; the sweeper snapshots them once a minute into the rates ring, see
-- sweep.lua, and rates are differences of those).
local OUTCOMES = {'created', 'completed', 'failed', 'dead', 'cancelled'}

local function tally(q, kind, n)
  redis.call('HINCRBY', K.qstats, q .. '!n:' .. kind, n)
end

-- Take a task out of the structure its record says it is in.
local function leave_current(rec)
  local loc = rec.loc
  if loc == 'PENDING_LIST' then
    if redis.call('ZREM', K.ready, ready_member(rec)) == 1 then qcount(rec.q, 'ready', -1) end
  elseif loc == 'DELAYED_ZSET' then
    if redis.call('ZREM', K.delayed, rec.id) == 1 then qcount(rec.q, 'delayed', -1) end
  elseif loc == 'INPROG_SET' then
    if redis.call('ZREM', K.leased, rec.id) == 1 then qcount(rec.q, 'leased', -1) end
  elseif loc == 'DLQ_SET' then
    if redis.call('ZREM', K.dlq, dlq_member(rec)) == 1 then qcount(rec.q, 'dlq', -1) end
  end
  rec.loc = 'NONE'
end

local function clear_lease(rec)
  rec.workerId = nil
  rec.leaseId = nil
  rec.leaseUntil = nil
end

-- Floors. qstats "!delayed_floor" ("!leased_floor"): no member of the delayed (leased) set
-- scores below it. Every write that adds a member lowers it when needed (`lower_floor`), and a
-- scan raises it to where the remaining members begin, so a claim whose `now` is below both
-- floors scans nothing, and a scan starts at the floor, never below. On KVRocks the members
-- removed below a live one are tombstones that a range read from the start steps over one by
-- one: a lease scan from the start cost ~1 ms a claim while results deleted leases, and took
-- half of KVRocks' time in a claim+result loop. The floor is kept by the writes, not guessed
-- from the clock, so a clock that steps back misses nothing (`now` below the floor: nothing is
-- due); the sweeper (`from_start`) scans from -inf all the same, and sets the floor exactly. No
-- floor (data written before floors existed): scans go from -inf and set one.
local FLOOR_EMPTY = 9000000000000000  -- the set is empty: the first member added lowers it
local floors = {}  -- this call's view: field -> number, or false when there is none

local function floor_of(field, known)
  local f = floors[field]
  if f == nil then
    if known == nil then known = redis.call('HGET', K.qstats, field) end
    f = tonumber(known) or false
    floors[field] = f
  end
  return f
end

local function set_floor(field, value)
  if floors[field] ~= value then
    redis.call('HSET', K.qstats, field, int(value))
    floors[field] = value
  end
end

-- A member scoring `score` is being added to the set `field` is the floor of.
local function lower_floor(field, score)
  local f = floor_of(field)
  if f and score < f then set_floor(field, score) end
end

-- Put a task at the back of its queue's ready order and say so (task.ready).
local function make_ready(rec, now)
  rec.seq = redis.call('INCR', K.seq)
  rec.status = 'PENDING'
  rec.loc = 'PENDING_LIST'
  local member = ready_member(rec)
  redis.call('ZADD', K.ready, '0', member)  -- a new member: seq is unique
  local head = redis.call('HGET', K.qstats, rec.q .. '!head')
  if head and member < head then redis.call('HSET', K.qstats, rec.q .. '!head', member) end
  local depth = qcount(rec.q, 'ready', 1)
  local was_empty = 0
  if depth == 1 then was_empty = 1 end
  emit('task.ready', rec, now, {'depth', depth, 'wasEmpty', was_empty})
end

local function make_delayed(rec, at)
  rec.status = 'PENDING'
  rec.loc = 'DELAYED_ZSET'
  rec.runAt = at
  redis.call('ZADD', K.delayed, int(at), rec.id)
  lower_floor('!delayed_floor', at)
  qcount(rec.q, 'delayed', 1)
end

local function to_dlq(rec, now, err, retention_ms)
  rec.status = 'FAILED'
  rec.loc = 'DLQ_SET'
  rec.error = err
  rec.deadAt = now
  clear_lease(rec)
  if redis.call('ZADD', K.dlq, '0', dlq_member(rec)) == 1 then
    qcount(rec.q, 'dlq', 1)
    tally(rec.q, 'dead', 1)
  end
  if retention_ms > 0 then redis.call('ZADD', K.expiry, int(now + retention_ms), rec.id) end
  local extra = {'error', err}
  if rec.webhook then extra[#extra + 1] = 'webhook'; extra[#extra + 1] = rec.webhook end
  emit('task.dead_lettered', rec, now, extra)
end

-- A poison record found in a queue structure (its entry already taken out by the caller): the
-- task goes to the DLQ on its own, as a record every reader can decode, with error
-- UNDECODABLE_RECORD and the first 4 KiB of what was there (`corrupt`), so one bad record never
-- stops a claim, a sweep or anything else. `q` is the queue the entry named (a ready or DLQ
-- member says it; for the delayed and leased sets it is read from the text when it can be, else
-- the task lands under the queue segment "~unknown"); tenant and command come from the queue
-- registry. Returns the new record.
local UNKNOWN_QUEUE = '~unknown'

local function quarantine(id, raw, q, now, retention_ms)
  q = q or string.match(raw, '"q"%s*:%s*"([^"]+)"') or UNKNOWN_QUEUE
  local tenant, command = '', ''
  local meta = redis.call('HGET', K.queues, q)
  if meta then
    local ok, m = pcall(cjson.decode, meta)
    if ok and type(m) == 'table' then
      tenant, command = tostring(m.tenant or ''), tostring(m.command or '')
    end
  end
  local rec = {id = id, q = q, tenant = tenant, command = command, priority = 0, attempts = 0,
               maxAttempts = 1, createdAt = now, corrupt = string.sub(raw, 1, 4096)}
  rec.loc = 'NONE'
  to_dlq(rec, now, 'UNDECODABLE_RECORD', retention_ms)
  ix_move(rec, nil)  -- listed under its queue's tenant from now (its old entry, unreadable, stays)
  save_rec(rec, now)
  return rec
end

local function parse_delays(text)
  local t = {}
  for v in string.gmatch(text, '[^,]+') do t[#t + 1] = tonumber(v) end
  return t
end

local function delay_for(delays, attempts)
  if #delays == 0 then return 0 end
  local i = attempts
  if i < 1 then i = 1 end
  if i > #delays then i = #delays end
  return delays[i]
end

-- Who may act on a leased task: 404 (absent or another tenant) -> 403 -> 409.
local function check_owner(rec, tenant, worker, lease_id)
  if not rec or rec.tenant ~= tenant then return {'NOT_FOUND'} end
  if rec.workerId and rec.workerId ~= worker then return {'NOT_OWNER'} end
  if rec.status ~= 'IN_PROGRESS' then return {'NOT_IN_PROGRESS', rec.status} end
  if lease_id ~= '' and rec.leaseId ~= lease_id then return {'LEASE_MISMATCH'} end
  return nil
end

-- The ids of `key` (delayed or leased: scores are times) due by `now`, at most `limit`, and
-- whether the bound was hit; the floor `field` is moved to where the remaining members begin.
-- `known`: the floor as the caller already read it (false: none), else it is read here.
local function due(key, field, now, limit, from_start, known)
  local f = floor_of(field, known)
  if f and now < f and not from_start then return {}, false end
  local from = '-inf'
  if f and not from_start then from = int(f) end
  local flat = redis.call('ZRANGEBYSCORE', key, from, now, 'WITHSCORES', 'LIMIT', 0, limit)
  local ids = {}
  for i = 1, #flat, 2 do ids[#ids + 1] = flat[i] end
  local hit = #ids >= limit
  local next_floor
  if hit then
    next_floor = tonumber(flat[#flat])  -- more members may have this very score
  else
    local first = redis.call('ZRANGEBYSCORE', key, '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
    next_floor = tonumber(first[2]) or FLOOR_EMPTY
  end
  set_floor(field, next_floor)
  return ids, hit
end

-- A poison record left the delayed or leased set: the queue its unreadable text names is the
-- one whose counter went down, and it may not be the queue the task was in. Those counters are
-- no longer known to be exact, so listings stop capping their reads by them ("!uncertain",
-- list_tasks.lua; only an operator who has checked them takes it away, docs/deploy.md).
local function uncertain()
  redis.call('HSET', K.qstats, '!uncertain', '1')
end

-- Due delayed tasks become ready. Returns how many, and whether the bound was hit. `known`:
-- the floor when the caller has read it already (false: there is none).
local function promote_due(now, limit, from_start, known)
  local ids, hit = due(K.delayed, '!delayed_floor', now, limit, from_start, known)
  for _, id in ipairs(ids) do
    local rec, raw, poison = load_rec(id)
    if rec and rec.loc == 'DELAYED_ZSET' then
      local was = ix_code(rec)
      leave_current(rec)
      make_ready(rec, now)
      ix_move(rec, was)
      save_rec(rec, now)
    elseif poison then
      redis.call('ZREM', K.delayed, id)
      local gone = quarantine(id, raw, nil, now, 0)
      if gone.q ~= UNKNOWN_QUEUE then qcount(gone.q, 'delayed', -1) end
      uncertain()
    else
      redis.call('ZREM', K.delayed, id)
    end
  end
  return #ids, hit
end

-- A lease that ran out is handled like a nack with reason LEASE_EXPIRED. `delays_text`: the
-- backoff table as the caller got it ("ms,ms,..."), parsed only once a lease has run out: every
-- claim call carries it, and reading its 24 numbers cost ~90,000 instructions a call on Redis
-- (bench/instructions.py: a claim alone in its call 587k -> 493k), where a lease runs out rarely.
local function expire_leases(now, limit, delays_text, dlq_retention_ms, from_start, known)
  local ids, hit = due(K.leased, '!leased_floor', now, limit, from_start, known)
  local delays = nil
  for _, id in ipairs(ids) do
    local rec, raw, poison = load_rec(id)
    if poison then
      redis.call('ZREM', K.leased, id)
      local gone = quarantine(id, raw, nil, now, dlq_retention_ms)
      if gone.q ~= UNKNOWN_QUEUE then qcount(gone.q, 'leased', -1) end
      uncertain()
    elseif rec and rec.loc == 'INPROG_SET' then
      local was = ix_code(rec)
      leave_current(rec)
      emit('task.lease_expired', rec, now, {'attempt', rec.attempts, 'workerId', rec.workerId or ''})
      clear_lease(rec)
      if rec.attempts >= rec.maxAttempts then
        to_dlq(rec, now, 'LEASE_EXPIRED', dlq_retention_ms)
      else
        rec.error = 'LEASE_EXPIRED'
        delays = delays or parse_delays(delays_text)
        local d = delay_for(delays, rec.attempts)
        if d <= 0 then make_ready(rec, now) else make_delayed(rec, now + d) end
      end
      ix_move(rec, was)
      save_rec(rec, now)
    else
      redis.call('ZREM', K.leased, id)
    end
  end
  return #ids, hit
end

-- Terminal tasks whose retention ended before `before` are deleted with payload and result; at
-- most `limit` entries of the expiry set are looked at. With `tenant`, only that tenant's go:
-- the others stay, so such a call continues after the last entry it looked at, (`after_score`,
-- `after_member`), and returns where it stopped. Returns purged, more (bool), last score,
-- last member (nil when nothing was looked at), and how many entries it looked at.
local function purge_expired(before, limit, tenant, after_score, after_member)
  local from, skip = '-inf', 0
  if after_score then
    from = after_score
    -- entries of that very score up to the member were looked at already (members of one
    -- score are in member order)
    for _, m in ipairs(redis.call('ZRANGEBYSCORE', K.expiry, after_score, after_score)) do
      if m <= after_member then skip = skip + 1 end
    end
  end
  local flat = redis.call('ZRANGEBYSCORE', K.expiry, from, before, 'WITHSCORES', 'LIMIT', skip, limit)
  local purged = 0
  for i = 1, #flat, 2 do
    local id = flat[i]
    local rec, _, poison = load_rec(id)
    if tenant and (poison or (rec and rec.tenant ~= tenant)) then
      -- another tenant's task (or one nobody can read): not ours to touch
    elseif rec and (rec.status == 'COMPLETED' or rec.status == 'FAILED'
                    or rec.status == 'CANCELLED') then
      ix_remove(rec, ix_code(rec))
      leave_current(rec)
      redis.call('HDEL', K.tasks, id)
      redis.call('HDEL', K.payloads, id)
      redis.call('HDEL', K.results, id)
      purged = purged + 1
      redis.call('ZREM', K.expiry, id)
    else
      redis.call('ZREM', K.expiry, id)
    end
  end
  if #flat == 0 then return purged, false, nil, nil, 0 end
  return purged, #flat >= limit * 2, flat[#flat], flat[#flat - 1], #flat / 2
end

-- Every task function's first step (codeq/store/scripts.py writes it there): this call's keys,
-- and a fresh start for what the library keeps for one call (`floors`). The library is loaded
-- once and its functions run many times: nothing of one call may reach the next.
local function begin(keys)
  K.tasks = keys[1]
  K.payloads = keys[2]
  K.results = keys[3]
  K.ready = keys[4]
  K.delayed = keys[5]
  K.leased = keys[6]
  K.dlq = keys[7]
  K.queues = keys[8]
  K.qstats = keys[9]
  K.events = keys[10]
  K.expiry = keys[11]
  K.seq = keys[12]
  K.lock = keys[13]
  K.by_status = keys[14]
  K.by_command = keys[15]
  floors = {}
  pmarks = {}
  at_ms = nil
  at_text = nil
end
