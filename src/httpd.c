/* httpd.c - HTTP/1.1 request parser and a small keep-alive server on libuv (see httpd.h). */
#include "imgq/httpd.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "imgq/alloc.h"

/* ---- Requests ------------------------------------------------------------------------------ */

struct conn;

struct imgq_httpd_request {
    char *head; /* copy of the request head; the strings below point into it */
    const char *method;
    const char *target;
    char *path;
    const char *query;
    int minor;
    struct imgq_httpd_header *headers;
    size_t nheaders;
    char *body;
    size_t body_len;
    uint64_t content_length;
    bool keep_alive;
    bool expect_continue;
    bool aborted;
    void *data;
    struct conn *conn; /* the connection it came on; NULL once that is gone, or if parsed alone */
};

const char *imgq_httpd_request_method(const imgq_httpd_request *req)
{
    return req->method;
}

const char *imgq_httpd_request_target(const imgq_httpd_request *req)
{
    return req->target;
}

const char *imgq_httpd_request_path(const imgq_httpd_request *req)
{
    return req->path;
}

const char *imgq_httpd_request_query(const imgq_httpd_request *req)
{
    return req->query;
}

int imgq_httpd_request_version_minor(const imgq_httpd_request *req)
{
    return req->minor;
}

const char *imgq_httpd_request_header(const imgq_httpd_request *req, const char *name)
{
    for (size_t i = 0; i < req->nheaders; i++)
        if (strcasecmp(req->headers[i].name, name) == 0)
            return req->headers[i].value;
    return NULL;
}

const struct imgq_httpd_header *imgq_httpd_request_headers(const imgq_httpd_request *req,
                                                           size_t *count)
{
    *count = req->nheaders;
    return req->headers;
}

const char *imgq_httpd_request_body(const imgq_httpd_request *req, size_t *len)
{
    if (len)
        *len = req->body_len;
    return req->body;
}

bool imgq_httpd_request_keep_alive(const imgq_httpd_request *req)
{
    return req->keep_alive;
}

bool imgq_httpd_request_aborted(const imgq_httpd_request *req)
{
    return req->aborted;
}

void *imgq_httpd_request_data(const imgq_httpd_request *req)
{
    return req->data;
}

void imgq_httpd_request_set_data(imgq_httpd_request *req, void *data)
{
    req->data = data;
}

void imgq_httpd_request_free(imgq_httpd_request *req)
{
    if (!req)
        return;
    free(req->head);
    free(req->path);
    free(req->headers);
    free(req->body);
    free(req);
}

/* ---- Parser -------------------------------------------------------------------------------- */

struct imgq_httpd_parser {
    struct imgq_httpd_limits lim;
    char *buf;
    size_t off, len, cap;    /* unconsumed input is buf[off..len) */
    size_t scanned;          /* bytes after off already searched for the end of the head */
    imgq_httpd_request *cur; /* head parsed, body still arriving */
    bool continue_due;
    int status; /* HTTP status to answer with after an error; 0 while healthy */
    const char *error;
};

imgq_httpd_parser *imgq_httpd_parser_new(const struct imgq_httpd_limits *limits)
{
    imgq_httpd_parser *p = imgq_xcalloc(1, sizeof(*p));
    if (limits)
        p->lim = *limits;
    if (!p->lim.max_header_bytes)
        p->lim.max_header_bytes = IMGQ_HTTPD_DEFAULT_MAX_HEADER_BYTES;
    if (!p->lim.max_headers)
        p->lim.max_headers = IMGQ_HTTPD_DEFAULT_MAX_HEADERS;
    if (!p->lim.max_body_bytes)
        p->lim.max_body_bytes = IMGQ_HTTPD_DEFAULT_MAX_BODY_BYTES;
    p->error = "";
    return p;
}

void imgq_httpd_parser_free(imgq_httpd_parser *p)
{
    if (!p)
        return;
    imgq_httpd_request_free(p->cur);
    free(p->buf);
    free(p);
}

