-- claim: lease up to COUNT ready jobs to a worker in one step (see claim_jobs in lib.lua).
-- Due retries are first moved from delayed to ready, so retries need no poller of their own.
-- ARGV: prefix, worker id, lease ms, count, token prefix
return claim_jobs(tonumber(ARGV[4]), ARGV[2], tonumber(ARGV[3]), ARGV[5])
