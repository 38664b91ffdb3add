/* Unit tests for HTTP head collection and rewriting (src/http.c).
 *
 * llhttp is driven exactly as src/h1.c (requests) and src/upstream.c
 * (responses) drive it: the data callbacks feed http_head_url / field /
 * value / value_done, on_headers_complete and on_message_complete pause the
 * parser, and the head is written at the headers pause. Every message is fed
 * split at every byte boundary, and one byte at a time, so a token split
 * across receive buffers must be reassembled to the same bytes. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <llhttp.h>

#include "ringroute/alloc.h"
#include "ringroute/http.h"

/* strbuf memory comes from mi_* (libc under the sanitizers): free it there. */
static void rr_test_sb_free(struct strbuf *sb)
{
	mi_free(sb->p);
	sb->p = NULL;
	sb->len = sb->cap = 0;
}

/* ---- harness ---- */

#define MAX_MSGS 4

struct harness {
	struct http_parser hp;        /* the parser h1.c and upstream.c use */
	llhttp_settings_t set;
	struct fwd_info fi;           /* responses: fi.request_id is the id to send */
	int close;                    /* responses: http_write_response_head's close */
	int nmsgs;                    /* heads written */
	int head_done;                /* the current message's head was written */
	int valid[MAX_MSGS];          /* http_head_valid at the headers pause */
	char *out[MAX_MSGS];          /* written heads, NUL-terminated */
	size_t out_len[MAX_MSGS];
	llhttp_errno_t err;           /* first error other than a pause, or HPE_OK */
};

static void harness_init(struct harness *t, llhttp_type_t type, const struct fwd_info *fi,
			 int close)
{
	memset(t, 0, sizeof(*t));
	http_settings_init(&t->set);
	llhttp_init(&t->hp.p, type, &t->set);
	t->hp.p.data = t;
	if (fi)
		t->fi = *fi;
	t->close = close;
	t->err = HPE_OK;
}

static void harness_free(struct harness *t)
{
	for (int i = 0; i < t->nmsgs; i++)
		free(t->out[i]);
	http_head_free(&t->hp.hd);
}

/* The head is complete: rewrite it as h1.c / upstream.c do. */
static void on_head(struct harness *t)
{
	struct strbuf sb = {0};
	int rc;

	assert_true(t->nmsgs < MAX_MSGS);
	assert_false(t->hp.hd.too_large);
	t->valid[t->nmsgs] = http_head_valid(&t->hp.hd);
	http_head_mark_hop(&t->hp.hd);
	if (t->hp.p.type == HTTP_REQUEST)
		rc = http_write_request_head(&sb, &t->hp.hd, &t->hp.p, &t->fi);
	else
		rc = http_write_response_head(&sb, &t->hp.hd, &t->hp.p, t->close,
					      t->fi.request_id);
	assert_int_equal(rc, 0);
	assert_non_null(sb.p);
	assert_int_equal(strlen(sb.p), sb.len);
	/* Copied out so the harness frees with libc whatever the build. */
	t->out[t->nmsgs] = strdup(sb.p);
	t->out_len[t->nmsgs] = sb.len;
	t->nmsgs++;
	t->head_done = 1;
	rr_test_sb_free(&sb);
}

/* Feed one receive buffer, resuming after each pause like h1.c. Returns
 * the llhttp error (HPE_OK when the buffer was consumed). */
static llhttp_errno_t feed(struct harness *t, const char *data, size_t len)
{
	if (t->err != HPE_OK)
		return t->err;
	for (;;) {
		llhttp_errno_t rc;
		const char *pos;

		t->hp.event = HTTP_EV_NONE;
		rc = llhttp_execute(&t->hp.p, data, len);
		if (rc == HPE_OK)
			return HPE_OK;
		if (rc != HPE_PAUSED) {
			t->err = rc;
			return rc;
		}
		pos = llhttp_get_error_pos(&t->hp.p);
		llhttp_resume(&t->hp.p);
		len -= (size_t)(pos - data);
		data = pos;
		if (t->hp.event == HTTP_EV_HEADERS) {
			on_head(t);
			continue; /* a body-less message completes on a zero-length run */
		}
		if (t->hp.event == HTTP_EV_MESSAGE) {
			/* A head whose message has no body (1xx, 204, 304, HEAD)
			 * pauses only at the message end (upstream.c up_on_input). */
			if (!t->head_done)
				on_head(t);
			t->head_done = 0;
			/* h1.c resets at h1_next, before the next message. */
			http_head_reset(&t->hp.hd);
			if (!len)
				return HPE_OK;
			continue;
		}
		if (!len)
			return HPE_OK;
	}
}

/* Parse raw split at [0, k) [k, n) for every k, and one byte at a time;
 * each run must write exactly the expected heads. */
static void check_splits(llhttp_type_t type, const char *raw, const struct fwd_info *fi,
			 int close, const char *const *expect, int nexpect)
{
	size_t n = strlen(raw);

	for (size_t k = 0; k <= n + 1; k++) {
		struct harness t;
		harness_init(&t, type, fi, close);
		if (k <= n) {
			assert_int_equal(feed(&t, raw, k), HPE_OK);
			assert_int_equal(feed(&t, raw + k, n - k), HPE_OK);
		} else {
			for (size_t i = 0; i < n; i++)
				if (feed(&t, raw + i, 1) != HPE_OK)
					fail_msg("byte-at-a-time: error %s at %zu",
						 llhttp_errno_name(t.err), i);
		}
		/* On a mismatch, free before failing (fail_msg does not return)
		 * so LeakSanitizer reports only real leaks. */
		if (t.nmsgs != nexpect) {
			harness_free(&t);
			fail_msg("split %zu: %d heads, expected %d", k, t.nmsgs, nexpect);
		}
		for (int i = 0; i < nexpect; i++) {
			if (strcmp(t.out[i], expect[i]) != 0) {
				static char msg[8192];
				snprintf(msg, sizeof(msg),
					 "split %zu, message %d:\n--- got ---\n%s\n--- expected ---\n%s",
					 k, i, t.out[i], expect[i]);
				harness_free(&t);
				fail_msg("%s", msg);
			}
			if (!t.valid[i]) {
				harness_free(&t);
				fail_msg("split %zu, message %d: http_head_valid said 0", k, i);
			}
		}
		harness_free(&t);
	}
}

