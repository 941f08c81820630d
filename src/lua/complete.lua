-- complete: running jobs are done, each if the caller still holds its lease; then, in the same
-- round trip, lease the worker its next jobs.  A worker sends every job that finished in one
-- turn of its loop in one call: what the jobs share (leases, the ended set, counters of a
-- batch and of the queue, the model's outcomes) is written once per call.
-- ARGV: prefix, worker id, lease ms, next count, token prefix, then per job 7 values: job id,
--       token, result JSON, cost micros of this attempt (informational: the job's and batch's
--       cost come from the settlement of each provider call), images stored, attempt log
--       line, model that served (its successes are credited to it; '' = none)
-- Returns {per job 1 recorded | 0 lease lost, then the claim result of lib.lua's claim_jobs}.
local status = {}
local ended_args, lease_ids = {}, {}
local per_batch, batches = {}, {}
local models = {}
for i = 6, #ARGV - 6, 7 do
  local id, tok, result = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local jk = pfx .. 'j:' .. id
  local h = redis.call('HMGET', jk, 'state', 'token', 'batch', 'parent', 'coalesce', 'log',
    'webhook')
  local ok = h[1] == 'running' and h[2] == tok
  status[#status + 1] = ok and 1 or 0
  if ok then
    local now = now_ms()
    local log = (h[6] or '') .. ARGV[i + 5] .. '\n'
    if #log > 8192 then log = string.sub(log, -8192) end
    redis.call('HSET', jk, 'state', 'done', 'result', result, 'finished', now_str(), 'log', log)
    ended_args[#ended_args + 1] = now_str()
    ended_args[#ended_args + 1] = id
    lease_ids[#lease_ids + 1] = id
    PARENT[id] = h[4] or false
    JOB_HOOK[id] = h[7] or false
    if h[4] then pipeline_child_ended(h[4], id, now) end
    local model = ARGV[i + 6]
    if model ~= '' then models[model] = (models[model] or 0) + 1 end
    local batch = h[3]
    local b = per_batch[batch]
    if not b then
      b = {done = 0, images = 0, draft_images = 0}
      per_batch[batch] = b
      batches[#batches + 1] = batch
    end
    b.done = b.done + 1
    -- A pipeline's drafts are not the batch's deliverables: counted apart, so the report's
    -- cost per accepted asset divides by the refined images only.
    local f = h[4] and 'draft_images' or 'images'
    b[f] = b[f] + (tonumber(ARGV[i + 4]) or 0)
    -- The dedup index (coalesce.lua): these objects are stored.  Each image of the result has
    -- one "key" (no other field is called that), so no need to decode it all.
    for key in string.gmatch(result, '"key":"([^"\\]+)"') do
      redis.call('ZADD', pfx .. 'objects', now, key)
    end
    if h[5] then coalesce_release(id, jk) end
    emit('job.completed', 'job', id, 'batch', batch, 'cost_micros', ARGV[i + 3])
  end
end
if #lease_ids > 0 then
  redis.call('ZADD', pfx .. 'ended', unpack(ended_args))
  redis.call('ZREM', pfx .. 'leases', unpack(lease_ids))
end
for model, n in pairs(models) do
  redis.call('HINCRBY', pfx .. 'models', 'ok:' .. model, tostring(n))
end
for _, batch in ipairs(batches) do
  local b = per_batch[batch]
  local bk = pfx .. 'b:' .. batch
  if b.images > 0 then redis.call('HINCRBY', bk, 'images', tostring(b.images)) end
  if b.draft_images > 0 then
    redis.call('HINCRBY', bk, 'draft_images', tostring(b.draft_images))
  end
  batch_move(batch, 'running', 'done', b.done)
end
local claim = claim_jobs(tonumber(ARGV[4]), ARGV[2], tonumber(ARGV[3]), ARGV[5])
for i = #status, 1, -1 do table.insert(claim, 1, status[i]) end
return claim
