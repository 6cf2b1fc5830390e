-- Read a factory and its points in a time range, in one round trip.
-- KEYS[1] the factory's hash, KEYS[2] its bucket index (sorted set of bucket numbers)
-- ARGV[1] the prefix bucket keys are named with, ARGV[2] the first and ARGV[3] the last time (unix s),
-- ARGV[4] the most points to return, ARGV[5] the width of a bucket in seconds
-- Returns false when there is no such factory, else {name, version, points, bucket, packed, bucket, packed, ...}
-- with the records outside the range cut off; just {name, version, points} when points is over the most.
-- The bucket keys share the factory's hash tag, so they live in its slot on a cluster.
local RECORD = 10
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local meta = redis.call('HMGET', KEYS[1], 'name', 'version')
local width = tonumber(ARGV[5])
local first_time, last_time = tonumber(ARGV[2]), tonumber(ARGV[3])
local first_bucket, last_bucket = math.floor(first_time / width), math.floor(last_time / width)
local first_offset, last_offset = first_time - first_bucket * width, last_time - last_bucket * width

-- The 1-based index of the first record whose offset is at least `target` (count + 1 if none).
local function lower_bound(packed, target)
  local low, high = 1, #packed / RECORD + 1
  while low < high do
    local middle = math.floor((low + high) / 2)
    local hi, lo = string.byte(packed, (middle - 1) * RECORD + 1, (middle - 1) * RECORD + 2)
    if hi * 256 + lo < target then low = middle + 1 else high = middle end
  end
  return low
end

local found, points = {}, 0
for _, bucket in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], first_bucket, last_bucket)) do
  local packed = redis.call('GET', ARGV[1] .. bucket)
  local number = tonumber(bucket)
  local from = number == first_bucket and lower_bound(packed, first_offset) or 1
  local to = number == last_bucket and lower_bound(packed, last_offset + 1) - 1 or #packed / RECORD
  if to >= from then
    found[#found + 1] = bucket
    found[#found + 1] = string.sub(packed, (from - 1) * RECORD + 1, to * RECORD)
    points = points + to - from + 1
  end
end
if points > tonumber(ARGV[4]) then return {meta[1], meta[2], points} end
local reply = {meta[1], meta[2], points}
for i = 1, #found do reply[i + 3] = found[i] end
return reply
