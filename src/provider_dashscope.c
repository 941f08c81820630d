/*
 * provider_dashscope.c - the Alibaba Model Studio / DashScope task API (wan, qwen-image): a
 * submit with X-DashScope-Async: enable answers a task id, polled at /api/v1/tasks/ID until
 * SUCCEEDED (result URLs, usage.image_count) or FAILED (output.code, e.g. DataInspectionFailed
 * for moderation).  Handle: the task id.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imgq/alloc.h"
#include "imgq/provider.h"
#include "provider_async.h"

imgq_http_request *imgq_dashscope_build(const struct imgq_provider_endpoint *ep,
                                        const struct imgq_job_spec *s, int n)
{
    json_t *input = json_pack("{s:s}", "prompt", s->prompt ? s->prompt : "");
    if (input && s->negative_prompt)
        json_object_set_new(input, "negative_prompt", json_string(s->negative_prompt));
    json_t *params = json_pack("{s:i, s:b}", "n", n > 0 ? n : 1, "watermark", 0);
    if (params && s->width > 0 && s->height > 0) {
        char size[32];
        snprintf(size, sizeof size, "%d*%d", s->width, s->height);
        json_object_set_new(params, "size", json_string(size));
    }
    if (params && s->has_seed)
        json_object_set_new(params, "seed", json_integer(s->seed));
    const char *model = ep->model_id ? ep->model_id : s->model;
    json_t *body = json_pack("{s:s, s:o, s:o}", "model", model ? model : "", "input", input,
                             "parameters", params);
    imgq_http_request *req = imgq__provider_json_post(
        ep, imgq_xasprintf("%s/api/v1/services/aigc/text2image/image-synthesis", ep->base_url),
        body, "Authorization", "Bearer ");
    int refused = imgq_http_request_add_header(req, "X-DashScope-Async", "enable");
    (void)refused;
    return req;
}

imgq_http_request *imgq_dashscope_build_poll(const struct imgq_provider_endpoint *ep,
                                             const char *handle)
{
    /* The base URL is the configured API host: the key always goes with it. */
    char *id = imgq__async_escape(handle, false);
    imgq_http_request *req =
        imgq__async_get(ep, imgq_xasprintf("%s/api/v1/tasks/%s", ep->base_url, id), true,
                        "Authorization", "Bearer ");
    free(id);
    return req;
}

static bool code_has(const char *code, const char *what)
{
    return code && strstr(code, what);
}

/* A non-200 answer: {"request_id", "code", "message"}. */
static void http_error(const imgq_http_response *res, json_t *root,
                       struct imgq_provider_result *out)
{
    const char *code = json_string_value(json_object_get(root, "code"));
    imgq__provider_error_text(out, json_string_value(json_object_get(root, "message")), code);
    out->cls = imgq__provider_status_class(res->status, code_has(code, "DataInspectionFailed"));
    if (out->cls == IMGQ_CLASS_RATE_LIMIT)
        imgq__async_retry_after(res, out);
}

/* Common start of both answers: transport, request id, JSON; NULL if the result is final. */
static json_t *start(const imgq_http_response *res, struct imgq_provider_result *out)
{
    if (imgq__async_start(res, out))
        return NULL;
    json_t *root = imgq__provider_json(res, out);
    imgq__async_copy(out->request_id, sizeof out->request_id, root, "request_id");
    if (res->status != 200) {
        http_error(res, root, out);
        json_decref(root);
        return NULL;
    }
    if (!json_is_object(json_object_get(root, "output"))) {
        imgq__async_fail(out, IMGQ_CLASS_BAD_RESPONSE, "200 response without 'output'");
        json_decref(root);
        return NULL;
    }
    return root;
}

void imgq_dashscope_parse(const imgq_http_response *res, int n, struct imgq_provider_result *out)
{
    (void)n;
    json_t *root = start(res, out);
    if (!root)
        return;
    json_t *o = json_object_get(root, "output");
    const char *id = json_string_value(json_object_get(o, "task_id"));
    if (!id || !*id)
        imgq__async_fail(out, IMGQ_CLASS_BAD_RESPONSE, "200 response without output.task_id");
    else
        imgq__async_pending(out, id, false, json_string_value(json_object_get(o, "task_status")));
    json_decref(root);
}

static void task_failed(json_t *o, const char *status, struct imgq_provider_result *out)
{
    const char *code = json_string_value(json_object_get(o, "code"));
    const char *msg = json_string_value(json_object_get(o, "message"));
    if (code_has(code, "DataInspectionFailed"))
        out->cls = IMGQ_CLASS_CONTENT_POLICY;
    else if (code_has(code, "InvalidParameter"))
        out->cls = IMGQ_CLASS_INVALID_REQUEST;
    else
        out->cls = IMGQ_CLASS_SERVER; /* failed, canceled or expired: try again */
    if (msg && *msg)
        snprintf(out->message, sizeof out->message, "%s", msg);
    else
        snprintf(out->message, sizeof out->message, "task %s", status);
    snprintf(out->code, sizeof out->code, "%s", code ? code : "");
}

void imgq_dashscope_parse_poll(const imgq_http_response *res, int n,
                               struct imgq_provider_result *out)
{
    (void)n;
    json_t *root = start(res, out);
    if (!root)
        return;
    json_t *o = json_object_get(root, "output");
    const char *status = json_string_value(json_object_get(o, "task_status"));
    snprintf(out->task_status, sizeof out->task_status, "%s", status ? status : "");
    if (!status) {
        imgq__async_fail(out, IMGQ_CLASS_BAD_RESPONSE, "200 response without task_status");
    } else if (strcmp(status, "PENDING") == 0 || strcmp(status, "RUNNING") == 0 ||
               strcmp(status, "SUSPENDED") == 0) {
        imgq__async_pending(out, json_string_value(json_object_get(o, "task_id")), false, status);
    } else if (strcmp(status, "SUCCEEDED") == 0) {
        size_t i;
        json_t *r;
        bool moderated = false; /* a result moderated away */
        const char *why = NULL;
        json_array_foreach(json_object_get(o, "results"), i, r)
        {
            if (imgq__async_add_url(out, json_string_value(json_object_get(r, "url"))))
                continue;
            if (code_has(json_string_value(json_object_get(r, "code")), "DataInspectionFailed")) {
                moderated = true;
                why = json_string_value(json_object_get(r, "message"));
            }
        }
        if (out->nimage_urls > 0) {
            /* usage.image_count is the billing count; without it the URLs are counted. */
            imgq__async_done(out, out->nimage_urls, json_object_get(root, "usage"), "usage",
                             "image_count");
        } else if (moderated) {
            imgq__async_fail(out, IMGQ_CLASS_CONTENT_POLICY, "%s",
                             why ? why : "result refused by content moderation");
            snprintf(out->code, sizeof out->code, "DataInspectionFailed");
        } else {
            imgq__async_fail(out, IMGQ_CLASS_BAD_RESPONSE, "task SUCCEEDED without result URLs");
        }
    } else if (strcmp(status, "FAILED") == 0 || strcmp(status, "CANCELED") == 0 ||
               strcmp(status, "UNKNOWN") == 0) {
        task_failed(o, status, out);
    } else {
        imgq__async_fail(out, IMGQ_CLASS_BAD_RESPONSE, "unknown task_status %s", status);
    }
    json_decref(root);
}
