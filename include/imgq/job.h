/*
 * job.h - the job model: one JSON object per job, validated against the catalog.
 *
 * A job uses the OpenAI Images request field names (prompt, model, n, size, quality,
 * output_format, output_compression, background, moderation, user) plus imgq's own: id (the
 * client's idempotency key), priority, team, route (price group), metadata (opaque, returned
 * untouched), webhook, max_attempts, max_generations (seed 002's attempt cap per asset). Validation
 * happens before anything is enqueued, so an invalid job never reaches a worker, and every problem
 * names the field and the reason.
 *
 * Ownership: a spec owns its strings and its metadata reference; imgq_job_spec_clear frees
 * them.  Parsing does not block.
 */
#ifndef IMGQ_JOB_H
#define IMGQ_JOB_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "imgq/catalog.h"
#include "imgq/error.h"
#include "imgq/queue.h"

struct imgq_model_stats; /* router.h */

#define IMGQ_JOB_ID_MAX 128

/* A reference image's bytes, fetched by the worker. */
struct imgq_ref_data {
    uint8_t *data;
    size_t len;
    char mime[32]; /* image/png, image/jpeg or image/webp (sniffed from the bytes) */
};

struct imgq_job_spec {
    char *id;     /* client idempotency key, or NULL */
    char *model;  /* catalog model name (an alias is resolved) */
    char *alias;  /* the name the job used, when it was an alias; else NULL */
    char *routed; /* "model": "auto": the router's choice and why; else NULL */
    /* "model": "auto": the request's use case and cost cap (0 = none), kept (stored as
     * use_case and max_cost_usd) so a model the job moves to honours them too; else NULL, 0. */
    char *use_case;
    imgq_micros max_cost;
    char *prompt;
    int n;
    char *size;
    int width, height;
    char *quality;          /* NULL when the model has no quality knob */
    char *output_format;    /* "webp" (default) or "png" */
    int output_compression; /* 0..100 */
    char *background;       /* NULL or transparent|opaque|auto */
    char *moderation;       /* NULL or low|auto */
    char *user;             /* NULL or the end-user id passed to the provider */
    bool has_seed;          /* a seed was given (models with the seed capability only) */
    int64_t seed;
    char *negative_prompt; /* NULL, or for models with the negative_prompt capability */
    bool has_guidance;     /* guidance_scale was given (models with the guidance capability) */
    double guidance_scale; /* how closely to follow the prompt, within the model's range */
    /*
     * Reference images (edits, image-to-image): "images" in the job, each an s3://BUCKET/KEY,
     * an https:// URL or a data: URI, at most the model's max_references.  "mask" (optional,
     * same forms) applies to the first image.  Stored in the spec as given; the worker fetches
     * the bytes into ref_data / mask_data before the adapter builds the request (adapters do
     * no I/O).  ref_data / mask_data are never serialised.
     */
    char **refs;
    int nrefs;
    char *mask;
    struct imgq_ref_data *ref_data;  /* nrefs entries once fetched, else NULL */
    struct imgq_ref_data *mask_data; /* once fetched, else NULL */
    char *route;                     /* price group, default "list" */
    char *team;                      /* "" when none */
    char *webhook;                   /* NULL or an http(s) URL */
    enum imgq_priority priority;
    int max_attempts;
    int max_generations; /* 0: no cap; else after this many paid generations, review */
    bool no_dedup;       /* "dedup": false: generate even if the same image is stored */
    json_t *metadata;    /* NULL or a JSON object (owned reference) */
    /* 0: the worker's --max-rate-limit-waits; else how many times a 429 may send the job back
     * to wait (fail.lua) */
    int max_rate_limit_waits;
    /*
     * NULL, or a draft->refine pipeline (owned reference), normalised:
     *   {"draft": {"model", "n", "quality"?, "size"?},
     *    "select": {"mode": "auto"|"webhook"|"manual", "url"? (webhook), "timeout_s"?},
     *    "refine": {"use_draft_as_reference": true|false}}
     * The job's own model, quality and size are the refine stage's (a "refine" object's model,
     * quality and size replace the top-level ones at parse time).  The drafts run as a child
     * job; see imgq_job_pipeline_stage().
     */
    json_t *pipeline;
};

/* Drafts a pipeline may ask for, and the scorer's longest timeout. */
#define IMGQ_PIPELINE_MAX_DRAFTS 8
#define IMGQ_PIPELINE_MAX_TIMEOUT_S 300

