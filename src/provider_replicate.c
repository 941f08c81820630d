/*
 * provider_replicate.c - the Replicate predictions API: POST BASE/models/OWNER/NAME/predictions
 * (or BASE/predictions with a version, for a model id "OWNER/NAME:VERSION") with a short
 * Prefer: wait, then GET urls.get until the prediction succeeded (output: a URL or an array of
 * URLs; metrics as the usage JSON), failed, or was canceled.  Submit and poll answer the same
 * prediction object.  Handle: urls.get, or the prediction id when the answer has no URL.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "imgq/alloc.h"
#include "imgq/provider.h"
#include "provider_async.h"

/* Replicate's FLUX-style aspect ratios and the sizes they stand for. */
static const struct {
    int w, h;
    const char *ratio;
} aspects[] = {{1024, 1024, "1:1"}, {1344, 768, "16:9"}, {768, 1344, "9:16"}, {1216, 832, "3:2"},
               {832, 1216, "2:3"},  {1152, 896, "4:3"},  {896, 1152, "3:4"},  {1088, 896, "5:4"},
               {896, 1088, "4:5"},  {1536, 640, "21:9"}, {640, 1536, "9:21"}};

static const char *aspect_of(int w, int h)
{
    for (size_t i = 0; i < sizeof aspects / sizeof aspects[0]; i++)
        if (aspects[i].w == w && aspects[i].h == h)
            return aspects[i].ratio;
    return "custom"; /* models that take width/height use them then */
}

imgq_http_request *imgq_replicate_build(const struct imgq_provider_endpoint *ep,
                                        const struct imgq_job_spec *s, int n)
{
    json_t *input = json_pack("{s:s, s:i, s:s}", "prompt", s->prompt ? s->prompt : "",
                              "num_outputs", n > 0 ? n : 1, "output_format", "png");
    if (input && s->width > 0 && s->height > 0) {
        json_object_set_new(input, "width", json_integer(s->width));
        json_object_set_new(input, "height", json_integer(s->height));
        json_object_set_new(input, "aspect_ratio", json_string(aspect_of(s->width, s->height)));
    }
    if (input && s->has_seed)
        json_object_set_new(input, "seed", json_integer(s->seed));
    if (input && s->negative_prompt)
        json_object_set_new(input, "negative_prompt", json_string(s->negative_prompt));
    if (input && s->has_guidance)
        json_object_set_new(input, "guidance", json_real(s->guidance_scale));

    const char *model = ep->model_id ? ep->model_id : (s->model ? s->model : "");
    const char *colon = strchr(model, ':');
    json_t *body;
    char *url;
    if (colon) { /* OWNER/NAME:VERSION: a community model pinned to a version */
        body = json_pack("{s:s, s:o}", "version", colon + 1, "input", input);
        url = imgq_xasprintf("%s/predictions", ep->base_url);
    } else {
        body = json_pack("{s:o}", "input", input);
        char *path = imgq__async_escape(model, true);
        url = imgq_xasprintf("%s/models/%s/predictions", ep->base_url, path);
        free(path);
    }
    imgq_http_request *req = imgq__provider_json_post(ep, url, body, "Authorization", "Bearer ");
    /* Held briefly: until the answer arrives its handle is unknown, so a worker dying then
     * means a second submission by the worker taking over.  A quick model still answers
     * within the hold, without a poll. */
    int refused = imgq_http_request_add_header(req, "Prefer", "wait=1");
    (void)refused;
    return req;
}

static bool is_url_handle(const char *h)
{
    return strncasecmp(h, "http://", 7) == 0 || strncasecmp(h, "https://", 8) == 0;
}

imgq_http_request *imgq_replicate_build_poll(const struct imgq_provider_endpoint *ep,
                                             const char *handle)
{
    const char *h = handle ? handle : "";
    if (is_url_handle(h))
        return imgq__async_get(ep, imgq_xstrdup(h),
                               imgq_provider_url_trusted(ep->base_url, h, false), "Authorization",
                               "Bearer ");
    char *id = imgq__async_escape(h, false);
    imgq_http_request *req =
        imgq__async_get(ep, imgq_xasprintf("%s/predictions/%s", ep->base_url, id), true,
                        "Authorization", "Bearer ");
    free(id);
    return req;
}

static bool contains_ci(const char *s, const char *what)
{
    return s && strcasestr(s, what);
}

/* "Request was throttled. Your rate limit resets in ~30s." -> 30000: the duration after the
 * '~', up to the sentence's end. */
