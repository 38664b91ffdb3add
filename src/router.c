/* Routing decisions (docs/config.md, README "Behaviour we chose"): endpoint match, weighted
 * backend choice, replica choice under the global max_ongoing_requests cap.
 * Everything here runs on the shard hot path: no locks, no allocation. */
#include <assert.h>
#include <string.h>

#include <xxhash.h>

#include "ringroute/load.h"
#include "ringroute/router.h"
#include "ringroute/multiplex.h"
#include "ringroute/prefix.h"

/* Fixed seed for shard keys: the backend a key maps to must not change across
 * restarts or between shards. */
#define RR_KEY_SEED 0x72696e67726f7574ull /* "ringrout" */

/* Rendezvous scores are kept on the stack up to this many replicas; larger
 * backends recompute them per candidate (only when the first choices are
 * full), which costs hashing but never allocates. */
#define RR_SCORE_STACK 64

/* See router.h. The match is done on the path only: everything from '?' on
 * is the query. Endpoints are sorted longest route first, so the first route
 * that matches at a segment boundary is the longest one; its method check is
 * final (a shorter route is never tried instead, so a method mismatch is a
 * 405, not a surprise route). */
const struct endpoint_cfg *router_match(const struct config *c, const char *url, size_t len,
					unsigned method, int *status)
{
	const char *q = memchr(url, '?', len);
	size_t plen = q ? (size_t)(q - url) : len;

	for (size_t i = 0; i < c->nendpoints; i++) {
		const struct endpoint_cfg *e = &c->endpoints[i];
		size_t rl = e->route_len;

		if (rl > plen || memcmp(url, e->route, rl) != 0)
			continue;
		if (rl != plen && e->route[rl - 1] != '/' && url[rl] != '/')
			continue; /* "/predict" vs "/predictions" */
		if (e->methods && (method >= 64 || !(e->methods & (1ull << method)))) {
			/* Endpoints sharing the route (they differ by models)
			 * sit next to it: the first that allows the method. */
			for (size_t j = i + 1; j < c->nendpoints; j++) {
				const struct endpoint_cfg *f = &c->endpoints[j];
				if (f->route_len != rl || memcmp(f->route, e->route, rl) != 0)
					break;
				if (!f->methods || (method < 64 && (f->methods & (1ull << method)))) {
					*status = 200;
					return f;
				}
			}
			*status = 405;
			return e; /* named in the error body */
		}
		*status = 200;
		return e;
	}
	*status = 404;
	return NULL;
}

/* See router.h. Zero-weight entries share the cum of the previous entry so
 * "cum > target" never selects them; rounding that pushes target to the
 * total falls back to the last entry with weight. */
struct backend_cfg *router_pick_weighted(const struct weighted *w, size_t n, double u)
{
	double target = u * w[n - 1].cum;
	size_t last = n - 1;

	for (size_t i = 0; i < n; i++) {
		if (!(w[i].weight > 0))
			continue;
		if (w[i].cum > target)
			return w[i].backend;
		last = i;
	}
	return w[last].backend;
}

static inline double unit_from_u64(uint64_t x)
{
	return (double)(x >> 11) * 0x1.0p-53; /* top 53 bits: exact, < 1 */
}

/* See router.h. */
double router_key_unit(const char *key, size_t len)
{
	return unit_from_u64(XXH64(key, len, RR_KEY_SEED));
}

/* xorshift64* (Vigna). A zero state would stick at zero, so it is replaced
 * by a fixed non-zero one. */
uint64_t router_rand(uint64_t *state)
{
	uint64_t x = *state;

	if (x == 0)
		x = 0x9e3779b97f4a7c15ull;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545f4914f6cdd1dull;
}

double router_rand_unit(uint64_t *state)
{
	return unit_from_u64(router_rand(state));
}

/* See router.h. The CAS only succeeds from a value < max, so no interleaving
 * of shards can push ongoing past max. Health and draining are read first:
 * they are advisory (a slot taken just as a replica is marked unhealthy is
 * fine; the request fails over like any other replica failure). */
int router_replica_acquire(struct replica_state *r, uint32_t max)
{
	uint32_t cur;

	if (!router_replica_up(r))
		return 0;
	cur = atomic_load_explicit(&r->ongoing, memory_order_relaxed);
	do {
		if (cur >= max)
			return 0;
	} while (!atomic_compare_exchange_weak_explicit(&r->ongoing, &cur, cur + 1,
							memory_order_acquire,
							memory_order_relaxed));
	return 1;
}

