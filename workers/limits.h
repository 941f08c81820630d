/*
 * limits.h - the worker's side of the provider accounts' rate limits: images per window, tokens
 * per window and concurrent requests, shared by every worker on every host.  Redis holds the
 * state and decides atomically (src/lua/rate.lua, IMGQ_SCRIPT_RATE); this module holds the
 * per-provider limits table, parses the ways an operator states limits, and queues the calls
 * that wait for room.
 *
 * Configuration.  A limit spec (the text after PROVIDER=) is a comma-separated list of
 *   PRESET            a catalog rate_limit_presets name (images and tokens per minute)
 *   N                 images per window (the original form: openai=20)
 *   images=N, tokens=N, concurrent=N
 * later items overriding earlier ones: "openai-tier-2,concurrent=8".  The window is 60 s
 * (presets are per minute); --rate-window-ms scales it for tests and rehearsals.
 * Sources, each overriding the previous per provider: the config file's
 *   "rate_limits": {"openai": "openai-tier-2", "google": "images=10,concurrent=4"}
 * then IMGQ_RATE_LIMITS="openai=openai-tier-2;google=images=10,concurrent=4", then the
 * repeatable flag --rate-limit PROVIDER=SPEC.
 *
 * Calls.  limits_acquire() queues a call (FIFO per provider, so a large call is not starved
 * by small ones) and answers through its callback, never synchronously: LIMITS_GO once room
 * was taken under every limit at once, LIMITS_TOO_MANY_* if the call alone exceeds a limit
 * (it never fits; nothing was taken), LIMITS_CANCELLED if the caller no longer wants it (its
 * 'wanted' predicate said so; checked at least once a second) or the worker is closing.
 * Only the head of a provider's queue asks Redis, then again when the script says room opens,
 * at least every second (every 100 ms under a concurrency limit, whose slots other workers
 * free at any time), and at once when this worker frees a slot.
 *
 * A LIMITS_GO holds a concurrency slot (when the provider has a concurrency limit) until
 * limits_release().  Every path that ends a sent call must release; a call that was never
 * sent releases with sent=false, which also gives its images and tokens back.  A slot whose
 * release never arrives (the worker was killed, or Redis was unreachable when the call ended)
 * expires after the slot ttl: the provider timeout plus as much again, at most 10 s more.
 *
 * Async (submit-then-poll) providers: only the submit takes room (images, tokens and a slot
 * until its answer); polls take none: a concurrency limit counts requests in flight, not tasks
 * running at the provider.
 */
#ifndef IMGQ_WORKER_LIMITS_H
#define IMGQ_WORKER_LIMITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "imgq/catalog.h"

#define LIMITS_MAX 8 /* providers with limits per worker */

/* One provider account's limits; 0 = not limited. */
struct limits_spec {
    char provider[32];
    int images;     /* images per window */
    int64_t tokens; /* tokens per window (estimated before the call) */
    int concurrent; /* requests in flight */
};

/*
 * Parse "PROVIDER=SPEC" (spec_only false) or a bare SPEC for 'provider' (spec_only true, the
 * config file's form).  Preset names resolve through the catalog's rate_limit_presets (images,
 * tokens and concurrent requests per minute).  On error returns -1 with
 * "ORIGIN: 'ARG': reason" in err, e.g. "--rate-limit: 'openai=images=x': images must be a
 * positive integer".
 */
int limits_parse(const char *origin, const char *arg, const char *provider, const imgq_catalog *cat,
                 struct limits_spec *out, char *err, size_t errlen);

/* Add or replace (same provider) a spec in a table of LIMITS_MAX; -1 when full. */
int limits_table_set(struct limits_spec *tab, int *n, const struct limits_spec *s);

/* IMGQ_RATE_LIMITS form: "P=SPEC;P=SPEC".  Each entry goes through limits_table_set. */
int limits_parse_list(const char *origin, const char *list, const imgq_catalog *cat,
                      struct limits_spec *tab, int *n, char *err, size_t errlen);

/* The config file's "rate_limits" object, if it has one (path NULL or no key: nothing). */
int limits_parse_config_file(const char *path, const imgq_catalog *cat, struct limits_spec *tab,
                             int *n, char *err, size_t errlen);

/* "images=20 tokens=250000 concurrent=off" style description, for logs. */
void limits_describe(const struct limits_spec *s, char *buf, size_t len);

/* Runtime ----------------------------------------------------------------------------------- */

struct worker;
struct limits_provider;

enum limits_status {
    LIMITS_GO,
    LIMITS_TOO_MANY_IMAGES, /* the call's images alone exceed the images limit */
    LIMITS_TOO_MANY_TOKENS, /* the call's tokens alone exceed the tokens limit */
    LIMITS_CANCELLED,       /* unwanted meanwhile, or the worker is closing: nothing taken */
};
const char *limits_status_name(enum limits_status st);

typedef void (*limits_cb)(enum limits_status st, void *arg);
/* Does the caller still want room?  Called before each ask and at least once a second. */
typedef bool (*limits_wanted_fn)(void *arg);

/*
 * A call's place in its provider's queue, then its hold on room.  Owned by the caller (embed
 * it in the call), zeroed before first use; it must stay valid while queued (until the
 * callback) and while held (until limits_release).
 */
struct limits_wait {
    struct limits_wait *next;
    struct limits_provider *lp;
    int images;
    int64_t tokens;
    char entry[160];
    bool queued; /* waiting for its callback */
    bool held;   /* LIMITS_GO given, not yet released */
    limits_cb cb;
    limits_wanted_fn wanted;
    void *arg;
};

struct limits_provider {
    struct worker *w;
    const struct limits_spec *spec;
    struct limits_wait *head, *tail;
    bool busy;        /* a take for the head is in flight */
    uv_timer_t timer; /* next ask while the head waits for room */
    bool timer_init;
};

struct limits {
    struct limits_provider p[LIMITS_MAX];
    int n;
    long slot_ttl_ms;
    bool closing;
    unsigned long waits; /* takes answered "not yet", for the final log line */
};

/* Set up w->limits from w->opt.rate (call before the loop runs). */
void limits_init(struct worker *w);

/* Does this provider have any limit?  When not, calls go without asking. */
bool limits_apply(const struct worker *w, const char *provider);
/* The provider's limits, NULL if none. */
const struct limits_spec *limits_spec(const struct worker *w, const char *provider);

/*
 * Queue a call for room under every limit of its provider: 'images' images and 'tokens'
 * estimated tokens, 'entry' a name unique to this send.  cb runs
 * exactly once, later.  No callback when this returns IMGQ_ENOTFOUND (the provider has no
 * limits: send at once) or IMGQ_ECANCELED (the worker is closing: do not send).
 */
int limits_acquire(struct worker *w, const char *provider, struct limits_wait *lw, int images,
                   int64_t tokens, const char *entry, limits_cb cb, limits_wanted_fn wanted,
                   void *arg);

/* The call ended (sent true: with an answer, an error or a timeout; false: never sent): free
 * its concurrency slot.  A no-op unless held. */
void limits_release(struct worker *w, struct limits_wait *lw, bool sent);

/*
 * The provider answered a call 429 with a hint (retry-after and the like): no call of its
 * account is sent, by any worker, for ms (the latest hold wins; rate.lua 'hold').  Only for
 * a provider with limits (calls to others are not queued): a no-op otherwise.
 */
void limits_hold(struct worker *w, const char *provider, long ms);

/* Shutdown: cancel every queued call (their callbacks run now) and close the timers. */
void limits_close(struct worker *w);

#endif
