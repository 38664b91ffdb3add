/* Unit tests for passive outlier ejection (outlier.h): the ejection time,
 * the percent rule, and the state machine in service -> ejected ->
 * probation -> ejected longer / back in service, on real snapshots
 * (config_parse) whose replica states are private. An ejection's expiry is
 * simulated by moving ejected_until_ms into the past, so nothing sleeps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "ringroute/clock.h"
#include "ringroute/outlier.h"
#include "ringroute/router.h"

static struct config *parse(const char *od, char *err, size_t errlen)
{
	char doc[1024];
	struct config *c = NULL;

	snprintf(doc, sizeof(doc),
		 "{\"backends\": {\"b\": {%s \"replicas\": {\"r0\": \"127.0.0.1:9000\","
		 " \"r1\": \"127.0.0.1:9001\", \"r2\": \"127.0.0.1:9002\"}}},"
		 " \"endpoints\": {\"e\": {\"route\": \"/\", \"traffic\": {\"b\": 1}}}}",
		 od);
	if (config_parse(doc, strlen(doc), "t.json", NULL, &c, err, errlen) != 0)
		return NULL;
	return c;
}

static struct config *parse_ok(const char *od)
{
	char err[512];
	struct config *c = parse(od, err, sizeof(err));

	if (!c)
		fail_msg("unexpected parse error: %s", err);
	return c;
}

static void parse_err(const char *od, const char *want)
{
	char err[512] = "";
	struct config *c = parse(od, err, sizeof(err));

	assert_null(c);
	assert_string_equal(err, want);
}

static void fail_n(const struct backend_cfg *b, size_t r, int n)
{
	for (int i = 0; i < n; i++)
		outlier_failure(b, r, OUTLIER_RESET, clock_now_ms());
}

/* The ejection ran out: the next look at the replica returns it. */
static void expire(struct replica_state *rs)
{
	atomic_store(&rs->ejected_until_ms, clock_now_ms() - 1);
}

static void test_time_and_percent(void **state)
{
	struct outlier_cfg c = { 5, 1000, 3500, 50, false };

	(void)state;
	assert_int_equal(outlier_ejection_ms(&c, 1), 1000);
	assert_int_equal(outlier_ejection_ms(&c, 3), 3000);
	assert_int_equal(outlier_ejection_ms(&c, 4), 3500); /* capped */
	assert_true(outlier_percent_allows(&c, 0, 3));  /* 1 of 3 <= 50% */
	assert_false(outlier_percent_allows(&c, 1, 3)); /* 2 of 3 > 50% */
	assert_true(outlier_percent_allows(&c, 0, 2));
	assert_false(outlier_percent_allows(&c, 0, 1)); /* the only replica: never */
	c.max_ejection_percent = 100;
	assert_true(outlier_percent_allows(&c, 2, 3));
	c.max_ejection_percent = 0;
	assert_false(outlier_percent_allows(&c, 0, 10));
}

static void test_defaults_and_validation(void **state)
{
	struct config *c = parse_ok("");
	const struct backend_cfg *b = &c->backends[0];

	(void)state;
	assert_int_equal(b->outlier.consecutive_failures, 5);
	assert_int_equal(b->outlier.base_ejection_ms, 30000);
	assert_int_equal(b->outlier.max_ejection_ms, 300000);
	assert_int_equal(b->outlier.max_ejection_percent, 50);
	assert_false(b->outlier.count_5xx);
	assert_false(b->queue_when_unavailable);
	assert_non_null(strstr(c->json, "\"outlier_detection\":{\"base_ejection_ms\":30000,"
				       "\"consecutive_failures\":5,\"count_5xx\":false,"
				       "\"max_ejection_ms\":300000,\"max_ejection_percent\":50}"));
	assert_non_null(strstr(c->json, "\"queue_when_unavailable\":false"));
	config_unref(c);
	/* A base above the default cap raises the cap's default with it. */
	c = parse_ok("\"outlier_detection\": {\"base_ejection_ms\": 400000},"
		     " \"queue_when_unavailable\": true,");
	assert_int_equal(c->backends[0].outlier.max_ejection_ms, 400000);
	assert_true(c->backends[0].queue_when_unavailable);
	config_unref(c);

	parse_err("\"outlier_detection\": {\"max_ejection_percent\": 101},",
		  "t.json: backends.b.outlier_detection.max_ejection_percent: must be an integer <= 100");
	parse_err("\"outlier_detection\": {\"consecutive\": 3},",
		  "t.json: backends.b.outlier_detection.consecutive: unknown key");
	parse_err("\"outlier_detection\": {\"count_5xx\": 1},",
		  "t.json: backends.b.outlier_detection.count_5xx: must be true or false");
	parse_err("\"outlier_detection\": {\"base_ejection_ms\": 0},",
		  "t.json: backends.b.outlier_detection.base_ejection_ms: must be an integer >= 1");
	parse_err("\"outlier_detection\": {\"base_ejection_ms\": 5000, \"max_ejection_ms\": 4000},",
		  "t.json: backends.b.outlier_detection.max_ejection_ms: must be an integer >= 5000");
	parse_err("\"outlier_detection\": 5,",
		  "t.json: backends.b.outlier_detection: must be an object {\"consecutive_failures\": N, ...}");
	parse_err("\"queue_when_unavailable\": \"yes\",",
		  "t.json: backends.b.queue_when_unavailable: must be true or false");
}

