/*
 * provider_gemini.c - the Google Gemini image-output adapter (generateContent), and the table
 * of adapters by catalog api name.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imgq/alloc.h"
#include "imgq/base64.h"
#include "imgq/provider.h"

static const struct {
    int w, h;
    const char *ratio;
} aspects[] = {{1024, 1024, "1:1"}, {832, 1248, "2:3"},  {1248, 832, "3:2"},  {864, 1184, "3:4"},
               {1184, 864, "4:3"},  {768, 1344, "9:16"}, {1344, 768, "16:9"}, {1536, 672, "21:9"}};

const char *imgq_gemini_aspect(int width, int height)
{
    for (size_t i = 0; i < sizeof aspects / sizeof aspects[0]; i++)
        if (aspects[i].w == width && aspects[i].h == height)
            return aspects[i].ratio;
    return NULL;
}

/*
 * One user turn: the prompt's text part, then one inlineData part per reference image in the
 * job's order ({"mimeType": the sniffed type, "data": standard base64}), so that a prompt's
 * "the first image" is the job's images[0].  ref_data NULL (the worker did not fetch them: a
 * bug) sends each reference as an empty inlineData, which the API refuses with a 400: an
 * invalid request, never an image generated without its references.
 */
imgq_http_request *imgq_gemini_build(const struct imgq_provider_endpoint *ep,
                                     const struct imgq_job_spec *s, int n)
{
    (void)n; /* always one image per call: the API refuses candidateCount > 1 */
    const char *ratio = imgq_gemini_aspect(s->width, s->height);
    json_t *body =
        json_pack("{s:[{s:s, s:[{s:s}]}], s:{s:[s], s:{s:s}, s:i}}", "contents", "role", "user",
                  "parts", "text", s->prompt, "generationConfig", "responseModalities", "IMAGE",
                  "imageConfig", "aspectRatio", ratio ? ratio : "1:1", "candidateCount", 1);
    json_t *parts = json_object_get(json_array_get(json_object_get(body, "contents"), 0), "parts");
    for (int i = 0; parts && i < s->nrefs; i++) {
        const struct imgq_ref_data *d = s->ref_data ? &s->ref_data[i] : NULL;
        bool typed = d && d->mime[0] && memchr(d->mime, '\0', sizeof d->mime);
        char *b64 = d && d->data && d->len ? imgq_base64_encode(d->data, d->len, NULL) : NULL;
        json_array_append_new(parts,
                              json_pack("{s:{s:s, s:s}}", "inlineData", "mimeType",
                                        typed ? d->mime : "image/png", "data", b64 ? b64 : ""));
        free(b64);
    }
    if (body && s->has_seed)
        json_object_set_new(json_object_get(body, "generationConfig"), "seed",
                            json_integer(s->seed));
    return imgq__provider_json_post(
        ep, imgq_xasprintf("%s/models/%s:generateContent", ep->base_url, s->model), body,
        "x-goog-api-key", "");
}

/* Sum the token counts of one modality in a *TokensDetails list (absent: 0). */
static int64_t modality(struct imgq__usage_reader *r, const char *list, const char *which)
{
    json_t *details = json_object_get(r->usage, list);
    if (!details || json_is_null(details))
        return 0;
    if (!json_is_array(details)) {
        imgq__usage_refuse(r, "%s.%s: not a list", r->name, list);
        return 0;
    }
    int64_t sum = 0;
    size_t i;
    json_t *d;
    json_array_foreach(details, i, d)
    {
        char where[96];
        snprintf(where, sizeof where, "%s[%zu].tokenCount", list, i);
        if (!json_is_object(d)) {
            imgq__usage_refuse(r, "%s.%s[%zu]: not an object", r->name, list, i);
            return 0;
        }
        /* proto3 JSON leaves out a count of 0. */
        int64_t t = imgq__usage_value(r, json_object_get(d, "tokenCount"), where, 0);
        const char *m = json_string_value(json_object_get(d, "modality"));
        if (!m || strcmp(m, which) != 0)
            continue;
        if (t > IMGQ_USAGE_MAX - sum) {
            imgq__usage_refuse(r,
                               "%s.%s: the %s counts add up beyond the largest count imgq "
                               "prices (2^50)",
                               r->name, list, which);
            return 0;
        }
        sum += t;
    }
    return sum;
}

