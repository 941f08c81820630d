/*
 * limits.c - provider account limits, the worker's side (see limits.h; Redis's side is
 * src/lua/rate.lua).
 */
#include "limits.h"

#include <ctype.h>
#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imgq/log.h"
#include "worker.h"

#define POLL_MS 1000     /* longest wait between asks, and between sweeps of unwanted calls */
#define SLOT_POLL_MS 100 /* under a concurrency limit: other workers free slots at any time */
#define REDIS_AWAY_MS 1000
#define SLOT_MARGIN_MAX_MS 10000

/* Configuration -------------------------------------------------------------------------- */

static int bad(char *err, size_t errlen, const char *origin, const char *arg, const char *fmt,
               const char *what)
{
    char reason[256];
    snprintf(reason, sizeof reason, fmt, what);
    snprintf(err, errlen, "%s: '%s': %s", origin, arg, reason);
    return -1;
}

static bool parse_count(const char *s, size_t len, int64_t max, int64_t *out)
{
    if (len == 0 || len > 18)
        return false;
    int64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)s[i]))
            return false;
        v = v * 10 + (s[i] - '0');
    }
    if (v < 1 || v > max)
        return false;
    *out = v;
    return true;
}

int limits_parse(const char *origin, const char *arg, const char *provider, const imgq_catalog *cat,
                 struct limits_spec *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    const char *spec = arg;
    if (!provider) {
        const char *eq = strchr(arg, '=');
        if (!eq || eq == arg)
            return bad(err, errlen, origin, arg, "%s",
                       "expected PROVIDER=SPEC (a preset, a number of images, or "
                       "images=N,tokens=N,concurrent=N)");
        if ((size_t)(eq - arg) >= sizeof out->provider)
            return bad(err, errlen, origin, arg, "%s", "provider name too long");
        snprintf(out->provider, sizeof out->provider, "%.*s", (int)(eq - arg), arg);
        spec = eq + 1;
    } else {
        if (!*provider || strlen(provider) >= sizeof out->provider)
            return bad(err, errlen, origin, arg, "%s", "empty or too long provider name");
        snprintf(out->provider, sizeof out->provider, "%s", provider);
    }
    if (!*spec)
        return bad(err, errlen, origin, arg, "%s", "empty limit");
    for (const char *p = spec; *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        char item[64];
        snprintf(item, sizeof item, "%.*s", (int)(len < 63 ? len : 63), p);
        if (len == 0)
            return bad(err, errlen, origin, arg, "%s", "empty item in the list");
        int64_t v;
        if (eq) {
            size_t klen = (size_t)(eq - p);
            const char *val = eq + 1;
            size_t vlen = len - klen - 1;
            char key[32];
            snprintf(key, sizeof key, "%.*s", (int)(klen < 31 ? klen : 31), p);
            if (strcmp(key, "images") == 0) {
                if (!parse_count(val, vlen, 1000000, &v))
                    return bad(err, errlen, origin, arg, "%s must be a positive integer", key);
                out->images = (int)v;
            } else if (strcmp(key, "tokens") == 0) {
                if (!parse_count(val, vlen, INT64_C(1000000000000), &v))
                    return bad(err, errlen, origin, arg, "%s must be a positive integer", key);
                out->tokens = v;
            } else if (strcmp(key, "concurrent") == 0) {
                if (!parse_count(val, vlen, 1000000, &v))
                    return bad(err, errlen, origin, arg, "%s must be a positive integer", key);
                out->concurrent = (int)v;
            } else {
                return bad(err, errlen, origin, arg,
                           "unknown limit '%s' (images, tokens or concurrent)", key);
            }
        } else if (isdigit((unsigned char)*p)) {
            if (!parse_count(p, len, 1000000, &v))
                return bad(err, errlen, origin, arg,
                           "'%s': images per window must be a positive integer", item);
            out->images = (int)v;
        } else {
            int images = 0, concurrent = 0;
            int64_t tokens = 0;
            if (!cat || len >= sizeof item ||
                imgq_catalog_rate_preset_get(cat, item, &images, &tokens, &concurrent) != 0)
                return bad(err, errlen, origin, arg,
                           "'%s' is not a preset of the catalog's rate_limit_presets", item);
            out->images = images;
            out->tokens = tokens;
            out->concurrent = concurrent;
        }
        p += len;
        if (*p == ',')
            p++;
        if (end && !*p)
            return bad(err, errlen, origin, arg, "%s", "empty item in the list");
    }
    return 0;
}

int limits_table_set(struct limits_spec *tab, int *n, const struct limits_spec *s)
{
    for (int i = 0; i < *n; i++)
        if (strcmp(tab[i].provider, s->provider) == 0) {
            tab[i] = *s;
            return 0;
        }
    if (*n >= LIMITS_MAX)
        return -1;
    tab[(*n)++] = *s;
    return 0;
}

