/*
 * worker.h - the imgq-worker daemon: one libuv loop that claims jobs from Redis, calls
 * providers through one libcurl multi handle, encodes images on the thread pool, stores them
 * in S3 and records the outcome, all without blocking the loop.
 *
 * worker.c owns the loop, the Redis connections (commands, and a subscriber that wakes idle
 * workers), claiming, lease renewal, the reaper and shutdown.  run.c owns one job's journey
 * (struct job and its state machine).
 */
#ifndef IMGQ_WORKER_H
#define IMGQ_WORKER_H

#include <hiredis/async.h>
#include <stdbool.h>
#include <uv.h>

#include "imgq/catalog.h"
#include "imgq/config.h"
#include "imgq/http.h"
#include "imgq/job.h"
#include "imgq/provider.h"
#include "imgq/queue.h"
#include "imgq/s3.h"
#include "limits.h"

struct job;

struct worker_options {
    int concurrency;   /* jobs in flight */
    int lease_ms;      /* lease length; renewed every lease_ms / 3 */
    int grace_ms;      /* SIGTERM: time given to in-flight jobs before handing them back */
    int retry_base_ms; /* first retry backoff; doubles per attempt */
    int retry_max_ms;  /* backoff cap */
    /* Rate limits (429s): a provider's hint is clamped to max_retry_after_ms
     * (--max-retry-after-s, 3600 s); a job ends, class rate_limit, after max_rate_limit_waits
     * waits (--max-rate-limit-waits, 50) or when its waits would total more than
     * max_rate_limit_wait_ms (--max-rate-limit-wait-s, 21600 s); see fail.lua. */
    long max_retry_after_ms;
    int max_rate_limit_waits;
    long max_rate_limit_wait_ms;
    long provider_timeout_ms;
    int poll_ms;         /* asynchronous providers: poll interval when they give no hint */
    int poll_timeout_ms; /* asynchronous providers: longest wait for a task */
    /* Per-model circuit breakers (breaker.h; --breaker-threshold, --breaker-cooldown-ms):
     * consecutive counted failures that open a model's breaker (5), and how long it stays
     * open before one caller probes it (30000 ms; tests scale it down). */
    int breaker_threshold;
    int breaker_cooldown_ms;
    bool exit_when_idle; /* exit once the queue has nothing ready, delayed or leased */
    bool noop;           /* benchmark: complete each claimed job at once, no provider/S3 */
    /* Provider account limits shared by every worker (--rate-limit; see limits.h). */
    struct limits_spec rate[LIMITS_MAX];
    int nrate;
    int rate_window_ms; /* 60000; tests scale it down */
    /* Storing paid images (run.c, spool.h): how long an attempt keeps trying its PUTs after
     * the first failure (--store-timeout-ms, 3600000). */
    long store_timeout_ms;
};

struct worker {
    uv_loop_t *loop;
    struct worker_options opt;
    const struct imgq_config *cfg;
    const imgq_catalog *catalog;
    struct imgq_s3_config s3;
    struct imgq_keys keys;
    struct imgq_redis_url redis;
    imgq_http *http;
    char id[64]; /* worker id: host:pid:random */

    redisAsyncContext *ac;  /* commands; NULL while disconnected */
    redisAsyncContext *sub; /* SUBSCRIBE to the wake channel; NULL while disconnected */
    bool connected;
    int reconnect_ms;
    /* Redis refused this worker (credentials: NOAUTH, WRONGPASS): since when (uv_now ms, 0
     * while not refused), and the AUTH error of the current attempt (worker.c). */
    uint64_t refused_since;
    char auth_error[256];

    uv_timer_t wake_timer;  /* next claim attempt when idle (delayed jobs, fallback) */
    uv_timer_t lease_timer; /* renew leases */
    uv_timer_t reap_timer;  /* return expired leases of dead workers */
    uv_timer_t reconnect_timer;
    uv_timer_t grace_timer;
    uv_signal_t sigterm, sigint;

    struct job *jobs; /* in flight, doubly linked */
    int inflight;
    int reserved;         /* slots promised to claims in flight */
    int handed;           /* of the jobs in flight, those whose slot is promised to a successor */
    uint64_t extended_at; /* loop time of the last lease renewal */
    /* Completions waiting for the end of this turn of the loop, sent in one call (run.c). */
    uv_check_t outcome_check;
    struct job **outq;
    int noutq, outq_cap;
    bool claiming;
    bool claim_again;     /* a wake arrived while a claim was in flight */
    unsigned long claims; /* claim calls made, for token uniqueness and stats */
    bool stopping;
    bool grace_over; /* SIGTERM's grace period ended: unpaid jobs were handed back */
    bool closing;
    int pending_releases;
    int exit_code;

    struct limits limits; /* provider account limits: queues of calls waiting for room */
    struct spool *spool;  /* paid bytes S3 has not taken yet (spool.h; never NULL once started) */
    bool recovering;      /* re-uploading what an earlier run left in the spool: no claims yet */
    struct webhooks *wh;  /* webhook deliveries from the outbox (webhooks.h) */

