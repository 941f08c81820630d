/*
 * s3.c - S3 over libcurl: configuration, URLs, presigning, error bodies, operations (see s3.h).
 *
 * libcurl signs ordinary requests (CURLOPT_AWS_SIGV4, through imgq_http); this file only adds
 * what libcurl 7.88 does not: the x-amz-content-sha256 header (imgq_http computes it) and
 * query-string presigning, which follows AWS's "Authenticating Requests: Using Query
 * Parameters" page and is checked in tests against the example published there.
 */
#include "imgq/s3.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "imgq/alloc.h"

#define DEFAULT_REGION "us-east-1"
#define MAX_KEY_BYTES 1024
#define MAX_BUCKET_BYTES 255
#define MAX_ERROR_CODE 128
#define MAX_ERROR_MESSAGE 512

enum s3_op_kind { OP_PUT, OP_GET, OP_HEAD, OP_CREATE_BUCKET };

/* ---- a minimal string builder ------------------------------------------------------------- */

struct sbuf {
    char *s;
    size_t len, cap;
};

static void sb_addn(struct sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t want = b->cap ? b->cap : 128;
        while (want < b->len + n + 1)
            want *= 2;
        b->s = imgq_xrealloc(b->s, want);
        b->cap = want;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void sb_add(struct sbuf *b, const char *s)
{
    sb_addn(b, s, strlen(s));
}

static void sb_addc(struct sbuf *b, char c)
{
    sb_addn(b, &c, 1);
}

/* Hand over the built string (never NULL). */
static char *sb_take(struct sbuf *b)
{
    char *s = b->s ? b->s : imgq_xstrdup("");
    b->s = NULL;
    b->len = b->cap = 0;
    return s;
}

/* ---- crypto helpers ------------------------------------------------------------------------ */

static void hex_encode(const unsigned char *in, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[in[i] >> 4];
        out[2 * i + 1] = hex[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static void crypto_fail(const char *what)
{
    fprintf(stderr, "imgq: %s failed in libcrypto\n", what);
    abort();
}

static void sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (!EVP_Digest(data, len, md, &n, EVP_sha256(), NULL) || n != 32)
        crypto_fail("SHA-256");
    hex_encode(md, 32, out);
}

static void hmac_sha256(const void *key, size_t keylen, const char *msg, unsigned char out[32])
{
    unsigned int n = 0;
    if (!HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)msg, strlen(msg), out, &n) ||
        n != 32)
        crypto_fail("HMAC-SHA256");
}

/* ---- configuration ------------------------------------------------------------------------- */

void imgq_s3_config_init(struct imgq_s3_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
}

void imgq_s3_config_set(char **field, const char *value)
{
    free(*field);
    *field = value ? imgq_xstrdup(value) : NULL;
}

void imgq_s3_config_clear(struct imgq_s3_config *cfg)
{
    if (cfg->secret_key)
        OPENSSL_cleanse(cfg->secret_key, strlen(cfg->secret_key));
    free(cfg->endpoint);
    free(cfg->region);
    free(cfg->access_key);
    free(cfg->secret_key);
    free(cfg->session_token);
    free(cfg->bucket);
    memset(cfg, 0, sizeof(*cfg));
}

/* An endpoint split the way libcurl will read it. */
struct endpoint {
    char scheme[8];  /* "http" or "https" */
    char *host;      /* lower case; IPv6 in brackets; ":port" appended unless the default */
    char *base_path; /* "" or "/prefix" without a trailing slash */
    bool ip_literal;
};

static void endpoint_release(struct endpoint *ep)
{
    free(ep->host);
    free(ep->base_path);
}

