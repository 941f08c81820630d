/*
 * test_provider_async.c - the asynchronous adapters (DashScope, Replicate, fal, BFL) on bytes:
 * the requests they build (captured by a one-shot loopback server), submit answers, every poll
 * state, done with result URLs and usage, every error class, polling from the handle alone;
 * which URLs may receive a key; downloading result images.
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
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "imgq/provider.h"

typedef void (*parse_fn)(const imgq_http_response *res, int n, struct imgq_provider_result *out);

/* ---- helpers ------------------------------------------------------------------------------ */

static void parse_h(parse_fn fn, long status, const char *body, const struct imgq_http_header *h,
                    size_t nh, struct imgq_provider_result *out)
{
    imgq_http_response res = {.status = status,
                              .error = "",
                              .body = (const unsigned char *)body,
                              .body_len = strlen(body),
                              .headers = h,
                              .nheaders = nh};
    memset(out, 0x5a, sizeof *out); /* parse must initialise everything */
    fn(&res, 1, out);
}

static void parse(parse_fn fn, long status, const char *body, struct imgq_provider_result *out)
{
    parse_h(fn, status, body, NULL, 0, out);
}

static void assert_contains(const char *haystack, const char *needle)
{
    if (!strstr(haystack, needle))
        fail_msg("expected \"%s\" in \"%s\"", needle, haystack);
}

/* A final failure of class c: nothing pending, no URLs, no usage. */
static void assert_failed(struct imgq_provider_result *r, enum imgq_error_class c)
{
    if (r->cls != c)
        fail_msg("class %s, expected %s (%s)", imgq_error_class_name(r->cls),
                 imgq_error_class_name(c), r->message);
    assert_false(r->pending);
    assert_int_equal(r->nimage_urls, 0);
    assert_false(r->usage_present);
    assert_true(r->message[0] != '\0');
    imgq_provider_result_clear(r);
}

static void assert_pending(struct imgq_provider_result *r, const char *handle)
{
    if (r->cls != IMGQ_CLASS_NONE || !r->pending)
        fail_msg("not pending: %s (%s)", imgq_error_class_name(r->cls), r->message);
    assert_string_equal(r->poll, handle);
    assert_int_equal(r->nimage_urls, 0);
    assert_false(r->usage_present);
}

static void assert_done(struct imgq_provider_result *r, int nurls, int64_t images)
{
    if (r->cls != IMGQ_CLASS_NONE)
        fail_msg("failed: %s (%s)", imgq_error_class_name(r->cls), r->message);
    assert_false(r->pending);
    assert_int_equal(r->nimage_urls, nurls);
    assert_int_equal(r->nimages, 0);
    assert_true(r->usage_present);
    assert_string_equal(r->usage_unusable, "");
    assert_int_equal(r->usage.images, images);
}

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

static struct capture *capture_start(void)
{
    struct capture *c = calloc(1, sizeof *c);
    assert_non_null(c);
    c->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(c->listen_fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(c->listen_fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(c->listen_fd, 1), 0);
    socklen_t alen = sizeof a;
    assert_int_equal(getsockname(c->listen_fd, (struct sockaddr *)&a, &alen), 0);
    c->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&c->thread, NULL, capture_run, c), 0);
    return c;
}

/* Send req (freed) to the capture server and stop it; c->buf holds the request's bytes. */
static void capture_send(struct capture *c, imgq_http_request *req)
{
    assert_non_null(req);
    imgq_http_response *res = NULL;
    int rc = imgq_http_perform_sync(req, &res);
    shutdown(c->listen_fd, SHUT_RDWR);
    pthread_join(c->thread, NULL);
    close(c->listen_fd);
    imgq_http_request_free(req);
    if (rc != 0)
        fail_msg("request not sent: %d %s", rc, res ? res->error : "");
    assert_int_equal(res->status, 200);
    imgq_http_response_free(res);
}

static void assert_line(const struct capture *c, const char *line)
{
    char want[512];
    snprintf(want, sizeof want, "\r\n%s\r\n", line);
    if (!strcasestr(c->buf, want))
        fail_msg("expected header \"%s\" in:\n%s", line, c->buf);
}

static void assert_request_line(const struct capture *c, const char *line)
{
    if (strncmp(c->buf, line, strlen(line)) != 0 || strncmp(c->buf + strlen(line), "\r\n", 2))
        fail_msg("expected request line \"%s\" in:\n%s", line, c->buf);
}

static json_t *captured_json(const struct capture *c)
{
    const char *body = strstr(c->buf, "\r\n\r\n");
    assert_non_null(body);
    json_error_t je;
    json_t *o = json_loads(body + 4, 0, &je);
    if (!o)
        fail_msg("request body is not JSON (%s): %s", je.text, body + 4);
    return o;
}

static const char *sget(json_t *o, const char *path)
{
    /* "a.b" -> o["a"]["b"] */
    char key[64];
    const char *dot = strchr(path, '.');
    if (!dot)
        return json_string_value(json_object_get(o, path));
    snprintf(key, sizeof key, "%.*s", (int)(dot - path), path);
    return sget(json_object_get(o, key), dot + 1);
}

static json_t *jget(json_t *o, const char *path)
{
    char key[64];
    const char *dot = strchr(path, '.');
    if (!dot)
        return json_object_get(o, path);
    snprintf(key, sizeof key, "%.*s", (int)(dot - path), path);
    return jget(json_object_get(o, key), dot + 1);
}

static const struct imgq_job_spec full_spec = {.model = "catalog-name",
                                               .prompt = "a red \"fox\", caf\xc3\xa9",
                                               .n = 4,
                                               .size = "1344x768",
                                               .width = 1344,
                                               .height = 768,
                                               .output_format = "webp",
                                               .has_seed = true,
                                               .seed = 42,
                                               .negative_prompt = "blurry",
                                               .has_guidance = true,
                                               .guidance_scale = 3.5,
                                               .route = "list",
                                               .team = "acme"};

static void no_proxy(void)
{
    setenv("NO_PROXY", "*", 1);
    setenv("no_proxy", "*", 1);
}

/* ---- DashScope ---------------------------------------------------------------------------- */

static void test_dashscope_build(void **state)
{
    no_proxy();
    struct capture *c = capture_start();
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%d", c->port);
    struct imgq_provider_endpoint ep = {
        .base_url = base, .api_key = "sk-ds", .timeout_ms = 5000, .model_id = "qwen-image-plus"};
    capture_send(c, imgq_dashscope_build(&ep, &full_spec, 2));
    assert_request_line(c, "POST /api/v1/services/aigc/text2image/image-synthesis HTTP/1.1");
    assert_line(c, "Authorization: Bearer sk-ds");
    assert_line(c, "X-DashScope-Async: enable");
    assert_line(c, "Content-Type: application/json");
    json_t *o = captured_json(c);
    assert_string_equal(sget(o, "model"), "qwen-image-plus");
    assert_string_equal(sget(o, "input.prompt"), full_spec.prompt);
    assert_string_equal(sget(o, "input.negative_prompt"), "blurry");
    assert_string_equal(sget(o, "parameters.size"), "1344*768");
    assert_int_equal(json_integer_value(jget(o, "parameters.n")), 2);
    assert_int_equal(json_integer_value(jget(o, "parameters.seed")), 42);
    assert_true(json_is_false(jget(o, "parameters.watermark")));
    json_decref(o);
    free(c);

    /* No model id: the spec's model; optional fields left out. */
    c = capture_start();
    snprintf(base, sizeof base, "http://127.0.0.1:%d", c->port);
    ep.model_id = NULL;
    struct imgq_job_spec bare = {.model = "wan2.2-t2i-flash", .prompt = "x", .n = 1};
    capture_send(c, imgq_dashscope_build(&ep, &bare, 1));
    o = captured_json(c);
    assert_string_equal(sget(o, "model"), "wan2.2-t2i-flash");
    assert_null(jget(o, "input.negative_prompt"));
    assert_null(jget(o, "parameters.seed"));
    assert_null(jget(o, "parameters.size"));
    json_decref(o);
    free(c);

    /* A new process polls from the handle alone. */
    c = capture_start();
    snprintf(base, sizeof base, "http://127.0.0.1:%d", c->port);
    struct imgq_provider_endpoint fresh = {.base_url = base, .api_key = "sk-ds"};
    capture_send(c, imgq_dashscope_build_poll(&fresh, "86ecf553-d340-4e21"));
    assert_request_line(c, "GET /api/v1/tasks/86ecf553-d340-4e21 HTTP/1.1");
    assert_line(c, "Authorization: Bearer sk-ds");
    free(c);
    /* A handle is a path segment, never more. */
    c = capture_start();
    snprintf(base, sizeof base, "http://127.0.0.1:%d", c->port);
    capture_send(c, imgq_dashscope_build_poll(&fresh, "../x?y"));
    assert_request_line(c, "GET /api/v1/tasks/..%2Fx%3Fy HTTP/1.1");
    free(c);
}

