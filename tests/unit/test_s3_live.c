/*
 * test_s3_live.c - S3 operations against a real S3 server.
 *
 * Skipped unless IMGQ_TEST_S3_ENDPOINT is set; tests/integration/s3_roundtrip.sh starts
 * s3rver on a free loopback port, exports the AWS_* variables and IMGQ_S3_BUCKET for it
 * (tests/lib/env.sh, start_s3) and runs this program.  The configuration is read the way
 * imgq reads it, with imgq_s3_config_from_env().
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "imgq/http.h"
#include "imgq/s3.h"

static struct imgq_s3_config cfg;

static int setup(void **state)
{
    const char *why = NULL;
    if (!getenv("IMGQ_TEST_S3_ENDPOINT"))
        return 0;
    if (imgq_s3_config_from_env(&cfg, &why) < 0) {
        fprintf(stderr, "S3 configuration: %s\n", why);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    imgq_s3_config_clear(&cfg);
    return 0;
}

static void need_server(void)
{
    if (!getenv("IMGQ_TEST_S3_ENDPOINT"))
        skip();
}

/* A unique key prefix per run, so reruns against one server do not see old objects. */
static const char *run_prefix(void)
{
    static char prefix[64];
    if (!prefix[0])
        snprintf(prefix, sizeof(prefix), "live-%ld-%d", (long)time(NULL), (int)getpid());
    return prefix;
}

static char *key(const char *name)
{
    static char buf[8][512];
    static int next;
    char *b = buf[next++ % 8];
    snprintf(b, sizeof(buf[0]), "%s/%s", run_prefix(), name);
    return b;
}

/* ---- blocking operations --------------------------------------------------------------- */

static void test_config_matches_server(void **state)
{
    need_server();
    assert_non_null(cfg.endpoint);
    assert_string_equal(cfg.endpoint, getenv("IMGQ_TEST_S3_ENDPOINT"));
    assert_true(cfg.path_style);
    assert_non_null(cfg.bucket);
    char *why = NULL;
    assert_int_equal(imgq_s3_config_check(&cfg, true, &why), 0);
}

static void test_sync_roundtrip(void **state)
{
    char *err = NULL, *etag = NULL;
    unsigned char *data = NULL;
    size_t len = 0;
    long long size = 0;
    need_server();

    const char *meta[] = {"prompt-hash", "abc123", "Model", "gpt-image-1", NULL};
    const char *body = "{\"hello\":\"s3\"}";
    assert_int_equal(imgq_s3_put_sync(&cfg, key("sync.json"), "application/json", body,
                                      strlen(body), meta, &err),
                     0);
    assert_null(err);
    assert_int_equal(imgq_s3_head_sync(&cfg, key("sync.json"), &size, &etag, &err), 0);
    assert_int_equal(size, (long long)strlen(body));
    assert_non_null(etag);
    free(etag);
    assert_int_equal(imgq_s3_get_sync(&cfg, key("sync.json"), &data, &len, &err), 0);
    assert_int_equal(len, strlen(body));
    assert_memory_equal(data, body, len);
    assert_int_equal(data[len], '\0');
    free(data);

    /* Empty objects are objects too. */
    assert_int_equal(imgq_s3_put_sync(&cfg, key("empty"), NULL, NULL, 0, NULL, &err), 0);
    assert_int_equal(imgq_s3_get_sync(&cfg, key("empty"), &data, &len, &err), 0);
    assert_int_equal(len, 0);
    free(data);

    /* Missing objects: 404 with S3's code, or without a body for HEAD. */
    assert_int_equal(imgq_s3_get_sync(&cfg, key("missing"), &data, &len, &err), IMGQ_ENOTFOUND);
    assert_null(data);
    assert_non_null(strstr(err, "S3 GET s3://"));
    assert_non_null(strstr(err, "/missing: 404 NoSuchKey"));
    free(err);
    assert_int_equal(imgq_s3_head_sync(&cfg, key("missing"), &size, NULL, &err), IMGQ_ENOTFOUND);
    assert_non_null(strstr(err, ": 404 NotFound"));
    assert_int_equal(size, -1);
    free(err);
}