int limits_parse_list(const char *origin, const char *list, const imgq_catalog *cat,
                      struct limits_spec *tab, int *n, char *err, size_t errlen)
{
    char *copy = strdup(list), *save = NULL;
    int rc = 0;
    for (char *tok = strtok_r(copy, ";", &save); tok && rc == 0; tok = strtok_r(NULL, ";", &save)) {
        while (isspace((unsigned char)*tok))
            tok++;
        if (!*tok)
            continue;
        struct limits_spec s;
        rc = limits_parse(origin, tok, NULL, cat, &s, err, errlen);
        if (rc == 0 && limits_table_set(tab, n, &s) != 0)
            rc = bad(err, errlen, origin, tok, "more than %s providers", "8");
    }
    free(copy);
    return rc;
}

int limits_parse_config_file(const char *path, const imgq_catalog *cat, struct limits_spec *tab,
                             int *n, char *err, size_t errlen)
{
    if (!path || !*path)
        return 0;
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) /* imgq_config_load has read it already: it reported any error */
        return 0;
    json_t *rl = json_object_get(root, "rate_limits");
    int rc = 0;
    if (rl && !json_is_object(rl)) {
        snprintf(err, errlen, "%s: 'rate_limits' must be an object of provider: spec", path);
        rc = -1;
    }
    const char *prov;
    json_t *v;
    char origin[512];
    json_object_foreach(rl, prov, v)
    {
        if (rc)
            break;
        snprintf(origin, sizeof origin, "%s: rate_limits.%s", path, prov);
        char num[32];
        const char *spec = json_string_value(v);
        if (json_is_integer(v)) {
            snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
            spec = num;
        }
        if (!spec) {
            snprintf(err, errlen,
                     "%s: expected a string such as \"openai-tier-2\" or "
                     "\"images=20,tokens=250000,concurrent=8\"",
                     origin);
            rc = -1;
            break;
        }
        struct limits_spec s;
        rc = limits_parse(origin, spec, prov, cat, &s, err, errlen);
        if (rc == 0 && limits_table_set(tab, n, &s) != 0)
            rc = bad(err, errlen, origin, spec, "more than %s providers", "8");
    }
    json_decref(root);
    return rc;
}

void limits_describe(const struct limits_spec *s, char *buf, size_t len)
{
    char im[24] = "-", tk[24] = "-", cc[24] = "-";
    if (s->images)
        snprintf(im, sizeof im, "%d", s->images);
    if (s->tokens)
        snprintf(tk, sizeof tk, "%" PRId64, s->tokens);
    if (s->concurrent)
        snprintf(cc, sizeof cc, "%d", s->concurrent);
    snprintf(buf, len, "images=%s tokens=%s concurrent=%s", im, tk, cc);
}

const char *limits_status_name(enum limits_status st)
{
    switch (st) {
    case LIMITS_GO:
        return "go";
    case LIMITS_TOO_MANY_IMAGES:
        return "images alone over the images limit";
    case LIMITS_TOO_MANY_TOKENS:
        return "tokens alone over the tokens limit";
    case LIMITS_CANCELLED:
        return "cancelled";
    }
    return "?";
}

/* Runtime ----------------------------------------------------------------------------------- */

static void service(struct limits_provider *lp);

static struct limits_provider *find(const struct worker *w, const char *provider)
{
    struct limits *L = (struct limits *)&w->limits;
    for (int i = 0; provider && i < L->n; i++)
        if (strcmp(L->p[i].spec->provider, provider) == 0)
            return &L->p[i];
    return NULL;
}

void limits_init(struct worker *w)
{
    struct limits *L = &w->limits;
    memset(L, 0, sizeof *L);
    long t = w->opt.provider_timeout_ms > 0 ? w->opt.provider_timeout_ms : 300000;
    L->slot_ttl_ms = t + (t < SLOT_MARGIN_MAX_MS ? t : SLOT_MARGIN_MAX_MS);
    for (int i = 0; i < w->opt.nrate && i < LIMITS_MAX; i++) {
        const struct limits_spec *s = &w->opt.rate[i];
        if (!s->images && !s->tokens && !s->concurrent)
            continue;
        struct limits_provider *lp = &L->p[L->n++];
        lp->w = w;
        lp->spec = s;
        char d[96];
        limits_describe(s, d, sizeof d);
        imgq_log(IMGQ_LOG_INFO, "limits", "%s: %s (images and tokens per %d ms window)%s",
                 s->provider, d, w->opt.rate_window_ms,
                 s->concurrent ? "; concurrency slots expire if never released" : "");
    }
}

bool limits_apply(const struct worker *w, const char *provider)
{
    return find(w, provider) != NULL;
}

