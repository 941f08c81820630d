/*
 * redis_uv.h - hiredis's async API on a libuv loop.
 *
 * hiredis 0.14 ships an adapter (hiredis/adapters/libuv.h), but it drops every poll callback
 * whose status is an error.  libuv reports a refused or failed connect exactly that way (an
 * error status, and the handle stopped), so with the stock adapter a connect to a Redis that
 * is down never completes nor fails: the context hangs and a worker never reconnects.  This
 * adapter hands such errors to hiredis, which then fails the connect (connect callback with
 * REDIS_ERR) or the connection (disconnect callback) as it should.
 *
 * Ownership: the adapter's state belongs to the context and is freed with it (hiredis calls
 * the cleanup hook); its poll handle is closed through the loop, so run the loop until it has
 * no more handles before uv_loop_close().
 */
#ifndef IMGQ_REDIS_UV_H
#define IMGQ_REDIS_UV_H

#include <hiredis/async.h>
#include <uv.h>

#include "imgq/error.h"

/* Attach a new async context to loop.  IMGQ_EINVAL if it is attached already or its socket
 * cannot be polled; the context is untouched then.  Does not block. */
int imgq_redis_uv_attach(redisAsyncContext *ac, uv_loop_t *loop) IMGQ_MUST_CHECK;

#endif