/* Defaults for fields a line leaves out (from the submit command's flags). */
struct imgq_job_defaults {
    const char *team;
    const char *route;
    enum imgq_priority priority;
    int max_attempts;
    /* Observed reliability per model, for "model": "auto" (may be NULL). */
    const struct imgq_model_stats *model_stats;
    size_t nmodel_stats;
    int max_generations; /* 0 = none */
};

/* Why a job was refused: the field and a sentence. */
struct imgq_job_problem {
    char field[64];
    char reason[400];
};

/*
 * Parse and validate one job from JSON text against the catalog, as of 'today' (UTC date used
 * for model lifecycle checks).  On success fills *out (clear it later) and, if the model is
 * deprecated, writes a warning into warn (else warn[0] = '\0').  On failure returns
 * IMGQ_EPARSE (not JSON / not an object) or IMGQ_EINVAL, fills *why, and leaves *out cleared.
 */
int imgq_job_parse(const imgq_catalog *cat, const char *text, size_t len,
                   const struct imgq_job_defaults *defaults, time_t today,
                   struct imgq_job_spec *out, struct imgq_job_problem *why, char *warn,
                   size_t warnlen) IMGQ_MUST_CHECK;

/* The normalised spec as compact JSON (new string), as stored on the job in Redis: fields equal
 * to their built-in defaults (n 1, output_format webp, output_compression 85, route list, no
 * team, priority normal, max_attempts 5) are left out. */
char *imgq_job_spec_to_json(const struct imgq_job_spec *spec);
/* Puts those defaults back into a stored spec's JSON object, for display. */
void imgq_job_stored_defaults(json_t *spec);
/*
 * Read a stored spec back (worker side).  The catalog checks were made at submit; this only
 * checks types.  IMGQ_EPARSE/IMGQ_EINVAL on damage.
 */
int imgq_job_spec_from_json(const char *json, struct imgq_job_spec *out) IMGQ_MUST_CHECK;
void imgq_job_spec_clear(struct imgq_job_spec *spec);

/*
 * The spec of one stage of a pipeline job, validated as a submitted job would be:
 *   "draft":  the job with the draft's model, n, quality and size, without its pipeline,
 *             webhook, id, references or mask (the drafts are a child job);
 *   "refine": the job without its pipeline, with 'ref' (the chosen draft, an s3:// URL) as
 *             its one reference image when the pipeline uses the draft as reference, else
 *             prompt-only ('ref' ignored).
 * IMGQ_EINVAL with *why naming the stage's field when it does not validate (*out cleared).
 */
int imgq_job_pipeline_stage(const imgq_catalog *cat, const struct imgq_job_spec *spec,
                            const char *stage, const char *ref, time_t today,
                            struct imgq_job_spec *out,
                            struct imgq_job_problem *why) IMGQ_MUST_CHECK;
/* The pipeline's selection mode ("auto", "webhook", "manual"), or NULL when it has none. */
const char *imgq_job_pipeline_mode(const struct imgq_job_spec *spec);

/*
 * Route a job that says "model": "auto" without validating the rest: every candidate with its
 * expected cost or why it was excluded (imgq route --explain).  *out is filled even when no
 * model is eligible (IMGQ_ENOTFOUND); clear it with imgq_route_result_clear.
 */
struct imgq_route_result;
int imgq_job_route(const imgq_catalog *cat, const char *text, size_t len,
                   const struct imgq_job_defaults *defaults, time_t today,
                   struct imgq_route_result *out, struct imgq_job_problem *why) IMGQ_MUST_CHECK;

/*
 * The same job on another catalog model (a circuit breaker's fallback): the spec's stored form
 * with the model swapped, validated by the same rules as a submitted job (imgq_job_parse), as
 * of 'today'.  The quality is kept when the target allows it, dropped for a model without a
 * quality knob, and set to "medium" (else the target's first quality) otherwise.  id, prompt,
 * size, n, references, knobs, route, team, priority and metadata carry over; alias, routed,
 * use_case and max_cost do not (an auto job's use case and cap are the caller's to check), nor
 * ref_data/mask_data (fetch again, or move them).  On success fills *out (clear it
 * later); on refusal returns IMGQ_EINVAL with *why naming the field and the target's limit,
 * and leaves *out cleared.
 */
int imgq_job_retarget(const imgq_catalog *cat, const struct imgq_job_spec *spec, const char *model,
                      time_t today, struct imgq_job_spec *out,
                      struct imgq_job_problem *why) IMGQ_MUST_CHECK;

/* Whether this build can call providers speaking 'api' (catalog field model.api). */
int imgq_provider_api_supported(const char *api);

#endif
