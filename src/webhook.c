/* webhook.c - Standard Webhooks v1 signatures: HMAC-SHA256 and base64 from libcrypto. */
#include "imgq/webhook.h"

#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "imgq/alloc.h"
#include "imgq/base64.h"

#define PREFIX "whsec_"
#define PREFIX_LEN 6
#define KEY_MAX 1024
#define SIG_RAW 32
#define SIG_B64 44 /* base64 of 32 bytes, with one '=' */
/* A signature header longer than this is refused as malformed (64 entries and then some). */
#define HEADER_MAX 8192

int imgq_webhook_secret_parse(const char *whsec, uint8_t **key, size_t *len)
{
    if (!whsec || strncmp(whsec, PREFIX, PREFIX_LEN) != 0)
        return IMGQ_EINVAL;
    const char *b64 = whsec + PREFIX_LEN;
    size_t n = strlen(b64);
    if (n == 0)
        return IMGQ_ERANGE;
    if (n > (KEY_MAX + 2) / 3 * 4)
        return IMGQ_ERANGE;
    uint8_t *raw;
    size_t rawlen;
    if (imgq_base64_decode(b64, n, &raw, &rawlen) != 0)
        return IMGQ_EPARSE;
    if (rawlen == 0 || rawlen > KEY_MAX) {
        OPENSSL_cleanse(raw, rawlen);
        free(raw);
        return IMGQ_ERANGE;
    }
    *key = raw;
    *len = rawlen;
    return 0;
}

const char *imgq_webhook_secret_strerror(int rc)
{
    switch (rc) {
    case 0:
        return "valid secret";
    case IMGQ_EINVAL:
        return "secret must start with \"whsec_\"";
    case IMGQ_EPARSE:
        return "secret is not standard base64 after \"whsec_\"";
    case IMGQ_ERANGE:
        return "secret key is empty or longer than 1024 bytes";
    default:
        return imgq_strerror(rc);
    }
}

/* The id goes into a header and into the signed text, where '.' separates the parts. */
static bool valid_id(const char *id)
{
    if (!id || !*id)
        return false;
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++, n++) {
        if (*p == '.' || *p <= ' ' || *p >= 0x7f || n >= IMGQ_WEBHOOK_ID_MAX)
            return false;
    }
    return true;
}

/* HMAC-SHA256(key, id "." ts "." body) into out[32]; false if libcrypto fails. */
static bool hmac_sign(const uint8_t *key, size_t keylen, const char *id, const char *ts,
                      const void *body, size_t len, unsigned char out[SIG_RAW])
{
    bool ok = false;
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
    if (!ctx)
        goto out;
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                           OSSL_PARAM_construct_end()};
    size_t outlen = 0;
    if (!EVP_MAC_init(ctx, key, keylen, params) ||
        !EVP_MAC_update(ctx, (const unsigned char *)id, strlen(id)) ||
        !EVP_MAC_update(ctx, (const unsigned char *)".", 1) ||
        !EVP_MAC_update(ctx, (const unsigned char *)ts, strlen(ts)) ||
        !EVP_MAC_update(ctx, (const unsigned char *)".", 1) ||
        (len && !EVP_MAC_update(ctx, body, len)) || !EVP_MAC_final(ctx, out, &outlen, SIG_RAW) ||
        outlen != SIG_RAW)
        goto out;
    ok = true;
out:
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    return ok;
}

/* base64 of the signature of the message under 'whsec' into out[SIG_B64 + 1]. */
static int sign_one(const char *whsec, const char *id, const char *ts, const void *body, size_t len,
                    char out[SIG_B64 + 1])
{
    uint8_t *key;
    size_t keylen;
    int rc = imgq_webhook_secret_parse(whsec, &key, &keylen);
    if (rc != 0)
        return rc;
    unsigned char raw[SIG_RAW];
    bool ok = hmac_sign(key, keylen, id, ts, body, len, raw);
    OPENSSL_cleanse(key, keylen);
    free(key);
    if (!ok)
        return IMGQ_EIO;
    int n = EVP_EncodeBlock((unsigned char *)out, raw, SIG_RAW);
    return n == SIG_B64 ? 0 : IMGQ_EIO;
}

char *imgq_webhook_sign(const char *const *secrets, size_t nsecrets, const char *msg_id,
                        long long timestamp_s, const void *body, size_t len)
{
    if (!secrets || nsecrets == 0 || nsecrets > 64 || !valid_id(msg_id) || (!body && len))
        return NULL;
    char ts[32];
    snprintf(ts, sizeof ts, "%lld", timestamp_s);
    /* "v1," + 44 per secret, one space between. */
    char *hdr = imgq_xmalloc(nsecrets * (3 + SIG_B64 + 1));
    char *p = hdr;
    for (size_t i = 0; i < nsecrets; i++) {
        char sig[SIG_B64 + 1];
        if (sign_one(secrets[i], msg_id, ts, body, len, sig) != 0) {
            free(hdr);
            return NULL;
        }
        if (i)
            *p++ = ' ';
        memcpy(p, "v1,", 3);
        memcpy(p + 3, sig, SIG_B64);
        p += 3 + SIG_B64;
    }
    *p = '\0';
    return hdr;
}

/* A plain decimal integer: digits only, no sign, no spaces, no overflow. */
static bool parse_timestamp(const char *s, long long *out)
{
    if (!s || !*s || strlen(s) > 19)
        return false;
    long long v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, *p - '0', &v))
            return false;
    }
    *out = v;
    return true;
}

