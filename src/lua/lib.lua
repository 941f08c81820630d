-- lib.lua: helpers prepended to every imgq script (see embed.cmake).
-- Key layout, all under one hash tag so a queue lives in one Redis Cluster slot:
--   P:{Q}:ready     ZSET  job id by priority * 2^44 + sequence (strict priority, FIFO within)
--   P:{Q}:delayed   ZSET  job id by due time in ms (retries waiting out their backoff)
--   P:{Q}:leases    ZSET  job id by lease deadline in ms (running jobs)
--   P:{Q}:seq       STRING submission sequence
--   P:{Q}:idem      HASH  idempotency key -> job id
--   P:{Q}:batches   ZSET  batch id by creation time
--   P:{Q}:j:ID      HASH  the job
--   P:{Q}:b:ID      HASH  batch counters (total, queued, running, retrying, done, failed, cost)
--   P:{Q}:b:ID:jobs LIST  the batch's job ids in submission order
--   P:{Q}:wake      pub/sub channel that wakes idle workers
-- ARGV[1] is always the prefix "P:{Q}:".
local pfx = ARGV[1]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function num(s)
  return string.format('%.0f', s)
end

-- Moves one job between two state counters of its batch and stamps the batch finished when
-- every job has reached an end state.
local function batch_move(batch, from, to, n)
  local bk = pfx .. 'b:' .. batch
  n = n or 1
  if from then redis.call('HINCRBY', bk, from, -n) end
  if to then redis.call('HINCRBY', bk, to, n) end
  if to == 'done' or to == 'failed' then
    local c = redis.call('HMGET', bk, 'total', 'done', 'failed')
    if (tonumber(c[2]) or 0) + (tonumber(c[3]) or 0) >= (tonumber(c[1]) or 0) then
      redis.call('HSETNX', bk, 'finished', now_ms())
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
