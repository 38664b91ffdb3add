/* ctl_http: see ctl_http.h.
 *
 * The loop never blocks on a peer: every socket is non-blocking, responses
 * that do not fit in the kernel buffer wait in the connection's output
 * buffer, and the report POST is report.h's state machine with a deadline.
 * Requests are answered on the loop by ctl_api, so a slow answer delays the
 * others: the API only touches in-memory state (proxy_change waits for the
 * MSG_RING deliveries, which do not wait for the shards). */
#include "ringroute/ctl_http.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <llhttp.h>

#include "ringroute/addr.h"
#include "ringroute/alloc.h"
#include "ringroute/clock.h"
#include "ringroute/ctl_api.h"
#include "ringroute/http.h"
#include "ringroute/list.h"
#include "ringroute/proxy.h"
#include "ringroute/report.h"
#include "ringroute/strbuf.h"
#include "ringroute/log.h"

#define CTL_MAX_BODY        (1u << 20)   /* request body limit: 413 above */
#define CTL_MAX_HEAD        (64u << 10)  /* request line + headers: 431 above */
#define CTL_MAX_CONNS       256          /* more are accepted and closed at once */
#define CTL_OUT_HIGH        (256u << 10) /* stop reading a conn with this much unsent */
#define CTL_OUT_MAX         (8u << 20)   /* a watcher this far behind is dropped */
#define CTL_IDLE_MS         60000        /* idle keep-alive / stuck request timeout */
#define CTL_READ_CHUNK      16384

/* Connection flags. */
enum {
	CC_F_ADMIN  = 1u << 0, /* accepted on the admin port: read-only resources */
	CC_F_WATCH  = 1u << 1, /* streaming /v1/queues?watch=1: no further requests */
	CC_F_CLOSE  = 1u << 2, /* close once the output buffer is flushed */
	CC_F_DEAD   = 1u << 3, /* close at the next safe point of the loop */
	CC_F_TOOBIG = 1u << 4, /* request refused while parsing: status in err_status */
};

struct ctl_http;

struct ctl_conn {
	struct list node;       /* in ctl_http.conns */
	struct ctl_http *h;
	int fd;
	unsigned flags;         /* CC_F_* */
	uint64_t last_ms;       /* last byte in or out, for the idle timeout */
	llhttp_t parser;
	/* the request being parsed */
	struct strbuf url;
	struct strbuf body;
	size_t head_bytes;
	int err_status;         /* 413/431 decided by a callback */
	/* bytes received but not parsed yet (parsing stops after each request) */
	struct strbuf in;
	/* bytes to send; out_off of them are sent already */
	struct strbuf out;
	size_t out_off;
};

struct ctl_http {
	struct ctl_api *api;
	pthread_t thread;
	bool thread_started;
	_Atomic int stop;
	int wake_fd;            /* eventfd: ctl_http_stop() wakes the loop */
	int unix_fd;            /* -1: no control socket */
	char *unix_path;
	int admin_fd;           /* -1: no admin port */
	llhttp_settings_t settings;
	struct list conns;
	unsigned nconns;
	uint32_t report_ms;
	uint64_t next_report_ms;
	bool has_report;
	struct report report;
	/* poll set, rebuilt every iteration */
	struct pollfd *pfds;
	struct ctl_conn **pconns;
	size_t pcap;
};

/* ------------------------------------------------------------------ */
/* responses */

/* Queues resp on c: status line, Content-Type, Content-Length, the extra
 * lines and the body (not for HEAD). A connection marked CC_F_CLOSE gets
 * Connection: close. On ENOMEM the connection is dropped (there is no way
 * to answer). */
static void conn_respond(struct ctl_conn *c, const struct ctl_resp *resp)
{
	int rc = sb_printf(&c->out,
			   "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
			   "Cache-Control: no-store\r\n%s%s\r\n",
			   resp->status, http_reason(resp->status), resp->ctype, resp->body.len,
			   resp->extra, (c->flags & CC_F_CLOSE) ? "Connection: close\r\n" : "");

	if (!rc && !(resp->flags & CTL_RESP_F_NO_BODY) && resp->body.len)
		rc = sb_put(&c->out, resp->body.p, resp->body.len);
	if (rc)
		c->flags |= CC_F_DEAD;
}

