/* Unit tests for the per-shard timer wheel (src/timer.c): arm / cancel /
 * re-arm, firing order, never early, delays longer than one wheel turn,
 * callbacks that arm or cancel timers while the wheel advances, and large
 * jumps of the clock. A randomised run checks everything against a model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ringroute/timer.h"

#define MAXT 64

struct ttimer {
	struct timer t;
	int id;
	int fired;            /* times fired */
	uint64_t fired_at;    /* wheel time of the last firing */
	uint64_t rearm;       /* re-arm itself with this delay when non-zero */
	int rearm_left;       /* ... this many more times */
	struct ttimer *cancel; /* cancel this one when fired */
	struct ttimer *arm;   /* arm this one ... */
	uint64_t arm_delay;   /* ... with this delay when fired */
};

struct ctx {
	struct timer_wheel *w;
	int order[1024];
	int norder;
};

static void cb(struct timer *t, void *arg)
{
	struct ctx *c = arg;
	struct ttimer *x = container_of(t, struct ttimer, t);

	assert_false(timer_armed(t));
	/* The wheel's time is already the time being advanced to. */
	assert_true(x->t.expires_ms <= c->w->now_ms);
	x->fired++;
	x->fired_at = c->w->now_ms;
	if (c->norder < 1024)
		c->order[c->norder++] = x->id;
	if (x->rearm && x->rearm_left > 0) {
		x->rearm_left--;
		timer_arm(c->w, t, x->rearm);
	}
	if (x->cancel)
		timer_cancel(c->w, &x->cancel->t);
	if (x->arm)
		timer_arm(c->w, &x->arm->t, x->arm_delay);
}

static struct timer_wheel *W;
static struct ttimer T[MAXT];
static struct ctx C;

static int setup(void **state)
{
	(void)state;
	W = malloc(sizeof(*W));
	assert_non_null(W);
	timer_wheel_init(W, 0);
	memset(T, 0, sizeof(T));
	for (int i = 0; i < MAXT; i++) {
		timer_init(&T[i].t, cb);
		T[i].id = i;
	}
	memset(&C, 0, sizeof(C));
	C.w = W;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	free(W);
	W = NULL;
	return 0;
}

static void adv(uint64_t now) { timer_advance(W, now, &C); }

static void test_arm_cancel(void **state)
{
	(void)state;
	assert_false(timer_armed(&T[0].t));
	timer_arm(W, &T[0].t, 10);
	assert_true(timer_armed(&T[0].t));
	assert_int_equal(T[0].t.expires_ms, 10);
	assert_int_equal(W->armed, 1);
	timer_cancel(W, &T[0].t);
	assert_false(timer_armed(&T[0].t));
	assert_int_equal(W->armed, 0);
	timer_cancel(W, &T[0].t); /* twice: harmless */
	assert_int_equal(W->armed, 0);
	adv(100);
	assert_int_equal(T[0].fired, 0);
	/* Cancelling a never-armed timer is harmless too. */
	timer_cancel(W, &T[1].t);
	assert_int_equal(W->armed, 0);
}

static void test_rearm(void **state)
{
	(void)state;
	timer_arm(W, &T[0].t, 10);
	timer_arm(W, &T[0].t, 20); /* moves it, counted once */
	assert_int_equal(W->armed, 1);
	adv(10);
	assert_int_equal(T[0].fired, 0);
	adv(19);
	assert_int_equal(T[0].fired, 0);
	adv(20);
	assert_int_equal(T[0].fired, 1);
	assert_int_equal(W->armed, 0);
	/* Re-arm to an earlier time. */
	timer_arm(W, &T[0].t, 500);
	timer_arm(W, &T[0].t, 5);
	adv(25);
	assert_int_equal(T[0].fired, 2);
	assert_int_equal(T[0].fired_at, 25);
	adv(600);
	assert_int_equal(T[0].fired, 2);
	/* Arm after firing: relative to the wheel's time. */
	timer_arm(W, &T[0].t, 3);
	assert_int_equal(T[0].t.expires_ms, 603);
	adv(603);
	assert_int_equal(T[0].fired, 3);
}

