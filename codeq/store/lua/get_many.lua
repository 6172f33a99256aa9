-- get_many.lua: read several tasks of one partition, each with its result when asked (what a
-- deliverer needs for a batch of events: one call, not one per event). Read-only.
-- KEYS[1..15] partition keys (lib.lua).
-- ARGV triples: tenant, task id, '1' to include the result.
-- Returns {record or '', result or '', ...}, two per triple; '' for a task that is absent or
-- another tenant's.
local out = {}
for i = 1, #ARGV, 3 do
  local rec, raw = load_rec(ARGV[i + 1])
  if not rec or rec.tenant ~= ARGV[i] then
    out[#out + 1] = ''
    out[#out + 1] = ''
  else
    out[#out + 1] = raw
    local result = ''
    if ARGV[i + 2] == '1' then result = redis.call('HGET', K.results, ARGV[i + 1]) or '' end
    out[#out + 1] = result
  end
end
return out
