-- dlv_poison.lua: set aside a stream entry that keeps failing its consumers.
-- KEYS[1..13] delivery keys (dlv_lib.lua).
-- ARGV[1] group, ARGV[2] stream entry id, ARGV[3] receives so far, ARGV[4] reason (optional).
-- The entry is copied (by id) to the poison list, a dead-letter record with the reason, and
-- acknowledged, so the group moves on.
-- Returns 1.
redis.call('RPUSH', D.poison, cjson.encode({group = ARGV[1], entry = ARGV[2],
                                            receives = tonumber(ARGV[3]), at = now_ms(),
                                            reason = ARGV[4] or 'received too many times'}))
redis.call('XACK', D.events, ARGV[1], ARGV[2])
return 1