static void check_req(const char *raw, const struct fwd_info *fi, const char *expect)
{
	check_splits(HTTP_REQUEST, raw, fi, 0, &expect, 1);
}

static const struct fwd_info fi_plain = {"10.0.0.1", "rid-1", NULL, NULL, false, false};
static const struct fwd_info fi_cm = {"10.0.0.1", "rid-1", "__call__", NULL, false, false};

/* ---- request rewriting ---- */

static void test_request_line_and_order(void **state)
{
	(void)state;
	check_req("GET /a/b?x=1&y=%20 HTTP/1.1\r\n"
		  "Host: example.com\r\n"
		  "User-Agent: curl/8.0\r\n"
		  "aCCept: */*\r\n"
		  "X-Mixed-CASE: Value With Spaces\r\n"
		  "\r\n",
		  &fi_plain,
		  "GET /a/b?x=1&y=%20 HTTP/1.1\r\n"
		  "Host: example.com\r\n"
		  "User-Agent: curl/8.0\r\n"
		  "aCCept: */*\r\n"
		  "X-Mixed-CASE: Value With Spaces\r\n"
		  "X-Forwarded-For: 10.0.0.1\r\n"
		  "X-Request-Id: rid-1\r\n"
		  "\r\n");
}

static void test_request_methods_and_http10(void **state)
{
	(void)state;
	/* HTTP/1.0 is forwarded as HTTP/1.1; the body never enters the head. */
	check_req("POST /predict HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello", &fi_plain,
		  "POST /predict HTTP/1.1\r\n"
		  "Content-Length: 5\r\n"
		  "X-Forwarded-For: 10.0.0.1\r\n"
		  "X-Request-Id: rid-1\r\n"
		  "\r\n");
	check_req("DELETE /x HTTP/1.1\r\nHost: h\r\n\r\n", &fi_plain,
		  "DELETE /x HTTP/1.1\r\nHost: h\r\n"
		  "X-Forwarded-For: 10.0.0.1\r\nX-Request-Id: rid-1\r\n\r\n");
	check_req("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", &fi_plain,
		  "OPTIONS * HTTP/1.1\r\nHost: h\r\n"
		  "X-Forwarded-For: 10.0.0.1\r\nX-Request-Id: rid-1\r\n\r\n");
	/* No headers at all. */
	check_req("HEAD / HTTP/1.1\r\n\r\n", &fi_plain,
		  "HEAD / HTTP/1.1\r\n"
		  "X-Forwarded-For: 10.0.0.1\r\nX-Request-Id: rid-1\r\n\r\n");
}

static void test_request_chunked_body_kept_out(void **state)
{
	(void)state;
	check_req("POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
		  "5\r\nhello\r\n0\r\n\r\n",
		  &fi_plain,
		  "POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
		  "X-Forwarded-For: 10.0.0.1\r\nX-Request-Id: rid-1\r\n\r\n");
}

static void test_request_pipelined(void **state)
{
	static const char *const expect[] = {
		"GET /one HTTP/1.1\r\nHost: a\r\n"
		"X-Forwarded-For: 10.0.0.1\r\nX-Request-Id: rid-1\r\n\r\n",
		"POST /two HTTP/1.1\r\nHost: b\r\nContent-Length: 3\r\nX-Request-Id: mine\r\n"
		"X-Forwarded-For: 10.0.0.1\r\n\r\n",
		"GET /three HTTP/1.1\r\nX-Empty: \r\n"
		"X-Forwarded-For: 10.0.0.1\r\nX-Request-Id: rid-1\r\n\r\n",
	};
	(void)state;
	check_splits(HTTP_REQUEST,
		     "GET /one HTTP/1.1\r\nHost: a\r\n\r\n"
		     "POST /two HTTP/1.1\r\nHost: b\r\nContent-Length: 3\r\nX-Request-Id: mine\r\n"
		     "\r\nabc"
		     "GET /three HTTP/1.1\r\nX-Empty:\r\n\r\n",
		     &fi_plain, 0, expect, 3);
}

static void test_hop_by_hop_fixed(void **state)
{
	(void)state;
	check_req("GET / HTTP/1.1\r\n"
		  "Host: h\r\n"
		  "Connection: keep-alive\r\n"
		  "Keep-Alive: timeout=5\r\n"
		  "X-A: 1\r\n"
		  "Proxy-Connection: keep-alive\r\n"
		  "TE: trailers\r\n"
		  "Trailer: X-Checksum\r\n"
		  "Upgrade: h2c\r\n"
		  "Proxy-Authorization: Basic Zm9vOmJhcg==\r\n"
		  "X-B: 2\r\n"
		  "tE: gzip\r\n"
		  "PROXY-CONNECTION: close\r\n"
		  "\r\n",
		  &fi_plain,
		  "GET / HTTP/1.1\r\n"
		  "Host: h\r\n"
		  "X-A: 1\r\n"
		  "X-B: 2\r\n"
		  "X-Forwarded-For: 10.0.0.1\r\n"
		  "X-Request-Id: rid-1\r\n"
		  "\r\n");
}

static void test_hop_by_hop_named_in_connection(void **state)
{
	(void)state;
	/* Headers named in Connection go (any case, any list spelling, across
	 * several Connection headers); framing headers never do. */
	check_req("POST /p HTTP/1.1\r\n"
		  "Host: h\r\n"
		  "X-Secret: s1\r\n"
		  "Connection: keep-alive, X-SECRET,\tx-other ,Content-Length\r\n"
		  "x-secret: s2\r\n"
		  "X-Other: o\r\n"
		  "X-Kept: k\r\n"
		  "Connection: x-third\r\n"
		  "X-Third: t\r\n"
		  "X-Secretive: not named\r\n"
		  "Content-Length: 2\r\n"
		  "\r\nok",
		  &fi_plain,
		  "POST /p HTTP/1.1\r\n"
		  "Host: h\r\n"
		  "X-Kept: k\r\n"
		  "X-Secretive: not named\r\n"
		  "Content-Length: 2\r\n"
		  "X-Forwarded-For: 10.0.0.1\r\n"
		  "X-Request-Id: rid-1\r\n"
		  "\r\n");
	check_req("POST /p HTTP/1.1\r\n"
		  "Connection: Transfer-Encoding, te\r\n"
		  "Transfer-Encoding: chunked\r\n"
		  "\r\n0\r\n\r\n",
		  &fi_plain,
		  "POST /p HTTP/1.1\r\n"
		  "Transfer-Encoding: chunked\r\n"
		  "X-Forwarded-For: 10.0.0.1\r\n"
		  "X-Request-Id: rid-1\r\n"
		  "\r\n");
	/* A Connection-named X-Request-Id / X-Serve-Call-Method is dropped, so
	 * ours are added instead. */
	check_req("GET / HTTP/1.1\r\n"
		  "Connection: X-Request-Id, X-Serve-Call-Method\r\n"
		  "X-Request-Id: hop\r\n"
		  "X-Serve-Call-Method: hop\r\n"
		  "\r\n",
		  &fi_cm,
		  "GET / HTTP/1.1\r\n"
		  "X-Forwarded-For: 10.0.0.1\r\n"
		  "X-Request-Id: rid-1\r\n"
		  "X-Serve-Call-Method: __call__\r\n"
		  "\r\n");
}

