/* Unit tests for routing decisions: endpoint match, weighted choice, shard
 * keys, replica choice under the global cap. Configs are built through the
 * public config_parse() so the tests exercise real snapshots. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <llhttp.h>

#include "ringroute/router.h"

static struct config *parse_ok(const char *doc)
{
	struct config *c = NULL;
	char err[512];
	int rc = config_parse(doc, strlen(doc), "test.json", NULL, &c, err, sizeof(err));
	if (rc != 0)
		fail_msg("unexpected parse error %d: %s", rc, err);
	return c;
}

static const char *match_name(const struct config *c, const char *url, unsigned method, int *status)
{
	const struct endpoint_cfg *e = router_match(c, url, strlen(url), method, status);
	return e ? e->name : NULL;
}

#define EXPECT_ROUTE(c, url, method, name)                                  \
	do {                                                                \
		int st_ = 0;                                                \
		const char *n_ = match_name(c, url, method, &st_);          \
		assert_int_equal(st_, 200);                                 \
		assert_non_null(n_);                                        \
		assert_string_equal(n_, name);                              \
	} while (0)

#define EXPECT_STATUS(c, url, method, status)                               \
	do {                                                                \
		int st_ = 0;                                                \
		const char *n_ = match_name(c, url, method, &st_);          \
		assert_int_equal(st_, status);                              \
		if (status == 404)                                          \
			assert_null(n_);                                    \
		else                                                        \
			assert_non_null(n_);                                \
	} while (0)

static const char routes_doc[] =
	"{\"backends\": {\"b\": {}},"
	" \"endpoints\": {"
	"  \"root\": {\"route\": \"/\", \"traffic\": {\"b\": 1}},"
	"  \"predict\": {\"route\": \"/predict\", \"methods\": [\"POST\"], \"traffic\": {\"b\": 1}},"
	"  \"predict-v2\": {\"route\": \"/predict/v2\", \"traffic\": {\"b\": 1}},"
	"  \"static\": {\"route\": \"/static/\", \"methods\": [\"GET\", \"HEAD\"], \"traffic\": {\"b\": 1}}"
	" }}";

static void test_match_longest_prefix(void **state)
{
	(void)state;
	struct config *c = parse_ok(routes_doc);

	EXPECT_ROUTE(c, "/predict/v2", HTTP_GET, "predict-v2");
	EXPECT_ROUTE(c, "/predict/v2/", HTTP_GET, "predict-v2");
	EXPECT_ROUTE(c, "/predict/v2/deep/er", HTTP_DELETE, "predict-v2");
	EXPECT_ROUTE(c, "/predict", HTTP_POST, "predict");
	EXPECT_ROUTE(c, "/predict/", HTTP_POST, "predict");
	EXPECT_ROUTE(c, "/predict/v20", HTTP_POST, "predict"); /* not a v2 segment */
	EXPECT_ROUTE(c, "/predict/v", HTTP_POST, "predict");
	EXPECT_ROUTE(c, "/static/a.css", HTTP_GET, "static");
	EXPECT_ROUTE(c, "/static/", HTTP_HEAD, "static");
	EXPECT_ROUTE(c, "/static", HTTP_POST, "root"); /* route "/static/" needs the slash */
	EXPECT_ROUTE(c, "/", HTTP_GET, "root");
	EXPECT_ROUTE(c, "/anything", HTTP_PATCH, "root");
	config_unref(c);
}

static void test_match_segment_boundary(void **state)
{
	(void)state;
	struct config *c = parse_ok(
		"{\"backends\": {\"b\": {}},"
		" \"endpoints\": {\"predict\": {\"route\": \"/predict\", \"traffic\": {\"b\": 1}},"
		"                 \"api\": {\"route\": \"/api/\", \"traffic\": {\"b\": 1}}}}");

	EXPECT_STATUS(c, "/predictions", HTTP_POST, 404);
	EXPECT_STATUS(c, "/predic", HTTP_POST, 404);
	EXPECT_STATUS(c, "/", HTTP_GET, 404);
	EXPECT_STATUS(c, "", HTTP_GET, 404);
	EXPECT_STATUS(c, "/PREDICT", HTTP_GET, 404);
	EXPECT_STATUS(c, "/api", HTTP_GET, 404);
	EXPECT_STATUS(c, "/apix/y", HTTP_GET, 404);
	EXPECT_ROUTE(c, "/predict", HTTP_POST, "predict");
	EXPECT_ROUTE(c, "/predict/x", HTTP_POST, "predict");
	EXPECT_ROUTE(c, "/api/", HTTP_GET, "api");
	EXPECT_ROUTE(c, "/api/v1", HTTP_GET, "api");

	/* len is honoured: no NUL needed, trailing bytes ignored */
	int st = 0;
	const struct endpoint_cfg *e = router_match(c, "/predictions", 8, HTTP_GET, &st);
	assert_non_null(e);
	assert_string_equal(e->name, "predict");
	config_unref(c);
}