const struct limits_spec *limits_spec(const struct worker *w, const char *provider)
{
    const struct limits_provider *lp = find(w, provider);
    return lp ? lp->spec : NULL;
}

static void on_timer(uv_timer_t *t)
{
    service(t->data);
}

static void arm(struct limits_provider *lp, long long ms)
{
    long long cap = lp->spec->concurrent ? SLOT_POLL_MS : POLL_MS;
    if (ms > cap)
        ms = cap;
    if (ms < 1)
        ms = 1;
    if (!lp->timer_init) {
        uv_timer_init(lp->w->loop, &lp->timer);
        lp->timer.data = lp;
        lp->timer_init = true;
    }
    uv_timer_start(&lp->timer, on_timer, (uint64_t)ms, 0);
}

static struct limits_wait *pop_head(struct limits_provider *lp)
{
    struct limits_wait *lw = lp->head;
    lp->head = lw->next;
    if (!lp->head)
        lp->tail = NULL;
    lw->next = NULL;
    lw->queued = false;
    return lw;
}

static void answer(struct limits_wait *lw, enum limits_status st)
{
    /* The callback may free lw (with its call): nothing touches it after. */
    limits_cb cb = lw->cb;
    void *arg = lw->arg;
    cb(st, arg);
}

/* Cancel every queued call that is no longer wanted (except a head being asked about). */
static void sweep(struct limits_provider *lp, bool all)
{
    struct limits_wait *gone = NULL, **tail = &gone, *keep = NULL, **ktail = &keep, *last = NULL;
    for (struct limits_wait *lw = lp->head, *next; lw; lw = next) {
        next = lw->next;
        lw->next = NULL;
        bool asked = lp->busy && lw == lp->head;
        if (!asked && (all || (lw->wanted && !lw->wanted(lw->arg)))) {
            lw->queued = false;
            *tail = lw;
            tail = &lw->next;
        } else {
            *ktail = lw;
            ktail = &lw->next;
            last = lw;
        }
    }
    lp->head = keep;
    lp->tail = last;
    /* Each cancelled call holds an operation of its job, so every one of them is still alive
     * until its own callback. */
    for (struct limits_wait *lw = gone, *next; lw; lw = next) {
        next = lw->next;
        lw->next = NULL;
        answer(lw, LIMITS_CANCELLED);
    }
}

static void entry_args(const struct limits_provider *lp, const struct limits_wait *lw,
                       char bufs[7][24])
{
    struct worker *w = lp->w;
    /* The provider counts arrivals, which lag the room taken here by the time a request takes
     * to leave (a busy loop, a slow connect): the window is held a little longer than the
     * provider's (2%, at least 100 ms) so that two requests a window apart here can never
     * land in one window there. */
    int margin = w->opt.rate_window_ms / 50 > 100 ? w->opt.rate_window_ms / 50 : 100;
    snprintf(bufs[0], 24, "%d", w->opt.rate_window_ms + margin);
    snprintf(bufs[1], 24, "%d", lp->spec->images);
    snprintf(bufs[2], 24, "%d", lp->spec->images ? lw->images : 0);
    snprintf(bufs[3], 24, "%" PRId64, lp->spec->tokens);
    snprintf(bufs[4], 24, "%" PRId64, lp->spec->tokens ? lw->tokens : 0);
    snprintf(bufs[5], 24, "%d", lp->spec->concurrent);
    snprintf(bufs[6], 24, "%ld", w->limits.slot_ttl_ms);
}

static void on_release_reply(struct worker *w, redisReply *r, void *arg)
{
    (void)w;
    (void)r;
    (void)arg;
}

static void send_release(struct worker *w, const char *provider, const char *entry, int images,
                         int64_t tokens)
{
    char im[24], tk[24];
    snprintf(im, sizeof im, "%d", images);
    snprintf(tk, sizeof tk, "%" PRId64, tokens);
    const char *args[5] = {"release", provider, entry, im, tk};
    imgq_log(IMGQ_LOG_DEBUG, "limits", "%s: release %s", provider, entry);
    if (worker_script(w, IMGQ_SCRIPT_RATE, 5, args, on_release_reply, NULL) != 0)
        imgq_log(IMGQ_LOG_DEBUG, "limits", "%s: slot %s not released (Redis away): it expires",
                 provider, entry);
}

