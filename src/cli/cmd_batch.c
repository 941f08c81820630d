/* cmd_batch.c - imgq batch status|results and imgq job show: reading state back. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <time.h>

#include "cli.h"
#include "imgq/alloc.h"

/* Every state a job can be in; blocked_budget: waiting for a budget (see budget.lua); review:
 * stopped at its attempt cap for a human to look at (max_generations); coalesced: waiting for
 * an identical request in flight (coalesce.lua); drafting, awaiting_selection: a pipeline job
 * between its stages (pipeline.lua). */
static const char *const states[] = {
    "scheduled",      "queued",    "running",  "retrying",
    "blocked_budget", "coalesced", "drafting", "awaiting_selection",
    "done",           "failed",    "canceled", "expired",
    "review",         NULL};

static json_int_t field_int(json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

static void print_money(FILE *f, const char *label, imgq_micros v)
{
    char buf[64];
    imgq_money_format(v, 6, buf, sizeof buf);
    fprintf(f, "%s%s", label, buf);
}

#define DUE_SCAN_MAX 10000 /* delayed entries batch status reads at most */
#define DUE_PAGE 500

/*
 * The batch's retrying jobs: when the first is due (*next, -1 if none found) and how many of
 * them wait on a provider's rate limit (their last error's class), from the queue's delayed
 * set in due order, read until all 'retrying' are found or DUE_SCAN_MAX entries were read.
 */
static void retry_due(imgq_queue *q, const char *batch, json_int_t retrying, int64_t *next,
                      json_int_t *limited)
{
    redisContext *rc = imgq_queue_redis(q);
    const struct imgq_keys *k = imgq_queue_keys(q);
    json_int_t found = 0;
    *next = -1;
    *limited = 0;
    for (long from = 0; found < retrying && from < DUE_SCAN_MAX; from += DUE_PAGE) {
        redisReply *z =
            redisCommand(rc, "ZRANGE %s %ld %ld WITHSCORES", k->delayed, from, from + DUE_PAGE - 1);
        if (!z || z->type != REDIS_REPLY_ARRAY || z->elements == 0) {
            if (z)
                freeReplyObject(z);
            return;
        }
        size_t n = z->elements / 2;
        char jk[256];
        for (size_t i = 0; i < n; i++)
            redisAppendCommand(rc, "HMGET %s batch state error",
                               imgq_keys_job(k, z->element[2 * i]->str, jk, sizeof jk));
        for (size_t i = 0; i < n; i++) {
            redisReply *h = NULL;
            if (redisGetReply(rc, (void **)&h) != REDIS_OK) {
                freeReplyObject(z);
                return;
            }
            if (h->type == REDIS_REPLY_ARRAY && h->elements == 3 &&
                h->element[0]->type == REDIS_REPLY_STRING &&
                strcmp(h->element[0]->str, batch) == 0 &&
                h->element[1]->type == REDIS_REPLY_STRING &&
                strcmp(h->element[1]->str, "retrying") == 0) {
                if (found++ == 0)
                    *next = (int64_t)atoll(z->element[2 * i + 1]->str);
                if (h->element[2]->type == REDIS_REPLY_STRING &&
                    strstr(h->element[2]->str, "\"class\":\"rate_limit\""))
                    (*limited)++;
            }
            freeReplyObject(h);
        }
        bool last = n < DUE_PAGE;
        freeReplyObject(z);
        if (last)
            return;
    }
}

static int batch_status(const char *id, int json)
{
    imgq_queue *q = imgq__cli_queue();
    if (!q)
        return IMGQ_EXIT_FAIL;
    json_t *info;
    int r = imgq_queue_batch_info(q, id, &info);
    if (r == IMGQ_ENOTFOUND) {
        fprintf(stderr, "imgq batch status: no batch '%s' in queue '%s'\n", id,
                imgq__cli_config()->queue);
        return IMGQ_EXIT_NOTFOUND;
    }
    if (r) {
        fprintf(stderr, "imgq batch status: %s\n", imgq_strerror(r));
        return IMGQ_EXIT_FAIL;
    }
    json_int_t total = field_int(info, "total"), cost = field_int(info, "cost");
    json_int_t ended = field_int(info, "done") + field_int(info, "failed") +
                       field_int(info, "canceled") + field_int(info, "expired") +
                       field_int(info, "review");
    int64_t next_due = -1, now = 0;
    json_int_t limited = 0;
    if (field_int(info, "retrying") > 0 && imgq_queue_now_ms(q, &now) == 0)
        retry_due(q, id, field_int(info, "retrying"), &next_due, &limited);
    if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "batch", json_string(id));
        json_object_set_new(o, "total", json_integer(total));
        json_t *counts = json_object();
        for (const char *const *s = states; *s; s++)
            json_object_set_new(counts, *s, json_integer(field_int(info, *s)));
        /* Jobs paused one by one (imgq pause JOB; the batch's own pause is 'paused'). */
        json_object_set_new(counts, "paused", json_integer(field_int(info, "paused_jobs")));
        json_object_set_new(o, "counts", counts);
        json_object_set_new(o, "images", json_integer(field_int(info, "images")));
        json_object_set_new(o, "cost_micros", json_integer(cost));
        char usd[64];
        snprintf(usd, sizeof usd, "%" PRId64 ".%06" PRId64, (int64_t)cost / 1000000,
                 (int64_t)cost % 1000000);
        json_object_set_new(o, "cost_usd", json_string(usd));
        json_object_set_new(o, "finished", json_boolean(json_object_get(info, "finished")));
        if (next_due >= 0) {
            json_object_set_new(o, "next_retry_due_ms", json_integer(next_due));
            json_object_set_new(o, "retrying_on_rate_limit", json_integer(limited));
        }
        json_object_set(o, "created_ms", json_object_get(info, "created"));
        if (json_object_get(info, "finished"))
            json_object_set(o, "finished_ms", json_object_get(info, "finished"));
        /* batch.completed: how many so far, and whether one waits for open provider calls. */
        json_object_set_new(o, "completions", json_integer(field_int(info, "completions")));
        json_object_set_new(o, "completing", json_boolean(json_object_get(info, "completing")));
        json_object_set_new(o, "open_calls", json_integer(field_int(info, "open_calls")));
        char *text = json_dumps(o, JSON_COMPACT);
        printf("%s\n", text);
        free(text);
        json_decref(o);
    } else {
        printf("batch %s: %lld of %lld jobs ended%s\n", id, (long long)ended, (long long)total,
               json_object_get(info, "finished") ? " (finished)" : "");
        for (const char *const *s = states; *s; s++) {
            /* The states of dedup and pipelines only when some job is in them. */
            bool rare = strcmp(*s, "coalesced") == 0 || strcmp(*s, "drafting") == 0 ||
                        strcmp(*s, "awaiting_selection") == 0;
            if (!rare || field_int(info, *s) != 0)
                printf("  %-14s %lld\n", *s, (long long)field_int(info, *s));
            if (strcmp(*s, "retrying") == 0 && next_due >= 0) {
                time_t secs = (time_t)(next_due / 1000);
                struct tm tm;
                char stamp[40];
                gmtime_r(&secs, &tm);
                strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
                printf("    next due %s (in %lld s); %lld waiting on rate limits\n", stamp,
                       (long long)(next_due > now ? (next_due - now + 999) / 1000 : 0),
                       (long long)limited);
            }
        }
        if (field_int(info, "paused_jobs") != 0)
            printf("  %-14s %lld\n", "paused", (long long)field_int(info, "paused_jobs"));
        printf("  %-14s %lld\n", "images", (long long)field_int(info, "images"));
        print_money(stdout, "  cost           ", cost);
        printf("\n");
        if (json_object_get(info, "completing"))
            printf("  completing: %lld provider call(s) not yet charged; batch.completed follows\n",
                   (long long)field_int(info, "open_calls"));
    }
    json_decref(info);
    return IMGQ_EXIT_OK;
}