/* Gives back a slot taken by router_replica_acquire. */
void router_replica_release(struct replica_state *r)
{
	uint32_t prev = atomic_fetch_sub_explicit(&r->ongoing, 1, memory_order_release);
	assert(prev > 0);
	(void)prev;
}

static inline uint64_t rendezvous_score(const struct replica_cfg *r, const char *key, size_t keylen)
{
	uint64_t seed = XXH64(r->id, strlen(r->id), 0);
	return XXH64(key, keylen, seed);
}

/* Rendezvous hashing with bounded load: candidates in descending
 * (score, then lower index) order, first with a free slot wins. Each round
 * picks the best candidate strictly below the previous one, so no allocation
 * is needed; only a full backend pays the O(n^2). */
static inline int avoided(uint64_t avoid, size_t i)
{
	return i < 64 && (avoid & (1ull << i));
}

static int pick_rendezvous(const struct backend_cfg *b, const char *key, size_t keylen,
			   uint64_t avoid)
{
	uint64_t stack[RR_SCORE_STACK];
	size_t n = b->nreplicas;
	int cached = n <= RR_SCORE_STACK;
	uint64_t prev_s = 0;
	size_t prev_i = 0;

	if (cached)
		for (size_t i = 0; i < n; i++)
			stack[i] = rendezvous_score(&b->replicas[i], key, keylen);

	for (size_t round = 0; round < n; round++) {
		int found = 0;
		uint64_t best_s = 0;
		size_t best_i = 0;

		for (size_t i = 0; i < n; i++) {
			uint64_t s = cached ? stack[i] : rendezvous_score(&b->replicas[i], key, keylen);
			/* (s, i) must come after (prev_s, prev_i) in the order */
			if (round > 0 && (s > prev_s || (s == prev_s && i <= prev_i)))
				continue;
			if (!found || s > best_s) {
				found = 1;
				best_s = s;
				best_i = i;
			}
		}
		assert(found);
		if (!avoided(avoid, best_i) &&
		    router_replica_acquire(b->replicas[best_i].state, b->max_ongoing))
			return (int)best_i;
		prev_s = best_s;
		prev_i = best_i;
	}
	return -1;
}

/* First replica with a free slot, scanning from start and wrapping. */
static int pick_scan(const struct backend_cfg *b, size_t start, uint64_t avoid)
{
	size_t n = b->nreplicas;

	for (size_t k = 0; k < n; k++) {
		size_t i = (start + k) % n;
		if (!avoided(avoid, i) && router_replica_acquire(b->replicas[i].state, b->max_ongoing))
			return (int)i;
	}
	return -1;
}
/* The end of both p2c choices: a slot on the preferred candidate a, else on
 * c, else on any replica (a scan from a random start). Index or -1. */
static int take_pair(const struct backend_cfg *b, size_t a, size_t c, uint64_t *rng)
{
	if (router_replica_acquire(b->replicas[a].state, b->max_ongoing))
		return (int)a;
	if (router_replica_acquire(b->replicas[c].state, b->max_ongoing))
		return (int)c;
	return pick_scan(b, (size_t)(router_rand(rng) % b->nreplicas), 0);
}


/* Power of two choices. Both candidates share the backend's max, so
 * comparing ongoing compares ongoing/max. Losing both races falls back to a
 * full scan from a random offset: a free slot anywhere is never missed (the
 * caller would otherwise queue a request that could have run). */
static int pick_p2c(const struct backend_cfg *b, uint64_t *rng, uint64_t avoid)
{
	size_t n = b->nreplicas;
	size_t a, c;

	if (avoid)
		return pick_scan(b, (size_t)(router_rand(rng) % n), avoid); /* a retry: rare */
	if (n == 1)
		return router_replica_acquire(b->replicas[0].state, b->max_ongoing) ? 0 : -1;
	a = (size_t)(router_rand(rng) % n);
	c = (size_t)(router_rand(rng) % (n - 1));
	if (c >= a)
		c++;
	if (atomic_load_explicit(&b->replicas[c].state->ongoing, memory_order_relaxed) <
	    atomic_load_explicit(&b->replicas[a].state->ongoing, memory_order_relaxed)) {
		size_t t = a;
		a = c;
		c = t;
	}
	return take_pair(b, a, c, rng);
}

