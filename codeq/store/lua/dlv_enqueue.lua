-- dlv_enqueue.lua: write the deliveries that a run of stream entries causes and acknowledge
-- those entries, in one step: a crash before it repeats the entries, a crash after it loses
-- nothing. Entries that cannot be handled (undecodable, bad fields) are quarantined on their
-- own in the same step: a dead-letter record with the reason, and the acknowledgement.
-- KEYS[1..13] delivery keys (dlv_lib.lua).
-- ARGV[1] group, ARGV[2] k, ARGV[3..2+k] the stream entry ids (quarantined ones included),
-- ARGV[3+k] lease ms (the caller attempts at once; the lease keeps other deliverers off until
-- then), ARGV[4+k] q, ARGV[5+k..4+k+2q] pairs of quarantined entry id, reason, then groups of
-- eight per delivery: id, record JSON, and the record's fields the indexes need (the record
-- itself, body and all, is not decoded here): task id, tenant, createdAt, endpointId,
-- eventType ('' when it has none) and status.
-- A delivery id that already exists is left alone (a repeated entry does not duplicate it).
-- A new delivery joins the listing index and its counters (`ix_move`, all of a call's applied
-- together) and, when it is about a task, the task's index (by_task).
-- Returns {id, ...} of the deliveries written now (the caller attempts exactly these).
local now = now_ms()
local group = ARGV[1]
local k = tonumber(ARGV[2])
local lease = tonumber(ARGV[3 + k])
local q = tonumber(ARGV[4 + k])
local first = 5 + k + 2 * q
for i = 5 + k, first - 1, 2 do
  redis.call('RPUSH', D.poison, cjson.encode({group = group, entry = ARGV[i],
                                              reason = ARGV[i + 1], at = now}))
end
local function opt(v)
  if v == '' then return nil end
  return v
end
local out = {}
for i = first, #ARGV, 8 do
  local id, rec = ARGV[i], ARGV[i + 1]
  if redis.call('HSETNX', D.records, id, rec) == 1 then
    redis.call('ZADD', D.due, now + lease, id)
    out[#out + 1] = id
    local meta = {taskId = opt(ARGV[i + 2]), tenant = ARGV[i + 3],
                  createdAt = tonumber(ARGV[i + 4]), endpointId = opt(ARGV[i + 5]),
                  eventType = opt(ARGV[i + 6]), status = opt(ARGV[i + 7]) or 'pending'}
    ix_move(meta, id, nil, meta.status)
  end
end
ix_flush(now)
if k > 0 then
  redis.call('XACK', D.events, group, unpack(ARGV, 3, 2 + k))
end
return out
