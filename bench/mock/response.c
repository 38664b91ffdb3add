/* mock-replica: producing responses into a connection's output buffer
 * (echo JSON bodies, SSE chunks, control endpoints, errors). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mock.h"

/* ---------------------------------------------------------------- output */

/* Room for n more bytes at the end of c->out, compacting or growing it.
 * Returns where to write, or NULL when out of memory. */
char *out_reserve(struct conn *c, size_t n)
{
	if (c->out_len + n > c->out_cap) {
		if (c->out_off) {
			memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
			c->out_len -= c->out_off;
			c->out_off = 0;
		}
		if (buf_reserve(&c->out, &c->out_cap, c->out_len + n) < 0)
			return NULL;
	}
	return c->out + c->out_len;
}

void out_commit(struct conn *c, char *end)
{
	size_t n = (size_t)(end - (c->out + c->out_len));

	c->out_len += n;
	c->out_queued += n;
}

/* r's response is now fully queued. */
void req_queued(struct conn *c, struct req *r)
{
	r->end_mark = c->out_queued;
	r->state = RS_FLUSHING;
	if (r->flags & REQ_FL_LAST)
		c->flags |= CONN_FL_CLOSING;
}

/* A response head is put_status(), the caller's entity headers, then
 * put_head_end(); together they need MOCK_HEAD_MAX bytes. */
char *put_status(char *p, unsigned status)
{
	const char *reason = status_reason(status);

	p = PUTS(p, "HTTP/1.1 ");
	p = put_u64(p, status);
	*p++ = ' ';
	p = put(p, reason, strlen(reason));
	return PUTS(p, "\r\n");
}

char *put_head_end(struct mock_ctx *ctx, char *p, const struct req *r)
{
	p = PUTS(p, "X-Mock-Id: ");
	p = put(p, ctx->opt.id, ctx->id_len);
	p = PUTS(p, "\r\n");
	if (r->flags & REQ_FL_LAST)
		p = PUTS(p, "Connection: close\r\n");
	else if (r->flags & REQ_FL_KA_HDR)
		p = PUTS(p, "Connection: keep-alive\r\n");
	return PUTS(p, "\r\n");
}

/* Queue a complete small JSON response (control endpoints, errors). */
int emit_simple(struct mock_ctx *ctx, struct conn *c, struct req *r, unsigned status,
		       const char *body, size_t blen)
{
	char *p = out_reserve(c, MOCK_HEAD_MAX(ctx) + blen);

	if (!p)
		return -ENOMEM;
	p = put_status(p, status);
	p = PUTS(p, "Content-Type: application/json\r\nContent-Length: ");
	p = put_u64(p, blen);
	p = PUTS(p, "\r\n");
	p = put_head_end(ctx, p, r);
	if (!(r->flags & REQ_FL_HEAD))
		p = put(p, body, blen);
	out_commit(c, p);
	req_queued(c, r);
	return 0;
}

/* Build the JSON body of a normal response in l->tmp, without its closing
 * brace. Returns its length, or -ENOMEM. */
