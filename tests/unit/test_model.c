/* Unit tests for routing on the request body: the JSON scan (model.c),
 * held-body de-chunking and rewriting (body.c), prefix block hashing and
 * its table (prefix.c), the multiplex LRU (multiplex.c), and the router's
 * model endpoint match, prefix and multiplex choices under the cap, on
 * snapshots from config_parse. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <llhttp.h>

#include "ringroute/body.h"
#include "ringroute/clock.h"
#include "ringroute/load.h"
#include "ringroute/model.h"
#include "ringroute/multiplex.h"
#include "ringroute/prefix.h"
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

static void parse_err(const char *doc, const char *want)
{
	struct config *c = NULL;
	char err[512];
	int rc = config_parse(doc, strlen(doc), "test.json", NULL, &c, err, sizeof(err));

	assert_int_equal(rc, -EINVAL);
	if (!strstr(err, want))
		fail_msg("error \"%s\" lacks \"%s\"", err, want);
}

/* model_find on s: the decoded model, or "" (none) / "-" (not JSON). */
static const char *find(const char *s)
{
	static char out[MODEL_NAME_MAX + 1];
	struct model_span v;
	int r = model_find(s, strlen(s), &v);
	long n;

	if (r < 0)
		return "-";
	if (r == 0)
		return "";
	n = model_decode(&v, out, MODEL_NAME_MAX);
	if (n < 0)
		return "!";
	out[n] = '\0';
	return out;
}

static void test_model_find(void **state)
{
	(void)state;
	assert_string_equal(find("{\"model\": \"m1\"}"), "m1");
	assert_string_equal(find(" \r\n{ \"a\" : 1 , \"model\":\"m2\" ,\"b\":[1,2]}"), "m2");
	/* Nested "model"s never count, whatever their depth and brackets. */
	assert_string_equal(find("{\"o\": {\"model\": \"x\"}, \"l\": [{\"model\": \"y\"}]}"), "");
	assert_string_equal(find("{\"o\": {\"model\": \"x\", \"p\": {\"q\": [[{}]]}}, \"model\": \"z\"}"),
			    "z");
	/* Strings with brackets, quotes and escapes are skipped whole. */
	assert_string_equal(find("{\"s\": \"}{\\\" ] \\\\\", \"model\": \"ok\"}"), "ok");
	assert_string_equal(find("{\"model\": \"a\\\"b\\u00e9\\ud83d\\ude00\"}"),
			    "a\"b\xc3\xa9\xf0\x9f\x98\x80");
	/* The first "model" decides, string or not. */
	assert_string_equal(find("{\"model\": 3, \"model\": \"late\"}"), "");
	assert_string_equal(find("{\"model\": \"a\", \"model\": \"b\"}"), "a");
	assert_string_equal(find("{\"modelx\": \"a\"}"), "");
	assert_string_equal(find("{}"), "");
	/* Not an object, or cut before the key. */
	assert_string_equal(find("[\"model\", \"x\"]"), "-");
	assert_string_equal(find("model=x"), "-");
	assert_string_equal(find(""), "-");
	assert_string_equal(find("{\"a\": \"unterminated, \"model\""), "-");
	assert_string_equal(find("{\"a\": [1, 2, \"model\": \"x\"}"), "-");
	/* Found before a fault later on: found (only what is needed is read). */
	assert_string_equal(find("{\"model\": \"m\", garbage"), "m");
	/* Bad escapes do not decode. */
	assert_string_equal(find("{\"model\": \"\\x\"}"), "!");
	assert_string_equal(find("{\"model\": \"\\ud800\"}"), "!");
}

