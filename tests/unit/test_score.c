/* test_score.c - the image-quality score: what it prefers, its exact values on small images,
 * determinism, decode errors and best-of-N selection. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "imgq/image.h"
#include "imgq/score.h"

/* A fixed pseudo-random sequence (xorshift32), so every run builds the same images. */
static uint32_t rnd(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

static void make_flat(struct imgq_image *img, int w, int h, int channels, uint8_t v)
{
    assert_int_equal(imgq_image_init(img, w, h, channels), 0);
    memset(img->pixels, v, (size_t)h * img->stride);
    if (channels == 4)
        for (size_t i = 3; i < (size_t)h * img->stride; i += 4)
            img->pixels[i] = 255;
}

/* A well-exposed detailed picture: 16x16 blocks of grey 48..207 with colour and per-pixel
 * texture of +-16 on top, so it has edges at two scales and nothing clips. */
static void make_detailed(struct imgq_image *img, int w, int h, int channels)
{
    uint32_t s = 0x9e3779b9u;
    assert_int_equal(imgq_image_init(img, w, h, channels), 0);
    int bw = (w + 15) / 16, bh = (h + 15) / 16;
    int *block = malloc(sizeof(int) * (size_t)(bw * bh));
    assert_non_null(block);
    for (int i = 0; i < bw * bh; i++)
        block[i] = 48 + (int)(rnd(&s) % 160);
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            uint8_t *px = img->pixels + (size_t)y * img->stride + (size_t)x * (size_t)channels;
            int base = block[(y / 16) * bw + x / 16];
            for (int c = 0; c < 3; c++)
                px[c] = (uint8_t)(base + (int)(rnd(&s) % 33) - 16 + (c - 1) * 8);
            if (channels == 4)
                px[3] = 255;
        }
    }
    free(block);
}

/* 5x5 box blur of the colour channels (edges clamped) into a new image. */
static void box_blur(const struct imgq_image *src, struct imgq_image *dst)
{
    int w = src->width, h = src->height, ch = src->channels;
    assert_int_equal(imgq_image_init(dst, w, h, ch), 0);
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            for (int c = 0; c < ch; c++) {
                int sum = 0;
                for (int dy = -2; dy <= 2; dy++) {
                    for (int dx = -2; dx <= 2; dx++) {
                        int yy = y + dy < 0 ? 0 : y + dy >= h ? h - 1 : y + dy;
                        int xx = x + dx < 0 ? 0 : x + dx >= w ? w - 1 : x + dx;
                        sum += src->pixels[(size_t)yy * src->stride + (size_t)(xx * ch + c)];
                    }
                }
                dst->pixels[(size_t)y * dst->stride + (size_t)(x * ch + c)] =
                    (uint8_t)((sum + 12) / 25);
            }
        }
    }
}

static struct imgq_score score_of(const struct imgq_image *img)
{
    struct imgq_score s;
    assert_int_equal(imgq_score_pixels(img, &s), 0);
    assert_int_equal(s.width, img->width);
    assert_int_equal(s.height, img->height);
    assert_in_range(s.exposure, 0, 1000);
    assert_in_range(s.contrast, 0, 127500);
    assert_in_range(s.sharpness, 0, 1040400);
    assert_in_range(s.total, 0, 1000000000);
    return s;
}

static void assert_score_equal(const struct imgq_score *a, const struct imgq_score *b)
{
    assert_int_equal(a->total, b->total);
    assert_int_equal(a->sharpness, b->sharpness);
    assert_int_equal(a->exposure, b->exposure);
    assert_int_equal(a->contrast, b->contrast);
    assert_int_equal(a->width, b->width);
    assert_int_equal(a->height, b->height);
}

static void test_sharp_beats_blurred(void **state)
{
    struct imgq_image sharp, blurred;
    make_detailed(&sharp, 256, 192, 3);
    box_blur(&sharp, &blurred);
    struct imgq_score s = score_of(&sharp), b = score_of(&blurred);
    assert_true(s.sharpness > 4 * b.sharpness);
    assert_true(s.contrast > b.contrast);
    assert_true(s.total > b.total);
    assert_true(b.total > 0);
    imgq_image_release(&blurred);
    imgq_image_release(&sharp);
}

