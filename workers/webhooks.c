/*
 * webhooks.c - webhook deliveries from the outbox (see webhooks.h): claim with a lease, SSRF
 * check on the thread pool, signed POST to the checked address, outcome recorded by
 * webhook.lua.  Redis decides what is due and what happens next; this file only sends.
 */
#include "webhooks.h"

#include <ctype.h>
#include <curl/curl.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "imgq/alloc.h"
#include "imgq/log.h"
#include "imgq/retry_hint.h"
#include "imgq/ssrf.h"
#include "imgq/webhook.h"
#include "worker.h"

#define POLL_MS 1000             /* look at the outbox at least this often */
#define CONNECT_TIMEOUT_MS 10000 /* within WEBHOOKS_TIMEOUT_MS */
#define MAX_RESPONSE (64 * 1024) /* a receiver's answer is read for its status, not kept */
#define DETAIL_MAX 160           /* what of a refusal's body goes into the attempt log */

/* Secrets for one set of URLs: whsec_ strings, each checked by webhooks_configure(). */
struct secrets {
    char **v;
    size_t n;
};

struct endpoint {
    char *prefix;
    struct secrets s;
};

/* Deliveries in flight to one URL host (the authority, as webhook.lua's host_of writes it). */
struct host_slot {
    char *host;
    int n;
};

struct delivery {
    struct webhooks *wh;
    struct delivery *prev, *next;
    char *id, *url, *host;
    char *body; /* the exact bytes to send and sign */
    size_t body_len;
    char token[96]; /* the claim's lease token */
    uv_work_t guard;
    int guard_rc;
    char pin[IMGQ_SSRF_PIN_MAX];
    char why[256];
};

struct webhooks {
    struct worker *w;
    struct secrets global; /* IMGQ_WEBHOOK_SECRET */
    struct endpoint *eps;  /* webhooks.endpoints of the config file, in order */
    size_t neps;
    char wake[256]; /* the outbox's wake channel */
    uv_timer_t poll;
    bool started, stopped;
    bool claiming, claim_again;
    int claim_asked;
    char claim_token[96];
    unsigned long claims;
    /* What the last claim saw (queue clock, ms): -1 next_due when the outbox is empty. */
    bool known;
    long long seen_now, next_due;
    struct delivery *list;
    int inflight;
    struct host_slot *hosts;
    size_t nhosts;
    bool warned_unsigned, warned_nosecret;
    unsigned long delivered, failed;
};

static bool has_secret(const struct webhooks *wh)
{
    return wh && (wh->global.n > 0 || wh->neps > 0);
}

static void secrets_clear(struct secrets *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    s->v = NULL;
    s->n = 0;
}

/* "whsec_a whsec_b,whsec_c" -> checked secrets; err names 'var' and the secret's place. */
static int secrets_parse(const char *var, const char *text, struct secrets *out, char *err,
                         size_t errlen)
{
    char *copy = imgq_xstrdup(text), *save = NULL;
    int rc = 0;
    size_t k = 0;
    for (char *t = strtok_r(copy, " ,\t\r\n", &save); t; t = strtok_r(NULL, " ,\t\r\n", &save)) {
        uint8_t *key;
        size_t len;
        k++;
        int pr = imgq_webhook_secret_parse(t, &key, &len);
        if (pr != 0) {
            snprintf(err, errlen, "%s: secret %zu: %s", var, k, imgq_webhook_secret_strerror(pr));
            rc = IMGQ_EINVAL;
            break;
        }
        free(key);
        out->v = imgq_xrealloc(out->v, (out->n + 1) * sizeof *out->v);
        out->v[out->n++] = imgq_xstrdup(t);
    }
    free(copy);
    if (rc == 0 && out->n == 0) {
        snprintf(err, errlen, "%s holds no whsec_ secret", var);
        rc = IMGQ_EINVAL;
    }
    return rc;
}

