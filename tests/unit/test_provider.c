/*
 * test_provider.c - the OpenAI Images adapter: responses built by hand (success with and
 * without usage, malformed successes, every error class with the provider's real body
 * shapes), Retry-After parsing, and the request it builds, captured by a one-shot loopback
 * server.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "imgq/provider.h"

/* ---- helpers ------------------------------------------------------------------------------ */

/* The PNG signature and "hello", base64: the images of the success responses. */
#define PNG_SIG "\x89PNG\r\n\x1a\n"
#define PNG_SIG_B64 "iVBORw0KGgo="
#define HELLO_B64 "aGVsbG8="

static void parse(long status, const char *body, const struct imgq_http_header *headers,
                  size_t nheaders, int n, struct imgq_provider_result *out)
{
    imgq_http_response res = {
        .err = 0,
        .status = status,
        .error = "",
        .body = (const unsigned char *)body,
        .body_len = strlen(body),
        .headers = headers,
        .nheaders = nheaders,
    };
    memset(out, 0x5a, sizeof *out); /* parse must initialise everything */
    imgq_openai_parse(&res, n, out);
}

static void assert_contains(const char *haystack, const char *needle)
{
    if (!strstr(haystack, needle))
        fail_msg("expected \"%s\" in \"%s\"", needle, haystack);
}

static void assert_no_images(const struct imgq_provider_result *r)
{
    assert_int_equal(r->nimages, 0);
    assert_false(r->usage_present);
    assert_null(r->usage_json);
}

/* ---- success ------------------------------------------------------------------------------ */

static void test_success_with_usage(void **state)
{
    static const char body[] =
        "{\"created\":1713833628,\"background\":\"opaque\",\"output_format\":\"png\","
        "\"quality\":\"high\",\"size\":\"1024x1024\",\"data\":["
        "{\"b64_json\":\"" PNG_SIG_B64 "\",\"revised_prompt\":null,\"url\":null},"
        "{\"b64_json\":\"" HELLO_B64 "\"}],"
        "\"usage\":{\"input_tokens\":50,\"input_tokens_details\":{\"text_tokens\":40,"
        "\"image_tokens\":10},\"output_tokens\":8340,\"total_tokens\":8390,"
        "\"output_tokens_details\":{\"image_tokens\":8320,\"text_tokens\":20}}}";
    static const struct imgq_http_header h[] = {
        {"Content-Type", "application/json"},
        {"X-Request-Id", "req_abc123"},
    };
    struct imgq_provider_result r;
    parse(200, body, h, 2, 2, &r);
    assert_int_equal(r.cls, IMGQ_CLASS_NONE);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.request_id, "req_abc123");
    assert_string_equal(r.message, "");
    assert_string_equal(r.code, "");
    assert_int_equal(r.retry_after_ms, -1);
    assert_int_equal(r.nimages, 2);
    assert_int_equal(r.image_lens[0], 8);
    assert_memory_equal(r.images[0], PNG_SIG, 8);
    assert_int_equal(r.image_lens[1], 5);
    assert_memory_equal(r.images[1], "hello", 5);
    assert_true(r.usage_present);
    assert_int_equal(r.usage.text_in, 40);
    assert_int_equal(r.usage.image_in, 10);
    assert_int_equal(r.usage.image_out, 8320);
    assert_int_equal(r.usage.text_out, 20);
    assert_int_equal(r.usage.cached_text_in, 0);
    assert_int_equal(r.usage.images, 2);
    assert_non_null(r.usage_json);
    assert_int_equal(json_integer_value(json_object_get(r.usage_json, "total_tokens")), 8390);
    imgq_provider_result_clear(&r);
    assert_int_equal(r.nimages, 0);
    assert_null(r.images);
}

static void test_usage_shapes(void **state)
{
    struct imgq_provider_result r;
    /* No details: all input is text, all output is image. */
    parse(200,
          "{\"data\":[{\"b64_json\":\"" HELLO_B64 "\"}],"
          "\"usage\":{\"input_tokens\":50,\"output_tokens\":4160,\"total_tokens\":4210}}",
          NULL, 0, 1, &r);
    assert_int_equal(r.cls, IMGQ_CLASS_NONE);
    assert_true(r.usage_present);
    assert_int_equal(r.usage.text_in, 50);
    assert_int_equal(r.usage.image_in, 0);
    assert_int_equal(r.usage.image_out, 4160);
    assert_int_equal(r.usage.text_out, 0);
    assert_int_equal(r.usage.images, 1);
    assert_string_equal(r.request_id, "");
    imgq_provider_result_clear(&r);

    /* Details that do not add up: the remainder is billed at the text / image-out rate. */
    parse(200,
          "{\"data\":[{\"b64_json\":\"" HELLO_B64 "\"}],"
          "\"usage\":{\"input_tokens\":60,\"input_tokens_details\":{\"text_tokens\":40,"
          "\"image_tokens\":10},\"output_tokens\":5000,"
          "\"output_tokens_details\":{\"image_tokens\":4160}}}",
          NULL, 0, 1, &r);
    assert_int_equal(r.usage.text_in, 50);
    assert_int_equal(r.usage.image_in, 10);
    assert_int_equal(r.usage.image_out, 5000);
    assert_int_equal(r.usage.text_out, 0);
    imgq_provider_result_clear(&r);

    /* The largest count imgq prices is still a count. */
    parse(200,
          "{\"data\":[{\"b64_json\":\"" HELLO_B64 "\"}],"
          "\"usage\":{\"input_tokens\":0,\"output_tokens\":1125899906842624}}",
          NULL, 0, 1, &r);
    assert_true(r.usage_present);
    assert_string_equal(r.usage_unusable, "");
    assert_int_equal(r.usage.image_out, INT64_C(1) << 50);
    imgq_provider_result_clear(&r);
}

/* ---- unusable usage ----------------------------------------------------------------------- */

/* An answer with its images whose usage is unusable: no usage billed, the reason kept, the
 * usage as returned kept (when it is an object) for the ledger. */
static void assert_unusable(struct imgq_provider_result *r, int nimages, const char *why)
{
    if (r->cls != IMGQ_CLASS_NONE)
        fail_msg("class %s (%s)", imgq_error_class_name(r->cls), r->message);
    assert_int_equal(r->nimages, nimages);
    assert_false(r->usage_present);
    assert_contains(r->usage_unusable, why);
    struct imgq_usage zero = {0};
    assert_memory_equal(&r->usage, &zero, sizeof zero);
}

struct bad_usage {
    const char *usage; /* the usage member's JSON */
    const char *why;   /* expected in usage_unusable */
};

/* OpenAI: the input and output counts are required; the details, if present, must be counts. */
static const struct bad_usage openai_bad[] = {
    {"{}", "usage.input_tokens: missing"},
    {"{\"total_tokens\":4210}", "usage.input_tokens: missing"},
    {"{\"input_tokens\":50}", "usage.output_tokens: missing"},
    {"{\"input_tokens\":50,\"output_tokens\":\"4160\"}",
     "usage.output_tokens: \"4160\" is not a count"},
    {"{\"input_tokens\":\"50\",\"output_tokens\":4160}",
     "usage.input_tokens: \"50\" is not a count"},
    {"{\"input_tokens\":-5,\"output_tokens\":4160}", "usage.input_tokens: -5 is not a count"},
    {"{\"input_tokens\":50,\"output_tokens\":-4160}", "usage.output_tokens: -4160 is not a count"},
    {"{\"input_tokens\":50,\"output_tokens\":4160.5}",
     "usage.output_tokens: 4160.5 is not a count"},
    {"{\"input_tokens\":50.0,\"output_tokens\":4160}", "usage.input_tokens: 50 is not a count"},
    {"{\"input_tokens\":50,\"output_tokens\":9223372036854775807}",
     "usage.output_tokens: 9223372036854775807 is beyond the largest count imgq prices"},
    {"{\"input_tokens\":50,\"output_tokens\":1125899906842625}",
     "usage.output_tokens: 1125899906842625 is beyond"},
    {"{\"input_tokens\":9223372036854775800,\"output_tokens\":4160}",
     "usage.input_tokens: 9223372036854775800 is beyond"},
    {"{\"input_tokens\":50,\"output_tokens\":0}", "usage.output_tokens: 0 for 1 image(s) returned"},
    {"{\"input_tokens\":50,\"output_tokens\":true}", "usage.output_tokens: a boolean is not"},
    {"{\"input_tokens\":50,\"output_tokens\":4160,\"input_tokens_details\":{"
     "\"image_tokens\":\"10\"}}",
     "usage.input_tokens_details.image_tokens: \"10\" is not a count"},
    {"{\"input_tokens\":50,\"output_tokens\":4160,\"output_tokens_details\":{"
     "\"text_tokens\":-1}}",
     "usage.output_tokens_details.text_tokens: -1 is not a count"},
    {"{\"input_tokens\":50,\"output_tokens\":4160,\"output_tokens_details\":[1]}",
     "usage.output_tokens_details: not an object"},
    {"{\"input_tokens\":50,\"output_tokens\":99999999999999999999}",
     "the answer has a number too large for a 64-bit integer"},
    {"\"lots\"", "usage: not an object"},
    {"[50,4160]", "usage: not an object"},
};

