/*
 * job.c - parsing and validating jobs, and their stored form.
 */
#include "imgq/job.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "imgq/alloc.h"
#include "imgq/provider.h"
#include "imgq/router.h"

#define METADATA_MAX 16384
#define WEBHOOK_MAX 2048
#define REF_URL_MAX 2048
/* data: URIs live in the spec, which lives in Redis: a job carries at most this many decoded
 * bytes inline, references and mask together; larger images go by s3:// or https://. */
#define INLINE_MAX (4 * 1024 * 1024)

static const char *const known_fields[] = {"id",
                                           "prompt",
                                           "model",
                                           "n",
                                           "size",
                                           "quality",
                                           "output_format",
                                           "output_compression",
                                           "background",
                                           "moderation",
                                           "user",
                                           "route",
                                           "team",
                                           "webhook",
                                           "priority",
                                           "metadata",
                                           "use_case",
                                           "needs",
                                           "max_cost_usd",
                                           "max_attempts",
                                           "max_generations",
                                           "max_rate_limit_waits",
                                           "dedup",
                                           "seed",
                                           "negative_prompt",
                                           "guidance_scale",
                                           "images",
                                           "mask",
                                           "pipeline",
                                           NULL};

int imgq_provider_api_supported(const char *api)
{
    return imgq_provider_ops_find(api) != NULL;
}

static int problem(struct imgq_job_problem *why, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int problem(struct imgq_job_problem *why, const char *field, const char *fmt, ...)
{
    snprintf(why->field, sizeof why->field, "%s", field);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why->reason, sizeof why->reason, fmt, ap);
    va_end(ap);
    return IMGQ_EINVAL;
}

/* Characters, not bytes: providers count the prompt limit in characters. */
static size_t utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            n++;
    return n;
}

static void list_join(char **list, char *buf, size_t len)
{
    size_t o = 0;
    buf[0] = '\0';
    for (char **p = list; p && *p && o < len; p++)
        o += (size_t)snprintf(buf + o, len - o, "%s%s", p == list ? "" : ", ", *p);
}

/* An optional string field; IMGQ_EINVAL if present but not a string. */
static int opt_string(json_t *o, const char *key, char **out, struct imgq_job_problem *why)
{
    json_t *v = json_object_get(o, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return problem(why, key, "must be a string");
    *out = imgq_xstrdup(json_string_value(v));
    return 0;
}

static int one_of(const char *field, const char *v, const char *const *allowed,
                  struct imgq_job_problem *why)
{
    char list[256] = "";
    size_t o = 0;
    for (const char *const *a = allowed; *a; a++) {
        if (strcmp(v, *a) == 0)
            return 0;
        o += (size_t)snprintf(list + o, sizeof list - o, "%s%s", a == allowed ? "" : ", ", *a);
    }
    return problem(why, field, "'%s' is not one of: %s", v, list);
}

static int valid_name(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '_' || *s == '.' || *s == ':' || *s == '/'))
            return 0;
    return 1;
}

static int today_after(time_t today, const char *date)
{
    char buf[16];
    struct tm tm;
    gmtime_r(&today, &tm);
    strftime(buf, sizeof buf, "%Y-%m-%d", &tm);
    return strcmp(buf, date) >= 0;
}

static int is_b64(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

/* The decoded length of standard base64 text (padding optional), or -1 if it is not base64. */
static long long b64_decoded_len(const char *t)
{
    size_t n = strlen(t), pad = 0;
    while (pad < 2 && n > 0 && t[n - 1] == '=') {
        n--;
        pad++;
    }
    for (size_t i = 0; i < n; i++)
        if (!is_b64(t[i]))
            return -1;
    if (n == 0 || n % 4 == 1 || (pad && (n + pad) % 4 != 0))
        return -1;
    return (long long)(n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0));
}

/* http:// is for tests against local servers only: 127.0.0.1, localhost, [::1]. */
static int local_http(const char *url)
{
    const char *a = url + 7;
    size_t alen = strcspn(a, "/?#");
    if (memchr(a, '@', alen))
        return 0;
    static const char *const hosts[] = {"127.0.0.1", "localhost", "[::1]", NULL};
    for (const char *const *h = hosts; *h; h++) {
        size_t hl = strlen(*h);
        if (alen >= hl && strncasecmp(a, *h, hl) == 0) {
            if (alen == hl)
                return 1;
            if (a[hl] != ':' || alen == hl + 1)
                return 0;
            for (size_t i = hl + 1; i < alen; i++)
                if (a[i] < '0' || a[i] > '9')
                    return 0;
            return 1;
        }
    }
    return 0;
}

/* One reference image or mask: s3://BUCKET/KEY, https://..., local http://..., or a
 * data:image/(png|jpeg|webp);base64,... URI whose decoded size is added to *inline_bytes. */
static int check_ref(const char *field, json_t *v, long long *inline_bytes,
                     struct imgq_job_problem *why)
{
    static const char forms[] =
        "must be s3://BUCKET/KEY, an https:// URL or a data:image/(png|jpeg|webp);base64, URI";
    if (!json_is_string(v))
        return problem(why, field, "%s", forms);
    const char *s = json_string_value(v);
    if (strncmp(s, "data:", 5) == 0) {
        static const char *const types[] = {"data:image/png;base64,", "data:image/jpeg;base64,",
                                            "data:image/webp;base64,", NULL};
        for (const char *const *t = types; *t; t++)
            if (strncmp(s, *t, strlen(*t)) == 0) {
                long long n = b64_decoded_len(s + strlen(*t));
                if (n < 0)
                    return problem(why, field, "the data: URI's base64 is empty or not valid");
                *inline_bytes += n;
                return 0;
            }
        return problem(why, field,
                       "a data: URI must be data:image/png, image/jpeg or image/webp;base64,...");
    }
    if (strlen(s) > REF_URL_MAX)
        return problem(why, field, "is longer than %d bytes", REF_URL_MAX);
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            return problem(why, field, "holds a space or control character");
    if (strncmp(s, "s3://", 5) == 0) {
        const char *b = s + 5, *slash = strchr(b, '/');
        size_t bl = slash ? (size_t)(slash - b) : 0;
        int ok = slash && bl >= 3 && bl <= 63 && slash[1] != '\0';
        for (size_t i = 0; ok && i < bl; i++)
            ok = (b[i] >= 'a' && b[i] <= 'z') || (b[i] >= '0' && b[i] <= '9') || b[i] == '.' ||
                 b[i] == '-';
        if (!ok)
            return problem(why, field, "'%s' is not s3://BUCKET/KEY", s);
        return 0;
    }
    if (strncmp(s, "https://", 8) == 0) {
        if (strcspn(s + 8, "/?#") == 0)
            return problem(why, field, "'%s' has no host", s);
        return 0;
    }
    if (strncmp(s, "http://", 7) == 0) {
        if (!local_http(s))
            return problem(why, field,
                           "http:// is only for 127.0.0.1, localhost and [::1]; use https://");
        return 0;
    }
    return problem(why, field, "%s", forms);
}

