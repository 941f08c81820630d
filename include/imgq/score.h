/*
 * score.h - a deterministic image-quality score, for picking the best of N draft images
 * ("select": "auto" in draft->refine pipelines).
 *
 * The score is computed with integer arithmetic only: the same pixels give the same struct,
 * bit for bit, on every machine and compiler.  It is a blind measure (it knows nothing of the
 * prompt): it prefers images that are sharp, well exposed and not flat, and it is meant to
 * rank drafts of one request against each other, not to grade images of different requests.
 *
 * The formula, all divisions rounding toward zero ("/"), sqrt the integer square root
 * (floor):
 *
 * 1. Luma, BT.601 on the 8-bit samples, then alpha composited over white (as the JPEG
 *    encoder flattens it, and as most viewers show it; an RGB image has A = 255):
 *        Y0 = (299 R + 587 G + 114 B + 500) / 1000
 *        Y  = (Y0 A + 255 (255 - A) + 127) / 255                               (0..255)
 *
 * 2. Samples.  step = ceil(max(width, height) / 1024), so 1 up to 1024 pixels a side, 4 for
 *    4096.  The samples are the pixels (x, y) with x and y both multiples of step: at most
 *    1024 x 1024 of them whatever the size, which bounds the time (and keeps every sum
 *    below 2^61).  n = number of samples, always >= 1.
 *
 * 3. sharpness: the variance of the 4-neighbour Laplacian at full resolution,
 *        Lap = 4 Y(x,y) - Y(x-1,y) - Y(x+1,y) - Y(x,y-1) - Y(x,y+1),
 *    over the m samples that have all four neighbours (0 < x < width-1, 0 < y < height-1;
 *    the neighbours are adjacent pixels, not other samples, so downsampling does not hide
 *    fine detail):
 *        sharpness = (m sum(Lap^2) - sum(Lap)^2) / m^2,  0 if m = 0           (0..1040400)
 *
 * 4. contrast: the standard deviation of the samples' luma, times 1000:
 *        contrast = sqrt((1000000 (n sum(Y^2) - sum(Y)^2)) / n^2)              (0..127500)
 *
 * 5. exposure: 1000 less penalties for a mean far from mid-range and for clipped samples:
 *        mid      = min(1000, 1000 min(sum(Y), 255 n - sum(Y)) / (64 n))
 *                   (1000 while the mean luma is within 64..191, falling to 0 at 0 or 255)
 *        clipped  = 1000 c / n, c = samples with Y <= 3 or Y >= 252            (per mille)
 *        exposure = mid (1000 - clipped) / 1000                                 (0..1000)
 *
 * 6. total, the number selection compares, is the product of three parts of 0..1000:
 *        sharp_n    = 1000 sharpness / (sharpness + 100)
 *        contrast_n = min(1000, contrast / 48)   (full marks from a deviation of 48 luma)
 *        total      = sharp_n * exposure * contrast_n                          (0..10^9)
 *    A product rather than a weighted sum because each part is necessary: a flat grey image
 *    (no contrast, no edges), a black or blown-out one (exposure 0) scores 0 however good the
 *    other parts, where a sum would still give it two thirds of the marks.  Each part falls
 *    monotonically with what it measures, so a blurred copy (lower Laplacian variance and
 *    lower deviation) scores below the sharp image, and a darkened copy below the original.
 *    Sharpness saturates (100 = half marks, a Laplacian deviation of 10 luma) so that noise
 *    cannot outweigh exposure and contrast; an image of pure noise still scores high, a
 *    known limit of Laplacian measures.
 *
 * Threads: every function is reentrant, does no I/O and touches no event loop; it may run
 * in libuv's thread pool.  imgq_score_image blocks on CPU for the decode (tens to hundreds of
 * milliseconds for a large image) and then a few milliseconds for the score.
 * Ownership: nothing is allocated that outlives a call; 'out' is the caller's.
 */
#ifndef IMGQ_SCORE_H
#define IMGQ_SCORE_H

#include <stddef.h>
#include <stdint.h>

#include "imgq/error.h"
#include "imgq/image.h"

struct imgq_score {
    int64_t total;     /* the score: higher is better; what selection compares (0..10^9) */
    int64_t sharpness; /* variance of the luma Laplacian (0..1040400) */
    int64_t exposure;  /* 0..1000, 1000 = mean luma mid-range and nothing clipped */
    int64_t contrast;  /* standard deviation of luma x 1000 (0..127500) */
    int width, height; /* of the image scored */
};

/*
 * Decode an encoded image (PNG, JPEG or WebP; imgq_image_decode with the default limits)
 * and score it.  Returns 0, or the decoder's error: IMGQ_ECODEC for data that is not a valid
 * image, IMGQ_ERANGE for one past the default limits.  On error *out is untouched.
 */
int imgq_score_image(const void *buf, size_t len, struct imgq_score *out) IMGQ_MUST_CHECK;

/*
 * Score decoded pixels (RGB8 or RGBA8).  IMGQ_EINVAL for a malformed image (no pixels, a
 * channel count other than 3 or 4, a non-positive size, a stride shorter than a row); *out
 * is then untouched.
 */
int imgq_score_pixels(const struct imgq_image *img, struct imgq_score *out) IMGQ_MUST_CHECK;

/*
 * Index of the best of s[0..n-1]: the highest total, ties going to the lowest index (the
 * first draft).  -1 if n is 0 or greater than INT_MAX, or s is NULL.
 */
int imgq_score_best(const struct imgq_score *s, size_t n);

#endif
