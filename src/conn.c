/* Client connections: parse requests with llhttp, route them, hold them in
 * the backend's queue while every replica is full, forward them (head
 * rewritten, body raw from the receive buffers) and stream the response
 * back. One request is handled at a time per connection; pipelined
 * requests wait, unparsed, in the connection's input queue, so responses
 * go out in order. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ringroute/alloc.h"

#include "ringroute/conn.h"
#include "ringroute/request.h"
#include "ringroute/router.h"

#define HEADER_TIMEOUT_MS 10000u
#define KEEPALIVE_TIMEOUT_MS 75000u
#define QUEUE_TICK_MS 5u
#define QUEUED_READ_MAX (64u * 1024u) /* a queued request reads (and copies)
                                        * this much ahead, to notice a
                                        * client that leaves */

static uint64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- llhttp callbacks (request side) ---- */

static int cl_on_begin(llhttp_t *p)
{
	struct client *c = p->data;
	c->flags |= CL_F_BEGUN;
	timer_arm(&c->s->tw, &c->timer, HEADER_TIMEOUT_MS);
	return 0;
}

static llhttp_settings_t cl_settings;
static pthread_once_t cl_settings_once = PTHREAD_ONCE_INIT;

static void cl_settings_init(void)
{
	http_settings_init(&cl_settings);
	cl_settings.on_message_begin = cl_on_begin;
}

/* ---- client lifetime ---- */

static void client_timeout(struct timer *t, void *ctx)
{
	struct shard *s = ctx;
	struct client *c = container_of(t, struct client, timer);
	/* Fires only while waiting for a request head (or idle): a request in
	 * progress has its own upstream and queue timers. */
	if (!c->req)
		sock_close(s, &c->sk);
}

void client_accept(struct shard *s, int fd)
{
	struct client *c;
	struct sockaddr_in peer;
	socklen_t plen = sizeof(peer);
	int one = 1;

	pthread_once(&cl_settings_once, cl_settings_init);
	c = mi_zalloc(sizeof(*c));
	if (!c || sock_register(s, &c->sk, fd, SOCK_CLIENT)) {
		mi_free(c);
		close(fd);
		return;
	}
	c->s = s;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (getpeername(fd, (struct sockaddr *)&peer, &plen) == 0 && peer.sin_family == AF_INET)
		inet_ntop(AF_INET, &peer.sin_addr, c->ip, sizeof(c->ip));
	else
		strcpy(c->ip, "unknown");
	llhttp_init(&c->hp.p, HTTP_REQUEST, &cl_settings);
	c->hp.p.data = c;
	timer_init(&c->timer, client_timeout);
	timer_arm(&s->tw, &c->timer, HEADER_TIMEOUT_MS);
	list_init(&c->all);
	list_push_back(&s->clients, &c->all);
	s->nclients++;
	counter_add(&s->metrics.accepted, 1);
	sock_want_input(s, &c->sk);
}

static void client_abandon(struct shard *s, struct client *c);

void client_free(struct shard *s, struct sock *sk)
{
	struct client *c = container_of(sk, struct client, sk);
	/* Every path that closes a client ends its request first; this is the
	 * safety net that keeps a replica slot from leaking if one did not. */
	client_abandon(s, c);
	timer_cancel(&s->tw, &c->timer);
	if (list_linked(&c->all))
		list_del_init(&c->all);
	http_head_free(&c->hp.hd);
	s->nclients--;
	mi_free(c);
}

/* ---- queues ---- */

static struct bqueue *bq_get(struct shard *s, struct backend_state *bs)
{
	struct list *pos, *tmp;
	struct bqueue *q;
	list_for_each_safe(pos, tmp, &s->queued) {
		q = container_of(pos, struct bqueue, node);
		if (q->bs == bs)
			return q;
	}
	q = mi_zalloc(sizeof(*q));
	if (!q)
		return NULL;
	list_init(&q->node);
	list_init(&q->reqs);
	q->bs = bs;
	atomic_fetch_add(&bs->refs, 1);
	list_push_back(&s->queued, &q->node);
	return q;
}

/* Publish this shard's oldest waiter for the backend, so that a slot freed
 * on any shard wakes the shard whose waiter is oldest process-wide. */
