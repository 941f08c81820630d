/*
 * sim.h - imgq-sim, a provider simulator that speaks the OpenAI Images HTTP API, Gemini's
 * generateContent (image output), BytePlus ModelArk's Seedream images API, and the four
 * asynchronous (submit, then poll) APIs of DashScope, Replicate, fal.ai's queue and Black
 * Forest Labs.
 *
 * Private to the imgq-sim program.  Layout:
 *   main.c     start-up, signals, shutdown
 *   config.c   command-line flags and the --config JSON file
 *   server.c   routing, /healthz and /sim/stats, /sim/reset, counters, replies, randomness
 *   common.c   what every provider endpoint shares: prompt triggers, the outcome draw, the
 *              --rpm window, generations held for their latency, text buffers, token counts
 *   openai.c   POST /v1/images/generations and /v1/images/edits: validation, responses
 *   gemini.c   POST /v1beta/models/{model}:generateContent: validation, response bodies
 *   seedream.c POST /api/v3/images/generations (BytePlus ModelArk): validation, response bodies
 *   dashscope.c /api/v1/... DashScope's text2image task API (submit, GET /api/v1/tasks/{id})
 *   replicate.c /v1/models/{o}/{n}/predictions, /v1/predictions/{id} (Prefer: wait)
 *   fal.c      /fal/{model_id} and /fal/{owner}/{app}/requests/{id}[/status|/cancel]
 *   bfl.c      /bfl/v1/{model} and /bfl/v1/get_result?id=
 *   tasks.c    the asynchronous APIs' tasks: their store, phases by age, expiry, image files
 *              (GET /sim/files/{task}-{i}.png)
 *   picture.c  deterministic synthetic pictures and a cache of their encodings
 *   refs.c     the checks of a request's reference images (decoded whole, as a provider does)
 *
 * Everything runs on the one loop thread.
 */
#ifndef IMGQ_SIM_H
#define IMGQ_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <stdio.h>
#include <uv.h>

#include "imgq/catalog.h"
#include "imgq/httpd.h"

struct sim_config {
    char *host;
    int port;
    char *catalog_path;
    uint64_t latency_ms;
    uint64_t latency_jitter_ms;
    double fail_429;
    double fail_500;
    double fail_moderation;
    double no_usage;
    int bad_usage; /* enum sim_bad_usage: --bad-usage, every success's usage spoilt so */
    unsigned retry_after_s;
    char *retry_after_header; /* sent verbatim as retry-after instead, if set */
    uint64_t seed;
    bool seed_set;
    bool verbose;
    char *auto_quality; /* what quality "auto" becomes (the real API decides per prompt) */
    unsigned rpm;       /* requests per minute: advertised in x-ratelimit-*, enforced if > 0 */
    size_t max_body_bytes;
};

/* Defaults; the catalog path comes from IMGQ_CATALOG or deploy/catalog.json. */
void sim_config_init(struct sim_config *c);
void sim_config_release(struct sim_config *c);
/* Apply --config FILE then the other flags.  0 = run, 1 = help was printed (exit 0), negative =
 * error (message in err). */
int sim_config_from_args(struct sim_config *c, int argc, char **argv, char *err, size_t errlen);
void sim_usage(FILE *f);
/* The retry-after header value of a 429 or 503: --retry-after-header, else --retry-after. */
struct sim;
void sim_retry_after(const struct sim *s, char *buf, size_t len);

enum sim_endpoint {
    SIM_EP_HEALTHZ,
    SIM_EP_GENERATIONS, /* OpenAI /v1/images/generations */
    SIM_EP_EDITS,       /* OpenAI /v1/images/edits (multipart) */
    SIM_EP_GEMINI,      /* Gemini /v1beta/... */
    SIM_EP_SEEDREAM,    /* BytePlus ModelArk /api/v3/images/generations */
    SIM_EP_DASHSCOPE,   /* DashScope /api/v1/... (task API) */
    SIM_EP_REPLICATE,   /* Replicate /v1/models/.../predictions, /v1/predictions/... */
    SIM_EP_FAL,         /* fal.ai queue /fal/... */
    SIM_EP_BFL,         /* Black Forest Labs /bfl/v1/... */
    SIM_EP_FILES,       /* GET /sim/files/NAME: the asynchronous APIs' result images */
    SIM_EP_FAIL,        /* /sim/fail: failure rules per model */
    SIM_EP_STATS,
    SIM_EP_RESET,
    SIM_EP_OTHER,
    SIM_EP_COUNT
};