static void test_x_forwarded_for(void **state)
{
	(void)state;
	check_req("GET / HTTP/1.1\r\nx-forwarded-for: 1.2.3.4\r\nHost: h\r\n\r\n", &fi_plain,
		  "GET / HTTP/1.1\r\nHost: h\r\n"
		  "X-Forwarded-For: 1.2.3.4, 10.0.0.1\r\n"
		  "X-Request-Id: rid-1\r\n\r\n");
	check_req("GET / HTTP/1.1\r\nX-Forwarded-For: 1.2.3.4, 5.6.7.8\r\n\r\n", &fi_plain,
		  "GET / HTTP/1.1\r\n"
		  "X-Forwarded-For: 1.2.3.4, 5.6.7.8, 10.0.0.1\r\n"
		  "X-Request-Id: rid-1\r\n\r\n");
	/* Named in Connection: the client's value is hop-by-hop, ours stands alone. */
	check_req("GET / HTTP/1.1\r\nConnection: X-Forwarded-For\r\n"
		  "X-Forwarded-For: 1.2.3.4\r\n\r\n",
		  &fi_plain,
		  "GET / HTTP/1.1\r\n"
		  "X-Forwarded-For: 10.0.0.1\r\n"
		  "X-Request-Id: rid-1\r\n\r\n");
}

/* RFC 9110 5.3: several field lines of one name form one comma-separated
 * list, so a proxy must keep every X-Forwarded-For line's addresses. */
static void test_x_forwarded_for_multiple_lines(void **state)
{
	(void)state;
	check_req("GET / HTTP/1.1\r\n"
		  "X-Forwarded-For: 1.1.1.1\r\n"
		  "Host: h\r\n"
		  "X-Forwarded-For: 2.2.2.2\r\n"
		  "\r\n",
		  &fi_plain,
		  "GET / HTTP/1.1\r\nHost: h\r\n"
		  "X-Forwarded-For: 1.1.1.1, 2.2.2.2, 10.0.0.1\r\n"
		  "X-Request-Id: rid-1\r\n\r\n");
}

/* An empty X-Forwarded-For holds no address: appending to it must not
 * produce an empty list element (", 10.0.0.1"). */
static void test_x_forwarded_for_empty(void **state)
{
	(void)state;
	check_req("GET / HTTP/1.1\r\nX-Forwarded-For:\r\n\r\n", &fi_plain,
		  "GET / HTTP/1.1\r\n"
		  "X-Forwarded-For: 10.0.0.1\r\n"
		  "X-Request-Id: rid-1\r\n\r\n");
}

/* load_reports (fi->load_format): endpoint-load-metrics-format is added
 * last, in place of any the client sent; without it the client's passes. */
static void test_load_format(void **state)
{
	static const struct fwd_info lf = {"10.0.0.1", "rid-1", NULL, "text", false, false};
	(void)state;
	check_req("GET / HTTP/1.1\r\nHost: h\r\n\r\n", &lf,
		  "GET / HTTP/1.1\r\nHost: h\r\n"
		  "X-Forwarded-For: 10.0.0.1\r\nX-Request-Id: rid-1\r\n"
		  "endpoint-load-metrics-format: text\r\n\r\n");
	check_req("GET / HTTP/1.1\r\nEndpoint-Load-Metrics-Format: json\r\nHost: h\r\n\r\n", &lf,
		  "GET / HTTP/1.1\r\nHost: h\r\n"
		  "X-Forwarded-For: 10.0.0.1\r\nX-Request-Id: rid-1\r\n"
		  "endpoint-load-metrics-format: text\r\n\r\n");
	check_req("GET / HTTP/1.1\r\nEndpoint-Load-Metrics-Format: json\r\n\r\n", &fi_plain,
		  "GET / HTTP/1.1\r\nEndpoint-Load-Metrics-Format: json\r\n"
		  "X-Forwarded-For: 10.0.0.1\r\nX-Request-Id: rid-1\r\n\r\n");
}

static void test_request_id(void **state)
{
	struct fwd_info none = {"10.0.0.1", NULL, NULL, NULL, false, false};
	(void)state;
	/* Kept (original case and place) when the client sent one. */
	check_req("GET / HTTP/1.1\r\nx-REQUEST-id: client-7\r\nHost: h\r\n\r\n", &fi_plain,
		  "GET / HTTP/1.1\r\nx-REQUEST-id: client-7\r\nHost: h\r\n"
		  "X-Forwarded-For: 10.0.0.1\r\n\r\n");
	/* Added when absent. */
	check_req("GET / HTTP/1.1\r\nX-Request-Ids: not-it\r\n\r\n", &fi_plain,
		  "GET / HTTP/1.1\r\nX-Request-Ids: not-it\r\n"
		  "X-Forwarded-For: 10.0.0.1\r\nX-Request-Id: rid-1\r\n\r\n");
	/* No id to give: none added. */
	check_req("GET / HTTP/1.1\r\n\r\n", &none,
		  "GET / HTTP/1.1\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n");
	/* Not a sane id (inner space, control byte, empty): dropped, ours
	 * added, so the replica, the response and the log agree. */
	check_req("GET / HTTP/1.1\r\nX-Request-Id: a b\r\nHost: h\r\n\r\n", &fi_plain,
		  "GET / HTTP/1.1\r\nHost: h\r\n"
		  "X-Forwarded-For: 10.0.0.1\r\nX-Request-Id: rid-1\r\n\r\n");
	check_req("GET / HTTP/1.1\r\nX-Request-Id: a\tb\r\n\r\n", &fi_plain,
		  "GET / HTTP/1.1\r\n"
		  "X-Forwarded-For: 10.0.0.1\r\nX-Request-Id: rid-1\r\n\r\n");
	check_req("GET / HTTP/1.1\r\nX-Request-Id:\r\n\r\n", &fi_plain,
		  "GET / HTTP/1.1\r\n"
		  "X-Forwarded-For: 10.0.0.1\r\nX-Request-Id: rid-1\r\n\r\n");
	/* Two: the first sane one stands (in place), the other goes. */
	check_req("GET / HTTP/1.1\r\nX-Request-Id: bad id\r\nX-Request-Id: good-2\r\n"
		  "X-Request-Id: third\r\n\r\n",
		  &fi_plain,
		  "GET / HTTP/1.1\r\nX-Request-Id: good-2\r\n"
		  "X-Forwarded-For: 10.0.0.1\r\n\r\n");
}

