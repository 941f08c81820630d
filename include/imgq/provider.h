/*
 * provider.h - provider adapters: build a provider's HTTP request for a job, and turn its
 * response into images, usage and a classified error.
 *
 * An adapter does no I/O: the worker sends the request through imgq_http and hands the
 * response back here, so adapters are tested on bytes alone.  Errors are classified once,
 * here, so that the retry policy (retryable or not, and how long to wait) is the same for
 * every provider.
 *
 * Ownership: a request returned by a build function belongs to the caller (submit it or free
 * it).  A result owns its images and usage JSON; imgq_provider_result_clear frees them.
 */
#ifndef IMGQ_PROVIDER_H
#define IMGQ_PROVIDER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imgq/catalog.h"
#include "imgq/http.h"
#include "imgq/job.h"
#include "imgq/retry_hint.h"

enum imgq_error_class {
    IMGQ_CLASS_NONE = 0,
    IMGQ_CLASS_TIMEOUT,         /* no answer in time: retry */
    IMGQ_CLASS_NETWORK,         /* connection refused/reset/DNS: retry */
    IMGQ_CLASS_RATE_LIMIT,      /* 429: retry after the hint; does not use up an attempt */
    IMGQ_CLASS_SERVER,          /* 5xx, 408, 409: retry */
    IMGQ_CLASS_BAD_RESPONSE,    /* 2xx we cannot use: retry */
    IMGQ_CLASS_STORAGE,         /* storing the result failed: retry */
    IMGQ_CLASS_INVALID_REQUEST, /* 400/404/422: the request is wrong; do not retry */
    IMGQ_CLASS_CONTENT_POLICY,  /* the provider's safety system refused: do not retry */
    IMGQ_CLASS_AUTH             /* 401/403: credentials; do not retry */
};

const char *imgq_error_class_name(enum imgq_error_class c);
bool imgq_error_class_retryable(enum imgq_error_class c);

/* Where and how to reach a provider. */
struct imgq_provider_endpoint {
    const char *base_url; /* e.g. https://api.openai.com/v1 */
    const char *api_key;
    long timeout_ms;
    const char *model_id; /* the provider's name for the model (catalog provider_model), or NULL:
                             then the job's catalog model name */
    const char *edit_model_id; /* the provider's model for jobs with reference images (catalog
                                  provider_edit_model), or NULL: model_id edits too */
};

struct imgq_provider_result {
    enum imgq_error_class cls; /* NONE on success */
    long status;               /* HTTP status, 0 if none */
    char message[512];         /* the provider's error message, or ours */
    char code[64];             /* the provider's error code, e.g. moderation_blocked */
    long retry_after_ms;       /* the provider's hint, -1 if none */
    char request_id[128];      /* x-request-id or equivalent, "" if none */
    /* success */
    uint8_t **images; /* decoded image bytes, one per image */
    size_t *image_lens;
    int nimages;
    bool usage_present;      /* false: bill at the ceiling */
    struct imgq_usage usage; /* tokens as the provider reported them */
    json_t *usage_json;      /* the usage object as returned (new reference) or NULL */
    /* Why the usage the provider returned cannot be billed from, "usage.output_tokens: ..."
     * ("" if it can, or if there was none).  usage_present is then false and usage zero: the
     * call is billed at the ceiling, like one without usage (imgq__usage_begin). */
    char usage_unusable[200];
    /*
     * Asynchronous APIs (submit, then poll).  A submit or poll answer that is neither done nor
     * failed sets pending, the handle to poll next (adapter-defined: a task id or a URL the
     * provider gave), and optionally when to poll (-1: the worker's default).  Images that
     * come back as URLs are listed in image_urls (nimages stays 0): the worker downloads them
     * with imgq_provider_fetch_build/parse and fills images itself.  A pending poll answer
     * with poll "" means "poll the same handle again": some providers' poll answers do not
     * repeat the URL they were fetched from (BFL's polling_url), and parse_poll never sees it.
     */
    bool pending;
    char poll[1024];
    long poll_after_ms;
    char task_status[32]; /* the provider's status word, for logs ("RUNNING", "Pending") */
    char **image_urls;
    int nimage_urls;
};

