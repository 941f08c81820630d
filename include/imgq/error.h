/*
 * error.h - the one table of imgq error codes.
 *
 * Every imgq function that can fail returns 0 on success or a negative IMGQ_E* code from this
 * table; imgq_strerror() names it.  A function that fails synchronously never calls its
 * callback.  IMGQ_EAGAIN is the one code that means "nothing is wrong with the request; try
 * again later" (a full queue, a rate limit, a dropped connection).
 *
 * Out of memory is not an error code: imgq aborts with a message (see alloc.h), because a
 * worker that cannot allocate cannot make progress safely and its leases return its jobs.
 */
#ifndef IMGQ_ERROR_H
#define IMGQ_ERROR_H

#define IMGQ_MUST_CHECK __attribute__((warn_unused_result))

enum imgq_error {
    IMGQ_OK = 0,
    IMGQ_EINVAL = -1,    /* invalid argument or input (the caller's mistake) */
    IMGQ_EPARSE = -2,    /* malformed data (JSON, HTTP, XML, config) */
    IMGQ_ENOTFOUND = -3, /* no such model, job, batch, key, file */
    IMGQ_EEXIST = -4,    /* already exists (idempotent duplicate) */
    IMGQ_EAGAIN = -5,    /* temporary: retry later */
    IMGQ_EIO = -6,       /* system call or file I/O failed (see errno) */
    IMGQ_EREDIS = -7,    /* Redis refused a command or the connection failed */
    IMGQ_EHTTP = -8,     /* HTTP transfer failed or returned an unexpected status */
    IMGQ_ECODEC = -9,    /* image decode or encode failed */
    IMGQ_ESTALE = -10,   /* the lease on a job was lost: another worker owns it now */
    IMGQ_ERANGE = -11,   /* a number out of its allowed range (overflow, limits) */
    IMGQ_ECONFIG = -12,  /* configuration missing or inconsistent */
    IMGQ_ECANCELED = -13 /* the operation was cancelled (shutdown, close) */
};

/* Static string naming 'err'; never NULL, even for codes outside the table. */
const char *imgq_strerror(int err);

#include <stddef.h>
/* Write a reason into why (NULL or whylen 0: none) and return rc: "return imgq_fail(...)". */
__attribute__((format(printf, 4, 5))) int imgq_fail(int rc, char *why, size_t whylen,
                                                    const char *fmt, ...);

#endif