static int endpoint_parse(const char *url, struct endpoint *ep)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL, *extra = NULL;
    int rc = IMGQ_ECONFIG;

    memset(ep, 0, sizeof(*ep));
    if (!u)
        return IMGQ_ECONFIG;
    for (const char *p = url; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            goto out;
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0) ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !*host)
        goto out;
    /* Credentials, queries and fragments have no place in an endpoint. */
    if (curl_url_get(u, CURLUPART_USER, &extra, 0) == CURLUE_OK ||
        curl_url_get(u, CURLUPART_QUERY, &extra, 0) == CURLUE_OK ||
        curl_url_get(u, CURLUPART_FRAGMENT, &extra, 0) == CURLUE_OK)
        goto out;
    if (curl_url_get(u, CURLUPART_PORT, &port, 0) != CURLUE_OK)
        port = NULL;
    if (curl_url_get(u, CURLUPART_PATH, &path, 0) != CURLUE_OK)
        path = NULL;

    snprintf(ep->scheme, sizeof(ep->scheme), "%s", scheme);
    for (char *p = host; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    struct in_addr a4;
    ep->ip_literal = host[0] == '[' || inet_pton(AF_INET, host, &a4) == 1;
    bool default_port = !port || (!strcmp(scheme, "http") && !strcmp(port, "80")) ||
                        (!strcmp(scheme, "https") && !strcmp(port, "443"));
    ep->host = default_port ? imgq_xstrdup(host) : imgq_xasprintf("%s:%s", host, port);
    size_t plen = path ? strlen(path) : 0;
    while (plen && path[plen - 1] == '/')
        plen--;
    ep->base_path = imgq_xstrndup(path ? path : "", plen);
    rc = 0;
out:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(path);
    curl_free(extra);
    curl_url_cleanup(u);
    return rc;
}

static const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

int imgq_s3_config_from_env(struct imgq_s3_config *cfg, const char **why)
{
    const char *ep_var = NULL, *ep = NULL, *v;
    int rc = 0;

    imgq_s3_config_clear(cfg);
    v = env_nonempty("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS");
    if (!v || strcasecmp(v, "true") != 0) {
        if ((ep = env_nonempty(ep_var = "AWS_ENDPOINT_URL_S3")) == NULL)
            ep = env_nonempty(ep_var = "AWS_ENDPOINT_URL");
    }
    if (!(v = env_nonempty("AWS_REGION")) && !(v = env_nonempty("AWS_DEFAULT_REGION")))
        v = DEFAULT_REGION;
    imgq_s3_config_set(&cfg->region, v);
    imgq_s3_config_set(&cfg->endpoint, ep);
    imgq_s3_config_set(&cfg->access_key, env_nonempty("AWS_ACCESS_KEY_ID"));
    imgq_s3_config_set(&cfg->secret_key, env_nonempty("AWS_SECRET_ACCESS_KEY"));
    imgq_s3_config_set(&cfg->session_token, env_nonempty("AWS_SESSION_TOKEN"));
    imgq_s3_config_set(&cfg->bucket, env_nonempty("IMGQ_S3_BUCKET"));
    /* botocore: with a custom endpoint, path style unless told "virtual". */
    cfg->path_style = ep != NULL;

    if ((v = env_nonempty("IMGQ_S3_ADDRESSING_STYLE")) != NULL) {
        if (strcmp(v, "path") == 0) {
            cfg->path_style = true;
        } else if (strcmp(v, "virtual") == 0) {
            cfg->path_style = false;
        } else if (strcmp(v, "auto") != 0) {
            rc = IMGQ_ECONFIG;
            if (why)
                *why = "IMGQ_S3_ADDRESSING_STYLE must be path, virtual or auto";
        }
    }
    if (rc == 0 && ep) {
        struct endpoint parsed;
        if (endpoint_parse(ep, &parsed) < 0) {
            rc = IMGQ_ECONFIG;
            if (why)
                *why = strcmp(ep_var, "AWS_ENDPOINT_URL_S3") == 0
                           ? "AWS_ENDPOINT_URL_S3 is not an http:// or https:// URL"
                           : "AWS_ENDPOINT_URL is not an http:// or https:// URL";
        } else {
            endpoint_release(&parsed);
        }
    }
    return rc;
}

static bool region_ok(const char *r)
{
    size_t n = strlen(r);
    if (n == 0 || n > 64)
        return false;
    for (; *r; r++)
        if (!isalnum((unsigned char)*r) && *r != '-' && *r != '_')
            return false;
    return true;
}

static const char *cfg_region(const struct imgq_s3_config *cfg)
{
    return cfg->region && *cfg->region ? cfg->region : DEFAULT_REGION;
}

/* Checks everything but the bucket; returns a static reason or NULL. */
static const char *config_problem(const struct imgq_s3_config *cfg, struct endpoint *ep)
{
    if (!region_ok(cfg_region(cfg)))
        return "the S3 region must be letters, digits, '-' and '_' (AWS_REGION)";
    if (!cfg->access_key || !*cfg->access_key || !cfg->secret_key || !*cfg->secret_key)
        return "S3 credentials missing: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY";
    if (cfg->session_token && strpbrk(cfg->session_token, "\r\n"))
        return "the S3 session token contains a line break";
    char *url = cfg->endpoint && *cfg->endpoint
                    ? imgq_xstrdup(cfg->endpoint)
                    : imgq_xasprintf("https://s3.%s.amazonaws.com", cfg_region(cfg));
    int rc = endpoint_parse(url, ep);
    free(url);
    return rc < 0 ? "the S3 endpoint is not an http:// or https:// URL (AWS_ENDPOINT_URL_S3)"
                  : NULL;
}

