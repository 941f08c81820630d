/*
 * openai.c - POST /v1/images/generations and POST /v1/images/edits as the OpenAI Images API
 * answers them.
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
 *
 * Edits (multipart/form-data, parsed here: no library for it) take the same plain fields as
 * generations minus moderation and style, plus input_fidelity (high|low, refused for the mini
 * model) and the files: 1 to 16 "image[]" (or "image") parts, each PNG, JPEG or WebP by its
 * magic bytes and under 50 MB, and an optional "mask": a PNG under 4 MB that decodes and has
 * the dimensions of the first image.  Only GPT image (token-billed) models edit.  Usage:
 * input image tokens = the model's catalog ref_image_tokens per reference image (the rule the
 * submit-time estimate uses; the mask and input_fidelity add none), text tokens as for
 * generations, output tokens from the table x n.  Edits have their own --rpm window and their
 * own /sim/stats counters ("edits").  The whole request must fit --max-body-bytes (64 MiB by
 * default), below the real API's 16 x 50 MB.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "imgq/alloc.h"
#include "imgq/image.h"
#include "sim.h"

struct openai_call {
    struct sim_call base; /* first: the held generation (common.c) */
    enum sim_endpoint ep; /* SIM_EP_GENERATIONS or SIM_EP_EDITS */
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
    int64_t input_tokens; /* text */
    int64_t image_tokens; /* input image tokens: the references of an edit */
    int64_t refs;         /* reference images of an edit, and their bytes */
    uint64_t ref_bytes;
    int64_t output_tokens; /* all n images */
};

/*
 * The endpoint whose request is being validated: error replies are counted under it.  Set on
 * entry of each handler and when a held call is answered; everything runs on the one loop
 * thread and validation is synchronous, so it cannot change under a reply.
 */
static enum sim_endpoint answering = SIM_EP_GENERATIONS;

/* ---- Rate-limit headers --------------------------------------------------------------------- */

#define TOKENS_PER_MINUTE 4000000 /* advertised only */

struct ratelimit {
    char limit[24], remaining[24], reset[24], tlimit[24], tremaining[24], treset[24];
    char retry[64], retry_ms[24];
    struct imgq_httpd_header h[8];
    size_t n;
};

