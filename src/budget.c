/* budget.c - time zone transitions and calendar windows for spend caps (see budget.h). */
#include "imgq/budget.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "imgq/alloc.h"
#include "imgq/schedule.h"

int imgq_budget_name_check(const char *name)
{
    if (!name)
        return IMGQ_EINVAL;
    if (strcmp(name, "global") == 0)
        return 0;
    static const char *const kinds[] = {"team:", "batch:", "model:", "route:"};
    const char *rest = NULL;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (strncmp(name, kinds[i], strlen(kinds[i])) == 0)
            rest = name + strlen(kinds[i]);
    if (!rest || !*rest || strlen(rest) > 128)
        return IMGQ_EINVAL;
    for (const unsigned char *p = (const unsigned char *)rest; *p; p++)
        if (*p <= ' ' || *p == ',' || *p == '|' || *p == 0x7f)
            return IMGQ_EINVAL;
    return 0;
}

int imgq_budget_window_check(const char *window)
{
    if (!window)
        return IMGQ_EINVAL;
    return strcmp(window, "hour") == 0 || strcmp(window, "day") == 0 ||
                   strcmp(window, "month") == 0 || strcmp(window, "total") == 0
               ? 0
               : IMGQ_EINVAL;
}

/* TZ set for the duration of a conversion, and put back. */
struct tz_scope {
    char *saved;
    int had;
};

static void tz_enter(struct tz_scope *s, const char *tz)
{
    const char *cur = getenv("TZ");
    s->had = cur != NULL;
    s->saved = cur ? imgq_xstrdup(cur) : NULL;
    setenv("TZ", tz && *tz ? tz : "UTC", 1);
    tzset();
}

static void tz_leave(struct tz_scope *s)
{
    if (s->had)
        setenv("TZ", s->saved, 1);
    else
        unsetenv("TZ");
    tzset();
    free(s->saved);
}

static long offset_at(time_t t)
{
    struct tm tm;
    localtime_r(&t, &tm);
    return tm.tm_gmtoff;
}

int imgq_budget_transitions(const char *tz, int64_t from_ms, int64_t to_ms, char **out)
{
    if (!tz || imgq_tz_check(tz) != 0 || to_ms < from_ms)
        return IMGQ_EINVAL;
    struct tz_scope sc;
    tz_enter(&sc, tz);
    size_t cap = 256, len = 0;
    char *buf = imgq_xmalloc(cap);
    buf[0] = 0;
#define APPEND(ms, off)                                                                            \
    do {                                                                                           \
        char e[64];                                                                                \
        int n = snprintf(e, sizeof e, "%s%lld:%ld", len ? "," : "", (long long)(ms), (long)(off)); \
        if (len + (size_t)n + 1 > cap) {                                                           \
            cap = (len + (size_t)n + 1) * 2;                                                       \
            buf = imgq_xrealloc(buf, cap);                                                         \
        }                                                                                          \
        memcpy(buf + len, e, (size_t)n + 1);                                                       \
        len += (size_t)n;                                                                          \
    } while (0)
    time_t from = (time_t)(from_ms / 1000), to = (time_t)(to_ms / 1000);
    long prev = offset_at(from);
    APPEND(from_ms, prev);
    /* Zones change offset at most a few times a year, never twice within an hour: step by
     * hours and find each change to the second by bisection. */
    for (time_t t = from + 3600; t - 3600 < to; t += 3600) {
        time_t at = t > to ? to : t;
        long off = offset_at(at);
        if (off == prev)
            continue;
        time_t lo = at - 3600 > from ? at - 3600 : from, hi = at; /* off(lo)=prev, off(hi)=off */
        while (hi - lo > 1) {
            time_t mid = lo + (hi - lo) / 2;
            if (offset_at(mid) == prev)
                lo = mid;
            else
                hi = mid;
        }
        APPEND((int64_t)hi * 1000, off);
        prev = off;
    }
    APPEND(to_ms, prev);
#undef APPEND
    tz_leave(&sc);
    *out = buf;
    return 0;
}

int imgq_budget_window(const char *window, const char *tz, int64_t t_ms, char *id, size_t idlen,
                       int64_t *start_ms, int64_t *end_ms)
{
    if (imgq_budget_window_check(window) != 0 || (tz && *tz && imgq_tz_check(tz) != 0))
        return IMGQ_EINVAL;
    if (strcmp(window, "total") == 0) {
        snprintf(id, idlen, "total");
        *start_ms = 0;
        *end_ms = -1;
        return 0;
    }
    struct tz_scope sc;
    tz_enter(&sc, tz);
    time_t t = (time_t)(t_ms / 1000);
    if (t_ms < 0 && t_ms % 1000)
        t--;
    struct tm tm, s, e;
    localtime_r(&t, &tm);
    s = tm;
    s.tm_sec = 0;
    s.tm_min = 0;
    if (window[0] == 'h') {
        snprintf(id, idlen, "%04d-%02d-%02dT%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                 tm.tm_hour);
        /* An hour is an hour of UTC-offset time: start = t rounded down to the local hour. */
        int64_t local = (int64_t)t + tm.tm_gmtoff;
        int64_t ls = local - ((local % 3600) + 3600) % 3600;
        *start_ms = (ls - tm.tm_gmtoff) * 1000;
        *end_ms = *start_ms + 3600000;
        tz_leave(&sc);
        return 0;
    }
    s.tm_hour = 0;
    if (window[0] == 'd') {
        snprintf(id, idlen, "%04d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
        e = s;
        e.tm_mday++;
    } else {
        snprintf(id, idlen, "%04d-%02d", tm.tm_year + 1900, tm.tm_mon + 1);
        s.tm_mday = 1;
        e = s;
        e.tm_mon++;
    }
    s.tm_isdst = -1;
    e.tm_isdst = -1;
    *start_ms = (int64_t)mktime(&s) * 1000;
    *end_ms = (int64_t)mktime(&e) * 1000;
    tz_leave(&sc);
    return 0;
}

void imgq_budget_local_time(int64_t t_ms, const char *tz, char *buf, size_t len)
{
    struct tz_scope sc;
    tz_enter(&sc, tz);
    time_t t = (time_t)(t_ms / 1000);
    struct tm tm;
    localtime_r(&t, &tm);
    char base[40];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    long off = tm.tm_gmtoff;
    char sign = off < 0 ? '-' : '+';
    if (off < 0)
        off = -off;
    snprintf(buf, len, "%s%c%02ld:%02ld", base, sign, off / 3600, off / 60 % 60);
    tz_leave(&sc);
}

size_t imgq_budget_scopes(const char *team, const char *batch, const char *model, const char *route,
                          char *names[IMGQ_BUDGET_SCOPES])
{
    static const char *const kinds[] = {"team", "batch", "model", "route"};
    const char *values[] = {team, batch, model, route};
    size_t n = 0;
    names[n++] = imgq_xstrdup("global");
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (values[i] && *values[i])
            names[n++] = imgq_xasprintf("%s:%s", kinds[i], values[i]);
    return n;
}
