/* Active health checks (backend "health_check": {"path", "interval_ms",
 * "rise", "fall"}). One thread probes every replica of such backends every
 * interval with "GET path HTTP/1.1" on a fresh connection; a 2xx answer
 * within min(interval/2, 1 s) is a success, anything else (refused,
 * timeout, other status) a failure. A healthy replica turns unhealthy
 * after `fall` failures in a row, an unhealthy one healthy after `rise`
 * successes in a row: one lost probe does not take a replica out, one
 * lucky one does not bring it back. Unhealthy replicas get no new requests
 * (router_replica_up). Probes run concurrently (one poll loop, a deadline
 * each): a replica that hangs delays no other probe. The last probe's
 * result is kept per replica (replica_state.hc_result: /v1/stats
 * "health"), and a change of state is logged, "replica B/R is unhealthy
 * (reason)" with the failure: "status 503", "timeout", "connect: ...".
 * Replicas of backends without health_check are always healthy. */
#ifndef RINGROUTE_HEALTH_H
#define RINGROUTE_HEALTH_H

#include <stddef.h>
#include <stdint.h>

#include "ringroute/health_result.h"

struct proxy;
struct health;


/* Start the checker thread, which reads p's current snapshot every tick.
 * Returns 0 and *out, or -errno (nothing started). */
int health_start(struct proxy *p, struct health **out);
/* Stop and join the thread (probes in flight are abandoned), free h.
 * NULL is a no-op. */
void health_stop(struct health *h);

#endif