int webhooks_configure(struct worker *w, const struct imgq_config *cfg, char *err, size_t errlen)
{
    struct webhooks *wh = imgq_xcalloc(1, sizeof *wh);
    w->wh = wh;
    wh->w = w;
    wh->next_due = -1;
    snprintf(wh->wake, sizeof wh->wake, "%swhwake", w->keys.base);
    if (cfg->webhook_secret &&
        secrets_parse("IMGQ_WEBHOOK_SECRET", cfg->webhook_secret, &wh->global, err, errlen) != 0)
        return IMGQ_EINVAL;
    if (cfg->nwebhook_endpoints)
        wh->eps = imgq_xcalloc(cfg->nwebhook_endpoints, sizeof *wh->eps);
    for (size_t i = 0; i < cfg->nwebhook_endpoints; i++) {
        const struct imgq_config_webhook_endpoint *e = &cfg->webhook_endpoints[i];
        if (!e->secrets) {
            snprintf(err, errlen,
                     "%s is not set (the secrets of webhooks.endpoints[%zu], URLs starting "
                     "with %s)",
                     e->secret_env, i, e->url_prefix);
            return IMGQ_EINVAL;
        }
        wh->eps[i].prefix = imgq_xstrdup(e->url_prefix);
        wh->neps = i + 1;
        if (secrets_parse(e->secret_env, e->secrets, &wh->eps[i].s, err, errlen) != 0)
            return IMGQ_EINVAL;
    }
    return 0;
}

/* The secrets that sign deliveries to url: its endpoint's, else the global ones; NULL if none. */
static const struct secrets *secrets_for(const struct webhooks *wh, const char *url)
{
    for (size_t i = 0; i < wh->neps; i++)
        if (strncmp(url, wh->eps[i].prefix, strlen(wh->eps[i].prefix)) == 0)
            return &wh->eps[i].s;
    return wh->global.n ? &wh->global : NULL;
}

int webhooks_sign_headers(struct worker *w, const char *url, const char *msg_id, const void *body,
                          size_t len, imgq_http_request *req)
{
    const struct secrets *s = w->wh ? secrets_for(w->wh, url) : NULL;
    if (!s)
        return IMGQ_ECONFIG;
    long long ts = (long long)time(NULL); /* wall time: the receiver checks it against its own */
    char *sig = imgq_webhook_sign((const char *const *)s->v, s->n, msg_id, ts, body, len);
    if (!sig)
        return IMGQ_EINVAL;
    char tsbuf[24];
    snprintf(tsbuf, sizeof tsbuf, "%lld", ts);
    /* The id and signature were checked by imgq_webhook_sign: no header can be refused. */
    int rc = imgq_http_request_add_header(req, "webhook-id", msg_id);
    if (rc == 0)
        rc = imgq_http_request_add_header(req, "webhook-timestamp", tsbuf);
    if (rc == 0)
        rc = imgq_http_request_add_header(req, "webhook-signature", sig);
    if (rc == 0)
        rc = imgq_http_request_add_header(req, "content-type", "application/json");
    free(sig);
    return rc;
}

/* Hosts ----------------------------------------------------------------------------------- */

static struct host_slot *host_find(struct webhooks *wh, const char *host)
{
    for (size_t i = 0; i < wh->nhosts; i++)
        if (strcmp(wh->hosts[i].host, host) == 0)
            return &wh->hosts[i];
    return NULL;
}

static void host_add(struct webhooks *wh, const char *host)
{
    struct host_slot *h = host_find(wh, host);
    if (!h) {
        wh->hosts = imgq_xrealloc(wh->hosts, (wh->nhosts + 1) * sizeof *wh->hosts);
        h = &wh->hosts[wh->nhosts++];
        h->host = imgq_xstrdup(host);
        h->n = 0;
    }
    h->n++;
}

static void host_remove(struct webhooks *wh, const char *host)
{
    struct host_slot *h = host_find(wh, host);
    if (h && --h->n == 0) {
        free(h->host);
        *h = wh->hosts[--wh->nhosts];
    }
}

/* Claiming --------------------------------------------------------------------------------- */

static void claim(struct webhooks *wh);

static void on_poll(uv_timer_t *t)
{
    claim(t->data);
}

