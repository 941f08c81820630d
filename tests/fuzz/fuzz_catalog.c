/*
 * fuzz_catalog.c - imgq_catalog_load_string() on arbitrary text (an operator's catalog file is
 * input too), then everything a worker does with a loaded catalog: lookups, the cost ceiling
 * of the largest job every model allows at every size and quality, costing a usage, and
 * validating a minimal job for each model (a catalog must never make a valid job crash).
 */
#include <stdbool.h>
#include <time.h>

#include "fuzz.h"
#include "imgq/catalog.h"
#include "imgq/job.h"

static void check_job(const imgq_catalog *cat, const struct imgq_model *m)
{
    /* {"prompt":"p","model":NAME}, with the name JSON-escaped */
    json_t *o = json_object();
    json_object_set_new(o, "prompt", json_string("a red fox"));
    json_object_set_new(o, "model", json_string(m->name));
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!text)
        return; /* a name that is not valid UTF-8 cannot be sent in a job anyway */
    struct imgq_job_spec spec;
    struct imgq_job_problem why;
    char warn[256];
    int rc = imgq_job_parse(cat, text, strlen(text), NULL, (time_t)1782864000, &spec, &why, warn,
                            sizeof warn);
    free(text);
    if (rc != 0)
        return;
    FUZZ_CHECK(imgq_catalog_model(cat, spec.model) == m);
    char *stored = imgq_job_spec_to_json(&spec);
    struct imgq_job_spec back;
    FUZZ_CHECK(imgq_job_spec_from_json(stored, &back) == 0);
    FUZZ_CHECK(back.width == spec.width && back.height == spec.height);
    imgq_job_spec_clear(&back);
    free(stored);
    imgq_job_spec_clear(&spec);
}

static void check_costs(const imgq_catalog *cat, const struct imgq_model *m)
{
    size_t prompt_bytes = m->max_prompt_chars > 0 ? (size_t)m->max_prompt_chars * 4 : 32000;
    for (char **s = m->sizes; *s; s++) {
        int w, h;
        FUZZ_CHECK(imgq_size_parse(*s, &w, &h) == 0 && w > 0 && h > 0);
        for (size_t qi = 0;; qi++) {
            const char *q = qi == 0 ? NULL : m->qualities[qi - 1];
            if (qi > 0 && !q)
                break;
            for (size_t ri = 0;; ri++) {
                const struct imgq_route *rt = imgq_catalog_route_at(cat, ri);
                if (!rt)
                    break;
                /* The shape the worker prices: n up to n_max, no references. */
                struct imgq_request_shape shape = {q, w, h, m->n_max, prompt_bytes, 0};
                imgq_micros cost;
                int rc = imgq_cost_ceiling(m, rt, &shape, &cost);
                FUZZ_CHECK(rc == 0 || rc == IMGQ_ENOTFOUND || rc == IMGQ_ERANGE);
                if (rc == 0)
                    FUZZ_CHECK(cost >= 0);
                if (m->billing == IMGQ_BILL_TOKENS && !q)
                    FUZZ_CHECK(rc != IMGQ_ENOTFOUND); /* every size is priceable */
            }
        }
    }
    struct imgq_usage u = {1000, 10, 2000, 20, 4160, 5, 1, NULL, 1024, 1024};
    imgq_micros cost;
    int rc = imgq_cost_from_usage(m, NULL, &u, &cost);
    FUZZ_CHECK(rc == 0 || rc == IMGQ_ENOTFOUND || rc == IMGQ_ERANGE);
    if (rc == 0)
        FUZZ_CHECK(cost >= 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_cstr(data, size);
    imgq_catalog *cat = (imgq_catalog *)&text; /* must stay untouched on error */
    char err[256];
    memset(err, 'x', sizeof err);
    int rc = imgq_catalog_load_string(text, &cat, err, sizeof err);
    if (rc != 0) {
        FUZZ_CHECK(rc == IMGQ_EPARSE || rc == IMGQ_EINVAL);
        FUZZ_CHECK(cat == (imgq_catalog *)&text);
        FUZZ_CHECK(FUZZ_TERMINATED(err) && err[0] != '\0');
        free(text);
        return 0;
    }
    FUZZ_CHECK(imgq_catalog_version(cat) != NULL);
    FUZZ_CHECK(imgq_catalog_route(cat, NULL) != NULL); /* "list" always exists */
    for (size_t i = 0; imgq_catalog_route_at(cat, i); i++) {
        const struct imgq_route *rt = imgq_catalog_route_at(cat, i);
        FUZZ_CHECK(rt->name && rt->multiplier_ppm > 0);
        FUZZ_CHECK(imgq_catalog_route(cat, rt->name) != NULL);
    }
    for (size_t i = 0; imgq_catalog_model_at(cat, i); i++) {
        const struct imgq_model *m = imgq_catalog_model_at(cat, i);
        FUZZ_CHECK(m->name && m->provider && m->api && m->sizes && m->qualities);
        FUZZ_CHECK(m->sizes[0] != NULL && m->n_max >= 1 && m->n_per_call >= 1);
        FUZZ_CHECK(imgq_catalog_model(cat, m->name) == m);
        check_costs(cat, m);
        check_job(cat, m);
    }
    imgq_catalog_free(cat);
    free(text);
    return 0;
}
