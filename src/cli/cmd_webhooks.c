/*
 * cmd_webhooks.c - "imgq webhooks": the webhook outbox (what was sent where, what is waiting,
 * what failed) and the operator's levers on it.
 *
 *   imgq webhooks list [--state pending|delivered|failed|disabled] [--batch B] [--job J]
 *                      [--limit N] [--json]
 *       newest first (default 50): id, type, state, attempts, next or delivered time, what
 *       the last attempt got, URL; --json: one object per line.
 *   imgq webhooks show MSGID [--json]
 *       one message: its fields, its attempt log and its body (the exact bytes sent).
 *   imgq webhooks replay MSGID... | replay --state failed|disabled|delivered|pending
 *                                           [--since TIME]
 *       back to pending, due now, attempt count restarted, same webhook-id and body.
 *   imgq webhooks enable URL
 *       the endpoint takes messages again (after a 410).  Its disabled messages are not resent
 *       (as Stripe): "replay --state disabled" does that.
 *   imgq webhooks disabled [--json]
 *       the disabled endpoints, since when.
 *
 * Times are the queue's clock (imgq clock), printed in UTC.  Exit status: 0, 3 when a message
 * does not exist, 1 when an endpoint is not disabled or Redis fails, 2 for bad usage.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "cli.h"
#include "imgq/alloc.h"
#include "imgq/schedule.h"

#define USAGE                                                                                      \
    "usage: imgq webhooks list [--state pending|delivered|failed|disabled] [--batch B]\n"          \
    "                          [--job J] [--limit N] [--json]\n"                                   \
    "       imgq webhooks show MSGID [--json]\n"                                                   \
    "       imgq webhooks replay MSGID... | --state STATE [--since TIME]\n"                        \
    "       imgq webhooks enable URL\n"                                                            \
    "       imgq webhooks disabled [--json]\n"

#define PAGE 500         /* message ids read per round trip */
#define REPLAY_CHUNK 200 /* ids per replay script call */

static const char *const STATES[] = {"pending", "delivered", "failed", "disabled"};

/* The fields of a message that list reads, in HMGET order. */
static const char *const FIELDS[] = {"type",  "state",   "attempts", "url",       "job",
                                     "batch", "created", "next",     "delivered", "last"};
enum { F_TYPE, F_STATE, F_ATTEMPTS, F_URL, F_JOB, F_BATCH, F_CREATED, F_NEXT, F_DELIVERED, F_LAST };
#define NFIELDS (sizeof FIELDS / sizeof FIELDS[0])

#define usage_error(sub, ...) imgq__cli_usage_error("imgq webhooks", sub, USAGE, __VA_ARGS__)

static bool valid_state(const char *s)
{
    for (size_t i = 0; i < sizeof STATES / sizeof STATES[0]; i++)
        if (strcmp(s, STATES[i]) == 0)
            return true;
    return false;
}

/* ms since the epoch -> "2026-11-22 09:40:16" (UTC), or "-" for none. */
static const char *stamp(long long ms, char *buf, size_t len)
{
    if (ms <= 0) {
        snprintf(buf, len, "-");
        return buf;
    }
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm);
    return buf;
}

static long long field_ll(const redisReply *r)
{
    return r && r->type == REDIS_REPLY_STRING ? atoll(r->str) : 0;
}

static const char *field_str(const redisReply *r)
{
    return r && r->type == REDIS_REPLY_STRING ? r->str : NULL;
}

static int redis_failed(const char *cmd, redisContext *rc, redisReply *r)
{
    fprintf(stderr, "imgq webhooks %s: %s\n", cmd,
            r && r->type == REDIS_REPLY_ERROR ? r->str
            : rc->errstr[0]                   ? rc->errstr
                                              : "no reply");
    if (r)
        freeReplyObject(r);
    return IMGQ_EXIT_FAIL;
}

/* s for a table column, into buf: "-" for none, cut to len - 1 characters ending in "...",
 * without tabs or newlines. */
static const char *cut(const char *s, char *buf, size_t len)
{
    size_t n = s && *s ? strlen(s) : 0;
    if (!n)
        s = "-", n = 1;
    size_t k = 0;
    for (; k < n && k + 1 < len; k++) {
        char c = n >= len && k + 4 >= len ? '.' : s[k];
        buf[k] = c == '\t' || c == '\n' || c == '\r' ? ' ' : c;
    }
    buf[k] = '\0';
    return buf;
}

/* list ------------------------------------------------------------------------------------ */

struct list_opts {
    const char *state, *batch, *job;
    long limit;
    bool json;
};

