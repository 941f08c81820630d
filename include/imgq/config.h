/*
 * config.h - where imgq's settings come from: defaults, then a JSON config file, then the
 * environment (the fields' usual names), then command-line flags (applied by each program).
 *
 * File (path from --config or IMGQ_CONFIG), every key optional:
 *   {"redis_url": "redis://127.0.0.1:6379/0", "prefix": "imgq", "queue": "default",
 *    "catalog": "/etc/imgq/catalog.json",
 *    "openai": {"base_url": "https://api.openai.com/v1"},
 *    "gemini": {"base_url": "https://generativelanguage.googleapis.com/v1beta"},
 *    "ark": {"base_url": "https://ark.ap-southeast.bytepluses.com/api/v3"},
 *    "dashscope": {"base_url": "https://dashscope-intl.aliyuncs.com"},
 *    "replicate": {"base_url": "https://api.replicate.com/v1"},
 *    "fal": {"base_url": "https://queue.fal.run"},
 *    "bfl": {"base_url": "https://api.bfl.ai/v1"},
 *    "gateways": {"treerouter-standard": {"base_url": "https://gw.example/v1"}},
 *    "s3": {"endpoint": "...", "region": "...", "bucket": "...", "key_prefix": "imgq/"},
 *    "worker": {"concurrency": 256, "lease_seconds": 30, "grace_seconds": 30,
 *               "spool_dir": "/var/spool/imgq", "spool_max_bytes": "10G",
 *               "spool_memory_bytes": "256M", "store_timeout_seconds": 3600},
 *    "webhooks": {"endpoints": [{"url_prefix": "https://cms.example/",
 *                                "secret_env": "CMS_WEBHOOK_SECRET"}]}}
 * A gateway is an OpenAI-compatible endpoint that serves the OpenAI models of jobs on the route
 * (price group) of the same name: such jobs are sent there and priced with that route's
 * multiplier.  Its key comes from IMGQ_GATEWAY_<ROUTE>_API_KEY (route upper-cased, other
 * characters as '_').
 * Environment: IMGQ_REDIS_URL, IMGQ_PREFIX, IMGQ_QUEUE, IMGQ_CATALOG, OPENAI_BASE_URL,
 * OPENAI_API_KEY, GEMINI_BASE_URL, GEMINI_API_KEY (or GOOGLE_API_KEY), ARK_BASE_URL,
 * ARK_API_KEY (BytePlus Seedream), IMGQ_S3_REFERENCE_BUCKETS, IMGQ_SSRF_ALLOW, DASHSCOPE_BASE_URL,
 * DASHSCOPE_API_KEY, REPLICATE_BASE_URL, REPLICATE_API_TOKEN, FAL_BASE_URL, FAL_KEY, BFL_BASE_URL,
 * BFL_API_KEY, IMGQ_S3_BUCKET, IMGQ_S3_KEY_PREFIX, IMGQ_WEBHOOK_SECRET, IMGQ_SPOOL_DIR,
 * IMGQ_SPOOL_MAX_BYTES, IMGQ_SPOOL_MEMORY_BYTES (sizes: imgq_config_parse_bytes), and the AWS_*
 * variables (see s3.h): AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL and AWS_REGION or
 * AWS_DEFAULT_REGION beat the file's s3.endpoint and s3.region.  Each setting is resolved in one
 * place (config.c's table): its default, the file, then its variables; the programs' flags are
 * applied over the result.  The file is strict: an unknown key is an error naming it and the
 * nearest known key.  Secrets (API keys, S3 credentials, webhook secrets, a password in
 * redis_url) come from the environment: a key anywhere in the file that looks like one is
 * refused with the variable to use, so that config files can be shared and committed.
 * IMGQ_LOG_LEVEL, when set, must be error, warn, info or debug.
 *
 * Ownership: the struct owns its strings; imgq_config_clear frees them.
 */
#ifndef IMGQ_CONFIG_H
#define IMGQ_CONFIG_H

#include <stddef.h>

#include "imgq/error.h"

#define IMGQ_CONFIG_APIS 7

