/* The lifecycle of one request (see request.h). */
#include "ringroute/request.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "ringroute/accesslog.h"
#include "ringroute/alloc.h"
#include "ringroute/body.h"
#include "ringroute/clock.h"
#include "ringroute/model.h"
#include "ringroute/multiplex.h"
#include "ringroute/load.h"
#include "ringroute/log.h"
#include "ringroute/outlier.h"
#include "ringroute/prefix.h"
#include "ringroute/retry.h"
#include "ringroute/router.h"
#include "ringroute/shadow.h"
#include "ringroute/shard.h"
#include "ringroute/upstream.h"

static const char *const reason_names[REQ_R_COUNT] = {
	[REQ_R_OK] = "ok",
	[REQ_R_CLIENT_ABORT] = "client_abort",
	[REQ_R_BAD_REQUEST] = "bad_request",
	[REQ_R_HEADERS_TOO_LARGE] = "headers_too_large",
	[REQ_R_NO_ROUTE] = "no_route",
	[REQ_R_METHOD_NOT_ALLOWED] = "method_not_allowed",
	[REQ_R_BODY_TOO_LARGE] = "body_too_large",
	[REQ_R_NOT_IMPLEMENTED] = "not_implemented",
	[REQ_R_HTTP_VERSION] = "http_version",
	[REQ_R_QUEUE_FULL] = "queue_full",
	[REQ_R_QUEUE_TIMEOUT] = "queue_timeout",
	[REQ_R_UPSTREAM_CONNECT_FAILED] = "upstream_connect_failed",
	[REQ_R_UPSTREAM_RESET] = "upstream_reset",
	[REQ_R_UPSTREAM_TIMEOUT] = "upstream_timeout",
	[REQ_R_UPSTREAM_BAD_RESPONSE] = "upstream_bad_response",
	[REQ_R_NO_MEMORY] = "no_memory",
	[REQ_R_SHUTDOWN] = "shutdown",
	[REQ_R_NO_HEALTHY_REPLICA] = "no_healthy_replica",
	[REQ_R_NO_MODEL] = "no_model",
	[REQ_R_EVICTED] = "evicted",
	[REQ_R_DEADLINE] = "deadline",
	[REQ_R_DEADLINE_UNREACHABLE] = "deadline_unreachable",
	[REQ_R_SHED] = "shed",
	[REQ_R_TENANT_QUEUE_FULL] = "tenant_queue_full",
};

_Static_assert(REQ_R_COUNT <= METRICS_REASONS, "metrics by_reason is too small");

static int req_start_upstream(struct shard *s, struct request *req, int fresh);
static bool backend_serving(const struct backend_cfg *be);
static void req_cut_upstream(struct shard *s, struct request *req);
static void retry_fire(struct timer *t, void *ctx);
static void queue_expired(struct timer *t, void *ctx);

const char *req_reason_name(enum req_reason r)
{
	return (unsigned)r < REQ_R_COUNT ? reason_names[r] : "unknown";
}

struct request *req_new(struct shard *s, const struct req_client_ops *ops, void *client,
			const char *peer_ip, uint16_t peer_port)
{
	struct request *req = mi_zalloc(sizeof(*req));

	if (!req)
		return NULL;
	req->s = s;
	req->cops = ops;
	req->client = client;
	req->peer_ip = peer_ip;
	req->peer_port = peer_port;
	req->cfg = s->config;
	config_ref(req->cfg);
	req->ridx = -1;
	req->t_start_us = clock_now_us();
	queue_entry_init(&req->qe, queue_expired);
	list_init(&req->shadows);
	timer_init(&req->retry_timer, retry_fire);
	counter_add(&s->metrics.requests, 1);
	return req;
}

void req_note(struct request *req, const struct req_info *ri)
{
	const struct http_hdr *rid;
	size_t n;

	req->bytes_in = ri->head_bytes;
	/* The client's id stands if it is a sane one: every answer carries
	 * it, errors too. Else ours, made on first use (req_id). */
	rid = ri->hd ? http_head_request_id(ri->hd) : NULL;
	if (rid) {
		memcpy(req->rid, http_hdr_value(ri->hd, rid), rid->value_len);
		req->rid[rid->value_len] = '\0';
	}
	if (!ri->url)
		return;
	req->method = llhttp_method_name((llhttp_method_t)ri->method);
	req->http_major = ri->p->http_major;
	req->http_minor = ri->p->http_minor;
	n = ri->url_len < ACCESSLOG_PATH_MAX ? ri->url_len : ACCESSLOG_PATH_MAX;
	req->path = mi_malloc(n + 1); /* NULL: logged as "-", the request goes on */
	if (req->path) {
		memcpy(req->path, ri->url, n);
		req->path[n] = '\0';
		req->path_len = (uint32_t)n;
	}
}

const char *req_id(struct request *req)
{
	if (!req->rid[0])
		snprintf(req->rid, sizeof(req->rid), "%016llx",
			 (unsigned long long)router_rand(&req->s->rng));
	return req->rid;
}

static void release_slot(struct shard *s, struct request *req)
{
	if (!req->rs)
		return;
	router_replica_release(req->rs);
	req->rs = NULL;
	if (req->be)
		queue_slot_freed(s, req->be->state);
}

/* Record the outcome once: every request, however it ended; one that
 * matched no endpoint under the unrouted metrics (endpoint ""), one that
 * was given a backend also under that backend, by reason. */
static void req_record(struct shard *s, struct request *req)
{
	uint64_t t = clock_now_us();
	int st = req->status > 0 && req->status < 600 ? req->status : 0;
	struct endpoint_metrics *em = req->em ? req->em : metrics_unrouted(&s->metrics);

	counter_add(&s->metrics.by_status[st], 1);
	counter_add(&s->metrics.by_reason[req->reason], 1);
	if (req->be) {
		struct backend_metrics *bm = registry_backend_metrics(req->be->state, s->id);
		if (bm)
			counter_add(&bm->by_reason[req->reason], 1);
	}
	if (!em)
		return;
	counter_add(&em->status[st], 1);
	metrics_hist_observe(&em->total, t - req->t_start_us);
	if (req->t_first_us)
		metrics_hist_observe(&em->ttfb, req->t_first_us - req->t_start_us);
}

/* Take req out of its queue. The wait that ends here is observed, however
 * it ends: a slot, the queue timeout, the client leaving, a removed
 * backend. */
static void req_wait_ended(struct request *req)
{
	uint64_t w = clock_now_us() - req->qe.t_entered_us;

	req->queue_us += w; /* the access log's queue_ms: every wait summed */
	if (req->em)
		metrics_hist_observe(&req->em->queue_wait, w);
}

static void req_unqueue(struct shard *s, struct request *req)
{
	if (!queue_entry_queued(&req->qe))
		return;
	req_wait_ended(req);
	queue_remove(s, &req->qe);
}

/* req was taken out of its queue by the queue itself (an eviction): it
 * ends with 503 evicted. */
