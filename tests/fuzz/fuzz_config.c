/*
 * fuzz_config.c - imgq_config_load() (config.h) on arbitrary config file contents: a config
 * file is written by hand and shared.  Checks the contract: it loads, or fails with
 * IMGQ_EPARSE / IMGQ_EINVAL and a message; a success has every string setting filled in.
 */
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz.h"
#include "imgq/config.h"
#include "imgq/error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = memfd_create("imgq-config", 0);
    if (fd < 0)
        abort();
    for (size_t done = 0; done < size;) {
        ssize_t n = write(fd, data + done, size - done);
        if (n <= 0)
            abort();
        done += (size_t)n;
    }
    char path[64], err[512] = "";
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    struct imgq_config c;
    int rc = imgq_config_load(&c, path, err, sizeof err);
    if (rc == 0) {
        FUZZ_CHECK(c.redis_url && c.prefix && c.queue && c.catalog && c.s3_key_prefix);
        FUZZ_CHECK(c.concurrency >= 1 && c.lease_ms >= 1 && c.grace_ms >= 1);
        imgq_config_clear(&c);
    } else {
        FUZZ_CHECK(rc == IMGQ_EPARSE || rc == IMGQ_EINVAL);
        FUZZ_CHECK(err[0] != '\0');
    }
    close(fd);
    return 0;
}
