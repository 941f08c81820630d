/*
 * test_job.c - job parsing and validation against the shipped catalog (and a small inline
 * one), defaults, lifecycle dates, every refusal naming its field, and the stored form.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "imgq/dedup.h"
#include "imgq/job.h"

/* ---- fixtures ----------------------------------------------------------------------------- */

struct fixture {
    imgq_catalog *shipped;
    imgq_catalog *small; /* a quality-less openai-images model with a 10-character limit */
};

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

static const char small_catalog[] =
    "{\"version\":\"small-1\",\"models\":{\"tiny\":{\"provider\":\"openai\","
    "\"api\":\"openai-images\",\"billing\":\"per_image\",\"prices\":{\"per_image\":1000},"
    "\"n_max\":2,\"max_prompt_chars\":10,\"sizes\":[\"512x512\",\"1024x1024\"]}},"
    "\"aliases\":{\"t\":\"tiny\"}}";

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    char path[4096], err[512] = "";
    source_path("deploy/catalog.json", path, sizeof path);
    if (!f || imgq_catalog_load(path, &f->shipped, err, sizeof err) != 0 ||
        imgq_catalog_load_string(small_catalog, &f->small, err, sizeof err) != 0) {
        fprintf(stderr, "fixture: %s\n", err);
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    imgq_catalog_free(f->shipped);
    imgq_catalog_free(f->small);
    free(f);
    return 0;
}

static const imgq_catalog *cat(void **state)
{
    return ((struct fixture *)*state)->shipped;
}

static const imgq_catalog *small(void **state)
{
    return ((struct fixture *)*state)->small;
}

/* Midnight UTC of a date, plus an hour so that the date is unambiguous. */
static time_t day(int y, int m, int d)
{
    struct tm tm = {.tm_year = y - 1900, .tm_mon = m - 1, .tm_mday = d, .tm_hour = 1};
    return timegm(&tm);
}

#define TODAY day(2026, 11, 22)

static void assert_contains(const char *haystack, const char *needle)
{
    if (!strstr(haystack, needle))
        fail_msg("expected \"%s\" in \"%s\"", needle, haystack);
}

static void assert_spec_empty(const struct imgq_job_spec *s)
{
    assert_null(s->id);
    assert_null(s->model);
    assert_null(s->alias);
    assert_null(s->prompt);
    assert_null(s->size);
    assert_null(s->quality);
    assert_null(s->output_format);
    assert_null(s->route);
    assert_null(s->team);
    assert_null(s->webhook);
    assert_null(s->metadata);
    assert_int_equal(s->n, 0);
}

/* Parse text that must be accepted. */
static void parse_ok(const imgq_catalog *c, const char *text, time_t today, struct imgq_job_spec *s,
                     char *warn, size_t warnlen)
{
    struct imgq_job_problem why;
    int rc = imgq_job_parse(c, text, strlen(text), NULL, today, s, &why, warn, warnlen);
    if (rc != 0)
        fail_msg("refused (%d): %s: %s\n  job: %s", rc, why.field, why.reason, text);
}

/* Parse text that must be refused with 'code' on 'field' with 'needle' in the reason. */
static void refused(const imgq_catalog *c, const char *text, time_t today, int code,
                    const char *field, const char *needle)
{
    struct imgq_job_spec s;
    struct imgq_job_problem why;
    char warn[256] = "junk";
    memset(&s, 0x5a, sizeof s);
    int rc = imgq_job_parse(c, text, strlen(text), NULL, today, &s, &why, warn, sizeof warn);
    if (rc != code)
        fail_msg("code %d, want %d (%s: %s)\n  job: %s", rc, code, why.field, why.reason, text);
    if (strcmp(why.field, field) != 0)
        fail_msg("field '%s', want '%s' (%s)\n  job: %s", why.field, field, why.reason, text);
    if (needle && !strstr(why.reason, needle))
        fail_msg("\"%s\" not in reason \"%s\"\n  job: %s", needle, why.reason, text);
    assert_spec_empty(&s); /* left cleared, nothing leaked (valgrind) */
}

/* ---- accepted jobs ------------------------------------------------------------------------ */

static void test_minimal_job_gets_defaults(void **state)
{
    struct imgq_job_spec s;
    char warn[256] = "junk";
    parse_ok(cat(state), "{\"prompt\":\"a red bicycle\",\"model\":\"gpt-image-1.5\"}", TODAY, &s,
             warn, sizeof warn);
    assert_string_equal(warn, "");
    assert_null(s.id);
    assert_string_equal(s.model, "gpt-image-1.5");
    assert_null(s.alias);
    assert_string_equal(s.prompt, "a red bicycle");
    assert_int_equal(s.n, 1);
    assert_string_equal(s.size, "1024x1024"); /* the model's first size */
    assert_int_equal(s.width, 1024);
    assert_int_equal(s.height, 1024);
    assert_string_equal(s.quality, "auto");
    assert_string_equal(s.output_format, "webp");
    assert_int_equal(s.output_compression, 85);
    assert_null(s.background);
    assert_null(s.moderation);
    assert_null(s.user);
    assert_string_equal(s.route, "list");
    assert_string_equal(s.team, "");
    assert_null(s.webhook);
    assert_int_equal(s.priority, IMGQ_PRIO_NORMAL);
    assert_int_equal(s.max_attempts, 5);
    assert_null(s.metadata);
    imgq_job_spec_clear(&s);
    assert_null(s.model);
}

static void test_submit_defaults_apply(void **state)
{
    const char *text = "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\"}";
    struct imgq_job_defaults d = {.team = "acme",
                                  .route = "treerouter-standard",
                                  .priority = IMGQ_PRIO_LOW,
                                  .max_attempts = 3};
    struct imgq_job_spec s;
    struct imgq_job_problem why;
    assert_int_equal(imgq_job_parse(cat(state), text, strlen(text), &d, TODAY, &s, &why, NULL, 0),
                     0);
    assert_string_equal(s.team, "acme");
    assert_string_equal(s.route, "treerouter-standard");
    assert_int_equal(s.priority, IMGQ_PRIO_LOW);
    assert_int_equal(s.max_attempts, 3);
    imgq_job_spec_clear(&s);

    /* The job's own fields win over the defaults. */
    const char *own = "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\",\"team\":\"web\","
                      "\"route\":\"list\",\"priority\":\"high\",\"max_attempts\":9}";
    assert_int_equal(imgq_job_parse(cat(state), own, strlen(own), &d, TODAY, &s, &why, NULL, 0), 0);
    assert_string_equal(s.team, "web");
    assert_string_equal(s.route, "list");
    assert_int_equal(s.priority, IMGQ_PRIO_HIGH);
    assert_int_equal(s.max_attempts, 9);
    imgq_job_spec_clear(&s);

    /* A default route the catalog does not know is refused like a job's own. */
    d.route = "nowhere";
    memset(&why, 0, sizeof why);
    assert_int_equal(imgq_job_parse(cat(state), text, strlen(text), &d, TODAY, &s, &why, NULL, 0),
                     IMGQ_EINVAL);
    assert_string_equal(why.field, "route");
    assert_contains(why.reason, "'nowhere'");
}

static const char full_job[] =
    "{\"id\":\"sku-1042/front\",\"prompt\":\"Product photo of a ceramic mug, caf\\u00e9 "
    "\\u2615\",\"model\":\"gpt-image-1.5\",\"n\":4,\"size\":\"1536x1024\",\"quality\":\"high\","
    "\"output_format\":\"png\",\"output_compression\":50,\"background\":\"transparent\","
    "\"moderation\":\"low\",\"user\":\"user-77\",\"route\":\"treerouter-enterprise\","
    "\"team\":\"catalog.team\",\"webhook\":\"https://cms.example.com/hooks/imgq\","
    "\"priority\":\"high\",\"max_attempts\":7,"
    "\"metadata\":{\"sku\":\"1042\",\"tags\":[\"mug\",\"front\"],\"w\":3,\"nested\":{\"a\":null}}}";

static void test_full_job(void **state)
{
    struct imgq_job_spec s;
    parse_ok(cat(state), full_job, TODAY, &s, NULL, 0);
    assert_string_equal(s.id, "sku-1042/front");
    assert_string_equal(s.prompt, "Product photo of a ceramic mug, caf\xc3\xa9 \xe2\x98\x95");
    assert_string_equal(s.model, "gpt-image-1.5");
    assert_int_equal(s.n, 4);
    assert_string_equal(s.size, "1536x1024");
    assert_int_equal(s.width, 1536);
    assert_int_equal(s.height, 1024);
    assert_string_equal(s.quality, "high");
    assert_string_equal(s.output_format, "png");
    assert_int_equal(s.output_compression, 50);
    assert_string_equal(s.background, "transparent");
    assert_string_equal(s.moderation, "low");
    assert_string_equal(s.user, "user-77");
    assert_string_equal(s.route, "treerouter-enterprise");
    assert_string_equal(s.team, "catalog.team");
    assert_string_equal(s.webhook, "https://cms.example.com/hooks/imgq");
    assert_int_equal(s.priority, IMGQ_PRIO_HIGH);
    assert_int_equal(s.max_attempts, 7);
    assert_non_null(s.metadata);
    assert_string_equal(json_string_value(json_object_get(s.metadata, "sku")), "1042");
    assert_int_equal(json_array_size(json_object_get(s.metadata, "tags")), 2);
    imgq_job_spec_clear(&s);

    /* Explicit nulls mean "not given". */
    parse_ok(cat(state),
             "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\",\"n\":null,\"size\":null,"
             "\"quality\":null,\"metadata\":null,\"webhook\":null,\"priority\":null}",
             TODAY, &s, NULL, 0);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.size, "1024x1024");
    assert_string_equal(s.quality, "auto");
    assert_null(s.metadata);
    assert_null(s.webhook);
    imgq_job_spec_clear(&s);

    /* Only 'len' bytes are read: what follows the object is not part of the job. */
    const char *text = "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\"}GARBAGE";
    struct imgq_job_problem why;
    assert_int_equal(
        imgq_job_parse(cat(state), text, strlen(text) - 7, NULL, TODAY, &s, &why, NULL, 0), 0);
    imgq_job_spec_clear(&s);
}

