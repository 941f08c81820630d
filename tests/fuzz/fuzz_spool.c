/*
 * fuzz_spool.c - spool_parse() (workers/spool.h) on arbitrary file contents: a spool file is
 * read back from disk, where anything may have happened to it.  Checks the contract: on
 * success a non-empty key and type without newlines, a payload inside the input that ends it
 * exactly; on failure IMGQ_EPARSE and nothing allocated.
 */
#include "fuzz.h"
#include "spool.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct spool_entry e;
    char why[300];
    int rc = spool_parse(data, size, &e, why, sizeof why);
    if (rc == 0) {
        FUZZ_CHECK(e.key && e.key[0] && !strchr(e.key, '\n'));
        FUZZ_CHECK(strlen(e.key) <= SPOOL_KEY_MAX);
        FUZZ_CHECK(e.type && e.type[0] && !strchr(e.type, '\n'));
        FUZZ_CHECK(e.payload >= data && e.payload + e.payload_len == data + size);
        spool_entry_clear(&e);
    } else {
        FUZZ_CHECK(rc == IMGQ_EPARSE);
        FUZZ_CHECK(e.key == NULL && e.type == NULL);
        FUZZ_CHECK(why[0] != '\0');
    }
    return 0;
}
