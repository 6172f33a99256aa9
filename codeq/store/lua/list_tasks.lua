-- list_tasks.lua: one page of a tenant's tasks in one partition, newest first, from the listing
-- indexes (lib.lua: by_status, by_command). Read-only; no SCAN, no walk of the key space.
-- KEYS[1..15] partition keys (lib.lua); with index 'idem', KEYS[16] the idempotency key.
-- ARGV[1] tenant, ARGV[2] index: 'status' | 'command' | 'idem' (the one task KEYS[16] names,
--   ARGV[3] the queue it must be in or ''),
-- ARGV[3] the index prefixes to merge, ',' separated ('status': "<esc tenant>!<S>" for each
--   listing status asked for; 'command': the one "<q>"),
-- ARGV[4] created at or after (ms) or '', ARGV[5] created before (ms) or '',
-- ARGV[6] position to go on after ("<createdAt:13>!<id>", the last one of the previous page)
--   or '', ARGV[7] page size, ARGV[8] at most this many index entries are looked at,
-- ARGV[9] listing statuses a task must have ('' = any; with the 'command' index),
-- ARGV[10] priority a task must have or '',
-- ARGV[11] queue a task must be in ('' = any; with the 'status' index).
-- Returns {reached, record, payload, record, payload, ...}: reached = the position of the last
-- entry looked at when more may follow ('' when the range was looked at to its end); every
-- entry newer than it (after ARGV[6]) was looked at, so the caller goes on from there.
-- An entry whose record is gone, unreadable, another tenant's or in another listing status
-- (it cannot be, with single-script transitions) is skipped.
-- Reads (issue 14): a by_status range of P, W, R, D or X is never asked for more entries than
-- the queue counters say can be there (scan.lua's caps), and not at all when they say none;
-- see `status_caps`.
local tenant, index = ARGV[1], ARGV[2]
local after_ms, before_ms = tonumber(ARGV[4]), tonumber(ARGV[5])
local from, size, bound = ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8])
local want_codes, want_priority, want_q = ARGV[9], tonumber(ARGV[10]), ARGV[11] or ''

local function wanted(rec)
  if want_codes ~= '' and not string.find(want_codes, ix_code(rec), 1, true) then return false end
  if want_q ~= '' and rec.q ~= want_q then return false end
  return not want_priority or rec.priority == want_priority
end

if index == 'idem' then
  local out = {''}
  local id = redis.call('GET', KEYS[16])
  local rec, raw = nil, nil
  if id then rec, raw = load_rec(id) end
  if not rec or rec.tenant ~= tenant or not rec.createdAt or not wanted(rec)
      or (ARGV[3] ~= '' and rec.q ~= ARGV[3])
      or (from ~= '' and ix_position(rec) >= from)
      or (after_ms and rec.createdAt < after_ms)
      or (before_ms and rec.createdAt >= before_ms) then
    return out
  end
  out[2] = raw
  out[3] = redis.call('HGET', K.payloads, id) or ''
  return out
end

local key = K.by_status
if index == 'command' then key = K.by_command end

-- The listing statuses whose tasks qstats counts per queue, by where the record says the task
-- is (lib.lua `ix_code`; every transition moves a task's by_status member and its structure
-- in the same script): P is PENDING in ready, W PENDING in delayed, R IN_PROGRESS in leased, D
-- the DLQ, and X (CANCELLED) has a bound, not a count: the queue's total of cancels (`tally`,
-- which came with cancelling and never counts down; purge leaves it), 0 where nothing was ever
-- cancelled. That one matters: X sorts right after R, so an empty X range read from its top
-- walks down over every deleted entry of R. C and F have no such number (F's total of failed
-- results began after by_status did, so older F entries may be beyond it) and are read as
-- they were. Where the partition lists delayed tasks under P (no "!ixw", lib.lua `ixw`), or may
-- still hold some there ('0', the sweeper moving them), P's cap counts the delayed ones as well;
-- without "!ixw" W is not read at all.
-- (keys in brackets: a bare `D =` reads as the delivery key table, tests/test_strict_keys.py)
local COUNTED = {['P'] = {PENDING_LIST = '!ready', DELAYED_ZSET = '!delayed'},
                 ['W'] = {DELAYED_ZSET = '!delayed'},
                 ['R'] = {INPROG_SET = '!leased'}, ['D'] = {DLQ_SET = '!dlq'},
                 ['X'] = {NONE = '!n:cancelled'}}
local CODES = {'P', 'W', 'R', 'D', 'X'}