static void bq_publish(struct shard *s, struct bqueue *q)
{
	uint64_t bit = 1ull << s->id;
	if (q->n) {
		struct request *head = container_of(q->reqs.next, struct request, qnode);
		atomic_store(&q->bs->oldest_ns[s->id], head->t_queued_us);
		atomic_fetch_or(&q->bs->waiting_shards, bit);
	} else {
		atomic_fetch_and(&q->bs->waiting_shards, ~bit);
	}
}

static void queue_remove(struct shard *s, struct request *req)
{
	struct bqueue *q = req->bq;
	if (!(req->flags & REQ_F_QUEUED))
		return;
	list_del_init(&req->qnode);
	req->flags &= ~REQ_F_QUEUED;
	req->bq = NULL;
	q->n--;
	atomic_fetch_sub(&q->bs->queued, 1);
	bq_publish(s, q);
}

static void queue_tick(struct timer *t, void *ctx)
{
	struct shard *s = ctx;
	(void)t;
	client_retry_queued(s);
}

/* The shard (other than skip) whose oldest waiter for bs is older than
 * (t, tie_id) -- ties go to the lower shard id -- or -1 if none is. */
static int oldest_waiter_shard(const struct shard *s, struct backend_state *bs, int skip,
			       uint64_t t, unsigned tie_id)
{
	uint64_t mask = atomic_load(&bs->waiting_shards);
	int best = -1;
	for (unsigned i = 0; mask && i < s->proxy_nshards; i++) {
		uint64_t ti;
		if (!(mask & (1ull << i)) || (int)i == skip)
			continue;
		ti = atomic_load(&bs->oldest_ns[i]);
		if (ti < t || (ti == t && i < tie_id)) {
			t = ti;
			tie_id = i;
			best = (int)i;
		}
	}
	return best;
}

/* A slot of backend bs was freed by this shard: let the oldest waiter in
 * the process have it. */
static void wake_waiters(struct shard *s, struct backend_state *bs)
{
	int best = oldest_waiter_shard(s, bs, -1, UINT64_MAX, UINT32_MAX);
	if (best < 0)
		return;
	if ((unsigned)best == s->id)
		s->retry_pending = 1;
	else
		shard_msg(s, s->peers[best], MSG_WAKE);
}

static void req_release_slot(struct shard *s, struct request *req)
{
	if (!req->rs)
		return;
	replica_release(req->rs);
	req->rs = NULL;
	if (req->be)
		wake_waiters(s, req->be->state);
}

/* ---- requests ---- */

static void replay_clear(struct shard *s, struct request *req)
{
	for (uint32_t i = 0; i < req->nreplay; i++) {
		if (req->replay[i].bid >= 0)
			bufring_unref(&s->br, (uint32_t)req->replay[i].bid);
		mi_free(req->replay[i].own);
	}
	req->nreplay = 0;
	req->replay_bytes = 0;
}

static void replay_keep(struct shard *s, struct request *req, uint32_t bid, const char *p,
			size_t len)
{
	if (req->flags & REQ_F_NO_REPLAY)
		return;
	if (req->replay_bytes + len > REPLAY_MAX) {
		replay_clear(s, req);
		req->flags |= REQ_F_NO_REPLAY;
		return;
	}
	if (req->nreplay == req->capreplay) {
		uint32_t cap = req->capreplay ? req->capreplay * 2 : 8;
		struct seg *v = mi_realloc(req->replay, cap * sizeof(*v));
		if (!v) {
			replay_clear(s, req);
			req->flags |= REQ_F_NO_REPLAY;
			return;
		}
		req->replay = v;
		req->capreplay = cap;
	}
	if (bid == BID_NONE) {
		char *own = mi_malloc(len);
		if (!own) {
			replay_clear(s, req);
			req->flags |= REQ_F_NO_REPLAY;
			return;
		}
		memcpy(own, p, len);
		req->replay[req->nreplay++] = (struct seg){.p = own, .len = (uint32_t)len, .bid = -1, .own = own};
	} else {
		bufring_ref(&s->br, bid);
		req->replay[req->nreplay++] =
			(struct seg){.p = p, .len = (uint32_t)len, .bid = (int32_t)bid, .own = NULL};
	}
	req->replay_bytes += len;
}

static void req_free(struct shard *s, struct request *req);

/* The request's body is complete: its shadow copies live on alone. */
static void shadows_detach(struct request *req)
{
	struct list *n;
	while ((n = list_pop_front(&req->shadows)))
		;
}