static void test_model_prompt(void **state)
{
	struct model_span sp[8];
	const char *a = "{\"model\": \"m\", \"prompt\": \"hello\"}";
	const char *b = "{\"messages\": [{\"role\": \"system\", \"content\": \"sys\"}, 7,"
			" {\"content\": [1]}, {\"x\": {\"content\": \"no\"}, \"content\": \"u\\\"1\"}]}";
	const char *c = "{\"prompt\": [\"p1\", 2, \"p2\"], \"messages\": [{\"content\": \"no\"}]}";
	(void)state;
	assert_int_equal(model_prompt(a, strlen(a), sp, 8), 1);
	assert_int_equal(sp[0].len, 5);
	assert_memory_equal(sp[0].p, "hello", 5);
	assert_int_equal(model_prompt(b, strlen(b), sp, 8), 2);
	assert_memory_equal(sp[0].p, "sys", 3);
	assert_int_equal(sp[1].len, 4); /* raw: u\"1 */
	assert_memory_equal(sp[1].p, "u\\\"1", 4);
	assert_int_equal(model_prompt(c, strlen(c), sp, 8), 2);
	assert_memory_equal(sp[1].p, "p2", 2);
	{
		/* Content parts: the "text" of each, in order, among strings. */
		const char *d = "{\"messages\": [{\"content\": \"s\"}, {\"content\": ["
				"{\"type\": \"text\", \"text\": \"t1\"}, {\"type\": \"image_url\","
				" \"image_url\": {\"url\": \"x\"}}, \"odd\", {\"text\": \"t2\"}]}]}";
		assert_int_equal(model_prompt(d, strlen(d), sp, 8), 3);
		assert_memory_equal(sp[0].p, "s", 1);
		assert_memory_equal(sp[1].p, "t1", 2);
		assert_memory_equal(sp[2].p, "t2", 2);
	}
	assert_int_equal(model_prompt(c, strlen(c), sp, 1), 1);
	assert_int_equal(model_prompt("{}", 2, sp, 8), 0);
	assert_int_equal(model_prompt("nope", 4, sp, 8), -1);
	/* Cut short inside "messages" (found by fuzz_model: an element read
	 * past the end). */
	{
		static const char *const cut[] = {
			"{\"messages\": [", "{\"messages\": [{\"content\": \"a\"}, ",
			"{\"prompt\": [\"a\",", "{\"messages\": [{\"content\": \"a\"}",
		};
		for (size_t i = 0; i < sizeof(cut) / sizeof(cut[0]); i++)
			assert_int_equal(model_prompt(cut[i], strlen(cut[i]), sp, 8), -1);
	}
}

static void test_body_linear_and_rewrite(void **state)
{
	const char *raw = "5;ext=1\r\nhello\r\n0001\r\n \r\n6\r\nworld!\r\n0\r\nTrailer: x\r\n\r\n";
	struct seg g[3];
	struct strbuf out = {0};
	size_t n = strlen(raw);
	(void)state;
	/* Split at every pair of points: the same bytes. */
	for (size_t i = 0; i <= n; i++) {
		for (size_t j = i; j <= n; j += 3) {
			g[0] = (struct seg){.p = raw, .len = (uint32_t)i, .bid = -1};
			g[1] = (struct seg){.p = raw + i, .len = (uint32_t)(j - i), .bid = -1};
			g[2] = (struct seg){.p = raw + j, .len = (uint32_t)(n - j), .bid = -1};
			sb_reset(&out);
			assert_int_equal(body_linear(g, 3, true, &out), 0);
			assert_int_equal(out.len, 12);
			assert_memory_equal(out.p, "hello world!", 12);
		}
	}
	sb_reset(&out);
	g[0] = (struct seg){.p = "zz\r\n", .len = 4, .bid = -1};
	assert_int_equal(body_linear(g, 1, true, &out), -EINVAL); /* "zz" is no size */
	g[0] = (struct seg){.p = "\r\n", .len = 2, .bid = -1};
	assert_int_equal(body_linear(g, 1, true, &out), -EINVAL);
	sb_reset(&out);
	g[0] = (struct seg){.p = "ab", .len = 2, .bid = -1};
	g[1] = (struct seg){.p = "cd", .len = 2, .bid = -1};
	assert_int_equal(body_linear(g, 2, false, &out), 0);
	assert_string_equal(out.p, "abcd");
	sb_reset(&out);
	{
		const char *b = "{\"a\": {\"model\": \"x\"}, \"model\": \"old\", \"z\": 1}";
		struct model_span v;
		size_t voff;
		assert_int_equal(model_find(b, strlen(b), &v), 1);
		voff = (size_t)(v.p - 1 - b);
		assert_int_equal(body_rewrite(b, strlen(b), voff, voff + v.len + 2, "new-lora", &out), 0);
		assert_string_equal(out.p, "{\"a\": {\"model\": \"x\"}, \"model\": \"new-lora\", \"z\": 1}");
	}
	sb_free(&out);
}

