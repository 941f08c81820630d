/*
 * catalog.c - loading the price catalog and computing costs from it.
 *
 * Costs are computed in 128-bit integers: tokens x (micro-dollars per 1M tokens) x (route
 * multiplier in ppm) can pass 2^63 for large monthly workloads, and the result is divided
 * and rounded exactly once per call, so no float ever touches money.
 */
#include "imgq/catalog.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imgq/alloc.h"

struct alias {
    char *name;
    const struct imgq_model *target;
};

struct rate_preset {
    char *name;
    int images_per_minute;
    int64_t tokens_per_minute; /* 0: no token limit */
    int concurrent_requests;   /* 0: no concurrency limit */
};

struct imgq_catalog {
    struct rate_preset *presets;
    size_t npresets;
    struct imgq_use_case *use_cases;
    size_t nuse_cases;
    char *version;
    struct imgq_model *models;
    size_t nmodels;
    struct imgq_route *routes;
    size_t nroutes;
    struct alias *aliases;
    size_t naliases;
};

/* Loading ------------------------------------------------------------------------------ */

struct loader {
    char *err;
    size_t errlen;
    const char *origin; /* file name or "<string>" for messages */
};

static int fail(struct loader *ld, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct loader *ld, int code, const char *fmt, ...)
{
    if (ld->err && ld->errlen) {
        int n = snprintf(ld->err, ld->errlen, "%s: ", ld->origin);
        if (n < 0 || (size_t)n >= ld->errlen)
            return code;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ld->err + n, ld->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return code;
}

static char *opt_str(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? imgq_xstrdup(json_string_value(v)) : NULL;
}

static void free_strings(char **v)
{
    for (char **p = v; p && *p; p++)
        free(*p);
    free(v);
}

/* A non-negative integer field; absent = dflt.  Money and tokens must be integers. */
static int get_int(struct loader *ld, json_t *obj, const char *where, const char *key, int64_t dflt,
                   int64_t *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v) {
        *out = dflt;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return fail(ld, IMGQ_EINVAL, "%s: field '%s' must be a non-negative integer", where, key);
    *out = json_integer_value(v);
    return 0;
}

static int get_small_int(struct loader *ld, json_t *obj, const char *where, const char *key,
                         int dflt, int *out)
{
    int64_t v = 0;
    int r = get_int(ld, obj, where, key, dflt, &v);
    if (r)
        return r;
    if (v > 1000000)
        return fail(ld, IMGQ_EINVAL, "%s: field '%s' is too large", where, key);
    *out = (int)v;
    return 0;
}

static int load_strings(struct loader *ld, json_t *obj, const char *where, const char *key,
                        char ***out)
{
    json_t *arr = json_object_get(obj, key);
    if (!arr) {
        *out = imgq_xcalloc(1, sizeof(char *));
        return 0;
    }
    if (!json_is_array(arr))
        return fail(ld, IMGQ_EINVAL, "%s: field '%s' must be an array of strings", where, key);
    size_t n = json_array_size(arr);
    char **v = imgq_xcalloc(n + 1, sizeof(char *));
    *out = v;
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_array_get(arr, i);
        if (!json_is_string(s))
            return fail(ld, IMGQ_EINVAL, "%s: %s[%zu] must be a string", where, key, i);
        v[i] = imgq_xstrdup(json_string_value(s));
    }
    return 0;
}

/* A table {"WxH": {"quality": integer, ...}, ...} into rows. */
static int load_table(struct loader *ld, json_t *obj, const char *where, const char *key,
                      struct imgq_token_row **rows, size_t *nrows)
{
    json_t *tab = json_object_get(obj, key);
    *rows = NULL;
    *nrows = 0;
    if (!tab)
        return 0;
    if (!json_is_object(tab))
        return fail(ld, IMGQ_EINVAL, "%s: field '%s' must be an object of sizes", where, key);
    size_t cap = 0;
    const char *size;
    json_t *quals;
    json_object_foreach(tab, size, quals)
    {
        int w, h;
        if (imgq_size_parse(size, &w, &h) != 0)
            return fail(ld, IMGQ_EINVAL, "%s: %s: '%s' is not a WxH size", where, key, size);
        if (!json_is_object(quals))
            return fail(ld, IMGQ_EINVAL, "%s: %s.%s must map quality to an integer", where, key,
                        size);
        const char *q;
        json_t *v;
        json_object_foreach(quals, q, v)
        {
            if (!json_is_integer(v) || json_integer_value(v) < 0)
                return fail(ld, IMGQ_EINVAL, "%s: %s.%s.%s must be a non-negative integer", where,
                            key, size, q);
            if (*nrows == cap) {
                cap = cap ? cap * 2 : 8;
                *rows = imgq_xrealloc(*rows, cap * sizeof(**rows));
            }
            struct imgq_token_row *r = &(*rows)[(*nrows)++];
            r->width = w;
            r->height = h;
            r->quality = imgq_xstrdup(q);
            r->tokens = json_integer_value(v);
        }
    }
    return 0;
}

static int load_prices(struct loader *ld, json_t *m, const char *where, struct imgq_prices *p)
{
    json_t *pr = json_object_get(m, "prices");
    if (!json_is_object(pr))
        return fail(ld, IMGQ_EINVAL, "model '%s': field 'prices' missing or not an object", where);
    static const struct {
        const char *key;
        size_t off;
    } fields[] = {
        {"text_in", offsetof(struct imgq_prices, text_in)},
        {"cached_text_in", offsetof(struct imgq_prices, cached_text_in)},
        {"image_in", offsetof(struct imgq_prices, image_in)},
        {"cached_image_in", offsetof(struct imgq_prices, cached_image_in)},
        {"image_out", offsetof(struct imgq_prices, image_out)},
        {"text_out", offsetof(struct imgq_prices, text_out)},
        {"per_image", offsetof(struct imgq_prices, per_image)},
    };
    char ctx[256];
    snprintf(ctx, sizeof ctx, "model '%s' prices", where);
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        int64_t *dst = (int64_t *)((char *)p + fields[i].off);
        int r = get_int(ld, pr, ctx, fields[i].key, 0, dst);
        if (r)
            return r;
    }
    /* Cached rates default to the uncached ones: never bill less than the catalog says. */
    if (!json_object_get(pr, "cached_text_in"))
        p->cached_text_in = p->text_in;
    if (!json_object_get(pr, "cached_image_in"))
        p->cached_image_in = p->image_in;
    return 0;
}

