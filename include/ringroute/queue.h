/* Per-backend queues of one shard and the cross-shard wake-ups (docs/ARCHITECTURE.md
 * "Queued requests"). A request that finds every replica of its backend
 * full waits in its shard's queue for that backend, ordered by priority
 * (highest first), then, within a priority, fairly across tenants
 * (weighted start-time fair queueing with a virtual clock shared by the
 * shards, so a tenant's share holds process-wide), then FIFO (or earliest
 * deadline first) within a tenant. The backend's shared state counts
 * waiters process-wide (max_queued_requests, exact), counts them per
 * tenant bucket (max_queued_per_tenant) and publishes, per shard, the key
 * of its best waiter (queue_entry_key: priority, then age or deadline), so
 * that a slot freed on any shard goes to the best waiter in the process.
 *
 * Layout of one struct bqueue, all O(1) per operation:
 *   levels            bitmap of the priorities with waiters (0..10)
 *   ring[p]           the tenants with waiters at priority p (the pick
 *                     scans them: O(active tenants), 1 without tenants)
 *   age[p]            every waiter of priority p, oldest first (eviction
 *                     takes the youngest of the lowest level; reports)
 *   tenant->lv[p]     one tenant's waiters at p: FIFO, or by deadline (edf)
 *
 * The queue links struct queue_entry, embedded in its owner (a request);
 * it never looks inside the owner. Deciding what to do with the entry at
 * the front (dispatch it, time it out) is the request layer's. */
#ifndef RINGROUTE_QUEUE_H
#define RINGROUTE_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ringroute/config.h"
#include "ringroute/list.h"
#include "ringroute/timer.h"

struct shard;

#define QUEUE_TICK_MS 5u /* every shard with waiters retries this often: a
                          * wake-up lost to a race costs at most this */
#define QUEUE_PRIO_MIN (-10)
#define QUEUE_PRIO_MAX 10         /* QUEUE_LEVELS - 1 */
#define QUEUE_TENANT_NAME_MAX 64  /* bytes of a tenant's name compared (and its hash) */
#define QUEUE_TENANT_HASH 32      /* buckets of a bqueue's tenant table */
#define QUEUE_QUANTUM 1000u       /* virtual time of one request of weight 1 (weights
                                   * <= 1000 move >= 1; 2^56 of it lasts ~10^13 requests) */

/* One tenant's waiters at one priority. */
struct qtenant_level {
	struct list ring;          /* in bq->ring[p] while n > 0 */
	struct list entries;       /* front first */
	uint32_t n;
};

/* One tenant of one shard's queue of one backend; freed when it has no waiter. */
struct qtenant {
	struct list hnode;         /* in bq->tenants[hash % QUEUE_TENANT_HASH] */
	struct qtenant_level lv[QUEUE_LEVELS];
	uint32_t n;                /* waiters, every level */
	uint32_t weight;           /* the latest waiter's endpoint's weight for it */
	uint32_t bucket;           /* in bs->tenant_queued, bs->tenant_finish */
	uint64_t hash;
	uint32_t len;
	char name[QUEUE_TENANT_NAME_MAX];
};

/* A shard's queue of entries waiting for a slot of one backend. */
struct bqueue {
	struct list node;          /* in shard.queued */
	struct backend_state *bs;  /* referenced */
	struct list tenants[QUEUE_TENANT_HASH];
	struct list ring[QUEUE_LEVELS];
	struct list age[QUEUE_LEVELS];
	uint32_t level_n[QUEUE_LEVELS];
	uint32_t levels;           /* bit p: priority p has waiters */
	uint32_t n;
};

struct queue_entry {
	struct list node;          /* in its tenant level's entries while queued */
	struct list age_node;      /* in bq->age[prio] while queued */
	struct bqueue *bq;         /* NULL: not queued */
	struct qtenant *tenant;
	uint64_t t_queued_us;      /* first enqueue; kept across requeues, 0 = never */
	uint64_t t_entered_us;     /* the latest enqueue: when the current wait began */
	uint64_t deadline_us;      /* queue_timeout_ms: leaves with 503 once the clock passes it */
	struct timer timer;        /* armed while queued for the earlier of deadline_us and
	                            * req_deadline_us; its callback is the owner's */
	/* Set by the owner before queue_add (read by it; kept while queued). */
	uint64_t req_deadline_us;  /* the request's own deadline, 0: none */
	int prio;                  /* 0..QUEUE_PRIO_MAX */
	bool edf;                  /* ordered by req_deadline_us within its tenant */
	bool fair;                 /* its endpoint has tenants: ranked by its tenant's
	                            * start tag across shards, not by its age */
	bool tenant_counted;       /* holds one of bs->tenant_queued[tenant_bucket] */
	uint32_t weight;           /* its tenant's weight, >= 1 */
	uint32_t tenant_max;       /* max_queued_per_tenant, 0: none */
	uint32_t tenant_bucket;
	const char *tenant_name;   /* borrowed for queue_add only ("" : no tenant) */
	size_t tenant_len;
};

