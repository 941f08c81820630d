/*
 * provider_fal.c - the fal.ai queue: POST BASE/MODEL_ID answers request_id, status_url and
 * response_url; GET status_url while IN_QUEUE / IN_PROGRESS, and once COMPLETED GET
 * response_url for the model's output (images[].url).  fal reports no usage: images are
 * counted.  Handle: the status URL, then the response URL (the status answer names it).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "imgq/alloc.h"
#include "imgq/provider.h"
#include "provider_async.h"

imgq_http_request *imgq_fal_build(const struct imgq_provider_endpoint *ep,
                                  const struct imgq_job_spec *s, int n)
{
    json_t *body = json_pack("{s:s, s:i, s:s}", "prompt", s->prompt ? s->prompt : "", "num_images",
                             n > 0 ? n : 1, "output_format", "png");
    if (body && s->width > 0 && s->height > 0)
        json_object_set_new(body, "image_size",
                            json_pack("{s:i, s:i}", "width", s->width, "height", s->height));
    if (body && s->has_seed)
        json_object_set_new(body, "seed", json_integer(s->seed));
    if (body && s->has_guidance)
        json_object_set_new(body, "guidance_scale", json_real(s->guidance_scale));
    const char *model = ep->model_id ? ep->model_id : (s->model ? s->model : "");
    char *path = imgq__async_escape(model, true);
    char *url = imgq_xasprintf("%s/%s", ep->base_url, path);
    free(path);
    return imgq__provider_json_post(ep, url, body, "Authorization", "Key ");
}

imgq_http_request *imgq_fal_build_poll(const struct imgq_provider_endpoint *ep, const char *handle)
{
    const char *h = handle ? handle : "";
    return imgq__async_get(ep, imgq_xstrdup(h), imgq_provider_url_trusted(ep->base_url, h, false),
                           "Authorization", "Key ");
}

static bool header_true(const imgq_http_response *res, const char *name)
{
    const char *v = imgq_http_response_header(res, name);
    return v && strcasecmp(v, "true") == 0;
}

/*
 * An error answer: {"detail": "..."} or {"detail": [{"loc", "msg", "type"}...]}, maybe with
 * "error_type" (infrastructure), and the X-Fal-Retryable / X-Fal-Error-Type headers.
 */
static void http_error(const imgq_http_response *res, json_t *root,
                       struct imgq_provider_result *out)
{
    json_t *detail = json_object_get(root, "detail");
    const char *msg = json_string_value(detail);
    const char *code = json_string_value(json_object_get(root, "error_type"));
    bool refused = false;
    size_t i;
    json_t *d;
    json_array_foreach(detail, i, d)
    {
        const char *type = json_string_value(json_object_get(d, "type"));
        if (type && strcmp(type, "content_policy_violation") == 0) {
            refused = true;
            msg = json_string_value(json_object_get(d, "msg"));
            code = type;
        } else if (i == 0 && !refused) {
            msg = json_string_value(json_object_get(d, "msg"));
            code = code ? code : type;
        }
    }
    const char *etype = imgq_http_response_header(res, "x-fal-error-type");
    if (!code)
        code = etype;
    imgq__provider_error_text(out, msg, code);
    out->cls = imgq__provider_status_class(res->status, refused);
    if (out->cls == IMGQ_CLASS_INVALID_REQUEST &&
        (etype || header_true(res, "x-fal-retryable") || header_true(res, "x-fal-needs-retry")))
        out->cls = IMGQ_CLASS_SERVER; /* fal says trying again may work */
    else if (out->cls == IMGQ_CLASS_RATE_LIMIT)
        imgq__async_retry_after(res, out);
}

/* Common start: transport, request id, JSON; NULL if the result is final. */
static json_t *start(const imgq_http_response *res, struct imgq_provider_result *out)
{
    if (imgq__async_start(res, out))
        return NULL;
    const char *rid = imgq_http_response_header(res, "x-fal-request-id");
    if (rid)
        snprintf(out->request_id, sizeof out->request_id, "%s", rid);
    json_t *root = imgq__provider_json(res, out);
    if (res->status != 200 && res->status != 202) {
        http_error(res, root, out);
        json_decref(root);
        return NULL;
    }
    if (!json_is_object(root)) {
        imgq__async_fail(out, IMGQ_CLASS_BAD_RESPONSE, "%ld response is not a JSON object",
                         res->status);
        return NULL;
    }
    if (!rid)
        imgq__async_copy(out->request_id, sizeof out->request_id, root, "request_id");
    return root;
}

