-- dlv_lib.lua: helpers shared by the delivery scripts. Each is a function of a library that
-- starts with this file (codeq/store/scripts.py): the file runs once, when the library is
-- loaded, and each call of the function starts with `begin(KEYS)` (at the end of this file).
--
-- KEYS[1..13] of every delivery script are the fixed delivery keys of ONE partition, in this
-- order (codeq/store/keys.py, DeliveryKeys.all):
--   events   the partition's event stream (consumer groups callbacks, notifier, endpoints)
--   records  hash  delivery id -> record JSON (target, body, attempts log, status, the request
--                  as sent on the last attempt)
--   due      zset  delivery id, score = next attempt ms (also the in-flight lease)
--   dead     zset  delivery id, score = time of death ms (the delivery DLQ)
--   poison   list  stream entries set aside after too many receives
--   tasks, results  the task hashes (read-only here)
--   by_task  zset  score 0, member "<task id>!<createdAt:13>!<delivery id>": the deliveries a
--                  task caused, oldest first (written before issue 18 as "<task id>!<id>")
--   index    zset  score 0, the listing index of deliveries (issue 18), members
--                  "<T>!a!<pos>"            the tenant's deliveries (any status)
--                  "<T>!s!<S>!<pos>"        those in status S (LISTED statuses only)
--                  "<T>!e!<E>!a!<pos>"      those of endpoint E (any status)
--                  "<T>!e!<E>!<S>!<pos>"    those of endpoint E in status S (LISTED only)
--                  "<T>!v!<V>!<pos>"        those of event type V (any status)
--                  with T, E, V escaped as key segments (`esc`), S a status code (CODES) and
--                  pos "<createdAt:13>!<id>"; every change of a status moves the record's
--                  status members in the same script (`ix_move`). Only the few statuses have
--                  members (retrying, dead, gone): a delivery is pending for the moment of its
--                  first attempt, and nearly every one ends succeeded, so members of those two
--                  would be most of the writes (and, in KVRocks, tombstones a range read walks
--                  until compaction) for ranges that are nearly empty or nearly all of "a",
--                  where a listing finds them as fast. The members of any status never move.
--   counts   hash  "<T>!s!<S>", "<T>!e!<E>!<S>" -> how many deliveries the tenant (its
--                  endpoint E) has in status S, every status: they move with the records, one
--                  HINCRBY per field and script call (a lex-range count walks its range)
--   stats    hash  "<E>!m!<minute % 60>" and "<E>!h!<hour % 24>" -> one bucket of an endpoint's
--                  attempts (`stats_note`): a ring per endpoint, a slot reused when its time
--                  comes round again, so it never grows
--   ended    zset  delivery id, score = ms it ended (succeeded, dead or gone): what retention
--                  prunes (dlv_prune.lua), oldest first; a delivery that is due again leaves it
--   lock     string the partition's sweep lock (the sweeper's prune step takes it)
-- This call's keys, bound by `begin` (below), every delivery function's first step.
local D = {}

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function int(x)
  return string.format('%d', x)
end

-- The status codes (counters); LISTED: the statuses with members in the listing index; ENDED:
-- the statuses retention prunes.
local CODES = {pending = 'P', retrying = 'R', succeeded = 'S', dead = 'D', gone = 'G'}
local LISTED = {retrying = true, dead = true, gone = true}
local ENDED = {succeeded = true, dead = true, gone = true}

-- codeq.store.keys.escape, byte for byte (tests/test_delivery_search.py compares them):
-- every byte outside [A-Za-z0-9_.-] as %XX, so no segment holds a '!'.
-- this call's escapes, emptied by `begin`: a batch names the same few tenants again and again
local ESCAPED = {}
local function esc(s)
  local out = ESCAPED[s]
  if out then return out end
  out = s
  if string.find(s, '[^A-Za-z0-9_%.%-]') then
    out = string.gsub(s, '[^A-Za-z0-9_%.%-]', function(c)
      return string.format('%%%02X', string.byte(c))
    end)
  end
  ESCAPED[s] = out
  return out
end

-- "<createdAt:13>!<id>": where a delivery sorts in every listing.
local function dlv_pos(rec, id)
  local at = tonumber(rec.createdAt) or 0
  if at < 0 or at >= 1e13 then at = 0 end
  return string.format('%013d', at) .. '!' .. id
end

-- A record's string field, or nil (absent, JSON null, empty or not a string).
local function str(v)
  if type(v) == 'string' and v ~= '' then return v end
  return nil
end

local function count(field, by)
  if redis.call('HINCRBY', D.counts, field, by) <= 0 then redis.call('HDEL', D.counts, field) end
end

-- A record's status: records leave it out while it is the default.
local function status_of(rec)
  return str(rec.status) or 'pending'
end

