/*
 * cmd_quote.c - imgq quote FILE.jsonl: what a file of jobs will cost, before it is submitted.
 *
 * Every line is validated exactly as imgq submit validates it (imgq_job_parse, the same
 * FILE:LINE: field: reason messages); nothing is enqueued and Redis is not needed (when it is
 * there, "model": "auto" routes with the queue's observed success rates, as submit does).
 * Each job is priced by imgq_quote_job: the worst case is what the worker reserves before each
 * provider call, the expected case the catalog's figure for the images (quote.h).  The file
 * is read once, line by line, so a large file quotes in flat memory.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "imgq/job.h"
#include "imgq/quote.h"
#include "imgq/router.h"

static void print_row(const char *name, const struct imgq_quote_row *r)
{
    char jobs[32], calls[32], images[32], e[48], w[48];
    imgq__cli_grouped(r->jobs, jobs, sizeof jobs);
    imgq__cli_grouped(r->calls, calls, sizeof calls);
    imgq__cli_grouped(r->images, images, sizeof images);
    imgq_quote_money(r->expected, e, sizeof e);
    imgq_quote_money(r->worst, w, sizeof w);
    printf("%-26s %10s %10s %10s %16s %16s\n", name, jobs, calls, images, e, w);
}

static json_t *row_json(const struct imgq_quote_row *r)
{
    char e[48], w[48];
    imgq_quote_money(r->expected, e, sizeof e);
    imgq_quote_money(r->worst, w, sizeof w);
    json_t *o = json_object();
    if (r->model)
        json_object_set_new(o, "model", json_string(r->model));
    json_object_set_new(o, "jobs", json_integer(r->jobs));
    json_object_set_new(o, "calls", json_integer(r->calls));
    json_object_set_new(o, "images", json_integer(r->images));
    json_object_set_new(o, "expected_micros", json_integer(r->expected));
    json_object_set_new(o, "expected", json_string(e));
    json_object_set_new(o, "worst_micros", json_integer(r->worst));
    json_object_set_new(o, "worst", json_string(w));
    return o;
}

int imgq_cmd_quote(int argc, char **argv)
{
    const char *route_name = NULL;
    int json = 0;
    static const struct option opts[] = {{"route", required_argument, NULL, 'r'},
                                         {"json", no_argument, NULL, 'j'},
                                         {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'r':
            route_name = optarg;
            break;
        case 'j':
            json = 1;
            break;
        default:
            return IMGQ_EXIT_USAGE;
        }
    }
    if (optind + 1 != argc) {
        fprintf(stderr, "usage: imgq quote FILE.jsonl|- [--route R] [--json]\n");
        return IMGQ_EXIT_USAGE;
    }
    const char *path = argv[optind];
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
    /* The same defaults and routing inputs as imgq submit without flags. */
    struct imgq_job_defaults d = {.priority = IMGQ_PRIO_NORMAL, .max_attempts = 5};
    struct imgq_model_stats *stats = NULL;
    imgq_queue *sq = imgq__cli_queue_quiet();
    if (!sq || imgq_queue_model_stats(sq, &stats, &d.nmodel_stats) != 0) {
        stats = NULL;
        d.nmodel_stats = 0;
    }
    d.model_stats = stats;
    time_t today = time(NULL);
    struct imgq_quote q;
    imgq_quote_init(&q);
    char *line = NULL;
    size_t cap = 0, lineno = 0, jobs = 0, bad = 0;
    ssize_t len;
    int rc = IMGQ_EXIT_OK;
    while ((len = getline(&line, &cap, f)) != -1) {
        lineno++;
        struct imgq_job_spec spec;
        int pr = imgq__cli_parse_line(cat, line, (size_t)len, &d, today, shown, lineno, &spec);
        if (pr != 0) {
            bad += pr < 0;
            continue;
        }
        struct imgq_job_quote jq;
        int r = imgq_quote_job(cat, &spec, route, &jq);
        if (r == 0)
            r = imgq_quote_add(&q, &jq);
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
    if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "route", route ? json_string(route->name) : json_null());
        json_t *rows = json_array();
        for (size_t i = 0; i < q.nrows; i++)
            json_array_append_new(rows, row_json(&q.rows[i]));
        json_object_set_new(o, "models", rows);
        json_object_set_new(o, "total", row_json(&q.total));
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
        printf("%-26s %10s %10s %10s %16s %16s\n", "model", "jobs", "calls", "images", "expected",
               "worst case");
        for (size_t i = 0; i < q.nrows; i++)
            print_row(q.rows[i].model, &q.rows[i]);
        print_row("TOTAL", &q.total);
    }
out:
    imgq_quote_clear(&q);
    imgq_queue_model_stats_free(stats, d.nmodel_stats);
    free(line);
    if (f != stdin)
        fclose(f);
    return rc;
}
