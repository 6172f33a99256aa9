-- create.lua: create one or more tasks in one partition (single create = batch of one).
-- KEYS[1..13] partition keys (lib.lua); KEYS[14..] idempotency keys named by the items.
-- ARGV[1] idempotency TTL ms; ARGV[2] n; then per item 6 values:
--   record JSON (id, command, q, tenant, priority, maxAttempts, webhook?, idempotencyKey?,
--   traceParent?, traceState?, payloadHash), payload JSON text, runAt ms or '',
--   delay ms or '', index into KEYS of its idempotency key or '0', queue registry JSON.
-- Returns one entry per item: {'OK', record} | {'DUP', record, payload} | {'CONFLICT', id}.
-- Events: task.created, then task.ready when visible at once.
local now = now_ms()
local ttl = ARGV[1]
local n = tonumber(ARGV[2])
local out = {}
for i = 1, n do
  local b = 2 + (i - 1) * 6
  local rec = cjson.decode(ARGV[b + 1])
  local payload = ARGV[b + 2]
  local run_at = tonumber(ARGV[b + 3])
  local delay = tonumber(ARGV[b + 4])
  local ik = tonumber(ARGV[b + 5])
  local answer = nil
  if ik > 0 then
    local existing = redis.call('GET', KEYS[ik])
    if existing then
      local old, old_raw = load_rec(existing)
      if old then
        if old.q ~= rec.q or old.payloadHash ~= rec.payloadHash then
          answer = {'CONFLICT', existing}
        else
          answer = {'DUP', old_raw, redis.call('HGET', K.payloads, existing) or ''}
        end
      end
    end
  end
  if not answer then
    rec.status = 'PENDING'
    rec.attempts = 0
    rec.createdAt = now
    redis.call('HSET', K.payloads, rec.id, payload)
    redis.call('HSETNX', K.queues, rec.q, ARGV[b + 6])
    local visible = now
    if run_at then visible = run_at elseif delay then visible = now + delay end
    if visible > now then
      emit('task.created', rec, now, {'priority', rec.priority, 'runAt', int(visible)})
      make_delayed(rec, visible)
    else
      emit('task.created', rec, now, {'priority', rec.priority})
      make_ready(rec, now)
    end
    local raw = save_rec(rec, now)
    if ik > 0 then redis.call('SET', KEYS[ik], rec.id, 'PX', ttl) end
    answer = {'OK', raw}
  end
  out[i] = answer
end
return out
