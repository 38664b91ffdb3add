/* Upstream connections (see upstream.h). */
#include "ringroute/upstream.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ringroute/alloc.h"
#include "ringroute/shard.h"

static void up_on_input(struct shard *s, struct sock *sk);

static const char *const error_names[UP_ERR_COUNT] = {
	[UP_ERR_CONNECT_FAILED] = "connect_failed",
	[UP_ERR_CONNECT_TIMEOUT] = "connect_timeout",
	[UP_ERR_RESET] = "reset",
	[UP_ERR_TIMEOUT] = "timeout",
	[UP_ERR_BAD_RESPONSE] = "bad_response",
};

const char *upstream_error_name(enum up_error e)
{
	return (unsigned)e < UP_ERR_COUNT ? error_names[e] : "unknown";
}

void upstream_pool_add(struct pool_sum *sum, struct upstream_pool *pool)
{
	sum->requests += counter_get(&pool->requests);
	for (unsigned i = 0; i < UP_ERR_COUNT; i++)
		sum->errors[i] += counter_get(&pool->errors[i]);
}

/* Decoded body bytes: handed on only when de-chunking (HTTP/1.0 client);
 * otherwise the raw bytes (framing included) go out unchanged. */
static int up_on_body(llhttp_t *p, const char *at, size_t len)
{
	struct upstream *up = p->data;

	if ((up->flags & UP_F_DECODED) && up->owner)
		up->ev->on_body(up->s, up->owner, up->cur_bid, at, len);
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
	http_scan_init(&up->hp.scan);
	up->flags &= ~(UP_F_IN_BODY | UP_F_GOT_BYTES | UP_F_DECODED | UP_F_NO_BODY);
	up->hp.event = HTTP_EV_NONE;
	up->hp.no_body = (up->flags & UP_F_HEAD_REQ) != 0;
}

void upstream_parser_reset(struct upstream *up, bool is_head)
{
	pthread_once(&up_settings_once, up_settings_init);
	up->flags = (up->flags & ~UP_F_HEAD_REQ) | (is_head ? UP_F_HEAD_REQ : 0);
	up_reset_parser(up);
}

/* This shard's pool for rs, created on first use. The control thread reads
 * pools[] for stats: the pointer is published with release order, after
 * the pool is initialised. NULL on ENOMEM. */
static struct upstream_pool *pool_of(struct shard *s, struct replica_state *rs)
{
	struct upstream_pool *pool = atomic_load_explicit(&rs->pools[s->id], memory_order_relaxed);

	if (!pool) {
		pool = mi_zalloc(sizeof(*pool));
		if (!pool)
			return NULL;
		list_init(&pool->idle);
		atomic_store_explicit(&rs->pools[s->id], pool, memory_order_release);
	}
	return pool;
}

static void pool_unlink(struct upstream *up)
{
	if (list_linked(&up->sk.node)) {
		list_del_init(&up->sk.node);
		up->pool->nidle--;
	}
}

/* Detach the owner, close the connection, and tell the owner how the
 * attempt failed (f); kind is how the replica's failure is counted. */
static void up_fail(struct shard *s, struct upstream *up, enum up_failure f, enum up_error kind)
{
	void *owner = up->owner;
	int reused = (up->flags & UP_F_REUSED) && !(up->flags & UP_F_GOT_BYTES);

	timer_cancel(&s->tw, &up->timer);
	pool_unlink(up);
	sock_close(s, &up->sk);
	if (!owner)
		return;
	up->owner = NULL;
	counter_add(&up->pool->errors[kind], 1);
	up->ev->on_failed(s, owner, f, reused);
}

static void up_timeout(struct timer *t, void *ctx)
{
	struct shard *s = ctx;
	struct upstream *up = container_of(t, struct upstream, timer);

	if (!up->owner) {
		/* Idle connection kept too long: close it. */
		pool_unlink(up);
		sock_close(s, &up->sk);
		return;
	}
	if (up->flags & UP_F_CONNECTED)
		up_fail(s, up, UP_FAIL_TIMEOUT, UP_ERR_TIMEOUT);
	else
		up_fail(s, up, UP_FAIL_CONNECT, UP_ERR_CONNECT_TIMEOUT);
}

static void up_on_connect(struct shard *s, struct sock *sk, int res)
{
	struct upstream *up = container_of(sk, struct upstream, sk);

	if (res < 0) {
		up_fail(s, up, UP_FAIL_CONNECT, UP_ERR_CONNECT_FAILED);
		return;
	}
	up->flags |= UP_F_CONNECTED;
	if (up->owner)
		timer_arm(&s->tw, &up->timer, up->request_timeout_ms);
	sock_flush(s, sk);
	sock_want_input(s, sk);
}