/* The request's body will never be complete: its shadow copies go. */
static void shadows_abort(struct shard *s, struct request *req)
{
	struct list *n;
	while ((n = list_pop_front(&req->shadows))) {
		struct request *sh = container_of(n, struct request, shadow_node);
		if (sh->up)
			upstream_abort(s, sh->up);
		req_free(s, sh);
	}
}

/* Record the outcome and free req. Whoever calls this has already detached
 * req from its upstream and client. */
static void req_free(struct shard *s, struct request *req)
{
	shadows_detach(req);
	if (list_linked(&req->shadow_node))
		list_del_init(&req->shadow_node);
	queue_remove(s, req);
	req_release_slot(s, req);
	if (req->em && req->status > 0 && !(req->flags & REQ_F_SHADOW)) {
		uint64_t t = now_us();
		counter_add(&req->em->status[req->status < 600 ? req->status : 599], 1);
		hist_observe(&req->em->total, t - req->t_start_us);
		if (req->t_first_us)
			hist_observe(&req->em->ttfb, req->t_first_us - req->t_start_us);
	}
	replay_clear(s, req);
	mi_free(req->replay);
	mi_free(req->head.p);
	mi_free(req->shard_key);
	if (req->be_cfg)
		config_unref(req->be_cfg);
	config_unref(req->cfg);
	mi_free(req);
}

static void client_next(struct shard *s, struct client *c);

/* Queue a complete response in buf (owned) for the client of req. */
static void client_reply(struct shard *s, struct client *c, struct strbuf *buf)
{
	if (sock_push_owned(s, &c->sk, buf->p, buf->p, buf->len) == 0)
		sock_flush_later(s, &c->sk);
	buf->p = NULL;
}

/* Answer the current request of c with an error. close: the connection is
 * closed after it (the rest of the request cannot be read safely);
 * otherwise an unread body is read and dropped first. */
static void client_error(struct shard *s, struct client *c, int status, const char *msg,
			 int close, int retry_after)
{
	struct request *req = c->req;
	struct strbuf out = {0};
	const char *ep = req && req->ep ? req->ep->name : NULL;

	if (close)
		c->flags |= CL_F_CLOSE;
	if (c->flags & CL_F_RESP_HEAD) {
		/* Part of a response already went out: all we can do is close. */
		c->flags |= CL_F_CLOSE;
	} else if (http_write_error(&out, status, msg, ep, (c->flags & CL_F_CLOSE) != 0,
				    retry_after) == 0) {
		c->flags |= CL_F_RESP_HEAD;
		client_reply(s, c, &out);
	}
	mi_free(out.p);
	if (req) {
		req->status = status;
		if (req->up)
			upstream_abort(s, req->up);
		if (!(c->flags & CL_F_MSG_DONE))
			shadows_abort(s, req); /* their bodies would never end */
		c->req = NULL;
		req->c = NULL;
		req_free(s, req);
		if (!(c->flags & CL_F_MSG_DONE) && !(c->flags & CL_F_CLOSE) && (c->flags & CL_F_IN_BODY)) {
			/* Keep reading to drop the rest of the body. */
			c->flags |= CL_F_DISCARD;
			return;
		}
	}
	client_next(s, c);
}

/* Start req on a replica of its backend, or queue it. */
static void req_dispatch(struct shard *s, struct request *req, int from_queue);

static int pick_replica(struct shard *s, struct request *req)
{
	const struct backend_cfg *be = req->be;
	for (int attempt = 0; attempt < 4; attempt++) {
		int idx = router_pick_replica(be, req->shard_key, req->shard_key_len, &s->rng,
					      &s->rr_cursor);
		if (idx < 0)
			return -1;
		if (idx >= 64 || !(req->tried_mask & (1ull << idx)) || attempt == 3)
			return idx;
		/* Already failed on this one: give it back and pick again. */
		replica_release(be->replicas[idx].state);
	}
	return -1;
}

