/* schedule.c - parsing times and expanding daily windows with the system's time zone rules. */
#include "imgq/schedule.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "imgq/alloc.h"

int imgq_tz_check(const char *tz)
{
    if (!tz || !*tz || strstr(tz, "..") || tz[0] == '/')
        return IMGQ_EINVAL;
    if (strcmp(tz, "UTC") == 0)
        return 0;
    const char *dir = getenv("TZDIR");
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir && *dir ? dir : "/usr/share/zoneinfo", tz);
    return access(path, R_OK) == 0 ? 0 : IMGQ_EINVAL;
}

/* Run mktime for a broken-down local time in tz (NULL = the machine's zone). */
static time_t local_to_utc(struct tm *tm, const char *tz)
{
    char *saved = NULL;
    if (tz) {
        const char *cur = getenv("TZ");
        saved = cur ? imgq_xstrdup(cur) : NULL;
        setenv("TZ", tz, 1);
        tzset();
    }
    tm->tm_isdst = -1; /* let the zone's rules decide */
    time_t t = mktime(tm);
    if (tz) {
        if (saved)
            setenv("TZ", saved, 1);
        else
            unsetenv("TZ");
        tzset();
        free(saved);
    }
    return t;
}

static void to_local(time_t t, const char *tz, struct tm *out)
{
    char *saved = NULL;
    if (tz) {
        const char *cur = getenv("TZ");
        saved = cur ? imgq_xstrdup(cur) : NULL;
        setenv("TZ", tz, 1);
        tzset();
    }
    localtime_r(&t, out);
    if (tz) {
        if (saved)
            setenv("TZ", saved, 1);
        else
            unsetenv("TZ");
        tzset();
        free(saved);
    }
}

int imgq_time_parse(const char *s, const char *tz, int64_t now_ms, int64_t *out_ms, char *why,
                    size_t whylen)
{
    if (!s || !*s) {
        snprintf(why, whylen, "empty time");
        return IMGQ_EINVAL;
    }
    if (tz && imgq_tz_check(tz) != 0) {
        snprintf(why, whylen, "unknown time zone '%s'", tz);
        return IMGQ_EINVAL;
    }
    if (s[0] == '+') {
        char *end;
        long long v = strtoll(s + 1, &end, 10);
        long long unit = *end == 's'   ? 1000LL
                         : *end == 'm' ? 60000LL
                         : *end == 'h' ? 3600000LL
                         : *end == 'd' ? 86400000LL
                                       : 0;
        if (end == s + 1 || v < 0 || v > 10000000 || !unit || end[1]) {
            snprintf(why, whylen, "'%s': a relative time is +N followed by s, m, h or d", s);
            return IMGQ_EINVAL;
        }
        *out_ms = now_ms + v * unit;
        return 0;
    }
    struct tm tm = {0};
    const char *p = strptime(s, "%Y-%m-%dT%H:%M", &tm);
    if (!p)
        p = strptime(s, "%Y-%m-%d %H:%M", &tm);
    if (!p) {
        snprintf(why, whylen,
                 "'%s': expected +2h, 2026-11-23T01:00:00Z, 2026-11-23T01:00:00+01:00 or a "
                 "local 2026-11-23T01:00",
                 s);
        return IMGQ_EINVAL;
    }
    if (*p == ':') {
        const char *q = strptime(p + 1, "%S", &tm);
        if (!q)
            goto bad;
        p = q;
    }
    time_t t;
    if (*p == 'Z' && !p[1]) {
        t = timegm(&tm);
    } else if ((*p == '+' || *p == '-') && isdigit((unsigned char)p[1])) {
        int hh = 0, mm = 0, n = 0;
        if (sscanf(p + 1, "%2d:%2d%n", &hh, &mm, &n) != 2 || p[1 + n] || hh > 23 || mm > 59)
            goto bad;
        t = timegm(&tm) - (*p == '+' ? 1 : -1) * (hh * 3600 + mm * 60);
    } else if (!*p) {
        t = local_to_utc(&tm, tz);
    } else {
        goto bad;
    }
    *out_ms = (int64_t)t * 1000;
    return 0;
bad:
    snprintf(why, whylen, "'%s': trailing text or a bad zone offset", s);
    return IMGQ_EINVAL;
}

static int parse_hhmm(const char *s, int *minutes)
{
    int h, m, n = 0;
    if (sscanf(s, "%2d:%2d%n", &h, &m, &n) != 2 || n != 5 || h < 0 || h > 24 || m < 0 || m > 59 ||
        (h == 24 && m != 0))
        return -1;
    *minutes = h * 60 + m;
    return 0;
}

int imgq_window_plan(const char *window, const char *tz, int64_t from_ms, int days, char **out,
                     char *why, size_t whylen)
{
    int open_m, close_m;
    if (!window || strlen(window) != 11 || window[5] != '-' || parse_hhmm(window, &open_m) ||
        parse_hhmm(window + 6, &close_m) || open_m == close_m) {
        snprintf(why, whylen, "window '%s': expected HH:MM-HH:MM with two different times",
                 window ? window : "");
        return IMGQ_EINVAL;
    }
    const char *zone = tz ? tz : "UTC";
    if (imgq_tz_check(zone) != 0) {
        snprintf(why, whylen, "unknown time zone '%s'", zone);
        return IMGQ_EINVAL;
    }
    size_t cap = (size_t)days * 48 + 64, len = 0;
    char *plan = imgq_xmalloc(cap);
    plan[0] = '\0';
    /* Start a day early: a window that began yesterday may still be open. */
    struct tm day;
    to_local((time_t)(from_ms / 1000) - 86400, zone, &day);
    for (int d = 0; d <= days + 1; d++) {
        struct tm o = {0}, c = {0};
        o.tm_year = c.tm_year = day.tm_year;
        o.tm_mon = c.tm_mon = day.tm_mon;
        o.tm_mday = day.tm_mday + d;
        c.tm_mday = day.tm_mday + d + (close_m <= open_m ? 1 : 0);
        o.tm_hour = open_m / 60;
        o.tm_min = open_m % 60;
        c.tm_hour = close_m / 60;
        c.tm_min = close_m % 60;
        int64_t os = (int64_t)local_to_utc(&o, zone) * 1000;
        int64_t cs = (int64_t)local_to_utc(&c, zone) * 1000;
        if (cs <= from_ms || cs <= os)
            continue;
        len += (size_t)snprintf(plan + len, cap - len, "%s%lld,%lld", len ? ";" : "", (long long)os,
                                (long long)cs);
        if (len + 64 > cap)
            break;
    }
    *out = plan;
    return 0;
}