/* A job with reference images: the synchronous multimodal-generation API under the edit model. */
static void test_dashscope_edit(void **state)
{
    no_proxy();
    static uint8_t png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 1, 2, 3};
    static uint8_t jpg[] = {0xff, 0xd8, 0xff, 0xe0, 0, 0x10, 'J', 'F', 'I', 'F'};
    char *refs[] = {"s3://b/a.png", "https://x/b.jpg"};
    struct imgq_ref_data rd[2] = {{png, sizeof png, "image/png"}, {jpg, sizeof jpg, "image/jpeg"}};
    struct imgq_job_spec spec = full_spec;
    spec.refs = refs;
    spec.nrefs = 2;
    spec.ref_data = rd;
    struct capture *c = capture_start();
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%d", c->port);
    struct imgq_provider_endpoint ep = {.base_url = base,
                                        .api_key = "sk-ds",
                                        .timeout_ms = 5000,
                                        .model_id = "qwen-image-plus",
                                        .edit_model_id = "qwen-image-2.0"};
    capture_send(c, imgq_dashscope_build(&ep, &spec, 2));
    assert_request_line(c, "POST /api/v1/services/aigc/multimodal-generation/generation HTTP/1.1");
    assert_line(c, "Authorization: Bearer sk-ds");
    assert_null(strcasestr(c->buf, "X-DashScope-Async")); /* a synchronous API */
    json_t *o = captured_json(c);
    assert_string_equal(sget(o, "model"), "qwen-image-2.0");
    json_t *messages = jget(o, "input.messages");
    assert_int_equal(json_array_size(messages), 1);
    assert_string_equal(sget(json_array_get(messages, 0), "role"), "user");
    json_t *content = json_object_get(json_array_get(messages, 0), "content");
    assert_int_equal(json_array_size(content), 3); /* the images in order, then the text */
    assert_string_equal(sget(json_array_get(content, 0), "image"),
                        "data:image/png;base64,iVBORw0KGgoBAgM=");
    assert_string_equal(sget(json_array_get(content, 1), "image"),
                        "data:image/jpeg;base64,/9j/4AAQSkZJRg==");
    assert_string_equal(sget(json_array_get(content, 2), "text"), full_spec.prompt);
    assert_null(jget(o, "input.prompt"));
    assert_string_equal(sget(o, "parameters.size"), "1344*768");
    assert_string_equal(sget(o, "parameters.negative_prompt"), "blurry");
    assert_int_equal(json_integer_value(jget(o, "parameters.n")), 2);
    assert_int_equal(json_integer_value(jget(o, "parameters.seed")), 42);
    assert_true(json_is_false(jget(o, "parameters.watermark")));
    json_decref(o);
    free(c);

    /* No edit model: the model id edits; references not fetched go as empty data URIs. */
    c = capture_start();
    snprintf(base, sizeof base, "http://127.0.0.1:%d", c->port);
    ep.edit_model_id = NULL;
    spec.ref_data = NULL;
    spec.nrefs = 1;
    capture_send(c, imgq_dashscope_build(&ep, &spec, 1));
    o = captured_json(c);
    assert_string_equal(sget(o, "model"), "qwen-image-plus");
    content = json_object_get(json_array_get(jget(o, "input.messages"), 0), "content");
    assert_int_equal(json_array_size(content), 2);
    assert_string_equal(sget(json_array_get(content, 0), "image"), "data:image/png;base64,");
    json_decref(o);
    free(c);

    /* Its answer: the result URLs at once, billed per usage.image_count. */
    struct imgq_provider_result r;
    parse(imgq_dashscope_parse, 200,
          "{\"output\":{\"choices\":[{\"finish_reason\":\"stop\",\"message\":{\"role\":"
          "\"assistant\",\"content\":[{\"image\":\"https://dashscope-result.oss.aliyuncs.com/"
          "e1.png\"},{\"image\":\"https://dashscope-result.oss.aliyuncs.com/e2.png\"}]}}]},"
          "\"usage\":{\"width\":1344,\"height\":768,\"image_count\":2},\"request_id\":\"e-1\"}",
          &r);
    assert_done(&r, 2, 2);
    assert_string_equal(r.image_urls[1], "https://dashscope-result.oss.aliyuncs.com/e2.png");
    assert_string_equal(r.request_id, "e-1");
    assert_int_equal(json_integer_value(json_object_get(r.usage_json, "width")), 1344);
    imgq_provider_result_clear(&r);
    /* Without usage: the URLs are counted. */
    parse(imgq_dashscope_parse, 200,
          "{\"output\":{\"choices\":[{\"message\":{\"content\":[{\"image\":"
          "\"https://x.example/1.png\"}]}}]}}",
          &r);
    assert_done(&r, 1, 1);
    imgq_provider_result_clear(&r);
    /* Unusable answers. */
    parse(imgq_dashscope_parse, 200,
          "{\"output\":{\"choices\":[{\"message\":{\"content\":[{\"text\":\"no\"}]}}]}}", &r);
    assert_failed(&r, IMGQ_CLASS_BAD_RESPONSE);
    parse(imgq_dashscope_parse, 200,
          "{\"output\":{\"choices\":[{\"message\":{\"content\":[{\"image\":"
          "\"file:///etc/passwd\"}]}}]}}",
          &r);
    assert_failed(&r, IMGQ_CLASS_BAD_RESPONSE);
    /* The synchronous API refuses content and bad input with HTTP 400. */
    parse(imgq_dashscope_parse, 400,
          "{\"request_id\":\"r\",\"code\":\"DataInspectionFailed\",\"message\":"
          "\"Input data may contain inappropriate content.\"}",
          &r);
    assert_failed(&r, IMGQ_CLASS_CONTENT_POLICY);
    parse(imgq_dashscope_parse, 400,
          "{\"request_id\":\"r\",\"code\":\"InvalidParameter\",\"message\":"
          "\"The image format is not supported.\"}",
          &r);
    assert_failed(&r, IMGQ_CLASS_INVALID_REQUEST);
}

static void test_dashscope_flow(void **state)
{
    struct imgq_provider_result r;
    parse(imgq_dashscope_parse, 200,
          "{\"output\":{\"task_status\":\"PENDING\",\"task_id\":\"86ecf553-d340\"},"
          "\"request_id\":\"5fd2-req\"}",
          &r);
    assert_pending(&r, "86ecf553-d340");
    assert_string_equal(r.task_status, "PENDING");
    assert_string_equal(r.request_id, "5fd2-req");
    assert_int_equal(r.poll_after_ms, -1);
    imgq_provider_result_clear(&r);

    parse(imgq_dashscope_parse_poll, 200,
          "{\"request_id\":\"r2\",\"output\":{\"task_id\":\"86ecf553-d340\","
          "\"task_status\":\"RUNNING\",\"submit_time\":\"2026-01-01 10:00:00.000\"}}",
          &r);
    assert_pending(&r, "86ecf553-d340");
    assert_string_equal(r.task_status, "RUNNING");
    imgq_provider_result_clear(&r);

    parse(imgq_dashscope_parse_poll, 200,
          "{\"request_id\":\"r3\",\"output\":{\"task_id\":\"86ecf553-d340\","
          "\"task_status\":\"SUCCEEDED\",\"results\":[{\"orig_prompt\":\"x\","
          "\"actual_prompt\":\"x\",\"url\":\"https://dashscope-result.oss.aliyuncs.com/1.png\"},"
          "{\"url\":\"https://dashscope-result.oss.aliyuncs.com/2.png\"}],"
          "\"task_metrics\":{\"TOTAL\":2,\"SUCCEEDED\":2,\"FAILED\":0}},"
          "\"usage\":{\"image_count\":2}}",
          &r);
    assert_done(&r, 2, 2);
    assert_string_equal(r.image_urls[0], "https://dashscope-result.oss.aliyuncs.com/1.png");
    assert_string_equal(r.image_urls[1], "https://dashscope-result.oss.aliyuncs.com/2.png");
    assert_int_equal(json_integer_value(json_object_get(r.usage_json, "image_count")), 2);
    assert_string_equal(r.task_status, "SUCCEEDED");
    imgq_provider_result_clear(&r);

    /* One of two moderated away: the other is delivered, one image billed. */
    parse(imgq_dashscope_parse_poll, 200,
          "{\"output\":{\"task_id\":\"t\",\"task_status\":\"SUCCEEDED\",\"results\":["
          "{\"code\":\"DataInspectionFailed\",\"message\":\"inappropriate\"},"
          "{\"url\":\"https://x.example/2.png\"}]},\"usage\":{\"image_count\":1}}",
          &r);
    assert_done(&r, 1, 1);
    imgq_provider_result_clear(&r);
    /* No usage: count the URLs. */
    parse(imgq_dashscope_parse_poll, 200,
          "{\"output\":{\"task_id\":\"t\",\"task_status\":\"SUCCEEDED\",\"results\":["
          "{\"url\":\"https://x.example/2.png\"}]}}",
          &r);
    assert_done(&r, 1, 1);
    assert_null(r.usage_json);
    imgq_provider_result_clear(&r);
}