/* http_head_request_id: 1..HTTP_REQUEST_ID_MAX bytes of 0x21..0x7e. */
static void test_request_id_length(void **state)
{
	char id[HTTP_REQUEST_ID_MAX + 2], raw[512], expect[512];
	(void)state;
	memset(id, 'k', sizeof(id));
	id[HTTP_REQUEST_ID_MAX] = '\0'; /* the longest kept */
	snprintf(raw, sizeof(raw), "GET / HTTP/1.1\r\nX-Request-Id: %s\r\n\r\n", id);
	snprintf(expect, sizeof(expect),
		 "GET / HTTP/1.1\r\nX-Request-Id: %s\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n", id);
	check_req(raw, &fi_plain, expect);
	id[HTTP_REQUEST_ID_MAX] = 'k'; /* one more: ours instead */
	id[HTTP_REQUEST_ID_MAX + 1] = '\0';
	snprintf(raw, sizeof(raw), "GET / HTTP/1.1\r\nX-Request-Id: %s\r\n\r\n", id);
	check_req(raw, &fi_plain,
		  "GET / HTTP/1.1\r\nX-Forwarded-For: 10.0.0.1\r\nX-Request-Id: rid-1\r\n\r\n");
}

/* A response carries our id, never the replica's (which may differ). */
static void test_response_request_id(void **state)
{
	static const struct fwd_info rid = {NULL, "abc123", NULL, NULL, false, false};
	static const char *const expect[] = {
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Request-Id: abc123\r\n\r\n",
	};
	static const char *const expect_close[] = {
		"HTTP/1.1 204 No Content\r\nX-A: a\r\nX-Request-Id: abc123\r\n"
		"Connection: close\r\n\r\n",
	};
	(void)state;
	check_splits(HTTP_RESPONSE,
		     "HTTP/1.1 200 OK\r\nx-request-id: theirs\r\nContent-Length: 2\r\n"
		     "X-Request-Id: more\r\n\r\nok",
		     &rid, 0, expect, 1);
	check_splits(HTTP_RESPONSE, "HTTP/1.1 204 No Content\r\nX-A: a\r\n\r\n", &rid, 1,
		     expect_close, 1);
}

static void test_long_request_id(void **state)
{
	/* Longer than sb_printf's stack buffer: the formatted-in-place path. */
	char rid[1500], expect[2000];
	struct fwd_info fi = {"10.0.0.1", rid, NULL, NULL, false, false};
	(void)state;
	for (size_t i = 0; i < sizeof(rid) - 1; i++)
		rid[i] = (char)('a' + i % 26);
	rid[sizeof(rid) - 1] = '\0';
	snprintf(expect, sizeof(expect),
		 "GET / HTTP/1.1\r\nX-Forwarded-For: 10.0.0.1\r\nX-Request-Id: %s\r\n\r\n", rid);
	check_req("GET / HTTP/1.1\r\n\r\n", &fi, expect);
}

static void test_call_method(void **state)
{
	(void)state;
	/* Endpoint default added when the client sent none. */
	check_req("POST /p HTTP/1.1\r\nHost: h\r\n\r\n", &fi_cm,
		  "POST /p HTTP/1.1\r\nHost: h\r\n"
		  "X-Forwarded-For: 10.0.0.1\r\nX-Request-Id: rid-1\r\n"
		  "X-Serve-Call-Method: __call__\r\n\r\n");
	/* The client's value wins, in place and case. */
	check_req("POST /p HTTP/1.1\r\nx-serve-call-method: generate\r\nHost: h\r\n\r\n", &fi_cm,
		  "POST /p HTTP/1.1\r\nx-serve-call-method: generate\r\nHost: h\r\n"
		  "X-Forwarded-For: 10.0.0.1\r\nX-Request-Id: rid-1\r\n\r\n");
	/* No default, none sent: none added. */
	check_req("POST /p HTTP/1.1\r\n\r\n", &fi_plain,
		  "POST /p HTTP/1.1\r\n"
		  "X-Forwarded-For: 10.0.0.1\r\nX-Request-Id: rid-1\r\n\r\n");
}

static void test_shard_key_passthrough(void **state)
{
	const char *raw = "POST /p HTTP/1.1\r\nHost: h\r\nX-Serve-Shard-Key: user-42\r\n"
			  "Content-Length: 0\r\n\r\n";
	struct harness t;
	const struct http_hdr *k;
	(void)state;
	check_req(raw, &fi_plain,
		  "POST /p HTTP/1.1\r\nHost: h\r\nX-Serve-Shard-Key: user-42\r\n"
		  "Content-Length: 0\r\n"
		  "X-Forwarded-For: 10.0.0.1\r\nX-Request-Id: rid-1\r\n\r\n");

	/* The router reads the key with http_head_find before mark_hop. */
	harness_init(&t, HTTP_REQUEST, &fi_plain, 0);
	t.set.on_message_complete = NULL; /* keep the head after the message */
	for (size_t i = 0; raw[i]; i++)
		assert_int_equal(feed(&t, raw + i, 1), HPE_OK);
	k = http_head_find(&t.hp.hd, "x-serve-shard-key");
	assert_non_null(k);
	assert_int_equal(k->value_len, 7);
	assert_string_equal(http_hdr_value(&t.hp.hd, k), "user-42");
	assert_string_equal(http_hdr_name(&t.hp.hd, k), "X-Serve-Shard-Key");
	assert_null(http_head_find(&t.hp.hd, "x-serve-shard"));
	assert_null(http_head_find(&t.hp.hd, "x-serve-shard-key-2"));
	assert_true(http_head_find(&t.hp.hd, "HOST") == &t.hp.hd.hdrs[0]);
	harness_free(&t);
}

