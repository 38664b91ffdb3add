/* Active health checks: see health.h.
 *
 * One thread, one poll() loop. Every HEALTH_TICK_MS the loop looks at the
 * current snapshot; each backend whose interval has passed gets one probe
 * per replica, all started at once: a non-blocking connect, the request,
 * the status line, each with its own deadline min(interval/2, 1 s). So a
 * replica that never answers costs its own probe a timeout and delays no
 * other probe. A probe holds a reference on the snapshot it was started
 * from, which keeps its backend, replica and replica_state alive however
 * the config changes meanwhile. */
#include "ringroute/health.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ringroute/alloc.h"
#include "ringroute/clock.h"
#include "ringroute/proxy.h"
#include "ringroute/log.h"

#define HEALTH_TICK_MS      100   /* how often due backends are looked for */
#define HEALTH_MAX_PROBE_MS 1000  /* a probe's deadline: min(interval / 2, this) */

enum probe_phase {
	PROBE_CONNECTING,       /* non-blocking connect in progress: wait POLLOUT */
	PROBE_SENDING,          /* request partly sent: wait POLLOUT */
	PROBE_READING,          /* waiting for "HTTP/1.x NNN": wait POLLIN */
	PROBE_DONE,             /* result recorded, fd closed: to be removed */
};

/* One probe of one replica. */
struct hc_probe {
	struct config *cfg;     /* a reference: b and r point into it */
	const struct backend_cfg *b;
	const struct replica_cfg *r;
	int fd;
	enum probe_phase phase;
	uint64_t deadline_ms;
	char req[1024];
	size_t req_len, req_off;
	char resp[64];          /* start of the answer */
	size_t got;
};

/* Last probe time per backend, by name, across config changes. */
struct hc_slot {
	char *name;
	uint64_t last_ms;
};

struct health {
	struct proxy *p;
	pthread_t thread;
	_Atomic int stop;
	int wake_fd;            /* eventfd: health_stop() wakes the loop */
	struct hc_slot *slots;
	size_t nslots;
	struct hc_probe *probes; /* in flight; PROBE_DONE ones are compacted away */
	size_t nprobes, probes_cap;
	struct pollfd *pfds;
	size_t pfds_cap;
	bool oom_logged;        /* an out-of-memory skip was reported */
};

/* Reports an allocation failure that made the checker skip work, once
 * until the next success (it would repeat every tick otherwise). */
static void health_oom(struct health *h, const char *what, const char *backend)
{
	if (h->oom_logged)
		return;
	log_warn("health: out of memory: %s of backend %s skipped", what,
		backend);
	h->oom_logged = true;
}

/* Records the probe's result in the replica state and turns it healthy
 * after rise successes in a row, unhealthy after fall failures in a row
 * (logging the change, with the reason of a failure); closes the socket,
 * drops the snapshot reference and marks the probe done. */
static void probe_finish(struct hc_probe *pr, enum health_kind kind, unsigned value)
{
	struct replica_state *st = pr->r->state;
	uint32_t ok = kind == HEALTH_OK, healthy = atomic_load(&st->healthy);
	uint32_t result = health_result(kind, value);
	char why[96];

	/* The streak is this thread's alone: a replica is probed once per
	 * interval, and a probe ends within half of it. */
	if (ok)
		st->hc_streak = st->hc_streak > 0 ? st->hc_streak + 1 : 1;
	else
		st->hc_streak = st->hc_streak < 0 ? st->hc_streak - 1 : -1;
	atomic_store(&st->hc_result, result);
	if (ok != healthy && (ok ? (uint32_t)st->hc_streak >= pr->b->hc_rise
				 : (uint32_t)-st->hc_streak >= pr->b->hc_fall)) {
		atomic_store(&st->healthy, ok);
		atomic_store(&st->hc_changed_ms, clock_now_ms());
		if (ok) /* back: slow start ramps it up again */
			atomic_store(&st->up_since_ms, atomic_load(&st->hc_changed_ms));
		if (ok)
			log_info("replica %s/%s is healthy: %d probes in a row passed", pr->b->name,
				pr->r->id, st->hc_streak);
		else
			log_warn("replica %s/%s is unhealthy (%s): %d probes in a row failed",
				pr->b->name, pr->r->id, health_reason(result, why, sizeof(why)),
				-st->hc_streak);
	}
	if (pr->fd >= 0)
		close(pr->fd);
	pr->fd = -1;
	config_unref(pr->cfg);
	pr->cfg = NULL;
	pr->phase = PROBE_DONE;
}

static void probe_fail(struct hc_probe *pr, enum health_kind kind, int err)
{
	probe_finish(pr, kind, (unsigned)err);
}

/* Starts probing replica r of backend b (both in snapshot c, which gets a
 * reference for the probe's lifetime) with deadline timeout_ms. A probe
 * that fails at once (socket, connect refused) is finished at once. 0, or
 * -ENOMEM (nothing started, nothing changed). */
