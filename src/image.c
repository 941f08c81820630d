/*
 * image.c - PNG (libspng), JPEG (libjpeg-turbo) and WebP (libwebp) decode and encode, with
 * limits for hostile input.
 */
#include "imgq/image.h"

#include <limits.h>
#include <setjmp.h>
#include <spng.h>
#include <zlib.h>
#include <stdio.h> /* before jpeglib.h, which uses FILE */
#include <stdlib.h>
#include <string.h>
#include <webp/decode.h>
#include <webp/encode.h>

#include <jerror.h>
#include <jpeglib.h>

#include "imgq/alloc.h"

enum imgq_image_format imgq_image_sniff(const void *buf, size_t len)
{
    static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    const uint8_t *b = buf;

    if (len >= 8 && memcmp(b, png_magic, 8) == 0)
        return IMGQ_IMAGE_PNG;
    if (len >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff)
        return IMGQ_IMAGE_JPEG;
    if (len >= 12 && memcmp(b, "RIFF", 4) == 0 && memcmp(b + 8, "WEBP", 4) == 0)
        return IMGQ_IMAGE_WEBP;
    return IMGQ_IMAGE_UNKNOWN;
}

const char *imgq_image_format_name(enum imgq_image_format f)
{
    switch (f) {
    case IMGQ_IMAGE_PNG:
        return "png";
    case IMGQ_IMAGE_JPEG:
        return "jpeg";
    case IMGQ_IMAGE_WEBP:
        return "webp";
    case IMGQ_IMAGE_UNKNOWN:
        break;
    }
    return "unknown";
}

const char *imgq_image_format_mime(enum imgq_image_format f)
{
    switch (f) {
    case IMGQ_IMAGE_PNG:
        return "image/png";
    case IMGQ_IMAGE_JPEG:
        return "image/jpeg";
    case IMGQ_IMAGE_WEBP:
        return "image/webp";
    case IMGQ_IMAGE_UNKNOWN:
        break;
    }
    return "application/octet-stream";
}

int imgq_image_init(struct imgq_image *img, int width, int height, int channels)
{
    if (width <= 0 || height <= 0 || (channels != 3 && channels != 4))
        return IMGQ_EINVAL;
    if ((uint64_t)width * (uint64_t)height > IMGQ_IMAGE_DEFAULT_MAX_PIXELS)
        return IMGQ_ERANGE;
    img->width = width;
    img->height = height;
    img->channels = channels;
    img->stride = (size_t)width * (size_t)channels;
    img->pixels = imgq_xcalloc((size_t)height, img->stride);
    return 0;
}

void imgq_image_release(struct imgq_image *img)
{
    if (!img)
        return;
    free(img->pixels);
    memset(img, 0, sizeof(*img));
}

/* Fill the zero fields of a caller's limits with the defaults. */
static struct imgq_image_limits effective_limits(const struct imgq_image_limits *in)
{
    struct imgq_image_limits l = {0};
    if (in)
        l = *in;
    if (!l.max_width)
        l.max_width = IMGQ_IMAGE_DEFAULT_MAX_DIM;
    if (!l.max_height)
        l.max_height = IMGQ_IMAGE_DEFAULT_MAX_DIM;
    if (!l.max_pixels)
        l.max_pixels = IMGQ_IMAGE_DEFAULT_MAX_PIXELS;
    if (!l.max_chunk_bytes)
        l.max_chunk_bytes = IMGQ_IMAGE_DEFAULT_MAX_CHUNK;
    if (!l.max_cache_bytes)
        l.max_cache_bytes = IMGQ_IMAGE_DEFAULT_MAX_CACHE;
    /* libspng refuses limits above 2^31-1. */
    if (l.max_width > INT32_MAX)
        l.max_width = INT32_MAX;
    if (l.max_height > INT32_MAX)
        l.max_height = INT32_MAX;
    return l;
}

static int check_dims(const struct imgq_image_limits *l, uint64_t w, uint64_t h)
{
    if (w == 0 || h == 0)
        return IMGQ_ECODEC;
    if (w > l->max_width || h > l->max_height || w * h > l->max_pixels)
        return IMGQ_ERANGE;
    return 0;
}

