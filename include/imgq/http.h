/*
 * http.h - HTTP client: one libcurl multi handle driven by a libuv loop, plus a blocking
 * helper for the CLI.
 *
 * Every outgoing HTTP call of a worker (providers, S3, webhooks) goes through one imgq_http,
 * so thousands of transfers share one loop, one connection pool and one DNS cache.  libcurl
 * tells the client which sockets to watch (one uv_poll_t each) and when to wake up (one
 * uv_timer_t); the client never calls back into libcurl from inside libcurl's own callbacks.
 *
 * Ownership, stated once for the whole module:
 *   - A request (imgq_http_request) belongs to its creator until imgq_http_submit(), which
 *     takes it over whether it succeeds or not.  imgq_http_perform_sync() only borrows it.
 *   - A response handed to an imgq_http_cb is borrowed: it and everything it points to
 *     (body, headers, error text) are freed when the callback returns.  Copy what you keep.
 *   - A response from imgq_http_perform_sync() belongs to the caller:
 *     imgq_http_response_free().
 *   - Strings passed in are copied unless a function says "borrowed".
 *
 * Threads: an imgq_http and its requests belong to the thread that runs its loop.
 * imgq_http_perform_sync() may be called from any thread.
 *
 * Signals: libcurl is told not to touch signal handlers (CURLOPT_NOSIGNAL), so the process
 * must ignore SIGPIPE (signal(SIGPIPE, SIG_IGN) in main), as any libuv program should: a
 * peer that hangs up then fails the transfer instead of killing the process.
 *
 * Callbacks: the callback of a submitted request runs exactly once, always from the loop and
 * never from inside imgq_http_submit().  It may submit new requests and may call
 * imgq_http_close().
 *
 * Redirects are never followed (a 3xx is an ordinary status for the caller to judge); only
 * the http and https schemes are allowed.
 */
#ifndef IMGQ_HTTP_H
#define IMGQ_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "imgq/error.h"

typedef struct imgq_http imgq_http;
typedef struct imgq_http_request imgq_http_request;

/* Default cap on a response body; larger responses fail with IMGQ_ERANGE. */
#define IMGQ_HTTP_DEFAULT_MAX_BODY ((size_t)64 * 1024 * 1024)

/*
 * Client-wide limits.  Zero in any field means "the default".  HTTP/1.1 needs one connection
 * per transfer in flight; HTTP/2 multiplexes many transfers over one connection.
 */
struct imgq_http_options {
    long max_host_connections;  /* per host+port; default 1024; beyond it transfers queue */
    long max_total_connections; /* across all hosts; default unlimited (-1 means unlimited) */
    long max_idle_connections;  /* kept open for reuse; default 1024 */
    size_t max_body;            /* response body cap; default IMGQ_HTTP_DEFAULT_MAX_BODY */
};

/* One response header, as received (name without the colon, value trimmed). */
struct imgq_http_header {
    const char *name;
    const char *value;
};

typedef struct imgq_http_response {
    /*
     * 0 when an HTTP status was received, whatever it is (check 'status').  Otherwise:
     * IMGQ_EHTTP the transfer failed (refused, reset, DNS, TLS, timeout...): see 'error';
     * IMGQ_ERANGE the body was larger than the cap (the status, if any, is kept);
     * IMGQ_ECANCELED the client was closed before the transfer finished.
     */
    int err;
    bool timed_out;    /* err == IMGQ_EHTTP because a timeout expired */
    bool request_sent; /* the request (its first bytes) went out on a connection */
    long status;       /* HTTP status, 0 if none was received */
    const char *error; /* never NULL; "" when err == 0 */
    /* The body, NUL-terminated for convenience (it may also contain NULs); never NULL. */
    const unsigned char *body;
    size_t body_len;
    /* Headers of the final response (an interim 100 Continue is dropped). */
    const struct imgq_http_header *headers;
    size_t nheaders;
    uint64_t elapsed_ms; /* from submit (or perform) to completion */
} imgq_http_response;

/*
 * Value of the first response header called 'name' (ASCII case-insensitive), or NULL.  The
 * string lives as long as the response.
 */
const char *imgq_http_response_header(const imgq_http_response *res, const char *name);

typedef void (*imgq_http_cb)(const imgq_http_response *res, void *arg);

/* ---- the client -------------------------------------------------------------------------- */

/*
 * Fill 'opts' with the defaults (the values that zero fields stand for).
 */