enum sim_outcome {
    SIM_OK,
    SIM_OK_NO_USAGE,
    SIM_RATE_LIMITED,
    SIM_SERVER_ERROR,
    SIM_MODERATION,
    SIM_INVALID_REQUEST,
    SIM_UNAUTHORIZED,
    SIM_NOT_FOUND,
    SIM_OUTCOME_COUNT
};

struct picture_cache;
struct sim_call;
struct sim_task;

/* A /sim/fail rule: requests for 'model' fail with 'status' at 'rate' (0..1]. */
struct sim_fail_rule {
    char *model;
    int status;
    double rate;
};

/* A one-minute request window of one endpoint (each provider has its own --rpm budget). */
struct sim_window {
    uint64_t start_ms;
    uint64_t requests;
};

struct sim {
    uv_loop_t *loop;
    imgq_httpd *httpd;
    imgq_catalog *catalog;
    struct sim_config cfg;
    uint64_t rng;
    uint64_t seq; /* request ids */
    /* counters for /sim/stats */
    uint64_t counts[SIM_EP_COUNT][SIM_OUTCOME_COUNT];
    uint64_t received[SIM_EP_COUNT];
    /* asynchronous APIs: submissions, status polls, result fetches (by endpoint) */
    uint64_t submits[SIM_EP_COUNT], polls[SIM_EP_COUNT], results[SIM_EP_COUNT];
    uint64_t in_flight, max_in_flight;
    uint64_t images, output_tokens;
    /* generations whose client left before the answer: the work was done, and a real
     * provider bills it (sim_call's outcome OK or OK_NO_USAGE) */
    uint64_t abandoned;
    /* reference images that arrived and decoded, by endpoint: requests carrying any, images,
     * decoded bytes (/sim/stats "requests.EP.with_references", "references",
     * "reference_bytes") */
    uint64_t ref_requests[SIM_EP_COUNT], ref_images[SIM_EP_COUNT], ref_bytes[SIM_EP_COUNT];
    struct sim_window window[SIM_EP_COUNT]; /* the --rpm windows */
    /* fail-once keys already seen */
    char **seen_keys;
    size_t nseen, capseen;
    struct sim_call *calls;           /* generations waiting for their latency */
    struct sim_fail_rule *fail_rules; /* /sim/fail */
    size_t nfail_rules;
    /* tasks of the asynchronous APIs (tasks.c): a hash by id and a list by age */
    struct sim_task **task_buckets;
    struct sim_task *oldest_task, *newest_task;
    size_t ntasks;
    struct picture_cache *pictures;
    json_t *bill;          /* bill.c: one object per generation performed */
    uint64_t bill_dropped; /* generations past the bill's cap */
    bool stopping;
};

/* bill.c: what the simulator billed, one entry per generation (GET /sim/bill). */
enum sim_bill_usage { SIM_BILL_REPORTED, SIM_BILL_MISSING, SIM_BILL_UNUSABLE };
struct sim_bill_entry {
    enum sim_endpoint ep;
    const char *model;   /* the catalog's name */
    const char *quality; /* NULL: the model has none */
    int width, height;
    int n;      /* images asked of the call */
    int images; /* images generated */
    enum sim_bill_usage usage;
    int64_t text_in, image_in, image_out, text_out; /* the true counts (token models) */
    size_t prompt_bytes;
    int references;
    bool answered; /* false: the client left before the answer (the work was done) */
    const char *prompt;
};
void sim_bill_record(struct sim *s, const struct sim_bill_entry *e);
/* {"generations": [...], "dropped": N}: a new reference. */
json_t *sim_bill_json(struct sim *s);
void sim_bill_clear(struct sim *s);
struct sim_task;
/* bill.c: a task of an asynchronous API that will succeed is billed when it is created (its
 * w, h and n filled): the provider bills a task it runs, whether or not its result is
 * fetched.  references: the images the request carried. */
void sim_task_bill(struct sim *s, const struct sim_task *k, int references);

/* server.c */
const char *sim_endpoint_name(enum sim_endpoint ep);
void sim_handle(imgq_httpd_request *req, void *data);
uint64_t sim_now_ms(const struct sim *s);
uint64_t sim_random(struct sim *s);
double sim_random_unit(struct sim *s); /* [0, 1) */
/* Whether key was seen before; remembers it. */
bool sim_seen_once(struct sim *s, const char *key);
void sim_forget_keys(struct sim *s);
/* Send a reply (taking 'body', malloc'd JSON), counting it and logging it with --verbose. */
void sim_reply(struct sim *s, imgq_httpd_request *req, enum sim_endpoint ep,
               enum sim_outcome outcome, int status, const struct imgq_httpd_header *extra,
               size_t nextra, char *body, size_t len, uint64_t start_ms);
