-- dlv_lib.lua: helpers shared by the delivery scripts; prepended to each when it is loaded.
--
-- KEYS[1..8] of every delivery script are the fixed delivery keys of ONE partition, in this
-- order (codeq/store/keys.py, DeliveryKeys.all):
--   events   the partition's event stream (consumer groups callbacks, notifier, endpoints)
--   records  hash  delivery id -> record JSON (target, body, attempts log, status)
--   due      zset  delivery id, score = next attempt ms (also the in-flight lease)
--   dead     zset  delivery id, score = time of death ms (the delivery DLQ)
--   poison   list  stream entries set aside after too many receives
--   tasks, results  the task hashes (read-only here)
--   by_task  zset  score 0, member "<task id>!<delivery id>": the deliveries a task caused
local D = {
  events = KEYS[1], records = KEYS[2], due = KEYS[3], dead = KEYS[4], poison = KEYS[5],
  tasks = KEYS[6], results = KEYS[7], by_task = KEYS[8],
}

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function int(x)
  return string.format('%d', x)
end
