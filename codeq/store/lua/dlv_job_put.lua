-- dlv_job_put.lua: create one partition's part of a replay job (issue 18 item 3), queued.
-- KEYS[1..13] delivery keys (dlv_lib.lua); KEYS[14] jobs (hash: job id -> part JSON),
-- KEYS[15] recent (zset, lex "<T>!<createdAt:13>!<id>": a tenant's jobs, newest last),
-- KEYS[16] runnable (zset: job id by the end of its lease ms; 0 = queued, not leased),
-- KEYS[17] ended (zset: job id by when it ended; dlv_prune.lua removes old ones).
-- ARGV[1] job id, ARGV[2] tenant, ARGV[3] the part's JSON (id, tenant, filter, statuses, ...;
-- status, cursor, counts and times are set here).
-- Returns {'OK', createdAt} or {'EXISTS', createdAt} (a part of that id is there already).
local id, tenant = ARGV[1], ARGV[2]
local old = redis.call('HGET', KEYS[14], id)
if old then return {'EXISTS', int(cjson.decode(old).createdAt or 0)} end
local now = now_ms()
local job = cjson.decode(ARGV[3])
job.id, job.tenant = id, tenant
job.status, job.cursor, job.replayed, job.skipped = 'queued', '', 0, 0
job.createdAt, job.updatedAt = now, now
redis.call('HSET', KEYS[14], id, cjson.encode(job))
redis.call('ZADD', KEYS[15], 0, esc(tenant) .. '!' .. string.format('%013d', now) .. '!' .. id)
redis.call('ZADD', KEYS[16], 0, id)
return {'OK', int(now)}