static void req_evicted(struct shard *s, struct queue_entry *e)
{
	struct request *req = container_of(e, struct request, qe);

	req_wait_ended(req);
	req_fail(s, req, 503, REQ_R_EVICTED, "backend overloaded: evicted by a higher priority");
}

/* req is tried again after a failed attempt. */
static void count_retry(struct shard *s, struct request *req)
{
	struct backend_metrics *bm = registry_backend_metrics(req->be->state, s->id);

	if (bm)
		counter_add(&bm->retries, 1);
}

/* A retry of req was refused by its backend's retry budget. */
static void count_budget_exhausted(struct shard *s, struct request *req)
{
	struct backend_metrics *bm = registry_backend_metrics(req->be->state, s->id);

	if (bm)
		counter_add(&bm->retry_budget_exhausted, 1);
}

/* The retry budget counts req in flight on bs from now until it ends. */
static void budget_enter(struct request *req, struct backend_state *bs)
{
	req->budget_bs = bs;
	atomic_fetch_add_explicit(&bs->inflight, 1, memory_order_relaxed);
}

static void budget_leave(struct request *req)
{
	if (!req->budget_bs)
		return;
	if (req->flags & REQ_F_RETRYING)
		retry_budget_put(req->budget_bs);
	atomic_fetch_sub_explicit(&req->budget_bs->inflight, 1, memory_order_relaxed);
	req->budget_bs = NULL;
}

/* The access log line of req, which ends now. */
static void req_log(struct shard *s, struct request *req)
{
	static const char *const versions[2] = {"HTTP/1.0", "HTTP/1.1"};
	struct accesslog_rec r;
	uint64_t now;
	char ver[24], client[64];

	if (!accesslog_on(&s->alog))
		return;
	now = clock_now_us();
	memset(&r, 0, sizeof(r));
	if (req->peer_ip) {
		/* "ip:port" ("[ip]:port" for IPv6) on every line: no printf */
		size_t len = strnlen(req->peer_ip, sizeof(client) - 9), n = 0;
		int v6 = memchr(req->peer_ip, ':', len) != NULL;
		char digits[5];
		int k = 0;
		unsigned v = req->peer_port;

		if (v6)
			client[n++] = '[';
		memcpy(client + n, req->peer_ip, len);
		n += len;
		if (v6)
			client[n++] = ']';
		client[n++] = ':';
		do
			digits[k++] = (char)('0' + v % 10);
		while ((v /= 10));
		while (k)
			client[n++] = digits[--k];
		client[n] = '\0';
		r.client = client;
	}
	r.method = req->method;
	r.path = req->path;
	r.path_len = req->path_len;
	if (req->http_major == 1 && req->http_minor <= 1) {
		r.version = versions[req->http_minor];
	} else if (req->http_major) {
		snprintf(ver, sizeof(ver), "HTTP/%u.%u", req->http_major, req->http_minor);
		r.version = ver;
	}
	r.status = req->status;
	r.endpoint = req->ep ? req->ep->name : NULL;
	r.backend = req->be ? req->be->name : NULL;
	r.replica = req->be && req->ridx >= 0 ? req->be->replicas[req->ridx].id : NULL;
	r.request_id = req_id(req);
	r.request_id_len = strlen(r.request_id);
	r.bytes_in = req->bytes_in + req->body_bytes;
	r.bytes_out = req->bytes_out;
	r.queue_us = req->queue_us;
	r.duration_us = now - req->t_start_us;
	/* The first byte: the replica's head, or our own answer. */
	if (req->t_first_us)
		r.ttfb_us = (int64_t)(req->t_first_us - req->t_start_us);
	else
		r.ttfb_us = (req->flags & REQ_F_OWN_ANSWER) ? (int64_t)r.duration_us : -1;
	r.retries = req->tries + ((req->flags & REQ_F_FRESH_DONE) ? 1 : 0);
	r.reason = req_reason_name(req->reason);
	accesslog_put(&s->alog, &r, now);
}

/* End req: record it once, release what it holds, free it, then tell the
 * protocol it may go on. Every request ends here. */
static void req_end(struct shard *s, struct request *req)
{
	const struct req_client_ops *ops = req->cops;
	void *client = req->client;

	req->flags |= REQ_F_ENDED;
	req->cops = NULL;
	req_cut_upstream(s, req);
	shadow_detach(&req->shadows);
	req_unqueue(s, req);
	timer_cancel(&s->tw, &req->retry_timer);
	release_slot(s, req);
	budget_leave(req);
	req_record(s, req);
	req_log(s, req);
	retry_free(s, req);
	mi_free(req->head.p);
	mi_free(req->path);
	mi_free(req->shard_key);
	mi_free(req->tenant);
	mi_free(req->model);
	mi_free(req->mux_model);
	mi_free(req->load_fmt);
	mi_free(req->blocks);
	if (req->be_cfg)
		config_unref(req->be_cfg);
	config_unref(req->cfg);
	mi_free(req);
	if (ops)
		ops->on_released(s, client);
}

void req_fail(struct shard *s, struct request *req, int status, enum req_reason reason,
	      const char *msg)
{
	req->status = status;
	req->reason = reason;
	req_cut_upstream(s, req);
	if (!(req->flags & REQ_F_BODY_DONE))
		shadow_abort(s, &req->shadows); /* their bodies would never end */
	if (req->cops && !(req->flags & REQ_F_RESP_BEGUN))
		req->flags |= REQ_F_OWN_ANSWER;
	if (req->cops)
		req->cops->on_fail(s, req, status, msg, status == 503 ? 1 : 0);
	req_end(s, req);
}

void req_abandon(struct shard *s, struct request *req, enum req_reason reason)
{
	req->status = 499; /* client closed request (nginx's convention) */
	req->reason = reason;
	req->cops = NULL; /* nobody to tell */
	shadow_abort(s, &req->shadows);
	req_end(s, req);
}

/* ---- dispatch ---- */

/* The replica the router picks for req, with a slot taken, passing over
 * those that already failed it while others are free; -1 when none has a
 * slot. */
static int pick_replica(struct shard *s, struct request *req)
{
	return router_pick_replica_hint(req->be, &req->hint, req->shard_key, req->shard_key_len,
					&s->rng, &s->rr_cursor, req->tried_mask);
}

/* Queue req for its backend. Returns 1 (queued) or 0 (ended: 503). Fails
 * fast while no replica is up: a wait would only end in the queue timeout,
 * unless the backend asks to wait for one (queue_when_unavailable). */
/* ep's weight for tenant name[0..len) (NULL: ""): tenant_weights, else 1. */
static uint32_t tenant_weight(const struct endpoint_cfg *ep, const char *name, size_t len)
{
	size_t lo = 0, hi = ep->ntenant_weights;

	if (!name)
		name = "";
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		const char *k = ep->tenant_weights[mid].name;
		size_t kl = strlen(k);
		int c = memcmp(k, name, kl < len ? kl : len);
		if (!c)
			c = kl < len ? -1 : kl > len ? 1 : 0;
		if (!c)
			return ep->tenant_weights[mid].weight;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return 1;
}

