/* Unit tests of the health checker's loop (health.c and the probe client
 * it runs on, probe.c, both included to reach their static functions) without a proxy or a thread: rounds are started on a
 * snapshot made by config_parse, and the poll loop is turned by hand.
 *
 * mi_strdup is replaced by one that can be made to fail, to show that a
 * failed copy of a backend name skips that backend's checks (with a
 * message) instead of crashing the checker. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <inttypes.h>
#include <stdlib.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ringroute/alloc.h"

static int strdup_fail;

static char *real_strdup(const char *s)
{
	return mi_strdup(s);
}

/* alloc.h's include guard keeps this definition for probe.c and health.c. */
#undef mi_strdup
#define mi_strdup(s) (strdup_fail ? NULL : real_strdup(s))

#include "../../src/probe.c"
#include "../../src/health.c"

/* A listening socket on 127.0.0.1 that nobody accepts on (until the test
 * does): connects complete in the kernel, nothing is ever answered. */
static int listener(uint16_t *port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 16), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
	*port = ntohs(sa.sin_port);
	return fd;
}

/* A port with nothing listening on it (bound, then closed). */
static uint16_t closed_port(void)
{
	uint16_t port;
	int fd = listener(&port);

	close(fd);
	return port;
}

/* A snapshot with backend "b" probing "/h" every interval_ms, replicas
 * r0..r<n-1> on ports[], turning on the first probe that says so. */
#define make_config(ports, n, interval_ms) make_config_rf(ports, n, interval_ms, 1, 1)
static struct config *make_config_rf(const uint16_t *ports, size_t n, unsigned interval_ms,
				     unsigned rise, unsigned fall)
{
	char doc[2048], err[512];
	struct config *c = NULL;
	size_t off;

	off = (size_t)snprintf(doc, sizeof(doc),
			       "{\"backends\": {\"b\": {\"health_check\": {\"path\": \"/h\", "
			       "\"interval_ms\": %u, \"rise\": %u, \"fall\": %u}, \"replicas\": {",
			       interval_ms, rise, fall);
	for (size_t i = 0; i < n; i++)
		off += (size_t)snprintf(doc + off, sizeof(doc) - off, "%s\"r%zu\": \"127.0.0.1:%u\"",
					i ? ", " : "", i, (unsigned)ports[i]);
	snprintf(doc + off, sizeof(doc) - off, "}}}, \"endpoints\": {}}");
	if (config_parse(doc, strlen(doc), "test", NULL, &c, err, sizeof(err)))
		fail_msg("config: %s", err);
	return c;
}

static void health_init_test(struct health *h)
{
	memset(h, 0, sizeof(*h));
	assert_int_equal(probe_set_init(&h->ps), 0);
}

static void health_fini_test(struct health *h)
{
	probe_set_destroy(&h->ps);
}

/* Turns the loop until no probe is in flight; returns the ms it took. */
static uint64_t run_probes(struct health *h, uint64_t limit_ms)
{
	uint64_t t0 = clock_now_ms();

	while (h->ps.n && clock_now_ms() - t0 < limit_ms) {
		probe_poll(&h->ps, clock_now_ms() + 50);
		probe_reap(&h->ps, clock_now_ms());
	}
	assert_int_equal(h->ps.n, 0);
	return clock_now_ms() - t0;
}

/* Captures what is written on stderr between capture_start and capture_end. */
struct capture {
	int saved, fd;
	char path[64];
};

static void capture_start(struct capture *cap)
{
	strcpy(cap->path, "/tmp/rr-test-health-XXXXXX");
	cap->fd = mkstemp(cap->path);
	assert_true(cap->fd >= 0);
	fflush(stderr);
	cap->saved = dup(2);
	dup2(cap->fd, 2);
}

static void capture_end(struct capture *cap, char *buf, size_t len)
{
	ssize_t n;

	fflush(stderr);
	dup2(cap->saved, 2);
	close(cap->saved);
	n = pread(cap->fd, buf, len - 1, 0);
	buf[n > 0 ? n : 0] = '\0';
	close(cap->fd);
	unlink(cap->path);
}

