/* test_spool.c - the worker's spool of paid bytes (workers/spool.h): round trips, the atomic
 * file layout, both caps, damaged files refused and set aside, leftovers of a crash, the
 * parser's refusals, and memory-only spools. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "imgq/error.h"
#include "spool.h"

#define KEY "images/3f/3fa9c0de00000000000000000000000000000000000000000000000000000beef.webp"

static char dir[256];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "%s/imgq-spool-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *de;
        char p[600];
        while ((de = readdir(d)))
            if (de->d_name[0] != '.' || strncmp(de->d_name, ".tmp.", 5) == 0) {
                snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
                unlink(p);
            }
        closedir(d);
    }
    char sub[300];
    snprintf(sub, sizeof sub, "%s/a/b", dir);
    rmdir(sub);
    snprintf(sub, sizeof sub, "%s/a", dir);
    rmdir(sub);
    rmdir(dir);
    return 0;
}

/* Names in dir ending with suffix. */
static int count(const char *suffix)
{
    int n = 0;
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        size_t a = strlen(de->d_name), b = strlen(suffix);
        n += a >= b && strcmp(de->d_name + a - b, suffix) == 0;
    }
    if (d)
        closedir(d);
    return n;
}

/* The one .spool file's path. */
static void spool_path(char *out, size_t len)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    out[0] = '\0';
    while (d && (de = readdir(d)))
        if (strstr(de->d_name, ".spool") && !strstr(de->d_name, ".damaged"))
            snprintf(out, len, "%s/%s", dir, de->d_name);
    closedir(d);
}

