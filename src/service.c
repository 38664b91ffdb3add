/* service: see service.h. */
#include "ringroute/service.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <systemd/sd-daemon.h>

#include "ringroute/clock.h"
#include "ringroute/instance.h"
#include "ringroute/log.h"
#include "ringroute/proxy.h"
#include "ringroute/router.h"
#include "ringroute/shard.h"
#include "ringroute/xring.h"

/* One notify message, printf-style. sd_notify itself is a no-op without
 * NOTIFY_SOCKET, and keeps no state, so any thread may call it. */
__attribute__((format(printf, 1, 2)))
static void notify(const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	int rc;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	rc = sd_notify(0, msg);
	if (rc < 0)
		log_debug("sd_notify: %s", strerror(-rc));
}

/* The STATUS= text systemctl status shows: the phase and the version. */
static void status_text(char *buf, size_t len, int phase, uint64_t version)
{
	snprintf(buf, len, "%sconfig version %" PRIu64,
		 phase == PHASE_DRAINING ? "draining; " : "", version);
}

static uint64_t current_version(struct proxy *p)
{
	struct config *c = proxy_config_get(p);
	uint64_t v = c->version;

	config_unref(c);
	return v;
}

/* p->on_change: called with config_lock held, so c is read as handed. */
static void config_changed(struct proxy *p, const struct config *c)
{
	char st[128];

	status_text(st, sizeof(st), atomic_load(&p->phase), c->version);
	notify("STATUS=%s", st);
}

void service_init(struct service *svc, struct proxy *p)
{
	uint64_t usec = 0;

	memset(svc, 0, sizeof(*svc));
	svc->p = p;
	p->on_change = config_changed;
	/* > 0 when WATCHDOG_USEC is set (and WATCHDOG_PID, if set, is us). */
	if (sd_watchdog_enabled(0, &usec) > 0 && usec) {
		svc->wd_period_ms = usec / 2000;
		if (!svc->wd_period_ms)
			svc->wd_period_ms = 1;
		log_info("watchdog: WATCHDOG_USEC=%" PRIu64 ", checking the shards every %" PRIu64
			 " ms", usec, svc->wd_period_ms);
	}
}

/* Records what each shard answered so far and sends the next ping. */
static void watchdog_ping_shards(struct service *svc)
{
	struct proxy *p = svc->p;

	for (unsigned i = 0; i < p->nshards; i++)
		svc->wd_seen[i] = atomic_load_explicit(&p->shards[i]->pongs, memory_order_relaxed);
	xring_broadcast(p, MSG_PING);
}

/* A watchdog tick: systemd is pinged only when every running shard
 * answered the ping of the previous tick (its pongs moved). */
static void watchdog_tick(struct service *svc)
{
	struct proxy *p = svc->p;
	int stuck = -1;

	for (unsigned i = 0; i < p->nshards && stuck < 0; i++) {
		struct shard *s = p->shards[i];
		if (!atomic_load(&s->ready) || atomic_load(&s->exited))
			continue; /* gone (drained): nothing to prove */
		if (atomic_load_explicit(&s->pongs, memory_order_relaxed) == svc->wd_seen[i])
			stuck = (int)i;
	}
	if (stuck < 0) {
		notify("WATCHDOG=1");
		if (svc->wd_stalled)
			log_info("watchdog: every shard answers again");
		svc->wd_stalled = 0;
	} else if (!svc->wd_stalled) {
		log_warn("watchdog: shard %d did not answer within %" PRIu64
			 " ms: systemd is not pinged until it does", stuck, svc->wd_period_ms);
		svc->wd_stalled = 1;
	}
	watchdog_ping_shards(svc);
}

void service_live(struct service *svc)
{
	char st[128];

	atomic_store(&svc->p->phase, PHASE_LIVE);
	status_text(st, sizeof(st), PHASE_LIVE, current_version(svc->p));
	notify("READY=1\nSTATUS=%s", st);
	if (svc->wd_period_ms) {
		watchdog_ping_shards(svc);
		svc->wd_next_ms = clock_now_ms() + svc->wd_period_ms;
	}
}

