/* Unit tests for the pure parts of the control plane: URL decoding and
 * routing, document edits (404/409 decisions) and the pure entry point
 * ctl_api_edit_doc (ctl_api.c), report URL parsing (report.c), and the
 * request parser/answer loop on an in-memory connection (ctl_http.c; no
 * sockets, no proxy: only resources that do not read the proxy are asked
 * for). Includes the .c files to reach their static functions; their static names do not collide. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "../../src/ctl_api.c"
#include "../../src/ctl_http.c"
#include "../../src/report.c"

static void test_url_decode(void **state)
{
	char *s;
	(void)state;

	s = url_decode("a%2Fb%20c", 9);
	assert_string_equal(s, "a/b c");
	mi_free(s);
	s = url_decode("plain", 5);
	assert_string_equal(s, "plain");
	mi_free(s);
	assert_null(url_decode("", 0));
	assert_null(url_decode("%zz", 3));
	assert_null(url_decode("ab%2", 4));
	assert_null(url_decode("%00", 3));
	assert_null(url_decode("%", 1));
}

static void test_route_match(void **state)
{
	struct route r;
	(void)state;

	route_match("/healthz", strlen("/healthz"), &r);
	assert_int_equal(r.kind, R_HEALTHZ);
	route_match("/metrics?x=1", strlen("/metrics?x=1"), &r);
	assert_int_equal(r.kind, R_METRICS);
	route_match("/v1/queues?watch=1", strlen("/v1/queues?watch=1"), &r);
	assert_int_equal(r.kind, R_QUEUES);
	assert_true(r.watch);
	route_match("/v1/queues?a=b&watch=true", strlen("/v1/queues?a=b&watch=true"), &r);
	assert_true(r.watch);
	route_match("/v1/queues?watch=0", strlen("/v1/queues?watch=0"), &r);
	assert_int_equal(r.kind, R_QUEUES);
	assert_false(r.watch);
	route_match("/v1/config", strlen("/v1/config"), &r);
	assert_int_equal(r.kind, R_CONFIG);

	route_match("/v1/backends/resnet%2Dv1", strlen("/v1/backends/resnet%2Dv1"), &r);
	assert_int_equal(r.kind, R_BACKEND);
	assert_string_equal(r.name, "resnet-v1");
	route_free(&r);
	route_match("/v1/backends/b/replicas/r%201", strlen("/v1/backends/b/replicas/r%201"), &r);
	assert_int_equal(r.kind, R_REPLICA);
	assert_string_equal(r.name, "b");
	assert_string_equal(r.id, "r 1");
	route_free(&r);
	route_match("/v1/endpoints/e", strlen("/v1/endpoints/e"), &r);
	assert_int_equal(r.kind, R_ENDPOINT);
	assert_string_equal(r.name, "e");
	route_free(&r);

	static const char *const none[] = {
		"", "/", "x", "/v1", "/v1/", "/v1/config/", "/v1//config", "/v1/backends",
		"/v1/backends/", "/v1/backends/b/replicas", "/v1/backends/b/replicas/",
		"/v1/backends/b/other/r", "/v1/backends/%zz", "/v2/config", "/healthz/x",
		"/v1/endpoints/a/b", "/a/b/c/d/e/f/g/h",
	};
	for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++) {
		route_match(none[i], strlen(none[i]), &r);
		if (r.kind != R_NONE)
			fail_msg("'%s' matched %d", none[i], r.kind);
		assert_null(r.name);
		assert_null(r.id);
	}
}

static const char doc_text[] =
	"{\"backends\": {\"a\": {\"replicas\": {\"r1\": \"127.0.0.1:1\"}}, \"b\": {}, \"c\": {}},"
	" \"endpoints\": {\"e\": {\"route\": \"/\", \"traffic\": {\"a\": 1}},"
	"                 \"s\": {\"route\": \"/s\", \"traffic\": {\"a\": 1}, \"shadow\": {\"b\": 0.1}}}}";

static json_t *doc_load(void)
{
	json_t *d = json_loads(doc_text, 0, NULL);
	assert_non_null(d);
	return d;
}

static void test_edits(void **state)
{
	char err[512];
	json_t *doc = doc_load(), *v = json_string("127.0.0.1:2"), *obj = json_object();
	struct edit e = {0};
	(void)state;

	e.kind = EDIT_BACKEND_DEL;
	e.name = "a";
	assert_int_equal(edit_apply(&doc, &e, err, sizeof(err)), -EBUSY);
	assert_non_null(strstr(err, "\"e\""));
	assert_non_null(strstr(err, "traffic"));
	e.name = "b";
	assert_int_equal(edit_apply(&doc, &e, err, sizeof(err)), -EBUSY);
	assert_non_null(strstr(err, "\"s\""));
	assert_non_null(strstr(err, "shadow"));
	e.name = "zz";
	assert_int_equal(edit_apply(&doc, &e, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "backends.zz"));
	e.name = "c";
	assert_int_equal(edit_apply(&doc, &e, err, sizeof(err)), 0);
	assert_null(json_object_get(json_object_get(doc, "backends"), "c"));

	e = (struct edit){ .kind = EDIT_REPLICA_PUT, .name = "b", .id = "r9", .value = v };
	assert_int_equal(edit_apply(&doc, &e, err, sizeof(err)), 0);
	assert_string_equal(json_string_value(json_object_get(
		json_object_get(json_object_get(json_object_get(doc, "backends"), "b"), "replicas"),
		"r9")), "127.0.0.1:2");
	e.name = "nope";
	assert_int_equal(edit_apply(&doc, &e, err, sizeof(err)), -ENOENT);
	e = (struct edit){ .kind = EDIT_REPLICA_DEL, .name = "a", .id = "r7" };
	assert_int_equal(edit_apply(&doc, &e, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "backends.a.replicas.r7"));
	e.id = "r1";
	assert_int_equal(edit_apply(&doc, &e, err, sizeof(err)), 0);

	e = (struct edit){ .kind = EDIT_ENDPOINT_DEL, .name = "x" };
	assert_int_equal(edit_apply(&doc, &e, err, sizeof(err)), -ENOENT);
	e.name = "s";
	assert_int_equal(edit_apply(&doc, &e, err, sizeof(err)), 0);
	e = (struct edit){ .kind = EDIT_ENDPOINT_PUT, .name = "n", .value = obj };
	assert_int_equal(edit_apply(&doc, &e, err, sizeof(err)), 0);
	assert_ptr_equal(json_object_get(json_object_get(doc, "endpoints"), "n"), obj);

	e = (struct edit){ .kind = EDIT_CONFIG, .value = obj };
	assert_int_equal(edit_apply(&doc, &e, err, sizeof(err)), 0);
	assert_ptr_equal(doc, obj);

	json_decref(doc);
	json_decref(v);
	json_decref(obj);
}

static void test_strip_source(void **state)
{
	char err[64] = "config: backends.a: bad";
	(void)state;

	strip_source(err, "config");
	assert_string_equal(err, "backends.a: bad");
	strip_source(err, "config");
	assert_string_equal(err, "backends.a: bad");
}

static void test_report_url(void **state)
{
	static const char *const bad[] = {
		"https://127.0.0.1/x", "http://", "http://:80/", "http://example.com/x",
		"http://127.0.0.1:0/", "http://127.0.0.1:70000/", "http://127.0.0.1:/", "ftp://x",
		"http://127.0.0.1:80x/",
	};
	char err[160];
	(void)state;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct report r = { .fd = -1 };
		err[0] = '\0';
		if (report_init(&r, bad[i], err, sizeof(err)) != -EINVAL)
			fail_msg("accepted '%s'", bad[i]);
		if (!err[0])
			fail_msg("no reason for '%s'", bad[i]);
		report_destroy(&r);
	}
	{
		struct report r = { .fd = -1 };
		assert_int_equal(report_init(&r, "http://127.0.0.1:9090/api/q", err, sizeof(err)), 0);
		assert_int_equal(ntohs(r.addr.sin_port), 9090);
		assert_string_equal(r.path, "/api/q");
		assert_string_equal(r.host, "127.0.0.1:9090");
		report_destroy(&r);
	}
	{
		struct report r = { .fd = -1 };
		assert_int_equal(report_init(&r, "http://localhost", err, sizeof(err)), 0);
		assert_int_equal(ntohs(r.addr.sin_port), 80);
		assert_int_equal(ntohl(r.addr.sin_addr.s_addr), INADDR_LOOPBACK);
		assert_string_equal(r.path, "/");
		assert_string_equal(r.host, "localhost");
		report_destroy(&r);
	}
	{
		struct report r = { .fd = -1 };
		assert_int_equal(report_init(&r, "http://127.0.0.1:70000/", err, sizeof(err)), -EINVAL);
		assert_non_null(strstr(err, "70000"));
		report_destroy(&r);
	}
}

/* A valid document for ctl_api_edit_doc: replica addresses must parse. */
static const char edit_doc_text[] =
	"{\"backends\": {\"a\": {\"replicas\": {\"r1\": \"127.0.0.1:1\"}}, \"b\": {}},"
	" \"endpoints\": {\"e\": {\"route\": \"/\", \"traffic\": {\"a\": 1}}}}";

