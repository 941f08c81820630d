/*
 * cmd_control.c - imgq cancel, select, pause, resume, promote and dlq: operating a queue while it
 * runs. Each action is one script in Redis, so every worker sees it at once.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "cli.h"
#include "imgq/s3.h"
#include "imgq/schedule.h"

static int run(const char *what, enum imgq_script_id id, int nargs, const char **args,
               json_int_t *result)
{
    imgq_queue *q = imgq__cli_queue();
    if (!q)
        return IMGQ_EXIT_FAIL;
    json_t *reply = NULL;
    char err[512];
    if (imgq_queue_script(q, id, nargs, args, &reply, err, sizeof err) != 0) {
        fprintf(stderr, "imgq %s: %s\n", what, err);
        return IMGQ_EXIT_FAIL;
    }
    *result = json_integer_value(reply);
    json_decref(reply);
    return IMGQ_EXIT_OK;
}

int imgq_cmd_cancel(int argc, char **argv)
{
    static const char *const flags[] = {"batch=", NULL};
    static const struct imgq_cli_cmd cmd = {
        "imgq cancel",
        "usage: imgq cancel JOB_ID | imgq cancel --batch BATCH\n"
        "  end jobs that have not finished\n",
        flags,
        0,
        1,
        NULL};
    struct imgq_cli_args a;
    int st = imgq__cli_parse(&cmd, argc, argv, &a);
    if (st >= 0)
        return st;
    const char *batch = imgq__cli_opt(&a, "batch");
    const char *job = a.nargs == 1 ? a.args[0] : NULL;
    if (!!batch == !!job)
        return imgq__cli_error(&a, "give one JOB_ID or --batch BATCH");
    imgq_queue *q = imgq__cli_queue();
    if (!q)
        return IMGQ_EXIT_FAIL;
    long long n;
    char err[512];
    if (imgq_queue_cancel(q, batch ? "batch" : "job", batch ? batch : job, &n, err, sizeof err) !=
        0) {
        fprintf(stderr, "imgq cancel: %s\n", err);
        return IMGQ_EXIT_FAIL;
    }
    if (batch && n < 0) {
        fprintf(stderr, "imgq cancel: no batch '%s'\n", batch);
        return IMGQ_EXIT_NOTFOUND;
    }
    if (job && n == 0) {
        json_t *info = NULL;
        int r = imgq_queue_job_info(q, job, &info);
        json_decref(info);
        if (r == IMGQ_ENOTFOUND) {
            fprintf(stderr, "imgq cancel: no job '%s'\n", job);
            return IMGQ_EXIT_NOTFOUND;
        }
        fprintf(stderr, "imgq cancel: job '%s' has already ended\n", job);
        return IMGQ_EXIT_FAIL;
    }
    printf("%lld job(s) cancelled\n", n);
    return IMGQ_EXIT_OK;
}

/* imgq select JOB: the drafts of a pipeline job awaiting selection, with their links;
 * imgq select JOB INDEX: choose one, and the job goes on to refine it. */
