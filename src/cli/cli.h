/*
 * cli.h - the subcommands of the imgq program.  Each takes the arguments after its own name
 * (argv[0] is the subcommand name) and returns the process exit status: 0 success, 1 failure
 * of the operation, 2 bad usage.  Errors go to stderr, results to stdout.
 */
#ifndef IMGQ_CLI_H
#define IMGQ_CLI_H

#include <stdbool.h>
#include <stddef.h>

#include "imgq/catalog.h"
#include "imgq/config.h"
#include "imgq/job.h"
#include "imgq/queue.h"

int imgq_cmd_submit(int argc, char **argv);
int imgq_cmd_batch(int argc, char **argv);
int imgq_cmd_job(int argc, char **argv);
int imgq_cmd_cost(int argc, char **argv);
int imgq_cmd_presign(int argc, char **argv);
int imgq_cmd_cancel(int argc, char **argv);
int imgq_cmd_select(int argc, char **argv);
int imgq_cmd_pause(int argc, char **argv);
int imgq_cmd_resume(int argc, char **argv);
int imgq_cmd_promote(int argc, char **argv);
int imgq_cmd_dlq(int argc, char **argv);
int imgq_cmd_stats(int argc, char **argv);
int imgq_cmd_events(int argc, char **argv);
int imgq_cmd_clock(int argc, char **argv);
int imgq_cmd_retention(int argc, char **argv);
int imgq_cmd_route(int argc, char **argv);
int imgq_cmd_budget(int argc, char **argv);
int imgq_cmd_quote(int argc, char **argv);
int imgq_cmd_report(int argc, char **argv);
int imgq_cmd_webhook(int argc, char **argv);
int imgq_cmd_webhooks(int argc, char **argv);
int imgq_cmd_results(int argc, char **argv);
/* imgq batch watch ID: progress until the batch finishes (cmd_stats.c); argv[0] "watch". */
int imgq__cmd_batch_watch(int argc, char **argv);

struct imgq_s3_config;
/*
 * S3 settings for the CLI (cmd_presign.c): the environment as imgq_s3_config_from_env reads
 * it, with the config file's s3.endpoint and s3.region where the environment names none;
 * 'bucket' (if not NULL) replaces IMGQ_S3_BUCKET.  'cfg' is initialised here: clear it with
 * imgq_s3_config_clear whatever this returns.  0 if usable for requests (credentials, region,
 * endpoint; a bucket only when 'bucket' is given), else IMGQ_ECONFIG with a new message in
 * '*why' (free()).
 */
int imgq__cli_s3_config(struct imgq_s3_config *cfg, const char *bucket, char **why);

/* The configuration after global flags (--config, --redis, --queue, --prefix, --catalog). */
struct imgq_config *imgq__cli_config(void);
/* Load the configured catalog, or print why not and return NULL.  The CLI owns it. */
const imgq_catalog *imgq__cli_catalog(void);
/* Open the configured queue, or print why not and return NULL.  The CLI owns it. */
imgq_queue *imgq__cli_queue(void);
/* The same without printing anything (for optional use of Redis). */
imgq_queue *imgq__cli_queue_quiet(void);

/*
 * One line of a JSONL catalog of jobs: 0 and *spec filled (clear it), 1 for a blank line, or -1
 * after printing "FILE:LINE: field: reason" to stderr (and appending {"line", "field",
 * "reason"} to 'errors' unless NULL).  Deprecation warnings are printed too.
 */
/* 1234567 -> "1,234,567" into buf (len bytes; truncated to fit). */
void imgq__cli_grouped(int64_t v, char *buf, size_t len);
int imgq__cli_parse_line(const imgq_catalog *cat, const char *line, size_t len,
                         const struct imgq_job_defaults *d, time_t today, const char *file,
                         size_t lineno, struct imgq_job_spec *spec, json_t *errors);
