/*
 * tasks.c - the tasks of the asynchronous APIs (DashScope, Replicate, fal, BFL) and the image
 * files their results point at.
 *
 * A task needs no timer: its phase follows from its age.  It is queued for the first third of
 * its latency, running until the latency is up, then done (its end fixed at submit).  Tasks sit
 * in a hash by id and in a list by age; a lookup or an insertion first drops tasks done more
 * than SIM_TASK_TTL_MS ago (then: not found), and the oldest beyond SIM_TASK_MAX.
 *
 * Images are not stored: GET /sim/files/{task}-{i}.png renders image i again from the task's
 * size and variant (picture.c caches the encodings), so a task costs a few hundred bytes.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "imgq/alloc.h"
#include "imgq/base64.h"
#include "sim.h"

#define NBUCKETS 4096u

static size_t bucket_of(const char *id)
{
    return sim_fnv1a(id) % NBUCKETS;
}

static void task_free(struct sim_task *t)
{
    free(t->model);
    free(t->prompt);
    json_decref(t->input);
    free(t);
}

static void task_remove(struct sim *s, struct sim_task *t)
{
    struct sim_task **pp = &s->task_buckets[bucket_of(t->id)];
    while (*pp && *pp != t)
        pp = &(*pp)->hash_next;
    if (*pp)
        *pp = t->hash_next;
    if (t->older)
        t->older->newer = t->newer;
    else
        s->oldest_task = t->newer;
    if (t->newer)
        t->newer->older = t->older;
    else
        s->newest_task = t->older;
    s->ntasks--;
    task_free(t);
}

/* Drop what has expired.  Latencies differ, so a task done long ago may sit behind a younger
 * slow one for a while: expiry is approximate, never early. */
static void tasks_expire(struct sim *s)
{
    uint64_t now = sim_now_ms(s);
    while (s->oldest_task &&
           (s->ntasks > SIM_TASK_MAX || now >= sim_task_done_ms(s->oldest_task) + SIM_TASK_TTL_MS))
        task_remove(s, s->oldest_task);
}

void sim_tasks_clear(struct sim *s)
{
    while (s->oldest_task)
        task_remove(s, s->oldest_task);
    free(s->task_buckets);
    s->task_buckets = NULL;
}

/* An id in the API's style: a UUID (DashScope, fal, BFL) or 26 base-32 letters (Replicate). */
static void make_id(struct sim *s, enum sim_endpoint ep, char *id, size_t len)
{
    uint64_t a = sim_random(s), b = sim_random(s);
    if (ep == SIM_EP_REPLICATE) {
        static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
        for (int i = 0; i < 26 && (size_t)i + 1 < len; i++) {
            uint64_t *w = i < 13 ? &a : &b;
            id[i] = alphabet[*w & 31];
            *w >>= 5;
            id[i + 1] = '\0';
        }
        return;
    }
    snprintf(id, len, "%08" PRIx64 "-%04" PRIx64 "-4%03" PRIx64 "-%04" PRIx64 "-%012" PRIx64,
             a >> 32, (a >> 16) & 0xffff, a & 0xfff, 0x8000 | (b >> 48 & 0x3fff),
             b & (uint64_t)0xffffffffffff);
}

struct sim_task *sim_task_add(struct sim *s, enum sim_endpoint ep, const char *model,
                              const char *prompt, const struct sim_triggers *t, enum sim_outcome o)
{
    if (!s->task_buckets)
        s->task_buckets = imgq_xcalloc(NBUCKETS, sizeof(*s->task_buckets));
    tasks_expire(s);
    struct sim_task *k = imgq_xcalloc(1, sizeof(*k));
    do
        make_id(s, ep, k->id, sizeof(k->id));
    while (sim_task_find(s, ep, k->id));
    k->ep = ep;
    k->model = imgq_xstrdup(model);
    k->prompt = imgq_xstrdup(prompt);
    k->n = 1;
    k->seed = -1;
    k->created_ms = sim_now_ms(s);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    k->created_wall_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    k->latency_ms = sim_latency(s, t->latency_ms);
    if (o == SIM_MODERATION)
        k->end = t->prompt_blocked ? SIM_TASK_PROMPT_BLOCKED : SIM_TASK_MODERATED;
    else if (t->task_fail)
        k->end = SIM_TASK_FAILED;
    else if (o == SIM_OK_NO_USAGE)
        k->end = SIM_TASK_NO_USAGE;
    else
        k->end = SIM_TASK_OK;
    k->poll_503 = t->poll_503;
    k->bad_usage = t->bad_usage;

    size_t b = bucket_of(k->id);
    k->hash_next = s->task_buckets[b];
    s->task_buckets[b] = k;
    k->older = s->newest_task;
    if (k->older)
        k->older->newer = k;
    else
        s->oldest_task = k;
    s->newest_task = k;
    s->ntasks++;
    return k;
}

struct sim_task *sim_task_find(struct sim *s, enum sim_endpoint ep, const char *id)
{
    if (!s->task_buckets)
        return NULL;
    tasks_expire(s);
    for (struct sim_task *t = s->task_buckets[bucket_of(id)]; t; t = t->hash_next)
        if (t->ep == ep && strcmp(t->id, id) == 0)
            return t;
    return NULL;
}

uint64_t sim_task_done_ms(const struct sim_task *t)
{
    return t->created_ms + t->latency_ms;
}

