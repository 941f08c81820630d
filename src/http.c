/*
 * http.c - libcurl multi handle on a libuv loop (see http.h for the contract).
 *
 * libcurl drives: its socket callback asks us to watch a socket (one uv_poll_t per socket,
 * remembered with curl_multi_assign) and its timer callback asks to be woken after N ms (one
 * uv_timer_t).  When libuv reports readiness or the timer fires we call
 * curl_multi_socket_action and then collect finished transfers.  We never call
 * curl_multi_socket_action from inside libcurl's callbacks: a 0 ms timeout becomes a 0 ms
 * uv timer, which runs on the loop's next pass over its timers.
 *
 * A response callback may close the client; while callbacks are being dispatched the close
 * is only recorded, and it runs when the dispatch unwinds, so no code below uses a client
 * that has been torn down under it.
 */
#include "imgq/http.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <openssl/evp.h>

#include "imgq/alloc.h"

#define USER_AGENT "imgq/0.1"
#define DEFAULT_TOTAL_MS 300000L
#define DEFAULT_CONNECT_MS 10000L
#define DEFAULT_MAX_HOST_CONNECTIONS 1024L
#define DEFAULT_MAX_IDLE_CONNECTIONS 1024L
/* Bodies at least this large are hashed for SigV4 on the thread pool, not on the loop. */
#define HASH_OFFLOAD_BYTES (64 * 1024)
/* Response headers beyond these limits are dropped (the transfer itself goes on). */
#define MAX_HEADERS 200
#define MAX_HEADER_BYTES (64 * 1024)

/* One multipart part, owned by its request. */
struct part {
    char *name;
    unsigned char *data;
    size_t len;
    char *filename; /* NULL for a plain field */
    char *mime;     /* NULL: not sent (plain field) or libcurl's guess (file) */
};

struct imgq_http_request {
    char *method;
    char *url;
    struct curl_slist *headers;
    bool has_content_type;
    bool has_body;
    unsigned char *body_copy; /* owned copy, or NULL when the body is borrowed */
    const unsigned char *body;
    size_t body_len;
    struct part *parts; /* multipart/form-data: nparts > 0 means no body */
    size_t nparts, partcap;
    long total_ms;
    long connect_ms;
    size_t max_body;
    unsigned flags;
    /* SigV4 */
    char *sigv4_provider; /* "aws:amz:REGION:SERVICE", NULL when not signing */
    char *access_key;
    char *secret_key;
    char *payload_hash; /* NULL: compute from the body */
    struct curl_slist *connect_to;
    bool (*peer_allow)(const char *ip, void *arg);
    void *peer_arg;
};

/* Collects one response; the public view is its first member so perform_sync can hand it out. */
struct collector {
    imgq_http_response res;
    unsigned char *buf;
    size_t len, cap;
    size_t max_body;
    bool too_big;
    struct imgq_http_header *hdrs;
    size_t nhdrs, hcap, hbytes;
    char *error;
    char errbuf[CURL_ERROR_SIZE];
    bool (*peer_allow)(const char *ip, void *arg);
    void *peer_arg;
    char refused_ip[64];
    uint64_t start_ns;
    curl_mime *mime; /* the multipart body built for this transfer; freed after the easy */
};

struct transfer {
    struct transfer *prev, *next;
    imgq_http *h;
    imgq_http_request *req;
    CURL *easy;
    struct curl_slist *headers;
    imgq_http_cb cb;
    void *arg;
    struct collector col;
    uv_work_t work;
    bool hashing;     /* the payload hash is being computed on the thread pool */
    bool answered;    /* the callback already ran (cancelled while hashing) */
    bool cancel_late; /* closed while the thread pool reads the body: answer in hash_done */
    char hash[65];
};

struct sock {
    uv_poll_t poll;
    struct sock *prev, *next;
    imgq_http *h;
    curl_socket_t fd;
};

struct imgq_http {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    struct imgq_http_options opts;
    struct transfer *transfers; /* in flight, including those being hashed */
    size_t in_flight;
    struct sock *socks; /* watched sockets not yet closed */
    size_t live;        /* libuv handles and work requests still to be called back */
    int dispatching;    /* depth of response-callback dispatch */
    bool close_requested;
    bool close_started;
    void (*closed)(void *arg);
    void *closed_arg;
};

/* ---- small helpers ------------------------------------------------------------------------ */

static uint64_t elapsed_ms_since(uint64_t start_ns)
{
    return (uv_hrtime() - start_ns) / 1000000u;
}

