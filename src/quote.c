/* quote.c - worst-case and expected cost of validated jobs (see quote.h). */
#include "imgq/quote.h"

#include <stdlib.h>
#include <string.h>

#include "imgq/alloc.h"

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

int imgq_quote_job(const imgq_catalog *cat, const struct imgq_job_spec *spec,
                   const struct imgq_route *route, struct imgq_job_quote *out)
{
    memset(out, 0, sizeof *out);
    const struct imgq_model *m = spec->model ? imgq_catalog_model(cat, spec->model) : NULL;
    if (!m)
        return IMGQ_ENOTFOUND;
    if (!route && !(route = imgq_catalog_route(cat, spec->route)))
        return IMGQ_ENOTFOUND;
    out->model = m;
    out->images = spec->n;
    out->calls = imgq_quote_calls(m, spec->n);
    for (int i = 0; i < out->calls; i++) {
        struct imgq_request_shape s =
            imgq_quote_call_shape(spec, imgq_quote_call_images(m, spec->n, i));
        imgq_micros worst, expected;
        int rc = imgq_cost_ceiling(m, route, &s, &worst);
        if (rc == 0)
            rc = expected_call(m, route, &s, &expected);
        if (rc)
            return rc;
        if (__builtin_add_overflow(out->worst, worst, &out->worst) ||
            __builtin_add_overflow(out->expected, expected, &out->expected))
            return IMGQ_ERANGE;
    }
    return 0;
}

void imgq_quote_init(struct imgq_quote *q)
{
    memset(q, 0, sizeof *q);
}

/* r + jq into sum; nonzero on overflow (sum is then partly written: callers use a copy). */
static int row_add(struct imgq_quote_row *sum, const struct imgq_quote_row *r,
                   const struct imgq_job_quote *jq)
{
    return __builtin_add_overflow(r->jobs, 1, &sum->jobs) ||
           __builtin_add_overflow(r->calls, (int64_t)jq->calls, &sum->calls) ||
           __builtin_add_overflow(r->images, (int64_t)jq->images, &sum->images) ||
           __builtin_add_overflow(r->expected, jq->expected, &sum->expected) ||
           __builtin_add_overflow(r->worst, jq->worst, &sum->worst);
}

int imgq_quote_add(struct imgq_quote *q, const struct imgq_job_quote *jq)
{
    if (!jq->model)
        return IMGQ_EINVAL;
    size_t i = 0;
    while (i < q->nrows && strcmp(q->rows[i].model, jq->model->name) != 0)
        i++;
    struct imgq_quote_row empty = {0}, row, total;
    const struct imgq_quote_row *old = i < q->nrows ? &q->rows[i] : &empty;
    if (row_add(&row, old, jq) || row_add(&total, &q->total, jq))
        return IMGQ_ERANGE;
    if (i == q->nrows) {
        q->rows = imgq_xrealloc(q->rows, (q->nrows + 1) * sizeof *q->rows);
        q->nrows++;
        row.model = imgq_xstrdup(jq->model->name);
    } else {
        row.model = q->rows[i].model;
    }
    q->rows[i] = row;
    total.model = NULL;
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