static int check_inline_cap(const char *field, long long bytes, struct imgq_job_problem *why)
{
    if (bytes <= INLINE_MAX)
        return 0;
    return problem(why, field,
                   "data: URIs hold %lld bytes decoded; a job carries at most %d bytes (4 MiB) "
                   "inline: use s3:// or https:// references",
                   bytes, INLINE_MAX);
}

/* "images" and "mask": forms, the model's capabilities and limits, the inline cap. */
static int parse_refs(json_t *o, const struct imgq_model *m, struct imgq_job_spec *s,
                      struct imgq_job_problem *why)
{
    json_t *images = json_object_get(o, "images");
    json_t *mask = json_object_get(o, "mask");
    long long inline_bytes = 0;
    if (json_is_null(images))
        images = NULL;
    if (json_is_null(mask))
        mask = NULL;
    if (images && !json_is_array(images))
        return problem(why, "images", "must be an array of image references");
    size_t n = json_array_size(images);
    if (n > 0) {
        if (!(m->capabilities & IMGQ_NEED_EDIT) || m->max_references < 1)
            return problem(why, "images", "model '%s' takes no reference images (it cannot edit)",
                           m->name);
        if (n > (size_t)m->max_references)
            return problem(why, "images", "model '%s' takes at most %d reference images (got %zu)",
                           m->name, m->max_references, n);
        for (size_t i = 0; i < n; i++) {
            char field[32];
            snprintf(field, sizeof field, "images[%zu]", i);
            int r = check_ref(field, json_array_get(images, i), &inline_bytes, why);
            if (r)
                return r;
        }
        int r = check_inline_cap("images", inline_bytes, why);
        if (r)
            return r;
    }
    if (mask) {
        if (n == 0)
            return problem(why, "mask", "needs images (the mask applies to the first one)");
        if (!(m->capabilities & IMGQ_NEED_MASK))
            return problem(why, "mask", "model '%s' takes no mask", m->name);
        int r = check_ref("mask", mask, &inline_bytes, why);
        if (!r)
            r = check_inline_cap("mask", inline_bytes, why);
        if (r)
            return r;
        s->mask = imgq_xstrdup(json_string_value(mask));
    }
    if (n > 0) {
        s->refs = imgq_xcalloc(n, sizeof *s->refs);
        for (size_t i = 0; i < n; i++)
            s->refs[i] = imgq_xstrdup(json_string_value(json_array_get(images, i)));
        s->nrefs = (int)n;
    }
    return 0;
}

/* "model": "auto": the router picks the model (and its quality and size), which then goes
 * through the same checks as a model named by hand.  The decision is kept on the job. */
static int route_request(const imgq_catalog *cat, json_t *o, const struct imgq_job_defaults *d,
                         struct imgq_route_request *out, struct imgq_job_problem *why)
{
    struct imgq_route_request rq = {0};
    rq.quality = json_string_value(json_object_get(o, "quality"));
    if (json_object_get(o, "quality") && !rq.quality)
        return problem(why, "quality", "must be a string");
    rq.use_case = json_string_value(json_object_get(o, "use_case"));
    if (json_object_get(o, "use_case") &&
        (!rq.use_case || !imgq_catalog_use_case(cat, rq.use_case)))
        return problem(why, "use_case", "is not a use case of the catalog's routing policy");
    json_t *needs = json_object_get(o, "needs");
    if (needs && !json_is_array(needs))
        return problem(why, "needs", "must be an array of " IMGQ_NEED_NAMES);
    size_t i;
    json_t *v;
    json_array_foreach(needs, i, v)
    {
        unsigned bit = imgq_need_parse(json_string_value(v));
        if (!bit)
            return problem(why, "needs", "'%s' is not one of " IMGQ_NEED_NAMES,
                           json_string_value(v) ? json_string_value(v) : "?");
        rq.needs |= bit;
    }
    if (json_object_get(o, "seed"))
        rq.needs |= IMGQ_NEED_SEED;
    if (json_object_get(o, "negative_prompt"))
        rq.needs |= IMGQ_NEED_NEGATIVE_PROMPT;
    json_t *gv = json_object_get(o, "guidance_scale");
    if (gv && !json_is_null(gv)) {
        rq.needs |= IMGQ_NEED_GUIDANCE;
        rq.has_guidance = json_is_number(gv);
        rq.guidance_scale = json_number_value(gv);
    }
    json_t *images = json_object_get(o, "images");
    if (json_is_array(images) && json_array_size(images) > 0) {
        rq.needs |= IMGQ_NEED_EDIT;
        rq.references = json_array_size(images) > 1000 ? 1000 : (int)json_array_size(images);
    }
    json_t *mask = json_object_get(o, "mask");
    if (mask && !json_is_null(mask))
        rq.needs |= IMGQ_NEED_MASK;
    if (json_is_string(json_object_get(o, "background")) &&
        strcmp(json_string_value(json_object_get(o, "background")), "transparent") == 0)
        rq.needs |= IMGQ_NEED_TRANSPARENT;
    rq.size = json_string_value(json_object_get(o, "size"));
    json_t *nv = json_object_get(o, "n");
    rq.n = json_is_integer(nv) ? (int)json_integer_value(nv) : 1;
    const char *p = json_string_value(json_object_get(o, "prompt"));
    rq.prompt_bytes = p ? strlen(p) : 1;
    rq.route = json_string_value(json_object_get(o, "route"));
    if (!rq.route && d)
        rq.route = d->route;
    json_t *cap = json_object_get(o, "max_cost_usd");
    if (cap) {
        char buf[64];
        if (json_is_string(cap))
            snprintf(buf, sizeof buf, "%s", json_string_value(cap));
        else if (json_is_number(cap))
            snprintf(buf, sizeof buf, "%.6f", json_number_value(cap));
        else
            buf[0] = '\0';
        if (imgq_money_parse(buf, &rq.max_cost) != 0 || rq.max_cost <= 0)
            return problem(why, "max_cost_usd", "must be a positive amount of dollars");
    }
    *out = rq;
    return 0;
}

