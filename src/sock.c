/* The socket layer (see sock.h): socket table, output and input queues,
 * recv arming, completions of socket ops. */
#include "ringroute/sock.h"

#include <assert.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ringroute/alloc.h"
#include "ringroute/bufring.h"
#include "ringroute/shard.h"

#define SQE_SUBMIT_TRIES 4

struct io_uring_sqe *sock_sqe(struct shard *s)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&s->ring);

	/* A full SQ is submitted; a ring that keeps refusing (-EBUSY while
	 * completions overflow, -EBADFD, ...) is not retried forever: the
	 * caller fails or defers this one operation. */
	for (int i = 0; !sqe && i < SQE_SUBMIT_TRIES; i++) {
		if (io_uring_submit(&s->ring) < 0)
			counter_add(&s->metrics.sqe_failures, 1);
		sqe = io_uring_get_sqe(&s->ring);
	}
	return sqe;
}

/* ---- socket table ---- */

/* Grow the table by one slot. Returns 0 or -ENOMEM (table unchanged). */
static int table_grow(struct shard *s)
{
	uint32_t cap = s->cap_socks ? s->cap_socks * 2 : 1024;
	struct sock **t;
	uint32_t *f, *g;

	t = mi_realloc(s->socks, cap * sizeof(*t));
	if (!t)
		return -ENOMEM;
	s->socks = t;
	f = mi_realloc(s->free_idx, cap * sizeof(*f));
	if (!f)
		return -ENOMEM;
	s->free_idx = f;
	g = mi_realloc(s->sock_gen, cap * sizeof(*g));
	if (!g)
		return -ENOMEM;
	memset(g + s->cap_socks, 0, (cap - s->cap_socks) * sizeof(*g));
	s->sock_gen = g;
	s->cap_socks = cap;
	return 0;
}

int sock_register(struct shard *s, struct sock *sk, int fd, const struct sock_ops *ops)
{
	uint32_t idx;

	if (s->nfree) {
		idx = s->free_idx[--s->nfree];
	} else {
		if (s->nsocks == s->cap_socks && table_grow(s))
			return -ENOMEM;
		idx = s->nsocks++;
	}
	memset(sk, 0, sizeof(*sk));
	sk->fd = fd;
	sk->idx = idx;
	/* 24 bits travel in user_data; 0 is never used, so a zeroed sock
	 * never matches. */
	s->sock_gen[idx] = (s->sock_gen[idx] + 1) & 0xffffff;
	if (!s->sock_gen[idx])
		s->sock_gen[idx] = 1;
	sk->gen = s->sock_gen[idx];
	sk->ops = ops;
	list_init(&sk->node);
	list_init(&sk->rearm);
	list_init(&sk->flush);
	s->socks[idx] = sk;
	return 0;
}

struct sock *sock_lookup(struct shard *s, uint64_t ud)
{
	uint32_t idx = sock_ud_idx(ud);
	uint32_t gen = (uint32_t)(ud >> 8) & 0xffffff;
	struct sock *sk = idx < s->nsocks ? s->socks[idx] : NULL;

	if (!sk || sk->gen != gen || s->sock_gen[idx] != gen)
		return NULL;
	return sk;
}

/* ---- output ---- */

static void out_release(struct shard *s, struct seg *g)
{
	if (g->bid >= 0)
		bufring_unref(&s->br, (uint32_t)g->bid);
	if (g->own)
		mi_free(g->own);
	g->own = NULL;
	g->bid = -1;
}

/* Make room for one more element at the tail of an array used as a queue
 * (live elements at [*head, *head + n)): slide them to the front when that
 * frees room and may_move allows (no iovec points into them), else double
 * the array. Returns 0 or -ENOMEM. */
static int queue_room(void **v, uint32_t *head, uint32_t n, uint32_t *cap, size_t elem,
		      int may_move)
{
	void *nv;
	uint32_t ncap;

	if (*head + n < *cap)
		return 0;
	if (*head > 0 && may_move) {
		memmove(*v, (char *)*v + (size_t)*head * elem, (size_t)n * elem);
		*head = 0;
		return 0;
	}
	ncap = *cap ? *cap * 2 : 4;
	nv = mi_realloc(*v, (size_t)ncap * elem);
	if (!nv)
		return -ENOMEM;
	*v = nv;
	*cap = ncap;
	return 0;
}

