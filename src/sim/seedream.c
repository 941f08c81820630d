/*
 * seedream.c - POST /api/v3/images/generations as BytePlus ModelArk answers it for the Seedream
 * models (catalog api "seedream").
 *
 * Errors are {"error":{"code","message"[,"param"],"type"}} with ModelArk's codes
 * (InvalidParameter, MissingParameter, AuthenticationError, InvalidEndpointOrModel.NotFound,
 * RateLimitExceeded.EndpointRPMExceeded, InternalServiceError, OutputImageSensitiveContentDetected
 * and, for [sim:prompt-blocked], InputTextSensitiveContentDetected); messages end with the
 * request id as ModelArk's do.  Seedream returns one image per call: there is no `n` (a request
 * with one is a 400).  usage.output_tokens is w*h/256 per image.
 *
 * Choices where the real API is not specified or not simulated:
 *   - any non-empty Bearer key is accepted;
 *   - size must be one of the catalog model's "WxH" sizes ("1K"/"2K"/"4K" are refused);
 *     without size, 2048x2048 if the model lists it, else its first size;
 *   - response_format defaults to b64_json (the real default is url): "url" is a 400, the
 *     simulator serves no image URLs;
 *   - sequential_image_generation may only be "disabled" (group generation is not simulated),
 *     stream may not be true;
 *   - image (references: a string or an array of them, at most the catalog's max_references)
 *     must be data URIs, data:image/<format>;base64,<data>, of a PNG, JPEG or WebP that decodes
 *     whole, at most 10 MB each (the API's limit), else 400 InvalidParameter (param image);
 *     URLs are refused (the simulator fetches nothing).  They are counted in /sim/stats
 *     (requests.seedream.references, reference_bytes) and reported as usage.input_images (the
 *     SDK's field); a prompt with [sim:refs:N] must come with exactly N of them;
 *   - other fields (guidance_scale, optimize_prompt, tools, ...) are ignored;
 *   - seed (-1..2147483647; -1 = random) varies the picture with the prompt; watermark must
 *     be a boolean and changes nothing.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "imgq/alloc.h"
#include "sim.h"

#define SEEDREAM_API "seedream"
#define DEFAULT_SIZE "2048x2048"
#define REF_MAX_BYTES (10u * 1024 * 1024) /* per reference image */

struct seedream_call {
    struct sim_call base; /* first: the held generation (common.c) */
    const struct imgq_model *model;
    bool prompt_blocked; /* moderation decided on the prompt: InputTextSensitiveContentDetected */
    int w, h;
    uint32_t variant;
    int64_t output_tokens;
    int64_t refs;       /* reference images in the request */
    uint64_t ref_bytes; /* their decoded bytes */
    char *prompt;       /* for the bill */
};

/* The generation on the simulator's bill (bill.c): per image, whatever the tokens. */
static void call_bill(struct seedream_call *c, bool answered)
{
    enum sim_bad_usage bad = c->base.bad_usage;
    struct sim_bill_entry e = {
        .ep = SIM_EP_SEEDREAM,
        .model = c->model->name,
        .width = c->w,
        .height = c->h,
        .n = 1,
        .images = 1,
        .usage = c->base.outcome != SIM_OK ? SIM_BILL_MISSING
                 : bad != SIM_USAGE_GOOD   ? SIM_BILL_UNUSABLE
                                           : SIM_BILL_REPORTED,
        .image_out = c->output_tokens,
        .prompt_bytes = c->prompt ? strlen(c->prompt) : 0,
        .references = (int)c->refs,
        .answered = answered,
        .prompt = c->prompt,
    };
    sim_bill_record(c->base.sim, &e);
}

static void bill_abandoned(struct sim_call *base)
{
    call_bill((struct seedream_call *)base, false);
}

/* ---- Errors --------------------------------------------------------------------------------- */

static void reply_ark(struct sim *s, imgq_httpd_request *req, enum sim_outcome outcome, int status,
                      uint64_t start, const struct imgq_httpd_header *extra, size_t nextra,
                      const char *code, const char *param, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 11, 12)));