static void test_alias_resolves(void **state)
{
    struct imgq_job_spec s;
    parse_ok(cat(state), "{\"prompt\":\"a\",\"model\":\"catalog-default\"}", TODAY, &s, NULL, 0);
    assert_string_equal(s.model, "gpt-image-1.5");
    assert_string_equal(s.alias, "catalog-default");
    imgq_job_spec_clear(&s);
}

static void test_model_without_quality(void **state)
{
    struct imgq_job_spec s;
    parse_ok(small(state), "{\"prompt\":\"a\",\"model\":\"t\"}", TODAY, &s, NULL, 0);
    assert_string_equal(s.model, "tiny");
    assert_string_equal(s.alias, "t");
    assert_null(s.quality);
    assert_string_equal(s.size, "512x512");
    imgq_job_spec_clear(&s);
    /* "auto" is the same as leaving it out. */
    parse_ok(small(state), "{\"prompt\":\"a\",\"model\":\"tiny\",\"quality\":\"auto\"}", TODAY, &s,
             NULL, 0);
    assert_null(s.quality);
    imgq_job_spec_clear(&s);
    refused(small(state), "{\"prompt\":\"a\",\"model\":\"tiny\",\"quality\":\"high\"}", TODAY,
            IMGQ_EINVAL, "quality", "model 'tiny' has no quality setting");
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

static void test_lifecycle(void **state)
{
    const char *text = "{\"prompt\":\"a\",\"model\":\"gpt-image-1\"}";
    /* Shut down on 2026-10-23: refused from that day on, naming the successor. */
    refused(cat(state), text, day(2026, 10, 24), IMGQ_EINVAL, "model",
            "'gpt-image-1' was shut down on 2026-10-23; use 'gpt-image-1.5' instead");
    refused(cat(state), text, day(2026, 10, 23), IMGQ_EINVAL, "model", "shut down");
    refused(cat(state), text, TODAY, IMGQ_EINVAL, "model", "gpt-image-1.5");

    /* Before shutdown but after 2026-06-01: accepted, with a deprecation warning. */
    struct imgq_job_spec s;
    char warn[256] = "";
    parse_ok(cat(state), text, day(2026, 10, 22), &s, warn, sizeof warn);
    assert_string_equal(s.model, "gpt-image-1");
    assert_contains(warn, "'gpt-image-1' is deprecated since 2026-06-01");
    assert_contains(warn, "shuts down on 2026-10-23");
    assert_contains(warn, "successor");
    imgq_job_spec_clear(&s);
    parse_ok(cat(state), text, day(2026, 6, 1), &s, warn, sizeof warn);
    assert_contains(warn, "deprecated");
    imgq_job_spec_clear(&s);

    /* Before the deprecation: no warning at all. */
    strcpy(warn, "junk");
    parse_ok(cat(state), text, day(2026, 5, 31), &s, warn, sizeof warn);
    assert_string_equal(warn, "");
    imgq_job_spec_clear(&s);

    /* A tiny warning buffer is truncated, not overrun. */
    char tiny[8];
    parse_ok(cat(state), text, day(2026, 7, 1), &s, tiny, sizeof tiny);
    assert_int_equal(strlen(tiny), 7);
    imgq_job_spec_clear(&s);

    /* dall-e-3 retired 2026-05-12. */
    refused(cat(state), "{\"prompt\":\"a\",\"model\":\"dall-e-3\"}", TODAY, IMGQ_EINVAL, "model",
            "shut down on 2026-05-12");
}

/* ---- refusals ----------------------------------------------------------------------------- */

static void test_prompt_refusals(void **state)
{
    const imgq_catalog *c = cat(state);
    refused(c, "{\"model\":\"gpt-image-1.5\"}", TODAY, IMGQ_EINVAL, "prompt", "required");
    refused(c, "{\"prompt\":\"\",\"model\":\"gpt-image-1.5\"}", TODAY, IMGQ_EINVAL, "prompt",
            "empty");
    refused(c, "{\"prompt\":\" \\t\\r\\n \",\"model\":\"gpt-image-1.5\"}", TODAY, IMGQ_EINVAL,
            "prompt", "empty");
    refused(c, "{\"prompt\":42,\"model\":\"gpt-image-1.5\"}", TODAY, IMGQ_EINVAL, "prompt",
            "must be a string");
    refused(c, "{\"prompt\":null,\"model\":\"gpt-image-1.5\"}", TODAY, IMGQ_EINVAL, "prompt",
            "must be a string");
}

/* The limit counts characters: 10 two-byte characters fit a 10-character model (20 bytes). */
static void test_prompt_length_in_characters(void **state)
{
    struct imgq_job_spec s;
    parse_ok(small(state),
             "{\"prompt\":\"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3"
             "\xa9\xc3\xa9\",\"model\":\"tiny\"}",
             TODAY, &s, NULL, 0);
    assert_int_equal(strlen(s.prompt), 20);
    imgq_job_spec_clear(&s);
    /* Four-byte characters: 10 emoji = 40 bytes, still 10 characters. */
    parse_ok(small(state),
             "{\"prompt\":\"\\ud83d\\ude00\\ud83d\\ude00\\ud83d\\ude00\\ud83d\\ude00\\ud83d\\ude00"
             "\\ud83d\\ude00\\ud83d\\ude00\\ud83d\\ude00\\ud83d\\ude00\\ud83d\\ude00\","
             "\"model\":\"tiny\"}",
             TODAY, &s, NULL, 0);
    assert_int_equal(strlen(s.prompt), 40);
    imgq_job_spec_clear(&s);
    refused(small(state),
            "{\"prompt\":\"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3"
            "\xa9\xc3\xa9\xc3\xa9\",\"model\":\"tiny\"}",
            TODAY, IMGQ_EINVAL, "prompt", "has 11 characters; model 'tiny' takes at most 10");

    /* The shipped 32,000-character limit, with 2-byte characters (64,000 bytes). */
    size_t nchars = 32000, cap = 64 + 2 * (nchars + 1);
    char *text = malloc(cap);
    assert_non_null(text);
    for (int round = 0; round < 2; round++) {
        size_t o = (size_t)snprintf(text, cap, "{\"prompt\":\"");
        for (size_t i = 0; i < nchars + (size_t)round; i++) {
            text[o++] = '\xc3';
            text[o++] = '\xa9';
        }
        snprintf(text + o, cap - o, "\",\"model\":\"gpt-image-1.5\"}");
        if (round == 0) {
            parse_ok(cat(state), text, TODAY, &s, NULL, 0);
            assert_int_equal(strlen(s.prompt), 64000);
            imgq_job_spec_clear(&s);
        } else {
            refused(cat(state), text, TODAY, IMGQ_EINVAL, "prompt",
                    "has 32001 characters; model 'gpt-image-1.5' takes at most 32000");
        }
    }
    free(text);
}

static void test_model_refusals(void **state)
{
    const imgq_catalog *c = cat(state);
    refused(c, "{\"prompt\":\"a\"}", TODAY, IMGQ_EINVAL, "model", "required");
    refused(c, "{\"prompt\":\"a\",\"model\":7}", TODAY, IMGQ_EINVAL, "model", "must be a string");
    refused(c, "{\"prompt\":\"a\",\"model\":\"gpt-image-9\"}", TODAY, IMGQ_EINVAL, "model",
            "'gpt-image-9' is not in the catalog (version 2026-11-22)");
    refused(c, "{\"prompt\":\"a\",\"model\":\"imagen-3\"}", TODAY, IMGQ_EINVAL, "model",
            "'imagen-3' is served by the imagen-predict API, which this imgq build cannot call "
            "yet");
    assert_true(imgq_provider_api_supported("openai-images"));
    assert_true(imgq_provider_api_supported("gemini-generate-content"));
    assert_true(imgq_provider_api_supported("seedream"));
    assert_true(imgq_provider_api_supported("dashscope"));
    assert_false(imgq_provider_api_supported("imagen-predict"));
    assert_false(imgq_provider_api_supported(NULL));
}

static void test_shape_refusals(void **state)
{
    const imgq_catalog *c = cat(state);
    refused(c, "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\",\"n\":0}", TODAY, IMGQ_EINVAL, "n",
            "0 is out of range for model 'gpt-image-1.5' (1 to 10)");
    refused(c, "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\",\"n\":11}", TODAY, IMGQ_EINVAL, "n",
            "11 is out of range");
    refused(c, "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\",\"n\":-3}", TODAY, IMGQ_EINVAL, "n",
            "out of range");
    refused(small(state), "{\"prompt\":\"a\",\"model\":\"tiny\",\"n\":3}", TODAY, IMGQ_EINVAL, "n",
            "(1 to 2)");
    refused(c, "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\",\"n\":\"2\"}", TODAY, IMGQ_EINVAL,
            "n", "must be an integer");
    refused(c, "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\",\"n\":1.5}", TODAY, IMGQ_EINVAL, "n",
            "must be an integer");

    refused(c, "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\",\"size\":\"512x512\"}", TODAY,
            IMGQ_EINVAL, "size",
            "'512x512' is not allowed for model 'gpt-image-1.5' (allowed: 1024x1024, "
            "1024x1536, 1536x1024)");
    refused(c, "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\",\"size\":\"auto\"}", TODAY,
            IMGQ_EINVAL, "size", "not allowed");
    refused(c, "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\",\"size\":1024}", TODAY, IMGQ_EINVAL,
            "size", "must be a string");

    refused(c, "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\",\"quality\":\"hd\"}", TODAY,
            IMGQ_EINVAL, "quality",
            "'hd' is not allowed for model 'gpt-image-1.5' (allowed: low, medium, high, auto)");

    refused(c,
            "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\",\"output_format\":\"jpeg\","
            "\"background\":\"transparent\"}",
            TODAY, IMGQ_EINVAL, "output_format", "'jpeg' has no transparency");
    refused(c, "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\",\"output_format\":\"gif\"}", TODAY,
            IMGQ_EINVAL, "output_format", "webp");
    refused(c, "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\",\"output_format\":\"gif\"}", TODAY,
            IMGQ_EINVAL, "output_format", "'gif' is not one of: webp, png");
    refused(c, "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\",\"output_compression\":101}", TODAY,
            IMGQ_EINVAL, "output_compression", "0 to 100");
    refused(c, "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\",\"output_compression\":\"9\"}", TODAY,
            IMGQ_EINVAL, "output_compression", "0 to 100");
    refused(c, "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\",\"background\":\"purple\"}", TODAY,
            IMGQ_EINVAL, "background", "'purple' is not one of: transparent, opaque, auto");
    refused(c, "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\",\"moderation\":\"none\"}", TODAY,
            IMGQ_EINVAL, "moderation", "'none' is not one of: low, auto");
    refused(c, "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\",\"user\":5}", TODAY, IMGQ_EINVAL,
            "user", "must be a string");
}

static void test_routing_and_ownership_refusals(void **state)
{
    const imgq_catalog *c = cat(state);
    refused(c, "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\",\"priority\":\"urgent\"}", TODAY,
            IMGQ_EINVAL, "priority", "\"high\", \"normal\" or \"low\"");
    refused(c, "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\",\"priority\":0}", TODAY, IMGQ_EINVAL,
            "priority", "\"high\"");
    refused(c, "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\",\"route\":\"cheapest\"}", TODAY,
            IMGQ_EINVAL, "route", "'cheapest' is not a route of the catalog");
    refused(c, "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\",\"team\":\"bad team!\"}", TODAY,
            IMGQ_EINVAL, "team", "'bad team!'");
    refused(c, "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\",\"max_attempts\":0}", TODAY,
            IMGQ_EINVAL, "max_attempts", "1 to 100");
    refused(c, "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\",\"max_attempts\":101}", TODAY,
            IMGQ_EINVAL, "max_attempts", "1 to 100");
    refused(c, "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\",\"id\":\"\"}", TODAY, IMGQ_EINVAL,
            "id", "1 to 128 characters");
    refused(c, "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\",\"id\":\"a\\nb\"}", TODAY,
            IMGQ_EINVAL, "id", "control characters");
    refused(c, "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\",\"id\":17}", TODAY, IMGQ_EINVAL, "id",
            "must be a string");
}

static void test_unknown_field(void **state)
{
    refused(cat(state), "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\",\"promt\":\"b\"}", TODAY,
            IMGQ_EINVAL, "promt", "unknown field");
    refused(cat(state),
            "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\",\"response_format\":\"url\"}", TODAY,
            IMGQ_EINVAL, "response_format", "unknown field");
    /* An unknown field is reported even when other fields are also wrong. */
    refused(cat(state), "{\"model\":\"nope\",\"guidance\":1}", TODAY, IMGQ_EINVAL, "guidance",
            "unknown field");
}

/* Knobs only some models have are refused at submit, naming the model. */
/* max_generations: 1..100, stored on the spec and read back; absent means no cap. */
static void test_max_generations(void **state)
{
    const imgq_catalog *c = cat(state);
    struct imgq_job_spec s;
    char warn[256];
    parse_ok(c, "{\"prompt\":\"a\",\"model\":\"gpt-image-1-mini\",\"max_generations\":3}", TODAY,
             &s, warn, sizeof warn);
    assert_int_equal(s.max_generations, 3);
    char *json = imgq_job_spec_to_json(&s);
    assert_non_null(strstr(json, "\"max_generations\":3"));
    struct imgq_job_spec back;
    assert_int_equal(imgq_job_spec_from_json(json, &back), 0);
    assert_int_equal(back.max_generations, 3);
    imgq_job_spec_clear(&back);
    free(json);
    imgq_job_spec_clear(&s);
    parse_ok(c, "{\"prompt\":\"a\",\"model\":\"gpt-image-1-mini\"}", TODAY, &s, warn, sizeof warn);
    assert_int_equal(s.max_generations, 0);
    json = imgq_job_spec_to_json(&s);
    assert_null(strstr(json, "max_generations"));
    free(json);
    imgq_job_spec_clear(&s);
    refused(c, "{\"prompt\":\"a\",\"model\":\"gpt-image-1-mini\",\"max_generations\":0}", TODAY,
            IMGQ_EINVAL, "max_generations", "from 1 to 100");
    refused(c, "{\"prompt\":\"a\",\"model\":\"gpt-image-1-mini\",\"max_generations\":\"2\"}", TODAY,
            IMGQ_EINVAL, "max_generations", "integer");
}

/* max_rate_limit_waits: 1..10000, stored on the spec (fail.lua reads it) and read back. */
static void test_max_rate_limit_waits(void **state)
{
    const imgq_catalog *c = cat(state);
    struct imgq_job_spec s;
    parse_ok(c, "{\"prompt\":\"a\",\"model\":\"gpt-image-1-mini\",\"max_rate_limit_waits\":7}",
             TODAY, &s, NULL, 0);
    assert_int_equal(s.max_rate_limit_waits, 7);
    char *json = imgq_job_spec_to_json(&s);
    assert_non_null(strstr(json, "\"max_rate_limit_waits\":7"));
    struct imgq_job_spec back;
    assert_int_equal(imgq_job_spec_from_json(json, &back), 0);
    assert_int_equal(back.max_rate_limit_waits, 7);
    imgq_job_spec_clear(&back);
    free(json);
    imgq_job_spec_clear(&s);
    refused(c, "{\"prompt\":\"a\",\"model\":\"gpt-image-1-mini\",\"max_rate_limit_waits\":0}",
            TODAY, IMGQ_EINVAL, "max_rate_limit_waits", "from 1 to 10000");
    refused(c, "{\"prompt\":\"a\",\"model\":\"gpt-image-1-mini\",\"max_rate_limit_waits\":1.5}",
            TODAY, IMGQ_EINVAL, "max_rate_limit_waits", "integer");
}

static void test_knob_gates(void **state)
{
    const imgq_catalog *c = cat(state);
    refused(c, "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\",\"seed\":7}", TODAY, IMGQ_EINVAL,
            "seed", "model 'gpt-image-1.5' has no seed setting");
    refused(c,
            "{\"prompt\":\"a\",\"model\":\"gemini-2.5-flash-image\","
            "\"negative_prompt\":\"blur\"}",
            TODAY, IMGQ_EINVAL, "negative_prompt",
            "model 'gemini-2.5-flash-image' takes no negative prompt");
    refused(c, "{\"prompt\":\"a\",\"model\":\"seedream-4-0\",\"seed\":-1}", TODAY, IMGQ_EINVAL,
            "seed", "from 0 to 2147483647");
    refused(c, "{\"prompt\":\"a\",\"model\":\"seedream-4-0\",\"background\":\"transparent\"}",
            TODAY, IMGQ_EINVAL, "background", "cannot make a transparent background");
    struct imgq_job_spec s;
    parse_ok(c, "{\"prompt\":\"a\",\"model\":\"seedream-4-0\",\"seed\":42}", TODAY, &s, NULL, 0);
    assert_true(s.has_seed);
    assert_int_equal(s.seed, 42);
    char *json = imgq_job_spec_to_json(&s);
    struct imgq_job_spec back;
    assert_int_equal(imgq_job_spec_from_json(json, &back), 0);
    assert_true(back.has_seed);
    assert_int_equal(back.seed, 42);
    free(json);
    imgq_job_spec_clear(&back);
    imgq_job_spec_clear(&s);
    /* "model": "auto" with a seed goes to a model that has one. */
    parse_ok(c, "{\"prompt\":\"a\",\"model\":\"auto\",\"quality\":\"medium\",\"seed\":3}", TODAY,
             &s, NULL, 0);
    assert_string_equal(s.model, "seedream-4-0");
    imgq_job_spec_clear(&s);
}

static void test_webhook_refusals(void **state)
{
    const imgq_catalog *c = cat(state);
    struct imgq_job_spec s;
    parse_ok(
        c, "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\",\"webhook\":\"http://10.0.0.1:8080/h\"}",
        TODAY, &s, NULL, 0);
    assert_string_equal(s.webhook, "http://10.0.0.1:8080/h");
    imgq_job_spec_clear(&s);
    static const char *const bad[] = {"ftp://example.com/h", "javascript:alert(1)",
                                      "example.com/hook", "", "HTTPS:/x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[256];
        snprintf(text, sizeof text,
                 "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\",\"webhook\":\"%s\"}", bad[i]);
        refused(c, text, TODAY, IMGQ_EINVAL, "webhook", "http:// or https:// URL");
    }
    refused(c, "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\",\"webhook\":[]}", TODAY, IMGQ_EINVAL,
            "webhook", "must be a string");
    /* Longer than 2048 bytes. */
    char *text = malloc(4096);
    assert_non_null(text);
    int o = snprintf(text, 4096,
                     "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\",\"webhook\":"
                     "\"https://example.com/");
    memset(text + o, 'p', 2040);
    snprintf(text + o + 2040, 4096 - (size_t)o - 2040, "\"}");
    refused(c, text, TODAY, IMGQ_EINVAL, "webhook", "at most 2048 bytes");
    free(text);
}

/* ---- pipelines ------------------------------------------------------------------------------ */

#define PIPE_JOB(pipe)                                                                             \
    "{\"prompt\":\"a "                                                                             \
    "chair\",\"size\":\"1024x1024\",\"model\":\"gpt-image-1.5\",\"pipeline\":" pipe "}"

static void test_pipeline(void **state)
{
    const imgq_catalog *c = cat(state);
    struct imgq_job_spec s, st;
    struct imgq_job_problem why;
    /* The refine object's model and quality become the job's; the pipeline is normalised. */
    parse_ok(c,
             PIPE_JOB("{\"draft\":{\"model\":\"gpt-image-1-mini\",\"n\":3,\"quality\":\"low\"},"
                      "\"select\":{\"mode\":\"auto\"},"
                      "\"refine\":{\"model\":\"gpt-image-1.5\",\"quality\":\"high\"}}"),
             TODAY, &s, NULL, 0);
    assert_string_equal(s.model, "gpt-image-1.5");
    assert_string_equal(s.quality, "high");
    assert_string_equal(imgq_job_pipeline_mode(&s), "auto");
    char *text = imgq_job_spec_to_json(&s);
    assert_contains(text, "\"pipeline\":{");
    assert_contains(text, "\"use_draft_as_reference\":true");
    assert_contains(text, "\"timeout_s\":60");
    /* It survives the trip through Redis. */
    struct imgq_job_spec back;
    assert_int_equal(imgq_job_spec_from_json(text, &back), 0);
    assert_true(json_equal(back.pipeline, s.pipeline));
    imgq_job_spec_clear(&back);
    free(text);
    /* The draft stage: the draft's model, n and quality, no pipeline, no webhook, no id. */
    assert_int_equal(imgq_job_pipeline_stage(c, &s, "draft", NULL, TODAY, &st, &why), 0);
    assert_string_equal(st.model, "gpt-image-1-mini");
    assert_int_equal(st.n, 3);
    assert_string_equal(st.quality, "low");
    assert_null(st.pipeline);
    assert_int_equal(st.nrefs, 0);
    imgq_job_spec_clear(&st);
    /* The refine stage: the chosen draft as its one reference. */
    if (imgq_job_pipeline_stage(c, &s, "refine", "s3://imgq-drafts/images/x.webp", TODAY, &st,
                                &why) != 0)
        fail_msg("refine stage refused: %s: %s", why.field, why.reason);
    assert_string_equal(st.model, "gpt-image-1.5");
    assert_int_equal(st.n, 1);
    assert_int_equal(st.nrefs, 1);
    assert_string_equal(st.refs[0], "s3://imgq-drafts/images/x.webp");
    assert_null(st.pipeline);
    imgq_job_spec_clear(&st);
    imgq_job_spec_clear(&s);

    /* Prompt-only refine takes no reference. */
    parse_ok(
        c,
        PIPE_JOB("{\"draft\":{\"model\":\"gpt-image-1-mini\"},\"select\":{\"mode\":\"manual\"},"
                 "\"refine\":{\"use_draft_as_reference\":false}}"),
        TODAY, &s, NULL, 0);
    assert_int_equal(imgq_job_pipeline_stage(c, &s, "refine", "s3://imgq-drafts/images/x.webp",
                                             TODAY, &st, &why),
                     0);
    assert_int_equal(st.nrefs, 0);
    imgq_job_spec_clear(&st);
    assert_int_equal(imgq_job_pipeline_stage(c, &s, "draft", NULL, TODAY, &st, &why), 0);
    assert_int_equal(st.n, 4); /* the default number of drafts */
    imgq_job_spec_clear(&st);
    imgq_job_spec_clear(&s);
    /* A job without a pipeline has no stages. */
    parse_ok(c, "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\"}", TODAY, &s, NULL, 0);
    assert_int_equal(imgq_job_pipeline_stage(c, &s, "draft", NULL, TODAY, &st, &why), IMGQ_EINVAL);
    assert_null(imgq_job_pipeline_mode(&s));
    imgq_job_spec_clear(&s);
}

static void test_pipeline_refusals(void **state)
{
    const imgq_catalog *c = cat(state);
    static const struct {
        const char *pipe, *field, *needle;
    } bad[] = {
        {"[]", "pipeline", "must be an object"},
        {"{\"draft\":{\"model\":\"gpt-image-1-mini\"},\"select\":{\"mode\":\"auto\"},\"x\":1}",
         "pipeline", "unknown field 'x'"},
        {"{\"select\":{\"mode\":\"auto\"}}", "pipeline.draft", "is required"},
        {"{\"draft\":{\"n\":2},\"select\":{\"mode\":\"auto\"}}", "pipeline.draft.model",
         "is required"},
        {"{\"draft\":{\"model\":\"gpt-image-1-mini\",\"n\":0},\"select\":{\"mode\":\"auto\"}}",
         "pipeline.draft.n", "from 1 to 8"},
        {"{\"draft\":{\"model\":\"gpt-image-1-mini\",\"seed\":1},\"select\":{\"mode\":\"auto\"}}",
         "pipeline.draft", "unknown field 'seed'"},
        {"{\"draft\":{\"model\":\"gpt-image-1-mini\",\"quality\":\"ultra\"},"
         "\"select\":{\"mode\":\"auto\"}}",
         "pipeline.draft", "quality: 'ultra' is not allowed"},
        {"{\"draft\":{\"model\":\"no-such-model\"},\"select\":{\"mode\":\"auto\"}}",
         "pipeline.draft", "model:"},
        {"{\"draft\":{\"model\":\"gpt-image-1-mini\"}}", "pipeline.select", "is required"},
        {"{\"draft\":{\"model\":\"gpt-image-1-mini\"},\"select\":{\"mode\":\"vote\"}}",
         "pipeline.select.mode", "auto, webhook or manual"},
        {"{\"draft\":{\"model\":\"gpt-image-1-mini\"},\"select\":{\"mode\":\"webhook\"}}",
         "pipeline.select.url", "is required with mode webhook"},
        {"{\"draft\":{\"model\":\"gpt-image-1-mini\"},"
         "\"select\":{\"mode\":\"webhook\",\"url\":\"ftp://x/y\"}}",
         "pipeline.select.url", "http:// or https://"},
        {"{\"draft\":{\"model\":\"gpt-image-1-mini\"},"
         "\"select\":{\"mode\":\"auto\",\"url\":\"https://x/y\"}}",
         "pipeline.select.url", "only for mode webhook"},
        {"{\"draft\":{\"model\":\"gpt-image-1-mini\"},"
         "\"select\":{\"mode\":\"webhook\",\"url\":\"https://x/y\",\"timeout_s\":301}}",
         "pipeline.select.timeout_s", "from 1 to 300"},
        {"{\"draft\":{\"model\":\"gpt-image-1-mini\"},\"select\":{\"mode\":\"auto\"},"
         "\"refine\":{\"use_draft_as_reference\":\"yes\"}}",
         "pipeline.refine.use_draft_as_reference", "true or false"},
        {"{\"draft\":{\"model\":\"gpt-image-1-mini\"},\"select\":{\"mode\":\"auto\"},"
         "\"refine\":{\"seed\":3}}",
         "pipeline.refine", "unknown field 'seed'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[1024];
        snprintf(text, sizeof text,
                 "{\"prompt\":\"a chair\",\"size\":\"1024x1024\",\"model\":\"gpt-image-1.5\","
                 "\"pipeline\":%s}",
                 bad[i].pipe);
        refused(c, text, TODAY, IMGQ_EINVAL, bad[i].field, bad[i].needle);
    }
    /* A pipeline job takes no references of its own, and names its models. */
    refused(c,
            "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\",\"images\":[\"s3://b/k.png\"],"
            "\"pipeline\":{\"draft\":{\"model\":\"gpt-image-1-mini\"},\"select\":{\"mode\":"
            "\"auto\"}}}",
            TODAY, IMGQ_EINVAL, "pipeline", "no images or mask");
    refused(c,
            "{\"prompt\":\"a\",\"model\":\"auto\",\"pipeline\":{\"draft\":{\"model\":"
            "\"gpt-image-1-mini\"},\"select\":{\"mode\":\"auto\"}}}",
            TODAY, IMGQ_EINVAL, "model", "names its models");
}

static void test_metadata_refusals(void **state)
{
    const imgq_catalog *c = cat(state);
    refused(c, "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\",\"metadata\":\"sku-1\"}", TODAY,
            IMGQ_EINVAL, "metadata", "must be a JSON object");
    refused(c, "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\",\"metadata\":[1,2]}", TODAY,
            IMGQ_EINVAL, "metadata", "must be a JSON object");
    refused(c, "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\",\"metadata\":7}", TODAY, IMGQ_EINVAL,
            "metadata", "must be a JSON object");

    /* 16 KiB of compact JSON is the limit. */
    size_t cap = 20000;
    char *text = malloc(cap);
    assert_non_null(text);
    for (int round = 0; round < 2; round++) {
        /* {"k":"vvv..."} compact = 8 + len bytes; 16384 exactly fits, 16385 does not. */
        size_t vlen = 16384 - 8 + (size_t)round;
        int o = snprintf(text, cap,
                         "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\",\"metadata\":{\"k\":\"");
        memset(text + o, 'v', vlen);
        snprintf(text + o + vlen, cap - (size_t)o - vlen, "\"}}");
        if (round == 0) {
            struct imgq_job_spec s;
            parse_ok(c, text, TODAY, &s, NULL, 0);
            assert_int_equal(strlen(json_string_value(json_object_get(s.metadata, "k"))), vlen);
            imgq_job_spec_clear(&s);
        } else {
            refused(c, text, TODAY, IMGQ_EINVAL, "metadata", "is 16385 bytes; the limit is 16384");
        }
    }
    free(text);
}

static void test_json_refusals(void **state)
{
    const imgq_catalog *c = cat(state);
    refused(c, "{\"prompt\":\"a\",\"prompt\":\"b\",\"model\":\"gpt-image-1.5\"}", TODAY,
            IMGQ_EPARSE, "(json)", "duplicate");
    refused(c, "[{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\"}]", TODAY, IMGQ_EPARSE, "(json)",
            "a job must be a JSON object");
    /* Scalars fail in the JSON parser itself (jansson wants an array or object on top). */
    refused(c, "\"a cat\"", TODAY, IMGQ_EPARSE, "(json)", "'[' or '{' expected");
    refused(c, "42", TODAY, IMGQ_EPARSE, "(json)", "'[' or '{' expected");
    refused(c, "null", TODAY, IMGQ_EPARSE, "(json)", "'[' or '{' expected");
    refused(c, "{\"prompt\":\"a\",", TODAY, IMGQ_EPARSE, "(json)", "column");
    refused(c, "", TODAY, IMGQ_EPARSE, "(json)", NULL);
    refused(c, "{\"prompt\":\"a\"} {\"prompt\":\"b\"}", TODAY, IMGQ_EPARSE, "(json)", NULL);
}

/* ---- capability gates: sizes, guidance, references ---------------------------------------- */

static void assert_specs_equal(const struct imgq_job_spec *a, const struct imgq_job_spec *b);

#define JOB(model, rest) "{\"prompt\":\"a\",\"model\":\"" model "\"" rest "}"

static void test_size_rules_at_submit(void **state)
{
    const imgq_catalog *c = cat(state);
    struct imgq_job_spec s;
    parse_ok(c, JOB("gpt-image-2", ",\"size\":\"1920x1088\",\"quality\":\"low\""), TODAY, &s, NULL,
             0);
    assert_string_equal(s.size, "1920x1088");
    assert_int_equal(s.width, 1920);
    assert_int_equal(s.height, 1088);
    imgq_job_spec_clear(&s);
    parse_ok(c, JOB("gpt-image-2", ",\"size\":\"3840x2160\""), TODAY, &s, NULL, 0);
    imgq_job_spec_clear(&s);
    parse_ok(c, JOB("seedream-4-5", ",\"size\":\"1920x1920\""), TODAY, &s, NULL, 0);
    imgq_job_spec_clear(&s);
    parse_ok(c, JOB("qwen-image-2.0", ",\"size\":\"512x2048\""), TODAY, &s, NULL, 0);
    imgq_job_spec_clear(&s);
    parse_ok(c, JOB("flux-1.1-pro", ",\"size\":\"1440x256\""), TODAY, &s, NULL, 0);
    imgq_job_spec_clear(&s);

    refused(c, JOB("gpt-image-2", ",\"size\":\"1000x1000\""), TODAY, IMGQ_EINVAL, "size",
            "gpt-image-2 takes sizes whose sides are multiples of 16 (1000x1000 is not)");
    refused(c, JOB("gpt-image-2", ",\"size\":\"3856x2160\""), TODAY, IMGQ_EINVAL, "size",
            "gpt-image-2 takes sides of at most 3840 pixels (3856x2160 is not)");
    refused(c, JOB("gpt-image-2", ",\"size\":\"3088x1024\""), TODAY, IMGQ_EINVAL, "size",
            "gpt-image-2 takes aspect ratios from 1:3 to 3:1 (3088x1024 is not)");
    refused(c, JOB("gpt-image-2", ",\"size\":\"auto\""), TODAY, IMGQ_EINVAL, "size",
            "'auto' is not WxH (model 'gpt-image-2' takes 1024x1024, 1024x1536, 1536x1024, "
            "2048x2048, or any WxH within its size rule)");
    refused(c, JOB("seedream-4-5", ",\"size\":\"1024x1024\""), TODAY, IMGQ_EINVAL, "size",
            "seedream-4-5 needs at least 3,686,400 pixels (1920x1920); 1024x1024 has 1,048,576");
    refused(c, JOB("seedream-4-0", ",\"size\":\"1024x1000\""), TODAY, IMGQ_EINVAL, "size",
            "seedream-4-0 needs at least 1,048,576 pixels (1024x1024); 1024x1000 has 1,024,000");
    refused(c, JOB("qwen-image-2.0", ",\"size\":\"2049x1024\""), TODAY, IMGQ_EINVAL, "size",
            "qwen-image-2.0 takes sides from 512 to 2048 pixels (2049x1024 is not)");
    refused(c, JOB("flux-1.1-pro", ",\"size\":\"1000x1024\""), TODAY, IMGQ_EINVAL, "size",
            "flux-1.1-pro takes sizes whose sides are multiples of 32 (1000x1024 is not)");
}

static void test_guidance(void **state)
{
    const imgq_catalog *c = cat(state);
    struct imgq_job_spec s;
    static const char *const ok[] = {JOB("flux-1.1-pro", ",\"guidance_scale\":1.5"),
                                     JOB("flux-1.1-pro", ",\"guidance_scale\":5"),
                                     JOB("flux-1.1-pro", ",\"guidance_scale\":3.25"),
                                     JOB("fal-flux-dev", ",\"guidance_scale\":1"),
                                     JOB("fal-flux-dev", ",\"guidance_scale\":20.0"),
                                     JOB("sd-3.5-large", ",\"guidance_scale\":7")};
    static const double want[] = {1.5, 5, 3.25, 1, 20, 7};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        parse_ok(c, ok[i], TODAY, &s, NULL, 0);
        assert_true(s.has_guidance);
        assert_true(s.guidance_scale == want[i]);
        imgq_job_spec_clear(&s);
    }
    parse_ok(c, JOB("flux-1.1-pro", ",\"guidance_scale\":null"), TODAY, &s, NULL, 0);
    assert_false(s.has_guidance);
    char *json = imgq_job_spec_to_json(&s);
    assert_null(strstr(json, "guidance"));
    free(json);
    imgq_job_spec_clear(&s);

    refused(c, JOB("flux-1.1-pro", ",\"guidance_scale\":1.49"), TODAY, IMGQ_EINVAL,
            "guidance_scale", "1.49 is out of range for model 'flux-1.1-pro' (1.5 to 5)");
    refused(c, JOB("flux-1.1-pro", ",\"guidance_scale\":5.01"), TODAY, IMGQ_EINVAL,
            "guidance_scale", "5.01 is out of range for model 'flux-1.1-pro' (1.5 to 5)");
    refused(c, JOB("fal-flux-dev", ",\"guidance_scale\":20.5"), TODAY, IMGQ_EINVAL,
            "guidance_scale", "20.5 is out of range for model 'fal-flux-dev' (1 to 20)");
    refused(c, JOB("gpt-image-2", ",\"guidance_scale\":3"), TODAY, IMGQ_EINVAL, "guidance_scale",
            "model 'gpt-image-2' has no guidance_scale setting");
    refused(c, JOB("flux-1.1-pro", ",\"guidance_scale\":\"3\""), TODAY, IMGQ_EINVAL,
            "guidance_scale", "must be a number");
    /* "model": "auto" with guidance goes to a model whose range holds it. */
    parse_ok(c, "{\"prompt\":\"a\",\"model\":\"auto\",\"quality\":\"low\",\"guidance_scale\":12}",
             TODAY, &s, NULL, 0);
    assert_string_equal(s.model, "fal-flux-dev");
    imgq_job_spec_clear(&s);
}

/* A data: URI of 'bytes' decoded bytes (padded base64 of zero bytes). */
static char *data_uri(size_t bytes)
{
    size_t b64 = (bytes + 2) / 3 * 4, pad = (3 - bytes % 3) % 3;
    const char *prefix = "data:image/png;base64,";
    char *u = malloc(strlen(prefix) + b64 + 1);
    strcpy(u, prefix);
    memset(u + strlen(prefix), 'A', b64 - pad);
    memset(u + strlen(prefix) + b64 - pad, '=', pad);
    u[strlen(prefix) + b64] = '\0';
    return u;
}

static void test_reference_images(void **state)
{
    const imgq_catalog *c = cat(state);
    struct imgq_job_spec s;
    parse_ok(c,
             JOB("gpt-image-2",
                 ",\"images\":[\"s3://my-bucket/in/a.png\","
                 "\"https://cdn.example.com/b.webp?x=1\",\"http://127.0.0.1:8080/c\","
                 "\"http://localhost/d\",\"http://[::1]:9/e\","
                 "\"data:image/jpeg;base64,/9j/4AAQ\",\"data:image/webp;base64,UklGRg\"],"
                 "\"mask\":\"data:image/png;base64,iVBORw0KGgo=\""),
             TODAY, &s, NULL, 0);
    assert_int_equal(s.nrefs, 7);
    assert_string_equal(s.refs[0], "s3://my-bucket/in/a.png");
    assert_string_equal(s.refs[6], "data:image/webp;base64,UklGRg");
    assert_string_equal(s.mask, "data:image/png;base64,iVBORw0KGgo=");
    assert_null(s.ref_data);
    /* The worker's fetched bytes are freed with the spec (valgrind). */
    s.ref_data = calloc((size_t)s.nrefs, sizeof *s.ref_data);
    s.ref_data[0].data = malloc(10);
    s.ref_data[0].len = 10;
    s.mask_data = calloc(1, sizeof *s.mask_data);
    s.mask_data->data = malloc(3);
    imgq_job_spec_clear(&s);
    assert_null(s.refs);
    assert_int_equal(s.nrefs, 0);

    parse_ok(c, JOB("gpt-image-2", ",\"images\":[]"), TODAY, &s, NULL, 0);
    assert_int_equal(s.nrefs, 0);
    assert_null(s.refs);
    imgq_job_spec_clear(&s);

    /* Counts: the model's max_references, named. */
    char text[2048];
    size_t o = (size_t)snprintf(text, sizeof text,
                                "{\"prompt\":\"a\",\"model\":\"gpt-image-2\","
                                "\"images\":[");
    for (int i = 0; i < 17; i++)
        o += (size_t)snprintf(text + o, sizeof text - o, "%s\"s3://bkt/%d.png\"", i ? "," : "", i);
    snprintf(text + o, sizeof text - o, "]}");
    refused(c, text, TODAY, IMGQ_EINVAL, "images",
            "model 'gpt-image-2' takes at most 16 reference images (got 17)");
    char *cut = strstr(text, ",\"s3://bkt/16.png\"");
    strcpy(cut, "]}");
    parse_ok(c, text, TODAY, &s, NULL, 0);
    assert_int_equal(s.nrefs, 16);
    imgq_job_spec_clear(&s);
    refused(c,
            JOB("gemini-2.5-flash-image",
                ",\"images\":[\"s3://bkt/1\",\"s3://bkt/2\",\"s3://bkt/3\",\"s3://bkt/4\"]"),
            TODAY, IMGQ_EINVAL, "images",
            "model 'gemini-2.5-flash-image' takes at most 3 reference images (got 4)");
    refused(c, JOB("flux-schnell", ",\"images\":[\"s3://bkt/1\"]"), TODAY, IMGQ_EINVAL, "images",
            "model 'flux-schnell' takes no reference images (it cannot edit)");
    refused(c, JOB("flux-1.1-pro", ",\"images\":[\"s3://bkt/1\"]"), TODAY, IMGQ_EINVAL, "images",
            "model 'flux-1.1-pro' takes no reference images (it cannot edit)");

    /* Forms. */
    static const struct {
        const char *ref, *needle;
    } bad[] = {
        {"\"s3://ab/x.png\"", "is not s3://BUCKET/KEY"},
        {"\"s3://bucket/\"", "is not s3://BUCKET/KEY"},
        {"\"s3://Bucket/x\"", "is not s3://BUCKET/KEY"},
        {"\"s3://bucket\"", "is not s3://BUCKET/KEY"},
        {"\"https:///x.png\"", "has no host"},
        {"\"https://a.example.com/x y.png\"", "space or control character"},
        {"\"http://example.com/x.png\"", "http:// is only for 127.0.0.1, localhost and [::1]"},
        {"\"http://localhost@evil.example/x\"", "http:// is only for"},
        {"\"http://localhost.evil.example/x\"", "http:// is only for"},
        {"\"http://127.0.0.1:80a/x\"", "http:// is only for"},
        {"\"ftp://a.example.com/x\"", "must be s3://BUCKET/KEY, an https:// URL or a data:"},
        {"\"/etc/passwd\"", "must be s3://BUCKET/KEY"},
        {"5", "must be s3://BUCKET/KEY"},
        {"\"data:image/gif;base64,R0lGOD\"", "image/png, image/jpeg or image/webp"},
        {"\"data:image/png,rawbytes\"", "image/png, image/jpeg or image/webp"},
        {"\"data:image/png;base64,\"", "base64 is empty or not valid"},
        {"\"data:image/png;base64,ab!d\"", "base64 is empty or not valid"},
        {"\"data:image/png;base64,abcde\"", "base64 is empty or not valid"},
        {"\"data:image/png;base64,ab=c\"", "base64 is empty or not valid"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(text, sizeof text,
                 "{\"prompt\":\"a\",\"model\":\"gpt-image-2\",\"images\":[\"s3://bkt/ok\",%s]}",
                 bad[i].ref);
        refused(c, text, TODAY, IMGQ_EINVAL, "images[1]", bad[i].needle);
        snprintf(text, sizeof text,
                 "{\"prompt\":\"a\",\"model\":\"gpt-image-2\",\"images\":[\"s3://bkt/ok\"],"
                 "\"mask\":%s}",
                 bad[i].ref);
        refused(c, text, TODAY, IMGQ_EINVAL, "mask", bad[i].needle);
    }
    refused(c, JOB("gpt-image-2", ",\"images\":\"s3://bkt/x\""), TODAY, IMGQ_EINVAL, "images",
            "must be an array");

    /* Mask: needs images and the mask capability. */
    refused(c, JOB("gpt-image-2", ",\"mask\":\"s3://bkt/m.png\""), TODAY, IMGQ_EINVAL, "mask",
            "needs images (the mask applies to the first one)");
    refused(c, JOB("seedream-4-0", ",\"images\":[\"s3://bkt/1\"],\"mask\":\"s3://bkt/m.png\""),
            TODAY, IMGQ_EINVAL, "mask", "model 'seedream-4-0' takes no mask");

    /* "model": "auto" with references counts them and needs edit; a mask needs gpt-image. */
    parse_ok(c,
             "{\"prompt\":\"a\",\"model\":\"auto\",\"quality\":\"medium\",\"images\":"
             "[\"s3://bkt/1\",\"s3://bkt/2\"]}",
             TODAY, &s, NULL, 0);
    assert_string_equal(s.model, "seedream-4-0");
    assert_int_equal(s.nrefs, 2);
    imgq_job_spec_clear(&s);
    parse_ok(c,
             "{\"prompt\":\"a\",\"model\":\"auto\",\"quality\":\"medium\",\"images\":"
             "[\"s3://bkt/1\"],\"mask\":\"s3://bkt/m\"}",
             TODAY, &s, NULL, 0);
    assert_string_equal(s.model, "gpt-image-1.5");
    imgq_job_spec_clear(&s);
}

/* data: URIs: at most 4 MiB decoded per job, references and mask together. */
static void test_inline_cap(void **state)
{
    const imgq_catalog *c = cat(state);
    const size_t cap = 4u << 20;
    char *full = data_uri(cap), *one = data_uri(1), *text = malloc(cap * 2);
    struct imgq_job_spec s;
    snprintf(text, cap * 2, "{\"prompt\":\"a\",\"model\":\"gpt-image-2\",\"images\":[\"%s\"]}",
             full);
    parse_ok(c, text, TODAY, &s, NULL, 0);
    assert_int_equal(s.nrefs, 1);
    imgq_job_spec_clear(&s);
    snprintf(text, cap * 2,
             "{\"prompt\":\"a\",\"model\":\"gpt-image-2\",\"images\":[\"%s\",\"%s\"]}", full, one);
    refused(c, text, TODAY, IMGQ_EINVAL, "images",
            "data: URIs hold 4194305 bytes decoded; a job carries at most 4194304 bytes (4 MiB) "
            "inline: use s3:// or https:// references");
    snprintf(text, cap * 2,
             "{\"prompt\":\"a\",\"model\":\"gpt-image-2\",\"images\":[\"%s\"],\"mask\":\"%s\"}",
             full, one);
    refused(c, text, TODAY, IMGQ_EINVAL, "mask", "4194305 bytes decoded");
    /* URLs do not count. */
    snprintf(text, cap * 2,
             "{\"prompt\":\"a\",\"model\":\"gpt-image-2\",\"images\":[\"%s\",\"s3://bkt/x\"],"
             "\"mask\":\"https://a.example.com/m.png\"}",
             full);
    parse_ok(c, text, TODAY, &s, NULL, 0);
    imgq_job_spec_clear(&s);
    free(full);
    free(one);
    free(text);
}

static void test_from_json_refs_damage(void **state)
{
    static const char *const bad[] = {
        "{\"model\":\"m\",\"prompt\":\"a\",\"n\":1,\"size\":\"1024x1024\","
        "\"output_format\":\"webp\",\"route\":\"list\",\"images\":\"s3://b/k\"}",
        "{\"model\":\"m\",\"prompt\":\"a\",\"n\":1,\"size\":\"1024x1024\","
        "\"output_format\":\"webp\",\"route\":\"list\",\"images\":[\"s3://b/k\",5]}",
        "{\"model\":\"m\",\"prompt\":\"a\",\"n\":1,\"size\":\"1024x1024\","
        "\"output_format\":\"webp\",\"route\":\"list\",\"images\":[\"s3://b/k\"],\"mask\":1}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct imgq_job_spec s;
        assert_int_equal(imgq_job_spec_from_json(bad[i], &s), IMGQ_EINVAL);
        assert_spec_empty(&s);
        assert_null(s.refs);
        assert_null(s.mask);
    }
}

/* The dedup key takes the references and mask as given, and guidance_scale (dedup.h). */
static void test_dedup_key_references(void **state)
{
    static const char *const jobs[] = {
        JOB("gpt-image-2", ""),
        JOB("gpt-image-2", ",\"images\":[\"s3://bkt/1\"]"),
        JOB("gpt-image-2", ",\"images\":[\"s3://bkt/2\"]"),
        JOB("gpt-image-2", ",\"images\":[\"s3://bkt/1\",\"s3://bkt/2\"]"),
        JOB("gpt-image-2", ",\"images\":[\"s3://bkt/2\",\"s3://bkt/1\"]"),
        JOB("gpt-image-2", ",\"images\":[\"s3://bkt/1\"],\"mask\":\"s3://bkt/m\""),
        JOB("gpt-image-2", ",\"images\":[\"s3://bkt/1\",\"s3://bkt/m\"]"),
        JOB("gpt-image-2", ",\"images\":[\"https://a.example.com/1\"]"),
        JOB("flux-1.1-pro", ""),
        JOB("flux-1.1-pro", ",\"guidance_scale\":2.5"),
        JOB("flux-1.1-pro", ",\"guidance_scale\":3"),
    };
    char keys[16][65];
    size_t n = sizeof jobs / sizeof jobs[0];
    for (size_t i = 0; i < n; i++) {
        struct imgq_job_spec s;
        parse_ok(cat(state), jobs[i], TODAY, &s, NULL, 0);
        imgq_dedup_key(&s, 0, keys[i]);
        /* The stored form gives the same key (the worker computes it from there). */
        char *json = imgq_job_spec_to_json(&s);
        struct imgq_job_spec back;
        assert_int_equal(imgq_job_spec_from_json(json, &back), 0);
        char again[65];
        imgq_dedup_key(&back, 0, again);
        assert_string_equal(keys[i], again);
        free(json);
        imgq_job_spec_clear(&back);
        imgq_job_spec_clear(&s);
        for (size_t k = 0; k < i; k++)
            if (strcmp(keys[k], keys[i]) == 0)
                fail_msg("jobs %zu and %zu share a dedup key", k, i);
    }
}

/* ---- retargeting to another model --------------------------------------------------------- */

static void retarget_ok(const imgq_catalog *c, const char *job, const char *model,
                        struct imgq_job_spec *out)
{
    struct imgq_job_spec s;
    struct imgq_job_problem why;
    parse_ok(c, job, TODAY, &s, NULL, 0);
    int rc = imgq_job_retarget(c, &s, model, TODAY, out, &why);
    imgq_job_spec_clear(&s);
    if (rc != 0)
        fail_msg("retarget to %s refused (%d): %s: %s\n  job: %s", model, rc, why.field, why.reason,
                 job);
}

static void retarget_refused(const imgq_catalog *c, const char *job, const char *model,
                             const char *field, const char *reason)
{
    struct imgq_job_spec s, out;
    struct imgq_job_problem why;
    parse_ok(c, job, TODAY, &s, NULL, 0);
    memset(&out, 0x5a, sizeof out);
    int rc = imgq_job_retarget(c, &s, model, TODAY, &out, &why);
    imgq_job_spec_clear(&s);
    if (rc != IMGQ_EINVAL)
        fail_msg("retarget to %s: code %d (%s: %s)\n  job: %s", model, rc, why.field, why.reason,
                 job);
    assert_string_equal(why.field, field);
    assert_string_equal(why.reason, reason);
    assert_spec_empty(&out);
}

static void test_retarget(void **state)
{
    const imgq_catalog *c = cat(state);
    struct imgq_job_spec t;

    /* Everything carries over but the model. */
    retarget_ok(c, full_job, "gpt-image-2", &t);
    struct imgq_job_spec orig;
    parse_ok(c, full_job, TODAY, &orig, NULL, 0);
    assert_string_equal(t.model, "gpt-image-2");
    free(orig.model);
    orig.model = strdup("gpt-image-2");
    assert_specs_equal(&orig, &t);
    assert_string_equal(t.quality, "high");
    imgq_job_spec_clear(&orig);
    imgq_job_spec_clear(&t);

    /* References, mask, guidance carry over; an alias does not. */
    retarget_ok(c,
                "{\"prompt\":\"a\",\"model\":\"catalog-default\",\"images\":[\"s3://bkt/1\","
                "\"s3://bkt/2\"],\"mask\":\"s3://bkt/m\"}",
                "gpt-image-2", &t);
    assert_null(t.alias);
    assert_int_equal(t.nrefs, 2);
    assert_string_equal(t.refs[1], "s3://bkt/2");
    assert_string_equal(t.mask, "s3://bkt/m");
    imgq_job_spec_clear(&t);
    retarget_ok(c, JOB("flux-1.1-pro", ",\"guidance_scale\":4.5,\"seed\":3"), "fal-flux-dev", &t);
    assert_true(t.has_guidance && t.guidance_scale == 4.5);
    assert_true(t.has_seed && t.seed == 3);
    assert_null(t.quality);
    imgq_job_spec_clear(&t);

    /* Quality: dropped on a flat model, medium on a model with the knob. */
    retarget_ok(c, JOB("gpt-image-2", ",\"quality\":\"low\",\"size\":\"2048x2048\""),
                "seedream-4-0", &t);
    assert_null(t.quality);
    assert_string_equal(t.size, "2048x2048");
    imgq_job_spec_clear(&t);
    retarget_ok(c, JOB("seedream-4-0", ",\"size\":\"2304x1728\""), "gpt-image-2", &t);
    assert_string_equal(t.quality, "medium");
    imgq_job_spec_clear(&t);
    retarget_ok(c, JOB("gemini-2.5-flash-image", ",\"size\":\"1536x672\""), "gpt-image-2", &t);
    assert_string_equal(t.size, "1536x672");
    imgq_job_spec_clear(&t);

    /* Refusals name the target's limit. */
    retarget_refused(c, JOB("seedream-4-0", ""), "seedream-4-5", "size",
                     "seedream-4-5 needs at least 3,686,400 pixels (1920x1920); 1024x1024 has "
                     "1,048,576");
    retarget_refused(c, JOB("gpt-image-2", ",\"size\":\"1920x1088\""), "gpt-image-1.5", "size",
                     "'1920x1088' is not allowed for model 'gpt-image-1.5' (allowed: 1024x1024, "
                     "1024x1536, 1536x1024)");
    retarget_refused(c, JOB("seedream-4-0", ",\"seed\":5"), "gpt-image-2", "seed",
                     "model 'gpt-image-2' has no seed setting");
    retarget_refused(c, JOB("flux-1.1-pro", ",\"guidance_scale\":2"), "gpt-image-2",
                     "guidance_scale", "model 'gpt-image-2' has no guidance_scale setting");
    retarget_refused(c, JOB("fal-flux-dev", ",\"guidance_scale\":12"), "flux-1.1-pro",
                     "guidance_scale", "12 is out of range for model 'flux-1.1-pro' (1.5 to 5)");
    retarget_refused(c, JOB("gpt-image-2", ",\"n\":10"), "qwen-image-2.0", "n",
                     "10 is out of range for model 'qwen-image-2.0' (1 to 4)");
    retarget_refused(c, JOB("gpt-image-2", ",\"images\":[\"s3://bkt/1\"],\"mask\":\"s3://bkt/m\""),
                     "seedream-4-0", "mask", "model 'seedream-4-0' takes no mask");
    retarget_refused(c, JOB("gpt-image-2", ",\"background\":\"transparent\""), "seedream-4-0",
                     "background", "model 'seedream-4-0' cannot make a transparent background");
    retarget_refused(c, JOB("gpt-image-2", ""), "gpt-image-9", "model",
                     "'gpt-image-9' is not in the catalog (version 2026-11-22)");
    retarget_refused(c, JOB("gpt-image-2", ""), "gpt-image-1", "model",
                     "'gpt-image-1' was shut down on 2026-10-23; use 'gpt-image-1.5' instead");
    retarget_refused(c, JOB("gpt-image-2", ""), "imagen-3", "model",
                     "'imagen-3' is served by the imagen-predict API, which this imgq build "
                     "cannot call yet");

    /* Every shipped fallback serves some listed size of its model. */
    for (size_t i = 0; imgq_catalog_model_at(c, i); i++) {
        const struct imgq_model *m = imgq_catalog_model_at(c, i);
        if (m->shutdown || !imgq_provider_api_supported(m->api))
            continue;
        for (char **f = m->fallbacks; *f; f++) {
            int served = 0;
            for (char **size = m->sizes; *size && !served; size++) {
                char job[256];
                struct imgq_job_spec s;
                struct imgq_job_problem why;
                snprintf(job, sizeof job, "{\"prompt\":\"a\",\"model\":\"%s\",\"size\":\"%s\"}",
                         m->name, *size);
                parse_ok(c, job, TODAY, &s, NULL, 0);
                served = imgq_job_retarget(c, &s, *f, TODAY, &t, &why) == 0;
                if (served)
                    imgq_job_spec_clear(&t);
                imgq_job_spec_clear(&s);
            }
            if (!served)
                fail_msg("fallback %s of %s serves none of its sizes", *f, m->name);
        }
    }
}

/* ---- stored form -------------------------------------------------------------------------- */

static void assert_str_eq_or_null(const char *a, const char *b)
{
    if (!a || !b)
        assert_ptr_equal(a, b);
    else
        assert_string_equal(a, b);
}

static void assert_specs_equal(const struct imgq_job_spec *a, const struct imgq_job_spec *b)
{
    assert_str_eq_or_null(a->id, b->id);
    assert_str_eq_or_null(a->model, b->model);
    assert_str_eq_or_null(a->alias, b->alias);
    assert_str_eq_or_null(a->prompt, b->prompt);
    assert_int_equal(a->n, b->n);
    assert_str_eq_or_null(a->size, b->size);
    assert_int_equal(a->width, b->width);
    assert_int_equal(a->height, b->height);
    assert_str_eq_or_null(a->quality, b->quality);
    assert_str_eq_or_null(a->output_format, b->output_format);
    assert_int_equal(a->output_compression, b->output_compression);
    assert_str_eq_or_null(a->background, b->background);
    assert_str_eq_or_null(a->moderation, b->moderation);
    assert_str_eq_or_null(a->user, b->user);
    assert_str_eq_or_null(a->route, b->route);
    assert_str_eq_or_null(a->team, b->team);
    assert_str_eq_or_null(a->webhook, b->webhook);
    assert_int_equal(a->priority, b->priority);
    assert_int_equal(a->max_attempts, b->max_attempts);
    assert_int_equal(a->has_seed, b->has_seed);
    assert_int_equal(a->seed, b->seed);
    assert_str_eq_or_null(a->negative_prompt, b->negative_prompt);
    assert_int_equal(a->has_guidance, b->has_guidance);
    assert_true(a->guidance_scale == b->guidance_scale);
    assert_int_equal(a->nrefs, b->nrefs);
    for (int i = 0; i < a->nrefs; i++)
        assert_string_equal(a->refs[i], b->refs[i]);
    assert_str_eq_or_null(a->mask, b->mask);
    if (!a->metadata || !b->metadata)
        assert_ptr_equal(a->metadata, b->metadata);
    else
        assert_true(json_equal(a->metadata, b->metadata));
}

static void test_round_trip(void **state)
{
    static const char *const jobs[] = {
        full_job,
        "{\"prompt\":\"a\",\"model\":\"gpt-image-2\",\"size\":\"1920x1088\","
        "\"images\":[\"s3://bucket-1/in/a.png\",\"https://cdn.example.com/b.webp\","
        "\"data:image/png;base64,iVBORw0KGgo=\"],\"mask\":\"s3://bucket-1/in/mask.png\"}",
        "{\"prompt\":\"a\",\"model\":\"flux-1.1-pro\",\"guidance_scale\":2.7,\"seed\":9}",
        "{\"prompt\":\"a\",\"model\":\"fal-flux-dev\",\"guidance_scale\":0.1e2,"
        "\"size\":\"1440x256\"}",
        "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\"}",
        "{\"prompt\":\"  two  spaces \",\"model\":\"catalog-default\",\"priority\":\"low\"}",
    };
    for (size_t i = 0; i < sizeof jobs / sizeof jobs[0]; i++) {
        struct imgq_job_spec a, b;
        parse_ok(cat(state), jobs[i], TODAY, &a, NULL, 0);
        char *json = imgq_job_spec_to_json(&a);
        assert_non_null(json);
        /* Compact and ASCII-only, as it is stored in Redis. */
        for (const char *p = json; *p; p++)
            assert_true((unsigned char)*p < 0x80);
        assert_int_equal(imgq_job_spec_from_json(json, &b), 0);
        assert_specs_equal(&a, &b);
        /* The stored form of the stored form is the same text. */
        char *again = imgq_job_spec_to_json(&b);
        assert_string_equal(json, again);
        free(again);
        free(json);
        imgq_job_spec_clear(&a);
        imgq_job_spec_clear(&b);
    }

    /* The full job's text, field by field. */
    struct imgq_job_spec a;
    parse_ok(cat(state), full_job, TODAY, &a, NULL, 0);
    char *json = imgq_job_spec_to_json(&a);
    json_t *o = json_loads(json, 0, NULL);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "priority")), "high");
    assert_int_equal(json_integer_value(json_object_get(o, "max_attempts")), 7);
    assert_int_equal(json_integer_value(json_object_get(o, "n")), 4);
    assert_string_equal(json_string_value(json_object_get(o, "route")), "treerouter-enterprise");
    assert_null(json_object_get(o, "alias"));
    json_decref(o);
    free(json);
    imgq_job_spec_clear(&a);

    /* A job of defaults is stored without them (a waiting job is mostly its spec), and
     * imgq_job_stored_defaults shows them again. */
    parse_ok(cat(state), "{\"prompt\":\"a\",\"model\":\"gpt-image-1.5\"}", TODAY, &a, NULL, 0);
    json = imgq_job_spec_to_json(&a);
    o = json_loads(json, 0, NULL);
    assert_non_null(o);
    static const char *const left_out[] = {"n",    "output_format", "output_compression", "route",
                                           "team", "priority",      "max_attempts"};
    for (size_t i = 0; i < sizeof left_out / sizeof left_out[0]; i++)
        if (json_object_get(o, left_out[i]))
            fail_msg("stored form %s has the default '%s'", json, left_out[i]);
    imgq_job_stored_defaults(o);
    assert_int_equal(json_integer_value(json_object_get(o, "n")), 1);
    assert_string_equal(json_string_value(json_object_get(o, "output_format")), "webp");
    assert_int_equal(json_integer_value(json_object_get(o, "output_compression")), 85);
    assert_string_equal(json_string_value(json_object_get(o, "route")), "list");
    assert_string_equal(json_string_value(json_object_get(o, "team")), "");
    assert_string_equal(json_string_value(json_object_get(o, "priority")), "normal");
    assert_int_equal(json_integer_value(json_object_get(o, "max_attempts")), 5);
    json_decref(o);
    free(json);
    imgq_job_spec_clear(&a);
}

