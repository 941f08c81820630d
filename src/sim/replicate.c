/*
 * replicate.c - Replicate's predictions API (base http://HOST:PORT/v1):
 *
 *   POST /v1/models/{owner}/{name}/predictions  {"input":{...}}  -> 201 the prediction
 *        Prefer: wait[=N] holds the answer up to N s (default 60, 1..60) on a loop timer: the
 *        prediction comes back succeeded/failed if it ends in time, else starting/processing
 *        with output null.
 *   GET  /v1/predictions/{id}                                    -> 200 the prediction
 *   POST /v1/predictions/{id}/cancel                             -> 200 the prediction, canceled
 *
 * The prediction: {id, model, version, input, logs, output, data_removed, error, status,
 * created_at, started_at, completed_at, urls{cancel,get,stream,web}, metrics}; status starting
 * -> processing -> succeeded | failed | canceled; output an array of image URLs (/sim/files/,
 * PNG whatever output_format says).  Moderation fails the prediction with error "NSFW content
 * detected. ..."; [sim:task-fail] with "Prediction interrupted; please retry (code: PA)".
 *
 * Errors are problem details {"title","detail","status"} (422 adds invalid_fields); 429 says
 * "Request was throttled. Your rate limit resets in ~Ns." with Retry-After.
 *
 * Choices where the real API is not specified: any owner/name is accepted (the /sim/fail key
 * is "owner/name"); width/height 256..1440, or aspect_ratio (1:1 1024x1024, 16:9 1344x768,
 * 9:16 768x1344, 3:2 1216x832, 2:3 832x1216, 4:3 1152x896, 3:4 896x1152, 4:5 896x1088, 5:4
 * 1088x896, 21:9 1536x640, 9:21 640x1536; default 1:1); num_outputs 1..4 (default 1).
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "imgq/alloc.h"
#include "sim.h"

#define WAIT_DEFAULT_S 60

static const struct ratio {
    const char *name;
    int w, h;
} ratios[] = {{"1:1", 1024, 1024}, {"16:9", 1344, 768}, {"9:16", 768, 1344}, {"3:2", 1216, 832},
              {"2:3", 832, 1216},  {"4:3", 1152, 896},  {"3:4", 896, 1152},  {"4:5", 896, 1088},
              {"5:4", 1088, 896},  {"21:9", 1536, 640}, {"9:21", 640, 1536}};

/* ---- Errors --------------------------------------------------------------------------------- */

/* {"title","detail","status"[, extra members]}; takes extra (may be NULL). */
static void reply_problem(struct sim *s, imgq_httpd_request *req, int status, uint64_t start,
                          const char *title, const char *detail, json_t *extra)
{
    char retry[64];
    sim_retry_after(s, retry, sizeof(retry));
    struct imgq_httpd_header h[] = {{"Retry-After", retry}};
    json_t *root = json_pack("{s:s, s:s, s:i}", "title", title, "detail", detail, "status", status);
    if (extra)
        json_object_update(root, extra);
    json_decref(extra);
    size_t len;
    char *body = sim_json_dumps(root, &len);
    sim_reply(s, req, SIM_EP_REPLICATE, sim_outcome_of_status(status), status, h,
              status == 429 || status == 503 ? 1 : 0, body, len, start);
}

static void reply_throttled(struct sim *s, imgq_httpd_request *req, uint64_t start)
{
    char detail[96];
    snprintf(detail, sizeof(detail), "Request was throttled. Your rate limit resets in ~%us.",
             s->cfg.retry_after_s);
    reply_problem(s, req, 429, start, "Request was throttled", detail, NULL);
}

static void reply_status(struct sim *s, imgq_httpd_request *req, uint64_t start, int status)
{
    if (status == 429)
        reply_throttled(s, req, start);
    else if (status == 401)
        reply_problem(s, req, 401, start, "Unauthenticated",
                      "You did not pass a valid authentication token", NULL);
    else if (status == 402)
        reply_problem(s, req, 402, start, "Insufficient credit",
                      "You have insufficient credit to run this model.", NULL);
    else if (status == 404)
        reply_problem(s, req, 404, start, "Not found", "Not found.", NULL);
    else
        reply_problem(s, req, status, start, imgq_httpd_reason(status),
                      "imgq-sim: this model fails (/sim/fail).", NULL);
}

/* 422 "Input validation failed" for one field. */
static void reply_invalid(struct sim *s, imgq_httpd_request *req, uint64_t start, const char *field,
                          const char *type, const char *what)
{
    char detail[512];
    snprintf(detail, sizeof(detail), "- %s: %s\n", field, what);
    reply_problem(s, req, 422, start, "Input validation failed", detail,
                  json_pack("{s:[{s:s, s:s, s:s}]}", "invalid_fields", "type", type, "field", field,
                            "description", what));
}