int imgq_job_route(const imgq_catalog *cat, const char *text, size_t len,
                   const struct imgq_job_defaults *d, time_t today, struct imgq_route_result *out,
                   struct imgq_job_problem *why)
{
    memset(out, 0, sizeof *out);
    memset(why, 0, sizeof *why);
    json_error_t je;
    json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(o)) {
        json_decref(o);
        problem(why, "(json)", "a job must be a JSON object");
        return IMGQ_EPARSE;
    }
    struct imgq_route_request rq;
    int rc = route_request(cat, o, d, &rq, why);
    if (rc == 0) {
        rc = imgq_route(cat, &rq, d ? d->model_stats : NULL, d ? d->nmodel_stats : 0, today, out);
        if (rc == IMGQ_EINVAL)
            problem(why, "quality", "routing needs low, medium or high");
    }
    json_decref(o);
    return rc;
}

static int route_auto(const imgq_catalog *cat, json_t *o, const struct imgq_job_defaults *d,
                      time_t today, struct imgq_job_spec *s, struct imgq_job_problem *why)
{
    struct imgq_route_request rq;
    int r = route_request(cat, o, d, &rq, why);
    if (r)
        return r;
    struct imgq_route_result res;
    /* The quality string in rq points into o, which is changed below: route first. */
    int rc = imgq_route(cat, &rq, d ? d->model_stats : NULL, d ? d->nmodel_stats : 0, today, &res);
    if (rc == IMGQ_EINVAL) {
        imgq_route_result_clear(&res);
        return problem(why, "quality", "routing needs low, medium or high");
    }
    if (rc) {
        /* Say why the cheapest-looking candidates were left out. */
        char list[300] = "";
        size_t off = 0;
        for (size_t k = 0; k < res.ncandidates && k < 3 && off < sizeof list; k++)
            off += (size_t)snprintf(list + off, sizeof list - off, "%s%s: %s", k ? "; " : "",
                                    res.candidates[k].model->name, res.candidates[k].reason);
        imgq_route_result_clear(&res);
        return problem(why, "model", "no model can do this job (%s)", list);
    }
    const struct imgq_route_candidate *c = res.chosen;
    s->model = imgq_xstrdup(c->model->name);
    s->routed = imgq_xasprintf("auto: %s (%s)", c->model->name, c->reason);
    s->use_case = rq.use_case ? imgq_xstrdup(rq.use_case) : NULL;
    s->max_cost = rq.max_cost;
    if (c->quality) {
        json_object_set_new(o, "quality", json_string(c->quality));
    } else {
        json_object_del(o, "quality");
    }
    json_object_set_new(o, "size", json_string(c->size));
    imgq_route_result_clear(&res);
    return 0;
}