-- whether range `code`'s cap counts a task in `loc`
local function counts(code, loc)
  if code == 'P' and ixw() == '1' then return loc == 'PENDING_LIST' end
  local c = COUNTED[code]
  return c ~= nil and c[loc] ~= nil
end
-- past this many queues in the partition (all tenants') the caps are not worth their
-- O(queues) read of the registry: the ranges are read as they were
local MAX_QUEUES = 256
local summed = {}  -- queue -> true: the tenant's queues whose counters the caps add up

-- prefix -> the most live entries its range can hold: the sum of the tenant's queues'
-- counters of its status, or nil for no caps (the counters are not known to be exact:
-- no `!counted`, `!uncertain`, a count below zero; too many queues). The partition's queues
-- are the registry's (create registers each before its first task; nothing unregisters one).
-- The caps count on records the scripts wrote: a record whose `loc` disagrees with its status
-- is not counted, and one below where a cap ended its range is not listed (only itself).
local function status_caps(prefixes)
  local want, seg = {}, nil
  for prefix in string.gmatch(prefixes, '[^,]+') do
    local code = string.sub(prefix, -1)
    if COUNTED[code] then want[code], seg = true, string.sub(prefix, 1, -3) end
  end
  if not seg or redis.call('HLEN', K.queues) > MAX_QUEUES then return nil end
  local fields, code_of, loc_of = {'!counted', '!uncertain'}, {}, {}
  local mine = seg .. '/'
  for _, q in ipairs(redis.call('HKEYS', K.queues)) do
    if string.sub(q, 1, #mine) == mine then
      summed[q] = true
      for _, code in ipairs(CODES) do
        if want[code] then
          for loc, field in pairs(COUNTED[code]) do
            fields[#fields + 1] = q .. field
            code_of[#fields], loc_of[#fields] = code, loc
          end
        end
      end
    end
  end
  local got = redis.call('HMGET', K.qstats, unpack(fields))
  if got[1] ~= '1' or got[2] then return nil end  -- not known exact (lib.lua `uncertain`)
  local sums = {}
  for code in pairs(want) do sums[code] = 0 end
  for i = 3, #fields do
    local n = tonumber(got[i]) or 0
    if n < 0 then return nil end
    if counts(code_of[i], loc_of[i]) then sums[code_of[i]] = sums[code_of[i]] + n end
  end
  local caps = {}
  for prefix in string.gmatch(prefixes, '[^,]+') do caps[prefix] = sums[string.sub(prefix, -1)] end
  return caps
end

-- ARGV[3]'s prefixes are ranges of the index (scan.lua); an entry is taken when its record is
-- the tenant's, still at that position and in that range (status code or queue), and wanted.
-- It is counted (by a cap) when it is, besides, a member of the structure its status is
-- counted in, in a queue whose counters were added up.
-- A delayed task's entry under P (written before the partition's switch to W) is its entry
-- until the sweeper moves it, and a task has one entry: it is taken there.
local function accept(raw, e)
  local rec = decode_rec(raw, e.id)
  local ok = rec and rec.tenant == tenant and rec.createdAt ~= nil and ix_position(rec) == e.pos
  local code = string.sub(e.r.prefix, -1)
  if ok and index == 'status' then
    local has = ix_code(rec)
    ok = has == code or (code == 'P' and has == 'W')
  end
  if ok and index == 'command' then ok = rec.q == e.r.prefix end
  local counted = ok and summed[rec.q] and counts(code, rec.loc)
  return ok and wanted(rec), counted
end

local filtering = want_codes ~= '' or want_priority ~= nil
local prefixes, caps = ARGV[3], nil
if index == 'status' then
  if not ixw() then  -- no task is listed under W here: not read (an empty range read walks on)
    local kept = {}
    for prefix in string.gmatch(prefixes, '[^,]+') do
      if string.sub(prefix, -2) ~= '!W' then kept[#kept + 1] = prefix end
    end
    prefixes = table.concat(kept, ',')
  end
  caps = status_caps(prefixes)
end
local taken, reached = scan_page(key, prefixes, after_ms, before_ms, from, size, bound, filtering,
                                 K.tasks, accept, caps)
local out = {reached}
if #taken > 0 then
  local ids = {}
  for k, t in ipairs(taken) do ids[k] = t.id end
  local payloads = redis.call('HMGET', K.payloads, unpack(ids))
  for k, t in ipairs(taken) do
    out[#out + 1] = t.raw
    out[#out + 1] = payloads[k] or ''
  end
end
return out