static void test_strdup_failure_skips_backend(void **state)
{
	uint16_t port = closed_port();
	struct config *c = make_config(&port, 1, 1000);
	struct capture cap;
	struct health h;
	char out[2048];
	(void)state;

	health_init_test(&h);
	capture_start(&cap);
	strdup_fail = 1;
	health_round(&h, c, clock_now_ms());
	health_round(&h, c, clock_now_ms()); /* logged once, not every tick */
	strdup_fail = 0;
	capture_end(&cap, out, sizeof(out));
	assert_int_equal(h.ps.nslots, 0);
	assert_int_equal(h.ps.n, 0);
	assert_int_equal(atomic_load(&c->backends[0].replicas[0].state->healthy), 1);
	if (!strstr(out, "out of memory") || !strstr(out, "backend b"))
		fail_msg("stderr: %s", out);
	assert_null(strstr(strstr(out, "out of memory") + 1, "out of memory"));

	/* Memory is back: the next round probes (refused: unhealthy, with why). */
	capture_start(&cap);
	health_round(&h, c, clock_now_ms());
	assert_int_equal(h.ps.nslots, 1);
	run_probes(&h, 2000);
	capture_end(&cap, out, sizeof(out));
	assert_int_equal(atomic_load(&c->backends[0].replicas[0].state->healthy), 0);
	if (!strstr(out, "replica b/r0 is unhealthy (connect: Connection refused)"))
		fail_msg("stderr: %s", out);
	health_fini_test(&h);
	config_unref(c);
}

/* Probes of replicas that never answer run side by side: five of them
 * with a 250 ms deadline take about 250 ms, not 1.25 s. */
static void test_probes_are_concurrent(void **state)
{
	enum { N = 5 };
	uint16_t ports[N];
	int fds[N];
	struct config *c;
	struct capture cap;
	struct health h;
	char out[4096];
	uint64_t ms;
	(void)state;

	for (int i = 0; i < N; i++)
		fds[i] = listener(&ports[i]);
	c = make_config(ports, N, 500);
	health_init_test(&h);
	capture_start(&cap);
	health_round(&h, c, clock_now_ms());
	assert_int_equal(h.ps.n, N);
	ms = run_probes(&h, 5000);
	capture_end(&cap, out, sizeof(out));
	if (ms >= 250u * N - 250u)
		fail_msg("%d probes took %" PRIu64 " ms: they ran one after another", N, ms);
	for (int i = 0; i < N; i++) {
		char want[64];
		assert_int_equal(atomic_load(&c->backends[0].replicas[i].state->healthy), 0);
		snprintf(want, sizeof(want), "replica b/r%d is unhealthy (timeout)", i);
		if (!strstr(out, want))
			fail_msg("no '%s' in: %s", want, out);
	}
	/* Not due again before the interval: no new probe. */
	health_round(&h, c, clock_now_ms());
	assert_int_equal(h.ps.n, 0);
	health_fini_test(&h);
	config_unref(c);
	for (int i = 0; i < N; i++)
		close(fds[i]);
}

/* The answer decides: a status line other than 2xx is "status N", a 2xx
 * one makes the replica healthy again. */
