/*
 * openai.c - POST /v1/images/generations as the OpenAI Images API answers it.
 *
 * Validation follows the real API's messages ("Invalid value: '1254x836'. Supported values
 * are: ...") so that a client's error classification is exercised for real.  The outcome of a
 * valid request is decided when it arrives: a prompt trigger ([sim:...]) wins, else the
 * configured rates.  A 429 is answered at once (a rate limiter does not generate); everything
 * else waits out the configured latency on a uv timer, so thousands of requests can be held
 * open without threads.
 *
 * Choices where the real API is not specified: quality "auto" becomes --auto-quality
 * (default medium) and is reported as such; size "auto" becomes 1024x1024; output_format jpeg
 * is refused (400) because the simulator has no JPEG encoder; input text tokens are the
 * prompt's characters / 4 rounded up (at least 1).
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "imgq/alloc.h"
#include "sim.h"

#define NVARIANTS 8 /* pictures per size: enough to look varied, few enough to cache */

struct sim_call {
    struct sim *sim;
    imgq_httpd_request *req;
    uv_timer_t timer;
    struct sim_call *prev, *next;
    uint64_t start_ms;
    enum sim_outcome outcome;
    const struct imgq_model *model;
    bool tokens_billed;
    int n, w, h;
    char size[24];
    char quality[16];
    char background[16];
    enum picture_format format;
    int compression;
    uint32_t prompt_hash;
    char *prompt;
    int64_t input_tokens;
    int64_t output_tokens; /* all n images */
};

/* ---- A growable string ---------------------------------------------------------------------- */

struct buf {
    char *p;
    size_t len, cap;
};

static void buf_add(struct buf *b, const char *s, size_t n)
{
    if (b->cap - b->len < n + 1) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap - b->len < n + 1)
            cap *= 2;
        b->p = imgq_xrealloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void __attribute__((format(printf, 2, 3))) buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    if (!s)
        s = imgq_xstrdup(""); /* vasprintf fails only for lack of memory */
    buf_add(b, s, strlen(s));
    free(s);
}

/* ---- Rate-limit headers --------------------------------------------------------------------- */

#define TOKENS_PER_MINUTE 4000000 /* advertised only */

struct ratelimit {
    char limit[24], remaining[24], reset[24], tlimit[24], tremaining[24], treset[24];
    char retry[24], retry_ms[24];
    struct imgq_httpd_header h[8];
    size_t n;
};

/* Count this request in the one-minute window; true if --rpm is exceeded. */
static bool window_count(struct sim *s)
{
    uint64_t now = sim_now_ms(s);
    if (now - s->window_start_ms >= 60000) {
        s->window_start_ms = now;
        s->window_requests = 0;
    }
    s->window_requests++;
    return s->cfg.rpm > 0 && s->window_requests > s->cfg.rpm;
}