    /* The SSRF allowlist (cfg->ssrf_allow split at commas; strings owned). */
    char **ssrf_allow;
    size_t nssrf_allow;
    /* Buckets besides s3.bucket that s3:// references may name (IMGQ_S3_REFERENCE_BUCKETS). */
    char **ref_buckets;
    size_t nref_buckets;

    /* Script calls that must reach Redis (settlements), re-sent until it answers. */
    struct rcall *rcalls;
    int nrcalls;

    /* counters for the final log line */
    unsigned long done, failed, retried, lost;
    unsigned long blocked;   /* jobs handed back as blocked_budget */
    unsigned long coalesced; /* jobs parked behind an identical request in flight */
};

/* Start the worker on loop: connect, subscribe, start timers.  Runs until stopped. */
int worker_start(struct worker *w);

/* Ask for more work if there is room (no-op while a claim is in flight or stopping). */
void worker_maybe_claim(struct worker *w);

/* A job left the worker (finished, failed, handed back or abandoned). */
void worker_job_gone(struct worker *w, struct job *j);
/* Something else a stopping worker waits for ended (a webhook delivery): stop if it was last. */
void worker_check_stopped(struct worker *w);

/*
 * Run a queue script asynchronously with KEYS[1] = the queue's stats key and ARGV = {base,
 * args...} (args are copied).  cb gets the reply (NULL if Redis went away) and runs exactly
 * once, unless this returns IMGQ_EAGAIN (not connected), in which case it never runs.
 */
typedef void (*worker_script_cb)(struct worker *w, redisReply *reply, void *arg);
int worker_script(struct worker *w, enum imgq_script_id id, int nargs, const char **args,
                  worker_script_cb cb, void *arg);
/*
 * As worker_script, for a call whose effect must not be lost (a settlement of money): it is
 * kept and sent again (with the lease renewals) until Redis answers it, also across
 * reconnects.  Nothing is reported back.  Idempotent scripts only.
 */
void worker_script_reliable(struct worker *w, enum imgq_script_id id, int nargs, const char **args);
/* Reliable calls not yet answered (a stopping worker waits a little for them). */
int worker_reliable_pending(const struct worker *w);
/* After the loop: log every reliable call Redis never answered (an operator must reconcile
 * it: the reservation stays, the ledger misses the call) and free them. */
void worker_drop_reliable(struct worker *w);

/*
 * Claims piggy-backed on a reply: how many jobs to ask for in a call that can lease more
 * (claim, complete, fail), with the arguments that lib.lua's claim_jobs takes.  'count' is 0
 * when stopping or full; 'replaces_one' counts the slot of a job about to leave (a
 * completion's successor).  The slots are reserved until worker_take_claims() releases them.
 */
struct claim_args {
    int count;
    char count_s[16], lease_s[24], token[96];
};
void worker_claim_args(struct worker *w, int want, bool replaces_one, struct claim_args *ca);
/* Start the jobs in a claim result (lib.lua claim_jobs) found at r->element[off...], release
 * the reservation of ca, and decide when to look for work next.  r may be NULL. */
void worker_take_claims(struct worker *w, const redisReply *r, size_t off,
                        const struct claim_args *ca);

/*
 * The SSRF guard (ssrf.h) on a user-supplied URL with the worker's allowlist (IMGQ_SSRF_ALLOW):
 * 0 and the pin to connect to, or the error and why.  It resolves (blocks): call it on the
 * thread pool, never on the loop.  Reads only what does not change after start.
 */
int worker_ssrf_check(const struct worker *w, const char *url, char *pin, size_t pinlen, char *why,
                      size_t whylen);

/* The images-per-window limit for a provider, 0 if none. */
int worker_rate_limit(const struct worker *w, const char *provider);

/* recover.c: before the first claim, store what an earlier run of a worker on this spool
 * directory left there (files it could not PUT before it died or stopped); claiming starts when
 * every file was tried.  No-op without a spool directory. */
void spool_recover_start(struct worker *w);

/* run.c: begin a claimed job (takes ownership of the strings). */
void job_start(struct worker *w, const char *id, const char *token, int attempt, const char *spec,
               const char *batch, int max_attempts);
/* run.c: the lease of job 'id' under 'token' was lost; stop caring about that claim's outcome
 * (a later claim of the same job, with another token, goes on). */
void job_lease_lost(struct worker *w, const char *id, const char *token);
/* run.c: shutdown is handing j back (release script): settle its calls' reservations first,
 * since no worker will.  A send the provider has (no answer yet, or images still downloading)
 * is charged as lost at its reservation, the worst case it may cost; a reservation nothing was
 * sent for is released.  An asynchronous task with a recorded handle keeps its reservation for
 * the worker that takes the job over.  Call before the release; no-op unless j is calling. */
void job_hand_back(struct job *j);
/* run.c: hand a job back to the queue at shutdown (release script) and abandon it. */
void job_abandon(struct job *j, bool release);
/* run.c: send the completions queued in this turn of the loop now. */
void run_flush_outcomes(struct worker *w);
/* run.c: id and token of a job, for lease renewal. */
const char *job_id(const struct job *j);
const char *job_token(const struct job *j);
bool job_lease_held(const struct job *j);
/* run.c: the job is still waiting for its provider (nothing paid is in hand yet). */
bool job_waiting_for_provider(const struct job *j);
struct job *job_next(const struct job *j);

#endif