static ssize_t build_body(struct mock_loop *l, const struct req *r)
{
	struct mock_ctx *ctx = l->ctx;
	const char *method = llhttp_method_name(r->method);
	size_t mlen = strlen(method);
	size_t need = 192 + ctx->id_json_len + mlen + 6 * (size_t)r->scratch_len + 8 * (size_t)r->nhdr;
	char *p;

	if (buf_reserve(&l->tmp, &l->tmp_cap, need) < 0)
		return -ENOMEM;
	p = l->tmp;
	p = PUTS(p, "{\"id\":");
	p = put(p, ctx->id_json, ctx->id_json_len);
	p = PUTS(p, ",\"method\":\"");
	p = put_json_str(p, method, mlen);
	p = PUTS(p, "\",\"path\":\"");
	p = put_json_str(p, r->scratch, r->url_len);
	p = PUTS(p, "\",\"body_len\":");
	p = put_u64(p, r->body_len);
	p = PUTS(p, ",\"inflight\":");
	p = put_i64(p, r->inflight_at);
	p = PUTS(p, ",\"headers\":{");
	for (uint32_t i = 0, first = 1; i < r->nhdr; i++) {
		const struct mock_hdr *h = &r->hdrs[i];
		const char *name = r->scratch + h->name_off;
		uint32_t j;

		for (j = 0; j < i; j++)
			if (r->hdrs[j].name_len == h->name_len &&
			    memcmp(r->scratch + r->hdrs[j].name_off, name, h->name_len) == 0)
				break;
		if (j < i)
			continue; /* joined into the first one already */
		if (!first)
			*p++ = ',';
		first = 0;
		*p++ = '"';
		p = put_json_str(p, name, h->name_len);
		p = PUTS(p, "\":\"");
		p = put_json_str(p, r->scratch + h->val_off, h->val_len);
		for (j = i + 1; j < r->nhdr; j++) {
			const struct mock_hdr *d = &r->hdrs[j];
			if (d->name_len == h->name_len &&
			    memcmp(r->scratch + d->name_off, name, h->name_len) == 0) {
				p = PUTS(p, ", ");
				p = put_json_str(p, r->scratch + d->val_off, d->val_len);
			}
		}
		*p++ = '"';
	}
	*p++ = '}';
	return p - l->tmp;
}

/* One SSE event, framed as a chunk unless the request was HTTP/1.0. Needs
 * MOCK_CHUNK_MAX bytes at p. */
static char *put_chunk(struct mock_ctx *ctx, char *p, const struct req *r, unsigned seq)
{
	char num[24];
	size_t nlen = (size_t)(put_u64(num, seq) - num);
	size_t dlen = sizeof("data: {\"id\":") - 1 + ctx->id_json_len + sizeof(",\"seq\":") - 1 +
		      nlen + sizeof("}\n\n") - 1;
	int framed = !(r->flags & REQ_FL_HTTP10);

	if (framed) {
		p = put_hex(p, dlen);
		p = PUTS(p, "\r\n");
	}
	p = PUTS(p, "data: {\"id\":");
	p = put(p, ctx->id_json, ctx->id_json_len);
	p = PUTS(p, ",\"seq\":");
	p = put(p, num, nlen);
	p = PUTS(p, "}\n\n");
	if (framed)
		p = PUTS(p, "\r\n");
	return p;
}

/* Queue the next chunk of a streaming response; after the last one, the
 * terminator (and the response is then fully queued). Returns 0/-ENOMEM. */
int emit_next_chunk(struct mock_loop *l, struct conn *c, struct req *r)
{
	struct mock_ctx *ctx = l->ctx;
	char *p = out_reserve(c, MOCK_CHUNK_MAX(ctx) + 8);

	if (!p)
		return -ENOMEM;
	p = put_chunk(ctx, p, r, r->seq++);
	if (r->seq >= r->chunks) {
		if (!(r->flags & REQ_FL_HTTP10))
			p = PUTS(p, "0\r\n\r\n");
		out_commit(c, p);
		req_queued(c, r);
		return 0;
	}
	out_commit(c, p);
	r->state = RS_STREAMING;
	r->timer.deadline = (r->timer.deadline > l->now ? r->timer.deadline : l->now) + r->interval_ns;
	return heap_push(l, &r->timer);
}

