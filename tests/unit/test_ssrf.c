/*
 * test_ssrf.c - the SSRF guard for user-supplied URLs: every denied IPv4 and IPv6 range,
 * IPv4 hidden in IPv6 (mapped, IPv4-compatible, NAT64, 6to4), the numeric IPv4 forms libc and
 * libcurl accept (decimal, octal, hex, short), allowlist host names, addresses and CIDR blocks,
 * non-http schemes, credentials and zone ids in URLs, a name resolving to loopback
 * ("localhost"), and the connect-to pin.  Only numeric hosts and "localhost" are resolved, so
 * the test needs no network.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imgq/ssrf.h"

static const struct imgq_ssrf_policy none = {NULL, 0};

/* Check 'url' against 'p'; returns the code, leaves the reason and pin in the statics. */
static char pin[IMGQ_SSRF_PIN_MAX], why[512];
static int check(const char *url, const struct imgq_ssrf_policy *p)
{
    memset(pin, 'X', sizeof pin);
    pin[sizeof pin - 1] = '\0';
    int rc = imgq_ssrf_check_url(url, p, pin, sizeof pin, why, sizeof why);
    if (rc == 0)
        assert_string_equal(why, "");
    else
        assert_string_equal(pin, "");
    return rc;
}

static void denied(const char *url, const struct imgq_ssrf_policy *p, const char *reason)
{
    int rc = check(url, p);
    if (rc != IMGQ_EINVAL || !strstr(why, reason)) {
        fprintf(stderr, "%s: rc %d why '%s', expected '%s'\n", url, rc, why, reason);
        fail();
    }
}

static void allowed(const char *url, const struct imgq_ssrf_policy *p, const char *want_pin)
{
    int rc = check(url, p);
    if (rc != 0) {
        fprintf(stderr, "%s: rc %d why '%s'\n", url, rc, why);
        fail();
    }
    if (want_pin)
        assert_string_equal(pin, want_pin);
}

static void test_public_addresses_pass_with_pin(void **state)
{
    allowed("http://8.8.8.8/", &none, "8.8.8.8:80:8.8.8.8:80");
    allowed("https://1.1.1.1/hook?x=1#f", NULL, "1.1.1.1:443:1.1.1.1:443");
    allowed("http://93.184.215.14:8080/a/b", &none, "93.184.215.14:8080:93.184.215.14:8080");
    allowed("HTTPS://8.8.4.4", &none, "8.8.4.4:443:8.8.4.4:443");
    allowed("https://[2606:4700:4700::1111]/", &none,
            "[2606:4700:4700::1111]:443:[2606:4700:4700::1111]:443");
    allowed("http://[2001:4860:4860::8888]:8443/", &none,
            "[2001:4860:4860::8888]:8443:[2001:4860:4860::8888]:8443");
    /* Just outside the denied blocks. */
    allowed("http://100.63.255.255/", &none, NULL);
    allowed("http://100.128.0.0/", &none, NULL);
    allowed("http://172.15.255.255/", &none, NULL);
    allowed("http://172.32.0.0/", &none, NULL);
    allowed("http://169.253.255.255/", &none, NULL);
    allowed("http://192.169.0.1/", &none, NULL);
    allowed("http://11.0.0.1/", &none, NULL);
    allowed("http://223.255.255.255/", &none, NULL);
    allowed("http://[fbff::1]/", &none, NULL);
    allowed("http://[fe00::1]/", &none, NULL);
}

