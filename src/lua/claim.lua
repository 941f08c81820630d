-- claim: lease up to COUNT ready jobs to a worker in one step.
-- Due retries are first moved from delayed to ready, so a retry needs no poller of its own.
-- KEYS: ready, leases, delayed
-- ARGV: prefix, worker id, lease ms, count, token prefix
-- Returns {claimed, next due ms or -1, now ms, then per job: id, token, attempt, spec, batch,
--          max attempts}
local now = now_ms()
local lease = tonumber(ARGV[3])
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[3], id)
  local jk = pfx .. 'j:' .. id
  local h = redis.call('HMGET', jk, 'state', 'score', 'batch')
  if h[1] == 'retrying' then
    redis.call('ZADD', KEYS[1], h[2], id)
    redis.call('HSET', jk, 'state', 'queued')
    batch_move(h[3], 'retrying', 'queued')
  end
end
local popped = redis.call('ZPOPMIN', KEYS[1], tonumber(ARGV[4]))
local out = {0, -1, now}
local claimed = 0
for i = 1, #popped, 2 do
  local id = popped[i]
  local jk = pfx .. 'j:' .. id
  local h = redis.call('HMGET', jk, 'state', 'spec', 'batch', 'max_attempts')
  -- A job purged or cancelled while queued has no business being run.
  if h[1] == 'queued' then
    claimed = claimed + 1
    local tok = ARGV[5] .. '.' .. claimed
    local att = redis.call('HINCRBY', jk, 'attempts', 1)
    redis.call('HSET', jk, 'state', 'running', 'token', tok, 'worker', ARGV[2], 'started', now)
    redis.call('ZADD', KEYS[2], now + lease, id)
    batch_move(h[3], 'queued', 'running')
    for _, v in ipairs({id, tok, att, h[2], h[3], h[4]}) do out[#out + 1] = v end
  end
end
out[1] = claimed
if claimed == 0 then
  local nxt = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  if nxt[2] then out[2] = nxt[2] end
end
return out
