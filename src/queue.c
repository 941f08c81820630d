/*
 * queue.c - key layout, script table, and the blocking Redis client used by the CLI.
 */
#include "imgq/queue.h"

#include <hiredis/hiredis.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imgq/alloc.h"
#include "imgq/job.h"
#include "imgq/router.h"
#include "lua_scripts.h"

/* Scripts ------------------------------------------------------------------------------ */

static struct imgq_script scripts[IMGQ_SCRIPT_COUNT] = {
    [IMGQ_SCRIPT_SUBMIT] = {"submit", imgq__lua_submit, ""},
    [IMGQ_SCRIPT_CLAIM] = {"claim", imgq__lua_claim, ""},
    [IMGQ_SCRIPT_COMPLETE] = {"complete", imgq__lua_complete, ""},
    [IMGQ_SCRIPT_FAIL] = {"fail", imgq__lua_fail, ""},
    [IMGQ_SCRIPT_EXTEND] = {"extend", imgq__lua_extend, ""},
    [IMGQ_SCRIPT_REAP] = {"reap", imgq__lua_reap, ""},
    [IMGQ_SCRIPT_RELEASE] = {"release", imgq__lua_release, ""},
    [IMGQ_SCRIPT_DLQ] = {"dlq", imgq__lua_dlq, ""},
    [IMGQ_SCRIPT_CANCEL] = {"cancel", imgq__lua_cancel, ""},
    [IMGQ_SCRIPT_PAUSE] = {"pause", imgq__lua_pause, ""},
    [IMGQ_SCRIPT_STATS] = {"stats", imgq__lua_stats, ""},
    [IMGQ_SCRIPT_RATE] = {"rate", imgq__lua_rate, ""},
    [IMGQ_SCRIPT_POLL] = {"poll", imgq__lua_poll, ""},
    [IMGQ_SCRIPT_BREAKER] = {"breaker", imgq__lua_breaker, ""},
    [IMGQ_SCRIPT_BUDGET] = {"budget", imgq__lua_budget, ""},
    [IMGQ_SCRIPT_PIPELINE] = {"pipeline", imgq__lua_pipeline, ""},
    [IMGQ_SCRIPT_COALESCE] = {"coalesce", imgq__lua_coalesce, ""},
    [IMGQ_SCRIPT_WEBHOOK] = {"webhook", imgq__lua_webhook, ""},
};
static pthread_once_t scripts_once = PTHREAD_ONCE_INIT;

static void scripts_hash(void)
{
    for (int i = 0; i < IMGQ_SCRIPT_COUNT; i++) {
        unsigned char md[SHA_DIGEST_LENGTH];
        SHA1((const unsigned char *)scripts[i].body, strlen(scripts[i].body), md);
        for (int j = 0; j < SHA_DIGEST_LENGTH; j++)
            snprintf(scripts[i].sha + 2 * j, 3, "%02x", md[j]);
    }
}

const struct imgq_script *imgq_script_get(enum imgq_script_id id)
{
    pthread_once(&scripts_once, scripts_hash);
    return &scripts[id];
}

/* Priorities --------------------------------------------------------------------------- */

int imgq_priority_parse(const char *s, enum imgq_priority *out)
{
    static const char *names[] = {"high", "normal", "low"};
    for (int i = 0; s && i < 3; i++)
        if (strcmp(s, names[i]) == 0) {
            *out = (enum imgq_priority)i;
            return 0;
        }
    return IMGQ_EINVAL;
}

const char *imgq_priority_name(enum imgq_priority p)
{
    switch (p) {
    case IMGQ_PRIO_HIGH:
        return "high";
    case IMGQ_PRIO_NORMAL:
        return "normal";
    case IMGQ_PRIO_LOW:
        return "low";
    }
    return "normal";
}

/* Keys --------------------------------------------------------------------------------- */

int imgq_keys_init(struct imgq_keys *k, const char *prefix, const char *queue)
{
    if (!prefix || !queue || !*queue || strlen(prefix) > 64 || strlen(queue) > 64 ||
        strpbrk(prefix, "{}") || strpbrk(queue, "{}"))
        return IMGQ_EINVAL;
    snprintf(k->base, sizeof k->base, "%s%s{%s}:", prefix, *prefix ? ":" : "", queue);
    snprintf(k->stats, sizeof k->stats, "%sstats", k->base);
    snprintf(k->delayed, sizeof k->delayed, "%sdelayed", k->base);
    snprintf(k->leases, sizeof k->leases, "%sleases", k->base);
    snprintf(k->dead, sizeof k->dead, "%sdead", k->base);
    snprintf(k->events, sizeof k->events, "%sevents", k->base);
    snprintf(k->wake, sizeof k->wake, "%swake", k->base);
    for (int p = 0; p < 3; p++)
        snprintf(k->ring[p], sizeof k->ring[p], "%srr:%d", k->base, p);
    return 0;
}

char *imgq_keys_job(const struct imgq_keys *k, const char *job_id, char *buf, size_t len)
{
    snprintf(buf, len, "%sj:%s", k->base, job_id);
    return buf;
}

char *imgq_keys_batch(const struct imgq_keys *k, const char *batch_id, char *buf, size_t len)
{
    snprintf(buf, len, "%sb:%s", k->base, batch_id);
    return buf;
}

char *imgq_keys_batch_jobs(const struct imgq_keys *k, const char *batch_id, char *buf, size_t len)
{
    snprintf(buf, len, "%sb:%s:jobs", k->base, batch_id);
    return buf;
}