/* ---- The prediction object ------------------------------------------------------------------ */

static const char *status_name(const struct sim *s, const struct sim_task *k)
{
    switch (sim_task_phase(s, k)) {
    case SIM_TASK_QUEUED:
        return "starting";
    case SIM_TASK_RUNNING:
        return "processing";
    case SIM_TASK_CANCELED:
        return "canceled";
    case SIM_TASK_DONE:
        break;
    }
    return k->end == SIM_TASK_OK || k->end == SIM_TASK_NO_USAGE ? "succeeded" : "failed";
}

static json_t *time_json(const struct sim_task *k, uint64_t loop_ms)
{
    char buf[48];
    sim_time_format(sim_task_wall_ms(k, loop_ms), true, buf, sizeof(buf));
    return json_string(buf);
}

/* A stable 64-hex version id per model. */
static void version_of(const char *model, char *buf, size_t len)
{
    uint32_t h = sim_fnv1a(model);
    size_t n = 0;
    for (int i = 0; i < 8 && n + 9 <= len; i++) {
        h = h * 16777619u ^ (uint32_t)i;
        n += (size_t)snprintf(buf + n, len - n, "%08" PRIx32, h);
    }
}

static json_t *prediction_json(struct sim *s, imgq_httpd_request *req, const struct sim_task *k)
{
    enum sim_task_phase phase = sim_task_phase(s, k);
    const char *status = status_name(s, k);
    bool succeeded = strcmp(status, "succeeded") == 0;
    char version[72], *origin = sim_origin(s, req);
    version_of(k->model, version, sizeof(version));
    char *get = imgq_xasprintf("%s/v1/predictions/%s", origin, k->id);
    char *cancel = imgq_xasprintf("%s/v1/predictions/%s/cancel", origin, k->id);
    char *stream = imgq_xasprintf("%s/v1/predictions/%s/stream", origin, k->id);
    char *web = imgq_xasprintf("https://replicate.com/p/%s", k->id);
    free(origin);

    struct sim_buf logs = {0};
    if (phase != SIM_TASK_QUEUED &&
        !(phase == SIM_TASK_CANCELED && k->canceled_ms < k->created_ms + k->latency_ms / 3)) {
        sim_buf_printf(&logs, "Using seed: %" PRId64 "\n",
                       k->seed >= 0 ? k->seed : (int64_t)(k->variant & 0x7fffffff));
        if (phase == SIM_TASK_DONE)
            sim_buf_printf(&logs, "Generated %d image%s\n", k->n, k->n == 1 ? "" : "s");
    }
    json_t *p =
        json_pack("{s:s, s:s, s:s, s:O, s:s}", "id", k->id, "model", k->model, "version", version,
                  "input", k->input ? k->input : json_object(), "logs", logs.p ? logs.p : "");
    free(logs.p);
    json_t *output = json_null();
    if (succeeded) {
        output = json_array();
        for (int i = 0; i < k->n; i++) {
            char *url = sim_task_file_url(s, req, k, i);
            json_array_append_new(output, json_string(url));
            free(url);
        }
    }
    json_object_set_new(p, "output", output);
    json_object_set_new(p, "data_removed", json_false());
    json_t *error = json_null();
    if (strcmp(status, "failed") == 0)
        error = json_string(k->end == SIM_TASK_FAILED
                                ? "Prediction interrupted; please retry (code: PA)"
                                : "NSFW content detected. Try running it again, or try a "
                                  "different prompt.");
    json_object_set_new(p, "error", error);
    json_object_set_new(p, "status", json_string(status));
    json_object_set_new(p, "created_at", time_json(k, k->created_ms));
    uint64_t started = k->created_ms + k->latency_ms / 3;
    bool has_started = phase == SIM_TASK_RUNNING || phase == SIM_TASK_DONE ||
                       (phase == SIM_TASK_CANCELED && k->canceled_ms >= started);
    json_object_set_new(p, "started_at", has_started ? time_json(k, started) : json_null());
    uint64_t completed = phase == SIM_TASK_CANCELED ? k->canceled_ms : sim_task_done_ms(k);
    bool over = phase == SIM_TASK_DONE || phase == SIM_TASK_CANCELED;
    json_object_set_new(p, "completed_at", over ? time_json(k, completed) : json_null());
    json_object_set_new(p, "urls",
                        json_pack("{s:s, s:s, s:s, s:s}", "cancel", cancel, "get", get, "stream",
                                  stream, "web", web));
    json_t *metrics = json_object();
    if (over && has_started) {
        json_object_set_new(metrics, "predict_time",
                            json_real((double)(completed - started) / 1000.0));
        json_object_set_new(metrics, "total_time",
                            json_real((double)(completed - k->created_ms) / 1000.0));
        if (succeeded && k->bad_usage != SIM_USAGE_EMPTY)
            json_object_set_new(metrics, "image_count", sim_usage_json(k->bad_usage, k->n));
    }
    json_object_set_new(p, "metrics", metrics);
    free(get);
    free(cancel);
    free(stream);
    free(web);
    return p;
}

