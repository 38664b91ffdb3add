/* Upstream connections: per shard, a keep-alive pool per replica; connect
 * with a timeout; the response parsed with llhttp only to find its head and
 * its end, its bytes streamed to the client as they arrive. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ringroute/alloc.h"

#include "ringroute/conn.h"
#include "ringroute/request.h"

/* Decoded body bytes: forwarded only when de-chunking for an HTTP/1.0
 * client; otherwise the raw bytes (framing included) go out unchanged. */
static int up_on_body(llhttp_t *p, const char *at, size_t len)
{
	struct upstream *up = p->data;
	if (up->dechunk && up->req)
		req_response_body(up->s, up->req, up->cur_bid, at, len);
	return 0;
}

static llhttp_settings_t up_settings;
static pthread_once_t up_settings_once = PTHREAD_ONCE_INIT;

static void up_settings_init(void)
{
	http_settings_init(&up_settings);
	up_settings.on_body = up_on_body;
}

static void up_reset_parser(struct upstream *up)
{
	llhttp_init(&up->hp.p, HTTP_RESPONSE, &up_settings);
	up->hp.p.data = up;
	http_head_reset(&up->hp.hd);
	up->flags &= ~(UP_F_IN_BODY | UP_F_GOT_BYTES);
	up->hp.event = HTTP_EV_NONE;
	up->hp.no_body = up->req && req_is_head(up->req);
	up->dechunk = 0;
}

static struct upstream_pool *pool_of(struct shard *s, struct replica_state *rs)
{
	struct upstream_pool *pool = rs->pools[s->id];
	if (!pool) {
		pool = mi_zalloc(sizeof(*pool));
		if (!pool)
			return NULL;
		list_init(&pool->idle);
		rs->pools[s->id] = pool;
	}
	return pool;
}

static void up_timeout(struct timer *t, void *ctx)
{
	struct shard *s = ctx;
	struct upstream *up = container_of(t, struct upstream, timer);
	struct request *req = up->req;
	int connecting = !(up->flags & UP_F_CONNECTED);

	if (!req) {
		/* Idle connection kept too long: close it. */
		if (list_linked(&up->sk.node)) {
			list_del_init(&up->sk.node);
			up->pool->nidle--;
		}
		sock_close(s, &up->sk);
		return;
	}
	up->req = NULL;
	req->up = NULL;
	counter_add(&up->pool->errors, 1);
	sock_close(s, &up->sk);
	req_upstream_failed(s, req, -ETIMEDOUT, connecting, !connecting, 0);
}

/* Detach the current request and fail it with err. */
static void up_fail(struct shard *s, struct upstream *up, int err)
{
	struct request *req = up->req;
	int reused = (up->flags & UP_F_REUSED) && !(up->flags & UP_F_GOT_BYTES);
	int connect_failed = !(up->flags & UP_F_CONNECTED);

	timer_cancel(&s->tw, &up->timer);
	if (list_linked(&up->sk.node)) { /* idle in the pool */
		list_del_init(&up->sk.node);
		up->pool->nidle--;
	}
	sock_close(s, &up->sk);
	if (!req)
		return;
	up->req = NULL;
	req->up = NULL;
	counter_add(&up->pool->errors, 1);
	req_upstream_failed(s, req, err, connect_failed, 0, reused);
}

int upstream_start(struct shard *s, struct request *req, struct replica_state *rs,
		   const struct sockaddr_in *addr, int fresh)
{
	struct upstream_pool *pool;
	struct upstream *up = NULL;
	int ret;

	pthread_once(&up_settings_once, up_settings_init);
	pool = pool_of(s, rs);
	if (!pool)
		return -ENOMEM;
	if (!fresh && !list_empty(&pool->idle)) {
		struct list *n = list_pop_front(&pool->idle);
		up = container_of(n, struct upstream, sk.node);
		pool->nidle--;
		up->flags |= UP_F_REUSED;
		timer_cancel(&s->tw, &up->timer);
	} else {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
		struct io_uring_sqe *sqe;

		if (fd < 0)
			return -errno;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		up = mi_zalloc(sizeof(*up));
		if (!up) {
			close(fd);
			return -ENOMEM;
		}
		ret = sock_register(s, &up->sk, fd, SOCK_UPSTREAM);
		if (ret) {
			close(fd);
			mi_free(up);
			return ret;
		}
		up->s = s;
		up->rs = rs;
		atomic_fetch_add(&rs->refs, 1);
		up->pool = pool;
		timer_init(&up->timer, up_timeout);
		up->sk.flags |= SK_F_CONNECTING;
		sqe = shard_sqe(s);
		io_uring_prep_connect(sqe, fd, (const struct sockaddr *)addr, sizeof(*addr));
		io_uring_sqe_set_data64(sqe, shard_ud(OP_CONNECT, &up->sk));
		up->sk.sqes++;
		timer_arm(&s->tw, &up->timer, req->be->connect_timeout_ms);
	}
	up->req = req;
	req->up = up;
	up_reset_parser(up);
	counter_add(&pool->requests, 1);
	ret = sock_push_copy(s, &up->sk, req->head.p, req->head.len);
	for (uint32_t i = 0; !ret && i < req->nreplay; i++) {
		const struct seg *g = &req->replay[i];
		ret = g->bid >= 0 ? sock_push_buf(s, &up->sk, (uint32_t)g->bid, g->p, g->len)
				  : sock_push_copy(s, &up->sk, g->p, g->len);
	}
	if (ret) {
		up_fail(s, up, ret);
		return 0; /* req_upstream_failed took over */
	}
	if (up->flags & UP_F_CONNECTED) {
		timer_arm(&s->tw, &up->timer, req->be->request_timeout_ms);
		sock_flush(s, &up->sk);
		sock_want_input(s, &up->sk);
	}
	return 0;
}

