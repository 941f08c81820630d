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

/* ---- size rules, the token formula, new fields -------------------------------------------- */

/* w x h must pass model m's size check, or fail with exactly 'msg'. */
static void size_ok(void **state, const char *name, int w, int h)
{
    char why[300] = "";
    int rc = imgq_model_check_size(model(state, name), w, h, why, sizeof why);
    if (rc != 0)
        fail_msg("%s %dx%d refused: %s", name, w, h, why);
    char size[32];
    snprintf(size, sizeof size, "%dx%d", w, h);
    assert_true(imgq_model_allows_size(model(state, name), size));
}

static void size_refused(void **state, const char *name, int w, int h, const char *msg)
{
    char why[300] = "";
    assert_int_equal(imgq_model_check_size(model(state, name), w, h, why, sizeof why), IMGQ_EINVAL);
    assert_string_equal(why, msg);
    char size[32];
    snprintf(size, sizeof size, "%dx%d", w, h);
    assert_false(imgq_model_allows_size(model(state, name), size));
}

static void test_size_rules(void **state)
{
    /* gpt-image-2: sides multiples of 16, long side <= 3840, 655,360..8,294,400 pixels, 1:3..3:1 */
    size_ok(state, "gpt-image-2", 1024, 1024); /* listed */
    size_ok(state, "gpt-image-2", 3840, 2160); /* the documented maximum */
    size_ok(state, "gpt-image-2", 1024, 640);  /* exactly 655,360 pixels */
    size_ok(state, "gpt-image-2", 2880, 2880); /* exactly 8,294,400 pixels */
    size_ok(state, "gpt-image-2", 3072, 1024); /* exactly 3:1 */
    size_ok(state, "gpt-image-2", 1024, 3072); /* exactly 1:3 */
    size_refused(state, "gpt-image-2", 1000, 1000,
                 "gpt-image-2 takes sizes whose sides are multiples of 16 (1000x1000 is not)");
    size_refused(state, "gpt-image-2", 1024, 1016,
                 "gpt-image-2 takes sizes whose sides are multiples of 16 (1024x1016 is not)");
    size_refused(state, "gpt-image-2", 3856, 2160,
                 "gpt-image-2 takes sides of at most 3840 pixels (3856x2160 is not)");
    size_refused(state, "gpt-image-2", 1024, 624,
                 "gpt-image-2 needs at least 655,360 pixels; 1024x624 has 638,976");
    size_refused(state, "gpt-image-2", 2896, 2880,
                 "gpt-image-2 takes at most 8,294,400 pixels (2880x2880); 2896x2880 has "
                 "8,340,480");
    size_refused(state, "gpt-image-2", 3088, 1024,
                 "gpt-image-2 takes aspect ratios from 1:3 to 3:1 (3088x1024 is not)");
    size_refused(state, "gpt-image-2", 1024, 3088,
                 "gpt-image-2 takes aspect ratios from 1:3 to 3:1 (1024x3088 is not)");

    /* seedream-4-5: 3,686,400 (1920x1920)..16,777,216 pixels, 1:16..16:1 */
    size_ok(state, "seedream-4-5", 1920, 1920);
    size_ok(state, "seedream-4-5", 4096, 4096);
    size_ok(state, "seedream-4-5", 8000, 500); /* exactly 16:1 */
    size_refused(state, "seedream-4-5", 1024, 1024,
                 "seedream-4-5 needs at least 3,686,400 pixels (1920x1920); 1024x1024 has "
                 "1,048,576");
    size_refused(state, "seedream-4-5", 1920, 1919,
                 "seedream-4-5 needs at least 3,686,400 pixels (1920x1920); 1920x1919 has "
                 "3,684,480");
    size_refused(state, "seedream-4-5", 4097, 4096,
                 "seedream-4-5 takes at most 16,777,216 pixels (4096x4096); 4097x4096 has "
                 "16,781,312");
    size_refused(state, "seedream-4-5", 8016, 500,
                 "seedream-4-5 takes aspect ratios from 1:16 to 16:1 (8016x500 is not)");

    /* seedream-4-0: 1024x1024..4096x4096 pixels */
    size_ok(state, "seedream-4-0", 1024, 1024);
    size_ok(state, "seedream-4-0", 1536, 2048);
    size_refused(state, "seedream-4-0", 1024, 1023,
                 "seedream-4-0 needs at least 1,048,576 pixels (1024x1024); 1024x1023 has "
                 "1,047,552");
    size_refused(state, "seedream-4-0", 4096, 4097,
                 "seedream-4-0 takes at most 16,777,216 pixels (4096x4096); 4096x4097 has "
                 "16,781,312");

    /* qwen-image-2.0: each side 512..2048 */
    size_ok(state, "qwen-image-2.0", 512, 2048);
    size_ok(state, "qwen-image-2.0", 2048, 2048);
    size_ok(state, "qwen-image-2.0", 777, 1111);
    size_refused(state, "qwen-image-2.0", 511, 1024,
                 "qwen-image-2.0 takes sides from 512 to 2048 pixels (511x1024 is not)");
    size_refused(state, "qwen-image-2.0", 1024, 2049,
                 "qwen-image-2.0 takes sides from 512 to 2048 pixels (1024x2049 is not)");

    /* flux-1.1-pro on BFL: 256..1440, multiples of 32 */
    size_ok(state, "flux-1.1-pro", 256, 1440);
    size_ok(state, "flux-1.1-pro", 1440, 1440);
    size_refused(state, "flux-1.1-pro", 1000, 1024,
                 "flux-1.1-pro takes sizes whose sides are multiples of 32 (1000x1024 is not)");
    size_refused(state, "flux-1.1-pro", 224, 1024,
                 "flux-1.1-pro takes sides from 256 to 1440 pixels (224x1024 is not)");
    size_refused(state, "flux-1.1-pro", 1472, 1024,
                 "flux-1.1-pro takes sides from 256 to 1440 pixels (1472x1024 is not)");

    /* A model without a rule takes its list only. */
    size_ok(state, "gpt-image-1.5", 1536, 1024);
    size_refused(state, "gpt-image-1.5", 2048, 2048,
                 "gpt-image-1.5 takes only the sizes 1024x1024, 1024x1536, 1536x1024 (2048x2048 "
                 "is not one)");
    assert_false(imgq_model_allows_size(model(state, "gpt-image-2"), "auto"));
    assert_false(imgq_model_allows_size(model(state, "gpt-image-2"), NULL));
    assert_int_equal(imgq_model_check_size(model(state, "gpt-image-2"), 0, 1024, NULL, 0),
                     IMGQ_EINVAL);
}

