/* The load scrape: see scrape.h. Each turn of the ticker starts, for
 * every due backend, one GET of /metrics per replica (probe.h), then
 * polls until all of them ended (each within its deadline
 * min(load_scrape_ms / 2, 1 s)), so one turn never outlives a second. */
#include "ringroute/scrape.h"

#include <errno.h>
#include <stdbool.h>

#include "ringroute/alloc.h"
#include "ringroute/clock.h"
#include "ringroute/load.h"
#include "ringroute/log.h"
#include "ringroute/probe.h"
#include "ringroute/proxy.h"
#include "ringroute/ticker.h"

#define SCRAPE_PATH       "/metrics"
#define SCRAPE_MAX_BYTES  (4u << 20)  /* a longer exposition fails the scrape */
#define SCRAPE_MAX_MS     1000        /* a scrape's deadline: min(interval / 2, this) */
#define SCRAPE_IDLE_MS    1000        /* the turn while no backend scrapes */

struct scrape {
	struct proxy *p;
	struct ticker *ticker;
	struct probe_set ps;          /* the ticker thread's only */
	bool oom_logged;
};

/* A scrape's end (probe_done_fn): a 2xx body's gauges become the
 * replica's report; gauges that do not parse count as a bad report; a
 * failed scrape changes nothing (the last report ages out). */
static void scrape_done(struct probe *pr, enum health_kind kind, unsigned value)
{
	struct replica_state *rs = pr->r->state;
	struct load_report lr;
	const char *body;
	size_t len = 0;

	(void)value;
	if (kind != HEALTH_OK || !(body = probe_body(pr, &len)))
		return;
	switch (load_parse_prom(body, len, pr->b->load_queue_metric, pr->b->load_kv_metric,
				&lr)) {
	case LOAD_OK:
		load_store(rs, &lr, clock_now_ms());
		break;
	case LOAD_BAD:
		if (load_bad(rs) == 0)
			log_warn("replica %s/%s: /metrics: a gauge of load_metrics (%s, %s) does not "
				 "parse or is out of range (dropped, as the next bad scrapes: counted in "
				 "bad_reports)", pr->b->name, pr->r->id, pr->b->load_queue_metric,
				 pr->b->load_kv_metric);
		break;
	case LOAD_NONE:
		break;
	}
}

/* The ticker's period: the shortest load_scrape_ms of the current
 * snapshot, SCRAPE_IDLE_MS when none scrapes. */
static uint64_t scrape_period(void *arg)
{
	struct scrape *s = arg;
	struct config *c = proxy_config_get(s->p);
	uint64_t ms = SCRAPE_IDLE_MS;

	for (size_t i = 0; i < c->nbackends; i++)
		if (c->backends[i].load_scrape_ms && c->backends[i].load_scrape_ms < ms)
			ms = c->backends[i].load_scrape_ms;
	config_unref(c);
	return ms;
}

static void scrape_tick(void *arg)
{
	struct scrape *s = arg;
	struct config *c = proxy_config_get(s->p);
	uint64_t now = clock_now_ms();

	for (size_t i = 0; i < c->nbackends; i++) {
		const struct backend_cfg *b = &c->backends[i];
		uint32_t t;
		int due;

		if (!b->load_scrape_ms)
			continue;
		/* The ticker wakes a little after the period: a backend whose
		 * interval is the period is due every turn. */
		due = probe_due(&s->ps, b->name, b->load_scrape_ms - b->load_scrape_ms / 10, now);
		if (due <= 0)
			continue;
		t = b->load_scrape_ms / 2 < SCRAPE_MAX_MS ? b->load_scrape_ms / 2 : SCRAPE_MAX_MS;
		for (size_t r = 0; r < b->nreplicas; r++) {
			if (probe_start(&s->ps, c, b, &b->replicas[r], SCRAPE_PATH, SCRAPE_MAX_BYTES, t,
					now, scrape_done, s)) {
				if (!s->oom_logged)
					log_warn("scrape: out of memory: scrapes of backend %s skipped",
						 b->name);
				s->oom_logged = true;
				break;
			}
			s->oom_logged = false;
		}
	}
	config_unref(c);
	while (s->ps.n) {
		probe_reap(&s->ps, clock_now_ms());
		if (s->ps.n)
			probe_poll(&s->ps, clock_now_ms() + SCRAPE_MAX_MS);
	}
}

/* See scrape.h. */
int scrape_start(struct proxy *p, struct scrape **out)
{
	struct scrape *s = mi_zalloc(sizeof(*s));
	int rc;

	if (!s)
		return -ENOMEM;
	s->p = p;
	rc = probe_set_init(&s->ps);
	if (!rc)
		rc = ticker_start(scrape_period, scrape_tick, s, &s->ticker);
	if (rc) {
		probe_set_destroy(&s->ps);
		mi_free(s);
		return rc;
	}
	*out = s;
	return 0;
}

/* See scrape.h. */
void scrape_stop(struct scrape *s)
{
	if (!s)
		return;
	ticker_stop(s->ticker);
	probe_set_destroy(&s->ps);
	mi_free(s);
}
