/*
 * router.h - "model": "auto": pick the cheapest model that can do the job.
 *
 * Candidates are every catalog model; each is excluded with a reason (shut down, an API this
 * build cannot call, a missing capability, a size or reference limit, unreliable, over the
 * cost cap) or priced: its worst-case cost for the request from the catalog, divided by its
 * observed success rate when the provider bills failed calls (a cheap model that fails often
 * costs more than its price).  The cheapest wins; ties go to the higher success rate.  A
 * use-case policy in the catalog (routing.use_cases) can set the quality and restrict the
 * candidates.  Pure computation: nothing here blocks.
 */
#ifndef IMGQ_ROUTER_H
#define IMGQ_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "imgq/catalog.h"
#include "imgq/error.h"

struct imgq_job_spec;

struct imgq_route_request {
    const char *quality;  /* low | medium | high, or NULL (use case or "medium") */
    const char *use_case; /* a key of the catalog's routing.use_cases, or NULL */
    unsigned needs;       /* OR of enum imgq_need (catalog.h) */
    const char *size;     /* "WxH", or NULL: each model's default size */
    int n;
    int references;    /* reference images sent (each needs a model with "edit") */
    bool has_guidance; /* guidance_scale given: only models whose range holds it */
    double guidance_scale;
    size_t prompt_bytes;
    imgq_micros max_cost; /* 0: no cap; else the most one job may cost */
    const char *route;    /* price group, NULL = list */
};

/* Observed reliability of a model: calls that succeeded and failed, credited to the model
 * that served them; and whether its circuit breaker is open now (it takes no calls). */
struct imgq_model_stats {
    const char *model;
    long long ok, failed;
    bool breaker_open;
};

struct imgq_route_candidate {
    const struct imgq_model *model;
    /* The quality and size it would run at (NULL when it has no quality knob, or was left out
     * before they were settled): the catalog's strings or the result's own copies of the
     * request's, valid until imgq_route_result_clear whatever becomes of the request. */
    const char *quality;
    const char *size;
    imgq_micros cost;     /* worst-case cost of the job on it */
    imgq_micros expected; /* cost adjusted for its success rate */
    double success_rate;  /* observed, 1.0 without history */
    bool eligible;
    char reason[160]; /* why excluded, or why it is what it is */
};

struct imgq_route_result {
    struct imgq_route_candidate *candidates; /* every catalog model, cheapest eligible first */
    size_t ncandidates;
    const struct imgq_route_candidate *chosen; /* NULL if none is eligible */
    char *quality, *size; /* copies of the request's quality and size (or NULL) */
};

/*
 * Route a request.  stats may be NULL.  On success fills *out (free with
 * imgq_route_result_clear); IMGQ_ENOTFOUND when no model is eligible (out still lists why
 * each was excluded), IMGQ_EINVAL for a bad request (unknown use case or quality).
 */
int imgq_route(const imgq_catalog *cat, const struct imgq_route_request *req,
               const struct imgq_model_stats *stats, size_t nstats, time_t today,
               struct imgq_route_result *out) IMGQ_MUST_CHECK;
void imgq_route_result_clear(struct imgq_route_result *r);

/*
 * Rank the candidates a job may move to (a fallback): each has model and cost (its
 * worst-case cost for the job) set by the caller, and eligible true if it can take the job.
 * Fills success_rate and expected (as imgq_route: cost divided by the observed success rate
 * where the provider bills failed calls), excludes (eligible false, with the reason) a model
 * whose breaker is open or that is unreliable, and sorts the array cheapest expected first,
 * the excluded last.  reason of an eligible candidate says its expected cost.
 */
void imgq_route_rank(struct imgq_route_candidate *c, size_t n, const struct imgq_model_stats *stats,
                     size_t nstats);

/*
 * The models a job on model m may be moved to when m takes no call (its circuit breaker is
 * open): m's catalog fallbacks, in order, then, for a "model": "auto" job (spec->routed),
 * every catalog model that serves the quality the job was routed for and that its use case
 * admits.  Models this build cannot call and m itself are left out; each name once.  Names are
 * borrowed from the catalog, at most max of them into out; returns how many.  Whether the job
 * can really move there is imgq_job_retarget's to say.  The worker (choose_model) and
 * imgq quote (the worst case over every model a stage may be served by) both use this list.
 */
int imgq_route_alternatives(const imgq_catalog *cat, const struct imgq_job_spec *spec,
                            const struct imgq_model *m, const char **out, int max);

#endif
