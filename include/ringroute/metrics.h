/* Per-shard metrics. Each counter is written only by its shard, with relaxed
 * atomic load+store (a plain mov on x86-64: no locked instruction on the hot
 * path), and read by the control thread, which sums over shards at scrape
 * time (proxy.c) and writes the Prometheus text (prom.c). */
#ifndef RINGROUTE_METRICS_H
#define RINGROUTE_METRICS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "ringroute/list.h"

typedef _Atomic uint64_t counter_t;

static inline void counter_add(counter_t *c, uint64_t n)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
			      memory_order_relaxed);
}
static inline uint64_t counter_get(counter_t *c) { return atomic_load_explicit(c, memory_order_relaxed); }

/* Duration buckets (Prometheus `le`), in microseconds, +Inf implied: from
 * 0.5 ms (a cached answer) to 300 s (an LLM generation runs for minutes). */
#define HIST_NBUCKETS 18
extern const uint64_t hist_bounds_us[HIST_NBUCKETS];

/* No count of its own: _count is the sum of the buckets, so that it always
 * equals the +Inf bucket however the scrape interleaves with the shard. */
struct hist {
	counter_t bucket[HIST_NBUCKETS + 1]; /* non-cumulative; last is +Inf */
	counter_t sum_us;
};

void metrics_hist_observe(struct hist *h, uint64_t us);

/* A histogram summed over shards. */
struct hist_sum {
	uint64_t bucket[HIST_NBUCKETS + 1]; /* non-cumulative, as in struct hist */
	uint64_t sum_us;
};

void metrics_hist_add(struct hist_sum *sum, struct hist *h);

/* One endpoint on one shard. Requests that matched no endpoint (404, and
 * those refused before routing: 400, 431, 501, 505) are counted under the
 * name "" (shard_metrics.unrouted), which no configured endpoint can have. */
struct endpoint_metrics {
	struct list node;           /* in shard_metrics.endpoints */
	char *name;
	counter_t status[600];      /* requests by status code */
	struct hist total, queue_wait, ttfb;
};

/* One endpoint summed over shards. */
struct endpoint_sum {
	const char *name;           /* a shard's endpoint_metrics name: lives as long as the shards */
	uint64_t status[600];
	struct hist_sum total, queue_wait, ttfb;
};

void metrics_endpoint_add(struct endpoint_sum *sum, struct endpoint_metrics *em);

/* One backend on one shard: struct backend_state.metrics[shard id], made by
 * the shard on first use (registry_backend_metrics) and read by the control
 * thread, like the replica pools. */
#define METRICS_REASONS 32          /* >= REQ_R_COUNT (request.c asserts it) */
#define METRICS_SHADOW_RESULTS 8    /* >= SHADOW_R_COUNT (shadow.c asserts it) */
struct backend_metrics {
	counter_t by_reason[METRICS_REASONS]; /* requests routed to it, by enum req_reason */
	counter_t retries;          /* attempts made again after a failed one */
	counter_t retry_budget_exhausted; /* retries the retry budget refused */
	counter_t shadow[METRICS_SHADOW_RESULTS]; /* shadow copies to it, by enum shadow_result */
};

struct backend_sum {
	uint64_t by_reason[METRICS_REASONS];
	uint64_t retries;
	uint64_t retry_budget_exhausted;
	uint64_t shadow[METRICS_SHADOW_RESULTS];
};

void metrics_backend_add(struct backend_sum *sum, struct backend_metrics *bm);

struct shard_metrics {
	struct list endpoints;      /* appended by the shard only; never removed */
	pthread_mutex_t lock;       /* taken to append, and by readers to walk */
	struct endpoint_metrics *unrouted; /* "" in endpoints, made on first use */
	counter_t accepted;         /* client connections accepted */
	counter_t closed;           /* client connections closed (open = accepted - closed) */
	counter_t requests;
	counter_t by_status[600];   /* every ended request, routed or not (0: none sent) */
	counter_t by_reason[METRICS_REASONS]; /* by enum req_reason */
	counter_t sqe_failures;     /* io_uring_submit refused while the SQ was full */
	counter_t bad_completions;  /* completions with an op no socket submits */
	counter_t accept_pauses;    /* accept paused at the open-files limit */
};

void metrics_shard_init(struct shard_metrics *m);
void metrics_shard_destroy(struct shard_metrics *m);
/* Find or create the metrics of endpoint name (shard thread only). Never
 * NULL unless out of memory. */
struct endpoint_metrics *metrics_endpoint(struct shard_metrics *m, const char *name);
/* The metrics of requests that matched no endpoint (shard thread only);
 * NULL only when out of memory. */
struct endpoint_metrics *metrics_unrouted(struct shard_metrics *m);

#endif
