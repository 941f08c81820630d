/*
 * recover.c - a worker's start-up with a spool directory: what an earlier run left there (the
 * paid bytes of images it could not store before it died or stopped) is PUT to S3 under the
 * object key each file names, before the first claim.
 *
 * Keys are content-addressed (dedup.h), so a recovered object is exactly what its job would
 * store: the job, when it runs again (here or on any worker), finds it in S3 and completes at $0
 * without calling the provider.  Each file is tried once; one S3 refuses stays for the jobs
 * that need it (run.c stores from the spool) or for the next start.  A damaged file is refused
 * and set aside (spool.h).  Files are read on the loop: nothing else runs yet.
 */
#include <stdlib.h>

#include "imgq/alloc.h"
#include "imgq/log.h"
#include "spool.h"
#include "worker.h"

#define RECOVER_PARALLEL 4 /* PUTs in flight */

struct recover {
    struct worker *w;
    char **keys;
    size_t n, next;
    int inflight;
    size_t stored, failed;
};

struct recover_put {
    struct recover *rc;
    char *key;
    uint8_t *data;
};

static void recover_next(struct recover *rc);

static void recover_end(struct recover *rc)
{
    struct worker *w = rc->w;
    imgq_log(rc->failed ? IMGQ_LOG_WARN : IMGQ_LOG_INFO, "spool",
             "recovery: %zu of %zu object(s) left in %s stored in S3, %zu still waiting there",
             rc->stored, rc->n, spool_dir(w->spool), rc->n - rc->stored);
    spool_list_free(rc->keys, rc->n);
    free(rc);
    w->recovering = false;
    worker_maybe_claim(w);
}

static void on_recover_put(const struct imgq_s3_result *res, void *arg)
{
    struct recover_put *p = arg;
    struct recover *rc = p->rc;
    if (res->err == 0) {
        rc->stored++;
        (void)spool_remove(rc->w->spool, p->key);
        imgq_log(IMGQ_LOG_INFO, "spool", "recovery: stored %s", p->key);
    } else {
        rc->failed++;
        imgq_log(IMGQ_LOG_WARN, "spool", "recovery: %s stays in the spool: %s", p->key,
                 res->message);
    }
    free(p->data);
    free(p);
    rc->inflight--;
    recover_next(rc);
}

static void recover_next(struct recover *rc)
{
    struct worker *w = rc->w;
    while (rc->inflight < RECOVER_PARALLEL && rc->next < rc->n && !w->stopping && w->http) {
        const char *key = rc->keys[rc->next++];
        struct recover_put *p = imgq_xcalloc(1, sizeof *p);
        p->rc = rc;
        p->key = (char *)key;
        size_t len;
        char *type = NULL, why[400];
        if (spool_read(w->spool, key, &p->data, &len, &type, why, sizeof why) != 0) {
            imgq_log(IMGQ_LOG_WARN, "spool", "recovery: %s", why);
            rc->failed++;
            free(p);
            continue;
        }
        int r = imgq_s3_put(w->http, &w->s3, key, type, p->data, len, NULL, on_recover_put, p);
        free(type);
        if (r != 0) {
            imgq_log(IMGQ_LOG_WARN, "spool", "recovery: %s stays in the spool: %s", key,
                     imgq_strerror(r));
            rc->failed++;
            free(p->data);
            free(p);
            continue;
        }
        rc->inflight++;
    }
    if (rc->inflight == 0)
        recover_end(rc);
}

void spool_recover_start(struct worker *w)
{
    if (!w->spool || !spool_dir(w->spool) || w->opt.noop)
        return;
    char **keys;
    size_t n;
    if (spool_list(w->spool, &keys, &n) != 0) {
        imgq_log(IMGQ_LOG_ERROR, "spool", "recovery: cannot read the spool directory %s",
                 spool_dir(w->spool));
        return;
    }
    if (n == 0) {
        spool_list_free(keys, n);
        return;
    }
    imgq_log(IMGQ_LOG_WARN, "spool",
             "recovery: %zu object(s) of paid images left in %s by an earlier run: storing them "
             "before claiming",
             n, spool_dir(w->spool));
    struct recover *rc = imgq_xcalloc(1, sizeof *rc);
    rc->w = w;
    rc->keys = keys;
    rc->n = n;
    w->recovering = true;
    recover_next(rc);
}