static void test_dashscope_errors(void **state)
{
    struct imgq_provider_result r;
    parse(imgq_dashscope_parse, 400,
          "{\"request_id\":\"r\",\"code\":\"InvalidParameter\",\"message\":\"size is invalid\"}",
          &r);
    assert_string_equal(r.code, "InvalidParameter");
    assert_string_equal(r.message, "size is invalid");
    assert_string_equal(r.request_id, "r");
    assert_failed(&r, IMGQ_CLASS_INVALID_REQUEST);
    parse(imgq_dashscope_parse, 400,
          "{\"code\":\"DataInspectionFailed\",\"message\":\"Input data may contain "
          "inappropriate content.\"}",
          &r);
    assert_string_equal(r.code, "DataInspectionFailed");
    assert_failed(&r, IMGQ_CLASS_CONTENT_POLICY);
    parse(imgq_dashscope_parse, 401, "{\"code\":\"InvalidApiKey\",\"message\":\"Invalid key\"}",
          &r);
    assert_failed(&r, IMGQ_CLASS_AUTH);
    parse(imgq_dashscope_parse, 403, "{\"code\":\"Arrearage\",\"message\":\"overdue\"}", &r);
    assert_failed(&r, IMGQ_CLASS_AUTH);
    static const struct imgq_http_header ra[] = {{"Retry-After", "2"}};
    parse_h(imgq_dashscope_parse, 429,
            "{\"code\":\"Throttling.RateQuota\",\"message\":\"Requests rate limit exceeded\"}", ra,
            1, &r);
    assert_int_equal(r.retry_after_ms, 2000);
    assert_string_equal(r.code, "Throttling.RateQuota");
    assert_failed(&r, IMGQ_CLASS_RATE_LIMIT);
    parse(imgq_dashscope_parse, 429, "{\"code\":\"Throttling.AllocationQuota\"}", &r);
    assert_int_equal(r.retry_after_ms, -1);
    assert_failed(&r, IMGQ_CLASS_RATE_LIMIT);
    parse(imgq_dashscope_parse, 500, "{\"code\":\"InternalError\",\"message\":\"oops\"}", &r);
    assert_failed(&r, IMGQ_CLASS_SERVER);
    parse(imgq_dashscope_parse, 502, "<html>bad gateway</html>", &r);
    assert_string_equal(r.message, "HTTP 502");
    assert_failed(&r, IMGQ_CLASS_SERVER);
    parse(imgq_dashscope_parse, 200, "{\"request_id\":\"r\"}", &r);
    assert_failed(&r, IMGQ_CLASS_BAD_RESPONSE);
    parse(imgq_dashscope_parse, 200, "{\"output\":{\"task_status\":\"PENDING\"}}", &r);
    assert_failed(&r, IMGQ_CLASS_BAD_RESPONSE);

    /* Task states. */
    parse(imgq_dashscope_parse_poll, 200,
          "{\"output\":{\"task_id\":\"t\",\"task_status\":\"FAILED\",\"code\":"
          "\"DataInspectionFailed\",\"message\":\"Output data may contain inappropriate "
          "content.\"}}",
          &r);
    assert_string_equal(r.code, "DataInspectionFailed");
    assert_contains(r.message, "inappropriate");
    assert_string_equal(r.task_status, "FAILED");
    assert_failed(&r, IMGQ_CLASS_CONTENT_POLICY);
    parse(imgq_dashscope_parse_poll, 200,
          "{\"output\":{\"task_id\":\"t\",\"task_status\":\"FAILED\",\"code\":"
          "\"InternalError.Algo\",\"message\":\"algo error\"}}",
          &r);
    assert_string_equal(r.code, "InternalError.Algo");
    assert_failed(&r, IMGQ_CLASS_SERVER);
    parse(imgq_dashscope_parse_poll, 200, "{\"output\":{\"task_status\":\"CANCELED\"}}", &r);
    assert_failed(&r, IMGQ_CLASS_SERVER);
    parse(imgq_dashscope_parse_poll, 200, "{\"output\":{\"task_status\":\"UNKNOWN\"}}", &r);
    assert_failed(&r, IMGQ_CLASS_SERVER);
    parse(imgq_dashscope_parse_poll, 200,
          "{\"output\":{\"task_id\":\"t\",\"task_status\":\"SUCCEEDED\",\"results\":["
          "{\"code\":\"DataInspectionFailed\",\"message\":\"inappropriate\"}]}}",
          &r);
    assert_string_equal(r.code, "DataInspectionFailed");
    assert_failed(&r, IMGQ_CLASS_CONTENT_POLICY);
    parse(imgq_dashscope_parse_poll, 200,
          "{\"output\":{\"task_id\":\"t\",\"task_status\":\"SUCCEEDED\",\"results\":[]}}", &r);
    assert_failed(&r, IMGQ_CLASS_BAD_RESPONSE);
    parse(imgq_dashscope_parse_poll, 200,
          "{\"output\":{\"task_id\":\"t\",\"task_status\":\"SUCCEEDED\",\"results\":["
          "{\"url\":\"file:///etc/passwd\"}]}}",
          &r);
    assert_failed(&r, IMGQ_CLASS_BAD_RESPONSE);
    parse(imgq_dashscope_parse_poll, 200, "{\"output\":{\"task_status\":\"DANCING\"}}", &r);
    assert_failed(&r, IMGQ_CLASS_BAD_RESPONSE);
    parse(imgq_dashscope_parse_poll, 200, "{\"output\":{\"task_status\":\"RUNNING\"}}", &r);
    assert_pending(&r, ""); /* no task id in the answer: poll the same handle */
    imgq_provider_result_clear(&r);

    imgq_http_response t = {.err = IMGQ_EHTTP,
                            .timed_out = true,
                            .error = "timed out",
                            .body = (const unsigned char *)""};
    memset(&r, 0x5a, sizeof r);
    imgq_dashscope_parse_poll(&t, 1, &r);
    assert_failed(&r, IMGQ_CLASS_TIMEOUT);
}

/* ---- Replicate ---------------------------------------------------------------------------- */

static void test_replicate_build(void **state)
{
    no_proxy();
    struct capture *c = capture_start();
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%d/v1", c->port);
    struct imgq_provider_endpoint ep = {.base_url = base,
                                        .api_key = "r8_key",
                                        .timeout_ms = 5000,
                                        .model_id = "black-forest-labs/flux-schnell"};
    capture_send(c, imgq_replicate_build(&ep, &full_spec, 3));
    assert_request_line(c, "POST /v1/models/black-forest-labs/flux-schnell/predictions HTTP/1.1");
    assert_line(c, "Authorization: Bearer r8_key");
    assert_line(c, "Prefer: wait=1");
    json_t *o = captured_json(c);
    assert_string_equal(sget(o, "input.prompt"), full_spec.prompt);
    assert_int_equal(json_integer_value(jget(o, "input.num_outputs")), 3);
    assert_int_equal(json_integer_value(jget(o, "input.width")), 1344);
    assert_int_equal(json_integer_value(jget(o, "input.height")), 768);
    assert_string_equal(sget(o, "input.aspect_ratio"), "16:9");
    assert_int_equal(json_integer_value(jget(o, "input.seed")), 42);
    assert_string_equal(sget(o, "input.negative_prompt"), "blurry");
    assert_true(json_real_value(jget(o, "input.guidance")) == 3.5);
    assert_string_equal(sget(o, "input.output_format"), "png");
    assert_null(json_object_get(o, "version"));
    json_decref(o);
    free(c);

    /* A pinned version goes to /predictions; an unusual size is "custom". */
    c = capture_start();
    snprintf(base, sizeof base, "http://127.0.0.1:%d/v1", c->port);
    ep.model_id =
        "stability-ai/sd:5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa";
    struct imgq_job_spec odd = {.model = "m", .prompt = "x", .n = 1, .width = 1000, .height = 600};
    capture_send(c, imgq_replicate_build(&ep, &odd, 1));
    assert_request_line(c, "POST /v1/predictions HTTP/1.1");
    o = captured_json(c);
    assert_string_equal(sget(o, "version"),
                        "5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa");
    assert_string_equal(sget(o, "input.aspect_ratio"), "custom");
    assert_null(jget(o, "input.seed"));
    assert_null(jget(o, "input.negative_prompt"));
    assert_null(jget(o, "input.guidance"));
    json_decref(o);
    free(c);

    /* Fresh process: urls.get on the API host gets the key... */
    c = capture_start();
    snprintf(base, sizeof base, "http://127.0.0.1:%d/v1", c->port);
    struct imgq_provider_endpoint fresh = {.base_url = base, .api_key = "r8_key"};
    char handle[128];
    snprintf(handle, sizeof handle, "http://127.0.0.1:%d/v1/predictions/gm3qorzdhg", c->port);
    capture_send(c, imgq_replicate_build_poll(&fresh, handle));
    assert_request_line(c, "GET /v1/predictions/gm3qorzdhg HTTP/1.1");
    assert_line(c, "Authorization: Bearer r8_key");
    free(c);
    /* ...a URL elsewhere (here: another port) does not. */
    c = capture_start();
    snprintf(handle, sizeof handle, "http://127.0.0.1:%d/v1/predictions/gm3qorzdhg", c->port);
    capture_send(c, imgq_replicate_build_poll(&fresh, handle));
    assert_request_line(c, "GET /v1/predictions/gm3qorzdhg HTTP/1.1");
    assert_null(strcasestr(c->buf, "Authorization"));
    assert_null(strstr(c->buf, "r8_key"));
    free(c);
    /* A bare id handle. */
    c = capture_start();
    snprintf(base, sizeof base, "http://127.0.0.1:%d/v1", c->port);
    capture_send(c, imgq_replicate_build_poll(&fresh, "gm3qorzdhg"));
    assert_request_line(c, "GET /v1/predictions/gm3qorzdhg HTTP/1.1");
    assert_line(c, "Authorization: Bearer r8_key");
    free(c);
}

