-- cancel: end jobs that have not finished.  Queued and retrying jobs are removed from the
-- queue; a running job loses its lease at once, so its worker drops it at the next lease
-- renewal and its late result is refused (nothing is recorded or charged twice).
-- ARGV: prefix, scope ('job' | 'batch'), job or batch id
-- Returns the number of jobs cancelled.
local now = now_ms()

local function cancel_job(id)
  local jk = pfx .. 'j:' .. id
  local h = redis.call('HMGET', jk, 'state', 'prio', 'batch')
  local st = h[1]
  if st == 'queued' then
    local list = pfx .. 'q:' .. h[2] .. ':' .. h[3]
    redis.call('LREM', list, 1, id)
    if redis.call('LLEN', list) == 0 then redis.call('LREM', pfx .. 'rr:' .. h[2], 0, h[3]) end
  elseif st == 'retrying' or st == 'scheduled' then
    redis.call('ZREM', pfx .. 'delayed', id)
  elseif st == 'running' then
    redis.call('ZREM', pfx .. 'leases', id)
    redis.call('HDEL', jk, 'token')
  else
    return 0
  end
  redis.call('HSET', jk, 'state', 'canceled', 'finished', now)
  ended(id, now)
  emit('job.canceled', 'job', id, 'batch', h[3])
  batch_move(h[3], st, 'canceled')
  return 1
end

if ARGV[2] == 'job' then return cancel_job(ARGV[3]) end

local batch = ARGV[3]
local bk = pfx .. 'b:' .. batch
if redis.call('EXISTS', bk) == 0 then return -1 end
local n = end_ready(batch, 'canceled', now)
-- Running and retrying jobs, one by one.
for _, id in ipairs(redis.call('LRANGE', bk .. ':jobs', 0, -1)) do
  local st = redis.call('HGET', pfx .. 'j:' .. id, 'state')
  if st == 'running' or st == 'retrying' or st == 'scheduled' then n = n + cancel_job(id) end
end
emit('batch.canceled', 'batch', batch, 'jobs', n)
return n
