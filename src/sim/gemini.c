/*
 * gemini.c - POST /v1beta/models/{model}:generateContent as the Gemini API answers it for the
 * image-output models (catalog api "gemini-generate-content"), and Google-shaped errors for
 * everything else under /v1beta/.
 *
 * The wire is proto JSON: fields are lowerCamelCase, and like Google's front end the simulator
 * also accepts their snake_case spelling (generation_config, inline_data, mime_type); null is
 * the default; an unknown field is a 400 "Unknown name".  Errors are
 * {"error":{"code","message","status"[,"details"]}}.  Safety blocks are HTTP 200: a candidate
 * with finishReason IMAGE_SAFETY and no content (moderation), or promptFeedback.blockReason
 * SAFETY and no candidates ([sim:prompt-blocked]).  A 429 carries its retry hint only in the
 * body (RetryInfo.retryDelay, after a QuotaFailure and a Help detail, as Google sends them).
 *
 * Choices where the real API is not specified:
 *   - any non-empty key is accepted (header x-goog-api-key or query key=); none is a 403;
 *   - the output size is the catalog size whose width/height is within 5% of the asked
 *     imageConfig.aspectRatio, among the ratios Google documents (1:1 2:3 3:2 3:4 4:3 4:5 5:4
 *     9:16 16:9 21:9): a documented ratio the catalog has no size for is a 400 too;
 *     imageConfig.imageSize may only be "1K" (the catalog lists 1K sizes);
 *   - the text part "Here is your image" is sent unless responseModalities is given without
 *     TEXT (["IMAGE"] gets the image part alone, as the real API does); responseModalities
 *     without IMAGE, or with AUDIO, is a 400;
 *   - prompt tokens: text parts' characters / 4 rounded up (at least 1) plus the catalog's
 *     ref_image_tokens per inlineData image (any role, any content); output tokens from the
 *     catalog's table for the size; blocked answers report the prompt tokens only;
 *   - inlineData images must be what their mimeType says and decode whole (PNG, JPEG or
 *     WebP, at most 20 MB, the API's inline request limit), else 400 INVALID_ARGUMENT "Unable
 *     to process input image"; they are counted in /sim/stats (requests.gemini.references,
 *     reference_bytes), and a prompt with [sim:refs:N] must come with exactly N of them (a
 *     test's way of making sure no reference was dropped); more than the catalog's
 *     max_references is a 400; fileData parts are refused (the simulator fetches nothing);
 *   - seed varies the picture (with the prompt); other generationConfig fields are accepted
 *     and ignored.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "imgq/alloc.h"
#include "sim.h"

#define GEMINI_API "gemini-generate-content"
#define RATIO_TOLERANCE_PPM 50000 /* 5%: how far a catalog size's w/h may be from the ratio */
#define INLINE_MAX_BYTES (20u * 1024 * 1024) /* the API's limit on a request's inline data */

struct gemini_call {
    struct sim_call base; /* first: the held generation (common.c) */
    const struct imgq_model *model;
    int w, h;
    bool text_part;      /* answer with the "Here is your image" text part too */
    bool prompt_blocked; /* moderation decided on the prompt: promptFeedback, no candidates */
    uint32_t variant;
    int64_t text_tokens, image_tokens; /* prompt */
    int64_t output_tokens;
    int64_t refs;
    char *prompt; /* the text parts (the bill) */
};

/* ---- Errors --------------------------------------------------------------------------------- */

static void reply_google(struct sim *s, imgq_httpd_request *req, enum sim_outcome outcome, int code,
                         const char *status, json_t *details, uint64_t start, const char *fmt, ...)
    __attribute__((format(printf, 8, 9)));

/* {"error":{"code","message","status"[,"details"]}}; takes details (may be NULL). */
static void reply_google(struct sim *s, imgq_httpd_request *req, enum sim_outcome outcome, int code,
                         const char *status, json_t *details, uint64_t start, const char *fmt, ...)
{
    va_list ap;
    char msg[2048];
    size_t len;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_t *err = json_pack("{s:i, s:s, s:s}", "code", code, "message", msg, "status", status);
    if (err && details)
        json_object_set_new(err, "details", details);
    else
        json_decref(details);
    char *body = sim_json_dumps(json_pack("{s:o}", "error", err), &len);
    sim_reply(s, req, SIM_EP_GEMINI, outcome, code, NULL, 0, body, len, start);
}

#define BAD(...)                                                                                   \
    reply_google(s, req, SIM_INVALID_REQUEST, 400, "INVALID_ARGUMENT", NULL, start, __VA_ARGS__)

