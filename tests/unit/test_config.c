/* Unit tests for config parsing, canonical JSON and the replica registry.
 * Run under ASan/LSan in Debug builds: every error path must be leak free. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <arpa/inet.h>
#include <llhttp.h>

#include "ringroute/config.h"

#define SRC "routes.json"

static const char full_doc[] =
	"{\n"
	"  \"backends\": {\n"
	"    \"resnet-v2\": {\"max_ongoing_requests\": 8, \"policy\": \"round_robin\",\n"
	"                  \"replicas\": {\"r1\": \"localhost:9101\"}},\n"
	"    \"resnet-v1\": {\n"
	"      \"max_ongoing_requests\": 4, \"max_queued_requests\": 10, \"queue_timeout_ms\": 0,\n"
	"      \"connect_timeout_ms\": 50, \"request_timeout_ms\": 700, \"retries\": 0,\n"
	"      \"retry_on\": [\"503\", \"connect-failure\"], \"retry_budget_percent\": 50,\n"
	"      \"policy\": \"p2c\",\n"
	"      \"health_check\": {\"path\": \"/-/healthz\", \"interval_ms\": 500},\n"
	"      \"replicas\": {\"r2\": \"127.0.0.1:9002\", \"r1\": \"127.0.0.1:9001\"}\n"
	"    },\n"
	"    \"shadow-b\": {}\n"
	"  },\n"
	"  \"endpoints\": {\n"
	"    \"root\": {\"route\": \"/\", \"traffic\": {\"resnet-v1\": 1}},\n"
	"    \"predict\": {\"route\": \"/predict\", \"methods\": [\"POST\", \"PUT\"],\n"
	"                \"call_method\": \"predict\", \"max_body_bytes\": 1000,\n"
	"                \"traffic\": {\"resnet-v2\": 0.1, \"resnet-v1\": 0.9},\n"
	"                \"shadow\": {\"shadow-b\": 0.05}},\n"
	"    \"predict-v2\": {\"route\": \"/predict/v2\", \"traffic\": {\"resnet-v2\": 3, \"shadow-b\": 0}}\n"
	"  }\n"
	"}\n";

static struct config *parse_ok(const char *doc, struct replica_registry *reg)
{
	struct config *c = NULL;
	char err[512];
	int rc = config_parse(doc, strlen(doc), SRC, reg, &c, err, sizeof(err));
	if (rc != 0)
		fail_msg("unexpected parse error %d: %s", rc, err);
	assert_non_null(c);
	return c;
}

/* Parses doc expecting -EINVAL and an error message equal to want (or, when
 * want starts with '~', containing the rest). */
static void parse_err(const char *doc, const char *want)
{
	struct config *c = NULL;
	char err[512];
	int rc = config_parse(doc, strlen(doc), SRC, NULL, &c, err, sizeof(err));
	assert_int_equal(rc, -EINVAL);
	assert_null(c);
	if (want[0] == '~') {
		if (!strstr(err, want + 1))
			fail_msg("error \"%s\" does not contain \"%s\"", err, want + 1);
	} else {
		assert_string_equal(err, want);
	}
}

