/* Unit tests for the request lifecycle (src/request.c) with the real
 * shadow.c, retry.c, queue.c and router.c from rrcore, on a fake shard
 * that holds a real snapshot from config_parse (reg NULL: private replica
 * and backend states). The replica side is faked: every upstream_* function
 * is defined below (so upstream.o is never linked), records its calls and
 * follows upstream.h's contract (upstream_start hands back the connection
 * or fails with nothing started; events reach the owner through its
 * struct upstream_events; after upstream_abort none does). The client
 * protocol is a
 * fake struct req_client_ops that logs every hook, in order.
 *
 * Why: request.h promises that every request ends exactly once, in
 * req_end, recorded once in s->metrics.by_status / by_reason, that the
 * client hears of it once (on_fail or on_end, then on_released) and that
 * nothing touches the request after. The paths that break that promise
 * are the rare ones - a retry that meets a full queue, a retry whose
 * start fails, a body that cannot be forwarded, an allocation failure,
 * too many 1xx - so each is driven here directly; the sanitizer build
 * (build-asan) turns any use after free into a failure. Covered: 200,
 * 404, 405, 413 (declared and streamed), 503 queue full, queue timeout
 * (req_retry_queued and the queue tick, deadline in the past), connect
 * failure retried on the other replica then 502, a dead pooled connection
 * retried fresh, 504, 499 (req_abandon, started or queued), shadow copies,
 * and the defect cases (a)-(e) of the data-path restructuring:
 *   (a) a connect failure whose retry finds the backend queue full -> one 503;
 *   (b) the same where the retry's upstream_start fails -> one 502 (direct
 *       retry, and a retry that waited in the queue);
 *   (c) upstream_body fails -> req_body returns -1, one 503, upstream aborted;
 *   (d) the shard key copy fails (mi_strndup injected below) -> 503, never
 *       routed without its key;
 *   (e) 100 forwarded only to a client that expects it, 102/103 dropped, the
 *       9th interim response fails the request with 502.
 *
 * And a defect found while writing these: a keyed request's connect failure
 * was retried on the replica that just failed although the other one was
 * free (test_keyed_retry_other_replica).
 *
 * Issue 12: a sheddable request shed, a queued one evicted by a higher
 * priority, queue full with nothing lower, 504 deadline while queued, and
 * the remaining time in the forwarded head (one header, ours) bounding the
 * upstream timeout (test_priority_shed_evict_deadline).
 *
 * The access log line each ending writes (req_log, through a real
 * accesslog to a temp file): ids, retries of both kinds, the replica tried
 * last, queue wait and first byte (test_access_log_lines). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>
#include <jansson.h>

/* (d): make the shard key copy fail on demand. alloc.h has an include
 * guard, so request.c's own #include of it keeps this definition; this
 * works whether mi_strndup is mimalloc's function (Release) or alloc.h's
 * macro (RR_SANITIZE). fake_strndup allocates with the real mi_strndup,
 * so request.c's mi_free of the copy matches. */
#include "ringroute/alloc.h"

static int strndup_fail;  /* make the next copies fail */
static int strndup_calls;

static char *fake_strndup(const char *s, size_t n)
{
	strndup_calls++;
	if (strndup_fail)
		return NULL;
	return mi_strndup(s, n);
}
#undef mi_strndup
#define mi_strndup(s, n) fake_strndup(s, n)

#include "../../src/request.c"

#include "ringroute/upstream.h"
#include "ringroute/xring.h"

/* ---- fake xring: one shard, so nobody is ever messaged ---- */

void xring_msg(struct shard *s, struct shard *t, enum msg_kind kind)
{
	(void)s;
	(void)t;
	(void)kind;
	fail_msg("xring_msg called with a single shard");
}

/* ---- fake upstream ---- */

#define MAX_UP 32

static struct {
	int starts;                 /* upstream_start calls */
	int start_rets[8];          /* scripted results of the next calls (0 = succeed) */
	int nscript;                /* how many of start_rets are used up */
	int ridx[MAX_UP];           /* replica index of each call */
	int fresh[MAX_UP];          /* its fresh argument */
	uint32_t timeout_ms[MAX_UP]; /* its request_timeout_ms */
	int aborts, bodies, resumes;
	int body_ret;               /* upstream_body result */
	struct upstream *live[MAX_UP];
	int nlive;
} up;

static void live_add(struct upstream *u)
{
	assert_true(up.nlive < MAX_UP);
	up.live[up.nlive++] = u;
}

static void live_del(struct upstream *u)
{
	for (int i = 0; i < up.nlive; i++) {
		if (up.live[i] == u) {
			up.live[i] = up.live[--up.nlive];
			free(u);
			return;
		}
	}
	fail_msg("upstream %p is not live", (void *)u);
}

/* The request that owns u (shadow copies own theirs through shadow.c's
 * events, which this file does not look into). */
static struct request *owner_req(const struct upstream *u)
{
	return u->ev == &req_up_events ? u->owner : NULL;
}

int upstream_start(struct shard *s, const struct upstream_req *ur, struct replica_state *rs,
		   const struct rr_addr *addr, int fresh, struct upstream **out)
{
	struct request *req = ur->ev == &req_up_events ? ur->owner : NULL;
	struct upstream *u;
	int ret;

	assert_true(up.starts < MAX_UP);
	if (req) {
		assert_false(req->flags & REQ_F_ENDED);
		assert_null(req->up);
		/* The caller holds a slot on rs, the replica req names. */
		assert_ptr_equal(rs, req->rs);
		assert_true(req->ridx >= 0 && (size_t)req->ridx < req->be->nreplicas);
		assert_ptr_equal(rs, req->be->replicas[req->ridx].state);
		assert_ptr_equal(addr, &req->be->replicas[req->ridx].addr);
		assert_ptr_equal(ur->head, req->head.p);
		up.ridx[up.starts] = req->ridx;
	}
	assert_true(atomic_load(&rs->ongoing) >= 1);
	up.fresh[up.starts] = fresh;
	up.timeout_ms[up.starts] = ur->request_timeout_ms;
	up.starts++;
	ret = up.nscript < 8 ? up.start_rets[up.nscript++] : 0;
	if (ret)
		return ret; /* nothing started */
	u = calloc(1, sizeof(*u));
	assert_non_null(u);
	u->s = s;
	u->rs = rs;
	u->ev = ur->ev;
	u->owner = ur->owner;
	*out = u;
	live_add(u);
	return 0;
}

int upstream_body(struct shard *s, struct upstream *u, uint32_t bid, const char *p, size_t len)
{
	(void)s;
	(void)bid;
	(void)p;
	(void)len;
	assert_non_null(u->owner);
	if (owner_req(u))
		assert_ptr_equal(owner_req(u)->up, u);
	up.bodies++;
	return up.body_ret;
}

bool upstream_congested(const struct upstream *u)
{
	(void)u;
	return false;
}

void upstream_resume(struct shard *s, struct upstream *u)
{
	(void)s;
	(void)u;
	up.resumes++;
}

void upstream_abort(struct shard *s, struct upstream *u)
{
	(void)s;
	assert_non_null(u->owner);
	if (owner_req(u)) /* the owner forgets it right after */
		assert_ptr_equal(owner_req(u)->up, u);
	u->owner = NULL;
	up.aborts++;
	live_del(u);
}

void upstream_config_changed(struct shard *s, struct config *old)
{
	(void)s;
	(void)old;
	fail_msg("upstream_config_changed");
}

void upstream_pool_drain(struct shard *s, struct replica_state *r)
{
	(void)s;
	(void)r;
	fail_msg("upstream_pool_drain");
}

/* The replica's side of an exchange, as upstream.c drives it. */

/* The attempt failed (upstream.c up_fail): detach, close, tell the owner. */
static void up_fail(struct shard *s, struct request *req, enum up_failure f, int reused)
{
	struct upstream *u = req->up;
	const struct upstream_events *ev;

	assert_non_null(u);
	ev = u->ev;
	u->owner = NULL;
	live_del(u);
	ev->on_failed(s, req, f, reused);
}

/* A whole response on u (upstream.c up_on_head, upstream_parse, up_finish). */
static void up_respond_on(struct shard *s, struct upstream *u, int status)
{
	struct resp_head rh = {.status = status};
	const struct upstream_events *ev = u->ev;
	void *owner = u->owner;

	assert_non_null(owner);
	assert_true(ev->on_head(s, owner, &rh) >= 0);
	ev->on_body(s, owner, BID_NONE, "ok", 2);
	u->owner = NULL;
	live_del(u);
	ev->on_end(s, owner);
}

static void up_respond(struct shard *s, struct request *req, int status)
{
	assert_non_null(req->up);
	up_respond_on(s, req->up, status);
}

