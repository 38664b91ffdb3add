/* Unit tests for the access log (src/accesslog.c).
 *
 * Why: a log line is made of values clients choose (the path, the request
 * id) and is read by machines line by line, so accesslog_format must keep
 * every line one line (text: no space or line end inside a field; JSON:
 * always valid JSON) whatever the bytes, and keep the documented field
 * order. The rings and the logger thread must hand every line put to the
 * file once, in each shard's order, and when the output takes nothing,
 * drop and count lines instead of blocking the shard, and still let the
 * process stop. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "ringroute/accesslog.h"
#include "ringroute/alloc.h"
#include "ringroute/clock.h"

static void sb_release(struct strbuf *sb)
{
	mi_free(sb->p);
	sb->p = NULL;
	sb->len = sb->cap = 0;
}

static struct accesslog_rec sample(void)
{
	struct accesslog_rec r = {
		.time = "2026-12-02T01:30:25.692Z",
		.client = "127.0.0.1:53422",
		.method = "POST",
		.path = "/v1/predict?x=1",
		.version = "HTTP/1.1",
		.status = 200,
		.endpoint = "predict",
		.backend = "llm",
		.replica = "r1",
		.request_id = "5f3c9a0b1d2e4f60",
		.bytes_in = 112,
		.bytes_out = 203,
		.queue_us = 0,
		.ttfb_us = 1234,
		.duration_us = 1301,
		.retries = 0,
		.reason = "ok",
	};
	r.path_len = strlen(r.path);
	r.request_id_len = strlen(r.request_id);
	return r;
}

static void expect_line(const struct accesslog_rec *r, enum accesslog_format f, const char *want)
{
	struct strbuf sb = {0};

	assert_int_equal(accesslog_format(r, f, &sb), 0);
	if (sb.len != strlen(want) || memcmp(sb.p, want, sb.len) != 0) {
		static char msg[4096];
		snprintf(msg, sizeof(msg), "--- got ---\n%.*s--- expected ---\n%s", (int)sb.len,
			 sb.p, want);
		sb_release(&sb);
		fail_msg("%s", msg);
	}
	sb_release(&sb);
}

static void test_text_fields_in_order(void **state)
{
	struct accesslog_rec r = sample();
	(void)state;
	expect_line(&r, ACCESSLOG_TEXT,
		    "2026-12-02T01:30:25.692Z 127.0.0.1:53422 POST /v1/predict?x=1 HTTP/1.1 200 "
		    "predict llm r1 5f3c9a0b1d2e4f60 112 203 0.000 1.234 1.301 0 ok\n");
}

static void test_text_empty_and_escaped(void **state)
{
	static const char path[] = "/a b\tc\\d\"e\x01\x7f\xc3\xa9";
	struct accesslog_rec r = sample();
	(void)state;
	/* Nothing known: every field "-", never an empty field. */
	r.method = r.version = r.endpoint = r.backend = r.replica = NULL;
	r.path = NULL;
	r.status = 0;
	r.ttfb_us = -1;
	r.request_id = "";
	r.request_id_len = 0;
	r.reason = "bad_request";
	expect_line(&r, ACCESSLOG_TEXT,
		    "2026-12-02T01:30:25.692Z 127.0.0.1:53422 - - - - - - - - 112 203 0.000 - "
		    "1.301 0 bad_request\n");
	/* Client bytes: space, controls, '\', non-ASCII as \xHH; a lone "-"
	 * is not mistaken for an empty field. */
	r = sample();
	r.path = path;
	r.path_len = sizeof(path) - 1;
	r.request_id = "-";
	r.request_id_len = 1;
	r.endpoint = "my endpoint";
	expect_line(&r, ACCESSLOG_TEXT,
		    "2026-12-02T01:30:25.692Z 127.0.0.1:53422 POST "
		    "/a\\x20b\\x09c\\x5cd\"e\\x01\\x7f\\xc3\\xa9 HTTP/1.1 200 my\\x20endpoint llm r1 "
		    "\\x2d 112 203 0.000 1.234 1.301 0 ok\n");
	/* An embedded NUL (length-counted values) is escaped too. */
	r = sample();
	r.path = "/a\0b";
	r.path_len = 4;
	expect_line(&r, ACCESSLOG_TEXT,
		    "2026-12-02T01:30:25.692Z 127.0.0.1:53422 POST /a\\x00b HTTP/1.1 200 predict "
		    "llm r1 5f3c9a0b1d2e4f60 112 203 0.000 1.234 1.301 0 ok\n");
}

static void test_milliseconds(void **state)
{
	struct accesslog_rec r = sample();
	(void)state;
	r.queue_us = 1;
	r.ttfb_us = 999;
	r.duration_us = 1234567;
	r.retries = 2;
	r.bytes_in = 0;
	r.bytes_out = 18446744073709551615ull;
	expect_line(&r, ACCESSLOG_TEXT,
		    "2026-12-02T01:30:25.692Z 127.0.0.1:53422 POST /v1/predict?x=1 HTTP/1.1 200 "
		    "predict llm r1 5f3c9a0b1d2e4f60 0 18446744073709551615 0.001 0.999 1234.567 2 "
		    "ok\n");
}

