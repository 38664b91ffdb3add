/* Active health checks (backend "health_check": {"path", "interval_ms"}).
 * One thread probes every replica of such backends with
 * "GET path HTTP/1.1" on a fresh connection; a 2xx answer marks the replica
 * healthy, anything else (refused, timeout, other status) unhealthy, and
 * unhealthy replicas get no new requests (router: replica_try_acquire).
 * Replicas of backends without health_check are always healthy. */
#ifndef RINGROUTE_HEALTH_H
#define RINGROUTE_HEALTH_H

struct proxy;
struct health;

/* Start the checker thread. Returns 0 and *out, or -errno. */
int health_start(struct proxy *p, struct health **out);
void health_stop(struct health *h);

#endif