static int out_push(struct sock *sk, struct seg g)
{
	if (queue_room((void **)&sk->out, &sk->out_head, sk->out_n, &sk->out_cap, sizeof(*sk->out),
		       !(sk->flags & SK_F_SENDING)))
		return -ENOMEM;
	sk->out[sk->out_head + sk->out_n++] = g;
	sk->out_bytes += g.len;
	return 0;
}

int sock_push_copy(struct shard *s, struct sock *sk, const void *p, size_t len)
{
	char *own;

	if (!len)
		return 0;
	own = mi_malloc(len);
	if (!own)
		return -ENOMEM;
	memcpy(own, p, len);
	return sock_push_owned(s, sk, own, own, len);
}

int sock_push_owned(struct shard *s, struct sock *sk, void *own, const char *p, size_t len)
{
	struct seg g = {.p = p, .len = (uint32_t)len, .bid = -1, .own = own};
	int ret;

	(void)s; /* the same shape as the other pushes */
	if (sk->flags & SK_F_CLOSING) {
		mi_free(own);
		return -EPIPE;
	}
	ret = out_push(sk, g);
	if (ret)
		mi_free(own);
	return ret;
}

int sock_push_buf(struct shard *s, struct sock *sk, uint32_t bid, const char *p, size_t len)
{
	struct seg g = {.p = p, .len = (uint32_t)len, .bid = (int32_t)bid, .own = NULL};
	int ret;

	if (!len)
		return 0;
	if (sk->flags & SK_F_CLOSING)
		return -EPIPE;
	if (bid == BID_NONE || bufring_ref(&s->br, bid))
		return sock_push_copy(s, sk, p, len);
	ret = out_push(sk, g);
	if (ret)
		bufring_unref(&s->br, bid);
	return ret;
}

static struct sock_send *send_get(struct shard *s)
{
	struct sock_send *ss = s->free_sends;

	if (ss) {
		s->free_sends = ss->next;
		return ss;
	}
	return mi_malloc(sizeof(*ss));
}

static void send_put(struct shard *s, struct sock_send *ss)
{
	ss->next = s->free_sends;
	s->free_sends = ss;
}

void sock_flush(struct shard *s, struct sock *sk)
{
	struct io_uring_sqe *sqe;
	struct sock_send *ss;
	uint32_t n;

	if (sk->flags & (SK_F_SENDING | SK_F_CLOSING | SK_F_CONNECTING) || !sk->out_n)
		return;
	ss = send_get(s);
	sqe = ss ? sock_sqe(s) : NULL;
	if (!sqe) {
		/* No memory or no SQE: try again before the next wait. */
		if (ss)
			send_put(s, ss);
		sock_flush_later(s, sk);
		s->flush_retry = 1;
		return;
	}
	n = sk->out_n < SOCK_IOV_MAX ? sk->out_n : SOCK_IOV_MAX;
	for (uint32_t i = 0; i < n; i++) {
		struct seg *g = &sk->out[sk->out_head + i];
		ss->iov[i].iov_base = (void *)g->p;
		ss->iov[i].iov_len = g->len;
	}
	memset(&ss->msg, 0, sizeof(ss->msg));
	ss->msg.msg_iov = ss->iov;
	ss->msg.msg_iovlen = n;
	ss->n = n;
	sk->send = ss;
	io_uring_prep_sendmsg(sqe, sk->fd, &ss->msg, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, sock_ud(OP_SEND, sk));
	sk->flags |= SK_F_SENDING;
	sk->sqes++;
}

void sock_flush_later(struct shard *s, struct sock *sk)
{
	if (!list_linked(&sk->flush) && !(sk->flags & SK_F_CLOSING))
		list_push_back(&s->flushq, &sk->flush);
}

void sock_flush_deferred(struct shard *s)
{
	struct list q, *pos;

	/* A flush that finds no SQE puts itself back: take the list first so
	 * this pass ends. */
	list_init(&q);
	if (!list_empty(&s->flushq)) {
		q.next = s->flushq.next;
		q.prev = s->flushq.prev;
		q.next->prev = &q;
		q.prev->next = &q;
		list_init(&s->flushq);
	}
	while ((pos = list_pop_front(&q)))
		sock_flush(s, container_of(pos, struct sock, flush));
}

