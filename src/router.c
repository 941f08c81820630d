/* router.c - choosing the cheapest eligible model for "model": "auto" (see router.h). */
#include "imgq/router.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imgq/alloc.h"
#include "imgq/job.h"
#include "imgq/provider.h"

#define MIN_CALLS_FOR_RATE 20 /* below this, a model's history says too little */
#define MIN_SUCCESS_RATE 0.5  /* below this (with history), a model is left out */

static bool in_list(char **list, const char *s)
{
    for (char **p = list; p && *p; p++)
        if (strcmp(*p, s) == 0)
            return true;
    return false;
}

static int shut_down(const struct imgq_model *m, time_t today)
{
    if (!m->shutdown)
        return 0;
    char buf[16];
    struct tm tm;
    gmtime_r(&today, &tm);
    strftime(buf, sizeof buf, "%Y-%m-%d", &tm);
    return strcmp(buf, m->shutdown) >= 0;
}

static void money(imgq_micros v, char *buf, size_t len)
{
    imgq_money_format(v, 6, buf, len);
}

static const struct imgq_model_stats *stats_of(const struct imgq_model_stats *stats, size_t n,
                                               const char *model)
{
    for (size_t i = 0; i < n; i++)
        if (stats[i].model && strcmp(stats[i].model, model) == 0)
            return &stats[i];
    return NULL;
}

/* The observed share of calls that succeed; 1.0 with too little history to say. */
static double success_rate(const struct imgq_model_stats *st)
{
    long long total = st ? st->ok + st->failed : 0;
    return total >= MIN_CALLS_FOR_RATE ? (double)st->ok / (double)total : 1.0;
}

/*
 * A priced candidate (cost and success_rate set): false, with the reason, if its breaker is
 * open or it fails too often; else its expected cost is set.
 */
static bool healthy(const struct imgq_model_stats *st, struct imgq_route_candidate *c)
{
    if (st && st->breaker_open) {
        snprintf(c->reason, sizeof c->reason, "circuit breaker open: takes no calls now");
        return false;
    }
    if (c->success_rate < MIN_SUCCESS_RATE) {
        snprintf(c->reason, sizeof c->reason, "unreliable: %.0f%% of calls succeed",
                 c->success_rate * 100);
        return false;
    }
    /* Where failed calls are billed, each success costs 1/p calls on average. */
    c->expected = c->model->charges_failures && c->success_rate > 0
                      ? (imgq_micros)((double)c->cost / c->success_rate + 0.5)
                      : c->cost;
    return true;
}

