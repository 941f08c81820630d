/* main.c - imgq-worker: flags and configuration, then the loop until stopped. */
#include <curl/curl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imgq/alloc.h"
#include "imgq/log.h"
#include "imgq/retry_hint.h"
#include "imgq/ssrf.h"
#include "imgq/version.h"
#include "spool.h"
#include "webhooks.h"
#include "worker.h"

static void usage(FILE *f)
{
    fputs("usage: imgq-worker [--config FILE] [--redis URL] [--queue NAME] [--prefix P]\n"
          "                   [--catalog FILE] [--concurrency N] [--lease-ms MS]\n"
          "                   [--grace-ms MS] [--retry-base-ms MS] [--retry-max-ms MS]\n"
          "                   [--max-retry-after-s S] [--max-rate-limit-waits N]\n"
          "                   [--max-rate-limit-wait-s S]\n"
          "                   [--breaker-threshold N] [--breaker-cooldown-ms MS]\n"
          "                   [--provider-timeout-ms MS] [--exit-when-idle] [--noop]\n"
          "                   [--rate-limit PROVIDER=SPEC]... [--rate-window-ms MS]\n"
          "                   [--poll-ms MS] [--poll-timeout-ms MS]\n"
          "                   [--spool-dir DIR] [--spool-max-bytes SIZE]\n"
          "                   [--spool-memory-bytes SIZE] [--store-timeout-ms MS]\n"
          "                   [--log-level error|warn|info|debug]\n"
          "       imgq-worker --version | --help\n"
          "Claims jobs from Redis, calls the provider, stores images in S3.\n"
          "SIGTERM/SIGINT: stop claiming, let running jobs finish for the grace period,\n"
          "then hand the rest back to the queue.\n"
          "--breaker-threshold (5) consecutive failures of a model open its circuit breaker:\n"
          "its jobs go to their fallbacks for --breaker-cooldown-ms (30000), then one probes.\n"
          "A provider's 429 waits for its hint (retry-after and the like), clamped to\n"
          "--max-retry-after-s (3600, at most 86400), without using an attempt; a job\n"
          "rate-limited more than --max-rate-limit-waits (50) times, or whose waits would\n"
          "total more than --max-rate-limit-wait-s (21600), fails as rate_limit.\n"
          "--exit-when-idle: exit once nothing is ready, retrying or running in the queue\n"
          "(paused work does not count).  --noop completes every claimed job at once\n"
          "(queue benchmarks only).\n"
          "--rate-limit PROVIDER=SPEC caps what every worker together asks of a provider\n"
          "account: SPEC is a catalog preset (openai=openai-tier-2: images and tokens per\n"
          "minute), a number of images per window (openai=20), or a list such as\n"
          "openai=images=20,tokens=250000,concurrent=8 (presets and items combine:\n"
          "openai-tier-2,concurrent=8).  The window is 60 s (--rate-window-ms scales it).\n"
          "Also from the config file (\"rate_limits\": {\"openai\": \"openai-tier-2\"}) and\n"
          "IMGQ_RATE_LIMITS=\"openai=openai-tier-2;google=images=10,concurrent=4\";\n"
          "flags override the environment, which overrides the file.\n"
          "--poll-ms: how often an asynchronous provider's task is polled when it gives no\n"
          "hint (1000); --poll-timeout-ms: how long a task may take before the call times\n"
          "out (1800000).\n"
          "Paid images S3 refuses are kept and only their PUT is retried, for\n"
          "--store-timeout-ms (3600000) or while the lease holds: in memory up to\n"
          "--spool-memory-bytes (256M), and in --spool-dir (none) up to --spool-max-bytes\n"
          "(10G), where a restarted worker finds them and stores them before claiming.\n"
          "Also \"worker\": {\"spool_dir\", \"spool_max_bytes\", \"spool_memory_bytes\",\n"
          "\"store_timeout_seconds\"} in the config file and IMGQ_SPOOL_DIR,\n"
          "IMGQ_SPOOL_MAX_BYTES, IMGQ_SPOOL_MEMORY_BYTES.\n"
          "Webhooks of the outbox are signed with IMGQ_WEBHOOK_SECRET (whsec_..., several\n"
          "separated by spaces or commas); a worker without a secret delivers none.\n"
          "Exit status: 0 stopped cleanly, 1 a runtime failure, 2 bad usage or configuration.\n",
          f);
}

