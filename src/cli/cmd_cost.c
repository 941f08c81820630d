/*
 * cmd_cost.c - imgq cost: the procurement calculator.  What a token workload costs on each
 * route (price group) of the catalog, computed by the same code that bills jobs.  With only
 * --model, the estimated cost of one image by quality x size: token models, the catalog's
 * output tokens for the cell times the output price (prompt and reference images not
 * included, as in the providers' own per-image tables); flat models, the price of the image.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "imgq/quote.h"

/* "100M", "1.5k", "20,000,000" -> tokens; -1 if malformed. */
static int64_t parse_count(const char *s)
{
    int64_t whole = 0, frac = 0, fscale = 1;
    int digits = 0, in_frac = 0;
    for (; *s; s++) {
        if (*s == ',' || *s == '_')
            continue;
        if (*s == '.' && !in_frac) {
            in_frac = 1;
            continue;
        }
        if (*s < '0' || *s > '9')
            break;
        if (whole > INT64_MAX / 100 || fscale > 1000000000)
            return -1;
        if (in_frac) {
            frac = frac * 10 + (*s - '0');
            fscale *= 10;
        } else {
            whole = whole * 10 + (*s - '0');
        }
        digits++;
    }
    int64_t mult = 1;
    switch (*s) {
    case '\0':
        break;
    case 'k':
    case 'K':
        mult = 1000;
        s++;
        break;
    case 'm':
    case 'M':
        mult = 1000000;
        s++;
        break;
    case 'b':
    case 'B':
    case 'g':
    case 'G':
        mult = 1000000000;
        s++;
        break;
    default:
        return -1;
    }
    if (*s || !digits || whole > INT64_MAX / mult / 2)
        return -1;
    if (frac && (mult % fscale) != 0)
        return -1; /* 1.5 tokens is not a count */
    return whole * mult + frac * (mult / fscale);
}

/* The cost of one image of m on rt at quality q (NULL: a model without the knob) and size, and
 * its output tokens (token models; else 0). */
static int cell_cost(const struct imgq_model *m, const struct imgq_route *rt, const char *q,
                     const char *size, imgq_micros *cost, int64_t *tokens)
{
    int w, h;
    if (imgq_size_parse(size, &w, &h) != 0)
        return IMGQ_EINVAL;
    struct imgq_usage u = {.images = 1, .quality = q, .width = w, .height = h};
    *tokens = 0;
    if (m->billing == IMGQ_BILL_TOKENS) {
        int r = imgq_model_output_tokens(m, q, w, h, tokens);
        if (r)
            return r;
        u.image_out = *tokens;
    }
    return imgq_cost_from_usage(m, rt, &u, cost);
}

/* The per-image table of m on one route (or every route), as text or JSON cells. */
static int per_image_table(const imgq_catalog *cat, const struct imgq_model *m, const char *route,
                           int json)
{
    /* Qualities to show: the model's, without "auto" (it is the worst of them); a model
     * without the knob has one row. */
    const char *none[] = {NULL};
    size_t nq = 0;
    for (char **q = m->qualities; q && *q; q++)
        nq += strcmp(*q, "auto") != 0;
    const char **quals = nq ? calloc(nq, sizeof *quals) : none;
    if (!quals)
        return IMGQ_EXIT_FAIL;
    size_t k = 0;
    for (char **q = m->qualities; nq && *q; q++)
        if (strcmp(*q, "auto") != 0)
            quals[k++] = *q;
    if (!nq)
        nq = 1;
    int width = 12;
    for (char **sz = m->sizes; sz && *sz; sz++)
        if ((int)strlen(*sz) + 2 > width)
            width = (int)strlen(*sz) + 2;
    json_t *out = json ? json_array() : NULL;
    for (size_t i = 0;; i++) {
        const struct imgq_route *rt =
            route ? imgq_catalog_route(cat, route) : imgq_catalog_route_at(cat, i);
        if (!rt)
            break;
        if (!json) {
            printf("%s%s on %s (x%" PRId64 ".%02" PRId64 "): one image, %s\n", i ? "\n" : "",
                   m->name, rt->name, rt->multiplier_ppm / 1000000,
                   (rt->multiplier_ppm % 1000000) / 10000,
                   m->billing == IMGQ_BILL_TOKENS
                       ? "output tokens x price (prompt and reference images not included)"
                       : "flat price");
            printf("%-10s", "quality");
            for (char **sz = m->sizes; sz && *sz; sz++)
                printf(" %*s", width, *sz);
            printf("\n");
        }
        for (size_t qi = 0; qi < nq; qi++) {
            if (!json)
                printf("%-10s", quals[qi] ? quals[qi] : "-");
            for (char **sz = m->sizes; sz && *sz; sz++) {
                imgq_micros cost = 0;
                int64_t tokens = 0;
                int r = cell_cost(m, rt, quals[qi], *sz, &cost, &tokens);
                char money[48] = "-";
                if (r == 0)
                    imgq_quote_money(cost, money, sizeof money);
                if (!json) {
                    printf(" %*s", width, money);
                    continue;
                }
                if (r)
                    continue;
                json_t *o = json_object();
                json_object_set_new(o, "model", json_string(m->name));
                json_object_set_new(o, "route", json_string(rt->name));
                json_object_set_new(o, "multiplier_ppm", json_integer(rt->multiplier_ppm));
                json_object_set_new(o, "quality", quals[qi] ? json_string(quals[qi]) : json_null());
                json_object_set_new(o, "size", json_string(*sz));
                if (m->billing == IMGQ_BILL_TOKENS)
                    json_object_set_new(o, "output_tokens", json_integer(tokens));
                json_object_set_new(o, "cost_micros", json_integer(cost));
                json_object_set_new(o, "cost", json_string(money));
                json_array_append_new(out, o);
            }
            if (!json)
                printf("\n");
        }
        if (route)
            break;
    }
    if (json) {
        char *text = json_dumps(out, JSON_COMPACT);
        printf("%s\n", text);
        free(text);
        json_decref(out);
    }
    if (quals != none)
        free(quals);
    return IMGQ_EXIT_OK;
}

