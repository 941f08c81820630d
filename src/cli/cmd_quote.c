/*
 * cmd_quote.c - imgq quote FILE.jsonl: what a file of jobs will cost, before it is submitted.
 *
 * Every line is validated exactly as imgq submit validates it (imgq_job_parse, the same
 * FILE:LINE: field: reason messages); nothing is enqueued and Redis is not needed (when it is
 * there, "model": "auto" routes with the queue's observed success rates, as submit does).
 * Each job is priced by imgq_quote_job_at, per stage (a pipeline's drafts and refine): the worst
 * case is what the worker reserves before each provider call, whichever model serves it, the
 * expected case the catalog's figure for the images (quote.h).  Rows are per model and stage.
 * --budgets (needs Redis) adds, for each budget set for the file's jobs, the room left in its
 * current window and whether the file's worst case there fits.  The file is read once, line by
 * line, so a large file quotes in flat memory.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "imgq/drift.h"
#include "imgq/alloc.h"
#include "imgq/budget.h"
#include "imgq/job.h"
#include "imgq/quote.h"
#include "imgq/router.h"

/* "gpt-image-1-mini (draft)": a row's model and, for a pipeline's, its stage. */
static void row_label(const struct imgq_quote_row *r, char *buf, size_t len)
{
    if (r->stage)
        snprintf(buf, len, "%s (%s)", r->model, r->stage);
    else
        snprintf(buf, len, "%s", r->model ? r->model : "TOTAL");
}

static void print_row(const struct imgq_quote_row *r)
{
    char name[160], jobs[32], calls[32], images[32], e[48], o[48], w[48];
    row_label(r, name, sizeof name);
    imgq__cli_grouped(r->jobs, jobs, sizeof jobs);
    imgq__cli_grouped(r->calls, calls, sizeof calls);
    imgq__cli_grouped(r->images, images, sizeof images);
    imgq_quote_money(r->expected, e, sizeof e);
    imgq_quote_money(r->own_worst, o, sizeof o);
    imgq_quote_money(r->worst, w, sizeof w);
    printf("%-34s %10s %10s %10s %16s %16s %16s\n", name, jobs, calls, images, e, o, w);
}

static json_t *row_json(const struct imgq_quote_row *r)
{
    char e[48], o[48], w[48];
    imgq_quote_money(r->expected, e, sizeof e);
    imgq_quote_money(r->own_worst, o, sizeof o);
    imgq_quote_money(r->worst, w, sizeof w);
    json_t *j = json_object();
    if (r->model) {
        json_object_set_new(j, "model", json_string(r->model));
        json_object_set_new(j, "stage", r->stage ? json_string(r->stage) : json_null());
    }
    json_object_set_new(j, "jobs", json_integer(r->jobs));
    json_object_set_new(j, "calls", json_integer(r->calls));
    json_object_set_new(j, "images", json_integer(r->images));
    json_object_set_new(j, "expected_micros", json_integer(r->expected));
    json_object_set_new(j, "expected", json_string(e));
    json_object_set_new(j, "own_worst_micros", json_integer(r->own_worst));
    json_object_set_new(j, "own_worst", json_string(o));
    json_object_set_new(j, "worst_micros", json_integer(r->worst));
    json_object_set_new(j, "worst", json_string(w));
    return j;
}

/*
 * --budgets: the worst case of the file summed per budget its calls are reserved against
 * (imgq_budget_scopes, as budget.lua names them).  A stage counts against its model's budget
 * and, since a circuit breaker may move it, against those of every model it may move to
 * (imgq_route_alternatives).
 */
static int budget_add(json_t *sums, const char *name, imgq_micros v)
{
    json_int_t old = json_integer_value(json_object_get(sums, name)), sum;
    if (__builtin_add_overflow(old, (json_int_t)v, &sum))
        return IMGQ_ERANGE;
    json_object_set_new(sums, name, json_integer(sum));
    return 0;
}

static int budget_sums(const imgq_catalog *cat, json_t *sums, const struct imgq_job_spec *spec,
                       const char *batch, const struct imgq_route *route,
                       const struct imgq_job_quote *jq)
{
    const char *route_name = route ? route->name : spec->route;
    char *names[IMGQ_BUDGET_SCOPES];
    size_t n = imgq_budget_scopes(spec->team, batch, NULL, route_name, names);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        if (rc == 0)
            rc = budget_add(sums, names[i], jq->worst);
        free(names[i]);
    }
    for (int k = 0; k < jq->nstages && rc == 0; k++) {
        const struct imgq_model *m = jq->stages[k].model;
        char *name = imgq_xasprintf("model:%s", m->name);
        rc = budget_add(sums, name, jq->stages[k].worst);
        free(name);
        const char *alt[64];
        int nalt = imgq_route_alternatives(cat, spec, m, alt, 64);
        for (int a = 0; a < nalt && rc == 0; a++) {
            name = imgq_xasprintf("model:%s", alt[a]);
            rc = budget_add(sums, name, jq->stages[k].worst);
            free(name);
        }
    }
    return rc;
}