/* least_load (docs/config.md "least_load"): replica i's load in
 * millionths of one request (load_cost): ringroute's own requests in
 * flight, plus the requests the replica says wait in it and its KV-cache
 * use near saturation when it has a fresh report. Absolute counts, not
 * fractions of the cap: replicas of one backend are alike, so a request
 * ahead delays a new one as much on any of them, whatever the cap (a
 * high cap made ongoing / max ~0, leaving the choice to KV use alone).
 * Without a fresh report (none, aged out, or only bad ones) it is
 * ongoing, plain p2c. The clock is read once per pick, and only when a
 * candidate has a report. */
static uint64_t load_score(const struct backend_cfg *b, size_t i, uint64_t *now)
{
	struct replica_state *rs = b->replicas[i].state;
	uint32_t ongoing = atomic_load_explicit(&rs->ongoing, memory_order_relaxed);
	uint32_t queue, kv;

	if (!atomic_load_explicit(&rs->load_ms, memory_order_relaxed))
		return load_cost(ongoing, 0, 0);
	if (!*now)
		*now = clock_now_ms();
	if (!load_fresh(rs, *now, b->load_max_age_ms, &queue, &kv))
		return load_cost(ongoing, 0, 0);
	return load_cost(ongoing, queue, kv);
}

/* Power of two choices on load_score: two distinct candidates at random,
 * the lower score is tried first (ties: the first drawn), then the other,
 * then a scan: the same slot-taking as p2c (take_pair), so the cap holds
 * exactly and a full replica is never chosen, however low it reports. */
static int pick_least_load(const struct backend_cfg *b, uint64_t *rng)
{
	size_t n = b->nreplicas, a, c;
	uint64_t now = 0;

	if (n == 1)
		return router_replica_acquire(b->replicas[0].state, b->max_ongoing) ? 0 : -1;
	a = (size_t)(router_rand(rng) % n);
	c = (size_t)(router_rand(rng) % (n - 1));
	if (c >= a)
		c++;
	if (load_score(b, c, &now) < load_score(b, a, &now)) {
		size_t t = a;
		a = c;
		c = t;
	}
	return take_pair(b, a, c, rng);
}

/* Weights (docs/config.md "replicas"): only a backend whose replicas'
 * weights differ (b->weighted) pays for them; the others take the paths
 * above unchanged. */

/* Replica i's share of b at now (router_replica_weight), 0 while it is
 * not up (drained, unhealthy, ejected, in a Retry-After): the others then
 * split its share by their weights, instead of a draw that lands on it
 * falling through to the unweighted scan. */
static inline uint64_t weight_of(const struct backend_cfg *b, size_t i, uint64_t now)
{
	if (!router_replica_up(b->replicas[i].state))
		return 0;
	return router_replica_weight(b, &b->replicas[i], now);
}

/* The clock for weight_of, read only when slow start needs it. */
static inline uint64_t weight_now(const struct backend_cfg *b)
{
	return b->slow_start_ms ? clock_now_ms() : 0;
}

/* The replica whose cumulative weight interval holds target (< the sum of
 * the weights of all replicas but skip; skip >= n: none skipped). */
static size_t weighted_index(const struct backend_cfg *b, uint64_t target, size_t skip,
			     uint64_t now)
{
	size_t last = 0;

	for (size_t i = 0; i < b->nreplicas; i++) {
		uint64_t w;

		if (i == skip)
			continue;
		w = weight_of(b, i, now);
		if (target < w)
			return i;
		target -= w;
		if (w)
			last = i;
	}
	return last; /* weights changed under us (slow start, health): the last up one */
}

/* Weighted power of two choices: two distinct candidates drawn with
 * probability proportional to weight; the second takes the request only
 * when, with it, its ongoing per weight would still be at most the
 * first's: (oc + 1) / wc <= oa / wa. Idle replicas so get exactly their
 * weight's share (the first drawn keeps every tie), under load a heavier
 * replica stays proportionally fuller, and an idle replica at a tenth of
 * its weight (slow start) does not win against every replica with a
 * request in flight, as comparing ongoing / weight alone would have it
 * (0 beats anything). With equal weights this is plain p2c. */
