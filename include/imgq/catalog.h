/*
 * catalog.h - models, prices, token tables, capabilities and routes, loaded from JSON.
 *
 * The catalog is data (deploy/catalog.json, or the user's own file): no price lives in C.
 * Money is integer micro-dollars (imgq_micros).  Token prices are micro-dollars per one
 * million tokens; flat prices are micro-dollars per image; a route's price group is a
 * multiplier in parts per million (300000 = 0.30 of list).
 *
 * Ownership: a catalog owns every model and route in it; pointers returned by lookups are
 * borrowed and live until imgq_catalog_free().  A loaded catalog is immutable, so it may be
 * read from any thread.
 */
#ifndef IMGQ_CATALOG_H
#define IMGQ_CATALOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imgq/error.h"

typedef int64_t imgq_micros; /* US dollars x 1,000,000 */

/* Capabilities a job can need (catalog model field "capabilities"). */
enum imgq_need {
    IMGQ_NEED_TEXT = 1 << 0,            /* legible text in the image */
    IMGQ_NEED_EDIT = 1 << 1,            /* image-to-image editing */
    IMGQ_NEED_SEED = 1 << 2,            /* reproducible seed */
    IMGQ_NEED_NEGATIVE_PROMPT = 1 << 3, /* negative_prompt */
    IMGQ_NEED_TRANSPARENT = 1 << 4,     /* transparent background */
    IMGQ_NEED_GUIDANCE = 1 << 5,        /* guidance_scale (within the model's guidance_range) */
    IMGQ_NEED_MASK = 1 << 6             /* an edit mask applied to the first reference image */
};
/* The names, comma-separated, for messages: "text, edit, seed, ...". */
#define IMGQ_NEED_NAMES "text, edit, seed, negative_prompt, transparent, guidance, mask"
/* "text" -> IMGQ_NEED_TEXT, ...; 0 if unknown.  imgq_need_name: the reverse, for one bit. */
unsigned imgq_need_parse(const char *name);
const char *imgq_need_name(unsigned need);

enum imgq_billing {
    IMGQ_BILL_TOKENS = 1,   /* usage tokens x per-1M-token prices */
    IMGQ_BILL_PER_IMAGE = 2 /* flat price per generated image */
};

/* Prices in micro-dollars per 1M tokens (token billing) or per image (per_image). */
struct imgq_prices {
    int64_t text_in;
    int64_t cached_text_in;
    int64_t image_in;
    int64_t cached_image_in;
    int64_t image_out;
    int64_t text_out;
    int64_t per_image;
};

/*
 * Sizes a model takes beyond its 'sizes' list (catalog field "size_rule"): a WxH not listed is
 * allowed when it satisfies every limit set here.  All integers; 0 = no such limit.
 */
struct imgq_size_rule {
    int multiple_of;                    /* both sides divisible by this */
    int min_side, max_side;             /* each side within [min_side, max_side] */
    int64_t min_pixels, max_pixels;     /* w*h within [min_pixels, max_pixels] */
    int max_aspect_num, max_aspect_den; /* long side / short side <= num/den ("max_aspect") */
};

/* Output tokens of a quality for the size formula (catalog "output_token_factors"). */
struct imgq_token_factor {
    char *quality;
    int64_t factor;
};

/* One row of a quality x size output-token table. */
struct imgq_token_row {
    int width, height;
    char *quality;
    int64_t tokens;
};

