/* config.c - layered configuration: defaults, file, environment. */
#include "imgq/config.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
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
    if (!name)
        return;
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

int imgq_config_parse_bytes(const char *s, long long *out)
{
    const char *p = s;
    long long v = 0;
    if (!s || *p < '0' || *p > '9')
        return IMGQ_EINVAL;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > ((1LL << 62) - 9) / 10)
            return IMGQ_ERANGE;
        v = v * 10 + (*p - '0');
    }
    int shift = 0;
    switch (toupper((unsigned char)*p)) {
    case 'K':
        shift = 10;
        break;
    case 'M':
        shift = 20;
        break;
    case 'G':
        shift = 30;
        break;
    case 'T':
        shift = 40;
        break;
    case '\0':
        break;
    default:
        return IMGQ_EINVAL;
    }
    if (shift) {
        p++;
        if (*p == 'i')
            p++;
        if (*p == 'B' || *p == 'b')
            p++;
    }
    if (*p)
        return IMGQ_EINVAL;
    if (v > (1LL << 62) >> shift)
        return IMGQ_ERANGE;
    *out = v << shift;
    return 0;
}

/* A size from the file: a number of bytes, or a string imgq_config_parse_bytes reads. */
static int file_bytes(json_t *o, const char *key, long long *field, const char *path, char *err,
                      size_t errlen)
{
    json_t *v = json_object_get(o, key);
    if (!v)
        return 0;
    long long n = -1;
    if (json_is_integer(v) && json_integer_value(v) >= 0)
        n = (long long)json_integer_value(v);
    else if (json_is_string(v) && imgq_config_parse_bytes(json_string_value(v), &n) != 0)
        n = -1;
    if (n < 0) {
        snprintf(err, errlen, "%s: 'worker.%s' must be a size in bytes (a number, or \"10G\")",
                 path, key);
        return IMGQ_EINVAL;
    }
    *field = n;
    return 0;
}

/* A size from the environment. */
static int env_bytes(const char *name, long long *field, char *err, size_t errlen)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return 0;
    if (imgq_config_parse_bytes(v, field) != 0) {
        snprintf(err, errlen, "%s '%s': expected a size in bytes (a number, or 10G, 512M)", name,
                 v);
        return IMGQ_EINVAL;
    }
    return 0;
}

/* Every wire shape's default endpoint and the environment variables its users know. */
static const struct {
    const char *api, *section, *base_url, *url_env, *key_env, *key_env2;
} api_defaults[IMGQ_CONFIG_APIS] = {
    {"openai-images", "openai", "https://api.openai.com/v1", "OPENAI_BASE_URL", "OPENAI_API_KEY",
     NULL},
    {"gemini-generate-content", "gemini", "https://generativelanguage.googleapis.com/v1beta",
     "GEMINI_BASE_URL", "GEMINI_API_KEY", "GOOGLE_API_KEY"},
    {"seedream", "ark", "https://ark.ap-southeast.bytepluses.com/api/v3", "ARK_BASE_URL",
     "ARK_API_KEY", NULL},
    {"dashscope", "dashscope", "https://dashscope-intl.aliyuncs.com", "DASHSCOPE_BASE_URL",
     "DASHSCOPE_API_KEY", NULL},
    {"replicate", "replicate", "https://api.replicate.com/v1", "REPLICATE_BASE_URL",
     "REPLICATE_API_TOKEN", NULL},
    {"fal", "fal", "https://queue.fal.run", "FAL_BASE_URL", "FAL_KEY", NULL},
    {"bfl", "bfl", "https://api.bfl.ai/v1", "BFL_BASE_URL", "BFL_API_KEY", NULL},
};

int imgq_config_endpoint(const struct imgq_config *c, const char *api, const char *route,
                         const char **base_url, const char **api_key)
{
    if (route && strcmp(api, "openai-images") == 0)
        for (size_t i = 0; i < c->ngateways; i++)
            if (strcmp(c->gateways[i].route, route) == 0) {
                *base_url = c->gateways[i].base_url;
                *api_key = c->gateways[i].api_key;
                return 0;
            }
    for (int i = 0; i < IMGQ_CONFIG_APIS; i++)
        if (strcmp(c->apis[i].api, api) == 0) {
            *base_url = c->apis[i].base_url;
            *api_key = c->apis[i].api_key;
            return 0;
        }
    return IMGQ_ENOTFOUND;
}

/* "webhooks": {"endpoints": [{"url_prefix": URL, "secret_env": NAME}, ...]}: where the
 * secrets of an endpoint are found (never the secrets themselves). */