static void test_prefix_hash_chain(void **state)
{
	char text[1000];
	uint64_t h1[64], h2[64], h3[64];
	struct model_span one, two[2];
	size_t n1, n2, n3;
	(void)state;
	for (size_t i = 0; i < sizeof(text); i++)
		text[i] = (char)('a' + i % 23);
	one = (struct model_span){text, 1000};
	n1 = prefix_hash(&one, 1, 64, h1, 64);
	assert_int_equal(n1, 15); /* 1000 / 64, the partial block left out */
	/* Split anywhere into spans: the same chain. */
	for (size_t cut = 0; cut <= 1000; cut += 37) {
		two[0] = (struct model_span){text, cut};
		two[1] = (struct model_span){text + cut, 1000 - cut};
		n2 = prefix_hash(two, 2, 64, h2, 64);
		assert_int_equal(n2, n1);
		assert_memory_equal(h1, h2, n1 * sizeof(h1[0]));
	}
	/* A change in block 3 changes blocks 3.. and not 0..2. */
	text[3 * 64 + 5] ^= 1;
	n3 = prefix_hash(&one, 1, 64, h3, 64);
	assert_int_equal(n3, n1);
	assert_memory_equal(h1, h3, 3 * sizeof(h1[0]));
	for (size_t k = 3; k < n1; k++)
		assert_true(h1[k] != h3[k]);
	assert_int_equal(prefix_hash(&one, 1, 64, h3, 4), 4); /* max */
	assert_int_equal(prefix_hash(&one, 1, 0, h3, 4), 0);
}

static void test_prefix_table(void **state)
{
	struct prefix_table *t = prefix_table_new(1000);
	uint64_t h[40];
	char text[40 * 16];
	struct model_span sp = {text, sizeof(text)};
	size_t m;
	(void)state;
	assert_non_null(t);
	assert_int_equal(t->mask, 1023);
	memset(text, 'q', sizeof(text));
	assert_int_equal(prefix_hash(&sp, 1, 16, h, 40), 40);
	assert_int_equal(prefix_lookup(t, h, 40, 4, &m), -1);
	assert_int_equal(m, 0);
	/* Replica 2 served the first 25 blocks: a longer prompt matches 25. */
	prefix_record(t, h, 25, 2);
	assert_int_equal(prefix_lookup(t, h, 40, 4, &m), 2);
	assert_int_equal(m, 25);
	assert_int_equal(prefix_lookup(t, h, 10, 4, &m), 2);
	assert_int_equal(m, 10);
	/* Replica 1 served 7 of them later: the longest is still 2's. */
	prefix_record(t, h, 7, 1);
	assert_int_equal(prefix_lookup(t, h, 40, 4, &m), 2);
	assert_int_equal(m, 25);
	assert_int_equal(prefix_lookup(t, h, 7, 4, &m), 1);
	/* An index beyond the backend (a replica removed) is no match: the
	 * longest valid one stands. */
	assert_int_equal(prefix_lookup(t, h, 25, 2, &m), 1);
	assert_int_equal(m, 7);
	assert_int_equal(prefix_lookup(t, h, 25, 1, &m), -1);
	prefix_table_free(t);
}