/* ---- PNG ---------------------------------------------------------------------------------- */

/* libspng allocates through these, so out-of-memory follows imgq's policy (see alloc.h) and the
 * encoder's output buffer is plain malloc memory the caller may free(). */
static void *spng_x_malloc(size_t n)
{
    return imgq_xmalloc(n);
}

static void *spng_x_realloc(void *p, size_t n)
{
    return imgq_xrealloc(p, n);
}

static void *spng_x_calloc(size_t count, size_t size)
{
    return imgq_xcalloc(count, size);
}

static void spng_x_free(void *p)
{
    free(p);
}

static spng_ctx *spng_new(int flags)
{
    struct spng_alloc a = {spng_x_malloc, spng_x_realloc, spng_x_calloc, spng_x_free};
    spng_ctx *ctx = spng_ctx_new2(&a, flags);
    if (!ctx) { /* it fails only for lack of memory: the policy of alloc.h */
        fprintf(stderr, "imgq: out of memory creating a PNG context\n");
        abort();
    }
    return ctx;
}

/* An spng decoder over buf with limits applied and the header read. */
static int png_open(const void *buf, size_t len, const struct imgq_image_limits *l, spng_ctx **out,
                    struct spng_ihdr *ihdr)
{
    if (imgq_image_sniff(buf, len) != IMGQ_IMAGE_PNG)
        return IMGQ_ECODEC;
    spng_ctx *ctx = spng_new(0);
    int rc = IMGQ_ECODEC;
    if (spng_set_image_limits(ctx, l->max_width, l->max_height) ||
        spng_set_chunk_limits(ctx, l->max_chunk_bytes, l->max_cache_bytes) ||
        spng_set_png_buffer(ctx, buf, len))
        goto fail;
    int err = spng_get_ihdr(ctx, ihdr);
    if (err == SPNG_EUSER_WIDTH || err == SPNG_EUSER_HEIGHT) {
        rc = IMGQ_ERANGE;
        goto fail;
    }
    if (err)
        goto fail;
    rc = check_dims(l, ihdr->width, ihdr->height);
    if (rc)
        goto fail;
    *out = ctx;
    return 0;
fail:
    spng_ctx_free(ctx);
    return rc;
}

static const uint8_t png_iend[12] = {0, 0, 0, 0, 'I', 'E', 'N', 'D', 0xae, 0x42, 0x60, 0x82};

static int spng_to_imgq(int err)
{
    return err == SPNG_ECHUNK_LIMITS ? IMGQ_ERANGE : IMGQ_ECODEC;
}

/* 1 if the image has alpha (an alpha channel or a tRNS chunk), 0 if not, or an error: looking
 * for tRNS reads every chunk before the pixel data, which is where chunk limits bite. */
static int png_has_alpha(spng_ctx *ctx, const struct spng_ihdr *ihdr)
{
    struct spng_trns trns;
    if (ihdr->color_type == SPNG_COLOR_TYPE_GRAYSCALE_ALPHA ||
        ihdr->color_type == SPNG_COLOR_TYPE_TRUECOLOR_ALPHA)
        return 1;
    int err = spng_get_trns(ctx, &trns);
    if (err == 0)
        return 1;
    if (err == SPNG_ECHUNKAVAIL)
        return 0;
    return spng_to_imgq(err);
}

int imgq_png_decode(const void *buf, size_t len, const struct imgq_image_limits *limits,
                    enum imgq_pixel_format want, struct imgq_image *out)
{
    struct imgq_image_limits l = effective_limits(limits);
    struct spng_ihdr ihdr;
    spng_ctx *ctx;
    uint8_t *pixels = NULL;
    size_t size;

    if (want != IMGQ_PIXELS_AUTO && want != IMGQ_PIXELS_RGB8 && want != IMGQ_PIXELS_RGBA8)
        return IMGQ_EINVAL;
    int rc = png_open(buf, len, &l, &ctx, &ihdr);
    if (rc)
        return rc;