/* One result line: the fields a script needs, from the job record. */
static json_t *result_line(json_t *job)
{
    json_t *o = json_object();
    json_t *spec = json_object_get(job, "spec"), *result = json_object_get(job, "result");
    json_object_set(o, "id", json_object_get(job, "id"));
    if (json_object_get(spec, "id"))
        json_object_set(o, "client_id", json_object_get(spec, "id"));
    json_object_set(o, "state", json_object_get(job, "state"));
    /* The model that served the job: a circuit breaker may have sent it to a fallback. */
    json_t *asked = json_object_get(spec, "model"), *served = json_object_get(result, "model");
    json_object_set(o, "model", served ? served : asked);
    if (served && asked && !json_equal(served, asked)) {
        json_object_set(o, "requested_model", asked);
        json_object_set(o, "fallback", json_object_get(result, "fallback"));
    }
    json_object_set(o, "quality", json_object_get(spec, "quality"));
    json_object_set(o, "size", json_object_get(spec, "size"));
    json_object_set(o, "n", json_object_get(spec, "n"));
    json_object_set(o, "attempts", json_object_get(job, "attempts"));
    json_int_t cost = json_integer_value(json_object_get(job, "cost"));
    /* A pipeline job's asset cost is its drafts' and its refine's together, each on record. */
    json_t *dc = json_object_get(job, "draft_cost");
    if (dc) {
        json_int_t d = json_is_string(dc) ? atoll(json_string_value(dc)) : json_integer_value(dc);
        json_object_set_new(o, "stage_costs",
                            json_pack("{s:I, s:I}", "draft_micros", d, "refine_micros", cost));
        cost += d;
    }
    if (json_object_get(job, "parent"))
        json_object_set(o, "draft_of", json_object_get(job, "parent"));
    json_object_set_new(o, "cost_micros", json_integer(cost));
    char usd[64];
    snprintf(usd, sizeof usd, "%lld.%06lld", (long long)(cost / 1000000),
             (long long)(cost % 1000000));
    json_object_set_new(o, "cost_usd", json_string(usd));
    if (result) {
        json_object_set(o, "usage", json_object_get(result, "usage"));
        json_object_set(o, "billed", json_object_get(result, "billed"));
        if (json_object_get(result, "usage_unusable")) /* why a usage was billed at the ceiling */
            json_object_set(o, "usage_unusable", json_object_get(result, "usage_unusable"));
        json_t *calls = json_object_get(result, "provider_calls");
        json_object_set_new(o, "provider_calls", calls ? json_incref(calls) : json_integer(1));
        json_object_set(o, "images", json_object_get(result, "images"));
        if (json_object_get(result, "pipeline"))
            json_object_set(o, "pipeline", json_object_get(result, "pipeline"));
    }
    if (json_object_get(job, "error"))
        json_object_set(o, "error", json_object_get(job, "error"));
    if (json_object_get(spec, "metadata"))
        json_object_set(o, "metadata", json_object_get(spec, "metadata"));
    return o;
}

