/* The process-wide views: applying a change (state file + publish) and the
 * read-side summaries (stats, queues, Prometheus metrics) summed over
 * shards. Runs on the control thread / main thread, never on a shard. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ringroute/alloc.h"

#include "ringroute/http.h"
#include "ringroute/log.h"
#include "ringroute/proxy.h"
#include "ringroute/strbuf.h"
#include "ringroute/upstream.h"
#include "ringroute/xring.h"
#include "ringroute/shard.h"

/* Write text to path atomically: temp file, fsync, rename, fsync dir. */
static int write_atomic(const char *path, const char *text, char *err, size_t errlen)
{
	char tmp[4096], dir[4096];
	size_t len = strlen(text), off = 0;
	int fd, dfd, ret = 0;

	snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		goto fail;
	while (off < len) {
		ssize_t n = write(fd, text + off, len - off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			close(fd);
			goto fail_unlink;
		}
		off += (size_t)n;
	}
	if (write(fd, "\n", 1) != 1 || fsync(fd)) {
		close(fd);
		goto fail_unlink;
	}
	close(fd);
	if (rename(tmp, path))
		goto fail_unlink;
	snprintf(dir, sizeof(dir), "%s", path);
	dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	return 0;
fail_unlink:
	ret = -errno;
	unlink(tmp);
	snprintf(err, errlen, "cannot write state file %s: %s", path, strerror(-ret));
	return ret;
fail:
	ret = -errno;
	snprintf(err, errlen, "cannot write state file %s: %s", path, strerror(-ret));
	return ret;
}

int proxy_change(struct proxy *p, struct config *c, char *err, size_t errlen)
{
	int ret;

	pthread_mutex_lock(&p->config_lock);
	c->version = (p->config ? p->config->version : 0) + 1;
	if (p->opt.state_path) {
		ret = write_atomic(p->opt.state_path, c->json, err, errlen);
		if (ret) {
			pthread_mutex_unlock(&p->config_lock);
			config_unref(c);
			return ret;
		}
	}
	{
		struct strbuf what = {0};
		config_diff(p->config, c, &what);
		log_info("config version %llu: %s", (unsigned long long)c->version,
			 what.p ? what.p : "?");
		sb_free(&what);
	}
	ret = proxy_publish(p, c);
	/* States only older snapshots named go once nothing holds them. */
	registry_collect(&p->registry);
	pthread_mutex_unlock(&p->config_lock);
	if (ret)
		snprintf(err, errlen, "could not reach every shard: %s", strerror(-ret));
	return ret;
}

struct config *proxy_config_get(struct proxy *p)
{
	struct config *c;
	pthread_mutex_lock(&p->config_lock);
	c = p->config;
	config_ref(c);
	pthread_mutex_unlock(&p->config_lock);
	return c;
}

static void replica_counts(struct proxy *p, struct replica_state *rs, uint64_t *req,
			   uint64_t *err)
{
	*req = *err = 0;
	for (unsigned i = 0; i < p->nshards; i++) {
		struct upstream_pool *pool = atomic_load_explicit(&rs->pools[i], memory_order_acquire);
		if (!pool)
			continue;
		*req += counter_get(&pool->requests);
		for (int k = 0; k < UP_ERR_COUNT; k++)
			*err += counter_get(&pool->errors[k]);
	}
}

json_t *proxy_queues_json(struct proxy *p)
{
	struct config *c = proxy_config_get(p);
	json_t *out = json_object();
	for (size_t i = 0; i < c->nbackends; i++) {
		const struct backend_cfg *b = &c->backends[i];
		uint64_t ongoing = 0;
		for (size_t r = 0; r < b->nreplicas; r++)
			ongoing += atomic_load(&b->replicas[r].state->ongoing);
		json_object_set_new(out, b->name,
				    json_pack("{s:I,s:I,s:I}", "queued",
					      (json_int_t)atomic_load(&b->state->queued), "ongoing",
					      (json_int_t)ongoing, "replicas", (json_int_t)b->nreplicas));
	}
	config_unref(c);
	return out;
}

/* One endpoint's metrics summed over every shard. */
#define NHIST 3
struct ep_sum {
	const char *name;  /* a shard's endpoint_metrics name: those live as long as the shards */
	uint64_t status[600];
	uint64_t bucket[NHIST][HIST_NBUCKETS + 1], count[NHIST], sum_us[NHIST];
};

static const struct {
	const char *metric, *help;
	size_t off;
} hists[NHIST] = {
	{"ringroute_request_duration_seconds", "Time from request head to response end.",
	 offsetof(struct endpoint_metrics, total)},
	{"ringroute_queue_wait_seconds", "Time spent waiting for a replica slot.",
	 offsetof(struct endpoint_metrics, queue_wait)},
	{"ringroute_first_byte_seconds", "Time from request head to first response byte.",
	 offsetof(struct endpoint_metrics, ttfb)},
};

