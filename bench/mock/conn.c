/* mock-replica: connections: reading and parsing input, producing and
 * writing responses in request order, closing and lingering. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mock.h"

/* ------------------------------------------------------------ connections */

void conn_close(struct mock_loop *l, struct conn *c)
{
	if (c->flags & CONN_FL_DEAD)
		return;
	heap_remove(l, &c->linger);
	llm_conn_gone(c);
	while (!list_empty(&c->reqs))
		req_release(l, c, container_of(c->reqs.next, struct req, node));
	c->cur = NULL;
	close(c->fd);
	c->fd = -1;
	c->flags |= CONN_FL_DEAD;
	list_del_init(&c->node);
	list_push_back(&l->graveyard, &c->node);
}

/* Produce the responses that may go now, in order. Returns 1 when it stopped
 * because too much output is pending, 0 otherwise, -ENOMEM. */
static int conn_pump(struct mock_loop *l, struct conn *c)
{
	struct list *pos, *tmp;

	list_for_each_safe(pos, tmp, &c->reqs) {
		struct req *r = container_of(pos, struct req, node);
		int err;

		if (r->state == RS_FLUSHING)
			continue;
		if (r->state != RS_READY && r->state != RS_LLM)
			break;
		if (out_pending(c) >= MOCK_OUT_HIGH)
			return 1;
		if (r->state == RS_LLM) {
			/* tokens so far; it stays first in line until complete */
			err = llm_emit(l, c, r);
			if (err)
				return err;
			if (r->state != RS_FLUSHING)
				break;
			continue;
		}
		if (r->flags & REQ_FL_RESET) {
			/* Parsing stopped after it, so it is the last request. */
			c->flags |= CONN_FL_NO_READ | CONN_FL_CLOSING | CONN_FL_ABORT;
			req_release(l, c, r);
			break;
		}
		err = emit(l, c, r);
		if (err)
			return err;
		if (r->state != RS_FLUSHING)
			break;
	}
	return 0;
}

/* Write what is pending. Responses wholly covered by what is about to be
 * written are counted as completed before the write (so that a client that
 * reacts to one at once never sees it still in flight); counting is taken
 * back for those the write did not finish. Returns 0, 1 when the connection
 * should now be closed (its last response is out), or -errno. */
static int conn_flush(struct mock_loop *l, struct conn *c)
{
	struct mock_ctx *ctx = l->ctx;
	struct list *pos, *tmp;
	int err = 0;

	for (pos = c->reqs.next; pos != &c->reqs; pos = pos->next) {
		struct req *r = container_of(pos, struct req, node);
		if (r->state != RS_FLUSHING)
			break;
		if (!(r->flags & REQ_FL_ACCOUNTED))
			req_account(ctx, r, 1);
	}
	while (out_pending(c)) {
		ssize_t n = write(c->fd, c->out + c->out_off, out_pending(c));
		if (n >= 0) {
			c->out_off += (size_t)n;
			c->out_written += (uint64_t)n;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			err = -errno;
		break;
	}
	if (c->out_off == c->out_len) {
		c->out_off = c->out_len = 0;
		if (c->out_cap > MOCK_KEEP_OUT) {
			free(c->out);
			c->out = NULL;
			c->out_cap = 0;
		}
	}
	list_for_each_safe(pos, tmp, &c->reqs) {
		struct req *r = container_of(pos, struct req, node);
		if (r->state != RS_FLUSHING)
			break;
		if (r->end_mark <= c->out_written) {
			list_del_init(&r->node);
			c->nreq--;
			req_put(l, r);
		} else if (r->flags & REQ_FL_ACCOUNTED) {
			req_account(ctx, r, -1);
		}
	}
	if (err)
		return err;
	if ((c->flags & CONN_FL_CLOSING) && !out_pending(c) && list_empty(&c->reqs))
		return 1;
	return 0;
}

static void conn_update(struct mock_loop *l, struct conn *c)
{
	uint32_t want = 0;

	if (c->flags & CONN_FL_LINGER) {
		want = EPOLLIN;
	} else {
		if (!(c->flags & CONN_FL_NO_READ) && c->nreq < MOCK_MAX_PIPELINE &&
		    out_pending(c) < MOCK_OUT_HIGH)
			want |= EPOLLIN;
		if (!(c->flags & CONN_FL_EOF))
			want |= EPOLLRDHUP;
		if (out_pending(c))
			want |= EPOLLOUT;
	}
	if (want != c->events) {
		struct epoll_event ev = { .events = want, .data.ptr = c };
		if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) {
			conn_close(l, c);
			return;
		}
		c->events = want;
	}
}

/* The last response is out: close at once (abort), or shut our side and wait
 * briefly for the peer's EOF so that unread pipelined input does not turn
 * the close into a reset that could destroy the response in flight. */
static void conn_finish(struct mock_loop *l, struct conn *c)
{
	if (c->flags & (CONN_FL_ABORT | CONN_FL_EOF)) {
		conn_close(l, c);
		return;
	}
	shutdown(c->fd, SHUT_WR);
	c->flags |= CONN_FL_LINGER;
	c->linger.deadline = l->now + MOCK_LINGER_NS;
	if (heap_push(l, &c->linger) < 0) {
		conn_close(l, c);
		return;
	}
	conn_update(l, c);
}

/* Move c forward after anything happened to it: produce what may go, write
 * it, close or update the epoll interest. c may be dead on return. */
