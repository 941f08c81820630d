/*
 * cmd_submit.c - imgq submit: validate a whole JSONL file, then enqueue it.
 *
 * All or nothing: the first pass validates every line and reports every bad one; only a
 * clean file reaches the second pass, which enqueues in pipelined chunks.  The first pass also
 * writes each job as it will be enqueued (key, team, stored spec) to a temporary file, which
 * the second pass sends without parsing anything again; neither keeps the file in memory, so
 * a million-line catalog submits in flat memory.
 *
 * Idempotency: a line's key is its team and "id"; a line without "id" gets one from the
 * batch name, its line number and its content, so resubmitting the same file under the same
 * --batch enqueues nothing twice.
 */
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "cli.h"
#include "imgq/drift.h"
#include "imgq/alloc.h"
#include "imgq/job.h"
#include "imgq/quote.h"
#include "imgq/schedule.h"

#define CHUNK                                                                                      \
    16384 /* jobs handed to imgq_queue_submit at once: its pipeline drains once per chunk */

struct pending {
    struct imgq_submit_item items[CHUNK];
    char *idems[CHUNK], *specs[CHUNK], *teams[CHUNK];
    unsigned char created[CHUNK];
    size_t n;
};

/*
 * The enqueue pass overlaps parsing and Redis: a thread of its own sends each full chunk (the
 * connection is used by that thread only while the pass runs) while the main thread parses the
 * next one into the other buffer.  At most one chunk is in flight, so order is kept.
 */
struct submitter {
    uv_thread_t thread;
    uv_mutex_t mu;
    uv_cond_t cv;
    imgq_queue *q;
    const char *batch;
    const struct imgq_batch_schedule *sched;
    struct pending *work; /* handed over, NULL while idle */
    bool quit;
    bool failed;
    size_t total_created, total_existing;
};

static void random_id(char prefix, char *buf, size_t len)
{
    static const char alphabet[] = "0123456789abcdefghjkmnpqrstvwxyz";
    unsigned char raw[12];
    if (RAND_bytes(raw, sizeof raw) != 1)
        abort();
    size_t o = 0;
    buf[o++] = prefix;
    for (size_t i = 0; i < sizeof raw && o + 1 < len; i++)
        buf[o++] = alphabet[raw[i] & 31];
    buf[o] = '\0';
}

static void sha256_hex(const char *data, size_t len, char out[65])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static int valid_batch_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return 0;
    /* No ':': batch keys end in ":jobs" etc., and "A:jobs" must not be another batch's. */
    return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") == n;
}

static void pending_clear(struct pending *p)
{
    for (size_t i = 0; i < p->n; i++) {
        free(p->idems[i]);
        free(p->specs[i]);
        free(p->teams[i]);
    }
    p->n = 0;
}

static void submitter_main(void *arg)
{
    struct submitter *s = arg;
    uv_mutex_lock(&s->mu);
    for (;;) {
        while (!s->work && !s->quit)
            uv_cond_wait(&s->cv, &s->mu);
        if (!s->work)
            break;
        struct pending *p = s->work;
        bool skip = s->failed; /* after a failure nothing more is sent */
        uv_mutex_unlock(&s->mu);
        char err[512];
        int r = skip ? 0
                     : imgq_queue_submit(s->q, s->batch, s->sched, p->items, p->n, p->created, err,
                                         sizeof err);
        size_t created = 0;
        for (size_t i = 0; !skip && r == 0 && i < p->n; i++)
            created += p->created[i];
        if (r)
            fprintf(stderr, "imgq submit: %s\n", err);
        uv_mutex_lock(&s->mu);
        if (r)
            s->failed = true;
        else if (!skip) {
            s->total_created += created;
            s->total_existing += p->n - created;
        }
        pending_clear(p);
        s->work = NULL;
        uv_cond_broadcast(&s->cv);
    }
    uv_mutex_unlock(&s->mu);
}

/* Hand a full chunk to the submitter once it is idle; -1 if an earlier chunk failed. */
static int flush(struct submitter *s, struct pending *p)
{
    uv_mutex_lock(&s->mu);
    while (s->work)
        uv_cond_wait(&s->cv, &s->mu);
    bool failed = s->failed;
    if (!failed && p->n > 0) {
        s->work = p;
        uv_cond_broadcast(&s->cv);
    }
    uv_mutex_unlock(&s->mu);
    if (failed)
        pending_clear(p);
    return failed ? -1 : 0;
}