static int req_enqueue(struct shard *s, struct request *req)
{
	const struct backend_cfg *be = req->be;
	uint64_t now = clock_now_us();
	int rc;

	struct queue_entry *victim;
	uint64_t dl = req->qe.req_deadline_us;

	if (req->prio < 0) {
		req_fail(s, req, 503, REQ_R_SHED, "backend overloaded: sheddable request shed");
		return 0;
	}
	if (!be->queue_when_unavailable && !backend_serving(be)) {
		req_fail(s, req, 503, REQ_R_NO_HEALTHY_REPLICA, "no healthy replica");
		return 0;
	}
	/* It would wait past its deadline: refused now, not failed later. */
	if (dl && !queue_entry_queued(&req->qe) &&
	    (now >= dl || queue_wait_estimate_us(be->state, req->prio, be->max_ongoing) >= dl - now)) {
		req_fail(s, req, 503, REQ_R_DEADLINE_UNREACHABLE,
			 "backend overloaded: deadline unreachable");
		return 0;
	}
	req->qe.prio = req->prio;
	req->qe.edf = req->ep->queue_edf;
	req->qe.fair = req->ep->fairness_header != NULL;
	req->qe.tenant_name = req->tenant ? req->tenant : "";
	req->qe.tenant_len = req->tenant ? req->tenant_len : 0;
	req->qe.tenant_max = req->ep->fairness_header ? req->ep->max_queued_per_tenant : 0;
	req->qe.weight = tenant_weight(req->ep, req->tenant, req->tenant_len);
	rc = queue_add(s, be->state, be->max_queued, &req->qe, now, be->queue_timeout_ms, &victim);
	if (rc == -ENOSPC) {
		req_fail(s, req, 503, REQ_R_QUEUE_FULL, "backend overloaded: queue full");
		return 0;
	}
	if (rc == -EDQUOT) {
		req_fail(s, req, 503, REQ_R_TENANT_QUEUE_FULL, "backend overloaded: tenant queue full");
		return 0;
	}
	if (rc) {
		req_fail(s, req, 503, REQ_R_NO_MEMORY, "out of memory");
		return 0;
	}
	if (victim)
		req_evicted(s, victim);
	return 1;
}

/* Start req on a replica of its backend, or queue it. from_queue: req is
 * at the front of its queue. Returns 1 while req lives (started or
 * queued), 0 when it ended. */
static int req_dispatch(struct shard *s, struct request *req, int from_queue)
{
	const struct backend_cfg *be = req->be;
	int idx, ret;

	/* No barging: while anyone waits for this backend, a newcomer queues
	 * behind them even if a slot just freed (the queue gets it first). */
	if (!from_queue && atomic_load_explicit(&be->state->queued, memory_order_relaxed) > 0) {
		s->retry_pending = 1;
		return req_enqueue(s, req);
	}
	/* Too late already (a retry's backoff, a re-route): say so. */
	if (req->qe.req_deadline_us && clock_now_us() >= req->qe.req_deadline_us) {
		req_fail(s, req, 504, REQ_R_DEADLINE, "deadline passed before a replica was free");
		return 0;
	}
	idx = pick_replica(s, req);
	if (idx < 0)
		return from_queue ? 1 : req_enqueue(s, req);
	if (from_queue && queue_entry_queued(&req->qe)) {
		req_wait_ended(req);
		queue_take(s, &req->qe);
	}
	req->ridx = idx;
	req->rs = be->replicas[idx].state;
	ret = req_start_upstream(s, req, 0);
	if (ret) {
		release_slot(s, req);
		if (ret == -ENOMEM)
			req_fail(s, req, 503, REQ_R_NO_MEMORY, "out of memory");
		else
			req_fail(s, req, 502, REQ_R_UPSTREAM_CONNECT_FAILED, "cannot reach replica");
		return 0;
	}
	return 1;
}

/* req was (re)started on a replica: body bytes may be waiting for it. The
 * protocol may end req meanwhile: do not use req after this. */
static void body_room(struct shard *s, struct request *req)
{
	if (req->cops && req->up)
		req->cops->on_body_room(s, req);
}

/* The endpoint's defaults where req's head said nothing: its priority,
 * and its timeout_ms as the deadline. Again when a held body chose
 * another endpoint (hold_decide). */
static void req_class_defaults(struct request *req, const struct endpoint_cfg *ep)
{
	if (!req->prio_hdr)
		req->prio = ep->priority;
	if (!req->deadline_hdr)
		req->qe.req_deadline_us = ep->timeout_ms ? req->t_start_us + ep->timeout_ms * 1000ull : 0;
}

/* Who goes next: req's priority (the priority header's integer, clamped
 * to [-10, 10], else the endpoint's), its deadline (arrival + the timeout
 * header's milliseconds, at least 1, else + timeout_ms, else none) and its
 * tenant (the fairness header's value; "" without one). The header names
 * are those of ep, the endpoint the route chose. 0 or -ENOMEM. */
static int req_classify(struct request *req, const struct endpoint_cfg *ep,
			const struct http_head *hd)
{
	const struct http_hdr *h;
	int64_t v;

	if (ep->priority_header && (h = http_head_find(hd, ep->priority_header)) &&
	    http_hdr_int(hd, h, &v) == 0) {
		req->prio = v < QUEUE_PRIO_MIN ? QUEUE_PRIO_MIN : v > QUEUE_PRIO_MAX ? QUEUE_PRIO_MAX
										  : (int)v;
		req->prio_hdr = true;
	}
	if (ep->timeout_header && (h = http_head_find(hd, ep->timeout_header)) &&
	    http_hdr_int(hd, h, &v) == 0) {
		uint64_t ms = v < 1 ? 1 : (uint64_t)v > 86400000ull * 365 ? 86400000ull * 365
									 : (uint64_t)v;
		req->qe.req_deadline_us = req->t_start_us + ms * 1000u;
		req->deadline_hdr = true;
	}
	req_class_defaults(req, ep);
	if (ep->fairness_header && (h = http_head_find(hd, ep->fairness_header)) &&
	    h->value_len) {
		req->tenant = mi_strndup(http_hdr_value(hd, h), h->value_len);
		if (!req->tenant)
			return -ENOMEM;
		req->tenant_len = h->value_len;
	}
	return 0;
}

/* A copy of header name's value in hd into *out (mi_malloc'ed, *len);
 * 0 when absent or empty, -ENOMEM. */
static int copy_header(const struct http_head *hd, const char *name, char **out, size_t *len)
{
	const struct http_hdr *h = http_head_find(hd, name);

	if (!h || !h->value_len)
		return 0;
	*out = mi_strndup(http_hdr_value(hd, h), h->value_len);
	if (!*out)
		return -ENOMEM;
	*len = h->value_len;
	return 0;
}

