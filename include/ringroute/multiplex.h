/* Model multiplexing affinity (docs/config.md "multiplex"): per replica,
 * the model ids it served recently, an LRU of max_models_per_replica ids
 * shared by all shards, as the replica's own model cache would be (Ray
 * Serve's serve_multiplexed_model_id).
 *
 * Lock-free and lossy: slots of 64-bit atomics (the id's hash, its last
 * use from a per-replica counter); a note replaces the least recently
 * used slot. Two shards noting two new ids at once may pick the same slot
 * (one id is lost) or one id twice (it ages out): the next request of
 * that model only loses its affinity once. Only the routing path of a
 * multiplexed backend touches it. */
#ifndef RINGROUTE_MULTIPLEX_H
#define RINGROUTE_MULTIPLEX_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MUX_MAX_MODELS 64 /* max_models_per_replica's bound */

struct mux_lru {
	_Atomic uint64_t tick;                  /* the replica's use counter */
	_Atomic uint64_t id[MUX_MAX_MODELS];    /* 0: empty */
	_Atomic uint64_t used[MUX_MAX_MODELS];  /* tick of its last use */
};

struct mux_lru *mux_lru_new(void);
void mux_lru_free(struct mux_lru *l);
/* The id of a model name (never 0). */
uint64_t mux_id(const char *name, size_t len);
/* Does l hold id among its first n slots? */
bool mux_holds(struct mux_lru *l, uint32_t n, uint64_t id);
/* id was sent to l's replica: most recently used now, evicting the least
 * recently used of the first n slots when it is new. */
void mux_note(struct mux_lru *l, uint32_t n, uint64_t id);

#endif