void imgq_http_options_init(struct imgq_http_options *opts);

/*
 * Create a client on 'loop'; 'opts' may be NULL for the defaults.  Initialises libcurl's
 * global state on first use (curl_global_init, not thread-safe on old libcurl builds: call it
 * before starting threads).  Errors: IMGQ_EHTTP if libcurl cannot be initialised,
 * IMGQ_EINVAL for a negative limit.  Does not block.
 */
IMGQ_MUST_CHECK int imgq_http_init(uv_loop_t *loop, const struct imgq_http_options *opts,
                                   imgq_http **out);

/*
 * Close the client: every transfer still in flight is aborted and its callback runs once
 * with IMGQ_ECANCELED, from inside this call (except a transfer whose body a pool thread is
 * hashing right now: its callback follows when the thread is done); then all libuv handles
 * are closed and, once the last is, 'closed(arg)' runs (it may be NULL) and the client is
 * freed.  After that the loop holds nothing of the client, so uv_loop_close() can return 0.
 * Submitting after close fails with IMGQ_ECANCELED.  Called from inside a response callback,
 * the close happens as soon as that callback returns.  Call it once.  Does not block.
 */
void imgq_http_close(imgq_http *h, void (*closed)(void *arg), void *arg);

/* Transfers submitted and not yet completed (including those whose callback is running). */
size_t imgq_http_in_flight(const imgq_http *h);

/* ---- requests ----------------------------------------------------------------------------- */

enum imgq_http_flags {
    /* Send the URL path exactly as given: no "/./" or "/../" squashing (S3 keys need it). */
    IMGQ_HTTP_PATH_AS_IS = 1 << 0,
    /* Ignore proxy environment variables (http_proxy, ...) for this request. */
    IMGQ_HTTP_NO_PROXY = 1 << 1
};

/*
 * New request for 'method' ("GET", "POST", "PUT", "HEAD", "DELETE", ...) on 'url' (http://
 * or https://).  Both are copied; they are checked by imgq_http_submit() and
 * imgq_http_perform_sync().  Defaults: connect timeout 10 s, total timeout 5 min, the
 * client's body cap.  Never returns NULL.
 */
imgq_http_request *imgq_http_request_new(const char *method, const char *url);

/* Free a request that was not submitted.  NULL is a no-op. */
void imgq_http_request_free(imgq_http_request *req);

/*
 * Add a request header.  IMGQ_EINVAL if 'name' is not an HTTP token or 'value' holds CR, LF
 * or NUL (header injection); the request is unchanged then.
 */
IMGQ_MUST_CHECK int imgq_http_request_add_header(imgq_http_request *req, const char *name,
                                                 const char *value);

/*
 * Set the request body, copied (dropping any multipart parts).  A request with a body and no
 * Content-Type header gets "Content-Type: application/octet-stream".  POST and PUT always
 * send a body (maybe empty).
 */
void imgq_http_request_set_body(imgq_http_request *req, const void *data, size_t len);

/*
 * Set the request body, borrowed (dropping any multipart parts): 'data' must stay valid and
 * unchanged until the callback of the submitted request has returned (or, for
 * imgq_http_perform_sync(), until the request is freed or given another body).  For large bodies
 * that the caller keeps anyway.
 */
void imgq_http_request_set_body_ref(imgq_http_request *req, const void *data, size_t len);

/*
 * Multipart/form-data (RFC 7578), for uploads such as OpenAI's /images/edits.  Add one part:
 * a plain form field ('filename' and 'mime' NULL) or a file ('filename' given; 'mime' its
 * Content-Type, NULL for libcurl's guess from the filename).  Everything is copied; parts are
 * sent in the order added.  The encoding (boundary, part headers, Content-Type
 * "multipart/form-data; boundary=...", Content-Length) is libcurl's (curl_mime), built each
 * time the request is submitted or performed, so a request performed again sends the same
 * parts.  A request has either a body or parts: adding a part drops a body set before, and
 * setting a body drops the parts.  Do not add a Content-Type header yourself.  SigV4 signing
 * needs an explicit payload hash for a multipart request (else it is refused as IMGQ_EINVAL
 * at submit or perform).
 *
 * IMGQ_EINVAL, with the request unchanged, if 'name' is empty or any string holds CR or LF,
 * or 'mime' is not of the form type/subtype[; parameters].
 */
