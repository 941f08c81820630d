/*
 * fuzz.h - shared bits of imgq's fuzz targets (tests/fuzz/fuzz_*.c).
 *
 * Each target defines LLVMFuzzerTestOneInput().  With -DIMGQ_FUZZ=ON and clang it links with
 * libFuzzer; otherwise with replay.c, which runs it once on every file of a corpus directory
 * (the ctest tests fuzz.NAME).  A target frees everything it allocates per input and aborts
 * (via FUZZ_CHECK) when an invariant of the API is broken, so libFuzzer reports it as a crash.
 */
#ifndef IMGQ_FUZZ_H
#define IMGQ_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Like assert(), but also in release builds, and saying which invariant broke. */
#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* A NUL-terminated heap copy of the input (embedded NULs stay; C string APIs stop at them). */
static inline char *fuzz_cstr(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        abort();
    if (size)
        memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

/* Path of 'rel' in the source tree: $IMGQ_SOURCE_DIR, else derived from this file's path. */
static inline void fuzz_source_path(const char *rel, char *buf, size_t len)
{
    const char *root = getenv("IMGQ_SOURCE_DIR");
    if (root && *root) {
        snprintf(buf, len, "%s/%s", root, rel);
        return;
    }
    const char *self = __FILE__;
    const char *cut = strstr(self, "tests/fuzz/");
    snprintf(buf, len, "%.*s%s", cut ? (int)(cut - self) : 0, self, rel);
}

/* Whether a fixed-size char field holds a NUL-terminated string. */
#define FUZZ_TERMINATED(arr) (memchr((arr), '\0', sizeof(arr)) != NULL)

#endif
