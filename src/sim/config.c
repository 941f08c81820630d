/* config.c - imgq-sim's knobs from the command line and from a JSON file (--config). */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "imgq/alloc.h"
#include "imgq/config.h"
#include "imgq/error.h"
#include "imgq/version.h"
#include "sim.h"

void sim_config_init(struct sim_config *c)
{
    memset(c, 0, sizeof(*c));
    c->host = imgq_xstrdup("127.0.0.1");
    c->port = 0;
    c->catalog_path = imgq_config_default_catalog();
    c->retry_after_s = 1;
    c->auto_quality = imgq_xstrdup("medium");
    c->max_body_bytes = 64u * 1024 * 1024;
}

void sim_config_release(struct sim_config *c)
{
    free(c->host);
    free(c->catalog_path);
    free(c->auto_quality);
    free(c->retry_after_header);
    memset(c, 0, sizeof(*c));
}

void sim_usage(FILE *f)
{
    fputs("usage: imgq-sim [options]\n"
          "A simulator of image-generation providers on loopback: the OpenAI Images API\n"
          "(POST /v1/images/generations), Gemini image output\n"
          "(POST /v1beta/models/MODEL:generateContent), BytePlus ModelArk Seedream\n"
          "(POST /api/v3/images/generations), and four asynchronous (submit, then poll) APIs:\n"
          "  DashScope  POST /api/v1/services/aigc/text2image/image-synthesis\n"
          "             (X-DashScope-Async: enable), GET /api/v1/tasks/ID\n"
          "  Replicate  POST /v1/models/OWNER/NAME/predictions (Prefer: wait[=N]),\n"
          "             GET /v1/predictions/ID, POST /v1/predictions/ID/cancel\n"
          "  fal.ai     POST /fal/MODEL_ID, GET /fal/OWNER/APP/requests/ID[/status],\n"
          "             PUT /fal/OWNER/APP/requests/ID/cancel\n"
          "  BFL        POST /bfl/v1/MODEL, GET /bfl/v1/get_result?id=ID\n"
          "Their result images are PNGs at GET /sim/files/TASK-I.png; a task is queued for\n"
          "the first third of its latency, running until it is up, then done, and is\n"
          "forgotten 10 minutes later.\n"
          "\n"
          "  --host ADDR              listen address (default 127.0.0.1)\n"
          "  --port N                 port; 0 picks a free one (default 0); prints\n"
          "                           'listening on http://HOST:PORT' when ready\n"
          "  --catalog FILE           model catalog (default $IMGQ_CATALOG, else the\n"
          "                           deploy/catalog.json shipped with imgq)\n"
          "  --latency-ms N           delay before answering a generation (default 0)\n"
          "  --latency-jitter-ms N    plus a uniform random 0..N ms (default 0)\n"
          "  --fail-429 R             fraction 0..1 of generations answered 429\n"
          "  --retry-after S          retry-after seconds on 429 (default 1; Gemini: the\n"
          "                           body's RetryInfo.retryDelay)\n"
          "  --retry-after-header TEXT  send TEXT as the retry-after header of 429s\n"
          "                           instead, verbatim (99999999999999999999, an\n"
          "                           HTTP-date...; OpenAI: no retry-after-ms; Gemini:\n"
          "                           retryDelay TEXTs)\n"
          "  --fail-500 R             fraction answered 500\n"
          "  --fail-moderation R      fraction blocked by moderation (OpenAI: 400\n"
          "                           moderation_blocked; Gemini: 200 IMAGE_SAFETY;\n"
          "                           Seedream: 400 OutputImageSensitiveContentDetected;\n"
          "                           asynchronous APIs: the task's moderation state)\n"
          "  --no-usage R             fraction of successes without the usage object\n"
          "  --bad-usage KIND         every success's usage spoilt: empty ({}), string,\n"
          "                           negative, fractional, huge (INT64_MAX), overflow\n"
          "                           (beyond 64 bits) or zero counts, or max (2^50, the\n"
          "                           largest count imgq prices) (default: none)\n"
          "  --rpm N                  requests per minute per provider: advertised in\n"
          "                           x-ratelimit-*, and enforced with 429 when N > 0\n"
          "                           (default 0: 5000 advertised)\n"
          "  --auto-quality Q         what quality \"auto\" becomes (default medium)\n"
          "  --max-body-bytes N       largest request body (default 64 MiB)\n"
          "  --seed N                 seed of the random generator (default: from the clock)\n"
          "  --config FILE.json       the same knobs as JSON keys (latency_ms, fail_429, ...);\n"
          "                           flags given on the command line win\n"
          "  --verbose                log one line per request to stderr\n"
          "  --help, --version\n"
          "\n"
          "Prompt triggers force an outcome whatever the rates: [sim:429] [sim:500]\n"
          "[sim:moderation] [sim:prompt-blocked] (moderation of the prompt: Gemini's\n"
          "promptFeedback.blockReason) [sim:no-usage] [sim:bad-usage:KIND] (as --bad-usage)\n"
          "[sim:fail-once:KEY] (500 the first time KEY is seen)\n"
          "[sim:latency:MS] [sim:tokens:PCT] (OpenAI: output tokens at PCT% of the catalog's\n"
          "table, as when a provider's token table moved); for the asynchronous APIs,\n"
          "moderation is a task state (DashScope FAILED DataInspectionFailed, Replicate\n"
          "failed, fal 422 content_policy_violation, BFL Content Moderated), and\n"
          "[sim:task-fail] fails the task while polled, [sim:poll-503] answers its first\n"
          "poll 503.\n"
          "Reference images (Gemini inlineData, Seedream image, DashScope's edit API\n"
          "POST /api/v1/services/aigc/multimodal-generation/generation) must decode whole\n"
          "as PNG, JPEG or WebP (URLs are refused: nothing is fetched); OpenAI edits'\n"
          "files are checked by type.  [sim:refs:N] in the prompt makes a request that does\n"
          "not carry exactly N reference images a 400, as a provider refuses a request\n"
          "whose images are missing.\n"
          "GET /sim/stats shows counters (submits, polls, results per asynchronous API;\n"
          "with_references, references and reference_bytes per endpoint);\n"
          "POST /sim/reset zeroes them and forgets the tasks (?fail_once=1 also forgets\n"
          "fail-once keys, ?fail_rules=1 the /sim/fail rules).\n"
          "POST /sim/fail {\"model\":M,\"status\":500,\"rate\":1.0} fails every request for\n"
          "model M (body model, Gemini path, Replicate OWNER/NAME, fal MODEL_ID, BFL path)\n"
          "with that status in the provider's error shape at that rate (0 removes the\n"
          "rule); GET /sim/fail lists the rules.\n",
          f);
}

