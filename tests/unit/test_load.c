/* Unit tests of server-reported load: the ORCA header and Prometheus text
 * parsers (load.c), the load keys of a backend (config.c) and the
 * least_load choice over published reports (router.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ringroute/load.h"
#include "ringroute/router.h"

static enum load_parse orca(const char *s, struct load_report *r)
{
	return load_parse_orca(s, strlen(s), r);
}

static void test_orca_text(void **state)
{
	struct load_report r;

	(void)state;
	/* vLLM's form */
	assert_int_equal(orca("TEXT named_metrics.kv_cache_usage_perc=0.25, "
			      "named_metrics.num_requests_waiting=3.0", &r), LOAD_OK);
	assert_int_equal(r.queue, 3);
	assert_int_equal(r.kv_ppm, 250000);
	assert_int_equal(r.have, LOAD_HAVE_QUEUE | LOAD_HAVE_KV);
	/* standard fields are read for form and ignored; case of the prefix */
	assert_int_equal(orca("text cpu_utilization=0.3,mem_utilization=0.1,"
			      "named_metrics.kv_cache_utilization=1", &r), LOAD_OK);
	assert_int_equal(r.kv_ppm, LOAD_KV_ONE);
	assert_int_equal(r.queue, 0);
	assert_int_equal(r.have, LOAD_HAVE_KV);
	assert_int_equal(orca("  TEXT   named_metrics.kv_cache_usage=0.5  ", &r), LOAD_OK);
	assert_int_equal(r.kv_ppm, 500000);
	/* well formed, nothing we read */
	assert_int_equal(orca("TEXT cpu_utilization=0.3", &r), LOAD_NONE);
	assert_int_equal(orca("TEXT ", &r), LOAD_NONE);
	assert_int_equal(orca("TEXT named_metrics.other=7", &r), LOAD_NONE);
	/* bad: the whole report is dropped */
	assert_int_equal(orca("TEXT named_metrics.num_requests_waiting=-1", &r), LOAD_BAD);
	assert_int_equal(r.have, 0);
	assert_int_equal(orca("TEXT named_metrics.kv_cache_usage_perc=1.5", &r), LOAD_BAD);
	assert_int_equal(orca("TEXT named_metrics.kv_cache_usage_perc=nan", &r), LOAD_BAD);
	assert_int_equal(orca("TEXT named_metrics.num_requests_waiting=inf", &r), LOAD_BAD);
	assert_int_equal(orca("TEXT named_metrics.num_requests_waiting=0x10", &r), LOAD_BAD);
	assert_int_equal(orca("TEXT named_metrics.num_requests_waiting=", &r), LOAD_BAD);
	assert_int_equal(orca("TEXT named_metrics.num_requests_waiting=3,", &r), LOAD_OK);
	assert_int_equal(orca("TEXT named_metrics.num_requests_waiting 3", &r), LOAD_BAD);
	assert_int_equal(orca("TEXT a=1 b=2", &r), LOAD_BAD);
	assert_int_equal(orca("TEXT =1", &r), LOAD_BAD);
	assert_int_equal(orca("TEXTnamed_metrics.x=1", &r), LOAD_BAD);
	assert_int_equal(orca("BIN abc", &r), LOAD_BAD);
	assert_int_equal(orca("", &r), LOAD_BAD);
	/* never past len */
	assert_int_equal(load_parse_orca("TEXT named_metrics.num_requests_waiting=12", 41, &r),
			 LOAD_OK);
	assert_int_equal(r.queue, 1);
}

