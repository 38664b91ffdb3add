/* Unit tests for the per-backend queues and the cross-shard wake-ups
 * (src/queue.c), on fake shards: zeroed struct shard with only what
 * queue.c touches set up (queued list, timer wheel, id, peers,
 * proxy_nshards) and a private backend_state (registry_backend(NULL)).
 *
 * Why: the queue is where fairness across shards lives (the oldest waiter
 * process-wide gets a freed slot) and where max_queued_requests is
 * enforced across shards; both are invisible end to end unless the timing
 * is just right. Covered: FIFO order, -ENOSPC exactly at max_queued
 * counted across two shards (nothing changed on the error), idempotent
 * remove, t_queued_us / deadline stamped on first enqueue and kept on a
 * requeue, the waiting_shards bit and oldest_ns published and cleared,
 * queue_slot_freed choosing the shard with the oldest waiter (this shard:
 * retry_pending; another: a MSG_WAKE, recorded by the fake xring_msg
 * below), ties going to the lower shard id, queue_older_elsewhere, and
 * queue_shard_teardown unlinking entries and dropping its backend_state
 * reference.
 *
 * xring_msg is defined here, so xring.o (and a real ring) is never linked. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ringroute/queue.h"
#include "ringroute/shard.h"
#include "ringroute/xring.h"

#define NSHARDS 2

/* ---- fake xring ---- */

struct msg_rec {
	struct shard *from, *to;
	enum msg_kind kind;
};
static struct msg_rec msgs[16];
static unsigned nmsgs;

void xring_msg(struct shard *s, struct shard *t, enum msg_kind kind)
{
	assert_true(nmsgs < 16);
	msgs[nmsgs++] = (struct msg_rec){.from = s, .to = t, .kind = kind};
}

/* ---- fixture ---- */

struct fx {
	struct shard *sh[NSHARDS];
	struct shard *peers[NSHARDS];
	struct backend_state *bs;
	int ticks;
};

static struct queue_entry *vic; /* queue_add's victim: NULL unless a test evicts */

static void expire(struct timer *t, void *ctx)
{
	(void)t;
	(void)ctx;
}

static void tick(struct timer *t, void *ctx)
{
	(void)t;
	(void)ctx;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	for (unsigned i = 0; i < NSHARDS; i++) {
		struct shard *s = calloc(1, sizeof(*s));

		assert_non_null(s);
		s->id = i;
		s->proxy_nshards = NSHARDS;
		s->peers = f->peers;
		list_init(&s->queued);
		timer_wheel_init(&s->tw, 0);
		queue_shard_init(s, tick);
		f->sh[i] = s;
		f->peers[i] = s;
	}
	f->bs = registry_backend(NULL, "b");
	assert_non_null(f->bs);
	nmsgs = 0;
	memset(msgs, 0, sizeof(msgs));
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	for (unsigned i = 0; i < NSHARDS; i++) {
		queue_shard_teardown(f->sh[i]);
		timer_cancel(&f->sh[i]->tw, &f->sh[i]->queue_tick);
		free(f->sh[i]);
	}
	/* Only the fixture's reference is left after the teardowns. */
	assert_int_equal(atomic_load(&f->bs->refs), 1);
	registry_backend_unref(f->bs);
	free(f);
	return 0;
}

static uint64_t waiting(const struct fx *f) { return atomic_load(&f->bs->waiting_shards); }
static uint32_t queued(const struct fx *f) { return atomic_load(&f->bs->queued); }

/* ---- tests ---- */

static void test_fifo_order(void **state)
{
	struct fx *f = *state;
	struct shard *s = f->sh[0];
	struct queue_entry e[4];
	struct bqueue *q;

	for (int i = 0; i < 4; i++) {
		queue_entry_init(&e[i], expire);
		assert_false(queue_entry_queued(&e[i]));
		assert_int_equal(queue_add(s, f->bs, 10, &e[i], 1000 + (uint64_t)i, 100, &vic), 0);
		assert_true(queue_entry_queued(&e[i]));
	}
	q = e[0].bq;
	assert_non_null(q);
	for (int i = 1; i < 4; i++)
		assert_ptr_equal(e[i].bq, q); /* one FIFO per backend per shard */
	assert_int_equal(q->n, 4);
	assert_ptr_equal(q->bs, f->bs);
	assert_int_equal(queued(f), 4);
	assert_true(timer_armed(&s->queue_tick)); /* the tick retries them */

	/* Removal from the middle keeps the order of the rest. */
	assert_ptr_equal(queue_front(q), &e[0]);
	queue_remove(s, &e[2]);
	assert_ptr_equal(queue_front(q), &e[0]);
	queue_remove(s, &e[0]);
	assert_ptr_equal(queue_front(q), &e[1]);
	queue_remove(s, &e[1]);
	assert_ptr_equal(queue_front(q), &e[3]);
	queue_remove(s, &e[3]);
	assert_null(queue_front(q));
	assert_int_equal(q->n, 0);
	assert_int_equal(queued(f), 0);

	/* Added again: at the back, in arrival order. */
	assert_int_equal(queue_add(s, f->bs, 10, &e[3], 2000, 100, &vic), 0);
	assert_int_equal(queue_add(s, f->bs, 10, &e[1], 2001, 100, &vic), 0);
	assert_ptr_equal(e[3].bq, q); /* the shard's FIFO is reused */
	assert_ptr_equal(queue_front(q), &e[3]);
	queue_remove(s, &e[3]);
	assert_ptr_equal(queue_front(q), &e[1]);
	queue_remove(s, &e[1]);
}