/* Redis URLs --------------------------------------------------------------------------- */

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

static char *pct_decode(const char *s, size_t n)
{
    char *out = imgq_xmalloc(n + 1), *o = out;
    for (size_t i = 0; i < n; i++) {
        int hi = i + 2 < n && s[i] == '%' ? hexval(s[i + 1]) : -1;
        int lo = hi >= 0 ? hexval(s[i + 2]) : -1;
        if (lo >= 0) {
            *o++ = (char)(hi * 16 + lo);
            i += 2;
        } else {
            *o++ = s[i];
        }
    }
    *o = '\0';
    return out;
}

/* The URL as it may appear in a message: credentials replaced by "***". */
static void redact_url(const char *url, char *buf, size_t len)
{
    const char *scheme_end = strstr(url, "://");
    const char *start = scheme_end ? scheme_end + 3 : url;
    const char *at = strchr(start, '@');
    const char *slash = strchr(start, '/');
    if (at && (!slash || at < slash))
        snprintf(buf, len, "%.*s***%s", (int)(start - url), url, at);
    else
        snprintf(buf, len, "%s", url);
}

int imgq_redis_url_parse(const char *url, struct imgq_redis_url *out, char *err, size_t errlen)
{
    char shown[512];
    redact_url(url ? url : "(null)", shown, sizeof shown);
    memset(out, 0, sizeof *out);
    out->port = 6379;
    if (!url || strncmp(url, "redis://", 8) != 0) {
        if (url && strncmp(url, "rediss://", 9) == 0)
            snprintf(err, errlen,
                     "redis URL '%s': TLS (rediss://) is not built in; run a local TLS proxy "
                     "(e.g. stunnel) and point redis:// at it",
                     shown);
        else
            snprintf(err, errlen, "redis URL '%s': must start with redis://", shown);
        return IMGQ_EINVAL;
    }
    const char *p = url + 8;
    const char *end = p + strcspn(p, "/?");
    const char *at = memchr(p, '@', (size_t)(end - p));
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon) {
            if (colon > p)
                out->user = pct_decode(p, (size_t)(colon - p));
            out->password = pct_decode(colon + 1, (size_t)(at - colon - 1));
        } else {
            out->password = pct_decode(p, (size_t)(at - p));
        }
        p = at + 1;
    }
    const char *hend = end;
    const char *colon = NULL;
    if (*p == '[') { /* [::1]:6379 */
        const char *rb = memchr(p, ']', (size_t)(end - p));
        if (!rb)
            goto bad;
        out->host = imgq_xstrndup(p + 1, (size_t)(rb - p - 1));
        if (rb + 1 < end && rb[1] != ':')
            goto bad;
        colon = rb + 1 < end ? rb + 1 : NULL;
    } else {
        colon = memchr(p, ':', (size_t)(end - p));
        if (colon)
            hend = colon;
        out->host = imgq_xstrndup(p, (size_t)(hend - p));
    }
    if (!*out->host) {
        free(out->host);
        out->host = imgq_xstrdup("127.0.0.1");
    }
    if (colon) {
        char *e;
        long port = strtol(colon + 1, &e, 10);
        if (e != end || port < 1 || port > 65535)
            goto bad;
        out->port = (int)port;
    }
    if (*end == '/' && end[1]) {
        char *e;
        long db = strtol(end + 1, &e, 10);
        if ((*e && *e != '?') || db < 0 || db > 100000)
            goto bad;
        out->db = (int)db;
    }
    return 0;
bad:
    snprintf(err, errlen, "redis URL '%s': expected redis://[user:pass@]host[:port][/db]", shown);
    imgq_redis_url_clear(out);
    return IMGQ_EINVAL;
}

void imgq_redis_url_clear(struct imgq_redis_url *u)
{
    free(u->host);
    free(u->user);
    free(u->password);
    memset(u, 0, sizeof *u);
}

/* The blocking client ------------------------------------------------------------------ */

struct imgq_queue {
    redisContext *rc;
    struct imgq_keys keys;
    /* Where the last search for packed jobs stopped, per priority, in which batch: listing a
     * batch in order finds the next chunk's jobs there (imgq_queue_jobs_info). */
    char *scan_batch;
    long long scan_at[3];
};

static int reply_error(redisReply *r, redisContext *rc, char *err, size_t errlen)
{
    if (!r)
        snprintf(err, errlen, "redis: %s", rc->errstr[0] ? rc->errstr : "connection lost");
    else
        snprintf(err, errlen, "redis: %s", r->str ? r->str : "unexpected reply");
    return IMGQ_EREDIS;
}

