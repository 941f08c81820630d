/* quote.c - worst-case and expected cost of validated jobs (see quote.h). */
#include "imgq/quote.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "imgq/alloc.h"
#include "imgq/drift.h"
#include "imgq/router.h"

int imgq_quote_calls(const struct imgq_model *m, int n)
{
    int per = m->n_per_call > 0 ? m->n_per_call : 1;
    return n > 0 ? (n + per - 1) / per : 0;
}

int imgq_quote_call_images(const struct imgq_model *m, int n, int i)
{
    int per = m->n_per_call > 0 ? m->n_per_call : 1;
    int first = i * per;
    if (i < 0 || first >= n)
        return 0;
    return n - first < per ? n - first : per;
}

struct imgq_request_shape imgq_quote_call_shape(const struct imgq_job_spec *spec, int n)
{
    return (struct imgq_request_shape){
        spec->quality, spec->width, spec->height, n, spec->prompt ? strlen(spec->prompt) : 0,
        spec->nrefs};
}

/* The catalog's figure for one call: output tokens of the table (and tokens per reference
 * image), or the flat price of its images. */
static int expected_call(const struct imgq_model *m, const struct imgq_route *route,
                         const struct imgq_request_shape *s, imgq_micros *out)
{
    struct imgq_usage u = {0};
    u.images = s->n;
    u.quality = s->quality;
    u.width = s->width;
    u.height = s->height;
    if (m->billing == IMGQ_BILL_TOKENS) {
        int64_t per_image, refs;
        int rc = imgq_model_output_tokens(m, s->quality, s->width, s->height, &per_image);
        if (rc)
            return rc;
        if (__builtin_mul_overflow(per_image, (int64_t)s->n, &u.image_out) ||
            __builtin_mul_overflow((int64_t)s->references, m->ref_image_tokens, &refs) ||
            __builtin_mul_overflow(refs, (int64_t)s->n, &u.image_in))
            return IMGQ_ERANGE;
    }
    return imgq_cost_from_usage(m, route, &u, out);
}

/* The calls of spec on m: their ceilings and the catalog's figures, summed. */
static int price_on(const struct imgq_model *m, const struct imgq_route *route,
                    const struct imgq_job_spec *spec, const struct imgq_drift *drift, int *calls,
                    imgq_micros *worst_sum, imgq_micros *expected_sum)
{
    /* The worker reserves the ceiling scaled by the catalog drift seen in the call's cell. */
    char cell[IMGQ_DRIFT_CELL_MAX];
    imgq_drift_cell(m->name, spec->quality, spec->width, spec->height, cell, sizeof cell);
    int64_t ppm = imgq_drift_ppm(drift, cell);
    *calls = imgq_quote_calls(m, spec->n);
    *worst_sum = 0;
    if (expected_sum)
        *expected_sum = 0;
    for (int i = 0; i < *calls; i++) {
        struct imgq_request_shape s =
            imgq_quote_call_shape(spec, imgq_quote_call_images(m, spec->n, i));
        imgq_micros worst, expected = 0;
        imgq_micros part = 0;
        int rc = imgq_cost_ceiling(m, route, &s, &worst);
        if (rc == 0 && ppm > IMGQ_DRIFT_PPM_ONE)
            rc = imgq_drift_output_part(m, route, &s, &part);
        if (rc == 0)
            rc = imgq_drift_scale(worst, part, ppm, &worst);
        if (rc == 0 && expected_sum)
            rc = expected_call(m, route, &s, &expected);
        if (rc)
            return rc;
        if (__builtin_add_overflow(*worst_sum, worst, worst_sum) ||
            (expected_sum && __builtin_add_overflow(*expected_sum, expected, expected_sum)))
            return IMGQ_ERANGE;
    }
    return 0;
}

/* One stage (a job as the worker runs it): on its own model, and the worst case over the
 * models its model's circuit breaker may move it to (imgq_route_alternatives: the fallbacks,
 * and for an auto job every model that can do it; those it can be retargeted to). */
static int quote_stage(const imgq_catalog *cat, const struct imgq_job_spec *spec,
                       const struct imgq_route *route, time_t today, const struct imgq_drift *drift,
                       const char *stage, struct imgq_stage_quote *out)
{
    memset(out, 0, sizeof *out);
    const struct imgq_model *m = spec->model ? imgq_catalog_model(cat, spec->model) : NULL;
    if (!m)
        return IMGQ_ENOTFOUND;
    if (!route && !(route = imgq_catalog_route(cat, spec->route)))
        return IMGQ_ENOTFOUND;
    out->model = out->worst_model = m;
    out->stage = stage;
    out->images = spec->n;
    out->references = spec->nrefs;
    int rc = price_on(m, route, spec, drift, &out->calls, &out->own_worst, &out->expected);
    if (rc)
        return rc;
    out->worst = out->own_worst;
    /* Every model the worker may move the stage to (its choose_model lists the same). */
    const char *alt[64];
    int nalt = imgq_route_alternatives(cat, spec, m, alt, 64);
    for (int k = 0; k < nalt; k++) {
        const char *const *f = &alt[k];
        struct imgq_job_spec to;
        struct imgq_job_problem why;
        if (imgq_job_retarget(cat, spec, *f, today, &to, &why) != 0)
            continue; /* the worker cannot move the job there either */
        const struct imgq_model *fm = imgq_catalog_model(cat, to.model);
        int calls;
        imgq_micros worst = 0;
        rc = fm ? price_on(fm, route, &to, drift, &calls, &worst, NULL) : IMGQ_ENOTFOUND;
        imgq_job_spec_clear(&to);
        if (rc)
            return rc;
        if (worst > out->worst) {
            out->worst = worst;
            out->worst_model = fm;
        }
    }
    return 0;
}

