/*
 * retry_hint.h - the one parser of "try again later" hints, for providers and webhook
 * receivers alike.
 *
 * A hint comes in one of three forms:
 *   IMGQ_HINT_RETRY_AFTER  the Retry-After header (RFC 9110 10.2.3): delay-seconds, or an
 *                          HTTP-date (IMF-fixdate, and the obsolete RFC 850 and asctime forms)
 *                          relative to now.  A fraction of a second ("1.5") is accepted.
 *   IMGQ_HINT_MILLIS       a count of milliseconds (OpenAI's retry-after-ms).
 *   IMGQ_HINT_DURATION     a duration with units, one or more of NUMBER UNIT, units h, m, s,
 *                          ms, us (or µs), ns: Gemini's RetryInfo.retryDelay ("47s", "0.5s"),
 *                          OpenAI's x-ratelimit-reset-* ("6m0s", "20ms"), Replicate's "~30s".
 *
 * Every hint is clamped to [0, max_ms]: a value too large for any integer
 * (retry-after: 99999999999999999999) is the maximum, not "no hint"; a date in the past is 0.
 * A hint that cannot be read (empty, negative, a sign, an exponent, trailing text, an
 * impossible date) is -1: no hint.  max_ms is the caller's documented maximum
 * (IMGQ_RETRY_HINT_MAX_MS, 1 hour, unless configured; the adapters keep hints up to
 * IMGQ_RETRY_HINT_CEILING_MS and the worker clamps them to its --max-retry-after-s).
 */
#ifndef IMGQ_RETRY_HINT_H
#define IMGQ_RETRY_HINT_H

#include <stddef.h>
#include <stdint.h>

#include "imgq/http.h"

#define IMGQ_RETRY_HINT_MAX_MS 3600000L      /* the default maximum of a hint: 1 hour */
#define IMGQ_RETRY_HINT_CEILING_MS 86400000L /* the largest maximum one may configure: 24 h */

enum imgq_retry_hint_form { IMGQ_HINT_RETRY_AFTER, IMGQ_HINT_MILLIS, IMGQ_HINT_DURATION };

/*
 * The hint 'value' (len bytes; NUL-terminated text when len is (size_t)-1) in its form, in ms
 * from now_ms, clamped to [0, max_ms] (max_ms < 0 counts as 0); -1 when absent or unreadable.
 */
long imgq_retry_hint_ms(enum imgq_retry_hint_form form, const char *value, size_t len,
                        int64_t now_ms, long max_ms);

/* A Retry-After header value: imgq_retry_hint_ms(IMGQ_HINT_RETRY_AFTER, value, -1, ...). */
long imgq_retry_after_ms(const char *value, int64_t now_ms, long max_ms);

/*
 * The hint of an HTTP response, by precedence: retry-after-ms, then retry-after, then the
 * longest x-ratelimit-reset-{requests,tokens} whose x-ratelimit-remaining-* is 0 (the limit
 * the request ran into).  Unreadable headers are skipped.  -1 when there is none.
 */
long imgq_http_retry_hint_ms(const imgq_http_response *res, int64_t now_ms, long max_ms);

/* The wall clock in ms since the epoch: the "now" HTTP-dates are relative to. */
int64_t imgq_retry_hint_now_ms(void);

#endif