static void test_status_decides(void **state)
{
	static const char *const answers[] = {
		"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.0 204 No Content\r\n\r\n",
		"SSH-2.0-OpenSSH_9.2\r\n",
		"HTTP/1.1 200 OK\r\n\r\n",
		"",
	};
	static const char *const want[] = {
		"is unhealthy (status 503)", "is healthy", "is unhealthy (not an HTTP/1 answer)",
		"is healthy", "is unhealthy (closed without answering)",
	};
	uint16_t port;
	int lfd = listener(&port);
	struct config *c = make_config(&port, 1, 1000);
	struct health h;
	(void)state;

	health_init_test(&h);
	for (size_t i = 0; i < sizeof(answers) / sizeof(answers[0]); i++) {
		struct capture cap;
		char out[1024];
		int fd;

		capture_start(&cap);
		if (h.ps.nslots)
			h.ps.slots[0].last_ms = 0; /* due again */
		health_round(&h, c, clock_now_ms());
		assert_int_equal(h.ps.n, 1);
		fd = accept(lfd, NULL, NULL);
		assert_true(fd >= 0);
		if (answers[i][0])
			assert_int_equal(write(fd, answers[i], strlen(answers[i])),
					 (ssize_t)strlen(answers[i]));
		close(fd);
		run_probes(&h, 2000);
		capture_end(&cap, out, sizeof(out));
		if (!strstr(out, want[i]))
			fail_msg("answer %zu: no '%s' in: '%s'", i, want[i], out);
	}
	health_fini_test(&h);
	config_unref(c);
	close(lfd);
}

/* rise 2, fall 3: a replica that fails now and then stays in; fall
 * failures in a row take it out, and only rise successes in a row bring
 * it back. The last probe's reason is kept whatever the state. */
static void test_rise_and_fall(void **state)
{
	/* 1: a success, 0: a 503 */
	static const struct {
		int ok, healthy;
		const char *reason;
	} steps[] = {
		{0, 1, "status 503"}, {0, 1, "status 503"}, {1, 1, "ok"},  /* flapping: in */
		{0, 1, "status 503"}, {0, 1, "status 503"}, {0, 0, "status 503"}, /* fall */
		{1, 0, "ok"}, {0, 0, "status 503"}, {1, 0, "ok"}, {1, 1, "ok"}, /* rise */
	};
	uint16_t port;
	int lfd = listener(&port);
	struct config *c = make_config_rf(&port, 1, 1000, 2, 3);
	struct replica_state *rs = c->backends[0].replicas[0].state;
	struct health h;
	char why[96];
	(void)state;

	health_init_test(&h);
	atomic_store(&rs->up_since_ms, 1); /* turning healthy moves it; turning unhealthy does not */
	assert_int_equal(atomic_load(&rs->hc_result), 0);
	assert_string_equal(health_reason(atomic_load(&rs->hc_result), why, sizeof(why)),
			    "not probed yet");
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
		static const char bad[] = "HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n";
		struct capture cap;
		char out[1024];
		int fd;

		capture_start(&cap);
		if (h.ps.nslots)
			h.ps.slots[0].last_ms = 0; /* due again */
		health_round(&h, c, clock_now_ms());
		fd = accept(lfd, NULL, NULL);
		assert_true(fd >= 0);
		if (steps[i].ok)
			assert_int_equal(write(fd, ok, sizeof(ok) - 1), (ssize_t)sizeof(ok) - 1);
		else
			assert_int_equal(write(fd, bad, sizeof(bad) - 1), (ssize_t)sizeof(bad) - 1);
		close(fd);
		run_probes(&h, 2000);
		capture_end(&cap, out, sizeof(out));
		if ((int)atomic_load(&rs->healthy) != steps[i].healthy)
			fail_msg("step %zu: healthy %u, want %d", i, atomic_load(&rs->healthy),
				 steps[i].healthy);
		assert_string_equal(health_reason(atomic_load(&rs->hc_result), why, sizeof(why)),
				    steps[i].reason);
		/* Only the changes are logged, with how many probes agreed. */
		if (i == 5 && !strstr(out, "replica b/r0 is unhealthy (status 503): 3 probes in a row failed"))
			fail_msg("step %zu: %s", i, out);
		if (i == 9 && !strstr(out, "replica b/r0 is healthy: 2 probes in a row passed"))
			fail_msg("step %zu: %s", i, out);
		if (i != 5 && i != 9 && strstr(out, "replica b/r0"))
			fail_msg("step %zu logged: %s", i, out);
		if (i < 9)
			assert_int_equal(atomic_load(&rs->up_since_ms), 1);
		else
			assert_int_equal(atomic_load(&rs->up_since_ms), atomic_load(&rs->hc_changed_ms));
	}
	assert_true(atomic_load(&rs->hc_changed_ms) > 0);
	health_fini_test(&h);
	config_unref(c);
	close(lfd);
}

