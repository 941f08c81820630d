/*
 * provider_seedream.c - the BytePlus ModelArk Seedream adapter (POST /images/generations on
 * the Ark API): one image per call, flat price per generated image.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "imgq/alloc.h"
#include "imgq/base64.h"
#include "imgq/provider.h"

/* Reference i as a JSON string: its data URI, or an empty one when it was not fetched. */
static json_t *ref_json(const struct imgq_job_spec *s, int i)
{
    static const struct imgq_ref_data none = {NULL, 0, ""};
    char *uri = imgq__provider_data_uri(s->ref_data ? &s->ref_data[i] : &none);
    json_t *v = json_string(uri);
    free(uri);
    return v;
}

imgq_http_request *imgq_seedream_build(const struct imgq_provider_endpoint *ep,
                                       const struct imgq_job_spec *s, int n)
{
    (void)n; /* Seedream has no n: one image per call, n > 1 fans out */
    json_t *body = json_pack("{s:s, s:s, s:s, s:s, s:s, s:b}", "model", s->model, "prompt",
                             s->prompt, "size", s->size, "response_format", "b64_json",
                             "sequential_image_generation", "disabled", "watermark", 0);
    if (body && s->has_seed)
        json_object_set_new(body, "seed", json_integer(s->seed));
    /* References: "image", one data URI (a string) or several (an array), in the job's order.
     * The worker fetched them (s3:// is private; the provider could not read it); a reference
     * it did not fetch goes as an empty data URI, which the API refuses (400). */
    if (body && s->nrefs == 1) {
        json_object_set_new(body, "image", ref_json(s, 0));
    } else if (body && s->nrefs > 1) {
        json_t *images = json_array();
        for (int i = 0; i < s->nrefs; i++)
            json_array_append_new(images, ref_json(s, i));
        json_object_set_new(body, "image", images);
    }
    return imgq__provider_json_post(ep, imgq_xasprintf("%s/images/generations", ep->base_url), body,
                                    "Authorization", "Bearer ");
}

void imgq_seedream_parse(const imgq_http_response *res, int n, struct imgq_provider_result *out)
{
    (void)n;
    bool failed = imgq__provider_transport(res, out);
    const char *rid = imgq_http_response_header(res, "x-request-id");
    if (rid)
        snprintf(out->request_id, sizeof out->request_id, "%s", rid);
    if (failed)
        return;
    json_t *root = imgq__provider_json(res, out);
    if (res->status != 200) {
        json_t *e = json_object_get(root, "error");
        const char *code = json_string_value(json_object_get(e, "code"));
        imgq__provider_error_text(out, json_string_value(json_object_get(e, "message")), code);
        out->cls =
            imgq__provider_status_class(res->status, code && (strstr(code, "SensitiveContent") ||
                                                              strstr(code, "RiskDetection")));
        if (out->cls == IMGQ_CLASS_RATE_LIMIT)
            out->retry_after_ms =
                imgq_http_retry_hint_ms(res, imgq_retry_hint_now_ms(), IMGQ_RETRY_HINT_CEILING_MS);
        json_decref(root);
        return;
    }
    json_t *b64 = json_object_get(json_array_get(json_object_get(root, "data"), 0), "b64_json");
    out->images = imgq_xcalloc(1, sizeof *out->images);
    out->image_lens = imgq_xcalloc(1, sizeof *out->image_lens);
    if (!json_is_string(b64) || imgq_base64_decode(json_string_value(b64), json_string_length(b64),
                                                   &out->images[0], &out->image_lens[0]) != 0) {
        out->cls = IMGQ_CLASS_BAD_RESPONSE;
        snprintf(out->message, sizeof out->message, "200 response without a decodable image");
        json_decref(root);
        return;
    }
    out->nimages = 1;
    json_t *u = json_object_get(root, "usage");
    if (u && !json_is_null(u)) {
        /* Billed per generated image: generated_images is the billing count, which an answer
         * with an image cannot lack; output_tokens is informational for flat pricing. */
        struct imgq__usage_reader r;
        imgq__usage_begin(&r, u, "usage", 1);
        out->usage.images =
            imgq__usage_count(&r, "generated_images", IMGQ__USAGE_REQUIRED | IMGQ__USAGE_POSITIVE);
        out->usage.image_out = imgq__usage_count(&r, "output_tokens", 0);
        imgq__usage_end(&r, out);
    }
    json_decref(root);
}
