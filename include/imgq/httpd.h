/*
 * httpd.h - a small HTTP/1.1 server on a libuv loop, for imgq's own test and rehearsal
 * servers (the provider simulator imgq-sim, webhook receivers in tests).
 *
 * Not a general web server: it serves loopback clients that imgq controls.  What it does:
 * persistent connections (keep-alive) and pipelined requests (answered in order, one at a
 * time per connection), request bodies framed by Content-Length, "Expect: 100-continue",
 * caps on header and body sizes, an idle timeout, and a 4xx/5xx answer followed by a close
 * for anything malformed.  What it refuses: Transfer-Encoding request bodies (chunked uploads;
 * 501), HTTP versions other than 1.0 and 1.1 (505).  No TLS.
 *
 * Concurrency: one loop thread; no thread per connection.  A request handler may answer at
 * once or much later (from a timer, after other I/O), so thousands of requests can be held
 * open cheaply: an idle connection costs about a kilobyte plus its unparsed input.
 *
 * Threads: every function must be called on the loop's thread, except that the parser
 * (imgq_httpd_parser_*) and request accessors touch no loop and may run on any thread for
 * requests it owns.
 *
 * Ownership, the one rule: a request handed to a handler belongs to the server until the
 * handler answers it with imgq_httpd_respond*(), exactly once; that call frees it.  A request
 * from imgq_httpd_parser_next() belongs to the caller, who frees it with
 * imgq_httpd_request_free().  Strings returned by request accessors are borrowed from the
 * request and live as long as it does.
 */
#ifndef IMGQ_HTTPD_H
#define IMGQ_HTTPD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "imgq/error.h"

/* ---- Limits -------------------------------------------------------------------------------- */

struct imgq_httpd_limits {
    size_t max_header_bytes; /* request line + headers; over it: 431 */
    size_t max_headers;      /* header fields; over it: 431 */
    size_t max_body_bytes;   /* Content-Length; over it: 413 (before any body is read) */
};

#define IMGQ_HTTPD_DEFAULT_MAX_HEADER_BYTES (16u * 1024)
#define IMGQ_HTTPD_DEFAULT_MAX_HEADERS 100u
#define IMGQ_HTTPD_DEFAULT_MAX_BODY_BYTES (64u * 1024 * 1024)

/* ---- Requests ------------------------------------------------------------------------------ */

typedef struct imgq_httpd_request imgq_httpd_request;

struct imgq_httpd_header {
    const char *name;
    const char *value;
};

/* The method as sent ("GET", "POST", ...; case-sensitive as HTTP says). */
const char *imgq_httpd_request_method(const imgq_httpd_request *req);
/* The request target as sent ("/v1/x?a=b"), its path ("/v1/x") and its query ("a=b", or ""
 * when there is none).  Nothing is percent-decoded. */
const char *imgq_httpd_request_target(const imgq_httpd_request *req);
const char *imgq_httpd_request_path(const imgq_httpd_request *req);
const char *imgq_httpd_request_query(const imgq_httpd_request *req);
/* 0 for HTTP/1.0, 1 for HTTP/1.1. */
int imgq_httpd_request_version_minor(const imgq_httpd_request *req);
/* Value of the first header of this name (case-insensitive), surrounding blanks removed;
 * NULL if absent. */
const char *imgq_httpd_request_header(const imgq_httpd_request *req, const char *name);
/* Header fields in the order received; *count gets their number.  Borrowed array. */
const struct imgq_httpd_header *imgq_httpd_request_headers(const imgq_httpd_request *req,
                                                           size_t *count);
/* The body (NUL-terminated for convenience; it may also contain NULs) and its length. */
const char *imgq_httpd_request_body(const imgq_httpd_request *req, size_t *len);
/* Whether the connection stays open after this request's response. */
bool imgq_httpd_request_keep_alive(const imgq_httpd_request *req);
/* True once the client's connection is gone (or the server closed): the answer, which the
 * handler must still give, will be discarded.  Lets a slow handler skip work. */
bool imgq_httpd_request_aborted(const imgq_httpd_request *req);
/* A pointer the handler may keep with the request (NULL at first). */
void *imgq_httpd_request_data(const imgq_httpd_request *req);
void imgq_httpd_request_set_data(imgq_httpd_request *req, void *data);
/* Free a request obtained from imgq_httpd_parser_next().  NULL is a no-op.  Never call it on a
 * request handed to a server handler: answer that one instead. */
void imgq_httpd_request_free(imgq_httpd_request *req);

/* ---- Incremental request parser (used by the server; usable alone, e.g. by fuzzers) -------- */

typedef struct imgq_httpd_parser imgq_httpd_parser;

/* A parser with these limits (NULL or zero fields = defaults).  Free with
 * imgq_httpd_parser_free(). */