static void test_create_bucket(void **state)
{
    char *err = NULL, bucket[64];
    need_server();
    snprintf(bucket, sizeof(bucket), "imgq-new-%ld", (long)time(NULL) % 100000);
    assert_int_equal(imgq_s3_create_bucket_sync(&cfg, bucket, &err), 0);
    assert_null(err);
    assert_int_equal(imgq_s3_create_bucket_sync(&cfg, bucket, &err), IMGQ_EEXIST);
    free(err);

    struct imgq_s3_config other = cfg; /* same server, other bucket */
    other.bucket = bucket;
    assert_int_equal(imgq_s3_put_sync(&other, "k", "text/plain", "v", 1, NULL, &err), 0);
    other.bucket = "no-such-bucket-here";
    assert_int_equal(imgq_s3_put_sync(&other, "k", "text/plain", "v", 1, NULL, &err),
                     IMGQ_ENOTFOUND);
    assert_non_null(strstr(err, "NoSuchBucket"));
    free(err);
}

/* ---- async operations through imgq_http ------------------------------------------------ */

#define NOBJ 4

struct object {
    const char *name;
    const char *type;
    unsigned char *body;
    size_t len;
};

struct run {
    imgq_http *http;
    struct object obj[NOBJ];
    int put_ok, head_ok, get_ok, meta_ok, missing_ok;
    int failures;
};

static struct run *the_run;

static void on_get(const struct imgq_s3_result *r, void *arg)
{
    struct object *o = arg;
    if (r->err == 0 && r->body_len == o->len && memcmp(r->body, o->body, o->len) == 0 &&
        r->size == (long long)o->len)
        the_run->get_ok++;
    else
        fprintf(stderr, "GET %s: %s (%zu bytes)\n", o->name, r->message, r->body_len);
    const char *m = imgq_http_response_header(r->http, "x-amz-meta-prompt-hash");
    if (m && strcmp(m, o->name) == 0)
        the_run->meta_ok++;
}

static void on_head(const struct imgq_s3_result *r, void *arg)
{
    struct object *o = arg;
    if (r->err == 0 && r->size == (long long)o->len && r->etag && r->content_type &&
        strcmp(r->content_type, o->type) == 0)
        the_run->head_ok++;
    else
        fprintf(stderr, "HEAD %s: %s size %lld\n", o->name, r->message, r->size);
    assert_int_equal(imgq_s3_get(the_run->http, &cfg, key(o->name), on_get, o), 0);
}

static void on_put(const struct imgq_s3_result *r, void *arg)
{
    struct object *o = arg;
    if (r->err == 0 && r->status == 200 && r->etag && strcmp(r->message, "") == 0)
        the_run->put_ok++;
    else
        fprintf(stderr, "PUT %s: %s\n", o->name, r->message);
    assert_int_equal(imgq_s3_head(the_run->http, &cfg, key(o->name), on_head, o), 0);
}

static void on_missing(const struct imgq_s3_result *r, void *arg)
{
    if (r->err == IMGQ_ENOTFOUND && r->status == 404 && strcmp(r->code, "NoSuchKey") == 0 &&
        strstr(r->message, ": 404 NoSuchKey: "))
        the_run->missing_ok++;
    else
        fprintf(stderr, "GET missing: %d %s\n", r->err, r->message);
}