static void test_empty_values(void **state)
{
	const char *raw = "GET /e HTTP/1.1\r\nX-Empty:\r\nX-Spaces:   \r\nX-After: v\r\n"
			  "X-Last:\r\n\r\n";
	struct harness t;
	(void)state;
	check_req(raw, &fi_plain,
		  "GET /e HTTP/1.1\r\nX-Empty: \r\nX-Spaces: \r\nX-After: v\r\nX-Last: \r\n"
		  "X-Forwarded-For: 10.0.0.1\r\nX-Request-Id: rid-1\r\n\r\n");

	/* Names and values are NUL-terminated, empty values included. */
	harness_init(&t, HTTP_REQUEST, &fi_plain, 0);
	t.set.on_message_complete = NULL;
	for (size_t i = 0; raw[i]; i++)
		assert_int_equal(feed(&t, raw + i, 1), HPE_OK);
	assert_int_equal(t.hp.hd.nhdrs, 4);
	assert_int_equal(t.hp.hd.url_len, 2);
	assert_memory_equal(t.hp.hd.buf + t.hp.hd.url_off, "/e", 2);
	assert_string_equal(http_hdr_name(&t.hp.hd, &t.hp.hd.hdrs[0]), "X-Empty");
	assert_int_equal(t.hp.hd.hdrs[0].value_len, 0);
	assert_string_equal(http_hdr_value(&t.hp.hd, &t.hp.hd.hdrs[0]), "");
	assert_int_equal(t.hp.hd.hdrs[1].value_len, 0);
	assert_string_equal(http_hdr_value(&t.hp.hd, &t.hp.hd.hdrs[1]), "");
	assert_string_equal(http_hdr_name(&t.hp.hd, &t.hp.hd.hdrs[2]), "X-After");
	assert_string_equal(http_hdr_value(&t.hp.hd, &t.hp.hd.hdrs[2]), "v");
	assert_string_equal(http_hdr_name(&t.hp.hd, &t.hp.hd.hdrs[3]), "X-Last");
	assert_string_equal(http_hdr_value(&t.hp.hd, &t.hp.hd.hdrs[3]), "");
	harness_free(&t);
}

/* ---- header name validation ---- */

static void head_add(struct http_head *h, const char *name, const char *value)
{
	assert_int_equal(http_head_field(h, name, strlen(name)), 0);
	if (*value)
		assert_int_equal(http_head_value(h, value, strlen(value)), 0);
	assert_int_equal(http_head_value_done(h), 0);
}

static int valid_with(const char *name)
{
	struct http_head h = {0};
	int v;
	assert_int_equal(http_head_url(&h, "/", 1), 0);
	head_add(&h, "Host", "h");
	head_add(&h, name, "x");
	v = http_head_valid(&h);
	http_head_free(&h);
	return v;
}

static void test_head_valid(void **state)
{
	(void)state;
	assert_true(valid_with("X-Token"));
	assert_true(valid_with("!#$%&'*+-.^_`|~09AZaz"));
	assert_true(valid_with("a"));
	assert_false(valid_with("Host "));
	assert_false(valid_with(" Host"));
	assert_false(valid_with("Ho st"));
	assert_false(valid_with("Host\t"));
	assert_false(valid_with("X(y)"));
	assert_false(valid_with("X:y"));
	assert_false(valid_with("X\"y"));
	assert_false(valid_with("X/y"));
	assert_false(valid_with("X@y"));
	assert_false(valid_with("X{y}"));
	assert_false(valid_with("X\x7fy"));
	assert_false(valid_with("X\xc3\xa9"));
	assert_false(valid_with("X\x01"));
}

static void test_head_valid_empty_name(void **state)
{
	struct http_head h = {0};
	(void)state;
	assert_int_equal(http_head_url(&h, "/", 1), 0);
	assert_int_equal(http_head_field(&h, "", 0), 0);
	assert_int_equal(http_head_value(&h, "x", 1), 0);
	assert_int_equal(http_head_value_done(&h), 0);
	assert_int_equal(h.nhdrs, 1);
	assert_false(http_head_valid(&h));
	http_head_free(&h);
}

/* What llhttp's non-strict build lets through reaches http_head_valid. */
static void test_head_valid_via_llhttp(void **state)
{
	static const char *const bad[] = {
		"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
		"GET / HTTP/1.1\r\nX-Ok: 1\r\nX-Bad : y\r\n\r\n",
	};
	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		size_t n = strlen(bad[i]);
		for (size_t k = 0; k <= n; k++) {
			struct harness t;
			harness_init(&t, HTTP_REQUEST, &fi_plain, 0);
			if (feed(&t, bad[i], k) == HPE_OK)
				feed(&t, bad[i] + k, n - k);
			/* Rejected by llhttp, or collected and found invalid:
			 * never forwarded as valid. */
			if (t.err == HPE_OK) {
				assert_int_equal(t.nmsgs, 1);
				assert_false(t.valid[0]);
			} else {
				assert_int_equal(t.nmsgs, 0);
			}
			harness_free(&t);
		}
	}
}

/* ---- too-large heads ---- */

static char *make_big_request(size_t value_len)
{
	const char *pre = "GET / HTTP/1.1\r\nX-Big: ";
	size_t pl = strlen(pre);
	char *r = malloc(pl + value_len + 5);
	assert_non_null(r);
	memcpy(r, pre, pl);
	memset(r + pl, 'v', value_len);
	memcpy(r + pl + value_len, "\r\n\r\n", 5);
	return r;
}

static void feed_in_chunks(struct harness *t, const char *raw, size_t chunk)
{
	size_t n = strlen(raw);
	for (size_t off = 0; off < n && t->err == HPE_OK; off += chunk)
		feed(t, raw + off, n - off < chunk ? n - off : chunk);
}

