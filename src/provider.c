/*
 * provider.c - what every adapter shares: the error classes, the result, the classification
 * of transport failures and HTTP statuses, the JSON POST, the strict reader of usages, and the
 * registry of wire shapes.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "imgq/alloc.h"
#include "imgq/base64.h"
#include "imgq/provider.h"

const char *imgq_error_class_name(enum imgq_error_class c)
{
    switch (c) {
    case IMGQ_CLASS_NONE:
        return "none";
    case IMGQ_CLASS_TIMEOUT:
        return "timeout";
    case IMGQ_CLASS_NETWORK:
        return "network";
    case IMGQ_CLASS_RATE_LIMIT:
        return "rate_limit";
    case IMGQ_CLASS_SERVER:
        return "server";
    case IMGQ_CLASS_BAD_RESPONSE:
        return "bad_response";
    case IMGQ_CLASS_STORAGE:
        return "storage";
    case IMGQ_CLASS_INVALID_REQUEST:
        return "invalid_request";
    case IMGQ_CLASS_CONTENT_POLICY:
        return "content_policy";
    case IMGQ_CLASS_AUTH:
        return "auth";
    }
    return "unknown";
}

bool imgq_error_class_retryable(enum imgq_error_class c)
{
    switch (c) {
    case IMGQ_CLASS_TIMEOUT:
    case IMGQ_CLASS_NETWORK:
    case IMGQ_CLASS_RATE_LIMIT:
    case IMGQ_CLASS_SERVER:
    case IMGQ_CLASS_BAD_RESPONSE:
    case IMGQ_CLASS_STORAGE:
        return true;
    default:
        return false;
    }
}

void imgq_provider_result_clear(struct imgq_provider_result *r)
{
    for (int i = 0; i < r->nimages; i++)
        free(r->images[i]);
    free(r->images);
    free(r->image_lens);
    for (int i = 0; i < r->nimage_urls; i++)
        free(r->image_urls[i]);
    free(r->image_urls);
    json_decref(r->usage_json);
    memset(r, 0, sizeof *r);
}

bool imgq__provider_transport(const imgq_http_response *res, struct imgq_provider_result *out)
{
    memset(out, 0, sizeof *out);
    out->retry_after_ms = -1;
    out->status = res->status;
    if (!res->err)
        return false;
    out->cls = res->timed_out            ? IMGQ_CLASS_TIMEOUT
               : res->err == IMGQ_ERANGE ? IMGQ_CLASS_BAD_RESPONSE /* over the body cap */
                                         : IMGQ_CLASS_NETWORK;
    snprintf(out->message, sizeof out->message, "%s", res->error);
    return true;
}

enum imgq_error_class imgq__provider_status_class(long s, bool content_refused)
{
    if (s == 429)
        return IMGQ_CLASS_RATE_LIMIT;
    if (s >= 500 || s == 408 || s == 409)
        return IMGQ_CLASS_SERVER;
    if (s == 401 || s == 403)
        return IMGQ_CLASS_AUTH;
    if (content_refused)
        return IMGQ_CLASS_CONTENT_POLICY;
    if (s >= 400 && s < 500)
        return IMGQ_CLASS_INVALID_REQUEST;
    return IMGQ_CLASS_BAD_RESPONSE; /* 1xx/2xx other than 200, 3xx */
}

imgq_http_request *imgq__provider_json_post(const struct imgq_provider_endpoint *ep, char *url,
                                            json_t *body, const char *key_header,
                                            const char *key_prefix)
{
    imgq_http_request *req = imgq_http_request_new("POST", url);
    free(url);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text)
        abort(); /* allocation failure: alloc.h policy */
    imgq_http_request_set_body(req, text, strlen(text));
    free(text);
    char *key = imgq_xasprintf("%s%s", key_prefix, ep->api_key ? ep->api_key : "");
    int refused = imgq_http_request_add_header(req, key_header, key);
    free(key);
    refused |= imgq_http_request_add_header(req, "Content-Type", "application/json");
    (void)refused;
    imgq_http_request_set_timeouts(req, ep->timeout_ms > 0 ? ep->timeout_ms : 300000, 10000);
    return req;
}

json_t *imgq__provider_json(const imgq_http_response *res, struct imgq_provider_result *out)
{
    json_error_t err;
    json_t *root = json_loadb((const char *)res->body, res->body_len, 0, &err);
    if (root || json_error_code(&err) != json_error_numeric_overflow)
        return root;
    snprintf(out->usage_unusable, sizeof out->usage_unusable,
             "the answer has a number too large for a 64-bit integer (%.100s)", err.text);
    return json_loadb((const char *)res->body, res->body_len, JSON_DECODE_INT_AS_REAL, NULL);
}

char *imgq__provider_data_uri(const struct imgq_ref_data *d)
{
    const char *mime = d->mime[0] && memchr(d->mime, '\0', sizeof d->mime) ? d->mime : "image/png";
    char *b64 = d->data && d->len ? imgq_base64_encode(d->data, d->len, NULL) : NULL;
    char *uri = imgq_xasprintf("data:%s;base64,%s", mime, b64 ? b64 : "");
    free(b64);
    return uri;
}

