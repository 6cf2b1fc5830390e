-- Read a factory and its points in a time range, in one round trip.
-- KEYS[1] the factory's hash, KEYS[2] its bucket index (sorted set of bucket numbers)
-- ARGV[1] the prefix bucket keys are named with, ARGV[2] the first and ARGV[3] the last time (unix s),
-- ARGV[4] the most points to return, ARGV[5] the width of a bucket in seconds
-- Returns false when there is no such factory, else {name, version, points, members}: the members
-- ("time:actual:goal") of the points in the range, in time order, joined by ":"; just
-- {name, version, points} when points is over the most.
-- The bucket keys share the factory's hash tag, so they live in its slot on a cluster.
local meta = redis.call('HMGET', KEYS[1], 'name', 'version')
if not meta[2] then return false end
local width, most = tonumber(ARGV[5]), tonumber(ARGV[4])
local first_time, last_time = ARGV[2], ARGV[3]
local first_bucket = math.floor(tonumber(first_time) / width)
local last_bucket = math.floor(tonumber(last_time) / width)

local parts, points = {}, 0
for _, bucket in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], first_bucket, last_bucket)) do
  local key = ARGV[1] .. bucket
  local number = tonumber(bucket)
  -- Only the first and the last bucket can hold points outside the range.
  local edge = number == first_bucket or number == last_bucket
  if points > most then  -- too many to send: only count the rest
    points = points + (edge and redis.call('ZCOUNT', key, first_time, last_time) or redis.call('ZCARD', key))
  else
    local members = edge and redis.call('ZRANGEBYSCORE', key, first_time, last_time)
      or redis.call('ZRANGE', key, 0, -1)
    if #members > 0 then
      parts[#parts + 1] = table.concat(members, ':')
      points = points + #members
    end
  end
end
if points > most then return {meta[1], meta[2], points} end
return {meta[1], meta[2], points, table.concat(parts, ':')}
