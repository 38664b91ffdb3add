/* dns_refresh: the thread that keeps the names of replica addresses up to
 * date (dns.h): every dns_refresh_ms of the current snapshot it resolves
 * each name again and, when a set changed, builds the snapshot again. It
 * never touches a shard: the new snapshot reaches them like any change. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "ringroute/alloc.h"
#include "ringroute/config.h"
#include "ringroute/dns.h"
#include "ringroute/log.h"
#include "ringroute/proxy.h"
#include "ringroute/ticker.h"

struct dns {
	struct proxy *p;
	struct ticker *ticker;        /* every dns_refresh_ms: refresh_pass */
	char last_err[1024];          /* the last refused rebuild, logged once */
};

/* One pass: drop the names the current snapshot no longer uses, refresh
 * the others, and when a set changed since the snapshot was built, build
 * it again from its own document (the same parse as any change; the cache
 * answers every name) and apply it unless another change came first
 * (then the next pass sees that one). */
static void refresh_pass(struct dns *d)
{
	struct proxy *p = d->p;
	struct dns_cache *dc = &p->registry.dns;
	struct config *cur = proxy_config_get(p), *next = NULL;
	char **hosts = NULL;
	size_t nh = 0;
	char err[1024];

	for (size_t i = 0; i < cur->nbackends; i++)
		nh += cur->backends[i].nreplicas;
	hosts = nh ? calloc(nh, sizeof(*hosts)) : NULL;
	nh = 0;
	for (size_t i = 0; hosts && i < cur->nbackends; i++)
		for (size_t j = 0; j < cur->backends[i].nreplicas; j++) {
			const char *h = cur->backends[i].replicas[j].host;
			bool dup = false;
			for (size_t k = 0; h && k < nh; k++)
				dup = dup || strcmp(hosts[k], h) == 0;
			if (h && !dup)
				hosts[nh++] = (char *)h; /* cur outlives the pass */
		}
	dns_keep_only(dc, hosts, nh);
	for (size_t k = 0; k < nh; k++)
		dns_refresh(dc, hosts[k]);
	free(hosts);
	if (cur->dns_gen != atomic_load(&dc->gen)) {
		if (config_parse(cur->json, strlen(cur->json), "dns refresh", &p->registry, &next, err,
				 sizeof(err))) {
			/* Tried again every pass (the next set may be fine);
			 * said once while the reason stays the same. */
			if (strcmp(err, d->last_err))
				log_warn("dns: the new addresses make no valid config, kept the old "
					 "ones: %s", err);
			snprintf(d->last_err, sizeof(d->last_err), "%s", err);
		} else {
			d->last_err[0] = '\0';
			if (proxy_change_from(p, cur, next, err, sizeof(err)) && next)
				log_warn("dns: applying the new addresses: %s", err);
		}
	}
	config_unref(cur);
}

/* The ticker's period: the current snapshot's dns_refresh_ms. */
static uint64_t refresh_period(void *arg)
{
	struct dns *d = arg;
	struct config *c = proxy_config_get(d->p);
	uint64_t ms = c->dns_refresh_ms;

	config_unref(c);
	return ms;
}

static void refresh_tick(void *arg)
{
	refresh_pass(arg);
}

/* See dns.h. */
int dns_start(struct proxy *p, struct dns **out)
{
	struct dns *d = mi_zalloc(sizeof(*d));
	int rc;

	if (!d)
		return -ENOMEM;
	d->p = p;
	rc = ticker_start(refresh_period, refresh_tick, d, &d->ticker);
	if (rc) {
		mi_free(d);
		return rc;
	}
	*out = d;
	return 0;
}

/* See dns.h. */
void dns_stop(struct dns *d)
{
	if (!d)
		return;
	ticker_stop(d->ticker);
	mi_free(d);
}