/* "Invalid value at 'generation_config.seed' (TYPE_INT32), "x"" as Google words it. */
static void bad_value(struct sim *s, imgq_httpd_request *req, uint64_t start, const char *where,
                      const char *type, json_t *v)
{
    char *text = sim_json_dumps(json_incref(v), NULL);
    BAD("Invalid value at '%s' (%s), %.200s", where, type, text);
    free(text);
}

static void not_found_model(struct sim *s, imgq_httpd_request *req, uint64_t start,
                            const char *model, const char *rpc)
{
    reply_google(s, req, SIM_NOT_FOUND, 404, "NOT_FOUND", NULL, start,
                 "models/%.200s is not found for API version v1beta, or is not supported for "
                 "%.100s. Call ListModels to see the list of available models and their "
                 "supported methods.",
                 model, rpc);
}

/* ---- Proto JSON ----------------------------------------------------------------------------- */

/* Member 'camel' of obj, or its snake_case spelling; NULL if absent or null (the default). */
static json_t *member(json_t *obj, const char *camel)
{
    json_t *v = json_object_get(obj, camel);
    if (!v) {
        char snake[64];
        size_t n = 0;
        for (const char *p = camel; *p && n + 3 < sizeof(snake); p++) {
            if (*p >= 'A' && *p <= 'Z') {
                snake[n++] = '_';
                snake[n++] = (char)(*p - 'A' + 'a');
            } else {
                snake[n++] = *p;
            }
        }
        snake[n] = '\0';
        v = json_object_get(obj, snake);
    }
    return json_is_null(v) ? NULL : v;
}

/* The first member name of obj that is none of 'known' (camelCase; snake_case also matches). */
static const char *unknown_member(json_t *obj, const char *const *known, size_t nknown)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        char camel[64];
        size_t n = 0;
        bool upper = false, found = false;
        for (const char *p = key; *p && n + 1 < sizeof(camel); p++) {
            if (*p == '_' && p != key) {
                upper = true;
                continue;
            }
            camel[n++] = upper && *p >= 'a' && *p <= 'z' ? (char)(*p - 'a' + 'A') : *p;
            upper = false;
        }
        camel[n] = '\0';
        for (size_t i = 0; i < nknown && !found; i++)
            found = strcmp(camel, known[i]) == 0;
        if (!found)
            return key;
    }
    return NULL;
}

#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))

static bool reject_unknown(struct sim *s, imgq_httpd_request *req, uint64_t start, json_t *obj,
                           const char *const *known, size_t nknown, const char *where)
{
    const char *bad = unknown_member(obj, known, nknown);
    if (!bad)
        return false;
    if (*where)
        BAD("Invalid JSON payload received. Unknown name \"%.100s\" at '%s': Cannot find field.",
            bad, where);
    else
        BAD("Invalid JSON payload received. Unknown name \"%.100s\": Cannot find field.", bad);
    return true;
}

/* Standard or URL-safe base64, padded or not, not empty. */
static bool base64_ok(const char *p, size_t n)
{
    size_t pad = 0;
    while (n > 0 && p[n - 1] == '=' && pad < 2) {
        n--;
        pad++;
    }
    if (n == 0 || n % 4 == 1 || (pad && (n + pad) % 4 != 0))
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '/' || c == '-' || c == '_'))
            return false;
    }
    return true;
}

/* ---- Request parsing ------------------------------------------------------------------------ */

static const char *const known_request[] = {
    "contents", "generationConfig", "safetySettings", "systemInstruction",
    "tools",    "toolConfig",       "cachedContent",  "model",
    "labels"};
static const char *const known_content[] = {"role", "parts"};
static const char *const known_part[] = {"text",
                                         "inlineData",
                                         "fileData",
                                         "functionCall",
                                         "functionResponse",
                                         "executableCode",
                                         "codeExecutionResult",
                                         "thought",
                                         "thoughtSignature",
                                         "videoMetadata",
                                         "mediaResolution",
                                         "partMetadata"};
static const char *const known_blob[] = {"mimeType", "data", "displayName"};
static const char *const known_config[] = {"responseModalities",
                                           "imageConfig",
                                           "candidateCount",
                                           "seed",
                                           "temperature",
                                           "topP",
                                           "topK",
                                           "maxOutputTokens",
                                           "stopSequences",
                                           "responseMimeType",
                                           "responseSchema",
                                           "responseJsonSchema",
                                           "presencePenalty",
                                           "frequencyPenalty",
                                           "responseLogprobs",
                                           "logprobs",
                                           "thinkingConfig",
                                           "mediaResolution",
                                           "speechConfig",
                                           "enableEnhancedCivicAnswers"};
