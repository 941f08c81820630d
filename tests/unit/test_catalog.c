/*
 * test_catalog.c - the price catalog: loading (shipped file and inline catalogs), lookups,
 * token tables, cost arithmetic against the worked figures of reference/pricing.md, ceilings,
 * rounding, overflow, money text, and load errors that name the model and the field.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "imgq/catalog.h"

/* ---- helpers ------------------------------------------------------------------------------ */

/* The repository root: $IMGQ_SOURCE_DIR (set by ctest), else derived from this file's path so
 * the program also runs alone. */
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

static imgq_catalog *shipped(void **state)
{
    return *state;
}

static int load_shipped(void **state)
{
    char path[4096], err[512] = "";
    source_path("deploy/catalog.json", path, sizeof path);
    imgq_catalog *cat = NULL;
    int rc = imgq_catalog_load(path, &cat, err, sizeof err);
    if (rc != 0) {
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

static const struct imgq_model *model(void **state, const char *name)
{
    const struct imgq_model *m = imgq_catalog_model(shipped(state), name);
    assert_non_null(m);
    return m;
}

static const struct imgq_route *route(void **state, const char *name)
{
    const struct imgq_route *r = imgq_catalog_route(shipped(state), name);
    assert_non_null(r);
    return r;
}

/* Load an inline catalog that must be refused; returns the code, message in err. */
static int load_bad(const char *text, char *err, size_t errlen)
{
    imgq_catalog *cat = (imgq_catalog *)(uintptr_t)0x1; /* must stay untouched */
    err[0] = '\0';
    int rc = imgq_catalog_load_string(text, &cat, err, errlen);
    assert_true(cat == (imgq_catalog *)(uintptr_t)0x1);
    assert_int_not_equal(rc, 0);
    return rc;
}

static void assert_contains(const char *haystack, const char *needle)
{
    if (!strstr(haystack, needle))
        fail_msg("expected \"%s\" in \"%s\"", needle, haystack);
}

/* A one-model token catalog whose prices, routes and tables tests fill in. */
#define TOKEN_MODEL(prices)                                                                        \
    "{\"version\":\"t1\",\"models\":{\"m\":{\"provider\":\"p\",\"api\":\"openai-images\","         \
    "\"billing\":\"tokens\",\"prices\":" prices ",\"sizes\":[\"1024x1024\"],"                      \
    "\"output_tokens\":{\"1024x1024\":{\"low\":10,\"high\":100}}}},"                               \
    "\"routes\":{\"half\":{\"multiplier_ppm\":500000},\"forty\":{\"multiplier_ppm\":400000},"      \
    "\"big\":{\"multiplier_ppm\":1000000000000},"                                                  \
    "\"huge\":{\"multiplier_ppm\":9000000000000000000}}}"

static imgq_catalog *load_ok(const char *text)
{
    imgq_catalog *cat = NULL;
    char err[512] = "";
    int rc = imgq_catalog_load_string(text, &cat, err, sizeof err);
    if (rc != 0)
        fail_msg("inline catalog refused (%d): %s", rc, err);
    assert_non_null(cat);
    return cat;
}

/* ---- the shipped catalog ------------------------------------------------------------------ */

static void test_shipped_catalog(void **state)
{
    imgq_catalog *cat = shipped(state);
    assert_string_equal(imgq_catalog_version(cat), "2026-11-22");

    const struct imgq_model *m = model(state, "gpt-image-1");
    assert_string_equal(m->name, "gpt-image-1");
    assert_string_equal(m->provider, "openai");
    assert_string_equal(m->api, "openai-images");
    assert_int_equal(m->billing, IMGQ_BILL_TOKENS);
    assert_int_equal(m->prices.text_in, 5000000);
    assert_int_equal(m->prices.cached_text_in, 1250000);
    assert_int_equal(m->prices.image_in, 10000000);
    assert_int_equal(m->prices.cached_image_in, 2500000);
    assert_int_equal(m->prices.image_out, 40000000);
    assert_int_equal(m->prices.text_out, 0);
    assert_int_equal(m->n_max, 10);
    assert_int_equal(m->n_per_call, 10);
    assert_int_equal(m->max_prompt_chars, 32000);
    assert_int_equal(m->max_references, 16);
    assert_int_equal(m->ref_image_tokens, 1025);
    assert_string_equal(m->sizes[0], "1024x1024");
    assert_string_equal(m->sizes[2], "1536x1024");
    assert_null(m->sizes[3]);
    assert_string_equal(m->qualities[3], "auto");
    assert_null(m->qualities[4]);
    assert_int_equal(m->ntokens, 9);
    assert_false(m->charges_failures);
    assert_string_equal(m->deprecated, "2026-06-01");
    assert_string_equal(m->shutdown, "2026-10-23");
    assert_string_equal(m->successor, "gpt-image-1.5");
    assert_string_equal(m->as_of, "2026-11-01");

    /* gpt-image-1.5 leaves cached_image_in out: it defaults to the uncached rate. */
    const struct imgq_model *m15 = model(state, "gpt-image-1.5");
    assert_int_equal(m15->prices.cached_image_in, 8000000);
    assert_null(m15->deprecated);

    const struct imgq_model *d3 = model(state, "dall-e-3");
    assert_int_equal(d3->billing, IMGQ_BILL_PER_IMAGE);
    assert_int_equal(d3->nimage_prices, 6);
    assert_int_equal(d3->prices.per_image, 0);
    assert_int_equal(d3->n_max, 1);

    /* Listings: models and routes in catalog order, NULL past the end. */
    size_t nmodels = 0;
    while (imgq_catalog_model_at(cat, nmodels))
        nmodels++;
    assert_int_equal(nmodels, 14);
    assert_string_equal(imgq_catalog_model_at(cat, 0)->name, "gpt-image-1");
    static const char *const routes[] = {"list", "treerouter-standard", "treerouter-enterprise",
                                         "aggregator"};
    static const int64_t ppm[] = {1000000, 300000, 850000, 1100000};
    for (size_t i = 0; i < 4; i++) {
        const struct imgq_route *r = imgq_catalog_route_at(cat, i);
        assert_non_null(r);
        assert_string_equal(r->name, routes[i]);
        assert_int_equal(r->multiplier_ppm, ppm[i]);
    }
    assert_null(imgq_catalog_route_at(cat, 4));
}

static void test_lookups_and_aliases(void **state)
{
    imgq_catalog *cat = shipped(state);
    const struct imgq_model *target = model(state, "gpt-image-1.5");
    assert_ptr_equal(imgq_catalog_model(cat, "catalog-default"), target);
    assert_string_equal(imgq_catalog_model(cat, "catalog-default")->name, "gpt-image-1.5");
    assert_ptr_equal(imgq_catalog_model(cat, "draft"), model(state, "gpt-image-1-mini"));

    assert_null(imgq_catalog_model(cat, "gpt-image-9"));
    assert_null(imgq_catalog_model(cat, ""));
    assert_null(imgq_catalog_model(cat, "GPT-IMAGE-1")); /* names are exact */
    assert_null(imgq_catalog_model(cat, NULL));

    assert_ptr_equal(imgq_catalog_route(cat, NULL), route(state, "list"));
    assert_int_equal(route(state, "treerouter-standard")->multiplier_ppm, 300000);
    assert_null(imgq_catalog_route(cat, "no-such-route"));
    assert_null(imgq_catalog_route(cat, ""));
}

static void test_size_and_quality_checks(void **state)
{
    int w = -1, h = -1;
    assert_int_equal(imgq_size_parse("1536x1024", &w, &h), 0);
    assert_int_equal(w, 1536);
    assert_int_equal(h, 1024);
    assert_int_equal(imgq_size_parse("1x1", &w, &h), 0);
    assert_int_equal(w, 1);
    static const char *const bad[] = {"",     "1024",        "1024x", "x1024",     "0x512",
                                      "01x5", "1024x1024 ",  "-1x5",  "1024X1024", "100001x1",
                                      "auto", "1024x1024x1", " 1x1",  "1024*1024"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        w = h = 7;
        if (imgq_size_parse(bad[i], &w, &h) != IMGQ_EINVAL)
            fail_msg("size '%s' was accepted", bad[i]);
        assert_int_equal(w, 7); /* untouched on error */
    }
    assert_int_equal(imgq_size_parse(NULL, &w, &h), IMGQ_EINVAL);

    const struct imgq_model *m = model(state, "gpt-image-1");
    assert_true(imgq_model_allows_size(m, "1024x1536"));
    assert_false(imgq_model_allows_size(m, "2048x2048"));
    assert_false(imgq_model_allows_size(m, NULL));
    assert_true(imgq_model_allows_quality(m, "high"));
    assert_true(imgq_model_allows_quality(m, "auto"));
    assert_false(imgq_model_allows_quality(m, "hd"));
    assert_false(imgq_model_allows_quality(m, NULL));
    assert_false(imgq_model_allows_quality(model(state, "flux-schnell"), "auto"));
}

/* ---- token tables ------------------------------------------------------------------------- */

static void test_output_tokens_gpt_image_1(void **state)
{
    const struct imgq_model *m = model(state, "gpt-image-1");
    static const struct {
        int w, h;
        int64_t low, medium, high;
    } rows[] = {
        {1024, 1024, 272, 1056, 4160},
        {1024, 1536, 408, 1584, 6240},
        {1536, 1024, 400, 1568, 6208},
    };
    for (size_t i = 0; i < 3; i++) {
        int64_t t = -1;
        assert_int_equal(imgq_model_output_tokens(m, "low", rows[i].w, rows[i].h, &t), 0);
        assert_int_equal(t, rows[i].low);
        assert_int_equal(imgq_model_output_tokens(m, "medium", rows[i].w, rows[i].h, &t), 0);
        assert_int_equal(t, rows[i].medium);
        assert_int_equal(imgq_model_output_tokens(m, "high", rows[i].w, rows[i].h, &t), 0);
        assert_int_equal(t, rows[i].high);
        /* "auto" and NULL bound the cost: the most expensive quality of that size. */
        assert_int_equal(imgq_model_output_tokens(m, "auto", rows[i].w, rows[i].h, &t), 0);
        assert_int_equal(t, rows[i].high);
        t = -1;
        assert_int_equal(imgq_model_output_tokens(m, NULL, rows[i].w, rows[i].h, &t), 0);
        assert_int_equal(t, rows[i].high);
    }
    int64_t t = 99;
    assert_int_equal(imgq_model_output_tokens(m, "high", 512, 512, &t), IMGQ_ENOTFOUND);
    assert_int_equal(imgq_model_output_tokens(m, "auto", 2048, 2048, &t), IMGQ_ENOTFOUND);
    assert_int_equal(imgq_model_output_tokens(m, "ultra", 1024, 1024, &t), IMGQ_ENOTFOUND);
    assert_int_equal(t, 99);

    /* A table with an explicit "auto" row uses it. */
    const struct imgq_model *g = model(state, "gemini-2.5-flash-image");
    assert_int_equal(imgq_model_output_tokens(g, "auto", 832, 1248, &t), 0);
    assert_int_equal(t, 1290);
    assert_int_equal(imgq_model_output_tokens(g, NULL, 1536, 672, &t), 0);
    assert_int_equal(t, 1290);
}

/* pricing.md: 10M text-in, 20M image-in, 100M image-out on gpt-image-1 = $4,250.00 list,
 * $1,275.00 at a 0.30 price group, $3,612.50 at 0.85. */
static void test_seed_monthly_workload(void **state)
{
    const struct imgq_model *m = model(state, "gpt-image-1");
    struct imgq_usage u = {.text_in = 10000000, .image_in = 20000000, .image_out = 100000000};
    imgq_micros c = -1;
    assert_int_equal(imgq_cost_from_usage(m, route(state, "list"), &u, &c), 0);
    assert_int_equal(c, INT64_C(4250000000));
    c = -1;
    assert_int_equal(imgq_cost_from_usage(m, NULL, &u, &c), 0); /* NULL route = list */
    assert_int_equal(c, INT64_C(4250000000));
    assert_int_equal(imgq_cost_from_usage(m, route(state, "treerouter-standard"), &u, &c), 0);
    assert_int_equal(c, INT64_C(1275000000));
    assert_int_equal(imgq_cost_from_usage(m, route(state, "treerouter-enterprise"), &u, &c), 0);
    assert_int_equal(c, INT64_C(3612500000));
    assert_int_equal(imgq_cost_from_usage(m, route(state, "aggregator"), &u, &c), 0);
    assert_int_equal(c, INT64_C(4675000000));

    char text[64];
    imgq_money_format(INT64_C(4250000000), 2, text, sizeof text);
    assert_string_equal(text, "$4,250.00");
    imgq_money_format(INT64_C(3612500000), 2, text, sizeof text);
    assert_string_equal(text, "$3,612.50");

    /* Cached rates are billed separately: 4M cached text at $1.25/M = $5. */
    struct imgq_usage cached = {.cached_text_in = 4000000, .cached_image_in = 2000000};
    assert_int_equal(imgq_cost_from_usage(m, NULL, &cached, &c), 0);
    assert_int_equal(c, 5000000 + 5000000);
    /* Text output tokens are billed at text_out (gpt-image-2: $10/M). */
    struct imgq_usage tout = {.text_out = 1000};
    assert_int_equal(imgq_cost_from_usage(model(state, "gpt-image-2"), NULL, &tout, &c), 0);
    assert_int_equal(c, 10000);
}

/* pricing.md: gpt-image-2 at 1024x1024, 196 / 1,756 / 7,024 output tokens = $0.00588 /
 * $0.05268 / $0.21072 of output. */
static void test_seed_gpt_image_2_output(void **state)
{
    const struct imgq_model *m = model(state, "gpt-image-2");
    static const struct {
        const char *quality;
        int64_t tokens;
        imgq_micros cost;
        const char *text;
    } rows[] = {
        {"low", 196, 5880, "$0.00588"},
        {"medium", 1756, 52680, "$0.05268"},
        {"high", 7024, 210720, "$0.21072"},
    };
    for (size_t i = 0; i < 3; i++) {
        int64_t t = 0;
        assert_int_equal(imgq_model_output_tokens(m, rows[i].quality, 1024, 1024, &t), 0);
        assert_int_equal(t, rows[i].tokens);
        struct imgq_usage u = {.image_out = t};
        imgq_micros c = -1;
        assert_int_equal(imgq_cost_from_usage(m, NULL, &u, &c), 0);
        assert_int_equal(c, rows[i].cost);
        char text[32];
        imgq_money_format(c, 5, text, sizeof text);
        assert_string_equal(text, rows[i].text);
    }
}

/* ---- ceilings ----------------------------------------------------------------------------- */

static void test_ceiling_tokens(void **state)
{
    const struct imgq_model *m = model(state, "gpt-image-1");
    struct imgq_request_shape r = {.quality = "high",
                                   .width = 1024,
                                   .height = 1024,
                                   .n = 2,
                                   .prompt_bytes = 100,
                                   .references = 3};
    struct imgq_usage u;
    assert_int_equal(imgq_ceiling_usage(m, &r, &u), 0);
    /* Prompt and references are billed once per image; output is n x the table row. */
    assert_int_equal(u.text_in, 200);
    assert_int_equal(u.image_in, 3 * 1025 * 2);
    assert_int_equal(u.image_out, 2 * 4160);
    assert_int_equal(u.images, 2);
    assert_int_equal(u.cached_text_in, 0);
    assert_int_equal(u.text_out, 0);
    assert_int_equal(u.width, 1024);
    assert_string_equal(u.quality, "high");

    imgq_micros c = -1;
    /* 200 x $5/M + 6150 x $10/M + 8320 x $40/M = 1000 + 61500 + 332800 micros. */
    assert_int_equal(imgq_cost_ceiling(m, NULL, &r, &c), 0);
    assert_int_equal(c, 395300);
    assert_int_equal(imgq_cost_ceiling(m, route(state, "treerouter-standard"), &r, &c), 0);
    assert_int_equal(c, 118590);

    /* "auto" and NULL quality reserve for the worst quality. */
    r.quality = "auto";
    assert_int_equal(imgq_cost_ceiling(m, NULL, &r, &c), 0);
    assert_int_equal(c, 395300);
    r.quality = NULL;
    assert_int_equal(imgq_cost_ceiling(m, NULL, &r, &c), 0);
    assert_int_equal(c, 395300);

    /* An empty prompt still counts one token per image; no references, no image input. */
    struct imgq_request_shape low = {.quality = "low", .width = 1536, .height = 1024, .n = 1};
    assert_int_equal(imgq_ceiling_usage(m, &low, &u), 0);
    assert_int_equal(u.text_in, 1);
    assert_int_equal(u.image_in, 0);
    assert_int_equal(u.image_out, 400);
    assert_int_equal(imgq_cost_ceiling(m, NULL, &low, &c), 0);
    assert_int_equal(c, 16005); /* 5 + 16000 */

    /* Shapes that cannot be priced. */
    c = 42;
    struct imgq_request_shape bad = r;
    bad.n = 0;
    assert_int_equal(imgq_cost_ceiling(m, NULL, &bad, &c), IMGQ_EINVAL);
    bad = r;
    bad.references = -1;
    assert_int_equal(imgq_cost_ceiling(m, NULL, &bad, &c), IMGQ_EINVAL);
    bad = r;
    bad.width = bad.height = 512;
    assert_int_equal(imgq_cost_ceiling(m, NULL, &bad, &c), IMGQ_ENOTFOUND);
    assert_int_equal(c, 42);
}

static void test_ceiling_per_image(void **state)
{
    const struct imgq_model *d3 = model(state, "dall-e-3");
    struct imgq_request_shape r = {
        .quality = "hd", .width = 1024, .height = 1024, .n = 1, .prompt_bytes = 4000};
    struct imgq_usage u;
    assert_int_equal(imgq_ceiling_usage(d3, &r, &u), 0);
    assert_int_equal(u.images, 1);
    assert_int_equal(u.text_in, 0); /* flat models do not bill tokens */
    imgq_micros c = -1;
    assert_int_equal(imgq_cost_ceiling(d3, NULL, &r, &c), 0);
    assert_int_equal(c, 80000);
    r.quality = NULL; /* worst case of the size */
    assert_int_equal(imgq_cost_ceiling(d3, NULL, &r, &c), 0);
    assert_int_equal(c, 80000);
    r.quality = "standard";
    r.width = 1792;
    assert_int_equal(imgq_cost_ceiling(d3, NULL, &r, &c), 0);
    assert_int_equal(c, 80000);
    r.width = r.height = 512; /* no row and no flat fallback */
    assert_int_equal(imgq_cost_ceiling(d3, NULL, &r, &c), IMGQ_ENOTFOUND);

    const struct imgq_model *fs = model(state, "flux-schnell");
    struct imgq_request_shape f = {.width = 1024, .height = 1024, .n = 4};
    assert_int_equal(imgq_cost_ceiling(fs, NULL, &f, &c), 0);
    assert_int_equal(c, 12000);
    assert_int_equal(imgq_cost_ceiling(fs, route(state, "aggregator"), &f, &c), 0);
    assert_int_equal(c, 13200);
}

/* ---- per-image prices --------------------------------------------------------------------- */

static void test_image_prices(void **state)
{
    const struct imgq_model *d3 = model(state, "dall-e-3");
    imgq_micros p = -1;
    assert_int_equal(imgq_model_image_price(d3, "standard", 1024, 1024, &p), 0);
    assert_int_equal(p, 40000);
    assert_int_equal(imgq_model_image_price(d3, "hd", 1024, 1024, &p), 0);
    assert_int_equal(p, 80000);
    assert_int_equal(imgq_model_image_price(d3, "standard", 1792, 1024, &p), 0);
    assert_int_equal(p, 80000);
    assert_int_equal(imgq_model_image_price(d3, "hd", 1024, 1792, &p), 0);
    assert_int_equal(p, 120000);
    assert_int_equal(imgq_model_image_price(d3, "auto", 1024, 1024, &p), 0);
    assert_int_equal(p, 80000);
    p = 7;
    assert_int_equal(imgq_model_image_price(d3, "ultra", 1024, 1024, &p), IMGQ_ENOTFOUND);
    assert_int_equal(imgq_model_image_price(d3, "hd", 256, 256, &p), IMGQ_ENOTFOUND);
    assert_int_equal(p, 7);

    const struct imgq_model *fs = model(state, "flux-schnell");
    assert_int_equal(imgq_model_image_price(fs, NULL, 1024, 1024, &p), 0);
    assert_int_equal(p, 3000);
    assert_int_equal(imgq_model_image_price(model(state, "sd-3.5-large"), NULL, 1024, 1024, &p), 0);
    assert_int_equal(p, 65000);

    /* Usage of a flat model: images x the price of the shape it was generated at. */
    struct imgq_usage u = {.images = 3, .quality = "hd", .width = 1792, .height = 1024};
    imgq_micros c = -1;
    assert_int_equal(imgq_cost_from_usage(d3, NULL, &u, &c), 0);
    assert_int_equal(c, 360000);
    u.quality = "standard";
    u.width = u.height = 333;
    assert_int_equal(imgq_cost_from_usage(d3, NULL, &u, &c), IMGQ_ENOTFOUND);
}

/* seeds/003: 10,000 catalog images routed 70% flux-schnell, 25% dall-e-3 standard, 5% dall-e-3
 * hd = $161.00 a month, against $800.00 all-hd. */
static void test_seed_routing_example(void **state)
{
    struct imgq_usage fs = {.images = 7000, .width = 1024, .height = 1024};
    struct imgq_usage std = {.images = 2500, .quality = "standard", .width = 1024, .height = 1024};
    struct imgq_usage hd = {.images = 500, .quality = "hd", .width = 1024, .height = 1024};
    imgq_micros a = -1, b = -1, c = -1;
    assert_int_equal(imgq_cost_from_usage(model(state, "flux-schnell"), NULL, &fs, &a), 0);
    assert_int_equal(imgq_cost_from_usage(model(state, "dall-e-3"), NULL, &std, &b), 0);
    assert_int_equal(imgq_cost_from_usage(model(state, "dall-e-3"), NULL, &hd, &c), 0);
    assert_int_equal(a, 21000000);
    assert_int_equal(b, 100000000);
    assert_int_equal(c, 40000000);
    char text[32];
    imgq_money_format(a + b + c, 2, text, sizeof text);
    assert_string_equal(text, "$161.00");
    assert_int_equal(a + b + c, 161000000);

    struct imgq_usage all_hd = {.images = 10000, .quality = "hd", .width = 1024, .height = 1024};
    assert_int_equal(imgq_cost_from_usage(model(state, "dall-e-3"), NULL, &all_hd, &a), 0);
    assert_int_equal(a, 800000000);
}

/* ---- rounding and overflow ---------------------------------------------------------------- */

static void test_rounding_half_up_once(void **state)
{
    /* 1 micro-dollar per 1M tokens: every token is a millionth of a micro-dollar. */
    imgq_catalog *cat = load_ok(TOKEN_MODEL("{\"text_in\":1,\"image_in\":1,\"image_out\":1}"));
    const struct imgq_model *m = imgq_catalog_model(cat, "m");
    assert_non_null(m);
    imgq_micros c = -1;
    struct imgq_usage u = {.text_in = 499999};
    assert_int_equal(imgq_cost_from_usage(m, NULL, &u, &c), 0);
    assert_int_equal(c, 0);
    u.text_in = 500000; /* exactly half: up */
    assert_int_equal(imgq_cost_from_usage(m, NULL, &u, &c), 0);
    assert_int_equal(c, 1);
    u.text_in = 1500000;
    assert_int_equal(imgq_cost_from_usage(m, NULL, &u, &c), 0);
    assert_int_equal(c, 2);
    u.text_in = 2499999;
    assert_int_equal(imgq_cost_from_usage(m, NULL, &u, &c), 0);
    assert_int_equal(c, 2);

    /* Once per call: 0.4 + 0.4 = 0.8 rounds to 1; rounding each part would give 0. */
    struct imgq_usage parts = {.text_in = 400000, .image_in = 400000};
    assert_int_equal(imgq_cost_from_usage(m, NULL, &parts, &c), 0);
    assert_int_equal(c, 1);
    /* The route multiplier applies before rounding: 1.4 x 0.4 = 0.56 -> 1 (not round(1.4) x
     * 0.4 = 0.4 -> 0); 1.2 x 0.4 = 0.48 -> 0. */
    const struct imgq_route *forty = imgq_catalog_route(cat, "forty");
    assert_non_null(forty);
    u = (struct imgq_usage){.text_in = 1400000};
    assert_int_equal(imgq_cost_from_usage(m, forty, &u, &c), 0);
    assert_int_equal(c, 1);
    u.text_in = 1200000;
    assert_int_equal(imgq_cost_from_usage(m, forty, &u, &c), 0);
    assert_int_equal(c, 0);
    /* A catalog without a "list" route gets one at 1.0x. */
    const struct imgq_route *list = imgq_catalog_route(cat, NULL);
    assert_non_null(list);
    assert_string_equal(list->name, "list");
    assert_int_equal(list->multiplier_ppm, 1000000);
    /* cached_* default to the uncached rates. */
    assert_int_equal(m->prices.cached_text_in, 1);
    assert_int_equal(m->prices.cached_image_in, 1);
    imgq_catalog_free(cat);

    /* Flat prices at a half-price route: 3 micros x 0.5 = 1.5 -> 2; x3 images = 4.5 -> 5. */
    cat = load_ok("{\"version\":\"t\",\"models\":{\"f\":{\"provider\":\"p\",\"api\":\"a\","
                  "\"billing\":\"per_image\",\"prices\":{\"per_image\":3},"
                  "\"sizes\":[\"64x64\"]}},\"routes\":{\"half\":{\"multiplier_ppm\":500000}}}");
    const struct imgq_model *f = imgq_catalog_model(cat, "f");
    const struct imgq_route *half = imgq_catalog_route(cat, "half");
    assert_non_null(f);
    assert_non_null(half);
    struct imgq_usage one = {.images = 1, .width = 64, .height = 64};
    assert_int_equal(imgq_cost_from_usage(f, half, &one, &c), 0);
    assert_int_equal(c, 2);
    one.images = 3;
    assert_int_equal(imgq_cost_from_usage(f, half, &one, &c), 0);
    assert_int_equal(c, 5);
    one.images = 0;
    assert_int_equal(imgq_cost_from_usage(f, half, &one, &c), 0);
    assert_int_equal(c, 0);
    imgq_catalog_free(cat);
}

static void test_overflow_and_bad_usage(void **state)
{
    imgq_catalog *cat = load_ok(TOKEN_MODEL("{\"image_out\":9000000000000000000}"));
    const struct imgq_model *m = imgq_catalog_model(cat, "m");
    assert_non_null(m);
    imgq_micros c = 42;

    /* $9e12 per token x 2^40 tokens does not fit in int64 micro-dollars. */
    struct imgq_usage u = {.image_out = INT64_C(1) << 40};
    assert_int_equal(imgq_cost_from_usage(m, NULL, &u, &c), IMGQ_ERANGE);
    assert_int_equal(c, 42);
    /* 1000 tokens x 9e18 / 1e6 = 9e15 fits... */
    u.image_out = 1000;
    assert_int_equal(imgq_cost_from_usage(m, NULL, &u, &c), 0);
    assert_int_equal(c, INT64_C(9000000000000000));
    /* ...but not at a 1e6x route, nor one token at a 9e12x route. */
    c = 42;
    assert_int_equal(imgq_cost_from_usage(m, imgq_catalog_route(cat, "big"), &u, &c), IMGQ_ERANGE);
    u.image_out = 1;
    assert_int_equal(imgq_cost_from_usage(m, imgq_catalog_route(cat, "huge"), &u, &c), IMGQ_ERANGE);
    assert_int_equal(c, 42);

    /* Token counts past 2^50 are refused before any arithmetic. */
    struct imgq_usage big = {.text_in = (INT64_C(1) << 50) + 1};
    assert_int_equal(imgq_cost_from_usage(m, NULL, &big, &c), IMGQ_ERANGE);
    big = (struct imgq_usage){.images = INT64_MAX};
    assert_int_equal(imgq_cost_from_usage(m, NULL, &big, &c), IMGQ_ERANGE);

    /* Negative counts are not usage. */
    struct imgq_usage neg = {.image_out = -1};
    assert_int_equal(imgq_cost_from_usage(m, NULL, &neg, &c), IMGQ_EINVAL);
    neg = (struct imgq_usage){.cached_text_in = -5};
    assert_int_equal(imgq_cost_from_usage(m, NULL, &neg, &c), IMGQ_EINVAL);
    assert_int_equal(c, 42);

    /* A ceiling that overflows reports ERANGE too. */
    struct imgq_request_shape r = {.quality = "high", .width = 1024, .height = 1024, .n = 1};
    assert_int_equal(imgq_cost_ceiling(m, imgq_catalog_route(cat, "big"), &r, &c), IMGQ_ERANGE);
    imgq_catalog_free(cat);

    /* Flat: 9e18 per image x 2 images. */
    cat = load_ok("{\"version\":\"t\",\"models\":{\"f\":{\"provider\":\"p\",\"api\":\"a\","
                  "\"billing\":\"per_image\",\"prices\":{\"per_image\":9000000000000000000},"
                  "\"sizes\":[\"64x64\"]}}}");
    struct imgq_usage two = {.images = 2, .width = 64, .height = 64};
    assert_int_equal(imgq_cost_from_usage(imgq_catalog_model(cat, "f"), NULL, &two, &c),
                     IMGQ_ERANGE);
    two.images = 1;
    assert_int_equal(imgq_cost_from_usage(imgq_catalog_model(cat, "f"), NULL, &two, &c), 0);
    assert_int_equal(c, INT64_C(9000000000000000000));
    imgq_catalog_free(cat);
}

/* Regression (was a bug): src/catalog.c imgq_cost_from_usage/finish: tokens (<= 2^50) x price (any
 * int64 from the catalog) x route multiplier (any int64 ppm) overflows the signed 128-bit
 * intermediate, which is undefined behaviour (UBSan aborts) and in practice wraps to a wrong cost
 * with rc 0 instead of IMGQ_ERANGE. */
static void test_overflow_128bit_intermediate(void **state)
{
    imgq_catalog *cat = load_ok(TOKEN_MODEL("{\"image_out\":9000000000000000000}"));
    const struct imgq_model *m = imgq_catalog_model(cat, "m");
    imgq_micros c = 42;
    /* 2^50 x 9e18 x 1e6 > 2^127 on the list route. */
    struct imgq_usage u = {.image_out = INT64_C(1) << 50};
    assert_int_equal(imgq_cost_from_usage(m, NULL, &u, &c), IMGQ_ERANGE);
    /* 1000 x 9e18 x 9e18 > 2^127. */
    u.image_out = 1000;
    assert_int_equal(imgq_cost_from_usage(m, imgq_catalog_route(cat, "huge"), &u, &c), IMGQ_ERANGE);
    struct imgq_request_shape r = {.quality = "high", .width = 1024, .height = 1024, .n = 1};
    assert_int_equal(imgq_cost_ceiling(m, imgq_catalog_route(cat, "huge"), &r, &c), IMGQ_ERANGE);
    assert_int_equal(c, 42);
    imgq_catalog_free(cat);
}

/* ---- money text --------------------------------------------------------------------------- */

static void test_money_format(void **state)
{
    static const struct {
        imgq_micros v;
        int decimals;
        const char *text;
    } cases[] = {
        {INT64_C(4250000000), 2, "$4,250.00"},
        {INT64_C(4250000000), 6, "$4,250.000000"},
        {INT64_C(4250000000), 0, "$4,250"},
        {0, 2, "$0.00"},
        {0, 0, "$0"},
        {0, 6, "$0.000000"},
        {1, 6, "$0.000001"},
        {1, 2, "$0.00"},
        {5000, 2, "$0.01"}, /* half away from zero */
        {4999, 2, "$0.00"},
        {-5000, 2, "-$0.01"},
        {-1234567890, 2, "-$1,234.57"},
        {-1, 6, "-$0.000001"},
        {999000000, 2, "$999.00"},
        {INT64_C(1000000000), 2, "$1,000.00"},
        {INT64_C(100000000000), 2, "$100,000.00"},
        {INT64_C(1234567000000), 2, "$1,234,567.00"},
        {1999999, 0, "$2"},
        {1234567, 3, "$1.235"},
        {1234567, 9, "$1.234567"}, /* clamped to 6 */
        {1500000, -3, "$2"},       /* clamped to 0 */
        {INT64_MAX, 6, "$9,223,372,036,854.775807"},
        {INT64_MIN, 6, "-$9,223,372,036,854.775808"},
        {INT64_MAX, 0, "$9,223,372,036,855"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[64];
        memset(buf, 'x', sizeof buf);
        imgq_money_format(cases[i].v, cases[i].decimals, buf, sizeof buf);
        if (strcmp(buf, cases[i].text) != 0)
            fail_msg("money_format(%lld, %d) = \"%s\", want \"%s\"", (long long)cases[i].v,
                     cases[i].decimals, buf, cases[i].text);
    }
    /* A short buffer is truncated, never overrun. */
    char small[6];
    memset(small, 'x', sizeof small);
    imgq_money_format(INT64_C(4250000000), 2, small, sizeof small);
    assert_string_equal(small, "$4,25");
}

static void test_money_parse(void **state)
{
    static const struct {
        const char *text;
        imgq_micros v;
    } good[] = {
        {"12", 12000000},
        {"0.5", 500000},
        {"$1,234.567890", 1234567890},
        {"$4,250.00", INT64_C(4250000000)},
        {"-$3.25", -3250000},
        {"-7", -7000000},
        {".5", 500000},
        {"1.", 1000000},
        {"0", 0},
        {"$0.000001", 1},
        {"161", 161000000},
        {"9223372036849.999999", INT64_C(9223372036849999999)},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        imgq_micros v = -42;
        int rc = imgq_money_parse(good[i].text, &v);
        if (rc != 0 || v != good[i].v)
            fail_msg("money_parse(\"%s\") = %d, %lld; want %lld", good[i].text, rc, (long long)v,
                     (long long)good[i].v);
    }
    static const char *const invalid[] = {"1.2345678", "0.0000001", "abc",  "",     "$",   "-",
                                          ".",         "1.2.3",     "12a",  "1e6",  "$-5", " 5",
                                          "5 ",        "+5",        "1.5x", "USD 5"};
    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
        imgq_micros v = -42;
        int rc = imgq_money_parse(invalid[i], &v);
        if (rc != IMGQ_EINVAL)
            fail_msg("money_parse(\"%s\") = %d, want IMGQ_EINVAL", invalid[i], rc);
        assert_int_equal(v, -42);
    }
    imgq_micros v = -42;
    assert_int_equal(imgq_money_parse(NULL, &v), IMGQ_EINVAL);
    assert_int_equal(imgq_money_parse("99999999999999999999", &v), IMGQ_ERANGE);
    assert_int_equal(imgq_money_parse("9223372036855", &v), IMGQ_ERANGE);
    assert_int_equal(imgq_money_parse("-$99,999,999,999,999", &v), IMGQ_ERANGE);
    assert_int_equal(v, -42);

    /* format -> parse is the identity at 6 decimals. */
    static const imgq_micros values[] = {0, 1, -1, 5880, INT64_C(4250000000), -1234567890};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        char buf[64];
        imgq_money_format(values[i], 6, buf, sizeof buf);
        assert_int_equal(imgq_money_parse(buf, &v), 0);
        assert_int_equal(v, values[i]);
    }
}

/* ---- load errors -------------------------------------------------------------------------- */

#define ONE_MODEL(body) "{\"version\":\"t\",\"models\":{\"m1\":" body "}}"
#define FLAT_FIELDS "\"provider\":\"p\",\"api\":\"a\",\"sizes\":[\"64x64\"]"

static void test_load_errors_name_model_and_field(void **state)
{
    static const struct {
        const char *text;
        int code;
        const char *needles[3];
    } cases[] = {
        {ONE_MODEL("{" FLAT_FIELDS ",\"billing\":\"per_image\"}"),
         IMGQ_EINVAL,
         {"model 'm1'", "'prices'"}},
        {ONE_MODEL("{" FLAT_FIELDS ",\"billing\":\"monthly\",\"prices\":{\"per_image\":1}}"),
         IMGQ_EINVAL,
         {"model 'm1'", "'billing'"}},
        {ONE_MODEL("{" FLAT_FIELDS ",\"prices\":{\"per_image\":1}}"),
         IMGQ_EINVAL,
         {"model 'm1'", "'billing'"}},
        {ONE_MODEL("{\"provider\":\"p\",\"api\":\"a\",\"billing\":\"tokens\","
                   "\"prices\":{\"image_out\":1},\"sizes\":[\"1024x1024\",\"512x512\"],"
                   "\"output_tokens\":{\"1024x1024\":{\"high\":1}}}"),
         IMGQ_EINVAL,
         {"model 'm1'", "'512x512'", "output_tokens"}},
        {ONE_MODEL("{\"provider\":\"p\",\"api\":\"a\",\"billing\":\"tokens\","
                   "\"prices\":{\"image_out\":1},\"sizes\":[\"1024x1024\"]}"),
         IMGQ_EINVAL,
         {"model 'm1'", "output_tokens"}},
        {ONE_MODEL("{" FLAT_FIELDS ",\"billing\":\"per_image\",\"prices\":{}}"),
         IMGQ_EINVAL,
         {"model 'm1'", "per_image"}},
        {ONE_MODEL("{" FLAT_FIELDS ",\"billing\":\"per_image\",\"prices\":{\"per_image\":-1}}"),
         IMGQ_EINVAL,
         {"model 'm1'", "'per_image'", "non-negative integer"}},
        {ONE_MODEL("{" FLAT_FIELDS ",\"billing\":\"per_image\",\"prices\":{\"per_image\":0.04}}"),
         IMGQ_EINVAL,
         {"model 'm1'", "'per_image'", "integer"}},
        {ONE_MODEL("{" FLAT_FIELDS ",\"billing\":\"per_image\",\"prices\":{\"per_image\":\"1\"}}"),
         IMGQ_EINVAL,
         {"model 'm1'", "'per_image'"}},
        {ONE_MODEL("{\"provider\":\"p\",\"api\":\"a\",\"billing\":\"per_image\","
                   "\"prices\":{\"per_image\":1},\"sizes\":[\"big\"]}"),
         IMGQ_EINVAL,
         {"model 'm1'", "'big'"}},
        {ONE_MODEL("{\"provider\":\"p\",\"api\":\"a\",\"billing\":\"per_image\","
                   "\"prices\":{\"per_image\":1},\"sizes\":[]}"),
         IMGQ_EINVAL,
         {"model 'm1'", "'sizes'"}},
        {ONE_MODEL("{\"provider\":\"p\",\"api\":\"a\",\"billing\":\"per_image\","
                   "\"prices\":{\"per_image\":1},\"sizes\":[64]}"),
         IMGQ_EINVAL,
         {"model 'm1'", "sizes[0]"}},
        {ONE_MODEL("{\"api\":\"a\",\"billing\":\"per_image\",\"prices\":{\"per_image\":1},"
                   "\"sizes\":[\"64x64\"]}"),
         IMGQ_EINVAL,
         {"model 'm1'", "'provider'"}},
        {ONE_MODEL("{" FLAT_FIELDS ",\"billing\":\"per_image\",\"prices\":{\"per_image\":1},"
                   "\"n_max\":0}"),
         IMGQ_EINVAL,
         {"model 'm1'", "'n_max'"}},
        {ONE_MODEL("{" FLAT_FIELDS ",\"billing\":\"per_image\",\"prices\":{\"per_image\":1},"
                   "\"n_max\":5000000}"),
         IMGQ_EINVAL,
         {"model 'm1'", "'n_max'", "too large"}},
        {ONE_MODEL("{" FLAT_FIELDS ",\"billing\":\"per_image\",\"prices\":{\"per_image\":1},"
                   "\"image_prices\":{\"64x64\":{\"hd\":1.5}}}"),
         IMGQ_EINVAL,
         {"model 'm1'", "image_prices.64x64.hd"}},
        {ONE_MODEL("{" FLAT_FIELDS ",\"billing\":\"per_image\",\"prices\":{\"per_image\":1},"
                   "\"lifecycle\":\"2026-01-01\"}"),
         IMGQ_EINVAL,
         {"model 'm1'", "'lifecycle'"}},
        {ONE_MODEL("[]"), IMGQ_EINVAL, {"model 'm1'", "object"}},
        {"{\"version\":\"t\",\"models\":{\"m1\":{" FLAT_FIELDS
         ",\"billing\":\"per_image\",\"prices\":{\"per_image\":1}}},"
         "\"aliases\":{\"fast\":\"m2\"}}",
         IMGQ_EINVAL,
         {"alias 'fast'"}},
        {"{\"version\":\"t\",\"models\":{\"m1\":{" FLAT_FIELDS
         ",\"billing\":\"per_image\",\"prices\":{\"per_image\":1}}},"
         "\"routes\":{\"cheap\":{\"multiplier_ppm\":0}}}",
         IMGQ_EINVAL,
         {"route 'cheap'", "multiplier_ppm"}},
        {"{\"version\":\"t\",\"models\":{\"m1\":{" FLAT_FIELDS
         ",\"billing\":\"per_image\",\"prices\":{\"per_image\":1}}},"
         "\"routes\":{\"cheap\":{}}}",
         IMGQ_EINVAL,
         {"route 'cheap'", "multiplier_ppm"}},
        {"{\"models\":{\"m1\":{}}}", IMGQ_EINVAL, {"'version'"}},
        {"{\"version\":\"t\",\"models\":{}}", IMGQ_EINVAL, {"'models'"}},
        {"{\"version\":\"t\"}", IMGQ_EINVAL, {"'models'"}},
        {"[1,2]", IMGQ_EINVAL, {"JSON object"}},
        {"{\"version\":\"t\",\"version\":\"u\"}", IMGQ_EPARSE, {"duplicate", "version"}},
        {"", IMGQ_EPARSE, {"line 1"}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[512];
        int rc = load_bad(cases[i].text, err, sizeof err);
        if (rc != cases[i].code)
            fail_msg("case %zu: code %d, want %d (%s)", i, rc, cases[i].code, err);
        for (int k = 0; k < 3 && cases[i].needles[k]; k++)
            if (!strstr(err, cases[i].needles[k]))
                fail_msg("case %zu: \"%s\" not in \"%s\"", i, cases[i].needles[k], err);
        assert_contains(err, "<catalog>: ");
    }
}

static void test_load_invalid_json_position(void **state)
{
    char err[512];
    const char *text = "{\n  \"version\": \"t\",\n  \"models\": {,}\n}\n";
    assert_int_equal(load_bad(text, err, sizeof err), IMGQ_EPARSE);
    assert_contains(err, "line 3 column 14");

    /* No error buffer, or a tiny one: the code alone, nothing written out of bounds. */
    imgq_catalog *cat = NULL;
    assert_int_equal(imgq_catalog_load_string(text, &cat, NULL, 0), IMGQ_EPARSE);
    assert_null(cat);
    char tiny[8];
    memset(tiny, 'x', sizeof tiny);
    assert_int_equal(imgq_catalog_load_string(text, &cat, tiny, sizeof tiny), IMGQ_EPARSE);
    assert_true(memchr(tiny, '\0', sizeof tiny) != NULL);
}

static void test_load_file_errors(void **state)
{
    char err[512] = "";
    imgq_catalog *cat = NULL;
    assert_int_equal(imgq_catalog_load("/nonexistent/imgq/catalog.json", &cat, err, sizeof err),
                     IMGQ_EIO);
    assert_null(cat);
    assert_contains(err, "/nonexistent/imgq/catalog.json");
    assert_contains(err, "cannot open");

    /* A file with a JSON error names the file, line and column. */
    char path[] = "/tmp/imgq-test-catalog-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    assert_non_null(f);
    fputs("{\"version\": \"t\",\n\"models\": {\"m\": }}\n", f);
    fclose(f);
    int rc = imgq_catalog_load(path, &cat, err, sizeof err);
    unlink(path);
    assert_int_equal(rc, IMGQ_EPARSE);
    assert_null(cat);
    assert_contains(err, path);
    assert_contains(err, "line 2");

    /* The shipped catalog loads from its file too, with the same content. */
    char shipped_path[4096];
    source_path("deploy/catalog.json", shipped_path, sizeof shipped_path);
    assert_int_equal(imgq_catalog_load(shipped_path, &cat, err, sizeof err), 0);
    assert_string_equal(imgq_catalog_version(cat), imgq_catalog_version(shipped(state)));
    imgq_catalog_free(cat);
    imgq_catalog_free(NULL); /* no-op */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shipped_catalog),
        cmocka_unit_test(test_lookups_and_aliases),
        cmocka_unit_test(test_size_and_quality_checks),
        cmocka_unit_test(test_output_tokens_gpt_image_1),
        cmocka_unit_test(test_seed_monthly_workload),
        cmocka_unit_test(test_seed_gpt_image_2_output),
        cmocka_unit_test(test_ceiling_tokens),
        cmocka_unit_test(test_ceiling_per_image),
        cmocka_unit_test(test_image_prices),
        cmocka_unit_test(test_seed_routing_example),
        cmocka_unit_test(test_rounding_half_up_once),
        cmocka_unit_test(test_overflow_and_bad_usage),
        cmocka_unit_test(test_overflow_128bit_intermediate),
        cmocka_unit_test(test_money_format),
        cmocka_unit_test(test_money_parse),
        cmocka_unit_test(test_load_errors_name_model_and_field),
        cmocka_unit_test(test_load_invalid_json_position),
        cmocka_unit_test(test_load_file_errors),
    };
    return cmocka_run_group_tests(tests, load_shipped, free_shipped);
}