static void req_enqueue(struct shard *s, struct request *req)
{
	const struct backend_cfg *be = req->be;
	struct backend_state *bs = be->state;
	struct bqueue *q;

	if (atomic_fetch_add(&bs->queued, 1) >= be->max_queued) {
		atomic_fetch_sub(&bs->queued, 1);
		if (req->c)
			client_error(s, req->c, 503, "backend overloaded: queue full", 0, 1);
		else
			req_free(s, req);
		return;
	}
	q = bq_get(s, bs);
	if (!q) {
		atomic_fetch_sub(&bs->queued, 1);
		if (req->c)
			client_error(s, req->c, 503, "out of memory", 0, 1);
		else
			req_free(s, req);
		return;
	}
	req->flags |= REQ_F_QUEUED;
	req->bq = q;
	if (!req->t_queued_us) {
		/* Requeued on another backend (its own was removed): the
		 * wait still counts from the first enqueue. */
		req->t_queued_us = now_us();
		req->q_deadline_us = req->t_queued_us + (uint64_t)be->queue_timeout_ms * 1000u;
	}
	list_push_back(&q->reqs, &req->qnode);
	q->n++;
	bq_publish(s, q);
	if (!timer_armed(&s->queue_tick))
		timer_arm(&s->tw, &s->queue_tick, QUEUE_TICK_MS);
}

static void req_dispatch(struct shard *s, struct request *req, int from_queue)
{
	const struct backend_cfg *be = req->be;
	int idx, ret;

	/* No barging: while anyone waits for this backend, a newcomer queues
	 * behind them even if a slot just freed (the queue gets it first). */
	if (!from_queue && !(req->flags & REQ_F_SHADOW) &&
	    atomic_load_explicit(&be->state->queued, memory_order_relaxed) > 0) {
		req_enqueue(s, req);
		s->retry_pending = 1;
		return;
	}
	idx = pick_replica(s, req);

	if (idx < 0) {
		if (req->flags & REQ_F_SHADOW) {
			req_free(s, req); /* a shadow never waits */
			return;
		}
		if (!from_queue)
			req_enqueue(s, req);
		return;
	}
	if (from_queue) {
		queue_remove(s, req);
		if (req->em)
			hist_observe(&req->em->queue_wait, now_us() - req->t_queued_us);
	}
	req->ridx = idx;
	req->rs = be->replicas[idx].state;
	ret = upstream_start(s, req, req->rs, &be->replicas[idx].addr, 0);
	if (ret) {
		req_release_slot(s, req);
		if (req->c)
			client_error(s, req->c, 502, "cannot reach replica", 0, 0);
		else
			req_free(s, req);
		return;
	}
	/* Body bytes may be waiting for this upstream. */
	if (req->c && !from_queue)
		return;
	if (req->c)
		client_on_input(s, &req->c->sk);
}

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
	return moved;
}

/* Does another shard hold an older waiter for this backend? Then it, not
 * us, should take the next free slot: wake it (its wake-up may have raced)
 * and say so. */
static int older_elsewhere(struct shard *s, struct bqueue *q, uint64_t t)
{
	int best = oldest_waiter_shard(s, q->bs, (int)s->id, t, s->id);
	if (best < 0)
		return 0;
	shard_msg(s, s->peers[best], MSG_WAKE);
	return 1;
}

int client_retry_queued(struct shard *s)
{
	struct list *pos, *tmp;
	uint64_t now = now_us();
	int any = 0, sent = 0;

	s->retry_pending = 0;
	list_for_each_safe(pos, tmp, &s->queued) {
		struct bqueue *q = container_of(pos, struct bqueue, node);
		while (q->n) {
			struct request *req = container_of(q->reqs.next, struct request, qnode);
			int r;
			if (now >= req->q_deadline_us) {
				queue_remove(s, req);
				if (req->c)
					client_error(s, req->c, 503, "backend overloaded: queue timeout",
						     0, 1);
				else
					req_free(s, req);
				continue;
			}
			r = req_refresh(s, req);
			if (r) {
				/* Its backend was removed while it waited. */
				queue_remove(s, req);
				if (r > 0) {
					req_dispatch(s, req, 0);
					sent++;
				} else if (req->c) {
					client_error(s, req->c, 404, "no route", 0, 0);
				} else {
					req_free(s, req);
				}
				continue;
			}
			if (older_elsewhere(s, q, req->t_queued_us))
				break; /* that shard was woken: it goes first */
			{
				uint32_t before = q->n;
				req_dispatch(s, req, 1);
				if (q->n == before)
					break; /* still full: the rest of this FIFO waits too */
				sent++;
			}
		}
		if (q->n)
			any = 1;
	}
	if (any && !timer_armed(&s->queue_tick))
		timer_arm(&s->tw, &s->queue_tick, QUEUE_TICK_MS);
	return sent;
}

