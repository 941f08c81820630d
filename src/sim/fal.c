/*
 * fal.c - fal.ai's queue API (base http://HOST:PORT/fal, standing for https://queue.fal.run):
 *
 *   POST /fal/{model_id}                         (model_id: owner/app[/subpath...])
 *        -> 200 {"status":"IN_QUEUE","request_id","response_url","status_url","cancel_url",
 *                "queue_position"}; the URLs are absolute (from the Host header) and name the
 *                app only: http://HOST/fal/{owner}/{app}/requests/{id}[/status|/cancel]
 *   GET  /fal/{owner}/{app}/requests/{id}/status[?logs=1]
 *        -> 202 {"status":"IN_QUEUE","queue_position","response_url"}
 *         | 202 {"status":"IN_PROGRESS","logs":[...],"response_url"}
 *         | 200 {"status":"COMPLETED","logs":[...],"metrics":{"inference_time"},"response_url"}
 *   GET  /fal/{owner}/{app}/requests/{id}
 *        -> 200 {"images":[{"url","width","height","content_type"}],"timings":{"inference"},
 *                "seed","has_nsfw_concepts":[false...],"prompt"}
 *         | 400 {"detail":"Request is still in progress"} before completion
 *         | 422 {"detail":[{"loc":["body","prompt"],"msg","type":"content_policy_violation"}]}
 *               + X-Fal-Retryable: false (moderation)
 *         | 503 {"detail","error_type":"runner_scheduling_failure"} + X-Fal-Error-Type
 *               ([sim:task-fail]); a failed request's status is COMPLETED with error/error_type
 *   PUT  /fal/{owner}/{app}/requests/{id}/cancel
 *        -> 202 {"status":"CANCELLATION_REQUESTED"} while queued, else 400
 *               {"status":"ALREADY_COMPLETED"}; a canceled request is COMPLETED and its result
 *               400 {"detail":"Request was cancelled"}
 *
 * Auth is "Authorization: Key KEY".  Input: prompt, image_size (square_hd 1024x1024, square
 * 512x512, portrait_4_3 768x1024, portrait_16_9 576x1024, landscape_4_3 1024x768 (default),
 * landscape_16_9 1024x576, or {"width","height"} 256..2048), num_images 1..4, seed,
 * guidance_scale, num_inference_steps 1..50, output_format jpeg|png, enable_safety_checker.
 *
 * Choices where the real API is not specified: input is validated at submit (422 in the shape
 * above, type value_error.*); any model_id of two or more segments is accepted (the /sim/fail
 * key is the whole model_id); an unknown id, or one asked under another app, is 404
 * {"detail":"Request not found"}; 429 is {"detail":...} with Retry-After; images are PNG.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "imgq/alloc.h"
#include "sim.h"

static const struct named_size {
    const char *name;
    int w, h;
} named_sizes[] = {{"square_hd", 1024, 1024},    {"square", 512, 512},
                   {"portrait_4_3", 768, 1024},  {"portrait_16_9", 576, 1024},
                   {"landscape_4_3", 1024, 768}, {"landscape_16_9", 1024, 576}};

/* ---- Replies -------------------------------------------------------------------------------- */

static void reply_fal(struct sim *s, imgq_httpd_request *req, int status, uint64_t start,
                      const struct imgq_httpd_header *h, size_t nh, json_t *root)
{
    size_t len;
    char *body = sim_json_dumps(root, &len);
    sim_reply(s, req, SIM_EP_FAL, sim_outcome_of_status(status), status, h, nh, body, len, start);
}

/* {"detail":"..."} */
static void reply_detail(struct sim *s, imgq_httpd_request *req, int status, uint64_t start,
                         const char *detail)
{
    char retry[64];
    sim_retry_after(s, retry, sizeof(retry));
    struct imgq_httpd_header h[] = {{"Retry-After", retry}};
    reply_fal(s, req, status, start, h, status == 429 || status == 503 ? 1 : 0,
              json_pack("{s:s}", "detail", detail));
}

