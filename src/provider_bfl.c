/*
 * provider_bfl.c - the Black Forest Labs FLUX API: POST BASE/MODEL answers an id and a
 * polling_url (maybe on another cluster, e.g. api.eu2.bfl.ai), GET it until Ready
 * (result.sample, a signed URL valid for minutes), a moderation status, or Error.  One image
 * per call.  Handle: the polling URL (the task id when the submit answer has none).  A poll
 * answer does not repeat the polling URL, so a Pending answer leaves poll "" (same handle).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "imgq/alloc.h"
#include "imgq/provider.h"
#include "provider_async.h"

imgq_http_request *imgq_bfl_build(const struct imgq_provider_endpoint *ep,
                                  const struct imgq_job_spec *s, int n)
{
    (void)n; /* one image per call: n > 1 fans out */
    json_t *body =
        json_pack("{s:s, s:s}", "prompt", s->prompt ? s->prompt : "", "output_format", "png");
    if (body && s->width > 0 && s->height > 0) {
        json_object_set_new(body, "width", json_integer(s->width));
        json_object_set_new(body, "height", json_integer(s->height));
    }
    if (body && s->has_seed)
        json_object_set_new(body, "seed", json_integer(s->seed));
    if (body && s->has_guidance)
        json_object_set_new(body, "guidance", json_real(s->guidance_scale));
    const char *model = ep->model_id ? ep->model_id : (s->model ? s->model : "");
    char *path = imgq__async_escape(model, true);
    char *url = imgq_xasprintf("%s/%s", ep->base_url, path);
    free(path);
    return imgq__provider_json_post(ep, url, body, "x-key", "");
}

imgq_http_request *imgq_bfl_build_poll(const struct imgq_provider_endpoint *ep, const char *handle)
{
    const char *h = handle ? handle : "";
    if (strncasecmp(h, "http://", 7) == 0 || strncasecmp(h, "https://", 8) == 0)
        return imgq__async_get(ep, imgq_xstrdup(h),
                               imgq_provider_url_trusted(ep->base_url, h, true), "x-key", "");
    char *id = imgq__async_escape(h, false);
    imgq_http_request *req = imgq__async_get(
        ep, imgq_xasprintf("%s/get_result?id=%s", ep->base_url, id), true, "x-key", "");
    free(id);
    return req;
}

/* An error answer: {"detail": "..."} or FastAPI's {"detail": [{"loc", "msg", "type"}]}. */
static void http_error(const imgq_http_response *res, json_t *root,
                       struct imgq_provider_result *out)
{
    json_t *detail = json_object_get(root, "detail");
    json_t *first = json_array_get(detail, 0);
    const char *msg = json_is_string(detail) ? json_string_value(detail)
                                             : json_string_value(json_object_get(first, "msg"));
    imgq__provider_error_text(out, msg, json_string_value(json_object_get(first, "type")));
    /* 402: out of credits, which retrying does not fix. */
    out->cls =
        res->status == 402 ? IMGQ_CLASS_AUTH : imgq__provider_status_class(res->status, false);
    if (out->cls == IMGQ_CLASS_RATE_LIMIT)
        imgq__async_retry_after(res, out);
}

static json_t *start(const imgq_http_response *res, struct imgq_provider_result *out)
{
    if (imgq__async_start(res, out))
        return NULL;
    json_t *root = imgq__provider_json(res, out);
    if (res->status != 200) {
        http_error(res, root, out);
        json_decref(root);
        return NULL;
    }
    if (!json_is_object(root)) {
        imgq__async_fail(out, IMGQ_CLASS_BAD_RESPONSE, "200 response is not a JSON object");
        return NULL;
    }
    imgq__async_copy(out->request_id, sizeof out->request_id, root, "id");
    return root;
}

void imgq_bfl_parse(const imgq_http_response *res, int n, struct imgq_provider_result *out)
{
    (void)n;
    json_t *root = start(res, out);
    if (!root)
        return;
    const char *url = json_string_value(json_object_get(root, "polling_url"));
    const char *id = json_string_value(json_object_get(root, "id"));
    if (url)
        imgq__async_pending(out, url, true, "Pending");
    else if (id && *id)
        imgq__async_pending(out, id, false, "Pending");
    else
        imgq__async_fail(out, IMGQ_CLASS_BAD_RESPONSE, "200 response without polling_url or id");
    json_decref(root);
}

/* A final status other than Ready: its word, and the details BFL gave, as the message. */
static void refused(json_t *root, const char *status, enum imgq_error_class c,
                    struct imgq_provider_result *out)
{
    json_t *details = json_object_get(root, "details");
    char *text = json_is_string(details)             ? imgq_xstrdup(json_string_value(details))
                 : details && !json_is_null(details) ? json_dumps(details, JSON_COMPACT)
                                                     : NULL;
    imgq__async_fail(out, c, "%s%s%s", status, text ? ": " : "", text ? text : "");
    free(text);
    snprintf(out->code, sizeof out->code, "%s", status);
}

void imgq_bfl_parse_poll(const imgq_http_response *res, int n, struct imgq_provider_result *out)
{
    (void)n;
    json_t *root = start(res, out);
    if (!root)
        return;
    const char *status = json_string_value(json_object_get(root, "status"));
    snprintf(out->task_status, sizeof out->task_status, "%s", status ? status : "");
    if (!status) {
        imgq__async_fail(out, IMGQ_CLASS_BAD_RESPONSE, "200 response without a status");
    } else if (strcmp(status, "Pending") == 0) {
        imgq__async_pending(out, NULL, false, status);
    } else if (strcmp(status, "Ready") == 0) {
        json_t *sample = json_object_get(json_object_get(root, "result"), "sample");
        if (imgq__async_add_url(out, json_string_value(sample)))
            imgq__async_done(out, 1, NULL, NULL, NULL); /* no usage: the image is counted */
        else
            imgq__async_fail(out, IMGQ_CLASS_BAD_RESPONSE, "Ready without a result.sample URL");
    } else if (strcmp(status, "Request Moderated") == 0 ||
               strcmp(status, "Content Moderated") == 0) {
        refused(root, status, IMGQ_CLASS_CONTENT_POLICY, out);
    } else if (strcmp(status, "Error") == 0 || strcmp(status, "Task not found") == 0) {
        refused(root, status, IMGQ_CLASS_SERVER, out); /* a new submission may work */
    } else {
        imgq__async_fail(out, IMGQ_CLASS_BAD_RESPONSE, "unknown status %s", status);
    }
    json_decref(root);
}
