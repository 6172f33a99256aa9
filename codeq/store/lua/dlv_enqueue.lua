-- dlv_enqueue.lua: write the deliveries that a run of stream entries causes and acknowledge
-- those entries, in one step: a crash before it repeats the entries, a crash after it loses
-- nothing. Entries that cannot be handled (undecodable, bad fields) are quarantined on their
-- own in the same step: a dead-letter record with the reason, and the acknowledgement.
-- KEYS[1..8] delivery keys (dlv_lib.lua).
-- ARGV[1] group, ARGV[2] k, ARGV[3..2+k] the stream entry ids (quarantined ones included),
-- ARGV[3+k] lease ms (the caller attempts at once; the lease keeps other deliverers off until
-- then), ARGV[4+k] q, ARGV[5+k..4+k+2q] pairs of quarantined entry id, reason, then triples of
-- delivery id, record JSON, the id of the task it is about or ''.
-- A delivery id that already exists is left alone (a repeated entry does not duplicate it).
-- A new delivery about a task joins the task's index (by_task), in one ZADD per call.
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
local out = {}
local by_task = {}
for i = first, #ARGV, 3 do
  local id, rec, task = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if redis.call('HSETNX', D.records, id, rec) == 1 then
    redis.call('ZADD', D.due, now + lease, id)
    out[#out + 1] = id
    if task ~= '' then
      by_task[#by_task + 1] = 0
      by_task[#by_task + 1] = task .. '!' .. id
    end
  end
end
for i = 1, #by_task, 1000 do
  redis.call('ZADD', D.by_task, unpack(by_task, i, math.min(i + 999, #by_task)))
end
if k > 0 then
  redis.call('XACK', D.events, group, unpack(ARGV, 3, 2 + k))
end
return out
