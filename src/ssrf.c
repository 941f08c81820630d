/* ssrf.c - refuse user-supplied URLs that lead to private, local or reserved addresses. */
#include "imgq/ssrf.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <curl/curl.h>

#define HOST_MAX 253

/* An address as 4 or 16 bytes in network order. */
struct addr {
    int family; /* AF_INET or AF_INET6 */
    uint8_t b[16];
};

struct cidr {
    struct addr a;
    int prefix;
};

/* Strict numeric parse (inet_pton: dotted quad only for IPv4), brackets allowed for IPv6. */
static bool parse_ip(const char *s, struct addr *a)
{
    char buf[INET6_ADDRSTRLEN + 2];
    size_t n = strlen(s);
    if (n >= 2 && s[0] == '[' && s[n - 1] == ']') {
        if (n - 2 >= sizeof buf)
            return false;
        memcpy(buf, s + 1, n - 2);
        buf[n - 2] = '\0';
        s = buf;
        if (inet_pton(AF_INET6, s, a->b) == 1) {
            a->family = AF_INET6;
            return true;
        }
        return false;
    }
    memset(a->b, 0, sizeof a->b);
    if (inet_pton(AF_INET, s, a->b) == 1) {
        a->family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, s, a->b) == 1) {
        a->family = AF_INET6;
        return true;
    }
    return false;
}

static const uint8_t mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* ::ffff:a.b.c.d becomes a.b.c.d. */
static void canonical(struct addr *a)
{
    if (a->family == AF_INET6 && memcmp(a->b, mapped_prefix, 12) == 0) {
        memmove(a->b, a->b + 12, 4);
        memset(a->b + 4, 0, 12);
        a->family = AF_INET;
    }
}

