/*
 * worker.c - the loop around the jobs: Redis connections, claiming, leases, the reaper and
 * shutdown.
 */
#include "worker.h"

#include <hiredis/hiredis.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "imgq/alloc.h"
#include "imgq/log.h"
#include "imgq/ssrf.h"
#include "imgq/redis_uv.h"
#include "spool.h"
#include "webhooks.h"

#define CLAIM_BATCH 64  /* jobs asked for in one claim call */
#define REAP_LIMIT 1000 /* expired leases returned per reaper run */
/* An idle worker looks at its queue this often even without a wake message: a message lost
 * with a subscriber connection must not leave ready jobs waiting. */
#define IDLE_POLL_MS 5000
#define EXIT_RECHECK_MS 1000 /* --exit-when-idle: while other workers finish their jobs */
#define RECONNECT_MAX_MS 5000
/* --exit-when-idle: a worker Redis refuses (NOAUTH, WRONGPASS) exits with status 1 after this
 * long (README "Running workers"); without it, it keeps trying, an ERROR per attempt. */
#define REFUSED_GIVE_UP_MS 30000
#define CLOSE_DRAIN_MS 2000 /* shutdown: longest wait for the last commands' replies */

static void connect_redis(struct worker *w);
static void shutdown_now(struct worker *w);
static void check_stopped(struct worker *w);
static void on_release(struct worker *w, redisReply *r, void *arg);
static void close_handle(uv_handle_t *h);
static void redis_unusable(struct worker *w, const char *why);
static void drop_connections(struct worker *w);
static void lost_connection(struct worker *w);

/* Script calls ------------------------------------------------------------------------ */

struct scall {
    struct worker *w;
    enum imgq_script_id id;
    int argc;
    const char **argv; /* argv[0], argv[1] static; the rest owned */
    size_t *argvlen;
    bool retried;
    worker_script_cb cb;
    void *arg;
};

static void scall_free(struct scall *s)
{
    for (int i = 2; i < s->argc; i++)
        free((char *)s->argv[i]);
    free(s->argv);
    free(s->argvlen);
    free(s);
}

static void scall_reply(redisAsyncContext *c, void *r, void *priv)
{
    struct scall *s = priv;
    redisReply *reply = r;
    /* The script cache is empty after a Redis restart or SCRIPT FLUSH: send the body once,
     * which also caches it again. */
    if (reply && reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "NOSCRIPT", 8) == 0 &&
        !s->retried && s->w->ac) {
        const struct imgq_script *sc = imgq_script_get(s->id);
        s->retried = true;
        s->argv[0] = "EVAL";
        s->argv[1] = sc->body;
        s->argvlen[0] = 4;
        s->argvlen[1] = strlen(sc->body);
        if (redisAsyncCommandArgv(s->w->ac, scall_reply, s, s->argc, s->argv, s->argvlen) ==
            REDIS_OK)
            return;
        reply = NULL;
    }
    if (reply && reply->type == REDIS_REPLY_ERROR &&
        (strncmp(reply->str, "MOVED ", 6) == 0 || strncmp(reply->str, "ASK ", 4) == 0 ||
         strncmp(reply->str, "CLUSTERDOWN", 11) == 0)) {
        /* A Redis Cluster node that does not hold the queue's slot: following it is issue 18. */
        char why[512];
        snprintf(why, sizeof why,
                 "Redis at %s:%d is a Redis Cluster node (it answered '%s'); cluster mode is "
                 "not supported yet (issue 18): point the worker at a standalone Redis",
                 s->w->redis.host, s->w->redis.port, reply->str);
        redis_unusable(s->w, why);
    } else if (reply && reply->type == REDIS_REPLY_ERROR)
        imgq_log(IMGQ_LOG_ERROR, "redis", "script %s: %s", imgq_script_get(s->id)->name,
                 reply->str);
    struct worker *w = s->w;
    s->cb(w, reply, s->arg);
    scall_free(s);
    /* Stopping because Redis cannot serve the worker: the reply just handled may have been
     * what the stop waited for (a claim's slots). */
    if (w->stopping && w->exit_code)
        check_stopped(w);
}