static void test_too_large_bytes(void **state)
{
	static const size_t chunks[] = {1, 7, 1500, 65536, 1u << 20};
	(void)state;
	for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
		struct harness t;
		char *r = make_big_request(HTTP_MAX_HEAD);
		harness_init(&t, HTTP_REQUEST, &fi_plain, 0);
		feed_in_chunks(&t, r, chunks[c]);
		assert_int_equal(t.err, HPE_USER);
		assert_true(t.hp.hd.too_large);
		assert_int_equal(t.nmsgs, 0);
		assert_true(t.hp.hd.len <= HTTP_MAX_HEAD);
		harness_free(&t);
		free(r);
	}
	/* A long URL counts too. */
	{
		struct http_head h = {0};
		char *u = malloc(HTTP_MAX_HEAD + 1);
		memset(u, 'u', HTTP_MAX_HEAD + 1);
		assert_int_equal(http_head_url(&h, u, 1), 0);
		assert_int_equal(http_head_url(&h, u, HTTP_MAX_HEAD), -1);
		assert_true(h.too_large);
		http_head_free(&h);
		assert_false(h.too_large); /* free resets */
		free(u);
	}
}

static void test_large_head_under_limit(void **state)
{
	struct harness t;
	/* "/", NUL, "X-Big", NUL, value, NUL must fit in HTTP_MAX_HEAD. */
	size_t vlen = HTTP_MAX_HEAD - (1 + 1 + 5 + 1 + 1);
	char *r = make_big_request(vlen);
	(void)state;
	harness_init(&t, HTTP_REQUEST, &fi_plain, 0);
	feed_in_chunks(&t, r, 4096);
	assert_int_equal(t.err, HPE_OK);
	assert_false(t.hp.hd.too_large);
	assert_int_equal(t.nmsgs, 1);
	assert_int_equal(t.out_len[0], strlen("GET / HTTP/1.1\r\nX-Big: \r\n") + vlen +
					       strlen("X-Forwarded-For: 10.0.0.1\r\n"
						      "X-Request-Id: rid-1\r\n\r\n"));
	harness_free(&t);
	free(r);
	/* One byte more is too large. */
	r = make_big_request(vlen + 1);
	harness_init(&t, HTTP_REQUEST, &fi_plain, 0);
	feed_in_chunks(&t, r, 4096);
	assert_int_equal(t.err, HPE_USER);
	assert_true(t.hp.hd.too_large);
	harness_free(&t);
	free(r);
}

static char *make_many_headers(unsigned n)
{
	size_t cap = 64 + (size_t)n * 32, len;
	char *r = malloc(cap);
	assert_non_null(r);
	len = (size_t)snprintf(r, cap, "GET / HTTP/1.1\r\n");
	for (unsigned i = 0; i < n; i++)
		len += (size_t)snprintf(r + len, cap - len, "X-H%u: %u\r\n", i, i);
	snprintf(r + len, cap - len, "\r\n");
	return r;
}

static void test_too_many_headers(void **state)
{
	struct harness t;
	char *r;
	(void)state;
	/* Exactly HTTP_MAX_HEADERS: fine. */
	r = make_many_headers(HTTP_MAX_HEADERS);
	harness_init(&t, HTTP_REQUEST, &fi_plain, 0);
	t.set.on_message_complete = NULL;
	feed_in_chunks(&t, r, 1);
	assert_int_equal(t.err, HPE_OK);
	assert_false(t.hp.hd.too_large);
	assert_int_equal(t.hp.hd.nhdrs, HTTP_MAX_HEADERS);
	assert_int_equal(t.nmsgs, 1);
	assert_string_equal(http_hdr_name(&t.hp.hd, &t.hp.hd.hdrs[HTTP_MAX_HEADERS - 1]), "X-H255");
	assert_string_equal(http_hdr_value(&t.hp.hd, &t.hp.hd.hdrs[HTTP_MAX_HEADERS - 1]), "255");
	harness_free(&t);
	free(r);
	/* One more: too large, at any split. */
	r = make_many_headers(HTTP_MAX_HEADERS + 1);
	for (size_t chunk = 1; chunk <= 4096; chunk *= 8) {
		harness_init(&t, HTTP_REQUEST, &fi_plain, 0);
		feed_in_chunks(&t, r, chunk);
		assert_int_equal(t.err, HPE_USER);
		assert_true(t.hp.hd.too_large);
		assert_int_equal(t.hp.hd.nhdrs, HTTP_MAX_HEADERS);
		assert_int_equal(t.nmsgs, 0);
		harness_free(&t);
	}
	free(r);
}

static void test_reset_reuses_buffer(void **state)
{
	struct http_head h = {0};
	char *buf;
	(void)state;
	assert_int_equal(http_head_url(&h, "/first", 6), 0);
	head_add(&h, "A", "1");
	buf = h.buf;
	http_head_reset(&h);
	assert_int_equal(h.len, 0);
	assert_int_equal(h.nhdrs, 0);
	assert_int_equal(h.url_len, 0);
	assert_ptr_equal(h.buf, buf);
	assert_int_equal(http_head_url(&h, "/2", 2), 0);
	head_add(&h, "B", "");
	assert_int_equal(h.nhdrs, 1);
	assert_int_equal(h.hdrs[0].flags, 0);
	assert_string_equal(http_hdr_name(&h, &h.hdrs[0]), "B");
	assert_string_equal(http_hdr_value(&h, &h.hdrs[0]), "");
	http_head_free(&h);
	assert_null(h.buf);
}

/* ---- response rewriting ---- */

static void check_resp(const char *raw, int close, const char *expect)
{
	check_splits(HTTP_RESPONSE, raw, NULL, close, &expect, 1);
}

static void test_response_head(void **state)
{
	const char *raw = "HTTP/1.1 200 OK\r\n"
			  "Content-Type: text/plain\r\n"
			  "Connection: keep-alive, X-Hop\r\n"
			  "Keep-Alive: timeout=5\r\n"
			  "X-Hop: h\r\n"
			  "Content-Length: 5\r\n"
			  "Proxy-Authenticate: Basic\r\n"
			  "x-Custom: V\r\n"
			  "\r\nhello";
	(void)state;
	check_resp(raw, 0,
		   "HTTP/1.1 200 OK\r\n"
		   "Content-Type: text/plain\r\n"
		   "Content-Length: 5\r\n"
		   "x-Custom: V\r\n"
		   "\r\n");
	check_resp(raw, 1,
		   "HTTP/1.1 200 OK\r\n"
		   "Content-Type: text/plain\r\n"
		   "Content-Length: 5\r\n"
		   "x-Custom: V\r\n"
		   "Connection: close\r\n"
		   "\r\n");
}