int imgq_queue_open(const char *url, const char *prefix, const char *queue, imgq_queue **out,
                    char *err, size_t errlen)
{
    struct imgq_redis_url u;
    int rc = imgq_redis_url_parse(url, &u, err, errlen);
    if (rc)
        return rc;
    imgq_queue *q = imgq_xcalloc(1, sizeof *q);
    redisReply *r = NULL;
    if (imgq_keys_init(&q->keys, prefix, queue) != 0) {
        snprintf(err, errlen, "queue name '%s' or prefix '%s' is empty, too long or has braces",
                 queue, prefix);
        rc = IMGQ_EINVAL;
        goto fail;
    }
    struct timeval tv = {5, 0};
    q->rc = redisConnectWithTimeout(u.host, u.port, tv);
    if (!q->rc || q->rc->err) {
        snprintf(err, errlen, "redis %s:%d: %s", u.host, u.port,
                 q->rc ? q->rc->errstr : "cannot allocate");
        rc = IMGQ_EREDIS;
        goto fail;
    }
    redisSetTimeout(q->rc, (struct timeval){30, 0});
    if (u.password) {
        r = u.user ? redisCommand(q->rc, "AUTH %s %s", u.user, u.password)
                   : redisCommand(q->rc, "AUTH %s", u.password);
        if (!r || r->type == REDIS_REPLY_ERROR) {
            rc = reply_error(r, q->rc, err, errlen);
            goto fail;
        }
        freeReplyObject(r);
    }
    if (u.db) {
        r = redisCommand(q->rc, "SELECT %d", u.db);
        if (!r || r->type == REDIS_REPLY_ERROR) {
            rc = reply_error(r, q->rc, err, errlen);
            goto fail;
        }
        freeReplyObject(r);
    }
    imgq_redis_url_clear(&u);
    *out = q;
    return 0;
fail:
    if (r)
        freeReplyObject(r);
    imgq_redis_url_clear(&u);
    imgq_queue_close(q);
    return rc;
}

void imgq_queue_close(imgq_queue *q)
{
    if (!q)
        return;
    if (q->rc)
        redisFree(q->rc);
    free(q->scan_batch);
    free(q);
}

const struct imgq_keys *imgq_queue_keys(const imgq_queue *q)
{
    return &q->keys;
}

int imgq_queue_model_stats(imgq_queue *q, struct imgq_model_stats **out, size_t *n)
{
    redisReply *r = redisCommand(q->rc, "HGETALL %smodels", q->keys.base);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        return IMGQ_EREDIS;
    }
    struct imgq_model_stats *s = imgq_xcalloc(r->elements / 2 + 1, sizeof *s);
    size_t count = 0;
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const char *k = r->element[i]->str;
        bool ok = k && strncmp(k, "ok:", 3) == 0, bad = k && strncmp(k, "fail:", 5) == 0;
        if (!ok && !bad)
            continue;
        const char *model = k + (ok ? 3 : 5);
        size_t j = 0;
        while (j < count && strcmp(s[j].model, model) != 0)
            j++;
        if (j == count)
            s[count++].model = imgq_xstrdup(model);
        long long v = r->element[i + 1]->str ? atoll(r->element[i + 1]->str) : 0;
        if (ok)
            s[j].ok = v;
        else
            s[j].failed = v;
    }
    freeReplyObject(r);
    /* Whose breaker is open now (breaker.lua state: an open one past its cooldown is
     * half-open, and takes a probe).  If Redis refuses the script the rates still stand: a
     * job routed to an open breaker's model is moved by the worker. */
    const char *args[] = {"state", "", "", "", ""};
    json_t *states = NULL;
    char err[256];
    if (imgq_queue_script(q, IMGQ_SCRIPT_BREAKER, 5, args, &states, err, sizeof err) != 0)
        states = NULL;
    size_t nstates = json_array_size(states);
    if (nstates > 0)
        s = imgq_xrealloc(s, (count + nstates + 1) * sizeof *s);
    for (size_t i = 0; i < nstates; i++) {
        json_t *e = json_array_get(states, i);
        const char *model = json_string_value(json_array_get(e, 0));
        const char *state = json_string_value(json_array_get(e, 1));
        if (!model || !state || strcmp(state, "open") != 0)
            continue;
        size_t j = 0;
        while (j < count && strcmp(s[j].model, model) != 0)
            j++;
        if (j == count) {
            memset(&s[count], 0, sizeof s[count]);
            s[count++].model = imgq_xstrdup(model);
        }
        s[j].breaker_open = true;
    }
    json_decref(states);
    *out = s;
    *n = count;
    return 0;
}

void imgq_queue_model_stats_free(struct imgq_model_stats *stats, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free((char *)stats[i].model);
    free(stats);
}

int imgq_queue_now_ms(imgq_queue *q, int64_t *now)
{
    redisReply *t = redisCommand(q->rc, "TIME");
    redisReply *o = redisCommand(q->rc, "GET %sclock_offset", q->keys.base);
    int rc = IMGQ_EREDIS;
    if (t && o && t->type == REDIS_REPLY_ARRAY && t->elements == 2) {
        *now = atoll(t->element[0]->str) * 1000 + atoll(t->element[1]->str) / 1000 +
               (o->type == REDIS_REPLY_STRING ? atoll(o->str) : 0);
        rc = 0;
    }
    if (t)
        freeReplyObject(t);
    if (o)
        freeReplyObject(o);
    return rc;
}

struct redisContext *imgq_queue_redis(imgq_queue *q)
{
    return q->rc;
}

/* Argument vector under construction for one EVALSHA. */
struct argv {
    const char **v;
    size_t *len;
    char **owned; /* numbers formatted here */
    size_t n, cap, nowned;
};

static void argv_add(struct argv *a, const char *s)
{
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 64;
        a->v = imgq_xrealloc(a->v, a->cap * sizeof *a->v);
        a->len = imgq_xrealloc(a->len, a->cap * sizeof *a->len);
        a->owned = imgq_xrealloc(a->owned, a->cap * sizeof *a->owned);
    }
    a->v[a->n] = s;
    a->len[a->n] = strlen(s);
    a->n++;
}

static void argv_addf(struct argv *a, long long x)
{
    char *s = imgq_xasprintf("%lld", x);
    argv_add(a, s);
    a->owned[a->nowned++] = s;
}

