/* Routing decisions (docs/config.md). Pure functions over a
 * config snapshot plus the atomic replica counters; no I/O, so unit-testable. */
#ifndef RINGROUTE_ROUTER_H
#define RINGROUTE_ROUTER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "ringroute/clock.h"
#include "ringroute/config.h"

/* Match an endpoint: longest route prefix that ends at a path-segment boundary
 * ("/predict" matches "/predict", "/predict/x", "/predict?q" but not
 * "/predictions"; a route ending in '/' matches anything under it), then
 * methods. url is the request target (query allowed), method an llhttp method.
 * Returns the endpoint with *status = 200; the endpoint whose route matched
 * with *status = 405 when its methods exclude this one (the caller must not
 * route it); or NULL with *status = 404 (no route). */
const struct endpoint_cfg *router_match(const struct config *c, const char *url, size_t len,
					unsigned method, int *status);

/* Weighted choice: u in [0,1) picks by cumulative weight. n >= 1. */
struct backend_cfg *router_pick_weighted(const struct weighted *w, size_t n, double u);

/* Deterministic unit value in [0,1) for a shard key (same key -> same value). */
double router_key_unit(const char *key, size_t len);

/* Uniform double in [0,1) from a per-shard xorshift state. */
uint64_t router_rand(uint64_t *state);
double router_rand_unit(uint64_t *state);

/* Whether a replica is able to serve at all: healthy and not ejected
 * (outlier.h: one relaxed load unless it is ejected). A draining replica is
 * able: draining is a deliberate step (a replica removed by a change whose
 * snapshot a shard has not picked up yet, an operator's drain), so a
 * backend whose able replicas all drain queues rather than failing fast. */
static inline int router_replica_able(struct replica_state *r)
{
	uint64_t ejected = atomic_load_explicit(&r->ejected_until_ms, memory_order_relaxed);

	return atomic_load_explicit(&r->healthy, memory_order_relaxed) &&
	       (!ejected || !outlier_check_return(r, ejected));
}

/* Whether a replica may be given new requests: able (above), not draining
 * and past the Retry-After of its last 503/429 (not_before_ms; the clock is
 * read only while one is set). Advisory (any may change right after);
 * shared by the replica choice and /readyz so both mean the same by "up". */
static inline int router_replica_up(struct replica_state *r)
{
	uint64_t nb = atomic_load_explicit(&r->not_before_ms, memory_order_relaxed);

	return !atomic_load_explicit(&r->draining, memory_order_relaxed) &&
	       router_replica_able(r) && (!nb || clock_now_ms() >= nb);
}

/* A replica's share of its backend's requests against the others', in
 * 1/1024ths of its configured weight: what p2c draws by and compares
 * ongoing against, and what weighted round robin spreads by. With
 * slow_start_ms, for that long after it became able (up_since_ms) it ramps
 * linearly from a tenth to all of it, so a cold model server is not handed
 * its full share at once; never 0. now_ms: clock_now_ms(), read by the
 * caller only when b->slow_start_ms is set. */
static inline uint64_t router_replica_weight(const struct backend_cfg *b,
					     const struct replica_cfg *r, uint64_t now_ms)
{
	uint64_t w = (uint64_t)r->weight << 10, ss = b->slow_start_ms, since, t;

	if (!ss)
		return w;
	since = atomic_load_explicit(&r->state->up_since_ms, memory_order_relaxed);
	t = now_ms > since ? now_ms - since : 0;
	if (t >= ss)
		return w;
	return w * (ss + 9 * t) / (10 * ss);
}

/* Try to take one slot of a replica whose cap is max: 1 on success (ongoing
 * was < max and is now one more, never exceeding max even under contention
 * from other shards), 0 when full, draining or unhealthy. */
int router_replica_acquire(struct replica_state *r, uint32_t max);
void router_replica_release(struct replica_state *r);

/* Choose a replica of b and take a slot on it.
 * key/keylen: shard key or NULL: with a key, rendezvous hashing with bounded
 * load (the key's replicas in hash order, first with a free slot); without,
 * b->policy (p2c on ongoing/max, or round robin using *rr_cursor).
 * Returns the replica index, or -1 when no replica has a free slot. */
int router_pick_replica(const struct backend_cfg *b, const char *key, size_t keylen,
			uint64_t *rng, uint32_t *rr_cursor);
/* The same, passing over the replicas whose bit (index < 64) is set in
 * avoid (those a request already failed on) while another has a free slot;
 * when only avoided ones do, one of them is taken. */
int router_pick_replica_avoid(const struct backend_cfg *b, const char *key, size_t keylen,
			      uint64_t *rng, uint32_t *rr_cursor, uint64_t avoid);

/* ---- routing on the request body (issue 11, docs/config.md) ---- */

/* Among the endpoints that share ep's route (ep is the first of them, as
 * router_match returns it; they sit next to it) and allow method: the one
 * whose models name model[0..len), else the one without models (the
 * catch-all); NULL when neither exists (404 no_model). model NULL: the
 * request has none, so only the catch-all. */
const struct endpoint_cfg *router_match_model(const struct config *c,
					      const struct endpoint_cfg *ep, unsigned method,
					      const char *model, size_t len);

/* What the body and its headers said for choosing a replica. */
struct route_hint {
	uint64_t mux_id;              /* multiplex model id (mux_id()), 0: none */
	const uint64_t *blocks;       /* prefix block hashes (prefix_hash), or NULL */
	size_t nblocks;
};

/* router_pick_replica_avoid, with the hint: a shard key still decides
 * first (rendezvous); else a multiplexed backend (mux_max_models) with a
 * model id prefers the least loaded replica holding it and notes the
 * choice; else policy "prefix" prefers the replica of the longest
 * matching prefix unless prefix_spill says its extra load outweighs the
 * match (then the least loaded) and records the choice; else
 * as router_pick_replica_avoid. Every path takes its slot with
 * router_replica_acquire: the cap stays exact and a full replica is
 * never chosen. hint may be NULL. Index or -1. */
int router_pick_replica_hint(const struct backend_cfg *b, const struct route_hint *hint,
			     const char *key, size_t keylen, uint64_t *rng, uint32_t *rr_cursor,
			     uint64_t avoid);

#endif