int worker_script(struct worker *w, enum imgq_script_id id, int nargs, const char **args,
                  worker_script_cb cb, void *arg)
{
    if (!w->ac || !w->connected)
        return IMGQ_EAGAIN;
    const struct imgq_script *sc = imgq_script_get(id);
    struct scall *s = imgq_xcalloc(1, sizeof *s);
    s->w = w;
    s->id = id;
    s->cb = cb;
    s->arg = arg;
    s->argc = 5 + nargs;
    s->argv = imgq_xcalloc((size_t)s->argc, sizeof *s->argv);
    s->argvlen = imgq_xcalloc((size_t)s->argc, sizeof *s->argvlen);
    s->argv[0] = "EVALSHA";
    s->argv[1] = sc->sha;
    s->argv[2] = imgq_xstrdup("1");
    s->argv[3] = imgq_xstrdup(w->keys.stats);
    s->argv[4] = imgq_xstrdup(w->keys.base);
    for (int i = 0; i < nargs; i++)
        s->argv[5 + i] = imgq_xstrdup(args[i]);
    for (int i = 0; i < s->argc; i++)
        s->argvlen[i] = strlen(s->argv[i]);
    if (redisAsyncCommandArgv(w->ac, scall_reply, s, s->argc, s->argv, s->argvlen) != REDIS_OK) {
        scall_free(s);
        return IMGQ_EAGAIN;
    }
    return 0;
}

struct rcall {
    struct rcall *next, *prev;
    enum imgq_script_id id;
    int nargs;
    char **args;
    bool in_flight;
};

static void rcall_send(struct worker *w, struct rcall *rc);

static void on_rcall(struct worker *w, redisReply *r, void *arg)
{
    struct rcall *rc = arg;
    rc->in_flight = false;
    if (!r)
        return; /* Redis went away: sent again with the next lease renewal */
    /* Answered (an error reply too: re-sending would only repeat it; it is logged). */
    /* (doubly linked: thousands of settlements may be pending at once) */
    if (rc->prev)
        rc->prev->next = rc->next;
    else
        w->rcalls = rc->next;
    if (rc->next)
        rc->next->prev = rc->prev;
    w->nrcalls--;
    for (int i = 0; i < rc->nargs; i++)
        free(rc->args[i]);
    free(rc->args);
    free(rc);
    if (w->stopping)
        check_stopped(w);
}

static void rcall_send(struct worker *w, struct rcall *rc)
{
    if (rc->in_flight)
        return;
    if (worker_script(w, rc->id, rc->nargs, (const char **)rc->args, on_rcall, rc) == 0)
        rc->in_flight = true;
}

void worker_script_reliable(struct worker *w, enum imgq_script_id id, int nargs, const char **args)
{
    struct rcall *rc = imgq_xcalloc(1, sizeof *rc);
    rc->id = id;
    rc->nargs = nargs;
    rc->args = imgq_xcalloc((size_t)nargs, sizeof *rc->args);
    for (int i = 0; i < nargs; i++)
        rc->args[i] = imgq_xstrdup(args[i] ? args[i] : "");
    rc->next = w->rcalls;
    if (rc->next)
        rc->next->prev = rc;
    w->rcalls = rc;
    w->nrcalls++;
    rcall_send(w, rc);
}

int worker_reliable_pending(const struct worker *w)
{
    return w->nrcalls;
}

void worker_drop_reliable(struct worker *w)
{
    while (w->rcalls) {
        struct rcall *rc = w->rcalls;
        w->rcalls = rc->next;
        imgq_log(IMGQ_LOG_ERROR, "worker",
                 "exiting with a %s call Redis never answered (%s %s %s %s): reconcile by hand",
                 imgq_script_get(rc->id)->name, rc->nargs > 0 ? rc->args[0] : "",
                 rc->nargs > 1 ? rc->args[1] : "", rc->nargs > 2 ? rc->args[2] : "",
                 rc->nargs > 3 ? rc->args[3] : "");
        for (int i = 0; i < rc->nargs; i++)
            free(rc->args[i]);
        free(rc->args);
        free(rc);
    }
    w->nrcalls = 0;
}

static void rcalls_resend(struct worker *w)
{
    for (struct rcall *rc = w->rcalls; rc; rc = rc->next)
        rcall_send(w, rc);
}

int worker_rate_limit(const struct worker *w, const char *provider)
{
    for (int i = 0; provider && i < w->opt.nrate; i++)
        if (strcmp(w->opt.rate[i].provider, provider) == 0)
            return w->opt.rate[i].images; /* see limits.h for the other limits */
    return 0;
}

/* Claiming ------------------------------------------------------------------------------ */

static void on_wake_timer(uv_timer_t *t)
{
    worker_maybe_claim(t->data);
}

static void arm_wake(struct worker *w, long ms)
{
    if (w->stopping)
        return;
    if (ms < 1)
        ms = 1;
    uv_timer_start(&w->wake_timer, on_wake_timer, (uint64_t)ms, 0);
}