int imgq_s3_config_check(const struct imgq_s3_config *cfg, bool need_bucket, char **why)
{
    struct endpoint ep;
    const char *problem = config_problem(cfg, &ep);
    if (!problem) {
        endpoint_release(&ep);
        if (need_bucket && (!cfg->bucket || !*cfg->bucket))
            problem = "no S3 bucket configured: set IMGQ_S3_BUCKET";
    }
    if (why)
        *why = problem ? imgq_xstrdup(problem) : NULL;
    return problem ? IMGQ_ECONFIG : 0;
}

/* ---- names and URLs ------------------------------------------------------------------------ */

static bool is_unreserved(unsigned char c)
{
    return isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

static void sb_add_encoded(struct sbuf *b, const char *s, bool keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (is_unreserved(*p) || (keep_slash && *p == '/')) {
            sb_addc(b, (char)*p);
        } else {
            char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            sb_addn(b, e, 3);
        }
    }
}

char *imgq_s3_uri_encode(const char *s, bool keep_slash)
{
    struct sbuf b = {0};
    sb_add_encoded(&b, s, keep_slash);
    return sb_take(&b);
}

static bool bucket_ok(const char *b)
{
    size_t n = strlen(b);
    if (n == 0 || n > MAX_BUCKET_BYTES || !strcmp(b, ".") || !strcmp(b, ".."))
        return false;
    for (; *b; b++)
        if (!isalnum((unsigned char)*b) && *b != '.' && *b != '-' && *b != '_')
            return false;
    return true;
}

/* A bucket usable as the first label of a host name (and under TLS wildcards: no dots). */
static bool bucket_is_dns_label(const char *b)
{
    size_t n = strlen(b);
    if (n < 3 || n > 63 || b[0] == '-' || b[n - 1] == '-')
        return false;
    for (; *b; b++)
        if (!islower((unsigned char)*b) && !isdigit((unsigned char)*b) && *b != '-')
            return false;
    return true;
}

static bool key_ok(const char *k)
{
    size_t n = strlen(k);
    return n > 0 && n <= MAX_KEY_BYTES;
}

/* Where a request for bucket/key goes: scheme, Host header, canonical (encoded) path. */
struct location {
    struct endpoint ep;
    char *host;
    char *path;
};

static void location_release(struct location *loc)
{
    endpoint_release(&loc->ep);
    free(loc->host);
    free(loc->path);
}

/* Validates the config (not for the bucket) and the names; on error *why is static. */
static int locate(const struct imgq_s3_config *cfg, const char *bucket, const char *key,
                  struct location *loc, const char **why)
{
    memset(loc, 0, sizeof(*loc));
    if ((*why = config_problem(cfg, &loc->ep)) != NULL)
        return IMGQ_ECONFIG;
    if (!bucket) {
        endpoint_release(&loc->ep);
        *why = "no S3 bucket configured: set IMGQ_S3_BUCKET";
        return IMGQ_ECONFIG;
    }
    if (!bucket_ok(bucket) || (key && !key_ok(key))) {
        endpoint_release(&loc->ep);
        *why = !bucket_ok(bucket) ? "invalid S3 bucket name" : "invalid S3 key (1..1024 bytes)";
        return IMGQ_EINVAL;
    }
    bool vhost = !cfg->path_style && !loc->ep.ip_literal && bucket_is_dns_label(bucket);
    struct sbuf path = {0};
    sb_add(&path, loc->ep.base_path);
    sb_addc(&path, '/');
    if (vhost) {
        loc->host = imgq_xasprintf("%s.%s", bucket, loc->ep.host);
    } else {
        loc->host = imgq_xstrdup(loc->ep.host);
        sb_add(&path, bucket);
        if (key)
            sb_addc(&path, '/');
    }
    if (key)
        sb_add_encoded(&path, key, true);
    loc->path = sb_take(&path);
    return 0;
}

static char *location_url(const struct location *loc)
{
    return imgq_xasprintf("%s://%s%s", loc->ep.scheme, loc->host, loc->path);
}

