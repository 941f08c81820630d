/*
 * cmd_results.c - "imgq results": every image of a batch, with a link to it.
 *
 *   imgq results BATCH [--presign SECONDS] [--json] [--all]
 *
 * One line per image of every done job of the batch, in submission order, tab-separated:
 *
 *   JOB  CLIENT_ID  INDEX  BUCKET  KEY  WIDTHxHEIGHT  FORMAT  BYTES  [URL]
 *
 * (CLIENT_ID is "-" for a job without "id"; INDEX is the image's place in the job's result.)
 * --presign SECONDS adds a presigned GET URL valid that long (1..604800), signed with the S3
 * credentials of the environment (as for "imgq presign").  --json prints one JSON object per
 * line instead: {"job", "client_id", "state": "done", "index", "bucket", "key", "width",
 * "height", "format", "bytes"} plus "url" and "expires" (ISO 8601 UTC) with --presign.
 *
 * Jobs that are not done are listed on stderr with their state (and error message), then a
 * count by state; with --all they are listed on stdout instead, as "JOB CLIENT_ID - STATE
 * [MESSAGE]" or {"job", "client_id", "state", "error"}.  Exit status: 0 when every line was
 * written (whether or not every job is done), 3 when the batch does not exist, 1 when Redis or S3
 * settings fail, or a URL could not be signed; 2 for bad usage.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "cli.h"
#include "imgq/alloc.h"
#include "imgq/s3.h"

#define USAGE "usage: imgq results BATCH [--presign SECONDS] [--json] [--all]\n"

#define usage_error(...) imgq__cli_usage_error("imgq results", NULL, USAGE, __VA_ARGS__)

struct results {
    bool json, all;
    long presign; /* 0: no URLs */
    time_t at;    /* signing time */
    char expires_iso[32];
    struct imgq_s3_config s3;
    size_t images, done, not_done;
    int status;
    /* Counts of jobs not done, by state. */
    struct {
        char name[32];
        size_t n;
    } states[16];
    size_t nstates;
};

static const char *str_or(json_t *v, const char *dflt)
{
    const char *s = json_string_value(v);
    return s ? s : dflt;
}

/* A string for a text column: no tabs or newlines that would break the line apart. */
static void put_field(const char *s)
{
    for (; *s; s++)
        putchar(*s == '\t' || *s == '\n' || *s == '\r' ? ' ' : *s);
}

static void count_state(struct results *r, const char *state)
{
    for (size_t i = 0; i < r->nstates; i++)
        if (strcmp(r->states[i].name, state) == 0) {
            r->states[i].n++;
            return;
        }
    if (r->nstates < sizeof r->states / sizeof r->states[0]) {
        snprintf(r->states[r->nstates].name, sizeof r->states[0].name, "%s", state);
        r->states[r->nstates++].n = 1;
    }
}

static void print_json(json_t *o)
{
    char *text = json_dumps(o, JSON_COMPACT);
    if (text)
        printf("%s\n", text);
    free(text);
    json_decref(o);
}

/* A job that is not done: on stdout with --all, else on stderr. */
static void not_done(struct results *r, const char *job_id, const char *client, const char *state,
                     json_t *error)
{
    const char *msg = json_is_object(error) ? json_string_value(json_object_get(error, "message"))
                                            : json_string_value(error);
    r->not_done++;
    count_state(r, state);
    if (r->all && r->json) {
        json_t *o =
            json_pack("{s:s, s:s*, s:s}", "job", job_id, "client_id", client, "state", state);
        if (error)
            json_object_set(o, "error", error);
        print_json(o);
    } else if (r->all) {
        put_field(job_id);
        putchar('\t');
        put_field(client ? client : "-");
        printf("\t-\t");
        put_field(state);
        if (msg && *msg) {
            putchar('\t');
            put_field(msg);
        }
        putchar('\n');
    } else {
        fprintf(stderr, "imgq results: job %s%s%s%s: %s%s%s\n", job_id, client ? " (" : "",
                client ? client : "", client ? ")" : "", state, msg && *msg ? ": " : "",
                msg && *msg ? msg : "");
    }
}

