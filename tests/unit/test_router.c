/*
 * test_router.c - "model": "auto" against the shipped catalog and small inline ones: seed 001's
 * decision rule (low -> per-token gpt-image, medium/high -> flat per-image, image-to-image ->
 * flat unless low with few references, the crossover near 1,000 output tokens), seed 003's
 * use cases, capability needs, cost caps, and success rates (seed 004: a cheap model that fails
 * often can cost more).
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
#include "imgq/router.h"

#define TODAY ((time_t)1795305600) /* 2026-11-22 */

static imgq_catalog *shipped(void)
{
    const char *dir = getenv("IMGQ_SOURCE_DIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/deploy/catalog.json", dir ? dir : ".");
    imgq_catalog *cat = NULL;
    char err[512];
    if (imgq_catalog_load(path, &cat, err, sizeof err) != 0)
        fail_msg("catalog: %s", err);
    return cat;
}

static const char *pick(const imgq_catalog *cat, struct imgq_route_request rq,
                        const struct imgq_model_stats *st, size_t nst)
{
    static char name[64];
    struct imgq_route_result res;
    if (rq.n == 0)
        rq.n = 1;
    if (!rq.prompt_bytes)
        rq.prompt_bytes = 40;
    int rc = imgq_route(cat, &rq, st, nst, TODAY, &res);
    snprintf(name, sizeof name, "%s", rc == 0 ? res.chosen->model->name : "(none)");
    imgq_route_result_clear(&res);
    return name;
}

static void test_seed001_rule(void **state)
{
    imgq_catalog *cat = shipped();
    /* Low quality: a per-token gpt-image model. */
    assert_string_equal(pick(cat, (struct imgq_route_request){.quality = "low"}, NULL, 0),
                        "gpt-image-1-mini");
    /* Medium and high: flat per-image. */
    assert_string_equal(pick(cat, (struct imgq_route_request){.quality = "medium"}, NULL, 0),
                        "seedream-4-0");
    assert_string_equal(pick(cat, (struct imgq_route_request){.quality = "high"}, NULL, 0),
                        "seedream-4-0");
    /* Image-to-image: flat with references at medium; low with a few stays per-token. */
    assert_string_equal(
        pick(cat, (struct imgq_route_request){.quality = "medium", .references = 2}, NULL, 0),
        "seedream-4-0");
    assert_string_equal(
        pick(cat, (struct imgq_route_request){.quality = "low", .references = 3}, NULL, 0),
        "gpt-image-1-mini");
    /* Needs: text rendering rules out seedream; a transparent background needs gpt-image. */
    assert_string_equal(
        pick(cat, (struct imgq_route_request){.quality = "medium", .needs = IMGQ_NEED_TEXT}, NULL,
             0),
        "gpt-image-1.5");
    assert_string_equal(
        pick(cat, (struct imgq_route_request){.quality = "high", .needs = IMGQ_NEED_TRANSPARENT},
             NULL, 0),
        "gpt-image-1.5");
    /* A cap below every price: nothing; the reasons say so. */
    struct imgq_route_result res;
    struct imgq_route_request rq = {.quality = "high", .n = 1, .max_cost = 10000};
    assert_int_equal(imgq_route(cat, &rq, NULL, 0, TODAY, &res), IMGQ_ENOTFOUND);
    assert_null(res.chosen);
    assert_non_null(strstr(res.candidates[0].reason, "over the cap $0.010000"));
    imgq_route_result_clear(&res);
    imgq_catalog_free(cat);
}

static void test_use_cases(void **state)
{
    imgq_catalog *cat = shipped();
    /* seed 003's table as qualities: thumbnails cheap, product shots and heroes flat. */
    assert_string_equal(pick(cat, (struct imgq_route_request){.use_case = "thumbnail"}, NULL, 0),
                        "gpt-image-1-mini");
    assert_string_equal(pick(cat, (struct imgq_route_request){.use_case = "product_shot"}, NULL, 0),
                        "seedream-4-0");
    assert_string_equal(pick(cat, (struct imgq_route_request){.use_case = "hero_image"}, NULL, 0),
                        "seedream-4-0");
    struct imgq_route_result res;
    struct imgq_route_request rq = {.use_case = "nope", .n = 1};
    assert_int_equal(imgq_route(cat, &rq, NULL, 0, TODAY, &res), IMGQ_EINVAL);
    imgq_route_result_clear(&res);
    imgq_catalog_free(cat);
}

