/*
 * bfl.c - Black Forest Labs' FLUX API (base http://HOST:PORT/bfl/v1, standing for
 * https://api.bfl.ai/v1):
 *
 *   POST /bfl/v1/{model}   (x-key: KEY)  {prompt, width, height, seed, guidance, steps,
 *                                         output_format, aspect_ratio, safety_tolerance, ...}
 *        -> 200 {"id","polling_url":"http://HOST/bfl/v1/get_result?id=ID","cost","input_mp",
 *                "output_mp"}
 *   GET  /bfl/v1/get_result?id=ID  (x-key: KEY)
 *        -> 200 {"id","status","result","progress","details","preview"}
 *
 * status: Pending (queued, then running with a progress 0..1) -> Ready (result {"sample":URL,
 * "prompt","seed","start_time","end_time","duration"}) | Request Moderated ([sim:prompt-blocked])
 * | Content Moderated (moderation; details {"Moderation Reasons":[...]}) | Error
 * ([sim:task-fail]); an unknown or expired id is 200 with status "Task not found".
 * HTTP errors are {"detail": ...}: 402 insufficient credits, 403 no x-key (FastAPI's "Not
 * authenticated"), 422 invalid body (FastAPI's [{"type","loc","msg"}] list), 429 too many
 * active tasks (+ Retry-After), 500, and 503 for [sim:poll-503].
 *
 * Choices where the real API is not specified: any model name is accepted (the /sim/fail key);
 * width/height 256..1440 (flux-2-*: ..2048), multiples of 32 (default 1024x768); aspect_ratio
 * (1:1 16:9 9:16 3:2 2:3 4:3 3:4 21:9 9:21) picks a ~1 MP size; cost in credits by model
 * (flux-dev 2.5, flux-pro 5, flux-pro-1.1 4, flux-pro-1.1-ultra 6, flux-kontext-pro 4,
 * flux-kontext-max 8, flux-2-*: 3 per started megapixel, others 4); one image, PNG.
 */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "imgq/alloc.h"
#include "sim.h"

static const struct ratio {
    const char *name;
    int w, h;
} ratios[] = {{"1:1", 1024, 1024}, {"16:9", 1344, 768}, {"9:16", 768, 1344},
              {"3:2", 1216, 832},  {"2:3", 832, 1216},  {"4:3", 1152, 896},
              {"3:4", 896, 1152},  {"21:9", 1536, 640}, {"9:21", 640, 1536}};

static const struct cost {
    const char *model;
    double credits;
} costs[] = {{"flux-dev", 2.5},           {"flux-pro", 5.0},         {"flux-pro-1.1", 4.0},
             {"flux-pro-1.1-ultra", 6.0}, {"flux-kontext-pro", 4.0}, {"flux-kontext-max", 8.0}};

/* ---- Replies -------------------------------------------------------------------------------- */

static void reply_bfl(struct sim *s, imgq_httpd_request *req, int status, uint64_t start,
                      json_t *root)
{
    char retry[64];
    sim_retry_after(s, retry, sizeof(retry));
    struct imgq_httpd_header h[] = {{"Retry-After", retry}};
    size_t len;
    char *body = sim_json_dumps(root, &len);
    sim_reply(s, req, SIM_EP_BFL, sim_outcome_of_status(status), status, h,
              status == 429 || status == 503 ? 1 : 0, body, len, start);
}

static void reply_detail(struct sim *s, imgq_httpd_request *req, int status, uint64_t start,
                         const char *detail)
{
    reply_bfl(s, req, status, start, json_pack("{s:s}", "detail", detail));
}

/* FastAPI's 422: {"detail":[{"type","loc":["body"|"query",FIELD],"msg"}]} */
static void reply_invalid(struct sim *s, imgq_httpd_request *req, uint64_t start, const char *where,
                          const char *field, const char *type, const char *msg)
{
    reply_bfl(s, req, 422, start,
              json_pack("{s:[{s:s, s:[s,s], s:s}]}", "detail", "type", type, "loc", where, field,
                        "msg", msg));
}

static void reply_status(struct sim *s, imgq_httpd_request *req, uint64_t start, int status)
{
    if (status == 402)
        reply_detail(s, req, 402, start, "Insufficient credits");
    else if (status == 429)
        reply_detail(s, req, 429, start,
                     "Rate limit exceeded: too many active tasks (24). Wait for some tasks to "
                     "complete before submitting more.");
    else if (status == 422)
        reply_invalid(s, req, start, "body", "prompt", "value_error",
                      "imgq-sim: this model fails (/sim/fail).");
    else
        reply_detail(s, req, status, start, "imgq-sim: this model fails (/sim/fail).");
}

/* ---- Submit --------------------------------------------------------------------------------- */