static void test_orca_json(void **state)
{
	struct load_report r;

	(void)state;
	assert_int_equal(orca("JSON {\"named_metrics\": {\"kv_cache_usage_perc\": 0.75, "
			      "\"num_requests_waiting\": 12.0}}", &r), LOAD_OK);
	assert_int_equal(r.queue, 12);
	assert_int_equal(r.kv_ppm, 750000);
	assert_int_equal(orca("JSON {\"cpu_utilization\":0.3,\"utilization\":{\"a\":1},"
			      "\"named_metrics\":{\"x\":\"y\",\"num_requests_waiting\":2},"
			      "\"note\":null,\"ok\":true,\"list\":[1,2]}", &r), LOAD_OK);
	assert_int_equal(r.queue, 2);
	assert_int_equal(r.have, LOAD_HAVE_QUEUE);
	/* a key named like ours outside named_metrics is not ours */
	assert_int_equal(orca("JSON {\"num_requests_waiting\": 5}", &r), LOAD_NONE);
	assert_int_equal(orca("JSON {}", &r), LOAD_NONE);
	assert_int_equal(orca("JSON {\"named_metrics\": {}}", &r), LOAD_NONE);
	assert_int_equal(orca("JSON {\"named_metrics\": {\"num_requests_waiting\": -2}}", &r),
			 LOAD_BAD);
	assert_int_equal(orca("JSON {\"named_metrics\": {\"num_requests_waiting\": \"2\"}}", &r),
			 LOAD_BAD);
	assert_int_equal(orca("JSON {\"named_metrics\": 3}", &r), LOAD_BAD);
	assert_int_equal(orca("JSON {\"named_metrics\": {\"kv_cache_usage_perc\": 2}}", &r),
			 LOAD_BAD);
	assert_int_equal(orca("JSON {\"named_metrics\": {", &r), LOAD_BAD);
	assert_int_equal(orca("JSON {\"a\": 1} x", &r), LOAD_BAD);
	assert_int_equal(orca("JSON [1]", &r), LOAD_BAD);
	assert_int_equal(orca("JSON {\"a\": [[[[[1]]]]]}", &r), LOAD_BAD); /* too deep */
	assert_int_equal(orca("JSON {\"a\\\"b\": 1, \"named_metrics\": {\"num_requests_waiting\": 1}}",
			      &r), LOAD_OK);
	assert_int_equal(orca("JSON {\"a\": tru}", &r), LOAD_BAD);
	assert_int_equal(orca("JSON {\"a\": 1,}", &r), LOAD_BAD);
}

static enum load_parse prom(const char *s, struct load_report *r)
{
	return load_parse_prom(s, strlen(s), "vllm:num_requests_waiting", "vllm:gpu_cache_usage_perc",
			       r);
}

static void test_prom(void **state)
{
	struct load_report r;

	(void)state;
	assert_int_equal(prom("# HELP vllm:num_requests_waiting Waiting.\n"
			      "# TYPE vllm:num_requests_waiting gauge\n"
			      "vllm:num_requests_waiting{model_name=\"m\",engine=\"0\"} 3.0\n"
			      "vllm:num_requests_waiting{model_name=\"m\",engine=\"1\"} 4\n"
			      "vllm:num_requests_waiting_total 99\n"
			      "vllm:gpu_cache_usage_perc{engine=\"0\"} 0.2 1700000000000\n"
			      "vllm:gpu_cache_usage_perc{engine=\"1\",x=\"a,}b\\\"c\"} 0.6\r\n"
			      "other_metric{a=\"b\"} junk\n", &r), LOAD_OK);
	assert_int_equal(r.queue, 7);       /* sum over label sets */
	assert_int_equal(r.kv_ppm, 600000); /* max over label sets */
	assert_int_equal(prom("vllm:num_requests_waiting 2", &r), LOAD_OK);
	assert_int_equal(r.queue, 2);
	assert_int_equal(r.have, LOAD_HAVE_QUEUE);
	assert_int_equal(prom("", &r), LOAD_NONE);
	assert_int_equal(prom("# only comments\nfoo 1\n", &r), LOAD_NONE);
	assert_int_equal(prom("vllm:num_requests_waiting NaN\n", &r), LOAD_BAD);
	assert_int_equal(prom("vllm:num_requests_waiting -1\n", &r), LOAD_BAD);
	assert_int_equal(prom("vllm:gpu_cache_usage_perc 1.01\n", &r), LOAD_BAD);
	assert_int_equal(prom("vllm:num_requests_waiting{a=\"b\" 1\n", &r), LOAD_BAD);
	assert_int_equal(prom("vllm:num_requests_waiting{a=\"b\\\n\"} 1\n", &r), LOAD_BAD);
	assert_int_equal(prom("vllm:num_requests_waiting\n", &r), LOAD_NONE); /* no value, no name */
	assert_int_equal(prom("vllm:num_requests_waiting \n", &r), LOAD_BAD);
	assert_int_equal(load_parse_prom("q 1\nkv 0.5\n", 11, "q", NULL, &r), LOAD_OK);
	assert_int_equal(r.have, LOAD_HAVE_QUEUE);
}