static void test_match_query(void **state)
{
	(void)state;
	struct config *c = parse_ok(routes_doc);
	struct config *c2 = parse_ok(
		"{\"backends\": {\"b\": {}},"
		" \"endpoints\": {\"predict\": {\"route\": \"/predict\", \"traffic\": {\"b\": 1}}}}");

	EXPECT_ROUTE(c, "/predict?x=1", HTTP_POST, "predict");
	EXPECT_ROUTE(c, "/predict?x=/v2", HTTP_POST, "predict"); /* query is not path */
	EXPECT_ROUTE(c, "/predict/v2?q", HTTP_GET, "predict-v2");
	EXPECT_ROUTE(c, "/predict/v2?", HTTP_GET, "predict-v2");
	EXPECT_ROUTE(c, "/?a=b", HTTP_GET, "root");
	EXPECT_ROUTE(c2, "/predict?", HTTP_GET, "predict");
	EXPECT_STATUS(c2, "/predictions?x", HTTP_GET, 404);
	EXPECT_STATUS(c2, "?/predict", HTTP_GET, 404);
	config_unref(c2);
	config_unref(c);
}

static void test_match_404_405(void **state)
{
	(void)state;
	struct config *c = parse_ok(routes_doc);

	/* the longest route decides: no fallback to "/" on a method mismatch */
	EXPECT_STATUS(c, "/predict", HTTP_GET, 405);
	EXPECT_STATUS(c, "/predict/x?y", HTTP_PUT, 405);
	EXPECT_STATUS(c, "/static/x", HTTP_POST, 405);
	EXPECT_STATUS(c, "/static/x", 200, 405); /* out of mask range */
	int st = 0;
	assert_non_null(router_match(c, "/predict", 8, HTTP_POST, &st));

	/* methods absent: any method, even exotic ones */
	EXPECT_ROUTE(c, "/predict/v2", HTTP_DELETE, "predict-v2");
	EXPECT_ROUTE(c, "/predict/v2", HTTP_OPTIONS, "predict-v2");
	EXPECT_ROUTE(c, "/predict/v2", HTTP_MSEARCH, "predict-v2");
	EXPECT_ROUTE(c, "/predict/v2", HTTP_FLUSH, "predict-v2");
	config_unref(c);

	c = parse_ok("{\"backends\": {\"b\": {}}, \"endpoints\": {}}");
	EXPECT_STATUS(c, "/", HTTP_GET, 404);
	config_unref(c);
}

/* ---- weighted choice ---- */

static void test_weighted_distribution(void **state)
{
	(void)state;
	struct config *c = parse_ok(
		"{\"backends\": {\"a\": {}, \"b\": {}},"
		" \"endpoints\": {\"e\": {\"route\": \"/\", \"traffic\": {\"a\": 0.9, \"b\": 0.1}}}}");
	const struct endpoint_cfg *e = &c->endpoints[0];
	uint64_t rng = 12345;
	size_t count[2] = { 0, 0 };
	const size_t N = 100000;

	for (size_t i = 0; i < N; i++) {
		double u = router_rand_unit(&rng);
		assert_true(u >= 0 && u < 1);
		count[router_pick_weighted(e->traffic, e->ntraffic, u)->index]++;
	}
	assert_true(fabs((double)count[0] / N - 0.9) < 0.01);
	assert_true(fabs((double)count[1] / N - 0.1) < 0.01);

	/* boundaries */
	assert_string_equal(router_pick_weighted(e->traffic, 2, 0.0)->name, "a");
	assert_string_equal(router_pick_weighted(e->traffic, 2, 0.8999)->name, "a");
	assert_string_equal(router_pick_weighted(e->traffic, 2, 0.9)->name, "b");
	assert_string_equal(router_pick_weighted(e->traffic, 2, nextafter(1.0, 0.0))->name, "b");
	config_unref(c);
}