/* An infrastructure error: {"detail","error_type"} + X-Fal-Error-Type. */
static void reply_infra(struct sim *s, imgq_httpd_request *req, int status, uint64_t start,
                        const char *error_type, const char *detail)
{
    struct imgq_httpd_header h[] = {{"X-Fal-Error-Type", error_type}, {"X-Fal-Retryable", "true"}};
    reply_fal(s, req, status, start, h, 2,
              json_pack("{s:s, s:s}", "detail", detail, "error_type", error_type));
}

/* A validation or model error: 422 {"detail":[{"loc":["body",FIELD],"msg","type"}]}. */
static void reply_validation(struct sim *s, imgq_httpd_request *req, uint64_t start,
                             const char *field, const char *msg, const char *type)
{
    struct imgq_httpd_header h[] = {{"X-Fal-Retryable", "false"}};
    reply_fal(s, req, 422, start, h, 1,
              json_pack("{s:[{s:[s,s], s:s, s:s}]}", "detail", "loc", "body", field, "msg", msg,
                        "type", type));
}

static void reply_status(struct sim *s, imgq_httpd_request *req, uint64_t start, int status)
{
    if (status == 422)
        reply_validation(s, req, start, "prompt", "imgq-sim: this model fails (/sim/fail).",
                         "value_error");
    else if (status >= 500)
        reply_infra(s, req, status, start, "internal_error",
                    "imgq-sim: this model fails (/sim/fail).");
    else
        reply_detail(s, req, status, start, "imgq-sim: this model fails (/sim/fail).");
}

/* ---- Helpers -------------------------------------------------------------------------------- */

/* The app of a model_id: its first two segments ("fal-ai/flux" of "fal-ai/flux/dev"). */
static void app_of(const char *model, char *app, size_t len)
{
    const char *slash = strchr(model, '/');
    size_t n = slash ? (size_t)(strchrnul(slash + 1, '/') - model) : strlen(model);
    snprintf(app, len, "%.*s", (int)n, model);
}

static char *request_url(struct sim *s, imgq_httpd_request *req, const struct sim_task *k,
                         const char *suffix)
{
    char app[256];
    app_of(k->model, app, sizeof(app));
    char *origin = sim_origin(s, req);
    char *url = imgq_xasprintf("%s/fal/%s/requests/%s%s", origin, app, k->id, suffix);
    free(origin);
    return url;
}

/* Requests of the same app queued ahead of k. */
static int queue_position(const struct sim *s, const struct sim_task *k)
{
    char app[256], other[256];
    app_of(k->model, app, sizeof(app));
    int ahead = 0, steps = 0;
    for (const struct sim_task *o = k->older; o && steps < 10000; o = o->older, steps++) {
        if (o->ep != SIM_EP_FAL || sim_task_phase(s, o) != SIM_TASK_QUEUED)
            continue;
        app_of(o->model, other, sizeof(other));
        if (strcmp(app, other) == 0)
            ahead++;
    }
    return ahead;
}

static int64_t actual_seed(const struct sim_task *k)
{
    return k->seed >= 0 ? k->seed : (int64_t)(k->variant & 0x7fffffff);
}

/* ---- Submit --------------------------------------------------------------------------------- */

