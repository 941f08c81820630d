-- submit: enqueue jobs, skipping any whose idempotency key is known.
-- ARGV: prefix, batch id, count, then per job: id, idempotency key, priority, team, spec,
--       max attempts
-- Returns per job: the job id (new or existing) and 1 if it was created, 0 if it existed.
local now = now_ms()
local batch = ARGV[2]
local n = tonumber(ARGV[3])
local out = {}
local created = 0
for i = 0, n - 1 do
  local b = 4 + i * 6
  local id, idem, prio = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  local existing = redis.call('HGET', pfx .. 'idem', idem)
  if existing then
    out[#out + 1] = existing
    out[#out + 1] = 0
  else
    redis.call('HSET', pfx .. 'j:' .. id, 'spec', ARGV[b + 4], 'state', 'queued',
      'batch', batch, 'team', ARGV[b + 3], 'prio', prio, 'attempts', 0,
      'max_attempts', ARGV[b + 5], 'created', now, 'idem', idem, 'cost', 0)
    redis.call('HSET', pfx .. 'idem', idem, id)
    redis.call('RPUSH', pfx .. 'b:' .. batch .. ':jobs', id)
    make_ready(id, prio, batch, false)
    created = created + 1
    out[#out + 1] = id
    out[#out + 1] = 1
  end
end
if created > 0 then
  local bk = pfx .. 'b:' .. batch
  redis.call('HSETNX', bk, 'created', now)
  redis.call('HDEL', bk, 'finished')
  redis.call('HINCRBY', bk, 'total', created)
  batch_move(batch, nil, 'queued', created)
  redis.call('ZADD', pfx .. 'batches', 'NX', now, batch)
  emit('batch.submitted', 'batch', batch, 'jobs', created)
  redis.call('PUBLISH', pfx .. 'wake', created)
end
return out