/* The two candidates of a weighted choice: a drawn with probability
 * proportional to its weight, c likewise among the others (the next one
 * when a holds all the weight), their weights in *wa, *wc. Returns false
 * when no replica has weight (none up): the caller scans instead. */
static bool draw_weighted_pair(const struct backend_cfg *b, uint64_t *rng, size_t *a,
			       size_t *c, uint64_t *wa, uint64_t *wc)
{
	uint64_t total = 0, now = weight_now(b);

	for (size_t i = 0; i < b->nreplicas; i++)
		total += weight_of(b, i, now);
	if (!total)
		return false;
	*a = weighted_index(b, router_rand(rng) % total, SIZE_MAX, now);
	*wa = weight_of(b, *a, now);
	*c = total > *wa ? weighted_index(b, router_rand(rng) % (total - *wa), *a, now)
			 : (*a + 1) % b->nreplicas;
	*wc = weight_of(b, *c, now);
	return true;
}

static int pick_p2c_weighted(const struct backend_cfg *b, uint64_t *rng)
{
	uint64_t wa, wc, oa, oc;
	size_t a, c;

	if (!draw_weighted_pair(b, rng, &a, &c, &wa, &wc))
		return pick_scan(b, (size_t)(router_rand(rng) % b->nreplicas), 0); /* none up */
	oa = atomic_load_explicit(&b->replicas[a].state->ongoing, memory_order_relaxed);
	oc = atomic_load_explicit(&b->replicas[c].state->ongoing, memory_order_relaxed);
	if ((oc + 1) * wa <= oa * wc) {
		size_t t = a;
		a = c;
		c = t;
	}
	return take_pair(b, a, c, rng);
}

/* least_load with weights (or slow start): the two candidates drawn by
 * weight as in pick_p2c_weighted, and the same rule on the score: the
 * second takes the request when its score with this request added, per
 * weight, is at most the first's: (sc + 1) / wc <= sa / wa. So idle
 * replicas without reports split by weight, and a loaded or ramping
 * replica is compared by its share. Doubles: a reported queue of up to
 * LOAD_QUEUE_MAX times a weight would not fit 64 bits. */
static int pick_least_load_weighted(const struct backend_cfg *b, uint64_t *rng)
{
	uint64_t wa, wc, lnow = 0;
	uint64_t one = LOAD_KV_ONE; /* this request */
	size_t a, c;

	if (!draw_weighted_pair(b, rng, &a, &c, &wa, &wc))
		return pick_scan(b, (size_t)(router_rand(rng) % b->nreplicas), 0); /* none up */
	if ((double)(load_score(b, c, &lnow) + one) * (double)wa <=
	    (double)load_score(b, a, &lnow) * (double)wc) {
		size_t t = a;
		a = c;
		c = t;
	}
	return take_pair(b, a, c, rng);
}

/* Weighted round robin without per-replica state: pick k of a shard
 * starts at the point frac(k * 0.618...) of the cumulative weights. The
 * golden-ratio sequence fills [0, 1) evenly, so over any run of picks each
 * replica gets its weight's share within a few, spread out rather than in
 * bursts; a full replica passes on to the next one with a free slot, as in
 * plain round robin. */
static size_t rr_weighted_start(const struct backend_cfg *b, uint32_t k)
{
	uint64_t total = 0, now = weight_now(b);
	double u = (double)k * 0.6180339887498949;

	for (size_t i = 0; i < b->nreplicas; i++)
		total += weight_of(b, i, now);
	if (!total)
		return k % b->nreplicas; /* none up: the scan finds none, or one just back */
	u -= (double)(uint64_t)u;
	return weighted_index(b, (uint64_t)(u * (double)total) % total, SIZE_MAX, now);
}

/* See router.h. rng/rr_cursor may be NULL: then a local state is used
 * (p2c still works, round robin always starts at replica 0). */
