/*
 * log.h - one-line log records on stderr: "2026-11-22T04:38:03.123Z LEVEL component: text".
 * The level threshold comes from imgq_log_set_level or IMGQ_LOG_LEVEL (error, warn, info,
 * debug).  Thread-safe (one fprintf per record); never blocks on anything but stderr.
 */
#ifndef IMGQ_LOG_H
#define IMGQ_LOG_H

enum imgq_log_level { IMGQ_LOG_ERROR, IMGQ_LOG_WARN, IMGQ_LOG_INFO, IMGQ_LOG_DEBUG };

void imgq_log_set_level(enum imgq_log_level level);
/* Level from its name; -1 if unknown. */
int imgq_log_level_parse(const char *name);
int imgq_log_enabled(enum imgq_log_level level);
void imgq_log(enum imgq_log_level level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
