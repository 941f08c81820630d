/*
 * cmd_route.c - imgq route --explain JOB.json: every candidate model for a "model": "auto"
 * job, its expected cost, and why it was taken or left out.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "imgq/alloc.h"
#include "imgq/job.h"
#include "imgq/router.h"

/* Observed success rates from the queue, if Redis is there; routing works without them. */
static void load_stats(struct imgq_model_stats **s, size_t *n)
{
    *s = NULL;
    *n = 0;
    imgq_queue *q = imgq__cli_queue_quiet();
    if (q && imgq_queue_model_stats(q, s, n) != 0) {
        *s = NULL;
        *n = 0;
    }
}

/*
 * One candidate of --json, with the same keys every time (README "Routing"): quality, size and
 * cost_micros are null when the model was left out before it could be priced (quality also for
 * a model without a quality knob); expected_micros is null when no expected cost was worked out
 * (not priced, or unreliable); success_rate is the rate the router used, 1 without history.
 */
static json_t *candidate_json(const struct imgq_route_candidate *c, const char *verdict)
{
    bool priced = c->eligible || c->cost > 0;
    bool expected = c->eligible || c->expected > 0;
    json_t *o = json_object();
    json_object_set_new(o, "model", json_string(c->model->name));
    json_object_set_new(o, "verdict", json_string(verdict));
    json_object_set_new(o, "quality", priced && c->quality ? json_string(c->quality) : json_null());
    json_object_set_new(o, "size", priced && c->size ? json_string(c->size) : json_null());
    json_object_set_new(o, "cost_micros", priced ? json_integer(c->cost) : json_null());
    json_object_set_new(o, "expected_micros", expected ? json_integer(c->expected) : json_null());
    json_object_set_new(o, "success_rate", json_real(c->success_rate));
    json_object_set_new(o, "reason", json_string(c->reason));
    return o;
}

int imgq_cmd_route(int argc, char **argv)
{
    static const char *const flags[] = {"explain", "json", NULL};
    static const struct imgq_cli_cmd cmd = {"imgq route",
                                            "usage: imgq route --explain JOB.json|- [--json]\n"
                                            "  why \"model\": \"auto\" picks what it picks\n",
                                            flags,
                                            1,
                                            1,
                                            "JOB.json (or - for stdin)"};
    struct imgq_cli_args a;
    int st = imgq__cli_parse(&cmd, argc, argv, &a);
    if (st >= 0)
        return st;
    if (!imgq__cli_set(&a, "explain"))
        return imgq__cli_error(&a, "missing --explain");
    const char *path = a.args[0];
    int json = imgq__cli_set(&a, "json");
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "imgq route: %s: cannot read: %m\n", path);
        return IMGQ_EXIT_FAIL;
    }
    char *text = NULL;
    size_t cap = 0, len = 0;
    char buf[4096];
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, f)) > 0) {
        if (len + got + 1 > cap) {
            cap = (len + got + 1) * 2;
            text = imgq_xrealloc(text, cap);
        }
        memcpy(text + len, buf, got);
        len += got;
    }
    if (f != stdin)
        fclose(f);
    const imgq_catalog *cat = imgq__cli_catalog();
    if (!cat) {
        free(text);
        return IMGQ_EXIT_FAIL;
    }
    struct imgq_job_defaults d = {.priority = IMGQ_PRIO_NORMAL, .max_attempts = 5};
    struct imgq_model_stats *stats;
    load_stats(&stats, &d.nmodel_stats);
    d.model_stats = stats;
    struct imgq_route_result res;
    struct imgq_job_problem why;
    int rc = imgq_job_route(cat, text ? text : "", len, &d, time(NULL), &res, &why);
    free(text);
    if (rc && rc != IMGQ_ENOTFOUND) {
        fprintf(stderr, "imgq route: %s: %s: %s\n", path, why.field, why.reason);
        imgq_route_result_clear(&res);
        imgq_queue_model_stats_free(stats, d.nmodel_stats);
        return IMGQ_EXIT_FAIL;
    }
    json_t *arr = json ? json_array() : NULL;
    if (!json)
        printf("%-24s %-9s %14s %8s  %s\n", "MODEL", "", "EXPECTED", "SUCCESS", "WHY");
    for (size_t i = 0; i < res.ncandidates; i++) {
        const struct imgq_route_candidate *c = &res.candidates[i];
        const char *verdict = c == res.chosen ? "chosen" : c->eligible ? "eligible" : "excluded";
        if (json) {
            json_array_append_new(arr, candidate_json(c, verdict));
            continue;
        }
        char money[48] = "-";
        if (c->expected > 0)
            imgq_money_format(c->expected, 6, money, sizeof money);
        printf("%-24s %-9s %14s %7.0f%%  %s\n", c->model->name, verdict, money,
               c->success_rate * 100, c->reason);
    }
    if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "chosen",
                            res.chosen ? json_string(res.chosen->model->name) : json_null());
        json_object_set_new(o, "candidates", arr);
        char *out = json_dumps(o, JSON_COMPACT);
        printf("%s\n", out);
        free(out);
        json_decref(o);
    }
    int exit = res.chosen ? IMGQ_EXIT_OK : IMGQ_EXIT_FAIL;
    if (!res.chosen)
        fprintf(stderr, "imgq route: no model can do this job\n");
    imgq_route_result_clear(&res);
    imgq_queue_model_stats_free(stats, d.nmodel_stats);
    return exit;
}
