/* Fuzz target: request body framing (chunked and Content-Length) as the
 * client side forwards bodies raw.
 *
 * Feeds: data[0] picks a fixed request head (chunked, Content-Length N,
 * HTTP/1.0, "gzip, chunked", no body, ...), data[1] is N where the head
 * has a Content-Length, data[2] and data[3] choose the receive-buffer
 * splits (harness.h); data[4..] are the body bytes (and whatever follows
 * them on the connection: a pipelined request, garbage). The head and the
 * body are fed together to an llhttp HTTP_REQUEST parser with h1.c's
 * settings (http_request_settings_init: chunk extensions bounded; on_body is added here
 * only to count decoded bytes, it returns 0 and changes no parser state),
 * driven as h1_parse_step drives it: the bytes consumed while in the
 * body are what h1.c forwards raw to the replica.
 *
 * Asserts:
 *  - the forwarded body bytes of a message are one contiguous run of the
 *    input starting right after its head: none lost, none repeated, never
 *    more than the input holds;
 *  - decoded bytes (on_body) never exceed the forwarded raw bytes; a
 *    complete Content-Length message forwards exactly Content-Length bytes;
 *  - whole and split feeding agree on every message's outcome (head,
 *    where the body ends, raw and decoded byte counts and a hash of the
 *    decoded bytes, the error that ended the connection and where); on an
 *    error, the body bytes already forwarded (split-dependent: h1.c
 *    streams them) all lie before the error position;
 *  - no sanitizer report. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <llhttp.h>

#include "ringroute/alloc.h"
#include "ringroute/http.h"

#include "harness.h"

/* %u is data[1] where present. */
static const char *const heads[] = {
	"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
	"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: %u\r\n\r\n",
	"POST /p HTTP/1.0\r\nContent-Length: %u\r\n\r\n",
	"PUT /p HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
	"GET /p HTTP/1.1\r\nHost: h\r\n\r\n",
	"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n",
	"POST /p HTTP/1.1\r\nContent-Length: %u\r\nConnection: close\r\n\r\n",
	"POST /p HTTP/1.1\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n",
	"POST /p HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
	"POST /p HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
};
#define NHEADS (sizeof(heads) / sizeof(heads[0]))

struct sim_client {
	struct http_parser hp;
	struct strbuf *out;
	const char *base;             /* start of the input: offsets in out */
	const char *body_next;        /* where the next forwarded body byte must come from */
	size_t raw, decoded;
	uint64_t hash;                /* FNV-1a of the decoded bytes */
	uint64_t cl;                  /* Content-Length at the head (llhttp counts
	                               * its copy down), when has_cl */
	int has_cl;
	int in_body;
	int stop;
	unsigned nmsg;
};

static int sim_on_body(llhttp_t *p, const char *at, size_t len)
{
	struct sim_client *c = p->data;
	c->decoded += len;
	for (size_t i = 0; i < len; i++)
		c->hash = (c->hash ^ (unsigned char)at[i]) * 0x100000001b3ull;
	return 0;
}

static llhttp_settings_t sim_settings;

static void sim_on_headers(struct sim_client *c, const char *pos)
{
	c->in_body = 1;
	c->body_next = pos;
	c->raw = c->decoded = 0;
	c->hash = 0xcbf29ce484222325ull;
	c->has_cl = (c->hp.p.flags & F_CONTENT_LENGTH) != 0;
	c->cl = c->hp.p.content_length;
	sb_printf(c->out, "#%u head %s url=%u hdrs=%u flags=0x%x cl=%llu at %zu\n", c->nmsg,
		  llhttp_method_name((llhttp_method_t)c->hp.p.method), c->hp.hd.url_len,
		  c->hp.hd.nhdrs, c->hp.p.flags & (F_CHUNKED | F_CONTENT_LENGTH),
		  (unsigned long long)c->hp.p.content_length, (size_t)(pos - c->base));
	if (!llhttp_should_keep_alive(&c->hp.p) || c->hp.p.http_major < 1 ||
	    (c->hp.p.http_major == 1 && c->hp.p.http_minor == 0))
		c->stop = 2; /* close after this message */
}

