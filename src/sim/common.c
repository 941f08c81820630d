/*
 * common.c - what every provider endpoint of imgq-sim shares: prompt triggers, the outcome
 * draw from the configured rates, the per-endpoint --rpm window, generations held open on a uv
 * timer for their latency, text buffers and token counts.
 *
 * An endpoint parses and validates its request in its own wire shape, then asks
 * sim_decide_outcome() what happens; a rate limit is answered at once (a rate limiter does not
 * generate), everything else goes through sim_call_hold() so thousands of requests can wait out
 * their latency without threads.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "imgq/alloc.h"
#include "sim.h"

#define NVARIANTS 8 /* pictures per size: enough to look varied, few enough to cache */

/* ---- Text ----------------------------------------------------------------------------------- */

void sim_buf_add(struct sim_buf *b, const char *s, size_t n)
{
    if (b->cap - b->len < n + 1) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap - b->len < n + 1)
            cap *= 2;
        b->p = imgq_xrealloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void sim_buf_printf(struct sim_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    if (!s)
        s = imgq_xstrdup(""); /* vasprintf fails only for lack of memory */
    sim_buf_add(b, s, strlen(s));
    free(s);
}

uint32_t sim_fnv1a(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

size_t sim_utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        if (((uint8_t)*s & 0xc0) != 0x80)
            n++;
    return n;
}

int64_t sim_text_tokens(size_t chars)
{
    int64_t t = (int64_t)((chars + 3) / 4);
    return t < 1 ? 1 : t;
}

uint32_t sim_picture_variant(uint32_t prompt_hash, uint32_t index)
{
    return (prompt_hash + index) % NVARIANTS;
}

/* ---- Spoilt usages -------------------------------------------------------------------------- */

static const char *const bad_usage_names[] = {
    "good", "empty", "string", "negative", "fractional", "huge", "overflow", "zero", "max"};

int sim_bad_usage_parse(const char *s)
{
    for (size_t i = 1; i < sizeof bad_usage_names / sizeof bad_usage_names[0]; i++)
        if (strcmp(s, bad_usage_names[i]) == 0)
            return (int)i;
    return -1;
}

const char *sim_usage_text(enum sim_bad_usage k, int64_t v, char *buf, size_t len)
{
    switch (k) {
    case SIM_USAGE_STRING:
        snprintf(buf, len, "\"%" PRId64 "\"", v);
        break;
    case SIM_USAGE_NEGATIVE:
        snprintf(buf, len, "%" PRId64, v > 0 ? -v : -1);
        break;
    case SIM_USAGE_FRACTIONAL:
        snprintf(buf, len, "%" PRId64 ".5", v);
        break;
    case SIM_USAGE_HUGE:
        snprintf(buf, len, "%" PRId64, INT64_MAX);
        break;
    case SIM_USAGE_OVERFLOW:
        snprintf(buf, len, "99999999999999999999");
        break;
    case SIM_USAGE_ZERO:
        snprintf(buf, len, "0");
        break;
    case SIM_USAGE_MAX:
        snprintf(buf, len, "%" PRId64, IMGQ_USAGE_MAX);
        break;
    default:
        snprintf(buf, len, "%" PRId64, v);
    }
    return buf;
}

json_t *sim_usage_json(enum sim_bad_usage k, int64_t v)
{
    char text[32];
    if (k == SIM_USAGE_OVERFLOW) /* jansson holds no such integer */
        k = SIM_USAGE_HUGE;
    json_t *j = json_loads(sim_usage_text(k, v, text, sizeof text), JSON_DECODE_ANY, NULL);
    if (!j)
        abort(); /* our own text: only out of memory */
    return j;
}

/* ---- Outcome -------------------------------------------------------------------------------- */