static void arm(struct webhooks *wh, long long ms)
{
    if (wh->stopped)
        return;
    uv_timer_start(&wh->poll, on_poll, (uint64_t)(ms < 0 ? 0 : ms), 0);
}

static long long reply_int(const redisReply *r)
{
    return r->type == REDIS_REPLY_INTEGER  ? r->integer
           : r->type == REDIS_REPLY_STRING ? atoll(r->str)
                                           : -1;
}

static void delivery_start(struct webhooks *wh, redisReply **e, const char *token);

static void on_claim(struct worker *w, redisReply *r, void *arg)
{
    struct webhooks *wh = arg;
    char token[sizeof wh->claim_token];
    memcpy(token, wh->claim_token, sizeof token);
    wh->claiming = false;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 2) {
        arm(wh, POLL_MS); /* Redis went away or refused (logged): look again later */
        return;
    }
    wh->known = true;
    wh->seen_now = reply_int(r->element[0]);
    wh->next_due = reply_int(r->element[1]);
    size_t n = (r->elements - 2) / 5;
    for (size_t i = 0; i < n; i++) {
        redisReply **e = r->element + 2 + 5 * i;
        if (w->closing)
            break; /* nothing can be sent any more: their leases run out */
        delivery_start(wh, e, token);
    }
    if (wh->claim_again || (int)n >= wh->claim_asked) {
        wh->claim_again = false;
        arm(wh, 0); /* more may be due */
        return;
    }
    /* Next look: when the next message is due (a lease running out included), at most
     * POLL_MS from now; due but not claimed (its host is at the cap) waits for a slot. */
    long long wait = wh->next_due < 0 ? POLL_MS : wh->next_due - wh->seen_now;
    arm(wh, wait <= 0 || wait > POLL_MS ? POLL_MS : wait);
}

static void claim(struct webhooks *wh)
{
    struct worker *w = wh->w;
    if (wh->stopped || w->stopping || !has_secret(wh))
        return;
    if (wh->claiming) {
        wh->claim_again = true;
        return;
    }
    int room = WEBHOOKS_MAX_INFLIGHT - wh->inflight;
    if (room <= 0)
        return; /* a delivery that ends looks again */
    char count[16], lease[16], cap[16];
    snprintf(count, sizeof count, "%d", room);
    snprintf(lease, sizeof lease, "%d", WEBHOOKS_LEASE_MS);
    snprintf(cap, sizeof cap, "%d", WEBHOOKS_MAX_PER_HOST);
    snprintf(wh->claim_token, sizeof wh->claim_token, "%s.wh%lu", w->id, ++wh->claims);
    int nargs = 5 + 2 * (int)wh->nhosts;
    const char **args = imgq_xcalloc((size_t)nargs, sizeof *args);
    char(*counts)[16] = imgq_xcalloc(wh->nhosts + 1, sizeof *counts);
    args[0] = "claim";
    args[1] = count;
    args[2] = lease;
    args[3] = wh->claim_token;
    args[4] = cap;
    for (size_t i = 0; i < wh->nhosts; i++) {
        snprintf(counts[i], sizeof counts[i], "%d", wh->hosts[i].n);
        args[5 + 2 * i] = wh->hosts[i].host;
        args[6 + 2 * i] = counts[i];
    }
    if (worker_script(w, IMGQ_SCRIPT_WEBHOOK, nargs, args, on_claim, wh) == 0) {
        wh->claiming = true;
        wh->claim_asked = room;
    } else {
        arm(wh, POLL_MS); /* not connected */
    }
    free(counts);
    free(args);
}

static void on_wake(redisAsyncContext *c, void *r, void *priv)
{
    (void)c;
    if (r)
        claim(priv); /* subscribed (after a (re)connect), or a message was written */
}