    int channels = want;
    if (want == IMGQ_PIXELS_AUTO) {
        rc = png_has_alpha(ctx, &ihdr);
        if (rc < 0)
            goto fail;
        channels = rc ? 4 : 3;
    }
    int fmt = channels == 4 ? SPNG_FMT_RGBA8 : SPNG_FMT_RGB8;
    int flags = channels == 4 ? SPNG_DECODE_TRNS : 0;

    int err = spng_decoded_image_size(ctx, fmt, &size);
    if (err) {
        rc = spng_to_imgq(err);
        goto fail;
    }
    pixels = imgq_xmalloc(size);
    err = spng_decode_image(ctx, pixels, size, fmt, flags);
    /* Read on to IEND: a file cut short after its pixel data is still a broken file.  libspng
     * forgives a truncated IEND (it skips the CRC), so also insist on the complete chunk,
     * whose 12 bytes never vary. */
    if (!err)
        err = spng_decode_chunks(ctx);
    if (!err && !memmem(buf, len, png_iend, sizeof(png_iend)))
        err = SPNG_EIO;
    if (err) {
        rc = spng_to_imgq(err);
        goto fail;
    }
    spng_ctx_free(ctx);
    out->width = (int)ihdr.width;
    out->height = (int)ihdr.height;
    out->channels = channels;
    out->stride = (size_t)ihdr.width * (size_t)channels;
    out->pixels = pixels;
    return 0;
fail:
    free(pixels);
    spng_ctx_free(ctx);
    return rc;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static bool png_depth_ok(uint8_t color, uint8_t depth)
{
    switch (color) {
    case 0: /* grey */
        return depth == 1 || depth == 2 || depth == 4 || depth == 8 || depth == 16;
    case 3: /* palette */
        return depth == 1 || depth == 2 || depth == 4 || depth == 8;
    case 2: /* RGB */
    case 4: /* grey + alpha */
    case 6: /* RGBA */
        return depth == 8 || depth == 16;
    default:
        return false;
    }
}

int imgq_png_verify(const void *buf, size_t len, const struct imgq_image_limits *limits, int *width,
                    int *height)
{
    struct imgq_image_limits l = effective_limits(limits);
    const uint8_t *b = buf;
    if (imgq_image_sniff(buf, len) != IMGQ_IMAGE_PNG)
        return IMGQ_ECODEC;
    size_t at = 8;
    uint32_t w = 0, h = 0;
    uint8_t color = 0, depth = 0;
    size_t ancillary = 0; /* bytes of chunks other than IDAT (libspng's cache limit) */
    bool plte = false, idat_seen = false, idat_ended = false;
    for (int n = 0;; n++) {
        if (len - at < 12)
            return IMGQ_ECODEC; /* cut short: no room for a chunk's length, type and CRC */
        uint32_t clen = be32(b + at);
        const uint8_t *type = b + at + 4;
        if (clen > INT32_MAX || clen > len - at - 12)
            return IMGQ_ECODEC;
        for (int i = 0; i < 4; i++)
            if (!((type[i] >= 'A' && type[i] <= 'Z') || (type[i] >= 'a' && type[i] <= 'z')))
                return IMGQ_ECODEC;
        bool is_idat = memcmp(type, "IDAT", 4) == 0;
        /* The image data may come in one chunk of any size (the dimensions bound it); the
         * others are what the chunk and cache limits are for. */
        if (!is_idat) {
            ancillary += clen;
            if (clen > l.max_chunk_bytes || ancillary > l.max_cache_bytes)
                return IMGQ_ERANGE;
        }
        uint32_t crc = (uint32_t)crc32_z(0, type, 4 + (size_t)clen);
        if (crc != be32(type + 4 + clen))
            return IMGQ_ECODEC;
        const uint8_t *data = type + 4;
        if (n == 0) {
            if (memcmp(type, "IHDR", 4) != 0 || clen != 13)
                return IMGQ_ECODEC;
            w = be32(data);
            h = be32(data + 4);
            color = data[9];
            depth = data[8];
            if (w > INT32_MAX || h > INT32_MAX || !png_depth_ok(color, depth) || data[10] != 0 ||
                data[11] != 0 || data[12] > 1)
                return IMGQ_ECODEC;
            int r = check_dims(&l, w, h);
            if (r)
                return r;
        } else if (memcmp(type, "IHDR", 4) == 0) {
            return IMGQ_ECODEC;
        } else if (memcmp(type, "PLTE", 4) == 0) {
            /* One, before the image data, of whole entries: at most 256, and for a palette
             * image no more than its bit depth can index; grey images have none. */
            uint32_t entries = clen / 3;
            if (plte || idat_seen || color == 0 || color == 4 || clen % 3 != 0 || entries == 0 ||
                entries > 256 || (color == 3 && entries > (1u << depth)))
                return IMGQ_ECODEC;
            plte = true;
        } else if (is_idat) {
            if (idat_ended || (color == 3 && !plte))
                return IMGQ_ECODEC; /* IDATs must be consecutive; a palette image needs PLTE */
            idat_seen = true;
        } else if (memcmp(type, "IEND", 4) == 0) {
            if (clen != 0 || !idat_seen || at + 12 != len)
                return IMGQ_ECODEC;
            break;
        } else if (type[0] >= 'A' && type[0] <= 'Z') {
            return IMGQ_ECODEC; /* a critical chunk this decoder would not know either */
        }
        if (idat_seen && !is_idat)
            idat_ended = true;
        at += 12 + (size_t)clen;
    }
    if (width)
        *width = (int)w;
    if (height)
        *height = (int)h;
    return 0;
}

static int image_check(const struct imgq_image *img)
{
    if (!img || !img->pixels || img->width <= 0 || img->height <= 0 ||
        (img->channels != 3 && img->channels != 4) ||
        img->stride < (size_t)img->width * (size_t)img->channels)
        return IMGQ_EINVAL;
    return 0;
}

int imgq_png_encode(const struct imgq_image *img, int level, uint8_t **out, size_t *outlen)
{
    if (image_check(img) || level < -1 || level > 9)
        return IMGQ_EINVAL;
    if (img->stride != (size_t)img->width * (size_t)img->channels)
        return IMGQ_EINVAL; /* spng_encode_image takes packed rows */

    spng_ctx *ctx = spng_new(SPNG_CTX_ENCODER);
    struct spng_ihdr ihdr = {
        .width = (uint32_t)img->width,
        .height = (uint32_t)img->height,
        .bit_depth = 8,
        .color_type =
            img->channels == 4 ? SPNG_COLOR_TYPE_TRUECOLOR_ALPHA : SPNG_COLOR_TYPE_TRUECOLOR,
    };
    int err = spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1);
    if (!err && level >= 0)
        err = spng_set_option(ctx, SPNG_IMG_COMPRESSION_LEVEL, level);
    if (!err)
        err = spng_set_ihdr(ctx, &ihdr);
    if (!err)
        err = spng_encode_image(ctx, img->pixels, img->stride * (size_t)img->height, SPNG_FMT_PNG,
                                SPNG_ENCODE_FINALIZE);
    size_t len = 0;
    void *png = NULL;
    if (!err)
        png = spng_get_png_buffer(ctx, &len, &err);
    spng_ctx_free(ctx);
    if (err || !png) {
        free(png);
        return IMGQ_ECODEC;
    }
    *out = png;
    *outlen = len;
    return 0;
}