/* ---- request head: route and dispatch ---- */

static void make_request_id(struct shard *s, char *out, size_t n)
{
	snprintf(out, n, "%016llx", (unsigned long long)router_rand(&s->rng));
}

static void start_shadows(struct shard *s, struct request *req)
{
	const struct endpoint_cfg *ep = req->ep;
	for (size_t i = 0; i < ep->nshadow; i++) {
		struct request *sh;
		if (router_rand_unit(&s->rng) >= ep->shadow[i].weight)
			continue;
		sh = mi_zalloc(sizeof(*sh));
		if (!sh)
			return;
		sh->s = s;
		sh->flags = REQ_F_SHADOW | REQ_F_NO_REPLAY;
		sh->cfg = req->cfg;
		config_ref(sh->cfg);
		sh->ep = ep;
		sh->be = ep->shadow[i].backend;
		sh->ridx = -1;
		sh->is_head = req->is_head;
		sh->t_start_us = req->t_start_us;
		list_init(&sh->qnode);
		list_init(&sh->shadows);
		list_init(&sh->shadow_node);
		if (sb_put(&sh->head, req->head.p, req->head.len)) {
			req_free(s, sh);
			return;
		}
		list_push_back(&req->shadows, &sh->shadow_node);
		req_dispatch(s, sh, 0); /* may free sh (no free slot) */
	}
}

static void client_on_headers(struct shard *s, struct client *c)
{
	struct request *req;
	const struct endpoint_cfg *ep;
	const struct http_hdr *key;
	struct fwd_info fi;
	char rid[24];
	int status = 0;
	double u;

	timer_cancel(&s->tw, &c->timer);
	c->flags |= CL_F_IN_BODY;
	if (!llhttp_should_keep_alive(&c->hp.p) || c->hp.p.http_major < 1 ||
	    (c->hp.p.http_major == 1 && c->hp.p.http_minor == 0))
		c->flags |= CL_F_CLOSE;
	req = mi_zalloc(sizeof(*req));
	if (!req) {
		client_error(s, c, 503, "out of memory", 1, 1);
		return;
	}
	req->s = s;
	req->c = c;
	req->cfg = s->config;
	config_ref(req->cfg);
	req->ridx = -1;
	req->t_start_us = now_us();
	req->is_head = c->hp.p.method == HTTP_HEAD;
	list_init(&req->shadows);
	list_init(&req->shadow_node);
	req->http10 = c->hp.p.http_major == 1 && c->hp.p.http_minor == 0;
	list_init(&req->qnode);
	c->req = req;
	counter_add(&s->metrics.requests, 1);

	ep = router_match(req->cfg, c->hp.hd.buf + c->hp.hd.url_off, c->hp.hd.url_len, c->hp.p.method,
			  &status);
	req->ep = ep;
	if (status != 200) {
		client_error(s, c, status, status == 405 ? "method not allowed" : "no route", 0, 0);
		return;
	}
	if (!http_head_valid(&c->hp.hd)) {
		client_error(s, c, 400, "malformed header", 1, 0);
		return;
	}
	req->em = shard_metrics_endpoint(&s->metrics, ep->name);
	if ((c->hp.p.flags & F_CONTENT_LENGTH) && c->hp.p.content_length > ep->max_body_bytes) {
		client_error(s, c, 413, "request body too large", 1, 0);
		return;
	}
	key = http_head_find(&c->hp.hd, "x-serve-shard-key");
	if (key) {
		req->shard_key = mi_strndup(http_hdr_value(&c->hp.hd, key), key->value_len);
		req->shard_key_len = key->value_len;
	}
	http_head_mark_hop(&c->hp.hd);
	make_request_id(s, rid, sizeof(rid));
	fi.client_ip = c->ip;
	fi.request_id = rid;
	fi.call_method = ep->call_method;
	if (http_write_request_head(&req->head, &c->hp.hd, &c->hp.p, &fi)) {
		client_error(s, c, 503, "out of memory", 1, 1);
		return;
	}
	u = req->shard_key ? router_key_unit(req->shard_key, req->shard_key_len)
			   : router_rand_unit(&s->rng);
	req->be = router_pick_weighted(ep->traffic, ep->ntraffic, u);
	if (ep->nshadow)
		start_shadows(s, req);
	req_dispatch(s, req, 0);
}

