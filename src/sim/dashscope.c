/*
 * dashscope.c - DashScope's (Alibaba Model Studio) asynchronous text-to-image task API:
 *
 *   POST /api/v1/services/aigc/text2image/image-synthesis   (X-DashScope-Async: enable)
 *        {"model","input":{"prompt","negative_prompt"?},"parameters":{"size":"W*H","n","seed"}}
 *        -> 200 {"output":{"task_status":"PENDING","task_id"},"request_id"}
 *   GET  /api/v1/tasks/{task_id}
 *        -> 200 {"request_id","output":{"task_id","task_status",...},"usage":{"image_count"}}
 *   POST /api/v1/tasks/{task_id}/cancel  (PENDING only)
 *
 * task_status goes PENDING -> RUNNING -> SUCCEEDED | FAILED (output.code/message:
 * DataInspectionFailed for moderation, InternalError for [sim:task-fail]); an unknown or
 * expired id is 200 task_status UNKNOWN, as DashScope answers it.  HTTP errors are
 * {"request_id","code","message"}: 400 InvalidParameter (and DataInspectionFailed for
 * [sim:prompt-blocked], the input check), 401 InvalidApiKey, 403 AccessDenied (no
 * X-DashScope-Async: enable), 429 Throttling.RateQuota, 500 InternalError, 503
 * ServiceUnavailable ([sim:poll-503]).
 *
 * And the synchronous multimodal-generation API of the image-edit models (qwen-image-2.0,
 * qwen-image-edit*), where jobs with reference images go:
 *
 *   POST /api/v1/services/aigc/multimodal-generation/generation
 *        {"model","input":{"messages":[{"role":"user","content":[{"image":URI}...,{"text"}]}]},
 *         "parameters":{"n","size":"W*H","seed","negative_prompt","watermark","prompt_extend"}}
 *        -> 200 {"output":{"choices":[{"finish_reason":"stop","message":{"role":"assistant",
 *                "content":[{"image":URL}...]}}]},"usage":{"width","height","image_count"},
 *                "request_id"}
 *
 * held for the latency like any synchronous generation; moderation is HTTP 400
 * DataInspectionFailed (input for [sim:prompt-blocked], output otherwise).  Each image must be
 * a data URI of a PNG, JPEG or WebP that decodes whole, at most 10 MB (URLs are refused: the
 * simulator fetches nothing), at most the catalog model's max_references (3 for a model the
 * catalog does not know, as the edit models document); exactly one text item.  The images are
 * counted in /sim/stats (requests.dashscope.references, reference_bytes), and a prompt with
 * [sim:refs:N] must come with exactly N of them.
 *
 * Choices where the real API is not specified: any model name is accepted (the /sim/fail key);
 * each side of size may be 256..2048 (default 1024*1024); n is 1..4 (default 4, as the wanx
 * docs say) on the task API and 1..6 (default 1) on the edit API; result URLs point at
 * /sim/files/ and are PNG.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "imgq/alloc.h"
#include "sim.h"

#define SUBMIT_PATH "/api/v1/services/aigc/text2image/image-synthesis"
#define TASKS_PATH "/api/v1/tasks/"
#define EDIT_PATH "/api/v1/services/aigc/multimodal-generation/generation"
#define EDIT_MAX_REFS 3                   /* the edit models' documented limit */
#define REF_MAX_BYTES (10u * 1024 * 1024) /* per input image */

static void request_id(struct sim *s, char *buf, size_t len)
{
    uint64_t a = sim_random(s), b = sim_random(s);
    snprintf(buf, len, "%08" PRIx64 "-%04" PRIx64 "-%04" PRIx64 "-%04" PRIx64 "-%012" PRIx64,
             a >> 32, (a >> 16) & 0xffff, a & 0xffff, b >> 48, b & (uint64_t)0xffffffffffff);
}