static void test_enospc_across_shards(void **state)
{
	struct fx *f = *state;
	struct queue_entry e[5];

	for (int i = 0; i < 5; i++)
		queue_entry_init(&e[i], expire);
	/* max 3: two on shard 0 and one on shard 1 fill it. */
	assert_int_equal(queue_add(f->sh[0], f->bs, 3, &e[0], 10, 100, &vic), 0);
	assert_int_equal(queue_add(f->sh[1], f->bs, 3, &e[1], 11, 100, &vic), 0);
	assert_int_equal(queue_add(f->sh[0], f->bs, 3, &e[2], 12, 100, &vic), 0);
	assert_int_equal(queued(f), 3);
	assert_int_equal(queue_add(f->sh[1], f->bs, 3, &e[3], 13, 100, &vic), -ENOSPC);
	assert_int_equal(queue_add(f->sh[0], f->bs, 3, &e[4], 14, 100, &vic), -ENOSPC);
	/* Nothing changed on the error. */
	assert_int_equal(queued(f), 3);
	assert_false(queue_entry_queued(&e[3]));
	assert_false(list_linked(&e[3].node));
	assert_int_equal(e[3].t_queued_us, 0);
	assert_int_equal(e[3].deadline_us, 0);
	assert_int_equal(e[0].bq->n, 2);
	assert_int_equal(e[1].bq->n, 1);

	/* One leaves on shard 1: the other shard may queue one more. */
	queue_remove(f->sh[1], &e[1]);
	assert_int_equal(queue_add(f->sh[0], f->bs, 3, &e[4], 15, 100, &vic), 0);
	assert_int_equal(queue_add(f->sh[1], f->bs, 3, &e[3], 16, 100, &vic), -ENOSPC);
	assert_int_equal(queued(f), 3);

	/* max 0: no queueing at all. */
	assert_int_equal(queue_add(f->sh[1], f->bs, 0, &e[3], 17, 100, &vic), -ENOSPC);
	assert_int_equal(queued(f), 3);

	queue_remove(f->sh[0], &e[0]);
	queue_remove(f->sh[0], &e[2]);
	queue_remove(f->sh[0], &e[4]);
	assert_int_equal(queued(f), 0);
}

static void test_remove_idempotent(void **state)
{
	struct fx *f = *state;
	struct shard *s = f->sh[0];
	struct queue_entry a, b;
	struct bqueue *q;

	queue_entry_init(&a, expire);
	queue_entry_init(&b, expire);
	queue_remove(s, &a); /* never queued: no-op */
	assert_int_equal(queued(f), 0);
	assert_int_equal(queue_add(s, f->bs, 5, &a, 1, 10, &vic), 0);
	assert_int_equal(queue_add(s, f->bs, 5, &b, 2, 10, &vic), 0);
	q = a.bq;
	queue_remove(s, &a);
	queue_remove(s, &a);
	queue_remove(s, &a);
	assert_false(queue_entry_queued(&a));
	assert_false(list_linked(&a.node));
	assert_int_equal(q->n, 1);
	assert_int_equal(queued(f), 1);
	assert_ptr_equal(queue_front(q), &b);
	assert_true(waiting(f) & 1);
	queue_remove(s, &b);
	queue_remove(s, &b);
	assert_int_equal(q->n, 0);
	assert_int_equal(queued(f), 0);
	assert_int_equal(waiting(f), 0);
}