/* The backend of req's endpoint by weight (by the shard key's unit when
 * it has one), counted in its retry budget. */
static void pick_backend(struct shard *s, struct request *req)
{
	const struct endpoint_cfg *ep = req->ep;
	double u = req->shard_key ? router_key_unit(req->shard_key, req->shard_key_len)
				  : router_rand_unit(&s->rng);

	req->be = router_pick_weighted(ep->traffic, ep->ntraffic, u);
	budget_enter(req, req->be->state);
}

/* Does req's backend read the body (model_rewrite, policy prefix, or a
 * multiplexed backend that takes the model id from the body)? */
static bool backend_reads_body(const struct request *req)
{
	const struct backend_cfg *be = req->be;

	return be->model_rewrite || be->policy == POLICY_PREFIX ||
	       (be->mux_max_models && !req->mux_model && !req->model);
}

/* The endpoint of req's model among those sharing its route (the model
 * may be NULL: the catch-all). 0, or -1 when req ended (404 no_model). */
static int choose_model_endpoint(struct shard *s, struct request *req)
{
	const struct endpoint_cfg *ep =
		router_match_model(req->cfg, req->ep, req->method_num, req->model, req->model_len);
	char msg[MODEL_NAME_MAX + 64];

	if (!ep) {
		if (req->model)
			snprintf(msg, sizeof(msg), "no endpoint for model \"%.*s\"",
				 (int)(req->model_len > MODEL_NAME_MAX ? MODEL_NAME_MAX : req->model_len),
				 req->model);
		else
			snprintf(msg, sizeof(msg), "no endpoint for a request without a model");
		req_fail(s, req, 404, REQ_R_NO_MODEL, msg);
		return -1;
	}
	if (ep != req->ep) {
		req->ep = ep;
		req->em = metrics_endpoint(&s->metrics, ep->name);
	}
	if (req->content_length >= 0 && (uint64_t)req->content_length > ep->max_body_bytes) {
		req_fail(s, req, 413, REQ_R_BODY_TOO_LARGE, "request body too large");
		return -1;
	}
	return 0;
}

static void hold_timeout(struct timer *t, void *ctx);
static int hold_decide(struct shard *s, struct request *req, bool complete);

/* The model id of a multiplexed backend: serve_multiplexed_model_id, else
 * the request's model (header or decoded body), else body_model (the
 * body's, as written; NULL: none). */
static void set_mux_id(struct request *req, const struct model_span *body_model)
{
	if (!req->be->mux_max_models)
		return;
	if (req->mux_model)
		req->hint.mux_id = mux_id(req->mux_model, req->mux_model_len);
	else if (req->model)
		req->hint.mux_id = mux_id(req->model, req->model_len);
	else if (body_model)
		req->hint.mux_id = mux_id(body_model->p, body_model->len);
}

void req_start(struct shard *s, struct request *req, const struct req_info *ri)
{
	const struct endpoint_cfg *ep;
	const struct http_hdr *key;
	struct fwd_info fi;
	int status = 0;

	req->is_head = ri->is_head;
	req->http10 = ri->http10;
	req->expect_continue = ri->expect_continue;
	req->idempotent = retry_idempotent(ri->method);
	ep = router_match(req->cfg, ri->url, ri->url_len, ri->method, &status);
	req->ep = ep;
	if (ep) /* a 405 too: it counts under the endpoint it matched */
		req->em = metrics_endpoint(&s->metrics, ep->name);
	if (status != 200) {
		if (status == 405)
			req_fail(s, req, 405, REQ_R_METHOD_NOT_ALLOWED, "method not allowed");
		else
			req_fail(s, req, 404, REQ_R_NO_ROUTE, "no route");
		return;
	}
	if (ri->content_length >= 0 && (uint64_t)ri->content_length > ep->max_body_bytes) {
		req_fail(s, req, 413, REQ_R_BODY_TOO_LARGE, "request body too large");
		return;
	}
	key = http_head_find(ri->hd, "x-serve-shard-key");
	if (key) {
		req->shard_key = mi_strndup(http_hdr_value(ri->hd, key), key->value_len);
		if (!req->shard_key) {
			/* Routing without the key would break stickiness silently. */
			req_fail(s, req, 503, REQ_R_NO_MEMORY, "out of memory");
			return;
		}
		req->shard_key_len = key->value_len;
	}
	req->content_length = ri->content_length;
	req->chunked = ri->chunked;
	req->method_num = ri->method;
	if (ep->route_models) {
		/* The model header of the route's endpoints (the first one
		 * found wins), else the body's model decides the endpoint. */
		for (size_t i = (size_t)(ep - req->cfg->endpoints);
		     i < req->cfg->nendpoints && !req->model &&
		     req->cfg->endpoints[i].route_len == ep->route_len &&
		     memcmp(req->cfg->endpoints[i].route, ep->route, ep->route_len) == 0;
		     i++) {
			if (copy_header(ri->hd, req->cfg->endpoints[i].model_header, &req->model,
					&req->model_len)) {
				req_fail(s, req, 503, REQ_R_NO_MEMORY, "out of memory");
				return;
			}
		}
		if (req->model && choose_model_endpoint(s, req))
			return;
		ep = req->ep;
		if (!req->model)
			req->hold |= REQ_HOLD_MODEL;
	}
	if (req_classify(req, ep, ri->hd)) {
		req_fail(s, req, 503, REQ_R_NO_MEMORY, "out of memory");
		return;
	}
	if (!req->hold)
		pick_backend(s, req);
	/* Looked for only where a multiplexed backend may read it. */
	if ((req->hold || req->be->mux_max_models) &&
	    copy_header(ri->hd, "serve_multiplexed_model_id", &req->mux_model,
			&req->mux_model_len)) {
		req_fail(s, req, 503, REQ_R_NO_MEMORY, "out of memory");
		return;
	}
	if (!req->hold) {
		if (backend_reads_body(req))
			req->hold |= REQ_HOLD_BACKEND;
		else
			set_mux_id(req, NULL);
	}
	fi.client_ip = ri->client_ip;
	fi.request_id = req_id(req);
	fi.call_method = req->hold ? NULL : ep->call_method;
	fi.open = req->hold != 0;
	/* A held request's backend may not be known yet: its load format is
	 * written when the head is closed (hold_decide). */
	fi.load_format = !req->hold && req->be->load_reports ? "text" : NULL;
	fi.drop_timeout = req->qe.req_deadline_us != 0;
	if (http_write_request_head(&req->head, ri->hd, ri->p, &fi)) {
		req_fail(s, req, 503, REQ_R_NO_MEMORY, "out of memory");
		return;
	}
	if (req->hold) {
		req->client_cm = http_head_find(ri->hd, "x-serve-call-method") != NULL;
		if (copy_header(ri->hd, "endpoint-load-metrics-format", &req->load_fmt,
				&req->load_fmt_len)) {
			req_fail(s, req, 503, REQ_R_NO_MEMORY, "out of memory");
			return;
		}
		req->hold_max = ep->route_body_max;
		if (ri->expect_continue && req->cops) {
			/* The body comes only after a 100 Continue, and the
			 * replica is not chosen before it: ours. A replica's
			 * own 100 later is dropped. */
			req->cops->on_continue(s, req);
			req->expect_continue = false;
		}
		if (!ri->chunked && ri->content_length <= 0) {
			hold_decide(s, req, true); /* no body: nothing to wait for */
			return;
		}
		if (ri->content_length >= 0 && (uint64_t)ri->content_length > req->hold_max) {
			hold_decide(s, req, false); /* beyond the bound: route it now */
			return;
		}
		timer_init(&req->retry_timer, hold_timeout);
		timer_arm(&s->tw, &req->retry_timer, s->header_timeout_ms);
		return;
	}
	/* The remaining time goes last, written at each attempt. */
	if (req->qe.req_deadline_us)
		req->head_base = req->head.len - 2;
	if (ep->nshadow)
		shadow_start(s, &req->shadows, req->cfg, ep, req->head.p, req->head.len,
			     req->is_head);
	req_dispatch(s, req, 0);
}