int imgq_s3_object_url(const struct imgq_s3_config *cfg, const char *bucket, const char *key,
                       char **url_out)
{
    struct location loc;
    const char *why;
    struct imgq_s3_config relaxed = *cfg;

    /* A URL needs no credentials: do not let their absence fail it. */
    if (!relaxed.access_key || !*relaxed.access_key || !relaxed.secret_key || !*relaxed.secret_key)
        relaxed.access_key = relaxed.secret_key = "-";
    int rc = locate(&relaxed, bucket ? bucket : cfg->bucket, key, &loc, &why);
    if (rc < 0)
        return rc;
    *url_out = location_url(&loc);
    location_release(&loc);
    return 0;
}

/* ---- S3 XML error bodies ------------------------------------------------------------------- */

static const char *find_bytes(const char *hay, const char *end, const char *needle)
{
    size_t n = strlen(needle);
    if (hay >= end)
        return NULL;
    return memmem(hay, (size_t)(end - hay), needle, n);
}

/* Append one character, keeping the text printable for logs; returns false when full. */
static bool text_put(struct sbuf *b, unsigned char c, size_t cap)
{
    if (b->len >= cap)
        return false;
    sb_addc(b, c < 0x20 || c == 0x7f ? ' ' : (char)c);
    return true;
}

/* Copy XML character data: the five predefined entities and ASCII character references
 * are decoded, anything else is kept literally; output capped at 'cap' bytes plus "...". */
static char *xml_text(const char *s, const char *end, size_t cap)
{
    static const struct {
        const char *ent;
        char c;
    } ents[] = {{"&lt;", '<'}, {"&gt;", '>'}, {"&amp;", '&'}, {"&quot;", '"'}, {"&apos;", '\''}};
    struct sbuf b = {0};
    bool truncated = false;

    while (s < end && !truncated) {
        unsigned char c = (unsigned char)*s;
        size_t adv = 1;
        if (c == '&') {
            for (size_t i = 0; i < sizeof(ents) / sizeof(ents[0]); i++) {
                size_t n = strlen(ents[i].ent);
                if ((size_t)(end - s) >= n && memcmp(s, ents[i].ent, n) == 0) {
                    c = (unsigned char)ents[i].c;
                    adv = n;
                    break;
                }
            }
            if (adv == 1 && end - s >= 4 && s[1] == '#') {
                const char *p = s + 2;
                int base = 10;
                unsigned long v = 0;
                if (*p == 'x' || *p == 'X') {
                    base = 16;
                    p++;
                }
                const char *digits = p;
                while (p < end && p - digits < 8 && isxdigit((unsigned char)*p)) {
                    int d = isdigit((unsigned char)*p) ? *p - '0'
                                                       : tolower((unsigned char)*p) - 'a' + 10;
                    if (d >= base)
                        break;
                    v = v * (unsigned long)base + (unsigned long)d;
                    p++;
                }
                if (p > digits && p < end && *p == ';') {
                    c = v >= 0x20 && v < 0x7f ? (unsigned char)v : '?';
                    adv = (size_t)(p + 1 - s);
                }
            }
        }
        truncated = !text_put(&b, c, cap);
        s += adv;
    }
    if (truncated)
        sb_add(&b, "...");
    return sb_take(&b);
}

/* Text of the first <tag>...</tag> between s and end, if it holds no markup. */
static char *xml_element(const char *s, const char *end, const char *tag, size_t cap)
{
    char open[32], close[32];
    snprintf(open, sizeof(open), "<%s>", tag);
    snprintf(close, sizeof(close), "</%s>", tag);
    const char *a = find_bytes(s, end, open);
    if (!a)
        return NULL;
    a += strlen(open);
    const char *z = find_bytes(a, end, close);
    if (!z || memchr(a, '<', (size_t)(z - a)))
        return NULL;
    return xml_text(a, z, cap);
}

int imgq_s3_parse_error(const char *body, size_t len, char **code, char **message)
{
    *code = *message = NULL;
    if (!body)
        return IMGQ_EPARSE;
    const char *end = body + len;
    const char *err = find_bytes(body, end, "<Error>");
    if (!err)
        return IMGQ_EPARSE;
    const char *err_end = find_bytes(err, end, "</Error>");
    if (!err_end)
        err_end = end; /* truncated body: take what is there */
    char *c = xml_element(err, err_end, "Code", MAX_ERROR_CODE);
    if (!c || !*c) {
        free(c);
        return IMGQ_EPARSE;
    }
    char *m = xml_element(err, err_end, "Message", MAX_ERROR_MESSAGE);
    *code = c;
    *message = m ? m : imgq_xstrdup("");
    return 0;
}