static struct config *parse(const char *doc, char *err, size_t n)
{
	struct config *c = NULL;

	if (config_parse(doc, strlen(doc), "t.json", NULL, &c, err, n))
		return NULL;
	return c;
}

static void test_config_keys(void **state)
{
	char err[512];
	struct config *c;
	const struct backend_cfg *b;

	(void)state;
	c = parse("{\"backends\": {\"b\": {}}, \"endpoints\": {}}", err, sizeof(err));
	assert_non_null(c);
	b = config_backend(c, "b");
	assert_false(b->load_reports);
	assert_int_equal(b->load_scrape_ms, 0);
	assert_int_equal(b->load_max_age_ms, 2000);
	assert_string_equal(b->load_queue_metric, "vllm:num_requests_waiting");
	assert_string_equal(b->load_kv_metric, "vllm:gpu_cache_usage_perc");
	assert_null(strstr(c->json, "load_")); /* defaults only: the document as before */
	config_unref(c);

	c = parse("{\"backends\": {\"b\": {\"policy\": \"least_load\", \"load_reports\": true, "
		  "\"load_scrape_ms\": 250, \"load_max_age_ms\": 500, "
		  "\"load_metrics\": {\"queue\": \"sglang:num_queue_reqs\"}}}, \"endpoints\": {}}",
		  err, sizeof(err));
	assert_non_null(c);
	b = config_backend(c, "b");
	assert_int_equal(b->policy, POLICY_LEAST_LOAD);
	assert_true(b->load_reports);
	assert_int_equal(b->load_scrape_ms, 250);
	assert_int_equal(b->load_max_age_ms, 500);
	assert_string_equal(b->load_queue_metric, "sglang:num_queue_reqs");
	assert_string_equal(b->load_kv_metric, "vllm:gpu_cache_usage_perc");
	assert_non_null(strstr(c->json, "\"policy\":\"least_load\""));
	assert_non_null(strstr(c->json, "\"load_metrics\":{\"kv_cache\":\"vllm:gpu_cache_usage_perc\","
					"\"queue\":\"sglang:num_queue_reqs\"}"));
	{ /* the canonical document parses to the same */
		char *json = strdup(c->json);
		struct config *d = parse(json, err, sizeof(err));
		assert_non_null(d);
		assert_string_equal(d->json, c->json);
		config_unref(d);
		free(json);
	}
	config_unref(c);

#define BAD(doc, want)                                                       \
	do {                                                                 \
		assert_null(parse(doc, err, sizeof(err)));                   \
		assert_string_equal(err, want);                              \
	} while (0)
	BAD("{\"backends\": {\"b\": {\"load_reports\": 1}}, \"endpoints\": {}}",
	    "t.json: backends.b.load_reports: must be true or false");
	BAD("{\"backends\": {\"b\": {\"load_scrape_ms\": 50}}, \"endpoints\": {}}",
	    "t.json: backends.b.load_scrape_ms: must be 0 (off) or at least 100");
	BAD("{\"backends\": {\"b\": {\"load_max_age_ms\": 0}}, \"endpoints\": {}}",
	    "t.json: backends.b.load_max_age_ms: must be an integer >= 1");
	BAD("{\"backends\": {\"b\": {\"load_metrics\": []}}, \"endpoints\": {}}",
	    "t.json: backends.b.load_metrics: must be an object {\"queue\": \"gauge\", "
	    "\"kv_cache\": \"gauge\"}");
	BAD("{\"backends\": {\"b\": {\"load_metrics\": {\"waiting\": \"x\"}}}, \"endpoints\": {}}",
	    "t.json: backends.b.load_metrics.waiting: unknown key");
	BAD("{\"backends\": {\"b\": {\"load_metrics\": {\"kv_cache\": \"a b\"}}}, \"endpoints\": {}}",
	    "t.json: backends.b.load_metrics.kv_cache: must be a Prometheus metric name "
	    "([a-zA-Z_:][a-zA-Z0-9_:]*)");
	BAD("{\"backends\": {\"b\": {\"load_metrics\": {\"queue\": 3}}}, \"endpoints\": {}}",
	    "t.json: backends.b.load_metrics.queue: must be a Prometheus metric name "
	    "([a-zA-Z_:][a-zA-Z0-9_:]*)");
#undef BAD
}

