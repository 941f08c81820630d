/* test_config.c - the worker's spool settings in the layered configuration (config.h): sizes
 * with units, the file's "worker" keys, the environment over the file, and clear refusals. */
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
        {"{\"worker\": {\"spool_dir\": 7}}", "'spool_dir' must be a string"},
        {"{\"worker\": {\"store_timeout_seconds\": 0}}", "'store_timeout_seconds'"},
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_bytes),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_file_then_env),
        cmocka_unit_test(test_file_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
