/*
 * queue.h - the Redis side of imgq: key layout, atomic scripts, and the synchronous client
 * that the CLI uses.  The worker drives the same scripts asynchronously (workers/).
 *
 * Every state change of a job is one Lua script (src/lua/, one file per script), run by EVALSHA and
 * reloaded on NOSCRIPT.  All keys of a queue share the hash tag {QUEUE}, so a queue maps to a
 * single Redis Cluster slot; the key prefix is configurable.
 *
 * Threading: an imgq_queue is one blocking Redis connection; use it from one thread.
 * Ownership: strings returned through out-parameters are new and the caller frees them;
 * json_t results are new references.
 */
#ifndef IMGQ_QUEUE_H
#define IMGQ_QUEUE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "imgq/error.h"

/* The scripts, each with its SHA-1 for EVALSHA. */
enum imgq_script_id {
    IMGQ_SCRIPT_SUBMIT,
    IMGQ_SCRIPT_CLAIM,
    IMGQ_SCRIPT_COMPLETE,
    IMGQ_SCRIPT_FAIL,
    IMGQ_SCRIPT_EXTEND,
    IMGQ_SCRIPT_REAP,
    IMGQ_SCRIPT_RELEASE,
    IMGQ_SCRIPT_DLQ,
    IMGQ_SCRIPT_CANCEL,
    IMGQ_SCRIPT_PAUSE,
    IMGQ_SCRIPT_STATS,
    IMGQ_SCRIPT_RATE,
    IMGQ_SCRIPT_POLL,
    IMGQ_SCRIPT_BREAKER,
    IMGQ_SCRIPT_BUDGET,
    IMGQ_SCRIPT_PIPELINE,
    IMGQ_SCRIPT_COALESCE,
    IMGQ_SCRIPT_WEBHOOK,
    IMGQ_SCRIPT_COUNT
};
struct imgq_script {
    const char *name;
    const char *body;
    char sha[41];
};
/* The script table; SHA-1s are computed on first call.  Thread-safe after the first call. */
const struct imgq_script *imgq_script_get(enum imgq_script_id id);

/* Job priorities: lower value is served first. */
enum imgq_priority { IMGQ_PRIO_HIGH = 0, IMGQ_PRIO_NORMAL = 1, IMGQ_PRIO_LOW = 2 };
/* "high" / "normal" / "low" -> priority; IMGQ_EINVAL otherwise. */
int imgq_priority_parse(const char *s, enum imgq_priority *out) IMGQ_MUST_CHECK;
const char *imgq_priority_name(enum imgq_priority p);

/*
 * Where a queue's keys live: "PREFIX:{QUEUE}:" and the names built from it (the layout is
 * described in src/lua/lib.lua).  Every script is called with KEYS[1] = stats, which routes
 * it to the queue's Redis Cluster slot, and ARGV[1] = base.
 */
struct imgq_keys {
    char base[192]; /* "PREFIX:{QUEUE}:" */
    char stats[224], delayed[224], leases[224], dead[224], events[224], wake[224];
    char ring[3][224]; /* batches with ready jobs, per priority */
};
/* IMGQ_EINVAL if prefix or queue is empty, too long, or contains braces. */
int imgq_keys_init(struct imgq_keys *k, const char *prefix, const char *queue) IMGQ_MUST_CHECK;
/* Key of a job or batch, into buf; returns buf. */
char *imgq_keys_job(const struct imgq_keys *k, const char *job_id, char *buf, size_t len);
char *imgq_keys_batch(const struct imgq_keys *k, const char *batch_id, char *buf, size_t len);
char *imgq_keys_batch_jobs(const struct imgq_keys *k, const char *batch_id, char *buf, size_t len);

/* A parsed redis://[user:pass@]host[:port][/db] URL. */
struct imgq_redis_url {
    char *host;
    int port;
    char *user;     /* NULL if none */
    char *password; /* NULL if none */
    int db;
};
/* IMGQ_EINVAL with a message in err for anything else (rediss:// names the TLS proxy way). */
int imgq_redis_url_parse(const char *url, struct imgq_redis_url *out, char *err,
                         size_t errlen) IMGQ_MUST_CHECK;
void imgq_redis_url_clear(struct imgq_redis_url *u);

typedef struct imgq_queue imgq_queue;

/*
 * Connect (blocking) to the Redis at url, AUTH and SELECT as the URL says.  IMGQ_EINVAL for a
 * bad URL or names, IMGQ_EREDIS when Redis cannot be reached; err gets the reason.
 */
int imgq_queue_open(const char *url, const char *prefix, const char *queue, imgq_queue **out,
                    char *err, size_t errlen) IMGQ_MUST_CHECK;
void imgq_queue_close(imgq_queue *q);
const struct imgq_keys *imgq_queue_keys(const imgq_queue *q);
/* Provider outcomes per model, credited to the model called, and whether its circuit breaker
 * is open now (for routing): a new array of *n entries whose strings are owned by it; free
 * with imgq_queue_model_stats_free. */