/*
 * usageMetadata: promptTokenCount and candidatesTokenCount are what the price needs (an answer
 * with an image has candidate tokens); the details, optional, split them by modality.
 */
static void usage(json_t *u, struct imgq_provider_result *out)
{
    struct imgq__usage_reader r;
    imgq__usage_begin(&r, u, "usageMetadata", 1);
    int64_t prompt = imgq__usage_count(&r, "promptTokenCount", IMGQ__USAGE_REQUIRED);
    int64_t cand =
        imgq__usage_count(&r, "candidatesTokenCount", IMGQ__USAGE_REQUIRED | IMGQ__USAGE_POSITIVE);
    out->usage.image_in = modality(&r, "promptTokensDetails", "IMAGE");
    out->usage.text_in = prompt > out->usage.image_in ? prompt - out->usage.image_in : 0;
    out->usage.text_out = modality(&r, "candidatesTokensDetails", "TEXT");
    /* Everything generated that is not text is billed as image output: never less. */
    out->usage.image_out = cand > out->usage.text_out ? cand - out->usage.text_out : 0;
    out->usage.images = 1;
    imgq__usage_end(&r, out);
}

/* "47s" or "1.5s" -> ms; -1 if not that. */
/* RetryInfo.retryDelay, a protobuf Duration in JSON ("47s", "0.5s"). */
static long duration_ms(const char *s)
{
    return imgq_retry_hint_ms(IMGQ_HINT_DURATION, s, (size_t)-1, 0, IMGQ_RETRY_HINT_CEILING_MS);
}

void imgq_gemini_parse(const imgq_http_response *res, int n, struct imgq_provider_result *out)
{
    (void)n;
    if (imgq__provider_transport(res, out))
        return;
    json_t *root = imgq__provider_json(res, out);
    const char *rid = json_string_value(json_object_get(root, "responseId"));
    if (rid)
        snprintf(out->request_id, sizeof out->request_id, "%s", rid);
    if (res->status != 200) {
        json_t *e = json_object_get(root, "error");
        imgq__provider_error_text(out, json_string_value(json_object_get(e, "message")),
                                  json_string_value(json_object_get(e, "status")));
        out->cls = imgq__provider_status_class(res->status, false);
        /* The retry hint is in the body: RetryInfo.retryDelay, e.g. "47s". */
        size_t i;
        json_t *d;
        json_array_foreach(json_object_get(e, "details"), i, d)
        {
            long ms = duration_ms(json_string_value(json_object_get(d, "retryDelay")));
            if (ms >= 0 && out->cls == IMGQ_CLASS_RATE_LIMIT)
                out->retry_after_ms = ms;
        }
        json_decref(root);
        return;
    }
    /* Safety blocks come back as 200. */
    const char *blocked =
        json_string_value(json_object_get(json_object_get(root, "promptFeedback"), "blockReason"));
    json_t *cand = json_array_get(json_object_get(root, "candidates"), 0);
    const char *finish = json_string_value(json_object_get(cand, "finishReason"));
    const char *data = NULL;
    size_t data_len = 0;
    size_t i;
    json_t *part;
    json_array_foreach(json_object_get(json_object_get(cand, "content"), "parts"), i, part)
    {
        json_t *d = json_object_get(json_object_get(part, "inlineData"), "data");
        if (json_is_string(d)) {
            data = json_string_value(d);
            data_len = json_string_length(d);
            break;
        }
    }
    if (blocked || (!data && finish && strcmp(finish, "STOP") != 0)) {
        out->cls = IMGQ_CLASS_CONTENT_POLICY;
        snprintf(out->code, sizeof out->code, "%s", blocked ? blocked : finish);
        snprintf(out->message, sizeof out->message, "blocked by the provider's safety filter (%s)",
                 blocked ? blocked : finish);
        json_decref(root);
        return;
    }
    out->images = imgq_xcalloc(1, sizeof *out->images);
    out->image_lens = imgq_xcalloc(1, sizeof *out->image_lens);
    if (!data || imgq_base64_decode(data, data_len, &out->images[0], &out->image_lens[0]) != 0) {
        out->cls = IMGQ_CLASS_BAD_RESPONSE;
        snprintf(out->message, sizeof out->message, "200 response without a decodable image");
        json_decref(root);
        return;
    }
    out->nimages = 1;
    json_t *u = json_object_get(root, "usageMetadata");
    if (u && !json_is_null(u))
        usage(u, out);
    json_decref(root);
}
