/*
 * cmd_presign.c - "imgq presign": print a presigned URL for an S3 object.
 *
 *   imgq presign s3://BUCKET/KEY --expires SECONDS [--at YYYYMMDDTHHMMSSZ] [--method GET]
 *
 * Credentials, region and endpoint come from the environment as for every S3 access (see
 * imgq_s3_config_from_env in s3.h); the config file's s3.endpoint and s3.region fill in what
 * the environment leaves unset.  The bucket named in the s3:// URL is the one used, and the
 * key is taken as written (no key prefix is added).  --at signs as of another time (for
 * reproducible URLs and tests).
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
#include "imgq/s3.h"

#define USAGE                                                                                      \
    "usage: imgq presign s3://BUCKET/KEY --expires SECONDS [--at YYYYMMDDTHHMMSSZ]\n"              \
    "                    [--method GET|PUT|HEAD|DELETE]\n"

#define usage_error(...) imgq__cli_usage_error("imgq presign", NULL, USAGE, __VA_ARGS__)

/* Strict YYYYMMDDTHHMMSSZ, as UTC; false if malformed or not a real date and time. */
static bool parse_amz_date(const char *s, time_t *out)
{
    struct tm tm;
    char *end;

    if (strlen(s) != 16 || s[8] != 'T' || s[15] != 'Z')
        return false;
    for (int i = 0; i < 15; i++)
        if (i != 8 && !isdigit((unsigned char)s[i]))
            return false;
    memset(&tm, 0, sizeof(tm));
    end = strptime(s, "%Y%m%dT%H%M%SZ", &tm);
    if (!end || *end)
        return false;
    int year = tm.tm_year, mon = tm.tm_mon, mday = tm.tm_mday;
    int hour = tm.tm_hour, min = tm.tm_min, sec = tm.tm_sec;
    time_t t = timegm(&tm);
    /* timegm normalises 20230231 into March: reject dates that moved. */
    if (t == (time_t)-1 || tm.tm_year != year || tm.tm_mon != mon || tm.tm_mday != mday ||
        tm.tm_hour != hour || tm.tm_min != min || tm.tm_sec != sec)
        return false;
    *out = t;
    return true;
}

static bool parse_long(const char *s, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || !isdigit((unsigned char)s[0]))
        return false;
    *out = v;
    return true;
}

/* The config file's S3 endpoint and region, where the environment names none. */
static void apply_config_file(struct imgq_s3_config *cfg)
{
    const struct imgq_config *conf = imgq__cli_config();
    const char *style = getenv("IMGQ_S3_ADDRESSING_STYLE");

    if (!conf)
        return;
    if (!cfg->endpoint && conf->s3_endpoint && *conf->s3_endpoint) {
        imgq_s3_config_set(&cfg->endpoint, conf->s3_endpoint);
        cfg->path_style = !(style && strcmp(style, "virtual") == 0);
    }
    const char *r1 = getenv("AWS_REGION"), *r2 = getenv("AWS_DEFAULT_REGION");
    if ((!r1 || !*r1) && (!r2 || !*r2) && conf->s3_region && *conf->s3_region)
        imgq_s3_config_set(&cfg->region, conf->s3_region);
}

int imgq__cli_s3_config(struct imgq_s3_config *cfg, const char *bucket, char **why)
{
    const char *bad = NULL;

    *why = NULL;
    imgq_s3_config_init(cfg);
    if (imgq_s3_config_from_env(cfg, &bad) < 0) {
        *why = imgq_xstrdup(bad);
        return IMGQ_ECONFIG;
    }
    apply_config_file(cfg);
    if (bucket)
        imgq_s3_config_set(&cfg->bucket, bucket);
    return imgq_s3_config_check(cfg, bucket != NULL, why);
}

int imgq_cmd_presign(int argc, char **argv)
{
    const char *target = NULL, *expires_s = NULL, *at_s = NULL, *method_s = "GET";
    char method[8];
    long expires;
    time_t at = time(NULL);

    static const char *const flags[] = {"expires=", "at=", "method=", NULL};
    static const struct imgq_cli_cmd cmd = {"imgq presign", USAGE, flags, 1, 1, "s3://BUCKET/KEY"};
    struct imgq_cli_args args;
    int st = imgq__cli_parse(&cmd, argc, argv, &args);
    if (st >= 0)
        return st;
    target = args.args[0];
    expires_s = imgq__cli_opt(&args, "expires");
    at_s = imgq__cli_opt(&args, "at");
    if (imgq__cli_opt(&args, "method"))
        method_s = imgq__cli_opt(&args, "method");
    if (strncmp(target, "s3://", 5) != 0)
        return usage_error("'%s' is not an s3://BUCKET/KEY URL", target);
    const char *slash = strchr(target + 5, '/');
    if (!slash || slash == target + 5 || slash[1] == '\0')
        return usage_error("'%s' must name a bucket and a key: s3://BUCKET/KEY", target);
    if (!expires_s)
        return usage_error("missing --expires SECONDS (1..604800)");
    if (!parse_long(expires_s, &expires) || expires < 1 || expires > IMGQ_S3_PRESIGN_MAX_EXPIRES)
        return usage_error("--expires '%s' must be a whole number of seconds from 1 to 604800",
                           expires_s);
    if (at_s && !parse_amz_date(at_s, &at))
        return usage_error("--at '%s' must be a UTC time written YYYYMMDDTHHMMSSZ", at_s);
    size_t mlen = strlen(method_s);
    if (mlen == 0 || mlen >= sizeof(method))
        return usage_error("--method '%s' must be GET, PUT, HEAD or DELETE", method_s);
    for (size_t i = 0; i <= mlen; i++)
        method[i] = (char)toupper((unsigned char)method_s[i]);
    if (strcmp(method, "GET") && strcmp(method, "PUT") && strcmp(method, "HEAD") &&
        strcmp(method, "DELETE"))
        return usage_error("--method '%s' must be GET, PUT, HEAD or DELETE", method_s);

    struct imgq_s3_config cfg;
    char *problem = NULL, *url = NULL;
    int status = IMGQ_EXIT_FAIL;

    char *bucket = imgq_xstrndup(target + 5, (size_t)(slash - (target + 5)));
    int cr = imgq__cli_s3_config(&cfg, bucket, &problem);
    free(bucket);
    if (cr < 0) {
        fprintf(stderr, "imgq presign: %s\n", problem);
        goto out;
    }
    int rc = imgq_s3_presign(&cfg, method, cfg.bucket, slash + 1, expires, at, &url);
    if (rc == IMGQ_EINVAL) {
        status = usage_error("cannot presign '%s': invalid bucket name or key", target);
        goto out;
    }
    if (rc < 0) {
        fprintf(stderr, "imgq presign: %s: %s\n", target, imgq_strerror(rc));
        goto out;
    }
    printf("%s\n", url);
    status = fflush(stdout) == 0 ? IMGQ_EXIT_OK : IMGQ_EXIT_FAIL;
out:
    free(url);
    free(problem);
    imgq_s3_config_clear(&cfg);
    return status;
}
