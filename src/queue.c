/* Per-backend queues and the cross-shard wake-ups (see queue.h). */
#include "ringroute/queue.h"

#include <errno.h>
#include <stdatomic.h>

#include "ringroute/alloc.h"
#include "ringroute/shard.h"
#include "ringroute/timer.h"
#include "ringroute/xring.h"

/* This shard's FIFO for bs, created on first use. NULL on ENOMEM. */
static struct bqueue *bq_get(struct shard *s, struct backend_state *bs)
{
	struct list *pos, *tmp;
	struct bqueue *q;

	list_for_each_safe(pos, tmp, &s->queued) {
		q = container_of(pos, struct bqueue, node);
		if (q->bs == bs)
			return q;
	}
	q = mi_zalloc(sizeof(*q));
	if (!q)
		return NULL;
	list_init(&q->node);
	list_init(&q->entries);
	q->bs = bs;
	atomic_fetch_add(&bs->refs, 1);
	list_push_back(&s->queued, &q->node);
	return q;
}

/* Publish this shard's oldest waiter for the backend, so that a slot freed
 * on any shard wakes the shard whose waiter is oldest process-wide. */
static void bq_publish(struct shard *s, struct bqueue *q)
{
	uint64_t bit = 1ull << s->id;

	if (q->n) {
		struct queue_entry *head = queue_front(q);
		atomic_store(&q->bs->oldest_ns[s->id], head->t_queued_us);
		atomic_fetch_or(&q->bs->waiting_shards, bit);
	} else {
		atomic_fetch_and(&q->bs->waiting_shards, ~bit);
	}
}

void queue_arm_tick(struct shard *s)
{
	if (!timer_armed(&s->queue_tick))
		timer_arm(&s->tw, &s->queue_tick, QUEUE_TICK_MS);
}

int queue_add(struct shard *s, struct backend_state *bs, uint32_t max_queued,
	      struct queue_entry *e, uint64_t now_us, uint32_t timeout_ms)
{
	struct bqueue *q;

	if (atomic_fetch_add(&bs->queued, 1) >= max_queued) {
		atomic_fetch_sub(&bs->queued, 1);
		return -ENOSPC;
	}
	q = bq_get(s, bs);
	if (!q) {
		atomic_fetch_sub(&bs->queued, 1);
		return -ENOMEM;
	}
	if (!e->t_queued_us) {
		e->t_queued_us = now_us;
		e->deadline_us = now_us + (uint64_t)timeout_ms * 1000u;
	}
	e->t_entered_us = now_us;
	e->bq = q;
	list_push_back(&q->entries, &e->node);
	q->n++;
	bq_publish(s, q);
	queue_arm_tick(s);
	return 0;
}

void queue_remove(struct shard *s, struct queue_entry *e)
{
	struct bqueue *q = e->bq;

	if (!q)
		return;
	list_del_init(&e->node);
	e->bq = NULL;
	q->n--;
	atomic_fetch_sub(&q->bs->queued, 1);
	bq_publish(s, q);
}

struct queue_entry *queue_front(struct bqueue *q)
{
	return q->n ? container_of(q->entries.next, struct queue_entry, node) : NULL;
}

/* The shard (other than skip) whose oldest waiter for bs is older than
 * (t, tie_id) -- ties go to the lower shard id -- or -1 if none is. */
static int oldest_waiter_shard(const struct shard *s, struct backend_state *bs, int skip,
			       uint64_t t, unsigned tie_id)
{
	uint64_t mask = atomic_load(&bs->waiting_shards);
	int best = -1;

	for (unsigned i = 0; mask && i < s->proxy_nshards; i++) {
		uint64_t ti;

		if (!(mask & (1ull << i)) || (int)i == skip)
			continue;
		ti = atomic_load(&bs->oldest_ns[i]);
		if (ti < t || (ti == t && i < tie_id)) {
			t = ti;
			tie_id = i;
			best = (int)i;
		}
	}
	return best;
}

int queue_older_elsewhere(struct shard *s, struct bqueue *q, uint64_t t)
{
	int best = oldest_waiter_shard(s, q->bs, (int)s->id, t, s->id);

	if (best < 0)
		return 0;
	xring_msg(s, s->peers[best], MSG_WAKE);
	return 1;
}

void queue_slot_freed(struct shard *s, struct backend_state *bs)
{
	int best = oldest_waiter_shard(s, bs, -1, UINT64_MAX, UINT32_MAX);

	if (best < 0)
		return;
	if ((unsigned)best == s->id)
		s->retry_pending = 1;
	else
		xring_msg(s, s->peers[best], MSG_WAKE);
}

void queue_shard_init(struct shard *s, void (*tick)(struct timer *t, void *ctx))
{
	timer_init(&s->queue_tick, tick);
}

void queue_shard_teardown(struct shard *s)
{
	struct list *pos;

	while ((pos = list_pop_front(&s->queued))) {
		struct bqueue *q = container_of(pos, struct bqueue, node);
		struct list *e;

		/* Entries left are their owners'; only unlink them. */
		while ((e = list_pop_front(&q->entries)))
			container_of(e, struct queue_entry, node)->bq = NULL;
		registry_backend_unref(q->bs);
		mi_free(q);
	}
}