int imgq_cmd_select(int argc, char **argv)
{
    static const struct imgq_cli_cmd cmd = {
        "imgq select",
        "usage: imgq select JOB [INDEX]\n"
        "  a pipeline's drafts awaiting selection; with INDEX, choose one\n",
        NULL,
        1,
        2,
        "JOB"};
    struct imgq_cli_args a;
    int st = imgq__cli_parse(&cmd, argc, argv, &a);
    if (st >= 0)
        return st;
    argc = a.nargs + 1;
    argv = a.args - 1; /* argv[1] JOB, argv[2] INDEX, as below */
    imgq_queue *q = imgq__cli_queue();
    if (!q)
        return IMGQ_EXIT_FAIL;
    json_t *reply = NULL;
    char err[512];
    if (argc == 2) {
        const char *args[2] = {"drafts", argv[1]};
        if (imgq_queue_script(q, IMGQ_SCRIPT_PIPELINE, 2, args, &reply, err, sizeof err) != 0) {
            fprintf(stderr, "imgq select: %s\n", err);
            return IMGQ_EXIT_FAIL;
        }
        const char *state = json_string_value(json_array_get(reply, 0));
        json_t *drafts = json_loads(json_string_value(json_array_get(reply, 1)), 0, NULL);
        int rc = IMGQ_EXIT_OK;
        if (!state || !*state) {
            fprintf(stderr, "imgq select: no job '%s'\n", argv[1]);
            rc = IMGQ_EXIT_NOTFOUND;
        } else if (strcmp(state, "awaiting_selection") != 0 || !json_is_array(drafts)) {
            fprintf(stderr, "imgq select: job '%s' is %s, not awaiting_selection\n", argv[1],
                    state);
            rc = IMGQ_EXIT_FAIL;
        } else {
            /* Fresh links when this machine can sign them (the stored ones last a day). */
            struct imgq_s3_config s3;
            imgq_s3_config_init(&s3);
            char *why = NULL;
            bool sign = imgq__cli_s3_config(&s3, NULL, &why) == 0;
            free(why);
            size_t i;
            json_t *d;
            json_array_foreach(drafts, i, d)
            {
                const char *key = json_string_value(json_object_get(d, "key"));
                const char *bucket = json_string_value(json_object_get(d, "bucket"));
                const char *stored = json_string_value(json_object_get(d, "url"));
                char *url = NULL;
                if (sign && key &&
                    imgq_s3_presign(&s3, "GET", bucket, key, 86400, time(NULL), &url) != 0)
                    url = NULL;
                printf("%zu\t%s\t%s\n", i, key ? key : "", url ? url : stored ? stored : "");
                free(url);
            }
            imgq_s3_config_clear(&s3);
        }
        json_decref(drafts);
        json_decref(reply);
        return rc;
    }
    char *end;
    long idx = strtol(argv[2], &end, 10);
    if (*end || end == argv[2] || idx < 0 || idx > 1000) {
        fprintf(stderr, "imgq select: INDEX '%s': a draft number from 0\n", argv[2]);
        return IMGQ_EXIT_USAGE;
    }
    const char *args[3] = {"select", argv[1], argv[2]};
    if (imgq_queue_script(q, IMGQ_SCRIPT_PIPELINE, 3, args, &reply, err, sizeof err) != 0) {
        fprintf(stderr, "imgq select: %s\n", err);
        return IMGQ_EXIT_FAIL;
    }
    int ok = json_integer_value(json_array_get(reply, 0)) == 1;
    st = ok ? IMGQ_EXIT_OK : IMGQ_EXIT_FAIL;
    if (!ok) {
        const char *why = json_string_value(json_array_get(reply, 1));
        fprintf(stderr, "imgq select: %s\n", why ? why : "refused");
        json_t *info = NULL;
        if (imgq_queue_job_info(q, argv[1], &info) == IMGQ_ENOTFOUND)
            st = IMGQ_EXIT_NOTFOUND;
        json_decref(info);
    } else {
        printf("job %s: draft %ld chosen; it is queued to refine\n", argv[1], idx);
    }
    json_decref(reply);
    return st;
}

/* imgq pause|resume|promote JOB: one job (imgq_queue_job_control). */
static int job_control(const struct imgq_cli_args *a, const char *action, const char *job)
{
    imgq_queue *q = imgq__cli_queue();
    if (!q)
        return IMGQ_EXIT_FAIL;
    int code = 0;
    char state[64], err[512];
    if (imgq_queue_job_control(q, action, job, &code, state, sizeof state, err, sizeof err) != 0) {
        fprintf(stderr, "imgq %s: %s\n", action, err);
        return IMGQ_EXIT_FAIL;
    }
    if (code == 0) {
        fprintf(stderr, "imgq %s: no job '%s'\n", action, job);
        return IMGQ_EXIT_NOTFOUND;
    }
    if (code < 0) {
        const char *can = strcmp(action, "pause") == 0    ? "queued, scheduled or retrying"
                          : strcmp(action, "resume") == 0 ? "paused"
                                                          : "scheduled or retrying";
        fprintf(stderr, "imgq %s: job '%s' is %s; only a %s job can be %s\n", action, job, state,
                can, strcmp(action, "promote") == 0 ? "promoted" : a->cmd->name + 5);
        return IMGQ_EXIT_FAIL;
    }
    if (strcmp(action, "pause") == 0)
        printf("job %s paused (it was %s)\n", job, state);
    else if (strcmp(action, "resume") == 0)
        printf("job %s resumed\n", job);
    else
        printf("job %s promoted: it was %s, it is queued to run now\n", job, state);
    return IMGQ_EXIT_OK;
}

