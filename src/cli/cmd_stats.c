/*
 * cmd_stats.c - imgq stats, imgq events and imgq batch watch: looking at a running queue.
 */
#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "imgq/alloc.h"
#include "imgq/drift.h"
#include "imgq/events.h"

/* stats --------------------------------------------------------------------------------- */

/* The per-model circuit breakers (breaker.lua, mode state) as a new array of objects; an
 * empty array, with a warning, if Redis refused the script (the rest of stats still shows). */
static json_t *breakers_get(imgq_queue *q)
{
    const char *args[] = {"state", "", "", "", ""};
    json_t *reply = NULL, *out = json_array();
    char err[512];
    if (imgq_queue_script(q, IMGQ_SCRIPT_BREAKER, 5, args, &reply, err, sizeof err) != 0) {
        fprintf(stderr, "imgq stats: breakers: %s\n", err);
        return out;
    }
    for (size_t i = 0; i < json_array_size(reply); i++) {
        json_t *e = json_array_get(reply, i);
        if (json_array_size(e) != 7)
            continue;
        const char *cls = json_string_value(json_array_get(e, 6));
        json_array_append_new(
            out, json_pack("{s:O,s:O,s:O,s:O,s:O,s:O,s:s}", "model", json_array_get(e, 0), "state",
                           json_array_get(e, 1), "fails", json_array_get(e, 2), "opened_at_ms",
                           json_array_get(e, 3), "left_ms", json_array_get(e, 4), "opens",
                           json_array_get(e, 5), "last_class", cls ? cls : ""));
    }
    json_decref(reply);
    return out;
}

static void breakers_print(const json_t *breakers)
{
    if (json_array_size(breakers) == 0)
        return;
    printf("  breakers\n");
    size_t i;
    const json_t *b;
    json_array_foreach(breakers, i, b)
    {
        const char *state = json_string_value(json_object_get(b, "state"));
        double left = (double)json_integer_value(json_object_get(b, "left_ms")) / 1000.0;
        const char *cls = json_string_value(json_object_get(b, "last_class"));
        printf("    %-28s %-9s  %lld consecutive failures",
               json_string_value(json_object_get(b, "model")), state ? state : "?",
               (long long)json_integer_value(json_object_get(b, "fails")));
        if (state && strcmp(state, "open") == 0)
            printf(", half-open in %.1f s", left);
        else if (state && strcmp(state, "half_open") == 0)
            printf(left > 0 ? ", probe in flight (%.1f s left)" : ", next call probes", left);
        if (cls && *cls)
            printf("; last: %s", cls);
        long long opens = (long long)json_integer_value(json_object_get(b, "opens"));
        printf("; opened %lld time%s\n", opens, opens == 1 ? "" : "s");
    }
}

/* Catalog drift (drift.h) as a new object {"events": N, "cells": [{model, quality, size,
 * ceiling_ppm, overshoots}]}; NULL, with a warning, if Redis refused the read. */
static json_t *drift_get(imgq_queue *q)
{
    struct imgq_drift d;
    char err[512];
    if (imgq_drift_load(imgq_queue_redis(q), imgq_queue_keys(q), &d, err, sizeof err) != 0) {
        fprintf(stderr, "imgq stats: catalog drift: %s\n", err);
        return NULL;
    }
    json_t *cells = json_array();
    for (size_t i = 0; i < d.ncells; i++) {
        char model[IMGQ_DRIFT_CELL_MAX] = "", quality[IMGQ_DRIFT_CELL_MAX] = "",
             size[IMGQ_DRIFT_CELL_MAX] = "";
        if (sscanf(d.cells[i].cell, "%191[^|]|%191[^|]|%191s", model, quality, size) != 3 &&
            sscanf(d.cells[i].cell, "%191[^|]||%191s", model, size) == 2)
            quality[0] = '\0';
        json_array_append_new(cells, json_pack("{s:s, s:s, s:s, s:I, s:I}", "model", model,
                                               "quality", quality, "size", size, "ceiling_ppm",
                                               (json_int_t)d.cells[i].ppm, "overshoots",
                                               (json_int_t)d.cells[i].count));
    }
    json_t *o = json_pack("{s:I, s:o}", "events", (json_int_t)d.events, "cells", cells);
    imgq_drift_clear(&d);
    return o;
}

