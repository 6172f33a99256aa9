-- scan.lua: a page of a listing, newest first, merged over ranges of one lex-ordered index
-- (in the libraries of list_tasks.lua and dlv_search.lua, after their library file).
-- Members are "<prefix>!<position>", a position "<createdAt:13>!<id>"; each prefix is one range
-- of the index (a status, a command, an endpoint, ...). The ranges are read from the top down a
-- page at a time and merged by position, so the page is the newest entries of all of them.
-- scan_page(key, prefixes, after_ms, before_ms, from, size, bound, filtering, records, accept,
--           caps)
--   key      the index (sorted set, all scores 0)
--   prefixes ',' separated
--   after_ms created at or after (or nil), before_ms created before (or nil)
--   from     the position to go on after ('' = the newest)
--   size     entries the page wants, bound: at most this many entries looked at
--   filtering true when records are checked against filters the ranges do not express: then
--            entries are read in batches of at least 100
--   records  the hash of the records (by id)
--   accept   function(raw, entry) -> take, counted: take true to take it; entry = {r = its
--            range (r.prefix), pos, id} (id nil when the position is not "<digits>!<id>"; raw
--            nil when gone); counted (looked at for capped ranges only): the entry is one of
--            those its range's cap counts
--   caps     nil, or prefix -> the most entries `accept` calls counted that the range can hold
--            (list_tasks.lua: from the queue counters). A capped range is never asked for more
--            entries than its cap less what this call read of it, and not at all at 0: on
--            KVRocks a range read that finds fewer entries than it asked for walks on over
--            every deleted entry of the index (RocksDB tombstones, until compaction) to the
--            next live member, past the range's end (docs/performance.md §21). A range its cap
--            closed was looked at to its end. An entry of a capped range that is not counted
--            (the leftover entry of a poison record) takes its range's cap away, and when the
--            cap closed the range already, the page is read again without caps: such an entry
--            took a place the cap counted, so a task may lie past where the range was closed.
-- Returns the taken entries ({raw, id}, in order) and `reached`: the position of the last
-- entry looked at when more may follow, '' when every range was looked at to its end; every
-- entry newer than it (after `from`) was looked at, so the caller goes on from there.
local function scan_page(key, prefixes, after_ms, before_ms, from, size, bound, filtering,
                         records, accept, caps)
  local ranges = {}
  for prefix in string.gmatch(prefixes, '[^,]+') do
    local hi = '(' .. prefix .. '"'
    if before_ms then hi = '(' .. prefix .. '!' .. string.format('%013d', before_ms) end
    if from ~= '' then
      local at = '(' .. prefix .. '!' .. from
      if at < hi then hi = at end
    end
    local lo = '[' .. prefix .. '!'
    if after_ms then lo = '[' .. prefix .. '!' .. string.format('%013d', after_ms) end
    -- left: what the cap still allows (nil: no cap); closed: the cap ended the range
    ranges[#ranges + 1] = {prefix = prefix, hi = hi, lo = lo, page = {}, at = 1, done = false,
                           left = caps and caps[prefix], closed = false}
  end

  local chunk = size + 1
  local function head(r)
    if r.at > #r.page and not r.done then
      local want = chunk
      if r.left and r.left < want then want = r.left end
      r.page = {}
      if want > 0 then r.page = redis.call('ZREVRANGEBYLEX', key, r.hi, r.lo, 'LIMIT', 0, want) end
      r.at = 1
      if r.left then r.left = r.left - #r.page end
      if #r.page < want then
        r.done = true
      elseif r.left and r.left <= 0 then
        r.done, r.closed = true, true
      end
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

  local taken = {}
  local found, looked, last, cut = 0, 0, nil, false
  while found < size and looked < bound and not cut do
    -- the next entries in order, as many as the page still needs (more when filtering)
    local batch = {}
    local n = size - found
    if filtering then n = math.min(bound - looked, math.max(n, 100)) end
    while #batch < n do
      local r, pos = peek()
      if not r then break end
      r.at = r.at + 1
      batch[#batch + 1] = {r = r, pos = pos, id = string.match(pos, '^%d+!([^!]+)$')}
    end
    if #batch == 0 then break end
    local ids = {}
    for i, e in ipairs(batch) do ids[i] = e.id or '' end
    local raws = redis.call('HMGET', records, unpack(ids))
    for i, e in ipairs(batch) do
      looked = looked + 1
      last = e.pos
      local take, counted = false, false
      if e.id and raws[i] then take, counted = accept(raws[i], e) end
      if e.r.left and not counted then
        if e.r.closed then  -- the cap may have hidden a task: the page again, without caps
          return scan_page(key, prefixes, after_ms, before_ms, from, size, bound, filtering,
                           records, accept, nil)
        end
        e.r.left = nil
      end
      if take then
        found = found + 1
        taken[#taken + 1] = {raw = raws[i], id = e.id}
        if found == size then
          cut = i < #batch  -- entries taken after it were not looked at: more follow
          break
        end
      end
    end
  end
  local reached = ''
  if last and (cut or peek()) then reached = last end
  return taken, reached
end