static void test_flat_black_white_score_low(void **state)
{
    struct imgq_image good, img;
    make_detailed(&good, 128, 128, 3);
    struct imgq_score g = score_of(&good);
    assert_true(g.total > 100000000); /* a tenth of the maximum */
    assert_int_equal(g.exposure, 1000);

    make_flat(&img, 128, 128, 3, 128); /* perfectly exposed, but nothing in it */
    struct imgq_score s = score_of(&img);
    assert_int_equal(s.sharpness, 0);
    assert_int_equal(s.contrast, 0);
    assert_int_equal(s.exposure, 1000);
    assert_int_equal(s.total, 0);
    imgq_image_release(&img);

    make_flat(&img, 128, 128, 3, 0);
    s = score_of(&img);
    assert_int_equal(s.exposure, 0);
    assert_int_equal(s.total, 0);
    imgq_image_release(&img);

    make_flat(&img, 128, 128, 3, 255);
    s = score_of(&img);
    assert_int_equal(s.exposure, 0);
    assert_int_equal(s.total, 0);
    imgq_image_release(&img);

    /* Blown out but not flat: detail survives in the shadows only; still far below. */
    make_detailed(&img, 128, 128, 3);
    for (size_t i = 0; i < 128 * img.stride; i++)
        img.pixels[i] = (uint8_t)(img.pixels[i] * 4 > 255 ? 255 : img.pixels[i] * 4);
    s = score_of(&img);
    assert_true(s.total < g.total / 10);
    imgq_image_release(&img);
    imgq_image_release(&good);
}

static void test_underexposed_copy_loses(void **state)
{
    struct imgq_image img;
    make_detailed(&img, 200, 150, 3);
    struct imgq_score bright = score_of(&img);
    for (size_t i = 0; i < 150 * img.stride; i++)
        img.pixels[i] /= 4;
    struct imgq_score dark = score_of(&img);
    assert_true(dark.exposure < bright.exposure);
    assert_true(dark.contrast < bright.contrast);
    assert_true(dark.sharpness < bright.sharpness);
    assert_true(dark.total < bright.total / 4);
    imgq_image_release(&img);
}

/* The formula of score.h worked by hand on a 4x3 grey image:
 *   100 100 100 100
 *   100 200 100 100
 *   100 100 100 100
 * Laplacians at the two interior pixels: 4*200 - 400 = 400 and 4*100 - 500 = -100, so
 * sharpness = (2 * 170000 - 300^2) / 4 = 62500.  Luma: n = 12, sum 1300, sum of squares
 * 150000: contrast = sqrt(10^6 * (12 * 150000 - 1300^2) / 144) = sqrt(763888888) = 27638.
 * exposure: mid = min(1000, 1000 * 1300 / 768) = 1000, nothing clipped: 1000.
 * total = (1000 * 62500 / 62600) * 1000 * (27638 / 48) = 998 * 1000 * 575. */
static void test_exact_values(void **state)
{
    struct imgq_image img;
    make_flat(&img, 4, 3, 3, 100);
    memset(img.pixels + img.stride + 3, 200, 3);
    struct imgq_score s = score_of(&img);
    assert_int_equal(s.sharpness, 62500);
    assert_int_equal(s.contrast, 27638);
    assert_int_equal(s.exposure, 1000);
    assert_int_equal(s.total, 998LL * 1000 * 575);
    imgq_image_release(&img);

    /* Luma weights and clipping: pure red (299*255+500)/1000 = 76, pure blue 29, which is
     * clipped neither way; 2x1 of red and blue: mean 52.5, mid = 1000 * 105 / 128 = 820. */
    assert_int_equal(imgq_image_init(&img, 2, 1, 3), 0);
    img.pixels[0] = 255;
    img.pixels[5] = 255;
    s = score_of(&img);
    assert_int_equal(s.exposure, 820);
    assert_int_equal(s.contrast, 23500); /* deviation (76 - 29) / 2 */
    assert_int_equal(s.sharpness, 0);
    assert_int_equal(s.total, 0);
    imgq_image_release(&img);
}

/* A fixed input pinned to its score, which an independent implementation of score.h's
 * formula (Python, arbitrary-precision integers) also gives: any change to the formula or
 * its arithmetic, on any compiler or machine, shows here. */