static void test_mux_lru(void **state)
{
	struct mux_lru *l = mux_lru_new();
	uint64_t a = mux_id("a", 1), b = mux_id("b", 1), c = mux_id("c", 1);
	(void)state;
	assert_true(a && b && c && a != b);
	assert_false(mux_holds(l, 2, a));
	mux_note(l, 2, a);
	mux_note(l, 2, b);
	assert_true(mux_holds(l, 2, a) && mux_holds(l, 2, b));
	mux_note(l, 2, a); /* a is the most recent: c evicts b */
	mux_note(l, 2, c);
	assert_true(mux_holds(l, 2, a));
	assert_false(mux_holds(l, 2, b));
	assert_true(mux_holds(l, 2, c));
	mux_lru_free(l);
}

static const char models_doc[] =
	"{\"backends\": {\"A\": {}, \"B\": {}},"
	" \"endpoints\": {"
	"  \"z-alpha\": {\"route\": \"/v1\", \"models\": [\"alpha\"], \"traffic\": {\"A\": 1}},"
	"  \"any\": {\"route\": \"/v1\", \"traffic\": {\"B\": 1}},"
	"  \"post-beta\": {\"route\": \"/v1\", \"methods\": [\"POST\"], \"models\": [\"beta\", \"b2\"],"
	"                 \"traffic\": {\"B\": 1}},"
	"  \"only\": {\"route\": \"/v2\", \"models\": [\"alpha\"], \"traffic\": {\"A\": 1}},"
	"  \"plain\": {\"route\": \"/v3\", \"traffic\": {\"A\": 1}},"
	"  \"a-get\": {\"route\": \"/v4\", \"methods\": [\"GET\"], \"models\": [\"g\"], \"traffic\": {\"A\": 1}},"
	"  \"b-post\": {\"route\": \"/v4\", \"methods\": [\"POST\"], \"traffic\": {\"B\": 1}}}}";

static const char *mm(const struct config *c, const char *url, unsigned method, const char *m)
{
	int st;
	const struct endpoint_cfg *ep = router_match(c, url, strlen(url), method, &st);

	assert_int_equal(st, 200);
	ep = router_match_model(c, ep, method, m, m ? strlen(m) : 0);
	return ep ? ep->name : "(none)";
}

static void test_match_model(void **state)
{
	struct config *c = parse_ok(models_doc);
	(void)state;
	assert_string_equal(mm(c, "/v1", HTTP_POST, "alpha"), "z-alpha");
	assert_string_equal(mm(c, "/v1/x", HTTP_POST, "b2"), "post-beta");
	assert_string_equal(mm(c, "/v1", HTTP_GET, "beta"), "any"); /* methods exclude it */
	assert_string_equal(mm(c, "/v1", HTTP_POST, "gamma"), "any");
	assert_string_equal(mm(c, "/v1", HTTP_POST, NULL), "any");
	assert_string_equal(mm(c, "/v1", HTTP_POST, "alph"), "any");
	assert_string_equal(mm(c, "/v2", HTTP_POST, "alpha"), "only");
	assert_string_equal(mm(c, "/v2", HTTP_POST, "gamma"), "(none)");
	assert_string_equal(mm(c, "/v3", HTTP_POST, "gamma"), "plain");
	/* The first endpoint of a shared route excludes the method: the
	 * route still matches through the one that allows it. */
	assert_string_equal(mm(c, "/v4", HTTP_POST, "g"), "b-post");
	assert_string_equal(mm(c, "/v4", HTTP_GET, "g"), "a-get");
	assert_string_equal(mm(c, "/v4", HTTP_GET, "x"), "(none)");
	{
		int st;
		const struct endpoint_cfg *e = router_match(c, "/v4", 3, HTTP_PUT, &st);
		assert_int_equal(st, 405);
		assert_string_equal(e->name, "a-get");
	}
	for (size_t i = 0; i < c->nendpoints; i++)
		assert_int_equal(c->endpoints[i].route_models,
				 strcmp(c->endpoints[i].name, "plain") != 0);
	/* 6 endpoints with models on their routes + plain. */
	assert_int_equal(c->nendpoints, 7);
	config_unref(c);
}

