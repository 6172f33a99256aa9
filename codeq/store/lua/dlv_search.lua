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

-- One range per prefix, read from the top down.
local ranges = {}
for prefix in string.gmatch(ARGV[3], '[^,]+') do
  local hi = '(' .. prefix .. '"'
  if before_ms then hi = '(' .. prefix .. '!' .. string.format('%013d', before_ms) end
  if from ~= '' then
    local at = '(' .. prefix .. '!' .. from
    if at < hi then hi = at end
  end
  local lo = '[' .. prefix .. '!'
  if after_ms then lo = '[' .. prefix .. '!' .. string.format('%013d', after_ms) end
  ranges[#ranges + 1] = {prefix = prefix, hi = hi, lo = lo, page = {}, at = 1, done = false}
end

local chunk = size + 1
local function head(r)
  if r.at > #r.page and not r.done then
    r.page = redis.call('ZREVRANGEBYLEX', key, r.hi, r.lo, 'LIMIT', 0, chunk)
    r.at = 1
    if #r.page < chunk then r.done = true end
    if #r.page > 0 then r.hi = '(' .. r.page[#r.page] end
  end
  return r.page[r.at]
end

-- The next entry over all ranges (the newest position), without taking it.
local function peek()
  local best_r, best_pos = nil, nil
  for _, r in ipairs(ranges) do
    local m = head(r)
    if m then
      local pos = string.sub(m, #r.prefix + 2)
      if not best_pos or pos > best_pos then best_r, best_pos = r, pos end
    end
  end
  return best_r, best_pos
end

local out = {''}
local found, looked, last, cut = 0, 0, nil, false
while found < size and looked < bound and not cut do
  local batch = {}
  local n = size - found
  if checked then n = math.min(bound - looked, math.max(n, 100)) end
  while #batch < n do
    local r, pos = peek()
    if not r then break end
    r.at = r.at + 1
    batch[#batch + 1] = {pos = pos, id = string.match(pos, '^%d+!([^!]+)$')}
  end
  if #batch == 0 then break end
  local ids = {}
  for i, e in ipairs(batch) do ids[i] = e.id or '' end
  local raws = redis.call('HMGET', D.records, unpack(ids))
  for i, e in ipairs(batch) do
    looked = looked + 1
    last = e.pos
    local ok, rec = false, nil
    if e.id and raws[i] then ok, rec = pcall(cjson.decode, raws[i]) end
    if ok and type(rec) == 'table' then
      if dlv_pos(rec, e.id) == e.pos and wanted(rec) then
        found = found + 1
        out[#out + 1] = raws[i]
        if found == size then
          cut = i < #batch  -- entries taken after it were not looked at: more follow
          break
        end
      end
    end
  end
end
if last and (cut or peek()) then out[1] = last end
return out
