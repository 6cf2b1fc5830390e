#!lua
-- Raise an id counter to at least ARGV[1], never lower it: ids up to there are taken (seeding a file
-- that keeps its ids). KEYS[1] the counter (a string INCR counts with).
if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
return 1