static void test_config_errors(void **state)
{
	(void)state;
	parse_err("{\"backends\": {\"A\": {}}, \"endpoints\": {"
		  "\"a\": {\"route\": \"/v1\", \"traffic\": {\"A\": 1}},"
		  "\"b\": {\"route\": \"/v1\", \"traffic\": {\"A\": 1}}}}",
		  "endpoints.b.route: duplicate route \"/v1\"");
	parse_err("{\"backends\": {\"A\": {}}, \"endpoints\": {"
		  "\"a\": {\"route\": \"/v1\", \"models\": [\"m\", \"n\"], \"traffic\": {\"A\": 1}},"
		  "\"b\": {\"route\": \"/v1\", \"models\": [\"n\"], \"traffic\": {\"A\": 1}}}}",
		  "endpoints.b.models: model \"n\" also named by endpoints.a");
	parse_err("{\"backends\": {\"A\": {}}, \"endpoints\": {"
		  "\"a\": {\"route\": \"/v1\", \"models\": [\"m\", \"m\"], \"traffic\": {\"A\": 1}}}}",
		  "endpoints.a.models[1]: \"m\" named twice");
	parse_err("{\"backends\": {\"A\": {}}, \"endpoints\": {"
		  "\"a\": {\"route\": \"/v1\", \"models\": [], \"traffic\": {\"A\": 1}}}}",
		  "endpoints.a.models: must be a non-empty array");
	parse_err("{\"backends\": {\"A\": {}}, \"endpoints\": {"
		  "\"a\": {\"route\": \"/v1\", \"route_body_max_bytes\": 67108865, \"traffic\": {\"A\": 1}}}}",
		  "endpoints.a.route_body_max_bytes: must be an integer <= 67108864");
	parse_err("{\"backends\": {\"A\": {\"policy\": \"lru\"}}, \"endpoints\": {}}",
		  "backends.A.policy: must be \"p2c\", \"round_robin\", \"least_load\" or \"prefix\"");
	parse_err("{\"backends\": {\"A\": {\"model_rewrite\": \"a\\\"b\"}}, \"endpoints\": {}}",
		  "backends.A.model_rewrite: must be a model name");
	parse_err("{\"backends\": {\"A\": {\"multiplex\": {}}}, \"endpoints\": {}}",
		  "backends.A.multiplex: max_models_per_replica: required");
	parse_err("{\"backends\": {\"A\": {\"multiplex\": {\"max_models_per_replica\": 0}}},"
		  " \"endpoints\": {}}",
		  "backends.A.multiplex.max_models_per_replica: must be an integer >= 1");
	parse_err("{\"backends\": {\"A\": {\"prefix\": {\"balance_rel\": 0.5}}}, \"endpoints\": {}}",
		  "backends.A.prefix.balance_rel: must be a number >= 1");
	parse_err("{\"backends\": {\"A\": {\"prefix\": {\"block\": 1}}}, \"endpoints\": {}}",
		  "backends.A.prefix.block: unknown key");
	parse_err("{\"backends\": {\"A\": {\"prefix\": {\"bytes_per_load\": -1}}}, \"endpoints\": {}}",
		  "backends.A.prefix.bytes_per_load: ");
	parse_err("{\"backends\": {\"A\": {\"prefix\": {\"bytes_per_load\": \"1k\"}}}, \"endpoints\": {}}",
		  "backends.A.prefix.bytes_per_load: ");
}

static const char prefix_doc[] =
	"{\"backends\": {\"P\": {\"policy\": \"prefix\", \"max_ongoing_requests\": 3,"
	"  \"prefix\": {\"block_bytes\": 16, \"balance_abs\": 1, \"balance_rel\": 1.0,"
	"              \"bytes_per_load\": 0},"
	"  \"replicas\": {\"r0\": \"127.0.0.1:1\", \"r1\": \"127.0.0.1:2\", \"r2\": \"127.0.0.1:3\"}},"
	"  \"M\": {\"multiplex\": {\"max_models_per_replica\": 1}, \"max_ongoing_requests\": 2,"
	"  \"replicas\": {\"r0\": \"127.0.0.1:1\", \"r1\": \"127.0.0.1:2\", \"r2\": \"127.0.0.1:3\"}}},"
	" \"endpoints\": {}}";

