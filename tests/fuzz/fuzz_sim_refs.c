/*
 * fuzz_sim_refs.c - imgq-sim's checks of the reference images a request carries (src/sim/
 * refs.c), on text from the input.  Byte 0 chooses: even, sim_ref_check_uri on the rest (a
 * Seedream image / DashScope content image); odd, sim_ref_check_base64 (Gemini's inlineData
 * data) with, when bit 1 is set, the MIME type of the first line.  Byte 1 scales the size
 * limit (byte * 4 KiB, 0 = 10 MB).
 *
 * Checks the contract: never crashes; 0 means at most the limit of decoded bytes, at least one;
 * -1 always says why, in a terminated sentence.
 */
#include <stdbool.h>

#include "fuzz.h"
#include "sim.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    unsigned mode = data[0];
    size_t max = data[1] ? (size_t)data[1] * 4096 : 10u * 1024 * 1024;
    const uint8_t *p = data + 2, *end = data + size;
    char *mime = NULL;
    if ((mode & 1) && (mode & 2)) {
        const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
        mime = fuzz_cstr(p, (size_t)((nl ? nl : end) - p));
        p = nl ? nl + 1 : end;
    }
    char *text = fuzz_cstr(p, (size_t)(end - p));
    char why[200];
    memset(why, 'x', sizeof why);
    size_t bytes = 0;
    int rc = (mode & 1)
                 ? sim_ref_check_base64(text, strlen(text), mime, max, &bytes, why, sizeof why)
                 : sim_ref_check_uri(text, max, &bytes, why, sizeof why);
    if (rc == 0)
        FUZZ_CHECK(bytes > 0 && bytes <= max);
    else
        FUZZ_CHECK(rc == -1 && FUZZ_TERMINATED(why) && why[0] != '\0');
    free(text);
    free(mime);
    return 0;
}