static bool in_prefix(const uint8_t *a, const uint8_t *net, int bits)
{
    int whole = bits / 8, rest = bits % 8;
    if (memcmp(a, net, (size_t)whole) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (a[whole] & mask) == (net[whole] & mask);
}

static void format_addr(const struct addr *a, char *out, size_t outlen)
{
    if (!inet_ntop(a->family, a->b, out, (socklen_t)outlen))
        snprintf(out, outlen, "?");
}

struct range {
    uint8_t net[16];
    int bits;
    const char *name;
};

static const struct range v4_denied[] = {
    {{0, 0, 0, 0}, 8, "\"this network\" (0.0.0.0/8)"},
    {{10, 0, 0, 0}, 8, "private (10.0.0.0/8)"},
    {{100, 64, 0, 0}, 10, "carrier-grade NAT (100.64.0.0/10)"},
    {{127, 0, 0, 0}, 8, "loopback (127.0.0.0/8)"},
    {{169, 254, 0, 0}, 16, "link-local, cloud metadata (169.254.0.0/16)"},
    {{172, 16, 0, 0}, 12, "private (172.16.0.0/12)"},
    {{192, 0, 0, 0}, 24, "IETF protocol assignments (192.0.0.0/24)"},
    {{192, 0, 2, 0}, 24, "documentation (192.0.2.0/24)"},
    {{192, 88, 99, 0}, 24, "6to4 relay anycast (192.88.99.0/24)"},
    {{192, 168, 0, 0}, 16, "private (192.168.0.0/16)"},
    {{198, 18, 0, 0}, 15, "benchmarking (198.18.0.0/15)"},
    {{198, 51, 100, 0}, 24, "documentation (198.51.100.0/24)"},
    {{203, 0, 113, 0}, 24, "documentation (203.0.113.0/24)"},
    {{224, 0, 0, 0}, 4, "multicast (224.0.0.0/4)"},
    {{255, 255, 255, 255}, 32, "broadcast (255.255.255.255)"},
    {{240, 0, 0, 0}, 4, "reserved (240.0.0.0/4)"},
};

static const struct range v6_denied[] = {
    {{0}, 128, "unspecified (::)"},
    {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 128, "loopback (::1)"},
    {{0}, 64, "reserved, IPv4-compatible or translated (::/64)"},
    {{0, 0x64, 0xff, 0x9b, 0, 1}, 48, "local-use NAT64 (64:ff9b:1::/48)"},
    {{0x01, 0, 0, 0, 0, 0, 0, 0}, 64, "discard-only (100::/64)"},
    {{0x20, 0x01, 0x0d, 0xb8}, 32, "documentation (2001:db8::/32)"},
    {{0x20, 0x01, 0, 0}, 32, "Teredo (2001::/32)"},
    {{0x3f, 0xff}, 20, "documentation (3fff::/20)"},
    {{0x5f, 0x00}, 16, "SRv6 SIDs (5f00::/16)"},
    {{0xfc}, 7, "unique local (fc00::/7)"},
    {{0xfe, 0x80}, 10, "link-local (fe80::/10)"},
    {{0xfe, 0xc0}, 10, "site-local (fec0::/10)"},
    {{0xff}, 8, "multicast (ff00::/8)"},
};

static const char *v4_reason(const uint8_t *b)
{
    for (size_t i = 0; i < sizeof v4_denied / sizeof v4_denied[0]; i++)
        if (in_prefix(b, v4_denied[i].net, v4_denied[i].bits))
            return v4_denied[i].name;
    return NULL;
}

/* NULL if the (canonical) address is public, else what it is, in 'buf' or static. */
static const char *deny_reason(const struct addr *a, char *buf, size_t buflen)
{
    if (a->family == AF_INET)
        return v4_reason(a->b);
    static const uint8_t nat64[12] = {0, 0x64, 0xff, 0x9b};
    static const uint8_t six_to_four[2] = {0x20, 0x02};
    const uint8_t *v4 = NULL;
    const char *via = NULL;
    if (in_prefix(a->b, nat64, 96)) {
        v4 = a->b + 12;
        via = "NAT64 (64:ff9b::/96)";
    } else if (in_prefix(a->b, six_to_four, 16)) {
        v4 = a->b + 2;
        via = "6to4 (2002::/16)";
    }
    if (v4) {
        const char *r = v4_reason(v4);
        if (!r)
            return NULL;
        char s[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, v4, s, sizeof s);
        snprintf(buf, buflen, "%s of %s, %s", via, s, r);
        return buf;
    }
    for (size_t i = 0; i < sizeof v6_denied / sizeof v6_denied[0]; i++)
        if (in_prefix(a->b, v6_denied[i].net, v6_denied[i].bits))
            return v6_denied[i].name;
    return NULL;
}

/* Parse one allow entry: *is_host set for a host name, else *c filled. */
static int parse_entry(const char *e, struct cidr *c, bool *is_host)
{
    *is_host = false;
    if (!e || !*e)
        return IMGQ_ECONFIG;
    const char *slash = strchr(e, '/');
    if (slash) {
        char ip[INET6_ADDRSTRLEN + 2];
        size_t n = (size_t)(slash - e);
        if (n == 0 || n >= sizeof ip)
            return IMGQ_ECONFIG;
        memcpy(ip, e, n);
        ip[n] = '\0';
        if (!parse_ip(ip, &c->a))
            return IMGQ_ECONFIG;
        const char *d = slash + 1;
        int bits = 0;
        if (!*d || strlen(d) > 3)
            return IMGQ_ECONFIG;
        for (; *d; d++) {
            if (*d < '0' || *d > '9')
                return IMGQ_ECONFIG;
            bits = bits * 10 + (*d - '0');
        }
        if (bits > (c->a.family == AF_INET ? 32 : 128))
            return IMGQ_ECONFIG;
        c->prefix = bits;
        /* ::ffff:10.0.0.0/104 is 10.0.0.0/8. */
        if (c->a.family == AF_INET6 && bits >= 96 && memcmp(c->a.b, mapped_prefix, 12) == 0) {
            canonical(&c->a);
            c->prefix = bits - 96;
        }
        return 0;
    }
    if (parse_ip(e, &c->a)) {
        canonical(&c->a);
        c->prefix = c->a.family == AF_INET ? 32 : 128;
        return 0;
    }
    /* A host name: letters, digits, '-', '_' and '.'. */
    size_t n = strlen(e);
    if (n > HOST_MAX + 1)
        return IMGQ_ECONFIG;
    for (const char *p = e; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_' || *p == '.'))
            return IMGQ_ECONFIG;
    *is_host = true;
    return 0;
}

int imgq_ssrf_policy_check(const struct imgq_ssrf_policy *p, char *why, size_t whylen)
{
    if (why && whylen)
        why[0] = '\0';
    if (!p)
        return 0;
    if (p->nallow && !p->allow)
        return imgq_fail(IMGQ_ECONFIG, why, whylen, "allowlist of %zu entries is NULL", p->nallow);
    for (size_t i = 0; i < p->nallow; i++) {
        struct cidr c;
        bool is_host;
        if (parse_entry(p->allow[i], &c, &is_host) != 0)
            return imgq_fail(
                IMGQ_ECONFIG, why, whylen,
                "allowlist entry %zu '%s' is not a host name, IP address or CIDR block", i + 1,
                p->allow[i] ? p->allow[i] : "(null)");
    }
    return 0;
}

/* Host names equal, ASCII case-insensitively, ignoring one trailing dot on either. */
static bool same_host(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    if (na && a[na - 1] == '.')
        na--;
    if (nb && b[nb - 1] == '.')
        nb--;
    return na == nb && na > 0 && strncasecmp(a, b, na) == 0;
}

static bool host_allowed(const char *host, const struct imgq_ssrf_policy *p)
{
    for (size_t i = 0; p && i < p->nallow; i++) {
        struct cidr c;
        bool is_host;
        if (parse_entry(p->allow[i], &c, &is_host) == 0 && is_host && same_host(host, p->allow[i]))
            return true;
    }
    return false;
}

static bool addr_allowed(const struct addr *a, const struct imgq_ssrf_policy *p)
{
    for (size_t i = 0; p && i < p->nallow; i++) {
        struct cidr c;
        bool is_host;
        if (parse_entry(p->allow[i], &c, &is_host) == 0 && !is_host && c.a.family == a->family &&
            in_prefix(a->b, c.a.b, c.prefix))
            return true;
    }
    return false;
}

/*
 * 0 if 'a' (not yet canonical) may be reached, else IMGQ_EINVAL with the reason: "ADDR is
 * WHAT", or "'HOST' resolves to ADDR, which is WHAT" when 'host' is given and is not ADDR.
 */
static int judge(struct addr a, const char *host, const struct imgq_ssrf_policy *p, char *why,
                 size_t whylen)
{
    char text[INET6_ADDRSTRLEN];
    format_addr(&a, text, sizeof text);
    canonical(&a);
    if (addr_allowed(&a, p))
        return 0;
    char buf[160];
    const char *r = deny_reason(&a, buf, sizeof buf);
    if (!r)
        return 0;
    if (host && strcmp(host, text) != 0)
        return imgq_fail(IMGQ_EINVAL, why, whylen,
                         "'%s' resolves to %s, which is %s: not allowed (SSRF guard)", host, text,
                         r);
    return imgq_fail(IMGQ_EINVAL, why, whylen, "%s is %s: not allowed (SSRF guard)", text, r);
}

int imgq_ssrf_check_address(const char *ip, const struct imgq_ssrf_policy *p, char *why,
                            size_t whylen)
{
    int rc = imgq_ssrf_policy_check(p, why, whylen);
    if (rc != 0)
        return rc;
    struct addr a;
    if (!ip || !parse_ip(ip, &a))
        return imgq_fail(IMGQ_EINVAL, why, whylen, "'%s' is not an IP address", ip ? ip : "(null)");
    return judge(a, NULL, p, why, whylen);
}

bool imgq_ssrf_peer_allowed(const char *ip, void *policy)
{
    return imgq_ssrf_check_address(ip, policy, NULL, 0) == 0;
}

/* The URL's parts as libcurl sees them; every string from curl_url_get, freed by caller. */
struct url_parts {
    char *scheme, *host, *port, *zoneid;
};

static void parts_free(struct url_parts *u)
{
    curl_free(u->scheme);
    curl_free(u->host);
    curl_free(u->port);
    curl_free(u->zoneid);
}

static int parse_url(const char *url, struct url_parts *out, char *why, size_t whylen)
{
    CURLU *h = curl_url();
    if (!h)
        return imgq_fail(IMGQ_EINVAL, why, whylen, "cannot parse URL");
    int rc = 0;
    CURLUcode uc = curl_url_set(h, CURLUPART_URL, url, 0);
    if (uc != CURLUE_OK) {
        rc = imgq_fail(IMGQ_EINVAL, why, whylen, "malformed URL: %s", curl_url_strerror(uc));
        goto out;
    }
    if (curl_url_get(h, CURLUPART_SCHEME, &out->scheme, 0) != CURLUE_OK ||
        (strcasecmp(out->scheme, "http") != 0 && strcasecmp(out->scheme, "https") != 0)) {
        rc = imgq_fail(IMGQ_EINVAL, why, whylen, "URL scheme '%s' not allowed: http or https only",
                       out->scheme ? out->scheme : "");
        goto out;
    }
    char *user = NULL, *password = NULL;
    CURLUcode u1 = curl_url_get(h, CURLUPART_USER, &user, 0);
    CURLUcode u2 = curl_url_get(h, CURLUPART_PASSWORD, &password, 0);
    curl_free(user);
    curl_free(password);
    if (u1 == CURLUE_OK || u2 == CURLUE_OK) {
        rc = imgq_fail(IMGQ_EINVAL, why, whylen, "URL must not carry credentials (user@host)");
        goto out;
    }
    if (curl_url_get(h, CURLUPART_HOST, &out->host, 0) != CURLUE_OK || !out->host[0]) {
        rc = imgq_fail(IMGQ_EINVAL, why, whylen, "URL has no host");
        goto out;
    }
    if (strlen(out->host) > HOST_MAX + 2) {
        rc = imgq_fail(IMGQ_EINVAL, why, whylen, "URL host is longer than %d characters", HOST_MAX);
        goto out;
    }
    if (curl_url_get(h, CURLUPART_ZONEID, &out->zoneid, 0) == CURLUE_OK) {
        rc = imgq_fail(IMGQ_EINVAL, why, whylen, "URL must not carry an IPv6 zone id");
        goto out;
    }
    if (curl_url_get(h, CURLUPART_PORT, &out->port, CURLU_DEFAULT_PORT) != CURLUE_OK) {
        rc = imgq_fail(IMGQ_EINVAL, why, whylen, "URL has no port");
        goto out;
    }
out:
    curl_url_cleanup(h);
    return rc;
}

int imgq_ssrf_check_url(const char *url, const struct imgq_ssrf_policy *p, char *pin, size_t pinlen,
                        char *why, size_t whylen)
{
    if (pin && pinlen)
        pin[0] = '\0';
    int rc = imgq_ssrf_policy_check(p, why, whylen);
    if (rc != 0)
        return rc;
    if (!url)
        return imgq_fail(IMGQ_EINVAL, why, whylen, "no URL");
    struct url_parts u = {0};
    if ((rc = parse_url(url, &u, why, whylen)) != 0) {
        parts_free(&u);
        return rc;
    }

    /* getaddrinfo wants an IPv6 literal without its brackets. */
    char name[HOST_MAX + 3];
    size_t hn = strlen(u.host);
    if (hn >= 2 && u.host[0] == '[' && u.host[hn - 1] == ']') {
        memcpy(name, u.host + 1, hn - 2);
        name[hn - 2] = '\0';
    } else {
        memcpy(name, u.host, hn + 1);
    }

    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    int gai = getaddrinfo(name, NULL, &hints, &res);
    if (gai != 0 || !res) {
        rc = imgq_fail(gai == EAI_AGAIN ? IMGQ_EAGAIN : IMGQ_ENOTFOUND, why, whylen,
                       "cannot resolve '%s': %s", name, gai ? gai_strerror(gai) : "no address");
        goto out;
    }

    bool by_name = host_allowed(name, p);
    struct addr first = {0};
    bool have_first = false;
    for (const struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        struct addr a;
        if (ai->ai_family == AF_INET) {
            a.family = AF_INET;
            memset(a.b, 0, sizeof a.b);
            memcpy(a.b, &((const struct sockaddr_in *)ai->ai_addr)->sin_addr, 4);
        } else if (ai->ai_family == AF_INET6) {
            a.family = AF_INET6;
            memcpy(a.b, &((const struct sockaddr_in6 *)ai->ai_addr)->sin6_addr, 16);
        } else {
            continue;
        }
        if (!by_name && (rc = judge(a, name, p, why, whylen)) != 0)
            goto out;
        if (!have_first) {
            first = a;
            have_first = true;
        }
    }
    if (!have_first) {
        rc = imgq_fail(IMGQ_ENOTFOUND, why, whylen, "'%s' has no IPv4 or IPv6 address", name);
        goto out;
    }
    if (pin) {
        char text[INET6_ADDRSTRLEN];
        format_addr(&first, text, sizeof text);
        int n = first.family == AF_INET6
                    ? snprintf(pin, pinlen, "%s:%s:[%s]:%s", u.host, u.port, text, u.port)
                    : snprintf(pin, pinlen, "%s:%s:%s:%s", u.host, u.port, text, u.port);
        if (n < 0 || (size_t)n >= pinlen) {
            if (pinlen)
                pin[0] = '\0';
            rc = imgq_fail(IMGQ_ERANGE, why, whylen, "pin does not fit in %zu bytes", pinlen);
            goto out;
        }
    }
    rc = 0;
    if (why && whylen)
        why[0] = '\0';
out:
    if (res)
        freeaddrinfo(res);
    parts_free(&u);
    return rc;
}