static uint32_t ongoing(const struct backend_cfg *b, int i)
{
	return atomic_load(&b->replicas[i].state->ongoing);
}

static void test_pick_prefix(void **state)
{
	struct config *c = parse_ok(prefix_doc);
	const struct backend_cfg *b = config_backend(c, "P");
	char text[160];
	uint64_t h[10];
	struct model_span sp = {text, sizeof(text)};
	struct route_hint hint = {0};
	uint64_t rng = 42;
	int first, i;
	(void)state;
	assert_non_null(atomic_load(&b->state->prefix));
	memset(text, 's', sizeof(text));
	hint.blocks = h;
	hint.nblocks = prefix_hash(&sp, 1, 16, h, 10);
	assert_int_equal(hint.nblocks, 10);
	/* Idle: the first choice is recorded, and taken again... */
	first = router_pick_replica_hint(b, &hint, NULL, 0, &rng, NULL, 0);
	assert_true(first >= 0);
	router_replica_release(b->replicas[first].state);
	for (int k = 0; k < 20; k++) {
		i = router_pick_replica_hint(b, &hint, NULL, 0, &rng, NULL, 0);
		assert_int_equal(i, first);
		router_replica_release(b->replicas[i].state);
	}
	/* ...while within the balance bound (abs 1, rel 1.0): load 1 stays,
	 * load 2 against 0 spills to the least loaded. */
	i = router_pick_replica_hint(b, &hint, NULL, 0, &rng, NULL, 0);
	assert_int_equal(i, first);
	i = router_pick_replica_hint(b, &hint, NULL, 0, &rng, NULL, 0);
	assert_int_equal(i, first);
	assert_int_equal(ongoing(b, first), 2);
	i = router_pick_replica_hint(b, &hint, NULL, 0, &rng, NULL, 0);
	assert_int_not_equal(i, first);
	assert_int_equal(ongoing(b, i), 1);
	/* The spill was recorded: the prefix now follows it. */
	router_replica_release(b->replicas[i].state);
	i = router_pick_replica_hint(b, &hint, NULL, 0, &rng, NULL, 0);
	assert_int_not_equal(i, first);
	router_replica_release(b->replicas[i].state);
	router_replica_release(b->replicas[first].state);
	router_replica_release(b->replicas[first].state);
	/* The cap stays exact: 9 takes on 3 x 3 slots, the 10th finds none. */
	for (int k = 0; k < 9; k++)
		assert_true(router_pick_replica_hint(b, &hint, NULL, 0, &rng, NULL, 0) >= 0);
	assert_int_equal(router_pick_replica_hint(b, &hint, NULL, 0, &rng, NULL, 0), -1);
	for (int r = 0; r < 3; r++) {
		assert_int_equal(ongoing(b, r), 3);
		for (int k = 0; k < 3; k++)
			router_replica_release(b->replicas[r].state);
	}
	config_unref(c);
}

/* prefix_spill: SGLang's bound, or the load difference (in requests)
 * above matched_bytes / bytes_per_load. */
static void test_prefix_spill(void **state)
{
	struct prefix_cfg c = {.block_bytes = 64, .balance_abs = 32, .balance_rel = 1.5,
			       .bytes_per_load = 1024};
	const uint64_t one = LOAD_KV_ONE;
	(void)state;
	assert_false(prefix_spill(&c, 5 * one, 5 * one, 0));        /* not busier */
	assert_false(prefix_spill(&c, 4 * one, 5 * one, 0));
	assert_true(prefix_spill(&c, 6 * one, 5 * one, 0));         /* no match saved */
	assert_false(prefix_spill(&c, 8 * one, 5 * one, 4096));     /* 3 < 4 requests saved */
	assert_false(prefix_spill(&c, 9 * one, 5 * one, 4096));     /* 4: not more */
	assert_true(prefix_spill(&c, 10 * one, 5 * one, 4096));     /* 5 > 4 */
	assert_true(prefix_spill(&c, 9 * one + one / 2, 5 * one, 4096)); /* fractions count */
	c.bytes_per_load = 0;                                       /* only SGLang's bound */
	assert_false(prefix_spill(&c, 37 * one, 5 * one, 0));       /* 32: not more than 32 */
	assert_true(prefix_spill(&c, 38 * one, 5 * one, 0));
	assert_false(prefix_spill(&c, 100 * one, 80 * one, 0));     /* 20 < 32 */
	c.balance_abs = 10;
	assert_false(prefix_spill(&c, 100 * one, 80 * one, 0));     /* 100 < 1.5 x 80 */
	assert_true(prefix_spill(&c, 130 * one, 80 * one, 0));
}

