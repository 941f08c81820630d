/*
 * ssrf.h - the guard for every user-supplied URL the worker fetches or posts to (webhooks, the
 * scorer, reference images): only public addresses, unless the operator allowed more.
 *
 * imgq_ssrf_check_url() parses the URL with libcurl's own parser (curl_url), so it sees the
 * host libcurl will see; allows only http and https; refuses credentials in the URL and IPv6
 * zone ids; resolves the host ONCE (getaddrinfo, so the numeric IPv4 forms libc accepts --
 * 2130706433, 0177.0.0.1, 0x7f000001, 127.1 -- are judged by their value); and refuses the
 * URL if ANY address is not public:
 *   IPv4: 0.0.0.0/8, 10/8, 100.64/10 (CGNAT), 127/8, 169.254/16 (link-local, cloud
 *         metadata), 172.16/12, 192.0.0/24, 192.0.2/24, 192.88.99/24, 192.168/16, 198.18/15,
 *         198.51.100/24, 203.0.113/24, 224/4 (multicast), 240/4 (reserved, broadcast);
 *   IPv6: :: and ::1, the rest of ::/64 except IPv4-mapped, ::ffff:a.b.c.d (judged as
 *         a.b.c.d), 64:ff9b::/96 NAT64 (judged by the embedded IPv4), 64:ff9b:1::/48,
 *         100::/64, 2001::/32 (Teredo), 2001:db8::/32, 2002::/16 6to4 (judged by the
 *         embedded IPv4), 3fff::/20, 5f00::/16, fc00::/7 (ULA), fe80::/10, fec0::/10,
 *         ff00::/8 (multicast).
 * A host that does not resolve is refused too (fail closed).
 *
 * The caller must then connect to exactly the address that was checked, and nothing else:
 *   - add the pin written to 'pin' with imgq_http_request_add_connect_to(), so libcurl does
 *     not resolve the name again (DNS rebinding);
 *   - not follow redirects: imgq_http never does (CURLOPT_FOLLOWLOCATION is always 0 in
 *     http.c; a 3xx is an ordinary status).  A caller that wants to follow one must run the
 *     Location URL through imgq_ssrf_check_url() again and pin it, with a hop limit;
 *   - set IMGQ_HTTP_NO_PROXY, so a proxy from the environment does not connect instead;
 *   - optionally also install imgq_ssrf_peer_allowed() with imgq_http_request_set_peer_filter()
 *     as a second check of the address libcurl actually connected to.
 *
 * Everything here is thread-safe.  imgq_ssrf_check_url() blocks in getaddrinfo(): on a libuv
 * loop, call it from the thread pool (uv_queue_work), not from the loop thread.
 */
#ifndef IMGQ_SSRF_H
#define IMGQ_SSRF_H

#include <stdbool.h>
#include <stddef.h>

#include "imgq/error.h"

/*
 * What local development may reach besides the public internet.  Each entry is a host name
 * ("localhost", matched case-insensitively against the URL's host, one trailing dot
 * ignored: every address it resolves to is then accepted), an IP address ("127.0.0.1",
 * "::1", "[::1]") or a CIDR block ("10.0.0.0/8", "fd00::/8").  Addresses are compared after
 * ::ffff:a.b.c.d is turned into a.b.c.d.  Borrowed; NULL policy or nallow 0: nothing extra.
 */
struct imgq_ssrf_policy {
    const char *const *allow;
    size_t nallow;
};

/* Longest pin imgq_ssrf_check_url() writes, with its NUL. */
#define IMGQ_SSRF_PIN_MAX (256 + 1 + 5 + 1 + 47 + 1 + 5 + 1)

/*
 * Check every entry of 'p'.  IMGQ_ECONFIG, with the entry named in 'why', if one is neither a
 * host name, an IP address nor a CIDR block with a prefix length within range.  Run it when
 * the configuration is loaded; imgq_ssrf_check_url() fails the same way on a bad entry.
 */
IMGQ_MUST_CHECK int imgq_ssrf_policy_check(const struct imgq_ssrf_policy *p, char *why,
                                           size_t whylen);

/*
 * Check 'url' as described at the top of this file.  On success returns 0 and, when 'pin' is
 * not NULL, writes "HOST:PORT:ADDRESS:PORT" into it: libcurl's CONNECT_TO syntax that
 * imgq_http_request_add_connect_to() takes (HOST as libcurl writes the URL's host, an IPv6
 * ADDRESS in brackets, PORT the URL's port or the scheme's default), naming the first
 * resolved address.  Errors, with the reason in 'why' (may be NULL):
 *   IMGQ_EINVAL     the URL is malformed, not http/https, carries credentials or a zone id,
 *                   or some address is not allowed ("127.0.0.1 is loopback (127.0.0.0/8)");
 *   IMGQ_ENOTFOUND  the host does not resolve;
 *   IMGQ_EAGAIN     temporary resolver failure (retry later);
 *   IMGQ_ECONFIG    an allowlist entry is malformed;
 *   IMGQ_ERANGE     the pin does not fit in 'pinlen' (use IMGQ_SSRF_PIN_MAX).
 */
IMGQ_MUST_CHECK int imgq_ssrf_check_url(const char *url, const struct imgq_ssrf_policy *p,
                                        char *pin, size_t pinlen, char *why, size_t whylen);

/*
 * Judge one numeric address (inet_pton syntax, IPv4 or IPv6, brackets allowed) as above:
 * 0 if public or on the allowlist (IP and CIDR entries only; host-name entries do not apply),
 * IMGQ_EINVAL with the reason otherwise (also for text that is not an address),
 * IMGQ_ECONFIG for a bad allowlist entry.  No resolution: never blocks.
 */
IMGQ_MUST_CHECK int imgq_ssrf_check_address(const char *ip, const struct imgq_ssrf_policy *p,
                                            char *why, size_t whylen);

/*
 * A peer filter for imgq_http_request_set_peer_filter(), with the policy (a
 * const struct imgq_ssrf_policy *, which must outlive the request) as 'arg':
 * imgq_ssrf_check_address(ip, arg) == 0.  Host-name allow entries do not apply here, so
 * with a host allowed by name ("localhost") allow its addresses too, or install no filter.
 */
bool imgq_ssrf_peer_allowed(const char *ip, void *policy);

#endif