void imgq_httpd_parser_feed(imgq_httpd_parser *p, const void *data, size_t n)
{
    if (n == 0)
        return;
    if (p->off == p->len) {
        p->off = p->len = 0;
    } else if (p->off > 0 && p->cap - p->len < n) {
        memmove(p->buf, p->buf + p->off, p->len - p->off);
        p->len -= p->off;
        p->off = 0;
    }
    if (p->cap - p->len < n) {
        size_t cap = p->cap ? p->cap : 4096;
        while (cap - p->len < n)
            cap *= 2;
        p->buf = imgq_xrealloc(p->buf, cap);
        p->cap = cap;
    }
    memcpy(p->buf + p->len, data, n);
    p->len += n;
}

size_t imgq_httpd_parser_buffered(const imgq_httpd_parser *p)
{
    return p->len - p->off;
}

int imgq_httpd_parser_status(const imgq_httpd_parser *p)
{
    return p->status;
}

const char *imgq_httpd_parser_error(const imgq_httpd_parser *p)
{
    return p->error;
}

bool imgq_httpd_parser_take_continue(imgq_httpd_parser *p)
{
    bool due = p->continue_due;
    p->continue_due = false;
    return due;
}

static int fail(imgq_httpd_parser *p, int status, const char *why)
{
    p->status = status;
    p->error = why;
    imgq_httpd_request_free(p->cur);
    p->cur = NULL;
    return status == 413 || status == 431 ? IMGQ_ERANGE : IMGQ_EPARSE;
}