static void test_replicate_flow(void **state)
{
    struct imgq_provider_result r;
    parse(imgq_replicate_parse, 201,
          "{\"id\":\"gm3qorzdhg\",\"model\":\"black-forest-labs/flux-schnell\",\"version\":"
          "\"dp-1\",\"input\":{\"prompt\":\"x\"},\"logs\":\"\",\"output\":null,\"error\":null,"
          "\"status\":\"starting\",\"created_at\":\"2026-01-01T00:00:00Z\",\"urls\":{"
          "\"cancel\":\"https://api.replicate.com/v1/predictions/gm3qorzdhg/cancel\","
          "\"get\":\"https://api.replicate.com/v1/predictions/gm3qorzdhg\"}}",
          &r);
    assert_pending(&r, "https://api.replicate.com/v1/predictions/gm3qorzdhg");
    assert_string_equal(r.task_status, "starting");
    assert_string_equal(r.request_id, "gm3qorzdhg");
    assert_int_equal(r.poll_after_ms, -1);
    imgq_provider_result_clear(&r);

    /* No urls.get: the id is the handle. */
    parse(imgq_replicate_parse, 201, "{\"id\":\"abc\",\"status\":\"starting\"}", &r);
    assert_pending(&r, "abc");
    imgq_provider_result_clear(&r);

    parse(imgq_replicate_parse_poll, 200,
          "{\"id\":\"gm3qorzdhg\",\"status\":\"processing\",\"output\":null,\"urls\":{"
          "\"get\":\"https://api.replicate.com/v1/predictions/gm3qorzdhg\"}}",
          &r);
    assert_pending(&r, "https://api.replicate.com/v1/predictions/gm3qorzdhg");
    assert_string_equal(r.task_status, "processing");
    imgq_provider_result_clear(&r);

    parse(imgq_replicate_parse_poll, 200,
          "{\"id\":\"gm3qorzdhg\",\"status\":\"succeeded\",\"output\":["
          "\"https://replicate.delivery/xezq/a/out-0.png\","
          "\"https://replicate.delivery/xezq/a/out-1.png\"],\"metrics\":{\"predict_time\":1.2,"
          "\"total_time\":1.5},\"urls\":{\"get\":\"https://api.replicate.com/v1/predictions/g\"}}",
          &r);
    assert_done(&r, 2, 2);
    assert_string_equal(r.image_urls[1], "https://replicate.delivery/xezq/a/out-1.png");
    assert_true(json_real_value(json_object_get(r.usage_json, "predict_time")) == 1.2);
    imgq_provider_result_clear(&r);

    /* Prefer: wait finished in time: the submit answer is final; output may be one URL. */
    parse(imgq_replicate_parse, 201,
          "{\"id\":\"q\",\"status\":\"succeeded\",\"output\":"
          "\"https://replicate.delivery/xezq/b/out.png\"}",
          &r);
    assert_done(&r, 1, 1);
    assert_null(r.usage_json);
    imgq_provider_result_clear(&r);
}

static void test_replicate_errors(void **state)
{
    struct imgq_provider_result r;
    parse(imgq_replicate_parse_poll, 200,
          "{\"id\":\"q\",\"status\":\"failed\",\"error\":\"NSFW content detected. Try running "
          "it again, or try a different prompt.\"}",
          &r);
    assert_contains(r.message, "NSFW");
    assert_string_equal(r.code, "failed");
    assert_failed(&r, IMGQ_CLASS_CONTENT_POLICY);
    parse(imgq_replicate_parse_poll, 200,
          "{\"id\":\"q\",\"status\":\"failed\",\"error\":\"E005: The input or output was "
          "flagged as sensitive.\"}",
          &r);
    assert_failed(&r, IMGQ_CLASS_CONTENT_POLICY);
    parse(imgq_replicate_parse_poll, 200,
          "{\"id\":\"q\",\"status\":\"failed\",\"error\":\"CUDA out of memory\"}", &r);
    assert_failed(&r, IMGQ_CLASS_SERVER);
    parse(imgq_replicate_parse_poll, 200, "{\"id\":\"q\",\"status\":\"failed\",\"error\":{}}", &r);
    assert_failed(&r, IMGQ_CLASS_SERVER);
    parse(imgq_replicate_parse_poll, 200, "{\"id\":\"q\",\"status\":\"canceled\"}", &r);
    assert_string_equal(r.code, "canceled");
    assert_failed(&r, IMGQ_CLASS_SERVER);
    parse(imgq_replicate_parse_poll, 200, "{\"id\":\"q\",\"status\":\"aborted\"}", &r);
    assert_failed(&r, IMGQ_CLASS_SERVER);
    parse(imgq_replicate_parse_poll, 200, "{\"id\":\"q\",\"status\":\"succeeded\",\"output\":null}",
          &r);
    assert_failed(&r, IMGQ_CLASS_BAD_RESPONSE);
    parse(imgq_replicate_parse_poll, 200, "{\"id\":\"\",\"status\":\"starting\"}", &r);
    assert_failed(&r, IMGQ_CLASS_BAD_RESPONSE); /* nothing to poll */
    parse(imgq_replicate_parse_poll, 200,
          "{\"status\":\"starting\",\"urls\":{\"get\":\"javascript:alert(1)\"}}", &r);
    assert_failed(&r, IMGQ_CLASS_BAD_RESPONSE);
    parse(imgq_replicate_parse_poll, 200, "[]", &r);
    assert_failed(&r, IMGQ_CLASS_BAD_RESPONSE);

    parse(imgq_replicate_parse, 422,
          "{\"type\":\"about:blank\",\"title\":\"Input validation failed\",\"status\":422,"
          "\"detail\":\"- input.num_outputs: Must be less than or equal to 4\"}",
          &r);
    assert_contains(r.message, "num_outputs");
    assert_string_equal(r.code, "Input validation failed");
    assert_failed(&r, IMGQ_CLASS_INVALID_REQUEST);
    parse(imgq_replicate_parse, 402,
          "{\"title\":\"Insufficient credit\",\"detail\":\"You have insufficient credit\","
          "\"status\":402}",
          &r);
    assert_failed(&r, IMGQ_CLASS_AUTH);
    parse(imgq_replicate_parse, 401,
          "{\"title\":\"Unauthenticated\",\"detail\":\"You did not pass a valid token\"}", &r);
    assert_failed(&r, IMGQ_CLASS_AUTH);
    static const struct imgq_http_header ra[] = {{"retry-after", "12"}};
    parse_h(imgq_replicate_parse, 429,
            "{\"detail\":\"Request was throttled. Your rate limit resets in ~30s.\","
            "\"status\":429}",
            ra, 1, &r);
    assert_int_equal(r.retry_after_ms, 12000);
    assert_failed(&r, IMGQ_CLASS_RATE_LIMIT);
    parse(imgq_replicate_parse, 429,
          "{\"detail\":\"Request was throttled. Your rate limit resets in ~30s.\","
          "\"status\":429}",
          &r);
    assert_int_equal(r.retry_after_ms, 30000); /* from the text when there is no header */
    assert_failed(&r, IMGQ_CLASS_RATE_LIMIT);
    parse(imgq_replicate_parse, 503, "", &r);
    assert_failed(&r, IMGQ_CLASS_SERVER);
    parse(imgq_replicate_parse_poll, 404, "{\"detail\":\"Not found.\"}", &r);
    assert_failed(&r, IMGQ_CLASS_INVALID_REQUEST);
}

/* ---- fal ---------------------------------------------------------------------------------- */

