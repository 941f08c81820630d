/*
 * sim.h - imgq-sim, a provider simulator that speaks the OpenAI Images HTTP API, Gemini's
 * generateContent (image output) and BytePlus ModelArk's Seedream images API.
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
 *   picture.c  deterministic synthetic pictures and a cache of their encodings
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
    unsigned retry_after_s;
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

enum sim_endpoint {
    SIM_EP_HEALTHZ,
    SIM_EP_GENERATIONS, /* OpenAI /v1/images/generations */
    SIM_EP_EDITS,       /* OpenAI /v1/images/edits (multipart) */
    SIM_EP_GEMINI,      /* Gemini /v1beta/... */
    SIM_EP_SEEDREAM,    /* BytePlus ModelArk /api/v3/images/generations */
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
    uint64_t in_flight, max_in_flight;
    uint64_t images, output_tokens;
    struct sim_window window[SIM_EP_COUNT]; /* the --rpm windows */
    /* fail-once keys already seen */
    char **seen_keys;
    size_t nseen, capseen;
    struct sim_call *calls; /* generations waiting for their latency */
    struct picture_cache *pictures;
    bool stopping;
};

/* server.c */
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

/* Prompt triggers: [sim:429] [sim:500] [sim:moderation] [sim:prompt-blocked] [sim:no-usage]
 * [sim:fail-once:KEY] [sim:latency:MS]. */
struct sim_triggers {
    enum sim_outcome forced; /* SIM_OK = none; the first failure tag wins */
    bool prompt_blocked;     /* forced is SIM_MODERATION, decided on the prompt (input) */
    bool no_usage;
    int64_t latency_ms; /* -1 = configured */
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
    void (*answer)(struct sim_call *c);
    void (*destroy)(struct sim_call *c);
};
/* Hold c (sim, req, start_ms, outcome and the callbacks set) for --latency-ms plus jitter, or
 * for latency_ms when it is >= 0 (a [sim:latency:MS] trigger). */
void sim_call_hold(struct sim *s, struct sim_call *c, int64_t latency_ms);
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