/* Queues {"error": message} with status (errors of the transport: 400, 413,
 * 431, 500). */
__attribute__((format(printf, 3, 4)))
static void conn_error(struct ctl_conn *c, int status, const char *fmt, ...)
{
	struct ctl_resp resp;
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (ctl_api_error(&resp, status, "%s", msg)) {
		c->flags |= CC_F_DEAD;
		return;
	}
	conn_respond(c, &resp);
	ctl_api_resp_free(&resp);
}

/* ------------------------------------------------------------------ */
/* watch streams */

/* Appends one chunk holding line (plus '\n') to c. */
static void conn_chunk(struct ctl_conn *c, const char *line, size_t n)
{
	if (sb_printf(&c->out, "%zx\r\n", n + 1) || sb_put(&c->out, line, n) ||
	    sb_put(&c->out, "\n\r\n", 3))
		c->flags |= CC_F_DEAD;
	if (c->out.len - c->out_off > CTL_OUT_MAX)
		c->flags |= CC_F_DEAD; /* not reading: stop buffering for it */
}

/* Starts a queue watch stream on c: headers, then one line at once and one
 * per report interval (http_tick). */
static void conn_start_watch(struct ctl_http *h, struct ctl_conn *c)
{
	char *line = ctl_api_queues_line(h->api);

	if (!line) {
		conn_error(c, 500, "out of memory");
		return;
	}
	/* The stream is the response and ends when the client goes, so a
	 * "Connection: close" request does not end it after one line. */
	c->flags = (c->flags & ~CC_F_CLOSE) | CC_F_WATCH;
	if (sb_printf(&c->out,
		      "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
		      "Transfer-Encoding: chunked\r\nCache-Control: no-store\r\n"
		      "X-Report-Interval-Ms: %u\r\n\r\n",
		      h->report_ms))
		c->flags |= CC_F_DEAD;
	conn_chunk(c, line, strlen(line));
	free(line);
}

/* ------------------------------------------------------------------ */
/* requests */

/* What the server says about itself in /v1/stats. */
static void http_server_stats(const struct ctl_http *h, struct ctl_server_stats *st)
{
	struct list *pos;

	memset(st, 0, sizeof(*st));
	for (pos = h->conns.next; pos != &h->conns; pos = pos->next) {
		const struct ctl_conn *c = container_of(pos, struct ctl_conn, node);
		if (c->flags & CC_F_DEAD)
			continue;
		st->conns++;
		if (c->flags & CC_F_WATCH)
			st->watchers++;
	}
	st->has_report = h->has_report;
	st->reports_sent = h->report.nsent;
	st->reports_failed = h->report.nfailed;
}

/* Hands the complete request on c (the parser holds its method, c->url
 * and c->body the rest) to ctl_api and queues its answer, or starts the
 * watch stream it asks for. */
static void conn_handle(struct ctl_http *h, struct ctl_conn *c)
{
	llhttp_method_t m = (llhttp_method_t)llhttp_get_method(&c->parser);
	struct ctl_server_stats st;
	struct ctl_resp resp;
	struct ctl_req req = {
		.method = llhttp_method_name(m),
		.target = c->url.p ? c->url.p : "",
		.target_len = c->url.len,
		.body = c->body.p,
		.body_len = c->body.len,
		.flags = (c->flags & CC_F_ADMIN) ? CTL_REQ_F_ADMIN : 0,
		.server = &st,
	};

	http_server_stats(h, &st);
	if (ctl_api_handle(h->api, &req, &resp)) {
		c->flags |= CC_F_DEAD;
		return;
	}
	if (resp.flags & CTL_RESP_F_WATCH)
		conn_start_watch(h, c);
	else
		conn_respond(c, &resp);
	ctl_api_resp_free(&resp);
}

/* ------------------------------------------------------------------ */
/* parsing */

