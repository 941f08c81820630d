-- reap: return jobs whose lease expired (their worker died or hung) to the queue.
-- The attempt they were on counts; a job whose attempts are used up fails instead.
-- KEYS: ready, leases
-- ARGV: prefix, limit
-- Returns the number of jobs returned or failed.
local now = now_ms()
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local requeued = 0
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[2], id)
  local jk = pfx .. 'j:' .. id
  local h = redis.call('HMGET', jk, 'state', 'score', 'batch', 'attempts', 'max_attempts',
    'worker')
  if h[1] == 'running' then
    local err = cjson.encode({class = 'lease_expired', attempt = tonumber(h[4]),
      message = 'worker ' .. (h[6] or '?') .. ' stopped renewing its lease', time = now})
    log_attempt(jk, err)
    redis.call('HDEL', jk, 'token')
    if tonumber(h[4]) >= tonumber(h[5]) then
      redis.call('HSET', jk, 'state', 'failed', 'error', err, 'finished', now)
      batch_move(h[3], 'running', 'failed')
    else
      redis.call('HSET', jk, 'state', 'queued')
      redis.call('ZADD', KEYS[1], h[2], id)
      batch_move(h[3], 'running', 'queued')
    end
    requeued = requeued + 1
  end
end
if requeued > 0 then redis.call('PUBLISH', pfx .. 'wake', requeued) end
return requeued
