/* test_httpd.c - the HTTP/1.1 request parser, and the server over real loopback sockets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "imgq/httpd.h"

/* ---- Parser -------------------------------------------------------------------------------- */

static imgq_httpd_parser *feed(const char *s, const struct imgq_httpd_limits *lim)
{
    imgq_httpd_parser *p = imgq_httpd_parser_new(lim);
    imgq_httpd_parser_feed(p, s, strlen(s));
    return p;
}

/* Parse s whole and expect the parser to fail with this HTTP status. */
static void expect_status(const char *s, int status)
{
    imgq_httpd_request *r = NULL;
    imgq_httpd_parser *p = feed(s, NULL);
    int rc = imgq_httpd_parser_next(p, &r);
    if (status == 0) {
        assert_int_equal(rc, 1);
        imgq_httpd_request_free(r);
    } else {
        assert_true(rc < 0);
        assert_int_equal(imgq_httpd_parser_status(p), status);
        assert_true(imgq_httpd_parser_error(p)[0] != '\0');
        assert_null(r);
        /* Failure is sticky. */
        assert_true(imgq_httpd_parser_next(p, &r) < 0);
    }
    imgq_httpd_parser_free(p);
}

static void test_parse_simple(void **state)
{
    imgq_httpd_request *r;
    size_t n;
    imgq_httpd_parser *p = feed("GET /v1/x?a=b&c HTTP/1.1\r\nHost: h\r\nX-Thing:  spaced  \r\n"
                                "Empty:\r\n\r\n",
                                NULL);
    assert_int_equal(imgq_httpd_parser_next(p, &r), 1);
    assert_string_equal(imgq_httpd_request_method(r), "GET");
    assert_string_equal(imgq_httpd_request_target(r), "/v1/x?a=b&c");
    assert_string_equal(imgq_httpd_request_path(r), "/v1/x");
    assert_string_equal(imgq_httpd_request_query(r), "a=b&c");
    assert_int_equal(imgq_httpd_request_version_minor(r), 1);
    assert_string_equal(imgq_httpd_request_header(r, "x-thing"), "spaced");
    assert_string_equal(imgq_httpd_request_header(r, "EMPTY"), "");
    assert_null(imgq_httpd_request_header(r, "missing"));
    const struct imgq_httpd_header *h = imgq_httpd_request_headers(r, &n);
    assert_int_equal(n, 3);
    assert_string_equal(h[0].name, "Host");
    assert_true(imgq_httpd_request_keep_alive(r));
    assert_false(imgq_httpd_request_aborted(r));
    const char *body = imgq_httpd_request_body(r, &n);
    assert_int_equal(n, 0);
    assert_string_equal(body, "");
    imgq_httpd_request_set_data(r, p);
    assert_ptr_equal(imgq_httpd_request_data(r), p);
    imgq_httpd_request_free(r);
    assert_int_equal(imgq_httpd_parser_next(p, &r), 0);
    assert_int_equal(imgq_httpd_parser_buffered(p), 0);
    imgq_httpd_parser_free(p);
}

/* Asking a parser that was never fed for a request is "not yet", not undefined behaviour. */
static void test_parse_before_any_input(void **state)
{
    imgq_httpd_parser *p = imgq_httpd_parser_new(NULL);
    imgq_httpd_request *r = NULL;
    assert_int_equal(imgq_httpd_parser_next(p, &r), 0);
    assert_null(r);
    imgq_httpd_parser_free(p);
}

