/* Active health checks (backend "health_check": {"path", "interval_ms"}).
 * One thread probes every replica of such backends every interval with
 * "GET path HTTP/1.1" on a fresh connection; a 2xx answer within
 * min(interval/2, 1 s) marks the replica healthy, anything else (refused,
 * timeout, other status) unhealthy, and unhealthy replicas get no new
 * requests (router: router_replica_acquire). Probes run concurrently (one
 * poll loop, a deadline each): a replica that hangs delays no other probe.
 * A change of state is logged on stderr, "replica B/R is unhealthy
 * (reason)" with the failure: "status 503", "timeout", "connect: ...".
 * Replicas of backends without health_check are always healthy. */
#ifndef RINGROUTE_HEALTH_H
#define RINGROUTE_HEALTH_H

struct proxy;
struct health;

/* Start the checker thread, which reads p's current snapshot every tick.
 * Returns 0 and *out, or -errno (nothing started). */
int health_start(struct proxy *p, struct health **out);
/* Stop and join the thread (probes in flight are abandoned), free h.
 * NULL is a no-op. */
void health_stop(struct health *h);

#endif
