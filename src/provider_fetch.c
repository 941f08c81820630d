/*
 * provider_fetch.c - downloading images that providers return as URLs, deciding which URLs a
 * provider's key may be sent to, and the helpers the asynchronous adapters share
 * (provider_async.h).
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <arpa/inet.h>
#include <curl/curl.h>

#include "imgq/alloc.h"
#include "imgq/provider.h"
#include "provider_async.h"

/* ---- URLs --------------------------------------------------------------------------------- */

/* The parts of an absolute URL that decide where it goes; false if libcurl cannot parse it. */
struct url_parts {
    char *scheme, *host, *port;
};

static void url_parts_clear(struct url_parts *p)
{
    curl_free(p->scheme);
    curl_free(p->host);
    curl_free(p->port);
    memset(p, 0, sizeof *p);
}

static bool url_parts_get(const char *url, struct url_parts *p)
{
    memset(p, 0, sizeof *p);
    if (!url)
        return false;
    CURLU *u = curl_url();
    if (!u)
        abort(); /* allocation failure: alloc.h policy */
    bool ok = curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
              curl_url_get(u, CURLUPART_SCHEME, &p->scheme, 0) == CURLUE_OK &&
              curl_url_get(u, CURLUPART_HOST, &p->host, 0) == CURLUE_OK &&
              curl_url_get(u, CURLUPART_PORT, &p->port, CURLU_DEFAULT_PORT) == CURLUE_OK &&
              *p->host;
    curl_url_cleanup(u);
    if (!ok)
        url_parts_clear(p);
    return ok;
}

static bool is_http_scheme(const char *scheme)
{
    return strcasecmp(scheme, "http") == 0 || strcasecmp(scheme, "https") == 0;
}

bool imgq__async_is_http_url(const char *s)
{
    struct url_parts p;
    if (!url_parts_get(s, &p))
        return false;
    bool ok = is_http_scheme(p.scheme);
    url_parts_clear(&p);
    return ok;
}

/* An address rather than a name: [v6], dotted IPv4, or anything whose last label is numeric. */
static bool is_ip_literal(const char *host)
{
    if (host[0] == '[')
        return true;
    struct in_addr a;
    if (inet_pton(AF_INET, host, &a) == 1)
        return true;
    const char *last = strrchr(host, '.');
    last = last ? last + 1 : host;
    if (!*last)
        return false;
    for (; *last; last++)
        if (!isdigit((unsigned char)*last))
            return false;
    return true;
}

bool imgq_provider_url_trusted(const char *base_url, const char *url, bool sibling_hosts)
{
    struct url_parts b, u;
    if (!url_parts_get(base_url, &b))
        return false;
    if (!url_parts_get(url, &u)) {
        url_parts_clear(&b);
        return false;
    }
    bool ok = false;
    if (!is_http_scheme(b.scheme) || strcasecmp(b.scheme, u.scheme) != 0 ||
        strcmp(b.port, u.port) != 0)
        goto done;
    if (strcasecmp(b.host, u.host) == 0) {
        ok = true;
        goto done;
    }
    if (!sibling_hosts || is_ip_literal(b.host) || is_ip_literal(u.host))
        goto done;
    /* The base host's parent domain, only if it is still a domain (api.bfl.ai -> bfl.ai, not
     * bfl.ai -> ai): URL hosts under it are the provider's other clusters. */
    const char *parent = strchr(b.host, '.');
    if (!parent || !strchr(parent + 1, '.') || !parent[1])
        goto done;
    size_t hl = strlen(u.host), pl = strlen(parent); /* parent starts with the '.' */
    ok = hl > pl && strcasecmp(u.host + hl - pl, parent) == 0;
done:
    url_parts_clear(&b);
    url_parts_clear(&u);
    return ok;
}

char *imgq__async_escape(const char *s, bool keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t len = s ? strlen(s) : 0;
    char *out = imgq_xmalloc(len * 3 + 1), *o = out;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' ||
            (keep_slash && c == '/')) {
            *o++ = (char)c;
        } else {
            *o++ = '%';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        }
    }
    *o = '\0';
    return out;
}

/* ---- requests ----------------------------------------------------------------------------- */

imgq_http_request *imgq__async_get(const struct imgq_provider_endpoint *ep, char *url,
                                   bool with_key, const char *key_header, const char *key_prefix)
{
    imgq_http_request *req = imgq_http_request_new("GET", url ? url : "");
    free(url);
    if (with_key && ep->api_key) {
        char *key = imgq_xasprintf("%s%s", key_prefix, ep->api_key);
        /* Refused (CR/LF in the key): sent without it, and the provider's 401 classifies. */
        int refused = imgq_http_request_add_header(req, key_header, key);
        (void)refused;
        free(key);
    }
    imgq_http_request_set_timeouts(req, ep->timeout_ms > 0 ? ep->timeout_ms : 300000, 10000);
    return req;
}