static void test_parse_split_reads(void **state)
{
    static const char *reqs[] = {
        "POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 11\r\n"
        "Content-Type: application/json\r\n\r\nhello world",
        /* bare LF line endings are tolerated */
        "POST /p HTTP/1.1\nHost: x\nContent-Length: 11\n\nhello world",
    };
    for (size_t k = 0; k < 2; k++) {
        const char *s = reqs[k];
        size_t len = strlen(s);
        imgq_httpd_parser *p = imgq_httpd_parser_new(NULL);
        imgq_httpd_request *r = NULL;
        for (size_t i = 0; i < len; i++) {
            assert_int_equal(imgq_httpd_parser_next(p, &r), 0);
            imgq_httpd_parser_feed(p, s + i, 1);
        }
        assert_int_equal(imgq_httpd_parser_next(p, &r), 1);
        size_t n;
        assert_string_equal(imgq_httpd_request_body(r, &n), "hello world");
        assert_int_equal(n, 11);
        assert_string_equal(imgq_httpd_request_method(r), "POST");
        assert_string_equal(imgq_httpd_request_query(r), "");
        imgq_httpd_request_free(r);
        imgq_httpd_parser_free(p);
    }
}

static void test_parse_pipelined(void **state)
{
    imgq_httpd_request *r;
    size_t n;
    imgq_httpd_parser *p =
        feed("\r\nGET /a HTTP/1.1\r\nHost: h\r\n\r\n"
             "POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nxyz"
             "GET /c HTTP/1.0\r\n\r\n"
             "GET /d HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"
             "GET /e HTTP/1.1\r\nHost: h\r\nConnection: foo, close\r\n\r\nGET /f HT",
             NULL);
    assert_int_equal(imgq_httpd_parser_next(p, &r), 1);
    assert_string_equal(imgq_httpd_request_path(r), "/a");
    imgq_httpd_request_free(r);
    assert_int_equal(imgq_httpd_parser_next(p, &r), 1);
    assert_string_equal(imgq_httpd_request_path(r), "/b");
    assert_string_equal(imgq_httpd_request_body(r, &n), "xyz");
    imgq_httpd_request_free(r);
    assert_int_equal(imgq_httpd_parser_next(p, &r), 1);
    assert_string_equal(imgq_httpd_request_path(r), "/c");
    assert_int_equal(imgq_httpd_request_version_minor(r), 0);
    assert_false(imgq_httpd_request_keep_alive(r));
    imgq_httpd_request_free(r);
    assert_int_equal(imgq_httpd_parser_next(p, &r), 1);
    assert_true(imgq_httpd_request_keep_alive(r));
    imgq_httpd_request_free(r);
    assert_int_equal(imgq_httpd_parser_next(p, &r), 1);
    assert_string_equal(imgq_httpd_request_path(r), "/e");
    assert_false(imgq_httpd_request_keep_alive(r));
    imgq_httpd_request_free(r);
    assert_int_equal(imgq_httpd_parser_next(p, &r), 0);
    assert_int_equal(imgq_httpd_parser_buffered(p), 9);
    imgq_httpd_parser_feed(p, "TP/1.1\r\nHost: h\r\n\r\n", 19);
    assert_int_equal(imgq_httpd_parser_next(p, &r), 1);
    assert_string_equal(imgq_httpd_request_path(r), "/f");
    imgq_httpd_request_free(r);
    imgq_httpd_parser_free(p);
}

