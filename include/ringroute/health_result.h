/* A health probe's result as replica_state.hc_result keeps it, and the
 * words for it: a leaf, so the stats (proxy.c) can show the reason without
 * depending on the checker (health.c) that writes it. */
#ifndef RINGROUTE_HEALTH_RESULT_H
#define RINGROUTE_HEALTH_RESULT_H

#include <stddef.h>
#include <stdint.h>

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

#endif
