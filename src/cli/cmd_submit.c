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
#include <getopt.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
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

int imgq_cmd_submit(int argc, char **argv)
{
    const char *batch = NULL;
    struct imgq_job_defaults d = {.priority = IMGQ_PRIO_NORMAL, .max_attempts = 5};
    int json = 0, dry_run = 0;
    const char *not_before = NULL, *deadline = NULL, *window = NULL, *tz = NULL;
    const char *on_budget = NULL; /* --on-budget-exhausted wait|fail */
    const char *webhook = NULL;   /* --webhook: the batch's URL */
    imgq_micros max_cost = -1;    /* --max-cost: refuse a file whose worst case is over it */
    static const struct option opts[] = {{"batch", required_argument, NULL, 'b'},
                                         {"not-before", required_argument, NULL, 'B'},
                                         {"deadline", required_argument, NULL, 'D'},
                                         {"window", required_argument, NULL, 'W'},
                                         {"tz", required_argument, NULL, 'Z'},
                                         {"priority", required_argument, NULL, 'p'},
                                         {"team", required_argument, NULL, 't'},
                                         {"route", required_argument, NULL, 'r'},
                                         {"max-attempts", required_argument, NULL, 'm'},
                                         {"max-generations", required_argument, NULL, 'G'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"dry-run", no_argument, NULL, 'n'},
                                         {"on-budget-exhausted", required_argument, NULL, 'O'},
                                         {"max-cost", required_argument, NULL, 'C'},
                                         {"webhook", required_argument, NULL, 'H'},
                                         {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'b':
            batch = optarg;
            break;
        case 'p': {
            enum imgq_priority pr;
            if (imgq_priority_parse(optarg, &pr) != 0) {
                fprintf(stderr, "imgq submit: --priority '%s': use low, normal or high\n", optarg);
                return IMGQ_EXIT_USAGE;
            }
            d.priority = pr;
            break;
        }
        case 't':
            d.team = optarg;
            break;
        case 'r':
            d.route = optarg;
            break;
        case 'm':
            d.max_attempts = atoi(optarg);
            if (d.max_attempts < 1 || d.max_attempts > 100) {
                fprintf(stderr, "imgq submit: --max-attempts '%s': use 1 to 100\n", optarg);
                return IMGQ_EXIT_USAGE;
            }
            break;
        case 'G':
            d.max_generations = atoi(optarg);
            if (d.max_generations < 1 || d.max_generations > 100) {
                fprintf(stderr, "imgq submit: --max-generations '%s': use 1 to 100\n", optarg);
                return IMGQ_EXIT_USAGE;
            }
            break;
        case 'j':
            json = 1;
            break;
        case 'B':
            not_before = optarg;
            break;
        case 'D':
            deadline = optarg;
            break;
        case 'W':
            window = optarg;
            break;
        case 'Z':
            tz = optarg;
            break;
        case 'n':
            dry_run = 1;
            break;
        case 'O':
            if (strcmp(optarg, "wait") != 0 && strcmp(optarg, "fail") != 0) {
                fprintf(stderr, "imgq submit: --on-budget-exhausted '%s': use wait or fail\n",
                        optarg);
                return IMGQ_EXIT_USAGE;
            }
            on_budget = optarg;
            break;
        case 'H':
            if (imgq__cli_check_url("imgq submit: --webhook", optarg) != 0)
                return IMGQ_EXIT_USAGE;
            webhook = optarg;
            break;
        case 'C':
            if (imgq_money_parse(optarg, &max_cost) != 0 || max_cost < 0) {
                fprintf(stderr, "imgq submit: --max-cost '%s': use dollars, e.g. 250 or 12.50\n",
                        optarg);
                return IMGQ_EXIT_USAGE;
            }
            break;
        default:
            return IMGQ_EXIT_USAGE;
        }
    }
    if (optind + 1 != argc) {
        fprintf(stderr, "usage: imgq submit FILE.jsonl|- [--batch NAME] [--priority P] "
                        "[--team T] [--route R] [--max-attempts N] [--max-generations N]\n"
                        "       [--not-before TIME] [--window HH:MM-HH:MM [--tz ZONE]] "
                        "[--deadline TIME] "
                        "[--max-cost USD] [--webhook URL] [--dry-run] [--json]\n");
        return IMGQ_EXIT_USAGE;
    }
    const char *path = argv[optind];
    char batch_buf[80];
    if (batch && !valid_batch_name(batch)) {
        fprintf(stderr, "imgq submit: --batch '%s': use 1-64 letters, digits, '-', '_', '.'\n",
                batch);
        return IMGQ_EXIT_USAGE;
    }
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
        if (!q0 || imgq_queue_now_ms(q0, &now_ms) != 0) {
            fprintf(stderr, "imgq submit: cannot read the queue's clock\n");
            return IMGQ_EXIT_FAIL;
        }
    }
    if (tz && imgq_tz_check(tz) != 0) {
        fprintf(stderr, "imgq submit: --tz '%s' is not a time zone of this system\n", tz);
        return IMGQ_EXIT_USAGE;
    }
    if ((not_before && imgq_time_parse(not_before, tz, now_ms, &sched.not_before_ms, problem,
                                       sizeof problem) != 0) ||
        (deadline &&
         imgq_time_parse(deadline, tz, now_ms, &sched.deadline_ms, problem, sizeof problem) != 0) ||
        (window && imgq_window_plan(window, tz, now_ms, IMGQ_WINDOW_PLAN_DAYS, &plan, problem,
                                    sizeof problem) != 0)) {
        fprintf(stderr, "imgq submit: %s\n", problem);
        return IMGQ_EXIT_USAGE;
    }
    if (sched.deadline_ms && sched.deadline_ms <= now_ms) {
        fprintf(stderr, "imgq submit: --deadline '%s' has already passed\n", deadline);
        free(plan);
        return IMGQ_EXIT_USAGE;
    }
    if (sched.deadline_ms && sched.not_before_ms && sched.deadline_ms <= sched.not_before_ms) {
        fprintf(stderr, "imgq submit: --deadline is not after --not-before\n");
        free(plan);
        return IMGQ_EXIT_USAGE;
    }
    sched.windows = plan;
    const imgq_catalog *cat = imgq__cli_catalog();
    if (!cat) {
        free(plan);
        return IMGQ_EXIT_FAIL;
    }
    if (d.route && !imgq_catalog_route(cat, d.route)) {
        fprintf(stderr, "imgq submit: --route '%s' is not a route of the catalog\n", d.route);
        free(plan);
        return IMGQ_EXIT_USAGE;
    }
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "imgq submit: %s: cannot read: %m\n", path);
        free(plan);
        return IMGQ_EXIT_FAIL;
    }
    FILE *spool = dry_run ? NULL : spool_open();
    if (!dry_run && !spool) {
        fprintf(stderr, "imgq submit: cannot create a temporary file in %s (TMPDIR): %m\n",
                spool_dir());
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
        int pr = imgq__cli_parse_line(cat, line, (size_t)len, &d, today, shown, lineno, &spec);
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
            fprintf(stderr, "%s:%zu: %s: refused (above)\n", shown, lineno, url_field);
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
            fprintf(stderr, "%s:%zu: (cost): cannot be priced with the catalog: %s\n", shown,
                    lineno, imgq_strerror(qr));
            continue;
        }
        /* As the second pass will send it (once a line is bad, nothing will be sent). */
        if (spool && !bad) {
            char *idem = line_key(&spec, batch, lineno, line, (size_t)len);
            int wr = record_put(spool, idem, &spec);
            free(idem);
            if (wr != 0) {
                imgq_job_spec_clear(&spec);
                fprintf(stderr, "imgq submit: cannot write a temporary file in %s (TMPDIR): %m\n",
                        spool_dir());
                rc = IMGQ_EXIT_FAIL;
                goto out;
            }
        }
        imgq_job_spec_clear(&spec);
        jobs++;
    }
    if (ferror(f)) {
        fprintf(stderr, "imgq submit: %s: read error\n", shown);
        rc = IMGQ_EXIT_FAIL;
        goto out;
    }
    if (spool && (fflush(spool) != 0 || ferror(spool))) {
        fprintf(stderr, "imgq submit: cannot write a temporary file in %s (TMPDIR): %m\n",
                spool_dir());
        rc = IMGQ_EXIT_FAIL;
        goto out;
    }
    if (bad) {
        fprintf(stderr, "imgq submit: %zu of %zu lines invalid; nothing was enqueued\n", bad,
                bad + jobs);
        rc = IMGQ_EXIT_FAIL;
        goto out;
    }
    if (jobs == 0) {
        fprintf(stderr, "imgq submit: %s has no jobs; nothing was enqueued\n", shown);
        rc = IMGQ_EXIT_FAIL;
        goto out;
    }
    if (max_cost >= 0 && worst.total.worst > max_cost) {
        char w[48], m[48];
        imgq_quote_money(worst.total.worst, w, sizeof w);
        imgq_quote_money(max_cost, m, sizeof m);
        fprintf(stderr,
                "imgq submit: worst case %s for %zu jobs is over --max-cost %s; nothing was "
                "enqueued (imgq quote shows it per model)\n",
                w, jobs, m);
        rc = IMGQ_EXIT_FAIL;
        goto out;
    }
    if (dry_run) {
        if (json)
            printf("{\"valid\":%zu,\"enqueued\":0}\n", jobs);
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
            fprintf(stderr, "imgq submit: %s\n", oerr);
            rc = IMGQ_EXIT_FAIL;
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
            fprintf(stderr, "imgq submit: cannot read the temporary file in %s back\n",
                    spool_dir());
            rc = IMGQ_EXIT_FAIL;
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
            printf("{\"batch\":\"%s\",\"created\":%zu,\"existing\":%zu}\n", batch, s.total_created,
                   s.total_existing);
        else {
            printf("%s\n", batch);
            fprintf(stderr, "imgq submit: batch %s: %zu jobs enqueued, %zu already present\n",
                    batch, s.total_created, s.total_existing);
        }
    } else {
        fprintf(stderr,
                "imgq submit: batch %s: %zu jobs were enqueued before the failure; submit the "
                "same file with --batch %s again to enqueue the rest without duplicates\n",
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
