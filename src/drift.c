/* drift.c - catalog drift cells and the table the queue keeps of them (drift.h). */
#include "imgq/drift.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imgq/alloc.h"
#include "imgq/queue.h"

void imgq_drift_cell(const char *model, const char *quality, int width, int height, char *buf,
                     size_t len)
{
    snprintf(buf, len, "%s|%s|%dx%d", model ? model : "", quality ? quality : "", width, height);
}

static bool parse_i64(const char *s, int64_t *out)
{
    if (!s || !*s)
        return false;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*end || v < 0)
        return false;
    *out = (int64_t)v;
    return true;
}

static struct imgq_drift_cell *cell_of(struct imgq_drift *d, const char *cell)
{
    for (size_t i = 0; i < d->ncells; i++)
        if (strcmp(d->cells[i].cell, cell) == 0)
            return &d->cells[i];
    d->cells = imgq_xrealloc(d->cells, (d->ncells + 1) * sizeof *d->cells);
    struct imgq_drift_cell *c = &d->cells[d->ncells++];
    c->cell = imgq_xstrdup(cell);
    c->ppm = IMGQ_DRIFT_PPM_ONE;
    c->count = 0;
    return c;
}

int imgq_drift_load(struct redisContext *rc, const struct imgq_keys *keys, struct imgq_drift *out,
                    char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    char key[256];
    snprintf(key, sizeof key, "%sdrift", keys->base);
    redisReply *r = redisCommand(rc, "HGETALL %s", key);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        snprintf(err, errlen, "HGETALL %s: %s", key,
                 r && r->type == REDIS_REPLY_ERROR ? r->str
                 : rc->errstr[0]                   ? rc->errstr
                                                   : "?");
        if (r)
            freeReplyObject(r);
        return IMGQ_EREDIS;
    }
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const redisReply *k = r->element[i], *v = r->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        int64_t n;
        if (!parse_i64(v->str, &n))
            continue;
        if (strcmp(k->str, "events") == 0)
            out->events = n;
        else if (strncmp(k->str, "ppm:", 4) == 0 && k->str[4] && n > IMGQ_DRIFT_PPM_ONE)
            cell_of(out, k->str + 4)->ppm = n;
        else if (strncmp(k->str, "count:", 6) == 0 && k->str[6])
            cell_of(out, k->str + 6)->count = n;
    }
    freeReplyObject(r);
    return 0;
}

int64_t imgq_drift_ppm(const struct imgq_drift *d, const char *cell)
{
    if (d)
        for (size_t i = 0; i < d->ncells; i++)
            if (strcmp(d->cells[i].cell, cell) == 0)
                return d->cells[i].ppm;
    return IMGQ_DRIFT_PPM_ONE;
}

int imgq_drift_scale(imgq_micros amount, imgq_micros part, int64_t ppm, imgq_micros *out)
{
    if (ppm <= IMGQ_DRIFT_PPM_ONE || part <= 0) {
        *out = amount;
        return 0;
    }
    if (part > amount)
        part = amount;
    __int128 v = amount + ((__int128)part * (ppm - IMGQ_DRIFT_PPM_ONE) + IMGQ_DRIFT_PPM_ONE - 1) /
                              IMGQ_DRIFT_PPM_ONE;
    if (v > INT64_MAX)
        return IMGQ_ERANGE;
    *out = (imgq_micros)v;
    return 0;
}

int imgq_drift_output_part(const struct imgq_model *m, const struct imgq_route *route,
                           const struct imgq_request_shape *s, imgq_micros *out)
{
    *out = 0;
    if (m->billing != IMGQ_BILL_TOKENS)
        return 0;
    int64_t per_image;
    int rc = imgq_model_output_tokens(m, s->quality, s->width, s->height, &per_image);
    if (rc)
        return rc;
    struct imgq_usage u = {0};
    u.quality = s->quality;
    u.width = s->width;
    u.height = s->height;
    u.images = s->n;
    if (__builtin_mul_overflow(per_image, (int64_t)s->n, &u.image_out))
        return IMGQ_ERANGE;
    return imgq_cost_from_usage(m, route, &u, out);
}

int64_t imgq_drift_observed_ppm(const struct imgq_model *m, const char *quality, int width,
                                int height, int64_t images, int64_t image_out)
{
    int64_t per_image;
    if (m->billing != IMGQ_BILL_TOKENS || images <= 0 || image_out <= 0 ||
        imgq_model_output_tokens(m, quality, width, height, &per_image) != 0 || per_image <= 0)
        return 0;
    __int128 table = (__int128)per_image * images;
    __int128 v = ((__int128)image_out * IMGQ_DRIFT_PPM_ONE + table - 1) / table;
    return v > INT64_MAX ? INT64_MAX : (int64_t)v;
}

void imgq_drift_clear(struct imgq_drift *d)
{
    for (size_t i = 0; i < d->ncells; i++)
        free(d->cells[i].cell);
    free(d->cells);
    memset(d, 0, sizeof *d);
}
