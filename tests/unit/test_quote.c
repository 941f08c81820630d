/*
 * test_quote.c - quotes before submit: how a job splits into provider calls, its worst case
 * (the sum of imgq_cost_ceiling over those calls, what the worker reserves) and expected case
 * (the catalog's output tokens or flat price), routes, the per-model sums with their overflow
 * rule, and money text.  Reproduces seeds/003 ($161.00 routed against $800.00) and the
 * gpt-image-2 figures of seeds/001 on the shipped catalog.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imgq/job.h"
#include "imgq/quote.h"
#include "imgq/router.h"

static void source_path(const char *rel, char *buf, size_t len)
{
    const char *root = getenv("IMGQ_SOURCE_DIR");
    if (root && *root) {
        snprintf(buf, len, "%s/%s", root, rel);
        return;
    }
    const char *self = __FILE__;
    const char *cut = strstr(self, "tests/unit/");
    snprintf(buf, len, "%.*s%s", cut ? (int)(cut - self) : 0, self, rel);
}

static int load_shipped(void **state)
{
    char path[4096], err[512] = "";
    source_path("deploy/catalog.json", path, sizeof path);
    imgq_catalog *cat = NULL;
    if (imgq_catalog_load(path, &cat, err, sizeof err) != 0) {
        fprintf(stderr, "cannot load %s: %s\n", path, err);
        return -1;
    }
    *state = cat;
    return 0;
}

static int free_shipped(void **state)
{
    imgq_catalog_free(*state);
    return 0;
}

/* A spec as imgq_job_parse leaves it, for the fields a quote reads (a quote retargets it to
 * fallbacks, which serialises it: size and references are filled in). */
static struct imgq_job_spec spec(const char *model, const char *quality, int w, int h, int n,
                                 const char *prompt, int nrefs, const char *route)
{
    static char *refs[] = {"s3://bkt/r0.png", "s3://bkt/r1.png", "s3://bkt/r2.png",
                           "s3://bkt/r3.png"};
    static char sizes[16][24];
    static unsigned next;
    struct imgq_job_spec s;
    memset(&s, 0, sizeof s);
    s.size = sizes[next++ % 16];
    snprintf(s.size, sizeof sizes[0], "%dx%d", w, h);
    s.refs = nrefs > 0 && nrefs <= 4 ? refs : NULL;
    s.output_format = (char *)"webp";
    s.output_compression = 85;
    s.max_attempts = 5;
    s.model = (char *)model;
    s.quality = (char *)quality;
    s.width = w;
    s.height = h;
    s.n = n;
    s.prompt = (char *)prompt;
    s.nrefs = nrefs;
    s.route = (char *)route;
    return s;
}

