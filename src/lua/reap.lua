-- reap: return jobs whose lease expired (their worker died or hung) to the front of their
-- batch's queue.  The attempt they were on counts; a job whose attempts are used up is
-- dead-lettered instead.
-- ARGV: prefix, limit
-- Returns the number of jobs returned or failed.
local now = now_ms()
local expired = redis.call('ZRANGEBYSCORE', pfx .. 'leases', '-inf', now, 'LIMIT', 0,
  tonumber(ARGV[2]))
local requeued = 0
for _, id in ipairs(expired) do
  redis.call('ZREM', pfx .. 'leases', id)
  local jk = pfx .. 'j:' .. id
  local h = redis.call('HMGET', jk, 'state', 'prio', 'batch', 'attempts', 'max_attempts',
    'worker')
  if h[1] == 'running' then
    local err = cjson.encode({class = 'lease_expired', attempt = tonumber(h[4]),
      message = 'worker ' .. (h[6] or '?') .. ' stopped renewing its lease', time = now})
    log_attempt(jk, err)
    redis.call('HDEL', jk, 'token')
    if tonumber(h[4]) >= tonumber(h[5]) then
      redis.call('HSET', jk, 'state', 'failed', 'error', err, 'finished', now)
      bury(id)
      emit('job.failed', 'job', id, 'batch', h[3], 'error', err)
      batch_move(h[3], 'running', 'failed')
    else
      redis.call('HSET', jk, 'state', 'queued')
      make_ready(id, h[2], h[3], true)
      emit('job.stalled', 'job', id, 'batch', h[3], 'worker', h[6] or '')
      batch_move(h[3], 'running', 'queued')
    end
    requeued = requeued + 1
  end
end
if requeued > 0 then redis.call('PUBLISH', pfx .. 'wake', requeued) end
return requeued