/* "output_token_factors": {"low": 16, ...}: the size formula of providers.md 1.1. */
static int load_factors(struct loader *ld, json_t *m, const char *ctx, struct imgq_model *out)
{
    json_t *tab = json_object_get(m, "output_token_factors");
    if (!tab)
        return 0;
    if (!json_is_object(tab) || json_object_size(tab) == 0)
        return fail(ld, IMGQ_EINVAL,
                    "%s: field 'output_token_factors' must map qualities to positive integers",
                    ctx);
    out->token_factors = imgq_xcalloc(json_object_size(tab), sizeof *out->token_factors);
    const char *q;
    json_t *v;
    json_object_foreach(tab, q, v)
    {
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 1000000)
            return fail(ld, IMGQ_EINVAL,
                        "%s: output_token_factors.%s must be an integer from 1 to 1000000", ctx, q);
        struct imgq_token_factor *f = &out->token_factors[out->ntoken_factors++];
        f->quality = imgq_xstrdup(q);
        f->factor = json_integer_value(v);
    }
    return 0;
}

/* "guidance_range": [min, max], with the "guidance" capability (and only with it). */
static int load_guidance(struct loader *ld, json_t *m, const char *ctx, struct imgq_model *out)
{
    json_t *g = json_object_get(m, "guidance_range");
    bool cap = (out->capabilities & IMGQ_NEED_GUIDANCE) != 0;
    if (!g && !cap)
        return 0;
    if (!g || !cap)
        return fail(ld, IMGQ_EINVAL,
                    "%s: the 'guidance' capability and field 'guidance_range' go together", ctx);
    json_t *lo = json_array_get(g, 0), *hi = json_array_get(g, 1);
    if (!json_is_array(g) || json_array_size(g) != 2 || !json_is_number(lo) ||
        !json_is_number(hi) || json_number_value(lo) < 0 ||
        json_number_value(lo) > json_number_value(hi) || json_number_value(hi) > 1000)
        return fail(ld, IMGQ_EINVAL,
                    "%s: field 'guidance_range' must be [min, max] with 0 <= min <= max <= 1000",
                    ctx);
    out->guidance_min = json_number_value(lo);
    out->guidance_max = json_number_value(hi);
    return 0;
}