static void on_idle_exec(redisAsyncContext *c, void *r, void *priv)
{
    struct worker *w = priv;
    redisReply *reply = r;
    if (!reply || reply->type != REDIS_REPLY_ARRAY)
        return;
    /* ready rings x3, delayed, leased, paused flag, blocked by budgets: paused work, and jobs
     * waiting for a budget's window or an operator raising it, are nothing this worker can do,
     * so they do not keep an --exit-when-idle worker alive. */
    if (reply->elements != 7)
        return;
    long long total = 0;
    for (size_t i = 0; i < 5; i++)
        total += (i < 3 && reply->element[5]->integer) ? 0 : reply->element[i]->integer;
    total -= reply->element[6]->integer; /* blocked jobs are among the delayed */
    if (total == 0 && w->inflight == 0 && w->reserved == 0 && !w->stopping && !webhooks_busy(w)) {
        imgq_log(IMGQ_LOG_INFO, "worker", "queue '%s' is empty: exiting (--exit-when-idle)",
                 w->cfg->queue);
        w->stopping = true;
        check_stopped(w);
    } else if (!w->stopping && (!uv_is_active((uv_handle_t *)&w->wake_timer) ||
                                uv_timer_get_due_in(&w->wake_timer) > EXIT_RECHECK_MS)) {
        /* Only other workers' running jobs are left (or work due much later): nothing
         * announces their end, so look again shortly (a batch-mode worker waiting to exit,
         * not an idle loop). */
        arm_wake(w, EXIT_RECHECK_MS);
    }
}

/* Is anything ready (and not paused), delayed or leased?  One MULTI/EXEC, one reply. */
static void request_idle_check(struct worker *w)
{
    if (!w->ac || !w->connected)
        return;
    redisAsyncCommand(w->ac, NULL, NULL, "MULTI");
    for (int p = 0; p < 3; p++)
        redisAsyncCommand(w->ac, NULL, NULL, "LLEN %s", w->keys.ring[p]);
    redisAsyncCommand(w->ac, NULL, NULL, "ZCARD %s", w->keys.delayed);
    redisAsyncCommand(w->ac, NULL, NULL, "ZCARD %s", w->keys.leases);
    redisAsyncCommand(w->ac, NULL, NULL, "EXISTS %spaused", w->keys.base);
    redisAsyncCommand(w->ac, NULL, NULL, "ZCARD %sblocked", w->keys.base);
    redisAsyncCommand(w->ac, on_idle_exec, w, "EXEC");
}

void worker_claim_args(struct worker *w, int want, bool replaces_one, struct claim_args *ca)
{
    /* A finishing job that asked for its successor hands its slot over: the slot is counted
     * once, in 'reserved', not also as the job's.  So every job of a burst that finishes
     * together gets its successor in the same call, not only the first. */
    int room = w->opt.concurrency - w->inflight + w->handed - w->reserved + (replaces_one ? 1 : 0);
    /* Not while the spool re-uploads an earlier run's files, nor while paid bytes waiting for
     * S3 hold more memory than its cap (run.c): new jobs would only add to them. */
    if (w->stopping || want < 0 || w->recovering || (w->spool && spool_mem_over(w->spool)))
        want = 0;
    if (want > room)
        want = room > 0 ? room : 0;
    if (want > CLAIM_BATCH)
        want = CLAIM_BATCH;
    ca->count = want;
    w->reserved += want;
    snprintf(ca->count_s, sizeof ca->count_s, "%d", want);
    snprintf(ca->lease_s, sizeof ca->lease_s, "%d", w->opt.lease_ms);
    snprintf(ca->token, sizeof ca->token, "%s.%lu", w->id, ++w->claims);
}