/* The backoff before req's retry on another replica ends now (as the
 * shard's timer wheel would fire it, RETRY_BACKOFF_BASE_MS later). */
static void backoff_ends(struct shard *s, struct request *req)
{
	assert_true(timer_armed(&req->retry_timer));
	assert_null(req->up);
	assert_null(req->rs); /* no slot held while it waits */
	timer_cancel(&s->tw, &req->retry_timer);
	retry_fire(&req->retry_timer, s);
}

/* A final head with status and no body, which the owner may refuse (a
 * retried 503 / 429: then the upstream is aborted, -1). */
static int up_head_only(struct shard *s, struct request *req, int status)
{
	struct resp_head rh = {.status = status};

	assert_non_null(req->up);
	return req->up->ev->on_head(s, req, &rh);
}

/* An interim head. Returns the owner's on_interim result. */
static int up_interim(struct shard *s, struct request *req, int status)
{
	struct resp_head rh = {.status = status};

	assert_non_null(req->up);
	return req->up->ev->on_interim(s, req, &rh);
}

/* ---- fake client protocol ---- */

struct client {
	struct request *req;        /* dropped at on_fail / on_end, like h1 */
	char log[512];              /* every hook, in order */
	int fails, ends, released, continues, heads, bodies, body_rooms;
	int fail_status, retry_after;
};

static void logf_(struct client *c, const char *fmt, ...)
{
	size_t n = strlen(c->log);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->log + n, sizeof(c->log) - n, fmt, ap);
	va_end(ap);
}

static int c_on_head(struct shard *s, struct request *req, const struct resp_head *rh)
{
	struct client *c = req->client;

	(void)s;
	assert_ptr_equal(c->req, req);
	c->heads++;
	logf_(c, "head:%d ", rh->status);
	return UP_BODY_RAW;
}

static void c_on_continue(struct shard *s, struct request *req)
{
	struct client *c = req->client;

	(void)s;
	assert_ptr_equal(c->req, req);
	c->continues++;
	logf_(c, "continue ");
}

static void c_on_body(struct shard *s, struct request *req, uint32_t bid, const char *p, size_t len)
{
	struct client *c = req->client;

	(void)s;
	(void)bid;
	(void)p;
	(void)len;
	assert_ptr_equal(c->req, req);
	c->bodies++;
}

static void c_on_end(struct shard *s, struct request *req)
{
	struct client *c = req->client;

	(void)s;
	assert_ptr_equal(c->req, req);
	assert_int_equal(c->ends + c->fails, 0);
	c->ends++;
	c->req = NULL;
	logf_(c, "end ");
}

static void c_on_fail(struct shard *s, struct request *req, int status, const char *msg,
		      int retry_after)
{
	struct client *c = req->client;

	(void)s;
	assert_non_null(msg);
	assert_ptr_equal(c->req, req);
	assert_int_equal(c->ends + c->fails, 0); /* told once */
	c->fails++;
	c->fail_status = status;
	c->retry_after = retry_after;
	c->req = NULL;
	logf_(c, "fail:%d ", status);
}

static void c_on_released(struct shard *s, void *client)
{
	struct client *c = client;

	(void)s;
	assert_null(c->req);                        /* told before */
	assert_int_equal(c->ends + c->fails, 1);
	assert_int_equal(c->released, 0);           /* released once */
	c->released++;
	logf_(c, "released ");
}

static void c_on_body_room(struct shard *s, struct request *req)
{
	struct client *c = req->client;

	(void)s;
	assert_ptr_equal(c->req, req);
	assert_non_null(req->up);
	c->body_rooms++;
}

static size_t c_pending(const struct request *req)
{
	(void)req;
	return 0;
}

static const struct req_client_ops client_ops = {
	.on_head = c_on_head,
	.on_continue = c_on_continue,
	.on_body = c_on_body,
	.on_end = c_on_end,
	.on_fail = c_on_fail,
	.on_released = c_on_released,
	.on_body_room = c_on_body_room,
	.pending = c_pending,
};

/* ---- the fake shard ---- */

/* b's replicas fail on purpose test after test: outlier ejection (tested in
 * test_outlier.c) is off there so that a choice depends only on the test. */
static const char doc[] =
	"{\"backends\": {"
	"  \"b\": {\"max_ongoing_requests\": 4, \"max_queued_requests\": 4, \"retries\": 1,"
	"         \"policy\": \"round_robin\", \"outlier_detection\": {\"consecutive_failures\": 0},"
	"         \"replicas\": {\"r1\": \"127.0.0.1:9001\", \"r2\": \"127.0.0.1:9002\"}},"
	"  \"tight\": {\"max_ongoing_requests\": 1, \"max_queued_requests\": 1, \"retries\": 1,"
	"             \"policy\": \"round_robin\","
	"             \"replicas\": {\"r1\": \"127.0.0.1:9101\", \"r2\": \"127.0.0.1:9102\"}},"
	"  \"tight2\": {\"max_ongoing_requests\": 1, \"max_queued_requests\": 2, \"retries\": 1,"
	"              \"policy\": \"round_robin\","
	"              \"replicas\": {\"r1\": \"127.0.0.1:9201\", \"r2\": \"127.0.0.1:9202\"}},"
	"  \"one\": {\"max_ongoing_requests\": 1, \"max_queued_requests\": 1,"
	"           \"replicas\": {\"r1\": \"127.0.0.1:9301\"}},"
	"  \"sb\": {\"replicas\": {\"r1\": \"127.0.0.1:9501\"}},"
	"  \"st\": {\"max_ongoing_requests\": 8, \"retries\": 2, \"retry_on\": [\"503\", \"429\"],"
	"          \"retry_budget_percent\": 0, \"policy\": \"round_robin\","
	"          \"replicas\": {\"r1\": \"127.0.0.1:9601\", \"r2\": \"127.0.0.1:9602\","
	"                       \"r3\": \"127.0.0.1:9603\"}}"
	"},"
	" \"endpoints\": {"
	"  \"x\": {\"route\": \"/x\", \"methods\": [\"GET\", \"POST\"], \"max_body_bytes\": 10,"
	"         \"traffic\": {\"b\": 1}},"
	"  \"t\": {\"route\": \"/t\", \"traffic\": {\"tight\": 1}},"
	"  \"t2\": {\"route\": \"/t2\", \"traffic\": {\"tight2\": 1}},"
	"  \"o\": {\"route\": \"/o\", \"traffic\": {\"one\": 1}},"
	"  \"p\": {\"route\": \"/p\", \"traffic\": {\"one\": 1}},"
	"  \"st\": {\"route\": \"/st\", \"traffic\": {\"st\": 1}},"
	"  \"sh\": {\"route\": \"/sh\", \"traffic\": {\"b\": 1}, \"shadow\": {\"sb\": 1}},"
	/* routing on the body: by model, with a catch-all (/m) or without (/mo) */
	"  \"m-alpha\": {\"route\": \"/m\", \"models\": [\"alpha\"], \"traffic\": {\"b\": 1}},"
	"  \"m-any\": {\"route\": \"/m\", \"traffic\": {\"one\": 1}},"
	"  \"mo\": {\"route\": \"/mo\", \"models\": [\"alpha\"], \"traffic\": {\"b\": 1}}"
	" }}";

struct fx {
	struct shard *s;
	struct shard *peers[1];
};

static llhttp_settings_t settings;

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct shard *s = calloc(1, sizeof(*s));
	char err[512];

	assert_non_null(f);
	assert_non_null(s);
	s->id = 0;
	s->proxy_nshards = 1;
	s->peers = f->peers;
	f->peers[0] = s;
	s->rng = 0x5eed;
	timer_wheel_init(&s->tw, clock_now_ms());
	list_init(&s->rearm);
	list_init(&s->dead);
	list_init(&s->flushq);
	list_init(&s->queued);
	list_init(&s->clients);
	metrics_shard_init(&s->metrics);
	if (config_parse(doc, strlen(doc), "test.json", NULL, &s->config, err, sizeof(err)))
		fail_msg("config: %s", err);
	req_shard_init(s);
	f->s = s;
	memset(&up, 0, sizeof(up));
	strndup_fail = 0;
	strndup_calls = 0;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	struct shard *s = f->s;
	uint64_t n = counter_get(&s->metrics.requests), st = 0, rs = 0;

	/* Every request ended, and was recorded once. */
	assert_int_equal(up.nlive, 0);
	for (int i = 0; i < 600; i++)
		st += counter_get(&s->metrics.by_status[i]);
	for (int i = 0; i < 32; i++)
		rs += counter_get(&s->metrics.by_reason[i]);
	assert_int_equal(st, n);
	assert_int_equal(rs, n);
	/* Every slot and queue place was given back. */
	for (size_t i = 0; i < s->config->nbackends; i++) {
		const struct backend_cfg *b = &s->config->backends[i];

		assert_int_equal(atomic_load(&b->state->queued), 0);
		assert_int_equal(atomic_load(&b->state->waiting_shards), 0);
		for (size_t k = 0; k < b->nreplicas; k++)
			assert_int_equal(atomic_load(&b->replicas[k].state->ongoing), 0);
	}
	timer_cancel(&s->tw, &s->queue_tick);
	queue_shard_teardown(s);
	config_unref(s->config);
	metrics_shard_destroy(&s->metrics);
	free(s);
	free(f);
	return 0;
}

