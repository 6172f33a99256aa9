-- dlq_page.lua: one page of a queue's dead tasks, oldest death first. Read-only.
-- KEYS[1..15] partition keys (lib.lua).
-- ARGV[1] queue segment, ARGV[2] cursor (the last member of the previous page) or '',
-- ARGV[3] page size.
-- Returns {next cursor or '', record, record, ...}.
local q, cursor, size = ARGV[1], ARGV[2], tonumber(ARGV[3])
local lo, hi = qrange(q)
if cursor ~= '' then
  if string.sub(cursor, 1, #q + 1) ~= q .. '!' then return {''} end
  lo = '(' .. cursor
end
local members = redis.call('ZRANGEBYLEX', K.dlq, lo, hi, 'LIMIT', 0, size + 1)
local out = {''}
for i = 1, math.min(#members, size) do
  local raw = redis.call('HGET', K.tasks, member_id(members[i]))
  if raw then out[#out + 1] = raw end
end
if #members > size then out[1] = members[size] end
return out
