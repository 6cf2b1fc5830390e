#!lua
-- List a new factory's id, and make sure the id counter is at least that id, in one step. On a cluster
-- the index and the counter live in {factories}, often on another master than the id was taken from
-- when a failover came in between: that master must not hand the id out again.
-- KEYS[1] the index (sorted set of ids), KEYS[2] the id counter; ARGV[1] the id
if tonumber(redis.call('GET', KEYS[2]) or '0') < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[2], ARGV[1])
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[1])
return 1