/* A reference image that stands for the chosen draft: the refine's shape does not depend on
 * which draft it is. */
#define DRAFT_PLACEHOLDER "s3://imgq-draft/quote.webp"

int imgq_quote_job_at(const imgq_catalog *cat, const struct imgq_job_spec *spec,
                      const struct imgq_route *route, time_t today, const struct imgq_drift *drift,
                      struct imgq_job_quote *out)
{
    memset(out, 0, sizeof *out);
    out->model = spec->model ? imgq_catalog_model(cat, spec->model) : NULL;
    if (!out->model)
        return IMGQ_ENOTFOUND;
    int rc = 0;
    if (!spec->pipeline) {
        rc = quote_stage(cat, spec, route, today, drift, NULL, &out->stages[0]);
        out->nstages = 1;
    } else {
        /* The stages exactly as the worker builds them from the job. */
        static const char *const stages[] = {"draft", "refine"};
        for (int i = 0; i < 2 && rc == 0; i++) {
            struct imgq_job_spec st;
            struct imgq_job_problem why;
            rc = imgq_job_pipeline_stage(cat, spec, stages[i], i ? DRAFT_PLACEHOLDER : NULL, today,
                                         &st, &why);
            if (rc == 0)
                rc = quote_stage(cat, &st, route, today, drift, stages[i], &out->stages[i]);
            imgq_job_spec_clear(&st);
        }
        out->nstages = 2;
    }
    if (rc)
        return rc;
    for (int i = 0; i < out->nstages; i++) {
        const struct imgq_stage_quote *st = &out->stages[i];
        if (__builtin_add_overflow(out->calls, st->calls, &out->calls) ||
            __builtin_add_overflow(out->images, st->images, &out->images) ||
            __builtin_add_overflow(out->expected, st->expected, &out->expected) ||
            __builtin_add_overflow(out->own_worst, st->own_worst, &out->own_worst) ||
            __builtin_add_overflow(out->worst, st->worst, &out->worst))
            return IMGQ_ERANGE;
    }
    return 0;
}

int imgq_quote_job(const imgq_catalog *cat, const struct imgq_job_spec *spec,
                   const struct imgq_route *route, struct imgq_job_quote *out)
{
    return imgq_quote_job_at(cat, spec, route, time(NULL), NULL, out);
}

void imgq_quote_init(struct imgq_quote *q)
{
    memset(q, 0, sizeof *q);
}

/* r + one job's figures into sum; nonzero on overflow (sum is then partly written: callers
 * use a copy). */
static int row_add(struct imgq_quote_row *sum, const struct imgq_quote_row *r, int64_t calls,
                   int64_t images, imgq_micros expected, imgq_micros own_worst, imgq_micros worst)
{
    return __builtin_add_overflow(r->jobs, 1, &sum->jobs) ||
           __builtin_add_overflow(r->calls, calls, &sum->calls) ||
           __builtin_add_overflow(r->images, images, &sum->images) ||
           __builtin_add_overflow(r->expected, expected, &sum->expected) ||
           __builtin_add_overflow(r->own_worst, own_worst, &sum->own_worst) ||
           __builtin_add_overflow(r->worst, worst, &sum->worst);
}

static bool same_stage(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

int imgq_quote_add(struct imgq_quote *q, const struct imgq_job_quote *jq)
{
    if (!jq->model || jq->nstages < 1 || jq->nstages > IMGQ_QUOTE_MAX_STAGES)
        return IMGQ_EINVAL;
    /* Every sum first, into copies: an overflow leaves q as it was. */
    struct imgq_quote_row rows[IMGQ_QUOTE_MAX_STAGES], total;
    size_t at[IMGQ_QUOTE_MAX_STAGES], added = 0;
    for (int k = 0; k < jq->nstages; k++) {
        const struct imgq_stage_quote *st = &jq->stages[k];
        if (!st->model)
            return IMGQ_EINVAL;
        size_t i = 0;
        while (i < q->nrows && (strcmp(q->rows[i].model, st->model->name) != 0 ||
                                !same_stage(q->rows[i].stage, st->stage)))
            i++;
        struct imgq_quote_row empty = {0};
        const struct imgq_quote_row *old = i < q->nrows ? &q->rows[i] : &empty;
        if (row_add(&rows[k], old, st->calls, st->images, st->expected, st->own_worst, st->worst))
            return IMGQ_ERANGE;
        rows[k].model = i < q->nrows ? q->rows[i].model : NULL;
        rows[k].stage = st->stage;
        at[k] = i < q->nrows ? i : q->nrows + added++; /* (stages differ: no two share a row) */
    }
    if (row_add(&total, &q->total, jq->calls, jq->images, jq->expected, jq->own_worst, jq->worst))
        return IMGQ_ERANGE;
    for (int k = 0; k < jq->nstages; k++) {
        if (at[k] >= q->nrows) {
            q->rows = imgq_xrealloc(q->rows, (at[k] + 1) * sizeof *q->rows);
            q->nrows = at[k] + 1;
            rows[k].model = imgq_xstrdup(jq->stages[k].model->name);
        }
        q->rows[at[k]] = rows[k];
    }
    total.model = NULL;
    total.stage = NULL;
    q->total = total;
    return 0;
}

void imgq_quote_clear(struct imgq_quote *q)
{
    for (size_t i = 0; i < q->nrows; i++)
        free(q->rows[i].model);
    free(q->rows);
    imgq_quote_init(q);
}

void imgq_quote_money(imgq_micros v, char *buf, size_t len)
{
    int decimals = 2;
    imgq_micros unit = 10000;
    while (decimals < 6 && v % unit != 0) {
        decimals++;
        unit /= 10;
    }
    imgq_money_format(v, decimals, buf, len);
}