-- The changes of one script call to the index, the task index, the counters, `ended` and the
-- statistics are gathered in IX and applied together by `ix_flush` (a batch of outcomes costs
-- one ZREM, one ZADD and one HINCRBY per counter instead of several calls per delivery).
-- IX.direct: records of an earlier version may not be indexed yet (dlv_prune.lua indexes them,
-- then marks `counts` "!!indexed"); until then a change first asks whether the record is
-- indexed (its "a" member), and indexes one that is not as it is after the change, so such a
-- record is never miscounted.
local IX = {}  -- this call's changes, emptied by `begin`

local function ix_check_indexed()
  IX.direct = redis.call('HGET', D.counts, '!!indexed') ~= '1'
end

local function ix_add(m)
  if IX.rem[m] then IX.rem[m] = nil else IX.add[m] = true end
end

local function ix_rem(m)
  if IX.add[m] then IX.add[m] = nil else IX.rem[m] = true end
end

local function task_add(m)
  if IX.trem[m] then IX.trem[m] = nil else IX.tadd[m] = true end
end

local function task_rem(m)
  if IX.tadd[m] then IX.tadd[m] = nil else IX.trem[m] = true end
end

local function ix_count(field, by)
  IX.counts[field] = (IX.counts[field] or 0) + by
end

-- The members no change of status moves: added for a new record (`sign` 1), removed for one
-- that goes (-1).
local function ix_fixed(rec, id, t, ep, pos, sign)
  local kind, task = str(rec.eventType), str(rec.taskId)
  local put = sign > 0 and ix_add or ix_rem
  put(t .. '!a!' .. pos)
  if ep then put(t .. '!e!' .. ep .. '!a!' .. pos) end
  if kind then put(t .. '!v!' .. esc(kind) .. '!' .. pos) end
  if task and sign > 0 then task_add(task .. '!' .. pos) end
  if task and sign < 0 then
    task_rem(task .. '!' .. pos)
    task_rem(task .. '!' .. id)  -- as an earlier version wrote it
  end
end

-- Whether the record at `pos` of tenant segment `t` is in the index (or joins it in this call).
local function ix_has(t, pos)
  local a = t .. '!a!' .. pos
  return IX.add[a] or redis.call('ZSCORE', D.index, a) ~= false
end

-- Move a record's status members and counters from status `from` (nil: a new record) to
-- status `to` (nil: the record goes, with every member).
local function ix_move(rec, id, from, to)
  if from and to and from == to then return end
  local t, pos = esc(str(rec.tenant) or ''), dlv_pos(rec, id)
  local ep = str(rec.endpointId) and esc(rec.endpointId) or nil
  if IX.direct and from and to and not ix_has(t, pos) then
    from = nil  -- a record of an earlier version, not indexed yet: indexed now, as it is now
  end
  local old, code = from and CODES[from], to and CODES[to]
  if old then
    ix_count(t .. '!s!' .. old, -1)
    if ep then ix_count(t .. '!e!' .. ep .. '!' .. old, -1) end
    if LISTED[from] then
      ix_rem(t .. '!s!' .. old .. '!' .. pos)
      if ep then ix_rem(t .. '!e!' .. ep .. '!' .. old .. '!' .. pos) end
    end
  end
  if code then
    ix_count(t .. '!s!' .. code, 1)
    if ep then ix_count(t .. '!e!' .. ep .. '!' .. code, 1) end
    if LISTED[to] then
      ix_add(t .. '!s!' .. code .. '!' .. pos)
      if ep then ix_add(t .. '!e!' .. ep .. '!' .. code .. '!' .. pos) end
    end
  end
  if not from then ix_fixed(rec, id, t, ep, pos, 1) end
  if not to then ix_fixed(rec, id, t, ep, pos, -1) end
end

-- Index a record an earlier version wrote, unless it is indexed already; whether it was not.
local function ix_index(rec, id)
  if ix_has(esc(str(rec.tenant) or ''), dlv_pos(rec, id)) then return false end
  ix_move(rec, id, nil, status_of(rec))
  return true
end

-- Where retention finds the record: in `ended` while it has ended (since `now`), out of it
-- once it is due again.
local function ended_move(id, was, status)
  if ENDED[status] then
    IX.ended[id] = true
    IX.unended[id] = nil
  elseif ENDED[was] or IX.ended[id] then
    IX.ended[id] = nil
    IX.unended[id] = true
  end
end

