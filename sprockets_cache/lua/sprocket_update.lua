-- Compare-and-set: write fields of a sprocket if its version is the expected one.
-- KEYS[1] the sprocket's hash
-- ARGV[1] the accepted versions as ',3,4,', or '' for any; ARGV[2..] field, value pairs
-- Returns the hash after the write, 0 when there is no such sprocket, -1 when the version differs.
local version = redis.call('HGET', KEYS[1], 'version')
if not version then return 0 end
if ARGV[1] ~= '' and not string.find(ARGV[1], ',' .. version .. ',', 1, true) then return -1 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('HINCRBY', KEYS[1], 'version', 1)
return redis.call('HGETALL', KEYS[1])
