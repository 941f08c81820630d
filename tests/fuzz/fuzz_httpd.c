/*
 * fuzz_httpd.c - the incremental HTTP/1.1 request parser (imgq_httpd_parser_*).
 *
 *   byte 0   bit 0: small limits (256-byte head, 8 fields, 1 KiB body) instead of defaults
 *   byte 1   seed of the chunk sizes
 *   rest     the byte stream a client sends on one connection
 *
 * The stream is parsed twice: fed in one piece, and fed in chunks of 1..64 bytes (sizes from
 * the seed), taking every complete request after each feed.  Both must yield the same
 * requests and end in the same state: how TCP splits the bytes must not matter.  Each request
 * is checked against httpd.h (version, path/query split, header lookup, body framing, limits).
 */
#include <stdbool.h>
#include <strings.h>

#include "fuzz.h"
#include "imgq/httpd.h"

struct outcome {
    size_t requests;
    uint64_t hash; /* over everything observable of the requests, in order */
    int rc;        /* 0 (waiting for more) or the error */
    int status;
};

static uint64_t mix(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211ull; /* FNV-1a */
    return (h ^ n) * 1099511628211ull;
}

static uint64_t mix_str(uint64_t h, const char *s)
{
    return mix(h, s, strlen(s) + 1);
}

static void check_request(const imgq_httpd_request *r, const struct imgq_httpd_limits *lim,
                          struct outcome *o)
{
    const char *method = imgq_httpd_request_method(r);
    const char *target = imgq_httpd_request_target(r);
    const char *path = imgq_httpd_request_path(r);
    const char *query = imgq_httpd_request_query(r);
    int minor = imgq_httpd_request_version_minor(r);
    FUZZ_CHECK(method && *method && target && *target && path && query);
    FUZZ_CHECK(minor == 0 || minor == 1);
    /* target = path ["?" query] */
    size_t pl = strlen(path);
    FUZZ_CHECK(strncmp(target, path, pl) == 0);
    FUZZ_CHECK(target[pl] == '\0' ? *query == '\0'
                                  : (target[pl] == '?' && !strcmp(target + pl + 1, query)));
    for (const char *c = target; *c; c++)
        FUZZ_CHECK((unsigned char)*c > 0x20 && (unsigned char)*c < 0x7f);

    size_t nh;
    const struct imgq_httpd_header *h = imgq_httpd_request_headers(r, &nh);
    FUZZ_CHECK(nh <= lim->max_headers);
    FUZZ_CHECK(minor == 0 || imgq_httpd_request_header(r, "host") != NULL);
    for (size_t i = 0; i < nh; i++) {
        FUZZ_CHECK(h[i].name && *h[i].name && h[i].value);
        size_t vl = strlen(h[i].value);
        FUZZ_CHECK(vl == 0 || !strchr(" \t", h[i].value[0]));
        FUZZ_CHECK(vl == 0 || !strchr(" \t", h[i].value[vl - 1]));
        /* the first field of a name wins */
        const char *first = imgq_httpd_request_header(r, h[i].name);
        FUZZ_CHECK(first != NULL);
        for (size_t k = 0; k < i; k++)
            if (strcasecmp(h[k].name, h[i].name) == 0) {
                FUZZ_CHECK(first == h[k].value);
                break;
            }
        FUZZ_CHECK(strcasecmp(h[i].name, "transfer-encoding") != 0);
    }
    size_t body_len;
    const char *body = imgq_httpd_request_body(r, &body_len);
    FUZZ_CHECK(body && body[body_len] == '\0');
    FUZZ_CHECK(body_len <= lim->max_body_bytes);
    const char *cl = imgq_httpd_request_header(r, "content-length");
    FUZZ_CHECK(cl ? strtoull(cl, NULL, 10) == body_len : body_len == 0);
    bool keep = imgq_httpd_request_keep_alive(r);
    FUZZ_CHECK(!imgq_httpd_request_aborted(r));
    FUZZ_CHECK(imgq_httpd_request_data(r) == NULL);