struct imgq_model_stats;
int imgq_queue_model_stats(imgq_queue *q, struct imgq_model_stats **out, size_t *n) IMGQ_MUST_CHECK;
void imgq_queue_model_stats_free(struct imgq_model_stats *stats, size_t n);
/* The queue's clock: Redis' TIME plus the queue's offset (imgq clock), in ms. */
int imgq_queue_now_ms(imgq_queue *q, int64_t *now) IMGQ_MUST_CHECK;
/* The blocking hiredis connection, for commands this API does not wrap (XREAD, ...). */
struct redisContext *imgq_queue_redis(imgq_queue *q);

/*
 * The id of the job with idempotency key idem: 'j' and 13 characters (65 bits) of its SHA-256,
 * into out.  One key, one id, so the id is also how a key is looked up (P:{Q}:ids); two keys
 * share an id as often as two random 65-bit ids would collide.
 */
#define IMGQ_JOB_ID_LEN 15 /* with the terminating NUL */
void imgq_job_id_for(const char *idem, char out[IMGQ_JOB_ID_LEN]);

/* One job to submit.  All strings are borrowed for the duration of the call. */
struct imgq_submit_item {
    const char *idem; /* idempotency key; the job's id is imgq_job_id_for(idem) */
    enum imgq_priority priority;
    const char *team;
    const char *spec; /* the normalised job JSON */
    int max_attempts;
};

/* When a batch may run (all optional). */
struct imgq_batch_schedule {
    int64_t not_before_ms; /* 0: now */
    int64_t deadline_ms;   /* 0: none; jobs not started by then end as expired */
    const char *windows;   /* NULL: any time; else a plan from imgq_window_plan() */
};

/*
 * Enqueue items into batch, pipelined in chunks (a large file is a few round trips, not one
 * per line).  created[i] (may be NULL) becomes 1 if item i was enqueued, 0 if its idempotency
 * key was already known.  Each chunk is atomic; if the connection fails mid-way, what was
 * written stays and resubmitting the same items completes the rest without duplicates.
 * Emits no event: a submission made of several calls ends with imgq_queue_submitted.
 */
int imgq_queue_submit(imgq_queue *q, const char *batch, const struct imgq_batch_schedule *sched,
                      const struct imgq_submit_item *items, size_t n, unsigned char *created,
                      char *err, size_t errlen) IMGQ_MUST_CHECK;

/* A submission into batch is over: its one batch.submitted event, with the jobs it created, those
 * already present and the batch's total (none if it created nothing). */
int imgq_queue_submitted(imgq_queue *q, const char *batch, size_t created, size_t existing,
                         char *err, size_t errlen) IMGQ_MUST_CHECK;

/* The batch's counters as a new JSON object; IMGQ_ENOTFOUND if no such batch. */
int imgq_queue_batch_info(imgq_queue *q, const char *batch, json_t **out) IMGQ_MUST_CHECK;
/* The batch's job ids in submission order; *ids is a new array of new strings. */
int imgq_queue_batch_jobs(imgq_queue *q, const char *batch, char ***ids, size_t *n) IMGQ_MUST_CHECK;
/* A job's fields as a new JSON object (spec, result and error parsed); IMGQ_ENOTFOUND. */
int imgq_queue_job_info(imgq_queue *q, const char *job_id, json_t **out) IMGQ_MUST_CHECK;
/* Fetch many jobs with one pipelined round trip; out[i] is NULL for a missing job.  Jobs that
 * have not run yet are read from their batch's ready lists (packed jobs, src/lua/lib.lua):
 * listing a batch in submission order, chunk after chunk, reads each list about once. */
int imgq_queue_jobs_info(imgq_queue *q, char **ids, size_t n, json_t **out) IMGQ_MUST_CHECK;
/*
 * Cancel a job (scope "job") or a batch's unfinished jobs (scope "batch"); *n gets how many
 * ended, or -1 for no such batch.  A job that has not run yet is taken out of its ready list.
 */
int imgq_queue_cancel(imgq_queue *q, const char *scope, const char *id, long long *n, char *err,
                      size_t errlen) IMGQ_MUST_CHECK;
/*
 * Pause, resume or promote one job ('action': "pause", "resume", "promote"; src/lua/pause.lua).
 * *code: 1 done, 0 no such job, -1 its state does not allow it; 'state' gets the job's state
 * before (or the one that refused it).  A job that has not run yet is taken out of its ready
 * list by its exact entry.
 */
int imgq_queue_job_control(imgq_queue *q, const char *action, const char *id, int *code,
                           char *state, size_t statelen, char *err, size_t errlen) IMGQ_MUST_CHECK;

/*
 * Run one of the queue's scripts with KEYS[1] = stats and ARGV = {base, args...}; *reply (may
 * be NULL) is the reply as JSON: integers, strings, arrays, null (new reference).
 * IMGQ_EREDIS with err filled if Redis refused it.  Blocks for one round trip.
 */
int imgq_queue_script(imgq_queue *q, enum imgq_script_id id, int nargs, const char **args,
                      json_t **reply, char *err, size_t errlen) IMGQ_MUST_CHECK;

/* Dead-lettered jobs, newest first, at most 'limit': a new array of job objects (as
 * imgq_queue_job_info), filtered by batch when batch is not NULL. */
int imgq_queue_dead(imgq_queue *q, const char *batch, size_t limit, json_t **out) IMGQ_MUST_CHECK;

#endif
