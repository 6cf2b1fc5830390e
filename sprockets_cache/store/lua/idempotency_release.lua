#!lua
-- Free an Idempotency-Key whose record still holds what the caller read or wrote, and nothing else.
-- KEYS[1] the key's record; ARGV[1] the record as the caller knows it
-- Returns 1 when it freed the key, else 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