/* providers.md 1.1's formula: table sizes keep their table values, other sizes are computed, and
 * the formula reproduces the table and the community data points it was derived from. */
static void test_gpt_image_2_any_size(void **state)
{
    const struct imgq_model *m = model(state, "gpt-image-2");
    int64_t t = 0;
    assert_int_equal(imgq_model_output_tokens(m, "high", 1024, 1024, &t), 0);
    assert_int_equal(t, 7024);
    assert_int_equal(imgq_model_output_tokens(m, "low", 2048, 2048, &t), 0);
    assert_int_equal(t, 397);
    /* Off the table: 1920x1088. */
    static const struct {
        const char *q;
        int64_t tokens;
    } off[] = {{"low", 148}, {"medium", 1325}, {"high", 5300}, {"auto", 5300}, {NULL, 5300}};
    for (size_t i = 0; i < sizeof off / sizeof off[0]; i++) {
        assert_int_equal(imgq_model_output_tokens(m, off[i].q, 1920, 1088, &t), 0);
        assert_int_equal(t, off[i].tokens);
    }
    assert_int_equal(imgq_model_output_tokens(m, "hd", 1920, 1088, &t), IMGQ_ENOTFOUND);
    assert_int_equal(imgq_model_output_tokens(m, "high", 3840, 2160, &t), 0);
    assert_int_equal(t, 13342);

    /* The ceiling of an off-table size: 21 prompt bytes at $5/M + 5,300 tokens at $30/M. */
    struct imgq_request_shape r = {"high", 1920, 1088, 1, 21, 0};
    imgq_micros c = 0;
    assert_int_equal(imgq_cost_ceiling(m, NULL, &r, &c), 0);
    assert_int_equal(c, 159105);
    r.n = 2;
    r.references = 1; /* + 1,025 image tokens at $8/M, per image */
    assert_int_equal(imgq_cost_ceiling(m, NULL, &r, &c), 0);
    assert_int_equal(c, 2 * (105 + 159000 + 8200));

    /* A model with the factors and a one-row table: the formula gives the table's figures. */
    imgq_catalog *cat = load_ok(
        "{\"version\":\"t\",\"models\":{\"f\":{\"provider\":\"openai\",\"api\":\"openai-images\","
        "\"billing\":\"tokens\",\"prices\":{\"image_out\":30000000},\"sizes\":[\"1024x1024\"],"
        "\"qualities\":[\"low\",\"medium\",\"high\",\"auto\"],"
        "\"size_rule\":{\"multiple_of\":16,\"max_side\":3840},"
        "\"output_token_factors\":{\"low\":16,\"medium\":48,\"high\":96},"
        "\"output_tokens\":{\"1024x1024\":{\"low\":1,\"medium\":2,\"high\":3}}}}}");
    const struct imgq_model *f = imgq_catalog_model(cat, "f");
    static const struct {
        int w, h;
        const char *q;
        int64_t tokens;
    } pts[] = {{1024, 1024, "low", 1},      {1024, 1536, "low", 158}, {1536, 1024, "medium", 1372},
               {1536, 1024, "high", 5488},  {2048, 2048, "low", 397}, {2048, 2048, "medium", 3568},
               {2048, 2048, "high", 14272}, {976, 704, "low", 129},   {960, 720, "low", 130}};
    for (size_t i = 0; i < sizeof pts / sizeof pts[0]; i++) {
        assert_int_equal(imgq_model_output_tokens(f, pts[i].q, pts[i].w, pts[i].h, &t), 0);
        if (t != pts[i].tokens)
            fail_msg("%dx%d %s: %lld tokens, want %lld", pts[i].w, pts[i].h, pts[i].q, (long long)t,
                     (long long)pts[i].tokens);
    }
    imgq_catalog_free(cat);

    /* Flat models price any admitted size at per_image (or the image_prices row). */
    r = (struct imgq_request_shape){NULL, 3000, 2000, 1, 10, 0};
    assert_int_equal(imgq_cost_ceiling(model(state, "seedream-4-5"), NULL, &r, &c), 0);
    assert_int_equal(c, 40000);
    r.width = r.height = 1440;
    assert_int_equal(imgq_cost_ceiling(model(state, "fal-flux-dev"), NULL, &r, &c), 0);
    assert_int_equal(c, 51840); /* $0.025/MP x 2.0736 MP */
    r.width = r.height = 1024;
    assert_int_equal(imgq_cost_ceiling(model(state, "fal-flux-dev"), NULL, &r, &c), 0);
    assert_int_equal(c, 26215);
}

