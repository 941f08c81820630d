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
 *    "s3": {"endpoint": "...", "region": "...", "bucket": "...", "key_prefix": "imgq/"},
 *    "worker": {"concurrency": 256, "lease_seconds": 30, "grace_seconds": 30}}
 * Environment: IMGQ_REDIS_URL, IMGQ_PREFIX, IMGQ_QUEUE, IMGQ_CATALOG, OPENAI_BASE_URL,
 * OPENAI_API_KEY, GEMINI_BASE_URL, GEMINI_API_KEY (or GOOGLE_API_KEY), ARK_BASE_URL,
 * ARK_API_KEY (BytePlus Seedream), IMGQ_S3_BUCKET,
 * IMGQ_S3_KEY_PREFIX, and the AWS_* variables (see s3.h). Secrets (API keys, S3 credentials) come
 * from the environment; a config file may not hold them, so that config files can be shared and
 * committed.
 *
 * Ownership: the struct owns its strings; imgq_config_clear frees them.
 */
#ifndef IMGQ_CONFIG_H
#define IMGQ_CONFIG_H

#include <stddef.h>

#include "imgq/error.h"

struct imgq_config {
    char *redis_url;
    char *prefix;
    char *queue;
    char *catalog;
    char *openai_base_url;
    char *openai_api_key;
    char *gemini_base_url;
    char *gemini_api_key;
    char *ark_base_url; /* BytePlus ModelArk (Seedream) */
    char *ark_api_key;
    char *s3_endpoint; /* NULL = from the AWS_* environment */
    char *s3_region;
    char *s3_bucket;
    char *s3_key_prefix; /* prepended to every object key */
    int concurrency;
    int lease_ms;
    int grace_ms;
};

/*
 * Fill *c from defaults, the file (NULL = IMGQ_CONFIG or none) and the environment.
 * IMGQ_EIO / IMGQ_EPARSE / IMGQ_EINVAL with err naming the file and key.
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
/* Replace a string field (takes a copy of v; NULL leaves it). */
void imgq_config_set(char **field, const char *v);

#endif
