-- gauges.lua: what /metrics reads from one partition at scrape time, in one call. Read-only.
-- KEYS[1..15] partition keys (lib.lua), KEYS[16] the delivery schedule (dlv:due), KEYS[17]
-- the delivery DLQ (dlv:dead) of the same partition (keys.py, DeliveryKeys).
-- ARGV: none.
-- Queue depths come from the queue registry like stats.lua, summed per command over tenants
-- here, so the reply has one row per command however many tenants share it.
-- A group's lag below LAG_COUNTED is counted (the entries after its last-delivered id): KVRocks
-- (2.10) counts `entries-read` from 0, so its own `lag` is one too many once a group has read
-- anything (a group that has read everything shows 1). From LAG_COUNTED up, the server's figure.
-- Returns {{scheduled deliveries, dead deliveries},
--          {group, lag (-1 when the server cannot tell), pending, group, ...},
--          {command, ready, delayed, inProgress, dlq, command, ...}}.
local LAG_COUNTED = 100
local deliveries = {redis.call('ZCARD', KEYS[16]), redis.call('ZCARD', KEYS[17])}
local groups = {}
if redis.call('EXISTS', K.events) == 1 then
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', K.events)) do
    local name, lag, pending, last = nil, -1, 0, nil
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1]
      elseif g[i] == 'lag' and g[i + 1] then lag = tonumber(g[i + 1]) or -1
      elseif g[i] == 'pending' then pending = tonumber(g[i + 1]) or 0
      elseif g[i] == 'last-delivered-id' then last = g[i + 1] end
    end
    if last then
      local after = #redis.call('XRANGE', K.events, '(' .. last, '+', 'COUNT', LAG_COUNTED)
      if after < LAG_COUNTED then lag = after elseif lag >= 0 and lag < after then lag = after end
    end
    if name then
      groups[#groups + 1] = name
      groups[#groups + 1] = lag
      groups[#groups + 1] = pending
    end
  end
end
-- The counters of every queue in one read (four per queue) instead of an HMGET per queue: a
-- redis.call costs more than the table lookup.
local counters = {}
local flat = redis.call('HGETALL', K.qstats)
for i = 1, #flat, 2 do counters[flat[i]] = tonumber(flat[i + 1]) or 0 end
local rows, index = {}, {}
local all = redis.call('HGETALL', K.queues)
for i = 1, #all, 2 do
  local q = all[i]
  local command = cjson.decode(all[i + 1]).command
  local at = index[command]
  if not at then
    at = #rows + 1
    index[command] = at
    rows[at], rows[at + 1], rows[at + 2], rows[at + 3], rows[at + 4] = command, 0, 0, 0, 0
  end
  rows[at + 1] = rows[at + 1] + (counters[q .. '!ready'] or 0)
  rows[at + 2] = rows[at + 2] + (counters[q .. '!delayed'] or 0)
  rows[at + 3] = rows[at + 3] + (counters[q .. '!leased'] or 0)
  rows[at + 4] = rows[at + 4] + (counters[q .. '!dlq'] or 0)
end
return {deliveries, groups, rows}