imgq_httpd_parser *imgq_httpd_parser_new(const struct imgq_httpd_limits *limits);
void imgq_httpd_parser_free(imgq_httpd_parser *p);

/* Append received bytes (copied).  Never fails; limits are enforced by _next(). */
void imgq_httpd_parser_feed(imgq_httpd_parser *p, const void *data, size_t len);

/*
 * Take the next complete request from what was fed: returns 1 and sets *out (the caller owns
 * it), 0 if more bytes are needed, or a negative error once the input is unusable: IMGQ_EPARSE
 * (malformed) or IMGQ_ERANGE (a limit exceeded).  After an error the parser stays failed and
 * imgq_httpd_parser_status() tells the HTTP status to answer with (400, 413, 417, 431, 501,
 * 505) before closing the connection.
 */
int imgq_httpd_parser_next(imgq_httpd_parser *p, imgq_httpd_request **out) IMGQ_MUST_CHECK;
int imgq_httpd_parser_status(const imgq_httpd_parser *p);
/* Static text saying what was wrong, after an error ("" before). */
const char *imgq_httpd_parser_error(const imgq_httpd_parser *p);
/* True exactly once per request whose headers asked "Expect: 100-continue" and whose body has
 * not all arrived yet: the server then sends "100 Continue". */
bool imgq_httpd_parser_take_continue(imgq_httpd_parser *p);
/* Bytes fed but not yet returned as part of a request. */
size_t imgq_httpd_parser_buffered(const imgq_httpd_parser *p);

/* ---- Server -------------------------------------------------------------------------------- */

typedef struct imgq_httpd imgq_httpd;

/* Called on the loop thread for each complete request.  The handler owns the duty to answer
 * it (see the ownership rule above); it may do so before returning or at any later time. */
typedef void (*imgq_httpd_handler)(imgq_httpd_request *req, void *data);

struct imgq_httpd_options {
    const char *host; /* IPv4 or IPv6 literal; default "127.0.0.1" */
    int port;         /* 0 = let the kernel pick (see imgq_httpd_port()) */
    int backlog;      /* listen() backlog; default 4096 */
    struct imgq_httpd_limits limits;
    uint64_t idle_timeout_ms; /* close a connection idle this long between requests or with
                                 an unfinished request; 0 = default 60000 */
};

/* Fill *o with the defaults. */
void imgq_httpd_options_init(struct imgq_httpd_options *o);

/*
 * Bind, listen and start serving on 'loop'.  Does not block.  Errors: IMGQ_EINVAL (bad host
 * or port), IMGQ_EIO (bind or listen failed, e.g. the port is taken; errno-style detail is
 * in the libuv error, which goes to 'errbuf' when not NULL).  On error *out is untouched and
 * the half-made listener is closed; that close completes the next time the loop runs.
 */
int imgq_httpd_start(uv_loop_t *loop, const struct imgq_httpd_options *o,
                     imgq_httpd_handler handler, void *data, imgq_httpd **out, char *errbuf,
                     size_t errlen) IMGQ_MUST_CHECK;

/* The port actually bound. */
int imgq_httpd_port(const imgq_httpd *srv);
/* Connections open now; requests handed to the handler and not answered yet. */
size_t imgq_httpd_connections(const imgq_httpd *srv);
size_t imgq_httpd_pending(const imgq_httpd *srv);

/*
 * Stop listening and close every connection.  Requests still unanswered become aborted: the
 * handler must still answer each (the answer is discarded), and may do so after this call.
 * The server's memory is freed once all its handles have closed, after which close_cb (if not
 * NULL) runs on the loop.  srv must not be used after this call.
 */
void imgq_httpd_close(imgq_httpd *srv, void (*close_cb)(void *data), void *data);

/*
 * Answer a request and free it.  The server adds Content-Length, and "Connection: close" when
 * it will close the connection afterwards; 'headers' are sent as given (entries containing CR
 * or LF are dropped).  Also use it for errors.  HEAD requests get the headers without the
 * body.  Never fails: if the client is gone, the answer is dropped.
 *
 * imgq_httpd_respond copies body; imgq_httpd_respond_take takes ownership of body (a malloc'd
 * buffer, or NULL when len is 0), which is freed with free() when written.
 */
void imgq_httpd_respond(imgq_httpd_request *req, int status,
                        const struct imgq_httpd_header *headers, size_t nheaders, const void *body,
                        size_t len);
void imgq_httpd_respond_take(imgq_httpd_request *req, int status,
                             const struct imgq_httpd_header *headers, size_t nheaders, void *body,
                             size_t len);

/* Standard reason phrase for a status ("Not Found"); "Unknown" if it has none here. */
const char *imgq_httpd_reason(int status);

#endif