static int pause_resume(int argc, char **argv, const char *action)
{
    static const char *const flags[] = {"batch=", "queue-wide", NULL};
    static const struct imgq_cli_cmd pause = {
        "imgq pause",
        "usage: imgq pause JOB | imgq pause --batch BATCH | imgq pause --queue-wide\n"
        "  stop dispatching (all workers); running jobs finish.  JOB: a queued, scheduled or\n"
        "  retrying job, shown as paused until resumed\n",
        flags,
        0,
        1,
        NULL};
    static const struct imgq_cli_cmd resume = {
        "imgq resume",
        "usage: imgq resume JOB | imgq resume --batch BATCH | imgq resume --queue-wide\n"
        "  start dispatching again (a job goes back to the state it was paused in)\n",
        flags,
        0,
        1,
        NULL};
    struct imgq_cli_args a;
    int st = imgq__cli_parse(strcmp(action, "pause") == 0 ? &pause : &resume, argc, argv, &a);
    if (st >= 0)
        return st;
    const char *batch = imgq__cli_opt(&a, "batch");
    int queue = imgq__cli_set(&a, "queue-wide");
    const char *job = a.nargs == 1 ? a.args[0] : NULL;
    if ((batch != NULL) + queue + (job != NULL) != 1)
        return imgq__cli_error(&a, "give one JOB, or --batch BATCH, or --queue-wide");
    if (job)
        return job_control(&a, action, job);
    const char *args[3] = {batch ? "batch" : "queue", action, batch ? batch : ""};
    json_int_t n;
    int rc = run(action, IMGQ_SCRIPT_PAUSE, 3, args, &n);
    if (rc)
        return rc;
    if (n == 0) {
        fprintf(stderr, "imgq %s: no batch '%s'\n", action, batch);
        return IMGQ_EXIT_NOTFOUND;
    }
    const char *done = strcmp(action, "pause") == 0 ? "paused" : "resumed";
    if (batch)
        printf("batch %s %s\n", batch, done);
    else
        printf("queue %s %s\n", imgq__cli_config()->queue, done);
    return IMGQ_EXIT_OK;
}

int imgq_cmd_pause(int argc, char **argv)
{
    return pause_resume(argc, argv, "pause");
}

int imgq_cmd_resume(int argc, char **argv)
{
    return pause_resume(argc, argv, "resume");
}

/* imgq promote JOB: a scheduled (--not-before) or retrying job runs now. */
int imgq_cmd_promote(int argc, char **argv)
{
    static const struct imgq_cli_cmd cmd = {
        "imgq promote",
        "usage: imgq promote JOB\n"
        "  a scheduled (--not-before) or retrying job is queued to run now\n",
        NULL,
        1,
        1,
        "JOB"};
    struct imgq_cli_args a;
    int st = imgq__cli_parse(&cmd, argc, argv, &a);
    if (st >= 0)
        return st;
    return job_control(&a, "promote", a.args[0]);
}

static int dlq_list(int argc, char **argv)
{
    static const char *const flags[] = {"batch=", "limit=", "json", NULL};
    static const struct imgq_cli_cmd cmd = {
        "imgq dlq list",
        "usage: imgq dlq list [--batch B] [--limit N] [--json]\n"
        "  the dead-lettered jobs, newest first (--limit: at most N, default 1000)\n",
        flags,
        0,
        0,
        NULL};
    struct imgq_cli_args a;
    int st = imgq__cli_parse(&cmd, argc, argv, &a);
    if (st >= 0)
        return st;
    const char *batch = imgq__cli_opt(&a, "batch");
    const char *lim = imgq__cli_opt(&a, "limit");
    char *end = NULL;
    size_t limit = lim ? strtoul(lim, &end, 10) : 1000;
    if (lim && (end == lim || *end || lim[0] == '-' || limit == 0))
        return imgq__cli_error(&a, "--limit '%s': a whole number from 1", lim);
    imgq_queue *q = imgq__cli_queue();
    if (!q)
        return IMGQ_EXIT_FAIL;
    json_t *dead;
    if (imgq_queue_dead(q, batch, limit, &dead) != 0) {
        fprintf(stderr, "imgq dlq list: redis error\n");
        return IMGQ_EXIT_FAIL;
    }
    int json = imgq__cli_set(&a, "json");
    size_t i;
    json_t *job;
    json_array_foreach(dead, i, job)
    {
        json_t *err = json_object_get(job, "error");
        json_t *spec = json_object_get(job, "spec");
        if (json) {
            json_t *o = json_object();
            json_object_set(o, "id", json_object_get(job, "id"));
            if (json_object_get(spec, "id"))
                json_object_set(o, "client_id", json_object_get(spec, "id"));
            json_object_set(o, "batch", json_object_get(job, "batch"));
            json_object_set(o, "model", json_object_get(spec, "model"));
            json_object_set(o, "attempts", json_object_get(job, "attempts"));
            json_object_set(o, "error", err);
            char *text = json_dumps(o, JSON_COMPACT);
            printf("%s\n", text);
            free(text);
            json_decref(o);
        } else {
            const char *cls = json_string_value(json_object_get(err, "class"));
            const char *msg = json_string_value(json_object_get(err, "message"));
            printf("%-16s %-20s %-16s %-16s %s\n", json_string_value(json_object_get(job, "id")),
                   json_string_value(json_object_get(job, "batch")),
                   json_string_value(json_object_get(spec, "model")), cls ? cls : "?",
                   msg ? msg : "");
        }
    }
    if (!json)
        fprintf(stderr, "%zu dead-lettered job(s)\n", json_array_size(dead));
    json_decref(dead);
    return IMGQ_EXIT_OK;
}

