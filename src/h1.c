/* The HTTP/1.1 client connection (see h1.h). */
#include "ringroute/h1.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ringroute/addr.h"
#include "ringroute/alloc.h"
#include "ringroute/bufring.h"
#include "ringroute/request.h"
#include "ringroute/shard.h"

#define QUEUED_READ_MAX (64u * 1024u) /* a queued request reads (and copies)
                                        * this much ahead, to notice a
                                        * client that leaves */

static void h1_on_input(struct shard *s, struct sock *sk);
static void h1_next(struct shard *s, struct h1_conn *c);
static const struct req_client_ops h1_req_ops;

/* ---- llhttp callbacks (request side) ---- */

static struct h1_conn *conn_of(llhttp_t *p) { return p->data; }

static int h1_on_begin(llhttp_t *p)
{
	struct h1_conn *c = conn_of(p);

	c->flags |= H1_F_BEGUN;
	timer_arm(&c->s->tw, &c->timer, c->s->header_timeout_ms);
	return 0;
}

static llhttp_settings_t h1_settings;
static pthread_once_t h1_settings_once = PTHREAD_ONCE_INIT;

static void h1_settings_init(void)
{
	http_request_settings_init(&h1_settings);
	h1_settings.on_message_begin = h1_on_begin;
}

/* ---- parsing state, pooled per shard ---- */

/* A parser at a message boundary only needs its per-message state reset:
 * llhttp itself goes on to the next message of a keep-alive connection
 * (a full llhttp_init per request cost about 1% of the CPU on bench tiny). */
static void parser_next(struct h1_conn *c)
{
	http_request_parser_next(&c->ps->hp, c);
}

/* Give c a parsing state. Returns 0 or -ENOMEM. */
static int parser_take(struct shard *s, struct h1_conn *c)
{
	struct h1_parser *ps = s->free_parsers;

	if (ps) {
		s->free_parsers = ps->next;
		s->nfree_parsers--;
		c->ps = ps;
		parser_next(c); /* pooled only at a message boundary */
		return 0;
	}
	ps = mi_malloc(sizeof(*ps));
	if (!ps)
		return -ENOMEM;
	ps->hp.hd.buf = NULL;
	ps->hp.hd.cap = 0;
	c->ps = ps;
	http_request_parser_start(&ps->hp, &h1_settings, c);
	return 0;
}

/* Take c's parsing state back. It is pooled only when it stands at a
 * message boundary of a connection that stays open (nothing begun, no
 * request, no error; llhttp refuses more after a close), so the next
 * connection can go on with it as it is; any other is freed. */
static void parser_give(struct shard *s, struct h1_conn *c)
{
	struct h1_parser *ps = c->ps;
	bool clean;

	if (!ps)
		return;
	clean = !(c->flags & (H1_F_BEGUN | H1_F_CLOSE)) && !c->req &&
		llhttp_get_errno(&ps->hp.p) == HPE_OK;
	c->ps = NULL;
	if (!clean || s->nfree_parsers >= H1_POOL_MAX) {
		http_head_free(&ps->hp.hd);
		mi_free(ps);
		return;
	}
	/* A head buffer grown for one huge head is not kept. */
	if (ps->hp.hd.cap > 8192)
		http_head_free(&ps->hp.hd);
	ps->next = s->free_parsers;
	s->free_parsers = ps;
	s->nfree_parsers++;
}

void h1_shard_teardown(struct shard *s)
{
	struct h1_parser *ps;

	while ((ps = s->free_parsers)) {
		s->free_parsers = ps->next;
		http_head_free(&ps->hp.hd);
		mi_free(ps);
	}
	s->nfree_parsers = 0;
}

/* ---- replies ---- */

/* Queue a complete response in buf (owned) for the client. */
static void h1_push(struct shard *s, struct h1_conn *c, struct strbuf *buf)
{
	if (sock_push_owned(s, &c->sk, buf->p, buf->p, buf->len) == 0)
		sock_flush_later(s, &c->sk);
	else
		sock_close(s, &c->sk); /* an answer lost: the client must not wait for it */
	buf->p = NULL;
}