/* Price one model for the request, or say why it cannot take it. */
static void evaluate(const imgq_catalog *cat, const struct imgq_route_request *req,
                     const char *quality, const struct imgq_use_case *uc,
                     const struct imgq_model_stats *stats, size_t nstats, time_t today,
                     struct imgq_route_candidate *c)
{
    const struct imgq_model *m = c->model;
    const struct imgq_model_stats *st = stats_of(stats, nstats, m->name);
    c->success_rate = success_rate(st);
    if (shut_down(m, today)) {
        snprintf(c->reason, sizeof c->reason, "shut down on %s", m->shutdown);
        return;
    }
    if (!imgq_provider_api_supported(m->api)) {
        snprintf(c->reason, sizeof c->reason, "the %s API cannot be called by this build", m->api);
        return;
    }
    if (uc && uc->models && !in_list(uc->models, m->name)) {
        snprintf(c->reason, sizeof c->reason, "not among use case '%s''s models", uc->name);
        return;
    }
    unsigned needs = req->needs | (req->references > 0 ? IMGQ_NEED_EDIT : 0);
    unsigned missing = needs & ~m->capabilities;
    if (missing) {
        for (unsigned bit = 1; bit; bit <<= 1)
            if (missing & bit) {
                snprintf(c->reason, sizeof c->reason, "cannot do '%s'", imgq_need_name(bit));
                return;
            }
    }
    if (req->has_guidance &&
        !(req->guidance_scale >= m->guidance_min && req->guidance_scale <= m->guidance_max)) {
        snprintf(c->reason, sizeof c->reason, "guidance_scale %g is outside %g to %g",
                 req->guidance_scale, m->guidance_min, m->guidance_max);
        return;
    }
    if (!in_list(m->serves, quality)) {
        snprintf(c->reason, sizeof c->reason, "not made for %s quality", quality);
        return;
    }
    if (req->references > m->max_references) {
        snprintf(c->reason, sizeof c->reason, "takes at most %d reference images",
                 m->max_references);
        return;
    }
    if (req->n > m->n_max) {
        snprintf(c->reason, sizeof c->reason, "takes at most n=%d", m->n_max);
        return;
    }
    c->size = req->size ? req->size : m->sizes[0];
    if (!imgq_model_allows_size(m, c->size)) {
        int sw, sh;
        if (m->size_rule && imgq_size_parse(c->size, &sw, &sh) == 0)
            (void)imgq_model_check_size(m, sw, sh, c->reason, sizeof c->reason);
        else
            snprintf(c->reason, sizeof c->reason, "no %s size", c->size);
        return;
    }
    /* A model with a quality knob runs at the asked quality; a flat one has no knob. */
    c->quality = m->qualities[0] ? quality : NULL;
    if (c->quality && !imgq_model_allows_quality(m, c->quality)) {
        snprintf(c->reason, sizeof c->reason, "no '%s' quality", quality);
        return;
    }
    int w, h;
    if (imgq_size_parse(c->size, &w, &h) != 0)
        return;
    struct imgq_request_shape shape = {
        c->quality, w, h, req->n > 0 ? req->n : 1, req->prompt_bytes, req->references};
    if (imgq_cost_ceiling(m, imgq_catalog_route(cat, req->route), &shape, &c->cost) != 0) {
        snprintf(c->reason, sizeof c->reason, "cannot be priced for this request");
        return;
    }
    if (!healthy(st, c))
        return;
    char a[48], b[48];
    money(c->expected, a, sizeof a);
    if (req->max_cost > 0 && c->expected > req->max_cost) {
        money(req->max_cost, b, sizeof b);
        snprintf(c->reason, sizeof c->reason, "expected %s is over the cap %s", a, b);
        return;
    }
    c->eligible = true;
    snprintf(c->reason, sizeof c->reason, "%s %s%s%s, expected %s",
             m->billing == IMGQ_BILL_TOKENS ? "per-token" : "flat", c->size, c->quality ? " " : "",
             c->quality ? c->quality : "", a);
}

static int by_expected(const void *pa, const void *pb)
{
    const struct imgq_route_candidate *a = pa, *b = pb;
    if (a->eligible != b->eligible)
        return a->eligible ? -1 : 1;
    /* Among the excluded, the ones that could be priced (over a cap, unreliable) first. */
    if ((a->expected > 0) != (b->expected > 0))
        return a->expected > 0 ? -1 : 1;
    if (a->expected != b->expected)
        return a->expected < b->expected ? -1 : 1;
    if (a->success_rate != b->success_rate)
        return a->success_rate > b->success_rate ? -1 : 1;
    return strcmp(a->model->name, b->model->name);
}

int imgq_route(const imgq_catalog *cat, const struct imgq_route_request *req,
               const struct imgq_model_stats *stats, size_t nstats, time_t today,
               struct imgq_route_result *out)
{
    memset(out, 0, sizeof *out);
    const struct imgq_use_case *uc = NULL;
    if (req->use_case && !(uc = imgq_catalog_use_case(cat, req->use_case)))
        return IMGQ_EINVAL;
    const char *quality = req->quality ? req->quality : uc ? uc->quality : "medium";
    if (strcmp(quality, "low") && strcmp(quality, "medium") && strcmp(quality, "high"))
        return IMGQ_EINVAL;
    if (req->route && !imgq_catalog_route(cat, req->route))
        return IMGQ_EINVAL;
    /* The candidates outlive the request (imgq route --explain prints them after the job's
     * JSON is freed): they point at the catalog or at these copies, never into the request. */
    struct imgq_route_request own = *req;
    if (req->quality)
        quality = own.quality = out->quality = imgq_xstrdup(req->quality);
    if (req->size)
        own.size = out->size = imgq_xstrdup(req->size);
    req = &own;
    size_t n = 0;
    while (imgq_catalog_model_at(cat, n))
        n++;
    out->candidates = imgq_xcalloc(n ? n : 1, sizeof *out->candidates);
    out->ncandidates = n;
    for (size_t i = 0; i < n; i++) {
        out->candidates[i].model = imgq_catalog_model_at(cat, i);
        evaluate(cat, req, quality, uc, stats, nstats, today, &out->candidates[i]);
    }
    qsort(out->candidates, n, sizeof *out->candidates, by_expected);
    if (n && out->candidates[0].eligible) {
        out->chosen = &out->candidates[0];
        return 0;
    }
    return IMGQ_ENOTFOUND;
}

