/* mock-replica: the per-loop timer heap (service delays, stream chunks,
 * lingering closes, the LLM engine's steps). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mock.h"

/* ------------------------------------------------------------- timer heap */

static void heap_set(struct mock_loop *l, unsigned i, struct mock_timer *t)
{
	l->heap[i] = t;
	t->idx = (int32_t)i;
}

static void heap_sift_up(struct mock_loop *l, unsigned i)
{
	struct mock_timer *t = l->heap[i];

	while (i > 0) {
		unsigned parent = (i - 1) / 2;
		if (l->heap[parent]->deadline <= t->deadline)
			break;
		heap_set(l, i, l->heap[parent]);
		i = parent;
	}
	heap_set(l, i, t);
}

static void heap_sift_down(struct mock_loop *l, unsigned i)
{
	struct mock_timer *t = l->heap[i];

	for (;;) {
		unsigned child = 2 * i + 1;
		if (child >= l->nheap)
			break;
		if (child + 1 < l->nheap && l->heap[child + 1]->deadline < l->heap[child]->deadline)
			child++;
		if (t->deadline <= l->heap[child]->deadline)
			break;
		heap_set(l, i, l->heap[child]);
		i = child;
	}
	heap_set(l, i, t);
}

/* Arm t (not armed) at t->deadline. Returns 0 or -ENOMEM. */
int heap_push(struct mock_loop *l, struct mock_timer *t)
{
	assert(t->idx < 0);
	if (l->nheap == l->heap_cap) {
		unsigned ncap = l->heap_cap ? l->heap_cap * 2 : 64;
		struct mock_timer **nh = realloc(l->heap, ncap * sizeof(*nh));
		if (!nh)
			return -ENOMEM;
		l->heap = nh;
		l->heap_cap = ncap;
	}
	l->heap[l->nheap] = t;
	t->idx = (int32_t)l->nheap++;
	heap_sift_up(l, (unsigned)t->idx);
	return 0;
}

/* Disarm t; harmless when it is not armed. */
void heap_remove(struct mock_loop *l, struct mock_timer *t)
{
	unsigned i;

	if (t->idx < 0)
		return;
	i = (unsigned)t->idx;
	t->idx = -1;
	if (i == --l->nheap)
		return;
	heap_set(l, i, l->heap[l->nheap]);
	if (i > 0 && l->heap[(i - 1) / 2]->deadline > l->heap[i]->deadline)
		heap_sift_up(l, i);
	else
		heap_sift_down(l, i);
}