static bool is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* Field-value bytes: visible ASCII, obs-text, space and tab; no other control characters. */
static bool is_value_char(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

/* Whether the comma-separated list 'v' holds 'token' (case-insensitive). */
static bool list_has(const char *v, const char *token)
{
    size_t n = strlen(token);
    while (*v) {
        while (*v == ' ' || *v == '\t' || *v == ',')
            v++;
        const char *end = v;
        while (*end && *end != ',')
            end++;
        const char *e = end;
        while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if ((size_t)(e - v) == n && strncasecmp(v, token, n) == 0)
            return true;
        v = end;
    }
    return false;
}

static int parse_content_length(const char *v, uint64_t *out)
{
    uint64_t n = 0;
    if (!*v)
        return -1;
    for (; *v; v++) {
        if (*v < '0' || *v > '9')
            return -1;
        uint64_t d = (uint64_t)(*v - '0');
        if (n > (UINT64_MAX - d) / 10)
            return -1;
        n = n * 10 + d;
    }
    *out = n;
    return 0;
}

/* Split the request line into method, target, version; NUL-terminates them in place. */
static int parse_request_line(imgq_httpd_parser *p, imgq_httpd_request *r, char *line)
{
    char *sp1 = strchr(line, ' ');
    if (!sp1 || sp1 == line)
        return fail(p, 400, "malformed request line");
    char *target = sp1 + 1;
    char *sp2 = strchr(target, ' ');
    if (!sp2 || sp2 == target)
        return fail(p, 400, "malformed request line");
    *sp1 = *sp2 = '\0';
    char *version = sp2 + 1;

    for (char *c = line; *c; c++)
        if (!is_tchar((unsigned char)*c))
            return fail(p, 400, "invalid method");
    for (char *c = target; *c; c++)
        if ((unsigned char)*c <= 0x20 || (unsigned char)*c >= 0x7f)
            return fail(p, 400, "invalid request target");
    if (strcmp(version, "HTTP/1.1") == 0) {
        r->minor = 1;
    } else if (strcmp(version, "HTTP/1.0") == 0) {
        r->minor = 0;
    } else if (strncmp(version, "HTTP/", 5) == 0 && version[5] >= '0' && version[5] <= '9' &&
               version[6] == '.' && version[7] >= '0' && version[7] <= '9' && !version[8]) {
        return fail(p, 505, "HTTP version not supported");
    } else {
        return fail(p, 400, "malformed HTTP version");
    }
    r->method = line;
    r->target = target;
    const char *q = strchr(target, '?');
    r->path = imgq_xstrndup(target, q ? (size_t)(q - target) : strlen(target));
    r->query = q ? q + 1 : "";
    return 0;
}

/* Parse the head (request line and header fields, 'n' bytes ending with the blank line) into a
 * new request in p->cur. */
static int parse_head(imgq_httpd_parser *p, const char *data, size_t n)
{
    imgq_httpd_request *r = imgq_xcalloc(1, sizeof(*r));
    p->cur = r;
    r->head = imgq_xstrndup(data, n);
    if (memchr(data, '\0', n))
        return fail(p, 400, "NUL byte in request head");

    size_t cap = 16;
    r->headers = imgq_xmalloc(cap * sizeof(*r->headers));
    char *line = r->head;
    bool first = true, have_cl = false, have_host = false, have_te = false;
    while (*line) {
        char *nl = strchr(line, '\n');
        char *next = nl + 1; /* the head always ends with '\n' */
        char *end = nl;
        if (end > line && end[-1] == '\r')
            end--;
        *end = '\0';
        if (memchr(line, '\r', (size_t)(end - line)))
            return fail(p, 400, "bare CR in request head");
        if (line == end) /* the blank line */
            break;
        if (first) {
            int rc = parse_request_line(p, r, line);
            if (rc)
                return rc;
            first = false;
            line = next;
            continue;
        }
        if (*line == ' ' || *line == '\t')
            return fail(p, 400, "obsolete header line folding");
        char *colon = line;
        while (is_tchar((unsigned char)*colon))
            colon++;
        if (*colon != ':' || colon == line)
            return fail(p, 400, "malformed header field");
        *colon = '\0';
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        char *ve = end;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        *ve = '\0';
        for (char *c = v; *c; c++)
            if (!is_value_char((unsigned char)*c))
                return fail(p, 400, "control character in header value");

        if (r->nheaders == p->lim.max_headers)
            return fail(p, 431, "too many header fields");
        if (r->nheaders == cap) {
            cap *= 2;
            r->headers = imgq_xrealloc(r->headers, cap * sizeof(*r->headers));
        }
        r->headers[r->nheaders++] = (struct imgq_httpd_header){line, v};

        if (strcasecmp(line, "Content-Length") == 0) {
            uint64_t cl;
            if (parse_content_length(v, &cl))
                return fail(p, 400, "invalid Content-Length");
            if (have_cl && cl != r->content_length)
                return fail(p, 400, "conflicting Content-Length fields");
            have_cl = true;
            r->content_length = cl;
        } else if (strcasecmp(line, "Transfer-Encoding") == 0) {
            have_te = true;
        } else if (strcasecmp(line, "Host") == 0) {
            if (have_host)
                return fail(p, 400, "more than one Host field");
            have_host = true;
        } else if (strcasecmp(line, "Expect") == 0) {
            if (strcasecmp(v, "100-continue") != 0)
                return fail(p, 417, "unsupported expectation");
            r->expect_continue = r->minor >= 1;
        }
        line = next;
    }
    if (first)
        return fail(p, 400, "empty request");
    if (have_te) /* request smuggling hides in TE + CL; imgq's clients never send chunked */
        return fail(p, 501, "Transfer-Encoding in requests is not supported");
    if (r->minor >= 1 && !have_host)
        return fail(p, 400, "missing Host field");
    if (r->content_length > p->lim.max_body_bytes)
        return fail(p, 413, "request body too large");

    const char *conn = imgq_httpd_request_header(r, "Connection");
    if (r->minor >= 1)
        r->keep_alive = !(conn && list_has(conn, "close"));
    else
        r->keep_alive = conn && list_has(conn, "keep-alive");
    return 0;
}

/* Offset just past the blank line ending a head that starts at s, or 0 if not there yet. */
static size_t find_head_end(imgq_httpd_parser *p, const char *s, size_t n)
{
    for (size_t i = p->scanned; i < n; i++) {
        if (s[i] != '\n')
            continue;
        if ((i >= 1 && s[i - 1] == '\n') || (i >= 2 && s[i - 1] == '\r' && s[i - 2] == '\n'))
            return i + 1;
    }
    p->scanned = n;
    return 0;
}

int imgq_httpd_parser_next(imgq_httpd_parser *p, imgq_httpd_request **out)
{
    if (p->status)
        return p->status == 413 || p->status == 431 ? IMGQ_ERANGE : IMGQ_EPARSE;
    if (!p->buf)
        return 0; /* nothing fed yet */

    if (!p->cur) {
        /* Empty lines before a request line are allowed (RFC 9112, 2.2). */
        while (p->off < p->len) {
            char ch = p->buf[p->off];
            if (ch == '\n') {
                p->off++;
            } else if (ch == '\r') {
                if (p->off + 1 == p->len)
                    return 0; /* wait for the LF */
                if (p->buf[p->off + 1] != '\n')
                    return fail(p, 400, "bare CR before request line");
                p->off += 2;
            } else {
                break;
            }
        }
        size_t avail = p->len - p->off;
        size_t end = find_head_end(p, p->buf + p->off, avail);
        if (!end) {
            if (avail > p->lim.max_header_bytes)
                return fail(p, 431, "request head too large");
            return 0;
        }
        if (end > p->lim.max_header_bytes)
            return fail(p, 431, "request head too large");
        int rc = parse_head(p, p->buf + p->off, end);
        if (rc)
            return rc;
        p->off += end;
        p->scanned = 0;
        p->continue_due = p->cur->expect_continue && p->cur->content_length > 0;
    }

    imgq_httpd_request *r = p->cur;
    if (p->len - p->off < r->content_length)
        return 0;
    size_t cl = (size_t)r->content_length;
    r->body = imgq_xmalloc(cl + 1);
    memcpy(r->body, p->buf + p->off, cl);
    r->body[cl] = '\0';
    r->body_len = cl;
    p->off += cl;
    p->cur = NULL;
    p->continue_due = false;
    *out = r;
    return 1;
}

/* ---- Server -------------------------------------------------------------------------------- */

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer; /* idle timeout, then the drain deadline */
    uv_shutdown_t shutdown;
    imgq_httpd *srv;
    struct conn *prev, *next;
    imgq_httpd_parser *parser;
    imgq_httpd_request *pending; /* handed to the handler, not yet answered */
    int open_handles;
    size_t writes;
    bool reading;
    bool in_process; /* inside process(): answers must not re-enter it */
    bool finishing;  /* last response queued: no more requests are parsed */
    bool draining;   /* FIN sent: discard input until the peer closes */
    bool eof;        /* the peer sent FIN */
    bool closing;
};