static void test_fal_build(void **state)
{
    no_proxy();
    struct capture *c = capture_start();
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%d", c->port);
    struct imgq_provider_endpoint ep = {.base_url = base,
                                        .api_key = "fal-id:secret",
                                        .timeout_ms = 5000,
                                        .model_id = "fal-ai/flux/dev"};
    capture_send(c, imgq_fal_build(&ep, &full_spec, 2));
    assert_request_line(c, "POST /fal-ai/flux/dev HTTP/1.1");
    assert_line(c, "Authorization: Key fal-id:secret");
    json_t *o = captured_json(c);
    assert_string_equal(sget(o, "prompt"), full_spec.prompt);
    assert_int_equal(json_integer_value(jget(o, "num_images")), 2);
    assert_int_equal(json_integer_value(jget(o, "image_size.width")), 1344);
    assert_int_equal(json_integer_value(jget(o, "image_size.height")), 768);
    assert_int_equal(json_integer_value(jget(o, "seed")), 42);
    assert_true(json_real_value(jget(o, "guidance_scale")) == 3.5);
    assert_string_equal(sget(o, "output_format"), "png");
    assert_null(jget(o, "negative_prompt")); /* FLUX on fal takes none */
    json_decref(o);
    free(c);

    /* Fresh process, status URL on the queue host: keyed. */
    c = capture_start();
    snprintf(base, sizeof base, "http://127.0.0.1:%d", c->port);
    struct imgq_provider_endpoint fresh = {.base_url = base, .api_key = "fal-id:secret"};
    char handle[160];
    snprintf(handle, sizeof handle, "http://127.0.0.1:%d/fal-ai/flux/requests/80e7/status",
             c->port);
    capture_send(c, imgq_fal_build_poll(&fresh, handle));
    assert_request_line(c, "GET /fal-ai/flux/requests/80e7/status HTTP/1.1");
    assert_line(c, "Authorization: Key fal-id:secret");
    free(c);

    /* Another domain (connected to the capture server): no key. */
    c = capture_start();
    struct imgq_provider_endpoint real = {.base_url = "http://queue.fal.run", .api_key = "k"};
    imgq_http_request *req = imgq_fal_build_poll(&real, "http://fal.media/files/x/requests/1");
    char to[96];
    snprintf(to, sizeof to, "fal.media:80:127.0.0.1:%d", c->port);
    imgq_http_request_add_connect_to(req, to);
    capture_send(c, req);
    assert_request_line(c, "GET /files/x/requests/1 HTTP/1.1");
    assert_null(strcasestr(c->buf, "Authorization"));
    free(c);
    /* Another host under fal.run: fal documents its queue URLs on the base host only, so a
     * sibling host gets no key either. */
    c = capture_start();
    req = imgq_fal_build_poll(&real, "http://rest.alpha.fal.run/requests/1");
    snprintf(to, sizeof to, "rest.alpha.fal.run:80:127.0.0.1:%d", c->port);
    imgq_http_request_add_connect_to(req, to);
    capture_send(c, req);
    assert_null(strcasestr(c->buf, "Authorization"));
    free(c);
}

static void test_fal_flow(void **state)
{
    struct imgq_provider_result r;
    parse(imgq_fal_parse, 200,
          "{\"request_id\":\"80e732af\",\"response_url\":"
          "\"https://queue.fal.run/fal-ai/flux/requests/80e732af\",\"status_url\":"
          "\"https://queue.fal.run/fal-ai/flux/requests/80e732af/status\",\"cancel_url\":"
          "\"https://queue.fal.run/fal-ai/flux/requests/80e732af/cancel\",\"queue_position\":0}",
          &r);
    assert_pending(&r, "https://queue.fal.run/fal-ai/flux/requests/80e732af/status");
    assert_string_equal(r.request_id, "80e732af");
    imgq_provider_result_clear(&r);

    parse(imgq_fal_parse_poll, 202,
          "{\"status\":\"IN_QUEUE\",\"queue_position\":3,\"response_url\":"
          "\"https://queue.fal.run/fal-ai/flux/requests/80e732af\",\"status_url\":"
          "\"https://queue.fal.run/fal-ai/flux/requests/80e732af/status\"}",
          &r);
    assert_pending(&r, "https://queue.fal.run/fal-ai/flux/requests/80e732af/status");
    assert_string_equal(r.task_status, "IN_QUEUE");
    assert_int_equal(r.poll_after_ms, -1);
    imgq_provider_result_clear(&r);
    /* Only response_url given: its status. */
    parse(imgq_fal_parse_poll, 202,
          "{\"status\":\"IN_PROGRESS\",\"logs\":[],\"response_url\":"
          "\"https://queue.fal.run/fal-ai/flux/requests/80e732af\"}",
          &r);
    assert_pending(&r, "https://queue.fal.run/fal-ai/flux/requests/80e732af/status");
    imgq_provider_result_clear(&r);
    /* Neither: poll the same URL again. */
    parse(imgq_fal_parse_poll, 202, "{\"status\":\"IN_PROGRESS\",\"logs\":null}", &r);
    assert_pending(&r, "");
    assert_string_equal(r.task_status, "IN_PROGRESS");
    imgq_provider_result_clear(&r);

    parse(imgq_fal_parse_poll, 200,
          "{\"status\":\"COMPLETED\",\"logs\":[],\"metrics\":{\"inference_time\":0.8},"
          "\"response_url\":\"https://queue.fal.run/fal-ai/flux/requests/80e732af\"}",
          &r);
    assert_pending(&r, "https://queue.fal.run/fal-ai/flux/requests/80e732af");
    assert_int_equal(r.poll_after_ms, 0);
    assert_string_equal(r.task_status, "COMPLETED");
    imgq_provider_result_clear(&r);
    parse(imgq_fal_parse_poll, 200,
          "{\"status\":\"COMPLETED\",\"status_url\":"
          "\"https://queue.fal.run/fal-ai/flux/requests/80e732af/status\"}",
          &r);
    assert_pending(&r, "https://queue.fal.run/fal-ai/flux/requests/80e732af");
    assert_int_equal(r.poll_after_ms, 0);
    imgq_provider_result_clear(&r);

    static const struct imgq_http_header rid[] = {{"x-fal-request-id", "80e732af"}};
    parse_h(imgq_fal_parse_poll, 200,
            "{\"images\":[{\"url\":\"https://fal.media/files/a.png\",\"width\":1344,"
            "\"height\":768,\"content_type\":\"image/png\"},{\"url\":"
            "\"https://fal.media/files/b.png\"}],\"timings\":{\"inference\":0.75},\"seed\":1,"
            "\"has_nsfw_concepts\":[false,false],\"prompt\":\"x\"}",
            rid, 1, &r);
    assert_done(&r, 2, 2);
    assert_string_equal(r.image_urls[0], "https://fal.media/files/a.png");
    assert_null(r.usage_json);
    assert_string_equal(r.request_id, "80e732af");
    imgq_provider_result_clear(&r);
    /* A blanked image is dropped but billed. */
    parse(imgq_fal_parse_poll, 200,
          "{\"images\":[{\"url\":\"https://fal.media/files/a.png\"},{\"url\":"
          "\"https://fal.media/files/b.png\"}],\"has_nsfw_concepts\":[true,false]}",
          &r);
    assert_done(&r, 1, 2);
    assert_string_equal(r.image_urls[0], "https://fal.media/files/b.png");
    imgq_provider_result_clear(&r);
}

static void test_fal_errors(void **state)
{
    struct imgq_provider_result r;
    parse(imgq_fal_parse_poll, 200,
          "{\"images\":[{\"url\":\"https://fal.media/files/a.png\"}],"
          "\"has_nsfw_concepts\":[true]}",
          &r);
    assert_failed(&r, IMGQ_CLASS_CONTENT_POLICY);
    parse(imgq_fal_parse_poll, 200, "{\"images\":[]}", &r);
    assert_failed(&r, IMGQ_CLASS_BAD_RESPONSE);
    parse(imgq_fal_parse_poll, 200, "{\"status\":\"COMPLETED\"}", &r);
    assert_failed(&r, IMGQ_CLASS_BAD_RESPONSE);
    parse(imgq_fal_parse_poll, 200, "{\"seed\":1}", &r);
    assert_failed(&r, IMGQ_CLASS_BAD_RESPONSE);
    parse(imgq_fal_parse_poll, 200, "{\"status\":\"FAILED\",\"error_type\":\"runner_crash\"}", &r);
    assert_failed(&r, IMGQ_CLASS_SERVER);
    parse(imgq_fal_parse, 200, "{\"request_id\":\"x\"}", &r);
    assert_failed(&r, IMGQ_CLASS_BAD_RESPONSE);

    parse(imgq_fal_parse_poll, 422,
          "{\"detail\":[{\"loc\":[\"body\",\"prompt\"],\"msg\":\"The prompt was flagged\","
          "\"type\":\"content_policy_violation\"}]}",
          &r);
    assert_string_equal(r.code, "content_policy_violation");
    assert_string_equal(r.message, "The prompt was flagged");
    assert_failed(&r, IMGQ_CLASS_CONTENT_POLICY);
    parse(imgq_fal_parse, 422,
          "{\"detail\":[{\"loc\":[\"body\",\"image_size\"],\"msg\":\"Image too large\","
          "\"type\":\"image_too_large\",\"ctx\":{\"max_height\":2048}}]}",
          &r);
    assert_string_equal(r.code, "image_too_large");
    assert_failed(&r, IMGQ_CLASS_INVALID_REQUEST);
    static const struct imgq_http_header retry[] = {{"X-Fal-Retryable", "true"}};
    parse_h(imgq_fal_parse_poll, 422,
            "{\"detail\":[{\"msg\":\"Generation failed\",\"type\":\"generation_error\"}]}", retry,
            1, &r);
    assert_failed(&r, IMGQ_CLASS_SERVER);
    static const struct imgq_http_header infra[] = {{"X-Fal-Error-Type", "request_timeout"}};
    parse_h(imgq_fal_parse_poll, 504,
            "{\"detail\":\"Request timed out\",\"error_type\":\"request_timeout\"}", infra, 1, &r);
    assert_string_equal(r.code, "request_timeout");
    assert_failed(&r, IMGQ_CLASS_SERVER);
    parse_h(imgq_fal_parse_poll, 400, "{\"detail\":\"runner failed\"}", infra, 1, &r);
    assert_string_equal(r.code, "request_timeout");
    assert_failed(&r, IMGQ_CLASS_SERVER);
    static const struct imgq_http_header ra[] = {{"Retry-After", "5"}};
    parse_h(imgq_fal_parse, 429, "{\"detail\":\"Too many concurrent requests\"}", ra, 1, &r);
    assert_int_equal(r.retry_after_ms, 5000);
    assert_failed(&r, IMGQ_CLASS_RATE_LIMIT);
    parse(imgq_fal_parse, 401, "{\"detail\":\"Invalid key\"}", &r);
    assert_failed(&r, IMGQ_CLASS_AUTH);
    parse(imgq_fal_parse, 403, "{\"detail\":\"User is locked. Reason: Exhausted balance\"}", &r);
    assert_failed(&r, IMGQ_CLASS_AUTH);
    parse(imgq_fal_parse, 500, "oops", &r);
    assert_failed(&r, IMGQ_CLASS_SERVER);
}

