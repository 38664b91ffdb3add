/* A helper thread that calls a function every period until stopped: the
 * DNS refresh (dns_refresh.c) and the --peers thread (peers.c). The period
 * is asked again before each wait, so it may follow the live config. Stop
 * wakes the wait at once; a call in progress is waited for (never cut). */
#ifndef RINGROUTE_TICKER_H
#define RINGROUTE_TICKER_H

#include <stdint.h>

struct ticker;

/* Starts the thread: waits period_ms(arg) ms, calls tick(arg), and again,
 * until ticker_stop. 0 and *out, or -errno (nothing started). */
int ticker_start(uint64_t (*period_ms)(void *arg), void (*tick)(void *arg), void *arg,
		 struct ticker **out);
/* Stops and joins the thread, frees t. NULL: nothing. */
void ticker_stop(struct ticker *t);

#endif
