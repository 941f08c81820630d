-- cancel: end jobs that have not finished.  Queued, scheduled, retrying and blocked_budget jobs
-- are removed from the queue; a running job loses its lease at once, so its worker drops it at
-- the next lease renewal and its late result is refused (nothing is recorded or charged twice).
-- ARGV: prefix, scope ('job' | 'batch'), job or batch id
--       or: prefix, 'packed', job id, priority, batch, the job's entry in its ready list
-- Returns the number of jobs cancelled; for scope 'job', -2 if the job is packed (lib.lua):
-- the caller finds its entry in its batch's lists and cancels that (imgq_queue_cancel).
local now = now_ms()

-- Budget reservations (resv:CALLKEY) left on a job that no worker will settle are charged
-- like any call lost with its worker: reason 'lost', at the reserved worst case (the provider
-- may have billed it).  A job that is not running normally holds none: every call is settled
-- before its attempt ends, a worker that blocks on a budget releases what it reserved, and the
-- reaper charges a dead worker's calls.  The exception is a job the reaper put back in the
-- queue with an asynchronous task of that attempt still open (poll:CALL names the task's call
-- key; its reservation waits for the worker that takes the job over to poll it): cancelled,
-- nobody polls it.  polled_only: just the reservations of such tasks.
local function settle_orphans(id, jk, polled_only)
  local f = redis.call('HGETALL', jk)
  local polled, resv = {}, {}
  for i = 1, #f, 2 do
    if string.match(f[i], '^poll:%d+$') then
      local ck = string.match(f[i + 1], '^[^|]*|[^|]*|([^|]*)|')
      if ck then polled[ck] = true end
    end
    local ck = string.match(f[i], '^resv:(.+)$')
    if ck then resv[#resv + 1] = {ck, f[i + 1]} end
  end
  for _, r in ipairs(resv) do
    local ck = r[1]
    if not polled_only or polled[ck] then
      local amount, _, model, route = string.match(r[2], '^(%d+)|([^|]*)|?([^|]*)|?([^|]*)')
      local att, call = string.match(ck, '^(%d+)%.(%d+)%.')
      budget_settle(id, ck, amount, 'lost', model, route, att, call, '', '')
    end
  end
end

local cancel_job
cancel_job = function(id)
  local jk = pfx .. 'j:' .. id
  local h = redis.call('HMGET', jk, 'state', 'prio', 'batch')
  local st = h[1]
  if st == 'queued' then
    local list = pfx .. 'q:' .. h[2] .. ':' .. h[3]
    redis.call('LREM', list, 1, id)
    if redis.call('LLEN', list) == 0 then redis.call('LREM', pfx .. 'rr:' .. h[2], 0, h[3]) end
  elseif st == 'retrying' or st == 'scheduled' or st == 'blocked_budget' or st == 'coalesced' then
    redis.call('ZREM', pfx .. 'delayed', id)
    redis.call('ZREM', pfx .. 'blocked', id)
    redis.call('HDEL', jk, 'blocked')
  elseif st == 'running' then
    -- Reservations of calls in flight stay: the worker settles every call it sent when the
    -- call ends (a settlement needs no lease), so releasing them here would free money such a
    -- call may still spend.  Two kinds would stay reserved for good, and are charged now as
    -- the reaper charges a dead worker's calls: those of an asynchronous task (the worker
    -- stops polling once its lease is gone and leaves them to a worker taking the job over,
    -- and there will be none; a poll already in flight that finds the task done is then
    -- refused: the call is charged its worst case, never twice), and all of them when the
    -- lease has already run out (the worker is gone, and the reaper, which charges only jobs
    -- still running in the lease set, will not come by).
    local deadline = tonumber(redis.call('ZSCORE', pfx .. 'leases', id))
    settle_orphans(id, jk, not (deadline and deadline <= now))
    redis.call('ZREM', pfx .. 'leases', id)
    -- A worker that died with the job but whose lease had not run out yet: when it does, the
    -- reaper charges whatever the job still holds reserved (P:{Q}:orphans).
    if deadline and deadline > now then redis.call('ZADD', pfx .. 'orphans', deadline, id) end
    redis.call('HDEL', jk, 'token')
    coalesce_release(id, jk)
  elseif st ~= 'drafting' and st ~= 'awaiting_selection' and st ~= 'paused' then
    -- (a pipeline job parked between stages holds nothing: it just ends; its draft job
    -- follows it below)
    return 0
  end
  if st ~= 'running' and (tonumber(redis.call('HGET', jk, 'stalls')) or 0) > 0 then
    settle_orphans(id, jk, false) -- only a job a worker died with can hold one
  end
  redis.call('HSET', jk, 'state', 'canceled', 'finished', now)
  ended(id, now)
  emit('job.canceled', 'job', id, 'batch', h[3])
  -- (a paused job is counted as 'paused_jobs': the batch's 'paused' is its own pause)
  batch_move(h[3], st == 'paused' and 'paused_jobs' or st, 'canceled')
  local child = st == 'drafting' and redis.call('HGET', jk, 'child')
  if child then return 1 + cancel_job(child) end
  return 1
end

if ARGV[2] == 'job' then
  local id = ARGV[3]
  if redis.call('EXISTS', pfx .. 'j:' .. id) == 0 and redis.call('HEXISTS', pfx .. 'ids', id) == 1
  then
    return -2
  end
  return cancel_job(id)
end

if ARGV[2] == 'packed' then
  local id, prio, batch, e = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
  local list = pfx .. 'q:' .. prio .. ':' .. batch
  local pid, created, team, maxa, spec = unpack_job(e)
  if pid ~= id or redis.call('LREM', list, 1, e) == 0 then
    -- Claimed (or ended) since the caller read the entry: the job has its keys now.
    return cancel_job(id)
  end
  if redis.call('LLEN', list) == 0 then redis.call('LREM', pfx .. 'rr:' .. prio, 0, batch) end
  unpack_to_keys(id, created, team, maxa, spec, prio, batch, 'canceled', 'attempts', '0',
    'finished', now)
  ended(id, now)
  emit('job.canceled', 'job', id, 'batch', batch)
  batch_move(batch, 'queued', 'canceled')
  return 1
end

local batch = ARGV[3]
local bk = pfx .. 'b:' .. batch
if redis.call('EXISTS', bk) == 0 then return -1 end
-- Ready jobs end together (end_ready); the few a dead worker left reservations on first.
for prio = 0, 2 do
  for _, id in ipairs(redis.call('LRANGE', pfx .. 'q:' .. prio .. ':' .. batch, 0, -1)) do
    local jk = pfx .. 'j:' .. id
    if not unpack_job(id) and (tonumber(redis.call('HGET', jk, 'stalls')) or 0) > 0 then
      settle_orphans(id, jk, false)
    end
  end
end
local n = end_ready(batch, 'canceled', now)
-- Running, retrying, scheduled and blocked jobs, one by one.
for _, id in ipairs(redis.call('LRANGE', bk .. ':jobs', 0, -1)) do
  local st = redis.call('HGET', pfx .. 'j:' .. id, 'state')
  if st == 'running' or st == 'retrying' or st == 'scheduled' or st == 'blocked_budget' or
      st == 'coalesced' or st == 'drafting' or st == 'awaiting_selection' or st == 'paused' then
    n = n + cancel_job(id)
  end
end
emit('batch.canceled', 'batch', batch, 'jobs', n)
return n
