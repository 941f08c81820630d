/*
 * breaker.h - per-model circuit breakers, shared by every worker through Redis
 * (src/lua/breaker.lua holds the state machine and its semantics).
 *
 * Before a provider call, ask breaker_choose() which of the job's candidate models may be
 * called now (the worker asks about its own model first, then about the models it can move
 * to, cheapest first, ranked with breaker_rates()); after the call, tell breaker_report() how
 * it ended.
 * A model that failed --breaker-threshold times in a row (server errors, timeouts, network
 * errors, rate limits without a hint; not invalid_request, content_policy, auth, nor a 429
 * that says when to come back: that is the account's limit, not the model) is skipped for
 * --breaker-cooldown-ms; then one caller at a time probes it: the probe's success closes the
 * breaker, its failure reopens it with the cooldown doubled (up to 8 x).
 *
 * 'token' names the caller for the probe permit: pass the job's lease token (unique per
 * attempt), and the same token to the report of the call it was chosen for.  A probe permit
 * lapses after the worker's provider timeout plus 5 s, so a prober that crashed does not keep
 * the model shut.
 *
 * Redis is the breakers' only home: when it cannot be reached, choose admits the job's own
 * model (pick 0) and reports are dropped; the breakers never stop work on their own account.
 */
#ifndef IMGQ_WORKER_BREAKER_H
#define IMGQ_WORKER_BREAKER_H

#include <stdbool.h>

struct worker;

#define BREAKER_MAX_MODELS 16 /* candidates per choose */
#define BREAKER_DEFAULT_THRESHOLD 5
#define BREAKER_DEFAULT_COOLDOWN_MS 30000

/*
 * The answer of breaker_choose: pick is the index into models of the model to call (0 = the
 * job's own), with wait_ms 0; or -1 when none admits a call now, with wait_ms (>= 1) until the
 * earliest may: wait and ask again, without using up an attempt.  why says what was decided
 * and why models were skipped ("gpt-image-1.5 open for 12.3 s more; flux-dev closed"), for
 * the job's log; it is valid only during the call.
 */
typedef void (*breaker_choose_cb)(void *arg, int pick, long wait_ms, const char *why);

/*
 * Which of models[0..n) should serve a job now (0 = its own model).  Calls cb exactly once,
 * always later from the loop (never before this returns), also when Redis is away (then pick
 * 0: do not block work on the breaker) or goes away meanwhile.  The strings are copied.
 * Returns 0, or IMGQ_EINVAL (n outside 1..BREAKER_MAX_MODELS, a NULL or empty model, no cb),
 * in which case cb is never called.  arg must stay valid until cb has run: at shutdown the
 * reply may arrive (as "Redis went away", pick 0) after the job was abandoned.
 */
int breaker_choose(struct worker *w, const char *const *models, int n, const char *token,
                   breaker_choose_cb cb, void *arg);

/*
 * A provider call of 'model' ended: ok, or failed with this class (imgq_error_class_name;
 * NULL or "" counts as a failure of the model).  hinted: a rate_limit failure that came with
 * a retry hint (retry-after and the like), which is neutral.  Fire and forget: nothing is
 * reported back, and a report that cannot be sent (Redis away) is dropped.  The strings are
 * copied.
 */
void breaker_report(struct worker *w, const char *model, bool ok, const char *cls, bool hinted,
                    const char *token);

/*
 * The observed outcomes of models[0..n) (provider calls that succeeded and failed, as the
 * router counts them), for ranking a job's fallbacks.  cb is called exactly once, later from
 * the loop, with stats[i] for models[i] (the model strings are the caller's); with stats NULL
 * if Redis did not answer.  Returns 0, or IMGQ_EINVAL (bad arguments) or IMGQ_EREDIS (Redis
 * unavailable), in which case cb is never called.
 */
struct imgq_model_stats;
typedef void (*breaker_rates_cb)(void *arg, const struct imgq_model_stats *stats);
int breaker_rates(struct worker *w, const char *const *models, int n, breaker_rates_cb cb,
                  void *arg);

#endif
