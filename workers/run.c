/*
 * run.c - one job's journey through a worker:
 *
 *   CALLING   the provider request is in flight (libcurl multi)
 *   ENCODING  images decode and encode on libuv's thread pool
 *   STORING   objects are PUT to S3 (retried in place: the images are paid for)
 *   FINISHING the complete/fail script is in flight (retried while Redis is away)
 *
 * job_set_state() is the one place a job's state changes, and it logs the transition.  A job
 * counts its outstanding asynchronous operations ('ops'); an abandoned job (lease lost,
 * shutdown) is freed when the last of them returns, so no callback ever sees freed memory.
 */
#include <inttypes.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "imgq/alloc.h"
#include "imgq/base64.h"
#include "imgq/dedup.h"
#include "imgq/drift.h"
#include "imgq/image.h"
#include "imgq/log.h"
#include "imgq/quote.h"
#include "imgq/router.h"
#include "imgq/score.h"
#include "imgq/sidecar.h"
#include "imgq/ssrf.h"
#include "breaker.h"
#include "spool.h"
#include "webhooks.h"
#include "worker.h"

#define STORE_BACKOFF_BASE_MS 500  /* first wait before a failed PUT round is tried again */
#define STORE_BACKOFF_MAX_MS 15000 /* longest wait between PUT rounds (S3 outages) */
#define REDIS_RETRY_MS 1000        /* wait before re-sending an outcome Redis did not take */

enum job_state { JOB_CALLING, JOB_ENCODING, JOB_STORING, JOB_FINISHING, JOB_ENDED };

static const char *state_name(enum job_state s)
{
    static const char *names[] = {"calling", "encoding", "storing", "finishing", "ended"};
    return names[s];
}

struct image_out {
    struct job *job;
    int index;
    uv_work_t work;
    const uint8_t *src; /* provider bytes (borrowed from the result) */
    size_t src_len;
    uint8_t *data; /* bytes to store (owned, or == src for a pass-through png) */
    size_t len;
    int width, height;
    char *key;
    bool stored;
    struct call *call; /* the call that made it (usage, cost for the sidecar) */
    char *sidecar;     /* KEY.json: what made the image (sidecar.h), stored after it */
    char *sidecar_key;
    bool sidecar_stored;
    int err;
    char errmsg[256];
    /* While S3 refuses them (storing section; spool.h): counted_len bytes count in the spool's
     * memory; a spool file holds the image [0] / the sidecar [1]; an object whose memory was
     * given back (data / sidecar NULL) is read from its file into 'loaded' for each round. */
    bool counted;
    size_t counted_len;
    bool on_disk[2];
    uint8_t *loaded[2];
    size_t loaded_len[2];
};

/*
 * One provider call of a job.  A model that returns one image per call (n_per_call 1) gets n
 * calls for n images (fan-out); each is retried on its own inside the attempt, so images
 * already generated (and paid for) are never asked for again because a sibling failed.
 */
struct call {
    struct job *j;
    int index;   /* call number */
    int first;   /* index of its first image within the job */
    int n;       /* images asked of this call */
    int tries;   /* sends so far */
    bool done;   /* images in hand */
    bool failed; /* given up: the attempt fails */
    struct imgq_provider_result pr;
    imgq_micros cost;
    bool ceiling;     /* billed at the ceiling: no usage came back */
    uv_timer_t timer; /* retry, rate-limit and poll waits */
    bool timer_init;
    struct limits_wait lw; /* its place in the account's queue, then its hold on room */
    /* Asynchronous providers (submit, then poll). */
    char *handle;          /* the task's poll handle, once the submit was accepted */
    uint64_t submitted_ms; /* when the task was submitted: bounds the polling */
    int poll_errors;       /* consecutive polls that failed in transit */
    int polls;
    struct fetch *fetches; /* downloads of images the provider returned as URLs */
    int fetching;          /* downloads outstanding */
    /* Money: the call's worst case is reserved against the budgets before it is sent, and
     * settled (ledger entry) when it ends, under one key per send: "ATTEMPT.CALL.TRY". */
    char key[48];
    imgq_micros reserved;
    bool reserve_held; /* reserved and not yet settled */
    bool sent;         /* this send reached the provider (it may bill it): until settled */
    bool unanswered;   /* its request went out and the transfer failed without an answer */
    bool charge_lost;  /* its charge is a reservation no answer priced (ledger reason lost) */
    int64_t drift_ppm; /* its output tokens over the catalog's table (drift.h), 0: unknown */
};

/* One download of an image a provider returned as a URL. */
struct fetch {
    struct call *c;
    int k;     /* image index within the call */
    int tries; /* sends so far */
    enum imgq_error_class cls;
    char error[256];
};

struct job {
    struct worker *w;
    struct job *prev, *next;
    char *id, *token, *batch, *spec_json;
    int attempt, max_attempts;
    struct imgq_job_spec spec;
    const struct imgq_model *model;
    const struct imgq_route *route;
    enum job_state state;
    int ops;           /* outstanding async operations */
    bool abandoned;    /* nobody wants the outcome any more */
    bool slot_freed;   /* already uncounted from the worker's jobs in flight */
    bool handed;       /* its slot is promised to a successor (worker.h 'handed') */
    bool solo;         /* its completion goes alone: a call it shared got an error reply */
    char *asked_model; /* the model credited with the outcome: the stored spec's, then the one
                        * that serves (begin_model) */
    bool lease_lost;
    uv_timer_t timer; /* S3 and Redis retry waits */
    bool timer_init;

    const struct imgq_provider_ops *ops_api; /* the adapter of the model's api */
    struct imgq_provider_endpoint ep;
    struct call *calls;
    int ncalls, calls_pending;
    int handles_open; /* timers still closing when the job is freed */
    /* The first call that gave up decides the attempt's error. */
    struct imgq_provider_result fail;
    imgq_micros fail_charged; /* billed failures (counted in cost when the attempt fails) */
    char request_id[128];     /* the provider's id for the first call */
    long last_status;
    imgq_micros cost;
    const char *billed; /* "usage", "ceiling" or "mixed" */
    struct image_out *imgs;
    int nimgs;
    int pending; /* encodes or puts outstanding in the current state */
    int s3_tries;
    char s3_error[512];
    uint64_t store_since; /* loop time of the first PUT round that failed; 0 before */
    bool store_held;      /* its unstored bytes were handed to the spool */
    uv_work_t store_work; /* spool files written or read off the loop */
    int store_work_rc;
    char store_work_why[400];
    bool from_spool; /* its images were paid for by an earlier attempt and read from the spool */

    /* The outcome, kept so it can be re-sent if Redis was away. */
    bool outcome_complete;
    char *outcome_json;
    char *attempt_json; /* the attempt log line of a completion */
    /* A failure: the attempt log entry if the job ends with it ("retry": false), besides
     * outcome_json, the entry if it is retried (fail.lua decides which), and what the worker's
     * log line says once that is known. */
    char *final_json;
    char fail_line[768];
    bool rate_wait;     /* a provider's rate limit: counted against the rate-limit caps */
    bool backoff_grows; /* ... without a hint: the delay is a backoff, doubled per wait */
    int outcome_sends;  /* complete/fail calls sent for this attempt */
    struct claim_args ca;
    long retry_delay_ms;
    bool consume_attempt;
    uint64_t started_ms;

    /* Budgets: a call the budgets refused blocks the job (state blocked_budget). */
    bool blocked;
    long block_wait_ms;
    char block_budget[160];
    char block_msg[400];
    int reserve_next; /* the call being reserved before the first send */
    bool reserving;   /* in that phase */

    /* Fallbacks: the candidate models (catalog strings) and, once moved, from where and why. */
    const char *cands[BREAKER_MAX_MODELS];
    imgq_micros cand_expected[BREAKER_MAX_MODELS]; /* worst-case cost, then expected */
    int ncands;
    char *own_why;    /* why the own model took no call (while the fallbacks are ranked) */
    long own_wait_ms; /* and when it may */
    bool tracked;     /* the model's breaker is kept (it has fallbacks, is one, or the job
                       * was routed automatically) */
    char *fallback_from, *fallback_why;

    /* Reference images (edits) fetched before the first call: nrefs + 1 for a mask. */
    struct ref_fetch *refs;
    int nref_fetches, refs_pending;

    /* Pipelines (draft -> select -> refine): the draft job's images while selecting, and
     * what the result says of the pipeline (draft job, chosen draft, how it was chosen). */
    struct draft *drafts;
    int ndrafts, drafts_pending;
    json_t *pipeline_result;
};

/* One draft image of a pipeline job, fetched and scored (select auto). */
struct draft {
    struct job *j;
    int index;
    char *bucket, *key;
    int width, height;
    uint8_t *data;
    size_t len;
    int tries;
    uv_work_t work;
    int rc; /* scoring: 0 or why not */
    struct imgq_score score;
    bool unread;     /* it could not be fetched: the selection fails */
    long status;     /* and the S3 status */
    char error[400]; /* and why */
};

struct ref_fetch {
    struct job *j;
    int index; /* reference number; nrefs = the mask */
    const char *source;
    struct imgq_ref_data *out;
    int tries;
    char *bucket;             /* s3:// references: their bucket */
    struct imgq_s3_config s3; /* the worker's S3 settings on that bucket (borrowed strings) */
    uv_work_t guard;          /* http(s) references: the SSRF check, off the loop */
    int guard_rc;
    char guard_why[256];
    char pin[IMGQ_SSRF_PIN_MAX]; /* the checked address the fetch connects to */
};

static void finish_fail(struct job *j, enum imgq_error_class cls, long status, const char *code,
                        const char *msg, long retry_after_ms, imgq_micros charged);
static void calls_settled(struct job *j);
static void send_outcome(struct job *j);
static void settle_call(struct call *c, imgq_micros cost, const char *reason);
static void job_block(struct job *j);
static void call_key(struct call *c);
static void store_images(struct job *j);
static void store_release(struct job *j);
static bool store_from_spool(struct job *j);
static bool store_retry_from_spool(struct job *j);

static void on_retry_outcome(uv_timer_t *t)
{
    struct job *j = t->data;
    send_outcome(j);
    /* From a timer, the check handle would wait for the next I/O: send it now. */
    run_flush_outcomes(j->w);
}

static void on_store_timer(uv_timer_t *t)
{
    store_images(t->data);
}

const char *job_id(const struct job *j)
{
    return j->id;
}

const char *job_token(const struct job *j)
{
    return j->token;
}

bool job_lease_held(const struct job *j)
{
    return !j->lease_lost && !j->abandoned && j->state != JOB_ENDED;
}

bool job_waiting_for_provider(const struct job *j)
{
    if (j->state != JOB_CALLING)
        return false;
    /* A fan-out with an image already paid for finishes, as a job past its provider does:
     * handing it back would pay for that image again. */
    for (int i = 0; i < j->ncalls; i++)
        if (j->calls[i].done)
            return false;
    return true;
}

struct job *job_next(const struct job *j)
{
    return j->next;
}

static void job_set_state(struct job *j, enum job_state to)
{
    if (imgq_log_enabled(IMGQ_LOG_DEBUG))
        imgq_log(IMGQ_LOG_DEBUG, "job", "%s attempt %d: %s -> %s", j->id, j->attempt,
                 state_name(j->state), state_name(to));
    j->state = to;
}

/* The job's memory (and its calls', which embed timers) outlives every handle close. */
static void job_release(struct job *j)
{
    if (--j->handles_open == 0) {
        free(j->calls);
        free(j);
    }
}

static void on_timer_closed(uv_handle_t *h)
{
    job_release(h->data);
}

static void job_free(struct job *j)
{
    struct worker *w = j->w;
    if (j->prev)
        j->prev->next = j->next;
    else
        w->jobs = j->next;
    if (j->next)
        j->next->prev = j->prev;
    if (!j->slot_freed)
        w->inflight--;
    free(j->asked_model);
    store_release(j);
    for (int i = 0; i < j->nimgs; i++) {
        if (j->imgs[i].data != j->imgs[i].src)
            free(j->imgs[i].data);
        free(j->imgs[i].key);
        free(j->imgs[i].sidecar);
        free(j->imgs[i].sidecar_key);
    }
    free(j->imgs);
    imgq_provider_result_clear(&j->fail);
    imgq_job_spec_clear(&j->spec);
    free(j->id);
    free(j->token);
    free(j->batch);
    free(j->spec_json);
    free(j->outcome_json);
    free(j->attempt_json);
    free(j->final_json);
    free(j->fallback_from);
    free(j->fallback_why);
    free(j->own_why);
    for (int i = 0; i < j->ndrafts; i++) {
        free(j->drafts[i].bucket);
        free(j->drafts[i].key);
        free(j->drafts[i].data);
    }
    free(j->drafts);
    json_decref(j->pipeline_result);
    /* The job's memory goes with the last timer's close callback. */
    j->handles_open = 1; /* held until every close below is requested */
    for (int i = 0; i < j->nref_fetches; i++)
        free(j->refs[i].bucket);
    free(j->refs);
    for (int i = 0; i < j->ncalls; i++) {
        imgq_provider_result_clear(&j->calls[i].pr);
        free(j->calls[i].handle);
        free(j->calls[i].fetches);
        if (j->calls[i].timer_init) {
            j->handles_open++;
            j->calls[i].timer.data = j;
            uv_close((uv_handle_t *)&j->calls[i].timer, on_timer_closed);
        }
    }
    if (j->timer_init) {
        j->handles_open++;
        j->timer.data = j;
        uv_close((uv_handle_t *)&j->timer, on_timer_closed);
    }
    job_release(j);
    worker_job_gone(w, NULL);
}

/* An async operation returned: true if the caller must stop (the job is gone or abandoned). */
static bool op_done(struct job *j)
{
    j->ops--;
    if (j->abandoned) {
        if (j->ops == 0)
            job_free(j);
        return true;
    }
    return false;
}

void job_abandon(struct job *j, bool release)
{
    (void)release;
    if (j->abandoned)
        return;
    j->abandoned = true;
    if (j->timer_init && uv_is_active((uv_handle_t *)&j->timer))
        uv_timer_stop(&j->timer);
    for (int i = 0; i < j->ncalls; i++)
        if (j->calls[i].timer_init)
            uv_timer_stop(&j->calls[i].timer);
    if (j->ops == 0)
        job_free(j);
}

void job_hand_back(struct job *j)
{
    if (j->abandoned || j->state != JOB_CALLING)
        return;
    for (int i = 0; i < j->ncalls; i++) {
        struct call *c = &j->calls[i];
        if (c->done || c->failed || c->handle || !c->reserve_held)
            continue;
        if (c->sent)
            imgq_log(IMGQ_LOG_WARN, "job",
                     "%s call %d/%d: handed back while the provider had it; charged as lost "
                     "at its reservation (%" PRId64 " micros)",
                     j->id, c->index + 1, j->ncalls, c->reserved);
        settle_call(c, c->sent ? c->reserved : 0, c->sent ? "lost" : "free");
    }
}

void job_lease_lost(struct worker *w, const char *id, const char *token)
{
    for (struct job *j = w->jobs; j; j = j->next)
        if (strcmp(j->id, id) == 0 && strcmp(j->token, token) == 0 && !j->lease_lost) {
            imgq_log(IMGQ_LOG_WARN, "job", "%s: lease lost (cancelled, or taken over)", id);
            j->lease_lost = true;
            w->lost++;
            /* Calls waiting on a timer (a retry, the next poll) stop here.  A retry wait holds
             * no reservation; a polled task's reservation is left standing: the worker that
             * takes the job over settles it with the task's usage, or the reaper charges it.
             * Calls in flight end through their callbacks. */
            if (j->state == JOB_CALLING && j->ncalls > 0 && !j->reserving) {
                for (int i = 0; i < j->ncalls; i++) {
                    struct call *c = &j->calls[i];
                    if (!c->timer_init || !uv_is_active((uv_handle_t *)&c->timer))
                        continue;
                    uv_timer_stop(&c->timer);
                    if (c->done || c->failed)
                        continue;
                    if (!c->handle)
                        settle_call(c, 0, "free");
                    c->failed = true;
                    j->calls_pending--;
                }
                if (j->calls_pending == 0)
                    calls_settled(j);
            }
            /* Otherwise the job goes on to its outcome: the script refuses its result but
             * records what the provider calls cost (settlement by attempt). */
            return;
        }
}

static void arm_timer(struct job *j, long ms, uv_timer_cb cb)
{
    if (!j->timer_init) {
        uv_timer_init(j->w->loop, &j->timer);
        j->timer_init = true;
    }
    j->timer.data = j;
    uv_timer_start(&j->timer, cb, (uint64_t)(ms > 0 ? ms : 1), 0);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Outcomes ------------------------------------------------------------------------------ */

/* The reply to a job's outcome said 'status' (see complete.lua / fail.lua): count it, and free
 * the job's slot for its successor. */
static void outcome_recorded(struct worker *w, struct job *j, long long status)
{
    if (status == 0) {
        imgq_log(IMGQ_LOG_WARN, "job", "%s: lease lost before the outcome was recorded", j->id);
        w->lost++;
    } else if (j->outcome_complete) {
        w->done++;
        if (!w->opt.noop)
            imgq_log(IMGQ_LOG_INFO, "job",
                     "%s done: %s, %d image(s), cost %" PRId64 " micro-USD (%s)", j->id,
                     j->spec.model, j->nimgs, j->cost, j->billed);
    } else if (status == 1) {
        w->retried++;
        /* What Redis decided is what the log says (fail.lua). */
        if (j->rate_wait && j->backoff_grows)
            imgq_log(IMGQ_LOG_INFO, "job", "%s; will retry (rate limited, no hint: backing off)",
                     j->fail_line);
        else
            imgq_log(IMGQ_LOG_INFO, "job", "%s; will retry in %ld ms", j->fail_line,
                     j->retry_delay_ms);
    } else {
        w->failed++;
        if (j->retry_delay_ms >= 0)
            imgq_log(IMGQ_LOG_WARN, "job", "%s; giving up (%s)", j->fail_line,
                     j->rate_wait                    ? "rate-limit cap reached, see the attempt log"
                     : j->attempt >= j->max_attempts ? "its last attempt"
                                                     : "see the attempt log");
    }
    job_set_state(j, JOB_ENDED);
    /* The job's slot is free now: a successor that ends at once (--noop) then counts it free
     * and asks for its own successor, instead of every other job needing a claim of its own. */
    w->inflight--;
    j->slot_freed = true;
}

/* The reservation of the job's successor is settled (the claim came back, or not): its slot is
 * its own again until it is freed. */
static void unhand(struct job *j)
{
    if (j->handed) {
        j->handed = false;
        j->w->handed--;
    }
}

static void on_outcome(struct worker *w, redisReply *r, void *arg)
{
    struct job *j = arg;
    struct claim_args ca = j->ca; /* the successors' reservation outlives the job */
    unhand(j);
    if (op_done(j)) {
        worker_take_claims(w, r, 1, &ca);
        return;
    }
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_INTEGER) {
        /* Redis went away or refused: the outcome is kept and sent again. */
        worker_take_claims(w, NULL, 1, &ca);
        arm_timer(j, REDIS_RETRY_MS, on_retry_outcome);
        return;
    }
    outcome_recorded(w, j, r->element[0]->integer);
    /* Successors first: a stopping worker must see their releases pending before the last
     * job's departure lets it shut down. */
    worker_take_claims(w, r, 1, &ca);
    job_free(j);
}

