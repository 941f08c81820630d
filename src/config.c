/* config.c - layered configuration: defaults, file, environment. */
#include "imgq/config.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <uv.h>

#include "imgq/alloc.h"
#include "imgq/log.h"

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
    size_t i;
    json_t *ep;
    json_array_foreach(eps, i, ep)
    {
        const char *prefix = json_string_value(json_object_get(ep, "url_prefix"));
        const char *env = json_string_value(json_object_get(ep, "secret_env"));
        size_t envlen = env ? strlen(env) : 0;
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

/*
 * Every setting with a key in the file: where it is in the file, what it is, where it lives in
 * struct imgq_config, and the environment variables that beat the file (the first one set
 * wins).  resolve() is the one place a setting gets its value: the default already in *c, then
 * the file, then the environment; the programs' flags come last (imgq_config_set).
 */
enum kind { STR, INT, SECONDS_MS, BYTES };
struct setting {
    const char *section, *key; /* section NULL: a top-level key */
    enum kind kind;
    size_t off;
    const char *env[2];
};
#define AT(f) offsetof(struct imgq_config, f)
static const struct setting settings[] = {
    {NULL, "redis_url", STR, AT(redis_url), {"IMGQ_REDIS_URL"}},
    {NULL, "prefix", STR, AT(prefix), {"IMGQ_PREFIX"}},
    {NULL, "queue", STR, AT(queue), {"IMGQ_QUEUE"}},
    {NULL, "catalog", STR, AT(catalog), {"IMGQ_CATALOG"}},
    {NULL, "ssrf_allow", STR, AT(ssrf_allow), {"IMGQ_SSRF_ALLOW"}},
    /* the endpoint's variables are ignored under AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true */
    {"s3", "endpoint", STR, AT(s3_endpoint), {"AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"}},
    {"s3", "region", STR, AT(s3_region), {"AWS_REGION", "AWS_DEFAULT_REGION"}},
    {"s3", "bucket", STR, AT(s3_bucket), {"IMGQ_S3_BUCKET"}},
    {"s3", "key_prefix", STR, AT(s3_key_prefix), {"IMGQ_S3_KEY_PREFIX"}},
    {"s3", "reference_buckets", STR, AT(s3_reference_buckets), {"IMGQ_S3_REFERENCE_BUCKETS"}},
    {"worker", "concurrency", INT, AT(concurrency), {NULL}},
    {"worker", "lease_seconds", SECONDS_MS, AT(lease_ms), {NULL}},
    {"worker", "grace_seconds", SECONDS_MS, AT(grace_ms), {NULL}},
    {"worker", "spool_dir", STR, AT(spool_dir), {"IMGQ_SPOOL_DIR"}},
    {"worker", "spool_max_bytes", BYTES, AT(spool_max_bytes), {"IMGQ_SPOOL_MAX_BYTES"}},
    {"worker", "spool_memory_bytes", BYTES, AT(spool_memory_bytes), {"IMGQ_SPOOL_MEMORY_BYTES"}},
    {"worker", "store_timeout_seconds", SECONDS_MS, AT(store_timeout_ms), {NULL}},
};
#define NSETTINGS (sizeof settings / sizeof settings[0])
/* Top-level objects besides the providers' sections: read here or by the worker (rate_limits,
 * workers/limits.c). */
static const char *const sections[] = {"s3", "worker", "gateways", "webhooks", "rate_limits"};

/* The setting's value from the file (o: its section, or the root), then the environment. */
static int resolve(const struct setting *s, void *field, json_t *o, const char *path, char *err,
                   size_t errlen)
{
    char name[128];
    snprintf(name, sizeof name, "%s%s%s", s->section ? s->section : "", s->section ? "." : "",
             s->key);
    json_t *v = json_object_get(o, s->key);
    if (v) {
        json_int_t n = json_is_integer(v) ? json_integer_value(v) : -1;
        long long bytes = -1;
        switch (s->kind) {
        case STR:
            if (!json_is_string(v)) {
                snprintf(err, errlen, "%s: '%s' must be a string", path, name);
                return IMGQ_EINVAL;
            }
            imgq_config_set(field, json_string_value(v));
            break;
        case INT:
        case SECONDS_MS: {
            int scale = s->kind == SECONDS_MS ? 1000 : 1;
            if (n < 1 || n > 10000000 / scale) {
                snprintf(err, errlen, "%s: '%s' must be a positive integer", path, name);
                return IMGQ_EINVAL;
            }
            *(int *)field = (int)n * scale;
            break;
        }
        case BYTES:
            if (n >= 0)
                bytes = (long long)n;
            else if (json_is_string(v) &&
                     imgq_config_parse_bytes(json_string_value(v), &bytes) != 0)
                bytes = -1;
            if (bytes < 0) {
                snprintf(err, errlen, "%s: '%s' must be a size in bytes (a number, or \"10G\")",
                         path, name);
                return IMGQ_EINVAL;
            }
            *(long long *)field = bytes;
            break;
        }
    }
    const char *ignore = getenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS");
    if (s->off == AT(s3_endpoint) && ignore && strcasecmp(ignore, "true") == 0)
        return 0;
    for (int i = 0; i < 2 && s->env[i]; i++) {
        const char *e = getenv(s->env[i]);
        if (!e || !*e)
            continue;
        if (s->kind == STR) {
            imgq_config_set(field, e);
        } else if (s->kind == BYTES) {
            if (imgq_config_parse_bytes(e, field) != 0) {
                snprintf(err, errlen, "%s '%s': expected a size in bytes (a number, or 10G, 512M)",
                         s->env[i], e);
                return IMGQ_EINVAL;
            }
        }
        break;
    }
    return 0;
}

/* Edit distance, for "did you mean". */
static size_t distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), row[128];
    if (lb >= 128)
        return (size_t)-1;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* Whether a key names a secret (API keys, passwords, tokens, S3 credentials). */