void imgq_fal_parse(const imgq_http_response *res, int n, struct imgq_provider_result *out)
{
    (void)n;
    json_t *root = start(res, out);
    if (!root)
        return;
    const char *status_url = json_string_value(json_object_get(root, "status_url"));
    if (!status_url)
        imgq__async_fail(out, IMGQ_CLASS_BAD_RESPONSE, "queue answer without status_url");
    else
        imgq__async_pending(out, status_url, true,
                            json_string_value(json_object_get(root, "status")));
    json_decref(root);
}

/* IN_QUEUE / IN_PROGRESS: poll status_url (or response_url + "/status"), else the same URL. */
static void still_pending(json_t *root, const char *status, struct imgq_provider_result *out)
{
    const char *st = json_string_value(json_object_get(root, "status_url"));
    const char *resp = json_string_value(json_object_get(root, "response_url"));
    if (st || !resp) {
        imgq__async_pending(out, st, true, status);
        return;
    }
    char *u = imgq_xasprintf("%s/status", resp);
    imgq__async_pending(out, u, true, status);
    free(u);
}

/* COMPLETED: the output is at response_url (or, lacking it, status_url without "/status"). */
static void completed(json_t *root, struct imgq_provider_result *out)
{
    const char *resp = json_string_value(json_object_get(root, "response_url"));
    if (resp) {
        if (imgq__async_pending(out, resp, true, "COMPLETED"))
            out->poll_after_ms = 0;
        return;
    }
    const char *st = json_string_value(json_object_get(root, "status_url"));
    size_t len = st ? strlen(st) : 0;
    if (len > 7 && strcmp(st + len - 7, "/status") == 0) {
        char *r = imgq_xstrndup(st, len - 7);
        if (imgq__async_pending(out, r, true, "COMPLETED"))
            out->poll_after_ms = 0;
        free(r);
        return;
    }
    imgq__async_fail(out, IMGQ_CLASS_BAD_RESPONSE, "COMPLETED without response_url");
}

/* The model's output: images[].url, with has_nsfw_concepts[i] marking a blanked image. */
static void output(json_t *root, struct imgq_provider_result *out)
{
    json_t *images = json_object_get(root, "images");
    json_t *nsfw = json_object_get(root, "has_nsfw_concepts");
    size_t i, flagged = 0;
    json_t *im;
    json_array_foreach(images, i, im)
    {
        if (json_is_true(json_array_get(nsfw, i)))
            flagged++;
        else
            imgq__async_add_url(out, json_string_value(json_object_get(im, "url")));
    }
    if (out->nimage_urls > 0) {
        /* fal bills every image it returned, a blanked one too. */
        imgq__async_done(out, (int64_t)json_array_size(images), NULL, NULL, NULL);
    } else if (flagged) {
        imgq__async_fail(out, IMGQ_CLASS_CONTENT_POLICY, "output flagged by the safety checker");
        snprintf(out->code, sizeof out->code, "has_nsfw_concepts");
    } else {
        imgq__async_fail(out, IMGQ_CLASS_BAD_RESPONSE, "output without image URLs");
    }
}

void imgq_fal_parse_poll(const imgq_http_response *res, int n, struct imgq_provider_result *out)
{
    (void)n;
    json_t *root = start(res, out);
    if (!root)
        return;
    const char *status = json_string_value(json_object_get(root, "status"));
    if (json_is_array(json_object_get(root, "images"))) {
        output(root, out);
    } else if (!status) {
        imgq__async_fail(out, IMGQ_CLASS_BAD_RESPONSE, "answer with neither status nor images");
    } else if (strcmp(status, "IN_QUEUE") == 0 || strcmp(status, "IN_PROGRESS") == 0) {
        still_pending(root, status, out);
    } else if (strcmp(status, "COMPLETED") == 0) {
        completed(root, out);
    } else {
        snprintf(out->task_status, sizeof out->task_status, "%s", status);
        imgq__async_fail(out, IMGQ_CLASS_SERVER, "request %s", status);
        imgq__async_copy(out->code, sizeof out->code, root, "error_type");
    }
    json_decref(root);
}
