#!lua
-- Claim an idempotency key, or return what it already holds.
-- KEYS[1] the key; ARGV[1] the claim's value, ARGV[2] its lifetime in seconds
-- Returns false when the claim is ours, else the key's current value.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return false end
return redis.call('GET', KEYS[1])
