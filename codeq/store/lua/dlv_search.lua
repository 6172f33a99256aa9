-- dlv_search.lua: one page of a tenant's deliveries in one partition, newest first, from the
-- listing index (dlv_lib.lua: index, by_task). Read-only; no SCAN, no walk of the key space.
-- KEYS[1..13] delivery keys (dlv_lib.lua).
-- ARGV[1] tenant, ARGV[2] index: 'index' (ranges of the listing index) | 'task' (the range of
--   one task in by_task, which is not the tenant's own: every record's tenant is checked),
-- ARGV[3] the range prefixes to merge, ',' separated (members are "<prefix>!<pos>"):
--   'index': "<T>!a", "<T>!s!<S>", "<T>!e!<E>!a", "<T>!e!<E>!<S>" or "<T>!v!<V>"; 'task':
--   the task id,
-- ARGV[4] created at or after (ms) or '', ARGV[5] created before (ms) or '',
-- ARGV[6] position to go on after ("<createdAt:13>!<id>", the last one of the previous page)
--   or '', ARGV[7] page size, ARGV[8] at most this many index entries are looked at,
-- ARGV[9] statuses a delivery must have, ',' separated ('' = any),
-- ARGV[10] endpoint id, ARGV[11] event type, ARGV[12] task id it must have ('' = any).
-- Returns {reached, record, record, ...}: reached = the position of the last entry looked at
-- when more may follow ('' when every range was looked at to its end); every entry newer than
-- it (after ARGV[6]) was looked at, so the caller goes on from there.
-- An entry whose record is gone, another tenant's, or does not match is skipped; so is a
-- by_task entry written before it held the creation time.
local tenant, index = ARGV[1], ARGV[2]
local after_ms, before_ms = tonumber(ARGV[4]), tonumber(ARGV[5])
local from, size, bound = ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8])
local want_status = {}
local any_status = true
for s in string.gmatch(ARGV[9], '[^,]+') do
  want_status[s] = true
  any_status = false
end
local want_ep, want_type, want_task = ARGV[10], ARGV[11], ARGV[12]
local checked = not any_status or want_ep ~= '' or want_type ~= '' or want_task ~= ''

local key = D.index
if index == 'task' then key = D.by_task end

local function wanted(rec)
  if rec.tenant ~= tenant then return false end
  if not any_status and not want_status[status_of(rec)] then return false end
  if want_ep ~= '' and rec.endpointId ~= want_ep then return false end
  if want_type ~= '' and rec.eventType ~= want_type then return false end
  return want_task == '' or rec.taskId == want_task
end

-- ARGV[3]'s prefixes are ranges of the index (scan.lua); an entry is taken when its record
-- is still at that position and wanted.
local function accept(raw, e)
  local ok, rec = pcall(cjson.decode, raw)
  return ok and type(rec) == 'table' and dlv_pos(rec, e.id) == e.pos and wanted(rec)
end

local taken, reached = scan_page(key, ARGV[3], after_ms, before_ms, from, size, bound, checked,
                                 D.records, accept)
local out = {reached}
for _, t in ipairs(taken) do out[#out + 1] = t.raw end
return out