static void test_async_put_head_get(void **state)
{
    uv_loop_t loop;
    struct run run = {0};
    need_server();
    the_run = &run;

    const char *names[NOBJ] = {"small.txt", "dir/sub dir/caf\xc3\xa9+(1)=&.png", "big.bin",
                               "a~b_c-d.e"};
    const char *types[NOBJ] = {"text/plain", "image/png", "application/octet-stream", "image/webp"};
    size_t sizes[NOBJ] = {5, 1000, 3u << 20, 0}; /* 3 MiB: hashed on the thread pool */
    for (int i = 0; i < NOBJ; i++) {
        run.obj[i].name = names[i];
        run.obj[i].type = types[i];
        run.obj[i].len = sizes[i];
        run.obj[i].body = malloc(sizes[i] + 1);
        for (size_t j = 0; j < sizes[i]; j++)
            run.obj[i].body[j] = (unsigned char)(j * 31 + (size_t)i);
    }

    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(imgq_http_init(&loop, NULL, &run.http), 0);
    for (int i = 0; i < NOBJ; i++) {
        const char *meta[] = {"prompt-hash", names[i], NULL};
        /* A name that is not a valid header value cannot be metadata: leave it out. */
        bool meta_ok = strspn(names[i], "abcdefghijklmnopqrstuvwxyz./~_-") == strlen(names[i]);
        assert_int_equal(imgq_s3_put(run.http, &cfg, key(names[i]), i == 2 ? NULL : types[i],
                                     run.obj[i].body, sizes[i], meta_ok ? meta : NULL, on_put,
                                     &run.obj[i]),
                         0);
    }
    assert_int_equal(imgq_s3_get(run.http, &cfg, key("never-written"), on_missing, NULL), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(run.put_ok, NOBJ);
    assert_int_equal(run.head_ok, NOBJ);
    assert_int_equal(run.get_ok, NOBJ);
    assert_int_equal(run.meta_ok, 3);
    assert_int_equal(run.missing_ok, 1);
    imgq_http_close(run.http, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    for (int i = 0; i < NOBJ; i++)
        free(run.obj[i].body);
}

/* ---- presigned URLs -------------------------------------------------------------------- */

static void test_presigned_urls(void **state)
{
    char *err = NULL, *u = NULL;
    imgq_http_response *res = NULL;
    need_server();
    const char *body = "presigned payload";
    assert_int_equal(
        imgq_s3_put_sync(&cfg, key("pre sign.txt"), "text/plain", body, strlen(body), NULL, &err),
        0);

    /* A presigned GET needs no credentials from whoever holds it. */
    assert_int_equal(imgq_s3_presign(&cfg, "GET", NULL, key("pre sign.txt"), 300, time(NULL), &u),
                     0);
    imgq_http_request *req = imgq_http_request_new("GET", u);
    assert_int_equal(imgq_http_perform_sync(req, &res), 0);
    assert_int_equal(res->status, 200);
    assert_int_equal(res->body_len, strlen(body));
    assert_memory_equal(res->body, body, res->body_len);
    imgq_http_response_free(res);
    imgq_http_request_free(req);
    free(u);

    /* Signed long ago: expired, and the server says so. */
    assert_int_equal(
        imgq_s3_presign(&cfg, "GET", NULL, key("pre sign.txt"), 60, time(NULL) - 3600, &u), 0);
    req = imgq_http_request_new("GET", u);
    assert_int_equal(imgq_http_perform_sync(req, &res), 0);
    assert_int_equal(res->status, 403);
    char *code = NULL, *message = NULL;
    assert_int_equal(imgq_s3_parse_error((const char *)res->body, res->body_len, &code, &message),
                     0);
    assert_string_equal(code, "AccessDenied");
    free(code);
    free(message);
    imgq_http_response_free(res);
    imgq_http_request_free(req);
    free(u);
}

/* A server that is not there: a transport error, which is worth retrying. */
static void test_unreachable_endpoint(void **state)
{
    struct imgq_s3_config dead = cfg;
    char *err = NULL;
    need_server();
    dead.endpoint = "http://127.0.0.1:1";
    assert_int_equal(imgq_s3_put_sync(&dead, "k", NULL, "x", 1, NULL, &err), IMGQ_EAGAIN);
    assert_non_null(strstr(err, "S3 PUT s3://"));
    free(err);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_matches_server), cmocka_unit_test(test_sync_roundtrip),
        cmocka_unit_test(test_create_bucket),         cmocka_unit_test(test_async_put_head_get),
        cmocka_unit_test(test_presigned_urls),        cmocka_unit_test(test_unreachable_endpoint),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