/* A string of the vector's own (a copy). */
static void argv_add_copy(struct argv *a, const char *s)
{
    char *c = imgq_xstrdup(s);
    argv_add(a, c);
    a->owned[a->nowned++] = c;
}

static void argv_free(struct argv *a)
{
    for (size_t i = 0; i < a->nowned; i++)
        free(a->owned[i]);
    free(a->v);
    free(a->len);
    free(a->owned);
    memset(a, 0, sizeof *a);
}

/* Load every script once per connection, so the pipelined EVALSHAs cannot miss. */
static int load_scripts(imgq_queue *q, char *err, size_t errlen)
{
    for (int i = 0; i < IMGQ_SCRIPT_COUNT; i++) {
        const struct imgq_script *s = imgq_script_get((enum imgq_script_id)i);
        redisReply *r = redisCommand(q->rc, "SCRIPT LOAD %s", s->body);
        if (!r || r->type != REDIS_REPLY_STRING || strcmp(r->str, s->sha) != 0) {
            int rc = reply_error(r, q->rc, err, errlen);
            if (r)
                freeReplyObject(r);
            return rc;
        }
        freeReplyObject(r);
    }
    return 0;
}

void imgq_job_id_for(const char *idem, char out[IMGQ_JOB_ID_LEN])
{
    static const char alphabet[] = "0123456789abcdefghjkmnpqrstvwxyz";
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)idem, strlen(idem), md);
    /* 13 × 5 bits from the first 9 bytes, in the alphabet of the random ids before them. */
    uint64_t hi = 0;
    for (int i = 0; i < 8; i++)
        hi = hi << 8 | md[i];
    out[0] = 'j';
    for (int i = 0; i < 12; i++)
        out[1 + i] = alphabet[(hi >> (59 - 5 * i)) & 31];
    out[13] = alphabet[((hi & 15) << 1 | md[8] >> 7) & 31];
    out[14] = '\0';
}

#define SUBMIT_CHUNK 256 /* jobs per EVALSHA: bounded script run time, few round trips */
#define SUBMIT_WINDOW 16 /* chunks in flight on the pipeline */

int imgq_queue_submit(imgq_queue *q, const char *batch, const struct imgq_batch_schedule *sched,
                      const struct imgq_submit_item *items, size_t n, unsigned char *created,
                      char *err, size_t errlen)
{
    int rc = load_scripts(q, err, errlen);
    if (rc)
        return rc;
    const struct imgq_script *s = imgq_script_get(IMGQ_SCRIPT_SUBMIT);
    size_t nchunks = (n + SUBMIT_CHUNK - 1) / SUBMIT_CHUNK;
    size_t sent = 0, received = 0;
    while (received < nchunks) {
        while (sent < nchunks && sent - received < SUBMIT_WINDOW) {
            size_t lo = sent * SUBMIT_CHUNK, hi = lo + SUBMIT_CHUNK < n ? lo + SUBMIT_CHUNK : n;
            struct argv a = {0};
            argv_add(&a, "EVALSHA");
            argv_add(&a, s->sha);
            argv_add(&a, "1");
            argv_add(&a, q->keys.stats);
            argv_add(&a, q->keys.base);
            argv_add(&a, batch);
            argv_addf(&a, (long long)(hi - lo));
            argv_addf(&a, sched ? (long long)sched->not_before_ms : 0);
            argv_addf(&a, sched ? (long long)sched->deadline_ms : 0);
            argv_add(&a, sched && sched->windows ? sched->windows : "");
            for (size_t i = lo; i < hi; i++) {
                char id[IMGQ_JOB_ID_LEN];
                imgq_job_id_for(items[i].idem, id);
                argv_add_copy(&a, id);
                argv_add(&a, items[i].idem);
                argv_addf(&a, items[i].priority);
                argv_add(&a, items[i].team ? items[i].team : "");
                argv_add(&a, items[i].spec);
                argv_addf(&a, items[i].max_attempts);
            }
            argv_add(&a, "silent"); /* one batch.submitted per submission: imgq_queue_submitted */
            argv_add(&a, "1");
            int ar = redisAppendCommandArgv(q->rc, (int)a.n, a.v, a.len);
            argv_free(&a);
            if (ar != REDIS_OK)
                return reply_error(NULL, q->rc, err, errlen);
            sent++;
        }
        redisReply *r = NULL;
        if (redisGetReply(q->rc, (void **)&r) != REDIS_OK || !r || r->type != REDIS_REPLY_ARRAY) {
            rc = reply_error(r, q->rc, err, errlen);
            if (r)
                freeReplyObject(r);
            return rc;
        }
        size_t lo = received * SUBMIT_CHUNK;
        for (size_t i = 0; i + 1 < r->elements; i += 2)
            if (created && lo + i / 2 < n)
                created[lo + i / 2] = r->element[i + 1]->integer == 1;
        freeReplyObject(r);
        received++;
    }
    return 0;
}

int imgq_queue_submitted(imgq_queue *q, const char *batch, size_t created, size_t existing,
                         char *err, size_t errlen)
{
    char totals[48];
    snprintf(totals, sizeof totals, "%zu,%zu", created, existing);
    const char *args[7] = {batch, "0", "0", "0", "", "submitted", totals};
    return imgq_queue_script(q, IMGQ_SCRIPT_SUBMIT, 7, args, NULL, err, errlen);
}