/* One message as list prints it; h = the HMGET reply of FIELDS. */
static void list_line(const struct list_opts *o, const char *id, redisReply *h)
{
    const char *state = field_str(h->element[F_STATE]);
    long long when = state && strcmp(state, "delivered") == 0 ? field_ll(h->element[F_DELIVERED])
                     : state && strcmp(state, "pending") == 0 ? field_ll(h->element[F_NEXT])
                                                              : 0;
    if (o->json) {
        json_t *m = json_pack("{s:s}", "id", id);
        for (size_t i = 0; i < NFIELDS; i++) {
            const char *v = field_str(h->element[i]);
            if (!v)
                continue;
            bool num = i == F_ATTEMPTS || i == F_CREATED || i == F_NEXT || i == F_DELIVERED;
            json_object_set_new(m, FIELDS[i], num ? json_integer(atoll(v)) : json_string(v));
        }
        char *text = json_dumps(m, JSON_COMPACT);
        if (text)
            puts(text);
        free(text);
        json_decref(m);
        return;
    }
    char t[32], type[19], last[25], url[512];
    printf("%-28s %-18s %-9s %3lld  %-19s  %-24s  %s\n", id,
           cut(field_str(h->element[F_TYPE]), type, sizeof type), state ? state : "-",
           field_ll(h->element[F_ATTEMPTS]), stamp(when, t, sizeof t),
           cut(field_str(h->element[F_LAST]), last, sizeof last),
           cut(field_str(h->element[F_URL]), url, sizeof url));
}

static bool matches(const struct list_opts *o, redisReply *h)
{
    const char *state = field_str(h->element[F_STATE]);
    const char *batch = field_str(h->element[F_BATCH]);
    const char *job = field_str(h->element[F_JOB]);
    if (!state)
        return false; /* deleted meanwhile */
    return (!o->state || strcmp(state, o->state) == 0) &&
           (!o->batch || (batch && strcmp(batch, o->batch) == 0)) &&
           (!o->job || (job && strcmp(job, o->job) == 0));
}

static int cmd_list(int argc, char **argv)
{
    struct list_opts o = {.limit = 50};
    static const char *const flags[] = {"json", "state=", "batch=", "job=", "limit=", NULL};
    static const struct imgq_cli_cmd cmd = {"imgq webhooks list", USAGE, flags, 0, 0, NULL};
    struct imgq_cli_args a;
    int pst = imgq__cli_parse(&cmd, argc, argv, &a);
    if (pst >= 0)
        return pst;
    o.json = imgq__cli_set(&a, "json");
    o.state = imgq__cli_opt(&a, "state");
    if (o.state && !valid_state(o.state))
        return usage_error("list", "--state '%s': pending, delivered, failed or disabled", o.state);
    o.batch = imgq__cli_opt(&a, "batch");
    o.job = imgq__cli_opt(&a, "job");
    const char *v = imgq__cli_opt(&a, "limit");
    if (v) {
        char *end;
        o.limit = strtol(v, &end, 10);
        if (*end || end == v || o.limit < 1 || o.limit > 1000000)
            return usage_error("list", "--limit '%s': a number from 1 to 1000000", v);
    }
    imgq_queue *q = imgq__cli_queue();
    if (!q)
        return IMGQ_EXIT_FAIL;
    redisContext *rc = imgq_queue_redis(q);
    const char *base = imgq_queue_keys(q)->base;
    if (!o.json)
        printf("%-28s %-18s %-9s %3s  %-19s  %-24s  %s\n", "ID", "TYPE", "STATE", "ATT",
               "NEXT/DELIVERED (UTC)", "LAST", "URL");
    long shown = 0;
    for (long start = 0; shown < o.limit; start += PAGE) {
        redisReply *ids =
            redisCommand(rc, "ZREVRANGE %swhlog %ld %ld", base, start, start + PAGE - 1);
        if (!ids || ids->type != REDIS_REPLY_ARRAY)
            return redis_failed("list", rc, ids);
        if (ids->elements == 0) {
            freeReplyObject(ids);
            break;
        }
        /* One pipelined HMGET per message of the page. */
        for (size_t i = 0; i < ids->elements; i++) {
            const char *argvv[2 + NFIELDS];
            char key[512];
            snprintf(key, sizeof key, "%swhm:%s", base, ids->element[i]->str);
            argvv[0] = "HMGET";
            argvv[1] = key;
            for (size_t f = 0; f < NFIELDS; f++)
                argvv[2 + f] = FIELDS[f];
            redisAppendCommandArgv(rc, (int)(2 + NFIELDS), argvv, NULL);
        }
        int st = 0;
        for (size_t i = 0; i < ids->elements; i++) {
            void *vr = NULL;
            if (redisGetReply(rc, &vr) != REDIS_OK || !vr) {
                st = redis_failed("list", rc, NULL);
                break;
            }
            redisReply *h = vr;
            if (h->type == REDIS_REPLY_ARRAY && h->elements == NFIELDS && shown < o.limit &&
                matches(&o, h)) {
                list_line(&o, ids->element[i]->str, h);
                shown++;
            }
            freeReplyObject(h);
        }
        freeReplyObject(ids);
        if (st)
            return st;
    }
    return fflush(stdout) == 0 ? IMGQ_EXIT_OK : IMGQ_EXIT_FAIL;
}