/* Completions --------------------------------------------------------------------------------
 * A job that completes is queued; at the end of the loop's turn (a check handle) every queued
 * completion goes to Redis in one complete.lua call, which also leases their successors.  A
 * worker with many jobs finishing together (a claim's worth of no-op jobs, or a burst of
 * provider answers) makes one round trip and one script run for them all. */

#define OUTCOME_BATCH 16 /* completions per call at most */

struct outcome_batch {
    int n;
    struct claim_args ca; /* the successors of all n */
    struct job *jobs[];
};

static void on_outcomes(struct worker *w, redisReply *r, void *arg)
{
    struct outcome_batch *b = arg;
    bool ok = r && r->type == REDIS_REPLY_ARRAY && r->elements >= (size_t)b->n;
    for (int i = 0; ok && i < b->n; i++)
        ok = r->element[i]->type == REDIS_REPLY_INTEGER;
    if (r && r->type == REDIS_REPLY_ERROR) {
        /* One job's data may be what the script choked on: each is sent alone from now on,
         * so the others are not held back with it. */
        imgq_log(IMGQ_LOG_ERROR, "job", "completing %d job(s): %s", b->n, r->str);
        for (int i = 0; b->n > 1 && i < b->n; i++)
            b->jobs[i]->solo = true;
    }
    for (int i = 0; i < b->n; i++) {
        struct job *j = b->jobs[i];
        b->jobs[i] = NULL;
        unhand(j);
        if (op_done(j))
            continue; /* abandoned: freed, or freed when its last operation ends */
        if (!ok) {
            /* Redis went away or refused: the outcome is kept and sent again. */
            arm_timer(j, REDIS_RETRY_MS, on_retry_outcome);
            continue;
        }
        b->jobs[i] = j;
        outcome_recorded(w, j, r->element[i]->integer);
    }
    /* Held until freed here: freeing the first may let a stopping worker shut down
     * (job_free -> check_stopped), which abandons every job still listed; the hold keeps it
     * from freeing the others under this loop. */
    for (int i = 0; i < b->n; i++)
        if (b->jobs[i])
            b->jobs[i]->ops++;
    /* Successors first (see on_outcome). */
    worker_take_claims(w, ok ? r : NULL, ok ? (size_t)b->n : 0, &b->ca);
    for (int i = 0; i < b->n; i++) {
        struct job *j = b->jobs[i];
        if (!j)
            continue;
        j->ops--;
        if (!j->abandoned || j->ops == 0)
            job_free(j);
    }
    free(b);
}

void run_flush_outcomes(struct worker *w)
{
    while (w->noutq > 0) {
        int n = w->noutq < OUTCOME_BATCH ? w->noutq : OUTCOME_BATCH;
        for (int i = 0; i < n; i++)
            if (w->outq[i]->solo) {
                n = i > 0 ? i : 1; /* those before it together, then it alone */
                break;
            }
        struct outcome_batch *b = imgq_xcalloc(1, sizeof *b + (size_t)n * sizeof b->jobs[0]);
        b->n = n;
        memcpy(b->jobs, w->outq, (size_t)n * sizeof b->jobs[0]);
        w->noutq -= n;
        memmove(w->outq, w->outq + n, (size_t)w->noutq * sizeof w->outq[0]);
        /* The successors reserved by each job, asked for together under the first job's token
         * prefix (each prefix is used by one call only). */
        b->ca = b->jobs[0]->ca;
        b->ca.count = 0;
        for (int i = 0; i < n; i++)
            b->ca.count += b->jobs[i]->ca.count;
        snprintf(b->ca.count_s, sizeof b->ca.count_s, "%d", b->ca.count);
        const char **args = imgq_xcalloc((size_t)(4 + 7 * n), sizeof *args);
        char(*num)[2][32] = imgq_xcalloc((size_t)n, sizeof *num);
        args[0] = w->id;
        args[1] = b->ca.lease_s;
        args[2] = b->ca.count_s;
        args[3] = b->ca.token;
        for (int i = 0; i < n; i++) {
            struct job *j = b->jobs[i];
            snprintf(num[i][0], sizeof num[i][0], "%" PRId64, j->cost);
            snprintf(num[i][1], sizeof num[i][1], "%d", j->nimgs);
            const char **a = args + 4 + 7 * i;
            a[0] = j->id;
            a[1] = j->token;
            a[2] = j->outcome_json;
            a[3] = num[i][0];
            a[4] = num[i][1];
            a[5] = j->attempt_json;
            a[6] = j->asked_model ? j->asked_model : "";
        }
        int r = worker_script(w, IMGQ_SCRIPT_COMPLETE, 4 + 7 * n, args, on_outcomes, b);
        free(num);
        free(args);
        if (r != 0) {
            /* Not connected: each outcome waits and is sent again. */
            for (int i = 0; i < n; i++) {
                struct job *j = b->jobs[i];
                unhand(j);
                if (!op_done(j))
                    arm_timer(j, REDIS_RETRY_MS, on_retry_outcome);
            }
            worker_take_claims(w, NULL, 0, &b->ca);
            free(b);
        }
    }
    uv_check_stop(&w->outcome_check);
}

static void on_outcome_check(uv_check_t *h)
{
    run_flush_outcomes(h->data);
}

static void queue_completion(struct job *j)
{
    struct worker *w = j->w;
    if (w->noutq == w->outq_cap) {
        w->outq_cap = w->outq_cap ? 2 * w->outq_cap : OUTCOME_BATCH;
        w->outq = imgq_xrealloc(w->outq, (size_t)w->outq_cap * sizeof w->outq[0]);
    }
    w->outq[w->noutq++] = j;
    j->ops++;
    if (w->noutq >= OUTCOME_BATCH || w->closing) {
        run_flush_outcomes(w); /* (closing: the check handle is closed) */
        return;
    }
    if (!uv_is_active((uv_handle_t *)&w->outcome_check)) {
        w->outcome_check.data = w;
        uv_check_start(&w->outcome_check, on_outcome_check);
    }
}

static void send_outcome(struct job *j)
{
    struct worker *w = j->w;
    /* The job's slot goes to its successor, leased in the same round trip.  A re-send (the
     * first reply was lost) asks for none: the first call may have leased one already. */
    worker_claim_args(w, j->outcome_sends++ ? 0 : 1, true, &j->ca);
    if (j->ca.count > 0) {
        j->handed = true;
        w->handed++;
    }
    if (j->outcome_complete) {
        queue_completion(j);
        return;
    }
    char delay[32], cost[32], rl_max[32] = "", rl_max_ms[32] = "", grow[32] = "";
    snprintf(delay, sizeof delay, "%ld", j->retry_delay_ms);
    snprintf(cost, sizeof cost, "%" PRId64, j->cost);
    if (j->rate_wait) {
        snprintf(rl_max, sizeof rl_max, "%d",
                 j->spec.max_rate_limit_waits > 0 ? j->spec.max_rate_limit_waits
                                                  : w->opt.max_rate_limit_waits);
        snprintf(rl_max_ms, sizeof rl_max_ms, "%ld", w->opt.max_rate_limit_wait_ms);
        if (j->backoff_grows)
            snprintf(grow, sizeof grow, "%d", w->opt.retry_max_ms);
    }
    const char *args[14] = {j->id,
                            j->token,
                            j->outcome_json,
                            delay,
                            cost,
                            j->consume_attempt ? "1" : "0",
                            w->id,
                            j->ca.lease_s,
                            j->ca.count_s,
                            j->ca.token,
                            j->final_json ? j->final_json : "",
                            rl_max,
                            rl_max_ms,
                            grow};
    if (worker_script(w, IMGQ_SCRIPT_FAIL, 14, args, on_outcome, j) == 0) {
        j->ops++;
        return;
    }
    unhand(j);
    worker_take_claims(w, NULL, 1, &j->ca);
    arm_timer(j, REDIS_RETRY_MS, on_retry_outcome);
}

/* A provider's hint, clamped to the worker's maximum (--max-retry-after-s). */
static long clamp_hint(const struct worker *w, long hint_ms)
{
    return hint_ms > w->opt.max_retry_after_ms ? w->opt.max_retry_after_ms : hint_ms;
}

static long backoff_ms(const struct worker *w, int attempt)
{
    long d = w->opt.retry_base_ms;
    for (int i = 1; i < attempt && d < w->opt.retry_max_ms; i++)
        d *= 2;
    if (d > w->opt.retry_max_ms)
        d = w->opt.retry_max_ms;
    /* Equal jitter: half fixed, half random, so a burst of failures spreads out. */
    unsigned int rnd = 0;
    if (RAND_bytes((unsigned char *)&rnd, sizeof rnd) != 1)
        rnd = (unsigned int)now_ms();
    return d / 2 + (long)(rnd % (unsigned int)(d / 2 + 1));
}

static void finish_fail(struct job *j, enum imgq_error_class cls, long status, const char *code,
                        const char *msg, long retry_after_ms, imgq_micros charged)
{
    struct worker *w = j->w;
    bool retry = imgq_error_class_retryable(cls);
    j->consume_attempt = true;
    j->retry_delay_ms = -1;
    j->rate_wait = j->backoff_grows = false;
    /* A hint over the worker's maximum (--max-retry-after-s) is the maximum. */
    long hint = retry_after_ms;
    bool clamped = hint > w->opt.max_retry_after_ms;
    if (clamped)
        hint = w->opt.max_retry_after_ms;
    if (retry) {
        if (cls == IMGQ_CLASS_RATE_LIMIT) {
            /* The provider said "not now", not "this failed": wait as told, keep the try.  A
             * provider's 429 (not a budget's wait) counts against the rate-limit caps, which
             * end a job that is told "not now" for too long (fail.lua). */
            j->consume_attempt = false;
            j->rate_wait = !(code && strcmp(code, "budget") == 0);
            j->backoff_grows = j->rate_wait && hint < 0;
            j->retry_delay_ms = hint >= 0 ? hint : backoff_ms(w, 1);
        } else {
            j->retry_delay_ms = backoff_ms(w, j->attempt);
        }
    }
    j->cost = charged;
    json_t *e = json_object();
    json_object_set_new(e, "class", json_string(imgq_error_class_name(cls)));
    json_object_set_new(e, "attempt", json_integer(j->attempt));
    json_object_set_new(e, "time", json_integer((json_int_t)now_ms()));
    if (j->model)
        json_object_set_new(e, "model", json_string(j->model->name));
    if (j->fallback_from)
        json_object_set_new(e, "fallback_from", json_string(j->fallback_from));
    if (status)
        json_object_set_new(e, "status", json_integer(status));
    if (code && *code)
        json_object_set_new(e, "code", json_string(code));
    json_object_set_new(e, "message", json_string(msg ? msg : ""));
    if (retry_after_ms >= 0)
        json_object_set_new(e, "retry_after_ms", json_integer(retry_after_ms));
    if (clamped)
        json_object_set_new(e, "retry_after_clamped_to_ms", json_integer(hint));
    if (charged)
        json_object_set_new(e, "charged_micros", json_integer(charged));
    if (j->request_id[0])
        json_object_set_new(e, "provider_request_id", json_string(j->request_id));
    /* Two entries: fail.lua records the one that comes true.  Retried: "retry": true and
     * when; ended here (not retryable, its last attempt, a cap): "retry": false. */
    json_t *last = json_deep_copy(e);
    json_object_set_new(last, "retry", json_false());
    json_object_set_new(e, "retry", json_boolean(retry));
    if (retry)
        json_object_set_new(e, "retry_in_ms", json_integer(j->retry_delay_ms));
    free(j->outcome_json);
    j->outcome_json = json_dumps(e, JSON_COMPACT);
    free(j->final_json);
    j->final_json = json_dumps(last, JSON_COMPACT);
    json_decref(e);
    json_decref(last);
    j->outcome_complete = false;
    char clamp_note[96] = "";
    if (clamped)
        snprintf(clamp_note, sizeof clamp_note, " (retry-after %ld ms clamped to %ld ms)",
                 retry_after_ms, hint);
    snprintf(j->fail_line, sizeof j->fail_line, "%s attempt %d: %s (%ld) %.400s%s", j->id,
             j->attempt, imgq_error_class_name(cls), status, msg ? msg : "", clamp_note);
    if (!retry)
        imgq_log(IMGQ_LOG_WARN, "job", "%s; not retryable", j->fail_line);
    job_set_state(j, JOB_FINISHING);
    send_outcome(j);
}

static void finish_done(struct job *j)
{
    json_t *o = json_object();
    json_t *imgs = json_array();
    for (int i = 0; i < j->nimgs; i++) {
        json_t *im = json_object();
        json_object_set_new(im, "bucket", json_string(j->w->s3.bucket));
        json_object_set_new(im, "key", json_string(j->imgs[i].key));
        json_object_set_new(im, "width", json_integer(j->imgs[i].width));
        json_object_set_new(im, "height", json_integer(j->imgs[i].height));
        json_object_set_new(im, "bytes", json_integer((json_int_t)j->imgs[i].len));
        json_object_set_new(im, "format", json_string(j->spec.output_format));
        if (j->imgs[i].sidecar_key && j->imgs[i].sidecar)
            json_object_set_new(im, "sidecar", json_string(j->imgs[i].sidecar_key));
        json_array_append_new(imgs, im);
    }
    json_object_set_new(o, "images", imgs);
    json_object_set_new(o, "model", json_string(j->spec.model));
    if (j->fallback_from)
        json_object_set_new(o, "fallback",
                            json_pack("{s:s, s:s}", "from", j->fallback_from, "why",
                                      j->fallback_why ? j->fallback_why : ""));
    json_object_set_new(o, "route", json_string(j->spec.route));
    if (j->pipeline_result)
        json_object_set(o, "pipeline", j->pipeline_result);
    /* The usage as returned: the object of the one call, or one per call of a fan-out. */
    if (j->ncalls == 1 && j->calls[0].pr.usage_json) {
        json_object_set(o, "usage", j->calls[0].pr.usage_json);
    } else if (j->ncalls > 1) {
        json_t *all = json_array();
        for (int i = 0; i < j->ncalls; i++)
            json_array_append(all,
                              j->calls[i].pr.usage_json ? j->calls[i].pr.usage_json : json_null());
        json_object_set_new(o, "usage", all);
        json_object_set_new(o, "provider_calls", json_integer(j->ncalls));
    } else {
        json_object_set_new(o, "usage", json_null());
    }
    json_object_set_new(o, "billed", json_string(j->billed));
    /* Why a call was billed at the ceiling although the provider answered with a usage. */
    char unusable[256] = "";
    for (int i = 0; i < j->ncalls && !unusable[0]; i++) {
        const char *why = j->calls[i].pr.usage_unusable;
        if (why[0] && j->ncalls > 1)
            snprintf(unusable, sizeof unusable, "call %d: %s", i + 1, why);
        else if (why[0])
            snprintf(unusable, sizeof unusable, "%s", why);
    }
    if (unusable[0])
        json_object_set_new(o, "usage_unusable", json_string(unusable));
    json_object_set_new(o, "cost_micros", json_integer(j->cost));
    json_object_set_new(o, "attempt", json_integer(j->attempt));
    json_object_set_new(o, "elapsed_ms", json_integer((json_int_t)(now_ms() - j->started_ms)));
    if (j->request_id[0])
        json_object_set_new(o, "provider_request_id", json_string(j->request_id));
    free(j->outcome_json);
    j->outcome_json = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    json_t *a = json_object();
    json_object_set_new(a, "class", json_string("none"));
    json_object_set_new(a, "attempt", json_integer(j->attempt));
    json_object_set_new(a, "time", json_integer((json_int_t)now_ms()));
    json_object_set_new(a, "status", json_integer(j->last_status));
    json_object_set_new(a, "model", json_string(j->spec.model));
    if (j->fallback_from)
        json_object_set_new(a, "fallback_from", json_string(j->fallback_from));
    json_object_set_new(a, "billed", json_string(j->billed));
    if (unusable[0])
        json_object_set_new(a, "usage_unusable", json_string(unusable));
    json_object_set_new(a, "cost_micros", json_integer(j->cost));
    if (j->request_id[0])
        json_object_set_new(a, "provider_request_id", json_string(j->request_id));
    free(j->attempt_json);
    j->attempt_json = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    j->outcome_complete = true;
    job_set_state(j, JOB_FINISHING);
    send_outcome(j);
}

/* Storing ----------------------------------------------------------------------------------- */

/* How an output_format is stored: the object key's extension and the content type. */
static void output_form(const char *fmt, const char **ext, const char **type)
{
    bool png = strcmp(fmt, "png") == 0, jpeg = strcmp(fmt, "jpeg") == 0;
    if (ext)
        *ext = png ? "png" : jpeg ? "jpg" : "webp";
    if (type)
        *type = png ? "image/png" : jpeg ? "image/jpeg" : "image/webp";
}

/* Image idx of the job's content-addressed object key (dedup.h; a new string). */
static char *image_key(const struct job *j, int idx)
{
    const char *ext;
    char dk[65];
    output_form(j->spec.output_format, &ext, NULL);
    imgq_dedup_key(&j->spec, idx, dk);
    return imgq_object_key(j->w->cfg->s3_key_prefix, dk, ext);
}

