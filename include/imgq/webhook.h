/*
 * webhook.h - Standard Webhooks (v1, symmetric) signing and verification.
 *
 * A delivery carries three headers:
 *   webhook-id:        the message id, the same on every retry (receivers dedupe on it);
 *   webhook-timestamp: integer Unix seconds of this attempt (new on every retry);
 *   webhook-signature: "v1,<base64 HMAC-SHA256(key, id "." timestamp "." body)>", one per
 *                      secret, separated by single spaces (several during a secret rotation).
 * Secrets are written "whsec_" + standard base64 (with padding) of the raw key.  The body is
 * signed exactly as sent: sign the bytes you send, never a re-serialisation.
 *
 * HMAC-SHA256, base64 and randomness are OpenSSL's libcrypto.  Every function here is pure
 * computation: thread-safe, never blocks.  Returned strings are new buffers the caller frees.
 */
#ifndef IMGQ_WEBHOOK_H
#define IMGQ_WEBHOOK_H

#include <stddef.h>
#include <stdint.h>

#include "imgq/error.h"

/* Timestamp tolerance of imgq_webhook_verify() when given tolerance_s <= 0: 5 minutes. */
#define IMGQ_WEBHOOK_TOLERANCE_DEFAULT 300L

/* The longest message id imgq_webhook_sign() and imgq_webhook_verify() accept. */
#define IMGQ_WEBHOOK_ID_MAX 256

/*
 * Decode a secret "whsec_<base64>" into its raw key ('*key' new, the caller frees it; '*len'
 * its length).  On error nothing is stored.  Errors:
 *   IMGQ_EINVAL  NULL, or the text does not start with "whsec_";
 *   IMGQ_EPARSE  what follows "whsec_" is not standard padded base64 (no whitespace);
 *   IMGQ_ERANGE  the key is empty or longer than 1024 bytes.
 * imgq_webhook_secret_strerror() words these for people.  (The spec generates keys of 24 to
 * 64 random bytes; shorter non-empty keys are accepted so that receivers can test any key.)
 */
IMGQ_MUST_CHECK int imgq_webhook_secret_parse(const char *whsec, uint8_t **key, size_t *len);

/* Static text naming why imgq_webhook_secret_parse() returned 'rc'; never NULL. */
const char *imgq_webhook_secret_strerror(int rc);

/*
 * The value of the webhook-signature header: "v1,<sig>" for each of the 'nsecrets' secrets,
 * in order, separated by one space.  NULL if nsecrets is 0, any secret does not parse, or
 * 'msg_id' is not a valid id (empty, longer than IMGQ_WEBHOOK_ID_MAX, or holding '.', a
 * space, or a control character: the spec forbids '.' since it separates the signed parts,
 * and the id travels in a header).  'body' may be NULL when len is 0.
 */
char *imgq_webhook_sign(const char *const *secrets, size_t nsecrets, const char *msg_id,
                        long long timestamp_s, const void *body, size_t len);

/*
 * Verify a received delivery: 'msg_id', 'timestamp' and 'signature_header' are the values of
 * the three headers as received (NULL counts as a missing header), 'body' the raw body bytes.
 * Returns 0 when the timestamp is within 'tolerance_s' seconds of 'now_s' in either direction
 * (tolerance_s <= 0: IMGQ_WEBHOOK_TOLERANCE_DEFAULT) and some "v1," entry of the header equals
 * the signature under some secret (compared in constant time, CRYPTO_memcmp).  Entries of
 * other versions (e.g. "v1a," for ed25519) are skipped.  Otherwise an error, with a reason
 * written to 'why' (may be NULL):
 *   IMGQ_ECONFIG  no secrets, or a secret does not parse ("secret 2: ...");
 *   IMGQ_EPARSE   a header is missing or malformed ("malformed header: ...": timestamp not
 *                 a plain decimal integer, id invalid as for imgq_webhook_sign(), signature
 *                 header empty, not printable ASCII, or with no "v1," entry);
 *   IMGQ_ERANGE   "timestamp too old" / "timestamp too new";
 *   IMGQ_EINVAL   "no matching signature".
 * The checks run in that order, so a message outside the tolerance is refused whatever its
 * signature.  Dedupe on msg_id is the receiver's business.
 */
IMGQ_MUST_CHECK int imgq_webhook_verify(const char *const *secrets, size_t nsecrets,
                                        const char *msg_id, const char *timestamp,
                                        const char *signature_header, const void *body, size_t len,
                                        long long now_s, long tolerance_s, char *why,
                                        size_t whylen);

/*
 * A new message id: "msg_" + 24 base64url characters of 18 random bytes (RAND_bytes), so
 * valid for imgq_webhook_sign().  NULL only if the random generator fails.
 */
char *imgq_webhook_id(void);

#endif
