-- Convert one bucket of the store's first format, a string of 10-byte records (the time's offset in
-- the bucket as a u16, actual and goal as u32, all big-endian), into a sorted set of points
-- (points.py), in one step. A bucket that is no string (converted already) is left as it is.
-- KEYS[1] the bucket, KEYS[2] the factory's scratch key (empty before and after)
-- ARGV[1] the bucket's first second
-- Returns the number of points converted.
if redis.call('TYPE', KEYS[1]).ok ~= 'string' then return 0 end
local packed = redis.call('GET', KEYS[1])
local start = tonumber(ARGV[1])
-- Through a skiplist (a member too long for a listpack), then one ZUNIONSTORE: see factory_write.lua.
redis.call('ZADD', KEYS[2], 0, string.rep('-', 1024))
for first = 1, #packed, 10 * 3000 do
  local pairs = {}
  for i = first, math.min(first + 10 * 3000 - 1, #packed), 10 do
    local o1, o2, a1, a2, a3, a4, g1, g2, g3, g4 = string.byte(packed, i, i + 9)
    local time = start + o1 * 256 + o2
    local actual = ((a1 * 256 + a2) * 256 + a3) * 256 + a4
    local goal = ((g1 * 256 + g2) * 256 + g3) * 256 + g4
    pairs[#pairs + 1] = time
    pairs[#pairs + 1] = string.format('%d:%d:%d', time, actual, goal)
  end
  redis.call('ZADD', KEYS[2], unpack(pairs))
end
redis.call('ZREM', KEYS[2], string.rep('-', 1024))
redis.call('DEL', KEYS[1])
redis.call('ZUNIONSTORE', KEYS[1], 1, KEYS[2])
redis.call('DEL', KEYS[2])
return #packed / 10