/* Wait for the last chunk and stop the thread; -1 if any chunk failed. */
static int submitter_finish(struct submitter *s)
{
    uv_mutex_lock(&s->mu);
    while (s->work)
        uv_cond_wait(&s->cv, &s->mu);
    s->quit = true;
    uv_cond_broadcast(&s->cv);
    uv_mutex_unlock(&s->mu);
    uv_thread_join(&s->thread);
    uv_cond_destroy(&s->cv);
    uv_mutex_destroy(&s->mu);
    return s->failed ? -1 : 0;
}

/* The spool: a file in $TMPDIR (else /tmp), deleted as soon as it is open. */
static const char *spool_dir(void)
{
    const char *dir = getenv("TMPDIR");
    return dir && *dir ? dir : "/tmp";
}

static FILE *spool_open(void)
{
    char *path = imgq_xasprintf("%s/imgq-submit-XXXXXX", spool_dir());
    int fd = mkstemp(path);
    if (fd < 0) {
        free(path);
        return NULL;
    }
    unlink(path);
    free(path);
    FILE *f = fdopen(fd, "w+b");
    if (!f)
        close(fd);
    return f;
}

/* One job as the first pass leaves it for the second, in the spool: this head, then the
 * idempotency key, the team and the stored spec. */
struct record_head {
    uint32_t idem_len, team_len, spec_len;
    int32_t priority, max_attempts;
};

static int record_put(FILE *spool, const char *idem, const struct imgq_job_spec *spec)
{
    char *json = imgq_job_spec_to_json(spec);
    struct record_head h = {(uint32_t)strlen(idem), (uint32_t)strlen(spec->team),
                            (uint32_t)strlen(json), (int32_t)spec->priority,
                            (int32_t)spec->max_attempts};
    int ok = fwrite(&h, sizeof h, 1, spool) == 1 &&
             fwrite(idem, 1, h.idem_len, spool) == h.idem_len &&
             fwrite(spec->team, 1, h.team_len, spool) == h.team_len &&
             fwrite(json, 1, h.spec_len, spool) == h.spec_len;
    free(json);
    return ok ? 0 : -1;
}

static char *read_string(FILE *spool, uint32_t len)
{
    char *s = imgq_xmalloc((size_t)len + 1);
    if (fread(s, 1, len, spool) != len) {
        free(s);
        return NULL;
    }
    s[len] = '\0';
    return s;
}

/* The next record into p's next item: 1, 0 at the end, -1 if the spool is damaged. */
static int record_get(FILE *spool, struct pending *p)
{
    struct record_head h;
    size_t head = fread(&h, 1, sizeof h, spool);
    if (head != sizeof h)
        return head == 0 && feof(spool) ? 0 : -1; /* (part of a head: the file was cut) */
    size_t i = p->n;
    p->idems[i] = read_string(spool, h.idem_len);
    p->teams[i] = read_string(spool, h.team_len);
    p->specs[i] = read_string(spool, h.spec_len);
    p->n++; /* (freed by pending_clear, whole or not) */
    if (!p->idems[i] || !p->teams[i] || !p->specs[i])
        return -1;
    p->items[i] = (struct imgq_submit_item){p->idems[i], (enum imgq_priority)h.priority,
                                            p->teams[i], p->specs[i], h.max_attempts};
    return 1;
}

/* The idempotency key of a valid line: its team and "id", or its team, batch, line number and
 * content (a new string). */
static char *line_key(const struct imgq_job_spec *spec, const char *batch, size_t lineno,
                      const char *line, size_t len)
{
    if (spec->id)
        return imgq_xasprintf("%s\x1f%s", spec->team, spec->id);
    char hash[65];
    sha256_hex(line, len, hash);
    return imgq_xasprintf("%s\x1f@%s:%zu:%.32s", spec->team, batch, lineno, hash);
}

/* With --json, every error also goes here, printed as {"ok": false, "errors": [...]}. */
static json_t *submit_errors;
static const char *submit_file = ""; /* the FILE of "FILE:LINE:" */

/*
 * An error of the submission: "imgq submit: MESSAGE" (line 0) or "FILE:LINE: FIELD: MESSAGE" on
 * stderr, and an entry {"line", "field", "reason"} of the --json document; IMGQ_EXIT_USAGE for
 * a flag's error (field "--..." and line 0), else IMGQ_EXIT_FAIL.
 */
