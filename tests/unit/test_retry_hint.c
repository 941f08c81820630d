/*
 * test_retry_hint.c - the one parser of retry hints (retry_hint.h): Retry-After as seconds and
 * as HTTP-dates (all three forms), huge values clamped to the maximum instead of being taken
 * for "no hint", negative and garbage values refused, retry-after-ms, durations with units
 * (Gemini's retryDelay, OpenAI's x-ratelimit-reset-*, Replicate's "~30s"), and the precedence
 * of the headers of a response.
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

#include "imgq/http.h"
#include "imgq/provider.h"
#include "imgq/retry_hint.h"

#define HOUR 3600000L
#define NOLEN ((size_t)-1)

static int64_t now_ms(void)
{
    struct tm tm = {.tm_year = 126, .tm_mon = 10, .tm_mday = 22, .tm_hour = 10};
    return (int64_t)timegm(&tm) * 1000; /* Sun, 22 Nov 2026 10:00:00 GMT */
}

static void test_seconds(void **state)
{
    (void)state;
    int64_t now = now_ms();
    assert_int_equal(imgq_retry_after_ms("120", now, HOUR), 120000);
    assert_int_equal(imgq_retry_after_ms("0", now, HOUR), 0);
    assert_int_equal(imgq_retry_after_ms("1", now, HOUR), 1000);
    assert_int_equal(imgq_retry_after_ms("1.5", now, HOUR), 1500);
    assert_int_equal(imgq_retry_after_ms(" 7 ", now, HOUR), 7000);
    assert_int_equal(imgq_retry_after_ms("3600", now, HOUR), HOUR);
    /* Over the maximum: the maximum. */
    assert_int_equal(imgq_retry_after_ms("3601", now, HOUR), HOUR);
    assert_int_equal(imgq_retry_after_ms("86400", now, HOUR), HOUR);
    assert_int_equal(imgq_retry_after_ms("86400", now, IMGQ_RETRY_HINT_CEILING_MS), 86400000);
    assert_int_equal(imgq_retry_after_ms("5", now, 2000), 2000);
    assert_int_equal(imgq_retry_after_ms("5", now, -1), 0);
}

/* Regression: "retry-after: 99999999999999999999" (beyond 64 bits) was taken for no hint at
 * all, so the job was retried every second, forever. */
static void test_huge(void **state)
{
    (void)state;
    int64_t now = now_ms();
    assert_int_equal(imgq_retry_after_ms("99999999999999999999", now, HOUR), HOUR);
    assert_int_equal(imgq_retry_after_ms("9223372036854775808", now, HOUR), HOUR);
    char many[400];
    memset(many, '9', sizeof many - 1);
    many[sizeof many - 1] = '\0';
    assert_int_equal(imgq_retry_after_ms(many, now, HOUR), HOUR);
    assert_int_equal(imgq_retry_hint_ms(IMGQ_HINT_MILLIS, many, NOLEN, now, HOUR), HOUR);
    assert_int_equal(
        imgq_retry_hint_ms(IMGQ_HINT_DURATION, "99999999999999999999h", NOLEN, now, HOUR), HOUR);
    /* A date far ahead: the maximum too. */
    assert_int_equal(imgq_retry_after_ms("Tue, 24 Nov 2026 10:00:00 GMT", now, HOUR), HOUR);
    assert_int_equal(imgq_retry_after_ms("Fri, 31 Dec 9999 23:59:59 GMT", now, HOUR), HOUR);
}

static void test_http_date(void **state)
{
    (void)state;
    int64_t now = now_ms();
    assert_int_equal(imgq_retry_after_ms("Sun, 22 Nov 2026 10:00:30 GMT", now, HOUR), 30000);
    assert_int_equal(imgq_retry_after_ms("Sun, 22 Nov 2026 10:30:00 GMT", now, HOUR), 1800000);
    assert_int_equal(imgq_retry_after_ms("Sun, 22 Nov 2026 11:00:00 GMT", now, HOUR), HOUR);
    /* Now or past: at once. */
    assert_int_equal(imgq_retry_after_ms("Sun, 22 Nov 2026 10:00:00 GMT", now, HOUR), 0);
    assert_int_equal(imgq_retry_after_ms("Sun, 22 Nov 2026 09:00:00 GMT", now, HOUR), 0);
    assert_int_equal(imgq_retry_after_ms("Sun, 06 Nov 1994 08:49:37 GMT", now, HOUR), 0);
    /* The obsolete forms a recipient must accept (RFC 9110 5.6.7). */
    assert_int_equal(imgq_retry_after_ms("Sunday, 22-Nov-26 10:01:00 GMT", now, HOUR), 60000);
    assert_int_equal(imgq_retry_after_ms("Sun Nov 22 10:02:00 2026", now, HOUR), 120000);
    /* A partial second of "now" does not matter. */
    assert_int_equal(imgq_retry_after_ms("Sun, 22 Nov 2026 10:00:30 GMT", now + 500, HOUR), 29500);
}

