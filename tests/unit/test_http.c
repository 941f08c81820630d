/*
 * test_http.c - the libuv-driven HTTP client against a small HTTP/1.1 server that runs in
 * this process, on its own thread and loop, on a loopback port.
 *
 * Server routes (anything else echoes the raw request back as the body):
 *   /hello          200 "hello world" with X-Request-Id, Retry-After, Content-Type
 *   /busy           503 with retry-after-ms
 *   /slow           never answers
 *   /conn           200, body = the number of the connection the request came on
 *   /big?n=N        200 with N bytes and a Content-Length
 *   /chunked?n=N    200 with N bytes, chunked (no length known up front)
 *   /interim        a 100 Continue with a header, then 200 "ok"
 *   /odd-headers    folded, padded and empty header lines
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <curl/curl.h>
#include <openssl/evp.h>
#include <uv.h>

#include "imgq/http.h"

/* ---- the in-process server ------------------------------------------------------------- */

struct server {
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_async_t stop;
    uv_thread_t thread;
    uv_sem_t ready;
    int port;
    atomic_int connections;
};

struct conn {
    uv_tcp_t tcp;
    struct server *srv;
    int id;
    char *buf;
    size_t len, cap;
    bool sent_continue;
    bool head_request; /* the request being answered is a HEAD */
};

static struct server srv;

static void on_written(uv_write_t *w, int status)
{
    free(w->data);
    free(w);
}

static void conn_write(struct conn *c, const void *data, size_t len)
{
    uv_write_t *w = malloc(sizeof(*w));
    char *copy = malloc(len ? len : 1);
    memcpy(copy, data, len);
    w->data = copy;
    uv_buf_t b = uv_buf_init(copy, (unsigned)len);
    if (uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0) {
        free(copy);
        free(w);
    }
}

static void reply(struct conn *c, int status, const char *reason, const char *headers,
                  const void *body, size_t len)
{
    char head[1024];
    int n = snprintf(head, sizeof(head), "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\n%s\r\n", status,
                     reason, len, headers ? headers : "");
    conn_write(c, head, (size_t)n);
    if (len && !c->head_request) /* a HEAD response has the length but no body */
        conn_write(c, body, len);
}

static size_t query_n(const char *path)
{
    const char *q = strstr(path, "?n=");
    return q ? strtoul(q + 3, NULL, 10) : 0;
}

static void route(struct conn *c, const char *path, const char *raw, size_t raw_len)
{
    if (!strcmp(path, "/hello")) {
        reply(c, 200, "OK",
              "X-Request-Id: abc123\r\nRetry-After: 7\r\nContent-Type: text/plain\r\n",
              "hello world", 11);
    } else if (!strcmp(path, "/busy")) {
        reply(c, 503, "Service Unavailable", "retry-after-ms: 1500\r\n", "busy", 4);
    } else if (!strcmp(path, "/slow")) {
        /* never answer */
    } else if (!strcmp(path, "/conn")) {
        char body[32];
        int n = snprintf(body, sizeof(body), "%d", c->id);
        reply(c, 200, "OK", NULL, body, (size_t)n);
    } else if (!strncmp(path, "/big", 4)) {
        size_t n = query_n(path);
        char *body = malloc(n + 1);
        memset(body, 'x', n);
        reply(c, 200, "OK", NULL, body, n);
        free(body);
    } else if (!strncmp(path, "/chunked", 8)) {
        size_t n = query_n(path);
        const char *head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        conn_write(c, head, strlen(head));
        char chunk[4096 + 16];
        while (n) {
            size_t k = n < 4096 ? n : 4096;
            int h = snprintf(chunk, sizeof(chunk), "%zx\r\n", k);
            memset(chunk + h, 'y', k);
            memcpy(chunk + h + k, "\r\n", 2);
            conn_write(c, chunk, (size_t)h + k + 2);
            n -= k;
        }
        conn_write(c, "0\r\n\r\n", 5);
    } else if (!strcmp(path, "/interim")) {
        const char *r = "HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n"
                        "HTTP/1.1 200 OK\r\nX-Final: yes\r\nContent-Length: 2\r\n\r\nok";
        conn_write(c, r, strlen(r));
    } else if (!strcmp(path, "/odd-headers")) {
        reply(c, 200, "OK",
              "X-Padded \t:   spaced value  \r\nX-Folded: first\r\n  second\r\n"
              "X-Empty:\r\nx-dup: one\r\nX-Dup: two\r\n",
              "", 0);
    } else {
        reply(c, 200, "OK", "Content-Type: text/plain\r\n", raw, raw_len);
    }
}

static size_t header_length(const char *head, size_t head_len, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = head; p && p < head + head_len;
         p = memchr(p, '\n', head_len - (p - head))) {
        if (*p == '\n')
            p++;
        if ((size_t)(head + head_len - p) > n && !strncasecmp(p, name, n))
            return strtoul(p + n, NULL, 10);
    }
    return 0;
}

