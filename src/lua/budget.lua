-- budget: spend caps.  A budget (global, team:T, batch:B, model:M or route:R) has a limit per
-- window: an hour, day or month of the calendar in a time zone, or a lifetime total.  Before
-- every provider call the worker reserves the call's worst-case cost against every budget that
-- applies, in one atomic step, so concurrent workers can never overspend; afterwards it settles
-- the reservation to the actual cost (budget_settle in lib.lua, shared with reap.lua).
--
-- Redis' Lua has no time zones: `imgq budget set` computes the zone's UTC-offset transitions
-- (for about 2 years) and stores them with the definition; local time is now + the offset in
-- force now.  Re-run `imgq budget set` before they run out (`imgq budget list` warns).
--
-- ARGV: prefix, mode, then
--   reserve: job id, token, call key, amount micros (the catalog's ceiling), model, route,
--            drift cell "MODEL|QUALITY|WxH" or "", the part of the amount that is output
--            tokens or "" (all of it): that part is scaled by the cell's observed catalog
--            drift, P:{Q}:drift ppm:CELL, before the amount is reserved
--     -> {0, micros reserved} reserved | {-1} lease lost
--        | {1, wait ms (-1: until raised), budget, message}
--   settle:  job id, call key, cost micros, reason (usage|ceiling|failure|free|lost), model,
--            route, attempt, call index, usage JSON or "", provider request id or "",
--            observed output tokens / the catalog's table in millionths or "" (drift)
--     -> 1 settled | 0 already settled
--   block:   job id, token, wait ms (-1: until raised), budget, message
--     -> 1 blocked | 2 failed (the batch says on_budget_exhausted: fail) | 0 lease lost
--   set:     name, window (hour|day|month|total), tz, limit micros, soft micros (0: none),
--            transitions "epoch_ms:offset_s,...", webhook URL or "" (budget.threshold goes
--            there) -> {1, jobs woken}
--   del:     name -> {1 or 0, jobs woken}
--   get:     name -> a budget row or nil;  list: -> the rows, by name.  A row: {name, window,
--            tz, limit, soft, window id, start ms, end ms (-1: none), spent, reserved,
--            transitions end ms (-1: none)}
local mode = ARGV[2]
local BUDGETS = pfx .. 'budgets'
local FOREVER = 253402300799000 -- 9999-12-31T23:59:59Z: blocked until the budget changes
-- Over only because of calls still in flight: look again soon, their settlement may free it.
local INFLIGHT_RECHECK_MS = 10000
local DAY = 86400000

local function parse_tr(s)
  local tr = {}
  for ms, off in string.gmatch(s or '', '(%-?%d+):(%-?%d+)') do
    tr[#tr + 1] = {tonumber(ms), tonumber(off)}
  end
  return tr
end

-- UTC offset in seconds at t: the last transition at or before t (the first one before it).
local function offset_at(tr, t)
  local off = tr[1] and tr[1][2] or 0
  for _, e in ipairs(tr) do
    if e[1] <= t then off = e[2] else break end
  end
  return off
end

-- The UTC instant of a local time (the offset in force then).
local function to_utc(tr, l, off)
  local u = l - off * 1000
  local o2 = offset_at(tr, u)
  if o2 ~= off then u = l - o2 * 1000 end
  return u
end

-- The window of a budget at t: its id, start and end (ms; -1 when it never ends).
local function window_of(d, t)
  if d.window == 'total' then return 'total', 0, -1 end
  local tr = d.trl
  local off = offset_at(tr, t)
  local l = t + off * 1000
  local days = math.floor(l / DAY)
  local y, m, dd = civil_from_days(days)
  local s, e, id
  if d.window == 'hour' then
    local h = math.floor((l - days * DAY) / 3600000)
    s = days * DAY + h * 3600000
    e = s + 3600000
    id = string.format('%04d-%02d-%02dT%02d', y, m, dd, h)
  elseif d.window == 'day' then
    s = days * DAY
    e = s + DAY
    id = string.format('%04d-%02d-%02d', y, m, dd)
  else
    s = days_from_civil(y, m, 1) * DAY
    if m == 12 then e = days_from_civil(y + 1, 1, 1) * DAY
    else e = days_from_civil(y, m + 1, 1) * DAY end
    id = string.format('%04d-%02d', y, m)
  end
  return id, to_utc(tr, s, off), to_utc(tr, e, off)
end

local function load(name)
  local raw = redis.call('HGET', BUDGETS, name)
  if not raw then return nil end
  local d = cjson.decode(raw)
  d.name = name
  d.trl = parse_tr(d.tr)
  d.limit = tonumber(d.limit)
  d.soft = tonumber(d.soft) or 0
  return d
end

-- "$4.98", "$0.000123": micros as dollars, at least 2 decimals, no trailing zeros past them.
local function money(v)
  local neg = v < 0
  if neg then v = -v end
  local s = string.format('%d.%06d', math.floor(v / 1000000), v % 1000000)
  s = string.gsub(s, '0+$', '')
  local dot = string.find(s, '.', 1, true)
  while #s - dot < 2 do s = s .. '0' end
  return (neg and '-$' or '$') .. s
end

local function row(d, now)
  local id, s, e = window_of(d, now)
  local w = redis.call('HMGET', pfx .. 'bw:' .. d.name .. ':' .. id, 'spent', 'reserved')
  local horizon = d.trl[#d.trl] and d.trl[#d.trl][1] or -1
  return {d.name, d.window, d.tz or '', d.limit, d.soft, id, s, e, tonumber(w[1]) or 0,
    tonumber(w[2]) or 0, horizon}
end

-- Every blocked job looks again now (a budget changed).
local function wake_blocked(now)
  local ids = redis.call('ZRANGE', pfx .. 'blocked', 0, -1)
  for _, id in ipairs(ids) do
    redis.call('ZADD', pfx .. 'delayed', now, id)
    redis.call('ZADD', pfx .. 'blocked', now, id)
  end
  if #ids > 0 then redis.call('PUBLISH', pfx .. 'wake', #ids) end
  return #ids
end

if mode == 'reserve' then
  local id, tok, ck = ARGV[3], ARGV[4], ARGV[5]
  local amount = tonumber(ARGV[6])
  local model, route, cell = ARGV[7] or '', ARGV[8] or '', ARGV[9] or ''
  if not amount or amount < 0 or amount ~= math.floor(amount) then
    return redis.error_reply('budget reserve: amount must be whole micros >= 0')
  end
  if string.find(cell, ',', 1, true) or select(2, string.gsub(cell, '|', '')) ~= 2 and cell ~= ''
  then
    return redis.error_reply('budget reserve: drift cell must be MODEL|QUALITY|WxH')
  end
  local jk = pfx .. 'j:' .. id
  local h = redis.call('HMGET', jk, 'state', 'token', 'team', 'batch')
  if h[1] ~= 'running' or h[2] ~= tok then return {-1} end
  -- A retried reserve (its reply was lost) must not reserve twice.
  local held = redis.call('HGET', jk, 'resv:' .. ck)
  if held then return {0, tonumber(string.match(held, '^(%d+)')) or amount} end
  -- Catalog drift seen in this cell: the ceiling is what the provider was seen to charge.
  local base = amount
  local ppm = cell ~= '' and tonumber(redis.call('HGET', pfx .. 'drift', 'ppm:' .. cell)) or 0
  if ppm > 1000000 then
    local part = tonumber(ARGV[10]) or amount
    if part < 0 or part > amount then part = amount end
    amount = amount + math.ceil(part * (ppm - 1000000) / 1000000)
  end
  -- A job taken over after its worker died runs the same attempt again, so a call key can come
  -- back after its first call was settled (as lost): a new reservation is a new call to settle.
  redis.call('HDEL', jk, 'settled:' .. ck)
  local names = {'global'}
  if h[3] and h[3] ~= '' then names[#names + 1] = 'team:' .. h[3] end
  if h[4] and h[4] ~= '' then names[#names + 1] = 'batch:' .. h[4] end
  if model ~= '' then names[#names + 1] = 'model:' .. model end
  if route ~= '' then names[#names + 1] = 'route:' .. route end
  local now = now_ms()
  local wkeys = {}
  local worst = nil
  for _, name in ipairs(names) do
    local d = load(name)
    if d then
      local wid, _, e = window_of(d, now)
      local wkey = 'bw:' .. name .. ':' .. wid
      local w = redis.call('HMGET', pfx .. wkey, 'spent', 'reserved')
      local spent, reserved = tonumber(w[1]) or 0, tonumber(w[2]) or 0
      if spent + reserved + amount > d.limit then
        local wait = e < 0 and -1 or e - now
        if spent + amount <= d.limit then
          wait = (wait < 0 or wait > INFLIGHT_RECHECK_MS) and INFLIGHT_RECHECK_MS or wait
        end
        if not worst or worst.wait >= 0 and (wait < 0 or wait > worst.wait) then
          local where = d.window == 'total' and 'total' or
            (d.window .. ' ' .. wid .. ' (' .. (d.tz or 'UTC') .. ')')
          worst = {wait = wait, name = name, msg = 'budget \'' .. name .. '\' ' .. where ..
            ': ' .. money(spent) .. ' spent + ' .. money(reserved) .. ' reserved + ' ..
            money(amount) .. ' > ' .. money(d.limit)}
        end
      end
      wkeys[#wkeys + 1] = wkey
    end
  end
  if worst then return {1, worst.wait, worst.name, worst.msg} end
  for _, wkey in ipairs(wkeys) do
    redis.call('HINCRBY', pfx .. wkey, 'reserved', amount)
    budget_soft_check(wkey, now)
  end
  redis.call('HSET', jk, 'resv:' .. ck, string.format('%d|%s|%s|%s|%s|%d', amount,
    table.concat(wkeys, ','), model, route, cell, base))
  -- The batch counts its open reservations: it completes when none is left (batch_move).
  if h[4] and h[4] ~= '' then redis.call('HINCRBY', pfx .. 'b:' .. h[4], 'open_calls', 1) end
  return {0, amount}
elseif mode == 'settle' then
  return budget_settle(ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10],
    ARGV[11], ARGV[12], ARGV[13])
elseif mode == 'block' then
  local id, tok, wait, name, msg = ARGV[3], ARGV[4], tonumber(ARGV[5]) or -1, ARGV[6], ARGV[7]
  local jk = pfx .. 'j:' .. id
  local h = redis.call('HMGET', jk, 'state', 'token', 'batch')
  if h[1] ~= 'running' or h[2] ~= tok then return 0 end
  local now = now_ms()
  local batch = h[3]
  redis.call('HDEL', jk, 'token')
  coalesce_release(id, jk)
  redis.call('ZREM', pfx .. 'leases', id)
  -- Waiting for money is not a failed attempt.
  redis.call('HINCRBY', jk, 'attempts', -1)
  local err = cjson.encode({class = 'budget', budget = name, message = msg, time = now})
  log_attempt(jk, err)
  if redis.call('HGET', pfx .. 'b:' .. batch, 'on_budget_exhausted') == 'fail' then
    redis.call('HSET', jk, 'state', 'failed', 'error', err, 'finished', now)
    ended(id, now)
    bury(id)
    emit('job.failed', 'job', id, 'batch', batch, 'error', err)
    batch_move(batch, 'running', 'failed')
    return 2
  end
  local due = wait < 0 and FOREVER or now + wait
  redis.call('HSET', jk, 'state', 'blocked_budget', 'blocked', msg)
  redis.call('ZADD', pfx .. 'delayed', due, id)
  redis.call('ZADD', pfx .. 'blocked', due, id)
  emit('job.blocked', 'job', id, 'batch', batch, 'budget', name, 'wait_ms', wait,
    'message', msg)
  batch_move(batch, 'running', 'blocked_budget')
  return 1
elseif mode == 'set' then
  local name, window, tz = ARGV[3], ARGV[4], ARGV[5]
  local limit, soft, tr = tonumber(ARGV[6]), tonumber(ARGV[7]) or 0, ARGV[8] or ''
  local webhook = ARGV[9] or ''
  local kind = string.match(name or '', '^(%a+)')
  if not (name == 'global' or ((kind == 'team' or kind == 'batch' or kind == 'model' or
      kind == 'route') and string.match(name, '^%a+:[^,|]+$'))) then
    return redis.error_reply('budget set: bad name ' .. tostring(name))
  end
  if window ~= 'hour' and window ~= 'day' and window ~= 'month' and window ~= 'total' then
    return redis.error_reply('budget set: bad window ' .. tostring(window))
  end
  if not limit or limit < 0 or soft < 0 then
    return redis.error_reply('budget set: limit and soft must be micros >= 0')
  end
  if window ~= 'total' and #parse_tr(tr) == 0 then
    return redis.error_reply('budget set: a ' .. window .. ' window needs the zone transitions')
  end
  local now = now_ms()
  redis.call('HSET', BUDGETS, name, cjson.encode({window = window,
    tz = window ~= 'total' and tz or '', limit = tostring(limit), soft = tostring(soft),
    tr = window ~= 'total' and tr or '', set = tostring(now),
    webhook = webhook ~= '' and webhook or nil}))
  emit('budget.set', 'budget', name, 'window', window, 'limit_micros', limit)
  return {1, wake_blocked(now)}
elseif mode == 'del' then
  local n = redis.call('HDEL', BUDGETS, ARGV[3])
  return {n, n > 0 and wake_blocked(now_ms()) or 0}
elseif mode == 'get' then
  local d = load(ARGV[3])
  if not d then return false end
  return row(d, now_ms())
elseif mode == 'list' then
  local names = redis.call('HKEYS', BUDGETS)
  table.sort(names)
  local now = now_ms()
  local out = {}
  for _, name in ipairs(names) do out[#out + 1] = row(load(name), now) end
  return out
end
return redis.error_reply('budget: unknown mode ' .. tostring(mode))
