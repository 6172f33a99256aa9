-- sub_pick.lua: which subscriptions a task.ready notifies, rate-bounded per subscription.
-- KEYS[1] records hash, KEYS[2] expiry zset, KEYS[3] the tenant's index set (keys.py).
-- ARGV[1] command (lower case), ARGV[2] hash bucket (event type + time bucket digest, int).
-- A live subscription whose eventTypes hold the command (or '*') is due when its last
-- notification is at least minIntervalSeconds old. fanout: every due one; group: one due
-- member per groupId, round-robin; hash: one member per groupId (or per tenant) by bucket.
-- Chosen subscriptions get lastSentAt = now.
-- Returns {record JSON, ...} of the chosen ones.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local command, bucket = ARGV[1], tonumber(ARGV[2])
local chosen = {}
local groups, hashed = {}, {}
local function matches(rec)
  for _, e in ipairs(rec.eventTypes or {}) do
    if e == '*' or string.lower(e) == command then return true end
  end
  return false
end
local ids = redis.call('SMEMBERS', KEYS[3])
table.sort(ids)
for _, id in ipairs(ids) do
  local raw = redis.call('HGET', KEYS[1], id)
  local rec = raw and cjson.decode(raw)
  if not rec or rec.expiresAt <= now then
    redis.call('HDEL', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
    redis.call('SREM', KEYS[3], id)
  elseif matches(rec) then
    local mode = rec.deliveryMode or 'fanout'
    if mode == 'fanout' then
      if now - (rec.lastSentAt or 0) >= rec.minIntervalSeconds * 1000 then
        chosen[#chosen + 1] = rec
      end
    else
      local g = rec.groupId or ''
      local bag = mode == 'group' and groups or hashed
      bag[g] = bag[g] or {}
      table.insert(bag[g], rec)
    end
  end
end
-- group: round-robin over the group's members; the group is rate-bounded as one.
for g, members in pairs(groups) do
  local last = 0
  for _, m in ipairs(members) do last = math.max(last, m.lastSentAt or 0) end
  if now - last >= members[1].minIntervalSeconds * 1000 then
    local rr = redis.call('HINCRBY', KEYS[1], '__rr__:' .. g, 1)
    chosen[#chosen + 1] = members[(rr - 1) % #members + 1]
  end
end
for _, members in pairs(hashed) do
  local last = 0
  for _, m in ipairs(members) do last = math.max(last, m.lastSentAt or 0) end
  if now - last >= members[1].minIntervalSeconds * 1000 then
    chosen[#chosen + 1] = members[bucket % #members + 1]
  end
end
local out = {}
for _, rec in ipairs(chosen) do
  rec.lastSentAt = now
  local raw = cjson.encode(rec)
  redis.call('HSET', KEYS[1], rec.id, raw)
  out[#out + 1] = raw
end
return out