static void test_stamps_kept_on_requeue(void **state)
{
	struct fx *f = *state;
	struct shard *s = f->sh[0];
	struct queue_entry e;

	queue_entry_init(&e, expire);
	assert_int_equal(queue_add(s, f->bs, 5, &e, 1000, 50, &vic), 0);
	assert_int_equal(e.t_queued_us, 1000);
	assert_int_equal(e.deadline_us, 1000 + 50 * 1000);
	queue_remove(s, &e);
	/* Removal keeps them: the entry may be requeued. */
	assert_int_equal(e.t_queued_us, 1000);
	assert_int_equal(e.deadline_us, 51000);
	assert_int_equal(queue_add(s, f->bs, 5, &e, 7000, 900, &vic), 0);
	assert_int_equal(e.t_queued_us, 1000);
	assert_int_equal(e.deadline_us, 51000);
	/* The published age is the first enqueue's. */
	assert_int_equal(atomic_load(&f->bs->oldest_ns[0]), 1000);
	queue_remove(s, &e);
	/* A large timeout does not overflow 32 bits. */
	queue_entry_init(&e, expire);
	assert_int_equal(queue_add(s, f->bs, 5, &e, 1, UINT32_MAX, &vic), 0);
	assert_int_equal(e.deadline_us, 1 + (uint64_t)UINT32_MAX * 1000u);
	queue_remove(s, &e);
}

static void test_publish_and_clear(void **state)
{
	struct fx *f = *state;
	struct queue_entry a, b, c;

	queue_entry_init(&a, expire);
	queue_entry_init(&b, expire);
	queue_entry_init(&c, expire);
	assert_int_equal(waiting(f), 0);
	assert_int_equal(queue_add(f->sh[0], f->bs, 9, &a, 100, 10, &vic), 0);
	assert_int_equal(waiting(f), 1u << 0);
	assert_int_equal(atomic_load(&f->bs->oldest_ns[0]), 100);
	assert_int_equal(queue_add(f->sh[0], f->bs, 9, &b, 200, 10, &vic), 0);
	assert_int_equal(atomic_load(&f->bs->oldest_ns[0]), 100); /* still the front */
	assert_int_equal(queue_add(f->sh[1], f->bs, 9, &c, 150, 10, &vic), 0);
	assert_int_equal(waiting(f), (1u << 0) | (1u << 1));
	assert_int_equal(atomic_load(&f->bs->oldest_ns[1]), 150);

	queue_remove(f->sh[0], &a);
	assert_int_equal(atomic_load(&f->bs->oldest_ns[0]), 200); /* the new front */
	assert_int_equal(waiting(f), 3);
	queue_remove(f->sh[0], &b);
	assert_int_equal(waiting(f), 1u << 1); /* shard 0 has none left */
	queue_remove(f->sh[1], &c);
	assert_int_equal(waiting(f), 0);
	assert_int_equal(queued(f), 0);
}

static void test_slot_freed_oldest(void **state)
{
	struct fx *f = *state;
	struct queue_entry a, b;

	queue_entry_init(&a, expire);
	queue_entry_init(&b, expire);

	/* Nobody waits: nobody is told. */
	queue_slot_freed(f->sh[0], f->bs);
	assert_int_equal(nmsgs, 0);
	assert_int_equal(f->sh[0]->retry_pending, 0);

	assert_int_equal(queue_add(f->sh[0], f->bs, 9, &a, 300, 10, &vic), 0);
	assert_int_equal(queue_add(f->sh[1], f->bs, 9, &b, 200, 10, &vic), 0);

	/* Freed on shard 0, oldest waiter on shard 1: a wake-up goes there. */
	queue_slot_freed(f->sh[0], f->bs);
	assert_int_equal(nmsgs, 1);
	assert_ptr_equal(msgs[0].from, f->sh[0]);
	assert_ptr_equal(msgs[0].to, f->sh[1]);
	assert_int_equal(msgs[0].kind, MSG_WAKE);
	assert_int_equal(f->sh[0]->retry_pending, 0);
	assert_int_equal(f->sh[1]->retry_pending, 0); /* the message's job */

	/* Freed on shard 1 itself: no message, its own retry. */
	queue_slot_freed(f->sh[1], f->bs);
	assert_int_equal(nmsgs, 1);
	assert_int_equal(f->sh[1]->retry_pending, 1);
	f->sh[1]->retry_pending = 0;

	/* Shard 1 emptied: shard 0's waiter is the oldest now. */
	queue_remove(f->sh[1], &b);
	queue_slot_freed(f->sh[1], f->bs);
	assert_int_equal(nmsgs, 2);
	assert_ptr_equal(msgs[1].from, f->sh[1]);
	assert_ptr_equal(msgs[1].to, f->sh[0]);
	assert_int_equal(msgs[1].kind, MSG_WAKE);
	assert_int_equal(f->sh[1]->retry_pending, 0);
	queue_slot_freed(f->sh[0], f->bs);
	assert_int_equal(nmsgs, 2);
	assert_int_equal(f->sh[0]->retry_pending, 1);
	queue_remove(f->sh[0], &a);
}