/* Two models, a per-token one at $30/M output and a flat $0.03 one: the per-token model wins
 * below 1,000 output tokens and loses above. */
static const char crossover[] =
    "{\"version\":\"t\",\"models\":{"
    "\"tok\":{\"provider\":\"openai\",\"api\":\"openai-images\",\"billing\":\"tokens\","
    "\"prices\":{\"image_out\":30000000},\"sizes\":[\"1024x1024\"],"
    "\"qualities\":[\"low\",\"medium\",\"high\"],\"output_tokens\":{\"1024x1024\":"
    "{\"low\":900,\"medium\":1100,\"high\":999}},\"n_max\":10,\"n_per_call\":10},"
    "\"flat\":{\"provider\":\"byteplus\",\"api\":\"seedream\",\"billing\":\"per_image\","
    "\"prices\":{\"per_image\":30000},\"sizes\":[\"1024x1024\"],\"n_max\":4,"
    "\"charges_failures\":true}}}";

static void test_crossover_and_success_rates(void **state)
{
    imgq_catalog *cat = NULL;
    char err[256];
    assert_int_equal(imgq_catalog_load_string(crossover, &cat, err, sizeof err), 0);
    /* Prompts of 1 byte keep text tokens (unpriced here) out of the comparison. */
    struct imgq_route_request rq = {.quality = "low", .prompt_bytes = 1};
    assert_string_equal(pick(cat, rq, NULL, 0), "tok"); /* 900 tokens: $0.027 */
    rq.quality = "medium";
    assert_string_equal(pick(cat, rq, NULL, 0), "flat"); /* 1,100 tokens: $0.033 */
    rq.quality = "high";
    assert_string_equal(pick(cat, rq, NULL, 0), "tok"); /* 999 tokens: $0.02997 */
    /* The flat model bills failures: at 80% success each image costs $0.0375 on average. */
    rq.quality = "medium";
    struct imgq_model_stats st[] = {{"flat", 80, 20, false}, {"tok", 100, 0, false}};
    assert_string_equal(pick(cat, rq, st, 2), "tok");
    /* A model that fails most calls is left out, whatever its price. */
    struct imgq_model_stats bad[] = {{"tok", 10, 90, false}};
    rq.quality = "low";
    assert_string_equal(pick(cat, rq, bad, 1), "flat");
    /* Too little history says nothing. */
    struct imgq_model_stats few[] = {{"tok", 1, 9, false}};
    assert_string_equal(pick(cat, rq, few, 1), "tok");
    /* A model whose circuit breaker is open takes no auto job, however cheap. */
    struct imgq_model_stats open[] = {{"tok", 0, 0, true}};
    assert_string_equal(pick(cat, rq, open, 1), "flat");
    struct imgq_route_result res;
    assert_int_equal(imgq_route(cat, &rq, open, 1, TODAY, &res), 0);
    for (size_t i = 0; i < res.ncandidates; i++)
        if (strcmp(res.candidates[i].model->name, "tok") == 0) {
            assert_false(res.candidates[i].eligible);
            assert_non_null(strstr(res.candidates[i].reason, "circuit breaker open"));
        }
    imgq_route_result_clear(&res);
    imgq_catalog_free(cat);
}

/* A job's fallbacks, ranked: cheapest expected cost first, where a provider that bills failed
 * calls costs its price over its success rate; an open breaker or an unreliable model last. */
