-- dlv_job_lease.lua: lease one runnable part of a replay job in this partition: one that is
-- queued, or running under a lease that ran out (its deliverer died), so that one deliverer
-- at a time works on it.
-- KEYS[1..13] delivery keys (dlv_lib.lua); KEYS[14..17] jobs, recent, runnable, ended
-- (dlv_job_put.lua).
-- ARGV[1] owner (the deliverer), ARGV[2] lease ms.
-- Returns the leased part's JSON, or false when none is runnable.
local owner, lease = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
for _ = 1, 10 do
  local ids = redis.call('ZRANGEBYSCORE', KEYS[16], '-inf', now, 'LIMIT', 0, 1)
  if #ids == 0 then return false end
  local id = ids[1]
  local raw = redis.call('HGET', KEYS[14], id)
  local job = raw and cjson.decode(raw)
  if job and (job.status == 'queued' or job.status == 'running') then
    job.status, job.owner, job.leaseUntil, job.updatedAt = 'running', owner, now + lease, now
    local encoded = cjson.encode(job)
    redis.call('HSET', KEYS[14], id, encoded)
    redis.call('ZADD', KEYS[16], now + lease, id)
    return encoded
  end
  redis.call('ZREM', KEYS[16], id)  -- ended or gone: nothing to run
end
return false