static void test_slot_freed_tie_lower_id(void **state)
{
	struct fx *f = *state;
	struct queue_entry a, b;

	queue_entry_init(&a, expire);
	queue_entry_init(&b, expire);
	/* Shard 1 queued first in wall time, but the ages are equal. */
	assert_int_equal(queue_add(f->sh[1], f->bs, 9, &b, 500, 10, &vic), 0);
	assert_int_equal(queue_add(f->sh[0], f->bs, 9, &a, 500, 10, &vic), 0);

	queue_slot_freed(f->sh[1], f->bs);
	assert_int_equal(nmsgs, 1);
	assert_ptr_equal(msgs[0].to, f->sh[0]);
	assert_int_equal(f->sh[1]->retry_pending, 0);

	queue_slot_freed(f->sh[0], f->bs);
	assert_int_equal(nmsgs, 1);
	assert_int_equal(f->sh[0]->retry_pending, 1);
	queue_remove(f->sh[0], &a);
	queue_remove(f->sh[1], &b);
}

static void test_older_elsewhere(void **state)
{
	struct fx *f = *state;
	struct queue_entry a, b;

	queue_entry_init(&a, expire);
	queue_entry_init(&b, expire);
	assert_int_equal(queue_add(f->sh[0], f->bs, 9, &a, 100, 10, &vic), 0);
	/* Alone: nobody is older. */
	assert_int_equal(queue_older_elsewhere(f->sh[0], a.bq, queue_entry_key(&a)), 0);
	assert_int_equal(nmsgs, 0);

	assert_int_equal(queue_add(f->sh[1], f->bs, 9, &b, 50, 10, &vic), 0);
	assert_int_equal(queue_older_elsewhere(f->sh[0], a.bq, queue_entry_key(&a)), 1);
	assert_int_equal(nmsgs, 1);
	assert_ptr_equal(msgs[0].from, f->sh[0]);
	assert_ptr_equal(msgs[0].to, f->sh[1]);
	assert_int_equal(msgs[0].kind, MSG_WAKE);
	assert_int_equal(queue_older_elsewhere(f->sh[1], b.bq, queue_entry_key(&b)), 0);
	assert_int_equal(nmsgs, 1);

	/* Equal ages: the lower shard id goes first. */
	queue_remove(f->sh[1], &b);
	queue_entry_init(&b, expire);
	assert_int_equal(queue_add(f->sh[1], f->bs, 9, &b, 100, 10, &vic), 0);
	assert_int_equal(queue_older_elsewhere(f->sh[0], a.bq, queue_entry_key(&a)), 0);
	assert_int_equal(queue_older_elsewhere(f->sh[1], b.bq, queue_entry_key(&b)), 1);
	assert_int_equal(nmsgs, 2);
	assert_ptr_equal(msgs[1].to, f->sh[0]);
	queue_remove(f->sh[0], &a);
	queue_remove(f->sh[1], &b);
}

static void test_teardown_unlinks(void **state)
{
	struct fx *f = *state;
	struct backend_state *bs2 = registry_backend(NULL, "b2");
	struct queue_entry e[3], g;

	assert_non_null(bs2);
	for (int i = 0; i < 3; i++)
		queue_entry_init(&e[i], expire);
	queue_entry_init(&g, expire);
	assert_int_equal(queue_add(f->sh[0], f->bs, 9, &e[0], 1, 10, &vic), 0);
	assert_int_equal(queue_add(f->sh[0], f->bs, 9, &e[1], 2, 10, &vic), 0);
	assert_int_equal(queue_add(f->sh[0], bs2, 9, &e[2], 3, 10, &vic), 0);
	assert_int_equal(queue_add(f->sh[1], f->bs, 9, &g, 4, 10, &vic), 0);
	/* Each shard's FIFO references the backend state once. */
	assert_int_equal(atomic_load(&f->bs->refs), 3);
	assert_int_equal(atomic_load(&bs2->refs), 2);

	queue_shard_teardown(f->sh[0]);
	assert_true(list_empty(&f->sh[0]->queued));
	for (int i = 0; i < 3; i++) {
		assert_false(queue_entry_queued(&e[i]));
		assert_false(list_linked(&e[i].node));
	}
	assert_int_equal(atomic_load(&f->bs->refs), 2);
	assert_int_equal(atomic_load(&bs2->refs), 1);
	/* Shard 1 is untouched. */
	assert_true(queue_entry_queued(&g));
	assert_ptr_equal(queue_front(g.bq), &g);
	queue_shard_teardown(f->sh[0]); /* twice: harmless */
	registry_backend_unref(bs2); /* the last reference: freed (ASan checks) */
	queue_remove(f->sh[1], &g);
}

/* ---- priorities, tenants, deadlines (issue 12) ---- */

static void prio_entry(struct queue_entry *e, int prio, const char *tenant)
{
	queue_entry_init(e, expire);
	e->prio = prio;
	if (tenant) {
		e->tenant_name = tenant;
		e->tenant_len = strlen(tenant);
		e->fair = true;
	}
}

/* Serve the front of q (as the request layer does) and return it. */
static struct queue_entry *serve(struct shard *s, struct bqueue *q)
{
	struct queue_entry *e = queue_front(q);