static const char fallbacks[] =
    "{\"version\":\"t\",\"models\":{"
    "\"a\":{\"provider\":\"x\",\"api\":\"seedream\",\"billing\":\"per_image\","
    "\"prices\":{\"per_image\":40000},\"sizes\":[\"1024x1024\"]},"
    "\"b\":{\"provider\":\"x\",\"api\":\"seedream\",\"billing\":\"per_image\","
    "\"prices\":{\"per_image\":30000},\"sizes\":[\"1024x1024\"],"
    "\"charges_failures\":true},"
    "\"c\":{\"provider\":\"x\",\"api\":\"seedream\",\"billing\":\"per_image\","
    "\"prices\":{\"per_image\":35000},\"sizes\":[\"1024x1024\"]},"
    "\"d\":{\"provider\":\"x\",\"api\":\"seedream\",\"billing\":\"per_image\","
    "\"prices\":{\"per_image\":10000},\"sizes\":[\"1024x1024\"]}}}";

static void rank_fill(const imgq_catalog *cat, struct imgq_route_candidate *c)
{
    static const char *const names[] = {"a", "b", "c", "d"};
    static const imgq_micros costs[] = {40000, 30000, 35000, 10000};
    for (int i = 0; i < 4; i++)
        c[i] = (struct imgq_route_candidate){
            .model = imgq_catalog_model(cat, names[i]), .cost = costs[i], .eligible = true};
}

static void test_rank_fallbacks(void **state)
{
    imgq_catalog *cat = NULL;
    char err[256];
    assert_int_equal(imgq_catalog_load_string(fallbacks, &cat, err, sizeof err), 0);
    struct imgq_route_candidate c[4];
    /* No history: by price. */
    rank_fill(cat, c);
    imgq_route_rank(c, 4, NULL, 0);
    assert_string_equal(c[0].model->name, "d");
    assert_string_equal(c[1].model->name, "b");
    assert_string_equal(c[2].model->name, "c");
    assert_string_equal(c[3].model->name, "a");
    assert_int_equal(c[1].expected, 30000);
    assert_string_equal(c[0].reason, "expected $0.010000");
    /* d's breaker is open; b bills failures and succeeds 75% of the time: $0.04 expected, so
     * c ($0.035) is the cheapest healthy one; b ties with a ($0.04) and the tie goes to the
     * higher success rate, a. */
    struct imgq_model_stats st[] = {
        {"d", 0, 0, true}, {"b", 75, 25, false}, {"c", 40, 0, false}, {"a", 0, 0, false}};
    rank_fill(cat, c);
    imgq_route_rank(c, 4, st, 4);
    assert_string_equal(c[0].model->name, "c");
    assert_int_equal(c[0].expected, 35000);
    assert_string_equal(c[1].model->name, "a");
    assert_string_equal(c[2].model->name, "b");
    assert_int_equal(c[2].expected, 40000);
    assert_non_null(strstr(c[2].reason, "75% of calls succeed, failed calls billed"));
    assert_string_equal(c[3].model->name, "d");
    assert_false(c[3].eligible);
    assert_non_null(strstr(c[3].reason, "circuit breaker open"));
    /* A model that does not bill failures costs its price whatever its rate; an unreliable
     * one (under half its calls succeed) is left out. */
    struct imgq_model_stats st2[] = {{"c", 60, 40, false}, {"d", 10, 90, false}};
    rank_fill(cat, c);
    imgq_route_rank(c, 4, st2, 2);
    assert_string_equal(c[0].model->name, "b");
    assert_string_equal(c[1].model->name, "c");
    assert_int_equal(c[1].expected, 35000);
    assert_string_equal(c[3].model->name, "d");
    assert_false(c[3].eligible);
    assert_non_null(strstr(c[3].reason, "unreliable"));
    /* Candidates the caller ruled out stay out, last. */
    rank_fill(cat, c);
    c[3].eligible = false;
    snprintf(c[3].reason, sizeof c[3].reason, "cannot do this job");
    imgq_route_rank(c, 4, NULL, 0);
    assert_string_equal(c[0].model->name, "b");
    assert_string_equal(c[3].model->name, "d");
    assert_string_equal(c[3].reason, "cannot do this job");
    imgq_catalog_free(cat);
}