static int edit_doc(json_t **doc, const char *method, const char *target, const char *body,
		    char *err, size_t errlen)
{
	err[0] = '\0';
	return ctl_api_edit_doc(doc, method, target, strlen(target), body,
				body ? strlen(body) : 0, err, errlen);
}

/* PUT /v1/config with a body that is JSON but not an object: 400 naming
 * the problem (it was 500 "out of memory": json_dumps() fails on a bare
 * null / number / string). */
static void test_edit_doc_config_not_object(void **state)
{
	static const char *const bodies[] = { "null", "[]", "[1,2]", "5", "\"s\"", "true", "1.5" };
	char err[1024];
	(void)state;

	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		json_t *doc = json_loads(edit_doc_text, 0, NULL);
		int st = edit_doc(&doc, "PUT", "/v1/config", bodies[i], err, sizeof(err));
		if (st != 400)
			fail_msg("PUT /v1/config %s: status %d (%s)", bodies[i], st, err);
		if (!strstr(err, "body") || !strstr(err, "must be a JSON object"))
			fail_msg("PUT /v1/config %s: message '%s'", bodies[i], err);
		/* nothing applied */
		assert_true(json_is_object(json_object_get(doc, "backends")));
		json_decref(doc);
	}
	/* The other resources that take an object say so too. */
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		json_t *doc = json_loads(edit_doc_text, 0, NULL);
		assert_int_equal(edit_doc(&doc, "PUT", "/v1/backends/z", bodies[i], err, sizeof(err)),
				 400);
		assert_non_null(strstr(err, "must be a JSON object"));
		assert_int_equal(edit_doc(&doc, "PUT", "/v1/endpoints/z", bodies[i], err,
					  sizeof(err)),
				 400);
		assert_non_null(strstr(err, "must be a JSON object"));
		if (strcmp(bodies[i], "\"s\"")) /* a string is an address */
			assert_int_equal(edit_doc(&doc, "PUT", "/v1/backends/a/replicas/r2",
						  bodies[i], err, sizeof(err)),
					 400);
		json_decref(doc);
	}
}