__attribute__((format(printf, 3, 4))) static int submit_error(size_t line, const char *field,
                                                              const char *fmt, ...);
static int submit_error(size_t line, const char *field, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (line)
        fprintf(stderr, "%s:%zu: %s: %s\n", submit_file, line, field ? field : "", msg);
    else
        fprintf(stderr, "imgq submit: %s\n", msg);
    if (submit_errors)
        json_array_append_new(
            submit_errors, json_pack("{s:o, s:o, s:s}", "line",
                                     line ? json_integer((json_int_t)line) : json_null(), "field",
                                     field ? json_string(field) : json_null(), "reason", msg));
    return field && field[0] == '-' && !line ? IMGQ_EXIT_USAGE : IMGQ_EXIT_FAIL;
}

static int submit(const struct imgq_cli_args *a, int json);

int imgq_cmd_submit(int argc, char **argv)
{
    int json = 0;
    static const char *const flags[] = {"batch=",
                                        "not-before=",
                                        "deadline=",
                                        "window=",
                                        "tz=",
                                        "priority=",
                                        "team=",
                                        "route=",
                                        "max-attempts=",
                                        "max-generations=",
                                        "json",
                                        "dry-run",
                                        "on-budget-exhausted=",
                                        "max-cost=",
                                        "webhook=",
                                        NULL};
    static const struct imgq_cli_cmd cmd = {
        "imgq submit",
        "usage: imgq submit FILE.jsonl|- [--batch NAME] [--priority low|normal|high] [--team T]\n"
        "         [--route R] [--max-attempts N] [--max-generations N] [--not-before TIME]\n"
        "         [--deadline TIME] [--window HH:MM-HH:MM [--tz ZONE]] [--max-cost USD]\n"
        "         [--on-budget-exhausted wait|fail] [--webhook URL] [--dry-run] [--json]\n"
        "  validate every line, then enqueue them all as one batch (or nothing)\n"
        "  --json: one JSON document on stdout, {\"ok\": true, ...} or\n"
        "          {\"ok\": false, \"errors\": [{\"line\", \"field\", \"reason\"}, ...]}\n"
        "TIME: +30m, +2h, +1d, 2026-11-23T01:00:00Z, or local 2026-11-23T01:00 (--tz)\n",
        flags,
        1,
        1,
        "FILE.jsonl (or - for stdin)"};
    struct imgq_cli_args a;
    int st = imgq__cli_parse(&cmd, argc, argv, &a);
    if (st >= 0)
        return st;
    json = imgq__cli_set(&a, "json");
    submit_errors = json ? json_array() : NULL;
    int rc = submit(&a, json);
    if (json && rc != IMGQ_EXIT_OK) {
        if (json_array_size(submit_errors) == 0)
            json_array_append_new(submit_errors,
                                  json_pack("{s:n, s:n, s:s}", "line", "field", "reason",
                                            "the submission failed (see stderr)"));
        json_t *doc = json_pack("{s:b, s:O}", "ok", 0, "errors", submit_errors);
        char *text = json_dumps(doc, JSON_COMPACT);
        printf("%s\n", text);
        free(text);
        json_decref(doc);
    }
    json_decref(submit_errors);
    submit_errors = NULL;
    return rc;
}