void imgq_route_result_clear(struct imgq_route_result *r)
{
    free(r->candidates);
    free(r->quality);
    free(r->size);
    memset(r, 0, sizeof *r);
}

void imgq_route_rank(struct imgq_route_candidate *c, size_t n, const struct imgq_model_stats *stats,
                     size_t nstats)
{
    for (size_t i = 0; i < n; i++) {
        const struct imgq_model_stats *st = stats_of(stats, nstats, c[i].model->name);
        c[i].success_rate = success_rate(st);
        c[i].expected = 0;
        if (!c[i].eligible)
            continue;
        c[i].eligible = healthy(st, &c[i]);
        if (c[i].eligible) {
            char a[48];
            money(c[i].expected, a, sizeof a);
            if (c[i].expected != c[i].cost)
                snprintf(c[i].reason, sizeof c[i].reason,
                         "expected %s (%.0f%% of calls succeed, failed calls billed)", a,
                         c[i].success_rate * 100);
            else
                snprintf(c[i].reason, sizeof c[i].reason, "expected %s", a);
        }
    }
    if (n > 1)
        qsort(c, n, sizeof *c, by_expected);
}

/* The quality an auto job was routed for (its own, or the best its model serves), which a
 * model it moves to must serve too. */
static const char *routed_quality(const struct imgq_job_spec *spec, const struct imgq_model *m)
{
    static const char *const order[] = {"high", "medium", "low"};
    for (int i = 0; i < 3; i++)
        if (spec->quality && strcmp(spec->quality, order[i]) == 0)
            return order[i];
    for (int i = 0; i < 3; i++)
        for (char **s = m->serves; s && *s; s++)
            if (strcmp(*s, order[i]) == 0)
                return order[i];
    return "medium";
}

static bool listed(char *const *names, const char *name)
{
    for (char *const *p = names; p && *p; p++)
        if (strcmp(*p, name) == 0)
            return true;
    return false;
}

static int add_alternative(const imgq_catalog *cat, const struct imgq_job_spec *spec,
                           const struct imgq_model *m, const char *name, const char *quality,
                           const char **out, int n, int max)
{
    if (n >= max || strcmp(name, m->name) == 0)
        return n;
    for (int i = 0; i < n; i++)
        if (strcmp(out[i], name) == 0)
            return n;
    const struct imgq_model *fm = imgq_catalog_model(cat, name);
    if (!fm || !imgq_provider_ops_find(fm->api))
        return n;
    if (quality && !listed(fm->serves, quality))
        return n;
    /* An auto job's use case may restrict its models (as it did the router's). */
    const struct imgq_use_case *uc =
        spec->use_case ? imgq_catalog_use_case(cat, spec->use_case) : NULL;
    if (uc && uc->models && !listed(uc->models, name))
        return n;
    out[n++] = fm->name;
    return n;
}

int imgq_route_alternatives(const imgq_catalog *cat, const struct imgq_job_spec *spec,
                            const struct imgq_model *m, const char **out, int max)
{
    int n = 0;
    for (char **f = m->fallbacks; f && *f; f++)
        n = add_alternative(cat, spec, m, *f, NULL, out, n, max);
    if (spec->routed) {
        const char *q = routed_quality(spec, m);
        for (size_t i = 0; imgq_catalog_model_at(cat, i); i++)
            n = add_alternative(cat, spec, m, imgq_catalog_model_at(cat, i)->name, q, out, n, max);
    }
    return n;
}
