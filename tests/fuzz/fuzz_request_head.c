/* Fuzz target: the client-side request path up to the head forwarded to a
 * replica.
 *
 * Feeds: data[0] and data[1] choose where the rest of the input is split
 * into receive buffers (harness.h, fz_cuts_pick); data[2..] is what a
 * client sent on one connection (possibly several pipelined requests).
 * The bytes go through an llhttp HTTP_REQUEST parser set up as src/h1.c
 * sets it up (http_request_settings_init + http_request_parser_start, plus
 * an on_message_begin), driven like h1_parse_step (pause at the end of the
 * head and of the message, a zero-length run after the head, the raw head
 * bytes through http_scan_head, the HTTP/2 preface refused with 505), and
 * each head goes through the same checks and rewriting as h1_on_headers and
 * req_start before forwarding: keep-alive, http_check_request (the real
 * conformance checks: 400/501/505), router_match against a fixed config,
 * the Content-Length limit, the shard key, http_head_mark_hop,
 * http_write_request_head; at the message end http_body_end_ok.
 *
 * Asserts:
 *  - feeding whole and feeding split give the same outcome text (every
 *    error status and message, every forwarded head byte for byte, body
 *    byte counts, the state at EOF);
 *  - every forwarded head is one well-formed HTTP/1.1 request head: a
 *    fresh parser reads it to the end of the head and no further, with the
 *    same method, target and body framing (Content-Length / chunked), and
 *    it contains no CR or LF outside line ends and no control character in
 *    a field value (what a replica would otherwise read differently);
 *  - no sanitizer report (ASan, UBSan, LeakSanitizer).
 *
 * Responses are taken to be instant: the next pipelined request is parsed
 * as soon as the previous one is complete, as h1.c does once the request
 * ended (h1_next). */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <llhttp.h>

#include "ringroute/alloc.h"
#include "ringroute/config.h"
#include "ringroute/http.h"
#include "ringroute/router.h"

#include "harness.h"

/* Routes as an operator would write them: a catch-all, a method-limited
 * endpoint with a call method and a small body limit, a directory route. */
static const char fuzz_cfg_doc[] =
	"{\"backends\": {\"b\": {\"replicas\": {\"r1\": \"127.0.0.1:9001\"}}},\n"
	" \"endpoints\": {\n"
	"  \"root\": {\"route\": \"/\", \"traffic\": {\"b\": 1}},\n"
	"  \"predict\": {\"route\": \"/predict\", \"methods\": [\"POST\", \"PUT\"],\n"
	"              \"call_method\": \"predict\", \"max_body_bytes\": 1000,\n"
	"              \"traffic\": {\"b\": 1}},\n"
	"  \"v2\": {\"route\": \"/v2/\", \"methods\": [\"GET\", \"HEAD\"], \"traffic\": {\"b\": 1}}\n"
	" }}\n";

static struct config *fuzz_cfg;

/* One simulated client connection: the fields of struct client that
 * h1_parse_step and h1_on_headers read, plus the outcome text. */
struct sim_client {
	struct http_parser hp;
	struct strbuf *out;
	int begun;                    /* CL_F_BEGUN */
	int in_body;                  /* CL_F_IN_BODY */
	int answered;                 /* request answered early (error): body dropped */
	int close;                    /* CL_F_CLOSE */
	int stop;                     /* connection closed: nothing more is read */
	size_t head_bytes;
	size_t body_bytes;
	unsigned nmsg;
};

static int sim_on_begin(llhttp_t *p)
{
	struct sim_client *c = p->data;
	c->begun = 1;
	return 0;
}

static llhttp_settings_t sim_settings;

/* h1_resp_fail: record the answer; close stops the connection. */
static void sim_error(struct sim_client *c, int status, const char *msg, int close)
{
	if (close)
		c->close = 1;
	sb_printf(c->out, "#%u error %d %s close=%d\n", c->nmsg, status, msg, c->close);
	c->answered = 1;
	if (c->close)
		c->stop = 1;
}

