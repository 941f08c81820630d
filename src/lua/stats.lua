-- stats: the queue at a glance, in one consistent read.
-- ARGV: prefix
-- Returns {counters as field/value pairs..., then 'ready:0', n, 'ready:1', n, 'ready:2', n,
--          'delayed', n, 'leased', n, 'dead', n, 'batches_ready', n, 'paused', 0|1,
--          'oldest_waiting_ms', ms or -1, 'now', ms}.
local now = now_ms()
local out = redis.call('HGETALL', STATS)
local oldest = -1
local batches = 0
for prio = 0, 2 do
  local ring = pfx .. 'rr:' .. prio
  local ready = 0
  local members = redis.call('LRANGE', ring, 0, -1)
  batches = batches + #members
  for i, batch in ipairs(members) do
    local list = pfx .. 'q:' .. prio .. ':' .. batch
    ready = ready + redis.call('LLEN', list)
    -- The head of each batch's list is its oldest waiting job; look at the first 200.
    if i <= 200 then
      local head = redis.call('LINDEX', list, 0)
      local created
      if head then
        local _, c = unpack_job(head) -- (a packed job carries its creation time)
        created = tonumber(c or redis.call('HGET', pfx .. 'j:' .. head, 'created'))
      end
      if created and (oldest < 0 or now - created > oldest) then oldest = now - created end
    end
  end
  out[#out + 1] = 'ready:' .. prio
  out[#out + 1] = ready
end
for _, v in ipairs({'delayed', 'leases', 'dead'}) do
  out[#out + 1] = v
  out[#out + 1] = redis.call('ZCARD', pfx .. v)
end
for _, v in ipairs({'batches_ready', batches, 'paused', redis.call('EXISTS', pfx .. 'paused'),
  'oldest_waiting_ms', oldest, 'now', now}) do
  out[#out + 1] = v
end
return out
