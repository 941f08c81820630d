-- lib.lua: helpers prepended to every imgq script (see embed.cmake).
--
-- Key layout.  All keys of a queue share the hash tag {Q}, so a queue lives in one Redis
-- Cluster slot; KEYS[1] is always P:{Q}:stats, which routes the call to that slot, and the
-- other keys are built from ARGV[1] = "P:{Q}:".
--   P:{Q}:stats          HASH  queue-wide counters by state (queued, running, retrying, ...)
--   P:{Q}:q:PRIO:BATCH   LIST  ready jobs of one batch at one priority, oldest first: a job id,
--                              or a whole job that has not run yet (a packed job, see below)
--   P:{Q}:rr:PRIO        LIST  ring of batches with ready jobs at PRIO, served round-robin
--   P:{Q}:delayed        ZSET  job id by due time in ms (retries waiting out their backoff)
--   P:{Q}:leases         ZSET  job id by lease deadline in ms (running jobs)
--   P:{Q}:ids            HASH  job id -> its batch: every job the queue holds.  A job's id is
--                              derived from its idempotency key (imgq_job_id_for), so this is
--                              also the idempotency index
--   P:{Q}:idem           HASH  idempotency key -> job id, of jobs stored before ids were derived
--                              from the key (read by submit while it exists; emptied by reap)
--   P:{Q}:batches        ZSET  batch id by creation time
--   P:{Q}:dead           ZSET  dead-lettered job ids by time, capped
--   P:{Q}:events         STREAM job and batch transitions, capped
--   P:{Q}:paused         STRING present while the whole queue is paused
--   P:{Q}:gates          ZSET  batches outside their dispatch window, by next opening time
--   P:{Q}:deadlines      ZSET  batches with a deadline, by deadline
--   P:{Q}:clock_offset   STRING ms added to Redis' clock (rehearsals and tests: imgq clock)
--   P:{Q}:ended          ZSET  ended jobs by end time, deleted after the retention
--   P:{Q}:finished       ZSET  finished batches by finish time, deleted after the retention
--   P:{Q}:retention_ms   STRING how long ended jobs and finished batches are kept
--   P:{Q}:orphans        ZSET  jobs cancelled while running, by their lease deadline: the
--                              reaper then charges reservations a dead worker left
--   P:{Q}:models         HASH  ok:MODEL / fail:MODEL provider call outcomes (routing)
--   P:{Q}:budgets        HASH  budget name (global, team:T, batch:B, model:M, route:R) -> JSON
--                              definition (window, tz, limit, soft, UTC-offset transitions)
--   P:{Q}:bw:NAME:WINDOW HASH  one budget window (2026-11-22, 2026-11, 2026-11-22T14, total):
--                              spent, reserved (micros), soft (set once the threshold fired)
--   P:{Q}:blocked        ZSET  jobs waiting in blocked_budget, by the time they look again
--   P:{Q}:ledger         STREAM one entry per provider call attempt (what it cost and why)
--   P:{Q}:spent          HASH  total: micros charged in the ledger, all time
--   P:{Q}:drift          HASH  catalog drift (usage priced above the reserved ceiling), per
--                              cell CELL = "MODEL|QUALITY|WxH": ppm:CELL (the highest observed
--                              cost / catalog ceiling, in millionths; reservations of the cell
--                              are scaled by it), count:CELL, last:CELL (JSON), and events
--   P:{Q}:j:ID           HASH  the job (resv:CALLKEY / settled:CALLKEY: budget reservations
--                              of provider calls, CALLKEY = ATTEMPT.CALL.TRY); its fields are
--                              short, so Redis keeps it as a compact listpack
--   P:{Q}:j:ID:s         STRING the job's spec (JSON): apart, since one long value would turn
--                              the whole hash into a hashtable (twice the memory per job)
--   P:{Q}:b:ID           HASH  batch counters (total, queued, running, ..., cost, images)
--   P:{Q}:b:ID:jobs      LIST  the batch's job ids in submission order
--   P:{Q}:wake           pub/sub channel that wakes idle workers
--   P:{Q}:objects        ZSET  stored object keys by time: the dedup index (coalesce.lua)
--   P:{Q}:inflight:G     STRING the job leading identical requests G (coalesce.lua)
--   P:{Q}:co:G           LIST  jobs parked behind it
-- Webhooks (the outbox; see outbox_put): events for a job's, batch's or budget's webhook URL
-- are written here in the same script as the state change they report, then delivered by
-- the workers (workers/webhooks.c, webhook.lua) with retries.
--   P:{Q}:whm:MSGID      HASH  one message: url, type, body (the exact JSON sent), job, batch,
--                              created, state (pending | delivered | failed | disabled),
--                              attempts, next (due ms), last (what the last attempt got)
--   P:{Q}:whdue          ZSET  message ids to deliver, by due time in ms
--   P:{Q}:whlog          ZSET  every message id by creation time (listing, retention)
--   P:{Q}:whseq          STRING message sequence (ids are msg_<created ms>_<seq>)
--   P:{Q}:whwake         pub/sub channel that tells workers a message is due now
-- A packed job: a job submitted to run now waits as one entry of its ready list,
-- "ID␟CREATED␟TEAM␟MAX_ATTEMPTS␟SPEC" (␟ = \31, which ids, times, teams and numbers never
-- hold), with no keys of its own but its ids entry; its hash and spec key are written when it
-- leaves the list (claimed, cancelled, expired).  Redis keeps a list's entries in listpacks, a
-- few bytes apiece, where a key of its own costs ~90 bytes and a hash ~200: a waiting job takes
-- about its spec's size.  C readers find one by its batch's lists (imgq_queue_jobs_info).
-- Priorities are strict (0 high, 1 normal, 2 low); within a priority, batches take turns, so a
-- small batch is not starved by a large one submitted before it; within a batch, FIFO.
local pfx = ARGV[1]
local STATS = KEYS[1]
local DEAD_CAP = 10000
local EVENTS_CAP = 10000

