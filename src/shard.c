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

#include "ringroute/clock.h"
#include "ringroute/h1.h"
#include "ringroute/proxy.h"
#include "ringroute/queue.h"
#include "ringroute/request.h"
#include "ringroute/sock.h"
#include "ringroute/upstream.h"
#include "ringroute/log.h"

#define SHARD_ENTRIES 4096
#define SHARD_BUFS 1024 /* per group: 2 x 16 MiB per shard */
#define SHARD_BUFSZ (16 * 1024)

/* ---- accept ---- */

#define ACCEPT_BACKOFF_MIN_MS 10u
#define ACCEPT_BACKOFF_MAX_MS 1000u

static void accept_arm(struct shard *s)
{
	struct io_uring_sqe *sqe;

	if (s->accept_armed || s->stopping || s->listen_fd < 0)
		return;
	sqe = sock_sqe(s);
	if (!sqe) {
		/* Try again shortly; the backlog holds the clients meanwhile. */
		timer_arm(&s->tw, &s->accept_timer, ACCEPT_BACKOFF_MIN_MS);
		return;
	}
	io_uring_prep_multishot_accept(sqe, s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, sock_ud_raw(OP_ACCEPT, SOCK_UD_LISTENER));
	s->accept_armed = 1;
}

static void accept_timer_cb(struct timer *t, void *ctx)
{
	struct shard *s = ctx;

	(void)t;
	s->accept_paused = 0;
	accept_arm(s);
}

/* Out of descriptors (or memory): stop accepting instead of re-arming at
 * once, which would spin on the same error. Accepting resumes when one of
 * our sockets closes (shard_loop) or, for descriptors other parts of the
 * process hold, after a back-off doubling from 10 ms to 1 s. */
static void accept_pause(struct shard *s)
{
	if (!s->accept_paused) {
		counter_add(&s->metrics.accept_pauses, 1);
		log_warn("shard %u: accept paused: out of file descriptors", s->id);
	}
	s->accept_paused = 1;
	s->accept_backoff_ms = s->accept_backoff_ms ? s->accept_backoff_ms * 2 : ACCEPT_BACKOFF_MIN_MS;
	if (s->accept_backoff_ms > ACCEPT_BACKOFF_MAX_MS)
		s->accept_backoff_ms = ACCEPT_BACKOFF_MAX_MS;
	timer_arm(&s->tw, &s->accept_timer, s->accept_backoff_ms);
}

static void on_accept(struct shard *s, struct io_uring_cqe *cqe)
{
	int more = cqe->flags & IORING_CQE_F_MORE;

	if (!more)
		s->accept_armed = 0;
	if (cqe->res >= 0) {
		s->accept_backoff_ms = 0;
		if (s->stopping)
			close(cqe->res);
		else
			h1_accept(s, cqe->res);
	} else if (cqe->res == -EMFILE || cqe->res == -ENFILE || cqe->res == -ENOMEM ||
		   cqe->res == -ENOBUFS) {
		if (more) {
			/* Still armed: cancel it so it does not spin. */
			struct io_uring_sqe *sqe = sock_sqe(s);
			if (sqe) {
				io_uring_prep_cancel64(sqe, sock_ud_raw(OP_ACCEPT, SOCK_UD_LISTENER), 0);
				io_uring_sqe_set_data64(sqe, sock_ud_raw(OP_CANCEL, SOCK_UD_NONE));
			}
		}
		accept_pause(s);
		return;
	}
	if (!s->accept_armed && !s->accept_paused)
		accept_arm(s);
}

/* ---- messages ---- */

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
			upstream_config_changed(s, old);
			config_unref(old);
		}
		req_retry_queued(s);
		break;
	}
	case MSG_WAKE:
		req_retry_queued(s);
		break;
	case MSG_DRAIN:
		s->draining = 1;
		break;
	case MSG_PING:
		/* Answered from the loop itself: a shard stuck anywhere leaves
		 * it unanswered and main stops pinging systemd. */
		atomic_fetch_add_explicit(&s->pongs, 1, memory_order_relaxed);
		break;
	case MSG_ABORT:
		s->stopping = 1;
		s->draining = 1;
		h1_shard_abort(s);
		break;
	case MSG_STOP:
		s->stopping = 1;
		s->draining = 1;
		h1_shard_stop(s);
		timer_cancel(&s->tw, &s->accept_timer);
		if (s->listen_fd >= 0) {
			struct io_uring_sqe *sqe = sock_sqe(s);
			/* A listening socket shut down leaves its SO_REUSEPORT
			 * group at once: new connections are refused (or go to
			 * a shard still listening), not left in a backlog nobody
			 * accepts; the accept in flight ends with an error. */
			shutdown(s->listen_fd, SHUT_RDWR);
			if (sqe) {
				io_uring_prep_cancel_fd(sqe, s->listen_fd, IORING_ASYNC_CANCEL_ALL);
				io_uring_sqe_set_data64(sqe, sock_ud_raw(OP_CANCEL, SOCK_UD_NONE));
			}
		}
		break;
	default:
		log_error("shard %u: unknown message %d", s->id, kind);
		break;
	}
}

