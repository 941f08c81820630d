-- release: a worker shutting down hands a running job back, to the front of its batch's
-- queue, without using up an attempt.
-- ARGV: prefix, job id, token
-- Returns 1 when handed back, 0 when the lease was already lost.
local id, tok = ARGV[2], ARGV[3]
local jk = pfx .. 'j:' .. id
local h = redis.call('HMGET', jk, 'state', 'token', 'prio', 'batch')
if h[1] ~= 'running' or h[2] ~= tok then return 0 end
redis.call('HDEL', jk, 'token')
coalesce_release(id, jk)
redis.call('HINCRBY', jk, 'attempts', -1)
redis.call('HSET', jk, 'state', 'queued')
redis.call('ZREM', pfx .. 'leases', id)
make_ready(id, h[3], h[4], true)
batch_move(h[4], 'running', 'queued')
redis.call('PUBLISH', pfx .. 'wake', 1)
return 1
