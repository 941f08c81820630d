-- submit: enqueue jobs, skipping any whose idempotency key is known.
-- ARGV: prefix, batch id, count, not-before ms (0 = none), deadline ms (0 = none), dispatch
--       windows ("" = always; see window_open), then per job: id (derived from the idempotency
--       key: imgq_job_id_for), idempotency key, priority, team, spec, max attempts
--       After the jobs, optional batch options as name, value pairs: on_budget_exhausted
--       (wait | fail: what a job does when a hard budget cap stops it; default wait),
--       webhook (URL that gets the batch's events and those of its jobs without their own),
--       silent (1: no batch.submitted for this call: one submission sent in several calls),
--       submitted ("CREATED,EXISTING": the submission sent in silent calls is over; its one
--       batch.submitted event, with its totals, unless it created nothing).
-- Returns per job: the job id (new or existing) and 1 if it was created, 0 if it existed.
local now = now_ms()
local batch = ARGV[2]
local n = tonumber(ARGV[3])
local not_before, deadline, windows = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local bk = pfx .. 'b:' .. batch
-- The schedule belongs to the batch; the latest submission into it sets it.
if deadline > 0 then
  redis.call('HSET', bk, 'deadline', deadline)
  redis.call('ZADD', pfx .. 'deadlines', deadline, batch)
end
if windows ~= '' then redis.call('HSET', bk, 'windows', windows) end
local silent, submitted = false, nil
for i = 7 + n * 6, #ARGV - 1, 2 do
  if ARGV[i] == 'silent' and ARGV[i + 1] == '1' then
    silent = true
  elseif ARGV[i] == 'submitted' and string.match(ARGV[i + 1], '^%d+,%d+$') then
    submitted = ARGV[i + 1]
  elseif ARGV[i] == 'on_budget_exhausted' and (ARGV[i + 1] == 'wait' or ARGV[i + 1] == 'fail') then
    redis.call('HSET', bk, 'on_budget_exhausted', ARGV[i + 1])
  elseif ARGV[i] == 'webhook' and string.match(ARGV[i + 1], '^https?://') then
    redis.call('HSET', bk, 'webhook', ARGV[i + 1])
  else
    return redis.error_reply('submit: bad batch option ' .. tostring(ARGV[i]) .. '=' ..
      tostring(ARGV[i + 1]))
  end
end
local later = not_before > now
local out = {}
local created = 0
local ids = pfx .. 'ids'
-- Jobs stored before ids came from their keys are found by their key.
local legacy = redis.call('EXISTS', pfx .. 'idem') == 1
local now_s = tostring(now)
for i = 0, n - 1 do
  local b = 7 + i * 6
  local id, idem, prio = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  -- (HSETNX both looks the id up and, when it is new, enters it in the index)
  local existing = legacy and redis.call('HGET', pfx .. 'idem', idem)
  if not existing and redis.call('HSETNX', ids, id, batch) == 0 then existing = id end
  if existing then
    out[#out + 1] = existing
    out[#out + 1] = 0
  else
    local team, spec, maxa = ARGV[b + 3], ARGV[b + 4], ARGV[b + 5]
    redis.call('RPUSH', bk .. ':jobs', id)
    if later then
      -- Scheduled for later: its keys now, since it waits in 'delayed' by id.
      unpack_to_keys(id, now_s, team, maxa, spec, prio, batch, 'scheduled', 'attempts', '0')
      redis.call('ZADD', pfx .. 'delayed', not_before, id)
    else
      -- A packed job (lib.lua): one entry of its ready list until it runs.
      make_ready(pack_job(id, now_s, team, maxa, spec), prio, batch, false)
    end
    created = created + 1
    out[#out + 1] = id
    out[#out + 1] = 1
  end
end
if created > 0 then
  redis.call('HSETNX', bk, 'created', now)
  redis.call('HDEL', bk, 'finished')
  redis.call('ZREM', pfx .. 'finished', batch)
  redis.call('HINCRBY', bk, 'total', created)
  batch_move(batch, nil, later and 'scheduled' or 'queued', created)
  redis.call('ZADD', pfx .. 'batches', 'NX', now, batch)
  if not silent then
    emit('batch.submitted', 'batch', batch, 'jobs', created, 'existing', n - created, 'total',
      redis.call('HGET', bk, 'total'))
  end
  redis.call('PUBLISH', pfx .. 'wake', created)
end
-- One submission, sent in silent calls, is over: one event for it, with its totals.
if submitted then
  local c, e = string.match(submitted, '^(%d+),(%d+)$')
  if tonumber(c) > 0 then
    emit('batch.submitted', 'batch', batch, 'jobs', c, 'existing', e, 'total',
      redis.call('HGET', bk, 'total') or '0')
  end
end
return out
