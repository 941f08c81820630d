/* server.c - imgq-sim's routing, its own endpoints (/healthz, /sim/stats, /sim/reset, /sim/fail),
 * counters and replies. */
#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "imgq/alloc.h"
#include "sim.h"

static const char *const endpoint_names[SIM_EP_COUNT] = {
    "healthz", "generations", "edits", "gemini", "seedream", "dashscope", "replicate",
    "fal",     "bfl",         "files", "fail",   "stats",    "reset",     "other"};
const char *sim_endpoint_name(enum sim_endpoint ep)
{
    return ep >= 0 && ep < SIM_EP_COUNT ? endpoint_names[ep] : "other";
}

static const char *const outcome_names[SIM_OUTCOME_COUNT] = {
    "ok",         "no_usage",        "rate_limited", "server_error",
    "moderation", "invalid_request", "unauthorized", "not_found"};

uint64_t sim_now_ms(const struct sim *s)
{
    return uv_now(s->loop);
}

/* splitmix64: small, fast and good enough to draw failure rates; seeded by --seed. */
uint64_t sim_random(struct sim *s)
{
    uint64_t z = (s->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

double sim_random_unit(struct sim *s)
{
    return (double)(sim_random(s) >> 11) * (1.0 / 9007199254740992.0);
}

bool sim_seen_once(struct sim *s, const char *key)
{
    for (size_t i = 0; i < s->nseen; i++)
        if (strcmp(s->seen_keys[i], key) == 0)
            return true;
    if (s->nseen == s->capseen) {
        s->capseen = s->capseen ? 2 * s->capseen : 16;
        s->seen_keys = imgq_xrealloc(s->seen_keys, s->capseen * sizeof(*s->seen_keys));
    }
    s->seen_keys[s->nseen++] = imgq_xstrdup(key);
    return false;
}

void sim_forget_keys(struct sim *s)
{
    for (size_t i = 0; i < s->nseen; i++)
        free(s->seen_keys[i]);
    free(s->seen_keys);
    s->seen_keys = NULL;
    s->nseen = s->capseen = 0;
}

char *sim_error_body(const char *message, const char *type, const char *param, const char *code,
                     size_t *len)
{
    json_t *err = json_pack("{s:s, s:s, s:o, s:o}", "message", message, "type", type, "param",
                            param ? json_string(param) : json_null(), "code",
                            code ? json_string(code) : json_null());
    return sim_json_dumps(json_pack("{s:o}", "error", err), len);
}

char *sim_json_dumps(json_t *root, size_t *len)
{
    char *body =
        root ? json_dumps(root, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(15)) : NULL;
    json_decref(root);
    if (!body) { /* jansson fails only for lack of memory (our packs are well-formed) */
        fprintf(stderr, "imgq-sim: out of memory building JSON\n");
        abort();
    }
    if (len)
        *len = strlen(body);
    return body;
}

void sim_reply(struct sim *s, imgq_httpd_request *req, enum sim_endpoint ep,
               enum sim_outcome outcome, int status, const struct imgq_httpd_header *extra,
               size_t nextra, char *body, size_t len, uint64_t start_ms)
{
    struct imgq_httpd_header h[24];
    size_t n = 0;
    char request_id[40], ms[48];
    uint64_t elapsed = sim_now_ms(s) - start_ms;

    snprintf(request_id, sizeof(request_id), "req_sim%016" PRIx64, ++s->seq);
    if (ep == SIM_EP_GEMINI) { /* Google's front end: its content type and timing header */
        snprintf(ms, sizeof(ms), "gfet4t7; dur=%" PRIu64, elapsed);
        h[n++] = (struct imgq_httpd_header){"Content-Type", "application/json; charset=UTF-8"};
        h[n++] = (struct imgq_httpd_header){"x-request-id", request_id};
        h[n++] = (struct imgq_httpd_header){"server-timing", ms};
    } else if (ep == SIM_EP_SEEDREAM || ep == SIM_EP_DASHSCOPE || ep == SIM_EP_REPLICATE ||
               ep == SIM_EP_FAL || ep == SIM_EP_BFL) { /* a request id, no processing time */
        h[n++] = (struct imgq_httpd_header){"Content-Type", "application/json"};
        h[n++] = (struct imgq_httpd_header){"x-request-id", request_id};
    } else if (ep == SIM_EP_FILES) { /* the caller says what it is */
    } else {
        snprintf(ms, sizeof(ms), "%" PRIu64, elapsed);
        h[n++] = (struct imgq_httpd_header){"Content-Type", "application/json"};
        h[n++] = (struct imgq_httpd_header){"x-request-id", request_id};
        h[n++] = (struct imgq_httpd_header){"openai-processing-ms", ms};
    }
    for (size_t i = 0; i < nextra && n < sizeof(h) / sizeof(h[0]); i++)
        h[n++] = extra[i];
    s->counts[ep][outcome]++;
    if (s->cfg.verbose) {
        /* arrived=: wall-clock ms when the request came in (rate-limit tests read it). */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t wall = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
        fprintf(stderr, "imgq-sim: %s %s %d %s %" PRIu64 "ms arrived=%" PRIu64 "\n",
                imgq_httpd_request_method(req), imgq_httpd_request_target(req), status,
                outcome_names[outcome], elapsed, wall - elapsed);
    }
    imgq_httpd_respond_take(req, status, h, n, body, len);
}

static void reply_json(struct sim *s, imgq_httpd_request *req, enum sim_endpoint ep, int status,
                       json_t *root)
{
    size_t len;
    char *body = sim_json_dumps(root, &len);
    sim_reply(s, req, ep, status < 400 ? SIM_OK : SIM_NOT_FOUND, status, NULL, 0, body, len,
              sim_now_ms(s));
}

static json_t *stats_json(struct sim *s)
{
    json_t *requests = json_object();
    uint64_t total = 0;
    for (int e = 0; e < SIM_EP_COUNT; e++) {
        json_t *ep = json_object();
        json_object_set_new(ep, "total", json_integer((json_int_t)s->received[e]));
        for (int o = 0; o < SIM_OUTCOME_COUNT; o++)
            json_object_set_new(ep, outcome_names[o], json_integer((json_int_t)s->counts[e][o]));
        json_object_set_new(ep, "with_references", json_integer((json_int_t)s->ref_requests[e]));
        json_object_set_new(ep, "references", json_integer((json_int_t)s->ref_images[e]));
        json_object_set_new(ep, "reference_bytes", json_integer((json_int_t)s->ref_bytes[e]));
        if (e == SIM_EP_DASHSCOPE || e == SIM_EP_REPLICATE || e == SIM_EP_FAL || e == SIM_EP_BFL) {
            json_object_set_new(ep, "submits", json_integer((json_int_t)s->submits[e]));
            json_object_set_new(ep, "polls", json_integer((json_int_t)s->polls[e]));
            json_object_set_new(ep, "results", json_integer((json_int_t)s->results[e]));
        }
        json_object_set_new(requests, endpoint_names[e], ep);
        total += s->received[e];
    }
    json_object_set_new(requests, "total", json_integer((json_int_t)total));
    return json_pack("{s:o, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "requests", requests,
                     "in_flight", (json_int_t)s->in_flight, "max_in_flight",
                     (json_int_t)s->max_in_flight, "abandoned", (json_int_t)s->abandoned, "images",
                     (json_int_t)s->images, "output_tokens", (json_int_t)s->output_tokens,
                     "connections", (json_int_t)imgq_httpd_connections(s->httpd), "fail_once_keys",
                     (json_int_t)s->nseen, "tasks", (json_int_t)s->ntasks, "fail_rules",
                     (json_int_t)s->nfail_rules);
}

static void reset_stats(struct sim *s, const char *query)
{
    memset(s->counts, 0, sizeof(s->counts));
    memset(s->received, 0, sizeof(s->received));
    memset(s->submits, 0, sizeof(s->submits));
    memset(s->polls, 0, sizeof(s->polls));
    memset(s->results, 0, sizeof(s->results));
    memset(s->ref_requests, 0, sizeof(s->ref_requests));
    memset(s->ref_images, 0, sizeof(s->ref_images));
    memset(s->ref_bytes, 0, sizeof(s->ref_bytes));
    sim_tasks_clear(s);
    s->max_in_flight = s->in_flight;
    s->images = s->output_tokens = s->abandoned = 0;
    for (int e = 0; e < SIM_EP_COUNT; e++)
        s->window[e].requests = 0;
    sim_bill_clear(s);
    if (strstr(query, "fail_once=1"))
        sim_forget_keys(s);
    if (strstr(query, "fail_rules=1"))
        sim_fail_clear(s);
}

static void method_not_allowed(struct sim *s, imgq_httpd_request *req, enum sim_endpoint ep)
{
    size_t len;
    char *msg = imgq_xasprintf("Method %s not allowed for %s", imgq_httpd_request_method(req),
                               imgq_httpd_request_path(req));
    char *body = sim_error_body(msg, "invalid_request_error", NULL, NULL, &len);
    free(msg);
    sim_reply(s, req, ep, SIM_INVALID_REQUEST, 405, NULL, 0, body, len, sim_now_ms(s));
}

/* ---- /sim/fail ------------------------------------------------------------------------------ */

static void fail_bad(struct sim *s, imgq_httpd_request *req, const char *msg)
{
    size_t len;
    char *body = sim_error_body(msg, "invalid_request_error", NULL, NULL, &len);
    sim_reply(s, req, SIM_EP_FAIL, SIM_INVALID_REQUEST, 400, NULL, 0, body, len, sim_now_ms(s));
}

/* POST {"model","status"?,"rate"?}: status 400..599 (default 500), rate 0..1 (default 1; 0
 * removes the rule).  GET lists the rules. */
static void fail_handle(struct sim *s, imgq_httpd_request *req, bool get, bool post)
{
    if (get) {
        reply_json(s, req, SIM_EP_FAIL, 200, sim_fail_json(s));
        return;
    }
    if (!post) {
        method_not_allowed(s, req, SIM_EP_FAIL);
        return;
    }
    char why[160];
    json_t *root = sim_json_object_body(req, why, sizeof(why));
    if (!root) {
        fail_bad(s, req, why);
        return;
    }
    json_t *model = json_object_get(root, "model");
    json_t *status = json_object_get(root, "status");
    json_t *rate = json_object_get(root, "rate");
    if (!json_is_string(model) || !json_string_length(model))
        fail_bad(s, req, "model must be a non-empty string");
    else if (status && (!json_is_integer(status) || json_integer_value(status) < 400 ||
                        json_integer_value(status) > 599))
        fail_bad(s, req, "status must be an integer from 400 to 599");
    else if (rate &&
             (!json_is_number(rate) || json_number_value(rate) < 0 || json_number_value(rate) > 1))
        fail_bad(s, req, "rate must be a number from 0 to 1");
    else {
        sim_fail_set(s, json_string_value(model), status ? (int)json_integer_value(status) : 500,
                     rate ? json_number_value(rate) : 1.0);
        reply_json(s, req, SIM_EP_FAIL, 200, sim_fail_json(s));
    }
    json_decref(root);
}

/*
 * The /sim/fail hook of the synchronous endpoints, before their handlers run (which it leaves
 * alone): the model of a POST (OpenAI and Seedream: the body's "model"; Gemini: the path's),
 * and, if a rule fails it, an answer in the provider's error shape.  True if answered.
 */
static bool sync_fail_hook(struct sim *s, imgq_httpd_request *req, enum sim_endpoint ep)
{
    if (!s->nfail_rules || strcmp(imgq_httpd_request_method(req), "POST") != 0)
        return false;
    char model[256] = "";
    if (ep == SIM_EP_GEMINI) {
        const char *p = imgq_httpd_request_path(req);
        if (strncmp(p, "/v1beta/models/", 15) != 0)
            return false;
        p += 15;
        size_t n = strcspn(p, ":/");
        if (n >= sizeof(model))
            return false;
        memcpy(model, p, n);
        model[n] = '\0';
    } else {
        char why[160];
        json_t *root = sim_json_object_body(req, why, sizeof(why));
        const char *m = json_string_value(json_object_get(root, "model"));
        snprintf(model, sizeof(model), "%s", m ? m : "");
        json_decref(root);
    }
    int status = sim_fail_status(s, model);
    if (!status)
        return false;

    enum sim_outcome outcome = sim_outcome_of_status(status);
    char retry[64];
    sim_retry_after(s, retry, sizeof(retry));
    struct imgq_httpd_header h[] = {{"retry-after", retry}};
    size_t nh = status == 429 || status == 503 ? 1 : 0;
    char *msg = imgq_xasprintf("imgq-sim: requests for %s fail with %d (/sim/fail)", model, status);
    char *body;
    size_t len;
    if (ep == SIM_EP_GEMINI) {
        const char *st = status == 429   ? "RESOURCE_EXHAUSTED"
                         : status == 503 ? "UNAVAILABLE"
                         : status == 504 ? "DEADLINE_EXCEEDED"
                         : status >= 500 ? "INTERNAL"
                         : status == 403 ? "PERMISSION_DENIED"
                         : status == 404 ? "NOT_FOUND"
                                         : "INVALID_ARGUMENT";
        body = sim_json_dumps(
            json_pack("{s:{s:i, s:s, s:s}}", "error", "code", status, "message", msg, "status", st),
            &len);
    } else if (ep == SIM_EP_SEEDREAM) {
        const char *code = status == 429   ? "RateLimitExceeded.EndpointRPMExceeded"
                           : status == 503 ? "ServiceUnavailable"
                           : status >= 500 ? "InternalServiceError"
                                           : "InvalidParameter";
        const char *type = status == 429   ? "TooManyRequests"
                           : status == 503 ? "ServiceUnavailable"
                           : status >= 500 ? "InternalServiceError"
                                           : "BadRequest";
        body = sim_json_dumps(
            json_pack("{s:{s:s, s:s, s:s}}", "error", "code", code, "message", msg, "type", type),
            &len);
    } else {
        const char *type = status == 429   ? "requests"
                           : status >= 500 ? "server_error"
                                           : "invalid_request_error";
        body = sim_error_body(msg, type, NULL, status == 429 ? "rate_limit_exceeded" : NULL, &len);
    }
    free(msg);
    sim_reply(s, req, ep, outcome, status, h, nh, body, len, sim_now_ms(s));
    return true;
}

void sim_handle(imgq_httpd_request *req, void *data)
{
    struct sim *s = data;
    const char *path = imgq_httpd_request_path(req);
    const char *method = imgq_httpd_request_method(req);
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    bool post = strcmp(method, "POST") == 0;

    if (strcmp(path, "/v1/images/generations") == 0) {
        s->received[SIM_EP_GENERATIONS]++;
        if (!post)
            method_not_allowed(s, req, SIM_EP_GENERATIONS);
        else if (!sync_fail_hook(s, req, SIM_EP_GENERATIONS))
            sim_openai_generations(s, req);
    } else if (strcmp(path, "/v1/images/edits") == 0) {
        s->received[SIM_EP_EDITS]++;
        if (!post)
            method_not_allowed(s, req, SIM_EP_EDITS);
        else
            sim_openai_edits(s, req);
    } else if (strcmp(path, "/api/v3/images/generations") == 0) {
        s->received[SIM_EP_SEEDREAM]++;
        if (!post)
            method_not_allowed(s, req, SIM_EP_SEEDREAM);
        else if (!sync_fail_hook(s, req, SIM_EP_SEEDREAM))
            sim_seedream_generations(s, req);
    } else if (strncmp(path, "/v1beta/", 8) == 0) {
        s->received[SIM_EP_GEMINI]++;
        if (!sync_fail_hook(s, req, SIM_EP_GEMINI))
            sim_gemini_handle(s, req);
    } else if (strncmp(path, "/api/v1/", 8) == 0) {
        s->received[SIM_EP_DASHSCOPE]++;
        sim_dashscope_handle(s, req);
    } else if (strncmp(path, "/v1/models/", 11) == 0 ||
               strncmp(path, "/v1/predictions/", 16) == 0) {
        s->received[SIM_EP_REPLICATE]++;
        sim_replicate_handle(s, req);
    } else if (strncmp(path, "/fal/", 5) == 0) {
        s->received[SIM_EP_FAL]++;
        sim_fal_handle(s, req);
    } else if (strncmp(path, "/bfl/v1/", 8) == 0) {
        s->received[SIM_EP_BFL]++;
        sim_bfl_handle(s, req);
    } else if (strncmp(path, "/sim/files/", 11) == 0) {
        s->received[SIM_EP_FILES]++;
        sim_files_handle(s, req);
    } else if (strcmp(path, "/sim/fail") == 0) {
        s->received[SIM_EP_FAIL]++;
        fail_handle(s, req, get, post);
    } else if (strcmp(path, "/healthz") == 0) {
        s->received[SIM_EP_HEALTHZ]++;
        if (!get)
            method_not_allowed(s, req, SIM_EP_HEALTHZ);
        else
            reply_json(s, req, SIM_EP_HEALTHZ, 200, json_pack("{s:s}", "status", "ok"));
    } else if (strcmp(path, "/sim/stats") == 0) {
        s->received[SIM_EP_STATS]++;
        if (!get)
            method_not_allowed(s, req, SIM_EP_STATS);
        else
            reply_json(s, req, SIM_EP_STATS, 200, stats_json(s));
    } else if (strcmp(path, "/sim/bill") == 0) {
        s->received[SIM_EP_STATS]++;
        if (!get)
            method_not_allowed(s, req, SIM_EP_STATS);
        else
            reply_json(s, req, SIM_EP_STATS, 200, sim_bill_json(s));
    } else if (strcmp(path, "/sim/reset") == 0) {
        if (!post) {
            s->received[SIM_EP_RESET]++;
            method_not_allowed(s, req, SIM_EP_RESET);
        } else {
            reset_stats(s, imgq_httpd_request_query(req));
            s->received[SIM_EP_RESET]++;
            reply_json(s, req, SIM_EP_RESET, 200, json_pack("{s:b}", "reset", 1));
        }
    } else {
        s->received[SIM_EP_OTHER]++;
        size_t len;
        char *msg = imgq_xasprintf("Invalid URL (%s %s)", method, path);
        char *body = sim_error_body(msg, "invalid_request_error", NULL, NULL, &len);
        free(msg);
        sim_reply(s, req, SIM_EP_OTHER, SIM_NOT_FOUND, 404, NULL, 0, body, len, sim_now_ms(s));
    }
}
