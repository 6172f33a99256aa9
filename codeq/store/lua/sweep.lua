-- sweep.lua: the sweeper's pass over one partition, under the partition's sweep lock.
-- KEYS[1..15] partition keys (lib.lua); KEYS[13] is the lock; KEYS[16] the rates ring.
-- ARGV[1] lock token (the sweeping process), ARGV[2] lock ms, ARGV[3] bound per step,
-- ARGV[4] backoff table "ms,ms,...", ARGV[5] DLQ retention ms.
-- The lock is re-entrant for its holder, so a pass that hit its bound can go on at once.
-- Returns {'LOCKED'} | {'OK', promoted, expired, purged, more (0|1)}.
-- Events: those of promotion (task.ready) and lease expiry.
local holder = redis.call('GET', K.lock)
if holder and holder ~= ARGV[1] then return {'LOCKED'} end
redis.call('SET', K.lock, ARGV[1], 'PX', ARGV[2])
local now = now_ms()
local limit = tonumber(ARGV[3])
-- Data written before the scripts kept ready/dlq counters (they counted by lex range): count
-- once, exactly, in this step, and mark the partition so it never happens again.
if redis.call('HGET', K.qstats, '!counted') ~= '1' then
  local all = redis.call('HGETALL', K.queues)
  for i = 1, #all, 2 do
    local lo, hi = qrange(all[i])
    redis.call('HSET', K.qstats, all[i] .. '!ready', redis.call('ZLEXCOUNT', K.ready, lo, hi),
               all[i] .. '!dlq', redis.call('ZLEXCOUNT', K.dlq, lo, hi))
  end
  redis.call('HSET', K.qstats, '!counted', '1')
