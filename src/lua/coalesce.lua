-- coalesce: dedup before any spend, and one provider call for identical requests in flight.
-- A job's images have content-addressed object keys (dedup.h).  The index P:{Q}:objects (a
-- ZSET of object keys by the time they were stored, filled by complete.lua, trimmed by
-- reap.lua after the retention) says which are stored; it is a cache of S3, which stays the
-- truth: a key missing from it, or stored longer ago than the retention, is looked up with a
-- HEAD by the worker (so an object a bucket's lifecycle deleted is noticed after that long).
-- Identical requests (same keys, same n: group G) running at once elect a leader with
-- P:{Q}:inflight:G (its job id; it holds while that job is running, however long its calls
-- take, and expires after a day only as a safety net); the others park in state 'coalesced' on
-- P:{Q}:co:G until the leader's attempt ends (lib.lua coalesce_release), then run again and
-- find the images stored: done at $0.  Each parked job also waits in 'delayed' for at most
-- the lease, so a leader whose worker died does not hold them.
-- ARGV: prefix, 'begin', job id, token, group G, lease ms, object keys...
-- Returns {2} every image is in the index | {1} lead: check S3 and generate |
--         {0, leader job id} parked behind the leader | {-1} lease lost.
local id, tok, group, lease = ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
local jk = pfx .. 'j:' .. id
local h = redis.call('HMGET', jk, 'state', 'token', 'batch')
if h[1] ~= 'running' or h[2] ~= tok then return {-1} end
local keys = {}
for i = 7, #ARGV do keys[#keys + 1] = ARGV[i] end
if #keys > 0 then
  local all = true
  local fresh = now_ms() - retention_ms()
  for _, k in ipairs(keys) do
    local at = tonumber(redis.call('ZSCORE', pfx .. 'objects', k))
    if not at or at < fresh then all = false break end
  end
  if all then return {2} end
end
local ik = pfx .. 'inflight:' .. group
local leader = redis.call('GET', ik)
if leader and leader ~= id then
  -- A leader that is not running any more (it ended without releasing: retention, a crash
  -- between scripts) does not hold the others.
  if redis.call('HGET', pfx .. 'j:' .. leader, 'state') ~= 'running' then leader = nil end
end
if not leader or leader == id then
  redis.call('SET', ik, id, 'EX', 86400)
  redis.call('HSET', jk, 'coalesce', group)
  return {1}
end
local now = now_ms()
redis.call('HSET', jk, 'state', 'coalesced')
redis.call('HDEL', jk, 'token')
redis.call('ZREM', pfx .. 'leases', id)
redis.call('HINCRBY', jk, 'attempts', -1)
redis.call('RPUSH', pfx .. 'co:' .. group, id)
redis.call('EXPIRE', pfx .. 'co:' .. group, 86400)
redis.call('ZADD', pfx .. 'delayed', now + lease, id)
emit('job.coalesced', 'job', id, 'batch', h[3], 'leader', leader)
batch_move(h[3], 'running', 'coalesced')
return {0, leader}
