/* test_image.c - image codecs: sniffing, PNG/WebP round trips, hostile and oversize input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <spng.h>

#include "imgq/image.h"

/* A test-only CRC-32 (PNG's polynomial) to forge headers with valid checksums. */
static uint32_t crc32_png(const uint8_t *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    return c ^ 0xffffffffu;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Rewrite the IHDR's width and height (IHDR is always the first chunk, at offset 8). */
static void forge_ihdr(uint8_t *png, uint32_t w, uint32_t h)
{
    put_be32(png + 16, w);
    put_be32(png + 20, h);
    put_be32(png + 29, crc32_png(png + 12, 17)); /* type + 13 data bytes */
}

static void make_image(struct imgq_image *img, int w, int h, int channels)
{
    assert_int_equal(imgq_image_init(img, w, h, channels), 0);
    for (int y = 0; y < h; y++) {
        uint8_t *row = img->pixels + (size_t)y * img->stride;
        for (int x = 0; x < w; x++) {
            uint8_t *px = row + (size_t)x * (size_t)channels;
            px[0] = (uint8_t)(x * 255 / w);
            px[1] = (uint8_t)(y * 255 / h);
            px[2] = (uint8_t)((x ^ y) & 0xff);
            if (channels == 4)
                px[3] = (uint8_t)((x + y) & 0xff);
        }
    }
}

static void encode_png(int w, int h, int channels, uint8_t **png, size_t *len)
{
    struct imgq_image img;
    make_image(&img, w, h, channels);
    assert_int_equal(imgq_png_encode(&img, 1, png, len), 0);
    imgq_image_release(&img);
}

static void test_sniff(void **state)
{
    static const uint8_t png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0};
    static const uint8_t jpg[] = {0xff, 0xd8, 0xff, 0xe0};
    static const char webp[] = "RIFF\x10\0\0\0WEBPVP8 ";
    assert_int_equal(imgq_image_sniff(png, sizeof(png)), IMGQ_IMAGE_PNG);
    assert_int_equal(imgq_image_sniff(png, 7), IMGQ_IMAGE_UNKNOWN);
    assert_int_equal(imgq_image_sniff(jpg, sizeof(jpg)), IMGQ_IMAGE_JPEG);
    assert_int_equal(imgq_image_sniff(webp, 12), IMGQ_IMAGE_WEBP);
    assert_int_equal(imgq_image_sniff(webp, 11), IMGQ_IMAGE_UNKNOWN);
    assert_int_equal(imgq_image_sniff("GIF89a", 6), IMGQ_IMAGE_UNKNOWN);
    assert_int_equal(imgq_image_sniff(NULL, 0), IMGQ_IMAGE_UNKNOWN);
    assert_string_equal(imgq_image_format_name(IMGQ_IMAGE_WEBP), "webp");
    assert_string_equal(imgq_image_format_mime(IMGQ_IMAGE_PNG), "image/png");
    assert_string_equal(imgq_image_format_name((enum imgq_image_format)42), "unknown");
}