/* Statuses after which the rest of the request cannot be read safely. */
static int closes_connection(int status)
{
	return status == 400 || status == 408 || status == 413 || status == 431 || status == 501 ||
	       status == 505;
}

/* The connection's own answer when no request can be made (ENOMEM). */
static void h1_reply_bare(struct shard *s, struct h1_conn *c, int status, const char *msg)
{
	struct strbuf out = {0};

	c->flags |= H1_F_CLOSE;
	if (!(c->flags & H1_F_RESP_HEAD) &&
	    http_write_error(&out, status, msg, NULL, 1, 1, NULL) == 0) {
		c->flags |= H1_F_RESP_HEAD;
		h1_push(s, c, &out);
	}
	mi_free(out.p);
	h1_next(s, c);
}

/* Reject what the client sent before (or instead of) a request: it is
 * still a request, recorded once, so it goes through req_fail. */
static void h1_reject(struct shard *s, struct h1_conn *c, int status, enum req_reason reason,
		      const char *msg)
{
	struct request *req = c->req;

	if (!req) {
		struct req_info ri = {.head_bytes = c->head_bytes};
		req = req_new(s, &h1_req_ops, c, c->ip, c->port);
		if (!req) {
			h1_reply_bare(s, c, 503, "out of memory");
			return;
		}
		c->req = req;
		/* A header line began: the request line is whole, so the
		 * log can say what was asked. */
		if (c->ps && c->ps->hp.hd.nhdrs) {
			ri.method = c->ps->hp.p.method;
			ri.url = c->ps->hp.hd.buf + c->ps->hp.hd.url_off;
			ri.url_len = c->ps->hp.hd.url_len;
			ri.p = &c->ps->hp.p;
		}
		req_note(req, &ri);
	}
	req_fail(s, req, status, reason, msg);
}

/* ---- the request layer's hooks (struct req_client_ops) ---- */

static struct h1_conn *req_conn(const struct request *req) { return req->client; }

int h1_response_head(struct strbuf *out, const struct resp_head *rh, bool http10, bool is_head,
		     const char *request_id, bool *close)
{
	int status = rh->status, mode = UP_BODY_RAW;
	int eof_body = !(rh->flags & (F_CHUNKED | F_CONTENT_LENGTH)) && status >= 200 &&
		       status != 204 && status != 304 && !is_head;

	if (http10 && (rh->flags & F_CHUNKED)) {
		/* HTTP/1.0 has no chunked coding: send the decoded body,
		 * delimited by closing the connection. */
		mode = UP_BODY_DECODED;
		eof_body = 1;
		http_head_mark_named(rh->hd, "transfer-encoding"); /* every one of them */
	}
	if (status == 204) {
		/* RFC 9110 8.6: no Content-Length in a 204 (nor a body). */
		http_head_mark_named(rh->hd, "content-length");
		http_head_mark_named(rh->hd, "transfer-encoding");
	} else if (status == 304) {
		/* No body follows a 304, whatever its Transfer-Encoding says; a
		 * client that honours one (llhttp, so Node.js) would wait for
		 * a body that never comes (found by tests/fuzz/fuzz_response). */
		http_head_mark_named(rh->hd, "transfer-encoding");
	}
	if (eof_body)
		*close = true;
	if (http_write_response_head(out, rh->hd, rh->p, *close, request_id))
		return -ENOMEM;
	return mode;
}

static int h1_resp_head(struct shard *s, struct request *req, const struct resp_head *rh)
{
	struct h1_conn *c = req_conn(req);
	struct strbuf head = {0};
	/* Draining (SIGTERM): every response ends its connection, so clients
	 * reconnect elsewhere before the listener closes. */
	bool close = (c->flags & H1_F_CLOSE) || s->draining;
	int mode = h1_response_head(&head, rh, req->http10, req->is_head, req_id(req), &close);

	if (mode < 0) {
		mi_free(head.p);
		return mode;
	}
	if (close)
		c->flags |= H1_F_CLOSE;
	c->flags |= H1_F_RESP_HEAD;
	req->bytes_out += head.len;
	h1_push(s, c, &head);
	return mode;
}