static int pick(const struct backend_cfg *b, const char *key, size_t keylen, uint64_t *rng,
		uint32_t *rr_cursor, uint64_t avoid)
{
	uint64_t local_rng = (uint64_t)(uintptr_t)b ^ 0x9e3779b97f4a7c15ull;

	if (key)
		return pick_rendezvous(b, key, keylen, avoid);
	if (b->policy == POLICY_RR) {
		uint32_t start = rr_cursor ? (*rr_cursor)++ : 0;
		return pick_scan(b, b->weighted ? rr_weighted_start(b, start) : start % b->nreplicas,
				 avoid);
	}
	if (b->policy == POLICY_LEAST_LOAD && !avoid)
		return b->weighted && b->nreplicas > 1 ? pick_least_load_weighted(b, rng ? rng : &local_rng)
						       : pick_least_load(b, rng ? rng : &local_rng);
	if (b->weighted && !avoid && b->nreplicas > 1)
		return pick_p2c_weighted(b, rng ? rng : &local_rng);
	return pick_p2c(b, rng ? rng : &local_rng, avoid);
}

int router_pick_replica(const struct backend_cfg *b, const char *key, size_t keylen,
			uint64_t *rng, uint32_t *rr_cursor)
{
	return router_pick_replica_avoid(b, key, keylen, rng, rr_cursor, 0);
}

int router_pick_replica_avoid(const struct backend_cfg *b, const char *key, size_t keylen,
			      uint64_t *rng, uint32_t *rr_cursor, uint64_t avoid)
{
	int idx;

	if (b->nreplicas == 0)
		return -1;
	idx = pick(b, key, keylen, rng, rr_cursor, avoid);
	/* Only replicas to avoid have a slot: one of them is better than a
	 * wait (the caller decides whether to retry there). */
	if (idx < 0 && avoid)
		idx = pick(b, key, keylen, rng, rr_cursor, 0);
	return idx;
}

/* ---- routing on the request body ---- */

/* See router.h. */
const struct endpoint_cfg *router_match_model(const struct config *c,
					      const struct endpoint_cfg *ep, unsigned method,
					      const char *model, size_t len)
{
	const struct endpoint_cfg *any = NULL;
	size_t i = (size_t)(ep - c->endpoints);

	for (; i < c->nendpoints; i++) {
		const struct endpoint_cfg *e = &c->endpoints[i];

		if (e->route_len != ep->route_len || memcmp(e->route, ep->route, ep->route_len) != 0)
			break;
		if (e->methods && (method >= 64 || !(e->methods & (1ull << method))))
			continue;
		if (!e->nmodels) {
			if (!any)
				any = e;
			continue;
		}
		if (!model)
			continue;
		for (size_t k = 0; k < e->nmodels; k++)
			if (strlen(e->models[k]) == len && memcmp(e->models[k], model, len) == 0)
				return e;
	}
	return any;
}

static inline uint32_t ongoing_of(const struct backend_cfg *b, size_t i)
{
	return atomic_load_explicit(&b->replicas[i].state->ongoing, memory_order_relaxed);
}

/* The least loaded replica that is up and below the cap (ties: the first
 * from a random start, so that idle replicas share new prefixes and
 * models), or -1; *least gets its ongoing. Advisory: the caller takes the
 * slot. */
static int least_loaded(const struct backend_cfg *b, uint64_t *rng, uint32_t *least)
{
	size_t n = b->nreplicas, start = (size_t)(router_rand(rng) % n);
	int best = -1;
	uint32_t lo = UINT32_MAX;

	for (size_t k = 0; k < n; k++) {
		size_t i = (start + k) % n;
		uint32_t o = ongoing_of(b, i);
		if (o < lo && o < b->max_ongoing && router_replica_up(b->replicas[i].state)) {
			lo = o;
			best = (int)i;
		}
	}
	*least = lo;
	return best;
}

/* A slot on the least loaded replica, else on any (a scan): index or -1. */
static int take_least(const struct backend_cfg *b, uint64_t *rng)
{
	uint32_t lo;
	int i = least_loaded(b, rng, &lo);

	if (i >= 0 && router_replica_acquire(b->replicas[i].state, b->max_ongoing))
		return i;
	return pick_scan(b, (size_t)(router_rand(rng) % b->nreplicas), 0);
}

/* Multiplexing: the least loaded holder of the model below the cap, else
 * the least loaded of all (it will load the model: a spill when the
 * holders are full); the replica chosen notes the model. */