void imgq_provider_result_clear(struct imgq_provider_result *r);

/*
 * OpenAI Images generations (also any OpenAI-compatible gateway): POST BASE/images/generations
 * with n images in one call.  Never returns NULL.
 */
imgq_http_request *imgq_openai_build(const struct imgq_provider_endpoint *ep,
                                     const struct imgq_job_spec *spec, int n);
/*
 * Interpret the response of a request built above that asked for n images.  Fills *out
 * (cls NONE with n images on success).  Never fails: every malformed answer is a class.
 */
void imgq_openai_parse(const imgq_http_response *res, int n, struct imgq_provider_result *out);

/* Retry hints (Retry-After and the like) are read by imgq/retry_hint.h: adapters keep them up
 * to IMGQ_RETRY_HINT_CEILING_MS in retry_after_ms; the worker clamps them to its maximum. */

/*
 * Google Gemini image output: POST BASE/models/MODEL:generateContent, one image per call
 * (candidateCount > 1 is refused by the API, so n > 1 fans out).  Content-policy blocks
 * arrive as HTTP 200 (promptFeedback.blockReason, or a candidate finishing IMAGE_SAFETY and
 * the like without an image) and are classified as such.  Reference images (spec->ref_data,
 * fetched by the worker) go as inlineData parts after the prompt; their input tokens are billed
 * from usageMetadata's IMAGE modality.  Never returns NULL.
 */
imgq_http_request *imgq_gemini_build(const struct imgq_provider_endpoint *ep,
                                     const struct imgq_job_spec *spec, int n);
void imgq_gemini_parse(const imgq_http_response *res, int n, struct imgq_provider_result *out);
/* "1:1" for 1024x1024 etc.: the aspect ratio Gemini takes for a catalog size, or NULL. */
const char *imgq_gemini_aspect(int width, int height);

/*
 * BytePlus ModelArk Seedream: POST BASE/images/generations with b64_json, one image per call
 * (the API has no n), flat price per generated image (usage.generated_images).  Reference
 * images go in "image" as data URIs: a string for one, an array for several.
 */
imgq_http_request *imgq_seedream_build(const struct imgq_provider_endpoint *ep,
                                       const struct imgq_job_spec *spec, int n);
void imgq_seedream_parse(const imgq_http_response *res, int n, struct imgq_provider_result *out);

/*
 * For adapters (internal): start a result for a response (zeroed, retry hint -1, status) and
 * classify a transport failure, returning true if there was one (the result is then final);
 * and the class of a non-200 status, given whether the provider's body says the content was
 * refused.  One mapping for every provider: 429 rate limit; 5xx, 408, 409 server; 401, 403
 * auth; refused content; other 4xx invalid request; anything else a bad response.
 */
bool imgq__provider_transport(const imgq_http_response *res, struct imgq_provider_result *out);
enum imgq_error_class imgq__provider_status_class(long status, bool content_refused);
/*
 * For adapters (internal): a POST of a JSON body to url (both taken: the body reference is
 * stolen, the url freed) with the key in header 'key_header' (prefixed with 'key_prefix',
 * e.g. "Bearer "), and the endpoint's timeouts.  A key with CR/LF is refused by the HTTP layer
 * and the request goes without it: the provider's 401/403 then classifies the job as auth.
 */
imgq_http_request *imgq__provider_json_post(const struct imgq_provider_endpoint *ep, char *url,
                                            json_t *body, const char *key_header,
                                            const char *key_prefix);