struct imgq_config {
    char *redis_url;
    char *prefix;
    char *queue;
    char *catalog;
    /* Where each wire shape (the catalog's model.api) is reached, and with which key. */
    struct imgq_config_api {
        const char *api;     /* catalog api name, e.g. "openai-images" */
        const char *section; /* config file section, e.g. "openai" */
        char *base_url;
        char *api_key;
    } apis[IMGQ_CONFIG_APIS];
    struct imgq_config_gateway {
        char *route; /* the price group it serves */
        char *base_url;
        char *api_key;
    } * gateways;
    size_t ngateways;
    char *s3_endpoint; /* NULL = from the AWS_* environment */
    char *s3_region;
    char *s3_bucket;
    char *s3_key_prefix; /* prepended to every object key */
    /* Buckets besides s3_bucket that jobs' s3:// reference images may name (comma-separated;
     * the worker reads them with its own credentials, so it reads only these). */
    char *s3_reference_buckets;
    /* What user-supplied URLs (reference images, webhooks) may reach besides public
     * addresses: comma-separated hosts, IPs or CIDR blocks (ssrf.h), for local development. */
    char *ssrf_allow;
    int concurrency;
    int lease_ms;
    int grace_ms;
    /* The worker's spool of paid bytes S3 has not taken (workers/spool.h): its directory (NULL:
     * memory only) and caps in bytes (-1: the defaults, 10 GiB and 256 MiB), and how long an
     * attempt keeps trying its PUTs (0: the default, one hour). */
    char *spool_dir;
    long long spool_max_bytes;
    long long spool_memory_bytes;
    int store_timeout_ms;
    /* Webhook signing secrets, as text ("whsec_... whsec_...", spaces or commas; the worker
     * parses them, workers/webhooks.h): IMGQ_WEBHOOK_SECRET for every URL, and per endpoint
     * (the file's "webhooks.endpoints", first matching url_prefix wins) the variable named by
     * secret_env; 'secrets' is NULL when that variable is unset or empty. */
    char *webhook_secret;
    struct imgq_config_webhook_endpoint {
        char *url_prefix;
        char *secret_env;
        char *secrets;
    } * webhook_endpoints;
    size_t nwebhook_endpoints;
};

/*
 * Fill *c from defaults, the file (NULL = IMGQ_CONFIG or none) and the environment.
 * IMGQ_EIO / IMGQ_EPARSE / IMGQ_EINVAL with err naming the file and key (an unknown key, a
 * secret, a bad value) or the variable (a bad IMGQ_LOG_LEVEL or size).
 */
int imgq_config_load(struct imgq_config *c, const char *file, char *err,
                     size_t errlen) IMGQ_MUST_CHECK;
void imgq_config_clear(struct imgq_config *c);
/*
 * The catalog used when none is configured: IMGQ_CATALOG, else the one shipped beside the
 * binaries (<exe>/../deploy/catalog.json in a build tree inside the source tree,
 * <exe>/../share/imgq/catalog.json when installed, else the source tree it was built from).
 * A new string.
 */
char *imgq_config_default_catalog(void);
/*
 * The base URL and key for calls of a model speaking 'api' on price group 'route': the
 * route's gateway for openai-images when one is configured, else the api's own endpoint.
 * IMGQ_ENOTFOUND if this config knows no endpoint for the api.
 */
int imgq_config_endpoint(const struct imgq_config *c, const char *api, const char *route,
                         const char **base_url, const char **api_key) IMGQ_MUST_CHECK;
/* A comma-separated list (ssrf_allow, s3_reference_buckets) split into trimmed, non-empty
 * entries: a new array of new strings (NULL when empty); free with imgq_config_split_free. */
char **imgq_config_split(const char *list, size_t *n);
void imgq_config_split_free(char **list, size_t n);
/*
 * A size in bytes: digits, optionally followed by K, M, G or T (powers of 1024; "KiB", "MB"
 * and the like are read the same).  IMGQ_EINVAL when it is not one, IMGQ_ERANGE beyond 2^62.
 */
int imgq_config_parse_bytes(const char *s, long long *out) IMGQ_MUST_CHECK;
/* Replace a string field (takes a copy of v; NULL leaves it). */
void imgq_config_set(char **field, const char *v);

#endif