static void test_openai_unusable_usage(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof openai_bad / sizeof openai_bad[0]; i++) {
        char body[512];
        snprintf(body, sizeof body, "{\"data\":[{\"b64_json\":\"" HELLO_B64 "\"}],\"usage\":%s}",
                 openai_bad[i].usage);
        struct imgq_provider_result r;
        parse(200, body, NULL, 0, 1, &r);
        assert_unusable(&r, 1, openai_bad[i].why);
        /* The usage object as returned is kept for the ledger. */
        assert_true(openai_bad[i].usage[0] == '{' ? r.usage_json != NULL : r.usage_json == NULL);
        imgq_provider_result_clear(&r);
    }
    /* Two images, no output tokens: the message says how many came back. */
    struct imgq_provider_result r;
    parse(200,
          "{\"data\":[{\"b64_json\":\"" HELLO_B64 "\"},{\"b64_json\":\"" HELLO_B64 "\"}],"
          "\"usage\":{\"input_tokens\":5,\"output_tokens\":0}}",
          NULL, 0, 2, &r);
    assert_unusable(&r, 2, "usage.output_tokens: 0 for 2 image(s) returned");
    imgq_provider_result_clear(&r);
}

static void test_success_without_usage(void **state)
{
    struct imgq_provider_result r;
    /* The Gemini OpenAI-compatible shape: data, no usage.  Billed at the ceiling. */
    parse(200, "{\"data\":[{\"b64_json\":\"" PNG_SIG_B64 "\"}],\"model\":\"x\"}", NULL, 0, 1, &r);
    assert_int_equal(r.cls, IMGQ_CLASS_NONE);
    assert_int_equal(r.nimages, 1);
    assert_memory_equal(r.images[0], PNG_SIG, 8);
    assert_false(r.usage_present);
    assert_null(r.usage_json);
    assert_int_equal(r.usage.image_out, 0);
    imgq_provider_result_clear(&r);

    /* "usage": null is no usage either. */
    parse(200, "{\"data\":[{\"b64_json\":\"" HELLO_B64 "\"}],\"usage\":null}", NULL, 0, 1, &r);
    assert_int_equal(r.cls, IMGQ_CLASS_NONE);
    assert_false(r.usage_present);
    imgq_provider_result_clear(&r);
}

static void test_success_unusable(void **state)
{
    static const struct {
        const char *body;
        int n;
        const char *needle;
    } cases[] = {
        {"{\"data\":[{\"b64_json\":\"" HELLO_B64 "\"}]}", 2, "without 2 images"},
        {"{\"data\":[{\"b64_json\":\"" HELLO_B64 "\"},{\"b64_json\":\"" HELLO_B64 "\"}]}", 1,
         "without 1 images"},
        {"{\"data\":[]}", 1, "without 1 images"},
        {"{\"data\":{}}", 1, "'data'"},
        {"{\"created\":1}", 1, "'data'"},
        {"not json", 1, "'data'"},
        {"", 1, "'data'"},
        {"{\"data\":[{\"b64_json\":\"" HELLO_B64 "\"},{\"b64_json\":\"!!!!\"}]}", 2,
         "data[1].b64_json"},
        {"{\"data\":[{\"b64_json\":\"aGVsbG8\"}]}", 1, "data[0].b64_json"}, /* length % 4 */
        {"{\"data\":[{\"url\":\"https://example.com/i.png\"}]}", 1, "data[0].b64_json missing"},
        {"{\"data\":[{\"b64_json\":42}]}", 1, "data[0].b64_json"},
        {"{\"data\":[\"" HELLO_B64 "\"]}", 1, "data[0].b64_json"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct imgq_provider_result r;
        parse(200, cases[i].body, NULL, 0, cases[i].n, &r);
        if (r.cls != IMGQ_CLASS_BAD_RESPONSE)
            fail_msg("case %zu: class %s, want bad_response", i, imgq_error_class_name(r.cls));
        assert_contains(r.message, cases[i].needle);
        assert_false(r.usage_present);
        assert_int_equal(r.status, 200);
        imgq_provider_result_clear(&r); /* frees the images decoded before the bad one */
    }
    assert_true(imgq_error_class_retryable(IMGQ_CLASS_BAD_RESPONSE));
}

/* ---- errors ------------------------------------------------------------------------------- */

static void test_rate_limit(void **state)
{
    static const char body[] =
        "{\"error\":{\"message\":\"Rate limit reached for images per minute.\","
        "\"type\":\"requests\",\"param\":null,\"code\":\"rate_limit_exceeded\"}}";
    struct imgq_provider_result r;

    static const struct imgq_http_header secs[] = {{"Retry-After", "7"}, {"x-request-id", "req_1"}};
    parse(429, body, secs, 2, 1, &r);
    assert_int_equal(r.cls, IMGQ_CLASS_RATE_LIMIT);
    assert_int_equal(r.status, 429);
    assert_int_equal(r.retry_after_ms, 7000);
    assert_string_equal(r.code, "rate_limit_exceeded");
    assert_string_equal(r.message, "Rate limit reached for images per minute.");
    assert_string_equal(r.request_id, "req_1");
    assert_no_images(&r);
    imgq_provider_result_clear(&r);

    /* retry-after-ms wins over retry-after, as in OpenAI's SDK. */
    static const struct imgq_http_header both[] = {{"retry-after", "7"},
                                                   {"retry-after-ms", "1500"}};
    parse(429, body, both, 2, 1, &r);
    assert_int_equal(r.cls, IMGQ_CLASS_RATE_LIMIT);
    assert_int_equal(r.retry_after_ms, 1500);
    imgq_provider_result_clear(&r);

    static const struct imgq_http_header ms_only[] = {{"Retry-After-Ms", "250"}};
    parse(429, body, ms_only, 1, 1, &r);
    assert_int_equal(r.retry_after_ms, 250);
    imgq_provider_result_clear(&r);

    /* An unusable retry-after-ms falls back to retry-after. */
    static const struct imgq_http_header bad_ms[] = {{"retry-after-ms", "soon"},
                                                     {"retry-after", "2"}};
    parse(429, body, bad_ms, 2, 1, &r);
    assert_int_equal(r.retry_after_ms, 2000);
    imgq_provider_result_clear(&r);

    /* No hint at all. */
    parse(429, body, NULL, 0, 1, &r);
    assert_int_equal(r.cls, IMGQ_CLASS_RATE_LIMIT);
    assert_int_equal(r.retry_after_ms, -1);
    imgq_provider_result_clear(&r);

    /* An HTTP-date in the past means "now". */
    static const struct imgq_http_header past[] = {
        {"retry-after", "Sun, 06 Nov 1994 08:49:37 GMT"}};
    parse(429, body, past, 1, 1, &r);
    assert_int_equal(r.retry_after_ms, 0);
    imgq_provider_result_clear(&r);

    assert_true(imgq_error_class_retryable(IMGQ_CLASS_RATE_LIMIT));
}

static void test_server_errors(void **state)
{
    static const long statuses[] = {500, 502, 503, 504, 408, 409};
    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++) {
        struct imgq_provider_result r;
        parse(statuses[i],
              "{\"error\":{\"message\":\"The server had an error while processing your "
              "request.\",\"type\":\"server_error\",\"param\":null,\"code\":null}}",
              NULL, 0, 1, &r);
        if (r.cls != IMGQ_CLASS_SERVER)
            fail_msg("HTTP %ld: class %s, want server", statuses[i], imgq_error_class_name(r.cls));
        assert_int_equal(r.status, statuses[i]);
        assert_string_equal(r.message, "The server had an error while processing your request.");
        assert_string_equal(r.code, "");
        assert_int_equal(r.retry_after_ms, -1);
        assert_no_images(&r);
        imgq_provider_result_clear(&r);
    }
    assert_true(imgq_error_class_retryable(IMGQ_CLASS_SERVER));
}

