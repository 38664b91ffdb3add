/* Per-shard hashed timer wheel with millisecond resolution. Timers are list
 * entries, not SQEs: the shard's loop waits with a timeout of one tick while
 * any timer is armed and calls timer_advance() with the current time. */
#ifndef RINGROUTE_TIMER_H
#define RINGROUTE_TIMER_H

#include <stdint.h>

#include "ringroute/list.h"

#define TIMER_SLOTS 1024u /* power of two */

struct timer;
typedef void (*timer_cb)(struct timer *t, void *ctx);

struct timer {
	struct list node;     /* in a wheel slot while armed */
	uint64_t expires_ms;
	timer_cb cb;
};

struct timer_wheel {
	struct list slots[TIMER_SLOTS];
	uint64_t now_ms;      /* time of the last advance */
	uint32_t armed;       /* number of timers in the wheel */
};

void timer_wheel_init(struct timer_wheel *w, uint64_t now_ms);
static inline void timer_init(struct timer *t, timer_cb cb) { list_init(&t->node); t->cb = cb; t->expires_ms = 0; }
static inline int timer_armed(const struct timer *t) { return list_linked(&t->node); }
/* (Re)arm t to fire delay_ms after the wheel's current time. */
void timer_arm(struct timer_wheel *w, struct timer *t, uint64_t delay_ms);
void timer_cancel(struct timer_wheel *w, struct timer *t);
/* Fire every timer due at or before now_ms; a callback may arm or cancel any
 * timer, including itself. ctx is passed to the callbacks. */
void timer_advance(struct timer_wheel *w, uint64_t now_ms, void *ctx);

#endif
