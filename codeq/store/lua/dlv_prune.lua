-- dlv_prune.lua: the sweeper's retention step over one partition's deliveries, under the
-- partition's sweep lock (the lock of sweep.lua: re-entrant for its holder).
-- KEYS[1..13] delivery keys (dlv_lib.lua); KEYS[13] is the lock; KEYS[14..17] the replay
-- jobs' keys (dlv_job_put.lua): a job's part that ended the retention ago goes too (parts that
-- ended before the ended index existed are indexed first, in bounded steps).
-- ARGV[1] lock token (the sweeping process), ARGV[2] lock ms, ARGV[3] bound per step,
-- ARGV[4] retention ms: a delivery that ended (succeeded, dead or gone) that long ago or longer
-- is pruned.
-- At most ARGV[3] deliveries are looked at, oldest ended first (`ended`): each is pruned or, if
-- it is due again or no longer ended (it cannot be: replay and outcomes take it out of `ended`
-- in the same script), only taken out of `ended`; so a step never looks at an entry twice. A
-- delivery that is due (pending or being retried) is never pruned. Pruning removes the record
-- and every index entry naming it: its listing index members and counters, its by_task entry
-- and its places in `ended` and `dead`. The caller removes it from its endpoint's recent list
-- (another hash tag: a key this script cannot declare).
-- Records written before the listing index existed are indexed first, in bounded steps of an
-- HSCAN over `records` (cursor and "done" mark kept in `counts` under "!!"-fields, which no
-- counter can have), so retention, search and counts see them too.
-- Returns {'LOCKED'} | {'OK', pruned, more (0|1), indexed, endpoint id, delivery id, ...}:
-- one pair per pruned delivery that had an endpoint.
local holder = redis.call('GET', D.lock)
if holder and holder ~= ARGV[1] then return {'LOCKED'} end
redis.call('SET', D.lock, ARGV[1], 'PX', ARGV[2])
local now = now_ms()
local limit = tonumber(ARGV[3])
local more = 0

local function decoded(raw)
  local ok, rec = pcall(cjson.decode, raw)
  if ok and type(rec) == 'table' then return rec end
  return nil
end

-- One bounded step over a hash written before its index existed: HSCAN `limit` entries of
-- `key` from the cursor kept in `counts` ("!!<name>cursor"), `each(field, value)` on each;
-- "!!<name>indexed" once the scan is through (then it is never done again).
local function backfill(key, name, each)
  if redis.call('HGET', D.counts, '!!' .. name .. 'indexed') == '1' then return end
  local cursor = redis.call('HGET', D.counts, '!!' .. name .. 'cursor') or '0'
  local reply = redis.call('HSCAN', key, cursor, 'COUNT', limit)
  local all = reply[2]
  for i = 1, #all, 2 do each(all[i], all[i + 1]) end
  if reply[1] == '0' then
    redis.call('HSET', D.counts, '!!' .. name .. 'indexed', '1')
    redis.call('HDEL', D.counts, '!!' .. name .. 'cursor')
  else
    redis.call('HSET', D.counts, '!!' .. name .. 'cursor', reply[1])
    more = 1
  end
end

-- Before the listing index: index what was written without it, `limit` records a step.
local indexed = 0
backfill(D.records, '', function(id, raw)
  local rec = decoded(raw)
  if rec and ix_index(rec, id) then
    if ENDED[status_of(rec)] and not redis.call('ZSCORE', D.due, id) then
      local at = tonumber(rec.deadAt) or tonumber(rec.updatedAt) or tonumber(rec.createdAt)
      redis.call('ZADD', D.ended, 'NX', at or now, id)
    end
    if str(rec.taskId) then task_rem(rec.taskId .. '!' .. id) end  -- an earlier version's
    indexed = indexed + 1
  end
end)

local cutoff = now - tonumber(ARGV[4])
local ids = redis.call('ZRANGEBYSCORE', D.ended, '-inf', int(cutoff), 'LIMIT', 0, limit)
if #ids == limit then more = 1 end
local out = {'OK', 0, 0, indexed}
for _, id in ipairs(ids) do
  redis.call('ZREM', D.ended, id)
  local raw = redis.call('HGET', D.records, id)
  local rec = raw and decoded(raw)
  if raw and not redis.call('ZSCORE', D.due, id) and (not rec or ENDED[status_of(rec)]) then
    if rec then
      ix_move(rec, id, status_of(rec), nil)  -- every member, and the counters
      if str(rec.endpointId) then
        out[#out + 1] = rec.endpointId
        out[#out + 1] = id
      end
    end
    redis.call('HDEL', D.records, id)
    redis.call('ZREM', D.dead, id)
    out[2] = out[2] + 1
  end
end
ix_flush(now)

-- Replay jobs' parts that ended before the ended index existed: indexed first, the same way.
backfill(KEYS[14], 'jobs_', function(id, raw)
  local job = decoded(raw)
  if job and (job.status == 'done' or job.status == 'cancelled') then
    redis.call('ZADD', KEYS[17], 'NX', tonumber(job.finishedAt) or now, id)
  end
end)

-- Replay jobs' parts that ended (done or cancelled) the retention ago: a bounded step too.
local jobs = redis.call('ZRANGEBYSCORE', KEYS[17], '-inf', int(cutoff), 'LIMIT', 0, limit)
if #jobs == limit then more = 1 end
for _, id in ipairs(jobs) do
  local job = decoded(redis.call('HGET', KEYS[14], id) or '')
  if job and job.tenant and job.createdAt then
    redis.call('ZREM', KEYS[15], esc(job.tenant) .. '!' .. string.format('%013d', job.createdAt) .. '!' .. id)
  end
  redis.call('HDEL', KEYS[14], id)
  redis.call('ZREM', KEYS[17], id)
end
out[3] = more
return out
