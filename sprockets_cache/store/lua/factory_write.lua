#!lua
-- Upsert points into a factory's buckets (sorted sets, see points.py), optionally creating the factory,
-- and tell its event stream, all in one step.
-- KEYS[1] the factory's hash, KEYS[2] its bucket index, KEYS[3] its event stream, KEYS[4] a scratch key
-- (empty before and after), KEYS[5] its buckets' sums (a hash), KEYS[6..] the buckets written
-- ARGV[1] m, the number of field, value pairs that follow to create the factory with (0: it must exist)
-- ARGV[2 .. 2m+1] those pairs; then the first and last time written, the number of points, and the
-- number of events the stream keeps; then for each bucket key its number, how many points it gets and
-- their actual and goal totals; then the points, bucket after bucket, as time, member pairs, newest
-- first, with no time repeated.
-- Returns the factory's new version, or false when it does not exist, or {'before_raw_from', the
-- factory's oldest writable time} (retention, below).

-- A ZADD into a compact (listpack) sorted set walks it for each member, to look for the member and
-- then from the start to the member's place (so newest first costs less): 0.17 s for 3,600 points in
-- time order. Past this many points, they go into the scratch key as a skiplist (O(log n) a point)
-- and one ZUNIONSTORE writes the bucket in a single pass, compact again when it fits.
local DIRECT_AT_MOST = 64
-- Arguments per ZADD: unpack() passes at most about 8,000 values.
local ARGS_AT_MOST = 7000
-- A member longer than zset-max-listpack-value makes a sorted set a skiplist from its first ZADD.
local LONG = string.rep('-', 1024)

-- Retention (docs/retention.md): when ARGV goes on past the points, its last four are the prefix of
-- the bucket keys, the spans key, POINTS_RETENTION_S and DOWNSAMPLE_S. A write with a point before the
-- factory's raw window (meta field raw_from, once it was trimmed) is refused whole, before anything is
-- written, with retention on or off: its spans would hide such points.
local retention_at = 2 * tonumber(ARGV[1]) + 6 + 4 * (#KEYS - 5) + 2 * tonumber(ARGV[2 * tonumber(ARGV[1]) + 4])
local retained = #ARGV >= retention_at
if #KEYS > 5 then
  local raw_from = tonumber(redis.call('HGET', KEYS[1], 'raw_from'))
  if raw_from and tonumber(ARGV[2 * tonumber(ARGV[1]) + 2]) < raw_from then return {'before_raw_from', raw_from} end
end
-- End of retention.

local pairs_count = tonumber(ARGV[1])
if pairs_count > 0 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 2, 2 * pairs_count + 1))
elseif redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end

local function zadd(key, list, from, to)
  for i = from, to, ARGS_AT_MOST do
    redis.call('ZADD', key, unpack(list, i, math.min(i + ARGS_AT_MOST - 1, to)))
  end
end

-- Add the time, member pairs list[from .. to] to the sorted set `key`.
local function add(key, list, from, to)
  if (to - from + 1) / 2 <= DIRECT_AT_MOST then
    zadd(key, list, from, to)
    return
  end
  local scratch = KEYS[4]
  redis.call('ZADD', scratch, 0, LONG)
  zadd(scratch, list, from, to)
  redis.call('ZREM', scratch, LONG)
  if redis.call('EXISTS', key) == 1 then
    redis.call('ZUNIONSTORE', key, 2, key, scratch, 'AGGREGATE', 'MAX')
  else
    redis.call('ZUNIONSTORE', key, 1, scratch)
  end
  redis.call('DEL', scratch)
end

-- The actual and goal totals of a bucket's sums field ("points:actual:goal"), or of a member.
local function totals(text)
  local actual, goal = string.match(text, ':(%d+):(%d+)$')
  return tonumber(actual), tonumber(goal)
end