static void test_consecutive_failures_eject(void **state)
{
	struct config *c = parse_ok("\"outlier_detection\": {\"consecutive_failures\": 3,"
				    " \"base_ejection_ms\": 1000},");
	const struct backend_cfg *b = &c->backends[0];
	struct replica_state *rs = b->replicas[0].state;

	(void)state;
	fail_n(b, 0, 2);
	outlier_success(b, 0); /* the run is broken */
	fail_n(b, 0, 2);
	assert_true(router_replica_up(rs));
	assert_true(outlier_failure(b, 0, OUTLIER_TIMEOUT, clock_now_ms()));
	assert_false(router_replica_up(rs));
	assert_in_range(outlier_ms_left(rs, clock_now_ms()), 900, 1000);
	assert_int_equal(outlier_ejections(rs), 1);
	assert_int_equal(atomic_load(&rs->outlier.ejections[OUTLIER_TIMEOUT]), 1);
	assert_int_equal(atomic_load(&rs->outlier.last_reason), OUTLIER_TIMEOUT);
	/* Failures of requests in flight while it is out change nothing. */
	assert_false(outlier_failure(b, 0, OUTLIER_RESET, clock_now_ms()));
	assert_int_equal(outlier_ejections(rs), 1);
	config_unref(c);
}

static void test_max_percent(void **state)
{
	struct config *c = parse_ok("\"outlier_detection\": {\"consecutive_failures\": 1},");
	const struct backend_cfg *b = &c->backends[0];

	(void)state;
	assert_true(outlier_failure(b, 0, OUTLIER_RESET, clock_now_ms()));
	assert_false(outlier_failure(b, 1, OUTLIER_RESET, clock_now_ms())); /* 2 of 3 > 50% */
	assert_false(outlier_failure(b, 1, OUTLIER_RESET, clock_now_ms()));
	assert_true(router_replica_up(b->replicas[1].state));
	/* Once r0 is back, r1 may go. */
	expire(b->replicas[0].state);
	assert_true(router_replica_up(b->replicas[0].state));
	assert_true(outlier_failure(b, 1, OUTLIER_RESET, clock_now_ms()));
	config_unref(c);
}

static void test_probation(void **state)
{
	struct config *c = parse_ok("\"outlier_detection\": {\"consecutive_failures\": 2,"
				    " \"base_ejection_ms\": 1000, \"max_ejection_ms\": 2500},");
	const struct backend_cfg *b = &c->backends[0];
	struct replica_state *rs = b->replicas[2].state;

	(void)state;
	fail_n(b, 2, 2);
	assert_false(router_replica_up(rs));
	expire(rs);
	{
		uint64_t until = atomic_load(&rs->ejected_until_ms);
		assert_true(router_replica_up(rs)); /* returns, on probation */
		assert_int_equal(atomic_load(&rs->up_since_ms), until); /* slow start from there */
	}
	assert_int_equal(atomic_load(&rs->ejected_until_ms), 0);
	assert_int_equal(atomic_load(&rs->outlier.probation), 1);
	/* One failure on probation ejects again, twice as long. */
	assert_true(outlier_failure(b, 2, OUTLIER_CONNECT_FAILED, clock_now_ms()));
	assert_in_range(outlier_ms_left(rs, clock_now_ms()), 1900, 2000);
	expire(rs);
	assert_true(router_replica_up(rs));
	assert_true(outlier_failure(b, 2, OUTLIER_CONNECT_FAILED, clock_now_ms()));
	assert_in_range(outlier_ms_left(rs, clock_now_ms()), 2400, 2500); /* capped */
	assert_int_equal(outlier_ejections(rs), 3);
	/* A success run on probation (consecutive_failures long) ends it: the
	 * next ejection takes the base time again and needs a full run. */
	expire(rs);
	assert_true(router_replica_up(rs));
	outlier_success(b, 2);
	assert_int_equal(atomic_load(&rs->outlier.probation), 1);
	outlier_success(b, 2);
	assert_int_equal(atomic_load(&rs->outlier.probation), 0);
	assert_int_equal(atomic_load(&rs->outlier.level), 0);
	assert_false(outlier_failure(b, 2, OUTLIER_RESET, clock_now_ms()));
	assert_true(outlier_failure(b, 2, OUTLIER_RESET, clock_now_ms()));
	assert_in_range(outlier_ms_left(rs, clock_now_ms()), 900, 1000);
	config_unref(c);
}

static void test_off(void **state)
{
	struct config *c = parse_ok("\"outlier_detection\": {\"consecutive_failures\": 0,"
				    " \"max_ejection_percent\": 100},");
	const struct backend_cfg *b = &c->backends[0];

	(void)state;
	fail_n(b, 0, 100);
	assert_true(router_replica_up(b->replicas[0].state));
	assert_int_equal(outlier_ejections(b->replicas[0].state), 0);
	config_unref(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_time_and_percent),
		cmocka_unit_test(test_defaults_and_validation),
		cmocka_unit_test(test_consecutive_failures_eject),
		cmocka_unit_test(test_max_percent),
		cmocka_unit_test(test_probation),
		cmocka_unit_test(test_off),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
