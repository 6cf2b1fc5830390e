-- Stop holding an API key, and tell every API process by bumping the version.
-- KEYS[1] the keys hash, KEYS[2] the last-used hash, KEYS[3] the version counter; ARGV[1] the digest
-- Returns 1 when the key was held, else 0.
local held = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if held == 1 then redis.call('INCR', KEYS[3]) end
return held