static long throttle_hint_ms(const char *detail)
{
    const char *p = detail ? strstr(detail, "~") : NULL;
    if (!p || !isdigit((unsigned char)p[1]))
        return -1;
    size_t n = strspn(p + 1, "0123456789.hmsun");
    while (n > 0 && p[n] == '.') /* the full stop after "30s" */
        n--;
    return imgq_retry_hint_ms(IMGQ_HINT_DURATION, p + 1, n, 0, IMGQ_RETRY_HINT_CEILING_MS);
}

static void http_error(const imgq_http_response *res, json_t *root,
                       struct imgq_provider_result *out)
{
    const char *detail = json_string_value(json_object_get(root, "detail"));
    const char *title = json_string_value(json_object_get(root, "title"));
    imgq__provider_error_text(out, detail ? detail : title, title);
    /* 402: no credit left; retrying will not help until someone pays. */
    out->cls =
        res->status == 402 ? IMGQ_CLASS_AUTH : imgq__provider_status_class(res->status, false);
    if (out->cls == IMGQ_CLASS_RATE_LIMIT) {
        imgq__async_retry_after(res, out);
        if (out->retry_after_ms < 0)
            out->retry_after_ms = throttle_hint_ms(detail);
    }
}

static void succeeded(json_t *root, struct imgq_provider_result *out)
{
    json_t *output = json_object_get(root, "output");
    if (json_is_string(output)) {
        imgq__async_add_url(out, json_string_value(output));
    } else {
        size_t i;
        json_t *v;
        json_array_foreach(output, i, v) imgq__async_add_url(out, json_string_value(v));
    }
    if (out->nimage_urls == 0) {
        imgq__async_fail(out, IMGQ_CLASS_BAD_RESPONSE, "prediction succeeded without output URLs");
        return;
    }
    /* Billed per output image.  The metrics (times) are kept as the usage; an image_count
     * there, if any, is the provider's count. */
    imgq__async_done(out, out->nimage_urls, json_object_get(root, "metrics"), "metrics",
                     "image_count");
}

static void failed(json_t *root, const char *status, struct imgq_provider_result *out)
{
    json_t *e = json_object_get(root, "error");
    const char *msg = json_string_value(e);
    bool refused =
        strcmp(status, "failed") == 0 &&
        (contains_ci(msg, "nsfw") || contains_ci(msg, "safety") || contains_ci(msg, "sensitive"));
    imgq__async_fail(out, refused ? IMGQ_CLASS_CONTENT_POLICY : IMGQ_CLASS_SERVER, "%s",
                     msg ? msg : "prediction did not succeed");
    snprintf(out->code, sizeof out->code, "%s", status);
}

/* A prediction object, from the submit or a poll. */
static void prediction(const imgq_http_response *res, struct imgq_provider_result *out)
{
    if (imgq__async_start(res, out))
        return;
    json_t *root = imgq__provider_json(res, out);
    if (res->status < 200 || res->status > 202) {
        http_error(res, root, out);
        json_decref(root);
        return;
    }
    imgq__async_copy(out->request_id, sizeof out->request_id, root, "id");
    const char *status = json_string_value(json_object_get(root, "status"));
    snprintf(out->task_status, sizeof out->task_status, "%s", status ? status : "");
    if (!status) {
        imgq__async_fail(out, IMGQ_CLASS_BAD_RESPONSE, "response without a prediction status");
    } else if (strcmp(status, "starting") == 0 || strcmp(status, "processing") == 0) {
        const char *get = json_string_value(json_object_get(json_object_get(root, "urls"), "get"));
        const char *id = json_string_value(json_object_get(root, "id"));
        if (get)
            imgq__async_pending(out, get, true, status);
        else if (id && *id)
            imgq__async_pending(out, id, false, status);
        else
            imgq__async_fail(out, IMGQ_CLASS_BAD_RESPONSE, "pending prediction without urls.get");
    } else if (strcmp(status, "succeeded") == 0) {
        succeeded(root, out);
    } else if (strcmp(status, "failed") == 0 || strcmp(status, "canceled") == 0 ||
               strcmp(status, "aborted") == 0) {
        failed(root, status, out);
    } else {
        imgq__async_fail(out, IMGQ_CLASS_BAD_RESPONSE, "unknown prediction status %s", status);
    }
    json_decref(root);
}

void imgq_replicate_parse(const imgq_http_response *res, int n, struct imgq_provider_result *out)
{
    (void)n;
    prediction(res, out);
}

void imgq_replicate_parse_poll(const imgq_http_response *res, int n,
                               struct imgq_provider_result *out)
{
    (void)n;
    prediction(res, out);
}