/* The pure entry point answers what the server would. */
static void test_edit_doc_statuses(void **state)
{
	char err[1024];
	json_t *doc = json_loads(edit_doc_text, 0, NULL);
	json_t *orig = json_deep_copy(doc);
	(void)state;

	assert_int_equal(edit_doc(&doc, "GET", "/v1/config", NULL, err, sizeof(err)), 200);
	assert_int_equal(edit_doc(&doc, "GET", "/v1/backends/a", NULL, err, sizeof(err)), 200);
	assert_int_equal(edit_doc(&doc, "GET", "/v1/backends/q", NULL, err, sizeof(err)), 404);
	assert_true(json_equal(doc, orig));
	assert_int_equal(edit_doc(&doc, "GET", "/nope", NULL, err, sizeof(err)), 404);
	assert_int_equal(edit_doc(&doc, "POST", "/v1/config", "{}", err, sizeof(err)), 405);
	assert_int_equal(edit_doc(&doc, "GET", "/v1/backends/a/replicas/r1", NULL, err,
				  sizeof(err)),
			 405);
	assert_int_equal(edit_doc(&doc, "DELETE", "/v1/backends/a", NULL, err, sizeof(err)), 409);
	assert_non_null(strstr(err, "endpoints.e.traffic.a"));
	assert_int_equal(edit_doc(&doc, "DELETE", "/v1/backends/zz", NULL, err, sizeof(err)), 404);
	assert_int_equal(edit_doc(&doc, "PUT", "/v1/config", "{,}", err, sizeof(err)), 400);
	assert_non_null(strstr(err, "body:1:"));
	assert_true(json_equal(doc, orig));

	/* valid edits apply to doc */
	assert_int_equal(edit_doc(&doc, "PUT", "/v1/backends/a/replicas/r2",
				  "{\"address\": \"localhost:2\"}", err, sizeof(err)),
			 200);
	assert_string_equal(json_string_value(json_object_get(json_object_get(json_object_get(
				    json_object_get(doc, "backends"), "a"), "replicas"), "r2")),
			    "localhost:2");
	assert_int_equal(edit_doc(&doc, "DELETE", "/v1/backends/b", NULL, err, sizeof(err)), 200);
	assert_null(json_object_get(json_object_get(doc, "backends"), "b"));
	/* an edit that does not validate: 400 with the path */
	assert_int_equal(edit_doc(&doc, "PUT", "/v1/backends/a/replicas/r3", "\"nowhere\"", err,
				  sizeof(err)),
			 400);
	assert_non_null(strstr(err, "backends.a.replicas.r3"));
	assert_null(strstr(err, "config: ")); /* source stripped */
	json_decref(doc);
	json_decref(orig);

	/* A document that is not a config at all is refused, never crashes. */
	doc = json_array();
	assert_int_equal(edit_doc(&doc, "PUT", "/v1/backends/x", "{}", err, sizeof(err)), 400);
	assert_int_equal(edit_doc(&doc, "DELETE", "/v1/endpoints/x", NULL, err, sizeof(err)), 400);
	json_decref(doc);
	doc = json_loads("{\"backends\": []}", 0, NULL);
	assert_int_equal(edit_doc(&doc, "PUT", "/v1/backends/a/replicas/r", "\"1.2.3.4:5\"", err,
				  sizeof(err)),
			 400);
	json_decref(doc);
	doc = json_loads("{\"backends\": {\"a\": {\"replicas\": 3}}, \"endpoints\": {}}", 0,
			 NULL);
	assert_int_equal(edit_doc(&doc, "PUT", "/v1/backends/a/replicas/r", "\"1.2.3.4:5\"", err,
				  sizeof(err)),
			 400);
	json_decref(doc);
}