static double cost_of(const char *model, int w, int h)
{
    for (size_t i = 0; i < sizeof(costs) / sizeof(costs[0]); i++)
        if (strcmp(costs[i].model, model) == 0)
            return costs[i].credits;
    if (strncmp(model, "flux-2", 6) == 0)
        return 3.0 * ceil((double)w * h / 1e6);
    return 4.0;
}

/* 0, or -1 when answered (422). */
static int parse_body(struct sim *s, imgq_httpd_request *req, uint64_t start, const char *model,
                      json_t *root, struct sim_task *k, const char **prompt)
{
    json_t *v;
    *prompt = json_string_value(json_object_get(root, "prompt"));
    if (!*prompt) {
        reply_invalid(s, req, start, "body", "prompt", "missing", "Field required");
        return -1;
    }
    int max = strncmp(model, "flux-2", 6) == 0 ? 2048 : 1440;
    k->w = 1024;
    k->h = 768;
    const char *ar = json_string_value(json_object_get(root, "aspect_ratio"));
    if (ar) {
        size_t i;
        for (i = 0; i < sizeof(ratios) / sizeof(ratios[0]); i++)
            if (strcmp(ratios[i].name, ar) == 0)
                break;
        if (i == sizeof(ratios) / sizeof(ratios[0])) {
            reply_invalid(s, req, start, "body", "aspect_ratio", "value_error",
                          "Aspect ratio must be one of 1:1, 16:9, 9:16, 3:2, 2:3, 4:3, 3:4, "
                          "21:9, 9:21");
            return -1;
        }
        k->w = ratios[i].w;
        k->h = ratios[i].h;
    }
    static const char *const dims[] = {"width", "height"};
    for (int d = 0; d < 2; d++) {
        if (!(v = json_object_get(root, dims[d])) || json_is_null(v))
            continue;
        json_int_t x = json_is_integer(v) ? json_integer_value(v) : -1;
        if (x < 256 || x > max || x % 32) {
            char msg[96];
            snprintf(msg, sizeof(msg), "Input should be a multiple of 32 from 256 to %d", max);
            reply_invalid(s, req, start, "body", dims[d], "value_error", msg);
            return -1;
        }
        *(d ? &k->h : &k->w) = (int)x;
    }
    if ((v = json_object_get(root, "seed")) && !json_is_null(v)) {
        if (!json_is_integer(v)) {
            reply_invalid(s, req, start, "body", "seed", "int_parsing",
                          "Input should be a valid integer");
            return -1;
        }
        k->seed = json_integer_value(v);
    }
    if ((v = json_object_get(root, "guidance")) && !json_is_null(v) && !json_is_number(v)) {
        reply_invalid(s, req, start, "body", "guidance", "float_parsing",
                      "Input should be a valid number");
        return -1;
    }
    if ((v = json_object_get(root, "steps")) && !json_is_null(v) &&
        (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 50)) {
        reply_invalid(s, req, start, "body", "steps", "less_than_equal",
                      "Input should be an integer from 1 to 50");
        return -1;
    }
    if ((v = json_object_get(root, "output_format")) && !json_is_null(v) &&
        (!json_is_string(v) ||
         (strcmp(json_string_value(v), "jpeg") && strcmp(json_string_value(v), "png")))) {
        reply_invalid(s, req, start, "body", "output_format", "enum",
                      "Input should be 'jpeg' or 'png'");
        return -1;
    }
    return 0;
}

static void submit(struct sim *s, imgq_httpd_request *req, uint64_t start, const char *model)
{
    s->submits[SIM_EP_BFL]++;
    char why[160];
    json_t *root = sim_json_object_body(req, why, sizeof(why));
    if (!root) {
        reply_invalid(s, req, start, "body", "", "json_invalid", why);
        return;
    }
    struct sim_task tmp = {.seed = -1};
    const char *prompt;
    if (parse_body(s, req, start, model, root, &tmp, &prompt) != 0) {
        json_decref(root);
        return;
    }
    int status = sim_fail_status(s, model);
    struct sim_triggers t;
    sim_scan_triggers(s, prompt, &t);
    enum sim_outcome o = status ? SIM_OK : sim_decide_outcome(s, SIM_EP_BFL, &t);
    if (status) {
        reply_status(s, req, start, status);
    } else if (o == SIM_RATE_LIMITED) {
        reply_status(s, req, start, 429);
    } else if (o == SIM_SERVER_ERROR) {
        reply_detail(s, req, 500, start, "Internal Server Error");
    } else {
        struct sim_task *k = sim_task_add(s, SIM_EP_BFL, model, prompt, &t, o);
        k->w = tmp.w;
        k->h = tmp.h;
        k->seed = tmp.seed;
        k->variant = sim_fnv1a(prompt) ^ (uint32_t)(k->seed + 1) * 0x9e3779b1u;
        sim_task_bill(s, k, 0);
        char *origin = sim_origin(s, req);
        char *polling = imgq_xasprintf("%s/bfl/v1/get_result?id=%s", origin, k->id);
        free(origin);
        double mp = round((double)k->w * k->h / 1e4) / 100.0;
        reply_bfl(s, req, 200, start,
                  json_pack("{s:s, s:s, s:f, s:i, s:f}", "id", k->id, "polling_url", polling,
                            "cost", cost_of(model, k->w, k->h), "input_mp", 0, "output_mp", mp));
        free(polling);
    }
    json_decref(root);
}

