-- extend: renew the leases of jobs a worker is still running.
-- ARGV: prefix, lease ms, then pairs of job id and token
-- Returns the ids whose lease was lost (expired and reaped, or cancelled), so the worker
-- stops working on them.
local deadline = now_ms() + tonumber(ARGV[2])
local lost = {}
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  local h = redis.call('HMGET', pfx .. 'j:' .. id, 'state', 'token')
  if h[1] == 'running' and h[2] == ARGV[i + 1] then
    redis.call('ZADD', pfx .. 'leases', 'XX', deadline, id)
  else
    lost[#lost + 1] = id
  end
end
return lost