/* Parse a request head the way h1.c does and start it. Returns the
 * request, or NULL when req_start ended it. */
static struct request *start(struct fx *f, struct client *c, const char *head)
{
	struct http_parser *hp = calloc(1, sizeof(*hp));
	const struct http_hdr *ex;
	struct req_info ri;
	llhttp_errno_t rc;

	assert_non_null(hp);
	memset(c, 0, sizeof(*c));
	llhttp_init(&hp->p, HTTP_REQUEST, &settings);
	hp->p.data = hp;
	rc = llhttp_execute(&hp->p, head, strlen(head));
	assert_int_equal(rc, HPE_PAUSED);
	assert_int_equal(hp->event, HTTP_EV_HEADERS);
	http_head_mark_hop(&hp->hd);
	memset(&ri, 0, sizeof(ri));
	ri.method = hp->p.method;
	ri.url = hp->hd.buf + hp->hd.url_off;
	ri.url_len = hp->hd.url_len;
	ri.hd = &hp->hd;
	ri.p = &hp->p;
	ri.client_ip = "192.0.2.1";
	ri.content_length = (hp->p.flags & F_CONTENT_LENGTH) ? (int64_t)hp->p.content_length : -1;
	ri.is_head = hp->p.method == HTTP_HEAD;
	ri.http10 = hp->p.http_major == 1 && hp->p.http_minor == 0;
	ex = http_head_find(&hp->hd, "expect");
	ri.chunked = (hp->p.flags & F_CHUNKED) != 0;
	ri.expect_continue = ex && ex->value_len == 12 &&
			     strncasecmp(http_hdr_value(&hp->hd, ex), "100-continue", 12) == 0;
	ri.head_bytes = (uint32_t)strlen(head);
	c->req = req_new(f->s, &client_ops, c, "192.0.2.1", 40000);
	assert_non_null(c->req);
	req_note(c->req, &ri); /* as h1_on_headers, before its checks */
	req_start(f->s, c->req, &ri);
	http_head_free(&hp->hd);
	free(hp);
	return c->req;
}

static uint64_t by_status(struct fx *f, int st) { return counter_get(&f->s->metrics.by_status[st]); }
static uint64_t by_reason(struct fx *f, enum req_reason r) { return counter_get(&f->s->metrics.by_reason[r]); }

static const struct backend_cfg *backend(struct fx *f, const char *name)
{
	const struct backend_cfg *b = config_backend(f->s->config, name);

	assert_non_null(b);
	return b;
}

static uint32_t ongoing(struct fx *f, const char *be, int idx)
{
	return atomic_load(&backend(f, be)->replicas[idx].state->ongoing);
}

/* This shard's counters of backend be (ringroute_rejected_requests_total,
 * _retries_total, _shadow_requests_total). */
static struct backend_metrics *bmetrics(struct fx *f, const char *be)
{
	struct backend_metrics *m = registry_backend_metrics(backend(f, be)->state, f->s->id);

	assert_non_null(m);
	return m;
}

/* Observations of endpoint ep's histogram at offset off ("" for unrouted). */
static uint64_t observed(struct fx *f, const char *ep, size_t off)
{
	struct endpoint_metrics *em = ep[0] ? metrics_endpoint(&f->s->metrics, ep)
					    : metrics_unrouted(&f->s->metrics);
	struct hist *h = (struct hist *)((char *)em + off);
	uint64_t n = 0;

	for (unsigned i = 0; i <= HIST_NBUCKETS; i++)
		n += counter_get(&h->bucket[i]);
	return n;
}
#define QUEUE_WAITS(f, ep) observed(f, ep, offsetof(struct endpoint_metrics, queue_wait))

/* The client failed exactly once with status, then was released. */
static void assert_failed_once(struct client *c, int status)
{
	char want[32];

	snprintf(want, sizeof(want), "fail:%d released ", status);
	assert_string_equal(c->log, want);
	assert_int_equal(c->fails, 1);
	assert_int_equal(c->fail_status, status);
	assert_int_equal(c->retry_after, status == 503 ? 1 : 0);
	assert_int_equal(c->released, 1);
	assert_null(c->req);
}

#define GET(path) "GET " path " HTTP/1.1\r\nHost: a\r\n\r\n"

/* ---- priorities and deadlines (issue 12) ---- */

#define GETH(path, hdrs) "GET " path " HTTP/1.1\r\nHost: a\r\n" hdrs "\r\n"

/* Each ending is told once: shed (at once), evicted (the queued one, by a
 * higher priority), queue full (nothing lower), deadline (504 while
 * queued); the remaining time goes to the replica and bounds its timeout. */
static void test_priority_shed_evict_deadline(void **state)
{
	struct fx *f = *state;
	struct client a, b, c, d, e, g;
	struct request *gr;

	assert_non_null(start(f, &a, GET("/p")));                 /* the slot */
	assert_non_null(start(f, &b, GETH("/p", "X-Request-Priority: 0\r\n")));
	assert_true(queue_entry_queued(&b.req->qe));
	assert_null(start(f, &c, GETH("/p", "X-Request-Priority: -1\r\n")));
	assert_failed_once(&c, 503);
	assert_int_equal(by_reason(f, REQ_R_SHED), 1);
	assert_non_null(start(f, &d, GETH("/p", "X-Request-Priority: 2\r\n")));
	assert_failed_once(&b, 503);                              /* its place went to d */
	assert_int_equal(by_reason(f, REQ_R_EVICTED), 1);
	assert_int_equal(counter_get(&bmetrics(f, "one")->by_reason[REQ_R_EVICTED]), 1);
	assert_int_equal(QUEUE_WAITS(f, "p"), 1);                 /* b's wait ended */
	assert_null(start(f, &e, GETH("/p", "X-Request-Priority: 2\r\n")));
	assert_failed_once(&e, 503);                              /* nothing lower: full */
	assert_int_equal(by_reason(f, REQ_R_QUEUE_FULL), 1);
	d.req->qe.req_deadline_us = 1;                            /* its deadline passed */
	assert_int_equal(req_retry_queued(f->s), 0);
	assert_string_equal(d.log, "fail:504 released ");
	assert_int_equal(by_reason(f, REQ_R_DEADLINE), 1);

	/* Queued with 5 s left; dispatched when a's slot frees. */
	gr = start(f, &g, GETH("/p", "X-Request-Timeout-Ms: 5000\r\nX-Request-Timeout-Ms: 7\r\n"));
	assert_non_null(gr);
	assert_true(queue_entry_queued(&gr->qe));
	req_body_done(f->s, a.req);
	up_respond(f->s, a.req, 200);
	assert_int_equal(req_retry_queued(f->s), 1);
	assert_int_equal(up.starts, 2);
	assert_true(up.timeout_ms[1] <= 5000 && up.timeout_ms[1] > 4000);
	{
		/* one X-Request-Timeout-Ms, ours, last; the head still ends */
		const char *h = gr->head.p, *x = strstr(h, "X-Request-Timeout-Ms: ");
		unsigned long v;
		assert_non_null(x);
		assert_null(strstr(x + 1, "X-Request-Timeout-Ms"));
		assert_null(strcasestr(h, "x-request-timeout-ms: 7"));
		v = strtoul(x + 22, NULL, 10);
		assert_true(v <= 5000 && v > 4000);
		assert_int_equal(memcmp(h + gr->head.len - 4, "\r\n\r\n", 4), 0);
		assert_ptr_equal(strchr(x, '\n') + 3, h + gr->head.len);
	}
	req_body_done(f->s, gr);
	up_respond(f->s, gr, 200);
	assert_string_equal(g.log, "head:200 end released ");
	/* a completed exchange is a service time sample */
	assert_true(queue_service_median(backend(f, "one")->state) > 0);
}

/* ---- plain outcomes ---- */