static void on_outbox_size(redisAsyncContext *c, void *r, void *priv)
{
    struct webhooks *wh = priv;
    redisReply *reply = r;
    (void)c;
    if (!reply || reply->type != REDIS_REPLY_INTEGER || wh->warned_nosecret)
        return;
    wh->warned_nosecret = true;
    if (reply->integer > 0)
        imgq_log(IMGQ_LOG_WARN, "webhooks",
                 "%lld webhook messages wait in the outbox, but no secret is set "
                 "(IMGQ_WEBHOOK_SECRET): this worker delivers none; they stay pending for a "
                 "worker that has one",
                 reply->integer);
}

void webhooks_subscribe(struct worker *w)
{
    struct webhooks *wh = w->wh;
    if (!wh || wh->stopped)
        return;
    if (!has_secret(wh)) {
        if (!wh->warned_nosecret && w->ac)
            redisAsyncCommand(w->ac, on_outbox_size, wh, "ZCARD %swhdue", w->keys.base);
        return;
    }
    if (w->sub)
        redisAsyncCommand(w->sub, on_wake, wh, "SUBSCRIBE %s", wh->wake);
}

/* Deliveries -------------------------------------------------------------------------------- */

/* The delivery is over (recorded, or dropped to let its lease run out). */
static void delivery_end(struct delivery *d)
{
    struct webhooks *wh = d->wh;
    if (d->prev)
        d->prev->next = d->next;
    else
        wh->list = d->next;
    if (d->next)
        d->next->prev = d->prev;
    wh->inflight--;
    host_remove(wh, d->host);
    free(d->id);
    free(d->url);
    free(d->host);
    free(d->body);
    free(d);
    if (wh->w->stopping)
        worker_check_stopped(wh->w);
    else
        arm(wh, 0); /* a slot is free */
}

/* Record an attempt's outcome (webhook.lua result), re-sent until Redis answers it: a lost
 * "delivered" would send the message again.  Then end the delivery. */
static void record(struct delivery *d, const char *outcome, long status, uint64_t ms,
                   long long retry_after_ms, const char *detail)
{
    struct webhooks *wh = d->wh;
    char st[16], du[24], ra[24];
    snprintf(st, sizeof st, "%ld", status);
    snprintf(du, sizeof du, "%llu", (unsigned long long)ms);
    snprintf(ra, sizeof ra, "%lld", retry_after_ms);
    const char *args[8] = {"result", d->id, d->token, outcome, st, du, ra, detail};
    worker_script_reliable(wh->w, IMGQ_SCRIPT_WEBHOOK, 8, args);
    if (strcmp(outcome, "ok") == 0) {
        wh->delivered++;
        imgq_log(IMGQ_LOG_DEBUG, "webhooks", "%s delivered to %s (%ld, %llu ms)", d->id, d->url,
                 status, (unsigned long long)ms);
    } else {
        wh->failed++;
        /* Retries are routine; a worker without the URL's secret said so once already. */
        enum imgq_log_level level = strcmp(outcome, "retry") == 0      ? IMGQ_LOG_INFO
                                    : strcmp(outcome, "unsigned") == 0 ? IMGQ_LOG_DEBUG
                                                                       : IMGQ_LOG_WARN;
        imgq_log(level, "webhooks", "%s to %s: %s%s%s%s%s", d->id, d->url, outcome,
                 status ? " " : "", status ? st : "", *detail ? ": " : "", detail);
    }
    delivery_end(d);
}

/* retry-after as delay-seconds or an HTTP date, in ms from now, up to 24 h (retry_hint.h;
 * webhook.lua caps it there too); 0 if absent or unreadable. */
static long long retry_after_ms(const imgq_http_response *res)
{
    long v = imgq_retry_after_ms(imgq_http_response_header(res, "retry-after"),
                                 imgq_retry_hint_now_ms(), IMGQ_RETRY_HINT_CEILING_MS);
    return v > 0 ? v : 0;
}

/* A short, printable excerpt of a refusal's body for the attempt log. */
static void excerpt(const imgq_http_response *res, char *buf, size_t len)
{
    size_t k = 0;
    for (size_t i = 0; i < res->body_len && k + 1 < len && k < DETAIL_MAX; i++) {
        unsigned char c = res->body[i];
        buf[k++] = isprint(c) ? (char)c : ' ';
    }
    while (k > 0 && buf[k - 1] == ' ')
        k--;
    buf[k] = '\0';
}

