/* redis_uv.c - the hiredis event hooks on a uv_poll_t (see redis_uv.h for why not the stock
 * adapter). */
#include "imgq/redis_uv.h"

#include <stdlib.h>

#include "imgq/alloc.h"

struct redis_uv {
    uv_poll_t handle;
    redisAsyncContext *ac; /* NULL once hiredis has let go of us */
    int events;
};

static void on_closed(uv_handle_t *h)
{
    free(h->data);
}

static void on_poll(uv_poll_t *h, int status, int events);

static void rearm(struct redis_uv *r)
{
    if (r->events)
        uv_poll_start(&r->handle, r->events, on_poll);
    else
        uv_poll_stop(&r->handle);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct redis_uv *r = h->data;
    if (status < 0) {
        /* A socket error: a read makes hiredis look at it (while connecting it checks
         * SO_ERROR first) and fail the connect or the connection. */
        if (r->ac)
            redisAsyncHandleRead(r->ac);
        /* libuv stopped the handle; if the context lives on, keep watching it. */
        if (r->ac)
            rearm(r);
        return;
    }
    if (r->ac && (events & UV_READABLE))
        redisAsyncHandleRead(r->ac);
    if (r->ac && (events & UV_WRITABLE))
        redisAsyncHandleWrite(r->ac);
}

static void set_events(void *privdata, int add, int del)
{
    struct redis_uv *r = privdata;
    r->events = (r->events | add) & ~del;
    rearm(r);
}

static void add_read(void *p)
{
    set_events(p, UV_READABLE, 0);
}

static void del_read(void *p)
{
    set_events(p, 0, UV_READABLE);
}

static void add_write(void *p)
{
    set_events(p, UV_WRITABLE, 0);
}

static void del_write(void *p)
{
    set_events(p, 0, UV_WRITABLE);
}

static void cleanup(void *privdata)
{
    struct redis_uv *r = privdata;
    r->ac = NULL;
    uv_close((uv_handle_t *)&r->handle, on_closed);
}

int imgq_redis_uv_attach(redisAsyncContext *ac, uv_loop_t *loop)
{
    if (ac->ev.data)
        return IMGQ_EINVAL;
    struct redis_uv *r = imgq_xcalloc(1, sizeof *r);
    if (uv_poll_init(loop, &r->handle, ac->c.fd) != 0) {
        free(r);
        return IMGQ_EINVAL;
    }
    r->handle.data = r;
    r->ac = ac;
    ac->ev.addRead = add_read;
    ac->ev.delRead = del_read;
    ac->ev.addWrite = add_write;
    ac->ev.delWrite = del_write;
    ac->ev.cleanup = cleanup;
    ac->ev.data = r;
    return 0;
}
