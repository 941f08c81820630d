-- pause: stop or restart dispatch of a whole queue or of one batch, for every worker at once.
-- Running jobs finish; nothing new is claimed from what is paused.
-- ARGV: prefix, scope ('queue' | 'batch'), action ('pause' | 'resume'), batch id
-- Returns 1, or 0 for a batch that does not exist.
local scope, action = ARGV[2], ARGV[3]
if scope == 'queue' then
  if action == 'pause' then
    redis.call('SET', pfx .. 'paused', now_ms())
  else
    redis.call('DEL', pfx .. 'paused')
    redis.call('PUBLISH', pfx .. 'wake', 1)
  end
  emit('queue.' .. action .. 'd')
  return 1
end
local batch = ARGV[4]
local bk = pfx .. 'b:' .. batch
if redis.call('EXISTS', bk) == 0 then return 0 end
for prio = 0, 2 do
  local ring = pfx .. 'rr:' .. prio
  redis.call('LREM', ring, 0, batch)
  if action == 'resume' and redis.call('LLEN', pfx .. 'q:' .. prio .. ':' .. batch) > 0 then
    redis.call('RPUSH', ring, batch)
  end
end
if action == 'pause' then
  redis.call('HSET', bk, 'paused', now_ms())
else
  redis.call('HDEL', bk, 'paused')
  redis.call('PUBLISH', pfx .. 'wake', 1)
end
emit('batch.' .. action .. 'd', 'batch', batch)
return 1