static void on_response(const imgq_http_response *res, void *arg)
{
    struct delivery *d = arg;
    long st = res->status;
    char detail[DETAIL_MAX + 64] = "";
    if (res->err == IMGQ_ECANCELED) {
        delivery_end(d); /* the worker is closing: the lease runs out, another worker sends */
        return;
    }
    /* A body over the cap still has its status. */
    if (st > 0 && (res->err == 0 || res->err == IMGQ_ERANGE)) {
        if (st >= 200 && st < 300) {
            record(d, "ok", st, res->elapsed_ms, 0, "");
            return;
        }
        const char *abort_hdr = imgq_http_response_header(res, "webhook-delivery");
        const char *location = imgq_http_response_header(res, "location");
        if (st >= 300 && st < 400 && location)
            snprintf(detail, sizeof detail, "redirect to %.*s (not followed)", DETAIL_MAX,
                     location);
        else
            excerpt(res, detail, sizeof detail);
        if (st == 410) {
            record(d, "gone", st, res->elapsed_ms, 0, detail);
        } else if (abort_hdr && strcasecmp(abort_hdr, "abort-message") == 0) {
            record(d, "abort", st, res->elapsed_ms, 0, "the receiver aborted the message");
        } else {
            bool throttle = st == 429 || st == 502 || st == 503 || st == 504;
            record(d, "retry", st, res->elapsed_ms, throttle ? retry_after_ms(res) : 0, detail);
        }
        return;
    }
    if (res->timed_out)
        snprintf(detail, sizeof detail, "no response within %d s", WEBHOOKS_TIMEOUT_MS / 1000);
    else
        snprintf(detail, sizeof detail, "%s", res->error);
    record(d, "retry", 0, res->elapsed_ms, 0, detail);
}

static void guard_work(uv_work_t *req)
{
    struct delivery *d = req->data;
    d->guard_rc = worker_ssrf_check(d->wh->w, d->url, d->pin, sizeof d->pin, d->why, sizeof d->why);
}

static void guard_done(uv_work_t *req, int status)
{
    struct delivery *d = req->data;
    struct webhooks *wh = d->wh;
    struct worker *w = wh->w;
    (void)status;
    if (w->closing || !w->http) {
        delivery_end(d);
        return;
    }
    if (d->guard_rc != 0) {
        char why[300];
        snprintf(why, sizeof why, "refused by the SSRF guard: %s", d->why);
        /* A name that does not resolve (yet) may later; an address that is not allowed, or a
         * malformed URL, will not change: failed now, replayable once the allowlist is. */
        bool later = d->guard_rc == IMGQ_EAGAIN || d->guard_rc == IMGQ_ENOTFOUND;
        record(d, later ? "retry" : "refused", 0, 0, 0, why);
        return;
    }
    imgq_http_request *hr = imgq_http_request_new("POST", d->url);
    int rc = webhooks_sign_headers(w, d->url, d->id, d->body, d->body_len, hr);
    if (rc != 0) {
        imgq_http_request_free(hr);
        if (rc == IMGQ_ECONFIG) {
            if (!wh->warned_unsigned)
                imgq_log(IMGQ_LOG_WARN, "webhooks",
                         "no webhook secret for %s (IMGQ_WEBHOOK_SECRET, webhooks.endpoints): "
                         "its messages are left for a worker that has one",
                         d->url);
            wh->warned_unsigned = true;
            record(d, "unsigned", 0, 0, 0, "not sent: the worker has no secret for this URL");
        } else {
            record(d, "refused", 0, 0, 0, "not a valid webhook-id");
        }
        return;
    }
    imgq_http_request_set_body_ref(hr, d->body, d->body_len);
    imgq_http_request_set_timeouts(hr, WEBHOOKS_TIMEOUT_MS, CONNECT_TIMEOUT_MS);
    imgq_http_request_set_max_body(hr, MAX_RESPONSE);
    imgq_http_request_set_flags(hr, IMGQ_HTTP_NO_PROXY);
    imgq_http_request_add_connect_to(hr, d->pin);
    rc = imgq_http_submit(w->http, hr, on_response, d);
    if (rc != 0)
        record(d, "retry", 0, 0, 0, imgq_strerror(rc));
}

