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

imgq_http_request *imgq_openai_build(const struct imgq_provider_endpoint *ep,
                                     const struct imgq_job_spec *s, int n)
{
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

static int64_t int_at(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_integer(v) && json_integer_value(v) >= 0 ? json_integer_value(v) : 0;
}

void imgq_openai_parse(const imgq_http_response *res, int n, struct imgq_provider_result *out)
{
    bool failed = imgq__provider_transport(res, out);
    const char *rid = imgq_http_response_header(res, "x-request-id");
    if (rid)
        snprintf(out->request_id, sizeof out->request_id, "%s", rid);
    if (failed)
        return;
    json_t *root = json_loadb((const char *)res->body, res->body_len, 0, NULL);
    if (res->status != 200) {
        json_t *e = json_object_get(root, "error");
        imgq__provider_error_text(out, json_string_value(json_object_get(e, "message")),
                                  json_string_value(json_object_get(e, "code")));
        out->cls = imgq__provider_status_class(
            res->status, strcmp(out->code, "moderation_blocked") == 0 ||
                             strcmp(out->code, "content_policy_violation") == 0 ||
                             strstr(out->message, "safety system") != NULL);
        if (out->cls == IMGQ_CLASS_RATE_LIMIT) {
            const char *ms = imgq_http_response_header(res, "retry-after-ms");
            const char *ra = imgq_http_response_header(res, "retry-after");
            char *end = NULL;
            long v = ms ? strtol(ms, &end, 10) : -1;
            if (ms && end != ms && *end == '\0' && v > 0 && v <= 86400000)
                out->retry_after_ms = v;
            else
                out->retry_after_ms = imgq_retry_after_ms(ra, (long)time(NULL));
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
    if (json_is_object(u)) {
        json_t *in = json_object_get(u, "input_tokens_details");
        json_t *outd = json_object_get(u, "output_tokens_details");
        out->usage_present = true;
        out->usage_json = json_incref(u);
        int64_t input = int_at(u, "input_tokens"), output = int_at(u, "output_tokens");
        if (json_is_object(in)) {
            out->usage.text_in = int_at(in, "text_tokens");
            out->usage.image_in = int_at(in, "image_tokens");
            /* Tokens the details do not account for are billed at the text rate.  (Written
             * without a sum: the values are the provider's and may be near INT64_MAX.) */
            if (input > out->usage.image_in && input - out->usage.image_in > out->usage.text_in)
                out->usage.text_in = input - out->usage.image_in;
        } else {
            out->usage.text_in = input;
        }
        if (json_is_object(outd)) {
            out->usage.image_out = int_at(outd, "image_tokens");
            out->usage.text_out = int_at(outd, "text_tokens");
            if (output > out->usage.text_out && output - out->usage.text_out > out->usage.image_out)
                out->usage.image_out = output - out->usage.text_out;
        } else {
            out->usage.image_out = output;
        }
        out->usage.images = n;
    }
    json_decref(root);
}