static void serve_buffered(struct conn *c)
{
    for (;;) {
        char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
        if (!end)
            return;
        size_t head_len = (size_t)(end - c->buf) + 4;
        size_t body_len = header_length(c->buf, head_len, "content-length:");
        if (c->len < head_len + body_len) {
            if (!c->sent_continue && memmem(c->buf, head_len, "100-continue", 12)) {
                conn_write(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
                c->sent_continue = true;
            }
            return;
        }
        char method[16] = "", path[512] = "";
        sscanf(c->buf, "%15s %511s", method, path);
        c->head_request = strcmp(method, "HEAD") == 0;
        route(c, path, c->buf, head_len + body_len);
        memmove(c->buf, c->buf + head_len + body_len, c->len - head_len - body_len + 1);
        c->len -= head_len + body_len;
        c->sent_continue = false;
    }
}

static void on_conn_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    free(c->buf);
    free(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;
    if (c->cap - c->len < 65536) {
        c->cap = c->cap * 2 + 65536;
        c->buf = realloc(c->buf, c->cap);
    }
    /* One byte kept for a terminating NUL, so the parsing below may use string functions. */
    *buf = uv_buf_init(c->buf + c->len, (unsigned)(c->cap - c->len - 1));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    if (n < 0) {
        if (!uv_is_closing((uv_handle_t *)s))
            uv_close((uv_handle_t *)s, on_conn_closed);
        return;
    }
    c->len += (size_t)n;
    c->buf[c->len] = '\0';
    serve_buffered(c);
}

static void on_connection(uv_stream_t *l, int status)
{
    struct server *s = l->data;
    struct conn *c = calloc(1, sizeof(*c));
    c->srv = s;
    uv_tcp_init(&s->loop, &c->tcp);
    c->tcp.data = c;
    if (status < 0 || uv_accept(l, (uv_stream_t *)&c->tcp) < 0) {
        uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
        return;
    }
    c->id = atomic_fetch_add(&s->connections, 1) + 1;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void close_any(uv_handle_t *h, void *arg)
{
    if (uv_is_closing(h))
        return;
    uv_close(h, h->type == UV_TCP && h != (uv_handle_t *)&srv.listener ? on_conn_closed : NULL);
}

static void on_stop(uv_async_t *a)
{
    uv_walk(a->loop, close_any, NULL);
}

static void server_thread(void *arg)
{
    struct server *s = arg;
    struct sockaddr_in addr;
    struct sockaddr_storage bound;
    int len = sizeof(bound);

    uv_loop_init(&s->loop);
    uv_async_init(&s->loop, &s->stop, on_stop);
    uv_tcp_init(&s->loop, &s->listener);
    s->listener.data = s;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    uv_tcp_bind(&s->listener, (const struct sockaddr *)&addr, 0);
    uv_listen((uv_stream_t *)&s->listener, 1024, on_connection);
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &len);
    s->port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
    uv_sem_post(&s->ready);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    uv_loop_close(&s->loop);
}

static int server_start(void **state)
{
    memset(&srv, 0, sizeof(srv));
    uv_sem_init(&srv.ready, 0);
    if (uv_thread_create(&srv.thread, server_thread, &srv) != 0)
        return -1;
    uv_sem_wait(&srv.ready);
    return srv.port > 0 ? 0 : -1;
}

static int server_stop(void **state)
{
    uv_async_send(&srv.stop);
    uv_thread_join(&srv.thread);
    uv_sem_destroy(&srv.ready);
    return 0;
}

/* ---- client helpers ------------------------------------------------------------------- */

static char *url(const char *path)
{
    static char buf[8][256];
    static int next;
    char *b = buf[next++ % 8];
    snprintf(b, sizeof(buf[0]), "http://127.0.0.1:%d%s", srv.port, path);
    return b;
}

/* What a callback saw, copied out of the borrowed response. */
struct seen {
    int calls;
    int err;
    bool timed_out;
    long status;
    char *body;
    size_t body_len;
    char *error;
    char *header[4];
    uint64_t elapsed_ms;
};

static const char *const watched[4] = {"retry-after", "X-REQUEST-ID", "retry-after-ms",
                                       "content-type"};

static void seen_release(struct seen *s)
{
    free(s->body);
    free(s->error);
    for (int i = 0; i < 4; i++)
        free(s->header[i]);
    memset(s, 0, sizeof(*s));
}

static void record(const imgq_http_response *res, void *arg)
{
    struct seen *s = arg;
    s->calls++;
    s->err = res->err;
    s->timed_out = res->timed_out;
    s->status = res->status;
    s->elapsed_ms = res->elapsed_ms;
    free(s->body);
    s->body = malloc(res->body_len + 1);
    memcpy(s->body, res->body, res->body_len + 1); /* the NUL the library promises */
    s->body_len = res->body_len;
    free(s->error);
    s->error = strdup(res->error);
    for (int i = 0; i < 4; i++) {
        const char *v = imgq_http_response_header(res, watched[i]);
        free(s->header[i]);
        s->header[i] = v ? strdup(v) : NULL;
    }
}

struct client {
    uv_loop_t loop;
    imgq_http *http;
    int closed_calls;
};

static void client_open(struct client *c, const struct imgq_http_options *opts)
{
    memset(c, 0, sizeof(*c));
    assert_int_equal(uv_loop_init(&c->loop), 0);
    assert_int_equal(imgq_http_init(&c->loop, opts, &c->http), 0);
}

static void on_closed(void *arg)
{
    struct client *c = arg;
    c->closed_calls++;
}

/* Close the client, drain the loop, and check nothing of it is left on the loop. */
static void client_close(struct client *c)
{
    imgq_http_close(c->http, on_closed, c);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    assert_int_equal(c->closed_calls, 1);
    assert_int_equal(uv_loop_close(&c->loop), 0);
}

static imgq_http_request *request(const char *method, const char *path)
{
    imgq_http_request *req = imgq_http_request_new(method, url(path));
    imgq_http_request_set_timeouts(req, 10000, 5000);
    return req;
}

static void run_one(struct client *c, imgq_http_request *req, struct seen *s)
{
    assert_int_equal(imgq_http_submit(c->http, req, record, s), 0);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    assert_int_equal(s->calls, 1);
}

static void sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char md[32];
    unsigned int n;
    EVP_Digest(data, len, md, &n, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        sprintf(out + 2 * i, "%02x", md[i]);
}

/* ---- tests ------------------------------------------------------------------------------ */

static void test_get_collects_body_and_headers(void **state)
{
    struct client c;
    struct seen s = {0};
    client_open(&c, NULL);
    run_one(&c, request("GET", "/hello"), &s);
    assert_int_equal(s.err, 0);
    assert_int_equal(s.status, 200);
    assert_int_equal(s.body_len, 11);
    assert_string_equal(s.body, "hello world");
    assert_string_equal(s.error, "");
    assert_string_equal(s.header[0], "7");      /* Retry-After, asked in lower case */
    assert_string_equal(s.header[1], "abc123"); /* X-Request-Id, asked in upper case */
    assert_null(s.header[2]);
    assert_string_equal(s.header[3], "text/plain");
    assert_true(s.elapsed_ms < 5000);
    assert_int_equal(imgq_http_in_flight(c.http), 0);
    seen_release(&s);
    client_close(&c);
}

static void test_status_is_not_an_error(void **state)
{
    struct client c;
    struct seen s = {0};
    client_open(&c, NULL);
    run_one(&c, request("GET", "/busy"), &s);
    assert_int_equal(s.err, 0);
    assert_int_equal(s.status, 503);
    assert_string_equal(s.body, "busy");
    assert_string_equal(s.header[2], "1500");
    seen_release(&s);
    client_close(&c);
}

static void test_post_sends_body_and_headers(void **state)
{
    struct client c;
    struct seen s = {0};
    client_open(&c, NULL);
    imgq_http_request *req = request("POST", "/echo");
    assert_int_equal(imgq_http_request_add_header(req, "X-Custom", "v1"), 0);
    assert_int_equal(imgq_http_request_add_header(req, "X-Empty", ""), 0);
    char body[] = "{\"prompt\":\"a cat\"}";
    imgq_http_request_set_body(req, body, strlen(body));
    memset(body, 0, sizeof(body)); /* copied: our buffer no longer matters */
    run_one(&c, req, &s);
    assert_int_equal(s.err, 0);
    assert_non_null(strstr(s.body, "POST /echo HTTP/1.1\r\n"));
    assert_non_null(strstr(s.body, "\r\nX-Custom: v1\r\n"));
    assert_non_null(strstr(s.body, "\r\nX-Empty:\r\n"));
    assert_non_null(strstr(s.body, "\r\nContent-Type: application/octet-stream\r\n"));
    assert_non_null(strstr(s.body, "\r\nContent-Length: 18\r\n"));
    assert_non_null(strstr(s.body, "\r\n\r\n{\"prompt\":\"a cat\"}"));
    seen_release(&s);

    /* PUT with a borrowed body and an explicit type; DELETE without a body. */
    static const char borrowed[] = "borrowed bytes";
    req = request("PUT", "/echo");
    assert_int_equal(imgq_http_request_add_header(req, "content-type", "image/png"), 0);
    imgq_http_request_set_body_ref(req, borrowed, sizeof(borrowed) - 1);
    run_one(&c, req, &s);
    assert_non_null(strstr(s.body, "PUT /echo HTTP/1.1\r\n"));
    assert_non_null(strstr(s.body, "\r\ncontent-type: image/png\r\n"));
    assert_null(strstr(s.body, "octet-stream"));
    assert_non_null(strstr(s.body, "\r\n\r\nborrowed bytes"));
    seen_release(&s);

    run_one(&c, request("DELETE", "/echo"), &s);
    assert_non_null(strstr(s.body, "DELETE /echo HTTP/1.1\r\n"));
    assert_null(strstr(s.body, "Content-Length"));
    seen_release(&s);

    run_one(&c, request("HEAD", "/hello"), &s);
    assert_int_equal(s.status, 200);
    assert_int_equal(s.body_len, 0);
    seen_release(&s);
    client_close(&c);
}

/* Header lookups need the live response: check them inside the callback. */
static void check_odd_headers(const imgq_http_response *res, void *arg)
{
    int *ok = arg;
    assert_int_equal(res->err, 0);
    assert_string_equal(imgq_http_response_header(res, "x-padded"), "spaced value");
    assert_string_equal(imgq_http_response_header(res, "X-Folded"), "first");
    assert_string_equal(imgq_http_response_header(res, "x-empty"), "");
    assert_string_equal(imgq_http_response_header(res, "X-DUP"), "one");
    assert_null(imgq_http_response_header(res, "X-Interim"));
    size_t dups = 0;
    for (size_t i = 0; i < res->nheaders; i++)
        dups += strcasecmp(res->headers[i].name, "x-dup") == 0;
    assert_int_equal(dups, 2);
    (*ok)++;
}

static void check_interim_dropped(const imgq_http_response *res, void *arg)
{
    int *ok = arg;
    assert_int_equal(res->status, 200);
    assert_null(imgq_http_response_header(res, "x-interim"));
    assert_string_equal(imgq_http_response_header(res, "x-final"), "yes");
    (*ok)++;
}

static void test_header_lookup_details(void **state)
{
    struct client c;
    int ok = 0;
    client_open(&c, NULL);
    assert_int_equal(
        imgq_http_submit(c.http, request("GET", "/odd-headers"), check_odd_headers, &ok), 0);
    assert_int_equal(
        imgq_http_submit(c.http, request("GET", "/interim"), check_interim_dropped, &ok), 0);
    uv_run(&c.loop, UV_RUN_DEFAULT);
    assert_int_equal(ok, 2);
    client_close(&c);
}

static void test_connection_refused(void **state)
{
    /* A bound socket that does not listen: connecting to it is refused, and nobody else
     * can take the port while we hold it. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    char u[64];
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/x", ntohs(a.sin_port));

    struct client c;
    struct seen s = {0};
    client_open(&c, NULL);
    run_one(&c, imgq_http_request_new("GET", u), &s);
    assert_int_equal(s.err, IMGQ_EHTTP);
    assert_false(s.timed_out);
    assert_int_equal(s.status, 0);
    assert_true(strlen(s.error) > 0);
    assert_string_equal(s.body, "");
    seen_release(&s);
    client_close(&c);

    imgq_http_response *res = NULL;
    imgq_http_request *req = imgq_http_request_new("GET", u);
    assert_int_equal(imgq_http_perform_sync(req, &res), IMGQ_EHTTP);
    assert_int_equal(res->err, IMGQ_EHTTP);
    assert_true(strlen(res->error) > 0);
    imgq_http_response_free(res);
    imgq_http_request_free(req);
    close(fd);
}

static void test_timeout(void **state)
{
    struct client c;
    struct seen s = {0};
    client_open(&c, NULL);
    imgq_http_request *req = request("GET", "/slow");
    imgq_http_request_set_timeouts(req, 200, 1000);
    run_one(&c, req, &s);
    assert_int_equal(s.err, IMGQ_EHTTP);
    assert_true(s.timed_out);
    assert_true(s.elapsed_ms >= 150 && s.elapsed_ms < 5000);
    seen_release(&s);
    client_close(&c);
}

static void test_body_cap(void **state)
{
    struct client c;
    struct seen s = {0};
    struct imgq_http_options o = {.max_body = 1000};
    client_open(&c, &o);

    run_one(&c, request("GET", "/big?n=1000"), &s); /* exactly the cap is fine */
    assert_int_equal(s.err, 0);
    assert_int_equal(s.body_len, 1000);
    seen_release(&s);

    run_one(&c, request("GET", "/big?n=100000"), &s); /* known length: refused early */
    assert_int_equal(s.err, IMGQ_ERANGE);
    assert_int_equal(s.status, 200);
    assert_non_null(strstr(s.error, "1000"));
    seen_release(&s);

    run_one(&c, request("HEAD", "/big?n=100000"), &s); /* HEAD: the length is no body */
    assert_int_equal(s.err, 0);
    assert_int_equal(s.body_len, 0);
    seen_release(&s);

    run_one(&c, request("GET", "/chunked?n=100000"), &s); /* unknown length: cut off */
    assert_int_equal(s.err, IMGQ_ERANGE);
    seen_release(&s);

    imgq_http_request *req = request("GET", "/chunked?n=100000"); /* per-request cap */
    imgq_http_request_set_max_body(req, 200000);
    run_one(&c, req, &s);
    assert_int_equal(s.err, 0);
    assert_int_equal(s.body_len, 100000);
    assert_int_equal(s.body[99999], 'y');
    seen_release(&s);
    client_close(&c);
}

static void test_invalid_requests_fail_synchronously(void **state)
{
    struct client c;
    struct seen s = {0};
    client_open(&c, NULL);
    const char *bad[] = {"ftp://127.0.0.1/x", "not a url", "http://127.0.0.1/a b",
                         "file:///etc/passwd", ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(imgq_http_submit(c.http, imgq_http_request_new("GET", bad[i]), record, &s),
                         IMGQ_EINVAL);
    assert_int_equal(
        imgq_http_submit(c.http, imgq_http_request_new("BAD METHOD", url("/")), record, &s),
        IMGQ_EINVAL);
    imgq_http_request *req = request("GET", "/echo");
    assert_int_equal(imgq_http_request_add_header(req, "X-Evil", "a\r\nInjected: 1"), IMGQ_EINVAL);
    assert_int_equal(imgq_http_request_add_header(req, "Bad Name", "v"), IMGQ_EINVAL);
    assert_int_equal(imgq_http_request_add_header(req, "", "v"), IMGQ_EINVAL);
    assert_int_equal(imgq_http_request_set_aws_sigv4(req, "us:east", "s3", "a", "b", NULL),
                     IMGQ_EINVAL);
    assert_int_equal(imgq_http_request_set_aws_sigv4(req, "us-east-1", "s3", "a", "b", "xyz"),
                     IMGQ_EINVAL);
    imgq_http_request_free(req);
    uv_run(&c.loop, UV_RUN_DEFAULT);
    assert_int_equal(s.calls, 0);

    imgq_http_response *res = NULL;
    req = imgq_http_request_new("GET", "gopher://x/");
    assert_int_equal(imgq_http_perform_sync(req, &res), IMGQ_EINVAL);
    assert_int_equal(res->err, IMGQ_EINVAL);
    assert_non_null(strstr(res->error, "gopher"));
    imgq_http_response_free(res);
    imgq_http_request_free(req);
    client_close(&c);
}

static void test_connections_are_reused(void **state)
{
    struct client c;
    struct seen s = {0};
    client_open(&c, NULL);
    run_one(&c, request("GET", "/conn"), &s);
    char *first = strdup(s.body);
    for (int i = 0; i < 5; i++) {
        seen_release(&s);
        run_one(&c, request("GET", "/conn"), &s);
        assert_string_equal(s.body, first);
    }
    free(first);
    seen_release(&s);
    client_close(&c);
}

#define MANY 400

static void count_ok(const imgq_http_response *res, void *arg)
{
    int *n = arg;
    if (res->err == 0 && res->status == 200 && res->body_len == 11)
        (*n)++;
}

static void test_many_in_flight(void **state)
{
    struct client c;
    struct imgq_http_options o = {.max_host_connections = 16};
    int ok = 0;
    int before = atomic_load(&srv.connections);
    client_open(&c, &o);
    for (int i = 0; i < MANY; i++)
        assert_int_equal(imgq_http_submit(c.http, request("GET", "/hello"), count_ok, &ok), 0);
    assert_int_equal(imgq_http_in_flight(c.http), MANY);
    uv_run(&c.loop, UV_RUN_DEFAULT);
    assert_int_equal(ok, MANY);
    assert_int_equal(imgq_http_in_flight(c.http), 0);
    /* The per-host cap bounds the connections; queued transfers reuse them. */
    int opened = atomic_load(&srv.connections) - before;
    assert_true(opened >= 1 && opened <= 16);
    client_close(&c);
}

/* Closing with transfers in flight: each callback once with ECANCELED, loop left empty. */
struct cancel_state {
    struct client *c;
    int cancelled;
    int other;
    bool close_in_callback;
};

static void count_cancel(const imgq_http_response *res, void *arg)
{
    struct cancel_state *cs = arg;
    if (res->err == IMGQ_ECANCELED)
        cs->cancelled++;
    else
        cs->other++;
    /* Callbacks run during close may try to submit again: refused, never called. */
    assert_int_equal(imgq_http_submit(cs->c->http, request("GET", "/hello"), count_cancel, cs),
                     IMGQ_ECANCELED);
}

static void close_from_callback(const imgq_http_response *res, void *arg)
{
    struct cancel_state *cs = arg;
    assert_int_equal(res->err, 0);
    cs->other++;
    imgq_http_close(cs->c->http, on_closed, cs->c);
}

static void close_soon(uv_timer_t *t)
{
    struct cancel_state *cs = t->data;
    imgq_http_close(cs->c->http, on_closed, cs->c);
    uv_close((uv_handle_t *)t, NULL);
}

static void test_close_with_transfers_in_flight(void **state)
{
    struct client c;
    struct cancel_state cs = {.c = &c};
    uv_timer_t timer;
    static unsigned char big[1 << 20]; /* hashed on the thread pool when signing */

    client_open(&c, NULL);
    for (int i = 0; i < 5; i++)
        assert_int_equal(imgq_http_submit(c.http, request("GET", "/slow"), count_cancel, &cs), 0);
    imgq_http_request *req = request("PUT", "/slow");
    imgq_http_request_set_body_ref(req, big, sizeof(big));
    assert_int_equal(imgq_http_request_set_aws_sigv4(req, "us-east-1", "s3", "AK", "SK", NULL), 0);
    assert_int_equal(imgq_http_submit(c.http, req, count_cancel, &cs), 0);
    uv_timer_init(&c.loop, &timer);
    timer.data = &cs;
    uv_timer_start(&timer, close_soon, 100, 0);
    uv_run(&c.loop, UV_RUN_DEFAULT);
    assert_int_equal(cs.cancelled, 6);
    assert_int_equal(cs.other, 0);
    assert_int_equal(c.closed_calls, 1);
    assert_int_equal(uv_loop_close(&c.loop), 0);
}

static void test_close_from_inside_a_callback(void **state)
{
    struct client c;
    struct cancel_state cs = {.c = &c};
    client_open(&c, NULL);
    for (int i = 0; i < 3; i++)
        assert_int_equal(imgq_http_submit(c.http, request("GET", "/slow"), count_cancel, &cs), 0);
    assert_int_equal(imgq_http_submit(c.http, request("GET", "/hello"), close_from_callback, &cs),
                     0);
    uv_run(&c.loop, UV_RUN_DEFAULT);
    assert_int_equal(cs.other, 1);
    assert_int_equal(cs.cancelled, 3);
    assert_int_equal(c.closed_calls, 1);
    assert_int_equal(uv_loop_close(&c.loop), 0);
}

static void test_close_immediately_while_hashing(void **state)
{
    struct client c;
    struct cancel_state cs = {.c = &c};
    size_t n = 8u << 20;
    unsigned char *body = calloc(1, n);
    client_open(&c, NULL);
    imgq_http_request *req = request("PUT", "/echo");
    imgq_http_request_set_body_ref(req, body, n);
    assert_int_equal(imgq_http_request_set_aws_sigv4(req, "us-east-1", "s3", "AK", "SK", NULL), 0);
    assert_int_equal(imgq_http_submit(c.http, req, count_cancel, &cs), 0);
    imgq_http_close(c.http, on_closed, &c);
    uv_run(&c.loop, UV_RUN_DEFAULT);
    assert_int_equal(cs.cancelled, 1);
    assert_int_equal(c.closed_calls, 1);
    assert_int_equal(uv_loop_close(&c.loop), 0);
    free(body);
}

/*
 * libcurl's SigV4 through our request plumbing reproduces AWS's published header-signing
 * example (S3 API reference, "sig-v4-header-based-auth", GET Object).  CONNECT_TO sends the
 * request for examplebucket.s3.amazonaws.com to the local server, which echoes it.
 */
static void test_sigv4_matches_aws_example(void **state)
{
    struct client c;
    struct seen s = {0};
    char connect_to[128];
    snprintf(connect_to, sizeof(connect_to), "examplebucket.s3.amazonaws.com:80:127.0.0.1:%d",
             srv.port);
    client_open(&c, NULL);
    imgq_http_request *req =
        imgq_http_request_new("GET", "http://examplebucket.s3.amazonaws.com/test.txt");
    imgq_http_request_add_connect_to(req, connect_to);
    imgq_http_request_set_flags(req, IMGQ_HTTP_NO_PROXY);
    assert_int_equal(imgq_http_request_add_header(req, "Range", "bytes=0-9"), 0);
    /* libcurl signs with the date it is given (the example's), instead of the clock. */
    assert_int_equal(imgq_http_request_add_header(req, "x-amz-date", "20130524T000000Z"), 0);
    assert_int_equal(imgq_http_request_set_aws_sigv4(req, "us-east-1", "s3", "AKIAIOSFODNN7EXAMPLE",
                                                     "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                                                     NULL),
                     0);
    run_one(&c, req, &s);
    assert_int_equal(s.err, 0);
    assert_non_null(strstr(s.body, "\r\nHost: examplebucket.s3.amazonaws.com\r\n"));
    assert_non_null(strstr(s.body,
                           "\r\nx-amz-content-sha256: "
                           "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
                           "\r\n"));
    assert_non_null(strstr(
        s.body, "Authorization: AWS4-HMAC-SHA256 "
                "Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
                "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
                "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"));
    seen_release(&s);
    client_close(&c);
}

static void test_sigv4_payload_hash(void **state)
{
    struct client c;
    struct seen s = {0};
    char want[65], line[128];
    client_open(&c, NULL);
    size_t sizes[] = {5, 200000}; /* hashed inline, and on the thread pool */
    for (size_t k = 0; k < 2; k++) {
        unsigned char *body = malloc(sizes[k]);
        for (size_t i = 0; i < sizes[k]; i++)
            body[i] = (unsigned char)(i * 7 + k);
        sha256_hex(body, sizes[k], want);
        imgq_http_request *req = request("PUT", "/echo");
        imgq_http_request_set_body(req, body, sizes[k]);
        assert_int_equal(imgq_http_request_set_aws_sigv4(req, "eu-west-1", "s3", "AK", "SK", NULL),
                         0);
        assert_int_equal(imgq_http_request_add_header(req, "x-amz-security-token", "tok/en+="), 0);
        run_one(&c, req, &s);
        assert_int_equal(s.err, 0);
        snprintf(line, sizeof(line), "\r\nx-amz-content-sha256: %s\r\n", want);
        assert_non_null(strstr(s.body, line));
        assert_non_null(strstr(s.body, "Credential=AK/"));
        assert_non_null(strstr(s.body, "/eu-west-1/s3/aws4_request, SignedHeaders=content-type;"
                                       "host;x-amz-content-sha256;x-amz-date;"
                                       "x-amz-security-token, Signature="));
        assert_int_equal(memcmp(s.body + s.body_len - sizes[k], body, sizes[k]), 0);
        seen_release(&s);
        free(body);
    }
    /* An explicit hash is sent as given. */
    imgq_http_request *req = request("GET", "/echo");
    assert_int_equal(
        imgq_http_request_set_aws_sigv4(req, "us-east-1", "s3", "AK", "SK", "UNSIGNED-PAYLOAD"), 0);
    run_one(&c, req, &s);
    assert_non_null(strstr(s.body, "\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\n"));
    seen_release(&s);
    client_close(&c);
}

static bool deny_all(const char *ip, void *arg)
{
    int *calls = arg;
    (*calls)++;
    return false;
}

static bool allow_loopback(const char *ip, void *arg)
{
    int *calls = arg;
    (*calls)++;
    return strcmp(ip, "127.0.0.1") == 0;
}

static void test_peer_filter(void **state)
{
    struct client c;
    struct seen s = {0};
    int calls = 0;
    client_open(&c, NULL);
    imgq_http_request *req = request("GET", "/hello");
    imgq_http_request_set_peer_filter(req, deny_all, &calls);
    run_one(&c, req, &s);
    assert_int_equal(s.err, IMGQ_EHTTP);
    assert_non_null(strstr(s.error, "127.0.0.1"));
    assert_int_equal(calls, 1);
    seen_release(&s);

    req = request("GET", "/hello");
    imgq_http_request_set_peer_filter(req, allow_loopback, &calls);
    run_one(&c, req, &s);
    assert_int_equal(s.err, 0);
    assert_int_equal(calls, 2);
    seen_release(&s);
    client_close(&c);
}

static void test_perform_sync(void **state)
{
    imgq_http_response *res = NULL;
    imgq_http_request *req = request("GET", "/hello");
    assert_int_equal(imgq_http_perform_sync(req, &res), 0);
    assert_int_equal(res->status, 200);
    assert_int_equal(res->body_len, 11);
    assert_string_equal((const char *)res->body, "hello world");
    assert_string_equal(imgq_http_response_header(res, "x-request-id"), "abc123");
    imgq_http_response_free(res);
    /* The request is only borrowed: it can run again. */
    assert_int_equal(imgq_http_perform_sync(req, &res), 0);
    assert_int_equal(res->status, 200);
    imgq_http_response_free(res);
    imgq_http_request_free(req);

    req = request("POST", "/echo");
    imgq_http_request_set_body(req, "abc", 3);
    assert_int_equal(imgq_http_request_set_aws_sigv4(req, "us-east-1", "s3", "AK", "SK", NULL), 0);
    assert_int_equal(imgq_http_perform_sync(req, &res), 0);
    assert_non_null(strstr((const char *)res->body,
                           "x-amz-content-sha256: "
                           "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    imgq_http_response_free(res);
    imgq_http_request_free(req);

    req = request("GET", "/slow");
    imgq_http_request_set_timeouts(req, 150, 0);
    assert_int_equal(imgq_http_perform_sync(req, &res), IMGQ_EHTTP);
    assert_true(res->timed_out);
    imgq_http_response_free(res);
    imgq_http_request_free(req);
    imgq_http_response_free(NULL);
    imgq_http_request_free(NULL);
}

/* Part i's bytes within an echoed multipart request, checked against the part headers. */
static void assert_part(const char *raw, size_t raw_len, const char *headers, const void *data,
                        size_t len)
{
    const char *h = memmem(raw, raw_len, headers, strlen(headers));
    if (!h)
        fail_msg("part headers not found: %s", headers);
    const char *d = h + strlen(headers);
    assert_true((size_t)(raw + raw_len - d) >= len + 4);
    assert_memory_equal(d, data, len);
    assert_memory_equal(d + len, "\r\n--", 4); /* then the next boundary */
}

static void test_multipart_parts(void **state)
{
    /* Bookkeeping: copies, order, accessors, refusals. */
    imgq_http_request *req = request("POST", "/echo");
    unsigned char png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H'};
    imgq_http_request_set_body(req, "dropped", 7);
    assert_int_equal(imgq_http_request_add_part(req, "model", "gpt-image-1", 11, NULL, NULL), 0);
    assert_int_equal(
        imgq_http_request_add_part(req, "image[]", png, sizeof(png), "image-0.png", "image/png"),
        0);
    assert_int_equal(imgq_http_request_add_part(req, "empty", NULL, 0, NULL, NULL), 0);
    png[0] = 0; /* copied */
    assert_int_equal(imgq_http_request_add_part(req, "", "x", 1, NULL, NULL), IMGQ_EINVAL);
    assert_int_equal(imgq_http_request_add_part(req, "a\r\nb", "x", 1, NULL, NULL), IMGQ_EINVAL);
    assert_int_equal(imgq_http_request_add_part(req, "f", "x", 1, "a\nb.png", NULL), IMGQ_EINVAL);
    assert_int_equal(imgq_http_request_add_part(req, "f", "x", 1, "a.png", "png"), IMGQ_EINVAL);
    assert_int_equal(imgq_http_request_add_part(req, "f", "x", 1, "a.png", "image/png\r\nX: 1"),
                     IMGQ_EINVAL);
    assert_int_equal(imgq_http_request_add_part(req, "f", NULL, 3, NULL, NULL), IMGQ_EINVAL);
    assert_int_equal(imgq_http_request_part_count(req), 3);
    struct imgq_http_part p;
    assert_true(imgq_http_request_part(req, 0, &p));
    assert_string_equal(p.name, "model");
    assert_int_equal(p.len, 11);
    assert_memory_equal(p.data, "gpt-image-1", 11);
    assert_null(p.filename);
    assert_null(p.mime);
    assert_true(imgq_http_request_part(req, 1, &p));
    assert_string_equal(p.name, "image[]");
    assert_string_equal(p.filename, "image-0.png");
    assert_string_equal(p.mime, "image/png");
    assert_int_equal(p.len, sizeof(png));
    assert_int_equal(((const unsigned char *)p.data)[0], 0x89);
    assert_false(imgq_http_request_part(req, 3, &p));
    assert_string_equal(imgq_http_request_method(req), "POST");
    assert_string_equal(imgq_http_request_url(req), url("/echo"));
    png[0] = 0x89;

    /* On the wire (async client): libcurl's encoding, our bytes, no body, no octet-stream. */
    struct client c;
    struct seen s = {0};
    client_open(&c, NULL);
    run_one(&c, req, &s);
    assert_int_equal(s.err, 0);
    assert_int_equal(s.status, 200);
    assert_non_null(strstr(s.body, "POST /echo HTTP/1.1\r\n"));
    assert_non_null(strstr(s.body, "\r\nContent-Type: multipart/form-data; boundary="));
    assert_null(strstr(s.body, "octet-stream"));
    assert_null(strstr(s.body, "dropped"));
    assert_part(s.body, s.body_len, "Content-Disposition: form-data; name=\"model\"\r\n\r\n",
                "gpt-image-1", 11);
    assert_part(s.body, s.body_len,
                "Content-Disposition: form-data; name=\"image[]\"; filename=\"image-0.png\"\r\n"
                "Content-Type: image/png\r\n\r\n",
                png, sizeof(png));
    assert_part(s.body, s.body_len, "Content-Disposition: form-data; name=\"empty\"\r\n\r\n", "",
                0);
    /* model comes before image[] (order kept). */
    assert_true(strstr(s.body, "name=\"model\"") < strstr(s.body, "name=\"image[]\""));
    seen_release(&s);

    /* A large part (libcurl sends Expect: 100-continue and reads it in pieces), and the same
     * request performed twice: the parts are sent again in full. */
    size_t big_len = (size_t)3 * 1024 * 1024 + 7;
    unsigned char *big = malloc(big_len);
    for (size_t i = 0; i < big_len; i++)
        big[i] = (unsigned char)(i * 31 + (i >> 13));
    req = request("POST", "/echo");
    assert_int_equal(imgq_http_request_add_part(req, "prompt", "edit me", 7, NULL, NULL), 0);
    assert_int_equal(
        imgq_http_request_add_part(req, "image[]", big, big_len, "big.webp", "image/webp"), 0);
    for (int round = 0; round < 2; round++) {
        imgq_http_response *res = NULL;
        assert_int_equal(imgq_http_perform_sync(req, &res), 0);
        assert_int_equal(res->status, 200);
        assert_part((const char *)res->body, res->body_len,
                    "name=\"image[]\"; filename=\"big.webp\"\r\nContent-Type: image/webp\r\n\r\n",
                    big, big_len);
        assert_part((const char *)res->body, res->body_len, "name=\"prompt\"\r\n\r\n", "edit me",
                    7);
        imgq_http_response_free(res);
    }
    /* Setting a body drops the parts. */
    imgq_http_request_set_body(req, "plain", 5);
    assert_int_equal(imgq_http_request_part_count(req), 0);
    run_one(&c, req, &s);
    assert_non_null(strstr(s.body, "\r\n\r\nplain"));
    assert_null(strstr(s.body, "multipart"));
    seen_release(&s);

    /* SigV4 cannot hash a body libcurl encodes: refused unless a hash is given. */
    req = request("POST", "/echo");
    assert_int_equal(imgq_http_request_add_part(req, "a", "b", 1, NULL, NULL), 0);
    assert_int_equal(imgq_http_request_set_aws_sigv4(req, "us-east-1", "s3", "AK", "SK", NULL), 0);
    assert_int_equal(imgq_http_submit(c.http, req, record, &s), IMGQ_EINVAL);
    assert_int_equal(s.calls, 0);
    free(big);
    client_close(&c);
}

static void test_options(void **state)
{
    uv_loop_t loop;
    imgq_http *h = NULL;
    struct imgq_http_options o;
    imgq_http_options_init(&o);
    assert_int_equal(o.max_body, IMGQ_HTTP_DEFAULT_MAX_BODY);
    assert_true(o.max_host_connections > 0);
    uv_loop_init(&loop);
    o.max_host_connections = -5;
    assert_int_equal(imgq_http_init(&loop, &o, &h), IMGQ_EINVAL);
    assert_null(h);
    /* Closing an idle client with no callback leaves the loop empty too. */
    assert_int_equal(imgq_http_init(&loop, NULL, &h), 0);
    imgq_http_close(h, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    /* The server writes to clients that hung up (body cap, close): as every libuv program,
     * ignore SIGPIPE and take EPIPE instead. */
    signal(SIGPIPE, SIG_IGN);
    /* Everything here is loopback: no proxy from the environment may intervene. */
    const char *proxies[] = {"http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"};
    for (size_t i = 0; i < sizeof(proxies) / sizeof(proxies[0]); i++)
        unsetenv(proxies[i]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_collects_body_and_headers),
        cmocka_unit_test(test_status_is_not_an_error),
        cmocka_unit_test(test_post_sends_body_and_headers),
        cmocka_unit_test(test_header_lookup_details),
        cmocka_unit_test(test_connection_refused),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_body_cap),
        cmocka_unit_test(test_invalid_requests_fail_synchronously),
        cmocka_unit_test(test_connections_are_reused),
        cmocka_unit_test(test_many_in_flight),
        cmocka_unit_test(test_close_with_transfers_in_flight),
        cmocka_unit_test(test_close_from_inside_a_callback),
        cmocka_unit_test(test_close_immediately_while_hashing),
        cmocka_unit_test(test_sigv4_matches_aws_example),
        cmocka_unit_test(test_sigv4_payload_hash),
        cmocka_unit_test(test_peer_filter),
        cmocka_unit_test(test_perform_sync),
        cmocka_unit_test(test_multipart_parts),
        cmocka_unit_test(test_options),
    };
    int failed = cmocka_run_group_tests(tests, server_start, server_stop);
    curl_global_cleanup();
    return failed;
}
