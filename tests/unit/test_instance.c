/* Unit tests for several instances sharing every cap: the shares sum to
 * the cap for every N, a snapshot takes them (0: no queueing either), the
 * peer set gives every instance the same order, and the literal --peers
 * form (loopback: one address, the port tells the instances apart). */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ringroute/config.h"
#include "ringroute/instance.h"
#include "ringroute/proxy.h"
#include "ringroute/xring.h"

static struct sockaddr_in sa(const char *ip, uint16_t port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	inet_pton(AF_INET, ip, &a.sin_addr);
	return a;
}

static void test_shares_sum_to_cap(void **state)
{
	(void)state;
	for (uint32_t cap = 0; cap <= 40; cap++)
		for (uint32_t n = 1; n <= 12; n++) {
			uint32_t sum = 0, lo = UINT32_MAX, hi = 0;
			for (uint32_t i = 0; i < n; i++) {
				uint32_t s = instance_share(cap, i, n);
				sum += s;
				lo = s < lo ? s : lo;
				hi = s > hi ? s : hi;
			}
			assert_int_equal(sum, cap);
			assert_true(hi - lo <= 1); /* as even as integers allow */
		}
	assert_int_equal(instance_share(4, 0, 3), 2);
	assert_int_equal(instance_share(4, 1, 3), 1);
	assert_int_equal(instance_share(4, 2, 3), 1);
	assert_int_equal(instance_share(2, 2, 3), 0);
	assert_int_equal(instance_share(7, 0, 0), 7); /* count 0: alone */
	/* not in the set: no share at all */
	assert_int_equal(instance_share(7, INSTANCE_NONE, 3), 0);
	assert_int_equal(instance_share(7, 3, 3), 0);
}

static void test_apply_snapshot(void **state)
{
	const char *doc = "{\"backends\": {"
			  "\"a\": {\"max_ongoing_requests\": 4, \"max_queued_requests\": 10,"
			  "        \"replicas\": {\"r\": \"127.0.0.1:9\"}},"
			  "\"b\": {\"max_ongoing_requests\": 2, \"max_queued_requests\": 5,"
			  "        \"replicas\": {\"r\": \"127.0.0.1:10\"}}},"
			  "\"endpoints\": {\"e\": {\"route\": \"/\", \"traffic\": {\"a\": 1}}}}";
	struct config *c = NULL;
	char err[256];
	const struct backend_cfg *a, *b;

	(void)state;
	assert_int_equal(config_parse(doc, strlen(doc), "t", NULL, &c, err, sizeof(err)), 0);
	a = config_backend(c, "a");
	b = config_backend(c, "b");
	/* Alone: the configured caps. */
	assert_int_equal(a->max_ongoing, 4);
	assert_int_equal(a->max_queued, 10);
	instance_apply(c, 2, 3);
	assert_int_equal(a->max_ongoing, 1);
	assert_int_equal(a->max_queued, 3);
	assert_int_equal(a->max_ongoing_cfg, 4);
	assert_int_equal(a->max_queued_cfg, 10);
	/* b's cap 2 among 3: instance 2 has no slot, so no queue either. */
	assert_int_equal(b->max_ongoing, 0);
	assert_int_equal(b->max_queued, 0);
	/* Applying again starts from the configured caps, not the shares. */
	instance_apply(c, 0, 3);
	assert_int_equal(a->max_ongoing, 2);
	assert_int_equal(a->max_queued, 4);
	assert_int_equal(b->max_ongoing, 1);
	assert_int_equal(b->max_queued, 2);
	instance_apply(c, 0, 1);
	assert_int_equal(a->max_ongoing, 4);
	assert_int_equal(b->max_queued, 5);
	/* The canonical document keeps the configured caps. */
	instance_apply(c, 1, 3);
	assert_non_null(strstr(c->json, "\"max_ongoing_requests\":4"));
	config_unref(c);
}