end
-- Where this partition lists its delayed tasks (lib.lua `ixw`). One switched ('0': the
-- operator's command, a server's start; codeq.store.upkeep) has its delayed set walked in
-- (score, member) order, a bounded step a pass, and each delayed task's P entry moved to W;
-- the walk's end sets '1', from when listings count only the ready tasks under P. "!ixw_at" is
-- where the walk stands: "<score>" / "(<score>" (go on from there) or, inside a run of one
-- score longer than a step, "<score>!<n>!<member>" (the run's first n were done, the last of
-- them `member`). Members may join or leave the run before that place meanwhile (a task made
-- ready or cancelled, a retry's backoff ending on that very millisecond), so the next step looks
-- for it by member: back from n until a member at or before `member`, then on to the first after
-- it. Each read of the run walks its offset (the server steps over the members before it): a
-- run of N members costs the whole walk ~N^2 / 2 / step entries stepped over.
local function run_after(score, n, member)
  local function read(from, count)
    return redis.call('ZRANGEBYSCORE', K.delayed, score, score, 'LIMIT', from, count)
  end
  local from, back = n - 1, 64
  while from > 0 do  -- back to a member at or before `member` (or the run's start)
    local first = read(from, 1)[1]
    if first and first <= member then break end
    from, back = math.max(from - back, 0), back * 4
  end
  while true do  -- on to the first member after it: the next step's `limit` from there
    local got = read(from, limit + 1)
    for i, m in ipairs(got) do
      if m > member then
        local place = from + i - 1  -- members of the run before the next step's first
        if #got - i + 1 < limit and #got == limit + 1 then  -- more than the window holds
          got, i = read(place, limit), 1
        end
        local ids = {}
        for j = i, math.min(#got, i + limit - 1) do ids[#ids + 1] = got[j] end
        return ids, place
      end
    end
    if #got <= limit then return {}, from + #got end  -- the run ends before anything after it
    from = from + #got
  end
end

local function list_delayed_under_w()
  local state = redis.call('HMGET', K.qstats, '!ixw', '!ixw_at')
  if state[1] ~= '0' then return false end
  ixw(state[1])
  local at = state[2]
  local score, n, member = nil, nil, nil
  if at then
    score, n, member = string.match(at, '^(%-?%d+)!(%d+)!(.+)$')
    n = tonumber(n)
    if not (score and n >= 1 and n < 1e12) and not string.match(at, '^%(?%-?%d+$') then
      at, score = nil, nil  -- not a place this walk wrote: from the start again
    end
  end
  at = at or '-inf'
  local ids, next_at = {}, nil
  if score then  -- inside one score's run
    local done
    ids, done = run_after(score, n, member)
    if #ids == limit then next_at = score .. '!' .. int(done + #ids) .. '!' .. ids[#ids]
    else next_at = '(' .. score end
  else
    local flat = redis.call('ZRANGEBYSCORE', K.delayed, at, '+inf', 'WITHSCORES', 'LIMIT', 0,
                            limit)
    if #flat < 2 * limit then  -- the rest of the set
      for i = 1, #flat, 2 do ids[#ids + 1] = flat[i] end
    elseif flat[2] == flat[#flat] then  -- one score fills the step: its run, a step at a time
      for i = 1, #flat, 2 do ids[#ids + 1] = flat[i] end
      next_at = flat[2] .. '!' .. int(#ids) .. '!' .. ids[#ids]
    else  -- up to the last score, whose members begin the next step
      next_at = flat[#flat]
      for i = 1, #flat, 2 do
        if flat[i + 1] ~= next_at then ids[#ids + 1] = flat[i] end
      end
    end
  end
  for _, id in ipairs(ids) do
    local rec = load_rec(id)
    if rec and ix_code(rec) == 'W' then
      local old = ix_status_member(rec, 'P')
      if old and redis.call('ZREM', K.by_status, old) == 1 then
        redis.call('ZADD', K.by_status, 0, ix_status_member(rec, 'W'))
      end
    end
  end
  if next_at then
    redis.call('HSET', K.qstats, '!ixw_at', next_at)
    return true
  end
  redis.call('HSET', K.qstats, '!ixw', '1')
  redis.call('HDEL', K.qstats, '!ixw_at')
  return false
end
local m0 = list_delayed_under_w()
-- from -inf (true): the sweeper's pass is the safety net under the claims' scan hints
redis.call('HDEL', K.qstats, '!delayed_from', '!leased_from')  -- the scan hints floors replaced
-- Once a minute, the outcome totals of every queue (`tally`) are copied into the rates ring:
-- field "<q>!<minute mod RATE_SLOTS>" = "<ms>,<created>,<completed>,<failed>,<dead>,<cancelled>";
-- "!minute" = the minute of the last copy, "!at" its time (ms): a queue the last copy does not
-- name had no task in this partition then, so it counts from zero at that time. Rates are differences of two copies (stats.lua),
-- so the transitions pay one HINCRBY per queue and outcome, and nothing grows: a slot is
-- overwritten RATE_SLOTS minutes later. One HKEYS, one HGETALL and one HSET a minute, O(queues).
local RATE_SLOTS = 16
local minute = math.floor(now / 60000)
if tonumber(redis.call('HGET', KEYS[16], '!minute')) ~= minute then
  local totals = {}
  -- every queue of the partition's registry, so a queue that has counted nothing yet has a
  -- snapshot of zeros to count from
  for _, q in ipairs(redis.call('HKEYS', K.queues)) do totals[q] = {} end
  local flat = redis.call('HGETALL', K.qstats)
  for i = 1, #flat, 2 do
    local q, kind = string.match(flat[i], '^(.+)!n:(%a+)$')
    if q then
      if not totals[q] then totals[q] = {} end
      totals[q][kind] = flat[i + 1]
    end
  end
  local slot = int(minute % RATE_SLOTS)
  local args = {'!minute', int(minute), '!at', int(now)}
  for q, t in pairs(totals) do
    local v = int(now)
    for _, kind in ipairs(OUTCOMES) do v = v .. ',' .. (t[kind] or '0') end
    args[#args + 1] = q .. '!' .. slot
    args[#args + 1] = v
  end
  bulk('HSET', KEYS[16], args)
end
local promoted, m1 = promote_due(now, limit, true)
local expired, m2 = expire_leases(now, limit, ARGV[4], tonumber(ARGV[5]), true)
local purged, m3 = purge_expired(now, limit, nil)
local more = 0
if m0 or m1 or m2 or m3 then more = 1 end
return {'OK', promoted, expired, purged, more}
