-- reap: return jobs whose lease expired (their worker died or hung) to their batch's queue.
-- A worker's death is not the job's failure, so the attempt does not count; but a job that
-- was running every time a worker died, MAX_STALLS times, is probably what kills them (a poison
-- pill) and is dead-lettered.  Stalled jobs go to the back of their batch's queue, so the jobs
-- of one dead worker do not all land on the next worker together.
-- ARGV: prefix, limit
-- Returns the number of jobs returned or failed.
local MAX_STALLS = 20
local now = now_ms()
-- Retention: jobs ended and batches finished longer ago than the retention are deleted, with
-- their ids entries (the idempotency index) and dead-letter entries, so memory stays bounded
-- however long the queue runs.  A bounded amount per run; the reaper runs often.
for _, id in ipairs(redis.call('ZRANGEBYSCORE', pfx .. 'ended', '-inf', now - retention_ms(),
  'LIMIT', 0, 1000)) do
  local jk = pfx .. 'j:' .. id
  local idem = redis.call('HGET', jk, 'idem')
  if idem then redis.call('HDEL', pfx .. 'idem', idem) end
  redis.call('HDEL', pfx .. 'ids', id)
  redis.call('DEL', jk, jk .. ':s')
  redis.call('ZREM', pfx .. 'ended', id)
  redis.call('ZREM', pfx .. 'dead', id)
end
-- The dedup index (coalesce.lua) keeps what was stored within the retention.
redis.call('ZREMRANGEBYSCORE', pfx .. 'objects', '-inf', now - retention_ms())
for _, batch in ipairs(redis.call('ZRANGEBYSCORE', pfx .. 'finished', '-inf',
  now - retention_ms(), 'LIMIT', 0, 100)) do
  redis.call('DEL', pfx .. 'b:' .. batch, pfx .. 'b:' .. batch .. ':jobs')
  for _, z in ipairs({'finished', 'batches', 'deadlines', 'gates'}) do
    redis.call('ZREM', pfx .. z, batch)
  end
end
-- Batches whose deadline passed: what has not started ends as expired (claims check this too;
-- the sweep covers batches no worker is looking at, e.g. outside their window).
for _, batch in ipairs(redis.call('ZRANGEBYSCORE', pfx .. 'deadlines', '-inf', now, 'LIMIT', 0,
  100)) do
  expire_batch(batch, now)
end
-- Budget reconciliation of a dead worker's provider calls: a call it reserved and never settled
-- may have been billed, so its reservation becomes the charge (reason 'lost', at the reserved
-- worst case), counted in the job's and batch's cost like every settlement.  Except a call with a poll handle of the same
-- attempt (poll:CALL = "ATTEMPT|..."): its task may still finish, and the worker that takes the
-- job over resumes it and settles it with its real usage.
local function reconcile(id, jk)
  local f = redis.call('HGETALL', jk)
  local polls, lost = {}, {}
  for i = 1, #f, 2 do
    local call = string.match(f[i], '^poll:(%d+)$')
    if call then polls[call] = string.match(f[i + 1], '^([^|]*)|') end
    local ck = string.match(f[i], '^resv:(.+)$')
    if ck then lost[#lost + 1] = {ck, f[i + 1]} end
  end
  for _, r in ipairs(lost) do
    local ck, v = r[1], r[2]
    local att, call = string.match(ck, '^(%d+)%.(%d+)%.')
    if not (call and polls[call] == att) then
      local amount, _, model, route = string.match(v, '^(%d+)|([^|]*)|?([^|]*)|?([^|]*)')
      budget_settle(id, ck, amount, 'lost', model, route, att, call, '', '')
    end
  end
end

-- Jobs cancelled while running: once their lease would have run out, a call their worker
-- never settled (it died) is charged like any lost call.
for _, id in ipairs(redis.call('ZRANGEBYSCORE', pfx .. 'orphans', '-inf', now, 'LIMIT', 0,
  tonumber(ARGV[2]))) do
  redis.call('ZREM', pfx .. 'orphans', id)
  if redis.call('EXISTS', pfx .. 'j:' .. id) == 1 then reconcile(id, pfx .. 'j:' .. id) end
end

local expired = redis.call('ZRANGEBYSCORE', pfx .. 'leases', '-inf', now, 'LIMIT', 0,
  tonumber(ARGV[2]))
local requeued = 0
for _, id in ipairs(expired) do
  redis.call('ZREM', pfx .. 'leases', id)
  local jk = pfx .. 'j:' .. id
  local h = redis.call('HMGET', jk, 'state', 'prio', 'batch', 'attempts', 'max_attempts',
    'worker', 'token')
  if h[1] == 'running' then
    reconcile(id, jk)
    local stalls = redis.call('HINCRBY', jk, 'stalls', 1)
    local err = cjson.encode({class = 'stalled', attempt = tonumber(h[4]), stalls = stalls,
      message = 'worker ' .. (h[6] or '?') .. ' stopped renewing its lease', time = now})
    log_attempt(jk, err)
    redis.call('HDEL', jk, 'token')
    coalesce_release(id, jk)
    redis.call('HINCRBY', jk, 'attempts', -1)
    if stalls >= MAX_STALLS then
      redis.call('HSET', jk, 'state', 'failed', 'error', err, 'finished', now)
      ended(id, now)
      bury(id)
      emit('job.failed', 'job', id, 'batch', h[3], 'error', err)
      batch_move(h[3], 'running', 'failed')
    else
      redis.call('HSET', jk, 'state', 'queued')
      make_ready(id, h[2], h[3], false)
      emit('job.stalled', 'job', id, 'batch', h[3], 'worker', h[6] or '')
      batch_move(h[3], 'running', 'queued')
    end
    requeued = requeued + 1
  end
end
if requeued > 0 then redis.call('PUBLISH', pfx .. 'wake', requeued) end
return requeued