/* 0, or -1 when answered (422). */
static int parse_input(struct sim *s, imgq_httpd_request *req, uint64_t start, json_t *root,
                       struct sim_task *k, const char **prompt)
{
    json_t *v;
    *prompt = json_string_value(json_object_get(root, "prompt"));
    if (!*prompt || !**prompt) {
        reply_validation(s, req, start, "prompt", "field required", "value_error.missing");
        return -1;
    }
    k->w = 1024;
    k->h = 768;
    if ((v = json_object_get(root, "image_size"))) {
        size_t i = 0;
        if (json_is_string(v)) {
            for (; i < sizeof(named_sizes) / sizeof(named_sizes[0]); i++)
                if (strcmp(named_sizes[i].name, json_string_value(v)) == 0)
                    break;
        }
        if (json_is_string(v) && i < sizeof(named_sizes) / sizeof(named_sizes[0])) {
            k->w = named_sizes[i].w;
            k->h = named_sizes[i].h;
        } else {
            json_t *w = json_object_get(v, "width"), *h = json_object_get(v, "height");
            if (!json_is_integer(w) || !json_is_integer(h) || json_integer_value(w) < 256 ||
                json_integer_value(w) > 2048 || json_integer_value(h) < 256 ||
                json_integer_value(h) > 2048) {
                reply_validation(s, req, start, "image_size",
                                 "value is not a valid enumeration member or an object "
                                 "{width, height} of 256 to 2048",
                                 "value_error");
                return -1;
            }
            k->w = (int)json_integer_value(w);
            k->h = (int)json_integer_value(h);
        }
    }
    k->n = 1;
    if ((v = json_object_get(root, "num_images"))) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 4) {
            reply_validation(s, req, start, "num_images", "ensure this value is between 1 and 4",
                             "value_error.number");
            return -1;
        }
        k->n = (int)json_integer_value(v);
    }
    if ((v = json_object_get(root, "seed")) && !json_is_null(v)) {
        if (!json_is_integer(v)) {
            reply_validation(s, req, start, "seed", "value is not a valid integer",
                             "type_error.integer");
            return -1;
        }
        k->seed = json_integer_value(v);
    }
    if ((v = json_object_get(root, "guidance_scale")) && !json_is_number(v)) {
        reply_validation(s, req, start, "guidance_scale", "value is not a valid float",
                         "type_error.float");
        return -1;
    }
    if ((v = json_object_get(root, "num_inference_steps")) &&
        (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 50)) {
        reply_validation(s, req, start, "num_inference_steps",
                         "ensure this value is between 1 and 50", "value_error.number");
        return -1;
    }
    if ((v = json_object_get(root, "output_format")) &&
        (!json_is_string(v) ||
         (strcmp(json_string_value(v), "jpeg") && strcmp(json_string_value(v), "png")))) {
        reply_validation(s, req, start, "output_format",
                         "value is not a valid enumeration member; permitted: 'jpeg', 'png'",
                         "type_error.enum");
        return -1;
    }
    return 0;
}

static void submit(struct sim *s, imgq_httpd_request *req, uint64_t start, const char *model)
{
    s->submits[SIM_EP_FAL]++;
    char why[160];
    json_t *root = sim_json_object_body(req, why, sizeof(why));
    if (!root) {
        reply_validation(s, req, start, "body", why, "value_error.jsondecode");
        return;
    }
    struct sim_task tmp = {.seed = -1};
    const char *prompt;
    if (parse_input(s, req, start, root, &tmp, &prompt) != 0) {
        json_decref(root);
        return;
    }
    int status = sim_fail_status(s, model);
    struct sim_triggers t;
    sim_scan_triggers(s, prompt, &t);
    enum sim_outcome o = status ? SIM_OK : sim_decide_outcome(s, SIM_EP_FAL, &t);
    if (status) {
        reply_status(s, req, start, status);
    } else if (o == SIM_RATE_LIMITED) {
        reply_detail(s, req, 429, start,
                     "Rate limit exceeded: too many concurrent requests for this user.");
    } else if (o == SIM_SERVER_ERROR) {
        reply_infra(s, req, 500, start, "internal_error", "Internal Server Error");
    } else {
        struct sim_task *k = sim_task_add(s, SIM_EP_FAL, model, prompt, &t, o);
        k->w = tmp.w;
        k->h = tmp.h;
        k->n = tmp.n;
        k->seed = tmp.seed;
        k->variant = sim_fnv1a(prompt) ^ (uint32_t)(k->seed + 1) * 0x9e3779b1u;
        sim_task_bill(s, k, 0);
        char *response = request_url(s, req, k, "");
        char *status_url = request_url(s, req, k, "/status");
        char *cancel = request_url(s, req, k, "/cancel");
        reply_fal(s, req, 200, start, NULL, 0,
                  json_pack("{s:s, s:s, s:s, s:s, s:s, s:i}", "status", "IN_QUEUE", "request_id",
                            k->id, "response_url", response, "status_url", status_url, "cancel_url",
                            cancel, "queue_position", queue_position(s, k)));
        free(response);
        free(status_url);
        free(cancel);
    }
    json_decref(root);
}