static int validate(const imgq_catalog *cat, json_t *o, const struct imgq_job_defaults *d,
                    time_t today, struct imgq_job_spec *s, struct imgq_job_problem *why, char *warn,
                    size_t warnlen)
{
    const char *key;
    json_t *val;
    json_object_foreach(o, key, val)
    {
        int known = 0;
        for (const char *const *k = known_fields; *k && !known; k++)
            known = strcmp(*k, key) == 0;
        if (!known)
            return problem(why, key,
                           "unknown field (a typo? imgq takes the OpenAI Images "
                           "request fields plus id, priority, team, route, "
                           "metadata, webhook, max_attempts)");
    }
    int r;
    if ((r = opt_string(o, "id", &s->id, why)))
        return r;
    if (s->id && (!*s->id || strlen(s->id) > IMGQ_JOB_ID_MAX || strpbrk(s->id, "\r\n\t")))
        return problem(why, "id", "must be 1 to %d characters without control characters",
                       IMGQ_JOB_ID_MAX);

    /* prompt */
    json_t *p = json_object_get(o, "prompt");
    if (!p)
        return problem(why, "prompt", "is required");
    if (!json_is_string(p))
        return problem(why, "prompt", "must be a string");
    const char *ps = json_string_value(p);
    if (ps[strspn(ps, " \t\r\n")] == '\0')
        return problem(why, "prompt", "is empty");
    s->prompt = imgq_xstrdup(ps);

    /* model */
    json_t *mv = json_object_get(o, "model");
    if (!mv)
        return problem(why, "model", "is required");
    if (!json_is_string(mv))
        return problem(why, "model", "must be a string");
    const char *mname = json_string_value(mv);
    if (strcmp(mname, "auto") == 0) {
        if ((r = route_auto(cat, o, d, today, s, why)))
            return r;
        mname = s->model;
    } else if (json_object_get(o, "use_case") || json_object_get(o, "needs") ||
               json_object_get(o, "max_cost_usd")) {
        return problem(why, "model",
                       "use_case, needs and max_cost_usd go with \"model\": "
                       "\"auto\"");
    }
    const struct imgq_model *m = imgq_catalog_model(cat, mname);
    if (!m)
        return problem(why, "model", "'%s' is not in the catalog (version %s)", mname,
                       imgq_catalog_version(cat));
    if (s->model != mname) {
        free(s->model);
        s->model = imgq_xstrdup(m->name);
    }
    if (strcmp(m->name, mname) != 0)
        s->alias = imgq_xstrdup(mname);
    if (m->shutdown && today_after(today, m->shutdown))
        return problem(why, "model", "'%s' was shut down on %s%s%s%s", m->name, m->shutdown,
                       m->successor ? "; use '" : "", m->successor ? m->successor : "",
                       m->successor ? "' instead" : "");
    if (!imgq_provider_api_supported(m->api))
        return problem(why, "model",
                       "'%s' is served by the %s API, which this imgq build cannot call yet",
                       m->name, m->api);
    if (warn && warnlen) {
        warn[0] = '\0';
        if (m->deprecated && today_after(today, m->deprecated))
            snprintf(warn, warnlen, "model '%s' is deprecated since %s%s%s%s", m->name,
                     m->deprecated, m->shutdown ? " and shuts down on " : "",
                     m->shutdown ? m->shutdown : "",
                     m->successor ? "; plan a move to its successor" : "");
    }

    /* n */
    json_t *nv = json_object_get(o, "n");
    s->n = 1;
    if (nv && !json_is_null(nv)) {
        if (!json_is_integer(nv))
            return problem(why, "n", "must be an integer");
        json_int_t n = json_integer_value(nv);
        if (n < 1 || n > m->n_max)
            return problem(why, "n", "%lld is out of range for model '%s' (1 to %d)", (long long)n,
                           m->name, m->n_max);
        s->n = (int)n;
    }

    /* size */
    char allowed[512];
    if ((r = opt_string(o, "size", &s->size, why)))
        return r;
    if (!s->size)
        s->size = imgq_xstrdup(m->sizes[0]);
    if (!imgq_model_allows_size(m, s->size)) {
        int w, h;
        list_join(m->sizes, allowed, sizeof allowed);
        if (m->size_rule && imgq_size_parse(s->size, &w, &h) == 0) {
            char reason[sizeof why->reason];
            (void)imgq_model_check_size(m, w, h, reason, sizeof reason);
            return problem(why, "size", "%s", reason);
        }
        if (m->size_rule)
            return problem(why, "size",
                           "'%s' is not WxH (model '%s' takes %s, or any WxH within its size "
                           "rule)",
                           s->size, m->name, allowed);
        return problem(why, "size", "'%s' is not allowed for model '%s' (allowed: %s)", s->size,
                       m->name, allowed);
    }
    if (imgq_size_parse(s->size, &s->width, &s->height) != 0)
        return problem(why, "size", "'%s' is not WxH", s->size);

    /* quality */
    if ((r = opt_string(o, "quality", &s->quality, why)))
        return r;
    if (!m->qualities[0]) {
        if (s->quality && strcmp(s->quality, "auto") != 0)
            return problem(why, "quality", "model '%s' has no quality setting", m->name);
        free(s->quality);
        s->quality = NULL;
    } else {
        if (!s->quality)
            s->quality = imgq_xstrdup("auto");
        if (!imgq_model_allows_quality(m, s->quality)) {
            list_join(m->qualities, allowed, sizeof allowed);
            return problem(why, "quality", "'%s' is not allowed for model '%s' (allowed: %s)",
                           s->quality, m->name, allowed);
        }
    }

    /* output */
    static const char *const formats[] = {"webp", "png", "jpeg", NULL};
    if ((r = opt_string(o, "output_format", &s->output_format, why)))
        return r;
    if (!s->output_format)
        s->output_format = imgq_xstrdup("webp");
    if ((r = one_of("output_format", s->output_format, formats, why)))
        return r;
    json_t *cv = json_object_get(o, "output_compression");
    s->output_compression = 85;
    if (cv && !json_is_null(cv)) {
        if (!json_is_integer(cv) || json_integer_value(cv) < 0 || json_integer_value(cv) > 100)
            return problem(why, "output_compression", "must be an integer from 0 to 100");
        s->output_compression = (int)json_integer_value(cv);
    }
    static const char *const backgrounds[] = {"transparent", "opaque", "auto", NULL};
    static const char *const moderations[] = {"low", "auto", NULL};
    if ((r = opt_string(o, "background", &s->background, why)) ||
        (s->background && (r = one_of("background", s->background, backgrounds, why))) ||
        (r = opt_string(o, "moderation", &s->moderation, why)) ||
        (s->moderation && (r = one_of("moderation", s->moderation, moderations, why))) ||
        (r = opt_string(o, "user", &s->user, why)))
        return r;
    if (strcmp(s->output_format, "jpeg") == 0 && s->background &&
        strcmp(s->background, "transparent") == 0)
        return problem(why, "output_format",
                       "'jpeg' has no transparency: a transparent background needs webp or png");

    /* routing and ownership */
    if ((r = opt_string(o, "route", &s->route, why)))
        return r;
    if (!s->route)
        s->route = imgq_xstrdup(d && d->route ? d->route : "list");
    if (!imgq_catalog_route(cat, s->route))
        return problem(why, "route", "'%s' is not a route of the catalog", s->route);
    if ((r = opt_string(o, "team", &s->team, why)))
        return r;
    if (!s->team)
        s->team = imgq_xstrdup(d && d->team ? d->team : "");
    if (*s->team && !valid_name(s->team, 64))
        return problem(why, "team", "'%s' must be 1-64 characters of letters, digits, -_.:/",
                       s->team);
    s->priority = d ? d->priority : IMGQ_PRIO_NORMAL;
    json_t *pv = json_object_get(o, "priority");
    if (pv && !json_is_null(pv)) {
        enum imgq_priority pr;
        if (!json_is_string(pv) || imgq_priority_parse(json_string_value(pv), &pr) != 0)
            return problem(why, "priority", "must be \"high\", \"normal\" or \"low\"");
        s->priority = pr;
    }
    /* Knobs only some models have: refused here, never discovered as a provider 400. */
    json_t *seed = json_object_get(o, "seed");
    if (seed && !json_is_null(seed)) {
        if (!json_is_integer(seed) || json_integer_value(seed) < 0 ||
            json_integer_value(seed) > 2147483647)
            return problem(why, "seed", "must be an integer from 0 to 2147483647");
        if (!(m->capabilities & IMGQ_NEED_SEED))
            return problem(why, "seed", "model '%s' has no seed setting", m->name);
        s->has_seed = true;
        s->seed = json_integer_value(seed);
    }
    if ((r = opt_string(o, "negative_prompt", &s->negative_prompt, why)))
        return r;
    if (s->negative_prompt && !(m->capabilities & IMGQ_NEED_NEGATIVE_PROMPT))
        return problem(why, "negative_prompt", "model '%s' takes no negative prompt", m->name);
    if (s->background && strcmp(s->background, "transparent") == 0 &&
        !(m->capabilities & IMGQ_NEED_TRANSPARENT))
        return problem(why, "background", "model '%s' cannot make a transparent background",
                       m->name);
    json_t *gv = json_object_get(o, "guidance_scale");
    if (gv && !json_is_null(gv)) {
        if (!json_is_number(gv))
            return problem(why, "guidance_scale", "must be a number");
        double g = json_number_value(gv);
        if (!(m->capabilities & IMGQ_NEED_GUIDANCE))
            return problem(why, "guidance_scale", "model '%s' has no guidance_scale setting",
                           m->name);
        if (!(g >= m->guidance_min && g <= m->guidance_max))
            return problem(why, "guidance_scale", "%g is out of range for model '%s' (%g to %g)", g,
                           m->name, m->guidance_min, m->guidance_max);
        s->has_guidance = true;
        s->guidance_scale = g;
    }
    if ((r = parse_refs(o, m, s, why)))
        return r;
    s->max_attempts = d && d->max_attempts > 0 ? d->max_attempts : 5;
    json_t *av = json_object_get(o, "max_attempts");
    if (av && !json_is_null(av)) {
        if (!json_is_integer(av) || json_integer_value(av) < 1 || json_integer_value(av) > 100)
            return problem(why, "max_attempts", "must be an integer from 1 to 100");
        s->max_attempts = (int)json_integer_value(av);
    }
    json_t *dd = json_object_get(o, "dedup");
    if (dd && !json_is_null(dd)) {
        if (!json_is_boolean(dd))
            return problem(why, "dedup", "must be true or false");
        s->no_dedup = json_is_false(dd);
    }
    /* Seed 002: cap the paid generations of one asset; past the cap it goes to review. */
    s->max_generations = d && d->max_generations > 0 ? d->max_generations : 0;
    json_t *mg = json_object_get(o, "max_generations");
    if (mg && !json_is_null(mg)) {
        if (!json_is_integer(mg) || json_integer_value(mg) < 1 || json_integer_value(mg) > 100)
            return problem(why, "max_generations", "must be an integer from 1 to 100");
        s->max_generations = (int)json_integer_value(mg);
    }
    /* How many times a provider's 429 may send the job back to wait (the worker's
     * --max-rate-limit-waits when absent). */
    json_t *rw = json_object_get(o, "max_rate_limit_waits");
    if (rw && !json_is_null(rw)) {
        if (!json_is_integer(rw) || json_integer_value(rw) < 1 || json_integer_value(rw) > 10000)
            return problem(why, "max_rate_limit_waits", "must be an integer from 1 to 10000");
        s->max_rate_limit_waits = (int)json_integer_value(rw);
    }
    if ((r = opt_string(o, "webhook", &s->webhook, why)))
        return r;
    if (s->webhook &&
        ((strncmp(s->webhook, "https://", 8) != 0 && strncmp(s->webhook, "http://", 7) != 0) ||
         strlen(s->webhook) > WEBHOOK_MAX))
        return problem(why, "webhook", "must be an http:// or https:// URL of at most %d bytes",
                       WEBHOOK_MAX);
    json_t *md = json_object_get(o, "metadata");
    if (md && !json_is_null(md)) {
        if (!json_is_object(md))
            return problem(why, "metadata", "must be a JSON object");
        char *text = json_dumps(md, JSON_COMPACT);
        size_t len = text ? strlen(text) : 0;
        free(text);
        if (len > METADATA_MAX)
            return problem(why, "metadata", "is %zu bytes; the limit is %d", len, METADATA_MAX);
        s->metadata = json_incref(md);
    }
    if (m->max_prompt_chars > 0 && utf8_chars(s->prompt) > (size_t)m->max_prompt_chars)
        return problem(why, "prompt", "has %zu characters; model '%s' takes at most %d",
                       utf8_chars(s->prompt), m->name, m->max_prompt_chars);
    return 0;
}