static void test_from_json_rejects_damage(void **state)
{
    static const struct {
        const char *text;
        int code;
    } cases[] = {
        {"not json", IMGQ_EPARSE},
        {"", IMGQ_EPARSE},
        {"[]", IMGQ_EPARSE},
        {"\"x\"", IMGQ_EPARSE},
        {"{}", IMGQ_EINVAL},
        {"{\"prompt\":\"a\",\"n\":1,\"size\":\"1024x1024\",\"output_format\":\"webp\","
         "\"route\":\"list\"}",
         IMGQ_EINVAL}, /* no model */
        {"{\"model\":\"m\",\"n\":1,\"size\":\"1024x1024\",\"output_format\":\"webp\","
         "\"route\":\"list\"}",
         IMGQ_EINVAL}, /* no prompt */
        {"{\"model\":\"m\",\"prompt\":\"a\",\"n\":0,\"size\":\"1024x1024\","
         "\"output_format\":\"webp\",\"route\":\"list\"}",
         IMGQ_EINVAL},
        {"{\"model\":\"m\",\"prompt\":\"a\",\"n\":\"1\",\"size\":\"1024x1024\","
         "\"output_format\":\"webp\",\"route\":\"list\"}",
         IMGQ_EINVAL},
        {"{\"model\":\"m\",\"prompt\":\"a\",\"n\":1,\"size\":\"big\","
         "\"output_format\":\"webp\",\"route\":\"list\"}",
         IMGQ_EINVAL},
        {"{\"model\":\"m\",\"prompt\":\"a\",\"n\":1,\"size\":\"1024x1024\","
         "\"output_format\":5,\"route\":\"list\"}",
         IMGQ_EINVAL}, /* output_format not a string (left out, it is webp) */
        {"{\"model\":\"m\",\"prompt\":\"a\",\"n\":1,\"size\":\"1024x1024\","
         "\"output_format\":\"webp\",\"route\":true}",
         IMGQ_EINVAL}, /* route not a string */
        {"{\"model\":\"m\",\"prompt\":\"a\",\"size\":\"1024x1024\",\"n\":null}",
         IMGQ_EINVAL}, /* n not a number (left out, it is 1) */
        {"{\"model\":5,\"prompt\":\"a\",\"n\":1,\"size\":\"1024x1024\","
         "\"output_format\":\"webp\",\"route\":\"list\"}",
         IMGQ_EINVAL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct imgq_job_spec s;
        memset(&s, 0x5a, sizeof s);
        int rc = imgq_job_spec_from_json(cases[i].text, &s);
        if (rc != cases[i].code)
            fail_msg("case %zu: code %d, want %d: %s", i, rc, cases[i].code, cases[i].text);
        assert_spec_empty(&s);
    }

    /* The minimum a stored spec needs; the rest stays NULL/0. */
    struct imgq_job_spec s;
    assert_int_equal(imgq_job_spec_from_json("{\"model\":\"m\",\"prompt\":\"a\",\"n\":2,"
                                             "\"size\":\"512x768\",\"output_format\":\"png\","
                                             "\"route\":\"list\",\"priority\":\"low\"}",
                                             &s),
                     0);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.width, 512);
    assert_int_equal(s.height, 768);
    assert_int_equal(s.priority, IMGQ_PRIO_LOW);
    assert_null(s.quality);
    assert_null(s.metadata);
    imgq_job_spec_clear(&s);
}

