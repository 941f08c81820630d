/*
 * cmd_report.c - imgq report: where the money went, from the ledger.
 *
 * The worker appends one entry per provider call it settles to the stream P:{Q}:ledger (job,
 * batch, team, attempt, call, key, model, route, cost in micros, reason usage | ceiling |
 * failure | lost, usage, request_id, t in ms of the queue's clock) and adds each cost to the
 * counter P:{Q}:spent (hash field "total"; a plain string counter is read too).  The report
 * groups the entries by model, team, batch, day (in --tz, default UTC) or route, keeps those
 * whose t is in [--since, --until), and prints per group:
 *
 *   calls     ledger entries (provider calls settled)
 *   images    images accepted: the images stored by the group's jobs that ended 'done' (the
 *             length of the 'images' array of the job's result).  A job's images count once,
 *             in the group of its last usage or ceiling entry in the range (the call that
 *             produced them); a job deleted after the retention no longer counts, and the
 *             report says how many such jobs it met.  The drafts of a pipeline (jobs with a
 *             parent) are not accepted images: their spend counts, so "per image" is the cost
 *             per accepted asset, drafts included.
 *   spend     sum of cost
 *   failures  entries with reason failure or lost, and their cost (what failures were charged)
 *   per image spend / images, rounded half up to the micro-dollar
 *   dedup     what jobs served from already stored images would have cost (ledger entries
 *             with reason dedup, cost 0, usage {"saved_micros": N}); they are not calls
 *
 * Without --since/--until the total is checked against P:{Q}:spent to the micro-dollar, and a
 * warning line is printed when they differ.  The stream is read with XRANGE ... COUNT 1000, so
 * the entries are never all in memory; what the report keeps is one small record per group
 * and per distinct job (its id and group, to count its images once).
 */
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "imgq/alloc.h"
#include "imgq/quote.h"
#include "imgq/schedule.h"

#define CHUNK 1000 /* stream entries per XRANGE, job hashes per pipelined round trip */

/* ---- a string -> index map (open addressing) ---------------------------------------------- */

struct smap {
    char **keys;
    size_t *vals;
    size_t cap, n;
};

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static void smap_grow(struct smap *m);

/* The slot of key: found (*found = 1) or where it would go. */
static size_t smap_slot(const struct smap *m, const char *key, int *found)
{
    size_t i = (size_t)hash_str(key) & (m->cap - 1);
    while (m->keys[i]) {
        if (strcmp(m->keys[i], key) == 0) {
            *found = 1;
            return i;
        }
        i = (i + 1) & (m->cap - 1);
    }
    *found = 0;
    return i;
}

/* Set key to val; returns the stored value's address. */
static size_t *smap_put(struct smap *m, const char *key, size_t val)
{
    if ((m->n + 1) * 2 > m->cap)
        smap_grow(m);
    int found;
    size_t i = smap_slot(m, key, &found);
    if (!found) {
        m->keys[i] = imgq_xstrdup(key);
        m->n++;
    }
    m->vals[i] = val;
    return &m->vals[i];
}

static size_t *smap_get(const struct smap *m, const char *key)
{
    if (!m->cap)
        return NULL;
    int found;
    size_t i = smap_slot(m, key, &found);
    return found ? &m->vals[i] : NULL;
}

static void smap_grow(struct smap *m)
{
    struct smap old = *m;
    m->cap = old.cap ? old.cap * 2 : 64;
    m->keys = imgq_xcalloc(m->cap, sizeof *m->keys);
    m->vals = imgq_xcalloc(m->cap, sizeof *m->vals);
    m->n = 0;
    for (size_t i = 0; i < old.cap; i++)
        if (old.keys[i]) {
            int found;
            size_t j = smap_slot(m, old.keys[i], &found);
            m->keys[j] = old.keys[i];
            m->vals[j] = old.vals[i];
            m->n++;
        }
    free(old.keys);
    free(old.vals);
}