/* show ------------------------------------------------------------------------------------ */

static int cmd_show(int argc, char **argv)
{
    static const char *const flags[] = {"json", NULL};
    static const struct imgq_cli_cmd cmd = {
        "imgq webhooks show",
        USAGE,
        flags,
        1,
        1,
        "MSGID: which message? (imgq webhooks list shows their ids)"};
    struct imgq_cli_args a;
    int pst = imgq__cli_parse(&cmd, argc, argv, &a);
    if (pst >= 0)
        return pst;
    const char *id = a.args[0];
    bool json = imgq__cli_set(&a, "json");
    imgq_queue *q = imgq__cli_queue();
    if (!q)
        return IMGQ_EXIT_FAIL;
    redisContext *rc = imgq_queue_redis(q);
    const char *base = imgq_queue_keys(q)->base;
    redisReply *r = redisCommand(rc, "HGETALL %swhm:%s", base, id);
    if (!r || r->type != REDIS_REPLY_ARRAY)
        return redis_failed("show", rc, r);
    if (r->elements == 0) {
        freeReplyObject(r);
        fprintf(stderr, "imgq webhooks show: no message %s\n", id);
        return IMGQ_EXIT_NOTFOUND;
    }
    json_t *m = json_pack("{s:s}", "id", id);
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const char *k = r->element[i]->str;
        const redisReply *v = r->element[i + 1];
        json_t *jv;
        if (!strcmp(k, "attempt_log")) {
            jv = json_loadb(v->str, v->len, 0, NULL);
            if (!jv)
                jv = json_array();
        } else if (!strcmp(k, "attempts") || !strcmp(k, "created") || !strcmp(k, "next") ||
                   !strcmp(k, "delivered")) {
            jv = json_integer(atoll(v->str));
        } else {
            jv = json_stringn(v->str, v->len); /* the body stays the exact bytes sent */
        }
        json_object_set_new(m, k, jv ? jv : json_null());
    }
    freeReplyObject(r);
    const char *url = json_string_value(json_object_get(m, "url"));
    r = redisCommand(rc, "HGET %swhoff %s", base, url ? url : "");
    if (r && r->type == REDIS_REPLY_STRING)
        json_object_set_new(m, "endpoint_disabled", json_integer(atoll(r->str)));
    if (r)
        freeReplyObject(r);

    if (json) {
        char *text = json_dumps(m, JSON_COMPACT);
        if (text)
            puts(text);
        free(text);
    } else {
        char t[32];
        static const char *const plain[] = {"id", "type", "state", "url", "job", "batch", "last"};
        for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++) {
            const char *v = json_string_value(json_object_get(m, plain[i]));
            if (v && *v)
                printf("%-10s %s\n", plain[i], v);
        }
        printf("%-10s %lld\n", "attempts",
               (long long)json_integer_value(json_object_get(m, "attempts")));
        static const char *const times[] = {"created", "next", "delivered", "endpoint_disabled"};
        for (size_t i = 0; i < sizeof times / sizeof times[0]; i++) {
            json_int_t v = json_integer_value(json_object_get(m, times[i]));
            if (v > 0)
                printf("%-10s %s UTC\n", i == 3 ? "disabled" : times[i], stamp(v, t, sizeof t));
        }
        json_t *log = json_object_get(m, "attempt_log");
        size_t i;
        json_t *e;
        if (json_array_size(log))
            printf("attempts (oldest first):\n");
        json_array_foreach(log, i, e)
        {
            json_int_t st = json_integer_value(json_object_get(e, "status"));
            const char *err = json_string_value(json_object_get(e, "error"));
            const char *outcome = json_string_value(json_object_get(e, "outcome"));
            json_int_t next = json_integer_value(json_object_get(e, "next"));
            json_int_t when = json_integer_value(json_object_get(e, "t"));
            printf("  %s  %-8s %6lld ms", stamp(when, t, sizeof t), outcome ? outcome : "-",
                   (long long)json_integer_value(json_object_get(e, "ms")));
            if (st)
                printf("  HTTP %lld", (long long)st);
            if (err && *err)
                printf("  %s", err);
            if (next > 0)
                printf("  (next %s)", stamp(next, t, sizeof t));
            putchar('\n');
        }
        const char *body = json_string_value(json_object_get(m, "body"));
        printf("body:\n%s\n", body ? body : "");
    }
    json_decref(m);
    return fflush(stdout) == 0 ? IMGQ_EXIT_OK : IMGQ_EXIT_FAIL;
}