	if (e)
		queue_take(s, e);
	return e;
}

static void test_priority_order(void **state)
{
	struct fx *f = *state;
	struct shard *s = f->sh[0];
	struct queue_entry e[6];
	int prio[6] = {0, 3, 0, 10, 3, 1};
	int want[6] = {3, 1, 4, 5, 0, 2}; /* highest first, FIFO within */
	struct bqueue *q;

	for (int i = 0; i < 6; i++) {
		prio_entry(&e[i], prio[i], NULL);
		assert_int_equal(queue_add(s, f->bs, 10, &e[i], 100 + (uint64_t)i, 100, &vic), 0);
		assert_null(vic);
	}
	q = e[0].bq;
	assert_int_equal(q->levels, (1u << 0) | (1u << 1) | (1u << 3) | (1u << 10));
	assert_int_equal(atomic_load(&f->bs->queued_by_prio[0]), 2);
	assert_int_equal(atomic_load(&f->bs->queued_by_prio[3]), 2);
	assert_int_equal(atomic_load(&f->bs->lowest_prio[0]), 0);
	/* the published key is the front's: priority 10 */
	assert_int_equal(atomic_load(&f->bs->best_key[0]), queue_entry_key(&e[3]));
	assert_int_equal(atomic_load(&f->bs->oldest_ns[0]), 100); /* the oldest, any priority */
	for (int i = 0; i < 6; i++)
		assert_ptr_equal(serve(s, q), &e[want[i]]);
	assert_null(queue_front(q));
	assert_int_equal(queued(f), 0);
	assert_int_equal(q->levels, 0);
	assert_int_equal(waiting(f), 0);
	/* out of range priorities are clamped into the queued range */
	prio_entry(&e[0], 42, NULL);
	assert_int_equal(queue_add(s, f->bs, 10, &e[0], 1, 100, &vic), 0);
	assert_int_equal(e[0].prio, QUEUE_PRIO_MAX);
	queue_remove(s, &e[0]);
}

static void test_key_orders_priority_then_age(void **state)
{
	struct fx *f = *state;
	struct queue_entry a, b, c;

	prio_entry(&a, 0, NULL);
	prio_entry(&b, 1, NULL);
	prio_entry(&c, 1, NULL);
	assert_int_equal(queue_add(f->sh[0], f->bs, 9, &a, 10, 100, &vic), 0);
	assert_int_equal(queue_add(f->sh[1], f->bs, 9, &b, 500, 100, &vic), 0);
	assert_int_equal(queue_add(f->sh[0], f->bs, 9, &c, 600, 100, &vic), 0);
	/* b (priority 1, older than c) beats a's age and c */
	assert_true(queue_entry_key(&b) < queue_entry_key(&c));
	assert_true(queue_entry_key(&c) < queue_entry_key(&a));
	queue_slot_freed(f->sh[0], f->bs);
	assert_int_equal(nmsgs, 1);
	assert_ptr_equal(msgs[0].to, f->sh[1]);
	/* shard 0's front is c; shard 1 has a better one */
	assert_ptr_equal(queue_front(c.bq), &c);
	assert_int_equal(queue_older_elsewhere(f->sh[0], c.bq, queue_entry_key(&c)), 1);
	queue_remove(f->sh[1], &b);
	assert_int_equal(queue_older_elsewhere(f->sh[0], c.bq, queue_entry_key(&c)), 0);
	queue_remove(f->sh[0], &a);
	queue_remove(f->sh[0], &c);
}

static void test_evict_local_youngest_lowest(void **state)
{
	struct fx *f = *state;
	struct shard *s = f->sh[0];
	struct queue_entry low[3], mid, hi, same;

	for (int i = 0; i < 3; i++) {
		prio_entry(&low[i], 0, NULL);
		assert_int_equal(queue_add(s, f->bs, 4, &low[i], 10 + (uint64_t)i, 100, &vic), 0);
	}
	prio_entry(&mid, 2, NULL);
	assert_int_equal(queue_add(s, f->bs, 4, &mid, 20, 100, &vic), 0);
	assert_int_equal(queued(f), 4);
	/* full; an equal priority evicts nothing */
	prio_entry(&same, 0, NULL);
	assert_int_equal(queue_add(s, f->bs, 4, &same, 30, 100, &vic), -ENOSPC);
	assert_null(vic);
	assert_false(queue_entry_queued(&same));
	/* priority 5: the youngest priority 0 goes */
	prio_entry(&hi, 5, NULL);
	assert_int_equal(queue_add(s, f->bs, 4, &hi, 40, 100, &vic), 0);
	assert_ptr_equal(vic, &low[2]);
	assert_false(queue_entry_queued(&low[2]));
	assert_false(timer_armed(&low[2].timer));
	assert_int_equal(queued(f), 4); /* exact: the place went to hi */
	assert_int_equal(atomic_load(&f->bs->queued_by_prio[0]), 2);
	assert_ptr_equal(queue_front(hi.bq), &hi);
	queue_remove(s, &hi);
	queue_remove(s, &mid);
	queue_remove(s, &low[0]);
	queue_remove(s, &low[1]);
	assert_int_equal(queued(f), 0);
}