/* "size_rule": integer limits that admit sizes beyond the 'sizes' list (catalog.h). */
/* A calendar date written YYYY-MM-DD. */
static bool is_date(const char *s)
{
    int y, mo, d;
    char end;
    if (strlen(s) != 10 || s[4] != '-' || s[7] != '-' ||
        sscanf(s, "%4d-%2d-%2d%c", &y, &mo, &d, &end) != 3)
        return false;
    for (int i = 0; i < 10; i++)
        if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9'))
            return false;
    static const int days[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return mo >= 1 && mo <= 12 && d >= 1 && d <= days[mo - 1] && (mo != 2 || d < 29 || leap);
}

/*
 * Whether the provider bills failed requests ("charges_failures", true or false; absent =
 * false) and, as for the prices, where that fact comes from: "charges_failures_source" (a
 * non-empty string) and "charges_failures_as_of" (YYYY-MM-DD), each optional.
 */
static int load_failure_billing(struct loader *ld, json_t *m, const char *ctx,
                                struct imgq_model *out)
{
    json_t *cf = json_object_get(m, "charges_failures");
    if (cf && !json_is_boolean(cf))
        return fail(ld, IMGQ_EINVAL, "%s: field 'charges_failures' must be true or false", ctx);
    out->charges_failures = json_is_true(cf);
    json_t *src = json_object_get(m, "charges_failures_source");
    if (src && (!json_is_string(src) || !*json_string_value(src)))
        return fail(ld, IMGQ_EINVAL,
                    "%s: field 'charges_failures_source' must be a non-empty string (where the "
                    "failure-billing fact comes from)",
                    ctx);
    json_t *asof = json_object_get(m, "charges_failures_as_of");
    if (asof && (!json_is_string(asof) || !is_date(json_string_value(asof))))
        return fail(ld, IMGQ_EINVAL,
                    "%s: field 'charges_failures_as_of' must be a date written YYYY-MM-DD", ctx);
    if (asof && !src)
        return fail(ld, IMGQ_EINVAL,
                    "%s: field 'charges_failures_as_of' dates a 'charges_failures_source' that "
                    "is missing",
                    ctx);
    out->charges_failures_source = opt_str(m, "charges_failures_source");
    out->charges_failures_as_of = opt_str(m, "charges_failures_as_of");
    return 0;
}

static int load_size_rule(struct loader *ld, json_t *m, const char *ctx, struct imgq_model *out)
{
    json_t *o = json_object_get(m, "size_rule");
    if (!o)
        return 0;
    if (!json_is_object(o))
        return fail(ld, IMGQ_EINVAL, "%s: field 'size_rule' must be an object", ctx);
    static const char *const keys[] = {"multiple_of", "min_side",   "max_side", "min_pixels",
                                       "max_pixels",  "max_aspect", "note",     NULL};
    const char *key;
    json_t *val;
    json_object_foreach(o, key, val)
    {
        bool known = false;
        for (const char *const *k = keys; *k && !known; k++)
            known = strcmp(*k, key) == 0;
        if (!known)
            return fail(ld, IMGQ_EINVAL,
                        "%s: size_rule: unknown field '%s' (takes multiple_of, min_side, "
                        "max_side, min_pixels, max_pixels, max_aspect)",
                        ctx, key);
    }
    struct imgq_size_rule *sr = imgq_xcalloc(1, sizeof *sr);
    out->size_rule = sr;
    char rctx[300];
    snprintf(rctx, sizeof rctx, "%s size_rule", ctx);
    int r;
    if ((r = get_small_int(ld, o, rctx, "multiple_of", 0, &sr->multiple_of)) ||
        (r = get_small_int(ld, o, rctx, "min_side", 0, &sr->min_side)) ||
        (r = get_small_int(ld, o, rctx, "max_side", 0, &sr->max_side)) ||
        (r = get_int(ld, o, rctx, "min_pixels", 0, &sr->min_pixels)) ||
        (r = get_int(ld, o, rctx, "max_pixels", 0, &sr->max_pixels)))
        return r;
    json_t *asp = json_object_get(o, "max_aspect");
    if (asp) {
        json_t *a = json_array_get(asp, 0), *b = json_array_get(asp, 1);
        if (!json_is_array(asp) || json_array_size(asp) != 2 || !json_is_integer(a) ||
            !json_is_integer(b) || json_integer_value(b) < 1 ||
            json_integer_value(a) < json_integer_value(b) || json_integer_value(a) > 1000000)
            return fail(ld, IMGQ_EINVAL,
                        "%s: 'max_aspect' must be [long, short] integers with long >= short >= 1 "
                        "(e.g. [3, 1])",
                        rctx);
        sr->max_aspect_num = (int)json_integer_value(a);
        sr->max_aspect_den = (int)json_integer_value(b);
    }
    if (sr->max_side && sr->min_side > sr->max_side)
        return fail(ld, IMGQ_EINVAL, "%s: 'min_side' %d is above 'max_side' %d", rctx, sr->min_side,
                    sr->max_side);
    if (sr->max_pixels && sr->min_pixels > sr->max_pixels)
        return fail(ld, IMGQ_EINVAL, "%s: 'min_pixels' %" PRId64 " is above 'max_pixels' %" PRId64,
                    rctx, sr->min_pixels, sr->max_pixels);
    if (!sr->max_side && !sr->max_pixels)
        return fail(ld, IMGQ_EINVAL,
                    "%s: needs 'max_side' or 'max_pixels' (an upper bound on the sizes it admits)",
                    rctx);
    if (out->billing == IMGQ_BILL_TOKENS) {
        /* Any admitted size must be priceable: the formula needs a factor per quality. */
        if (!out->ntoken_factors)
            return fail(ld, IMGQ_EINVAL,
                        "%s: a token-billed model with a size rule needs "
                        "'output_token_factors' to price sizes its table lacks",
                        rctx);
        for (char **q = out->qualities; *q; q++) {
            bool have = strcmp(*q, "auto") == 0;
            for (size_t i = 0; i < out->ntoken_factors && !have; i++)
                have = strcmp(out->token_factors[i].quality, *q) == 0;
            if (!have)
                return fail(ld, IMGQ_EINVAL, "%s: quality '%s' has no output_token_factors entry",
                            rctx, *q);
        }
    }
    return 0;
}

static int load_model(struct loader *ld, const char *name, json_t *m, struct imgq_model *out)
{
    char ctx[256];
    snprintf(ctx, sizeof ctx, "model '%s'", name);
    out->name = imgq_xstrdup(name);
    if (!json_is_object(m))
        return fail(ld, IMGQ_EINVAL, "%s: must be an object", ctx);
    out->provider = opt_str(m, "provider");
    out->api = opt_str(m, "api");
    if (!out->provider || !out->api)
        return fail(ld, IMGQ_EINVAL, "%s: fields 'provider' and 'api' are required strings", ctx);
    const char *billing = json_string_value(json_object_get(m, "billing"));
    if (billing && strcmp(billing, "tokens") == 0)
        out->billing = IMGQ_BILL_TOKENS;
    else if (billing && strcmp(billing, "per_image") == 0)
        out->billing = IMGQ_BILL_PER_IMAGE;
    else
        return fail(ld, IMGQ_EINVAL, "%s: field 'billing' must be \"tokens\" or \"per_image\"",
                    ctx);
    int r;
    if ((r = load_prices(ld, m, name, &out->prices)) || //
        (r = get_small_int(ld, m, ctx, "n_max", 1, &out->n_max)) ||
        (r = get_small_int(ld, m, ctx, "n_per_call", 1, &out->n_per_call)) ||
        (r = get_small_int(ld, m, ctx, "max_prompt_chars", 0, &out->max_prompt_chars)) ||
        (r = get_small_int(ld, m, ctx, "max_references", 0, &out->max_references)) ||
        (r = get_int(ld, m, ctx, "ref_image_tokens", 0, &out->ref_image_tokens)) ||
        (r = load_strings(ld, m, ctx, "sizes", &out->sizes)) ||
        (r = load_strings(ld, m, ctx, "qualities", &out->qualities)) ||
        (r = load_table(ld, m, ctx, "output_tokens", &out->tokens, &out->ntokens)) ||
        (r = load_table(ld, m, ctx, "image_prices", &out->image_prices, &out->nimage_prices)) ||
        (r = load_factors(ld, m, ctx, out)))
        return r;
    if (out->n_max < 1 || out->n_per_call < 1)
        return fail(ld, IMGQ_EINVAL, "%s: 'n_max' and 'n_per_call' must be at least 1", ctx);
    if (!out->sizes[0])
        return fail(ld, IMGQ_EINVAL, "%s: field 'sizes' must list at least one size", ctx);
    for (char **s = out->sizes; *s; s++) {
        int w, h;
        if (imgq_size_parse(*s, &w, &h) != 0)
            return fail(ld, IMGQ_EINVAL, "%s: size '%s' is not WxH", ctx, *s);
    }
    if (out->billing == IMGQ_BILL_TOKENS) {
        if (out->ntokens == 0)
            return fail(ld, IMGQ_EINVAL, "%s: token billing needs an 'output_tokens' table", ctx);
        /* Every allowed size must be priceable, or the ceiling could not be computed. */
        for (char **s = out->sizes; *s; s++) {
            int w, h;
            int64_t t;
            if (imgq_size_parse(*s, &w, &h) != 0 ||
                imgq_model_output_tokens(out, NULL, w, h, &t) != 0)
                return fail(ld, IMGQ_EINVAL, "%s: size '%s' has no row in 'output_tokens'", ctx,
                            *s);
        }
    } else if (out->prices.per_image == 0 && out->nimage_prices == 0) {
        return fail(ld, IMGQ_EINVAL,
                    "%s: per_image billing needs prices.per_image or "
                    "'image_prices'",
                    ctx);
    }
    char **caps = NULL;
    if ((r = load_strings(ld, m, ctx, "capabilities", &caps)))
        return r;
    for (char **c = caps; *c; c++) {
        unsigned bit = imgq_need_parse(*c);
        if (!bit) {
            r = fail(ld, IMGQ_EINVAL, "%s: capability '%s' is not one of " IMGQ_NEED_NAMES, ctx,
                     *c);
            free_strings(caps);
            return r;
        }
        out->capabilities |= bit;
    }
    free_strings(caps);
    if ((r = load_strings(ld, m, ctx, "serves", &out->serves)))
        return r;
    if (!json_object_get(m, "serves")) {
        free_strings(out->serves);
        out->serves = imgq_xcalloc(4, sizeof(char *));
        out->serves[0] = imgq_xstrdup("low");
        out->serves[1] = imgq_xstrdup("medium");
        out->serves[2] = imgq_xstrdup("high");
    }
    if ((r = load_guidance(ld, m, ctx, out)) || (r = load_size_rule(ld, m, ctx, out)))
        return r;
    json_t *pm = json_object_get(m, "provider_model");
    if (pm && (!json_is_string(pm) || !*json_string_value(pm)))
        return fail(ld, IMGQ_EINVAL, "%s: field 'provider_model' must be a non-empty string", ctx);
    out->provider_model = opt_str(m, "provider_model");
    /* Reference images and the edit capability go together: a model that takes references but
     * not "edit" would be refused them at submit while its quote counts them, and an "edit"
     * model without references has nothing to edit. */
    bool edit = (out->capabilities & IMGQ_NEED_EDIT) != 0;
    if (edit && out->max_references < 1)
        return fail(ld, IMGQ_EINVAL,
                    "%s: has the 'edit' capability but 'max_references' is %d: an edit model "
                    "takes at least one reference image",
                    ctx, out->max_references);
    if (!edit && out->max_references > 0)
        return fail(ld, IMGQ_EINVAL,
                    "%s: 'max_references' is %d but the model lacks the 'edit' capability: "
                    "set 'max_references' to 0 or add \"edit\" to 'capabilities'",
                    ctx, out->max_references);
    json_t *pem = json_object_get(m, "provider_edit_model");
    if (pem && (!json_is_string(pem) || !*json_string_value(pem)))
        return fail(ld, IMGQ_EINVAL, "%s: field 'provider_edit_model' must be a non-empty string",
                    ctx);
    if (pem && !edit)
        return fail(ld, IMGQ_EINVAL, "%s: field 'provider_edit_model' needs the 'edit' capability",
                    ctx);
    out->provider_edit_model = opt_str(m, "provider_edit_model");
    if ((r = load_strings(ld, m, ctx, "fallbacks", &out->fallbacks)))
        return r;
    if ((r = load_failure_billing(ld, m, ctx, out)))
        return r;
    json_t *life = json_object_get(m, "lifecycle");
    if (life && !json_is_object(life))
        return fail(ld, IMGQ_EINVAL, "%s: field 'lifecycle' must be an object", ctx);
    out->deprecated = opt_str(life, "deprecated");
    out->shutdown = opt_str(life, "shutdown");
    out->successor = opt_str(life, "successor");
    out->source = opt_str(m, "source");
    out->as_of = opt_str(m, "as_of");
    return 0;
}

static int load_root(struct loader *ld, json_t *root, imgq_catalog *cat)
{
    if (!json_is_object(root))
        return fail(ld, IMGQ_EINVAL, "the catalog must be a JSON object");
    cat->version = opt_str(root, "version");
    if (!cat->version)
        return fail(ld, IMGQ_EINVAL, "field 'version' is required");

    json_t *models = json_object_get(root, "models");
    if (!json_is_object(models) || json_object_size(models) == 0)
        return fail(ld, IMGQ_EINVAL, "field 'models' must be a non-empty object");
    cat->models = imgq_xcalloc(json_object_size(models), sizeof(struct imgq_model));
    const char *key;
    json_t *val;
    json_object_foreach(models, key, val)
    {
        int r = load_model(ld, key, val, &cat->models[cat->nmodels++]);
        if (r)
            return r;
    }

    for (size_t i = 0; i < cat->nmodels; i++) {
        const struct imgq_model *m = &cat->models[i];
        for (char **f = m->fallbacks; *f; f++) {
            bool found = false;
            for (size_t j = 0; j < cat->nmodels && !found; j++)
                found = strcmp(cat->models[j].name, *f) == 0;
            if (!found)
                return fail(ld, IMGQ_EINVAL,
                            "model '%s': fallback '%s' is not a model of the catalog", m->name, *f);
            if (strcmp(*f, m->name) == 0)
                return fail(ld, IMGQ_EINVAL, "model '%s': cannot be its own fallback", m->name);
            for (char **g = m->fallbacks; g < f; g++)
                if (strcmp(*g, *f) == 0)
                    return fail(ld, IMGQ_EINVAL, "model '%s': fallback '%s' is listed twice",
                                m->name, *f);
        }
    }

    json_t *routes = json_object_get(root, "routes");
    if (routes && !json_is_object(routes))
        return fail(ld, IMGQ_EINVAL, "field 'routes' must be an object");
    /* "list" always exists, at 1.0x, so a job without a route has a price. */
    cat->routes = imgq_xcalloc(json_object_size(routes) + 1, sizeof(struct imgq_route));
    bool have_list = false;
    json_object_foreach(routes, key, val)
    {
        struct imgq_route *rt = &cat->routes[cat->nroutes++];
        char ctx[256];
        snprintf(ctx, sizeof ctx, "route '%s'", key);
        rt->name = imgq_xstrdup(key);
        if (!json_is_object(val))
            return fail(ld, IMGQ_EINVAL, "%s: must be an object", ctx);
        int r = get_int(ld, val, ctx, "multiplier_ppm", -1, &rt->multiplier_ppm);
        if (r)
            return r;
        if (rt->multiplier_ppm <= 0)
            return fail(ld, IMGQ_EINVAL, "%s: 'multiplier_ppm' must be a positive integer", ctx);
        rt->description = opt_str(val, "description");
        if (strcmp(key, "list") == 0)
            have_list = true;
    }
    if (!have_list) {
        struct imgq_route *rt = &cat->routes[cat->nroutes++];
        rt->name = imgq_xstrdup("list");
        rt->multiplier_ppm = 1000000;
        rt->description = imgq_xstrdup("provider list price");
    }

    json_t *routing = json_object_get(root, "routing");
    json_t *ucs = json_object_get(routing, "use_cases");
    if ((routing && !json_is_object(routing)) || (ucs && !json_is_object(ucs)))
        return fail(ld, IMGQ_EINVAL, "field 'routing.use_cases' must be an object");
    cat->use_cases = imgq_xcalloc(json_object_size(ucs) + 1, sizeof(struct imgq_use_case));
    json_object_foreach(ucs, key, val)
    {
        struct imgq_use_case *u = &cat->use_cases[cat->nuse_cases++];
        char ctx[256];
        snprintf(ctx, sizeof ctx, "use case '%s'", key);
        u->name = imgq_xstrdup(key);
        u->quality = opt_str(val, "quality");
        if (!u->quality || (strcmp(u->quality, "low") && strcmp(u->quality, "medium") &&
                            strcmp(u->quality, "high")))
            return fail(ld, IMGQ_EINVAL, "%s: 'quality' must be low, medium or high", ctx);
        if (json_object_get(val, "models")) {
            int r = load_strings(ld, val, ctx, "models", &u->models);
            if (r)
                return r;
        }
    }

    json_t *presets = json_object_get(root, "rate_limit_presets");
    if (presets && !json_is_object(presets))
        return fail(ld, IMGQ_EINVAL, "field 'rate_limit_presets' must be an object");
    cat->presets = imgq_xcalloc(json_object_size(presets) + 1, sizeof *cat->presets);
    json_object_foreach(presets, key, val)
    {
        struct rate_preset *rp = &cat->presets[cat->npresets++];
        char ctx[256];
        snprintf(ctx, sizeof ctx, "rate limit preset '%s'", key);
        rp->name = imgq_xstrdup(key);
        int r = get_small_int(ld, val, ctx, "images_per_minute", 0, &rp->images_per_minute);
        if (r)
            return r;
        if (rp->images_per_minute < 1)
            return fail(ld, IMGQ_EINVAL, "%s: 'images_per_minute' must be at least 1", ctx);
        json_t *t = json_object_get(val, "tokens_per_minute");
        if (t && (!json_is_integer(t) || json_integer_value(t) < 1))
            return fail(ld, IMGQ_EINVAL, "%s: 'tokens_per_minute' must be a positive integer", ctx);
        rp->tokens_per_minute = t ? json_integer_value(t) : 0;
        json_t *c = json_object_get(val, "concurrent_requests");
        if (c &&
            (!json_is_integer(c) || json_integer_value(c) < 1 || json_integer_value(c) > 1000000))
            return fail(ld, IMGQ_EINVAL,
                        "%s: 'concurrent_requests' must be an integer from 1 to 1000000", ctx);
        rp->concurrent_requests = c ? (int)json_integer_value(c) : 0;
    }

    json_t *aliases = json_object_get(root, "aliases");
    if (aliases && !json_is_object(aliases))
        return fail(ld, IMGQ_EINVAL, "field 'aliases' must be an object");
    cat->aliases = imgq_xcalloc(json_object_size(aliases) + 1, sizeof(struct alias));
    json_object_foreach(aliases, key, val)
    {
        const char *target = json_string_value(val);
        struct alias *a = &cat->aliases[cat->naliases++];
        a->name = imgq_xstrdup(key);
        for (size_t i = 0; target && i < cat->nmodels; i++)
            if (strcmp(cat->models[i].name, target) == 0)
                a->target = &cat->models[i];
        if (!a->target)
            return fail(ld, IMGQ_EINVAL, "alias '%s' names no model of the catalog", key);
    }
    return 0;
}

static int load_json(json_t *root, const char *origin, imgq_catalog **out, char *errbuf,
                     size_t errlen)
{
    struct loader ld = {errbuf, errlen, origin};
    imgq_catalog *cat = imgq_xcalloc(1, sizeof *cat);
    int r = load_root(&ld, root, cat);
    json_decref(root);
    if (r) {
        imgq_catalog_free(cat);
        return r;
    }
    *out = cat;
    return 0;
}

int imgq_catalog_load(const char *path, imgq_catalog **out, char *errbuf, size_t errlen)
{
    struct loader ld = {errbuf, errlen, path};
    FILE *f = fopen(path, "rb");
    if (!f)
        return fail(&ld, IMGQ_EIO, "cannot open: %s", strerror(errno));
    json_error_t je;
    json_t *root = json_loadf(f, JSON_REJECT_DUPLICATES, &je);
    fclose(f);
    if (!root)
        return fail(&ld, IMGQ_EPARSE, "line %d column %d: %s", je.line, je.column, je.text);
    return load_json(root, path, out, errbuf, errlen);
}

int imgq_catalog_load_string(const char *text, imgq_catalog **out, char *errbuf, size_t errlen)
{
    struct loader ld = {errbuf, errlen, "<catalog>"};
    json_error_t je;
    json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return fail(&ld, IMGQ_EPARSE, "line %d column %d: %s", je.line, je.column, je.text);
    return load_json(root, "<catalog>", out, errbuf, errlen);
}

static void free_rows(struct imgq_token_row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(rows[i].quality);
    free(rows);
}

void imgq_catalog_free(imgq_catalog *cat)
{
    if (!cat)
        return;
    for (size_t i = 0; i < cat->nmodels; i++) {
        struct imgq_model *m = &cat->models[i];
        free(m->name);
        free(m->provider);
        free(m->api);
        free_strings(m->sizes);
        free_strings(m->qualities);
        free_strings(m->serves);
        free_rows(m->tokens, m->ntokens);
        free_rows(m->image_prices, m->nimage_prices);
        free(m->size_rule);
        for (size_t k = 0; k < m->ntoken_factors; k++)
            free(m->token_factors[k].quality);
        free(m->token_factors);
        free(m->provider_model);
        free(m->provider_edit_model);
        free_strings(m->fallbacks);
        free(m->deprecated);
        free(m->shutdown);
        free(m->successor);
        free(m->source);
        free(m->as_of);
        free(m->charges_failures_source);
        free(m->charges_failures_as_of);
    }
    free(cat->models);
    for (size_t i = 0; i < cat->nroutes; i++) {
        free(cat->routes[i].name);
        free(cat->routes[i].description);
    }
    free(cat->routes);
    for (size_t i = 0; i < cat->naliases; i++)
        free(cat->aliases[i].name);
    free(cat->aliases);
    for (size_t i = 0; i < cat->nuse_cases; i++) {
        free(cat->use_cases[i].name);
        free(cat->use_cases[i].quality);
        free_strings(cat->use_cases[i].models);
    }
    free(cat->use_cases);
    for (size_t i = 0; i < cat->npresets; i++)
        free(cat->presets[i].name);
    free(cat->presets);
    free(cat->version);
    free(cat);
}

/* Lookups ------------------------------------------------------------------------------ */

const char *imgq_catalog_version(const imgq_catalog *cat)
{
    return cat->version;
}

const struct imgq_model *imgq_catalog_model(const imgq_catalog *cat, const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < cat->nmodels; i++)
        if (strcmp(cat->models[i].name, name) == 0)
            return &cat->models[i];
    for (size_t i = 0; i < cat->naliases; i++)
        if (strcmp(cat->aliases[i].name, name) == 0)
            return cat->aliases[i].target;
    return NULL;
}