/* Issue 13 item 6: the shipped catalog says, for every model, whether its provider bills
 * failed requests and where that comes from; sd-3.5-large's does (seeds/004). */
static void test_failure_billing_sources(void **state)
{
    const imgq_catalog *cat = *state;
    int charging = 0;
    for (size_t i = 0; imgq_catalog_model_at(cat, i); i++) {
        const struct imgq_model *m = imgq_catalog_model_at(cat, i);
        if (!m->charges_failures_source || !m->charges_failures_as_of)
            fail_msg("model '%s' does not say where its failure billing comes from", m->name);
        charging += m->charges_failures;
    }
    const struct imgq_model *sd = model(state, "sd-3.5-large");
    assert_true(sd->charges_failures);
    assert_non_null(strstr(sd->charges_failures_source, "seeds/004"));
    assert_string_equal(sd->charges_failures_as_of, "2026-12-07");
    assert_int_equal(charging, 1);
    assert_false(model(state, "flux-1.1-pro")->charges_failures);
    assert_non_null(strstr(model(state, "flux-1.1-pro")->charges_failures_source, "help.bfl.ai"));
}

static void test_new_model_fields(void **state)
{
    const struct imgq_model *g2 = model(state, "gpt-image-2");
    assert_non_null(g2->size_rule);
    assert_int_equal(g2->size_rule->multiple_of, 16);
    assert_int_equal(g2->size_rule->max_side, 3840);
    assert_int_equal(g2->size_rule->min_pixels, 655360);
    assert_int_equal(g2->size_rule->max_pixels, 8294400);
    assert_int_equal(g2->size_rule->max_aspect_num, 3);
    assert_int_equal(g2->size_rule->max_aspect_den, 1);
    assert_int_equal(g2->ntoken_factors, 3);
    assert_null(g2->provider_model);
    assert_true(g2->capabilities & IMGQ_NEED_MASK);
    assert_false(g2->capabilities & IMGQ_NEED_GUIDANCE);
    assert_string_equal(g2->fallbacks[0], "gpt-image-1.5");
    assert_null(g2->fallbacks[1]);
    assert_null(model(state, "gpt-image-1.5")->size_rule);

    const struct imgq_model *gem = model(state, "gemini-2.5-flash-image");
    assert_string_equal(gem->fallbacks[0], "gpt-image-2");
    assert_string_equal(gem->fallbacks[1], "seedream-4-0");
    assert_null(gem->fallbacks[2]);
    assert_false(gem->capabilities & IMGQ_NEED_MASK);
    assert_null(model(state, "dall-e-3")->fallbacks[0]); /* none: an empty list */

    assert_string_equal(model(state, "flux-schnell")->provider_model,
                        "black-forest-labs/flux-schnell");
    assert_string_equal(model(state, "sd-3.5-large")->provider_model,
                        "stability-ai/stable-diffusion-3.5-large");
    assert_string_equal(model(state, "flux-1.1-pro")->provider_model, "flux-pro-1.1");
    assert_string_equal(model(state, "qwen-image-2.0")->provider_model, "qwen-image-plus");
    assert_string_equal(model(state, "qwen-image-2.0")->provider_edit_model, "qwen-image-2.0");
    assert_null(model(state, "gemini-2.5-flash-image")->provider_edit_model);
    /* The shipped catalog: reference images exactly on the edit-capable models. */
    for (size_t i = 0; imgq_catalog_model_at(shipped(state), i); i++) {
        const struct imgq_model *m = imgq_catalog_model_at(shipped(state), i);
        if ((m->max_references > 0) != ((m->capabilities & IMGQ_NEED_EDIT) != 0))
            fail_msg("model %s: max_references %d, edit %d", m->name, m->max_references,
                     (m->capabilities & IMGQ_NEED_EDIT) != 0);
    }
    assert_int_equal(model(state, "flux-1.1-pro")->max_references, 0);
    assert_int_equal(model(state, "sd-3.5-large")->max_references, 0);

    const struct imgq_model *pro = model(state, "flux-1.1-pro");
    assert_true(pro->capabilities & IMGQ_NEED_GUIDANCE);
    assert_true(pro->guidance_min == 1.5 && pro->guidance_max == 5.0);
    const struct imgq_model *fal = model(state, "fal-flux-dev");
    assert_string_equal(fal->provider, "fal");
    assert_string_equal(fal->api, "fal");
    assert_string_equal(fal->provider_model, "fal-ai/flux/dev");
    assert_int_equal(fal->n_per_call, 4);
    assert_true(fal->capabilities & IMGQ_NEED_SEED);
    assert_true(fal->guidance_min == 1.0 && fal->guidance_max == 20.0);
    assert_true(model(state, "sd-3.5-large")->capabilities & IMGQ_NEED_GUIDANCE);

    assert_int_equal(imgq_need_parse("guidance"), IMGQ_NEED_GUIDANCE);
    assert_int_equal(imgq_need_parse("mask"), IMGQ_NEED_MASK);
    assert_string_equal(imgq_need_name(IMGQ_NEED_MASK), "mask");
    assert_string_equal(imgq_need_name(IMGQ_NEED_GUIDANCE), "guidance");

    /* Every fallback of the shipped catalog names a model. */
    imgq_catalog *cat = shipped(state);
    for (size_t i = 0; imgq_catalog_model_at(cat, i); i++)
        for (char **f = imgq_catalog_model_at(cat, i)->fallbacks; *f; f++)
            assert_non_null(imgq_catalog_model(cat, *f));
}