/* The victim is the only waiter of the arrival's own tenant: the tenant
 * must outlive the victim's unlinking (it was freed under the arrival). */
static void test_evict_same_tenant(void **state)
{
	struct fx *f = *state;
	struct shard *s = f->sh[0];
	struct queue_entry lo, hi;

	prio_entry(&lo, 0, "t");
	prio_entry(&hi, 4, "t");
	assert_int_equal(queue_add(s, f->bs, 1, &lo, 1, 100, &vic), 0);
	assert_int_equal(queue_add(s, f->bs, 1, &hi, 2, 100, &vic), 0);
	assert_ptr_equal(vic, &lo);
	assert_ptr_equal(queue_front(hi.bq), &hi);
	assert_int_equal(hi.tenant->n, 1);
	queue_take(s, &hi);
	assert_int_equal(queued(f), 0);
}

static void test_evict_across_shards(void **state)
{
	struct fx *f = *state;
	struct queue_entry l0, l1, h, h2;
	struct bqueue *q1;

	prio_entry(&l0, 0, NULL);
	prio_entry(&l1, 0, NULL);
	assert_int_equal(queue_add(f->sh[1], f->bs, 2, &l0, 10, 100, &vic), 0);
	assert_int_equal(queue_add(f->sh[1], f->bs, 2, &l1, 11, 100, &vic), 0);
	/* full, nothing lower on shard 0: shard 1 owes the eviction */
	prio_entry(&h, 3, NULL);
	assert_int_equal(queue_add(f->sh[0], f->bs, 2, &h, 20, 100, &vic), 0);
	assert_null(vic);
	assert_true(queue_entry_queued(&h));
	assert_int_equal(queued(f), 2); /* never above max_queued */
	assert_int_equal(atomic_load(&f->bs->evict_owed[1][3]), 1);
	assert_int_equal(nmsgs, 1);
	assert_ptr_equal(msgs[0].to, f->sh[1]);
	assert_int_equal(msgs[0].kind, MSG_WAKE);
	/* shard 1 pays: its youngest lowest */
	assert_ptr_equal(queue_owed_victim(f->sh[1], l0.bq), &l1);
	assert_false(queue_entry_queued(&l1));
	assert_null(queue_owed_victim(f->sh[1], l0.bq));
	assert_int_equal(queued(f), 2);
	/* an owed eviction that finds no victim becomes debt, paid by the
	 * next waiter to leave (its place is not freed) */
	prio_entry(&h2, 3, NULL); /* nothing below 3 on shard 0 (h is 3) */
	assert_int_equal(queue_add(f->sh[0], f->bs, 2, &h2, 30, 100, &vic), 0);
	assert_null(vic);
	assert_int_equal(atomic_load(&f->bs->evict_owed[1][3]), 1);
	q1 = l0.bq;
	queue_remove(f->sh[1], &l0); /* it left before shard 1 paid: frees its place */
	assert_int_equal(queued(f), 1);
	assert_null(queue_owed_victim(f->sh[1], q1));
	assert_int_equal(atomic_load(&f->bs->evict_debt), 1);
	queue_remove(f->sh[0], &h); /* pays the debt */
	assert_int_equal(atomic_load(&f->bs->evict_debt), 0);
	assert_int_equal(queued(f), 1);
	queue_remove(f->sh[0], &h2);
	assert_int_equal(queued(f), 0);
}

static void test_tenant_bound(void **state)
{
	struct fx *f = *state;
	struct queue_entry a[3], b;

	for (int i = 0; i < 3; i++) {
		prio_entry(&a[i], 0, "flood");
		a[i].tenant_max = 2;
	}
	prio_entry(&b, 0, "normal");
	b.tenant_max = 2;
	assert_int_equal(queue_add(f->sh[0], f->bs, 9, &a[0], 1, 100, &vic), 0);
	assert_int_equal(queue_add(f->sh[1], f->bs, 9, &a[1], 2, 100, &vic), 0);
	/* process-wide: the third on either shard is refused */
	assert_int_equal(queue_add(f->sh[0], f->bs, 9, &a[2], 3, 100, &vic), -EDQUOT);
	assert_false(queue_entry_queued(&a[2]));
	assert_int_equal(queued(f), 2);
	assert_int_equal(queue_add(f->sh[0], f->bs, 9, &b, 4, 100, &vic), 0);
	queue_remove(f->sh[1], &a[1]);
	assert_int_equal(queue_add(f->sh[0], f->bs, 9, &a[2], 5, 100, &vic), 0);
	queue_remove(f->sh[0], &a[0]);
	queue_remove(f->sh[0], &a[2]);
	queue_remove(f->sh[0], &b);
	for (unsigned i = 0; i < TENANT_BUCKETS; i++)
		assert_int_equal(atomic_load(&f->bs->tenant_queued[i]), 0);
}