/* An in-memory connection: feed bytes, parse, look at the output. The API
 * has no proxy: only resources that do not read it are asked for. */
struct fake {
	struct ctl_api api;
	struct ctl_http h;
	struct ctl_conn c;
};

static void fake_init(struct fake *f, bool admin)
{
	memset(f, 0, sizeof(*f));
	f->h.api = &f->api;
	list_init(&f->h.conns);
	http_settings_fill(&f->h.settings);
	f->c.fd = -1;
	f->c.h = &f->h;
	f->c.flags = admin ? CC_F_ADMIN : 0;
	list_init(&f->c.node);
	llhttp_init(&f->c.parser, HTTP_REQUEST, &f->h.settings);
	f->c.parser.data = &f->c;
}

static void fake_feed(struct fake *f, const char *data, size_t len)
{
	assert_int_equal(sb_put(&f->c.in, data, len), 0);
	conn_parse(&f->h, &f->c);
}

static void fake_free(struct fake *f)
{
	sb_free(&f->c.url);
	sb_free(&f->c.body);
	sb_free(&f->c.in);
	sb_free(&f->c.out);
}

static size_t count(const char *hay, const char *needle)
{
	size_t n = 0;
	for (const char *p = hay; p && (p = strstr(p, needle)); p++)
		n++;
	return n;
}