/* ---- WebP --------------------------------------------------------------------------------- */

static int webp_features(const void *buf, size_t len, WebPBitstreamFeatures *f)
{
    if (imgq_image_sniff(buf, len) != IMGQ_IMAGE_WEBP)
        return IMGQ_ECODEC;
    if (WebPGetFeatures(buf, len, f) != VP8_STATUS_OK)
        return IMGQ_ECODEC;
    return 0;
}

int imgq_webp_decode(const void *buf, size_t len, const struct imgq_image_limits *limits,
                     enum imgq_pixel_format want, struct imgq_image *out)
{
    struct imgq_image_limits l = effective_limits(limits);
    WebPBitstreamFeatures f;

    if (want != IMGQ_PIXELS_AUTO && want != IMGQ_PIXELS_RGB8 && want != IMGQ_PIXELS_RGBA8)
        return IMGQ_EINVAL;
    int rc = webp_features(buf, len, &f);
    if (rc)
        return rc;
    if (f.has_animation)
        return IMGQ_ECODEC;
    rc = check_dims(&l, (uint64_t)f.width, (uint64_t)f.height);
    if (rc)
        return rc;

    int channels = want == IMGQ_PIXELS_AUTO ? (f.has_alpha ? 4 : 3) : (int)want;
    size_t stride = (size_t)f.width * (size_t)channels;
    size_t size = stride * (size_t)f.height;
    uint8_t *pixels = imgq_xmalloc(size);
    uint8_t *ok = channels == 4 ? WebPDecodeRGBAInto(buf, len, pixels, size, (int)stride)
                                : WebPDecodeRGBInto(buf, len, pixels, size, (int)stride);
    if (!ok) {
        free(pixels);
        return IMGQ_ECODEC;
    }
    out->width = f.width;
    out->height = f.height;
    out->channels = channels;
    out->stride = stride;
    out->pixels = pixels;
    return 0;
}