/* What a whole-answer probe (a load scrape) ended with. */
static struct {
	enum health_kind kind;
	unsigned value;
	char body[64];
	int calls;
} whole;

static void whole_done(struct probe *pr, enum health_kind kind, unsigned value)
{
	const char *b;
	size_t n = 0;

	whole.kind = kind;
	whole.value = value;
	whole.calls++;
	whole.body[0] = '\0';
	if ((b = probe_body(pr, &n)) && n < sizeof(whole.body)) {
		memcpy(whole.body, b, n);
		whole.body[n] = '\0';
	}
}

/* Whole answers (probe.c, max_body > 0): the request is HTTP/1.0; the
 * answer ends at EOF, or sooner when its Content-Length is in (a replica
 * keeping the connection open does not run into the deadline); one
 * longer than max fails. */
static void test_whole_answer(void **state)
{
	static const struct {
		const char *answer;
		int close_it;
		enum health_kind kind;
		const char *body;
	} cases[] = {
		{ "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 0, HEALTH_OK, "hello" },
		{ "HTTP/1.0 200 OK\r\ncontent-length:3\r\n\r\nabc", 0, HEALTH_OK, "abc" },
		{ "HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabcXYZ", 0, HEALTH_OK, "abc" },
		{ "HTTP/1.0 200 OK\r\n\r\nuntil eof", 1, HEALTH_OK, "until eof" },
		{ "HTTP/1.0 503 No\r\n\r\nbusy", 1, HEALTH_STATUS, "busy" },
		{ "HTTP/1.0 200 OK\r\n\r\n0123456789012345678901234567890123456789"
		  "0123456789012345678901234567890123456789"
		  "0123456789012345678901234567890123456789", 1, HEALTH_NOT_HTTP, "" },
		{ "HTTP/1.0 200 OK\r\nX: y", 1, HEALTH_NOT_HTTP, "" },
	};
	uint16_t port;
	int lfd = listener(&port);
	struct config *c = make_config(&port, 1, 1000);
	struct health h;
	(void)state;

	health_init_test(&h);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char req[256];
		ssize_t n;
		int fd;

		memset(&whole, 0, sizeof(whole));
		assert_int_equal(probe_start(&h.ps, c, &c->backends[0], &c->backends[0].replicas[0],
					     "/metrics", 100, 2000, clock_now_ms(), whole_done, NULL),
				 0);
		fd = accept(lfd, NULL, NULL);
		assert_true(fd >= 0);
		probe_poll(&h.ps, clock_now_ms() + 50); /* the connect completes, the request goes */
		n = read(fd, req, sizeof(req) - 1);
		assert_true(n > 0);
		req[n] = '\0';
		assert_non_null(strstr(req, "GET /metrics HTTP/1.0\r\n"));
		assert_int_equal(write(fd, cases[i].answer, strlen(cases[i].answer)),
				 (ssize_t)strlen(cases[i].answer));
		if (cases[i].close_it)
			close(fd);
		if (run_probes(&h, 3000) >= 1500)
			fail_msg("case %zu: waited for the deadline", i);
		assert_int_equal(whole.calls, 1);
		assert_int_equal(whole.kind, cases[i].kind);
		assert_string_equal(whole.body, cases[i].body);
		if (!cases[i].close_it)
			close(fd);
	}
	health_fini_test(&h);
	config_unref(c);
	close(lfd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_strdup_failure_skips_backend),
		cmocka_unit_test(test_probes_are_concurrent),
		cmocka_unit_test(test_status_decides),
		cmocka_unit_test(test_rise_and_fall),
		cmocka_unit_test(test_whole_answer),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