static void test_json_exact(void **state)
{
	struct accesslog_rec r = sample();
	(void)state;
	expect_line(&r, ACCESSLOG_JSON,
		    "{\"time\":\"2026-12-02T01:30:25.692Z\",\"client\":\"127.0.0.1:53422\","
		    "\"method\":\"POST\",\"path\":\"/v1/predict?x=1\",\"version\":\"HTTP/1.1\","
		    "\"status\":200,\"endpoint\":\"predict\",\"backend\":\"llm\",\"replica\":\"r1\","
		    "\"request_id\":\"5f3c9a0b1d2e4f60\",\"bytes_in\":112,\"bytes_out\":203,"
		    "\"queue_ms\":0.000,\"ttfb_ms\":1.234,\"duration_ms\":1.301,\"retries\":0,"
		    "\"reason\":\"ok\"}\n");
	r.endpoint = r.backend = r.replica = NULL;
	r.ttfb_us = -1;
	r.status = 0;
	expect_line(&r, ACCESSLOG_JSON,
		    "{\"time\":\"2026-12-02T01:30:25.692Z\",\"client\":\"127.0.0.1:53422\","
		    "\"method\":\"POST\",\"path\":\"/v1/predict?x=1\",\"version\":\"HTTP/1.1\","
		    "\"status\":null,\"endpoint\":null,\"backend\":null,\"replica\":null,"
		    "\"request_id\":\"5f3c9a0b1d2e4f60\",\"bytes_in\":112,\"bytes_out\":203,"
		    "\"queue_ms\":0.000,\"ttfb_ms\":null,\"duration_ms\":1.301,\"retries\":0,"
		    "\"reason\":\"ok\"}\n");
}

/* Whatever the bytes, a JSON line parses, as one line, back to them (or
 * U+FFFD where they were not UTF-8). */
static void test_json_always_valid(void **state)
{
	static const char path[] = "/q\"\\\n\r\x01\x7f caf\xc3\xa9 \xff\xfe end";
	struct accesslog_rec r = sample();
	struct strbuf sb = {0};
	json_error_t err;
	json_t *j;
	(void)state;
	r.path = path;
	r.path_len = sizeof(path) - 1;
	r.request_id = "id\nwith\"quote";
	r.request_id_len = strlen(r.request_id);
	assert_int_equal(accesslog_format(&r, ACCESSLOG_JSON, &sb), 0);
	assert_int_equal(sb.p[sb.len - 1], '\n');
	assert_null(memchr(sb.p, '\n', sb.len - 1));
	j = json_loadb(sb.p, sb.len, 0, &err);
	if (!j)
		fail_msg("not JSON (%s): %s", err.text, sb.p);
	assert_string_equal(json_string_value(json_object_get(j, "path")),
			    "/q\"\\\n\r\x01\x7f caf\xc3\xa9 \xef\xbf\xbd\xef\xbf\xbd end");
	assert_string_equal(json_string_value(json_object_get(j, "request_id")), "id\nwith\"quote");
	assert_int_equal(json_integer_value(json_object_get(j, "status")), 200);
	assert_true(json_real_value(json_object_get(j, "ttfb_ms")) > 1.2339 &&
		    json_real_value(json_object_get(j, "ttfb_ms")) < 1.2341);
	assert_int_equal(json_object_size(j), 17);
	json_decref(j);
	sb_release(&sb);
}

static void test_format_parse(void **state)
{
	enum accesslog_format f = ACCESSLOG_TEXT;
	(void)state;
	assert_int_equal(accesslog_format_parse("json", &f), 0);
	assert_int_equal(f, ACCESSLOG_JSON);
	assert_int_equal(accesslog_format_parse("text", &f), 0);
	assert_int_equal(f, ACCESSLOG_TEXT);
	assert_int_equal(accesslog_format_parse("JSON", &f), -1);
	assert_int_equal(accesslog_format_parse("", &f), -1);
}

static char tmpdir[64];