static void test_pinned_score(void **state)
{
    struct imgq_image img;
    make_detailed(&img, 300, 200, 3);
    struct imgq_score s = score_of(&img);
    assert_int_equal(s.sharpness, 1856);
    assert_int_equal(s.contrast, 46900);
    assert_int_equal(s.exposure, 1000);
    assert_int_equal(s.total, 926196000);
    imgq_image_release(&img);
}

static void test_deterministic_and_encoded(void **state)
{
    struct imgq_image img;
    uint8_t *png;
    size_t len;
    make_detailed(&img, 160, 120, 3);
    assert_int_equal(imgq_png_encode(&img, 1, &png, &len), 0);

    struct imgq_score a, b;
    memset(&a, 0x11, sizeof(a));
    memset(&b, 0x22, sizeof(b));
    assert_int_equal(imgq_score_image(png, len, &a), 0);
    assert_int_equal(imgq_score_image(png, len, &b), 0);
    assert_score_equal(&a, &b);
    /* PNG is lossless: the encoded image scores as its pixels. */
    struct imgq_score p = score_of(&img);
    assert_score_equal(&a, &p);
    free(png);

    /* JPEG decodes too (and scores differently: it is lossy). */
    assert_int_equal(imgq_jpeg_encode(&img, 90, &png, &len), 0);
    assert_int_equal(imgq_score_image(png, len, &a), 0);
    assert_int_equal(a.width, 160);
    assert_true(a.total > 0);
    free(png);
    imgq_image_release(&img);
}

static void test_alpha_composited_over_white(void **state)
{
    struct imgq_image rgb, rgba;
    make_detailed(&rgb, 64, 48, 3);
    make_detailed(&rgba, 64, 48, 4); /* the same colours, opaque */
    struct imgq_score a = score_of(&rgb), b = score_of(&rgba);
    assert_score_equal(&a, &b);

    /* Fully transparent: white, whatever the colour channels hold. */
    for (size_t i = 3; i < 48 * rgba.stride; i += 4)
        rgba.pixels[i] = 0;
    b = score_of(&rgba);
    assert_int_equal(b.contrast, 0);
    assert_int_equal(b.exposure, 0);
    assert_int_equal(b.total, 0);

    /* Half transparent black over white: luma (0 * 128 + 255 * 127 + 127) / 255 = 127. */
    memset(rgba.pixels, 0, 48 * rgba.stride);
    for (size_t i = 3; i < 48 * rgba.stride; i += 4)
        rgba.pixels[i] = 128;
    b = score_of(&rgba);
    assert_int_equal(b.exposure, 1000);
    assert_int_equal(b.contrast, 0);
    imgq_image_release(&rgba);
    imgq_image_release(&rgb);
}

static void test_tiny_images(void **state)
{
    struct imgq_image img;
    struct imgq_score s;

    make_flat(&img, 1, 1, 3, 128);
    s = score_of(&img);
    assert_int_equal(s.sharpness, 0);
    assert_int_equal(s.contrast, 0);
    assert_int_equal(s.exposure, 1000);
    assert_int_equal(s.total, 0);
    imgq_image_release(&img);

    /* 2x2 has no interior pixel; 1x3 neither. */
    make_detailed(&img, 2, 2, 4);
    s = score_of(&img);
    assert_int_equal(s.sharpness, 0);
    assert_int_equal(s.total, 0);
    assert_true(s.contrast > 0);
    imgq_image_release(&img);
    make_detailed(&img, 1, 3, 3);
    s = score_of(&img);
    assert_int_equal(s.sharpness, 0);
    imgq_image_release(&img);

    /* 3x3 has one: the variance of one value is 0. */
    make_flat(&img, 3, 3, 3, 50);
    memset(img.pixels + img.stride + 3, 250, 3);
    s = score_of(&img);
    assert_int_equal(s.sharpness, 0);
    assert_int_equal(s.contrast, 62853); /* sqrt(10^6 * (9 * 82500 - 650^2) / 81) */
    assert_int_equal(s.total, 0);
    imgq_image_release(&img);
}

/* Past 1024 pixels a side only every step-th pixel is a sample (step = 2 up to 2048), while
 * the Laplacian still looks at adjacent pixels: columns alternating 200 and 0 are seen as 200
 * everywhere, with a Laplacian of 4*200 - 0 - 0 - 200 - 200 = 400 at each sample. */