static void test_weighted_zero_never_chosen(void **state)
{
	(void)state;
	struct config *c = parse_ok(
		"{\"backends\": {\"a\": {}, \"b\": {}, \"c\": {}, \"d\": {}, \"z\": {}},"
		" \"endpoints\": {\"e\": {\"route\": \"/\","
		"   \"traffic\": {\"a\": 0, \"b\": 3, \"c\": 0, \"d\": 1, \"z\": 0}}}}");
	const struct endpoint_cfg *e = &c->endpoints[0];
	uint64_t rng = 99;
	size_t count[5] = { 0 };

	for (size_t i = 0; i < 100000; i++)
		count[router_pick_weighted(e->traffic, e->ntraffic, router_rand_unit(&rng))->index]++;
	assert_int_equal(count[0], 0);
	assert_int_equal(count[2], 0);
	assert_int_equal(count[4], 0);
	assert_true(count[1] > 70000 && count[3] > 20000);
	/* edges and a u that rounding pushes to the total: never a zero entry */
	assert_string_equal(router_pick_weighted(e->traffic, 5, 0.0)->name, "b");
	assert_string_equal(router_pick_weighted(e->traffic, 5, 0.75)->name, "d");
	assert_string_equal(router_pick_weighted(e->traffic, 5, nextafter(1.0, 0.0))->name, "d");
	assert_string_equal(router_pick_weighted(e->traffic, 5, 1.0)->name, "d");

	/* hand-made entries with accumulated rounding error */
	struct backend_cfg bx = { .name = "x" }, by = { .name = "y" }, bz = { .name = "z" };
	struct weighted w[3] = {
		{ &bx, 0.1, 0.1 }, { &by, 0.2, 0.30000000000000004 }, { &bz, 0.0, 0.30000000000000004 },
	};
	assert_ptr_equal(router_pick_weighted(w, 3, 0.9999999999999999), &by);
	config_unref(c);
}

static void test_shard_key_sticky(void **state)
{
	(void)state;
	struct config *c = parse_ok(
		"{\"backends\": {\"a\": {}, \"b\": {}},"
		" \"endpoints\": {\"e\": {\"route\": \"/\", \"traffic\": {\"a\": 0.9, \"b\": 0.1}}}}");
	const struct endpoint_cfg *e = &c->endpoints[0];
	char key[32];
	size_t count[2] = { 0, 0 };
	const size_t N = 20000;

	for (size_t i = 0; i < N; i++) {
		int n = snprintf(key, sizeof(key), "user-%zu", i);
		double u = router_key_unit(key, (size_t)n);
		assert_true(u >= 0 && u < 1);
		const struct backend_cfg *b = router_pick_weighted(e->traffic, e->ntraffic, u);
		count[b->index]++;
		if (i % 1000 == 0)
			for (int k = 0; k < 5; k++)
				assert_ptr_equal(router_pick_weighted(e->traffic, e->ntraffic,
								      router_key_unit(key, (size_t)n)), b);
	}
	assert_true(fabs((double)count[1] / N - 0.1) < 0.02);
	/* the key value is fixed across processes (fixed seed) and depends on
	 * the bytes given only */
	assert_true(router_key_unit("abc", 3) == router_key_unit("abcdef", 3));
	assert_true(router_key_unit("abc", 3) != router_key_unit("abd", 3));
	config_unref(c);
}

static void test_rand(void **state)
{
	(void)state;
	uint64_t s1 = 7, s2 = 7, z = 0;
	for (int i = 0; i < 100; i++)
		assert_int_equal(router_rand(&s1), router_rand(&s2));
	assert_true(router_rand(&z) != 0); /* zero state does not stick */
	assert_true(z != 0);
	double sum = 0;
	for (int i = 0; i < 10000; i++) {
		double u = router_rand_unit(&s1);
		assert_true(u >= 0 && u < 1);
		sum += u;
	}
	assert_true(fabs(sum / 10000 - 0.5) < 0.02);
}

/* ---- replicas ---- */