/* Body bytes of the current request, raw (chunk framing included). */
static int client_body(struct shard *s, struct client *c, uint32_t bid, const char *p,
		       uint32_t len)
{
	struct request *req = c->req;
	if (!req || (c->flags & CL_F_DISCARD))
		return 0;
	req->body_bytes += len;
	if (req->ep && req->body_bytes > req->ep->max_body_bytes) {
		client_error(s, c, 413, "request body too large", 1, 0);
		return -1;
	}
	{
		struct list *pos, *tmp;
		list_for_each_safe(pos, tmp, &req->shadows) {
			struct request *sh = container_of(pos, struct request, shadow_node);
			/* A slow shadow must never hold the client back: drop it. */
			if (!sh->up || sh->up->sk.out_bytes > SINK_HIGH) {
				if (sh->up)
					upstream_abort(s, sh->up);
				req_free(s, sh);
			} else {
				upstream_body(s, sh->up, bid, p, len);
			}
		}
	}
	replay_keep(s, req, bid, p, len);
	if (req->up)
		upstream_body(s, req->up, bid, p, len);
	return 0;
}

/* Current request done on both sides: get ready for the next one. */
static void client_next(struct shard *s, struct client *c)
{
	if (c->req)
		return;
	if (c->flags & CL_F_DISCARD) {
		if (!(c->flags & CL_F_MSG_DONE))
			return; /* still dropping the body */
	}
	c->flags &= ~(CL_F_IN_BODY | CL_F_MSG_DONE | CL_F_RESP_HEAD | CL_F_DISCARD | CL_F_BEGUN);
	http_head_reset(&c->hp.hd);
	c->head_bytes = 0;
	if (c->flags & CL_F_CLOSE) {
		c->flags |= CL_F_LINGER;
		sock_pause_input(s, &c->sk);
		if (!c->sk.out_n)
			sock_close(s, &c->sk);
		return;
	}
	if (s->stopping && !c->sk.in_n) {
		c->flags |= CL_F_CLOSE | CL_F_LINGER;
		if (!c->sk.out_n)
			sock_close(s, &c->sk);
		return;
	}
	timer_arm(&s->tw, &c->timer, c->sk.in_n ? HEADER_TIMEOUT_MS : KEEPALIVE_TIMEOUT_MS);
	client_on_input(s, &c->sk);
}

static size_t in_bytes(const struct sock *sk)
{
	size_t n = 0;
	for (uint32_t i = 0; i < sk->in_n; i++)
		n += sk->in[sk->in_head + i].len;
	return n;
}

static int parse_error_status(struct client *c, llhttp_errno_t rc)
{
	(void)rc;
	if (c->hp.hd.too_large)
		return 431;
	return 400;
}