/* A row of the human table: job, model, quality, size, n, state, cost, then its S3 keys. */
static void table_row(json_t *line, imgq_micros *sum, size_t *images)
{
    const char *jid = json_string_value(json_object_get(line, "client_id"));
    if (!jid)
        jid = json_string_value(json_object_get(line, "id"));
    json_int_t cost = json_integer_value(json_object_get(line, "cost_micros"));
    char money[48];
    imgq_money_format(cost, 6, money, sizeof money);
    const char *q = json_string_value(json_object_get(line, "quality"));
    json_t *imgs = json_object_get(line, "images");
    const char *key = json_string_value(json_object_get(json_array_get(imgs, 0), "key"));
    printf("%-22s %-17s %-7s %-10s %2lld %-7s %12s  %s\n", jid ? jid : "?",
           json_string_value(json_object_get(line, "model")), q ? q : "-",
           json_string_value(json_object_get(line, "size")),
           (long long)json_integer_value(json_object_get(line, "n")),
           json_string_value(json_object_get(line, "state")), money, key ? key : "-");
    for (size_t i = 1; i < json_array_size(imgs); i++)
        printf("%-84s  %s\n", "",
               json_string_value(json_object_get(json_array_get(imgs, i), "key")));
    *sum += cost;
    *images += json_array_size(imgs);
}