/* Compact JSON text of root, which it takes (decref).  Aborts on out-of-memory. */
char *sim_json_dumps(json_t *root, size_t *len);
/* An OpenAI-shaped error body {"error":{message,type,param,code}}; param/code may be NULL. */
char *sim_error_body(const char *message, const char *type, const char *param, const char *code,
                     size_t *len);

/* common.c */

/* A growable NUL-terminated string; {0} is empty.  Aborts on out-of-memory. */
struct sim_buf {
    char *p;
    size_t len, cap;
};
void sim_buf_add(struct sim_buf *b, const char *s, size_t n);
void sim_buf_printf(struct sim_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

uint32_t sim_fnv1a(const char *s);
/* Characters (UTF-8 code points) of s. */
size_t sim_utf8_chars(const char *s);
/* Input text tokens of a prompt of this many characters: chars / 4 rounded up, at least 1. */
int64_t sim_text_tokens(size_t chars);
/* Which of the cached picture variants image 'index' of a prompt with this hash shows. */
uint32_t sim_picture_variant(uint32_t prompt_hash, uint32_t index);

/*
 * A usage a success answers with, spoilt ([sim:bad-usage:KIND] or --bad-usage KIND) as a
 * hostile or broken provider might: {} (empty), every count a string, negative, fractional,
 * INT64_MAX (huge), beyond 64 bits (overflow: DashScope and Replicate, whose answers jansson
 * writes, send huge instead) or 0; or every count the largest imgq prices (max: IMGQ_USAGE_MAX,
 * a usable count whose price may not fit).  OpenAI, Gemini and Seedream spoil their usage
 * object, DashScope its usage.image_count, Replicate its metrics.image_count; fal and BFL
 * report no usage.
 */
enum sim_bad_usage {
    SIM_USAGE_GOOD,
    SIM_USAGE_EMPTY,
    SIM_USAGE_STRING,
    SIM_USAGE_NEGATIVE,
    SIM_USAGE_FRACTIONAL,
    SIM_USAGE_HUGE,
    SIM_USAGE_OVERFLOW,
    SIM_USAGE_ZERO,
    SIM_USAGE_MAX
};
#define SIM_BAD_USAGE_NAMES "empty, string, negative, fractional, huge, overflow, zero, max"
/* "empty" -> SIM_USAGE_EMPTY, ...; -1 if s is none of SIM_BAD_USAGE_NAMES. */
int sim_bad_usage_parse(const char *s);
/* The count v as JSON text spoilt as k says (GOOD, EMPTY: v itself), in buf. */
const char *sim_usage_text(enum sim_bad_usage k, int64_t v, char *buf, size_t len);
/* The same as a JSON value (new reference). */
json_t *sim_usage_json(enum sim_bad_usage k, int64_t v);

/* Prompt triggers: [sim:429] [sim:500] [sim:moderation] [sim:prompt-blocked] [sim:no-usage]
 * [sim:bad-usage:KIND] [sim:fail-once:KEY] [sim:latency:MS] [sim:tokens:PCT], [sim:refs:N] (the
 * request must carry exactly N reference images: a test's way of telling the simulator what
 * the job had), and for the asynchronous APIs [sim:task-fail] (the task fails while polled)
 * and [sim:poll-503] (its first poll answers 503). */
struct sim_triggers {
    enum sim_outcome forced; /* SIM_OK = none; the first failure tag wins */
    bool prompt_blocked;     /* forced is SIM_MODERATION, decided on the prompt (input) */
    bool no_usage;
    enum sim_bad_usage bad_usage; /* the trigger's, else --bad-usage */
    bool task_fail;
    bool poll_503;
    int64_t latency_ms; /* -1 = configured */
    int token_pct;      /* [sim:tokens:PCT]: output tokens at PCT% of the catalog's table (100) */
    int refs_expected;  /* [sim:refs:N]; -1 = not said */
};
void sim_scan_triggers(struct sim *s, const char *prompt, struct sim_triggers *t);
/* Count a request in ep's --rpm window; true if it is over the limit. */
bool sim_window_count(struct sim *s, enum sim_endpoint ep);
/* The outcome of a valid generation on ep: the trigger, else the --rpm window, else the
 * configured rates.  Always counts the window and draws the same randomness. */
enum sim_outcome sim_decide_outcome(struct sim *s, enum sim_endpoint ep,
                                    const struct sim_triggers *t);

/*
 * A generation held open for its latency.  An endpoint embeds this as the first member of its
 * own call structure, sets the callbacks and hands it to sim_call_hold().  When the timer
 * fires (or at shutdown) the call is unlinked and answered: 'answer' replies to the live
 * request (never called for a request whose client has gone: that one gets a discarded 499),
 * then 'destroy' frees the whole structure.
 */
struct sim_call {
    struct sim *sim;
    imgq_httpd_request *req;
    uv_timer_t timer;
    struct sim_call *prev, *next;
    uint64_t start_ms;
    enum sim_outcome outcome;
    enum sim_bad_usage bad_usage; /* how a success spoils its usage */
    void (*answer)(struct sim_call *c);
    void (*destroy)(struct sim_call *c);
    /* bill.c: record the generation as billed although its client left (NULL: none). */
    void (*bill_abandoned)(struct sim_call *c);
};
/* Hold c (sim, req, start_ms, outcome and the callbacks set) for --latency-ms plus jitter, or
 * for latency_ms when it is >= 0 (a [sim:latency:MS] trigger). */
void sim_call_hold(struct sim *s, struct sim_call *c, int64_t latency_ms);
/* Hold c for exactly ms milliseconds. */
void sim_call_hold_for(struct sim *s, struct sim_call *c, uint64_t ms);
/* A generation's latency: latency_ms when >= 0, else --latency-ms plus a jitter draw. */
uint64_t sim_latency(struct sim *s, int64_t latency_ms);

/* The key of an auth header "NAME: SCHEME KEY" (scheme case-insensitive; NULL scheme: the
 * whole value), blanks skipped; NULL if absent or empty.  Borrowed from req. */
const char *sim_auth_key(imgq_httpd_request *req, const char *name, const char *scheme);
/* The request body as a JSON object (new reference), or NULL with a reason in why. */
json_t *sim_json_object_body(imgq_httpd_request *req, char *why, size_t whylen);
/*
 * Reference images, checked as a provider would before it generates: 'b64' (standard or
 * URL-safe base64, padded or not) must decode to a PNG, JPEG or WebP image that decodes
 * whole, of at most max_bytes, and whose type is 'mime' when mime is not NULL.  0 and the
 * decoded size in *bytes, or -1 with a sentence in why.
 */
int sim_ref_check_base64(const char *b64, size_t len, const char *mime, size_t max_bytes,
                         size_t *bytes, char *why, size_t whylen);
/* The same for a data URI "data:image/TYPE;base64,DATA"; an http(s) URL is refused (the
 * simulator fetches nothing). */
int sim_ref_check_uri(const char *uri, size_t max_bytes, size_t *bytes, char *why, size_t whylen);
/* Whether 'got' references satisfy a [sim:refs:N] trigger (always, when there is none); else a
 * sentence in why. */
bool sim_refs_as_told(const struct sim_triggers *t, int64_t got, char *why, size_t whylen);
/* Count the references a valid request of ep carried (nothing when n is 0). */
void sim_refs_count(struct sim *s, enum sim_endpoint ep, int64_t n, uint64_t bytes);
/* The outcome a status counts as in /sim/stats. */
enum sim_outcome sim_outcome_of_status(int status);

/* /sim/fail rules.  Set or replace the rule of model (rate 0 removes it). */
void sim_fail_set(struct sim *s, const char *model, int status, double rate);
/* The status a request for model must fail with now, or 0.  Draws randomness only when a rule
 * for model exists (so seeded runs without rules are unchanged). */
int sim_fail_status(struct sim *s, const char *model);
/* {"rules":[{"model","status","rate"}...]} (new reference). */
json_t *sim_fail_json(const struct sim *s);
void sim_fail_clear(struct sim *s);

/* ---- tasks.c: the asynchronous APIs' tasks ---- */

/* How a task ends once its latency is up. */
enum sim_task_end {
    SIM_TASK_OK,
    SIM_TASK_NO_USAGE,       /* OK, but without usage where the API has one */
    SIM_TASK_MODERATED,      /* the output was moderated */
    SIM_TASK_PROMPT_BLOCKED, /* the input was moderated */
    SIM_TASK_FAILED          /* [sim:task-fail] */
};
/* Where a task is: the first third of its latency queued, then running, then done. */
enum sim_task_phase { SIM_TASK_QUEUED, SIM_TASK_RUNNING, SIM_TASK_DONE, SIM_TASK_CANCELED };

#define SIM_TASK_TTL_MS 600000u /* a task is forgotten this long after it is done */
#define SIM_TASK_MAX 200000u    /* and the oldest go beyond this many */

struct sim_task {
    char id[40];
    enum sim_endpoint ep;
    char *model;   /* as the request named it (owned) */
    char *prompt;  /* owned */
    json_t *input; /* the input as the API echoes it, or NULL (owned) */
    int w, h, n;   /* each image's size, images */
    int64_t seed;
    uint32_t variant;        /* picture of image i: sim_picture_variant(variant, i) */
    uint64_t created_ms;     /* loop clock */
    int64_t created_wall_ms; /* wall clock, for timestamps */
    uint64_t latency_ms;
    uint64_t canceled_ms; /* loop clock; 0 = not canceled */
    enum sim_task_end end;
    enum sim_bad_usage bad_usage; /* how its success spoils its usage */
    bool poll_503;                /* the next poll answers 503 */
    struct sim_task *hash_next, *older, *newer;
};

/* A new task of ep for model and prompt (copied), with an id in the API's style, its latency
 * drawn (or t->latency_ms), and its end from the outcome o and the triggers.  The caller fills
 * w, h, n, seed, variant and input.  Never NULL (aborts on out-of-memory). */
struct sim_task *sim_task_add(struct sim *s, enum sim_endpoint ep, const char *model,
                              const char *prompt, const struct sim_triggers *t, enum sim_outcome o);
/* The task of ep with this id, or NULL (unknown, expired, another API's). */
struct sim_task *sim_task_find(struct sim *s, enum sim_endpoint ep, const char *id);
enum sim_task_phase sim_task_phase(const struct sim *s, const struct sim_task *t);
/* Loop-clock ms at which the task is (or was) done. */
uint64_t sim_task_done_ms(const struct sim_task *t);
/* Whether this poll must answer 503 ([sim:poll-503], once). */
bool sim_task_take_503(struct sim_task *t);
void sim_tasks_clear(struct sim *s);
/* "http://HOST" from the request's Host header (else the listening address); malloc'd. */
char *sim_origin(struct sim *s, imgq_httpd_request *req);
/* The URL of image i of t: ORIGIN/sim/files/{id}-{i}.png; malloc'd. */
char *sim_task_file_url(struct sim *s, imgq_httpd_request *req, const struct sim_task *t, int i);
/* Wall-clock ms of a loop-clock instant of t. */
int64_t sim_task_wall_ms(const struct sim_task *t, uint64_t loop_ms);
/* "2025-01-08 16:03:59.840" (DashScope, UTC+8) or "2025-01-08T08:03:59.840000Z" (ISO). */
void sim_time_format(int64_t wall_ms, bool iso, char *buf, size_t len);
/* GET /sim/files/NAME (the caller has counted it as received). */
void sim_files_handle(struct sim *s, imgq_httpd_request *req);

/* dashscope.c, replicate.c, fal.c, bfl.c: everything under their prefixes (counted as
 * received by the caller). */
void sim_dashscope_handle(struct sim *s, imgq_httpd_request *req);
void sim_replicate_handle(struct sim *s, imgq_httpd_request *req);
void sim_fal_handle(struct sim *s, imgq_httpd_request *req);
void sim_bfl_handle(struct sim *s, imgq_httpd_request *req);
/* Answer every generation still held (at shutdown) and free them. */
void sim_calls_abort_all(struct sim *s);

/* openai.c */
void sim_openai_generations(struct sim *s, imgq_httpd_request *req);
void sim_openai_edits(struct sim *s, imgq_httpd_request *req);

/* gemini.c: everything under /v1beta/ (the caller has counted it as received). */
void sim_gemini_handle(struct sim *s, imgq_httpd_request *req);

/* seedream.c: POST /api/v3/images/generations (the caller has counted it as received). */
void sim_seedream_generations(struct sim *s, imgq_httpd_request *req);

/* picture.c */
enum picture_format { PICTURE_PNG, PICTURE_WEBP };
struct picture_cache *picture_cache_new(size_t max_entries);
void picture_cache_free(struct picture_cache *pc);
/*
 * Base64 of an image of w x h for this variant, encoded as asked (quality for WebP; alpha
 * adds a transparent background).  Borrowed: valid until the next call.  NULL with *err set
 * to an IMGQ_E* code if it cannot be made.
 */
const char *picture_b64(struct picture_cache *pc, int w, int h, uint32_t variant,
                        enum picture_format fmt, int quality, bool alpha, size_t *len, int *err);

#endif
