#include "ringroute/shard.h"

#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ringroute/alloc.h"

#include "ringroute/conn.h"
#include "ringroute/proxy.h"

#define SHARD_ENTRIES 4096
#define SHARD_BUFS 1024 /* per group: 2 x 16 MiB per shard */
#define SHARD_BUFSZ (16 * 1024)
#define UD_LISTENER 0xffffffffu
#define UD_MSG 0xfffffffeu

uint64_t shard_now_ms(struct shard *s)
{
	(void)s;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct io_uring_sqe *shard_sqe(struct shard *s)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&s->ring);
	while (!sqe) {
		io_uring_submit(&s->ring);
		sqe = io_uring_get_sqe(&s->ring);
	}
	return sqe;
}

/* ---- socket table ---- */

int sock_register(struct shard *s, struct sock *sk, int fd, enum sock_kind kind)
{
	uint32_t idx;

	if (s->nfree) {
		idx = s->free_idx[--s->nfree];
	} else {
		if (s->nsocks == s->cap_socks) {
			uint32_t cap = s->cap_socks ? s->cap_socks * 2 : 1024;
			struct sock **t = mi_realloc(s->socks, cap * sizeof(*t));
			uint32_t *f;
			if (!t)
				return -ENOMEM;
			s->socks = t;
			f = mi_realloc(s->free_idx, cap * sizeof(*f));
			if (!f)
				return -ENOMEM;
			s->free_idx = f;
			s->cap_socks = cap;
		}
		idx = s->nsocks++;
		s->socks[idx] = NULL;
	}
	sk->fd = fd;
	sk->idx = idx;
	sk->gen++;
	sk->kind = (uint8_t)kind;
	sk->flags = 0;
	sk->sqes = 0;
	sk->error = 0;
	list_init(&sk->node);
	list_init(&sk->rearm);
	list_init(&sk->flush);
	s->socks[idx] = sk;
	return 0;
}

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
	ncap = *cap ? *cap * 2 : 8;
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
	bufring_ref(&s->br, bid);
	ret = out_push(sk, g);
	if (ret)
		bufring_unref(&s->br, bid);
	return ret;
}

void sock_flush(struct shard *s, struct sock *sk)
{
	struct io_uring_sqe *sqe;
	uint32_t n;

	if (sk->flags & (SK_F_SENDING | SK_F_CLOSING | SK_F_CONNECTING) || !sk->out_n)
		return;
	n = sk->out_n < SOCK_IOV_MAX ? sk->out_n : SOCK_IOV_MAX;
	for (uint32_t i = 0; i < n; i++) {
		struct seg *g = &sk->out[sk->out_head + i];
		sk->iov[i].iov_base = (void *)g->p;
		sk->iov[i].iov_len = g->len;
	}
	memset(&sk->msg, 0, sizeof(sk->msg));
	sk->msg.msg_iov = sk->iov;
	sk->msg.msg_iovlen = n;
	sk->iov_n = n;
	sqe = shard_sqe(s);
	io_uring_prep_sendmsg(sqe, sk->fd, &sk->msg, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, shard_ud(OP_SEND, sk));
	sk->flags |= SK_F_SENDING;
	sk->sqes++;
}

void sock_flush_later(struct shard *s, struct sock *sk)
{
	if (!list_linked(&sk->flush) && !(sk->flags & SK_F_CLOSING))
		list_push_back(&s->flushq, &sk->flush);
}

static void flush_deferred(struct shard *s)
{
	struct list *pos;
	while ((pos = list_pop_front(&s->flushq)))
		sock_flush(s, container_of(pos, struct sock, flush));
}

