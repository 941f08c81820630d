/*
 * webhooks.h - the worker's webhook delivery loop: takes the messages the queue's scripts wrote
 * to the outbox (lib.lua outbox_put) and POSTs them, signed (Standard Webhooks), to their URLs,
 * with retries over hours (src/lua/webhook.lua has the schedule).
 *
 * A worker claims due messages with a lease (WEBHOOKS_LEASE_MS) when the outbox's wake channel
 * fires, and at least every second otherwise; each one is checked by the SSRF guard on the
 * thread pool, then POSTed to exactly the checked address, without proxy, with a 15 s timeout,
 * and its outcome recorded in Redis:
 *   2xx                      delivered;
 *   410                      the endpoint is disabled (and every message to it, until
 *                            "imgq webhooks enable URL" and "replay");
 *   the SSRF guard refuses   failed at once (no retry: the URL will not change; replay after
 *                            fixing IMGQ_SSRF_ALLOW);
 *   webhook-delivery: abort-message   failed at once (the receiver asked);
 *   anything else (3xx, 4xx, 5xx, timeouts, connection errors, names that do not resolve)
 *                            retried after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h, the
 *                            longer of that and a retry-after (429/502/503/504, up to 24 h);
 *                            after the 8th attempt the message is failed, kept for replay.
 * A worker that dies mid-delivery leaves the lease to run out; another worker then sends the
 * message again under the same webhook-id (at-least-once: receivers dedupe on it).
 *
 * Caps: WEBHOOKS_MAX_INFLIGHT deliveries per worker, WEBHOOKS_MAX_PER_HOST per URL host.
 *
 * Secrets: IMGQ_WEBHOOK_SECRET (one or more whsec_..., spaces or commas) signs every delivery,
 * one signature per secret (rotation); a config file's webhooks.endpoints give URL prefixes
 * their own secrets (first match wins).  A worker with no secret delivers nothing: messages
 * stay pending for a worker that has one.  Everything here runs on the worker's loop thread.
 */
#ifndef IMGQ_WORKERS_WEBHOOKS_H
#define IMGQ_WORKERS_WEBHOOKS_H

#include <stdbool.h>
#include <stddef.h>

#include "imgq/config.h"
#include "imgq/error.h"
#include "imgq/http.h"

struct worker;

#define WEBHOOKS_MAX_INFLIGHT 64
#define WEBHOOKS_MAX_PER_HOST 8
#define WEBHOOKS_LEASE_MS 60000   /* longer than a delivery's timeout and SSRF check */
#define WEBHOOKS_TIMEOUT_MS 15000 /* a whole delivery, as the spec and Svix expect */

/*
 * Read and check the secrets of cfg (before webhooks_start): IMGQ_EINVAL, with err naming
 * the environment variable and the secret ("IMGQ_WEBHOOK_SECRET: secret 2: not base64"), if
 * one does not parse or an endpoint's secret_env is unset.  No secret at all is not an error.
 * Allocates w->wh; webhooks_free() releases it.
 */
int webhooks_configure(struct worker *w, const struct imgq_config *cfg, char *err,
                       size_t errlen) IMGQ_MUST_CHECK;

/* Start the delivery loop on w->loop (after the worker's timers are set up). */
void webhooks_start(struct worker *w);
/* Redis (re)connected: subscribe to the outbox's wake channel on w->sub, and look for work. */
void webhooks_subscribe(struct worker *w);
/* Shutdown: stop claiming and close the loop's handles.  Deliveries in flight end when the
 * HTTP client closes (their leases then run out). */
void webhooks_stop(struct worker *w);
/* After the loop: free what webhooks_configure() allocated.  NULL w->wh is a no-op. */
void webhooks_free(struct worker *w);

/* Deliveries claimed and not yet recorded (shutdown waits for them in the grace period). */
int webhooks_in_flight(const struct worker *w);
/*
 * --exit-when-idle: whether this worker still has outbox work: deliveries or a claim in
 * flight, the outbox not looked at yet, or a message due within WEBHOOKS_LEASE_MS (not one
 * scheduled hours away).  Always false without a secret.
 */
bool webhooks_busy(const struct worker *w);

/*
 * Add webhook-id, webhook-timestamp (now, Unix seconds), webhook-signature (one "v1," entry
 * per secret of the URL) and content-type: application/json to req, signing exactly body.
 * For every signed POST of the worker (deliveries, and callers such as a pipeline's scorer).
 * IMGQ_ECONFIG if the worker has no secret for url, IMGQ_EINVAL if msg_id is not a valid
 * webhook id (imgq_webhook_sign); req is unchanged then.
 */
int webhooks_sign_headers(struct worker *w, const char *url, const char *msg_id, const void *body,
                          size_t len, imgq_http_request *req) IMGQ_MUST_CHECK;

#endif
