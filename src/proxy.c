/* The process-wide views: applying a change (state file + publish) and the
 * read-side summaries (stats, queues, and the counters /metrics writes,
 * prom.c) summed over shards. Runs on the control thread / main thread,
 * never on a shard. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ringroute/alloc.h"
#include "ringroute/clock.h"
#include "ringroute/health_result.h"

#include "ringroute/http.h"
#include "ringroute/instance.h"
#include "ringroute/load.h"
#include "ringroute/log.h"
#include "ringroute/proxy.h"
#include "ringroute/router.h"
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

void proxy_count_change(struct proxy *p, bool ok)
{
	atomic_fetch_add_explicit(ok ? &p->changes_ok : &p->changes_failed, 1, memory_order_relaxed);
}

/* The change itself, config_lock held (proxy_change_from, and the re-share
 * of proxy_set_instance, which holds the lock across its parse). base: see
 * proxy_change_from. Takes over the reference to c. */
static int change_locked(struct proxy *p, const struct config *base, struct config *c,
			 char *err, size_t errlen)
{
	int ret;

	if (base && p->config != base) {
		/* Another change came first: c was built from an old document. */
		config_unref(c);
		snprintf(err, errlen, "another change came first");
		return -EAGAIN;
	}
	/* Every snapshot enforces this instance's share of the caps: edits,
	 * reloads, DNS refreshes and re-shares alike. */
	instance_apply(c, atomic_load(&p->instance_index), atomic_load(&p->instance_count));
	c->version = (p->config ? p->config->version : 0) + 1;
	if (p->opt.state_path) {
		ret = write_atomic(p->opt.state_path, c->json, err, errlen);
		if (ret) {
			config_unref(c);
			proxy_count_change(p, false);
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
	if (p->on_change)
		p->on_change(p, c);
	/* States only older snapshots named go once nothing holds them. */
	registry_collect(&p->registry);
	/* A shard that could not be told still takes c at its next message:
	 * the change is current either way. */
	proxy_count_change(p, true);
	if (ret)
		snprintf(err, errlen, "could not reach every shard: %s", strerror(-ret));
	return ret;
}

int proxy_change_from(struct proxy *p, const struct config *base, struct config *c, char *err,
		      size_t errlen)
{
	int ret;

	pthread_mutex_lock(&p->config_lock);
	ret = change_locked(p, base, c, err, errlen);
	pthread_mutex_unlock(&p->config_lock);
	return ret;
}

int proxy_change(struct proxy *p, struct config *c, char *err, size_t errlen)
{
	return proxy_change_from(p, NULL, c, err, errlen);
}

int proxy_set_instance(struct proxy *p, uint32_t index, uint32_t count, char *err,
		       size_t errlen)
{
	uint32_t old_i, old_n;
	struct config *next = NULL;
	int ret = 0;

	pthread_mutex_lock(&p->config_lock);
	old_i = atomic_load(&p->instance_index);
	old_n = atomic_load(&p->instance_count);
	if (old_i == index && old_n == count)
		goto out;
	/* The same document, new shares: a change like any other, so the
	 * shards take it the one way they take every snapshot. */
	ret = config_parse(p->config->json, strlen(p->config->json), "config", &p->registry,
			   &next, err, errlen);
	if (ret)
		goto out;
	atomic_store(&p->instance_index, index);
	atomic_store(&p->instance_count, count);
	ret = change_locked(p, NULL, next, err, errlen);
	if (ret && p->config != next) {
		/* Not applied (the state file): the shares in force stay. */
		atomic_store(&p->instance_index, old_i);
		atomic_store(&p->instance_count, old_n);
	} else {
		char now[32], was[32];
		if (index == INSTANCE_NONE)
			snprintf(now, sizeof(now), "not in the set of %u", (unsigned)count);
		else
			snprintf(now, sizeof(now), "instance %u of %u", (unsigned)index,
				 (unsigned)count);
		if (old_i == INSTANCE_NONE)
			snprintf(was, sizeof(was), "not in the set");
		else
			snprintf(was, sizeof(was), "%u of %u", (unsigned)old_i, (unsigned)old_n);
		log_info("%s (was %s): caps shared anew", now, was);
		ret = 0;
	}
out:
	pthread_mutex_unlock(&p->config_lock);
	return ret;
}

int proxy_reload(struct proxy *p, const char *path, char *err, size_t errlen)
{
	struct config *next = NULL;
	int ret = config_load_file(path, &p->registry, &next, err, errlen);

	if (ret) {
		proxy_count_change(p, false);
		return ret;
	}
	return proxy_change(p, next, err, errlen);
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

void proxy_sum_replica(struct proxy *p, struct replica_state *rs, struct pool_sum *out)
{
	memset(out, 0, sizeof(*out));
	for (unsigned i = 0; i < p->nshards; i++) {
		struct upstream_pool *pool = atomic_load_explicit(&rs->pools[i], memory_order_acquire);
		if (pool)
			upstream_pool_add(out, pool);
	}
}

void proxy_sum_backend(struct proxy *p, struct backend_state *bs, struct backend_sum *out)
{
	memset(out, 0, sizeof(*out));
	for (unsigned i = 0; i < p->nshards; i++) {
		struct backend_metrics *bm = atomic_load_explicit(&bs->metrics[i], memory_order_acquire);
		if (bm)
			metrics_backend_add(out, bm);
	}
}

void proxy_sum_shards(struct proxy *p, struct shards_sum *out)
{
	memset(out, 0, sizeof(*out));
	for (unsigned i = 0; i < p->nshards; i++) {
		struct shard_metrics *m = &p->shards[i]->metrics;
		/* closed before accepted: a connection is accepted before it
		 * closes, so accepted >= closed however the shard runs meanwhile. */
		out->closed += counter_get(&m->closed);
		out->accepted += counter_get(&m->accepted);
		out->requests += counter_get(&m->requests);
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

size_t proxy_sum_endpoints(struct proxy *p, struct endpoint_sum **out)
{
	struct endpoint_sum *v = NULL;
	size_t n = 0;

	for (unsigned i = 0; i < p->nshards; i++) {
		struct shard_metrics *m = &p->shards[i]->metrics;
		struct list *pos, *tmp;
		pthread_mutex_lock(&m->lock);
		list_for_each_safe(pos, tmp, &m->endpoints) {
			struct endpoint_metrics *em = container_of(pos, struct endpoint_metrics, node);
			struct endpoint_sum *e = NULL;
			for (size_t k = 0; k < n && !e; k++)
				if (strcmp(v[k].name, em->name) == 0)
					e = &v[k];
			if (!e) {
				struct endpoint_sum *nv = mi_realloc(v, (n + 1) * sizeof(*v));
				if (!nv)
					continue;
				v = nv;
				e = &v[n++];
				memset(e, 0, sizeof(*e));
				e->name = em->name;
			}
			metrics_endpoint_add(e, em);
		}
		pthread_mutex_unlock(&m->lock);
	}
	*out = v;
	return n;
}

/* A replica's health ({healthy, reason, for_ms}: the last probe's result
 * and how long it has been in this state; present with a health check)
 * and the Retry-After it still serves (retry_after_ms, 0 when none), in
 * its /v1/stats object ro. */
static void stats_replica_retry_health(json_t *ro, const struct backend_cfg *b,
				       struct replica_state *rs)
{
	uint64_t now = clock_now_ms(), nb = atomic_load(&rs->not_before_ms);
	uint64_t changed = atomic_load(&rs->hc_changed_ms);
	char why[96];

	if (!ro)
		return;
	json_object_set_new(ro, "retry_after_ms", json_integer(nb > now ? (json_int_t)(nb - now) : 0));
	if (!b->hc_path)
		return;
	json_object_set_new(ro, "health",
			    json_pack("{s:b,s:s,s:o}", "healthy", atomic_load(&rs->healthy) != 0,
				      "reason", health_reason(atomic_load(&rs->hc_result), why, sizeof(why)),
				      "for_ms", changed ? json_integer((json_int_t)(now - changed))
							: json_null()));
}

/* A replica's reported load (load.h) in its /v1/stats object ro:
 * "load": {queue, kv_cache_usage, age_ms (null: no report yet), fresh
 * (what least_load reads now), reports, bad_reports}. */
static void stats_replica_load(json_t *ro, const struct backend_cfg *b, struct replica_state *rs)
{
	uint64_t at = atomic_load(&rs->load_ms), w = atomic_load(&rs->load_report);
	uint64_t now = clock_now_ms();
	uint32_t q, kv;

	if (!ro)
		return;
	json_object_set_new(
		ro, "load",
		json_pack("{s:I,s:f,s:o,s:b,s:I,s:I}", "queue", (json_int_t)(w >> 32), "kv_cache_usage",
			  (double)(uint32_t)w / LOAD_KV_ONE, "age_ms",
			  at ? json_integer(now > at ? (json_int_t)(now - at) : 0) : json_null(),
			  "fresh", load_fresh(rs, now, b->load_max_age_ms, &q, &kv) != 0, "reports",
			  (json_int_t)atomic_load(&rs->load_reports), "bad_reports",
			  (json_int_t)atomic_load(&rs->load_bad)));
}

json_t *proxy_stats_json(struct proxy *p)
{
	struct config *c = proxy_config_get(p);
	json_t *out = json_object(), *bes = json_object(), *eps = json_object();
	struct shards_sum sh;

	proxy_sum_shards(p, &sh);
	for (size_t i = 0; i < c->nbackends; i++) {
		const struct backend_cfg *b = &c->backends[i];
		json_t *reps = json_object(), *bo;
		struct backend_sum bsum;
		for (size_t r = 0; r < b->nreplicas; r++) {
			struct replica_state *rs = b->replicas[r].state;
			struct pool_sum ps;
			uint64_t er = 0, left = outlier_ms_left(rs, clock_now_ms());
			uint64_t ej = outlier_ejections(rs);
			json_t *ro;
			proxy_sum_replica(p, rs, &ps);
			for (int k = 0; k < UP_ERR_COUNT; k++)
				er += ps.errors[k];
			/* last_ejection_reason: null until the first ejection. */
			ro = json_pack("{s:s,s:I,s:I,s:I,s:b,s:b,s:b,s:I,s:I,s:s?}", "address",
				       b->replicas[r].address, "ongoing",
				       (json_int_t)atomic_load(&rs->ongoing), "requests",
				       (json_int_t)ps.requests, "errors", (json_int_t)er, "healthy",
				       atomic_load(&rs->healthy) != 0, "draining",
				       atomic_load(&rs->draining) != 0, "ejected", left != 0,
				       "ejected_ms_left", (json_int_t)left, "ejections", (json_int_t)ej,
				       "last_ejection_reason",
				       ej ? outlier_reason_name((enum outlier_reason)atomic_load(
						    &rs->outlier.last_reason))
					  : NULL);
			stats_replica_retry_health(ro, b, rs);
			/* weight_now: what the choice uses now (slow start ramps it) */
			json_object_set_new(ro, "weight", json_integer(b->replicas[r].weight));
			json_object_set_new(ro, "weight_now",
					    json_real((double)router_replica_weight(
							      b, &b->replicas[r], clock_now_ms()) / 1024));
			stats_replica_load(ro, b, rs);
			json_object_set_new(reps, b->replicas[r].id, ro);
		}
		proxy_sum_backend(p, b->state, &bsum);
		/* The configured caps, and the share of them this instance
		 * enforces (instance.h): equal when it runs alone. */
		bo = json_pack("{s:I,s:I,s:I,s:I,s:I,s:o}", "queued",
			       (json_int_t)atomic_load(&b->state->queued), "max_ongoing_requests",
			       (json_int_t)b->max_ongoing_cfg, "max_queued_requests",
			       (json_int_t)b->max_queued_cfg, "instance_max_ongoing_requests",
			       (json_int_t)b->max_ongoing, "instance_max_queued_requests",
			       (json_int_t)b->max_queued, "replicas", reps);
		if (bo) {
			json_object_set_new(bo, "retries", json_integer((json_int_t)bsum.retries));
			json_object_set_new(bo, "retry_budget_exhausted",
					    json_integer((json_int_t)bsum.retry_budget_exhausted));
		}
		json_object_set_new(bes, b->name, bo);
	}
	{
		struct endpoint_sum *sums;
		size_t n = proxy_sum_endpoints(p, &sums);
		for (size_t k = 0; k < n; k++) {
			json_t *codes;
			uint64_t total = 0;
			if (!sums[k].name[0])
				continue; /* unrouted requests: only in /metrics */
			codes = json_object();
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
	{
		/* index null: not in its --peers set (instance.h INSTANCE_NONE) */
		uint32_t ii = atomic_load(&p->instance_index);
		json_object_set_new(out, "instance",
				    json_pack("{s:o,s:I}", "index",
					      ii == INSTANCE_NONE ? json_null()
								  : json_integer((json_int_t)ii),
					      "count",
					      (json_int_t)atomic_load(&p->instance_count)));
	}
	json_object_set_new(out, "connections_accepted", json_integer((json_int_t)sh.accepted));
	json_object_set_new(out, "requests", json_integer((json_int_t)sh.requests));
	json_object_set_new(out, "backends", bes);
	json_object_set_new(out, "endpoints", eps);
	config_unref(c);
	return out;
}

static int config_names_replica(const struct config *c, const struct replica_state *rs)
{
	for (size_t i = 0; i < c->nbackends; i++)
		for (size_t r = 0; r < c->backends[i].nreplicas; r++)
			if (c->backends[i].replicas[r].state == rs)
				return 1;
	return 0;
}

/* See proxy.h. Replicas the new snapshot drops drain: no new requests
 * start on them while those in flight finish. Replicas it (re)names serve
 * again, unless it names them drained (the operator's drain, "drain":
 * true): one flag for both, so the choice, the pools and the stats treat an
 * operator's drain exactly as a removal, and enabling undoes it. */
void proxy_mark_draining(const struct config *old, const struct config *c)
{
	for (size_t i = 0; i < c->nbackends; i++)
		for (size_t r = 0; r < c->backends[i].nreplicas; r++) {
			struct replica_state *rs = c->backends[i].replicas[r].state;
			/* Enabled (or named again) after a drain: its server
			 * may have restarted cold, so slow start ramps it. */
			if (atomic_exchange(&rs->draining, c->backends[i].replicas[r].drain) &&
			    !c->backends[i].replicas[r].drain)
				atomic_store(&rs->up_since_ms, clock_now_ms());
		}
	for (size_t i = 0; old && i < old->nbackends; i++)
		for (size_t r = 0; r < old->backends[i].nreplicas; r++) {
			struct replica_state *rs = old->backends[i].replicas[r].state;
			if (!config_names_replica(c, rs))
				atomic_store(&rs->draining, 1);
		}
}

int proxy_publish(struct proxy *p, struct config *c)
{
	struct config *old = p->config;

	proxy_mark_draining(old, c);
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