int service_wait(struct service *svc, const sigset_t *set, uint64_t deadline_ms)
{
	for (;;) {
		uint64_t now = clock_now_ms(), until = deadline_ms;
		struct timespec ts;
		int sig;

		if (svc->wd_period_ms && now >= svc->wd_next_ms) {
			watchdog_tick(svc);
			svc->wd_next_ms = now + svc->wd_period_ms;
		}
		if (deadline_ms && now >= deadline_ms)
			return 0;
		if (svc->wd_period_ms && (!until || svc->wd_next_ms < until))
			until = svc->wd_next_ms;
		if (!until) {
			sig = sigwaitinfo(set, NULL);
		} else {
			ts.tv_sec = (time_t)((until - now) / 1000);
			ts.tv_nsec = (long)((until - now) % 1000) * 1000000L;
			sig = sigtimedwait(set, NULL, &ts);
		}
		if (sig > 0)
			return sig;
		/* EAGAIN (time is up: look again) or EINTR. */
	}
}

void service_reloading(struct service *svc)
{
	(void)svc;
	/* MONOTONIC_USEC: what Type=notify-reload (systemd 253) asks for. */
	notify("RELOADING=1\nMONOTONIC_USEC=%" PRIu64, clock_now_us());
}

void service_reloaded(struct service *svc, const char *err)
{
	char st[128], why[512];

	status_text(st, sizeof(st), atomic_load(&svc->p->phase), current_version(svc->p));
	if (!err) {
		notify("READY=1\nSTATUS=%s", st);
		return;
	}
	/* One line: a newline would end the STATUS= field. */
	snprintf(why, sizeof(why), "%s", err);
	for (char *q = why; *q; q++)
		if (*q == '\n' || *q == '\r')
			*q = ' ';
	notify("READY=1\nSTATUS=%s; last reload refused: %s", st, why);
}

void service_drain(struct service *svc, const sigset_t *set)
{
	struct proxy *p = svc->p;
	char st[128];
	uint64_t until;
	int rc;

	atomic_store(&p->phase, PHASE_DRAINING);
	status_text(st, sizeof(st), PHASE_DRAINING, current_version(p));
	notify("STOPPING=1\nSTATUS=%s", st);
	rc = xring_broadcast(p, MSG_DRAIN);
	if (rc)
		log_warn("draining: a shard could not be told: %s", strerror(-rc));
	if (!p->opt.drain_delay_ms)
		return;
	log_info("draining: /readyz answers 503; the listeners close in %u ms "
		 "(a second SIGTERM or SIGINT closes them now)", p->opt.drain_delay_ms);
	until = clock_now_ms() + p->opt.drain_delay_ms;
	for (;;) {
		int sig = service_wait(svc, set, until);
		if (!sig)
			return;
		if (sig == SIGTERM || sig == SIGINT) {
			log_info("draining: %s again: closing the listeners now",
				 sig == SIGTERM ? "SIGTERM" : "SIGINT");
			return;
		}
		log_info("draining: signal %d ignored", sig);
	}
}

int service_config_servable(const struct config *c)
{
	for (size_t e = 0; e < c->nendpoints; e++) {
		const struct endpoint_cfg *ep = &c->endpoints[e];
		for (size_t t = 0; t < ep->ntraffic; t++) {
			const struct backend_cfg *b = ep->traffic[t].backend;
			if (ep->traffic[t].weight <= 0)
				continue;
			for (size_t r = 0; r < b->nreplicas; r++)
				if (router_replica_up(b->replicas[r].state))
					return 1;
		}
	}
	return 0;
}

int service_ready(struct proxy *p, char *why, size_t len)
{
	struct config *c;
	int ok;

	switch (atomic_load(&p->phase)) {
	case PHASE_STARTING:
		snprintf(why, len, "starting");
		return 0;
	case PHASE_DRAINING:
		snprintf(why, len, "draining");
		return 0;
	default:
		break;
	}
	if (atomic_load(&p->instance_index) == INSTANCE_NONE) {
		/* Whole caps here would multiply them: it has none (instance.h). */
		snprintf(why, len, "--peers: this instance is not in its peer set");
		return 0;
	}
	if (!p->opt.ready_requires_healthy)
		return 1;
	c = proxy_config_get(p);
	ok = service_config_servable(c);
	config_unref(c);
	if (!ok)
		snprintf(why, len, "no endpoint has a healthy replica");
	return ok;
}