int imgq_catalog_rate_preset(const imgq_catalog *cat, const char *name)
{
    for (size_t i = 0; name && i < cat->npresets; i++)
        if (strcmp(cat->presets[i].name, name) == 0)
            return cat->presets[i].images_per_minute;
    return 0;
}

int imgq_catalog_rate_preset_get(const imgq_catalog *cat, const char *name, int *images,
                                 int64_t *tokens, int *concurrent)
{
    for (size_t i = 0; name && i < cat->npresets; i++)
        if (strcmp(cat->presets[i].name, name) == 0) {
            *images = cat->presets[i].images_per_minute;
            *tokens = cat->presets[i].tokens_per_minute;
            *concurrent = cat->presets[i].concurrent_requests;
            return 0;
        }
    return IMGQ_ENOTFOUND;
}

const struct imgq_use_case *imgq_catalog_use_case(const imgq_catalog *cat, const char *name)
{
    for (size_t i = 0; name && i < cat->nuse_cases; i++)
        if (strcmp(cat->use_cases[i].name, name) == 0)
            return &cat->use_cases[i];
    return NULL;
}

static const char *const need_names[] = {"text",        "edit",     "seed", "negative_prompt",
                                         "transparent", "guidance", "mask"};
#define NNEEDS (sizeof need_names / sizeof need_names[0])