void client_on_input(struct shard *s, struct sock *sk)
{
	struct client *c = container_of(sk, struct client, sk);

	while (sk->in_n && !(sk->flags & SK_F_CLOSING) && !(c->flags & CL_F_LINGER)) {
		struct request *req = c->req;
		struct inbuf *b;
		const char *data, *pos;
		int in_body = (c->flags & CL_F_IN_BODY) != 0;
		llhttp_errno_t rc;
		uint32_t used, bid;

		if (c->flags & CL_F_MSG_DONE)
			break; /* pipelined: wait for the response */
		if (in_body && req && !(c->flags & CL_F_DISCARD)) {
			if (!req->up) {
				/* Queued or connecting: the body waits; a queued one
				 * gives its receive buffers back while it waits. */
				if (req->flags & REQ_F_QUEUED)
					sock_in_spill(s, sk);
				break;
			}
			if (req->up->sk.out_bytes > SINK_HIGH)
				break;
		}
		b = &sk->in[sk->in_head];
		bid = b->bid;
		data = sock_in_ptr(s, b);
		c->hp.event = HTTP_EV_NONE;
		rc = llhttp_execute(&c->hp.p, data, b->len);
		pos = rc == HPE_OK ? data + b->len : llhttp_get_error_pos(&c->hp.p);
		if (rc != HPE_OK && rc != HPE_PAUSED) {
			int st = parse_error_status(c, rc);
			sock_in_clear(s, sk);
			client_error(s, c, st, st == 431 ? "request header fields too large"
							 : llhttp_errno_name(rc), 1, 0);
			return;
		}
		used = (uint32_t)(pos - data);
		if (!in_body)
			c->head_bytes += used;
		if (!in_body && c->head_bytes > HTTP_MAX_HEAD) {
			client_error(s, c, 431, "request header fields too large", 1, 0);
			return;
		}
		if (in_body && used) {
			/* A spilled buffer is copied onward; a provided one is
			 * referenced, and held here since client_body may clear
			 * the input. */
			int ret;
			if (bid != BID_NONE)
				bufring_ref(&s->br, bid);
			ret = client_body(s, c, bid, data, used);
			if (bid != BID_NONE)
				bufring_unref(&s->br, bid);
			if (ret)
				return;
		}
		sock_in_consume(s, sk, used);
		if (rc == HPE_PAUSED)
			llhttp_resume(&c->hp.p);
		if (c->hp.event == HTTP_EV_HEADERS) {
			client_on_headers(s, c);
			if (sk->flags & SK_F_CLOSING)
				return;
			/* A request without a body completes on a zero-length run. */
			c->hp.event = HTTP_EV_NONE;
			if (llhttp_execute(&c->hp.p, pos, 0) == HPE_PAUSED)
				llhttp_resume(&c->hp.p);
		}
		if (c->hp.event == HTTP_EV_MESSAGE) {
			c->flags |= CL_F_MSG_DONE;
			if (c->req)
				shadows_detach(c->req); /* the copies have their whole body */
			if (!c->req)
				client_next(s, c); /* answered early, body dropped */
		}
	}
	if (sk->flags & SK_F_CLOSING)
		return;
	if (c->req && (c->req->flags & REQ_F_QUEUED)) {
		/* Keep reading (into copies) to see the client leave while it
		 * waits, up to a bound. */
		sock_in_spill(s, sk);
		if (in_bytes(sk) < QUEUED_READ_MAX)
			sock_want_input(s, sk);
		else
			sock_pause_input(s, sk);
	} else if (sk->in_n || (c->flags & (CL_F_MSG_DONE | CL_F_LINGER)))
		sock_pause_input(s, sk);
	else
		sock_want_input(s, sk);
	if ((sk->flags & SK_F_EOF) && !sk->in_n) {
		if (!c->req && !(c->flags & CL_F_BEGUN)) {
			if (!sk->out_n)
				sock_close(s, sk);
			else
				c->flags |= CL_F_LINGER;
		} else if (c->req && (c->flags & CL_F_MSG_DONE) && !(c->req->flags & REQ_F_QUEUED)) {
			c->flags |= CL_F_CLOSE; /* half-closed: answer, then close */
		} else if (!c->req && (c->flags & CL_F_BEGUN) && !(c->flags & CL_F_IN_BODY)) {
			sock_close(s, sk); /* incomplete head */
		} else {
			client_on_error(s, sk, -ECONNRESET);
		}
	}
}

void client_on_sent(struct shard *s, struct sock *sk)
{
	struct client *c = container_of(sk, struct client, sk);
	if ((c->flags & CL_F_LINGER) && !sk->out_n) {
		sock_close(s, sk);
		return;
	}
	/* Response back-pressure: let the upstream read again. */
	if (c->req && c->req->up && sk->out_bytes <= SINK_HIGH &&
	    (c->req->up->sk.flags & SK_F_RECV_OFF)) {
		sock_want_input(s, &c->req->up->sk);
		upstream_on_input(s, &c->req->up->sk);
	}
}

/* The client is gone (reset, or closed mid-request): abandon its request.
 * A queued request leaves the queue without ever taking a slot; a
 * dispatched one closes its replica connection and frees its slot. */
static void client_abandon(struct shard *s, struct client *c)
{
	struct request *req = c->req;
	if (!req)
		return;
	c->req = NULL;
	req->c = NULL;
	req->status = 499; /* client closed request (nginx's convention) */
	if (req->up)
		upstream_abort(s, req->up);
	shadows_abort(s, req);
	req_free(s, req);
}

void client_on_error(struct shard *s, struct sock *sk, int err)
{
	(void)err;
	client_abandon(s, container_of(sk, struct client, sk));
	sock_close(s, sk);
}