static const char *const known_image_config[] = {"aspectRatio", "imageSize"};
static const char *const image_mimes[] = {"image/png", "image/jpeg", "image/webp", "image/heic",
                                          "image/heif"};
/* The ratios Google documents for imageConfig.aspectRatio. */
static const char *const documented_ratios[] = {"1:1", "2:3", "3:2",  "3:4",  "4:3",
                                                "4:5", "5:4", "9:16", "16:9", "21:9"};

/* The catalog size of m for a documented ratio "a:b": the one whose w/h is nearest, within
 * RATIO_TOLERANCE_PPM.  False if the ratio is not documented or m has no size for it. */
static bool size_for_ratio(const struct imgq_model *m, const char *ratio, int *w, int *h)
{
    bool documented = false;
    for (size_t i = 0; i < NELEMS(documented_ratios) && !documented; i++)
        documented = strcmp(ratio, documented_ratios[i]) == 0;
    int a, b;
    char tail;
    if (!documented || sscanf(ratio, "%d:%d%c", &a, &b, &tail) != 2 || a <= 0 || b <= 0)
        return false;
    int64_t best = -1;
    for (size_t i = 0; m->sizes && m->sizes[i]; i++) {
        int sw, sh;
        if (imgq_size_parse(m->sizes[i], &sw, &sh) != 0)
            continue;
        /* |sw/sh - a/b| / (a/b) in parts per million */
        int64_t diff = (int64_t)sw * b - (int64_t)sh * a;
        if (diff < 0)
            diff = -diff;
        int64_t ppm = diff * 1000000 / ((int64_t)sh * a);
        if (ppm <= RATIO_TOLERANCE_PPM && (best < 0 || ppm < best)) {
            best = ppm;
            *w = sw;
            *h = sh;
        }
    }
    return best >= 0;
}

static void reply_bad_ratio(struct sim *s, imgq_httpd_request *req, uint64_t start,
                            const struct imgq_model *m, const char *ratio)
{
    struct sim_buf b = {0};
    int w, h;
    for (size_t i = 0; i < NELEMS(documented_ratios); i++)
        if (size_for_ratio(m, documented_ratios[i], &w, &h))
            sim_buf_printf(&b, "%s%s", b.len ? ", " : "", documented_ratios[i]);
    BAD("* GenerateContentRequest.generation_config.image_config.aspect_ratio: unsupported "
        "aspect ratio '%.50s' for models/%s. Supported values are: %s.",
        ratio, m->name, b.p ? b.p : "none");
    free(b.p);
}

/* One part of contents[ci].parts[pi]: appends text to the prompt or counts a reference image.
 * -1 if answered with an error. */