static struct ctl_conn *parser_conn(llhttp_t *parser)
{
	return parser->data;
}

static int on_message_begin(llhttp_t *parser)
{
	struct ctl_conn *c = parser_conn(parser);

	sb_reset(&c->url);
	sb_reset(&c->body);
	c->head_bytes = 0;
	c->err_status = 0;
	return 0;
}

/* Counts request-head bytes; 431 past CTL_MAX_HEAD. */
static int head_bytes(struct ctl_conn *c, size_t len)
{
	c->head_bytes += len;
	if (c->head_bytes > CTL_MAX_HEAD) {
		c->err_status = 431;
		return -1;
	}
	return 0;
}

static int on_url(llhttp_t *parser, const char *at, size_t len)
{
	struct ctl_conn *c = parser_conn(parser);

	if (head_bytes(c, len))
		return -1;
	return sb_put(&c->url, at, len) ? -1 : 0;
}

static int on_header_bytes(llhttp_t *parser, const char *at, size_t len)
{
	(void)at;
	return head_bytes(parser_conn(parser), len);
}

static int on_headers_complete(llhttp_t *parser)
{
	struct ctl_conn *c = parser_conn(parser);

	if ((parser->flags & F_CONTENT_LENGTH) && parser->content_length > CTL_MAX_BODY) {
		c->err_status = 413;
		return -1;
	}
	return 0;
}

static int on_body(llhttp_t *parser, const char *at, size_t len)
{
	struct ctl_conn *c = parser_conn(parser);

	if (c->body.len + len > CTL_MAX_BODY) {
		c->err_status = 413;
		return -1;
	}
	return sb_put(&c->body, at, len) ? -1 : 0;
}

/* Pauses the parser after each request: the loop answers it before looking
 * at the next one (pipelining keeps its order, watches end parsing). */
static int on_message_complete(llhttp_t *parser)
{
	(void)parser;
	return HPE_PAUSED;
}

/* The llhttp callbacks of every control connection. */
static void http_settings_fill(llhttp_settings_t *s)
{
	llhttp_settings_init(s);
	s->on_message_begin = on_message_begin;
	s->on_url = on_url;
	s->on_header_field = on_header_bytes;
	s->on_header_value = on_header_bytes;
	s->on_headers_complete = on_headers_complete;
	s->on_body = on_body;
	s->on_message_complete = on_message_complete;
}

/* Parses buffered input and answers each complete request, until the input
 * is used up, the connection must close or starts a watch, or its output is
 * backed up (parsing resumes when it drains). */
static void conn_parse(struct ctl_http *h, struct ctl_conn *c)
{
	while (c->in.len && !(c->flags & (CC_F_CLOSE | CC_F_DEAD | CC_F_WATCH)) &&
	       c->out.len - c->out_off < CTL_OUT_HIGH) {
		llhttp_errno_t rc = llhttp_execute(&c->parser, c->in.p, c->in.len);
		size_t used;

		if (rc == HPE_OK) {
			sb_reset(&c->in);
			return;
		}
		if (rc == HPE_PAUSED) {
			used = (size_t)(llhttp_get_error_pos(&c->parser) - c->in.p);
			sb_consume(&c->in, used);
			if (!llhttp_should_keep_alive(&c->parser))
				c->flags |= CC_F_CLOSE;
			llhttp_resume(&c->parser);
			conn_handle(h, c);
			continue;
		}
		/* Malformed, too big or an upgrade: answer and close. */
		c->flags |= CC_F_CLOSE;
		sb_reset(&c->in);
		if (c->err_status == 413)
			conn_error(c, 413, "request body larger than %u bytes", CTL_MAX_BODY);
		else if (c->err_status == 431)
			conn_error(c, 431, "request head larger than %u bytes", CTL_MAX_HEAD);
		else
			conn_error(c, 400, "malformed request: %s",
				   c->parser.reason ? c->parser.reason : llhttp_errno_name(rc));
		return;
	}
}

/* ------------------------------------------------------------------ */
/* connections */