-- A delivery attempted again now (a retry, a replay, a replay job's step): pending and due, out
-- of the DLQ, its index entries, counters and retention place moved. The caller flushes
-- (ix_flush) once after all of them.
local function replay_now(id, rec, now)
  local was = status_of(rec)
  rec.status = 'pending'
  rec.nextAt = now
  rec.deadAt = nil
  rec.replays = (rec.replays or 0) + 1
  redis.call('HSET', D.records, id, cjson.encode(rec))
  redis.call('ZREM', D.dead, id)
  redis.call('ZADD', D.due, now, id)
  ix_move(rec, id, was, 'pending')
  ended_move(id, was, 'pending')
end

-- Endpoint statistics (GET /v1/codeq/webhooks/endpoints/{id}/stats): one bucket per minute
-- (a ring of 60) and per hour (a ring of 24) per endpoint, each "<epoch>,<ok>,<failed>" then
-- "<i>=<n>" for every latency bucket i that has attempts. Latency bucket i holds the attempts
-- of at most 2^(i/4) ms (and above 2^((i-1)/4)); the last one (STATS_BUCKETS - 1) everything
-- slower. deliverers/outcomes.py reads them with the same bounds.
local STATS_BUCKETS = 64

local function latency_bucket(ms)
  if ms <= 1 then return 0 end
  local i = math.ceil(4 * math.log(ms) / math.log(2) - 1e-9)
  if i > STATS_BUCKETS - 1 then i = STATS_BUCKETS - 1 end
  return i
end

-- A bucket's text with `seen` ({ok, failed, hist}) added; a bucket of another epoch (its
-- ring slot's previous turn) starts over.
local function stats_add(value, epoch, seen)
  local fields = {}
  if value then
    for part in string.gmatch(value, '[^,]+') do fields[#fields + 1] = part end
  end
  local hist = {}
  local okn, failn = 0, 0
  if tonumber(fields[1]) == epoch then
    okn, failn = tonumber(fields[2]) or 0, tonumber(fields[3]) or 0
    for k = 4, #fields do
      local i, n = string.match(fields[k], '^(%d+)=(%d+)$')
      if i then hist[tonumber(i)] = tonumber(n) end
    end
  end
  okn, failn = okn + seen.ok, failn + seen.failed
  for i, n in pairs(seen.hist) do hist[i] = (hist[i] or 0) + n end
  local out = {int(epoch), int(okn), int(failn)}
  for i = 0, STATS_BUCKETS - 1 do
    if hist[i] then out[#out + 1] = int(i) .. '=' .. int(hist[i]) end
  end
  return table.concat(out, ',')
end

-- Count one attempt to endpoint `endpoint`: ok (2xx) or not, its latency (nil when nothing was
-- exchanged, e.g. a refused target).
local function stats_note(endpoint, ok, latency)
  local seen = IX.stats[endpoint]
  if not seen then
    seen = {ok = 0, failed = 0, hist = {}}
    IX.stats[endpoint] = seen
  end
  if ok then seen.ok = seen.ok + 1 else seen.failed = seen.failed + 1 end
  if latency then
    local b = latency_bucket(latency)
    seen.hist[b] = (seen.hist[b] or 0) + 1
  end
end

-- Apply what IX gathered; `now`: when the deliveries that ended did, and the attempts were.
-- The members of set `members` added to (ZADD, with `score`, 0 by default) or removed from
-- (ZREM) sorted set `key`, a thousand a command (unpack has a limit).
local function members_to(cmd, key, members, score)
  local list = {}
  for m in pairs(members) do
    if cmd == 'ZADD' then list[#list + 1] = score or 0 end
    list[#list + 1] = m
  end
  local step = 1000
  if cmd == 'ZADD' then step = 2000 end
  for i = 1, #list, step do
    redis.call(cmd, key, unpack(list, i, math.min(i + step - 1, #list)))
  end
end

local function ix_flush(now)
  members_to('ZREM', D.index, IX.rem)
  members_to('ZADD', D.index, IX.add)
  members_to('ZREM', D.by_task, IX.trem)
  members_to('ZADD', D.by_task, IX.tadd)
  for field, by in pairs(IX.counts) do
    if by ~= 0 then count(field, by) end
  end
  members_to('ZREM', D.ended, IX.unended)
  members_to('ZADD', D.ended, IX.ended, now)
  local minute, hour = math.floor(now / 60000), math.floor(now / 3600000)
  for endpoint, seen in pairs(IX.stats) do
    local e = esc(endpoint)
    local mf, hf = e .. '!m!' .. int(minute % 60), e .. '!h!' .. int(hour % 24)
    local got = redis.call('HMGET', D.stats, mf, hf)
    redis.call('HSET', D.stats, mf, stats_add(got[1], minute, seen),
               hf, stats_add(got[2], hour, seen))
  end
end

-- Every delivery function's first step (codeq/store/scripts.py writes it there): this call's
-- keys, and a fresh start for what the library keeps for one call (`ESCAPED`, `IX`). The
-- library is loaded once and its functions run many times: nothing of one call may reach the
-- next.
local function begin(keys)
  D.events = keys[1]
  D.records = keys[2]
  D.due = keys[3]
  D.dead = keys[4]
  D.poison = keys[5]
  D.tasks = keys[6]
  D.results = keys[7]
  D.by_task = keys[8]
  D.index = keys[9]
  D.counts = keys[10]
  D.stats = keys[11]
  D.ended = keys[12]
  D.lock = keys[13]
  ESCAPED = {}
  IX = {direct = false, add = {}, rem = {}, tadd = {}, trem = {}, counts = {}, ended = {},
        unended = {}, stats = {}}
end
