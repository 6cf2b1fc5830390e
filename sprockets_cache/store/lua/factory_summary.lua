-- A factory's totals over a time range, without reading every point: the buckets inside the range give
-- their sums (kept by factory_write.lua), the first and last bucket the points of theirs in range.
-- KEYS[1] the factory's hash, KEYS[2] its bucket index, KEYS[3] its buckets' sums, KEYS[4] its spans
-- ARGV[1] the prefix bucket keys are named with, ARGV[2] the first and ARGV[3] the last time (unix s),
-- ARGV[4] the width of a bucket in seconds
-- Returns false when there is no such factory, else {version, first time, last time, sums...}: each
-- sum "points:actual:goal" over one bucket's part of the range (the caller adds them up: Lua's numbers
-- would lose digits past 2^53), the times "" when the range holds no point.
-- Sums that span whole buckets come from the sums hash in one HMGET per this many buckets.
local HMGET_AT_MOST = 7000
local meta = redis.call('HMGET', KEYS[1], 'version', 'raw_from', 'span_s')
local version = meta[1]
if not version then return false end
local width = tonumber(ARGV[4])
local first_time, last_time = ARGV[2], ARGV[3]

-- Retention (docs/retention.md): a range that starts before the factory's raw window is widened to
-- whole spans, as reads are; the spans in it (KEYS[4]) give their sums, and the rest of the range is
-- read as usual from the raw window's start.
local spans = {}
if meta[3] and tonumber(first_time) < tonumber(meta[2]) then
  local span_s, raw_from = tonumber(meta[3]), tonumber(meta[2])
  local from = tonumber(first_time) - tonumber(first_time) % span_s
  local to = tonumber(last_time) - tonumber(last_time) % span_s + span_s - 1
  spans = redis.call('ZRANGEBYSCORE', KEYS[4], from, math.min(to, raw_from - 1))
  first_time, last_time = string.format('%d', math.max(from, raw_from)), string.format('%d', to)
end
-- End of retention.
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

-- Retention: the spans' sums, "start:actual:goal:points", as "points:actual:goal".
if #spans > 0 then
  reply[2] = string.match(spans[1], '^(%d+):')
  if reply[3] == '' then reply[3] = string.match(spans[#spans], '^(%d+):') end
end
for _, span in ipairs(spans) do
  local start, actual, goal, points = string.match(span, '^(%d+):(%d+):(%d+):(%d+)$')
  reply[#reply + 1] = points .. ':' .. actual .. ':' .. goal
end
-- End of retention.
return reply
