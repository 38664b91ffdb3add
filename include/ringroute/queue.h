/* Per-backend queues of one shard and the cross-shard wake-ups (docs/ARCHITECTURE.md
 * "Queued requests"). A request that finds every replica of its
 * backend full waits in its shard's FIFO for that backend; the backend's
 * shared state counts waiters process-wide (max_queued_requests) and
 * publishes, per shard, the age of its oldest waiter, so that a slot freed
 * on any shard goes to the oldest waiter in the process.
 *
 * The queue links struct queue_entry, embedded in its owner (a request);
 * it never looks inside the owner. Deciding what to do with the entry at
 * the front (dispatch it, time it out) is the request layer's. */
#ifndef RINGROUTE_QUEUE_H
#define RINGROUTE_QUEUE_H

#include <stdint.h>

#include "ringroute/config.h"
#include "ringroute/list.h"
#include "ringroute/timer.h"

struct shard;

#define QUEUE_TICK_MS 5u /* every shard with waiters retries this often: a
                          * wake-up lost to a race costs at most this */

/* A shard's FIFO of entries waiting for a slot of one backend. */
struct bqueue {
	struct list node;          /* in shard.queued */
	struct backend_state *bs;  /* referenced */
	struct list entries;       /* oldest first */
	uint32_t n;
};

struct queue_entry {
	struct list node;          /* in bq->entries while queued */
	struct bqueue *bq;         /* NULL: not queued */
	uint64_t t_queued_us;      /* first enqueue; kept across requeues, 0 = never */
	uint64_t t_entered_us;     /* the latest enqueue: when the current wait began */
	uint64_t deadline_us;      /* leaves with 503 once the clock passes it */
};

static inline void queue_entry_init(struct queue_entry *e)
{
	list_init(&e->node);
	e->bq = NULL;
	e->t_queued_us = 0;
	e->t_entered_us = 0;
	e->deadline_us = 0;
}
static inline int queue_entry_queued(const struct queue_entry *e) { return e->bq != NULL; }

/* Append e to this shard's FIFO for bs, if fewer than max_queued entries
 * wait for bs process-wide. The first enqueue of e stamps t_queued_us =
 * now_us and the deadline now_us + timeout_ms (a requeue keeps both);
 * every enqueue stamps t_entered_us = now_us.
 * Returns 0 (queued; the queue tick is armed), -ENOSPC (queue full) or
 * -ENOMEM (nothing changed on either error). */
int queue_add(struct shard *s, struct backend_state *bs, uint32_t max_queued,
	      struct queue_entry *e, uint64_t now_us, uint32_t timeout_ms);
/* Take e out of its queue (no-op when not queued). */
void queue_remove(struct shard *s, struct queue_entry *e);
/* The oldest entry of q, or NULL. */
struct queue_entry *queue_front(struct bqueue *q);

/* Does another shard hold an older waiter for q's backend than one queued
 * at t? Then that shard should take the next free slot: it is woken and 1
 * returned; 0 otherwise. */
int queue_older_elsewhere(struct shard *s, struct bqueue *q, uint64_t t);
/* A slot of bs was freed on this shard: the shard with the oldest waiter
 * for bs is told (this one through s->retry_pending, others by MSG_RING). */
void queue_slot_freed(struct shard *s, struct backend_state *bs);
/* Keep the queue tick running while any entry waits on this shard. */
void queue_arm_tick(struct shard *s);

/* Per-shard set-up (cb: the tick's callback, the request layer's retry)
 * and teardown after the loop (frees the FIFOs; entries are the owners'). */
void queue_shard_init(struct shard *s, void (*tick)(struct timer *t, void *ctx));
void queue_shard_teardown(struct shard *s);

#endif
