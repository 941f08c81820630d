-- submit: enqueue jobs, skipping any whose idempotency key is known.
-- KEYS: ready, seq, idem, batch hash, batch jobs list, batches
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
  local id, idem = ARGV[b], ARGV[b + 1]
  local existing = redis.call('HGET', KEYS[3], idem)
  if existing then
    out[#out + 1] = existing
    out[#out + 1] = 0
  else
    local seq = redis.call('INCR', KEYS[2])
    local score = num(tonumber(ARGV[b + 2]) * 17592186044416 + seq)
    redis.call('HSET', pfx .. 'j:' .. id, 'spec', ARGV[b + 4], 'state', 'queued',
      'batch', batch, 'team', ARGV[b + 3], 'prio', ARGV[b + 2], 'score', score,
      'attempts', 0, 'max_attempts', ARGV[b + 5], 'created', now, 'idem', idem, 'cost', 0)
    redis.call('ZADD', KEYS[1], score, id)
    redis.call('HSET', KEYS[3], idem, id)
    redis.call('RPUSH', KEYS[5], id)
    created = created + 1
    out[#out + 1] = id
    out[#out + 1] = 1
  end
end
if created > 0 then
  redis.call('HSETNX', KEYS[4], 'created', now)
  redis.call('HDEL', KEYS[4], 'finished')
  redis.call('HINCRBY', KEYS[4], 'total', created)
  redis.call('HINCRBY', KEYS[4], 'queued', created)
  redis.call('ZADD', KEYS[6], 'NX', now, batch)
  redis.call('PUBLISH', pfx .. 'wake', created)
end
return out