static int load_webhooks(struct imgq_config *c, json_t *wh, const char *path, char *err,
                         size_t errlen)
{
    if (!wh)
        return 0;
    json_t *eps = json_object_get(wh, "endpoints");
    if (!json_is_object(wh) || (eps && !json_is_array(eps))) {
        snprintf(err, errlen,
                 "%s: 'webhooks' must be {\"endpoints\": [{\"url_prefix\": URL, "
                 "\"secret_env\": NAME}]}",
                 path);
        return IMGQ_EINVAL;
    }
    if (json_object_get(wh, "secret")) {
        snprintf(err, errlen,
                 "%s: webhooks.secret: secrets do not belong in a config file; set "
                 "IMGQ_WEBHOOK_SECRET in the environment",
                 path);
        return IMGQ_EINVAL;
    }
    size_t i;
    json_t *ep;
    json_array_foreach(eps, i, ep)
    {
        const char *prefix = json_string_value(json_object_get(ep, "url_prefix"));
        const char *env = json_string_value(json_object_get(ep, "secret_env"));
        size_t envlen = env ? strlen(env) : 0;
        if (json_object_get(ep, "secret")) {
            snprintf(err, errlen,
                     "%s: webhooks.endpoints[%zu].secret: secrets do not belong in a config file; "
                     "name the environment variable that holds them (\"secret_env\")",
                     path, i);
            return IMGQ_EINVAL;
        }
        if (!prefix ||
            (strncmp(prefix, "https://", 8) != 0 && strncmp(prefix, "http://", 7) != 0)) {
            snprintf(err, errlen, "%s: webhooks.endpoints[%zu].url_prefix must be an http(s) URL",
                     path, i);
            return IMGQ_EINVAL;
        }
        if (!envlen || strspn(env, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                   "0123456789_") != envlen) {
            snprintf(err, errlen,
                     "%s: webhooks.endpoints[%zu].secret_env must name an environment variable",
                     path, i);
            return IMGQ_EINVAL;
        }
        c->webhook_endpoints = imgq_xrealloc(
            c->webhook_endpoints, (c->nwebhook_endpoints + 1) * sizeof *c->webhook_endpoints);
        struct imgq_config_webhook_endpoint *e = &c->webhook_endpoints[c->nwebhook_endpoints++];
        e->url_prefix = imgq_xstrdup(prefix);
        e->secret_env = imgq_xstrdup(env);
        e->secrets = NULL;
    }
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
    json_t *s3 = json_object_get(root, "s3"), *worker = json_object_get(root, "worker");
    json_t *gateways = json_object_get(root, "gateways");
    for (const char **s = secrets; *s; s++) {
        bool found = json_object_get(s3, *s) != NULL;
        for (int i = 0; i < IMGQ_CONFIG_APIS; i++)
            found |= json_object_get(json_object_get(root, c->apis[i].section), *s) != NULL;
        const char *route;
        json_t *g;
        json_object_foreach(gateways, route, g) found |= json_object_get(g, *s) != NULL;
        if (found) {
            snprintf(err, errlen,
                     "%s: '%s' does not belong in a config file; set it in the environment "
                     "(OPENAI_API_KEY, IMGQ_GATEWAY_<ROUTE>_API_KEY, AWS_SECRET_ACCESS_KEY...)",
                     path, *s);
            r = IMGQ_EINVAL;
            goto out;
        }
    }
    for (int i = 0; i < IMGQ_CONFIG_APIS; i++)
        if ((r = file_str(json_object_get(root, c->apis[i].section), "base_url",
                          &c->apis[i].base_url, path, err, errlen)))
            goto out;
    if (gateways && !json_is_object(gateways)) {
        snprintf(err, errlen, "%s: 'gateways' must be an object of route: {\"base_url\": URL}",
                 path);
        r = IMGQ_EINVAL;
        goto out;
    }
    const char *route;
    json_t *g;
    json_object_foreach(gateways, route, g)
    {
        json_t *url = json_object_get(g, "base_url");
        if (!json_is_string(url) || strncmp(json_string_value(url), "http", 4) != 0) {
            snprintf(err, errlen, "%s: gateways.%s.base_url must be an http(s) URL", path, route);
            r = IMGQ_EINVAL;
            goto out;
        }
        c->gateways = imgq_xrealloc(c->gateways, (c->ngateways + 1) * sizeof *c->gateways);
        struct imgq_config_gateway *gw = &c->gateways[c->ngateways++];
        gw->route = imgq_xstrdup(route);
        gw->base_url = imgq_xstrdup(json_string_value(url));
        gw->api_key = NULL;
    }
    if ((r = file_str(root, "redis_url", &c->redis_url, path, err, errlen)) ||
        (r = file_str(root, "prefix", &c->prefix, path, err, errlen)) ||
        (r = file_str(root, "queue", &c->queue, path, err, errlen)) ||
        (r = file_str(root, "catalog", &c->catalog, path, err, errlen)) ||
        (r = file_str(root, "ssrf_allow", &c->ssrf_allow, path, err, errlen)) ||
        (r = file_str(s3, "endpoint", &c->s3_endpoint, path, err, errlen)) ||
        (r = file_str(s3, "region", &c->s3_region, path, err, errlen)) ||
        (r = file_str(s3, "bucket", &c->s3_bucket, path, err, errlen)) ||
        (r = file_str(s3, "key_prefix", &c->s3_key_prefix, path, err, errlen)) ||
        (r = file_str(s3, "reference_buckets", &c->s3_reference_buckets, path, err, errlen)) ||
        (r = file_int(worker, "concurrency", 1, &c->concurrency, path, err, errlen)) ||
        (r = file_int(worker, "lease_seconds", 1000, &c->lease_ms, path, err, errlen)) ||
        (r = file_int(worker, "grace_seconds", 1000, &c->grace_ms, path, err, errlen)) ||
        (r = file_str(worker, "spool_dir", &c->spool_dir, path, err, errlen)) ||
        (r = file_bytes(worker, "spool_max_bytes", &c->spool_max_bytes, path, err, errlen)) ||
        (r = file_bytes(worker, "spool_memory_bytes", &c->spool_memory_bytes, path, err, errlen)) ||
        (r = file_int(worker, "store_timeout_seconds", 1000, &c->store_timeout_ms, path, err,
                      errlen)) ||
        (r = load_webhooks(c, json_object_get(root, "webhooks"), path, err, errlen)))
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
    for (int i = 0; i < IMGQ_CONFIG_APIS; i++) {
        c->apis[i].api = api_defaults[i].api;
        c->apis[i].section = api_defaults[i].section;
        c->apis[i].base_url = imgq_xstrdup(api_defaults[i].base_url);
    }
    c->s3_key_prefix = imgq_xstrdup("");
    c->concurrency = 256;
    c->lease_ms = 30000;
    c->grace_ms = 30000;
    c->spool_max_bytes = -1;
    c->spool_memory_bytes = -1;
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
    for (int i = 0; i < IMGQ_CONFIG_APIS; i++) {
        from_env(&c->apis[i].base_url, api_defaults[i].url_env);
        from_env(&c->apis[i].api_key, api_defaults[i].key_env2);
        from_env(&c->apis[i].api_key, api_defaults[i].key_env); /* wins over the other name */
    }
    for (size_t i = 0; i < c->ngateways; i++) {
        char name[160];
        int k = snprintf(name, sizeof name, "IMGQ_GATEWAY_");
        for (const char *p = c->gateways[i].route; *p && k < (int)sizeof name - 9; p++)
            name[k++] = isalnum((unsigned char)*p) ? (char)toupper((unsigned char)*p) : '_';
        snprintf(name + k, sizeof name - (size_t)k, "_API_KEY");
        from_env(&c->gateways[i].api_key, name);
    }
    from_env(&c->s3_bucket, "IMGQ_S3_BUCKET");
    from_env(&c->s3_key_prefix, "IMGQ_S3_KEY_PREFIX");
    from_env(&c->s3_reference_buckets, "IMGQ_S3_REFERENCE_BUCKETS");
    from_env(&c->ssrf_allow, "IMGQ_SSRF_ALLOW");
    from_env(&c->webhook_secret, "IMGQ_WEBHOOK_SECRET");
    from_env(&c->spool_dir, "IMGQ_SPOOL_DIR");
    int rb = env_bytes("IMGQ_SPOOL_MAX_BYTES", &c->spool_max_bytes, err, errlen);
    if (rb == 0)
        rb = env_bytes("IMGQ_SPOOL_MEMORY_BYTES", &c->spool_memory_bytes, err, errlen);
    if (rb) {
        imgq_config_clear(c);
        return rb;
    }
    for (size_t i = 0; i < c->nwebhook_endpoints; i++)
        from_env(&c->webhook_endpoints[i].secrets, c->webhook_endpoints[i].secret_env);
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
    for (int i = 0; i < IMGQ_CONFIG_APIS; i++) {
        free(c->apis[i].base_url);
        free(c->apis[i].api_key);
    }
    for (size_t i = 0; i < c->ngateways; i++) {
        free(c->gateways[i].route);
        free(c->gateways[i].base_url);
        free(c->gateways[i].api_key);
    }
    free(c->gateways);
    free(c->s3_endpoint);
    free(c->s3_region);
    free(c->s3_bucket);
    free(c->s3_key_prefix);
    free(c->s3_reference_buckets);
    free(c->ssrf_allow);
    free(c->webhook_secret);
    free(c->spool_dir);
    for (size_t i = 0; i < c->nwebhook_endpoints; i++) {
        free(c->webhook_endpoints[i].url_prefix);
        free(c->webhook_endpoints[i].secret_env);
        free(c->webhook_endpoints[i].secrets);
    }
    free(c->webhook_endpoints);
    memset(c, 0, sizeof *c);
}

char **imgq_config_split(const char *list, size_t *n)
{
    char **out = NULL;
    *n = 0;
    for (const char *p = list; p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        while (len && *p == ' ') {
            p++;
            len--;
        }
        while (len && p[len - 1] == ' ')
            len--;
        if (len) {
            out = imgq_xrealloc(out, (*n + 1) * sizeof *out);
            out[(*n)++] = imgq_xstrndup(p, len);
        }
        p = end ? end + 1 : NULL;
    }
    return out;
}

void imgq_config_split_free(char **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(list[i]);
    free(list);
}