/* "a, b,c" -> {"a", "b", "c"} (new strings), empty items dropped; NULL when there are none. */
static int positive(const char *flag, const char *v, int *out)
{
    char *end;
    long x = strtol(v, &end, 10);
    if (*end || x < 1 || x > 100000000) {
        fprintf(stderr, "imgq-worker: %s '%s': expected a positive integer\n", flag, v);
        return -1;
    }
    *out = (int)x;
    return 0;
}

/* A size flag: bytes, or with a K/M/G/T suffix. */
static int size_option(const char *flag, const char *v, long long *out)
{
    if (imgq_config_parse_bytes(v, out) != 0) {
        fprintf(stderr, "imgq-worker: %s '%s': expected a size in bytes (a number, or 10G, 512M)\n",
                flag, v);
        return -1;
    }
    return 0;
}

/* A breaker option: an integer from 1 to max ('what' says what it is). */
static int breaker_option(const char *flag, const char *v, int max, const char *what, int *out)
{
    char *end;
    long x = strtol(v, &end, 10);
    if (!*v || *end || x < 1 || x > max) {
        fprintf(stderr, "imgq-worker: %s '%s': expected a number of %s from 1 to %d\n", flag, v,
                what, max);
        return -1;
    }
    *out = (int)x;
    return 0;
}