static void ratelimit_headers(struct sim *s, struct ratelimit *r, bool limited)
{
    uint64_t limit = s->cfg.rpm ? s->cfg.rpm : 5000;
    uint64_t used = s->window_requests;
    uint64_t left = limited || used >= limit ? 0 : limit - used;
    uint64_t reset_ms = 60000 - (sim_now_ms(s) - s->window_start_ms);
    snprintf(r->limit, sizeof(r->limit), "%" PRIu64, limit);
    snprintf(r->remaining, sizeof(r->remaining), "%" PRIu64, left);
    snprintf(r->reset, sizeof(r->reset), "%" PRIu64 "ms", reset_ms);
    snprintf(r->tlimit, sizeof(r->tlimit), "%d", TOKENS_PER_MINUTE);
    snprintf(r->tremaining, sizeof(r->tremaining), "%d", limited ? 0 : TOKENS_PER_MINUTE);
    snprintf(r->treset, sizeof(r->treset), "%" PRIu64 "ms", limited ? reset_ms : (uint64_t)0);
    r->n = 0;
    r->h[r->n++] = (struct imgq_httpd_header){"x-ratelimit-limit-requests", r->limit};
    r->h[r->n++] = (struct imgq_httpd_header){"x-ratelimit-remaining-requests", r->remaining};
    r->h[r->n++] = (struct imgq_httpd_header){"x-ratelimit-reset-requests", r->reset};
    r->h[r->n++] = (struct imgq_httpd_header){"x-ratelimit-limit-tokens", r->tlimit};
    r->h[r->n++] = (struct imgq_httpd_header){"x-ratelimit-remaining-tokens", r->tremaining};
    r->h[r->n++] = (struct imgq_httpd_header){"x-ratelimit-reset-tokens", r->treset};
    if (limited) {
        snprintf(r->retry, sizeof(r->retry), "%u", s->cfg.retry_after_s);
        snprintf(r->retry_ms, sizeof(r->retry_ms), "%" PRIu64,
                 (uint64_t)s->cfg.retry_after_s * 1000);
        r->h[r->n++] = (struct imgq_httpd_header){"retry-after", r->retry};
        r->h[r->n++] = (struct imgq_httpd_header){"retry-after-ms", r->retry_ms};
    }
}

/* ---- Errors --------------------------------------------------------------------------------- */

static void reply_error(struct sim *s, imgq_httpd_request *req, enum sim_outcome outcome,
                        int status, uint64_t start, const char *param, const char *code,
                        const char *type, const char *fmt, ...)
    __attribute__((format(printf, 9, 10)));

static void reply_error(struct sim *s, imgq_httpd_request *req, enum sim_outcome outcome,
                        int status, uint64_t start, const char *param, const char *code,
                        const char *type, const char *fmt, ...)
{
    va_list ap;
    char msg[2048];
    size_t len;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    char *body = sim_error_body(msg, type, param, code, &len);
    sim_reply(s, req, SIM_EP_GENERATIONS, outcome, status, NULL, 0, body, len, start);
}

#define BAD(param, code, ...)                                                                      \
    reply_error(s, req, SIM_INVALID_REQUEST, 400, start, param, code, "invalid_request_error",     \
                __VA_ARGS__)

/* "'a', 'b', and 'c'" as the real API lists supported values. */
static void list_values(struct buf *b, const char *const *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            buf_add(b, n > 2 ? ", " : " ", n > 2 ? 2 : 1);
        if (i > 0 && i == n - 1)
            buf_add(b, "and ", 4);
        buf_printf(b, "'%s'", v[i]);
    }
}

static void reply_invalid_value(struct sim *s, imgq_httpd_request *req, uint64_t start,
                                const char *param, const char *value, const char *const *v,
                                size_t n)
{
    struct buf b = {0};
    list_values(&b, v, n);
    BAD(param, "invalid_value", "Invalid value: '%.200s'. Supported values are: %s.", value,
        b.p ? b.p : "none");
    free(b.p);
}

/* ---- Request parsing ------------------------------------------------------------------------ */

static const char *const known_params[] = {"prompt",
                                           "model",
                                           "n",
                                           "size",
                                           "quality",
                                           "output_format",
                                           "output_compression",
                                           "background",
                                           "moderation",
                                           "response_format",
                                           "style",
                                           "user",
                                           "stream",
                                           "partial_images"};

static size_t count_nul_terminated(char **v)
{
    size_t n = 0;
    while (v && v[n])
        n++;
    return n;
}

static uint32_t fnv1a(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

static size_t utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        if (((uint8_t)*s & 0xc0) != 0x80)
            n++;
    return n;
}

static void unknown_model(struct sim *s, imgq_httpd_request *req, uint64_t start, const char *name)
{
    const char *names[64];
    size_t n = 0;
    const struct imgq_model *m;
    for (size_t i = 0; n < 64 && (m = imgq_catalog_model_at(s->catalog, i)); i++)
        if (strcmp(m->api, "openai-images") == 0)
            names[n++] = m->name;
    reply_invalid_value(s, req, start, "model", name, names, n);
}