int imgq_webhook_verify(const char *const *secrets, size_t nsecrets, const char *msg_id,
                        const char *timestamp, const char *signature_header, const void *body,
                        size_t len, long long now_s, long tolerance_s, char *why, size_t whylen)
{
    if (why && whylen)
        why[0] = '\0';
    if (!secrets || nsecrets == 0)
        return imgq_fail(IMGQ_ECONFIG, why, whylen, "no secret to verify with");
    for (size_t i = 0; i < nsecrets; i++) {
        uint8_t *key;
        size_t keylen;
        int rc = imgq_webhook_secret_parse(secrets[i], &key, &keylen);
        if (rc != 0)
            return imgq_fail(IMGQ_ECONFIG, why, whylen, "secret %zu: %s", i + 1,
                             imgq_webhook_secret_strerror(rc));
        OPENSSL_cleanse(key, keylen);
        free(key);
    }
    if (!body && len)
        return imgq_fail(IMGQ_EINVAL, why, whylen, "no body");

    /* ---- headers ---- */
    if (!msg_id)
        return imgq_fail(IMGQ_EPARSE, why, whylen, "malformed header: webhook-id missing");
    if (!valid_id(msg_id))
        return imgq_fail(IMGQ_EPARSE, why, whylen,
                         "malformed header: webhook-id must be 1 to %d printable characters "
                         "without '.' or spaces",
                         IMGQ_WEBHOOK_ID_MAX);
    if (!timestamp)
        return imgq_fail(IMGQ_EPARSE, why, whylen, "malformed header: webhook-timestamp missing");
    long long ts;
    if (!parse_timestamp(timestamp, &ts))
        return imgq_fail(IMGQ_EPARSE, why, whylen,
                         "malformed header: webhook-timestamp must be integer Unix seconds");
    if (!signature_header)
        return imgq_fail(IMGQ_EPARSE, why, whylen, "malformed header: webhook-signature missing");
    size_t hlen = strlen(signature_header);
    if (hlen > HEADER_MAX)
        return imgq_fail(IMGQ_EPARSE, why, whylen,
                         "malformed header: webhook-signature longer than %d bytes", HEADER_MAX);
    for (const unsigned char *p = (const unsigned char *)signature_header; *p; p++)
        if (*p < ' ' || *p >= 0x7f)
            return imgq_fail(IMGQ_EPARSE, why, whylen,
                             "malformed header: webhook-signature holds a control or "
                             "non-ASCII character");
    size_t nv1 = 0;
    for (const char *p = signature_header; *p;) {
        if (*p == ' ') {
            p++;
            continue;
        }
        size_t n = strcspn(p, " ");
        if (n > 3 && memcmp(p, "v1,", 3) == 0)
            nv1++;
        p += n;
    }
    if (nv1 == 0)
        return imgq_fail(IMGQ_EPARSE, why, whylen,
                         "malformed header: webhook-signature has no \"v1,<base64>\" "
                         "entry");

    /* ---- timestamp ---- */
    long long tol = tolerance_s > 0 ? tolerance_s : IMGQ_WEBHOOK_TOLERANCE_DEFAULT;
    long long age;
    if (__builtin_sub_overflow(now_s, ts, &age))
        age = now_s < 0 ? -tol - 1 : tol + 1;
    if (age > tol)
        return imgq_fail(IMGQ_ERANGE, why, whylen, "timestamp too old (%lld s, tolerance %lld s)",
                         age, tol);
    if (age < -tol)
        return imgq_fail(IMGQ_ERANGE, why, whylen,
                         "timestamp too new (%lld s ahead, tolerance %lld s)",
                         age == LLONG_MIN ? LLONG_MAX : -age, tol);

    /* ---- signatures: every secret against every v1 entry, no early exit ---- */
    int matched = 0;
    for (size_t i = 0; i < nsecrets; i++) {
        char expect[SIG_B64 + 1];
        int rc = sign_one(secrets[i], msg_id, timestamp, body, len, expect);
        if (rc != 0)
            return imgq_fail(rc, why, whylen, "cannot compute HMAC-SHA256: %s", imgq_strerror(rc));
        for (const char *p = signature_header; *p;) {
            if (*p == ' ') {
                p++;
                continue;
            }
            size_t n = strcspn(p, " ");
            if (n == 3 + SIG_B64 && memcmp(p, "v1,", 3) == 0)
                matched |= CRYPTO_memcmp(p + 3, expect, SIG_B64) == 0;
            p += n;
        }
        OPENSSL_cleanse(expect, sizeof expect);
    }
    if (!matched)
        return imgq_fail(IMGQ_EINVAL, why, whylen, "no matching signature");
    return 0;
}

char *imgq_webhook_id(void)
{
    unsigned char raw[18];
    if (RAND_bytes(raw, sizeof raw) != 1)
        return NULL;
    char *id = imgq_xmalloc(4 + 24 + 1);
    memcpy(id, "msg_", 4);
    int n = EVP_EncodeBlock((unsigned char *)id + 4, raw, sizeof raw);
    /* 18 bytes: 24 characters, no padding; make them URL- and header-friendly. */
    for (int i = 0; i < n; i++) {
        if (id[4 + i] == '+')
            id[4 + i] = '-';
        else if (id[4 + i] == '/')
            id[4 + i] = '_';
    }
    id[4 + n] = '\0';
    return id;
}
