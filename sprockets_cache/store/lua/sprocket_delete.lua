#!lua
-- Delete a sprocket if its version is the expected one.
-- KEYS[1] the sprocket's hash, KEYS[2] index; ARGV[1] the accepted versions as ',3,4,' or '', ARGV[2] id
-- Where creates are tagged (keys.CREATED_WITH): KEYS[3] its tombstone, which keeps the tag the sprocket
-- was created with for ARGV[3] seconds, if it has one.
-- Returns 1 when deleted, 0 when there is no such sprocket, -1 when the version differs.
local version = redis.call('HGET', KEYS[1], 'version')
if not version then return 0 end
if ARGV[1] ~= '' and not string.find(ARGV[1], ',' .. version .. ',', 1, true) then return -1 end
if KEYS[3] then
  local tag = redis.call('HGET', KEYS[1], 'idempotency')
  if tag then redis.call('SET', KEYS[3], tag, 'EX', ARGV[3]) end
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