static void drift_print(const json_t *drift)
{
    if (!drift)
        return;
    long long events = (long long)json_integer_value(json_object_get(drift, "events"));
    printf("  catalog drift %lld  (calls billed above their reserved ceiling)\n", events);
    size_t i;
    const json_t *c;
    json_array_foreach(json_object_get(drift, "cells"), i, c)
    {
        long long ppm = (long long)json_integer_value(json_object_get(c, "ceiling_ppm"));
        printf("    %-28s %-7s %-10s ceiling x%lld.%06lld  (%lld overshoots)\n",
               json_string_value(json_object_get(c, "model")),
               json_string_value(json_object_get(c, "quality")),
               json_string_value(json_object_get(c, "size")), ppm / IMGQ_DRIFT_PPM_ONE,
               ppm % IMGQ_DRIFT_PPM_ONE,
               (long long)json_integer_value(json_object_get(c, "overshoots")));
    }
}

int imgq_cmd_stats(int argc, char **argv)
{
    static const char *const flags[] = {"json", NULL};
    static const struct imgq_cli_cmd cmd = {
        "imgq stats",
        "usage: imgq stats [--json]\n"
        "  depths, in flight, retrying, dead, oldest wait, breakers\n",
        flags,
        0,
        0,
        NULL};
    struct imgq_cli_args a;
    int st = imgq__cli_parse(&cmd, argc, argv, &a);
    if (st >= 0)
        return st;
    imgq_queue *q = imgq__cli_queue();
    if (!q)
        return IMGQ_EXIT_FAIL;
    json_t *reply = NULL;
    char err[512];
    if (imgq_queue_script(q, IMGQ_SCRIPT_STATS, 0, NULL, &reply, err, sizeof err) != 0) {
        fprintf(stderr, "imgq stats: %s\n", err);
        return IMGQ_EXIT_FAIL;
    }
    json_t *o = json_object();
    for (size_t i = 0; i + 1 < json_array_size(reply); i += 2) {
        const char *k = json_string_value(json_array_get(reply, i));
        json_t *v = json_array_get(reply, i + 1);
        if (!k)
            continue;
        if (json_is_string(v))
            json_object_set_new(o, k, json_integer(atoll(json_string_value(v))));
        else
            json_object_set(o, k, v);
    }
    json_decref(reply);
    /* A counter appears once a job has been in that state; this one is always shown. */
    static const char *const always[] = {"blocked_budget", "coalesced", "drafting",
                                         "awaiting_selection"};
    for (size_t i = 0; i < sizeof always / sizeof always[0]; i++)
        if (!json_object_get(o, always[i]))
            json_object_set_new(o, always[i], json_integer(0));
    json_t *breakers = breakers_get(q);
    json_t *drift = drift_get(q);
    if (imgq__cli_set(&a, "json")) {
        json_object_set_new(o, "queue", json_string(imgq__cli_config()->queue));
        json_object_set(o, "breakers", breakers);
        if (drift)
            json_object_set(o, "catalog_drift", drift);
        char *text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
        printf("%s\n", text);
        free(text);
    } else {
#define V(k) ((long long)json_integer_value(json_object_get(o, k)))
        printf("queue %s%s\n", imgq__cli_config()->queue, V("paused") ? " (paused)" : "");
        printf("  ready       %lld  (high %lld, normal %lld, low %lld; %lld batches)\n",
               V("ready:0") + V("ready:1") + V("ready:2"), V("ready:0"), V("ready:1"), V("ready:2"),
               V("batches_ready"));
        printf("  in flight   %lld\n", V("leases"));
        /* The delayed set holds scheduled and retrying jobs, those blocked by a budget and
         * those parked behind an identical request in flight. */
        printf("  retrying    %lld\n", V("delayed") - V("blocked_budget") - V("coalesced"));
        printf("  blocked     %lld  (over a budget)\n", V("blocked_budget"));
        printf("  coalesced   %lld  (waiting for an identical request in flight)\n",
               V("coalesced"));
        printf("  pipelines   %lld drafting, %lld awaiting selection (imgq select)\n",
               V("drafting"), V("awaiting_selection"));
        printf("  dead        %lld\n", V("dead"));
        printf("  done        %lld\n", V("done"));
        printf("  failed      %lld\n", V("failed"));
        printf("  cancelled   %lld\n", V("canceled"));
        if (V("oldest_waiting_ms") >= 0)
            printf("  oldest waiting job: %.1f s\n", (double)V("oldest_waiting_ms") / 1000.0);
#undef V
        breakers_print(breakers);
        drift_print(drift);
    }
    json_decref(drift);
    json_decref(breakers);
    json_decref(o);
    return IMGQ_EXIT_OK;
}

/* events -------------------------------------------------------------------------------- */

