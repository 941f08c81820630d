-- pipeline: the stages of a draft->refine job (a job whose spec has a "pipeline").
--   draft   the worker holding the job creates its child draft job (same batch, fanned out,
--           deduped and budgeted like any job) and parks the job in 'drafting'; when the child
--           ends, lib.lua's pipeline_child_ended puts the job back in the queue (stage select)
--           or fails it;
--   select  auto / webhook: the worker scores the drafts or asks the scorer, records the
--           choice (chosen) and goes on to refine in the same claim; manual: the job parks in
--           'awaiting_selection' with a selection.required event until `imgq select`;
--   refine  the job runs as itself, with the chosen draft as its reference image.
-- A parked job holds no lease (nothing to lose when workers die) and its claims that only
-- moved it between stages do not count as attempts.
-- ARGV: prefix, mode, job id, then
--   get:    -> {stage ('draft' | 'select' | 'refine'), chosen index or '', draft job id or '',
--               the draft job's result JSON or '', the draft job's state or '', how the draft
--               was chosen (JSON) or ''}
--   draft:  token, the draft job's spec JSON, its max attempts
--           -> 1 parked (the drafts are queued or running) | 2 drafts already done (go on
--              with select) | 0 lease lost
--   chosen: token, index, why (JSON: scores, or the scorer's answer)  -> 1 | 0 lease lost
--   await:  token, drafts JSON (index, key, url...)  -> 1 parked | 0 lease lost
--   select: index (imgq select)  -> {1} | {0, why}
--   drafts: -> {state, drafts JSON or ''} (imgq select JOB: what there is to choose from)
local mode, id = ARGV[2], ARGV[3]
local jk = pfx .. 'j:' .. id

local function holds(tok)
  local h = redis.call('HMGET', jk, 'state', 'token')
  return h[1] == 'running' and h[2] == tok
end

-- Hands a running job back without a lease, in 'state', the claim not counted as an attempt.
local function park(state, batch)
  redis.call('HSET', jk, 'state', state)
  redis.call('HDEL', jk, 'token')
  redis.call('ZREM', pfx .. 'leases', id)
  redis.call('HINCRBY', jk, 'attempts', -1)
  batch_move(batch, 'running', state)
end

if mode == 'get' then
  local h = redis.call('HMGET', jk, 'stage', 'chosen', 'child', 'draft_result', 'selection')
  local res, cst = h[4] or '', ''
  if h[3] then
    local c = redis.call('HMGET', pfx .. 'j:' .. h[3], 'result', 'state')
    if res == '' then res = c[1] or '' end
    cst = c[2] or (res ~= '' and 'done') or ''
  end
  return {h[1] or 'draft', h[2] or '', h[3] or '', res, cst, h[5] or ''}
elseif mode == 'draft' then
  if not holds(ARGV[4]) then return 0 end
  local h = redis.call('HMGET', jk, 'batch', 'team', 'prio')
  local batch = h[1]
  local child = id .. '-draft'
  local ck = pfx .. 'j:' .. child
  local cst = redis.call('HGET', ck, 'state')
  if cst == 'done' then
    redis.call('HSET', jk, 'stage', 'select', 'child', child)
    return 2
  end
  if not cst then
    local now = now_ms()
    redis.call('SET', ck .. ':s', ARGV[5])
    redis.call('HSET', ck, 'state', 'queued', 'batch', batch, 'team', h[2],
      'prio', h[3], 'attempts', 0, 'max_attempts', ARGV[6], 'created', now, 'cost', 0,
      'parent', id)
    redis.call('HSET', pfx .. 'ids', child, batch)
    redis.call('RPUSH', pfx .. 'b:' .. batch .. ':jobs', child)
    redis.call('HINCRBY', pfx .. 'b:' .. batch, 'total', 1)
    redis.call('HINCRBY', pfx .. 'b:' .. batch, 'draft_jobs', 1)
    make_ready(child, h[3], batch, false)
    batch_move(batch, nil, 'queued')
    redis.call('PUBLISH', pfx .. 'wake', 1)
  elseif cst ~= 'queued' and cst ~= 'running' and cst ~= 'retrying' and
      cst ~= 'blocked_budget' and cst ~= 'coalesced' and cst ~= 'scheduled' then
    -- The drafts ended without images and the parent runs again (retried from the dead-letter
    -- set): the drafts get another go too, with fresh attempts.
    redis.call('HSET', ck, 'state', 'queued', 'attempts', 0)
    redis.call('HDEL', ck, 'error', 'finished')
    redis.call('ZREM', pfx .. 'ended', child)
    redis.call('ZREM', pfx .. 'dead', child)
    make_ready(child, h[3], batch, false)
    redis.call('HDEL', pfx .. 'b:' .. batch, 'finished')
    redis.call('ZREM', pfx .. 'finished', batch)
    batch_move(batch, cst, 'queued')
    redis.call('PUBLISH', pfx .. 'wake', 1)
  end
  redis.call('HSET', jk, 'stage', 'draft', 'child', child)
  park('drafting', batch)
  emit('job.drafting', 'job', id, 'batch', batch, 'drafts_job', child)
  return 1
elseif mode == 'chosen' then
  if not holds(ARGV[4]) then return 0 end
  redis.call('HSET', jk, 'stage', 'refine', 'chosen', ARGV[5], 'selection', ARGV[6])
  emit('job.selected', 'job', id, 'batch', redis.call('HGET', jk, 'batch'), 'index', ARGV[5])
  return 1
elseif mode == 'await' then
  if not holds(ARGV[4]) then return 0 end
  local batch = redis.call('HGET', jk, 'batch')
  local okd, drafts = pcall(cjson.decode, ARGV[5])
  redis.call('HSET', jk, 'stage', 'select', 'drafts', ARGV[5], 'ndrafts',
    okd and type(drafts) == 'table' and #drafts or 0)
  park('awaiting_selection', batch)
  emit('selection.required', 'job', id, 'batch', batch, 'drafts', ARGV[5])
  return 1
elseif mode == 'select' then
  local h = redis.call('HMGET', jk, 'state', 'ndrafts', 'prio', 'batch')
  if not h[1] then return {0, 'no job ' .. id} end
  if h[1] ~= 'awaiting_selection' then
    return {0, 'job ' .. id .. ' is ' .. h[1] .. ', not awaiting_selection'}
  end
  local idx, n = tonumber(ARGV[4]), tonumber(h[2]) or 0
  if not idx or idx ~= math.floor(idx) or idx < 0 or idx >= n then
    return {0, 'index ' .. tostring(ARGV[4]) .. ' is out of range: the job has ' .. n ..
      ' drafts, 0 to ' .. (n - 1)}
  end
  redis.call('HSET', jk, 'state', 'queued', 'stage', 'refine', 'chosen', idx,
    'selection', cjson.encode({mode = 'manual', time = now_ms()}))
  make_ready(id, h[3], h[4], false)
  batch_move(h[4], 'awaiting_selection', 'queued')
  emit('job.selected', 'job', id, 'batch', h[4], 'index', idx)
  redis.call('PUBLISH', pfx .. 'wake', 1)
  return {1}
end
if mode == 'drafts' then
  local h = redis.call('HMGET', jk, 'state', 'drafts')
  return {h[1] or '', h[2] or ''}
end
return redis.error_reply('pipeline: unknown mode ' .. tostring(mode))
