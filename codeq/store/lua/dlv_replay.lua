-- dlv_replay.lua: attempt deliveries again now (retry of one, or replay of dead ones).
-- KEYS[1..13] delivery keys (dlv_lib.lua).
-- ARGV[1] tenant ('' = any, super-admin), ARGV[2] limit, ARGV[3..] delivery ids (none = the
-- oldest dead deliveries, up to the limit). Deliveries of another tenant are skipped; a
-- succeeded delivery is sent again only when named. A replayed delivery is pending again: its
-- index entries and counters move, and it leaves `ended` (retention never prunes it while due).
-- Returns {count, id, ...}.
local now = now_ms()
local tenant, limit = ARGV[1], tonumber(ARGV[2])
ix_check_indexed()
local ids = {}
if #ARGV >= 3 then
  for i = 3, #ARGV do ids[#ids + 1] = ARGV[i] end
else
  ids = redis.call('ZRANGE', D.dead, 0, limit - 1)
end
local out = {0}
for _, id in ipairs(ids) do
  local raw = redis.call('HGET', D.records, id)
  if raw then
    local rec = cjson.decode(raw)
    if tenant == '' or rec.tenant == tenant then
      replay_now(id, rec, now)
      out[1] = out[1] + 1
      out[#out + 1] = id
    end
  end
end
ix_flush(now)
return out