static void test_content_policy(void **state)
{
    /* The exact body OpenAI sends when GPT image moderation blocks an output. */
    static const char body[] =
        "{\"error\":{\"message\":\"Your request was rejected by the safety system. If you "
        "believe this is an error, contact us at help.openai.com and include the request ID "
        "7f3c9a2e-1b4d-4e8a-9c6f-2d5b8a1e0f37. safety_violations=[sexual].\","
        "\"type\":\"image_generation_user_error\",\"param\":null,"
        "\"code\":\"moderation_blocked\",\"moderation_details\":{\"moderation_stage\":"
        "\"output\",\"categories\":[\"sexual\"]}}}";
    static const struct imgq_http_header h[] = {{"x-request-id", "req_mod"}};
    struct imgq_provider_result r;
    parse(400, body, h, 1, 1, &r);
    assert_int_equal(r.cls, IMGQ_CLASS_CONTENT_POLICY);
    assert_int_equal(r.status, 400);
    assert_string_equal(r.code, "moderation_blocked");
    assert_contains(r.message, "Your request was rejected by the safety system.");
    assert_contains(r.message, "safety_violations=[sexual]");
    assert_string_equal(r.request_id, "req_mod");
    assert_no_images(&r);
    imgq_provider_result_clear(&r);
    assert_false(imgq_error_class_retryable(IMGQ_CLASS_CONTENT_POLICY));

    /* The DALL-E era code. */
    parse(400,
          "{\"error\":{\"message\":\"Your request was rejected as a result of our safety "
          "system.\",\"type\":\"invalid_request_error\",\"param\":null,"
          "\"code\":\"content_policy_violation\"}}",
          NULL, 0, 1, &r);
    assert_int_equal(r.cls, IMGQ_CLASS_CONTENT_POLICY);
    assert_string_equal(r.code, "content_policy_violation");
    imgq_provider_result_clear(&r);
}

static void test_invalid_request(void **state)
{
    struct imgq_provider_result r;
    parse(400,
          "{\"error\":{\"message\":\"Invalid value: '1254x836'. Supported values are: "
          "'1024x1024', '1024x1536', '1536x1024', and 'auto'.\","
          "\"type\":\"invalid_request_error\",\"param\":\"size\",\"code\":\"invalid_value\"}}",
          NULL, 0, 1, &r);
    assert_int_equal(r.cls, IMGQ_CLASS_INVALID_REQUEST);
    assert_string_equal(r.code, "invalid_value");
    assert_string_equal(r.message, "Invalid value: '1254x836'. Supported values are: "
                                   "'1024x1024', '1024x1536', '1536x1024', and 'auto'.");
    imgq_provider_result_clear(&r);
    assert_false(imgq_error_class_retryable(IMGQ_CLASS_INVALID_REQUEST));

    static const long statuses[] = {404, 422, 413};
    for (size_t i = 0; i < 3; i++) {
        parse(statuses[i], "{\"error\":{\"message\":\"nope\",\"code\":null}}", NULL, 0, 1, &r);
        assert_int_equal(r.cls, IMGQ_CLASS_INVALID_REQUEST);
        assert_string_equal(r.message, "nope");
        imgq_provider_result_clear(&r);
    }

    /* A non-JSON error body: the status stands in for the message. */
    parse(400, "<html><body>Bad Request</body></html>", NULL, 0, 1, &r);
    assert_int_equal(r.cls, IMGQ_CLASS_INVALID_REQUEST);
    assert_string_equal(r.message, "HTTP 400");
    assert_string_equal(r.code, "");
    imgq_provider_result_clear(&r);
    parse(502, "<html>Bad Gateway</html>", NULL, 0, 1, &r);
    assert_int_equal(r.cls, IMGQ_CLASS_SERVER);
    assert_string_equal(r.message, "HTTP 502");
    imgq_provider_result_clear(&r);
    /* JSON of the wrong shape is no message either. */
    parse(400, "{\"error\":\"bad\"}", NULL, 0, 1, &r);
    assert_int_equal(r.cls, IMGQ_CLASS_INVALID_REQUEST);
    assert_string_equal(r.message, "HTTP 400");
    imgq_provider_result_clear(&r);
    parse(400, "[1,2,3]", NULL, 0, 1, &r);
    assert_string_equal(r.message, "HTTP 400");
    imgq_provider_result_clear(&r);

    /* Statuses that are neither success nor an error we know: a bad response. */
    parse(302, "", NULL, 0, 1, &r);
    assert_int_equal(r.cls, IMGQ_CLASS_BAD_RESPONSE);
    assert_string_equal(r.message, "HTTP 302");
    imgq_provider_result_clear(&r);
    parse(204, "", NULL, 0, 1, &r);
    assert_int_equal(r.cls, IMGQ_CLASS_BAD_RESPONSE);
    imgq_provider_result_clear(&r);
}

static void test_auth(void **state)
{
    struct imgq_provider_result r;
    parse(401,
          "{\"error\":{\"message\":\"Incorrect API key provided: sk-abc***xyz.\","
          "\"type\":\"invalid_request_error\",\"param\":null,\"code\":\"invalid_api_key\"}}",
          NULL, 0, 1, &r);
    assert_int_equal(r.cls, IMGQ_CLASS_AUTH);
    assert_string_equal(r.code, "invalid_api_key");
    assert_contains(r.message, "Incorrect API key");
    imgq_provider_result_clear(&r);
    parse(403, "{}", NULL, 0, 1, &r);
    assert_int_equal(r.cls, IMGQ_CLASS_AUTH);
    assert_string_equal(r.message, "HTTP 403");
    imgq_provider_result_clear(&r);
    assert_false(imgq_error_class_retryable(IMGQ_CLASS_AUTH));
}

static void test_transport_errors(void **state)
{
    imgq_http_response res = {.err = IMGQ_EHTTP,
                              .status = 0,
                              .error = "Failed to connect to api.openai.com port 443: "
                                       "Connection refused",
                              .body = (const unsigned char *)"",
                              .body_len = 0};
    struct imgq_provider_result r;
    imgq_openai_parse(&res, 1, &r);
    assert_int_equal(r.cls, IMGQ_CLASS_NETWORK);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.message, res.error);
    assert_int_equal(r.retry_after_ms, -1);
    assert_no_images(&r);
    imgq_provider_result_clear(&r);

    res.timed_out = true;
    res.error = "Operation timed out after 300000 milliseconds with 0 bytes received";
    imgq_openai_parse(&res, 1, &r);
    assert_int_equal(r.cls, IMGQ_CLASS_TIMEOUT);
    assert_contains(r.message, "timed out");
    imgq_provider_result_clear(&r);

    /* A transfer error wins over whatever status and body arrived before it. */
    static const char partial[] = "{\"data\":[{\"b64_json\":\"aGVs";
    res = (imgq_http_response){.err = IMGQ_EHTTP,
                               .status = 200,
                               .error = "Recv failure: Connection reset by peer",
                               .body = (const unsigned char *)partial,
                               .body_len = sizeof partial - 1};
    imgq_openai_parse(&res, 1, &r);
    assert_int_equal(r.cls, IMGQ_CLASS_NETWORK);
    assert_int_equal(r.status, 200);
    assert_no_images(&r);
    imgq_provider_result_clear(&r);

    assert_true(imgq_error_class_retryable(IMGQ_CLASS_TIMEOUT));
    assert_true(imgq_error_class_retryable(IMGQ_CLASS_NETWORK));
    assert_true(imgq_error_class_retryable(IMGQ_CLASS_STORAGE));
    assert_false(imgq_error_class_retryable(IMGQ_CLASS_NONE));
}