/* The choice under bytes_per_load: 10 blocks of 16 bytes matched, 64
 * bytes per request of load: the cached replica keeps the prefix while
 * it has at most 2.5 requests more than the least loaded. And with
 * load_reports, a queue the cached replica reports counts. */
static void test_pick_prefix_cost(void **state)
{
	static const char doc[] =
		"{\"backends\": {\"P\": {\"policy\": \"prefix\", \"max_ongoing_requests\": 8,"
		"  \"load_reports\": true,"
		"  \"prefix\": {\"block_bytes\": 16, \"bytes_per_load\": 64},"
		"  \"replicas\": {\"r0\": \"127.0.0.1:1\", \"r1\": \"127.0.0.1:2\"}}},"
		" \"endpoints\": {}}";
	struct config *c = parse_ok(doc);
	const struct backend_cfg *b = config_backend(c, "P");
	char text[160];
	uint64_t h[10], rng = 3;
	struct model_span sp = {text, sizeof(text)};
	struct route_hint hint = {0};
	struct load_report rep = {.queue = 3, .have = LOAD_HAVE_QUEUE};
	int first, other, i;
	(void)state;
	memset(text, 'q', sizeof(text));
	hint.blocks = h;
	hint.nblocks = prefix_hash(&sp, 1, 16, h, 10);
	first = router_pick_replica_hint(b, &hint, NULL, 0, &rng, NULL, 0);
	assert_true(first >= 0);
	other = 1 - first;
	/* loads 1, 2 against 0 stay (2 < 2.5); 3 against 0 spills */
	assert_int_equal(router_pick_replica_hint(b, &hint, NULL, 0, &rng, NULL, 0), first);
	assert_int_equal(ongoing(b, first), 2);
	assert_int_equal(router_pick_replica_hint(b, &hint, NULL, 0, &rng, NULL, 0), first);
	assert_int_equal(ongoing(b, first), 3);
	i = router_pick_replica_hint(b, &hint, NULL, 0, &rng, NULL, 0);
	assert_int_equal(i, other);
	for (int k = 0; k < 3; k++)
		router_replica_release(b->replicas[first].state);
	router_replica_release(b->replicas[other].state);
	/* the prefix now follows the spill (recorded): idle, it stays there */
	i = router_pick_replica_hint(b, &hint, NULL, 0, &rng, NULL, 0);
	assert_int_equal(i, other);
	router_replica_release(b->replicas[i].state);
	/* the holder reports 3 waiting: 3 > 2.5 requests, the request goes
	 * to the idle replica, though ringroute has nothing in flight there */
	load_store(b->replicas[other].state, &rep, clock_now_ms());
	i = router_pick_replica_hint(b, &hint, NULL, 0, &rng, NULL, 0);
	assert_int_equal(i, first);
	router_replica_release(b->replicas[i].state);
	/* now first holds it; 2 waiting there (the other idle, reporting
	 * none): it keeps the prefix */
	rep.queue = 0;
	load_store(b->replicas[other].state, &rep, clock_now_ms());
	rep.queue = 2;
	load_store(b->replicas[first].state, &rep, clock_now_ms());
	i = router_pick_replica_hint(b, &hint, NULL, 0, &rng, NULL, 0);
	assert_int_equal(i, first);
	router_replica_release(b->replicas[i].state);
	config_unref(c);
}

