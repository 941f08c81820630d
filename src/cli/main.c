/* main.c - the imgq command: global flags, configuration, and dispatch to subcommands. */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "imgq/alloc.h"
#include "imgq/ssrf.h"
#include "imgq/version.h"

static struct imgq_config config;
static imgq_catalog *catalog;
static imgq_queue *queue;

struct imgq_config *imgq__cli_config(void)
{
    return &config;
}

int imgq__cli_usage_error(const char *name, const char *sub, const char *usage, const char *fmt,
                          ...)
{
    va_list ap;
    fprintf(stderr, "%s%s%s: ", name, sub ? " " : "", sub ? sub : "");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n%s", usage);
    return IMGQ_EXIT_USAGE;
}

int imgq__cli_check_url(const char *what, const char *url)
{
    static char *last_ok;
    if (last_ok && strcmp(last_ok, url) == 0)
        return 0;
    size_t nallow = 0;
    char **allow = imgq_config_split(config.ssrf_allow, &nallow);
    struct imgq_ssrf_policy pol = {(const char *const *)allow, nallow};
    char why[256] = "";
    int rc = imgq_ssrf_check_url(url, &pol, NULL, 0, why, sizeof why);
    imgq_config_split_free(allow, nallow);
    if (rc == IMGQ_ENOTFOUND || rc == IMGQ_EAGAIN) {
        fprintf(stderr, "%s %s: warning: %s (workers check it again when they connect)\n", what,
                url, why);
        rc = 0;
    } else if (rc) {
        fprintf(stderr, "%s %s: %s\n", what, url, why);
        return rc;
    }
    free(last_ok);
    last_ok = imgq_xstrdup(url);
    return 0;
}

const imgq_catalog *imgq__cli_catalog(void)
{
    if (!catalog) {
        char err[512];
        if (imgq_catalog_load(config.catalog, &catalog, err, sizeof err) != 0) {
            fprintf(stderr, "imgq: catalog %s\n", err);
            return NULL;
        }
    }
    return catalog;
}

imgq_queue *imgq__cli_queue_quiet(void)
{
    if (!queue) {
        char err[512];
        if (imgq_queue_open(config.redis_url, config.prefix, config.queue, &queue, err,
                            sizeof err) != 0)
            queue = NULL;
    }
    return queue;
}

imgq_queue *imgq__cli_queue(void)
{
    if (!queue) {
        char err[512];
        if (imgq_queue_open(config.redis_url, config.prefix, config.queue, &queue, err,
                            sizeof err) != 0) {
            fprintf(stderr, "imgq: %s\n", err);
            return NULL;
        }
    }
    return queue;
}

/*
 * stdout, writing to fd 1.  SIGPIPE is ignored (a Redis or HTTP peer hanging up must not kill
 * the process), so a reader that went away (imgq batch results B | head -1) shows up as EPIPE
 * here: the process then ends at once, quietly and with status 0 (the reader took what it
 * wanted; a script under "set -o pipefail" goes on), instead of computing the rest of its
 * output for nobody and printing "Broken pipe".  Nothing is left to flush: stdout is gone.
 */
static ssize_t stdout_write(void *cookie, const char *buf, size_t len)
{
    (void)cookie;
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(STDOUT_FILENO, buf + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EPIPE)
            _exit(IMGQ_EXIT_OK);
        if (n < 0)
            return done ? (ssize_t)done : -1;
        done += (size_t)n;
    }
    return (ssize_t)done;
}

static void stdout_quiet_on_epipe(void)
{
    FILE *f = fopencookie(NULL, "w", (cookie_io_functions_t){.write = stdout_write});
    if (!f)
        return; /* keep the plain stdout */
    setvbuf(f, NULL, isatty(STDOUT_FILENO) ? _IOLBF : _IOFBF, BUFSIZ);
    fflush(stdout);
    stdout = f;
}