struct imgq_httpd {
    uv_loop_t *loop;
    uv_tcp_t listener;
    struct imgq_httpd_options opt;
    imgq_httpd_handler handler;
    void *data;
    struct conn *conns;
    size_t nconns; /* not yet freed, closing ones included */
    size_t nopen;  /* open (not closing) */
    size_t npending;
    int port;
    bool closing;
    bool listener_closed;
    void (*close_cb)(void *);
    void *close_data;
    char readbuf[64 * 1024]; /* one loop thread: each read is consumed before the next */
};

struct write_req {
    uv_write_t req;
    struct conn *conn;
    char *head;
    void *body;
};

#define DRAIN_TIMEOUT_MS 2000
/* While a request is with the handler, buffer at most this much further input. */
#define MAX_BUFFERED_WHILE_PENDING (256u * 1024)

static void process(struct conn *c);
static void conn_close(struct conn *c);

const char *imgq_httpd_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 415:
        return "Unsupported Media Type";
    case 417:
        return "Expectation Failed";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    }
    return "Unknown";
}

void imgq_httpd_options_init(struct imgq_httpd_options *o)
{
    memset(o, 0, sizeof(*o));
    o->host = "127.0.0.1";
    o->backlog = 4096;
    o->limits.max_header_bytes = IMGQ_HTTPD_DEFAULT_MAX_HEADER_BYTES;
    o->limits.max_headers = IMGQ_HTTPD_DEFAULT_MAX_HEADERS;
    o->limits.max_body_bytes = IMGQ_HTTPD_DEFAULT_MAX_BODY_BYTES;
    o->idle_timeout_ms = 60000;
}

int imgq_httpd_port(const imgq_httpd *srv)
{
    return srv->port;
}

size_t imgq_httpd_connections(const imgq_httpd *srv)
{
    return srv->nopen;
}

size_t imgq_httpd_pending(const imgq_httpd *srv)
{
    return srv->npending;
}