/* Backend "m" with replicas r0..r(n-1) on ports 9000+i, except r(skip). */
static struct config *replicas_cfg_skip(unsigned n, unsigned max, const char *policy, int skip)
{
	char doc[8192];
	int first = 1;
	int off = snprintf(doc, sizeof(doc),
			   "{\"backends\": {\"m\": {\"max_ongoing_requests\": %u, \"policy\": \"%s\","
			   " \"replicas\": {", max, policy);
	for (unsigned i = 0; i < n; i++) {
		if ((int)i == skip)
			continue;
		off += snprintf(doc + off, sizeof(doc) - (size_t)off, "%s\"r%u\": \"127.0.0.1:%u\"",
				first ? "" : ", ", i, 9000 + i);
		first = 0;
	}
	snprintf(doc + off, sizeof(doc) - (size_t)off,
		 "}}}, \"endpoints\": {\"e\": {\"route\": \"/\", \"traffic\": {\"m\": 1}}}}");
	return parse_ok(doc);
}

static struct config *replicas_cfg(unsigned n, unsigned max, const char *policy)
{
	return replicas_cfg_skip(n, max, policy, -1);
}

static uint32_t ongoing(const struct backend_cfg *b, size_t i)
{
	return atomic_load(&b->replicas[i].state->ongoing);
}

static void release_all(const struct backend_cfg *b)
{
	for (size_t i = 0; i < b->nreplicas; i++)
		atomic_store(&b->replicas[i].state->ongoing, 0);
}

static void test_acquire_release(void **state)
{
	(void)state;
	struct config *c = replicas_cfg(1, 2, "p2c");
	struct replica_state *r = c->backends[0].replicas[0].state;

	assert_int_equal(router_replica_acquire(r, 2), 1);
	assert_int_equal(router_replica_acquire(r, 2), 1);
	assert_int_equal(router_replica_acquire(r, 2), 0);
	assert_int_equal(atomic_load(&r->ongoing), 2);
	router_replica_release(r);
	assert_int_equal(router_replica_acquire(r, 2), 1);
	router_replica_release(r);
	router_replica_release(r);
	assert_int_equal(atomic_load(&r->ongoing), 0);
	atomic_store(&r->healthy, 0);
	assert_int_equal(router_replica_acquire(r, 2), 0);
	atomic_store(&r->healthy, 1);
	atomic_store(&r->draining, 1);
	assert_int_equal(router_replica_acquire(r, 2), 0);
	atomic_store(&r->draining, 0);
	assert_int_equal(router_replica_acquire(r, 2), 1);
	router_replica_release(r);
	config_unref(c);
}

static void test_p2c_prefers_less_loaded(void **state)
{
	(void)state;
	struct config *c = replicas_cfg(2, 10, "p2c");
	const struct backend_cfg *b = &c->backends[0];
	uint64_t rng = 1;

	atomic_store(&b->replicas[0].state->ongoing, 5);
	for (int i = 0; i < 100; i++) {
		int k = router_pick_replica(b, NULL, 0, &rng, NULL);
		assert_int_equal(k, 1);
		router_replica_release(b->replicas[k].state);
	}
	release_all(b);
	config_unref(c);

	/* three replicas: the most loaded one can never win a pair */
	c = replicas_cfg(3, 10, "p2c");
	b = &c->backends[0];
	atomic_store(&b->replicas[0].state->ongoing, 9);
	atomic_store(&b->replicas[1].state->ongoing, 5);
	size_t count[3] = { 0 };
	for (int i = 0; i < 3000; i++) {
		int k = router_pick_replica(b, NULL, 0, &rng, NULL);
		assert_true(k >= 0);
		count[k]++;
		router_replica_release(b->replicas[k].state);
	}
	assert_int_equal(count[0], 0);
	assert_true(count[2] > count[1]);
	/* pairs {0,1}: 1, {0,2}: 2, {1,2}: 2 -> about 1/3 vs 2/3 */
	assert_true(count[1] > 700 && count[2] > 1700);
	release_all(b);

	/* unloaded: load spreads over all replicas */
	memset(count, 0, sizeof(count));
	for (int i = 0; i < 30; i++) {
		int k = router_pick_replica(b, NULL, 0, &rng, NULL);
		assert_true(k >= 0);
		count[k]++;
	}
	for (size_t i = 0; i < 3; i++)
		assert_int_equal(count[i], 10);
	release_all(b);
	config_unref(c);
}