unsigned imgq_need_parse(const char *name)
{
    for (unsigned i = 0; name && i < NNEEDS; i++)
        if (strcmp(name, need_names[i]) == 0)
            return 1u << i;
    return 0;
}

const char *imgq_need_name(unsigned need)
{
    for (unsigned i = 0; i < NNEEDS; i++)
        if (need == 1u << i)
            return need_names[i];
    return "?";
}

const struct imgq_model *imgq_catalog_model_at(const imgq_catalog *cat, size_t i)
{
    return i < cat->nmodels ? &cat->models[i] : NULL;
}

const struct imgq_route *imgq_catalog_route(const imgq_catalog *cat, const char *name)
{
    if (!name)
        name = "list";
    for (size_t i = 0; i < cat->nroutes; i++)
        if (strcmp(cat->routes[i].name, name) == 0)
            return &cat->routes[i];
    return NULL;
}

const struct imgq_route *imgq_catalog_route_at(const imgq_catalog *cat, size_t i)
{
    return i < cat->nroutes ? &cat->routes[i] : NULL;
}

int imgq_size_parse(const char *size, int *w, int *h)
{
    if (!size)
        return IMGQ_EINVAL;
    const char *p = size;
    long v[2];
    for (int i = 0; i < 2; i++) {
        if (*p < '1' || *p > '9')
            return IMGQ_EINVAL;
        long x = 0;
        while (*p >= '0' && *p <= '9') {
            x = x * 10 + (*p++ - '0');
            if (x > 100000)
                return IMGQ_EINVAL;
        }
        v[i] = x;
        if (i == 0 && *p++ != 'x')
            return IMGQ_EINVAL;
    }
    if (*p)
        return IMGQ_EINVAL;
    *w = (int)v[0];
    *h = (int)v[1];
    return 0;
}

