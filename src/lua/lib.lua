-- lib.lua: helpers prepended to every imgq script (see embed.cmake).
--
-- Key layout.  All keys of a queue share the hash tag {Q}, so a queue lives in one Redis
-- Cluster slot; KEYS[1] is always P:{Q}:stats, which routes the call to that slot, and the
-- other keys are built from ARGV[1] = "P:{Q}:".
--   P:{Q}:stats          HASH  queue-wide counters by state (queued, running, retrying, ...)
--   P:{Q}:q:PRIO:BATCH   LIST  ready job ids of one batch at one priority, oldest first
--   P:{Q}:rr:PRIO        LIST  ring of batches with ready jobs at PRIO, served round-robin
--   P:{Q}:delayed        ZSET  job id by due time in ms (retries waiting out their backoff)
--   P:{Q}:leases         ZSET  job id by lease deadline in ms (running jobs)
--   P:{Q}:idem           HASH  idempotency key -> job id
--   P:{Q}:batches        ZSET  batch id by creation time
--   P:{Q}:dead           ZSET  dead-lettered job ids by time, capped
--   P:{Q}:events         STREAM job and batch transitions, capped
--   P:{Q}:paused         STRING present while the whole queue is paused
--   P:{Q}:j:ID           HASH  the job
--   P:{Q}:b:ID           HASH  batch counters (total, queued, running, ..., cost, images)
--   P:{Q}:b:ID:jobs      LIST  the batch's job ids in submission order
--   P:{Q}:wake           pub/sub channel that wakes idle workers
-- Priorities are strict (0 high, 1 normal, 2 low); within a priority, batches take turns, so a
-- small batch is not starved by a large one submitted before it; within a batch, FIFO.
local pfx = ARGV[1]
local STATS = KEYS[1]
local DEAD_CAP = 10000
local EVENTS_CAP = 10000

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function emit(kind, ...)
  redis.call('XADD', pfx .. 'events', 'MAXLEN', '~', EVENTS_CAP, '*', 'type', kind, ...)
end

-- Moves n jobs of a batch from one state counter to another (batch and queue counters), and
-- stamps the batch finished, with one batch.completed event, when every job has ended.
local function batch_move(batch, from, to, n)
  local bk = pfx .. 'b:' .. batch
  n = n or 1
  if from then
    redis.call('HINCRBY', bk, from, -n)
    redis.call('HINCRBY', STATS, from, -n)
  end
  if to then
    redis.call('HINCRBY', bk, to, n)
    redis.call('HINCRBY', STATS, to, n)
  end
  if to == 'done' or to == 'failed' or to == 'canceled' then
    local c = redis.call('HMGET', bk, 'total', 'done', 'failed', 'canceled')
    local ended = (tonumber(c[2]) or 0) + (tonumber(c[3]) or 0) + (tonumber(c[4]) or 0)
    if ended >= (tonumber(c[1]) or 0) and redis.call('HSETNX', bk, 'finished', now_ms()) == 1 then
      local s = redis.call('HMGET', bk, 'cost', 'images')
      emit('batch.completed', 'batch', batch, 'total', c[1], 'done', c[2] or 0,
        'failed', c[3] or 0, 'canceled', c[4] or 0, 'cost_micros', s[1] or 0,
        'images', s[2] or 0)
    end
  end
end

-- Appends one line to the job's attempt log, keeping the newest 8 KiB.
local function log_attempt(jk, line)
  local log = redis.call('HGET', jk, 'log') or ''
  log = log .. line .. '\n'
  if #log > 8192 then log = string.sub(log, -8192) end
  redis.call('HSET', jk, 'log', log)
end

local function batch_paused(batch)
  return redis.call('HEXISTS', pfx .. 'b:' .. batch, 'paused') == 1
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

-- Moves due retries from delayed to ready.
local function promote_due(now)
  local due = redis.call('ZRANGEBYSCORE', pfx .. 'delayed', '-inf', now, 'LIMIT', 0, 1000)
  for _, id in ipairs(due) do
    redis.call('ZREM', pfx .. 'delayed', id)
    local jk = pfx .. 'j:' .. id
    local h = redis.call('HMGET', jk, 'state', 'prio', 'batch')
    if h[1] == 'retrying' then
      redis.call('HSET', jk, 'state', 'queued')
      make_ready(id, h[2], h[3], false)
      batch_move(h[3], 'retrying', 'queued')
    end
  end
end

-- Leases up to n ready jobs: strict priority, round-robin over batches within a priority.
-- Returns {claimed, next due ms or -1, now, then per job: id, token, attempt, spec, batch,
-- max attempts}.
local function claim_jobs(n, worker, lease, token_prefix)
  local now = now_ms()
  promote_due(now)
  local out = {0, -1, now}
  local claimed = 0
  if n > 0 and redis.call('EXISTS', pfx .. 'paused') == 0 then
    for prio = 0, 2 do
      local ring = pfx .. 'rr:' .. prio
      local guard = redis.call('LLEN', ring) + n + 1
      while claimed < n and guard > 0 do
        guard = guard - 1
        local batch = redis.call('LMOVE', ring, ring, 'LEFT', 'RIGHT')
        if not batch then break end
        local list = pfx .. 'q:' .. prio .. ':' .. batch
        local id = redis.call('LPOP', list)
        if redis.call('LLEN', list) == 0 then redis.call('LREM', ring, 1, batch) end
        if id then
          local jk = pfx .. 'j:' .. id
          local h = redis.call('HMGET', jk, 'state', 'spec', 'max_attempts')
          -- A job purged or cancelled while it waited has no business being run.
          if h[1] == 'queued' then
            claimed = claimed + 1
            local tok = token_prefix .. '.' .. claimed
            local att = redis.call('HINCRBY', jk, 'attempts', 1)
            redis.call('HSET', jk, 'state', 'running', 'token', tok, 'worker', worker,
              'started', now)
            redis.call('ZADD', pfx .. 'leases', now + lease, id)
            batch_move(batch, 'queued', 'running')
            for _, v in ipairs({id, tok, att, h[2], batch, h[3]}) do out[#out + 1] = v end
          end
        end
      end
    end
  end
  out[1] = claimed
  if claimed < n then
    local nxt = redis.call('ZRANGE', pfx .. 'delayed', 0, 0, 'WITHSCORES')
    if nxt[2] then out[2] = nxt[2] end
  end
  return out
end