static void test_response_head_variants(void **state)
{
	(void)state;
	/* HTTP/1.0 status line forwarded as HTTP/1.1; multi-word reason. */
	check_resp("HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n", 0,
		   "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
	/* The upstream's Connection: close is the upstream's business. */
	check_resp("HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
		   "Content-Length: 0\r\n\r\n",
		   0, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
	/* Chunked: framing kept even when named in Connection. */
	check_resp("HTTP/1.1 200 OK\r\nConnection: Transfer-Encoding\r\n"
		   "Transfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n0\r\n\r\n",
		   1, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
	/* Empty header values and a custom reason. */
	check_resp("HTTP/1.1 299 Whatever You Like\r\nX-E:\r\nContent-Length: 0\r\n\r\n", 0,
		   "HTTP/1.1 299 Whatever You Like\r\nX-E: \r\nContent-Length: 0\r\n\r\n");
}

/* Found by tests/fuzz/fuzz_response: a status line without a reason
 * phrase and no header leaves the head's buffer unallocated (NULL), and
 * writing the empty reason computed NULL + 0 and passed NULL to memcpy
 * (UBSan: "applying zero offset to null pointer"). */
static void test_response_no_reason_no_headers(void **state)
{
	(void)state;
	check_resp("HTTP/1.1 204\r\n\r\n", 0, "HTTP/1.1 204 \r\n\r\n");
	check_resp("HTTP/1.1 200 \r\n\r\n", 1, "HTTP/1.1 200 \r\nConnection: close\r\n\r\n");
}

/* Found by tests/fuzz/fuzz_response: a replica's 1xx with framing headers
 * was relayed with them, and llhttp-based clients then read the final
 * response as the 1xx's body. A 1xx has no content: they are dropped. */
static void test_response_interim_framing_dropped(void **state)
{
	(void)state;
	/* upstream.c resets its parser after each 1xx head, so each is
	 * checked alone here. */
	check_resp("HTTP/1.1 103 Early Hints\r\nContent-Length: 5\r\nLink: </a.css>\r\n\r\n", 0,
		   "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n");
	check_resp("HTTP/1.1 100 Continue\r\nTransfer-Encoding: x\r\nX-A: a\r\n\r\n", 0,
		   "HTTP/1.1 100 Continue\r\nX-A: a\r\n\r\n");
	/* A final response keeps its framing. */
	check_resp("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 0,
		   "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n");
}

static void test_response_pipelined(void **state)
{
	static const char *const expect[] = {
		"HTTP/1.1 100 Continue\r\n\r\n",
		"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nLocation: /x\r\n\r\n",
		"HTTP/1.1 204 No Content\r\nX-A: a\r\n\r\n",
	};
	(void)state;
	check_splits(HTTP_RESPONSE,
		     "HTTP/1.1 100 Continue\r\n\r\n"
		     "HTTP/1.1 201 Created\r\nContent-Length: 2\r\nLocation: /x\r\n\r\nok"
		     "HTTP/1.1 204 No Content\r\nX-A: a\r\n\r\n",
		     NULL, 0, expect, 3);
}

/* ---- error responses ---- */

static void check_error(int status, const char *msg, const char *ep, int close, int retry,
			const char *expect_head, const char *expect_body)
{
	struct strbuf sb = {0};
	char want[4096];
	size_t bl = strlen(expect_body);
	const char *cl;
	int n;

	assert_int_equal(http_write_error(&sb, status, msg, ep, close, retry, NULL), 0);
	n = snprintf(want, sizeof(want), expect_head, bl);
	assert_true(n > 0 && (size_t)n < sizeof(want));
	strncat(want, expect_body, sizeof(want) - strlen(want) - 1);
	if (sb.len != strlen(want) || memcmp(sb.p, want, sb.len) != 0)
		fail_msg("--- got ---\n%.*s\n--- expected ---\n%s", (int)sb.len, sb.p, want);
	/* Content-Length matches the body after the blank line. */
	cl = strstr(sb.p, "Content-Length: ");
	assert_non_null(cl);
	assert_int_equal(strtoul(cl + 16, NULL, 10), strlen(strstr(sb.p, "\r\n\r\n") + 4));
	rr_test_sb_free(&sb);
}

static void test_error_exact(void **state)
{
	(void)state;
	check_error(503, "overloaded", "predict", 1, 2,
		    "HTTP/1.1 503 Service Unavailable\r\n"
		    "Content-Type: application/json\r\n"
		    "Content-Length: %zu\r\n"
		    "Retry-After: 2\r\n"
		    "Connection: close\r\n"
		    "\r\n",
		    "{\"error\": \"overloaded\", \"endpoint\": \"predict\"}\n");
	check_error(404, "no route", NULL, 0, 0,
		    "HTTP/1.1 404 Not Found\r\n"
		    "Content-Type: application/json\r\n"
		    "Content-Length: %zu\r\n"
		    "\r\n",
		    "{\"error\": \"no route\", \"endpoint\": null}\n");
	check_error(431, "request header fields too large", NULL, 1, 0,
		    "HTTP/1.1 431 Request Header Fields Too Large\r\n"
		    "Content-Type: application/json\r\n"
		    "Content-Length: %zu\r\n"
		    "Connection: close\r\n"
		    "\r\n",
		    "{\"error\": \"request header fields too large\", \"endpoint\": null}\n");
	check_error(504, "replica timed out", "e", 0, 7,
		    "HTTP/1.1 504 Gateway Timeout\r\n"
		    "Content-Type: application/json\r\n"
		    "Content-Length: %zu\r\n"
		    "Retry-After: 7\r\n"
		    "\r\n",
		    "{\"error\": \"replica timed out\", \"endpoint\": \"e\"}\n");
	/* Negative Retry-After means none. */
	check_error(502, "", "", 0, -1,
		    "HTTP/1.1 502 Bad Gateway\r\n"
		    "Content-Type: application/json\r\n"
		    "Content-Length: %zu\r\n"
		    "\r\n",
		    "{\"error\": \"\", \"endpoint\": \"\"}\n");
}

static void test_error_request_id(void **state)
{
	struct strbuf sb = {0};
	(void)state;
	assert_int_equal(http_write_error(&sb, 503, "queue full", "e", 0, 1, "0123abcd"), 0);
	assert_non_null(strstr(sb.p, "\r\nRetry-After: 1\r\nX-Request-Id: 0123abcd\r\n\r\n"));
	rr_test_sb_free(&sb);
}

static void test_error_reasons(void **state)
{
	static const struct { int st; const char *r; } tab[] = {
		{200, "OK"}, {400, "Bad Request"}, {404, "Not Found"},
		{405, "Method Not Allowed"}, {408, "Request Timeout"}, {409, "Conflict"},
		{413, "Content Too Large"}, {431, "Request Header Fields Too Large"},
		{500, "Internal Server Error"}, {502, "Bad Gateway"},
		{503, "Service Unavailable"}, {504, "Gateway Timeout"},
	};
	(void)state;
	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
		struct strbuf sb = {0};
		char line[128];
		assert_string_equal(http_reason(tab[i].st), tab[i].r);
		assert_int_equal(http_write_error(&sb, tab[i].st, "m", NULL, 0, 0, NULL), 0);
		snprintf(line, sizeof(line), "HTTP/1.1 %d %s\r\n", tab[i].st, tab[i].r);
		assert_memory_equal(sb.p, line, strlen(line));
		rr_test_sb_free(&sb);
	}
	assert_string_equal(http_reason(299), "Unknown");
}

static void test_error_json_escaping(void **state)
{
	(void)state;
	check_error(400, "bad \"quote\" \\ back\nnl\ttab\x01\x1f\x7f caf\xc3\xa9", "ep\"x\r", 0, 0,
		    "HTTP/1.1 400 Bad Request\r\n"
		    "Content-Type: application/json\r\n"
		    "Content-Length: %zu\r\n"
		    "\r\n",
		    "{\"error\": \"bad \\\"quote\\\" \\\\ back\\u000anl\\u0009tab\\u0001\\u001f"
		    "\x7f caf\xc3\xa9\", \"endpoint\": \"ep\\\"x\\u000d\"}\n");
}

static void test_error_long_and_appended(void **state)
{
	struct strbuf sb = {0};
	char msg[3000], *body;
	size_t pre;
	(void)state;
	for (size_t i = 0; i < sizeof(msg) - 1; i++)
		msg[i] = (char)('A' + i % 26);
	msg[sizeof(msg) - 1] = '\0';
	/* Appends after whatever the buffer holds (pipelined responses). */
	assert_int_equal(sb_puts(&sb, "PREVIOUS"), 0);
	pre = sb.len;
	assert_int_equal(http_write_error(&sb, 413, msg, "big", 1, 0, NULL), 0);
	assert_memory_equal(sb.p, "PREVIOUS", pre);
	assert_memory_equal(sb.p + pre, "HTTP/1.1 413 Content Too Large\r\n", 32);
	body = strstr(sb.p, "\r\n\r\n") + 4;
	assert_int_equal(strlen(body), strlen(msg) + strlen("{\"error\": \"\", \"endpoint\": \"big\"}\n"));
	assert_memory_equal(body + 11, msg, strlen(msg));
	rr_test_sb_free(&sb);
}

static void test_strbuf(void **state)
{
	struct strbuf sb = {0};
	char big[2048];
	(void)state;
	assert_int_equal(sb_put(&sb, "", 0), 0);
	assert_int_equal(sb.len, 0);
	assert_string_equal(sb.p, "");
	assert_int_equal(sb_printf(&sb, "%d-%s", 42, "x"), 0);
	assert_string_equal(sb.p, "42-x");
	memset(big, 'z', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(sb_printf(&sb, "[%s]", big), 0);
	assert_int_equal(sb.len, 4 + 2 + sizeof(big) - 1);
	assert_memory_equal(sb.p, "42-x[", 5);
	assert_int_equal(sb.p[sb.len - 1], ']');
	assert_int_equal(sb.p[sb.len], '\0');
	assert_true(sb.cap > sb.len);
	rr_test_sb_free(&sb);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_request_line_and_order),
		cmocka_unit_test(test_request_methods_and_http10),
		cmocka_unit_test(test_request_chunked_body_kept_out),
		cmocka_unit_test(test_request_pipelined),
		cmocka_unit_test(test_hop_by_hop_fixed),
		cmocka_unit_test(test_hop_by_hop_named_in_connection),
		cmocka_unit_test(test_x_forwarded_for),
		cmocka_unit_test(test_x_forwarded_for_multiple_lines),
		cmocka_unit_test(test_x_forwarded_for_empty),
		cmocka_unit_test(test_request_id),
		cmocka_unit_test(test_load_format),
		cmocka_unit_test(test_long_request_id),
		cmocka_unit_test(test_request_id_length),
		cmocka_unit_test(test_response_request_id),
		cmocka_unit_test(test_error_request_id),
		cmocka_unit_test(test_call_method),
		cmocka_unit_test(test_shard_key_passthrough),
		cmocka_unit_test(test_empty_values),
		cmocka_unit_test(test_head_valid),
		cmocka_unit_test(test_head_valid_empty_name),
		cmocka_unit_test(test_head_valid_via_llhttp),
		cmocka_unit_test(test_too_large_bytes),
		cmocka_unit_test(test_large_head_under_limit),
		cmocka_unit_test(test_too_many_headers),
		cmocka_unit_test(test_reset_reuses_buffer),
		cmocka_unit_test(test_response_head),
		cmocka_unit_test(test_response_head_variants),
		cmocka_unit_test(test_response_pipelined),
		cmocka_unit_test(test_response_no_reason_no_headers),
		cmocka_unit_test(test_response_interim_framing_dropped),
		cmocka_unit_test(test_error_exact),
		cmocka_unit_test(test_error_reasons),
		cmocka_unit_test(test_error_json_escaping),
		cmocka_unit_test(test_error_long_and_appended),
		cmocka_unit_test(test_strbuf),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