static void h1_resp_continue(struct shard *s, struct request *req)
{
	static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
	struct h1_conn *c = req_conn(req);

	req->bytes_out += sizeof(cont) - 1;
	if (sock_push_copy(s, &c->sk, cont, sizeof(cont) - 1) == 0)
		sock_flush(s, &c->sk); /* the client waits for it to send its body */
}

static void h1_resp_body(struct shard *s, struct request *req, uint32_t bid, const char *p,
			 size_t len)
{
	struct h1_conn *c = req_conn(req);

	if (!len)
		return;
	req->bytes_out += len;
	if (sock_push_buf(s, &c->sk, bid, p, len) == 0) {
		sock_flush_later(s, &c->sk);
		return;
	}
	/* Bytes lost: the response can only be cut. */
	c->flags |= H1_F_CLOSE;
	sock_close(s, &c->sk);
}

static void h1_resp_end(struct shard *s, struct request *req)
{
	struct h1_conn *c = req_conn(req);

	(void)s;
	if (!(c->flags & H1_F_MSG_DONE))
		c->flags |= H1_F_CLOSE; /* answered before the body ended */
	c->req = NULL;
}

static void h1_resp_fail(struct shard *s, struct request *req, int status, const char *msg,
			 int retry_after)
{
	struct h1_conn *c = req_conn(req);
	struct strbuf out = {0};
	const char *ep = req->ep ? req->ep->name : NULL;

	if (closes_connection(status) || s->draining)
		c->flags |= H1_F_CLOSE;
	if (c->flags & H1_F_RESP_HEAD) {
		/* Part of a response already went out: all we can do is cut
		 * it, closing once what was sent drains. */
		c->flags |= H1_F_CLOSE;
	} else if (http_write_error(&out, status, msg, ep, (c->flags & H1_F_CLOSE) != 0,
				    retry_after, req_id(req)) == 0) {
		c->flags |= H1_F_RESP_HEAD;
		req->bytes_out += out.len;
		h1_push(s, c, &out);
	} else {
		c->flags |= H1_F_CLOSE;
	}
	mi_free(out.p);
	c->req = NULL;
	if (!(c->flags & (H1_F_MSG_DONE | H1_F_CLOSE)) && (c->flags & H1_F_IN_BODY))
		c->flags |= H1_F_DISCARD; /* keep reading to drop the rest of the body */
}

static void h1_resp_released(struct shard *s, void *client)
{
	h1_next(s, client);
}

static void h1_body_room(struct shard *s, struct request *req)
{
	struct h1_conn *c = req_conn(req);

	if (!(c->flags & H1_F_IN_PARSE))
		h1_on_input(s, &c->sk);
}

static size_t h1_pending(const struct request *req)
{
	return req_conn(req)->sk.out_bytes;
}

static const struct req_client_ops h1_req_ops = {
	.on_head = h1_resp_head,
	.on_continue = h1_resp_continue,
	.on_body = h1_resp_body,
	.on_end = h1_resp_end,
	.on_fail = h1_resp_fail,
	.on_released = h1_resp_released,
	.on_body_room = h1_body_room,
	.pending = h1_pending,
};

/* ---- connection lifetime ---- */

static void h1_timeout(struct timer *t, void *ctx)
{
	struct shard *s = ctx;
	struct h1_conn *c = container_of(t, struct h1_conn, timer);

	/* Fires only while waiting for a request head (or idle): a request in
	 * progress has its own upstream and queue timers. */
	if (!c->req)
		sock_close(s, &c->sk);
}

static void h1_on_sent(struct shard *s, struct sock *sk)
{
	struct h1_conn *c = container_of(sk, struct h1_conn, sk);

	if ((c->flags & H1_F_LINGER) && !sk->out_n) {
		sock_close(s, sk);
		return;
	}
	/* Response back-pressure: let the replica be read again. */
	if (c->req && sk->out_bytes <= SINK_HIGH)
		req_client_drained(s, c->req);
}