static void test_denied_ipv4_ranges(void **state)
{
    denied("http://0.0.0.0/", &none, "\"this network\"");
    denied("http://0.1.2.3/", &none, "0.0.0.0/8");
    denied("http://10.0.0.1/", &none, "private (10.0.0.0/8)");
    denied("http://10.255.255.255/", &none, "10.0.0.0/8");
    denied("http://100.64.0.1/", &none, "carrier-grade NAT (100.64.0.0/10)");
    denied("http://100.127.255.254/", &none, "100.64.0.0/10");
    denied("http://127.0.0.1/", &none, "loopback (127.0.0.0/8)");
    denied("http://127.255.255.254:6379/", &none, "loopback");
    denied("http://169.254.169.254/latest/meta-data/", &none, "cloud metadata (169.254.0.0/16)");
    denied("http://172.16.0.1/", &none, "private (172.16.0.0/12)");
    denied("http://172.31.255.255/", &none, "172.16.0.0/12");
    denied("http://192.0.0.170/", &none, "192.0.0.0/24");
    denied("http://192.0.2.1/", &none, "documentation (192.0.2.0/24)");
    denied("http://192.88.99.1/", &none, "192.88.99.0/24");
    denied("http://192.168.1.1/", &none, "private (192.168.0.0/16)");
    denied("http://198.18.0.1/", &none, "benchmarking (198.18.0.0/15)");
    denied("http://198.19.255.255/", &none, "198.18.0.0/15");
    denied("http://198.51.100.7/", &none, "documentation (198.51.100.0/24)");
    denied("http://203.0.113.9/", &none, "documentation (203.0.113.0/24)");
    denied("http://224.0.0.1/", &none, "multicast (224.0.0.0/4)");
    denied("http://239.255.255.250/", &none, "multicast");
    denied("http://240.0.0.1/", &none, "reserved (240.0.0.0/4)");
    denied("http://255.255.255.255/", &none, "broadcast");
    /* The reason names the address and says why. */
    check("http://10.1.2.3/", &none);
    assert_string_equal(why, "10.1.2.3 is private (10.0.0.0/8): not allowed (SSRF guard)");
}

static void test_denied_ipv6_ranges(void **state)
{
    denied("http://[::1]/", &none, "loopback (::1)");
    denied("http://[0:00::0:1]/", &none, "loopback (::1)");
    denied("http://[::]/", &none, "unspecified (::)");
    denied("http://[::127.0.0.1]/", &none, "::/64");
    denied("http://[::8.8.8.8]/", &none, "::/64");
    denied("http://[::ffff:0:7f00:1]/", &none, "::/64"); /* IPv4-translated (SIIT) */
    denied("http://[fc00::1]/", &none, "unique local (fc00::/7)");
    denied("http://[fd00:ec2::254]/", &none, "unique local"); /* AWS IMDS over IPv6 */
    denied("http://[fe80::1]/", &none, "link-local (fe80::/10)");
    denied("http://[febf:ffff::1]/", &none, "fe80::/10");
    denied("http://[fec0::1]/", &none, "site-local (fec0::/10)");
    denied("http://[ff02::1]/", &none, "multicast (ff00::/8)");
    denied("http://[ff05::1:3]/", &none, "multicast");
    denied("http://[2001:db8::1]/", &none, "documentation (2001:db8::/32)");
    denied("http://[2001::1]/", &none, "Teredo (2001::/32)");
    denied("http://[3fff::1]/", &none, "documentation (3fff::/20)");
    denied("http://[100::1]/", &none, "discard-only (100::/64)");
    denied("http://[5f00::1]/", &none, "SRv6");
    denied("http://[64:ff9b:1::1]/", &none, "local-use NAT64");
}

static void test_ipv4_inside_ipv6(void **state)
{
    /* IPv4-mapped: judged as the IPv4 address, in every spelling. */
    denied("http://[::ffff:127.0.0.1]/", &none, "loopback (127.0.0.0/8)");
    denied("http://[::ffff:7f00:1]/", &none, "loopback (127.0.0.0/8)");
    denied("http://[0:0:0:0:0:ffff:7f00:0001]/", &none, "loopback");
    denied("http://[::ffff:169.254.169.254]/", &none, "cloud metadata");
    denied("http://[::ffff:10.0.0.1]/", &none, "private (10.0.0.0/8)");
    denied("http://[::ffff:0.0.0.0]/", &none, "0.0.0.0/8");
    allowed("http://[::ffff:8.8.8.8]/", &none, "[::ffff:8.8.8.8]:80:[::ffff:8.8.8.8]:80");
    /* NAT64: the embedded IPv4 address decides. */
    denied("http://[64:ff9b::127.0.0.1]/", &none, "NAT64 (64:ff9b::/96) of 127.0.0.1, loopback");
    denied("http://[64:ff9b::a9fe:a9fe]/", &none, "of 169.254.169.254, link-local");
    denied("http://[64:ff9b::c0a8:101]/", &none, "of 192.168.1.1, private");
    allowed("http://[64:ff9b::8.8.8.8]/", &none, NULL);
    allowed("http://[64:ff9b::808:808]/", &none, NULL);
    /* 6to4: the IPv4 address in bits 16..47. */
    denied("http://[2002:7f00:1::1]/", &none, "6to4 (2002::/16) of 127.0.0.1, loopback");
    denied("http://[2002:a9fe:a9fe::]/", &none, "of 169.254.169.254");
    denied("http://[2002:0a00:0001:1::1]/", &none, "of 10.0.0.1, private");
    allowed("http://[2002:808:808::1]/", &none, NULL);
}

