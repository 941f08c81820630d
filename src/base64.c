/* base64.c - base64 through OpenSSL's EVP block functions. */
#include "imgq/base64.h"

#include <openssl/evp.h>
#include <stdlib.h>

#include "imgq/alloc.h"

/* EVP_DecodeBlock skips leading/trailing whitespace and reads '=' anywhere as a zero digit:
 * check the strict RFC 4648 form first. */
static int strict_form(const char *t, size_t len)
{
    size_t pad = 0;
    if (len >= 1 && t[len - 1] == '=')
        pad++;
    if (len >= 2 && t[len - 2] == '=')
        pad++;
    for (size_t i = 0; i < len - pad; i++) {
        char c = t[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '/'))
            return 0;
    }
    return 1;
}

int imgq_base64_decode(const char *text, size_t len, uint8_t **out, size_t *outlen)
{
    if (len % 4 != 0 || len > (size_t)1 << 30 || !strict_form(text, len))
        return IMGQ_EPARSE;
    uint8_t *buf = imgq_xmalloc(len / 4 * 3 + 1);
    int n = len ? EVP_DecodeBlock(buf, (const unsigned char *)text, (int)len) : 0;
    if (n < 0) {
        free(buf);
        return IMGQ_EPARSE;
    }
    /* EVP_DecodeBlock counts the padding as zero bytes. */
    if (len >= 1 && text[len - 1] == '=')
        n--;
    if (len >= 2 && text[len - 2] == '=')
        n--;
    buf[n] = 0;
    *out = buf;
    *outlen = (size_t)n;
    return 0;
}

char *imgq_base64_encode(const void *data, size_t len, size_t *outlen)
{
    char *buf = imgq_xmalloc((len + 2) / 3 * 4 + 1);
    int n = EVP_EncodeBlock((unsigned char *)buf, data, (int)len);
    if (outlen)
        *outlen = (size_t)n;
    return buf;
}