/* Sends what it can of c's output. Marks the conn dead on a write error or
 * once everything is sent on a conn that must close. */
static void conn_flush(struct ctl_conn *c)
{
	while (c->out_off < c->out.len) {
		ssize_t n = send(c->fd, c->out.p + c->out_off, c->out.len - c->out_off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				c->flags |= CC_F_DEAD;
			break;
		}
		c->out_off += (size_t)n;
		c->last_ms = clock_now_ms();
	}
	if (c->out_off == c->out.len) {
		sb_reset(&c->out);
		c->out_off = 0;
		if (c->flags & CC_F_CLOSE)
			c->flags |= CC_F_DEAD;
	} else if (c->out_off > CTL_OUT_HIGH) {
		sb_consume(&c->out, c->out_off);
		c->out_off = 0;
	}
}

/* Reads what is there; EOF or an error marks the conn dead. */
static void conn_read(struct ctl_http *h, struct ctl_conn *c)
{
	char tmp[CTL_READ_CHUNK];

	for (;;) {
		ssize_t n = recv(c->fd, tmp, sizeof(tmp), MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				c->flags |= CC_F_DEAD;
			break;
		}
		if (n == 0) {
			/* Half-close: still answer what was asked, then close. */
			c->flags |= (c->flags & CC_F_WATCH) ? CC_F_DEAD : CC_F_CLOSE;
			break;
		}
		c->last_ms = clock_now_ms();
		if (c->flags & CC_F_WATCH)
			continue; /* a watcher has nothing more to say: discard */
		if (sb_put(&c->in, tmp, (size_t)n)) {
			c->flags |= CC_F_DEAD;
			break;
		}
		if (c->in.len > CTL_MAX_BODY + CTL_MAX_HEAD + CTL_READ_CHUNK)
			break; /* parse before reading more */
	}
	/* A half-closed conn may still hold complete requests: parse them
	 * (CC_F_CLOSE stops the parse loop, so parse first). */
	if ((c->flags & CC_F_CLOSE) && !(c->flags & CC_F_DEAD) && c->in.len) {
		c->flags &= ~CC_F_CLOSE;
		conn_parse(h, c);
		c->flags |= CC_F_CLOSE;
	} else {
		conn_parse(h, c);
	}
	if ((c->flags & CC_F_CLOSE) && c->out_off == c->out.len)
		c->flags |= CC_F_DEAD;
}

/* Unlinks, closes and frees c. Only at the loop's safe point (or at
 * teardown): nothing may hold c afterwards. */
static void conn_free(struct ctl_http *h, struct ctl_conn *c)
{
	list_del_init(&c->node);
	h->nconns--;
	close(c->fd);
	sb_free(&c->url);
	sb_free(&c->body);
	sb_free(&c->in);
	sb_free(&c->out);
	mi_free(c);
}

/* Accepts every pending connection on lfd. */
static void http_accept(struct ctl_http *h, int lfd, bool admin)
{
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct ctl_conn *c;

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				log_warn("control: accept: %s", strerror(errno));
			return;
		}
		if (h->nconns >= CTL_MAX_CONNS) {
			close(fd);
			continue;
		}
		c = mi_zalloc(sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		if (admin) {
			int one = 1;
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			c->flags |= CC_F_ADMIN;
		}
		c->fd = fd;
		c->h = h;
		c->last_ms = clock_now_ms();
		list_init(&c->node);
		llhttp_init(&c->parser, HTTP_REQUEST, &h->settings);
		c->parser.data = c;
		list_push_back(&h->conns, &c->node);
		h->nconns++;
	}
}

/* ------------------------------------------------------------------ */
/* the loop */

/* Every report interval: one queues line to every watcher and the POST to
 * --report-url. The line is built once and only when someone wants it. */
