/* Replica and backend runtime state, shared by every shard and kept across
 * config snapshots (see config.h). The registry maps a key to one state
 * object; snapshots and in-flight requests hold references on it. A state
 * whose refcount reaches zero stays on the registry list until the control
 * thread calls registry_collect(), so that a replica removed and re-added
 * between two collects keeps its counters.
 *
 * States made without a registry (reg == NULL, used by tests and tools) are
 * "private": they are not on any list and the last unref frees them. */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "ringroute/alloc.h"
#include "ringroute/clock.h"
#include "ringroute/config.h"
#include "ringroute/metrics.h"
#include "ringroute/multiplex.h"
#include "ringroute/prefix.h"

/* Frees a replica state that is on no list and referenced by nobody. */
static void replica_state_free(struct replica_state *r)
{
	/* r->pools[] were made by the shards (mi_zalloc in upstream.c). With
	 * no reference left, no upstream connection exists (each holds one),
	 * so every pool is empty and no shard can reach it any more. */
	for (unsigned i = 0; i < RR_MAX_SHARDS; i++) {
		mi_free(atomic_exchange(&r->pools[i], NULL));
	}
	mux_lru_free(atomic_exchange(&r->mux, NULL));
	free(r->key);
	r->key = NULL;
	free(r);
}

static void backend_state_free(struct backend_state *b)
{
	/* With no reference left, no request or shadow copy points at b, so
	 * no shard can reach its counters any more. */
	for (unsigned i = 0; i < RR_MAX_SHARDS; i++)
		mi_free(atomic_exchange(&b->metrics[i], NULL));
	prefix_table_free(atomic_exchange(&b->prefix, NULL));
	free(b->name);
	b->name = NULL;
	free(b);
}

/* Initialises an empty registry. Cannot fail (a default mutex needs no
 * resources on Linux). */
void registry_init(struct replica_registry *reg)
{
	pthread_mutex_init(&reg->lock, NULL);
	list_init(&reg->replicas);
	list_init(&reg->backends);
	dns_cache_init(&reg->dns);
}

/* Frees every state whose refcount is zero and returns how many states
 * (replicas + backends) remain. A zero refcount cannot go up again without
 * the lock (only registry_replica/registry_backend revive a state, and they
 * hold it), so the check-then-free is race free. */
size_t registry_collect(struct replica_registry *reg)
{
	struct list *pos, *tmp;
	size_t remain = 0;

	pthread_mutex_lock(&reg->lock);
	list_for_each_safe(pos, tmp, &reg->replicas) {
		struct replica_state *r = container_of(pos, struct replica_state, reg_node);
		if (atomic_load(&r->refs) == 0) {
			list_del_init(&r->reg_node);
			replica_state_free(r);
		} else {
			remain++;
		}
	}
	list_for_each_safe(pos, tmp, &reg->backends) {
		struct backend_state *b = container_of(pos, struct backend_state, reg_node);
		if (atomic_load(&b->refs) == 0) {
			list_del_init(&b->reg_node);
			backend_state_free(b);
		} else {
			remain++;
		}
	}
	pthread_mutex_unlock(&reg->lock);
	return remain;
}

/* Frees every state, referenced or not, and the lock. Call only after every
 * config snapshot and request using the registry is gone. */
void registry_destroy(struct replica_registry *reg)
{
	struct list *pos, *tmp;

	pthread_mutex_lock(&reg->lock);
	list_for_each_safe(pos, tmp, &reg->replicas) {
		struct replica_state *r = container_of(pos, struct replica_state, reg_node);
		list_del_init(&r->reg_node);
		replica_state_free(r);
	}
	list_for_each_safe(pos, tmp, &reg->backends) {
		struct backend_state *b = container_of(pos, struct backend_state, reg_node);
		list_del_init(&b->reg_node);
		backend_state_free(b);
	}
	pthread_mutex_unlock(&reg->lock);
	pthread_mutex_destroy(&reg->lock);
	dns_cache_destroy(&reg->dns);
}

/* Allocates a fresh replica state (refs 1, healthy) for key/addr; its node is
 * self-linked (not on a list). NULL on allocation failure. */
static struct replica_state *replica_state_new(const char *key, const struct rr_addr *addr)
{
	struct replica_state *r = NULL;