/* At its bound, a tenant's higher-priority arrival takes the place of its
 * own youngest lower waiter (on this shard), not another tenant's. */
static void test_tenant_bound_evicts_own_lower(void **state)
{
	struct fx *f = *state;
	struct shard *s = f->sh[0];
	struct queue_entry a[2], o, hi, hi2;

	for (int i = 0; i < 2; i++) {
		prio_entry(&a[i], 0, "flood");
		a[i].tenant_max = 2;
		assert_int_equal(queue_add(s, f->bs, 9, &a[i], 1 + (uint64_t)i, 100, &vic), 0);
	}
	prio_entry(&o, 0, "other");
	o.tenant_max = 2;
	assert_int_equal(queue_add(s, f->bs, 9, &o, 5, 100, &vic), 0);
	prio_entry(&hi, 1, "flood");
	hi.tenant_max = 2;
	assert_int_equal(queue_add(s, f->bs, 9, &hi, 6, 100, &vic), 0);
	assert_ptr_equal(vic, &a[1]);          /* flood's youngest priority 0 */
	assert_false(queue_entry_queued(&a[1]));
	assert_int_equal(queued(f), 3);        /* hi holds a[1]'s places */
	assert_int_equal(atomic_load(&f->bs->tenant_queued[hi.tenant_bucket]), 2);
	/* nothing of flood's below 1 but a[0]; then nothing lower at all */
	prio_entry(&hi2, 1, "flood");
	hi2.tenant_max = 2;
	assert_int_equal(queue_add(s, f->bs, 9, &hi2, 7, 100, &vic), 0);
	assert_ptr_equal(vic, &a[0]);
	assert_int_equal(queue_add(s, f->bs, 9, &a[1], 8, 100, &vic), -EDQUOT);
	assert_true(queue_entry_queued(&o));   /* the other tenant untouched */
	queue_remove(s, &hi);
	queue_remove(s, &hi2);
	queue_remove(s, &o);
	assert_int_equal(queued(f), 0);
	for (unsigned i = 0; i < TENANT_BUCKETS; i++)
		assert_int_equal(atomic_load(&f->bs->tenant_queued[i]), 0);
}

static void test_fair_share(void **state)
{
	struct fx *f = *state;
	struct shard *s = f->sh[0];
	struct queue_entry fl[6], nm[3];
	const char *want = "fnfnfnfff";
	char got[10] = {0};
	struct bqueue *q;

	for (int i = 0; i < 6; i++) {
		prio_entry(&fl[i], 0, "flood");
		assert_int_equal(queue_add(s, f->bs, 20, &fl[i], 10 + (uint64_t)i, 100, &vic), 0);
	}
	for (int i = 0; i < 3; i++) {
		prio_entry(&nm[i], 0, "normal");
		assert_int_equal(queue_add(s, f->bs, 20, &nm[i], 30 + (uint64_t)i, 100, &vic), 0);
	}
	q = fl[0].bq;
	for (int i = 0; i < 9; i++) {
		struct queue_entry *e = serve(s, q);
		assert_non_null(e);
		got[i] = (e >= fl && e < fl + 6) ? 'f' : 'n';
	}
	assert_string_equal(got, want);
	assert_null(queue_front(q));
}

static void test_fair_weights_and_shards(void **state)
{
	struct fx *f = *state;
	struct queue_entry h[6], l[3];
	char got[10] = {0};
	int k = 0;

	/* the flood ("heavy", weight 2) on shard 0, "light" on shard 1: the
	 * shared clock keeps 2:1 across them (the shard with the smaller
	 * published key serves next, as queue_slot_freed would choose) */
	for (int i = 0; i < 6; i++) {
		prio_entry(&h[i], 0, "heavy");
		h[i].weight = 2;
		assert_int_equal(queue_add(f->sh[0], f->bs, 20, &h[i], 10 + (uint64_t)i, 100, &vic), 0);
	}
	for (int i = 0; i < 3; i++) {
		prio_entry(&l[i], 0, "light");
		assert_int_equal(queue_add(f->sh[1], f->bs, 20, &l[i], 30 + (uint64_t)i, 100, &vic), 0);
	}
	while (k < 9) {
		struct queue_entry *e0 = queue_front(h[0].bq ? h[0].bq : h[5].bq);
		struct queue_entry *e1 = l[0].bq ? queue_front(l[0].bq) : NULL;
		struct queue_entry *e;
		if (!e1 && l[1].bq)
			e1 = queue_front(l[1].bq);
		if (!e1 && l[2].bq)
			e1 = queue_front(l[2].bq);
		if (!e0)
			for (int i = 0; i < 6 && !e0; i++)
				if (h[i].bq)
					e0 = queue_front(h[i].bq);
		if (e0 && (!e1 || queue_entry_key(e0) <= queue_entry_key(e1)))
			e = e0;
		else
			e = e1;
		assert_non_null(e);
		queue_take(e == e0 ? f->sh[0] : f->sh[1], e);
		got[k++] = e == e0 ? 'h' : 'l';
	}
	/* both start at the clock (a tie: shard 0 first), then heavy's
	 * finish tag moves half as far per request as light's */
	assert_string_equal(got, "hlhhlhhlh");
}