/* ---- a body held before routing ---- */

/* The client did not send the body it announced within the header
 * timeout while it was held: nobody else waits on it. */
static void hold_timeout(struct timer *t, void *ctx)
{
	struct shard *s = ctx;
	struct request *req = container_of(t, struct request, retry_timer);

	req_fail(s, req, 408, REQ_R_BAD_REQUEST, "request body not received in time");
}

/* The held body as one run: in place when it is one Content-Length
 * segment, else de-chunked or joined into lin. 0 with *p, *n (*p NULL
 * when the framing is bad: read as no JSON), or -ENOMEM. */
static int held_body(struct request *req, struct strbuf *lin, const char **p, size_t *n)
{
	int rc;

	*p = NULL;
	*n = 0;
	if (!req->chunked && req->nreplay == 1) {
		*p = req->replay[0].p;
		*n = req->replay[0].len;
		return 0;
	}
	rc = body_linear(req->replay, req->nreplay, req->chunked, lin);
	if (rc == -ENOMEM)
		return rc;
	if (rc == 0 && lin->len) {
		*p = lin->p;
		*n = lin->len;
	}
	return 0;
}

/* The prefix block hashes of the prompt of body into req->hint.
 * 0 or -ENOMEM. */
static int hash_prompt(struct request *req, const char *body, size_t n)
{
	struct model_span spans[MODEL_PROMPT_SPANS];
	const uint32_t bb = req->be->prefix.block_bytes;
	int ns = model_prompt(body, n, spans, MODEL_PROMPT_SPANS);
	size_t total = 0, max;

	for (int i = 0; i < ns; i++)
		total += spans[i].len;
	max = total / bb < PREFIX_MAX_BLOCKS ? total / bb : PREFIX_MAX_BLOCKS;
	if (!max)
		return 0;
	req->blocks = mi_malloc(max * sizeof(*req->blocks));
	if (!req->blocks)
		return -ENOMEM;
	req->hint.blocks = req->blocks;
	req->hint.nblocks = prefix_hash(spans, (size_t)ns, bb, req->blocks, max);
	return 0;
}

/* The held body is complete (complete), or past route_body_max_bytes or
 * not coming (the request then routes without reading it): read what
 * routing needs from it, choose the endpoint and backend, close the head
 * with the framing the body now has, start the shadows and dispatch; the
 * held bytes go first (req_start_upstream sends req->replay). Returns 0,
 * or -1 when req ended. */
static int hold_decide(struct shard *s, struct request *req, bool complete)
{
	struct strbuf lin = {0}, nb = {0};
	const char *body = NULL;
	size_t n = 0;
	struct model_span mv;
	int found = 0, rc = 0;

	timer_cancel(&s->tw, &req->retry_timer);
	timer_init(&req->retry_timer, retry_fire);
	if (complete && req->nreplay && held_body(req, &lin, &body, &n))
		goto nomem;
	if (body)
		found = model_find(body, n, &mv) == 1;
	if ((req->hold & REQ_HOLD_MODEL) && found) {
		char name[MODEL_NAME_MAX];
		long dl = model_decode(&mv, name, sizeof(name));
		if (dl > 0) {
			req->model = mi_strndup(name, (size_t)dl);
			if (!req->model)
				goto nomem;
			req->model_len = (size_t)dl;
		}
	}
	if (req->hold & REQ_HOLD_MODEL) {
		if (choose_model_endpoint(s, req))
			goto ended;
		req_class_defaults(req, req->ep);
		pick_backend(s, req);
	}
	req->hold = 0;
	set_mux_id(req, found ? &mv : NULL);
	if (req->be->policy == POLICY_PREFIX && body && hash_prompt(req, body, n))
		goto nomem;
	if (req->be->model_rewrite) {
		if (!complete) {
			req_fail(s, req, 413, REQ_R_BODY_TOO_LARGE,
				 "request body larger than route_body_max_bytes: its model cannot "
				 "be rewritten");
			goto ended;
		}
		if (found) {
			size_t voff = (size_t)(mv.p - 1 - body);
			if (body_rewrite(body, n, voff, voff + mv.len + 2, req->be->model_rewrite, &nb))
				goto nomem;
			rc = retry_replace(s, req, nb.p, nb.len);
			nb.p = NULL; /* req's now (or freed) */
			if (rc)
				goto nomem;
			req->chunked = false;
			req->content_length = (int64_t)req->replay_bytes;
		}
	}
	sb_free(&lin);
	lin = (struct strbuf){0};
	/* Close the head: our X-Serve-Call-Method, the framing, the end. */
	if (!req->client_cm && req->ep->call_method)
		rc |= sb_printf(&req->head, "X-Serve-Call-Method: %s\r\n", req->ep->call_method);
	/* The load format: ours when the backend reads reports, else the
	 * client's as it came (http_write_request_head's rule). */
	if (req->be->load_reports)
		rc |= sb_puts(&req->head, "endpoint-load-metrics-format: text\r\n");
	else if (req->load_fmt)
		rc |= sb_printf(&req->head, "endpoint-load-metrics-format: %.*s\r\n",
				(int)req->load_fmt_len, req->load_fmt);
	if (req->chunked)
		rc |= sb_puts(&req->head, "Transfer-Encoding: chunked\r\n");
	else if (req->content_length >= 0)
		rc |= sb_printf(&req->head, "Content-Length: %lld\r\n", (long long)req->content_length);
	rc |= sb_put(&req->head, "\r\n", 2);
	if (rc)
		goto nomem;
	/* The remaining time goes last, written at each attempt. */
	if (req->qe.req_deadline_us)
		req->head_base = req->head.len - 2;
	if (req->ep->nshadow) {
		shadow_start(s, &req->shadows, req->cfg, req->ep, req->head.p, req->head.len,
			     req->is_head);
		for (uint32_t i = 0; i < req->nreplay; i++)
			shadow_body(s, &req->shadows,
				    req->replay[i].bid >= 0 ? (uint32_t)req->replay[i].bid : BID_NONE,
				    req->replay[i].p, req->replay[i].len);
		if (req->flags & REQ_F_BODY_DONE)
			shadow_detach(&req->shadows);
	}
	if (req->replay_bytes > REPLAY_MAX)
		req->flags |= REQ_F_NO_REPLAY; /* sent once from these, never again */
	return req_dispatch(s, req, 0) ? 0 : -1;
nomem:
	sb_free(&lin);
	sb_free(&nb);
	req_fail(s, req, 503, REQ_R_NO_MEMORY, "out of memory");
	return -1;
ended:
	sb_free(&lin);
	return -1;
}

