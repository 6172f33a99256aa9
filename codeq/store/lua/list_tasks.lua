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

-- One range per prefix: its members are "<prefix>!<position>"; we read it from the top down.
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
  ranges[#ranges + 1] = {prefix = prefix, code = string.sub(prefix, -1), hi = hi, lo = lo,
                         page = {}, at = 1, done = false}
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
  local best, best_r, best_pos = nil, nil, nil
  for _, r in ipairs(ranges) do
    local m = head(r)
    if m then
      local pos = string.sub(m, #r.prefix + 2)
      if not best_pos or pos > best_pos then best, best_r, best_pos = m, r, pos end
    end
  end
  return best, best_r, best_pos
end

local out = {''}
local found, looked, last, cut = 0, 0, nil, false
while found < size and looked < bound and not cut do
  -- the next entries in order, as many as the page still needs (more when filtering)
  local batch = {}
  local n = size - found
  if want_codes ~= '' or want_priority then n = math.min(bound - looked, math.max(n, 100)) end
  while #batch < n do
    local m, r, pos = peek()
    if not m then break end
    r.at = r.at + 1
    batch[#batch + 1] = {r = r, pos = pos, id = string.match(pos, '!(.+)$')}
  end
  if #batch == 0 then break end
  local ids = {}
  for i, e in ipairs(batch) do ids[i] = e.id end
  local raws = redis.call('HMGET', K.tasks, unpack(ids))
  local hits = {}
  for i, e in ipairs(batch) do
    looked = looked + 1
    last = e.pos
    local rec = raws[i] and decode_rec(raws[i], e.id)
    local ok = rec and rec.tenant == tenant and rec.createdAt ~= nil
      and ix_position(rec) == e.pos
    if ok and index == 'status' then ok = ix_code(rec) == e.r.code end
    if ok and index == 'command' then ok = rec.q == e.r.prefix end
    if ok then ok = wanted(rec) end
    if ok then
      found = found + 1
      hits[#hits + 1] = i
      if found == size then
        cut = i < #batch  -- entries taken after it were not looked at: more follow
        break
      end
    end
  end
  if #hits > 0 then
    local hit_ids = {}
    for k, i in ipairs(hits) do hit_ids[k] = ids[i] end
    local payloads = redis.call('HMGET', K.payloads, unpack(hit_ids))
    for k, i in ipairs(hits) do
      out[#out + 1] = raws[i]
      out[#out + 1] = payloads[k] or ''
    end
  end
end
if last and (cut or peek()) then out[1] = last end
return out