static int is_tchar(unsigned char ch)
{
	return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
	       (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* The forwarded head must mean to a replica what it meant to us. */
static void check_forwarded(const struct sim_client *c, const struct strbuf *head)
{
	struct http_parser rp;
	llhttp_settings_t set;
	llhttp_errno_t rc;
	const char *line, *end = head->p + head->len;
	uint16_t framing = F_CHUNKED | F_CONTENT_LENGTH;

	FZ_ASSERT(head->len >= 4 && memcmp(end - 4, "\r\n\r\n", 4) == 0, "head not terminated");
	/* Line structure: CR only before LF, LF only after CR; field values
	 * free of control characters other than HTAB (RFC 9110 5.5). */
	for (size_t i = 0; i < head->len; i++) {
		if (head->p[i] == '\r')
			FZ_ASSERT(i + 1 < head->len && head->p[i + 1] == '\n', "bare CR at %zu", i);
		if (head->p[i] == '\n')
			FZ_ASSERT(i > 0 && head->p[i - 1] == '\r', "bare LF at %zu", i);
	}
	line = (const char *)memchr(head->p, '\n', head->len) + 1; /* first header line */
	while (line < end - 2) {
		const char *eol = memchr(line, '\r', (size_t)(end - line));
		const char *colon = memchr(line, ':', (size_t)(eol - line));
		FZ_ASSERT(colon && colon > line, "header line without a name");
		for (const char *q = line; q < colon; q++)
			FZ_ASSERT(is_tchar((unsigned char)*q), "non-token byte 0x%02x in a name",
				  (unsigned char)*q);
		for (const char *q = colon + 1; q < eol; q++) {
			unsigned char ch = (unsigned char)*q;
			FZ_ASSERT(ch == '\t' || (ch >= 0x20 && ch != 0x7f),
				  "control byte 0x%02x in a field value", ch);
		}
		line = eol + 2;
	}

	/* Re-parse with the target collected and the headers only counted:
	 * our own HTTP_MAX_HEADERS is no limit of a replica's (the head
	 * grows by the headers we add), and the names were checked above. */
	memset(&rp, 0, sizeof(rp));
	http_settings_init(&set);
	set.on_header_field = NULL;
	set.on_header_value = NULL;
	set.on_header_value_complete = NULL;
	llhttp_init(&rp.p, HTTP_REQUEST, &set);
	rc = llhttp_execute(&rp.p, head->p, head->len);
	if (rc != HPE_PAUSED || rp.event != HTTP_EV_HEADERS) {
		fz_dump("forwarded", head->p, head->len);
		FZ_ASSERT(0, "replica-side parse: %s (%s)", llhttp_errno_name(rc),
			  llhttp_get_error_reason(&rp.p));
	}
	FZ_ASSERT(llhttp_get_error_pos(&rp.p) == end, "head ends early");
	FZ_ASSERT(rp.p.method == c->hp.p.method, "method changed");
	FZ_ASSERT(rp.hd.url_len == c->hp.hd.url_len &&
			  memcmp(rp.hd.buf + rp.hd.url_off, c->hp.hd.buf + c->hp.hd.url_off,
				 rp.hd.url_len) == 0,
		  "target changed");
	FZ_ASSERT((rp.p.flags & framing) == (c->hp.p.flags & framing),
		  "body framing changed: flags 0x%x -> 0x%x", c->hp.p.flags, rp.p.flags);
	FZ_ASSERT(!(rp.p.flags & F_CONTENT_LENGTH) || rp.p.content_length == c->hp.p.content_length,
		  "Content-Length changed");
	http_head_free(&rp.hd);
}

/* h1_on_headers and req_start, less the I/O: decide and write the answer. */
static void sim_on_headers(struct sim_client *c)
{
	struct http_head *hd = &c->hp.hd;
	const struct endpoint_cfg *ep;
	const struct http_hdr *key;
	struct fwd_info fi = {0};
	struct strbuf head = {0};
	char msg[160];
	int status = 0;

	c->in_body = 1;
	if (!llhttp_should_keep_alive(&c->hp.p) || c->hp.p.http_major < 1 ||
	    (c->hp.p.http_major == 1 && c->hp.p.http_minor == 0))
		c->close = 1;
	status = http_check_request(hd, &c->hp.p, msg, sizeof(msg));
	if (status) {
		sim_error(c, status, msg, 1);
		return;
	}
	ep = router_match(fuzz_cfg, hd->buf + hd->url_off, hd->url_len, c->hp.p.method, &status);
	if (status != 200) {
		sim_error(c, status, status == 405 ? "method not allowed" : "no route", 0);
		return;
	}
	if ((c->hp.p.flags & F_CONTENT_LENGTH) && c->hp.p.content_length > ep->max_body_bytes) {
		sim_error(c, 413, "request body too large", 1);
		return;
	}
	key = http_head_find(hd, "x-serve-shard-key");
	if (key)
		sb_printf(c->out, "#%u key %u ", c->nmsg, key->value_len);
	http_head_mark_hop(hd);
	/* The priority and deadline headers' integers (req_classify): only a
	 * sign and digits parse, and the value is theirs. */
	for (uint32_t i = 0; i < hd->nhdrs; i++) {
		int64_t v;
		const char *val = http_hdr_value(hd, &hd->hdrs[i]);
		uint32_t n = hd->hdrs[i].value_len;
		if (http_hdr_int(hd, &hd->hdrs[i], &v) == 0) {
			uint32_t skip = (val[0] == '+' || val[0] == '-') ? 1 : 0;
			FZ_ASSERT(n > skip && n - skip <= 18, "integer header length");
			FZ_ASSERT((v < 0) == (val[0] == '-' && v != 0), "integer header sign");
			for (uint32_t j = skip; j < n; j++)
				FZ_ASSERT(val[j] >= '0' && val[j] <= '9', "non-digit accepted");
		}
	}
	fi.client_ip = "10.0.0.1";
	fi.request_id = "00000000000000aa";
	fi.call_method = ep->call_method;
	fi.load_format = NULL;
	fi.open = false;
	fi.drop_timeout = false;
	FZ_ASSERT(http_write_request_head(&head, hd, &c->hp.p, &fi) == 0, "out of memory");
	check_forwarded(c, &head);
	sb_printf(c->out, "#%u %s forward %zu close=%d\n", c->nmsg, ep->name, head.len, c->close);
	sb_put(c->out, head.p, head.len);
	fz_sb_free(&head);
}

/* h1_next, with the response already sent. */
static void sim_next(struct sim_client *c)
{
	if (!c->answered && !http_body_end_ok(&c->hp)) {
		sim_error(c, 400, "bare LF in chunked body (CRLF required)", 1);
		return;
	}
	sb_printf(c->out, "#%u done body=%zu\n", c->nmsg, c->body_bytes);
	c->nmsg++;
	c->in_body = c->answered = c->begun = 0;
	c->head_bytes = c->body_bytes = 0;
	http_request_parser_start(&c->hp, &sim_settings, c);
	if (c->close)
		c->stop = 1;
}

/* h1_parse_step for one receive buffer. */
static void sim_input(struct sim_client *c, const char *data, size_t len)
{
	while (len && !c->stop) {
		int in_body = c->in_body;
		llhttp_errno_t rc;
		const char *pos;
		size_t used;

		c->hp.event = HTTP_EV_NONE;
		rc = llhttp_execute(&c->hp.p, data, len);
		if (rc == HPE_PAUSED_UPGRADE) {
			llhttp_resume_after_upgrade(&c->hp.p);
			rc = HPE_PAUSED;
		}
		pos = rc == HPE_OK ? data + len : llhttp_get_error_pos(&c->hp.p);
		if (rc == HPE_PAUSED_H2_UPGRADE) {
			sim_error(c, 505, "HTTP/2 is not supported: speak HTTP/1.1 to this port", 1);
			return;
		}
		if (rc != HPE_OK && rc != HPE_PAUSED) {
			int st = c->hp.hd.too_large ? 431 : 400;
			int bad = !in_body ? http_scan_head(&c->hp.scan, data, (size_t)(pos - data)) : 0;
			if (bad)
				st = 400;
			sim_error(c, st, bad ? http_scan_reason(bad)
				  : st == 431 ? "request header fields too large"
					      : llhttp_get_error_reason(&c->hp.p), 1);
			return;
		}
		FZ_ASSERT(pos >= data && pos <= data + len, "pause position outside the buffer");
		used = (size_t)(pos - data);
		if (!in_body) {
			int bad = http_scan_head(&c->hp.scan, data, used);
			if (bad) {
				sim_error(c, 400, http_scan_reason(bad), 1);
				return;
			}
			c->head_bytes += used;
		}
		if (!in_body && c->head_bytes > HTTP_MAX_HEAD) {
			sim_error(c, 431, "request header fields too large", 1);
			return;
		}
		if (in_body) {
			c->body_bytes += used;
			http_body_seen(&c->hp, data, used);
		}
		data += used;
		len -= used;
		if (rc == HPE_PAUSED)
			llhttp_resume(&c->hp.p);
		if (c->hp.event == HTTP_EV_HEADERS) {
			sim_on_headers(c);
			if (c->stop)
				return;
			/* A request without a body completes on a zero-length run. */
			c->hp.event = HTTP_EV_NONE;
			if (llhttp_execute(&c->hp.p, pos, 0) == HPE_PAUSED)
				llhttp_resume(&c->hp.p);
		}
		if (c->hp.event == HTTP_EV_MESSAGE)
			sim_next(c);
	}
}

/* Feed data to a fresh client connection as the receive buffers that cuts
 * delimit, then EOF; append the outcome to out. This is the sequence to
 * extend (request validation, new limits): everything that may differ
 * between whole and split feeding must end up in out. */
static void run_client(const char *data, size_t len, const struct fz_cuts *cuts, struct strbuf *out)
{
	struct sim_client c;
	size_t start = 0;

	memset(&c, 0, sizeof(c));
	c.out = out;
	http_request_parser_start(&c.hp, &sim_settings, &c);
	for (size_t i = 0; i <= cuts->n && !c.stop; i++) {
		size_t end = i < cuts->n ? cuts->at[i] : len;
		sim_input(&c, data + start, end - start);
		start = end;
	}
	/* What h1_on_input does at EOF with nothing left unparsed. */
	if (!c.stop)
		sb_printf(out, "eof: %s\n", !c.begun ? "idle" : !c.in_body ? "incomplete head" : "mid-body");
	http_head_free(&c.hp.hd);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char err[256];
	(void)argc;
	(void)argv;
	http_request_settings_init(&sim_settings);
	sim_settings.on_message_begin = sim_on_begin;
	if (config_parse(fuzz_cfg_doc, sizeof(fuzz_cfg_doc) - 1, "fuzz", NULL, &fuzz_cfg, err,
			 sizeof(err))) {
		fprintf(stderr, "fuzz config: %s\n", err);
		abort();
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct strbuf whole = {0}, split = {0};
	struct fz_cuts none = {0}, cuts;
	const char *msg = (const char *)data + 2;
	size_t len;

	if (size < 2)
		return 0;
	len = size - 2;
	fz_cuts_pick(data[0], data[1], len, &cuts);
	run_client(msg, len, &none, &whole);
	run_client(msg, len, &cuts, &split);
	fz_expect_same(&whole, &split, &cuts);
	fz_sb_free(&whole);
	fz_sb_free(&split);
	return 0;
}