static void sim_on_message(struct sim_client *c)
{
	if (!http_body_end_ok(&c->hp)) {
		/* h1_parse_step: a chunked body must end in CRLF CRLF. */
		sb_printf(c->out, "#%u error bare LF ending the body\n", c->nmsg);
		c->stop = 1;
		return;
	}
	FZ_ASSERT(c->decoded <= c->raw, "decoded %zu > raw %zu", c->decoded, c->raw);
	if (c->has_cl)
		FZ_ASSERT(c->raw == c->cl && c->decoded == c->cl,
			  "Content-Length %llu but %zu raw / %zu decoded", (unsigned long long)c->cl,
			  c->raw, c->decoded);
	sb_printf(c->out, "#%u done raw=%zu decoded=%zu hash=%016llx ends %zu\n", c->nmsg, c->raw,
		  c->decoded, (unsigned long long)c->hash, (size_t)(c->body_next - c->base));
	c->nmsg++;
	c->in_body = 0;
	http_request_parser_start(&c->hp, &sim_settings, c);
	if (c->stop == 2)
		c->stop = 1;
}

/* h1_parse_step for one receive buffer, without the routing. */
static void sim_input(struct sim_client *c, const char *data, size_t len)
{
	while (len && !c->stop) {
		int in_body = c->in_body;
		llhttp_errno_t rc;
		const char *pos;
		size_t used;

		c->hp.event = HTTP_EV_NONE;
		rc = llhttp_execute(&c->hp.p, data, len);
		pos = rc == HPE_OK ? data + len : llhttp_get_error_pos(&c->hp.p);
		if (rc != HPE_OK && rc != HPE_PAUSED) {
			/* Bytes before the error went out already (how many
			 * depends on the splits); never any at or past it. */
			FZ_ASSERT(!c->in_body || c->body_next <= pos, "forwarded past the error");
			sb_printf(c->out, "#%u error %s at %zu\n", c->nmsg, llhttp_errno_name(rc),
				  (size_t)(pos - c->base));
			c->stop = 1;
			return;
		}
		used = (size_t)(pos - data);
		if (in_body && used) {
			FZ_ASSERT(data == c->body_next, "body bytes not contiguous: %zd",
				  (ssize_t)(data - c->body_next));
			http_body_seen(&c->hp, data, used);
			c->body_next += used;
			c->raw += used;
		}
		data += used;
		len -= used;
		if (rc == HPE_PAUSED)
			llhttp_resume(&c->hp.p);
		if (c->hp.event == HTTP_EV_HEADERS) {
			sim_on_headers(c, pos);
			c->hp.event = HTTP_EV_NONE;
			if (llhttp_execute(&c->hp.p, pos, 0) == HPE_PAUSED)
				llhttp_resume(&c->hp.p);
		}
		if (c->hp.event == HTTP_EV_MESSAGE)
			sim_on_message(c);
	}
}

/* Feed data as the receive buffers cuts delimits; append the outcome. */
static void run_client(const char *data, size_t len, const struct fz_cuts *cuts, struct strbuf *out)
{
	struct sim_client c;
	size_t start = 0;

	memset(&c, 0, sizeof(c));
	c.out = out;
	c.base = data;
	http_request_parser_start(&c.hp, &sim_settings, &c);
	for (size_t i = 0; i <= cuts->n && !c.stop; i++) {
		size_t end = i < cuts->n ? cuts->at[i] : len;
		sim_input(&c, data + start, end - start);
		start = end;
	}
	FZ_ASSERT(!c.in_body || c.body_next <= data + len, "forwarded past the input");
	if (!c.stop || c.stop == 2)
		sb_printf(out, "eof: %s raw=%zu\n", c.in_body ? "mid-body" : "between", c.raw);
	http_head_free(&c.hp.hd);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	http_request_settings_init(&sim_settings);
	sim_settings.on_body = sim_on_body;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct strbuf whole = {0}, split = {0}, in = {0};
	struct fz_cuts none = {0}, cuts;
	const char *head;

	if (size < 4)
		return 0;
	head = heads[data[0] % NHEADS];
	if (strstr(head, "%u"))
		sb_printf(&in, head, (unsigned)data[1]);
	else
		sb_puts(&in, head);
	sb_put(&in, (const char *)data + 4, size - 4);
	/* The buffer is exactly the input: ASan sees a read past its end
	 * (sb_put keeps a NUL there, so copy to an exact-size block). */
	{
		char *exact = malloc(in.len ? in.len : 1);
		memcpy(exact, in.p, in.len);
		fz_cuts_pick(data[2], data[3], in.len, &cuts);
		run_client(exact, in.len, &none, &whole);
		run_client(exact, in.len, &cuts, &split);
		free(exact);
	}
	fz_expect_same(&whole, &split, &cuts);
	fz_sb_free(&in);
	fz_sb_free(&whole);
	fz_sb_free(&split);
	return 0;
}
