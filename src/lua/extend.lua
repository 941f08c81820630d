-- extend: renew the leases of jobs a worker is still running.
-- ARGV: prefix, lease ms, then pairs of job id and token
-- Returns the id and token of each job whose lease was lost (expired and reaped, or
-- cancelled), so the worker stops working on that claim of it (not on a later claim of the
-- same job, which it may hold too).
local deadline = now_ms() + tonumber(ARGV[2])
local lost = {}
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  local h = redis.call('HMGET', pfx .. 'j:' .. id, 'state', 'token')
  if h[1] == 'running' and h[2] == ARGV[i + 1] then
    redis.call('ZADD', pfx .. 'leases', 'XX', deadline, id)
  else
    lost[#lost + 1] = id
    lost[#lost + 1] = ARGV[i + 1]
  end
end
return lost