static void srv_maybe_done(imgq_httpd *srv)
{
    if (!srv->closing || !srv->listener_closed || srv->nconns)
        return;
    void (*cb)(void *) = srv->close_cb;
    void *data = srv->close_data;
    free(srv);
    if (cb)
        cb(data);
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    if (--c->open_handles)
        return;
    imgq_httpd *srv = c->srv;
    imgq_httpd_parser_free(c->parser);
    free(c);
    srv->nconns--;
    srv_maybe_done(srv);
}

/* Close at once (no more I/O).  A request still with the handler becomes aborted. */
static void conn_close(struct conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    imgq_httpd *srv = c->srv;
    if (c->pending) {
        c->pending->conn = NULL;
        c->pending->aborted = true;
        c->pending = NULL;
        srv->npending--;
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    srv->nopen--;
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
}

static void on_timer(uv_timer_t *t)
{
    conn_close(t->data); /* idle too long, or the peer did not close after our FIN */
}

static void idle_timer_restart(struct conn *c)
{
    uv_timer_start(&c->timer, on_timer, c->srv->opt.idle_timeout_ms, 0);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;
    *buf = uv_buf_init(c->srv->readbuf, sizeof(c->srv->readbuf));
}

static void reading_start(struct conn *c);

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct conn *c = req->data;
    if (c->closing)
        return;
    if (status < 0 || c->eof) {
        conn_close(c);
        return;
    }
    /* Closing with unread input makes the kernel send RST, which can destroy the response
     * before the client reads it; so read and discard until the client closes too. */
    c->draining = true;
    uv_timer_start(&c->timer, on_timer, DRAIN_TIMEOUT_MS, 0);
    reading_start(c);
}

static void conn_finish(struct conn *c)
{
    if (c->closing || c->draining)
        return;
    c->shutdown.data = c;
    if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) < 0)
        conn_close(c);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void reading_start(struct conn *c)
{
    if (!c->reading && !c->eof && !c->closing) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
            c->reading = true;
    }
}