static void test_p2c_never_exceeds_cap(void **state)
{
	(void)state;
	struct config *c = replicas_cfg(2, 3, "p2c");
	const struct backend_cfg *b = &c->backends[0];
	uint64_t rng = 42;

	for (int i = 0; i < 6; i++)
		assert_true(router_pick_replica(b, NULL, 0, &rng, NULL) >= 0);
	assert_int_equal(router_pick_replica(b, NULL, 0, &rng, NULL), -1);
	assert_int_equal(ongoing(b, 0), 3);
	assert_int_equal(ongoing(b, 1), 3);
	release_all(b);
	config_unref(c);

	/* one free slot among many full replicas is always found */
	c = replicas_cfg(6, 2, "p2c");
	b = &c->backends[0];
	for (size_t i = 0; i < 6; i++)
		atomic_store(&b->replicas[i].state->ongoing, i == 4 ? 1 : 2);
	for (int i = 0; i < 200; i++) {
		assert_int_equal(router_pick_replica(b, NULL, 0, &rng, NULL), 4);
		router_replica_release(b->replicas[4].state);
	}
	/* unhealthy and draining replicas are skipped */
	atomic_store(&b->replicas[4].state->healthy, 0);
	assert_int_equal(router_pick_replica(b, NULL, 0, &rng, NULL), -1);
	atomic_store(&b->replicas[4].state->healthy, 1);
	atomic_store(&b->replicas[0].state->ongoing, 0);
	atomic_store(&b->replicas[0].state->draining, 1);
	assert_int_equal(router_pick_replica(b, NULL, 0, &rng, NULL), 4);
	assert_int_equal(router_pick_replica(b, NULL, 0, &rng, NULL), -1);
	release_all(b);
	config_unref(c);

	/* a single replica, and a backend with none */
	c = replicas_cfg(1, 1, "p2c");
	b = &c->backends[0];
	assert_int_equal(router_pick_replica(b, NULL, 0, &rng, NULL), 0);
	assert_int_equal(router_pick_replica(b, NULL, 0, &rng, NULL), -1);
	release_all(b);
	config_unref(c);
	c = replicas_cfg(0, 1, "p2c");
	assert_int_equal(router_pick_replica(&c->backends[0], NULL, 0, &rng, NULL), -1);
	assert_int_equal(router_pick_replica(&c->backends[0], "k", 1, &rng, NULL), -1);
	config_unref(c);
}

struct hammer {
	struct replica_state *r;
	_Atomic uint32_t max_seen;
	_Atomic uint64_t acquired;
};

static void *hammer_thread(void *arg)
{
	struct hammer *h = arg;
	for (int i = 0; i < 200000; i++) {
		if (!router_replica_acquire(h->r, 3))
			continue;
		uint32_t now = atomic_load(&h->r->ongoing);
		uint32_t seen = atomic_load(&h->max_seen);
		while (now > seen && !atomic_compare_exchange_weak(&h->max_seen, &seen, now))
			;
		atomic_fetch_add(&h->acquired, 1);
		router_replica_release(h->r);
	}
	return NULL;
}

static void test_cap_threads(void **state)
{
	(void)state;
	struct config *c = replicas_cfg(1, 3, "p2c");
	struct hammer h = { .r = c->backends[0].replicas[0].state };
	pthread_t t[4];

	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, hammer_thread, &h), 0);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	assert_true(atomic_load(&h.max_seen) <= 3);
	assert_true(atomic_load(&h.max_seen) >= 1);
	assert_true(atomic_load(&h.acquired) > 0);
	assert_int_equal(atomic_load(&h.r->ongoing), 0);
	config_unref(c);
}

static void test_round_robin(void **state)
{
	(void)state;
	struct config *c = replicas_cfg(3, 2, "round_robin");
	const struct backend_cfg *b = &c->backends[0];
	uint32_t cur = 0;
	uint64_t rng = 5;

	assert_int_equal(b->policy, POLICY_RR);
	for (int i = 0; i < 9; i++) {
		int k = router_pick_replica(b, NULL, 0, &rng, &cur);
		assert_int_equal(k, i % 3);
		router_replica_release(b->replicas[k].state);
	}
	/* full replica skipped: start 0 -> 0, start 1 -> full -> 2, start 2 -> 2 */
	cur = 0;
	atomic_store(&b->replicas[1].state->ongoing, 2);
	int k = router_pick_replica(b, NULL, 0, &rng, &cur);
	assert_int_equal(k, 0);
	router_replica_release(b->replicas[0].state);
	assert_int_equal(router_pick_replica(b, NULL, 0, &rng, &cur), 2);
	router_replica_release(b->replicas[2].state);
	assert_int_equal(router_pick_replica(b, NULL, 0, &rng, &cur), 2);
	router_replica_release(b->replicas[2].state);
	/* cursor wrap-around keeps working */
	cur = UINT32_MAX;
	assert_true(router_pick_replica(b, NULL, 0, &rng, &cur) >= 0);
	assert_int_equal(cur, 0);
	release_all(b);
	config_unref(c);
}