/* Optional string member: 1 and *out if present, 0 if absent, -1 (answered) if not a string. */
static int opt_string(struct sim *s, imgq_httpd_request *req, uint64_t start, json_t *root,
                      const char *key, const char **out)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v)) {
        BAD(key, "invalid_type", "Invalid type for '%s': expected a string, but got %s instead.",
            key, json_is_integer(v) || json_is_real(v) ? "a number" : "another type");
        return -1;
    }
    *out = json_string_value(v);
    return 1;
}

static int opt_int(struct sim *s, imgq_httpd_request *req, uint64_t start, json_t *root,
                   const char *key, int min, int max, int *out)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v)) {
        BAD(key, "invalid_type", "Invalid type for '%s': expected an integer, but got %s instead.",
            key, json_is_string(v) ? "a string" : "another type");
        return -1;
    }
    json_int_t n = json_integer_value(v);
    if (n < min) {
        BAD(key, "integer_below_min_value",
            "Invalid '%s': integer below minimum value. Expected a value >= %d, but got "
            "%" JSON_INTEGER_FORMAT " instead.",
            key, min, n);
        return -1;
    }
    if (n > max) {
        BAD(key, "integer_above_max_value",
            "Invalid '%s': integer above maximum value. Expected a value <= %d, but got "
            "%" JSON_INTEGER_FORMAT " instead.",
            key, max, n);
        return -1;
    }
    *out = (int)n;
    return 1;
}