-- The queue's clock is Redis' clock (one clock for every worker and host), shifted by an
-- offset that tests and rehearsals set to reach a window or a deadline without waiting.  Read
-- once per script call, when first needed (a script is one instant: it runs atomically).
local NOW
local function now_ms()
  if not NOW then
    local t = redis.call('TIME')
    local offset = tonumber(redis.call('GET', pfx .. 'clock_offset') or '0') or 0
    NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + offset
  end
  return NOW
end
-- The same as a string, for commands (see batch_move).
local NOW_S
local function now_str()
  if not NOW_S then NOW_S = tostring(now_ms()) end
  return NOW_S
end

-- How long ended jobs and finished batches are kept (imgq retention), 7 days by default; read
-- only by the scripts that need it.
local function retention_ms()
  return tonumber(redis.call('GET', pfx .. 'retention_ms') or '604800000') or 604800000
end

-- The spec of job key jk (jobs stored before the spec had its own key keep it in the hash).
local function job_spec(jk)
  return redis.call('GET', jk .. ':s') or redis.call('HGET', jk, 'spec')
end

-- A draft job of a pipeline ended (pipeline_child_ended, defined with the queue helpers).
local pipeline_child_ended

-- A job reached an end state: it is deleted, with its idempotency key, after the retention.
-- A pipeline's draft job that ends moves its parent on (or fails it).
-- The pipeline job a draft job belongs to, or false: read once per job per script call (a
-- completion asks three times: ended, the batch's image count, the webhook).
local PARENT = {}
local function job_parent(id)
  local p = PARENT[id]
  if p == nil then
    p = redis.call('HGET', pfx .. 'j:' .. id, 'parent') or false
    PARENT[id] = p
  end
  return p
end

local function ended(id, now)
  redis.call('ZADD', pfx .. 'ended', now == NOW and now_str() or now, id)
  local parent = job_parent(id)
  if parent then pipeline_child_ended(parent, id, now) end
end

local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function civil_from_days(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) -
    math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m, d
end

-- RFC 3339 UTC time with milliseconds, e.g. 2026-11-22T09:40:16.123Z.
local function iso_time(ms)
  local days = math.floor(ms / 86400000)
  local y, m, d = civil_from_days(days)
  local r = ms - days * 86400000
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', y, m, d, math.floor(r / 3600000),
    math.floor(r / 60000) % 60, math.floor(r / 1000) % 60, r % 1000)
end

-- Writes one webhook message to the outbox (see the key layout): the body is built here, once,
-- so every retry sends the same bytes under the same webhook-id.  Standard Webhooks payload:
-- {"type": ..., "timestamp": ..., "data": DATA}, DATA being JSON text.  Returns the message id.
local function outbox_put(kind, url, data, job, batch)
  local now = now_ms()
  local id = 'msg_' .. now .. '_' .. redis.call('INCR', pfx .. 'whseq')
  local body = '{"type":' .. cjson.encode(kind) .. ',"timestamp":"' .. iso_time(now) ..
    '","data":' .. data .. '}'
  redis.call('HSET', pfx .. 'whm:' .. id, 'url', url, 'type', kind, 'body', body,
    'job', job or '', 'batch', batch or '', 'created', now, 'state', 'pending', 'attempts', 0,
    'next', now)
  redis.call('ZADD', pfx .. 'whdue', now, id)
  redis.call('ZADD', pfx .. 'whlog', now, id)
  redis.call('PUBLISH', pfx .. 'whwake', id)
  return id
end

-- Events that reach webhooks.
local WEBHOOK_EVENTS = {['job.completed'] = true, ['job.failed'] = true,
  ['job.review'] = true, ['batch.completed'] = true, ['selection.required'] = true}

-- The type of field k of event kind (EVENT_FIELDS, from event_fields.def): 'string', 'int' or
-- 'json'.
local function event_field_type(kind, k)
  return EVENT_FIELDS[kind .. ' ' .. k] or EVENT_FIELDS['* ' .. k] or 'string'
end

-- The JSON text of an int field's value: its digits (not a Lua number through cjson, which
-- writes 1e+12 for a trillion micros), or null when the value is not an integer.
local function json_int(v)
  if type(v) == 'number' then
    if v == math.floor(v) and v > -1e15 and v < 1e15 then return string.format('%d', v) end
    return 'null'
  end
  v = tostring(v)
  if string.match(v, '^%-?%d+$') then return v end
  return 'null'
end

