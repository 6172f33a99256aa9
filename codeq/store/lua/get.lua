-- get.lua: read a task (and optionally its payload and result) of one tenant. Read-only.
-- KEYS[1..15] partition keys (lib.lua).
-- ARGV[1] tenant, ARGV[2] task id, ARGV[3] '1' to include the payload, ARGV[4] '1' for the result.
-- Returns {'OK', record, payload or '', result or ''} | {'NOT_FOUND'} (absent or another tenant).
local rec, raw = load_rec(ARGV[2])
if not rec or rec.tenant ~= ARGV[1] then return {'NOT_FOUND'} end
local payload, result = '', ''
if ARGV[3] == '1' then payload = redis.call('HGET', K.payloads, ARGV[2]) or '' end
if ARGV[4] == '1' then result = redis.call('HGET', K.results, ARGV[2]) or '' end
return {'OK', raw, payload, result}
