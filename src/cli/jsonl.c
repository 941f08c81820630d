/* jsonl.c - reading a JSONL catalog of jobs, the same way for `imgq submit` and `imgq quote`. */
#include <stdio.h>

#include "cli.h"

int imgq__cli_parse_line(const imgq_catalog *cat, const char *line, size_t len,
                         const struct imgq_job_defaults *d, time_t today, const char *file,
                         size_t lineno, struct imgq_job_spec *spec)
{
    size_t i = 0;
    while (i < len && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r' || line[i] == '\n'))
        i++;
    if (i == len)
        return 1; /* a blank line: nothing */
    struct imgq_job_problem why;
    char warn[256];
    if (imgq_job_parse(cat, line, len, d, today, spec, &why, warn, sizeof warn) != 0) {
        fprintf(stderr, "%s:%zu: %s: %s\n", file, lineno, why.field, why.reason);
        return -1;
    }
    if (warn[0])
        fprintf(stderr, "%s:%zu: warning: %s\n", file, lineno, warn);
    return 0;
}