/* Sum every shard's per-endpoint counters by endpoint name. Returns how
 * many endpoints, with *out (mi_free it); 0 and NULL when there are none or
 * memory ran out. */
static size_t sum_endpoints(struct proxy *p, struct ep_sum **out)
{
	struct ep_sum *v = NULL;
	size_t n = 0;

	for (unsigned i = 0; i < p->nshards; i++) {
		struct shard_metrics *m = &p->shards[i]->metrics;
		struct list *pos, *tmp;
		pthread_mutex_lock(&m->lock);
		list_for_each_safe(pos, tmp, &m->endpoints) {
			struct endpoint_metrics *em = container_of(pos, struct endpoint_metrics, node);
			struct ep_sum *e = NULL;
			for (size_t k = 0; k < n && !e; k++)
				if (strcmp(v[k].name, em->name) == 0)
					e = &v[k];
			if (!e) {
				struct ep_sum *nv = mi_realloc(v, (n + 1) * sizeof(*v));
				if (!nv)
					continue;
				v = nv;
				e = &v[n++];
				memset(e, 0, sizeof(*e));
				e->name = em->name;
			}
			for (int st = 0; st < 600; st++)
				e->status[st] += counter_get(&em->status[st]);
			for (int h = 0; h < NHIST; h++) {
				struct hist *x = (struct hist *)((char *)em + hists[h].off);
				for (int b = 0; b <= HIST_NBUCKETS; b++)
					e->bucket[h][b] += counter_get(&x->bucket[b]);
				e->count[h] += counter_get(&x->count);
				e->sum_us[h] += counter_get(&x->sum_us);
			}
		}
		pthread_mutex_unlock(&m->lock);
	}
	*out = v;
	return n;
}

json_t *proxy_stats_json(struct proxy *p)
{
	struct config *c = proxy_config_get(p);
	json_t *out = json_object(), *bes = json_object(), *eps = json_object();
	uint64_t accepted = 0, requests = 0;

	for (unsigned i = 0; i < p->nshards; i++) {
		accepted += counter_get(&p->shards[i]->metrics.accepted);
		requests += counter_get(&p->shards[i]->metrics.requests);
	}
	for (size_t i = 0; i < c->nbackends; i++) {
		const struct backend_cfg *b = &c->backends[i];
		json_t *reps = json_object();
		for (size_t r = 0; r < b->nreplicas; r++) {
			struct replica_state *rs = b->replicas[r].state;
			uint64_t rq, er;
			replica_counts(p, rs, &rq, &er);
			json_object_set_new(
				reps, b->replicas[r].id,
				json_pack("{s:s,s:I,s:I,s:I,s:b,s:b}", "address", b->replicas[r].address,
					  "ongoing", (json_int_t)atomic_load(&rs->ongoing), "requests",
					  (json_int_t)rq, "errors", (json_int_t)er, "healthy",
					  atomic_load(&rs->healthy) != 0, "draining",
					  atomic_load(&rs->draining) != 0));
		}
		json_object_set_new(bes, b->name,
				    json_pack("{s:I,s:I,s:o}", "queued",
					      (json_int_t)atomic_load(&b->state->queued),
					      "max_ongoing_requests", (json_int_t)b->max_ongoing,
					      "replicas", reps));
	}
	{
		struct ep_sum *sums;
		size_t n = sum_endpoints(p, &sums);
		for (size_t k = 0; k < n; k++) {
			json_t *codes = json_object();
			uint64_t total = 0;
			for (int st = 0; st < 600; st++) {
				char key[8];
				if (!sums[k].status[st])
					continue;
				snprintf(key, sizeof(key), "%d", st);
				json_object_set_new(codes, key, json_integer((json_int_t)sums[k].status[st]));
				total += sums[k].status[st];
			}
			json_object_set_new(eps, sums[k].name,
					    json_pack("{s:I,s:o}", "requests", (json_int_t)total, "status",
						      codes));
		}
		mi_free(sums);
	}
	json_object_set_new(out, "version", json_integer((json_int_t)c->version));
	json_object_set_new(out, "shards", json_integer(p->nshards));
	json_object_set_new(out, "connections_accepted", json_integer((json_int_t)accepted));
	json_object_set_new(out, "requests", json_integer((json_int_t)requests));
	json_object_set_new(out, "backends", bes);
	json_object_set_new(out, "endpoints", eps);
	config_unref(c);
	return out;
}

