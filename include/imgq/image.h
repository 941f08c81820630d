/*
 * image.h - image codecs: sniff, decode and encode PNG, JPEG and WebP (libspng,
 * libjpeg-turbo, libwebp).
 *
 * The worker decodes what providers return and re-encodes it (usually to WebP) before storing
 * it; the simulator encodes the PNGs it serves.  Provider output is untrusted input: every
 * decoder checks the dimensions from the file header against limits before it allocates, so
 * a small hostile file (a "decompression bomb") cannot make it allocate gigabytes.
 *
 * Threads: every function here is reentrant and touches no event loop, so it may run in
 * libuv's thread pool (uv_queue_work).  All of them block on CPU for as long as the codec
 * needs (milliseconds to a few hundred for a large image); none does I/O.
 *
 * Ownership: a struct imgq_image owns its pixel buffer; release it with imgq_image_release().
 * Encoded bytes returned through (uint8_t **out, size_t *outlen) are the caller's, to free()
 * with free().  On error nothing is returned and *out is left untouched.
 *
 * Corrupt input is refused, never patched up: a truncated JPEG (which libjpeg would pad with
 * grey) or PNG, a bad checksum, a missing end marker are all IMGQ_ECODEC.
 */
#ifndef IMGQ_IMAGE_H
#define IMGQ_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imgq/error.h"

enum imgq_image_format {
    IMGQ_IMAGE_UNKNOWN = 0,
    IMGQ_IMAGE_PNG = 1,
    IMGQ_IMAGE_JPEG = 2,
    IMGQ_IMAGE_WEBP = 3
};

/* Pixel layouts: interleaved 8-bit channels, rows top to bottom, no padding between rows. */
enum imgq_pixel_format {
    IMGQ_PIXELS_AUTO = 0, /* decode only: RGBA if the file has alpha (or tRNS), else RGB */
    IMGQ_PIXELS_RGB8 = 3,
    IMGQ_PIXELS_RGBA8 = 4
};

struct imgq_image {
    int width, height;
    int channels;    /* 3 (RGB8) or 4 (RGBA8) */
    size_t stride;   /* bytes per row: width * channels */
    uint8_t *pixels; /* height * stride bytes, owned */
};

/* What a decoder accepts.  A zero field means "use the default" (the IMGQ_IMAGE_DEFAULT_*). */
struct imgq_image_limits {
    uint32_t max_width;
    uint32_t max_height;
    uint64_t max_pixels;    /* width * height */
    size_t max_chunk_bytes; /* PNG: largest single chunk */
    size_t max_cache_bytes; /* PNG: all ancillary chunk data kept in memory together */
};

/* Defaults: generous for every image model in the catalog (the largest is 3840x2160), small
 * enough that one decode needs at most 128 MiB of pixels (32 Mi pixels x RGBA). */
#define IMGQ_IMAGE_DEFAULT_MAX_DIM 16384u
#define IMGQ_IMAGE_DEFAULT_MAX_PIXELS (32ull * 1024 * 1024)
#define IMGQ_IMAGE_DEFAULT_MAX_CHUNK (8u * 1024 * 1024)
#define IMGQ_IMAGE_DEFAULT_MAX_CACHE (16u * 1024 * 1024)

/* Format from the first bytes (magic numbers); IMGQ_IMAGE_UNKNOWN if none matches or buf is
 * too short.  Looks at no more than 12 bytes; buf may be NULL when len is 0. */
enum imgq_image_format imgq_image_sniff(const void *buf, size_t len);

/* "png", "jpeg", "webp" or "unknown" (static strings). */
const char *imgq_image_format_name(enum imgq_image_format f);
/* "image/png", "image/jpeg", "image/webp" or "application/octet-stream" (static strings). */
const char *imgq_image_format_mime(enum imgq_image_format f);

/*
 * Allocate a zeroed image of this size; channels is 3 or 4.  IMGQ_EINVAL for a channel count
 * other than 3 or 4 or a non-positive size, IMGQ_ERANGE if width * height exceeds
 * IMGQ_IMAGE_DEFAULT_MAX_PIXELS.  *img is untouched on error.
 */
int imgq_image_init(struct imgq_image *img, int width, int height, int channels) IMGQ_MUST_CHECK;
/* Free the pixels and zero the struct (the struct itself is the caller's).  NULL is a no-op,
 * and so is releasing an already released image. */
void imgq_image_release(struct imgq_image *img);

/*
 * Read only the header: format, dimensions and whether the image has alpha.  Cheap (no pixel
 * decoding).  Any out pointer may be NULL.  IMGQ_ECODEC if the data is not a PNG, JPEG or
 * WebP whose header parses (a JPEG never has alpha).
 */