struct imgq_model {
    char *name;
    char *provider; /* "openai", "google", ... */
    char *api;      /* wire shape: "openai-images", ... */
    enum imgq_billing billing;
    struct imgq_prices prices;
    int n_max;                /* largest n a job may ask for */
    int n_per_call;           /* images one provider call can return (1 = fan out) */
    int max_prompt_chars;     /* 0 = no limit */
    int max_references;       /* reference images accepted: > 0 exactly when the model has the
                                 edit capability (the loader refuses a catalog where not) */
    int64_t ref_image_tokens; /* input image tokens per reference image (token billing) */
    char **sizes;             /* allowed "WxH" strings; NULL-terminated */
    char **qualities;         /* allowed quality values; NULL-terminated; "auto" = worst case */
    struct imgq_token_row *tokens; /* output-token table */
    size_t ntokens;
    struct imgq_token_row *image_prices; /* per-image price by size x quality (flat models
                                            whose price varies); 'tokens' holds micros */
    size_t nimage_prices;
    bool charges_failures; /* provider bills failed requests */
    /* Where that billing fact comes from and its date (the provider's own billing docs), or
     * NULL: catalog fields charges_failures_source and charges_failures_as_of (YYYY-MM-DD). */
    char *charges_failures_source, *charges_failures_as_of;
    unsigned capabilities; /* OR of enum imgq_need */
    char **serves;         /* request qualities it is good enough for (routing); NULL-terminated */
    char *deprecated;      /* "YYYY-MM-DD" or NULL */
    char *shutdown;        /* "YYYY-MM-DD" or NULL */
    char *successor;       /* model to use instead, or NULL */
    /* NULL, or the limits that admit sizes not in 'sizes' (imgq_model_check_size). */
    struct imgq_size_rule *size_rule;
    /*
     * Token-billed models whose sizes are not all in the table: output tokens of a size the
     * table lacks follow the gpt-image-2 formula of providers.md 1.1 with these factors
     * (imgq_model_output_tokens).  NULL/0 when absent.
     */
    struct imgq_token_factor *token_factors;
    size_t ntoken_factors;
    double guidance_min, guidance_max; /* guidance_range, for the guidance capability */
    char *provider_model;              /* the provider's own name for the model, or NULL */
    /* The provider's name for the model that takes the job's reference images, when that is
     * another model (DashScope: qwen-image-2.0 edits while qwen-image-plus generates), or NULL:
     * provider_model (or the catalog name) edits too.  Only for edit-capable models. */
    char *provider_edit_model;
    char **fallbacks; /* catalog models to retarget to when this one is unavailable, in order;
                         NULL-terminated (empty when none); each names a model of the catalog */
    char *source;     /* where the figures come from */
    char *as_of;      /* date of the figures */
};

struct imgq_route {
    char *name;
    int64_t multiplier_ppm; /* 1000000 = list price */
    char *description;
};

/* A routing policy for a use case (catalog routing.use_cases). */
struct imgq_use_case {
    char *name;
    char *quality; /* low | medium | high */
    char **models; /* restrict candidates to these (NULL-terminated), or NULL for any */
};

typedef struct imgq_catalog imgq_catalog;

/*
 * Load a catalog from a JSON file (path) or string (text).  On error returns IMGQ_EIO (file),
 * IMGQ_EPARSE (JSON) or IMGQ_EINVAL (a field is missing or wrong) and, when errbuf is not NULL,
 * writes a message naming the file, the model or route and the field.  *out is untouched on
 * error.  The caller frees the catalog with imgq_catalog_free().
 */
int imgq_catalog_load(const char *path, imgq_catalog **out, char *errbuf,
                      size_t errlen) IMGQ_MUST_CHECK;
int imgq_catalog_load_string(const char *text, imgq_catalog **out, char *errbuf,
                             size_t errlen) IMGQ_MUST_CHECK;
void imgq_catalog_free(imgq_catalog *cat);

/* The catalog's version string (borrowed). */
const char *imgq_catalog_version(const imgq_catalog *cat);

/* Model by name or alias; NULL if unknown.  Aliases resolve to their target model. */
const struct imgq_model *imgq_catalog_model(const imgq_catalog *cat, const char *name);
/* Model by index, 0..count-1, for listings; NULL past the end. */
const struct imgq_model *imgq_catalog_model_at(const imgq_catalog *cat, size_t i);
/* A rate-limit preset (catalog rate_limit_presets): images per minute, 0 if unknown. */
int imgq_catalog_rate_preset(const imgq_catalog *cat, const char *name);
/* The whole preset: images per minute, and tokens per minute and concurrent requests (0 when
 * the preset sets none).  IMGQ_ENOTFOUND if there is no such preset. */
int imgq_catalog_rate_preset_get(const imgq_catalog *cat, const char *name, int *images,
                                 int64_t *tokens, int *concurrent) IMGQ_MUST_CHECK;

/* Use-case routing policy by name; NULL if unknown. */
const struct imgq_use_case *imgq_catalog_use_case(const imgq_catalog *cat, const char *name);
/* Route (price group) by name; NULL names the list-price route "list". NULL if unknown. */
const struct imgq_route *imgq_catalog_route(const imgq_catalog *cat, const char *name);