static void test_edf_within_tenant(void **state)
{
	struct fx *f = *state;
	struct shard *s = f->sh[0];
	struct queue_entry e[4];
	uint64_t dl[4] = {9000, 3000, 0, 5000};
	int want[4] = {1, 3, 0, 2}; /* earliest deadline first; none last */
	struct bqueue *q;

	for (int i = 0; i < 4; i++) {
		prio_entry(&e[i], 0, NULL);
		e[i].edf = true;
		e[i].req_deadline_us = dl[i];
		assert_int_equal(queue_add(s, f->bs, 9, &e[i], 100 + (uint64_t)i, 100, &vic), 0);
	}
	q = e[0].bq;
	for (int i = 0; i < 4; i++)
		assert_ptr_equal(serve(s, q), &e[want[i]]);
}

static void test_entry_timer_armed(void **state)
{
	struct fx *f = *state;
	struct shard *s = f->sh[0];
	struct queue_entry a, b;

	prio_entry(&a, 0, NULL);
	prio_entry(&b, 0, NULL);
	b.req_deadline_us = 1000 + 30 * 1000; /* 30 ms, before the 100 ms queue timeout */
	assert_int_equal(queue_add(s, f->bs, 9, &a, 1000, 100, &vic), 0);
	assert_int_equal(queue_add(s, f->bs, 9, &b, 1000, 100, &vic), 0);
	assert_true(timer_armed(&a.timer));
	assert_int_equal(a.timer.expires_ms, 100);
	assert_int_equal(b.timer.expires_ms, 30);
	queue_remove(s, &a);
	assert_false(timer_armed(&a.timer));
	queue_take(s, &b);
	assert_false(timer_armed(&b.timer));
}

static void test_service_median(void **state)
{
	struct fx *f = *state;

	assert_int_equal(queue_service_median(f->bs), 0);
	assert_int_equal(queue_wait_estimate_us(f->bs, 0, 1), 0);
	queue_service_note(f->bs, 100);
	queue_service_note(f->bs, 900);
	queue_service_note(f->bs, 200);
	assert_int_equal(queue_service_median(f->bs), 200);
	for (int i = 0; i < 40; i++)
		queue_service_note(f->bs, 1000); /* the ring keeps the last 32 */
	assert_int_equal(queue_service_median(f->bs), 1000);
	atomic_store(&f->bs->queued_by_prio[0], 4);
	atomic_store(&f->bs->queued_by_prio[2], 2);
	assert_int_equal(queue_wait_estimate_us(f->bs, 0, 2), 6 * 1000 / 2);
	assert_int_equal(queue_wait_estimate_us(f->bs, 1, 2), 2 * 1000 / 2);
	atomic_store(&f->bs->queued_by_prio[0], 0);
	atomic_store(&f->bs->queued_by_prio[2], 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_fifo_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_enospc_across_shards, setup, teardown),
		cmocka_unit_test_setup_teardown(test_remove_idempotent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stamps_kept_on_requeue, setup, teardown),
		cmocka_unit_test_setup_teardown(test_publish_and_clear, setup, teardown),
		cmocka_unit_test_setup_teardown(test_slot_freed_oldest, setup, teardown),
		cmocka_unit_test_setup_teardown(test_slot_freed_tie_lower_id, setup, teardown),
		cmocka_unit_test_setup_teardown(test_older_elsewhere, setup, teardown),
		cmocka_unit_test_setup_teardown(test_teardown_unlinks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_priority_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_key_orders_priority_then_age, setup, teardown),
		cmocka_unit_test_setup_teardown(test_evict_local_youngest_lowest, setup, teardown),
		cmocka_unit_test_setup_teardown(test_evict_same_tenant, setup, teardown),
		cmocka_unit_test_setup_teardown(test_evict_across_shards, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tenant_bound, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tenant_bound_evicts_own_lower, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fair_share, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fair_weights_and_shards, setup, teardown),
		cmocka_unit_test_setup_teardown(test_edf_within_tenant, setup, teardown),
		cmocka_unit_test_setup_teardown(test_entry_timer_armed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_service_median, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
