/*
 * provider_openai.c - the OpenAI Images API adapter (also any OpenAI-compatible gateway).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "imgq/alloc.h"
#include "imgq/base64.h"
#include "imgq/provider.h"

/* File-name extension for a reference's (sniffed) MIME type. */
static const char *mime_ext(const char *mime)
{
    if (strcmp(mime, "image/png") == 0)
        return "png";
    if (strcmp(mime, "image/jpeg") == 0)
        return "jpg";
    if (strcmp(mime, "image/webp") == 0)
        return "webp";
    return "bin";
}

static void add_field(imgq_http_request *req, const char *name, const char *value)
{
    /* Only a name or file name is ever refused (ours are constants); values are plain data. */
    int rc = imgq_http_request_add_part(req, name, value, strlen(value), NULL, NULL);
    (void)rc;
}

/* A file part; a type the HTTP layer refuses to label (not type/subtype) goes as octet-stream. */
static void add_file(imgq_http_request *req, const char *name, const struct imgq_ref_data *d,
                     const char *filename)
{
    size_t len = d->data ? d->len : 0;
    const char *mime =
        d->mime[0] && memchr(d->mime, '\0', sizeof d->mime) ? d->mime : "application/octet-stream";
    if (imgq_http_request_add_part(req, name, d->data, len, filename, mime) != 0) {
        int rc = imgq_http_request_add_part(req, name, d->data, len, filename,
                                            "application/octet-stream");
        (void)rc;
    }
}

/*
 * POST BASE/images/edits as multipart/form-data: the plain fields first (model, prompt, n,
 * size, quality, background, output_format, user), then one "image[]" file per reference
 * (image-I.EXT with its sniffed type) and the "mask" file if any.  The edits endpoint has no
 * "moderation" field, so the job's moderation is not sent; input_fidelity is not sent (the
 * job has no such field: the API's default, low, applies).
 *
 * ref_data NULL (the worker did not fetch the references: a bug) does not crash: the request
 * goes without image parts and the API refuses it with a 400 ("image" missing), which parse
 * classifies as an invalid request (not retried).  A fetched reference without bytes is sent
 * as an empty file and refused the same way.
 */
static imgq_http_request *build_edits(const struct imgq_provider_endpoint *ep,
                                      const struct imgq_job_spec *s, int n)
{
    char *url = imgq_xasprintf("%s/images/edits", ep->base_url);
    imgq_http_request *req = imgq_http_request_new("POST", url);
    free(url);
    char *key = imgq_xasprintf("Bearer %s", ep->api_key ? ep->api_key : "");
    int refused = imgq_http_request_add_header(req, "Authorization", key);
    (void)refused; /* a key with CR/LF is not sent: the 401 classifies the job as auth */
    free(key);
    imgq_http_request_set_timeouts(req, ep->timeout_ms > 0 ? ep->timeout_ms : 300000, 10000);

    char num[24];
    snprintf(num, sizeof num, "%d", n);
    add_field(req, "model", s->model);
    add_field(req, "prompt", s->prompt);
    add_field(req, "n", num);
    add_field(req, "size", s->size);
    if (s->quality)
        add_field(req, "quality", s->quality);
    if (s->background)
        add_field(req, "background", s->background);
    /* Lossless transfer; the worker encodes the stored format itself. */
    add_field(req, "output_format", "png");
    if (s->user)
        add_field(req, "user", s->user);
    for (int i = 0; s->ref_data && i < s->nrefs; i++) {
        char name[32];
        snprintf(name, sizeof name, "image-%d.%s", i, mime_ext(s->ref_data[i].mime));
        add_file(req, "image[]", &s->ref_data[i], name);
    }
    if (s->mask_data)
        add_file(req, "mask", s->mask_data, "mask.png");
    return req;
}

imgq_http_request *imgq_openai_build(const struct imgq_provider_endpoint *ep,
                                     const struct imgq_job_spec *s, int n)
{
    if (s->nrefs > 0)
        return build_edits(ep, s, n);
    json_t *o = json_object();
    json_object_set_new(o, "model", json_string(s->model));
    json_object_set_new(o, "prompt", json_string(s->prompt));
    json_object_set_new(o, "n", json_integer(n));
    json_object_set_new(o, "size", json_string(s->size));
    if (s->quality)
        json_object_set_new(o, "quality", json_string(s->quality));
    /* Lossless transfer; the worker encodes the stored format itself. */
    json_object_set_new(o, "output_format", json_string("png"));
    if (s->background)
        json_object_set_new(o, "background", json_string(s->background));
    if (s->moderation)
        json_object_set_new(o, "moderation", json_string(s->moderation));
    if (s->user)
        json_object_set_new(o, "user", json_string(s->user));
    return imgq__provider_json_post(ep, imgq_xasprintf("%s/images/generations", ep->base_url), o,
                                    "Authorization", "Bearer ");
}

