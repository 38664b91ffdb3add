#include "ringroute/timer.h"

void timer_wheel_init(struct timer_wheel *w, uint64_t now_ms)
{
	for (unsigned i = 0; i < TIMER_SLOTS; i++)
		list_init(&w->slots[i]);
	w->now_ms = now_ms;
	w->armed = 0;
}

void timer_arm(struct timer_wheel *w, struct timer *t, uint64_t delay_ms)
{
	timer_cancel(w, t);
	t->expires_ms = w->now_ms + (delay_ms ? delay_ms : 1);
	list_push_back(&w->slots[t->expires_ms & (TIMER_SLOTS - 1)], &t->node);
	w->armed++;
}

void timer_cancel(struct timer_wheel *w, struct timer *t)
{
	if (!list_linked(&t->node))
		return;
	list_del_init(&t->node);
	w->armed--;
}

void timer_advance(struct timer_wheel *w, uint64_t now_ms, void *ctx)
{
	/* Walk every millisecond slot since the last advance (at most one full
	 * turn: beyond that every slot has been visited once). */
	uint64_t from = w->now_ms + 1;
	if (now_ms < from)
		return;
	if (now_ms - from >= TIMER_SLOTS)
		from = now_ms - TIMER_SLOTS + 1;
	w->now_ms = now_ms;
	for (uint64_t ms = from; ms <= now_ms && w->armed; ms++) {
		struct list *slot = &w->slots[ms & (TIMER_SLOTS - 1)];
		struct list due, *pos, *tmp;

		/* Move due entries out first: callbacks may re-arm into this slot. */
		list_init(&due);
		list_for_each_safe(pos, tmp, slot) {
			struct timer *t = container_of(pos, struct timer, node);
			if (t->expires_ms <= now_ms) {
				list_del_init(pos);
				list_push_back(&due, pos);
			}
		}
		while ((pos = list_pop_front(&due))) {
			struct timer *t = container_of(pos, struct timer, node);
			w->armed--;
			t->cb(t, ctx);
		}
	}
}
