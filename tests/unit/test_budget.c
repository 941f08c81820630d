/*
 * test_budget.c - the C side of budgets: names, windows, and the time zone transitions that
 * `imgq budget set` hands to the script (Europe/Paris across DST, UTC, zones with 30-minute
 * offsets, an unknown zone).
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

#include "imgq/budget.h"

/* ms since the epoch of a UTC date and time. */
static int64_t utc_ms(int y, int mo, int d, int h, int mi)
{
    struct tm tm = {0};
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    return (int64_t)timegm(&tm) * 1000;
}

static void expect_transitions(const char *tz, int64_t from, int64_t to, const char *want)
{
    char *got = NULL;
    assert_int_equal(imgq_budget_transitions(tz, from, to, &got), 0);
    assert_string_equal(got, want);
    free(got);
}

static void test_names(void **state)
{
    (void)state;
    assert_int_equal(imgq_budget_name_check("global"), 0);
    assert_int_equal(imgq_budget_name_check("team:shop"), 0);
    assert_int_equal(imgq_budget_name_check("batch:b-1.x"), 0);
    assert_int_equal(imgq_budget_name_check("model:gpt-image-1"), 0);
    assert_int_equal(imgq_budget_name_check("route:openrouter"), 0);
    assert_int_equal(imgq_budget_name_check("team:"), IMGQ_EINVAL);
    assert_int_equal(imgq_budget_name_check("team:a b"), IMGQ_EINVAL);
    assert_int_equal(imgq_budget_name_check("team:a,b"), IMGQ_EINVAL);
    assert_int_equal(imgq_budget_name_check("team:a|b"), IMGQ_EINVAL);
    assert_int_equal(imgq_budget_name_check("user:x"), IMGQ_EINVAL);
    assert_int_equal(imgq_budget_name_check("globals"), IMGQ_EINVAL);
    assert_int_equal(imgq_budget_name_check(NULL), IMGQ_EINVAL);
    assert_int_equal(imgq_budget_window_check("day"), 0);
    assert_int_equal(imgq_budget_window_check("total"), 0);
    assert_int_equal(imgq_budget_window_check("week"), IMGQ_EINVAL);
}

static void test_transitions_paris(void **state)
{
    (void)state;
    int64_t from = utc_ms(2026, 1, 1, 0, 0), to = utc_ms(2027, 1, 1, 0, 0);
    char want[256];
    /* CET (+1) until 2026-03-29 01:00Z, CEST (+2) until 2026-10-25 01:00Z, then CET. */
    snprintf(want, sizeof want, "%lld:3600,%lld:7200,%lld:3600,%lld:3600", (long long)from,
             (long long)utc_ms(2026, 3, 29, 1, 0), (long long)utc_ms(2026, 10, 25, 1, 0),
             (long long)to);
    expect_transitions("Europe/Paris", from, to, want);
    /* A range inside summer time has no change, only its two ends. */
    from = utc_ms(2026, 6, 1, 12, 34);
    to = utc_ms(2026, 8, 1, 0, 0);
    snprintf(want, sizeof want, "%lld:7200,%lld:7200", (long long)from, (long long)to);
    expect_transitions("Europe/Paris", from, to, want);
}

static void test_transitions_utc_and_half_hours(void **state)
{
    (void)state;
    int64_t from = utc_ms(2026, 1, 1, 0, 0), to = utc_ms(2027, 1, 1, 0, 0);
    char want[256];
    snprintf(want, sizeof want, "%lld:0,%lld:0", (long long)from, (long long)to);
    expect_transitions("UTC", from, to, want);
    /* India: +05:30 all year. */
    snprintf(want, sizeof want, "%lld:19800,%lld:19800", (long long)from, (long long)to);
    expect_transitions("Asia/Kolkata", from, to, want);
    /* Adelaide: +10:30 in the southern summer, +09:30 from 2026-04-05 03:00 local
     * (2026-04-04 16:30Z) until 2026-10-04 02:00 local (2026-10-03 16:30Z). */
    snprintf(want, sizeof want, "%lld:37800,%lld:34200,%lld:37800,%lld:37800", (long long)from,
             (long long)utc_ms(2026, 4, 4, 16, 30), (long long)utc_ms(2026, 10, 3, 16, 30),
             (long long)to);
    expect_transitions("Australia/Adelaide", from, to, want);
    char *out = NULL;
    assert_int_equal(imgq_budget_transitions("Mars/Olympus", from, to, &out), IMGQ_EINVAL);
    assert_null(out);
    assert_int_equal(imgq_budget_transitions("../etc/passwd", from, to, &out), IMGQ_EINVAL);
}

