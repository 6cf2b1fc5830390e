#!lua
-- Upsert points into a factory's packed buckets (see points.py), optionally creating the factory,
-- and tell its event stream, all in one step.
-- KEYS[1] the factory's hash, KEYS[2] its bucket index, KEYS[3] its event stream, KEYS[4..] the buckets written
-- ARGV[1] m, the number of field, value pairs that follow to create the factory with (0: it must exist)
-- ARGV[2 .. 2m+1] those pairs; then the first and last time written, the number of points, and the
-- number of events the stream keeps; then one bucket number per bucket key; then one packed value per
-- bucket key, records sorted by offset with no offset repeated.
-- Returns the factory's new version, or false when it does not exist.
local RECORD = 10
local pairs_count = tonumber(ARGV[1])
if pairs_count > 0 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 2, 2 * pairs_count + 1))
elseif redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end

local function offset(packed, index)
  local high, low = string.byte(packed, (index - 1) * RECORD + 1, (index - 1) * RECORD + 2)
  return high * 256 + low
end

-- Merge two sorted runs of records; on equal offsets the new record wins.
local function merge(old, new)
  local out = {}
  local old_count, new_count = #old / RECORD, #new / RECORD
  local i = 1
  for j = 1, new_count do
    local target = offset(new, j)
    local start = i
    while i <= old_count and offset(old, i) < target do i = i + 1 end
    if i > start then out[#out + 1] = string.sub(old, (start - 1) * RECORD + 1, (i - 1) * RECORD) end
    out[#out + 1] = string.sub(new, (j - 1) * RECORD + 1, j * RECORD)
    if i <= old_count and offset(old, i) == target then i = i + 1 end
  end
  if i <= old_count then out[#out + 1] = string.sub(old, (i - 1) * RECORD + 1) end
  return table.concat(out)
end

local span = 2 * pairs_count + 2
local first_time, last_time, points, events_kept = ARGV[span], ARGV[span + 1], ARGV[span + 2], ARGV[span + 3]
local buckets = #KEYS - 3
local first_bucket = span + 4
for k = 1, buckets do
  local key, bucket, new = KEYS[k + 3], ARGV[first_bucket + k - 1], ARGV[first_bucket + buckets + k - 1]
  local old = redis.call('GET', key)
  if not old then
    redis.call('SET', key, new)
    redis.call('ZADD', KEYS[2], bucket, bucket)
  elseif offset(new, 1) > offset(old, #old / RECORD) then
    -- The usual case: newer points. SET, not APPEND: APPEND leaves up to half a string's
    -- allocation unused (measured: 25 bytes a point instead of 14), SET sizes it exactly.
    redis.call('SET', key, old .. new)
  else
    redis.call('SET', key, merge(old, new))
  end
end
if buckets == 0 and pairs_count == 0 then
  return tonumber(redis.call('HGET', KEYS[1], 'version'))  -- nothing written: the ETag stays
end
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
if buckets > 0 then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', events_kept, '*',
    'version', version, 'first', first_time, 'last', last_time, 'points', points)
end
return version
