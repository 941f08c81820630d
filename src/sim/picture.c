/*
 * picture.c - the simulator's images: a gradient and a few shapes chosen by a variant number,
 * so the same prompt and index always give the same picture and different ones look different.
 *
 * Encoding a large PNG costs tens of milliseconds, far more than serving it, so encodings are
 * cached by (size, variant, format, quality, alpha) as base64 text ready to embed in JSON; a
 * benchmark is then bound by the network, not by zlib.  Eviction is first-in first-out.
 */
#include <stdlib.h>
#include <string.h>

#include "imgq/alloc.h"
#include "imgq/base64.h"
#include "imgq/image.h"
#include "sim.h"

struct picture {
    int w, h;
    uint32_t variant;
    enum picture_format fmt;
    int quality;
    bool alpha;
    char *b64;
    size_t len;
};

struct picture_cache {
    struct picture *items; /* a ring: the oldest is at 'next' once full */
    size_t max, count, next;
};

struct picture_cache *picture_cache_new(size_t max_entries)
{
    struct picture_cache *pc = imgq_xcalloc(1, sizeof(*pc));
    pc->max = max_entries ? max_entries : 1;
    pc->items = imgq_xcalloc(pc->max, sizeof(*pc->items));
    return pc;
}

void picture_cache_free(struct picture_cache *pc)
{
    if (!pc)
        return;
    for (size_t i = 0; i < pc->count; i++)
        free(pc->items[i].b64);
    free(pc->items);
    free(pc);
}

static uint64_t mix(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void put_px(struct imgq_image *img, int x, int y, const uint8_t rgb[3])
{
    uint8_t *p = img->pixels + (size_t)y * img->stride + (size_t)x * (size_t)img->channels;
    p[0] = rgb[0];
    p[1] = rgb[1];
    p[2] = rgb[2];
    if (img->channels == 4)
        p[3] = 255;
}

static void draw(struct imgq_image *img, uint32_t variant, bool alpha)
{
    uint64_t st = variant * 0x2545f4914f6cdd1dull + 1;
    uint8_t c0[3], c1[3];
    for (int i = 0; i < 3; i++) {
        c0[i] = (uint8_t)mix(&st);
        c1[i] = (uint8_t)mix(&st);
    }
    int style = (int)(mix(&st) % 3);
    int w = img->width, h = img->height;

    /* Background: a linear or radial gradient (transparent when alpha is asked for). */
    for (int y = 0; y < h; y++) {
        uint8_t *row = img->pixels + (size_t)y * img->stride;
        for (int x = 0; x < w; x++) {
            int64_t t; /* 0..1024 */
            if (style == 0) {
                t = (int64_t)x * 1024 / w;
            } else if (style == 1) {
                t = ((int64_t)x * 512 / w) + ((int64_t)y * 512 / h);
            } else {
                int64_t dx = 2 * (int64_t)x - w, dy = 2 * (int64_t)y - h;
                int64_t d2 = dx * dx * 1024 / ((int64_t)w * w) + dy * dy * 1024 / ((int64_t)h * h);
                t = d2 > 1024 ? 1024 : d2;
            }
            uint8_t *p = row + (size_t)x * (size_t)img->channels;
            for (int i = 0; i < 3; i++)
                p[i] = (uint8_t)((c0[i] * (1024 - t) + c1[i] * t) / 1024);
            if (img->channels == 4)
                p[3] = alpha ? 0 : 255;
        }
    }

    /* Three to six shapes: filled circles and rectangles. */
    int shapes = 3 + (int)(mix(&st) % 4);
    for (int s = 0; s < shapes; s++) {
        uint8_t col[3] = {(uint8_t)mix(&st), (uint8_t)mix(&st), (uint8_t)mix(&st)};
        int cx = (int)(mix(&st) % (uint64_t)w), cy = (int)(mix(&st) % (uint64_t)h);
        int m = w < h ? w : h;
        int r = m / 16 + (int)(mix(&st) % (uint64_t)(m / 5 + 1));
        bool circle = mix(&st) & 1;
        int x0 = cx - r < 0 ? 0 : cx - r, x1 = cx + r >= w ? w - 1 : cx + r;
        int y0 = cy - r < 0 ? 0 : cy - r, y1 = cy + r >= h ? h - 1 : cy + r;
        for (int y = y0; y <= y1; y++)
            for (int x = x0; x <= x1; x++) {
                int64_t dx = x - cx, dy = y - cy;
                if (!circle || dx * dx + dy * dy <= (int64_t)r * r)
                    put_px(img, x, y, col);
            }
    }
}

static int render(int w, int h, uint32_t variant, enum picture_format fmt, int quality, bool alpha,
                  char **b64, size_t *len)
{
    struct imgq_image img;
    uint8_t *bytes = NULL;
    size_t n = 0;
    int rc = imgq_image_init(&img, w, h, alpha ? 4 : 3);
    if (rc)
        return rc;
    draw(&img, variant, alpha);
    if (fmt == PICTURE_WEBP)
        rc = imgq_webp_encode(&img, quality, false, &bytes, &n);
    else
        rc = imgq_png_encode(&img, -1, &bytes, &n);
    imgq_image_release(&img);
    if (rc)
        return rc;
    *b64 = imgq_base64_encode(bytes, n, len);
    free(bytes);
    return 0;
}

const char *picture_b64(struct picture_cache *pc, int w, int h, uint32_t variant,
                        enum picture_format fmt, int quality, bool alpha, size_t *len, int *err)
{
    if (fmt == PICTURE_PNG)
        quality = 0;
    for (size_t i = 0; i < pc->count; i++) {
        struct picture *p = &pc->items[i];
        if (p->w == w && p->h == h && p->variant == variant && p->fmt == fmt &&
            p->quality == quality && p->alpha == alpha) {
            *len = p->len;
            return p->b64;
        }
    }
    char *b64;
    size_t n;
    int rc = render(w, h, variant, fmt, quality, alpha, &b64, &n);
    if (rc) {
        *err = rc;
        return NULL;
    }
    struct picture *slot;
    if (pc->count < pc->max) {
        slot = &pc->items[pc->count++];
    } else {
        slot = &pc->items[pc->next];
        pc->next = (pc->next + 1) % pc->max;
        free(slot->b64);
    }
    *slot = (struct picture){w, h, variant, fmt, quality, alpha, b64, n};
    *len = n;
    return b64;
}
