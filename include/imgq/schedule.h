/*
 * schedule.h - times and dispatch windows for overnight batches.
 *
 * A batch can wait for a start time (--not-before), run only inside a daily window in a time
 * zone (--window 01:00-06:00 --tz Europe/Berlin), and end what has not started by a deadline
 * (--deadline).  The queue's scripts only compare milliseconds: the daily window is expanded
 * here, with the time zone's rules (DST included), into a plan of absolute intervals.
 *
 * Not thread-safe: time zone conversions set TZ for the duration of a call (the CLI is
 * single-threaded).  Nothing here blocks.
 */
#ifndef IMGQ_SCHEDULE_H
#define IMGQ_SCHEDULE_H

#include <stddef.h>
#include <stdint.h>

#include "imgq/error.h"

/* Days of windows planned ahead at submit. */
#define IMGQ_WINDOW_PLAN_DAYS 90

/* IMGQ_EINVAL unless tz names a zone of the system's time zone database (or is "UTC"). */
int imgq_tz_check(const char *tz) IMGQ_MUST_CHECK;

/*
 * A point in time, in ms since the epoch: "+90s", "+30m", "+2h", "+1d" (after now_ms);
 * "2026-11-23T01:00:00Z" or with an offset ("+01:00"); or a local time "2026-11-23T01:00[:SS]"
 * (also with a space) in tz (NULL: the machine's zone).  IMGQ_EINVAL otherwise, with why.
 */
int imgq_time_parse(const char *s, const char *tz, int64_t now_ms, int64_t *out_ms, char *why,
                    size_t whylen) IMGQ_MUST_CHECK;

/*
 * Expand a daily window "HH:MM-HH:MM" (the end may be past midnight: "22:00-02:00") in tz
 * (NULL = UTC) into "open,close;open,close;..." ms intervals covering 'days' days from
 * from_ms, skipping intervals that already ended.  *out is a new string.
 */
int imgq_window_plan(const char *window, const char *tz, int64_t from_ms, int days, char **out,
                     char *why, size_t whylen) IMGQ_MUST_CHECK;

#endif
