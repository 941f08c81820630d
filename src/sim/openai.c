/*
 * openai.c - POST /v1/images/generations as the OpenAI Images API answers it.
 *
 * Validation follows the real API's messages ("Invalid value: '1254x836'. Supported values
 * are: ...") so that a client's error classification is exercised for real.  The outcome of a
 * valid request is decided when it arrives (common.c: a prompt trigger ([sim:...]) wins, else
 * the configured rates).  A 429 is answered at once (a rate limiter does not generate);
 * everything else waits out the configured latency (sim_call_hold).  [sim:prompt-blocked] is a
 * moderation_blocked 400 whose moderation_stage is "input" instead of "output".
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

struct openai_call {
    struct sim_call base; /* first: the held generation (common.c) */
    bool prompt_blocked;  /* moderation decided on the prompt: moderation_stage "input" */
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

/* ---- Rate-limit headers --------------------------------------------------------------------- */

#define TOKENS_PER_MINUTE 4000000 /* advertised only */

struct ratelimit {
    char limit[24], remaining[24], reset[24], tlimit[24], tremaining[24], treset[24];
    char retry[24], retry_ms[24];
    struct imgq_httpd_header h[8];
    size_t n;
};

/* Count this request in the one-minute window; true if --rpm is exceeded. */
static void ratelimit_headers(struct sim *s, struct ratelimit *r, bool limited)
{
    uint64_t limit = s->cfg.rpm ? s->cfg.rpm : 5000;
    const struct sim_window *w = &s->window[SIM_EP_GENERATIONS];
    uint64_t used = w->requests;
    uint64_t left = limited || used >= limit ? 0 : limit - used;
    uint64_t reset_ms = 60000 - (sim_now_ms(s) - w->start_ms);
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
static void list_values(struct sim_buf *b, const char *const *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            sim_buf_add(b, n > 2 ? ", " : " ", n > 2 ? 2 : 1);
        if (i > 0 && i == n - 1)
            sim_buf_add(b, "and ", 4);
        sim_buf_printf(b, "'%s'", v[i]);
    }
}

static void reply_invalid_value(struct sim *s, imgq_httpd_request *req, uint64_t start,
                                const char *param, const char *value, const char *const *v,
                                size_t n)
{
    struct sim_buf b = {0};
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
                         struct openai_call *c)
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
    size_t chars = sim_utf8_chars(prompt);
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
    c->prompt_hash = sim_fnv1a(prompt);
    c->input_tokens = sim_text_tokens(chars);
    return 0;
}

/* ---- Replies -------------------------------------------------------------------------------- */

static void reply_success(struct openai_call *c)
{
    struct sim *s = c->base.sim;
    struct sim_buf b = {0};
    bool usage = c->base.outcome == SIM_OK;
    bool alpha = strcmp(c->background, "transparent") == 0;

    sim_buf_printf(&b, "{\"created\":%lld", (long long)time(NULL));
    if (c->tokens_billed)
        sim_buf_printf(&b,
                       ",\"background\":\"%s\",\"output_format\":\"%s\",\"quality\":\"%s\","
                       "\"size\":\"%s\"",
                       c->background, c->format == PICTURE_WEBP ? "webp" : "png", c->quality,
                       c->size);
    sim_buf_add(&b, ",\"data\":[", 9);
    for (int i = 0; i < c->n; i++) {
        size_t len;
        int err = 0;
        uint32_t variant = sim_picture_variant(c->prompt_hash, (uint32_t)i);
        const char *b64 = picture_b64(s->pictures, c->w, c->h, variant, c->format, c->compression,
                                      alpha, &len, &err);
        if (!b64) {
            free(b.p);
            reply_error(s, c->base.req, SIM_SERVER_ERROR, 500, c->base.start_ms, NULL, NULL,
                        "server_error", "imgq-sim could not encode a %s picture: %s", c->size,
                        imgq_strerror(err));
            return;
        }
        sim_buf_add(&b, i ? ",{\"b64_json\":\"" : "{\"b64_json\":\"", i ? 14 : 13);
        sim_buf_add(&b, b64, len);
        sim_buf_add(&b, "\"", 1);
        if (!c->tokens_billed) { /* DALL-E 3 rewrites prompts and says so */
            char *rp = sim_json_dumps(json_string(c->prompt), NULL);
            sim_buf_printf(&b, ",\"revised_prompt\":%s", rp);
            free(rp);
        }
        sim_buf_add(&b, "}", 1);
    }
    sim_buf_add(&b, "]", 1);
    if (c->tokens_billed && usage)
        sim_buf_printf(&b,
                       ",\"usage\":{\"input_tokens\":%" PRId64 ",\"input_tokens_details\":"
                       "{\"text_tokens\":%" PRId64 ",\"image_tokens\":0},\"output_tokens\":%" PRId64
                       ",\"total_tokens\":%" PRId64
                       ",\"output_tokens_details\":{\"image_tokens\":%" PRId64
                       ",\"text_tokens\":0}}",
                       c->input_tokens, c->input_tokens, c->output_tokens,
                       c->input_tokens + c->output_tokens, c->output_tokens);
    sim_buf_add(&b, "}", 1);

    s->images += (uint64_t)c->n;
    s->output_tokens += (uint64_t)c->output_tokens;
    struct ratelimit rl;
    ratelimit_headers(s, &rl, false);
    sim_reply(s, c->base.req, SIM_EP_GENERATIONS, c->base.outcome, 200, rl.h, rl.n, b.p, b.len,
              c->base.start_ms);
}