/* ---- BFL ---------------------------------------------------------------------------------- */

static void test_bfl_build(void **state)
{
    no_proxy();
    struct capture *c = capture_start();
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%d/v1", c->port);
    struct imgq_provider_endpoint ep = {
        .base_url = base, .api_key = "bfl-key", .timeout_ms = 5000, .model_id = "flux-pro-1.1"};
    capture_send(c, imgq_bfl_build(&ep, &full_spec, 1));
    assert_request_line(c, "POST /v1/flux-pro-1.1 HTTP/1.1");
    assert_line(c, "x-key: bfl-key");
    json_t *o = captured_json(c);
    assert_string_equal(sget(o, "prompt"), full_spec.prompt);
    assert_int_equal(json_integer_value(jget(o, "width")), 1344);
    assert_int_equal(json_integer_value(jget(o, "height")), 768);
    assert_int_equal(json_integer_value(jget(o, "seed")), 42);
    assert_true(json_real_value(jget(o, "guidance")) == 3.5);
    assert_string_equal(sget(o, "output_format"), "png");
    assert_null(jget(o, "n"));
    assert_null(jget(o, "num_images"));
    json_decref(o);
    free(c);

    /* Fresh process, id handle. */
    c = capture_start();
    snprintf(base, sizeof base, "http://127.0.0.1:%d/v1", c->port);
    struct imgq_provider_endpoint fresh = {.base_url = base, .api_key = "bfl-key"};
    capture_send(c, imgq_bfl_build_poll(&fresh, "2fa2 x&y"));
    assert_request_line(c, "GET /v1/get_result?id=2fa2%20x%26y HTTP/1.1");
    assert_line(c, "x-key: bfl-key");
    free(c);

    /* The polling URL on another cluster gets the key... */
    c = capture_start();
    struct imgq_provider_endpoint real = {.base_url = "http://api.bfl.ai/v1", .api_key = "bfl-key"};
    imgq_http_request *req =
        imgq_bfl_build_poll(&real, "http://api.eu2.bfl.ai/v1/get_result?id=2fa2");
    char to[96];
    snprintf(to, sizeof to, "api.eu2.bfl.ai:80:127.0.0.1:%d", c->port);
    imgq_http_request_add_connect_to(req, to);
    capture_send(c, req);
    assert_request_line(c, "GET /v1/get_result?id=2fa2 HTTP/1.1");
    assert_line(c, "x-key: bfl-key");
    assert_line(c, "Host: api.eu2.bfl.ai");
    free(c);
    /* ...one anywhere else does not. */
    c = capture_start();
    req = imgq_bfl_build_poll(&real, "http://bfl.ai.evil.example/v1/get_result?id=2fa2");
    snprintf(to, sizeof to, "bfl.ai.evil.example:80:127.0.0.1:%d", c->port);
    imgq_http_request_add_connect_to(req, to);
    capture_send(c, req);
    assert_null(strcasestr(c->buf, "x-key"));
    free(c);
}

static void test_bfl_flow(void **state)
{
    struct imgq_provider_result r;
    parse(imgq_bfl_parse, 200,
          "{\"id\":\"2fa2d1c6\",\"polling_url\":\"https://api.eu2.bfl.ai/v1/get_result?id="
          "2fa2d1c6\",\"cost\":4.5,\"input_mp\":0,\"output_mp\":1.03}",
          &r);
    assert_pending(&r, "https://api.eu2.bfl.ai/v1/get_result?id=2fa2d1c6");
    assert_string_equal(r.request_id, "2fa2d1c6");
    imgq_provider_result_clear(&r);
    parse(imgq_bfl_parse, 200, "{\"id\":\"2fa2d1c6\"}", &r);
    assert_pending(&r, "2fa2d1c6");
    imgq_provider_result_clear(&r);

    parse(imgq_bfl_parse_poll, 200,
          "{\"id\":\"2fa2d1c6\",\"status\":\"Pending\",\"result\":null,\"progress\":0.4,"
          "\"details\":null,\"preview\":null}",
          &r);
    assert_pending(&r, ""); /* the same polling URL */
    assert_string_equal(r.task_status, "Pending");
    imgq_provider_result_clear(&r);

    parse(imgq_bfl_parse_poll, 200,
          "{\"id\":\"2fa2d1c6\",\"status\":\"Ready\",\"result\":{\"sample\":"
          "\"https://delivery-eu1.bfl.ai/results/ab/sample.png?se=2026&sig=x\",\"prompt\":\"x\","
          "\"seed\":42,\"start_time\":1,\"end_time\":2,\"duration\":1},\"progress\":null}",
          &r);
    assert_done(&r, 1, 1);
    assert_string_equal(r.image_urls[0],
                        "https://delivery-eu1.bfl.ai/results/ab/sample.png?se=2026&sig=x");
    assert_string_equal(r.task_status, "Ready");
    imgq_provider_result_clear(&r);
}

static void test_bfl_errors(void **state)
{
    struct imgq_provider_result r;
    parse(imgq_bfl_parse_poll, 200,
          "{\"id\":\"a\",\"status\":\"Request Moderated\",\"details\":{\"Moderation Reasons\":"
          "[\"Derivative Works Filter\"]}}",
          &r);
    assert_string_equal(r.code, "Request Moderated");
    assert_contains(r.message, "Derivative Works Filter");
    assert_failed(&r, IMGQ_CLASS_CONTENT_POLICY);
    parse(imgq_bfl_parse_poll, 200, "{\"id\":\"a\",\"status\":\"Content Moderated\"}", &r);
    assert_string_equal(r.message, "Content Moderated");
    assert_failed(&r, IMGQ_CLASS_CONTENT_POLICY);
    parse(imgq_bfl_parse_poll, 200, "{\"id\":\"a\",\"status\":\"Error\",\"details\":\"boom\"}", &r);
    assert_string_equal(r.message, "Error: boom");
    assert_failed(&r, IMGQ_CLASS_SERVER);
    parse(imgq_bfl_parse_poll, 200, "{\"id\":\"a\",\"status\":\"Task not found\"}", &r);
    assert_failed(&r, IMGQ_CLASS_SERVER);
    parse(imgq_bfl_parse_poll, 200, "{\"id\":\"a\",\"status\":\"Ready\",\"result\":{}}", &r);
    assert_failed(&r, IMGQ_CLASS_BAD_RESPONSE);
    parse(imgq_bfl_parse_poll, 200, "{\"id\":\"a\",\"status\":\"Sleeping\"}", &r);
    assert_failed(&r, IMGQ_CLASS_BAD_RESPONSE);
    parse(imgq_bfl_parse_poll, 200, "\"Pending\"", &r);
    assert_failed(&r, IMGQ_CLASS_BAD_RESPONSE);
    parse(imgq_bfl_parse, 200, "{}", &r);
    assert_failed(&r, IMGQ_CLASS_BAD_RESPONSE);
    parse(imgq_bfl_parse, 200, "{\"id\":\"a\",\"polling_url\":\"ftp://x/y\"}", &r);
    assert_failed(&r, IMGQ_CLASS_BAD_RESPONSE);
    char big[2200];
    int k = snprintf(big, sizeof big, "{\"id\":\"a\",\"polling_url\":\"https://api.bfl.ai/");
    memset(big + k, 'a', 1100);
    strcpy(big + k + 1100, "\"}");
    parse(imgq_bfl_parse, 200, big, &r);
    assert_contains(r.message, "too long");
    assert_failed(&r, IMGQ_CLASS_BAD_RESPONSE);

    parse(imgq_bfl_parse, 402, "{\"detail\":\"Insufficient credits\"}", &r);
    assert_string_equal(r.message, "Insufficient credits");
    assert_failed(&r, IMGQ_CLASS_AUTH);
    static const struct imgq_http_header ra[] = {{"Retry-After", "9"}};
    parse_h(imgq_bfl_parse, 429, "{\"detail\":\"You have too many active tasks\"}", ra, 1, &r);
    assert_int_equal(r.retry_after_ms, 9000);
    assert_failed(&r, IMGQ_CLASS_RATE_LIMIT);
    parse(imgq_bfl_parse, 422,
          "{\"detail\":[{\"loc\":[\"body\",\"width\"],\"msg\":\"Input should be a multiple of "
          "32\",\"type\":\"multiple_of\"}]}",
          &r);
    assert_string_equal(r.code, "multiple_of");
    assert_failed(&r, IMGQ_CLASS_INVALID_REQUEST);
    parse(imgq_bfl_parse, 403, "{\"detail\":\"Not authenticated\"}", &r);
    assert_failed(&r, IMGQ_CLASS_AUTH);
    parse(imgq_bfl_parse, 503, "", &r);
    assert_failed(&r, IMGQ_CLASS_SERVER);
    imgq_http_response refused = {
        .err = IMGQ_EHTTP, .error = "Connection refused", .body = (const unsigned char *)""};
    memset(&r, 0x5a, sizeof r);
    imgq_bfl_parse_poll(&refused, 1, &r);
    assert_failed(&r, IMGQ_CLASS_NETWORK);
}