static void smap_clear(struct smap *m)
{
    for (size_t i = 0; i < m->cap; i++)
        free(m->keys[i]);
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

/* ---- groups ------------------------------------------------------------------------------ */

struct group {
    char *key;
    int64_t calls, images, failures;
    imgq_micros spend, failure_cost, dedup_saved;
};

struct report {
    const char *by;
    struct group *groups;
    size_t ngroups, capgroups;
    struct smap index; /* group key -> position in groups */
    struct smap jobs;  /* job id -> 1 + group of its last usage/ceiling entry */
    struct group total;
    int64_t malformed, jobs_missing;
};

static size_t group_of(struct report *r, const char *key)
{
    size_t *i = smap_get(&r->index, key);
    if (i)
        return *i;
    if (r->ngroups == r->capgroups) {
        r->capgroups = r->capgroups ? r->capgroups * 2 : 16;
        r->groups = imgq_xrealloc(r->groups, r->capgroups * sizeof *r->groups);
    }
    struct group *g = &r->groups[r->ngroups];
    memset(g, 0, sizeof *g);
    g->key = imgq_xstrdup(key);
    smap_put(&r->index, key, r->ngroups);
    return r->ngroups++;
}

/* A field of an entry's flat [field, value, ...] array, or "" when absent. */
static const char *field(const redisReply *kv, const char *name)
{
    for (size_t i = 0; i + 1 < kv->elements; i += 2)
        if (kv->element[i]->type == REDIS_REPLY_STRING && strcmp(kv->element[i]->str, name) == 0)
            return kv->element[i + 1]->type == REDIS_REPLY_STRING ? kv->element[i + 1]->str : "";
    return "";
}

static int parse_i64(const char *s, int64_t *out)
{
    if (!*s)
        return -1;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*end)
        return -1;
    *out = v;
    return 0;
}

/* One ledger entry into the report; the group key for 'day' is its date in the current TZ. */
static void add_entry(struct report *r, const redisReply *kv, int64_t since, int64_t until,
                      int filtered)
{
    int64_t t = 0, cost = 0;
    int t_ok = parse_i64(field(kv, "t"), &t) == 0;
    if (parse_i64(field(kv, "cost"), &cost) != 0) {
        r->malformed++;
        cost = 0;
    }
    if (filtered && (!t_ok || t < since || t >= until))
        return;
    char day[16];
    const char *key;
    if (strcmp(r->by, "day") == 0) {
        if (t_ok) {
            time_t secs = (time_t)(t / 1000);
            struct tm tm;
            localtime_r(&secs, &tm);
            strftime(day, sizeof day, "%Y-%m-%d", &tm);
        } else {
            snprintf(day, sizeof day, "(no time)");
        }
        key = day;
    } else {
        key = field(kv, r->by);
        if (!*key)
            key = "(none)";
    }
    size_t gi = group_of(r, key);
    struct group *g = &r->groups[gi];
    const char *reason = field(kv, "reason");
    if (strcmp(reason, "dedup") == 0) {
        /* A job served from stored images: no call, $0, and what it would have cost. */
        json_t *u = json_loads(field(kv, "usage"), 0, NULL);
        json_t *sv = json_object_get(u, "saved_micros");
        imgq_micros saved = json_is_integer(sv) ? json_integer_value(sv) : 0;
        json_decref(u);
        g->dedup_saved += saved;
        r->total.dedup_saved += saved;
        const char *djob = field(kv, "job");
        if (*djob)
            smap_put(&r->jobs, djob, gi + 1);
        return;
    }
    int failure = strcmp(reason, "failure") == 0 || strcmp(reason, "lost") == 0;
    g->calls++;
    g->spend += cost;
    r->total.calls++;
    r->total.spend += cost;
    if (failure) {
        g->failures++;
        g->failure_cost += cost;
        r->total.failures++;
        r->total.failure_cost += cost;
    }
    const char *job = field(kv, "job");
    if (*job && (strcmp(reason, "usage") == 0 || strcmp(reason, "ceiling") == 0))
        smap_put(&r->jobs, job, gi + 1);
}