void upstream_on_connect(struct shard *s, struct sock *sk, int res)
{
	struct upstream *up = container_of(sk, struct upstream, sk);
	if (res < 0) {
		up_fail(s, up, res);
		return;
	}
	up->flags |= UP_F_CONNECTED;
	if (up->req)
		timer_arm(&s->tw, &up->timer, up->req->be->request_timeout_ms);
	sock_flush(s, sk);
	sock_want_input(s, sk);
}

int upstream_body(struct shard *s, struct upstream *up, uint32_t bid, const char *p, size_t len)
{
	int ret = bid == BID_NONE ? sock_push_copy(s, &up->sk, p, len)
				  : sock_push_buf(s, &up->sk, bid, p, len);
	if (!ret)
		sock_flush(s, &up->sk);
	return ret;
}

void upstream_abort(struct shard *s, struct upstream *up)
{
	timer_cancel(&s->tw, &up->timer);
	if (up->req) {
		up->req->up = NULL;
		up->req = NULL;
	}
	sock_close(s, &up->sk);
}

/* The response is complete: hand the connection back to the pool, or
 * close it when either side said so or the replica is being removed. */
static void up_finish(struct shard *s, struct upstream *up, int keep)
{
	struct request *req = up->req;

	timer_cancel(&s->tw, &up->timer);
	up->req = NULL;
	if (req) {
		req->up = NULL;
		/* The request may still be sending its body (early response):
		 * then the connection cannot be reused. */
		if (up->sk.out_n || !(req->c == NULL || (req->c->flags & CL_F_MSG_DONE)))
			keep = 0;
	}
	if (keep && !atomic_load_explicit(&up->rs->draining, memory_order_relaxed) &&
	    !(up->sk.flags & (SK_F_EOF | SK_F_CLOSING)) && up->sk.in_n == 0) {
		up->flags &= ~UP_F_REUSED; /* idle: its sk.node is on pool->idle */
		list_push_front(&up->pool->idle, &up->sk.node);
		up->pool->nidle++;
		timer_arm(&s->tw, &up->timer, 60000);
		sock_want_input(s, &up->sk);
	} else {
		sock_close(s, &up->sk);
	}
	if (req)
		req_response_done(s, req);
}

