-- Hold an API key, and tell every API process by bumping the version.
-- KEYS[1] the keys hash, KEYS[2] the version counter; ARGV[1] the key's digest, ARGV[2] its record
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return redis.call('INCR', KEYS[2])
