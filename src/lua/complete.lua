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
  -- A pipeline's drafts are not the batch's deliverables: counted apart, so the report's cost
  -- per accepted asset divides by the refined images only.
  local is_draft = redis.call('HEXISTS', jk, 'parent') == 1
  redis.call('HINCRBY', bk, is_draft and 'draft_images' or 'images', ARGV[6])
  -- The dedup index (coalesce.lua): these objects are stored.
  if string.find(ARGV[4], '"key"', 1, true) then
    local okr, res = pcall(cjson.decode, ARGV[4])
    if okr and type(res) == 'table' and type(res.images) == 'table' then
      for _, im in ipairs(res.images) do
        if type(im) == 'table' and type(im.key) == 'string' then
          redis.call('ZADD', pfx .. 'objects', now, im.key)
        end
      end
    end
  end
  coalesce_release(id, jk)
  emit('job.completed', 'job', id, 'batch', h[3], 'cost_micros', ARGV[5])
  batch_move(h[3], 'running', 'done')
end
local claim = claim_jobs(tonumber(ARGV[10]), ARGV[8], tonumber(ARGV[9]), ARGV[11])
table.insert(claim, 1, status)
return claim