/* Count this request in the one-minute window; true if --rpm is exceeded. */
static void ratelimit_headers(struct sim *s, struct ratelimit *r, bool limited,
                              enum sim_endpoint ep)
{
    uint64_t limit = s->cfg.rpm ? s->cfg.rpm : 5000;
    const struct sim_window *w = &s->window[ep];
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
        sim_retry_after(s, r->retry, sizeof(r->retry));
        snprintf(r->retry_ms, sizeof(r->retry_ms), "%" PRIu64,
                 (uint64_t)s->cfg.retry_after_s * 1000);
        r->h[r->n++] = (struct imgq_httpd_header){"retry-after", r->retry};
        if (!s->cfg.retry_after_header)
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
    sim_reply(s, req, answering, outcome, status, NULL, 0, body, len, start);
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

static const char *const edit_params[] = {"prompt",
                                          "model",
                                          "n",
                                          "size",
                                          "quality",
                                          "output_format",
                                          "output_compression",
                                          "background",
                                          "user",
                                          "stream",
                                          "input_fidelity",
                                          "response_format",
                                          "partial_images"};

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

static void unknown_model(struct sim *s, imgq_httpd_request *req, uint64_t start, const char *name,
                          bool gpt_only)
{
    const char *names[64];
    size_t n = 0;
    const struct imgq_model *m;
    for (size_t i = 0; n < 64 && (m = imgq_catalog_model_at(s->catalog, i)); i++)
        if (strcmp(m->api, "openai-images") == 0 && (!gpt_only || m->billing == IMGQ_BILL_TOKENS))
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

/* Fill 'c' from the JSON body (for an edit: its plain form fields, typed as JSON); on error
 * the request has been answered and -1 is returned. */
static int parse_request(struct sim *s, imgq_httpd_request *req, uint64_t start, json_t *root,
                         struct openai_call *c, bool edits)
{
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        bool known = false;
        const char *const *names = edits ? edit_params : known_params;
        size_t nnames = edits ? sizeof(edit_params) / sizeof(edit_params[0])
                              : sizeof(known_params) / sizeof(known_params[0]);
        for (size_t i = 0; i < nnames; i++)
            known = known || strcmp(key, names[i]) == 0;
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
    if (!m || strcmp(m->api, "openai-images") != 0 ||
        (edits && m->billing != IMGQ_BILL_TOKENS)) { /* edits: GPT image models only */
        unknown_model(s, req, start, model, edits);
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

/* The generation on the simulator's bill (bill.c). */
static void call_bill(struct openai_call *c, bool answered)
{
    enum sim_bad_usage bad = c->base.bad_usage;
    struct sim_bill_entry e = {
        .ep = c->ep,
        .model = c->model->name,
        .quality = c->tokens_billed ? c->quality : NULL,
        .width = c->w,
        .height = c->h,
        .n = c->n,
        .images = c->n,
        .usage = !c->tokens_billed || c->base.outcome != SIM_OK ? SIM_BILL_MISSING
                 : bad != SIM_USAGE_GOOD                        ? SIM_BILL_UNUSABLE
                                                                : SIM_BILL_REPORTED,
        .text_in = c->input_tokens,
        .image_in = c->image_tokens,
        .image_out = c->output_tokens,
        .prompt_bytes = strlen(c->prompt),
        .references = (int)c->refs,
        .answered = answered,
        .prompt = c->prompt,
    };
    sim_bill_record(c->base.sim, &e);
}

static void bill_abandoned(struct sim_call *base)
{
    call_bill((struct openai_call *)base, false);
}

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
    enum sim_bad_usage bad = c->base.bad_usage;
    if (c->tokens_billed && usage && bad == SIM_USAGE_EMPTY) {
        sim_buf_printf(&b, ",\"usage\":{}");
    } else if (c->tokens_billed && usage) {
        char t[6][32];
        sim_buf_printf(
            &b,
            ",\"usage\":{\"input_tokens\":%s,\"input_tokens_details\":{\"text_tokens\":%s,"
            "\"image_tokens\":%s},\"output_tokens\":%s,\"total_tokens\":%s,"
            "\"output_tokens_details\":{\"image_tokens\":%s,\"text_tokens\":0}}",
            sim_usage_text(bad, c->input_tokens + c->image_tokens, t[0], sizeof t[0]),
            sim_usage_text(bad, c->input_tokens, t[1], sizeof t[1]),
            sim_usage_text(bad, c->image_tokens, t[2], sizeof t[2]),
            sim_usage_text(bad, c->output_tokens, t[3], sizeof t[3]),
            sim_usage_text(bad, c->input_tokens + c->image_tokens + c->output_tokens, t[4],
                           sizeof t[4]),
            sim_usage_text(bad, c->output_tokens, t[5], sizeof t[5]));
    }
    sim_buf_add(&b, "}", 1);

    s->images += (uint64_t)c->n;
    s->output_tokens += (uint64_t)c->output_tokens;
    call_bill(c, true);
    struct ratelimit rl;
    ratelimit_headers(s, &rl, false, c->ep);
    sim_reply(s, c->base.req, c->ep, c->base.outcome, 200, rl.h, rl.n, b.p, b.len,
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
    sim_reply(s, c->base.req, c->ep, SIM_MODERATION, 400, NULL, 0, body, len, c->base.start_ms);
}

static void call_answer(struct sim_call *base)
{
    struct openai_call *c = (struct openai_call *)base;
    answering = c->ep;
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

/* A valid request in c (ep set): decide its outcome, answer a 429 at once, else hold it. */
static void start_call(struct sim *s, imgq_httpd_request *req, uint64_t start,
                       struct openai_call *c)
{
    size_t len;
    struct sim_triggers t;
    sim_scan_triggers(s, c->prompt, &t);
    char why[200];
    if (!sim_refs_as_told(&t, c->refs, why, sizeof(why))) {
        BAD("image", "invalid_request",
            "%s (imgq-sim: a reference image is missing from the request).", why);
        call_destroy(&c->base);
        return;
    }
    sim_refs_count(s, c->ep, c->refs, c->ref_bytes);
    enum sim_outcome o = sim_decide_outcome(s, c->ep, &t);
    c->base.bad_usage = t.bad_usage;

    if (o == SIM_RATE_LIMITED) {
        struct ratelimit rl;
        ratelimit_headers(s, &rl, true, c->ep);
        char *msg = imgq_xasprintf(
            "Rate limit reached for %s in organization org-imgqsim on images per minute (IPM): "
            "Limit %" PRIu64 ", Used %" PRIu64 ". Please try again in %us.",
            c->model->name, s->cfg.rpm ? (uint64_t)s->cfg.rpm : (uint64_t)5000,
            s->window[c->ep].requests, s->cfg.retry_after_s);
        char *err = sim_error_body(msg, "requests", NULL, "rate_limit_exceeded", &len);
        free(msg);
        sim_reply(s, req, c->ep, SIM_RATE_LIMITED, 429, rl.h, rl.n, err, len, start);
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
        c->output_tokens = per_image * t.token_pct / 100 * c->n;
    }

    c->prompt_blocked = t.prompt_blocked;
    c->base.sim = s;
    c->base.req = req;
    c->base.start_ms = start;
    c->base.outcome = o;
    c->base.answer = call_answer;
    c->base.destroy = call_destroy;
    c->base.bill_abandoned = bill_abandoned;
    sim_call_hold(s, &c->base, t.latency_ms);
}

void sim_openai_generations(struct sim *s, imgq_httpd_request *req)
{
    uint64_t start = sim_now_ms(s);
    answering = SIM_EP_GENERATIONS;
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
    c->ep = SIM_EP_GENERATIONS;
    int rc = parse_request(s, req, start, root, c, false);
    json_decref(root);
    if (rc) {
        call_destroy(&c->base);
        return;
    }
    start_call(s, req, start, c);
}

/* ---- Edits: multipart/form-data ---------------------------------------------------------------
 */

#define MAX_FORM_PARTS 64
#define MAX_PART_HEADER_BYTES 8192
#define MAX_EDIT_IMAGES 16
#define MAX_IMAGE_BYTES ((size_t)50 * 1000 * 1000) /* "less than 50MB" */
#define MAX_MASK_BYTES ((size_t)4 * 1000 * 1000)   /* "less than 4MB" */

/* One part of a form, pointing into the request body (name and filename are copies). */
struct form_part {
    char *name;
    char *filename; /* NULL: a plain field */
    const unsigned char *data;
    size_t len;
};

struct form {
    struct form_part parts[MAX_FORM_PARTS];
    size_t n;
};

static void form_release(struct form *f)
{
    for (size_t i = 0; i < f->n; i++) {
        free(f->parts[i].name);
        free(f->parts[i].filename);
    }
    f->n = 0;
}

static bool is_token_char(unsigned char c)
{
    return c > 0x20 && c < 0x7f && !strchr("()<>@,;:\\\"/[]?={}", c);
}

/*
 * The value of parameter 'param' in a header value's "; a=b; c=\"d\"" list (after the first
 * ';'), unquoted into out; false if absent or malformed.  Bounded by the NUL of 'v' and by
 * outlen.  Quoted strings may escape with a backslash.
 */
static bool header_param(const char *v, const char *param, char *out, size_t outlen)
{
    size_t plen = strlen(param);
    const char *p = strchr(v, ';');
    while (p) {
        p++;
        while (*p == ' ' || *p == '\t')
            p++;
        const char *name = p;
        while (is_token_char((unsigned char)*p) && *p != '*')
            p++;
        size_t nlen = (size_t)(p - name);
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p != '=') { /* a parameter without a value, or "name*=" (RFC 5987): skip it */
            p = strchr(p, ';');
            continue;
        }
        p++;
        while (*p == ' ' || *p == '\t')
            p++;
        size_t o = 0;
        bool ok = true;
        if (*p == '"') {
            p++;
            while (*p && *p != '"') {
                if (*p == '\\' && p[1])
                    p++;
                if (o + 1 >= outlen)
                    ok = false;
                else
                    out[o++] = *p;
                p++;
            }
            if (*p != '"')
                return false; /* unterminated */
            p++;
        } else { /* unquoted: up to ';' or white space (lenient about tspecials) */
            while (*p && *p != ';' && *p != ' ' && *p != '\t') {
                if (o + 1 >= outlen)
                    ok = false;
                else
                    out[o++] = *p;
                p++;
            }
        }
        out[o] = '\0';
        if (nlen == plen && strncasecmp(name, param, plen) == 0)
            return ok;
        p = strchr(p, ';');
    }
    return false;
}

/*
 * Parse a multipart/form-data body whose delimiter is "--" + boundary: every part with its
 * Content-Disposition name and filename.  Never reads outside [body, body+len).  On error
 * returns false with a reason in why; parts parsed so far stay in f (form_release them).
 */
static bool form_parse(const unsigned char *body, size_t len, const char *boundary, struct form *f,
                       char *why, size_t whylen)
{
    char delim[80];
    size_t dlen = (size_t)snprintf(delim, sizeof(delim), "\r\n--%s", boundary);
    const unsigned char *end = body + len;
    const unsigned char *p;

    /* The first delimiter has no CRLF before it when there is no preamble. */
    if (len >= dlen - 2 && memcmp(body, delim + 2, dlen - 2) == 0) {
        p = body + dlen - 2;
    } else {
        p = memmem(body, len, delim, dlen);
        if (!p) {
            snprintf(why, whylen, "no boundary '%.70s' in the body", boundary);
            return false;
        }
        p += dlen;
    }
    for (;;) {
        /* After a delimiter: "--" closes the body, else optional padding and CRLF. */
        if (end - p >= 2 && p[0] == '-' && p[1] == '-')
            return true;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n') {
            snprintf(why, whylen, "a boundary line is not followed by CRLF");
            return false;
        }
        p += 2;
        if (f->n == MAX_FORM_PARTS) {
            snprintf(why, whylen, "more than %d parts", MAX_FORM_PARTS);
            return false;
        }
        /* Part headers, up to the empty line. */
        size_t room = (size_t)(end - p);
        const unsigned char *hend =
            memmem(p, room < MAX_PART_HEADER_BYTES ? room : MAX_PART_HEADER_BYTES, "\r\n\r\n", 4);
        const unsigned char *data;
        if (room >= 2 && p[0] == '\r' && p[1] == '\n') { /* no headers at all */
            hend = p - 2;
            data = p + 2;
        } else if (!hend) {
            snprintf(why, whylen, "part %zu: headers not terminated by an empty line", f->n);
            return false;
        } else {
            data = hend + 4;
        }
        char *name = NULL, *filename = NULL;
        bool disposition = false;
        for (const unsigned char *line = p; line < hend;) {
            const unsigned char *eol = memmem(line, (size_t)(hend - line) + 2, "\r\n", 2);
            size_t llen = (size_t)(eol - line);
            char h[MAX_PART_HEADER_BYTES + 1];
            memcpy(h, line, llen);
            h[llen] = '\0';
            if (memchr(line, '\0', llen)) {
                llen = 0; /* a NUL in a header: ignore the line */
                h[0] = '\0';
            }
            if (strncasecmp(h, "Content-Disposition:", 20) == 0) {
                char *v = h + 20;
                while (*v == ' ' || *v == '\t')
                    v++;
                char val[1024];
                disposition = strncasecmp(v, "form-data", 9) == 0;
                if (disposition && !name && header_param(v, "name", val, sizeof(val)))
                    name = imgq_xstrdup(val);
                if (disposition && !filename && header_param(v, "filename", val, sizeof(val)))
                    filename = imgq_xstrdup(val);
            }
            line = eol + 2;
        }
        if (!disposition || !name || !*name) {
            snprintf(why, whylen, "part %zu has no Content-Disposition: form-data with a name",
                     f->n);
            free(name);
            free(filename);
            return false;
        }
        const unsigned char *next =
            data <= end ? memmem(data, (size_t)(end - data), delim, dlen) : NULL;
        if (!next) {
            snprintf(why, whylen, "part '%.100s' is not closed by a boundary", name);
            free(name);
            free(filename);
            return false;
        }
        f->parts[f->n++] = (struct form_part){name, filename, data, (size_t)(next - data)};
        p = next + dlen;
    }
}

/* Width and height of a baseline or progressive JPEG from its SOF segment; false if none. */
static bool jpeg_size(const unsigned char *b, size_t len, int *w, int *h)
{
    size_t i = 2; /* after SOI */
    while (i + 4 <= len) {
        if (b[i] != 0xff)
            return false;
        unsigned char m = b[i + 1];
        if (m == 0xff) { /* fill byte */
            i++;
            continue;
        }
        if (m == 0x01 || (m >= 0xd0 && m <= 0xd8)) { /* standalone markers */
            i += 2;
            continue;
        }
        size_t seg = (size_t)b[i + 2] << 8 | b[i + 3];
        if (seg < 2 || i + 2 + seg > len)
            return false;
        if (m >= 0xc0 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc) {
            if (seg < 7)
                return false;
            *h = (int)((size_t)b[i + 5] << 8 | b[i + 6]);
            *w = (int)((size_t)b[i + 7] << 8 | b[i + 8]);
            return *w > 0 && *h > 0;
        }
        if (m == 0xd9 || m == 0xda) /* end of image, start of scan: no SOF before */
            return false;
        i += 2 + seg;
    }
    return false;
}

static bool image_size(const unsigned char *b, size_t len, enum imgq_image_format fmt, int *w,
                       int *h)
{
    if (fmt == IMGQ_IMAGE_JPEG)
        return jpeg_size(b, len, w, h);
    return imgq_image_info(b, len, NULL, w, h, NULL) == 0;
}

static bool is_file_param(const char *name)
{
    return !strcmp(name, "image") || !strcmp(name, "image[]") || !strcmp(name, "mask");
}

/* A plain form field as the JSON value parse_request expects (integers and booleans typed). */
static json_t *field_json(const char *name, const unsigned char *data, size_t len)
{
    char buf[16];
    if ((!strcmp(name, "n") || !strcmp(name, "output_compression") ||
         !strcmp(name, "partial_images")) &&
        len > 0 && len < 10) {
        size_t i = data[0] == '-' ? 1 : 0;
        bool digits = i < len;
        for (size_t k = i; k < len; k++)
            digits = digits && data[k] >= '0' && data[k] <= '9';
        if (digits) {
            memcpy(buf, data, len);
            buf[len] = '\0';
            return json_integer(strtol(buf, NULL, 10));
        }
    }
    if (!strcmp(name, "stream") && len == 4 && !memcmp(data, "true", 4))
        return json_true();
    if (!strcmp(name, "stream") && len == 5 && !memcmp(data, "false", 5))
        return json_false();
    return json_stringn((const char *)data, len); /* NULL if not UTF-8 */
}

void sim_openai_edits(struct sim *s, imgq_httpd_request *req)
{
    uint64_t start = sim_now_ms(s);
    answering = SIM_EP_EDITS;
    if (!auth_ok(s, req, start))
        return;

    const char *ctype = imgq_httpd_request_header(req, "Content-Type");
    char boundary[128];
    if (!ctype || strncasecmp(ctype, "multipart/form-data", 19) != 0 ||
        !header_param(ctype, "boundary", boundary, sizeof(boundary)) || !boundary[0] ||
        strlen(boundary) > 70) {
        BAD(NULL, "invalid_content_type",
            "Invalid Content-Type header (%.100s), expected multipart/form-data with a boundary. "
            "(HINT: If you're using curl, you can pass -F 'image[]=@path/to/image.png'.)",
            ctype ? ctype : "none");
        return;
    }
    size_t len;
    const unsigned char *body = (const unsigned char *)imgq_httpd_request_body(req, &len);
    struct form *f = imgq_xcalloc(1, sizeof(*f));
    struct openai_call *c = NULL;
    json_t *fields = json_object();
    char why[256];
    if (!form_parse(body, len, boundary, f, why, sizeof(why))) {
        BAD(NULL, "invalid_multipart", "Could not parse multipart form: %s.", why);
        goto done;
    }

    /* Plain fields to JSON for parse_request; files counted and checked below. */
    const struct form_part *images[MAX_FORM_PARTS], *mask = NULL;
    size_t nimages = 0;
    for (size_t i = 0; i < f->n; i++) {
        const struct form_part *fp = &f->parts[i];
        if (is_file_param(fp->name) != (fp->filename != NULL)) {
            BAD(fp->name, "invalid_type", "Invalid type for '%.100s': expected %s, but got %s.",
                fp->name, fp->filename ? "a string" : "a file",
                fp->filename ? "a file" : "a string");
            goto done;
        }
        if (!strcmp(fp->name, "mask")) {
            if (mask) {
                BAD("mask", "duplicate_parameter", "Only one 'mask' may be given.");
                goto done;
            }
            mask = fp;
        } else if (fp->filename) {
            images[nimages++] = fp;
        } else {
            if (json_object_get(fields, fp->name)) {
                BAD(fp->name, "duplicate_parameter", "Duplicate parameter: '%.100s'.", fp->name);
                goto done;
            }
            json_t *v = field_json(fp->name, fp->data, fp->len);
            if (!v) {
                BAD(fp->name, "invalid_value", "Invalid '%.100s': not valid UTF-8.", fp->name);
                goto done;
            }
            json_object_set_new(fields, fp->name, v);
        }
    }

    c = imgq_xcalloc(1, sizeof(*c));
    c->ep = SIM_EP_EDITS;
    if (parse_request(s, req, start, fields, c, true) != 0)
        goto done;
    const char *fidelity = json_string_value(json_object_get(fields, "input_fidelity"));
    if (json_object_get(fields, "input_fidelity")) {
        static const char *const fidelities[] = {"high", "low"};
        if (!fidelity || (strcmp(fidelity, "high") && strcmp(fidelity, "low"))) {
            reply_invalid_value(s, req, start, "input_fidelity", fidelity ? fidelity : "?",
                                fidelities, 2);
            goto done;
        }
        if (strstr(c->model->name, "mini")) {
            BAD("input_fidelity", "unsupported_parameter",
                "Unsupported parameter: 'input_fidelity' is not supported with %s.",
                c->model->name);
            goto done;
        }
    }

    if (nimages == 0) {
        BAD("image", "missing_required_parameter", "Missing required parameter: 'image'.");
        goto done;
    }
    if (nimages > MAX_EDIT_IMAGES) {
        BAD("image", "array_above_max_length",
            "Invalid 'image': array too long. Expected an array with maximum length %d, but got "
            "an array with length %zu instead.",
            MAX_EDIT_IMAGES, nimages);
        goto done;
    }
    for (size_t i = 0; i < nimages; i++) {
        const struct form_part *im = images[i];
        enum imgq_image_format fmt = imgq_image_sniff(im->data, im->len);
        if (fmt != IMGQ_IMAGE_PNG && fmt != IMGQ_IMAGE_JPEG && fmt != IMGQ_IMAGE_WEBP) {
            BAD("image", "invalid_image_format",
                "Invalid file '%.100s' (image %zu): unsupported image format. Supported formats "
                "are 'image/jpeg', 'image/png', and 'image/webp'.",
                im->filename, i);
            goto done;
        }
        if (im->len >= MAX_IMAGE_BYTES) {
            BAD("image", "image_too_large",
                "Invalid file '%.100s' (image %zu): %zu bytes; images must be less than 50MB.",
                im->filename, i, im->len);
            goto done;
        }
    }
    if (mask) {
        struct imgq_image pix = {0};
        int iw = 0, ih = 0;
        if (imgq_image_sniff(mask->data, mask->len) != IMGQ_IMAGE_PNG ||
            mask->len >= MAX_MASK_BYTES ||
            imgq_png_decode(mask->data, mask->len, NULL, IMGQ_PIXELS_RGBA8, &pix) != 0) {
            BAD("mask", "invalid_image_format",
                "Invalid file '%.100s': the mask must be a valid PNG file of less than 4MB.",
                mask->filename);
            goto done;
        }
        int mw = pix.width, mh = pix.height;
        imgq_image_release(&pix);
        if (!image_size(images[0]->data, images[0]->len,
                        imgq_image_sniff(images[0]->data, images[0]->len), &iw, &ih)) {
            BAD("image", "invalid_image_format",
                "Invalid file '%.100s': could not read the image's dimensions.",
                images[0]->filename);
            goto done;
        }
        if (mw != iw || mh != ih) {
            BAD("mask", "invalid_mask_size",
                "Invalid mask: the mask (%dx%d) must have the same dimensions as the image "
                "(%dx%d).",
                mw, mh, iw, ih);
            goto done;
        }
    }
    c->image_tokens = (int64_t)nimages * c->model->ref_image_tokens;
    c->refs = (int64_t)nimages;
    for (size_t i = 0; i < nimages; i++)
        c->ref_bytes += images[i]->len;
    start_call(s, req, start, c);
    c = NULL; /* the held call owns it now */

done:
    if (c)
        call_destroy(&c->base);
    json_decref(fields);
    form_release(f);
    free(f);
}