-- The raw text of the JSON value that starts at position s of 'text' (an object, an array, a
-- string or a scalar), or nil if it does not end.  Strings are skipped with their escapes.
local function json_value_at(text, s)
  local depth, i, n = 0, s, #text
  while i <= n do
    local c = string.byte(text, i)
    if c == 34 then -- a string: to its closing quote
      i = i + 1
      while i <= n do
        local d = string.byte(text, i)
        if d == 92 then i = i + 1 elseif d == 34 then break end
        i = i + 1
      end
      if depth == 0 then return string.sub(text, s, i) end
    elseif c == 123 or c == 91 then depth = depth + 1
    elseif c == 125 or c == 93 then
      if depth == 0 then return string.sub(text, s, i - 1) end
      depth = depth - 1
      if depth == 0 then return string.sub(text, s, i) end
    elseif c == 44 and depth == 0 then return string.sub(text, s, i - 1)
    end
    i = i + 1
  end
  return nil
end

-- JSON documents are put into webhook bodies as the exact text they were stored as: decoding
-- and encoding them again with Redis' cjson would turn [] into {} and round numbers to 14
-- digits (a customer's 17-digit id in metadata).  'text' must be valid JSON; else a string.
local function raw_json(text)
  if type(text) == 'string' and pcall(cjson.decode, text) then return text end
  return cjson.encode(tostring(text))
end

-- The webhook of an event: a job's event goes to the job's URL, else its batch's; a batch's
-- to the batch's; budget.threshold to the URL given (budget_soft_check).  Each field of the
-- payload has its type of event_fields.def.
-- Webhook URLs already read in this script call: JOB_HOOK[id] (seeded by complete.lua, which
-- reads the job's fields at once), BATCH_HOOK[batch]; false = none.
local JOB_HOOK, BATCH_HOOK = {}, {}
local function notify(kind, fields, url)
  -- Where it goes first: most events go nowhere, and then nothing else is worth doing.
  local job, batch
  for i = 1, #fields - 1, 2 do
    if fields[i] == 'job' then job = fields[i + 1] elseif fields[i] == 'batch' then
      batch = fields[i + 1]
    end
  end
  local jk = job and pfx .. 'j:' .. job
  if jk then
    -- A pipeline's draft job is its parent's business: the parent's events report it.
    if job_parent(job) then return end
    if not url then
      url = JOB_HOOK[job]
      if url == nil then url = redis.call('HGET', jk, 'webhook') end
    end
  end
  if not url and batch and batch ~= '' then
    url = BATCH_HOOK[batch]
    if url == nil then
      url = redis.call('HGET', pfx .. 'b:' .. batch, 'webhook')
      BATCH_HOOK[batch] = url
    end
  end
  if not url or url == '' then return end
  -- data: the string fields (cjson encodes them); raw: the JSON text of the others, in order.
  local data, raw, order = {}, {}, {}
  local function put(k, v)
    local t = event_field_type(kind, k)
    if t == 'string' then
      data[k] = tostring(v)
      return
    end
    if not raw[k] then order[#order + 1] = k end
    raw[k] = t == 'int' and json_int(v) or raw_json(v)
  end
  for i = 1, #fields - 1, 2 do put(fields[i], fields[i + 1]) end
  if jk then
    local h = redis.call('HMGET', jk, 'result', 'result', 'cost', 'state', 'draft_cost')
    h[1] = job_spec(jk)
    -- The job's metadata, as submitted: the spec (imgq_job_spec_to_json) has no object before
    -- it, so the first "metadata": is its own key.
    local at = h[1] and string.find(h[1], '"metadata":', 1, true)
    local md = at and json_value_at(h[1], at + 11)
    if md then
      if not raw.metadata then order[#order + 1] = 'metadata' end
      raw.metadata = md
    end
    if kind == 'job.completed' and h[2] then put('result', h[2]) end
    -- A pipeline job's cost includes its drafts'.
    put('cost_micros', (tonumber(h[3]) or 0) + (tonumber(h[5]) or 0))
    if h[4] then put('state', h[4]) end
  end
  local text = cjson.encode(data)
  local parts = {}
  for _, k in ipairs(order) do parts[#parts + 1] = cjson.encode(k) .. ':' .. raw[k] end
  if #parts > 0 then
    text = (text == '{}' and '{' or string.sub(text, 1, -2) .. ',') .. table.concat(parts, ',') ..
      '}'
  end
  outbox_put(kind, url, text, data.job, data.batch)
end

-- Records an event in the events stream and, for the events webhooks receive, in the outbox
-- of the URL it goes to (the same atomic step as the state change it reports).
local EVENTS_CAP_S = tostring(EVENTS_CAP)
local function emit(kind, ...)
  redis.call('XADD', pfx .. 'events', 'MAXLEN', '~', EVENTS_CAP_S, '*', 'type', kind, ...)
  if WEBHOOK_EVENTS[kind] then notify(kind, {...}) end
end

-- batch.completed: a batch is complete when every job has ended AND every budget reservation
-- of its provider calls is settled (P:{Q}:b:ID open_calls = 0), so the event's cost_micros is
-- final: a job cancelled while its call is in flight is charged when that call ends, and only
-- then does the batch complete.  Until then the batch is finished (its jobs ended) but
-- 'completing'.  A batch revived after it completed (dlq retry, a new submission into it)
-- completes again: 'completion' numbers the events of a batch (1, 2, ...), so each event is
-- emitted exactly once and (batch, completion) identifies it.
local function batch_completed(batch)
  local bk = pfx .. 'b:' .. batch
  redis.call('HDEL', bk, 'completing')
  local c = redis.call('HMGET', bk, 'total', 'done', 'failed', 'canceled', 'expired', 'review',
    'cost', 'images', 'draft_jobs')
  local completion = redis.call('HINCRBY', bk, 'completions', 1)
  -- (counts include the draft jobs of pipelines, 'drafts' of them; images do not)
  emit('batch.completed', 'batch', batch, 'completion', completion, 'total', c[1] or 0,
    'done', c[2] or 0, 'failed', c[3] or 0, 'canceled', c[4] or 0, 'expired', c[5] or 0,
    'review', c[6] or 0, 'cost_micros', c[7] or 0, 'images', c[8] or 0, 'drafts', c[9] or 0)
end

-- Moves n jobs of a batch from one state counter to another (batch and queue counters), and
-- stamps the batch finished when every job has ended; batch.completed follows once its open
-- reservations are settled (batch_completed).
local function batch_move(batch, from, to, n)
  local bk = pfx .. 'b:' .. batch
  -- (arguments as strings: Redis formats a Lua number with %.17g, which costs more than the
  -- command here)
  local up, down = '1', '-1'
  if n and n ~= 1 then up, down = tostring(n), tostring(-n) end
  if from then
    redis.call('HINCRBY', bk, from, down)
    redis.call('HINCRBY', STATS, from, down)
  end
  if to then
    redis.call('HINCRBY', bk, to, up)
    redis.call('HINCRBY', STATS, to, up)
  end
  if to == 'done' or to == 'failed' or to == 'canceled' or to == 'expired' or to == 'review' then
    local c = redis.call('HMGET', bk, 'total', 'done', 'failed', 'canceled', 'expired', 'review',
      'open_calls')
    local over = (tonumber(c[2]) or 0) + (tonumber(c[3]) or 0) + (tonumber(c[4]) or 0) +
      (tonumber(c[5]) or 0) + (tonumber(c[6]) or 0)
    if over >= (tonumber(c[1]) or 0) and redis.call('HSETNX', bk, 'finished', now_ms()) == 1 then
      redis.call('ZADD', pfx .. 'finished', now_ms(), batch)
      if (tonumber(c[7]) or 0) > 0 then
        redis.call('HSET', bk, 'completing', 1)
      else
        batch_completed(batch)
      end
      redis.call('ZREM', pfx .. 'deadlines', batch)
      redis.call('ZREM', pfx .. 'gates', batch)
      redis.call('HDEL', bk, 'gated')
    end
  end
end

-- Budgets.  A reservation of a provider call is kept on the job as resv:CALLKEY =
-- "AMOUNT|WINDOWKEY,WINDOWKEY,...|MODEL|ROUTE|CELL|CEILING" (window keys relative to the
-- prefix: "bw:..."), so that its settlement goes to the windows it was reserved in, even after
-- they rolled over.  CELL and CEILING (the catalog's ceiling before any drift scaling; CELL
-- itself holds '|') let the settlement see catalog drift; older reservations have neither.
-- Fires budget.threshold once per window when spent + reserved reaches the soft threshold.
local function budget_soft_check(wkey, now)
  local name = string.match(wkey, '^bw:(.*):[^:]*$')
  local def = name and redis.call('HGET', pfx .. 'budgets', name)
  if not def then return end
  local okd, d = pcall(cjson.decode, def)
  local soft = okd and tonumber(d.soft) or 0
  if soft <= 0 then return end
  local w = redis.call('HMGET', pfx .. wkey, 'spent', 'reserved')
  local used = (tonumber(w[1]) or 0) + (tonumber(w[2]) or 0)
  if used >= soft and redis.call('HSETNX', pfx .. wkey, 'soft', now) == 1 then
    local win = string.match(wkey, ':([^:]*)$')
    local fields = {'budget', name, 'window', win, 'used_micros', used, 'soft_micros', soft,
      'limit_micros', d.limit or ''}
    emit('budget.threshold', unpack(fields))
    -- Its webhook: the one the budget was set with, else a batch budget's batch's.
    local url = d.webhook
    local b = string.match(name, '^batch:(.*)$')
    if (not url or url == '') and b then url = redis.call('HGET', pfx .. 'b:' .. b, 'webhook') end
    if url and url ~= '' then notify('budget.threshold', fields, url) end
    redis.log(redis.LOG_WARNING, 'imgq: budget ' .. name .. ' window ' .. win .. ': ' .. used ..
      ' micros spent or reserved, soft threshold ' .. soft)
  end
end

-- Catalog drift: a call priced from its usage above what was reserved for it.  The cell's
-- ceiling adapts to the highest ratio observed: the call's output tokens over the catalog's
-- table for its images (observed, in millionths, from the worker), else its cost over the
-- catalog's ceiling; budget.lua reserve scales the cell's later reservations by it, and the
-- overshoot is reported as a catalog.drift event.
local function drift_check(id, cell, base, reserved, cost, model, observed)
  if cell == '' or base <= 0 or cost <= reserved then return end
  local dk = pfx .. 'drift'
  local ppm = (observed and observed > 1000000) and observed or math.ceil(cost * 1000000 / base)
  local was = tonumber(redis.call('HGET', dk, 'ppm:' .. cell)) or 1000000
  if ppm > was then redis.call('HSET', dk, 'ppm:' .. cell, ppm) else ppm = was end
  redis.call('HINCRBY', dk, 'count:' .. cell, 1)
  redis.call('HINCRBY', dk, 'events', 1)
  local _, quality, size = string.match(cell, '^([^|]*)|([^|]*)|([^|]*)$')
  redis.call('HSET', dk, 'last:' .. cell, cjson.encode({job = id, reserved_micros = reserved,
    actual_micros = cost, ceiling_micros = base, t = now_ms()}))
  emit('catalog.drift', 'job', id, 'model', model or '', 'quality', quality or '', 'size',
    size or '', 'reserved_micros', reserved, 'actual_micros', cost, 'ceiling_micros', base,
    'ceiling_ppm', ppm)
  redis.log(redis.LOG_WARNING, 'imgq: catalog drift on ' .. cell .. ': ' .. cost ..
    ' micros from usage, ' .. reserved .. ' reserved; its ceiling is now x' .. ppm / 1000000)
end

-- Settles one provider call of a job, once per call key (a re-delivered outcome is not
-- charged twice): its reservation, if any, becomes 'cost' spent in the windows it was
-- reserved in; one ledger entry records the call (unless it was free and cost nothing).
-- reason: usage | ceiling | failure | free | lost.  Returns 1, or 0 if already settled.
local function budget_settle(id, ck, cost, reason, model, route, attempt, call, usage, reqid,
  drift_ppm)
  local jk = pfx .. 'j:' .. id
  cost = tonumber(cost) or 0
  local existed = redis.call('EXISTS', jk) == 1
  if redis.call('HSETNX', jk, 'settled:' .. ck, cost) == 0 then return 0 end
  local now = now_ms()
  -- A late outcome for a job already deleted: the marker is deleted after the retention too.
  if not existed then ended(id, now) end
  local resv = redis.call('HGET', jk, 'resv:' .. ck)
  if resv then
    local amount, wkeys = string.match(resv, '^(%d+)|([^|]*)')
    amount = tonumber(amount) or 0
    local cell, base = string.match(resv, '^%d+|[^|]*|[^|]*|[^|]*|(.*)|(%d+)$')
    if reason == 'usage' and cell then
      drift_check(id, cell, tonumber(base) or 0, amount, cost, model, tonumber(drift_ppm))
    end
    for wkey in string.gmatch(wkeys or '', '[^,]+') do
      redis.call('HINCRBY', pfx .. wkey, 'reserved', -amount)
      redis.call('HINCRBY', pfx .. wkey, 'spent', cost)
      if cost > amount then budget_soft_check(wkey, now) end
    end
    redis.call('HDEL', jk, 'resv:' .. ck)
  end
  local batch = resv and redis.call('HGET', jk, 'batch')
  if cost ~= 0 or reason ~= 'free' then
    local h = redis.call('HMGET', jk, 'batch', 'team')
    redis.call('XADD', pfx .. 'ledger', '*', 'job', id, 'batch', h[1] or '', 'team', h[2] or '',
      'attempt', attempt or '', 'call', call or '', 'key', ck, 'model', model or '',
      'route', route or '', 'cost', cost, 'reason', reason, 'usage', usage or '',
      'request_id', reqid or '', 't', now)
    redis.call('HINCRBY', pfx .. 'spent', 'total', cost)
    -- Paid generations of the job, once per run of an attempt (a call key's "ATTEMPT.CALL.
    -- TRY-CLAIM" less its call and try): seed 002's attempt cap per asset counts them.
    if existed and cost > 0 and (reason == 'usage' or reason == 'ceiling' or reason == 'lost') then
      local run = string.match(ck, '^(%d+)%.') .. '-' .. (string.match(ck, '%-(%w+)$') or '')
      if redis.call('HSETNX', jk, 'gen:' .. run, 1) == 1 then
        redis.call('HINCRBY', jk, 'generations', 1)
      end
    end
    -- The job's and batch's cost are the sum of their settlements: one source for the
    -- ledger, the reports and the batch totals, whatever happened to the attempt.
    if existed and cost ~= 0 then
      redis.call('HINCRBY', jk, 'cost', cost)
      if h[1] and h[1] ~= '' then redis.call('HINCRBY', pfx .. 'b:' .. h[1], 'cost', cost) end
    end
  end
  -- One reservation of the batch fewer open (budget.lua reserve counts them): the last one of a
  -- finished batch completes it, its cost now final.
  if batch and batch ~= '' then
    local bk = pfx .. 'b:' .. batch
    if redis.call('HINCRBY', bk, 'open_calls', -1) <= 0 then
      redis.call('HDEL', bk, 'open_calls')
      if redis.call('HEXISTS', bk, 'completing') == 1 then
        if redis.call('HEXISTS', bk, 'finished') == 1 then
          batch_completed(batch)
        else
          redis.call('HDEL', bk, 'completing')
        end
      end
    end
  end
  return 1
end

-- Counts a provider outcome for the model that served the attempt (a fallback's outcome is
-- its own, not the asked model's): the router prefers models that succeed.  served: that
-- model, or nil/'' for the job's stored model.
local function model_outcome(jk, ok, served)
  local model = served ~= '' and served or nil
  if not model then
    -- The spec's first "model" key is its own (imgq_job_spec_to_json puts no object before
    -- it, and a quote inside a string value is escaped): no need to decode the whole spec.
    local spec = job_spec(jk)
    model = spec and string.match(spec, '"model":"([^"\\]+)"')
  end
  if model then
    redis.call('HINCRBY', pfx .. 'models', (ok and 'ok:' or 'fail:') .. model, 1)
  end
end

-- Appends one line to the job's attempt log, keeping the newest 8 KiB.
local function log_attempt(jk, line)
  local log = redis.call('HGET', jk, 'log') or ''
  log = log .. line .. '\n'
  if #log > 8192 then log = string.sub(log, -8192) end
  redis.call('HSET', jk, 'log', log)
end

-- Paused by an operator, or outside its dispatch window: either way, off the rings.
local function batch_paused(batch)
  local h = redis.call('HMGET', pfx .. 'b:' .. batch, 'paused', 'gated')
  return h[1] ~= false or h[2] ~= false
end

-- Puts a batch's non-empty ready lists back on the rings.
local function unpark(batch)
  for prio = 0, 2 do
    local ring = pfx .. 'rr:' .. prio
    redis.call('LREM', ring, 0, batch)
    if redis.call('LLEN', pfx .. 'q:' .. prio .. ':' .. batch) > 0 then
      redis.call('RPUSH', ring, batch)
    end
  end
end

-- Window check.  'windows' is the batch's dispatch plan, "open,close;open,close;..." in ms,
-- sorted (the CLI expands a daily window in a time zone into it).  Returns true when open,
-- else false and the next opening time (-1 when the plan has run out).
local function window_open(windows, now)
  for o, c in string.gmatch(windows, '(%d+),(%d+)') do
    o, c = tonumber(o), tonumber(c)
    if now < o then return false, o end
    if now < c then return true end
  end
  return false, -1
end

-- A packed job's list entry.
local function pack_job(id, created, team, maxa, spec)
  return id .. '\31' .. created .. '\31' .. team .. '\31' .. maxa .. '\31' .. spec
end

-- The parts of a packed job (id, created, team, max attempts, spec), or nil for a job id.
local function unpack_job(e)
  if not string.find(e, '\31', 1, true) then return nil end
  return string.match(e, '^([^\31]*)\31([^\31]*)\31([^\31]*)\31([^\31]*)\31(.*)$')
end

-- Gives a packed job (its parts from unpack_job) its hash, in 'state' with more fields, and its
-- spec key.  Returns the hash's key.
local function unpack_to_keys(id, created, team, maxa, spec, prio, batch, state, ...)
  local jk = pfx .. 'j:' .. id
  redis.call('SET', jk .. ':s', spec)
  redis.call('HSET', jk, 'state', state, 'batch', batch, 'team', team, 'prio', prio,
    'max_attempts', maxa, 'created', created, 'cost', '0', ...)
  -- The job's own webhook, where its events go (notify); a plain search first, so jobs without
  -- one cost no decoding.
  if string.find(spec, '"webhook"', 1, true) then
    local oks, s = pcall(cjson.decode, spec)
    if oks and type(s) == 'table' and type(s.webhook) == 'string' then
      redis.call('HSET', jk, 'webhook', s.webhook)
    end
  end
  return jk
end

-- Ends every ready job of a batch in 'state' (cancelled, expired): its ready lists are dropped
-- whole instead of one LREM per job.  Returns how many.
local function end_ready(batch, state, now)
  local n = 0
  for prio = 0, 2 do
    local list = pfx .. 'q:' .. prio .. ':' .. batch
    local ids = redis.call('LRANGE', list, 0, -1)
    redis.call('DEL', list)
    redis.call('LREM', pfx .. 'rr:' .. prio, 0, batch)
    for _, e in ipairs(ids) do
      local id, created, team, maxa, spec = unpack_job(e)
      if id then
        unpack_to_keys(id, created, team, maxa, spec, prio, batch, state, 'attempts', '0',
          'finished', now)
      else
        id = e
        redis.call('HSET', pfx .. 'j:' .. id, 'state', state, 'finished', now)
      end
      ended(id, now)
    end
    if #ids > 0 then batch_move(batch, 'queued', state, #ids) end
    n = n + #ids
  end
  return n
end

-- Ends every job of a batch that has not started: its deadline passed.
local function expire_batch(batch, now)
  local n = end_ready(batch, 'expired', now)
  for _, id in ipairs(redis.call('LRANGE', pfx .. 'b:' .. batch .. ':jobs', 0, -1)) do
    local jk = pfx .. 'j:' .. id
    local st = redis.call('HGET', jk, 'state')
    if st == 'scheduled' or st == 'retrying' or st == 'blocked_budget' or st == 'coalesced' or
        st == 'awaiting_selection' or st == 'paused' then
      redis.call('ZREM', pfx .. 'delayed', id)
      redis.call('ZREM', pfx .. 'blocked', id)
      redis.call('HSET', jk, 'state', 'expired', 'finished', now)
      ended(id, now)
      -- (a paused job is counted as 'paused_jobs': the batch's 'paused' is its own pause)
      batch_move(batch, st == 'paused' and 'paused_jobs' or st, 'expired')
      n = n + 1
    end
  end
  redis.call('ZREM', pfx .. 'deadlines', batch)
  redis.call('ZREM', pfx .. 'gates', batch)
  redis.call('HDEL', pfx .. 'b:' .. batch, 'gated')
  if n > 0 then emit('batch.expired', 'batch', batch, 'jobs', n) end
  return n
end

-- Puts a job on its batch's ready list (at the front when it is going back after a failure
-- of its worker, so it keeps its place) and its batch on the ring if the list was empty.
local function make_ready(id, prio, batch, front)
  local list = pfx .. 'q:' .. prio .. ':' .. batch
  local len
  if front then len = redis.call('LPUSH', list, id) else len = redis.call('RPUSH', list, id) end
  if len == 1 and not batch_paused(batch) then
    redis.call('RPUSH', pfx .. 'rr:' .. prio, batch)
  end
end

-- Moves a failed job to the dead-letter set (capped: the oldest entries fall off).
local function bury(id)
  redis.call('ZADD', pfx .. 'dead', now_ms(), id)
  local n = redis.call('ZCARD', pfx .. 'dead')
  if n > DEAD_CAP then redis.call('ZREMRANGEBYRANK', pfx .. 'dead', 0, n - DEAD_CAP - 1) end
end

-- The draft job 'child' of pipeline job 'parent' ended.  Done: the parent, parked in 'drafting',
-- goes back to the queue to select a draft.  Anything else (failed, cancelled, expired, sent
-- to review): the parent fails, since it has nothing to refine.
pipeline_child_ended = function(parent, child, now)
  local pk = pfx .. 'j:' .. parent
  local h = redis.call('HMGET', pk, 'state', 'prio', 'batch')
  if h[1] ~= 'drafting' then return end
  local c = redis.call('HMGET', pfx .. 'j:' .. child, 'state', 'cost', 'result')
  local cst = c[1]
  -- The drafts' cost and images go on the parent: the child may be deleted (retention) while
  -- the parent still waits, e.g. for a person to choose.
  redis.call('HSET', pk, 'draft_cost', c[2] or 0)
  if cst == 'done' then
    redis.call('HSET', pk, 'state', 'queued', 'stage', 'select', 'draft_result', c[3] or '')
    make_ready(parent, h[2], h[3], false)
    batch_move(h[3], 'drafting', 'queued')
    emit('job.drafted', 'job', parent, 'batch', h[3], 'drafts_job', child)
    redis.call('PUBLISH', pfx .. 'wake', 1)
  elseif cst == 'canceled' or cst == 'expired' then
    -- Cancelled or past the batch's deadline: the parent ends the same way.
    redis.call('HSET', pk, 'state', cst, 'finished', now)
    ended(parent, now)
    emit('job.' .. cst, 'job', parent, 'batch', h[3])
    batch_move(h[3], 'drafting', cst)
  else
    local err = cjson.encode({class = 'pipeline', message = 'its draft job ' .. child ..
      ' ended ' .. tostring(cst), draft_job = child, time = now})
    redis.call('HSET', pk, 'state', 'failed', 'finished', now, 'error', err)
    log_attempt(pk, err)
    ended(parent, now)
    bury(parent)
    emit('job.failed', 'job', parent, 'batch', h[3], 'error', err)
    batch_move(h[3], 'drafting', 'failed')
  end
end

-- The attempt of a job that led identical requests (coalesce.lua) ended, however: the jobs
-- parked behind it go back to the queue (they find its images stored, or one of them leads).
local function coalesce_release(id, jk)
  local group = redis.call('HGET', jk, 'coalesce')
  if not group then return end
  redis.call('HDEL', jk, 'coalesce')
  local ik = pfx .. 'inflight:' .. group
  if redis.call('GET', ik) == id then redis.call('DEL', ik) end
  local ck = pfx .. 'co:' .. group
  local waiters = redis.call('LRANGE', ck, 0, -1)
  redis.call('DEL', ck)
  for _, w in ipairs(waiters) do
    local wk = pfx .. 'j:' .. w
    local h = redis.call('HMGET', wk, 'state', 'prio', 'batch')
    if h[1] == 'coalesced' then
      redis.call('ZREM', pfx .. 'delayed', w)
      redis.call('HSET', wk, 'state', 'queued')
      make_ready(w, h[2], h[3], true)
      batch_move(h[3], 'coalesced', 'queued')
    end
  end
  if #waiters > 0 then redis.call('PUBLISH', pfx .. 'wake', #waiters) end
end

-- Moves due retries and scheduled jobs from delayed to ready, and reopens batches whose
-- window opened.
local function promote_due(now)
  local due = redis.call('ZRANGEBYSCORE', pfx .. 'delayed', '-inf', now, 'LIMIT', 0, 1000)
  for _, id in ipairs(due) do
    redis.call('ZREM', pfx .. 'delayed', id)
    local jk = pfx .. 'j:' .. id
    local h = redis.call('HMGET', jk, 'state', 'prio', 'batch')
    if h[1] == 'retrying' or h[1] == 'scheduled' or h[1] == 'blocked_budget' or
        h[1] == 'coalesced' then
      if h[1] == 'blocked_budget' then
        -- It tries its reservation again when it runs; still over, it blocks again.
        redis.call('ZREM', pfx .. 'blocked', id)
        redis.call('HDEL', jk, 'blocked')
      end
      redis.call('HSET', jk, 'state', 'queued')
      make_ready(id, h[2], h[3], false)
      batch_move(h[3], h[1], 'queued')
    end
  end
  for _, batch in ipairs(redis.call('ZRANGEBYSCORE', pfx .. 'gates', '-inf', now)) do
    redis.call('ZREM', pfx .. 'gates', batch)
    redis.call('HDEL', pfx .. 'b:' .. batch, 'gated')
    if redis.call('HEXISTS', pfx .. 'b:' .. batch, 'paused') == 0 then unpark(batch) end
    emit('batch.window_opened', 'batch', batch)
  end
end

-- Takes a batch off the rings until its window opens (or for good if its plan ran out).
local function gate(batch, next_open)
  for prio = 0, 2 do redis.call('LREM', pfx .. 'rr:' .. prio, 0, batch) end
  redis.call('HSET', pfx .. 'b:' .. batch, 'gated', next_open)
  if next_open >= 0 then redis.call('ZADD', pfx .. 'gates', next_open, batch) end
  emit('batch.window_closed', 'batch', batch, 'opens', next_open)
end

-- Leases up to n ready jobs: strict priority, round-robin over batches within a priority.
-- A visit to a batch takes an equal share of n (one job when n is 1, all of them when the
-- batch is alone), and what several jobs share is written once per call: one ZADD for the
-- leases, one counter move per batch.
-- Returns {claimed, next due ms or -1, now, then per job: id, token, attempt, spec, batch,
-- max attempts}.
local function claim_jobs(n, worker, lease, token_prefix)
  local now = now_ms()
  promote_due(now)
  local out = {0, -1, now}
  local claimed = 0
  if n > 0 and redis.call('EXISTS', pfx .. 'paused') == 0 then
    local leases = {}
    local moved, order = {}, {}
    for prio = 0, 2 do
      local ring = pfx .. 'rr:' .. prio
      local nring = redis.call('LLEN', ring)
      local guard = nring + n + 1
      -- Batches take turns in rounds of one visit each; a visit takes an equal share of what
      -- was still wanted when its round began (one job each when batches outnumber it).
      local base, round_left = 1, 0
      local sched_of = {}
      while claimed < n and guard > 0 do
        guard = guard - 1
        local batch = redis.call('LMOVE', ring, ring, 'LEFT', 'RIGHT')
        if not batch then break end
        local sched = sched_of[batch]
        if not sched then
          sched = redis.call('HMGET', pfx .. 'b:' .. batch, 'windows', 'deadline')
          sched_of[batch] = sched
        end
        local open, next_open = true, nil
        if sched[1] then open, next_open = window_open(sched[1], now) end
        local ids = nil
        if sched[2] and tonumber(sched[2]) <= now then
          expire_batch(batch, now)
          nring = nring - 1
        elseif not open then
          gate(batch, next_open)
          nring = nring - 1
        else
          local list = pfx .. 'q:' .. prio .. ':' .. batch
          if round_left <= 0 then
            round_left = math.max(nring, 1)
            base = math.max(1, math.ceil((n - claimed) / round_left))
          end
          round_left = round_left - 1
          local share = math.min(base, n - claimed)
          ids = redis.call('LPOP', list, share)
          if not ids or #ids < share or redis.call('LLEN', list) == 0 then
            redis.call('LREM', ring, 1, batch)
            nring = nring - 1
          end
        end
        for _, e in ipairs(ids or {}) do
          local id, created, team, maxa, spec = unpack_job(e)
          local tok, att, run
          if id then
            -- A packed job runs for the first time: its keys are written now.  (Its id has no
            -- hash yet unless something is amiss; then the entry is stale and is dropped.)
            if redis.call('EXISTS', pfx .. 'j:' .. id) == 0 then
              claimed = claimed + 1
              tok, att, run = token_prefix .. '.' .. claimed, 1, true
              unpack_to_keys(id, created, team, maxa, spec, prio, batch, 'running',
                'attempts', '1', 'token', tok, 'worker', worker, 'started', now_str())
            else
              -- (no path writes one while its entry waits; were it to happen, the entry no
              -- longer counts as a queued job, so that its batch can still finish)
              batch_move(batch, 'queued', nil)
              redis.log(redis.LOG_WARNING, 'imgq: dropped a stale ready entry of job ' .. id)
            end
          else
            id = e
            local jk = pfx .. 'j:' .. id
            local h = redis.call('HMGET', jk, 'state', 'attempts', 'max_attempts')
            -- A job purged or cancelled while it waited has no business being run.
            if h[1] == 'queued' then
              claimed = claimed + 1
              tok = token_prefix .. '.' .. claimed
              att = (tonumber(h[2]) or 0) + 1
              redis.call('HSET', jk, 'state', 'running', 'attempts', att, 'token', tok,
                'worker', worker, 'started', now_str())
              spec, maxa, run = job_spec(jk), h[3], true
            end
          end
          if run then
            leases[#leases + 1] = id
            if not moved[batch] then
              moved[batch] = 0
              order[#order + 1] = batch
            end
            moved[batch] = moved[batch] + 1
            local k = #out
            out[k + 1], out[k + 2], out[k + 3], out[k + 4], out[k + 5], out[k + 6] =
              id, tok, att, spec, batch, maxa
          end
        end
      end
    end
    if #leases > 0 then
      local until_s = tostring(now + lease)
      local args = {}
      for i, id in ipairs(leases) do
        args[2 * i - 1] = until_s
        args[2 * i] = id
      end
      redis.call('ZADD', pfx .. 'leases', unpack(args))
    end
    for _, batch in ipairs(order) do batch_move(batch, 'queued', 'running', moved[batch]) end
  end
  out[1] = claimed
  if claimed < n then
    -- When to look again: the next due retry or scheduled job, or the next window opening.
    local due = -1
    for _, z in ipairs({'delayed', 'gates'}) do
      local nxt = redis.call('ZRANGE', pfx .. z, 0, 0, 'WITHSCORES')
      if nxt[2] and (due < 0 or tonumber(nxt[2]) < due) then due = tonumber(nxt[2]) end
    end
    out[2] = due
  end
  return out
end