static void test_negative_and_garbage(void **state)
{
    (void)state;
    int64_t now = now_ms();
    static const char *const garbage[] = {NULL,
                                          "",
                                          "   ",
                                          "-1",
                                          "-0",
                                          "-99999999999999999999",
                                          "+5",
                                          "soon",
                                          "12abc",
                                          "1.",
                                          ".5",
                                          "1e3",
                                          "1e400",
                                          "0x10",
                                          "inf",
                                          "nan",
                                          "NaN",
                                          "-nan",
                                          "5 s",
                                          "Sun, 22 Nov 2026 10:00:30",
                                          "Sun, 22 Nov 2026 10:00:30 GMT junk",
                                          "22/11/2026",
                                          "Sun, 32 Nov 2026 10:00:30 GMT",
                                          "Sun, 22 Foo 2026 10:00:30 GMT"};
    for (size_t i = 0; i < sizeof garbage / sizeof garbage[0]; i++) {
        long v = imgq_retry_after_ms(garbage[i], now, HOUR);
        if (v != -1)
            fail_msg("retry-after \"%s\" = %ld, want -1", garbage[i] ? garbage[i] : "(null)", v);
        v = imgq_retry_hint_ms(IMGQ_HINT_MILLIS, garbage[i], NOLEN, now, HOUR);
        if (v != -1)
            fail_msg("retry-after-ms \"%s\" = %ld, want -1", garbage[i] ? garbage[i] : "(null)", v);
    }
}

static void test_millis(void **state)
{
    (void)state;
    assert_int_equal(imgq_retry_hint_ms(IMGQ_HINT_MILLIS, "1500", NOLEN, 0, HOUR), 1500);
    assert_int_equal(imgq_retry_hint_ms(IMGQ_HINT_MILLIS, "0", NOLEN, 0, HOUR), 0);
    assert_int_equal(imgq_retry_hint_ms(IMGQ_HINT_MILLIS, "3600001", NOLEN, 0, HOUR), HOUR);
    /* Only len bytes are read. */
    assert_int_equal(imgq_retry_hint_ms(IMGQ_HINT_MILLIS, "250xyz", 3, 0, HOUR), 250);
}

static void test_duration(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        long want;
    } cases[] = {
        {"47s", 47000},   {"0.5s", 500},    {"1.25s", 1250}, {"20ms", 20},  {"6m0s", 360000},
        {"1m30s", 90000}, {"1h", HOUR},     {"2h", HOUR},    {"1500us", 1}, {"1500\xc2\xb5s", 1},
        {"999ns", 0},     {"0s", 0},        {"47", -1},      {"s", -1},     {"-1s", -1},
        {"47x", -1},      {"47s junk", -1}, {"", -1},        {"1.s", -1},   {"nan s", -1}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        long v = imgq_retry_hint_ms(IMGQ_HINT_DURATION, cases[i].in, NOLEN, 0, HOUR);
        if (v != cases[i].want)
            fail_msg("duration \"%s\" = %ld, want %ld", cases[i].in, v, cases[i].want);
    }
}

/* A response's hint: retry-after-ms, else retry-after, else the reset of an exhausted limit. */
static void test_response(void **state)
{
    (void)state;
    static const struct {
        struct imgq_http_header h[6];
        size_t n;
        long want;
    } cases[] = {
        {{{"retry-after", "7"}, {"retry-after-ms", "1500"}}, 2, 1500},
        {{{"retry-after-ms", "soon"}, {"retry-after", "2"}}, 2, 2000},
        {{{"Retry-After", "99999999999999999999"}}, 1, HOUR},
        {{{"x-ratelimit-remaining-requests", "0"},
          {"x-ratelimit-reset-requests", "1s"},
          {"x-ratelimit-remaining-tokens", "0"},
          {"x-ratelimit-reset-tokens", "6m0s"}},
         4,
         360000},
        /* Only the limit that ran out says when to come back. */
        {{{"x-ratelimit-remaining-requests", "0"},
          {"x-ratelimit-reset-requests", "20ms"},
          {"x-ratelimit-remaining-tokens", "1000"},
          {"x-ratelimit-reset-tokens", "6m0s"}},
         4,
         20},
        {{{"x-ratelimit-remaining-requests", "3"}, {"x-ratelimit-reset-requests", "1s"}}, 2, -1},
        {{{"retry-after", "-5"}}, 1, -1},
        {{{"x-request-id", "r"}}, 1, -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        imgq_http_response res;
        memset(&res, 0, sizeof res);
        res.status = 429;
        res.headers = cases[i].h;
        res.nheaders = cases[i].n;
        long v = imgq_http_retry_hint_ms(&res, now_ms(), HOUR);
        if (v != cases[i].want)
            fail_msg("case %zu: %ld, want %ld", i, v, cases[i].want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seconds),   cmocka_unit_test(test_huge),
        cmocka_unit_test(test_http_date), cmocka_unit_test(test_negative_and_garbage),
        cmocka_unit_test(test_millis),    cmocka_unit_test(test_duration),
        cmocka_unit_test(test_response),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