/* Pipelines ----------------------------------------------------------------------------------- */

static int pipe_string(json_t *o, const char *key, const char *field, const char **out,
                       struct imgq_job_problem *why)
{
    json_t *v = json_object_get(o, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v) || !*json_string_value(v))
        return problem(why, field, "must be a non-empty string");
    *out = json_string_value(v);
    return 0;
}

/* An optional integer field of a pipeline object, from 1 to max; 'def' when absent. */
static int pipe_int(json_t *o, const char *key, const char *field, json_int_t def, json_int_t max,
                    json_int_t *out, struct imgq_job_problem *why)
{
    json_t *v = json_object_get(o, key);
    *out = def;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > max)
        return problem(why, field, "must be an integer from 1 to %lld", (long long)max);
    *out = json_integer_value(v);
    return 0;
}

/*
 * Check a job's "pipeline" and normalise it into *norm (new reference).  The refine object's
 * model, quality and size move to the top level of 'o' (the job is the refine stage).
 */
static int pipeline_prepare(json_t *o, json_t **norm, struct imgq_job_problem *why)
{
    *norm = NULL;
    json_t *p = json_object_get(o, "pipeline");
    if (!json_is_object(p))
        return problem(why, "pipeline", "must be an object with draft, select and refine");
    const char *key;
    json_t *val;
    json_object_foreach(p, key, val)
    {
        if (strcmp(key, "draft") != 0 && strcmp(key, "select") != 0 && strcmp(key, "refine") != 0)
            return problem(why, "pipeline", "unknown field '%s' (draft, select, refine)", key);
    }
    if (json_object_get(o, "images") || json_object_get(o, "mask"))
        return problem(why, "pipeline",
                       "a pipeline job takes no images or mask (refine uses the chosen draft)");
    const char *mv = json_string_value(json_object_get(o, "model"));
    if (mv && strcmp(mv, "auto") == 0)
        return problem(why, "model", "a pipeline job names its models (\"auto\" is not allowed)");

    json_t *d = json_object_get(p, "draft");
    if (!json_is_object(d))
        return problem(why, "pipeline.draft", "is required: {\"model\", \"n\", ...}");
    json_object_foreach(d, key, val)
    {
        if (strcmp(key, "model") != 0 && strcmp(key, "n") != 0 && strcmp(key, "quality") != 0 &&
            strcmp(key, "size") != 0)
            return problem(why, "pipeline.draft", "unknown field '%s' (model, n, quality, size)",
                           key);
    }
    const char *dm, *dq, *ds;
    int r;
    if ((r = pipe_string(d, "model", "pipeline.draft.model", &dm, why)) ||
        (r = pipe_string(d, "quality", "pipeline.draft.quality", &dq, why)) ||
        (r = pipe_string(d, "size", "pipeline.draft.size", &ds, why)))
        return r;
    if (!dm)
        return problem(why, "pipeline.draft.model", "is required");
    json_int_t n;
    if ((r = pipe_int(d, "n", "pipeline.draft.n", 4, IMGQ_PIPELINE_MAX_DRAFTS, &n, why)))
        return r;

    json_t *sel = json_object_get(p, "select");
    if (!json_is_object(sel))
        return problem(why, "pipeline.select",
                       "is required: {\"mode\": \"auto\"|\"webhook\"|\"manual\"}");
    json_object_foreach(sel, key, val)
    {
        if (strcmp(key, "mode") != 0 && strcmp(key, "url") != 0 && strcmp(key, "timeout_s") != 0)
            return problem(why, "pipeline.select", "unknown field '%s' (mode, url, timeout_s)",
                           key);
    }
    const char *mode, *url;
    if ((r = pipe_string(sel, "mode", "pipeline.select.mode", &mode, why)) ||
        (r = pipe_string(sel, "url", "pipeline.select.url", &url, why)))
        return r;
    if (!mode ||
        (strcmp(mode, "auto") != 0 && strcmp(mode, "webhook") != 0 && strcmp(mode, "manual") != 0))
        return problem(why, "pipeline.select.mode", "must be auto, webhook or manual");
    if (strcmp(mode, "webhook") == 0) {
        if (!url)
            return problem(why, "pipeline.select.url", "is required with mode webhook");
        if ((strncmp(url, "https://", 8) != 0 && strncmp(url, "http://", 7) != 0) ||
            strlen(url) > WEBHOOK_MAX)
            return problem(why, "pipeline.select.url",
                           "must be an http:// or https:// URL of at most %d bytes", WEBHOOK_MAX);
    } else if (url) {
        return problem(why, "pipeline.select.url", "is only for mode webhook");
    }
    json_int_t timeout;
    if ((r = pipe_int(sel, "timeout_s", "pipeline.select.timeout_s", 60,
                      IMGQ_PIPELINE_MAX_TIMEOUT_S, &timeout, why)))
        return r;

    json_t *rf = json_object_get(p, "refine");
    if (rf && !json_is_object(rf))
        return problem(why, "pipeline.refine", "must be an object");
    bool use_ref = true;
    json_object_foreach(rf, key, val)
    {
        if (strcmp(key, "model") == 0 || strcmp(key, "quality") == 0 || strcmp(key, "size") == 0) {
            if (!json_is_string(val) || !*json_string_value(val))
                return problem(why, "pipeline.refine", "%s must be a non-empty string", key);
            json_object_set(o, key, val); /* the job is the refine stage */
        } else if (strcmp(key, "use_draft_as_reference") == 0) {
            if (!json_is_boolean(val))
                return problem(why, "pipeline.refine.use_draft_as_reference",
                               "must be true or false");
            use_ref = json_is_true(val);
        } else {
            return problem(why, "pipeline.refine",
                           "unknown field '%s' (model, quality, size, use_draft_as_reference)",
                           key);
        }
    }
    json_t *nd = json_pack("{s:s, s:I}", "model", dm, "n", n);
    if (dq)
        json_object_set_new(nd, "quality", json_string(dq));
    if (ds)
        json_object_set_new(nd, "size", json_string(ds));
    json_t *ns = json_pack("{s:s, s:I}", "mode", mode, "timeout_s", timeout);
    if (url)
        json_object_set_new(ns, "url", json_string(url));
    *norm = json_pack("{s:o, s:o, s:{s:b}}", "draft", nd, "select", ns, "refine",
                      "use_draft_as_reference", use_ref);
    json_object_del(o, "pipeline");
    return 0;
}

