-- fail: an attempt of a running job failed; schedule a retry or end the job in the dead-letter
-- set; then lease the worker its next jobs in the same round trip.
-- ARGV: prefix, job id, token, error JSON (its "model": the model called), retry delay ms (-1 = do not retry), cost micros
--       charged for the failed attempt (informational: costs come from the settlement of each
--       provider call), 1 if the attempt counts against max attempts,
--       worker id, lease ms, next count, token prefix
-- Returns {1 retry scheduled | 2 failed for good | 0 lease lost, then the claim result}.
local id, tok = ARGV[2], ARGV[3]
local jk = pfx .. 'j:' .. id
local h = redis.call('HMGET', jk, 'state', 'token', 'batch', 'attempts', 'max_attempts')
local status = 0
if h[1] == 'running' and h[2] == tok then
  local now = now_ms()
  local delay = tonumber(ARGV[5])
  log_attempt(jk, ARGV[4])
  -- A rate limit says nothing about the model; anything else that failed counts against the
  -- model that was called (the error's "model": a fallback's, once the job moved).
  local okd, err = pcall(cjson.decode, ARGV[4])
  local cls = okd and type(err) == 'table' and err.class or ''
  if cls ~= 'rate_limit' and cls ~= 'none' and cls ~= 'storage' then
    model_outcome(jk, false, okd and type(err) == 'table' and type(err.model) == 'string' and
      err.model or nil)
  end
  redis.call('HSET', jk, 'error', ARGV[4])
  redis.call('HDEL', jk, 'token')
  coalesce_release(id, jk)
  redis.call('ZREM', pfx .. 'leases', id)
  local attempts = tonumber(h[4])
  if ARGV[7] == '0' then
    attempts = redis.call('HINCRBY', jk, 'attempts', -1)
  end
  -- Seed 002's attempt cap per asset: a job that would run again after max_generations paid
  -- generations goes to human review instead of spending more.
  local cap = 0
  if delay >= 0 then
    local oks, spec = pcall(cjson.decode, job_spec(jk) or '')
    if oks and type(spec) == 'table' then cap = tonumber(spec.max_generations) or 0 end
  end
  local gens = tonumber(redis.call('HGET', jk, 'generations') or '0') or 0
  if delay >= 0 and cap > 0 and gens >= cap then
    redis.call('HSET', jk, 'state', 'review', 'finished', now)
    ended(id, now)
    emit('job.review', 'job', id, 'batch', h[3], 'generations', gens, 'error', ARGV[4])
    batch_move(h[3], 'running', 'review')
    status = 2
  elseif delay >= 0 and attempts < tonumber(h[5]) then
    redis.call('HSET', jk, 'state', 'retrying')
    redis.call('ZADD', pfx .. 'delayed', now + delay, id)
    emit('job.retrying', 'job', id, 'batch', h[3], 'in_ms', delay)
    -- Idle workers learn the new due time by claiming once (this worker may die first).
    redis.call('PUBLISH', pfx .. 'wake', 0)
    batch_move(h[3], 'running', 'retrying')
    status = 1
  else
    redis.call('HSET', jk, 'state', 'failed', 'finished', now)
    ended(id, now)
    bury(id)
    emit('job.failed', 'job', id, 'batch', h[3], 'error', ARGV[4])
    batch_move(h[3], 'running', 'failed')
    status = 2
  end
end
local claim = claim_jobs(tonumber(ARGV[10]), ARGV[8], tonumber(ARGV[9]), ARGV[11])
table.insert(claim, 1, status)
return claim