/* A short tag of the job's lease token (FNV-1a), unique per claim: keys of ledger entries. */
static uint32_t token_tag(const struct job *j)
{
    uint32_t h = 2166136261u;
    for (const char *p = j->token; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    return h;
}

/*
 * Storing a paid image.  A PUT round that fails is tried again, only the PUTs, with backoff and
 * jitter, for as long as the job's lease holds (the worker renews it while the job is storing)
 * and --store-timeout-ms allows: the images were paid for and are never generated again because
 * storage failed.  After the first failed round the unstored bytes are handed to the spool
 * (spool.h): written to the spool directory when there is one with room (a copy that outlives
 * this worker), kept in memory while the memory cap allows, else read back from their file for
 * each round.  With no room anywhere they stay in memory over the cap (ERROR) and the worker
 * claims nothing new until it is under again: paid bytes are never dropped.  Giving up fails
 * the attempt as 'storage' with its charge; what is in the spool directory stays there, and
 * the job's next attempt on a worker with that directory stores it without calling the provider
 * (store_from_spool).  README.md ("Storage outages") says this for users.
 */

/* Object 'which' of an image: 0 the image, 1 its sidecar. */
static const char *object_key(const struct image_out *im, int which)
{
    return which == 0 ? im->key : im->sidecar_key;
}

static bool object_stored(const struct image_out *im, int which)
{
    return which == 0 ? im->stored : im->sidecar_stored;
}

/* The object's bytes as they are now (in memory, or read back from the spool), or NULL. */
static const uint8_t *object_bytes(const struct image_out *im, int which, size_t *len)
{
    if (which == 0 && im->data) {
        *len = im->len;
        return im->data;
    }
    if (which == 1 && im->sidecar) {
        *len = strlen(im->sidecar);
        return (const uint8_t *)im->sidecar;
    }
    *len = im->loaded_len[which];
    return im->loaded[which];
}

/* Bytes read back for a round are dropped after it: their files keep them. */
static void store_unload(struct job *j)
{
    for (int i = 0; i < j->nimgs; i++)
        for (int k = 0; k < 2; k++) {
            free(j->imgs[i].loaded[k]);
            j->imgs[i].loaded[k] = NULL;
            j->imgs[i].loaded_len[k] = 0;
        }
}

static void store_uncount(struct job *j, struct image_out *im)
{
    if (im->counted && j->w->spool)
        spool_mem_give(j->w->spool, im->counted_len);
    im->counted = false;
}

/* The job ends: what it counted in the spool's memory is given back (its files stay). */
static void store_release(struct job *j)
{
    store_unload(j);
    for (int i = 0; i < j->nimgs; i++)
        store_uncount(j, &j->imgs[i]);
}

static long store_backoff_ms(int round)
{
    long d = STORE_BACKOFF_BASE_MS;
    for (int i = 1; i < round && d < STORE_BACKOFF_MAX_MS; i++)
        d *= 2;
    if (d > STORE_BACKOFF_MAX_MS)
        d = STORE_BACKOFF_MAX_MS;
    /* Equal jitter: the jobs of one outage do not all knock at once when S3 is back. */
    unsigned int rnd = 0;
    if (RAND_bytes((unsigned char *)&rnd, sizeof rnd) != 1)
        rnd = (unsigned int)now_ms();
    return d / 2 + (long)(rnd % (unsigned int)(d / 2 + 1));
}

/* Every object not stored yet has a spool file: nothing would be lost if the job ended now. */
static bool store_all_on_disk(const struct job *j)
{
    for (int i = 0; i < j->nimgs; i++)
        for (int k = 0; k < 2; k++)
            if (!object_stored(&j->imgs[i], k) && !j->imgs[i].on_disk[k])
                return false;
    return true;
}

/* The attempt gives up storing: it fails as 'storage', and what it paid stays charged. */
static void store_give_up(struct job *j, const char *why)
{
    int kept = 0, lost = 0;
    for (int i = 0; i < j->nimgs; i++)
        for (int k = 0; k < 2; k++)
            if (!object_stored(&j->imgs[i], k)) {
                if (j->imgs[i].on_disk[k])
                    kept++;
                else
                    lost++;
            }
    uint64_t since = j->store_since ? uv_now(j->w->loop) - j->store_since : 0;
    char msg[1024];
    snprintf(msg, sizeof msg,
             "storing failed for %.1f s (%.400s) and gave up: %s; the charge stands; %d object(s) "
             "stay in the spool for the next attempt, %d held only in memory are lost%s",
             (double)since / 1000.0, j->s3_error, why, kept, lost,
             lost ? " (the next attempt calls the provider again)" : "");
    imgq_log(lost ? IMGQ_LOG_ERROR : IMGQ_LOG_WARN, "job", "%s: %s", j->id, msg);
    finish_fail(j, IMGQ_CLASS_STORAGE, 0, NULL, msg, -1, j->cost);
}

/* Release an image's memory: its spool file holds it (the provider's bytes go too). */
static void store_forget_image(struct image_out *im)
{
    struct call *c = im->call;
    int k = c ? im->index - c->first : -1;
    if (im->data != im->src)
        free(im->data);
    if (c && k >= 0 && k < c->pr.nimages && c->pr.images[k] == im->src) {
        free(c->pr.images[k]);
        c->pr.images[k] = NULL;
    }
    im->data = NULL;
    im->src = NULL;
}

/* After the first failed round: count the waiting bytes in the spool's memory if they fit;
 * else give back the memory of images a spool file holds; else keep them over the cap. */
static void store_account(struct job *j)
{
    struct spool *sp = j->w->spool;
    size_t over = 0;
    int released = 0;
    for (int i = 0; i < j->nimgs; i++) {
        struct image_out *im = &j->imgs[i];
        size_t len0 = !im->stored && im->data ? im->len : 0;
        size_t len1 = !im->sidecar_stored && im->sidecar ? strlen(im->sidecar) : 0;
        if (len0 + len1 == 0 || im->counted || !sp)
            continue;
        im->counted = true;
        im->counted_len = len0 + len1;
        if (spool_mem_take(sp, len0 + len1))
            continue;
        if (len0 && im->on_disk[0]) {
            store_forget_image(im);
            released++;
            im->counted_len = len1; /* a sidecar is small: it stays in memory */
        } else {
            over += len0 + len1;
        }
        spool_mem_force(sp, im->counted_len);
    }
    if (released)
        imgq_log(IMGQ_LOG_INFO, "job", "%s: %d image(s) kept only in the spool directory %s", j->id,
                 released, spool_dir(sp));
    if (over)
        imgq_log(IMGQ_LOG_ERROR, "job",
                 "%s: the spool has no room (memory %" PRIu64 " bytes used; directory %s): keeping "
                 "%zu paid bytes in memory over the cap; claiming no new jobs until under it",
                 j->id, spool_mem_used(sp), spool_dir(sp) ? "full or failing" : "none configured",
                 over);
}

static void store_retry(struct job *j);

static void hold_work(uv_work_t *req)
{
    struct job *j = req->data; /* only its images' spool flags change, from this thread */
    const char *type;
    output_form(j->spec.output_format, NULL, &type);
    j->store_work_rc = 0;
    for (int i = 0; i < j->nimgs; i++)
        for (int k = 0; k < 2; k++) {
            struct image_out *im = &j->imgs[i];
            size_t len;
            const uint8_t *b = object_bytes(im, k, &len);
            if (object_stored(im, k) || im->on_disk[k] || !b)
                continue;
            char why[300];
            int r = spool_write(j->w->spool, object_key(im, k),
                                k ? IMGQ_SIDECAR_CONTENT_TYPE : type, b, len, why, sizeof why);
            if (r == 0)
                im->on_disk[k] = true;
            else if (j->store_work_rc == 0) {
                j->store_work_rc = r;
                snprintf(j->store_work_why, sizeof j->store_work_why, "%s", why);
            }
        }
}

static void hold_done(uv_work_t *req, int status)
{
    (void)status;
    struct job *j = req->data;
    if (op_done(j))
        return;
    if (j->store_work_rc)
        imgq_log(IMGQ_LOG_WARN, "job", "%s: not all of its paid bytes are in the spool: %s", j->id,
                 j->store_work_why);
    store_account(j);
    store_retry(j);
}

/* The first round failed: the unstored bytes go to the spool (files off the loop). */
static void store_hold(struct job *j)
{
    j->store_held = true;
    struct spool *sp = j->w->spool;
    if (sp && spool_dir(sp)) {
        j->store_work.data = j;
        if (uv_queue_work(j->w->loop, &j->store_work, hold_work, hold_done) == 0) {
            j->ops++;
            return;
        }
    }
    store_account(j);
    store_retry(j);
}

/* A round ended with objects not stored: wait and try again, or give up. */
static void store_retry(struct job *j)
{
    struct worker *w = j->w;
    uint64_t now = uv_now(w->loop);
    if (!j->store_since)
        j->store_since = now;
    if (j->lease_lost) {
        store_give_up(j, "the job's lease was lost");
        return;
    }
    if (now - j->store_since >= (uint64_t)w->opt.store_timeout_ms) {
        store_give_up(j, "--store-timeout-ms passed");
        return;
    }
    if (w->grace_over && store_all_on_disk(j)) {
        store_give_up(j, "the worker is stopping and the spool directory holds every byte");
        return;
    }
    if (!j->store_held) {
        store_hold(j);
        return;
    }
    long ms = store_backoff_ms(++j->s3_tries);
    imgq_log(IMGQ_LOG_WARN, "job",
             "%s: storing failed (%s); the images are paid for: trying the PUT again in %ld ms "
             "(round %d, %.1f s so far)",
             j->id, j->s3_error, ms, j->s3_tries + 1, (double)(now - j->store_since) / 1000.0);
    arm_timer(j, ms, on_store_timer);
}

/* A PUT round is over: done when everything is stored, else wait and try again. */
static void store_round_over(struct job *j)
{
    struct spool *sp = j->w->spool;
    store_unload(j);
    bool all = true, lost = false;
    for (int i = 0; i < j->nimgs; i++) {
        struct image_out *im = &j->imgs[i];
        for (int k = 0; k < 2; k++) {
            size_t len;
            if (object_stored(im, k)) {
                /* In S3 now: its spool file has done its work. */
                if (im->on_disk[k] && sp)
                    (void)spool_remove(sp, object_key(im, k));
                im->on_disk[k] = false;
            } else {
                all = false;
                lost |= !object_bytes(im, k, &len) && !im->on_disk[k];
            }
        }
        if (im->stored && im->sidecar_stored)
            store_uncount(j, im);
    }
    if (all) {
        if (j->store_since)
            imgq_log(IMGQ_LOG_INFO, "job",
                     "%s: stored after %.1f s of failed PUTs; no image was generated again", j->id,
                     (double)(uv_now(j->w->loop) - j->store_since) / 1000.0);
        finish_done(j);
        return;
    }
    if (lost) {
        store_give_up(j, "some paid bytes are no longer available");
        return;
    }
    store_retry(j);
}

/* An image or a sidecar PUT answered; when all have, the round is over. */
static void put_answered(struct job *j, const struct imgq_s3_result *res, bool *stored)
{
    if (res->err == 0)
        *stored = true;
    else
        snprintf(j->s3_error, sizeof j->s3_error, "%s", res->message);
    if (--j->pending > 0)
        return;
    store_round_over(j);
}

static void on_put(const struct imgq_s3_result *res, void *arg)
{
    struct image_out *im = arg;
    if (!op_done(im->job))
        put_answered(im->job, res, &im->stored);
}

static void on_put_sidecar(const struct imgq_s3_result *res, void *arg)
{
    struct image_out *im = arg;
    if (!op_done(im->job))
        put_answered(im->job, res, &im->sidecar_stored);
}

/* KEY.json beside each image: what made it (sidecar.h).  The image's share of its call's
 * cost: an equal split, the remainder on the first images, so the shares add up. */
static void build_sidecar(struct job *j, struct image_out *im)
{
    const struct call *c = im->call;
    int k = im->index - c->first, n = c->pr.nimages > 0 ? c->pr.nimages : 1;
    imgq_micros share = c->cost / n + (k < (int)(c->cost % n) ? 1 : 0);
    char created[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", &tm);
    im->sidecar_key = imgq_sidecar_key(im->key);
    im->sidecar = im->sidecar_key ? imgq_sidecar_json(&j->spec, im->index, im->key, im->width,
                                                      im->height, im->len, j->spec.output_format,
                                                      c->pr.usage_json, share, created)
                                  : NULL;
    if (!im->sidecar) {
        imgq_log(IMGQ_LOG_WARN, "job", "%s: no sidecar for %s (key or text unusable)", j->id,
                 im->key);
        im->sidecar_stored = true; /* nothing to store */
    }
}

/* Objects whose bytes are only in the spool directory are read back for the next round. */
static bool store_needs_load(const struct job *j)
{
    for (int i = 0; i < j->nimgs; i++)
        for (int k = 0; k < 2; k++) {
            size_t len;
            const struct image_out *im = &j->imgs[i];
            if (!object_stored(im, k) && im->on_disk[k] && !object_bytes(im, k, &len))
                return true;
        }
    return false;
}

static void load_work(uv_work_t *req)
{
    struct job *j = req->data;
    j->store_work_rc = 0;
    for (int i = 0; i < j->nimgs; i++)
        for (int k = 0; k < 2; k++) {
            struct image_out *im = &j->imgs[i];
            size_t len;
            if (object_stored(im, k) || !im->on_disk[k] || object_bytes(im, k, &len))
                continue;
            char why[300];
            int r = spool_read(j->w->spool, object_key(im, k), &im->loaded[k], &im->loaded_len[k],
                               NULL, why, sizeof why);
            if (r == 0)
                continue;
            im->on_disk[k] = false; /* gone, or damaged and set aside */
            if (j->store_work_rc == 0) {
                j->store_work_rc = r;
                snprintf(j->store_work_why, sizeof j->store_work_why, "%s", why);
            }
        }
}

static void load_done(uv_work_t *req, int status)
{
    (void)status;
    struct job *j = req->data;
    if (op_done(j))
        return;
    for (int i = 0; i < j->nimgs; i++)
        if (j->imgs[i].loaded[0])
            j->imgs[i].len = j->imgs[i].loaded_len[0];
    if (j->store_work_rc) {
        imgq_log(IMGQ_LOG_ERROR, "job", "%s: paid bytes cannot be read back from the spool: %s",
                 j->id, j->store_work_why);
        store_unload(j);
        store_give_up(j, "its spool file could not be read back");
        return;
    }
    store_images(j);
}

/*
 * The job's next attempt, on a worker whose spool directory holds every image S3 lacks: an
 * earlier attempt paid for them, so they are stored from there, at $0 and without calling the
 * provider (billed "spool").  false: not all there, generate as usual.  Called before any
 * spend, with j->imgs keyed and im->stored set for the objects S3 has.
 */
static bool store_from_spool(struct job *j)
{
    struct spool *sp = j->w->spool;
    if (!sp || !spool_dir(sp) || j->nimgs == 0)
        return false;
    int missing = 0;
    for (int i = 0; i < j->nimgs; i++) {
        if (j->imgs[i].stored)
            continue;
        if (!spool_has(sp, j->imgs[i].key))
            return false;
        missing++;
    }
    if (missing == 0)
        return false;
    for (int i = 0; i < j->nimgs; i++) {
        struct image_out *im = &j->imgs[i];
        im->width = j->spec.width;
        im->height = j->spec.height;
        if (im->stored) {
            im->sidecar_stored = true;
            continue;
        }
        im->on_disk[0] = true;
        im->sidecar_key = imgq_sidecar_key(im->key);
        if (im->sidecar_key && spool_has(sp, im->sidecar_key))
            im->on_disk[1] = true;
        else
            im->sidecar_stored = true;
    }
    j->from_spool = true;
    j->cost = 0;
    j->billed = "spool";
    imgq_log(IMGQ_LOG_INFO, "job",
             "%s: %d image(s) paid for by an earlier attempt are in the spool: storing them "
             "without calling the provider",
             j->id, missing);
    store_images(j);
    return true;
}

/*
 * A job with "dedup": false skips the dedup check, but not its own paid images: from its
 * second attempt on, images an earlier attempt paid for and left in the spool are stored
 * from there (as store_from_spool).  false: none there, generate.
 */
static bool store_retry_from_spool(struct job *j)
{
    struct spool *sp = j->w->spool;
    if (j->attempt < 2 || !sp || !spool_dir(sp) || j->spec.n < 1)
        return false;
    j->nimgs = j->spec.n;
    j->imgs = imgq_xcalloc((size_t)j->nimgs, sizeof *j->imgs);
    for (int i = 0; i < j->nimgs; i++) {
        j->imgs[i].job = j;
        j->imgs[i].index = i;
        j->imgs[i].key = image_key(j, i);
    }
    if (store_from_spool(j))
        return true;
    for (int i = 0; i < j->nimgs; i++)
        free(j->imgs[i].key);
    free(j->imgs);
    j->imgs = NULL;
    j->nimgs = 0;
    return false;
}

static void store_images(struct job *j)
{
    job_set_state(j, JOB_STORING);
    if (j->lease_lost && j->store_since) {
        store_give_up(j, "the job's lease was lost");
        return;
    }
    if (store_needs_load(j)) {
        j->store_work.data = j;
        if (uv_queue_work(j->w->loop, &j->store_work, load_work, load_done) == 0) {
            j->ops++;
            return;
        }
        store_give_up(j, "its spool files cannot be read (no thread pool)");
        return;
    }
    j->pending = 0;
    const char *type;
    output_form(j->spec.output_format, NULL, &type);
    for (int i = 0; i < j->nimgs; i++) {
        struct image_out *im = &j->imgs[i];
        if (!im->sidecar && !im->sidecar_stored && !im->on_disk[1])
            build_sidecar(j, im);
        for (int k = 0; k < 2; k++) {
            size_t len;
            const uint8_t *b = object_bytes(im, k, &len);
            if (object_stored(im, k) || !b)
                continue;
            int r = imgq_s3_put(j->w->http, &j->w->s3, object_key(im, k),
                                k ? IMGQ_SIDECAR_CONTENT_TYPE : type, b, len, NULL,
                                k ? on_put_sidecar : on_put, im);
            if (r == 0) {
                j->ops++;
                j->pending++;
            } else {
                snprintf(j->s3_error, sizeof j->s3_error, "S3 PUT %s: %s", object_key(im, k),
                         imgq_strerror(r));
            }
        }
    }
    /* Nothing could even be sent (a configuration problem, or S3's client is gone): the round
     * is over at once, and waits like a failed one. */
    if (j->pending == 0)
        store_round_over(j);
}

/* Encoding (thread pool) ----------------------------------------------------------------- */

static void encode_work(uv_work_t *req)
{
    struct image_out *im = req->data;
    const struct job *j = im->job; /* read-only from the pool thread */
    const char *fmt = j->spec.output_format;
    if (strcmp(fmt, "png") == 0 && imgq_image_sniff(im->src, im->src_len) == IMGQ_IMAGE_PNG) {
        /* Already what was asked: stored as it came, once its structure and checksums show it
         * arrived whole (decoding it only to throw the pixels away cost ~5 ms a 1024x1024
         * image, half of a job's CPU after its answer). */
        int r = imgq_png_verify(im->src, im->src_len, NULL, &im->width, &im->height);
        if (r) {
            im->err = r;
            snprintf(im->errmsg, sizeof im->errmsg, "image %d from the provider is not a valid PNG",
                     im->index);
            return;
        }
        im->data = (uint8_t *)im->src;
        im->len = im->src_len;
        return;
    }
    struct imgq_image img = {0};
    int r = imgq_image_decode(im->src, im->src_len, NULL, IMGQ_PIXELS_AUTO, &img);
    if (r) {
        im->err = r;
        snprintf(im->errmsg, sizeof im->errmsg, "image %d from the provider does not decode",
                 im->index);
        return;
    }
    im->width = img.width;
    im->height = img.height;
    if (strcmp(fmt, "png") == 0)
        r = imgq_png_encode(&img, -1, &im->data, &im->len);
    else if (strcmp(fmt, "jpeg") == 0)
        r = imgq_jpeg_encode(&img, j->spec.output_compression, &im->data, &im->len);
    else
        r = imgq_webp_encode(&img, j->spec.output_compression, false, &im->data, &im->len);
    if (r) {
        im->err = r;
        snprintf(im->errmsg, sizeof im->errmsg, "image %d: %s encoding failed", im->index, fmt);
    }
    imgq_image_release(&img);
}

static void encode_done(uv_work_t *req, int status)
{
    struct image_out *im = req->data;
    struct job *j = im->job;
    if (op_done(j))
        return;
    if (--j->pending > 0)
        return;
    for (int i = 0; i < j->nimgs; i++)
        if (j->imgs[i].err) {
            /* A 2xx is billable even when its image is unusable. */
            finish_fail(j, IMGQ_CLASS_BAD_RESPONSE, 200, NULL, j->imgs[i].errmsg, -1, j->cost);
            return;
        }
    for (int i = 0; i < j->nimgs; i++)
        if (j->imgs[i].width != j->spec.width || j->imgs[i].height != j->spec.height)
            imgq_log(IMGQ_LOG_WARN, "job", "%s: image %d is %dx%d, %s was asked", j->id, i,
                     j->imgs[i].width, j->imgs[i].height, j->spec.size);
    store_images(j);
}

/* The provider calls --------------------------------------------------------------------- */

#define CALL_TRIES 4 /* sends of one call inside an attempt before the attempt fails */

static struct imgq_request_shape call_shape(const struct job *j, int n)
{
    /* Reference images are sent with every call of an edit (and billed as input tokens). */
    return (struct imgq_request_shape){j->spec.quality,        j->spec.width, j->spec.height, n,
                                       strlen(j->spec.prompt), j->spec.nrefs};
}

/*
 * Price one call from its usage, or at the ceiling when the provider returned none, one the
 * adapter found unusable, or one the catalog cannot price (pr.usage_unusable says why): an
 * answered call is always charged.
 */
static int price_call(struct call *c)
{
    struct job *j = c->j;
    if (c->pr.usage_present) {
        struct imgq_usage u = c->pr.usage;
        u.quality = j->spec.quality;
        u.width = j->spec.width;
        u.height = j->spec.height;
        if (u.images == 0)
            u.images = c->n;
        c->ceiling = false;
        int rc = imgq_cost_from_usage(j->model, j->route, &u, &c->cost);
        if (rc == 0) {
            c->drift_ppm = imgq_drift_observed_ppm(j->model, j->spec.quality, j->spec.width,
                                                   j->spec.height, u.images, u.image_out);
            return 0;
        }
        snprintf(c->pr.usage_unusable, sizeof c->pr.usage_unusable,
                 "usage cannot be priced with the catalog: %s", imgq_strerror(rc));
    }
    if (c->pr.usage_unusable[0])
        imgq_log(IMGQ_LOG_WARN, "job", "%s call %d/%d: billed at the ceiling: %s", j->id,
                 c->index + 1, j->ncalls, c->pr.usage_unusable);
    /* No usage: bill the worst case this request could have cost, never $0: the catalog's
     * ceiling, or what was reserved for it when the cell's drift scaled that up. */
    c->ceiling = true;
    struct imgq_request_shape shape = call_shape(j, c->n);
    int rc = imgq_cost_ceiling(j->model, j->route, &shape, &c->cost);
    if (rc == 0 && c->reserved > c->cost)
        c->cost = c->reserved;
    return rc;
}

static void send_call(struct call *c);

/* A call is over (done or given up): one fewer to wait for; the last settles the attempt. */
static void call_ended(struct call *c)
{
    if (--c->j->calls_pending == 0)
        calls_settled(c->j);
}

/* A call ends without an answer (its job was cancelled or taken over while it waited): one
 * fewer to wait for. */
static void call_dropped(struct call *c)
{
    c->failed = true;
    call_ended(c);
}

static void on_call_timer(uv_timer_t *t)
{
    struct call *c = t->data;
    struct job *j = c->j;
    if (j->abandoned)
        return;
    if (j->lease_lost) {
        call_dropped(c);
        return;
    }
    send_call(c);
}

/* Every call is in (done or given up): fail the attempt, charging what was generated, or go
 * on to encoding every image. */
static void calls_settled(struct job *j)
{
    imgq_micros spent = j->fail_charged;
    int ceilings = 0, images = 0;
    for (int i = 0; i < j->ncalls; i++) {
        struct call *c = &j->calls[i];
        if (c->done) {
            spent += c->cost;
            ceilings += c->ceiling;
            images += c->pr.nimages;
        }
    }
    j->cost = spent;
    j->billed = ceilings == 0 ? "usage" : ceilings == j->ncalls ? "ceiling" : "mixed";
    if (j->lease_lost) {
        /* Cancelled or taken over meanwhile: nothing to encode or store, only the spend to
         * record (the fail script settles it and refuses the rest). */
        finish_fail(j, IMGQ_CLASS_NONE, 0, NULL, "lease lost while the provider was called", -1,
                    spent);
        return;
    }
    if (j->blocked) {
        /* A retry of one call found the budget exhausted.  Nothing spent: the job waits as
         * blocked_budget; siblings paid for: the attempt fails and waits for the window
         * without using up an attempt (the spend is recorded with it). */
        if (spent == 0) {
            job_block(j);
            return;
        }
        finish_fail(j, IMGQ_CLASS_RATE_LIMIT, 0, "budget", j->block_msg,
                    j->block_wait_ms > 0 ? j->block_wait_ms : 60000, spent);
        return;
    }
    if (j->fail.cls != IMGQ_CLASS_NONE) {
        /* What was generated was paid for: the charge stands, the attempt fails. */
        finish_fail(j, j->fail.cls, j->fail.status, j->fail.code, j->fail.message,
                    j->fail.retry_after_ms, spent);
        return;
    }
    j->nimgs = images;
    j->imgs = imgq_xcalloc((size_t)j->nimgs, sizeof *j->imgs);
    job_set_state(j, JOB_ENCODING);
    int slot = 0;
    for (int i = 0; i < j->ncalls; i++) {
        struct call *c = &j->calls[i];
        for (int k = 0; k < c->pr.nimages; k++) {
            /* Slots are filled in order (a call may bring fewer images than it asked); the
             * image's index within the job (its dedup key) is its place in its call. */
            int idx = c->first + k;
            struct image_out *im = &j->imgs[slot++];
            im->job = j;
            im->index = idx;
            im->src = c->pr.images[k];
            im->src_len = c->pr.image_lens[k];
            im->key = image_key(j, idx);
            im->call = c;
            im->work.data = im;
            if (uv_queue_work(j->w->loop, &im->work, encode_work, encode_done) == 0) {
                j->ops++;
                j->pending++;
            } else {
                im->err = IMGQ_EIO;
                snprintf(im->errmsg, sizeof im->errmsg, "cannot queue image %d for encoding", idx);
            }
        }
    }
    if (j->pending == 0)
        finish_fail(j, IMGQ_CLASS_BAD_RESPONSE, 200, NULL, "no image could be encoded", -1,
                    j->cost);
}

/* A call gave up: its error decides the attempt (the first one to give up does). */
static void call_failed(struct call *c, imgq_micros charged)
{
    struct job *j = c->j;
    c->failed = true;
    /* A charge is the catalog's failure rule, or an unusable 2xx billed at the ceiling. */
    settle_call(c, charged,
                charged <= 0                 ? "free"
                : c->charge_lost             ? "lost"
                : j->model->charges_failures ? "failure"
                                             : "ceiling");
    /* A failed call the provider billed (an unusable 2xx, or a provider that charges
     * failures) counts as spent, like a generated image. */
    c->cost = charged;
    if (j->fail.cls == IMGQ_CLASS_NONE) {
        /* The attempt fails now: siblings waiting to be retried need not be.  Siblings whose
         * task the provider accepted are followed to their end: they are paid for. */
        for (int i = 0; i < j->ncalls; i++) {
            struct call *s = &j->calls[i];
            if (s != c && !s->handle && s->timer_init && uv_is_active((uv_handle_t *)&s->timer)) {
                uv_timer_stop(&s->timer);
                settle_call(s, 0, "free");
                s->failed = true;
                j->calls_pending--;
            }
        }
        j->fail.cls = c->pr.cls;
        j->fail.status = c->pr.status;
        j->fail.retry_after_ms = c->pr.retry_after_ms;
        memcpy(j->fail.code, c->pr.code, sizeof j->fail.code);
        memcpy(j->fail.message, c->pr.message, sizeof j->fail.message);
    }
    j->fail_charged += charged;
}

/* Money: reservations before a call, settlement after -------------------------------------- */

/*
 * A call ended: its reservation becomes its cost (the rest is released), with a ledger entry
 * saying why it was charged.  Idempotent in Redis per call key; sent once per send here.
 */
static void settle_call(struct call *c, imgq_micros cost, const char *reason)
{
    struct job *j = c->j;
    if (!c->reserve_held && cost <= 0)
        return;
    if (!c->key[0])
        call_key(c);
    c->reserve_held = false;
    c->sent = false;
    char costs[32], attempt[16], idx[16];
    snprintf(costs, sizeof costs, "%" PRId64, cost);
    snprintf(attempt, sizeof attempt, "%d", j->attempt);
    snprintf(idx, sizeof idx, "%d", c->index);
    char *usage = c->pr.usage_json ? json_dumps(c->pr.usage_json, JSON_COMPACT) : NULL;
    char drift[32] = "";
    if (strcmp(reason, "usage") == 0 && c->drift_ppm > 0)
        snprintf(drift, sizeof drift, "%" PRId64, c->drift_ppm);
    const char *args[12] = {"settle",         j->id,          c->key,  costs, reason,
                            j->model->name,   j->route->name, attempt, idx,   usage ? usage : "",
                            c->pr.request_id, drift};
    worker_script_reliable(j->w, IMGQ_SCRIPT_BUDGET, 12, args);
    free(usage);
}

/*
 * The call key of this send: "ATTEMPT.CALL.TRY-CLAIM" (CLAIM: a hash of the lease token), so a
 * job taken over after a stall, which runs the same attempt again, never reuses the key of a
 * send its previous worker may still settle late.
 */
static void call_key(struct call *c)
{
    const struct job *j = c->j;
    snprintf(c->key, sizeof c->key, "%d.%d.%d-%08x", j->attempt, c->index, c->tries, token_tag(j));
}

typedef void (*reserved_fn)(struct call *c);
static void reserve_phase_failed(struct job *j, struct call *c);

struct reserve_ctx {
    struct call *c;
    reserved_fn then;
};

/* The budgets answered a reservation: go on, or block the job. */
static void on_reserve(struct worker *w, redisReply *r, void *arg)
{
    struct reserve_ctx *rc = arg;
    struct call *c = rc->c;
    reserved_fn then = rc->then;
    free(rc);
    struct job *j = c->j;
    (void)w;
    long long code = r && r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
                             r->element[0]->type == REDIS_REPLY_INTEGER
                         ? r->element[0]->integer
                         : -2;
    if (code == 0) {
        c->reserve_held = true;
        /* What was reserved: the ceiling, scaled by the catalog drift seen in its cell. */
        if (r->elements >= 2 && r->element[1]->type == REDIS_REPLY_INTEGER &&
            r->element[1]->integer > c->reserved)
            c->reserved = (imgq_micros)r->element[1]->integer;
    }
    if (j->abandoned)
        settle_call(c, 0, "free"); /* abandoned before the send: release the reservation */
    if (op_done(j))
        return;
    if (code == 0) {
        then(c);
        return;
    }
    if (code == 1 && r->elements >= 4) {
        /* Over a hard cap: the job waits for the window to reset or the budget to rise. */
        j->blocked = true;
        j->block_wait_ms =
            r->element[1]->type == REDIS_REPLY_INTEGER ? (long)r->element[1]->integer : -1;
        snprintf(j->block_budget, sizeof j->block_budget, "%s",
                 r->element[2]->str ? r->element[2]->str : "");
        snprintf(j->block_msg, sizeof j->block_msg, "%s",
                 r->element[3]->str ? r->element[3]->str : "budget exhausted");
        c->pr.cls = IMGQ_CLASS_RATE_LIMIT;
        snprintf(c->pr.message, sizeof c->pr.message, "%s", j->block_msg);
    } else if (code == -1) {
        j->lease_lost = true; /* cancelled or taken over: nothing is sent */
        c->pr.cls = IMGQ_CLASS_NONE;
    } else {
        /* Redis away or the script refused: no reservation, no call. */
        c->pr.cls = IMGQ_CLASS_NETWORK;
        snprintf(c->pr.message, sizeof c->pr.message,
                 "the budget reservation could not be made (Redis unavailable)");
    }
    if (j->reserving) {
        reserve_phase_failed(j, c);
        return;
    }
    limits_release(j->w, &c->lw, false); /* never sent: the rate-limit room goes back */
    call_failed(c, 0);
    call_ended(c);
}

/* Reserve the worst case of one send of c (the catalog's ceiling for its shape), then 'then'. */
static void reserve_call(struct call *c, reserved_fn then)
{
    struct job *j = c->j;
    imgq_micros amount = 0;
    struct imgq_request_shape shape = call_shape(j, c->n);
    if (imgq_cost_ceiling(j->model, j->route, &shape, &amount) != 0)
        amount = 0; /* a shape the catalog cannot price was refused at submit */
    c->reserved = amount;
    call_key(c);
    char amt[32], part[32], cell[IMGQ_DRIFT_CELL_MAX];
    snprintf(amt, sizeof amt, "%" PRId64, amount);
    /* Only the output tokens drift: the script scales that part by the cell's drift. */
    imgq_micros out_part = 0;
    if (imgq_drift_output_part(j->model, j->route, &shape, &out_part) != 0)
        out_part = amount;
    snprintf(part, sizeof part, "%" PRId64, out_part);
    imgq_drift_cell(j->model->name, j->spec.quality, j->spec.width, j->spec.height, cell,
                    sizeof cell);
    const char *args[9] = {"reserve",      j->id,          j->token, c->key, amt,
                           j->model->name, j->route->name, cell,     part};
    struct reserve_ctx *rc = imgq_xmalloc(sizeof *rc);
    rc->c = c;
    rc->then = then;
    if (worker_script(j->w, IMGQ_SCRIPT_BUDGET, 9, args, on_reserve, rc) == 0) {
        j->ops++;
        return;
    }
    free(rc);
    limits_release(j->w, &c->lw, false);
    c->pr.cls = IMGQ_CLASS_NETWORK;
    snprintf(c->pr.message, sizeof c->pr.message,
             "the budget reservation could not be made (Redis unavailable)");
    call_failed(c, 0);
    call_ended(c);
}

static void on_block_timer(uv_timer_t *t)
{
    job_block(t->data);
}

static void on_blocked(struct worker *w, redisReply *r, void *arg)
{
    struct job *j = arg;
    if (op_done(j))
        return;
    if (!r || r->type != REDIS_REPLY_INTEGER) {
        arm_timer(j, REDIS_RETRY_MS, on_block_timer);
        return;
    }
    if (r->integer == 1) {
        w->blocked++;
        imgq_log(IMGQ_LOG_INFO, "job", "%s: blocked by budget %s: %s", j->id, j->block_budget,
                 j->block_msg);
    } else if (r->integer == 2) {
        w->failed++;
        imgq_log(IMGQ_LOG_WARN, "job", "%s: failed: budget %s exhausted (%s)", j->id,
                 j->block_budget, j->block_msg);
    }
    job_set_state(j, JOB_ENDED);
    job_free(j);
}

/* A budget refused the job's next call: hand the job back as blocked_budget (or failed, if its
 * batch says so).  Nothing was sent for the refused call. */
static void job_block(struct job *j)
{
    char wait[32];
    snprintf(wait, sizeof wait, "%ld", j->block_wait_ms);
    job_set_state(j, JOB_FINISHING);
    const char *args[6] = {"block", j->id, j->token, wait, j->block_budget, j->block_msg};
    if (worker_script(j->w, IMGQ_SCRIPT_BUDGET, 6, args, on_blocked, j) == 0) {
        j->ops++;
        return;
    }
    arm_timer(j, REDIS_RETRY_MS, on_block_timer);
}

static void send_calls(struct job *j);

/*
 * Before the first send, every call of the job is reserved, one after the other: a fan-out
 * starts only when the budgets admit all of it, so a budget never strands paid-for siblings.
 * A call resumed from a handle keeps the reservation its first worker made.
 */
static void reserve_phase(struct job *j);

static void on_phase_reserved(struct call *c)
{
    c->j->reserve_next++;
    reserve_phase(c->j);
}

static void reserve_phase(struct job *j)
{
    j->reserving = true;
    while (j->reserve_next < j->ncalls && j->calls[j->reserve_next].handle)
        j->reserve_next++;
    if (j->reserve_next < j->ncalls) {
        reserve_call(&j->calls[j->reserve_next], on_phase_reserved);
        return;
    }
    j->reserving = false;
    send_calls(j);
}

/* A reservation of the phase was refused: nothing was sent; release what was reserved. */
static void reserve_phase_failed(struct job *j, struct call *failed)
{
    j->reserving = false;
    for (int i = 0; i < j->ncalls; i++) {
        struct call *c = &j->calls[i];
        if (c->handle)
            continue; /* a task in flight at the provider: its first worker's reservation */
        settle_call(c, 0, "free");
        c->failed = true;
    }
    j->calls_pending = 0;
    if (j->blocked && !j->lease_lost) {
        job_block(j);
        return;
    }
    finish_fail(j, j->lease_lost ? IMGQ_CLASS_NONE : failed->pr.cls, 0, NULL,
                j->lease_lost ? "lease lost before the provider was called" : failed->pr.message,
                -1, 0);
}

static void call_accepted(struct call *c);
static void fetch_images(struct call *c);
static void report_call(struct call *c);

/*
 * Whether a failed call is one a provider that bills failed requests (the catalog's
 * charges_failures) bills: one it worked on.  Never a request it refused (rate limit, auth,
 * invalid request) or never answered (no status); on an asynchronous API, only a task it
 * created (a handle, or a 2xx answer) that then failed.
 */
static bool failure_billable(const struct call *c, long status)
{
    const struct job *j = c->j;
    if (!j->model->charges_failures || status == 0)
        return false;
    if (c->pr.cls == IMGQ_CLASS_RATE_LIMIT || c->pr.cls == IMGQ_CLASS_AUTH ||
        c->pr.cls == IMGQ_CLASS_INVALID_REQUEST)
        return false;
    /* (A task created and failed within one answer, as Replicate's Prefer: wait gives it,
     * comes with a 2xx and no handle yet.) */
    return !j->ops_api->build_poll || c->handle != NULL || (status >= 200 && status < 300);
}

/* A call's answer is in c->pr (from its submit, a poll, or its downloads): go on polling,
 * download the images, or settle the call. */
static void call_answered(struct call *c, long status)
{
    struct job *j = c->j;
    /* The call's end (not a task still running, nor images still to download) is reported. */
    if (c->pr.cls != IMGQ_CLASS_NONE ||
        (!c->pr.pending && !(c->pr.nimage_urls > 0 && c->pr.nimages == 0)))
        report_call(c);
    if (c->pr.cls == IMGQ_CLASS_NONE && c->pr.pending) {
        call_accepted(c);
        return;
    }
    if (c->pr.cls == IMGQ_CLASS_NONE && (c->pr.nimages > c->n || c->pr.nimage_urls > c->n ||
                                         (c->pr.nimages == 0 && c->pr.nimage_urls == 0))) {
        /* More images than asked (or none) is not an answer to this call.  Fewer is: a
         * provider may drop images its safety filter flagged. */
        snprintf(c->pr.message, sizeof c->pr.message, "%d image(s) returned, %d asked",
                 c->pr.nimages > c->pr.nimage_urls ? c->pr.nimages : c->pr.nimage_urls, c->n);
        c->pr.cls = IMGQ_CLASS_BAD_RESPONSE;
    }
    if (c->pr.cls == IMGQ_CLASS_NONE && c->pr.nimage_urls > 0 && c->pr.nimages == 0) {
        fetch_images(c);
        return;
    }
    if (c->pr.cls == IMGQ_CLASS_NONE) {
        if (price_call(c) != 0) {
            /* Answered, so charged: at what was reserved for it, the most it was thought to
             * cost. */
            c->pr.cls = IMGQ_CLASS_BAD_RESPONSE;
            snprintf(c->pr.message, sizeof c->pr.message,
                     "the call cannot be priced with the catalog, not even at its ceiling");
            c->charge_lost = c->reserved > 0;
            call_failed(c, c->reserved);
        } else {
            c->done = true;
            if (!c->ceiling && c->cost > c->reserved && c->reserved > 0)
                imgq_log(IMGQ_LOG_WARN, "job",
                         "%s call %d/%d: catalog drift: %s %s %dx%d cost %" PRId64
                         " micros from its usage, %" PRId64 " reserved (the catalog's ceiling "
                         "for the cell adapts; event catalog.drift)",
                         j->id, c->index + 1, j->ncalls, j->model->name, j->spec.quality,
                         j->spec.width, j->spec.height, c->cost, c->reserved);
            settle_call(c, c->cost, c->ceiling ? "ceiling" : "usage");
        }
    } else {
        imgq_micros charged = 0;
        struct imgq_request_shape shape = call_shape(j, c->n);
        /* An unusable 2xx is still billed, at the ceiling; so is a failure the provider
         * worked on at a provider the catalog marks as charging failures. */
        if ((c->pr.cls == IMGQ_CLASS_BAD_RESPONSE && status >= 200 && status < 300) ||
            failure_billable(c, status))
            if (imgq_cost_ceiling(j->model, j->route, &shape, &charged) != 0)
                charged = 0;
        if (charged == 0 && status == 0 && c->unanswered && c->reserved > 0) {
            /* Sent, and no answer came (a timeout, a connection lost after the request went
             * out): the provider may have done the work and billed it, like a call lost with
             * its worker. */
            charged = c->reserved;
            c->charge_lost = true;
        }
        bool again = imgq_error_class_retryable(c->pr.cls) && c->tries < CALL_TRIES &&
                     j->ncalls > 1 && charged == 0 && j->fail.cls == IMGQ_CLASS_NONE;
        if (again) {
            /* A sibling's images are in hand: retry this call alone, not the whole job. */
            long wait = c->pr.retry_after_ms >= 0 ? clamp_hint(j->w, c->pr.retry_after_ms)
                                                  : 250L << (c->tries < 6 ? c->tries : 6);
            free(c->handle); /* an asynchronous task that failed is submitted anew */
            c->handle = NULL;
            settle_call(c, 0, "free"); /* this send cost nothing; the next reserves anew */
            if (!c->timer_init) {
                uv_timer_init(j->w->loop, &c->timer);
                c->timer_init = true;
            }
            c->timer.data = c;
            uv_timer_start(&c->timer, on_call_timer, (uint64_t)wait, 0);
            imgq_log(IMGQ_LOG_INFO, "job", "%s call %d/%d: %s (%ld); retrying it alone", j->id,
                     c->index + 1, j->ncalls, imgq_error_class_name(c->pr.cls), status);
            return;
        }
        call_failed(c, charged);
    }
    call_ended(c);
}

static void on_call(const imgq_http_response *res, void *arg)
{
    struct call *c = arg;
    struct job *j = c->j;
    /* Answered, failed, timed out or cancelled at shutdown: the request is no longer in
     * flight, whoever still wants its outcome.  (An async provider's task goes on at the
     * provider; its polls, short GETs, take no room under any limit: a concurrency limit
     * counts requests in flight, not tasks running at the provider.) */
    limits_release(j->w, &c->lw, true);
    if (op_done(j))
        return;
    imgq_provider_result_clear(&c->pr);
    j->ops_api->parse(res, c->n, &c->pr);
    c->unanswered = res->err == IMGQ_EHTTP && res->status == 0 && res->request_sent;
    c->charge_lost = false;
    if (c->pr.request_id[0] && !j->request_id[0])
        snprintf(j->request_id, sizeof j->request_id, "%s", c->pr.request_id);
    j->last_status = res->status;
    call_answered(c, res->status);
}

/* Asynchronous providers ------------------------------------------------------------------ */

#define POLL_BACKOFF_MAX_MS 30000 /* longest wait between polls that failed in transit */
#define FETCH_TRIES 4             /* downloads of one image before the call fails */

static void on_poll_timer(uv_timer_t *t);

static void schedule_poll(struct call *c, long hint_ms)
{
    struct job *j = c->j;
    long wait = hint_ms >= 0 ? hint_ms : j->w->opt.poll_ms;
    if (!c->timer_init) {
        uv_timer_init(j->w->loop, &c->timer);
        c->timer_init = true;
    }
    c->timer.data = c;
    uv_timer_start(&c->timer, on_poll_timer, (uint64_t)wait, 0);
}

static void on_handle_saved(struct worker *w, redisReply *r, void *arg)
{
    struct job *j = arg;
    (void)w;
    if (op_done(j))
        return;
    if (!r || r->type != REDIS_REPLY_INTEGER)
        imgq_log(IMGQ_LOG_WARN, "job",
                 "%s: the poll handle could not be recorded; a worker taking this job over "
                 "would submit it again",
                 j->id);
}

/* Record the call's handle on the job, so that a worker taking the job over after this one
 * died polls the same task instead of paying for a second one. */
static void save_handle(struct call *c)
{
    struct job *j = c->j;
    char idx[16], attempt[16], submitted[32];
    snprintf(idx, sizeof idx, "%d", c->index);
    snprintf(attempt, sizeof attempt, "%d", j->attempt);
    snprintf(submitted, sizeof submitted, "%" PRIu64, c->submitted_ms);
    char amount[32];
    snprintf(amount, sizeof amount, "%" PRId64, c->reserved);
    const char *args[10] = {"set",  j->id,  j->token,       idx,      attempt, submitted,
                            c->key, amount, j->model->name, c->handle};
    if (worker_script(j->w, IMGQ_SCRIPT_POLL, 10, args, on_handle_saved, j) == 0)
        j->ops++;
}

/* The provider took the task: poll it until it is done. */
static void call_accepted(struct call *c)
{
    struct job *j = c->j;
    if (!c->handle && !c->pr.poll[0]) {
        /* Accepted, but with nothing to poll: the task cannot be followed. */
        c->pr.pending = false;
        c->pr.cls = IMGQ_CLASS_BAD_RESPONSE;
        snprintf(c->pr.message, sizeof c->pr.message, "task accepted without a handle to poll");
        call_answered(c, 200);
        return;
    }
    /* An empty handle in a pending answer means: poll the same one again. */
    bool moved = !c->handle || (c->pr.poll[0] && strcmp(c->handle, c->pr.poll) != 0);
    if (!c->handle)
        report_call(c); /* accepted: the provider is up (the task's end is reported too) */
    if (!c->handle)
        c->submitted_ms = now_ms();
    if (moved) {
        free(c->handle);
        c->handle = imgq_xstrdup(c->pr.poll);
        save_handle(c);
    }
    c->poll_errors = 0;
    if (imgq_log_enabled(IMGQ_LOG_DEBUG))
        imgq_log(IMGQ_LOG_DEBUG, "job", "%s call %d/%d: task %s %s", j->id, c->index + 1, j->ncalls,
                 c->pr.task_status[0] ? c->pr.task_status : "accepted", c->handle);
    schedule_poll(c, c->pr.poll_after_ms);
}

/* A call that ends without reaching the provider again: settle it as failed, charged
 * 'charged'. */
static void call_given_up(struct call *c, enum imgq_error_class cls, const char *msg,
                          imgq_micros charged)
{
    imgq_provider_result_clear(&c->pr);
    c->pr.cls = cls;
    c->pr.retry_after_ms = -1;
    snprintf(c->pr.message, sizeof c->pr.message, "%s", msg);
    report_call(c);
    call_failed(c, charged);
    call_ended(c);
}

static void on_poll(const imgq_http_response *res, void *arg)
{
    struct call *c = arg;
    struct job *j = c->j;
    if (op_done(j))
        return;
    imgq_provider_result_clear(&c->pr);
    j->ops_api->parse_poll(res, c->n, &c->pr);
    j->last_status = res->status;
    if (c->pr.cls == IMGQ_CLASS_NONE && c->pr.pending) {
        call_accepted(c);
        return;
    }
    /* A poll that failed in transit says nothing about the task: poll again, a few times. */
    bool transit = c->pr.cls != IMGQ_CLASS_NONE && (res->status == 0 || res->status >= 500 ||
                                                    res->status == 429 || res->status == 408);
    if (transit && !j->lease_lost) {
        /* The task is paid for once accepted: polled through any outage until the poll
         * timeout, backing off up to POLL_BACKOFF_MAX_MS. */
        c->poll_errors++;
        long wait = c->pr.retry_after_ms >= 0
                        ? c->pr.retry_after_ms
                        : (long)j->w->opt.poll_ms << (c->poll_errors < 8 ? c->poll_errors : 8);
        if (wait > POLL_BACKOFF_MAX_MS)
            wait = POLL_BACKOFF_MAX_MS;
        imgq_log(IMGQ_LOG_INFO, "job", "%s call %d/%d: poll failed: %s (%ld); polling again", j->id,
                 c->index + 1, j->ncalls, imgq_error_class_name(c->pr.cls), res->status);
        schedule_poll(c, wait);
        return;
    }
    call_answered(c, res->status);
}

static void on_poll_timer(uv_timer_t *t)
{
    struct call *c = t->data;
    struct job *j = c->j;
    if (j->abandoned)
        return;
    if (j->lease_lost) {
        call_dropped(c);
        return;
    }
    if ((int64_t)now_ms() - (int64_t)c->submitted_ms > (int64_t)j->w->opt.poll_timeout_ms) {
        /* Abandoned after the provider accepted it: the task may still be billed, so its
         * reservation (the worst case) is charged. */
        char msg[128];
        snprintf(msg, sizeof msg, "the provider's task was not done after %d ms",
                 j->w->opt.poll_timeout_ms);
        call_given_up(c, IMGQ_CLASS_TIMEOUT, msg, c->reserved);
        return;
    }
    c->polls++;
    imgq_http_request *req = j->ops_api->build_poll(&j->ep, c->handle);
    int r = imgq_http_submit(j->w->http, req, on_poll, c);
    if (r == 0) {
        j->ops++;
        return;
    }
    /* Not even sent (the HTTP client refused it): try again later, until the poll timeout. */
    c->poll_errors++;
    long wait = (long)j->w->opt.poll_ms << (c->poll_errors < 8 ? c->poll_errors : 8);
    schedule_poll(c, wait < POLL_BACKOFF_MAX_MS ? wait : POLL_BACKOFF_MAX_MS);
}

static void send_fetch(struct fetch *f);

static void fetch_finished(struct call *c)
{
    if (--c->fetching > 0)
        return;
    for (int k = 0; k < c->pr.nimage_urls; k++) {
        struct fetch *f = &c->fetches[k];
        if (f->cls == IMGQ_CLASS_NONE)
            continue;
        /* The images were generated, so they are paid for even though one could not be
         * downloaded. */
        imgq_micros charged = price_call(c) == 0 ? c->cost : 0;
        c->pr.cls = f->cls;
        report_call(c);
        c->pr.retry_after_ms = -1;
        snprintf(c->pr.message, sizeof c->pr.message, "image %d could not be downloaded: %s", k,
                 f->error);
        call_failed(c, charged);
        call_ended(c);
        return;
    }
    call_answered(c, 200);
}

static void on_fetch(const imgq_http_response *res, void *arg)
{
    struct fetch *f = arg;
    struct call *c = f->c;
    struct job *j = c->j;
    if (op_done(j))
        return;
    struct imgq_provider_result r;
    imgq_provider_fetch_parse(res, &r);
    if (r.cls == IMGQ_CLASS_NONE && r.nimages == 1) {
        c->pr.images[f->k] = r.images[0];
        c->pr.image_lens[f->k] = r.image_lens[0];
        r.images[0] = NULL;
        f->cls = IMGQ_CLASS_NONE;
    } else if (imgq_error_class_retryable(r.cls) && f->tries < FETCH_TRIES && !j->lease_lost) {
        imgq_provider_result_clear(&r);
        send_fetch(f);
        return;
    } else {
        f->cls = r.cls != IMGQ_CLASS_NONE ? r.cls : IMGQ_CLASS_BAD_RESPONSE;
        snprintf(f->error, sizeof f->error, "%.200s", r.message);
    }
    imgq_provider_result_clear(&r);
    fetch_finished(c);
}

static void send_fetch(struct fetch *f)
{
    struct call *c = f->c;
    struct job *j = c->j;
    f->tries++;
    imgq_http_request *req =
        imgq_provider_fetch_build(c->pr.image_urls[f->k], j->w->opt.provider_timeout_ms);
    int r = imgq_http_submit(j->w->http, req, on_fetch, f);
    if (r == 0) {
        j->ops++;
        return;
    }
    f->cls = IMGQ_CLASS_NETWORK;
    snprintf(f->error, sizeof f->error, "%s", imgq_strerror(r));
    fetch_finished(c);
}

/* The task is done and its images are URLs: download them all, then settle the call. */
static void fetch_images(struct call *c)
{
    int n = c->pr.nimage_urls;
    c->pr.images = imgq_xcalloc((size_t)n, sizeof *c->pr.images);
    c->pr.image_lens = imgq_xcalloc((size_t)n, sizeof *c->pr.image_lens);
    c->pr.nimages = n;
    free(c->fetches);
    c->fetches = imgq_xcalloc((size_t)n, sizeof *c->fetches);
    c->fetching = n + 1; /* held until every download is sent */
    for (int k = 0; k < n; k++) {
        c->fetches[k].c = c;
        c->fetches[k].k = k;
        send_fetch(&c->fetches[k]);
    }
    fetch_finished(c);
}

static void submit_call(struct call *c);

/* A call waiting for room is dropped once its job is abandoned or its lease lost. */
static bool call_wanted(void *arg)
{
    const struct call *c = arg;
    return !c->j->abandoned && !c->j->lease_lost;
}

static void on_rate(enum limits_status st, void *arg)
{
    struct call *c = arg;
    struct job *j = c->j;
    if (st == LIMITS_GO && (j->abandoned || j->lease_lost))
        limits_release(j->w, &c->lw, false); /* never sent: the room goes back */
    if (op_done(j))
        return;
    if (j->lease_lost) { /* cancelled meanwhile: nothing was asked of the provider */
        call_dropped(c);
        return;
    }
    if (st == LIMITS_GO) {
        submit_call(c);
        return;
    }
    const struct limits_spec *ls = limits_spec(j->w, j->model->provider);
    if (st == LIMITS_TOO_MANY_IMAGES) {
        c->pr.cls = IMGQ_CLASS_INVALID_REQUEST;
        snprintf(c->pr.message, sizeof c->pr.message,
                 "rate limit: %d images in one call exceed the %s images limit (%d per window)",
                 c->n, j->model->provider, ls ? ls->images : 0);
    } else if (st == LIMITS_TOO_MANY_TOKENS) {
        c->pr.cls = IMGQ_CLASS_INVALID_REQUEST;
        snprintf(c->pr.message, sizeof c->pr.message,
                 "rate limit: the call's %" PRId64 " estimated tokens exceed the %s tokens limit "
                 "(%" PRId64 " per window)",
                 c->lw.tokens, j->model->provider, ls ? ls->tokens : 0);
    } else { /* the worker is closing: nothing was sent, the job goes back */
        c->pr.cls = IMGQ_CLASS_NETWORK;
        snprintf(c->pr.message, sizeof c->pr.message, "worker stopping before the call");
    }
    call_failed(c, 0);
    call_ended(c);
}

/*
 * Every provider call first takes room under all the limits of its account at once (limits.h):
 * its images, the tokens it may use (token-billed models: the catalog's output tokens for the
 * shape x n, plus the prompt bounded by its bytes, once per image; per-image models: none) and
 * a concurrency slot, which on_call releases.  Async providers: only the submit takes room;
 * polls take none (a concurrency limit counts requests in flight, not running tasks).
 */
static void send_call(struct call *c)
{
    struct job *j = c->j;
    c->tries++;
    if (!limits_apply(j->w, j->model->provider)) {
        submit_call(c);
        return;
    }
    int64_t tokens = 0;
    struct imgq_usage u;
    struct imgq_request_shape shape = call_shape(j, c->n);
    if (j->model->billing == IMGQ_BILL_TOKENS && imgq_ceiling_usage(j->model, &shape, &u) == 0)
        tokens = u.text_in + u.cached_text_in + u.image_in + u.cached_image_in + u.image_out +
                 u.text_out;
    char entry[160];
    snprintf(entry, sizeof entry, "%s:%d:%d", j->token, c->index, c->tries);
    if (limits_acquire(j->w, j->model->provider, &c->lw, c->n, tokens, entry, on_rate, call_wanted,
                       c) == 0) {
        j->ops++;
        return;
    }
    c->pr.cls = IMGQ_CLASS_NETWORK; /* closing: nothing is sent any more */
    snprintf(c->pr.message, sizeof c->pr.message, "worker stopping before the call");
    call_failed(c, 0);
    call_ended(c);
}

static void send_reserved(struct call *c);

/* A send is reserved first (the first sends were, in the reservation phase; a retry is not). */
static void submit_call(struct call *c)
{
    struct job *j = c->j;
    if (j->fail.cls != IMGQ_CLASS_NONE || j->lease_lost) {
        /* The attempt failed (or was lost) while this call waited for room: do not send. */
        limits_release(j->w, &c->lw, false);
        settle_call(c, 0, "free");
        call_dropped(c);
        return;
    }
    if (c->reserve_held)
        send_reserved(c);
    else
        reserve_call(c, send_reserved);
}

static void send_reserved(struct call *c)
{
    struct job *j = c->j;
    imgq_http_request *req = j->ops_api->build(&j->ep, &j->spec, c->n);
    int r = imgq_http_submit(j->w->http, req, on_call, c);
    if (r == 0) {
        j->ops++;
        c->sent = true;
        return;
    }
    limits_release(j->w, &c->lw, false); /* never sent */
    c->pr.cls = IMGQ_CLASS_NETWORK;
    snprintf(c->pr.message, sizeof c->pr.message, "%s", imgq_strerror(r));
    call_failed(c, 0);
    call_ended(c);
}

/* Split the job into provider calls: n_per_call images each (a model that returns one image
 * per call fans out). */
static void plan_calls(struct job *j)
{
    int per = j->model->n_per_call > 0 ? j->model->n_per_call : 1;
    j->ncalls = (j->spec.n + per - 1) / per;
    j->calls = imgq_xcalloc((size_t)j->ncalls, sizeof *j->calls);
    j->calls_pending = j->ncalls;
    for (int i = 0; i < j->ncalls; i++) {
        struct call *c = &j->calls[i];
        c->j = j;
        c->index = i;
        c->first = i * per;
        c->n = j->spec.n - c->first < per ? j->spec.n - c->first : per;
    }
}

/* Send every call at once; a call whose task a previous worker submitted is polled. */
static void send_calls(struct job *j)
{
    /* Sends may settle the job synchronously (a refused submit): counted first, sent after. */
    for (int i = 0; i < j->ncalls && !j->abandoned && j->state == JOB_CALLING; i++) {
        struct call *c = &j->calls[i];
        if (c->handle) {
            c->tries++;
            imgq_log(IMGQ_LOG_INFO, "job", "%s call %d/%d: resuming the provider's task %s", j->id,
                     i + 1, j->ncalls, c->handle);
            schedule_poll(c, 0);
        } else {
            send_call(c);
        }
    }
}

/* The handles a previous worker recorded for this attempt's tasks, if any. */
static void on_handles(struct worker *w, redisReply *r, void *arg)
{
    struct job *j = arg;
    (void)w;
    if (op_done(j))
        return;
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        imgq_log(IMGQ_LOG_WARN, "job", "%s: poll handles unreadable; submitting anew", j->id);
    } else {
        for (size_t i = 0; i + 1 < r->elements; i += 2) {
            const redisReply *ki = r->element[i], *vi = r->element[i + 1];
            if (ki->type != REDIS_REPLY_STRING || vi->type != REDIS_REPLY_STRING)
                continue;
            /* "ATTEMPT|SUBMITTED_MS|CALL_KEY|AMOUNT|MODEL|HANDLE" (poll.lua) */
            int idx = atoi(ki->str), attempt = 0;
            unsigned long long submitted = 0;
            long long amount = 0;
            char key[48], model[128];
            int used = 0;
            if (sscanf(vi->str, "%d|%llu|%47[^|]|%lld|%127[^|]|%n", &attempt, &submitted, key,
                       &amount, model, &used) != 5 ||
                used == 0 || idx < 0 || idx >= j->ncalls || attempt != j->attempt || !vi->str[used])
                continue;
            struct call *c = &j->calls[idx];
            if (strcmp(model, j->model->name) != 0) {
                /* The task belongs to another model (a breaker moved the job since): it cannot
                 * be polled through this model's API.  It may still be billed: its
                 * reservation is charged, and this call is submitted anew. */
                imgq_log(IMGQ_LOG_WARN, "job",
                         "%s call %d: the task of %s left behind by a dead worker is charged "
                         "at its reservation; the job now runs on %s",
                         j->id, idx + 1, model, j->model->name);
                snprintf(c->key, sizeof c->key, "%s", key);
                c->reserve_held = true;
                settle_call(c, amount, "lost");
                c->key[0] = '\0';
                continue;
            }
            free(c->handle);
            c->handle = imgq_xstrdup(vi->str + used);
            c->submitted_ms = submitted;
            /* The first worker's reservation stands for this task: settle it when it ends. */
            snprintf(c->key, sizeof c->key, "%s", key);
            c->reserve_held = true;
        }
    }
    reserve_phase(j);
}

static void start_calls(struct job *j)
{
    plan_calls(j);
    if (j->ops_api->build_poll) {
        const char *args[3] = {"get", j->id, j->token};
        if (worker_script(j->w, IMGQ_SCRIPT_POLL, 3, args, on_handles, j) == 0) {
            j->ops++;
            return;
        }
    }
    reserve_phase(j);
}

/* Reference images ------------------------------------------------------------------------ */

#define REF_TRIES 3

static void send_ref(struct ref_fetch *rf);

static void refs_finished(struct job *j)
{
    if (--j->refs_pending > 0)
        return;
    if (j->lease_lost) {
        finish_fail(j, IMGQ_CLASS_NONE, 0, NULL, "lease lost while fetching reference images", -1,
                    0);
        return;
    }
    if (j->fail.cls != IMGQ_CLASS_NONE) {
        finish_fail(j, j->fail.cls, j->fail.status, NULL, j->fail.message, -1, 0);
        return;
    }
    start_calls(j);
}

static void ref_failed(struct ref_fetch *rf, enum imgq_error_class cls, long status,
                       const char *why)
{
    struct job *j = rf->j;
    if (j->fail.cls == IMGQ_CLASS_NONE) {
        j->fail.cls = cls;
        j->fail.status = status;
        snprintf(j->fail.message, sizeof j->fail.message, "%s %d (%.200s): %s",
                 rf->index < j->spec.nrefs ? "reference image" : "mask", rf->index, rf->source,
                 why);
    }
    refs_finished(j);
}

/* Bytes in hand (taken): they must be an image an edit API takes. */
static void ref_got(struct ref_fetch *rf, uint8_t *data, size_t len)
{
    const char *mime = NULL;
    switch (imgq_image_sniff(data, len)) {
    case IMGQ_IMAGE_PNG:
        mime = "image/png";
        break;
    case IMGQ_IMAGE_JPEG:
        mime = "image/jpeg";
        break;
    case IMGQ_IMAGE_WEBP:
        mime = "image/webp";
        break;
    default:
        free(data);
        ref_failed(rf, IMGQ_CLASS_INVALID_REQUEST, 0, "not a PNG, JPEG or WebP image");
        return;
    }
    rf->out->data = data;
    rf->out->len = len;
    snprintf(rf->out->mime, sizeof rf->out->mime, "%s", mime);
    refs_finished(rf->j);
}

static void on_ref_s3(const struct imgq_s3_result *res, void *arg)
{
    struct ref_fetch *rf = arg;
    struct job *j = rf->j;
    if (op_done(j))
        return;
    if (res->err == 0) {
        uint8_t *copy = imgq_xmalloc(res->body_len ? res->body_len : 1);
        memcpy(copy, res->body, res->body_len);
        ref_got(rf, copy, res->body_len);
    } else if (res->status == 404) {
        ref_failed(rf, IMGQ_CLASS_INVALID_REQUEST, 404, "no such object");
    } else if (res->status == 403) {
        ref_failed(rf, IMGQ_CLASS_AUTH, 403, res->message);
    } else if (rf->tries < REF_TRIES && !j->lease_lost) {
        send_ref(rf);
    } else {
        ref_failed(rf, IMGQ_CLASS_STORAGE, res->status, res->message);
    }
}

static void on_ref_http(const imgq_http_response *res, void *arg)
{
    struct ref_fetch *rf = arg;
    struct job *j = rf->j;
    if (op_done(j))
        return;
    struct imgq_provider_result r;
    imgq_provider_fetch_parse(res, &r);
    if (r.cls == IMGQ_CLASS_NONE && r.nimages == 1) {
        uint8_t *data = r.images[0];
        size_t len = r.image_lens[0];
        r.images[0] = NULL;
        imgq_provider_result_clear(&r);
        ref_got(rf, data, len);
        return;
    }
    if (res->status == 404 || res->status == 410) {
        ref_failed(rf, IMGQ_CLASS_INVALID_REQUEST, res->status, "not found");
    } else if (imgq_error_class_retryable(r.cls) && rf->tries < REF_TRIES && !j->lease_lost) {
        send_ref(rf);
    } else {
        ref_failed(rf, r.cls != IMGQ_CLASS_NONE ? r.cls : IMGQ_CLASS_BAD_RESPONSE, res->status,
                   r.message);
    }
    imgq_provider_result_clear(&r);
}

/* The worker's credentials read only its own bucket and the ones the operator listed. */
static bool reference_bucket_allowed(const struct worker *w, const char *bucket)
{
    if (w->s3.bucket && strcmp(bucket, w->s3.bucket) == 0)
        return true;
    for (size_t i = 0; i < w->nref_buckets; i++)
        if (strcmp(bucket, w->ref_buckets[i]) == 0)
            return true;
    return false;
}

static void ref_guard_work(uv_work_t *req)
{
    struct ref_fetch *rf = req->data;
    rf->guard_rc = worker_ssrf_check(rf->j->w, rf->source, rf->pin, sizeof rf->pin, rf->guard_why,
                                     sizeof rf->guard_why);
}

static void ref_guard_done(uv_work_t *req, int status)
{
    struct ref_fetch *rf = req->data;
    struct job *j = rf->j;
    (void)status;
    if (op_done(j))
        return;
    if (rf->guard_rc == IMGQ_EAGAIN && rf->tries < REF_TRIES && !j->lease_lost) {
        send_ref(rf); /* the resolver failed for now */
        return;
    }
    if (rf->guard_rc != 0) {
        char why[300];
        snprintf(why, sizeof why, "refused by the SSRF guard: %s", rf->guard_why);
        ref_failed(rf,
                   rf->guard_rc == IMGQ_EAGAIN ? IMGQ_CLASS_NETWORK : IMGQ_CLASS_INVALID_REQUEST, 0,
                   why);
        return;
    }
    imgq_http_request *req2 = imgq_provider_fetch_build(rf->source, j->w->opt.provider_timeout_ms);
    imgq_http_request_set_flags(req2, IMGQ_HTTP_NO_PROXY);
    imgq_http_request_add_connect_to(req2, rf->pin);
    int r = imgq_http_submit(j->w->http, req2, on_ref_http, rf);
    if (r == 0) {
        j->ops++;
        return;
    }
    ref_failed(rf, IMGQ_CLASS_NETWORK, 0, imgq_strerror(r));
}

static void send_ref(struct ref_fetch *rf)
{
    struct job *j = rf->j;
    const char *src = rf->source;
    rf->tries++;
    if (strncmp(src, "data:", 5) == 0) {
        const char *b64 = strstr(src, ";base64,");
        uint8_t *data = NULL;
        size_t len = 0;
        if (!b64 || imgq_base64_decode(b64 + 8, strlen(b64 + 8), &data, &len) != 0) {
            ref_failed(rf, IMGQ_CLASS_INVALID_REQUEST, 0, "the data: URI is not base64");
            return;
        }
        ref_got(rf, data, len);
        return;
    }
    int r;
    if (strncmp(src, "s3://", 5) == 0) {
        const char *slash = strchr(src + 5, '/');
        if (!slash || slash == src + 5 || !slash[1]) {
            ref_failed(rf, IMGQ_CLASS_INVALID_REQUEST, 0, "expected s3://BUCKET/KEY");
            return;
        }
        free(rf->bucket);
        rf->bucket = imgq_xstrndup(src + 5, (size_t)(slash - (src + 5)));
        if (!reference_bucket_allowed(j->w, rf->bucket)) {
            ref_failed(rf, IMGQ_CLASS_INVALID_REQUEST, 0,
                       "the worker reads reference images only from its own bucket and "
                       "IMGQ_S3_REFERENCE_BUCKETS");
            return;
        }
        rf->s3 = j->w->s3;
        rf->s3.bucket = rf->bucket;
        r = imgq_s3_get(j->w->http, &rf->s3, slash + 1, on_ref_s3, rf);
    } else {
        /* A URL the job gave: checked by the SSRF guard (it resolves: on the thread pool),
         * then fetched from exactly the address that was checked. */
        rf->guard.data = rf;
        r = uv_queue_work(j->w->loop, &rf->guard, ref_guard_work, ref_guard_done) == 0 ? 0
                                                                                       : IMGQ_EIO;
    }
    if (r == 0) {
        j->ops++;
        return;
    }
    ref_failed(rf, IMGQ_CLASS_STORAGE, 0, imgq_strerror(r));
}

/* Edits: fetch every reference image (and the mask) before the first call. */
static void fetch_refs(struct job *j)
{
    int n = j->spec.nrefs + (j->spec.mask ? 1 : 0);
    if (n == 0) {
        start_calls(j);
        return;
    }
    if (j->spec.nrefs > 0)
        j->spec.ref_data = imgq_xcalloc((size_t)j->spec.nrefs, sizeof *j->spec.ref_data);
    if (j->spec.mask)
        j->spec.mask_data = imgq_xcalloc(1, sizeof *j->spec.mask_data);
    j->refs = imgq_xcalloc((size_t)n, sizeof *j->refs);
    j->nref_fetches = n;
    j->refs_pending = n + 1; /* held until every fetch is sent */
    for (int i = 0; i < n && !j->abandoned; i++) {
        struct ref_fetch *rf = &j->refs[i];
        rf->j = j;
        rf->index = i;
        rf->source = i < j->spec.nrefs ? j->spec.refs[i] : j->spec.mask;
        rf->out = i < j->spec.nrefs ? &j->spec.ref_data[i] : j->spec.mask_data;
        send_ref(rf);
    }
    refs_finished(j);
}

/* Dedup ----------------------------------------------------------------------------------- */

/*
 * Before any spend: are the job's images already stored?  Their keys are content-addressed
 * (dedup.h: everything that determines the image), and S3 is the truth: one HEAD per image.
 * When every one exists, the job completes at $0 as a dedup hit, with a ledger entry saying
 * what the provider calls would have cost (reason 'dedup', usage {"saved_micros": expected});
 * otherwise it runs as usual.  "dedup": false skips the check.
 */
static void dedup_settle(struct job *j)
{
    struct imgq_job_quote jq;
    imgq_micros saved = imgq_quote_job(j->w->catalog, &j->spec, NULL, &jq) == 0 ? jq.expected : 0;
    char usage[64], key[64], attempt[16];
    snprintf(usage, sizeof usage, "{\"saved_micros\":%" PRId64 "}", saved);
    snprintf(key, sizeof key, "%d.dedup-%08x", j->attempt, token_tag(j)); /* one per claim */
    snprintf(attempt, sizeof attempt, "%d", j->attempt);
    const char *args[11] = {"settle",       j->id,   key, "0",   "dedup", j->model->name,
                            j->route->name, attempt, "",  usage, ""};
    worker_script_reliable(j->w, IMGQ_SCRIPT_BUDGET, 11, args);
}

/* Every image of the job is stored already: done at $0. */
static void dedup_hit(struct job *j, const char *how)
{
    for (int i = 0; i < j->nimgs; i++) {
        j->imgs[i].width = j->spec.width;
        j->imgs[i].height = j->spec.height;
        j->imgs[i].sidecar_stored = true;
    }
    j->cost = 0;
    j->billed = "dedup";
    imgq_log(IMGQ_LOG_INFO, "job", "%s: all %d image(s) already stored: done at $0 (dedup, %s)",
             j->id, j->nimgs, how);
    dedup_settle(j);
    finish_done(j);
}

static void on_dedup_head(const struct imgq_s3_result *res, void *arg)
{
    struct image_out *im = arg;
    struct job *j = im->job;
    if (op_done(j))
        return;
    if (res->err == 0 && res->size > 0) {
        im->stored = true;
        im->len = (size_t)res->size;
    }
    if (--j->pending > 0)
        return;
    bool all = j->nimgs > 0;
    for (int i = 0; i < j->nimgs; i++)
        all = all && j->imgs[i].stored;
    if (all && !j->lease_lost) {
        dedup_hit(j, "S3");
        return;
    }
    /* Paid for by an earlier attempt and still in this worker's spool: stored from there. */
    if (!j->lease_lost && store_from_spool(j))
        return;
    /* Not all there (or S3 did not say): generate as usual. */
    for (int i = 0; i < j->nimgs; i++)
        free(j->imgs[i].key);
    free(j->imgs);
    j->imgs = NULL;
    j->nimgs = 0;
    j->pending = 0;
    fetch_refs(j);
}

/* S3 is the truth: one HEAD per image the index did not know. */
static void dedup_heads(struct job *j)
{
    j->pending = 1; /* held until every HEAD is sent */
    for (int i = 0; i < j->nimgs; i++) {
        struct image_out *im = &j->imgs[i];
        if (imgq_s3_head(j->w->http, &j->w->s3, im->key, on_dedup_head, im) == 0) {
            j->ops++;
            j->pending++;
        }
    }
    /* Release the hold as if an answer came: an op that is not counted. */
    j->ops++;
    struct imgq_s3_result none = {.err = IMGQ_ENOTFOUND, .message = "", .code = "", .size = -1};
    on_dedup_head(&none, &j->imgs[0]);
}

static void on_coalesce(struct worker *w, redisReply *r, void *arg)
{
    struct job *j = arg;
    if (op_done(j))
        return;
    long long st = r && r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
                           r->element[0]->type == REDIS_REPLY_INTEGER
                       ? r->element[0]->integer
                       : 1; /* no answer: check S3 and generate, as without the index */
    if (st == 2) {
        dedup_hit(j, "index");
    } else if (st == 0) {
        const char *leader = r->elements >= 2 && r->element[1]->type == REDIS_REPLY_STRING
                                 ? r->element[1]->str
                                 : "?";
        w->coalesced++;
        imgq_log(IMGQ_LOG_INFO, "job",
                 "%s: the same request is in flight as job %s: waiting for its images", j->id,
                 leader);
        job_set_state(j, JOB_ENDED);
        job_free(j);
    } else if (st < 0) {
        finish_fail(j, IMGQ_CLASS_NONE, 0, NULL, "lease lost before the provider was called", -1,
                    0);
    } else {
        dedup_heads(j);
    }
}

/*
 * Dedup before any spend, in one round trip: every image in the index (coalesce.lua) -> done
 * at $0; an identical request in flight -> park behind it; else lead, HEAD what the index
 * does not know (S3 is the truth), and generate what is missing.
 */
static void dedup_check(struct job *j)
{
    j->nimgs = j->spec.n;
    j->imgs = imgq_xcalloc((size_t)j->nimgs, sizeof *j->imgs);
    const char **args = imgq_xcalloc((size_t)j->nimgs + 5, sizeof *args);
    char group[96], lease[24], dk[65];
    imgq_dedup_key(&j->spec, 0, dk);
    snprintf(group, sizeof group, "%s:%d", dk, j->nimgs);
    snprintf(lease, sizeof lease, "%d", j->w->opt.lease_ms);
    args[0] = "begin";
    args[1] = j->id;
    args[2] = j->token;
    args[3] = group;
    args[4] = lease;
    for (int i = 0; i < j->nimgs; i++) {
        struct image_out *im = &j->imgs[i];
        im->job = j;
        im->index = i;
        im->key = image_key(j, i);
        args[5 + i] = im->key;
    }
    int r = worker_script(j->w, IMGQ_SCRIPT_COALESCE, j->nimgs + 5, args, on_coalesce, j);
    free(args);
    if (r == 0) {
        j->ops++;
        return;
    }
    dedup_heads(j);
}

/* Circuit breakers and fallbacks ------------------------------------------------------------ */

/* Whether the breakers follow this model: it has fallbacks, or is one. */
static bool breaker_tracked(const imgq_catalog *cat, const struct imgq_model *m)
{
    if (m->fallbacks && m->fallbacks[0])
        return true;
    for (size_t i = 0;; i++) {
        const struct imgq_model *o = imgq_catalog_model_at(cat, i);
        if (!o)
            return false;
        for (char **f = o->fallbacks; f && *f; f++)
            if (strcmp(*f, m->name) == 0)
                return true;
    }
}

/* Tell the model's breaker how a provider call ended. */
static void report_call(struct call *c)
{
    struct job *j = c->j;
    /* A 429 with a hint is the account's limit speaking, not the model failing: it holds the
     * provider's sends under its rate limits until the hint passes, and the breaker takes it
     * as neutral. */
    bool hinted = c->pr.cls == IMGQ_CLASS_RATE_LIMIT && c->pr.retry_after_ms >= 0;
    if (hinted && c->pr.retry_after_ms > 0)
        limits_hold(j->w, j->model->provider, clamp_hint(j->w, c->pr.retry_after_ms));
    if (j->tracked) /* decided once per model the job runs on, not per call */
        breaker_report(j->w, j->model->name, c->pr.cls == IMGQ_CLASS_NONE,
                       imgq_error_class_name(c->pr.cls), hinted, j->token);
}

/* The model is settled: reach its API (a gateway serves its own route), fetch the references,
 * call. */
static void begin_model(struct job *j)
{
    struct worker *w = j->w;
    j->ops_api = imgq_provider_ops_find(j->model->api);
    if (!j->ops_api) {
        char msg[256];
        snprintf(msg, sizeof msg, "this worker cannot call the %s API of model '%s'", j->model->api,
                 j->model->name);
        finish_fail(j, IMGQ_CLASS_INVALID_REQUEST, 0, NULL, msg, -1, 0);
        return;
    }
    /* Where the wire shape is reached (a gateway serves its own route), and with which key. */
    if (imgq_config_endpoint(w->cfg, j->model->api, j->spec.route, &j->ep.base_url,
                             &j->ep.api_key) != 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "this worker has no endpoint configured for the %s API",
                 j->model->api);
        finish_fail(j, IMGQ_CLASS_INVALID_REQUEST, 0, NULL, msg, -1, 0);
        return;
    }
    j->ep.timeout_ms = w->opt.provider_timeout_ms;
    /* The attempt's outcome (complete.lua, fail.lua) is credited to the model that serves it. */
    free(j->asked_model);
    j->asked_model = imgq_xstrdup(j->model->name);
    j->ep.model_id = j->model->provider_model;
    j->ep.edit_model_id = j->model->provider_edit_model;
    imgq_log(IMGQ_LOG_DEBUG, "job", "%s attempt %d: %s %s %s n=%d", j->id, j->attempt,
             j->spec.model, j->spec.size, j->spec.quality ? j->spec.quality : "-", j->spec.n);
    if (j->spec.no_dedup) {
        if (!store_retry_from_spool(j))
            fetch_refs(j);
    } else
        dedup_check(j);
}

