/* test_sidecar.c - the JSON stored next to each image object: exact layout, optional fields,
 * determinism, bad arguments, the sidecar key, and the version it records. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imgq/sidecar.h"

#define KEY "out/images/3f/3fa9c0de0000000000000000000000000000000000000000000000000000beef.webp"

/* A spec with every optional field the sidecar records set (not owned: never cleared). */
static struct imgq_job_spec full_spec(json_t *metadata)
{
    static char *refs[] = {"s3://refs/chair.png", "https://example.com/lamp.jpg"};
    struct imgq_job_spec s = {0};
    s.id = "sku-1042";
    s.model = "flux-dev";
    s.alias = "flux";
    s.prompt = "a red  chair, studio light \"45°\"";
    s.n = 4;
    s.size = "1024x768";
    s.width = 1024;
    s.height = 768;
    s.quality = "high";
    s.output_format = "webp";
    s.output_compression = 85;
    s.has_seed = true;
    s.seed = 4242;
    s.negative_prompt = "blur";
    s.has_guidance = true;
    s.guidance_scale = 3.5;
    s.background = "opaque";
    s.refs = refs;
    s.nrefs = 2;
    s.mask = "s3://refs/mask.png";
    s.metadata = metadata;
    return s;
}

static void test_full_document(void **state)
{
    json_t *meta = json_pack("{s:s, s:i}", "sku", "1042", "row", 7);
    json_t *usage = json_pack("{s:i, s:i, s:{s:i}}", "input_tokens", 50, "output_tokens", 4160,
                              "input_tokens_details", "image_tokens", 0);
    struct imgq_job_spec s = full_spec(meta);
    char *doc = imgq_sidecar_json(&s, 2, KEY, 1024, 768, 123456, "webp", usage, 41000,
                                  "2026-03-01T12:34:56Z");
    assert_non_null(doc);
    static const char want[] = "{\n"
                               "  \"key\": \"" KEY "\",\n"
                               "  \"prompt\": \"a red  chair, studio light \\\"45°\\\"\",\n"
                               "  \"model\": \"flux-dev\",\n"
                               "  \"requested_model\": \"flux\",\n"
                               "  \"size\": \"1024x768\",\n"
                               "  \"quality\": \"high\",\n"
                               "  \"n\": 4,\n"
                               "  \"index\": 2,\n"
                               "  \"seed\": 4242,\n"
                               "  \"negative_prompt\": \"blur\",\n"
                               "  \"guidance_scale\": 3.5,\n"
                               "  \"background\": \"opaque\",\n"
                               "  \"references\": [\n"
                               "    \"s3://refs/chair.png\",\n"
                               "    \"https://example.com/lamp.jpg\"\n"
                               "  ],\n"
                               "  \"mask\": \"s3://refs/mask.png\",\n"
                               "  \"format\": \"webp\",\n"
                               "  \"compression\": 85,\n"
                               "  \"width\": 1024,\n"
                               "  \"height\": 768,\n"
                               "  \"bytes\": 123456,\n"
                               "  \"usage\": {\n"
                               "    \"input_tokens\": 50,\n"
                               "    \"output_tokens\": 4160,\n"
                               "    \"input_tokens_details\": {\n"
                               "      \"image_tokens\": 0\n"
                               "    }\n"
                               "  },\n"
                               "  \"cost_micros\": 41000,\n"
                               "  \"created\": \"2026-03-01T12:34:56Z\",\n"
                               "  \"client_id\": \"sku-1042\",\n"
                               "  \"metadata\": {\n"
                               "    \"sku\": \"1042\",\n"
                               "    \"row\": 7\n"
                               "  },\n"
                               "  \"imgq\": {\n"
                               "    \"version\": \"" IMGQ_VERSION "\",\n"
                               "    \"sidecar\": 1\n"
                               "  }\n"
                               "}\n";
    assert_string_equal(doc, want);

    /* Deterministic: the same inputs, the same bytes; the caller's usage is only read. */
    char *again = imgq_sidecar_json(&s, 2, KEY, 1024, 768, 123456, "webp", usage, 41000,
                                    "2026-03-01T12:34:56Z");
    assert_string_equal(again, doc);
    assert_int_equal(json_object_size(usage), 3);
    assert_int_equal(usage->refcount, 1);
    assert_int_equal(meta->refcount, 1);
    free(again);

    /* It parses back (valid JSON and UTF-8) with the values given. */
    json_error_t err;
    json_t *back = json_loads(doc, 0, &err);
    assert_non_null(back);
    assert_int_equal(json_integer_value(json_object_get(back, "cost_micros")), 41000);
    assert_true(json_equal(json_object_get(back, "usage"), usage));
    json_decref(back);
    free(doc);
    json_decref(usage);
    json_decref(meta);
}

