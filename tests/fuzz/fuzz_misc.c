/*
 * fuzz_misc.c - the small parsers of external text, one per input, chosen by its first byte
 * (its value modulo 4; seeds start with '0'..'3'):
 *
 *   0  imgq_redis_url_parse   (IMGQ_REDIS_URL, --redis): fields in range; the password never
 *                             appears in the error message
 *   1  imgq_base64_decode     (provider b64_json): strict RFC 4648; decode(encode(x)) == x
 *   2  imgq_retry_hint_ms     (Retry-After, retry-after-ms, durations such as "6m0s"):
 *                             -1 or 0..max, for every form and maximum; the same text and
 *                             its first bytes by length agree
 *   3  imgq_money_parse       (budgets, CLI): parse(format(v)) == v
 */
#include <stdbool.h>

#include "fuzz.h"
#include "imgq/base64.h"
#include "imgq/catalog.h"
#include "imgq/provider.h"
#include "imgq/queue.h"
#include "imgq/retry_hint.h"

#define SECRET "Zq7SecretPw"

static void redis_url(const char *s)
{
    struct imgq_redis_url u;
    char err[256];
    memset(err, 'x', sizeof err);
    int rc = imgq_redis_url_parse(s, &u, err, sizeof err);
    if (rc == 0) {
        FUZZ_CHECK(u.host != NULL);
        FUZZ_CHECK(u.port >= 1 && u.port <= 65535);
        FUZZ_CHECK(u.db >= 0 && u.db <= 100000);
        imgq_redis_url_clear(&u);
    } else {
        FUZZ_CHECK(rc == IMGQ_EINVAL && FUZZ_TERMINATED(err));
        FUZZ_CHECK(u.host == NULL && u.user == NULL && u.password == NULL);
    }

    /* The same text after credentials: the password must come back, or stay out of errors. */
    if (strstr(s, SECRET))
        return;
    size_t n = strlen(s);
    char *url = malloc(n + sizeof "redis://user:" SECRET "@");
    FUZZ_CHECK(url != NULL);
    strcpy(url, "redis://user:" SECRET "@");
    strcat(url, s);
    char big[1024];
    rc = imgq_redis_url_parse(url, &u, big, sizeof big);
    if (rc == 0) {
        FUZZ_CHECK(u.user && strcmp(u.user, "user") == 0);
        FUZZ_CHECK(u.password && strcmp(u.password, SECRET) == 0);
        imgq_redis_url_clear(&u);
    } else {
        if (strstr(big, SECRET))
            fprintf(stderr, "password in the error message: %s\n", big);
        FUZZ_CHECK(strstr(big, SECRET) == NULL);
    }
    free(url);
}

static void base64(const char *s, size_t n)
{
    uint8_t *out = NULL;
    size_t outlen = 0;
    if (imgq_base64_decode(s, n, &out, &outlen) == 0) {
        FUZZ_CHECK(n % 4 == 0 && outlen <= n / 4 * 3 && outlen + 2 >= n / 4 * 3);
        FUZZ_CHECK(out[outlen] == 0); /* results are NUL-terminated */
        size_t elen = 0;
        char *enc = imgq_base64_encode(out, outlen, &elen);
        FUZZ_CHECK(elen == n && strlen(enc) == n);
        /* Canonical up to the unused bits of the last digit before the padding. */
        size_t pad = (n && s[n - 1] == '=') + (n > 1 && s[n - 2] == '=');
        for (size_t i = 0; i < n; i++)
            FUZZ_CHECK(enc[i] == s[i] || (pad && i == n - pad - 1));
        uint8_t *again;
        size_t againlen;
        FUZZ_CHECK(imgq_base64_decode(enc, elen, &again, &againlen) == 0);
        FUZZ_CHECK(againlen == outlen && memcmp(again, out, outlen) == 0);
        free(again);
        free(enc);
        free(out);
    }
    /* Any bytes survive encode + decode. */
    size_t elen;
    char *enc = imgq_base64_encode(s, n, &elen);
    FUZZ_CHECK(elen == (n + 2) / 3 * 4 && enc[elen] == '\0');
    uint8_t *dec;
    size_t declen;
    FUZZ_CHECK(imgq_base64_decode(enc, elen, &dec, &declen) == 0);
    FUZZ_CHECK(declen == n && memcmp(dec, s, n) == 0);
    free(dec);
    free(enc);
}

static void retry_after(const char *s)
{
    static const int64_t nows[] = {0, 1782864000000LL, 4102444800000LL}; /* 1970, 2026, 2100 */
    static const long maxes[] = {0, 1000, IMGQ_RETRY_HINT_MAX_MS, IMGQ_RETRY_HINT_CEILING_MS};
    static const enum imgq_retry_hint_form forms[] = {IMGQ_HINT_RETRY_AFTER, IMGQ_HINT_MILLIS,
                                                      IMGQ_HINT_DURATION};
    size_t n = strlen(s);
    for (size_t f = 0; f < 3; f++)
        for (size_t i = 0; i < sizeof nows / sizeof nows[0]; i++)
            for (size_t m = 0; m < sizeof maxes / sizeof maxes[0]; m++) {
                long ms = imgq_retry_hint_ms(forms[f], s, (size_t)-1, nows[i], maxes[m]);
                FUZZ_CHECK(ms == -1 || (ms >= 0 && ms <= maxes[m]));
                FUZZ_CHECK(imgq_retry_hint_ms(forms[f], s, n, nows[i], maxes[m]) == ms);
            }
}

static void money(const char *s)
{
    imgq_micros v;
    int rc = imgq_money_parse(s, &v);
    FUZZ_CHECK(rc == 0 || rc == IMGQ_EINVAL || rc == IMGQ_ERANGE);
    if (rc != 0)
        return;
    char buf[64];
    imgq_money_format(v, 6, buf, sizeof buf);
    imgq_micros back;
    FUZZ_CHECK(imgq_money_parse(buf, &back) == 0);
    if (back != v)
        fprintf(stderr, "money '%s' -> %lld -> '%s' -> %lld\n", s, (long long)v, buf,
                (long long)back);
    FUZZ_CHECK(back == v);
    for (int d = 0; d <= 6; d++) {
        imgq_money_format(v, d, buf, sizeof buf);
        FUZZ_CHECK(FUZZ_TERMINATED(buf) && buf[0] != '\0');
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    char *s = fuzz_cstr(data + 1, size - 1);
    switch (data[0] % 4) {
    case 0:
        redis_url(s);
        break;
    case 1:
        base64(s, size - 1); /* the bytes as given, NULs included */
        break;
    case 2:
        retry_after(s);
        break;
    default:
        money(s);
        break;
    }
    free(s);
    return 0;
}
