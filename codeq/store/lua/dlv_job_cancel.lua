-- dlv_job_cancel.lua: cancel one partition's part of a replay job: no step runs after this
-- (a step in flight is refused); what was replayed stays replayed.
-- KEYS[1..13] delivery keys (dlv_lib.lua); KEYS[14..17] jobs, recent, runnable, ended
-- (dlv_job_put.lua).
-- ARGV[1] job id, ARGV[2] tenant.
-- Returns {status}: 'cancelled', the status of a part that had ended, or 'missing' (no such
-- part, or another tenant's).
local raw = redis.call('HGET', KEYS[14], ARGV[1])
local job = raw and cjson.decode(raw)
if not job or job.tenant ~= ARGV[2] then return {'missing'} end
if job.status ~= 'queued' and job.status ~= 'running' then return {job.status} end
local now = now_ms()
job.status, job.finishedAt, job.updatedAt, job.owner, job.leaseUntil = 'cancelled', now, now, nil, nil
redis.call('HSET', KEYS[14], ARGV[1], cjson.encode(job))
redis.call('ZREM', KEYS[16], ARGV[1])
redis.call('ZADD', KEYS[17], now, ARGV[1])
return {'cancelled'}