struct webp_sink {
    uint8_t *data;
    size_t len, cap;
};

static int webp_write(const uint8_t *data, size_t size, const WebPPicture *pic)
{
    struct webp_sink *s = pic->custom_ptr;
    if (s->cap - s->len < size) {
        size_t cap = s->cap ? s->cap : 64 * 1024;
        while (cap - s->len < size)
            cap *= 2;
        s->data = imgq_xrealloc(s->data, cap);
        s->cap = cap;
    }
    memcpy(s->data + s->len, data, size);
    s->len += size;
    return 1;
}

int imgq_webp_encode(const struct imgq_image *img, int quality, bool lossless, uint8_t **out,
                     size_t *outlen)
{
    WebPConfig cfg;
    WebPPicture pic;
    struct webp_sink sink = {0};

    if (image_check(img) || quality < 0 || quality > 100)
        return IMGQ_EINVAL;
    if (img->width > WEBP_MAX_DIMENSION || img->height > WEBP_MAX_DIMENSION)
        return IMGQ_ERANGE;
    if (!WebPConfigInit(&cfg) || !WebPPictureInit(&pic))
        return IMGQ_ECODEC; /* header and library versions disagree */
    cfg.quality = (float)quality;
    cfg.lossless = lossless ? 1 : 0;
    if (!WebPValidateConfig(&cfg))
        return IMGQ_ECODEC;

    pic.use_argb = lossless ? 1 : 0;
    pic.width = img->width;
    pic.height = img->height;
    int ok = img->channels == 4 ? WebPPictureImportRGBA(&pic, img->pixels, (int)img->stride)
                                : WebPPictureImportRGB(&pic, img->pixels, (int)img->stride);
    if (!ok) {
        WebPPictureFree(&pic);
        return IMGQ_ECODEC;
    }
    pic.writer = webp_write;
    pic.custom_ptr = &sink;
    ok = WebPEncode(&cfg, &pic);
    WebPPictureFree(&pic);
    if (!ok) {
        free(sink.data);
        return IMGQ_ECODEC;
    }
    *out = sink.data;
    *outlen = sink.len;
    return 0;
}

/* ---- JPEG --------------------------------------------------------------------------------- */

/*
 * Most scans a progressive JPEG may have.  Real encoders write about ten; thousands of tiny
 * scans are a known way to keep a decoder busy for minutes on a small file (libjpeg-turbo's
 * own TurboJPEG API offers the same kind of cap).
 */
#define JPEG_MAX_SCANS 500
/* What libjpeg may allocate for one image (its coefficient buffers for a progressive file of
 * the largest size the default limits let through need about 200 MiB). */