/* Fill 'c' from the JSON body; on error the request has been answered and -1 is returned. */
static int parse_request(struct sim *s, imgq_httpd_request *req, uint64_t start, json_t *root,
                         struct sim_call *c)
{
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        bool known = false;
        for (size_t i = 0; i < sizeof(known_params) / sizeof(known_params[0]); i++)
            known = known || strcmp(key, known_params[i]) == 0;
        if (!known) {
            BAD(key, "unknown_parameter", "Unknown parameter: '%.200s'.", key);
            return -1;
        }
    }

    const char *prompt = NULL, *model = NULL, *size = NULL, *quality = NULL, *format = NULL;
    const char *background = NULL, *response_format = NULL;
    int rc = opt_string(s, req, start, root, "prompt", &prompt);
    if (rc < 0)
        return -1;
    if (rc == 0) {
        BAD("prompt", "missing_required_parameter", "Missing required parameter: 'prompt'.");
        return -1;
    }
    if (!*prompt) {
        BAD("prompt", "empty_string",
            "Invalid 'prompt': empty string. Expected a string with minimum length 1, but got an "
            "empty string instead.");
        return -1;
    }
    if ((rc = opt_string(s, req, start, root, "model", &model)) < 0)
        return -1;
    if (rc == 0) {
        BAD("model", "missing_required_parameter",
            "Missing required parameter: 'model' (imgq-sim has no default model).");
        return -1;
    }
    const struct imgq_model *m = imgq_catalog_model(s->catalog, model);
    if (!m || strcmp(m->api, "openai-images") != 0) {
        unknown_model(s, req, start, model);
        return -1;
    }
    c->model = m;
    c->tokens_billed = m->billing == IMGQ_BILL_TOKENS;
    size_t chars = utf8_chars(prompt);
    if (m->max_prompt_chars > 0 && chars > (size_t)m->max_prompt_chars) {
        BAD("prompt", "string_above_max_length",
            "Invalid 'prompt': string too long. Expected a string with maximum length %d, but "
            "got a string with length %zu instead.",
            m->max_prompt_chars, chars);
        return -1;
    }

    c->n = 1;
    if (opt_int(s, req, start, root, "n", 1, 10, &c->n) < 0)
        return -1;
    if (c->n > m->n_per_call) {
        if (m->n_per_call == 1)
            BAD("n", "invalid_value", "You must provide n=1 for this model.");
        else
            BAD("n", "invalid_value", "Invalid 'n': this model returns at most %d images per call.",
                m->n_per_call);
        return -1;
    }

    if (opt_string(s, req, start, root, "size", &size) < 0)
        return -1;
    if (!size)
        size = c->tokens_billed ? "auto" : "1024x1024";
    bool size_ok = imgq_model_allows_size(m, size) || (c->tokens_billed && !strcmp(size, "auto"));
    if (!size_ok || imgq_size_parse(strcmp(size, "auto") ? size : "1024x1024", &c->w, &c->h)) {
        const char *v2[64];
        size_t nv = 0;
        for (size_t i = 0; m->sizes && m->sizes[i] && nv < 63; i++)
            v2[nv++] = m->sizes[i];
        if (c->tokens_billed)
            v2[nv++] = "auto";
        reply_invalid_value(s, req, start, "size", size, v2, nv);
        return -1;
    }
    snprintf(c->size, sizeof(c->size), "%dx%d", c->w, c->h);

    if (opt_string(s, req, start, root, "quality", &quality) < 0)
        return -1;
    if (!quality)
        quality = c->tokens_billed ? "auto" : "standard";
    if (!imgq_model_allows_quality(m, quality)) {
        reply_invalid_value(s, req, start, "quality", quality, (const char *const *)m->qualities,
                            count_nul_terminated(m->qualities));
        return -1;
    }
    snprintf(c->quality, sizeof(c->quality), "%s",
             strcmp(quality, "auto") == 0 ? s->cfg.auto_quality : quality);

    if (opt_string(s, req, start, root, "output_format", &format) < 0)
        return -1;
    static const char *const formats[] = {"png", "jpeg", "webp"};
    if (!format || strcmp(format, "png") == 0) {
        c->format = PICTURE_PNG;
    } else if (strcmp(format, "webp") == 0 && c->tokens_billed) {
        c->format = PICTURE_WEBP;
    } else if (strcmp(format, "jpeg") == 0 && c->tokens_billed) {
        BAD("output_format", "unsupported_value",
            "imgq-sim cannot encode JPEG; ask for output_format 'png' or 'webp'.");
        return -1;
    } else {
        reply_invalid_value(s, req, start, "output_format", format, formats,
                            c->tokens_billed ? 3 : 1);
        return -1;
    }
    c->compression = 100;
    if (opt_int(s, req, start, root, "output_compression", 0, 100, &c->compression) < 0)
        return -1;

    if (opt_string(s, req, start, root, "background", &background) < 0)
        return -1;
    static const char *const backgrounds[] = {"transparent", "opaque", "auto"};
    if (background && strcmp(background, "transparent") && strcmp(background, "opaque") &&
        strcmp(background, "auto")) {
        reply_invalid_value(s, req, start, "background", background, backgrounds, 3);
        return -1;
    }
    snprintf(c->background, sizeof(c->background), "%s",
             background && !strcmp(background, "transparent") ? "transparent" : "opaque");

    if (opt_string(s, req, start, root, "response_format", &response_format) < 0)
        return -1;
    if (response_format && strcmp(response_format, "b64_json") != 0) {
        BAD("response_format", "unsupported_value",
            "imgq-sim returns images as b64_json only (response_format '%.100s').",
            response_format);
        return -1;
    }
    json_t *stream = json_object_get(root, "stream");
    if (stream && json_is_true(stream)) {
        BAD("stream", "unsupported_value", "imgq-sim does not simulate streaming (stream=true).");
        return -1;
    }

    c->prompt = imgq_xstrdup(prompt);
    c->prompt_hash = fnv1a(prompt);
    c->input_tokens = (int64_t)((chars + 3) / 4);
    if (c->input_tokens < 1)
        c->input_tokens = 1;
    return 0;
}

/* ---- Outcome -------------------------------------------------------------------------------- */