static void test_round_trip(void **state)
{
    (void)state;
    struct spool *sp;
    char why[512];
    assert_int_equal(spool_open(&sp, dir, 1 << 20, 1 << 20, why, sizeof why), 0);
    assert_string_equal(spool_dir(sp), dir);
    uint8_t bytes[1000];
    for (size_t i = 0; i < sizeof bytes; i++)
        bytes[i] = (uint8_t)(i * 7);
    assert_false(spool_has(sp, KEY));
    assert_int_equal(spool_write(sp, KEY, "image/webp", bytes, sizeof bytes, why, sizeof why), 0);
    assert_true(spool_has(sp, KEY));
    assert_int_equal(count(".spool"), 1);
    assert_int_equal(count(".tmp"), 0);
    uint64_t used = spool_disk_used(sp);
    assert_true(used > sizeof bytes && used < sizeof bytes + 400);

    uint8_t *data;
    size_t len;
    char *type;
    assert_int_equal(spool_read(sp, KEY, &data, &len, &type, why, sizeof why), 0);
    assert_int_equal(len, sizeof bytes);
    assert_memory_equal(data, bytes, len);
    assert_string_equal(type, "image/webp");
    free(data);
    free(type);

    /* The same key again replaces the file; the count does not double. */
    assert_int_equal(spool_write(sp, KEY, "image/webp", bytes, sizeof bytes, why, sizeof why), 0);
    assert_int_equal(spool_disk_used(sp), used);
    assert_int_equal(count(".spool"), 1);

    char **keys;
    size_t n;
    assert_int_equal(spool_list(sp, &keys, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(keys[0], KEY);
    spool_list_free(keys, n);

    /* A new spool on the same directory counts what it finds. */
    struct spool *again;
    assert_int_equal(spool_open(&again, dir, 1 << 20, 1, why, sizeof why), 0);
    assert_int_equal(spool_disk_used(again), used);
    spool_free(again);

    assert_int_equal(spool_remove(sp, KEY), 0);
    assert_int_equal(spool_disk_used(sp), 0);
    assert_false(spool_has(sp, KEY));
    assert_int_equal(spool_remove(sp, KEY), IMGQ_ENOTFOUND);
    assert_int_equal(spool_read(sp, KEY, &data, &len, NULL, why, sizeof why), IMGQ_ENOTFOUND);
    assert_null(data);
    spool_free(sp);
}

static void test_empty_payload_and_nested_dir(void **state)
{
    (void)state;
    char nested[300];
    snprintf(nested, sizeof nested, "%s/a/b/", dir);
    struct spool *sp;
    assert_int_equal(spool_open(&sp, nested, 1 << 20, 0, NULL, 0), 0);
    struct stat st;
    assert_int_equal(stat(spool_dir(sp), &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    assert_int_equal(spool_write(sp, "k.json", "application/json", "", 0, NULL, 0), 0);
    uint8_t *data;
    size_t len = 99;
    assert_int_equal(spool_read(sp, "k.json", &data, &len, NULL, NULL, 0), 0);
    assert_int_equal(len, 0);
    free(data);
    assert_int_equal(spool_remove(sp, "k.json"), 0);
    spool_free(sp);
}

static void test_disk_cap(void **state)
{
    (void)state;
    struct spool *sp;
    char why[512];
    uint8_t bytes[600] = {1};
    assert_int_equal(spool_open(&sp, dir, 1000, 0, why, sizeof why), 0);
    assert_int_equal(spool_write(sp, "one", "image/png", bytes, sizeof bytes, why, sizeof why), 0);
    assert_int_equal(spool_write(sp, "two", "image/png", bytes, sizeof bytes, why, sizeof why),
                     IMGQ_ERANGE);
    assert_non_null(strstr(why, "is full"));
    assert_false(spool_has(sp, "two"));
    assert_int_equal(count(".tmp"), 0);
    /* Room comes back with the first file. */
    assert_int_equal(spool_remove(sp, "one"), 0);
    assert_int_equal(spool_write(sp, "two", "image/png", bytes, sizeof bytes, why, sizeof why), 0);
    assert_int_equal(spool_remove(sp, "two"), 0);
    spool_free(sp);
}

static void test_memory_cap(void **state)
{
    (void)state;
    struct spool *sp;
    assert_int_equal(spool_open(&sp, NULL, 0, 100, NULL, 0), 0);
    assert_null(spool_dir(sp));
    assert_true(spool_mem_take(sp, 60));
    assert_false(spool_mem_take(sp, 41)); /* nothing counted */
    assert_int_equal(spool_mem_used(sp), 60);
    assert_true(spool_mem_take(sp, 40));
    assert_false(spool_mem_over(sp));
    spool_mem_force(sp, 5);
    assert_true(spool_mem_over(sp));
    spool_mem_give(sp, 45);
    assert_false(spool_mem_over(sp));
    spool_mem_give(sp, 1000); /* never below zero */
    assert_int_equal(spool_mem_used(sp), 0);
    /* Memory only: the file functions say so. */
    char why[200];
    uint8_t *data;
    size_t len;
    assert_int_equal(spool_write(sp, "k", "t", "x", 1, why, sizeof why), IMGQ_ECONFIG);
    assert_int_equal(spool_read(sp, "k", &data, &len, NULL, why, sizeof why), IMGQ_ECONFIG);
    assert_false(spool_has(sp, "k"));
    char **keys;
    size_t n;
    assert_int_equal(spool_list(sp, &keys, &n), IMGQ_ECONFIG);
    spool_free(sp);
    spool_free(NULL);
}

static void test_bad_keys(void **state)
{
    (void)state;
    struct spool *sp;
    assert_int_equal(spool_open(&sp, dir, 1 << 20, 0, NULL, 0), 0);
    assert_int_equal(spool_write(sp, "", "t", "x", 1, NULL, 0), IMGQ_EINVAL);
    assert_int_equal(spool_write(sp, "a\nb", "t", "x", 1, NULL, 0), IMGQ_EINVAL);
    assert_int_equal(spool_write(sp, "k", "", "x", 1, NULL, 0), IMGQ_EINVAL);
    char longkey[SPOOL_KEY_MAX + 2];
    memset(longkey, 'k', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = '\0';
    assert_int_equal(spool_write(sp, longkey, "t", "x", 1, NULL, 0), IMGQ_EINVAL);
    assert_int_equal(count(".spool"), 0);
    spool_free(sp);
}

/* Damage the one file: flip a payload byte, cut it, or swap it for another key's file. */
static void test_damaged_refused(void **state)
{
    (void)state;
    struct spool *sp;
    char why[600], path[600];
    uint8_t bytes[300];
    memset(bytes, 'z', sizeof bytes);
    assert_int_equal(spool_open(&sp, dir, 1 << 20, 0, why, sizeof why), 0);

    /* A flipped byte: the checksum says so. */
    assert_int_equal(spool_write(sp, KEY, "image/webp", bytes, sizeof bytes, why, sizeof why), 0);
    spool_path(path, sizeof path);
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    fseek(f, -1, SEEK_END);
    fputc('y', f);
    fclose(f);
    uint8_t *data;
    size_t len;
    assert_int_equal(spool_read(sp, KEY, &data, &len, NULL, why, sizeof why), IMGQ_EPARSE);
    assert_non_null(strstr(why, "does not match its SHA-256"));
    assert_non_null(strstr(why, path));
    assert_false(spool_has(sp, KEY));
    assert_int_equal(count(".spool.damaged"), 1);
    assert_int_equal(spool_disk_used(sp), 0); /* no longer counted */

    /* Cut short: truncated. */
    assert_int_equal(spool_write(sp, KEY, "image/webp", bytes, sizeof bytes, why, sizeof why), 0);
    spool_path(path, sizeof path);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(truncate(path, st.st_size - 50), 0);
    assert_int_equal(spool_read(sp, KEY, &data, &len, NULL, why, sizeof why), IMGQ_EPARSE);
    assert_non_null(strstr(why, "truncated"));

    /* Another key's file under this key's name. */
    assert_int_equal(spool_write(sp, "other", "image/webp", bytes, 10, why, sizeof why), 0);
    char other[600];
    spool_path(other, sizeof other);
    assert_int_equal(rename(other, path), 0);
    assert_int_equal(spool_read(sp, KEY, &data, &len, NULL, why, sizeof why), IMGQ_EPARSE);
    assert_non_null(strstr(why, "holds other"));

    /* A file whose header is garbage is not listed. */
    f = fopen(path, "wb");
    fputs("garbage", f);
    fclose(f);
    char **keys;
    size_t n;
    assert_int_equal(spool_list(sp, &keys, &n), 0);
    assert_int_equal(n, 0);
    spool_list_free(keys, n);
    assert_int_equal(count(".spool"), 0);
    spool_free(sp);
}

static void test_crash_leftovers_removed(void **state)
{
    (void)state;
    char tmp[400];
    snprintf(tmp, sizeof tmp, "%s/.tmp.0123456789abcdef.42.0", dir);
    FILE *f = fopen(tmp, "wb");
    fputs("imgq-spool 1\nkey half", f);
    fclose(f);
    struct spool *sp;
    assert_int_equal(spool_open(&sp, dir, 1 << 20, 0, NULL, 0), 0);
    assert_int_equal(access(tmp, F_OK), -1);
    assert_int_equal(spool_disk_used(sp), 0);
    spool_free(sp);
}

static void test_open_errors(void **state)
{
    (void)state;
    char file[300], why[512];
    snprintf(file, sizeof file, "%s/plain", dir);
    FILE *f = fopen(file, "w");
    fclose(f);
    struct spool *sp = (struct spool *)1;
    assert_int_equal(spool_open(&sp, file, 1, 1, why, sizeof why), IMGQ_EIO);
    assert_null(sp);
    assert_non_null(strstr(why, "cannot create it"));
    unlink(file);
}

static void parse_str(const char *s, int want, const char *reason)
{
    struct spool_entry e;
    char why[300] = "";
    assert_int_equal(spool_parse((const uint8_t *)s, strlen(s), &e, why, sizeof why), want);
    if (reason)
        assert_non_null(strstr(why, reason));
    if (want == 0)
        spool_entry_clear(&e);
    else
        assert_null(e.key);
}

static void test_parse(void **state)
{
    (void)state;
    /* sha256("abc") */
    const char *abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    char ok[400];
    snprintf(ok, sizeof ok, "imgq-spool 1\nkey k\ntype t/x\nlength 3\nsha256 %s\n\nabc", abc);
    struct spool_entry e;
    assert_int_equal(spool_parse((const uint8_t *)ok, strlen(ok), &e, NULL, 0), 0);
    assert_string_equal(e.key, "k");
    assert_string_equal(e.type, "t/x");
    assert_int_equal(e.payload_len, 3);
    assert_memory_equal(e.payload, "abc", 3);
    spool_entry_clear(&e);

    parse_str("", IMGQ_EPARSE, "does not start");
    parse_str("imgq-spool 2\n", IMGQ_EPARSE, "does not start");
    parse_str("imgq-spool 1\nkey \n", IMGQ_EPARSE, "'key'");
    parse_str("imgq-spool 1\nkey k\ntype t\nlength -3\n", IMGQ_EPARSE, "not a number");
    parse_str("imgq-spool 1\nkey k\ntype t\nlength 99999999999999999999\n", IMGQ_EPARSE,
              "not a number");
    parse_str("imgq-spool 1\nkey k\ntype t\nlength 3\nsha256 ABC\n\nabc", IMGQ_EPARSE, "'sha256'");
    char s[400];
    snprintf(s, sizeof s, "imgq-spool 1\nkey k\ntype t\nlength 3\nsha256 %s\nabc", abc);
    parse_str(s, IMGQ_EPARSE, "empty line");
    snprintf(s, sizeof s, "imgq-spool 1\nkey k\ntype t\nlength 4\nsha256 %s\n\nabc", abc);
    parse_str(s, IMGQ_EPARSE, "shorter");
    snprintf(s, sizeof s, "imgq-spool 1\nkey k\ntype t\nlength 2\nsha256 %s\n\nabc", abc);
    parse_str(s, IMGQ_EPARSE, "longer");
    snprintf(s, sizeof s, "imgq-spool 1\nkey k\ntype t\nlength 3\nsha256 %s\n\nabd", abc);
    parse_str(s, IMGQ_EPARSE, "SHA-256");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_payload_and_nested_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_disk_cap, setup, teardown),
        cmocka_unit_test(test_memory_cap),
        cmocka_unit_test_setup_teardown(test_bad_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_leftovers_removed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_errors, setup, teardown),
        cmocka_unit_test(test_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