static int parse_part(struct sim *s, imgq_httpd_request *req, uint64_t start, json_t *part,
                      size_t ci, size_t pi, struct sim_buf *prompt, int64_t *refs,
                      uint64_t *ref_bytes)
{
    char where[96];
    snprintf(where, sizeof(where), "contents[%zu].parts[%zu]", ci, pi);
    if (!json_is_object(part)) {
        bad_value(s, req, start, where,
                  "type.googleapis.com/google.ai.generativelanguage.v1beta.Part", part);
        return -1;
    }
    if (reject_unknown(s, req, start, part, known_part, NELEMS(known_part), where))
        return -1;
    static const char *const data_fields[] = {
        "text",           "inlineData",         "fileData", "functionCall", "functionResponse",
        "executableCode", "codeExecutionResult"};
    const char *which = NULL;
    for (size_t i = 0; i < NELEMS(data_fields); i++) {
        if (!member(part, data_fields[i]))
            continue;
        if (which) {
            BAD("Invalid JSON payload received. Oneof field 'data' is already set. Cannot set "
                "'%s' at '%s'.",
                data_fields[i], where);
            return -1;
        }
        which = data_fields[i];
    }
    if (!which) {
        BAD("* GenerateContentRequest.%s.data: required oneof field 'data' must have one "
            "initialized field",
            where);
        return -1;
    }
    if (strcmp(which, "text") == 0) {
        json_t *t = member(part, "text");
        if (!json_is_string(t)) {
            snprintf(where + strlen(where), sizeof(where) - strlen(where), ".text");
            bad_value(s, req, start, where, "TYPE_STRING", t);
            return -1;
        }
        if (prompt->len && json_string_length(t))
            sim_buf_add(prompt, "\n", 1);
        sim_buf_add(prompt, json_string_value(t), json_string_length(t));
        return 0;
    }
    if (strcmp(which, "inlineData") == 0) {
        json_t *blob = member(part, "inlineData");
        snprintf(where + strlen(where), sizeof(where) - strlen(where), ".inline_data");
        if (!json_is_object(blob)) {
            bad_value(s, req, start, where,
                      "type.googleapis.com/google.ai.generativelanguage.v1beta.Blob", blob);
            return -1;
        }
        if (reject_unknown(s, req, start, blob, known_blob, NELEMS(known_blob), where))
            return -1;
        json_t *mime = member(blob, "mimeType"), *data = member(blob, "data");
        if (!json_is_string(mime) || !json_string_length(mime)) {
            BAD("* GenerateContentRequest.%s.mime_type: a MIME type is required", where);
            return -1;
        }
        bool image = false;
        for (size_t i = 0; i < NELEMS(image_mimes) && !image; i++)
            image = strcasecmp(json_string_value(mime), image_mimes[i]) == 0;
        if (!image) {
            BAD("Unsupported MIME type: %.100s", json_string_value(mime));
            return -1;
        }
        if (!json_is_string(data) || !json_string_length(data)) {
            BAD("* GenerateContentRequest.%s.data: inline data must not be empty", where);
            return -1;
        }
        if (!base64_ok(json_string_value(data), json_string_length(data))) {
            BAD("Invalid value at '%s.data' (TYPE_BYTES), Base64 decoding failed for \"%.40s\"",
                where, json_string_value(data));
            return -1;
        }
        char why[200];
        size_t bytes = 0;
        if (sim_ref_check_base64(json_string_value(data), json_string_length(data),
                                 json_string_value(mime), INLINE_MAX_BYTES - *ref_bytes, &bytes,
                                 why, sizeof(why)) != 0) {
            BAD("Unable to process input image at %s: %s. Please retry or report in "
                "https://developers.generativeai.google/guide/troubleshooting",
                where, why);
            return -1;
        }
        *ref_bytes += bytes;
        (*refs)++;
        return 0;
    }
    if (strcmp(which, "fileData") == 0)
        BAD("imgq-sim does not fetch fileData (%s); send the image as inlineData.", where);
    else
        BAD("imgq-sim simulates text and inlineData parts only (%s has %s).", where, which);
    return -1;
}

static int parse_contents(struct sim *s, imgq_httpd_request *req, uint64_t start, json_t *root,
                          struct sim_buf *prompt, int64_t *refs, uint64_t *ref_bytes)
{
    json_t *contents = member(root, "contents");
    json_t *one = NULL;
    if (json_is_object(contents)) /* Google takes a lone message for a repeated field */
        contents = one = json_pack("[O]", contents);
    if (contents && !json_is_array(contents)) {
        bad_value(s, req, start, "contents",
                  "type.googleapis.com/google.ai.generativelanguage.v1beta.Content", contents);
        return -1;
    }
    if (!contents || json_array_size(contents) == 0) {
        BAD("* GenerateContentRequest.contents: contents is not specified");
        return -1;
    }
    int rc = 0;
    size_t ci;
    json_t *content;
    json_array_foreach(contents, ci, content)
    {
        char where[48];
        snprintf(where, sizeof(where), "contents[%zu]", ci);
        if (!json_is_object(content)) {
            bad_value(s, req, start, where,
                      "type.googleapis.com/google.ai.generativelanguage.v1beta.Content", content);
            rc = -1;
            break;
        }
        if (reject_unknown(s, req, start, content, known_content, NELEMS(known_content), where)) {
            rc = -1;
            break;
        }
        json_t *role = member(content, "role");
        if (role && (!json_is_string(role) || (strcmp(json_string_value(role), "user") != 0 &&
                                               strcmp(json_string_value(role), "model") != 0))) {
            BAD("Please use a valid role: user, model.");
            rc = -1;
            break;
        }
        json_t *parts = member(content, "parts");
        if (parts && json_is_object(parts)) {
            BAD("Invalid JSON payload received. Expected an array for '%s.parts'.", where);
            rc = -1;
            break;
        }
        if (!json_is_array(parts) || json_array_size(parts) == 0) {
            BAD("* GenerateContentRequest.%s.parts: contents.parts must not be empty.", where);
            rc = -1;
            break;
        }
        size_t pi;
        json_t *part;
        json_array_foreach(parts, pi, part)
        {
            if ((rc = parse_part(s, req, start, part, ci, pi, prompt, refs, ref_bytes)) != 0)
                break;
        }
        if (rc)
            break;
    }
    json_decref(one);
    if (rc == 0 && prompt->len == 0) {
        BAD("* GenerateContentRequest.contents: imgq-sim needs a non-empty text part (the "
            "prompt) in contents[].parts[].");
        rc = -1;
    }
    return rc;
}