static void test_windows(void **state)
{
    (void)state;
    char id[32];
    int64_t s, e;
    /* 23:30Z on Nov 22 is 00:30 on Nov 23 in Paris. */
    assert_int_equal(imgq_budget_window("day", "Europe/Paris", utc_ms(2026, 11, 22, 23, 30), id,
                                        sizeof id, &s, &e),
                     0);
    assert_string_equal(id, "2026-11-23");
    assert_true(s == utc_ms(2026, 11, 22, 23, 0));
    assert_true(e == utc_ms(2026, 11, 23, 23, 0));
    /* March 2027 in Paris starts in winter time and ends in summer time (23 h shorter day). */
    assert_int_equal(imgq_budget_window("month", "Europe/Paris", utc_ms(2027, 3, 31, 21, 59), id,
                                        sizeof id, &s, &e),
                     0);
    assert_string_equal(id, "2027-03");
    assert_true(s == utc_ms(2027, 2, 28, 23, 0));
    assert_true(e == utc_ms(2027, 3, 31, 22, 0));
    /* Hours in India start at :30 UTC. */
    assert_int_equal(imgq_budget_window("hour", "Asia/Kolkata", utc_ms(2026, 11, 22, 10, 15), id,
                                        sizeof id, &s, &e),
                     0);
    assert_string_equal(id, "2026-11-22T15");
    assert_true(s == utc_ms(2026, 11, 22, 9, 30));
    assert_true(e == utc_ms(2026, 11, 22, 10, 30));
    /* December rolls into the next year. */
    assert_int_equal(
        imgq_budget_window("month", "UTC", utc_ms(2026, 12, 31, 23, 59), id, sizeof id, &s, &e), 0);
    assert_string_equal(id, "2026-12");
    assert_true(e == utc_ms(2027, 1, 1, 0, 0));
    assert_int_equal(imgq_budget_window("total", NULL, 0, id, sizeof id, &s, &e), 0);
    assert_string_equal(id, "total");
    assert_true(e == -1);
    assert_int_equal(imgq_budget_window("week", "UTC", 0, id, sizeof id, &s, &e), IMGQ_EINVAL);
    char t[64];
    imgq_budget_local_time(utc_ms(2026, 7, 1, 12, 0), "Europe/Paris", t, sizeof t);
    assert_string_equal(t, "2026-07-01T14:00:00+02:00");
    imgq_budget_local_time(utc_ms(2026, 7, 1, 12, 0), "Asia/Kolkata", t, sizeof t);
    assert_string_equal(t, "2026-07-01T17:30:00+05:30");
}

/* The budgets a call is reserved against, as budget.lua's reserve names them. */
static void test_scopes(void **state)
{
    (void)state;
    char *names[IMGQ_BUDGET_SCOPES];
    size_t n = imgq_budget_scopes("red", "b1", "gpt-image-2", "list", names);
    assert_int_equal(n, 5);
    const char *want[] = {"global", "team:red", "batch:b1", "model:gpt-image-2", "route:list"};
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(names[i], want[i]);
        assert_int_equal(imgq_budget_name_check(names[i]), 0);
        free(names[i]);
    }
    n = imgq_budget_scopes("", NULL, NULL, "list", names);
    assert_int_equal(n, 2);
    assert_string_equal(names[0], "global");
    assert_string_equal(names[1], "route:list");
    free(names[0]);
    free(names[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_transitions_paris),
        cmocka_unit_test(test_transitions_utc_and_half_hours),
        cmocka_unit_test(test_windows),
        cmocka_unit_test(test_scopes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