static void test_minimal_document(void **state)
{
    struct imgq_job_spec s = {0};
    s.model = "gpt-image-1-mini";
    s.prompt = "lamp";
    s.n = 1;
    s.size = "1024x1024";
    s.output_format = "png";
    s.output_compression = 100;
    char *doc = imgq_sidecar_json(&s, 0, "images/ab/ab.png", 1024, 1024, 99, "png", NULL, 0, NULL);
    assert_non_null(doc);
    json_t *o = json_loads(doc, 0, NULL);
    assert_non_null(o);
    /* Exactly these fields, in this order: optional ones are left out, not null. */
    static const char *const order[] = {"key",   "prompt",      "model", "size",   "n",
                                        "index", "format",      "width", "height", "bytes",
                                        "usage", "cost_micros", "imgq"};
    size_t i = 0;
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v)
    {
        assert_true(i < sizeof order / sizeof order[0]);
        assert_string_equal(k, order[i]);
        i++;
    }
    assert_int_equal(i, sizeof order / sizeof order[0]);
    assert_true(json_is_null(json_object_get(o, "usage")));
    assert_int_equal(json_integer_value(json_object_get(o, "cost_micros")), 0);
    json_decref(o);
    free(doc);

    /* jpeg and webp record the compression (their quality); a fan-out's usage array stays. */
    json_t *calls = json_pack("[{s:i}, n]", "output_tokens", 10);
    s.output_compression = 70;
    doc = imgq_sidecar_json(&s, 0, "k.jpeg", 8, 8, 1, "jpeg", calls, 5, NULL);
    o = json_loads(doc, 0, NULL);
    assert_int_equal(json_integer_value(json_object_get(o, "compression")), 70);
    assert_true(json_equal(json_object_get(o, "usage"), calls));
    assert_string_equal(json_string_value(json_object_get(o, "format")), "jpeg");
    json_decref(o);
    json_decref(calls);
    free(doc);

    /* A seed of 0 is still a seed; a large one survives exactly. */
    s.has_seed = true;
    s.seed = 0;
    doc = imgq_sidecar_json(&s, 0, "k", 8, 8, 1, "webp", NULL, 0, NULL);
    assert_non_null(strstr(doc, "\"seed\": 0,"));
    free(doc);
    s.seed = INT64_C(9007199254740993);
    doc = imgq_sidecar_json(&s, 0, "k", 8, 8, 1, "webp", NULL, 0, NULL);
    assert_non_null(strstr(doc, "\"seed\": 9007199254740993,"));
    free(doc);
}

static void test_bad_arguments(void **state)
{
    struct imgq_job_spec s = full_spec(NULL);
    assert_null(imgq_sidecar_json(NULL, 0, "k", 1, 1, 1, "webp", NULL, 0, NULL));
    assert_null(imgq_sidecar_json(&s, 0, NULL, 1, 1, 1, "webp", NULL, 0, NULL));
    assert_null(imgq_sidecar_json(&s, 0, "", 1, 1, 1, "webp", NULL, 0, NULL));
    assert_null(imgq_sidecar_json(&s, 0, "k", 1, 1, 1, NULL, NULL, 0, NULL));
    assert_null(imgq_sidecar_json(&s, 0, "k", 1, 1, 1, "", NULL, 0, NULL));
    assert_null(imgq_sidecar_json(&s, -1, "k", 1, 1, 1, "webp", NULL, 0, NULL));
    assert_null(imgq_sidecar_json(&s, 0, "k", -1, 1, 1, "webp", NULL, 0, NULL));
    assert_null(imgq_sidecar_json(&s, 0, "k", 1, -1, 1, "webp", NULL, 0, NULL));
    /* A key that is not UTF-8 cannot be written as JSON. */
    assert_null(imgq_sidecar_json(&s, 0, "k\xff", 1, 1, 1, "webp", NULL, 0, NULL));
    s.prompt = NULL;
    assert_null(imgq_sidecar_json(&s, 0, "k", 1, 1, 1, "webp", NULL, 0, NULL));
    s = full_spec(NULL);
    s.model = NULL;
    assert_null(imgq_sidecar_json(&s, 0, "k", 1, 1, 1, "webp", NULL, 0, NULL));
}

static void test_sidecar_key(void **state)
{
    char *k = imgq_sidecar_key(KEY);
    assert_string_equal(k, KEY ".json");
    free(k);
    assert_null(imgq_sidecar_key(NULL));
    assert_null(imgq_sidecar_key(""));
    /* S3 keys are at most 1024 bytes: 1019 + ".json" fits, 1020 does not. */
    char longkey[1021];
    memset(longkey, 'a', sizeof longkey - 1);
    longkey[1020] = '\0';
    assert_null(imgq_sidecar_key(longkey));
    longkey[1019] = '\0';
    k = imgq_sidecar_key(longkey);
    assert_non_null(k);
    assert_int_equal(strlen(k), 1024);
    free(k);
}

/* IMGQ_VERSION is CMakeLists.txt's project version. */
static void test_version_matches_cmake(void **state)
{
    char path[4096];
    const char *root = getenv("IMGQ_SOURCE_DIR");
    if (root && *root) {
        snprintf(path, sizeof path, "%s/CMakeLists.txt", root);
    } else {
        const char *self = __FILE__, *cut = strstr(self, "tests/unit/");
        snprintf(path, sizeof path, "%.*sCMakeLists.txt", cut ? (int)(cut - self) : 0, self);
    }
    FILE *f = fopen(path, "r");
    if (!f)
        skip();
    char line[512], want[64] = "";
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "project(imgq VERSION %63[0-9.]", want) == 1)
            break;
    fclose(f);
    assert_string_equal(IMGQ_VERSION, want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_document),         cmocka_unit_test(test_minimal_document),
        cmocka_unit_test(test_bad_arguments),         cmocka_unit_test(test_sidecar_key),
        cmocka_unit_test(test_version_matches_cmake),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
