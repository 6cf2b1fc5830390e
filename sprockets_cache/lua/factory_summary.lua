-- A factory's totals over a time range, without reading every point: the buckets inside the range give
-- their sums (kept by factory_write.lua), the first and last bucket the points of theirs in range.
-- KEYS[1] the factory's hash, KEYS[2] its bucket index, KEYS[3] its buckets' sums
-- ARGV[1] the prefix bucket keys are named with, ARGV[2] the first and ARGV[3] the last time (unix s),
-- ARGV[4] the width of a bucket in seconds
-- Returns false when there is no such factory, else {version, first time, last time, sums...}: each
-- sum "points:actual:goal" over one bucket's part of the range (the caller adds them up: Lua's numbers
-- would lose digits past 2^53), the times "" when the range holds no point.
-- Sums that span whole buckets come from the sums hash in one HMGET per this many buckets.
local HMGET_AT_MOST = 7000
local version = redis.call('HGET', KEYS[1], 'version')
if not version then return false end
local width = tonumber(ARGV[4])
local first_time, last_time = ARGV[2], ARGV[3]
local first_bucket = math.floor(tonumber(first_time) / width)
local last_bucket = math.floor(tonumber(last_time) / width)

local reply = {version, '', ''}
local whole = {}  -- numbers of the buckets wholly in range
local members_of = {}  -- the points in range of the first and the last bucket
local numbers = redis.call('ZRANGEBYSCORE', KEYS[2], first_bucket, last_bucket)
for _, bucket in ipairs(numbers) do
  local number = tonumber(bucket)
  if number == first_bucket or number == last_bucket then
    local members = redis.call('ZRANGEBYSCORE', ARGV[1] .. bucket, first_time, last_time)
    members_of[bucket] = members
    local actual, goal = 0, 0
    for _, member in ipairs(members) do
      local a, g = string.match(member, ':(%d+):(%d+)$')
      actual, goal = actual + tonumber(a), goal + tonumber(g)
    end
    reply[#reply + 1] = string.format('%d:%d:%d', #members, actual, goal)
  else
    whole[#whole + 1] = bucket
  end
end
for i = 1, #whole, HMGET_AT_MOST do
  for _, sums in ipairs(redis.call('HMGET', KEYS[3], unpack(whole, i, math.min(i + HMGET_AT_MOST - 1, #whole)))) do
    reply[#reply + 1] = sums
  end
end

-- The first and the last point: in the first and the last bucket that holds one in range.
local function end_of(bucket, index)
  local members = members_of[bucket] or redis.call('ZRANGE', ARGV[1] .. bucket, index, index)
  local member = members[index == 0 and 1 or #members]
  return member and string.match(member, '^(%d+):')
end
for i = 1, #numbers do
  local time = end_of(numbers[i], 0)
  if time then reply[2] = time break end
end
for i = #numbers, 1, -1 do
  local time = end_of(numbers[i], -1)
  if time then reply[3] = time break end
end
return reply
