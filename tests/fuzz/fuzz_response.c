/* Fuzz target: a replica's response as ringroute reads it and relays it to
 * an HTTP/1.1 client: the real upstream_parse / upstream_parse_eof
 * (src/upstream.c: head and body framing, 1xx, 101, 204/304/HEAD) driving
 * an owner whose events write what the client gets with the real
 * h1_response_head (src/h1.c: hop-by-hop headers, 204 without
 * Content-Length, de-chunking for HTTP/1.0, Connection: close).
 *
 * Feeds: data[0] describes the request: bit 0 it was HEAD, bit 1 the
 * client speaks HTTP/1.0 (a chunked body is de-chunked and
 * close-delimited), bit 2 the client will close (Connection: close), bit 3
 * it sent Expect: 100-continue; data[1] and data[2] choose the
 * receive-buffer splits (harness.h); data[3..] is what the replica sent,
 * then EOF.
 *
 * Asserts:
 *  - whole and split feeding agree on the outcome (every relayed head byte
 *    for byte, body byte counts, how the exchange ended, whether the
 *    connection could be reused);
 *  - relayed raw body bytes are one contiguous run of the input right
 *    after the final head, never more than the input holds;
 *  - what the client receives frames itself: a fresh response parser
 *    (told the request was HEAD) reads the relayed bytes without error and
 *    completes exactly the forwarded 100 (if any) plus one final message
 *    at the end of the bytes (for a close-delimited body, at EOF);
 *  - no 101 and no more than REQ_MAX_INTERIM interim heads are accepted;
 *  - no sanitizer report. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <llhttp.h>

#include "ringroute/alloc.h"
#include "ringroute/h1.h"
#include "ringroute/http.h"
#include "ringroute/request.h"
#include "ringroute/upstream.h"

#include "harness.h"

/* The owner of one exchange: what a request and its HTTP/1.1 client
 * would do with the events, recorded. */
struct owner {
	struct upstream up;
	struct strbuf *out;           /* outcome text */
	struct strbuf client;         /* bytes relayed to the client */
	const char *base;
	const char *body_next;        /* next raw body byte must come from here */
	size_t raw, decoded;
	bool is_head, http10, close, expect;
	int mode;                     /* enum up_body_mode of the final head */
	int status;                   /* final status, 0 before it */
	unsigned ninterim, nforwarded;
	int ended;                    /* 1 done, -1 failed */
};

static int ow_on_head(struct shard *s, void *o, const struct resp_head *rh)
{
	struct owner *w = o;
	struct strbuf head = {0};

	(void)s;
	FZ_ASSERT(rh->status >= 200, "final head with status %d", rh->status);
	w->mode = h1_response_head(&head, rh, w->http10, w->is_head, "0123456789abcdef", &w->close);
	FZ_ASSERT(w->mode >= 0, "out of memory");
	w->status = rh->status;
	sb_printf(w->out, "head %d mode=%d close=%d %zu\n", rh->status, w->mode, w->close, head.len);
	sb_put(w->out, head.p, head.len);
	sb_put(&w->client, head.p, head.len);
	fz_sb_free(&head);
	return w->mode;
}

static int ow_on_interim(struct shard *s, void *o, const struct resp_head *rh)
{
	static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
	struct owner *w = o;

	(void)s;
	FZ_ASSERT(rh->status >= 100 && rh->status < 200 && rh->status != 101, "interim %d",
		  rh->status);
	if (++w->ninterim > REQ_MAX_INTERIM) {
		sb_printf(w->out, "failed: too many interim responses\n");
		w->ended = -1;
		return -1; /* the request fails with 502 */
	}
	sb_printf(w->out, "interim %d\n", rh->status);
	if (rh->status == 100 && w->expect && !w->status) {
		sb_put(&w->client, cont, sizeof(cont) - 1);
		w->nforwarded++;
	}
	return 0;
}

static void ow_on_body(struct shard *s, void *o, uint32_t bid, const char *p, size_t len)
{
	struct owner *w = o;

	(void)s, (void)bid;
	if (w->mode == UP_BODY_RAW) {
		FZ_ASSERT(p == w->body_next, "raw body not contiguous: %zd",
			  (ssize_t)(p - w->body_next));
		w->body_next += len;
		w->raw += len;
	} else {
		w->decoded += len;
	}
	sb_put(&w->client, p, len);
}

static void ow_unused(struct shard *s, void *o)
{
	(void)s, (void)o;
}

static void ow_on_failed(struct shard *s, void *o, enum up_failure f, int reused)
{
	(void)s, (void)o, (void)f, (void)reused;
}

static size_t ow_pending(const void *o)
{
	(void)o;
	return 0;
}

static bool ow_body_done(const void *o)
{
	(void)o;
	return true;
}