static void test_parse_full(void **state)
{
	(void)state;
	struct config *c = parse_ok(full_doc, NULL);

	assert_int_equal(c->version, 1);
	assert_int_equal(atomic_load(&c->refs), 1);
	/* backends sorted by name, index = position */
	assert_int_equal(c->nbackends, 3);
	assert_string_equal(c->backends[0].name, "resnet-v1");
	assert_string_equal(c->backends[1].name, "resnet-v2");
	assert_string_equal(c->backends[2].name, "shadow-b");
	for (uint32_t i = 0; i < 3; i++)
		assert_int_equal(c->backends[i].index, i);

	const struct backend_cfg *b = config_backend(c, "resnet-v1");
	assert_ptr_equal(b, &c->backends[0]);
	assert_int_equal(b->max_ongoing, 4);
	assert_int_equal(b->max_queued, 10);
	assert_int_equal(b->queue_timeout_ms, 0);
	assert_int_equal(b->connect_timeout_ms, 50);
	assert_int_equal(b->request_timeout_ms, 700);
	assert_int_equal(b->retries, 0);
	assert_int_equal(b->policy, POLICY_P2C);
	assert_string_equal(b->hc_path, "/-/healthz");
	assert_int_equal(b->hc_interval_ms, 500);
	assert_int_equal(b->nreplicas, 2);
	assert_string_equal(b->replicas[0].id, "r1");
	assert_string_equal(b->replicas[0].address, "127.0.0.1:9001");
	assert_int_equal(ntohs(b->replicas[0].addr.u.in.sin_port), 9001);
	assert_int_equal(b->replicas[0].addr.u.in.sin_family, AF_INET);
	assert_int_equal(ntohl(b->replicas[0].addr.u.in.sin_addr.s_addr), 0x7f000001);
	assert_string_equal(b->replicas[0].state->key, "resnet-v1/r1@127.0.0.1:9001");
	assert_int_equal(atomic_load(&b->replicas[0].state->healthy), 1);
	assert_int_equal(atomic_load(&b->replicas[0].state->ongoing), 0);
	assert_int_equal((uintptr_t)b->replicas[0].state % 64, 0);
	assert_string_equal(b->state->name, "resnet-v1");

	b = config_backend(c, "resnet-v2");
	assert_int_equal(b->policy, POLICY_RR);
	assert_int_equal(b->max_ongoing, 8);
	assert_null(b->hc_path);
	assert_string_equal(b->replicas[0].address, "localhost:9101");
	assert_int_equal(ntohl(b->replicas[0].addr.u.in.sin_addr.s_addr), 0x7f000001);
	/* the key uses the resolved address */
	assert_string_equal(b->replicas[0].state->key, "resnet-v2/r1@127.0.0.1:9101");

	/* defaults */
	b = config_backend(c, "shadow-b");
	assert_int_equal(b->max_ongoing, 100);
	assert_int_equal(b->max_queued, 1024);
	assert_int_equal(b->queue_timeout_ms, 5000);
	assert_int_equal(b->connect_timeout_ms, 1000);
	assert_int_equal(b->request_timeout_ms, 60000);
	assert_int_equal(b->retries, 2);
	assert_int_equal(b->policy, POLICY_P2C);
	assert_int_equal(b->nreplicas, 0);
	assert_null(config_backend(c, "nope"));

	/* endpoints: longest route first */
	assert_int_equal(c->nendpoints, 3);
	assert_string_equal(c->endpoints[0].route, "/predict/v2");
	assert_string_equal(c->endpoints[1].route, "/predict");
	assert_string_equal(c->endpoints[2].route, "/");
	assert_int_equal(c->endpoints[1].route_len, 8);

	const struct endpoint_cfg *e = config_endpoint(c, "predict");
	assert_ptr_equal(e, &c->endpoints[1]);
	assert_int_equal(e->methods, (1ull << HTTP_POST) | (1ull << HTTP_PUT));
	assert_string_equal(e->call_method, "predict");
	assert_int_equal(e->max_body_bytes, 1000);
	assert_int_equal(e->ntraffic, 2);
	assert_ptr_equal(e->traffic[0].backend, config_backend(c, "resnet-v1"));
	assert_true(e->traffic[0].weight == 0.9);
	assert_true(e->traffic[0].cum == 0.9);
	assert_ptr_equal(e->traffic[1].backend, config_backend(c, "resnet-v2"));
	assert_true(e->traffic[1].cum == 0.9 + 0.1);
	assert_int_equal(e->nshadow, 1);
	assert_true(e->shadow[0].weight == 0.05);
	assert_ptr_equal(e->shadow[0].backend, config_backend(c, "shadow-b"));

	e = config_endpoint(c, "root");
	assert_int_equal(e->methods, 0);
	assert_null(e->call_method);
	assert_int_equal(e->max_body_bytes, RR_DEFAULT_MAX_BODY);
	assert_int_equal(e->nshadow, 0);
	assert_null(e->shadow);

	e = config_endpoint(c, "predict-v2");
	assert_int_equal(e->ntraffic, 2);
	assert_true(e->traffic[1].weight == 0);
	assert_true(e->traffic[1].cum == 3);
	assert_null(config_endpoint(c, "nope"));

	config_ref(c);
	assert_int_equal(atomic_load(&c->refs), 2);
	config_unref(c);
	config_unref(c);
}

static void test_syntax_error_position(void **state)
{
	(void)state;
	/* missing comma: jansson reports the end of the unexpected token */
	parse_err("{\n  \"backends\": {},\n  \"endpoints\": {\n"
		  "    \"x\": {\"route\": \"/x\" \"traffic\": {}}\n  }\n}\n",
		  "routes.json:4:33: '}' expected near '\"traffic\"'");
	/* trailing comma */
	parse_err("{\n  \"backends\": {\n    \"a\": {\n      \"retries\": 1,\n    }\n  }\n}\n",
		  "~routes.json:5:5: ");
	/* duplicate keys are syntax errors too, with a position */
	parse_err("{\n  \"backends\": {\"a\": {}, \"a\": {}},\n  \"endpoints\": {}\n}\n",
		  "~routes.json:2:27: duplicate object key");
	parse_err("", "~routes.json:1:0: ");
}

#define BK "\"backends\": {\"b1\": {\"replicas\": {\"r1\": \"127.0.0.1:1\"}}, \"b2\": {}}"
#define EP(body) "\"endpoints\": {\"e\": " body "}"
#define DOC(b, e) "{" b ", " e "}"