/* Read the ledger in chunks.  0, or IMGQ_EREDIS with a message printed. */
static int read_ledger(redisContext *rc, const char *key, struct report *r, int64_t since,
                       int64_t until, int filtered)
{
    char start[64] = "-";
    for (;;) {
        redisReply *rep = redisCommand(rc, "XRANGE %s %s + COUNT %d", key, start, CHUNK);
        if (!rep || rep->type != REDIS_REPLY_ARRAY) {
            fprintf(stderr, "imgq report: XRANGE %s: %s\n", key,
                    rep && rep->type == REDIS_REPLY_ERROR ? rep->str
                    : rc->errstr[0]                       ? rc->errstr
                                                          : "no reply");
            if (rep)
                freeReplyObject(rep);
            return IMGQ_EREDIS;
        }
        size_t n = rep->elements;
        for (size_t i = 0; i < n; i++) {
            const redisReply *e = rep->element[i];
            if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
                e->element[0]->type != REDIS_REPLY_STRING ||
                e->element[1]->type != REDIS_REPLY_ARRAY) {
                r->malformed++;
                continue;
            }
            add_entry(r, e->element[1], since, until, filtered);
            if (i + 1 == n)
                snprintf(start, sizeof start, "(%s", e->element[0]->str);
        }
        freeReplyObject(rep);
        if (n < CHUNK)
            return 0;
    }
}

/* Images of one job hash reply [state, result, parent]: the result's images if it is done
 * and not a pipeline's drafts. */
static int64_t done_images(const redisReply *h, int *missing)
{
    *missing = 0;
    if (h->type != REDIS_REPLY_ARRAY || h->elements < 2)
        return 0;
    if (h->element[0]->type != REDIS_REPLY_STRING) {
        *missing = 1;
        return 0;
    }
    if (strcmp(h->element[0]->str, "done") != 0 || h->element[1]->type != REDIS_REPLY_STRING ||
        (h->elements >= 3 && h->element[2]->type == REDIS_REPLY_STRING))
        return 0;
    json_t *res = json_loads(h->element[1]->str, 0, NULL);
    int64_t n = (int64_t)json_array_size(json_object_get(res, "images"));
    json_decref(res);
    return n;
}

/* Count the images of every job seen, CHUNK job hashes per round trip. */
static int count_images(redisContext *rc, const struct imgq_keys *k, struct report *r)
{
    size_t *slots = imgq_xmalloc(CHUNK * sizeof *slots);
    int ret = 0;
    size_t i = 0;
    while (i < r->jobs.cap && ret == 0) {
        size_t n = 0;
        for (; i < r->jobs.cap && n < CHUNK; i++) {
            if (!r->jobs.keys[i])
                continue;
            char jk[512];
            imgq_keys_job(k, r->jobs.keys[i], jk, sizeof jk);
            redisAppendCommand(rc, "HMGET %s state result parent", jk);
            slots[n++] = i;
        }
        for (size_t j = 0; j < n; j++) {
            redisReply *rep = NULL;
            if (redisGetReply(rc, (void **)&rep) != REDIS_OK || !rep) {
                fprintf(stderr, "imgq report: reading jobs: %s\n", rc->errstr);
                ret = IMGQ_EREDIS;
                break;
            }
            int missing;
            int64_t imgs = done_images(rep, &missing);
            freeReplyObject(rep);
            r->jobs_missing += missing;
            struct group *g = &r->groups[r->jobs.vals[slots[j]] - 1];
            g->images += imgs;
            r->total.images += imgs;
        }
    }
    free(slots);
    return ret;
}

/* P:{Q}:spent: hash field "total", or a plain integer string; 0 when absent. */
static int read_spent(redisContext *rc, const char *key, int64_t *out)
{
    *out = 0;
    redisReply *t = redisCommand(rc, "TYPE %s", key);
    if (!t || t->type != REDIS_REPLY_STATUS) {
        if (t)
            freeReplyObject(t);
        return IMGQ_EREDIS;
    }
    int hash = strcmp(t->str, "hash") == 0, none = strcmp(t->str, "none") == 0;
    freeReplyObject(t);
    if (none)
        return 0;
    redisReply *v = hash ? redisCommand(rc, "HGET %s total", key) : redisCommand(rc, "GET %s", key);
    int rc2 = 0;
    if (!v || (v->type != REDIS_REPLY_STRING && v->type != REDIS_REPLY_NIL))
        rc2 = IMGQ_EREDIS;
    else if (v->type == REDIS_REPLY_STRING && parse_i64(v->str, out) != 0)
        rc2 = IMGQ_EPARSE;
    if (v)
        freeReplyObject(v);
    return rc2;
}

