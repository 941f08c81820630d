-- rate: a provider account's limits, shared by every worker on every host.  One call takes room
-- under all of them at once, or under none:
--   images per window   P:{Q}:rl:PROVIDER   ZSET  one entry per image ("ENTRY:i"), scored by time
--   tokens per window   P:{Q}:rlt:PROVIDER  ZSET  one entry per call ("ENTRY|TOKENS"), by time
--                       P:{Q}:rlts:PROVIDER STRING the sum of the tokens in that ZSET (so a take
--                                                 reads only the entries leaving the window)
--   concurrent requests P:{Q}:rlc:PROVIDER  ZSET  one entry per call in flight ("ENTRY"), scored
--                                                 by its expiry: a slot whose worker died (and so
--                                                 never released it) frees itself then
--   a provider's hold   P:{Q}:rlh:PROVIDER  STRING until when (ms) the provider said to wait:
--                                                 no take succeeds before
-- (sliding window logs; a limit of 0 is not enforced).
--
-- ARGV[2] = 'take': ARGV = prefix, 'take', provider, window ms, images limit, images of the call,
--   tokens limit, tokens of the call (an estimate), concurrency limit, slot ttl ms, entry id
--   Returns 0 when the call may be sent now (its entries are recorded), else the ms to wait
--   before room may open (for a full concurrency limit, until the earliest slot expires: a
--   release usually comes sooner), -1 if its images alone are over the images limit, -2 if its
--   tokens alone are over the tokens limit.
-- ARGV[2] = 'release': ARGV = prefix, 'release', provider, entry id, images, tokens
--   Frees the call's concurrency slot.  Images and tokens are 0 for a call that was sent (what
--   was asked of the provider stays counted); a call that was never sent passes what it took
--   so that its room is given back.  Returns 1 if a slot was freed, else 0.
-- ARGV[2] = 'hold': ARGV = prefix, 'hold', provider, ms
--   A 429 with a retry hint: no call of the provider's account is sent for ms (the latest
--   hold wins).  Returns the ms the hold lasts from now.
local mode, provider = ARGV[2], ARGV[3]
local hkey = pfx .. 'rlh:' .. provider
local ikey, tkey, ckey = pfx .. 'rl:' .. provider, pfx .. 'rlt:' .. provider, pfx .. 'rlc:' .. provider
local tsum = pfx .. 'rlts:' .. provider

local function entry_tokens(member)
  return tonumber(string.match(member, '|(%d+)$')) or 0
end

if mode == 'release' then
  local entry, n, tokens = ARGV[4], tonumber(ARGV[5]) or 0, tonumber(ARGV[6]) or 0
  for i = 1, n do redis.call('ZREM', ikey, entry .. ':' .. i) end
  if tokens > 0 and redis.call('ZREM', tkey, entry .. '|' .. tokens) == 1 then
    if redis.call('DECRBY', tsum, tokens) <= 0 then redis.call('DEL', tsum) end
  end
  return redis.call('ZREM', ckey, entry)
end
if mode == 'hold' then
  local ms = math.floor(tonumber(ARGV[4]) or 0)
  if ms <= 0 then return 0 end
  local now = now_ms()
  local till = math.max(tonumber(redis.call('GET', hkey) or '0') or 0, now + ms)
  redis.call('SET', hkey, till, 'PX', till - now)
  return till - now
end
if mode ~= 'take' then return redis.error_reply('rate: unknown mode ' .. tostring(mode)) end

local window = tonumber(ARGV[4])
local ilimit, n = tonumber(ARGV[5]), tonumber(ARGV[6])
local tlimit, tokens = tonumber(ARGV[7]), tonumber(ARGV[8])
local climit, ttl = tonumber(ARGV[9]), tonumber(ARGV[10])
local entry = ARGV[11]
if ilimit > 0 and n > ilimit then return -1 end
if tlimit > 0 and tokens > tlimit then return -2 end
local now = now_ms()
local wait = 0
local held = tonumber(redis.call('GET', hkey) or '0') or 0
if held > now then wait = held - now end

if ilimit > 0 and n > 0 then
  redis.call('ZREMRANGEBYSCORE', ikey, '-inf', now - window)
  local used = redis.call('ZCARD', ikey)
  if used + n > ilimit then
    -- Room opens when the oldest entries that stand in the way leave the window.
    local idx = used + n - ilimit - 1
    local oldest = redis.call('ZRANGE', ikey, idx, idx, 'WITHSCORES')
    local w = tonumber(oldest[2]) + window - now
    if w > wait then wait = w end
  end
end

if tlimit > 0 and tokens > 0 then
  local gone = redis.call('ZRANGEBYSCORE', tkey, '-inf', now - window)
  if #gone > 0 then
    local out = 0
    for _, m in ipairs(gone) do out = out + entry_tokens(m) end
    redis.call('ZREMRANGEBYSCORE', tkey, '-inf', now - window)
    redis.call('DECRBY', tsum, out)
  end
  if redis.call('EXISTS', tkey) == 0 then redis.call('DEL', tsum) end
  local used = tonumber(redis.call('GET', tsum) or '0') or 0
  if used + tokens > tlimit then
    -- Walk from the oldest entry until enough tokens have left the window (in chunks: the
    -- log of a large limit holds thousands of calls).
    local excess, seen, from = used + tokens - tlimit, 0, 0
    while excess > 0 do
      local chunk = redis.call('ZRANGE', tkey, from, from + 99, 'WITHSCORES')
      if #chunk == 0 then break end
      for i = 1, #chunk, 2 do
        local t = entry_tokens(chunk[i])
        excess, seen = excess - t, seen + t
        if excess <= 0 then
          local w = tonumber(chunk[i + 1]) + window - now
          if w > wait then wait = w end
          break
        end
      end
      from = from + 100
    end
    if excess > 0 then
      -- The sum ran ahead of the log (it cannot, short of a hand edit): trust the log.
      redis.call('SET', tsum, seen, 'PX', window * 2)
      if seen + tokens > tlimit then wait = math.max(wait, 1) end
    end
  end
end

if climit > 0 then
  redis.call('ZREMRANGEBYSCORE', ckey, '-inf', now)
  if redis.call('ZSCORE', ckey, entry) == false and redis.call('ZCARD', ckey) >= climit then
    local first = redis.call('ZRANGE', ckey, 0, 0, 'WITHSCORES')
    local w = tonumber(first[2]) - now
    if w > wait then wait = w end
    if wait < 1 then wait = 1 end
  end
end

if wait > 0 then
  if wait < 1 then wait = 1 end
  return wait
end
if ilimit > 0 and n > 0 then
  for i = 1, n do redis.call('ZADD', ikey, now, entry .. ':' .. i) end
  redis.call('PEXPIRE', ikey, window * 2)
end
if tlimit > 0 and tokens > 0 then
  redis.call('ZADD', tkey, now, entry .. '|' .. tokens)
  redis.call('INCRBY', tsum, tokens)
  redis.call('PEXPIRE', tkey, window * 2)
  redis.call('PEXPIRE', tsum, window * 2)
end
if climit > 0 then
  redis.call('ZADD', ckey, now + ttl, entry)
  redis.call('PEXPIRE', ckey, ttl * 2)
end
return 0