static void test_semantic_errors(void **state)
{
	(void)state;
	parse_err("[]", "routes.json: (top level): must be an object with \"backends\" and \"endpoints\"");
	parse_err("{\"endpoints\": {}}", "routes.json: backends: required");
	parse_err("{\"backends\": {}}", "routes.json: endpoints: required");
	parse_err("{\"backends\": [], \"endpoints\": {}}", "~routes.json: backends: must be an object");
	parse_err("{\"backends\": {}, \"endpoints\": {}, \"backend\": {}}",
		  "routes.json: backend: unknown key");

	/* backend fields */
	parse_err("{\"backends\": {\"resnet-v1\": {\"max_ongoing_requests\": 0}}, \"endpoints\": {}}",
		  "routes.json: backends.resnet-v1.max_ongoing_requests: must be an integer >= 1");
	parse_err("{\"backends\": {\"resnet-v1\": {\"max_ongoing_requests\": 2.5}}, \"endpoints\": {}}",
		  "routes.json: backends.resnet-v1.max_ongoing_requests: must be an integer >= 1");
	parse_err("{\"backends\": {\"resnet-v1\": {\"max_ongoing_requests\": \"4\"}}, \"endpoints\": {}}",
		  "routes.json: backends.resnet-v1.max_ongoing_requests: must be an integer >= 1");
	parse_err("{\"backends\": {\"b\": {\"max_ongoing_requests\": 4294967296}}, \"endpoints\": {}}",
		  "routes.json: backends.b.max_ongoing_requests: must be an integer <= 4294967295");
	parse_err("{\"backends\": {\"b\": {\"max_queued_requests\": -1}}, \"endpoints\": {}}",
		  "routes.json: backends.b.max_queued_requests: must be an integer >= 0");
	parse_err("{\"backends\": {\"b\": {\"connect_timeout_ms\": 0}}, \"endpoints\": {}}",
		  "routes.json: backends.b.connect_timeout_ms: must be an integer >= 1");
	parse_err("{\"backends\": {\"b\": {\"max_ongoing\": 4}}, \"endpoints\": {}}",
		  "routes.json: backends.b.max_ongoing: unknown key");
	parse_err("{\"backends\": {\"b\": {\"policy\": \"random\"}}, \"endpoints\": {}}",
		  "routes.json: backends.b.policy: must be \"p2c\", \"round_robin\", \"least_load\" or \"prefix\"");
	parse_err("{\"backends\": {\"b\": {\"health_check\": {\"path\": \"healthz\"}}}, \"endpoints\": {}}",
		  "~routes.json: backends.b.health_check.path: must be a string starting with '/'");
	parse_err("{\"backends\": {\"b\": {\"health_check\": {\"path\": \"/h\", \"interval_ms\": 99}}}, \"endpoints\": {}}",
		  "routes.json: backends.b.health_check.interval_ms: must be an integer >= 100");
	parse_err("{\"backends\": {\"b\": {\"health_check\": {\"path\": \"/h\", \"interval\": 500}}}, \"endpoints\": {}}",
		  "routes.json: backends.b.health_check.interval: unknown key");
	parse_err("{\"backends\": {\"b\": {\"health_check\": {\"path\": \"/h\\r\\nX: y\"}}}, \"endpoints\": {}}",
		  "~routes.json: backends.b.health_check.path: ");
	/* the retry policy and health thresholds */
	parse_err("{\"backends\": {\"b\": {\"retry_on\": \"503\"}}, \"endpoints\": {}}",
		  "~routes.json: backends.b.retry_on: must be an array of ");
	parse_err("{\"backends\": {\"b\": {\"retry_on\": [\"503\", \"500\"]}}, \"endpoints\": {}}",
		  "~routes.json: backends.b.retry_on: element 1: must be \"connect-failure\"");
	parse_err("{\"backends\": {\"b\": {\"retry_on\": [\"429\", \"429\"]}}, \"endpoints\": {}}",
		  "routes.json: backends.b.retry_on: element 1: \"429\" named twice");
	parse_err("{\"backends\": {\"b\": {\"retry_budget_percent\": 101}}, \"endpoints\": {}}",
		  "routes.json: backends.b.retry_budget_percent: must be an integer <= 100");
	parse_err("{\"backends\": {\"b\": {\"health_check\": {\"path\": \"/h\", \"rise\": 0}}}, \"endpoints\": {}}",
		  "routes.json: backends.b.health_check.rise: must be an integer >= 1");
	parse_err("{\"backends\": {\"b\": {\"health_check\": {\"path\": \"/h\", \"fall\": 101}}}, \"endpoints\": {}}",
		  "routes.json: backends.b.health_check.fall: must be an integer <= 100");
	parse_err("{\"backends\": {\"b/c\": {}}, \"endpoints\": {}}",
		  "~routes.json: backends.b/c: backend name must be non-empty");

	/* addresses */
	static const char *const bad_addr[] = {
		"127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:", ":80", "example..com:80",
		"127.0.0.1:80x", "127.0.0.1:+80", "256.0.0.1:80", "::1:80", "localhost:999999",
	};
	for (size_t i = 0; i < sizeof(bad_addr) / sizeof(bad_addr[0]); i++) {
		char doc[256], want[256];
		snprintf(doc, sizeof(doc),
			 "{\"backends\": {\"b\": {\"replicas\": {\"r1\": \"%s\"}}}, \"endpoints\": {}}",
			 bad_addr[i]);
		snprintf(want, sizeof(want), "~routes.json: backends.b.replicas.r1: bad address \"%s\"",
			 bad_addr[i]);
		parse_err(doc, want);
	}
	parse_err("{\"backends\": {\"b\": {\"replicas\": {\"r1\": 80}}}, \"endpoints\": {}}",
		  "~routes.json: backends.b.replicas.r1: must be a string");
	parse_err("{\"backends\": {\"b\": {\"replicas\": [\"127.0.0.1:80\"]}}, \"endpoints\": {}}",
		  "~routes.json: backends.b.replicas: must be an object");

	/* endpoints */
	parse_err(DOC(BK, EP("{\"route\": \"/x\", \"traffic\": {\"b9\": 1}}")),
		  "routes.json: endpoints.e.traffic.b9: unknown backend");
	parse_err("{\"backends\": {\"resnet-v1\": {}}, \"endpoints\": {\"predict\": "
		  "{\"route\": \"/p\", \"traffic\": {\"resnet-v1\": 1, \"resnet-v9\": 1}}}}",
		  "routes.json: endpoints.predict.traffic.resnet-v9: unknown backend");
	parse_err(DOC(BK, EP("{\"route\": \"/x\", \"traffic\": {\"b1\": 1}, \"shadow\": {\"b3\": 0.1}}")),
		  "routes.json: endpoints.e.shadow.b3: unknown backend");
	parse_err(DOC(BK, EP("{\"route\": \"/x\", \"traffic\": {\"b1\": 1}, \"shadow\": {\"b2\": 1.5}}")),
		  "routes.json: endpoints.e.shadow.b2: must be a number in [0, 1]");
	parse_err(DOC(BK, EP("{\"route\": \"/x\", \"traffic\": {\"b1\": -1}}")),
		  "routes.json: endpoints.e.traffic.b1: must be a number >= 0");
	parse_err(DOC(BK, EP("{\"route\": \"/x\", \"traffic\": {\"b1\": \"1\"}}")),
		  "routes.json: endpoints.e.traffic.b1: must be a number >= 0");
	parse_err(DOC(BK, EP("{\"route\": \"/x\", \"traffic\": {\"b1\": 0, \"b2\": 0}}")),
		  "routes.json: endpoints.e.traffic: weights must sum to a finite number > 0");
	parse_err(DOC(BK, EP("{\"route\": \"/x\", \"traffic\": {}}")),
		  "routes.json: endpoints.e.traffic: must name at least one backend");
	parse_err(DOC(BK, EP("{\"route\": \"/x\"}")), "routes.json: endpoints.e.traffic: required");
	parse_err(DOC(BK, EP("{\"traffic\": {\"b1\": 1}}")), "routes.json: endpoints.e.route: required");
	parse_err(DOC(BK, EP("{\"route\": \"x\", \"traffic\": {\"b1\": 1}}")),
		  "~routes.json: endpoints.e.route: must be a path starting with '/'");
	parse_err(DOC(BK, EP("{\"route\": \"/x?y\", \"traffic\": {\"b1\": 1}}")),
		  "~routes.json: endpoints.e.route: must be a path");
	parse_err(DOC(BK, EP("{\"route\": \"/x\", \"traffic\": {\"b1\": 1}, \"weights\": {}}")),
		  "routes.json: endpoints.e.weights: unknown key");
	parse_err(DOC(BK, EP("{\"route\": \"/x\", \"traffic\": {\"b1\": 1}, \"methods\": [\"GET\", \"FETCH\"]}")),
		  "routes.json: endpoints.e.methods[1]: unknown method \"FETCH\"");
	parse_err(DOC(BK, EP("{\"route\": \"/x\", \"traffic\": {\"b1\": 1}, \"methods\": [\"get\"]}")),
		  "routes.json: endpoints.e.methods[0]: unknown method \"get\"");
	parse_err(DOC(BK, EP("{\"route\": \"/x\", \"traffic\": {\"b1\": 1}, \"methods\": []}")),
		  "~routes.json: endpoints.e.methods: must be a non-empty array");
	parse_err(DOC(BK, EP("{\"route\": \"/x\", \"traffic\": {\"b1\": 1}, \"methods\": \"GET\"}")),
		  "~routes.json: endpoints.e.methods: must be a non-empty array");
	parse_err(DOC(BK, EP("{\"route\": \"/x\", \"traffic\": {\"b1\": 1}, \"max_body_bytes\": -5}")),
		  "routes.json: endpoints.e.max_body_bytes: must be an integer >= 0");
	parse_err(DOC(BK, EP("{\"route\": \"/x\", \"traffic\": {\"b1\": 1}, \"call_method\": \"a\\nb\"}")),
		  "~routes.json: endpoints.e.call_method: must be a non-empty string");
	parse_err(DOC(BK, "\"endpoints\": {\"one\": {\"route\": \"/x\", \"traffic\": {\"b1\": 1}},"
			  " \"two\": {\"route\": \"/x\", \"traffic\": {\"b2\": 1}}}"),
		  "routes.json: endpoints.two.route: duplicate route \"/x\" (also endpoints.one.route)");
	/* the error names the same pair whatever the key order */
	parse_err(DOC(BK, "\"endpoints\": {\"two\": {\"route\": \"/x\", \"traffic\": {\"b2\": 1}},"
			  " \"one\": {\"route\": \"/x\", \"traffic\": {\"b1\": 1}}}"),
		  "routes.json: endpoints.two.route: duplicate route \"/x\" (also endpoints.one.route)");

	/* a NULL/short error buffer is fine */
	struct config *c = NULL;
	assert_int_equal(config_parse("{}", 2, SRC, NULL, &c, NULL, 0), -EINVAL);
	char tiny[8];
	assert_int_equal(config_parse("{}", 2, SRC, NULL, &c, tiny, sizeof(tiny)), -EINVAL);
	assert_int_equal(strlen(tiny), sizeof(tiny) - 1);
	assert_null(c);
}