static void http_tick(struct ctl_http *h)
{
	struct list *pos, *tmp;
	bool watchers = false;
	char *line;

	list_for_each_safe(pos, tmp, &h->conns) {
		struct ctl_conn *c = container_of(pos, struct ctl_conn, node);
		if ((c->flags & (CC_F_WATCH | CC_F_DEAD)) == CC_F_WATCH)
			watchers = true;
	}
	if (!watchers && !h->has_report)
		return;
	line = ctl_api_queues_line(h->api);
	if (!line)
		return;
	list_for_each_safe(pos, tmp, &h->conns) {
		struct ctl_conn *c = container_of(pos, struct ctl_conn, node);
		if ((c->flags & (CC_F_WATCH | CC_F_DEAD)) == CC_F_WATCH) {
			conn_chunk(c, line, strlen(line));
			conn_flush(c);
		}
	}
	if (h->has_report)
		report_start(&h->report, line, h->report_ms);
	free(line);
}

/* Grows the poll arrays to hold n entries. 0 or -ENOMEM. */
static int http_poll_reserve(struct ctl_http *h, size_t n)
{
	struct pollfd *pf;
	struct ctl_conn **pc;

	if (n <= h->pcap)
		return 0;
	pf = mi_realloc(h->pfds, n * sizeof(*pf));
	if (!pf)
		return -ENOMEM;
	h->pfds = pf;
	pc = mi_realloc(h->pconns, n * sizeof(*pc));
	if (!pc)
		return -ENOMEM;
	h->pconns = pc;
	h->pcap = n;
	return 0;
}

/* The control thread: one poll() over the wake eventfd, the listeners, the
 * report socket and every connection; the report timer is the poll timeout.
 * Connections are freed only at the top of an iteration. Returns when
 * ctl_http_stop() sets h->stop and wakes it. */
