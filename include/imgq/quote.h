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
 * Every stage of a pipeline counts (below), and so does the fallback model a circuit breaker
 * may move a stage to, so the worst case bounds what the worker reserves for one run of the
 * job.  It does not bound retries that are paid for: a failed call at a provider that bills
 * failures (charges_failures) or a call lost with its worker is charged, and the job runs again
 * (max_generations caps how often).
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
#include <time.h>

#include "imgq/catalog.h"
#include "imgq/error.h"
#include "imgq/job.h"

struct imgq_drift;

/* Provider calls the worker makes for n images on m (n_per_call images each), and the images
 * of call i (0-based) of them. */
int imgq_quote_calls(const struct imgq_model *m, int n);
int imgq_quote_call_images(const struct imgq_model *m, int n, int i);

/* The shape of one call of a job asking n images of it: quality, size, prompt bytes and
 * reference images of the spec.  Strings are borrowed from spec. */
struct imgq_request_shape imgq_quote_call_shape(const struct imgq_job_spec *spec, int n);

/*
 * One stage of a job.  A job without a pipeline is one stage (stage NULL); a pipeline job is
 * two, as the worker runs it (imgq_job_pipeline_stage): "draft", the child job of n drafts on
 * the draft model (fanned out by its n_per_call), and "refine", the job's own model with the
 * chosen draft as its one reference image (unless use_draft_as_reference is false).
 *
 * A stage's worst case covers the model a circuit breaker may move it to: the largest of its
 * own model's worst case and that of every catalog fallback the job can be retargeted to
 * (imgq_job_retarget, the worker's own check), so it bounds what the worker reserves whichever
 * of them serves.  own_worst is the figure on the stage's own model alone.
 */
struct imgq_stage_quote {
    const struct imgq_model *model;       /* the stage's own model (borrowed from the catalog) */
    const char *stage;                    /* NULL, "draft" or "refine" (static strings) */
    const struct imgq_model *worst_model; /* the model of the worst case (model or a fallback) */
    int calls;                            /* provider calls on its own model */
    int images;                           /* images asked */
    int references;                       /* reference images sent with each call */
    imgq_micros expected;                 /* on its own model */
    imgq_micros own_worst;                /* worst case on its own model */
    imgq_micros worst;                    /* worst case on whichever model serves it */
};

#define IMGQ_QUOTE_MAX_STAGES 2

/* One job's figures: its stages and their sums. */
struct imgq_job_quote {
    const struct imgq_model *model; /* the job's own model (a pipeline's refine model) */
    int calls;                      /* provider calls, every stage, on the own models */
    int images;                     /* images asked, every stage (drafts included) */
    imgq_micros expected;
    imgq_micros own_worst;
    imgq_micros worst;
    int nstages;
    struct imgq_stage_quote stages[IMGQ_QUOTE_MAX_STAGES];
};

/*
 * Price one validated job (imgq_job_parse) on route (NULL: the job's own route, spec->route),
 * every stage of it, with the catalog's lifecycle as of 'today' deciding which fallbacks count
 * (imgq_quote_job: as of now).  IMGQ_ENOTFOUND if a stage's model or route is not in the
 * catalog or the catalog has no price for its shape; IMGQ_EINVAL if a pipeline stage does not
 * validate; IMGQ_ERANGE on overflow; *out is then unspecified.  drift (drift.h; NULL: none)
 * scales each call's ceiling by the catalog drift seen in its cell, as the worker's
 * reservation is (imgq_quote_job: none).
 */
int imgq_quote_job_at(const imgq_catalog *cat, const struct imgq_job_spec *spec,
                      const struct imgq_route *route, time_t today, const struct imgq_drift *drift,
                      struct imgq_job_quote *out) IMGQ_MUST_CHECK;
int imgq_quote_job(const imgq_catalog *cat, const struct imgq_job_spec *spec,
                   const struct imgq_route *route, struct imgq_job_quote *out) IMGQ_MUST_CHECK;

/* Totals of one model in one stage, or of everything (model NULL).  A pipeline job counts once
 * in each of its stages' rows and once in the total. */
struct imgq_quote_row {
    char *model;
    const char *stage; /* NULL (jobs without a pipeline), "draft" or "refine" */
    int64_t jobs, calls, images;
    imgq_micros expected, own_worst, worst;
};

/* Job quotes summed per model and stage, rows in the order they were first seen. */
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