int imgq_image_info(const void *buf, size_t len, enum imgq_image_format *fmt, int *width,
                    int *height, bool *has_alpha) IMGQ_MUST_CHECK;

/*
 * Decode a PNG (any bit depth and colour type; 16-bit samples are scaled to 8, palettes and
 * grey expanded), a JPEG (baseline or progressive, colour or grey; no alpha, so AUTO gives
 * RGB and RGBA8 an opaque alpha) or a WebP (still image) into 8-bit RGB or RGBA.
 * limits NULL = defaults (max_chunk_bytes and max_cache_bytes apply to PNG only).
 *
 * Errors: IMGQ_ECODEC for data that is not a complete, valid image of a supported format
 * (garbage, truncated, bad checksum, corrupt JPEG entropy data or one with more than 500
 * progressive scans, CMYK/YCCK JPEG, animated WebP); IMGQ_ERANGE if its dimensions or
 * chunk sizes exceed the limits (checked before the pixel buffer is allocated);
 * IMGQ_EINVAL for a bad 'want'.  On error *out is untouched.
 */
int imgq_image_decode(const void *buf, size_t len, const struct imgq_image_limits *limits,
                      enum imgq_pixel_format want, struct imgq_image *out) IMGQ_MUST_CHECK;
/* The same, restricted to one format (IMGQ_ECODEC for any other). */
int imgq_png_decode(const void *buf, size_t len, const struct imgq_image_limits *limits,
                    enum imgq_pixel_format want, struct imgq_image *out) IMGQ_MUST_CHECK;

/*
 * Check a PNG's structure without decoding its pixels (what storing it as it came needs, at a
 * few microseconds instead of milliseconds): the signature; IHDR first, 13 bytes, with a valid
 * bit depth / colour type pair and dimensions within the limits; every chunk inside the file
 * with a correct CRC-32, no unknown critical chunk; chunks other than IDAT within
 * max_chunk_bytes each and max_cache_bytes together; one well-formed PLTE before the image
 * data of a palette image; at least one IDAT, in one run; IEND last, empty, ending the file.  A
 * file cut short or damaged after its encoder wrote it fails.  The deflate stream inside IDAT is
 * not inflated, so a file an encoder wrote broken, with right checksums, passes (imgq_png_decode
 * refuses it).  width/height may be NULL.  IMGQ_ECODEC or IMGQ_ERANGE, as imgq_png_decode.
 */
int imgq_png_verify(const void *buf, size_t len, const struct imgq_image_limits *limits, int *width,
                    int *height) IMGQ_MUST_CHECK;
int imgq_webp_decode(const void *buf, size_t len, const struct imgq_image_limits *limits,
                     enum imgq_pixel_format want, struct imgq_image *out) IMGQ_MUST_CHECK;
int imgq_jpeg_decode(const void *buf, size_t len, const struct imgq_image_limits *limits,
                     enum imgq_pixel_format want, struct imgq_image *out) IMGQ_MUST_CHECK;

/*
 * Encode as PNG (8-bit RGB or RGBA as the image is).  level is the zlib compression level
 * 0..9, or -1 for the library default; 1 is much faster and a little larger.
 * IMGQ_EINVAL for a malformed image or level, IMGQ_ECODEC if the encoder fails.
 */
int imgq_png_encode(const struct imgq_image *img, int level, uint8_t **out,
                    size_t *outlen) IMGQ_MUST_CHECK;

/*
 * Encode as WebP.  Lossy with quality 0..100 (higher is better and larger), or lossless when
 * 'lossless' is true (quality then trades encoding time for size, 100 = smallest).  An RGBA
 * image keeps its alpha channel.  WebP's dimension limit is 16383 x 16383: IMGQ_ERANGE past
 * it; IMGQ_EINVAL for a malformed image or quality, IMGQ_ECODEC if the encoder fails.
 */
int imgq_webp_encode(const struct imgq_image *img, int quality, bool lossless, uint8_t **out,
                     size_t *outlen) IMGQ_MUST_CHECK;

/*
 * Encode as JPEG (baseline, JFIF, Huffman tables optimised) with quality 0..100 (libjpeg's
 * scale; 0 acts as 1).  Chroma is subsampled 4:2:0 below quality 90 and kept whole (4:4:4)
 * from 90 up.  JPEG has no alpha: an RGBA image is flattened onto white.  JPEG's dimension
 * limit is 65500 a side: IMGQ_ERANGE past it; IMGQ_EINVAL for a malformed image or quality,
 * IMGQ_ECODEC if the encoder fails.
 */
int imgq_jpeg_encode(const struct imgq_image *img, int quality, uint8_t **out,
                     size_t *outlen) IMGQ_MUST_CHECK;

#endif