char *proxy_metrics_text(struct proxy *p)
{
	struct config *c = proxy_config_get(p);
	struct strbuf sb = {0};
	struct ep_sum *sums;
	size_t n = sum_endpoints(p, &sums);

	sb_puts(&sb, "# HELP ringroute_requests_total Requests by endpoint and status code.\n"
		     "# TYPE ringroute_requests_total counter\n");
	for (size_t k = 0; k < n; k++)
		for (int st = 0; st < 600; st++)
			if (sums[k].status[st])
				sb_printf(&sb, "ringroute_requests_total{endpoint=\"%s\",code=\"%d\"} %llu\n",
					  sums[k].name, st, (unsigned long long)sums[k].status[st]);
	for (int h = 0; h < NHIST; h++) {
		sb_printf(&sb, "# HELP %s %s\n# TYPE %s histogram\n", hists[h].metric, hists[h].help,
			  hists[h].metric);
		for (size_t k = 0; k < n; k++) {
			const char *metric = hists[h].metric, *ep = sums[k].name;
			uint64_t cum = 0;
			for (int b = 0; b < HIST_NBUCKETS; b++) {
				cum += sums[k].bucket[h][b];
				sb_printf(&sb, "%s_bucket{endpoint=\"%s\",le=\"%g\"} %llu\n", metric, ep,
					  hist_bounds[b], (unsigned long long)cum);
			}
			cum += sums[k].bucket[h][HIST_NBUCKETS];
			sb_printf(&sb, "%s_bucket{endpoint=\"%s\",le=\"+Inf\"} %llu\n", metric, ep,
				  (unsigned long long)cum);
			sb_printf(&sb, "%s_sum{endpoint=\"%s\"} %.6f\n", metric, ep,
				  (double)sums[k].sum_us[h] / 1e6);
			sb_printf(&sb, "%s_count{endpoint=\"%s\"} %llu\n", metric, ep,
				  (unsigned long long)sums[k].count[h]);
		}
	}
	mi_free(sums);
	sb_puts(&sb, "# HELP ringroute_backend_queued Requests waiting for a slot.\n"
		     "# TYPE ringroute_backend_queued gauge\n");
	for (size_t i = 0; i < c->nbackends; i++)
		sb_printf(&sb, "ringroute_backend_queued{backend=\"%s\"} %u\n", c->backends[i].name,
			  atomic_load(&c->backends[i].state->queued));
	sb_puts(&sb, "# HELP ringroute_replica_ongoing Requests in flight to a replica.\n"
		     "# TYPE ringroute_replica_ongoing gauge\n"
		     "# HELP ringroute_replica_requests_total Requests sent to a replica.\n"
		     "# TYPE ringroute_replica_requests_total counter\n"
		     "# HELP ringroute_replica_errors_total Failed requests to a replica.\n"
		     "# TYPE ringroute_replica_errors_total counter\n");
	for (size_t i = 0; i < c->nbackends; i++) {
		const struct backend_cfg *b = &c->backends[i];
		for (size_t r = 0; r < b->nreplicas; r++) {
			uint64_t rq, er;
			replica_counts(p, b->replicas[r].state, &rq, &er);
			sb_printf(&sb, "ringroute_replica_ongoing{backend=\"%s\",replica=\"%s\"} %u\n",
				  b->name, b->replicas[r].id, atomic_load(&b->replicas[r].state->ongoing));
			sb_printf(&sb,
				  "ringroute_replica_requests_total{backend=\"%s\",replica=\"%s\"} %llu\n",
				  b->name, b->replicas[r].id, (unsigned long long)rq);
			sb_printf(&sb,
				  "ringroute_replica_errors_total{backend=\"%s\",replica=\"%s\"} %llu\n",
				  b->name, b->replicas[r].id, (unsigned long long)er);
		}
	}
	config_unref(c);
	return sb.p; /* mi_free() it */
}

static int config_names_replica(const struct config *c, const struct replica_state *rs)
{
	for (size_t i = 0; i < c->nbackends; i++)
		for (size_t r = 0; r < c->backends[i].nreplicas; r++)
			if (c->backends[i].replicas[r].state == rs)
				return 1;
	return 0;
}

int proxy_publish(struct proxy *p, struct config *c)
{
	struct config *old = p->config;

	/* Replicas the new snapshot drops drain: no new requests start on them
	 * while those in flight finish. Replicas it (re)names serve again. */
	for (size_t i = 0; i < c->nbackends; i++)
		for (size_t r = 0; r < c->backends[i].nreplicas; r++)
			atomic_store(&c->backends[i].replicas[r].state->draining, 0);
	for (size_t i = 0; old && i < old->nbackends; i++)
		for (size_t r = 0; r < old->backends[i].nreplicas; r++) {
			struct replica_state *rs = old->backends[i].replicas[r].state;
			if (!config_names_replica(c, rs))
				atomic_store(&rs->draining, 1);
		}
	p->config = c;
	for (unsigned i = 0; i < p->nshards; i++) {
		struct config *prev;
		config_ref(c);
		prev = atomic_exchange(&p->shards[i]->next_config, c);
		if (prev)
			config_unref(prev); /* superseded before the shard took it */
	}
	if (old)
		config_unref(old);
	return xring_broadcast(p, MSG_CONFIG);
}

int proxy_stop_shards(struct proxy *p)
{
	return xring_broadcast(p, MSG_STOP);
}
