/* test_image.c - image codecs: sniffing, PNG/JPEG/WebP round trips, hostile and oversize
 * input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h> /* before jpeglib.h */
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jpeglib.h>
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
    memcpy(junk, "\xff\xd8\xff\xe0", 4);
    assert_int_equal(imgq_image_decode(junk, sizeof(junk), NULL, 0, &out), IMGQ_ECODEC);
    assert_int_equal(imgq_jpeg_decode(junk, sizeof(junk), NULL, 0, &out), IMGQ_ECODEC);
    assert_int_equal(imgq_image_info(junk, sizeof(junk), NULL, NULL, NULL, NULL), IMGQ_ECODEC);

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

/* imgq_png_verify: structure and checksums without decoding, for PNGs stored as they came. */
static void test_png_verify(void **state)
{
    (void)state;
    uint8_t *png;
    size_t len;
    int w = 0, h = 0;

    encode_png(40, 30, 4, &png, &len);
    assert_int_equal(imgq_png_verify(png, len, NULL, &w, &h), 0);
    assert_int_equal(w, 40);
    assert_int_equal(h, 30);
    assert_int_equal(imgq_png_verify(png, len, NULL, NULL, NULL), 0);
    /* Every truncation, and one byte too many after IEND, fail. */
    for (size_t n = 0; n < len; n++)
        assert_int_equal(imgq_png_verify(png, n, NULL, &w, &h), IMGQ_ECODEC);
    uint8_t *longer = malloc(len + 1);
    assert_non_null(longer);
    memcpy(longer, png, len);
    longer[len] = 0;
    assert_int_equal(imgq_png_verify(longer, len + 1, NULL, NULL, NULL), IMGQ_ECODEC);
    /* Signature and IHDR, then straight to IEND: no image data. */
    memcpy(longer, png, 33);
    memcpy(longer + 33, png + len - 12, 12);
    assert_int_equal(imgq_png_verify(longer, 45, NULL, NULL, NULL), IMGQ_ECODEC);
    free(longer);
    /* Limits: the sides, the pixel budget, a bomb's header, the largest chunk. */
    struct imgq_image_limits small = {.max_width = 39};
    assert_int_equal(imgq_png_verify(png, len, &small, NULL, NULL), IMGQ_ERANGE);
    /* The chunk limits are for chunks other than the image data, which the sides bound. */
    small = (struct imgq_image_limits){.max_chunk_bytes = 16};
    assert_int_equal(imgq_png_verify(png, len, &small, NULL, NULL), 0);
    small = (struct imgq_image_limits){.max_chunk_bytes = 12};
    assert_int_equal(imgq_png_verify(png, len, &small, NULL, NULL), IMGQ_ERANGE); /* IHDR: 13 */
    /* An unknown critical chunk ("ABCD" in place of IEND's type, CRC made right) is refused,
     * an unknown ancillary one is not. */
    memcpy(png + len - 8, "ABCD", 4);
    put_be32(png + len - 4, crc32_png(png + len - 8, 4));
    assert_int_equal(imgq_png_verify(png, len, NULL, NULL, NULL), IMGQ_ECODEC);
    memcpy(png + len - 8, "IEND", 4);
    put_be32(png + len - 4, crc32_png(png + len - 8, 4));
    assert_int_equal(imgq_png_verify(png, len, NULL, NULL, NULL), 0);
    /* A flipped bit in the pixel data breaks the IDAT's CRC. */
    png[len / 2] ^= 0x10;
    assert_int_equal(imgq_png_verify(png, len, NULL, NULL, NULL), IMGQ_ECODEC);
    png[len / 2] ^= 0x10;
    forge_ihdr(png, 100000, 100000);
    assert_int_equal(imgq_png_verify(png, len, NULL, NULL, NULL), IMGQ_ERANGE);
    forge_ihdr(png, 0, 30);
    assert_int_equal(imgq_png_verify(png, len, NULL, NULL, NULL), IMGQ_ECODEC);
    forge_ihdr(png, 40, 30);
    assert_int_equal(imgq_png_verify(png, len, NULL, NULL, NULL), 0);
    /* A bit depth that colour type 6 does not have, with a right CRC. */
    png[24] = 3;
    put_be32(png + 29, crc32_png(png + 12, 17));
    assert_int_equal(imgq_png_verify(png, len, NULL, NULL, NULL), IMGQ_ECODEC);
    free(png);

    /* Palette and 16-bit grey+alpha files pass too; a WebP does not. */
    static const uint8_t idx[] = {0, 1, 0};
    struct spng_ihdr ip = {.width = 3, .height = 1, .bit_depth = 8, .color_type = 3};
    png = spng_write(&ip, idx, sizeof(idx), true, &len);
    assert_int_equal(imgq_png_verify(png, len, NULL, &w, &h), 0);
    assert_int_equal(w, 3);
    free(png);
    static const uint8_t ga16[] = {0xff, 0xff, 0x80, 0x80, 0x00, 0x00, 0xff, 0xff};
    struct spng_ihdr ig = {.width = 2, .height = 1, .bit_depth = 16, .color_type = 4};
    png = spng_write(&ig, ga16, sizeof(ga16), false, &len);
    assert_int_equal(imgq_png_verify(png, len, NULL, &w, &h), 0);
    free(png);
    struct imgq_image src;
    make_image(&src, 8, 8, 3);
    assert_int_equal(imgq_webp_encode(&src, 75, false, &png, &len), 0);
    assert_int_equal(imgq_png_verify(png, len, NULL, NULL, NULL), IMGQ_ECODEC);
    assert_int_equal(imgq_png_verify(NULL, 0, NULL, NULL, NULL), IMGQ_ECODEC);
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

/* ---- JPEG ------------------------------------------------------------------------------- */

/* Mean absolute difference per sample between two RGB images of one size. */
static double mean_abs_diff(const struct imgq_image *a, const struct imgq_image *b)
{
    double sum = 0;
    size_t n = 0;
    for (int y = 0; y < a->height; y++)
        for (int x = 0; x < a->width; x++)
            for (int c = 0; c < 3; c++) {
                int va = a->pixels[(size_t)y * a->stride + (size_t)x * (size_t)a->channels + c];
                int vb = b->pixels[(size_t)y * b->stride + (size_t)x * (size_t)b->channels + c];
                sum += va > vb ? va - vb : vb - va;
                n++;
            }
    return sum / (double)n;
}

/* A smooth image (JPEG's home ground: the test pattern's XOR channel is noise). */
static void make_smooth(struct imgq_image *img, int w, int h, int channels)
{
    make_image(img, w, h, channels);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            img->pixels[(size_t)y * img->stride + (size_t)x * (size_t)channels + 2] =
                (uint8_t)((x + y) * 255 / (w + h));
}

static void test_jpeg_round_trip(void **state)
{
    struct imgq_image src, out = {0}, out4 = {0};
    uint8_t *jpg, *jpg_low;
    size_t len, len_low;
    enum imgq_image_format fmt;
    int w, h;
    bool alpha = true;

    make_smooth(&src, 97, 61, 3);
    assert_int_equal(imgq_jpeg_encode(&src, 92, &jpg, &len), 0);
    assert_int_equal(imgq_image_sniff(jpg, len), IMGQ_IMAGE_JPEG);
    assert_int_equal(imgq_image_info(jpg, len, &fmt, &w, &h, &alpha), 0);
    assert_int_equal(fmt, IMGQ_IMAGE_JPEG);
    assert_int_equal(w, 97);
    assert_int_equal(h, 61);
    assert_false(alpha);

    assert_int_equal(imgq_image_decode(jpg, len, NULL, IMGQ_PIXELS_AUTO, &out), 0);
    assert_int_equal(out.width, 97);
    assert_int_equal(out.height, 61);
    assert_int_equal(out.channels, 3);
    assert_int_equal(out.stride, 97 * 3);
    double d = mean_abs_diff(&src, &out);
    assert_true(d < 3.0);

    /* RGBA8 asked: the same colours, opaque. */
    assert_int_equal(imgq_jpeg_decode(jpg, len, NULL, IMGQ_PIXELS_RGBA8, &out4), 0);
    assert_int_equal(out4.channels, 4);
    for (size_t i = 0; i < 97u * 61u; i++) {
        assert_int_equal(out4.pixels[i * 4 + 3], 255);
        assert_memory_equal(out4.pixels + i * 4, out.pixels + i * 3, 3);
    }

    /* Lower quality: smaller, still the right size and close. */
    assert_int_equal(imgq_jpeg_encode(&src, 30, &jpg_low, &len_low), 0);
    assert_true(len_low < len);
    imgq_image_release(&out);
    assert_int_equal(imgq_image_decode(jpg_low, len_low, NULL, 0, &out), 0);
    assert_int_equal(out.width, 97);
    assert_true(mean_abs_diff(&src, &out) < 10.0);
    /* Deterministic: the same input gives the same bytes (content-addressed storage). */
    uint8_t *again;
    size_t len_again;
    assert_int_equal(imgq_jpeg_encode(&src, 30, &again, &len_again), 0);
    assert_int_equal(len_again, len_low);
    assert_memory_equal(again, jpg_low, len_low);
    free(again);

    /* JPEG to WebP, the worker's usual path. */
    uint8_t *webp;
    size_t webp_len;
    assert_int_equal(imgq_webp_encode(&out, 80, false, &webp, &webp_len), 0);
    assert_int_equal(imgq_image_sniff(webp, webp_len), IMGQ_IMAGE_WEBP);
    free(webp);

    free(jpg_low);
    free(jpg);
    imgq_image_release(&out4);
    imgq_image_release(&out);
    imgq_image_release(&src);
}

static void test_jpeg_alpha_flattened(void **state)
{
    struct imgq_image src, out;
    uint8_t *jpg;
    size_t len;

    /* Left half transparent (black underneath), right half opaque red. */
    assert_int_equal(imgq_image_init(&src, 32, 16, 4), 0);
    for (int y = 0; y < 16; y++)
        for (int x = 16; x < 32; x++) {
            uint8_t *p = src.pixels + (size_t)y * src.stride + (size_t)x * 4;
            p[0] = 220, p[1] = 20, p[2] = 20, p[3] = 255;
        }
    assert_int_equal(imgq_jpeg_encode(&src, 95, &jpg, &len), 0);
    assert_int_equal(imgq_jpeg_decode(jpg, len, NULL, IMGQ_PIXELS_AUTO, &out), 0);
    assert_int_equal(out.channels, 3);
    const uint8_t *white = out.pixels + 8 * out.stride + 4 * 3;
    const uint8_t *red = out.pixels + 8 * out.stride + 28 * 3;
    for (int c = 0; c < 3; c++)
        assert_true(white[c] >= 250);
    assert_true(red[0] >= 210 && red[1] <= 35 && red[2] <= 35);
    imgq_image_release(&out);
    free(jpg);
    imgq_image_release(&src);
}

/* A JPEG written by libjpeg directly: grey or colour, optionally with a scan script. */
static uint8_t *jpeg_write(int w, int h, int components, const jpeg_scan_info *scans, int nscans,
                           size_t *len)
{
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr err;
    unsigned char *mem = NULL;
    unsigned long memlen = 0;
    c.err = jpeg_std_error(&err);
    jpeg_create_compress(&c);
    jpeg_mem_dest(&c, &mem, &memlen);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = components;
    c.in_color_space = components == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(&c);
    if (scans) {
        c.scan_info = scans;
        c.num_scans = nscans;
    }
    jpeg_start_compress(&c, TRUE);
    uint8_t *row = malloc((size_t)w * (size_t)components);
    while (c.next_scanline < c.image_height) {
        for (int i = 0; i < w * components; i++)
            row[i] = (uint8_t)(i + (int)c.next_scanline);
        JSAMPROW r = row;
        jpeg_write_scanlines(&c, &r, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    free(row);
    *len = memlen;
    return mem;
}

static void test_jpeg_kinds(void **state)
{
    struct imgq_image out;
    size_t len;

    /* Greyscale: expanded to RGB. */
    uint8_t *jpg = jpeg_write(20, 10, 1, NULL, 0, &len);
    assert_int_equal(imgq_image_decode(jpg, len, NULL, IMGQ_PIXELS_AUTO, &out), 0);
    assert_int_equal(out.channels, 3);
    assert_int_equal(out.width, 20);
    assert_int_equal(out.pixels[0], out.pixels[1]);
    assert_int_equal(out.pixels[1], out.pixels[2]);
    imgq_image_release(&out);
    free(jpg);

    /* Progressive (libjpeg's standard progression, 10 scans). */
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr err;
    c.err = jpeg_std_error(&err);
    jpeg_create_compress(&c);
    c.input_components = 3;
    c.in_color_space = JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_simple_progression(&c);
    jpeg_scan_info *prog = malloc((size_t)c.num_scans * sizeof *prog);
    memcpy(prog, c.scan_info, (size_t)c.num_scans * sizeof *prog);
    int nprog = c.num_scans;
    jpeg_destroy_compress(&c);
    jpg = jpeg_write(40, 24, 3, prog, nprog, &len);
    free(prog);
    assert_int_equal(imgq_jpeg_decode(jpg, len, NULL, IMGQ_PIXELS_AUTO, &out), 0);
    assert_int_equal(out.width, 40);
    assert_int_equal(out.height, 24);
    imgq_image_release(&out);
    /* Every truncation of a progressive file fails too. */
    for (size_t n = 0; n < len; n += (n < 700 ? 3 : 1)) {
        out = (struct imgq_image){0};
        assert_int_equal(imgq_jpeg_decode(jpg, n, NULL, 0, &out), IMGQ_ECODEC);
        assert_null(out.pixels);
    }
    free(jpg);

    /* A grey progressive file with 631 scans (every AC coefficient its own band, refined bit
     * by bit): over the scan limit, refused instead of decoded slowly. */
    jpeg_scan_info *many = calloc(700, sizeof *many);
    int k = 0;
    many[k++] = (jpeg_scan_info){1, {0}, 0, 0, 0, 0};
    for (int band = 1; band <= 63; band++) {
        many[k++] = (jpeg_scan_info){1, {0}, band, band, 0, 9};
        for (int al = 8; al >= 0; al--)
            many[k++] = (jpeg_scan_info){1, {0}, band, band, al + 1, al};
    }
    jpg = jpeg_write(16, 16, 1, many, k, &len);
    assert_true(k > 500);
    assert_int_equal(imgq_jpeg_decode(jpg, len, NULL, 0, &out), IMGQ_ECODEC);
    free(jpg);
    /* The same shape under the limit decodes. */
    jpg = jpeg_write(16, 16, 1, many, 1 + 40 * 10, &len);
    assert_int_equal(imgq_jpeg_decode(jpg, len, NULL, 0, &out), 0);
    imgq_image_release(&out);
    free(jpg);
    free(many);
}

/* Offset of the SOF0 marker's height field (FFC0, length, precision, height, width). */
static size_t sof_dims(const uint8_t *jpg, size_t len)
{
    for (size_t i = 2; i + 9 < len; i++)
        if (jpg[i] == 0xff && (jpg[i + 1] == 0xc0 || jpg[i + 1] == 0xc2))
            return i + 5;
    fail_msg("no SOF marker");
    return 0;
}

static void test_jpeg_truncated_and_oversize(void **state)
{
    struct imgq_image src, out = {0};
    uint8_t *jpg;
    size_t len;
    int w, h;

    make_smooth(&src, 40, 30, 3);
    assert_int_equal(imgq_jpeg_encode(&src, 75, &jpg, &len), 0);
    /* Every truncation fails cleanly: no partial, grey-padded image. */
    for (size_t n = 0; n < len; n++) {
        assert_int_equal(imgq_jpeg_decode(jpg, n, NULL, 0, &out), IMGQ_ECODEC);
        assert_int_equal(imgq_image_decode(jpg, n, NULL, 0, &out), IMGQ_ECODEC);
        assert_null(out.pixels);
    }
    assert_int_equal(jpg[len - 2], 0xff);
    assert_int_equal(jpg[len - 1], 0xd9); /* EOI */
    /* Entropy data overwritten with a marker: corrupt, refused. */
    uint8_t *bad = malloc(len);
    memcpy(bad, jpg, len);
    bad[len / 2 + 40] = 0xff;
    bad[len / 2 + 41] = 0xd0;
    assert_int_equal(imgq_jpeg_decode(bad, len, NULL, 0, &out), IMGQ_ECODEC);
    free(bad);
    /* Trailing bytes after EOI are ignored. */
    uint8_t *longer = malloc(len + 16);
    memcpy(longer, jpg, len);
    memset(longer + len, 0, 16);
    assert_int_equal(imgq_jpeg_decode(longer, len + 16, NULL, 0, &out), 0);
    imgq_image_release(&out);
    free(longer);

    /* Limits: checked on the header, before any pixel buffer. */
    struct imgq_image_limits small = {.max_width = 39};
    assert_int_equal(imgq_jpeg_decode(jpg, len, &small, 0, &out), IMGQ_ERANGE);
    small = (struct imgq_image_limits){.max_pixels = 40 * 30 - 1};
    assert_int_equal(imgq_image_decode(jpg, len, &small, 0, &out), IMGQ_ERANGE);
    small = (struct imgq_image_limits){.max_width = 40, .max_height = 30};
    assert_int_equal(imgq_jpeg_decode(jpg, len, &small, 0, &out), 0);
    imgq_image_release(&out);

    /* A header claiming 60000 x 60000 (a bomb) is refused; info still reports it. */
    size_t at = sof_dims(jpg, len);
    jpg[at] = 60000 >> 8, jpg[at + 1] = 60000 & 0xff;
    jpg[at + 2] = 60000 >> 8, jpg[at + 3] = 60000 & 0xff;
    assert_int_equal(imgq_jpeg_decode(jpg, len, NULL, 0, &out), IMGQ_ERANGE);
    assert_int_equal(imgq_image_info(jpg, len, NULL, &w, &h, NULL), 0);
    assert_int_equal(w, 60000);
    assert_int_equal(h, 60000);
    /* Zero width: not an image. */
    jpg[at + 2] = 0, jpg[at + 3] = 0;
    assert_int_equal(imgq_jpeg_decode(jpg, len, NULL, 0, &out), IMGQ_ECODEC);
    assert_null(out.pixels);
    free(jpg);

    /* The wrong decoder for the format refuses it, and JPEG's refuses the others. */
    uint8_t *png;
    size_t png_len;
    encode_png(8, 8, 3, &png, &png_len);
    assert_int_equal(imgq_jpeg_decode(png, png_len, NULL, 0, &out), IMGQ_ECODEC);
    free(png);
    imgq_image_release(&src);
}

static void test_jpeg_bad_arguments(void **state)
{
    struct imgq_image img = {0};
    uint8_t *buf = NULL;
    size_t len;

    assert_int_equal(imgq_jpeg_encode(NULL, 80, &buf, &len), IMGQ_EINVAL);
    assert_int_equal(imgq_jpeg_encode(&img, 80, &buf, &len), IMGQ_EINVAL);
    make_image(&img, 8, 8, 3);
    assert_int_equal(imgq_jpeg_encode(&img, 101, &buf, &len), IMGQ_EINVAL);
    assert_int_equal(imgq_jpeg_encode(&img, -1, &buf, &len), IMGQ_EINVAL);
    assert_null(buf);
    assert_int_equal(imgq_jpeg_encode(&img, 0, &buf, &len), 0);
    assert_int_equal(imgq_jpeg_decode(buf, len, NULL, (enum imgq_pixel_format)5, &img),
                     IMGQ_EINVAL);
    free(buf);
    imgq_image_release(&img);

    /* JPEG cannot hold more than 65500 pixels a side. */
    make_image(&img, 65501, 1, 3);
    assert_int_equal(imgq_jpeg_encode(&img, 50, &buf, &len), IMGQ_ERANGE);
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
        cmocka_unit_test(test_png_verify),
        cmocka_unit_test(test_oversize_refused),
        cmocka_unit_test(test_chunk_limits),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_jpeg_round_trip),
        cmocka_unit_test(test_jpeg_alpha_flattened),
        cmocka_unit_test(test_jpeg_kinds),
        cmocka_unit_test(test_jpeg_truncated_and_oversize),
        cmocka_unit_test(test_jpeg_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