/* The client is gone (reset, or closed mid-request): its request ends. */
static void h1_on_error(struct shard *s, struct sock *sk, int err)
{
	struct h1_conn *c = container_of(sk, struct h1_conn, sk);
	struct request *req = c->req;

	(void)err;
	c->req = NULL;
	if (req)
		req_abandon(s, req, REQ_R_CLIENT_ABORT);
	sock_close(s, sk);
}

static void h1_on_free(struct shard *s, struct sock *sk)
{
	struct h1_conn *c = container_of(sk, struct h1_conn, sk);
	struct request *req = c->req;

	/* Every path that closes a client ends its request first; this is the
	 * safety net that keeps a replica slot from leaking if one did not. */
	c->req = NULL;
	if (req)
		req_abandon(s, req, REQ_R_CLIENT_ABORT);
	timer_cancel(&s->tw, &c->timer);
	if (list_linked(&c->all))
		list_del_init(&c->all);
	parser_give(s, c);
	s->nclients--;
	counter_add(&s->metrics.closed, 1);
	mi_free(c);
}

static const struct sock_ops h1_sock_ops = {
	.name = "client",
	.buf_group = 0,
	.on_input = h1_on_input,
	.on_sent = h1_on_sent,
	.on_error = h1_on_error,
	.on_connect = NULL,
	.on_free = h1_on_free,
};

void h1_accept(struct shard *s, int fd)
{
	struct h1_conn *c;
	struct rr_addr peer;
	socklen_t plen = sizeof(peer.u);
	int one = 1;

	pthread_once(&h1_settings_once, h1_settings_init);
	c = mi_zalloc(sizeof(*c));
	if (!c || sock_register(s, &c->sk, fd, &h1_sock_ops)) {
		mi_free(c);
		close(fd);
		return;
	}
	c->s = s;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (getpeername(fd, &peer.u.sa, &plen))
		peer.u.sa.sa_family = AF_UNSPEC;
	if (peer.u.sa.sa_family == AF_INET) {
		inet_ntop(AF_INET, &peer.u.in.sin_addr, c->ip, sizeof(c->ip));
		c->port = addr_port(&peer);
	} else if (peer.u.sa.sa_family == AF_INET6 && plen >= sizeof(peer.u.in6)) {
		inet_ntop(AF_INET6, &peer.u.in6.sin6_addr, c->ip, sizeof(c->ip));
		c->port = addr_port(&peer);
	} else {
		strcpy(c->ip, "unknown");
	}
	timer_init(&c->timer, h1_timeout);
	timer_arm(&s->tw, &c->timer, s->header_timeout_ms);
	list_init(&c->all);
	list_push_back(&s->clients, &c->all);
	s->nclients++;
	counter_add(&s->metrics.accepted, 1);
	sock_want_input(s, &c->sk);
}

/* ---- requests ---- */

static int header_has_token(const struct http_head *h, const char *name, const char *tok)
{
	const struct http_hdr *x = http_head_find(h, name);
	size_t n = strlen(tok);

	return x && x->value_len == n && strncasecmp(http_hdr_value(h, x), tok, n) == 0;
}

static enum req_reason reason_of_status(int status)
{
	switch (status) {
	case 431: return REQ_R_HEADERS_TOO_LARGE;
	case 501: return REQ_R_NOT_IMPLEMENTED;
	case 505: return REQ_R_HTTP_VERSION;
	default: return REQ_R_BAD_REQUEST;
	}
}

