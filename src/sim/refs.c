/*
 * refs.c - imgq-sim's checks of the reference images a request carries, as a provider makes
 * them before it generates: base64 or a data URI that decodes to a whole PNG, JPEG or WebP of
 * the type it claims, within a size limit.  Untrusted input: fuzzed by tests/fuzz/
 * fuzz_sim_refs.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "imgq/alloc.h"
#include "imgq/base64.h"
#include "imgq/image.h"
#include "sim.h"

int sim_ref_check_base64(const char *b64, size_t len, const char *mime, size_t max_bytes,
                         size_t *bytes, char *why, size_t whylen)
{
    if (len == 0) {
        snprintf(why, whylen, "the image data is empty");
        return -1;
    }
    if (len / 4 * 3 > max_bytes && len / 4 * 3 - max_bytes > 3) { /* before decoding it */
        snprintf(why, whylen, "the image is larger than %zu bytes", max_bytes);
        return -1;
    }
    /* Standard base64 with padding, whichever alphabet and padding it came in. */
    char *std = imgq_xmalloc(len + 4);
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        std[n++] = b64[i] == '-' ? '+' : b64[i] == '_' ? '/' : b64[i];
    while (n % 4)
        std[n++] = '=';
    uint8_t *data = NULL;
    size_t dlen = 0;
    int rc = imgq_base64_decode(std, n, &data, &dlen);
    free(std);
    if (rc != 0) {
        snprintf(why, whylen, "the image data is not base64");
        return -1;
    }
    rc = -1;
    enum imgq_image_format fmt = imgq_image_sniff(data, dlen);
    struct imgq_image img = {0};
    int err;
    if (dlen > max_bytes) {
        snprintf(why, whylen, "the image is larger than %zu bytes", max_bytes);
    } else if (fmt == IMGQ_IMAGE_UNKNOWN) {
        snprintf(why, whylen, "the data is not an image (PNG, JPEG or WebP)");
    } else if (mime && strcasecmp(mime, imgq_image_format_mime(fmt)) != 0 &&
               !(fmt == IMGQ_IMAGE_JPEG && strcasecmp(mime, "image/jpg") == 0)) {
        snprintf(why, whylen, "the data is a %s image, not %.40s", imgq_image_format_name(fmt),
                 mime);
    } else if ((err = imgq_image_decode(data, dlen, NULL, IMGQ_PIXELS_AUTO, &img)) != 0) {
        snprintf(why, whylen, "the %s image does not decode (%s)", imgq_image_format_name(fmt),
                 imgq_strerror(err));
    } else {
        imgq_image_release(&img);
        *bytes = dlen;
        rc = 0;
    }
    free(data);
    return rc;
}

int sim_ref_check_uri(const char *uri, size_t max_bytes, size_t *bytes, char *why, size_t whylen)
{
    if (strncasecmp(uri, "http://", 7) == 0 || strncasecmp(uri, "https://", 8) == 0) {
        snprintf(why, whylen,
                 "imgq-sim does not fetch image URLs (%.80s): send the image as a data URI", uri);
        return -1;
    }
    const char *comma = strchr(uri, ',');
    if (strncmp(uri, "data:image/", 11) != 0 || !comma || comma - uri < 19 ||
        strncmp(comma - 7, ";base64", 7) != 0) {
        snprintf(why, whylen,
                 "not a URL or a data URI of the form data:image/<format>;base64,<data>: %.40s",
                 uri);
        return -1;
    }
    char mime[48];
    size_t mlen = (size_t)(comma - 7 - (uri + 5));
    if (mlen >= sizeof(mime)) {
        snprintf(why, whylen, "the data URI's media type is too long");
        return -1;
    }
    memcpy(mime, uri + 5, mlen);
    mime[mlen] = '\0';
    return sim_ref_check_base64(comma + 1, strlen(comma + 1), mime, max_bytes, bytes, why, whylen);
}