static int probe_start(struct health *h, struct config *c, const struct backend_cfg *b,
		       const struct replica_cfg *r, uint32_t timeout_ms, uint64_t now)
{
	struct hc_probe *pr;
	int n;

	if (h->nprobes == h->probes_cap) {
		size_t cap = h->probes_cap ? h->probes_cap * 2 : 16;
		struct hc_probe *v = mi_realloc(h->probes, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		h->probes = v;
		h->probes_cap = cap;
	}
	pr = &h->probes[h->nprobes++];
	memset(pr, 0, sizeof(*pr));
	config_ref(c);
	pr->cfg = c;
	pr->b = b;
	pr->r = r;
	pr->deadline_ms = now + timeout_ms;
	n = snprintf(pr->req, sizeof(pr->req),
		     "GET %s HTTP/1.1\r\nHost: ringroute-health\r\nConnection: close\r\n\r\n",
		     b->hc_path);
	pr->req_len = n > 0 && (size_t)n < sizeof(pr->req) ? (size_t)n : 0;
	pr->fd = socket(r->addr.u.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (!pr->req_len) {
		probe_fail(pr, HEALTH_PATH, 0);
		return 0;
	}
	if (pr->fd < 0) {
		probe_fail(pr, HEALTH_IO, errno);
		return 0;
	}
	if (connect(pr->fd, &r->addr.u.sa, r->addr.len) == 0)
		pr->phase = PROBE_SENDING;
	else if (errno == EINPROGRESS)
		pr->phase = PROBE_CONNECTING;
	else
		probe_fail(pr, HEALTH_CONNECT, errno);
	return 0;
}

/* Judges the answer read so far: 2xx healthy, anything else unhealthy with
 * the reason. eof: the peer closed (no more bytes will come). */
static void probe_judge(struct hc_probe *pr, bool eof)
{
	pr->resp[pr->got] = '\0';
	/* "HTTP/1.x NNN" */
	if (pr->got >= 12 && strncmp(pr->resp, "HTTP/1.", 7) == 0) {
		unsigned st = 0;
		for (int i = 9; i < 12 && pr->resp[i] >= '0' && pr->resp[i] <= '9'; i++)
			st = st * 10 + (unsigned)(pr->resp[i] - '0');
		probe_finish(pr, pr->resp[9] == '2' ? HEALTH_OK : HEALTH_STATUS, st);
		return;
	}
	if (pr->got == 0 && eof)
		probe_fail(pr, HEALTH_CLOSED, 0);
	else
		probe_fail(pr, HEALTH_NOT_HTTP, 0);
}

/* Advances pr on poll revents. */
static void probe_step(struct hc_probe *pr, short revents)
{
	if (pr->phase == PROBE_CONNECTING && (revents & (POLLOUT | POLLERR | POLLHUP))) {
		int soerr = 0;
		socklen_t sl = sizeof(soerr);
		if (getsockopt(pr->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl))
			soerr = errno;
		if (soerr) {
			probe_fail(pr, HEALTH_CONNECT, soerr);
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
				probe_fail(pr, HEALTH_IO, errno);
				return;
			}
			pr->req_off += (size_t)n;
		}
		pr->phase = PROBE_READING;
		return; /* the answer comes later: wait for POLLIN */
	}
	if (pr->phase == PROBE_READING && (revents & (POLLIN | POLLERR | POLLHUP))) {
		for (;;) {
			ssize_t n = recv(pr->fd, pr->resp + pr->got, sizeof(pr->resp) - 1 - pr->got,
					 MSG_DONTWAIT);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				return;
			if (n < 0) {
				probe_fail(pr, HEALTH_IO, errno);
				return;
			}
			pr->got += (size_t)n;
			if (n == 0 || pr->got >= 12) {
				probe_judge(pr, n == 0);
				return;
			}
		}
	}
}

/* The slot of backend name, created (last_ms 0) if new. NULL when the
 * slot or its name cannot be allocated: the caller skips the backend this
 * round (and tries again next tick). */
static struct hc_slot *health_slot(struct health *h, const char *name)
{
	struct hc_slot *v;
	char *copy;

	for (size_t k = 0; k < h->nslots; k++)
		if (strcmp(h->slots[k].name, name) == 0)
			return &h->slots[k];
	copy = mi_strdup(name);
	if (!copy)
		return NULL;
	v = mi_realloc(h->slots, (h->nslots + 1) * sizeof(*v));
	if (!v) {
		mi_free(copy);
		return NULL;
	}
	h->slots = v;
	v[h->nslots] = (struct hc_slot){ .name = copy, .last_ms = 0 };
	return &h->slots[h->nslots++];
}

/* Starts the probes of every backend of c that is due at now. */
static void health_round(struct health *h, struct config *c, uint64_t now)
{
	for (size_t i = 0; i < c->nbackends; i++) {
		const struct backend_cfg *b = &c->backends[i];
		struct hc_slot *slot;
		uint32_t t;

		if (!b->hc_path)
			continue;
		slot = health_slot(h, b->name);
		if (!slot) {
			health_oom(h, "the checks", b->name);
			continue;
		}
		if (slot->last_ms && now - slot->last_ms < b->hc_interval_ms)
			continue;
		slot->last_ms = now;
		t = b->hc_interval_ms / 2 < HEALTH_MAX_PROBE_MS ? b->hc_interval_ms / 2
								 : HEALTH_MAX_PROBE_MS;
		for (size_t r = 0; r < b->nreplicas; r++) {
			if (probe_start(h, c, b, &b->replicas[r], t, now)) {
				health_oom(h, "a probe", b->name);
				break;
			}
			h->oom_logged = false;
		}
	}
}

/* Fails every probe past its deadline, then removes the finished ones. */
static void health_reap(struct health *h, uint64_t now)
{
	size_t k = 0;

	for (size_t i = 0; i < h->nprobes; i++) {
		struct hc_probe *pr = &h->probes[i];
		if (pr->phase != PROBE_DONE && now >= pr->deadline_ms)
			probe_fail(pr, HEALTH_TIMEOUT, 0);
		if (pr->phase != PROBE_DONE)
			h->probes[k++] = *pr;
	}
	h->nprobes = k;
}

/* One turn of the loop: waits at most until next_round (or the earliest
 * probe deadline, or a wake-up) and advances every probe that got an
 * event. Returns 0, or -ENOMEM when the poll set could not grow (the turn
 * was skipped; deadlines still apply). */
static int health_poll(struct health *h, uint64_t next_round)
{
	uint64_t now = clock_now_ms(), wake = next_round;
	size_t n = 0;
	int timeout, rc;

	if (h->nprobes + 1 > h->pfds_cap) {
		size_t cap = h->nprobes + 16;
		struct pollfd *v = mi_realloc(h->pfds, cap * sizeof(*v));
		if (!v) {
			usleep(10000);
			return -ENOMEM;
		}
		h->pfds = v;
		h->pfds_cap = cap;
	}
	h->pfds[n++] = (struct pollfd){ .fd = h->wake_fd, .events = POLLIN };
	for (size_t i = 0; i < h->nprobes; i++) {
		const struct hc_probe *pr = &h->probes[i];
		h->pfds[n++] = (struct pollfd){
			.fd = pr->fd, .events = pr->phase == PROBE_READING ? POLLIN : POLLOUT };
		if (pr->deadline_ms < wake)
			wake = pr->deadline_ms;
	}
	timeout = wake > now ? (int)(wake - now) : 0;
	rc = poll(h->pfds, (nfds_t)n, timeout);
	if (rc <= 0)
		return 0;
	if (h->pfds[0].revents & POLLIN) {
		uint64_t v;
		if (read(h->wake_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
			log_error("health: wake: %s", strerror(errno));
	}
	for (size_t i = 1; i < n; i++)
		if (h->pfds[i].revents && h->probes[i - 1].phase != PROBE_DONE)
			probe_step(&h->probes[i - 1], h->pfds[i].revents);
	return 0;
}

/* Finishes nothing: closes the probes still in flight without recording a
 * result (the process is stopping) and frees the loop's state. */
static void health_teardown(struct health *h)
{
	for (size_t i = 0; i < h->nprobes; i++) {
		struct hc_probe *pr = &h->probes[i];
		if (pr->phase == PROBE_DONE)
			continue;
		if (pr->fd >= 0)
			close(pr->fd);
		config_unref(pr->cfg);
	}
	mi_free(h->probes);
	h->probes = NULL;
	h->nprobes = h->probes_cap = 0;
	for (size_t k = 0; k < h->nslots; k++)
		mi_free(h->slots[k].name);
	mi_free(h->slots);
	h->slots = NULL;
	h->nslots = 0;
	mi_free(h->pfds);
	h->pfds = NULL;
	h->pfds_cap = 0;
}

static void *health_main(void *arg)
{
	struct health *h = arg;
	uint64_t next_round = 0;

	while (!atomic_load(&h->stop)) {
		uint64_t now = clock_now_ms();

		if (now >= next_round) {
			struct config *c = proxy_config_get(h->p);
			health_round(h, c, now);
			config_unref(c);
			next_round = now + HEALTH_TICK_MS;
		}
		health_reap(h, now);
		health_poll(h, next_round);
		health_reap(h, clock_now_ms());
	}
	health_teardown(h);
	return NULL;
}

/* See health.h. */
int health_start(struct proxy *p, struct health **out)
{
	struct health *h = mi_zalloc(sizeof(*h));
	int rc;

	if (!h)
		return -ENOMEM;
	h->p = p;
	h->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (h->wake_fd < 0) {
		rc = -errno;
		goto fail_free;
	}
	rc = -pthread_create(&h->thread, NULL, health_main, h);
	if (rc)
		goto fail_close;
	*out = h;
	return 0;
fail_close:
	close(h->wake_fd);
fail_free:
	mi_free(h);
	return rc;
}

/* See health.h. */
void health_stop(struct health *h)
{
	uint64_t one = 1;

	if (!h)
		return;
	atomic_store(&h->stop, 1);
	if (write(h->wake_fd, &one, sizeof(one)) < 0)
		log_error("health: wake: %s", strerror(errno));
	pthread_join(h->thread, NULL);
	close(h->wake_fd);
	mi_free(h);
}
