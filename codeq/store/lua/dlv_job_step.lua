-- dlv_job_step.lua: one step of a replay job's part: the deliveries of one page of the search
-- index (dlv_search.lua, read by the deliverer from the part's cursor) are attempted again as
-- dlv_replay.lua does it (replay_now), and the cursor moves past the page, together: a crash before the
-- step repeats the read, a crash after it loses nothing, and nothing is replayed twice.
-- KEYS[1..13] delivery keys (dlv_lib.lua); KEYS[14..17] jobs, recent, runnable, ended
-- (dlv_job_put.lua).
-- ARGV[1] job id, ARGV[2] owner, ARGV[3] lease ms, ARGV[4] the cursor the page was read from
-- ('' = the start), ARGV[5] where the page reached ('' = the ranges ended: the part is done),
-- ARGV[6] statuses a delivery must still have to be replayed (',' separated),
-- ARGV[7..] the ids of the page's deliveries.
-- The step is refused ('LOST') unless the caller holds an unexpired lease and the cursor is
-- where the page was read from. A delivery of another tenant, gone, or no longer in one of the
-- statuses (replayed or retried since the page was read) is skipped and counted so.
-- Returns {'OK' | 'LOST' | status of an ended part, replayed, skipped, part status}.
local id, owner, lease = ARGV[1], ARGV[2], tonumber(ARGV[3])
local from, reached = ARGV[4], ARGV[5]
local now = now_ms()
local raw = redis.call('HGET', KEYS[14], id)
if not raw then return {'LOST', 0, 0, 'missing'} end
local job = cjson.decode(raw)
if job.status ~= 'running' then return {job.status, 0, 0, job.status} end
if job.owner ~= owner or (tonumber(job.leaseUntil) or 0) < now or job.cursor ~= from then
  return {'LOST', 0, 0, job.status}
end
local want = {}
for s in string.gmatch(ARGV[6], '[^,]+') do want[s] = true end
ix_check_indexed()
local replayed, skipped = 0, 0
for i = 7, #ARGV do
  local did = ARGV[i]
  local rec_raw = redis.call('HGET', D.records, did)
  local rec = rec_raw and cjson.decode(rec_raw)
  local was = rec and status_of(rec)
  if rec and rec.tenant == job.tenant and want[was] then
    replay_now(did, rec, now)
    replayed = replayed + 1
  else
    skipped = skipped + 1
  end
end
ix_flush(now)
job.replayed = (job.replayed or 0) + replayed
job.skipped = (job.skipped or 0) + skipped
job.updatedAt = now
if reached == '' then
  job.status, job.finishedAt, job.owner, job.leaseUntil = 'done', now, nil, nil
  job.cursor = from
  redis.call('ZREM', KEYS[16], id)
  redis.call('ZADD', KEYS[17], now, id)
else
  job.cursor = reached
  job.leaseUntil = now + lease
  redis.call('ZADD', KEYS[16], now + lease, id)
end
redis.call('HSET', KEYS[14], id, cjson.encode(job))
return {'OK', replayed, skipped, job.status}