/* ---- get_result ----------------------------------------------------------------------------- */

static void get_result(struct sim *s, imgq_httpd_request *req, uint64_t start)
{
    s->polls[SIM_EP_BFL]++;
    const char *q = imgq_httpd_request_query(req);
    const char *p = strncmp(q, "id=", 3) == 0 ? q + 3 : strstr(q, "&id=");
    if (p && *p == '&')
        p += 4;
    char id[64];
    size_t n = p ? strcspn(p, "&") : 0;
    if (!p || n == 0 || n >= sizeof(id)) {
        reply_invalid(s, req, start, "query", "id", "missing", "Field required");
        return;
    }
    memcpy(id, p, n);
    id[n] = '\0';
    struct sim_task *k = sim_task_find(s, SIM_EP_BFL, id);
    if (k && sim_task_take_503(k)) {
        reply_detail(s, req, 503, start, "Service Unavailable");
        return;
    }
    json_t *root = json_pack("{s:s, s:n, s:n, s:n, s:n}", "id", id, "result", "progress", "details",
                             "preview");
    if (!k) {
        json_object_set_new(root, "status", json_string("Task not found"));
        reply_bfl(s, req, 200, start, root);
        return;
    }
    enum sim_task_phase phase = sim_task_phase(s, k);
    const char *status = "Pending";
    if (phase == SIM_TASK_RUNNING) {
        uint64_t ran = sim_now_ms(s) - k->created_ms - k->latency_ms / 3;
        uint64_t span = k->latency_ms - k->latency_ms / 3;
        json_object_set_new(
            root, "progress",
            json_real(span ? floor(100.0 * (double)ran / (double)span) / 100.0 : 0.0));
    } else if (phase == SIM_TASK_DONE && k->end == SIM_TASK_FAILED) {
        status = "Error";
        json_object_set_new(root, "details",
                            json_pack("{s:s}", "error", "Generation failed, please retry."));
    } else if (phase == SIM_TASK_DONE && k->end == SIM_TASK_PROMPT_BLOCKED) {
        status = "Request Moderated";
        json_object_set_new(root, "details",
                            json_pack("{s:[s]}", "Moderation Reasons", "Input prompt"));
    } else if (phase == SIM_TASK_DONE && k->end == SIM_TASK_MODERATED) {
        status = "Content Moderated";
        json_object_set_new(root, "details",
                            json_pack("{s:[s]}", "Moderation Reasons", "Output image"));
    } else if (phase == SIM_TASK_DONE) {
        status = "Ready";
        char *url = sim_task_file_url(s, req, k, 0);
        double t0 = (double)sim_task_wall_ms(k, k->created_ms + k->latency_ms / 3) / 1000.0;
        double t1 = (double)sim_task_wall_ms(k, sim_task_done_ms(k)) / 1000.0;
        json_object_set_new(
            root, "result",
            json_pack("{s:s, s:s, s:I, s:f, s:f, s:f}", "sample", url, "prompt", k->prompt, "seed",
                      (json_int_t)(k->seed >= 0 ? k->seed : (k->variant & 0x7fffffff)),
                      "start_time", t0, "end_time", t1, "duration", t1 - t0));
        json_object_set_new(root, "progress", json_real(1.0));
        free(url);
    }
    json_object_set_new(root, "status", json_string(status));
    reply_bfl(s, req, 200, start, root);
}

/* ---- Entry ---------------------------------------------------------------------------------- */

void sim_bfl_handle(struct sim *s, imgq_httpd_request *req)
{
    uint64_t start = sim_now_ms(s);
    const char *path = imgq_httpd_request_path(req) + strlen("/bfl/v1/");
    const char *method = imgq_httpd_request_method(req);
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;

    if (!sim_auth_key(req, "x-key", NULL)) {
        reply_detail(s, req, 403, start, "Not authenticated");
        return;
    }
    if (strcmp(path, "get_result") == 0 && get)
        get_result(s, req, start);
    else if (strcmp(method, "POST") == 0 && *path && !strchr(path, '/') &&
             strcmp(path, "get_result") != 0 && strlen(path) < 128)
        submit(s, req, start, path);
    else
        reply_detail(s, req, 404, start, "Not Found");
}