static int batch_results(const char *id, int table)
{
    imgq_queue *q = imgq__cli_queue();
    if (!q)
        return IMGQ_EXIT_FAIL;
    char **ids;
    size_t n;
    json_t *info;
    int r = imgq_queue_batch_info(q, id, &info);
    if (r) {
        fprintf(stderr, "imgq batch results: %s\n",
                r == IMGQ_ENOTFOUND ? "no such batch" : imgq_strerror(r));
        return r == IMGQ_ENOTFOUND ? IMGQ_EXIT_NOTFOUND : IMGQ_EXIT_FAIL;
    }
    imgq_micros counter = json_integer_value(json_object_get(info, "cost"));
    json_decref(info);
    if ((r = imgq_queue_batch_jobs(q, id, &ids, &n)) != 0) {
        fprintf(stderr, "imgq batch results: %s\n", imgq_strerror(r));
        return IMGQ_EXIT_FAIL;
    }
    int rc = IMGQ_EXIT_OK;
    imgq_micros sum = 0;
    size_t images = 0, shown = 0;
    if (table)
        printf("%-22s %-17s %-7s %-10s %2s %-7s %12s  %s\n", "JOB", "MODEL", "QUALITY", "SIZE", "N",
               "STATE", "COST", "S3 KEY");
    const size_t step = 1024;
    json_t **jobs = imgq_xcalloc(step, sizeof *jobs);
    for (size_t lo = 0; lo < n && rc == IMGQ_EXIT_OK; lo += step) {
        size_t cnt = n - lo < step ? n - lo : step;
        if (imgq_queue_jobs_info(q, ids + lo, cnt, jobs) != 0) {
            fprintf(stderr, "imgq batch results: redis error\n");
            rc = IMGQ_EXIT_FAIL;
            break;
        }
        for (size_t i = 0; i < cnt; i++) {
            if (!jobs[i])
                continue;
            json_t *line = result_line(jobs[i]);
            if (table) {
                table_row(line, &sum, &images);
            } else {
                char *text = json_dumps(line, JSON_COMPACT);
                printf("%s\n", text);
                free(text);
            }
            shown++;
            json_decref(line);
            json_decref(jobs[i]);
        }
    }
    free(jobs);
    for (size_t i = 0; i < n; i++)
        free(ids[i]);
    free(ids);
    if (table && rc == IMGQ_EXIT_OK) {
        char a[48], b[48];
        imgq_money_format(sum, 6, a, sizeof a);
        imgq_money_format(counter, 6, b, sizeof b);
        printf("TOTAL: %zu jobs, %zu images, %s (sum of job costs); batch ledger %s%s\n", shown,
               images, a, b, sum == counter ? "" : "  MISMATCH");
        if (sum != counter)
            rc = IMGQ_EXIT_FAIL;
    }
    return rc;
}

static int cmd_status(int argc, char **argv)
{
    static const char *const flags[] = {"json", NULL};
    static const struct imgq_cli_cmd cmd = {
        "imgq batch status",
        "usage: imgq batch status ID [--json]\n  counts by state and cost so far\n",
        flags,
        1,
        1,
        "ID"};
    struct imgq_cli_args a;
    int st = imgq__cli_parse(&cmd, argc, argv, &a);
    return st >= 0 ? st : batch_status(a.args[0], imgq__cli_set(&a, "json"));
}

/*
 * A job waiting in the delayed set (a retry waiting out its backoff or a provider's rate
 * limit): when it is due, in queue time, as due_ms, due (UTC) and due_in_s; and, for a rate
 * limit, waiting_on "rate_limit" with its waits so far (rl_waits, rl_wait_ms: fail.lua).
 */
