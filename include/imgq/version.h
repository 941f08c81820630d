/* version.h - the release (CMake's project version) and the libraries this build uses. */
#ifndef IMGQ_VERSION_H
#define IMGQ_VERSION_H

#include <stdio.h>

/* The project version, e.g. "0.1.0". */
const char *imgq_version(void);
/*
 * "PROGRAM VERSION" and one line per dependency: the version its headers declare (compiled
 * against) and, where the library reports it, the one loaded at run time.  For --version.
 */
void imgq_version_print(FILE *f, const char *program);

#endif
