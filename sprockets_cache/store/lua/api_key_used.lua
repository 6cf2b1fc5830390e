-- Note when keys were last used; a key revoked meanwhile is left out, so nothing stays behind.
-- KEYS[1] the keys hash, KEYS[2] the last-used hash; ARGV[1] the time, ARGV[2..] the keys' digests
for i = 2, #ARGV do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[1])
  end
end
return 0