/* replay, enable, disabled ------------------------------------------------------------------ */

/* Replay ids[0..n) with the webhook script, in chunks; warns about URLs still disabled. */
static int replay_ids(imgq_queue *q, char **ids, size_t n)
{
    size_t done = 0;
    for (size_t off = 0; off < n; off += REPLAY_CHUNK) {
        size_t k = n - off < REPLAY_CHUNK ? n - off : REPLAY_CHUNK;
        const char **args = imgq_xcalloc(k + 1, sizeof *args);
        args[0] = "replay";
        for (size_t i = 0; i < k; i++)
            args[1 + i] = ids[off + i];
        json_t *reply = NULL;
        char err[512];
        int rc =
            imgq_queue_script(q, IMGQ_SCRIPT_WEBHOOK, (int)(k + 1), args, &reply, err, sizeof err);
        free(args);
        if (rc) {
            fprintf(stderr, "imgq webhooks replay: %s\n", err);
            return IMGQ_EXIT_FAIL;
        }
        json_t *missing = json_array_get(reply, 1), *off_urls = json_array_get(reply, 2);
        size_t i;
        json_t *v;
        json_array_foreach(missing, i, v)
            fprintf(stderr, "imgq webhooks replay: no message %s\n", json_string_value(v));
        json_array_foreach(off_urls, i, v)
            fprintf(stderr,
                    "imgq webhooks replay: warning: %s is disabled: its messages become disabled "
                    "again unless you run imgq webhooks enable %s\n",
                    json_string_value(v), json_string_value(v));
        int missing_n = (int)json_array_size(missing);
        done += (size_t)json_integer_value(json_array_get(reply, 0));
        json_decref(reply);
        if (missing_n) {
            if (done)
                printf("replayed %zu messages\n", done);
            return IMGQ_EXIT_NOTFOUND;
        }
    }
    printf("replayed %zu messages\n", done);
    return IMGQ_EXIT_OK;
}

static int cmd_replay(int argc, char **argv)
{
    static const char *const flags[] = {"state=", "since=", NULL};
    static const struct imgq_cli_cmd cmd = {"imgq webhooks replay", USAGE, flags, 0, -1, NULL};
    struct imgq_cli_args a;
    int st = imgq__cli_parse(&cmd, argc, argv, &a);
    if (st >= 0)
        return st;
    const char *state = imgq__cli_opt(&a, "state"), *since = imgq__cli_opt(&a, "since");
    char **ids = imgq_xcalloc((size_t)a.nargs + 1, sizeof *ids);
    size_t n = 0;
    for (int i = 0; i < a.nargs; i++)
        ids[n++] = a.args[i];
    if ((n > 0) == (state != NULL) || (since && !state)) {
        st = usage_error("replay", "give message ids, or --state STATE [--since TIME]");
        goto out;
    }
    if (state && !valid_state(state)) {
        st = usage_error("replay", "--state '%s': pending, delivered, failed or disabled", state);
        goto out;
    }
    imgq_queue *q = imgq__cli_queue();
    if (!q) {
        st = IMGQ_EXIT_FAIL;
        goto out;
    }
    if (state) {
        redisContext *rc = imgq_queue_redis(q);
        const char *base = imgq_queue_keys(q)->base;
        int64_t now = 0, from = 0;
        char why[256];
        if (since && (imgq_queue_now_ms(q, &now) != 0 ||
                      imgq_time_parse(since, NULL, now, &from, why, sizeof why) != 0)) {
            st = usage_error("replay", "--since '%s': %s", since, now ? why : "no queue clock");
            goto out;
        }
        /* Oldest first, so that receivers get them in the order they were written. */
        redisReply *r = redisCommand(rc, "ZRANGEBYSCORE %swhlog %lld +inf", base, (long long)from);
        if (!r || r->type != REDIS_REPLY_ARRAY) {
            st = redis_failed("replay", rc, r);
            goto out;
        }
        for (size_t i = 0; i < r->elements; i++)
            redisAppendCommand(rc, "HGET %swhm:%s state", base, r->element[i]->str);
        free(ids);
        ids = imgq_xcalloc(r->elements + 1, sizeof *ids);
        for (size_t i = 0; i < r->elements; i++) {
            void *vr = NULL;
            if (redisGetReply(rc, &vr) != REDIS_OK || !vr) {
                for (size_t j = 0; j < n; j++)
                    free(ids[j]);
                freeReplyObject(r);
                st = redis_failed("replay", rc, NULL);
                goto out;
            }
            redisReply *s = vr;
            if (s->type == REDIS_REPLY_STRING && strcmp(s->str, state) == 0)
                ids[n++] = imgq_xstrdup(r->element[i]->str);
            freeReplyObject(s);
        }
        freeReplyObject(r);
        st = replay_ids(q, ids, n);
        for (size_t j = 0; j < n; j++)
            free(ids[j]);
        goto out;
    }
    st = replay_ids(q, ids, n);
out:
    free(ids);
    return st;
}