static void test_ok(void **state)
{
	struct fx *f = *state;
	struct client c;
	struct request *req = start(f, &c, GET("/x"));
	const struct endpoint_metrics *em;

	assert_non_null(req);
	assert_int_equal(up.starts, 1);
	assert_false(req_body_blocked(req));
	req_body_done(f->s, req);
	em = req->em;
	up_respond(f->s, req, 200);
	assert_string_equal(c.log, "head:200 end released ");
	assert_int_equal(c.bodies, 1);
	assert_int_equal(by_status(f, 200), 1);
	assert_int_equal(by_reason(f, REQ_R_OK), 1);
	assert_int_equal(counter_get((counter_t *)&em->status[200]), 1);
	assert_int_equal(up.aborts, 0);
}

static void test_404_no_route(void **state)
{
	struct fx *f = *state;
	struct client c;

	assert_null(start(f, &c, GET("/nowhere")));
	assert_failed_once(&c, 404);
	assert_int_equal(by_status(f, 404), 1);
	assert_int_equal(by_reason(f, REQ_R_NO_ROUTE), 1);
	assert_int_equal(up.starts, 0);
	/* counted under endpoint "" */
	assert_int_equal(counter_get(&metrics_unrouted(&f->s->metrics)->status[404]), 1);
	assert_int_equal(observed(f, "", offsetof(struct endpoint_metrics, total)), 1);
}

static void test_405(void **state)
{
	struct fx *f = *state;
	struct client c;

	assert_null(start(f, &c, "DELETE /x HTTP/1.1\r\nHost: a\r\n\r\n"));
	assert_failed_once(&c, 405);
	assert_int_equal(by_status(f, 405), 1);
	assert_int_equal(by_reason(f, REQ_R_METHOD_NOT_ALLOWED), 1);
	assert_int_equal(up.starts, 0);
	/* counted under the endpoint it matched, not as unrouted */
	assert_int_equal(counter_get(&metrics_endpoint(&f->s->metrics, "x")->status[405]), 1);
	assert_int_equal(counter_get(&metrics_unrouted(&f->s->metrics)->status[405]), 0);
}