struct triggers {
    enum sim_outcome forced; /* SIM_OK = none */
    bool no_usage;
    int64_t latency_ms; /* -1 = configured */
};

/* Scan the prompt for [sim:...] tags, in order; the first failure tag wins. */
static void scan_triggers(struct sim *s, const char *prompt, struct triggers *t)
{
    t->forced = SIM_OK;
    t->no_usage = false;
    t->latency_ms = -1;
    for (const char *p = strstr(prompt, "[sim:"); p; p = strstr(p + 1, "[sim:")) {
        const char *tag = p + 5;
        const char *end = strchr(tag, ']');
        if (!end || end - tag > 200)
            continue;
        char buf[208];
        memcpy(buf, tag, (size_t)(end - tag));
        buf[end - tag] = '\0';
        enum sim_outcome o = SIM_OK;
        if (strcmp(buf, "429") == 0) {
            o = SIM_RATE_LIMITED;
        } else if (strcmp(buf, "500") == 0) {
            o = SIM_SERVER_ERROR;
        } else if (strcmp(buf, "moderation") == 0) {
            o = SIM_MODERATION;
        } else if (strcmp(buf, "no-usage") == 0) {
            t->no_usage = true;
        } else if (strncmp(buf, "fail-once:", 10) == 0) {
            if (!sim_seen_once(s, buf + 10))
                o = SIM_SERVER_ERROR;
        } else if (strncmp(buf, "latency:", 8) == 0) {
            char *e;
            long long ms = strtoll(buf + 8, &e, 10);
            if (!*e && ms >= 0 && ms <= 86400000)
                t->latency_ms = ms;
        }
        if (t->forced == SIM_OK && o != SIM_OK)
            t->forced = o;
    }
}

/* ---- Replies -------------------------------------------------------------------------------- */

static void call_free(uv_handle_t *h)
{
    struct sim_call *c = h->data;
    free(c->prompt);
    free(c);
}

static void call_unlink(struct sim_call *c)
{
    struct sim *s = c->sim;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->in_flight--;
}

static void reply_success(struct sim_call *c)
{
    struct sim *s = c->sim;
    struct buf b = {0};
    bool usage = c->outcome == SIM_OK;
    bool alpha = strcmp(c->background, "transparent") == 0;

    buf_printf(&b, "{\"created\":%lld", (long long)time(NULL));
    if (c->tokens_billed)
        buf_printf(&b,
                   ",\"background\":\"%s\",\"output_format\":\"%s\",\"quality\":\"%s\","
                   "\"size\":\"%s\"",
                   c->background, c->format == PICTURE_WEBP ? "webp" : "png", c->quality, c->size);
    buf_add(&b, ",\"data\":[", 9);
    for (int i = 0; i < c->n; i++) {
        size_t len;
        int err = 0;
        uint32_t variant = (c->prompt_hash + (uint32_t)i) % NVARIANTS;
        const char *b64 = picture_b64(s->pictures, c->w, c->h, variant, c->format, c->compression,
                                      alpha, &len, &err);
        if (!b64) {
            free(b.p);
            reply_error(s, c->req, SIM_SERVER_ERROR, 500, c->start_ms, NULL, NULL, "server_error",
                        "imgq-sim could not encode a %s picture: %s", c->size, imgq_strerror(err));
            return;
        }
        buf_add(&b, i ? ",{\"b64_json\":\"" : "{\"b64_json\":\"", i ? 14 : 13);
        buf_add(&b, b64, len);
        buf_add(&b, "\"", 1);
        if (!c->tokens_billed) { /* DALL-E 3 rewrites prompts and says so */
            char *rp = sim_json_dumps(json_string(c->prompt), NULL);
            buf_printf(&b, ",\"revised_prompt\":%s", rp);
            free(rp);
        }
        buf_add(&b, "}", 1);
    }
    buf_add(&b, "]", 1);
    if (c->tokens_billed && usage)
        buf_printf(&b,
                   ",\"usage\":{\"input_tokens\":%" PRId64 ",\"input_tokens_details\":"
                   "{\"text_tokens\":%" PRId64 ",\"image_tokens\":0},\"output_tokens\":%" PRId64
                   ",\"total_tokens\":%" PRId64
                   ",\"output_tokens_details\":{\"image_tokens\":%" PRId64 ",\"text_tokens\":0}}",
                   c->input_tokens, c->input_tokens, c->output_tokens,
                   c->input_tokens + c->output_tokens, c->output_tokens);
    buf_add(&b, "}", 1);

    s->images += (uint64_t)c->n;
    s->output_tokens += (uint64_t)c->output_tokens;
    struct ratelimit rl;
    ratelimit_headers(s, &rl, false);
    sim_reply(s, c->req, SIM_EP_GENERATIONS, c->outcome, 200, rl.h, rl.n, b.p, b.len, c->start_ms);
}