static bool looks_secret(const char *key)
{
    static const char *const words[] = {"secret",     "password",    "passwd",
                                        "api_key",    "apikey",      "token",
                                        "access_key", "private_key", "credential"};
    char low[128];
    size_t n = 0;
    for (; key[n] && n < sizeof low - 1; n++)
        low[n] = (char)tolower((unsigned char)key[n]);
    low[n] = '\0';
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (strstr(low, words[i]))
            return true;
    return false;
}

/* The 'env' of check_keys for the s3 section: the AWS variable that matches the key. */
static const char s3_credentials[] = "AWS_ACCESS_KEY_ID or AWS_SECRET_ACCESS_KEY";

/*
 * Check the keys of object o (at 'where': "" for the root, else "s3." and the like) against
 * 'known': a secret is refused, pointing at 'env' (the variable that holds it instead), any
 * other unknown key is an error naming the nearest known one.
 */
static int check_keys(json_t *o, const char *where, const char *const *known, size_t nknown,
                      const char *env, const char *path, char *err, size_t errlen)
{
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v)
    {
        size_t j = 0;
        while (j < nknown && strcmp(k, known[j]) != 0)
            j++;
        if (j < nknown)
            continue;
        if (looks_secret(k)) {
            if (env == s3_credentials) {
                char low[64];
                size_t n = 0;
                for (; k[n] && n < sizeof low - 1; n++)
                    low[n] = (char)tolower((unsigned char)k[n]);
                low[n] = '\0';
                env = strstr(low, "secret")  ? "AWS_SECRET_ACCESS_KEY"
                      : strstr(low, "token") ? "AWS_SESSION_TOKEN"
                                             : "AWS_ACCESS_KEY_ID";
            }
            snprintf(err, errlen,
                     "%s: '%s' does not belong in a config file (%s%s: secrets come only from "
                     "the environment, so that config files can be shared): set %s instead",
                     path, k, where, k, env);
            return IMGQ_EINVAL;
        }
        size_t best = 0, bestd = (size_t)-1;
        for (j = 0; j < nknown; j++) {
            size_t same = 0; /* a beginning of a known key is near it; ties: the longer beginning */
            while (k[same] && k[same] == known[j][same])
                same++;
            size_t d = !k[same] || !known[j][same] ? 1 : distance(k, known[j]);
            d = d * 128 - (same < 128 ? same : 127);
            if (d < bestd) {
                bestd = d;
                best = j;
            }
        }
        if (nknown)
            snprintf(err, errlen, "unknown key '%s%s' in %s (did you mean '%s%s'?)", where, k, path,
                     where, known[best]);
        else
            snprintf(err, errlen, "unknown key '%s%s' in %s", where, k, path);
        return IMGQ_EINVAL;
    }
    return 0;
}

/* The keys of the file's section 'section' (NULL: the root) that settings[] knows. */
static size_t section_keys(const char *section, const char **out)
{
    size_t n = 0;
    for (size_t i = 0; i < NSETTINGS; i++)
        if (section ? settings[i].section && strcmp(settings[i].section, section) == 0
                    : !settings[i].section)
            out[n++] = settings[i].key;
    return n;
}