/* Scan the prompt for [sim:...] tags, in order; the first failure tag wins. */
void sim_scan_triggers(struct sim *s, const char *prompt, struct sim_triggers *t)
{
    t->forced = SIM_OK;
    t->prompt_blocked = false;
    t->no_usage = false;
    t->bad_usage = (enum sim_bad_usage)s->cfg.bad_usage;
    t->task_fail = false;
    t->poll_503 = false;
    t->latency_ms = -1;
    t->token_pct = 100;
    t->refs_expected = -1;
    for (const char *p = strstr(prompt, "[sim:"); p; p = strstr(p + 1, "[sim:")) {
        const char *tag = p + 5;
        const char *end = strchr(tag, ']');
        if (!end || end - tag > 200)
            continue;
        char buf[208];
        memcpy(buf, tag, (size_t)(end - tag));
        buf[end - tag] = '\0';
        enum sim_outcome o = SIM_OK;
        bool blocked = false;
        if (strcmp(buf, "429") == 0) {
            o = SIM_RATE_LIMITED;
        } else if (strcmp(buf, "500") == 0) {
            o = SIM_SERVER_ERROR;
        } else if (strcmp(buf, "moderation") == 0) {
            o = SIM_MODERATION;
        } else if (strcmp(buf, "prompt-blocked") == 0) {
            o = SIM_MODERATION;
            blocked = true;
        } else if (strcmp(buf, "no-usage") == 0) {
            t->no_usage = true;
        } else if (strncmp(buf, "bad-usage:", 10) == 0) {
            int k = sim_bad_usage_parse(buf + 10);
            if (k > 0)
                t->bad_usage = (enum sim_bad_usage)k;
        } else if (strcmp(buf, "task-fail") == 0) {
            t->task_fail = true;
        } else if (strcmp(buf, "poll-503") == 0) {
            t->poll_503 = true;
        } else if (strncmp(buf, "fail-once:", 10) == 0) {
            if (!sim_seen_once(s, buf + 10))
                o = SIM_SERVER_ERROR;
        } else if (strncmp(buf, "tokens:", 7) == 0) {
            /* The provider's token table moved: output tokens at PCT% of the catalog's. */
            char *e;
            long pct = strtol(buf + 7, &e, 10);
            if (!*e && pct >= 1 && pct <= 100000)
                t->token_pct = (int)pct;
        } else if (strncmp(buf, "refs:", 5) == 0) {
            char *e;
            long n = strtol(buf + 5, &e, 10);
            if (e != buf + 5 && !*e && n >= 0 && n <= 1000)
                t->refs_expected = (int)n;
        } else if (strncmp(buf, "latency:", 8) == 0) {
            char *e;
            long long ms = strtoll(buf + 8, &e, 10);
            if (!*e && ms >= 0 && ms <= 86400000)
                t->latency_ms = ms;
        }
        if (t->forced == SIM_OK && o != SIM_OK) {
            t->forced = o;
            t->prompt_blocked = blocked;
        }
    }
}

bool sim_window_count(struct sim *s, enum sim_endpoint ep)
{
    struct sim_window *w = &s->window[ep];
    uint64_t now = sim_now_ms(s);
    if (now - w->start_ms >= 60000) {
        w->start_ms = now;
        w->requests = 0;
    }
    w->requests++;
    return s->cfg.rpm > 0 && w->requests > s->cfg.rpm;
}

enum sim_outcome sim_decide_outcome(struct sim *s, enum sim_endpoint ep,
                                    const struct sim_triggers *t)
{
    bool over_rpm = sim_window_count(s, ep);
    double u = sim_random_unit(s), u2 = sim_random_unit(s);
    enum sim_outcome o = t->forced;
    if (o == SIM_OK) {
        if (over_rpm || u < s->cfg.fail_429)
            o = SIM_RATE_LIMITED;
        else if (u < s->cfg.fail_429 + s->cfg.fail_500)
            o = SIM_SERVER_ERROR;
        else if (u < s->cfg.fail_429 + s->cfg.fail_500 + s->cfg.fail_moderation)
            o = SIM_MODERATION;
        else if (t->no_usage || u2 < s->cfg.no_usage)
            o = SIM_OK_NO_USAGE;
    }
    return o;
}

/* ---- Held generations ----------------------------------------------------------------------- */

static void call_closed(uv_handle_t *h)
{
    struct sim_call *c = h->data;
    c->destroy(c);
}

static void call_unlink(struct sim_call *c)
{
    struct sim *s = c->sim;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->in_flight--;
}

static void call_finish(struct sim_call *c)
{
    call_unlink(c);
    if (imgq_httpd_request_aborted(c->req)) {
        /* The generation ran to its end; only its answer has nobody to go to. */
        if (c->outcome == SIM_OK || c->outcome == SIM_OK_NO_USAGE) {
            c->sim->abandoned++;
            if (c->bill_abandoned)
                c->bill_abandoned(c);
        }
        imgq_httpd_respond(c->req, 499, NULL, 0, NULL, 0); /* discarded: frees the request */
    } else
        c->answer(c);
    c->req = NULL;
    uv_close((uv_handle_t *)&c->timer, call_closed);
}

static void on_latency(uv_timer_t *t)
{
    call_finish(t->data);
}

uint64_t sim_latency(struct sim *s, int64_t latency_ms)
{
    uint64_t latency = s->cfg.latency_ms;
    if (s->cfg.latency_jitter_ms)
        latency += sim_random(s) % (s->cfg.latency_jitter_ms + 1);
    if (latency_ms >= 0)
        latency = (uint64_t)latency_ms;
    return latency;
}

void sim_call_hold(struct sim *s, struct sim_call *c, int64_t latency_ms)
{
    sim_call_hold_for(s, c, sim_latency(s, latency_ms));
}