static void test_png_webp_round_trip(void **state)
{
    struct imgq_image src, png_px = {0}, webp_px = {0};
    uint8_t *png, *webp;
    size_t png_len, webp_len;
    enum imgq_image_format fmt;
    int w, h;
    bool alpha;

    make_image(&src, 97, 61, 3);
    assert_int_equal(imgq_png_encode(&src, -1, &png, &png_len), 0);
    assert_int_equal(imgq_image_sniff(png, png_len), IMGQ_IMAGE_PNG);
    assert_int_equal(imgq_image_info(png, png_len, &fmt, &w, &h, &alpha), 0);
    assert_int_equal(fmt, IMGQ_IMAGE_PNG);
    assert_int_equal(w, 97);
    assert_int_equal(h, 61);
    assert_false(alpha);

    assert_int_equal(imgq_image_decode(png, png_len, NULL, IMGQ_PIXELS_AUTO, &png_px), 0);
    assert_int_equal(png_px.width, 97);
    assert_int_equal(png_px.height, 61);
    assert_int_equal(png_px.channels, 3);
    assert_memory_equal(png_px.pixels, src.pixels, src.stride * 61);

    /* Lossy WebP: dimensions survive, pixels approximately. */
    assert_int_equal(imgq_webp_encode(&png_px, 80, false, &webp, &webp_len), 0);
    assert_int_equal(imgq_image_sniff(webp, webp_len), IMGQ_IMAGE_WEBP);
    assert_int_equal(imgq_image_info(webp, webp_len, &fmt, &w, &h, &alpha), 0);
    assert_int_equal(fmt, IMGQ_IMAGE_WEBP);
    assert_int_equal(w, 97);
    assert_int_equal(h, 61);
    assert_int_equal(imgq_image_decode(webp, webp_len, NULL, IMGQ_PIXELS_RGBA8, &webp_px), 0);
    assert_int_equal(webp_px.width, 97);
    assert_int_equal(webp_px.height, 61);
    assert_int_equal(webp_px.channels, 4);
    assert_int_equal(webp_px.pixels[3], 255);
    imgq_image_release(&webp_px);
    free(webp);

    /* Lossless WebP: exact. */
    assert_int_equal(imgq_webp_encode(&src, 50, true, &webp, &webp_len), 0);
    assert_int_equal(imgq_webp_decode(webp, webp_len, NULL, IMGQ_PIXELS_RGB8, &webp_px), 0);
    assert_memory_equal(webp_px.pixels, src.pixels, src.stride * 61);
    imgq_image_release(&webp_px);
    imgq_image_release(&webp_px); /* twice is harmless */
    free(webp);

    free(png);
    imgq_image_release(&png_px);
    imgq_image_release(&src);
}

static void test_rgba_round_trip(void **state)
{
    struct imgq_image src, out;
    uint8_t *png, *webp;
    size_t png_len, webp_len;
    bool alpha;

    make_image(&src, 33, 17, 4);
    assert_int_equal(imgq_png_encode(&src, 9, &png, &png_len), 0);
    assert_int_equal(imgq_image_info(png, png_len, NULL, NULL, NULL, &alpha), 0);
    assert_true(alpha);
    assert_int_equal(imgq_png_decode(png, png_len, NULL, IMGQ_PIXELS_AUTO, &out), 0);
    assert_int_equal(out.channels, 4);
    assert_memory_equal(out.pixels, src.pixels, src.stride * 17);
    imgq_image_release(&out);

    /* Asking for RGB drops alpha and keeps colour. */
    assert_int_equal(imgq_png_decode(png, png_len, NULL, IMGQ_PIXELS_RGB8, &out), 0);
    assert_int_equal(out.channels, 3);
    assert_int_equal(out.stride, 33 * 3);
    assert_memory_equal(out.pixels, src.pixels, 3);
    imgq_image_release(&out);

    assert_int_equal(imgq_webp_encode(&src, 100, true, &webp, &webp_len), 0);
    assert_int_equal(imgq_image_info(webp, webp_len, NULL, NULL, NULL, &alpha), 0);
    assert_true(alpha);
    assert_int_equal(imgq_image_decode(webp, webp_len, NULL, IMGQ_PIXELS_AUTO, &out), 0);
    assert_int_equal(out.channels, 4);
    assert_memory_equal(out.pixels, src.pixels, src.stride * 17);
    imgq_image_release(&out);

    free(webp);
    free(png);
    imgq_image_release(&src);
}