int main(int argc, char **argv)
{
    const char *config_file = NULL, *redis = NULL, *queue = NULL, *prefix = NULL, *catalog = NULL;
    int concurrency = 0, lease = 0, grace = 0, rbase = 1000, rmax = 300000, ptimeout = 300000;
    bool idle = false, noop = false;
    int breaker_threshold = 5, breaker_cooldown = 30000;
    const char *rates[32];
    int nrates = 0, rate_window = 60000;
    int poll_ms = 1000, poll_timeout = 1800000;
    const char *spool_flag = NULL;
    long long spool_max = -1, spool_mem = -1;
    int store_timeout = 0;
    int max_hint_s = (int)(IMGQ_RETRY_HINT_MAX_MS / 1000), max_rl_waits = 50, max_rl_wait_s = 21600;
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"redis", required_argument, NULL, 'r'},
                                         {"queue", required_argument, NULL, 'q'},
                                         {"prefix", required_argument, NULL, 'p'},
                                         {"catalog", required_argument, NULL, 'C'},
                                         {"concurrency", required_argument, NULL, 'n'},
                                         {"lease-ms", required_argument, NULL, 'l'},
                                         {"grace-ms", required_argument, NULL, 'g'},
                                         {"retry-base-ms", required_argument, NULL, 'b'},
                                         {"retry-max-ms", required_argument, NULL, 'm'},
                                         {"provider-timeout-ms", required_argument, NULL, 't'},
                                         {"breaker-threshold", required_argument, NULL, 0x100},
                                         {"breaker-cooldown-ms", required_argument, NULL, 0x101},
                                         {"exit-when-idle", no_argument, NULL, 'x'},
                                         {"noop", no_argument, NULL, 'N'},
                                         {"rate-limit", required_argument, NULL, 'R'},
                                         {"rate-window-ms", required_argument, NULL, 'W'},
                                         {"poll-ms", required_argument, NULL, 'P'},
                                         {"poll-timeout-ms", required_argument, NULL, 'T'},
                                         {"log-level", required_argument, NULL, 'L'},
                                         {"spool-dir", required_argument, NULL, 0x102},
                                         {"spool-max-bytes", required_argument, NULL, 0x103},
                                         {"spool-memory-bytes", required_argument, NULL, 0x104},
                                         {"store-timeout-ms", required_argument, NULL, 0x105},
                                         {"max-retry-after-s", required_argument, NULL, 0x106},
                                         {"max-rate-limit-waits", required_argument, NULL, 0x107},
                                         {"max-rate-limit-wait-s", required_argument, NULL, 0x108},
                                         {"help", no_argument, NULL, 'h'},
                                         {"version", no_argument, NULL, 'V'},
                                         {NULL, 0, NULL, 0}};
    /* libcurl leaves signals alone; a peer hanging up must not kill the process. */
    signal(SIGPIPE, SIG_IGN);
    int c;
    opterr = 0; /* the messages below name the flag */
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 'c':
            config_file = optarg;
            break;
        case 'r':
            redis = optarg;
            break;
        case 'q':
            queue = optarg;
            break;
        case 'p':
            prefix = optarg;
            break;
        case 'C':
            catalog = optarg;
            break;
        case 'n':
            bad = positive("--concurrency", optarg, &concurrency);
            break;
        case 'l':
            bad = positive("--lease-ms", optarg, &lease);
            break;
        case 'g':
            bad = positive("--grace-ms", optarg, &grace);
            break;
        case 'b':
            bad = positive("--retry-base-ms", optarg, &rbase);
            break;
        case 'm':
            bad = positive("--retry-max-ms", optarg, &rmax);
            break;
        case 't':
            bad = positive("--provider-timeout-ms", optarg, &ptimeout);
            break;
        case 0x100:
            bad = breaker_option("--breaker-threshold", optarg, 1000, "consecutive failures",
                                 &breaker_threshold);
            break;
        case 0x101:
            bad = breaker_option("--breaker-cooldown-ms", optarg, 86400000, "milliseconds",
                                 &breaker_cooldown);
            break;
        case 0x102:
            if (!*optarg) {
                fprintf(stderr, "imgq-worker: --spool-dir: expected a directory\n");
                return 2;
            }
            spool_flag = optarg;
            break;
        case 0x103:
            bad = size_option("--spool-max-bytes", optarg, &spool_max);
            break;
        case 0x104:
            bad = size_option("--spool-memory-bytes", optarg, &spool_mem);
            break;
        case 0x105:
            bad = positive("--store-timeout-ms", optarg, &store_timeout);
            break;
        case 0x106:
            bad = breaker_option("--max-retry-after-s", optarg,
                                 (int)(IMGQ_RETRY_HINT_CEILING_MS / 1000), "seconds", &max_hint_s);
            break;
        case 0x107:
            bad = breaker_option("--max-rate-limit-waits", optarg, 1000000, "waits", &max_rl_waits);
            break;
        case 0x108:
            bad = breaker_option("--max-rate-limit-wait-s", optarg, 100000000, "seconds",
                                 &max_rl_wait_s);
            break;
        case 'x':
            idle = true;
            break;
        case 'N':
            noop = true;
            break;
        case 'R':
            if (nrates == (int)(sizeof rates / sizeof rates[0])) {
                fprintf(stderr, "imgq-worker: too many --rate-limit flags\n");
                return 2;
            }
            rates[nrates++] = optarg;
            break;
        case 'W':
            bad = positive("--rate-window-ms", optarg, &rate_window);
            break;
        case 'P':
            bad = positive("--poll-ms", optarg, &poll_ms);
            break;
        case 'T':
            bad = positive("--poll-timeout-ms", optarg, &poll_timeout);
            break;
        case 'L': {
            int l = imgq_log_level_parse(optarg);
            if (l < 0) {
                fprintf(stderr, "imgq-worker: --log-level '%s': error, warn, info or debug\n",
                        optarg);
                return 2;
            }
            imgq_log_set_level((enum imgq_log_level)l);
            break;
        }
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            imgq_version_print(stdout, "imgq-worker");
            return 0;
        case ':':
            fprintf(stderr, "imgq-worker: %s needs a value (see --help)\n", argv[optind - 1]);
            return 2;
        default:
            fprintf(stderr, "imgq-worker: unknown option '%s' (see --help)\n", argv[optind - 1]);
            return 2;
        }
        if (bad)
            return 2;
    }
    if (optind != argc) {
        fprintf(stderr, "imgq-worker: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 2;
    }

    struct imgq_config cfg;
    char err[512];
    if (imgq_config_load(&cfg, config_file, err, sizeof err) != 0) {
        fprintf(stderr, "imgq-worker: config %s\n", err);
        return 2;
    }
    imgq_config_set(&cfg.redis_url, redis);
    imgq_config_set(&cfg.queue, queue);
    imgq_config_set(&cfg.prefix, prefix);
    imgq_config_set(&cfg.catalog, catalog);
    int rc = 1;
    imgq_catalog *cat = NULL;
    static struct worker w; /* static: zeroed, and large */
    w.cfg = &cfg;
    w.opt.concurrency = concurrency ? concurrency : cfg.concurrency;
    w.opt.lease_ms = lease ? lease : cfg.lease_ms;
    w.opt.grace_ms = grace ? grace : cfg.grace_ms;
    w.opt.retry_base_ms = rbase;
    w.opt.retry_max_ms = rmax < rbase ? rbase : rmax;
    w.opt.provider_timeout_ms = ptimeout;
    w.opt.max_retry_after_ms = (long)max_hint_s * 1000;
    w.opt.max_rate_limit_waits = max_rl_waits;
    w.opt.max_rate_limit_wait_ms = (long)max_rl_wait_s * 1000;
    w.opt.poll_ms = poll_ms;
    w.opt.poll_timeout_ms = poll_timeout;
    w.opt.breaker_threshold = breaker_threshold;
    w.opt.breaker_cooldown_ms = breaker_cooldown;
    w.opt.exit_when_idle = idle;
    w.opt.noop = noop;
    /* The spool: flags override the environment, which overrides the file (config.c). */
    imgq_config_set(&cfg.spool_dir, spool_flag);
    if (spool_max >= 0)
        cfg.spool_max_bytes = spool_max;
    if (spool_mem >= 0)
        cfg.spool_memory_bytes = spool_mem;
    w.opt.store_timeout_ms = store_timeout          ? store_timeout
                             : cfg.store_timeout_ms ? cfg.store_timeout_ms
                                                    : 3600000;
    imgq_s3_config_init(&w.s3);
    curl_global_init(CURL_GLOBAL_DEFAULT);

    if (imgq_catalog_load(cfg.catalog, &cat, err, sizeof err) != 0) {
        fprintf(stderr, "imgq-worker: catalog %s\n", err);
        goto out;
    }
    w.catalog = cat;
    /* Provider account limits (limits.h): the config file's "rate_limits", then
     * IMGQ_RATE_LIMITS, then --rate-limit flags, each overriding a provider's earlier spec. */
    w.opt.rate_window_ms = rate_window;
    const char *cfg_path = config_file ? config_file : getenv("IMGQ_CONFIG");
    if (limits_parse_config_file(cfg_path, cat, w.opt.rate, &w.opt.nrate, err, sizeof err) != 0) {
        fprintf(stderr, "imgq-worker: config %s\n", err);
        rc = 2;
        goto out;
    }
    const char *env_limits = getenv("IMGQ_RATE_LIMITS");
    if (env_limits && limits_parse_list("IMGQ_RATE_LIMITS", env_limits, cat, w.opt.rate,
                                        &w.opt.nrate, err, sizeof err) != 0) {
        fprintf(stderr, "imgq-worker: %s\n", err);
        rc = 2;
        goto out;
    }
    for (int i = 0; i < nrates; i++) {
        struct limits_spec ls;
        if (limits_parse("--rate-limit", rates[i], NULL, cat, &ls, err, sizeof err) != 0) {
            fprintf(stderr, "imgq-worker: %s\n", err);
            rc = 2;
            goto out;
        }
        if (limits_table_set(w.opt.rate, &w.opt.nrate, &ls) != 0) {
            fprintf(stderr, "imgq-worker: --rate-limit '%s': more than %d providers\n", rates[i],
                    LIMITS_MAX);
            rc = 2;
            goto out;
        }
    }
    if (imgq_redis_url_parse(cfg.redis_url, &w.redis, err, sizeof err) != 0) {
        fprintf(stderr, "imgq-worker: %s\n", err);
        goto out;
    }
    if (imgq_keys_init(&w.keys, cfg.prefix, cfg.queue) != 0) {
        fprintf(stderr, "imgq-worker: queue '%s' / prefix '%s': empty, too long or braces\n",
                cfg.queue, cfg.prefix);
        goto out;
    }
    const char *why = NULL;
    if (imgq_s3_config_from_env(&w.s3, &why) != 0) {
        fprintf(stderr, "imgq-worker: S3 configuration: %s\n", why ? why : "invalid");
        goto out;
    }
    /* cfg holds each S3 setting resolved (the environment beats the file, config.c): the
     * endpoint, region and bucket come from there, the credentials from the environment. */
    if (cfg.s3_endpoint) {
        const char *style = getenv("IMGQ_S3_ADDRESSING_STYLE");
        if (!w.s3.endpoint) /* the file's: path style unless told "virtual", as from env */
            w.s3.path_style = !(style && strcmp(style, "virtual") == 0);
        imgq_s3_config_set(&w.s3.endpoint, cfg.s3_endpoint);
    }
    if (cfg.s3_region)
        imgq_s3_config_set(&w.s3.region, cfg.s3_region);
    if (cfg.s3_bucket)
        imgq_s3_config_set(&w.s3.bucket, cfg.s3_bucket);
    /* Comma lists of the configuration, split once.  The SSRF allowlist is checked now, so
     * a bad entry stops the worker, not a job. */
    w.ssrf_allow = imgq_config_split(cfg.ssrf_allow, &w.nssrf_allow);
    w.ref_buckets = imgq_config_split(cfg.s3_reference_buckets, &w.nref_buckets);
    {
        struct imgq_ssrf_policy pol = {(const char *const *)w.ssrf_allow, w.nssrf_allow};
        char bad[256];
        if (imgq_ssrf_policy_check(&pol, bad, sizeof bad) != 0) {
            fprintf(stderr, "imgq-worker: IMGQ_SSRF_ALLOW / ssrf_allow: %s\n", bad);
            goto out;
        }
    }
    if (webhooks_configure(&w, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "imgq-worker: webhook secrets: %s\n", err);
        rc = 2;
        goto out;
    }
    char *why2 = NULL;
    if (!noop && imgq_s3_config_check(&w.s3, true, &why2) != 0) {
        fprintf(stderr, "imgq-worker: S3 configuration: %s\n", why2 ? why2 : "incomplete");
        free(why2);
        goto out;
    }
    if (spool_open(&w.spool, cfg.spool_dir,
                   cfg.spool_max_bytes >= 0 ? (uint64_t)cfg.spool_max_bytes
                                            : SPOOL_DEFAULT_MAX_BYTES,
                   cfg.spool_memory_bytes >= 0 ? (uint64_t)cfg.spool_memory_bytes
                                               : SPOOL_DEFAULT_MEMORY_BYTES,
                   err, sizeof err) != 0) {
        fprintf(stderr, "imgq-worker: --spool-dir / IMGQ_SPOOL_DIR: %s\n", err);
        goto out;
    }
    if (cfg.spool_dir)
        imgq_log(IMGQ_LOG_INFO, "worker", "spool %s: %" PRIu64 " bytes in it, cap %" PRIu64,
                 spool_dir(w.spool), spool_disk_used(w.spool),
                 cfg.spool_max_bytes >= 0 ? (uint64_t)cfg.spool_max_bytes
                                          : SPOOL_DEFAULT_MAX_BYTES);
    for (int i = 0; i < IMGQ_CONFIG_APIS; i++)
        if (!cfg.apis[i].api_key)
            imgq_log(IMGQ_LOG_DEBUG, "worker", "no key for the %s API: its calls will fail auth",
                     cfg.apis[i].api);

    uv_loop_t loop;
    uv_loop_init(&loop);
    w.loop = &loop;
    if (worker_start(&w) != 0) {
        fprintf(stderr, "imgq-worker: cannot start the HTTP client\n");
        uv_loop_close(&loop);
        goto out;
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    worker_drop_reliable(&w);
    int lc = uv_loop_close(&loop);
    if (lc != 0)
        imgq_log(IMGQ_LOG_WARN, "worker", "loop closed with handles open: %s", uv_strerror(lc));
    rc = w.exit_code; /* 1: Redis refused or cannot serve this worker (worker.c) */
out:
    webhooks_free(&w);
    spool_free(w.spool);
    free(w.outq);
    imgq_config_split_free(w.ssrf_allow, w.nssrf_allow);
    imgq_config_split_free(w.ref_buckets, w.nref_buckets);
    imgq_redis_url_clear(&w.redis);
    imgq_s3_config_clear(&w.s3);
    imgq_catalog_free(cat);
    imgq_config_clear(&cfg);
    curl_global_cleanup();
    return rc;
}
