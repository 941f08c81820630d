/*
 * sim.h - imgq-sim, a provider simulator that speaks the OpenAI Images HTTP API.
 *
 * Private to the imgq-sim program.  Layout:
 *   main.c     start-up, signals, shutdown
 *   config.c   command-line flags and the --config JSON file
 *   server.c   routing, /healthz and /sim/stats, /sim/reset, counters, replies, randomness
 *   openai.c   POST /v1/images/generations: validation, outcome, latency, response body
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
    SIM_EP_GENERATIONS,
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
    /* the rate-limit window (one minute) */
    uint64_t window_start_ms;
    uint64_t window_requests;
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

/* openai.c */
void sim_openai_generations(struct sim *s, imgq_httpd_request *req);
/* Answer every generation still waiting (at shutdown) and free them. */
void sim_openai_abort_all(struct sim *s);

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
