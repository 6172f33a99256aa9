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

-- ARGV[3]'s prefixes are ranges of the index (scan.lua); an entry is taken when its record is
-- the tenant's, still at that position and in that range (status code or queue), and wanted.
local function accept(raw, e)
  local rec = decode_rec(raw, e.id)
  local ok = rec and rec.tenant == tenant and rec.createdAt ~= nil and ix_position(rec) == e.pos
  if ok and index == 'status' then ok = ix_code(rec) == string.sub(e.r.prefix, -1) end
  if ok and index == 'command' then ok = rec.q == e.r.prefix end
  return ok and wanted(rec)
end

local filtering = want_codes ~= '' or want_priority ~= nil
local taken, reached = scan_page(key, ARGV[3], after_ms, before_ms, from, size, bound, filtering,
                                 K.tasks, accept)
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