static void test_pick_mux(void **state)
{
	struct config *c = parse_ok(prefix_doc);
	const struct backend_cfg *b = config_backend(c, "M");
	struct route_hint ha = {.mux_id = mux_id("a", 1)}, hb = {.mux_id = mux_id("b", 1)};
	uint64_t rng = 7;
	int a, i, j;
	(void)state;
	a = router_pick_replica_hint(b, &ha, NULL, 0, &rng, NULL, 0);
	assert_true(a >= 0);
	router_replica_release(b->replicas[a].state);
	for (int k = 0; k < 10; k++) {
		i = router_pick_replica_hint(b, &ha, NULL, 0, &rng, NULL, 0);
		assert_int_equal(i, a);
		router_replica_release(b->replicas[i].state);
	}
	/* Another model goes to a least loaded replica: with a held on a,
	 * not a. */
	i = router_pick_replica_hint(b, &ha, NULL, 0, &rng, NULL, 0);
	assert_int_equal(i, a);
	j = router_pick_replica_hint(b, &hb, NULL, 0, &rng, NULL, 0);
	assert_int_not_equal(j, a);
	/* The holder full (cap 2): a spills to another replica. */
	assert_int_equal(router_pick_replica_hint(b, &ha, NULL, 0, &rng, NULL, 0), a);
	assert_int_equal(ongoing(b, a), 2);
	i = router_pick_replica_hint(b, &ha, NULL, 0, &rng, NULL, 0);
	assert_int_not_equal(i, a);
	assert_true(ongoing(b, i) <= 2);
	config_unref(c);
}

/* The canonical JSON of the new keys parses back to the same document. */
static void test_round_trip(void **state)
{
	static const char doc[] =
		"{\"backends\": {\"P\": {\"policy\": \"prefix\", \"model_rewrite\": \"lora-1\","
		"  \"prefix\": {\"block_bytes\": 32, \"balance_rel\": 2.5},"
		"  \"multiplex\": {\"max_models_per_replica\": 3}}, \"Q\": {}},"
		" \"endpoints\": {"
		"  \"a\": {\"route\": \"/v1\", \"models\": [\"x\", \"y\"], \"traffic\": {\"P\": 1},"
		"         \"model_header\": \"X-Llm\", \"route_body_max_bytes\": 4096},"
		"  \"b\": {\"route\": \"/v1\", \"traffic\": {\"Q\": 1}},"
		"  \"c\": {\"route\": \"/v2\", \"traffic\": {\"Q\": 1}}}}";
	struct config *a = parse_ok(doc), *b;
	(void)state;
	b = parse_ok(a->json);
	assert_string_equal(a->json, b->json);
	assert_non_null(strstr(a->json, "\"model_rewrite\":\"lora-1\""));
	assert_non_null(strstr(a->json, "\"multiplex\":{\"max_models_per_replica\":3}"));
	assert_non_null(strstr(a->json, "\"policy\":\"prefix\",\"prefix\":{\"balance_abs\":32,"
				       "\"balance_rel\":2.5,\"block_bytes\":32,\"bytes_per_load\":1024,"
				       "\"table_entries\":65536}"));
	assert_non_null(strstr(a->json, "\"model_header\":\"X-Llm\",\"models\":[\"x\",\"y\"]"));
	assert_non_null(strstr(a->json, "\"route_body_max_bytes\":4096"));
	/* Nothing new where nothing was set. */
	assert_null(strstr(strstr(a->json, "\"c\":"), "model"));
	config_unref(a);
	config_unref(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_model_find),
		cmocka_unit_test(test_model_prompt),
		cmocka_unit_test(test_body_linear_and_rewrite),
		cmocka_unit_test(test_prefix_hash_chain),
		cmocka_unit_test(test_prefix_table),
		cmocka_unit_test(test_mux_lru),
		cmocka_unit_test(test_match_model),
		cmocka_unit_test(test_config_errors),
		cmocka_unit_test(test_pick_prefix),
		cmocka_unit_test(test_prefix_spill),
		cmocka_unit_test(test_pick_prefix_cost),
		cmocka_unit_test(test_pick_mux),
		cmocka_unit_test(test_round_trip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
