/* retry_hint.c - the parser of "try again later" hints (see retry_hint.h). */
#include "imgq/retry_hint.h"

#include <stdbool.h>
#include <string.h>
#include <time.h>

/* The clamp: a hint in ms (any non-negative double, +inf included) into [0, max_ms]. */
static long clamp(double ms, long max_ms)
{
    if (max_ms < 0)
        max_ms = 0;
    if (!(ms > 0)) /* (0, or a date in the past) */
        return 0;
    if (ms >= (double)max_ms)
        return max_ms;
    return (long)ms;
}

/* DIGITS[.DIGITS] at *p (before end), as a double (+inf past its range: it saturates, and is
 * clamped by the caller).  false if there is no digit before an optional fraction. */
static bool number(const char **p, const char *end, double *out)
{
    const char *s = *p;
    double v = 0;
    bool digits = false;
    while (s < end && *s >= '0' && *s <= '9') {
        v = v * 10 + (*s++ - '0');
        digits = true;
    }
    if (s < end && *s == '.') {
        const char *f = ++s;
        double scale = 0.1;
        while (s < end && *s >= '0' && *s <= '9') {
            v += (*s++ - '0') * scale;
            scale /= 10;
        }
        if (s == f)
            return false; /* "1." */
    }
    if (!digits)
        return false;
    *p = s;
    *out = v;
    return true;
}

/* An HTTP-date (RFC 9110 5.6.7: IMF-fixdate, RFC 850, asctime) as seconds since the epoch. */
static bool http_date(const char *s, const char *end, time_t *out)
{
    static const char *const formats[] = {"%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT",
                                          "%a %b %e %H:%M:%S %Y"};
    char buf[80];
    size_t n = (size_t)(end - s);
    if (n == 0 || n >= sizeof buf)
        return false;
    memcpy(buf, s, n);
    buf[n] = '\0';
    for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++) {
        struct tm tm;
        memset(&tm, 0, sizeof tm);
        const char *rest = strptime(buf, formats[i], &tm);
        if (rest && !*rest) {
            *out = timegm(&tm);
            return true;
        }
    }
    return false;
}

/* A duration with units: one or more NUMBER UNIT, in ms. */
static bool duration(const char *s, const char *end, double *ms)
{
    static const struct {
        const char *unit;
        double ms;
    } units[] = {{"ns", 1e-6}, {"us", 1e-3}, {"\xc2\xb5s", 1e-3}, {"ms", 1},
                 {"s", 1000},  {"m", 60000}, {"h", 3600000}};
    double total = 0;
    bool any = false;
    while (s < end) {
        double v;
        if (!number(&s, end, &v))
            return false;
        size_t best = 0;
        double per = 0;
        for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
            size_t ul = strlen(units[i].unit);
            /* the longest unit that matches ("ms" before "m") */
            if (ul > best && (size_t)(end - s) >= ul && memcmp(s, units[i].unit, ul) == 0) {
                best = ul;
                per = units[i].ms;
            }
        }
        if (!best)
            return false;
        s += best;
        total += v * per;
        any = true;
    }
    *ms = total;
    return any;
}

long imgq_retry_hint_ms(enum imgq_retry_hint_form form, const char *value, size_t len,
                        int64_t now_ms, long max_ms)
{
    if (!value)
        return -1;
    const char *s = value;
    const char *end = s + (len == (size_t)-1 ? strlen(value) : len);
    while (s < end && (*s == ' ' || *s == '\t'))
        s++;
    while (end > s && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    if (s == end)
        return -1;
    double v;
    const char *p = s;
    switch (form) {
    case IMGQ_HINT_RETRY_AFTER:
        if (number(&p, end, &v) && p == end)
            return clamp(v * 1000, max_ms);
        time_t at;
        if (*s < '0' || *s > '9') {
            if (http_date(s, end, &at))
                return clamp(((double)at * 1000 - (double)now_ms), max_ms);
        }
        return -1;
    case IMGQ_HINT_MILLIS:
        if (number(&p, end, &v) && p == end)
            return clamp(v, max_ms);
        return -1;
    case IMGQ_HINT_DURATION:
        if (duration(s, end, &v))
            return clamp(v, max_ms);
        return -1;
    }
    return -1;
}

int64_t imgq_retry_hint_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

long imgq_retry_after_ms(const char *value, int64_t now_ms, long max_ms)
{
    return imgq_retry_hint_ms(IMGQ_HINT_RETRY_AFTER, value, (size_t)-1, now_ms, max_ms);
}

long imgq_http_retry_hint_ms(const imgq_http_response *res, int64_t now_ms, long max_ms)
{
    long v = imgq_retry_hint_ms(IMGQ_HINT_MILLIS, imgq_http_response_header(res, "retry-after-ms"),
                                (size_t)-1, now_ms, max_ms);
    if (v < 0)
        v = imgq_retry_after_ms(imgq_http_response_header(res, "retry-after"), now_ms, max_ms);
    if (v >= 0)
        return v;
    static const char *const which[][2] = {
        {"x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"},
        {"x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"}};
    for (size_t i = 0; i < 2; i++) {
        const char *left = imgq_http_response_header(res, which[i][0]);
        if (!left || strcmp(left, "0") != 0)
            continue;
        long r = imgq_retry_hint_ms(IMGQ_HINT_DURATION, imgq_http_response_header(res, which[i][1]),
                                    (size_t)-1, now_ms, max_ms);
        if (r > v)
            v = r;
    }
    return v;
}