static void reading_stop(struct conn *c)
{
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

static void on_write(uv_write_t *w, int status)
{
    struct write_req *wr = (struct write_req *)w;
    struct conn *c = wr->conn;
    free(wr->head);
    free(wr->body);
    free(wr);
    c->writes--;
    if (c->closing)
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (c->writes == 0 && !c->pending && (c->finishing || c->eof))
        conn_finish(c);
}

/* Queue one response; takes 'head' and 'body' (malloc'd, or NULL). */
static void conn_write(struct conn *c, char *head, size_t head_len, void *body, size_t len)
{
    struct write_req *wr = imgq_xmalloc(sizeof(*wr));
    uv_buf_t bufs[2] = {uv_buf_init(head, (unsigned)head_len), uv_buf_init(body, (unsigned)len)};
    wr->conn = c;
    wr->head = head;
    wr->body = body;
    if (uv_write(&wr->req, (uv_stream_t *)&c->tcp, bufs, len ? 2 : 1, on_write) < 0) {
        free(head);
        free(body);
        free(wr);
        conn_close(c);
        return;
    }
    c->writes++;
}

/* Append printf output to a malloc'd string of length *len. */
static void __attribute__((format(printf, 3, 4)))
sappend(char **s, size_t *len, const char *fmt, ...)
{
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    *s = imgq_xrealloc(*s, *len + (size_t)n + 1);
    vsnprintf(*s + *len, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    *len += (size_t)n;
}

static char *format_head(int status, const struct imgq_httpd_header *headers, size_t n,
                         size_t body_len, bool keep_alive, int minor, size_t *head_len)
{
    char *head = NULL;
    size_t len = 0;
    sappend(&head, &len, "HTTP/1.1 %d %s\r\n", status, imgq_httpd_reason(status));
    for (size_t i = 0; i < n; i++) {
        if (strpbrk(headers[i].name, "\r\n") || strpbrk(headers[i].value, "\r\n"))
            continue;
        sappend(&head, &len, "%s: %s\r\n", headers[i].name, headers[i].value);
    }
    if (status >= 200 && status != 204 && status != 304)
        sappend(&head, &len, "Content-Length: %zu\r\n", body_len);
    if (!keep_alive)
        sappend(&head, &len, "Connection: close\r\n");
    else if (minor == 0)
        sappend(&head, &len, "Connection: keep-alive\r\n");
    sappend(&head, &len, "\r\n");
    *head_len = len;
    return head;
}

/* The parser failed: answer with its status and close. */
static void conn_reject(struct conn *c)
{
    int status = imgq_httpd_parser_status(c->parser);
    char *body = imgq_xasprintf("%s\n", imgq_httpd_parser_error(c->parser));
    struct imgq_httpd_header h = {"Content-Type", "text/plain; charset=utf-8"};
    size_t head_len, len = strlen(body);
    char *head = format_head(status, &h, 1, len, false, 1, &head_len);
    c->finishing = true;
    reading_stop(c);
    conn_write(c, head, head_len, body, len);
}

static void write_continue(struct conn *c)
{
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    conn_write(c, imgq_xstrdup(cont), sizeof(cont) - 1, NULL, 0);
}

/* Hand out complete requests, one at a time per connection. */
static void process(struct conn *c)
{
    imgq_httpd *srv = c->srv;
    c->in_process = true;
    while (!c->pending && !c->closing && !c->finishing) {
        imgq_httpd_request *req;
        int rc = imgq_httpd_parser_next(c->parser, &req);
        if (rc < 0) {
            conn_reject(c);
            break;
        }
        if (rc == 0) {
            if (imgq_httpd_parser_take_continue(c->parser))
                write_continue(c);
            if (c->eof && !c->writes)
                conn_finish(c); /* the peer is done sending and nothing is owed */
            break;
        }
        req->conn = c;
        c->pending = req;
        srv->npending++;
        uv_timer_stop(&c->timer);
        srv->handler(req, srv->data);
    }
    c->in_process = false;
    if (c->closing || c->finishing)
        return;
    if (c->pending && imgq_httpd_parser_buffered(c->parser) > MAX_BUFFERED_WHILE_PENDING)
        reading_stop(c); /* back-pressure on a client that pipelines without bound */
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    if (nread == 0 || c->closing)
        return;
    if (nread < 0) {
        reading_stop(c);
        if (nread != UV_EOF || c->draining) {
            conn_close(c);
            return;
        }
        c->eof = true;
        /* Half-closed: answer what was asked, then close. */
        if (!c->pending && !c->writes)
            process(c);
        return;
    }
    if (c->draining)
        return;
    imgq_httpd_parser_feed(c->parser, buf->base, (size_t)nread);
    if (!c->pending)
        idle_timer_restart(c);
    if (!c->in_process && !c->pending)
        process(c);
    else if (c->pending && imgq_httpd_parser_buffered(c->parser) > MAX_BUFFERED_WHILE_PENDING)
        reading_stop(c);
}

void imgq_httpd_respond_take(imgq_httpd_request *req, int status,
                             const struct imgq_httpd_header *headers, size_t nheaders, void *body,
                             size_t len)
{
    struct conn *c = req->conn;
    if (!c) { /* aborted: the client or the server went away */
        free(body);
        imgq_httpd_request_free(req);
        return;
    }
    imgq_httpd *srv = c->srv;
    bool keep_alive = req->keep_alive && !c->eof && !srv->closing;
    bool no_body =
        strcmp(req->method, "HEAD") == 0 || status < 200 || status == 204 || status == 304;
    size_t head_len;
    char *head = format_head(status, headers, nheaders, len, keep_alive, req->minor, &head_len);
    c->pending = NULL;
    srv->npending--;
    imgq_httpd_request_free(req);
    if (no_body) {
        free(body);
        body = NULL;
        len = 0;
    }
    if (!keep_alive) {
        c->finishing = true;
        reading_stop(c);
    }
    conn_write(c, head, head_len, body, len);
    if (c->closing || c->finishing)
        return;
    idle_timer_restart(c);
    reading_start(c);
    if (!c->in_process)
        process(c);
}

void imgq_httpd_respond(imgq_httpd_request *req, int status,
                        const struct imgq_httpd_header *headers, size_t nheaders, const void *body,
                        size_t len)
{
    void *copy = NULL;
    if (len) {
        copy = imgq_xmalloc(len);
        memcpy(copy, body, len);
    }
    imgq_httpd_respond_take(req, status, headers, nheaders, copy, len);
}

static void on_connection(uv_stream_t *server, int status)
{
    imgq_httpd *srv = server->data;
    if (status < 0 || srv->closing)
        return;
    struct conn *c = imgq_xcalloc(1, sizeof(*c));
    c->srv = srv;
    c->tcp.data = c;
    c->timer.data = c;
    uv_tcp_init(srv->loop, &c->tcp);
    uv_timer_init(srv->loop, &c->timer);
    c->open_handles = 2;
    c->parser = imgq_httpd_parser_new(&srv->opt.limits);
    srv->nconns++;
    srv->nopen++;
    c->next = srv->conns;
    if (c->next)
        c->next->prev = c;
    srv->conns = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    idle_timer_restart(c);
    reading_start(c);
    if (!c->reading)
        conn_close(c);
}

static void on_listener_closed(uv_handle_t *h)
{
    imgq_httpd *srv = h->data;
    srv->listener_closed = true;
    srv_maybe_done(srv);
}

int imgq_httpd_start(uv_loop_t *loop, const struct imgq_httpd_options *o,
                     imgq_httpd_handler handler, void *data, imgq_httpd **out, char *errbuf,
                     size_t errlen)
{
    struct sockaddr_storage addr;
    struct imgq_httpd_options defaults;
    int err;

    imgq_httpd_options_init(&defaults);
    if (!o)
        o = &defaults;
    const char *host = o->host ? o->host : "127.0.0.1";
    if (o->port < 0 || o->port > 65535 || !handler) {
        if (errbuf)
            snprintf(errbuf, errlen, "invalid port %d", o->port);
        return IMGQ_EINVAL;
    }
    if (uv_ip4_addr(host, o->port, (struct sockaddr_in *)&addr) != 0 &&
        uv_ip6_addr(host, o->port, (struct sockaddr_in6 *)&addr) != 0) {
        if (errbuf)
            snprintf(errbuf, errlen, "invalid host address '%s' (need an IP literal)", host);
        return IMGQ_EINVAL;
    }

    imgq_httpd *srv = imgq_xcalloc(1, sizeof(*srv));
    srv->loop = loop;
    srv->opt = *o;
    srv->opt.host = NULL; /* not kept: the caller's string */
    if (!srv->opt.backlog)
        srv->opt.backlog = defaults.backlog;
    if (!srv->opt.idle_timeout_ms)
        srv->opt.idle_timeout_ms = defaults.idle_timeout_ms;
    srv->handler = handler;
    srv->data = data;
    srv->listener.data = srv;
    uv_tcp_init(loop, &srv->listener);

    const char *what = "bind";
    err = uv_tcp_bind(&srv->listener, (const struct sockaddr *)&addr, 0);
    if (!err) {
        what = "listen";
        err = uv_listen((uv_stream_t *)&srv->listener, srv->opt.backlog, on_connection);
    }
    if (!err) {
        struct sockaddr_storage bound;
        int blen = sizeof(bound);
        what = "getsockname";
        err = uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&bound, &blen);
        if (!err)
            srv->port =
                ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                  : ((struct sockaddr_in *)&bound)->sin_port);
    }
    if (err) {
        if (errbuf)
            snprintf(errbuf, errlen, "%s %s:%d: %s", what, host, o->port, uv_strerror(err));
        /* Unregister the listener; the close completes when the caller runs the loop. */
        srv->closing = true;
        srv->close_cb = NULL;
        uv_close((uv_handle_t *)&srv->listener, on_listener_closed);
        return IMGQ_EIO;
    }
    *out = srv;
    return 0;
}

void imgq_httpd_close(imgq_httpd *srv, void (*close_cb)(void *data), void *data)
{
    srv->closing = true;
    srv->close_cb = close_cb;
    srv->close_data = data;
    while (srv->conns)
        conn_close(srv->conns);
    uv_close((uv_handle_t *)&srv->listener, on_listener_closed);
}
