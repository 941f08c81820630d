/*
 * fuzz_async.c - the asynchronous adapters' readers (DashScope, Replicate, fal, BFL: submit and
 * poll answers) and the image download reader, on a response built from the input:
 *
 *   byte 0-1   HTTP status, big-endian, modulo 600
 *   byte 2     bits 0-2: which reader (0-3 submit of dashscope/replicate/fal/bfl, 4-7 their
 *              polls... bit 2 set = poll), bit 3: transport error; bits 4-5: n - 1 (1..4);
 *              bit 6: a Retry-After header (its value: the first line); bit 7: the download
 *              reader instead
 *   then       one line (up to '\n'): the Retry-After value; the rest is the body.
 *
 * Checks the documented contract: never fails; a pending answer has a handle shorter than its
 * buffer or an empty one (poll the same again); a success has image URLs (at most n) or
 * images, and its usage is billed (an image count from 1 to IMGQ_USAGE_MAX) or unusable with a
 * reason, never both; a retry hint only for rate limits; fixed-size strings terminated.
 */
#include <stdbool.h>

#include "fuzz.h"
#include "imgq/http.h"
#include "imgq/provider.h"

typedef void (*parse_fn)(const imgq_http_response *res, int n, struct imgq_provider_result *out);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const parse_fn readers[8] = {
        imgq_dashscope_parse, imgq_replicate_parse,      imgq_fal_parse,
        imgq_bfl_parse,       imgq_dashscope_parse_poll, imgq_replicate_parse_poll,
        imgq_fal_parse_poll,  imgq_bfl_parse_poll};
    if (size < 3)
        return 0;
    long status = (long)(((unsigned)data[0] << 8 | data[1]) % 600);
    unsigned flags = data[2];
    int n = (int)((flags >> 4) & 3) + 1;
    const uint8_t *p = data + 3, *end = data + size;
    const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
    char *ra = fuzz_cstr(p, (size_t)((nl ? nl : end) - p));
    p = nl ? nl + 1 : end;
    size_t body_len = (size_t)(end - p);
    char *body = fuzz_cstr(p, body_len);

    struct imgq_http_header headers[1] = {{"Retry-After", ra}};
    imgq_http_response res;
    memset(&res, 0, sizeof res);
    res.status = status;
    res.error = "";
    if (flags & 0x08) {
        res.err = IMGQ_EHTTP;
        res.error = "connection refused";
    }
    res.body = (const unsigned char *)body;
    res.body_len = body_len;
    res.headers = headers;
    res.nheaders = (flags & 0x40) ? 1 : 0;

    struct imgq_provider_result r;
    if (flags & 0x80)
        imgq_provider_fetch_parse(&res, &r);
    else
        readers[flags & 7](&res, n, &r);

    FUZZ_CHECK(FUZZ_TERMINATED(r.message) && FUZZ_TERMINATED(r.code));
    FUZZ_CHECK(FUZZ_TERMINATED(r.request_id) && FUZZ_TERMINATED(r.poll));
    FUZZ_CHECK(FUZZ_TERMINATED(r.task_status));
    if (r.pending)
        FUZZ_CHECK(r.cls == IMGQ_CLASS_NONE && r.nimages == 0);
    if (r.cls == IMGQ_CLASS_NONE && !r.pending) {
        FUZZ_CHECK(res.err == 0);
        FUZZ_CHECK(r.nimages > 0 || r.nimage_urls > 0);
        for (int i = 0; i < r.nimage_urls; i++)
            FUZZ_CHECK(r.image_urls[i] && r.image_urls[i][0]);
        for (int i = 0; i < r.nimages; i++)
            FUZZ_CHECK(r.images[i] != NULL);
    }
    if (r.cls != IMGQ_CLASS_NONE)
        FUZZ_CHECK(r.message[0] != '\0'); /* every failure says why */
    if (r.cls != IMGQ_CLASS_RATE_LIMIT)
        FUZZ_CHECK(r.retry_after_ms == -1 || r.pending);
    FUZZ_CHECK(FUZZ_TERMINATED(r.usage_unusable));
    if (r.usage_present)
        FUZZ_CHECK(r.usage.images >= 1 && r.usage.images <= IMGQ_USAGE_MAX && !r.usage_unusable[0]);
    if (r.cls == IMGQ_CLASS_NONE && !r.pending && !(flags & 0x80))
        FUZZ_CHECK(r.usage_present != (r.usage_unusable[0] != '\0'));
    FUZZ_CHECK(imgq_error_class_name(r.cls)[0] != '\0');

    imgq_provider_result_clear(&r);
    free(body);
    free(ra);
    return 0;
}
