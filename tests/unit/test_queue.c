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
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