static void choose_model(struct job *j);

static void on_choose_timer(uv_timer_t *t)
{
    choose_model(t->data);
}

/* Whether the job can go on after a breaker answer; else it was ended (or is gone). */
static bool choose_answer(struct job *j)
{
    if (op_done(j))
        return false;
    if (j->lease_lost) {
        finish_fail(j, IMGQ_CLASS_NONE, 0, NULL, "lease lost before the provider was called", -1,
                    0);
        return false;
    }
    return true;
}

/* No candidate admits a call: wait for the first to admit a probe, keeping the attempt
 * (nothing was tried). */
static void choose_wait(struct job *j, long wait_ms, const char *why)
{
    imgq_log(IMGQ_LOG_INFO, "job", "%s: no model available (%s); waiting %ld ms", j->id,
             why ? why : "", wait_ms);
    arm_timer(j, wait_ms > 0 ? wait_ms : 1000, on_choose_timer);
}

static void on_choose_fallback(void *arg, int pick, long wait_ms, const char *why)
{
    struct job *j = arg;
    if (!choose_answer(j))
        return;
    if (pick < 0 || pick >= j->ncands - 1) {
        long own = j->own_wait_ms;
        choose_wait(j, own > 0 && own < wait_ms ? own : wait_ms, why);
        return;
    }
    int k = 1 + pick; /* j->cands[1..] are the fallbacks, cheapest expected first */
    struct imgq_job_spec to;
    struct imgq_job_problem why_not;
    const char *from = j->model->name;
    if (imgq_job_retarget(j->w->catalog, &j->spec, j->cands[k], time(NULL), &to, &why_not) != 0) {
        /* Checked when the candidates were listed; the catalog cannot have changed. */
        imgq_log(IMGQ_LOG_WARN, "job", "%s: cannot move to %s: %s", j->id, j->cands[k],
                 why_not.reason);
        begin_model(j);
        return;
    }
    char expected[48];
    imgq_money_format(j->cand_expected[k], 6, expected, sizeof expected);
    free(j->fallback_from);
    free(j->fallback_why);
    j->fallback_from = imgq_xstrdup(from);
    j->fallback_why = imgq_xasprintf(
        "%s; %s; %s is the cheapest healthy eligible candidate at expected %s (%d considered%s)",
        j->own_why ? j->own_why : "", why ? why : "", j->cands[k], expected, j->ncands - 1,
        j->spec.routed ? ": the catalog's fallbacks and every model that can do this auto job"
                       : ": the catalog's fallbacks");
    imgq_job_spec_clear(&j->spec);
    j->spec = to;
    j->model = imgq_catalog_model(j->w->catalog, j->spec.model);
    j->tracked = true; /* (a fallback, or a model routed to automatically) */
    imgq_log(IMGQ_LOG_INFO, "job", "%s: %s -> fallback %s (%s)", j->id, from, j->model->name,
             j->fallback_why);
    begin_model(j);
}