IMGQ_MUST_CHECK int imgq_http_request_add_part(imgq_http_request *req, const char *name,
                                               const void *data, size_t len, const char *filename,
                                               const char *mime);

/* One part as stored, for tests and diagnostics: borrowed, valid until the request changes or
 * is freed.  'filename' and 'mime' are NULL when not given. */
struct imgq_http_part {
    const char *name;
    const void *data;
    size_t len;
    const char *filename;
    const char *mime;
};
/* For tests and diagnostics: the number of parts, and part i (false if i is out of range). */
size_t imgq_http_request_part_count(const imgq_http_request *req);
bool imgq_http_request_part(const imgq_http_request *req, size_t i, struct imgq_http_part *out);
/* For tests and diagnostics: the method and URL as given (borrowed). */
const char *imgq_http_request_method(const imgq_http_request *req);
const char *imgq_http_request_url(const imgq_http_request *req);

/* Timeouts in milliseconds; 0 disables one.  Negative values are treated as 0. */
void imgq_http_request_set_timeouts(imgq_http_request *req, long total_ms, long connect_ms);

/* Cap on this response's body (0: the client's cap; perform_sync: the default cap). */
void imgq_http_request_set_max_body(imgq_http_request *req, size_t max_body);

/* OR of enum imgq_http_flags; replaces the previous flags. */
void imgq_http_request_set_flags(imgq_http_request *req, unsigned flags);

/*
 * Sign the request with AWS Signature Version 4 (libcurl's CURLOPT_AWS_SIGV4, provider
 * "aws:amz:REGION:SERVICE") and send "x-amz-content-sha256: PAYLOAD_HASH".  'payload_hash'
 * is the lowercase hex SHA-256 of the body, or "UNSIGNED-PAYLOAD", or NULL to have it
 * computed here (for a body of 64 KiB or more submitted to a client, on libuv's thread pool).
 * A session token, if any, goes in as the header "x-amz-security-token" (add it yourself;
 * libcurl signs every header the request carries).  IMGQ_EINVAL if region or service is
 * empty or contains ':', a key is empty or payload_hash is malformed.
 */
IMGQ_MUST_CHECK int imgq_http_request_set_aws_sigv4(imgq_http_request *req, const char *region,
                                                    const char *service, const char *access_key,
                                                    const char *secret_key,
                                                    const char *payload_hash);

/*
 * Connect somewhere else than the URL says (libcurl's CURLOPT_CONNECT_TO syntax
 * "HOST:PORT:CONNECT-TO-HOST:CONNECT-TO-PORT"); Host header, SNI and certificate checks keep
 * the URL's name.  For pinning a vetted address and for tests.  Can be given several times.
 */
void imgq_http_request_add_connect_to(imgq_http_request *req, const char *entry);

/*
 * Veto connections by peer address: 'allow(ip, arg)' runs before each request is sent (on a
 * new or reused connection) with the numeric address libcurl connected to; returning false
 * fails the transfer with IMGQ_EHTTP.  For SSRF protection of user-supplied URLs.
 */
void imgq_http_request_set_peer_filter(imgq_http_request *req,
                                       bool (*allow)(const char *ip, void *arg), void *arg);

/* ---- running requests -------------------------------------------------------------------- */

/*
 * Start 'req' on the client; 'cb(res, arg)' runs exactly once when it completes (see the top
 * of this file).  Takes ownership of 'req' in every case.  Errors, with 'cb' never called:
 * IMGQ_EINVAL for a bad method or URL, IMGQ_ECANCELED after imgq_http_close(), IMGQ_EHTTP if
 * libcurl refuses the transfer.  Does not block.
 */
IMGQ_MUST_CHECK int imgq_http_submit(imgq_http *h, imgq_http_request *req, imgq_http_cb cb,
                                     void *arg);

/*
 * Perform 'req' synchronously on a private connection: blocks until the transfer completes
 * or times out.  Returns the response's 'err' (IMGQ_EINVAL for a bad method or URL) and, in
 * every case, stores a response in '*out' that the caller frees with
 * imgq_http_response_free().  'req' is borrowed and may be performed again.
 */
IMGQ_MUST_CHECK int imgq_http_perform_sync(const imgq_http_request *req, imgq_http_response **out);

/* Free a response from imgq_http_perform_sync().  NULL is a no-op. */
void imgq_http_response_free(imgq_http_response *res);

#endif