int imgq_cmd_cost(int argc, char **argv)
{
    const char *model = NULL, *route = NULL;
    struct imgq_usage u = {0};
    int json = 0, amounts = 0;
    static const char *const flags[] = {
        "model=",  "text-in=", "image-in=", "image-out=", "text-out=",
        "images=", "route=",   "json",      NULL};
    static const struct imgq_cli_cmd cmd = {
        "imgq cost",
        "usage: imgq cost --model M [--text-in N] [--image-in N] [--image-out N] [--text-out N]\n"
        "                 [--images N] [--route R] [--json]\n"
        "  cost of a token workload (N takes k, M, B); with only --model: the per-image\n"
        "  table, quality x size\n",
        flags,
        0,
        0,
        NULL};
    struct imgq_cli_args opt;
    int st = imgq__cli_parse(&cmd, argc, argv, &opt);
    if (st >= 0)
        return st;
    model = imgq__cli_opt(&opt, "model");
    route = imgq__cli_opt(&opt, "route");
    json = imgq__cli_set(&opt, "json");
    int64_t *const dsts[] = {NULL,        &u.text_in, &u.image_in, &u.image_out,
                             &u.text_out, &u.images,  NULL,        NULL};
    for (int i = 0; i < opt.nseen; i++) {
        int64_t *dst = dsts[opt.seen[i].flag];
        if (!dst)
            continue;
        amounts = 1;
        *dst = parse_count(opt.seen[i].value);
        if (*dst < 0) {
            fprintf(stderr, "imgq cost: --%.*s '%s' is not a token count (e.g. 20000000, 20M)\n",
                    (int)strcspn(flags[opt.seen[i].flag], "="), flags[opt.seen[i].flag],
                    opt.seen[i].value);
            return IMGQ_EXIT_USAGE;
        }
    }
    if (!model)
        return imgq__cli_error(&opt, "missing --model M");
    const imgq_catalog *cat = imgq__cli_catalog();
    if (!cat)
        return IMGQ_EXIT_FAIL;
    const struct imgq_model *m = imgq_catalog_model(cat, model);
    if (!m) {
        fprintf(stderr, "imgq cost: --model '%s' is not in the catalog\n", model);
        return IMGQ_EXIT_USAGE;
    }
    if (route && !imgq_catalog_route(cat, route)) {
        fprintf(stderr, "imgq cost: --route '%s' is not a route of the catalog\n", route);
        return IMGQ_EXIT_USAGE;
    }
    if (!amounts)
        return per_image_table(cat, m, route, json);
    if (m->billing == IMGQ_BILL_PER_IMAGE && u.images == 0) {
        fprintf(stderr, "imgq cost: model '%s' is priced per image; give --images N\n", m->name);
        return IMGQ_EXIT_USAGE;
    }
    json_t *out = json ? json_array() : NULL;
    if (!json) {
        char a[32], b[32], d[32], e[32];
        imgq__cli_grouped(u.text_in, a, sizeof a);
        imgq__cli_grouped(u.image_in, b, sizeof b);
        imgq__cli_grouped(u.image_out, d, sizeof d);
        imgq__cli_grouped(u.text_out, e, sizeof e);
        if (m->billing == IMGQ_BILL_TOKENS)
            printf("%s: %s text-in, %s image-in, %s image-out, %s text-out tokens\n", m->name, a, b,
                   d, e);
        else
            printf("%s: %" PRId64 " images\n", m->name, u.images);
        printf("%-24s %10s %16s\n", "route", "multiplier", "cost");
    }
    int rc = IMGQ_EXIT_OK;
    for (size_t i = 0;; i++) {
        const struct imgq_route *rt =
            route ? imgq_catalog_route(cat, route) : imgq_catalog_route_at(cat, i);
        if (!rt)
            break;
        imgq_micros cost;
        int r = imgq_cost_from_usage(m, rt, &u, &cost);
        if (r) {
            fprintf(stderr, "imgq cost: %s\n", imgq_strerror(r));
            rc = IMGQ_EXIT_FAIL;
            break;
        }
        /* Cents when the figure is whole cents, else every micro-dollar. */
        char money[64];
        imgq_money_format(cost, json || cost % 10000 ? 6 : 2, money, sizeof money);
        if (json) {
            json_t *o = json_object();
            json_object_set_new(o, "model", json_string(m->name));
            json_object_set_new(o, "route", json_string(rt->name));
            json_object_set_new(o, "multiplier_ppm", json_integer(rt->multiplier_ppm));
            json_object_set_new(o, "cost_micros", json_integer(cost));
            json_object_set_new(o, "cost", json_string(money));
            json_array_append_new(out, o);
        } else {
            printf("%-24s %6" PRId64 ".%02" PRId64 " %16s\n", rt->name,
                   rt->multiplier_ppm / 1000000, (rt->multiplier_ppm % 1000000) / 10000, money);
        }
        if (route)
            break;
    }
    if (json) {
        char *text = json_dumps(out, JSON_COMPACT);
        printf("%s\n", text);
        free(text);
        json_decref(out);
    }
    return rc;
}