static void reply_prediction(struct sim *s, imgq_httpd_request *req, int status, uint64_t start,
                             const struct sim_task *k)
{
    size_t len;
    char *body = sim_json_dumps(prediction_json(s, req, k), &len);
    sim_reply(s, req, SIM_EP_REPLICATE, SIM_OK, status, NULL, 0, body, len, start);
}

/* ---- Prefer: wait --------------------------------------------------------------------------- */

struct wait_call {
    struct sim_call base; /* first: the held answer (common.c) */
    char id[40];
};

static void wait_answer(struct sim_call *base)
{
    struct wait_call *c = (struct wait_call *)base;
    struct sim_task *k = sim_task_find(base->sim, SIM_EP_REPLICATE, c->id);
    if (k)
        reply_prediction(base->sim, base->req, 201, base->start_ms, k);
    else /* forgotten meanwhile (POST /sim/reset) */
        reply_problem(base->sim, base->req, 404, base->start_ms, "Not found", "Not found.", NULL);
}

static void wait_destroy(struct sim_call *base)
{
    free(base);
}

/* Seconds asked by "Prefer: wait" or "wait=N" (1..60), or 0 when not asked. */
static unsigned prefer_wait(imgq_httpd_request *req)
{
    const char *v = imgq_httpd_request_header(req, "Prefer");
    if (!v || strncmp(v, "wait", 4) != 0)
        return 0;
    if (v[4] != '=')
        return v[4] == '\0' || v[4] == ' ' || v[4] == ',' || v[4] == ';' ? WAIT_DEFAULT_S : 0;
    long n = strtol(v + 5, NULL, 10);
    return n < 1 ? 1 : n > 60 ? 60 : (unsigned)n;
}

/* ---- Create --------------------------------------------------------------------------------- */

/* -1 if answered (invalid); else 0 with the size and count filled. */
static int parse_input(struct sim *s, imgq_httpd_request *req, uint64_t start, json_t *input,
                       struct sim_task *k, const char **prompt)
{
    json_t *v;
    *prompt = json_string_value(json_object_get(input, "prompt"));
    if (!*prompt || !**prompt) {
        reply_invalid(s, req, start, "input.prompt", "required", "prompt is required");
        return -1;
    }
    k->w = k->h = 1024;
    k->n = 1;
    if ((v = json_object_get(input, "num_outputs"))) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 4) {
            reply_invalid(s, req, start, "input.num_outputs", "number_one_of",
                          "Must be an integer from 1 to 4");
            return -1;
        }
        k->n = (int)json_integer_value(v);
    }
    const char *ar = json_string_value(json_object_get(input, "aspect_ratio"));
    if ((v = json_object_get(input, "aspect_ratio")) && !ar) {
        reply_invalid(s, req, start, "input.aspect_ratio", "string", "Must be a string");
        return -1;
    }
    if (ar && strcmp(ar, "custom") != 0) {
        size_t i;
        for (i = 0; i < sizeof(ratios) / sizeof(ratios[0]); i++)
            if (strcmp(ratios[i].name, ar) == 0)
                break;
        if (i == sizeof(ratios) / sizeof(ratios[0])) {
            reply_invalid(s, req, start, "input.aspect_ratio", "enum",
                          "aspect_ratio must be one of the following: \"1:1\", \"16:9\", "
                          "\"9:16\", \"3:2\", \"2:3\", \"4:3\", \"3:4\", \"4:5\", \"5:4\", "
                          "\"21:9\", \"9:21\", \"custom\"");
            return -1;
        }
        k->w = ratios[i].w;
        k->h = ratios[i].h;
    } else {
        static const char *const dims[] = {"width", "height"};
        for (int d = 0; d < 2; d++) {
            if (!(v = json_object_get(input, dims[d])))
                continue;
            if (!json_is_integer(v) || json_integer_value(v) < 256 ||
                json_integer_value(v) > 1440) {
                char field[32];
                snprintf(field, sizeof(field), "input.%s", dims[d]);
                reply_invalid(s, req, start, field, "number_one_of",
                              "Must be an integer from 256 to 1440");
                return -1;
            }
            *(d ? &k->h : &k->w) = (int)json_integer_value(v);
        }
    }
    if ((v = json_object_get(input, "seed"))) {
        if (!json_is_integer(v)) {
            reply_invalid(s, req, start, "input.seed", "integer", "Must be an integer");
            return -1;
        }
        k->seed = json_integer_value(v);
    }
    if ((v = json_object_get(input, "output_format"))) {
        const char *f = json_string_value(v);
        if (!f || (strcmp(f, "webp") && strcmp(f, "jpg") && strcmp(f, "png"))) {
            reply_invalid(s, req, start, "input.output_format", "enum",
                          "output_format must be one of the following: \"webp\", \"jpg\", "
                          "\"png\"");
            return -1;
        }
    }
    return 0;
}

