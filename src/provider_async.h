/*
 * provider_async.h - what the asynchronous adapters (DashScope, Replicate, fal, BFL) share:
 * the poll handle, result URLs, the keyed GET of a poll handle, JSON error bodies.  Internal to
 * the library (src/), implemented in provider_fetch.c.
 */
#ifndef IMGQ_PROVIDER_ASYNC_H
#define IMGQ_PROVIDER_ASYNC_H

#include <stdbool.h>

#include "imgq/provider.h"

/*
 * Start a result: as imgq__provider_transport (true: the transfer failed, the result is final),
 * plus poll_after_ms -1.
 */
bool imgq__async_start(const imgq_http_response *res, struct imgq_provider_result *out);

/*
 * Mark out pending on 'handle' with the provider's status word (either may be NULL).  A NULL
 * or empty handle leaves poll "" ("poll the same handle again").  A handle that does not fit
 * (or, when must_be_url, is not an absolute http(s) URL) makes the result a bad response
 * instead; returns whether out is pending.
 */
bool imgq__async_pending(struct imgq_provider_result *out, const char *handle, bool must_be_url,
                         const char *status);

/* Whether s is an absolute http:// or https:// URL by libcurl's parser. */
bool imgq__async_is_http_url(const char *s);

/* Append a result URL (copied); false, with nothing added, if it is not an http(s) URL. */
bool imgq__async_add_url(struct imgq_provider_result *out, const char *url);

/*
 * Finish a success billed per image: 'images' are the images the answer returned (billed),
 * unless the provider's usage (borrowed, may be NULL; called 'name' in messages) states the
 * count in member 'count' (NULL: it never does).  A stated count must be a count, and not 0;
 * else the usage is unusable (usage_unusable, billed at the ceiling: imgq__usage_begin).  An
 * answer without usage, or whose usage states no count, is billed for the images returned.
 */
void imgq__async_done(struct imgq_provider_result *out, int64_t images, json_t *usage,
                      const char *name, const char *count);

/* Make out final with class c and a message (printf-style). */
void imgq__async_fail(struct imgq_provider_result *out, enum imgq_error_class c, const char *fmt,
                      ...) __attribute__((format(printf, 3, 4)));

/* The Retry-After hint of a response into out->retry_after_ms (unchanged when absent). */
void imgq__async_retry_after(const imgq_http_response *res, struct imgq_provider_result *out);

/*
 * A GET of 'url' (taken: freed here) with the endpoint's timeouts and, only if with_key, the
 * key in key_header (prefixed with key_prefix).  Never returns NULL.
 */
imgq_http_request *imgq__async_get(const struct imgq_provider_endpoint *ep, char *url,
                                   bool with_key, const char *key_header, const char *key_prefix);

/* s percent-encoded for a URL path or query value, keeping '/' if keep_slash (new string). */
char *imgq__async_escape(const char *s, bool keep_slash);

/* Copy a JSON string member into buf (truncated), "" when absent. */
void imgq__async_copy(char *buf, size_t len, json_t *obj, const char *key);

#endif
