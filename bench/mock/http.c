/* mock-replica: requests and their parsing (llhttp callbacks): the request
 * free list, X-Mock-* overrides, what kind of request it is, its delay. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <ctype.h>
#include <strings.h>

#include "mock.h"

/* --------------------------------------------------------------- requests */

/* A clean request from the loop's free list (or the heap), with the
 * defaults of the command line. NULL when out of memory. */
struct req *req_get(struct mock_loop *l)
{
	const struct mock_opts *o = &l->ctx->opt;
	struct req *r;
	char *scratch = NULL;
	struct mock_hdr *hdrs = NULL;
	uint32_t scap = 0, hcap = 0;
	struct llm_seq keep = { 0 };

	if (!list_empty(&l->free_reqs)) {
		r = container_of(list_pop_front(&l->free_reqs), struct req, node);
		scratch = r->scratch;
		scap = r->scratch_cap;
		hdrs = r->hdrs;
		hcap = r->hdr_cap;
		keep = r->llm;
	} else {
		r = malloc(sizeof(*r));
		if (!r)
			return NULL;
	}
	memset(r, 0, sizeof(*r));
	list_init(&r->node);
	r->scratch = scratch;
	r->scratch_cap = scap;
	r->hdrs = hdrs;
	r->hdr_cap = hcap;
	r->llm.body = keep.body;
	r->llm.body_cap = keep.body_cap;
	r->llm.prompt = keep.prompt;
	r->llm.prompt_cap = keep.prompt_cap;
	r->llm.hashes = keep.hashes;
	r->llm.hash_cap = keep.hash_cap;
	list_init(&r->llm.node);
	r->timer.idx = -1;
	r->timer.kind = TIMER_REQ;
	r->status = o->status;
	r->chunks = o->chunks;
	r->interval_ns = l->ctx->interval_ns;
	r->size = o->size;
	return r;
}

/* Give r (unlinked, timer disarmed) back to the free list. */
void req_put(struct mock_loop *l, struct req *r)
{
	assert(r->timer.idx < 0);
	if (r->scratch_cap > MOCK_KEEP_SCRATCH) {
		free(r->scratch);
		r->scratch = NULL;
		r->scratch_cap = 0;
	}
	if (r->hdr_cap > 64) {
		free(r->hdrs);
		r->hdrs = NULL;
		r->hdr_cap = 0;
	}
	llm_req_recycle(r, 1);
	list_push_front(&l->free_reqs, &r->node);
}

/* Remove r from its connection, releasing its share of inflight if it still
 * holds one (the connection died before the response was written). */
void req_release(struct mock_loop *l, struct conn *c, struct req *r)
{
	heap_remove(l, &r->timer);
	if (r->kind == REQ_LLM)
		llm_abort(l, r);
	if (r->flags & REQ_FL_ACCOUNTED)
		req_account(l->ctx, r, -1);
	if (r->flags & REQ_FL_COUNTED)
		atomic_fetch_sub_explicit(&l->ctx->inflight, 1, memory_order_relaxed);
	list_del_init(&r->node);
	c->nreq--;
	if (c->cur == r)
		c->cur = NULL;
	req_put(l, r);
}

/* Append parser bytes to r's scratch. Returns 0, or -1 (llhttp's HPE_USER)
 * with err_status set when the head is too large or memory ran out. */
static int req_append(struct req *r, const char *at, size_t len)
{
	size_t need = (size_t)r->scratch_len + len;

	if (need > MOCK_MAX_HEAD) {
		r->err_status = 431;
		return -1;
	}
	if (need > r->scratch_cap) {
		size_t cap = r->scratch_cap;
		char *buf = r->scratch;
		if (buf_reserve(&buf, &cap, need) < 0) {
			r->err_status = 400;
			return -1;
		}
		r->scratch = buf;
		r->scratch_cap = (uint32_t)cap;
	}
	memcpy(r->scratch + r->scratch_len, at, len);
	r->scratch_len += (uint32_t)len;
	return 0;
}

/* Apply one X-Mock-* header (name already lowercased). Unparseable or out of
 * range values are ignored: the command line default stays. */
