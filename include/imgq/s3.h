/*
 * s3.h - S3-compatible object storage (AWS S3, MinIO, Ceph RGW, Cloudflare R2, s3rver) over
 * libcurl.
 *
 * Requests are signed with AWS Signature Version 4 by libcurl (CURLOPT_AWS_SIGV4) and run on
 * an imgq_http client (async) or on a private connection (the _sync functions, for the CLI
 * and tests).  Presigned URLs are SigV4 query signing done here with libcrypto, since libcurl
 * cannot presign.  Configuration follows the AWS SDK conventions (see
 * imgq_s3_config_from_env).
 *
 * Ownership: a config owns its strings (heap strings, freed by imgq_s3_config_clear()); the
 * functions below only read a config during the call, so it may change or be freed as soon
 * as they return.  To use another bucket, pass a copy of the struct whose 'bucket' points
 * elsewhere.  Results handed to an imgq_s3_cb are borrowed for the callback's duration.
 * Strings returned through 'char **' belong to the caller (free()).
 *
 * Errors of an operation (in the result's 'err' or the return value of a _sync function):
 *   IMGQ_ENOTFOUND  404: no such key or bucket
 *   IMGQ_EEXIST     409 on bucket creation: the bucket already exists
 *   IMGQ_EAGAIN     transport failure, timeout, 408, 429, 5xx: retry later
 *   IMGQ_EHTTP      any other non-2xx status (403 AccessDenied, 400 ...)
 *   IMGQ_ERANGE     the response body was larger than the client's cap
 *   IMGQ_ECANCELED  the imgq_http client was closed
 *   IMGQ_ECONFIG    (synchronous) credentials, region, endpoint or bucket missing or bad
 *   IMGQ_EINVAL     (synchronous) bad key, bucket name, metadata or argument
 * with a message such as "S3 PUT s3://bucket/key: 403 AccessDenied: Access Denied".
 */
#ifndef IMGQ_S3_H
#define IMGQ_S3_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "imgq/error.h"
#include "imgq/http.h"

struct imgq_s3_config {
    char *endpoint; /* "http://127.0.0.1:9000", optionally with a path; NULL: AWS's own,
                     * https://s3.REGION.amazonaws.com */
    char *region;   /* signing region; NULL means us-east-1 */
    char *access_key;
    char *secret_key;
    char *session_token; /* temporary credentials; NULL if none */
    char *bucket;        /* NULL if none: operations then fail with IMGQ_ECONFIG */
    /* true: http://endpoint/bucket/key; false: http://bucket.endpoint/key (virtual host).
     * Buckets that cannot be a DNS label (dots, capitals, '_') and IP-address endpoints
     * always use path style. */
    bool path_style;
};

/* Largest expiry of a presigned URL, in seconds (7 days), as AWS allows. */
#define IMGQ_S3_PRESIGN_MAX_EXPIRES 604800L

/* Zero the config (no strings; region us-east-1 implied; virtual-host style). */
void imgq_s3_config_init(struct imgq_s3_config *cfg);

/*
 * Fill 'cfg' (which is cleared first) from the environment, as the AWS SDKs do:
 *   endpoint  AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL (both ignored when
 *             AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true), else NULL (AWS)
 *   region    AWS_REGION, else AWS_DEFAULT_REGION, else "us-east-1"
 *   keys      AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN
 *   bucket    IMGQ_S3_BUCKET
 *   style     path style with a custom endpoint, virtual host on AWS; IMGQ_S3_ADDRESSING_STYLE
 *             = path | virtual | auto overrides that (the AWS CLI's addressing_style).
 * Empty variables count as unset.  Missing credentials are not an error here (see
 * imgq_s3_config_check).  Errors: IMGQ_ECONFIG for a malformed endpoint or addressing style,
 * with '*why' (if 'why' is not NULL) set to a static explanation; 'cfg' holds what was read.
 */
IMGQ_MUST_CHECK int imgq_s3_config_from_env(struct imgq_s3_config *cfg, const char **why);

/* Free the strings of 'cfg' and zero it; it can be reused.  Wipes the secret first. */
void imgq_s3_config_clear(struct imgq_s3_config *cfg);

/*
 * Replace the string '*field' (a member of a config, e.g. &cfg->bucket) with a copy of
 * 'value' (NULL clears it).  Fields may also be set directly with heap strings.
 */
void imgq_s3_config_set(char **field, const char *value);

/*
 * Check that 'cfg' can be used for requests: a well-formed endpoint, a region, both keys and
 * (if need_bucket) a bucket.  IMGQ_ECONFIG with a new message in '*why' (if not NULL) naming
 * what is missing; 0 otherwise.
 */
IMGQ_MUST_CHECK int imgq_s3_config_check(const struct imgq_s3_config *cfg, bool need_bucket,
                                         char **why);

/*
 * URI-encode 's' as SigV4 asks: unreserved characters (A-Z a-z 0-9 - . _ ~) stay, every other
 * byte becomes %XX (upper-case hex); '/' stays too when keep_slash.  Returns a new string.
 */
char *imgq_s3_uri_encode(const char *s, bool keep_slash);

/*
 * The URL of object 'key' in 'bucket' (NULL: cfg->bucket), or of the bucket itself when 'key'
 * is NULL, in '*url_out' (new string).  Errors: IMGQ_ECONFIG (no bucket, bad endpoint),
 * IMGQ_EINVAL (bucket name or key unusable: empty, key over 1024 bytes, bucket "." or "..").
 */