static void up_on_sent(struct shard *s, struct sock *sk)
{
	struct upstream *up = container_of(sk, struct upstream, sk);

	/* Body back-pressure: the client side may send more now. */
	if (up->owner && sk->out_bytes <= SINK_HIGH)
		up->ev->on_drained(s, up->owner);
}

static void up_on_error(struct shard *s, struct sock *sk, int err)
{
	(void)err;
	up_fail(s, container_of(sk, struct upstream, sk), UP_FAIL_RESET, UP_ERR_RESET);
}

static void up_on_free(struct shard *s, struct sock *sk)
{
	struct upstream *up = container_of(sk, struct upstream, sk);

	timer_cancel(&s->tw, &up->timer);
	if (up->owner) { /* only at shard teardown: never leave a dangling pointer */
		void *owner = up->owner;
		up->owner = NULL;
		up->ev->on_gone(s, owner);
	}
	pool_unlink(up);
	http_head_free(&up->hp.hd);
	registry_replica_unref(up->rs);
	mi_free(up);
}

static const struct sock_ops up_sock_ops = {
	.name = "upstream",
	.buf_group = 1,
	.on_input = up_on_input,
	.on_sent = up_on_sent,
	.on_error = up_on_error,
	.on_connect = up_on_connect,
	.on_free = up_on_free,
};

/* A new connection to addr. Returns it, or NULL with *err = -errno. */
static struct upstream *up_connect(struct shard *s, struct upstream_pool *pool,
				   struct replica_state *rs, const struct rr_addr *addr,
				   uint32_t timeout_ms, int *err)
{
	int fd = socket(addr->u.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
	struct io_uring_sqe *sqe;
	struct upstream *up;

	if (fd < 0) {
		*err = -errno;
		return NULL;
	}
	if (addr->u.sa.sa_family != AF_UNIX)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	up = mi_zalloc(sizeof(*up));
	if (!up) {
		close(fd);
		*err = -ENOMEM;
		return NULL;
	}
	*err = sock_register(s, &up->sk, fd, &up_sock_ops);
	if (!*err) {
		sqe = sock_sqe(s);
		if (!sqe)
			*err = -EBUSY;
	}
	if (*err) {
		if (up->sk.ops) {
			/* Registered: give the slot back through the loop. */
			up->s = s;
			up->rs = rs;
			atomic_fetch_add(&rs->refs, 1);
			up->pool = pool;
			timer_init(&up->timer, up_timeout);
			sock_close(s, &up->sk);
		} else {
			close(fd);
			mi_free(up);
		}
		return NULL;
	}
	up->s = s;
	up->rs = rs;
	atomic_fetch_add(&rs->refs, 1);
	up->pool = pool;
	timer_init(&up->timer, up_timeout);
	up->sk.flags |= SK_F_CONNECTING;
	io_uring_prep_connect(sqe, fd, &addr->u.sa, addr->len);
	io_uring_sqe_set_data64(sqe, sock_ud(OP_CONNECT, &up->sk));
	up->sk.sqes++;
	timer_arm(&s->tw, &up->timer, timeout_ms);
	return up;
}

int upstream_start(struct shard *s, const struct upstream_req *ur, struct replica_state *rs,
		   const struct rr_addr *addr, int fresh, struct upstream **out)
{
	struct upstream_pool *pool;
	struct upstream *up = NULL;
	int ret;

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
		up = up_connect(s, pool, rs, addr, ur->connect_timeout_ms, &ret);
		if (!up)
			return ret;
	}
	upstream_parser_reset(up, ur->is_head);
	ret = sock_push_copy(s, &up->sk, ur->head, ur->head_len);
	for (uint32_t i = 0; !ret && i < ur->nbody; i++) {
		const struct seg *g = &ur->body[i];
		ret = sock_push_buf(s, &up->sk, g->bid >= 0 ? (uint32_t)g->bid : BID_NONE, g->p,
				    g->len);
	}
	if (ret) {
		/* Nothing was sent: this connection goes, the caller keeps its
		 * exchange as it was. */
		timer_cancel(&s->tw, &up->timer);
		sock_close(s, &up->sk);
		return ret;
	}
	up->ev = ur->ev;
	up->owner = ur->owner;
	up->request_timeout_ms = ur->request_timeout_ms;
	counter_add(&pool->requests, 1);
	if (up->flags & UP_F_CONNECTED) {
		timer_arm(&s->tw, &up->timer, up->request_timeout_ms);
		sock_flush(s, &up->sk);
		sock_want_input(s, &up->sk);
	}
	*out = up;
	return 0;
}

