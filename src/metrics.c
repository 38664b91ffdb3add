#include "ringroute/metrics.h"

#include <string.h>

#include "ringroute/alloc.h"

const double hist_bounds[HIST_NBUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
					    0.1,    0.25,  0.5,    1,     2.5,  5,     10};

void metrics_hist_observe(struct hist *h, uint64_t us)
{
	unsigned i = 0;
	double s = (double)us / 1e6;
	while (i < HIST_NBUCKETS && s > hist_bounds[i])
		i++;
	counter_add(&h->bucket[i], 1);
	counter_add(&h->count, 1);
	counter_add(&h->sum_us, us);
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