/* load_cost: one request = LOAD_KV_ONE; KV use up to the knee is free,
 * then linear up to (n + 1) more at a full cache. */
static void test_load_cost(void **state)
{
	(void)state;
	assert_int_equal(load_cost(0, 0, 0), 0);
	assert_int_equal(load_cost(3, 0, 0), 3 * (uint64_t)LOAD_KV_ONE);
	assert_int_equal(load_cost(3, 4, 0), 7 * (uint64_t)LOAD_KV_ONE);
	assert_int_equal(load_cost(3, 4, LOAD_KV_KNEE), 7 * (uint64_t)LOAD_KV_ONE);
	assert_int_equal(load_cost(3, 4, 950000), 7 * (uint64_t)LOAD_KV_ONE + 4 * (uint64_t)LOAD_KV_ONE);
	assert_int_equal(load_cost(3, 4, LOAD_KV_ONE), 15 * (uint64_t)LOAD_KV_ONE);
	assert_int_equal(load_cost(0, 0, LOAD_KV_ONE), LOAD_KV_ONE);
	assert_int_equal(load_cost(0, 0, 2 * LOAD_KV_ONE), LOAD_KV_ONE); /* clamped */
	/* the largest inputs do not wrap */
	assert_true(load_cost(UINT32_MAX, LOAD_QUEUE_MAX, LOAD_KV_ONE) >
		    load_cost(UINT32_MAX, LOAD_QUEUE_MAX, 0));
}

static struct config *two_replicas(unsigned max)
{
	char doc[512], err[512];
	struct config *c;

	snprintf(doc, sizeof(doc),
		 "{\"backends\": {\"b\": {\"policy\": \"least_load\", \"max_ongoing_requests\": %u, "
		 "\"load_max_age_ms\": 1000, \"replicas\": {\"r0\": \"127.0.0.1:1\", "
		 "\"r1\": \"127.0.0.1:2\"}}}, \"endpoints\": {}}", max);
	c = parse(doc, err, sizeof(err));
	if (!c)
		fail_msg("%s", err);
	return c;
}