static json_t *hash_to_json(redisReply *r)
{
    json_t *o = json_object();
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const char *k = r->element[i]->str, *v = r->element[i + 1]->str;
        if (!k || !v)
            continue;
        /* JSON-valued fields are parsed; counters become integers. */
        if (strcmp(k, "spec") == 0 || strcmp(k, "result") == 0 || strcmp(k, "error") == 0) {
            json_t *j = json_loads(v, 0, NULL);
            json_object_set_new(o, k, j ? j : json_string(v));
            continue;
        }
        /* Names (batch, team, worker, idem, ...) stay strings even when they look numeric;
         * counters, times and money become integers. */
        static const char *const numeric[] = {"total",
                                              "scheduled",
                                              "queued",
                                              "running",
                                              "retrying",
                                              "blocked_budget",
                                              "done",
                                              "failed",
                                              "canceled",
                                              "expired",
                                              "review",
                                              "cost",
                                              "images",
                                              "attempts",
                                              "max_attempts",
                                              "stalls",
                                              "prio",
                                              "created",
                                              "started",
                                              "finished",
                                              "deadline",
                                              "paused",
                                              "paused_jobs",
                                              "paused_due",
                                              "gated",
                                              "coalesced",
                                              "drafting",
                                              "awaiting_selection",
                                              "draft_images",
                                              "draft_cost",
                                              NULL};
        /* (batch completion: see batch_completed in src/lua/lib.lua) */
        static const char *const completion[] = {"open_calls", "completing", "completions", NULL};
        bool is_num = false;
        for (const char *const *n = numeric; *n && !is_num; n++)
            is_num = strcmp(k, *n) == 0;
        for (const char *const *n = completion; *n && !is_num; n++)
            is_num = strcmp(k, *n) == 0;
        char *e;
        long long x = strtoll(v, &e, 10);
        if (is_num && *v && !*e)
            json_object_set_new(o, k, json_integer(x));
        else
            json_object_set_new(o, k, json_string(v));
    }
    return o;
}

int imgq_queue_batch_info(imgq_queue *q, const char *batch, json_t **out)
{
    char bk[320];
    redisReply *r =
        redisCommand(q->rc, "HGETALL %s", imgq_keys_batch(&q->keys, batch, bk, sizeof bk));
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        return IMGQ_EREDIS;
    }
    if (r->elements == 0) {
        freeReplyObject(r);
        return IMGQ_ENOTFOUND;
    }
    *out = hash_to_json(r);
    freeReplyObject(r);
    return 0;
}

int imgq_queue_batch_jobs(imgq_queue *q, const char *batch, char ***ids, size_t *n)
{
    char bj[320];
    redisReply *r =
        redisCommand(q->rc, "LRANGE %s 0 -1", imgq_keys_batch_jobs(&q->keys, batch, bj, sizeof bj));
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        return IMGQ_EREDIS;
    }
    *n = r->elements;
    *ids = imgq_xcalloc(r->elements + 1, sizeof(char *));
    for (size_t i = 0; i < r->elements; i++)
        (*ids)[i] = imgq_xstrdup(r->element[i]->str ? r->element[i]->str : "");
    freeReplyObject(r);
    return 0;
}

/* The jobs that have keys (a hash and a spec): out[i] stays NULL for the others. */
static int read_keyed(imgq_queue *q, char **ids, size_t n, json_t **out)
{
    const size_t window = 512;
    size_t sent = 0, got = 0;
    while (got < n) {
        while (sent < n && sent - got < window) {
            /* The hash, and the spec kept apart from it (lib.lua's key layout). */
            char jk[320];
            imgq_keys_job(&q->keys, ids[sent], jk, sizeof jk);
            if (redisAppendCommand(q->rc, "HGETALL %s", jk) != REDIS_OK ||
                redisAppendCommand(q->rc, "GET %s:s", jk) != REDIS_OK)
                goto fail;
            sent++;
        }
        redisReply *r = NULL, *s = NULL;
        if (redisGetReply(q->rc, (void **)&r) != REDIS_OK || !r || r->type != REDIS_REPLY_ARRAY ||
            redisGetReply(q->rc, (void **)&s) != REDIS_OK || !s) {
            if (r)
                freeReplyObject(r);
            if (s)
                freeReplyObject(s);
            goto fail;
        }
        out[got] = r->elements ? hash_to_json(r) : NULL;
        if (out[got]) {
            json_object_set_new(out[got], "id", json_string(ids[got]));
            json_t *spec = s->type == REDIS_REPLY_STRING ? json_loads(s->str, 0, NULL) : NULL;
            if (spec)
                json_object_set_new(out[got], "spec", spec);
            imgq_job_stored_defaults(json_object_get(out[got], "spec"));
        }
        freeReplyObject(r);
        freeReplyObject(s);
        got++;
    }
    return 0;
fail:
    for (size_t i = 0; i < got; i++) {
        json_decref(out[i]);
        out[i] = NULL;
    }
    /* The connection is out of step with its replies now; it is not reused after this. */
    return IMGQ_EREDIS;
}

/* A packed job's list entry, "ID␟CREATED␟TEAM␟MAX_ATTEMPTS␟SPEC" (src/lua/lib.lua), cut into
 * its five parts; false if it is a plain job id. */
struct packed {
    const char *part[5];
    size_t len[5];
};

static bool packed_parse(const char *e, size_t len, struct packed *p)
{
    const char *at = e, *end = e + len;
    for (int i = 0; i < 4; i++) {
        const char *sep = memchr(at, '\x1f', (size_t)(end - at));
        if (!sep)
            return false;
        p->part[i] = at;
        p->len[i] = (size_t)(sep - at);
        at = sep + 1;
    }
    p->part[4] = at;
    p->len[4] = (size_t)(end - at);
    return true;
}