void sim_call_hold_for(struct sim *s, struct sim_call *c, uint64_t latency)
{
    c->prev = NULL;
    c->next = s->calls;
    if (c->next)
        c->next->prev = c;
    s->calls = c;
    if (++s->in_flight > s->max_in_flight)
        s->max_in_flight = s->in_flight;
    uv_timer_init(s->loop, &c->timer);
    c->timer.data = c;
    uv_timer_start(&c->timer, on_latency, latency, 0);
}

void sim_calls_abort_all(struct sim *s)
{
    while (s->calls) {
        struct sim_call *c = s->calls;
        uv_timer_stop(&c->timer);
        call_finish(c);
    }
}

/* ---- Requests ------------------------------------------------------------------------------- */

const char *sim_auth_key(imgq_httpd_request *req, const char *name, const char *scheme)
{
    const char *v = imgq_httpd_request_header(req, name);
    if (!v)
        return NULL;
    if (scheme) {
        size_t n = strlen(scheme);
        if (strncasecmp(v, scheme, n) != 0 || v[n] != ' ')
            return NULL;
        v += n;
    }
    while (*v == ' ')
        v++;
    return *v ? v : NULL;
}

json_t *sim_json_object_body(imgq_httpd_request *req, char *why, size_t whylen)
{
    size_t len;
    const char *body = imgq_httpd_request_body(req, &len);
    json_error_t jerr;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root && json_is_object(root))
        return root;
    snprintf(why, whylen, "%s", root ? "the body is not a JSON object" : jerr.text);
    json_decref(root);
    return NULL;
}

enum sim_outcome sim_outcome_of_status(int status)
{
    if (status < 400)
        return SIM_OK;
    if (status == 429)
        return SIM_RATE_LIMITED;
    if (status >= 500)
        return SIM_SERVER_ERROR;
    if (status == 401 || status == 403)
        return SIM_UNAUTHORIZED;
    if (status == 404)
        return SIM_NOT_FOUND;
    return SIM_INVALID_REQUEST;
}

/* ---- /sim/fail rules ------------------------------------------------------------------------ */

void sim_fail_set(struct sim *s, const char *model, int status, double rate)
{
    size_t i;
    for (i = 0; i < s->nfail_rules; i++)
        if (strcmp(s->fail_rules[i].model, model) == 0)
            break;
    if (rate <= 0) {
        if (i < s->nfail_rules) {
            free(s->fail_rules[i].model);
            s->fail_rules[i] = s->fail_rules[--s->nfail_rules];
        }
        return;
    }
    if (i == s->nfail_rules) {
        s->fail_rules = imgq_xrealloc(s->fail_rules, (s->nfail_rules + 1) * sizeof(*s->fail_rules));
        s->fail_rules[s->nfail_rules++].model = imgq_xstrdup(model);
    }
    s->fail_rules[i].status = status;
    s->fail_rules[i].rate = rate;
}

int sim_fail_status(struct sim *s, const char *model)
{
    if (!model)
        return 0;
    for (size_t i = 0; i < s->nfail_rules; i++) {
        const struct sim_fail_rule *r = &s->fail_rules[i];
        if (strcmp(r->model, model) == 0)
            return r->rate >= 1.0 || sim_random_unit(s) < r->rate ? r->status : 0;
    }
    return 0;
}

json_t *sim_fail_json(const struct sim *s)
{
    json_t *rules = json_array();
    for (size_t i = 0; i < s->nfail_rules; i++) {
        const struct sim_fail_rule *r = &s->fail_rules[i];
        json_array_append_new(rules, json_pack("{s:s, s:i, s:f}", "model", r->model, "status",
                                               r->status, "rate", r->rate));
    }
    return json_pack("{s:o}", "rules", rules);
}

void sim_fail_clear(struct sim *s)
{
    for (size_t i = 0; i < s->nfail_rules; i++)
        free(s->fail_rules[i].model);
    free(s->fail_rules);
    s->fail_rules = NULL;
    s->nfail_rules = 0;
}

/* ---- Reference images (their checks are in refs.c) ----------------------------------------- */

bool sim_refs_as_told(const struct sim_triggers *t, int64_t got, char *why, size_t whylen)
{
    if (t->refs_expected < 0 || got == t->refs_expected)
        return true;
    snprintf(why, whylen,
             "the prompt says the job has %d reference image(s) ([sim:refs:%d]) but the request "
             "carries %lld",
             t->refs_expected, t->refs_expected, (long long)got);
    return false;
}

void sim_refs_count(struct sim *s, enum sim_endpoint ep, int64_t n, uint64_t bytes)
{
    if (n <= 0)
        return;
    s->ref_requests[ep]++;
    s->ref_images[ep] += (uint64_t)n;
    s->ref_bytes[ep] += bytes;
}
