/* Active health checks: see health.h.
 *
 * One thread, one poll() loop (probe.h: the client it shares with the load
 * scrape). Every HEALTH_TICK_MS the loop looks at the current snapshot;
 * each backend whose interval has passed gets one probe per replica, all
 * started at once: a non-blocking connect, the request, the status line,
 * each with its own deadline min(interval/2, 1 s). So a replica that never
 * answers costs its own probe a timeout and delays no other probe. A probe
 * holds a reference on the snapshot it was started from, which keeps its
 * backend, replica and replica_state alive however the config changes
 * meanwhile. */
#include "ringroute/health.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "ringroute/alloc.h"
#include "ringroute/clock.h"
#include "ringroute/proxy.h"
#include "ringroute/log.h"
#include "ringroute/probe.h"

#define HEALTH_TICK_MS      100   /* how often due backends are looked for */
#define HEALTH_MAX_PROBE_MS 1000  /* a probe's deadline: min(interval / 2, this) */

struct health {
	struct proxy *p;
	pthread_t thread;
	_Atomic int stop;
	struct probe_set ps;    /* the probes in flight (probe.h) */
	bool oom_logged;        /* an out-of-memory skip was reported */
};

/* Reports an allocation failure that made the checker skip work, once
 * until the next success (it would repeat every tick otherwise). */
static void health_oom(struct health *h, const char *what, const char *backend)
{
	if (h->oom_logged)
		return;
	log_warn("health: out of memory: %s of backend %s skipped", what,
		backend);
	h->oom_logged = true;
}

/* A probe's end (probe_done_fn): records the result in the replica state
 * and turns it healthy after rise successes in a row, unhealthy after
 * fall failures in a row (logging the change, with the reason of a
 * failure). */
static void health_probe_done(struct probe *pr, enum health_kind kind, unsigned value)
{
	struct replica_state *st = pr->r->state;
	uint32_t ok = kind == HEALTH_OK, healthy = atomic_load(&st->healthy);
	uint32_t result = health_result(kind, value);
	char why[96];

	/* The streak is this thread's alone: a replica is probed once per
	 * interval, and a probe ends within half of it. */
	if (ok)
		st->hc_streak = st->hc_streak > 0 ? st->hc_streak + 1 : 1;
	else
		st->hc_streak = st->hc_streak < 0 ? st->hc_streak - 1 : -1;
	atomic_store(&st->hc_result, result);
	if (ok != healthy && (ok ? (uint32_t)st->hc_streak >= pr->b->hc_rise
				 : (uint32_t)-st->hc_streak >= pr->b->hc_fall)) {
		atomic_store(&st->healthy, ok);
		atomic_store(&st->hc_changed_ms, clock_now_ms());
		if (ok) /* back: slow start ramps it up again */
			atomic_store(&st->up_since_ms, atomic_load(&st->hc_changed_ms));
		if (ok)
			log_info("replica %s/%s is healthy: %d probes in a row passed", pr->b->name,
				pr->r->id, st->hc_streak);
		else
			log_warn("replica %s/%s is unhealthy (%s): %d probes in a row failed",
				pr->b->name, pr->r->id, health_reason(result, why, sizeof(why)),
				-st->hc_streak);
	}
}

/* Starts the probes of every backend of c that is due at now. */
static void health_round(struct health *h, struct config *c, uint64_t now)
{
	for (size_t i = 0; i < c->nbackends; i++) {
		const struct backend_cfg *b = &c->backends[i];
		uint32_t t;
		int due;

		if (!b->hc_path)
			continue;
		due = probe_due(&h->ps, b->name, b->hc_interval_ms, now);
		if (due < 0) {
			health_oom(h, "the checks", b->name);
			continue;
		}
		if (!due)
			continue;
		t = b->hc_interval_ms / 2 < HEALTH_MAX_PROBE_MS ? b->hc_interval_ms / 2
								 : HEALTH_MAX_PROBE_MS;
		for (size_t r = 0; r < b->nreplicas; r++) {
			if (probe_start(&h->ps, c, b, &b->replicas[r], b->hc_path, 0, t, now,
					health_probe_done, h)) {
				health_oom(h, "a probe", b->name);
				break;
			}
			h->oom_logged = false;
		}
	}
}

static void *health_main(void *arg)
{
	struct health *h = arg;
	uint64_t next_round = 0;

	while (!atomic_load(&h->stop)) {
		uint64_t now = clock_now_ms();

		if (now >= next_round) {
			struct config *c = proxy_config_get(h->p);
			health_round(h, c, now);
			config_unref(c);
			next_round = now + HEALTH_TICK_MS;
		}
		probe_reap(&h->ps, now);
		probe_poll(&h->ps, next_round);
		probe_reap(&h->ps, clock_now_ms());
	}
	probe_set_destroy(&h->ps); /* abandoned: the process is stopping */
	return NULL;
}

/* See health.h. */
int health_start(struct proxy *p, struct health **out)
{
	struct health *h = mi_zalloc(sizeof(*h));
	int rc;

	if (!h)
		return -ENOMEM;
	h->p = p;
	rc = probe_set_init(&h->ps);
	if (rc)
		goto fail_free;
	rc = -pthread_create(&h->thread, NULL, health_main, h);
	if (rc)
		goto fail_close;
	*out = h;
	return 0;
fail_close:
	probe_set_destroy(&h->ps);
fail_free:
	mi_free(h);
	return rc;
}

/* See health.h. */
void health_stop(struct health *h)
{
	if (!h)
		return;
	atomic_store(&h->stop, 1);
	probe_set_wake(&h->ps);
	pthread_join(h->thread, NULL);
	mi_free(h);
}
