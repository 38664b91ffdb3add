/* dns_refresh: the thread that keeps the names of replica addresses up to
 * date (dns.h): every dns_refresh_ms of the current snapshot it resolves
 * each name again and, when a set changed, builds the snapshot again. It
 * never touches a shard: the new snapshot reaches them like any change. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ringroute/alloc.h"
#include "ringroute/config.h"
#include "ringroute/dns.h"
#include "ringroute/log.h"
#include "ringroute/proxy.h"

struct dns {
	struct proxy *p;
	pthread_t thread;
	pthread_mutex_t lock;         /* guards stop, with cond */
	pthread_cond_t cond;          /* CLOCK_MONOTONIC */
	bool stop;
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

static void *dns_main(void *arg)
{
	struct dns *d = arg;
	struct timespec ts;

	pthread_mutex_lock(&d->lock);
	while (!d->stop) {
		struct config *c = proxy_config_get(d->p);
		uint64_t ms = c->dns_refresh_ms;
		config_unref(c);
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += (time_t)(ms / 1000);
		ts.tv_nsec += (long)(ms % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		while (!d->stop && pthread_cond_timedwait(&d->cond, &d->lock, &ts) != ETIMEDOUT)
			;
		if (d->stop)
			break;
		pthread_mutex_unlock(&d->lock);
		refresh_pass(d);
		pthread_mutex_lock(&d->lock);
	}
	pthread_mutex_unlock(&d->lock);
	return NULL;
}

/* See dns.h. */
int dns_start(struct proxy *p, struct dns **out)
{
	struct dns *d = mi_zalloc(sizeof(*d));
	pthread_condattr_t ca;
	int rc;

	if (!d)
		return -ENOMEM;
	d->p = p;
	pthread_mutex_init(&d->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&d->cond, &ca);
	pthread_condattr_destroy(&ca);
	rc = -pthread_create(&d->thread, NULL, dns_main, d);
	if (rc) {
		pthread_cond_destroy(&d->cond);
		pthread_mutex_destroy(&d->lock);
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
	pthread_mutex_lock(&d->lock);
	d->stop = true;
	pthread_cond_signal(&d->cond);
	pthread_mutex_unlock(&d->lock);
	pthread_join(d->thread, NULL);
	pthread_cond_destroy(&d->cond);
	pthread_mutex_destroy(&d->lock);
	mi_free(d);
}