/* ---- URL trust and downloads -------------------------------------------------------------- */

static void test_url_trusted(void **state)
{
    const char *bfl = "https://api.bfl.ai/v1";
    assert_true(imgq_provider_url_trusted(bfl, "https://api.bfl.ai/v1/get_result?id=1", true));
    assert_true(imgq_provider_url_trusted(bfl, "https://API.BFL.AI/v1/get_result?id=1", true));
    assert_true(imgq_provider_url_trusted(bfl, "https://api.eu2.bfl.ai/v1/get_result?id=1", true));
    assert_true(imgq_provider_url_trusted(bfl, "https://bfl.ai:443/x", true) == false);
    assert_false(imgq_provider_url_trusted(bfl, "https://evilbfl.ai/x", true));
    assert_false(imgq_provider_url_trusted(bfl, "https://bfl.ai.evil.example/x", true));
    assert_false(imgq_provider_url_trusted(bfl, "https://example.com/api.bfl.ai", true));
    assert_false(imgq_provider_url_trusted(bfl, "https://example.com/?u=https://api.bfl.ai", true));
    assert_false(imgq_provider_url_trusted(bfl, "https://api.bfl.ai@example.com/x", true));
    assert_false(imgq_provider_url_trusted(bfl, "http://api.bfl.ai/v1/get_result", true));
    assert_false(imgq_provider_url_trusted(bfl, "https://api.bfl.ai:8443/v1", true));
    assert_true(imgq_provider_url_trusted(bfl, "https://api.bfl.ai:443/v1", true));
    assert_false(imgq_provider_url_trusted(bfl, "ftp://api.bfl.ai/v1", true));
    /* A two-label base has no parent domain to share. */
    assert_true(imgq_provider_url_trusted("https://bfl.ai/v1", "https://bfl.ai/x", true));
    assert_false(imgq_provider_url_trusted("https://bfl.ai/v1", "https://x.ai/x", true));
    assert_false(imgq_provider_url_trusted("https://bfl.ai/v1", "https://api.bfl.ai/x", true));
    /* Addresses are not domains. */
    assert_true(
        imgq_provider_url_trusted("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/x", true));
    assert_false(
        imgq_provider_url_trusted("http://127.0.0.1:8080/v1", "http://127.0.0.2:8080/x", true));
    assert_false(
        imgq_provider_url_trusted("http://127.0.0.1:8080/v1", "http://1.0.0.1:8080/x", true));
    assert_false(
        imgq_provider_url_trusted("http://127.0.0.1:8080/v1", "http://127.0.0.1:9/x", true));
    assert_false(imgq_provider_url_trusted("http://10.0.0.1/v1", "http://5.0.0.1/x", true));
    assert_false(imgq_provider_url_trusted("http://[::1]:80/v1", "http://[::2]:80/x", true));
    assert_true(imgq_provider_url_trusted("http://[::1]:80/v1", "http://[::1]/x", true));
    assert_false(imgq_provider_url_trusted("http://localhost/v1", "http://a.localhost/x", true));
    /* Garbage. */
    /* Without sibling hosts (Replicate, fal): the base host only, so a tenant of a shared
     * domain (*.fly.dev and the like) never gets the key. */
    assert_false(
        imgq_provider_url_trusted(bfl, "https://api.eu2.bfl.ai/v1/get_result?id=1", false));
    assert_true(imgq_provider_url_trusted(bfl, "https://api.bfl.ai/v1/get_result?id=1", false));
    assert_false(
        imgq_provider_url_trusted("https://gw.fly.dev/v1", "https://other.fly.dev/v1", false));
    assert_false(imgq_provider_url_trusted(bfl, NULL, true));
    assert_false(imgq_provider_url_trusted(NULL, bfl, true));
    assert_false(imgq_provider_url_trusted(bfl, "", true));
    assert_false(imgq_provider_url_trusted(bfl, "api.eu2.bfl.ai/v1", true));
    assert_false(imgq_provider_url_trusted(bfl, "https://", true));
    assert_false(imgq_provider_url_trusted(bfl, "https:// api.bfl.ai/", true));
    assert_false(imgq_provider_url_trusted(bfl, "\x01\xff", true));
    assert_false(imgq_provider_url_trusted("not a url", "not a url", true));
}

static void test_fetch(void **state)
{
    no_proxy();
    struct capture *c = capture_start();
    char url[96];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/files/a.png?sig=1", c->port);
    capture_send(c, imgq_provider_fetch_build(url, 5000));
    assert_request_line(c, "GET /files/a.png?sig=1 HTTP/1.1");
    assert_null(strcasestr(c->buf, "Authorization"));
    assert_null(strcasestr(c->buf, "x-key"));
    free(c);

    /* Not http(s): a request the HTTP layer refuses, never NULL. */
    imgq_http_request *req = imgq_provider_fetch_build("file:///etc/passwd", 1000);
    assert_non_null(req);
    imgq_http_response *res = NULL;
    assert_int_equal(imgq_http_perform_sync(req, &res), IMGQ_EINVAL);
    imgq_http_response_free(res);
    imgq_http_request_free(req);
    req = imgq_provider_fetch_build(NULL, 0);
    assert_non_null(req);
    imgq_http_request_free(req);

    struct imgq_provider_result r;
    imgq_http_response ok = {.status = 200,
                             .error = "",
                             .body = (const unsigned char *)"\x89PNG\r\n\x1a\n",
                             .body_len = 8};
    memset(&r, 0x5a, sizeof r);
    imgq_provider_fetch_parse(&ok, &r);
    assert_int_equal(r.cls, IMGQ_CLASS_NONE);
    assert_int_equal(r.nimages, 1);
    assert_int_equal(r.image_lens[0], 8);
    assert_memory_equal(r.images[0], "\x89PNG\r\n\x1a\n", 8);
    assert_int_equal(r.nimage_urls, 0);
    imgq_provider_result_clear(&r);

    static const struct {
        long status;
        enum imgq_error_class cls;
    } cases[] = {{200, IMGQ_CLASS_BAD_RESPONSE},    {404, IMGQ_CLASS_BAD_RESPONSE},
                 {410, IMGQ_CLASS_BAD_RESPONSE},    {403, IMGQ_CLASS_BAD_RESPONSE},
                 {500, IMGQ_CLASS_SERVER},          {429, IMGQ_CLASS_RATE_LIMIT},
                 {400, IMGQ_CLASS_INVALID_REQUEST}, {302, IMGQ_CLASS_BAD_RESPONSE}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        imgq_http_response e = {
            .status = cases[i].status, .error = "", .body = (const unsigned char *)""};
        memset(&r, 0x5a, sizeof r);
        imgq_provider_fetch_parse(&e, &r);
        assert_int_equal(r.nimages, 0);
        assert_failed(&r, cases[i].cls);
    }
    static const struct imgq_http_header ra[] = {{"Retry-After", "4"}};
    imgq_http_response slow = {.status = 429,
                               .error = "",
                               .body = (const unsigned char *)"",
                               .headers = ra,
                               .nheaders = 1};
    memset(&r, 0x5a, sizeof r);
    imgq_provider_fetch_parse(&slow, &r);
    assert_int_equal(r.retry_after_ms, 4000);
    assert_failed(&r, IMGQ_CLASS_RATE_LIMIT);
    imgq_http_response big = {
        .err = IMGQ_ERANGE, .status = 200, .error = "too large", .body = (const unsigned char *)""};
    memset(&r, 0x5a, sizeof r);
    imgq_provider_fetch_parse(&big, &r);
    assert_failed(&r, IMGQ_CLASS_BAD_RESPONSE);
}

/* ---- robustness --------------------------------------------------------------------------- */