/* Two ids on one address would double the cap of that server: refused,
 * naming both ids, whatever the key order and however the address is
 * spelled; the same address in two backends, or two ports of one host,
 * are fine. */
static void test_duplicate_replica_address(void **state)
{
	(void)state;
	static const char want[] =
		"routes.json: backends.b.replicas.r2: same address 127.0.0.1:9001 as "
		"backends.b.replicas.r1: two replicas on one address would double its "
		"max_ongoing_requests";

	parse_err("{\"backends\": {\"b\": {\"replicas\": {\"r1\": \"127.0.0.1:9001\", "
		  "\"r2\": \"127.0.0.1:9001\"}}}, \"endpoints\": {}}", want);
	parse_err("{\"backends\": {\"b\": {\"replicas\": {\"r2\": \"127.0.0.1:9001\", "
		  "\"r1\": \"127.0.0.1:9001\"}}}, \"endpoints\": {}}", want);
	parse_err("{\"backends\": {\"b\": {\"replicas\": {\"r1\": \"localhost:9001\", "
		  "\"r2\": \"127.0.0.1:9001\"}}}, \"endpoints\": {}}", want);
	/* the third of three, after a distinct one */
	parse_err("{\"backends\": {\"b\": {\"replicas\": {\"a\": \"127.0.0.1:9001\", "
		  "\"m\": \"127.0.0.1:9002\", \"z\": \"127.0.0.1:9001\"}}}, \"endpoints\": {}}",
		  "~routes.json: backends.b.replicas.z: same address 127.0.0.1:9001 as "
		  "backends.b.replicas.a: ");

	struct config *c = parse_ok(
		"{\"backends\": {\"b\": {\"replicas\": {\"r1\": \"127.0.0.1:9001\", "
		"\"r2\": \"127.0.0.1:9002\"}},"
		" \"c\": {\"replicas\": {\"r1\": \"127.0.0.1:9001\"}}}, \"endpoints\": {}}",
		NULL);
	assert_int_equal(c->nbackends, 2);
	assert_int_equal(c->backends[0].nreplicas, 2);
	config_unref(c);
}