static int parse_u64(const char *v, uint64_t max, uint64_t *out)
{
    char *end;
    if (!v || !*v || *v == '-')
        return IMGQ_EINVAL;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (errno || *end || n > max)
        return IMGQ_EINVAL;
    *out = n;
    return 0;
}

static int parse_rate(const char *v, double *out)
{
    char *end;
    if (!v || !*v)
        return IMGQ_EINVAL;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || *end || !isfinite(d) || d < 0 || d > 1)
        return IMGQ_EINVAL;
    *out = d;
    return 0;
}

/* Set one knob by name (flag without "--", dashes, or JSON key, underscores) from text. */
static int set_knob(struct sim_config *c, const char *name, const char *v, char *err, size_t errlen)
{
    char key[64];
    uint64_t n = 0; /* (read only when parse_u64 set it, but -O2 cannot see that) */
    int rc = 0;

    if (strlen(name) >= sizeof(key))
        goto unknown;
    for (size_t i = 0;; i++) {
        key[i] = name[i] == '-' ? '_' : name[i];
        if (!name[i])
            break;
    }
    if (strcmp(key, "host") == 0) {
        free(c->host);
        c->host = imgq_xstrdup(v);
    } else if (strcmp(key, "port") == 0) {
        rc = parse_u64(v, 65535, &n);
        c->port = (int)n;
    } else if (strcmp(key, "catalog") == 0) {
        free(c->catalog_path);
        c->catalog_path = imgq_xstrdup(v);
    } else if (strcmp(key, "latency_ms") == 0) {
        rc = parse_u64(v, 86400000, &c->latency_ms);
    } else if (strcmp(key, "latency_jitter_ms") == 0) {
        rc = parse_u64(v, 86400000, &c->latency_jitter_ms);
    } else if (strcmp(key, "fail_429") == 0) {
        rc = parse_rate(v, &c->fail_429);
    } else if (strcmp(key, "fail_500") == 0) {
        rc = parse_rate(v, &c->fail_500);
    } else if (strcmp(key, "fail_moderation") == 0) {
        rc = parse_rate(v, &c->fail_moderation);
    } else if (strcmp(key, "no_usage") == 0) {
        rc = parse_rate(v, &c->no_usage);
    } else if (strcmp(key, "bad_usage") == 0) {
        int k = strcmp(v, "none") == 0 ? SIM_USAGE_GOOD : sim_bad_usage_parse(v);
        if (k < 0) {
            snprintf(err, errlen, "invalid value '%s' for %s (one of none, %s)", v, name,
                     SIM_BAD_USAGE_NAMES);
            return IMGQ_EINVAL;
        }
        c->bad_usage = k;
    } else if (strcmp(key, "retry_after") == 0) {
        rc = parse_u64(v, 86400, &n);
        c->retry_after_s = (unsigned)n;
    } else if (strcmp(key, "retry_after_header") == 0) {
        free(c->retry_after_header);
        c->retry_after_header = *v ? imgq_xstrdup(v) : NULL;
    } else if (strcmp(key, "seed") == 0) {
        rc = parse_u64(v, UINT64_MAX, &c->seed);
        c->seed_set = true;
    } else if (strcmp(key, "rpm") == 0) {
        rc = parse_u64(v, 100000000, &n);
        c->rpm = (unsigned)n;
    } else if (strcmp(key, "auto_quality") == 0) {
        if (strcmp(v, "low") && strcmp(v, "medium") && strcmp(v, "high"))
            rc = IMGQ_EINVAL;
        free(c->auto_quality);
        c->auto_quality = imgq_xstrdup(v);
    } else if (strcmp(key, "max_body_bytes") == 0) {
        rc = parse_u64(v, (uint64_t)1 << 32, &n);
        c->max_body_bytes = (size_t)n;
        if (n == 0)
            rc = IMGQ_EINVAL;
    } else if (strcmp(key, "verbose") == 0) {
        if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0)
            c->verbose = true;
        else if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0)
            c->verbose = false;
        else
            rc = IMGQ_EINVAL;
    } else {
        goto unknown;
    }
    if (rc)
        snprintf(err, errlen, "invalid value '%s' for %s", v, name);
    return rc;