static void test_calls_split_like_the_worker(void **state)
{
    const imgq_catalog *cat = *state;
    const struct imgq_model *gem = imgq_catalog_model(cat, "gemini-2.5-flash-image");
    const struct imgq_model *flux = imgq_catalog_model(cat, "flux-schnell");
    assert_int_equal(gem->n_per_call, 1);
    assert_int_equal(flux->n_per_call, 4);
    assert_int_equal(imgq_quote_calls(gem, 3), 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(imgq_quote_call_images(gem, 3, i), 1);
    assert_int_equal(imgq_quote_call_images(gem, 3, 3), 0);
    assert_int_equal(imgq_quote_calls(flux, 10), 3);
    assert_int_equal(imgq_quote_call_images(flux, 10, 0), 4);
    assert_int_equal(imgq_quote_call_images(flux, 10, 1), 4);
    assert_int_equal(imgq_quote_call_images(flux, 10, 2), 2);
    assert_int_equal(imgq_quote_calls(flux, 4), 1);
    assert_int_equal(imgq_quote_calls(flux, 0), 0);

    struct imgq_job_spec s = spec("gpt-image-2", "high", 1024, 1536, 2, "hello", 3, "list");
    struct imgq_request_shape sh = imgq_quote_call_shape(&s, 2);
    assert_string_equal(sh.quality, "high");
    assert_int_equal(sh.width, 1024);
    assert_int_equal(sh.height, 1536);
    assert_int_equal(sh.n, 2);
    assert_int_equal(sh.prompt_bytes, 5);
    assert_int_equal(sh.references, 3);
}

/* The worst case is exactly the worker's reservation: the ceiling of each call, summed. */
static void test_worst_is_sum_of_call_ceilings(void **state)
{
    const imgq_catalog *cat = *state;
    const struct imgq_model *gem = imgq_catalog_model(cat, "gemini-2.5-flash-image");
    const struct imgq_route *std = imgq_catalog_route(cat, "treerouter-standard");
    struct imgq_job_spec s = spec("gemini-2.5-flash-image", NULL, 1024, 1024, 3,
                                  "a red mug on a white table", 2, "list");
    struct imgq_job_quote q;
    assert_int_equal(imgq_quote_job(cat, &s, std, &q), 0);
    assert_ptr_equal(q.model, gem);
    assert_int_equal(q.calls, 3);
    assert_int_equal(q.images, 3);
    struct imgq_request_shape one = {NULL, 1024, 1024, 1, strlen(s.prompt), 2};
    imgq_micros c = 0;
    assert_int_equal(imgq_cost_ceiling(gem, std, &one, &c), 0);
    assert_int_equal(q.own_worst, 3 * c);
    assert_int_equal(q.stages[0].own_worst, 3 * c);
    assert_true(q.worst >= q.own_worst);
    /* Expected: 1,290 output tokens at $30/M and 2 x 1,297 reference tokens at $0.30/M, at
     * 0.30 of list, per call: (38,700 + 778.2) x 0.3 = 11,843.46 -> 11,843 micros. */
    assert_int_equal(q.expected, 3 * 11843);
    assert_true(q.own_worst > q.expected);

    /* NULL route: the job's own. */
    struct imgq_job_quote l;
    assert_int_equal(imgq_quote_job(cat, &s, NULL, &l), 0);
    assert_int_equal(l.expected, 3 * 39478); /* 38,700 + 778.2, rounded once per call */
    s.route = (char *)"treerouter-standard";
    assert_int_equal(imgq_quote_job(cat, &s, NULL, &l), 0);
    assert_int_equal(l.worst, q.worst);
    s.route = (char *)"no-such-route";
    assert_int_equal(imgq_quote_job(cat, &s, NULL, &l), IMGQ_ENOTFOUND);
    s.route = (char *)"list";
    s.model = (char *)"gpt-image-9";
    assert_int_equal(imgq_quote_job(cat, &s, NULL, &l), IMGQ_ENOTFOUND);
}

/* seeds/001: gpt-image-2 at 1024x1024 bills 196 / 1,756 / 7,024 output tokens; n=4 is one call
 * whose prompt is billed per image. */
static void test_seed_gpt_image_2(void **state)
{
    const imgq_catalog *cat = *state;
    static const struct {
        const char *quality;
        imgq_micros each;
    } rows[] = {{"low", 5880}, {"medium", 52680}, {"high", 210720}};
    for (size_t i = 0; i < 3; i++) {
        struct imgq_job_spec s =
            spec("gpt-image-2", rows[i].quality, 1024, 1024, 4, "0123456789", 0, "list");
        struct imgq_job_quote q;
        assert_int_equal(imgq_quote_job(cat, &s, NULL, &q), 0);
        assert_int_equal(q.calls, 1);
        assert_int_equal(q.expected, 4 * rows[i].each);
        /* + 10 bytes x 4 images of text at $5/M = 200 micros */
        assert_int_equal(q.own_worst, 4 * rows[i].each + 200);
    }
    /* "auto" quality: the most expensive row, in both figures. */
    struct imgq_job_spec s = spec("gpt-image-2", "auto", 1024, 1024, 1, "x", 0, "list");
    struct imgq_job_quote q;
    assert_int_equal(imgq_quote_job(cat, &s, NULL, &q), 0);
    assert_int_equal(q.expected, 210720);
}

/* seeds/003: 7,000 flux-schnell + 2,500 dall-e-3 standard + 500 dall-e-3 hd = $161.00,
 * against 10,000 dall-e-3 hd = $800.00. */
static void test_seed_routing_example(void **state)
{
    const imgq_catalog *cat = *state;
    struct imgq_quote routed, naive;
    imgq_quote_init(&routed);
    imgq_quote_init(&naive);
    struct imgq_job_spec fs = spec("flux-schnell", NULL, 1024, 1024, 1, "thumb", 0, "list");
    struct imgq_job_spec st = spec("dall-e-3", "standard", 1024, 1024, 1, "shot", 0, "list");
    struct imgq_job_spec hd = spec("dall-e-3", "hd", 1024, 1024, 1, "hero", 0, "list");
    struct imgq_job_quote q;
    for (int i = 0; i < 10000; i++) {
        const struct imgq_job_spec *s = i < 7000 ? &fs : i < 9500 ? &st : &hd;
        assert_int_equal(imgq_quote_job(cat, s, NULL, &q), 0);
        assert_int_equal(imgq_quote_add(&routed, &q), 0);
        assert_int_equal(imgq_quote_job(cat, &hd, NULL, &q), 0);
        assert_int_equal(imgq_quote_add(&naive, &q), 0);
    }
    assert_int_equal(routed.total.own_worst, 161000000);
    assert_int_equal(routed.total.expected, 161000000);
    assert_int_equal(routed.total.jobs, 10000);
    assert_int_equal(routed.total.images, 10000);
    assert_int_equal(routed.nrows, 2);
    assert_string_equal(routed.rows[0].model, "flux-schnell");
    assert_int_equal(routed.rows[0].jobs, 7000);
    assert_int_equal(routed.rows[0].own_worst, 21000000);
    assert_string_equal(routed.rows[1].model, "dall-e-3");
    assert_int_equal(routed.rows[1].own_worst, 140000000);
    assert_int_equal(routed.rows[1].worst, 140000000); /* dall-e-3 has no fallbacks */
    assert_int_equal(naive.total.worst, 800000000);
    assert_int_equal(naive.nrows, 1);
    char text[32];
    imgq_quote_money(routed.total.own_worst, text, sizeof text);
    assert_string_equal(text, "$161.00");
    /* flux-schnell's breaker may move its jobs to flux-1.1-pro ($0.04): 7,000 x $0.04 + $140. */
    assert_string_equal(routed.rows[0].model, "flux-schnell");
    assert_int_equal(routed.rows[0].worst, 280000000);
    imgq_quote_money(routed.total.worst, text, sizeof text);
    assert_string_equal(text, "$420.00");
    imgq_quote_money(naive.total.worst, text, sizeof text);
    assert_string_equal(text, "$800.00");

    /* The same jobs on the 0.30 price group: $48.30. */
    struct imgq_quote cheap;
    imgq_quote_init(&cheap);
    const struct imgq_route *std = imgq_catalog_route(cat, "treerouter-standard");
    for (int i = 0; i < 10000; i++) {
        const struct imgq_job_spec *s = i < 7000 ? &fs : i < 9500 ? &st : &hd;
        assert_int_equal(imgq_quote_job(cat, s, std, &q), 0);
        assert_int_equal(imgq_quote_add(&cheap, &q), 0);
    }
    assert_int_equal(cheap.total.own_worst, 48300000);
    imgq_quote_clear(&cheap);
    imgq_quote_clear(&routed);
    imgq_quote_clear(&naive);
    assert_int_equal(routed.nrows, 0);
    assert_null(routed.rows);
}

/* A one-stage job quote of m whose figures are all v. */
static struct imgq_job_quote one_stage(const struct imgq_model *m, imgq_micros v)
{
    struct imgq_job_quote q;
    memset(&q, 0, sizeof q);
    q.model = m;
    q.calls = q.images = 1;
    q.expected = q.own_worst = q.worst = v;
    q.nstages = 1;
    q.stages[0].model = q.stages[0].worst_model = m;
    q.stages[0].calls = q.stages[0].images = 1;
    q.stages[0].expected = q.stages[0].own_worst = q.stages[0].worst = v;
    return q;
}

static void test_add_overflow_leaves_quote_unchanged(void **state)
{
    const imgq_catalog *cat = *state;
    struct imgq_quote q;
    imgq_quote_init(&q);
    struct imgq_job_quote big = one_stage(imgq_catalog_model(cat, "flux-schnell"), INT64_MAX - 10);
    assert_int_equal(imgq_quote_add(&q, &big), 0);
    struct imgq_job_quote more = one_stage(imgq_catalog_model(cat, "dall-e-3"), 11);
    assert_int_equal(imgq_quote_add(&q, &more), IMGQ_ERANGE);
    assert_int_equal(q.nrows, 1);
    assert_int_equal(q.total.worst, INT64_MAX - 10);
    assert_int_equal(q.total.jobs, 1);
    more = one_stage(imgq_catalog_model(cat, "dall-e-3"), 10);
    assert_int_equal(imgq_quote_add(&q, &more), 0);
    assert_int_equal(q.total.worst, INT64_MAX);
    assert_int_equal(q.nrows, 2);
    struct imgq_job_quote nomodel = one_stage(NULL, 1);
    assert_int_equal(imgq_quote_add(&q, &nomodel), IMGQ_EINVAL);
    /* A stage row that would overflow leaves every row as it was, the other stage's too. */
    struct imgq_job_quote two = one_stage(imgq_catalog_model(cat, "gpt-image-2"), 1);
    two.nstages = 2;
    two.stages[0].stage = "draft";
    two.stages[1] = big.stages[0];
    two.stages[1].stage = NULL;
    two.worst = 1;
    assert_int_equal(imgq_quote_add(&q, &two), IMGQ_ERANGE);
    assert_int_equal(q.nrows, 2);
    assert_int_equal(q.total.jobs, 2);
    imgq_quote_clear(&q);

    /* A job whose call cannot be priced: the catalog has no figure for its size. */
    struct imgq_job_spec s = spec("dall-e-3", "hd", 333, 333, 1, "x", 0, "list");
    struct imgq_job_quote jq;
    assert_int_equal(imgq_quote_job(cat, &s, NULL, &jq), IMGQ_ENOTFOUND);
}

#define TODAY ((time_t)1795305600) /* 2026-11-22 */

static struct imgq_job_spec parsed(const imgq_catalog *cat, const char *line)
{
    struct imgq_job_spec s;
    struct imgq_job_problem why;
    int rc = imgq_job_parse(cat, line, strlen(line), NULL, TODAY, &s, &why, NULL, 0);
    if (rc)
        fail_msg("%s: %s: %s", line, why.field, why.reason);
    return s;
}

/* The ceiling of one call of model on the list route. */
static imgq_micros ceiling(const imgq_catalog *cat, const char *model, const char *quality, int n,
                           size_t prompt_bytes, int refs)
{
    struct imgq_request_shape sh = {quality, 1024, 1024, n, prompt_bytes, refs};
    imgq_micros c = 0;
    assert_int_equal(
        imgq_cost_ceiling(imgq_catalog_model(cat, model), imgq_catalog_route(cat, "list"), &sh, &c),
        0);
    return c;
}

static imgq_micros max3(imgq_micros a, imgq_micros b, imgq_micros c)
{
    imgq_micros m = a > b ? a : b;
    return m > c ? m : c;
}

/*
 * A pipeline is two stages, as the worker runs them: n drafts on the draft model (one call on a
 * model that makes 10 per call), then the refine on the job's model with the chosen draft as a
 * reference image.  The old quote priced only the refine, without its reference: under what the
 * worker reserves.
 */
static void test_pipeline_stages(void **state)
{
    const imgq_catalog *cat = *state;
    const char *prompt = "a walnut chair, studio light";
    size_t pb = strlen(prompt);
    struct imgq_job_spec s = parsed(
        cat, "{\"prompt\":\"a walnut chair, studio light\",\"size\":\"1024x1024\",\"pipeline\":"
             "{\"draft\":{\"model\":\"gpt-image-1-mini\",\"n\":3,\"quality\":\"low\"},"
             "\"select\":{\"mode\":\"auto\"},\"refine\":{\"model\":\"gpt-image-1.5\","
             "\"quality\":\"medium\",\"use_draft_as_reference\":true}}}");
    struct imgq_job_quote q;
    assert_int_equal(imgq_quote_job_at(cat, &s, NULL, TODAY, NULL, &q), 0);
    assert_int_equal(q.nstages, 2);
    assert_string_equal(q.model->name, "gpt-image-1.5");
    const struct imgq_stage_quote *d = &q.stages[0], *r = &q.stages[1];
    assert_string_equal(d->stage, "draft");
    assert_string_equal(d->model->name, "gpt-image-1-mini");
    assert_int_equal(d->images, 3);
    assert_int_equal(d->calls, 1);
    assert_int_equal(d->references, 0);
    assert_int_equal(d->own_worst, ceiling(cat, "gpt-image-1-mini", "low", 3, pb, 0));
    /* Its breaker may move the drafts to gpt-image-2 or gpt-image-1.5, at low quality. */
    assert_int_equal(d->worst, max3(d->own_worst, ceiling(cat, "gpt-image-2", "low", 3, pb, 0),
                                    ceiling(cat, "gpt-image-1.5", "low", 3, pb, 0)));
    assert_string_equal(r->stage, "refine");
    assert_string_equal(r->model->name, "gpt-image-1.5");
    assert_int_equal(r->images, 1);
    assert_int_equal(r->calls, 1);
    assert_int_equal(r->references, 1);
    assert_int_equal(r->own_worst, ceiling(cat, "gpt-image-1.5", "medium", 1, pb, 1));
    assert_int_equal(r->worst,
                     max3(r->own_worst, ceiling(cat, "gpt-image-2", "medium", 1, pb, 1), 0));
    assert_int_equal(q.worst, d->worst + r->worst);
    assert_int_equal(q.own_worst, d->own_worst + r->own_worst);
    assert_int_equal(q.calls, 2);
    assert_int_equal(q.images, 4);
    assert_true(q.own_worst > ceiling(cat, "gpt-image-1.5", "medium", 1, pb, 0) +
                                  ceiling(cat, "gpt-image-1-mini", "low", 3, pb, 0));

    /* Summed: one row per model and stage, the job once in the total. */
    struct imgq_quote sum;
    imgq_quote_init(&sum);
    assert_int_equal(imgq_quote_add(&sum, &q), 0);
    assert_int_equal(imgq_quote_add(&sum, &q), 0);
    assert_int_equal(sum.nrows, 2);
    assert_string_equal(sum.rows[0].model, "gpt-image-1-mini");
    assert_string_equal(sum.rows[0].stage, "draft");
    assert_int_equal(sum.rows[0].images, 6);
    assert_int_equal(sum.rows[0].worst, 2 * d->worst);
    assert_string_equal(sum.rows[1].model, "gpt-image-1.5");
    assert_string_equal(sum.rows[1].stage, "refine");
    assert_int_equal(sum.total.jobs, 2);
    assert_int_equal(sum.total.worst, 2 * q.worst);
    /* The same model without a pipeline is a row of its own. */
    struct imgq_job_spec plain = parsed(cat, "{\"prompt\":\"x\",\"model\":\"gpt-image-1.5\"}");
    struct imgq_job_quote pq;
    assert_int_equal(imgq_quote_job_at(cat, &plain, NULL, TODAY, NULL, &pq), 0);
    assert_int_equal(imgq_quote_add(&sum, &pq), 0);
    assert_int_equal(sum.nrows, 3);
    assert_null(sum.rows[2].stage);
    imgq_quote_clear(&sum);
    imgq_job_spec_clear(&plain);
    imgq_job_spec_clear(&s);

    /* Drafts on a one-image-per-call model fan out; a prompt-only refine sends no reference. */
    s = parsed(cat, "{\"prompt\":\"a walnut chair, studio light\",\"size\":\"1024x1024\","
                    "\"pipeline\":{\"draft\":{\"model\":\"gemini-2.5-flash-image\",\"n\":4},"
                    "\"select\":{\"mode\":\"manual\"},\"refine\":{\"model\":\"gpt-image-1.5\","
                    "\"quality\":\"high\",\"use_draft_as_reference\":false}}}");
    assert_int_equal(imgq_quote_job_at(cat, &s, NULL, TODAY, NULL, &q), 0);
    assert_int_equal(q.stages[0].calls, 4);
    assert_int_equal(q.stages[0].own_worst,
                     4 * ceiling(cat, "gemini-2.5-flash-image", NULL, 1, pb, 0));
    assert_int_equal(q.stages[1].references, 0);
    assert_int_equal(q.stages[1].own_worst, ceiling(cat, "gpt-image-1.5", "high", 1, pb, 0));
    /* On a price group, every stage. */
    const struct imgq_route *std = imgq_catalog_route(cat, "treerouter-standard");
    struct imgq_job_quote cheap;
    assert_int_equal(imgq_quote_job_at(cat, &s, std, TODAY, NULL, &cheap), 0);
    assert_true(cheap.stages[0].own_worst < q.stages[0].own_worst);
    assert_true(cheap.stages[1].own_worst < q.stages[1].own_worst);
    imgq_job_spec_clear(&s);
}

/* Every reference image is sent, and billed, with every call of the job. */
static void test_reference_worst_case(void **state)
{
    const imgq_catalog *cat = *state;
    struct imgq_job_spec s = parsed(
        cat, "{\"prompt\":\"make it blue\",\"model\":\"gpt-image-1.5\",\"quality\":\"low\","
             "\"size\":\"1024x1024\",\"n\":2,\"images\":[\"s3://bkt/a.png\",\"s3://bkt/b.png\"]}");
    struct imgq_job_quote q;
    assert_int_equal(imgq_quote_job_at(cat, &s, NULL, TODAY, NULL, &q), 0);
    assert_int_equal(q.nstages, 1);
    assert_null(q.stages[0].stage);
    assert_int_equal(q.stages[0].references, 2);
    assert_int_equal(q.own_worst, ceiling(cat, "gpt-image-1.5", "low", 2, 12, 2));
    assert_true(q.own_worst > ceiling(cat, "gpt-image-1.5", "low", 2, 12, 0));
    imgq_job_spec_clear(&s);
    /* Fanned out: each of the three calls carries both references. */
    s = parsed(
        cat, "{\"prompt\":\"make it blue\",\"model\":\"gemini-2.5-flash-image\","
             "\"size\":\"1024x1024\",\"n\":3,\"images\":[\"s3://bkt/a.png\",\"s3://bkt/b.png\"]}");
    assert_int_equal(imgq_quote_job_at(cat, &s, NULL, TODAY, NULL, &q), 0);
    assert_int_equal(q.calls, 3);
    assert_int_equal(q.own_worst, 3 * ceiling(cat, "gemini-2.5-flash-image", NULL, 1, 12, 2));
    assert_true(q.worst >= q.own_worst);
    imgq_job_spec_clear(&s);
}

/* A breaker may move a job to a dearer fallback: the worst case is that model's. */
static void test_fallback_worst_case(void **state)
{
    const imgq_catalog *cat = *state;
    struct imgq_job_spec s =
        parsed(cat, "{\"prompt\":\"thumb\",\"model\":\"flux-schnell\",\"size\":\"1024x1024\"}");
    struct imgq_job_quote q;
    assert_int_equal(imgq_quote_job_at(cat, &s, NULL, TODAY, NULL, &q), 0);
    assert_int_equal(q.expected, 3000);
    assert_int_equal(q.own_worst, 3000);
    assert_int_equal(q.worst, 40000); /* flux-1.1-pro */
    assert_string_equal(q.stages[0].worst_model->name, "flux-1.1-pro");
    imgq_job_spec_clear(&s);
    /* seedream-4-5 falls back to seedream-4-0, cheaper: its own figure stands. */
    s = parsed(cat, "{\"prompt\":\"x\",\"model\":\"seedream-4-5\",\"size\":\"2048x2048\"}");
    assert_int_equal(imgq_quote_job_at(cat, &s, NULL, TODAY, NULL, &q), 0);
    assert_int_equal(q.own_worst, 40000);
    assert_int_equal(q.worst, 40000);
    assert_ptr_equal(q.stages[0].worst_model, q.stages[0].model);
    imgq_job_spec_clear(&s);
}

/* An auto job may be moved to any model that can do it (imgq_route_alternatives, as the
 * worker's choose_model): its worst case is the dearest of them, not only of its model's
 * fallbacks. */
static void test_auto_alternatives_worst_case(void **state)
{
    const imgq_catalog *cat = *state;
    struct imgq_job_spec s = parsed(
        cat,
        "{\"prompt\":\"a mug\",\"model\":\"auto\",\"quality\":\"low\",\"size\":\"1024x1024\"}");
    assert_non_null(s.routed);
    const char *alt[64];
    int n = imgq_route_alternatives(cat, &s, imgq_catalog_model(cat, s.model), alt, 64);
    assert_true(n > 1);
    struct imgq_job_quote q;
    assert_int_equal(imgq_quote_job_at(cat, &s, NULL, TODAY, NULL, &q), 0);
    for (int i = 0; i < n; i++) {
        struct imgq_job_spec to;
        struct imgq_job_problem why;
        if (imgq_job_retarget(cat, &s, alt[i], TODAY, &to, &why) != 0)
            continue;
        struct imgq_job_quote tq;
        assert_int_equal(imgq_quote_job_at(cat, &to, NULL, TODAY, NULL, &tq), 0);
        if (tq.own_worst > q.worst)
            fail_msg("%s costs %lld, above the auto job's worst case %lld", alt[i],
                     (long long)tq.own_worst, (long long)q.worst);
        imgq_job_spec_clear(&to);
    }
    imgq_job_spec_clear(&s);
}

static void test_money_text(void **state)
{
    (void)state;
    static const struct {
        imgq_micros v;
        const char *text;
    } rows[] = {{0, "$0.00"},
                {161000000, "$161.00"},
                {5880, "$0.00588"},
                {3000, "$0.003"},
                {220896, "$0.220896"},
                {4250000000, "$4,250.00"},
                {3612500000, "$3,612.50"},
                {-1275500000, "-$1,275.50"},
                {1, "$0.000001"}};
    char text[48];
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        imgq_quote_money(rows[i].v, text, sizeof text);
        assert_string_equal(text, rows[i].text);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_calls_split_like_the_worker),
        cmocka_unit_test(test_worst_is_sum_of_call_ceilings),
        cmocka_unit_test(test_seed_gpt_image_2),
        cmocka_unit_test(test_seed_routing_example),
        cmocka_unit_test(test_add_overflow_leaves_quote_unchanged),
        cmocka_unit_test(test_pipeline_stages),
        cmocka_unit_test(test_reference_worst_case),
        cmocka_unit_test(test_fallback_worst_case),
        cmocka_unit_test(test_auto_alternatives_worst_case),
        cmocka_unit_test(test_money_text),
    };
    return cmocka_run_group_tests(tests, load_shipped, free_shipped);
}
