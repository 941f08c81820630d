-- complete: a running job is done, if the caller still holds its lease.
-- KEYS: leases
-- ARGV: prefix, job id, token, result JSON, cost micros of this attempt, images stored
-- Returns 1 when recorded, 0 when the lease was lost (another worker owns the job now).
local id, tok = ARGV[2], ARGV[3]
local jk = pfx .. 'j:' .. id
local h = redis.call('HMGET', jk, 'state', 'token', 'batch')
if h[1] ~= 'running' or h[2] ~= tok then return 0 end
local now = now_ms()
redis.call('HSET', jk, 'state', 'done', 'result', ARGV[4], 'finished', now)
redis.call('HINCRBY', jk, 'cost', ARGV[5])
redis.call('HDEL', jk, 'token')
redis.call('ZREM', KEYS[1], id)
local bk = pfx .. 'b:' .. h[3]
redis.call('HINCRBY', bk, 'cost', ARGV[5])
redis.call('HINCRBY', bk, 'images', ARGV[6])
batch_move(h[3], 'running', 'done')
return 1
