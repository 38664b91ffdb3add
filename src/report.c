/* report: see report.h. */
#include "ringroute/report.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ringroute/addr.h"
#include "ringroute/alloc.h"
#include "ringroute/clock.h"
#include "ringroute/log.h"

/* See report.h. The HOST[:PORT] part goes through addr_parse (port 80 when
 * absent); the Host header repeats it as written. */
int report_init(struct report *r, const char *url, char *err, size_t errlen)
{
	const char *h = url, *slash, *end;
	char why[128], hostport[80];
	size_t hl;

	r->fd = -1;
	r->phase = REPORT_IDLE;
	if (strncmp(h, "http://", 7)) {
		snprintf(err, errlen, "only http:// URLs are supported");
		return -EINVAL;
	}
	h += 7;
	slash = strchr(h, '/');
	end = slash ? slash : h + strlen(h);
	hl = (size_t)(end - h);
	if (hl == 0 || hl >= sizeof(hostport) - 3) {
		snprintf(err, errlen, hl ? "host too long" : "no host");
		return -EINVAL;
	}
	memcpy(hostport, h, hl);
	hostport[hl] = '\0';
	if (!memchr(h, ':', hl))
		memcpy(hostport + hl, ":80", 4);
	if (addr_parse(hostport, strlen(hostport), 0, &r->addr, why, sizeof(why))) {
		snprintf(err, errlen, "%s", why);
		return -EINVAL;
	}
	r->host = mi_strndup(h, hl);
	r->path = mi_strdup(slash ? slash : "/");
	r->url = mi_strdup(url);
	if (!r->host || !r->path || !r->url) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

/* Ends the report in flight, if any: back to idle. */
static void report_close(struct report *r)
{
	if (r->fd >= 0)
		close(r->fd);
	r->fd = -1;
	r->phase = REPORT_IDLE;
	sb_reset(&r->req);
	r->req_off = 0;
	r->status_len = 0;
}

void report_destroy(struct report *r)
{
	report_close(r);
	sb_free(&r->req);
	mi_free(r->url);
	r->url = NULL;
	mi_free(r->host);
	r->host = NULL;
	mi_free(r->path);
	r->path = NULL;
}

/* Ends the current report as failed; logs at most once per minute. */
static void report_fail(struct report *r, const char *why)
{
	uint64_t now = clock_now_ms();

	report_close(r);
	r->failures++;
	r->nfailed++;
	if (!r->last_log_ms || now - r->last_log_ms >= REPORT_LOG_EVERY_MS) {
		log_warn("report to %s failed: %s (%u failure%s since the last message)",
			r->url, why, r->failures, r->failures == 1 ? "" : "s");
		r->last_log_ms = now;
		r->failures = 0;
		r->failing = true;
	}
}

static void report_done(struct report *r)
{
	report_close(r);
	r->nsent++;
	if (r->failing) {
		log_info("report to %s succeeds again", r->url);
		r->failing = false;
		r->failures = 0;
		r->last_log_ms = 0;
	}
}

/* See report.h. */
void report_start(struct report *r, const char *body, uint32_t interval_ms)
{
	uint64_t now = clock_now_ms();
	size_t n = strlen(body);
	int fd;

	if (r->phase != REPORT_IDLE)
		report_fail(r, "timed out");
	if (sb_printf(&r->req,
		      "POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: ringroute\r\n"
		      "Content-Type: application/json\r\nContent-Length: %zu\r\n"
		      "Connection: close\r\n\r\n",
		      r->path, r->host, n + 1) ||
	    sb_put(&r->req, body, n) || sb_put(&r->req, "\n", 1)) {
		report_fail(r, "out of memory");
		return;
	}
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		report_fail(r, strerror(errno));
		return;
	}
	r->fd = fd;
	r->deadline_ms = now + (interval_ms < REPORT_TIMEOUT_MS ? interval_ms : REPORT_TIMEOUT_MS);
	if (connect(fd, (struct sockaddr *)&r->addr, sizeof(r->addr)) == 0) {
		r->phase = REPORT_SENDING;
	} else if (errno == EINPROGRESS) {
		r->phase = REPORT_CONNECTING;
	} else {
		char why[128];
		snprintf(why, sizeof(why), "connect: %s", strerror(errno));
		report_fail(r, why);
	}
}

void report_check_deadline(struct report *r, uint64_t now_ms)
{
	if (r->phase != REPORT_IDLE && now_ms >= r->deadline_ms)
		report_fail(r, "timed out");
}

short report_poll_events(const struct report *r)
{
	switch (r->phase) {
	case REPORT_IDLE:
		return 0;
	case REPORT_READING:
		return POLLIN;
	case REPORT_CONNECTING:
	case REPORT_SENDING:
		return POLLOUT;
	}
	return 0;
}

/* Reads the status line once the request is sent: 2xx is done, anything
 * else (or a close before a status line) failed. */
static void report_read(struct report *r)
{
	char why[160];

	for (;;) {
		ssize_t n = recv(r->fd, r->status + r->status_len,
				 sizeof(r->status) - 1 - r->status_len, MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n < 0) {
			snprintf(why, sizeof(why), "recv: %s", strerror(errno));
			report_fail(r, why);
			return;
		}
		r->status_len += (size_t)n;
		r->status[r->status_len] = '\0';
		if (n == 0 || memchr(r->status, '\n', r->status_len) ||
		    r->status_len == sizeof(r->status) - 1)
			break;
	}
	/* "HTTP/1.x NNN ..." */
	if (r->status_len >= 12 && !strncmp(r->status, "HTTP/1.", 7) && r->status[9] == '2') {
		report_done(r);
	} else {
		char *nl = strpbrk(r->status, "\r\n");
		if (nl)
			*nl = '\0';
		snprintf(why, sizeof(why), "answer \"%.60s\"",
			 r->status_len ? r->status : "(connection closed)");
		report_fail(r, why);
	}
}

/* See report.h. */
void report_step(struct report *r, short revents)
{
	char why[160];

	if (r->phase == REPORT_IDLE)
		return;
	if (r->phase == REPORT_CONNECTING && (revents & (POLLOUT | POLLERR | POLLHUP))) {
		int soerr = 0;
		socklen_t sl = sizeof(soerr);
		getsockopt(r->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
		if (soerr) {
			snprintf(why, sizeof(why), "connect: %s", strerror(soerr));
			report_fail(r, why);
			return;
		}
		r->phase = REPORT_SENDING;
	}
	if (r->phase == REPORT_SENDING) {
		while (r->req_off < r->req.len) {
			ssize_t n = send(r->fd, r->req.p + r->req_off, r->req.len - r->req_off,
					 MSG_NOSIGNAL | MSG_DONTWAIT);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				if (errno == EAGAIN || errno == EWOULDBLOCK)
					break;
				snprintf(why, sizeof(why), "send: %s", strerror(errno));
				report_fail(r, why);
				return;
			}
			r->req_off += (size_t)n;
		}
		if (r->req_off == r->req.len)
			r->phase = REPORT_READING;
	}
	if (r->phase == REPORT_READING && (revents & (POLLIN | POLLERR | POLLHUP)))
		report_read(r);
}
