/*
 * quote.h - what validated jobs will cost before anything is sent: the worst case and the
 * expected case, per job and summed per model.
 *
 * The worst case of a job is the sum, over the provider calls the worker makes for it, of
 * imgq_cost_ceiling() of each call's shape: the figure the worker reserves before a call and
 * bills when a provider returns no usage.  A model whose n_per_call is 1 fans n images out
 * into n calls; the prompt and every reference image are billed once per image.  The expected
 * case is the catalog's figure for the images asked: token models, the output tokens of the
 * quality x size table plus the catalog's tokens per reference image; flat models, the price
 * of the image.  The prompt is left out of the expected case (its tokens are unknown before
 * the call and are a rounding error next to the image), and so is the router's success-rate
 * adjustment.  Each call is priced, and rounded, separately, as billing does.
 *
 * `imgq quote` prints these figures and `imgq submit --max-cost` refuses a file whose worst
 * case is over the cap.  Pure computation: nothing here blocks or touches Redis.
 *
 * Ownership: an imgq_quote owns its rows and their model names; imgq_quote_clear frees them.
 * Models and routes passed in are borrowed from the catalog.
 */
#ifndef IMGQ_QUOTE_H
#define IMGQ_QUOTE_H

#include <stddef.h>
#include <stdint.h>

#include "imgq/catalog.h"
#include "imgq/error.h"
#include "imgq/job.h"

/* Provider calls the worker makes for n images on m (n_per_call images each), and the images
 * of call i (0-based) of them. */
int imgq_quote_calls(const struct imgq_model *m, int n);
int imgq_quote_call_images(const struct imgq_model *m, int n, int i);

/* The shape of one call of a job asking n images of it: quality, size, prompt bytes and
 * reference images of the spec.  Strings are borrowed from spec. */
struct imgq_request_shape imgq_quote_call_shape(const struct imgq_job_spec *spec, int n);

/* One job's figures. */
struct imgq_job_quote {
    const struct imgq_model *model; /* borrowed from the catalog */
    int calls;                      /* provider calls */
    int images;                     /* images asked (spec n) */
    imgq_micros expected;
    imgq_micros worst;
};

/*
 * Price one validated job (imgq_job_parse) on route (NULL: the job's own route, spec->route).
 * IMGQ_ENOTFOUND if the spec's model or route is not in the catalog or the catalog has no
 * price for its shape; IMGQ_ERANGE on overflow; *out is then unspecified.
 */
int imgq_quote_job(const imgq_catalog *cat, const struct imgq_job_spec *spec,
                   const struct imgq_route *route, struct imgq_job_quote *out) IMGQ_MUST_CHECK;

/* Totals of one model, or of everything (model NULL). */
struct imgq_quote_row {
    char *model;
    int64_t jobs, calls, images;
    imgq_micros expected, worst;
};

/* Job quotes summed per model, rows in the order models were first seen. */
struct imgq_quote {
    struct imgq_quote_row *rows;
    size_t nrows;
    struct imgq_quote_row total;
};

void imgq_quote_init(struct imgq_quote *q);
/* Add one job.  IMGQ_ERANGE if a sum would overflow (q is then unchanged).  Aborts on out of
 * memory, like every imgq_x* allocation. */
int imgq_quote_add(struct imgq_quote *q, const struct imgq_job_quote *jq) IMGQ_MUST_CHECK;
void imgq_quote_clear(struct imgq_quote *q);

/* Money with as few decimals as show it exactly, at least cents: "$161.00", "$0.00588",
 * "-$1,275.50" (imgq_money_format with the decimals chosen). */
void imgq_quote_money(imgq_micros v, char *buf, size_t len);

#endif