void worker_take_claims(struct worker *w, const redisReply *r, size_t off,
                        const struct claim_args *ca)
{
    w->reserved -= ca->count;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < off + 3) {
        if (ca->count > 0)
            arm_wake(w, 1000);
        return;
    }
    long long n = r->element[off]->integer;
    const redisReply *due = r->element[off + 1];
    long long next_due = due->type == REDIS_REPLY_STRING ? atoll(due->str) : due->integer;
    long long now = r->element[off + 2]->integer;
    for (long long i = 0; i < n && off + 3 + i * 6 + 5 < r->elements; i++) {
        redisReply **e = r->element + off + 3 + i * 6;
        if (w->stopping || w->closing) {
            /* Leased in the same reply as an outcome sent before the stop: hand it back at
             * once, unstarted and uncharged (the reaper takes it if Redis is gone). */
            const char *args[2] = {e[0]->str, e[1]->str};
            if (worker_script(w, IMGQ_SCRIPT_RELEASE, 2, args, on_release, NULL) == 0)
                w->pending_releases++;
            continue;
        }
        job_start(w, e[0]->str, e[1]->str, (int)e[2]->integer, e[3]->str, e[4]->str,
                  e[5]->str ? atoi(e[5]->str) : 5);
    }
    if (w->stopping || ca->count == 0)
        return;
    if (n >= ca->count) {
        worker_maybe_claim(w); /* there may be more ready */
        return;
    }
    /* Less than asked: nothing more is ready.  Sleep until the next retry is due or a wake
     * message arrives (submit, reap, release, resume all publish one). */
    uv_timer_stop(&w->wake_timer);
    long wait = IDLE_POLL_MS;
    if (next_due >= 0 && next_due - now < wait)
        wait = (long)(next_due - now);
    arm_wake(w, wait);
    if (w->opt.exit_when_idle && n == 0 && w->inflight == 0 && w->reserved == 0)
        request_idle_check(w);
}

static void on_claim(struct worker *w, redisReply *r, void *arg)
{
    struct claim_args *ca = arg;
    w->claiming = false;
    bool again = w->claim_again;
    w->claim_again = false;
    worker_take_claims(w, r, 0, ca);
    free(ca);
    /* A wake that came while this claim was in flight may announce jobs the claim ran too
     * early to see: claim once more (unless a new claim is already on its way). */
    if (again && !w->claiming)
        worker_maybe_claim(w);
}

void worker_maybe_claim(struct worker *w)
{
    if (w->stopping || w->claiming || !w->connected)
        return;
    struct claim_args *ca = imgq_xcalloc(1, sizeof *ca);
    worker_claim_args(w, CLAIM_BATCH, false, ca);
    if (ca->count == 0) {
        w->reserved -= ca->count;
        free(ca);
        return;
    }
    const char *args[4] = {w->id, ca->lease_s, ca->count_s, ca->token};
    if (worker_script(w, IMGQ_SCRIPT_CLAIM, 4, args, on_claim, ca) == 0) {
        w->claiming = true;
        return;
    }
    w->reserved -= ca->count;
    free(ca);
}

/* Leases and the reaper ------------------------------------------------------------------- */

static void on_extend(struct worker *w, redisReply *r, void *arg)
{
    (void)arg;
    if (!r || r->type != REDIS_REPLY_ARRAY)
        return;
    for (size_t i = 0; i + 1 < r->elements; i += 2)
        if (r->element[i]->str && r->element[i + 1]->str)
            job_lease_lost(w, r->element[i]->str, r->element[i + 1]->str);
}

/* Renews the leases of every job this worker still runs, in one EXTEND call. */
static void extend_leases(struct worker *w)
{
    w->extended_at = uv_now(w->loop);
    int n = 0;
    for (struct job *j = w->jobs; j; j = job_next(j))
        n += job_lease_held(j);
    if (n == 0)
        return;
    const char **args = imgq_xcalloc((size_t)(1 + 2 * n), sizeof *args);
    char lease[24];
    snprintf(lease, sizeof lease, "%d", w->opt.lease_ms);
    args[0] = lease;
    int k = 1;
    for (struct job *j = w->jobs; j; j = job_next(j))
        if (job_lease_held(j)) {
            args[k++] = job_id(j);
            args[k++] = job_token(j);
        }
    (void)worker_script(w, IMGQ_SCRIPT_EXTEND, k, args, on_extend, NULL);
    free(args);
}

static void on_lease_timer(uv_timer_t *t)
{
    struct worker *w = t->data;
    rcalls_resend(w);
    extend_leases(w);
}

static void on_reap(struct worker *w, redisReply *r, void *arg)
{
    (void)arg;
    if (r && r->type == REDIS_REPLY_INTEGER && r->integer > 0) {
        imgq_log(IMGQ_LOG_WARN, "reaper", "returned %lld jobs whose lease expired to the queue",
                 r->integer);
        worker_maybe_claim(w);
    }
}

static void on_reap_timer(uv_timer_t *t)
{
    struct worker *w = t->data;
    /* Our own leases first when their renewal is late (Redis runs the two calls in this
     * order): after the loop was busy longer than a lease (thousands of answers at once), the
     * reaper must not hand back jobs this worker is still running.  Other workers' reapers
     * still take them if it stays stuck. */
    if (uv_now(w->loop) - w->extended_at > (uint64_t)(w->opt.lease_ms / 3))
        extend_leases(w);
    char limit[16];
    snprintf(limit, sizeof limit, "%d", REAP_LIMIT);
    const char *args[1] = {limit};
    (void)worker_script(w, IMGQ_SCRIPT_REAP, 1, args, on_reap, NULL);
}