static void test_zero_delay(void **state)
{
	(void)state;
	adv(50);
	timer_arm(W, &T[0].t, 0);
	adv(50); /* same time: nothing, and not a step back */
	assert_int_equal(T[0].fired, 0);
	adv(49);
	assert_int_equal(T[0].fired, 0);
	assert_int_equal(W->now_ms, 50);
	adv(51);
	assert_int_equal(T[0].fired, 1);
}

/* Fires exactly at its time when advanced one millisecond at a time. */
static void test_never_early(void **state)
{
	static const uint64_t delays[] = {1, 2, 3, 17, 511, 1022, 1023, 1024, 1025, 1500,
					  2047, 2048, 2049, 5000, 10240, 33333};
	const int n = (int)(sizeof(delays) / sizeof(delays[0]));
	(void)state;
	adv(7); /* not at a slot boundary */
	for (int i = 0; i < n; i++)
		timer_arm(W, &T[i].t, delays[i]);
	assert_int_equal(W->armed, (uint32_t)n);
	for (uint64_t now = 8; now <= 7 + 33333 + 5; now++) {
		adv(now);
		for (int i = 0; i < n; i++) {
			if (now < 7 + delays[i])
				assert_int_equal(T[i].fired, 0);
			else
				assert_int_equal(T[i].fired, 1);
		}
	}
	for (int i = 0; i < n; i++)
		assert_int_equal(T[i].fired_at, 7 + delays[i]);
	assert_int_equal(W->armed, 0);
}

/* Long delays with coarse steps: each fires at the first advance at or past
 * its time, whatever the step. */
static void test_long_delays_steps(void **state)
{
	static const uint64_t steps[] = {3, 100, 1000, 1023, 1024, 1025, 4000};
	(void)state;
	for (size_t s = 0; s < sizeof(steps) / sizeof(steps[0]); s++) {
		uint64_t start = W->now_ms;
		uint64_t d[] = {1024, 1025, 2048, 3000, 7777};
		for (int i = 0; i < 5; i++) {
			T[i].fired = 0;
			timer_arm(W, &T[i].t, d[i]);
		}
		for (uint64_t now = start + steps[s]; W->armed; now += steps[s]) {
			adv(now);
			for (int i = 0; i < 5; i++) {
				uint64_t due = start + d[i];
				if (now < due)
					assert_int_equal(T[i].fired, 0);
				else if (now - steps[s] < due)
					assert_int_equal(T[i].fired_at, now);
				assert_int_equal(T[i].fired, now >= due);
			}
			assert_true(now <= start + 7777 + steps[s]);
		}
	}
}

static void test_firing_order(void **state)
{
	static const uint64_t d[] = {40, 5, 300, 5, 1, 999, 40, 2, 1000};
	static const int want[] = {4, 7, 1, 3, 0, 6, 2, 5, 8};
	(void)state;
	for (int i = 0; i < 9; i++)
		timer_arm(W, &T[i].t, d[i]);
	adv(1000);
	assert_int_equal(C.norder, 9);
	/* By expiry; equal expiries in the order they were armed. */
	for (int i = 0; i < 9; i++)
		assert_int_equal(C.order[i], want[i]);
}

static void test_large_jump(void **state)
{
	(void)state;
	timer_arm(W, &T[0].t, 10);
	timer_arm(W, &T[1].t, 500);
	timer_arm(W, &T[2].t, 1024);
	timer_arm(W, &T[3].t, 3000);
	timer_arm(W, &T[4].t, 12000);
	timer_arm(W, &T[5].t, 20000);
	adv(2000);
	assert_int_equal(T[0].fired + T[1].fired + T[2].fired, 3);
	assert_int_equal(T[3].fired + T[4].fired + T[5].fired, 0);
	assert_int_equal(W->armed, 3);
	adv(2999);
	assert_int_equal(T[3].fired, 0);
	adv(3000);
	assert_int_equal(T[3].fired, 1);
	/* Ten turns at once: 12000 is due, 20000 is not. */
	adv(13000);
	assert_int_equal(T[4].fired, 1);
	assert_int_equal(T[5].fired, 0);
	adv(19999);
	assert_int_equal(T[5].fired, 0);
	adv(1000000);
	assert_int_equal(T[5].fired, 1);
	assert_int_equal(W->armed, 0);
	for (int i = 0; i < 6; i++)
		assert_int_equal(T[i].fired, 1);
}