/* ---- Status, result, cancel ----------------------------------------------------------------- */

static json_t *logs_json(const struct sim *s, const struct sim_task *k, bool want)
{
    json_t *logs = json_array();
    if (!want || sim_task_phase(s, k) == SIM_TASK_QUEUED)
        return logs;
    char ts[48];
    sim_time_format(sim_task_wall_ms(k, k->created_ms + k->latency_ms / 3), true, ts, sizeof(ts));
    json_array_append_new(logs, json_pack("{s:s, s:s, s:s, s:s}", "message", "Generating images",
                                          "level", "INFO", "source", "user", "timestamp", ts));
    return logs;
}

static void status(struct sim *s, imgq_httpd_request *req, uint64_t start, struct sim_task *k)
{
    s->polls[SIM_EP_FAL]++;
    if (sim_task_take_503(k)) {
        reply_detail(s, req, 503, start, "Service Unavailable");
        return;
    }
    bool want_logs = strstr(imgq_httpd_request_query(req), "logs=1") != NULL;
    char *response = request_url(s, req, k, "");
    enum sim_task_phase phase = sim_task_phase(s, k);
    json_t *root;
    int code = 202;
    if (phase == SIM_TASK_QUEUED) {
        root = json_pack("{s:s, s:i, s:s}", "status", "IN_QUEUE", "queue_position",
                         queue_position(s, k), "response_url", response);
    } else if (phase == SIM_TASK_RUNNING) {
        root = json_pack("{s:s, s:o, s:s}", "status", "IN_PROGRESS", "logs",
                         logs_json(s, k, want_logs), "response_url", response);
    } else {
        code = 200;
        root = json_pack("{s:s, s:o, s:{}, s:s}", "status", "COMPLETED", "logs",
                         logs_json(s, k, want_logs), "metrics", "response_url", response);
        if (phase == SIM_TASK_DONE && (k->end == SIM_TASK_OK || k->end == SIM_TASK_NO_USAGE)) {
            json_object_set_new(json_object_get(root, "metrics"), "inference_time",
                                json_real((double)(k->latency_ms - k->latency_ms / 3) / 1000.0));
        } else if (phase == SIM_TASK_CANCELED) {
            json_object_set_new(root, "error", json_string("Request was cancelled"));
            json_object_set_new(root, "error_type", json_string("request_cancelled"));
        } else if (k->end == SIM_TASK_FAILED) {
            json_object_set_new(root, "error", json_string("Runner scheduling failure"));
            json_object_set_new(root, "error_type", json_string("runner_scheduling_failure"));
        } else {
            json_object_set_new(root, "error", json_string("Content policy violation"));
            json_object_set_new(root, "error_type", json_string("content_policy_violation"));
        }
    }
    free(response);
    reply_fal(s, req, code, start, NULL, 0, root);
}