static void test_numeric_ipv4_forms(void **state)
{
    /* Every form libc's inet_aton (and libcurl's URL parser) reads as 127.0.0.1. */
    static const char *const loop[] = {"http://2130706433/",   "http://0177.0.0.1/",
                                       "http://0x7f000001/",   "http://0x7F.0.0.1/",
                                       "http://127.1/",        "http://127.0.1/",
                                       "http://017700000001/", "http://0x7f.1/",
                                       "http://0177.0.0.01/",  "http://0x7f.0x0.0x0.0x1:8080/"};
    for (size_t i = 0; i < sizeof loop / sizeof loop[0]; i++)
        denied(loop[i], &none, "127.0.0.1 is loopback");
    denied("http://0/", &none, "0.0.0.0 is \"this network\"");
    denied("http://2852039166/", &none, "169.254.169.254 is link-local");
    denied("http://0xa9fea9fe/", &none, "169.254.169.254");
    denied("http://0251.0376.0251.0376/", &none, "169.254.169.254");
    denied("http://167772161/", &none, "10.0.0.1 is private");
    /* A public address written in decimal passes, pinned to its dotted form. */
    allowed("http://134744072/", &none, "8.8.8.8:80:8.8.8.8:80");
    allowed("http://0x08080808:81/", &none, "8.8.8.8:81:8.8.8.8:81");
}

static void test_allowlist(void **state)
{
    const char *dev[] = {"localhost",      "::1",      "10.0.0.0/8",
                         "192.168.1.0/24", "fd00::/8", "172.17.0.2"};
    struct imgq_ssrf_policy p = {dev, sizeof dev / sizeof dev[0]};
    assert_int_equal(imgq_ssrf_policy_check(&p, why, sizeof why), 0);

    /* Host names: every address of an allowed name passes; case and a trailing dot do not
     * matter for the match. */
    allowed("http://localhost:9000/hook", &p, NULL);
    assert_int_equal(strncmp(pin, "localhost:9000:", 15), 0);
    allowed("http://LocalHost/hook", &p, NULL);
    assert_int_equal(strncmp(pin, "LocalHost:80:", 13), 0);
    /* Addresses and CIDR blocks. */
    allowed("http://[::1]:8080/", &p, "[::1]:8080:[::1]:8080");
    allowed("http://10.1.2.3/", &p, "10.1.2.3:80:10.1.2.3:80");
    allowed("http://012.0.0.1/", &p, "10.0.0.1:80:10.0.0.1:80");
    allowed("http://192.168.1.77/", &p, NULL);
    allowed("http://[fd12:3456::1]/", &p, NULL);
    allowed("http://172.17.0.2/", &p, NULL);
    allowed("http://[::ffff:10.9.8.7]/", &p, NULL); /* mapped form of an allowed address */
    /* Next to them, still denied. */
    denied("http://192.168.2.1/", &p, "192.168.0.0/16");
    denied("http://172.17.0.3/", &p, "172.16.0.0/12");
    denied("http://[fc00::1]/", &p, "fc00::/7");
    denied("http://127.0.0.1/", &p, "loopback"); /* localhost is allowed by name only */
    denied("http://169.254.169.254/", &p, "cloud metadata");
    /* Allowing an address is not allowing the NAT64/6to4 forms of it. */
    denied("http://[64:ff9b::a00:1]/", &p, "NAT64");

    /* Bracketed IPv6 entries, /0 and full-length prefixes, mapped CIDR. */
    const char *more[] = {"[::1]", "127.0.0.0/8", "::ffff:169.254.0.0/112", "0.0.0.0/32"};
    struct imgq_ssrf_policy q = {more, sizeof more / sizeof more[0]};
    allowed("http://[::1]/", &q, NULL);
    allowed("http://127.0.0.5/", &q, NULL);
    allowed("http://2130706433/", &q, NULL);
    allowed("http://169.254.3.4/", &q, NULL);
    allowed("http://0.0.0.0/", &q, NULL);
    denied("http://0.0.0.1/", &q, "0.0.0.0/8");
    /* localhost passes when all its addresses are allowed. */
    allowed("http://localhost/", &q, NULL);

    /* Malformed entries are configuration errors, named. */
    static const char *const bad[] = {
        "10.0.0.0/33", "::/129",  "10.0.0.0/", "/8",           "1.2.3.4/x", "foo bar", "",
        "1.2.3.4/-1",  "host:80", "[::1]/129", "10.0.0.0/0008"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *one[] = {"localhost", bad[i]};
        struct imgq_ssrf_policy b = {one, 2};
        assert_int_equal(imgq_ssrf_policy_check(&b, why, sizeof why), IMGQ_ECONFIG);
        assert_non_null(strstr(why, "entry 2"));
        assert_int_equal(
            imgq_ssrf_check_url("http://8.8.8.8/", &b, pin, sizeof pin, why, sizeof why),
            IMGQ_ECONFIG);
    }
    struct imgq_ssrf_policy nullist = {NULL, 3};
    assert_int_equal(imgq_ssrf_policy_check(&nullist, why, sizeof why), IMGQ_ECONFIG);
    assert_int_equal(imgq_ssrf_policy_check(NULL, why, sizeof why), 0);
}

