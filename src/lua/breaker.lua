-- breaker: per-model circuit breakers, shared by every worker on every host.
--
-- Keys (besides lib.lua's):
--   P:{Q}:cb:MODEL   HASH  one model's breaker: state (closed|open|half_open; absent = closed),
--                          fails (consecutive counted failures), opened_at (ms), cooldown (ms,
--                          of the current open period), probe (token holding the probe permit),
--                          probe_until (ms, when that permit lapses), opens (times opened),
--                          class (the last counted failure's error class)
--   P:{Q}:breakers   SET   models that have a breaker hash (for 'state' and imgq stats)
--
-- Semantics.
--   closed     Calls pass.  A counted failure adds one to 'fails', a success resets it.
--              Counted: every failure class except invalid_request, content_policy, auth
--              (the job's or the configuration's fault, not the model's) and storage (ours);
--              so server, timeout, network, rate_limit (persistent 429s without a hint),
--              bad_response and any class this script does not know count.  A rate_limit
--              reported 'hinted' (the 429 said when to come back: the account's limit, which
--              the worker's rate limiter waits out) is neutral.  The uncounted classes are neutral:
--              they neither count nor reset.  At THRESHOLD consecutive counted failures the
--              breaker opens with opened_at = now and cooldown = COOLDOWN (breaker.opened).
--   open       Calls are refused until opened_at + cooldown; from then on the breaker is
--              half-open (turned so lazily, by the first call that looks: breaker.half_open).
--              Reports that arrive while open come from calls admitted earlier: a failure is
--              counted in 'fails' (for the record) but changes nothing else; a success is
--              ignored (one late success says little about a model that just failed THRESHOLD
--              times in a row; the probe decides).
--   half_open  One caller at a time holds the probe permit (its token, until now +
--              PROBE_TTL, so a prober that crashed does not wedge the breaker: the permit is
--              then granted to the next caller); everybody else is refused.  The same token
--              asking again gets the permit again (a retried call).  The prober's report
--              decides: success closes the breaker and clears its counts (breaker.closed);
--              a counted failure reopens it with a fresh opened_at and the cooldown doubled,
--              capped at 8 x COOLDOWN (breaker.opened, reason probe_failed); a neutral
--              failure (e.g. content_policy) proves nothing either way: the permit is released
--              and the next caller probes.  Reports from non-probers do not change the state
--              (failures are counted in 'fails').
--   A close resets the cooldown to COOLDOWN.
--
-- ARGV: prefix, mode, token, threshold, cooldown ms, probe ttl ms, then by mode:
--   choose  MODEL...          (the job's model first, then its fallbacks, in order)
--   report  MODEL, ok|fail, error class[, 'hinted' (a rate_limit with a retry hint)]
--   state   (nothing; token, threshold and probe ttl are ignored, may be empty)
--   rates   MODEL...          (read-only; token, threshold and probe ttl are ignored)
-- Empty or invalid numbers take the defaults: threshold 5, cooldown 30000, probe ttl 60000.
-- Returns:
--   choose  {pick, wait_ms, reason, why}: pick is the 0-based index of the first model whose
--           breaker admits the call, reason 'closed' or 'probe' (this caller got the permit),
--           wait_ms 0; or pick -1, reason 'open' and wait_ms the ms until the earliest of them
--           may admit a call (a busy probe: at most 1000, to look again soon).  why is for the
--           record, e.g. "gpt-image-1.5 open for 12.3 s more; flux-dev closed".
--   report  the state after the report: 'closed', 'open' or 'half_open'.
--   rates   {ok, fail, ...}: per MODEL, its provider calls that succeeded and failed (lib.lua's
--           P:{Q}:models), for a worker ranking a job's fallbacks by expected cost.
--   state   {{model, state, fails, opened_at, left_ms, opens, class}, ...} sorted by model;
--           left_ms: open: until half-open; half_open: until the probe permit lapses (0 if
--           free); closed: 0.  opened_at is 0 and class '' when unknown.  Read-only.
local mode = ARGV[2]
local token = ARGV[3] or ''
local function num(v, def)
  local n = tonumber(v)
  if not n or n < 1 then return def end
  return math.floor(n)
end
local THRESHOLD = num(ARGV[4], 5)
local COOLDOWN = num(ARGV[5], 30000)
local PROBE_TTL = num(ARGV[6], 60000)
local COOLDOWN_CAP = 8 * COOLDOWN
local PROBE_POLL = 1000
local NEUTRAL = {invalid_request = true, content_policy = true, auth = true, storage = true}

local function cb_key(model) return pfx .. 'cb:' .. model end

-- A breaker as a table: state, fails, opened_at, cooldown, probe, probe_until.
local function load(model)
  local h = redis.call('HMGET', cb_key(model), 'state', 'fails', 'opened_at', 'cooldown',
    'probe', 'probe_until', 'opens', 'class')
  return {state = h[1] or 'closed', fails = tonumber(h[2]) or 0,
    opened_at = tonumber(h[3]) or 0, cooldown = tonumber(h[4]) or COOLDOWN,
    probe = h[5] or '', probe_until = tonumber(h[6]) or 0, opens = tonumber(h[7]) or 0,
    class = h[8] or ''}
end

-- An open breaker whose cooldown has passed is half-open (writes it, with the event).
local function settle_state(model, b, now)
  if b.state == 'open' and now >= b.opened_at + b.cooldown then
    b.state = 'half_open'
    b.probe, b.probe_until = '', 0
    redis.call('HSET', cb_key(model), 'state', 'half_open')
    redis.call('HDEL', cb_key(model), 'probe', 'probe_until')
    emit('breaker.half_open', 'model', model)
  end
  return b
end

local function secs(ms) return string.format('%.1f', ms / 1000) end

local function open(model, b, now, cooldown, reason, cls)
  redis.call('SADD', pfx .. 'breakers', model)
  redis.call('HSET', cb_key(model), 'state', 'open', 'opened_at', now, 'cooldown', cooldown,
    'fails', b.fails, 'class', cls)
  redis.call('HINCRBY', cb_key(model), 'opens', 1)
  redis.call('HDEL', cb_key(model), 'probe', 'probe_until')
  emit('breaker.opened', 'model', model, 'reason', reason, 'fails', b.fails, 'class', cls,
    'cooldown_ms', cooldown)
  return 'open'
end

if mode == 'choose' then
  local now = now_ms()
  local skipped = {}
  local wait = -1
  for i = 7, #ARGV do
    local model = ARGV[i]
    local b = settle_state(model, load(model), now)
    if b.state == 'closed' then
      skipped[#skipped + 1] = model .. ' closed'
      return {i - 7, 0, 'closed', table.concat(skipped, '; ')}
    end
    local w
    if b.state == 'half_open' then
      if b.probe == '' or b.probe == token or b.probe_until <= now then
        redis.call('HSET', cb_key(model), 'probe', token, 'probe_until', now + PROBE_TTL)
        skipped[#skipped + 1] = model .. ' probe (half-open)'
        return {i - 7, 0, 'probe', table.concat(skipped, '; ')}
      end
      w = math.min(b.probe_until - now, PROBE_POLL)
      skipped[#skipped + 1] = model .. ' half-open, probe in flight'
    else
      w = b.opened_at + b.cooldown - now
      skipped[#skipped + 1] = model .. ' open for ' .. secs(w) .. ' s more'
    end
    if w < 1 then w = 1 end
    if wait < 0 or w < wait then wait = w end
  end
  if wait < 0 then wait = 0 end -- no candidates at all
  return {-1, wait, 'open', table.concat(skipped, '; ')}
elseif mode == 'report' then
  local model, outcome, cls = ARGV[7], ARGV[8], ARGV[9] or ''
  local hinted = cls == 'rate_limit' and ARGV[10] == 'hinted'
  if not model or model == '' then return redis.error_reply('breaker report: no model') end
  if outcome ~= 'ok' and outcome ~= 'fail' then
    return redis.error_reply('breaker report: outcome must be ok or fail')
  end
  local now = now_ms()
  local key = cb_key(model)
  local b = settle_state(model, load(model), now)
  local prober = b.state == 'half_open' and b.probe ~= '' and b.probe == token
  if outcome == 'ok' then
    if b.state == 'closed' then
      if b.fails > 0 then redis.call('HSET', key, 'fails', 0) end
    elseif prober then
      redis.call('HSET', key, 'state', 'closed', 'fails', 0)
      redis.call('HDEL', key, 'opened_at', 'cooldown', 'probe', 'probe_until', 'class')
      emit('breaker.closed', 'model', model)
      return 'closed'
    end
    return b.state
  end
  if NEUTRAL[cls] or hinted then
    if prober then
      redis.call('HDEL', key, 'probe', 'probe_until')
    end
    return b.state
  end
  -- A counted failure.
  b.fails = b.fails + 1
  if b.state == 'closed' then
    if b.fails >= THRESHOLD then
      return open(model, b, now, COOLDOWN, 'failures', cls)
    end
    redis.call('SADD', pfx .. 'breakers', model)
    redis.call('HSET', key, 'fails', b.fails, 'class', cls)
    return 'closed'
  end
  if prober then
    return open(model, b, now, math.min(b.cooldown * 2, COOLDOWN_CAP), 'probe_failed', cls)
  end
  redis.call('HSET', key, 'fails', b.fails, 'class', cls)
  return b.state
elseif mode == 'rates' then
  local out = {}
  for i = 7, #ARGV do
    local h = redis.call('HMGET', pfx .. 'models', 'ok:' .. ARGV[i], 'fail:' .. ARGV[i])
    out[#out + 1] = tonumber(h[1]) or 0
    out[#out + 1] = tonumber(h[2]) or 0
  end
  return out
elseif mode == 'state' then
  local now = now_ms()
  local models = redis.call('SMEMBERS', pfx .. 'breakers')
  table.sort(models)
  local out = {}
  for _, model in ipairs(models) do
    local b = load(model)
    local st, left = b.state, 0
    if st == 'open' then
      left = b.opened_at + b.cooldown - now
      if left <= 0 then st, left = 'half_open', 0 end
    elseif st == 'half_open' and b.probe ~= '' and b.probe_until > now then
      left = b.probe_until - now
    end
    out[#out + 1] = {model, st, b.fails, b.opened_at, left, b.opens, b.class}
  end
  return out
end
return redis.error_reply('breaker: mode must be choose, report, rates or state')