/* The fallbacks' observed outcomes are in: rank them by expected cost, then ask their breakers
 * for the cheapest that takes a call now. */
static void on_fallback_rates(void *arg, const struct imgq_model_stats *stats)
{
    struct job *j = arg;
    if (!choose_answer(j))
        return;
    int n = j->ncands - 1;
    struct imgq_route_candidate rc[BREAKER_MAX_MODELS];
    for (int i = 0; i < n; i++)
        rc[i] = (struct imgq_route_candidate){
            .model = imgq_catalog_model(j->w->catalog, j->cands[1 + i]),
            .cost = j->cand_expected[1 + i],
            .eligible = true};
    imgq_route_rank(rc, (size_t)n, stats, stats ? (size_t)n : 0);
    int usable = 0;
    for (int i = 0; i < n; i++) {
        if (rc[i].eligible && j->spec.max_cost > 0 && rc[i].expected > j->spec.max_cost) {
            /* An auto job's cost cap holds for any model it moves to. */
            char a[48], b[48];
            imgq_money_format(rc[i].expected, 6, a, sizeof a);
            imgq_money_format(j->spec.max_cost, 6, b, sizeof b);
            snprintf(rc[i].reason, sizeof rc[i].reason, "expected %s is over the cap %s", a, b);
            rc[i].eligible = false;
        }
        if (!rc[i].eligible) {
            imgq_log(IMGQ_LOG_DEBUG, "job", "%s: fallback %s left out: %s", j->id,
                     rc[i].model->name, rc[i].reason);
            continue;
        }
        j->cands[1 + usable] = rc[i].model->name;
        j->cand_expected[1 + usable] = rc[i].expected;
        usable++;
    }
    j->ncands = 1 + usable;
    if (usable == 0) {
        choose_wait(j, j->own_wait_ms, j->own_why);
        return;
    }
    if (breaker_choose(j->w, j->cands + 1, usable, j->token, on_choose_fallback, j) == 0) {
        j->ops++;
        return;
    }
    begin_model(j);
}