/* generationConfig: modalities, candidateCount, seed, imageConfig.  Fills c->w/h, text_part,
 * variant (mixed with the seed).  -1 if answered with an error. */
static int parse_config(struct sim *s, imgq_httpd_request *req, uint64_t start, json_t *root,
                        struct gemini_call *c)
{
    const struct imgq_model *m = c->model;
    const char *ratio = "1:1", *image_size = NULL;
    json_t *gc = member(root, "generationConfig");
    c->text_part = true;
    if (gc && !json_is_object(gc)) {
        bad_value(s, req, start, "generation_config",
                  "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerationConfig", gc);
        return -1;
    }
    if (gc &&
        reject_unknown(s, req, start, gc, known_config, NELEMS(known_config), "generation_config"))
        return -1;

    json_t *mods = member(gc, "responseModalities");
    if (mods && !json_is_array(mods)) {
        bad_value(s, req, start, "generation_config.response_modalities",
                  "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerationConfig."
                  "Modality",
                  mods);
        return -1;
    }
    if (mods && json_array_size(mods) > 0) {
        bool text = false, image = false, other = false;
        size_t i;
        json_t *v;
        json_array_foreach(mods, i, v)
        {
            const char *name = json_string_value(v);
            if (name && strcasecmp(name, "TEXT") == 0) {
                text = true;
            } else if (name && strcasecmp(name, "IMAGE") == 0) {
                image = true;
            } else if (name && (strcasecmp(name, "AUDIO") == 0 ||
                                strcasecmp(name, "MODALITY_UNSPECIFIED") == 0)) {
                other = true;
            } else {
                char where[64];
                snprintf(where, sizeof(where), "generation_config.response_modalities[%zu]", i);
                bad_value(s, req, start, where,
                          "type.googleapis.com/google.ai.generativelanguage.v1beta."
                          "GenerationConfig.Modality",
                          v);
                return -1;
            }
        }
        if (!image || other) {
            BAD("The requested combination of response modalities is not supported by the "
                "model models/%s: it answers IMAGE or TEXT and IMAGE.",
                m->name);
            return -1;
        }
        c->text_part = text;
    }

    json_t *count = member(gc, "candidateCount");
    if (count && (!json_is_integer(count) || json_integer_value(count) < 0 ||
                  json_integer_value(count) > INT32_MAX)) {
        bad_value(s, req, start, "generation_config.candidate_count", "TYPE_INT32", count);
        return -1;
    }
    if (count && json_integer_value(count) > 1) {
        BAD("Multiple candidates is not enabled for models/%s", m->name);
        return -1;
    }

    uint32_t seed_mix = 0;
    json_t *seed = member(gc, "seed");
    if (seed && (!json_is_integer(seed) || json_integer_value(seed) < INT32_MIN ||
                 json_integer_value(seed) > INT32_MAX)) {
        bad_value(s, req, start, "generation_config.seed", "TYPE_INT32", seed);
        return -1;
    }
    if (seed) { /* lowbias32: every bit of the seed reaches the low bits the variant uses */
        seed_mix = (uint32_t)json_integer_value(seed) + 1;
        seed_mix = (seed_mix ^ (seed_mix >> 16)) * 0x7feb352du;
        seed_mix = (seed_mix ^ (seed_mix >> 15)) * 0x846ca68bu;
        seed_mix ^= seed_mix >> 16;
    }

    json_t *ic = member(gc, "imageConfig");
    if (ic && !json_is_object(ic)) {
        bad_value(s, req, start, "generation_config.image_config",
                  "type.googleapis.com/google.ai.generativelanguage.v1beta.ImageConfig", ic);
        return -1;
    }
    if (ic && reject_unknown(s, req, start, ic, known_image_config, NELEMS(known_image_config),
                             "generation_config.image_config"))
        return -1;
    json_t *ar = member(ic, "aspectRatio"), *is = member(ic, "imageSize");
    if (ar && !json_is_string(ar)) {
        bad_value(s, req, start, "generation_config.image_config.aspect_ratio", "TYPE_STRING", ar);
        return -1;
    }
    if (is && !json_is_string(is)) {
        bad_value(s, req, start, "generation_config.image_config.image_size", "TYPE_STRING", is);
        return -1;
    }
    if (ar && json_string_length(ar))
        ratio = json_string_value(ar);
    if (is && json_string_length(is))
        image_size = json_string_value(is);
    if (!size_for_ratio(m, ratio, &c->w, &c->h)) {
        reply_bad_ratio(s, req, start, m, ratio);
        return -1;
    }
    if (image_size && strcmp(image_size, "1K") != 0) {
        BAD("* GenerateContentRequest.generation_config.image_config.image_size: '%.20s' is not "
            "supported for models/%s (imgq-sim's catalog lists its 1K sizes only).",
            image_size, m->name);
        return -1;
    }
    c->variant ^= seed_mix;
    return 0;
}