int upstream_body(struct shard *s, struct upstream *up, uint32_t bid, const char *p, size_t len)
{
	int ret = sock_push_buf(s, &up->sk, bid, p, len);

	if (!ret)
		sock_flush(s, &up->sk);
	return ret;
}

bool upstream_congested(const struct upstream *up)
{
	return up->sk.out_bytes > SINK_HIGH;
}

void upstream_resume(struct shard *s, struct upstream *up)
{
	if (up->sk.flags & SK_F_RECV_OFF) {
		sock_want_input(s, &up->sk);
		up_on_input(s, &up->sk);
	}
}

void upstream_abort(struct shard *s, struct upstream *up)
{
	timer_cancel(&s->tw, &up->timer);
	up->owner = NULL;
	pool_unlink(up);
	sock_close(s, &up->sk);
}

/* The response is complete: hand the connection back to the pool, or
 * close it when either side said so, bytes follow the response (a replica
 * that sent a body where none may be: never take them for the next
 * response), or the replica is being removed. */
static void up_finish(struct shard *s, struct upstream *up, int keep)
{
	void *owner = up->owner;

	timer_cancel(&s->tw, &up->timer);
	up->owner = NULL;
	/* The owner may still be sending its body (early response): then the
	 * connection cannot be reused. */
	if (owner && (up->sk.out_n || !up->ev->body_done(owner)))
		keep = 0;
	/* A 204 that announced a body will likely send it: never let those
	 * bytes be read as the next response. */
	if ((up->flags & UP_F_NO_BODY) && up->hp.p.status_code == 204 &&
	    ((up->hp.p.flags & F_CHUNKED) || up->hp.p.content_length > 0))
		keep = 0;
	if (keep && !atomic_load_explicit(&up->rs->draining, memory_order_relaxed) &&
	    !(up->sk.flags & (SK_F_EOF | SK_F_CLOSING)) && up->sk.in_n == 0) {
		up->flags &= ~UP_F_REUSED; /* idle: its sk.node is on pool->idle */
		list_push_front(&up->pool->idle, &up->sk.node);
		up->pool->nidle++;
		timer_arm(&s->tw, &up->timer, UPSTREAM_IDLE_TIMEOUT_MS);
		sock_want_input(s, &up->sk);
	} else {
		sock_close(s, &up->sk);
	}
	if (owner)
		up->ev->on_end(s, owner);
}

/* A complete head (interim or final) was parsed. Returns UP_STEP_MORE to
 * go on, UP_STEP_FAIL (a 101), or UP_STEP_GONE (the owner ended). */
static enum up_step up_on_head(struct shard *s, struct upstream *up, const char *pos)
{
	struct resp_head rh = {
		.status = up->hp.p.status_code,
		.flags = up->hp.p.flags,
		.hd = &up->hp.hd,
		.p = &up->hp.p,
	};
	int mode;

	/* We never forward Upgrade, so a 101 can never be an answer; a status
	 * outside 100..599 is not one either. */
	if (rh.status == 101 || rh.status < 100 || rh.status > 599)
		return UP_STEP_FAIL;
	/* Header names that are not tokens would be read differently by the
	 * client: never pass them on. */
	if (!http_head_valid(&up->hp.hd))
		return UP_STEP_FAIL;
	http_head_mark_hop(&up->hp.hd);
	if (rh.status >= 100 && rh.status < 200) {
		/* Interim: the final response follows. */
		if (up->ev->on_interim(s, up->owner, &rh) < 0)
			return UP_STEP_GONE;
		up_reset_parser(up);
		up->flags |= UP_F_GOT_BYTES;
		return UP_STEP_MORE;
	}
	if (rh.status == 204 || rh.status == 304 || (up->flags & UP_F_HEAD_REQ))
		up->flags |= UP_F_NO_BODY;
	mode = up->ev->on_head(s, up->owner, &rh);
	if (mode < 0)
		return UP_STEP_GONE;
	if (mode == UP_BODY_DECODED)
		up->flags |= UP_F_DECODED;
	up->flags |= UP_F_IN_BODY;
	if (up->hp.event == HTTP_EV_HEADERS) {
		/* A body-less response completes on a zero-length run. */
		up->hp.event = HTTP_EV_NONE;
		if (llhttp_execute(&up->hp.p, pos, 0) == HPE_PAUSED)
			llhttp_resume(&up->hp.p);
	}
	return UP_STEP_MORE;
}

