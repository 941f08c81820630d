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
#include "imgq/dedup.h"
#include "imgq/image.h"
#include "imgq/log.h"
#include "worker.h"

#define S3_TRIES 5          /* PUT attempts per object before the job attempt fails */
#define REDIS_RETRY_MS 1000 /* wait before re-sending an outcome Redis did not take */

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
    int err;
    char errmsg[256];
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
    uv_timer_t timer; /* retry wait */
    bool timer_init;
    struct limits_wait lw; /* its place in the account's queue, then its hold on room */
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
    int ops;        /* outstanding async operations */
    bool abandoned; /* nobody wants the outcome any more */
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

    /* The outcome, kept so it can be re-sent if Redis was away. */
    bool outcome_complete;
    char *outcome_json;
    char *attempt_json; /* the attempt log line of a completion */
    int outcome_sends;  /* complete/fail calls sent for this attempt */
    struct claim_args ca;
    long retry_delay_ms;
    bool consume_attempt;
    uint64_t started_ms;
};

static void finish_fail(struct job *j, enum imgq_error_class cls, long status, const char *code,
                        const char *msg, long retry_after_ms, imgq_micros charged);
static void calls_settled(struct job *j);
static void send_outcome(struct job *j);
static void store_images(struct job *j);

static void on_retry_outcome(uv_timer_t *t)
{
    send_outcome(t->data);
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
    return j->state == JOB_CALLING;
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
    w->inflight--;
    for (int i = 0; i < j->nimgs; i++) {
        if (j->imgs[i].data != j->imgs[i].src)
            free(j->imgs[i].data);
        free(j->imgs[i].key);
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
    /* The job's memory goes with the last timer's close callback. */
    j->handles_open = 1; /* held until every close below is requested */
    for (int i = 0; i < j->ncalls; i++) {
        imgq_provider_result_clear(&j->calls[i].pr);
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

void job_lease_lost(struct worker *w, const char *id)
{
    for (struct job *j = w->jobs; j; j = j->next)
        if (strcmp(j->id, id) == 0 && !j->lease_lost) {
            imgq_log(IMGQ_LOG_WARN, "job", "%s: lease lost (cancelled, or taken over)", id);
            j->lease_lost = true;
            w->lost++;
            /* Waiting for a retry: nothing was spent since, nothing to record. */
            if (j->state == JOB_CALLING) {
                bool in_flight = false;
                for (int i = 0; i < j->ncalls; i++)
                    if (j->calls[i].timer_init && uv_is_active((uv_handle_t *)&j->calls[i].timer))
                        uv_timer_stop(&j->calls[i].timer);
                    else if (!j->calls[i].done && !j->calls[i].failed)
                        in_flight = true;
                if (!in_flight && j->calls_pending > 0) {
                    j->calls_pending = 0;
                    calls_settled(j);
                }
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

static void on_outcome(struct worker *w, redisReply *r, void *arg)
{
    struct job *j = arg;
    struct claim_args ca = j->ca; /* the successors' reservation outlives the job */
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
    long long status = r->element[0]->integer;
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
    } else {
        w->failed++;
    }
    job_set_state(j, JOB_ENDED);
    /* Successors first: a stopping worker must see their releases pending before the last
     * job's departure lets it shut down. */
    worker_take_claims(w, r, 1, &ca);
    job_free(j);
}

static void send_outcome(struct job *j)
{
    struct worker *w = j->w;
    int r;
    /* The job's slot goes to its successor, leased in the same round trip.  A re-send (the
     * first reply was lost) asks for none: the first call may have leased one already. */
    worker_claim_args(w, j->outcome_sends++ ? 0 : 1, true, &j->ca);
    if (j->outcome_complete) {
        char cost[32], images[16];
        snprintf(cost, sizeof cost, "%" PRId64, j->cost);
        snprintf(images, sizeof images, "%d", j->nimgs);
        const char *args[10] = {j->id,         j->token,        j->outcome_json, cost,
                                images,        j->attempt_json, w->id,           j->ca.lease_s,
                                j->ca.count_s, j->ca.token};
        r = worker_script(w, IMGQ_SCRIPT_COMPLETE, 10, args, on_outcome, j);
    } else {
        char delay[32], cost[32];
        snprintf(delay, sizeof delay, "%ld", j->retry_delay_ms);
        snprintf(cost, sizeof cost, "%" PRId64, j->cost);
        const char *args[10] = {
            j->id, j->token,      j->outcome_json, delay,      cost, j->consume_attempt ? "1" : "0",
            w->id, j->ca.lease_s, j->ca.count_s,   j->ca.token};
        r = worker_script(w, IMGQ_SCRIPT_FAIL, 10, args, on_outcome, j);
    }
    if (r == 0) {
        j->ops++;
        return;
    }
    worker_take_claims(w, NULL, 1, &j->ca);
    arm_timer(j, REDIS_RETRY_MS, on_retry_outcome);
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
    if (retry) {
        if (cls == IMGQ_CLASS_RATE_LIMIT) {
            /* The provider said "not now", not "this failed": wait as told, keep the try. */
            j->consume_attempt = false;
            j->retry_delay_ms = retry_after_ms >= 0 ? retry_after_ms : backoff_ms(w, j->attempt);
        } else {
            j->retry_delay_ms = backoff_ms(w, j->attempt);
        }
    }
    j->cost = charged;
    json_t *e = json_object();
    json_object_set_new(e, "class", json_string(imgq_error_class_name(cls)));
    json_object_set_new(e, "attempt", json_integer(j->attempt));
    json_object_set_new(e, "time", json_integer((json_int_t)now_ms()));
    if (status)
        json_object_set_new(e, "status", json_integer(status));
    if (code && *code)
        json_object_set_new(e, "code", json_string(code));
    json_object_set_new(e, "message", json_string(msg ? msg : ""));
    json_object_set_new(e, "retry", json_boolean(retry));
    if (retry)
        json_object_set_new(e, "retry_in_ms", json_integer(j->retry_delay_ms));
    if (charged)
        json_object_set_new(e, "charged_micros", json_integer(charged));
    if (j->request_id[0])
        json_object_set_new(e, "provider_request_id", json_string(j->request_id));
    free(j->outcome_json);
    j->outcome_json = json_dumps(e, JSON_COMPACT);
    json_decref(e);
    j->outcome_complete = false;
    imgq_log(retry ? IMGQ_LOG_INFO : IMGQ_LOG_WARN, "job", "%s attempt %d: %s (%ld) %s%s", j->id,
             j->attempt, imgq_error_class_name(cls), status, msg ? msg : "",
             retry ? "; will retry" : "; not retryable");
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
        json_array_append_new(imgs, im);
    }
    json_object_set_new(o, "images", imgs);
    json_object_set_new(o, "model", json_string(j->spec.model));
    json_object_set_new(o, "route", json_string(j->spec.route));
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
    json_object_set_new(a, "billed", json_string(j->billed));
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

static void on_put(const struct imgq_s3_result *res, void *arg)
{
    struct image_out *im = arg;
    struct job *j = im->job;
    if (op_done(j))
        return;
    if (res->err == 0) {
        im->stored = true;
    } else {
        snprintf(j->s3_error, sizeof j->s3_error, "%s", res->message);
    }
    if (--j->pending > 0)
        return;
    for (int i = 0; i < j->nimgs; i++)
        if (!j->imgs[i].stored) {
            if (++j->s3_tries < S3_TRIES) {
                imgq_log(IMGQ_LOG_WARN, "job", "%s: storing failed (%s); retrying", j->id,
                         j->s3_error);
                arm_timer(j, 500L << j->s3_tries, on_store_timer);
                return;
            }
            /* The images were paid for; the charge stands even though storing failed. */
            finish_fail(j, IMGQ_CLASS_STORAGE, 0, NULL, j->s3_error, -1, j->cost);
            return;
        }
    finish_done(j);
}

static void store_images(struct job *j)
{
    job_set_state(j, JOB_STORING);
    j->pending = 0;
    const char *type = strcmp(j->spec.output_format, "png") == 0 ? "image/png" : "image/webp";
    for (int i = 0; i < j->nimgs; i++) {
        struct image_out *im = &j->imgs[i];
        if (im->stored)
            continue;
        int r =
            imgq_s3_put(j->w->http, &j->w->s3, im->key, type, im->data, im->len, NULL, on_put, im);
        if (r) {
            snprintf(j->s3_error, sizeof j->s3_error, "S3 PUT %s: %s", im->key, imgq_strerror(r));
            continue;
        }
        j->ops++;
        j->pending++;
    }
    if (j->pending == 0) {
        /* Nothing could even be sent: a configuration problem, not worth waiting for. */
        if (++j->s3_tries < S3_TRIES) {
            arm_timer(j, 500L << j->s3_tries, on_store_timer);
            return;
        }
        finish_fail(j, IMGQ_CLASS_STORAGE, 0, NULL, j->s3_error, -1, j->cost);
    }
}

/* Encoding (thread pool) ----------------------------------------------------------------- */

static void encode_work(uv_work_t *req)
{
    struct image_out *im = req->data;
    const struct job *j = im->job; /* read-only from the pool thread */
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
    if (strcmp(j->spec.output_format, "png") == 0 &&
        imgq_image_sniff(im->src, im->src_len) == IMGQ_IMAGE_PNG) {
        im->data = (uint8_t *)im->src;
        im->len = im->src_len;
    } else {
        r = imgq_webp_encode(&img, j->spec.output_compression, false, &im->data, &im->len);
        if (r) {
            im->err = r;
            snprintf(im->errmsg, sizeof im->errmsg, "image %d: webp encoding failed", im->index);
        }
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
    return (struct imgq_request_shape){
        j->spec.quality, j->spec.width, j->spec.height, n, strlen(j->spec.prompt), 0};
}

/* Price one call from its usage, or at the ceiling when the provider returned none. */
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
        return imgq_cost_from_usage(j->model, j->route, &u, &c->cost);
    }
    /* No usage: bill the worst case this request could have cost, never $0. */
    c->ceiling = true;
    struct imgq_request_shape shape = call_shape(j, c->n);
    return imgq_cost_ceiling(j->model, j->route, &shape, &c->cost);
}

static void send_call(struct call *c);

static void on_call_timer(uv_timer_t *t)
{
    struct call *c = t->data;
    struct job *j = c->j;
    if (j->abandoned)
        return;
    if (j->lease_lost) {
        c->failed = true;
        if (--j->calls_pending == 0)
            calls_settled(j);
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
    if (j->fail.cls != IMGQ_CLASS_NONE) {
        /* What was generated was paid for: the charge stands, the attempt fails. */
        finish_fail(j, j->fail.cls, j->fail.status, j->fail.code, j->fail.message,
                    j->fail.retry_after_ms, spent);
        return;
    }
    j->nimgs = images;
    j->imgs = imgq_xcalloc((size_t)j->nimgs, sizeof *j->imgs);
    job_set_state(j, JOB_ENCODING);
    const char *ext = strcmp(j->spec.output_format, "png") == 0 ? "png" : "webp";
    for (int i = 0; i < j->ncalls; i++) {
        struct call *c = &j->calls[i];
        for (int k = 0; k < c->pr.nimages; k++) {
            int idx = c->first + k;
            struct image_out *im = &j->imgs[idx];
            char dk[65];
            imgq_dedup_key(&j->spec, idx, dk);
            im->job = j;
            im->index = idx;
            im->src = c->pr.images[k];
            im->src_len = c->pr.image_lens[k];
            im->key = imgq_object_key(j->w->cfg->s3_key_prefix, dk, ext);
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
    /* A failed call the provider billed (an unusable 2xx, or a provider that charges
     * failures) counts as spent, like a generated image. */
    c->cost = charged;
    if (j->fail.cls == IMGQ_CLASS_NONE) {
        /* The attempt fails now: siblings waiting to be retried need not be. */
        for (int i = 0; i < j->ncalls; i++) {
            struct call *s = &j->calls[i];
            if (s != c && s->timer_init && uv_is_active((uv_handle_t *)&s->timer)) {
                uv_timer_stop(&s->timer);
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

static void on_call(const imgq_http_response *res, void *arg)
{
    struct call *c = arg;
    struct job *j = c->j;
    /* Answered, failed, timed out or cancelled at shutdown: the request is no longer in
     * flight, whoever still wants its outcome. */
    limits_release(j->w, &c->lw, true);
    if (op_done(j))
        return;
    imgq_provider_result_clear(&c->pr);
    j->ops_api->parse(res, c->n, &c->pr);
    if (c->pr.request_id[0] && !j->request_id[0])
        snprintf(j->request_id, sizeof j->request_id, "%s", c->pr.request_id);
    j->last_status = res->status;
    if (c->pr.cls == IMGQ_CLASS_NONE) {
        if (price_call(c) != 0) {
            c->pr.cls = IMGQ_CLASS_BAD_RESPONSE;
            snprintf(c->pr.message, sizeof c->pr.message,
                     "usage cannot be priced with the catalog");
            call_failed(c, 0);
        } else {
            c->done = true;
        }
    } else {
        imgq_micros charged = 0;
        struct imgq_request_shape shape = call_shape(j, c->n);
        /* An unusable 2xx is still billed, at the ceiling; so is any failure at a provider
         * the catalog marks as charging failures. */
        if ((c->pr.cls == IMGQ_CLASS_BAD_RESPONSE && res->status >= 200 && res->status < 300) ||
            (j->model->charges_failures && res->status != 0))
            if (imgq_cost_ceiling(j->model, j->route, &shape, &charged) != 0)
                charged = 0;
        bool again = imgq_error_class_retryable(c->pr.cls) && c->tries < CALL_TRIES &&
                     j->ncalls > 1 && charged == 0 && j->fail.cls == IMGQ_CLASS_NONE;
        if (again) {
            /* A sibling's images are in hand: retry this call alone, not the whole job. */
            long wait = c->pr.retry_after_ms >= 0 ? c->pr.retry_after_ms
                                                  : 250L << (c->tries < 6 ? c->tries : 6);
            if (!c->timer_init) {
                uv_timer_init(j->w->loop, &c->timer);
                c->timer_init = true;
            }
            c->timer.data = c;
            uv_timer_start(&c->timer, on_call_timer, (uint64_t)wait, 0);
            imgq_log(IMGQ_LOG_INFO, "job", "%s call %d/%d: %s (%ld); retrying it alone", j->id,
                     c->index + 1, j->ncalls, imgq_error_class_name(c->pr.cls), res->status);
            return;
        }
        call_failed(c, charged);
    }
    if (--j->calls_pending == 0)
        calls_settled(j);
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
        c->failed = true;
        if (--j->calls_pending == 0)
            calls_settled(j);
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
    if (--j->calls_pending == 0)
        calls_settled(j);
}

/*
 * Every provider call first takes room under all the limits of its account at once (limits.h):
 * its images, the tokens it may use (token-billed models: the catalog's output tokens for the
 * shape x n, plus the prompt bounded by its bytes, once per image; per-image models: none) and
 * a concurrency slot, which on_call releases.  Async providers: a poll request takes only a
 * slot, through limits_acquire_poll().
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
    if (--j->calls_pending == 0)
        calls_settled(j);
}

static void submit_call(struct call *c)
{
    struct job *j = c->j;
    imgq_http_request *req = j->ops_api->build(&j->ep, &j->spec, c->n);
    int r = imgq_http_submit(j->w->http, req, on_call, c);
    if (r == 0) {
        j->ops++;
        return;
    }
    limits_release(j->w, &c->lw, false); /* never sent */
    c->pr.cls = IMGQ_CLASS_NETWORK;
    snprintf(c->pr.message, sizeof c->pr.message, "%s", imgq_strerror(r));
    call_failed(c, 0);
    if (--j->calls_pending == 0)
        calls_settled(j);
}

/* Split the job into provider calls: n_per_call images each (a model that returns one image
 * per call fans out), all sent at once. */
static void start_calls(struct job *j)
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
    /* Sends may settle the job synchronously (a refused submit): count first, send after. */
    for (int i = 0; i < j->ncalls && !j->abandoned && j->state == JOB_CALLING; i++)
        send_call(&j->calls[i]);
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

    if (imgq_job_spec_from_json(j->spec_json, &j->spec) != 0) {
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
    imgq_log(IMGQ_LOG_DEBUG, "job", "%s attempt %d: %s %s %s n=%d", j->id, attempt, j->spec.model,
             j->spec.size, j->spec.quality ? j->spec.quality : "-", j->spec.n);
    start_calls(j);
}