imgq_http_request *imgq_provider_fetch_build(const char *url, long timeout_ms)
{
    /* No check here: imgq_http_submit refuses a URL that is not http(s) with IMGQ_EINVAL. */
    imgq_http_request *req = imgq_http_request_new("GET", url ? url : "");
    imgq_http_request_set_timeouts(req, timeout_ms > 0 ? timeout_ms : 300000, 10000);
    return req;
}

void imgq_provider_fetch_parse(const imgq_http_response *res, struct imgq_provider_result *out)
{
    if (imgq__async_start(res, out))
        return;
    long s = res->status;
    if (s == 200 && res->body_len > 0) {
        out->images = imgq_xcalloc(1, sizeof *out->images);
        out->image_lens = imgq_xcalloc(1, sizeof *out->image_lens);
        out->images[0] = imgq_xmalloc(res->body_len);
        memcpy(out->images[0], res->body, res->body_len);
        out->image_lens[0] = res->body_len;
        out->nimages = 1;
        return;
    }
    if (s == 200) {
        imgq__async_fail(out, IMGQ_CLASS_BAD_RESPONSE, "image download: empty body");
        return;
    }
    /* The URL expired or its signature no longer holds (signed URLs answer 403): the image is
     * gone, not our credentials (none were sent), so the attempt is retried. */
    if (s == 401 || s == 403 || s == 404 || s == 410) {
        imgq__async_fail(out, IMGQ_CLASS_BAD_RESPONSE, "image download: HTTP %ld (URL expired?)",
                         s);
        return;
    }
    out->cls = imgq__provider_status_class(s, false);
    snprintf(out->message, sizeof out->message, "image download: HTTP %ld", s);
    if (out->cls == IMGQ_CLASS_RATE_LIMIT)
        imgq__async_retry_after(res, out);
}

/* ---- results ------------------------------------------------------------------------------ */

bool imgq__async_start(const imgq_http_response *res, struct imgq_provider_result *out)
{
    bool failed = imgq__provider_transport(res, out);
    out->poll_after_ms = -1;
    return failed;
}

void imgq__async_fail(struct imgq_provider_result *out, enum imgq_error_class c, const char *fmt,
                      ...)
{
    out->cls = c;
    out->pending = false;
    out->poll[0] = '\0';
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->message, sizeof out->message, fmt, ap);
    va_end(ap);
    if (!out->message[0]) /* the provider's text was empty: every failure says why */
        snprintf(out->message, sizeof out->message, "%s (HTTP %ld)", imgq_error_class_name(c),
                 out->status);
}

bool imgq__async_pending(struct imgq_provider_result *out, const char *handle, bool must_be_url,
                         const char *status)
{
    snprintf(out->task_status, sizeof out->task_status, "%s", status ? status : "");
    size_t len = handle ? strlen(handle) : 0;
    if (len >= sizeof out->poll) {
        imgq__async_fail(out, IMGQ_CLASS_BAD_RESPONSE, "poll handle of %zu bytes is too long", len);
        return false;
    }
    if (len && must_be_url && !imgq__async_is_http_url(handle)) {
        imgq__async_fail(out, IMGQ_CLASS_BAD_RESPONSE, "poll URL is not an http(s) URL");
        return false;
    }
    memcpy(out->poll, handle ? handle : "", len + 1);
    out->pending = true;
    out->cls = IMGQ_CLASS_NONE;
    return true;
}

bool imgq__async_add_url(struct imgq_provider_result *out, const char *url)
{
    if (!imgq__async_is_http_url(url))
        return false;
    out->image_urls =
        imgq_xrealloc(out->image_urls, (size_t)(out->nimage_urls + 1) * sizeof *out->image_urls);
    out->image_urls[out->nimage_urls++] = imgq_xstrdup(url);
    return true;
}

void imgq__async_done(struct imgq_provider_result *out, int64_t images, json_t *usage,
                      const char *name, const char *count)
{
    out->cls = IMGQ_CLASS_NONE;
    out->pending = false;
    struct imgq__usage_reader r;
    imgq__usage_begin(&r, usage, name, images);
    int64_t stated = count ? imgq__usage_count(&r, count, IMGQ__USAGE_POSITIVE) : 0;
    out->usage.images = stated > 0 ? stated : images;
    imgq__usage_end(&r, out);
}

void imgq__async_retry_after(const imgq_http_response *res, struct imgq_provider_result *out)
{
    long v = imgq_http_retry_hint_ms(res, imgq_retry_hint_now_ms(), IMGQ_RETRY_HINT_CEILING_MS);
    if (v >= 0)
        out->retry_after_ms = v;
}

void imgq__async_copy(char *buf, size_t len, json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    snprintf(buf, len, "%s", s ? s : "");
}
