-- trim.lua: trimming an event stream, never past what a consumer group has not acknowledged
-- (in the libraries of trim_events.lua and ep_ack.lua).
-- trim_stream(key, floor_ms): entries older than floor_ms go once every group is past them,
-- that is before the oldest entry a group still holds (XPENDING) or has not yet been given
-- (last-delivered-id). Exact MINID trimming (KVRocks rejects '~').
-- Returns the number removed and the threshold id.
local function stream_id_less(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  if am ~= bm then return am < bm end
  return as < bs
end

local function trim_stream(key, floor_ms)
  local threshold = floor_ms .. '-0'
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
    local name, last, pending = nil, nil, 0
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1]
      elseif g[i] == 'last-delivered-id' then last = g[i + 1]
      elseif g[i] == 'pending' then pending = tonumber(g[i + 1]) end
    end
    local safe = last
    if pending and pending > 0 and name then
      local summary = redis.call('XPENDING', key, name)
      if summary[2] then safe = summary[2] end
    end
    if safe and stream_id_less(safe, threshold) then threshold = safe end
  end
  return redis.call('XTRIM', key, 'MINID', threshold), threshold
end