unknown:
    snprintf(err, errlen, "unknown option '%s' (see --help)", name);
    return IMGQ_EINVAL;
}

static int load_config_file(struct sim_config *c, const char *path, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root) {
        snprintf(err, errlen, "%s:%d: %s", path, jerr.line, jerr.text);
        return IMGQ_EPARSE;
    }
    int rc = 0;
    if (!json_is_object(root)) {
        snprintf(err, errlen, "%s: the top level must be an object", path);
        rc = IMGQ_EPARSE;
        goto out;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        char text[64];
        const char *s = text;
        if (json_is_string(v))
            s = json_string_value(v);
        else if (json_is_integer(v))
            snprintf(text, sizeof(text), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        else if (json_is_real(v))
            snprintf(text, sizeof(text), "%.17g", json_real_value(v));
        else if (json_is_boolean(v))
            s = json_is_true(v) ? "true" : "false";
        else
            s = "(not a scalar)";
        char sub[256];
        rc = set_knob(c, key, s, sub, sizeof(sub));
        if (rc) {
            snprintf(err, errlen, "%s: %s", path, sub);
            goto out;
        }
    }
out:
    json_decref(root);
    return rc;
}

/* Whether --NAME is one of the simulator's options (set_knob knows it). */
static bool known_option(const char *name)
{
    if (strcmp(name, "config") == 0)
        return true;
    struct sim_config scratch;
    char why[256] = "";
    sim_config_init(&scratch);
    set_knob(&scratch, name, "", why, sizeof why);
    sim_config_release(&scratch);
    return strncmp(why, "unknown option", 14) != 0;
}

int sim_config_from_args(struct sim_config *c, int argc, char **argv, char *err, size_t errlen)
{
    /* The file first, so that flags override it wherever they appear. */
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 1; i < argc; i++) {
            const char *a = argv[i];
            if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
                sim_usage(stdout);
                return 1;
            }
            if (strcmp(a, "--version") == 0) {
                imgq_version_print(stdout, "imgq-sim");
                return 1;
            }
            if (strncmp(a, "--", 2) != 0) {
                snprintf(err, errlen, "unexpected argument '%s' (see --help)", a);
                return IMGQ_EINVAL;
            }
            char name[64];
            const char *value;
            const char *eq = strchr(a + 2, '=');
            size_t nlen = eq ? (size_t)(eq - (a + 2)) : strlen(a + 2);
            if (nlen >= sizeof(name)) {
                snprintf(err, errlen, "unknown option '%s'", a);
                return IMGQ_EINVAL;
            }
            memcpy(name, a + 2, nlen);
            name[nlen] = '\0';
            if (strcmp(name, "verbose") == 0 && !eq) {
                value = "true";
            } else if (eq) {
                value = eq + 1;
            } else if (i + 1 < argc) {
                value = argv[++i];
            } else {
                snprintf(err, errlen,
                         known_option(name) ? "option --%s needs a value"
                                            : "unknown option '--%s' (see --help)",
                         name);
                return IMGQ_EINVAL;
            }
            bool is_config = strcmp(name, "config") == 0;
            if (pass == 0 && is_config) {
                int rc = load_config_file(c, value, err, errlen);
                if (rc)
                    return rc;
            } else if (pass == 1 && !is_config) {
                int rc = set_knob(c, name, value, err, errlen);
                if (rc && !known_option(name))
                    snprintf(err, errlen, "unknown option '--%s' (see --help)", name);
                if (rc)
                    return rc;
            }
        }
    }
    if (c->fail_429 + c->fail_500 + c->fail_moderation > 1.0 + 1e-9) {
        snprintf(err, errlen, "--fail-429 + --fail-500 + --fail-moderation must not exceed 1");
        return IMGQ_EINVAL;
    }
    return 0;
}

void sim_retry_after(const struct sim *s, char *buf, size_t len)
{
    if (s->cfg.retry_after_header)
        snprintf(buf, len, "%s", s->cfg.retry_after_header);
    else
        snprintf(buf, len, "%u", s->cfg.retry_after_s);
}