/* Queue the response of a normal request (or its first chunk). */
static int emit_normal(struct mock_loop *l, struct conn *c, struct req *r)
{
	struct mock_ctx *ctx = l->ctx;
	unsigned st = r->status;
	int no_len = st == 204 || st == 304;
	int no_body = no_len || (r->flags & REQ_FL_NO_BODY);
	int chunked = !no_body && r->chunks > 0;
	int send_body = !(r->flags & REQ_FL_HEAD);
	size_t base = 0, padn = 0, blen = 0, need;
	char *p;

	if (chunked && (r->flags & REQ_FL_HTTP10) && !(r->flags & REQ_FL_LAST)) {
		/* No chunked framing in 1.0: the close ends the body, so nothing
		 * after this request will be answered. */
		r->flags |= REQ_FL_LAST;
		c->flags |= CONN_FL_NO_READ;
		while (c->reqs.prev != &r->node)
			req_release(l, c, container_of(c->reqs.prev, struct req, node));
	}
	if (!no_body && !chunked) {
		ssize_t n = build_body(l, r);
		if (n < 0)
			return (int)n;
		base = (size_t)n;
		blen = base + 1;
		if (r->size > blen) {
			size_t room = (size_t)r->size - blen;
			padn = room > 9 ? room - 9 : 0; /* ,"pad":"" is 9 bytes */
			blen += 9 + padn;
		}
	}
	need = MOCK_HEAD_MAX(ctx) + (send_body ? blen : 0) + (chunked ? MOCK_CHUNK_MAX(ctx) + 8 : 0);
	p = out_reserve(c, need);
	if (!p)
		return -ENOMEM;
	p = put_status(p, st);
	if (chunked) {
		p = PUTS(p, "Content-Type: text/event-stream\r\nCache-Control: no-cache\r\n");
		if (!(r->flags & REQ_FL_HTTP10))
			p = PUTS(p, "Transfer-Encoding: chunked\r\n");
	} else if (!no_len) {
		if (!no_body)
			p = PUTS(p, "Content-Type: application/json\r\n");
		p = PUTS(p, "Content-Length: ");
		p = put_u64(p, blen);
		p = PUTS(p, "\r\n");
	}
	p = put_head_end(ctx, p, r);
	if (!send_body || no_body) {
		out_commit(c, p);
		req_queued(c, r);
		return 0;
	}
	if (chunked) {
		out_commit(c, p);
		r->timer.deadline = l->now;
		return emit_next_chunk(l, c, r);
	}
	p = put(p, l->tmp, base);
	if (blen > base + 1) {
		p = PUTS(p, ",\"pad\":\"");
		memset(p, 'x', padn);
		p += padn;
		*p++ = '"';
	}
	*p++ = '}';
	out_commit(c, p);
	req_queued(c, r);
	return 0;
}

/* Queue r's response (r is READY and every earlier response is queued). */
int emit(struct mock_loop *l, struct conn *c, struct req *r)
{
	struct mock_ctx *ctx = l->ctx;
	char buf[256], *p = buf;

	switch (r->kind) {
	case REQ_NORMAL:
		return emit_normal(l, c, r);
	case REQ_LLM:
	case REQ_METRICS:
	case REQ_MODELS:
	case REQ_LLM_RESET:
		return llm_emit_simple(l, c, r);
	case REQ_STATS_RESET:
		atomic_store_explicit(&ctx->served, 0, memory_order_relaxed);
		atomic_store_explicit(&ctx->max_inflight, 0, memory_order_relaxed);
		/* fall through */
	case REQ_STATS: {
		int64_t served = atomic_load_explicit(&ctx->served, memory_order_relaxed);
		char *body = l->tmp;
		if (buf_reserve(&l->tmp, &l->tmp_cap, ctx->id_json_len + 128) < 0)
			return -ENOMEM;
		body = p = l->tmp;
		p = PUTS(p, "{\"id\":");
		p = put(p, ctx->id_json, ctx->id_json_len);
		p = PUTS(p, ",\"served\":");
		p = put_i64(p, served > 0 ? served : 0);
		p = PUTS(p, ",\"max_inflight\":");
		p = put_i64(p, atomic_load_explicit(&ctx->max_inflight, memory_order_relaxed));
		p = PUTS(p, ",\"inflight\":");
		p = put_i64(p, atomic_load_explicit(&ctx->inflight, memory_order_relaxed));
		*p++ = '}';
		return emit_simple(ctx, c, r, 200, body, (size_t)(p - body));
	}
	case REQ_HEALTHZ:
		p = PUTS(p, "{\"ok\":true}");
		return emit_simple(ctx, c, r, 200, buf, (size_t)(p - buf));
	case REQ_ERROR:
	default:
		if (r->status == 431)
			p = PUTS(p, "{\"error\":\"request header fields too large\"}");
		else
			p = PUTS(p, "{\"error\":\"bad request\"}");
		return emit_simple(ctx, c, r, r->status, buf, (size_t)(p - buf));
	}
}
