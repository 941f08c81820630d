/* config.c - layered configuration: defaults, file, environment. */
#include "imgq/config.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "imgq/alloc.h"

void imgq_config_set(char **field, const char *v)
{
    if (!v)
        return;
    free(*field);
    *field = imgq_xstrdup(v);
}

static void from_env(char **field, const char *name)
{
    const char *v = getenv(name);
    if (v && *v)
        imgq_config_set(field, v);
}

char *imgq_config_default_catalog(void)
{
    const char *env = getenv("IMGQ_CATALOG");
    if (env && *env)
        return imgq_xstrdup(env);
    char exe[4096];
    size_t len = sizeof exe;
    if (uv_exepath(exe, &len) != 0)
        return imgq_xstrdup("deploy/catalog.json");
    char *slash = strrchr(exe, '/');
    if (slash)
        *slash = '\0';
    const char *rel[] = {"/../deploy/catalog.json", "/../share/imgq/catalog.json"};
    for (size_t i = 0; i < 2; i++) {
        char *p = imgq_xasprintf("%s%s", exe, rel[i]);
        if (access(p, R_OK) == 0)
            return p;
        free(p);
    }
#ifdef IMGQ_SOURCE_CATALOG
    /* A build tree outside the source tree: the catalog of the sources it was built from. */
    if (access(IMGQ_SOURCE_CATALOG, R_OK) == 0)
        return imgq_xstrdup(IMGQ_SOURCE_CATALOG);
#endif
    return imgq_xstrdup("deploy/catalog.json");
}

static int file_str(json_t *o, const char *key, char **field, const char *path, char *err,
                    size_t errlen)
{
    json_t *v = json_object_get(o, key);
    if (!v)
        return 0;
    if (!json_is_string(v)) {
        snprintf(err, errlen, "%s: '%s' must be a string", path, key);
        return IMGQ_EINVAL;
    }
    imgq_config_set(field, json_string_value(v));
    return 0;
}

static int file_int(json_t *o, const char *key, int scale, int *field, const char *path, char *err,
                    size_t errlen)
{
    json_t *v = json_object_get(o, key);
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 1 ||
        json_integer_value(v) > 10000000 / scale) {
        snprintf(err, errlen, "%s: '%s' must be a positive integer", path, key);
        return IMGQ_EINVAL;
    }
    *field = (int)json_integer_value(v) * scale;
    return 0;
}

static int load_file(struct imgq_config *c, const char *path, char *err, size_t errlen)
{
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        if (je.line < 0 || errno == ENOENT) {
            snprintf(err, errlen, "%s: %s", path, je.text);
            return IMGQ_EIO;
        }
        snprintf(err, errlen, "%s: line %d: %s", path, je.line, je.text);
        return IMGQ_EPARSE;
    }
    int r = 0;
    const char *secrets[] = {"api_key", "secret_key", "access_key", "password", NULL};
    json_t *gemini = json_object_get(root, "gemini"), *ark = json_object_get(root, "ark");
    json_t *openai = json_object_get(root, "openai"), *s3 = json_object_get(root, "s3"),
           *worker = json_object_get(root, "worker");
    for (const char **s = secrets; *s; s++)
        if (json_object_get(openai, *s) || json_object_get(s3, *s) || json_object_get(gemini, *s) ||
            json_object_get(ark, *s)) {
            snprintf(err, errlen,
                     "%s: '%s' does not belong in a config file; set it in the environment "
                     "(OPENAI_API_KEY, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)",
                     path, *s);
            r = IMGQ_EINVAL;
            goto out;
        }
    if ((r = file_str(root, "redis_url", &c->redis_url, path, err, errlen)) ||
        (r = file_str(root, "prefix", &c->prefix, path, err, errlen)) ||
        (r = file_str(root, "queue", &c->queue, path, err, errlen)) ||
        (r = file_str(root, "catalog", &c->catalog, path, err, errlen)) ||
        (r = file_str(openai, "base_url", &c->openai_base_url, path, err, errlen)) ||
        (r = file_str(gemini, "base_url", &c->gemini_base_url, path, err, errlen)) ||
        (r = file_str(ark, "base_url", &c->ark_base_url, path, err, errlen)) ||
        (r = file_str(s3, "endpoint", &c->s3_endpoint, path, err, errlen)) ||
        (r = file_str(s3, "region", &c->s3_region, path, err, errlen)) ||
        (r = file_str(s3, "bucket", &c->s3_bucket, path, err, errlen)) ||
        (r = file_str(s3, "key_prefix", &c->s3_key_prefix, path, err, errlen)) ||
        (r = file_int(worker, "concurrency", 1, &c->concurrency, path, err, errlen)) ||
        (r = file_int(worker, "lease_seconds", 1000, &c->lease_ms, path, err, errlen)) ||
        (r = file_int(worker, "grace_seconds", 1000, &c->grace_ms, path, err, errlen)))
        goto out;
out:
    json_decref(root);
    return r;
}

int imgq_config_load(struct imgq_config *c, const char *file, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    c->redis_url = imgq_xstrdup("redis://127.0.0.1:6379/0");
    c->prefix = imgq_xstrdup("imgq");
    c->queue = imgq_xstrdup("default");
    c->openai_base_url = imgq_xstrdup("https://api.openai.com/v1");
    c->gemini_base_url = imgq_xstrdup("https://generativelanguage.googleapis.com/v1beta");
    c->ark_base_url = imgq_xstrdup("https://ark.ap-southeast.bytepluses.com/api/v3");
    c->s3_key_prefix = imgq_xstrdup("");
    c->concurrency = 256;
    c->lease_ms = 30000;
    c->grace_ms = 30000;
    if (!file)
        file = getenv("IMGQ_CONFIG");
    if (file && *file) {
        int r = load_file(c, file, err, errlen);
        if (r) {
            imgq_config_clear(c);
            return r;
        }
    }
    from_env(&c->redis_url, "IMGQ_REDIS_URL");
    from_env(&c->prefix, "IMGQ_PREFIX");
    from_env(&c->queue, "IMGQ_QUEUE");
    from_env(&c->catalog, "IMGQ_CATALOG");
    from_env(&c->openai_base_url, "OPENAI_BASE_URL");
    from_env(&c->openai_api_key, "OPENAI_API_KEY");
    from_env(&c->gemini_base_url, "GEMINI_BASE_URL");
    from_env(&c->gemini_api_key, "GOOGLE_API_KEY");
    from_env(&c->gemini_api_key, "GEMINI_API_KEY"); /* wins over GOOGLE_API_KEY */
    from_env(&c->ark_base_url, "ARK_BASE_URL");
    from_env(&c->ark_api_key, "ARK_API_KEY");
    from_env(&c->s3_bucket, "IMGQ_S3_BUCKET");
    from_env(&c->s3_key_prefix, "IMGQ_S3_KEY_PREFIX");
    if (!c->catalog)
        c->catalog = imgq_config_default_catalog();
    return 0;
}

void imgq_config_clear(struct imgq_config *c)
{
    free(c->redis_url);
    free(c->prefix);
    free(c->queue);
    free(c->catalog);
    free(c->openai_base_url);
    free(c->openai_api_key);
    free(c->gemini_base_url);
    free(c->gemini_api_key);
    free(c->ark_base_url);
    free(c->ark_api_key);
    free(c->s3_endpoint);
    free(c->s3_region);
    free(c->s3_bucket);
    free(c->s3_key_prefix);
    memset(c, 0, sizeof *c);
}