static void req_override(struct req *r, const char *name, size_t nlen, const char *val,
			 size_t vlen)
{
	char buf[32], *end;
	double v;

	if (nlen <= 7 || memcmp(name, "x-mock-", 7) != 0)
		return;
	name += 7;
	nlen -= 7;
	while (vlen && (val[vlen - 1] == ' ' || val[vlen - 1] == '\t'))
		vlen--;
	if (vlen == 0 || vlen >= sizeof(buf))
		return;
	memcpy(buf, val, vlen);
	buf[vlen] = '\0';
	v = strtod(buf, &end);
	while (*end == ' ' || *end == '\t')
		end++;
	if (end == buf || *end || !(v >= 0) || v > 1e12)
		return;

#define IS(lit) (nlen == sizeof(lit) - 1 && memcmp(name, lit, nlen) == 0)
	if (IS("delay-ms")) {
		r->delay_ns = ms_to_ns(v);
		r->flags |= REQ_FL_DELAY_SET;
	} else if (IS("status")) {
		if (v >= 200 && v <= 599)
			r->status = (unsigned)v;
	} else if (IS("chunks")) {
		if (v <= 1000000)
			r->chunks = (unsigned)v;
	} else if (IS("chunk-interval-ms")) {
		r->interval_ns = ms_to_ns(v);
	} else if (IS("size")) {
		if (v <= (double)(1u << 30))
			r->size = (uint64_t)v;
	} else if (IS("close")) {
		if (v != 0)
			r->flags |= REQ_FL_LAST;
	} else if (IS("reset")) {
		if (v != 0)
			r->flags |= REQ_FL_RESET;
	} else if (IS("no-body")) {
		if (v != 0)
			r->flags |= REQ_FL_NO_BODY;
	}
#undef IS
}

/* ------------------------------------------------------- llhttp callbacks */

/* Answer Expect: 100-continue at once when nothing before r is still to be
 * produced (an interim response may not overtake earlier responses; if it
 * cannot go now the client just sends the body after its own timeout). */
static void req_maybe_continue(struct conn *c, struct req *r)
{
	static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
	char *p;

	if ((r->flags & (REQ_FL_HTTP10 | REQ_FL_RESET)) || llhttp_get_http_major(&c->parser) != 1)
		return;
	for (struct list *pos = c->reqs.next; pos != &r->node; pos = pos->next)
		if (container_of(pos, struct req, node)->state != RS_FLUSHING)
			return;
	p = out_reserve(c, sizeof(cont) - 1);
	if (p)
		out_commit(c, put(p, cont, sizeof(cont) - 1));
}

static int on_message_begin(llhttp_t *p)
{
	struct conn *c = p->data;
	struct req *r = req_get(c->loop);

	if (!r)
		return -1;
	r->conn = c;
	list_push_back(&c->reqs, &r->node);
	c->nreq++;
	c->cur = r;
	return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
	struct conn *c = p->data;
	struct req *r = c->cur;

	if (req_append(r, at, len) < 0)
		return -1;
	r->url_len += (uint32_t)len;
	return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
	struct conn *c = p->data;
	struct req *r = c->cur;
	struct mock_hdr *h;

	if (!(r->flags & REQ_FL_IN_FIELD)) {
		if (r->nhdr >= MOCK_MAX_HDRS) {
			r->err_status = 431;
			return -1;
		}
		if (r->nhdr == r->hdr_cap) {
			uint32_t ncap = r->hdr_cap ? r->hdr_cap * 2 : 16;
			struct mock_hdr *nh = realloc(r->hdrs, ncap * sizeof(*nh));
			if (!nh)
				return -1;
			r->hdrs = nh;
			r->hdr_cap = ncap;
		}
		h = &r->hdrs[r->nhdr++];
		h->name_off = r->scratch_len;
		h->name_len = 0;
		h->val_off = r->scratch_len;
		h->val_len = 0;
		r->flags |= REQ_FL_IN_FIELD;
	}
	h = &r->hdrs[r->nhdr - 1];
	if (req_append(r, at, len) < 0)
		return -1;
	h->name_len += (uint32_t)len;
	return 0;
}

static int on_header_field_complete(llhttp_t *p)
{
	struct conn *c = p->data;
	struct req *r = c->cur;
	struct mock_hdr *h;

	if (!r->nhdr)
		return 0;
	h = &r->hdrs[r->nhdr - 1];
	for (uint32_t i = 0; i < h->name_len; i++) {
		char *ch = &r->scratch[h->name_off + i];
		*ch = (char)tolower((unsigned char)*ch);
	}
	h->val_off = r->scratch_len;
	r->flags &= ~REQ_FL_IN_FIELD;
	return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
	struct conn *c = p->data;
	struct req *r = c->cur;

	if (!r->nhdr)
		return 0;
	if (req_append(r, at, len) < 0)
		return -1;
	r->hdrs[r->nhdr - 1].val_len += (uint32_t)len;
	return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
	struct conn *c = p->data;
	struct req *r = c->cur;
	struct mock_hdr *h;

	if (!r->nhdr)
		return 0;
	h = &r->hdrs[r->nhdr - 1];
	/* llhttp strips leading whitespace only; a field value has none either end */
	while (h->val_len && (r->scratch[h->val_off + h->val_len - 1] == ' ' ||
			      r->scratch[h->val_off + h->val_len - 1] == '\t'))
		h->val_len--;
	if (h->name_len == 6 && memcmp(r->scratch + h->name_off, "expect", 6) == 0 &&
	    h->val_len == 12 && strncasecmp(r->scratch + h->val_off, "100-continue", 12) == 0)
		r->flags |= REQ_FL_EXPECT;
	else if (h->name_len > 7 && r->scratch[h->name_off] == 'x')
		req_override(r, r->scratch + h->name_off, h->name_len, r->scratch + h->val_off,
			     h->val_len);
	else if (c->loop->ctx->opt.llm)
		llm_on_header(r, r->scratch + h->name_off, h->name_len, r->scratch + h->val_off,
			      h->val_len);
	return 0;
}