/* The job as stored (imgq_job_spec_to_json), as an object to edit: a new reference. */
static json_t *stored_form(const struct imgq_job_spec *spec)
{
    char *text = imgq_job_spec_to_json(spec);
    json_t *o = json_loads(text, 0, NULL);
    free(text);
    if (!json_is_object(o))
        abort(); /* our own serialisation reads back, unless allocation failed (alloc.h) */
    return o;
}

const char *imgq_job_pipeline_mode(const struct imgq_job_spec *spec)
{
    return json_string_value(json_object_get(json_object_get(spec->pipeline, "select"), "mode"));
}

int imgq_job_pipeline_stage(const imgq_catalog *cat, const struct imgq_job_spec *spec,
                            const char *stage, const char *ref, time_t today,
                            struct imgq_job_spec *out, struct imgq_job_problem *why)
{
    memset(out, 0, sizeof *out);
    memset(why, 0, sizeof *why);
    if (!spec->pipeline)
        return problem(why, "pipeline", "the job has no pipeline");
    json_t *o = stored_form(spec);
    json_object_del(o, "pipeline");
    const char *field = stage;
    if (strcmp(stage, "draft") == 0) {
        json_t *d = json_object_get(spec->pipeline, "draft");
        json_object_del(o, "webhook");
        json_object_del(o, "id");
        json_object_del(o, "quality");
        const char *key;
        json_t *val;
        json_object_foreach(d, key, val) json_object_set(o, key, val);
        field = "pipeline.draft";
    } else if (json_is_true(json_object_get(json_object_get(spec->pipeline, "refine"),
                                            "use_draft_as_reference"))) {
        json_object_set_new(o, "images", json_pack("[s]", ref ? ref : ""));
        field = "pipeline.refine";
    } else {
        field = "pipeline.refine";
    }
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!text)
        abort(); /* only allocation can fail here (alloc.h policy) */
    int r = imgq_job_parse(cat, text, strlen(text), NULL, today, out, why, NULL, 0);
    free(text);
    if (r) {
        /* Name the stage: "pipeline.draft: quality: ..." */
        char inner[sizeof why->field];
        snprintf(inner, sizeof inner, "%s", why->field);
        snprintf(why->field, sizeof why->field, "%s", field);
        char reason[sizeof why->reason];
        snprintf(reason, sizeof reason, "%s", why->reason);
        int k = snprintf(why->reason, sizeof why->reason, "%s: ", inner);
        if (k > 0 && (size_t)k < sizeof why->reason)
            snprintf(why->reason + k, sizeof why->reason - (size_t)k, "%.*s",
                     (int)(sizeof why->reason - (size_t)k - 1), reason);
    }
    return r;
}

