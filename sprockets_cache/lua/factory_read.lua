-- Read a factory and its points in a time range, in one round trip.
-- KEYS[1] the factory's hash, KEYS[2] its bucket index (sorted set of bucket numbers)
-- ARGV[1] the prefix bucket keys are named with, ARGV[2] the first and ARGV[3] the last time (unix s),
-- ARGV[4] the most points to return, ARGV[5] the width of a bucket in seconds
-- Returns false when there is no such factory, else {name, version, points, bucket, packed, bucket, packed, ...}
-- with the records outside the range cut off; just {name, version, points} when points is over the most.
-- The bucket keys share the factory's hash tag, so they live in its slot on a cluster.
local RECORD = 10
-- Buckets per MGET: one call for the usual range (each call from Lua costs about as much as a bucket),
-- and few enough to stay within what unpack() can pass.
local MGET_AT_MOST = 1000
local meta = redis.call('HMGET', KEYS[1], 'name', 'version')
if not meta[2] then return false end
local width = tonumber(ARGV[5])
local first_time, last_time = tonumber(ARGV[2]), tonumber(ARGV[3])
local first_bucket, last_bucket = math.floor(first_time / width), math.floor(last_time / width)

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

local buckets = redis.call('ZRANGEBYSCORE', KEYS[2], first_bucket, last_bucket)
local reply, points = {meta[1], meta[2], 0}, 0
for chunk = 1, #buckets, MGET_AT_MOST do
  local names = {}
  for i = chunk, math.min(chunk + MGET_AT_MOST - 1, #buckets) do names[#names + 1] = ARGV[1] .. buckets[i] end
  for i, packed in ipairs(redis.call('MGET', unpack(names))) do
    local bucket = buckets[chunk + i - 1]
    local number = tonumber(bucket)
    -- Only the first and the last bucket can hold records outside the range.
    if number == first_bucket or number == last_bucket then
      local from = number == first_bucket and lower_bound(packed, first_time - first_bucket * width) or 1
      local to = number == last_bucket and lower_bound(packed, last_time - last_bucket * width + 1) - 1
        or #packed / RECORD
      packed = to >= from and string.sub(packed, (from - 1) * RECORD + 1, to * RECORD) or ''
    end
    if #packed > 0 then
      reply[#reply + 1] = bucket
      reply[#reply + 1] = packed
      points = points + #packed / RECORD
    end
  end
end
if points > tonumber(ARGV[4]) then return {meta[1], meta[2], points} end
reply[3] = points
return reply