/* Backend "m" of policy with replicas r0..r(n-1) of the weights w. */
static struct config *weights_cfg(unsigned n, const unsigned *w, unsigned max, const char *policy)
{
	char doc[8192];
	int off = snprintf(doc, sizeof(doc),
			   "{\"backends\": {\"m\": {\"max_ongoing_requests\": %u, \"policy\": \"%s\","
			   " \"replicas\": {", max, policy);
	for (unsigned i = 0; i < n; i++)
		off += snprintf(doc + off, sizeof(doc) - (size_t)off,
				"%s\"r%u\": {\"address\": \"127.0.0.1:%u\", \"weight\": %u}",
				i ? ", " : "", i, 9000 + i, w[i]);
	snprintf(doc + off, sizeof(doc) - (size_t)off,
		 "}}}, \"endpoints\": {\"e\": {\"route\": \"/\", \"traffic\": {\"m\": 1}}}}");
	return parse_ok(doc);
}

/* Idle replicas (each pick released at once): the shares follow the
 * weights, 1:3 -> 25% / 75% and 1:1:2 -> 25/25/50, for both policies. */
static void test_weight_shares(void **state)
{
	(void)state;
	static const char *const policies[] = { "p2c", "round_robin" };
	static const unsigned w2[] = { 1, 3 }, w3[] = { 1, 1, 2 };

	for (int p = 0; p < 2; p++) {
		for (int set = 0; set < 2; set++) {
			unsigned n = set ? 3 : 2;
			const unsigned *w = set ? w3 : w2;
			struct config *c = weights_cfg(n, w, 10, policies[p]);
			const struct backend_cfg *b = &c->backends[0];
			unsigned got[3] = { 0 }, sum = 0, picks = 8000;
			uint64_t rng = 99;
			uint32_t cur = 0;

			assert_true(b->weighted);
			for (unsigned i = 0; i < n; i++)
				sum += w[i];
			for (unsigned i = 0; i < picks; i++) {
				int k = router_pick_replica(b, NULL, 0, &rng, &cur);
				assert_true(k >= 0);
				got[k]++;
				router_replica_release(b->replicas[k].state);
			}
			for (unsigned i = 0; i < n; i++) {
				double share = (double)got[i] / picks, want = (double)w[i] / sum;
				if (share < want - 0.02 || share > want + 0.02)
					fail_msg("%s weights set %d: r%u got %.3f, want %.3f", policies[p],
						 set, i, share, want);
			}
			config_unref(c);
		}
	}
	/* A replica that is not up (drained) drops out of the weights: the
	 * others split the picks by theirs, 1:3 of the rest. */
	for (int p = 0; p < 2; p++) {
		static const unsigned w4[] = { 1, 3, 4 };
		struct config *c = weights_cfg(3, w4, 10, policies[p]);
		const struct backend_cfg *b = &c->backends[0];
		unsigned got[3] = { 0 }, picks = 8000;
		uint64_t rng = 5;
		uint32_t cur = 0;

		atomic_store(&b->replicas[2].state->draining, 1);
		for (unsigned i = 0; i < picks; i++) {
			int k = router_pick_replica(b, NULL, 0, &rng, &cur);
			assert_true(k >= 0 && k < 2);
			got[k]++;
			router_replica_release(b->replicas[k].state);
		}
		if (got[0] < picks * 23 / 100 || got[0] > picks * 27 / 100)
			fail_msg("%s, r2 drained: r0 got %u of %u, want 25%%", policies[p], got[0], picks);
		config_unref(c);
	}
	/* equal weights are not "weighted": the plain paths, unchanged */
	{
		static const unsigned same[] = { 4, 4 };
		struct config *c = weights_cfg(2, same, 10, "round_robin");
		assert_false(c->backends[0].weighted);
		config_unref(c);
	}
}