/* A 16-bit grey+alpha PNG and a palette PNG with tRNS, written by libspng directly. */
static void *spng_write(struct spng_ihdr *ihdr, const void *raw, size_t rawlen, bool plte,
                        size_t *len)
{
    spng_ctx *ctx = spng_ctx_new(SPNG_CTX_ENCODER);
    int err;
    assert_non_null(ctx);
    assert_int_equal(spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1), 0);
    assert_int_equal(spng_set_ihdr(ctx, ihdr), 0);
    if (plte) {
        struct spng_plte p = {.n_entries = 2};
        p.entries[0] = (struct spng_plte_entry){10, 20, 30, 0};
        p.entries[1] = (struct spng_plte_entry){200, 100, 50, 0};
        struct spng_trns t = {.n_type3_entries = 1};
        t.type3_alpha[0] = 7;
        assert_int_equal(spng_set_plte(ctx, &p), 0);
        assert_int_equal(spng_set_trns(ctx, &t), 0);
    }
    assert_int_equal(spng_encode_image(ctx, raw, rawlen, SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE), 0);
    void *png = spng_get_png_buffer(ctx, len, &err);
    assert_int_equal(err, 0);
    spng_ctx_free(ctx);
    return png;
}

static void test_png_color_types(void **state)
{
    struct imgq_image out;
    size_t len;

    /* 2x1 grey+alpha, 16 bits, big-endian samples: (0xffff, 0x8080), (0x0000, 0xffff). */
    static const uint8_t ga16[] = {0xff, 0xff, 0x80, 0x80, 0x00, 0x00, 0xff, 0xff};
    struct spng_ihdr ih = {.width = 2, .height = 1, .bit_depth = 16, .color_type = 4};
    void *png = spng_write(&ih, ga16, sizeof(ga16), false, &len);
    assert_int_equal(imgq_png_decode(png, len, NULL, IMGQ_PIXELS_AUTO, &out), 0);
    assert_int_equal(out.channels, 4);
    static const uint8_t want_ga[] = {255, 255, 255, 128, 0, 0, 0, 255};
    assert_memory_equal(out.pixels, want_ga, sizeof(want_ga));
    imgq_image_release(&out);
    free(png);

    /* 3x1 palette, 8 bits, entry 0 has alpha 7 via tRNS: AUTO must pick RGBA. */
    static const uint8_t idx[] = {0, 1, 0};
    struct spng_ihdr ip = {.width = 3, .height = 1, .bit_depth = 8, .color_type = 3};
    png = spng_write(&ip, idx, sizeof(idx), true, &len);
    assert_int_equal(imgq_png_decode(png, len, NULL, IMGQ_PIXELS_AUTO, &out), 0);
    assert_int_equal(out.channels, 4);
    static const uint8_t want_p[] = {10, 20, 30, 7, 200, 100, 50, 255, 10, 20, 30, 7};
    assert_memory_equal(out.pixels, want_p, sizeof(want_p));
    imgq_image_release(&out);
    assert_int_equal(imgq_png_decode(png, len, NULL, IMGQ_PIXELS_RGB8, &out), 0);
    static const uint8_t want_rgb[] = {10, 20, 30, 200, 100, 50, 10, 20, 30};
    assert_memory_equal(out.pixels, want_rgb, sizeof(want_rgb));
    imgq_image_release(&out);
    free(png);
}

