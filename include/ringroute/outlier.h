/* Passive outlier ejection (docs/config.md "outlier_detection"; Envoy's
 * outlier detection is the model). A replica whose requests keep failing
 * gets no new requests for a while, then returns on probation.
 *
 * The state is process-wide (in struct replica_state, shared by every shard
 * and every snapshot that names the replica) and changed only with atomics,
 * from whichever shard saw the outcome. The hot path pays one relaxed load:
 * ejected_until_ms is 0 unless the replica is ejected.
 *
 * States of one replica:
 *   in service --(consecutive_failures failures in a row)--> ejected
 *   ejected --(ejection time over, noticed by the next pick)--> probation
 *   probation --(one failure)--> ejected again, for longer
 *   probation --(consecutive_failures successes in a row)--> in service,
 *                the ejection time back to its base
 * An ejection that would put more than max_ejection_percent of the
 * backend's replicas out at once does not happen (Envoy's rule: never
 * exceed the percent; so a backend of one replica is never ejected at 50%). */
#ifndef RINGROUTE_OUTLIER_H
#define RINGROUTE_OUTLIER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct replica_state;
struct backend_cfg;

/* What failed, for the log, /v1/stats and the metric's reason label. New
 * ones go last: counters are indexed by it. */
enum outlier_reason {
	OUTLIER_CONNECT_FAILED = 0, /* refused, unreachable, connect timeout */
	OUTLIER_RESET,              /* closed or reset before the response ended */
	OUTLIER_TIMEOUT,            /* request_timeout_ms without a byte */
	OUTLIER_BAD_RESPONSE,       /* unparseable response */
	OUTLIER_5XX,                /* a 5xx response, with count_5xx */
	OUTLIER_REASONS,
};
const char *outlier_reason_name(enum outlier_reason r);

/* A backend's outlier_detection, as parsed (config.c holds the defaults). */
struct outlier_cfg {
	uint32_t consecutive_failures; /* 0: ejection off */
	uint32_t base_ejection_ms;     /* first ejection; the k-th lasts k times it */
	uint32_t max_ejection_ms;      /* cap of the growing ejection time */
	uint32_t max_ejection_percent; /* of the backend's replicas, 0..100 */
	bool count_5xx;                /* 5xx responses are failures too */
};

/* The cold part of a replica's outlier state (the hot ejected_until_ms is
 * in struct replica_state's first cache line). */
struct outlier_state {
	_Atomic uint32_t consecutive;  /* failures in a row (successes on probation) */
	_Atomic uint32_t level;        /* ejections since the last full success run */
	_Atomic uint32_t probation;    /* 1 from a return until a success run */
	_Atomic uint32_t last_reason;  /* enum outlier_reason of the last ejection */
	_Atomic uint64_t ejections[OUTLIER_REASONS]; /* ejections so far, by reason */
};

/* How long the level-th ejection lasts (level >= 1): base * level, capped at
 * max_ejection_ms. Pure. */
uint64_t outlier_ejection_ms(const struct outlier_cfg *c, uint32_t level);
/* May one more of n replicas be ejected while ejected already are? Pure. */
bool outlier_percent_allows(const struct outlier_cfg *c, size_t ejected, size_t n);

/* An exchange with replica ridx of b failed (why). May eject it (logged at
 * warn). Returns true when this call ejected it. now_ms: clock_now_ms(). */
bool outlier_failure(const struct backend_cfg *b, size_t ridx, enum outlier_reason why,
		     uint64_t now_ms);
/* An exchange with replica ridx of b got its response (not a failure). */
void outlier_success(const struct backend_cfg *b, size_t ridx);

/* The slow path of outlier_ejected: until != 0 was read. True while
 * now < until; else the replica returns on probation (logged at info, by
 * whichever caller notices first) and false. */
bool outlier_check_return(struct replica_state *rs, uint64_t until);

/* Remaining ejection time of rs in ms, 0 when not ejected; reads only (for
 * stats and metrics: the return itself is left to the next pick). */
uint64_t outlier_ms_left(const struct replica_state *rs, uint64_t now_ms);
/* Ejections of rs so far, all reasons. */
uint64_t outlier_ejections(const struct replica_state *rs);

#endif