int imgq_job_parse(const imgq_catalog *cat, const char *text, size_t len,
                   const struct imgq_job_defaults *defaults, time_t today,
                   struct imgq_job_spec *out, struct imgq_job_problem *why, char *warn,
                   size_t warnlen)
{
    memset(out, 0, sizeof *out);
    memset(why, 0, sizeof *why);
    if (warn && warnlen)
        warn[0] = '\0';
    json_error_t je;
    json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!o) {
        problem(why, "(json)", "column %d: %s", je.column, je.text);
        return IMGQ_EPARSE;
    }
    if (!json_is_object(o)) {
        json_decref(o);
        problem(why, "(json)", "a job must be a JSON object");
        return IMGQ_EPARSE;
    }
    json_t *pipe = NULL;
    int r = json_object_get(o, "pipeline") ? pipeline_prepare(o, &pipe, why) : 0;
    if (r == 0)
        r = validate(cat, o, defaults, today, out, why, warn, warnlen);
    json_decref(o);
    out->pipeline = pipe;
    if (r == 0 && pipe) {
        /* Both stages must be runnable as jobs, checked now rather than after the drafts. */
        struct imgq_job_spec st;
        struct imgq_job_problem sw;
        if ((r = imgq_job_pipeline_stage(cat, out, "draft", NULL, today, &st, &sw)) == 0) {
            imgq_job_spec_clear(&st);
            r = imgq_job_pipeline_stage(cat, out, "refine", "s3://imgq-draft/check.webp", today,
                                        &st, &sw);
            imgq_job_spec_clear(&st);
        }
        if (r)
            *why = sw;
    }
    if (r)
        imgq_job_spec_clear(out);
    return r;
}

static void set_str(json_t *o, const char *k, const char *v)
{
    if (v)
        json_object_set_new(o, k, json_string(v));
}

/* A field equal to the built-in default it gets back in imgq_job_spec_from_json is left out of
 * the stored form: a waiting job is mostly its spec, and a queue may hold millions of them. */
#define STORED_N 1
#define STORED_FORMAT "webp"
#define STORED_COMPRESSION 85
#define STORED_ROUTE "list"
#define STORED_TEAM ""
#define STORED_MAX_ATTEMPTS 5

static void set_str_unless(json_t *o, const char *k, const char *v, const char *dflt)
{
    if (v && strcmp(v, dflt) != 0)
        json_object_set_new(o, k, json_string(v));
}

char *imgq_job_spec_to_json(const struct imgq_job_spec *s)
{
    json_t *o = json_object();
    set_str(o, "id", s->id);
    set_str(o, "model", s->model);
    set_str(o, "alias", s->alias);
    set_str(o, "routed", s->routed);
    set_str(o, "use_case", s->use_case);
    if (s->max_cost > 0) {
        char cap[48];
        imgq_money_format(s->max_cost, 6, cap, sizeof cap);
        json_object_set_new(o, "max_cost_usd", json_string(cap));
    }
    set_str(o, "prompt", s->prompt);
    if (s->n != STORED_N)
        json_object_set_new(o, "n", json_integer(s->n));
    set_str(o, "size", s->size);
    set_str(o, "quality", s->quality);
    set_str_unless(o, "output_format", s->output_format, STORED_FORMAT);
    if (s->output_compression != STORED_COMPRESSION)
        json_object_set_new(o, "output_compression", json_integer(s->output_compression));
    set_str(o, "background", s->background);
    set_str(o, "moderation", s->moderation);
    set_str(o, "user", s->user);
    if (s->has_seed)
        json_object_set_new(o, "seed", json_integer(s->seed));
    set_str(o, "negative_prompt", s->negative_prompt);
    if (s->has_guidance)
        json_object_set_new(o, "guidance_scale", json_real(s->guidance_scale));
    if (s->nrefs > 0) {
        json_t *a = json_array();
        for (int i = 0; i < s->nrefs; i++)
            json_array_append_new(a, json_string(s->refs[i]));
        json_object_set_new(o, "images", a);
    }
    set_str(o, "mask", s->mask);
    set_str_unless(o, "route", s->route, STORED_ROUTE);
    set_str_unless(o, "team", s->team, STORED_TEAM);
    set_str(o, "webhook", s->webhook);
    if (s->priority != IMGQ_PRIO_NORMAL)
        set_str(o, "priority", imgq_priority_name(s->priority));
    if (s->max_attempts != STORED_MAX_ATTEMPTS)
        json_object_set_new(o, "max_attempts", json_integer(s->max_attempts));
    if (s->no_dedup)
        json_object_set_new(o, "dedup", json_false());
    if (s->max_generations > 0)
        json_object_set_new(o, "max_generations", json_integer(s->max_generations));
    if (s->max_rate_limit_waits > 0)
        json_object_set_new(o, "max_rate_limit_waits", json_integer(s->max_rate_limit_waits));
    if (s->metadata)
        json_object_set(o, "metadata", s->metadata);
    if (s->pipeline)
        json_object_set(o, "pipeline", s->pipeline);
    char *text = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(o);
    if (!text)
        abort(); /* only allocation can fail here (alloc.h policy) */
    return text;
}

void imgq_job_stored_defaults(json_t *o)
{
    if (!json_is_object(o))
        return;
    /* Insertion after the stored keys: a displayed spec lists what was given first. */
    struct {
        const char *key;
        json_t *value;
    } d[] = {{"n", json_integer(STORED_N)},
             {"output_format", json_string(STORED_FORMAT)},
             {"output_compression", json_integer(STORED_COMPRESSION)},
             {"route", json_string(STORED_ROUTE)},
             {"team", json_string(STORED_TEAM)},
             {"priority", json_string(imgq_priority_name(IMGQ_PRIO_NORMAL))},
             {"max_attempts", json_integer(STORED_MAX_ATTEMPTS)}};
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++) {
        if (!json_object_get(o, d[i].key))
            json_object_set(o, d[i].key, d[i].value);
        json_decref(d[i].value);
    }
}

static char *dup_field(json_t *o, const char *k)
{
    const char *v = json_string_value(json_object_get(o, k));
    return v ? imgq_xstrdup(v) : NULL;
}

/* A field of the stored form, or the default it was left out as (imgq_job_spec_to_json);
 * NULL (damage) for a value of the wrong type. */
static char *dup_field_or(json_t *o, const char *k, const char *dflt)
{
    json_t *v = json_object_get(o, k);
    if (!v)
        return imgq_xstrdup(dflt);
    return json_is_string(v) ? imgq_xstrdup(json_string_value(v)) : NULL;
}

/* The same for a number; -1 (damage) for a value of the wrong type. */
static int int_field_or(json_t *o, const char *k, int dflt)
{
    json_t *v = json_object_get(o, k);
    if (!v)
        return dflt;
    return json_is_integer(v) ? (int)json_integer_value(v) : -1;
}

