#!lua
-- Compare-and-set: write fields of a sprocket if its version is one the client accepts.
-- KEYS[1] the sprocket's hash
-- ARGV[1] the accepted versions as ',3,4,', or '' for any; ARGV[2], ARGV[3] its JSON before and after
-- the value of created_at, which stays as stored; ARGV[4..] field, value pairs
-- Returns {json, version} after the write, 0 when there is no such sprocket, -1 when the version differs.
local version = redis.call('HGET', KEYS[1], 'version')
if not version then return 0 end
if ARGV[1] ~= '' and not string.find(ARGV[1], ',' .. version .. ',', 1, true) then return -1 end
local json = ARGV[2] .. redis.call('HGET', KEYS[1], 'created_at') .. ARGV[3]
redis.call('HSET', KEYS[1], 'json', json, unpack(ARGV, 4))
return {json, redis.call('HINCRBY', KEYS[1], 'version', 1)}