static bool in_list(char **list, const char *s)
{
    for (char **p = list; p && *p; p++)
        if (strcmp(*p, s) == 0)
            return true;
    return false;
}

bool imgq_model_allows_size(const struct imgq_model *m, const char *size)
{
    if (!size)
        return false;
    if (in_list(m->sizes, size))
        return true;
    int w, h;
    return m->size_rule && imgq_size_parse(size, &w, &h) == 0 &&
           imgq_model_check_size(m, w, h, NULL, 0) == 0;
}

/* 1234567 -> "1,234,567" */
static void grouped(int64_t v, char *buf, size_t len)
{
    char digits[32];
    int nd = snprintf(digits, sizeof digits, "%" PRId64, v);
    size_t o = 0;
    for (int i = 0; i < nd && o + 2 < len; i++) {
        if (i > 0 && digits[i - 1] != '-' && (nd - i) % 3 == 0)
            buf[o++] = ',';
        buf[o++] = digits[i];
    }
    buf[o] = '\0';
}

/* " (NxN)" when px is a perfect square, for messages. */
static void square_note(int64_t px, char *buf, size_t len)
{
    int64_t r = 0;
    while ((r + 1) * (r + 1) <= px && r < 3037000499)
        r++;
    if (r * r == px)
        snprintf(buf, len, " (%" PRId64 "x%" PRId64 ")", r, r);
    else
        buf[0] = '\0';
}

static int size_refused(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int size_refused(char *why, size_t whylen, const char *fmt, ...)
{
    if (why && whylen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, whylen, fmt, ap);
        va_end(ap);
    }
    return IMGQ_EINVAL;
}

