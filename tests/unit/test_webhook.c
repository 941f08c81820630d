/*
 * test_webhook.c - Standard Webhooks v1: the spec's published signing vector (the reference
 * libraries' TestWebhookSign: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, msg_p5jXN8AQM9LWM0D4loKWxJek,
 * 1614265330, {"test": 2432232314} -> v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=), secret
 * parsing, rotation with two secrets, tampering, timestamp tolerance, malformed headers and
 * message ids.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imgq/webhook.h"

#define VEC_SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define VEC_ID "msg_p5jXN8AQM9LWM0D4loKWxJek"
#define VEC_TS 1614265330LL
#define VEC_TS_S "1614265330"
#define VEC_BODY "{\"test\": 2432232314}"
#define VEC_SIG "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
/* A second secret (32 bytes of 0x01..0x20), for rotation. */
#define SECRET2 "whsec_AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="

static const char *const vec_secrets[] = {VEC_SECRET};

static int verify(const char *const *secrets, size_t n, const char *id, const char *ts,
                  const char *sig, const char *body, long long now, long tol, char *why,
                  size_t whylen)
{
    return imgq_webhook_verify(secrets, n, id, ts, sig, body, strlen(body), now, tol, why, whylen);
}

static void test_published_vector(void **state)
{
    char *sig = imgq_webhook_sign(vec_secrets, 1, VEC_ID, VEC_TS, VEC_BODY, strlen(VEC_BODY));
    assert_non_null(sig);
    assert_string_equal(sig, VEC_SIG);
    free(sig);

    char why[256];
    assert_int_equal(
        verify(vec_secrets, 1, VEC_ID, VEC_TS_S, VEC_SIG, VEC_BODY, VEC_TS, 0, why, sizeof why), 0);
    /* The vector's multi-signature case: unknown versions and wrong v1 entries around it. */
    const char *multi = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= "
                        "v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= " VEC_SIG
                        " v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=";
    assert_int_equal(
        verify(vec_secrets, 1, VEC_ID, VEC_TS_S, multi, VEC_BODY, VEC_TS, 0, why, sizeof why), 0);
    /* v1a (ed25519) entries are skipped, not an error. */
    const char *with_v1a = "v1a,hnO3f9T8Ytu9HwrXslvumlUpqtNVqkhqw/enGzPCXe5BdqzCInXqYXFymVJaA7AZ"
                           "dpXwVLPo3mNl8EM+m7TBAg== " VEC_SIG;
    assert_int_equal(
        verify(vec_secrets, 1, VEC_ID, VEC_TS_S, with_v1a, VEC_BODY, VEC_TS, 0, why, sizeof why),
        0);
    /* The vector's wrong signature. */
    assert_int_equal(verify(vec_secrets, 1, VEC_ID, VEC_TS_S,
                            "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=", VEC_BODY, VEC_TS, 0,
                            why, sizeof why),
                     IMGQ_EINVAL);
    assert_string_equal(why, "no matching signature");
}