/* Regression (was a bug): src/job.c imgq_job_spec_from_json: a stored spec without a (valid)
 * "priority" comes back as IMGQ_PRIO_HIGH (0, from the memset), although the code means to default
 * to IMGQ_PRIO_NORMAL ('pr' is initialised to it but only assigned on a successful parse). */
static void test_from_json_missing_priority_is_normal(void **state)
{
    static const char *const texts[] = {
        "{\"model\":\"m\",\"prompt\":\"a\",\"n\":1,\"size\":\"1024x1024\","
        "\"output_format\":\"webp\",\"route\":\"list\"}",
        "{\"model\":\"m\",\"prompt\":\"a\",\"n\":1,\"size\":\"1024x1024\","
        "\"output_format\":\"webp\",\"route\":\"list\",\"priority\":\"urgent\"}",
    };
    for (size_t i = 0; i < 2; i++) {
        struct imgq_job_spec s;
        int rc = imgq_job_spec_from_json(texts[i], &s);
        /* Either refused as damaged, or read with the normal priority: never "high". */
        if (rc == 0) {
            assert_int_equal(s.priority, IMGQ_PRIO_NORMAL);
            imgq_job_spec_clear(&s);
        } else {
            assert_int_equal(rc, IMGQ_EINVAL);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_minimal_job_gets_defaults),
        cmocka_unit_test(test_submit_defaults_apply),
        cmocka_unit_test(test_full_job),
        cmocka_unit_test(test_alias_resolves),
        cmocka_unit_test(test_model_without_quality),
        cmocka_unit_test(test_lifecycle),
        cmocka_unit_test(test_prompt_refusals),
        cmocka_unit_test(test_prompt_length_in_characters),
        cmocka_unit_test(test_model_refusals),
        cmocka_unit_test(test_shape_refusals),
        cmocka_unit_test(test_routing_and_ownership_refusals),
        cmocka_unit_test(test_unknown_field),
        cmocka_unit_test(test_knob_gates),
        cmocka_unit_test(test_max_generations),
        cmocka_unit_test(test_max_rate_limit_waits),
        cmocka_unit_test(test_webhook_refusals),
        cmocka_unit_test(test_pipeline),
        cmocka_unit_test(test_pipeline_refusals),
        cmocka_unit_test(test_metadata_refusals),
        cmocka_unit_test(test_json_refusals),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_from_json_rejects_damage),
        cmocka_unit_test(test_from_json_missing_priority_is_normal),
        cmocka_unit_test(test_size_rules_at_submit),
        cmocka_unit_test(test_guidance),
        cmocka_unit_test(test_reference_images),
        cmocka_unit_test(test_inline_cap),
        cmocka_unit_test(test_from_json_refs_damage),
        cmocka_unit_test(test_retarget),
        cmocka_unit_test(test_dedup_key_references),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