static void test_large_image_is_sampled(void **state)
{
    struct imgq_image img;
    assert_int_equal(imgq_image_init(&img, 2048, 4, 3), 0);
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 2048; x += 2)
            memset(img.pixels + (size_t)y * img.stride + (size_t)x * 3, 200, 3);
    struct imgq_score s = score_of(&img);
    assert_int_equal(s.contrast, 0);
    assert_int_equal(s.sharpness, 0);
    assert_int_equal(s.exposure, 1000 * 55 / 64);
    assert_int_equal(s.total, 0);
    imgq_image_release(&img);

    /* 1024 is still every pixel: the same pattern then has contrast 100 x 1000. */
    assert_int_equal(imgq_image_init(&img, 1024, 4, 3), 0);
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 1024; x += 2)
            memset(img.pixels + (size_t)y * img.stride + (size_t)x * 3, 200, 3);
    s = score_of(&img);
    assert_int_equal(s.contrast, 100000);
    assert_true(s.sharpness > 0);
    imgq_image_release(&img);
}

static void test_errors(void **state)
{
    static const uint8_t garbage[] = "\x89PNG\r\n\x1a\nthis is not a png at all";
    struct imgq_score s, untouched;
    memset(&s, 0x5a, sizeof(s));
    memcpy(&untouched, &s, sizeof(s));

    assert_int_equal(imgq_score_image(garbage, sizeof(garbage), &s), IMGQ_ECODEC);
    assert_int_equal(imgq_score_image("GIF89a", 6, &s), IMGQ_ECODEC);
    assert_int_equal(imgq_score_image(NULL, 0, &s), IMGQ_ECODEC);
    assert_memory_equal(&s, &untouched, sizeof(s));

    /* Past the default limits: a 20000-pixel-wide PNG (the decoder refuses before it
     * allocates). */
    struct imgq_image img;
    uint8_t *png;
    size_t len;
    make_flat(&img, 20000, 1, 3, 128);
    assert_int_equal(imgq_png_encode(&img, 1, &png, &len), 0);
    assert_int_equal(imgq_score_image(png, len, &s), IMGQ_ERANGE);
    assert_memory_equal(&s, &untouched, sizeof(s));
    free(png);

    /* Malformed images. */
    struct imgq_image bad = img;
    bad.channels = 2;
    assert_int_equal(imgq_score_pixels(&bad, &s), IMGQ_EINVAL);
    bad = img;
    bad.stride = 10;
    assert_int_equal(imgq_score_pixels(&bad, &s), IMGQ_EINVAL);
    bad = img;
    bad.pixels = NULL;
    assert_int_equal(imgq_score_pixels(&bad, &s), IMGQ_EINVAL);
    bad = img;
    bad.height = 0;
    assert_int_equal(imgq_score_pixels(&bad, &s), IMGQ_EINVAL);
    assert_int_equal(imgq_score_pixels(NULL, &s), IMGQ_EINVAL);
    assert_memory_equal(&s, &untouched, sizeof(s));
    imgq_image_release(&img);
}

static void test_best(void **state)
{
    struct imgq_score s[4] = {{.total = 5}, {.total = 9}, {.total = 9}, {.total = -1}};
    assert_int_equal(imgq_score_best(s, 4), 1); /* tie between 1 and 2: the first */
    assert_int_equal(imgq_score_best(s, 1), 0);
    assert_int_equal(imgq_score_best(s + 2, 2), 0);
    assert_int_equal(imgq_score_best(s, 0), -1);
    assert_int_equal(imgq_score_best(NULL, 3), -1);

    struct imgq_score zeros[3] = {{0}, {0}, {0}};
    assert_int_equal(imgq_score_best(zeros, 3), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sharp_beats_blurred),
        cmocka_unit_test(test_flat_black_white_score_low),
        cmocka_unit_test(test_underexposed_copy_loses),
        cmocka_unit_test(test_exact_values),
        cmocka_unit_test(test_pinned_score),
        cmocka_unit_test(test_deterministic_and_encoded),
        cmocka_unit_test(test_alpha_composited_over_white),
        cmocka_unit_test(test_tiny_images),
        cmocka_unit_test(test_large_image_is_sampled),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_best),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