/* Add model 'name' (imgq_route_alternatives) to the job's candidates if the job can move to
 * it, with its worst-case cost for the job. */
static void add_candidate(struct job *j, const char *name)
{
    struct worker *w = j->w;
    if (j->ncands >= BREAKER_MAX_MODELS)
        return;
    const struct imgq_model *fm = imgq_catalog_model(w->catalog, name);
    if (!fm)
        return;
    struct imgq_job_spec to;
    struct imgq_job_problem why;
    if (imgq_job_retarget(w->catalog, &j->spec, name, time(NULL), &to, &why) != 0)
        return;
    struct imgq_request_shape shape = {to.quality,          to.width,          to.height,
                                       to.n > 0 ? to.n : 1, strlen(to.prompt), to.nrefs};
    imgq_micros cost;
    int r = imgq_cost_ceiling(fm, j->route, &shape, &cost);
    imgq_job_spec_clear(&to);
    if (r != 0)
        return;
    j->cand_expected[j->ncands] = cost;
    j->cands[j->ncands++] = fm->name;
}

static void on_choose(void *arg, int pick, long wait_ms, const char *why)
{
    struct job *j = arg;
    if (!choose_answer(j))
        return;
    if (pick == 0) {
        begin_model(j);
        return;
    }
    /* The job's own model takes no call now.  The models it can move to: its model's
     * fallbacks and, for a "model": "auto" job, every model that can do it (checked as at
     * submit) and serves the quality it was routed for; ranked by what they are expected to
     * cost (a model whose provider bills failed calls costs its price over its success rate). */
    j->ncands = 1;
    const char *alt[BREAKER_MAX_MODELS];
    int nalt = imgq_route_alternatives(j->w->catalog, &j->spec, j->model, alt, BREAKER_MAX_MODELS);
    for (int i = 0; i < nalt; i++)
        add_candidate(j, alt[i]);
    if (j->ncands < 2) {
        choose_wait(j, wait_ms, why);
        return;
    }
    free(j->own_why);
    j->own_why = imgq_xstrdup(why ? why : "");
    j->own_wait_ms = wait_ms;
    if (breaker_rates(j->w, j->cands + 1, j->ncands - 1, on_fallback_rates, j) == 0) {
        j->ops++;
        return;
    }
    j->ops++; /* (on_fallback_rates takes it back) */
    on_fallback_rates(j, NULL);
}