static int pick_mux(const struct backend_cfg *b, uint64_t id, uint64_t *rng, uint64_t avoid)
{
	size_t n = b->nreplicas, start = (size_t)(router_rand(rng) % n);
	int best = -1, idx = -1;
	uint32_t lo = UINT32_MAX;
	struct mux_lru *l;

	for (size_t k = 0; k < n; k++) {
		size_t i = (start + k) % n;
		struct replica_state *r = b->replicas[i].state;
		struct mux_lru *m = atomic_load_explicit(&r->mux, memory_order_acquire);
		uint32_t o;

		if (!m || avoided(avoid, i) || !mux_holds(m, b->mux_max_models, id))
			continue;
		o = ongoing_of(b, i);
		if (o < lo && o < b->max_ongoing && router_replica_up(r)) {
			lo = o;
			best = (int)i;
		}
	}
	if (best >= 0 && router_replica_acquire(b->replicas[best].state, b->max_ongoing))
		idx = best;
	else if (avoid)
		idx = pick_scan(b, start, avoid);
	else
		idx = take_least(b, rng);
	if (idx >= 0 && (l = atomic_load_explicit(&b->replicas[idx].state->mux, memory_order_acquire)))
		mux_note(l, b->mux_max_models, id);
	return idx;
}

/* The replica that is up and below the cap with the lowest load_score
 * (ties: the first from a random start, so that idle replicas share new
 * prefixes), or -1; *least gets its score. Advisory: the caller takes the
 * slot. */
static int least_scored(const struct backend_cfg *b, uint64_t *rng, uint64_t *now,
			uint64_t *least)
{
	size_t n = b->nreplicas, start = (size_t)(router_rand(rng) % n);
	int best = -1;
	uint64_t lo = UINT64_MAX;

	for (size_t k = 0; k < n; k++) {
		size_t i = (start + k) % n;
		uint64_t sc;

		if (ongoing_of(b, i) >= b->max_ongoing || !router_replica_up(b->replicas[i].state))
			continue;
		sc = load_score(b, i, now);
		if (sc < lo) {
			lo = sc;
			best = (int)i;
		}
	}
	*least = lo;
	return best;
}

/* Prefix affinity (docs/config.md "Policy prefix"): the replica of the
 * longest matching prefix unless prefix_spill says its load outweighs
 * what the match saves, or it is full; else the least loaded (by
 * load_score: ongoing, plus reported load when the backend reads
 * reports); the choice is recorded for the request's blocks. */
static int pick_prefix(const struct backend_cfg *b, const struct route_hint *h, uint64_t *rng,
		       uint64_t avoid)
{
	struct prefix_table *t = atomic_load_explicit(&b->state->prefix, memory_order_acquire);
	int idx = -1, cached = -1, least;
	uint64_t now = 0, lo;
	size_t matched = 0;

	if (avoid)
		idx = pick_scan(b, (size_t)(router_rand(rng) % b->nreplicas), avoid); /* a retry */
	else {
		least = least_scored(b, rng, &now, &lo);
		if (t && h && h->nblocks)
			cached = prefix_lookup(t, h->blocks, h->nblocks, b->nreplicas, &matched);
		if (cached >= 0 && cached != least && least >= 0 &&
		    prefix_spill(&b->prefix, load_score(b, (size_t)cached, &now), lo,
				 (uint64_t)matched * b->prefix.block_bytes))
			cached = -1;
		if (cached >= 0 && router_replica_acquire(b->replicas[cached].state, b->max_ongoing))
			idx = cached;
		else if (least >= 0 && router_replica_acquire(b->replicas[least].state, b->max_ongoing))
			idx = least;
		else
			idx = pick_scan(b, (size_t)(router_rand(rng) % b->nreplicas), 0);
	}
	if (idx >= 0 && t && h && h->nblocks)
		prefix_record(t, h->blocks, h->nblocks, (size_t)idx);
	return idx;
}

int router_pick_replica_hint(const struct backend_cfg *b, const struct route_hint *hint,
			     const char *key, size_t keylen, uint64_t *rng, uint32_t *rr_cursor,
			     uint64_t avoid)
{
	uint64_t local_rng = (uint64_t)(uintptr_t)b ^ 0x9e3779b97f4a7c15ull;

	if (b->nreplicas == 0)
		return -1;
	if (!rng)
		rng = &local_rng;
	if (!key && hint && hint->mux_id && b->mux_max_models)
		return pick_mux(b, hint->mux_id, rng, avoid);
	if (!key && b->policy == POLICY_PREFIX)
		return pick_prefix(b, hint, rng, avoid);
	return router_pick_replica_avoid(b, key, keylen, rng, rr_cursor, avoid);
}
