/* version.c - imgq_version_print: what --version says for every program. */
#include "imgq/version.h"

#include <curl/curl.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <jpeglib.h>
#include <openssl/crypto.h>
#include <openssl/opensslv.h>
#include <spng.h>
#include <uv.h>
#include <webp/encode.h>
#include <zlib.h>

#ifndef IMGQ_VERSION
#error "IMGQ_VERSION must be defined by the build (CMake's project version)"
#endif

#define IMGQ_STR2(x) #x
#define IMGQ_STR(x) IMGQ_STR2(x)

const char *imgq_version(void)
{
    return IMGQ_VERSION;
}

void imgq_version_print(FILE *f, const char *program)
{
    fprintf(f, "%s %s\n", program, IMGQ_VERSION);
    fprintf(f, "  hiredis  %d.%d.%d\n", HIREDIS_MAJOR, HIREDIS_MINOR, HIREDIS_PATCH);
    fprintf(f, "  libuv    %s (built with %d.%d.%d)\n", uv_version_string(), UV_VERSION_MAJOR,
            UV_VERSION_MINOR, UV_VERSION_PATCH);
    const curl_version_info_data *cv = curl_version_info(CURLVERSION_NOW);
    fprintf(f, "  libcurl  %s (built with %s)\n", cv->version, LIBCURL_VERSION);
    fprintf(f, "  jansson  %s (built with %s)\n", jansson_version_str(), JANSSON_VERSION);
    int wv = WebPGetEncoderVersion();
    fprintf(f, "  libwebp  %d.%d.%d\n", (wv >> 16) & 0xff, (wv >> 8) & 0xff, wv & 0xff);
    fprintf(f, "  libspng  %s (built with %d.%d.%d)\n", spng_version_string(), SPNG_VERSION_MAJOR,
            SPNG_VERSION_MINOR, SPNG_VERSION_PATCH);
    fprintf(f, "  zlib     %s (built with %s)\n", zlibVersion(), ZLIB_VERSION);
#ifdef LIBJPEG_TURBO_VERSION
    fprintf(f, "  libjpeg  libjpeg-turbo %s (API %d)\n", IMGQ_STR(LIBJPEG_TURBO_VERSION),
            JPEG_LIB_VERSION);
#else
    fprintf(f, "  libjpeg  API %d\n", JPEG_LIB_VERSION);
#endif
    fprintf(f, "  OpenSSL  %s (built with %s)\n", OpenSSL_version(OPENSSL_VERSION),
            OPENSSL_VERSION_TEXT);
}
