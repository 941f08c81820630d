-- poll: the handles of a job's asynchronous provider tasks (submit, then poll), kept on the job
-- so that when a worker dies mid-poll, the worker that takes the job over polls the same task
-- instead of paying for a second submission.  A handle is stored per call of the job as field
-- poll:CALL = "ATTEMPT|SUBMITTED_MS|CALL_KEY|AMOUNT|MODEL|HANDLE" (CALL_KEY names the call's
-- budget reservation of AMOUNT micro-dollars, "ATTEMPT.CALL.TRY": the worker taking over
-- settles it, and the reaper leaves it standing; MODEL is the model whose API accepted the
-- task); handles of an earlier attempt are ignored by the reader (a failed attempt's task is
-- not resumed).
-- ARGV: prefix, mode, job id, token, then
--   set:   call index, attempt, submitted ms, call key, amount, model, handle -> 1 if recorded,
--          0 if the lease is lost
--   get:   (nothing)                                -> flat list call index, record
--   clear: call index                               -> 1 / 0 as set
local jk = pfx .. 'j:' .. ARGV[3]
local mode = ARGV[2]
if mode == 'get' then
  local out = {}
  local h = redis.call('HGETALL', jk)
  for i = 1, #h, 2 do
    local idx = string.match(h[i], '^poll:(%d+)$')
    if idx then
      out[#out + 1] = idx
      out[#out + 1] = h[i + 1]
    end
  end
  return out
end
local st = redis.call('HMGET', jk, 'state', 'token')
if st[1] ~= 'running' or st[2] ~= ARGV[4] then return 0 end
if mode == 'set' then
  redis.call('HSET', jk, 'poll:' .. ARGV[5], table.concat(
    {ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11]}, '|'))
elseif mode == 'clear' then
  redis.call('HDEL', jk, 'poll:' .. ARGV[5])
else
  return redis.error_reply('poll: unknown mode ' .. tostring(mode))
end
return 1