static void result(struct sim *s, imgq_httpd_request *req, uint64_t start, struct sim_task *k)
{
    s->results[SIM_EP_FAL]++;
    enum sim_task_phase phase = sim_task_phase(s, k);
    if (phase == SIM_TASK_QUEUED || phase == SIM_TASK_RUNNING) {
        reply_detail(s, req, 400, start, "Request is still in progress");
    } else if (phase == SIM_TASK_CANCELED) {
        reply_detail(s, req, 400, start, "Request was cancelled");
    } else if (k->end == SIM_TASK_FAILED) {
        reply_infra(s, req, 503, start, "runner_scheduling_failure",
                    "Runner scheduling failure: no runner could take the request in time.");
    } else if (k->end == SIM_TASK_MODERATED || k->end == SIM_TASK_PROMPT_BLOCKED) {
        reply_validation(s, req, start, "prompt",
                         "The content could not be processed because it contained material "
                         "flagged by a content checker.",
                         "content_policy_violation");
    } else {
        json_t *images = json_array(), *nsfw = json_array();
        for (int i = 0; i < k->n; i++) {
            char *url = sim_task_file_url(s, req, k, i);
            json_array_append_new(images,
                                  json_pack("{s:s, s:i, s:i, s:s}", "url", url, "width", k->w,
                                            "height", k->h, "content_type", "image/png"));
            json_array_append_new(nsfw, json_false());
            free(url);
        }
        reply_fal(s, req, 200, start, NULL, 0,
                  json_pack("{s:o, s:{s:f}, s:I, s:o, s:s}", "images", images, "timings",
                            "inference", (double)(k->latency_ms - k->latency_ms / 3) / 1000.0,
                            "seed", (json_int_t)actual_seed(k), "has_nsfw_concepts", nsfw, "prompt",
                            k->prompt));
    }
}

static void cancel(struct sim *s, imgq_httpd_request *req, uint64_t start, struct sim_task *k)
{
    if (sim_task_phase(s, k) == SIM_TASK_QUEUED) {
        k->canceled_ms = sim_now_ms(s);
        reply_fal(s, req, 202, start, NULL, 0,
                  json_pack("{s:s}", "status", "CANCELLATION_REQUESTED"));
    } else {
        reply_fal(s, req, 400, start, NULL, 0, json_pack("{s:s}", "status", "ALREADY_COMPLETED"));
    }
}

/* ---- Entry ---------------------------------------------------------------------------------- */

void sim_fal_handle(struct sim *s, imgq_httpd_request *req)
{
    uint64_t start = sim_now_ms(s);
    const char *path = imgq_httpd_request_path(req) + strlen("/fal/");
    const char *method = imgq_httpd_request_method(req);
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    const char *requests = strstr(path, "/requests/");
    char app[256];

    if (!sim_auth_key(req, "Authorization", "Key")) {
        char msg[512];
        if (requests)
            snprintf(app, sizeof(app), "%.*s", (int)(requests - path), path);
        else
            app_of(path, app, sizeof(app));
        snprintf(msg, sizeof(msg),
                 "Cannot access application '%s'. Authentication is required to access this "
                 "application.",
                 app);
        reply_detail(s, req, 401, start, msg);
        return;
    }
    if (!requests) {
        const char *slash = strchr(path, '/');
        if (strcmp(method, "POST") == 0 && slash && slash > path && slash[1] &&
            strlen(path) < 256) {
            submit(s, req, start, path);
            return;
        }
        reply_detail(s, req, 404, start, "Application not found");
        return;
    }
    char id[64];
    const char *rest = requests + strlen("/requests/");
    size_t n = strcspn(rest, "/");
    struct sim_task *k = NULL;
    if (n > 0 && n < sizeof(id)) {
        memcpy(id, rest, n);
        id[n] = '\0';
        k = sim_task_find(s, SIM_EP_FAL, id);
        app_of(k ? k->model : "", app, sizeof(app));
        if (k && (strlen(app) != (size_t)(requests - path) ||
                  strncmp(app, path, (size_t)(requests - path)) != 0))
            k = NULL;
    }
    rest += n;
    if (k && get && !*rest) {
        result(s, req, start, k);
    } else if (k && get && strcmp(rest, "/status") == 0) {
        status(s, req, start, k);
    } else if (k && strcmp(method, "PUT") == 0 && strcmp(rest, "/cancel") == 0) {
        cancel(s, req, start, k);
    } else {
        if (get && strcmp(rest, "/status") == 0)
            s->polls[SIM_EP_FAL]++;
        else if (get && !*rest)
            s->results[SIM_EP_FAL]++;
        reply_detail(s, req, 404, start, "Request not found");
    }
}