static void test_parse_oversized(void **state)
{
    struct imgq_httpd_limits lim = {
        .max_header_bytes = 256, .max_headers = 4, .max_body_bytes = 10};
    imgq_httpd_request *r = NULL;
    char big[1024];

    /* A head that never ends is refused as soon as it passes the limit. */
    imgq_httpd_parser *p = feed("GET / HTTP/1.1\r\nHost: h\r\nX: ", &lim);
    memset(big, 'a', sizeof(big));
    assert_int_equal(imgq_httpd_parser_next(p, &r), 0);
    imgq_httpd_parser_feed(p, big, sizeof(big));
    assert_int_equal(imgq_httpd_parser_next(p, &r), IMGQ_ERANGE);
    assert_int_equal(imgq_httpd_parser_status(p), 431);
    imgq_httpd_parser_free(p);

    /* A complete head over the limit, too. */
    snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nHost: h\r\nX: %0300d\r\n\r\n", 0);
    p = feed(big, &lim);
    assert_int_equal(imgq_httpd_parser_next(p, &r), IMGQ_ERANGE);
    assert_int_equal(imgq_httpd_parser_status(p), 431);
    imgq_httpd_parser_free(p);

    p = feed("GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", &lim);
    assert_int_equal(imgq_httpd_parser_next(p, &r), IMGQ_ERANGE);
    assert_int_equal(imgq_httpd_parser_status(p), 431);
    imgq_httpd_parser_free(p);

    /* A body over the limit is refused from its Content-Length, before it arrives. */
    p = feed("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n", &lim);
    assert_int_equal(imgq_httpd_parser_next(p, &r), IMGQ_ERANGE);
    assert_int_equal(imgq_httpd_parser_status(p), 413);
    imgq_httpd_parser_free(p);
    p = feed("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789", &lim);
    assert_int_equal(imgq_httpd_parser_next(p, &r), 1);
    imgq_httpd_request_free(r);
    imgq_httpd_parser_free(p);
}

static void test_parse_bad_content_length(void **state)
{
    expect_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: abc\r\n\r\n", 400);
    expect_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400);
    expect_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1 2\r\n\r\n", 400);
    expect_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n", 400);
    expect_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n", 400);
    expect_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n", 400);
    expect_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                  400);
    expect_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551615\r\n\r\n",
                  413);
    expect_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
                  400);
    expect_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab",
                  0);
    expect_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n",
                  501);
}

