/* Fuzz target: a replica's response as src/upstream.c parses and relays it.
 *
 * Feeds: data[0] describes the request: bit 0 it was HEAD (no body
 * whatever the headers say), bit 1 the client speaks HTTP/1.0 (a chunked
 * body is de-chunked and close-delimited), bit 2 the client asked to close
 * (req_wants_close); data[1] and data[2] choose the receive-buffer splits
 * (harness.h); data[3..] is what the replica sent on the connection, then
 * EOF. The bytes go through an HTTP_RESPONSE parser with upstream.c's
 * settings (http_settings_init + an on_body that relays only when
 * de-chunking), driven by a copy of upstream_on_input: interim 1xx heads
 * relayed and the parser reset, the head rewritten with
 * http_write_response_head (Connection: close for close-delimited bodies),
 * the raw body relayed, the message end, and at EOF llhttp_finish.
 *
 * Asserts:
 *  - whole and split feeding agree on the outcome (every relayed head byte
 *    for byte, body byte counts, how the exchange ended and, for a parse
 *    error, where, whether the connection is reusable);
 *  - relayed raw body bytes are one contiguous run of the input right
 *    after the final head, never more than the input holds;
 *  - what the client receives frames itself: a fresh response parser
 *    (told the request was HEAD) reads the relayed bytes without error and
 *    completes exactly the interim messages plus one final message at the
 *    end of the bytes (for a close-delimited body, at EOF);
 *  - no sanitizer report.
 *
 * Known bugs in upstream.c (not fixed here: the data path is being
 * rewritten; inputs and stacks in tests/fuzz/crashes-found/README.md).
 * Their checks run only with RR_FUZZ_STRICT=1 in the environment, so CI
 * stays green until they are fixed; then drop the switch:
 *  - close-delimited bodies: llhttp_finish runs on_message_complete and
 *    returns its HPE_PAUSED, so `llhttp_finish(..) == HPE_OK` fails and a
 *    body relayed whole is counted as a replica failure (ECONNRESET);
 *  - de-chunking for an HTTP/1.0 client hides only the first
 *    Transfer-Encoding header (http_head_find): with two, the second
 *    ("chunked") is relayed over a de-chunked body. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <llhttp.h>

#include "ringroute/alloc.h"
#include "ringroute/http.h"

#include "harness.h"

static int strict; /* RR_FUZZ_STRICT: check the known bugs too */

/* The fields of struct upstream / struct request that upstream_on_input
 * reads, plus the outcome text and what the client would receive. */
struct sim_up {
	struct http_parser hp;
	struct strbuf *out;
	struct strbuf client;         /* bytes relayed to the client */
	const char *base;
	const char *body_next;        /* next raw body byte must come from here */
	size_t raw, decoded;
	int is_head, http10, wants_close;
	int in_body;                  /* UP_F_IN_BODY */
	int dechunk;
	int eof_body;                 /* the final head said close-delimited */
	int status;                   /* final status, 0 before it */
	uint32_t nte;                 /* Transfer-Encoding headers in the final head */
	unsigned ninterim;
	int ended;                    /* 1 done, -1 failed */
};

/* upstream.c up_on_body: decoded bytes are relayed only when de-chunking. */
static int sim_on_body(llhttp_t *p, const char *at, size_t len)
{
	struct sim_up *u = p->data;
	if (u->dechunk) {
		sb_put(&u->client, at, len);
		u->decoded += len;
	}
	return 0;
}

static llhttp_settings_t sim_settings;

/* upstream.c up_reset_parser. */
static void sim_reset(struct sim_up *u)
{
	llhttp_init(&u->hp.p, HTTP_RESPONSE, &sim_settings);
	u->hp.p.data = u;
	http_head_reset(&u->hp.hd);
	u->in_body = 0;
	u->hp.event = HTTP_EV_NONE;
	u->hp.no_body = u->is_head;
	u->dechunk = 0;
}

/* How many body bytes went out before a failure depends on the splits
 * (they are streamed), so only the reason and, for a parse error, its
 * position are part of the outcome; nothing may have been relayed from at
 * or past that position. */
static void sim_fail(struct sim_up *u, const char *why, const char *at)
{
	if (at) {
		FZ_ASSERT(!u->in_body || u->dechunk || u->body_next <= at, "relayed past the error");
		sb_printf(u->out, "failed %s at %zu\n", why, (size_t)(at - u->base));
	} else {
		sb_printf(u->out, "failed %s\n", why);
	}
	u->ended = -1;
}