#define JPEG_MAX_MEMORY (512L * 1024 * 1024)

/* libjpeg reports errors by calling error_exit, which must not return: it longjmps back to
 * the function that started the work, which then destroys the codec and frees its buffers. */
struct jpeg_fail {
    struct jpeg_error_mgr pub;
    jmp_buf jmp;
    int rc; /* what the failing call returns */
};

static _Noreturn void jpeg_fail_now(j_common_ptr cinfo, int rc)
{
    struct jpeg_fail *f = (struct jpeg_fail *)cinfo->err;
    f->rc = rc;
    longjmp(f->jmp, 1);
}

static void jpeg_error_exit(j_common_ptr cinfo)
{
    int code = cinfo->err->msg_code;
    /* Too big for memory or for the format: a limit, like the dimension limits. */
    if (code == JERR_OUT_OF_MEMORY || code == JERR_NO_BACKING_STORE || code == JERR_IMAGE_TOO_BIG ||
        code == JERR_WIDTH_OVERFLOW)
        jpeg_fail_now(cinfo, IMGQ_ERANGE);
    jpeg_fail_now(cinfo, IMGQ_ECODEC);
}

/* Warnings (level -1) are corrupt data: a truncated file, a bad Huffman code, a missing EOI.
 * libjpeg would carry on and pad the image with grey; a broken file is refused instead (as
 * djpeg -strict does).  Trace messages (level >= 0) are dropped: nothing is printed. */
static void jpeg_emit_message(j_common_ptr cinfo, int level)
{
    if (level < 0)
        jpeg_fail_now(cinfo, IMGQ_ECODEC);
}

static void jpeg_output_message(j_common_ptr cinfo)
{
    (void)cinfo;
}

static void jpeg_scan_limit(j_common_ptr cinfo)
{
    if (cinfo->is_decompressor && ((j_decompress_ptr)cinfo)->input_scan_number > JPEG_MAX_SCANS)
        jpeg_fail_now(cinfo, IMGQ_ECODEC);
}

static struct jpeg_error_mgr *jpeg_fail_init(struct jpeg_fail *f)
{
    jpeg_std_error(&f->pub);
    f->pub.error_exit = jpeg_error_exit;
    f->pub.emit_message = jpeg_emit_message;
    f->pub.output_message = jpeg_output_message;
    f->rc = IMGQ_ECODEC;
    return &f->pub;
}

/* Create a decoder over buf and read the header, or longjmp to the caller's setjmp (whose
 * error path destroys cinfo, created or not: it was zeroed). */
static void jpeg_open(j_decompress_ptr cinfo, struct jpeg_progress_mgr *prog, const void *buf,
                      size_t len)
{
    jpeg_create_decompress(cinfo);
    cinfo->mem->max_memory_to_use = JPEG_MAX_MEMORY;
    prog->progress_monitor = jpeg_scan_limit;
    cinfo->progress = prog;
    jpeg_mem_src(cinfo, buf, (unsigned long)len);
    (void)jpeg_read_header(cinfo, TRUE); /* TRUE: a tables-only stream is an error */
}

int imgq_jpeg_decode(const void *buf, size_t len, const struct imgq_image_limits *limits,
                     enum imgq_pixel_format want, struct imgq_image *out)
{
    struct imgq_image_limits l = effective_limits(limits);
    struct jpeg_decompress_struct cinfo;
    struct jpeg_progress_mgr prog;
    struct jpeg_fail fail;
    uint8_t *volatile pixels = NULL; /* set after setjmp: volatile so the error path sees it */

