/* Concurrent HTTP GETs of replicas: see probe.h. */
#include "ringroute/probe.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ringroute/alloc.h"
#include "ringroute/clock.h"
#include "ringroute/log.h"

enum probe_phase {
	PROBE_CONNECTING,       /* non-blocking connect in progress: wait POLLOUT */
	PROBE_SENDING,          /* request partly sent: wait POLLOUT */
	PROBE_READING,          /* waiting for the answer: wait POLLIN */
	PROBE_DONE,             /* done called, fd closed: to be freed */
};

/* Calls done once, then closes the socket and drops the snapshot
 * reference. */
static void probe_finish(struct probe *pr, enum health_kind kind, unsigned value)
{
	pr->done(pr, kind, value);
	if (pr->fd >= 0)
		close(pr->fd);
	pr->fd = -1;
	config_unref(pr->cfg);
	pr->cfg = NULL;
	pr->phase = PROBE_DONE;
}

static void probe_free(struct probe *pr)
{
	if (pr->resp != pr->line)
		mi_free(pr->resp);
	mi_free(pr);
}

/* The answer's buffer: the inline line, at most max + 1 of it for a whole
 * answer (the bound holds from the first byte). */
static void probe_buf_init(struct probe *pr, size_t max)
{
	pr->max = max;
	pr->resp = pr->line;
	pr->cap = max && max + 1 < sizeof(pr->line) ? max + 1 : sizeof(pr->line);
}