static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* One stream entry as a JSON line or a readable line; false when filtered out. */
static int print_event(const redisReply *e, const char *batch, int json)
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
        e->element[1]->type != REDIS_REPLY_ARRAY)
        return 0;
    const redisReply *f = e->element[1];
    /* Each field of its type (events.h: counts are integers, documents JSON). */
    const char **kv = imgq_xcalloc(f->elements + 1, sizeof *kv);
    for (size_t i = 0; i < f->elements; i++)
        kv[i] = f->element[i]->str;
    json_t *o = imgq_event_to_json(e->element[0]->str, kv, f->elements);
    free(kv);
    const char *b = json_string_value(json_object_get(o, "batch"));
    if (batch && (!b || strcmp(b, batch) != 0)) {
        json_decref(o);
        return 0;
    }
    if (json) {
        char *text = json_dumps(o, JSON_COMPACT);
        printf("%s\n", text);
        free(text);
    } else {
        time_t t = (time_t)(atoll(e->element[0]->str) / 1000);
        struct tm tm;
        char stamp[32];
        localtime_r(&t, &tm);
        strftime(stamp, sizeof stamp, "%H:%M:%S", &tm);
        printf("%s %-16s", stamp, json_string_value(json_object_get(o, "type")));
        const char *key;
        json_t *v;
        json_object_foreach(o, key, v)
        {
            if (!strcmp(key, "id") || !strcmp(key, "time_ms") || !strcmp(key, "type"))
                continue;
            if (json_is_string(v)) {
                printf(" %s=%s", key, json_string_value(v));
            } else {
                char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
                printf(" %s=%s", key, text ? text : "");
                free(text);
            }
        }
        printf("\n");
    }
    fflush(stdout);
    json_decref(o);
    return 1;
}

int imgq_cmd_events(int argc, char **argv)
{
    static const char *const flags[] = {"follow", "from-start", "batch=", "json", NULL};
    static const struct imgq_cli_cmd cmd = {
        "imgq events",
        "usage: imgq events [--follow [--from-start]] [--batch B] [--json]\n"
        "  job and batch transitions the stream holds; --follow: only new ones, as they\n"
        "  happen (--from-start: the stream first, then new ones)\n",
        flags,
        0,
        0,
        NULL};
    struct imgq_cli_args a;
    int st = imgq__cli_parse(&cmd, argc, argv, &a);
    if (st >= 0)
        return st;
    imgq_queue *q = imgq__cli_queue();
    if (!q)
        return IMGQ_EXIT_FAIL;
    const char *batch = imgq__cli_opt(&a, "batch");
    int follow = imgq__cli_set(&a, "follow"), json = imgq__cli_set(&a, "json");
    int from_start = imgq__cli_set(&a, "from-start");
    if (from_start && !follow)
        return imgq__cli_error(&a, "--from-start goes with --follow");
    redisContext *rc = imgq_queue_redis(q);
    const char *key = imgq_queue_keys(q)->events;
    char last[64] = "-";
    /* What the stream holds now (or with --follow, only its last id, to start after it),
     * then (with --follow) what arrives. */
    redisReply *r = follow && !from_start ? redisCommand(rc, "XREVRANGE %s + - COUNT 1", key)
                                          : redisCommand(rc, "XRANGE %s - +", key);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        fprintf(stderr, "imgq events: %s\n", r && r->str ? r->str : rc->errstr);
        if (r)
            freeReplyObject(r);
        return IMGQ_EXIT_FAIL;
    }
    for (size_t i = 0; i < r->elements; i++) {
        if (!follow || from_start)
            print_event(r->element[i], batch, json);
        snprintf(last, sizeof last, "%s", r->element[i]->element[0]->str);
    }
    freeReplyObject(r);
    if (!follow)
        return IMGQ_EXIT_OK;
    if (strcmp(last, "-") == 0)
        snprintf(last, sizeof last, "0-0");
    signal(SIGINT, on_interrupt);
    signal(SIGTERM, on_interrupt);
    while (!interrupted) {
        /* Blocks in Redis (no polling) up to 5 s at a time so an interrupt is noticed. */
        r = redisCommand(rc, "XREAD BLOCK 5000 COUNT 500 STREAMS %s %s", key, last);
        if (!r) {
            if (interrupted)
                break;
            fprintf(stderr, "imgq events: %s\n", rc->errstr);
            return IMGQ_EXIT_FAIL;
        }
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 1) {
            const redisReply *entries = r->element[0]->element[1];
            for (size_t i = 0; i < entries->elements; i++) {
                print_event(entries->element[i], batch, json);
                snprintf(last, sizeof last, "%s", entries->element[i]->element[0]->str);
            }
        }
        freeReplyObject(r);
    }
    return IMGQ_EXIT_OK;
}