    if (want != IMGQ_PIXELS_AUTO && want != IMGQ_PIXELS_RGB8 && want != IMGQ_PIXELS_RGBA8)
        return IMGQ_EINVAL;
    if (imgq_image_sniff(buf, len) != IMGQ_IMAGE_JPEG || len > ULONG_MAX)
        return IMGQ_ECODEC;
    memset(&cinfo, 0, sizeof(cinfo)); /* so that destroy is safe whenever an error comes */
    memset(&prog, 0, sizeof(prog));
    cinfo.err = jpeg_fail_init(&fail);
    if (setjmp(fail.jmp)) {
        jpeg_destroy_decompress(&cinfo);
        free(pixels);
        return fail.rc;
    }
    jpeg_open(&cinfo, &prog, buf, len);
    int rc = check_dims(&l, cinfo.image_width, cinfo.image_height);
    if (rc) {
        jpeg_destroy_decompress(&cinfo);
        return rc;
    }
    /* JPEG has no alpha: AUTO is RGB; RGBA gets alpha 255.  Grey is expanded.  CMYK and YCCK
     * (print files, never what an image model returns) have no conversion: IMGQ_ECODEC. */
    int channels = want == IMGQ_PIXELS_RGBA8 ? 4 : 3;
    cinfo.out_color_space = channels == 4 ? JCS_EXT_RGBA : JCS_RGB;
    jpeg_start_decompress(&cinfo); /* a progressive file is read whole here */
    if (cinfo.output_width != cinfo.image_width || cinfo.output_height != cinfo.image_height ||
        cinfo.output_components != channels)
        jpeg_fail_now((j_common_ptr)&cinfo, IMGQ_ECODEC);
    size_t stride = (size_t)cinfo.output_width * (size_t)channels;
    pixels = imgq_xmalloc(stride * cinfo.output_height);
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = pixels + (size_t)cinfo.output_scanline * stride;
        if (jpeg_read_scanlines(&cinfo, &row, 1) != 1)
            jpeg_fail_now((j_common_ptr)&cinfo, IMGQ_ECODEC);
    }
    /* Read on to EOI: a file cut short after its last scan is still a broken file. */
    (void)jpeg_finish_decompress(&cinfo);
    out->width = (int)cinfo.output_width;
    out->height = (int)cinfo.output_height;
    out->channels = channels;
    out->stride = stride;
    out->pixels = pixels;
    jpeg_destroy_decompress(&cinfo);
    return 0;
}

static int jpeg_info(const void *buf, size_t len, int *w, int *h)
{
    struct jpeg_decompress_struct cinfo;
    struct jpeg_progress_mgr prog;
    struct jpeg_fail fail;

    if (imgq_image_sniff(buf, len) != IMGQ_IMAGE_JPEG || len > ULONG_MAX)
        return IMGQ_ECODEC;
    memset(&cinfo, 0, sizeof(cinfo));
    memset(&prog, 0, sizeof(prog));
    cinfo.err = jpeg_fail_init(&fail);
    if (setjmp(fail.jmp)) {
        jpeg_destroy_decompress(&cinfo);
        return fail.rc;
    }
    jpeg_open(&cinfo, &prog, buf, len);
    *w = (int)cinfo.image_width;
    *h = (int)cinfo.image_height;
    jpeg_destroy_decompress(&cinfo);
    return 0;
}

