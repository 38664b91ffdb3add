/* Server-reported load (docs/config.md "load_reports", "load_scrape_ms"):
 * the parsers of what a replica says about itself, and the per-replica
 * report the least_load choice reads (router.c).
 *
 * Two sources, one report: the ORCA `endpoint-load-metrics` response
 * header (load_parse_orca; TEXT and JSON forms as vLLM writes them) and a
 * Prometheus text scrape of the replica's /metrics (load_parse_prom). Both
 * yield a struct load_report; load_store publishes it in the replica's
 * state, where any shard (or the scrape thread) writes and the choice
 * reads. The parsers are pure (no allocation, no I/O): they read bytes a
 * replica sent, so they get fuzz targets (tests/fuzz/fuzz_load.c). */
#ifndef RINGROUTE_LOAD_H
#define RINGROUTE_LOAD_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "ringroute/config.h"

#define LOAD_KV_ONE 1000000u          /* KV-cache use 1.0 in parts per million */
#define LOAD_QUEUE_MAX 1000000000u    /* a larger reported queue is not believed */

enum {
	LOAD_HAVE_QUEUE = 1u << 0,    /* the report said its waiting requests */
	LOAD_HAVE_KV = 1u << 1,       /* the report said its KV-cache use */
};

/* What a replica reported. A field it did not report is 0 (and its bit is
 * clear in have). */
struct load_report {
	uint32_t queue;               /* requests waiting in the replica */
	uint32_t kv_ppm;              /* KV-cache use, 0..LOAD_KV_ONE */
	uint32_t have;                /* LOAD_HAVE_* */
};

/* What a parser found. */
enum load_parse {
	LOAD_BAD = -1,                /* malformed, or a value out of range: drop it, count it */
	LOAD_NONE = 0,                /* well formed, but nothing the choice reads */
	LOAD_OK = 1,                  /* *out holds at least one field */
};

/* Parses an endpoint-load-metrics header value (v, len bytes, not
 * NUL-terminated):
 *   TEXT key=value, key=value ...   (ORCA native form: comma separated)
 *   JSON {"key": value, "named_metrics": {"key": value}, ...}
 * The prefix is matched without regard to case. Read: named_metrics
 * num_requests_waiting (the queue) and kv_cache_usage_perc (vLLM's name;
 * kv_cache_usage and kv_cache_utilization too) as a fraction 0..1; other
 * keys (cpu_utilization, mem_utilization, utilization.*, request_cost.*,
 * other named_metrics) are checked for form and ignored. Every value must
 * be a finite number; the queue >= 0, the KV use within 0..1. */
enum load_parse load_parse_orca(const char *v, size_t len, struct load_report *out);

/* Parses a Prometheus text exposition (text, len bytes) for the gauges
 * named queue_name and kv_name (either may be NULL: not read): lines
 * "name value [timestamp]" or "name{labels} value [timestamp]"; comments
 * and other metrics are skipped. Over several label sets the queue is the
 * sum (waiting requests of every engine behind the port) and the KV use
 * the maximum (the fullest cache decides when a request waits). A line of
 * a named gauge that does not parse, or a value out of range (as above),
 * makes the whole scrape LOAD_BAD. */
enum load_parse load_parse_prom(const char *text, size_t len, const char *queue_name,
				const char *kv_name, struct load_report *out);

/* Publishes r as rs's report at now_ms (clock_now_ms()): last writer wins
 * (the header of any shard's response, or a scrape). The two fields are
 * one atomic word, so a reader never mixes two reports. */
static inline void load_store(struct replica_state *rs, const struct load_report *r,
			      uint64_t now_ms)
{
	atomic_store_explicit(&rs->load_report, (uint64_t)r->queue << 32 | r->kv_ppm,
			      memory_order_relaxed);
	atomic_store_explicit(&rs->load_ms, now_ms ? now_ms : 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&rs->load_reports, 1, memory_order_relaxed);
}

/* A report of rs was dropped as bad (counted for the stats). Returns the
 * count before: 0 for the replica's first, which the caller logs (once
 * per replica, so a replica that always sends bad ones is not a log
 * flood). */
static inline uint64_t load_bad(struct replica_state *rs)
{
	return atomic_fetch_add_explicit(&rs->load_bad, 1, memory_order_relaxed);
}

/* rs's report if it is at most max_age_ms old at now_ms: 1 with *queue and
 * *kv_ppm, else 0 (none yet, or aged out: the choice then reads ongoing
 * alone). */
static inline int load_fresh(struct replica_state *rs, uint64_t now_ms, uint32_t max_age_ms,
			     uint32_t *queue, uint32_t *kv_ppm)
{
	uint64_t at = atomic_load_explicit(&rs->load_ms, memory_order_relaxed), w;

	if (!at || now_ms > at + max_age_ms)
		return 0;
	w = atomic_load_explicit(&rs->load_report, memory_order_relaxed);
	*queue = (uint32_t)(w >> 32);
	*kv_ppm = (uint32_t)w;
	return 1;
}

/* KV-cache use above which a replica's load rises (load_cost): 0.9 */
#define LOAD_KV_KNEE 900000u

/* The load of a replica as least_load and prefix compare replicas, in
 * millionths of one request (LOAD_KV_ONE = one request ahead of a new
 * one): what predicts a new request's wait there (docs/config.md
 * "least_load"). ongoing: ringroute's requests in flight on it; queue:
 * the requests it reports waiting (every client's, ours too); kv_ppm: its
 * reported KV-cache use (blocks held by running sequences, vLLM's
 * definition). Every request ahead counts one; KV use up to
 * LOAD_KV_KNEE costs nothing (there is room for a new prompt), above it
 * the load grows linearly to twice (ongoing + queue + 1) at a full cache
 * (a new request then waits for a running one to free its blocks, or
 * preempts one). Callers without a report pass queue = kv_ppm = 0: the
 * load is ongoing. At most about 5.3e15: no overflow. */
static inline uint64_t load_cost(uint32_t ongoing, uint32_t queue, uint32_t kv_ppm)
{
	uint64_t n = (uint64_t)ongoing + queue, c = n * LOAD_KV_ONE;

	if (kv_ppm > LOAD_KV_KNEE) {
		uint64_t over = kv_ppm > LOAD_KV_ONE ? LOAD_KV_ONE - LOAD_KV_KNEE : kv_ppm - LOAD_KV_KNEE;
		c += (n + 1) * over * (LOAD_KV_ONE / (LOAD_KV_ONE - LOAD_KV_KNEE));
	}
	return c;
}

#endif