static void reply_moderation(struct sim_call *c)
{
    struct sim *s = c->sim;
    char *msg = imgq_xasprintf("Your request was rejected by the safety system. If you believe "
                               "this is an error, contact us at help.openai.com and include the "
                               "request ID req_sim%016" PRIx64 ". safety_violations=[sexual].",
                               s->seq + 1); /* the id sim_reply gives this answer */
    json_t *err =
        json_pack("{s:s, s:s, s:n, s:s, s:{s:s, s:[s]}}", "message", msg, "type",
                  "image_generation_user_error", "param", "code", "moderation_blocked",
                  "moderation_details", "moderation_stage", "output", "categories", "sexual");
    free(msg);
    size_t len;
    char *body = sim_json_dumps(json_pack("{s:o}", "error", err), &len);
    sim_reply(s, c->req, SIM_EP_GENERATIONS, SIM_MODERATION, 400, NULL, 0, body, len, c->start_ms);
}

static void call_finish(struct sim_call *c)
{
    struct sim *s = c->sim;
    call_unlink(c);
    if (imgq_httpd_request_aborted(c->req)) {
        imgq_httpd_respond(c->req, 499, NULL, 0, NULL, 0); /* discarded: frees the request */
    } else if (c->outcome == SIM_SERVER_ERROR) {
        reply_error(s, c->req, SIM_SERVER_ERROR, 500, c->start_ms, NULL, NULL, "server_error",
                    "The server had an error while processing your request. Sorry about that!");
    } else if (c->outcome == SIM_MODERATION) {
        reply_moderation(c);
    } else {
        reply_success(c);
    }
    c->req = NULL;
    uv_close((uv_handle_t *)&c->timer, call_free);
}

static void on_latency(uv_timer_t *t)
{
    call_finish(t->data);
}

void sim_openai_abort_all(struct sim *s)
{
    while (s->calls) {
        struct sim_call *c = s->calls;
        uv_timer_stop(&c->timer);
        call_finish(c);
    }
}

/* ---- Entry ---------------------------------------------------------------------------------- */

static bool auth_ok(struct sim *s, imgq_httpd_request *req, uint64_t start)
{
    const char *auth = imgq_httpd_request_header(req, "Authorization");
    if (!auth || !*auth) {
        reply_error(
            s, req, SIM_UNAUTHORIZED, 401, start, NULL, NULL, "invalid_request_error",
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).");
        return false;
    }
    const char *key = strncasecmp(auth, "Bearer ", 7) == 0 ? auth + 7 : NULL;
    if (!key || strncmp(key, "sk-", 3) != 0 || strlen(key) < 4) {
        size_t n = key ? strlen(key) : 0;
        reply_error(s, req, SIM_UNAUTHORIZED, 401, start, NULL, "invalid_api_key",
                    "invalid_request_error",
                    "Incorrect API key provided: %.3s***%s. imgq-sim accepts any 'Bearer sk-...' "
                    "key.",
                    key ? key : "", n > 7 ? key + n - 4 : "");
        return false;
    }
    return true;
}