int imgq_job_spec_from_json(const char *text, struct imgq_job_spec *s)
{
    memset(s, 0, sizeof *s);
    json_t *o = json_loads(text, 0, NULL);
    if (!json_is_object(o)) {
        json_decref(o);
        return IMGQ_EPARSE;
    }
    s->id = dup_field(o, "id");
    s->model = dup_field(o, "model");
    s->alias = dup_field(o, "alias");
    s->routed = dup_field(o, "routed");
    s->use_case = dup_field(o, "use_case");
    const char *cap = json_string_value(json_object_get(o, "max_cost_usd"));
    if (cap && imgq_money_parse(cap, &s->max_cost) != 0)
        s->max_cost = -1; /* damaged: refused below */
    s->prompt = dup_field(o, "prompt");
    s->n = int_field_or(o, "n", STORED_N);
    s->size = dup_field(o, "size");
    s->quality = dup_field(o, "quality");
    s->output_format = dup_field_or(o, "output_format", STORED_FORMAT);
    s->output_compression = int_field_or(o, "output_compression", STORED_COMPRESSION);
    s->background = dup_field(o, "background");
    s->moderation = dup_field(o, "moderation");
    s->user = dup_field(o, "user");
    json_t *seed = json_object_get(o, "seed");
    s->has_seed = json_is_integer(seed);
    s->seed = s->has_seed ? json_integer_value(seed) : 0;
    s->negative_prompt = dup_field(o, "negative_prompt");
    json_t *gv = json_object_get(o, "guidance_scale");
    s->has_guidance = json_is_number(gv);
    s->guidance_scale = s->has_guidance ? json_number_value(gv) : 0;
    json_t *images = json_object_get(o, "images");
    bool refs_ok = !images || json_is_array(images);
    size_t nimages = json_array_size(images);
    if (refs_ok && nimages > 0) {
        s->refs = imgq_xcalloc(nimages, sizeof *s->refs);
        for (size_t i = 0; i < nimages && refs_ok; i++) {
            const char *ref = json_string_value(json_array_get(images, i));
            refs_ok = ref != NULL;
            if (ref)
                s->refs[s->nrefs++] = imgq_xstrdup(ref);
        }
    }
    json_t *mask = json_object_get(o, "mask");
    refs_ok = refs_ok && (!mask || json_is_string(mask));
    s->mask = dup_field(o, "mask");
    s->route = dup_field_or(o, "route", STORED_ROUTE);
    s->team = dup_field_or(o, "team", STORED_TEAM);
    s->webhook = dup_field(o, "webhook");
    enum imgq_priority pr;
    s->priority = IMGQ_PRIO_NORMAL;
    if (imgq_priority_parse(json_string_value(json_object_get(o, "priority")), &pr) == 0)
        s->priority = pr;
    s->max_attempts = int_field_or(o, "max_attempts", STORED_MAX_ATTEMPTS);
    s->max_generations = (int)json_integer_value(json_object_get(o, "max_generations"));
    s->max_rate_limit_waits = (int)json_integer_value(json_object_get(o, "max_rate_limit_waits"));
    s->no_dedup = json_is_false(json_object_get(o, "dedup"));
    json_t *md = json_object_get(o, "metadata");
    if (json_is_object(md))
        s->metadata = json_incref(md);
    json_t *pl = json_object_get(o, "pipeline");
    if (json_is_object(pl))
        s->pipeline = json_incref(pl);
    json_decref(o);
    if (!refs_ok || !s->model || !s->prompt || !s->size || !s->output_format || !s->route ||
        s->max_cost < 0 || s->n < 1 || imgq_size_parse(s->size, &s->width, &s->height) != 0) {
        imgq_job_spec_clear(s);
        return IMGQ_EINVAL;
    }
    return 0;
}

void imgq_job_spec_clear(struct imgq_job_spec *s)
{
    free(s->id);
    free(s->model);
    free(s->alias);
    free(s->routed);
    free(s->use_case);
    free(s->prompt);
    free(s->size);
    free(s->quality);
    free(s->output_format);
    free(s->background);
    free(s->moderation);
    free(s->user);
    free(s->negative_prompt);
    for (int i = 0; i < s->nrefs; i++)
        free(s->refs[i]);
    free(s->refs);
    free(s->mask);
    if (s->ref_data)
        for (int i = 0; i < s->nrefs; i++)
            free(s->ref_data[i].data);
    free(s->ref_data);
    if (s->mask_data)
        free(s->mask_data->data);
    free(s->mask_data);
    free(s->route);
    free(s->team);
    free(s->webhook);
    json_decref(s->metadata);
    json_decref(s->pipeline);
    memset(s, 0, sizeof *s);
}

int imgq_job_retarget(const imgq_catalog *cat, const struct imgq_job_spec *spec, const char *model,
                      time_t today, struct imgq_job_spec *out, struct imgq_job_problem *why)
{
    memset(out, 0, sizeof *out);
    memset(why, 0, sizeof *why);
    const struct imgq_model *m = model ? imgq_catalog_model(cat, model) : NULL;
    if (!m)
        return problem(why, "model", "'%s' is not in the catalog (version %s)",
                       model ? model : "(null)", imgq_catalog_version(cat));
    /* The stored form, with the model swapped, through the same checks as a submitted job. */
    json_t *o = stored_form(spec);
    char *text;
    json_object_del(o, "alias");
    json_object_del(o, "routed");
    json_object_del(o, "use_case"); /* (what routed it; the caller checks them) */
    json_object_del(o, "max_cost_usd");
    json_object_set_new(o, "model", json_string(model));
    /* Quality: kept where the target has it; dropped on a model without the knob; else (a flat
     * job moving to a model with one, or a value it lacks) medium, the middle of the range. */
    const char *q = spec->quality;
    if (!m->qualities[0])
        json_object_del(o, "quality");
    else if (!q || !imgq_model_allows_quality(m, q))
        json_object_set_new(
            o, "quality",
            json_string(imgq_model_allows_quality(m, "medium") ? "medium" : m->qualities[0]));
    text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!text)
        abort(); /* only allocation can fail here (alloc.h policy) */
    int r = imgq_job_parse(cat, text, strlen(text), NULL, today, out, why, NULL, 0);
    free(text);
    return r;
}