void conn_kick(struct mock_loop *l, struct conn *c)
{
	int rc;

	if (c->flags & (CONN_FL_DEAD | CONN_FL_LINGER))
		return;
	for (;;) {
		int more = conn_pump(l, c);
		if (more < 0)
			goto close;
		rc = conn_flush(l, c);
		if (rc < 0)
			goto close;
		if (rc > 0) {
			conn_finish(l, c);
			return;
		}
		if (!more || out_pending(c) >= MOCK_OUT_HIGH)
			break;
	}
	conn_update(l, c);
	return;
close:
	conn_close(l, c);
}

/* A parse error: answer it in turn with 400 (431 for an oversized head) and
 * close. The request being parsed, if any, becomes the error response. */
static void conn_parse_error(struct mock_loop *l, struct conn *c)
{
	struct req *r = c->cur;

	c->cur = NULL;
	c->flags |= CONN_FL_NO_READ;
	if (!r) {
		r = req_get(l);
		if (!r) {
			conn_close(l, c);
			return;
		}
		r->conn = c;
		list_push_back(&c->reqs, &r->node);
		c->nreq++;
	}
	if (r->flags & REQ_FL_COUNTED) {
		atomic_fetch_sub_explicit(&l->ctx->inflight, 1, memory_order_relaxed);
		r->flags &= ~REQ_FL_COUNTED;
	}
	r->kind = REQ_ERROR;
	r->status = r->err_status ? r->err_status : 400;
	r->flags &= ~(REQ_FL_RESET | REQ_FL_HEAD | REQ_FL_NO_BODY | REQ_FL_KA_HDR);
	r->flags |= REQ_FL_LAST;
	r->state = RS_READY;
}

static void conn_parse(struct mock_loop *l, struct conn *c, const char *buf, size_t n)
{
	enum llhttp_errno e = llhttp_execute(&c->parser, buf, n);

	switch (e) {
	case HPE_OK:
		return;
	case HPE_PAUSED:
		/* after a request that ends the connection; the rest is ignored */
		c->flags |= CONN_FL_NO_READ;
		return;
	case HPE_PAUSED_UPGRADE:
		/* Upgrade/CONNECT: answered as a plain request, then closed. */
		c->flags |= CONN_FL_NO_READ;
		if (c->cur)
			conn_parse_error(l, c);
		else if (!list_empty(&c->reqs))
			container_of(c->reqs.prev, struct req, node)->flags |= REQ_FL_LAST;
		return;
	default:
		conn_parse_error(l, c);
		return;
	}
}

/* The peer sent EOF. Work still in progress is aborted (the client is gone);
 * responses already produced are flushed, then the connection closes. */
static void conn_on_eof(struct mock_loop *l, struct conn *c)
{
	struct list *pos;

	if (c->flags & CONN_FL_EOF)
		return;
	c->flags |= CONN_FL_EOF | CONN_FL_NO_READ | CONN_FL_ABORT;
	if (c->cur)
		req_release(l, c, c->cur);
	if (conn_pump(l, c) < 0) {
		conn_close(l, c);
		return;
	}
	for (pos = c->reqs.next; pos != &c->reqs; pos = pos->next) {
		if (container_of(pos, struct req, node)->state != RS_FLUSHING) {
			conn_close(l, c);
			return;
		}
	}
	c->flags |= CONN_FL_CLOSING;
}

static void conn_on_readable(struct mock_loop *l, struct conn *c)
{
	if (c->flags & CONN_FL_LINGER) {
		for (;;) {
			ssize_t n = read(c->fd, l->rbuf, MOCK_READ_BUF);
			if (n > 0)
				continue;
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				return;
			conn_close(l, c);
			return;
		}
	}
	for (int i = 0; i < 4; i++) {
		ssize_t n;

		if ((c->flags & CONN_FL_NO_READ) || c->nreq >= MOCK_MAX_PIPELINE)
			return;
		n = read(c->fd, l->rbuf, MOCK_READ_BUF);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				conn_close(l, c);
			return;
		}
		if (n == 0) {
			conn_on_eof(l, c);
			return;
		}
		conn_parse(l, c, l->rbuf, (size_t)n);
		if ((c->flags & CONN_FL_DEAD) || n < MOCK_READ_BUF)
			return;
	}
}

void conn_on_event(struct mock_loop *l, struct conn *c, uint32_t ev)
{
	if (c->flags & CONN_FL_DEAD)
		return;
	if (ev & EPOLLERR) {
		conn_close(l, c);
		return;
	}
	if (ev & EPOLLIN)
		conn_on_readable(l, c);
	if (c->flags & CONN_FL_DEAD)
		return;
	if (ev & EPOLLHUP) {
		conn_close(l, c);
		return;
	}
	if ((ev & EPOLLRDHUP) && !(c->flags & CONN_FL_LINGER)) {
		conn_on_eof(l, c);
		if (c->flags & CONN_FL_DEAD)
			return;
	}
	conn_kick(l, c);
}

void loop_accept(struct mock_loop *l)
{
	for (int i = 0; i < 64; i++) {
		struct epoll_event ev;
		struct conn *c;
		int one = 1;
		int fd = accept4(l->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				fprintf(stderr, "mock-replica: accept: %s\n", strerror(errno));
			return;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->fd = fd;
		c->loop = l;
		list_init(&c->node);
		list_init(&c->reqs);
		list_init(&c->kick);
		c->linger.idx = -1;
		c->linger.kind = TIMER_LINGER;
		llhttp_init(&c->parser, HTTP_REQUEST, &l->ctx->settings);
		c->parser.data = c;
		c->events = EPOLLIN | EPOLLRDHUP;
		ev.events = c->events;
		ev.data.ptr = c;
		if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
			close(fd);
			free(c);
			continue;
		}
		list_push_back(&l->conns, &c->node);
	}
}