static void reply_ds_error(struct sim *s, imgq_httpd_request *req, int status, uint64_t start,
                           const char *code, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* {"request_id","code","message"} */
static void reply_ds_error(struct sim *s, imgq_httpd_request *req, int status, uint64_t start,
                           const char *code, const char *fmt, ...)
{
    char msg[1024], rid[48];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    request_id(s, rid, sizeof(rid));
    char retry[64];
    sim_retry_after(s, retry, sizeof(retry));
    struct imgq_httpd_header h[] = {{"Retry-After", retry}};
    size_t len;
    char *body = sim_json_dumps(
        json_pack("{s:s, s:s, s:s}", "request_id", rid, "code", code, "message", msg), &len);
    /* A moderation refusal is counted as moderation, whatever its status. */
    enum sim_outcome o =
        strcmp(code, "DataInspectionFailed") == 0 ? SIM_MODERATION : sim_outcome_of_status(status);
    sim_reply(s, req, SIM_EP_DASHSCOPE, o, status, h, status == 429 || status == 503 ? 1 : 0, body,
              len, start);
}

static void reply_ds(struct sim *s, imgq_httpd_request *req, uint64_t start, json_t *root)
{
    size_t len;
    char *body = sim_json_dumps(root, &len);
    sim_reply(s, req, SIM_EP_DASHSCOPE, SIM_OK, 200, NULL, 0, body, len, start);
}

/* The error a /sim/fail status is answered with. */
static void reply_status(struct sim *s, imgq_httpd_request *req, uint64_t start, int status)
{
    const char *code = status == 429   ? "Throttling.RateQuota"
                       : status == 503 ? "ServiceUnavailable"
                       : status >= 500 ? "InternalError"
                       : status == 401 ? "InvalidApiKey"
                       : status == 403 ? "AccessDenied"
                       : status == 404 ? "ModelNotFound"
                                       : "InvalidParameter";
    reply_ds_error(s, req, status, start, code, "imgq-sim: this model fails with %d (/sim/fail).",
                   status);
}

/* ---- Submit --------------------------------------------------------------------------------- */

#define BAD(...) reply_ds_error(s, req, 400, start, "InvalidParameter", __VA_ARGS__)

static void submit(struct sim *s, imgq_httpd_request *req, uint64_t start)
{
    s->submits[SIM_EP_DASHSCOPE]++;
    const char *async = imgq_httpd_request_header(req, "X-DashScope-Async");
    if (!async || strcasecmp(async, "enable") != 0) {
        reply_ds_error(s, req, 403, start, "AccessDenied",
                       "current user api does not support synchronous calls");
        return;
    }
    char why[160];
    json_t *root = sim_json_object_body(req, why, sizeof(why));
    if (!root) {
        BAD("Request body format is invalid: %s.", why);
        return;
    }
    json_t *input = json_object_get(root, "input");
    json_t *params = json_object_get(root, "parameters");
    const char *model = json_string_value(json_object_get(root, "model"));
    const char *prompt = json_string_value(json_object_get(input, "prompt"));
    json_t *neg = json_object_get(input, "negative_prompt");
    json_t *size = json_object_get(params, "size");
    json_t *n = json_object_get(params, "n");
    json_t *seed = json_object_get(params, "seed");
    int w = 1024, h = 1024;
    if (!model || !*model) {
        BAD("Model not exist.");
    } else if (!json_is_object(input) || !prompt || !*prompt) {
        BAD("Field required: input.prompt");
    } else if (neg && !json_is_string(neg) && !json_is_null(neg)) {
        BAD("Input should be a valid string: input.negative_prompt");
    } else if (params && !json_is_object(params)) {
        BAD("Input should be a valid dictionary: parameters");
    } else if (size &&
               (!json_is_string(size) || sscanf(json_string_value(size), "%d*%d", &w, &h) != 2 ||
                w < 256 || h < 256 || w > 2048 || h > 2048)) {
        BAD("The size is not match the allowed size (W*H, each side 256 to 2048): %.40s",
            json_is_string(size) ? json_string_value(size) : "(not a string)");
    } else if (n &&
               (!json_is_integer(n) || json_integer_value(n) < 1 || json_integer_value(n) > 4)) {
        BAD("The n must be an integer from 1 to 4.");
    } else if (seed && (!json_is_integer(seed) || json_integer_value(seed) < 0 ||
                        json_integer_value(seed) > INT32_MAX)) {
        BAD("The seed must be an integer from 0 to 2147483647.");
    } else {
        int status = sim_fail_status(s, model);
        struct sim_triggers t;
        sim_scan_triggers(s, prompt, &t);
        bool told = sim_refs_as_told(&t, 0, why, sizeof(why)); /* text2image takes none */
        enum sim_outcome o = status || !told ? SIM_OK : sim_decide_outcome(s, SIM_EP_DASHSCOPE, &t);
        if (!told) {
            BAD("%s (imgq-sim: the text2image task API takes no reference images; edits go to "
                "%s).",
                why, EDIT_PATH);
        } else if (status) {
            reply_status(s, req, start, status);
        } else if (o == SIM_RATE_LIMITED) {
            reply_ds_error(s, req, 429, start, "Throttling.RateQuota",
                           "Requests rate limit exceeded, please try again later.");
        } else if (o == SIM_SERVER_ERROR) {
            reply_ds_error(s, req, 500, start, "InternalError",
                           "An internal error has occured, please try again later or contact "
                           "service support.");
        } else if (o == SIM_MODERATION && t.prompt_blocked) {
            reply_ds_error(s, req, 400, start, "DataInspectionFailed",
                           "Input data may contain inappropriate content.");
        } else {
            struct sim_task *k = sim_task_add(s, SIM_EP_DASHSCOPE, model, prompt, &t, o);
            k->w = w;
            k->h = h;
            k->n = n ? (int)json_integer_value(n) : 4;
            k->seed = seed ? json_integer_value(seed) : -1;
            k->variant = sim_fnv1a(prompt) ^ (uint32_t)(k->seed + 1) * 0x9e3779b1u;
            sim_task_bill(s, k, 0);
            char rid[48];
            request_id(s, rid, sizeof(rid));
            reply_ds(s, req, start,
                     json_pack("{s:{s:s, s:s}, s:s}", "output", "task_status", "PENDING", "task_id",
                               k->id, "request_id", rid));
        }
    }
    json_decref(root);
}

/* ---- Poll ----------------------------------------------------------------------------------- */

static const char *status_name(const struct sim *s, const struct sim_task *k)
{
    switch (sim_task_phase(s, k)) {
    case SIM_TASK_QUEUED:
        return "PENDING";
    case SIM_TASK_RUNNING:
        return "RUNNING";
    case SIM_TASK_CANCELED:
        return "CANCELED";
    case SIM_TASK_DONE:
        break;
    }
    return k->end == SIM_TASK_OK || k->end == SIM_TASK_NO_USAGE ? "SUCCEEDED" : "FAILED";
}

static void put_time(json_t *out, const char *key, const struct sim_task *k, uint64_t loop_ms)
{
    char buf[48];
    sim_time_format(sim_task_wall_ms(k, loop_ms), false, buf, sizeof(buf));
    json_object_set_new(out, key, json_string(buf));
}

static void poll_task(struct sim *s, imgq_httpd_request *req, uint64_t start, const char *id)
{
    s->polls[SIM_EP_DASHSCOPE]++;
    char rid[48];
    struct sim_task *k = sim_task_find(s, SIM_EP_DASHSCOPE, id);
    if (k && sim_task_take_503(k)) {
        reply_ds_error(s, req, 503, start, "ServiceUnavailable",
                       "The service is temporarily unavailable, please try again later.");
        return;
    }
    request_id(s, rid, sizeof(rid));
    if (!k) {
        reply_ds(s, req, start,
                 json_pack("{s:s, s:{s:s, s:s}}", "request_id", rid, "output", "task_id", id,
                           "task_status", "UNKNOWN"));
        return;
    }
    enum sim_task_phase phase = sim_task_phase(s, k);
    const char *status = status_name(s, k);
    json_t *out = json_pack("{s:s, s:s}", "task_id", k->id, "task_status", status);
    put_time(out, "submit_time", k, k->created_ms);
    if (phase != SIM_TASK_QUEUED)
        put_time(out, "scheduled_time", k, k->created_ms + k->latency_ms / 3);
    json_t *root = json_pack("{s:s}", "request_id", rid);
    if (phase == SIM_TASK_CANCELED) {
        put_time(out, "end_time", k, k->canceled_ms);
    } else if (phase == SIM_TASK_DONE) {
        put_time(out, "end_time", k, sim_task_done_ms(k));
        if (strcmp(status, "SUCCEEDED") == 0) {
            json_t *results = json_array();
            for (int i = 0; i < k->n; i++) {
                char *url = sim_task_file_url(s, req, k, i);
                json_array_append_new(results,
                                      json_pack("{s:s, s:s, s:s}", "orig_prompt", k->prompt,
                                                "actual_prompt", k->prompt, "url", url));
                free(url);
            }
            json_object_set_new(out, "results", results);
            if (k->end == SIM_TASK_OK && k->bad_usage == SIM_USAGE_EMPTY)
                json_object_set_new(root, "usage", json_object());
            else if (k->end == SIM_TASK_OK)
                json_object_set_new(
                    root, "usage",
                    json_pack("{s:o}", "image_count", sim_usage_json(k->bad_usage, k->n)));
        } else if (k->end == SIM_TASK_FAILED) {
            json_object_set_new(out, "code", json_string("InternalError"));
            json_object_set_new(out, "message",
                                json_string("An internal error has occured during execution, "
                                            "please try again later or contact service "
                                            "support."));
        } else {
            json_object_set_new(out, "code", json_string("DataInspectionFailed"));
            json_object_set_new(out, "message",
                                json_string("Output data may contain inappropriate content."));
        }
    }
    bool ok = strcmp(status, "SUCCEEDED") == 0;
    bool failed = strcmp(status, "FAILED") == 0;
    json_object_set_new(out, "task_metrics",
                        json_pack("{s:i, s:i, s:i}", "TOTAL", k->n, "SUCCEEDED", ok ? k->n : 0,
                                  "FAILED", failed ? k->n : 0));
    json_object_set_new(root, "output", out);
    reply_ds(s, req, start, root);
}

static void cancel(struct sim *s, imgq_httpd_request *req, uint64_t start, const char *id)
{
    struct sim_task *k = sim_task_find(s, SIM_EP_DASHSCOPE, id);
    if (!k) {
        reply_ds_error(s, req, 404, start, "InvalidParameter.TaskNotExist",
                       "The task does not exist.");
    } else if (sim_task_phase(s, k) != SIM_TASK_QUEUED) {
        reply_ds_error(s, req, 400, start, "UnsupportedOperation",
                       "Failed to cancel the task, please confirm if the task is in PENDING "
                       "status.");
    } else {
        k->canceled_ms = sim_now_ms(s);
        char rid[48];
        request_id(s, rid, sizeof(rid));
        reply_ds(s, req, start, json_pack("{s:s}", "request_id", rid));
    }
}

/* ---- Edits (synchronous) -------------------------------------------------------------------- */

struct edit_call {
    struct sim_call base; /* first: the held generation (common.c) */
    char *model, *prompt;
    struct sim_triggers t;
    int w, h, n;
    int64_t seed;
    int refs;
};

/* The catalog model a request names: by name, provider_edit_model or provider_model. */
static const struct imgq_model *edit_model(struct sim *s, const char *name)
{
    const struct imgq_model *m = imgq_catalog_model(s->catalog, name);
    for (size_t i = 0; !m && imgq_catalog_model_at(s->catalog, i); i++) {
        const struct imgq_model *c = imgq_catalog_model_at(s->catalog, i);
        if (strcmp(c->api, "dashscope") == 0 &&
            ((c->provider_edit_model && strcmp(c->provider_edit_model, name) == 0) ||
             (c->provider_model && strcmp(c->provider_model, name) == 0)))
            m = c;
    }
    return m;
}

static void edit_answer(struct sim_call *base)
{
    struct edit_call *c = (struct edit_call *)base;
    struct sim *s = base->sim;
    imgq_httpd_request *req = base->req;
    if (base->outcome == SIM_SERVER_ERROR) {
        reply_ds_error(s, req, 500, base->start_ms, "InternalError",
                       "An internal error has occured, please try again later or contact service "
                       "support.");
        return;
    }
    if (base->outcome == SIM_MODERATION) {
        reply_ds_error(s, req, 400, base->start_ms, "DataInspectionFailed",
                       "Output data may contain inappropriate content.");
        return;
    }
    /* The images are files of a task that is done at once (GET /sim/files/). */
    struct sim_task *k =
        sim_task_add(s, SIM_EP_DASHSCOPE, c->model, c->prompt, &c->t, base->outcome);
    k->latency_ms = 0;
    k->created_ms = sim_now_ms(s);
    k->w = c->w;
    k->h = c->h;
    k->n = c->n;
    k->seed = c->seed;
    k->variant = sim_fnv1a(c->prompt) ^ (uint32_t)(k->seed + 1) * 0x9e3779b1u;
    sim_task_bill(s, k, (int)c->refs);
    json_t *content = json_array();
    for (int i = 0; i < k->n; i++) {
        char *url = sim_task_file_url(s, req, k, i);
        json_array_append_new(content, json_pack("{s:s}", "image", url));
        free(url);
    }
    char rid[48];
    request_id(s, rid, sizeof(rid));
    json_t *root =
        json_pack("{s:{s:[{s:s, s:{s:s, s:o}}]}, s:s}", "output", "choices", "finish_reason",
                  "stop", "message", "role", "assistant", "content", content, "request_id", rid);
    if (base->outcome == SIM_OK)
        json_object_set_new(
            root, "usage",
            json_pack("{s:i, s:i, s:i}", "width", k->w, "height", k->h, "image_count", k->n));
    s->images += (uint64_t)k->n;
    size_t len;
    char *body = sim_json_dumps(root, &len);
    sim_reply(s, req, SIM_EP_DASHSCOPE, base->outcome, 200, NULL, 0, body, len, base->start_ms);
}

static void edit_destroy(struct sim_call *base)
{
    struct edit_call *c = (struct edit_call *)base;
    free(c->model);
    free(c->prompt);
    free(c);
}

/* input.messages[0].content: the images (checked, counted into *refs / *bytes) and the one
 * text (*prompt, borrowed).  False if answered with an error. */
static bool edit_content(struct sim *s, imgq_httpd_request *req, uint64_t start, json_t *input,
                         int max_refs, const char **prompt, int64_t *refs, uint64_t *bytes)
{
    json_t *messages = json_object_get(input, "messages");
    json_t *msg = json_array_get(messages, 0);
    json_t *content = json_object_get(msg, "content");
    const char *role = json_string_value(json_object_get(msg, "role"));
    if (!json_is_array(messages) || json_array_size(messages) != 1 || !json_is_object(msg)) {
        BAD("input.messages must hold exactly one message (single-turn only).");
        return false;
    }
    if (!role || strcmp(role, "user") != 0) {
        BAD("input.messages[0].role must be user.");
        return false;
    }
    if (!json_is_array(content) || json_array_size(content) == 0) {
        BAD("Field required: input.messages[0].content");
        return false;
    }
    size_t i;
    json_t *item;
    json_array_foreach(content, i, item)
    {
        json_t *image = json_object_get(item, "image"), *text = json_object_get(item, "text");
        if (json_is_string(text) && !image) {
            if (*prompt) {
                BAD("input.messages[0].content must hold exactly one text item.");
                return false;
            }
            *prompt = json_string_value(text);
            continue;
        }
        if (!json_is_string(image) || text) {
            BAD("input.messages[0].content[%zu] must be {\"image\": URL or data URI} or "
                "{\"text\": string}.",
                i);
            return false;
        }
        char why[200];
        size_t n = 0;
        if (sim_ref_check_uri(json_string_value(image), REF_MAX_BYTES, &n, why, sizeof(why)) != 0) {
            BAD("input.messages[0].content[%zu].image is not a valid image: %s.", i, why);
            return false;
        }
        *bytes += n;
        if (++*refs > max_refs) {
            BAD("input.messages[0].content holds more than %d images.", max_refs);
            return false;
        }
    }
    if (!*prompt || !**prompt) {
        BAD("input.messages[0].content must hold exactly one non-empty text item.");
        return false;
    }
    return true;
}

static void edit(struct sim *s, imgq_httpd_request *req, uint64_t start)
{
    char why[200];
    json_t *root = sim_json_object_body(req, why, sizeof(why));
    if (!root) {
        BAD("Request body format is invalid: %s.", why);
        return;
    }
    const char *model = json_string_value(json_object_get(root, "model"));
    json_t *params = json_object_get(root, "parameters");
    json_t *size = json_object_get(params, "size");
    json_t *n = json_object_get(params, "n");
    json_t *seed = json_object_get(params, "seed");
    json_t *neg = json_object_get(params, "negative_prompt");
    json_t *wm = json_object_get(params, "watermark");
    const struct imgq_model *m = model ? edit_model(s, model) : NULL;
    const char *prompt = NULL;
    int64_t refs = 0;
    uint64_t bytes = 0;
    int w = 1024, h = 1024;
    if (!model || !*model) {
        BAD("Model not exist.");
    } else if (params && !json_is_object(params)) {
        BAD("Input should be a valid dictionary: parameters");
    } else if (!edit_content(s, req, start, json_object_get(root, "input"),
                             m ? m->max_references : EDIT_MAX_REFS, &prompt, &refs, &bytes)) {
        /* answered */
    } else if (size &&
               (!json_is_string(size) || sscanf(json_string_value(size), "%d*%d", &w, &h) != 2 ||
                w < 256 || h < 256 || w > 2048 || h > 2048)) {
        BAD("The size is not match the allowed size (W*H, each side 256 to 2048): %.40s",
            json_is_string(size) ? json_string_value(size) : "(not a string)");
    } else if (n &&
               (!json_is_integer(n) || json_integer_value(n) < 1 || json_integer_value(n) > 6)) {
        BAD("The n must be an integer from 1 to 6.");
    } else if (seed && (!json_is_integer(seed) || json_integer_value(seed) < 0 ||
                        json_integer_value(seed) > INT32_MAX)) {
        BAD("The seed must be an integer from 0 to 2147483647.");
    } else if (neg && !json_is_string(neg)) {
        BAD("Input should be a valid string: parameters.negative_prompt");
    } else if (wm && !json_is_boolean(wm)) {
        BAD("Input should be a valid boolean: parameters.watermark");
    } else {
        struct sim_triggers t;
        sim_scan_triggers(s, prompt, &t);
        int status = sim_fail_status(s, model);
        if (!sim_refs_as_told(&t, refs, why, sizeof(why))) {
            BAD("%s (imgq-sim: a reference image is missing from the request).", why);
        } else if (status) {
            sim_refs_count(s, SIM_EP_DASHSCOPE, refs, bytes);
            reply_status(s, req, start, status);
        } else {
            sim_refs_count(s, SIM_EP_DASHSCOPE, refs, bytes);
            enum sim_outcome o = sim_decide_outcome(s, SIM_EP_DASHSCOPE, &t);
            if (o == SIM_RATE_LIMITED) {
                reply_ds_error(s, req, 429, start, "Throttling.RateQuota",
                               "Requests rate limit exceeded, please try again later.");
            } else if (o == SIM_MODERATION && t.prompt_blocked) {
                reply_ds_error(s, req, 400, start, "DataInspectionFailed",
                               "Input data may contain inappropriate content.");
            } else {
                struct edit_call *c = imgq_xcalloc(1, sizeof(*c));
                c->model = imgq_xstrdup(model);
                c->prompt = imgq_xstrdup(prompt);
                c->t = t;
                c->w = w;
                c->h = h;
                c->n = n ? (int)json_integer_value(n) : 1;
                c->seed = seed ? json_integer_value(seed) : -1;
                c->refs = (int)refs;
                c->base.sim = s;
                c->base.req = req;
                c->base.start_ms = start;
                c->base.outcome = o;
                c->base.answer = edit_answer;
                c->base.destroy = edit_destroy;
                sim_call_hold(s, &c->base, t.latency_ms);
            }
        }
    }
    json_decref(root);
}

/* ---- Entry ---------------------------------------------------------------------------------- */

void sim_dashscope_handle(struct sim *s, imgq_httpd_request *req)
{
    uint64_t start = sim_now_ms(s);
    const char *path = imgq_httpd_request_path(req);
    const char *method = imgq_httpd_request_method(req);
    bool post = strcmp(method, "POST") == 0;
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;

    if (!sim_auth_key(req, "Authorization", "Bearer")) {
        reply_ds_error(s, req, 401, start, "InvalidApiKey", "Invalid API-key provided.");
        return;
    }
    if (strcmp(path, SUBMIT_PATH) == 0 && post) {
        submit(s, req, start);
        return;
    }
    if (strcmp(path, EDIT_PATH) == 0 && post) {
        edit(s, req, start);
        return;
    }
    if (strncmp(path, TASKS_PATH, strlen(TASKS_PATH)) == 0) {
        char id[64];
        const char *rest = path + strlen(TASKS_PATH);
        size_t n = strcspn(rest, "/");
        if (n > 0 && n < sizeof(id)) {
            memcpy(id, rest, n);
            id[n] = '\0';
            if (!rest[n] && get) {
                poll_task(s, req, start, id);
                return;
            }
            if (strcmp(rest + n, "/cancel") == 0 && post) {
                cancel(s, req, start, id);
                return;
            }
        }
    }
    reply_ds_error(s, req, 404, start, "NotFound", "The requested resource %s %.200s not found.",
                   method, path);
}