static void test_localhost_denied_unless_allowed(void **state)
{
    denied("http://localhost/", &none, "'localhost' resolves to ");
    assert_non_null(strstr(why, "loopback"));
    denied("http://localhost:6379/", NULL, "loopback");
    denied("http://LOCALHOST/", &none, "loopback");
    /* An allowlist of other things does not help. */
    const char *other[] = {"example.com", "10.0.0.0/8"};
    struct imgq_ssrf_policy p = {other, 2};
    denied("http://localhost/", &p, "loopback");
    const char *lh[] = {"localhost"};
    struct imgq_ssrf_policy q = {lh, 1};
    allowed("http://localhost/", &q, NULL);
}

static void test_schemes_and_url_forms(void **state)
{
    static const char *const schemes[] = {
        "file:///etc/passwd",    "ftp://8.8.8.8/",   "gopher://8.8.8.8:70/_x",
        "dict://8.8.8.8:11211/", "ldap://8.8.8.8/",  "smtp://8.8.8.8/",
        "telnet://8.8.8.8/",     "tftp://8.8.8.8/x", "ws://8.8.8.8/",
        "javascript:alert(1)",   "s3://bucket/key",  "scp://8.8.8.8/x"};
    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++) {
        int rc = check(schemes[i], &none);
        assert_int_equal(rc, IMGQ_EINVAL);
        assert_true(strstr(why, "http or https only") || strstr(why, "malformed URL"));
    }
    check("ftp://8.8.8.8/", &none);
    assert_string_equal(why, "URL scheme 'ftp' not allowed: http or https only");

    static const char *const malformed[] = {"",
                                            "8.8.8.8",
                                            "//8.8.8.8/",
                                            "http://",

                                            "http:8.8.8.8",
                                            "http://[::1",
                                            "http://8.8.8.8:99999/",
                                            " http://8.8.8.8/",
                                            "http://8.8.8.8/ x",
                                            "http://a@b@8.8.8.8/",
                                            "http://exa mple.com/"};
    for (size_t i = 0; i < sizeof malformed / sizeof malformed[0]; i++) {
        int rc = check(malformed[i], &none);
        if (rc != IMGQ_EINVAL) {
            fprintf(stderr, "'%s': rc %d why '%s'\n", malformed[i], rc, why);
            fail();
        }
    }
    assert_int_equal(imgq_ssrf_check_url(NULL, &none, pin, sizeof pin, why, sizeof why),
                     IMGQ_EINVAL);
}

static void test_credentials_and_zone_ids(void **state)
{
    static const char *const creds[] = {
        "http://user@8.8.8.8/",
        "http://user:pw@8.8.8.8/",
        "http://:pw@8.8.8.8/",
        "http://:@8.8.8.8/",
        "https://user@example.com/",
        "http://8.8.8.8@127.0.0.1/", /* the classic: a public-looking name in the userinfo */
        "http://127.0.0.1@8.8.8.8/"};
    for (size_t i = 0; i < sizeof creds / sizeof creds[0]; i++) {
        int rc = check(creds[i], &none);
        if (rc != IMGQ_EINVAL || !strstr(why, "credentials")) {
            fprintf(stderr, "'%s': rc %d why '%s'\n", creds[i], rc, why);
            fail();
        }
    }
    /* Also when the host is allowed. */
    const char *lh[] = {"localhost"};
    struct imgq_ssrf_policy q = {lh, 1};
    denied("http://admin:admin@localhost/", &q, "credentials");
    /* Zone ids. */
    denied("http://[fe80::1%25eth0]/", &none, "zone id");
    const char *ll[] = {"fe80::/10"};
    struct imgq_ssrf_policy z = {ll, 1};
    denied("http://[fe80::1%25eth0]/", &z, "zone id");
}