static int by_key(const void *a, const void *b)
{
    return strcmp(((const struct group *)a)->key, ((const struct group *)b)->key);
}

/* spend / images, half up; -1 without images. */
static imgq_micros per_image(const struct group *g)
{
    if (g->images <= 0)
        return -1;
    return (g->spend + g->images / 2) / g->images;
}

static void print_text(const char *name, const struct group *g)
{
    char calls[32], images[32], fails[32], spend[48], fcost[48], per[48] = "-", dedup[48];
    imgq__cli_grouped(g->calls, calls, sizeof calls);
    imgq__cli_grouped(g->images, images, sizeof images);
    imgq__cli_grouped(g->failures, fails, sizeof fails);
    imgq_quote_money(g->spend, spend, sizeof spend);
    imgq_quote_money(g->failure_cost, fcost, sizeof fcost);
    if (per_image(g) >= 0)
        imgq_quote_money(per_image(g), per, sizeof per);
    imgq_quote_money(g->dedup_saved, dedup, sizeof dedup);
    printf("%-28s %9s %9s %16s %9s %14s %12s %12s\n", name, calls, images, spend, fails, fcost, per,
           dedup);
}

/* CSV: a field quoted when it needs it. */
static void csv_field(const char *s)
{
    if (!strpbrk(s, ",\"\r\n")) {
        fputs(s, stdout);
        return;
    }
    putchar('"');
    for (; *s; s++) {
        if (*s == '"')
            putchar('"');
        putchar(*s);
    }
    putchar('"');
}

static void print_csv(const char *name, const struct group *g)
{
    csv_field(name);
    printf(",%" PRId64 ",%" PRId64 ",%" PRId64 ",%" PRId64 ",%" PRId64 ",", g->calls, g->images,
           g->spend, g->failures, g->failure_cost);
    if (per_image(g) >= 0)
        printf("%" PRId64, per_image(g));
    printf(",%" PRId64 "\n", g->dedup_saved);
}

static json_t *group_json(const char *by, const struct group *g)
{
    char spend[48], fcost[48], per[48];
    imgq_quote_money(g->spend, spend, sizeof spend);
    imgq_quote_money(g->failure_cost, fcost, sizeof fcost);
    json_t *o = json_object();
    if (by)
        json_object_set_new(o, by, json_string(g->key));
    json_object_set_new(o, "calls", json_integer(g->calls));
    json_object_set_new(o, "images", json_integer(g->images));
    json_object_set_new(o, "spend_micros", json_integer(g->spend));
    json_object_set_new(o, "spend", json_string(spend));
    json_object_set_new(o, "failures", json_integer(g->failures));
    json_object_set_new(o, "failure_micros", json_integer(g->failure_cost));
    json_object_set_new(o, "failure", json_string(fcost));
    if (per_image(g) >= 0) {
        imgq_quote_money(per_image(g), per, sizeof per);
        json_object_set_new(o, "per_image_micros", json_integer(per_image(g)));
        json_object_set_new(o, "per_image", json_string(per));
    } else {
        json_object_set_new(o, "per_image_micros", json_null());
        json_object_set_new(o, "per_image", json_null());
    }
    json_object_set_new(o, "dedup_saved_micros", json_integer(g->dedup_saved));
    return o;
}

/* A --since/--until value: a TIME of imgq_time_parse, or a date YYYY-MM-DD (its midnight). */
static int report_time(const char *s, const char *tz, int64_t now_ms, int64_t *out, char *why,
                       size_t whylen)
{
    int y, mo, d;
    char rest;
    if (strlen(s) == 10 && sscanf(s, "%4d-%2d-%2d%c", &y, &mo, &d, &rest) == 3) {
        char full[32];
        snprintf(full, sizeof full, "%sT00:00:00", s);
        return imgq_time_parse(full, tz, now_ms, out, why, whylen);
    }
    return imgq_time_parse(s, tz, now_ms, out, why, whylen);
}