/* ---- body ---- */

int req_body(struct shard *s, struct request *req, uint32_t bid, const char *p, size_t len)
{
	req->body_bytes += len;
	if (req->ep && req->body_bytes > req->ep->max_body_bytes) {
		req_fail(s, req, 413, REQ_R_BODY_TOO_LARGE, "request body too large");
		return -1;
	}
	if (req->hold) {
		if (retry_hold(s, req, bid, p, len)) {
			req_fail(s, req, 503, REQ_R_NO_MEMORY, "out of memory");
			return -1;
		}
		/* Past the bound: routed without reading it; the rest
		 * streams as usual. */
		if (req->replay_bytes > req->hold_max)
			return hold_decide(s, req, false);
		return 0;
	}
	shadow_body(s, &req->shadows, bid, p, len);
	retry_keep(s, req, bid, p, len);
	if (req->up && upstream_body(s, req->up, bid, p, len)) {
		/* The replica would wait for bytes that never come. */
		req_fail(s, req, 503, REQ_R_NO_MEMORY, "out of memory");
		return -1;
	}
	return 0;
}

void req_body_done(struct shard *s, struct request *req)
{
	req->flags |= REQ_F_BODY_DONE;
	if (req->hold) {
		hold_decide(s, req, true);
		return;
	}
	shadow_detach(&req->shadows); /* the copies have their whole body */
}

bool req_body_blocked(const struct request *req)
{
	if (req->hold)
		return false; /* read up to the bound: hold_decide runs there */
	return !req->up || upstream_congested(req->up);
}

void req_client_drained(struct shard *s, struct request *req)
{
	if (req->up)
		upstream_resume(s, req->up);
}

/* ---- queued requests ---- */

/* Point a queued request at the current snapshot: a replica added since
 * it was queued can then serve it. If its backend is gone, it is routed
 * again by its endpoint's traffic in the current snapshot. Returns 0 (same
 * backend), 1 (another backend: the caller must requeue it there), or
 * -ENOENT when its endpoint is gone too. */
static int req_refresh(struct shard *s, struct request *req)
{
	const struct backend_cfg *be;
	int moved = 0;

	if ((req->be_cfg ? req->be_cfg : req->cfg) == s->config)
		return 0;
	be = config_backend(s->config, req->be->name);
	if (!be) {
		const struct endpoint_cfg *ep = config_endpoint(s->config, req->ep->name);
		if (!ep)
			return -ENOENT;
		be = router_pick_weighted(ep->traffic, ep->ntraffic,
					  req->shard_key ? router_key_unit(req->shard_key,
									   req->shard_key_len)
							 : router_rand_unit(&s->rng));
		moved = be->state != req->be->state;
	}
	/* req->cfg stays referenced: req->ep points into it. */
	config_ref(s->config);
	if (req->be_cfg)
		config_unref(req->be_cfg);
	req->be_cfg = s->config;
	req->be = be;
	req->ridx = -1; /* an index into the old backend_cfg's replicas */
	return moved;
}

/* Is any replica of be able to serve (router_replica_able: healthy, not
 * ejected)? A request that times out in the queue of a backend without one
 * says so; without queue_when_unavailable it is not queued at all (fail
 * fast). Draining and Retry-After replicas count as able: a live change
 * drains the old replicas before every shard has the new snapshot, and a
 * request must then wait for it, not fail (test_threads.py). */
static bool backend_serving(const struct backend_cfg *be)
{
	for (size_t i = 0; i < be->nreplicas; i++)
		if (router_replica_able(be->replicas[i].state))
			return true;
	return false;
}

int req_retry_queued(struct shard *s)
{
	struct list *pos, *tmp;
	uint64_t now = clock_now_us();
	int any = 0, sent = 0;

	s->retry_pending = 0;
	list_for_each_safe(pos, tmp, &s->queued) {
		struct bqueue *q = container_of(pos, struct bqueue, node);
		struct queue_entry *e;

		struct queue_entry *v;
		uint64_t median = 0;

		/* Evictions owed to arrivals on other shards come first. */
		while ((v = queue_owed_victim(s, q)))
			req_evicted(s, v);
		while ((e = queue_front(q))) {
			struct request *req = container_of(e, struct request, qe);
			uint32_t before;
			int r;

			if (e->req_deadline_us && now >= e->req_deadline_us) {
				req_unqueue(s, req);
				req_fail(s, req, 504, REQ_R_DEADLINE, "deadline passed while queued");
				continue;
			}
			/* It would be late anyway: its slot goes to one that will not. */
			if (e->req_deadline_us && !median)
				median = queue_service_median(q->bs);
			if (e->req_deadline_us && e->req_deadline_us - now < median) {
				req_unqueue(s, req);
				req_fail(s, req, 503, REQ_R_DEADLINE_UNREACHABLE,
					 "backend overloaded: deadline unreachable");
				continue;
			}
			/* A queued request of a backend whose replicas all
			 * went down fails now (fail fast), as a new one would. */
			if (now >= e->deadline_us ||
			    (!req->be->queue_when_unavailable && !backend_serving(req->be))) {
				req_unqueue(s, req);
				if (backend_serving(req->be))
					req_fail(s, req, 503, REQ_R_QUEUE_TIMEOUT,
						 "backend overloaded: queue timeout");
				else
					req_fail(s, req, 503, REQ_R_NO_HEALTHY_REPLICA,
						 "no healthy replica");
				continue;
			}
			r = req_refresh(s, req);
			if (r) {
				/* Its backend was removed while it waited. */
				req_unqueue(s, req);
				if (r < 0)
					req_fail(s, req, 404, REQ_R_NO_ROUTE, "no route");
				else if (req_dispatch(s, req, 0) && req->up)
					body_room(s, req);
				sent++;
				continue;
			}
			if (queue_older_elsewhere(s, q, queue_entry_key(e)))
				break; /* that shard was woken: it goes first */
			before = q->n;
			if (req_dispatch(s, req, 1) && req->up)
				body_room(s, req);
			if (q->n == before)
				break; /* still full: the rest of this FIFO waits too */
			sent++;
		}
		if (q->n)
			any = 1;
	}
	if (any)
		queue_arm_tick(s);
	return sent;
}

