/*
 * score.c - integer image-quality score (sharpness, exposure, contrast); the formula is
 * specified in score.h and this file follows it step by step.
 */
#include "imgq/score.h"

#include <limits.h>

/* Samples per axis at most; score.h's bounds on the sums rest on it. */
#define SCORE_MAX_SAMPLES 1024
/* A luma at or beyond these counts as clipped. */
#define SCORE_CLIP_LOW 3
#define SCORE_CLIP_HIGH 252
/* sharp_n = 1000 v / (v + SHARP_HALF); contrast_n = min(1000, contrast / CONTRAST_FULL). */
#define SCORE_SHARP_HALF 100
#define SCORE_CONTRAST_FULL 48

/* Luma of the pixel at p, composited over white when the image has alpha. */
static inline int luma_at(const uint8_t *p, int channels)
{
    int y = (299 * p[0] + 587 * p[1] + 114 * p[2] + 500) / 1000;
    if (channels == 4)
        y = (y * p[3] + 255 * (255 - p[3]) + 127) / 255;
    return y;
}

static uint64_t isqrt64(uint64_t v)
{
    uint64_t r = 0, bit = (uint64_t)1 << 62;
    while (bit > v)
        bit >>= 2;
    while (bit) {
        if (v >= r + bit) {
            v -= r + bit;
            r = (r >> 1) + bit;
        } else {
            r >>= 1;
        }
        bit >>= 2;
    }
    return r;
}

/* (scale * d) / (k * k) without overflowing: d < 2^61 but scale * d may not fit.  k*k <= 2^40
 * and scale <= 10^6 < 2^20, so both products below stay under 2^61. */
static int64_t scaled_div(int64_t d, int64_t k, int64_t scale)
{
    int64_t kk = k * k;
    return (d / kk) * scale + (d % kk) * scale / kk;
}

int imgq_score_pixels(const struct imgq_image *img, struct imgq_score *out)
{
    if (!img || !out || !img->pixels || img->width <= 0 || img->height <= 0 ||
        (img->channels != 3 && img->channels != 4) ||
        img->stride < (size_t)img->width * (size_t)img->channels)
        return IMGQ_EINVAL;

    const int w = img->width, h = img->height, ch = img->channels;
    const size_t rs = img->stride;
    const int64_t longest = w > h ? w : h;
    const int step = (int)((longest + SCORE_MAX_SAMPLES - 1) / SCORE_MAX_SAMPLES);
    /* Luma sums (all samples) and Laplacian sums (interior samples). */
    int64_t n = 0, sum_y = 0, sum_y2 = 0, clipped = 0;
    int64_t m = 0, sum_l = 0, sum_l2 = 0;

    for (int y = 0; y < h; y += step) {
        const uint8_t *row = img->pixels + (size_t)y * rs;
        const int interior_row = y > 0 && y < h - 1;
        for (int x = 0; x < w; x += step) {
            const uint8_t *p = row + (size_t)x * (size_t)ch;
            int c = luma_at(p, ch);
            n++;
            sum_y += c;
            sum_y2 += c * c;
            clipped += c <= SCORE_CLIP_LOW || c >= SCORE_CLIP_HIGH;
            if (!interior_row || x == 0 || x == w - 1)
                continue;
            int lap = 4 * c - luma_at(p - ch, ch) - luma_at(p + ch, ch) - luma_at(p - rs, ch) -
                      luma_at(p + rs, ch);
            m++;
            sum_l += lap;
            sum_l2 += (int64_t)lap * lap;
        }
    }

    struct imgq_score s = {.width = w, .height = h};
    if (m > 0)
        s.sharpness = (m * sum_l2 - sum_l * sum_l) / (m * m);
    s.contrast = (int64_t)isqrt64((uint64_t)scaled_div(n * sum_y2 - sum_y * sum_y, n, 1000000));

    int64_t dark_side = sum_y < 255 * n - sum_y ? sum_y : 255 * n - sum_y;
    int64_t mid = 1000 * dark_side / (64 * n);
    if (mid > 1000)
        mid = 1000;
    s.exposure = mid * (1000 - 1000 * clipped / n) / 1000;

    int64_t sharp_n = 1000 * s.sharpness / (s.sharpness + SCORE_SHARP_HALF);
    int64_t contrast_n = s.contrast / SCORE_CONTRAST_FULL;
    if (contrast_n > 1000)
        contrast_n = 1000;
    s.total = sharp_n * s.exposure * contrast_n;
    *out = s;
    return 0;
}

int imgq_score_image(const void *buf, size_t len, struct imgq_score *out)
{
    struct imgq_image img;
    int rc = imgq_image_decode(buf, len, NULL, IMGQ_PIXELS_AUTO, &img);
    if (rc < 0)
        return rc;
    rc = imgq_score_pixels(&img, out);
    imgq_image_release(&img);
    return rc;
}

int imgq_score_best(const struct imgq_score *s, size_t n)
{
    if (!s || n == 0 || n > INT_MAX)
        return -1;
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (s[i].total > s[best].total)
            best = i;
    return (int)best;
}
