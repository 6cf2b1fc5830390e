-- Read a factory and its points in a time range, in one round trip when there are few.
-- KEYS[1] the factory's hash, KEYS[2] its bucket index (sorted set of bucket numbers)
-- ARGV[1] the prefix bucket keys are named with, ARGV[2] the first and ARGV[3] the last time (unix s),
-- ARGV[4] the most points to return, ARGV[5] the width of a bucket in seconds, ARGV[6] the most points
-- this script reads itself, ARGV[7] the factory's spans key and ARGV[8] its buckets' sums (retention)
-- Returns false when there is no such factory, else {name, version, created_at, points} when points
-- is over the most; else {name, version, created_at, points, 'members', m}, m the members
-- ("time:actual:goal") of the points in the range in time order, joined by ":"; or, past ARGV[6]
-- points, {name, version, created_at, points, 'buckets', the numbers of the buckets in range...}: each
-- point a script reads costs Redis five times what a plain ZRANGE's reply does (its member becomes a
-- Lua string), so the caller reads those buckets itself (ranges.py).
-- The bucket keys share the factory's hash tag, so they live in its slot on a cluster.
local meta = redis.call('HMGET', KEYS[1], 'name', 'version', 'raw_from', 'span_s', 'created_at')
if not meta[2] then return false end
meta[5] = meta[5] or ''  -- a nil would end the reply's array there

-- Retention (docs/retention.md): a range that starts before the factory's raw window is answered
-- wholly in spans of its width, widened to whole spans: the spans kept (ARGV[7] the spans key), then
-- the raw points in range summed per span. Returns {name, version, spans, 'spans', width, members,
-- raw_from}, the members "start:actual:goal:points" joined by ":".
if meta[4] and tonumber(ARGV[2]) < tonumber(meta[3]) then
  local width, raw_from, hour = tonumber(meta[4]), tonumber(meta[3]), tonumber(ARGV[5])
  local from = tonumber(ARGV[2]) - tonumber(ARGV[2]) % width
  local to = tonumber(ARGV[3]) - tonumber(ARGV[3]) % width + width - 1
  local out = redis.call('ZRANGEBYSCORE', ARGV[7], from, math.min(to, raw_from - 1))
  local sums, starts = {}, {}
  local function add(time, actual, goal, points)
    local start = time - time % width
    local sum = sums[start]
    if not sum then sum = {0, 0, 0} sums[start] = sum starts[#starts + 1] = start end
    sum[1], sum[2], sum[3] = sum[1] + actual, sum[2] + goal, sum[3] + points
  end
  from = math.max(from, raw_from)
  for _, bucket in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], math.floor(from / hour), math.floor(to / hour))) do
    if width % hour == 0 then  -- whole buckets: their sums
      local points, actual, goal = string.match(redis.call('HGET', ARGV[8], bucket), '^(%d+):(%d+):(%d+)$')
      add(tonumber(bucket) * hour, tonumber(actual), tonumber(goal), tonumber(points))
    else
      for _, member in ipairs(redis.call('ZRANGEBYSCORE', ARGV[1] .. bucket, from, to)) do
        local time, actual, goal = string.match(member, '^(%d+):(%d+):(%d+)$')
        add(tonumber(time), tonumber(actual), tonumber(goal), 1)
      end
    end
  end
  for _, start in ipairs(starts) do
    local sum = sums[start]
    out[#out + 1] = string.format('%d:%d:%d:%d', start, sum[1], sum[2], sum[3])
  end
  if #out > tonumber(ARGV[4]) then return {meta[1], meta[2], meta[5], #out} end
  return {meta[1], meta[2], meta[5], #out, 'spans', width, table.concat(out, ':'), meta[3]}
end
-- End of retention.

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
local reply = {meta[1], meta[2], meta[5], points}
if points > tonumber(ARGV[4]) then return reply end
if points > tonumber(ARGV[6]) then
  reply[5] = 'buckets'
  for i, bucket in ipairs(numbers) do reply[i + 5] = bucket end
  return reply
end
local parts = {}
for _, bucket in ipairs(numbers) do
  local key = ARGV[1] .. bucket
  local members = edge(bucket) and redis.call('ZRANGEBYSCORE', key, first_time, last_time)
    or redis.call('ZRANGE', key, 0, -1)
  if #members > 0 then parts[#parts + 1] = table.concat(members, ':') end
end
reply[5] = 'members'
reply[6] = table.concat(parts, ':')
return reply