static void test_class_names(void **state)
{
    static const char *const names[] = {
        "none",         "timeout", "network",         "rate_limit",     "server",
        "bad_response", "storage", "invalid_request", "content_policy", "auth"};
    for (int c = IMGQ_CLASS_NONE; c <= IMGQ_CLASS_AUTH; c++)
        assert_string_equal(imgq_error_class_name((enum imgq_error_class)c), names[c]);
    assert_string_equal(imgq_error_class_name((enum imgq_error_class)99), "unknown");
}

/* ---- the request ------------------------------------------------------------------------- */

/* A one-shot HTTP server on a loopback port: reads one request, keeps its bytes, answers 200. */
struct capture {
    int listen_fd;
    int port;
    pthread_t thread;
    char buf[65536];
    size_t len;
};

static void *capture_run(void *arg)
{
    struct capture *c = arg;
    int fd = accept(c->listen_fd, NULL, NULL);
    if (fd < 0)
        return NULL;
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    size_t want = 0;
    while (c->len < sizeof c->buf - 1) {
        ssize_t n = read(fd, c->buf + c->len, sizeof c->buf - 1 - c->len);
        if (n <= 0)
            break;
        c->len += (size_t)n;
        c->buf[c->len] = '\0';
        char *end = strstr(c->buf, "\r\n\r\n");
        if (end && !want) {
            const char *cl = strcasestr(c->buf, "\r\nContent-Length:");
            want = (size_t)(end + 4 - c->buf) + (cl ? strtoul(cl + 17, NULL, 10) : 0);
        }
        if (want && c->len >= want)
            break;
    }
    static const char reply[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                "Content-Length: 2\r\nConnection: close\r\n\r\n{}";
    ssize_t w = write(fd, reply, sizeof reply - 1);
    (void)w;
    close(fd);
    return NULL;
}

static void capture_start(struct capture *c)
{
    memset(c, 0, sizeof *c);
    c->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(c->listen_fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(c->listen_fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(c->listen_fd, 1), 0);
    socklen_t alen = sizeof a;
    assert_int_equal(getsockname(c->listen_fd, (struct sockaddr *)&a, &alen), 0);
    c->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&c->thread, NULL, capture_run, c), 0);
}

static void capture_stop(struct capture *c)
{
    shutdown(c->listen_fd, SHUT_RDWR); /* unblocks accept() if nothing ever came */
    pthread_join(c->thread, NULL);
    close(c->listen_fd);
}

/* Send the built request to the capture server; returns the parsed JSON body (new). */
static json_t *send_built(const struct imgq_job_spec *spec, int n, const char *api_key,
                          struct capture *c)
{
    capture_start(c);
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%d/v1", c->port);
    struct imgq_provider_endpoint ep = {.base_url = base, .api_key = api_key, .timeout_ms = 10000};
    imgq_http_request *req = imgq_openai_build(&ep, spec, n);
    assert_non_null(req);
    imgq_http_response *res = NULL;
    int rc = imgq_http_perform_sync(req, &res);
    capture_stop(c);
    assert_int_equal(rc, 0);
    assert_non_null(res);
    assert_int_equal(res->status, 200);
    imgq_http_response_free(res);
    imgq_http_request_free(req);

    const char *body = strstr(c->buf, "\r\n\r\n");
    assert_non_null(body);
    json_error_t je;
    json_t *o = json_loads(body + 4, 0, &je);
    if (!o)
        fail_msg("request body is not JSON (%s): %s", je.text, body + 4);
    return o;
}

/* Any adapter's request, built against the capture server at http://127.0.0.1:PORT/PREFIX:
 * returns the parsed JSON body (new). */
static json_t *capture_built(imgq_http_request *(*build)(const struct imgq_provider_endpoint *,
                                                         const struct imgq_job_spec *, int),
                             const struct imgq_job_spec *spec, int n, const char *prefix,
                             struct capture *c)
{
    capture_start(c);
    char base[96];
    snprintf(base, sizeof base, "http://127.0.0.1:%d%s", c->port, prefix);
    struct imgq_provider_endpoint ep = {.base_url = base, .api_key = "k-1", .timeout_ms = 10000};
    imgq_http_request *req = build(&ep, spec, n);
    imgq_http_response *res = NULL;
    int rc = imgq_http_perform_sync(req, &res);
    capture_stop(c);
    assert_int_equal(rc, 0);
    assert_int_equal(res->status, 200);
    imgq_http_response_free(res);
    imgq_http_request_free(req);
    const char *body = strstr(c->buf, "\r\n\r\n");
    assert_non_null(body);
    json_error_t je;
    json_t *o = json_loads(body + 4, 0, &je);
    if (!o)
        fail_msg("request body is not JSON (%s): %s", je.text, body + 4);
    return o;
}

static void test_build_request(void **state)
{
    setenv("NO_PROXY", "127.0.0.1", 1);
    setenv("no_proxy", "127.0.0.1", 1);
    struct imgq_job_spec spec = {.model = "gpt-image-1.5",
                                 .prompt = "a \"quoted\" mug, caf\xc3\xa9",
                                 .n = 4,
                                 .size = "1536x1024",
                                 .width = 1536,
                                 .height = 1024,
                                 .quality = "high",
                                 .output_format = "webp",
                                 .output_compression = 85,
                                 .background = "transparent",
                                 .moderation = "low",
                                 .user = "user-77",
                                 .route = "list",
                                 .team = "acme",
                                 .webhook = "https://example.com/h"};
    struct capture *c = malloc(sizeof *c);
    assert_non_null(c);
    json_t *o = send_built(&spec, 3, "sk-test-123", c);

    assert_true(strncmp(c->buf, "POST /v1/images/generations HTTP/1.1\r\n", 38) == 0);
    assert_non_null(strcasestr(c->buf, "\r\nAuthorization: Bearer sk-test-123\r\n"));
    assert_non_null(strcasestr(c->buf, "\r\nContent-Type: application/json\r\n"));
    assert_string_equal(json_string_value(json_object_get(o, "model")), "gpt-image-1.5");
    assert_string_equal(json_string_value(json_object_get(o, "prompt")),
                        "a \"quoted\" mug, caf\xc3\xa9");
    assert_int_equal(json_integer_value(json_object_get(o, "n")), 3); /* the call's n */
    assert_string_equal(json_string_value(json_object_get(o, "size")), "1536x1024");
    assert_string_equal(json_string_value(json_object_get(o, "quality")), "high");
    /* Lossless transfer: the worker encodes the stored format itself. */
    assert_string_equal(json_string_value(json_object_get(o, "output_format")), "png");
    assert_string_equal(json_string_value(json_object_get(o, "background")), "transparent");
    assert_string_equal(json_string_value(json_object_get(o, "moderation")), "low");
    assert_string_equal(json_string_value(json_object_get(o, "user")), "user-77");
    /* imgq's own fields never reach the provider. */
    assert_int_equal(json_object_size(o), 9);
    assert_null(json_object_get(o, "route"));
    assert_null(json_object_get(o, "webhook"));
    assert_null(json_object_get(o, "output_compression"));
    json_decref(o);

    /* Optional fields left out are not sent; a key with CR/LF is not sent either. */
    struct imgq_job_spec bare = {.model = "gpt-image-1-mini",
                                 .prompt = "x",
                                 .n = 1,
                                 .size = "1024x1024",
                                 .output_format = "webp",
                                 .route = "list"};
    o = send_built(&bare, 1, "sk-evil\r\nX-Injected: 1", c);
    assert_null(strcasestr(c->buf, "X-Injected"));
    assert_null(strcasestr(c->buf, "\r\nAuthorization:"));
    assert_int_equal(json_object_size(o), 5);
    assert_string_equal(json_string_value(json_object_get(o, "model")), "gpt-image-1-mini");
    assert_int_equal(json_integer_value(json_object_get(o, "n")), 1);
    assert_null(json_object_get(o, "quality"));
    assert_null(json_object_get(o, "background"));
    assert_null(json_object_get(o, "user"));
    json_decref(o);
    free(c);
}

