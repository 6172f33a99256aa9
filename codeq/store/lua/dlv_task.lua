-- dlv_task.lua: the deliveries (webhooks) one task caused, with their attempts. Read-only.
-- KEYS[1..13] delivery keys (dlv_lib.lua): a task's deliveries live in its partition, since
-- they come from the events of its partition's stream.
-- ARGV[1] tenant, ARGV[2] task id, ARGV[3] at most this many deliveries.
-- Returns {'NOT_FOUND'} when the task is absent or another tenant's, else
-- {'OK', record JSON, ...} (oldest first; entries written before by_task held the creation
-- time, "<task>!<id>", come after them).
local raw = redis.call('HGET', D.tasks, ARGV[2])
local ok, rec = false, nil
if raw then ok, rec = pcall(cjson.decode, raw) end
if not ok or type(rec) ~= 'table' or rec.tenant ~= ARGV[1] then return {'NOT_FOUND'} end
local members = redis.call('ZRANGEBYLEX', D.by_task, '[' .. ARGV[2] .. '!', '(' .. ARGV[2] .. '"',
                           'LIMIT', 0, tonumber(ARGV[3]))
local out = {'OK'}
if #members == 0 then return out end
local ids = {}
for i, m in ipairs(members) do ids[i] = string.match(m, '!([^!]+)$') end
for _, r in ipairs(redis.call('HMGET', D.records, unpack(ids))) do
  if r then out[#out + 1] = r end
end
return out