/* {"error":{"code","message"[,"param"],"type"}}; the message ends with the request id that
 * sim_reply gives this answer.  param NULL leaves it out. */
static void reply_ark(struct sim *s, imgq_httpd_request *req, enum sim_outcome outcome, int status,
                      uint64_t start, const struct imgq_httpd_header *extra, size_t nextra,
                      const char *code, const char *param, const char *type, const char *fmt, ...)
{
    va_list ap;
    char msg[2048];
    size_t len, n;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    n = strlen(msg);
    snprintf(msg + n, sizeof(msg) - n, " Request id: req_sim%016" PRIx64, s->seq + 1);
    json_t *err = json_pack("{s:s, s:s}", "code", code, "message", msg);
    if (err && param)
        json_object_set_new(err, "param", json_string(param));
    if (err)
        json_object_set_new(err, "type", json_string(type));
    char *body = sim_json_dumps(json_pack("{s:o}", "error", err), &len);
    sim_reply(s, req, SIM_EP_SEEDREAM, outcome, status, extra, nextra, body, len, start);
}

#define BAD(code, param, ...)                                                                      \
    reply_ark(s, req, SIM_INVALID_REQUEST, 400, start, NULL, 0, code, param, "BadRequest",         \
              __VA_ARGS__)
#define INVALID(param, ...) BAD("InvalidParameter", param, __VA_ARGS__)

/* ---- Request parsing ------------------------------------------------------------------------ */

/* Optional member of a JSON type: 1 if present, 0 if absent or null, -1 (answered) if of
 * another type. */
