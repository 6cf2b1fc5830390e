#!lua
-- Write sprockets under ids reserved beforehand (seeding), each with its index entry, in one step.
-- A hash already at one of those ids is replaced, so a rerun converges on the same sprockets.
-- KEYS[1] index (sorted set of ids), KEYS[2..n+1] the sprockets' hashes
-- ARGV[1] m, the number of field, value pairs per sprocket; ARGV[2..n+1] the ids;
-- then m pairs for each sprocket in turn. The hash layout is sprocket_create.lua's.
-- Returns n.
local pairs_count = tonumber(ARGV[1])
local count = #KEYS - 1
local first_pair = count + 2
for i = 1, count do
  local id = ARGV[i + 1]
  local start = first_pair + (i - 1) * 2 * pairs_count
  redis.call('DEL', KEYS[i + 1])
  redis.call('HSET', KEYS[i + 1], 'version', 1, unpack(ARGV, start, start + 2 * pairs_count - 1))
  redis.call('ZADD', KEYS[1], id, id)
end
return count