/*
 * The usage of a GPT image answer: input_tokens and output_tokens are what the price needs (an
 * answer with images has output tokens); the details, optional, split them by modality.
 */
static void read_usage(json_t *u, int n, struct imgq_provider_result *out)
{
    struct imgq__usage_reader r;
    imgq__usage_begin(&r, u, "usage", n);
    int64_t input = imgq__usage_count(&r, "input_tokens", IMGQ__USAGE_REQUIRED);
    int64_t output =
        imgq__usage_count(&r, "output_tokens", IMGQ__USAGE_REQUIRED | IMGQ__USAGE_POSITIVE);
    struct imgq_usage *x = &out->usage;
    x->text_in = imgq__usage_count(&r, "input_tokens_details.text_tokens", 0);
    x->image_in = imgq__usage_count(&r, "input_tokens_details.image_tokens", 0);
    x->image_out = imgq__usage_count(&r, "output_tokens_details.image_tokens", 0);
    x->text_out = imgq__usage_count(&r, "output_tokens_details.text_tokens", 0);
    /* Tokens the details do not account for are billed at the text rate in, the image rate
     * out (all of them when there are no details).  Written without a sum: each count is at
     * most IMGQ_USAGE_MAX, but the details may claim more than the total. */
    if (input > x->image_in && input - x->image_in > x->text_in)
        x->text_in = input - x->image_in;
    if (output > x->text_out && output - x->text_out > x->image_out)
        x->image_out = output - x->text_out;
    x->images = n;
    imgq__usage_end(&r, out);
}

void imgq_openai_parse(const imgq_http_response *res, int n, struct imgq_provider_result *out)
{
    bool failed = imgq__provider_transport(res, out);
    const char *rid = imgq_http_response_header(res, "x-request-id");
    if (rid)
        snprintf(out->request_id, sizeof out->request_id, "%s", rid);
    if (failed)
        return;
    json_t *root = imgq__provider_json(res, out);
    if (res->status != 200) {
        json_t *e = json_object_get(root, "error");
        imgq__provider_error_text(out, json_string_value(json_object_get(e, "message")),
                                  json_string_value(json_object_get(e, "code")));
        out->cls = imgq__provider_status_class(
            res->status, strcmp(out->code, "moderation_blocked") == 0 ||
                             strcmp(out->code, "content_policy_violation") == 0 ||
                             strstr(out->message, "safety system") != NULL);
        if (out->cls == IMGQ_CLASS_RATE_LIMIT) {
            /* retry-after-ms > retry-after (as OpenAI's SDK), else x-ratelimit-reset-*. */
            out->retry_after_ms =
                imgq_http_retry_hint_ms(res, imgq_retry_hint_now_ms(), IMGQ_RETRY_HINT_CEILING_MS);
        }
        json_decref(root);
        return;
    }
    json_t *data = json_object_get(root, "data");
    if (!json_is_array(data) || json_array_size(data) != (size_t)n) {
        out->cls = IMGQ_CLASS_BAD_RESPONSE;
        snprintf(out->message, sizeof out->message, "200 response without %d images in 'data'", n);
        json_decref(root);
        return;
    }
    out->images = imgq_xcalloc((size_t)n, sizeof *out->images);
    out->image_lens = imgq_xcalloc((size_t)n, sizeof *out->image_lens);
    for (int i = 0; i < n; i++) {
        json_t *b64 = json_object_get(json_array_get(data, (size_t)i), "b64_json");
        if (!json_is_string(b64) ||
            imgq_base64_decode(json_string_value(b64), json_string_length(b64), &out->images[i],
                               &out->image_lens[i]) != 0) {
            out->cls = IMGQ_CLASS_BAD_RESPONSE;
            snprintf(out->message, sizeof out->message,
                     "200 response: data[%d].b64_json missing or not base64", i);
            json_decref(root);
            return;
        }
        out->nimages = i + 1;
    }
    json_t *u = json_object_get(root, "usage");
    if (u && !json_is_null(u))
        read_usage(u, n, out);
    json_decref(root);
}