static int cmd_enable(int argc, char **argv)
{
    static const struct imgq_cli_cmd cmd = {
        "imgq webhooks enable",
        USAGE,
        NULL,
        1,
        1,
        "URL: give the endpoint URL (imgq webhooks disabled lists them)"};
    struct imgq_cli_args a;
    int st = imgq__cli_parse(&cmd, argc, argv, &a);
    if (st >= 0)
        return st;
    argv = a.args - 1; /* argv[1]: the URL, as below */
    imgq_queue *q = imgq__cli_queue();
    if (!q)
        return IMGQ_EXIT_FAIL;
    const char *args[2] = {"enable", argv[1]};
    json_t *reply = NULL;
    char err[512];
    if (imgq_queue_script(q, IMGQ_SCRIPT_WEBHOOK, 2, args, &reply, err, sizeof err) != 0) {
        fprintf(stderr, "imgq webhooks enable: %s\n", err);
        return IMGQ_EXIT_FAIL;
    }
    json_int_t n = json_integer_value(reply);
    json_decref(reply);
    if (n == 0) {
        fprintf(stderr, "imgq webhooks enable: %s is not disabled\n", argv[1]);
        return IMGQ_EXIT_FAIL;
    }
    printf("enabled %s (its disabled messages are not resent: imgq webhooks replay --state "
           "disabled)\n",
           argv[1]);
    return IMGQ_EXIT_OK;
}

static int cmd_disabled(int argc, char **argv)
{
    static const char *const flags[] = {"json", NULL};
    static const struct imgq_cli_cmd cmd = {"imgq webhooks disabled", USAGE, flags, 0, 0, NULL};
    struct imgq_cli_args a;
    int st = imgq__cli_parse(&cmd, argc, argv, &a);
    if (st >= 0)
        return st;
    bool json = imgq__cli_set(&a, "json");
    imgq_queue *q = imgq__cli_queue();
    if (!q)
        return IMGQ_EXIT_FAIL;
    redisContext *rc = imgq_queue_redis(q);
    redisReply *r = redisCommand(rc, "HGETALL %swhoff", imgq_queue_keys(q)->base);
    if (!r || r->type != REDIS_REPLY_ARRAY)
        return redis_failed("disabled", rc, r);
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        long long since = atoll(r->element[i + 1]->str);
        if (json) {
            json_t *o =
                json_pack("{s:s, s:I}", "url", r->element[i]->str, "since", (json_int_t)since);
            char *text = json_dumps(o, JSON_COMPACT);
            if (text)
                puts(text);
            free(text);
            json_decref(o);
        } else {
            char t[32];
            printf("%s  (since %s UTC)\n", r->element[i]->str, stamp(since, t, sizeof t));
        }
    }
    freeReplyObject(r);
    return fflush(stdout) == 0 ? IMGQ_EXIT_OK : IMGQ_EXIT_FAIL;
}

int imgq_cmd_webhooks(int argc, char **argv)
{
    static const struct imgq_cli_sub subs[] = {{"list", cmd_list},         {"show", cmd_show},
                                               {"replay", cmd_replay},     {"enable", cmd_enable},
                                               {"disabled", cmd_disabled}, {NULL, NULL}};
    return imgq__cli_dispatch("imgq webhooks", USAGE, subs, argc, argv);
}
