/* Prefix-cache affinity (docs/config.md policy "prefix"): a prompt cut
 * into blocks of block_bytes, each block's hash chained on the one
 * before (XXH3 seeded with the previous hash), so block k's hash names
 * the whole prefix up to it; a bounded table, process-wide per backend,
 * of which replica served each such prefix last.
 *
 * The table is lossy on purpose: a direct-mapped array of 64-bit atomic
 * slots, each (the hash's top 48 bits | replica index + 1). Shards read
 * and write it with relaxed atomics, no lock: a slot overwritten by
 * another prefix, or two shards racing on one, only makes one choice
 * less cache-aware, never wrong (the caps are taken apart from it). */
#ifndef RINGROUTE_PREFIX_H
#define RINGROUTE_PREFIX_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "ringroute/config.h"
#include "ringroute/model.h"

/* Blocks hashed per request at most: a longer prompt's affinity is that
 * of its first PREFIX_MAX_BLOCKS blocks. */
#define PREFIX_MAX_BLOCKS 4096
#define PREFIX_MAX_BLOCK_BYTES 4096 /* config bound; a block crossing spans is copied */
#define PREFIX_NO_REPLICA 0xFFFFu   /* replica indexes at or above this are not recorded */

struct prefix_table {
	uint64_t mask;               /* slots - 1 */
	_Atomic uint64_t slot[];
};

/* A table of entries slots (rounded up to a power of 2). NULL on ENOMEM. */
struct prefix_table *prefix_table_new(uint32_t entries);
void prefix_table_free(struct prefix_table *t);

/* The chained hashes of the full blocks of the prompt spans[0..n) (taken
 * as one run of bytes; a last partial block is not hashed) into out, at
 * most max. Returns how many. */
size_t prefix_hash(const struct model_span *spans, size_t n, uint32_t block_bytes, uint64_t *out,
		   size_t max);

/* The replica that served the longest recorded prefix of h[0..n): found
 * by binary search for the last block whose slot names one (a recorded
 * chain is recorded whole, so a match at k means matches before it;
 * lossy slots make this a good guess, not a proof). Returns its index,
 * or -1 when none matches or it is not below nreplicas; *matched gets the
 * blocks matched (0 when -1). */
int prefix_lookup(const struct prefix_table *t, const uint64_t *h, size_t n, size_t nreplicas,
		  size_t *matched);

/* Record that replica ridx served the prefixes h[0..n). */
void prefix_record(struct prefix_table *t, const uint64_t *h, size_t n, size_t ridx);

/* Whether policy prefix passes over the replica holding the longest
 * match (docs/config.md "Policy prefix"): cached and least are the loads
 * (load_cost units, LOAD_KV_ONE = one request) of that replica and of the
 * least loaded one, matched_bytes the prompt bytes the match covers.
 * 1 (take the least loaded) when SGLang's balance bound holds, C - L >
 * balance_abs and C > balance_rel x L, or when the load difference in
 * requests exceeds matched_bytes / bytes_per_load (what queueing behind
 * the extra requests costs outweighs the prefill the match saves);
 * 0 (take the cached replica) otherwise. Pure. */
int prefix_spill(const struct prefix_cfg *c, uint64_t cached, uint64_t least,
		 uint64_t matched_bytes);

#endif
