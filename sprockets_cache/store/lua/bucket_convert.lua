#!lua
-- Convert one bucket of the store's first format, a string of 10-byte records (the time's offset in
-- the bucket as a u16, actual and goal as u32, all big-endian), into a sorted set of points
-- (points.py), in one step. A bucket that is no string (converted already) is left as it is.
-- KEYS[1] the bucket, KEYS[2] the factory's scratch key (empty before and after), KEYS[3] its
-- buckets' sums (see factory_write.lua)
-- ARGV[1] the bucket's number, ARGV[2] its first second
-- Returns the number of points converted.
if redis.call('TYPE', KEYS[1]).ok ~= 'string' then return 0 end
local packed = redis.call('GET', KEYS[1])
local start = tonumber(ARGV[2])
local actual_total, goal_total = 0, 0
-- Through a skiplist (a member too long for a listpack), then one ZUNIONSTORE: see factory_write.lua.
redis.call('ZADD', KEYS[2], 0, string.rep('-', 1024))
for first = 1, #packed, 10 * 3000 do
  local pairs = {}
  for i = first, math.min(first + 10 * 3000 - 1, #packed), 10 do
    local o1, o2, a1, a2, a3, a4, g1, g2, g3, g4 = string.byte(packed, i, i + 9)
    local time = start + o1 * 256 + o2
    local actual = ((a1 * 256 + a2) * 256 + a3) * 256 + a4
    local goal = ((g1 * 256 + g2) * 256 + g3) * 256 + g4
    actual_total, goal_total = actual_total + actual, goal_total + goal
    pairs[#pairs + 1] = time
    pairs[#pairs + 1] = string.format('%d:%d:%d', time, actual, goal)
  end
  redis.call('ZADD', KEYS[2], unpack(pairs))
end
redis.call('ZREM', KEYS[2], string.rep('-', 1024))
redis.call('DEL', KEYS[1])
redis.call('ZUNIONSTORE', KEYS[1], 1, KEYS[2])
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[3], ARGV[1], string.format('%d:%d:%d', #packed / 10, actual_total, goal_total))
return #packed / 10
