/*
 * breaker.c - the worker's side of the per-model circuit breakers: one EVALSHA of
 * breaker.lua per question or report (see breaker.h).
 */
#include "breaker.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imgq/alloc.h"
#include "imgq/log.h"
#include "imgq/router.h"
#include "worker.h"

#define PROBE_SLACK_MS 5000L /* a probe's permit outlives its call by this much */

/* ARGV[3..6] of breaker.lua: token, threshold, cooldown, probe ttl. */
struct bparams {
    char threshold[16], cooldown[24], probe_ttl[24];
};

static void params(const struct worker *w, struct bparams *p)
{
    int thr = w->opt.breaker_threshold > 0 ? w->opt.breaker_threshold : BREAKER_DEFAULT_THRESHOLD;
    int cd =
        w->opt.breaker_cooldown_ms > 0 ? w->opt.breaker_cooldown_ms : BREAKER_DEFAULT_COOLDOWN_MS;
    long ttl =
        (w->opt.provider_timeout_ms > 0 ? w->opt.provider_timeout_ms : 60000L) + PROBE_SLACK_MS;
    snprintf(p->threshold, sizeof p->threshold, "%d", thr);
    snprintf(p->cooldown, sizeof p->cooldown, "%d", cd);
    snprintf(p->probe_ttl, sizeof p->probe_ttl, "%ld", ttl);
}

/* choose --------------------------------------------------------------------------------- */

struct bchoose {
    int n;
    breaker_choose_cb cb;
    void *arg;
    uv_timer_t timer; /* only when Redis is away: the answer is given from the loop */
    char why[160];
};

static void choose_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

static void choose_deferred(uv_timer_t *t)
{
    struct bchoose *c = t->data;
    c->cb(c->arg, 0, 0, c->why);
    uv_close((uv_handle_t *)t, choose_timer_closed);
}

static void on_choose(struct worker *w, redisReply *r, void *arg)
{
    (void)w;
    struct bchoose *c = arg;
    const char *why = "breaker not consulted: Redis went away";
    int pick = 0;
    long wait = 0;
    if (r && r->type == REDIS_REPLY_ERROR) {
        snprintf(c->why, sizeof c->why, "breaker not consulted: %s", r->str);
        why = c->why;
    } else if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 4 &&
               r->element[0]->type == REDIS_REPLY_INTEGER &&
               r->element[1]->type == REDIS_REPLY_INTEGER &&
               r->element[3]->type == REDIS_REPLY_STRING) {
        long long p = r->element[0]->integer;
        if (p >= -1 && p < c->n) {
            pick = (int)p;
            wait = pick < 0 ? (long)r->element[1]->integer : 0;
            if (pick < 0 && wait < 1)
                wait = 1;
            why = r->element[3]->str;
        } else {
            why = "breaker not consulted: pick out of range";
        }
    } else if (r) {
        why = "breaker not consulted: unexpected reply";
    }
    c->cb(c->arg, pick, wait, why);
    free(c);
}

int breaker_choose(struct worker *w, const char *const *models, int n, const char *token,
                   breaker_choose_cb cb, void *arg)
{
    if (!w || !models || !cb || n < 1 || n > BREAKER_MAX_MODELS)
        return IMGQ_EINVAL;
    for (int i = 0; i < n; i++)
        if (!models[i] || !*models[i])
            return IMGQ_EINVAL;
    struct bparams p;
    params(w, &p);
    const char *args[5 + BREAKER_MAX_MODELS] = {"choose", token ? token : "", p.threshold,
                                                p.cooldown, p.probe_ttl};
    for (int i = 0; i < n; i++)
        args[5 + i] = models[i];
    struct bchoose *c = imgq_xcalloc(1, sizeof *c);
    c->n = n;
    c->cb = cb;
    c->arg = arg;
    if (worker_script(w, IMGQ_SCRIPT_BREAKER, 5 + n, args, on_choose, c) == 0)
        return 0;
    /* Redis is away: the job's own model, answered from the loop like any other answer. */
    snprintf(c->why, sizeof c->why, "breaker not consulted: Redis unavailable");
    uv_timer_init(w->loop, &c->timer);
    c->timer.data = c;
    uv_timer_start(&c->timer, choose_deferred, 0, 0);
    return 0;
}

/* report --------------------------------------------------------------------------------- */

static void on_report(struct worker *w, redisReply *r, void *arg)
{
    (void)w;
    char *model = arg;
    if (r && r->type == REDIS_REPLY_STRING && strcmp(r->str, "closed") != 0)
        imgq_log(IMGQ_LOG_DEBUG, "breaker", "%s: %s", model, r->str);
    free(model);
}

void breaker_report(struct worker *w, const char *model, bool ok, const char *cls, bool hinted,
                    const char *token)
{
    if (!w || !model || !*model)
        return;
    struct bparams p;
    params(w, &p);
    const char *args[] = {"report",           token ? token : "", p.threshold,
                          p.cooldown,         p.probe_ttl,        model,
                          ok ? "ok" : "fail", cls ? cls : "",     hinted ? "hinted" : ""};
    char *m = imgq_xstrdup(model);
    if (worker_script(w, IMGQ_SCRIPT_BREAKER, (int)(sizeof args / sizeof args[0]), args, on_report,
                      m) != 0) {
        imgq_log(IMGQ_LOG_DEBUG, "breaker", "%s: report (%s) dropped: Redis unavailable", model,
                 ok    ? "ok"
                 : cls ? cls
                       : "fail");
        free(m);
    }
}

/* rates ---------------------------------------------------------------------------------- */

struct brates {
    int n;
    const char *models[BREAKER_MAX_MODELS];
    breaker_rates_cb cb;
    void *arg;
};

static void on_rates(struct worker *w, redisReply *r, void *arg)
{
    (void)w;
    struct brates *b = arg;
    struct imgq_model_stats stats[BREAKER_MAX_MODELS];
    bool ok = r && r->type == REDIS_REPLY_ARRAY && r->elements == (size_t)(2 * b->n);
    for (int i = 0; ok && i < b->n; i++) {
        if (r->element[2 * i]->type != REDIS_REPLY_INTEGER ||
            r->element[2 * i + 1]->type != REDIS_REPLY_INTEGER) {
            ok = false;
            break;
        }
        stats[i] = (struct imgq_model_stats){b->models[i], r->element[2 * i]->integer,
                                             r->element[2 * i + 1]->integer, false};
    }
    b->cb(b->arg, ok ? stats : NULL);
    free(b);
}

int breaker_rates(struct worker *w, const char *const *models, int n, breaker_rates_cb cb,
                  void *arg)
{
    if (!w || !models || !cb || n < 1 || n > BREAKER_MAX_MODELS)
        return IMGQ_EINVAL;
    const char *args[5 + BREAKER_MAX_MODELS] = {"rates", "", "", "", ""};
    struct brates *b = imgq_xcalloc(1, sizeof *b);
    for (int i = 0; i < n; i++) {
        if (!models[i] || !*models[i]) {
            free(b);
            return IMGQ_EINVAL;
        }
        args[5 + i] = b->models[i] = models[i];
    }
    b->n = n;
    b->cb = cb;
    b->arg = arg;
    if (worker_script(w, IMGQ_SCRIPT_BREAKER, 5 + n, args, on_rates, b) == 0)
        return 0;
    free(b);
    return IMGQ_EREDIS;
}