static void test_job_auto(void **state)
{
    imgq_catalog *cat = shipped();
    struct imgq_job_spec s;
    struct imgq_job_problem why;
    const char *line = "{\"prompt\":\"a linen shirt\",\"model\":\"auto\",\"quality\":\"low\"}";
    assert_int_equal(imgq_job_parse(cat, line, strlen(line), NULL, TODAY, &s, &why, NULL, 0), 0);
    assert_string_equal(s.model, "gpt-image-1-mini");
    assert_string_equal(s.quality, "low");
    assert_non_null(strstr(s.routed, "auto: gpt-image-1-mini"));
    imgq_job_spec_clear(&s);
    line = "{\"prompt\":\"a shirt\",\"model\":\"auto\",\"use_case\":\"hero_image\"}";
    assert_int_equal(imgq_job_parse(cat, line, strlen(line), NULL, TODAY, &s, &why, NULL, 0), 0);
    assert_string_equal(s.model, "seedream-4-0");
    assert_null(s.quality); /* a flat model has no quality knob */
    imgq_job_spec_clear(&s);
    /* The use case and the cap are kept on the job (a model it moves to must honour them),
     * read back from the stored form, and left behind by a retarget. */
    line = "{\"prompt\":\"a shirt\",\"model\":\"auto\",\"use_case\":\"thumbnail\","
           "\"max_cost_usd\":\"0.0045\"}";
    assert_int_equal(imgq_job_parse(cat, line, strlen(line), NULL, TODAY, &s, &why, NULL, 0), 0);
    assert_string_equal(s.use_case, "thumbnail");
    assert_int_equal(s.max_cost, 4500);
    char *stored = imgq_job_spec_to_json(&s);
    assert_non_null(strstr(stored, "\"use_case\":\"thumbnail\""));
    assert_non_null(strstr(stored, "\"max_cost_usd\":\"$0.004500\""));
    struct imgq_job_spec back;
    assert_int_equal(imgq_job_spec_from_json(stored, &back), 0);
    assert_string_equal(back.use_case, "thumbnail");
    assert_int_equal(back.max_cost, 4500);
    struct imgq_job_spec moved;
    assert_int_equal(imgq_job_retarget(cat, &back, "gpt-image-2", TODAY, &moved, &why), 0);
    assert_null(moved.use_case);
    assert_int_equal(moved.max_cost, 0);
    assert_null(moved.routed);
    imgq_job_spec_clear(&moved);
    imgq_job_spec_clear(&back);
    free(stored);
    imgq_job_spec_clear(&s);
    /* A damaged cap in a stored spec is refused. */
    assert_int_equal(imgq_job_spec_from_json("{\"model\":\"gpt-image-2\",\"prompt\":\"a\","
                                             "\"size\":\"1024x1024\",\"max_cost_usd\":\"lots\"}",
                                             &back),
                     IMGQ_EINVAL);
    line = "{\"prompt\":\"a\",\"model\":\"auto\",\"needs\":[\"telepathy\"]}";
    assert_int_equal(imgq_job_parse(cat, line, strlen(line), NULL, TODAY, &s, &why, NULL, 0),
                     IMGQ_EINVAL);
    assert_string_equal(why.field, "needs");
    line = "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\",\"use_case\":\"thumbnail\"}";
    assert_int_equal(imgq_job_parse(cat, line, strlen(line), NULL, TODAY, &s, &why, NULL, 0),
                     IMGQ_EINVAL);
    assert_string_equal(why.field, "model");
    imgq_catalog_free(cat);
}

