-- rate: take room for n images under a provider account's images-per-window limit, shared by
-- every worker on every host (a sliding window log: one entry per image, scored by time).
-- ARGV: prefix, provider, limit, window ms, n, entry id prefix
-- Returns 0 when the images may be requested now (their entries are recorded), else the ms to
-- wait before room opens, or -1 if n alone is over the limit.
local key = pfx .. 'rl:' .. ARGV[2]
local limit, window, n = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if n > limit then return -1 end
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local used = redis.call('ZCARD', key)
if used + n <= limit then
  for i = 1, n do redis.call('ZADD', key, now, ARGV[6] .. ':' .. i) end
  redis.call('PEXPIRE', key, window * 2)
  return 0
end
-- Room opens when the oldest entries that stand in the way leave the window.
local oldest = redis.call('ZRANGE', key, used + n - limit - 1, used + n - limit - 1, 'WITHSCORES')
local wait = tonumber(oldest[2]) + window - now
if wait < 1 then wait = 1 end
return wait