static void usage(FILE *f)
{
    fputs(
        "usage: imgq [--config FILE] [--redis URL] [--queue NAME] [--prefix P] "
        "[--catalog FILE] COMMAND ...\n"
        "       imgq --version | --help | COMMAND --help\n"
        "\n"
        "commands:\n"
        "  submit FILE.jsonl|- [--batch NAME] [--priority low|normal|high] [--team T]\n"
        "         [--route R] [--max-attempts N] [--not-before TIME] [--deadline TIME]\n"
        "         [--window HH:MM-HH:MM [--tz ZONE]] [--max-cost USD] [--dry-run] [--json]\n"
        "  quote FILE.jsonl|- [--route R] [--json] [--budgets] [--team T] [--batch B]\n"
        "                                expected and worst-case cost per model and stage\n"
        "  batch status ID [--json]      counts by state and cost so far\n"
        "  batch results ID [--table]    one JSON line per job, or a table with totals\n"
        "  batch watch ID [--json] [--interval S]   progress, rate and ETA until done\n"
        "  cancel JOB_ID | cancel --batch B          end jobs that have not finished\n"
        "  select JOB [INDEX]            a pipeline's drafts awaiting selection; choose one\n"
        "  pause|resume JOB | --batch B | --queue-wide   stop/restart dispatch, all workers\n"
        "  promote JOB                   a scheduled or retrying job runs now\n"
        "  dlq list [--batch B] [--json] | dlq retry|purge (IDS|--batch B|--all)\n"
        "  stats [--json]                depths, in flight, retrying, dead, oldest wait\n"
        "  events [--follow [--from-start]] [--batch B] [--json]   job and batch transitions\n"
        "  job show ID                   everything about one job\n"
        "  cost --model M [--text-in N] [--image-in N] [--image-out N] [--text-out N]\n"
        "       [--route R] [--json]     cost of a token workload (N takes k, M, B); with\n"
        "                                only --model: the per-image table, quality x size\n"
        "  report [--by model|team|batch|day|route] [--since T] [--until T] [--tz ZONE]\n"
        "         [--json|--csv]         spend from the ledger, checked against the total\n"
        "  results BATCH [--presign SECONDS] [--json] [--all]   every image of the batch and\n"
        "                                its S3 key; --presign: a GET link valid SECONDS\n"
        "  presign s3://BUCKET/KEY --expires SECONDS [--at YYYYMMDDTHHMMSSZ]\n"
        "  clock [--advance S | --offset-ms MS | --reset]  the queue's clock (rehearsals)\n"
        "  retention [--set 7d]          how long ended jobs and finished batches are kept\n"
        "  budget set NAME --limit USD [--soft USD] [--window hour|day|month|total] [--tz Z]\n"
        "  budget show NAME | list [--json]   spent, reserved, remaining in the current window\n"
        "  (submit --on-budget-exhausted wait|fail: a capped job waits (default) or fails)\n"
        "  route --explain JOB.json|- [--json]   why \"model\": \"auto\" picks what it picks\n"
        "  webhook sign --secret whsec_... [--secret ...] [--id ID] [--timestamp T] < BODY\n"
        "                                the webhook-id/-timestamp/-signature headers imgq sends\n"
        "  webhook verify --secret whsec_... --id ID --timestamp T --signature \"v1,...\"\n"
        "         [--tolerance S] [--now T] < BODY   check a delivery as a receiver would\n"
        "  webhooks list [--state S] [--batch B] [--job J] [--limit N] [--json]   the outbox\n"
        "  webhooks show MSGID [--json] | replay MSGID...|--state S [--since T]\n"
        "  webhooks enable URL | disabled    re-enable an endpoint that answered 410\n"
        "TIME: +30m, +2h, +1d, 2026-11-23T01:00:00Z, or local 2026-11-23T01:00 (--tz)\n"
        "\n"
        "environment: IMGQ_CONFIG, IMGQ_REDIS_URL, IMGQ_QUEUE, IMGQ_PREFIX, IMGQ_CATALOG,\n"
        "  IMGQ_S3_BUCKET, AWS_ENDPOINT_URL_S3, AWS_REGION, AWS_ACCESS_KEY_ID, ...\n"
        "exit status: 0 ok, 1 the operation failed, 2 bad usage, 3 the job, batch, budget or\n"
        "  webhook message named does not exist; a reader of stdout that goes away (| head)\n"
        "  ends imgq quietly with 0\n",
        f);
}