/* ---- OpenAI edits (references) ------------------------------------------------------------ */

static void assert_field(const imgq_http_request *req, size_t i, const char *name,
                         const char *value)
{
    struct imgq_http_part p;
    assert_true(imgq_http_request_part(req, i, &p));
    assert_string_equal(p.name, name);
    assert_null(p.filename);
    assert_null(p.mime);
    if (p.len != strlen(value) || memcmp(p.data, value, p.len) != 0)
        fail_msg("part %zu (%s): got '%.*s', want '%s'", i, name, (int)p.len, (const char *)p.data,
                 value);
}

static void assert_file(const imgq_http_request *req, size_t i, const char *name,
                        const char *filename, const char *mime, const void *data, size_t len)
{
    struct imgq_http_part p;
    assert_true(imgq_http_request_part(req, i, &p));
    assert_string_equal(p.name, name);
    assert_non_null(p.filename);
    assert_string_equal(p.filename, filename);
    assert_non_null(p.mime);
    assert_string_equal(p.mime, mime);
    assert_int_equal(p.len, len);
    assert_memory_equal(p.data, data, len);
}

static void test_build_edits(void **state)
{
    setenv("NO_PROXY", "127.0.0.1", 1);
    setenv("no_proxy", "127.0.0.1", 1);
    static uint8_t png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 1, 2, 3};
    static uint8_t jpg[] = {0xff, 0xd8, 0xff, 0xe0, 0, 0x10, 'J', 'F', 'I', 'F'};
    static uint8_t webp[] = {'R', 'I', 'F', 'F', 4, 0, 0, 0, 'W', 'E', 'B', 'P'};
    static uint8_t mask[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 9};
    char *refs[] = {"s3://b/a.png", "https://x/b.jpg", "data:image/webp;base64,AA"};
    struct imgq_ref_data rd[3] = {{png, sizeof png, "image/png"},
                                  {jpg, sizeof jpg, "image/jpeg"},
                                  {webp, sizeof webp, "image/webp"}};
    struct imgq_ref_data md = {mask, sizeof mask, "image/png"};
    struct imgq_job_spec spec = {.model = "gpt-image-1.5",
                                 .prompt = "put the mug\r\non the table",
                                 .n = 2,
                                 .size = "1024x1536",
                                 .width = 1024,
                                 .height = 1536,
                                 .quality = "high",
                                 .output_format = "webp",
                                 .output_compression = 80,
                                 .background = "opaque",
                                 .moderation = "low",
                                 .user = "u-1",
                                 .refs = refs,
                                 .nrefs = 3,
                                 .mask = "s3://b/m.png",
                                 .ref_data = rd,
                                 .mask_data = &md,
                                 .route = "list"};
    struct imgq_provider_endpoint ep = {
        .base_url = "https://api.openai.com/v1", .api_key = "sk-k", .timeout_ms = 1000};
    imgq_http_request *req = imgq_openai_build(&ep, &spec, 2);
    assert_string_equal(imgq_http_request_method(req), "POST");
    assert_string_equal(imgq_http_request_url(req), "https://api.openai.com/v1/images/edits");
    /* Fields, then one image[] per reference in order, then the mask; no moderation field
     * (edits has none), output_format png (lossless transfer), no output_compression. */
    assert_int_equal(imgq_http_request_part_count(req), 12);
    assert_field(req, 0, "model", "gpt-image-1.5");
    assert_field(req, 1, "prompt", "put the mug\r\non the table");
    assert_field(req, 2, "n", "2");
    assert_field(req, 3, "size", "1024x1536");
    assert_field(req, 4, "quality", "high");
    assert_field(req, 5, "background", "opaque");
    assert_field(req, 6, "output_format", "png");
    assert_field(req, 7, "user", "u-1");
    assert_file(req, 8, "image[]", "image-0.png", "image/png", png, sizeof png);
    assert_file(req, 9, "image[]", "image-1.jpg", "image/jpeg", jpg, sizeof jpg);
    assert_file(req, 10, "image[]", "image-2.webp", "image/webp", webp, sizeof webp);
    assert_file(req, 11, "mask", "mask.png", "image/png", mask, sizeof mask);
    imgq_http_request_free(req);

    /* On the wire: the path, the key, libcurl's multipart type, the bytes. */
    struct capture *c = malloc(sizeof *c);
    assert_non_null(c);
    capture_start(c);
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%d/v1", c->port);
    ep.base_url = base;
    spec.nrefs = 1;
    spec.mask_data = NULL;
    spec.quality = NULL;
    spec.background = NULL;
    spec.user = NULL;
    req = imgq_openai_build(&ep, &spec, 1);
    imgq_http_response *res = NULL;
    int rc = imgq_http_perform_sync(req, &res);
    capture_stop(c);
    assert_int_equal(rc, 0);
    assert_int_equal(res->status, 200);
    imgq_http_response_free(res);
    assert_int_equal(imgq_http_request_part_count(req), 6); /* 5 fields + 1 image */
    imgq_http_request_free(req);
    assert_true(strncmp(c->buf, "POST /v1/images/edits HTTP/1.1\r\n", 32) == 0);
    assert_non_null(strcasestr(c->buf, "\r\nAuthorization: Bearer sk-k\r\n"));
    assert_non_null(strcasestr(c->buf, "\r\nContent-Type: multipart/form-data; boundary="));
    assert_null(strstr(c->buf, "application/json"));
    assert_non_null(strstr(c->buf, "name=\"image[]\"; filename=\"image-0.png\"\r\n"
                                   "Content-Type: image/png\r\n\r\n\x89PNG"));
    assert_null(strstr(c->buf, "name=\"mask\""));
    assert_null(strstr(c->buf, "name=\"quality\""));
    free(c);

    /* References not fetched (a worker bug): no crash, no image parts; the API's 400 then
     * classifies the job as an invalid request. */
    spec.ref_data = NULL;
    req = imgq_openai_build(&ep, &spec, 1);
    assert_true(strstr(imgq_http_request_url(req), "/images/edits") != NULL);
    assert_int_equal(imgq_http_request_part_count(req), 5);
    for (size_t i = 0; i < 5; i++) {
        struct imgq_http_part p;
        assert_true(imgq_http_request_part(req, i, &p));
        assert_null(p.filename);
    }
    imgq_http_request_free(req);
    struct imgq_provider_result r;
    parse(400,
          "{\"error\":{\"message\":\"Missing required parameter: 'image'.\",\"type\":"
          "\"invalid_request_error\",\"param\":\"image\",\"code\":\"missing_required_parameter\"}}",
          NULL, 0, 1, &r);
    assert_int_equal(r.cls, IMGQ_CLASS_INVALID_REQUEST);
    assert_false(imgq_error_class_retryable(r.cls));
    imgq_provider_result_clear(&r);

    /* A reference with an unusable type label still goes, as octet-stream. */
    struct imgq_ref_data odd = {png, sizeof png, "bogus"};
    spec.ref_data = &odd;
    req = imgq_openai_build(&ep, &spec, 1);
    assert_file(req, 5, "image[]", "image-0.bin", "application/octet-stream", png, sizeof png);
    imgq_http_request_free(req);

    /* Without references: generations, a JSON body, no parts (unchanged). */
    spec.nrefs = 0;
    spec.ref_data = rd;
    req = imgq_openai_build(&ep, &spec, 1);
    assert_true(strstr(imgq_http_request_url(req), "/images/generations") != NULL);
    assert_int_equal(imgq_http_request_part_count(req), 0);
    imgq_http_request_free(req);
}

static void test_edits_usage(void **state)
{
    /* An edits answer has the generations shape; its input image tokens (the references)
     * are billed as image input. */
    struct imgq_provider_result r;
    parse(200,
          "{\"created\":1,\"data\":[{\"b64_json\":\"" HELLO_B64 "\"}],"
          "\"usage\":{\"input_tokens\":2058,\"input_tokens_details\":{\"text_tokens\":8,"
          "\"image_tokens\":2050},\"output_tokens\":1584,\"total_tokens\":3642}}",
          NULL, 0, 1, &r);
    assert_int_equal(r.cls, IMGQ_CLASS_NONE);
    assert_true(r.usage_present);
    assert_int_equal(r.usage.text_in, 8);
    assert_int_equal(r.usage.image_in, 2050);
    assert_int_equal(r.usage.image_out, 1584);
    assert_int_equal(r.usage.images, 1);
    imgq_provider_result_clear(&r);
}