/* e: id, url, body, attempts, host of one claimed message. */
static void delivery_start(struct webhooks *wh, redisReply **e, const char *token)
{
    if (e[0]->type != REDIS_REPLY_STRING || e[1]->type != REDIS_REPLY_STRING ||
        e[2]->type != REDIS_REPLY_STRING || e[4]->type != REDIS_REPLY_STRING)
        return; /* not what webhook.lua writes; its lease runs out */
    struct delivery *d = imgq_xcalloc(1, sizeof *d);
    d->wh = wh;
    d->id = imgq_xstrndup(e[0]->str, e[0]->len);
    d->url = imgq_xstrndup(e[1]->str, e[1]->len);
    d->body = imgq_xmalloc(e[2]->len + 1);
    memcpy(d->body, e[2]->str, e[2]->len);
    d->body[e[2]->len] = '\0';
    d->body_len = e[2]->len;
    d->host = imgq_xstrndup(e[4]->str, e[4]->len);
    snprintf(d->token, sizeof d->token, "%s", token);
    d->next = wh->list;
    if (wh->list)
        wh->list->prev = d;
    wh->list = d;
    wh->inflight++;
    host_add(wh, d->host);
    /* The SSRF guard resolves the name: on the thread pool. */
    d->guard.data = d;
    if (uv_queue_work(wh->w->loop, &d->guard, guard_work, guard_done) != 0)
        record(d, "retry", 0, 0, 0, "cannot queue the SSRF check");
}

/* The loop ---------------------------------------------------------------------------------- */

void webhooks_start(struct worker *w)
{
    struct webhooks *wh = w->wh;
    if (!wh)
        return;
    uv_timer_init(w->loop, &wh->poll);
    wh->poll.data = wh;
    wh->started = true;
    if (has_secret(wh))
        imgq_log(IMGQ_LOG_INFO, "webhooks",
                 "delivering webhooks: %zu global secrets, %zu endpoints with their own; up to "
                 "%d at once, %d per host",
                 wh->global.n, wh->neps, WEBHOOKS_MAX_INFLIGHT, WEBHOOKS_MAX_PER_HOST);
}

static void on_poll_closed(uv_handle_t *h)
{
    (void)h;
}

void webhooks_stop(struct worker *w)
{
    struct webhooks *wh = w->wh;
    if (!wh || wh->stopped)
        return;
    wh->stopped = true;
    if (wh->started)
        uv_close((uv_handle_t *)&wh->poll, on_poll_closed);
    if (has_secret(wh))
        imgq_log(IMGQ_LOG_INFO, "webhooks", "%lu delivered, %lu attempts failed, %d in flight",
                 wh->delivered, wh->failed, wh->inflight);
}

void webhooks_free(struct worker *w)
{
    struct webhooks *wh = w->wh;
    if (!wh)
        return;
    secrets_clear(&wh->global);
    for (size_t i = 0; i < wh->neps; i++) {
        free(wh->eps[i].prefix);
        secrets_clear(&wh->eps[i].s);
    }
    free(wh->eps);
    for (size_t i = 0; i < wh->nhosts; i++)
        free(wh->hosts[i].host);
    free(wh->hosts);
    free(wh);
    w->wh = NULL;
}

int webhooks_in_flight(const struct worker *w)
{
    return w->wh ? w->wh->inflight : 0;
}

bool webhooks_busy(const struct worker *w)
{
    const struct webhooks *wh = w->wh;
    if (!has_secret(wh))
        return false;
    if (wh->inflight > 0 || wh->claiming || !wh->known)
        return true;
    return wh->next_due >= 0 && wh->next_due <= wh->seen_now + WEBHOOKS_LEASE_MS;
}