static const struct upstream_events ow_events = {
	.on_head = ow_on_head,
	.on_interim = ow_on_interim,
	.on_body = ow_on_body,
	.on_end = ow_unused,
	.on_failed = ow_on_failed,
	.on_drained = ow_unused,
	.on_gone = ow_unused,
	.pending = ow_pending,
	.body_done = ow_body_done,
};

/* The client's view: count complete messages, HEAD-aware. */
struct client_view {
	int is_head;
	unsigned nmsgs;
	int final_status;
};

/* A conforming client (RFC 9112 6.3): no body after a 1xx, 204 or 304,
 * nor after the head of a response to HEAD. Plain llhttp leaves that to
 * its user (Node.js does it in its http module). */
static int cv_on_headers(llhttp_t *p)
{
	struct client_view *v = p->data;
	int st = p->status_code;
	return v->is_head || (st >= 100 && st < 200) || st == 204 || st == 304 ? 1 : 0;
}

static int cv_on_message(llhttp_t *p)
{
	struct client_view *v = p->data;
	v->nmsgs++;
	v->final_status = p->status_code;
	return 0;
}

/* What the client received must parse as the forwarded 100 plus one final
 * response, ending exactly at the end of the bytes. */
static void check_client_view(const struct owner *w)
{
	llhttp_settings_t set;
	llhttp_t p;
	struct client_view v = {w->is_head, 0, 0};
	llhttp_errno_t rc;

	if (w->ended != 1)
		return; /* the exchange failed: the client gets 502 or is cut */
	llhttp_settings_init(&set);
	set.on_headers_complete = cv_on_headers;
	set.on_message_complete = cv_on_message;
	llhttp_init(&p, HTTP_RESPONSE, &set);
	p.data = &v;
	rc = llhttp_execute(&p, w->client.p ? w->client.p : "", w->client.len);
	if (rc == HPE_OK && w->close)
		rc = llhttp_finish(&p);
	if (rc != HPE_OK || v.nmsgs != w->nforwarded + 1 || v.final_status != w->status) {
		fz_dump("client received", w->client.p ? w->client.p : "", w->client.len);
		FZ_ASSERT(0, "client-side parse: %s (%s), %u messages (want %u), final status %d (want %d)",
			  llhttp_errno_name(rc), p.reason ? p.reason : "", v.nmsgs, w->nforwarded + 1,
			  v.final_status, w->status);
	}
}

/* Feed one receive buffer the way up_on_input does. */
static void feed(struct owner *w, const char *data, size_t len, size_t rest)
{
	while (len && !w->ended) {
		int had_head = w->status != 0;
		uint32_t used;
		enum up_step st = upstream_parse(NULL, &w->up, data, (uint32_t)len, BID_NONE, &used);

		FZ_ASSERT(used <= len, "consumed %u of %zu", used, len);
		if (st == UP_STEP_FAIL) {
			sb_printf(w->out, "failed: invalid response\n");
			w->ended = -1;
			return;
		}
		if (st == UP_STEP_GONE)
			return; /* recorded by the event that ended it */
		data += used;
		len -= used;
		if (!had_head && w->status)
			w->body_next = data; /* the raw body starts right after the head */
		if (st == UP_STEP_END) {
			/* Bytes after the response close the connection (up_finish
			 * pools only an empty one). */
			sb_printf(w->out, "done raw=%zu decoded=%zu reuse=%d extra=%zu\n", w->raw,
				  w->decoded, llhttp_should_keep_alive(&w->up.hp.p) && !len && !rest,
				  len + rest);
			w->ended = 1;
			return;
		}
	}
}

static void run_upstream(const char *data, size_t len, uint8_t req, const struct fz_cuts *cuts,
			 struct strbuf *out)
{
	struct owner w;
	size_t start = 0;

	memset(&w, 0, sizeof(w));
	w.out = out;
	w.base = data;
	w.is_head = req & 1;
	w.http10 = (req >> 1) & 1;
	w.close = (req >> 2) & 1;
	w.expect = (req >> 3) & 1;
	w.up.ev = &ow_events;
	w.up.owner = &w;
	upstream_parser_reset(&w.up, w.is_head);
	for (size_t i = 0; i <= cuts->n && !w.ended; i++) {
		size_t end = i < cuts->n ? cuts->at[i] : len;

		feed(&w, data + start, end - start, len - end);
		start = end;
	}
	if (!w.ended) {
		if (upstream_parse_eof(&w.up) == UP_STEP_END) {
			sb_printf(out, "done at EOF raw=%zu decoded=%zu\n", w.raw, w.decoded);
			w.ended = 1;
		} else {
			sb_printf(out, "failed: reset %s\n", w.status ? "mid-body" : "before the head");
			w.ended = -1;
		}
	}
	FZ_ASSERT(w.raw <= len, "relayed more than the input");
	check_client_view(&w);
	fz_sb_free(&w.client);
	http_head_free(&w.up.hp.hd);
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