static void image_line(struct results *r, const char *job_id, const char *client, size_t index,
                       json_t *im)
{
    const char *bucket = json_string_value(json_object_get(im, "bucket"));
    const char *key = json_string_value(json_object_get(im, "key"));
    const char *format = str_or(json_object_get(im, "format"), "-");
    json_int_t width = json_integer_value(json_object_get(im, "width"));
    json_int_t height = json_integer_value(json_object_get(im, "height"));
    json_int_t bytes = json_integer_value(json_object_get(im, "bytes"));
    char *url = NULL;

    if (!bucket || !*bucket)
        bucket = r->s3.bucket; /* records always name it; IMGQ_S3_BUCKET otherwise */
    if (!key || !*key) {
        fprintf(stderr, "imgq results: job %s image %zu: the record names no key\n", job_id, index);
        r->status = IMGQ_EXIT_FAIL;
        return;
    }
    if (r->presign) {
        int rc = bucket ? imgq_s3_presign(&r->s3, "GET", bucket, key, r->presign, r->at, &url)
                        : IMGQ_ECONFIG;
        if (rc < 0) {
            fprintf(stderr, "imgq results: job %s image %zu: cannot presign s3://%s/%s: %s\n",
                    job_id, index, bucket ? bucket : "?", key,
                    rc == IMGQ_ECONFIG && !bucket ? "no bucket (set IMGQ_S3_BUCKET)"
                                                  : imgq_strerror(rc));
            r->status = IMGQ_EXIT_FAIL;
        }
    }
    r->images++;
    if (r->json) {
        json_t *o = json_pack("{s:s, s:s*, s:s, s:I, s:s?, s:s, s:I, s:I, s:s, s:I}", "job", job_id,
                              "client_id", client, "state", "done", "index", (json_int_t)index,
                              "bucket", bucket, "key", key, "width", width, "height", height,
                              "format", format, "bytes", bytes);
        if (url) {
            json_object_set_new(o, "url", json_string(url));
            json_object_set_new(o, "expires", json_string(r->expires_iso));
        }
        if (o)
            print_json(o);
    } else {
        put_field(job_id);
        putchar('\t');
        put_field(client ? client : "-");
        printf("\t%zu\t", index);
        put_field(bucket ? bucket : "-");
        putchar('\t');
        put_field(key);
        printf("\t%lldx%lld\t", (long long)width, (long long)height);
        put_field(format);
        printf("\t%lld", (long long)bytes);
        if (url) {
            putchar('\t');
            put_field(url);
        }
        putchar('\n');
    }
    free(url);
}

static void one_job(struct results *r, const char *id, json_t *job)
{
    if (!job) {
        /* Listed in the batch but gone: removed by retention, or never written. */
        not_done(r, id, NULL, "missing", NULL);
        return;
    }
    json_t *spec = json_object_get(job, "spec");
    const char *client = json_string_value(json_object_get(spec, "id"));
    const char *state = str_or(json_object_get(job, "state"), "unknown");
    if (strcmp(state, "done") != 0) {
        not_done(r, id, client, state, json_object_get(job, "error"));
        return;
    }
    r->done++;
    json_t *images = json_object_get(json_object_get(job, "result"), "images");
    for (size_t i = 0; i < json_array_size(images); i++)
        image_line(r, id, client, i, json_array_get(images, i));
}