/* Route by index, 0..count-1, in catalog order; NULL past the end. */
const struct imgq_route *imgq_catalog_route_at(const imgq_catalog *cat, size_t i);

/* Parse "WxH" into positive integers.  IMGQ_EINVAL if malformed. */
int imgq_size_parse(const char *size, int *w, int *h) IMGQ_MUST_CHECK;
/*
 * Whether the model allows this size string: listed in 'sizes', or a WxH its size rule admits.
 * Quality: the exact value is listed.
 */
bool imgq_model_allows_size(const struct imgq_model *m, const char *size);
bool imgq_model_allows_quality(const struct imgq_model *m, const char *quality);

/*
 * Whether the model can make a w x h image: a size in its list, or one its size rule admits.
 * 0 if so; else IMGQ_EINVAL and, when why is not NULL, a sentence naming the model and the limit
 * it breaks, e.g. "gpt-image-2 takes sizes whose sides are multiples of 16 (1000x1000 is not)".
 */
int imgq_model_check_size(const struct imgq_model *m, int w, int h, char *why, size_t whylen);

/*
 * Output image tokens of one image at this quality and size, from the model's table, or, for
 * a size the table lacks, from its output_token_factors formula (providers.md 1.1).
 * quality NULL or "auto" means the most expensive quality of that size (the worst case).
 * IMGQ_ENOTFOUND if neither gives a figure.
 */
int imgq_model_output_tokens(const struct imgq_model *m, const char *quality, int w, int h,
                             int64_t *tokens) IMGQ_MUST_CHECK;

/*
 * Flat price of one image at this quality and size: the model's image_prices row if it has
 * one, else prices.per_image.  Same quality rules as imgq_model_output_tokens.
 */
int imgq_model_image_price(const struct imgq_model *m, const char *quality, int w, int h,
                           imgq_micros *price) IMGQ_MUST_CHECK;

/* Usage of one provider call, as the provider returned it (tokens, or images for flat). */
/* The largest count (tokens or images) of one call that imgq prices: far above any real call,
 * low enough that every product of a count and a price fits in 128 bits. */
#define IMGQ_USAGE_MAX (INT64_C(1) << 50)
struct imgq_usage {
    int64_t text_in;
    int64_t cached_text_in;
    int64_t image_in;
    int64_t cached_image_in;
    int64_t image_out;
    int64_t text_out;
    int64_t images; /* images generated by the call */
    /* Flat models priced by size and quality bill 'images' at the price of this shape. */
    const char *quality;
    int width, height;
};

/*
 * Cost of one call from its usage: sum of tokens x price (or images x per_image), times the
 * route's multiplier (NULL = list), rounded half up to the micro-dollar once per call.
 * IMGQ_ERANGE on overflow.
 */
int imgq_cost_from_usage(const struct imgq_model *m, const struct imgq_route *route,
                         const struct imgq_usage *u, imgq_micros *out) IMGQ_MUST_CHECK;

/* The shape of a request, enough to bound its cost before it is sent. */
struct imgq_request_shape {
    const char *quality; /* NULL or "auto" = worst quality */
    int width, height;
    int n;               /* images asked of this call */
    size_t prompt_bytes; /* a token is at least one byte, so bytes bound text tokens */
    int references;      /* reference images sent */
};

/*
 * Worst-case usage and cost of a call of this shape: what imgq reserves before spending and
 * bills when a provider returns no usage.  IMGQ_ENOTFOUND if the token table lacks the size.
 */
int imgq_ceiling_usage(const struct imgq_model *m, const struct imgq_request_shape *r,
                       struct imgq_usage *out) IMGQ_MUST_CHECK;
int imgq_cost_ceiling(const struct imgq_model *m, const struct imgq_route *route,
                      const struct imgq_request_shape *r, imgq_micros *out) IMGQ_MUST_CHECK;

/*
 * Money text.  imgq_money_format writes "$4,250.00" style text with 'decimals' digits after
 * the point (0..6; the value is rounded half away from zero), thousands separated by commas.
 * imgq_money_parse reads "12", "0.5", "$1,234.567890" into micro-dollars; IMGQ_EINVAL if it is
 * not a number or has more than 6 decimals, IMGQ_ERANGE on overflow.
 */
void imgq_money_format(imgq_micros v, int decimals, char *buf, size_t len);
int imgq_money_parse(const char *s, imgq_micros *out) IMGQ_MUST_CHECK;

#endif
