-- pause: stop or restart dispatch of a whole queue or of one batch, for every worker at once.
-- Running jobs finish; nothing new is claimed from what is paused.
-- ARGV: prefix, scope ('queue' | 'batch'), action ('pause' | 'resume'), batch id
-- Returns 1, or 0 for a batch that does not exist.
--   or: prefix, 'job', action ('pause' | 'resume' | 'promote'), job id
--   or: prefix, 'packed', 'pause', job id, priority, the job's exact entry in its ready list
-- One job: a queued, scheduled or retrying job is paused (state 'paused', counted as
-- 'paused_jobs' in its batch and the queue: the batch field 'paused' is the batch's own pause);
-- it is dispatched again only when resumed, back in the state it left (a queued job at the
-- front of its ready list; a scheduled or retrying one due when it was due).  Promote makes a
-- scheduled or retrying job ready now.  Returns {1, state before}, {0, ''} for no such job,
-- {-1, state} when its state does not allow the action, or {-2, ''} for a packed job (lib.lua)
-- to pause: the caller finds its entry and calls again with scope 'packed'.
local scope, action = ARGV[2], ARGV[3]
if scope == 'job' or scope == 'packed' then
  local id = ARGV[4]
  local jk = pfx .. 'j:' .. id
  local batch = redis.call('HGET', pfx .. 'ids', id)
  if scope == 'packed' and batch and redis.call('EXISTS', jk) == 0 then
    local prio, e = ARGV[5], ARGV[6]
    local pid, created, team, maxa, spec = unpack_job(e)
    local list = pfx .. 'q:' .. prio .. ':' .. batch
    if pid == id and redis.call('LREM', list, 1, e) == 1 then
      if redis.call('LLEN', list) == 0 then redis.call('LREM', pfx .. 'rr:' .. prio, 0, batch) end
      unpack_to_keys(id, created, team, maxa, spec, prio, batch, 'paused', 'attempts', '0',
        'paused_from', 'queued')
      batch_move(batch, 'queued', 'paused_jobs')
      emit('job.paused', 'job', id, 'batch', batch)
      return {1, 'queued'}
    end
  end
  if redis.call('EXISTS', jk) == 0 then
    if not batch then return {0, ''} end
    -- A packed job is queued and has never run.
    if action == 'pause' then return {-2, ''} end
    return {-1, 'queued'}
  end
  local h = redis.call('HMGET', jk, 'state', 'prio', 'batch', 'paused_from', 'paused_due')
  local st, prio = h[1], h[2]
  batch = h[3]
  if action == 'pause' then
    if st == 'queued' then
      local list = pfx .. 'q:' .. prio .. ':' .. batch
      redis.call('LREM', list, 1, id)
      if redis.call('LLEN', list) == 0 then redis.call('LREM', pfx .. 'rr:' .. prio, 0, batch) end
      redis.call('HSET', jk, 'state', 'paused', 'paused_from', st)
    elseif st == 'scheduled' or st == 'retrying' then
      local due = redis.call('ZSCORE', pfx .. 'delayed', id) or tostring(now_ms())
      redis.call('ZREM', pfx .. 'delayed', id)
      redis.call('HSET', jk, 'state', 'paused', 'paused_from', st, 'paused_due', due)
    else
      return {-1, st or ''}
    end
    batch_move(batch, st, 'paused_jobs')
    emit('job.paused', 'job', id, 'batch', batch)
    return {1, st}
  elseif action == 'resume' then
    if st ~= 'paused' then return {-1, st or ''} end
    local from = h[4] or 'queued'
    redis.call('HDEL', jk, 'paused_from', 'paused_due')
    redis.call('HSET', jk, 'state', from)
    if from == 'queued' then
      make_ready(id, prio, batch, true)
    else
      redis.call('ZADD', pfx .. 'delayed', h[5] or now_ms(), id)
    end
    batch_move(batch, 'paused_jobs', from)
    emit('job.resumed', 'job', id, 'batch', batch)
    redis.call('PUBLISH', pfx .. 'wake', 1)
    return {1, st}
  end
  if st ~= 'scheduled' and st ~= 'retrying' then return {-1, st or ''} end
  redis.call('ZREM', pfx .. 'delayed', id)
  redis.call('HSET', jk, 'state', 'queued')
  make_ready(id, prio, batch, false)
  batch_move(batch, st, 'queued')
  emit('job.promoted', 'job', id, 'batch', batch, 'from', st)
  redis.call('PUBLISH', pfx .. 'wake', 1)
  return {1, st}
end
if scope == 'queue' then
  if action == 'pause' then
    redis.call('SET', pfx .. 'paused', now_ms())
  else
    redis.call('DEL', pfx .. 'paused')
    redis.call('PUBLISH', pfx .. 'wake', 1)
  end
  emit('queue.' .. action .. 'd')
  return 1
end
local batch = ARGV[4]
local bk = pfx .. 'b:' .. batch
if redis.call('EXISTS', bk) == 0 then return 0 end
for prio = 0, 2 do
  local ring = pfx .. 'rr:' .. prio
  redis.call('LREM', ring, 0, batch)
  if action == 'resume' and redis.call('LLEN', pfx .. 'q:' .. prio .. ':' .. batch) > 0 then
    redis.call('RPUSH', ring, batch)
  end
end
if action == 'pause' then
  redis.call('HSET', bk, 'paused', now_ms())
else
  redis.call('HDEL', bk, 'paused')
  redis.call('PUBLISH', pfx .. 'wake', 1)
end
emit('batch.' .. action .. 'd', 'batch', batch)
return 1