/*
 * For adapters (internal): the body of res as JSON (new reference), or NULL if it is not JSON.
 * A number too large for a 64-bit integer (a usage count "larger than any price can hold") does
 * not make the body unreadable: it is read again with every integer as a real (adapters read no
 * number but usage counts, which the usage reader then refuses) and out->usage_unusable says
 * why, which imgq__usage_end keeps.
 */
json_t *imgq__provider_json(const imgq_http_response *res, struct imgq_provider_result *out);

/*
 * For adapters (internal): a fetched reference image as a data URI, "data:MIME;base64,..."
 * (new string).  A reference without bytes gives "data:MIME;base64," (the provider refuses
 * it; never a crash), one without a usable MIME type image/png.
 */
char *imgq__provider_data_uri(const struct imgq_ref_data *d);
/* The provider's error message and code into out (message falls back to "HTTP <status>"). */
void imgq__provider_error_text(struct imgq_provider_result *out, const char *message,
                               const char *code);

/*
 * For adapters (internal): the one strict reader of a provider's usage, so that every adapter
 * decides alike what a usage it can bill from is.
 *
 * A count is usable when it is a JSON integer in 0..IMGQ_USAGE_MAX: a string, a negative or
 * fractional number, a boolean, an object or a count beyond IMGQ_USAGE_MAX is not (an absent
 * member or JSON null is absent).  A usage is usable when every count read from it is, every
 * count the price needs (IMGQ__USAGE_REQUIRED) is there, and no count that cannot be 0 for the
 * images returned (IMGQ__USAGE_POSITIVE: output tokens, a billed image count) is 0.  The first
 * reason it is not is kept, naming the member ("usage.output_tokens: \"4160\" is not a
 * count").
 *
 * Use: begin, read each count (a member path "a.b", or a value the adapter found itself),
 * refuse for a rule of the adapter's own, then end, which fills the result: usage_json (a new
 * reference to the object as returned) and either usage_present (out->usage is billed) or
 * usage_unusable (out->usage zeroed: billed at the ceiling).  The reader borrows 'usage'; a
 * NULL usage is none (a count read from it is absent).
 */
enum imgq__usage_flags {
    IMGQ__USAGE_REQUIRED = 1 << 0, /* absent is unusable: the price needs this count */
    IMGQ__USAGE_POSITIVE = 1 << 1  /* 0 is unusable: images were returned */
};
struct imgq__usage_reader {
    json_t *usage;    /* borrowed, or NULL */
    const char *name; /* its name in the answer, for messages: "usage", "usageMetadata" */
    int64_t images;   /* images the answer returned, for messages */
    char why[200];    /* the first reason the usage is unusable; "" while usable */
};
void imgq__usage_begin(struct imgq__usage_reader *r, json_t *usage, const char *name,
                       int64_t images);
/* The count at 'path' (member names joined by '.'), 0 if absent or unusable. */
int64_t imgq__usage_count(struct imgq__usage_reader *r, const char *path, unsigned flags);
/* The count v (NULL: absent) found at 'where' (for messages, relative to the usage). */
int64_t imgq__usage_value(struct imgq__usage_reader *r, json_t *v, const char *where,
                          unsigned flags);
