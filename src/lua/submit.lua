-- submit: enqueue jobs, skipping any whose idempotency key is known.
-- ARGV: prefix, batch id, count, not-before ms (0 = none), deadline ms (0 = none), dispatch
--       windows ("" = always; see window_open), then per job: id, idempotency key, priority,
--       team, spec, max attempts
--       After the jobs, optional batch options as name, value pairs: on_budget_exhausted
--       (wait | fail: what a job does when a hard budget cap stops it; default wait),
--       webhook (URL that gets the batch's events and those of its jobs without their own).
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
for i = 7 + n * 6, #ARGV - 1, 2 do
  if ARGV[i] == 'on_budget_exhausted' and (ARGV[i + 1] == 'wait' or ARGV[i + 1] == 'fail') then
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
for i = 0, n - 1 do
  local b = 7 + i * 6
  local id, idem, prio = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  local existing = redis.call('HGET', pfx .. 'idem', idem)
  if existing then
    out[#out + 1] = existing
    out[#out + 1] = 0
  else
    redis.call('SET', pfx .. 'j:' .. id .. ':s', ARGV[b + 4])
    redis.call('HSET', pfx .. 'j:' .. id,
      'state', later and 'scheduled' or 'queued', 'batch', batch, 'team', ARGV[b + 3],
      'prio', prio, 'attempts', 0, 'max_attempts', ARGV[b + 5], 'created', now, 'idem', idem,
      'cost', 0)
    -- The job's own webhook, where its events go (lib.lua notify); a plain search first, so
    -- jobs without one cost no decoding.
    if string.find(ARGV[b + 4], '"webhook"', 1, true) then
      local oks, spec = pcall(cjson.decode, ARGV[b + 4])
      if oks and type(spec) == 'table' and type(spec.webhook) == 'string' then
        redis.call('HSET', pfx .. 'j:' .. id, 'webhook', spec.webhook)
      end
    end
    redis.call('HSET', pfx .. 'idem', idem, id)
    redis.call('RPUSH', bk .. ':jobs', id)
    if later then
      redis.call('ZADD', pfx .. 'delayed', not_before, id)
    else
      make_ready(id, prio, batch, false)
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
  emit('batch.submitted', 'batch', batch, 'jobs', created)
  redis.call('PUBLISH', pfx .. 'wake', created)
end
return out
