/* Unit tests for reading a replica's response (src/upstream.c:
 * upstream_parse, upstream_parse_eof), without sockets: a struct upstream
 * whose owner is a recorder of its struct upstream_events. What each test
 * pins down:
 *  - the head handed to the owner keeps llhttp's 16-bit flags
 *    (F_TRANSFER_ENCODING is 0x200: an 8-bit copy, as upstream.c once made,
 *    loses it);
 *  - 204, 304 and a response to HEAD end at the head, and bytes after it
 *    are left unconsumed (never taken as a body or the next response);
 *  - a 101, a status outside 100..599, obs-fold or a bare LF in the head,
 *    and a header name that is not a token are failures (502);
 *  - interim heads reach on_interim and parsing goes on to the final one;
 *  - a close-delimited body ends at EOF (llhttp_finish pauses in our
 *    on_message_complete: that is success, not a reset). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "ringroute/upstream.h"

struct rec {
	struct upstream up;
	int heads, interims, ends;
	int status;
	uint16_t flags;
	size_t body;
};

static int r_head(struct shard *s, void *o, const struct resp_head *rh)
{
	struct rec *r = o;

	(void)s;
	r->heads++;
	r->status = rh->status;
	r->flags = rh->flags;
	return UP_BODY_RAW;
}

static int r_interim(struct shard *s, void *o, const struct resp_head *rh)
{
	(void)s, (void)rh;
	((struct rec *)o)->interims++;
	return 0;
}

static void r_body(struct shard *s, void *o, uint32_t bid, const char *p, size_t len)
{
	(void)s, (void)bid, (void)p;
	((struct rec *)o)->body += len;
}

static void r_nop(struct shard *s, void *o)
{
	(void)s, (void)o;
}

static void r_failed(struct shard *s, void *o, enum up_failure f, int reused)
{
	(void)s, (void)o, (void)f, (void)reused;
}

static size_t r_pending(const void *o)
{
	(void)o;
	return 0;
}

static bool r_done(const void *o)
{
	(void)o;
	return true;
}

static const struct upstream_events rec_events = {
	.on_head = r_head, .on_interim = r_interim, .on_body = r_body, .on_end = r_nop,
	.on_failed = r_failed, .on_drained = r_nop, .on_gone = r_nop, .pending = r_pending,
	.body_done = r_done,
};

static void rec_init(struct rec *r, bool is_head)
{
	memset(r, 0, sizeof(*r));
	r->up.ev = &rec_events;
	r->up.owner = r;
	upstream_parser_reset(&r->up, is_head);
}

/* Feed all of text in one buffer, as up_on_input does; returns the last
 * step and *consumed the bytes taken. */
static enum up_step feed(struct rec *r, const char *text, size_t *consumed)
{
	size_t len = strlen(text), off = 0;
	enum up_step st = UP_STEP_MORE;

	while (off < len) {
		uint32_t used;
		st = upstream_parse(NULL, &r->up, text + off, (uint32_t)(len - off), BID_NONE, &used);
		off += used;
		if (st != UP_STEP_MORE)
			break;
	}
	*consumed = off;
	return st;
}

static void test_flags_are_16_bits(void **state)
{
	struct rec r;
	size_t n;

	(void)state;
	rec_init(&r, false);
	assert_int_equal(feed(&r, "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nab", &n),
			 UP_STEP_MORE);
	assert_int_equal(r.heads, 1);
	assert_true(F_TRANSFER_ENCODING > 0xff);
	assert_true(r.flags & F_TRANSFER_ENCODING);
	assert_int_equal(r.body, 2);
	/* A body delimited by the close ends cleanly there. */
	assert_int_equal(upstream_parse_eof(&r.up), UP_STEP_END);
	http_head_free(&r.up.hp.hd);
}

static void test_no_body_responses(void **state)
{
	static const struct {
		const char *text;
		bool is_head;
	} cases[] = {
		{"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello", false},
		{"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nhello", false},
		{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", true},
		{"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		 false},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct rec r;
		size_t n;

		rec_init(&r, cases[i].is_head);
		assert_int_equal(feed(&r, cases[i].text, &n), UP_STEP_END);
		assert_int_equal(r.heads, 1);
		assert_int_equal(r.body, 0);
		/* The rest is never a body: only the head was consumed. */
		assert_int_equal(n, (size_t)(strstr(cases[i].text, "\r\n\r\n") - cases[i].text) + 4);
		http_head_free(&r.up.hp.hd);
	}
}

static void test_invalid_responses_fail(void **state)
{
	static const char *const bad[] = {
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
		"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 0\n\r\n",
		"HTTP/1.1 200 OK\r\nBad Name: x\r\nContent-Length: 0\r\n\r\n",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct rec r;
		size_t n;

		rec_init(&r, false);
		assert_int_equal(feed(&r, bad[i], &n), UP_STEP_FAIL);
		assert_int_equal(r.heads, 0);
		http_head_free(&r.up.hp.hd);
	}
}

static void test_interim_then_final(void **state)
{
	struct rec r;
	size_t n;

	(void)state;
	rec_init(&r, false);
	assert_int_equal(feed(&r, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
				  "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", &n),
			 UP_STEP_END);
	assert_int_equal(r.interims, 2);
	assert_int_equal(r.heads, 1);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.body, 2);
	http_head_free(&r.up.hp.hd);
}

static void test_reset_mid_body(void **state)
{
	struct rec r;
	size_t n;

	(void)state;
	rec_init(&r, false);
	assert_int_equal(feed(&r, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", &n), UP_STEP_MORE);
	assert_int_equal(upstream_parse_eof(&r.up), UP_STEP_FAIL);
	http_head_free(&r.up.hp.hd);
	rec_init(&r, false);
	assert_int_equal(upstream_parse_eof(&r.up), UP_STEP_FAIL); /* before any head */
	http_head_free(&r.up.hp.hd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_flags_are_16_bits),
		cmocka_unit_test(test_no_body_responses),
		cmocka_unit_test(test_invalid_responses_fail),
		cmocka_unit_test(test_interim_then_final),
		cmocka_unit_test(test_reset_mid_body),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
