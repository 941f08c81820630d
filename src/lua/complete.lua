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
  redis.call('HSET', jk, 'state', 'done', 'result', ARGV[4], 'finished', now_str())
  ended(id, now)
  redis.call('HDEL', jk, 'token')
  redis.call('ZREM', pfx .. 'leases', id)
  log_attempt(jk, ARGV[7])
  model_outcome(jk, true)
  local bk = pfx .. 'b:' .. h[3]
  -- A pipeline's drafts are not the batch's deliverables: counted apart, so the report's cost
  -- per accepted asset divides by the refined images only.
  local is_draft = job_parent(id)
  redis.call('HINCRBY', bk, is_draft and 'draft_images' or 'images', ARGV[6])
  -- The dedup index (coalesce.lua): these objects are stored.  Each image of the result has
  -- one "key" (no other field is called that), so no need to decode it all.
  for key in string.gmatch(ARGV[4], '"key":"([^"\\]+)"') do
    redis.call('ZADD', pfx .. 'objects', now, key)
  end
  coalesce_release(id, jk)
  emit('job.completed', 'job', id, 'batch', h[3], 'cost_micros', ARGV[5])
  batch_move(h[3], 'running', 'done')
end
local claim = claim_jobs(tonumber(ARGV[10]), ARGV[8], tonumber(ARGV[9]), ARGV[11])
table.insert(claim, 1, status)
return claim