static long long reply_int(json_t *a, size_t i)
{
    json_t *v = json_array_get(a, i);
    return json_is_integer(v)  ? (long long)json_integer_value(v)
           : json_is_string(v) ? atoll(json_string_value(v))
                               : 0;
}

/* Each budget of sums that is set: its room in the current window against the file's worst
 * case there.  A new array, or NULL after printing why. */
static json_t *budget_report(json_t *sums)
{
    imgq_queue *q = imgq__cli_queue();
    if (!q)
        return NULL;
    json_t *out = json_array();
    const char *name;
    json_t *v;
    json_object_foreach(sums, name, v)
    {
        const char *args[] = {"get", name};
        json_t *r = NULL;
        char err[512];
        if (imgq_queue_script(q, IMGQ_SCRIPT_BUDGET, 2, args, &r, err, sizeof err) != 0) {
            fprintf(stderr, "imgq quote: --budgets: %s\n", err);
            json_decref(out);
            return NULL;
        }
        if (json_is_array(r)) { /* else no such budget: it does not apply */
            long long limit = reply_int(r, 3), spent = reply_int(r, 8), reserved = reply_int(r, 9);
            long long room = limit - spent - reserved;
            json_int_t worst = json_integer_value(v);
            json_array_append_new(
                out, json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:b}", "name", name,
                               "window", json_string_value(json_array_get(r, 1)) ?: "", "window_id",
                               json_string_value(json_array_get(r, 5)) ?: "", "limit_micros",
                               (json_int_t)limit, "spent_micros", (json_int_t)spent,
                               "reserved_micros", (json_int_t)reserved, "remaining_micros",
                               (json_int_t)(room > 0 ? room : 0), "worst_micros", worst, "fits",
                               worst <= room));
        }
        json_decref(r);
    }
    return out;
}

static void print_budgets(json_t *budgets)
{
    if (json_array_size(budgets) == 0) {
        printf("no budget applies to these jobs\n");
        return;
    }
    printf("\n%-34s %-6s %-14s %16s %16s  %s\n", "budget", "window", "period", "remaining",
           "worst case", "fits");
    size_t i;
    json_t *b;
    json_array_foreach(budgets, i, b)
    {
        char room[48], worst[48];
        imgq_quote_money(json_integer_value(json_object_get(b, "remaining_micros")), room,
                         sizeof room);
        imgq_quote_money(json_integer_value(json_object_get(b, "worst_micros")), worst,
                         sizeof worst);
        printf("%-34s %-6s %-14s %16s %16s  %s\n", json_string_value(json_object_get(b, "name")),
               json_string_value(json_object_get(b, "window")),
               json_string_value(json_object_get(b, "window_id")), room, worst,
               json_is_true(json_object_get(b, "fits")) ? "yes" : "NO");
    }
}