static void create(struct sim *s, imgq_httpd_request *req, uint64_t start, const char *model)
{
    s->submits[SIM_EP_REPLICATE]++;
    char why[160];
    json_t *root = sim_json_object_body(req, why, sizeof(why));
    json_t *input = json_object_get(root, "input");
    if (!root || !json_is_object(input)) {
        reply_invalid(s, req, start, "input", "required",
                      root ? "input is required and must be an object" : why);
        json_decref(root);
        return;
    }
    struct sim_task tmp = {.seed = -1};
    const char *prompt;
    if (parse_input(s, req, start, input, &tmp, &prompt) != 0) {
        json_decref(root);
        return;
    }
    int status = sim_fail_status(s, model);
    struct sim_triggers t;
    sim_scan_triggers(s, prompt, &t);
    enum sim_outcome o = status ? SIM_OK : sim_decide_outcome(s, SIM_EP_REPLICATE, &t);
    if (status) {
        reply_status(s, req, start, status);
    } else if (o == SIM_RATE_LIMITED) {
        reply_throttled(s, req, start);
    } else if (o == SIM_SERVER_ERROR) {
        reply_problem(s, req, 500, start, "Internal Server Error",
                      "An unexpected error occurred. Please try again.", NULL);
    } else {
        struct sim_task *k = sim_task_add(s, SIM_EP_REPLICATE, model, prompt, &t, o);
        k->w = tmp.w;
        k->h = tmp.h;
        k->n = tmp.n;
        k->seed = tmp.seed;
        k->variant = sim_fnv1a(prompt) ^ (uint32_t)(k->seed + 1) * 0x9e3779b1u;
        sim_task_bill(s, k, 0);
        k->input = json_incref(input);
        unsigned wait_s = prefer_wait(req);
        uint64_t now = sim_now_ms(s), done = sim_task_done_ms(k);
        if (wait_s && done > now) {
            struct wait_call *c = imgq_xcalloc(1, sizeof(*c));
            memcpy(c->id, k->id, sizeof(c->id));
            c->base.sim = s;
            c->base.req = req;
            c->base.start_ms = start;
            c->base.outcome = SIM_OK;
            c->base.answer = wait_answer;
            c->base.destroy = wait_destroy;
            uint64_t hold = done - now;
            sim_call_hold_for(s, &c->base, hold < wait_s * 1000ull ? hold : wait_s * 1000ull);
        } else {
            reply_prediction(s, req, 201, start, k);
        }
    }
    json_decref(root);
}

/* ---- Entry ---------------------------------------------------------------------------------- */

void sim_replicate_handle(struct sim *s, imgq_httpd_request *req)
{
    uint64_t start = sim_now_ms(s);
    const char *path = imgq_httpd_request_path(req);
    const char *method = imgq_httpd_request_method(req);
    bool post = strcmp(method, "POST") == 0;
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;

    if (!sim_auth_key(req, "Authorization", "Bearer")) {
        reply_problem(s, req, 401, start, "Unauthenticated",
                      "You did not pass a valid authentication token", NULL);
        return;
    }
    char a[128], b[128];
    int used = 0;
    if (post && sscanf(path, "/v1/models/%127[^/]/%127[^/]/predictions%n", a, b, &used) == 2 &&
        used > 0 && !path[used]) {
        char model[260];
        snprintf(model, sizeof(model), "%s/%s", a, b);
        create(s, req, start, model);
        return;
    }
    used = 0;
    if (sscanf(path, "/v1/predictions/%127[^/]%n", a, &used) == 1 && used > 0) {
        const char *rest = path + used;
        bool is_get = !*rest && get, is_cancel = post && strcmp(rest, "/cancel") == 0;
        if (is_get || is_cancel) {
            if (is_get)
                s->polls[SIM_EP_REPLICATE]++;
            struct sim_task *k = sim_task_find(s, SIM_EP_REPLICATE, a);
            if (!k) {
                reply_problem(s, req, 404, start, "Not found", "Not found.", NULL);
            } else if (is_get && sim_task_take_503(k)) {
                reply_problem(s, req, 503, start, "Service Unavailable",
                              "The service is temporarily unavailable. Please try again.", NULL);
            } else {
                enum sim_task_phase phase = sim_task_phase(s, k);
                if (is_cancel && (phase == SIM_TASK_QUEUED || phase == SIM_TASK_RUNNING))
                    k->canceled_ms = sim_now_ms(s);
                reply_prediction(s, req, 200, start, k);
            }
            return;
        }
    }
    reply_problem(s, req, 404, start, "Not found", "Not found.", NULL);
}