void sim_openai_generations(struct sim *s, imgq_httpd_request *req)
{
    uint64_t start = sim_now_ms(s);
    if (!auth_ok(s, req, start))
        return;

    size_t len;
    const char *body = imgq_httpd_request_body(req, &len);
    json_error_t jerr;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        reply_error(s, req, SIM_INVALID_REQUEST, 400, start, NULL, NULL, "invalid_request_error",
                    "We could not parse the JSON body of your request. (HINT: This likely means "
                    "you aren't using your HTTP library correctly. The OpenAI API expects a JSON "
                    "payload, but what was sent was not valid JSON.)");
        return;
    }
    struct sim_call *c = imgq_xcalloc(1, sizeof(*c));
    c->sim = s;
    c->start_ms = start;
    int rc = parse_request(s, req, start, root, c);
    json_decref(root);
    if (rc) {
        free(c->prompt);
        free(c);
        return;
    }

    struct triggers t;
    scan_triggers(s, c->prompt, &t);
    bool over_rpm = window_count(s);
    double u = sim_random_unit(s), u2 = sim_random_unit(s);
    enum sim_outcome o = t.forced;
    if (o == SIM_OK) {
        if (over_rpm || u < s->cfg.fail_429)
            o = SIM_RATE_LIMITED;
        else if (u < s->cfg.fail_429 + s->cfg.fail_500)
            o = SIM_SERVER_ERROR;
        else if (u < s->cfg.fail_429 + s->cfg.fail_500 + s->cfg.fail_moderation)
            o = SIM_MODERATION;
        else if (t.no_usage || u2 < s->cfg.no_usage)
            o = SIM_OK_NO_USAGE;
    }

    if (o == SIM_RATE_LIMITED) {
        struct ratelimit rl;
        ratelimit_headers(s, &rl, true);
        char *msg = imgq_xasprintf(
            "Rate limit reached for %s in organization org-imgqsim on images per minute (IPM): "
            "Limit %" PRIu64 ", Used %" PRIu64 ". Please try again in %us.",
            c->model->name, s->cfg.rpm ? (uint64_t)s->cfg.rpm : (uint64_t)5000, s->window_requests,
            s->cfg.retry_after_s);
        char *err = sim_error_body(msg, "requests", NULL, "rate_limit_exceeded", &len);
        free(msg);
        sim_reply(s, req, SIM_EP_GENERATIONS, SIM_RATE_LIMITED, 429, rl.h, rl.n, err, len, start);
        free(c->prompt);
        free(c);
        return;
    }

    if (c->tokens_billed && (o == SIM_OK || o == SIM_OK_NO_USAGE)) {
        int64_t per_image;
        if (imgq_model_output_tokens(c->model, c->quality, c->w, c->h, &per_image) != 0) {
            reply_error(s, req, SIM_SERVER_ERROR, 500, start, NULL, NULL, "server_error",
                        "imgq-sim: the catalog has no output-token row for %s at %s quality %s",
                        c->model->name, c->size, c->quality);
            free(c->prompt);
            free(c);
            return;
        }
        c->output_tokens = per_image * c->n;
    }

    c->outcome = o;
    c->req = req;
    uint64_t latency = s->cfg.latency_ms;
    if (s->cfg.latency_jitter_ms)
        latency += sim_random(s) % (s->cfg.latency_jitter_ms + 1);
    if (t.latency_ms >= 0)
        latency = (uint64_t)t.latency_ms;
    c->next = s->calls;
    if (c->next)
        c->next->prev = c;
    s->calls = c;
    if (++s->in_flight > s->max_in_flight)
        s->max_in_flight = s->in_flight;
    uv_timer_init(s->loop, &c->timer);
    c->timer.data = c;
    uv_timer_start(&c->timer, on_latency, latency, 0);
}
