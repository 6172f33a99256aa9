-- trim_events.lua: trim the partition's event stream, never past what a consumer group has
-- not yet acknowledged.
-- KEYS[1..15] partition keys (lib.lua); only KEYS[10] (events) is touched.
-- ARGV[1] time floor ms: entries older than this may go once every group is past them.
-- The rule is trim.lua's.
-- Returns {removed, threshold id}.
if redis.call('EXISTS', K.events) == 0 then return {0, ''} end
local removed, threshold = trim_stream(K.events, ARGV[1])
return {removed, threshold}