/* The head is complete: check it, make the request, start it. */
static void h1_on_headers(struct shard *s, struct h1_conn *c)
{
	llhttp_t *p = &c->ps->hp.p;
	struct http_head *hd = &c->ps->hp.hd;
	struct request *req;
	struct req_info ri;
	char msg[160];
	int st;

	timer_cancel(&s->tw, &c->timer);
	c->flags |= H1_F_IN_BODY;
	if (!llhttp_should_keep_alive(p) || p->http_major < 1 ||
	    (p->http_major == 1 && p->http_minor == 0))
		c->flags |= H1_F_CLOSE;
	req = req_new(s, &h1_req_ops, c, c->ip, c->port);
	if (!req) {
		h1_reply_bare(s, c, 503, "out of memory");
		return;
	}
	c->req = req;
	http_head_mark_hop(hd); /* before req_note reads X-Request-Id */
	memset(&ri, 0, sizeof(ri));
	ri.method = p->method;
	ri.url = hd->buf + hd->url_off;
	ri.url_len = hd->url_len;
	ri.hd = hd;
	ri.p = p;
	ri.head_bytes = c->head_bytes;
	req_note(req, &ri);
	st = http_check_request(hd, p, msg, sizeof(msg));
	if (st) {
		req_fail(s, req, st, reason_of_status(st), msg);
		return;
	}
	ri.client_ip = c->ip;
	ri.content_length = (p->flags & F_CONTENT_LENGTH) ? (int64_t)p->content_length : -1;
	ri.is_head = p->method == HTTP_HEAD;
	ri.http10 = p->http_major == 1 && p->http_minor == 0;
	ri.expect_continue = header_has_token(hd, "expect", "100-continue");
	ri.chunked = (p->flags & F_CHUNKED) != 0;
	req_start(s, req, &ri);
}

/* Current request done on both sides: get ready for the next one. */
static void h1_next(struct shard *s, struct h1_conn *c)
{
	if (c->req || (c->sk.flags & SK_F_CLOSING))
		return;
	if ((c->flags & H1_F_DISCARD) && !(c->flags & H1_F_MSG_DONE)) {
		/* Still dropping the body. */
		if (!(c->flags & H1_F_IN_PARSE))
			h1_on_input(s, &c->sk);
		return;
	}
	c->flags &= ~(H1_F_IN_BODY | H1_F_MSG_DONE | H1_F_RESP_HEAD | H1_F_DISCARD | H1_F_BEGUN);
	c->head_bytes = 0;
	if (c->ps)
		parser_next(c); /* at a message boundary */
	if (c->flags & H1_F_CLOSE) {
		c->flags |= H1_F_LINGER;
		sock_pause_input(s, &c->sk);
		if (!c->sk.out_n)
			sock_close(s, &c->sk);
		return;
	}
	if (s->stopping && !c->sk.in_n) {
		c->flags |= H1_F_CLOSE | H1_F_LINGER;
		if (!c->sk.out_n)
			sock_close(s, &c->sk);
		return;
	}
	timer_arm(&s->tw, &c->timer, c->sk.in_n ? s->header_timeout_ms : H1_KEEPALIVE_TIMEOUT_MS);
	if (!(c->flags & H1_F_IN_PARSE))
		h1_on_input(s, &c->sk);
}

/* Hand body bytes to the request. The buffer is held across the call: the
 * request may end and the connection's input be cleared meanwhile.
 * Returns req_body's result. */
static int h1_body(struct shard *s, struct h1_conn *c, uint32_t bid, const char *data,
		   uint32_t len)
{
	int held = bid != BID_NONE && bufring_ref(&s->br, bid) == 0;
	int ret;

	if (bid != BID_NONE && !held) {
		/* Reference count saturated: hand over a copy. */
		char *copy = mi_malloc(len);
		if (!copy) {
			h1_reject(s, c, 503, REQ_R_NO_MEMORY, "out of memory");
			return -1;
		}
		memcpy(copy, data, len);
		ret = req_body(s, c->req, BID_NONE, copy, len);
		mi_free(copy);
		return ret;
	}
	ret = req_body(s, c->req, bid, data, len);
	if (held)
		bufring_unref(&s->br, bid);
	return ret;
}

/* One step of parsing: the front input buffer through llhttp. Returns 1 to
 * go on, 0 to stop for now (input waits), -1 when the connection or its
 * request was answered or closed (stop). */
