/* Prefix-cache affinity: block hashes and the shared table (see prefix.h). */
#include "ringroute/prefix.h"

#include <string.h>

#include <xxhash.h>

#include "ringroute/alloc.h"
#include "ringroute/load.h"

#define PREFIX_SEED 0x7072656669787331ull /* "prefixs1": block 0's seed */
#define TAG_MASK (~0xFFFFull)

struct prefix_table *prefix_table_new(uint32_t entries)
{
	uint64_t n = 1;
	struct prefix_table *t;

	while (n < entries)
		n <<= 1;
	t = mi_zalloc(sizeof(*t) + n * sizeof(t->slot[0]));
	if (!t)
		return NULL;
	t->mask = n - 1;
	return t;
}

void prefix_table_free(struct prefix_table *t)
{
	mi_free(t);
}

size_t prefix_hash(const struct model_span *spans, size_t n, uint32_t block_bytes, uint64_t *out,
		   size_t max)
{
	char buf[PREFIX_MAX_BLOCK_BYTES];
	uint64_t h = PREFIX_SEED;
	size_t have = 0, nb = 0; /* bytes of the block in buf */

	if (!block_bytes || block_bytes > PREFIX_MAX_BLOCK_BYTES)
		return 0;
	for (size_t i = 0; i < n && nb < max; i++) {
		const char *p = spans[i].p;
		size_t left = spans[i].len;

		/* Finish a block begun in the span before. */
		if (have) {
			size_t take = block_bytes - have < left ? block_bytes - have : left;
			memcpy(buf + have, p, take);
			have += take;
			p += take;
			left -= take;
			if (have < block_bytes)
				continue;
			h = XXH3_64bits_withSeed(buf, block_bytes, h);
			out[nb++] = h;
			have = 0;
		}
		/* Whole blocks straight from the span: no copy. */
		while (left >= block_bytes && nb < max) {
			h = XXH3_64bits_withSeed(p, block_bytes, h);
			out[nb++] = h;
			p += block_bytes;
			left -= block_bytes;
		}
		if (left && nb < max) {
			memcpy(buf, p, left);
			have = left;
		}
	}
	return nb;
}

static inline int slot_replica(const struct prefix_table *t, uint64_t h)
{
	uint64_t v = atomic_load_explicit(&t->slot[h & t->mask], memory_order_relaxed);

	if (!v || (v & TAG_MASK) != (h & TAG_MASK))
		return -1;
	return (int)(v & 0xFFFF) - 1;
}

int prefix_lookup(const struct prefix_table *t, const uint64_t *h, size_t n, size_t nreplicas,
		  size_t *matched)
{
	size_t lo = 0, hi = n; /* the answer k (blocks matched) is in [lo, hi] */
	int r = -1;

	*matched = 0;
	if (!n)
		return -1;
	/* Longest first is the common case of a long shared prefix: one
	 * probe when the whole prompt was seen. */
	r = slot_replica(t, h[n - 1]);
	if (r >= 0 && (size_t)r < nreplicas) {
		*matched = n;
		return r;
	}
	hi = n - 1;
	r = -1;
	while (lo < hi) {
		size_t mid = lo + (hi - lo + 1) / 2; /* try mid blocks: h[mid - 1] */
		int x = slot_replica(t, h[mid - 1]);
		if (x >= 0 && (size_t)x < nreplicas) {
			lo = mid;
			r = x;
		} else {
			hi = mid - 1;
		}
	}
	if (lo == 0)
		return -1;
	if (r < 0) { /* lo was reached without its own probe */
		r = slot_replica(t, h[lo - 1]);
		if (r < 0 || (size_t)r >= nreplicas)
			return -1;
	}
	*matched = lo;
	return r;
}

void prefix_record(struct prefix_table *t, const uint64_t *h, size_t n, size_t ridx)
{
	if (ridx >= PREFIX_NO_REPLICA)
		return;
	for (size_t i = 0; i < n; i++) {
		uint64_t v = (h[i] & TAG_MASK) | (uint64_t)(ridx + 1);
		_Atomic uint64_t *s = &t->slot[h[i] & t->mask];
		/* A store only when it changes: a hot prefix read by every
		 * shard does not bounce its cache line on each request. */
		if (atomic_load_explicit(s, memory_order_relaxed) != v)
			atomic_store_explicit(s, v, memory_order_relaxed);
	}
}

/* See prefix.h. Doubles: the loads are up to ~5e15 millionths, the
 * products would not fit 64 bits. */
int prefix_spill(const struct prefix_cfg *c, uint64_t cached, uint64_t least,
		 uint64_t matched_bytes)
{
	double cl, ll, d;

	if (cached <= least)
		return 0;
	cl = (double)cached / LOAD_KV_ONE;
	ll = (double)least / LOAD_KV_ONE;
	d = cl - ll;
	if (d > (double)c->balance_abs && cl > c->balance_rel * ll)
		return 1;
	return c->bytes_per_load && d * (double)c->bytes_per_load > (double)matched_bytes;
}