/* Every key of the file known, every section an object, no secret anywhere. */
static int check_file(const struct imgq_config *c, json_t *root, const char *path, char *err,
                      size_t errlen)
{
    const char *known[NSETTINGS + IMGQ_CONFIG_APIS + 8];
    if (!json_is_object(root)) {
        snprintf(err, errlen, "%s: expected a JSON object", path);
        return IMGQ_EINVAL;
    }
    size_t n = section_keys(NULL, known);
    for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++)
        known[n++] = sections[i];
    for (int i = 0; i < IMGQ_CONFIG_APIS; i++)
        known[n++] = c->apis[i].section;
    int r = check_keys(root, "", known, n,
                       "IMGQ_REDIS_URL (redis://user:password@host:port/db) or the variable "
                       "of the service it is for",
                       path, err, errlen);
    /* A password inside the Redis URL is a secret too. */
    const char *url = json_string_value(json_object_get(root, "redis_url"));
    const char *at = url ? strchr(url, '@') : NULL, *scheme = url ? strstr(url, "://") : NULL;
    if (!r && at && scheme && memchr(scheme + 3, ':', (size_t)(at - scheme - 3))) {
        snprintf(err, errlen,
                 "%s: 'redis_url' holds a password, which does not belong in a config file: "
                 "set IMGQ_REDIS_URL instead",
                 path);
        r = IMGQ_EINVAL;
    }
    for (size_t i = 0; !r && i < sizeof sections / sizeof sections[0] + IMGQ_CONFIG_APIS; i++) {
        bool api = i >= sizeof sections / sizeof sections[0];
        int ai = api ? (int)(i - sizeof sections / sizeof sections[0]) : 0;
        const char *name = api ? c->apis[ai].section : sections[i];
        json_t *o = json_object_get(root, name);
        if (!o)
            continue;
        if (!json_is_object(o)) {
            snprintf(err, errlen, "%s: '%s' must be an object", path, name);
            return IMGQ_EINVAL;
        }
        char where[64];
        snprintf(where, sizeof where, "%s.", name);
        if (api) {
            const char *base[] = {"base_url"};
            r = check_keys(o, where, base, 1, api_defaults[ai].key_env, path, err, errlen);
        } else if (strcmp(name, "s3") == 0) {
            size_t k = section_keys(name, known);
            r = check_keys(o, where, known, k, s3_credentials, path, err, errlen);
        } else if (strcmp(name, "worker") == 0) {
            size_t k = section_keys(name, known);
            r = check_keys(o, where, known, k, "an environment variable", path, err, errlen);
        } else if (strcmp(name, "gateways") == 0) {
            const char *route, *base[] = {"base_url"};
            json_t *g;
            json_object_foreach(o, route, g)
            {
                char w[192], env[192];
                snprintf(w, sizeof w, "gateways.%s.", route);
                int k = snprintf(env, sizeof env, "IMGQ_GATEWAY_");
                for (const char *p = route; *p && k < (int)sizeof env - 9; p++)
                    env[k++] = isalnum((unsigned char)*p) ? (char)toupper((unsigned char)*p) : '_';
                snprintf(env + k, sizeof env - (size_t)k, "_API_KEY");
                if (json_is_object(g) &&
                    (r = check_keys(g, w, base, 1, env, path, err, errlen)) != 0)
                    break;
            }
        } else if (strcmp(name, "webhooks") == 0) {
            const char *eps[] = {"endpoints"}, *ep_keys[] = {"url_prefix", "secret_env"};
            r = check_keys(o, where, eps, 1, "IMGQ_WEBHOOK_SECRET", path, err, errlen);
            size_t j;
            json_t *ep;
            json_array_foreach(json_object_get(o, "endpoints"), j, ep)
            {
                char w[64];
                snprintf(w, sizeof w, "webhooks.endpoints[%zu].", j);
                if (!r && json_is_object(ep))
                    r = check_keys(ep, w, ep_keys, 2, "the variable that \"secret_env\" names",
                                   path, err, errlen);
            }
        }
        /* rate_limits: provider names, checked by the worker (workers/limits.c) */
    }
    return r;
}

/* The file checked, its gateways and webhook endpoints read; *rootp: the document. */
static int load_file(struct imgq_config *c, const char *path, json_t **rootp, char *err,
                     size_t errlen)
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
    int r = check_file(c, root, path, err, errlen);
    if (r)
        goto out;
    json_t *gateways = json_object_get(root, "gateways");
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
    r = load_webhooks(c, json_object_get(root, "webhooks"), path, err, errlen);
out:
    if (r)
        json_decref(root);
    else
        *rootp = root;
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
    json_t *root = NULL;
    int r = 0;
    if (file && *file)
        r = load_file(c, file, &root, err, errlen);
    /* Every setting: the file, then the environment (resolve). */
    for (size_t i = 0; !r && i < NSETTINGS; i++)
        r = resolve(&settings[i], (char *)c + settings[i].off,
                    settings[i].section ? json_object_get(root, settings[i].section) : root, file,
                    err, errlen);
    for (int i = 0; !r && i < IMGQ_CONFIG_APIS; i++) {
        const struct setting s = {
            api_defaults[i].section, "base_url", STR, 0, {api_defaults[i].url_env}};
        r = resolve(&s, &c->apis[i].base_url, json_object_get(root, s.section), file, err, errlen);
    }
    json_decref(root);
    const char *level = getenv("IMGQ_LOG_LEVEL");
    if (!r && level && *level && imgq_log_level_parse(level) < 0) {
        snprintf(err, errlen, "IMGQ_LOG_LEVEL '%s': expected error, warn, info or debug", level);
        r = IMGQ_EINVAL;
    }
    if (r) {
        imgq_config_clear(c);
        return r;
    }
    /* Secrets: only the environment. */
    for (int i = 0; i < IMGQ_CONFIG_APIS; i++) {
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
    from_env(&c->webhook_secret, "IMGQ_WEBHOOK_SECRET");
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