/* ---- Gemini generateContent ---------------------------------------------------------------- */

static void gparse(long status, const char *body, struct imgq_provider_result *out)
{
    imgq_http_response res = {.status = status,
                              .error = "",
                              .body = (const unsigned char *)body,
                              .body_len = strlen(body)};
    memset(out, 0x5a, sizeof *out);
    imgq_gemini_parse(&res, 1, out);
}

static void test_gemini_success(void **state)
{
    struct imgq_provider_result r;
    gparse(200,
           "{\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"Here\"},"
           "{\"inlineData\":{\"mimeType\":\"image/png\",\"data\":\"" PNG_SIG_B64 "\"}}]},"
           "\"finishReason\":\"STOP\",\"index\":0}],"
           "\"usageMetadata\":{\"promptTokenCount\":1309,\"candidatesTokenCount\":1290,"
           "\"totalTokenCount\":2599,\"promptTokensDetails\":[{\"modality\":\"TEXT\","
           "\"tokenCount\":12},{\"modality\":\"IMAGE\",\"tokenCount\":1297}],"
           "\"candidatesTokensDetails\":[{\"modality\":\"IMAGE\",\"tokenCount\":1290}]},"
           "\"modelVersion\":\"gemini-2.5-flash-image\",\"responseId\":\"resp-1\"}",
           &r);
    assert_int_equal(r.cls, IMGQ_CLASS_NONE);
    assert_int_equal(r.nimages, 1);
    assert_int_equal(r.image_lens[0], 8);
    assert_memory_equal(r.images[0], PNG_SIG, 8);
    assert_true(r.usage_present);
    assert_int_equal(r.usage.text_in, 12);
    assert_int_equal(r.usage.image_in, 1297);
    assert_int_equal(r.usage.image_out, 1290);
    assert_int_equal(r.usage.text_out, 0);
    assert_string_equal(r.request_id, "resp-1");
    imgq_provider_result_clear(&r);

    /* No usageMetadata: billed at the ceiling by the worker. */
    gparse(200,
           "{\"candidates\":[{\"content\":{\"parts\":[{\"inlineData\":{\"data\":\"" HELLO_B64
           "\"}}]},\"finishReason\":\"STOP\"}]}",
           &r);
    assert_int_equal(r.cls, IMGQ_CLASS_NONE);
    assert_int_equal(r.nimages, 1);
    assert_false(r.usage_present);
    imgq_provider_result_clear(&r);
}

/* Reference images of the build tests: a PNG signature and a JFIF start, and their base64. */
static uint8_t ref_png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 1, 2, 3};
static uint8_t ref_jpg[] = {0xff, 0xd8, 0xff, 0xe0, 0, 0x10, 'J', 'F', 'I', 'F'};
#define REF_PNG_B64 "iVBORw0KGgoBAgM="
#define REF_JPG_B64 "/9j/4AAQSkZJRg=="

static void test_gemini_build_references(void **state)
{
    setenv("NO_PROXY", "127.0.0.1", 1);
    setenv("no_proxy", "127.0.0.1", 1);
    char *refs[] = {"s3://b/a.png", "https://x/b.jpg"};
    struct imgq_ref_data rd[2] = {{ref_png, sizeof ref_png, "image/png"},
                                  {ref_jpg, sizeof ref_jpg, "image/jpeg"}};
    struct imgq_job_spec spec = {.model = "gemini-2.5-flash-image",
                                 .prompt = "the fox of image 1 in the hat of image 2",
                                 .n = 1,
                                 .size = "1344x768",
                                 .width = 1344,
                                 .height = 768,
                                 .has_seed = true,
                                 .seed = 7,
                                 .refs = refs,
                                 .nrefs = 2,
                                 .ref_data = rd,
                                 .route = "list"};
    struct capture *c = malloc(sizeof *c);
    assert_non_null(c);
    json_t *o = capture_built(imgq_gemini_build, &spec, 1, "/v1beta", c);
    assert_true(strncmp(c->buf,
                        "POST /v1beta/models/gemini-2.5-flash-image:generateContent HTTP/1.1\r\n",
                        68) == 0);
    assert_non_null(strcasestr(c->buf, "\r\nx-goog-api-key: k-1\r\n"));
    /* One user turn: the prompt, then the references in the job's order, inline. */
    json_t *contents = json_object_get(o, "contents");
    assert_int_equal(json_array_size(contents), 1);
    json_t *parts = json_object_get(json_array_get(contents, 0), "parts");
    assert_int_equal(json_array_size(parts), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(parts, 0), "text")),
                        spec.prompt);
    static const char *const mimes[] = {"image/png", "image/jpeg"};
    static const char *const datas[] = {REF_PNG_B64, REF_JPG_B64};
    for (size_t i = 0; i < 2; i++) {
        json_t *blob = json_object_get(json_array_get(parts, i + 1), "inlineData");
        assert_int_equal(json_object_size(blob), 2);
        assert_string_equal(json_string_value(json_object_get(blob, "mimeType")), mimes[i]);
        assert_string_equal(json_string_value(json_object_get(blob, "data")), datas[i]);
    }
    json_t *gc = json_object_get(o, "generationConfig");
    assert_int_equal(json_integer_value(json_object_get(gc, "seed")), 7);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(gc, "imageConfig"), "aspectRatio")),
        "16:9");
    json_decref(o);

    /* Not fetched (a worker bug): each reference goes as an empty inlineData, which the API
     * refuses (400, an invalid request), never a generation without its references. */
    spec.ref_data = NULL;
    o = capture_built(imgq_gemini_build, &spec, 1, "/v1beta", c);
    parts = json_object_get(json_array_get(json_object_get(o, "contents"), 0), "parts");
    assert_int_equal(json_array_size(parts), 3);
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_array_get(parts, 2), "inlineData"), "data")),
                        "");
    json_decref(o);

    /* Without references: the prompt alone. */
    spec.nrefs = 0;
    o = capture_built(imgq_gemini_build, &spec, 1, "/v1beta", c);
    parts = json_object_get(json_array_get(json_object_get(o, "contents"), 0), "parts");
    assert_int_equal(json_array_size(parts), 1);
    json_decref(o);
    free(c);

    /* Their input is billed from usageMetadata: the IMAGE modality of the prompt. */
    struct imgq_provider_result r;
    gparse(200,
           "{\"candidates\":[{\"content\":{\"parts\":[{\"inlineData\":{\"mimeType\":"
           "\"image/png\",\"data\":\"" PNG_SIG_B64 "\"}}]},\"finishReason\":\"STOP\"}],"
           "\"usageMetadata\":{\"promptTokenCount\":2604,\"candidatesTokenCount\":1290,"
           "\"totalTokenCount\":3894,\"promptTokensDetails\":[{\"modality\":\"TEXT\","
           "\"tokenCount\":10},{\"modality\":\"IMAGE\",\"tokenCount\":2594}]}}",
           &r);
    assert_int_equal(r.cls, IMGQ_CLASS_NONE);
    assert_int_equal(r.usage.image_in, 2594);
    assert_int_equal(r.usage.text_in, 10);
    assert_int_equal(r.usage.image_out, 1290);
    imgq_provider_result_clear(&r);
}