/* expire: called (ctx = the shard) when the entry's deadline or its
 * request deadline passes while it is queued; the owner ends it. */
static inline void queue_entry_init(struct queue_entry *e, timer_cb expire)
{
	list_init(&e->node);
	list_init(&e->age_node);
	e->bq = NULL;
	e->tenant = NULL;
	e->t_queued_us = 0;
	e->t_entered_us = 0;
	e->deadline_us = 0;
	e->req_deadline_us = 0;
	timer_init(&e->timer, expire);
	e->prio = 0;
	e->edf = false;
	e->fair = false;
	e->tenant_counted = false;
	e->weight = 1;
	e->tenant_max = 0;
	e->tenant_bucket = 0;
	e->tenant_name = "";
	e->tenant_len = 0;
}
static inline int queue_entry_queued(const struct queue_entry *e) { return e->bq != NULL; }

/* The order across shards: smaller goes first. Priority (highest first),
 * then for a fair entry its tenant's start tag, else the enqueue time, or
 * for an edf entry with a deadline the deadline. */
uint64_t queue_entry_key(const struct queue_entry *e);

/* Queue e (prio, edf, weight, tenant_* and req_deadline_us set by the
 * owner) in this shard's queue for bs. The first enqueue of e stamps
 * t_queued_us = now_us and deadline_us = now_us + timeout_ms (a requeue
 * keeps both); every enqueue stamps t_entered_us and arms e->timer.
 * When max_queued entries wait for bs process-wide, e takes the place of
 * the youngest waiter of the lowest priority below e's: on this shard,
 * else on the shard that published the lowest such priority (that shard
 * owes the eviction: queue_owed_victim there). *victim is the entry of
 * this shard evicted for e (unlinked; its owner must end it), or NULL.
 * Returns 0 (queued; the queue tick is armed), -ENOSPC (queue full and
 * nothing lower), -EDQUOT (e's tenant has tenant_max waiting for bs
 * process-wide and none of its own lower waiters is here to make room:
 * a tenant at its bound takes the place of its own youngest lower
 * waiter on this shard, *victim then) or -ENOMEM (nothing changed on an
 * error). */
int queue_add(struct shard *s, struct backend_state *bs, uint32_t max_queued,
	      struct queue_entry *e, uint64_t now_us, uint32_t timeout_ms,
	      struct queue_entry **victim);
/* Take e out of its queue (no-op when not queued): it left for another
 * reason than being served (timeout, client gone, eviction). */
void queue_remove(struct shard *s, struct queue_entry *e);
/* Take e, the front of its queue, out: it is being served (its tenant's
 * finish tag and the virtual clock move on). */
void queue_take(struct shard *s, struct queue_entry *e);
/* The entry to serve next of q (highest priority; the tenant whose turn
 * it is; its front), or NULL. */
struct queue_entry *queue_front(struct bqueue *q);
/* An eviction this shard owes to an arrival on another shard (it holds
 * the place already): the youngest of this shard's lowest priority below
 * the arrival's, unlinked (the caller ends it with 503 evicted). NULL when
 * none is owed; an owed eviction without such a waiter becomes the
 * backend's debt (paid by the next removal anywhere). */
struct queue_entry *queue_owed_victim(struct shard *s, struct bqueue *q);

/* Does another shard hold a better waiter (smaller key) for q's backend
 * than key (the key of q's front now: it is published first, as the
 * virtual clock may have moved since)? Then that shard should take the
 * next free slot: it is woken and 1 returned; 0 otherwise. */
int queue_older_elsewhere(struct shard *s, struct bqueue *q, uint64_t key);
/* A slot of bs was freed on this shard: the shard with the best waiter
 * for bs is told (this one through s->retry_pending, others by MSG_RING). */
void queue_slot_freed(struct shard *s, struct backend_state *bs);
/* Keep the queue tick running while any entry waits on this shard. */
void queue_arm_tick(struct shard *s);

/* Deadlines: a completed exchange of bs took us (dispatch to its end). */
void queue_service_note(struct backend_state *bs, uint64_t us);
/* The median of bs's last SERVICE_SAMPLES service times (us), 0 before any. */
uint64_t queue_service_median(struct backend_state *bs);
/* How long a request of priority prio arriving now would wait for a slot
 * of bs: the waiters of its priority or higher process-wide, times the
 * median service time, over max_ongoing (docs/config.md). */
uint64_t queue_wait_estimate_us(struct backend_state *bs, int prio, uint32_t max_ongoing);

/* Per-shard set-up (cb: the tick's callback, the request layer's retry)
 * and teardown after the loop (frees the queues; entries are the owners'). */
void queue_shard_init(struct shard *s, void (*tick)(struct timer *t, void *ctx));
void queue_shard_teardown(struct shard *s);

#endif