/* Under load (nothing released) weighted p2c fills the replicas in
 * proportion to their weights: ongoing/weight stays level. */
static void test_p2c_weight_under_load(void **state)
{
	(void)state;
	static const unsigned w[] = { 1, 3 };
	struct config *c = weights_cfg(2, w, 1000, "p2c");
	const struct backend_cfg *b = &c->backends[0];
	uint64_t rng = 7;

	for (int i = 0; i < 400; i++)
		assert_true(router_pick_replica(b, NULL, 0, &rng, NULL) >= 0);
	assert_in_range(ongoing(b, 0), 98, 102);
	assert_in_range(ongoing(b, 1), 298, 302);
	release_all(b);
	config_unref(c);
}

/* slow_start_ms: a replica's weight ramps linearly from a tenth to all of
 * it over the window after up_since_ms, and a fresh replica's share of
 * idle picks is its ramped weight's. */
static void test_slow_start_ramp(void **state)
{
	(void)state;
	struct config *c = parse_ok(
		"{\"backends\": {\"m\": {\"slow_start_ms\": 1000, \"replicas\": {"
		"\"r0\": \"127.0.0.1:9000\", \"r1\": {\"address\": \"127.0.0.1:9001\", \"weight\": 2}}}},"
		" \"endpoints\": {\"e\": {\"route\": \"/\", \"traffic\": {\"m\": 1}}}}");
	const struct backend_cfg *b = &c->backends[0];
	const struct replica_cfg *r0 = &b->replicas[0], *r1 = &b->replicas[1];
	uint64_t t0 = 1000000, rng = 3, now = clock_now_ms();
	unsigned got0 = 0, picks = 8000;

	assert_int_equal(b->slow_start_ms, 1000);
	assert_true(b->weighted); /* even with one weight: the ramp differs */
	atomic_store(&r0->state->up_since_ms, t0);
	atomic_store(&r1->state->up_since_ms, t0);
	assert_int_equal(router_replica_weight(b, r0, t0), 1024 / 10);
	assert_int_equal(router_replica_weight(b, r0, t0 - 5), 1024 / 10); /* clock before since */
	assert_int_equal(router_replica_weight(b, r0, t0 + 500), 1024 * 5500 / 10000);
	assert_int_equal(router_replica_weight(b, r1, t0 + 500), 2048 * 5500 / 10000);
	assert_int_equal(router_replica_weight(b, r0, t0 + 999), 1024 * 9991 / 10000);
	assert_int_equal(router_replica_weight(b, r0, t0 + 1000), 1024);
	assert_int_equal(router_replica_weight(b, r1, t0 + 5000), 2048);

	/* r0 fresh, r1 ramped long ago: r0 gets 102 / (102 + 2048) of the picks */
	atomic_store(&r0->state->up_since_ms, now + 60000); /* stays at the start of its ramp */
	atomic_store(&r1->state->up_since_ms, 0);
	for (unsigned i = 0; i < picks; i++) {
		int k = router_pick_replica(b, NULL, 0, &rng, NULL);
		assert_true(k >= 0);
		got0 += k == 0;
		router_replica_release(b->replicas[k].state);
	}
	assert_in_range(got0, picks * 3 / 100, picks * 7 / 100);
	config_unref(c);
}