/* ---- input ---- */

static void rearm_later(struct shard *s, struct sock *sk)
{
	if (!list_linked(&sk->rearm)) {
		sk->flags |= SK_F_REARM;
		list_push_back(&s->rearm, &sk->rearm);
	}
}

static void arm_recv(struct shard *s, struct sock *sk)
{
	struct io_uring_sqe *sqe = sock_sqe(s);

	if (!sqe) {
		rearm_later(s, sk);
		return;
	}
	io_uring_prep_recv_multishot(sqe, sk->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = (uint16_t)sk->ops->buf_group;
	io_uring_sqe_set_data64(sqe, sock_ud(OP_RECV, sk));
	sk->flags |= SK_F_RECV_ARMED;
	sk->sqes++;
}

void sock_want_input(struct shard *s, struct sock *sk)
{
	sk->flags &= ~SK_F_RECV_OFF;
	if (sk->flags & (SK_F_RECV_ARMED | SK_F_CLOSING | SK_F_EOF | SK_F_REARM))
		return;
	arm_recv(s, sk);
}

static void cancel_recv(struct shard *s, struct sock *sk)
{
	struct io_uring_sqe *sqe;

	if (!(sk->flags & SK_F_RECV_ARMED) || (sk->flags & SK_F_CANCELING))
		return;
	sqe = sock_sqe(s);
	if (!sqe)
		return; /* the recv stays armed: its input is only queued */
	io_uring_prep_cancel64(sqe, sock_ud(OP_RECV, sk), 0);
	io_uring_sqe_set_data64(sqe, sock_ud(OP_CANCEL, sk));
	sk->flags |= SK_F_CANCELING;
	sk->sqes++;
}

void sock_pause_input(struct shard *s, struct sock *sk)
{
	sk->flags |= SK_F_RECV_OFF;
	if (sk->in_n >= SOCK_INQ_MAX)
		cancel_recv(s, sk);
}

static int in_push(struct sock *sk, uint32_t bid, uint32_t len)
{
	if (queue_room((void **)&sk->in, &sk->in_head, sk->in_n, &sk->in_cap, sizeof(*sk->in), 1))
		return -ENOMEM;
	sk->in[sk->in_head + sk->in_n++] = (struct inbuf){.bid = bid, .off = 0, .len = len, .mem = NULL};
	return 0;
}

static void in_release(struct shard *s, struct inbuf *b)
{
	if (b->mem) {
		mi_free(b->mem);
		b->mem = NULL;
	} else {
		bufring_unref(&s->br, b->bid);
	}
}

/* An empty input queue gives its array back: idle sockets hold none. */
static void in_shrink(struct sock *sk)
{
	sk->in_head = 0;
	mi_free(sk->in);
	sk->in = NULL;
	sk->in_cap = 0;
}

void sock_in_consume(struct shard *s, struct sock *sk, uint32_t n)
{
	struct inbuf *b = &sk->in[sk->in_head];

	b->off += n;
	b->len -= n;
	if (b->len == 0) {
		in_release(s, b);
		sk->in_head++;
		if (--sk->in_n == 0)
			in_shrink(sk);
	}
}

void sock_in_clear(struct shard *s, struct sock *sk)
{
	while (sk->in_n) {
		in_release(s, &sk->in[sk->in_head]);
		sk->in_head++;
		sk->in_n--;
	}
	in_shrink(sk);
}

size_t sock_in_bytes(const struct sock *sk)
{
	size_t n = 0;

	for (uint32_t i = 0; i < sk->in_n; i++)
		n += sk->in[sk->in_head + i].len;
	return n;
}

void sock_in_spill(struct shard *s, struct sock *sk)
{
	for (uint32_t i = 0; i < sk->in_n; i++) {
		struct inbuf *b = &sk->in[sk->in_head + i];
		char *m;

		if (b->mem)
			continue;
		m = mi_malloc(b->len);
		if (!m)
			return; /* keep the buffer: correct, only less fair */
		memcpy(m, bufring_ptr(&s->br, b->bid) + b->off, b->len);
		bufring_unref(&s->br, b->bid);
		b->bid = BID_NONE;
		b->mem = m;
		b->off = 0;
	}
}

const char *sock_in_ptr(const struct shard *s, const struct inbuf *b)
{
	return (b->mem ? b->mem : bufring_ptr(&s->br, b->bid)) + b->off;
}

/* ---- closing ---- */

static void out_drop(struct shard *s, struct sock *sk, uint32_t keep)
{
	for (uint32_t i = keep; i < sk->out_n; i++)
		out_release(s, &sk->out[sk->out_head + i]);
	sk->out_n = keep;
}

void sock_close(struct shard *s, struct sock *sk)
{
	struct io_uring_sqe *sqe;

	if (sk->flags & SK_F_CLOSING)
		return;
	sk->flags |= SK_F_CLOSING;
	if (list_linked(&sk->rearm))
		list_del_init(&sk->rearm);
	if (list_linked(&sk->flush))
		list_del_init(&sk->flush);
	/* shutdown() alone ends a recv or send in flight; the cancel makes it
	 * prompt. Without an SQE for it, shutdown still does the job. */
	shutdown(sk->fd, SHUT_RDWR);
	if (sk->sqes && (sqe = sock_sqe(s))) {
		io_uring_prep_cancel_fd(sqe, sk->fd, IORING_ASYNC_CANCEL_ALL);
		io_uring_sqe_set_data64(sqe, sock_ud(OP_CANCEL, sk));
		sk->sqes++;
	}
	/* Segments not in a send in flight can go now. */
	out_drop(s, sk, (sk->flags & SK_F_SENDING) ? sk->send->n : 0);
	sock_in_clear(s, sk);
	if (!sk->sqes) {
		/* Owners take a socket off their lists before closing it. */
		assert(!list_linked(&sk->node));
		list_push_back(&s->dead, &sk->node);
	}
}

/* The last SQE naming a closing socket has completed. */
static void sock_settle(struct shard *s, struct sock *sk)
{
	if ((sk->flags & SK_F_CLOSING) && sk->sqes == 0) {
		if (list_linked(&sk->node))
			list_del_init(&sk->node);
		list_push_back(&s->dead, &sk->node);
	}
}

void sock_reap(struct shard *s)
{
	struct list *pos;

	while ((pos = list_pop_front(&s->dead))) {
		struct sock *sk = container_of(pos, struct sock, node);

		out_drop(s, sk, 0);
		mi_free(sk->out);
		sk->out = NULL;
		sk->out_cap = sk->out_head = 0;
		if (sk->send) {
			send_put(s, sk->send);
			sk->send = NULL;
		}
		sock_in_clear(s, sk);
		close(sk->fd);
		s->socks[sk->idx] = NULL;
		s->free_idx[s->nfree++] = sk->idx;
		sk->ops->on_free(s, sk);
	}
}

void sock_table_teardown(struct shard *s)
{
	struct sock_send *ss;

	sock_reap(s);
	for (uint32_t i = 0; i < s->nsocks; i++) {
		struct sock *sk = s->socks[i];

		if (!sk)
			continue;
		sk->sqes = 0;
		sk->flags |= SK_F_CLOSING;
		if (list_linked(&sk->flush))
			list_del_init(&sk->flush);
		if (list_linked(&sk->rearm))
			list_del_init(&sk->rearm);
		if (list_linked(&sk->node))
			list_del_init(&sk->node);
		list_push_back(&s->dead, &sk->node);
	}
	sock_reap(s);
	while ((ss = s->free_sends)) {
		s->free_sends = ss->next;
		mi_free(ss);
	}
}

/* ---- completions ---- */

static void sock_error(struct shard *s, struct sock *sk, int err)
{
	if (!sk->error)
		sk->error = err;
	sk->ops->on_error(s, sk, err);
}

static void on_send(struct shard *s, struct sock *sk, int res)
{
	struct sock_send *ss = sk->send;
	uint32_t n = ss->n;

	sk->send = NULL;
	send_put(s, ss);
	sk->flags &= ~SK_F_SENDING;
	if (res < 0) {
		for (uint32_t i = 0; i < n; i++)
			out_release(s, &sk->out[sk->out_head + i]);
		sk->out_head += n;
		sk->out_n -= n;
		if (!(sk->flags & SK_F_CLOSING))
			sock_error(s, sk, res);
		return;
	}
	sk->out_bytes -= (size_t)res;
	while (res > 0 && sk->out_n) {
		struct seg *g = &sk->out[sk->out_head];

		if ((uint32_t)res >= g->len) {
			res -= (int)g->len;
			out_release(s, g);
			sk->out_head++;
			sk->out_n--;
		} else {
			g->p += res;
			g->len -= (uint32_t)res;
			res = 0;
		}
	}
	if (!sk->out_n) {
		/* Drained: an idle socket holds no output array. */
		sk->out_head = 0;
		mi_free(sk->out);
		sk->out = NULL;
		sk->out_cap = 0;
	}
	if (sk->flags & SK_F_CLOSING)
		return;
	sock_flush(s, sk);
	sk->ops->on_sent(s, sk);
}

static void on_recv(struct shard *s, struct sock *sk, struct io_uring_cqe *cqe)
{
	int res = cqe->res;
	int more = cqe->flags & IORING_CQE_F_MORE;

	if (cqe->flags & IORING_CQE_F_BUFFER) {
		uint32_t bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;

		bufring_taken(&s->br, bid);
		if (res <= 0 || (sk->flags & SK_F_CLOSING)) {
			bufring_unref(&s->br, bid);
		} else if (in_push(sk, bid, (uint32_t)res)) {
			/* Bytes we cannot keep: the stream is broken. */
			bufring_unref(&s->br, bid);
			res = -ENOMEM;
		}
	}
	if (!more) {
		sk->flags &= ~(SK_F_RECV_ARMED | SK_F_CANCELING);
		sk->sqes--;
	}
	if (sk->flags & SK_F_CLOSING)
		return;
	if (res == 0) {
		sk->flags |= SK_F_EOF;
	} else if (res == -ENOBUFS) {
		/* Back-pressure: re-arm once buffers come back. */
		if (!more)
			rearm_later(s, sk);
		return;
	} else if (res < 0 && res != -ECANCELED) {
		sock_error(s, sk, res);
		return;
	}
	sk->ops->on_input(s, sk);
	if (!(sk->flags & (SK_F_EOF | SK_F_RECV_OFF | SK_F_CLOSING | SK_F_RECV_ARMED)))
		arm_recv(s, sk);
}

void sock_complete(struct shard *s, struct sock *sk, struct io_uring_cqe *cqe)
{
	switch (sock_ud_op(cqe->user_data)) {
	case OP_RECV:
		on_recv(s, sk, cqe);
		break;
	case OP_SEND:
		sk->sqes--;
		on_send(s, sk, cqe->res);
		break;
	case OP_CONNECT:
		sk->sqes--;
		sk->flags &= ~SK_F_CONNECTING;
		if (!(sk->flags & SK_F_CLOSING))
			sk->ops->on_connect(s, sk, cqe->res);
		break;
	case OP_CANCEL:
		sk->sqes--;
		break;
	default:
		/* An op no socket submits: a bug, reported, never a leak. */
		counter_add(&s->metrics.bad_completions, 1);
		sock_drop_cqe(s, cqe);
		return;
	}
	sock_settle(s, sk);
}

void sock_drop_cqe(struct shard *s, struct io_uring_cqe *cqe)
{
	if (cqe->flags & IORING_CQE_F_BUFFER) {
		uint32_t bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;

		bufring_taken(&s->br, bid);
		bufring_unref(&s->br, bid);
	}
}

void sock_rearm_waiting(struct shard *s)
{
	struct list *pos, *tmp;

	/* Give a starved socket a recv only when its group has buffers back
	 * in quantity. */
	list_for_each_safe(pos, tmp, &s->rearm) {
		struct sock *sk = container_of(pos, struct sock, rearm);

		if (s->br.in_kernel[sk->ops->buf_group] <= s->br.nbufs / 8)
			continue;
		list_del_init(pos);
		sk->flags &= ~SK_F_REARM;
		if (!(sk->flags & SK_F_RECV_OFF))
			sock_want_input(s, sk);
	}
}