static int h1_parse_step(struct shard *s, struct h1_conn *c)
{
	struct sock *sk = &c->sk;
	struct request *req = c->req;
	int in_body = (c->flags & H1_F_IN_BODY) != 0;
	struct inbuf *b;
	const char *data, *pos;
	llhttp_errno_t rc;
	uint32_t used, bid;

	if (c->flags & H1_F_MSG_DONE)
		return 0; /* pipelined: wait for the response */
	if (in_body && req && !(c->flags & H1_F_DISCARD) && req_body_blocked(req)) {
		/* Queued, connecting, or the replica is slow: the body waits;
		 * a queued one gives its receive buffers back meanwhile. */
		if (queue_entry_queued(&req->qe))
			sock_in_spill(s, sk);
		return 0;
	}
	if (!c->ps && parser_take(s, c)) {
		h1_reply_bare(s, c, 503, "out of memory");
		return -1;
	}
	b = &sk->in[sk->in_head];
	bid = b->bid;
	data = sock_in_ptr(s, b);
	c->ps->hp.event = HTTP_EV_NONE;
	rc = llhttp_execute(&c->ps->hp.p, data, b->len);
	if (rc == HPE_PAUSED_UPGRADE) {
		/* Upgrade: h2c was let through by http_check_request; the
		 * connection goes on as HTTP/1.1. */
		llhttp_resume_after_upgrade(&c->ps->hp.p);
		rc = HPE_PAUSED;
	}
	pos = rc == HPE_OK ? data + b->len : llhttp_get_error_pos(&c->ps->hp.p);
	if (rc == HPE_PAUSED_H2_UPGRADE) {
		c->head_bytes += (uint32_t)(pos - data);
		sock_in_clear(s, sk);
		h1_reject(s, c, 505, REQ_R_HTTP_VERSION,
			  "HTTP/2 is not supported: speak HTTP/1.1 to this port");
		return -1;
	}
	if (rc != HPE_OK && rc != HPE_PAUSED) {
		int too_large = c->ps->hp.hd.too_large;
		/* The earliest fault is the one answered, however the bytes
		 * were split: a bare LF or obs-fold that llhttp let through
		 * before its own error comes first. (Scanned before the input,
		 * data included, is dropped.) */
		int bad = in_body ? 0 : http_scan_head(&c->ps->hp.scan, data, (size_t)(pos - data));

		if (!in_body)
			c->head_bytes += (uint32_t)(pos - data); /* received up to the fault */
		sock_in_clear(s, sk);
		if (c->flags & H1_F_DISCARD) {
			/* The body of a request answered already: its answer
			 * stands, the connection closes after it. */
			c->flags |= H1_F_CLOSE | H1_F_MSG_DONE;
			h1_next(s, c);
			return -1;
		}
		if (bad)
			h1_reject(s, c, 400, REQ_R_BAD_REQUEST, http_scan_reason(bad));
		else
			h1_reject(s, c, too_large ? 431 : 400,
				  too_large ? REQ_R_HEADERS_TOO_LARGE : REQ_R_BAD_REQUEST,
				  too_large ? "request header fields too large"
					    : llhttp_get_error_reason(&c->ps->hp.p));
		return -1;
	}
	used = (uint32_t)(pos - data);
	if (!in_body) {
		int bad = http_scan_head(&c->ps->hp.scan, data, used);
		c->head_bytes += used;
		if (bad) {
			sock_in_clear(s, sk);
			h1_reject(s, c, 400, REQ_R_BAD_REQUEST, http_scan_reason(bad));
			return -1;
		}
		if (c->head_bytes > HTTP_MAX_HEAD) {
			sock_in_clear(s, sk);
			h1_reject(s, c, 431, REQ_R_HEADERS_TOO_LARGE,
				  "request header fields too large");
			return -1;
		}
	}
	if (in_body && used)
		http_body_seen(&c->ps->hp, data, used);
	if (in_body && used && req && !(c->flags & H1_F_DISCARD)) {
		if (h1_body(s, c, bid, data, used))
			return -1;
	}
	sock_in_consume(s, sk, used);
	if (rc == HPE_PAUSED)
		llhttp_resume(&c->ps->hp.p);
	if (c->ps->hp.event == HTTP_EV_HEADERS) {
		h1_on_headers(s, c);
		if (sk->flags & SK_F_CLOSING)
			return -1;
		/* A request without a body completes on a zero-length run. */
		if (c->ps) {
			c->ps->hp.event = HTTP_EV_NONE;
			if (llhttp_execute(&c->ps->hp.p, pos, 0) == HPE_PAUSED)
				llhttp_resume(&c->ps->hp.p);
		}
	}
	if (c->ps && c->ps->hp.event == HTTP_EV_MESSAGE) {
		if (c->req && !http_body_end_ok(&c->ps->hp)) {
			sock_in_clear(s, sk);
			h1_reject(s, c, 400, REQ_R_BAD_REQUEST,
				  "bare LF in chunked body (CRLF required)");
			return -1;
		}
		c->flags |= H1_F_MSG_DONE;
		if (c->req)
			req_body_done(s, c->req);
		else
			h1_next(s, c); /* answered early, body dropped */
	}
	return 1;
}