static void test_derive_same_order_everywhere(void **state)
{
	/* Three pods, as DNS may list them in any order. */
	struct sockaddr_in p1[] = {sa("10.0.0.7", 8080), sa("10.0.0.3", 8080),
				   sa("10.0.1.1", 8080), sa("10.0.0.3", 8080)};
	struct sockaddr_in own[] = {sa("127.0.0.1", 0), sa("10.0.0.7", 0)};
	uint32_t i = 99, n = 99;

	(void)state;
	assert_int_equal(instance_derive(p1, 4, own, 2, 8080, &i, &n), 0);
	assert_int_equal(i, 1); /* 10.0.0.3 < 10.0.0.7 < 10.0.1.1; duplicate dropped */
	assert_int_equal(n, 3);
	own[1] = sa("10.0.1.1", 0);
	assert_int_equal(instance_derive(p1, 4, own, 2, 8080, &i, &n), 0);
	assert_int_equal(i, 2);
	own[1] = sa("10.0.0.3", 0);
	assert_int_equal(instance_derive(p1, 4, own, 2, 8080, &i, &n), 0);
	assert_int_equal(i, 0);
	/* Not in the set (a new pod DNS does not list yet, another port):
	 * nothing written. */
	own[1] = sa("10.0.2.2", 0);
	i = n = 99;
	assert_int_equal(instance_derive(p1, 4, own, 2, 8080, &i, &n), -1);
	own[1] = sa("10.0.0.3", 0);
	assert_int_equal(instance_derive(p1, 4, own, 2, 9090, &i, &n), -1);
	assert_int_equal(i, 99);
	assert_int_equal(n, 99);
	/* A peer leaves: N and the order follow. */
	own[1] = sa("10.0.1.1", 0);
	assert_int_equal(instance_derive(p1 + 1, 2, own, 2, 8080, &i, &n), 0);
	assert_int_equal(i, 1);
	assert_int_equal(n, 2);
}

static void test_derive_loopback_ports(void **state)
{
	/* All on 127.0.0.1: the listen port tells them apart; numeric port
	 * order, not text order (9000 before 10000). */
	struct sockaddr_in p[] = {sa("127.0.0.1", 10000), sa("127.0.0.1", 9000),
				  sa("127.0.0.1", 9500)};
	struct sockaddr_in own[] = {sa("127.0.0.1", 0)};
	uint32_t i, n;

	(void)state;
	assert_int_equal(instance_derive(p, 3, own, 1, 9000, &i, &n), 0);
	assert_int_equal(i, 0);
	assert_int_equal(instance_derive(p, 3, own, 1, 9500, &i, &n), 0);
	assert_int_equal(i, 1);
	assert_int_equal(instance_derive(p, 3, own, 1, 10000, &i, &n), 0);
	assert_int_equal(i, 2);
	assert_int_equal(n, 3);
}

static void test_peers_spec(void **state)
{
	struct sockaddr_in v[8];
	char err[256];

	(void)state;
	assert_int_equal(instance_peers_check("dns:ringroute-peers.ns.svc:8080", err, sizeof(err)), 0);
	assert_int_equal(instance_peers_check("127.0.0.1:1,127.0.0.1:2", err, sizeof(err)), 0);
	assert_int_equal(instance_peers_check("dns:name", err, sizeof(err)), -EINVAL);
	assert_int_equal(instance_peers_check("dns::80", err, sizeof(err)), -EINVAL);
	assert_int_equal(instance_peers_check("dns:n:99999", err, sizeof(err)), -EINVAL);
	assert_int_equal(instance_peers_check("dns:n:8x", err, sizeof(err)), -EINVAL);
	assert_int_equal(instance_peers_check("127.0.0.1:1,,", err, sizeof(err)), -EINVAL);
	assert_int_equal(instance_peers_check("", err, sizeof(err)), -EINVAL);
	assert_int_equal(instance_peers_resolve("127.0.0.1:7,127.0.0.2:8", v, 8, err, sizeof(err)), 2);
	assert_int_equal(ntohs(v[1].sin_port), 8);
	assert_int_equal(instance_peers_resolve("127.0.0.1:7,127.0.0.2:8", v, 1, err, sizeof(err)), -1);
	/* localhost comes from the hosts file: no DNS server needed. */
	assert_true(instance_peers_resolve("dns:localhost:81", v, 8, err, sizeof(err)) >= 1);
	assert_int_equal(ntohs(v[0].sin_port), 81);
}