static bool parse_seconds(const char *s, long *out)
{
    char *end;
    if (!isdigit((unsigned char)s[0]))
        return false;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

int imgq_cmd_results(int argc, char **argv)
{
    const char *batch = NULL, *presign_s = NULL;
    struct results r = {.status = IMGQ_EXIT_OK};

    static const char *const flags[] = {"json", "all", "presign=", NULL};
    static const struct imgq_cli_cmd cmd = {
        "imgq results", USAGE, flags, 1, 1, "BATCH (the id 'imgq submit' printed)"};
    struct imgq_cli_args args;
    int st = imgq__cli_parse(&cmd, argc, argv, &args);
    if (st >= 0)
        return st;
    batch = args.args[0];
    r.json = imgq__cli_set(&args, "json");
    r.all = imgq__cli_set(&args, "all");
    presign_s = imgq__cli_opt(&args, "presign");
    if (!batch || !*batch)
        return usage_error("missing BATCH (the id 'imgq submit' printed)");
    if (presign_s && (!parse_seconds(presign_s, &r.presign) || r.presign < 1 ||
                      r.presign > IMGQ_S3_PRESIGN_MAX_EXPIRES))
        return usage_error("--presign '%s' must be a whole number of seconds from 1 to 604800",
                           presign_s);

    imgq_s3_config_init(&r.s3);
    if (r.presign) {
        char *why = NULL;
        if (imgq__cli_s3_config(&r.s3, NULL, &why) < 0) {
            fprintf(stderr, "imgq results: cannot presign: %s\n", why);
            free(why);
            imgq_s3_config_clear(&r.s3);
            return IMGQ_EXIT_FAIL;
        }
        r.at = time(NULL);
        time_t until = r.at + (time_t)r.presign;
        struct tm tm;
        gmtime_r(&until, &tm);
        strftime(r.expires_iso, sizeof r.expires_iso, "%Y-%m-%dT%H:%M:%SZ", &tm);
    }

    imgq_queue *q = imgq__cli_queue();
    if (!q) {
        imgq_s3_config_clear(&r.s3);
        return IMGQ_EXIT_FAIL;
    }
    json_t *info;
    int rc = imgq_queue_batch_info(q, batch, &info);
    if (rc) {
        fprintf(stderr, "imgq results: %s: %s\n", batch,
                rc == IMGQ_ENOTFOUND ? "no such batch" : imgq_strerror(rc));
        imgq_s3_config_clear(&r.s3);
        return rc == IMGQ_ENOTFOUND ? IMGQ_EXIT_NOTFOUND : IMGQ_EXIT_FAIL;
    }
    json_decref(info);
    char **ids;
    size_t n;
    if ((rc = imgq_queue_batch_jobs(q, batch, &ids, &n)) != 0) {
        fprintf(stderr, "imgq results: %s: %s\n", batch, imgq_strerror(rc));
        imgq_s3_config_clear(&r.s3);
        return IMGQ_EXIT_FAIL;
    }

    const size_t step = 1024;
    json_t **jobs = imgq_xcalloc(step, sizeof *jobs);
    for (size_t lo = 0; lo < n; lo += step) {
        size_t cnt = n - lo < step ? n - lo : step;
        if (imgq_queue_jobs_info(q, ids + lo, cnt, jobs) != 0) {
            fprintf(stderr, "imgq results: %s: cannot read the batch's jobs from Redis\n", batch);
            r.status = IMGQ_EXIT_FAIL;
            break;
        }
        for (size_t i = 0; i < cnt; i++) {
            one_job(&r, ids[lo + i], jobs[i]);
            json_decref(jobs[i]);
        }
    }
    free(jobs);
    for (size_t i = 0; i < n; i++)
        free(ids[i]);
    free(ids);

    if (r.not_done) {
        fprintf(stderr, "imgq results: %s: %zu of %zu jobs not done (", batch, r.not_done, n);
        for (size_t i = 0; i < r.nstates; i++)
            fprintf(stderr, "%s%s %zu", i ? ", " : "", r.states[i].name, r.states[i].n);
        fprintf(stderr, "); %zu images from %zu done jobs listed\n", r.images, r.done);
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "imgq results: cannot write the results: %s\n", strerror(errno));
        r.status = IMGQ_EXIT_FAIL;
    }
    imgq_s3_config_clear(&r.s3);
    return r.status;
}