static void *http_thread(void *arg)
{
	struct ctl_http *h = arg;
	struct report *rep = &h->report;

	h->next_report_ms = clock_now_ms() + h->report_ms;
	while (!atomic_load(&h->stop)) {
		struct list *pos, *tmp;
		size_t n = 0, first_conn;
		int idx_unix = -1, idx_admin = -1, idx_report = -1, timeout, rc;
		uint64_t now = clock_now_ms(), wake;

		if (now >= h->next_report_ms) {
			http_tick(h);
			h->next_report_ms += h->report_ms;
			if (h->next_report_ms <= now)
				h->next_report_ms = now + h->report_ms;
		}
		report_check_deadline(rep, now);
		/* Safe point: nothing below holds a conn across this. */
		list_for_each_safe(pos, tmp, &h->conns) {
			struct ctl_conn *c = container_of(pos, struct ctl_conn, node);
			if (!(c->flags & CC_F_WATCH) && now - c->last_ms > CTL_IDLE_MS)
				c->flags |= CC_F_DEAD;
			if (c->flags & CC_F_DEAD)
				conn_free(h, c);
		}
		if (http_poll_reserve(h, 4 + h->nconns)) {
			/* Nothing to do but wait for memory. */
			usleep(10000);
			continue;
		}
		h->pfds[n++] = (struct pollfd){ .fd = h->wake_fd, .events = POLLIN };
		if (h->unix_fd >= 0) {
			idx_unix = (int)n;
			h->pfds[n++] = (struct pollfd){ .fd = h->unix_fd, .events = POLLIN };
		}
		if (h->admin_fd >= 0) {
			idx_admin = (int)n;
			h->pfds[n++] = (struct pollfd){ .fd = h->admin_fd, .events = POLLIN };
		}
		if (rep->phase != REPORT_IDLE) {
			idx_report = (int)n;
			h->pfds[n++] = (struct pollfd){ .fd = rep->fd, .events = report_poll_events(rep) };
		}
		first_conn = n;
		list_for_each_safe(pos, tmp, &h->conns) {
			struct ctl_conn *c = container_of(pos, struct ctl_conn, node);
			short ev = 0;
			/* A closing conn reads no more (a half-closed peer
			 * would make POLLIN fire forever). */
			if (c->out.len - c->out_off < CTL_OUT_HIGH && !(c->flags & CC_F_CLOSE))
				ev |= POLLIN;
			if (c->out_off < c->out.len)
				ev |= POLLOUT;
			h->pconns[n] = c;
			h->pfds[n++] = (struct pollfd){ .fd = c->fd, .events = ev };
		}
		wake = h->next_report_ms;
		if (rep->phase != REPORT_IDLE && rep->deadline_ms < wake)
			wake = rep->deadline_ms;
		timeout = wake > now ? (int)(wake - now) : 0;
		if (timeout > 1000)
			timeout = 1000; /* idle timeouts are checked at least every second */
		rc = poll(h->pfds, (nfds_t)n, timeout);
		if (rc < 0) {
			if (errno != EINTR) {
				log_error("control: poll: %s", strerror(errno));
				usleep(10000);
			}
			continue;
		}
		if (h->pfds[0].revents & POLLIN) {
			uint64_t v;
			if (read(h->wake_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
				log_error("control: wake: %s", strerror(errno));
		}
		if (atomic_load(&h->stop))
			break;
		if (idx_report >= 0 && h->pfds[idx_report].revents)
			report_step(rep, h->pfds[idx_report].revents);
		for (size_t i = first_conn; i < n; i++) {
			struct ctl_conn *c = h->pconns[i];
			short re = h->pfds[i].revents;
			if (!re || (c->flags & CC_F_DEAD))
				continue;
			if (re & (POLLIN | POLLHUP | POLLERR))
				conn_read(h, c);
			if (!(c->flags & CC_F_DEAD)) {
				size_t before = c->out.len - c->out_off;
				conn_flush(c);
				/* Output drained below the mark: parse what waits. */
				if (before >= CTL_OUT_HIGH && c->out.len - c->out_off < CTL_OUT_HIGH &&
				    c->in.len) {
					conn_parse(h, c);
					conn_flush(c);
				}
			}
		}
		/* New conns last: pconns[] above must not see a freed conn. */
		if (idx_unix >= 0 && (h->pfds[idx_unix].revents & POLLIN))
			http_accept(h, h->unix_fd, false);
		if (idx_admin >= 0 && (h->pfds[idx_admin].revents & POLLIN))
			http_accept(h, h->admin_fd, true);
	}
	return NULL;
}

/* ------------------------------------------------------------------ */
/* setup */

/* Binds the Unix control socket at path, mode 0600. A socket file left by a
 * dead process is replaced; a live one (something accepts on it) or a path
 * that is not a socket is refused. Returns the listening fd or -errno. */
static int http_listen_unix(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	mode_t old;
	int fd, rc;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		log_error("--control %s: path too long (max %zu bytes)", path,
			sizeof(sa.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (lstat(path, &st) == 0) {
		int probe;
		if (!S_ISSOCK(st.st_mode)) {
			log_error("--control %s: exists and is not a socket", path);
			rc = -EEXIST;
			goto fail_close;
		}
		probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			close(probe);
			log_error("--control %s: another process is serving it",
				path);
			rc = -EADDRINUSE;
			goto fail_close;
		}
		if (probe >= 0)
			close(probe);
		unlink(path); /* stale */
	}
	/* The socket must never be reachable with looser permissions than
	 * 0600, not even between bind and chmod: narrow the umask around the
	 * bind. umask is per process, but only ever narrowed here, for an
	 * instant, and every other file this process makes is 0600 anyway. */
	old = umask(0177);
	rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (rc) {
		rc = -errno;
		log_error("--control %s: bind: %s", path, strerror(-rc));
		goto fail_close;
	}
	if (chmod(path, 0600) || listen(fd, 64)) {
		rc = -errno;
		log_error("--control %s: %s", path, strerror(-rc));
		goto fail_unlink;
	}
	return fd;
fail_unlink:
	unlink(path);
fail_close:
	close(fd);
	return rc;
}

/* Binds the admin TCP listener on "ADDR:PORT" (IPv4 literal, localhost,
 * [IPv6], "*" or empty for any; port 0 picks one). Returns the fd (and *port) or
 * -errno with a message on stderr. */
static int http_listen_tcp(const char *spec, uint16_t *port)
{
	struct rr_addr sa;
	socklen_t sl = sizeof(sa.u);
	char why[128];
	int fd, one = 1, rc;

	if (addr_parse_sa(spec, strlen(spec), ADDR_F_ANY | ADDR_F_PORT0 | ADDR_F_IPV6, &sa, why,
			  sizeof(why))) {
		log_error("--admin: expected ADDR:PORT, got '%s': %s", spec, why);
		return -EINVAL;
	}
	fd = socket(sa.u.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, &sa.u.sa, sa.len) || listen(fd, 64) || getsockname(fd, &sa.u.sa, &sl)) {
		rc = -errno;
		log_error("--admin %s: %s", spec, strerror(-rc));
		close(fd);
		return rc;
	}
	*port = addr_port(&sa);
	return fd;
}

/* Frees everything ctl_http_start may have set up; safe on a partial one.
 * The thread must not be running. */
static void http_destroy(struct ctl_http *h)
{
	struct list *pos, *tmp;

	list_for_each_safe(pos, tmp, &h->conns)
		conn_free(h, container_of(pos, struct ctl_conn, node));
	report_destroy(&h->report);
	if (h->admin_fd >= 0)
		close(h->admin_fd);
	if (h->unix_fd >= 0) {
		close(h->unix_fd);
		unlink(h->unix_path);
	}
	mi_free(h->unix_path);
	if (h->wake_fd >= 0)
		close(h->wake_fd);
	mi_free(h->pfds);
	mi_free(h->pconns);
	mi_free(h);
}

/* See ctl_http.h. Sets up in order: state, wake eventfd, report URL, Unix
 * socket, admin port, thread; a failure unwinds what was done
 * (http_destroy copes with a partial setup). */
int ctl_http_start(struct ctl_api *api, struct ctl_http **out, uint16_t *admin_port)
{
	const struct proxy_options *opt = &api->p->opt;
	struct ctl_http *h;
	char why[160];
	int rc;

	*out = NULL;
	*admin_port = 0;
	h = mi_zalloc(sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->api = api;
	h->wake_fd = h->unix_fd = h->admin_fd = -1;
	h->report.fd = -1;
	list_init(&h->conns);
	h->report_ms = opt->report_interval_ms ? opt->report_interval_ms : 1000;
	http_settings_fill(&h->settings);

	h->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (h->wake_fd < 0) {
		rc = -errno;
		log_error("control: eventfd: %s", strerror(-rc));
		goto fail;
	}
	if (opt->report_url) {
		rc = report_init(&h->report, opt->report_url, why, sizeof(why));
		if (rc) {
			log_error(
				"--report-url: expected http://HOST[:PORT]/PATH with an "
				"IPv4 address or localhost, got '%s': %s",
				opt->report_url, why);
			goto fail;
		}
		h->has_report = true;
	}
	if (opt->control_path) {
		h->unix_path = mi_strdup(opt->control_path);
		if (!h->unix_path) {
			rc = -ENOMEM;
			goto fail;
		}
		rc = http_listen_unix(opt->control_path);
		if (rc < 0)
			goto fail;
		h->unix_fd = rc;
	}
	if (opt->admin) {
		rc = http_listen_tcp(opt->admin, admin_port);
		if (rc < 0)
			goto fail;
		h->admin_fd = rc;
	}
	rc = -pthread_create(&h->thread, NULL, http_thread, h);
	if (rc) {
		log_error("control: cannot start thread: %s", strerror(-rc));
		goto fail;
	}
	h->thread_started = true;
	*out = h;
	return 0;
fail:
	*admin_port = 0;
	http_destroy(h);
	return rc;
}

/* See ctl_http.h. */
void ctl_http_stop(struct ctl_http *h)
{
	uint64_t one = 1;

	if (!h)
		return;
	atomic_store(&h->stop, 1);
	if (write(h->wake_fd, &one, sizeof(one)) < 0)
		log_error("control: wake: %s", strerror(errno));
	if (h->thread_started)
		pthread_join(h->thread, NULL);
	http_destroy(h);
}