/*
 * The SSRF guard (ssrf.h) on a user-supplied URL at submission, so a bad one is refused before
 * any job runs (workers check it again, and pin the address, when they connect): 0 if
 * allowed, else an error after printing "WHAT URL: reason".  A host that does not resolve
 * from here is only warned about (workers may see other DNS).  The last allowed URL is
 * remembered, so a catalog of a million lines with one webhook resolves it once.
 */
int imgq__cli_check_url(const char *what, const char *url);

/*
 * A usage error: "NAME[ SUB]: <message>" and the command's usage text on stderr; returns
 * IMGQ_EXIT_USAGE.  SUB (a subcommand) may be NULL.
 */
__attribute__((format(printf, 4, 5))) int
imgq__cli_usage_error(const char *name, const char *sub, const char *usage, const char *fmt, ...);

/*
 * Exit statuses (README "Command line conventions").  A write to a closed stdout
 * (imgq ... | head) ends the process at once, quietly, with status 0 (main.c).
 */
#define IMGQ_EXIT_OK 0
#define IMGQ_EXIT_FAIL 1
#define IMGQ_EXIT_USAGE 2
#define IMGQ_EXIT_NOTFOUND 3 /* the job, batch, budget, webhook message or endpoint named */

/*
 * The flag parser every subcommand uses (args.c).  A command is described by a table:
 * 'flags' lists its long options, NULL-terminated: "json" takes no value, "batch=" takes one,
 * "secret=*" takes one and may be repeated.  --help and -h print 'usage' on stdout.
 */
#define IMGQ_CLI_MAX_FLAGS 24
#define IMGQ_CLI_MAX_SEEN 64
struct imgq_cli_cmd {
    const char *name;         /* "imgq batch results", the prefix of error messages */
    const char *usage;        /* the full usage text, ending in a newline */
    const char *const *flags; /* see above; NULL for none */
    int min_args, max_args;   /* operands after the flags; max_args -1: any number */
    const char *operands;     /* what is missing below min_args, e.g. "BATCH" */
};
struct imgq_cli_args {
    const struct imgq_cli_cmd *cmd;
    const char *value[IMGQ_CLI_MAX_FLAGS]; /* the last value of each flag */
    int count[IMGQ_CLI_MAX_FLAGS];         /* how often each flag was given */
    struct {
        int flag;
        const char *value;
    } seen[IMGQ_CLI_MAX_SEEN]; /* every flag in order (repeatable ones) */
    int nseen;
    char **args; /* the operands, flags removed (flags may follow them) */
    int nargs;
};
/*
 * Parse argv[1..argc-1] (argv[0] is the command's own name) with getopt_long.  -1 when the
 * command should run; else the exit status to return: 0 after --help, IMGQ_EXIT_USAGE after
 * printing "NAME: <what is wrong>" (an unknown flag, a missing value, a flag given twice, too
 * few or too many operands) and the usage on stderr.
 */
int imgq__cli_parse(const struct imgq_cli_cmd *cmd, int argc, char **argv, struct imgq_cli_args *a);
/* The value of flag 'name' (no dashes), NULL if not given; whether it was given. */
const char *imgq__cli_opt(const struct imgq_cli_args *a, const char *name);
bool imgq__cli_set(const struct imgq_cli_args *a, const char *name);
/* Every value of a repeatable flag, in order, into out[0..max-1]; returns how many were given. */
size_t imgq__cli_all(const struct imgq_cli_args *a, const char *name, const char **out, size_t max);
/* A usage error found after parsing: "NAME: <message>" and the usage on stderr; exit 2. */
__attribute__((format(printf, 2, 3))) int imgq__cli_error(const struct imgq_cli_args *a,
                                                          const char *fmt, ...);
/*
 * A command made of subcommands (imgq batch status|results|watch): runs the one named by
 * argv[1] with argv+1; --help, -h or help prints 'usage' on stdout; a missing or unknown one is
 * a usage error (exit 2).
 */
struct imgq_cli_sub {
    const char *name;
    int (*fn)(int argc, char **argv);
};
int imgq__cli_dispatch(const char *name, const char *usage, const struct imgq_cli_sub *subs,
                       int argc, char **argv);

#endif
