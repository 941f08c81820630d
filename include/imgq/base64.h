/*
 * base64.h - standard base64 (RFC 4648) on OpenSSL's EVP encoder, for provider payloads.
 * Results are new buffers (NUL-terminated) that the caller frees.  Never blocks.
 */
#ifndef IMGQ_BASE64_H
#define IMGQ_BASE64_H

#include <stddef.h>
#include <stdint.h>

#include "imgq/error.h"

/* Decode; whitespace is not allowed.  IMGQ_EPARSE if the text is not base64. */
int imgq_base64_decode(const char *text, size_t len, uint8_t **out, size_t *outlen) IMGQ_MUST_CHECK;
/* Encode; returns the text and its length in *outlen (may be NULL). */
char *imgq_base64_encode(const void *data, size_t len, size_t *outlen);

#endif
