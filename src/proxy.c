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
#include "ringroute/proxy.h"
#include "ringroute/request.h"
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
		struct upstream_pool *pool = rs->pools[i];
		if (!pool)
			continue;
		*req += counter_get(&pool->requests);
		*err += counter_get(&pool->errors);
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
	for (unsigned i = 0; i < p->nshards; i++) {
		struct shard_metrics *m = &p->shards[i]->metrics;
		struct list *pos, *tmp;
		pthread_mutex_lock(&m->lock);
		list_for_each_safe(pos, tmp, &m->endpoints) {
			struct endpoint_metrics *em = container_of(pos, struct endpoint_metrics, node);
			json_t *e = json_object_get(eps, em->name), *codes;
			if (!e) {
				e = json_pack("{s:I,s:o}", "requests", (json_int_t)0, "status", json_object());
				json_object_set_new(eps, em->name, e);
			}
			codes = json_object_get(e, "status");
			for (int st = 100; st < 600; st++) {
				uint64_t n = counter_get(&em->status[st]);
				char key[8];
				json_t *prev;
				if (!n)
					continue;
				snprintf(key, sizeof(key), "%d", st);
				prev = json_object_get(codes, key);
				json_object_set_new(codes, key,
						    json_integer((prev ? json_integer_value(prev) : 0) +
								 (json_int_t)n));
				json_object_set_new(
					e, "requests",
					json_integer(json_integer_value(json_object_get(e, "requests")) +
						     (json_int_t)n));
			}
		}
		pthread_mutex_unlock(&m->lock);
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

static void hist_text(struct strbuf *sb, struct proxy *p, const char *metric, const char *ep,
		      size_t field_off)
{
	uint64_t buckets[HIST_NBUCKETS + 1] = {0}, count = 0, sum = 0, cum = 0;
	for (unsigned i = 0; i < p->nshards; i++) {
		struct shard_metrics *m = &p->shards[i]->metrics;
		struct list *pos, *tmp;
		pthread_mutex_lock(&m->lock);
		list_for_each_safe(pos, tmp, &m->endpoints) {
			struct endpoint_metrics *em = container_of(pos, struct endpoint_metrics, node);
			struct hist *h = (struct hist *)((char *)em + field_off);
			if (strcmp(em->name, ep))
				continue;
			for (int b = 0; b <= HIST_NBUCKETS; b++)
				buckets[b] += counter_get(&h->bucket[b]);
			count += counter_get(&h->count);
			sum += counter_get(&h->sum_us);
		}
		pthread_mutex_unlock(&m->lock);
	}
	for (int b = 0; b < HIST_NBUCKETS; b++) {
		cum += buckets[b];
		sb_printf(sb, "%s_bucket{endpoint=\"%s\",le=\"%g\"} %llu\n", metric, ep, hist_bounds[b],
			  (unsigned long long)cum);
	}
	cum += buckets[HIST_NBUCKETS];
	sb_printf(sb, "%s_bucket{endpoint=\"%s\",le=\"+Inf\"} %llu\n", metric, ep,
		  (unsigned long long)cum);
	sb_printf(sb, "%s_sum{endpoint=\"%s\"} %.6f\n", metric, ep, (double)sum / 1e6);
	sb_printf(sb, "%s_count{endpoint=\"%s\"} %llu\n", metric, ep, (unsigned long long)count);
}

char *proxy_metrics_text(struct proxy *p)
{
	struct config *c = proxy_config_get(p);
	struct strbuf sb = {0};
	json_t *stats = proxy_stats_json(p), *eps = json_object_get(stats, "endpoints");
	const char *name;
	json_t *e;

	sb_puts(&sb, "# HELP ringroute_requests_total Requests by endpoint and status code.\n"
		     "# TYPE ringroute_requests_total counter\n");
	json_object_foreach(eps, name, e) {
		const char *code;
		json_t *n;
		json_object_foreach(json_object_get(e, "status"), code, n)
			sb_printf(&sb, "ringroute_requests_total{endpoint=\"%s\",code=\"%s\"} %lld\n",
				  name, code, (long long)json_integer_value(n));
	}
	static const struct {
		const char *metric, *help;
		size_t off;
	} hists[] = {
		{"ringroute_request_duration_seconds", "Time from request head to response end.",
		 offsetof(struct endpoint_metrics, total)},
		{"ringroute_queue_wait_seconds", "Time spent waiting for a replica slot.",
		 offsetof(struct endpoint_metrics, queue_wait)},
		{"ringroute_first_byte_seconds", "Time from request head to first response byte.",
		 offsetof(struct endpoint_metrics, ttfb)},
	};
	for (size_t h = 0; h < sizeof(hists) / sizeof(hists[0]); h++) {
		sb_printf(&sb, "# HELP %s %s\n# TYPE %s histogram\n", hists[h].metric, hists[h].help,
			  hists[h].metric);
		json_object_foreach(eps, name, e)
			hist_text(&sb, p, hists[h].metric, name, hists[h].off);
	}
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
	json_decref(stats);
	config_unref(c);
	return sb.p; /* mi_free() it */
}