/*
 * Which model serves the job: its own, unless that model's circuit breaker is open; then the
 * cheapest (by expected cost) of the models it can move to whose breaker admits the call
 * (on_choose).  Models outside every fallback list skip the breakers (no round trip) unless
 * the job was routed automatically.
 */
static void choose_model(struct job *j)
{
    struct worker *w = j->w;
    j->tracked = breaker_tracked(w->catalog, j->model) || j->spec.routed;
    if (!j->tracked) {
        begin_model(j);
        return;
    }
    j->ncands = 0;
    j->cand_expected[0] = 0;
    j->cands[j->ncands++] = j->model->name;
    /* First the job's own model alone: the others are listed and ranked only if it takes no
     * call now. */
    if (breaker_choose(w, j->cands, 1, j->token, on_choose, j) == 0) {
        j->ops++;
        return;
    }
    begin_model(j);
}

/* Pipelines -------------------------------------------------------------------------------- */

#define DRAFT_TRIES 3
#define PRESIGN_S 86400 /* links to drafts given to scorers and people choosing: a day */

static void pipeline_get(struct job *j);

static void on_pipeline_timer(uv_timer_t *t)
{
    pipeline_get(t->data);
}

/*
 * The integer answer of a pipeline.lua call in *v: false when the caller has nothing to do
 * (the job is gone, or Redis did not answer: the stage is looked up again in a moment).
 */
static bool pipeline_answer(struct job *j, const redisReply *r, long long *v)
{
    if (op_done(j))
        return false;
    if (!r || r->type != REDIS_REPLY_INTEGER) {
        arm_timer(j, REDIS_RETRY_MS, on_pipeline_timer);
        return false;
    }
    *v = r->integer;
    return true;
}

/* A pipeline job parked between stages (or whose lease was lost): it leaves this worker. */
static void pipeline_parked(struct job *j)
{
    job_set_state(j, JOB_ENDED);
    job_free(j);
}

/* The refine stage: the job becomes itself with the chosen draft as reference (or prompt
 * only), and runs like any job. */
static void pipeline_refine(struct job *j, int chosen, const char *selection)
{
    if (chosen < 0 || chosen >= j->ndrafts) {
        char msg[160];
        snprintf(msg, sizeof msg, "chosen draft %d is not one of the %d drafts", chosen,
                 j->ndrafts);
        finish_fail(j, IMGQ_CLASS_INVALID_REQUEST, 0, NULL, msg, -1, 0);
        return;
    }
    struct draft *d = &j->drafts[chosen];
    char *ref = imgq_xasprintf("s3://%s/%s", d->bucket, d->key);
    struct imgq_job_spec to;
    struct imgq_job_problem why;
    int r = imgq_job_pipeline_stage(j->w->catalog, &j->spec, "refine", ref, time(NULL), &to, &why);
    if (r != 0) {
        free(ref);
        char msg[600];
        snprintf(msg, sizeof msg, "%s: %s", why.field, why.reason);
        finish_fail(j, IMGQ_CLASS_INVALID_REQUEST, 0, NULL, msg, -1, 0);
        return;
    }
    json_t *sel = json_loads(selection ? selection : "null", JSON_DECODE_ANY, NULL);
    json_decref(j->pipeline_result);
    j->pipeline_result =
        json_pack("{s:s?, s:i, s:s, s:o}", "draft_job",
                  json_string_value(json_object_get(j->spec.pipeline, "draft_job")), "chosen",
                  chosen, "draft", ref, "selection", sel ? sel : json_null());
    free(ref);
    imgq_job_spec_clear(&j->spec);
    j->spec = to;
    j->model = imgq_catalog_model(j->w->catalog, j->spec.model);
    j->route = imgq_catalog_route(j->w->catalog, j->spec.route);
    if (!j->model || !j->route) {
        finish_fail(j, IMGQ_CLASS_INVALID_REQUEST, 0, NULL,
                    "the refine model is not in this worker's catalog", -1, 0);
        return;
    }
    imgq_log(IMGQ_LOG_INFO, "job", "%s: refining draft %d with %s", j->id, chosen, j->spec.model);
    choose_model(j);
}

struct chosen_arg {
    struct job *j;
    int index;
    char *why;
};

static void on_chosen(struct worker *w, redisReply *r, void *arg)
{
    (void)w;
    struct chosen_arg *ca = arg;
    struct job *j = ca->j;
    int index = ca->index;
    char *why = ca->why;
    free(ca);
    long long v;
    if (!pipeline_answer(j, r, &v)) { /* (then selects again) */
        free(why);
        return;
    }
    if (v != 1) {
        free(why);
        finish_fail(j, IMGQ_CLASS_NONE, 0, NULL, "lease lost while selecting a draft", -1, 0);
        return;
    }
    pipeline_refine(j, index, why);
    free(why);
}

/* Record the choice (auto, webhook), then refine in the same claim. */
static void pipeline_chosen(struct job *j, int index, json_t *why)
{
    char idx[16];
    snprintf(idx, sizeof idx, "%d", index);
    char *text = json_dumps(why, JSON_COMPACT);
    json_decref(why);
    struct chosen_arg *ca = imgq_xcalloc(1, sizeof *ca);
    ca->j = j;
    ca->index = index;
    ca->why = text;
    const char *args[5] = {"chosen", j->id, j->token, idx, text};
    if (worker_script(j->w, IMGQ_SCRIPT_PIPELINE, 5, args, on_chosen, ca) == 0) {
        j->ops++;
        return;
    }
    free(text);
    free(ca);
    arm_timer(j, REDIS_RETRY_MS, on_pipeline_timer);
}