/* ---- presigning ---------------------------------------------------------------------------- */

struct qparam {
    const char *name;
    char *value; /* encoded */
};

static int qparam_cmp(const void *a, const void *b)
{
    const struct qparam *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->value, y->value);
}

static bool method_presignable(const char *m)
{
    return m &&
           (!strcmp(m, "GET") || !strcmp(m, "PUT") || !strcmp(m, "HEAD") || !strcmp(m, "DELETE"));
}

int imgq_s3_presign(const struct imgq_s3_config *cfg, const char *method, const char *bucket,
                    const char *key, long expires, time_t at, char **url_out)
{
    struct location loc;
    const char *why;
    struct tm tm;
    char amzdate[32], datestamp[16];

    *url_out = NULL;
    if (expires < 1 || expires > IMGQ_S3_PRESIGN_MAX_EXPIRES)
        return IMGQ_ERANGE;
    if (!method_presignable(method) || !key)
        return IMGQ_EINVAL;
    if (!gmtime_r(&at, &tm) || tm.tm_year < 70 || tm.tm_year > 8099)
        return IMGQ_EINVAL;
    strftime(amzdate, sizeof(amzdate), "%Y%m%dT%H%M%SZ", &tm);
    strftime(datestamp, sizeof(datestamp), "%Y%m%d", &tm);
    int rc = locate(cfg, bucket ? bucket : cfg->bucket, key, &loc, &why);
    if (rc < 0)
        return rc;

    const char *region = cfg_region(cfg);
    char *scope = imgq_xasprintf("%s/%s/s3/aws4_request", datestamp, region);
    char *credential = imgq_xasprintf("%s/%s", cfg->access_key, scope);
    char expires_s[24];
    snprintf(expires_s, sizeof(expires_s), "%ld", expires);
    struct qparam q[6];
    size_t nq = 0;
    q[nq++] = (struct qparam){"X-Amz-Algorithm", imgq_xstrdup("AWS4-HMAC-SHA256")};
    q[nq++] = (struct qparam){"X-Amz-Credential", imgq_s3_uri_encode(credential, false)};
    q[nq++] = (struct qparam){"X-Amz-Date", imgq_xstrdup(amzdate)};
    q[nq++] = (struct qparam){"X-Amz-Expires", imgq_xstrdup(expires_s)};
    q[nq++] = (struct qparam){"X-Amz-SignedHeaders", imgq_xstrdup("host")};
    if (cfg->session_token && *cfg->session_token)
        q[nq++] =
            (struct qparam){"X-Amz-Security-Token", imgq_s3_uri_encode(cfg->session_token, false)};
    qsort(q, nq, sizeof(q[0]), qparam_cmp);

    struct sbuf query = {0};
    for (size_t i = 0; i < nq; i++) {
        if (i)
            sb_addc(&query, '&');
        sb_add(&query, q[i].name);
        sb_addc(&query, '=');
        sb_add(&query, q[i].value);
        free(q[i].value);
    }

    /* Canonical request: the signature is over exactly these bytes. */
    struct sbuf creq = {0};
    sb_add(&creq, method);
    sb_addc(&creq, '\n');
    sb_add(&creq, loc.path);
    sb_addc(&creq, '\n');
    sb_add(&creq, query.s);
    sb_add(&creq, "\nhost:");
    sb_add(&creq, loc.host);
    sb_add(&creq, "\n\nhost\nUNSIGNED-PAYLOAD");
    char creq_hash[65];
    sha256_hex(creq.s, creq.len, creq_hash);
    char *to_sign = imgq_xasprintf("AWS4-HMAC-SHA256\n%s\n%s\n%s", amzdate, scope, creq_hash);

    /* Signing key: HMAC chain over date, region, service, "aws4_request". */
    unsigned char k[32], k2[32];
    char *secret = imgq_xasprintf("AWS4%s", cfg->secret_key);
    hmac_sha256(secret, strlen(secret), datestamp, k);
    hmac_sha256(k, 32, region, k2);
    hmac_sha256(k2, 32, "s3", k);
    hmac_sha256(k, 32, "aws4_request", k2);
    hmac_sha256(k2, 32, to_sign, k);
    char signature[65];
    hex_encode(k, 32, signature);
    OPENSSL_cleanse(secret, strlen(secret));
    OPENSSL_cleanse(k2, sizeof(k2));

    *url_out = imgq_xasprintf("%s://%s%s?%s&X-Amz-Signature=%s", loc.ep.scheme, loc.host, loc.path,
                              query.s, signature);
    free(secret);
    free(to_sign);
    free(creq.s);
    free(query.s);
    free(credential);
    free(scope);
    location_release(&loc);
    return 0;
}