/* Redis connections ------------------------------------------------------------------------ */

static void on_reconnect_timer(uv_timer_t *t)
{
    struct worker *w = t->data;
    imgq_log(IMGQ_LOG_DEBUG, "redis", "reconnecting to %s:%d", w->redis.host, w->redis.port);
    connect_redis(w);
}

/* Redis cannot serve this worker at all (a cluster node): say so and stop, status 1. */
static void redis_unusable(struct worker *w, const char *why)
{
    if (w->stopping && w->exit_code)
        return;
    imgq_log(IMGQ_LOG_ERROR, "redis", "%s; stopping", why);
    w->exit_code = 1;
    w->stopping = true;
    check_stopped(w);
}

/* Redis refused the connection's credentials (or wants some): an ERROR for each attempt (one
 * per backoff step), and with --exit-when-idle, status 1 once it has refused for
 * REFUSED_GIVE_UP_MS. */
static void redis_refused(struct worker *w, const char *err)
{
    uint64_t now = uv_now(w->loop);
    if (!w->refused_since)
        w->refused_since = now;
    int next = w->reconnect_ms ? w->reconnect_ms * 2 : 100;
    if (next > RECONNECT_MAX_MS)
        next = RECONNECT_MAX_MS;
    if (w->opt.exit_when_idle && now - w->refused_since >= REFUSED_GIVE_UP_MS) {
        imgq_log(IMGQ_LOG_ERROR, "redis",
                 "Redis at %s:%d refused this worker: %s; giving up after %d s "
                 "(--exit-when-idle): check the user and password of --redis",
                 w->redis.host, w->redis.port, err, REFUSED_GIVE_UP_MS / 1000);
        drop_connections(w);
        w->exit_code = 1;
        w->stopping = true;
        check_stopped(w);
        return;
    }
    imgq_log(IMGQ_LOG_ERROR, "redis",
             "Redis at %s:%d refused this worker: %s; check the user and password of --redis "
             "(trying again in %d ms)",
             w->redis.host, w->redis.port, err, next);
    lost_connection(w);
}

/* Free both connections (pending callbacks run with a NULL reply).  Re-entrant: freeing a
 * connected context runs on_disconnect, which finds nothing left to drop. */
static void drop_connections(struct worker *w)
{
    redisAsyncContext *ac = w->ac, *sub = w->sub;
    w->ac = w->sub = NULL;
    w->connected = false;
    if (ac)
        redisAsyncFree(ac);
    if (sub)
        redisAsyncFree(sub);
}

/* One of the two connections is gone (or never came up): drop the other too, so both come
 * back together, and try again with backoff. */
static void lost_connection(struct worker *w)
{
    if (w->connected && !w->closing)
        imgq_log(IMGQ_LOG_WARN, "redis", "connection lost; reconnecting");
    if (w->closing) {
        /* Shutting down: the command connection, disconnecting gracefully, still delivers the
         * last commands (the rate-limit slots of cancelled calls are released) and closes on
         * its own, or at the drain deadline; the subscriber has nothing more to say. */
        redisAsyncContext *sub = w->sub;
        w->sub = NULL;
        if (sub)
            redisAsyncFree(sub);
        if (!w->ac)
            close_handle((uv_handle_t *)&w->reconnect_timer);
        return;
    }
    drop_connections(w);
    if (uv_is_active((uv_handle_t *)&w->reconnect_timer))
        return;
    w->reconnect_ms = w->reconnect_ms ? w->reconnect_ms * 2 : 100;
    if (w->reconnect_ms > RECONNECT_MAX_MS)
        w->reconnect_ms = RECONNECT_MAX_MS;
    uv_timer_start(&w->reconnect_timer, on_reconnect_timer, (uint64_t)w->reconnect_ms, 0);
}