	if (posix_memalign((void **)&r, 64, sizeof(*r)) != 0)
		return NULL;
	memset(r, 0, sizeof(*r));
	r->key = strdup(key);
	if (!r->key) {
		free(r);
		return NULL;
	}
	atomic_init(&r->ongoing, 0);
	atomic_init(&r->healthy, 1);
	atomic_init(&r->draining, 0);
	atomic_init(&r->refs, 1);
	atomic_init(&r->ewma_us, 0);
	atomic_init(&r->ejected_until_ms, 0); /* the rest of outlier: zeroed above */
	atomic_init(&r->up_since_ms, clock_now_ms()); /* new: slow start ramps from here */
	if (addr)
		r->addr = *addr;
	list_init(&r->reg_node);
	return r;
}

/* See config.h. The returned state carries one reference for the caller.
 * An existing state is returned as is: its counters, health and draining
 * flag are the proxy's business, not the parser's. */
struct replica_state *registry_replica(struct replica_registry *reg, const char *key,
				       const struct rr_addr *addr)
{
	struct replica_state *r;
	struct list *pos;

	if (!reg)
		return replica_state_new(key, addr);

	pthread_mutex_lock(&reg->lock);
	for (pos = reg->replicas.next; pos != &reg->replicas; pos = pos->next) {
		r = container_of(pos, struct replica_state, reg_node);
		if (strcmp(r->key, key) == 0) {
			atomic_fetch_add(&r->refs, 1);
			goto out;
		}
	}
	r = replica_state_new(key, addr);
	if (r) {
		r->reg = reg;
		list_push_back(&reg->replicas, &r->reg_node);
	}
out:
	pthread_mutex_unlock(&reg->lock);
	return r;
}

static struct backend_state *backend_state_new(const char *name)
{
	struct backend_state *b = NULL;

	if (posix_memalign((void **)&b, 64, sizeof(*b)) != 0)
		return NULL;
	memset(b, 0, sizeof(*b));
	b->name = strdup(name);
	if (!b->name) {
		free(b);
		return NULL;
	}
	atomic_init(&b->waiting_shards, 0);
	for (size_t i = 0; i < RR_MAX_SHARDS; i++)
		atomic_init(&b->oldest_ns[i], 0);
	atomic_init(&b->queued, 0);
	atomic_init(&b->refs, 1);
	for (size_t i = 0; i < RR_MAX_SHARDS; i++)
		atomic_init(&b->metrics[i], NULL);
	list_init(&b->reg_node);
	return b;
}

/* Like registry_replica, keyed by backend name. */
struct backend_state *registry_backend(struct replica_registry *reg, const char *name)
{
	struct backend_state *b;
	struct list *pos;

	if (!reg)
		return backend_state_new(name);

	pthread_mutex_lock(&reg->lock);
	for (pos = reg->backends.next; pos != &reg->backends; pos = pos->next) {
		b = container_of(pos, struct backend_state, reg_node);
		if (strcmp(b->name, name) == 0) {
			atomic_fetch_add(&b->refs, 1);
			goto out;
		}
	}
	b = backend_state_new(name);
	if (b) {
		b->reg = reg;
		list_push_back(&reg->backends, &b->reg_node);
	}
out:
	pthread_mutex_unlock(&reg->lock);
	return b;
}

/* Drops one reference. A registered state is left for registry_collect(); a
 * private one is freed by its last unref. Whether it is private must be read
 * before the decrement: afterwards a registered state may already have been
 * collected by another thread. (It is read from the write-once owner field,
 * not from reg_node, whose links other threads rewrite under the lock.)
 * NULL is ignored. */
void registry_replica_unref(struct replica_state *r)
{
	if (!r)
		return;
	int priv = r->reg == NULL;
	uint32_t prev = atomic_fetch_sub(&r->refs, 1);
	assert(prev > 0);
	if (prev == 1 && priv)
		replica_state_free(r);
}

void registry_backend_unref(struct backend_state *b)
{
	if (!b)
		return;
	int priv = b->reg == NULL;
	uint32_t prev = atomic_fetch_sub(&b->refs, 1);
	assert(prev > 0);
	if (prev == 1 && priv)
		backend_state_free(b);
}

/* See config.h. Only shard `shard` stores into metrics[shard], so a relaxed
 * load sees its own store; the release store publishes the zeroed block to
 * the control thread's acquire load. */
struct backend_metrics *registry_backend_metrics(struct backend_state *b, unsigned shard)
{
	struct backend_metrics *bm = atomic_load_explicit(&b->metrics[shard], memory_order_relaxed);

	if (!bm) {
		bm = mi_zalloc(sizeof(*bm));
		if (bm)
			atomic_store_explicit(&b->metrics[shard], bm, memory_order_release);
	}
	return bm;
}
