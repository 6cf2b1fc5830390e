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
-- Returns the factory's new version, or false when it does not exist.

-- A ZADD into a compact (listpack) sorted set walks it for each member, to look for the member and
-- then from the start to the member's place (so newest first costs less): 0.17 s for 3,600 points in
-- time order. Past this many points, they go into the scratch key as a skiplist (O(log n) a point)
-- and one ZUNIONSTORE writes the bucket in a single pass, compact again when it fits.
local DIRECT_AT_MOST = 64
-- Arguments per ZADD: unpack() passes at most about 8,000 values.
local ARGS_AT_MOST = 7000
-- A member longer than zset-max-listpack-value makes a sorted set a skiplist from its first ZADD.
local LONG = string.rep('-', 1024)

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
if buckets == 0 and pairs_count == 0 then
  return tonumber(redis.call('HGET', KEYS[1], 'version'))  -- nothing written: the ETag stays
end
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
if buckets > 0 then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', events_kept, '*',
    'version', version, 'first', first_time, 'last', last_time, 'points', points)
end
return version