/* batch watch --------------------------------------------------------------------------- */

static void fmt_duration(double s, char *buf, size_t len)
{
    if (s < 0 || s > 1e8)
        snprintf(buf, len, "?");
    else if (s < 90)
        snprintf(buf, len, "%.0fs", s);
    else if (s < 5400)
        snprintf(buf, len, "%.0fm%02.0fs", s / 60 - 0.5, s - 60 * (int)(s / 60));
    else
        snprintf(buf, len, "%.0fh%02dm", s / 3600 - 0.5, (int)(s / 60) % 60);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int imgq__cmd_batch_watch(int argc, char **argv)
{
    static const char *const flags[] = {"json", "interval=", NULL};
    static const struct imgq_cli_cmd cmd = {"imgq batch watch",
                                            "usage: imgq batch watch ID [--json] [--interval S]\n"
                                            "  progress, rate and ETA until the batch is done\n",
                                            flags,
                                            1,
                                            1,
                                            "ID"};
    struct imgq_cli_args a;
    int st = imgq__cli_parse(&cmd, argc, argv, &a);
    if (st >= 0)
        return st;
    const char *id = a.args[0];
    imgq_queue *q = imgq__cli_queue();
    if (!q)
        return IMGQ_EXIT_FAIL;
    int json = imgq__cli_set(&a, "json");
    int tty = !json && isatty(STDOUT_FILENO);
    const char *iv = imgq__cli_opt(&a, "interval");
    double interval = iv ? atof(iv) : tty ? 1.0 : 10.0;
    if (interval < 0.1)
        interval = 0.1;
    signal(SIGINT, on_interrupt);
    signal(SIGTERM, on_interrupt);
    double t0 = now_s(), start_ended = -1;
    int rc = IMGQ_EXIT_OK;
    while (!interrupted) {
        json_t *info;
        int r = imgq_queue_batch_info(q, id, &info);
        if (r) {
            fprintf(stderr, "\nimgq batch watch: %s\n",
                    r == IMGQ_ENOTFOUND ? "no such batch" : imgq_strerror(r));
            return r == IMGQ_ENOTFOUND ? IMGQ_EXIT_NOTFOUND : IMGQ_EXIT_FAIL;
        }
#define F(k) ((long long)json_integer_value(json_object_get(info, k)))
        long long total = F("total"), done = F("done"), failed = F("failed"),
                  canceled = F("canceled"),
                  ended = done + failed + canceled + F("expired") + F("review");
        imgq_micros cost = F("cost");
        int finished = json_object_get(info, "finished") != NULL;
        double el = now_s() - t0;
        if (start_ended < 0)
            start_ended = (double)ended;
        double rate = el > 0.5 ? ((double)ended - start_ended) / el : 0;
        double eta = rate > 0 ? (double)(total - ended) / rate : -1;
        char money[48], etas[32];
        imgq_money_format(cost, 6, money, sizeof money);
        fmt_duration(eta, etas, sizeof etas);
        if (json) {
            printf("{\"batch\":\"%s\",\"total\":%lld,\"queued\":%lld,\"running\":%lld,"
                   "\"retrying\":%lld,\"blocked_budget\":%lld,\"done\":%lld,\"failed\":%lld,"
                   "\"canceled\":%lld,"
                   "\"cost_micros\":%lld,\"rate_per_s\":%.2f,\"eta_s\":%.0f,\"finished\":%s}\n",
                   id, total, F("queued"), F("running"), F("retrying"), F("blocked_budget"), done,
                   failed, canceled, (long long)cost, rate, eta, finished ? "true" : "false");
        } else {
            int width = 30, fill = total ? (int)(width * ended / total) : width;
            char bar[64];
            for (int i = 0; i < width; i++)
                bar[i] = i < fill ? '#' : '.';
            bar[width] = '\0';
            printf("%s[%s] %3lld%% %lld/%lld done %lld failed %lld running %lld | %.1f/s | "
                   "ETA %s | %s%s",
                   tty ? "\r" : "", bar, total ? 100 * ended / total : 100, ended, total, done,
                   failed, F("running"), rate, finished ? "0s" : etas, money,
                   tty ? "\033[K" : "\n");
        }
        fflush(stdout);
#undef F
        json_decref(info);
        if (finished) {
            if (tty)
                printf("\n");
            rc = failed ? IMGQ_EXIT_FAIL : IMGQ_EXIT_OK;
            break;
        }
        usleep((useconds_t)(interval * 1e6));
    }
    return rc;
}