static long long packed_number(const struct packed *p, int i)
{
    char buf[24];
    snprintf(buf, sizeof buf, "%.*s", (int)(p->len[i] < 23 ? p->len[i] : 23), p->part[i]);
    return strtoll(buf, NULL, 10);
}

/* The job as imgq_queue_jobs_info gives a queued job with keys. */
static json_t *packed_to_json(const struct packed *p, int prio, const char *batch)
{
    json_t *o = json_object();
    json_object_set_new(o, "state", json_string("queued"));
    json_object_set_new(o, "batch", json_string(batch));
    json_object_set_new(o, "team", json_stringn(p->part[2], p->len[2]));
    json_object_set_new(o, "prio", json_integer(prio));
    json_object_set_new(o, "attempts", json_integer(0));
    json_object_set_new(o, "max_attempts", json_integer(packed_number(p, 3)));
    json_object_set_new(o, "created", json_integer(packed_number(p, 1)));
    json_object_set_new(o, "cost", json_integer(0));
    json_object_set_new(o, "id", json_stringn(p->part[0], p->len[0]));
    json_t *spec = json_loadb(p->part[4], p->len[4], 0, NULL);
    if (spec) {
        imgq_job_stored_defaults(spec);
        json_object_set_new(o, "spec", spec);
    }
    return o;
}

/* One job looked for among a batch's packed jobs. */
struct wanted {
    const char *id;
    size_t at; /* its index in the caller's arrays */
};

static int wanted_cmp(const void *a, const void *b)
{
    return strcmp(((const struct wanted *)a)->id, ((const struct wanted *)b)->id);
}

/* One chunk of a batch's ready list at priority pr, from q->scan_at[pr]: the wanted jobs in it
 * get out[at] (and entry[at], prio[at] when entry is not NULL).  Returns how many entries it
 * read (0: the list is at its end or empty), or -1 (Redis error). */
static long long scan_chunk(imgq_queue *q, const char *list, int pr, const char *batch,
                            struct wanted *w, size_t nw, json_t **out, char **entry, int *prio,
                            long long *found, long long *last_hit)
{
    const long long chunk = 1000;
    long long pos = q->scan_at[pr];
    redisReply *r = redisCommand(q->rc, "LRANGE %s %lld %lld", list, pos, pos + chunk - 1);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        return -1;
    }
    size_t got = r->elements;
    for (size_t i = 0; i < got; i++) {
        const redisReply *e = r->element[i];
        struct packed p;
        if (e->type != REDIS_REPLY_STRING || !packed_parse(e->str, e->len, &p))
            continue;
        char id[IMGQ_JOB_ID_MAX];
        snprintf(id, sizeof id, "%.*s", (int)(p.len[0] < sizeof id ? p.len[0] : 0), p.part[0]);
        struct wanted key = {id, 0};
        struct wanted *hit = bsearch(&key, w, nw, sizeof *w, wanted_cmp);
        if (!hit || out[hit->at])
            continue;
        out[hit->at] = packed_to_json(&p, pr, batch);
        if (entry) {
            entry[hit->at] = imgq_xstrdup(e->str);
            prio[hit->at] = pr;
        }
        (*found)++;
        *last_hit = pos + (long long)i;
    }
    freeReplyObject(r);
    q->scan_at[pr] = pos + (long long)got;
    return (long long)got;
}

/* Where the wanted jobs (sorted by id) wait in batch's ready lists: out[at] gets the job, and
 * entry[at] and prio[at] (when entry is not NULL) its exact entry and priority.  The three
 * lists are read a chunk of each in turn, each from where the last search in this batch
 * stopped, around to there again, and no further once every job is found: listing a batch in
 * submission order reads each list about once, whatever its jobs' priorities.  A list that
 * ends or empties meanwhile is read from its head once more, then left.  Returns how many were
 * found, or -1 (Redis error). */
static long long find_packed(imgq_queue *q, const char *batch, struct wanted *w, size_t nw,
                             json_t **out, char **entry, int *prio)
{
    if (!q->scan_batch || strcmp(q->scan_batch, batch) != 0) {
        free(q->scan_batch);
        q->scan_batch = imgq_xstrdup(batch);
        memset(q->scan_at, 0, sizeof q->scan_at);
    }
    char list[3][512];
    long long left[3]; /* entries still to read in each list, from its length at the start */
    long long start[3], last_hit[3] = {-1, -1, -1};
    bool wrapped[3] = {false, false, false};
    for (int pr = 0; pr < 3; pr++) {
        snprintf(list[pr], sizeof list[pr], "%sq:%d:%s", q->keys.base, pr, batch);
        redisReply *r = redisCommand(q->rc, "LLEN %s", list[pr]);
        if (!r || r->type != REDIS_REPLY_INTEGER) {
            if (r)
                freeReplyObject(r);
            return -1;
        }
        left[pr] = r->integer;
        freeReplyObject(r);
        if (q->scan_at[pr] >= left[pr])
            q->scan_at[pr] = 0;
        start[pr] = q->scan_at[pr];
    }
    long long found = 0;
    for (bool more = true; more && (size_t)found < nw;) {
        more = false;
        for (int pr = 0; pr < 3 && (size_t)found < nw; pr++) {
            if (left[pr] <= 0)
                continue;
            long long got =
                scan_chunk(q, list[pr], pr, batch, w, nw, out, entry, prio, &found, &last_hit[pr]);
            if (got < 0)
                return -1;
            left[pr] -= got;
            if (got == 0) {
                /* At the list's end: around to its head, once; an empty list is done. */
                if (wrapped[pr] || q->scan_at[pr] == 0)
                    left[pr] = 0;
                wrapped[pr] = true;
                q->scan_at[pr] = 0;
            }
            more = more || left[pr] > 0;
        }
    }
    /* The next search starts right after the last job found in each list (the next chunk of
     * an in-order listing), or where this one started in a list that had none of them. */
    for (int pr = 0; pr < 3; pr++)
        q->scan_at[pr] = last_hit[pr] >= 0 ? last_hit[pr] + 1 : start[pr];
    return found;
}