static void reply_moderation(struct openai_call *c)
{
    struct sim *s = c->base.sim;
    char *msg = imgq_xasprintf("Your request was rejected by the safety system. If you believe "
                               "this is an error, contact us at help.openai.com and include the "
                               "request ID req_sim%016" PRIx64 ". safety_violations=[sexual].",
                               s->seq + 1); /* the id sim_reply gives this answer */
    json_t *err = json_pack("{s:s, s:s, s:n, s:s, s:{s:s, s:[s]}}", "message", msg, "type",
                            "image_generation_user_error", "param", "code", "moderation_blocked",
                            "moderation_details", "moderation_stage",
                            c->prompt_blocked ? "input" : "output", "categories", "sexual");
    free(msg);
    size_t len;
    char *body = sim_json_dumps(json_pack("{s:o}", "error", err), &len);
    sim_reply(s, c->base.req, SIM_EP_GENERATIONS, SIM_MODERATION, 400, NULL, 0, body, len,
              c->base.start_ms);
}

static void call_answer(struct sim_call *base)
{
    struct openai_call *c = (struct openai_call *)base;
    if (base->outcome == SIM_SERVER_ERROR)
        reply_error(base->sim, base->req, SIM_SERVER_ERROR, 500, base->start_ms, NULL, NULL,
                    "server_error",
                    "The server had an error while processing your request. Sorry about that!");
    else if (base->outcome == SIM_MODERATION)
        reply_moderation(c);
    else
        reply_success(c);
}

static void call_destroy(struct sim_call *base)
{
    struct openai_call *c = (struct openai_call *)base;
    free(c->prompt);
    free(c);
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
    struct openai_call *c = imgq_xcalloc(1, sizeof(*c));
    int rc = parse_request(s, req, start, root, c);
    json_decref(root);
    if (rc) {
        call_destroy(&c->base);
        return;
    }

    struct sim_triggers t;
    sim_scan_triggers(s, c->prompt, &t);
    enum sim_outcome o = sim_decide_outcome(s, SIM_EP_GENERATIONS, &t);

    if (o == SIM_RATE_LIMITED) {
        struct ratelimit rl;
        ratelimit_headers(s, &rl, true);
        char *msg = imgq_xasprintf(
            "Rate limit reached for %s in organization org-imgqsim on images per minute (IPM): "
            "Limit %" PRIu64 ", Used %" PRIu64 ". Please try again in %us.",
            c->model->name, s->cfg.rpm ? (uint64_t)s->cfg.rpm : (uint64_t)5000,
            s->window[SIM_EP_GENERATIONS].requests, s->cfg.retry_after_s);
        char *err = sim_error_body(msg, "requests", NULL, "rate_limit_exceeded", &len);
        free(msg);
        sim_reply(s, req, SIM_EP_GENERATIONS, SIM_RATE_LIMITED, 429, rl.h, rl.n, err, len, start);
        call_destroy(&c->base);
        return;
    }

    if (c->tokens_billed && (o == SIM_OK || o == SIM_OK_NO_USAGE)) {
        int64_t per_image;
        if (imgq_model_output_tokens(c->model, c->quality, c->w, c->h, &per_image) != 0) {
            reply_error(s, req, SIM_SERVER_ERROR, 500, start, NULL, NULL, "server_error",
                        "imgq-sim: the catalog has no output-token row for %s at %s quality %s",
                        c->model->name, c->size, c->quality);
            call_destroy(&c->base);
            return;
        }
        c->output_tokens = per_image * c->n;
    }

    c->prompt_blocked = t.prompt_blocked;
    c->base.sim = s;
    c->base.req = req;
    c->base.start_ms = start;
    c->base.outcome = o;
    c->base.answer = call_answer;
    c->base.destroy = call_destroy;
    sim_call_hold(s, &c->base, t.latency_ms);
}
