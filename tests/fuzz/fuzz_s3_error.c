/*
 * fuzz_s3_error.c - imgq_s3_parse_error() on arbitrary response bodies (not NUL-terminated:
 * the input buffer is exactly the body).  Checks the contract of s3.h: on success a non-empty
 * Code and a Message, both printable (no control characters) and capped; on failure
 * IMGQ_EPARSE with both outputs NULL.
 */
#include "fuzz.h"
#include "imgq/s3.h"

/* Caps in s3.c (MAX_ERROR_CODE, MAX_ERROR_MESSAGE) plus the "..." of a cut text. */
#define CODE_MAX (128 + 3)
#define MESSAGE_MAX (512 + 3)

static void check_text(const char *s, size_t max)
{
    FUZZ_CHECK(s != NULL);
    size_t n = strlen(s);
    FUZZ_CHECK(n <= max);
    for (size_t i = 0; i < n; i++)
        FUZZ_CHECK((unsigned char)s[i] >= 0x20 && (unsigned char)s[i] != 0x7f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char unset[] = "unset"; /* must be overwritten in every case */
    char *code = unset, *message = unset;
    int rc = imgq_s3_parse_error((const char *)data, size, &code, &message);
    if (rc == 0) {
        check_text(code, CODE_MAX);
        FUZZ_CHECK(code[0] != '\0');
        check_text(message, MESSAGE_MAX);
        free(code);
        free(message);
    } else {
        FUZZ_CHECK(rc == IMGQ_EPARSE);
        FUZZ_CHECK(code == NULL && message == NULL);
    }
    return 0;
}