void req_response_head(struct shard *s, struct request *req, struct strbuf *head)
{
	struct client *c = req->c;
	if (!c) {
		mi_free(head->p);
		head->p = NULL;
		return;
	}
	req->t_first_us = now_us();
	replay_clear(s, req); /* a retry is no longer possible */
	req->flags |= REQ_F_NO_REPLAY;
	c->flags |= CL_F_RESP_HEAD;
	client_reply(s, c, head);
}

void req_response_body(struct shard *s, struct request *req, uint32_t bid, const char *p,
		       size_t len)
{
	struct client *c = req->c;
	if (!c || !len)
		return;
	if (sock_push_buf(s, &c->sk, bid, p, len) == 0)
		sock_flush_later(s, &c->sk);
}

void req_response_done(struct shard *s, struct request *req)
{
	struct client *c = req->c;
	if (!c) {
		req_free(s, req);
		return;
	}
	if (!(c->flags & CL_F_MSG_DONE))
		c->flags |= CL_F_CLOSE; /* answered before the body ended */
	c->req = NULL;
	req->c = NULL;
	shadows_abort(s, req); /* only copies still missing body bytes are left */
	req_free(s, req);
	client_next(s, c);
}

void req_upstream_failed(struct shard *s, struct request *req, int err, int connect_failed,
			 int timed_out, int reused)
{
	struct client *c = req->c;
	const struct backend_cfg *be = req->be;
	int replayable = !(req->flags & REQ_F_NO_REPLAY);
	(void)err;

	if (!c || (c->flags & CL_F_RESP_HEAD)) {
		if (c) {
			/* The client has part of a response: it can only be cut. */
			c->req = NULL;
			req->c = NULL;
			req->status = 502;
			client_on_error(s, &c->sk, err);
		}
		req_free(s, req);
		return;
	}
	if (replayable && reused && !timed_out && !(req->flags & REQ_F_FRESH_DONE) && req->rs) {
		/* A pooled connection died under us before answering: the
		 * replica probably closed it while idle. Once more, fresh. */
		req->flags |= REQ_F_FRESH_DONE;
		if (upstream_start(s, req, req->rs, &be->replicas[req->ridx].addr, 1) == 0) {
			client_on_input(s, &c->sk);
			return;
		}
	}
	if (req->ridx >= 0 && req->ridx < 64)
		req->tried_mask |= 1ull << req->ridx;
	req_release_slot(s, req);
	if (replayable && connect_failed && req->tries < be->retries) {
		req->tries++;
		req_dispatch(s, req, 0);
		if (req->c == c && req->up) /* started again: resume the body */
			client_on_input(s, &c->sk);
		return;
	}
	if (timed_out)
		client_error(s, c, 504, "replica timed out", 0, 0);
	else
		client_error(s, c, 502, "replica failed", 0, 0);
}

int req_wants_close(const struct request *req)
{
	return req->c && (req->c->flags & CL_F_CLOSE);
}

int req_is_head(const struct request *req) { return req->is_head; }

void client_config_changed(struct shard *s, struct config *old)
{
	/* Idle connections to replicas the new snapshot dropped are closed;
	 * busy ones close when their request ends (draining flag). */
	for (size_t i = 0; i < old->nbackends; i++) {
		const struct backend_cfg *b = &old->backends[i];
		for (size_t r = 0; r < b->nreplicas; r++)
			if (atomic_load(&b->replicas[r].state->draining))
				upstream_pool_drain(s, b->replicas[r].state);
	}
}

void client_shard_init(struct shard *s)
{
	timer_init(&s->queue_tick, queue_tick);
}

void client_shard_stop(struct shard *s)
{
	struct list *pos, *tmp;
	/* Idle connections close now; busy ones after their response. */
	list_for_each_safe(pos, tmp, &s->clients) {
		struct client *c = container_of(pos, struct client, all);
		c->flags |= CL_F_CLOSE;
		if (!c->req && !c->sk.in_n && !(c->flags & CL_F_BEGUN))
			sock_close(s, &c->sk);
	}
}

void client_shard_teardown(struct shard *s)
{
	struct list *pos;
	/* Loop has ended: free what is left without waiting for the kernel. */
	while ((pos = list_pop_front(&s->queued))) {
		struct bqueue *q = container_of(pos, struct bqueue, node);
		backend_state_unref(q->bs);
		mi_free(q);
	}
}