/* ---- Replies -------------------------------------------------------------------------------- */

/* usageMetadata, its counts spoilt as 'bad' says (a blocked answer's never are). */
static void add_usage(struct sim_buf *b, const struct gemini_call *c, bool candidates,
                      enum sim_bad_usage bad)
{
    if (bad == SIM_USAGE_EMPTY) {
        sim_buf_printf(b, ",\"usageMetadata\":{}");
        return;
    }
    int64_t prompt = c->text_tokens + c->image_tokens;
    int64_t out = candidates ? c->output_tokens : 0;
    char t[32];
    sim_buf_printf(b, ",\"usageMetadata\":{\"promptTokenCount\":%s",
                   sim_usage_text(bad, prompt, t, sizeof t));
    if (candidates)
        sim_buf_printf(b, ",\"candidatesTokenCount\":%s", sim_usage_text(bad, out, t, sizeof t));
    sim_buf_printf(b, ",\"totalTokenCount\":%s", sim_usage_text(bad, prompt + out, t, sizeof t));
    sim_buf_printf(b, ",\"promptTokensDetails\":[{\"modality\":\"TEXT\",\"tokenCount\":%s}",
                   sim_usage_text(bad, c->text_tokens, t, sizeof t));
    if (c->image_tokens)
        sim_buf_printf(b, ",{\"modality\":\"IMAGE\",\"tokenCount\":%s}",
                       sim_usage_text(bad, c->image_tokens, t, sizeof t));
    sim_buf_add(b, "]", 1);
    if (candidates)
        sim_buf_printf(b,
                       ",\"candidatesTokensDetails\":[{\"modality\":\"IMAGE\",\"tokenCount\":%s}]",
                       sim_usage_text(bad, out, t, sizeof t));
    sim_buf_add(b, "}", 1);
}

/* ,"modelVersion":...,"responseId":...} and send; responseId matches the x-request-id. */
static void finish_and_send(struct gemini_call *c, struct sim_buf *b)
{
    struct sim *s = c->base.sim;
    char *model = sim_json_dumps(json_string(c->model->name), NULL);
    sim_buf_printf(b, ",\"modelVersion\":%s,\"responseId\":\"sim%016" PRIx64 "\"}", model,
                   s->seq + 1); /* the id sim_reply gives this answer */
    free(model);
    sim_reply(s, c->base.req, SIM_EP_GEMINI, c->base.outcome, 200, NULL, 0, b->p, b->len,
              c->base.start_ms);
}

static void call_bill(struct gemini_call *c, bool answered);

static void reply_success(struct gemini_call *c)
{
    struct sim *s = c->base.sim;
    size_t len;
    int err = 0;
    const char *b64 =
        picture_b64(s->pictures, c->w, c->h, c->variant, PICTURE_PNG, 0, false, &len, &err);
    if (!b64) {
        reply_google(s, c->base.req, SIM_SERVER_ERROR, 500, "INTERNAL", NULL, c->base.start_ms,
                     "imgq-sim could not encode a %dx%d picture: %s", c->w, c->h,
                     imgq_strerror(err));
        return;
    }
    struct sim_buf b = {0};
    sim_buf_printf(&b, "{\"candidates\":[{\"content\":{\"parts\":[");
    if (c->text_part)
        sim_buf_printf(&b, "{\"text\":\"Here is your image\"},");
    sim_buf_printf(&b, "{\"inlineData\":{\"mimeType\":\"image/png\",\"data\":\"");
    sim_buf_add(&b, b64, len);
    sim_buf_printf(&b, "\"}}],\"role\":\"model\"},\"finishReason\":\"STOP\",\"index\":0}]");
    if (c->base.outcome == SIM_OK)
        add_usage(&b, c, true, c->base.bad_usage);
    s->images++;
    s->output_tokens += (uint64_t)c->output_tokens;
    call_bill(c, true);
    finish_and_send(c, &b);
}