static void test_garbage_and_truncated(void **state)
{
    struct imgq_image out = {0};
    uint8_t junk[4096];
    uint8_t *png, *webp;
    size_t png_len, webp_len;

    srand(7);
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (uint8_t)rand();
    assert_int_equal(imgq_image_decode(junk, sizeof(junk), NULL, 0, &out), IMGQ_ECODEC);
    assert_int_equal(imgq_image_decode(junk, 0, NULL, 0, &out), IMGQ_ECODEC);
    assert_int_equal(imgq_image_info(junk, sizeof(junk), NULL, NULL, NULL, NULL), IMGQ_ECODEC);

    /* Right magic, garbage after it. */
    memcpy(junk, "\x89PNG\r\n\x1a\n", 8);
    assert_int_equal(imgq_image_decode(junk, sizeof(junk), NULL, 0, &out), IMGQ_ECODEC);
    memcpy(junk, "RIFF\x00\x01\x00\x00WEBPVP8 ", 16);
    assert_int_equal(imgq_image_decode(junk, sizeof(junk), NULL, 0, &out), IMGQ_ECODEC);
    memcpy(junk, "\xff\xd8\xff\xe0", 4); /* JPEG: recognised, not decodable yet */
    assert_int_equal(imgq_image_decode(junk, sizeof(junk), NULL, 0, &out), IMGQ_ECODEC);

    /* Every truncation of a valid file fails cleanly (no partial image). */
    encode_png(40, 30, 3, &png, &png_len);
    for (size_t n = 0; n < png_len; n += (n < 64 ? 1 : 7)) {
        assert_int_equal(imgq_png_decode(png, n, NULL, 0, &out), IMGQ_ECODEC);
        assert_null(out.pixels);
    }
    /* A flipped bit in the pixel data breaks a CRC. */
    png[png_len / 2] ^= 0x10;
    assert_int_equal(imgq_png_decode(png, png_len, NULL, 0, &out), IMGQ_ECODEC);

    struct imgq_image src;
    make_image(&src, 40, 30, 3);
    assert_int_equal(imgq_webp_encode(&src, 75, false, &webp, &webp_len), 0);
    for (size_t n = 0; n < webp_len; n += 5)
        assert_int_equal(imgq_webp_decode(webp, n, NULL, 0, &out), IMGQ_ECODEC);
    /* The wrong decoder for the format refuses it. */
    assert_int_equal(imgq_png_decode(webp, webp_len, NULL, 0, &out), IMGQ_ECODEC);
    assert_int_equal(imgq_webp_decode(png, png_len, NULL, 0, &out), IMGQ_ECODEC);
    assert_null(out.pixels);
    free(webp);
    free(png);
    imgq_image_release(&src);
}

static void test_oversize_refused(void **state)
{
    struct imgq_image out = {0}, src;
    uint8_t *png, *webp;
    size_t png_len, webp_len;
    int w, h;

    encode_png(64, 48, 3, &png, &png_len);
    struct imgq_image_limits small = {.max_width = 32};
    assert_int_equal(imgq_png_decode(png, png_len, &small, 0, &out), IMGQ_ERANGE);
    small = (struct imgq_image_limits){.max_pixels = 64 * 48 - 1};
    assert_int_equal(imgq_png_decode(png, png_len, &small, 0, &out), IMGQ_ERANGE);
    small = (struct imgq_image_limits){.max_width = 64, .max_height = 48};
    assert_int_equal(imgq_png_decode(png, png_len, &small, 0, &out), 0);
    imgq_image_release(&out);

    /* A header claiming 100000 x 100000 (a bomb: 40 GB of RGBA) is refused before any
     * allocation, and so is one inside the per-side limit but over the pixel budget. */
    forge_ihdr(png, 100000, 100000);
    assert_int_equal(imgq_png_decode(png, png_len, NULL, 0, &out), IMGQ_ERANGE);
    assert_int_equal(imgq_image_info(png, png_len, NULL, &w, &h, NULL), 0);
    assert_int_equal(w, 100000);
    forge_ihdr(png, 16000, 16000);
    assert_int_equal(imgq_png_decode(png, png_len, NULL, 0, &out), IMGQ_ERANGE);
    forge_ihdr(png, 0x7fffffff, 1);
    assert_int_equal(imgq_image_decode(png, png_len, NULL, 0, &out), IMGQ_ERANGE);
    assert_null(out.pixels);
    free(png);

    make_image(&src, 64, 48, 3);
    assert_int_equal(imgq_webp_encode(&src, 50, false, &webp, &webp_len), 0);
    small = (struct imgq_image_limits){.max_height = 47};
    assert_int_equal(imgq_webp_decode(webp, webp_len, &small, 0, &out), IMGQ_ERANGE);
    free(webp);
    imgq_image_release(&src);
}