/* The batch of each job still without out[] that the ids index knows, into batch[] (new
 * strings; NULL for unknown jobs). */
static int index_batches(imgq_queue *q, char **ids, size_t n, json_t **out, char **batch)
{
    char idx[320];
    snprintf(idx, sizeof idx, "%sids", q->keys.base);
    size_t asked = 0;
    for (size_t i = 0; i < n; i++)
        if (!out[i]) {
            if (redisAppendCommand(q->rc, "HGET %s %s", idx, ids[i]) != REDIS_OK)
                return IMGQ_EREDIS;
            asked++;
        }
    for (size_t i = 0; i < n && asked; i++) {
        if (out[i])
            continue;
        redisReply *r = NULL;
        if (redisGetReply(q->rc, (void **)&r) != REDIS_OK || !r) {
            if (r)
                freeReplyObject(r);
            return IMGQ_EREDIS;
        }
        asked--;
        if (r->type == REDIS_REPLY_STRING)
            batch[i] = imgq_xstrdup(r->str);
        freeReplyObject(r);
    }
    return 0;
}

/* read_keyed for the jobs still without out[]. */
static int read_keyed_missing(imgq_queue *q, char **ids, size_t n, json_t **out)
{
    char **sub = imgq_xcalloc(n ? n : 1, sizeof *sub);
    json_t **got = imgq_xcalloc(n ? n : 1, sizeof *got);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (!out[i])
            sub[m++] = ids[i];
    int rc = read_keyed(q, sub, m, got);
    for (size_t i = 0, k = 0; i < n && rc == 0; i++)
        if (!out[i])
            out[i] = got[k++];
    free(sub);
    free(got);
    return rc;
}

/* The packed jobs among ids (those still without out[]): found batch by batch. */
static int read_packed(imgq_queue *q, char **ids, size_t n, json_t **out, char **entry, int *prio)
{
    char **batch = imgq_xcalloc(n ? n : 1, sizeof *batch);
    struct wanted *w = imgq_xcalloc(n ? n : 1, sizeof *w);
    int rc = index_batches(q, ids, n, out, batch);
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (!batch[i] || out[i])
            continue;
        /* This job's batch, and every other job of it asked for here. */
        size_t nw = 0;
        for (size_t k = i; k < n; k++)
            if (batch[k] && !out[k] && strcmp(batch[k], batch[i]) == 0)
                w[nw++] = (struct wanted){ids[k], k};
        qsort(w, nw, sizeof *w, wanted_cmp);
        if (find_packed(q, batch[i], w, nw, out, entry, prio) < 0)
            rc = IMGQ_EREDIS;
        for (size_t k = 0; k < nw; k++)
            if (!out[w[k].at]) { /* not in the lists: it ran or ended meanwhile */
                free(batch[w[k].at]);
                batch[w[k].at] = NULL;
            }
    }
    for (size_t i = 0; i < n; i++)
        free(batch[i]);
    free(batch);
    free(w);
    return rc;
}

int imgq_queue_jobs_info(imgq_queue *q, char **ids, size_t n, json_t **out)
{
    int rc = read_keyed(q, ids, n, out);
    size_t missing = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        missing += !out[i];
    if (rc == 0 && missing)
        rc = read_packed(q, ids, n, out, NULL, NULL);
    /* A job claimed while its list was read has its keys now. */
    if (rc == 0 && missing)
        rc = read_keyed_missing(q, ids, n, out);
    if (rc) {
        for (size_t i = 0; i < n; i++) {
            json_decref(out[i]);
            out[i] = NULL;
        }
    }
    return rc;
}

int imgq_queue_cancel(imgq_queue *q, const char *scope, const char *id, long long *n, char *err,
                      size_t errlen)
{
    const char *args[2] = {scope, id};
    /* A packed job (-2) is cancelled by its exact entry; if it runs before that, as any job. */
    for (int tries = 0;; tries++) {
        json_t *reply = NULL;
        int rc = imgq_queue_script(q, IMGQ_SCRIPT_CANCEL, 2, args, &reply, err, errlen);
        if (rc)
            return rc;
        *n = json_integer_value(reply);
        json_decref(reply);
        if (*n != -2 || strcmp(scope, "job") != 0)
            return 0;
        if (tries == 3) {
            snprintf(err, errlen, "job %s: its entry in the ready list was not found", id);
            return IMGQ_EREDIS;
        }
        char *ids[1] = {(char *)id}, *entry[1] = {NULL};
        json_t *job[1] = {NULL};
        int prio[1] = {0};
        if (read_packed(q, ids, 1, job, entry, prio) != 0) {
            snprintf(err, errlen, "redis: %s", q->rc->errstr[0] ? q->rc->errstr : "read failed");
            return IMGQ_EREDIS;
        }
        if (!entry[0]) {
            json_decref(job[0]);
            continue; /* it ran meanwhile: cancel it as any job */
        }
        char pr[8];
        snprintf(pr, sizeof pr, "%d", prio[0]);
        const char *pargs[5] = {"packed", id, pr,
                                json_string_value(json_object_get(job[0], "batch")), entry[0]};
        rc = imgq_queue_script(q, IMGQ_SCRIPT_CANCEL, 5, pargs, &reply, err, errlen);
        json_decref(job[0]);
        free(entry[0]);
        if (rc)
            return rc;
        *n = json_integer_value(reply);
        json_decref(reply);
        return 0;
    }
}