static void on_disconnect(const redisAsyncContext *c, int status)
{
    struct worker *w = c->data;
    imgq_log(IMGQ_LOG_DEBUG, "redis", "%s connection closed (%s)",
             c == w->ac    ? "command"
             : c == w->sub ? "subscriber"
                           : "stale",
             c->errstr[0] ? c->errstr : "no error");
    if (c == w->ac)
        w->ac = NULL;
    bool refused = c == w->sub && (strncmp(c->errstr, "NOAUTH", 6) == 0 ||
                                   strncmp(c->errstr, "WRONGPASS", 9) == 0);
    if (c == w->sub)
        w->sub = NULL;
    if (refused) { /* hiredis closes a subscriber whose SUBSCRIBE is refused */
        char err[256];
        snprintf(err, sizeof err, "%s", w->auth_error[0] ? w->auth_error : c->errstr);
        redis_refused(w, err);
        return;
    }
    lost_connection(w);
}

static void on_connect(const redisAsyncContext *c, int status)
{
    struct worker *w = c->data;
    if (status != REDIS_OK) {
        imgq_log(IMGQ_LOG_WARN, "redis", "cannot connect to %s:%d: %s", w->redis.host,
                 w->redis.port, c->errstr);
        if (c == w->ac)
            w->ac = NULL;
        if (c == w->sub)
            w->sub = NULL;
        lost_connection(w);
    }
}

static void on_wake_message(redisAsyncContext *c, void *r, void *priv)
{
    struct worker *w = priv;
    redisReply *reply = r;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements < 3)
        return;
    if (reply->element[0]->str && strcmp(reply->element[0]->str, "subscribe") == 0) {
        /* Subscribed: both connections are up. */
        if (!w->connected) {
            w->connected = true;
            w->reconnect_ms = 0;
            w->refused_since = 0;
            imgq_log(IMGQ_LOG_INFO, "redis", "connected to %s:%d", w->redis.host, w->redis.port);
        }
    }
    /* A claim in flight may have run before what this message announces: claim again after
     * it (see on_claim). */
    if (w->claiming)
        w->claim_again = true;
    worker_maybe_claim(w);
}

/* The first command after AUTH and SELECT on the command connection: refused (NOAUTH: no
 * password, or a wrong one, and then the AUTH before it said why), Redis will not serve this
 * worker. */
static void on_first_reply(redisAsyncContext *c, void *r, void *priv)
{
    struct worker *w = priv;
    redisReply *reply = r;
    if (c != w->ac || !reply || reply->type != REDIS_REPLY_ERROR)
        return;
    char err[256];
    snprintf(err, sizeof err, "%s", w->auth_error[0] ? w->auth_error : reply->str);
    redis_refused(w, err);
}

/* AUTH refused (WRONGPASS, ...): kept to say why when the command after it fails. */
static void on_auth_reply(redisAsyncContext *c, void *r, void *priv)
{
    (void)c;
    struct worker *w = priv;
    redisReply *reply = r;
    if (reply && reply->type == REDIS_REPLY_ERROR)
        snprintf(w->auth_error, sizeof w->auth_error, "%s", reply->str);
}

static redisAsyncContext *open_ctx(struct worker *w)
{
    redisAsyncContext *c = redisAsyncConnect(w->redis.host, w->redis.port);
    if (!c || c->err) {
        imgq_log(IMGQ_LOG_WARN, "redis", "cannot connect to %s:%d: %s", w->redis.host,
                 w->redis.port, c ? c->errstr : "out of memory");
        if (c)
            redisAsyncFree(c);
        return NULL;
    }
    c->data = w;
    /* A half-open connection (a dead peer, a dropped NAT entry) is noticed by TCP keepalive
     * instead of hanging until the kernel's 15-minute retransmission timeout. */
    redisEnableKeepAlive(&c->c);
    if (imgq_redis_uv_attach(c, w->loop) != 0) {
        imgq_log(IMGQ_LOG_WARN, "redis", "cannot watch the connection's socket");
        redisAsyncFree(c);
        return NULL;
    }
    redisAsyncSetConnectCallback(c, on_connect);
    redisAsyncSetDisconnectCallback(c, on_disconnect);
    /* Commands queue until the connection is up; AUTH and SELECT go first. */
    if (w->redis.password) {
        if (w->redis.user)
            redisAsyncCommand(c, on_auth_reply, w, "AUTH %s %s", w->redis.user, w->redis.password);
        else
            redisAsyncCommand(c, on_auth_reply, w, "AUTH %s", w->redis.password);
    }
    if (w->redis.db)
        redisAsyncCommand(c, NULL, NULL, "SELECT %d", w->redis.db);
    return c;
}

