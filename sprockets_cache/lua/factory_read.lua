-- Read a factory and its points in a time range, in one round trip when there are few.
-- KEYS[1] the factory's hash, KEYS[2] its bucket index (sorted set of bucket numbers)
-- ARGV[1] the prefix bucket keys are named with, ARGV[2] the first and ARGV[3] the last time (unix s),
-- ARGV[4] the most points to return, ARGV[5] the width of a bucket in seconds, ARGV[6] the most points
-- this script reads itself
-- Returns false when there is no such factory, else {name, version, points} when points is over the
-- most; else {name, version, points, 'members', m}, m the members ("time:actual:goal") of the points
-- in the range in time order, joined by ":"; or, past ARGV[6] points, {name, version, points,
-- 'buckets', the numbers of the buckets in range...}: each point a script reads costs Redis five
-- times what a plain ZRANGE's reply does (its member becomes a Lua string), so the caller reads those
-- buckets itself (store.py).
-- The bucket keys share the factory's hash tag, so they live in its slot on a cluster.
local meta = redis.call('HMGET', KEYS[1], 'name', 'version')
if not meta[2] then return false end
local width = tonumber(ARGV[5])
local first_time, last_time = ARGV[2], ARGV[3]
local first_bucket = math.floor(tonumber(first_time) / width)
local last_bucket = math.floor(tonumber(last_time) / width)

local numbers = redis.call('ZRANGEBYSCORE', KEYS[2], first_bucket, last_bucket)
-- Only the first and the last bucket can hold points outside the range.
local function edge(bucket)
  local number = tonumber(bucket)
  return number == first_bucket or number == last_bucket
end
local points = 0
for _, bucket in ipairs(numbers) do
  local key = ARGV[1] .. bucket
  points = points + (edge(bucket) and redis.call('ZCOUNT', key, first_time, last_time) or redis.call('ZCARD', key))
end
if points > tonumber(ARGV[4]) then return {meta[1], meta[2], points} end
local reply = {meta[1], meta[2], points}
if points > tonumber(ARGV[6]) then
  reply[4] = 'buckets'
  for i, bucket in ipairs(numbers) do reply[i + 4] = bucket end
  return reply
end
local parts = {}
for _, bucket in ipairs(numbers) do
  local key = ARGV[1] .. bucket
  local members = edge(bucket) and redis.call('ZRANGEBYSCORE', key, first_time, last_time)
    or redis.call('ZRANGE', key, 0, -1)
  if #members > 0 then parts[#parts + 1] = table.concat(members, ':') end
end
reply[4] = 'members'
reply[5] = table.concat(parts, ':')
return reply