static void test_413_declared(void **state)
{
	struct fx *f = *state;
	struct client c;

	/* max_body_bytes 10: refused from the head, never routed. */
	assert_null(start(f, &c, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n"));
	assert_failed_once(&c, 413);
	assert_int_equal(by_status(f, 413), 1);
	assert_int_equal(by_reason(f, REQ_R_BODY_TOO_LARGE), 1);
	assert_int_equal(up.starts, 0);
}

static void test_413_streamed(void **state)
{
	struct fx *f = *state;
	struct client c;
	struct request *req =
		start(f, &c, "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");

	assert_non_null(req);
	assert_int_equal(req_body(f->s, req, BID_NONE, "12345678", 8), 0);
	assert_int_equal(up.bodies, 1);
	assert_int_equal(req_body(f->s, req, BID_NONE, "12345678", 8), -1);
	assert_failed_once(&c, 413);
	assert_int_equal(up.aborts, 1);
	assert_int_equal(up.bodies, 1);
	assert_int_equal(by_status(f, 413), 1);
	assert_int_equal(ongoing(f, "b", 0) + ongoing(f, "b", 1), 0);
}

static void test_503_queue_full(void **state)
{
	struct fx *f = *state;
	struct client a, b, c;

	assert_non_null(start(f, &a, GET("/o")));
	assert_non_null(start(f, &b, GET("/o")));  /* queued */
	assert_int_equal(up.starts, 1);
	assert_true(queue_entry_queued(&b.req->qe));
	assert_true(req_body_blocked(b.req));
	assert_string_equal(b.log, "");
	assert_null(start(f, &c, GET("/o")));      /* max_queued_requests 1 */
	assert_failed_once(&c, 503);
	assert_int_equal(by_reason(f, REQ_R_QUEUE_FULL), 1);
	assert_int_equal(counter_get(&bmetrics(f, "one")->by_reason[REQ_R_QUEUE_FULL]), 1);
	assert_int_equal(QUEUE_WAITS(f, "o"), 0); /* refused, never waited */

	/* a's slot goes to b, the queue's first. */
	req_body_done(f->s, a.req);
	up_respond(f->s, a.req, 200);
	assert_int_equal(f->s->retry_pending, 1);
	assert_int_equal(req_retry_queued(f->s), 1);
	assert_int_equal(f->s->retry_pending, 0);
	assert_int_equal(up.starts, 2);
	assert_false(queue_entry_queued(&b.req->qe));
	assert_int_equal(QUEUE_WAITS(f, "o"), 1); /* b's wait, observed as it ends */
	assert_int_equal(b.body_rooms, 1); /* it may send its body now */
	req_body_done(f->s, b.req);
	up_respond(f->s, b.req, 201);
	assert_string_equal(b.log, "head:201 end released ");
	assert_int_equal(by_status(f, 503), 1);
	assert_int_equal(by_status(f, 200), 1);
	assert_int_equal(by_status(f, 201), 1);
}

static void test_queue_timeout(void **state)
{
	struct fx *f = *state;
	struct client a, b, c;

	assert_non_null(start(f, &a, GET("/o")));
	assert_non_null(start(f, &b, GET("/o")));
	assert_true(queue_entry_queued(&b.req->qe));
	assert_true(b.req->qe.deadline_us > b.req->qe.t_queued_us);

	/* Its deadline passed: the next retry answers 503. */
	b.req->qe.deadline_us = 1;
	assert_int_equal(req_retry_queued(f->s), 0);
	assert_failed_once(&b, 503);
	assert_int_equal(by_reason(f, REQ_R_QUEUE_TIMEOUT), 1);
	assert_int_equal(atomic_load(&backend(f, "one")->state->queued), 0);
	assert_int_equal(atomic_load(&backend(f, "one")->state->waiting_shards), 0);

	/* The same through the queue tick (every QUEUE_TICK_MS). */
	assert_non_null(start(f, &c, GET("/o")));
	assert_true(queue_entry_queued(&c.req->qe));
	assert_true(timer_armed(&f->s->queue_tick));
	c.req->qe.deadline_us = 1;
	timer_advance(&f->s->tw, f->s->tw.now_ms + QUEUE_TICK_MS, f->s);
	assert_failed_once(&c, 503);
	assert_int_equal(by_reason(f, REQ_R_QUEUE_TIMEOUT), 2);
	assert_int_equal(counter_get(&bmetrics(f, "one")->by_reason[REQ_R_QUEUE_TIMEOUT]), 2);
	assert_int_equal(QUEUE_WAITS(f, "o"), 2); /* waits that timed out are observed too */

	req_body_done(f->s, a.req);
	up_respond(f->s, a.req, 200);
	assert_int_equal(by_status(f, 503), 2);
	assert_int_equal(up.starts, 1);
}

static void test_connect_retry_other_then_502(void **state)
{
	struct fx *f = *state;
	struct client c;
	struct request *req = start(f, &c, GET("/x"));

	assert_non_null(req);
	assert_int_equal(up.starts, 1);
	up_fail(f->s, req, UP_FAIL_CONNECT, 0);
	/* Retried on the other replica after the backoff, and the client may
	 * send its body. */
	assert_int_equal(up.starts, 1);
	assert_int_equal(ongoing(f, "b", up.ridx[0]), 0);
	backoff_ends(f->s, req);
	assert_int_equal(up.starts, 2);
	assert_int_not_equal(up.ridx[1], up.ridx[0]);
	assert_int_equal(up.fresh[1], 0);
	assert_ptr_equal(c.req, req);
	assert_string_equal(c.log, "");
	assert_int_equal(c.body_rooms, 1);
	assert_int_equal(ongoing(f, "b", up.ridx[0]), 0);
	assert_int_equal(ongoing(f, "b", up.ridx[1]), 1);
	/* retries 1: the second failure is answered. */
	up_fail(f->s, req, UP_FAIL_CONNECT, 0);
	assert_int_equal(up.starts, 2);
	assert_failed_once(&c, 502);
	assert_int_equal(by_status(f, 502), 1);
	assert_int_equal(by_reason(f, REQ_R_UPSTREAM_CONNECT_FAILED), 1);
	assert_int_equal(counter_get(&bmetrics(f, "b")->retries), 1);
}

static void test_dead_pooled_connection_retried_fresh(void **state)
{
	struct fx *f = *state;
	struct client c;
	/* POST: a reset of the fresh connection is not retried elsewhere. */
	struct request *req = start(f, &c, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");

	assert_non_null(req);
	up_fail(f->s, req, UP_FAIL_RESET, 1);
	assert_int_equal(up.starts, 2);
	assert_int_equal(up.ridx[1], up.ridx[0]); /* same replica, new connection */
	assert_int_equal(up.fresh[1], 1);
	/* Once only; a reset after the request went out is not retried. */
	up_fail(f->s, req, UP_FAIL_RESET, 1);
	assert_int_equal(up.starts, 2);
	assert_failed_once(&c, 502);
	assert_int_equal(by_reason(f, REQ_R_UPSTREAM_RESET), 1);
	assert_int_equal(counter_get(&bmetrics(f, "b")->retries), 1);
}

static void test_504_timeout(void **state)
{
	struct fx *f = *state;
	struct client c;
	struct request *req = start(f, &c, GET("/x"));

	assert_non_null(req);
	up_fail(f->s, req, UP_FAIL_TIMEOUT, 0);
	assert_int_equal(up.starts, 1); /* it may have run: never retried */
	assert_failed_once(&c, 504);
	assert_int_equal(by_status(f, 504), 1);
	assert_int_equal(by_reason(f, REQ_R_UPSTREAM_TIMEOUT), 1);
}

static void test_499_abandon(void **state)
{
	struct fx *f = *state;
	struct client a, b;

	/* Started: the replica is cut, the client is not told. */
	assert_non_null(start(f, &a, GET("/o")));
	assert_non_null(start(f, &b, GET("/o"))); /* queued */
	req_abandon(f->s, b.req, REQ_R_CLIENT_ABORT);
	b.req = NULL;
	assert_string_equal(b.log, "");
	assert_int_equal(atomic_load(&backend(f, "one")->state->queued), 0);
	req_abandon(f->s, a.req, REQ_R_CLIENT_ABORT);
	a.req = NULL;
	assert_string_equal(a.log, "");
	assert_int_equal(up.aborts, 1);
	assert_int_equal(by_status(f, 499), 2);
	assert_int_equal(by_reason(f, REQ_R_CLIENT_ABORT), 2);
	assert_int_equal(ongoing(f, "one", 0), 0);
}

static void test_shadow(void **state)
{
	struct fx *f = *state;
	struct client a, b;
	struct request *req;
	struct upstream *sh;

	/* The copy is started with the original and lives on after it. */
	req = start(f, &a, "POST /sh HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\n");
	assert_non_null(req);
	assert_int_equal(up.starts, 2);
	assert_int_equal(up.nlive, 2);
	assert_int_equal(req_body(f->s, req, BID_NONE, "abcd", 4), 0);
	assert_int_equal(up.bodies, 2); /* the original and its copy */
	req_body_done(f->s, req);
	up_respond(f->s, req, 200);
	assert_int_equal(up.nlive, 1);
	sh = up.live[0];
	assert_null(owner_req(sh)); /* a shadow copy's own exchange */
	up_respond_on(f->s, sh, 500); /* discarded, not recorded */
	assert_int_equal(by_status(f, 200), 1);
	assert_int_equal(by_status(f, 500), 0);

	/* The original fails before its body is complete: the copy is cut. */
	req = start(f, &b, "POST /sh HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\n");
	assert_non_null(req);
	assert_int_equal(req_body(f->s, req, BID_NONE, "ab", 2), 0);
	up_fail(f->s, req, UP_FAIL_TIMEOUT, 0);
	assert_failed_once(&b, 504);
	assert_int_equal(up.nlive, 0);
	assert_int_equal(up.aborts, 1);
	assert_int_equal(counter_get(&f->s->metrics.requests), 2);
	assert_int_equal(counter_get(&bmetrics(f, "sb")->shadow[SHADOW_SENT]), 2);
	assert_int_equal(counter_get(&bmetrics(f, "sb")->shadow[SHADOW_CUT_INCOMPLETE]), 1);
}

/* ---- the defect cases ---- */

/* (a) A connect failure whose retry finds the backend queue full: the
 * retry queues behind the waiter (no barging), the queue is full, so the
 * request ends with one 503 - and the failure path must not touch it
 * after that. */
static void test_defect_a_retry_queue_full(void **state)
{
	struct fx *f = *state;
	struct client a, b, c;
	int ra;

	assert_non_null(start(f, &a, GET("/t")));
	assert_non_null(start(f, &b, GET("/t")));
	assert_int_equal(up.starts, 2);
	ra = up.ridx[0];
	assert_int_not_equal(up.ridx[1], ra);
	assert_non_null(start(f, &c, GET("/t"))); /* both replicas full: queued */
	assert_true(queue_entry_queued(&c.req->qe));

	up_fail(f->s, a.req, UP_FAIL_CONNECT, 0);
	backoff_ends(f->s, a.req);
	assert_failed_once(&a, 503);
	assert_int_equal(by_reason(f, REQ_R_QUEUE_FULL), 1);
	assert_int_equal(up.starts, 2);
	assert_int_equal(ongoing(f, "tight", ra), 0);
	assert_int_equal(f->s->retry_pending, 1);

	/* The freed slot goes to the waiter. */
	assert_int_equal(req_retry_queued(f->s), 1);
	assert_int_equal(up.starts, 3);
	assert_int_equal(up.ridx[2], ra);
	req_body_done(f->s, b.req);
	up_respond(f->s, b.req, 200);
	req_body_done(f->s, c.req);
	up_respond(f->s, c.req, 200);
	assert_int_equal(by_status(f, 503), 1);
	assert_int_equal(by_status(f, 200), 2);
}

/* (b) The retry's upstream_start fails: one 502, its slot given back. */
static void test_defect_b_retry_start_fails(void **state)
{
	struct fx *f = *state;
	struct client a, b;
	int ra;

	assert_non_null(start(f, &a, GET("/t")));
	assert_non_null(start(f, &b, GET("/t")));
	ra = up.ridx[0];
	up.start_rets[up.nscript] = -EMFILE; /* the next start */
	up_fail(f->s, a.req, UP_FAIL_CONNECT, 0);
	backoff_ends(f->s, a.req);
	assert_int_equal(up.starts, 3);
	assert_failed_once(&a, 502);
	assert_int_equal(by_reason(f, REQ_R_UPSTREAM_CONNECT_FAILED), 1);
	assert_int_equal(ongoing(f, "tight", ra), 0);
	req_body_done(f->s, b.req);
	up_respond(f->s, b.req, 200);
	assert_int_equal(by_status(f, 502), 1);
	assert_int_equal(by_status(f, 200), 1);
}

/* (b) again, where the retry first waited in the queue and its start
 * fails when it leaves it (req_retry_queued -> req_dispatch from_queue). */
static void test_defect_b_queued_retry_start_fails(void **state)
{
	struct fx *f = *state;
	struct client a, b, c;
	int ra, rb;

	assert_non_null(start(f, &a, GET("/t2")));
	assert_non_null(start(f, &b, GET("/t2")));
	ra = up.ridx[0];
	rb = up.ridx[1];
	assert_non_null(start(f, &c, GET("/t2"))); /* queued */
	up_fail(f->s, a.req, UP_FAIL_CONNECT, 0);
	backoff_ends(f->s, a.req);
	/* max_queued_requests 2: a waits behind c. */
	assert_non_null(a.req);
	assert_string_equal(a.log, "");
	assert_true(queue_entry_queued(&a.req->qe));
	assert_int_equal(req_retry_queued(f->s), 1); /* c takes a's old slot */
	assert_int_equal(up.starts, 3);
	assert_int_equal(up.ridx[2], ra);
	assert_true(queue_entry_queued(&a.req->qe));

	up.start_rets[up.nscript] = -EMFILE;
	req_body_done(f->s, b.req);
	up_respond(f->s, b.req, 200);
	assert_int_equal(f->s->retry_pending, 1);
	assert_int_equal(req_retry_queued(f->s), 1);
	assert_int_equal(up.starts, 4);
	assert_int_equal(up.ridx[3], rb);
	assert_failed_once(&a, 502);
	assert_int_equal(ongoing(f, "tight2", rb), 0);
	req_body_done(f->s, c.req);
	up_respond(f->s, c.req, 200);
	assert_int_equal(by_status(f, 502), 1);
	assert_int_equal(by_status(f, 200), 2);
}

/* (c) The body cannot be forwarded: the replica would wait forever. */
static void test_defect_c_body_forward_fails(void **state)
{
	struct fx *f = *state;
	struct client c;
	struct request *req = start(f, &c, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n");

	assert_non_null(req);
	up.body_ret = -ENOMEM;
	assert_int_equal(req_body(f->s, req, BID_NONE, "hello", 5), -1);
	assert_int_equal(up.bodies, 1);
	assert_failed_once(&c, 503);
	assert_int_equal(up.aborts, 1);
	assert_int_equal(up.nlive, 0);
	assert_int_equal(by_status(f, 503), 1);
	assert_int_equal(by_reason(f, REQ_R_NO_MEMORY), 1);
}

/* (d) The shard key cannot be copied: 503, never routed without it (that
 * would break stickiness silently). */
static void test_defect_d_shard_key_alloc(void **state)
{
	struct fx *f = *state;
	struct client a, b;
	struct request *req;

	strndup_fail = 1;
	assert_null(start(f, &a, "GET /x HTTP/1.1\r\nHost: a\r\nX-Serve-Shard-Key: user-7\r\n\r\n"));
	assert_int_equal(strndup_calls, 1); /* the injection reached request.c */
	assert_failed_once(&a, 503);
	assert_int_equal(by_reason(f, REQ_R_NO_MEMORY), 1);
	assert_int_equal(up.starts, 0);

	/* With memory, the key is kept and routed with. */
	strndup_fail = 0;
	req = start(f, &b, "GET /x HTTP/1.1\r\nHost: a\r\nX-Serve-Shard-Key: user-7\r\n\r\n");
	assert_non_null(req);
	assert_int_equal(strndup_calls, 2);
	assert_int_equal(req->shard_key_len, 6);
	assert_memory_equal(req->shard_key, "user-7", 6);
	assert_int_equal(up.starts, 1);
	req_body_done(f->s, req);
	up_respond(f->s, req, 200);
	assert_int_equal(by_status(f, 503), 1);
	assert_int_equal(by_status(f, 200), 1);
}

/* (e) Interim responses. */
static void test_defect_e_interim(void **state)
{
	struct fx *f = *state;
	struct client a, b;
	struct request *req;

	/* A client that asked for 100-continue gets the 100 only. */
	req = start(f, &a, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
			   "Expect: 100-continue\r\n\r\n");
	assert_non_null(req);
	assert_true(req->expect_continue);
	assert_int_equal(up_interim(f->s, req, 100), 0);
	assert_int_equal(a.continues, 1);
	assert_int_equal(up_interim(f->s, req, 102), 0);
	assert_int_equal(up_interim(f->s, req, 103), 0);
	assert_int_equal(a.continues, 1);
	assert_int_equal(a.heads, 0);
	/* Up to REQ_MAX_INTERIM of them; the next one is a broken replica. */
	for (int i = 3; i < REQ_MAX_INTERIM; i++)
		assert_int_equal(up_interim(f->s, req, 103), 0);
	assert_ptr_equal(a.req, req);
	assert_int_equal(up_interim(f->s, req, 103), -1);
	assert_string_equal(a.log, "continue fail:502 released ");
	assert_int_equal(a.fails, 1);
	assert_int_equal(a.released, 1);
	assert_int_equal(up.aborts, 1);
	assert_int_equal(by_reason(f, REQ_R_UPSTREAM_BAD_RESPONSE), 1);

	/* A client that did not ask gets no 100 either. */
	req = start(f, &b, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n");
	assert_non_null(req);
	assert_false(req->expect_continue);
	assert_int_equal(up_interim(f->s, req, 100), 0);
	assert_int_equal(up_interim(f->s, req, 102), 0);
	assert_int_equal(b.continues, 0);
	assert_int_equal(req_body(f->s, req, BID_NONE, "hello", 5), 0);
	req_body_done(f->s, req);
	up_respond(f->s, req, 200);
	assert_string_equal(b.log, "head:200 end released ");
	assert_int_equal(by_status(f, 502), 1);
	assert_int_equal(by_status(f, 200), 1);
}

/* A request with a shard key whose connect fails is retried on another
 * replica when one has a free slot (README "Retries"). Before
 * router_pick_replica_avoid, pick_replica asked the router four times and
 * took what it got; with a key the rendezvous order is fixed, so the
 * failed replica came back every time (8 of 8 keys here). */
static void test_keyed_retry_other_replica(void **state)
{
	struct fx *f = *state;
	int same = 0;

	for (int k = 0; k < 8; k++) {
		char head[128];
		struct client c;
		struct request *req;

		snprintf(head, sizeof(head),
			 "GET /x HTTP/1.1\r\nHost: a\r\nX-Serve-Shard-Key: user-%d\r\n\r\n", k);
		up.starts = 0;
		req = start(f, &c, head);
		assert_non_null(req);
		up_fail(f->s, req, UP_FAIL_CONNECT, 0);
		backoff_ends(f->s, req);
		assert_int_equal(up.starts, 2);
		same += up.ridx[1] == up.ridx[0];
		req_abandon(f->s, c.req, REQ_R_CLIENT_ABORT);
	}
	if (same)
		fail_msg("%d of 8 keyed connect-failure retries went back to the failed "
			 "replica while the other one was free", same);
}

/* ---- retry_on, the retry budget, the backoff ---- */

/* retry_decide over its inputs: the cause, retry_on, the method, tries
 * left, what the request still may replay. */
static void test_retry_decide_table(void **state)
{
	struct backend_cfg be = {.retries = 2, .retry_on = RETRY_ON_DEFAULT};
	struct replica_state rs;
	struct request r = {.be = &be, .idempotent = true, .rs = &rs};
	(void)state;

	assert_int_equal(retry_decide(&r, RETRY_CAUSE_CONNECT, 0), RETRY_OTHER);
	assert_int_equal(retry_decide(&r, RETRY_CAUSE_RESET, 0), RETRY_OTHER);
	assert_int_equal(retry_decide(&r, RETRY_CAUSE_503, 0), RETRY_NONE);
	assert_int_equal(retry_decide(&r, RETRY_CAUSE_429, 0), RETRY_NONE);
	assert_int_equal(retry_decide(&r, RETRY_CAUSE_TIMEOUT, 0), RETRY_NONE);
	assert_int_equal(retry_decide(&r, RETRY_CAUSE_OTHER, 0), RETRY_NONE);
	/* a dead pooled connection: fresh, once, whatever the method */
	r.idempotent = false;
	assert_int_equal(retry_decide(&r, RETRY_CAUSE_RESET, 1), RETRY_FRESH);
	assert_int_equal(retry_decide(&r, RETRY_CAUSE_TIMEOUT, 1), RETRY_NONE);
	r.flags = REQ_F_FRESH_DONE;
	/* POST reset: may have run; a connect failure never reached it */
	assert_int_equal(retry_decide(&r, RETRY_CAUSE_RESET, 1), RETRY_NONE);
	assert_int_equal(retry_decide(&r, RETRY_CAUSE_RESET, 0), RETRY_NONE);
	assert_int_equal(retry_decide(&r, RETRY_CAUSE_CONNECT, 0), RETRY_OTHER);
	/* the idempotency rule holds whatever retry_on says */
	be.retry_on = RETRY_ON_RESET | RETRY_ON_503 | RETRY_ON_429;
	assert_int_equal(retry_decide(&r, RETRY_CAUSE_RESET, 0), RETRY_NONE);
	assert_int_equal(retry_decide(&r, RETRY_CAUSE_CONNECT, 0), RETRY_NONE);
	assert_int_equal(retry_decide(&r, RETRY_CAUSE_503, 0), RETRY_OTHER);
	assert_int_equal(retry_decide(&r, RETRY_CAUSE_429, 0), RETRY_OTHER);
	/* tries used up, or nothing kept to replay */
	r.tries = 2;
	assert_int_equal(retry_decide(&r, RETRY_CAUSE_503, 0), RETRY_NONE);
	r.tries = 1;
	r.flags |= REQ_F_NO_REPLAY;
	assert_int_equal(retry_decide(&r, RETRY_CAUSE_503, 0), RETRY_NONE);
	r.flags = 0;
	be.retries = 0;
	assert_int_equal(retry_decide(&r, RETRY_CAUSE_503, 0), RETRY_NONE);

	assert_true(retry_idempotent(HTTP_GET) && retry_idempotent(HTTP_HEAD) &&
		    retry_idempotent(HTTP_OPTIONS) && retry_idempotent(HTTP_TRACE) &&
		    retry_idempotent(HTTP_PUT) && retry_idempotent(HTTP_DELETE));
	assert_false(retry_idempotent(HTTP_POST) || retry_idempotent(HTTP_PATCH) ||
		     retry_idempotent(HTTP_CONNECT));
}

static void test_budget_and_backoff_arithmetic(void **state)
{
	struct backend_state bs;
	uint64_t rng = 12345;
	(void)state;

	/* the floor: a quiet backend may retry */
	assert_true(retry_budget_allows(0, 1, 20));
	assert_true(retry_budget_allows(2, 1, 20));
	assert_false(retry_budget_allows(3, 1, 20));
	assert_false(retry_budget_allows(3, 10, 0));
	/* past the floor, the share */
	assert_true(retry_budget_allows(19, 100, 20));
	assert_false(retry_budget_allows(20, 100, 20));
	assert_true(retry_budget_allows(99, 100, 100));
	assert_false(retry_budget_allows(100, 100, 100));
	assert_false(retry_budget_allows(UINT32_MAX, UINT32_MAX, 100)); /* no overflow */

	memset(&bs, 0, sizeof(bs));
	atomic_store(&bs.inflight, 20);
	for (int i = 0; i < 4; i++)
		assert_int_equal(retry_budget_take(&bs, 20), 1);
	assert_int_equal(retry_budget_take(&bs, 20), 0);
	assert_int_equal(atomic_load(&bs.retrying), 4);
	retry_budget_put(&bs);
	assert_int_equal(retry_budget_take(&bs, 20), 1);

	/* backoff: base * attempt, upper half jittered, never 0 */
	for (uint32_t a = 1; a <= 3; a++) {
		uint32_t lo = UINT32_MAX, hi = 0;
		for (int i = 0; i < 1000; i++) {
			uint32_t d = retry_backoff_ms(&rng, a);
			lo = d < lo ? d : lo;
			hi = d > hi ? d : hi;
		}
		assert_true(lo >= RETRY_BACKOFF_BASE_MS * a / 2);
		assert_true(hi <= RETRY_BACKOFF_BASE_MS * a);
		assert_true(hi > lo); /* jittered */
	}

	assert_int_equal(retry_after_seconds("5", 1), 5);
	assert_int_equal(retry_after_seconds(" 12 ", 4), 12);
	assert_int_equal(retry_after_seconds("0", 1), 0);
	assert_int_equal(retry_after_seconds("", 0), 0);
	assert_int_equal(retry_after_seconds("-1", 2), 0);
	assert_int_equal(retry_after_seconds("1.5", 3), 0);
	assert_int_equal(retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", 29), 0);
	assert_int_equal(retry_after_seconds("99999999999999999999", 20), RETRY_AFTER_MAX_S);
}

/* retry_on ["503", "429"]: the replica's 503 is never forwarded, the
 * request goes to another replica after the backoff; the last try's 503
 * (retries 2) goes to the client as is. */
static void test_503_retried_then_forwarded(void **state)
{
	struct fx *f = *state;
	struct client c, d;
	struct request *req = start(f, &c, GET("/st"));

	assert_int_equal(up_head_only(f->s, req, 503), -1);
	assert_int_equal(up.aborts, 1);
	assert_string_equal(c.log, "");
	backoff_ends(f->s, req);
	assert_int_equal(up.starts, 2);
	assert_int_not_equal(up.ridx[1], up.ridx[0]);
	assert_int_equal(up_head_only(f->s, req, 429), -1);
	backoff_ends(f->s, req);
	assert_int_equal(up.starts, 3);
	assert_int_not_equal(up.ridx[2], up.ridx[0]);
	assert_int_not_equal(up.ridx[2], up.ridx[1]);
	req_body_done(f->s, req);
	up_respond(f->s, req, 503); /* tries used up: the client gets it */
	assert_string_equal(c.log, "head:503 end released ");
	assert_int_equal(counter_get(&bmetrics(f, "st")->retries), 2);
	assert_int_equal(atomic_load(&backend(f, "st")->state->retrying), 0);
	assert_int_equal(atomic_load(&backend(f, "st")->state->inflight), 0);

	/* The client leaves while its retry waits: the timer goes with it. */
	req = start(f, &d, GET("/st"));
	assert_int_equal(up_head_only(f->s, req, 503), -1);
	assert_true(timer_armed(&req->retry_timer));
	req_abandon(f->s, req, REQ_R_CLIENT_ABORT);
	d.req = NULL;
	assert_int_equal(f->s->tw.armed, 0);
	assert_int_equal(atomic_load(&backend(f, "st")->state->retrying), 0);
}

/* retry_budget_percent 0: only the floor (3) of retries in flight; the
 * fourth failing request gets its 503, counted as exhausted. */
static void test_retry_budget_exhausted(void **state)
{
	struct fx *f = *state;
	struct client c[4];

	for (int i = 0; i < 4; i++)
		assert_non_null(start(f, &c[i], GET("/st")));
	assert_int_equal(atomic_load(&backend(f, "st")->state->inflight), 4);
	for (int i = 0; i < 3; i++)
		assert_int_equal(up_head_only(f->s, c[i].req, 503), -1);
	assert_int_equal(atomic_load(&backend(f, "st")->state->retrying), 3);
	assert_true(up_head_only(f->s, c[3].req, 503) >= 0); /* forwarded */
	assert_int_equal(counter_get(&bmetrics(f, "st")->retry_budget_exhausted), 1);
	assert_int_equal(counter_get(&bmetrics(f, "st")->retries), 3);
	req_abandon(f->s, c[3].req, REQ_R_CLIENT_ABORT);
	for (int i = 0; i < 3; i++) {
		backoff_ends(f->s, c[i].req);
		req_body_done(f->s, c[i].req);
		up_respond(f->s, c[i].req, 200);
	}
	assert_int_equal(by_status(f, 200), 3);
	assert_int_equal(atomic_load(&backend(f, "st")->state->retrying), 0);
	assert_int_equal(atomic_load(&backend(f, "st")->state->inflight), 0);
}

/* ---- the access log line (req_log) ---- */

/* Every ending writes one line with what the request layer knows: the id
 * (the client's or ours), the replica tried last, retries of both kinds,
 * the queue wait, and a first byte that is our own answer or none. */
static void test_access_log_lines(void **state)
{
	struct fx *f = *state;
	struct client a, b, c, d, e, g;
	struct request *req;
	struct accesslog *al = NULL;
	char dir[] = "/tmp/rr-reqlog-XXXXXX", path[64], cmd[96], line[2048];
	json_t *lines[8];
	int n = 0;
	FILE *fp;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/access.log", dir);
	assert_int_equal(accesslog_open(&al, path, ACCESSLOG_JSON, 1, 64), 0);
	accesslog_shard_init(&f->s->alog, al, 0);

	/* 1: the client's id; a connect failure retried on the other replica. */
	req = start(f, &a, "GET /x/1 HTTP/1.1\r\nHost: a\r\nX-Request-Id: cid-1\r\n\r\n");
	assert_string_equal(req_id(req), "cid-1");
	up_fail(f->s, req, UP_FAIL_CONNECT, 0);
	backoff_ends(f->s, req);
	req_body_done(f->s, req);
	up_respond(f->s, req, 200);
	/* 2: a dead pooled connection retried fresh, then 200. */
	req = start(f, &b, GET("/x/2"));
	up_fail(f->s, req, UP_FAIL_RESET, 1);
	req_body_done(f->s, req);
	up_respond(f->s, req, 201);
	/* 3: no route; our id. */
	assert_null(start(f, &c, GET("/nope")));
	/* 4, 5: d holds the only slot of "one", e waits and times out. */
	assert_non_null(start(f, &d, GET("/o/d")));
	assert_non_null(start(f, &e, GET("/o/e")));
	e.req->qe.deadline_us = 1;
	assert_int_equal(req_retry_queued(f->s), 0);
	/* 6: g waits and its client leaves. */
	assert_non_null(start(f, &g, GET("/o/g")));
	req_abandon(f->s, g.req, REQ_R_CLIENT_ABORT);
	g.req = NULL;
	req_body_done(f->s, d.req);
	up_respond(f->s, d.req, 200);

	accesslog_shard_teardown(&f->s->alog);
	assert_int_equal(accesslog_close(al), 0);
	fp = fopen(path, "r");
	assert_non_null(fp);
	while (n < 8 && fgets(line, sizeof(line), fp)) {
		json_error_t err;
		lines[n] = json_loads(line, 0, &err);
		if (!lines[n])
			fail_msg("not JSON (%s): %s", err.text, line);
		n++;
	}
	fclose(fp);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(n, 6);
#define S(i, k) json_string_value(json_object_get(lines[i], k))
#define I(i, k) json_integer_value(json_object_get(lines[i], k))
#define NUL(i, k) json_is_null(json_object_get(lines[i], k))
#define R(i, k) json_number_value(json_object_get(lines[i], k))
	/* in the order they ended: 1, 2, 3 (404), 5 (timeout), 6 (left), 4 */
	assert_string_equal(S(0, "request_id"), "cid-1");
	assert_string_equal(S(0, "client"), "192.0.2.1:40000");
	assert_string_equal(S(0, "method"), "GET");
	assert_string_equal(S(0, "path"), "/x/1");
	assert_string_equal(S(0, "version"), "HTTP/1.1");
	assert_int_equal(I(0, "status"), 200);
	assert_string_equal(S(0, "endpoint"), "x");
	assert_string_equal(S(0, "backend"), "b");
	assert_int_equal(I(0, "retries"), 1);
	assert_string_equal(S(0, "replica"), up.ridx[1] == 0 ? "r1" : "r2"); /* the last tried */
	assert_int_equal(I(0, "bytes_in"),
			 strlen("GET /x/1 HTTP/1.1\r\nHost: a\r\nX-Request-Id: cid-1\r\n\r\n"));
	assert_false(NUL(0, "ttfb_ms"));
	assert_string_equal(S(0, "reason"), "ok");

	assert_int_equal(I(1, "status"), 201);
	assert_int_equal(I(1, "retries"), 1); /* the fresh connection */
	assert_int_equal(strlen(S(1, "request_id")), 16);

	assert_string_equal(S(2, "reason"), "no_route");
	assert_true(NUL(2, "endpoint") && NUL(2, "backend") && NUL(2, "replica"));
	assert_int_equal(strlen(S(2, "request_id")), 16);
	assert_true(R(2, "ttfb_ms") == R(2, "duration_ms")); /* our answer: the first byte */

	assert_string_equal(S(3, "path"), "/o/e");
	assert_string_equal(S(3, "reason"), "queue_timeout");
	assert_true(NUL(3, "replica"));
	assert_true(R(3, "queue_ms") <= R(3, "ttfb_ms"));
	assert_true(R(3, "ttfb_ms") == R(3, "duration_ms"));

	assert_string_equal(S(4, "path"), "/o/g");
	assert_int_equal(I(4, "status"), 499);
	assert_string_equal(S(4, "reason"), "client_abort");
	assert_true(NUL(4, "ttfb_ms")); /* it never got a byte */
	assert_int_equal(I(4, "bytes_out"), 0);

	assert_string_equal(S(5, "path"), "/o/d");
	assert_string_equal(S(5, "replica"), "r1");
	assert_true(R(5, "queue_ms") == 0.0);
#undef S
#undef I
#undef NUL
#undef R
	for (int i = 0; i < n; i++)
		json_decref(lines[i]);
}

/* ---- a body held before routing ---- */

#define POST_M(path, extra, len) \
	"POST " path " HTTP/1.1\r\nHost: a\r\n" extra "Content-Length: " #len "\r\n\r\n"

static const char *head_end(const struct request *req, size_t n)
{
	return req->head.p + req->head.len - n;
}

static void test_held_body_routes_by_model(void **state)
{
	struct fx *f = *state;
	struct client c;
	struct request *req = start(f, &c, POST_M("/m", "", 17));
	static const char tail[] = "Content-Length: 17\r\n\r\n";

	assert_non_null(req);
	assert_true(req->hold & REQ_HOLD_MODEL);
	assert_int_equal(up.starts, 0);
	assert_false(req_body_blocked(req)); /* read on: nothing chosen yet */
	assert_int_equal(req_body(f->s, req, BID_NONE, "{\"model\":", 9), 0);
	assert_int_equal(req_body(f->s, req, BID_NONE, "\"alpha\"}", 8), 0);
	assert_int_equal(up.starts, 0);
	req_body_done(f->s, req);
	assert_int_equal(up.starts, 1);
	assert_int_equal(req->hold, 0);
	assert_string_equal(req->ep->name, "m-alpha");
	assert_string_equal(req->be->name, "b");
	assert_memory_equal(head_end(req, sizeof(tail) - 1), tail, sizeof(tail) - 1);
	assert_int_equal(req->nreplay, 2); /* the held bytes are what is sent */
	up_respond(f->s, req, 200);
	assert_string_equal(c.log, "head:200 end released ");
	/* Another model, and none: the catch-all. */
	req = start(f, &c, POST_M("/m", "", 16));
	assert_int_equal(req_body(f->s, req, BID_NONE, "{\"model\":\"beta\"}", 16), 0);
	req_body_done(f->s, req);
	assert_string_equal(req->ep->name, "m-any");
	up_respond(f->s, req, 200);
	req = start(f, &c, POST_M("/m", "X-Model: alpha\r\n", 2));
	assert_int_equal(req->hold, 0); /* the header named it: nothing held */
	assert_string_equal(req->ep->name, "m-alpha");
	assert_int_equal(req_body(f->s, req, BID_NONE, "{}", 2), 0);
	req_body_done(f->s, req);
	up_respond(f->s, req, 200);
}

static void test_held_no_model_404(void **state)
{
	struct fx *f = *state;
	struct client c;
	struct request *req = start(f, &c, POST_M("/mo", "", 13));

	assert_int_equal(req_body(f->s, req, BID_NONE, "{\"model\":\"z\"}", 13), 0);
	req_body_done(f->s, req);
	assert_failed_once(&c, 404);
	assert_int_equal(by_reason(f, REQ_R_NO_MODEL), 1);
	assert_int_equal(up.starts, 0);
	assert_null(start(f, &c, POST_M("/mo", "X-Model: y\r\n", 0)));
	assert_failed_once(&c, 404);
	assert_int_equal(by_reason(f, REQ_R_NO_MODEL), 2);
}

static void test_held_abandon_and_timeout(void **state)
{
	struct fx *f = *state;
	struct client c;
	struct request *req = start(f, &c, POST_M("/m", "", 50));

	assert_int_equal(req_body(f->s, req, BID_NONE, "{\"mo", 4), 0);
	req_abandon(f->s, req, REQ_R_CLIENT_ABORT);
	assert_int_equal(by_status(f, 499), 1);
	assert_int_equal(up.starts, 0);
	/* The body does not come: 408 at the header timeout. */
	req = start(f, &c, POST_M("/m", "", 50));
	assert_int_equal(req_body(f->s, req, BID_NONE, "{\"mo", 4), 0);
	assert_true(timer_armed(&req->retry_timer));
	timer_cancel(&f->s->tw, &req->retry_timer);
	hold_timeout(&req->retry_timer, f->s);
	assert_failed_once(&c, 408);
	assert_int_equal(up.starts, 0);
}

static void test_held_expect_continue(void **state)
{
	struct fx *f = *state;
	struct client c;
	struct request *req = start(f, &c, POST_M("/m", "Expect: 100-continue\r\n", 2));

	assert_int_equal(c.continues, 1); /* ours: the body waits for it */
	assert_int_equal(req_body(f->s, req, BID_NONE, "{}", 2), 0);
	req_body_done(f->s, req);
	assert_null(strstr(req->head.p, "Expect")); /* answered: not forwarded */
	assert_int_equal(up_interim(f->s, req, 100), 0);
	assert_int_equal(c.continues, 1); /* the replica's is not passed on */
	up_respond(f->s, req, 200);
}

static void test_held_model_header_alloc(void **state)
{
	struct fx *f = *state;
	struct client c;

	strndup_fail = 1;
	assert_null(start(f, &c, POST_M("/m", "X-Model: alpha\r\n", 2)));
	strndup_fail = 0;
	assert_failed_once(&c, 503);
	assert_int_equal(by_reason(f, REQ_R_NO_MEMORY), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_ok, setup, teardown),
		cmocka_unit_test_setup_teardown(test_404_no_route, setup, teardown),
		cmocka_unit_test_setup_teardown(test_405, setup, teardown),
		cmocka_unit_test_setup_teardown(test_413_declared, setup, teardown),
		cmocka_unit_test_setup_teardown(test_413_streamed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_503_queue_full, setup, teardown),
		cmocka_unit_test_setup_teardown(test_priority_shed_evict_deadline, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queue_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_connect_retry_other_then_502, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dead_pooled_connection_retried_fresh, setup, teardown),
		cmocka_unit_test_setup_teardown(test_504_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_499_abandon, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shadow, setup, teardown),
		cmocka_unit_test_setup_teardown(test_defect_a_retry_queue_full, setup, teardown),
		cmocka_unit_test_setup_teardown(test_defect_b_retry_start_fails, setup, teardown),
		cmocka_unit_test_setup_teardown(test_defect_b_queued_retry_start_fails, setup, teardown),
		cmocka_unit_test_setup_teardown(test_defect_c_body_forward_fails, setup, teardown),
		cmocka_unit_test_setup_teardown(test_defect_d_shard_key_alloc, setup, teardown),
		cmocka_unit_test_setup_teardown(test_defect_e_interim, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keyed_retry_other_replica, setup, teardown),
		cmocka_unit_test_setup_teardown(test_access_log_lines, setup, teardown),
		cmocka_unit_test(test_retry_decide_table),
		cmocka_unit_test(test_budget_and_backoff_arithmetic),
		cmocka_unit_test_setup_teardown(test_503_retried_then_forwarded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_retry_budget_exhausted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_held_body_routes_by_model, setup, teardown),
		cmocka_unit_test_setup_teardown(test_held_no_model_404, setup, teardown),
		cmocka_unit_test_setup_teardown(test_held_abandon_and_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_held_expect_continue, setup, teardown),
		cmocka_unit_test_setup_teardown(test_held_model_header_alloc, setup, teardown),
	};

	http_settings_init(&settings);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
