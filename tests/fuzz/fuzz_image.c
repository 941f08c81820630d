/*
 * fuzz_image.c - imgq_image_decode() and imgq_png_verify() on arbitrary bytes (PNG and WebP
 * from providers are untrusted) with the default limits.
 *
 * For every image that decodes: imgq_image_info() agrees on format, size and alpha; the
 * buffer is exactly height x stride (its last byte is touched, so ASan sees a short one).
 * For small images also: decoding as RGB8 and as RGBA8 gives the same colours (and opaque
 * alpha when a PNG has none), and the PNG encoder round-trips the pixels exactly.
 */
#include <stdbool.h>

#include "fuzz.h"
#include "imgq/image.h"

#define SMALL_PIXELS (256u * 256u)

static void check_image(const struct imgq_image *img, int channels)
{
    FUZZ_CHECK(img->pixels != NULL && img->width > 0 && img->height > 0);
    FUZZ_CHECK((uint32_t)img->width <= IMGQ_IMAGE_DEFAULT_MAX_DIM &&
               (uint32_t)img->height <= IMGQ_IMAGE_DEFAULT_MAX_DIM);
    FUZZ_CHECK((uint64_t)img->width * (uint64_t)img->height <= IMGQ_IMAGE_DEFAULT_MAX_PIXELS);
    FUZZ_CHECK(img->channels == channels);
    FUZZ_CHECK(img->stride == (size_t)img->width * (size_t)channels);
    volatile uint8_t last = img->pixels[img->stride * (size_t)img->height - 1];
    (void)last;
}

static void check_small(const uint8_t *data, size_t size, const struct imgq_image *img)
{
    bool png = imgq_image_sniff(data, size) == IMGQ_IMAGE_PNG;
    struct imgq_image rgb, rgba;
    FUZZ_CHECK(imgq_image_decode(data, size, NULL, IMGQ_PIXELS_RGB8, &rgb) == 0);
    FUZZ_CHECK(imgq_image_decode(data, size, NULL, IMGQ_PIXELS_RGBA8, &rgba) == 0);
    check_image(&rgb, 3);
    check_image(&rgba, 4);
    FUZZ_CHECK(rgb.width == img->width && rgba.width == img->width);
    FUZZ_CHECK(rgb.height == img->height && rgba.height == img->height);
    size_t npix = (size_t)img->width * (size_t)img->height;
    for (size_t i = 0; i < npix; i++) {
        FUZZ_CHECK(memcmp(rgb.pixels + 3 * i, rgba.pixels + 4 * i, 3) == 0);
        /* A PNG without alpha decodes opaque.  (Not so WebP: VP8L's alpha_is_used bit is only
         * a hint, and libwebp returns the ARGB data's alpha even when the bit says none.) */
        if (img->channels == 3 && png)
            FUZZ_CHECK(rgba.pixels[4 * i + 3] == 255);
    }
    FUZZ_CHECK(memcmp(img->channels == 3 ? rgb.pixels : rgba.pixels, img->pixels,
                      npix * (size_t)img->channels) == 0);

    /* PNG encode and decode back: lossless. */
    uint8_t *enc = NULL;
    size_t enc_len = 0;
    FUZZ_CHECK(imgq_png_encode(img, 1, &enc, &enc_len) == 0);
    struct imgq_image back;
    FUZZ_CHECK(imgq_png_decode(enc, enc_len, NULL, (enum imgq_pixel_format)img->channels, &back) ==
               0);
    FUZZ_CHECK(back.width == img->width && back.height == img->height);
    FUZZ_CHECK(memcmp(back.pixels, img->pixels, npix * (size_t)img->channels) == 0);
    imgq_image_release(&back);
    free(enc);
    imgq_image_release(&rgba);
    imgq_image_release(&rgb);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct imgq_image img;
    memset(&img, 0xa5, sizeof img);
    int rc = imgq_image_decode(data, size, NULL, IMGQ_PIXELS_AUTO, &img);
    enum imgq_image_format sniffed = imgq_image_sniff(data, size);
    /* The pass-through check reads inside the buffer whatever it is given, fails only as
     * documented, and gives a PNG that decodes its own dimensions. */
    int vw = -1, vh = -1;
    int vrc = imgq_png_verify(data, size, NULL, &vw, &vh);
    FUZZ_CHECK(vrc == 0 || vrc == IMGQ_ECODEC || vrc == IMGQ_ERANGE);
    if (vrc == 0 && rc == 0)
        FUZZ_CHECK(vw == img.width && vh == img.height);
    if (rc != 0) {
        FUZZ_CHECK(rc == IMGQ_ECODEC || rc == IMGQ_ERANGE);
        struct imgq_image untouched;
        memset(&untouched, 0xa5, sizeof untouched);
        FUZZ_CHECK(memcmp(&img, &untouched, sizeof img) == 0); /* "*out is untouched" */
        return 0;
    }
    FUZZ_CHECK(sniffed == IMGQ_IMAGE_PNG || sniffed == IMGQ_IMAGE_WEBP);
    FUZZ_CHECK(img.channels == 3 || img.channels == 4);
    check_image(&img, img.channels);

    enum imgq_image_format fmt;
    int w, h;
    bool alpha;
    FUZZ_CHECK(imgq_image_info(data, size, &fmt, &w, &h, &alpha) == 0);
    FUZZ_CHECK(fmt == sniffed && w == img.width && h == img.height);
    FUZZ_CHECK(alpha == (img.channels == 4));

    if ((size_t)img.width * (size_t)img.height <= SMALL_PIXELS)
        check_small(data, size, &img);
    imgq_image_release(&img);
    FUZZ_CHECK(img.pixels == NULL);
    return 0;
}