/* Every prefix of every sample answer, under several statuses, through every parser. */
static void test_truncated_answers(void **state)
{
    static const char *samples[] = {
        "{\"output\":{\"task_id\":\"t\",\"task_status\":\"SUCCEEDED\",\"results\":[{\"url\":"
        "\"https://x.example/1.png\"},{\"code\":\"DataInspectionFailed\"}]},\"usage\":"
        "{\"image_count\":1}}",
        "{\"id\":\"q\",\"status\":\"succeeded\",\"output\":[\"https://r.example/0.png\",7,null],"
        "\"metrics\":{\"predict_time\":1},\"urls\":{\"get\":\"https://api.replicate.com/v1/p/q\"}}",
        "{\"status\":\"COMPLETED\",\"response_url\":\"https://queue.fal.run/a/requests/1\","
        "\"images\":[{\"url\":\"https://fal.media/a.png\"},{}],\"has_nsfw_concepts\":[1,true]}",
        "{\"detail\":[{\"msg\":null,\"type\":\"content_policy_violation\"},\"x\"],"
        "\"error_type\":5,\"code\":[],\"message\":{}}",
        "{\"id\":\"a\",\"status\":\"Ready\",\"result\":{\"sample\":\"https://d.bfl.ai/s.png\"},"
        "\"polling_url\":\"https://api.bfl.ai/v1/get_result?id=a\",\"details\":[1,{}]}",
    };
    static const parse_fn fns[] = {imgq_dashscope_parse, imgq_dashscope_parse_poll,
                                   imgq_replicate_parse, imgq_replicate_parse_poll,
                                   imgq_fal_parse,       imgq_fal_parse_poll,
                                   imgq_bfl_parse,       imgq_bfl_parse_poll};
    static const long statuses[] = {200, 201, 202, 422, 429};
    static const struct imgq_http_header h[] = {{"X-Fal-Retryable", "true"},
                                                {"Retry-After", "Wed, 21 Oct 2015 07:28:00 GMT"}};
    for (size_t s = 0; s < sizeof samples / sizeof samples[0]; s++) {
        size_t len = strlen(samples[s]);
        for (size_t cut = 0; cut <= len; cut++) {
            for (size_t f = 0; f < sizeof fns / sizeof fns[0]; f++) {
                for (size_t st = 0; st < sizeof statuses / sizeof statuses[0]; st++) {
                    imgq_http_response res = {.status = statuses[st],
                                              .error = "",
                                              .body = (const unsigned char *)samples[s],
                                              .body_len = cut,
                                              .headers = h,
                                              .nheaders = 2};
                    struct imgq_provider_result r;
                    memset(&r, 0x5a, sizeof r);
                    fns[f](&res, 1, &r);
                    assert_true(r.pending || r.cls != IMGQ_CLASS_NONE || r.nimage_urls > 0);
                    assert_true(strlen(r.poll) < sizeof r.poll);
                    imgq_provider_result_clear(&r);
                }
            }
        }
    }
}

static void test_registry(void **state)
{
    static const struct {
        const char *api;
        parse_fn parse, parse_poll;
    } want[] = {{"dashscope", imgq_dashscope_parse, imgq_dashscope_parse_poll},
                {"replicate", imgq_replicate_parse, imgq_replicate_parse_poll},
                {"fal", imgq_fal_parse, imgq_fal_parse_poll},
                {"bfl", imgq_bfl_parse, imgq_bfl_parse_poll}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const struct imgq_provider_ops *ops = imgq_provider_ops_find(want[i].api);
        assert_non_null(ops);
        assert_ptr_equal(ops->parse, want[i].parse);
        assert_ptr_equal(ops->parse_poll, want[i].parse_poll);
        assert_non_null(ops->build);
        assert_non_null(ops->build_poll);
    }
}

/* ---- unusable usage ----------------------------------------------------------------------- */

/* Done, with its URLs, but its usage unusable: billed at the ceiling, the reason kept. */
static void assert_unusable(struct imgq_provider_result *r, int nurls, const char *why)
{
    if (r->cls != IMGQ_CLASS_NONE)
        fail_msg("failed: %s (%s)", imgq_error_class_name(r->cls), r->message);
    assert_false(r->pending);
    assert_int_equal(r->nimage_urls, nurls);
    assert_false(r->usage_present);
    assert_contains(r->usage_unusable, why);
    assert_int_equal(r->usage.images, 0);
}

struct bad_usage {
    const char *usage; /* the usage (DashScope) or metrics (Replicate) member's JSON */
    const char *why;   /* expected in usage_unusable; NULL: usable, the URLs counted */
};

/* A stated image count must be a count and not 0; without one the URLs are counted. */
static const struct bad_usage dashscope_bad[] = {
    {"{}", NULL},
    {"{\"width\":1024}", NULL},
    {"{\"image_count\":\"2\"}", "usage.image_count: \"2\" is not a count"},
    {"{\"image_count\":-2}", "usage.image_count: -2 is not a count"},
    {"{\"image_count\":1.5}", "usage.image_count: 1.5 is not a count"},
    {"{\"image_count\":9223372036854775807}", "usage.image_count: 9223372036854775807 is beyond"},
    {"{\"image_count\":0}", "usage.image_count: 0 for 2 image(s) returned"},
    {"{\"image_count\":99999999999999999999}", "a number too large for a 64-bit integer"},
    {"\"two\"", "usage: not an object"},
};

static void test_dashscope_usage(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof dashscope_bad / sizeof dashscope_bad[0]; i++) {
        char body[512];
        snprintf(body, sizeof body,
                 "{\"output\":{\"task_id\":\"t\",\"task_status\":\"SUCCEEDED\",\"results\":["
                 "{\"url\":\"https://x.example/1.png\"},{\"url\":\"https://x.example/2.png\"}]},"
                 "\"usage\":%s}",
                 dashscope_bad[i].usage);
        struct imgq_provider_result r;
        parse(imgq_dashscope_parse_poll, 200, body, &r);
        if (dashscope_bad[i].why)
            assert_unusable(&r, 2, dashscope_bad[i].why);
        else
            assert_done(&r, 2, 2);
        imgq_provider_result_clear(&r);
    }
}

/* Replicate's metrics are times; an image_count there, if any, must be a count. */
static const struct bad_usage replicate_bad[] = {
    {"{}", NULL},
    {"{\"predict_time\":1.2}", NULL},
    {"{\"predict_time\":1.2,\"image_count\":\"1\"}", "metrics.image_count: \"1\" is not a count"},
    {"{\"image_count\":-1}", "metrics.image_count: -1 is not a count"},
    {"{\"image_count\":0.5}", "metrics.image_count: 0.5 is not a count"},
    {"{\"image_count\":9223372036854775807}", "metrics.image_count: 9223372036854775807 is beyond"},
    {"{\"image_count\":0}", "metrics.image_count: 0 for 1 image(s) returned"},
    {"{\"image_count\":99999999999999999999}", "a number too large for a 64-bit integer"},
    {"[1]", "metrics: not a"},
};

static void test_replicate_usage(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof replicate_bad / sizeof replicate_bad[0]; i++) {
        char body[512];
        snprintf(body, sizeof body,
                 "{\"id\":\"q\",\"status\":\"succeeded\",\"output\":[\"https://x.example/o.png\"],"
                 "\"metrics\":%s}",
                 replicate_bad[i].usage);
        struct imgq_provider_result r;
        parse(imgq_replicate_parse_poll, 200, body, &r);
        if (replicate_bad[i].why)
            assert_unusable(&r, 1, replicate_bad[i].why);
        else
            assert_done(&r, 1, 1);
        imgq_provider_result_clear(&r);
    }
}

/* fal and BFL report no usage: whatever else the answer carries, the images are counted. */
static void test_counted_usage(void **state)
{
    (void)state;
    struct imgq_provider_result r;
    parse(imgq_fal_parse_poll, 200,
          "{\"images\":[{\"url\":\"https://fal.media/files/a.png\"}],\"usage\":{},"
          "\"metrics\":{\"image_count\":\"x\"}}",
          &r);
    assert_done(&r, 1, 1);
    assert_null(r.usage_json);
    imgq_provider_result_clear(&r);
    parse(imgq_bfl_parse_poll, 200,
          "{\"id\":\"a\",\"status\":\"Ready\",\"result\":{\"sample\":\"https://d.bfl.ai/s.png\"},"
          "\"cost\":\"lots\",\"usage\":-1}",
          &r);
    assert_done(&r, 1, 1);
    assert_null(r.usage_json);
    imgq_provider_result_clear(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dashscope_build),
        cmocka_unit_test(test_dashscope_flow),
        cmocka_unit_test(test_dashscope_edit),
        cmocka_unit_test(test_dashscope_errors),
        cmocka_unit_test(test_replicate_build),
        cmocka_unit_test(test_replicate_flow),
        cmocka_unit_test(test_replicate_errors),
        cmocka_unit_test(test_fal_build),
        cmocka_unit_test(test_fal_flow),
        cmocka_unit_test(test_fal_errors),
        cmocka_unit_test(test_bfl_build),
        cmocka_unit_test(test_bfl_flow),
        cmocka_unit_test(test_bfl_errors),
        cmocka_unit_test(test_url_trusted),
        cmocka_unit_test(test_fetch),
        cmocka_unit_test(test_truncated_answers),
        cmocka_unit_test(test_registry),
        cmocka_unit_test(test_dashscope_usage),
        cmocka_unit_test(test_replicate_usage),
        cmocka_unit_test(test_counted_usage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