static void sim_done(struct sim_up *u, int keep, size_t extra)
{
	/* upstream.c keeps the connection only when nothing else is queued on
	 * it; bytes that arrive later on an idle one close it, so either way
	 * a connection with extra bytes is not reused. */
	sb_printf(u->out, "done raw=%zu decoded=%zu reuse=%d extra=%zu\n", u->raw, u->decoded,
		  keep && !extra, extra);
	u->ended = 1;
}

/* The head is complete (or the message, for a body-less one). Returns 1
 * when it was an interim response and the parser was reset. */
static int sim_on_head(struct sim_up *u, const char *pos)
{
	struct strbuf head = {0};
	uint16_t f = u->hp.p.flags;
	int status = u->hp.p.status_code;
	int eof_body = !(f & (F_CHUNKED | F_CONTENT_LENGTH)) && status >= 200 && status != 204 &&
		       status != 304 && !u->is_head;

	if (status >= 100 && status < 200 && status != 101) {
		http_head_mark_hop(&u->hp.hd);
		FZ_ASSERT(http_write_response_head(&head, &u->hp.hd, &u->hp.p, 0) == 0, "oom");
		sb_printf(u->out, "interim %d %zu\n", status, head.len);
		sb_put(u->out, head.p, head.len);
		sb_put(&u->client, head.p, head.len);
		fz_sb_free(&head);
		u->ninterim++;
		sim_reset(u);
		return 1;
	}
	http_head_mark_hop(&u->hp.hd);
	for (uint32_t i = 0; i < u->hp.hd.nhdrs; i++)
		if (u->hp.hd.hdrs[i].name_len == 17 &&
		    strncasecmp(http_hdr_name(&u->hp.hd, &u->hp.hd.hdrs[i]), "transfer-encoding", 17) == 0)
			u->nte++;
	if (u->http10 && (f & F_CHUNKED)) {
		const struct http_hdr *te = http_head_find(&u->hp.hd, "transfer-encoding");
		u->dechunk = 1;
		eof_body = 1;
		if (te)
			u->hp.hd.hdrs[te - u->hp.hd.hdrs].flags |= HDR_F_HOP;
	}
	FZ_ASSERT(http_write_response_head(&head, &u->hp.hd, &u->hp.p, eof_body || u->wants_close) == 0,
		  "oom");
	u->status = status;
	u->eof_body = eof_body;
	sb_printf(u->out, "head %d eof_body=%d dechunk=%d %zu\n", status, eof_body, u->dechunk,
		  head.len);
	sb_put(u->out, head.p, head.len);
	sb_put(&u->client, head.p, head.len);
	fz_sb_free(&head);
	u->in_body = 1;
	u->body_next = pos;
	return 0;
}

/* upstream_on_input for one receive buffer; rest: input bytes after it. */
static void sim_input(struct sim_up *u, const char *data, size_t len, size_t rest)
{
	while (len && !u->ended) {
		int in_body = u->in_body;
		llhttp_errno_t rc;
		const char *pos;
		size_t used;

		u->hp.event = HTTP_EV_NONE;
		rc = llhttp_execute(&u->hp.p, data, len);
		pos = rc == HPE_OK ? data + len : llhttp_get_error_pos(&u->hp.p);
		if (rc != HPE_OK && rc != HPE_PAUSED) {
			sim_fail(u, llhttp_errno_name(rc), pos);
			return;
		}
		used = (size_t)(pos - data);
		if (in_body && used && !u->dechunk) {
			FZ_ASSERT(data == u->body_next, "raw body not contiguous");
			sb_put(&u->client, data, used);
			u->body_next += used;
			u->raw += used;
		}
		data += used;
		len -= used;
		if (rc == HPE_PAUSED)
			llhttp_resume(&u->hp.p);
		if (u->hp.event == HTTP_EV_HEADERS || (u->hp.event == HTTP_EV_MESSAGE && !in_body)) {
			int ev = u->hp.event;
			if (sim_on_head(u, pos))
				continue;
			if (ev == HTTP_EV_HEADERS) {
				/* A body-less response completes on a zero-length run. */
				u->hp.event = HTTP_EV_NONE;
				rc = llhttp_execute(&u->hp.p, pos, 0);
				if (rc == HPE_PAUSED)
					llhttp_resume(&u->hp.p);
			} else {
				u->hp.event = ev;
			}
		}
		if (u->hp.event == HTTP_EV_MESSAGE) {
			sim_done(u, llhttp_should_keep_alive(&u->hp.p), len + rest);
			return;
		}
	}
}