static void test_least_load_choice(void **state)
{
	struct config *c = two_replicas(4);
	const struct backend_cfg *b = config_backend(c, "b");
	struct load_report busy = { .queue = 10, .kv_ppm = 900000, .have = 3 };
	uint64_t rng = 42;
	unsigned n[2] = {0, 0};

	(void)state;
	/* no reports: p2c, both used */
	for (int i = 0; i < 200; i++) {
		int k = router_pick_replica(b, NULL, 0, &rng, NULL);
		assert_true(k == 0 || k == 1);
		n[k]++;
		router_replica_release(b->replicas[k].state);
	}
	assert_true(n[0] > 50 && n[1] > 50);

	/* r0 reports a long queue: everything goes to r1 while it has room */
	load_store(b->replicas[0].state, &busy, clock_now_ms());
	for (int i = 0; i < 200; i++) {
		int k = router_pick_replica(b, NULL, 0, &rng, NULL);
		assert_int_equal(k, 1);
		router_replica_release(b->replicas[k].state);
	}
	/* the cap holds: r1 full, r0 takes the rest however loaded; then none */
	for (int i = 0; i < 4; i++)
		assert_int_equal(router_pick_replica(b, NULL, 0, &rng, NULL), 1);
	for (int i = 0; i < 4; i++)
		assert_int_equal(router_pick_replica(b, NULL, 0, &rng, NULL), 0);
	assert_int_equal(router_pick_replica(b, NULL, 0, &rng, NULL), -1);
	assert_int_equal(atomic_load(&b->replicas[0].state->ongoing), 4);
	assert_int_equal(atomic_load(&b->replicas[1].state->ongoing), 4);
	for (int i = 0; i < 4; i++) {
		router_replica_release(b->replicas[0].state);
		router_replica_release(b->replicas[1].state);
	}

	/* aged out (older than load_max_age_ms): ongoing alone again */
	load_store(b->replicas[0].state, &busy, clock_now_ms() - 5000);
	n[0] = n[1] = 0;
	for (int i = 0; i < 200; i++) {
		int k = router_pick_replica(b, NULL, 0, &rng, NULL);
		n[k]++;
		router_replica_release(b->replicas[k].state);
	}
	assert_true(n[0] > 50 && n[1] > 50);

	/* KV use below the knee (0.9) costs nothing: r0 with 1 in flight
	 * at 0.85 beats r1 with 2; a full cache doubles r0's load plus this
	 * request's (1 -> 3): r1 with 2 wins */
	{
		struct load_report kv = { .queue = 0, .kv_ppm = 850000, .have = LOAD_HAVE_KV };
		load_store(b->replicas[0].state, &kv, clock_now_ms());
		assert_true(router_replica_acquire(b->replicas[0].state, 4));
		for (int i = 0; i < 2; i++)
			assert_true(router_replica_acquire(b->replicas[1].state, 4));
		for (int i = 0; i < 50; i++) {
			int k = router_pick_replica(b, NULL, 0, &rng, NULL);
			assert_int_equal(k, 0);
			router_replica_release(b->replicas[k].state);
		}
		kv.kv_ppm = LOAD_KV_ONE;
		load_store(b->replicas[0].state, &kv, clock_now_ms());
		for (int i = 0; i < 50; i++) {
			int k = router_pick_replica(b, NULL, 0, &rng, NULL);
			assert_int_equal(k, 1);
			router_replica_release(b->replicas[k].state);
		}
		router_replica_release(b->replicas[0].state);
		for (int i = 0; i < 2; i++)
			router_replica_release(b->replicas[1].state);
	}
	/* absolute counts, whatever the cap: with max 1000 a reported queue
	 * of 3 on r0 still sends the request to r1 with 2 in flight (the old
	 * score, (ongoing + queue) / max + kv, saw ~0 for both) */
	{
		struct config *big = two_replicas(1000);
		const struct backend_cfg *bb = config_backend(big, "b");
		struct load_report q = { .queue = 3, .kv_ppm = 100000, .have = 3 };
		load_store(bb->replicas[0].state, &q, clock_now_ms());
		for (int i = 0; i < 2; i++)
			assert_true(router_replica_acquire(bb->replicas[1].state, 1000));
		for (int i = 0; i < 50; i++) {
			int k = router_pick_replica(bb, NULL, 0, &rng, NULL);
			assert_int_equal(k, 1);
			router_replica_release(bb->replicas[k].state);
		}
		for (int i = 0; i < 2; i++)
			router_replica_release(bb->replicas[1].state);
		config_unref(big);
	}
	config_unref(c);
}

/* Weights under least_load: idle replicas without reports split by
 * weight; a report still turns traffic away from the heavier one. */
static void test_least_load_weighted(void **state)
{
	char err[512];
	struct config *c = parse("{\"backends\": {\"b\": {\"policy\": \"least_load\", "
				 "\"max_ongoing_requests\": 4, \"replicas\": {"
				 "\"r0\": {\"address\": \"127.0.0.1:1\", \"weight\": 3}, "
				 "\"r1\": \"127.0.0.1:2\"}}}, \"endpoints\": {}}", err, sizeof(err));
	const struct backend_cfg *b;
	struct load_report busy = { .queue = 20, .kv_ppm = 0, .have = LOAD_HAVE_QUEUE };
	uint64_t rng = 7;
	unsigned n[2] = {0, 0};

	(void)state;
	if (!c)
		fail_msg("%s", err);
	b = config_backend(c, "b");
	assert_true(b->weighted);
	for (int i = 0; i < 4000; i++) {
		int k = router_pick_replica(b, NULL, 0, &rng, NULL);
		n[k]++;
		router_replica_release(b->replicas[k].state);
	}
	if (n[0] < 2700 || n[0] > 3300)
		fail_msg("weight 3 of 4 got %u of 4000", n[0]);
	load_store(b->replicas[0].state, &busy, clock_now_ms());
	for (int i = 0; i < 200; i++) {
		int k = router_pick_replica(b, NULL, 0, &rng, NULL);
		assert_int_equal(k, 1);
		router_replica_release(b->replicas[k].state);
	}
	config_unref(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_orca_text),
		cmocka_unit_test(test_orca_json),
		cmocka_unit_test(test_prom),
		cmocka_unit_test(test_config_keys),
		cmocka_unit_test(test_load_cost),
		cmocka_unit_test(test_least_load_choice),
		cmocka_unit_test(test_least_load_weighted),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
