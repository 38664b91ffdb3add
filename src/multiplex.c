/* Model multiplexing affinity (see multiplex.h). */
#include "ringroute/multiplex.h"

#include <xxhash.h>

#include "ringroute/alloc.h"

struct mux_lru *mux_lru_new(void)
{
	return mi_zalloc(sizeof(struct mux_lru));
}

void mux_lru_free(struct mux_lru *l)
{
	mi_free(l);
}

uint64_t mux_id(const char *name, size_t len)
{
	uint64_t h = XXH3_64bits(name, len);

	return h ? h : 1;
}

bool mux_holds(struct mux_lru *l, uint32_t n, uint64_t id)
{
	if (n > MUX_MAX_MODELS)
		n = MUX_MAX_MODELS;
	for (uint32_t i = 0; i < n; i++)
		if (atomic_load_explicit(&l->id[i], memory_order_relaxed) == id)
			return true;
	return false;
}

void mux_note(struct mux_lru *l, uint32_t n, uint64_t id)
{
	uint64_t t = atomic_fetch_add_explicit(&l->tick, 1, memory_order_relaxed) + 1, oldest = UINT64_MAX;
	uint32_t victim = 0;

	if (n > MUX_MAX_MODELS)
		n = MUX_MAX_MODELS;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t u;
		if (atomic_load_explicit(&l->id[i], memory_order_relaxed) == id) {
			atomic_store_explicit(&l->used[i], t, memory_order_relaxed);
			return;
		}
		u = atomic_load_explicit(&l->used[i], memory_order_relaxed);
		if (u < oldest) {
			oldest = u;
			victim = i;
		}
	}
	atomic_store_explicit(&l->id[victim], id, memory_order_relaxed);
	atomic_store_explicit(&l->used[victim], t, memory_order_relaxed);
}