/* The object form of a replica: weight and drain read, bad values refused
 * by path; the canonical JSON keeps the string form for weight 1, not
 * drained, and writes the object form whole otherwise. */
static void test_replica_object_form(void **state)
{
	(void)state;
#define ONE(rep) "{\"backends\": {\"b\": {\"replicas\": {\"r1\": " rep "}}}, \"endpoints\": {}}"
	parse_err(ONE("{\"address\": \"127.0.0.1:9\", \"weight\": 0}"),
		  "routes.json: backends.b.replicas.r1.weight: must be an integer >= 1");
	parse_err(ONE("{\"address\": \"127.0.0.1:9\", \"weight\": 2.5}"),
		  "routes.json: backends.b.replicas.r1.weight: must be an integer >= 1");
	parse_err(ONE("{\"address\": \"127.0.0.1:9\", \"weight\": 10001}"),
		  "routes.json: backends.b.replicas.r1.weight: must be an integer <= 10000");
	parse_err(ONE("{\"address\": \"127.0.0.1:9\", \"drain\": 1}"),
		  "routes.json: backends.b.replicas.r1.drain: must be true or false");
	parse_err(ONE("{\"address\": \"127.0.0.1:9\", \"x\": 1}"),
		  "routes.json: backends.b.replicas.r1.x: unknown key");
	parse_err(ONE("{\"weight\": 2}"),
		  "routes.json: backends.b.replicas.r1.address: must be a string \"host:port\"");
	parse_err(ONE("[]"), "~routes.json: backends.b.replicas.r1: must be a string \"host:port\" or an object");

	struct config *c = parse_ok(
		"{\"backends\": {\"b\": {\"replicas\": {\"r1\": \"127.0.0.1:9001\", "
		"\"r2\": {\"address\": \"127.0.0.1:9002\", \"weight\": 3}, "
		"\"r3\": {\"address\": \"127.0.0.1:9003\", \"drain\": true}, "
		"\"r4\": {\"address\": \"127.0.0.1:9004\"}}}}, \"endpoints\": {}}",
		NULL);
	const struct backend_cfg *b = config_backend(c, "b");
	assert_int_equal(b->nreplicas, 4);
	assert_int_equal(b->replicas[0].weight, 1);
	assert_false(b->replicas[0].drain);
	assert_int_equal(b->replicas[1].weight, 3);
	assert_false(b->replicas[1].drain);
	assert_int_equal(b->replicas[2].weight, 1);
	assert_true(b->replicas[2].drain);
	assert_non_null(strstr(c->json, "\"r1\":\"127.0.0.1:9001\""));
	assert_non_null(strstr(c->json, "\"r2\":{\"address\":\"127.0.0.1:9002\",\"drain\":false,\"weight\":3}"));
	assert_non_null(strstr(c->json, "\"r3\":{\"address\":\"127.0.0.1:9003\",\"drain\":true,\"weight\":1}"));
	assert_non_null(strstr(c->json, "\"r4\":\"127.0.0.1:9004\""));
	config_unref(c);
#undef ONE
}