static void arm_recv(struct shard *s, struct sock *sk)
{
	struct io_uring_sqe *sqe = shard_sqe(s);
	io_uring_prep_recv_multishot(sqe, sk->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = sk->kind == SOCK_CLIENT ? 0 : 1;
	io_uring_sqe_set_data64(sqe, shard_ud(OP_RECV, sk));
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
	sqe = shard_sqe(s);
	io_uring_prep_cancel64(sqe, shard_ud(OP_RECV, sk), 0);
	io_uring_sqe_set_data64(sqe, shard_ud(OP_CANCEL, sk));
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

void sock_in_consume(struct shard *s, struct sock *sk, uint32_t n)
{
	struct inbuf *b = &sk->in[sk->in_head];
	b->off += n;
	b->len -= n;
	if (b->len == 0) {
		in_release(s, b);
		sk->in_head++;
		if (--sk->in_n == 0)
			sk->in_head = 0;
	}
}

void sock_in_clear(struct shard *s, struct sock *sk)
{
	while (sk->in_n) {
		in_release(s, &sk->in[sk->in_head]);
		sk->in_head++;
		sk->in_n--;
	}
	sk->in_head = 0;
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
	shutdown(sk->fd, SHUT_RDWR);
	if (sk->sqes) {
		sqe = shard_sqe(s);
		io_uring_prep_cancel_fd(sqe, sk->fd, IORING_ASYNC_CANCEL_ALL);
		io_uring_sqe_set_data64(sqe, shard_ud(OP_CANCEL, sk));
		sk->sqes++;
	}
	/* Segments not in a send in flight can go now. */
	{
		uint32_t keep = (sk->flags & SK_F_SENDING) ? sk->iov_n : 0;
		for (uint32_t i = keep; i < sk->out_n; i++)
			out_release(s, &sk->out[sk->out_head + i]);
		sk->out_n = keep;
	}
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

static void free_dead(struct shard *s)
{
	struct list *pos;
	while ((pos = list_pop_front(&s->dead))) {
		struct sock *sk = container_of(pos, struct sock, node);
		for (uint32_t i = 0; i < sk->out_n; i++)
			out_release(s, &sk->out[sk->out_head + i]);
		sk->out_n = 0;
		mi_free(sk->out);
		sk->out = NULL;
		sk->out_cap = sk->out_head = 0;
		sock_in_clear(s, sk);
		mi_free(sk->in);
		sk->in = NULL;
		sk->in_cap = 0;
		close(sk->fd);
		s->socks[sk->idx] = NULL;
		s->free_idx[s->nfree++] = sk->idx;
		if (sk->kind == SOCK_CLIENT)
			client_free(s, sk);
		else
			upstream_free(s, sk);
	}
}

/* ---- completions ---- */

/* The owner's hooks, by socket kind. */
static void sock_on_error(struct shard *s, struct sock *sk, int err)
{
	sk->error = err;
	if (sk->kind == SOCK_CLIENT)
		client_on_error(s, sk, err);
	else
		upstream_on_error(s, sk, err);
}

static void sock_on_input(struct shard *s, struct sock *sk)
{
	if (sk->kind == SOCK_CLIENT)
		client_on_input(s, sk);
	else
		upstream_on_input(s, sk);
}

static void on_send(struct shard *s, struct sock *sk, int res)
{
	uint32_t n = sk->iov_n;
	sk->flags &= ~SK_F_SENDING;
	sk->iov_n = 0;
	if (res < 0) {
		for (uint32_t i = 0; i < n; i++)
			out_release(s, &sk->out[sk->out_head + i]);
		sk->out_head += n;
		sk->out_n -= n;
		if (!(sk->flags & SK_F_CLOSING))
			sock_on_error(s, sk, res);
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
	if (!sk->out_n)
		sk->out_head = 0;
	if (sk->flags & SK_F_CLOSING)
		return;
	sock_flush(s, sk);
	if (sk->kind == SOCK_CLIENT)
		client_on_sent(s, sk);
	else
		upstream_on_sent(s, sk);
}

static void on_recv(struct shard *s, struct sock *sk, struct io_uring_cqe *cqe)
{
	int res = cqe->res;
	int more = cqe->flags & IORING_CQE_F_MORE;

	if (cqe->flags & IORING_CQE_F_BUFFER) {
		uint32_t bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
		bufring_taken(&s->br, bid);
		if (res <= 0 || (sk->flags & SK_F_CLOSING) || in_push(sk, bid, (uint32_t)res))
			bufring_unref(&s->br, bid);
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
		if (!more && !list_linked(&sk->rearm)) {
			sk->flags |= SK_F_REARM;
			list_push_back(&s->rearm, &sk->rearm);
		}
		return;
	} else if (res < 0 && res != -ECANCELED) {
		sock_on_error(s, sk, res);
		return;
	}
	sock_on_input(s, sk);
	if (!(sk->flags & (SK_F_EOF | SK_F_RECV_OFF | SK_F_CLOSING | SK_F_RECV_ARMED)))
		arm_recv(s, sk);
}

static void on_accept(struct shard *s, struct io_uring_cqe *cqe)
{
	if (cqe->res >= 0) {
		if (s->stopping)
			close(cqe->res);
		else
			client_accept(s, cqe->res);
	}
	if (!(cqe->flags & IORING_CQE_F_MORE) && !s->stopping) {
		struct io_uring_sqe *sqe = shard_sqe(s);
		io_uring_prep_multishot_accept(sqe, s->listen_fd, NULL, NULL, 0);
		io_uring_sqe_set_data64(sqe, (uint64_t)OP_ACCEPT | ((uint64_t)UD_LISTENER << 32));
	}
}

static void on_msg(struct shard *s, int kind)
{
	switch (kind) {
	case MSG_CONFIG: {
		struct config *next = atomic_exchange(&s->next_config, NULL);
		struct config *old = s->config;
		if (!next)
			break;
		s->config = next;
		if (old) {
			client_config_changed(s, old);
			config_unref(old);
		}
		client_retry_queued(s);
		break;
	}
	case MSG_WAKE:
		client_retry_queued(s);
		break;
	case MSG_STOP:
		s->stopping = 1;
		client_shard_stop(s);
		if (s->listen_fd >= 0) {
			struct io_uring_sqe *sqe = shard_sqe(s);
			io_uring_prep_cancel_fd(sqe, s->listen_fd, IORING_ASYNC_CANCEL_ALL);
			io_uring_sqe_set_data64(sqe, (uint64_t)OP_CANCEL | ((uint64_t)UD_MSG << 32));
		}
		break;
	}
}

static void dispatch(struct shard *s, struct io_uring_cqe *cqe)
{
	uint64_t ud = cqe->user_data;
	enum op op = (enum op)(ud & 0xff);
	uint32_t gen = (uint32_t)(ud >> 8) & 0xffffff;
	uint32_t idx = (uint32_t)(ud >> 32);
	struct sock *sk;

	if (op == OP_MSG) {
		on_msg(s, cqe->res);
		return;
	}
	if (idx == UD_LISTENER) {
		on_accept(s, cqe);
		return;
	}
	if (idx == UD_MSG)
		return;
	sk = idx < s->nsocks ? s->socks[idx] : NULL;
	if (!sk || (sk->gen & 0xffffff) != gen) {
		/* Cannot happen while sockets outlive their SQEs; never leak a buffer. */
		if (cqe->flags & IORING_CQE_F_BUFFER) {
			uint32_t bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
			bufring_taken(&s->br, bid);
			bufring_unref(&s->br, bid);
		}
		return;
	}
	switch (op) {
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
			upstream_on_connect(s, sk, cqe->res);
		break;
	case OP_CANCEL:
		sk->sqes--;
		break;
	default:
		break;
	}
	sock_settle(s, sk);
}

static void rearm_waiting(struct shard *s)
{
	struct list *pos;
	struct list *tmp;
	/* Give a starved socket a recv only when its group has buffers back
	 * in quantity. */
	list_for_each_safe(pos, tmp, &s->rearm) {
		struct sock *sk = container_of(pos, struct sock, rearm);
		unsigned g = sk->kind == SOCK_CLIENT ? 0 : 1;
		if (s->br.in_kernel[g] <= s->br.nbufs / 8)
			continue;
		list_del_init(pos);
		sk->flags &= ~SK_F_REARM;
		if (!(sk->flags & SK_F_RECV_OFF))
			sock_want_input(s, sk);
	}
}

static int shard_init_ring(struct shard *s)
{
	struct io_uring_params prm;
	int ret;

	memset(&prm, 0, sizeof(prm));
	prm.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE |
		    IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN;
	prm.cq_entries = SHARD_ENTRIES * 8;
	ret = io_uring_queue_init_params(SHARD_ENTRIES, &s->ring, &prm);
	if (ret == -EINVAL) {
		/* Older kernels: no DEFER_TASKRUN / SINGLE_ISSUER. */
		memset(&prm, 0, sizeof(prm));
		prm.flags = IORING_SETUP_CQSIZE;
		prm.cq_entries = SHARD_ENTRIES * 8;
		ret = io_uring_queue_init_params(SHARD_ENTRIES, &s->ring, &prm);
	}
	if (ret)
		return ret;
	ret = bufring_init(&s->br, &s->ring, SHARD_BUFS, SHARD_BUFSZ);
	if (ret) {
		io_uring_queue_exit(&s->ring);
		return ret;
	}
	return 0;
}

static void *shard_main(void *arg)
{
	struct shard *s = arg;
	struct io_uring_sqe *sqe;
	cpu_set_t set;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

	if (s->proxy->opt.pin) {
		CPU_ZERO(&set);
		CPU_SET(s->id % (unsigned)(ncpu > 0 ? ncpu : 1), &set);
		pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	}

	s->init_err = shard_init_ring(s);
	if (s->init_err) {
		sem_post(&s->started);
		return NULL;
	}
	timer_wheel_init(&s->tw, shard_now_ms(s));
	client_shard_init(s);
	sqe = shard_sqe(s);
	io_uring_prep_multishot_accept(sqe, s->listen_fd, NULL, NULL, 0);
	io_uring_sqe_set_data64(sqe, (uint64_t)OP_ACCEPT | ((uint64_t)UD_LISTENER << 32));
	io_uring_submit(&s->ring);
	atomic_store(&s->ready, 1);
	sem_post(&s->started);

	for (;;) {
		struct io_uring_cqe *cqe;
		struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = 2 * 1000 * 1000};
		unsigned head, n = 0;

		if (s->retry_pending)
			client_retry_queued(s);
		free_dead(s);
		if (!list_empty(&s->rearm))
			rearm_waiting(s);
		flush_deferred(s);
		if (s->stopping && s->nclients == 0)
			break;
		io_uring_submit_and_wait_timeout(&s->ring, &cqe, 1,
						 (s->tw.armed || s->stopping) ? &ts : NULL, NULL);
		io_uring_for_each_cqe(&s->ring, head, cqe) {
			dispatch(s, cqe);
			n++;
			/* A slot this completion freed goes to the next waiter now,
			 * and that request leaves now, not after the rest of the
			 * batch: the replica idles for as short a time as we can
			 * make it (bench/compare --scenario inference). Responses
			 * to clients wait in flushq, so the replica's request
			 * is the first thing sent. */
			if (s->retry_pending && client_retry_queued(s) > 0)
				io_uring_submit(&s->ring);
		}
		io_uring_cq_advance(&s->ring, n);
		if (s->tw.armed)
			timer_advance(&s->tw, shard_now_ms(s), s);
	}
	/* Drained (or forced): free every socket still open. */
	free_dead(s);
	for (uint32_t i = 0; i < s->nsocks; i++) {
		struct sock *sk = s->socks[i];
		if (!sk)
			continue;
		sk->sqes = 0;
		sk->flags |= SK_F_CLOSING;
		if (list_linked(&sk->flush))
			list_del_init(&sk->flush);
		if (list_linked(&sk->node))
			list_del_init(&sk->node);
		list_push_back(&s->dead, &sk->node);
	}
	free_dead(s);
	client_shard_teardown(s);
	atomic_store(&s->exited, 1);
	return NULL;
}

int shard_create(struct proxy *p, unsigned id, const struct sockaddr_in *addr,
		 struct shard **out)
{
	struct shard *s = mi_zalloc_aligned(sizeof(*s), 64);
	int one = 1, ret;

	if (!s)
		return -ENOMEM;
	s->id = id;
	s->proxy = p;
	if (getrandom(&s->rng, sizeof(s->rng), 0) != sizeof(s->rng))
		s->rng = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
	s->rng ^= 0x9E3779B97F4A7C15ull * (id + 1);
	if (!s->rng)
		s->rng = 1; /* xorshift must not start at 0 */
	list_init(&s->rearm);
	list_init(&s->flushq);
	list_init(&s->dead);
	list_init(&s->queued);
	list_init(&s->clients);
	shard_metrics_init(&s->metrics);
	sem_init(&s->started, 0, 0);
	s->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s->listen_fd < 0) {
		ret = -errno;
		goto err;
	}
	setsockopt(s->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(s->listen_fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (bind(s->listen_fd, (const struct sockaddr *)addr, sizeof(*addr)) ||
	    listen(s->listen_fd, 4096)) {
		ret = -errno;
		goto err_fd;
	}
	*out = s;
	return 0;
err_fd:
	close(s->listen_fd);
err:
	shard_metrics_destroy(&s->metrics);
	sem_destroy(&s->started);
	mi_free(s);
	return ret;
}

int shard_start(struct shard *s)
{
	int ret = pthread_create(&s->thread, NULL, shard_main, s);
	if (ret)
		return -ret;
	sem_wait(&s->started);
	if (s->init_err) {
		pthread_join(s->thread, NULL);
		s->thread = 0;
		return s->init_err;
	}
	return 0;
}

void shard_join_and_destroy(struct shard *s)
{
	struct config *c;
	if (s->thread)
		pthread_join(s->thread, NULL);
	if (s->listen_fd >= 0)
		close(s->listen_fd);
	if (atomic_load(&s->ready)) {
		bufring_destroy(&s->br, &s->ring);
		io_uring_queue_exit(&s->ring);
	}
	c = atomic_exchange(&s->next_config, NULL);
	if (c)
		config_unref(c);
	if (s->config)
		config_unref(s->config);
	mi_free(s->socks);
	mi_free(s->free_idx);
	shard_metrics_destroy(&s->metrics);
	sem_destroy(&s->started);
	mi_free(s);
}