/* A jump of exactly one turn, and just under / over it, from a time that is
 * not a slot boundary. */
static void test_jump_turn_edges(void **state)
{
	static const uint64_t jumps[] = {1022, 1023, 1024, 1025, 2047, 2048, 2049};
	(void)state;
	for (size_t j = 0; j < sizeof(jumps) / sizeof(jumps[0]); j++) {
		uint64_t base = W->now_ms + 13;
		adv(base);
		for (int i = 0; i < 8; i++)
			T[i].fired = 0;
		/* Due: every slot offset 1..jumps[j] sampled; not due: beyond. */
		timer_arm(W, &T[0].t, 1);
		timer_arm(W, &T[1].t, jumps[j] / 2);
		timer_arm(W, &T[2].t, jumps[j] - 1);
		timer_arm(W, &T[3].t, jumps[j]);
		timer_arm(W, &T[4].t, jumps[j] + 1);
		timer_arm(W, &T[5].t, jumps[j] + 1024);
		timer_arm(W, &T[6].t, 1024);
		adv(base + jumps[j]);
		assert_int_equal(T[0].fired, 1);
		assert_int_equal(T[1].fired, 1);
		assert_int_equal(T[2].fired, 1);
		assert_int_equal(T[3].fired, 1);
		assert_int_equal(T[4].fired, 0);
		assert_int_equal(T[5].fired, 0);
		assert_int_equal(T[6].fired, jumps[j] >= 1024);
		adv(base + jumps[j] + 1);
		assert_int_equal(T[4].fired, 1);
		adv(base + jumps[j] + 1024);
		assert_int_equal(T[5].fired, 1);
		assert_int_equal(T[6].fired, 1);
		assert_int_equal(W->armed, 0);
	}
}

static void test_callback_rearms_itself(void **state)
{
	(void)state;
	/* Periodic every 7 ms, stepped 1 ms at a time. */
	T[0].rearm = 7;
	T[0].rearm_left = 1000;
	timer_arm(W, &T[0].t, 7);
	for (uint64_t now = 1; now <= 100; now++)
		adv(now);
	assert_int_equal(T[0].fired, 14); /* 7, 14, ..., 98 */
	assert_int_equal(T[0].fired_at, 98);
	assert_true(timer_armed(&T[0].t));
	assert_int_equal(T[0].t.expires_ms, 105);
	/* One big step fires it once; it re-arms relative to the new time and
	 * does not fire again in the same advance. */
	adv(5000);
	assert_int_equal(T[0].fired, 15);
	assert_int_equal(T[0].t.expires_ms, 5007);
	assert_int_equal(W->armed, 1);
	/* Re-arm with delay 0 (= 1 ms) inside the callback: no busy loop. */
	T[0].rearm = 0;
	T[1].rearm = 1;
	T[1].rearm_left = 3;
	timer_cancel(W, &T[0].t);
	timer_arm(W, &T[1].t, 1);
	adv(5001);
	assert_int_equal(T[1].fired, 1);
	adv(5001);
	assert_int_equal(T[1].fired, 1);
	adv(5010);
	assert_int_equal(T[1].fired, 2);
	adv(5011);
	adv(5012);
	assert_int_equal(T[1].fired, 4);
	assert_false(timer_armed(&T[1].t));
	assert_int_equal(W->armed, 0);
}