static void on_take(struct worker *w, redisReply *r, void *arg)
{
    struct limits_provider *lp = arg;
    lp->busy = false;
    if (!lp->head) /* cannot happen: the head stays queued while asked about */
        return;
    long long v = r && r->type == REDIS_REPLY_INTEGER ? r->integer : 1;
    if (v > 0) {
        if (w->limits.closing) {
            sweep(lp, true); /* nothing was taken */
            return;
        }
        if (!r || r->type != REDIS_REPLY_INTEGER) {
            arm(lp, REDIS_AWAY_MS); /* Redis away or refused: ask again */
            return;
        }
        w->limits.waits++;
        arm(lp, v);
        return;
    }
    struct limits_wait *lw = pop_head(lp);
    if (v == 0) {
        lw->held = true;
        if (w->limits.closing || (lw->wanted && !lw->wanted(lw->arg))) {
            limits_release(w, lw, false);
            answer(lw, LIMITS_CANCELLED);
        } else {
            answer(lw, LIMITS_GO);
        }
    } else {
        answer(lw, v == -2 ? LIMITS_TOO_MANY_TOKENS : LIMITS_TOO_MANY_IMAGES);
    }
    if (!w->limits.closing)
        service(lp);
}

/* Ask for the head of the queue, after dropping the calls nobody wants. */
static void service(struct limits_provider *lp)
{
    struct worker *w = lp->w;
    if (w->limits.closing)
        return;
    if (lp->timer_init)
        uv_timer_stop(&lp->timer);
    sweep(lp, false);
    if (lp->busy || !lp->head)
        return;
    struct limits_wait *lw = lp->head;
    char b[7][24];
    entry_args(lp, lw, b);
    const char *args[11] = {"take", lp->spec->provider, b[0], b[1], b[2], b[3], b[4], b[5],
                            b[6],   lw->entry};
    if (worker_script(w, IMGQ_SCRIPT_RATE, 10, args, on_take, lp) == 0) {
        lp->busy = true;
        return;
    }
    arm(lp, REDIS_AWAY_MS); /* not connected: as if the limit said wait */
}

int limits_acquire(struct worker *w, const char *provider, struct limits_wait *lw, int images,
                   int64_t tokens, const char *entry, limits_cb cb, limits_wanted_fn wanted,
                   void *arg)
{
    struct limits_provider *lp = find(w, provider);
    if (!lp)
        return IMGQ_ENOTFOUND;
    if (w->limits.closing)
        return IMGQ_ECANCELED;
    lw->lp = lp;
    lw->images = images;
    lw->tokens = tokens;
    snprintf(lw->entry, sizeof lw->entry, "%s", entry);
    lw->cb = cb;
    lw->wanted = wanted;
    lw->arg = arg;
    lw->held = false;
    lw->queued = true;
    lw->next = NULL;
    if (lp->tail)
        lp->tail->next = lw;
    else
        lp->head = lw;
    lp->tail = lw;
    /* Answered later, never from inside this call; only the head asks Redis. */
    if (!lp->busy && lp->head == lw)
        arm(lp, 0);
    return 0;
}

void limits_release(struct worker *w, struct limits_wait *lw, bool sent)
{
    if (!lw->held)
        return;
    lw->held = false;
    struct limits_provider *lp = lw->lp;
    /* A sent call's images and tokens stay counted: the provider counted them too.  A slot
     * matters only under a concurrency limit; a call never sent gives everything back. */
    if (!sent && (lp->spec->images || lp->spec->tokens))
        send_release(w, lp->spec->provider, lw->entry, lp->spec->images ? lw->images : 0,
                     lp->spec->tokens ? lw->tokens : 0);
    else if (lp->spec->concurrent)
        send_release(w, lp->spec->provider, lw->entry, 0, 0);
    else
        return;
    /* A slot of ours is free (or about to be): the next local call need not wait for its
     * poll (the release goes ahead of that take on the same connection).  From the timer, so
     * that no callback runs from inside this call. */
    if (lp->head && !lp->busy && !w->limits.closing)
        arm(lp, 0);
}

void limits_hold(struct worker *w, const char *provider, long ms)
{
    struct limits_provider *lp = find(w, provider);
    if (!lp || ms <= 0 || w->limits.closing)
        return;
    char b[24];
    snprintf(b, sizeof b, "%ld", ms);
    const char *args[3] = {"hold", lp->spec->provider, b};
    imgq_log(IMGQ_LOG_DEBUG, "limits", "%s: the provider said to wait %ld ms: holding its calls",
             provider, ms);
    if (worker_script(w, IMGQ_SCRIPT_RATE, 3, args, on_release_reply, NULL) != 0)
        imgq_log(IMGQ_LOG_DEBUG, "limits", "%s: hold not recorded (Redis away)", provider);
}

static void on_closed(uv_handle_t *h)
{
    (void)h;
}

void limits_close(struct worker *w)
{
    struct limits *L = &w->limits;
    if (L->closing)
        return;
    L->closing = true;
    for (int i = 0; i < L->n; i++) {
        struct limits_provider *lp = &L->p[i];
        if (lp->timer_init && !uv_is_closing((uv_handle_t *)&lp->timer))
            uv_close((uv_handle_t *)&lp->timer, on_closed);
        sweep(lp, true); /* a head being asked about is answered with its reply */
    }
}