int imgq_cmd_quote(int argc, char **argv)
{
    const char *route_name = NULL, *batch = NULL;
    int json = 0, budgets = 0;
    /* The same defaults and routing inputs as imgq submit with the same flags. */
    struct imgq_job_defaults d = {.priority = IMGQ_PRIO_NORMAL, .max_attempts = 5};
    static const char *const flags[] = {"route=", "json", "budgets", "team=", "batch=", NULL};
    static const struct imgq_cli_cmd cmd = {
        "imgq quote",
        "usage: imgq quote FILE.jsonl|- [--route R] [--json] [--budgets] [--team T] [--batch B]\n"
        "  expected and worst-case cost per model and stage\n",
        flags,
        1,
        1,
        "FILE.jsonl (or - for stdin)"};
    struct imgq_cli_args a;
    int st = imgq__cli_parse(&cmd, argc, argv, &a);
    if (st >= 0)
        return st;
    route_name = imgq__cli_opt(&a, "route");
    json = imgq__cli_set(&a, "json");
    budgets = imgq__cli_set(&a, "budgets");
    d.team = imgq__cli_opt(&a, "team");
    batch = imgq__cli_opt(&a, "batch");
    const char *path = a.args[0];
    const imgq_catalog *cat = imgq__cli_catalog();
    if (!cat)
        return IMGQ_EXIT_FAIL;
    const struct imgq_route *route = NULL;
    if (route_name && !(route = imgq_catalog_route(cat, route_name))) {
        fprintf(stderr, "imgq quote: --route '%s' is not a route of the catalog\n", route_name);
        return IMGQ_EXIT_USAGE;
    }
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "imgq quote: %s: cannot read: %m\n", path);
        return IMGQ_EXIT_FAIL;
    }
    const char *shown = f == stdin ? "<stdin>" : path;
    struct imgq_model_stats *stats = NULL;
    imgq_queue *sq = imgq__cli_queue_quiet();
    if (!sq || imgq_queue_model_stats(sq, &stats, &d.nmodel_stats) != 0) {
        stats = NULL;
        d.nmodel_stats = 0;
    }
    d.model_stats = stats;
    /* The catalog drift the queue has seen (drift.h): the worker reserves with it. */
    struct imgq_drift drift = {0};
    char derr[256];
    if (sq &&
        imgq_drift_load(imgq_queue_redis(sq), imgq_queue_keys(sq), &drift, derr, sizeof derr) != 0)
        fprintf(stderr, "imgq quote: catalog drift not applied: %s\n", derr);
    time_t today = time(NULL);
    struct imgq_quote q;
    imgq_quote_init(&q);
    json_t *sums = budgets ? json_object() : NULL, *report = NULL;
    char *line = NULL;
    size_t cap = 0, lineno = 0, jobs = 0, bad = 0;
    ssize_t len;
    int rc = IMGQ_EXIT_OK;
    while ((len = getline(&line, &cap, f)) != -1) {
        lineno++;
        struct imgq_job_spec spec;
        int pr =
            imgq__cli_parse_line(cat, line, (size_t)len, &d, today, shown, lineno, &spec, NULL);
        if (pr != 0) {
            bad += pr < 0;
            continue;
        }
        struct imgq_job_quote jq;
        int r = imgq_quote_job_at(cat, &spec, route, today, &drift, &jq);
        if (r == 0)
            r = imgq_quote_add(&q, &jq);
        if (r == 0 && sums)
            r = budget_sums(cat, sums, &spec, batch, route, &jq);
        imgq_job_spec_clear(&spec);
        if (r) {
            bad++;
            fprintf(stderr, "%s:%zu: (cost): cannot be priced with the catalog: %s\n", shown,
                    lineno, imgq_strerror(r));
            continue;
        }
        jobs++;
    }
    if (ferror(f)) {
        fprintf(stderr, "imgq quote: %s: read error\n", shown);
        rc = IMGQ_EXIT_FAIL;
        goto out;
    }
    if (jobs == 0 && bad == 0) {
        fprintf(stderr, "imgq quote: %s has no jobs\n", shown);
        rc = IMGQ_EXIT_FAIL;
        goto out;
    }
    if (bad) {
        fprintf(stderr, "imgq quote: %zu of %zu lines invalid; no quote\n", bad, bad + jobs);
        rc = IMGQ_EXIT_FAIL;
        goto out;
    }
    if (sums && !(report = budget_report(sums))) {
        rc = IMGQ_EXIT_FAIL;
        goto out;
    }
    if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "route", route ? json_string(route->name) : json_null());
        json_t *rows = json_array();
        for (size_t i = 0; i < q.nrows; i++)
            json_array_append_new(rows, row_json(&q.rows[i]));
        json_object_set_new(o, "models", rows);
        json_object_set_new(o, "total", row_json(&q.total));
        if (report)
            json_object_set(o, "budgets", report);
        char *text = json_dumps(o, JSON_COMPACT);
        printf("%s\n", text);
        free(text);
        json_decref(o);
    } else {
        if (route)
            printf("%s: %zu jobs priced on route %s (x%" PRId64 ".%02" PRId64 ")\n", shown, jobs,
                   route->name, route->multiplier_ppm / 1000000,
                   (route->multiplier_ppm % 1000000) / 10000);
        else
            printf("%s: %zu jobs priced on each job's route\n", shown, jobs);
        printf("%-34s %10s %10s %10s %16s %16s %16s\n", "model", "jobs", "calls", "images",
               "expected", "own model", "worst case");
        for (size_t i = 0; i < q.nrows; i++)
            print_row(&q.rows[i]);
        print_row(&q.total);
        if (q.total.worst > q.total.own_worst)
            printf("(the worst case includes the fallbacks a circuit breaker may move jobs to; "
                   "\"own model\" is without them)\n");
        if (report)
            print_budgets(report);
    }
out:
    json_decref(report);
    json_decref(sums);
    imgq_quote_clear(&q);
    imgq_drift_clear(&drift);
    imgq_queue_model_stats_free(stats, d.nmodel_stats);
    free(line);
    if (f != stdin)
        fclose(f);
    return rc;
}