local span = 2 * pairs_count + 2
local first_time, last_time, points, events_kept = ARGV[span], ARGV[span + 1], ARGV[span + 2], ARGV[span + 3]
local buckets = #KEYS - 5
local at = span + 4 + 4 * buckets  -- the first point's time
for k = 1, buckets do
  local key, bucket = KEYS[k + 5], ARGV[span + 4 * k]
  local from = at
  local to = from + 2 * tonumber(ARGV[span + 1 + 4 * k]) - 1
  at = to + 1
  -- Sums stay exact in Lua's numbers: a bucket's are under 3,600 * 2^32, far below 2^53.
  local actual, goal = tonumber(ARGV[span + 2 + 4 * k]), tonumber(ARGV[span + 3 + 4 * k])
  local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if #newest == 0 then
    redis.call('ZADD', KEYS[2], bucket, bucket)
    add(key, ARGV, from, to)
  elseif tonumber(ARGV[to - 1]) > tonumber(newest[2]) then
    local old_actual, old_goal = totals(redis.call('HGET', KEYS[5], bucket))
    actual, goal = actual + old_actual, goal + old_goal
    add(key, ARGV, from, to)  -- the usual case: newer points
  else
    -- Some of these times may hold points: take out every point between the first and the last time
    -- written (one pass), then add the new points and those of the others back.
    local written = {}
    for i = from, to, 2 do written[tonumber(ARGV[i])] = true end
    local old = redis.call('ZRANGEBYSCORE', key, ARGV[to - 1], ARGV[from], 'WITHSCORES')
    local list = {}
    local old_actual, old_goal = totals(redis.call('HGET', KEYS[5], bucket))
    for i = 1, #old, 2 do
      if written[tonumber(old[i + 1])] then
        local replaced_actual, replaced_goal = totals(old[i])
        old_actual, old_goal = old_actual - replaced_actual, old_goal - replaced_goal
      else
        list[#list + 1] = old[i + 1]
        list[#list + 1] = old[i]
      end
    end
    actual, goal = actual + old_actual, goal + old_goal
    for i = from, to do list[#list + 1] = ARGV[i] end
    redis.call('ZREMRANGEBYSCORE', key, ARGV[to - 1], ARGV[from])
    add(key, list, 1, #list)
  end
  redis.call('HSET', KEYS[5], bucket, string.format('%d:%d:%d', redis.call('ZCARD', key), actual, goal))
end
-- Retention: the buckets wholly before the new raw window (newest point - POINTS_RETENTION_S, down to
-- a whole span and hour) are added into their spans, when downsampling, and deleted. The window only
-- moves forward, so each bucket is trimmed once.
local function gcd(a, b) if b == 0 then return a end return gcd(b, a % b) end
local function trim(prefix, spans_key, retention, width)
  width = tonumber(redis.call('HGET', KEYS[1], 'span_s')) or width  -- a factory keeps its first width
  local grain = width > 0 and width / gcd(width, 3600) * 3600 or 3600
  local newest_bucket = redis.call('ZRANGE', KEYS[2], -1, -1)[1]
  local newest = tonumber(redis.call('ZRANGE', prefix .. newest_bucket, -1, -1, 'WITHSCORES')[2])
  local raw_from = math.floor((newest - retention) / grain) * grain
  if raw_from <= (tonumber(redis.call('HGET', KEYS[1], 'raw_from')) or 0) then return end
  local first_kept = string.format('%d', raw_from / 3600)
  local sums, starts = {}, {}  -- by span start: {actual, goal, points}
  local function add(time, actual, goal, points)
    local start = time - time % width
    local sum = sums[start]
    if not sum then sum = {0, 0, 0} sums[start] = sum starts[#starts + 1] = start end
    sum[1], sum[2], sum[3] = sum[1] + actual, sum[2] + goal, sum[3] + points
  end
  for _, bucket in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. first_kept)) do
    if width > 0 and width % 3600 == 0 then
      local points, actual, goal = string.match(redis.call('HGET', KEYS[5], bucket), '^(%d+):(%d+):(%d+)$')
      add(tonumber(bucket) * 3600, tonumber(actual), tonumber(goal), tonumber(points))
    elseif width > 0 then
      for _, member in ipairs(redis.call('ZRANGE', prefix .. bucket, 0, -1)) do
        local time, actual, goal = string.match(member, '^(%d+):(%d+):(%d+)$')
        add(tonumber(time), tonumber(actual), tonumber(goal), 1)
      end
    end
    redis.call('DEL', prefix .. bucket)
    redis.call('HDEL', KEYS[5], bucket)
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. first_kept)
  for _, start in ipairs(starts) do
    local sum = sums[start]
    local old = redis.call('ZRANGEBYSCORE', spans_key, start, start)
    if #old > 0 then
      local actual, goal, points = string.match(old[1], '^%d+:(%d+):(%d+):(%d+)$')
      sum[1], sum[2], sum[3] = sum[1] + tonumber(actual), sum[2] + tonumber(goal), sum[3] + tonumber(points)
      redis.call('ZREM', spans_key, old[1])
    end
    redis.call('ZADD', spans_key, start, string.format('%d:%d:%d:%d', start, sum[1], sum[2], sum[3]))
  end
  redis.call('HSET', KEYS[1], 'raw_from', string.format('%d', raw_from))
  if width > 0 then redis.call('HSET', KEYS[1], 'span_s', width) end
end
if retained and buckets > 0 then
  trim(ARGV[retention_at], ARGV[retention_at + 1], tonumber(ARGV[retention_at + 2]), tonumber(ARGV[retention_at + 3]))
end
-- End of retention.

if buckets == 0 and pairs_count == 0 then
  return tonumber(redis.call('HGET', KEYS[1], 'version'))  -- nothing written: the ETag stays
end
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
if buckets > 0 then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', events_kept, '*',
    'version', version, 'first', first_time, 'last', last_time, 'points', points)
end
return version
