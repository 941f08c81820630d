/*
 * cmd_webhook.c - "imgq webhook": sign and verify Standard Webhooks deliveries, so that a
 * receiver can test its side against imgq's signer.
 *
 *   imgq webhook sign --secret whsec_... [--secret whsec_...] [--id ID] [--timestamp T] < body
 *       prints the three headers imgq sends:
 *         webhook-id: ID                 (default: a new random msg_... id)
 *         webhook-timestamp: T           (default: now)
 *         webhook-signature: v1,... [v1,...]   (one per secret, in order)
 *   imgq webhook verify --secret whsec_... [--secret ...] --id ID --timestamp T
 *                       --signature "v1,..." [--tolerance SECONDS] [--now T] < body
 *       exits 0 printing "valid", or 1 with the reason on stderr ("timestamp too old",
 *       "no matching signature", "malformed header: ...").
 *
 * With no --secret, the secrets come from IMGQ_WEBHOOK_SECRET (several separated by spaces or
 * commas), which keeps them out of the process list.  The body is stdin, byte for byte.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "imgq/alloc.h"
#include "imgq/webhook.h"

#define USAGE                                                                                      \
    "usage: imgq webhook sign --secret whsec_... [--secret whsec_...] [--id ID] [--timestamp T]\n" \
    "                         < BODY\n"                                                            \
    "       imgq webhook verify --secret whsec_... [--secret ...] --id ID --timestamp T\n"         \
    "                           --signature \"v1,...\" [--tolerance SECONDS] [--now T] < BODY\n"   \
    "  secrets may instead come from IMGQ_WEBHOOK_SECRET (separated by spaces or commas)\n"

#define MAX_SECRETS 16
#define MAX_BODY ((size_t)64 * 1024 * 1024)

#define usage_error(sub, ...) imgq__cli_usage_error("imgq webhook", sub, USAGE, __VA_ARGS__)

/* A plain decimal integer, optionally negative when 'neg' is allowed. */
static bool parse_ll(const char *s, bool neg, long long *out)
{
    char *end;
    if (!s || !*s || !(isdigit((unsigned char)s[0]) || (neg && s[0] == '-' && s[1])))
        return false;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

/* Read all of stdin; NULL (with a message) on error or beyond MAX_BODY. */
static char *read_stdin(size_t *len)
{
    size_t cap = 4096, n = 0;
    char *buf = imgq_xmalloc(cap);
    for (;;) {
        if (n == cap) {
            if (cap >= MAX_BODY) {
                fprintf(stderr, "imgq webhook: body larger than %zu bytes\n", MAX_BODY);
                free(buf);
                return NULL;
            }
            cap *= 2;
            buf = imgq_xrealloc(buf, cap);
        }
        size_t r = fread(buf + n, 1, cap - n, stdin);
        n += r;
        if (r == 0) {
            if (ferror(stdin)) {
                fprintf(stderr, "imgq webhook: cannot read the body from stdin: %s\n",
                        strerror(errno));
                free(buf);
                return NULL;
            }
            break;
        }
    }
    *len = n;
    return buf;
}

struct opts {
    const char *secrets[MAX_SECRETS];
    size_t nsecrets;
    char *env_copy; /* IMGQ_WEBHOOK_SECRET split in place */
    const char *id, *timestamp, *signature, *tolerance, *now;
};

/* Parse the options of 'cmd'; returns -1 on success, else the exit status. */
static int parse_opts(const char *cmd, int argc, char **argv, bool verify, struct opts *o)
{
    memset(o, 0, sizeof *o);
    static const char *const sign_flags[] = {"secret=*", "id=", "timestamp=", NULL};
    static const char *const verify_flags[] = {
        "secret=*", "id=", "timestamp=", "signature=", "now=", "tolerance=", NULL};
    static const struct imgq_cli_cmd sign = {"imgq webhook sign", USAGE, sign_flags, 0, 0, NULL};
    static const struct imgq_cli_cmd ver = {"imgq webhook verify", USAGE, verify_flags, 0, 0, NULL};
    struct imgq_cli_args a;
    int st = imgq__cli_parse(verify ? &ver : &sign, argc, argv, &a);
    if (st >= 0)
        return st;
    size_t ns = imgq__cli_all(&a, "secret", o->secrets, MAX_SECRETS);
    if (ns > MAX_SECRETS)
        return usage_error(cmd, "at most %d secrets", MAX_SECRETS);
    o->nsecrets = ns;
    o->id = imgq__cli_opt(&a, "id");
    o->timestamp = imgq__cli_opt(&a, "timestamp");
    if (verify) {
        o->signature = imgq__cli_opt(&a, "signature");
        o->now = imgq__cli_opt(&a, "now");
        o->tolerance = imgq__cli_opt(&a, "tolerance");
    }
    if (o->nsecrets == 0) {
        const char *env = getenv("IMGQ_WEBHOOK_SECRET");
        if (env && *env) {
            o->env_copy = imgq_xstrdup(env);
            char *save = NULL;
            for (char *t = strtok_r(o->env_copy, " \t,", &save); t;
                 t = strtok_r(NULL, " \t,", &save)) {
                if (o->nsecrets == MAX_SECRETS)
                    return usage_error(cmd, "at most %d secrets", MAX_SECRETS);
                o->secrets[o->nsecrets++] = t;
            }
        }
    }
    if (o->nsecrets == 0)
        return usage_error(cmd, "missing --secret whsec_... (or IMGQ_WEBHOOK_SECRET)");
    for (size_t i = 0; i < o->nsecrets; i++) {
        uint8_t *key;
        size_t len;
        int rc = imgq_webhook_secret_parse(o->secrets[i], &key, &len);
        if (rc != 0)
            return usage_error(cmd, "secret %zu: %s", i + 1, imgq_webhook_secret_strerror(rc));
        free(key);
    }
    return -1;
}

static int cmd_sign(int argc, char **argv)
{
    struct opts o;
    int st = parse_opts("sign", argc, argv, false, &o);
    char *id = NULL, *body = NULL, *sig = NULL;
    if (st >= 0)
        goto out;
    long long ts = (long long)time(NULL);
    if (o.timestamp && !parse_ll(o.timestamp, false, &ts)) {
        st = usage_error("sign", "--timestamp '%s' must be integer Unix seconds", o.timestamp);
        goto out;
    }
    id = o.id ? imgq_xstrdup(o.id) : imgq_webhook_id();
    if (!id) {
        fputs("imgq webhook sign: cannot generate a random id\n", stderr);
        st = IMGQ_EXIT_FAIL;
        goto out;
    }
    size_t len;
    if (!(body = read_stdin(&len))) {
        st = IMGQ_EXIT_FAIL;
        goto out;
    }
    sig = imgq_webhook_sign(o.secrets, o.nsecrets, id, ts, body, len);
    if (!sig) {
        st = usage_error("sign",
                         "--id '%s' must be 1 to %d printable characters without '.' or spaces", id,
                         IMGQ_WEBHOOK_ID_MAX);
        goto out;
    }
    printf("webhook-id: %s\nwebhook-timestamp: %lld\nwebhook-signature: %s\n", id, ts, sig);
    st = fflush(stdout) == 0 ? IMGQ_EXIT_OK : IMGQ_EXIT_FAIL;
out:
    free(sig);
    free(body);
    free(id);
    free(o.env_copy);
    return st;
}

static int cmd_verify(int argc, char **argv)
{
    struct opts o;
    int st = parse_opts("verify", argc, argv, true, &o);
    char *body = NULL;
    if (st >= 0)
        goto out;
    if (!o.id || !o.timestamp || !o.signature) {
        st = usage_error("verify", "--id, --timestamp and --signature are required (the "
                                   "webhook-id, webhook-timestamp and webhook-signature headers)");
        goto out;
    }
    long long now = (long long)time(NULL), tol = IMGQ_WEBHOOK_TOLERANCE_DEFAULT;
    if (o.now && !parse_ll(o.now, true, &now)) {
        st = usage_error("verify", "--now '%s' must be integer Unix seconds", o.now);
        goto out;
    }
    if (o.tolerance &&
        (!parse_ll(o.tolerance, false, &tol) || tol < 1 || tol > 100L * 365 * 86400)) {
        st = usage_error("verify", "--tolerance '%s' must be a whole number of seconds, at least 1",
                         o.tolerance);
        goto out;
    }
    size_t len;
    if (!(body = read_stdin(&len))) {
        st = IMGQ_EXIT_FAIL;
        goto out;
    }
    char why[512];
    int rc = imgq_webhook_verify(o.secrets, o.nsecrets, o.id, o.timestamp, o.signature, body, len,
                                 now, (long)tol, why, sizeof why);
    if (rc != 0) {
        fprintf(stderr, "imgq webhook verify: %s\n", why);
        st = IMGQ_EXIT_FAIL;
        goto out;
    }
    puts("valid");
    st = fflush(stdout) == 0 ? IMGQ_EXIT_OK : IMGQ_EXIT_FAIL;
out:
    free(body);
    free(o.env_copy);
    return st;
}

int imgq_cmd_webhook(int argc, char **argv)
{
    static const struct imgq_cli_sub subs[] = {
        {"sign", cmd_sign}, {"verify", cmd_verify}, {NULL, NULL}};
    return imgq__cli_dispatch("imgq webhook", USAGE, subs, argc, argv);
}