/* ---- requests and results ------------------------------------------------------------------ */

/* Printable copy of a message for logs: control bytes become '?'. */
static char *printable(char *s)
{
    for (unsigned char *p = (unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            *p = '?';
    return s;
}

static bool meta_name_ok(const char *n)
{
    if (!n || !*n || strlen(n) > 128)
        return false;
    for (; *n; n++)
        if (!isalnum((unsigned char)*n) && *n != '-' && *n != '_')
            return false;
    return true;
}

static bool meta_value_ok(const char *v)
{
    if (!v || strlen(v) > 2048)
        return false;
    for (; *v; v++)
        if ((unsigned char)*v < 0x20 || (unsigned char)*v > 0x7e)
            return false;
    return true;
}

static const char *op_method(enum s3_op_kind kind)
{
    switch (kind) {
    case OP_PUT:
    case OP_CREATE_BUCKET:
        return "PUT";
    case OP_GET:
        return "GET";
    case OP_HEAD:
        return "HEAD";
    }
    return "GET";
}

/* "S3 PUT s3://bucket/key", for messages. */
static char *op_what(enum s3_op_kind kind, const char *bucket, const char *key)
{
    return printable(imgq_xasprintf("S3 %s s3://%s%s%s", op_method(kind), bucket ? bucket : "",
                                    key ? "/" : "", key ? key : ""));
}

/*
 * A signed request for one operation; 'body' is borrowed by the request.  On error returns
 * the code and a new message in *errmsg.
 */
static int build_request(const struct imgq_s3_config *cfg, enum s3_op_kind kind, const char *bucket,
                         const char *key, const char *content_type, const void *body, size_t len,
                         const char *const *meta, imgq_http_request **out, char **errmsg)
{
    struct location loc;
    const char *why = NULL;
    char *what = op_what(kind, bucket, key);
    int rc = locate(cfg, bucket, key, &loc, &why);

    *out = NULL;
    *errmsg = NULL;
    if (rc < 0) {
        *errmsg = imgq_xasprintf("%s: %s", what, why);
        free(what);
        return rc;
    }
    char *url = location_url(&loc);
    imgq_http_request *req = imgq_http_request_new(op_method(kind), url);
    free(url);
    location_release(&loc);
    imgq_http_request_set_flags(req, IMGQ_HTTP_PATH_AS_IS);

    if (kind == OP_PUT || kind == OP_CREATE_BUCKET) {
        imgq_http_request_set_body_ref(req, body, len);
    }
    if (kind == OP_PUT &&
        imgq_http_request_add_header(
            req, "Content-Type", content_type ? content_type : "application/octet-stream") < 0) {
        why = "invalid Content-Type";
        rc = IMGQ_EINVAL;
    }
    for (size_t i = 0; rc == 0 && meta && meta[i]; i += 2) {
        if (!meta_name_ok(meta[i]) || !meta_value_ok(meta[i + 1])) {
            why = "invalid metadata (names: letters, digits, '-', '_'; values: printable ASCII)";
            rc = IMGQ_EINVAL;
            break;
        }
        char *name = imgq_xasprintf("x-amz-meta-%s", meta[i]);
        for (char *p = name; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        rc = imgq_http_request_add_header(req, name, meta[i + 1]);
        free(name);
    }
    if (rc == 0 && cfg->session_token && *cfg->session_token)
        rc = imgq_http_request_add_header(req, "x-amz-security-token", cfg->session_token);
    if (rc == 0)
        rc = imgq_http_request_set_aws_sigv4(req, cfg_region(cfg), "s3", cfg->access_key,
                                             cfg->secret_key, NULL);
    if (rc < 0) {
        *errmsg = imgq_xasprintf("%s: %s", what, why ? why : "invalid request");
        free(what);
        imgq_http_request_free(req);
        return rc;
    }
    free(what);
    *out = req;
    return 0;
}

/* Strings a result points to. */
struct result_mem {
    char *message;
    char *code;
};

static void result_mem_release(struct result_mem *m)
{
    free(m->message);
    free(m->code);
}

static int status_error(enum s3_op_kind kind, long status)
{
    if (status == 404)
        return IMGQ_ENOTFOUND;
    if (status == 409 && kind == OP_CREATE_BUCKET)
        return IMGQ_EEXIST;
    if (status == 408 || status == 429 || status >= 500)
        return IMGQ_EAGAIN;
    return IMGQ_EHTTP;
}

static void result_fill(struct imgq_s3_result *r, struct result_mem *m, enum s3_op_kind kind,
                        const char *what, const imgq_http_response *res)
{
    memset(r, 0, sizeof(*r));
    memset(m, 0, sizeof(*m));
    r->http = res;
    r->status = res->status;
    r->size = -1;
    r->body = res->body;
    r->body_len = res->body_len;
    r->etag = imgq_http_response_header(res, "etag");
    r->request_id = imgq_http_response_header(res, "x-amz-request-id");

    if (res->err) {
        /* A transport failure is the network's or the server's, not the request's. */
        r->err = res->err == IMGQ_EHTTP ? IMGQ_EAGAIN : res->err;
        m->message = printable(imgq_xasprintf("%s: %s", what, res->error));
    } else if (res->status >= 200 && res->status < 300) {
        r->content_type = imgq_http_response_header(res, "content-type");
        if (kind == OP_GET) {
            r->size = (long long)res->body_len;
        } else if (kind == OP_HEAD) {
            const char *cl = imgq_http_response_header(res, "content-length");
            char *end = NULL;
            long long n = cl ? strtoll(cl, &end, 10) : -1;
            r->size = cl && end != cl && *end == '\0' && n >= 0 ? n : -1;
        }
    } else {
        char *message = NULL;
        r->err = status_error(kind, res->status);
        if (imgq_s3_parse_error((const char *)res->body, res->body_len, &m->code, &message) < 0 &&
            res->status == 404)
            m->code = imgq_xstrdup("NotFound");
        if (m->code && message && *message)
            m->message = imgq_xasprintf("%s: %ld %s: %s", what, res->status, m->code, message);
        else if (m->code)
            m->message = imgq_xasprintf("%s: %ld %s", what, res->status, m->code);
        else
            m->message = imgq_xasprintf("%s: HTTP %ld", what, res->status);
        printable(m->message);
        free(message);
    }
    r->code = m->code ? m->code : "";
    r->message = m->message ? m->message : "";
}

/* ---- async operations ---------------------------------------------------------------------- */

struct s3_op {
    enum s3_op_kind kind;
    char *what;
    imgq_s3_cb cb;
    void *arg;
};

static void on_http_done(const imgq_http_response *res, void *arg)
{
    struct s3_op *op = arg;
    struct imgq_s3_result r;
    struct result_mem m;

    result_fill(&r, &m, op->kind, op->what, res);
    op->cb(&r, op->arg);
    result_mem_release(&m);
    free(op->what);
    free(op);
}

static int submit_op(imgq_http *h, const struct imgq_s3_config *cfg, enum s3_op_kind kind,
                     const char *key, const char *content_type, const void *body, size_t len,
                     const char *const *meta, imgq_s3_cb cb, void *arg)
{
    imgq_http_request *req;
    char *errmsg;
    int rc =
        build_request(cfg, kind, cfg->bucket, key, content_type, body, len, meta, &req, &errmsg);
    if (rc < 0) {
        free(errmsg);
        return rc;
    }
    struct s3_op *op = imgq_xcalloc(1, sizeof(*op));
    op->kind = kind;
    op->what = op_what(kind, cfg->bucket, key);
    op->cb = cb;
    op->arg = arg;
    rc = imgq_http_submit(h, req, on_http_done, op);
    if (rc < 0) {
        free(op->what);
        free(op);
    }
    return rc;
}

int imgq_s3_put(imgq_http *h, const struct imgq_s3_config *cfg, const char *key,
                const char *content_type, const void *body, size_t len, const char *const *meta,
                imgq_s3_cb cb, void *arg)
{
    if (!key || (!body && len))
        return IMGQ_EINVAL;
    return submit_op(h, cfg, OP_PUT, key, content_type, body ? body : "", len, meta, cb, arg);
}

int imgq_s3_get(imgq_http *h, const struct imgq_s3_config *cfg, const char *key, imgq_s3_cb cb,
                void *arg)
{
    if (!key)
        return IMGQ_EINVAL;
    return submit_op(h, cfg, OP_GET, key, NULL, NULL, 0, NULL, cb, arg);
}

int imgq_s3_head(imgq_http *h, const struct imgq_s3_config *cfg, const char *key, imgq_s3_cb cb,
                 void *arg)
{
    if (!key)
        return IMGQ_EINVAL;
    return submit_op(h, cfg, OP_HEAD, key, NULL, NULL, 0, NULL, cb, arg);
}

/* ---- blocking operations ------------------------------------------------------------------- */

static void set_errmsg(char **errmsg, char *msg)
{
    if (errmsg)
        *errmsg = msg;
    else
        free(msg);
}

/* Runs one operation; on success hands the response to 'keep' (may be NULL). */
static int run_sync(const struct imgq_s3_config *cfg, enum s3_op_kind kind, const char *bucket,
                    const char *key, const char *content_type, const void *body, size_t len,
                    const char *const *meta, char **errmsg,
                    void (*keep)(const struct imgq_s3_result *r, void *arg), void *keep_arg)
{
    imgq_http_request *req;
    char *msg;

    if (errmsg)
        *errmsg = NULL;
    int rc = build_request(cfg, kind, bucket, key, content_type, body, len, meta, &req, &msg);
    if (rc < 0) {
        set_errmsg(errmsg, msg);
        return rc;
    }
    imgq_http_response *res = NULL;
    rc = imgq_http_perform_sync(req, &res); /* also in res->err, which result_fill maps */
    char *what = op_what(kind, bucket, key);
    struct imgq_s3_result r;
    struct result_mem m;
    result_fill(&r, &m, kind, what, res);
    rc = r.err;
    if (rc < 0)
        set_errmsg(errmsg, imgq_xstrdup(r.message));
    else if (keep)
        keep(&r, keep_arg);
    result_mem_release(&m);
    free(what);
    imgq_http_response_free(res);
    imgq_http_request_free(req);
    return rc;
}

int imgq_s3_put_sync(const struct imgq_s3_config *cfg, const char *key, const char *content_type,
                     const void *body, size_t len, const char *const *meta, char **errmsg)
{
    if (errmsg)
        *errmsg = NULL;
    if (!key || (!body && len))
        return IMGQ_EINVAL;
    return run_sync(cfg, OP_PUT, cfg->bucket, key, content_type, body ? body : "", len, meta,
                    errmsg, NULL, NULL);
}

struct get_out {
    unsigned char **data;
    size_t *len;
};

static void keep_body(const struct imgq_s3_result *r, void *arg)
{
    struct get_out *o = arg;
    *o->data = imgq_xmalloc(r->body_len + 1);
    memcpy(*o->data, r->body, r->body_len);
    (*o->data)[r->body_len] = '\0';
    *o->len = r->body_len;
}

int imgq_s3_get_sync(const struct imgq_s3_config *cfg, const char *key, unsigned char **data,
                     size_t *len, char **errmsg)
{
    struct get_out o = {data, len};
    *data = NULL;
    *len = 0;
    if (errmsg)
        *errmsg = NULL;
    if (!key)
        return IMGQ_EINVAL;
    return run_sync(cfg, OP_GET, cfg->bucket, key, NULL, NULL, 0, NULL, errmsg, keep_body, &o);
}

struct head_out {
    long long *size;
    char **etag;
};

static void keep_head(const struct imgq_s3_result *r, void *arg)
{
    struct head_out *o = arg;
    if (o->size)
        *o->size = r->size;
    if (o->etag)
        *o->etag = r->etag ? imgq_xstrdup(r->etag) : NULL;
}

int imgq_s3_head_sync(const struct imgq_s3_config *cfg, const char *key, long long *size,
                      char **etag, char **errmsg)
{
    struct head_out o = {size, etag};
    if (size)
        *size = -1;
    if (etag)
        *etag = NULL;
    if (errmsg)
        *errmsg = NULL;
    if (!key)
        return IMGQ_EINVAL;
    return run_sync(cfg, OP_HEAD, cfg->bucket, key, NULL, NULL, 0, NULL, errmsg, keep_head, &o);
}

int imgq_s3_create_bucket_sync(const struct imgq_s3_config *cfg, const char *bucket, char **errmsg)
{
    const char *region = cfg_region(cfg);
    char *body = NULL;

    if (!bucket)
        bucket = cfg->bucket;
    /* us-east-1 is the default location and must not be named; others must be. */
    if (strcmp(region, "us-east-1") != 0 && region_ok(region))
        body = imgq_xasprintf("<CreateBucketConfiguration "
                              "xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
                              "<LocationConstraint>%s</LocationConstraint>"
                              "</CreateBucketConfiguration>",
                              region);
    int rc = run_sync(cfg, OP_CREATE_BUCKET, bucket, NULL, NULL, body ? body : "",
                      body ? strlen(body) : 0, NULL, errmsg, NULL, NULL);
    free(body);
    return rc;
}