/* Make the usage unusable for this reason (kept only if it is the first). */
void imgq__usage_refuse(struct imgq__usage_reader *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Put the outcome in out (see above); returns whether the usage is usable. */
bool imgq__usage_end(struct imgq__usage_reader *r, struct imgq_provider_result *out);

/*
 * Alibaba DashScope task API: POST BASE/api/v1/services/aigc/text2image/image-synthesis with
 * X-DashScope-Async: enable, then GET BASE/api/v1/tasks/ID.  Handle: the task id.  A job with
 * reference images is an edit: POST BASE/api/v1/services/aigc/multimodal-generation/generation
 * (synchronous) under ep->edit_model_id, the images as data URIs in the message's content;
 * imgq_dashscope_parse reads its answer (result URLs at once, usage.image_count).
 */
imgq_http_request *imgq_dashscope_build(const struct imgq_provider_endpoint *ep,
                                        const struct imgq_job_spec *spec, int n);
void imgq_dashscope_parse(const imgq_http_response *res, int n, struct imgq_provider_result *out);
imgq_http_request *imgq_dashscope_build_poll(const struct imgq_provider_endpoint *ep,
                                             const char *handle);
void imgq_dashscope_parse_poll(const imgq_http_response *res, int n,
                               struct imgq_provider_result *out);

/* Replicate: POST BASE/models/OWNER/NAME/predictions with Prefer: wait, then GET urls.get. */
imgq_http_request *imgq_replicate_build(const struct imgq_provider_endpoint *ep,
                                        const struct imgq_job_spec *spec, int n);
void imgq_replicate_parse(const imgq_http_response *res, int n, struct imgq_provider_result *out);
imgq_http_request *imgq_replicate_build_poll(const struct imgq_provider_endpoint *ep,
                                             const char *handle);
void imgq_replicate_parse_poll(const imgq_http_response *res, int n,
                               struct imgq_provider_result *out);

/* fal.ai queue: POST BASE/MODEL_ID, GET status_url until COMPLETED, then GET response_url. */
imgq_http_request *imgq_fal_build(const struct imgq_provider_endpoint *ep,
                                  const struct imgq_job_spec *spec, int n);
void imgq_fal_parse(const imgq_http_response *res, int n, struct imgq_provider_result *out);
imgq_http_request *imgq_fal_build_poll(const struct imgq_provider_endpoint *ep, const char *handle);
void imgq_fal_parse_poll(const imgq_http_response *res, int n, struct imgq_provider_result *out);

/* Black Forest Labs: POST BASE/MODEL, then GET polling_url until Ready. */
imgq_http_request *imgq_bfl_build(const struct imgq_provider_endpoint *ep,
                                  const struct imgq_job_spec *spec, int n);
void imgq_bfl_parse(const imgq_http_response *res, int n, struct imgq_provider_result *out);
imgq_http_request *imgq_bfl_build_poll(const struct imgq_provider_endpoint *ep, const char *handle);
void imgq_bfl_parse_poll(const imgq_http_response *res, int n, struct imgq_provider_result *out);

/*
 * Downloading an image a provider returned as a URL: a GET without credentials, and its
 * reading into bytes (out->images[0], nimages 1) or a classified error.
 */
imgq_http_request *imgq_provider_fetch_build(const char *url, long timeout_ms);
void imgq_provider_fetch_parse(const imgq_http_response *res, struct imgq_provider_result *out);
/*
 * Whether a URL a provider handed back (a poll URL) may be sent the provider's key: same
 * scheme and port, and the same host as base_url; with sibling_hosts also a host under
 * base_url's parent domain (api.bfl.ai -> api.eu2.bfl.ai: BFL's clusters).  Only an adapter
 * whose provider documents such hosts passes true: on a shared domain (*.fly.dev) a sibling is
 * someone else.  Anything else is refused, so a response cannot steer the key elsewhere.
 */
bool imgq_provider_url_trusted(const char *base_url, const char *url, bool sibling_hosts);

/* A wire shape: how to build a request and read its response. */
struct imgq_provider_ops {
    const char *api; /* the catalog's model.api */
    imgq_http_request *(*build)(const struct imgq_provider_endpoint *ep,
                                const struct imgq_job_spec *spec, int n);
    void (*parse)(const imgq_http_response *res, int n, struct imgq_provider_result *out);
    /* Asynchronous APIs only, NULL otherwise: the GET of a poll handle, and its reading. */
    imgq_http_request *(*build_poll)(const struct imgq_provider_endpoint *ep, const char *handle);
    void (*parse_poll)(const imgq_http_response *res, int n, struct imgq_provider_result *out);
};
/* The adapter for a catalog api name, or NULL if this build has none. */
const struct imgq_provider_ops *imgq_provider_ops_find(const char *api);

#endif