static int opt_member(struct sim *s, imgq_httpd_request *req, uint64_t start, json_t *root,
                      const char *key, json_type type, const char *type_name, json_t **out)
{
    json_t *v = json_object_get(root, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (json_typeof(v) != type && !(type == JSON_TRUE && json_is_boolean(v))) {
        INVALID(key, "The parameter `%s` specified in the request is not valid: expected %s.", key,
                type_name);
        return -1;
    }
    *out = v;
    return 1;
}

static void reply_bad_size(struct sim *s, imgq_httpd_request *req, uint64_t start,
                           const struct imgq_model *m, const char *size)
{
    struct sim_buf b = {0};
    for (size_t i = 0; m->sizes && m->sizes[i]; i++)
        sim_buf_printf(&b, "%s%s", i ? ", " : "", m->sizes[i]);
    INVALID("size",
            "The parameter `size` specified in the request is not valid: '%.100s' is not "
            "supported for %s (imgq-sim's catalog lists: %s).",
            size, m->name, b.p ? b.p : "none");
    free(b.p);
}

/* Fill c and *prompt (borrowed from root) from the body; -1 if answered with an error. */
static int parse_request(struct sim *s, imgq_httpd_request *req, uint64_t start, json_t *root,
                         struct seedream_call *c, const char **prompt)
{
    json_t *v;
    int rc = opt_member(s, req, start, root, "model", JSON_STRING, "a string", &v);
    if (rc < 0)
        return -1;
    if (rc == 0 || !json_string_length(v)) {
        BAD("MissingParameter", "model",
            "The request failed because it is missing one or multiple required parameters: "
            "`model`.");
        return -1;
    }
    const char *model = json_string_value(v);
    const struct imgq_model *m = imgq_catalog_model(s->catalog, model);
    if (!m || strcmp(m->api, SEEDREAM_API) != 0) {
        reply_ark(s, req, SIM_NOT_FOUND, 404, start, NULL, 0, "InvalidEndpointOrModel.NotFound",
                  NULL, "NotFound",
                  "The model or endpoint %.200s does not exist or you do not have access to it.",
                  model);
        return -1;
    }
    c->model = m;

    if ((rc = opt_member(s, req, start, root, "prompt", JSON_STRING, "a string", &v)) < 0)
        return -1;
    if (rc == 0 || !json_string_length(v)) {
        BAD("MissingParameter", "prompt",
            "The request failed because it is missing one or multiple required parameters: "
            "`prompt`.");
        return -1;
    }
    *prompt = json_string_value(v);
    size_t chars = sim_utf8_chars(*prompt);
    if (m->max_prompt_chars > 0 && chars > (size_t)m->max_prompt_chars) {
        INVALID("prompt",
                "The parameter `prompt` specified in the request is not valid: it has %zu "
                "characters, more than %s accepts (%d).",
                chars, m->name, m->max_prompt_chars);
        return -1;
    }

    if (json_object_get(root, "n")) {
        INVALID("n",
                "The parameter `n` specified in the request is not valid: %s returns one image "
                "per request (use sequential_image_generation for groups).",
                m->name);
        return -1;
    }

    if (opt_member(s, req, start, root, "size", JSON_STRING, "a string", &v) < 0)
        return -1;
    const char *size = v ? json_string_value(v) : NULL;
    if (!size)
        size = imgq_model_allows_size(m, DEFAULT_SIZE) || !m->sizes || !m->sizes[0] ? DEFAULT_SIZE
                                                                                    : m->sizes[0];
    if (!imgq_model_allows_size(m, size) || imgq_size_parse(size, &c->w, &c->h) != 0) {
        reply_bad_size(s, req, start, m, size);
        return -1;
    }

    if (opt_member(s, req, start, root, "response_format", JSON_STRING, "a string", &v) < 0)
        return -1;
    const char *rf = v ? json_string_value(v) : "b64_json";
    if (strcmp(rf, "url") == 0) {
        INVALID("response_format", "url responses are not simulated: ask for b64_json.");
        return -1;
    }
    if (strcmp(rf, "b64_json") != 0) {
        INVALID("response_format",
                "The parameter `response_format` specified in the request is not valid: "
                "'%.100s' is not one of url, b64_json.",
                rf);
        return -1;
    }

    c->variant = sim_fnv1a(*prompt);
    if (opt_member(s, req, start, root, "seed", JSON_INTEGER, "an integer", &v) < 0)
        return -1;
    if (v && (json_integer_value(v) < -1 || json_integer_value(v) > INT32_MAX)) {
        INVALID("seed",
                "The parameter `seed` specified in the request is not valid: %" JSON_INTEGER_FORMAT
                " is outside [-1, 2147483647].",
                json_integer_value(v));
        return -1;
    }
    if (v && json_integer_value(v) >= 0) { /* lowbias32, as gemini.c mixes its seed */
        uint32_t x = (uint32_t)json_integer_value(v) + 1;
        x = (x ^ (x >> 16)) * 0x7feb352du;
        x = (x ^ (x >> 15)) * 0x846ca68bu;
        c->variant ^= x ^ (x >> 16);
    }
    c->variant = sim_picture_variant(c->variant, 0);

    if (opt_member(s, req, start, root, "watermark", JSON_TRUE, "a boolean", &v) < 0)
        return -1;

    if (opt_member(s, req, start, root, "sequential_image_generation", JSON_STRING, "a string",
                   &v) < 0)
        return -1;
    if (v && strcmp(json_string_value(v), "disabled") != 0) {
        INVALID("sequential_image_generation",
                "The parameter `sequential_image_generation` specified in the request is not "
                "valid: imgq-sim simulates 'disabled' only (got '%.50s').",
                json_string_value(v));
        return -1;
    }

    if (opt_member(s, req, start, root, "stream", JSON_TRUE, "a boolean", &v) < 0)
        return -1;
    if (v && json_is_true(v)) {
        INVALID("stream", "imgq-sim does not simulate streaming (stream=true).");
        return -1;
    }

    json_t *image = json_object_get(root, "image");
    if (image && !json_is_null(image)) {
        size_t refs = json_is_string(image) ? 1 : json_is_array(image) ? json_array_size(image) : 0;
        bool ok = refs > 0;
        size_t i;
        json_t *e;
        if (json_is_array(image))
            json_array_foreach(image, i, e) ok = ok && json_is_string(e) && json_string_length(e);
        if (!ok) {
            INVALID("image", "The parameter `image` specified in the request is not valid: "
                             "expected a URL or data URI, or an array of them.");
            return -1;
        }
        if (m->max_references >= 0 && refs > (size_t)m->max_references) {
            INVALID("image",
                    "The parameter `image` specified in the request is not valid: %zu reference "
                    "images, %s accepts at most %d.",
                    refs, m->name, m->max_references);
            return -1;
        }
        for (size_t k = 0; k < refs; k++) {
            json_t *one = json_is_string(image) ? image : json_array_get(image, k);
            char why[200];
            size_t bytes = 0;
            if (sim_ref_check_uri(json_string_value(one), REF_MAX_BYTES, &bytes, why,
                                  sizeof(why)) != 0) {
                INVALID("image",
                        "The parameter `image` specified in the request is not valid: image %zu: "
                        "%s.",
                        k, why);
                return -1;
            }
            c->ref_bytes += bytes;
        }
        c->refs = (int64_t)refs;
    }
    return 0;
}

/* ---- Replies -------------------------------------------------------------------------------- */

static void reply_success(struct seedream_call *c)
{
    struct sim *s = c->base.sim;
    size_t len;
    int err = 0;
    const char *b64 =
        picture_b64(s->pictures, c->w, c->h, c->variant, PICTURE_PNG, 0, false, &len, &err);
    if (!b64) {
        reply_ark(s, c->base.req, SIM_SERVER_ERROR, 500, c->base.start_ms, NULL, 0,
                  "InternalServiceError", NULL, "InternalServiceError",
                  "imgq-sim could not encode a %dx%d picture: %s", c->w, c->h, imgq_strerror(err));
        return;
    }
    struct sim_buf b = {0};
    char *model = sim_json_dumps(json_string(c->model->name), NULL);
    sim_buf_printf(&b, "{\"model\":%s,\"created\":%lld,\"data\":[{\"b64_json\":\"", model,
                   (long long)time(NULL));
    free(model);
    sim_buf_add(&b, b64, len);
    sim_buf_printf(&b, "\",\"size\":\"%dx%d\"}]", c->w, c->h);
    enum sim_bad_usage bad = c->base.bad_usage;
    if (c->base.outcome == SIM_OK && bad == SIM_USAGE_EMPTY) {
        sim_buf_printf(&b, ",\"usage\":{}");
    } else if (c->base.outcome == SIM_OK) {
        char t[3][32];
        if (c->refs > 0)
            sim_buf_printf(&b, ",\"usage\":{\"input_images\":%" PRId64 ",", c->refs);
        else
            sim_buf_printf(&b, ",\"usage\":{");
        sim_buf_printf(&b, "\"generated_images\":%s,\"output_tokens\":%s,\"total_tokens\":%s}",
                       sim_usage_text(bad, 1, t[0], sizeof t[0]),
                       sim_usage_text(bad, c->output_tokens, t[1], sizeof t[1]),
                       sim_usage_text(bad, c->output_tokens, t[2], sizeof t[2]));
    }
    sim_buf_add(&b, "}", 1);
    s->images++;
    s->output_tokens += (uint64_t)c->output_tokens;
    call_bill(c, true);
    sim_reply(s, c->base.req, SIM_EP_SEEDREAM, c->base.outcome, 200, NULL, 0, b.p, b.len,
              c->base.start_ms);
}

static void call_answer(struct sim_call *base)
{
    struct seedream_call *c = (struct seedream_call *)base;
    struct sim *s = base->sim;
    imgq_httpd_request *req = base->req;
    uint64_t start = base->start_ms;
    if (base->outcome == SIM_SERVER_ERROR)
        reply_ark(s, req, SIM_SERVER_ERROR, 500, start, NULL, 0, "InternalServiceError", NULL,
                  "InternalServiceError",
                  "The service encountered an unexpected internal error. Please retry later.");
    else if (base->outcome == SIM_MODERATION && c->prompt_blocked)
        reply_ark(s, req, SIM_MODERATION, 400, start, NULL, 0, "InputTextSensitiveContentDetected",
                  "", "BadRequest",
                  "The request failed because the input text may contain sensitive "
                  "information.");
    else if (base->outcome == SIM_MODERATION)
        reply_ark(s, req, SIM_MODERATION, 400, start, NULL, 0,
                  "OutputImageSensitiveContentDetected", "", "BadRequest",
                  "The request failed because the output image may contain sensitive "
                  "information.");
    else
        reply_success(c);
}

static void call_destroy(struct sim_call *base)
{
    free(((struct seedream_call *)base)->prompt);
    free(base);
}

static void reply_rate_limited(struct sim *s, imgq_httpd_request *req, uint64_t start,
                               const struct imgq_model *m)
{
    char retry[64];
    sim_retry_after(s, retry, sizeof(retry));
    struct imgq_httpd_header h[] = {{"retry-after", retry}};
    reply_ark(s, req, SIM_RATE_LIMITED, 429, start, h, 1, "RateLimitExceeded.EndpointRPMExceeded",
              NULL, "TooManyRequests",
              "The request has exceeded the rate limit of requests per minute (RPM) of the "
              "endpoint for %s (%u). Please retry after %us.",
              m->name, s->cfg.rpm ? s->cfg.rpm : 5000u, s->cfg.retry_after_s);
}

/* ---- Entry ---------------------------------------------------------------------------------- */

void sim_seedream_generations(struct sim *s, imgq_httpd_request *req)
{
    uint64_t start = sim_now_ms(s);
    const char *auth = imgq_httpd_request_header(req, "Authorization");
    const char *key = auth && strncasecmp(auth, "Bearer ", 7) == 0 ? auth + 7 : NULL;
    while (key && *key == ' ')
        key++;
    if (!key || !*key) {
        reply_ark(s, req, SIM_UNAUTHORIZED, 401, start, NULL, 0, "AuthenticationError", NULL,
                  "Unauthorized",
                  "The API key or AK/SK in the request is missing or invalid. Send "
                  "'Authorization: Bearer <ARK_API_KEY>' (imgq-sim accepts any non-empty key).");
        return;
    }

    size_t len;
    const char *body = imgq_httpd_request_body(req, &len);
    json_error_t jerr;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        INVALID(NULL, "The request body is not a valid JSON object: %s.",
                root ? "not an object" : jerr.text);
        return;
    }
    struct seedream_call *c = imgq_xcalloc(1, sizeof(*c));
    const char *prompt = NULL;
    if (parse_request(s, req, start, root, c, &prompt) != 0) {
        json_decref(root);
        free(c);
        return;
    }
    struct sim_triggers t;
    sim_scan_triggers(s, prompt, &t);
    c->prompt = imgq_xstrdup(prompt);
    json_decref(root);
    char why[200];
    if (!sim_refs_as_told(&t, c->refs, why, sizeof(why))) {
        INVALID("image", "%s (imgq-sim: a reference image is missing from the request).", why);
        call_destroy(&c->base);
        return;
    }
    sim_refs_count(s, SIM_EP_SEEDREAM, c->refs, c->ref_bytes);
    enum sim_outcome o = sim_decide_outcome(s, SIM_EP_SEEDREAM, &t);
    if (o == SIM_RATE_LIMITED) {
        reply_rate_limited(s, req, start, c->model);
        call_destroy(&c->base);
        return;
    }
    c->output_tokens = (int64_t)c->w * c->h / 256;
    c->prompt_blocked = t.prompt_blocked;
    c->base.sim = s;
    c->base.req = req;
    c->base.start_ms = start;
    c->base.outcome = o;
    c->base.bad_usage = t.bad_usage;
    c->base.answer = call_answer;
    c->base.destroy = call_destroy;
    c->base.bill_abandoned = bill_abandoned;
    sim_call_hold(s, &c->base, t.latency_ms);
}
