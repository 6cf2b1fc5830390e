#!lua
-- Create a sprocket: a new id, its hash and its index entry, in one step.
-- KEYS[1] id counter, KEYS[2] index (sorted set of ids)
-- ARGV[1] the prefix its hash key is named with, ARGV[2] its JSON after `{"id":<id>,`,
-- ARGV[3..] field, value pairs
-- Returns the new id.
local id = redis.call('INCR', KEYS[1])
redis.call('HSET', ARGV[1] .. id, 'version', 1, 'json', '{"id":' .. id .. ',' .. ARGV[2], unpack(ARGV, 3))
redis.call('ZADD', KEYS[2], id, id)
return id
