/* clock: the monotonic clock every module measures time with (timeouts,
 * intervals, latencies). CLOCK_MONOTONIC never jumps with wall-clock
 * changes; its epoch is arbitrary, so only differences mean anything. */
#ifndef RINGROUTE_CLOCK_H
#define RINGROUTE_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t clock_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint64_t clock_now_us(void)
{
	return clock_now_ns() / 1000u;
}

static inline uint64_t clock_now_ms(void)
{
	return clock_now_ns() / 1000000u;
}

#endif
