-- complete: a running job is done, if the caller still holds its lease; then, in the same
-- round trip, lease the worker its next jobs.
-- ARGV: prefix, job id, token, result JSON, cost micros of this attempt (informational: the
--       job's and batch's cost come from the settlement of each provider call), images stored,
--       attempt log line, worker id, lease ms, next count, token prefix
-- Returns {1 recorded | 0 lease lost, then the claim result of lib.lua's claim_jobs}.
local id, tok = ARGV[2], ARGV[3]
local jk = pfx .. 'j:' .. id
local h = redis.call('HMGET', jk, 'state', 'token', 'batch')
local status = 0
if h[1] == 'running' and h[2] == tok then
  status = 1
  local now = now_ms()
  redis.call('HSET', jk, 'state', 'done', 'result', ARGV[4], 'finished', now)
  ended(id, now)
  redis.call('HDEL', jk, 'token')
  redis.call('ZREM', pfx .. 'leases', id)
  log_attempt(jk, ARGV[7])
  model_outcome(jk, true)
  local bk = pfx .. 'b:' .. h[3]
  redis.call('HINCRBY', bk, 'images', ARGV[6])
  emit('job.completed', 'job', id, 'batch', h[3], 'cost_micros', ARGV[5])
  batch_move(h[3], 'running', 'done')
end
local claim = claim_jobs(tonumber(ARGV[10]), ARGV[8], tonumber(ARGV[9]), ARGV[11])
table.insert(claim, 1, status)
return claim
