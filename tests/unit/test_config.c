/* test_config.c - the layered configuration (config.h): sizes with units, the file's "worker"
 * keys, the environment over the file for every setting, unknown keys named with the nearest
 * known one, secrets refused wherever they are in the file, and a bad IMGQ_LOG_LEVEL. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "imgq/config.h"

static void test_parse_bytes(void **state)
{
    (void)state;
    long long v = -7;
    assert_int_equal(imgq_config_parse_bytes("0", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(imgq_config_parse_bytes("1234", &v), 0);
    assert_int_equal(v, 1234);
    assert_int_equal(imgq_config_parse_bytes("512K", &v), 0);
    assert_int_equal(v, 512LL << 10);
    assert_int_equal(imgq_config_parse_bytes("256M", &v), 0);
    assert_int_equal(v, 256LL << 20);
    assert_int_equal(imgq_config_parse_bytes("10G", &v), 0);
    assert_int_equal(v, 10LL << 30);
    assert_int_equal(imgq_config_parse_bytes("2TiB", &v), 0);
    assert_int_equal(v, 2LL << 40);
    assert_int_equal(imgq_config_parse_bytes("3gb", &v), 0);
    assert_int_equal(v, 3LL << 30);
    v = 99;
    const char *bad[] = {"", "-1", " 1", "1 ", "1X", "G", "1.5G", "1GiBs", "0x10", NULL};
    for (const char **b = bad; *b; b++)
        assert_int_equal(imgq_config_parse_bytes(*b, &v), IMGQ_EINVAL);
    assert_int_equal(imgq_config_parse_bytes(NULL, &v), IMGQ_EINVAL);
    assert_int_equal(imgq_config_parse_bytes("99999999999999999999", &v), IMGQ_ERANGE);
    assert_int_equal(imgq_config_parse_bytes("8388608T", &v), IMGQ_ERANGE);
    assert_int_equal(v, 99); /* untouched on error */
}

static char path[256];

