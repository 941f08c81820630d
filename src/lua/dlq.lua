-- dlq: replay or purge dead-lettered jobs.
-- ARGV: prefix, action ('retry' | 'purge'), scope ('ids' | 'batch' | 'all'), then job ids
--       (scope ids) or a batch id (scope batch)
-- Retry puts each job back on its batch's queue with fresh attempts; purge only forgets the
-- dead-letter entry (the job record stays, failed, until its retention ends).
-- Returns the number of jobs affected.
local action, scope = ARGV[2], ARGV[3]
local ids
if scope == 'ids' then
  ids = {}
  for i = 4, #ARGV do ids[#ids + 1] = ARGV[i] end
else
  ids = redis.call('ZRANGE', pfx .. 'dead', 0, -1)
end
local n = 0
for _, id in ipairs(ids) do
  if redis.call('ZSCORE', pfx .. 'dead', id) then
    local jk = pfx .. 'j:' .. id
    local h = redis.call('HMGET', jk, 'state', 'prio', 'batch')
    if scope ~= 'batch' or h[3] == ARGV[4] then
      redis.call('ZREM', pfx .. 'dead', id)
      if action == 'retry' and h[1] == 'failed' then
        redis.call('HSET', jk, 'state', 'queued', 'attempts', 0, 'stalls', 0)
        redis.call('HDEL', jk, 'finished', 'error', 'rl_waits', 'rl_wait_ms') -- (fail.lua)
        redis.call('HDEL', pfx .. 'b:' .. h[3], 'finished')
        redis.call('ZREM', pfx .. 'ended', id)
        redis.call('ZREM', pfx .. 'finished', h[3])
        make_ready(id, h[2], h[3], false)
        batch_move(h[3], 'failed', 'queued')
        emit('job.requeued', 'job', id, 'batch', h[3])
      end
      n = n + 1
    end
  end
end
if n > 0 and action == 'retry' then redis.call('PUBLISH', pfx .. 'wake', n) end
return n