static void connect_redis(struct worker *w)
{
    if (w->closing)
        return;
    w->auth_error[0] = '\0';
    w->ac = open_ctx(w);
    w->sub = w->ac ? open_ctx(w) : NULL;
    if (!w->ac || !w->sub) {
        lost_connection(w);
        return;
    }
    redisAsyncCommand(w->ac, on_first_reply, w, "PING");
    for (int i = 0; i < IMGQ_SCRIPT_COUNT; i++)
        redisAsyncCommand(w->ac, NULL, NULL, "SCRIPT LOAD %s",
                          imgq_script_get((enum imgq_script_id)i)->body);
    redisAsyncCommand(w->sub, on_wake_message, w, "SUBSCRIBE %s", w->keys.wake);
    webhooks_subscribe(w);
}

/* Shutdown ---------------------------------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h)
{
    (void)h;
}

static void close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, on_handle_closed);
}

/* Shutdown: the command connection did not close in time; drop it. */
static void on_close_deadline(uv_timer_t *t)
{
    struct worker *w = t->data;
    drop_connections(w);
    close_handle((uv_handle_t *)t);
}

static void shutdown_now(struct worker *w)
{
    if (w->closing)
        return;
    w->closing = true;
    /* Completions of this turn go out first: they are owed, like the replies awaited below. */
    run_flush_outcomes(w);
    close_handle((uv_handle_t *)&w->outcome_check);
    imgq_log(IMGQ_LOG_INFO, "worker",
             "stopping: %lu done, %lu failed, %lu retries scheduled, %lu leases lost", w->done,
             w->failed, w->retried, w->lost);
    /* Jobs still here were handed back; closing the client cancels their transfers. */
    for (struct job *j = w->jobs, *next; j; j = next) {
        next = job_next(j);
        job_abandon(j, false);
    }
    /* Calls still waiting for rate-limit room are dropped (their jobs were handed back); the
     * slots of cancelled transfers are released as imgq_http_close answers them. */
    limits_close(w);
    webhooks_stop(w);
    imgq_http_close(w->http, NULL, NULL);
    w->http = NULL;
    /* Connected: let replies still due arrive; otherwise just free. */
    if (w->connected && w->ac)
        redisAsyncDisconnect(w->ac);
    else if (w->ac)
        drop_connections(w);
    if (w->sub)
        redisAsyncDisconnect(w->sub);
    close_handle((uv_handle_t *)&w->wake_timer);
    close_handle((uv_handle_t *)&w->lease_timer);
    close_handle((uv_handle_t *)&w->reap_timer);
    uv_timer_stop(&w->reconnect_timer);
    if (w->ac && !uv_is_closing((uv_handle_t *)&w->reconnect_timer))
        uv_timer_start(&w->reconnect_timer, on_close_deadline, CLOSE_DRAIN_MS, 0);
    else
        close_handle((uv_handle_t *)&w->reconnect_timer);
    close_handle((uv_handle_t *)&w->grace_timer);
    close_handle((uv_handle_t *)&w->sigterm);
    close_handle((uv_handle_t *)&w->sigint);
}

/* Called whenever something that shutdown waits for changes. */
static void check_stopped(struct worker *w)
{
    if (!w->stopping || w->closing || w->pending_releases > 0 || w->reserved > 0)
        return;
    /* Settlements still on their way: wait for them while Redis is there (the grace period
     * bounds the wait). */
    if (w->nrcalls > 0 && w->connected && !w->grace_over)
        return;
    /* After the grace period only handed-back jobs (abandoned, waiting for their transfers to
     * be cancelled) may remain. */
    for (struct job *j = w->jobs; j; j = job_next(j))
        if (job_lease_held(j))
            return;
    if ((w->inflight == 0 && webhooks_in_flight(w) == 0) || w->grace_over)
        shutdown_now(w);
}

void worker_check_stopped(struct worker *w)
{
    check_stopped(w);
}

void worker_job_gone(struct worker *w, struct job *j)
{
    (void)j;
    if (w->stopping) {
        check_stopped(w);
        return;
    }
    worker_maybe_claim(w);
}

static void on_release(struct worker *w, redisReply *r, void *arg)
{
    (void)r;
    (void)arg;
    w->pending_releases--;
    check_stopped(w);
}

