/*
 * fuzz_openai.c - imgq_openai_parse() on a provider response built from the input:
 *
 *   byte 0-1   HTTP status, big-endian, modulo 600
 *   byte 2     bits 0-1: n - 1 (images asked for, 1..4); bit 2: transport error (err set);
 *              bit 3: timed out; bit 4: body over the cap (IMGQ_ERANGE);
 *              bits 5-7: which of retry-after, retry-after-ms, x-request-id are present
 *   then       three lines (up to '\n'): the retry-after, retry-after-ms and x-request-id
 *              header values; the rest is the body.
 *
 * Checks the documented contract: never fails, success means n images, a retry hint only for
 * rate limits and within 0..24 h, fixed-size strings terminated, usage never negative nor above
 * IMGQ_USAGE_MAX, and a usage either billed (usage_present) or unusable with a reason, never
 * both.
 */
#include <stdbool.h>

#include "fuzz.h"
#include "imgq/http.h"
#include "imgq/provider.h"

/* Next line of [*p, end) as a new string; advances *p past the '\n'. */
static char *take_line(const uint8_t **p, const uint8_t *end)
{
    const uint8_t *nl = memchr(*p, '\n', (size_t)(end - *p));
    const uint8_t *stop = nl ? nl : end;
    char *s = fuzz_cstr(*p, (size_t)(stop - *p));
    *p = nl ? nl + 1 : end;
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    long status = (long)(((unsigned)data[0] << 8 | data[1]) % 600);
    unsigned flags = data[2];
    int n = (int)(flags & 3) + 1;
    const uint8_t *p = data + 3, *end = data + size;
    char *ra = take_line(&p, end);
    char *ra_ms = take_line(&p, end);
    char *rid = take_line(&p, end);
    size_t body_len = (size_t)(end - p);
    char *body = fuzz_cstr(p, body_len); /* responses are NUL-terminated past body_len */

    struct imgq_http_header headers[3];
    size_t nh = 0;
    if (flags & 0x20)
        headers[nh++] = (struct imgq_http_header){"Retry-After", ra};
    if (flags & 0x40)
        headers[nh++] = (struct imgq_http_header){"retry-after-ms", ra_ms};
    if (flags & 0x80)
        headers[nh++] = (struct imgq_http_header){"x-request-id", rid};

    imgq_http_response res;
    memset(&res, 0, sizeof res);
    res.status = status;
    res.error = "";
    if (flags & 0x10) {
        res.err = IMGQ_ERANGE;
        res.error = "response body over the cap";
    } else if (flags & 0x04) {
        res.err = IMGQ_EHTTP;
        res.timed_out = (flags & 0x08) != 0;
        res.error = res.timed_out ? "timed out" : "connection refused";
    }
    res.body = (const unsigned char *)body;
    res.body_len = body_len;
    res.headers = headers;
    res.nheaders = nh;

    struct imgq_provider_result r;
    imgq_openai_parse(&res, n, &r);

    FUZZ_CHECK(FUZZ_TERMINATED(r.message) && FUZZ_TERMINATED(r.code));
    FUZZ_CHECK(FUZZ_TERMINATED(r.request_id));
    FUZZ_CHECK(r.status == status);
    if (r.cls == IMGQ_CLASS_NONE) {
        FUZZ_CHECK(res.err == 0 && status == 200);
        FUZZ_CHECK(r.nimages == n && r.images && r.image_lens);
        for (int i = 0; i < n; i++)
            FUZZ_CHECK(r.images[i] != NULL);
    } else {
        FUZZ_CHECK(r.nimages >= 0 && r.nimages <= n);
        FUZZ_CHECK(r.message[0] != '\0'); /* every failure says why */
    }
    if (res.err)
        FUZZ_CHECK(r.cls == IMGQ_CLASS_TIMEOUT || r.cls == IMGQ_CLASS_NETWORK ||
                   r.cls == IMGQ_CLASS_BAD_RESPONSE);
    if (r.cls == IMGQ_CLASS_RATE_LIMIT)
        FUZZ_CHECK(r.retry_after_ms == -1 ||
                   (r.retry_after_ms >= 0 && r.retry_after_ms <= 86400000L));
    else
        FUZZ_CHECK(r.retry_after_ms == -1);
    FUZZ_CHECK(FUZZ_TERMINATED(r.usage_unusable));
    if (r.usage_present) {
        FUZZ_CHECK(r.cls == IMGQ_CLASS_NONE && r.usage_json && !r.usage_unusable[0]);
        FUZZ_CHECK(r.usage.text_in >= 0 && r.usage.image_in >= 0 && r.usage.image_out >= 0 &&
                   r.usage.text_out >= 0 && r.usage.images == n);
        FUZZ_CHECK(r.usage.text_in <= IMGQ_USAGE_MAX && r.usage.image_in <= IMGQ_USAGE_MAX &&
                   r.usage.image_out <= IMGQ_USAGE_MAX && r.usage.text_out <= IMGQ_USAGE_MAX);
        FUZZ_CHECK(r.usage.image_out + r.usage.text_out > 0); /* images cost output */
    } else if (r.cls == IMGQ_CLASS_NONE) {
        FUZZ_CHECK(r.usage.text_in == 0 && r.usage.image_out == 0 && r.usage.images == 0);
    }
    /* Retryability is a pure function of the class. */
    (void)imgq_error_class_retryable(r.cls);
    FUZZ_CHECK(imgq_error_class_name(r.cls)[0] != '\0');

    imgq_provider_result_clear(&r);
    free(body);
    free(rid);
    free(ra_ms);
    free(ra);
    return 0;
}
