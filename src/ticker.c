/* The periodic helper thread: see ticker.h. */
#include "ringroute/ticker.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <time.h>

#include "ringroute/alloc.h"

struct ticker {
	pthread_t thread;
	pthread_mutex_t lock;  /* guards stop, with cond */
	pthread_cond_t cond;   /* CLOCK_MONOTONIC */
	bool stop;
	uint64_t (*period_ms)(void *arg);
	void (*tick)(void *arg);
	void *arg;
};

static void *ticker_main(void *a)
{
	struct ticker *t = a;
	struct timespec ts;

	pthread_mutex_lock(&t->lock);
	while (!t->stop) {
		uint64_t ms = t->period_ms(t->arg);

		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += (time_t)(ms / 1000);
		ts.tv_nsec += (long)(ms % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		while (!t->stop && pthread_cond_timedwait(&t->cond, &t->lock, &ts) != ETIMEDOUT)
			;
		if (t->stop)
			break;
		/* A tick may block (DNS): never with the lock stop waits on. */
		pthread_mutex_unlock(&t->lock);
		t->tick(t->arg);
		pthread_mutex_lock(&t->lock);
	}
	pthread_mutex_unlock(&t->lock);
	return NULL;
}

int ticker_start(uint64_t (*period_ms)(void *arg), void (*tick)(void *arg), void *arg,
		 struct ticker **out)
{
	struct ticker *t = mi_zalloc(sizeof(*t));
	pthread_condattr_t ca;
	int rc;

	if (!t)
		return -ENOMEM;
	t->period_ms = period_ms;
	t->tick = tick;
	t->arg = arg;
	pthread_mutex_init(&t->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&t->cond, &ca);
	pthread_condattr_destroy(&ca);
	rc = pthread_create(&t->thread, NULL, ticker_main, t);
	if (rc) {
		pthread_cond_destroy(&t->cond);
		pthread_mutex_destroy(&t->lock);
		mi_free(t);
		return -rc;
	}
	*out = t;
	return 0;
}

void ticker_stop(struct ticker *t)
{
	if (!t)
		return;
	pthread_mutex_lock(&t->lock);
	t->stop = true;
	pthread_cond_signal(&t->cond);
	pthread_mutex_unlock(&t->lock);
	pthread_join(t->thread, NULL);
	pthread_cond_destroy(&t->cond);
	pthread_mutex_destroy(&t->lock);
	mi_free(t);
}