int imgq_queue_job_control(imgq_queue *q, const char *action, const char *id, int *code,
                           char *state, size_t statelen, char *err, size_t errlen)
{
    const char *args[3] = {"job", action, id};
    int nargs = 3;
    char pr[8];
    const char *pargs[6] = {"packed", action, id, pr, NULL, NULL};
    json_t *job[1] = {NULL};
    char *entry[1] = {NULL};
    /* A packed job (-2) is paused by its exact entry; if it runs before that, as any job. */
    for (int tries = 0;; tries++) {
        json_t *reply = NULL;
        int rc = imgq_queue_script(q, IMGQ_SCRIPT_PAUSE, nargs, nargs == 3 ? args : pargs, &reply,
                                   err, errlen);
        json_decref(job[0]);
        free(entry[0]);
        job[0] = NULL;
        entry[0] = NULL;
        if (rc)
            return rc;
        *code = (int)json_integer_value(json_array_get(reply, 0));
        const char *st = json_string_value(json_array_get(reply, 1));
        snprintf(state, statelen, "%s", st ? st : "");
        json_decref(reply);
        if (*code != -2)
            return 0;
        if (tries == 3) {
            snprintf(err, errlen, "job %s: its entry in the ready list was not found", id);
            return IMGQ_EREDIS;
        }
        char *ids[1] = {(char *)id};
        int prio[1] = {0};
        if (read_packed(q, ids, 1, job, entry, prio) != 0) {
            snprintf(err, errlen, "redis: %s", q->rc->errstr[0] ? q->rc->errstr : "read failed");
            return IMGQ_EREDIS;
        }
        nargs = 3;
        if (entry[0]) { /* else it ran meanwhile: as any job */
            snprintf(pr, sizeof pr, "%d", prio[0]);
            pargs[4] = entry[0];
            nargs = 5;
        }
    }
}

int imgq_queue_job_info(imgq_queue *q, const char *job_id, json_t **out)
{
    char *ids[1] = {(char *)job_id};
    json_t *j[1] = {NULL};
    int rc = imgq_queue_jobs_info(q, ids, 1, j);
    if (rc)
        return rc;
    if (!j[0])
        return IMGQ_ENOTFOUND;
    *out = j[0];
    return 0;
}

static json_t *reply_to_json(const redisReply *r)
{
    switch (r->type) {
    case REDIS_REPLY_INTEGER:
        return json_integer(r->integer);
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
        return json_stringn(r->str, r->len);
    case REDIS_REPLY_ARRAY: {
        json_t *a = json_array();
        for (size_t i = 0; i < r->elements; i++)
            json_array_append_new(a, reply_to_json(r->element[i]));
        return a;
    }
    default:
        return json_null();
    }
}

int imgq_queue_script(imgq_queue *q, enum imgq_script_id id, int nargs, const char **args,
                      json_t **reply, char *err, size_t errlen)
{
    int rc = load_scripts(q, err, errlen);
    if (rc)
        return rc;
    struct argv a = {0};
    argv_add(&a, "EVALSHA");
    argv_add(&a, imgq_script_get(id)->sha);
    argv_add(&a, "1");
    argv_add(&a, q->keys.stats);
    argv_add(&a, q->keys.base);
    for (int i = 0; i < nargs; i++)
        argv_add(&a, args[i]);
    redisReply *r = redisCommandArgv(q->rc, (int)a.n, a.v, a.len);
    argv_free(&a);
    if (!r || r->type == REDIS_REPLY_ERROR) {
        rc = reply_error(r, q->rc, err, errlen);
        if (r)
            freeReplyObject(r);
        return rc;
    }
    if (reply)
        *reply = reply_to_json(r);
    freeReplyObject(r);
    return 0;
}

int imgq_queue_dead(imgq_queue *q, const char *batch, size_t limit, json_t **out)
{
    redisReply *r = redisCommand(q->rc, "ZREVRANGE %s 0 -1", q->keys.dead);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        return IMGQ_EREDIS;
    }
    size_t n = r->elements;
    char **ids = imgq_xcalloc(n + 1, sizeof *ids);
    for (size_t i = 0; i < n; i++)
        ids[i] = r->element[i]->str;
    json_t **jobs = imgq_xcalloc(n + 1, sizeof *jobs);
    int rc = imgq_queue_jobs_info(q, ids, n, jobs);
    json_t *arr = json_array();
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const char *b = json_string_value(json_object_get(jobs[i], "batch"));
        if (jobs[i] && (!batch || (b && strcmp(b, batch) == 0)) && json_array_size(arr) < limit)
            json_array_append(arr, jobs[i]);
        json_decref(jobs[i]);
    }
    free(jobs);
    free(ids);
    freeReplyObject(r);
    if (rc) {
        json_decref(arr);
        return rc;
    }
    *out = arr;
    return 0;
}