static void write_config(const char *text)
{
    snprintf(path, sizeof path, "%s/imgq-config-XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

static void clear_env(void)
{
    unsetenv("IMGQ_CONFIG");
    unsetenv("IMGQ_SPOOL_DIR");
    unsetenv("IMGQ_SPOOL_MAX_BYTES");
    unsetenv("IMGQ_SPOOL_MEMORY_BYTES");
}

static void test_defaults(void **state)
{
    (void)state;
    clear_env();
    struct imgq_config c;
    char err[256];
    assert_int_equal(imgq_config_load(&c, NULL, err, sizeof err), 0);
    assert_null(c.spool_dir);
    assert_int_equal(c.spool_max_bytes, -1);
    assert_int_equal(c.spool_memory_bytes, -1);
    assert_int_equal(c.store_timeout_ms, 0);
    imgq_config_clear(&c);
}

static void test_file_then_env(void **state)
{
    (void)state;
    clear_env();
    write_config("{\"worker\": {\"spool_dir\": \"/var/lib/imgq/spool\", \"spool_max_bytes\": "
                 "\"10G\", \"spool_memory_bytes\": 1024, \"store_timeout_seconds\": 5}}");
    struct imgq_config c;
    char err[256];
    assert_int_equal(imgq_config_load(&c, path, err, sizeof err), 0);
    assert_string_equal(c.spool_dir, "/var/lib/imgq/spool");
    assert_int_equal(c.spool_max_bytes, 10LL << 30);
    assert_int_equal(c.spool_memory_bytes, 1024);
    assert_int_equal(c.store_timeout_ms, 5000);
    imgq_config_clear(&c);

    setenv("IMGQ_SPOOL_DIR", "/srv/spool", 1);
    setenv("IMGQ_SPOOL_MAX_BYTES", "2G", 1);
    setenv("IMGQ_SPOOL_MEMORY_BYTES", "0", 1);
    assert_int_equal(imgq_config_load(&c, path, err, sizeof err), 0);
    assert_string_equal(c.spool_dir, "/srv/spool");
    assert_int_equal(c.spool_max_bytes, 2LL << 30);
    assert_int_equal(c.spool_memory_bytes, 0);
    imgq_config_clear(&c);

    setenv("IMGQ_SPOOL_MEMORY_BYTES", "lots", 1);
    assert_int_equal(imgq_config_load(&c, path, err, sizeof err), IMGQ_EINVAL);
    assert_non_null(strstr(err, "IMGQ_SPOOL_MEMORY_BYTES 'lots'"));
    clear_env();
    unlink(path);
}

static void test_file_refusals(void **state)
{
    (void)state;
    clear_env();
    const char *bad[][2] = {
        {"{\"worker\": {\"spool_max_bytes\": -1}}", "'worker.spool_max_bytes' must be a size"},
        {"{\"worker\": {\"spool_memory_bytes\": \"1.5G\"}}", "'worker.spool_memory_bytes'"},
        {"{\"worker\": {\"spool_dir\": 7}}", "'worker.spool_dir' must be a string"},
        {"{\"worker\": {\"store_timeout_seconds\": 0}}", "'worker.store_timeout_seconds'"},
        {"{\"s3\": \"http://s3\"}", "'s3' must be an object"},
        {"[1]", "expected a JSON object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_config(bad[i][0]);
        struct imgq_config c;
        char err[256] = "";
        assert_int_equal(imgq_config_load(&c, path, err, sizeof err), IMGQ_EINVAL);
        assert_non_null(strstr(err, bad[i][1]));
        assert_non_null(strstr(err, path));
        unlink(path);
    }
}

/* Load 'text' as a config file, expecting IMGQ_EINVAL with 'want' in the message. */
static void expect_refused(const char *text, const char *want)
{
    write_config(text);
    struct imgq_config c;
    char err[512] = "", full[1024];
    int r = imgq_config_load(&c, path, err, sizeof err);
    snprintf(full, sizeof full, want, path);
    if (r != IMGQ_EINVAL || !strstr(err, full))
        fail_msg("%s: got %d '%s', expected '%s'", text, r, err, full);
    unlink(path);
}

static void test_unknown_keys(void **state)
{
    (void)state;
    clear_env();
    expect_refused("{\"worker\": {\"concurency\": 8}}",
                   "unknown key 'worker.concurency' in %s (did you mean 'worker.concurrency'?)");
    expect_refused("{\"redis\": \"redis://h:1/0\"}",
                   "unknown key 'redis' in %s (did you mean 'redis_url'?)");
    expect_refused("{\"s3\": {\"endpont\": \"http://h\"}}",
                   "unknown key 's3.endpont' in %s (did you mean 's3.endpoint'?)");
    expect_refused("{\"openai\": {\"base_uri\": \"http://h\"}}",
                   "unknown key 'openai.base_uri' in %s (did you mean 'openai.base_url'?)");
    expect_refused("{\"gateways\": {\"gw-a\": {\"baseurl\": \"http://h\"}}}",
                   "unknown key 'gateways.gw-a.baseurl' in %s (did you mean "
                   "'gateways.gw-a.base_url'?)");
    expect_refused("{\"webhooks\": {\"endpoints\": [{\"url_prefix\": \"http://h/\", "
                   "\"secret_env\": \"X\"}, {\"url_prefx\": \"http://h/\"}]}}",
                   "unknown key 'webhooks.endpoints[1].url_prefx' in %s (did you mean "
                   "'webhooks.endpoints[1].url_prefix'?)");
    expect_refused("{\"wroker\": {}}", "unknown key 'wroker' in %s (did you mean 'worker'?)");
}

static void test_secrets_refused(void **state)
{
    (void)state;
    clear_env();
    const char *cases[][2] = {
        {"{\"s3\": {\"secret_access_key\": \"hunter2\"}}",
         "%s: 'secret_access_key' does not belong in a config file (s3.secret_access_key"},
        {"{\"s3\": {\"access_key_id\": \"hunter2\"}}", "AWS_ACCESS_KEY_ID"},
        {"{\"s3\": {\"session_token\": \"hunter2\"}}", "AWS_SESSION_TOKEN"},
        {"{\"openai\": {\"api_key\": \"hunter2\"}}", "set OPENAI_API_KEY instead"},
        {"{\"replicate\": {\"token\": \"hunter2\"}}", "set REPLICATE_API_TOKEN instead"},
        {"{\"gateways\": {\"tree-std\": {\"base_url\": \"http://h\", \"apiKey\": \"hunter2\"}}}",
         "set IMGQ_GATEWAY_TREE_STD_API_KEY instead"},
        {"{\"password\": \"hunter2\"}", "'password' does not belong in a config file"},
        {"{\"worker\": {\"auth_token\": \"hunter2\"}}", "(worker.auth_token"},
        {"{\"webhooks\": {\"secret\": \"whsec_hunter2\"}}", "set IMGQ_WEBHOOK_SECRET instead"},
        {"{\"webhooks\": {\"endpoints\": [{\"url_prefix\": \"http://h/\", \"secret_env\": \"X\", "
         "\"secret\": \"whsec_hunter2\"}]}}",
         "(webhooks.endpoints[0].secret"},
        {"{\"redis_url\": \"redis://user:hunter2@h:6379/0\"}", "set IMGQ_REDIS_URL instead"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        expect_refused(cases[i][0], cases[i][1]);
        /* never echoed */
        write_config(cases[i][0]);
        struct imgq_config c;
        char err[512] = "";
        assert_int_equal(imgq_config_load(&c, path, err, sizeof err), IMGQ_EINVAL);
        assert_null(strstr(err, "hunter2"));
        unlink(path);
    }
    /* The name of a variable is not a secret. */
    write_config("{\"webhooks\": {\"endpoints\": [{\"url_prefix\": \"http://h/\", "
                 "\"secret_env\": \"CMS_SECRET\"}]}, \"redis_url\": \"redis://h:1/0\"}");
    struct imgq_config c;
    char err[512] = "";
    assert_int_equal(imgq_config_load(&c, path, err, sizeof err), 0);
    imgq_config_clear(&c);
    unlink(path);
}

/* Every setting with a file key: the file's value, beaten by each of its variables. */
static const struct {
    const char *section, *key, *file_json, *env, *env_value;
    size_t off;
    enum { S, I, B } kind;
    const char *file_expect, *env_expect; /* S: the string; I, B: the number */
} every[] = {
#define AT(f) offsetof(struct imgq_config, f)
    {NULL, "redis_url", "\"redis://file:1/0\"", "IMGQ_REDIS_URL", "redis://env:2/0", AT(redis_url),
     S, "redis://file:1/0", "redis://env:2/0"},
    {NULL, "prefix", "\"fp\"", "IMGQ_PREFIX", "ep", AT(prefix), S, "fp", "ep"},
    {NULL, "queue", "\"fq\"", "IMGQ_QUEUE", "eq", AT(queue), S, "fq", "eq"},
    {NULL, "catalog", "\"/f/cat.json\"", "IMGQ_CATALOG", "/e/cat.json", AT(catalog), S,
     "/f/cat.json", "/e/cat.json"},
    {NULL, "ssrf_allow", "\"10.0.0.1\"", "IMGQ_SSRF_ALLOW", "127.0.0.1", AT(ssrf_allow), S,
     "10.0.0.1", "127.0.0.1"},
    {"s3", "endpoint", "\"http://file-s3:9000\"", "AWS_ENDPOINT_URL_S3", "http://env-s3:9000",
     AT(s3_endpoint), S, "http://file-s3:9000", "http://env-s3:9000"},
    {"s3", "endpoint", "\"http://file-s3:9000\"", "AWS_ENDPOINT_URL", "http://env-any:9000",
     AT(s3_endpoint), S, "http://file-s3:9000", "http://env-any:9000"},
    {"s3", "region", "\"eu-west-1\"", "AWS_REGION", "us-east-2", AT(s3_region), S, "eu-west-1",
     "us-east-2"},
    {"s3", "region", "\"eu-west-1\"", "AWS_DEFAULT_REGION", "ap-south-1", AT(s3_region), S,
     "eu-west-1", "ap-south-1"},
    {"s3", "bucket", "\"fb\"", "IMGQ_S3_BUCKET", "eb", AT(s3_bucket), S, "fb", "eb"},
    {"s3", "key_prefix", "\"f/\"", "IMGQ_S3_KEY_PREFIX", "e/", AT(s3_key_prefix), S, "f/", "e/"},
    {"s3", "reference_buckets", "\"fa,fb\"", "IMGQ_S3_REFERENCE_BUCKETS", "ea",
     AT(s3_reference_buckets), S, "fa,fb", "ea"},
    {"worker", "spool_dir", "\"/f/spool\"", "IMGQ_SPOOL_DIR", "/e/spool", AT(spool_dir), S,
     "/f/spool", "/e/spool"},
    {"worker", "spool_max_bytes", "\"1G\"", "IMGQ_SPOOL_MAX_BYTES", "2G", AT(spool_max_bytes), B,
     "1073741824", "2147483648"},
    {"worker", "spool_memory_bytes", "1024", "IMGQ_SPOOL_MEMORY_BYTES", "2K",
     AT(spool_memory_bytes), B, "1024", "2048"},
    {"worker", "concurrency", "8", NULL, NULL, AT(concurrency), I, "8", NULL},
    {"worker", "lease_seconds", "7", NULL, NULL, AT(lease_ms), I, "7000", NULL},
    {"worker", "grace_seconds", "6", NULL, NULL, AT(grace_ms), I, "6000", NULL},
    {"worker", "store_timeout_seconds", "5", NULL, NULL, AT(store_timeout_ms), I, "5000", NULL},
    {"openai", "base_url", "\"http://file-openai/v1\"", "OPENAI_BASE_URL", "http://env-openai/v1",
     AT(apis[0].base_url), S, "http://file-openai/v1", "http://env-openai/v1"},
    {"gemini", "base_url", "\"http://f-g\"", "GEMINI_BASE_URL", "http://e-g", AT(apis[1].base_url),
     S, "http://f-g", "http://e-g"},
    {"ark", "base_url", "\"http://f-a\"", "ARK_BASE_URL", "http://e-a", AT(apis[2].base_url), S,
     "http://f-a", "http://e-a"},
    {"dashscope", "base_url", "\"http://f-d\"", "DASHSCOPE_BASE_URL", "http://e-d",
     AT(apis[3].base_url), S, "http://f-d", "http://e-d"},
    {"replicate", "base_url", "\"http://f-r\"", "REPLICATE_BASE_URL", "http://e-r",
     AT(apis[4].base_url), S, "http://f-r", "http://e-r"},
    {"fal", "base_url", "\"http://f-f\"", "FAL_BASE_URL", "http://e-f", AT(apis[5].base_url), S,
     "http://f-f", "http://e-f"},
    {"bfl", "base_url", "\"http://f-b\"", "BFL_BASE_URL", "http://e-b", AT(apis[6].base_url), S,
     "http://f-b", "http://e-b"},
#undef AT
};

static void check_value(const struct imgq_config *c, size_t i, const char *want)
{
    const char *p = (const char *)c + every[i].off;
    char got[64];
    if (every[i].kind == S)
        snprintf(got, sizeof got, "%s", *(char *const *)p ? *(char *const *)p : "(null)");
    else if (every[i].kind == I)
        snprintf(got, sizeof got, "%d", *(const int *)p);
    else
        snprintf(got, sizeof got, "%lld", *(const long long *)p);
    if (strcmp(got, want) != 0)
        fail_msg("%s%s%s (env %s): got '%s', expected '%s'",
                 every[i].section ? every[i].section : "", every[i].section ? "." : "",
                 every[i].key, every[i].env ? every[i].env : "none", got, want);
}

static void unset_every(void)
{
    clear_env();
    for (size_t i = 0; i < sizeof every / sizeof every[0]; i++)
        if (every[i].env)
            unsetenv(every[i].env);
    unsetenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS");
    unsetenv("IMGQ_LOG_LEVEL");
}

static void test_env_beats_file_for_every_setting(void **state)
{
    (void)state;
    unset_every();
    for (size_t i = 0; i < sizeof every / sizeof every[0]; i++) {
        char text[256];
        if (every[i].section)
            snprintf(text, sizeof text, "{\"%s\": {\"%s\": %s}}", every[i].section, every[i].key,
                     every[i].file_json);
        else
            snprintf(text, sizeof text, "{\"%s\": %s}", every[i].key, every[i].file_json);
        write_config(text);
        struct imgq_config c;
        char err[512] = "";
        if (imgq_config_load(&c, path, err, sizeof err) != 0)
            fail_msg("%s: %s", text, err);
        check_value(&c, i, every[i].file_expect);
        imgq_config_clear(&c);
        if (every[i].env) {
            setenv(every[i].env, every[i].env_value, 1);
            assert_int_equal(imgq_config_load(&c, path, err, sizeof err), 0);
            check_value(&c, i, every[i].env_expect);
            imgq_config_clear(&c);
            unsetenv(every[i].env);
        }
        unlink(path);
    }
    /* AWS_ENDPOINT_URL_S3 beats AWS_ENDPOINT_URL, both beat the file; under
     * AWS_IGNORE_CONFIGURED_ENDPOINT_URLS neither counts. */
    write_config("{\"s3\": {\"endpoint\": \"http://file-s3:9000\"}}");
    setenv("AWS_ENDPOINT_URL", "http://env-any:9000", 1);
    setenv("AWS_ENDPOINT_URL_S3", "http://env-s3:9000", 1);
    struct imgq_config c;
    char err[512] = "";
    assert_int_equal(imgq_config_load(&c, path, err, sizeof err), 0);
    assert_string_equal(c.s3_endpoint, "http://env-s3:9000");
    imgq_config_clear(&c);
    setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true", 1);
    assert_int_equal(imgq_config_load(&c, path, err, sizeof err), 0);
    assert_string_equal(c.s3_endpoint, "http://file-s3:9000");
    imgq_config_clear(&c);
    unlink(path);
    unset_every();
}

static void test_log_level(void **state)
{
    (void)state;
    unset_every();
    struct imgq_config c;
    char err[512] = "";
    setenv("IMGQ_LOG_LEVEL", "debug", 1);
    assert_int_equal(imgq_config_load(&c, NULL, err, sizeof err), 0);
    imgq_config_clear(&c);
    setenv("IMGQ_LOG_LEVEL", "verbose", 1);
    assert_int_equal(imgq_config_load(&c, NULL, err, sizeof err), IMGQ_EINVAL);
    assert_non_null(strstr(err, "IMGQ_LOG_LEVEL 'verbose': expected error, warn, info or debug"));
    unsetenv("IMGQ_LOG_LEVEL");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_bytes),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_file_then_env),
        cmocka_unit_test(test_file_refusals),
        cmocka_unit_test(test_unknown_keys),
        cmocka_unit_test(test_secrets_refused),
        cmocka_unit_test(test_env_beats_file_for_every_setting),
        cmocka_unit_test(test_log_level),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