static void add_due(imgq_queue *q, const char *id, json_t *job)
{
    const char *state = json_string_value(json_object_get(job, "state"));
    if (!state || strcmp(state, "retrying") != 0)
        return;
    redisReply *r =
        redisCommand(imgq_queue_redis(q), "ZSCORE %s %s", imgq_queue_keys(q)->delayed, id);
    int64_t now;
    if (r && r->type == REDIS_REPLY_STRING && imgq_queue_now_ms(q, &now) == 0) {
        int64_t due = (int64_t)atoll(r->str);
        time_t secs = (time_t)(due / 1000);
        struct tm tm;
        char stamp[40];
        gmtime_r(&secs, &tm);
        strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
        json_object_set_new(job, "due_ms", json_integer(due));
        json_object_set_new(job, "due", json_string(stamp));
        json_object_set_new(job, "due_in_s",
                            json_integer(due > now ? (json_int_t)((due - now + 999) / 1000) : 0));
        const char *cls =
            json_string_value(json_object_get(json_object_get(job, "error"), "class"));
        if (cls && strcmp(cls, "rate_limit") == 0)
            json_object_set_new(job, "waiting_on", json_string("rate_limit"));
    }
    if (r)
        freeReplyObject(r);
}

static int cmd_results(int argc, char **argv)
{
    static const char *const flags[] = {"table", NULL};
    static const struct imgq_cli_cmd cmd = {"imgq batch results",
                                            "usage: imgq batch results ID [--table]\n"
                                            "  one JSON line per job, or a table with totals\n",
                                            flags,
                                            1,
                                            1,
                                            "ID"};
    struct imgq_cli_args a;
    int st = imgq__cli_parse(&cmd, argc, argv, &a);
    return st >= 0 ? st : batch_results(a.args[0], imgq__cli_set(&a, "table"));
}

int imgq_cmd_batch(int argc, char **argv)
{
    static const struct imgq_cli_sub subs[] = {{"status", cmd_status},
                                               {"results", cmd_results},
                                               {"watch", imgq__cmd_batch_watch},
                                               {NULL, NULL}};
    return imgq__cli_dispatch("imgq batch",
                              "usage: imgq batch status ID [--json]\n"
                              "       imgq batch results ID [--table]\n"
                              "       imgq batch watch ID [--json] [--interval S]\n",
                              subs, argc, argv);
}

static int cmd_show(int argc, char **argv)
{
    static const struct imgq_cli_cmd cmd = {
        "imgq job show", "usage: imgq job show ID\n  everything about one job\n", NULL, 1, 1, "ID"};
    struct imgq_cli_args a;
    int st = imgq__cli_parse(&cmd, argc, argv, &a);
    if (st >= 0)
        return st;
    const char *id = a.args[0];
    imgq_queue *q = imgq__cli_queue();
    if (!q)
        return IMGQ_EXIT_FAIL;
    json_t *job;
    int r = imgq_queue_job_info(q, id, &job);
    if (r) {
        fprintf(stderr, "imgq job show: %s: %s\n", id,
                r == IMGQ_ENOTFOUND ? "no such job" : imgq_strerror(r));
        return r == IMGQ_ENOTFOUND ? IMGQ_EXIT_NOTFOUND : IMGQ_EXIT_FAIL;
    }
    /* The attempt log is stored as JSON lines; show it as an array. */
    const char *log = json_string_value(json_object_get(job, "log"));
    if (log) {
        json_t *arr = json_array();
        const char *p = log;
        while (*p) {
            const char *nl = strchr(p, '\n');
            size_t len = nl ? (size_t)(nl - p) : strlen(p);
            json_t *e = json_loadb(p, len, 0, NULL);
            if (e)
                json_array_append_new(arr, e);
            p += len + (nl ? 1 : 0);
        }
        json_object_set_new(job, "attempt_log", arr);
        json_object_del(job, "log");
    }
    json_object_del(job, "token");
    add_due(q, id, job);
    char *text = json_dumps(job, JSON_INDENT(2) | JSON_SORT_KEYS);
    printf("%s\n", text);
    free(text);
    json_decref(job);
    return IMGQ_EXIT_OK;
}

int imgq_cmd_job(int argc, char **argv)
{
    static const struct imgq_cli_sub subs[] = {{"show", cmd_show}, {NULL, NULL}};
    return imgq__cli_dispatch("imgq job", "usage: imgq job show ID\n", subs, argc, argv);
}