/* The reason a model was left out (or priced). */
static void reason_of(const imgq_catalog *cat, struct imgq_route_request rq, const char *model,
                      char *out, size_t len)
{
    struct imgq_route_result res;
    if (rq.n == 0)
        rq.n = 1;
    if (!rq.prompt_bytes)
        rq.prompt_bytes = 40;
    int rc = imgq_route(cat, &rq, NULL, 0, TODAY, &res);
    assert_true(rc == 0 || rc == IMGQ_ENOTFOUND);
    snprintf(out, len, "(not a candidate)");
    for (size_t i = 0; i < res.ncandidates; i++)
        if (strcmp(res.candidates[i].model->name, model) == 0)
            snprintf(out, len, "%s", res.candidates[i].reason);
    imgq_route_result_clear(&res);
}

static void test_references_guidance_sizes(void **state)
{
    imgq_catalog *cat = shipped();
    char why[200];
    /* References count against each model's limit and need edit. */
    assert_string_equal(
        pick(cat, (struct imgq_route_request){.quality = "medium", .references = 10}, NULL, 0),
        "seedream-4-0");
    assert_string_equal(
        pick(cat, (struct imgq_route_request){.quality = "medium", .references = 11}, NULL, 0),
        "seedream-4-5");
    reason_of(cat, (struct imgq_route_request){.quality = "medium", .references = 11},
              "seedream-4-0", why, sizeof why);
    assert_string_equal(why, "takes at most 10 reference images");
    assert_string_equal(
        pick(cat, (struct imgq_route_request){.quality = "medium", .references = 15}, NULL, 0),
        "gpt-image-1.5");
    assert_string_equal(
        pick(cat, (struct imgq_route_request){.quality = "medium", .references = 17}, NULL, 0),
        "(none)");
    /* A reference needs edit even when the request does not say so. */
    reason_of(cat, (struct imgq_route_request){.quality = "low", .references = 1}, "flux-schnell",
              why, sizeof why);
    assert_string_equal(why, "cannot do 'edit'");
    /* A mask: the gpt-image models only. */
    assert_string_equal(pick(cat,
                             (struct imgq_route_request){
                                 .quality = "medium", .references = 1, .needs = IMGQ_NEED_MASK},
                             NULL, 0),
                        "gpt-image-1.5");
    reason_of(cat, (struct imgq_route_request){.quality = "medium", .needs = IMGQ_NEED_MASK},
              "seedream-4-0", why, sizeof why);
    assert_string_equal(why, "cannot do 'mask'");

    /* guidance_scale: a model with the knob whose range holds the value. */
    struct imgq_route_request g = {
        .quality = "low", .needs = IMGQ_NEED_GUIDANCE, .has_guidance = true, .guidance_scale = 3};
    assert_string_equal(pick(cat, g, NULL, 0), "fal-flux-dev");
    g.quality = "medium";
    assert_string_equal(pick(cat, g, NULL, 0), "flux-1.1-pro");
    g.guidance_scale = 8;
    assert_string_equal(pick(cat, g, NULL, 0), "sd-3.5-large");
    reason_of(cat, g, "flux-1.1-pro", why, sizeof why);
    assert_string_equal(why, "guidance_scale 8 is outside 1.5 to 5");
    g.guidance_scale = 30;
    assert_string_equal(pick(cat, g, NULL, 0), "(none)");

    /* Sizes off the lists: the size rules decide, and say why. */
    struct imgq_route_request z = {.quality = "low", .size = "1920x1088"};
    assert_string_equal(pick(cat, z, NULL, 0), "gpt-image-2");
    reason_of(cat, z, "seedream-4-5", why, sizeof why);
    assert_string_equal(
        why, "seedream-4-5 needs at least 3,686,400 pixels (1920x1920); 1920x1088 has 2,088,960");
    reason_of(cat, z, "gpt-image-1-mini", why, sizeof why);
    assert_string_equal(why, "no 1920x1088 size");
    z.quality = "medium";
    assert_string_equal(pick(cat, z, NULL, 0), "seedream-4-0");
    imgq_catalog_free(cat);
}