static int setup_dir(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/rr-alog-XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_dir(void **state)
{
	char cmd[128];
	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

/* Puts lines first..first+n-1 on as, each naming its shard and number in
 * the path. */
static void put_lines(struct accesslog_shard *as, unsigned shard, unsigned first, unsigned n)
{
	for (unsigned i = first; i < first + n; i++) {
		struct accesslog_rec r = sample();
		char path[64];
		r.path_len = (size_t)snprintf(path, sizeof(path), "/s%u/%u", shard, i);
		r.path = path;
		accesslog_put(as, &r, clock_now_us());
	}
}

/* Two shards' lines reach the file, each once, each shard's in order. */
static void test_file_round_trip(void **state)
{
	enum { N = 3000 }; /* about 500 KiB per shard: the 64 KiB rings wrap */
	struct accesslog *al = NULL;
	struct accesslog_shard as[2];
	unsigned next[2] = {0, 0}, total = 0;
	char path[128], line[512];
	FILE *f;
	(void)state;
	snprintf(path, sizeof(path), "%s/access.log", tmpdir);
	assert_int_equal(accesslog_open(&al, path, ACCESSLOG_TEXT, 2, 64), 0);
	for (unsigned k = 0; k < 2; k++)
		accesslog_shard_init(&as[k], al, k);
	for (unsigned i = 0; i < N; i += 100) {
		put_lines(&as[0], 0, i, 100);
		put_lines(&as[1], 1, i, 100);
		/* A full ring drops: give the logger time, as a live proxy
		 * would have between bursts (not synchronisation: the
		 * assertion below counts drops too). */
		accesslog_flush(al, 2000);
	}
	for (unsigned k = 0; k < 2; k++)
		accesslog_shard_teardown(&as[k]);
	assert_int_equal(accesslog_dropped(al), 0);
	assert_int_equal(accesslog_close(al), 0);
	f = fopen(path, "r");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		unsigned s, i;
		char *p = strstr(line, " POST /s");
		assert_non_null(p);
		assert_int_equal(sscanf(p, " POST /s%u/%u ", &s, &i), 2);
		assert_true(s < 2);
		assert_int_equal(i, next[s]);
		next[s]++;
		total++;
		assert_int_equal(line[strlen(line) - 1], '\n');
	}
	fclose(f);
	assert_int_equal(next[0], N);
	assert_int_equal(next[1], N);
	assert_int_equal(total, 2 * N);
}

/* A FIFO whose reader never reads: lines are dropped and counted, put
 * never blocks, and closing gives up on the output instead of hanging;
 * every line is either in the FIFO or counted as dropped. */
static void test_stuck_output_drops(void **state)
{
	enum { N = 5000 };
	struct accesslog *al = NULL;
	struct accesslog_shard as;
	char path[128], buf[65536];
	uint64_t t0, dropped, lines = 0;
	ssize_t n;
	int rfd;
	(void)state;
	snprintf(path, sizeof(path), "%s/fifo", tmpdir);
	assert_int_equal(mkfifo(path, 0600), 0);
	rfd = open(path, O_RDONLY | O_NONBLOCK);
	assert_true(rfd >= 0);
	fcntl(rfd, F_SETPIPE_SZ, 4096);
	assert_int_equal(accesslog_open(&al, path, ACCESSLOG_JSON, 1, 64), 0);
	accesslog_shard_init(&as, al, 0);
	t0 = clock_now_us();
	put_lines(&as, 0, 0, N);
	/* 5000 lines into 64 KiB + a 4 KiB pipe: most are dropped, at once. */
	assert_true(clock_now_us() - t0 < 2000000);
	assert_true(accesslog_dropped(al) > N / 2);
	accesslog_shard_teardown(&as);
	t0 = clock_now_us();
	dropped = accesslog_close(al); /* gives the output up after about 1 s */
	assert_true(clock_now_us() - t0 < 5000000);
	assert_int_equal(accesslog_dropped(NULL), 0);
	while ((n = read(rfd, buf, sizeof(buf))) > 0)
		for (ssize_t i = 0; i < n; i++)
			lines += buf[i] == '\n';
	close(rfd);
	assert_true(lines > 0);
	/* Each line is in the FIFO or counted, never both, never neither. */
	assert_int_equal(lines + dropped, N);
}

/* An output that cannot be opened is an error at start, with a message. */
static void test_open_fails(void **state)
{
	struct accesslog *al = NULL;
	char path[128];
	(void)state;
	snprintf(path, sizeof(path), "%s/no/such/dir/access.log", tmpdir);
	assert_int_equal(accesslog_open(&al, path, ACCESSLOG_TEXT, 1, 64), -ENOENT);
	assert_null(al);
	/* A FIFO nobody reads: ENXIO, not a start that hangs. */
	snprintf(path, sizeof(path), "%s/lonely", tmpdir);
	assert_int_equal(mkfifo(path, 0600), 0);
	assert_int_equal(accesslog_open(&al, path, ACCESSLOG_TEXT, 1, 64), -ENXIO);
	assert_null(al);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_text_fields_in_order),
		cmocka_unit_test(test_text_empty_and_escaped),
		cmocka_unit_test(test_milliseconds),
		cmocka_unit_test(test_json_exact),
		cmocka_unit_test(test_json_always_valid),
		cmocka_unit_test(test_format_parse),
		cmocka_unit_test(test_file_round_trip),
		cmocka_unit_test(test_stuck_output_drops),
		cmocka_unit_test(test_open_fails),
	};
	return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