void imgq__provider_error_text(struct imgq_provider_result *out, const char *message,
                               const char *code)
{
    if (message && *message) /* an empty message says nothing: the status at least */
        snprintf(out->message, sizeof out->message, "%s", message);
    else
        snprintf(out->message, sizeof out->message, "HTTP %ld", out->status);
    snprintf(out->code, sizeof out->code, "%s", code ? code : "");
}

/* Usage ----------------------------------------------------------------------------------- */

void imgq__usage_begin(struct imgq__usage_reader *r, json_t *usage, const char *name,
                       int64_t images)
{
    r->usage = json_is_null(usage) ? NULL : usage;
    r->name = name;
    r->images = images;
    r->why[0] = '\0';
    if (r->usage && !json_is_object(r->usage))
        imgq__usage_refuse(r, "%s: not an object", name);
}

void imgq__usage_refuse(struct imgq__usage_reader *r, const char *fmt, ...)
{
    if (r->why[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->why, sizeof r->why, fmt, ap);
    va_end(ap);
}

/* A value as the message shows it: numbers as written, a string quoted (cut), else its type. */
static void show_value(json_t *v, char *buf, size_t len)
{
    if (json_is_integer(v))
        snprintf(buf, len, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    else if (json_is_real(v))
        snprintf(buf, len, "%.17g", json_real_value(v));
    else if (json_is_string(v))
        snprintf(buf, len, "\"%.32s%s\"", json_string_value(v),
                 json_string_length(v) > 32 ? "..." : "");
    else
        snprintf(buf, len, "%s",
                 json_is_boolean(v) ? "a boolean"
                 : json_is_array(v) ? "a list"
                                    : "an object");
}

int64_t imgq__usage_value(struct imgq__usage_reader *r, json_t *v, const char *where,
                          unsigned flags)
{
    if (!v || json_is_null(v)) {
        if (flags & IMGQ__USAGE_REQUIRED)
            imgq__usage_refuse(r, "%s.%s: missing", r->name, where);
        return 0;
    }
    char shown[48];
    show_value(v, shown, sizeof shown);
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        imgq__usage_refuse(r, "%s.%s: %s is not a count (a non-negative integer)", r->name, where,
                           shown);
        return 0;
    }
    int64_t n = json_integer_value(v);
    if (n > IMGQ_USAGE_MAX) {
        imgq__usage_refuse(r, "%s.%s: %s is beyond the largest count imgq prices (2^50)", r->name,
                           where, shown);
        return 0;
    }
    if (n == 0 && (flags & IMGQ__USAGE_POSITIVE)) {
        imgq__usage_refuse(r, "%s.%s: 0 for %" PRId64 " image(s) returned", r->name, where,
                           r->images);
        return 0;
    }
    return n;
}

int64_t imgq__usage_count(struct imgq__usage_reader *r, const char *path, unsigned flags)
{
    json_t *v = json_is_object(r->usage) ? r->usage : NULL;
    const char *seg = path;
    for (const char *dot; v && (dot = strchr(seg, '.')) != NULL; seg = dot + 1) {
        json_t *o = json_object_getn(v, seg, (size_t)(dot - seg));
        if (o && !json_is_null(o) && !json_is_object(o)) {
            imgq__usage_refuse(r, "%s.%.*s: not an object", r->name, (int)(dot - path), path);
            return 0;
        }
        v = json_is_null(o) ? NULL : o;
    }
    return imgq__usage_value(r, v ? json_object_get(v, seg) : NULL, path, flags);
}

bool imgq__usage_end(struct imgq__usage_reader *r, struct imgq_provider_result *out)
{
    /* Kept as returned when it is an object, usable or not: the ledger records what the
     * provider said. */
    out->usage_json = json_is_object(r->usage) ? json_incref(r->usage) : NULL;
    if (out->usage_unusable[0] || r->why[0]) { /* the body's reason first (provider_json) */
        memset(&out->usage, 0, sizeof out->usage);
        out->usage_present = false;
        if (!out->usage_unusable[0])
            snprintf(out->usage_unusable, sizeof out->usage_unusable, "%s", r->why);
        return false;
    }
    out->usage_present = true;
    out->usage_unusable[0] = '\0';
    return true;
}

static const struct imgq_provider_ops adapters[] = {
    {"openai-images", imgq_openai_build, imgq_openai_parse, NULL, NULL},
    {"gemini-generate-content", imgq_gemini_build, imgq_gemini_parse, NULL, NULL},
    {"seedream", imgq_seedream_build, imgq_seedream_parse, NULL, NULL},
    {"dashscope", imgq_dashscope_build, imgq_dashscope_parse, imgq_dashscope_build_poll,
     imgq_dashscope_parse_poll},
    {"replicate", imgq_replicate_build, imgq_replicate_parse, imgq_replicate_build_poll,
     imgq_replicate_parse_poll},
    {"fal", imgq_fal_build, imgq_fal_parse, imgq_fal_build_poll, imgq_fal_parse_poll},
    {"bfl", imgq_bfl_build, imgq_bfl_parse, imgq_bfl_build_poll, imgq_bfl_parse_poll},
};

const struct imgq_provider_ops *imgq_provider_ops_find(const char *api)
{
    for (size_t i = 0; api && i < sizeof adapters / sizeof adapters[0]; i++)
        if (strcmp(adapters[i].api, api) == 0)
            return &adapters[i];
    return NULL;
}
