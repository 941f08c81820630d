/*
 * args.c - the one flag parser of every imgq subcommand: getopt_long over a table of the
 * command's flags, --help on stdout, and a usage error (exit 2) naming any unknown flag,
 * missing value or extra argument.
 */
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* The index of 'name' in the command's flags ("json", "batch=", "secret=*"), or -1. */
static int flag_index(const struct imgq_cli_cmd *cmd, const char *name)
{
    size_t len = strlen(name);
    for (int i = 0; cmd->flags && cmd->flags[i]; i++)
        if (strncmp(cmd->flags[i], name, len) == 0 &&
            (cmd->flags[i][len] == '\0' || cmd->flags[i][len] == '='))
            return i;
    return -1;
}

static int usage_error(const struct imgq_cli_cmd *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int usage_error(const struct imgq_cli_cmd *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", cmd->name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n%s", cmd->usage);
    return IMGQ_EXIT_USAGE;
}

int imgq__cli_parse(const struct imgq_cli_cmd *cmd, int argc, char **argv, struct imgq_cli_args *a)
{
    memset(a, 0, sizeof *a);
    a->cmd = cmd;
    struct option opts[IMGQ_CLI_MAX_FLAGS + 2];
    int n = 0;
    char names[IMGQ_CLI_MAX_FLAGS][48];
    for (; cmd->flags && cmd->flags[n]; n++) {
        if (n >= IMGQ_CLI_MAX_FLAGS)
            abort(); /* a programming error: raise IMGQ_CLI_MAX_FLAGS */
        const char *f = cmd->flags[n], *eq = strchr(f, '=');
        snprintf(names[n], sizeof names[n], "%.*s", eq ? (int)(eq - f) : (int)strlen(f), f);
        opts[n] = (struct option){names[n], eq ? required_argument : no_argument, NULL, n};
    }
    opts[n] = (struct option){"help", no_argument, NULL, 'h'};
    opts[n + 1] = (struct option){NULL, 0, NULL, 0};
    int saved_opterr = opterr;
    opterr = 0;
    optind = 0; /* glibc: re-initialise, so every command parses from its argv[1] */
    int c, rc = -1;
    while (rc < 0 && (c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        if (c == 'h') {
            fputs(cmd->usage, stdout);
            rc = IMGQ_EXIT_OK;
        } else if (c == '?') {
            const char *bad = argv[optind - 1];
            rc = optopt && bad[0] == '-' && bad[1] != '-'
                     ? usage_error(cmd, "unknown option '-%c'", optopt)
                     : usage_error(cmd, "unknown option '%s'", bad);
        } else if (c == ':') {
            rc = usage_error(cmd, "%s needs a value", argv[optind - 1]);
        } else if (c >= 0 && c < n) {
            bool repeat = strstr(cmd->flags[c], "=*") != NULL;
            if (a->count[c] && !repeat)
                rc = usage_error(cmd, "--%s given twice", names[c]);
            else if (a->nseen >= IMGQ_CLI_MAX_SEEN)
                rc = usage_error(cmd, "too many options");
            else {
                a->count[c]++;
                a->value[c] = optarg;
                a->seen[a->nseen].flag = c;
                a->seen[a->nseen++].value = optarg;
            }
        }
    }
    opterr = saved_opterr;
    if (rc >= 0)
        return rc;
    a->args = argv + optind;
    a->nargs = argc - optind;
    if (a->nargs < cmd->min_args)
        return usage_error(cmd, "missing %s", cmd->operands ? cmd->operands : "arguments");
    if (cmd->max_args >= 0 && a->nargs > cmd->max_args)
        return usage_error(cmd, "unexpected argument '%s'", a->args[cmd->max_args]);
    return -1;
}

const char *imgq__cli_opt(const struct imgq_cli_args *a, const char *name)
{
    int i = flag_index(a->cmd, name);
    if (i < 0)
        abort(); /* a programming error: the flag is not in the command's table */
    return a->value[i];
}

bool imgq__cli_set(const struct imgq_cli_args *a, const char *name)
{
    int i = flag_index(a->cmd, name);
    if (i < 0)
        abort();
    return a->count[i] > 0;
}

size_t imgq__cli_all(const struct imgq_cli_args *a, const char *name, const char **out, size_t max)
{
    int f = flag_index(a->cmd, name);
    if (f < 0)
        abort();
    size_t k = 0;
    for (int i = 0; i < a->nseen; i++)
        if (a->seen[i].flag == f) {
            if (k < max)
                out[k] = a->seen[i].value;
            k++;
        }
    return k;
}

int imgq__cli_error(const struct imgq_cli_args *a, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", a->cmd->name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n%s", a->cmd->usage);
    return IMGQ_EXIT_USAGE;
}

int imgq__cli_dispatch(const char *name, const char *usage, const struct imgq_cli_sub *subs,
                       int argc, char **argv)
{
    const char *sub = argc > 1 ? argv[1] : NULL;
    if (sub && (!strcmp(sub, "--help") || !strcmp(sub, "-h") || !strcmp(sub, "help"))) {
        fputs(usage, stdout);
        return IMGQ_EXIT_OK;
    }
    if (!sub || sub[0] == '-') {
        fprintf(stderr, "%s: %s%s%s\n%s", name, sub ? "unknown option '" : "missing subcommand",
                sub ? sub : "", sub ? "'" : "", usage);
        return IMGQ_EXIT_USAGE;
    }
    for (const struct imgq_cli_sub *s = subs; s->name; s++)
        if (strcmp(s->name, sub) == 0)
            return s->fn(argc - 1, argv + 1);
    fprintf(stderr, "%s: unknown subcommand '%s'\n%s", name, sub, usage);
    return IMGQ_EXIT_USAGE;
}
