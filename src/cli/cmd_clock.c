/*
 * cmd_clock.c - imgq clock: show or shift the queue's clock.
 *
 * Every script reads time from Redis (one clock for all workers and hosts) plus an offset
 * kept in the queue.  Shifting it lets a rehearsal or a test reach a dispatch window, a
 * not-before time or a deadline without waiting for hours.  Never use it on a production
 * queue: retries, leases and windows all move with it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "cli.h"

int imgq_cmd_clock(int argc, char **argv)
{
    static const char *const flags[] = {"advance=", "offset-ms=", "reset", NULL};
    static const struct imgq_cli_cmd cmd = {
        "imgq clock",
        "usage: imgq clock [--advance SECONDS | --offset-ms MS | --reset]\n"
        "  the queue's clock (rehearsals); no flag: show it\n",
        flags,
        0,
        0,
        NULL};
    struct imgq_cli_args a;
    int st = imgq__cli_parse(&cmd, argc, argv, &a);
    if (st >= 0)
        return st;
    if (a.nseen > 1)
        return imgq__cli_error(&a, "give one of --advance, --offset-ms, --reset");
    const char *flag = NULL, *val = NULL;
    if (a.nseen == 1) {
        flag = a.cmd->flags[a.seen[0].flag];
        val = a.seen[0].value;
    }
    imgq_queue *q = imgq__cli_queue();
    if (!q)
        return IMGQ_EXIT_FAIL;
    redisContext *rc = imgq_queue_redis(q);
    const struct imgq_keys *k = imgq_queue_keys(q);
    char key[256];
    snprintf(key, sizeof key, "%sclock_offset", k->base);
    redisReply *r = NULL;
    int advance = imgq__cli_set(&a, "advance");
    if (val) {
        char *end;
        long long v = strtoll(val, &end, 10);
        if (end == val || (*end && !(advance && end[0] == 's' && !end[1]))) {
            fprintf(stderr, "imgq clock: --%.*s '%s' is not a number\n", (int)strcspn(flag, "="),
                    flag, val);
            return IMGQ_EXIT_USAGE;
        }
        r = advance ? redisCommand(rc, "INCRBY %s %lld", key, v * 1000)
                    : redisCommand(rc, "SET %s %lld", key, v);
    } else if (flag) {
        r = redisCommand(rc, "DEL %s", key);
    }
    if (flag) {
        if (!r || r->type == REDIS_REPLY_ERROR) {
            fprintf(stderr, "imgq clock: %s\n", r ? r->str : rc->errstr);
            if (r)
                freeReplyObject(r);
            return IMGQ_EXIT_FAIL;
        }
        freeReplyObject(r);
        /* Idle workers sleep until the next due time they computed: wake them to look again. */
        r = redisCommand(rc, "PUBLISH %swake 0", k->base);
        if (r)
            freeReplyObject(r);
    }
    r = redisCommand(rc, "MGET %s", key);
    redisReply *t = redisCommand(rc, "TIME");
    if (!r || !t || r->type != REDIS_REPLY_ARRAY || t->type != REDIS_REPLY_ARRAY) {
        fprintf(stderr, "imgq clock: %s\n", rc->errstr);
        if (r)
            freeReplyObject(r);
        if (t)
            freeReplyObject(t);
        return IMGQ_EXIT_FAIL;
    }
    long long offset = r->element[0]->str ? atoll(r->element[0]->str) : 0;
    long long now = atoll(t->element[0]->str) * 1000 + atoll(t->element[1]->str) / 1000 + offset;
    freeReplyObject(r);
    freeReplyObject(t);
    time_t secs = (time_t)(now / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char stamp[64];
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
    printf("%s (offset %+lld ms)\n", stamp, offset);
    return IMGQ_EXIT_OK;
}