static void test_pipelining_and_errors(void **state)
{
	static const char two[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
				  "GET /nope HTTP/1.1\r\nHost: x\r\n\r\nGET /heal";
	struct fake f;
	(void)state;

	fake_init(&f, false);
	/* byte by byte: the parser must cope with any split */
	for (size_t i = 0; i < sizeof(two) - 1; i++)
		fake_feed(&f, two + i, 1);
	assert_int_equal(count(f.c.out.p, "HTTP/1.1 200 OK"), 1);
	assert_int_equal(count(f.c.out.p, "HTTP/1.1 404 Not Found"), 1);
	assert_true(strstr(f.c.out.p, "200 OK") < strstr(f.c.out.p, "404"));
	assert_non_null(strstr(f.c.out.p, "{\"ok\":true}\n"));
	assert_false(f.c.flags & CC_F_CLOSE);
	{
		static const char rest[] = "thz HTTP/1.1\r\nConnection: close\r\n\r\n"
					   "GET /ignored HTTP/1.1\r\n\r\n";
		fake_feed(&f, rest, sizeof(rest) - 1);
	}
	assert_int_equal(count(f.c.out.p, "HTTP/1.1 200 OK"), 2);
	assert_int_equal(count(f.c.out.p, "Connection: close"), 1);
	assert_true(f.c.flags & CC_F_CLOSE);
	assert_null(strstr(f.c.out.p, "ignored"));
	fake_free(&f);

	fake_init(&f, false);
	fake_feed(&f, "PUT /v1/config HTTP/1.1\r\nContent-Length: 1048577\r\n\r\n", 52);
	assert_non_null(strstr(f.c.out.p, "HTTP/1.1 413 "));
	assert_true(f.c.flags & CC_F_CLOSE);
	fake_free(&f);

	fake_init(&f, false);
	fake_feed(&f, "BREW /pot HTCPCP/1.0\r\n\r\n", 24);
	assert_non_null(strstr(f.c.out.p, "HTTP/1.1 400 "));
	assert_non_null(strstr(f.c.out.p, "malformed request"));
	fake_free(&f);

	fake_init(&f, false);
	{
		size_t n = CTL_MAX_HEAD + 100;
		char *big = malloc(n);
		assert_non_null(big);
		memcpy(big, "GET /healthz HTTP/1.1\r\nX-Big: ", 30);
		memset(big + 30, 'a', n - 30);
		fake_feed(&f, big, n);
		free(big);
	}
	assert_non_null(strstr(f.c.out.p, "HTTP/1.1 431 "));
	fake_free(&f);

	/* Chunked request bodies are bounded too. */
	fake_init(&f, false);
	{
		char head[] = "PUT /v1/config HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
		char chunk[64];
		fake_feed(&f, head, sizeof(head) - 1);
		snprintf(chunk, sizeof(chunk), "%x\r\n", CTL_MAX_BODY + 1);
		fake_feed(&f, chunk, strlen(chunk));
		for (int i = 0; i < 17 && !(f.c.flags & CC_F_CLOSE); i++) {
			static char zeros[65536];
			fake_feed(&f, zeros, sizeof(zeros));
		}
	}
	assert_non_null(strstr(f.c.out.p, "HTTP/1.1 413 "));
	fake_free(&f);
}

static void test_admin_read_only(void **state)
{
	static const char reqs[] = "DELETE /v1/backends/a HTTP/1.1\r\n\r\n"
				   "PUT /nope HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"
				   "GET /v1/config HTTP/1.1\r\n\r\n"
				   "GET /healthz HTTP/1.1\r\n\r\n";
	struct fake f;
	(void)state;

	fake_init(&f, true);
	fake_feed(&f, reqs, sizeof(reqs) - 1);
	assert_int_equal(count(f.c.out.p, "HTTP/1.1 405 "), 2);
	assert_int_equal(count(f.c.out.p, "control socket"), 2);
	assert_int_equal(count(f.c.out.p, "Allow: GET, HEAD"), 2);
	assert_int_equal(count(f.c.out.p, "HTTP/1.1 404 "), 1);
	assert_int_equal(count(f.c.out.p, "HTTP/1.1 200 "), 1);
	fake_free(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_url_decode),
		cmocka_unit_test(test_route_match),
		cmocka_unit_test(test_edits),
		cmocka_unit_test(test_strip_source),
		cmocka_unit_test(test_report_url),
		cmocka_unit_test(test_edit_doc_config_not_object),
		cmocka_unit_test(test_edit_doc_statuses),
		cmocka_unit_test(test_pipelining_and_errors),
		cmocka_unit_test(test_admin_read_only),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