/* See probe.h. */
int probe_start(struct probe_set *ps, struct config *c, const struct backend_cfg *b,
		const struct replica_cfg *r, const char *path, size_t max_body, uint32_t timeout_ms,
		uint64_t now, probe_done_fn done, void *arg)
{
	struct probe *pr;
	int n;

	if (ps->n == ps->cap) {
		size_t cap = ps->cap ? ps->cap * 2 : 16;
		struct probe **v = mi_realloc(ps->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		ps->v = v;
		ps->cap = cap;
	}
	pr = mi_zalloc(sizeof(*pr));
	if (!pr)
		return -ENOMEM;
	ps->v[ps->n++] = pr;
	config_ref(c);
	pr->cfg = c;
	pr->b = b;
	pr->r = r;
	pr->done = done;
	pr->arg = arg;
	probe_buf_init(pr, max_body);
	pr->deadline_ms = now + timeout_ms;
	if (max_body)
		n = snprintf(pr->req, sizeof(pr->req),
			     "GET %s HTTP/1.0\r\nHost: ringroute-scrape\r\nAccept: text/plain\r\n\r\n",
			     path);
	else
		n = snprintf(pr->req, sizeof(pr->req),
			     "GET %s HTTP/1.1\r\nHost: ringroute-health\r\nConnection: close\r\n\r\n",
			     path);
	pr->req_len = n > 0 && (size_t)n < sizeof(pr->req) ? (size_t)n : 0;
	pr->fd = socket(r->addr.u.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (!pr->req_len) {
		probe_finish(pr, HEALTH_PATH, 0);
		return 0;
	}
	if (pr->fd < 0) {
		probe_finish(pr, HEALTH_IO, (unsigned)errno);
		return 0;
	}
	if (connect(pr->fd, &r->addr.u.sa, r->addr.len) == 0)
		pr->phase = PROBE_SENDING;
	else if (errno == EINPROGRESS)
		pr->phase = PROBE_CONNECTING;
	else
		probe_finish(pr, HEALTH_CONNECT, (unsigned)errno);
	return 0;
}

/* See probe.h. */
const char *probe_body(const struct probe *pr, size_t *len)
{
	if (!pr->max || !pr->body_off)
		return NULL;
	*len = pr->body_len;
	return pr->resp + pr->body_off;
}

/* The Content-Length of a whole answer whose head ends at e (the
 * "\r\n\r\n"): 1 with *cl, or 0 when it names none (or one past the
 * bound, or not a number: read on to EOF or the bound). */
static int probe_content_length(const struct probe *pr, const char *e, size_t *cl)
{
	for (const char *p = pr->resp; p < e; p++) { /* p: the start of a line */
		if ((size_t)(e - p) > 15 && strncasecmp(p, "content-length:", 15) == 0) {
			const char *d = p + 15;
			size_t v = 0;

			while (*d == ' ' || *d == '\t')
				d++;
			if (*d < '0' || *d > '9')
				return 0;
			for (; *d >= '0' && *d <= '9'; d++) {
				if (v > pr->max)
					return 0;
				v = v * 10 + (size_t)(*d - '0');
			}
			*cl = v;
			return 1;
		}
		p = memchr(p, '\n', (size_t)(e - p));
		if (!p)
			break;
	}
	return 0;
}

/* A whole answer is complete before the replica closes when its head
 * says Content-Length and that many body bytes are in (a replica that
 * keeps an HTTP/1.0 connection open would otherwise run into the
 * deadline). 1 when complete; 0: read on until EOF. */
static int probe_whole_done(const struct probe *pr)
{
	const char *e = memmem(pr->resp, pr->got, "\r\n\r\n", 4);
	size_t cl;

	return e && probe_content_length(pr, e, &cl) &&
	       pr->got - (size_t)(e + 4 - pr->resp) >= cl;
}

/* Judges the answer read so far: its status (2xx: HEALTH_OK), or the
 * reason it is none. eof: the peer closed (no more bytes will come). A
 * whole answer must also have the end of its head. */
static void probe_judge(struct probe *pr, bool eof)
{
	/* "HTTP/1.x NNN" */
	if (pr->got >= 12 && strncmp(pr->resp, "HTTP/1.", 7) == 0) {
		unsigned st = 0;
		size_t cl;
		for (int i = 9; i < 12 && pr->resp[i] >= '0' && pr->resp[i] <= '9'; i++)
			st = st * 10 + (unsigned)(pr->resp[i] - '0');
		if (pr->max) {
			const char *e = memmem(pr->resp, pr->got, "\r\n\r\n", 4);
			if (!e) {
				probe_finish(pr, HEALTH_NOT_HTTP, 0);
				return;
			}
			pr->body_off = (size_t)(e + 4 - pr->resp);
			/* Bytes past the Content-Length are not the body. */
			pr->body_len = pr->got - pr->body_off;
			if (probe_content_length(pr, e, &cl) && cl < pr->body_len)
				pr->body_len = cl;
		}
		probe_finish(pr, pr->resp[9] == '2' ? HEALTH_OK : HEALTH_STATUS, st);
		return;
	}
	if (pr->got == 0 && eof)
		probe_finish(pr, HEALTH_CLOSED, 0);
	else
		probe_finish(pr, HEALTH_NOT_HTTP, 0);
}

/* Room for more of a whole answer: the buffer doubles up to max (plus the
 * NUL kept after it). 0, or -1 (too long, or no memory). */
static int probe_grow(struct probe *pr)
{
	size_t cap;
	char *v;

	if (pr->got + 1 < pr->cap)
		return 0;
	if (pr->cap > pr->max)
		return -1;
	cap = pr->cap * 2 < 4096 ? 4096 : pr->cap * 2;
	if (cap > pr->max + 1)
		cap = pr->max + 1;
	v = mi_malloc(cap);
	if (!v)
		return -1;
	memcpy(v, pr->resp, pr->got);
	if (pr->resp != pr->line)
		mi_free(pr->resp);
	pr->resp = v;
	pr->cap = cap;
	return 0;
}

/* Advances pr on poll revents. */
static void probe_step(struct probe *pr, short revents)
{
	if (pr->phase == PROBE_CONNECTING && (revents & (POLLOUT | POLLERR | POLLHUP))) {
		int soerr = 0;
		socklen_t sl = sizeof(soerr);
		if (getsockopt(pr->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl))
			soerr = errno;
		if (soerr) {
			probe_finish(pr, HEALTH_CONNECT, (unsigned)soerr);
			return;
		}
		pr->phase = PROBE_SENDING;
	}
	if (pr->phase == PROBE_SENDING) {
		while (pr->req_off < pr->req_len) {
			ssize_t n = send(pr->fd, pr->req + pr->req_off, pr->req_len - pr->req_off,
					 MSG_NOSIGNAL | MSG_DONTWAIT);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				if (errno == EAGAIN || errno == EWOULDBLOCK)
					return;
				probe_finish(pr, HEALTH_IO, (unsigned)errno);
				return;
			}
			pr->req_off += (size_t)n;
		}
		pr->phase = PROBE_READING;
		return; /* the answer comes later: wait for POLLIN */
	}
	if (pr->phase == PROBE_READING && (revents & (POLLIN | POLLERR | POLLHUP))) {
		for (;;) {
			ssize_t n;

			if (pr->max && probe_grow(pr)) {
				probe_finish(pr, HEALTH_NOT_HTTP, 0); /* longer than max */
				return;
			}
			n = recv(pr->fd, pr->resp + pr->got, pr->cap - 1 - pr->got, MSG_DONTWAIT);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				return;
			if (n < 0) {
				probe_finish(pr, HEALTH_IO, (unsigned)errno);
				return;
			}
			pr->got += (size_t)n;
			pr->resp[pr->got] = '\0';
			if (n == 0 || (!pr->max && pr->got >= 12) || (pr->max && probe_whole_done(pr))) {
				probe_judge(pr, n == 0);
				return;
			}
		}
	}
}

/* See probe.h. */
int probe_due(struct probe_set *ps, const char *name, uint32_t interval_ms, uint64_t now)
{
	struct probe_slot *v, *slot = NULL;
	char *copy;

	for (size_t k = 0; k < ps->nslots && !slot; k++)
		if (strcmp(ps->slots[k].name, name) == 0)
			slot = &ps->slots[k];
	if (!slot) {
		copy = mi_strdup(name);
		if (!copy)
			return -ENOMEM;
		v = mi_realloc(ps->slots, (ps->nslots + 1) * sizeof(*v));
		if (!v) {
			mi_free(copy);
			return -ENOMEM;
		}
		ps->slots = v;
		v[ps->nslots] = (struct probe_slot){ .name = copy, .last_ms = 0 };
		slot = &ps->slots[ps->nslots++];
	}
	if (slot->last_ms && now - slot->last_ms < interval_ms)
		return 0;
	slot->last_ms = now;
	return 1;
}

/* See probe.h. */
void probe_reap(struct probe_set *ps, uint64_t now)
{
	size_t k = 0;

	for (size_t i = 0; i < ps->n; i++) {
		struct probe *pr = ps->v[i];
		if (pr->phase != PROBE_DONE && now >= pr->deadline_ms)
			probe_finish(pr, HEALTH_TIMEOUT, 0);
		if (pr->phase != PROBE_DONE)
			ps->v[k++] = pr;
		else
			probe_free(pr);
	}
	ps->n = k;
}

/* See probe.h. */
int probe_poll(struct probe_set *ps, uint64_t wake_ms)
{
	uint64_t now = clock_now_ms(), wake = wake_ms;
	size_t n = 0;
	int timeout, rc;

	if (ps->n + 1 > ps->pfds_cap) {
		size_t cap = ps->n + 16;
		struct pollfd *v = mi_realloc(ps->pfds, cap * sizeof(*v));
		if (!v) {
			usleep(10000);
			return -ENOMEM;
		}
		ps->pfds = v;
		ps->pfds_cap = cap;
	}
	ps->pfds[n++] = (struct pollfd){ .fd = ps->wake_fd, .events = POLLIN };
	for (size_t i = 0; i < ps->n; i++) {
		const struct probe *pr = ps->v[i];
		ps->pfds[n++] = (struct pollfd){
			.fd = pr->fd, .events = pr->phase == PROBE_READING ? POLLIN : POLLOUT };
		if (pr->deadline_ms < wake)
			wake = pr->deadline_ms;
	}
	timeout = wake > now ? (int)(wake - now) : 0;
	rc = poll(ps->pfds, (nfds_t)n, timeout);
	if (rc <= 0)
		return 0;
	if (ps->pfds[0].revents & POLLIN) {
		uint64_t v;
		if (read(ps->wake_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
			log_error("probe: wake: %s", strerror(errno));
	}
	for (size_t i = 1; i < n; i++)
		if (ps->pfds[i].revents && ps->v[i - 1]->phase != PROBE_DONE)
			probe_step(ps->v[i - 1], ps->pfds[i].revents);
	return 0;
}

/* See probe.h. */
int probe_set_init(struct probe_set *ps)
{
	memset(ps, 0, sizeof(*ps));
	ps->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	return ps->wake_fd < 0 ? -errno : 0;
}

/* See probe.h. */
void probe_set_wake(struct probe_set *ps)
{
	uint64_t one = 1;

	if (write(ps->wake_fd, &one, sizeof(one)) < 0)
		log_error("probe: wake: %s", strerror(errno));
}

/* See probe.h. */
void probe_set_destroy(struct probe_set *ps)
{
	for (size_t i = 0; i < ps->n; i++) {
		struct probe *pr = ps->v[i];
		if (pr->phase != PROBE_DONE) {
			if (pr->fd >= 0)
				close(pr->fd);
			config_unref(pr->cfg);
		}
		probe_free(pr);
	}
	mi_free(ps->v);
	for (size_t k = 0; k < ps->nslots; k++)
		mi_free(ps->slots[k].name);
	mi_free(ps->slots);
	mi_free(ps->pfds);
	if (ps->wake_fd >= 0)
		close(ps->wake_fd);
	memset(ps, 0, sizeof(*ps));
	ps->wake_fd = -1;
}