/* A queued request's deadline or queue timeout passed (queue_add armed
 * qe.timer for the earlier one): it leaves with 504 deadline, or with the
 * queue timeout's 503 (no_healthy_replica when none could serve it). */
static void queue_expired(struct timer *t, void *ctx)
{
	struct shard *s = ctx;
	struct queue_entry *e = container_of(t, struct queue_entry, timer);
	struct request *req = container_of(e, struct request, qe);
	uint64_t now = clock_now_us(), dl = e->deadline_us;

	if (!queue_entry_queued(e))
		return;
	if (e->req_deadline_us && e->req_deadline_us < dl)
		dl = e->req_deadline_us;
	if (now < dl) { /* the wheel's millisecond came before the microsecond */
		timer_arm(&s->tw, t, (dl - now + 999) / 1000);
		return;
	}
	req_unqueue(s, req);
	if (e->req_deadline_us && now >= e->req_deadline_us)
		req_fail(s, req, 504, REQ_R_DEADLINE, "deadline passed while queued");
	else if (backend_serving(req->be))
		req_fail(s, req, 503, REQ_R_QUEUE_TIMEOUT, "backend overloaded: queue timeout");
	else
		req_fail(s, req, 503, REQ_R_NO_HEALTHY_REPLICA, "no healthy replica");
}

static void queue_tick(struct timer *t, void *ctx)
{
	(void)t;
	req_retry_queued(ctx);
}

void req_shard_init(struct shard *s)
{
	queue_shard_init(s, queue_tick);
}

/* ---- the replica's side: struct upstream_events of a request ---- */

/* A 503 or 429 from req's replica: its Retry-After keeps the replica out
 * of the choice for that long (router_replica_up), whether or not req is
 * retried. */
static void note_retry_after(struct request *req, const struct resp_head *rh)
{
	const struct http_hdr *h = rh->hd ? http_head_find(rh->hd, "retry-after") : NULL;
	uint32_t secs;

	if (!h || !req->rs)
		return;
	secs = retry_after_seconds(http_hdr_value(rh->hd, h), h->value_len);
	if (secs)
		atomic_store_explicit(&req->rs->not_before_ms, clock_now_ms() + secs * 1000ull,
				      memory_order_relaxed);
}

/* The backend asked for load reports (load.h): the replica's
 * endpoint-load-metrics header, when it sent one, becomes its report, or
 * is counted as bad; either way it is not passed on to the client (it
 * answers the proxy's question, not the client's). */
static void note_load(struct request *req, const struct resp_head *rh)
{
	const struct http_hdr *h = rh->hd ? http_head_find(rh->hd, "endpoint-load-metrics") : NULL;
	struct load_report lr;

	if (!h || !req->rs)
		return;
	switch (load_parse_orca(http_hdr_value(rh->hd, h), h->value_len, &lr)) {
	case LOAD_OK:
		load_store(req->rs, &lr, clock_now_ms());
		break;
	case LOAD_BAD:
		if (load_bad(req->rs) == 0) {
			/* Its start, printable, for the log (bytes from a replica). */
			char v[121];
			size_t n = h->value_len < sizeof(v) - 1 ? h->value_len : sizeof(v) - 1;
			for (size_t i = 0; i < n; i++) {
				unsigned char ch = (unsigned char)http_hdr_value(rh->hd, h)[i];
				v[i] = ch < 0x20 || ch >= 0x7f ? '?' : (char)ch;
			}
			v[n] = '\0';
			log_warn("replica %s: endpoint-load-metrics \"%s\" is not a load report "
				 "(dropped, as its next bad ones: counted in bad_reports)",
				 req->rs->key, v);
		}
		break;
	case LOAD_NONE:
		break;
	}
	http_head_mark_named(rh->hd, "endpoint-load-metrics");
}

static int req_retry_other(struct shard *s, struct request *req);

static int req_up_head(struct shard *s, void *owner, const struct resp_head *rh)
{
	struct request *req = owner;
	int mode;

	if (req->be->load_reports)
		note_load(req, rh);
	if (rh->status == 503 || rh->status == 429) {
		note_retry_after(req, rh);
		/* Retried: this head is never forwarded, and the connection,
		 * with the rest of the answer, is dropped. */
		if (!(req->flags & REQ_F_RESP_BEGUN) &&
		    retry_decide(req, rh->status == 503 ? RETRY_CAUSE_503 : RETRY_CAUSE_429, 0) ==
			    RETRY_OTHER &&
		    req_retry_other(s, req))
			return -1;
	}
	req->t_first_us = clock_now_us();
	retry_forbid(s, req); /* a retry is no longer possible */
	req->status = rh->status;
	if (req->ridx >= 0) { /* the replica answered: outlier ejection's success */
		if (rh->status >= 500 && req->be->outlier.count_5xx)
			outlier_failure(req->be, (size_t)req->ridx, OUTLIER_5XX, clock_now_ms());
		else
			outlier_success(req->be, (size_t)req->ridx);
	}
	mode = req->cops->on_head(s, req, rh);
	if (mode < 0) {
		req_fail(s, req, 503, REQ_R_NO_MEMORY, "out of memory");
		return -1;
	}
	req->flags |= REQ_F_RESP_BEGUN;
	return mode;
}

static int req_up_interim(struct shard *s, void *owner, const struct resp_head *rh)
{
	struct request *req = owner;

	if (++req->interim > REQ_MAX_INTERIM) {
		req_fail(s, req, 502, REQ_R_UPSTREAM_BAD_RESPONSE,
			 "replica sent too many interim responses");
		return -1;
	}
	/* Only a client that asked for 100 Continue gets it; other 1xx
	 * (102, 103, ...) are dropped. */
	if (rh->status == 100 && req->expect_continue && !(req->flags & REQ_F_RESP_BEGUN))
		req->cops->on_continue(s, req);
	return 0;
}

static void req_up_body(struct shard *s, void *owner, uint32_t bid, const char *p, size_t len)
{
	struct request *req = owner;

	req->cops->on_body(s, req, bid, p, len);
}

static void req_up_end(struct shard *s, void *owner)
{
	struct request *req = owner;

	req->up = NULL;
	req->reason = REQ_R_OK;
	if (req->t_dispatch_us)
		queue_service_note(req->be->state, clock_now_us() - req->t_dispatch_us);
	req->cops->on_end(s, req);
	shadow_abort(s, &req->shadows); /* only copies still missing body bytes are left */
	req_end(s, req);
}

