/* error.c - names for the IMGQ_E* codes, and reasons that go with them. */
#include "imgq/error.h"

#include <stdarg.h>
#include <stdio.h>

int imgq_fail(int rc, char *why, size_t whylen, const char *fmt, ...)
{
    if (why && whylen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, whylen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

const char *imgq_strerror(int err)
{
    switch (err) {
    case IMGQ_OK:
        return "success";
    case IMGQ_EINVAL:
        return "invalid argument";
    case IMGQ_EPARSE:
        return "malformed data";
    case IMGQ_ENOTFOUND:
        return "not found";
    case IMGQ_EEXIST:
        return "already exists";
    case IMGQ_EAGAIN:
        return "temporarily unavailable, retry later";
    case IMGQ_EIO:
        return "input/output error";
    case IMGQ_EREDIS:
        return "redis error";
    case IMGQ_EHTTP:
        return "http error";
    case IMGQ_ECODEC:
        return "image codec error";
    case IMGQ_ESTALE:
        return "lease lost";
    case IMGQ_ERANGE:
        return "value out of range";
    case IMGQ_ECONFIG:
        return "configuration error";
    case IMGQ_ECANCELED:
        return "cancelled";
    }
    return "unknown error";
}
