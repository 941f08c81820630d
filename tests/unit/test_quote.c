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

#include "imgq/quote.h"

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

/* A spec as imgq_job_parse leaves it, for the fields a quote reads. */
static struct imgq_job_spec spec(const char *model, const char *quality, int w, int h, int n,
                                 const char *prompt, int nrefs, const char *route)
{
    struct imgq_job_spec s;
    memset(&s, 0, sizeof s);
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
    assert_int_equal(q.worst, 3 * c);
    /* Expected: 1,290 output tokens at $30/M and 2 x 1,297 reference tokens at $0.30/M, at
     * 0.30 of list, per call: (38,700 + 778.2) x 0.3 = 11,843.46 -> 11,843 micros. */
    assert_int_equal(q.expected, 3 * 11843);
    assert_true(q.worst > q.expected);

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
        assert_int_equal(q.worst, 4 * rows[i].each + 200);
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
    assert_int_equal(routed.total.worst, 161000000);
    assert_int_equal(routed.total.expected, 161000000);
    assert_int_equal(routed.total.jobs, 10000);
    assert_int_equal(routed.total.images, 10000);
    assert_int_equal(routed.nrows, 2);
    assert_string_equal(routed.rows[0].model, "flux-schnell");
    assert_int_equal(routed.rows[0].jobs, 7000);
    assert_int_equal(routed.rows[0].worst, 21000000);
    assert_string_equal(routed.rows[1].model, "dall-e-3");
    assert_int_equal(routed.rows[1].worst, 140000000);
    assert_int_equal(naive.total.worst, 800000000);
    assert_int_equal(naive.nrows, 1);
    char text[32];
    imgq_quote_money(routed.total.worst, text, sizeof text);
    assert_string_equal(text, "$161.00");
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
    assert_int_equal(cheap.total.worst, 48300000);
    imgq_quote_clear(&cheap);
    imgq_quote_clear(&routed);
    imgq_quote_clear(&naive);
    assert_int_equal(routed.nrows, 0);
    assert_null(routed.rows);
}

static void test_add_overflow_leaves_quote_unchanged(void **state)
{
    const imgq_catalog *cat = *state;
    struct imgq_quote q;
    imgq_quote_init(&q);
    struct imgq_job_quote big = {imgq_catalog_model(cat, "flux-schnell"), 1, 1, INT64_MAX - 10,
                                 INT64_MAX - 10};
    assert_int_equal(imgq_quote_add(&q, &big), 0);
    struct imgq_job_quote more = {imgq_catalog_model(cat, "dall-e-3"), 1, 1, 11, 11};
    assert_int_equal(imgq_quote_add(&q, &more), IMGQ_ERANGE);
    assert_int_equal(q.nrows, 1);
    assert_int_equal(q.total.worst, INT64_MAX - 10);
    assert_int_equal(q.total.jobs, 1);
    more.worst = more.expected = 10;
    assert_int_equal(imgq_quote_add(&q, &more), 0);
    assert_int_equal(q.total.worst, INT64_MAX);
    assert_int_equal(q.nrows, 2);
    struct imgq_job_quote nomodel = {NULL, 1, 1, 1, 1};
    assert_int_equal(imgq_quote_add(&q, &nomodel), IMGQ_EINVAL);
    imgq_quote_clear(&q);

    /* A job whose call cannot be priced: the catalog has no figure for its size. */
    struct imgq_job_spec s = spec("dall-e-3", "hd", 333, 333, 1, "x", 0, "list");
    struct imgq_job_quote jq;
    assert_int_equal(imgq_quote_job(cat, &s, NULL, &jq), IMGQ_ENOTFOUND);
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
        cmocka_unit_test(test_money_text),
    };
    return cmocka_run_group_tests(tests, load_shipped, free_shipped);
}