static void test_callback_cancels_others(void **state)
{
	(void)state;
	/* 0 fires first and cancels 1 (due in the same slot, already moved to
	 * the due list) and 2 (due later in the same advance) and 3 (not due). */
	timer_arm(W, &T[0].t, 5);
	timer_arm(W, &T[1].t, 5);
	timer_arm(W, &T[2].t, 8);
	timer_arm(W, &T[3].t, 50);
	timer_arm(W, &T[4].t, 9);
	T[0].cancel = &T[1];
	T[0].arm = NULL;
	adv(10);
	assert_int_equal(T[0].fired, 1);
	assert_int_equal(T[1].fired, 0);
	assert_int_equal(T[2].fired, 1);
	assert_int_equal(T[4].fired, 1);
	assert_int_equal(W->armed, 1);
	T[0].cancel = NULL;

	T[5].cancel = &T[2];
	T[2].cancel = &T[3];
	timer_arm(W, &T[5].t, 3);  /* 13 */
	timer_arm(W, &T[2].t, 10); /* 20: cancelled by 5 before it fires */
	adv(30);
	assert_int_equal(T[5].fired, 1);
	assert_int_equal(T[2].fired, 1); /* unchanged */
	assert_true(timer_armed(&T[3].t)); /* 2 never ran, so 3 stays */
	assert_int_equal(W->armed, 1);
	adv(60);
	assert_int_equal(T[3].fired, 1);
	assert_int_equal(W->armed, 0);
}

static void test_callback_arms_others(void **state)
{
	(void)state;
	/* 0 (due at 5) moves 1 (also due, later in the same slot list) to +100;
	 * 2 (due at 6) arms 3 with delay 1: it must not fire in this advance. */
	timer_arm(W, &T[0].t, 5);
	timer_arm(W, &T[1].t, 5);
	timer_arm(W, &T[2].t, 6);
	T[0].arm = &T[1];
	T[0].arm_delay = 100;
	T[2].arm = &T[3];
	T[2].arm_delay = 1;
	adv(40);
	assert_int_equal(T[0].fired, 1);
	assert_int_equal(T[1].fired, 0);
	assert_int_equal(T[2].fired, 1);
	assert_int_equal(T[3].fired, 0);
	assert_int_equal(T[1].t.expires_ms, 140);
	assert_int_equal(T[3].t.expires_ms, 41);
	assert_int_equal(W->armed, 2);
	adv(41);
	assert_int_equal(T[3].fired, 1);
	adv(139);
	assert_int_equal(T[1].fired, 0);
	adv(140);
	assert_int_equal(T[1].fired, 1);
	/* Arming into a slot the current advance has yet to visit must not
	 * fire early: advancing 140 -> 600, 4 (due 150) arms 5 with delay 724,
	 * relative to 600: 1324, in slot 300, which this advance visits after
	 * 150. 7 (due 151) arms 6 at 800 (slot 800, not visited). */
	T[4].arm = &T[5];
	T[4].arm_delay = 724;
	T[7].arm = &T[6];
	T[7].arm_delay = 200;
	timer_arm(W, &T[4].t, 10);
	timer_arm(W, &T[7].t, 11);
	adv(600);
	assert_int_equal(T[4].fired, 1);
	assert_int_equal(T[7].fired, 1);
	assert_int_equal(T[5].fired, 0);
	assert_int_equal(T[6].fired, 0);
	assert_int_equal(T[5].t.expires_ms, 1324);
	assert_int_equal(T[6].t.expires_ms, 800);
	adv(1323);
	assert_int_equal(T[6].fired, 1);
	assert_int_equal(T[5].fired, 0);
	adv(1324);
	assert_int_equal(T[5].fired, 1);
	assert_int_equal(W->armed, 0);
}

static void test_big_start_time(void **state)
{
	(void)state;
	timer_wheel_init(W, UINT64_C(1) << 40);
	timer_arm(W, &T[0].t, 1);
	timer_arm(W, &T[1].t, 2000);
	adv((UINT64_C(1) << 40) + 1);
	assert_int_equal(T[0].fired, 1);
	adv((UINT64_C(1) << 40) + 1999);
	assert_int_equal(T[1].fired, 0);
	adv((UINT64_C(1) << 40) + 2000);
	assert_int_equal(T[1].fired, 1);
}

/* ---- randomised: the wheel against a model ---- */

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

struct mt {
	struct timer t;
	int armed;
	uint64_t due;
	int fired;
};
static struct mt M[256];
static uint64_t m_prev, m_now;
static int m_fired_total;

