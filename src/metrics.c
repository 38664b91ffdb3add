#include "ringroute/metrics.h"

#include <string.h>

#include "ringroute/alloc.h"

const uint64_t hist_bounds_us[HIST_NBUCKETS] = {
	500,     1000,    2500,    5000,    10000,    25000,    50000,    100000,    250000,
	500000,  1000000, 2500000, 5000000, 10000000, 30000000, 60000000, 120000000, 300000000,
};

void metrics_hist_observe(struct hist *h, uint64_t us)
{
	unsigned i = 0;

	while (i < HIST_NBUCKETS && us > hist_bounds_us[i])
		i++;
	counter_add(&h->bucket[i], 1);
	counter_add(&h->sum_us, us);
}

void metrics_hist_add(struct hist_sum *sum, struct hist *h)
{
	for (unsigned i = 0; i <= HIST_NBUCKETS; i++)
		sum->bucket[i] += counter_get(&h->bucket[i]);
	sum->sum_us += counter_get(&h->sum_us);
}

void metrics_endpoint_add(struct endpoint_sum *sum, struct endpoint_metrics *em)
{
	for (unsigned st = 0; st < 600; st++)
		sum->status[st] += counter_get(&em->status[st]);
	metrics_hist_add(&sum->total, &em->total);
	metrics_hist_add(&sum->queue_wait, &em->queue_wait);
	metrics_hist_add(&sum->ttfb, &em->ttfb);
}

void metrics_backend_add(struct backend_sum *sum, struct backend_metrics *bm)
{
	for (unsigned i = 0; i < METRICS_REASONS; i++)
		sum->by_reason[i] += counter_get(&bm->by_reason[i]);
	sum->retries += counter_get(&bm->retries);
	sum->retry_budget_exhausted += counter_get(&bm->retry_budget_exhausted);
	for (unsigned i = 0; i < METRICS_SHADOW_RESULTS; i++)
		sum->shadow[i] += counter_get(&bm->shadow[i]);
}

void metrics_shard_init(struct shard_metrics *m)
{
	memset(m, 0, sizeof(*m));
	list_init(&m->endpoints);
	pthread_mutex_init(&m->lock, NULL);
}

void metrics_shard_destroy(struct shard_metrics *m)
{
	struct list *pos;
	while ((pos = list_pop_front(&m->endpoints))) {
		struct endpoint_metrics *em = container_of(pos, struct endpoint_metrics, node);
		mi_free(em->name);
		mi_free(em);
	}
	pthread_mutex_destroy(&m->lock);
}

struct endpoint_metrics *metrics_endpoint(struct shard_metrics *m, const char *name)
{
	struct list *pos, *tmp;
	struct endpoint_metrics *em;

	/* Only this shard appends, so walking without the lock is safe here. */
	list_for_each_safe(pos, tmp, &m->endpoints) {
		em = container_of(pos, struct endpoint_metrics, node);
		if (strcmp(em->name, name) == 0)
			return em;
	}
	em = mi_zalloc(sizeof(*em));
	if (!em)
		return NULL;
	list_init(&em->node);
	em->name = mi_strdup(name);
	if (!em->name) {
		mi_free(em);
		return NULL;
	}
	pthread_mutex_lock(&m->lock);
	list_push_back(&m->endpoints, &em->node);
	pthread_mutex_unlock(&m->lock);
	return em;
}

struct endpoint_metrics *metrics_unrouted(struct shard_metrics *m)
{
	if (!m->unrouted)
		m->unrouted = metrics_endpoint(m, "");
	return m->unrouted;
}
