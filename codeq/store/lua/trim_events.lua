-- trim_events.lua: trim the partition's event stream, never past what a consumer group has
-- not yet acknowledged.
-- KEYS[1..15] partition keys (lib.lua); only KEYS[10] (events) is touched.
-- ARGV[1] time floor ms: entries older than this may go once every group is past them.
-- Exact MINID trimming (KVRocks rejects '~').
-- Returns {removed, threshold id}.
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function less(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  if am ~= bm then return am < bm end
  return as < bs
end
if redis.call('EXISTS', K.events) == 0 then return {0, ''} end
local threshold = ARGV[1] .. '-0'
local groups = redis.call('XINFO', 'GROUPS', K.events)
for _, g in ipairs(groups) do
  local name, last, pending = nil, nil, 0
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1]
    elseif g[i] == 'last-delivered-id' then last = g[i + 1]
    elseif g[i] == 'pending' then pending = tonumber(g[i + 1]) end
  end
  local safe = last
  if pending and pending > 0 and name then
    local summary = redis.call('XPENDING', K.events, name)
    if summary[2] then safe = summary[2] end
  end
  if safe and less(safe, threshold) then threshold = safe end
end
local removed = redis.call('XTRIM', K.events, 'MINID', threshold)
return {removed, threshold}