static void reply_blocked(struct gemini_call *c)
{
    struct sim_buf b = {0};
    if (c->prompt_blocked)
        sim_buf_printf(&b, "{\"promptFeedback\":{\"blockReason\":\"SAFETY\",\"safetyRatings\":["
                           "{\"category\":\"HARM_CATEGORY_SEXUALLY_EXPLICIT\",\"probability\":"
                           "\"HIGH\",\"blocked\":true},"
                           "{\"category\":\"HARM_CATEGORY_HATE_SPEECH\",\"probability\":"
                           "\"NEGLIGIBLE\"},"
                           "{\"category\":\"HARM_CATEGORY_HARASSMENT\",\"probability\":"
                           "\"NEGLIGIBLE\"},"
                           "{\"category\":\"HARM_CATEGORY_DANGEROUS_CONTENT\",\"probability\":"
                           "\"NEGLIGIBLE\"}]}");
    else
        sim_buf_printf(&b, "{\"candidates\":[{\"finishReason\":\"IMAGE_SAFETY\",\"index\":0}]");
    add_usage(&b, c, false, SIM_USAGE_GOOD);
    finish_and_send(c, &b);
}

static void call_answer(struct sim_call *base)
{
    struct gemini_call *c = (struct gemini_call *)base;
    if (base->outcome == SIM_SERVER_ERROR)
        reply_google(base->sim, base->req, SIM_SERVER_ERROR, 500, "INTERNAL", NULL, base->start_ms,
                     "An internal error has occurred. Please retry or report in "
                     "https://developers.generativeai.google/guide/troubleshooting");
    else if (base->outcome == SIM_MODERATION)
        reply_blocked(c);
    else
        reply_success(c);
}

static void call_destroy(struct sim_call *base)
{
    free(((struct gemini_call *)base)->prompt);
    free(base);
}