static void iso(int64_t ms, char *buf, size_t len)
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int imgq_cmd_report(int argc, char **argv)
{
    const char *by = "model", *since_s = NULL, *until_s = NULL, *tz = "UTC";
    int json = 0, csv = 0;
    static const char *const flags[] = {"by=", "since=", "until=", "tz=", "json", "csv", NULL};
    static const struct imgq_cli_cmd cmd = {
        "imgq report",
        "usage: imgq report [--by model|team|batch|day|route] [--since T] [--until T] "
        "[--tz ZONE] [--json|--csv]\n"
        "  spend from the ledger, checked against the total\n"
        "T: 2026-06-01, 2026-06-01T12:00:00Z, or local 2026-06-01T12:00 (--tz)\n",
        flags,
        0,
        0,
        NULL};
    struct imgq_cli_args opt;
    int st = imgq__cli_parse(&cmd, argc, argv, &opt);
    if (st >= 0)
        return st;
    if (imgq__cli_opt(&opt, "by"))
        by = imgq__cli_opt(&opt, "by");
    since_s = imgq__cli_opt(&opt, "since");
    until_s = imgq__cli_opt(&opt, "until");
    if (imgq__cli_opt(&opt, "tz"))
        tz = imgq__cli_opt(&opt, "tz");
    json = imgq__cli_set(&opt, "json");
    csv = imgq__cli_set(&opt, "csv");
    static const char *dims[] = {"model", "team", "batch", "day", "route"};
    int dim_ok = 0;
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        dim_ok |= strcmp(by, dims[i]) == 0;
    if (!dim_ok)
        return imgq__cli_error(&opt, "--by '%s': model, team, batch, day or route", by);
    if (json && csv)
        return imgq__cli_error(&opt, "--json and --csv together");
    if (imgq_tz_check(tz) != 0) {
        fprintf(stderr, "imgq report: --tz '%s' is not a time zone of this system\n", tz);
        return IMGQ_EXIT_USAGE;
    }
    imgq_queue *q = imgq__cli_queue();
    if (!q)
        return IMGQ_EXIT_FAIL;
    int64_t now_ms = 0, since = INT64_MIN, until = INT64_MAX;
    if (imgq_queue_now_ms(q, &now_ms) != 0)
        now_ms = (int64_t)time(NULL) * 1000;
    char why[256];
    if ((since_s && report_time(since_s, tz, now_ms, &since, why, sizeof why) != 0) ||
        (until_s && report_time(until_s, tz, now_ms, &until, why, sizeof why) != 0)) {
        fprintf(stderr, "imgq report: %s\n", why);
        return IMGQ_EXIT_USAGE;
    }
    if (since_s && until_s && until <= since) {
        fprintf(stderr, "imgq report: --until is not after --since\n");
        return IMGQ_EXIT_USAGE;
    }
    int filtered = since_s || until_s;
    const struct imgq_keys *k = imgq_queue_keys(q);
    redisContext *rc = imgq_queue_redis(q);
    char ledger[256], spent_key[256];
    snprintf(ledger, sizeof ledger, "%sledger", k->base);
    snprintf(spent_key, sizeof spent_key, "%sspent", k->base);

    /* Days are dates in --tz: the zone is set for the whole report (the CLI is one thread). */
    const char *cur = getenv("TZ");
    char *saved_tz = cur ? imgq_xstrdup(cur) : NULL;
    setenv("TZ", tz, 1);
    tzset();

    struct report r = {.by = by};
    int64_t spent = 0;
    int ret = IMGQ_EXIT_OK, spent_rc = 0;
    if (read_ledger(rc, ledger, &r, since, until, filtered) != 0 || count_images(rc, k, &r) != 0) {
        ret = IMGQ_EXIT_FAIL;
        goto out;
    }
    if (!filtered)
        spent_rc = read_spent(rc, spent_key, &spent);
    qsort(r.groups, r.ngroups, sizeof *r.groups, by_key);
    r.total.key = "TOTAL";
    int checked = !filtered && spent_rc == 0;
    int matches = checked && spent == r.total.spend;
    char a[48], b[48], d[48];
    imgq_quote_money(r.total.spend, a, sizeof a);
    imgq_quote_money(spent, b, sizeof b);
    imgq_quote_money(r.total.spend - spent, d, sizeof d);

    if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "by", json_string(by));
        json_object_set_new(o, "since_ms", since_s ? json_integer(since) : json_null());
        json_object_set_new(o, "until_ms", until_s ? json_integer(until) : json_null());
        json_object_set_new(o, "tz", json_string(tz));
        json_t *arr = json_array();
        for (size_t i = 0; i < r.ngroups; i++)
            json_array_append_new(arr, group_json(by, &r.groups[i]));
        json_object_set_new(o, "groups", arr);
        json_object_set_new(o, "total", group_json(NULL, &r.total));
        json_object_set_new(o, "spent_counter_micros", checked ? json_integer(spent) : json_null());
        json_object_set_new(o, "matches_spent_counter",
                            checked ? json_boolean(matches) : json_null());
        json_object_set_new(o, "jobs_missing", json_integer(r.jobs_missing));
        json_object_set_new(o, "malformed_entries", json_integer(r.malformed));
        char *text = json_dumps(o, JSON_COMPACT);
        printf("%s\n", text);
        free(text);
        json_decref(o);
    } else if (csv) {
        printf("%s,calls,images,spend_micros,failures,failure_micros,per_image_micros,"
               "dedup_saved_micros\n",
               by);
        for (size_t i = 0; i < r.ngroups; i++)
            print_csv(r.groups[i].key, &r.groups[i]);
        print_csv("TOTAL", &r.total);
    } else {
        char s1[32] = "the beginning", s2[32] = "now";
        if (since_s)
            iso(since, s1, sizeof s1);
        if (until_s)
            iso(until, s2, sizeof s2);
        printf("spend by %s, %s to %s%s%s%s\n", by, s1, s2,
               strcmp(by, "day") == 0 ? " (days in " : "", strcmp(by, "day") == 0 ? tz : "",
               strcmp(by, "day") == 0 ? ")" : "");
        printf("%-28s %9s %9s %16s %9s %14s %12s %12s\n", by, "calls", "images", "spend",
               "failures", "failure cost", "per image", "dedup saved");
        for (size_t i = 0; i < r.ngroups; i++)
            print_text(r.groups[i].key, &r.groups[i]);
        print_text("TOTAL", &r.total);
        if (matches)
            printf("ledger total %s equals the spent counter\n", a);
    }
    /* Warnings go to stderr (stdout stays the table, CSV or JSON); text also repeats them. */
    if (!filtered && spent_rc != 0)
        fprintf(stderr, "imgq report: warning: cannot read the spent counter %s\n", spent_key);
    else if (checked && !matches) {
        fprintf(stderr,
                "imgq report: warning: the ledger total %s does not equal the spent counter %s "
                "(difference %s)\n",
                a, b, d);
        if (!json && !csv)
            printf("warning: the ledger total %s does not equal the spent counter %s "
                   "(difference %s)\n",
                   a, b, d);
    }
    if (r.jobs_missing)
        fprintf(stderr,
                "imgq report: %" PRId64 " jobs of the ledger are no longer in Redis (retention); "
                "their images are not counted\n",
                r.jobs_missing);
    if (r.malformed)
        fprintf(stderr, "imgq report: warning: %" PRId64 " ledger entries have no integer cost\n",
                r.malformed);
out:
    if (saved_tz)
        setenv("TZ", saved_tz, 1);
    else
        unsetenv("TZ");
    tzset();
    free(saved_tz);
    for (size_t i = 0; i < r.ngroups; i++)
        free(r.groups[i].key);
    free(r.groups);
    smap_clear(&r.index);
    smap_clear(&r.jobs);
    return ret;
}
