/* The monotonic clock, in the units each user needs. One clock for the whole
 * process: timers, queue deadlines and latency histograms compare readings
 * taken here. */
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

static inline uint64_t clock_now_us(void) { return clock_now_ns() / 1000u; }
static inline uint64_t clock_now_ms(void) { return clock_now_ns() / 1000000u; }

#endif