static bool is_tchar(unsigned char c)
{
    return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool is_token(const char *s)
{
    if (!s || !*s)
        return false;
    for (; *s; s++)
        if (!is_tchar((unsigned char)*s))
            return false;
    return true;
}

static bool is_hex_sha256(const char *s)
{
    size_t i;
    for (i = 0; s[i]; i++)
        if (!isdigit((unsigned char)s[i]) && !(s[i] >= 'a' && s[i] <= 'f'))
            return false;
    return i == 64;
}

static void sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    static const char hex[] = "0123456789abcdef";

    if (!EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32) {
        fprintf(stderr, "imgq: SHA-256 failed in libcrypto\n");
        abort();
    }
    for (unsigned i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
}

static struct curl_slist *slist_add(struct curl_slist *list, const char *s)
{
    struct curl_slist *n = curl_slist_append(list, s);
    if (!n) {
        fprintf(stderr, "imgq: out of memory in curl_slist_append\n");
        abort();
    }
    return n;
}

static struct curl_slist *slist_copy(const struct curl_slist *src, struct curl_slist *dst)
{
    for (; src; src = src->next)
        dst = slist_add(dst, src->data);
    return dst;
}

/* ---- requests ----------------------------------------------------------------------------- */

static void drop_parts(imgq_http_request *req)
{
    for (size_t i = 0; i < req->nparts; i++) {
        struct part *p = &req->parts[i];
        free(p->name);
        free(p->data);
        free(p->filename);
        free(p->mime);
    }
    req->nparts = 0;
}

imgq_http_request *imgq_http_request_new(const char *method, const char *url)
{
    imgq_http_request *req = imgq_xcalloc(1, sizeof(*req));
    req->method = imgq_xstrdup(method ? method : "");
    req->url = imgq_xstrdup(url ? url : "");
    req->total_ms = DEFAULT_TOTAL_MS;
    req->connect_ms = DEFAULT_CONNECT_MS;
    return req;
}

void imgq_http_request_free(imgq_http_request *req)
{
    if (!req)
        return;
    free(req->method);
    free(req->url);
    curl_slist_free_all(req->headers);
    curl_slist_free_all(req->connect_to);
    free(req->body_copy);
    drop_parts(req);
    free(req->parts);
    free(req->sigv4_provider);
    free(req->access_key);
    if (req->secret_key) {
        OPENSSL_cleanse(req->secret_key, strlen(req->secret_key));
        free(req->secret_key);
    }
    free(req->payload_hash);
    free(req);
}

int imgq_http_request_add_header(imgq_http_request *req, const char *name, const char *value)
{
    if (!is_token(name) || !value || strpbrk(value, "\r\n"))
        return IMGQ_EINVAL;
    /* libcurl reads "Name:" as "remove this header"; "Name;" is how it sends an empty one. */
    char *line = *value ? imgq_xasprintf("%s: %s", name, value) : imgq_xasprintf("%s;", name);
    req->headers = slist_add(req->headers, line);
    free(line);
    if (strcasecmp(name, "content-type") == 0)
        req->has_content_type = true;
    return 0;
}

static void drop_body(imgq_http_request *req)
{
    free(req->body_copy);
    req->body_copy = NULL;
    req->body = NULL;
    req->body_len = 0;
    req->has_body = false;
}

void imgq_http_request_set_body(imgq_http_request *req, const void *data, size_t len)
{
    drop_body(req);
    drop_parts(req);
    req->body_copy = imgq_xmalloc(len);
    if (len)
        memcpy(req->body_copy, data, len);
    req->body = req->body_copy;
    req->body_len = len;
    req->has_body = true;
}

void imgq_http_request_set_body_ref(imgq_http_request *req, const void *data, size_t len)
{
    drop_body(req);
    drop_parts(req);
    req->body = len ? data : (const unsigned char *)"";
    req->body_len = len;
    req->has_body = true;
}

/* "type/subtype" made of tokens, then optional "; parameters" without CR or LF. */
static bool is_mime_type(const char *s)
{
    const char *slash = strchr(s, '/');
    if (!slash || slash == s || strpbrk(s, "\r\n"))
        return false;
    for (const char *p = s; p < slash; p++)
        if (!is_tchar((unsigned char)*p))
            return false;
    const char *p = slash + 1;
    if (!is_tchar((unsigned char)*p))
        return false;
    while (is_tchar((unsigned char)*p))
        p++;
    while (*p == ' ' || *p == '\t')
        p++;
    return *p == '\0' || *p == ';';
}

int imgq_http_request_add_part(imgq_http_request *req, const char *name, const void *data,
                               size_t len, const char *filename, const char *mime)
{
    if (!name || !*name || strpbrk(name, "\r\n") || (filename && strpbrk(filename, "\r\n")) ||
        (mime && !is_mime_type(mime)) || (!data && len))
        return IMGQ_EINVAL;
    drop_body(req);
    if (req->nparts == req->partcap) {
        req->partcap = req->partcap ? 2 * req->partcap : 8;
        req->parts = imgq_xrealloc(req->parts, req->partcap * sizeof(*req->parts));
    }
    struct part *p = &req->parts[req->nparts++];
    p->name = imgq_xstrdup(name);
    p->data = imgq_xmalloc(len ? len : 1);
    if (len)
        memcpy(p->data, data, len);
    p->len = len;
    p->filename = filename ? imgq_xstrdup(filename) : NULL;
    p->mime = mime ? imgq_xstrdup(mime) : NULL;
    return 0;
}

size_t imgq_http_request_part_count(const imgq_http_request *req)
{
    return req->nparts;
}

bool imgq_http_request_part(const imgq_http_request *req, size_t i, struct imgq_http_part *out)
{
    if (i >= req->nparts)
        return false;
    const struct part *p = &req->parts[i];
    *out = (struct imgq_http_part){p->name, p->data, p->len, p->filename, p->mime};
    return true;
}

const char *imgq_http_request_method(const imgq_http_request *req)
{
    return req->method;
}

const char *imgq_http_request_url(const imgq_http_request *req)
{
    return req->url;
}

void imgq_http_request_set_timeouts(imgq_http_request *req, long total_ms, long connect_ms)
{
    req->total_ms = total_ms > 0 ? total_ms : 0;
    req->connect_ms = connect_ms > 0 ? connect_ms : 0;
}

void imgq_http_request_set_max_body(imgq_http_request *req, size_t max_body)
{
    req->max_body = max_body;
}

void imgq_http_request_set_flags(imgq_http_request *req, unsigned flags)
{
    req->flags = flags;
}

int imgq_http_request_set_aws_sigv4(imgq_http_request *req, const char *region, const char *service,
                                    const char *access_key, const char *secret_key,
                                    const char *payload_hash)
{
    if (!region || !*region || strchr(region, ':') || !is_token(service) || strchr(service, ':') ||
        !access_key || !*access_key || !secret_key || !*secret_key)
        return IMGQ_EINVAL;
    if (payload_hash && strcmp(payload_hash, "UNSIGNED-PAYLOAD") != 0 &&
        !is_hex_sha256(payload_hash))
        return IMGQ_EINVAL;
    free(req->sigv4_provider);
    free(req->access_key);
    free(req->secret_key);
    free(req->payload_hash);
    req->sigv4_provider = imgq_xasprintf("aws:amz:%s:%s", region, service);
    req->access_key = imgq_xstrdup(access_key);
    req->secret_key = imgq_xstrdup(secret_key);
    req->payload_hash = payload_hash ? imgq_xstrdup(payload_hash) : NULL;
    return 0;
}

void imgq_http_request_add_connect_to(imgq_http_request *req, const char *entry)
{
    req->connect_to = slist_add(req->connect_to, entry);
}

void imgq_http_request_set_peer_filter(imgq_http_request *req,
                                       bool (*allow)(const char *ip, void *arg), void *arg)
{
    req->peer_allow = allow;
    req->peer_arg = arg;
}

/* Method must be a token, the URL an absolute http(s) URL that libcurl itself can parse. */
static int check_request(const imgq_http_request *req)
{
    if (!is_token(req->method) || strlen(req->method) > 32)
        return IMGQ_EINVAL;
    if (req->nparts && req->sigv4_provider && !req->payload_hash)
        return IMGQ_EINVAL; /* the body is libcurl's to encode: we cannot hash it */
    for (const char *p = req->url; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return IMGQ_EINVAL;

    CURLU *u = curl_url();
    char *scheme = NULL;
    int rc = IMGQ_EINVAL;
    if (!u)
        return IMGQ_EHTTP;
    if (curl_url_set(u, CURLUPART_URL, req->url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
        (strcmp(scheme, "http") == 0 || strcmp(scheme, "https") == 0))
        rc = 0;
    curl_free(scheme);
    curl_url_cleanup(u);
    return rc;
}

/* ---- response collection ------------------------------------------------------------------ */

static void collector_init(struct collector *c, size_t max_body, const imgq_http_request *req)
{
    memset(c, 0, sizeof(*c));
    c->max_body = max_body;
    c->peer_allow = req->peer_allow;
    c->peer_arg = req->peer_arg;
    c->start_ns = uv_hrtime();
    c->res.error = "";
    c->res.body = (const unsigned char *)"";
}

static void collector_clear_headers(struct collector *c)
{
    for (size_t i = 0; i < c->nhdrs; i++)
        free((char *)c->hdrs[i].name); /* name and value share one allocation */
    c->nhdrs = 0;
    c->hbytes = 0;
}

static void collector_release(struct collector *c)
{
    curl_mime_free(c->mime); /* only ever after the easy handle that used it is gone */
    c->mime = NULL;
    collector_clear_headers(c);
    free(c->hdrs);
    free(c->buf);
    free(c->error);
}

static size_t on_write(char *data, size_t size, size_t nmemb, void *userp)
{
    struct collector *c = userp;
    size_t n = size * nmemb;

    if (n > c->max_body - c->len) {
        c->too_big = true;
        return 0; /* makes libcurl fail the transfer with CURLE_WRITE_ERROR */
    }
    if (c->len + n + 1 > c->cap) {
        size_t want = c->cap ? c->cap : 16384;
        while (want < c->len + n + 1)
            want *= 2;
        if (want > c->max_body + 1)
            want = c->max_body + 1;
        c->buf = imgq_xrealloc(c->buf, want);
        c->cap = want;
    }
    memcpy(c->buf + c->len, data, n);
    c->len += n;
    return n;
}

static size_t on_header(char *data, size_t size, size_t nitems, void *userp)
{
    struct collector *c = userp;
    size_t n = size * nitems;
    size_t len = n;

    while (len && (data[len - 1] == '\n' || data[len - 1] == '\r'))
        len--;
    /* A status line starts a new header block: drop what an interim response (100) left. */
    if (len >= 5 && memcmp(data, "HTTP/", 5) == 0) {
        collector_clear_headers(c);
        return n;
    }
    if (len == 0 || data[0] == ' ' || data[0] == '\t') /* end of block, obsolete folding */
        return n;
    const char *colon = memchr(data, ':', len);
    if (!colon || colon == data || c->nhdrs >= MAX_HEADERS || c->hbytes + len > MAX_HEADER_BYTES)
        return n;
    size_t nlen = (size_t)(colon - data);
    while (nlen && (data[nlen - 1] == ' ' || data[nlen - 1] == '\t'))
        nlen--;
    const char *v = colon + 1, *end = data + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    size_t vlen = (size_t)(end - v);
    if (nlen == 0 || memchr(data, '\0', len))
        return n;

    char *mem = imgq_xmalloc(nlen + vlen + 2);
    memcpy(mem, data, nlen);
    mem[nlen] = '\0';
    memcpy(mem + nlen + 1, v, vlen);
    mem[nlen + 1 + vlen] = '\0';
    if (c->nhdrs == c->hcap) {
        c->hcap = c->hcap ? 2 * c->hcap : 16;
        c->hdrs = imgq_xrealloc(c->hdrs, c->hcap * sizeof(*c->hdrs));
    }
    c->hdrs[c->nhdrs].name = mem;
    c->hdrs[c->nhdrs].value = mem + nlen + 1;
    c->nhdrs++;
    c->hbytes += len;
    return n;
}

static int on_prereq(void *clientp, char *primary_ip, char *local_ip, int primary_port,
                     int local_port)
{
    struct collector *c = clientp;
    if (c->peer_allow(primary_ip, c->peer_arg))
        return CURL_PREREQFUNC_OK;
    snprintf(c->refused_ip, sizeof(c->refused_ip), "%s", primary_ip);
    return CURL_PREREQFUNC_ABORT;
}

/* Fill the public view once the transfer is over (code) or cancelled (cancel). */
static void collector_complete(struct collector *c, CURL *easy, CURLcode code, bool cancel)
{
    imgq_http_response *r = &c->res;
    long status = 0;

    if (easy && curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK)
        r->status = status;
    long request_size = 0;
    if (easy && curl_easy_getinfo(easy, CURLINFO_REQUEST_SIZE, &request_size) == CURLE_OK)
        r->request_sent = request_size > 0;
    if (cancel) {
        r->err = IMGQ_ECANCELED;
        c->error = imgq_xstrdup("transfer cancelled: HTTP client closed");
    } else if (code == CURLE_OK) {
        r->err = 0;
    } else if (c->too_big || code == CURLE_FILESIZE_EXCEEDED) {
        r->err = IMGQ_ERANGE;
        c->error = imgq_xasprintf("response body larger than %zu bytes", c->max_body);
    } else if (c->refused_ip[0]) {
        r->err = IMGQ_EHTTP;
        c->error = imgq_xasprintf("connection to %s refused by the peer filter", c->refused_ip);
    } else {
        r->err = IMGQ_EHTTP;
        r->timed_out = code == CURLE_OPERATION_TIMEDOUT;
        c->error = imgq_xstrdup(c->errbuf[0] ? c->errbuf : curl_easy_strerror(code));
    }
    if (c->error)
        r->error = c->error;
    if (c->buf) {
        c->buf[c->len] = '\0';
        r->body = c->buf;
    }
    r->body_len = c->len;
    r->headers = c->hdrs;
    r->nheaders = c->nhdrs;
    r->elapsed_ms = elapsed_ms_since(c->start_ns);
}

const char *imgq_http_response_header(const imgq_http_response *res, const char *name)
{
    for (size_t i = 0; i < res->nheaders; i++)
        if (strcasecmp(res->headers[i].name, name) == 0)
            return res->headers[i].value;
    return NULL;
}

/* ---- easy handle setup, shared by the async and the sync path ----------------------------- */

/* Everything the request carries plus what we add; the caller frees the list. */
static struct curl_slist *final_headers(const imgq_http_request *req, const char *payload_hash)
{
    struct curl_slist *list = slist_copy(req->headers, NULL);
    if (req->has_body && !req->has_content_type)
        list = slist_add(list, "Content-Type: application/octet-stream");
    if (req->sigv4_provider) {
        char *line = imgq_xasprintf("x-amz-content-sha256: %s", payload_hash);
        list = slist_add(list, line);
        free(line);
    }
    return list;
}

/* A part's bytes, read by libcurl through callbacks: the request keeps the one copy. */
struct part_reader {
    const unsigned char *data;
    size_t len, pos;
};

static size_t part_read(char *buf, size_t size, size_t nitems, void *arg)
{
    struct part_reader *r = arg;
    size_t want = size * nitems, left = r->len - r->pos;
    size_t n = want < left ? want : left;
    if (n)
        memcpy(buf, r->data + r->pos, n);
    r->pos += n;
    return n;
}

/* libcurl rewinds a part to send it again (a retried connection, a 417 to Expect). */
static int part_seek(void *arg, curl_off_t offset, int origin)
{
    struct part_reader *r = arg;
    curl_off_t base = origin == SEEK_SET   ? 0
                      : origin == SEEK_CUR ? (curl_off_t)r->pos
                      : origin == SEEK_END ? (curl_off_t)r->len
                                           : -1;
    if (base < 0 || offset < -base || offset > (curl_off_t)r->len - base)
        return CURL_SEEKFUNC_FAIL;
    r->pos = (size_t)(base + offset);
    return CURL_SEEKFUNC_OK;
}

/* The curl_mime of a multipart request, bound to easy handle 'e'; NULL on failure. */
static curl_mime *build_mime(CURL *e, const imgq_http_request *req)
{
    curl_mime *mime = curl_mime_init(e);
    if (!mime)
        return NULL;
    for (size_t i = 0; i < req->nparts; i++) {
        const struct part *p = &req->parts[i];
        curl_mimepart *mp = curl_mime_addpart(mime);
        if (!mp || curl_mime_name(mp, p->name) != CURLE_OK ||
            (p->filename && curl_mime_filename(mp, p->filename) != CURLE_OK) ||
            (p->mime && curl_mime_type(mp, p->mime) != CURLE_OK))
            goto fail;
        struct part_reader *r = imgq_xmalloc(sizeof(*r));
        *r = (struct part_reader){p->data, p->len, 0};
        if (curl_mime_data_cb(mp, (curl_off_t)p->len, part_read, part_seek, free, r) != CURLE_OK) {
            free(r); /* not attached */
            goto fail;
        }
    }
    return mime;
fail:
    curl_mime_free(mime);
    return NULL;
}

#define SETOPT(e, opt, val)                                                                        \
    do {                                                                                           \
        if (curl_easy_setopt((e), (opt), (val)) != CURLE_OK)                                       \
            return IMGQ_EHTTP;                                                                     \
    } while (0)

static int setup_easy(CURL *e, const imgq_http_request *req, struct curl_slist *headers,
                      struct collector *c)
{
    const char *m = req->method;
    bool send_parts = strcmp(m, "HEAD") != 0 && req->nparts > 0;
    bool send_body = strcmp(m, "HEAD") != 0 &&
                     (req->has_body || req->nparts || !strcmp(m, "POST") || !strcmp(m, "PUT"));

    SETOPT(e, CURLOPT_URL, req->url);
    SETOPT(e, CURLOPT_PROTOCOLS_STR, "http,https");
    SETOPT(e, CURLOPT_FOLLOWLOCATION, 0L);
    SETOPT(e, CURLOPT_NOSIGNAL, 1L);
    SETOPT(e, CURLOPT_USERAGENT, USER_AGENT);
    SETOPT(e, CURLOPT_TCP_KEEPALIVE, 1L);
    SETOPT(e, CURLOPT_TIMEOUT_MS, req->total_ms);
    SETOPT(e, CURLOPT_CONNECTTIMEOUT_MS, req->connect_ms);
    SETOPT(e, CURLOPT_ERRORBUFFER, c->errbuf);
    SETOPT(e, CURLOPT_WRITEFUNCTION, on_write);
    SETOPT(e, CURLOPT_WRITEDATA, c);
    SETOPT(e, CURLOPT_HEADERFUNCTION, on_header);
    SETOPT(e, CURLOPT_HEADERDATA, c);
    SETOPT(e, CURLOPT_HTTPHEADER, headers);

    if (!strcmp(m, "HEAD")) {
        SETOPT(e, CURLOPT_NOBODY, 1L);
    } else {
        /* Fail early on a Content-Length over the cap (not for HEAD: there it describes). */
        SETOPT(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)c->max_body);
        if (!strcmp(m, "POST"))
            SETOPT(e, CURLOPT_POST, 1L);
        else if (strcmp(m, "GET") != 0 || send_body)
            SETOPT(e, CURLOPT_CUSTOMREQUEST, m);
    }
    if (send_parts) {
        if (!(c->mime = build_mime(e, req)))
            return IMGQ_EHTTP;
        SETOPT(e, CURLOPT_MIMEPOST, c->mime);
    } else if (send_body) {
        SETOPT(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        SETOPT(e, CURLOPT_POSTFIELDS, req->body ? (const char *)req->body : "");
    }
    if (req->flags & IMGQ_HTTP_PATH_AS_IS)
        SETOPT(e, CURLOPT_PATH_AS_IS, 1L);
    if (req->flags & IMGQ_HTTP_NO_PROXY)
        SETOPT(e, CURLOPT_NOPROXY, "*");
    if (req->sigv4_provider) {
        SETOPT(e, CURLOPT_AWS_SIGV4, req->sigv4_provider);
        SETOPT(e, CURLOPT_USERNAME, req->access_key);
        SETOPT(e, CURLOPT_PASSWORD, req->secret_key);
    }
    if (req->connect_to)
        SETOPT(e, CURLOPT_CONNECT_TO, req->connect_to);
    if (req->peer_allow) {
        SETOPT(e, CURLOPT_PREREQFUNCTION, on_prereq);
        SETOPT(e, CURLOPT_PREREQDATA, c);
    }
    return 0;
}

/* ---- the client: sockets and timer -------------------------------------------------------- */

static void maybe_finish_close(imgq_http *h)
{
    if (!h->close_started || h->live > 0)
        return;
    void (*closed)(void *) = h->closed;
    void *arg = h->closed_arg;
    free(h);
    curl_global_cleanup();
    if (closed)
        closed(arg);
}

static void on_sock_closed(uv_handle_t *handle)
{
    struct sock *s = handle->data;
    imgq_http *h = s->h;
    free(s);
    h->live--;
    maybe_finish_close(h);
}

static void sock_close(struct sock *s)
{
    imgq_http *h = s->h;
    if (s->prev)
        s->prev->next = s->next;
    else
        h->socks = s->next;
    if (s->next)
        s->next->prev = s->prev;
    uv_close((uv_handle_t *)&s->poll, on_sock_closed);
}

static void drain(imgq_http *h);

static void on_poll(uv_poll_t *handle, int status, int events)
{
    struct sock *s = handle->data;
    imgq_http *h = s->h;
    int flags = 0, running = 0;

    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    curl_multi_socket_action(h->multi, s->fd, flags, &running);
    drain(h);
}

static void on_timer(uv_timer_t *timer)
{
    imgq_http *h = timer->data;
    int running = 0;
    curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    drain(h);
}

/* CURLMOPT_SOCKETFUNCTION: watch 'fd' for 'what'; runs inside libcurl, so only (un)registers. */
static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    imgq_http *h = userp;
    struct sock *s = socketp;

    if (what == CURL_POLL_REMOVE) {
        if (s) {
            sock_close(s);
            curl_multi_assign(h->multi, fd, NULL);
        }
        return 0;
    }
    if (!s) {
        s = imgq_xcalloc(1, sizeof(*s));
        int rc = uv_poll_init_socket(h->loop, &s->poll, fd);
        if (rc == UV_EEXIST) {
            /* libcurl closed a socket without telling us and the number came back: drop the
             * stale watcher, which libuv still has for this descriptor. */
            for (struct sock *old = h->socks; old; old = old->next) {
                if (old->fd == fd) {
                    sock_close(old);
                    break;
                }
            }
            rc = uv_poll_init_socket(h->loop, &s->poll, fd);
        }
        if (rc < 0) {
            free(s);
            return -1;
        }
        s->h = h;
        s->fd = fd;
        s->poll.data = s;
        s->next = h->socks;
        if (h->socks)
            h->socks->prev = s;
        h->socks = s;
        h->live++;
        curl_multi_assign(h->multi, fd, s);
    }
    int events = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        events |= UV_READABLE;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        events |= UV_WRITABLE;
    return uv_poll_start(&s->poll, events, on_poll) < 0 ? -1 : 0;
}

/* CURLMOPT_TIMERFUNCTION: runs inside libcurl, so only (re)arms the timer. */
static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    imgq_http *h = userp;
    if (timeout_ms < 0)
        uv_timer_stop(&h->timer);
    else
        uv_timer_start(&h->timer, on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

/* ---- the client: transfers ---------------------------------------------------------------- */

static void transfer_link(imgq_http *h, struct transfer *t)
{
    t->next = h->transfers;
    if (h->transfers)
        h->transfers->prev = t;
    h->transfers = t;
    h->in_flight++;
}

static void transfer_unlink(struct transfer *t)
{
    imgq_http *h = t->h;
    if (t->prev)
        t->prev->next = t->next;
    else
        h->transfers = t->next;
    if (t->next)
        t->next->prev = t->prev;
    t->prev = t->next = NULL;
    h->in_flight--;
}

static void transfer_free(struct transfer *t)
{
    if (t->easy)
        curl_easy_cleanup(t->easy);
    curl_slist_free_all(t->headers);
    collector_release(&t->col);
    imgq_http_request_free(t->req);
    free(t);
}

/* Run the callback of an unlinked transfer that is over.  The caller holds dispatch. */
static void transfer_answer(struct transfer *t, CURLcode code, bool cancel)
{
    imgq_http *h = t->h;
    if (t->easy && h->multi)
        curl_multi_remove_handle(h->multi, t->easy);
    collector_complete(&t->col, t->easy, code, cancel);
    t->answered = true;
    t->cb(&t->col.res, t->arg);
}

static void do_close(imgq_http *h);

static void dispatch_end(imgq_http *h)
{
    if (--h->dispatching == 0 && h->close_requested && !h->close_started)
        do_close(h);
}

/* Answer every finished transfer; runs after each curl_multi_socket_action. */
static void drain(imgq_http *h)
{
    CURLMsg *msg;
    int left;

    h->dispatching++;
    while (!h->close_requested && (msg = curl_multi_info_read(h->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        struct transfer *t = NULL;
        CURLcode code = msg->data.result; /* msg dies with curl_multi_remove_handle */
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&t);
        transfer_unlink(t);
        transfer_answer(t, code, false);
        transfer_free(t);
    }
    dispatch_end(h);
}

static int transfer_start(struct transfer *t)
{
    imgq_http *h = t->h;
    const char *hash = t->req->payload_hash ? t->req->payload_hash : t->hash;

    t->headers = final_headers(t->req, hash);
    t->easy = curl_easy_init();
    if (!t->easy)
        return IMGQ_EHTTP;
    int rc = setup_easy(t->easy, t->req, t->headers, &t->col);
    if (rc == 0 && curl_easy_setopt(t->easy, CURLOPT_PRIVATE, (char *)t) != CURLE_OK)
        rc = IMGQ_EHTTP;
    /* Over TLS, ALPN tells within the handshake whether a connection multiplexes (HTTP/2), so
     * waiting for it beats opening one connection per transfer.  Plain http never
     * multiplexes here, and waiting would stall every transfer behind the first response. */
    if (rc == 0 && strncasecmp(t->req->url, "https:", 6) == 0 &&
        curl_easy_setopt(t->easy, CURLOPT_PIPEWAIT, 1L) != CURLE_OK)
        rc = IMGQ_EHTTP;
    if (rc == 0 && curl_multi_add_handle(h->multi, t->easy) != CURLM_OK)
        rc = IMGQ_EHTTP;
    if (rc < 0) {
        curl_easy_cleanup(t->easy);
        t->easy = NULL;
    }
    return rc;
}

static void hash_work(uv_work_t *work)
{
    struct transfer *t = work->data;
    sha256_hex(t->req->body, t->req->body_len, t->hash);
}

static void hash_done(uv_work_t *work, int status)
{
    struct transfer *t = work->data;
    imgq_http *h = t->h;

    h->live--;
    t->hashing = false;
    if (t->answered || t->cancel_late) { /* imgq_http_close ran meanwhile */
        if (!t->answered) {
            h->dispatching++;
            transfer_answer(t, CURLE_OK, true);
            h->dispatching--;
        }
        transfer_free(t);
        maybe_finish_close(h);
        return;
    }
    if (transfer_start(t) < 0) {
        h->dispatching++;
        snprintf(t->col.errbuf, sizeof(t->col.errbuf), "libcurl refused the transfer");
        transfer_unlink(t);
        transfer_answer(t, CURLE_FAILED_INIT, false);
        transfer_free(t);
        dispatch_end(h);
    }
}

int imgq_http_submit(imgq_http *h, imgq_http_request *req, imgq_http_cb cb, void *arg)
{
    int rc;

    if (h->close_requested) {
        imgq_http_request_free(req);
        return IMGQ_ECANCELED;
    }
    if ((rc = check_request(req)) < 0) {
        imgq_http_request_free(req);
        return rc;
    }
    struct transfer *t = imgq_xcalloc(1, sizeof(*t));
    t->h = h;
    t->req = req;
    t->cb = cb;
    t->arg = arg;
    collector_init(&t->col, req->max_body ? req->max_body : h->opts.max_body, req);

    if (req->sigv4_provider && !req->payload_hash) {
        if (req->body_len >= HASH_OFFLOAD_BYTES) {
            t->work.data = t;
            if (uv_queue_work(h->loop, &t->work, hash_work, hash_done) == 0) {
                t->hashing = true;
                h->live++;
                transfer_link(h, t);
                return 0;
            }
        }
        sha256_hex(req->body ? (const void *)req->body : "", req->body_len, t->hash);
    }
    if ((rc = transfer_start(t)) < 0) {
        transfer_free(t); /* and req with it */
        return rc;
    }
    transfer_link(h, t);
    return 0;
}

size_t imgq_http_in_flight(const imgq_http *h)
{
    return h->in_flight;
}

void imgq_http_options_init(struct imgq_http_options *opts)
{
    opts->max_host_connections = DEFAULT_MAX_HOST_CONNECTIONS;
    opts->max_total_connections = -1;
    opts->max_idle_connections = DEFAULT_MAX_IDLE_CONNECTIONS;
    opts->max_body = IMGQ_HTTP_DEFAULT_MAX_BODY;
}

int imgq_http_init(uv_loop_t *loop, const struct imgq_http_options *opts, imgq_http **out)
{
    struct imgq_http_options o;
    imgq_http_options_init(&o);
    if (opts) {
        if (opts->max_host_connections < 0 || opts->max_idle_connections < 0 ||
            opts->max_total_connections < -1)
            return IMGQ_EINVAL;
        if (opts->max_host_connections)
            o.max_host_connections = opts->max_host_connections;
        if (opts->max_total_connections)
            o.max_total_connections = opts->max_total_connections;
        if (opts->max_idle_connections)
            o.max_idle_connections = opts->max_idle_connections;
        if (opts->max_body)
            o.max_body = opts->max_body;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return IMGQ_EHTTP;

    imgq_http *h = imgq_xcalloc(1, sizeof(*h));
    h->loop = loop;
    h->opts = o;
    h->multi = curl_multi_init();
    if (!h->multi)
        goto fail_multi;
    CURLM *m = h->multi;
    if (curl_multi_setopt(m, CURLMOPT_SOCKETFUNCTION, on_curl_socket) != CURLM_OK ||
        curl_multi_setopt(m, CURLMOPT_SOCKETDATA, h) != CURLM_OK ||
        curl_multi_setopt(m, CURLMOPT_TIMERFUNCTION, on_curl_timer) != CURLM_OK ||
        curl_multi_setopt(m, CURLMOPT_TIMERDATA, h) != CURLM_OK ||
        curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, o.max_host_connections) != CURLM_OK ||
        curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS,
                          o.max_total_connections < 0 ? 0L : o.max_total_connections) != CURLM_OK ||
        curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, o.max_idle_connections) != CURLM_OK)
        goto fail_setopt;
    if (uv_timer_init(loop, &h->timer) < 0)
        goto fail_setopt;
    h->timer.data = h;
    h->live = 1; /* the timer */
    *out = h;
    return 0;

fail_setopt:
    curl_multi_cleanup(h->multi);
fail_multi:
    free(h);
    curl_global_cleanup();
    return IMGQ_EHTTP;
}

static void on_timer_closed(uv_handle_t *handle)
{
    imgq_http *h = handle->data;
    h->live--;
    maybe_finish_close(h);
}

static void do_close(imgq_http *h)
{
    h->close_started = true;
    h->dispatching++; /* a callback calling imgq_http_close again must not recurse */
    while (h->transfers) {
        struct transfer *t = h->transfers;
        transfer_unlink(t);
        if (t->hashing && uv_cancel((uv_req_t *)&t->work) != 0) {
            /* A thread is reading the body, which the callback may free: answer later. */
            t->cancel_late = true;
            continue;
        }
        transfer_answer(t, CURLE_OK, true);
        if (!t->hashing) /* else hash_done, which still comes, frees it */
            transfer_free(t);
    }
    h->dispatching--;
    /* Closes the pooled connections; libcurl may still report sockets removed. */
    curl_multi_cleanup(h->multi);
    h->multi = NULL;
    while (h->socks)
        sock_close(h->socks);
    uv_close((uv_handle_t *)&h->timer, on_timer_closed);
}

void imgq_http_close(imgq_http *h, void (*closed)(void *arg), void *arg)
{
    if (h->close_requested)
        return;
    h->close_requested = true;
    h->closed = closed;
    h->closed_arg = arg;
    if (h->dispatching == 0)
        do_close(h);
}

/* ---- blocking helper ---------------------------------------------------------------------- */

int imgq_http_perform_sync(const imgq_http_request *req, imgq_http_response **out)
{
    struct collector *c = imgq_xmalloc(sizeof(*c));
    collector_init(c, req->max_body ? req->max_body : IMGQ_HTTP_DEFAULT_MAX_BODY, req);
    *out = &c->res;

    int rc = check_request(req);
    if (rc < 0) {
        c->res.err = rc;
        c->error = imgq_xasprintf("invalid request: %s %s", req->method, req->url);
        c->res.error = c->error;
        return rc;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        c->res.err = IMGQ_EHTTP;
        c->error = imgq_xstrdup("libcurl initialisation failed");
        c->res.error = c->error;
        return IMGQ_EHTTP;
    }
    char hash[65] = "";
    if (req->sigv4_provider && !req->payload_hash)
        sha256_hex(req->body ? (const void *)req->body : "", req->body_len, hash);
    struct curl_slist *headers = final_headers(req, req->payload_hash ? req->payload_hash : hash);
    CURL *e = curl_easy_init();
    CURLcode code = CURLE_FAILED_INIT;
    if (e && setup_easy(e, req, headers, c) == 0)
        code = curl_easy_perform(e);
    collector_complete(c, e, code, false);
    curl_easy_cleanup(e);
    curl_mime_free(c->mime); /* the request it reads from is only borrowed */
    c->mime = NULL;
    curl_slist_free_all(headers);
    curl_global_cleanup();
    return c->res.err;
}

void imgq_http_response_free(imgq_http_response *res)
{
    if (!res)
        return;
    struct collector *c = (struct collector *)res; /* res is the first member */
    collector_release(c);
    free(c);
}
