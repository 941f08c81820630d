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
 * Choices where the real API is not specified: any model name is accepted (the /sim/fail key);
 * each side of size may be 256..2048 (default 1024*1024); n is 1..4 (default 4, as the wanx
 * docs say); result URLs point at /sim/files/ and are PNG.
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
    char retry[24];
    snprintf(retry, sizeof(retry), "%u", s->cfg.retry_after_s);
    struct imgq_httpd_header h[] = {{"Retry-After", retry}};
    size_t len;
    char *body = sim_json_dumps(
        json_pack("{s:s, s:s, s:s}", "request_id", rid, "code", code, "message", msg), &len);
    sim_reply(s, req, SIM_EP_DASHSCOPE, sim_outcome_of_status(status), status, h,
              status == 429 || status == 503 ? 1 : 0, body, len, start);
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
        enum sim_outcome o = status ? SIM_OK : sim_decide_outcome(s, SIM_EP_DASHSCOPE, &t);
        if (status) {
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