#define FAILURE_MODEL(fields)                                                                      \
    ONE_MODEL("{" FLAT_FIELDS ",\"billing\":\"per_image\",\"prices\":{\"per_image\":1}," fields "}")
#define RULE_MODEL(rule)                                                                           \
    ONE_MODEL("{" FLAT_FIELDS ",\"billing\":\"per_image\",\"prices\":{\"per_image\":1},"           \
              "\"size_rule\":" rule "}")

/* Rate-limit presets carry images, tokens and concurrent requests per minute. */
static void test_rate_presets(void **state)
{
    int images = 0, concurrent = -1;
    int64_t tokens = 0;
    assert_int_equal(imgq_catalog_rate_preset_get(shipped(state), "openai-tier-2", &images, &tokens,
                                                  &concurrent),
                     0);
    assert_int_equal(images, 20);
    assert_int_equal(tokens, 250000);
    assert_int_equal(concurrent, 0);
    assert_int_equal(imgq_catalog_rate_preset(shipped(state), "openai-tier-5"), 250);
    assert_int_equal(imgq_catalog_rate_preset_get(shipped(state), "openai-tier-9", &images, &tokens,
                                                  &concurrent),
                     IMGQ_ENOTFOUND);

    static const char *const bad[] = {"{\"version\":\"t\",\"models\":{\"m1\":{" FLAT_FIELDS
                                      ",\"billing\":\"per_image\",\"prices\":{\"per_image\":1}}},"
                                      "\"rate_limit_presets\":{\"p\":{\"images_per_minute\":5,"
                                      "\"tokens_per_minute\":0}}}",
                                      "{\"version\":\"t\",\"models\":{\"m1\":{" FLAT_FIELDS
                                      ",\"billing\":\"per_image\",\"prices\":{\"per_image\":1}}},"
                                      "\"rate_limit_presets\":{\"p\":{\"images_per_minute\":5,"
                                      "\"concurrent_requests\":\"8\"}}}"};
    static const char *const needles[] = {"'tokens_per_minute' must be a positive integer",
                                          "'concurrent_requests' must be an integer from 1"};
    for (size_t i = 0; i < 2; i++) {
        imgq_catalog *cat = NULL;
        char err[512] = "";
        assert_int_equal(imgq_catalog_load_string(bad[i], &cat, err, sizeof err), IMGQ_EINVAL);
        if (!strstr(err, needles[i]) || !strstr(err, "rate limit preset 'p'"))
            fail_msg("\"%s\" not in \"%s\"", needles[i], err);
        assert_null(cat);
    }
}

