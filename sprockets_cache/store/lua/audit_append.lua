-- Append a batch of audit entries to the capped audit stream, in order.
-- KEYS[1] the stream; ARGV[1] about how many entries it keeps, ARGV[2] a JSON array of entries, each
-- an array of: time, key, client, method, route, resource, status, request_id
local entries = cjson.decode(ARGV[2])
for _, e in ipairs(entries) do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'time', e[1], 'key', e[2], 'client', e[3],
    'method', e[4], 'route', e[5], 'resource', e[6], 'status', e[7], 'request_id', e[8])
end
return #entries
