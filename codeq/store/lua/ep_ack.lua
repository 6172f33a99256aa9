-- ep_ack.lua: acknowledge entries of the {hooks} event stream, set aside those that cannot be
-- handled, and trim the stream of what every group has passed.
-- The deliveries an entry causes are written before, in their partitions (dlv_enqueue.lua: the
-- stream and the deliveries are in different slots, so that is a step of its own): a crash in
-- between repeats the entry, whose deliveries have the same ids, so none is written twice.
-- KEYS[1] the {hooks} event stream, KEYS[2] its list of entries set aside (keys.py).
-- ARGV[1] group, ARGV[2] time floor ms: entries older than this may go once every group is
-- past them (trim_events.lua's rule for the partition streams), ARGV[3] q, ARGV[4..3+2q] pairs
-- of entry id, reason of the entries set aside (quarantined, or received too often: a
-- dead-letter record each, acknowledged), then the ids of the other entries to acknowledge.
-- Returns {acknowledged, trimmed}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local group = ARGV[1]
local q = tonumber(ARGV[3])
local ids = {}
for i = 4, 3 + 2 * q, 2 do
  redis.call('RPUSH', KEYS[2], cjson.encode({group = group, entry = ARGV[i],
                                             reason = ARGV[i + 1], at = now}))
  ids[#ids + 1] = ARGV[i]
end
for i = 4 + 2 * q, #ARGV do ids[#ids + 1] = ARGV[i] end
local acked = 0
if #ids > 0 then acked = redis.call('XACK', KEYS[1], group, unpack(ids)) end
if redis.call('EXISTS', KEYS[1]) == 0 then return {acked, 0} end
return {acked, (trim_stream(KEYS[1], ARGV[2]))}