enum up_step upstream_parse(struct shard *s, struct upstream *up, const char *data, uint32_t len,
			    uint32_t bid, uint32_t *used)
{
	int in_body = up->flags & UP_F_IN_BODY;
	const char *pos;
	llhttp_errno_t rc;
	enum up_step st;

	up->flags |= UP_F_GOT_BYTES;
	up->hp.event = HTTP_EV_NONE;
	up->cur_bid = bid;
	rc = llhttp_execute(&up->hp.p, data, len);
	pos = rc == HPE_OK ? data + len : llhttp_get_error_pos(&up->hp.p);
	*used = (uint32_t)(pos - data);
	if (rc != HPE_OK && rc != HPE_PAUSED)
		return UP_STEP_FAIL;
	/* RFC 9112 5.2: a gateway answers a response head with obs-fold 502;
	 * a bare LF there gets the same, as in requests. */
	if (!in_body && http_scan_head(&up->hp.scan, data, *used))
		return UP_STEP_FAIL;
	if (in_body && *used && !(up->flags & UP_F_DECODED))
		up->ev->on_body(s, up->owner, bid, data, *used);
	if (rc == HPE_PAUSED)
		llhttp_resume(&up->hp.p);
	if (up->hp.event == HTTP_EV_HEADERS || (up->hp.event == HTTP_EV_MESSAGE && !in_body)) {
		st = up_on_head(s, up, pos);
		if (st != UP_STEP_MORE || !(up->flags & UP_F_IN_BODY))
			return st; /* failed, gone, or an interim head: parse the rest */
	}
	return up->hp.event == HTTP_EV_MESSAGE ? UP_STEP_END : UP_STEP_MORE;
}

enum up_step upstream_parse_eof(struct upstream *up)
{
	llhttp_errno_t rc;

	if (!(up->flags & UP_F_IN_BODY))
		return UP_STEP_FAIL;
	/* llhttp_finish ends a close-delimited body with our
	 * on_message_complete, which pauses: HPE_PAUSED is success. */
	up->hp.event = HTTP_EV_NONE;
	rc = llhttp_finish(&up->hp.p);
	return (rc == HPE_OK || rc == HPE_PAUSED) && up->hp.event == HTTP_EV_MESSAGE ? UP_STEP_END
										       : UP_STEP_FAIL;
}

static void up_on_input(struct shard *s, struct sock *sk)
{
	struct upstream *up = container_of(sk, struct upstream, sk);

	while (sk->in_n && !(sk->flags & SK_F_CLOSING)) {
		struct inbuf *b = &sk->in[sk->in_head];
		uint32_t used;

		if (!up->owner) {
			/* Bytes on an idle connection: protocol error, drop it. */
			up_fail(s, up, UP_FAIL_BAD_RESPONSE, UP_ERR_BAD_RESPONSE);
			return;
		}
		if (up->ev->pending(up->owner) > SINK_HIGH) {
			sock_pause_input(s, sk); /* client is slow: stop reading */
			return;
		}
		switch (upstream_parse(s, up, sock_in_ptr(s, b), b->len, b->bid, &used)) {
		case UP_STEP_MORE:
			sock_in_consume(s, sk, used);
			/* The response is being received: the replica is alive. */
			if (up->owner)
				timer_arm(&s->tw, &up->timer, up->request_timeout_ms);
			continue;
		case UP_STEP_END:
			sock_in_consume(s, sk, used);
			up_finish(s, up, llhttp_should_keep_alive(&up->hp.p));
			return;
		case UP_STEP_FAIL:
			up_fail(s, up, UP_FAIL_BAD_RESPONSE, UP_ERR_BAD_RESPONSE);
			return;
		case UP_STEP_GONE:
			return; /* the owner ended and closed us */
		}
	}
	if (sk->flags & SK_F_CLOSING)
		return;
	if (sk->flags & SK_F_EOF) {
		if (up->owner && upstream_parse_eof(up) == UP_STEP_END)
			up_finish(s, up, 0); /* body delimited by the close */
		else
			up_fail(s, up, UP_FAIL_RESET, UP_ERR_RESET);
		return;
	}
	if (up->owner && up->ev->pending(up->owner) <= SINK_HIGH)
		sock_want_input(s, sk);
}

void upstream_pool_drain(struct shard *s, struct replica_state *rs)
{
	struct upstream_pool *pool = atomic_load_explicit(&rs->pools[s->id], memory_order_relaxed);
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

void upstream_config_changed(struct shard *s, struct config *old)
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
