/* mock-replica: one event loop (epoll + timer heap) per --threads. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "mock.h"

/* ------------------------------------------------------------------- loop */

static void loop_timers(struct mock_loop *l)
{
	while (l->nheap && l->heap[0]->deadline <= l->now) {
		struct mock_timer *t = l->heap[0];
		struct conn *c;
		struct req *r;

		heap_remove(l, t);
		if (t->kind == TIMER_LINGER) {
			conn_close(l, container_of(t, struct conn, linger));
			continue;
		}
		if (t->kind == TIMER_LLM) {
			llm_step_done(l);
			continue;
		}
		r = container_of(t, struct req, timer);
		c = r->conn;
		if (r->state == RS_WAITING) {
			r->state = RS_READY;
		} else if (r->state == RS_STREAMING) {
			if (emit_next_chunk(l, c, r) < 0) {
				conn_close(l, c);
				continue;
			}
		}
		conn_kick(l, c);
	}
}

static void loop_reap(struct mock_loop *l)
{
	while (!list_empty(&l->graveyard)) {
		struct conn *c = container_of(list_pop_front(&l->graveyard), struct conn, node);
		free(c->out);
		free(c);
	}
}

static int loop_wait(struct mock_loop *l, struct epoll_event *evs)
{
	struct timespec ts, *tp = NULL;
	uint64_t rel = 0;
	int ms = -1, n;

	if (l->nheap) {
		uint64_t d = l->heap[0]->deadline;
		rel = d > l->now ? d - l->now : 0;
		ts.tv_sec = (time_t)(rel / 1000000000ull);
		ts.tv_nsec = (long)(rel % 1000000000ull);
		tp = &ts;
	}
	if (!l->no_pwait2) {
		n = epoll_pwait2(l->epfd, evs, MOCK_MAX_EVENTS, tp, NULL);
		if (n >= 0 || errno != ENOSYS)
			return n;
		l->no_pwait2 = 1;
	}
	if (tp)
		ms = rel / 1000000ull >= INT_MAX ? INT_MAX : (int)((rel + 999999ull) / 1000000ull);
	return epoll_wait(l->epfd, evs, MOCK_MAX_EVENTS, ms);
}

void *loop_run(void *arg)
{
	struct mock_loop *l = arg;
	struct mock_ctx *ctx = l->ctx;
	struct epoll_event evs[MOCK_MAX_EVENTS];

	/* The service delay is an epoll_pwait2 timeout. With the default 50 us timer
	 * slack the kernel may fire it up to 50 us late, so "--delay-ms 2" measured
	 * about 2.04 ms a request: replicas slower than configured, and every
	 * "fraction of ideal" in bench/compare low by ~2%. 1 ns of slack keeps the
	 * delay what the command line says. Best effort: on failure the delay is
	 * merely a little long. */
	(void)prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);

	while (!l->stop) {
		int n;

		l->now = mono_ns();
		n = loop_wait(l, evs);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "mock-replica: epoll_wait: %s\n", strerror(errno));
			atomic_store(&ctx->failed, 1);
			pthread_kill(ctx->main_thread, SIGTERM);
			break;
		}
		l->now = mono_ns();
		for (int i = 0; i < n; i++) {
			void *p = evs[i].data.ptr;
			if (p == &l->lfd)
				loop_accept(l);
			else if (p == &ctx->stop_fd)
				l->stop = 1;
			else
				conn_on_event(l, p, evs[i].events);
		}
		loop_timers(l);
		loop_reap(l);
	}
	return NULL;
}

/* Set up l around its listening socket lfd (taken over). Returns 0/-errno. */
int loop_init(struct mock_ctx *ctx, struct mock_loop *l, unsigned idx, int lfd)
{
	struct epoll_event ev;
	int err;

	memset(l, 0, sizeof(*l));
	l->epfd = -1;
	l->ctx = ctx;
	l->idx = idx;
	l->lfd = lfd;
	l->rng = mono_ns() ^ (0x9E3779B97F4A7C15ull * (idx + 1)) ^ (uint64_t)getpid();
	if (!l->rng)
		l->rng = 1;
	list_init(&l->conns);
	list_init(&l->graveyard);
	list_init(&l->free_reqs);
	l->rbuf = malloc(MOCK_READ_BUF);
	if (!l->rbuf)
		return -ENOMEM;
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0)
		return -errno;
	ev.events = EPOLLIN;
	ev.data.ptr = &l->lfd;
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, lfd, &ev) < 0)
		goto fail;
	ev.events = EPOLLIN;
	ev.data.ptr = &ctx->stop_fd;
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, ctx->stop_fd, &ev) < 0)
		goto fail;
	if (ctx->opt.llm)
		return llm_engine_init(l);
	return 0;
fail:
	err = -errno;
	return err;
}

/* Free everything l owns (connections included). Safe on a partly set up l. */
void loop_destroy(struct mock_loop *l)
{
	while (!list_empty(&l->conns))
		conn_close(l, container_of(l->conns.next, struct conn, node));
	loop_reap(l);
	llm_engine_destroy(l);
	while (!list_empty(&l->free_reqs)) {
		struct req *r = container_of(list_pop_front(&l->free_reqs), struct req, node);
		free(r->scratch);
		free(r->hdrs);
		llm_req_recycle(r, 0);
		free(r);
	}
	free(l->heap);
	l->heap = NULL;
	free(l->rbuf);
	l->rbuf = NULL;
	free(l->tmp);
	l->tmp = NULL;
	if (l->epfd >= 0)
		close(l->epfd);
	if (l->lfd >= 0)
		close(l->lfd);
	l->epfd = l->lfd = -1;
}
