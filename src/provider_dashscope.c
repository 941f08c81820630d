/*
 * provider_dashscope.c - the Alibaba Model Studio / DashScope task API (wan, qwen-image): a
 * submit with X-DashScope-Async: enable answers a task id, polled at /api/v1/tasks/ID until
 * SUCCEEDED (result URLs, usage.image_count) or FAILED (output.code, e.g. DataInspectionFailed
 * for moderation).  Handle: the task id.  A job with reference images goes instead to the
 * synchronous multimodal-generation API (the image-edit models), whose answer has the result
 * URLs at once.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imgq/alloc.h"
#include "imgq/provider.h"
#include "provider_async.h"

/* parameters: n, watermark off, size "W*H", seed; negative_prompt too when asked (edits). */
static json_t *parameters(const struct imgq_job_spec *s, int n, bool negative)
{
    json_t *params = json_pack("{s:i, s:b}", "n", n > 0 ? n : 1, "watermark", 0);
    if (params && s->width > 0 && s->height > 0) {
        char size[32];
        snprintf(size, sizeof size, "%d*%d", s->width, s->height);
        json_object_set_new(params, "size", json_string(size));
    }
    if (params && s->has_seed)
        json_object_set_new(params, "seed", json_integer(s->seed));
    if (params && negative && s->negative_prompt)
        json_object_set_new(params, "negative_prompt", json_string(s->negative_prompt));
    return params;
}

/*
 * A job with reference images: the synchronous multimodal-generation API (the task API's
 * text2image takes none), under the catalog's provider_edit_model (else the model id),
 *   {"model", "input": {"messages": [{"role": "user", "content":
 *        [{"image": DATA-URI}, ..., {"text": PROMPT}]}]}, "parameters": {...}}
 * one image item per reference in the job's order, then the one text item.  The answer
 * carries the result URLs at once (imgq_dashscope_parse).  A reference the worker did not
 * fetch goes as an empty data URI, which the API refuses (400).
 */
static imgq_http_request *build_edit(const struct imgq_provider_endpoint *ep,
                                     const struct imgq_job_spec *s, int n)
{
    static const struct imgq_ref_data none = {NULL, 0, ""};
    json_t *content = json_array();
    for (int i = 0; i < s->nrefs; i++) {
        char *uri = imgq__provider_data_uri(s->ref_data ? &s->ref_data[i] : &none);
        json_array_append_new(content, json_pack("{s:s}", "image", uri));
        free(uri);
    }
    json_array_append_new(content, json_pack("{s:s}", "text", s->prompt ? s->prompt : ""));
    const char *model = ep->edit_model_id ? ep->edit_model_id
                        : ep->model_id    ? ep->model_id
                                          : s->model;
    json_t *body = json_pack("{s:s, s:{s:[{s:s, s:o}]}, s:o}", "model", model ? model : "", "input",
                             "messages", "role", "user", "content", content, "parameters",
                             parameters(s, n, true));
    return imgq__provider_json_post(
        ep,
        imgq_xasprintf("%s/api/v1/services/aigc/multimodal-generation/generation", ep->base_url),
        body, "Authorization", "Bearer ");
}

imgq_http_request *imgq_dashscope_build(const struct imgq_provider_endpoint *ep,
                                        const struct imgq_job_spec *s, int n)
{
    if (s->nrefs > 0)
        return build_edit(ep, s, n);
    json_t *input = json_pack("{s:s}", "prompt", s->prompt ? s->prompt : "");
    if (input && s->negative_prompt)
        json_object_set_new(input, "negative_prompt", json_string(s->negative_prompt));
    json_t *params = parameters(s, n, false);
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

/* The synchronous answer of an edit: output.choices[].message.content[].image URLs, usage
 * {width, height, image_count}. */
static void parse_sync(json_t *root, struct imgq_provider_result *out)
{
    size_t i, k;
    json_t *choice, *item;
    json_array_foreach(json_object_get(json_object_get(root, "output"), "choices"), i, choice)
    {
        json_array_foreach(json_object_get(json_object_get(choice, "message"), "content"), k, item)
        {
            json_t *url = json_object_get(item, "image");
            if (url && !imgq__async_add_url(out, json_string_value(url))) {
                imgq__async_fail(out, IMGQ_CLASS_BAD_RESPONSE,
                                 "200 response: output.choices[%zu].message.content[%zu].image "
                                 "is not an http(s) URL",
                                 i, k);
                return;
            }
        }
    }
    if (out->nimage_urls == 0) {
        imgq__async_fail(out, IMGQ_CLASS_BAD_RESPONSE, "200 response without result images");
        return;
    }
    imgq__async_done(out, out->nimage_urls, json_object_get(root, "usage"), "usage", "image_count");
}

void imgq_dashscope_parse(const imgq_http_response *res, int n, struct imgq_provider_result *out)
{
    (void)n;
    json_t *root = start(res, out);
    if (!root)
        return;
    json_t *o = json_object_get(root, "output");
    if (json_object_get(o, "choices")) { /* an edit, answered at once */
        parse_sync(root, out);
        json_decref(root);
        return;
    }
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