/* upstream_on_input's EOF branch. */
static void sim_eof(struct sim_up *u)
{
	llhttp_errno_t rc;

	if (u->ended)
		return;
	if (!u->in_body) {
		sim_fail(u, "ECONNRESET before the head", NULL);
		return;
	}
	u->hp.event = HTTP_EV_NONE;
	rc = llhttp_finish(&u->hp.p);
	if (rc == HPE_OK && u->hp.event == HTTP_EV_MESSAGE) {
		sim_done(u, 0, 0);
		return;
	}
	if (strict)
		FZ_ASSERT(!(u->eof_body && u->hp.event == HTTP_EV_MESSAGE),
			  "close-delimited body relayed whole, but EOF fails the exchange "
			  "(llhttp_finish: %s)",
			  llhttp_errno_name(rc));
	sim_fail(u,
		 u->hp.event == HTTP_EV_MESSAGE ? "ECONNRESET at a complete close-delimited body"
						: "ECONNRESET mid-body",
		 NULL);
}

/* The client's view: count complete messages, HEAD-aware. */
struct client_view {
	int is_head;
	unsigned nmsgs;
	int final_status;
};

static int cv_on_headers(llhttp_t *p)
{
	struct client_view *v = p->data;
	return v->is_head && (p->status_code < 100 || p->status_code >= 200) ? 1 : 0;
}

static int cv_on_message(llhttp_t *p)
{
	struct client_view *v = p->data;
	v->nmsgs++;
	v->final_status = p->status_code;
	return 0;
}

/* What the client received must parse as the interim responses plus one
 * final one, ending exactly at the end of the bytes. */
static void check_client_view(const struct sim_up *u)
{
	llhttp_settings_t set;
	llhttp_t p;
	struct client_view v = {u->is_head, 0, 0};
	llhttp_errno_t rc;

	if (u->ended != 1 || u->status == 101)
		return; /* cut short, or the connection now belongs to another protocol */
	if (!strict && u->dechunk && u->nte > 1)
		return; /* known upstream.c bug, see the top of this file */
	llhttp_settings_init(&set);
	set.on_headers_complete = cv_on_headers;
	set.on_message_complete = cv_on_message;
	llhttp_init(&p, HTTP_RESPONSE, &set);
	p.data = &v;
	rc = llhttp_execute(&p, u->client.p ? u->client.p : "", u->client.len);
	if (rc == HPE_OK && u->eof_body)
		rc = llhttp_finish(&p);
	if (rc != HPE_OK || v.nmsgs != u->ninterim + 1 || v.final_status != u->status) {
		fz_dump("client received", u->client.p ? u->client.p : "", u->client.len);
		FZ_ASSERT(0, "client-side parse: %s (%s), %u messages (want %u), final status %d (want %d)",
			  llhttp_errno_name(rc), p.reason ? p.reason : "", v.nmsgs, u->ninterim + 1,
			  v.final_status, u->status);
	}
}

static void run_upstream(const char *data, size_t len, uint8_t req, const struct fz_cuts *cuts,
			 struct strbuf *out)
{
	struct sim_up u;
	size_t start = 0;

	memset(&u, 0, sizeof(u));
	u.out = out;
	u.base = data;
	u.is_head = req & 1;
	u.http10 = (req >> 1) & 1;
	u.wants_close = (req >> 2) & 1;
	sim_reset(&u);
	for (size_t i = 0; i <= cuts->n && !u.ended; i++) {
		size_t end = i < cuts->n ? cuts->at[i] : len;
		sim_input(&u, data + start, end - start, len - end);
		start = end;
	}
	sim_eof(&u);
	FZ_ASSERT(!u.body_next || u.body_next <= data + len, "relayed past the input");
	FZ_ASSERT(u.raw <= len, "relayed more than the input");
	check_client_view(&u);
	fz_sb_free(&u.client);
	http_head_free(&u.hp.hd);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *e = getenv("RR_FUZZ_STRICT");
	(void)argc;
	(void)argv;
	strict = e && *e && strcmp(e, "0") != 0;
	http_settings_init(&sim_settings);
	sim_settings.on_body = sim_on_body;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct strbuf whole = {0}, split = {0};
	struct fz_cuts none = {0}, cuts;

	if (size < 3)
		return 0;
	fz_cuts_pick(data[1], data[2], size - 3, &cuts);
	run_upstream((const char *)data + 3, size - 3, data[0], &none, &whole);
	run_upstream((const char *)data + 3, size - 3, data[0], &cuts, &split);
	fz_expect_same(&whole, &split, &cuts);
	fz_sb_free(&whole);
	fz_sb_free(&split);
	return 0;
}