/* The drafts as given to people and scorers: index, key, size and a presigned link each. */
static json_t *drafts_json(const struct job *j)
{
    json_t *a = json_array();
    time_t now = time(NULL);
    for (int i = 0; i < j->ndrafts; i++) {
        const struct draft *d = &j->drafts[i];
        char *url = NULL;
        if (imgq_s3_presign(&j->w->s3, "GET", d->bucket, d->key, PRESIGN_S, now, &url) != 0)
            url = NULL;
        json_array_append_new(a, json_pack("{s:i, s:s, s:s, s:i, s:i, s:s?}", "index", i, "bucket",
                                           d->bucket, "key", d->key, "width", d->width, "height",
                                           d->height, "url", url));
        free(url);
    }
    return a;
}

static void drafts_scored(struct job *j);

static void score_work(uv_work_t *req)
{
    struct draft *d = req->data;
    d->rc = imgq_score_image(d->data, d->len, &d->score);
}

static void score_done(uv_work_t *req, int status)
{
    struct draft *d = req->data;
    struct job *j = d->j;
    if (status != 0)
        d->rc = IMGQ_ECANCELED;
    free(d->data);
    d->data = NULL;
    if (op_done(j))
        return;
    drafts_scored(j);
}

/*
 * One draft was fetched and scored, or could not be fetched.  When the last one is in: the
 * best wins, or the attempt fails if any draft could not be read.  Nothing is decided while a
 * fetch or a scoring is still out (they hold the job).
 */
static void drafts_scored(struct job *j)
{
    if (--j->drafts_pending > 0)
        return;
    for (int i = 0; i < j->ndrafts; i++)
        if (j->drafts[i].unread) {
            finish_fail(j, IMGQ_CLASS_STORAGE, j->drafts[i].status, NULL, j->drafts[i].error, 0, 0);
            return;
        }
    /* Every draft scored: the best wins (ties to the first); the scores go on record. */
    struct imgq_score *s = imgq_xcalloc((size_t)j->ndrafts, sizeof *s);
    json_t *scores = json_array();
    for (int i = 0; i < j->ndrafts; i++) {
        struct draft *di = &j->drafts[i];
        if (di->rc == 0)
            s[i] = di->score; /* an unreadable draft scores 0: never preferred */
        json_array_append_new(
            scores, di->rc == 0 ? json_pack("{s:I, s:I, s:I, s:I}", "total", (json_int_t)s[i].total,
                                            "sharpness", (json_int_t)s[i].sharpness, "exposure",
                                            (json_int_t)s[i].exposure, "contrast",
                                            (json_int_t)s[i].contrast)
                                : json_pack("{s:s}", "error", imgq_strerror(di->rc)));
    }
    int best = imgq_score_best(s, (size_t)j->ndrafts);
    free(s);
    imgq_log(IMGQ_LOG_INFO, "job", "%s: auto selection: draft %d of %d", j->id, best, j->ndrafts);
    pipeline_chosen(j, best, json_pack("{s:s, s:o}", "mode", "auto", "scores", scores));
}

static void send_draft_get(struct draft *d);

static void on_draft_get(const struct imgq_s3_result *res, void *arg)
{
    struct draft *d = arg;
    struct job *j = d->j;
    if (op_done(j))
        return;
    if (res->err != 0 || !res->body) {
        if (d->tries < DRAFT_TRIES && res->err != IMGQ_ENOTFOUND && !j->lease_lost) {
            send_draft_get(d);
            return;
        }
        d->unread = true;
        d->status = res->status;
        snprintf(d->error, sizeof d->error, "draft %d (%s) could not be read: %s", d->index, d->key,
                 res->message);
        drafts_scored(j);
        return;
    }
    d->data = imgq_xmalloc(res->body_len ? res->body_len : 1);
    memcpy(d->data, res->body, res->body_len);
    d->len = res->body_len;
    d->work.data = d;
    if (uv_queue_work(j->w->loop, &d->work, score_work, score_done) == 0) {
        j->ops++;
        return;
    }
    d->rc = IMGQ_EIO;
    j->ops++;
    score_done(&d->work, 0);
}

static void send_draft_get(struct draft *d)
{
    struct job *j = d->j;
    struct imgq_s3_config s3 = j->w->s3;
    s3.bucket = d->bucket;
    d->tries++;
    if (imgq_s3_get(j->w->http, &s3, d->key, on_draft_get, d) == 0) {
        j->ops++;
        return;
    }
    struct imgq_s3_result none = {.err = IMGQ_EIO, .message = "cannot send", .code = ""};
    j->ops++;
    on_draft_get(&none, d);
}

static void on_await(struct worker *w, redisReply *r, void *arg)
{
    (void)w;
    struct job *j = arg;
    long long v;
    if (!pipeline_answer(j, r, &v))
        return;
    if (v == 1)
        imgq_log(IMGQ_LOG_INFO, "job", "%s: %d drafts await selection (imgq select %s INDEX)",
                 j->id, j->ndrafts, j->id);
    else
        imgq_log(IMGQ_LOG_WARN, "job", "%s: lease lost before awaiting selection", j->id);
    pipeline_parked(j);
}

/*
 * Select by webhook: POST the drafts (with presigned links) to the job's scorer, signed like a
 * webhook (Standard Webhooks headers, so it can check the request is ours), and take the index
 * it answers: {"index": K}.  The URL passes the SSRF guard (on the thread pool) and the POST
 * goes to exactly the checked address, with the pipeline's timeout.  A scorer that is down or
 * answers 5xx is retried with the job's backoff; one that answers nonsense fails the attempt.
 */
struct scorer {
    struct job *j;
    uv_work_t guard;
    int rc;
    char why[256];
    char pin[IMGQ_SSRF_PIN_MAX];
    const char *url; /* the job's spec owns it */
};

static void on_scorer(const imgq_http_response *res, void *arg)
{
    struct scorer *sc = arg;
    struct job *j = sc->j;
    const char *url = sc->url;
    free(sc);
    if (op_done(j))
        return;
    char msg[600];
    if (res->err != 0) {
        snprintf(msg, sizeof msg, "scorer %s: %s", url, res->error);
        finish_fail(j, res->timed_out ? IMGQ_CLASS_TIMEOUT : IMGQ_CLASS_NETWORK, 0, NULL, msg, 0,
                    0);
        return;
    }
    if (res->status < 200 || res->status > 299) {
        snprintf(msg, sizeof msg, "scorer %s answered HTTP %ld%s", url, res->status,
                 res->status >= 300 && res->status < 400 ? " (redirects are not followed)" : "");
        finish_fail(j,
                    res->status >= 500 || res->status == 429 ? IMGQ_CLASS_SERVER
                                                             : IMGQ_CLASS_BAD_RESPONSE,
                    res->status, NULL, msg, 0, 0);
        return;
    }
    json_t *o = json_loadb((const char *)res->body, res->body_len, 0, NULL);
    json_t *iv = json_object_get(o, "index");
    if (!json_is_integer(iv) || json_integer_value(iv) < 0 ||
        json_integer_value(iv) >= j->ndrafts) {
        snprintf(msg, sizeof msg,
                 "scorer %s answered %.120s: expected {\"index\": K} with K from 0 to %d", url,
                 res->body_len ? (const char *)res->body : "nothing", j->ndrafts - 1);
        json_decref(o);
        finish_fail(j, IMGQ_CLASS_BAD_RESPONSE, res->status, NULL, msg, 0, 0);
        return;
    }
    int idx = (int)json_integer_value(iv);
    imgq_log(IMGQ_LOG_INFO, "job", "%s: scorer chose draft %d of %d", j->id, idx, j->ndrafts);
    pipeline_chosen(j, idx,
                    json_pack("{s:s, s:s, s:O}", "mode", "webhook", "url", url, "answer", o));
    json_decref(o);
}

static void scorer_guard_work(uv_work_t *req)
{
    struct scorer *sc = req->data;
    sc->rc = worker_ssrf_check(sc->j->w, sc->url, sc->pin, sizeof sc->pin, sc->why, sizeof sc->why);
}

static void scorer_guard_done(uv_work_t *req, int status)
{
    struct scorer *sc = req->data;
    struct job *j = sc->j;
    (void)status;
    if (op_done(j)) {
        free(sc);
        return;
    }
    char msg[600];
    if (sc->rc != 0) {
        snprintf(msg, sizeof msg, "scorer %s refused by the SSRF guard: %s", sc->url, sc->why);
        bool again = sc->rc == IMGQ_EAGAIN;
        free(sc);
        finish_fail(j, again ? IMGQ_CLASS_NETWORK : IMGQ_CLASS_INVALID_REQUEST, 0, NULL, msg, -1,
                    0);
        return;
    }
    json_t *body = json_pack("{s:s, s:s, s:s, s:s, s:o}", "type", "selection.request", "job", j->id,
                             "batch", j->batch, "prompt", j->spec.prompt, "drafts", drafts_json(j));
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    imgq_http_request *hr = imgq_http_request_new("POST", sc->url);
    char msg_id[IMGQ_JOB_ID_MAX + 32];
    snprintf(msg_id, sizeof msg_id, "sel_%s_%d", j->id, j->attempt);
    int r = webhooks_sign_headers(j->w, sc->url, msg_id, text, strlen(text), hr);
    if (r != 0) {
        free(text);
        imgq_http_request_free(hr);
        snprintf(msg, sizeof msg,
                 "scorer %s: requests to scorers are signed, and this worker has no webhook "
                 "secret for it (IMGQ_WEBHOOK_SECRET): %s",
                 sc->url, imgq_strerror(r));
        free(sc);
        finish_fail(j, IMGQ_CLASS_INVALID_REQUEST, 0, NULL, msg, -1, 0);
        return;
    }
    imgq_http_request_set_body(hr, text, strlen(text));
    free(text);
    json_int_t timeout_s = json_integer_value(
        json_object_get(json_object_get(j->spec.pipeline, "select"), "timeout_s"));
    imgq_http_request_set_timeouts(hr, (long)(timeout_s > 0 ? timeout_s : 60) * 1000, 0);
    imgq_http_request_set_max_body(hr, 64 * 1024);
    imgq_http_request_set_flags(hr, IMGQ_HTTP_NO_PROXY);
    imgq_http_request_add_connect_to(hr, sc->pin);
    if ((r = imgq_http_submit(j->w->http, hr, on_scorer, sc)) == 0) {
        j->ops++;
        return;
    }
    snprintf(msg, sizeof msg, "scorer %s: %s", sc->url, imgq_strerror(r));
    free(sc);
    finish_fail(j, IMGQ_CLASS_NETWORK, 0, NULL, msg, 0, 0);
}

static void select_webhook(struct job *j)
{
    struct scorer *sc = imgq_xcalloc(1, sizeof *sc);
    sc->j = j;
    sc->url =
        json_string_value(json_object_get(json_object_get(j->spec.pipeline, "select"), "url"));
    if (!sc->url) {
        free(sc);
        finish_fail(j, IMGQ_CLASS_INVALID_REQUEST, 0, NULL, "select mode webhook without a url", -1,
                    0);
        return;
    }
    sc->guard.data = sc;
    if (uv_queue_work(j->w->loop, &sc->guard, scorer_guard_work, scorer_guard_done) == 0) {
        j->ops++;
        return;
    }
    free(sc);
    finish_fail(j, IMGQ_CLASS_NETWORK, 0, NULL, "cannot check the scorer's URL", 0, 0);
}

static void pipeline_select(struct job *j)
{
    const char *mode = imgq_job_pipeline_mode(&j->spec);
    if (mode && strcmp(mode, "manual") == 0) {
        json_t *a = drafts_json(j);
        char *text = json_dumps(a, JSON_COMPACT);
        json_decref(a);
        const char *args[5] = {"await", j->id, j->token, text};
        int r = worker_script(j->w, IMGQ_SCRIPT_PIPELINE, 4, args, on_await, j);
        free(text);
        if (r == 0) {
            j->ops++;
            return;
        }
        arm_timer(j, REDIS_RETRY_MS, on_pipeline_timer);
    } else if (mode && strcmp(mode, "webhook") == 0) {
        select_webhook(j);
    } else {
        j->drafts_pending = j->ndrafts;
        for (int i = 0; i < j->ndrafts; i++)
            send_draft_get(&j->drafts[i]);
    }
}

/* The draft job's stored images (its result), into j->drafts. */
static int read_drafts(struct job *j, const char *result)
{
    json_t *o = json_loads(result ? result : "", 0, NULL);
    json_t *imgs = json_object_get(o, "images");
    size_t n = json_array_size(imgs);
    for (int i = 0; i < j->ndrafts; i++) {
        free(j->drafts[i].bucket);
        free(j->drafts[i].key);
        free(j->drafts[i].data);
    }
    free(j->drafts);
    j->drafts = n ? imgq_xcalloc(n, sizeof *j->drafts) : NULL;
    j->ndrafts = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *im = json_array_get(imgs, i);
        const char *b = json_string_value(json_object_get(im, "bucket"));
        const char *k = json_string_value(json_object_get(im, "key"));
        if (!b || !k)
            continue;
        struct draft *d = &j->drafts[j->ndrafts];
        d->j = j;
        d->index = j->ndrafts++;
        d->bucket = imgq_xstrdup(b);
        d->key = imgq_xstrdup(k);
        d->width = (int)json_integer_value(json_object_get(im, "width"));
        d->height = (int)json_integer_value(json_object_get(im, "height"));
    }
    json_decref(o);
    return j->ndrafts > 0 ? 0 : IMGQ_EPARSE;
}

static void on_drafted(struct worker *w, redisReply *r, void *arg)
{
    (void)w;
    struct job *j = arg;
    long long v;
    if (!pipeline_answer(j, r, &v))
        return;
    if (v == 2) { /* the drafts were done already: select now */
        pipeline_get(j);
        return;
    }
    if (v == 1)
        imgq_log(IMGQ_LOG_INFO, "job", "%s: drafting (%s-draft); the job waits for it", j->id,
                 j->id);
    else
        imgq_log(IMGQ_LOG_WARN, "job", "%s: lease lost before drafting", j->id);
    pipeline_parked(j);
}

/* The draft stage: queue the child job of drafts and park until it ends. */
static void pipeline_draft(struct job *j)
{
    struct imgq_job_spec d;
    struct imgq_job_problem why;
    if (imgq_job_pipeline_stage(j->w->catalog, &j->spec, "draft", NULL, time(NULL), &d, &why) !=
        0) {
        char msg[600];
        snprintf(msg, sizeof msg, "%s: %s", why.field, why.reason);
        finish_fail(j, IMGQ_CLASS_INVALID_REQUEST, 0, NULL, msg, -1, 0);
        return;
    }
    char *text = imgq_job_spec_to_json(&d);
    imgq_job_spec_clear(&d);
    char maxa[16];
    snprintf(maxa, sizeof maxa, "%d", j->max_attempts);
    const char *args[6] = {"draft", j->id, j->token, text, maxa};
    int r = worker_script(j->w, IMGQ_SCRIPT_PIPELINE, 5, args, on_drafted, j);
    free(text);
    if (r == 0) {
        j->ops++;
        return;
    }
    arm_timer(j, REDIS_RETRY_MS, on_pipeline_timer);
}

static void on_pipeline_get(struct worker *w, redisReply *r, void *arg)
{
    (void)w;
    struct job *j = arg;
    if (op_done(j))
        return;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 6) {
        arm_timer(j, REDIS_RETRY_MS, on_pipeline_timer);
        return;
    }
    const char *stage = r->element[0]->str ? r->element[0]->str : "draft";
    const char *chosen = r->element[1]->str ? r->element[1]->str : "";
    const char *child = r->element[2]->str ? r->element[2]->str : "";
    if (j->lease_lost) {
        finish_fail(j, IMGQ_CLASS_NONE, 0, NULL, "lease lost", -1, 0);
        return;
    }
    if (strcmp(stage, "draft") == 0) {
        pipeline_draft(j);
        return;
    }
    json_object_set_new(j->spec.pipeline, "draft_job", json_string(child));
    if (read_drafts(j, r->element[3]->str) != 0) {
        char msg[200];
        snprintf(msg, sizeof msg, "the draft job %s has no stored images (state %s)", child,
                 r->element[4]->str ? r->element[4]->str : "?");
        finish_fail(j, IMGQ_CLASS_INVALID_REQUEST, 0, NULL, msg, -1, 0);
        return;
    }
    if (strcmp(stage, "refine") == 0 && *chosen) {
        pipeline_refine(j, atoi(chosen),
                        r->element[5]->str && *r->element[5]->str ? r->element[5]->str : NULL);
        return;
    }
    pipeline_select(j);
}

/* Where a pipeline job stands (pipeline.lua get), and on from there. */
static void pipeline_get(struct job *j)
{
    const char *args[2] = {"get", j->id};
    if (worker_script(j->w, IMGQ_SCRIPT_PIPELINE, 2, args, on_pipeline_get, j) == 0) {
        j->ops++;
        return;
    }
    arm_timer(j, REDIS_RETRY_MS, on_pipeline_timer);
}

void job_start(struct worker *w, const char *id, const char *token, int attempt, const char *spec,
               const char *batch, int max_attempts)
{
    struct job *j = imgq_xcalloc(1, sizeof *j);
    j->w = w;
    j->id = imgq_xstrdup(id ? id : "");
    j->token = imgq_xstrdup(token ? token : "");
    j->batch = imgq_xstrdup(batch ? batch : "");
    j->spec_json = imgq_xstrdup(spec ? spec : "");
    j->attempt = attempt;
    j->max_attempts = max_attempts;
    j->started_ms = now_ms();
    j->next = w->jobs;
    if (w->jobs)
        w->jobs->prev = j;
    w->jobs = j;
    w->inflight++;
    j->state = JOB_CALLING;

    int parsed = imgq_job_spec_from_json(j->spec_json, &j->spec);
    if (parsed == 0 && j->spec.model)
        j->asked_model = imgq_xstrdup(j->spec.model); /* routing counts outcomes by it */
    if (parsed != 0) {
        finish_fail(j, IMGQ_CLASS_INVALID_REQUEST, 0, NULL, "stored job spec is damaged", -1, 0);
        return;
    }
    j->model = imgq_catalog_model(w->catalog, j->spec.model);
    j->route = imgq_catalog_route(w->catalog, j->spec.route);
    if (!j->model || !j->route) {
        char msg[256];
        snprintf(msg, sizeof msg, "model '%s' or route '%s' is not in this worker's catalog",
                 j->spec.model, j->spec.route);
        finish_fail(j, IMGQ_CLASS_INVALID_REQUEST, 0, NULL, msg, -1, 0);
        return;
    }
    if (w->opt.noop) {
        /* Queue benchmark: measure claim and complete with nothing in between. */
        j->billed = "none";
        finish_done(j);
        return;
    }
    if (j->spec.pipeline) {
        pipeline_get(j);
        return;
    }
    choose_model(j);
}