static void test_secret_parse(void **state)
{
    uint8_t *key = NULL;
    size_t len = 0;
    assert_int_equal(imgq_webhook_secret_parse(VEC_SECRET, &key, &len), 0);
    assert_int_equal(len, 24);
    free(key);
    assert_int_equal(imgq_webhook_secret_parse(SECRET2, &key, &len), 0);
    assert_int_equal(len, 32);
    for (size_t i = 0; i < len; i++)
        assert_int_equal(key[i], i + 1);
    free(key);

    key = NULL;
    /* No prefix, wrong prefix, NULL. */
    assert_int_equal(imgq_webhook_secret_parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &key, &len),
                     IMGQ_EINVAL);
    assert_int_equal(imgq_webhook_secret_parse("whsk_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &key, &len),
                     IMGQ_EINVAL);
    assert_int_equal(
        imgq_webhook_secret_parse("WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &key, &len),
        IMGQ_EINVAL);
    assert_int_equal(imgq_webhook_secret_parse(NULL, &key, &len), IMGQ_EINVAL);
    /* Not base64: bad characters, missing padding, whitespace, base64url alphabet. */
    assert_int_equal(imgq_webhook_secret_parse("whsec_not*base64", &key, &len), IMGQ_EPARSE);
    assert_int_equal(
        imgq_webhook_secret_parse("whsec_AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA", &key, &len),
        IMGQ_EPARSE);
    assert_int_equal(
        imgq_webhook_secret_parse("whsec_ MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &key, &len),
        IMGQ_EPARSE);
    assert_int_equal(
        imgq_webhook_secret_parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n", &key, &len),
        IMGQ_EPARSE);
    assert_int_equal(imgq_webhook_secret_parse("whsec_-_-_", &key, &len), IMGQ_EPARSE);
    /* Empty key. */
    assert_int_equal(imgq_webhook_secret_parse("whsec_", &key, &len), IMGQ_ERANGE);
    assert_null(key);
    assert_string_equal(imgq_webhook_secret_strerror(IMGQ_EINVAL),
                        "secret must start with \"whsec_\"");

    /* sign refuses any bad secret, also the second of two. */
    const char *bad[] = {VEC_SECRET, "whsec_!!"};
    assert_null(imgq_webhook_sign(bad, 2, VEC_ID, VEC_TS, VEC_BODY, strlen(VEC_BODY)));
    assert_null(imgq_webhook_sign(bad + 1, 1, VEC_ID, VEC_TS, VEC_BODY, strlen(VEC_BODY)));
    assert_null(imgq_webhook_sign(bad, 0, VEC_ID, VEC_TS, VEC_BODY, strlen(VEC_BODY)));
    /* verify names the bad secret. */
    char why[256];
    assert_int_equal(
        verify(bad, 2, VEC_ID, VEC_TS_S, VEC_SIG, VEC_BODY, VEC_TS, 0, why, sizeof why),
        IMGQ_ECONFIG);
    assert_non_null(strstr(why, "secret 2"));
    assert_int_equal(
        verify(bad, 0, VEC_ID, VEC_TS_S, VEC_SIG, VEC_BODY, VEC_TS, 0, why, sizeof why),
        IMGQ_ECONFIG);
}

static void test_rotation_two_secrets(void **state)
{
    const char *both[] = {VEC_SECRET, SECRET2};
    const char *old_only[] = {VEC_SECRET};
    const char *new_only[] = {SECRET2};
    const char *other[] = {"whsec_c2VjcmV0LW5vdC11c2VkLWZvci1zaWduaW5nLTEyMzQ="};
    char *sig = imgq_webhook_sign(both, 2, VEC_ID, VEC_TS, VEC_BODY, strlen(VEC_BODY));
    assert_non_null(sig);
    /* One entry per secret, in order, one space apart; the first is the published one. */
    assert_int_equal(strlen(sig), 2 * 47 + 1);
    assert_memory_equal(sig, VEC_SIG " v1,", 48 + 3);

    char why[256];
    /* A receiver holding either secret, or both, accepts. */
    assert_int_equal(
        verify(old_only, 1, VEC_ID, VEC_TS_S, sig, VEC_BODY, VEC_TS, 0, why, sizeof why), 0);
    assert_int_equal(
        verify(new_only, 1, VEC_ID, VEC_TS_S, sig, VEC_BODY, VEC_TS, 0, why, sizeof why), 0);
    assert_int_equal(verify(both, 2, VEC_ID, VEC_TS_S, sig, VEC_BODY, VEC_TS, 0, why, sizeof why),
                     0);
    /* The new secret alone signs its own entry; a receiver with both accepts that too. */
    char *sig2 = imgq_webhook_sign(new_only, 1, VEC_ID, VEC_TS, VEC_BODY, strlen(VEC_BODY));
    assert_string_equal(sig2, sig + 48);
    assert_int_equal(verify(both, 2, VEC_ID, VEC_TS_S, sig2, VEC_BODY, VEC_TS, 0, why, sizeof why),
                     0);
    assert_int_equal(
        verify(old_only, 1, VEC_ID, VEC_TS_S, sig2, VEC_BODY, VEC_TS, 0, why, sizeof why),
        IMGQ_EINVAL);
    /* A secret that signed nothing matches nothing. */
    assert_int_equal(verify(other, 1, VEC_ID, VEC_TS_S, sig, VEC_BODY, VEC_TS, 0, why, sizeof why),
                     IMGQ_EINVAL);
    assert_string_equal(why, "no matching signature");
    free(sig);
    free(sig2);
}

static void test_tampering(void **state)
{
    char why[256];
    /* Body: one byte changed, one byte appended, whitespace re-serialised, empty. */
    assert_int_equal(verify(vec_secrets, 1, VEC_ID, VEC_TS_S, VEC_SIG, "{\"test\": 2432232315}",
                            VEC_TS, 0, why, sizeof why),
                     IMGQ_EINVAL);
    assert_int_equal(
        verify(vec_secrets, 1, VEC_ID, VEC_TS_S, VEC_SIG, VEC_BODY " ", VEC_TS, 0, why, sizeof why),
        IMGQ_EINVAL);
    assert_int_equal(verify(vec_secrets, 1, VEC_ID, VEC_TS_S, VEC_SIG, "{\"test\":2432232314}",
                            VEC_TS, 0, why, sizeof why),
                     IMGQ_EINVAL);
    assert_int_equal(
        verify(vec_secrets, 1, VEC_ID, VEC_TS_S, VEC_SIG, "", VEC_TS, 0, why, sizeof why),
        IMGQ_EINVAL);
    /* Id. */
    assert_int_equal(verify(vec_secrets, 1, "msg_p5jXN8AQM9LWM0D4loKWxJeK", VEC_TS_S, VEC_SIG,
                            VEC_BODY, VEC_TS, 0, why, sizeof why),
                     IMGQ_EINVAL);
    /* Timestamp: one second later (within tolerance, so it is the signature that fails), and
     * the same value written with a leading zero (different signed text). */
    assert_int_equal(
        verify(vec_secrets, 1, VEC_ID, "1614265331", VEC_SIG, VEC_BODY, VEC_TS, 0, why, sizeof why),
        IMGQ_EINVAL);
    assert_string_equal(why, "no matching signature");
    assert_int_equal(verify(vec_secrets, 1, VEC_ID, "01614265330", VEC_SIG, VEC_BODY, VEC_TS, 0,
                            why, sizeof why),
                     IMGQ_EINVAL);
    /* Signature: one character flipped, truncated, lowercased version tag. */
    assert_int_equal(verify(vec_secrets, 1, VEC_ID, VEC_TS_S,
                            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OF=", VEC_BODY, VEC_TS, 0,
                            why, sizeof why),
                     IMGQ_EINVAL);
    assert_int_equal(verify(vec_secrets, 1, VEC_ID, VEC_TS_S,
                            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE", VEC_BODY, VEC_TS, 0,
                            why, sizeof why),
                     IMGQ_EINVAL);
    assert_int_equal(verify(vec_secrets, 1, VEC_ID, VEC_TS_S,
                            "V1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", VEC_BODY, VEC_TS, 0,
                            why, sizeof why),
                     IMGQ_EPARSE);
    /* Binary bodies with NULs are signed as bytes. */
    const unsigned char bin[] = {0, 1, 2, 0, 255};
    char *sig = imgq_webhook_sign(vec_secrets, 1, VEC_ID, VEC_TS, bin, sizeof bin);
    assert_int_equal(imgq_webhook_verify(vec_secrets, 1, VEC_ID, VEC_TS_S, sig, bin, sizeof bin,
                                         VEC_TS, 0, why, sizeof why),
                     0);
    assert_int_equal(imgq_webhook_verify(vec_secrets, 1, VEC_ID, VEC_TS_S, sig, bin, sizeof bin - 1,
                                         VEC_TS, 0, why, sizeof why),
                     IMGQ_EINVAL);
    free(sig);
}

static void test_timestamp_tolerance(void **state)
{
    char why[256];
    /* Default tolerance (tolerance_s <= 0): 300 s either way, inclusive. */
    assert_int_equal(verify(vec_secrets, 1, VEC_ID, VEC_TS_S, VEC_SIG, VEC_BODY, VEC_TS + 300, 0,
                            why, sizeof why),
                     0);
    assert_int_equal(verify(vec_secrets, 1, VEC_ID, VEC_TS_S, VEC_SIG, VEC_BODY, VEC_TS + 301, 0,
                            why, sizeof why),
                     IMGQ_ERANGE);
    assert_non_null(strstr(why, "timestamp too old"));
    assert_int_equal(verify(vec_secrets, 1, VEC_ID, VEC_TS_S, VEC_SIG, VEC_BODY, VEC_TS - 300, -1,
                            why, sizeof why),
                     0);
    assert_int_equal(verify(vec_secrets, 1, VEC_ID, VEC_TS_S, VEC_SIG, VEC_BODY, VEC_TS - 301, 0,
                            why, sizeof why),
                     IMGQ_ERANGE);
    assert_non_null(strstr(why, "timestamp too new"));
    /* A replay a day later; an explicit tolerance. */
    assert_int_equal(verify(vec_secrets, 1, VEC_ID, VEC_TS_S, VEC_SIG, VEC_BODY, VEC_TS + 86400, 0,
                            why, sizeof why),
                     IMGQ_ERANGE);
    assert_int_equal(verify(vec_secrets, 1, VEC_ID, VEC_TS_S, VEC_SIG, VEC_BODY, VEC_TS + 86400,
                            86400, why, sizeof why),
                     0);
    assert_int_equal(verify(vec_secrets, 1, VEC_ID, VEC_TS_S, VEC_SIG, VEC_BODY, VEC_TS + 11, 10,
                            why, sizeof why),
                     IMGQ_ERANGE);
    /* Too old is refused even with a wrong signature (the check order is fixed). */
    assert_int_equal(verify(vec_secrets, 1, VEC_ID, VEC_TS_S,
                            "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=", VEC_BODY,
                            VEC_TS + 3600, 0, why, sizeof why),
                     IMGQ_ERANGE);
    /* The Go library's case: a timestamp from 2000 is far too old. */
    assert_int_equal(
        verify(vec_secrets, 1, VEC_ID, "946684800", VEC_SIG, VEC_BODY, VEC_TS, 0, why, sizeof why),
        IMGQ_ERANGE);
    /* Huge values do not overflow. */
    assert_int_equal(verify(vec_secrets, 1, VEC_ID, "9223372036854775807", VEC_SIG, VEC_BODY,
                            VEC_TS, 0, why, sizeof why),
                     IMGQ_ERANGE);
    assert_non_null(strstr(why, "timestamp too new"));
    assert_int_equal(verify(vec_secrets, 1, VEC_ID, "0", VEC_SIG, VEC_BODY, -9223372036854775807LL,
                            0, why, sizeof why),
                     IMGQ_ERANGE);
}

static void test_malformed_headers(void **state)
{
    char why[256];
    static const char *const bad_ts[] = {"",
                                         "-1614265330",
                                         "+1614265330",
                                         " 1614265330",
                                         "1614265330 ",
                                         "1614265330.0",
                                         "0x60380c32",
                                         "1e9",
                                         "99999999999999999999",
                                         "16142653３0"};
    for (size_t i = 0; i < sizeof bad_ts / sizeof bad_ts[0]; i++) {
        assert_int_equal(verify(vec_secrets, 1, VEC_ID, bad_ts[i], VEC_SIG, VEC_BODY, VEC_TS, 0,
                                why, sizeof why),
                         IMGQ_EPARSE);
        assert_non_null(strstr(why, "malformed header"));
    }
    static const char *const bad_sig[] = {"",
                                          " ",
                                          "v1,",
                                          "v1",
                                          "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
                                          "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
                                          "v1;g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
                                          VEC_SIG "\r\nX-Injected: 1",
                                          VEC_SIG "\tv1,abc"};
    for (size_t i = 0; i < sizeof bad_sig / sizeof bad_sig[0]; i++) {
        assert_int_equal(verify(vec_secrets, 1, VEC_ID, VEC_TS_S, bad_sig[i], VEC_BODY, VEC_TS, 0,
                                why, sizeof why),
                         IMGQ_EPARSE);
        assert_non_null(strstr(why, "malformed header"));
    }
    /* Extra spaces between entries are tolerated. */
    assert_int_equal(verify(vec_secrets, 1, VEC_ID, VEC_TS_S, "  v1,abc   " VEC_SIG "  ", VEC_BODY,
                            VEC_TS, 0, why, sizeof why),
                     0);
    /* An overlong header. */
    char *huge = malloc(20000);
    memset(huge, 'v', 19999);
    huge[19999] = '\0';
    memcpy(huge, VEC_SIG " ", 48);
    assert_int_equal(
        verify(vec_secrets, 1, VEC_ID, VEC_TS_S, huge, VEC_BODY, VEC_TS, 0, why, sizeof why),
        IMGQ_EPARSE);
    free(huge);
    /* Missing headers. */
    assert_int_equal(
        verify(vec_secrets, 1, NULL, VEC_TS_S, VEC_SIG, VEC_BODY, VEC_TS, 0, why, sizeof why),
        IMGQ_EPARSE);
    assert_non_null(strstr(why, "webhook-id missing"));
    assert_int_equal(
        verify(vec_secrets, 1, VEC_ID, NULL, VEC_SIG, VEC_BODY, VEC_TS, 0, why, sizeof why),
        IMGQ_EPARSE);
    assert_non_null(strstr(why, "webhook-timestamp missing"));
    assert_int_equal(
        verify(vec_secrets, 1, VEC_ID, VEC_TS_S, NULL, VEC_BODY, VEC_TS, 0, why, sizeof why),
        IMGQ_EPARSE);
    assert_non_null(strstr(why, "webhook-signature missing"));
    /* Ids with '.', spaces or control characters are refused by both sides. */
    static const char *const bad_id[] = {"", "msg.1", "msg 1", "msg\n1", "msg\x7f"};
    for (size_t i = 0; i < sizeof bad_id / sizeof bad_id[0]; i++) {
        assert_int_equal(verify(vec_secrets, 1, bad_id[i], VEC_TS_S, VEC_SIG, VEC_BODY, VEC_TS, 0,
                                why, sizeof why),
                         IMGQ_EPARSE);
        assert_null(imgq_webhook_sign(vec_secrets, 1, bad_id[i], VEC_TS, "x", 1));
    }
    char longid[IMGQ_WEBHOOK_ID_MAX + 2];
    memset(longid, 'a', sizeof longid - 1);
    longid[sizeof longid - 1] = '\0';
    assert_null(imgq_webhook_sign(vec_secrets, 1, longid, VEC_TS, "x", 1));
    longid[IMGQ_WEBHOOK_ID_MAX] = '\0';
    char *ok = imgq_webhook_sign(vec_secrets, 1, longid, VEC_TS, "x", 1);
    assert_non_null(ok);
    free(ok);
    /* why may be NULL or tiny. */
    assert_int_equal(verify(vec_secrets, 1, VEC_ID, "x", VEC_SIG, VEC_BODY, VEC_TS, 0, NULL, 0),
                     IMGQ_EPARSE);
    char tiny[4];
    assert_int_equal(
        verify(vec_secrets, 1, VEC_ID, "x", VEC_SIG, VEC_BODY, VEC_TS, 0, tiny, sizeof tiny),
        IMGQ_EPARSE);
    assert_string_equal(tiny, "mal");
}

static void test_ids(void **state)
{
    char *a = imgq_webhook_id(), *b = imgq_webhook_id();
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(strlen(a), 4 + 24);
    assert_memory_equal(a, "msg_", 4);
    assert_string_not_equal(a, b);
    for (const char *p = a + 4; *p; p++)
        assert_true((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                    (*p >= '0' && *p <= '9') || *p == '-' || *p == '_');
    /* A fresh id signs and verifies. */
    char *sig = imgq_webhook_sign(vec_secrets, 1, a, 1700000000, "{}", 2);
    assert_non_null(sig);
    char why[128];
    assert_int_equal(imgq_webhook_verify(vec_secrets, 1, a, "1700000000", sig, "{}", 2, 1700000000,
                                         0, why, sizeof why),
                     0);
    free(sig);
    free(a);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_published_vector),
        cmocka_unit_test(test_secret_parse),
        cmocka_unit_test(test_rotation_two_secrets),
        cmocka_unit_test(test_tampering),
        cmocka_unit_test(test_timestamp_tolerance),
        cmocka_unit_test(test_malformed_headers),
        cmocka_unit_test(test_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
