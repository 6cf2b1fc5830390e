#!lua flags=allow-oom
-- GCRA (generic cell rate algorithm): one request costs `interval` ms of a budget that refills
-- continuously; up to `burst` requests may come at once. The key holds the theoretical arrival
-- time (TAT) in ms and expires when the budget is full again, so idle clients cost nothing.
-- KEYS[1] the client's limiter key; ARGV[1] interval in ms (1000 / requests per second), ARGV[2] burst
-- Returns {allowed (1 or 0), ms until a request would be allowed, requests left in the burst}.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or now), now)
local allowed_from = tat + interval - burst * interval
if allowed_from > now then
  return {0, math.ceil(allowed_from - now), 0}
end
tat = tat + interval
redis.call('SET', KEYS[1], tat, 'PX', math.ceil(tat - now))
return {1, 0, math.floor((now - (tat - burst * interval)) / interval)}