int imgq_model_check_size(const struct imgq_model *m, int w, int h, char *why, size_t whylen)
{
    char size[32];
    snprintf(size, sizeof size, "%dx%d", w, h);
    if (w < 1 || h < 1)
        return size_refused(why, whylen, "%s is not a size", size);
    if (in_list(m->sizes, size))
        return 0;
    const struct imgq_size_rule *r = m->size_rule;
    if (!r) {
        char list[400] = "";
        size_t o = 0;
        for (char **p = m->sizes; *p && o < sizeof list; p++)
            o += (size_t)snprintf(list + o, sizeof list - o, "%s%s", p == m->sizes ? "" : ", ", *p);
        return size_refused(why, whylen, "%s takes only the sizes %s (%s is not one)", m->name,
                            list, size);
    }
    int lo = w < h ? w : h, hi = w < h ? h : w;
    int64_t px = (int64_t)w * h;
    char a[32], b[32], sq[48];
    if (r->multiple_of > 1 && (w % r->multiple_of || h % r->multiple_of))
        return size_refused(why, whylen,
                            "%s takes sizes whose sides are multiples of %d (%s is not)", m->name,
                            r->multiple_of, size);
    if ((r->min_side && lo < r->min_side) || (r->max_side && hi > r->max_side)) {
        if (r->min_side && r->max_side)
            return size_refused(why, whylen, "%s takes sides from %d to %d pixels (%s is not)",
                                m->name, r->min_side, r->max_side, size);
        if (r->max_side)
            return size_refused(why, whylen, "%s takes sides of at most %d pixels (%s is not)",
                                m->name, r->max_side, size);
        return size_refused(why, whylen, "%s takes sides of at least %d pixels (%s is not)",
                            m->name, r->min_side, size);
    }
    if (r->min_pixels && px < r->min_pixels) {
        grouped(r->min_pixels, a, sizeof a);
        grouped(px, b, sizeof b);
        square_note(r->min_pixels, sq, sizeof sq);
        return size_refused(why, whylen, "%s needs at least %s pixels%s; %s has %s", m->name, a, sq,
                            size, b);
    }
    if (r->max_pixels && px > r->max_pixels) {
        grouped(r->max_pixels, a, sizeof a);
        grouped(px, b, sizeof b);
        square_note(r->max_pixels, sq, sizeof sq);
        return size_refused(why, whylen, "%s takes at most %s pixels%s; %s has %s", m->name, a, sq,
                            size, b);
    }
    if (r->max_aspect_num && (int64_t)hi * r->max_aspect_den > (int64_t)lo * r->max_aspect_num)
        return size_refused(why, whylen, "%s takes aspect ratios from %d:%d to %d:%d (%s is not)",
                            m->name, r->max_aspect_den, r->max_aspect_num, r->max_aspect_num,
                            r->max_aspect_den, size);
    return 0;
}

bool imgq_model_allows_quality(const struct imgq_model *m, const char *quality)
{
    return quality && in_list(m->qualities, quality);
}

/* The row for (quality, w, h); quality NULL/"auto" without an "auto" row = the largest. */
static int table_lookup(const struct imgq_token_row *rows, size_t n, const char *quality, int w,
                        int h, int64_t *out)
{
    bool worst = !quality || strcmp(quality, "auto") == 0;
    bool found = false;
    int64_t best = 0;
    for (size_t i = 0; i < n; i++) {
        const struct imgq_token_row *r = &rows[i];
        if (r->width != w || r->height != h)
            continue;
        if (quality && strcmp(r->quality, quality) == 0) {
            *out = r->tokens;
            return 0;
        }
        if (worst && (!found || r->tokens > best)) {
            best = r->tokens;
            found = true;
        }
    }
    if (!found)
        return IMGQ_ENOTFOUND;
    *out = best;
    return 0;
}

/*
 * providers.md 1.1 (gpt-image-2, derived from community data; reproduces the measured table):
 * f = factor of the quality; L, S = long and short side; s = (2*f*S + L) div (2*L);
 * tokens = ceil(f * s * (2,000,000 + w*h) / 4,000,000).  Integers throughout.
 */
static int formula_tokens(const struct imgq_model *m, const char *quality, int w, int h,
                          int64_t *out)
{
    bool worst = !quality || strcmp(quality, "auto") == 0;
    int64_t f = 0;
    for (size_t i = 0; i < m->ntoken_factors; i++) {
        const struct imgq_token_factor *tf = &m->token_factors[i];
        if (worst ? tf->factor > f : strcmp(tf->quality, quality) == 0)
            f = tf->factor;
        if (!worst && f)
            break;
    }
    if (!f || w < 1 || h < 1)
        return IMGQ_ENOTFOUND;
    int64_t L = w > h ? w : h, S = w > h ? h : w, s, num;
    s = (2 * f * S + L) / (2 * L);
    if (__builtin_mul_overflow(f, s, &num) ||
        __builtin_mul_overflow(num, 2000000 + (int64_t)w * h, &num))
        return IMGQ_ERANGE;
    *out = num / 4000000 + (num % 4000000 != 0);
    return 0;
}

int imgq_model_output_tokens(const struct imgq_model *m, const char *quality, int w, int h,
                             int64_t *tokens)
{
    int r = table_lookup(m->tokens, m->ntokens, quality, w, h, tokens);
    if (r == IMGQ_ENOTFOUND && m->ntoken_factors)
        r = formula_tokens(m, quality, w, h, tokens);
    return r;
}

int imgq_model_image_price(const struct imgq_model *m, const char *quality, int w, int h,
                           imgq_micros *price)
{
    if (m->nimage_prices &&
        table_lookup(m->image_prices, m->nimage_prices, quality, w, h, price) == 0)
        return 0;
    if (m->prices.per_image > 0) {
        *price = m->prices.per_image;
        return 0;
    }
    return IMGQ_ENOTFOUND;
}

/* Costs -------------------------------------------------------------------------------- */

typedef __int128 i128; /* GCC/Clang extension: exact intermediate products for money */

/* a*b + acc, refusing overflow of the 128-bit intermediate (prices and multipliers are any
 * int64 the catalog holds, so even 128 bits can overflow). */
static bool mul_add(i128 *acc, i128 a, i128 b)
{
    i128 p;
    return !__builtin_mul_overflow(a, b, &p) && !__builtin_add_overflow(*acc, p, acc);
}

static int finish(i128 sum, i128 scale, const struct imgq_route *route, imgq_micros *out)
{
    i128 mult = route ? route->multiplier_ppm : 1000000;
    i128 den = scale * 1000000, v = 0;
    if (!mul_add(&v, sum, mult) || __builtin_add_overflow(v, den / 2, &v))
        return IMGQ_ERANGE;
    v /= den;
    if (v > INT64_MAX)
        return IMGQ_ERANGE;
    *out = (imgq_micros)v;
    return 0;
}