static void mcb(struct timer *t, void *arg)
{
	struct mt *x = container_of(t, struct mt, t);
	(void)arg;
	if (!x->armed)
		fail_msg("timer %d fired while not armed", (int)(x - M));
	if (x->due > m_now)
		fail_msg("timer %d fired early: due %llu, now %llu", (int)(x - M),
			 (unsigned long long)x->due, (unsigned long long)m_now);
	if (x->due <= m_prev)
		fail_msg("timer %d fired late: due %llu, previous advance %llu", (int)(x - M),
			 (unsigned long long)x->due, (unsigned long long)m_prev);
	x->armed = 0;
	x->fired++;
	m_fired_total++;
	/* Sometimes a callback re-arms itself or disturbs another timer. */
	switch (rnd() % 8) {
	case 0: {
		uint64_t d = rnd() % 3000;
		timer_arm(W, t, d);
		x->armed = 1;
		x->due = W->now_ms + (d ? d : 1);
		break;
	}
	case 1: {
		struct mt *o = &M[rnd() % 256];
		timer_cancel(W, &o->t);
		o->armed = 0;
		break;
	}
	case 2: {
		struct mt *o = &M[rnd() % 256];
		uint64_t d = rnd() % 2500;
		timer_arm(W, &o->t, d);
		o->armed = 1;
		o->due = W->now_ms + (d ? d : 1);
		break;
	}
	default:
		break;
	}
}

static void test_random_model(void **state)
{
	uint32_t armed;
	(void)state;
	timer_wheel_init(W, 1000);
	for (int i = 0; i < 256; i++) {
		timer_init(&M[i].t, mcb);
		M[i].armed = 0;
	}
	m_now = 1000;
	for (int round = 0; round < 20000; round++) {
		int ops = (int)(rnd() % 6);
		uint64_t step;
		for (int k = 0; k < ops; k++) {
			struct mt *x = &M[rnd() % 256];
			if (rnd() % 4 == 0) {
				timer_cancel(W, &x->t);
				x->armed = 0;
			} else {
				uint64_t d = rnd() % 4 == 0 ? rnd() % 5000 : rnd() % 64;
				timer_arm(W, &x->t, d);
				x->armed = 1;
				x->due = W->now_ms + (d ? d : 1);
			}
		}
		switch (rnd() % 10) {
		case 0: step = 0; break;
		case 1: step = 1024 + rnd() % 3000; break;
		case 2: step = 900 + rnd() % 200; break;
		default: step = rnd() % 20; break;
		}
		m_prev = m_now;
		m_now += step;
		timer_advance(W, m_now, NULL);
		armed = 0;
		for (int i = 0; i < 256; i++) {
			if (M[i].armed && M[i].due <= m_now)
				fail_msg("round %d: timer %d due %llu not fired by %llu", round, i,
					 (unsigned long long)M[i].due, (unsigned long long)m_now);
			assert_int_equal(timer_armed(&M[i].t), M[i].armed);
			armed += (uint32_t)M[i].armed;
		}
		assert_int_equal(W->armed, armed);
	}
	assert_true(m_fired_total > 10000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_arm_cancel, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rearm, setup, teardown),
		cmocka_unit_test_setup_teardown(test_zero_delay, setup, teardown),
		cmocka_unit_test_setup_teardown(test_never_early, setup, teardown),
		cmocka_unit_test_setup_teardown(test_long_delays_steps, setup, teardown),
		cmocka_unit_test_setup_teardown(test_firing_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_large_jump, setup, teardown),
		cmocka_unit_test_setup_teardown(test_jump_turn_edges, setup, teardown),
		cmocka_unit_test_setup_teardown(test_callback_rearms_itself, setup, teardown),
		cmocka_unit_test_setup_teardown(test_callback_cancels_others, setup, teardown),
		cmocka_unit_test_setup_teardown(test_callback_arms_others, setup, teardown),
		cmocka_unit_test_setup_teardown(test_big_start_time, setup, teardown),
		cmocka_unit_test_setup_teardown(test_random_model, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
