/*
 * fuzz_job.c - imgq_job_parse() on arbitrary bytes against the shipped catalog, and the stored
 * form: every accepted job must re-serialise (imgq_job_spec_to_json) and re-read
 * (imgq_job_spec_from_json) to the same JSON.  The input is also fed to
 * imgq_job_spec_from_json() directly (a spec read back from Redis), with the same check.
 */
#include <time.h>

#include "fuzz.h"
#include "imgq/catalog.h"
#include "imgq/job.h"

static imgq_catalog *shipped;

static void release_catalog(void)
{
    imgq_catalog_free(shipped);
    shipped = NULL;
}

static const imgq_catalog *catalog(void)
{
    if (!shipped) {
        char path[4096], err[512] = "";
        fuzz_source_path("deploy/catalog.json", path, sizeof path);
        if (imgq_catalog_load(path, &shipped, err, sizeof err) != 0) {
            fprintf(stderr, "fuzz_job: cannot load the catalog: %s\n", err);
            abort();
        }
        atexit(release_catalog);
    }
    return shipped;
}

static int all_zero(const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return 0;
    return 1;
}

/* to_json(s) -> from_json -> to_json must give the same text; returns the first text. */
static void check_round_trip(const struct imgq_job_spec *s)
{
    char *j1 = imgq_job_spec_to_json(s);
    FUZZ_CHECK(j1 != NULL);
    struct imgq_job_spec back;
    int rc = imgq_job_spec_from_json(j1, &back);
    if (rc != 0)
        fprintf(stderr, "spec did not re-read (%d): %s\n", rc, j1);
    FUZZ_CHECK(rc == 0);
    char *j2 = imgq_job_spec_to_json(&back);
    if (strcmp(j1, j2) != 0)
        fprintf(stderr, "round trip changed the spec:\n  %s\n  %s\n", j1, j2);
    FUZZ_CHECK(strcmp(j1, j2) == 0);
    FUZZ_CHECK(back.width == s->width && back.height == s->height);
    FUZZ_CHECK(back.n == s->n && back.priority == s->priority);
    free(j2);
    free(j1);
    imgq_job_spec_clear(&back);
}

static void check_accepted(const imgq_catalog *cat, const struct imgq_job_spec *s)
{
    FUZZ_CHECK(s->model && s->prompt && s->size && s->output_format && s->route && s->team);
    const struct imgq_model *m = imgq_catalog_model(cat, s->model);
    FUZZ_CHECK(m && strcmp(m->name, s->model) == 0);
    FUZZ_CHECK(imgq_provider_api_supported(m->api));
    FUZZ_CHECK(s->n >= 1 && s->n <= m->n_max);
    FUZZ_CHECK(imgq_model_allows_size(m, s->size) && s->width > 0 && s->height > 0);
    FUZZ_CHECK(!s->quality || imgq_model_allows_quality(m, s->quality));
    FUZZ_CHECK(!strcmp(s->output_format, "webp") || !strcmp(s->output_format, "png"));
    FUZZ_CHECK(s->output_compression >= 0 && s->output_compression <= 100);
    FUZZ_CHECK(imgq_catalog_route(cat, s->route) != NULL);
    FUZZ_CHECK(s->max_attempts >= 1 && s->max_attempts <= 100);
    FUZZ_CHECK(s->priority >= IMGQ_PRIO_HIGH && s->priority <= IMGQ_PRIO_LOW);
    FUZZ_CHECK(!s->id || (strlen(s->id) >= 1 && strlen(s->id) <= IMGQ_JOB_ID_MAX));
    check_round_trip(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const imgq_catalog *cat = catalog();
    /* Odd-sized inputs get submit-time defaults, even-sized ones none. */
    const struct imgq_job_defaults defaults = {
        "fuzz-team", "treerouter-standard", IMGQ_PRIO_LOW, 3, NULL, 0, 2};
    const time_t today = 1782864000; /* 2026-07-01: gpt-image-1 deprecated, dall-e-3 shut down */

    struct imgq_job_spec spec;
    struct imgq_job_problem why;
    char warn[256];
    int rc = imgq_job_parse(cat, (const char *)data, size, size % 2 ? &defaults : NULL, today,
                            &spec, &why, warn, sizeof warn);
    FUZZ_CHECK(FUZZ_TERMINATED(warn));
    if (rc == 0) {
        check_accepted(cat, &spec);
        imgq_job_spec_clear(&spec);
    } else {
        FUZZ_CHECK(rc == IMGQ_EPARSE || rc == IMGQ_EINVAL);
        FUZZ_CHECK(FUZZ_TERMINATED(why.field) && FUZZ_TERMINATED(why.reason));
        FUZZ_CHECK(why.reason[0] != '\0');        /* field may be "": {"":1} is an unknown field */
        FUZZ_CHECK(all_zero(&spec, sizeof spec)); /* "leaves *out cleared" */
    }

    /* The same bytes as a stored spec (from_json reads a C string). */
    char *text = fuzz_cstr(data, size);
    struct imgq_job_spec stored;
    if (imgq_job_spec_from_json(text, &stored) == 0) {
        FUZZ_CHECK(stored.model && stored.prompt && stored.size && stored.route);
        FUZZ_CHECK(stored.n >= 1 && stored.width > 0 && stored.height > 0);
        check_round_trip(&stored);
        imgq_job_spec_clear(&stored);
    } else {
        FUZZ_CHECK(all_zero(&stored, sizeof stored));
    }
    free(text);
    return 0;
}
