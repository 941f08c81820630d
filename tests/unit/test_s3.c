/*
 * test_s3.c - S3 configuration, URLs, presigning and error bodies (no server needed; the
 * operations themselves run against s3rver in test_s3_live.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "imgq/s3.h"

static const char *const aws_vars[] = {"AWS_ENDPOINT_URL_S3",
                                       "AWS_ENDPOINT_URL",
                                       "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
                                       "AWS_REGION",
                                       "AWS_DEFAULT_REGION",
                                       "AWS_ACCESS_KEY_ID",
                                       "AWS_SECRET_ACCESS_KEY",
                                       "AWS_SESSION_TOKEN",
                                       "IMGQ_S3_BUCKET",
                                       "IMGQ_S3_ADDRESSING_STYLE"};

static int clean_env(void **state)
{
    for (size_t i = 0; i < sizeof(aws_vars) / sizeof(aws_vars[0]); i++)
        unsetenv(aws_vars[i]);
    return 0;
}

/* The credentials and settings of AWS's documentation examples. */
static void example_config(struct imgq_s3_config *cfg)
{
    imgq_s3_config_init(cfg);
    imgq_s3_config_set(&cfg->endpoint, "https://s3.amazonaws.com");
    imgq_s3_config_set(&cfg->region, "us-east-1");
    imgq_s3_config_set(&cfg->access_key, "AKIAIOSFODNN7EXAMPLE");
    imgq_s3_config_set(&cfg->secret_key, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
    imgq_s3_config_set(&cfg->bucket, "examplebucket");
    cfg->path_style = false;
}

#define EXAMPLE_AT ((time_t)1369353600) /* 20130524T000000Z */

/* ---- presigning ----------------------------------------------------------------------- */

/* S3 API reference, "Authenticating Requests: Using Query Parameters (AWS Signature
 * Version 4)", example presigned GET of examplebucket/test.txt. */
static void test_presign_reproduces_aws_example(void **state)
{
    struct imgq_s3_config cfg;
    char *u = NULL;
    example_config(&cfg);
    assert_int_equal(imgq_s3_presign(&cfg, "GET", NULL, "test.txt", 86400, EXAMPLE_AT, &u), 0);
    assert_string_equal(
        u, "https://examplebucket.s3.amazonaws.com/test.txt"
           "?X-Amz-Algorithm=AWS4-HMAC-SHA256"
           "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
           "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
           "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404");
    free(u);

    /* The explicit bucket argument is the same as the configured one. */
    assert_int_equal(
        imgq_s3_presign(&cfg, "GET", "examplebucket", "test.txt", 86400, EXAMPLE_AT, &u), 0);
    assert_non_null(strstr(u, "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"));
    free(u);
    imgq_s3_config_clear(&cfg);
}

static void test_presign_variants(void **state)
{
    struct imgq_s3_config cfg;
    char *u = NULL, *v = NULL;
    example_config(&cfg);

    /* A session token is signed as a sorted, fully encoded query parameter. */
    imgq_s3_config_set(&cfg.session_token, "FwoG/ZXIvYXdz+EF0=");
    assert_int_equal(imgq_s3_presign(&cfg, "GET", NULL, "test.txt", 3600, EXAMPLE_AT, &u), 0);
    assert_non_null(strstr(u, "&X-Amz-Expires=3600&X-Amz-Security-Token=FwoG%2FZXIvYXdz%2BEF0%3D"
                              "&X-Amz-SignedHeaders=host&X-Amz-Signature="));
    assert_null(strstr(u, "aeeed9bb"));
    /* Same input, same URL; another method, another signature. */
    assert_int_equal(imgq_s3_presign(&cfg, "GET", NULL, "test.txt", 3600, EXAMPLE_AT, &v), 0);
    assert_string_equal(u, v);
    free(v);
    assert_int_equal(imgq_s3_presign(&cfg, "PUT", NULL, "test.txt", 3600, EXAMPLE_AT, &v), 0);
    assert_string_not_equal(u, v);
    free(u);
    free(v);

    /* Path style on a custom endpoint: host keeps its port, key is encoded once. */
    imgq_s3_config_set(&cfg.session_token, NULL);
    imgq_s3_config_set(&cfg.endpoint, "http://127.0.0.1:4568");
    cfg.path_style = true;
    assert_int_equal(imgq_s3_presign(&cfg, "GET", "bkt", "dir/a b+c.png", 60, EXAMPLE_AT, &u), 0);
    const char *want = "http://127.0.0.1:4568/bkt/dir/a%20b%2Bc.png?X-Amz-Algorithm=";
    assert_true(strncmp(u, want, strlen(want)) == 0);
    free(u);
    imgq_s3_config_clear(&cfg);
}

static void test_presign_rejects_bad_input(void **state)
{
    struct imgq_s3_config cfg;
    char *u = (char *)"untouched";
    example_config(&cfg);
    assert_int_equal(imgq_s3_presign(&cfg, "GET", NULL, "k", 0, EXAMPLE_AT, &u), IMGQ_ERANGE);
    assert_null(u);
    assert_int_equal(imgq_s3_presign(&cfg, "GET", NULL, "k", -1, EXAMPLE_AT, &u), IMGQ_ERANGE);
    assert_int_equal(imgq_s3_presign(&cfg, "GET", NULL, "k", 604801, EXAMPLE_AT, &u), IMGQ_ERANGE);
    assert_int_equal(imgq_s3_presign(&cfg, "GET", NULL, "k", 1, EXAMPLE_AT, &u), 0);
    free(u);
    assert_int_equal(imgq_s3_presign(&cfg, "GET", NULL, "k", 604800, EXAMPLE_AT, &u), 0);
    assert_non_null(strstr(u, "X-Amz-Expires=604800"));
    free(u);
    assert_int_equal(imgq_s3_presign(&cfg, "POST", NULL, "k", 60, EXAMPLE_AT, &u), IMGQ_EINVAL);
    assert_int_equal(imgq_s3_presign(&cfg, "get", NULL, "k", 60, EXAMPLE_AT, &u), IMGQ_EINVAL);
    assert_int_equal(imgq_s3_presign(&cfg, "GET", NULL, "", 60, EXAMPLE_AT, &u), IMGQ_EINVAL);
    assert_int_equal(imgq_s3_presign(&cfg, "GET", "..", "k", 60, EXAMPLE_AT, &u), IMGQ_EINVAL);
    assert_int_equal(imgq_s3_presign(&cfg, "GET", "a/b", "k", 60, EXAMPLE_AT, &u), IMGQ_EINVAL);
    char longkey[1100];
    memset(longkey, 'k', sizeof(longkey) - 1);
    longkey[sizeof(longkey) - 1] = '\0';
    assert_int_equal(imgq_s3_presign(&cfg, "GET", NULL, longkey, 60, EXAMPLE_AT, &u), IMGQ_EINVAL);
    imgq_s3_config_set(&cfg.secret_key, NULL);
    assert_int_equal(imgq_s3_presign(&cfg, "GET", NULL, "k", 60, EXAMPLE_AT, &u), IMGQ_ECONFIG);
    imgq_s3_config_set(&cfg.secret_key, "s");
    imgq_s3_config_set(&cfg.bucket, NULL);
    assert_int_equal(imgq_s3_presign(&cfg, "GET", NULL, "k", 60, EXAMPLE_AT, &u), IMGQ_ECONFIG);
    imgq_s3_config_clear(&cfg);
}

/* ---- names and URLs ------------------------------------------------------------------- */

static void test_uri_encode(void **state)
{
    struct {
        const char *in;
        bool keep_slash;
        const char *out;
    } cases[] = {
        {"plain-key_1.png~", true, "plain-key_1.png~"},
        {"a b/c+d=e&f", true, "a%20b/c%2Bd%3De%26f"},
        {"a b/c+d=e&f", false, "a%20b%2Fc%2Bd%3De%26f"},
        {"caf\xc3\xa9 \xe2\x82\xac", true, "caf%C3%A9%20%E2%82%AC"},
        {"100%/?#[]@!$'()*,;:", true, "100%25/%3F%23%5B%5D%40%21%24%27%28%29%2A%2C%3B%3A"},
        {"./../x//y", true, "./../x//y"},
        {"\x01\x7f\xff", true, "%01%7F%FF"},
        {"", true, ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *e = imgq_s3_uri_encode(cases[i].in, cases[i].keep_slash);
        assert_string_equal(e, cases[i].out);
        free(e);
    }
}

static void check_url(const struct imgq_s3_config *cfg, const char *bucket, const char *key,
                      const char *want)
{
    char *u = NULL;
    assert_int_equal(imgq_s3_object_url(cfg, bucket, key, &u), 0);
    assert_string_equal(u, want);
    free(u);
}

static void test_object_urls(void **state)
{
    struct imgq_s3_config cfg;
    imgq_s3_config_init(&cfg);
    imgq_s3_config_set(&cfg.bucket, "imgs");

    /* AWS default endpoint for the region, virtual host; no credentials needed for a URL. */
    imgq_s3_config_set(&cfg.region, "eu-central-1");
    check_url(&cfg, NULL, "out/a b.webp",
              "https://imgs.s3.eu-central-1.amazonaws.com/out/a%20b.webp");
    check_url(&cfg, NULL, NULL, "https://imgs.s3.eu-central-1.amazonaws.com/");
    /* Buckets that cannot be a host label fall back to path style. */
    check_url(&cfg, "my.bucket", "k", "https://s3.eu-central-1.amazonaws.com/my.bucket/k");
    check_url(&cfg, "Legacy_Bucket", "k", "https://s3.eu-central-1.amazonaws.com/Legacy_Bucket/k");
    /* Region unset: us-east-1. */
    imgq_s3_config_set(&cfg.region, NULL);
    check_url(&cfg, NULL, "k", "https://imgs.s3.us-east-1.amazonaws.com/k");

    /* Custom endpoints: path style, default ports dropped, base path kept, host lowered. */
    cfg.path_style = true;
    imgq_s3_config_set(&cfg.endpoint, "http://127.0.0.1:9000/");
    check_url(&cfg, NULL, "a/b/../c d", "http://127.0.0.1:9000/imgs/a/b/../c%20d");
    check_url(&cfg, NULL, NULL, "http://127.0.0.1:9000/imgs");
    imgq_s3_config_set(&cfg.endpoint, "https://Storage.Example.COM:443/s3");
    check_url(&cfg, NULL, "k", "https://storage.example.com/s3/imgs/k");
    imgq_s3_config_set(&cfg.endpoint, "http://[::1]:8080");
    check_url(&cfg, NULL, "k", "http://[::1]:8080/imgs/k");
    /* Virtual host on a custom name works; on an IP address it cannot. */
    cfg.path_style = false;
    check_url(&cfg, NULL, "k", "http://[::1]:8080/imgs/k");
    imgq_s3_config_set(&cfg.endpoint, "https://r2.example.net");
    check_url(&cfg, NULL, "k", "https://imgs.r2.example.net/k");

    char *u = (char *)"x";
    imgq_s3_config_set(&cfg.endpoint, "ftp://example.net");
    assert_int_equal(imgq_s3_object_url(&cfg, NULL, "k", &u), IMGQ_ECONFIG);
    imgq_s3_config_set(&cfg.endpoint, "http://user:pw@example.net");
    assert_int_equal(imgq_s3_object_url(&cfg, NULL, "k", &u), IMGQ_ECONFIG);
    imgq_s3_config_set(&cfg.endpoint, "http://example.net/?q=1");
    assert_int_equal(imgq_s3_object_url(&cfg, NULL, "k", &u), IMGQ_ECONFIG);
    imgq_s3_config_set(&cfg.endpoint, "http://example.net");
    imgq_s3_config_set(&cfg.bucket, NULL);
    assert_int_equal(imgq_s3_object_url(&cfg, NULL, "k", &u), IMGQ_ECONFIG);
    assert_int_equal(imgq_s3_object_url(&cfg, "b", "", &u), IMGQ_EINVAL);
    assert_int_equal(imgq_s3_object_url(&cfg, "b c", "k", &u), IMGQ_EINVAL);
    imgq_s3_config_clear(&cfg);
}

/* ---- configuration from the environment ------------------------------------------------ */

static void test_config_from_env(void **state)
{
    struct imgq_s3_config cfg;
    const char *why = NULL;
    imgq_s3_config_init(&cfg);

    /* Nothing set: AWS, us-east-1, virtual host, no credentials, no bucket. */
    assert_int_equal(imgq_s3_config_from_env(&cfg, &why), 0);
    assert_null(cfg.endpoint);
    assert_string_equal(cfg.region, "us-east-1");
    assert_false(cfg.path_style);
    assert_null(cfg.access_key);
    assert_null(cfg.bucket);
    char *problem = NULL;
    assert_int_equal(imgq_s3_config_check(&cfg, false, &problem), IMGQ_ECONFIG);
    assert_non_null(strstr(problem, "AWS_ACCESS_KEY_ID"));
    free(problem);

    /* The service-specific endpoint wins over the global one; custom endpoint: path style. */
    setenv("AWS_ENDPOINT_URL", "http://global.example:1", 1);
    setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:4568", 1);
    setenv("AWS_DEFAULT_REGION", "eu-west-3", 1);
    setenv("AWS_ACCESS_KEY_ID", "S3RVER", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "S3RVER", 1);
    setenv("AWS_SESSION_TOKEN", "", 1); /* empty counts as unset */
    setenv("IMGQ_S3_BUCKET", "imgq-test", 1);
    assert_int_equal(imgq_s3_config_from_env(&cfg, &why), 0);
    assert_string_equal(cfg.endpoint, "http://127.0.0.1:4568");
    assert_string_equal(cfg.region, "eu-west-3");
    assert_true(cfg.path_style);
    assert_string_equal(cfg.access_key, "S3RVER");
    assert_null(cfg.session_token);
    assert_string_equal(cfg.bucket, "imgq-test");
    assert_int_equal(imgq_s3_config_check(&cfg, true, &problem), 0);
    assert_null(problem);

    /* AWS_REGION beats AWS_DEFAULT_REGION; the global endpoint is the fallback. */
    setenv("AWS_REGION", "ap-south-1", 1);
    unsetenv("AWS_ENDPOINT_URL_S3");
    assert_int_equal(imgq_s3_config_from_env(&cfg, &why), 0);
    assert_string_equal(cfg.region, "ap-south-1");
    assert_string_equal(cfg.endpoint, "http://global.example:1");
    assert_true(cfg.path_style);

    /* Explicit addressing style, and ignoring configured endpoints. */
    setenv("IMGQ_S3_ADDRESSING_STYLE", "virtual", 1);
    assert_int_equal(imgq_s3_config_from_env(&cfg, &why), 0);
    assert_false(cfg.path_style);
    setenv("IMGQ_S3_ADDRESSING_STYLE", "auto", 1);
    setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true", 1);
    assert_int_equal(imgq_s3_config_from_env(&cfg, &why), 0);
    assert_null(cfg.endpoint);
    assert_false(cfg.path_style);
    unsetenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS");

    setenv("IMGQ_S3_ADDRESSING_STYLE", "sideways", 1);
    assert_int_equal(imgq_s3_config_from_env(&cfg, &why), IMGQ_ECONFIG);
    assert_non_null(strstr(why, "IMGQ_S3_ADDRESSING_STYLE"));
    unsetenv("IMGQ_S3_ADDRESSING_STYLE");

    setenv("AWS_ENDPOINT_URL_S3", "localhost:9000", 1);
    assert_int_equal(imgq_s3_config_from_env(&cfg, &why), IMGQ_ECONFIG);
    assert_non_null(strstr(why, "AWS_ENDPOINT_URL_S3"));
    unsetenv("AWS_ENDPOINT_URL_S3");
    setenv("AWS_ENDPOINT_URL", "s3.example.com", 1);
    assert_int_equal(imgq_s3_config_from_env(&cfg, &why), IMGQ_ECONFIG);
    assert_string_equal(why, "AWS_ENDPOINT_URL is not an http:// or https:// URL");

    /* Fields set by hand (config file, flags) work the same way. */
    imgq_s3_config_clear(&cfg);
    imgq_s3_config_set(&cfg.access_key, "a");
    imgq_s3_config_set(&cfg.secret_key, "b");
    assert_int_equal(imgq_s3_config_check(&cfg, true, &problem), IMGQ_ECONFIG);
    assert_non_null(strstr(problem, "IMGQ_S3_BUCKET"));
    free(problem);
    imgq_s3_config_set(&cfg.region, "bad/region");
    assert_int_equal(imgq_s3_config_check(&cfg, false, &problem), IMGQ_ECONFIG);
    free(problem);
    imgq_s3_config_clear(&cfg);
    imgq_s3_config_clear(&cfg); /* clearing twice is fine */
    clean_env(NULL);
}

/* ---- XML error bodies ------------------------------------------------------------------ */

static void check_error(const char *body, size_t len, const char *code, const char *message)
{
    char *c = (char *)"x", *m = (char *)"x";
    int rc = imgq_s3_parse_error(body, len, &c, &m);
    if (!code) {
        assert_int_equal(rc, IMGQ_EPARSE);
        assert_null(c);
        assert_null(m);
        return;
    }
    assert_int_equal(rc, 0);
    assert_string_equal(c, code);
    assert_string_equal(m, message);
    free(c);
    free(m);
}

#define CHECK_ERROR(lit, code, message) check_error((lit), strlen(lit), (code), (message))

static void test_parse_error(void **state)
{
    CHECK_ERROR("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code>"
                "<Message>Access Denied</Message><RequestId>4442587FB7D0A2F9</RequestId>"
                "</Error>",
                "AccessDenied", "Access Denied");
    CHECK_ERROR("<Error>\n  <Message>The specified key does not exist.</Message>\n"
                "  <Code>NoSuchKey</Code>\n  <Key>a/b.png</Key>\n</Error>",
                "NoSuchKey", "The specified key does not exist.");
    /* Entities, character references, control characters. */
    CHECK_ERROR("<Error><Code>InvalidArgument</Code><Message>a &lt;b&gt; &amp; &quot;c&quot; "
                "&apos;d&apos; &#65;&#x42; &#7; &bogus; &#;\tend\n</Message></Error>",
                "InvalidArgument", "a <b> & \"c\" 'd' AB ? &bogus; &#; end ");
    /* No message. */
    CHECK_ERROR("<Error><Code>SlowDown</Code></Error>", "SlowDown", "");
    /* Truncated in the middle of the message: the message is dropped, the code kept. */
    CHECK_ERROR("<Error><Code>InternalError</Code><Message>We encountered an inter",
                "InternalError", "");
    /* Truncated inside the code, or nothing of use. */
    CHECK_ERROR("<Error><Code>NoSuch", NULL, NULL);
    CHECK_ERROR("", NULL, NULL);
    CHECK_ERROR("<html><body>502 Bad Gateway</body></html>", NULL, NULL);
    CHECK_ERROR("<Code>NoError</Code>", NULL, NULL);
    CHECK_ERROR("<Error><Code></Code></Error>", NULL, NULL);
    CHECK_ERROR("<Error><Code><![CDATA[x]]></Code></Error>", NULL, NULL);
    CHECK_ERROR("<Error><Code>A<B>C</B></Code></Error>", NULL, NULL);
    /* The code and message belong to <Error>, not to an earlier element. */
    CHECK_ERROR("<Other><Code>Wrong</Code></Other><Error><Code>Right</Code></Error>", "Right", "");
    check_error(NULL, 0, NULL, NULL);

    /* Binary with NULs, and the length (not a NUL) bounds the search. */
    static const char bin[] = "\0\xff<Error>\0<Code>Bin\x01"
                              "Code</Code><Message>m\0x</Message>";
    check_error(bin, sizeof(bin) - 1, "Bin Code", "m x");
    check_error("<Error><Code>Cut</Code>", 14, NULL, NULL);

    /* Huge message: capped. */
    size_t n = 100000;
    char *big = malloc(n + 64);
    strcpy(big, "<Error><Code>Big</Code><Message>");
    size_t at = strlen(big);
    memset(big + at, 'm', n);
    strcpy(big + at + n, "</Message></Error>");
    char *c, *m;
    assert_int_equal(imgq_s3_parse_error(big, strlen(big), &c, &m), 0);
    assert_string_equal(c, "Big");
    assert_true(strlen(m) <= 515);
    assert_string_equal(m + strlen(m) - 3, "...");
    free(c);
    free(m);
    free(big);
}

/* Operations refuse bad configuration and arguments synchronously, before any I/O. */
static void test_sync_ops_refuse_bad_config(void **state)
{
    struct imgq_s3_config cfg;
    char *err = NULL;
    unsigned char *data = (unsigned char *)"x";
    size_t len = 1;
    imgq_s3_config_init(&cfg);
    imgq_s3_config_set(&cfg.endpoint, "http://127.0.0.1:9");
    imgq_s3_config_set(&cfg.bucket, "b");
    assert_int_equal(imgq_s3_put_sync(&cfg, "k", NULL, "x", 1, NULL, &err), IMGQ_ECONFIG);
    assert_non_null(strstr(err, "S3 PUT s3://b/k: S3 credentials missing"));
    free(err);
    imgq_s3_config_set(&cfg.access_key, "a");
    imgq_s3_config_set(&cfg.secret_key, "s");
    const char *bad_meta[] = {"bad name", "v", NULL};
    assert_int_equal(imgq_s3_put_sync(&cfg, "k", NULL, "x", 1, bad_meta, &err), IMGQ_EINVAL);
    assert_non_null(strstr(err, "metadata"));
    free(err);
    const char *bad_value[] = {"name", "line\nbreak", NULL};
    assert_int_equal(imgq_s3_put_sync(&cfg, "k", NULL, "x", 1, bad_value, NULL), IMGQ_EINVAL);
    assert_int_equal(imgq_s3_put_sync(&cfg, "k", "text/plain\r\nX: y", "x", 1, NULL, &err),
                     IMGQ_EINVAL);
    free(err);
    assert_int_equal(imgq_s3_get_sync(&cfg, "", &data, &len, &err), IMGQ_EINVAL);
    assert_null(data);
    assert_int_equal(len, 0);
    free(err);
    imgq_s3_config_clear(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_presign_reproduces_aws_example),
        cmocka_unit_test(test_presign_variants),
        cmocka_unit_test(test_presign_rejects_bad_input),
        cmocka_unit_test(test_uri_encode),
        cmocka_unit_test(test_object_urls),
        cmocka_unit_test(test_config_from_env),
        cmocka_unit_test(test_parse_error),
        cmocka_unit_test(test_sync_ops_refuse_bad_config),
    };
    return cmocka_run_group_tests(tests, clean_env, NULL);
}