IMGQ_MUST_CHECK int imgq_s3_object_url(const struct imgq_s3_config *cfg, const char *bucket,
                                       const char *key, char **url_out);

/*
 * Extract <Code> and <Message> from an S3 XML error body, without an XML parser and without
 * trusting the body: it may be truncated, huge, binary or hostile.  On success both are new
 * strings (Message may be ""), entities decoded, control characters replaced, lengths capped.
 * IMGQ_EPARSE if no <Error><Code> is found; the outputs are NULL then.
 */
IMGQ_MUST_CHECK int imgq_s3_parse_error(const char *body, size_t len, char **code, char **message);

/*
 * A presigned URL (SigV4 query signing) letting its holder do 'method' ("GET", "PUT", "HEAD",
 * "DELETE") on 'key' in 'bucket' (NULL: cfg->bucket) for 'expires' seconds from 'at' (signing
 * time, usually time(NULL)).  Only the host header is signed and the payload is
 * UNSIGNED-PAYLOAD.  Errors: IMGQ_ERANGE if expires is not within 1..604800; IMGQ_EINVAL for a
 * bad method, bucket or key, or 'at' out of range; IMGQ_ECONFIG as imgq_s3_config_check.
 * Does not block.
 */
IMGQ_MUST_CHECK int imgq_s3_presign(const struct imgq_s3_config *cfg, const char *method,
                                    const char *bucket, const char *key, long expires, time_t at,
                                    char **url_out);

/* ---- async operations on an imgq_http client --------------------------------------------- */

struct imgq_s3_result {
    int err;                  /* 0 or an error listed at the top of this file */
    long status;              /* HTTP status, 0 if none was received */
    const char *message;      /* never NULL; "" on success */
    const char *code;         /* S3 error code ("NoSuchKey", "NotFound" for a bodiless 404) or "" */
    const char *etag;         /* ETag header as sent (quoted), or NULL */
    const char *request_id;   /* x-amz-request-id, or NULL */
    const char *content_type; /* GET, HEAD: Content-Type, or NULL */
    long long size;           /* GET, HEAD: object size (Content-Length), or -1 */
    const unsigned char *body; /* GET: the object (NUL-terminated); else the raw response */
    size_t body_len;
    const imgq_http_response *http; /* everything else (other headers, elapsed_ms) */
};

typedef void (*imgq_s3_cb)(const struct imgq_s3_result *res, void *arg);

/*
 * Store 'len' bytes at 'body' as object 'key' in cfg->bucket.  'body' is borrowed: it must stay
 * valid and unchanged until 'cb' has returned.  'content_type' NULL means
 * application/octet-stream.  'meta' is NULL or a NULL-terminated list of name, value pairs
 * sent as x-amz-meta-NAME headers (names: letters, digits, '-', '_'; values: printable
 * ASCII).  The payload SHA-256 is computed for the signature (on libuv's thread pool when
 * the body is large).  'cb' runs exactly once unless this returns an error (IMGQ_ECONFIG,
 * IMGQ_EINVAL, IMGQ_ECANCELED, IMGQ_EHTTP: see imgq_http_submit).  Does not block.
 */
IMGQ_MUST_CHECK int imgq_s3_put(imgq_http *h, const struct imgq_s3_config *cfg, const char *key,
                                const char *content_type, const void *body, size_t len,
                                const char *const *meta, imgq_s3_cb cb, void *arg);

/* Fetch object 'key': the result's body is the object.  As imgq_s3_put otherwise. */
IMGQ_MUST_CHECK int imgq_s3_get(imgq_http *h, const struct imgq_s3_config *cfg, const char *key,
                                imgq_s3_cb cb, void *arg);

/* Does object 'key' exist, and how big is it (result's size, etag)?  IMGQ_ENOTFOUND if not. */
IMGQ_MUST_CHECK int imgq_s3_head(imgq_http *h, const struct imgq_s3_config *cfg, const char *key,
                                 imgq_s3_cb cb, void *arg);

/* ---- blocking operations (CLI, tests) ---------------------------------------------------- */
/*
 * Each blocks until done and returns 0 or an error as listed at the top; on error '*errmsg'
 * (when errmsg is not NULL) gets a new message, else it is set to NULL.
 */

/* As imgq_s3_put; 'body' is only read during the call. */
IMGQ_MUST_CHECK int imgq_s3_put_sync(const struct imgq_s3_config *cfg, const char *key,
                                     const char *content_type, const void *body, size_t len,
                                     const char *const *meta, char **errmsg);

/* Fetch object 'key' into '*data' (new buffer, NUL-terminated beyond '*len'). */
IMGQ_MUST_CHECK int imgq_s3_get_sync(const struct imgq_s3_config *cfg, const char *key,
                                     unsigned char **data, size_t *len, char **errmsg);

/* Size and ETag of object 'key'; 'size' and 'etag' may be NULL; '*etag' is a new string. */
IMGQ_MUST_CHECK int imgq_s3_head_sync(const struct imgq_s3_config *cfg, const char *key,
                                      long long *size, char **etag, char **errmsg);

/*
 * Create 'bucket' (NULL: cfg->bucket) in cfg->region.  IMGQ_EEXIST if it exists already
 * (owned by you or not).
 */
IMGQ_MUST_CHECK int imgq_s3_create_bucket_sync(const struct imgq_s3_config *cfg, const char *bucket,
                                               char **errmsg);

#endif
