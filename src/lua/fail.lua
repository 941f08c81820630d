-- fail: an attempt of a running job failed; schedule a retry or end the job as failed.
-- KEYS: leases, delayed
-- ARGV: prefix, job id, token, error JSON, retry delay ms (-1 = do not retry), cost micros
--       charged for the failed attempt, 1 if the attempt counts against max attempts
-- Returns 1 = retry scheduled, 2 = failed for good, 0 = lease lost.
local id, tok = ARGV[2], ARGV[3]
local jk = pfx .. 'j:' .. id
local h = redis.call('HMGET', jk, 'state', 'token', 'batch', 'attempts', 'max_attempts')
if h[1] ~= 'running' or h[2] ~= tok then return 0 end
local now = now_ms()
local delay = tonumber(ARGV[5])
local cost = tonumber(ARGV[6])
if cost > 0 then
  redis.call('HINCRBY', jk, 'cost', ARGV[6])
  redis.call('HINCRBY', pfx .. 'b:' .. h[3], 'cost', ARGV[6])
end
log_attempt(jk, ARGV[4])
redis.call('HSET', jk, 'error', ARGV[4])
redis.call('HDEL', jk, 'token')
redis.call('ZREM', KEYS[1], id)
local attempts = tonumber(h[4])
if ARGV[7] == '0' then
  attempts = redis.call('HINCRBY', jk, 'attempts', -1)
end
if delay >= 0 and attempts < tonumber(h[5]) then
  redis.call('HSET', jk, 'state', 'retrying')
  redis.call('ZADD', KEYS[2], now + delay, id)
  batch_move(h[3], 'running', 'retrying')
  return 1
end
redis.call('HSET', jk, 'state', 'failed', 'finished', now)
batch_move(h[3], 'running', 'failed')
return 2