static int submit(const struct imgq_cli_args *a, int json)
{
    const char *batch = imgq__cli_opt(a, "batch");
    struct imgq_job_defaults d = {.priority = IMGQ_PRIO_NORMAL, .max_attempts = 5};
    int dry_run = imgq__cli_set(a, "dry-run");
    const char *not_before = imgq__cli_opt(a, "not-before"),
               *deadline = imgq__cli_opt(a, "deadline"), *window = imgq__cli_opt(a, "window"),
               *tz = imgq__cli_opt(a, "tz");
    /* --on-budget-exhausted wait|fail */
    const char *on_budget = imgq__cli_opt(a, "on-budget-exhausted");
    const char *webhook = imgq__cli_opt(a, "webhook"); /* the batch's URL */
    imgq_micros max_cost = -1; /* --max-cost: refuse a file whose worst case is over it */
    const char *v;
    if ((v = imgq__cli_opt(a, "priority"))) {
        enum imgq_priority pr;
        if (imgq_priority_parse(v, &pr) != 0)
            return submit_error(0, "--priority", "--priority '%s': use low, normal or high", v);
        d.priority = pr;
    }
    d.team = imgq__cli_opt(a, "team");
    d.route = imgq__cli_opt(a, "route");
    if ((v = imgq__cli_opt(a, "max-attempts"))) {
        d.max_attempts = atoi(v);
        if (d.max_attempts < 1 || d.max_attempts > 100)
            return submit_error(0, "--max-attempts", "--max-attempts '%s': use 1 to 100", v);
    }
    if ((v = imgq__cli_opt(a, "max-generations"))) {
        d.max_generations = atoi(v);
        if (d.max_generations < 1 || d.max_generations > 100)
            return submit_error(0, "--max-generations", "--max-generations '%s': use 1 to 100", v);
    }
    if (on_budget && strcmp(on_budget, "wait") != 0 && strcmp(on_budget, "fail") != 0)
        return submit_error(0, "--on-budget-exhausted",
                            "--on-budget-exhausted '%s': use wait or fail", on_budget);
    if (webhook && imgq__cli_check_url("imgq submit: --webhook", webhook) != 0)
        return submit_error(0, "--webhook", "--webhook '%s': refused (see above)", webhook);
    if ((v = imgq__cli_opt(a, "max-cost")) && (imgq_money_parse(v, &max_cost) != 0 || max_cost < 0))
        return submit_error(0, "--max-cost", "--max-cost '%s': use dollars, e.g. 250 or 12.50", v);
    const char *path = a->args[0];
    char batch_buf[80];
    if (batch && !valid_batch_name(batch))
        return submit_error(0, "--batch", "--batch '%s': use 1-64 letters, digits, '-', '_', '.'",
                            batch);
    if (!batch) {
        char rnd[16];
        random_id('b', rnd, 9);
        time_t now = time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        char stamp[32];
        strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
        snprintf(batch_buf, sizeof batch_buf, "b%s-%s", stamp, rnd + 1);
        batch = batch_buf;
    }
    /* The schedule: checked before anything else is read, so a typo costs nothing. */
    struct imgq_batch_schedule sched = {0, 0, NULL};
    char *plan = NULL, problem[256];
    /* Relative times count from the queue's clock (Redis' time, which 'imgq clock' may
     * shift), the one every worker goes by. */
    int64_t now_ms = (int64_t)time(NULL) * 1000;
    if (not_before || deadline || window) {
        imgq_queue *q0 = imgq__cli_queue();
        if (!q0 || imgq_queue_now_ms(q0, &now_ms) != 0)
            return submit_error(0, NULL, "cannot read the queue's clock");
    }
    if (tz && imgq_tz_check(tz) != 0)
        return submit_error(0, "--tz", "--tz '%s' is not a time zone of this system", tz);
    if ((not_before && imgq_time_parse(not_before, tz, now_ms, &sched.not_before_ms, problem,
                                       sizeof problem) != 0) ||
        (deadline &&
         imgq_time_parse(deadline, tz, now_ms, &sched.deadline_ms, problem, sizeof problem) != 0) ||
        (window && imgq_window_plan(window, tz, now_ms, IMGQ_WINDOW_PLAN_DAYS, &plan, problem,
                                    sizeof problem) != 0))
        return submit_error(0, "--not-before/--deadline/--window", "%s", problem);
    if (sched.deadline_ms && sched.deadline_ms <= now_ms) {
        free(plan);
        return submit_error(0, "--deadline", "--deadline '%s' has already passed", deadline);
    }
    if (sched.deadline_ms && sched.not_before_ms && sched.deadline_ms <= sched.not_before_ms) {
        free(plan);
        return submit_error(0, "--deadline", "--deadline is not after --not-before");
    }
    sched.windows = plan;
    const imgq_catalog *cat = imgq__cli_catalog();
    if (!cat) {
        free(plan);
        return submit_error(0, NULL, "cannot load the catalog %s", imgq__cli_config()->catalog);
    }
    if (d.route && !imgq_catalog_route(cat, d.route)) {
        free(plan);
        return submit_error(0, "--route", "--route '%s' is not a route of the catalog", d.route);
    }
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) {
        submit_error(0, NULL, "%s: cannot read: %m", path);
        free(plan);
        return IMGQ_EXIT_FAIL;
    }
    FILE *spool = dry_run ? NULL : spool_open();
    if (!dry_run && !spool) {
        submit_error(0, NULL, "cannot create a temporary file in %s (TMPDIR): %m", spool_dir());
        if (f != stdin)
            fclose(f);
        free(plan);
        return IMGQ_EXIT_FAIL;
    }
    /* "model": "auto" prefers models that succeed: the queue's observed rates, if any. */
    struct imgq_model_stats *stats = NULL;
    imgq_queue *sq = imgq__cli_queue_quiet();
    if (!sq || imgq_queue_model_stats(sq, &stats, &d.nmodel_stats) != 0) {
        stats = NULL;
        d.nmodel_stats = 0;
    }
    d.model_stats = stats;
    /* --max-cost bounds what the worker may reserve: ceilings scaled by the catalog drift. */
    struct imgq_drift drift = {0};
    char derr[256];
    if (max_cost >= 0 && sq &&
        imgq_drift_load(imgq_queue_redis(sq), imgq_queue_keys(sq), &drift, derr, sizeof derr) != 0)
        fprintf(stderr, "imgq submit: --max-cost: catalog drift not applied: %s\n", derr);
    const char *shown = strcmp(path, "-") == 0 ? "<stdin>" : path;
    submit_file = shown;
    time_t today = time(NULL);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    size_t lineno = 0, jobs = 0, bad = 0;
    int rc = IMGQ_EXIT_OK;
    struct imgq_quote worst;
    imgq_quote_init(&worst);

    /* Pass 1: validate everything, report every bad line. */
    while ((len = getline(&line, &cap, f)) != -1) {
        lineno++;
        struct imgq_job_spec spec;
        int pr = imgq__cli_parse_line(cat, line, (size_t)len, &d, today, shown, lineno, &spec,
                                      submit_errors);
        if (pr != 0) {
            bad += pr < 0;
            continue;
        }
        /* Every URL the job gives the worker to post to passes the SSRF guard now. */
        const char *scorer =
            json_string_value(json_object_get(json_object_get(spec.pipeline, "select"), "url"));
        const char *url_field = spec.webhook ? "webhook" : "pipeline.select.url";
        if ((spec.webhook && imgq__cli_check_url("webhook", spec.webhook) != 0) ||
            (scorer && imgq__cli_check_url("pipeline.select.url", scorer) != 0)) {
            submit_error(lineno, url_field, "refused (above)");
            imgq_job_spec_clear(&spec);
            bad++;
            continue;
        }
        struct imgq_job_quote jq;
        int qr = max_cost < 0 ? 0 : imgq_quote_job_at(cat, &spec, NULL, today, &drift, &jq);
        if (qr == 0 && max_cost >= 0)
            qr = imgq_quote_add(&worst, &jq);
        if (qr) {
            imgq_job_spec_clear(&spec);
            bad++;
            submit_error(lineno, "(cost)", "cannot be priced with the catalog: %s",
                         imgq_strerror(qr));
            continue;
        }
        /* As the second pass will send it (once a line is bad, nothing will be sent). */
        if (spool && !bad) {
            char *idem = line_key(&spec, batch, lineno, line, (size_t)len);
            int wr = record_put(spool, idem, &spec);
            free(idem);
            if (wr != 0) {
                imgq_job_spec_clear(&spec);
                rc = submit_error(0, NULL, "cannot write a temporary file in %s (TMPDIR): %m",
                                  spool_dir());
                goto out;
            }
        }
        imgq_job_spec_clear(&spec);
        jobs++;
    }
    if (ferror(f)) {
        rc = submit_error(0, NULL, "%s: read error", shown);
        goto out;
    }
    if (spool && (fflush(spool) != 0 || ferror(spool))) {
        rc = submit_error(0, NULL, "cannot write a temporary file in %s (TMPDIR): %m", spool_dir());
        goto out;
    }
    if (bad) {
        fprintf(stderr, "imgq submit: %zu of %zu lines invalid; nothing was enqueued\n", bad,
                bad + jobs);
        rc = IMGQ_EXIT_FAIL;
        goto out;
    }
    if (jobs == 0) {
        rc = submit_error(0, NULL, "%s has no jobs; nothing was enqueued", shown);
        goto out;
    }
    if (max_cost >= 0 && worst.total.worst > max_cost) {
        char w[48], m[48];
        imgq_quote_money(worst.total.worst, w, sizeof w);
        imgq_quote_money(max_cost, m, sizeof m);
        rc = submit_error(0, "--max-cost",
                          "worst case %s for %zu jobs is over --max-cost %s; nothing was "
                          "enqueued (imgq quote shows it per model)",
                          w, jobs, m);
        rc = IMGQ_EXIT_FAIL;
        goto out;
    }
    if (dry_run) {
        if (json)
            printf("{\"ok\":true,\"valid\":%zu,\"enqueued\":0}\n", jobs);
        else
            fprintf(stderr, "imgq submit: %zu jobs valid (dry run, nothing enqueued)\n", jobs);
        goto out;
    }

    /* Pass 2: enqueue. */
    imgq_queue *q = imgq__cli_queue();
    if (!q) {
        rc = IMGQ_EXIT_FAIL;
        goto out;
    }
    if (on_budget || webhook) {
        /* Batch options, set before its first job can run: a submission with no jobs. */
        char oerr[512];
        const char *oargs[9] = {batch, "0", "0", "0", ""};
        int na = 5;
        if (on_budget) {
            oargs[na++] = "on_budget_exhausted";
            oargs[na++] = on_budget;
        }
        if (webhook) {
            oargs[na++] = "webhook";
            oargs[na++] = webhook;
        }
        if (imgq_queue_script(q, IMGQ_SCRIPT_SUBMIT, na, oargs, NULL, oerr, sizeof oerr) != 0) {
            rc = submit_error(0, NULL, "%s", oerr);
            goto out;
        }
    }
    struct pending *bufs = imgq_xcalloc(2, sizeof *bufs), *p = &bufs[0];
    struct submitter s = {.q = q, .batch = batch, .sched = &sched};
    if (uv_mutex_init(&s.mu) != 0 || uv_cond_init(&s.cv) != 0 ||
        uv_thread_create(&s.thread, submitter_main, &s) != 0) {
        fprintf(stderr, "imgq submit: cannot start the enqueue thread\n");
        abort(); /* resources only: nothing was enqueued, and this does not happen */
    }
    rewind(spool);
    for (;;) {
        int got = record_get(spool, p);
        if (got < 0) {
            rc = submit_error(0, NULL, "cannot read the temporary file in %s back", spool_dir());
            break;
        }
        if (got == 0)
            break;
        if (p->n == CHUNK) {
            if (flush(&s, p) != 0) {
                rc = IMGQ_EXIT_FAIL;
                break;
            }
            p = p == &bufs[0] ? &bufs[1] : &bufs[0]; /* parse into the other one meanwhile */
        }
    }
    if (rc == IMGQ_EXIT_OK && flush(&s, p) != 0)
        rc = IMGQ_EXIT_FAIL;
    if (submitter_finish(&s) != 0)
        rc = IMGQ_EXIT_FAIL;
    pending_clear(&bufs[0]);
    pending_clear(&bufs[1]);
    if (s.total_created > 0) {
        /* One batch.submitted for the whole submission, with its totals. */
        char eerr[512];
        if (imgq_queue_submitted(q, batch, s.total_created, s.total_existing, eerr, sizeof eerr) !=
            0)
            fprintf(stderr, "imgq submit: batch %s: the batch.submitted event: %s\n", batch, eerr);
    }
    if (rc == IMGQ_EXIT_OK) {
        if (json)
            printf("{\"ok\":true,\"batch\":\"%s\",\"created\":%zu,\"existing\":%zu}\n", batch,
                   s.total_created, s.total_existing);
        else {
            printf("%s\n", batch);
            fprintf(stderr, "imgq submit: batch %s: %zu jobs enqueued, %zu already present\n",
                    batch, s.total_created, s.total_existing);
        }
    } else {
        submit_error(0, NULL,
                     "batch %s: %zu jobs were enqueued before the failure; submit the same file "
                     "with --batch %s again to enqueue the rest without duplicates",
                     batch, s.total_created, batch);
    }
    free(bufs);
out:
    imgq_quote_clear(&worst);
    imgq_drift_clear(&drift);
    imgq_queue_model_stats_free(stats, d.nmodel_stats);
    free(plan);
    free(line);
    if (f != stdin)
        fclose(f);
    if (spool)
        fclose(spool);
    return rc;
}