/* proxy_set_instance: the same document, new shares, one more version;
 * the same I/N again changes nothing; a change that cannot be applied
 * (the state file) leaves the shares in force. No shards: publishing
 * reaches nobody, which is all this needs. */
static void test_set_instance(void **state)
{
	const char *doc = "{\"backends\": {\"a\": {\"max_ongoing_requests\": 5,"
			  " \"max_queued_requests\": 7, \"replicas\": {\"r\": \"127.0.0.1:9\"}}},"
			  " \"endpoints\": {\"e\": {\"route\": \"/\", \"traffic\": {\"a\": 1}}}}";
	struct proxy p;
	struct config *c = NULL;
	char err[256];
	const struct backend_cfg *a;
	char *json0;

	(void)state;
	memset(&p, 0, sizeof(p));
	registry_init(&p.registry);
	pthread_mutex_init(&p.config_lock, NULL);
	pthread_mutex_init(&p.xring_lock, NULL);
	assert_int_equal(config_parse(doc, strlen(doc), "t", &p.registry, &c, err, sizeof(err)), 0);
	c->version = 1;
	p.config = c;
	atomic_store(&p.instance_index, 0);
	atomic_store(&p.instance_count, 1);
	json0 = strdup(c->json);

	assert_int_equal(proxy_set_instance(&p, 1, 3, err, sizeof(err)), 0);
	a = config_backend(p.config, "a");
	assert_int_equal(p.config->version, 2);
	assert_int_equal(a->max_ongoing, 2); /* 5 among 3: 2, 2, 1 */
	assert_int_equal(a->max_queued, 2);  /* 7 among 3: 3, 2, 2 */
	assert_int_equal(a->max_ongoing_cfg, 5);
	assert_string_equal(p.config->json, json0);
	assert_int_equal(proxy_set_instance(&p, 1, 3, err, sizeof(err)), 0);
	assert_int_equal(p.config->version, 2); /* nothing changed */
	/* Later snapshots (edits, reloads) take the shares as well. */
	c = NULL;
	assert_int_equal(config_parse(doc, strlen(doc), "t", &p.registry, &c, err, sizeof(err)), 0);
	proxy_change(&p, c, err, sizeof(err));
	assert_int_equal(p.config->version, 3);
	assert_int_equal(config_backend(p.config, "a")->max_ongoing, 2);
	/* Not applied: the state file cannot be written. */
	p.opt.state_path = "/nonexistent-dir/state.json";
	assert_int_not_equal(proxy_set_instance(&p, 2, 3, err, sizeof(err)), 0);
	assert_int_equal(atomic_load(&p.instance_index), 1);
	assert_int_equal(atomic_load(&p.instance_count), 3);
	assert_int_equal(p.config->version, 3);
	assert_int_equal(config_backend(p.config, "a")->max_ongoing, 2);

	free(json0);
	config_unref(p.config);
	xring_destroy(&p);
	registry_destroy(&p.registry);
	pthread_mutex_destroy(&p.config_lock);
	pthread_mutex_destroy(&p.xring_lock);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_shares_sum_to_cap),
		cmocka_unit_test(test_apply_snapshot),
		cmocka_unit_test(test_derive_same_order_everywhere),
		cmocka_unit_test(test_derive_loopback_ports),
		cmocka_unit_test(test_peers_spec),
		cmocka_unit_test(test_set_instance),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