    o->requests++;
    uint64_t x = o->hash;
    x = mix_str(x, method);
    x = mix_str(x, target);
    x = mix(x, &minor, sizeof minor);
    for (size_t i = 0; i < nh; i++)
        x = mix_str(mix_str(x, h[i].name), h[i].value);
    x = mix(x, body, body_len);
    x = mix(x, &keep, sizeof keep);
    o->hash = x;
}

/* Take every complete request; returns false once the parser has failed. */
static bool drain(imgq_httpd_parser *p, const struct imgq_httpd_limits *lim, struct outcome *o)
{
    for (;;) {
        imgq_httpd_request *r = NULL;
        int rc = imgq_httpd_parser_next(p, &r);
        (void)imgq_httpd_parser_take_continue(p);
        if (rc == 1) {
            FUZZ_CHECK(r != NULL);
            check_request(r, lim, o);
            imgq_httpd_request_free(r);
            continue;
        }
        FUZZ_CHECK(r == NULL);
        o->rc = rc;
        o->status = imgq_httpd_parser_status(p);
        if (rc == 0) {
            FUZZ_CHECK(o->status == 0 && imgq_httpd_parser_error(p)[0] == '\0');
            return true;
        }
        FUZZ_CHECK(rc == IMGQ_EPARSE || rc == IMGQ_ERANGE);
        int s = o->status;
        FUZZ_CHECK(s == 400 || s == 413 || s == 417 || s == 431 || s == 501 || s == 505);
        FUZZ_CHECK((rc == IMGQ_ERANGE) == (s == 413 || s == 431));
        FUZZ_CHECK(imgq_httpd_parser_error(p)[0] != '\0');
        /* the parser stays failed */
        FUZZ_CHECK(imgq_httpd_parser_next(p, &r) == rc && r == NULL);
        return false;
    }
}

static void run(const uint8_t *s, size_t n, const struct imgq_httpd_limits *lim, unsigned seed,
                struct outcome *o)
{
    memset(o, 0, sizeof *o);
    o->hash = 14695981039346656037ull;
    imgq_httpd_parser *p = imgq_httpd_parser_new(lim);
    uint32_t x = seed * 2654435761u + 1;
    size_t off = 0;
    bool ok = true;
    while (ok && off < n) {
        size_t k = n - off;
        if (seed) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            size_t c = (x % 64) + 1;
            if (c < k)
                k = c;
        }
        size_t before = imgq_httpd_parser_buffered(p);
        imgq_httpd_parser_feed(p, s + off, k);
        FUZZ_CHECK(imgq_httpd_parser_buffered(p) == before + k);
        off += k;
        ok = drain(p, lim, o);
    }
    /* Not done: imgq_httpd_parser_next() on a parser never fed (its buffer is still NULL)
     * computes NULL + 0, undefined behaviour (httpd.c, parser_next: p->buf + p->off);
     * see tests/fuzz/crashes/README.md. */
    imgq_httpd_parser_free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    struct imgq_httpd_limits lim = {IMGQ_HTTPD_DEFAULT_MAX_HEADER_BYTES,
                                    IMGQ_HTTPD_DEFAULT_MAX_HEADERS,
                                    IMGQ_HTTPD_DEFAULT_MAX_BODY_BYTES};
    if (data[0] & 1)
        lim = (struct imgq_httpd_limits){256, 8, 1024};
    unsigned seed = data[1];
    const uint8_t *s = data + 2;
    size_t n = size - 2;

    struct outcome whole, chunked;
    run(s, n, &lim, 0, &whole);
    run(s, n, &lim, seed ? seed : 1, &chunked);
    if (whole.requests != chunked.requests || whole.hash != chunked.hash ||
        whole.rc != chunked.rc || whole.status != chunked.status)
        fprintf(stderr, "whole: %zu requests, rc %d, status %d; chunked: %zu, rc %d, status %d\n",
                whole.requests, whole.rc, whole.status, chunked.requests, chunked.rc,
                chunked.status);
    FUZZ_CHECK(whole.requests == chunked.requests && whole.hash == chunked.hash);
    FUZZ_CHECK(whole.rc == chunked.rc && whole.status == chunked.status);
    return 0;
}