/* Compares two snapshots field by field (not pointers). */
static void assert_config_equal(const struct config *a, const struct config *b)
{
	assert_int_equal(a->nbackends, b->nbackends);
	for (size_t i = 0; i < a->nbackends; i++) {
		const struct backend_cfg *x = &a->backends[i], *y = &b->backends[i];
		assert_string_equal(x->name, y->name);
		assert_int_equal(x->index, y->index);
		assert_int_equal(x->max_ongoing, y->max_ongoing);
		assert_int_equal(x->max_queued, y->max_queued);
		assert_int_equal(x->queue_timeout_ms, y->queue_timeout_ms);
		assert_int_equal(x->connect_timeout_ms, y->connect_timeout_ms);
		assert_int_equal(x->request_timeout_ms, y->request_timeout_ms);
		assert_int_equal(x->retries, y->retries);
		assert_int_equal(x->slow_start_ms, y->slow_start_ms);
		assert_int_equal(x->weighted, y->weighted);
		assert_int_equal(x->retry_on, y->retry_on);
		assert_int_equal(x->retry_budget_percent, y->retry_budget_percent);
		assert_int_equal(x->policy, y->policy);
		assert_int_equal(!x->hc_path, !y->hc_path);
		if (x->hc_path) {
			assert_string_equal(x->hc_path, y->hc_path);
			assert_int_equal(x->hc_interval_ms, y->hc_interval_ms);
			assert_int_equal(x->hc_rise, y->hc_rise);
			assert_int_equal(x->hc_fall, y->hc_fall);
		}
		assert_int_equal(x->nreplicas, y->nreplicas);
		for (size_t j = 0; j < x->nreplicas; j++) {
			assert_string_equal(x->replicas[j].id, y->replicas[j].id);
			assert_string_equal(x->replicas[j].address, y->replicas[j].address);
			assert_int_equal(x->replicas[j].weight, y->replicas[j].weight);
			assert_int_equal(x->replicas[j].drain, y->replicas[j].drain);
			assert_memory_equal(&x->replicas[j].addr, &y->replicas[j].addr,
					    sizeof(x->replicas[j].addr));
			assert_string_equal(x->replicas[j].state->key, y->replicas[j].state->key);
		}
	}
	assert_int_equal(a->nendpoints, b->nendpoints);
	for (size_t i = 0; i < a->nendpoints; i++) {
		const struct endpoint_cfg *x = &a->endpoints[i], *y = &b->endpoints[i];
		assert_string_equal(x->name, y->name);
		assert_string_equal(x->route, y->route);
		assert_int_equal(x->route_len, y->route_len);
		assert_int_equal(x->methods, y->methods);
		assert_int_equal(!x->call_method, !y->call_method);
		if (x->call_method)
			assert_string_equal(x->call_method, y->call_method);
		assert_int_equal(x->max_body_bytes, y->max_body_bytes);
		assert_int_equal(x->ntraffic, y->ntraffic);
		for (size_t j = 0; j < x->ntraffic; j++) {
			assert_int_equal(x->traffic[j].backend->index, y->traffic[j].backend->index);
			assert_true(x->traffic[j].weight == y->traffic[j].weight);
			assert_true(x->traffic[j].cum == y->traffic[j].cum);
		}
		assert_int_equal(x->nshadow, y->nshadow);
		for (size_t j = 0; j < x->nshadow; j++) {
			assert_int_equal(x->shadow[j].backend->index, y->shadow[j].backend->index);
			assert_true(x->shadow[j].weight == y->shadow[j].weight);
			assert_true(x->shadow[j].cum == y->shadow[j].cum);
		}
	}
	assert_string_equal(a->json, b->json);
}

/* The endpoint keys of issue 12: defaults, values, errors, round trip. */
#define Q_DOC(EP) "{\"backends\": {\"b\": {\"replicas\": {\"r\": \"127.0.0.1:1\"}}}, " \
	"\"endpoints\": {\"e\": {\"route\": \"/\", \"traffic\": {\"b\": 1}" EP "}}}"

static void test_queueing_keys(void **state)
{
	struct config *c, *d;
	const struct endpoint_cfg *e;

	(void)state;
	c = parse_ok(Q_DOC(""), NULL);
	e = &c->endpoints[0];
	assert_int_equal(e->priority, 0);
	assert_string_equal(e->priority_header, "x-request-priority");
	assert_string_equal(e->timeout_header, "x-request-timeout-ms");
	assert_null(e->fairness_header);
	assert_int_equal(e->timeout_ms, 0);
	assert_int_equal(e->max_queued_per_tenant, 0);
	assert_false(e->queue_edf);
	assert_int_equal(e->ntenant_weights, 0);
	assert_null(strstr(c->json, "priority")); /* defaults are not listed */
	config_unref(c);

	c = parse_ok(Q_DOC(", \"priority\": -3, \"priority_header\": null, \"timeout_header\": \"\","
			   " \"timeout_ms\": 2500, \"fairness_header\": \"X-Tenant\","
			   " \"tenant_weights\": {\"zed\": 3, \"acme\": 1000},"
			   " \"max_queued_per_tenant\": 7, \"queue_order\": \"edf\""), NULL);
	e = &c->endpoints[0];
	assert_int_equal(e->priority, -3);
	assert_null(e->priority_header);
	assert_null(e->timeout_header);
	assert_int_equal(e->timeout_ms, 2500);
	assert_string_equal(e->fairness_header, "x-tenant");
	assert_int_equal(e->ntenant_weights, 2);
	assert_string_equal(e->tenant_weights[0].name, "acme"); /* sorted */
	assert_int_equal(e->tenant_weights[0].weight, 1000);
	assert_int_equal(e->tenant_weights[1].weight, 3);
	assert_int_equal(e->max_queued_per_tenant, 7);
	assert_true(e->queue_edf);
	d = parse_ok(c->json, NULL); /* the canonical document reads back the same */
	assert_string_equal(c->json, d->json);
	assert_null(d->endpoints[0].priority_header);
	config_unref(d);
	config_unref(c);

	parse_err(Q_DOC(", \"priority\": 11"),
		  "routes.json: endpoints.e.priority: must be an integer in [-10, 10]");
	parse_err(Q_DOC(", \"priority\": \"1\""),
		  "routes.json: endpoints.e.priority: must be an integer in [-10, 10]");
	parse_err(Q_DOC(", \"queue_order\": \"lifo\""),
		  "routes.json: endpoints.e.queue_order: must be \"fifo\" or \"edf\"");
	parse_err(Q_DOC(", \"tenant_weights\": {\"a\": 0}"),
		  "routes.json: endpoints.e.tenant_weights.a: must be an integer weight in [1, 1000]");
	parse_err(Q_DOC(", \"tenant_weights\": []"),
		  "routes.json: endpoints.e.tenant_weights: must be an object {\"tenant\": weight, ...}");
	parse_err(Q_DOC(", \"fairness_header\": \"X Tenant\""),
		  "routes.json: endpoints.e.fairness_header: must be a header name: no spaces, ':' or control characters");
	parse_err(Q_DOC(", \"timeout_header\": 5"),
		  "routes.json: endpoints.e.timeout_header: must be a header name (a string), \"\" or null");
	parse_err(Q_DOC(", \"timeout_ms\": -1"),
		  "routes.json: endpoints.e.timeout_ms: must be an integer >= 0");
	parse_err(Q_DOC(", \"max_queued_per_tenant\": 1.5"),
		  "routes.json: endpoints.e.max_queued_per_tenant: must be an integer >= 0");
}