static enum req_reason failure_reason(enum up_failure f)
{
	switch (f) {
	case UP_FAIL_CONNECT: return REQ_R_UPSTREAM_CONNECT_FAILED;
	case UP_FAIL_TIMEOUT: return REQ_R_UPSTREAM_TIMEOUT;
	case UP_FAIL_BAD_RESPONSE: return REQ_R_UPSTREAM_BAD_RESPONSE;
	case UP_FAIL_NO_MEMORY: return REQ_R_NO_MEMORY;
	case UP_FAIL_RESET: break;
	}
	return REQ_R_UPSTREAM_RESET;
}

static enum retry_cause failure_cause(enum up_failure f)
{
	switch (f) {
	case UP_FAIL_CONNECT: return RETRY_CAUSE_CONNECT;
	case UP_FAIL_RESET: return RETRY_CAUSE_RESET;
	case UP_FAIL_TIMEOUT: return RETRY_CAUSE_TIMEOUT;
	case UP_FAIL_BAD_RESPONSE: case UP_FAIL_NO_MEMORY: break;
	}
	return RETRY_CAUSE_OTHER;
}

/* The backoff before req's retry ended: dispatch it (the dispatch may
 * queue req, or end it: only a started request is touched again). */
static void retry_fire(struct timer *t, void *ctx)
{
	struct shard *s = ctx;
	struct request *req = container_of(t, struct request, retry_timer);

	if (req_dispatch(s, req, 0) && req->up)
		body_room(s, req);
}

/* Try req on another replica after its attempt failed, if its backend's
 * retry budget has room (a request takes one share of it at its first
 * retry and keeps it until it ends). Returns 1: the attempt's slot is
 * released and the retry waits for its backoff (retry_fire); 0: refused
 * and counted, nothing changed, the caller answers the failure. */
static int req_retry_other(struct shard *s, struct request *req)
{
	if (!(req->flags & REQ_F_RETRYING)) {
		if (!req->budget_bs ||
		    !retry_budget_take(req->budget_bs, req->be->retry_budget_percent)) {
			count_budget_exhausted(s, req);
			return 0;
		}
		req->flags |= REQ_F_RETRYING;
	}
	if (req->ridx >= 0 && req->ridx < 64)
		req->tried_mask |= 1ull << req->ridx;
	req_cut_upstream(s, req);
	release_slot(s, req);
	req->tries++;
	count_retry(s, req);
	timer_arm(&s->tw, &req->retry_timer, retry_backoff_ms(&s->rng, req->tries));
	return 1;
}

/* What outlier ejection calls failure f; -1: not the replica's fault. */
static int outlier_reason_of(enum up_failure f)
{
	switch (f) {
	case UP_FAIL_CONNECT: return OUTLIER_CONNECT_FAILED;
	case UP_FAIL_RESET: return OUTLIER_RESET;
	case UP_FAIL_TIMEOUT: return OUTLIER_TIMEOUT;
	case UP_FAIL_BAD_RESPONSE: return OUTLIER_BAD_RESPONSE;
	case UP_FAIL_NO_MEMORY: break;
	}
	return -1;
}

static void req_up_failed(struct shard *s, void *owner, enum up_failure f, int reused)
{
	struct request *req = owner;
	enum retry_action act;

	req->up = NULL;
	act = (req->flags & REQ_F_RESP_BEGUN) ? RETRY_NONE
					       : retry_decide(req, failure_cause(f), reused);
	if (act == RETRY_FRESH) {
		req->flags |= REQ_F_FRESH_DONE;
		if (req_start_upstream(s, req, 1) == 0) {
			count_retry(s, req);
			body_room(s, req);
			return;
		}
		act = retry_decide(req, RETRY_CAUSE_CONNECT, 0);
	}
	/* A reused connection's failure retried fresh above says nothing of
	 * the replica (the pool's connection went stale); this one does. */
	if (req->ridx >= 0 && outlier_reason_of(f) >= 0)
		outlier_failure(req->be, (size_t)req->ridx, (enum outlier_reason)outlier_reason_of(f),
				clock_now_ms());
	if (act == RETRY_OTHER && req_retry_other(s, req))
		return;
	release_slot(s, req);
	if (f == UP_FAIL_TIMEOUT)
		req_fail(s, req, 504, REQ_R_UPSTREAM_TIMEOUT, "replica timed out");
	else if (f == UP_FAIL_BAD_RESPONSE)
		req_fail(s, req, 502, REQ_R_UPSTREAM_BAD_RESPONSE, "replica sent an invalid response");
	else
		req_fail(s, req, 502, failure_reason(f), "replica failed");
}

static void req_up_drained(struct shard *s, void *owner)
{
	body_room(s, owner);
}

static void req_up_gone(struct shard *s, void *owner)
{
	(void)s;
	((struct request *)owner)->up = NULL;
}

static size_t req_up_pending(const void *owner)
{
	const struct request *req = owner;

	return req->cops ? req->cops->pending(req) : 0;
}

static bool req_up_body_done(const void *owner)
{
	return (((const struct request *)owner)->flags & REQ_F_BODY_DONE) != 0;
}

static const struct upstream_events req_up_events = {
	.on_head = req_up_head,
	.on_interim = req_up_interim,
	.on_body = req_up_body,
	.on_end = req_up_end,
	.on_failed = req_up_failed,
	.on_drained = req_up_drained,
	.on_gone = req_up_gone,
	.pending = req_up_pending,
	.body_done = req_up_body_done,
};

/* Send req (head and the body kept so far) to its chosen replica. fresh:
 * never a pooled connection. Returns 0 (req->up set) or -errno. */
static int req_start_upstream(struct shard *s, struct request *req, int fresh)
{
	const struct backend_cfg *be = req->be;
	uint32_t tmo = be->request_timeout_ms;
	uint64_t now = clock_now_us(), dl = req->qe.req_deadline_us;

	/* The replica is told the time left, and is not waited for longer. */
	if (dl) {
		uint64_t left = dl > now ? (dl - now + 999) / 1000 : 1;
		req->head.len = req->head_base;
		if (sb_printf(&req->head, "X-Request-Timeout-Ms: %llu\r\n\r\n",
			      (unsigned long long)left))
			return -ENOMEM;
		if (!tmo || left < tmo)
			tmo = (uint32_t)left;
	}
	req->t_dispatch_us = now;
	struct upstream_req ur = {
		.ev = &req_up_events,
		.owner = req,
		.head = req->head.p,
		.head_len = req->head.len,
		.body = req->replay,
		.nbody = req->nreplay,
		.connect_timeout_ms = be->connect_timeout_ms,
		.request_timeout_ms = tmo,
		.is_head = req->is_head,
	};

	int rc = upstream_start(s, &ur, req->rs, &be->replicas[req->ridx].addr, fresh, &req->up);

	/* A held body too large to replay was kept only to be sent once. */
	if (!rc && (req->flags & REQ_F_NO_REPLAY) && req->nreplay)
		retry_forbid(s, req);
	return rc;
}

/* The request no longer wants its exchange. */
static void req_cut_upstream(struct shard *s, struct request *req)
{
	if (req->up) {
		upstream_abort(s, req->up);
		req->up = NULL;
	}
}