static void test_chunk_limits(void **state)
{
    /* A PNG whose ancillary tEXt chunk is larger than the chunk limit. */
    struct imgq_image out = {0};
    static char text[64 * 1024];
    memset(text, 'a', sizeof(text) - 1);
    struct spng_text t = {
        .keyword = "Comment", .type = SPNG_TEXT, .length = sizeof(text) - 1, .text = text};
    static const uint8_t rgb[3] = {1, 2, 3};
    struct spng_ihdr ih = {.width = 1, .height = 1, .bit_depth = 8, .color_type = 2};
    spng_ctx *ctx = spng_ctx_new(SPNG_CTX_ENCODER);
    int err;
    size_t len;
    assert_int_equal(spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1), 0);
    assert_int_equal(spng_set_ihdr(ctx, &ih), 0);
    assert_int_equal(spng_set_text(ctx, &t, 1), 0);
    assert_int_equal(spng_encode_image(ctx, rgb, 3, SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE), 0);
    void *png = spng_get_png_buffer(ctx, &len, &err);
    spng_ctx_free(ctx);
    assert_non_null(png);

    assert_int_equal(imgq_png_decode(png, len, NULL, 0, &out), 0);
    imgq_image_release(&out);
    struct imgq_image_limits l = {.max_chunk_bytes = 1024, .max_cache_bytes = 2048};
    assert_int_equal(imgq_png_decode(png, len, &l, 0, &out), IMGQ_ERANGE);
    assert_int_equal(imgq_png_decode(png, len, &l, IMGQ_PIXELS_RGB8, &out), IMGQ_ERANGE);
    assert_int_equal(imgq_image_info(png, len, NULL, NULL, NULL, NULL), 0);
    assert_null(out.pixels);
    free(png);
}

static void test_bad_arguments(void **state)
{
    struct imgq_image img = {0};
    uint8_t *buf;
    size_t len;

    assert_int_equal(imgq_image_init(&img, 0, 5, 3), IMGQ_EINVAL);
    assert_int_equal(imgq_image_init(&img, 5, 5, 2), IMGQ_EINVAL);
    assert_int_equal(imgq_image_init(&img, 100000, 100000, 4), IMGQ_ERANGE);
    assert_null(img.pixels);
    assert_int_equal(imgq_png_encode(&img, 1, &buf, &len), IMGQ_EINVAL);
    assert_int_equal(imgq_webp_encode(NULL, 1, false, &buf, &len), IMGQ_EINVAL);

    make_image(&img, 8, 8, 3);
    assert_int_equal(imgq_png_encode(&img, 10, &buf, &len), IMGQ_EINVAL);
    assert_int_equal(imgq_webp_encode(&img, 101, false, &buf, &len), IMGQ_EINVAL);
    assert_int_equal(imgq_webp_encode(&img, -1, false, &buf, &len), IMGQ_EINVAL);
    assert_int_equal(imgq_png_encode(&img, 0, &buf, &len), 0);
    assert_int_equal(imgq_png_decode(buf, len, NULL, (enum imgq_pixel_format)5, &img), IMGQ_EINVAL);
    free(buf);
    imgq_image_release(&img);

    /* WebP cannot hold more than 16383 pixels a side. */
    make_image(&img, 16384, 1, 3);
    assert_int_equal(imgq_webp_encode(&img, 50, false, &buf, &len), IMGQ_ERANGE);
    imgq_image_release(&img);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sniff),
        cmocka_unit_test(test_png_webp_round_trip),
        cmocka_unit_test(test_rgba_round_trip),
        cmocka_unit_test(test_png_color_types),
        cmocka_unit_test(test_garbage_and_truncated),
        cmocka_unit_test(test_oversize_refused),
        cmocka_unit_test(test_chunk_limits),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
