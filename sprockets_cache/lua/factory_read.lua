-- Read a factory and its points in a time range, in one round trip.
-- KEYS[1] the factory's hash, KEYS[2] its bucket index (sorted set of bucket numbers)
-- ARGV[1] the prefix bucket keys are named with, ARGV[2] first bucket, ARGV[3] last bucket
-- Returns false when there is no such factory, else {name, version, bucket, packed, bucket, packed, ...}.
-- The bucket keys share the factory's hash tag, so they live in its slot on a cluster.
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local meta = redis.call('HMGET', KEYS[1], 'name', 'version')
local reply = {meta[1], meta[2]}
for _, bucket in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[2], ARGV[3])) do
  reply[#reply + 1] = bucket
  reply[#reply + 1] = redis.call('GET', ARGV[1] .. bucket)
end
return reply