static void on_grace_timer(uv_timer_t *t)
{
    struct worker *w = t->data;
    /* Jobs still waiting for their provider are handed back.  Jobs past it (encoding,
     * storing, recording) were paid for: handing them back would pay twice, so they finish,
     * and a second signal stops the worker regardless. */
    int handed = 0;
    w->grace_over = true;
    w->pending_releases++; /* held until every release is sent */
    for (struct job *j = w->jobs; j; j = job_next(j)) {
        if (!job_lease_held(j) || !job_waiting_for_provider(j))
            continue;
        job_hand_back(j); /* its settlements go ahead of the release, on the same connection */
        const char *args[2] = {job_id(j), job_token(j)};
        if (worker_script(w, IMGQ_SCRIPT_RELEASE, 2, args, on_release, NULL) == 0) {
            w->pending_releases++;
            handed++;
        }
    }
    /* Their outcomes are no longer wanted (their transfers are cancelled at shutdown). */
    for (struct job *j = w->jobs, *next; j; j = next) {
        next = job_next(j);
        if (job_lease_held(j) && job_waiting_for_provider(j))
            job_abandon(j, true);
    }
    imgq_log(IMGQ_LOG_WARN, "worker",
             "grace period over: handing %d running jobs back, letting %d paid ones finish", handed,
             w->inflight - handed);
    w->pending_releases--;
    check_stopped(w);
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct worker *w = s->data;
    if (w->stopping) {
        imgq_log(IMGQ_LOG_WARN, "worker", "second signal: stopping now");
        uv_timer_stop(&w->grace_timer);
        if (!w->grace_over)
            on_grace_timer(&w->grace_timer);
        shutdown_now(w);
        return;
    }
    imgq_log(IMGQ_LOG_INFO, "worker",
             "signal %d: no new claims; %d jobs in flight get %d ms to finish", signum, w->inflight,
             w->opt.grace_ms);
    w->stopping = true;
    uv_timer_stop(&w->wake_timer);
    if (w->inflight == 0 && webhooks_in_flight(w) == 0) {
        shutdown_now(w);
        return;
    }
    uv_timer_start(&w->grace_timer, on_grace_timer, (uint64_t)w->opt.grace_ms, 0);
}

/* Start ---------------------------------------------------------------------------------------- */

int worker_start(struct worker *w)
{
    char host[64] = "host";
    gethostname(host, sizeof host - 1);
    unsigned char rnd[4];
    if (RAND_bytes(rnd, sizeof rnd) != 1)
        abort();
    snprintf(w->id, sizeof w->id, "%.32s:%d:%02x%02x%02x%02x", host, (int)getpid(), rnd[0], rnd[1],
             rnd[2], rnd[3]);
    /* One provider host may hold every job in flight: libcurl's per-host cap (1024 by default)
     * must not queue claimed jobs inside libcurl while their leases run. */
    struct imgq_http_options hopts = {0};
    if (w->opt.concurrency > 1024)
        hopts.max_host_connections = w->opt.concurrency + WEBHOOKS_MAX_PER_HOST;
    int r = imgq_http_init(w->loop, &hopts, &w->http);
    if (r)
        return r;
    limits_init(w);
    uv_timer_t *timers[] = {&w->wake_timer, &w->lease_timer, &w->reap_timer, &w->reconnect_timer,
                            &w->grace_timer};
    for (size_t i = 0; i < sizeof timers / sizeof timers[0]; i++) {
        uv_timer_init(w->loop, timers[i]);
        timers[i]->data = w;
    }
    w->extended_at = uv_now(w->loop);
    uv_check_init(w->loop, &w->outcome_check);
    w->outcome_check.data = w;
    webhooks_start(w);
    uv_signal_init(w->loop, &w->sigterm);
    uv_signal_init(w->loop, &w->sigint);
    w->sigterm.data = w->sigint.data = w;
    uv_signal_start(&w->sigterm, on_signal, SIGTERM);
    uv_signal_start(&w->sigint, on_signal, SIGINT);
    uint64_t renew = (uint64_t)(w->opt.lease_ms / 3 > 0 ? w->opt.lease_ms / 3 : 1);
    uint64_t reap = (uint64_t)(w->opt.lease_ms / 2 > 250 ? w->opt.lease_ms / 2 : 250);
    uv_timer_start(&w->lease_timer, on_lease_timer, renew, renew);
    uv_timer_start(&w->reap_timer, on_reap_timer, reap / 2, reap);
    imgq_log(IMGQ_LOG_INFO, "worker", "%s: queue '%s', concurrency %d, lease %d ms", w->id,
             w->cfg->queue, w->opt.concurrency, w->opt.lease_ms);
    spool_recover_start(w);
    connect_redis(w);
    return 0;
}

int worker_ssrf_check(const struct worker *w, const char *url, char *pin, size_t pinlen, char *why,
                      size_t whylen)
{
    struct imgq_ssrf_policy pol = {(const char *const *)w->ssrf_allow, w->nssrf_allow};
    return imgq_ssrf_check_url(url, &pol, pin, pinlen, why, whylen);
}