static bool usage_valid(const struct imgq_usage *u)
{
    return u->text_in >= 0 && u->cached_text_in >= 0 && u->image_in >= 0 &&
           u->cached_image_in >= 0 && u->image_out >= 0 && u->text_out >= 0 && u->images >= 0;
}

int imgq_cost_from_usage(const struct imgq_model *m, const struct imgq_route *route,
                         const struct imgq_usage *u, imgq_micros *out)
{
    if (!usage_valid(u))
        return IMGQ_EINVAL;
    /* Token counts are bounded so the 128-bit products below cannot overflow. */
    const int64_t lim = IMGQ_USAGE_MAX;
    if (u->text_in > lim || u->cached_text_in > lim || u->image_in > lim ||
        u->cached_image_in > lim || u->image_out > lim || u->text_out > lim || u->images > lim)
        return IMGQ_ERANGE;
    const struct imgq_prices *p = &m->prices;
    if (m->billing == IMGQ_BILL_PER_IMAGE) {
        imgq_micros each;
        int r = imgq_model_image_price(m, u->quality, u->width, u->height, &each);
        if (r)
            return r;
        i128 sum = 0;
        if (!mul_add(&sum, u->images, each))
            return IMGQ_ERANGE;
        return finish(sum, 1, route, out);
    }
    i128 sum = 0;
    if (!mul_add(&sum, u->text_in, p->text_in) ||
        !mul_add(&sum, u->cached_text_in, p->cached_text_in) ||
        !mul_add(&sum, u->image_in, p->image_in) ||
        !mul_add(&sum, u->cached_image_in, p->cached_image_in) ||
        !mul_add(&sum, u->image_out, p->image_out) || !mul_add(&sum, u->text_out, p->text_out))
        return IMGQ_ERANGE;
    return finish(sum, 1000000, route, out);
}

int imgq_ceiling_usage(const struct imgq_model *m, const struct imgq_request_shape *r,
                       struct imgq_usage *out)
{
    if (r->n < 1 || r->references < 0)
        return IMGQ_EINVAL;
    memset(out, 0, sizeof *out);
    out->images = r->n;
    out->quality = r->quality;
    out->width = r->width;
    out->height = r->height;
    if (m->billing == IMGQ_BILL_PER_IMAGE) {
        imgq_micros each;
        return imgq_model_image_price(m, r->quality, r->width, r->height, &each);
    }
    int64_t per_image;
    int rc = imgq_model_output_tokens(m, r->quality, r->width, r->height, &per_image);
    if (rc)
        return rc;
    /* With n>1 the prompt and references are billed once per image.  The catalog's figures
     * are the operator's: refuse products that do not fit instead of wrapping. */
    int64_t bytes = r->prompt_bytes ? (int64_t)r->prompt_bytes : 1, refs;
    if (r->prompt_bytes > (size_t)INT64_MAX || __builtin_mul_overflow(bytes, r->n, &out->text_in) ||
        __builtin_mul_overflow((int64_t)r->references, m->ref_image_tokens, &refs) ||
        __builtin_mul_overflow(refs, r->n, &out->image_in) ||
        __builtin_mul_overflow(per_image, r->n, &out->image_out))
        return IMGQ_ERANGE;
    return 0;
}

int imgq_cost_ceiling(const struct imgq_model *m, const struct imgq_route *route,
                      const struct imgq_request_shape *r, imgq_micros *out)
{
    struct imgq_usage u;
    int rc = imgq_ceiling_usage(m, r, &u);
    if (rc)
        return rc;
    return imgq_cost_from_usage(m, route, &u, out);
}

/* Money text --------------------------------------------------------------------------- */

void imgq_money_format(imgq_micros v, int decimals, char *buf, size_t len)
{
    if (decimals < 0)
        decimals = 0;
    if (decimals > 6)
        decimals = 6;
    bool neg = v < 0;
    uint64_t a = neg ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    uint64_t unit = 1;
    for (int i = 0; i < 6 - decimals; i++)
        unit *= 10;
    a = (a + unit / 2) / unit; /* round half away from zero at the shown precision */
    uint64_t scale = 1;
    for (int i = 0; i < decimals; i++)
        scale *= 10;
    uint64_t whole = a / scale, frac = a % scale;

    char digits[32], grouped[48];
    int nd = snprintf(digits, sizeof digits, "%" PRIu64, whole);
    int g = 0;
    for (int i = 0; i < nd; i++) {
        if (i > 0 && (nd - i) % 3 == 0)
            grouped[g++] = ',';
        grouped[g++] = digits[i];
    }
    grouped[g] = '\0';
    if (decimals > 0)
        snprintf(buf, len, "%s$%s.%0*" PRIu64, neg ? "-" : "", grouped, decimals, frac);
    else
        snprintf(buf, len, "%s$%s", neg ? "-" : "", grouped);
}

int imgq_money_parse(const char *s, imgq_micros *out)
{
    if (!s)
        return IMGQ_EINVAL;
    bool neg = false;
    if (*s == '-') {
        neg = true;
        s++;
    }
    if (*s == '$')
        s++;
    int64_t whole = 0, frac = 0;
    int nfrac = 0, ndig = 0;
    for (; *s && *s != '.'; s++) {
        if (*s == ',')
            continue;
        if (*s < '0' || *s > '9')
            return IMGQ_EINVAL;
        if (whole > (INT64_MAX / 1000000 - 9) / 10)
            return IMGQ_ERANGE;
        whole = whole * 10 + (*s - '0');
        ndig++;
    }
    if (*s == '.') {
        for (s++; *s; s++) {
            if (*s < '0' || *s > '9' || nfrac == 6)
                return IMGQ_EINVAL;
            frac = frac * 10 + (*s - '0');
            nfrac++;
            ndig++;
        }
    }
    if (ndig == 0)
        return IMGQ_EINVAL;
    for (int i = nfrac; i < 6; i++)
        frac *= 10;
    int64_t v = whole * 1000000 + frac;
    *out = neg ? -v : v;
    return 0;
}