static void test_round_trip(void **state)
{
	(void)state;
	struct config *a = parse_ok(full_doc, NULL);
	struct config *b = parse_ok(a->json, NULL);

	assert_config_equal(a, b);
	/* defaults are written out, absent optionals are not */
	assert_non_null(strstr(a->json, "\"shadow-b\":{\"connect_timeout_ms\":1000,\"max_ongoing_requests\":100,"
					"\"max_queued_requests\":1024,\"outlier_detection\":{\"base_ejection_ms\":30000,"
					"\"consecutive_failures\":5,\"count_5xx\":false,\"max_ejection_ms\":300000,"
					"\"max_ejection_percent\":50},\"policy\":\"p2c\",\"queue_timeout_ms\":5000,"
					"\"queue_when_unavailable\":false,"
					"\"replicas\":{},\"request_timeout_ms\":60000,\"retries\":2,"
					"\"retry_budget_percent\":20,"
					"\"retry_on\":[\"connect-failure\",\"reset-before-response\"],"
					"\"slow_start_ms\":0}"));
	assert_non_null(strstr(a->json, "\"methods\":[\"POST\",\"PUT\"]"));
	assert_non_null(strstr(a->json, "\"retry_budget_percent\":50,\"retry_on\":[\"connect-failure\",\"503\"]"));
	assert_non_null(strstr(a->json, "\"health_check\":{\"fall\":3,\"interval_ms\":500,\"path\":\"/-/healthz\",\"rise\":2}"));
	assert_non_null(strstr(a->json, "\"max_body_bytes\":67108864"));
	assert_null(strchr(a->json, '\n'));
	config_unref(b);

	/* key order in the document does not matter */
	static const char reordered[] =
		"{\"endpoints\": {\"predict-v2\": {\"traffic\": {\"shadow-b\": 0, \"resnet-v2\": 3}, \"route\": \"/predict/v2\"},"
		" \"predict\": {\"shadow\": {\"shadow-b\": 0.05}, \"traffic\": {\"resnet-v1\": 0.9, \"resnet-v2\": 0.1},"
		"  \"max_body_bytes\": 1000, \"call_method\": \"predict\", \"methods\": [\"PUT\", \"POST\", \"PUT\"],"
		"  \"route\": \"/predict\"},"
		" \"root\": {\"traffic\": {\"resnet-v1\": 1}, \"route\": \"/\"}},"
		" \"backends\": {\"shadow-b\": {},"
		"  \"resnet-v1\": {\"replicas\": {\"r1\": \"127.0.0.1:9001\", \"r2\": \"127.0.0.1:9002\"},"
		"   \"health_check\": {\"interval_ms\": 500, \"path\": \"/-/healthz\"}, \"retries\": 0,"
		"   \"retry_budget_percent\": 50, \"retry_on\": [\"connect-failure\", \"503\"],"
		"   \"request_timeout_ms\": 700, \"connect_timeout_ms\": 50, \"queue_timeout_ms\": 0,"
		"   \"max_queued_requests\": 10, \"max_ongoing_requests\": 4},"
		"  \"resnet-v2\": {\"replicas\": {\"r1\": \"localhost:9101\"}, \"policy\": \"round_robin\","
		"   \"max_ongoing_requests\": 8}}}";
	b = parse_ok(reordered, NULL);
	assert_config_equal(a, b);
	config_unref(b);
	config_unref(a);
}