static void test_gemini_refusals(void **state)
{
    struct imgq_provider_result r;
    /* Safety blocks are HTTP 200. */
    gparse(200, "{\"candidates\":[{\"content\":{\"parts\":[]},\"finishReason\":\"IMAGE_SAFETY\"}]}",
           &r);
    assert_int_equal(r.cls, IMGQ_CLASS_CONTENT_POLICY);
    assert_string_equal(r.code, "IMAGE_SAFETY");
    imgq_provider_result_clear(&r);
    gparse(200, "{\"promptFeedback\":{\"blockReason\":\"SAFETY\"}}", &r);
    assert_int_equal(r.cls, IMGQ_CLASS_CONTENT_POLICY);
    assert_string_equal(r.code, "SAFETY");
    imgq_provider_result_clear(&r);
    /* A 200 with neither an image nor a reason is unusable, not a refusal. */
    gparse(200,
           "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"no\"}]},"
           "\"finishReason\":\"STOP\"}]}",
           &r);
    assert_int_equal(r.cls, IMGQ_CLASS_BAD_RESPONSE);
    imgq_provider_result_clear(&r);

    gparse(429,
           "{\"error\":{\"code\":429,\"message\":\"You exceeded your current quota\","
           "\"status\":\"RESOURCE_EXHAUSTED\",\"details\":[{\"@type\":"
           "\"type.googleapis.com/google.rpc.RetryInfo\",\"retryDelay\":\"47s\"}]}}",
           &r);
    assert_int_equal(r.cls, IMGQ_CLASS_RATE_LIMIT);
    assert_int_equal(r.retry_after_ms, 47000);
    assert_string_equal(r.code, "RESOURCE_EXHAUSTED");
    imgq_provider_result_clear(&r);
    gparse(400,
           "{\"error\":{\"code\":400,\"message\":\"Multiple candidates is not enabled\","
           "\"status\":\"INVALID_ARGUMENT\"}}",
           &r);
    assert_int_equal(r.cls, IMGQ_CLASS_INVALID_REQUEST);
    assert_contains(r.message, "Multiple candidates");
    imgq_provider_result_clear(&r);
    gparse(403, "{\"error\":{\"code\":403,\"status\":\"PERMISSION_DENIED\"}}", &r);
    assert_int_equal(r.cls, IMGQ_CLASS_AUTH);
    imgq_provider_result_clear(&r);
    gparse(503, "not json", &r);
    assert_int_equal(r.cls, IMGQ_CLASS_SERVER);
    imgq_provider_result_clear(&r);
}

static void test_gemini_aspects_and_registry(void **state)
{
    assert_string_equal(imgq_gemini_aspect(1024, 1024), "1:1");
    assert_string_equal(imgq_gemini_aspect(1344, 768), "16:9");
    assert_null(imgq_gemini_aspect(1000, 1000));
    assert_non_null(imgq_provider_ops_find("openai-images"));
    assert_ptr_equal(imgq_provider_ops_find("gemini-generate-content")->parse, imgq_gemini_parse);
    assert_ptr_equal(imgq_provider_ops_find("seedream")->parse, imgq_seedream_parse);
    assert_ptr_equal(imgq_provider_ops_find("dashscope")->parse_poll, imgq_dashscope_parse_poll);
    assert_null(imgq_provider_ops_find("imagen-predict"));
    assert_null(imgq_provider_ops_find(NULL));
}

/* ---- Seedream ----------------------------------------------------------------------------- */

static void sparse(long status, const char *body, const struct imgq_http_header *h, size_t nh,
                   struct imgq_provider_result *out)
{
    imgq_http_response res = {.status = status,
                              .error = "",
                              .body = (const unsigned char *)body,
                              .body_len = strlen(body),
                              .headers = h,
                              .nheaders = nh};
    memset(out, 0x5a, sizeof *out);
    imgq_seedream_parse(&res, 1, out);
}

static void test_seedream(void **state)
{
    struct imgq_provider_result r;
    sparse(200,
           "{\"model\":\"seedream-4-0\",\"created\":1757323224,\"data\":[{\"b64_json\":\"" HELLO_B64
           "\",\"size\":\"2048x2048\"}],\"usage\":{\"generated_images\":1,\"output_tokens\":16384,"
           "\"total_tokens\":16384}}",
           NULL, 0, &r);
    assert_int_equal(r.cls, IMGQ_CLASS_NONE);
    assert_int_equal(r.nimages, 1);
    assert_memory_equal(r.images[0], "hello", 5);
    assert_true(r.usage_present);
    assert_int_equal(r.usage.images, 1);
    assert_int_equal(r.usage.image_out, 16384);
    imgq_provider_result_clear(&r);

    sparse(400,
           "{\"error\":{\"code\":\"OutputImageSensitiveContentDetected\",\"message\":\"The request "
           "failed because the output image may contain sensitive information.\",\"param\":\"\","
           "\"type\":\"BadRequest\"}}",
           NULL, 0, &r);
    assert_int_equal(r.cls, IMGQ_CLASS_CONTENT_POLICY);
    assert_string_equal(r.code, "OutputImageSensitiveContentDetected");
    imgq_provider_result_clear(&r);
    sparse(400, "{\"error\":{\"code\":\"InvalidParameter\",\"param\":\"size\"}}", NULL, 0, &r);
    assert_int_equal(r.cls, IMGQ_CLASS_INVALID_REQUEST);
    imgq_provider_result_clear(&r);
    struct imgq_http_header ra = {"retry-after", "3"};
    sparse(429, "{\"error\":{\"code\":\"RateLimitExceeded.EndpointRPMExceeded\"}}", &ra, 1, &r);
    assert_int_equal(r.cls, IMGQ_CLASS_RATE_LIMIT);
    assert_int_equal(r.retry_after_ms, 3000);
    imgq_provider_result_clear(&r);
    sparse(401, "{\"error\":{\"code\":\"AuthenticationError\"}}", NULL, 0, &r);
    assert_int_equal(r.cls, IMGQ_CLASS_AUTH);
    imgq_provider_result_clear(&r);
    sparse(200, "{\"data\":[]}", NULL, 0, &r);
    assert_int_equal(r.cls, IMGQ_CLASS_BAD_RESPONSE);
    imgq_provider_result_clear(&r);
}

/* Gemini: promptTokenCount and candidatesTokenCount are required; the details must be lists of
 * objects whose tokenCount, if present, is a count. */
static const struct bad_usage gemini_bad[] = {
    {"{}", "usageMetadata.promptTokenCount: missing"},
    {"{\"promptTokenCount\":12}", "usageMetadata.candidatesTokenCount: missing"},
    {"{\"promptTokenCount\":12,\"candidatesTokenCount\":\"1290\"}",
     "usageMetadata.candidatesTokenCount: \"1290\" is not a count"},
    {"{\"promptTokenCount\":-12,\"candidatesTokenCount\":1290}",
     "usageMetadata.promptTokenCount: -12 is not a count"},
    {"{\"promptTokenCount\":12,\"candidatesTokenCount\":1290.5}",
     "usageMetadata.candidatesTokenCount: 1290.5 is not a count"},
    {"{\"promptTokenCount\":12,\"candidatesTokenCount\":9223372036854775807}",
     "usageMetadata.candidatesTokenCount: 9223372036854775807 is beyond"},
    {"{\"promptTokenCount\":12,\"candidatesTokenCount\":0}",
     "usageMetadata.candidatesTokenCount: 0 for 1 image(s) returned"},
    {"{\"promptTokenCount\":12,\"candidatesTokenCount\":1290,\"promptTokensDetails\":"
     "[{\"modality\":\"IMAGE\",\"tokenCount\":\"5\"}]}",
     "usageMetadata.promptTokensDetails[0].tokenCount: \"5\" is not a count"},
    {"{\"promptTokenCount\":12,\"candidatesTokenCount\":1290,\"candidatesTokensDetails\":"
     "[{\"modality\":\"IMAGE\",\"tokenCount\":1290},{\"modality\":\"TEXT\","
     "\"tokenCount\":-3}]}",
     "usageMetadata.candidatesTokensDetails[1].tokenCount: -3 is not a count"},
    {"{\"promptTokenCount\":12,\"candidatesTokenCount\":1290,\"promptTokensDetails\":{}}",
     "usageMetadata.promptTokensDetails: not a list"},
    {"{\"promptTokenCount\":12,\"candidatesTokenCount\":1290,\"promptTokensDetails\":[7]}",
     "usageMetadata.promptTokensDetails[0]: not an object"},
    {"{\"promptTokenCount\":12,\"candidatesTokenCount\":1290,\"promptTokensDetails\":["
     "{\"modality\":\"IMAGE\",\"tokenCount\":1125899906842624},"
     "{\"modality\":\"IMAGE\",\"tokenCount\":1}]}",
     "usageMetadata.promptTokensDetails: the IMAGE counts add up beyond"},
    {"{\"promptTokenCount\":12,\"candidatesTokenCount\":-99999999999999999999}",
     "the answer has a number too large for a 64-bit integer"},
    {"7", "usageMetadata: not an object"},
};