enum sim_task_phase sim_task_phase(const struct sim *s, const struct sim_task *t)
{
    uint64_t age = sim_now_ms(s) - t->created_ms;
    if (t->canceled_ms)
        return SIM_TASK_CANCELED;
    if (age >= t->latency_ms)
        return SIM_TASK_DONE;
    return age * 3 < t->latency_ms ? SIM_TASK_QUEUED : SIM_TASK_RUNNING;
}

bool sim_task_take_503(struct sim_task *t)
{
    bool was = t->poll_503;
    t->poll_503 = false;
    return was;
}

int64_t sim_task_wall_ms(const struct sim_task *t, uint64_t loop_ms)
{
    return t->created_wall_ms + (int64_t)(loop_ms - t->created_ms);
}

void sim_time_format(int64_t wall_ms, bool iso, char *buf, size_t len)
{
    time_t secs = (time_t)(wall_ms / 1000) + (iso ? 0 : 8 * 3600);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char day[32];
    strftime(day, sizeof(day), iso ? "%Y-%m-%dT%H:%M:%S" : "%Y-%m-%d %H:%M:%S", &tm);
    if (iso)
        snprintf(buf, len, "%s.%06dZ", day, (int)(wall_ms % 1000) * 1000);
    else
        snprintf(buf, len, "%s.%03d", day, (int)(wall_ms % 1000));
}

char *sim_origin(struct sim *s, imgq_httpd_request *req)
{
    const char *host = imgq_httpd_request_header(req, "Host");
    if (host && *host && !strpbrk(host, "/ \t\"\\"))
        return imgq_xasprintf("http://%s", host);
    bool v6 = strchr(s->cfg.host, ':') != NULL;
    return imgq_xasprintf("http://%s%s%s:%d", v6 ? "[" : "", s->cfg.host, v6 ? "]" : "",
                          s->httpd ? imgq_httpd_port(s->httpd) : s->cfg.port);
}

char *sim_task_file_url(struct sim *s, imgq_httpd_request *req, const struct sim_task *t, int i)
{
    char *origin = sim_origin(s, req);
    char *url = imgq_xasprintf("%s/sim/files/%s-%d.png", origin, t->id, i);
    free(origin);
    return url;
}

/* ---- GET /sim/files/{task}-{i}.png ---------------------------------------------------------- */

static void file_not_found(struct sim *s, imgq_httpd_request *req, uint64_t start)
{
    size_t len;
    char *body = sim_json_dumps(json_pack("{s:s}", "detail", "File not found"), &len);
    struct imgq_httpd_header h[] = {{"Content-Type", "application/json"}};
    sim_reply(s, req, SIM_EP_FILES, SIM_NOT_FOUND, 404, h, 1, body, len, start);
}

/* The task of a successful, done task's image file name, and the image index. */
static struct sim_task *file_task(struct sim *s, const char *name, int *index)
{
    char id[64];
    const char *dash = strrchr(name, '-');
    if (!dash || (size_t)(dash - name) >= sizeof(id))
        return NULL;
    memcpy(id, name, (size_t)(dash - name));
    id[dash - name] = '\0';
    char *end;
    long i = strtol(dash + 1, &end, 10);
    if (end == dash + 1 || strcmp(end, ".png") != 0 || i < 0 || i > 64)
        return NULL;
    static const enum sim_endpoint eps[] = {SIM_EP_DASHSCOPE, SIM_EP_REPLICATE, SIM_EP_FAL,
                                            SIM_EP_BFL};
    for (size_t e = 0; e < sizeof(eps) / sizeof(eps[0]); e++) {
        struct sim_task *t = sim_task_find(s, eps[e], id);
        if (t && i < t->n && sim_task_phase(s, t) == SIM_TASK_DONE &&
            (t->end == SIM_TASK_OK || t->end == SIM_TASK_NO_USAGE)) {
            *index = (int)i;
            return t;
        }
    }
    return NULL;
}

void sim_files_handle(struct sim *s, imgq_httpd_request *req)
{
    uint64_t start = sim_now_ms(s);
    const char *method = imgq_httpd_request_method(req);
    int index = 0;
    struct sim_task *t = NULL;
    if (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0)
        t = file_task(s, imgq_httpd_request_path(req) + strlen("/sim/files/"), &index);
    if (!t) {
        file_not_found(s, req, start);
        return;
    }
    size_t len, n;
    int err = 0;
    const char *b64 = picture_b64(s->pictures, t->w, t->h, sim_picture_variant(t->variant, index),
                                  PICTURE_PNG, 0, false, &len, &err);
    uint8_t *png = NULL;
    if (b64)
        err = imgq_base64_decode(b64, len, &png, &n);
    if (!b64 || err) {
        char *msg = imgq_xasprintf("imgq-sim could not encode a %dx%d picture: %s", t->w, t->h,
                                   imgq_strerror(err));
        char *body = sim_json_dumps(json_pack("{s:s}", "detail", msg), &len);
        free(msg);
        struct imgq_httpd_header h[] = {{"Content-Type", "application/json"}};
        sim_reply(s, req, SIM_EP_FILES, SIM_SERVER_ERROR, 500, h, 1, body, len, start);
        return;
    }
    struct imgq_httpd_header h[] = {{"Content-Type", "image/png"},
                                    {"Cache-Control", "private, max-age=600"}};
    sim_reply(s, req, SIM_EP_FILES, SIM_OK, 200, h, 2, (char *)png, n, start);
}