static void test_parse_malformed(void **state)
{
    expect_status("GARBAGE\r\n\r\n", 400);
    expect_status("GET /\r\n\r\n", 400);
    expect_status("GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    expect_status("GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505);
    expect_status("GET / HTTP/1.1x\r\nHost: h\r\n\r\n", 400);
    expect_status("GET / FTP/1.1\r\nHost: h\r\n\r\n", 400);
    expect_status("G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    expect_status("GET /\x01 HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    expect_status("GET / HTTP/1.1\r\n\r\n", 400); /* no Host */
    expect_status("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400);
    expect_status("GET / HTTP/1.0\r\n\r\n", 0);
    expect_status("GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400);
    expect_status("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n  folded\r\n\r\n", 400);
    expect_status("GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n", 400);
    expect_status("GET / HTTP/1.1\r\nHost: h\r\nX: a\x7f\r\n\r\n", 400);
    expect_status("GET / HTTP/1.1\r\nHost: h\r\n: empty-name\r\n\r\n", 400);
    expect_status("\rGET / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    expect_status("GET / HTTP/1.1\r\nHost: h\r\nExpect: 200-ok\r\n\r\n", 417);

    /* NUL inside the head. */
    static const char nul[] = "GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n";
    imgq_httpd_request *r = NULL;
    imgq_httpd_parser *p = imgq_httpd_parser_new(NULL);
    imgq_httpd_parser_feed(p, nul, sizeof(nul) - 1);
    assert_int_equal(imgq_httpd_parser_next(p, &r), IMGQ_EPARSE);
    assert_int_equal(imgq_httpd_parser_status(p), 400);
    imgq_httpd_parser_free(p);
}

static void test_parse_expect_continue(void **state)
{
    imgq_httpd_request *r = NULL;
    imgq_httpd_parser *p = feed("POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\n"
                                "Content-Length: 4\r\n\r\n",
                                NULL);
    assert_false(imgq_httpd_parser_take_continue(p));
    assert_int_equal(imgq_httpd_parser_next(p, &r), 0);
    assert_true(imgq_httpd_parser_take_continue(p));
    assert_false(imgq_httpd_parser_take_continue(p));
    imgq_httpd_parser_feed(p, "ab", 2);
    assert_int_equal(imgq_httpd_parser_next(p, &r), 0);
    assert_false(imgq_httpd_parser_take_continue(p));
    imgq_httpd_parser_feed(p, "cd", 2);
    assert_int_equal(imgq_httpd_parser_next(p, &r), 1);
    imgq_httpd_request_free(r);
    imgq_httpd_parser_free(p);

    /* Body already there: nothing to continue. */
    p = feed("POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
             NULL);
    assert_int_equal(imgq_httpd_parser_next(p, &r), 1);
    assert_false(imgq_httpd_parser_take_continue(p));
    imgq_httpd_request_free(r);
    imgq_httpd_parser_free(p);
}

/* ---- Server over loopback ------------------------------------------------------------------ */

struct server {
    uv_loop_t loop;
    uv_async_t stop;
    uv_timer_t delay;
    imgq_httpd *httpd;
    imgq_httpd_request *held; /* answered later from the timer */
    int port;
    int requests;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t ready;
    bool up;
    bool aborted_seen;
};

static void on_delay(uv_timer_t *t)
{
    struct server *s = t->data;
    imgq_httpd_request *req = s->held;
    s->held = NULL;
    if (imgq_httpd_request_aborted(req))
        s->aborted_seen = true;
    imgq_httpd_respond(req, 200, NULL, 0, "late\n", 5);
}

static void handler(imgq_httpd_request *req, void *data)
{
    struct server *s = data;
    const char *path = imgq_httpd_request_path(req);
    size_t len;
    const char *body = imgq_httpd_request_body(req, &len);
    s->requests++;
    if (strcmp(path, "/echo") == 0) {
        struct imgq_httpd_header h[] = {{"Content-Type", "text/plain"}, {"X-Bad", "a\r\nb"}};
        imgq_httpd_respond(req, 200, h, 2, body, len);
    } else if (strcmp(path, "/slow") == 0) {
        s->held = req;
        uv_timer_start(&s->delay, on_delay, 100, 0);
    } else {
        imgq_httpd_respond(req, 404, NULL, 0, "nope\n", 5);
    }
}

static void on_closed(void *data)
{
    struct server *s = data;
    uv_close((uv_handle_t *)&s->stop, NULL);
    uv_close((uv_handle_t *)&s->delay, NULL);
}

static void on_stop(uv_async_t *a)
{
    struct server *s = a->data;
    imgq_httpd_close(s->httpd, on_closed, s);
}

static void *server_main(void *arg)
{
    struct server *s = arg;
    struct imgq_httpd_options o;
    imgq_httpd_options_init(&o);
    o.limits.max_header_bytes = 1024;
    o.limits.max_body_bytes = 1 << 20;
    char err[128];
    int rc = imgq_httpd_start(&s->loop, &o, handler, s, &s->httpd, err, sizeof(err));
    pthread_mutex_lock(&s->mu);
    s->port = rc == 0 ? imgq_httpd_port(s->httpd) : -1;
    s->up = true;
    pthread_cond_signal(&s->ready);
    pthread_mutex_unlock(&s->mu);
    if (rc == 0)
        uv_run(&s->loop, UV_RUN_DEFAULT);
    return NULL;
}

static int server_setup(void **state)
{
    struct server *s = calloc(1, sizeof(*s));
    assert_int_equal(uv_loop_init(&s->loop), 0);
    uv_async_init(&s->loop, &s->stop, on_stop);
    uv_timer_init(&s->loop, &s->delay);
    s->stop.data = s->delay.data = s;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->ready, NULL);
    pthread_create(&s->thread, NULL, server_main, s);
    pthread_mutex_lock(&s->mu);
    while (!s->up)
        pthread_cond_wait(&s->ready, &s->mu);
    pthread_mutex_unlock(&s->mu);
    assert_true(s->port > 0);
    *state = s;
    return 0;
}

static int server_teardown(void **state)
{
    struct server *s = *state;
    uv_async_send(&s->stop);
    pthread_join(s->thread, NULL);
    assert_int_equal(uv_loop_close(&s->loop), 0);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->ready);
    free(s);
    return 0;
}

static int dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    struct timeval tv = {.tv_sec = 5};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_true(fd >= 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    return fd;
}

static void send_all(int fd, const char *s)
{
    size_t len = strlen(s);
    while (len) {
        ssize_t n = write(fd, s, len);
        assert_true(n > 0);
        s += n;
        len -= (size_t)n;
    }
}

/* Read until 'count' occurrences of 'until' have arrived, or EOF (until NULL). */
static size_t recv_until(int fd, char *buf, size_t cap, const char *until, int count)
{
    size_t len = 0;
    buf[0] = '\0';
    for (;;) {
        if (until) {
            int seen = 0;
            for (const char *q = buf; (q = strstr(q, until)); q++)
                seen++;
            if (seen >= count)
                return len;
        }
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n <= 0)
            return len;
        len += (size_t)n;
        buf[len] = '\0';
    }
}

static void test_server_keep_alive_and_pipelining(void **state)
{
    struct server *s = *state;
    char buf[8192];
    int fd = dial(s->port);

    send_all(fd, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
    recv_until(fd, buf, sizeof(buf), "hello", 1);
    assert_non_null(strstr(buf, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(buf, "Content-Length: 5\r\n"));
    assert_non_null(strstr(buf, "Content-Type: text/plain\r\n"));
    assert_null(strstr(buf, "X-Bad"));
    assert_null(strstr(buf, "Connection: close"));

    /* Three pipelined requests, one delayed: answers come back in order. */
    send_all(fd, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
                 "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                 "GET /missing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    size_t len = recv_until(fd, buf, sizeof(buf), NULL, 0); /* the last one closes */
    assert_true(len > 0);
    char *late = strstr(buf, "late\n"), *abc = strstr(buf, "abc"), *nope = strstr(buf, "nope");
    assert_non_null(late);
    assert_non_null(abc);
    assert_non_null(nope);
    assert_true(late < abc && abc < nope);
    assert_non_null(strstr(buf, "HTTP/1.1 404 Not Found\r\n"));
    assert_non_null(strstr(buf, "Connection: close\r\n"));
    close(fd);

    /* HTTP/1.0 without keep-alive: answer, then close. */
    fd = dial(s->port);
    send_all(fd, "HEAD /echo HTTP/1.0\r\n\r\n");
    len = recv_until(fd, buf, sizeof(buf), NULL, 0);
    assert_non_null(strstr(buf, "Content-Length: 0\r\n"));
    assert_non_null(strstr(buf, "Connection: close\r\n"));
    close(fd);
}

static void test_server_split_and_continue(void **state)
{
    struct server *s = *state;
    char buf[4096];
    int fd = dial(s->port);

    send_all(fd, "POST /echo HTTP/1.1\r\nHo");
    usleep(20000);
    send_all(fd, "st: x\r\nExpect: 100-continue\r\nContent-Length: 6\r\n\r\n");
    recv_until(fd, buf, sizeof(buf), "\r\n\r\n", 1);
    assert_string_equal(buf, "HTTP/1.1 100 Continue\r\n\r\n");
    send_all(fd, "wor");
    usleep(20000);
    send_all(fd, "lds");
    recv_until(fd, buf, sizeof(buf), "worlds", 1);
    assert_non_null(strstr(buf, "HTTP/1.1 200 OK\r\n"));

    /* Half-close after a request: still answered. */
    send_all(fd, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi");
    shutdown(fd, SHUT_WR);
    size_t len = recv_until(fd, buf, sizeof(buf), NULL, 0);
    assert_true(len > 0);
    assert_non_null(strstr(buf, "\r\n\r\nhi"));
    close(fd);
}

static void test_server_rejects(void **state)
{
    struct server *s = *state;
    char buf[4096], big[2048];
    int fd = dial(s->port);
    int before = s->requests;

    send_all(fd, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n");
    recv_until(fd, buf, sizeof(buf), NULL, 0);
    assert_non_null(strstr(buf, "HTTP/1.1 400 Bad Request\r\n"));
    assert_non_null(strstr(buf, "Connection: close\r\n"));
    close(fd);

    fd = dial(s->port);
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    send_all(fd, "GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: ");
    send_all(fd, big);
    recv_until(fd, buf, sizeof(buf), NULL, 0);
    assert_non_null(strstr(buf, "HTTP/1.1 431 "));
    close(fd);

    /* Too large a body with Expect: refused before the body is sent. */
    fd = dial(s->port);
    send_all(fd, "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                 "Content-Length: 100000000\r\n\r\n");
    recv_until(fd, buf, sizeof(buf), NULL, 0);
    assert_non_null(strstr(buf, "HTTP/1.1 413 "));
    assert_null(strstr(buf, "100 Continue"));
    close(fd);
    assert_int_equal(s->requests, before);
}

static void test_server_client_gone(void **state)
{
    struct server *s = *state;
    int fd = dial(s->port);
    send_all(fd, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
    usleep(20000);
    /* Reset the connection before the answer.  (A plain close is a half-close to the server,
     * which still answers; a reset is unambiguous.) */
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
    usleep(200000);
    assert_true(s->aborted_seen);
    assert_null(s->held);
}

static void on_test_closed(void *data)
{
    *(int *)data = 1;
}

static void reject_all(imgq_httpd_request *req, void *data)
{
    imgq_httpd_respond(req, 503, NULL, 0, NULL, 0);
}

/* Start-up errors leave nothing behind on the loop once it has run. */
static void test_server_start_errors(void **state)
{
    uv_loop_t loop;
    struct imgq_httpd_options o;
    imgq_httpd *a = NULL, *b = NULL;
    char err[256];
    int closed = 0;

    assert_int_equal(uv_loop_init(&loop), 0);
    imgq_httpd_options_init(&o);
    assert_int_equal(imgq_httpd_start(&loop, &o, reject_all, NULL, &a, err, sizeof(err)), 0);
    assert_int_equal(imgq_httpd_connections(a), 0);
    assert_int_equal(imgq_httpd_pending(a), 0);

    o.port = imgq_httpd_port(a); /* taken */
    assert_int_equal(imgq_httpd_start(&loop, &o, reject_all, NULL, &b, err, sizeof(err)), IMGQ_EIO);
    assert_null(b);
    assert_non_null(strstr(err, "address already in use"));
    o.host = "not-an-address";
    assert_int_equal(imgq_httpd_start(&loop, &o, reject_all, NULL, &b, err, sizeof(err)),
                     IMGQ_EINVAL);
    o.host = NULL;
    o.port = 70000;
    assert_int_equal(imgq_httpd_start(&loop, &o, reject_all, NULL, &b, err, sizeof(err)),
                     IMGQ_EINVAL);

    imgq_httpd_close(a, on_test_closed, &closed);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(closed, 1);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_simple),
        cmocka_unit_test(test_parse_before_any_input),
        cmocka_unit_test(test_parse_split_reads),
        cmocka_unit_test(test_parse_pipelined),
        cmocka_unit_test(test_parse_oversized),
        cmocka_unit_test(test_parse_bad_content_length),
        cmocka_unit_test(test_parse_malformed),
        cmocka_unit_test(test_parse_expect_continue),
        cmocka_unit_test(test_server_start_errors),
        cmocka_unit_test_setup_teardown(test_server_keep_alive_and_pipelining, server_setup,
                                        server_teardown),
        cmocka_unit_test_setup_teardown(test_server_split_and_continue, server_setup,
                                        server_teardown),
        cmocka_unit_test_setup_teardown(test_server_rejects, server_setup, server_teardown),
        cmocka_unit_test_setup_teardown(test_server_client_gone, server_setup, server_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
