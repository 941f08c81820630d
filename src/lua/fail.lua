-- fail: an attempt of a running job failed; schedule a retry or end the job in the dead-letter
-- set; then lease the worker its next jobs in the same round trip.
-- ARGV: prefix, job id, token, error JSON (the attempt log entry if the job is retried; its
--       "model": the model called), retry delay ms (-1 = do not retry), cost micros
--       charged for the failed attempt (informational: costs come from the settlement of each
--       provider call), 1 if the attempt counts against max attempts,
--       worker id, lease ms, next count, token prefix,
--       then (optional, from workers that know them):
--   12  the error JSON if the job ends here instead (it says "retry": false; this script adds
--       "giving_up": why, when it is this script that decides); '' = ARGV[4]
--   13  a provider's rate limit: the most rate-limit waits a job may make (it does not use an
--       attempt, so these caps are what ends it); '' = not a rate-limit wait
--   14  the most ms a job may wait on rate limits in all
--   15  '' when the delay is the provider's hint; else the delay is a backoff (no hint),
--       doubled for every earlier rate-limit wait of the job up to ARGV[15] ms
-- The job hash counts its rate-limit waits (rl_waits) and the ms they asked for (rl_wait_ms).
-- A job that would go over either cap fails for good, class rate_limit, into the dead letters.
-- Returns {1 retry scheduled | 2 failed for good | 0 lease lost, then the claim result}.
local id, tok = ARGV[2], ARGV[3]
local jk = pfx .. 'j:' .. id
local h = redis.call('HMGET', jk, 'state', 'token', 'batch', 'attempts', 'max_attempts')
local status = 0
if h[1] == 'running' and h[2] == tok then
  local now = now_ms()
  local delay = tonumber(ARGV[5])
  local final = (ARGV[12] and ARGV[12] ~= '') and ARGV[12] or ARGV[4]
  -- Why the job ends although its error was retryable ('' = it is retried, or the worker
  -- said so already).
  local why = ''
  local rl_max = tonumber(ARGV[13] or '')
  if delay >= 0 and rl_max then
    local waits = tonumber(redis.call('HGET', jk, 'rl_waits') or '0') or 0
    local waited = tonumber(redis.call('HGET', jk, 'rl_wait_ms') or '0') or 0
    local grow = tonumber(ARGV[15] or '')
    if grow then delay = math.min(delay * 2 ^ math.min(waits, 30), math.max(grow, delay)) end
    delay = math.floor(delay)
    local rl_max_ms = tonumber(ARGV[14] or '') or 0
    if waits >= rl_max then
      why = 'rate-limited ' .. (waits + 1) .. ' times: at most ' .. rl_max .. ' rate-limit waits'
    elseif rl_max_ms > 0 and waited + delay > rl_max_ms then
      why = 'rate-limit waits would reach ' .. math.ceil((waited + delay) / 1000) ..
        ' s: at most ' .. math.floor(rl_max_ms / 1000) .. ' s in all'
    else
      redis.call('HSET', jk, 'rl_waits', waits + 1, 'rl_wait_ms', waited + delay)
    end
  end
  -- The entry recorded: the retry's, or the end's.
  local function entry(ends)
    if not ends then return ARGV[4] end
    if why ~= '' and string.sub(final, -1) == '}' then
      return string.sub(final, 1, -2) .. ',"giving_up":' .. cjson.encode(why) .. '}'
    end
    return final
  end
  -- A rate limit says nothing about the model; anything else that failed counts against the
  -- model that was called (the error's "model": a fallback's, once the job moved).
  local okd, err = pcall(cjson.decode, ARGV[4])
  local cls = okd and type(err) == 'table' and err.class or ''
  if cls ~= 'rate_limit' and cls ~= 'none' and cls ~= 'storage' then
    model_outcome(jk, false, okd and type(err) == 'table' and type(err.model) == 'string' and
      err.model or nil)
  end
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
  if why == '' and delay >= 0 and cap > 0 and gens >= cap then
    local e = entry(true)
    log_attempt(jk, e)
    redis.call('HSET', jk, 'error', e)
    redis.call('HSET', jk, 'state', 'review', 'finished', now)
    ended(id, now)
    emit('job.review', 'job', id, 'batch', h[3], 'generations', gens, 'error', e)
    batch_move(h[3], 'running', 'review')
    status = 2
  elseif why == '' and delay >= 0 and attempts < tonumber(h[5]) then
    log_attempt(jk, ARGV[4])
    redis.call('HSET', jk, 'error', ARGV[4])
    redis.call('HSET', jk, 'state', 'retrying')
    redis.call('ZADD', pfx .. 'delayed', now + delay, id)
    emit('job.retrying', 'job', id, 'batch', h[3], 'in_ms', delay)
    -- Idle workers learn the new due time by claiming once (this worker may die first).
    redis.call('PUBLISH', pfx .. 'wake', 0)
    batch_move(h[3], 'running', 'retrying')
    status = 1
  else
    if why == '' and delay >= 0 then why = attempts .. ' of ' .. h[5] .. ' attempts used' end
    local e = entry(true)
    log_attempt(jk, e)
    redis.call('HSET', jk, 'error', e)
    redis.call('HSET', jk, 'state', 'failed', 'finished', now)
    ended(id, now)
    bury(id)
    emit('job.failed', 'job', id, 'batch', h[3], 'error', e)
    batch_move(h[3], 'running', 'failed')
    status = 2
  end
end
local claim = claim_jobs(tonumber(ARGV[10]), ARGV[8], tonumber(ARGV[9]), ARGV[11])
table.insert(claim, 1, status)
return claim