int main(int argc, char **argv)
{
    const char *config_file = NULL, *redis = NULL, *qname = NULL, *prefix = NULL, *cat = NULL;
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},  {"redis", required_argument, NULL, 'r'},
        {"queue", required_argument, NULL, 'q'},   {"prefix", required_argument, NULL, 'p'},
        {"catalog", required_argument, NULL, 'C'}, {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},       {NULL, 0, NULL, 0}};
    /* libcurl leaves signals alone; a peer hanging up must not kill the process. */
    signal(SIGPIPE, SIG_IGN);
    stdout_quiet_on_epipe();
    int c;
    opterr = 0;
    /* '+' stops at the subcommand, whose own flags follow it. */
    while ((c = getopt_long(argc, argv, "+:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config_file = optarg;
            break;
        case 'r':
            redis = optarg;
            break;
        case 'q':
            qname = optarg;
            break;
        case 'p':
            prefix = optarg;
            break;
        case 'C':
            cat = optarg;
            break;
        case 'h':
            usage(stdout);
            return IMGQ_EXIT_OK;
        case 'V':
            imgq_version_print(stdout, "imgq");
            return IMGQ_EXIT_OK;
        case ':':
            fprintf(stderr, "imgq: %s needs a value\n", argv[optind - 1]);
            usage(stderr);
            return IMGQ_EXIT_USAGE;
        default:
            fprintf(stderr, "imgq: unknown option '%s'\n", argv[optind - 1]);
            usage(stderr);
            return IMGQ_EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "imgq: missing COMMAND\n");
        usage(stderr);
        return IMGQ_EXIT_USAGE;
    }
    char err[512];
    if (imgq_config_load(&config, config_file, err, sizeof err) != 0) {
        fprintf(stderr, "imgq: config %s\n", err);
        return IMGQ_EXIT_USAGE;
    }
    imgq_config_set(&config.redis_url, redis);
    imgq_config_set(&config.queue, qname);
    imgq_config_set(&config.prefix, prefix);
    imgq_config_set(&config.catalog, cat);

    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } cmds[] = {{"submit", imgq_cmd_submit},     {"batch", imgq_cmd_batch},
                {"job", imgq_cmd_job},           {"cost", imgq_cmd_cost},
                {"presign", imgq_cmd_presign},   {"cancel", imgq_cmd_cancel},
                {"select", imgq_cmd_select},     {"pause", imgq_cmd_pause},
                {"resume", imgq_cmd_resume},     {"dlq", imgq_cmd_dlq},
                {"stats", imgq_cmd_stats},       {"events", imgq_cmd_events},
                {"clock", imgq_cmd_clock},       {"retention", imgq_cmd_retention},
                {"budget", imgq_cmd_budget},     {"route", imgq_cmd_route},
                {"quote", imgq_cmd_quote},       {"report", imgq_cmd_report},
                {"results", imgq_cmd_results},   {"webhook", imgq_cmd_webhook},
                {"webhooks", imgq_cmd_webhooks}, {"promote", imgq_cmd_promote}};
    int rc = -1;
    const char *name = argv[optind];
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (strcmp(cmds[i].name, name) == 0) {
            int sub_argc = argc - optind;
            char **sub_argv = argv + optind;
            rc = cmds[i].fn(sub_argc, sub_argv); /* flags: imgq__cli_parse (args.c) */
            break;
        }
    if (rc == -1) {
        if (strcmp(name, "help") == 0) {
            usage(stdout);
            rc = IMGQ_EXIT_OK;
        } else {
            fprintf(stderr, "imgq: unknown command '%s'\n", name);
            usage(stderr);
            rc = IMGQ_EXIT_USAGE;
        }
    }
    imgq_queue_close(queue);
    imgq_catalog_free(catalog);
    imgq_config_clear(&config);
    return rc;
}