int imgq_jpeg_encode(const struct imgq_image *img, int quality, uint8_t **out, size_t *outlen)
{
    struct jpeg_compress_struct cinfo;
    struct jpeg_fail fail;
    /* Both are written by libjpeg through their addresses (jpeg_mem_dest); the error path
     * frees whatever buffer it had grown to. */
    unsigned char *mem = NULL;
    unsigned long memlen = 0;
    uint8_t *volatile flat = NULL;

    if (image_check(img) || quality < 0 || quality > 100)
        return IMGQ_EINVAL;
    if (img->width > JPEG_MAX_DIMENSION || img->height > JPEG_MAX_DIMENSION)
        return IMGQ_ERANGE;
    memset(&cinfo, 0, sizeof(cinfo));
    cinfo.err = jpeg_fail_init(&fail);
    if (setjmp(fail.jmp)) {
        jpeg_destroy_compress(&cinfo);
        free(mem);
        free(flat);
        return fail.rc;
    }
    jpeg_create_compress(&cinfo);
    jpeg_mem_dest(&cinfo, &mem, &memlen);
    cinfo.image_width = (JDIMENSION)img->width;
    cinfo.image_height = (JDIMENSION)img->height;
    cinfo.input_components = 3;
    cinfo.in_color_space = JCS_RGB;
    jpeg_set_defaults(&cinfo);
    jpeg_set_quality(&cinfo, quality, TRUE);
    cinfo.optimize_coding = TRUE; /* smaller files for a little CPU, still baseline */
    if (quality >= 90) {
        /* Chroma at full resolution: at high quality 4:2:0's colour smear is what shows. */
        cinfo.comp_info[0].h_samp_factor = 1;
        cinfo.comp_info[0].v_samp_factor = 1;
    }
    jpeg_start_compress(&cinfo, TRUE);
    if (img->channels == 4)
        flat = imgq_xmalloc((size_t)img->width * 3);
    while (cinfo.next_scanline < cinfo.image_height) {
        const uint8_t *src = img->pixels + (size_t)cinfo.next_scanline * img->stride;
        JSAMPROW row = (JSAMPROW)src;
        if (flat) {
            /* JPEG has no alpha: flatten onto white, as image editors export it. */
            for (int x = 0; x < img->width; x++) {
                const uint8_t *p = src + (size_t)x * 4;
                unsigned a = p[3];
                for (int c = 0; c < 3; c++)
                    flat[(size_t)x * 3 + (size_t)c] =
                        (uint8_t)((p[c] * a + 255u * (255u - a) + 127u) / 255u);
            }
            row = flat;
        }
        (void)jpeg_write_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_compress(&cinfo);
    jpeg_destroy_compress(&cinfo);
    free(flat);
    *out = mem;
    *outlen = (size_t)memlen;
    return 0;
}

/* ---- Dispatch ----------------------------------------------------------------------------- */

int imgq_image_decode(const void *buf, size_t len, const struct imgq_image_limits *limits,
                      enum imgq_pixel_format want, struct imgq_image *out)
{
    switch (imgq_image_sniff(buf, len)) {
    case IMGQ_IMAGE_PNG:
        return imgq_png_decode(buf, len, limits, want, out);
    case IMGQ_IMAGE_WEBP:
        return imgq_webp_decode(buf, len, limits, want, out);
    case IMGQ_IMAGE_JPEG:
        return imgq_jpeg_decode(buf, len, limits, want, out);
    case IMGQ_IMAGE_UNKNOWN:
        break;
    }
    return IMGQ_ECODEC;
}

int imgq_image_info(const void *buf, size_t len, enum imgq_image_format *fmt, int *width,
                    int *height, bool *has_alpha)
{
    enum imgq_image_format f = imgq_image_sniff(buf, len);
    int w, h;
    bool alpha;

    if (f == IMGQ_IMAGE_PNG) {
        /* Only chunk limits apply: info reports dimensions whatever they are. */
        struct imgq_image_limits l = effective_limits(NULL);
        l.max_width = l.max_height = INT32_MAX;
        l.max_pixels = UINT64_MAX;
        struct spng_ihdr ihdr;
        spng_ctx *ctx;
        int rc = png_open(buf, len, &l, &ctx, &ihdr);
        if (rc)
            return rc;
        w = (int)ihdr.width;
        h = (int)ihdr.height;
        rc = png_has_alpha(ctx, &ihdr);
        spng_ctx_free(ctx);
        if (rc < 0)
            return rc;
        alpha = rc == 1;
    } else if (f == IMGQ_IMAGE_WEBP) {
        WebPBitstreamFeatures feat;
        int rc = webp_features(buf, len, &feat);
        if (rc)
            return rc;
        w = feat.width;
        h = feat.height;
        alpha = feat.has_alpha != 0;
    } else if (f == IMGQ_IMAGE_JPEG) {
        int rc = jpeg_info(buf, len, &w, &h);
        if (rc)
            return rc;
        alpha = false;
    } else {
        return IMGQ_ECODEC;
    }
    if (fmt)
        *fmt = f;
    if (width)
        *width = w;
    if (height)
        *height = h;
    if (has_alpha)
        *has_alpha = alpha;
    return 0;
}