static void h1_on_input(struct shard *s, struct sock *sk)
{
	struct h1_conn *c = container_of(sk, struct h1_conn, sk);

	c->flags |= H1_F_IN_PARSE;
	while (sk->in_n && !(sk->flags & SK_F_CLOSING) && !(c->flags & H1_F_LINGER)) {
		if (h1_parse_step(s, c) <= 0)
			break;
	}
	c->flags &= ~H1_F_IN_PARSE;
	if (sk->flags & SK_F_CLOSING)
		return;
	if (c->req && queue_entry_queued(&c->req->qe)) {
		/* Keep reading (into copies) to see the client leave while it
		 * waits, up to a bound. */
		sock_in_spill(s, sk);
		if (sock_in_bytes(sk) < QUEUED_READ_MAX)
			sock_want_input(s, sk);
		else
			sock_pause_input(s, sk);
	} else if (sk->in_n || (c->flags & (H1_F_MSG_DONE | H1_F_LINGER))) {
		sock_pause_input(s, sk);
	} else {
		sock_want_input(s, sk);
	}
	if (!c->req && !(c->flags & H1_F_BEGUN) && !sk->in_n)
		parser_give(s, c); /* idle: hold no parsing state */
	if ((sk->flags & SK_F_EOF) && !sk->in_n) {
		if (!c->req && !(c->flags & H1_F_BEGUN)) {
			if (!sk->out_n)
				sock_close(s, sk);
			else
				c->flags |= H1_F_LINGER;
		} else if (c->req && (c->flags & H1_F_MSG_DONE) && !queue_entry_queued(&c->req->qe)) {
			c->flags |= H1_F_CLOSE; /* half-closed: answer, then close */
		} else if (!c->req && (c->flags & H1_F_BEGUN) && !(c->flags & H1_F_IN_BODY)) {
			sock_close(s, sk); /* incomplete head */
		} else {
			h1_on_error(s, sk, -ECONNRESET);
		}
	}
}

void h1_shard_abort(struct shard *s)
{
	struct list *pos, *tmp;

	list_for_each_safe(pos, tmp, &s->clients) {
		struct h1_conn *c = container_of(pos, struct h1_conn, all);

		c->flags |= H1_F_CLOSE | H1_F_LINGER;
		if (c->req)
			req_fail(s, c->req, 503, REQ_R_SHUTDOWN, "shutting down");
		/* With a 503 (or the rest of a response) to send, the connection
		 * closes once it drained (h1_on_sent); otherwise now. */
		if (!c->sk.out_n)
			sock_close(s, &c->sk);
	}
}

void h1_shard_stop(struct shard *s)
{
	struct list *pos, *tmp;

	/* Idle connections close now; busy ones after their response. An idle
	 * one may still be sending the end of its last response: it closes
	 * once that drained (closing now would cut it: test_drain.py
	 * test_sent_response_not_cut). */
	list_for_each_safe(pos, tmp, &s->clients) {
		struct h1_conn *c = container_of(pos, struct h1_conn, all);
		c->flags |= H1_F_CLOSE;
		if (!c->req && !c->sk.in_n && !(c->flags & H1_F_BEGUN)) {
			c->flags |= H1_F_LINGER;
			if (!c->sk.out_n)
				sock_close(s, &c->sk);
		}
	}
}
