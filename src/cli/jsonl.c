/* jsonl.c - reading a JSONL catalog of jobs, the same way for `imgq submit` and `imgq quote`,
 * and the number format of their tables. */
#include <inttypes.h>
#include <stdio.h>

#include "cli.h"

int imgq__cli_parse_line(const imgq_catalog *cat, const char *line, size_t len,
                         const struct imgq_job_defaults *d, time_t today, const char *file,
                         size_t lineno, struct imgq_job_spec *spec, json_t *errors)
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
        if (errors)
            json_array_append_new(errors, json_pack("{s:I, s:s, s:s}", "line", (json_int_t)lineno,
                                                    "field", why.field, "reason", why.reason));
        return -1;
    }
    if (warn[0])
        fprintf(stderr, "%s:%zu: warning: %s\n", file, lineno, warn);
    return 0;
}

void imgq__cli_grouped(int64_t v, char *buf, size_t len)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%" PRId64, v), o = 0;
    for (int i = 0; i < n && (size_t)o + 2 < len; i++) {
        if (i > 0 && tmp[i - 1] != '-' && (n - i) % 3 == 0)
            buf[o++] = ',';
        buf[o++] = tmp[i];
    }
    buf[o] = '\0';
}
