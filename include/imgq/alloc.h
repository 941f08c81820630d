/*
 * alloc.h - allocation that never returns NULL.
 *
 * imgq's out-of-memory policy, decided once: allocation failure prints a message and aborts.
 * A worker that cannot allocate cannot keep its promises; aborting lets its job leases expire
 * so another worker takes the jobs over, which is safer than limping on.  Functions in imgq
 * therefore never return an error for out-of-memory.
 */
#ifndef IMGQ_ALLOC_H
#define IMGQ_ALLOC_H

#include <stddef.h>

void *imgq_xmalloc(size_t n);
void *imgq_xcalloc(size_t count, size_t size);
void *imgq_xrealloc(void *p, size_t n);
char *imgq_xstrdup(const char *s);
char *imgq_xstrndup(const char *s, size_t n);
/* printf into a new string; the caller frees it. */
char *imgq_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