static void test_job_auto_references(void **state)
{
    imgq_catalog *cat = shipped();
    struct imgq_job_spec s;
    struct imgq_job_problem why;
    const char *line =
        "{\"prompt\":\"a\",\"model\":\"auto\",\"quality\":\"medium\",\"images\":"
        "[\"s3://bkt/1\",\"s3://bkt/2\",\"s3://bkt/3\",\"s3://bkt/4\",\"s3://bkt/5\","
        "\"s3://bkt/6\",\"s3://bkt/7\",\"s3://bkt/8\",\"s3://bkt/9\",\"s3://bkt/10\","
        "\"s3://bkt/11\"]}";
    assert_int_equal(imgq_job_parse(cat, line, strlen(line), NULL, TODAY, &s, &why, NULL, 0), 0);
    assert_string_equal(s.model, "seedream-4-5");
    assert_int_equal(s.nrefs, 11);
    imgq_job_spec_clear(&s);
    line = "{\"prompt\":\"a\",\"model\":\"auto\",\"quality\":\"low\",\"images\":[\"s3://bkt/1\"]}";
    assert_int_equal(imgq_job_parse(cat, line, strlen(line), NULL, TODAY, &s, &why, NULL, 0), 0);
    assert_string_equal(s.model, "gpt-image-1-mini");
    imgq_job_spec_clear(&s);
    line = "{\"prompt\":\"a\",\"model\":\"auto\",\"quality\":\"medium\",\"guidance_scale\":8}";
    assert_int_equal(imgq_job_parse(cat, line, strlen(line), NULL, TODAY, &s, &why, NULL, 0), 0);
    assert_string_equal(s.model, "sd-3.5-large");
    assert_true(s.has_guidance);
    imgq_job_spec_clear(&s);
    line = "{\"prompt\":\"a\",\"model\":\"auto\",\"needs\":[\"guidance\",\"mask\"]}";
    assert_int_equal(imgq_job_parse(cat, line, strlen(line), NULL, TODAY, &s, &why, NULL, 0),
                     IMGQ_EINVAL);
    assert_string_equal(why.field, "model");
    assert_non_null(strstr(why.reason, "no model can do this job"));
    line = "{\"prompt\":\"a\",\"model\":\"auto\",\"needs\":[\"telepathy\"]}";
    assert_int_equal(imgq_job_parse(cat, line, strlen(line), NULL, TODAY, &s, &why, NULL, 0),
                     IMGQ_EINVAL);
    assert_string_equal(why.reason, "'telepathy' is not one of text, edit, seed, negative_prompt, "
                                    "transparent, guidance, mask");
    imgq_catalog_free(cat);
}

/* imgq route --explain prints the candidates after the job's JSON is gone: their quality and
 * size belong to the result (they pointed into the freed JSON, and printed "\u0003"). */
static void test_job_route_result_outlives_request(void **state)
{
    (void)state;
    imgq_catalog *cat = shipped();
    char *line = strdup("{\"prompt\":\"a fox\",\"model\":\"auto\",\"quality\":\"low\","
                        "\"size\":\"1024x1024\"}");
    struct imgq_route_result res;
    struct imgq_job_problem why;
    assert_int_equal(imgq_job_route(cat, line, strlen(line), NULL, TODAY, &res, &why), 0);
    memset(line, 'x', strlen(line)); /* nothing of the request is left */
    free(line);
    size_t priced = 0;
    for (size_t i = 0; i < res.ncandidates; i++) {
        const struct imgq_route_candidate *c = &res.candidates[i];
        if (!c->eligible)
            continue;
        priced++;
        assert_string_equal(c->size, "1024x1024");
        if (c->quality)
            assert_string_equal(c->quality, "low");
    }
    assert_true(priced > 3);
    assert_string_equal(res.chosen->quality, "low");
    imgq_route_result_clear(&res);
    imgq_catalog_free(cat);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seed001_rule),
        cmocka_unit_test(test_use_cases),
        cmocka_unit_test(test_crossover_and_success_rates),
        cmocka_unit_test(test_rank_fallbacks),
        cmocka_unit_test(test_job_auto),
        cmocka_unit_test(test_references_guidance_sizes),
        cmocka_unit_test(test_job_auto_references),
        cmocka_unit_test(test_job_route_result_outlives_request),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
