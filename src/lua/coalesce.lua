-- coalesce: dedup before any spend, and one provider call for identical requests in flight.
-- A job's images have content-addressed object keys (dedup.h).  The index P:{Q}:objects (a
-- SET of object keys, filled by complete.lua) says which are stored; it is a cache of S3,
-- which stays the truth: a key missing from it is looked up with a HEAD by the worker.
-- Identical requests (same keys, same n: group G) running at once elect a leader with
-- P:{Q}:inflight:G (job id, expiring with the lease); the others park in state 'coalesced' on
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
  for _, k in ipairs(keys) do
    if redis.call('SISMEMBER', pfx .. 'objects', k) == 0 then all = false break end
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
  redis.call('SET', ik, id, 'PX', lease)
  redis.call('HSET', jk, 'coalesce', group)
  return {1}
end
local now = now_ms()
redis.call('HSET', jk, 'state', 'coalesced')
redis.call('HDEL', jk, 'token')
redis.call('ZREM', pfx .. 'leases', id)
redis.call('HINCRBY', jk, 'attempts', -1)
redis.call('RPUSH', pfx .. 'co:' .. group, id)
redis.call('PEXPIRE', pfx .. 'co:' .. group, lease * 4)
redis.call('ZADD', pfx .. 'delayed', now + lease, id)
emit('job.coalesced', 'job', id, 'batch', h[3], 'leader', leader)
batch_move(h[3], 'running', 'coalesced')
return {0, leader}