static void test_registry_survives_swap(void **state)
{
	(void)state;
	struct replica_registry reg;
	registry_init(&reg);

	static const char doc1[] =
		"{\"backends\": {\"m\": {\"replicas\": {\"r1\": \"127.0.0.1:9001\", \"r2\": \"127.0.0.1:9002\"}}},"
		" \"endpoints\": {\"e\": {\"route\": \"/\", \"traffic\": {\"m\": 1}}}}";
	/* r2 removed, r3 added, r1 written as localhost: same server, same state */
	static const char doc2[] =
		"{\"backends\": {\"m\": {\"max_ongoing_requests\": 7,"
		"  \"replicas\": {\"r1\": \"localhost:9001\", \"r3\": \"127.0.0.1:9003\"}}},"
		" \"endpoints\": {\"e\": {\"route\": \"/x\", \"traffic\": {\"m\": 1}}}}";

	struct config *c1 = parse_ok(doc1, &reg);
	struct replica_state *r1 = c1->backends[0].replicas[0].state;
	struct backend_state *bs = c1->backends[0].state;
	atomic_store(&r1->ongoing, 3);
	assert_int_equal(atomic_load(&r1->refs), 1);

	struct config *c2 = parse_ok(doc2, &reg);
	assert_ptr_equal(c2->backends[0].replicas[0].state, r1);
	assert_ptr_equal(c2->backends[0].state, bs);
	assert_int_equal(atomic_load(&r1->ongoing), 3);
	assert_int_equal(atomic_load(&r1->refs), 2);
	assert_int_equal(atomic_load(&bs->refs), 2);
	assert_ptr_not_equal(c2->backends[0].replicas[1].state, c1->backends[0].replicas[1].state);

	/* a failed parse leaves no references behind */
	struct config *bad = NULL;
	char err[256];
	static const char doc_bad[] =
		"{\"backends\": {\"m\": {\"replicas\": {\"r1\": \"127.0.0.1:9001\", \"r9\": \"127.0.0.1:9\"}}},"
		" \"endpoints\": {\"e\": {\"route\": \"/\", \"traffic\": {\"zz\": 1}}}}";
	assert_int_equal(config_parse(doc_bad, strlen(doc_bad), SRC, &reg, &bad, err, sizeof(err)), -EINVAL);
	assert_null(bad);
	assert_int_equal(atomic_load(&r1->refs), 2);
	/* r1, r2, r3, r9 (refs 0) + backend m */
	assert_int_equal(registry_collect(&reg), 4);

	/* old snapshot gone: r2 is collectable, r1 survives in c2 */
	config_unref(c1);
	assert_int_equal(atomic_load(&r1->refs), 1);
	assert_int_equal(registry_collect(&reg), 3); /* r1, r3, m */

	/* same key comes back -> same state while it is still registered */
	struct config *c3 = parse_ok(doc1, &reg);
	assert_ptr_equal(c3->backends[0].replicas[0].state, r1);
	config_unref(c3);

	config_unref(c2);
	assert_int_equal(registry_collect(&reg), 0);
	registry_destroy(&reg);
}

static void test_private_states(void **state)
{
	(void)state;
	struct rr_addr sa = { .len = sizeof(struct sockaddr_in), .u.in.sin_family = AF_INET };
	struct replica_state *r = registry_replica(NULL, "b/r@1.2.3.4:5", &sa);
	struct backend_state *b = registry_backend(NULL, "b");

	assert_non_null(r);
	assert_non_null(b);
	assert_int_equal(atomic_load(&r->healthy), 1);
	atomic_fetch_add(&r->refs, 1);
	registry_replica_unref(r);
	registry_replica_unref(r); /* last: freed (LSan checks) */
	registry_backend_unref(b);
	registry_replica_unref(NULL);
	registry_backend_unref(NULL);

	/* destroy frees even referenced states */
	struct replica_registry reg;
	registry_init(&reg);
	r = registry_replica(&reg, "b/r@1.2.3.4:5", &sa);
	assert_ptr_equal(registry_replica(&reg, "b/r@1.2.3.4:5", &sa), r);
	assert_int_equal(atomic_load(&r->refs), 2);
	assert_ptr_equal(registry_backend(&reg, "b"), registry_backend(&reg, "b"));
	assert_int_equal(registry_collect(&reg), 2);
	registry_destroy(&reg);
}

static void test_load_file(void **state)
{
	(void)state;
	char path[] = "/tmp/rr_test_config_XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, full_doc, strlen(full_doc)), (ssize_t)strlen(full_doc));
	close(fd);

	struct config *c = NULL;
	char err[512];
	assert_int_equal(config_load_file(path, NULL, &c, err, sizeof(err)), 0);
	assert_int_equal(c->nendpoints, 3);
	config_unref(c);
	c = NULL;

	fd = open(path, O_WRONLY | O_TRUNC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "{\n\"backends\": 1,\n}", 18), 18);
	close(fd);
	assert_int_equal(config_load_file(path, NULL, &c, err, sizeof(err)), -EINVAL);
	char want[128];
	snprintf(want, sizeof(want), "%s:3:1: ", path);
	if (strncmp(err, want, strlen(want)) != 0)
		fail_msg("error \"%s\" does not start with \"%s\"", err, want);
	unlink(path);

	assert_int_equal(config_load_file(path, NULL, &c, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, path));
	assert_int_equal(config_load_file("/tmp", NULL, &c, err, sizeof(err)), -EINVAL);
	assert_null(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_full),
		cmocka_unit_test(test_syntax_error_position),
		cmocka_unit_test(test_semantic_errors),
		cmocka_unit_test(test_duplicate_replica_address),
		cmocka_unit_test(test_replica_object_form),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_queueing_keys),
		cmocka_unit_test(test_registry_survives_swap),
		cmocka_unit_test(test_private_states),
		cmocka_unit_test(test_load_file),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