static int dlq_change(int argc, char **argv)
{
    static const char *const flags[] = {"batch=", "all", NULL};
    static const struct imgq_cli_cmd retry = {"imgq dlq retry",
                                              "usage: imgq dlq retry (JOB_ID...|--batch B|--all)\n"
                                              "  put dead-lettered jobs back in the queue\n",
                                              flags,
                                              0,
                                              -1,
                                              NULL};
    static const struct imgq_cli_cmd purge = {"imgq dlq purge",
                                              "usage: imgq dlq purge (JOB_ID...|--batch B|--all)\n"
                                              "  delete dead-lettered jobs for good\n",
                                              flags,
                                              0,
                                              -1,
                                              NULL};
    const char *sub = argv[0];
    struct imgq_cli_args a;
    int st = imgq__cli_parse(strcmp(sub, "retry") == 0 ? &retry : &purge, argc, argv, &a);
    if (st >= 0)
        return st;
    const char *batch = imgq__cli_opt(&a, "batch");
    int all = imgq__cli_set(&a, "all");
    int nids = a.nargs;
    if ((batch != NULL) + all + (nids > 0) != 1)
        return imgq__cli_error(&a, "give job ids, or --batch B, or --all");
    const char **args = calloc((size_t)(nids + 4), sizeof *args);
    if (!args)
        abort();
    int n = 0;
    args[n++] = sub;
    args[n++] = batch ? "batch" : all ? "all" : "ids";
    if (batch)
        args[n++] = batch;
    for (int i = 0; i < nids; i++)
        args[n++] = a.args[i];
    json_int_t count;
    int rc = run(strcmp(sub, "retry") == 0 ? "dlq retry" : "dlq purge", IMGQ_SCRIPT_DLQ, n, args,
                 &count);
    free(args);
    if (rc)
        return rc;
    printf("%lld job(s) %s\n", (long long)count,
           strcmp(sub, "retry") == 0 ? "back in the queue" : "purged from the dead letters");
    return IMGQ_EXIT_OK;
}

int imgq_cmd_dlq(int argc, char **argv)
{
    static const struct imgq_cli_sub subs[] = {
        {"list", dlq_list}, {"retry", dlq_change}, {"purge", dlq_change}, {NULL, NULL}};
    return imgq__cli_dispatch("imgq dlq",
                              "usage: imgq dlq list [--batch B] [--limit N] [--json]\n"
                              "       imgq dlq retry (JOB_ID...|--batch B|--all)\n"
                              "       imgq dlq purge (JOB_ID...|--batch B|--all)\n",
                              subs, argc, argv);
}

/* imgq retention [--set DURATION]: how long ended jobs and finished batches are kept. */
int imgq_cmd_retention(int argc, char **argv)
{
    static const char *const flags[] = {"set=", NULL};
    static const struct imgq_cli_cmd cmd = {
        "imgq retention",
        "usage: imgq retention [--set DURATION]\n"
        "  how long ended jobs and finished batches are kept (DURATION: 7d, 36h, 90m)\n",
        flags,
        0,
        0,
        NULL};
    struct imgq_cli_args a;
    int st = imgq__cli_parse(&cmd, argc, argv, &a);
    if (st >= 0)
        return st;
    const char *set = imgq__cli_opt(&a, "set");
    imgq_queue *q = imgq__cli_queue();
    if (!q)
        return IMGQ_EXIT_FAIL;
    redisContext *rc = imgq_queue_redis(q);
    char key[256];
    snprintf(key, sizeof key, "%sretention_ms", imgq_queue_keys(q)->base);
    redisReply *r;
    if (set) {
        char rel[64], why[256];
        int64_t ms;
        snprintf(rel, sizeof rel, "+%s", set);
        if (imgq_time_parse(rel, NULL, 0, &ms, why, sizeof why) != 0 || ms < 60000) {
            fprintf(stderr,
                    "imgq retention: --set '%s': a duration of at least 60s, e.g. 7d, "
                    "36h, 90m\n",
                    set);
            return IMGQ_EXIT_USAGE;
        }
        r = redisCommand(rc, "SET %s %lld", key, (long long)ms);
        if (!r || r->type == REDIS_REPLY_ERROR) {
            fprintf(stderr, "imgq retention: %s\n", r ? r->str : rc->errstr);
            if (r)
                freeReplyObject(r);
            return IMGQ_EXIT_FAIL;
        }
        freeReplyObject(r);
    }
    r = redisCommand(rc, "GET %s", key);
    if (!r) {
        fprintf(stderr, "imgq retention: %s\n", rc->errstr);
        return IMGQ_EXIT_FAIL;
    }
    long long ms = r->type == REDIS_REPLY_STRING ? atoll(r->str) : 604800000LL;
    freeReplyObject(r);
    printf("ended jobs and finished batches are kept %.1f hours (%lld ms)\n",
           (double)ms / 3600000.0, ms);
    return IMGQ_EXIT_OK;
}