static int path_is(const struct req *r, const char *path)
{
	size_t n = strlen(path), len = r->url_len;

	for (size_t i = 0; i < r->url_len; i++) {
		if (r->scratch[i] == '?') {
			len = i;
			break;
		}
	}
	return len == n && memcmp(r->scratch, path, n) == 0;
}

static int on_headers_complete(llhttp_t *p)
{
	struct conn *c = p->data;
	struct req *r = c->cur;
	struct mock_ctx *ctx = c->loop->ctx;
	int get = 0;

	r->method = llhttp_get_method(p);
	if (r->method == HTTP_HEAD)
		r->flags |= REQ_FL_HEAD;
	get = r->method == HTTP_GET || r->method == HTTP_HEAD;
	if (llhttp_get_http_major(p) == 1 && llhttp_get_http_minor(p) == 0)
		r->flags |= REQ_FL_HTTP10;
	if (!llhttp_should_keep_alive(p))
		r->flags |= REQ_FL_LAST;
	else if (r->flags & REQ_FL_HTTP10)
		r->flags |= REQ_FL_KA_HDR;

	if (r->url_len >= 3 && memcmp(r->scratch, "/-/", 3) == 0) {
		if (get && path_is(r, "/-/stats"))
			r->kind = REQ_STATS;
		else if (r->method == HTTP_POST && path_is(r, "/-/stats/reset"))
			r->kind = REQ_STATS_RESET;
		else if (get && path_is(r, "/-/healthz"))
			r->kind = REQ_HEALTHZ;
	}
	if (ctx->opt.llm && r->kind == REQ_NORMAL)
		r->kind = (uint8_t)llm_classify(r, r->method, r->scratch, r->url_len);
	if (r->kind == REQ_NORMAL || r->kind == REQ_LLM) {
		r->inflight_at = stats_inflight_inc(ctx);
		r->flags |= REQ_FL_COUNTED;
	}
	c->nparsed++;
	if (ctx->opt.close_after && c->nparsed >= ctx->opt.close_after)
		r->flags |= REQ_FL_LAST;
	if (r->flags & REQ_FL_EXPECT)
		req_maybe_continue(c, r);
	return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
	struct conn *c = p->data;

	c->cur->body_len += len;
	if (c->cur->kind == REQ_LLM)
		llm_on_body(c->cur, at, len);
	return 0;
}

static int on_message_complete(llhttp_t *p)
{
	struct conn *c = p->data;
	struct mock_loop *l = c->loop;
	struct mock_ctx *ctx = l->ctx;
	struct req *r = c->cur;
	uint64_t delay = 0;

	c->cur = NULL;
	if (r->kind == REQ_NORMAL && !(r->flags & REQ_FL_RESET)) {
		if (r->flags & REQ_FL_DELAY_SET) {
			delay = r->delay_ns;
		} else if (ctx->jitter_ns) {
			double d = (double)ctx->delay_ns + (2.0 * loop_rand(l) - 1.0) * (double)ctx->jitter_ns;
			delay = d > 0 ? (uint64_t)d : 0;
		} else {
			delay = ctx->delay_ns;
		}
	}
	r->state = RS_READY;
	if (r->kind == REQ_LLM && !(r->flags & REQ_FL_RESET))
		llm_submit(l, r); /* RS_LLM, or RS_READY with an error to answer */
	if (delay) {
		r->timer.deadline = l->now + delay;
		if (heap_push(l, &r->timer) == 0)
			r->state = RS_WAITING;
	}
	if (r->flags & (REQ_FL_LAST | REQ_FL_RESET)) {
		/* Nothing after this request will be answered: stop the parser here. */
		c->flags |= CONN_FL_NO_READ;
		return HPE_PAUSED;
	}
	return 0;
}

/* The parser callbacks of every connection (one settings block per process). */
void http_settings_init(llhttp_settings_t *s)
{
	llhttp_settings_init(s);
	s->on_message_begin = on_message_begin;
	s->on_url = on_url;
	s->on_header_field = on_header_field;
	s->on_header_field_complete = on_header_field_complete;
	s->on_header_value = on_header_value;
	s->on_header_value_complete = on_header_value_complete;
	s->on_headers_complete = on_headers_complete;
	s->on_body = on_body;
	s->on_message_complete = on_message_complete;
}