static void test_load_errors_new_fields(void **state)
{
    static const struct {
        const char *text;
        const char *needles[3];
    } cases[] = {
        {"{\"version\":\"t\",\"models\":{\"m1\":{" FLAT_FIELDS
         ",\"billing\":\"per_image\",\"prices\":{\"per_image\":1},\"fallbacks\":[\"m9\"]}}}",
         {"model 'm1': fallback 'm9' is not a model of the catalog"}},
        {"{\"version\":\"t\",\"models\":{\"m1\":{" FLAT_FIELDS
         ",\"billing\":\"per_image\",\"prices\":{\"per_image\":1},\"fallbacks\":[\"m1\"]}}}",
         {"model 'm1': cannot be its own fallback"}},
        {"{\"version\":\"t\",\"models\":{\"m1\":{" FLAT_FIELDS
         ",\"billing\":\"per_image\",\"prices\":{\"per_image\":1},\"fallbacks\":[\"m2\",\"m2\"]},"
         "\"m2\":{" FLAT_FIELDS ",\"billing\":\"per_image\",\"prices\":{\"per_image\":1}}}}",
         {"model 'm1': fallback 'm2' is listed twice"}},
        {"{\"version\":\"t\",\"models\":{\"m1\":{" FLAT_FIELDS
         ",\"billing\":\"per_image\",\"prices\":{\"per_image\":1},\"fallbacks\":\"m2\"}}}",
         {"model 'm1'", "'fallbacks'"}},
        {RULE_MODEL("{\"max_side\":100,\"max_ratio\":3}"),
         {"model 'm1'", "size_rule: unknown field 'max_ratio'"}},
        {RULE_MODEL("[1]"), {"model 'm1'", "'size_rule' must be an object"}},
        {RULE_MODEL("{\"max_side\":100,\"max_aspect\":[1,3]}"),
         {"model 'm1' size_rule", "'max_aspect'"}},
        {RULE_MODEL("{\"max_side\":100,\"max_aspect\":3}"),
         {"model 'm1' size_rule", "'max_aspect'"}},
        {RULE_MODEL("{\"min_side\":200,\"max_side\":100}"),
         {"model 'm1' size_rule: 'min_side' 200 is above 'max_side' 100"}},
        {RULE_MODEL("{\"min_pixels\":2000,\"max_pixels\":1000}"),
         {"model 'm1' size_rule: 'min_pixels' 2000 is above 'max_pixels' 1000"}},
        {RULE_MODEL("{\"multiple_of\":16}"),
         {"model 'm1' size_rule", "'max_side' or 'max_pixels'"}},
        {RULE_MODEL("{\"max_side\":-5}"), {"model 'm1' size_rule", "'max_side'", "non-negative"}},
        {RULE_MODEL("{\"max_side\":1.5}"), {"model 'm1' size_rule", "'max_side'"}},
        {ONE_MODEL("{\"provider\":\"p\",\"api\":\"a\",\"billing\":\"tokens\","
                   "\"prices\":{\"image_out\":1},\"sizes\":[\"1024x1024\"],"
                   "\"output_tokens\":{\"1024x1024\":{\"high\":1}},"
                   "\"size_rule\":{\"max_side\":2048}}"),
         {"model 'm1' size_rule", "output_token_factors"}},
        {ONE_MODEL("{\"provider\":\"p\",\"api\":\"a\",\"billing\":\"tokens\","
                   "\"prices\":{\"image_out\":1},\"sizes\":[\"1024x1024\"],"
                   "\"qualities\":[\"low\",\"high\"],\"output_token_factors\":{\"high\":96},"
                   "\"output_tokens\":{\"1024x1024\":{\"low\":1,\"high\":2}},"
                   "\"size_rule\":{\"max_side\":2048}}"),
         {"model 'm1' size_rule", "quality 'low'"}},
        {ONE_MODEL("{\"provider\":\"p\",\"api\":\"a\",\"billing\":\"tokens\","
                   "\"prices\":{\"image_out\":1},\"sizes\":[\"1024x1024\"],"
                   "\"output_token_factors\":{\"high\":0},"
                   "\"output_tokens\":{\"1024x1024\":{\"high\":1}}}"),
         {"model 'm1'", "output_token_factors.high"}},
        {ONE_MODEL("{" FLAT_FIELDS ",\"billing\":\"per_image\",\"prices\":{\"per_image\":1},"
                   "\"capabilities\":[\"guidance\"]}"),
         {"model 'm1'", "'guidance_range'"}},
        {ONE_MODEL("{" FLAT_FIELDS ",\"billing\":\"per_image\",\"prices\":{\"per_image\":1},"
                   "\"guidance_range\":[1,5]}"),
         {"model 'm1'", "'guidance'"}},
        {ONE_MODEL("{" FLAT_FIELDS ",\"billing\":\"per_image\",\"prices\":{\"per_image\":1},"
                   "\"capabilities\":[\"guidance\"],\"guidance_range\":[5,1]}"),
         {"model 'm1'", "'guidance_range' must be [min, max]"}},
        {ONE_MODEL("{" FLAT_FIELDS ",\"billing\":\"per_image\",\"prices\":{\"per_image\":1},"
                   "\"capabilities\":[\"telepathy\"]}"),
         {"model 'm1'", "'telepathy'", "guidance, mask"}},
        {ONE_MODEL("{" FLAT_FIELDS ",\"billing\":\"per_image\",\"prices\":{\"per_image\":1},"
                   "\"provider_model\":7}"),
         {"model 'm1'", "'provider_model'"}},
        /* References and the edit capability go together (issue 13 item 8). */
        {ONE_MODEL("{" FLAT_FIELDS ",\"billing\":\"per_image\",\"prices\":{\"per_image\":1},"
                   "\"max_references\":1,\"capabilities\":[\"seed\"]}"),
         {"model 'm1'", "'max_references' is 1", "lacks the 'edit' capability"}},
        {ONE_MODEL("{" FLAT_FIELDS ",\"billing\":\"per_image\",\"prices\":{\"per_image\":1},"
                   "\"capabilities\":[\"edit\"]}"),
         {"model 'm1'", "'edit' capability", "'max_references' is 0"}},
        {ONE_MODEL("{" FLAT_FIELDS ",\"billing\":\"per_image\",\"prices\":{\"per_image\":1},"
                   "\"max_references\":2,\"capabilities\":[\"edit\"],"
                   "\"provider_edit_model\":\"\"}"),
         {"model 'm1'", "'provider_edit_model' must be a non-empty string"}},
        {ONE_MODEL("{" FLAT_FIELDS ",\"billing\":\"per_image\",\"prices\":{\"per_image\":1},"
                   "\"provider_edit_model\":\"x-edit\"}"),
         {"model 'm1'", "'provider_edit_model' needs the 'edit' capability"}},
        {FAILURE_MODEL("\"charges_failures\":\"yes\""),
         {"model 'm1'", "'charges_failures' must be true or false"}},
        {FAILURE_MODEL("\"charges_failures\":1"), {"model 'm1'", "'charges_failures'"}},
        {FAILURE_MODEL("\"charges_failures\":true,\"charges_failures_source\":\"\""),
         {"model 'm1'", "'charges_failures_source' must be a non-empty string"}},
        {FAILURE_MODEL("\"charges_failures\":true,\"charges_failures_source\":[\"x\"]"),
         {"model 'm1'", "'charges_failures_source'"}},
        {FAILURE_MODEL("\"charges_failures_source\":\"docs\",\"charges_failures_as_of\":"
                       "\"2026-13-01\""),
         {"model 'm1'", "'charges_failures_as_of' must be a date written YYYY-MM-DD"}},
        {FAILURE_MODEL("\"charges_failures_source\":\"docs\",\"charges_failures_as_of\":"
                       "\"2026-02-29\""),
         {"model 'm1'", "'charges_failures_as_of'"}},
        {FAILURE_MODEL("\"charges_failures_source\":\"docs\",\"charges_failures_as_of\":"
                       "\"2026-1-01x\""),
         {"model 'm1'", "'charges_failures_as_of'"}},
        {FAILURE_MODEL("\"charges_failures_source\":\"docs\",\"charges_failures_as_of\":20261201"),
         {"model 'm1'", "'charges_failures_as_of'"}},
        {FAILURE_MODEL("\"charges_failures\":false,\"charges_failures_as_of\":\"2026-12-01\""),
         {"model 'm1'", "'charges_failures_source' that is missing"}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[512];
        int rc = load_bad(cases[i].text, err, sizeof err);
        if (rc != IMGQ_EINVAL)
            fail_msg("case %zu: code %d, want IMGQ_EINVAL (%s)", i, rc, err);
        for (int k = 0; k < 3 && cases[i].needles[k]; k++)
            if (!strstr(err, cases[i].needles[k]))
                fail_msg("case %zu: \"%s\" not in \"%s\"", i, cases[i].needles[k], err);
    }
    /* Loaded fine: a failure-billing fact with its source and date (a leap day). */
    imgq_catalog *fc =
        load_ok(FAILURE_MODEL("\"charges_failures\":true,\"charges_failures_source\":"
                              "\"the provider's billing page\","
                              "\"charges_failures_as_of\":\"2028-02-29\""));
    assert_true(imgq_catalog_model(fc, "m1")->charges_failures);
    assert_string_equal(imgq_catalog_model(fc, "m1")->charges_failures_source,
                        "the provider's billing page");
    assert_string_equal(imgq_catalog_model(fc, "m1")->charges_failures_as_of, "2028-02-29");
    imgq_catalog_free(fc);
    /* Loaded fine: a rule on a flat model; a fallback to a model defined later. */
    imgq_catalog *cat = load_ok("{\"version\":\"t\",\"models\":{\"m1\":{" FLAT_FIELDS
                                ",\"billing\":\"per_image\",\"prices\":{\"per_image\":1},"
                                "\"fallbacks\":[\"m2\"],\"size_rule\":{\"max_side\":128,"
                                "\"note\":\"why\"}},\"m2\":{" FLAT_FIELDS
                                ",\"billing\":\"per_image\",\"prices\":{\"per_image\":1}}}}");
    const struct imgq_model *m1 = imgq_catalog_model(cat, "m1");
    assert_string_equal(m1->fallbacks[0], "m2");
    assert_true(imgq_model_allows_size(m1, "100x128"));
    assert_false(imgq_model_allows_size(m1, "100x129"));
    imgq_catalog_free(cat);
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
        cmocka_unit_test(test_size_rules),
        cmocka_unit_test(test_gpt_image_2_any_size),
        cmocka_unit_test(test_new_model_fields),
        cmocka_unit_test(test_failure_billing_sources),
        cmocka_unit_test(test_load_errors_new_fields),
        cmocka_unit_test(test_rate_presets),
        cmocka_unit_test(test_load_file_errors),
    };
    return cmocka_run_group_tests(tests, load_shipped, free_shipped);
}