/* The one place completions are decoded. */
static void dispatch(struct shard *s, struct io_uring_cqe *cqe)
{
	uint64_t ud = cqe->user_data;
	enum op op = sock_ud_op(ud);
	uint32_t idx = sock_ud_idx(ud);
	struct sock *sk;

	if (op == OP_MSG) {
		on_msg(s, cqe->res);
		return;
	}
	if (idx == SOCK_UD_LISTENER && op == OP_ACCEPT) {
		on_accept(s, cqe);
		return;
	}
	if (idx == SOCK_UD_NONE)
		return; /* cancels and messages we sent: nothing to do */
	sk = sock_lookup(s, ud);
	if (!sk) {
		/* A stale completion (slot freed or reused): never leak a buffer. */
		sock_drop_cqe(s, cqe);
		return;
	}
	sock_complete(s, sk, cqe);
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
	cpu_set_t set;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	char name[16];

	/* Named for top -H and perf, and so a test can find a shard's thread. */
	snprintf(name, sizeof(name), "rr-shard%u", s->id);
	pthread_setname_np(pthread_self(), name);
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
	timer_wheel_init(&s->tw, clock_now_ms());
	req_shard_init(s);
	accesslog_shard_init(&s->alog, s->proxy->alog, s->id);
	timer_init(&s->accept_timer, accept_timer_cb);
	accept_arm(s);
	io_uring_submit(&s->ring);
	atomic_store(&s->ready, 1);
	sem_post(&s->started);

	for (;;) {
		struct io_uring_cqe *cqe;
		struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = 2 * 1000 * 1000};
		unsigned head, n = 0;
		int reaped;

		if (s->retry_pending)
			req_retry_queued(s);
		reaped = !list_empty(&s->dead);
		sock_reap(s);
		if (reaped && s->accept_paused) {
			/* A descriptor came back: accept again now. */
			timer_cancel(&s->tw, &s->accept_timer);
			s->accept_paused = 0;
			accept_arm(s);
		}
		if (!list_empty(&s->rearm))
			sock_rearm_waiting(s);
		s->flush_retry = 0;
		sock_flush_deferred(s);
		if (s->stopping && s->nclients == 0)
			break;
		io_uring_submit_and_wait_timeout(&s->ring, &cqe, 1,
						 (s->tw.armed || s->stopping || s->flush_retry ||
						  !list_empty(&s->rearm)) ? &ts : NULL,
						 NULL);
		/* The wheel's clock moves on before any completion arms a timer:
		 * after a long idle wait it would otherwise be stale, and a
		 * timer armed now would fire at once. */
		timer_advance(&s->tw, clock_now_ms(), s);
		io_uring_for_each_cqe(&s->ring, head, cqe) {
			dispatch(s, cqe);
			n++;
			/* A slot this completion freed goes to the next waiter now,
			 * and that request leaves now, not after the rest of the
			 * batch: the replica idles for as short a time as we can
			 * make it (bench/compare --scenario inference). Responses
			 * to clients wait in flushq, so the replica's request
			 * is the first thing sent. */
			if (s->retry_pending && req_retry_queued(s) > 0)
				io_uring_submit(&s->ring);
		}
		io_uring_cq_advance(&s->ring, n);
	}
	/* Drained (or forced): free every socket still open. */
	sock_table_teardown(s);
	queue_shard_teardown(s);
	h1_shard_teardown(s);
	accesslog_shard_teardown(&s->alog);
	atomic_store(&s->exited, 1);
	return NULL;
}

int shard_create(struct proxy *p, unsigned id, const struct rr_addr *addr,
		 struct shard **out)
{
	struct shard *s = mi_zalloc_aligned(sizeof(*s), 64);
	int one = 1, ret;

	if (!s)
		return -ENOMEM;
	s->id = id;
	s->proxy = p;
	s->header_timeout_ms = p->opt.header_timeout_ms ? p->opt.header_timeout_ms
							: H1_DEFAULT_HEADER_TIMEOUT_MS;
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
	metrics_shard_init(&s->metrics);
	sem_init(&s->started, 0, 0);
	s->listen_fd = socket(addr->u.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s->listen_fd < 0) {
		ret = -errno;
		goto err;
	}
	setsockopt(s->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(s->listen_fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (bind(s->listen_fd, &addr->u.sa, addr->len) ||
	    listen(s->listen_fd, 4096)) {
		ret = -errno;
		goto err_fd;
	}
	*out = s;
	return 0;
err_fd:
	close(s->listen_fd);
err:
	metrics_shard_destroy(&s->metrics);
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
	mi_free(s->sock_gen);
	metrics_shard_destroy(&s->metrics);
	sem_destroy(&s->started);
	mi_free(s);
}