static void test_gemini_unusable_usage(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof gemini_bad / sizeof gemini_bad[0]; i++) {
        char body[768];
        snprintf(body, sizeof body,
                 "{\"candidates\":[{\"content\":{\"parts\":[{\"inlineData\":{\"data\":\"" HELLO_B64
                 "\"}}]},\"finishReason\":\"STOP\"}],\"usageMetadata\":%s}",
                 gemini_bad[i].usage);
        struct imgq_provider_result r;
        gparse(200, body, &r);
        assert_unusable(&r, 1, gemini_bad[i].why);
        imgq_provider_result_clear(&r);
    }
    /* proto3 JSON leaves out zero counts: a detail without tokenCount is 0, not unusable. */
    struct imgq_provider_result r;
    gparse(200,
           "{\"candidates\":[{\"content\":{\"parts\":[{\"inlineData\":{\"data\":\"" HELLO_B64
           "\"}}]},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":12,"
           "\"candidatesTokenCount\":1290,\"promptTokensDetails\":[{\"modality\":\"TEXT\","
           "\"tokenCount\":12},{\"modality\":\"IMAGE\"}]}}",
           &r);
    assert_true(r.usage_present);
    assert_string_equal(r.usage_unusable, "");
    assert_int_equal(r.usage.text_in, 12);
    assert_int_equal(r.usage.image_in, 0);
    assert_int_equal(r.usage.image_out, 1290);
    imgq_provider_result_clear(&r);
}

/* Seedream: generated_images is the billing count, required and not 0; output_tokens, if
 * present, is a count. */
static const struct bad_usage seedream_bad[] = {
    {"{}", "usage.generated_images: missing"},
    {"{\"output_tokens\":16384}", "usage.generated_images: missing"},
    {"{\"generated_images\":\"1\"}", "usage.generated_images: \"1\" is not a count"},
    {"{\"generated_images\":-1}", "usage.generated_images: -1 is not a count"},
    {"{\"generated_images\":1.5}", "usage.generated_images: 1.5 is not a count"},
    {"{\"generated_images\":9223372036854775807}",
     "usage.generated_images: 9223372036854775807 is beyond"},
    {"{\"generated_images\":0}", "usage.generated_images: 0 for 1 image(s) returned"},
    {"{\"generated_images\":1,\"output_tokens\":\"16384\"}",
     "usage.output_tokens: \"16384\" is not a count"},
    {"{\"generated_images\":18446744073709551616}",
     "the answer has a number too large for a 64-bit integer"},
    {"true", "usage: not an object"},
};

static void test_seedream_unusable_usage(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof seedream_bad / sizeof seedream_bad[0]; i++) {
        char body[512];
        snprintf(body, sizeof body,
                 "{\"model\":\"seedream-4-0\",\"data\":[{\"b64_json\":\"" HELLO_B64
                 "\"}],\"usage\":%s}",
                 seedream_bad[i].usage);
        struct imgq_provider_result r;
        sparse(200, body, NULL, 0, &r);
        assert_unusable(&r, 1, seedream_bad[i].why);
        imgq_provider_result_clear(&r);
    }
}

static void test_seedream_build_references(void **state)
{
    setenv("NO_PROXY", "127.0.0.1", 1);
    setenv("no_proxy", "127.0.0.1", 1);
    char *refs[] = {"s3://b/a.png", "https://x/b.jpg", "s3://b/c.png"};
    struct imgq_ref_data rd[3] = {{ref_png, sizeof ref_png, "image/png"},
                                  {ref_jpg, sizeof ref_jpg, "image/jpeg"},
                                  {ref_png, sizeof ref_png, "image/png"}};
    struct imgq_job_spec spec = {.model = "seedream-4-5",
                                 .prompt = "x",
                                 .n = 1,
                                 .size = "2048x2048",
                                 .width = 2048,
                                 .height = 2048,
                                 .refs = refs,
                                 .nrefs = 1,
                                 .ref_data = rd,
                                 .route = "list"};
    struct capture *c = malloc(sizeof *c);
    assert_non_null(c);
    /* One reference: "image" is a string, a data URI of the sniffed type. */
    json_t *o = capture_built(imgq_seedream_build, &spec, 1, "/api/v3", c);
    assert_true(strncmp(c->buf, "POST /api/v3/images/generations HTTP/1.1\r\n", 42) == 0);
    assert_string_equal(json_string_value(json_object_get(o, "image")),
                        "data:image/png;base64," REF_PNG_B64);
    assert_string_equal(json_string_value(json_object_get(o, "sequential_image_generation")),
                        "disabled");
    json_decref(o);
    /* Several: an array, in the job's order. */
    spec.nrefs = 3;
    o = capture_built(imgq_seedream_build, &spec, 1, "/api/v3", c);
    json_t *images = json_object_get(o, "image");
    assert_int_equal(json_array_size(images), 3);
    assert_string_equal(json_string_value(json_array_get(images, 0)),
                        "data:image/png;base64," REF_PNG_B64);
    assert_string_equal(json_string_value(json_array_get(images, 1)),
                        "data:image/jpeg;base64," REF_JPG_B64);
    assert_string_equal(json_string_value(json_array_get(images, 2)),
                        "data:image/png;base64," REF_PNG_B64);
    json_decref(o);
    /* Not fetched: empty data URIs (the API's 400), never a generation without them. */
    spec.ref_data = NULL;
    spec.nrefs = 2;
    o = capture_built(imgq_seedream_build, &spec, 1, "/api/v3", c);
    images = json_object_get(o, "image");
    assert_int_equal(json_array_size(images), 2);
    assert_string_equal(json_string_value(json_array_get(images, 1)), "data:image/png;base64,");
    json_decref(o);
    /* None: no "image" at all. */
    spec.nrefs = 0;
    o = capture_built(imgq_seedream_build, &spec, 1, "/api/v3", c);
    assert_null(json_object_get(o, "image"));
    json_decref(o);
    free(c);

    /* Billed per generated image; the usage (with input_images) is kept as returned. */
    struct imgq_provider_result r;
    sparse(200,
           "{\"model\":\"seedream-4-5\",\"data\":[{\"b64_json\":\"" HELLO_B64
           "\"}],\"usage\":{\"input_images\":3,\"generated_images\":1,\"output_tokens\":16384,"
           "\"total_tokens\":16384}}",
           NULL, 0, &r);
    assert_int_equal(r.cls, IMGQ_CLASS_NONE);
    assert_int_equal(r.usage.images, 1);
    assert_int_equal(json_integer_value(json_object_get(r.usage_json, "input_images")), 3);
    imgq_provider_result_clear(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_success_with_usage),
        cmocka_unit_test(test_gemini_success),
        cmocka_unit_test(test_seedream),
        cmocka_unit_test(test_gemini_unusable_usage),
        cmocka_unit_test(test_seedream_unusable_usage),
        cmocka_unit_test(test_gemini_refusals),
        cmocka_unit_test(test_gemini_aspects_and_registry),
        cmocka_unit_test(test_usage_shapes),
        cmocka_unit_test(test_openai_unusable_usage),
        cmocka_unit_test(test_success_without_usage),
        cmocka_unit_test(test_success_unusable),
        cmocka_unit_test(test_rate_limit),
        cmocka_unit_test(test_server_errors),
        cmocka_unit_test(test_content_policy),
        cmocka_unit_test(test_invalid_request),
        cmocka_unit_test(test_auth),
        cmocka_unit_test(test_transport_errors),
        cmocka_unit_test(test_class_names),
        cmocka_unit_test(test_build_request),
        cmocka_unit_test(test_build_edits),
        cmocka_unit_test(test_edits_usage),
        cmocka_unit_test(test_gemini_build_references),
        cmocka_unit_test(test_seedream_build_references),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