static void test_resolution_failures_and_pin_size(void **state)
{
    /* .invalid never resolves (RFC 6761); a resolver without network may say "try again". */
    int rc = check("http://imgq-ssrf-test.invalid/", &none);
    assert_true(rc == IMGQ_ENOTFOUND || rc == IMGQ_EAGAIN);
    assert_non_null(strstr(why, "cannot resolve 'imgq-ssrf-test.invalid'"));

    char small[10];
    assert_int_equal(
        imgq_ssrf_check_url("http://8.8.8.8/", &none, small, sizeof small, why, sizeof why),
        IMGQ_ERANGE);
    assert_string_equal(small, "");
    /* No pin wanted, no reason wanted. */
    assert_int_equal(imgq_ssrf_check_url("http://8.8.8.8/", &none, NULL, 0, NULL, 0), 0);
    assert_int_equal(imgq_ssrf_check_url("http://10.0.0.1/", &none, NULL, 0, NULL, 0), IMGQ_EINVAL);
    /* A reason cut to the buffer. */
    char tiny[6];
    assert_int_equal(imgq_ssrf_check_url("http://10.0.0.1/", &none, NULL, 0, tiny, sizeof tiny),
                     IMGQ_EINVAL);
    assert_string_equal(tiny, "10.0.");
}

static void test_check_address_and_peer_filter(void **state)
{
    assert_int_equal(imgq_ssrf_check_address("8.8.8.8", &none, why, sizeof why), 0);
    assert_int_equal(imgq_ssrf_check_address("2606:4700:4700::1111", NULL, why, sizeof why), 0);
    assert_int_equal(imgq_ssrf_check_address("[::1]", &none, why, sizeof why), IMGQ_EINVAL);
    assert_string_equal(why, "::1 is loopback (::1): not allowed (SSRF guard)");
    assert_int_equal(imgq_ssrf_check_address("::ffff:169.254.169.254", &none, why, sizeof why),
                     IMGQ_EINVAL);
    /* No resolution and no lenient numeric forms here: these are not addresses. */
    assert_int_equal(imgq_ssrf_check_address("2130706433", &none, why, sizeof why), IMGQ_EINVAL);
    assert_non_null(strstr(why, "not an IP address"));
    assert_int_equal(imgq_ssrf_check_address("localhost", &none, why, sizeof why), IMGQ_EINVAL);
    assert_int_equal(imgq_ssrf_check_address(NULL, &none, why, sizeof why), IMGQ_EINVAL);

    const char *dev[] = {"127.0.0.1", "localhost"};
    struct imgq_ssrf_policy p = {dev, 2};
    assert_true(imgq_ssrf_peer_allowed("8.8.8.8", (void *)&none));
    assert_false(imgq_ssrf_peer_allowed("127.0.0.1", (void *)&none));
    assert_true(imgq_ssrf_peer_allowed("127.0.0.1", &p));
    assert_false(imgq_ssrf_peer_allowed("::1", &p)); /* host-name entries do not apply */
    assert_false(imgq_ssrf_peer_allowed("10.0.0.1", NULL));
    assert_false(imgq_ssrf_peer_allowed("garbage", NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_public_addresses_pass_with_pin),
        cmocka_unit_test(test_denied_ipv4_ranges),
        cmocka_unit_test(test_denied_ipv6_ranges),
        cmocka_unit_test(test_ipv4_inside_ipv6),
        cmocka_unit_test(test_numeric_ipv4_forms),
        cmocka_unit_test(test_allowlist),
        cmocka_unit_test(test_localhost_denied_unless_allowed),
        cmocka_unit_test(test_schemes_and_url_forms),
        cmocka_unit_test(test_credentials_and_zone_ids),
        cmocka_unit_test(test_resolution_failures_and_pin_size),
        cmocka_unit_test(test_check_address_and_peer_filter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