void upstream_on_input(struct shard *s, struct sock *sk)
{
	struct upstream *up = container_of(sk, struct upstream, sk);

	while (sk->in_n && !(sk->flags & SK_F_CLOSING)) {
		struct inbuf *b = &sk->in[sk->in_head];
		const char *data = sock_in_ptr(s, b);
		struct request *req = up->req;
		int in_body = up->flags & UP_F_IN_BODY;
		const char *pos;
		llhttp_errno_t rc;
		uint32_t used;

		if (!req) {
			/* Bytes on an idle connection: protocol error, drop it. */
			up_fail(s, up, -EPROTO);
			return;
		}
		if (req->c && req->c->sk.out_bytes > SINK_HIGH) {
			sock_pause_input(s, sk); /* client is slow: stop reading */
			return;
		}
		up->flags |= UP_F_GOT_BYTES;
		up->hp.event = HTTP_EV_NONE;
		up->cur_bid = b->bid;
		rc = llhttp_execute(&up->hp.p, data, b->len);
		pos = rc == HPE_OK ? data + b->len : llhttp_get_error_pos(&up->hp.p);
		if (rc != HPE_OK && rc != HPE_PAUSED) {
			up_fail(s, up, -EPROTO);
			return;
		}
		used = (uint32_t)(pos - data);
		if (in_body && used && !up->dechunk)
			req_response_body(s, req, b->bid, data, used);
		sock_in_consume(s, sk, used);
		if (rc == HPE_PAUSED)
			llhttp_resume(&up->hp.p);
		if (up->hp.event == HTTP_EV_HEADERS || (up->hp.event == HTTP_EV_MESSAGE && !in_body)) {
			struct strbuf head = {0};
			uint8_t f = up->hp.p.flags;
			int status = up->hp.p.status_code;
			int eof_body = !(f & (F_CHUNKED | F_CONTENT_LENGTH)) && status >= 200 &&
				       status != 204 && status != 304 && !req_is_head(req);
			if (status >= 100 && status < 200 && status != 101) {
				/* Interim response: pass it on, expect the real one. */
				http_head_mark_hop(&up->hp.hd);
				if (req->c && !http_write_response_head(&head, &up->hp.hd, &up->hp.p, 0)) {
					sock_push_owned(s, &req->c->sk, head.p, head.p, head.len);
					sock_flush(s, &req->c->sk);
				} else {
					mi_free(head.p);
				}
				up_reset_parser(up);
				up->flags |= UP_F_GOT_BYTES;
				continue;
			}
			http_head_mark_hop(&up->hp.hd);
			if (req->http10 && (f & F_CHUNKED)) {
				/* HTTP/1.0 has no chunked coding: send the decoded
				 * body, delimited by closing the connection. */
				const struct http_hdr *te = http_head_find(&up->hp.hd, "transfer-encoding");
				up->dechunk = 1;
				eof_body = 1;
				if (te)
					up->hp.hd.hdrs[te - up->hp.hd.hdrs].flags |= HDR_F_HOP;
			}
			if (http_write_response_head(&head, &up->hp.hd, &up->hp.p,
						     eof_body || req_wants_close(req))) {
				mi_free(head.p);
				up_fail(s, up, -ENOMEM);
				return;
			}
			req->status = status;
			if (eof_body && req->c)
				req->c->flags |= CL_F_CLOSE;
			req_response_head(s, req, &head);
			up->flags |= UP_F_IN_BODY;
			if (up->hp.event == HTTP_EV_HEADERS) {
				/* A body-less response completes on a zero-length run. */
				up->hp.event = HTTP_EV_NONE;
				rc = llhttp_execute(&up->hp.p, pos, 0);
				if (rc == HPE_PAUSED)
					llhttp_resume(&up->hp.p);
			}
		}
		if (up->hp.event == HTTP_EV_MESSAGE) {
			int keep = llhttp_should_keep_alive(&up->hp.p);
			up_finish(s, up, keep);
			return;
		}
		/* The response is being received: the replica is alive. */
		timer_arm(&s->tw, &up->timer, req->be->request_timeout_ms);
	}
	if (sk->flags & SK_F_CLOSING)
		return;
	if (sk->flags & SK_F_EOF) {
		if (up->req && (up->flags & UP_F_IN_BODY) && llhttp_finish(&up->hp.p) == HPE_OK &&
		    up->hp.event == HTTP_EV_MESSAGE) {
			up_finish(s, up, 0); /* body delimited by the close */
			return;
		}
		up_fail(s, up, -ECONNRESET);
		return;
	}
	if (up->req && (!up->req->c || up->req->c->sk.out_bytes <= SINK_HIGH))
		sock_want_input(s, sk);
}

void upstream_on_sent(struct shard *s, struct sock *sk)
{
	struct upstream *up = container_of(sk, struct upstream, sk);
	/* Body back-pressure: the client side may read more now. */
	if (up->req && up->req->c && sk->out_bytes <= SINK_HIGH)
		client_on_input(s, &up->req->c->sk);
}

void upstream_on_error(struct shard *s, struct sock *sk, int err)
{
	up_fail(s, container_of(sk, struct upstream, sk), err);
}

void upstream_free(struct shard *s, struct sock *sk)
{
	struct upstream *up = container_of(sk, struct upstream, sk);
	timer_cancel(&s->tw, &up->timer);
	if (up->req) { /* only at shard teardown: never leave a dangling pointer */
		up->req->up = NULL;
		up->req = NULL;
	}
	if (list_linked(&sk->node)) {
		list_del_init(&sk->node);
		up->pool->nidle--;
	}
	http_head_free(&up->hp.hd);
	replica_state_unref(up->rs);
	mi_free(up);
}

void upstream_pool_drain(struct shard *s, struct replica_state *rs)
{
	struct upstream_pool *pool = rs->pools[s->id];
	struct list *n;
	if (!pool)
		return;
	while ((n = list_pop_front(&pool->idle))) {
		struct upstream *up = container_of(n, struct upstream, sk.node);
		pool->nidle--;
		timer_cancel(&s->tw, &up->timer);
		sock_close(s, &up->sk);
	}
}
