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

struct proxy;
struct health;

/* What a probe found, as kept in replica_state.hc_result: kind << 16 |
 * value (a status, an errno). */
enum health_kind {
	HEALTH_NONE = 0,      /* no probe yet (or no health check) */
	HEALTH_OK,            /* 2xx (value: the status) */
	HEALTH_STATUS,        /* another status (value) */
	HEALTH_TIMEOUT,       /* no answer within the probe's deadline */
	HEALTH_CONNECT,       /* connect failed (value: errno; ECONNREFUSED: refused) */
	HEALTH_CLOSED,        /* closed without answering */
	HEALTH_NOT_HTTP,      /* not an HTTP/1 answer */
	HEALTH_IO,            /* socket, send or recv failed (value: errno) */
	HEALTH_PATH,          /* the path does not fit a request */
};
static inline uint32_t health_result(enum health_kind k, unsigned value)
{
	return (uint32_t)k << 16 | (value & 0xffffu);
}
/* The result in words ("ok", "status 503", "timeout", "connect: Connection
 * refused", ...), into buf; returns buf. */
const char *health_reason(uint32_t result, char *buf, size_t n);

/* Start the checker thread, which reads p's current snapshot every tick.
 * Returns 0 and *out, or -errno (nothing started). */
int health_start(struct proxy *p, struct health **out);
/* Stop and join the thread (probes in flight are abandoned), free h.
 * NULL is a no-op. */
void health_stop(struct health *h);

#endif