static void test_rendezvous(void **state)
{
	(void)state;
	struct config *c = replicas_cfg(5, 2, "p2c");
	const struct backend_cfg *b = &c->backends[0];
	uint64_t rng = 3;
	char key[32];
	size_t spread[5] = { 0 };
	int k;

	/* same key -> same replica; different keys spread */
	for (int i = 0; i < 500; i++) {
		int n = snprintf(key, sizeof(key), "session-%d", i);
		k = router_pick_replica(b, key, (size_t)n, &rng, NULL);
		assert_true(k >= 0);
		router_replica_release(b->replicas[k].state);
		for (int j = 0; j < 3; j++) {
			int k2 = router_pick_replica(b, key, (size_t)n, &rng, NULL);
			assert_int_equal(k2, k);
			router_replica_release(b->replicas[k2].state);
		}
		spread[k]++;
	}
	for (size_t i = 0; i < 5; i++)
		assert_true(spread[i] > 50);

	/* bounded load: preferred full -> next in the key's order, stably */
	const char *sk = "user-42";
	int first = router_pick_replica(b, sk, strlen(sk), &rng, NULL);
	assert_true(first >= 0);
	assert_int_equal(router_pick_replica(b, sk, strlen(sk), &rng, NULL), first);
	assert_int_equal(ongoing(b, (size_t)first), 2); /* now full */
	int second = router_pick_replica(b, sk, strlen(sk), &rng, NULL);
	assert_true(second >= 0 && second != first);
	router_replica_release(b->replicas[second].state);
	for (int i = 0; i < 20; i++) {
		assert_int_equal(router_pick_replica(b, sk, strlen(sk), &rng, NULL), second);
		router_replica_release(b->replicas[second].state);
	}
	/* fill the second choice too: a third, distinct and stable */
	atomic_store(&b->replicas[second].state->ongoing, 2);
	int third = router_pick_replica(b, sk, strlen(sk), &rng, NULL);
	assert_true(third >= 0 && third != first && third != second);
	router_replica_release(b->replicas[third].state);
	assert_int_equal(router_pick_replica(b, sk, strlen(sk), &rng, NULL), third);
	router_replica_release(b->replicas[third].state);
	/* an unhealthy preferred replica spills the same way */
	release_all(b);
	atomic_store(&b->replicas[first].state->healthy, 0);
	assert_int_equal(router_pick_replica(b, sk, strlen(sk), &rng, NULL), second);
	atomic_store(&b->replicas[first].state->healthy, 1);
	release_all(b);
	/* everything full -> -1 */
	for (size_t i = 0; i < 5; i++)
		atomic_store(&b->replicas[i].state->ongoing, 2);
	assert_int_equal(router_pick_replica(b, sk, strlen(sk), &rng, NULL), -1);
	release_all(b);

	/* the order depends on replica ids, not positions: removing another
	 * replica does not move a key whose replica stays */
	char first_id[16];
	snprintf(first_id, sizeof(first_id), "%s", b->replicas[first].id);
	config_unref(c);
	c = replicas_cfg_skip(5, 2, "p2c", first == 0 ? 1 : 0);
	b = &c->backends[0];
	assert_int_equal(b->nreplicas, 4);
	k = router_pick_replica(b, sk, strlen(sk), &rng, NULL);
	assert_true(k >= 0);
	assert_string_equal(b->replicas[k].id, first_id);
	release_all(b);
	config_unref(c);
}

static void test_rendezvous_large(void **state)
{
	(void)state;
	/* more replicas than the on-stack score cache: same answers */
	struct config *c = replicas_cfg(80, 1, "p2c");
	const struct backend_cfg *b = &c->backends[0];
	uint64_t rng = 3;
	int seen[80] = { 0 };
	int pref = router_pick_replica(b, "key", 3, &rng, NULL);

	assert_true(pref >= 0);
	router_replica_release(b->replicas[pref].state);

	for (int i = 0; i < 80; i++) {
		int k = router_pick_replica(b, "key", 3, &rng, NULL);
		assert_true(k >= 0 && k < 80);
		assert_int_equal(seen[k], 0);
		if (i == 0)
			assert_int_equal(k, pref);
		seen[k] = 1;
	}
	assert_int_equal(router_pick_replica(b, "key", 3, &rng, NULL), -1);
	release_all(b);
	config_unref(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_match_longest_prefix),
		cmocka_unit_test(test_match_segment_boundary),
		cmocka_unit_test(test_match_query),
		cmocka_unit_test(test_match_404_405),
		cmocka_unit_test(test_weighted_distribution),
		cmocka_unit_test(test_weighted_zero_never_chosen),
		cmocka_unit_test(test_shard_key_sticky),
		cmocka_unit_test(test_rand),
		cmocka_unit_test(test_acquire_release),
		cmocka_unit_test(test_p2c_prefers_less_loaded),
		cmocka_unit_test(test_p2c_never_exceeds_cap),
		cmocka_unit_test(test_cap_threads),
		cmocka_unit_test(test_round_robin),
		cmocka_unit_test(test_weight_shares),
		cmocka_unit_test(test_p2c_weight_under_load),
		cmocka_unit_test(test_slow_start_ramp),
		cmocka_unit_test(test_rendezvous),
		cmocka_unit_test(test_rendezvous_large),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
