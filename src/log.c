/* log.c - timestamped log lines on stderr. */
#include "imgq/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int threshold = -1;

int imgq_log_level_parse(const char *name)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; name && i < 4; i++)
        if (strcmp(name, names[i]) == 0)
            return i;
    return -1;
}

void imgq_log_set_level(enum imgq_log_level level)
{
    threshold = (int)level;
}

int imgq_log_enabled(enum imgq_log_level level)
{
    if (threshold < 0) {
        int l = imgq_log_level_parse(getenv("IMGQ_LOG_LEVEL"));
        threshold = l >= 0 ? l : IMGQ_LOG_INFO;
    }
    return (int)level <= threshold;
}

void imgq_log(enum imgq_log_level level, const char *component, const char *fmt, ...)
{
    static const char *tags[] = {"ERROR", "WARN", "INFO", "DEBUG"};
    if (!imgq_log_enabled(level))
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char stamp[32];
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(stderr, "%s.%03ldZ %-5s %s: %s\n", stamp, ts.tv_nsec / 1000000, tags[level], component,
            msg);
}
