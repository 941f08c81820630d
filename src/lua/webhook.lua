-- webhook: the state changes of the webhook outbox (messages are written by lib.lua's
-- outbox_put; see the key layout there).  Workers claim due messages with a lease, POST them,
-- and report each attempt's outcome; the CLI lists, replays and re-enables.
-- ARGV: prefix, action, ...
--
--   claim N LEASE_MS TOKEN HOST_CAP [HOST INFLIGHT]...
--     Leases up to N due pending messages to TOKEN until now + LEASE_MS (their whdue score
--     becomes the lease's end, so a dead worker's messages come due again by themselves).  A
--     host (the URL's authority) already holding HOST_CAP of the caller's deliveries (INFLIGHT
--     pairs) gets no more.  Messages to a disabled endpoint become 'disabled' instead; expired
--     delivered, failed and disabled messages are deleted (bounded per call).
--     Returns {now, next due ms or -1, then per message: id, url, body, attempts, host}.
--   result ID TOKEN OUTCOME STATUS DURATION_MS RETRY_AFTER_MS DETAIL
--     One attempt's outcome (OUTCOME: ok | retry | gone | refused | abort | unsigned), applied
--     once per TOKEN (a re-sent call changes nothing).  Only the lease holder moves a pending
--     message on; a late 2xx from an expired lease still counts as delivered.  Returns 1 if
--     applied, 0 if not (already applied, or the message is gone).
--   replay ID...
--     Puts messages back to pending, due now, attempt count restarted (same id, same body).
--     All or nothing: returns {0, missing ids} if any is unknown, else {n, {}, URLs of theirs
--     still disabled}.
--   enable URL
--     Removes URL from the disabled endpoints: 1, or 0 if it was not disabled.

-- Delays after the 1st, 2nd, ... failed attempt (Svix's schedule): 8 attempts in all, the
-- last about 27.5 h after the first; after the 8th failure the message is 'failed'.
local SCHEDULE = {5000, 300000, 1800000, 7200000, 18000000, 36000000, 36000000}
local RETRY_AFTER_MAX = 86400000 -- a receiver's retry-after is honoured up to 24 h
local UNSIGNED_WAIT = 300000     -- a worker without a secret for the URL hands it back this long
local LOG_MAX = 20               -- attempts kept on a message
local TRIM_MAX = 100             -- expired messages deleted per claim

local action = ARGV[2]
local DUE, LOG, OFF = pfx .. 'whdue', pfx .. 'whlog', pfx .. 'whoff'
local function mkey(id) return pfx .. 'whm:' .. id end

local function host_of(url)
  return string.lower(string.match(url, '^%a[%w+.-]*://([^/?#]*)') or '')
end

local function decode_log(s)
  local ok, v = pcall(cjson.decode, s or '')
  if ok and type(v) == 'table' then return v end
  return {}
end

local function add_log(mk, log, entry)
  log[#log + 1] = entry
  while #log > LOG_MAX do table.remove(log, 1) end
  redis.call('HSET', mk, 'attempt_log', cjson.encode(log))
end

local function next_due()
  local h = redis.call('ZRANGE', DUE, 0, 0, 'WITHSCORES')
  return h[2] and tonumber(h[2]) or -1
end

if action == 'claim' then
  local n, lease, tok, cap = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
  local now = now_ms()
  local busy = {}
  for i = 7, #ARGV - 1, 2 do busy[ARGV[i]] = tonumber(ARGV[i + 1]) end
  local out = {now, -1}
  local got = 0
  if n > 0 then
    -- A few more than asked, past messages of saturated hosts; the rest wait for a next call.
    local ids = redis.call('ZRANGEBYSCORE', DUE, '-inf', now, 'LIMIT', 0, 4 * n + 32)
    for _, id in ipairs(ids) do
      if got >= n then break end
      local mk = mkey(id)
      local h = redis.call('HMGET', mk, 'state', 'url', 'body', 'attempts')
      if h[1] ~= 'pending' then
        redis.call('ZREM', DUE, id) -- delivered meanwhile, or deleted
      elseif redis.call('HEXISTS', OFF, h[2]) == 1 then
        -- Stripe's rule: nothing is sent to a disabled endpoint, and its messages are not
        -- resent when it is enabled again (replay does that).
        redis.call('ZREM', DUE, id)
        redis.call('HSET', mk, 'state', 'disabled', 'last', 'endpoint disabled')
        redis.call('HDEL', mk, 'lease')
      else
        local host = host_of(h[2])
        if (busy[host] or 0) < cap then
          busy[host] = (busy[host] or 0) + 1
          got = got + 1
          redis.call('HSET', mk, 'lease', tok)
          redis.call('ZADD', DUE, now + lease, id)
          for _, v in ipairs({id, h[2], h[3], tonumber(h[4]) or 0, host}) do out[#out + 1] = v end
        end
      end
    end
  end
  -- Retention: what reached an end state is deleted with the jobs (imgq retention); a
  -- message still pending is kept whatever its age.
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', LOG, '-inf', now - retention_ms(), 'LIMIT', 0,
    TRIM_MAX)) do
    if redis.call('HGET', mkey(id), 'state') ~= 'pending' then
      redis.call('DEL', mkey(id))
      redis.call('ZREM', LOG, id)
      redis.call('ZREM', DUE, id)
    end
  end
  out[2] = next_due()
  return out
end

if action == 'result' then
  local id, tok, outcome = ARGV[3], ARGV[4], ARGV[5]
  local status, dur, retry_after = tonumber(ARGV[6]) or 0, tonumber(ARGV[7]) or 0,
    tonumber(ARGV[8]) or 0
  local detail = ARGV[9] or ''
  local mk = mkey(id)
  local h = redis.call('HMGET', mk, 'state', 'attempts', 'lease', 'url', 'attempt_log')
  if not h[1] then return 0 end
  local log = decode_log(h[5])
  for _, e in ipairs(log) do
    if e.token == tok then return 0 end
  end
  local now = now_ms()
  local attempts = tonumber(h[2]) or 0
  if outcome ~= 'unsigned' then attempts = attempts + 1 end
  local last = status > 0 and tostring(status) or detail
  local entry = {t = now, token = tok, outcome = outcome, ms = dur}
  if status > 0 then entry.status = status end
  if detail ~= '' then entry.error = detail end
  redis.call('HSET', mk, 'attempts', attempts, 'last', last)
  local state = h[1]
  if outcome == 'ok' then
    if state ~= 'delivered' then
      redis.call('HSET', mk, 'state', 'delivered', 'delivered', now)
      redis.call('ZREM', DUE, id)
      redis.call('HDEL', mk, 'next', 'lease')
    end
  elseif state == 'pending' and h[3] == tok then
    redis.call('HDEL', mk, 'lease')
    if outcome == 'gone' then
      -- 410: the receiver says the endpoint is gone for good (the spec: disable it).
      redis.call('HSET', OFF, h[4], now)
      redis.call('HSET', mk, 'state', 'disabled')
      redis.call('ZREM', DUE, id)
    elseif outcome == 'refused' or outcome == 'abort' or
      (outcome == 'retry' and attempts > #SCHEDULE) then
      redis.call('HSET', mk, 'state', 'failed')
      redis.call('ZREM', DUE, id)
    else
      local delay = UNSIGNED_WAIT
      if outcome == 'retry' then
        delay = SCHEDULE[attempts]
        if retry_after > delay then delay = math.min(retry_after, RETRY_AFTER_MAX) end
      end
      entry.next = now + delay
      redis.call('HSET', mk, 'next', now + delay)
      redis.call('ZADD', DUE, now + delay, id)
    end
  end
  add_log(mk, log, entry)
  return 1
end

if action == 'replay' then
  local missing, off, seen = {}, {}, {}
  for i = 3, #ARGV do
    if redis.call('EXISTS', mkey(ARGV[i])) == 0 then missing[#missing + 1] = ARGV[i] end
  end
  if #missing > 0 then return {0, missing} end
  local now = now_ms()
  for i = 3, #ARGV do
    local id = ARGV[i]
    local mk = mkey(id)
    redis.call('HSET', mk, 'state', 'pending', 'attempts', 0, 'next', now)
    redis.call('HDEL', mk, 'lease', 'delivered')
    redis.call('ZADD', DUE, now, id)
    local url = redis.call('HGET', mk, 'url') or ''
    if not seen[url] and redis.call('HEXISTS', OFF, url) == 1 then off[#off + 1] = url end
    seen[url] = true
  end
  if #ARGV >= 3 then redis.call('PUBLISH', pfx .. 'whwake', 'replay') end
  return {#ARGV - 2, {}, off}
end

if action == 'enable' then
  return redis.call('HDEL', OFF, ARGV[3])
end

return redis.error_reply('webhook: unknown action ' .. tostring(action))