/* The generation on the simulator's bill (bill.c). */
static void call_bill(struct gemini_call *c, bool answered)
{
    enum sim_bad_usage bad = c->base.bad_usage;
    struct sim_bill_entry e = {
        .ep = SIM_EP_GEMINI,
        .model = c->model->name,
        .width = c->w,
        .height = c->h,
        .n = 1,
        .images = 1,
        .usage = c->base.outcome != SIM_OK ? SIM_BILL_MISSING
                 : bad != SIM_USAGE_GOOD   ? SIM_BILL_UNUSABLE
                                           : SIM_BILL_REPORTED,
        .text_in = c->text_tokens,
        .image_in = c->image_tokens,
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
    call_bill((struct gemini_call *)base, false);
}

static void reply_rate_limited(struct sim *s, imgq_httpd_request *req, uint64_t start,
                               const struct imgq_model *m)
{
    uint64_t limit = s->cfg.rpm ? (uint64_t)s->cfg.rpm : (uint64_t)5000;
    char limit_text[24], delay[80];
    snprintf(limit_text, sizeof(limit_text), "%" PRIu64, limit);
    sim_retry_after(s, delay, sizeof(delay) - 1);
    strcat(delay, "s");
    const char *metric = "generativelanguage.googleapis.com/generate_content_paid_tier_requests";
    json_t *details =
        json_pack("[{s:s, s:[{s:s, s:s, s:{s:s, s:s}, s:s}]}, {s:s, s:[{s:s, s:s}]}, {s:s, s:s}]",
                  "@type", "type.googleapis.com/google.rpc.QuotaFailure", "violations",
                  "quotaMetric", metric, "quotaId", "GenerateRequestsPerMinutePerProjectPerModel",
                  "quotaDimensions", "location", "global", "model", m->name, "quotaValue",
                  limit_text, "@type", "type.googleapis.com/google.rpc.Help", "links",
                  "description", "Learn more about Gemini API quotas", "url",
                  "https://ai.google.dev/gemini-api/docs/rate-limits", "@type",
                  "type.googleapis.com/google.rpc.RetryInfo", "retryDelay", delay);
    reply_google(s, req, SIM_RATE_LIMITED, 429, "RESOURCE_EXHAUSTED", details, start,
                 "You exceeded your current quota, please check your plan and billing details. "
                 "For more information on this error, head to: "
                 "https://ai.google.dev/gemini-api/docs/rate-limits.\n* Quota exceeded for "
                 "metric: %s, limit: %s, model: %s\nPlease retry in %s.",
                 metric, limit_text, m->name, delay);
}

/* ---- Entry ---------------------------------------------------------------------------------- */

static bool query_has_key(const char *q)
{
    for (const char *p = q; p && *p;) {
        const char *amp = strchr(p, '&');
        size_t n = amp ? (size_t)(amp - p) : strlen(p);
        if (n > 4 && strncmp(p, "key=", 4) == 0)
            return true;
        p = amp ? amp + 1 : NULL;
    }
    return false;
}

static void generate(struct sim *s, imgq_httpd_request *req, uint64_t start,
                     const struct imgq_model *m)
{
    size_t len;
    const char *body = imgq_httpd_request_body(req, &len);
    json_error_t jerr;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        BAD("Invalid JSON payload received. %s (line %d, column %d).", jerr.text, jerr.line,
            jerr.column);
        return;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        BAD("Invalid JSON payload received. Unknown name \"\": Root element must be a message.");
        return;
    }
    struct gemini_call *c = imgq_xcalloc(1, sizeof(*c));
    struct sim_buf prompt = {0};
    int64_t refs = 0;
    uint64_t ref_bytes = 0;
    c->model = m;
    int rc = reject_unknown(s, req, start, root, known_request, NELEMS(known_request), "") ? -1 : 0;
    if (rc == 0)
        rc = parse_contents(s, req, start, root, &prompt, &refs, &ref_bytes);
    if (rc == 0) {
        c->variant = sim_fnv1a(prompt.p);
        rc = parse_config(s, req, start, root, c);
    }
    json_decref(root);
    size_t chars = rc == 0 ? sim_utf8_chars(prompt.p) : 0;
    if (rc == 0 && m->max_prompt_chars > 0 && chars > (size_t)m->max_prompt_chars) {
        BAD("The input has %zu characters of text, more than models/%s accepts (%d).", chars,
            m->name, m->max_prompt_chars);
        rc = -1;
    }
    if (rc) {
        free(prompt.p);
        free(c);
        return;
    }
    c->variant = sim_picture_variant(c->variant, 0);
    c->text_tokens = sim_text_tokens(chars);
    c->image_tokens = refs * m->ref_image_tokens;

    struct sim_triggers t;
    sim_scan_triggers(s, prompt.p, &t);
    c->prompt = prompt.p;
    c->refs = refs;
    char why[200];
    if (!sim_refs_as_told(&t, refs, why, sizeof(why))) {
        BAD("%s (imgq-sim: a reference image is missing from the request).", why);
        call_destroy(&c->base);
        return;
    }
    if (m->max_references >= 0 && refs > m->max_references) {
        BAD("models/%s accepts at most %d input images; the request has %lld.", m->name,
            m->max_references, (long long)refs);
        call_destroy(&c->base);
        return;
    }
    sim_refs_count(s, SIM_EP_GEMINI, refs, ref_bytes);
    enum sim_outcome o = sim_decide_outcome(s, SIM_EP_GEMINI, &t);
    if (o == SIM_RATE_LIMITED) {
        reply_rate_limited(s, req, start, m);
        call_destroy(&c->base);
        return;
    }
    if ((o == SIM_OK || o == SIM_OK_NO_USAGE) &&
        imgq_model_output_tokens(m, NULL, c->w, c->h, &c->output_tokens) != 0) {
        reply_google(s, req, SIM_SERVER_ERROR, 500, "INTERNAL", NULL, start,
                     "imgq-sim: the catalog has no output-token row for %s at %dx%d", m->name, c->w,
                     c->h);
        call_destroy(&c->base);
        return;
    }
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

void sim_gemini_handle(struct sim *s, imgq_httpd_request *req)
{
    uint64_t start = sim_now_ms(s);
    const char *path = imgq_httpd_request_path(req);
    const char *rest = path + strlen("/v1beta/");
    const char *colon = strrchr(rest, ':');
    bool post = strcmp(imgq_httpd_request_method(req), "POST") == 0;

    /* Google's front end answers an unknown path or method with 404. */
    if (!post || strncmp(rest, "models/", 7) != 0 || !colon || colon == rest + 7 ||
        colon - (rest + 7) > 200 || strchr(rest + 7, '/')) {
        reply_google(s, req, SIM_NOT_FOUND, 404, "NOT_FOUND", NULL, start,
                     "The requested URL %.300s was not found on this server (%s).", path,
                     imgq_httpd_request_method(req));
        return;
    }
    const char *key = imgq_httpd_request_header(req, "x-goog-api-key");
    if ((!key || !*key) && !query_has_key(imgq_httpd_request_query(req))) {
        reply_google(s, req, SIM_UNAUTHORIZED, 403, "PERMISSION_DENIED", NULL, start,
                     "Method doesn't allow unregistered callers (callers without established "
                     "identity). Please use API Key or other form of API consumer identity to "
                     "call this API.");
        return;
    }
    char model[208];
    size_t n = (size_t)(colon - (rest + 7));
    memcpy(model, rest + 7, n);
    model[n] = '\0';
    const char *rpc = colon + 1;
    const struct imgq_model *m = imgq_catalog_model(s->catalog, model);
    if (!m || strcmp(m->api, GEMINI_API) != 0 || strcmp(rpc, "generateContent") != 0) {
        not_found_model(s, req, start, model, rpc);
        return;
    }
    generate(s, req, start, m);
}
