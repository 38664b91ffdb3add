/* mock-replica: a fast HTTP/1.1 server that stands in for a GPU model server
 * in the tests, the demo and the benchmarks.
 *
 * One process, --threads N event loops (default 1), each with its own
 * SO_REUSEPORT listener, epoll set (level triggered) and timer heap. Requests
 * are parsed with llhttp; keep-alive and pipelining are supported and
 * responses always leave in request order. A request may be delayed (service
 * time), answered with a padded JSON body, or streamed as SSE chunks; request
 * headers X-Mock-* override the command line per request (see usage()).
 *
 * What the counters mean (GET /-/stats): a non-control request is in flight
 * from the moment its headers are parsed until its response has been handed
 * to the kernel in full, or its connection died. "served" counts responses
 * handed over in full. Control requests (/-/stats, /-/stats/reset,
 * /-/healthz) and 400/431 answers count in neither.
 *
 * A client that half-closes (EOF) while one of its requests is still being
 * served aborts that work, as with nginx; only output already produced is
 * flushed before the close.
 *
 * The only mutable state shared by the loops is the stats block of the one
 * struct mock_ctx, made of atomics. Everything else belongs to one loop.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <llhttp.h>

#include "ringroute/list.h"

#define MOCK_READ_BUF      (64 * 1024)  /* one read() per event, into a per-loop buffer */
#define MOCK_OUT_HIGH      (256 * 1024) /* above this much unsent output: stop emitting and reading */
#define MOCK_MAX_PIPELINE  256          /* stop reading when this many requests wait on a connection */
#define MOCK_MAX_HEAD      (64 * 1024)  /* request target + header bytes, else 431 */
#define MOCK_MAX_HDRS      512          /* header lines, else 431 */
#define MOCK_MAX_EVENTS    256
#define MOCK_MAX_ID        200
#define MOCK_LINGER_NS     (2ull * 1000 * 1000 * 1000)
#define MOCK_KEEP_SCRATCH  (16 * 1024)  /* recycled requests keep buffers up to this size */
#define MOCK_KEEP_OUT      (1024 * 1024)

/* ---------------------------------------------------------------- options */

struct mock_opts {
	const char *listen;        /* --listen HOST:PORT */
	const char *id;            /* --id */
	double delay_ms;           /* --delay-ms */
	double jitter_ms;          /* --jitter-ms */
	double chunk_interval_ms;  /* --chunk-interval-ms */
	uint64_t size;             /* --size */
	unsigned chunks;           /* --chunks */
	unsigned close_after;      /* --close-after, 0 = never */
	unsigned status;           /* --status */
	unsigned threads;          /* --threads */
};

struct mock_loop;

/* The process context. Read-only once the loops run, except the atomics. */
struct mock_ctx {
	struct mock_opts opt;
	char *id_json;             /* opt.id as a quoted, escaped JSON string */
	size_t id_json_len;
	size_t id_len;
	uint64_t delay_ns, jitter_ns, interval_ns;
	llhttp_settings_t settings;
	int stop_fd;               /* eventfd: readable once the process must stop */
	pthread_t main_thread;
	unsigned nloops;
	struct mock_loop *loops;

	_Atomic int64_t served;
	_Atomic int64_t inflight;
	_Atomic int64_t max_inflight;
	_Atomic int failed;
};

/* ----------------------------------------------------------------- timers */

enum {
	TIMER_REQ = 1,     /* struct req: service delay over, or next chunk due */
	TIMER_LINGER = 2,  /* struct conn: stop waiting for the peer's EOF */
};

struct mock_timer {
	uint64_t deadline;  /* CLOCK_MONOTONIC ns */
	int32_t idx;        /* position in the loop's heap, -1 when not armed */
	uint8_t kind;
};

/* ------------------------------------------------------ requests and conns */

enum req_kind { REQ_NORMAL, REQ_STATS, REQ_STATS_RESET, REQ_HEALTHZ, REQ_ERROR };

enum req_state {
	RS_PARSING,    /* headers or body still arriving */
	RS_WAITING,    /* service delay running */
	RS_READY,      /* response may be produced once all earlier ones are */
	RS_STREAMING,  /* chunked response started; timer drives the next chunk */
	RS_FLUSHING,   /* whole response queued in conn->out, up to end_mark */
};

enum {
	REQ_FL_COUNTED   = 1u << 0, /* holds one unit of ctx->inflight */
	REQ_FL_ACCOUNTED = 1u << 1, /* completion counted ahead of the write that should finish it */
	REQ_FL_LAST      = 1u << 2, /* the connection closes after this response */
	REQ_FL_RESET     = 1u << 3, /* X-Mock-Reset: close without answering */
	REQ_FL_NO_BODY   = 1u << 4, /* X-Mock-No-Body: Content-Length: 0 */
	REQ_FL_HEAD      = 1u << 5, /* HEAD: headers only */
	REQ_FL_KA_HDR    = 1u << 6, /* HTTP/1.0 keep-alive: answer Connection: keep-alive */
	REQ_FL_IN_FIELD  = 1u << 7, /* parser is inside a header name */
	REQ_FL_DELAY_SET = 1u << 8, /* X-Mock-Delay-Ms given: exact, no jitter */
	REQ_FL_HTTP10    = 1u << 9, /* HTTP/1.0 request: no chunked framing */
	REQ_FL_EXPECT    = 1u << 10,/* Expect: 100-continue */
};

struct mock_hdr {
	uint32_t name_off, name_len;  /* name lowercased in place */
	uint32_t val_off, val_len;
};

struct req {
	struct list node;          /* conn->reqs, or loop->free_reqs */
	struct conn *conn;
	struct mock_timer timer;
	uint8_t kind, state, method;
	unsigned flags;
	unsigned status, chunks, seq, err_status;
	uint64_t delay_ns, interval_ns, size, body_len, end_mark;
	int64_t inflight_at;       /* ctx->inflight right after this one arrived */
	uint32_t url_len;          /* the request target is scratch[0 .. url_len) */
	/* kept across recycling */
	char *scratch;
	uint32_t scratch_len, scratch_cap;
	struct mock_hdr *hdrs;
	uint32_t nhdr, hdr_cap;
};

enum {
	CONN_FL_NO_READ = 1u << 0, /* input no longer parsed: after the last request, an error or EOF */
	CONN_FL_CLOSING = 1u << 1, /* close once every response is flushed */
	CONN_FL_ABORT   = 1u << 2, /* close without lingering (X-Mock-Reset, peer EOF) */
	CONN_FL_LINGER  = 1u << 3, /* write side shut; draining input until EOF or timeout */
	CONN_FL_DEAD    = 1u << 4, /* closed; freed at the end of the loop iteration */
	CONN_FL_EOF     = 1u << 5, /* the peer's EOF has been seen */
};

struct conn {
	int fd;
	unsigned flags;
	uint32_t events;           /* current epoll interest */
	struct mock_loop *loop;
	struct list node;          /* loop->conns, then loop->graveyard */
	struct list reqs;          /* in arrival order */
	unsigned nreq, nparsed;
	struct req *cur;           /* the request being parsed (also on reqs) */
	char *out;                 /* unsent output is out[out_off .. out_len) */
	size_t out_off, out_len, out_cap;
	uint64_t out_queued, out_written;  /* byte totals over the connection's life */
	struct mock_timer linger;
	llhttp_t parser;
};

struct mock_loop {
	struct mock_ctx *ctx;
	unsigned idx;
	pthread_t thread;
	int started;
	int epfd, lfd;
	int stop;
	int no_pwait2;
	uint64_t now, rng;
	struct mock_timer **heap;
	unsigned nheap, heap_cap;
	struct list conns, graveyard, free_reqs;
	char *rbuf;
	char *tmp;                 /* JSON body under construction */
	size_t tmp_cap;
};

/* ---------------------------------------------------------------- helpers */

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t ms_to_ns(double ms)
{
	if (!(ms > 0))
		return 0;
	return (uint64_t)(ms * 1e6 + 0.5);
}

/* xorshift64*: per-loop, only for jitter. Returns a double in [0, 1). */
static double loop_rand(struct mock_loop *l)
{
	uint64_t x = l->rng;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	l->rng = x;
	return (double)((x * 0x2545F4914F6CDD1Dull) >> 11) / 9007199254740992.0;
}

static inline char *put(char *p, const char *s, size_t n)
{
	memcpy(p, s, n);
	return p + n;
}

#define PUTS(p, lit) put((p), (lit), sizeof(lit) - 1)

static char *put_u64(char *p, uint64_t v)
{
	char tmp[24];
	int n = 0;
	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n)
		*p++ = tmp[--n];
	return p;
}

static char *put_i64(char *p, int64_t v)
{
	if (v < 0) {
		*p++ = '-';
		return put_u64(p, (uint64_t)0 - (uint64_t)v);
	}
	return put_u64(p, (uint64_t)v);
}

static char *put_hex(char *p, uint64_t v)
{
	static const char digits[] = "0123456789abcdef";
	char tmp[20];
	int n = 0;
	do {
		tmp[n++] = digits[v & 15];
		v >>= 4;
	} while (v);
	while (n)
		*p++ = tmp[--n];
	return p;
}

/* Length of the valid UTF-8 sequence at s (n bytes available), 0 if invalid. */
static size_t utf8_seq_len(const unsigned char *s, size_t n)
{
	unsigned c = s[0];
	size_t len;
	uint32_t cp, min;

	if (c < 0xC2)
		return 0;
	if (c < 0xE0) {
		len = 2; cp = c & 0x1F; min = 0x80;
	} else if (c < 0xF0) {
		len = 3; cp = c & 0x0F; min = 0x800;
	} else if (c < 0xF5) {
		len = 4; cp = c & 0x07; min = 0x10000;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3F);
	}
	if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	return len;
}

/* Write s as the inside of a JSON string. Needs up to 6 * n bytes at p.
 * Valid UTF-8 passes through; a byte that is not part of a valid sequence is
 * written as \u00XX (read as Latin-1), so the output is always valid JSON. */
static char *put_json_str(char *p, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0;

	while (i < n) {
		unsigned c = u[i];
		if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
			*p++ = (char)c;
			i++;
			continue;
		}
		if (c >= 0x80) {
			size_t len = utf8_seq_len(u + i, n - i);
			if (len) {
				p = put(p, s + i, len);
				i += len;
				continue;
			}
		}
		*p++ = '\\';
		switch (c) {
		case '"': *p++ = '"'; break;
		case '\\': *p++ = '\\'; break;
		case '\n': *p++ = 'n'; break;
		case '\r': *p++ = 'r'; break;
		case '\t': *p++ = 't'; break;
		default:
			p = PUTS(p, "u00");
			*p++ = hex[c >> 4];
			*p++ = hex[c & 15];
		}
		i++;
	}
	return p;
}

/* Make *buf hold at least need bytes. Returns 0 or -ENOMEM (buf unchanged). */
static int buf_reserve(char **buf, size_t *cap, size_t need)
{
	size_t ncap;
	char *nb;

	if (need <= *cap)
		return 0;
	ncap = *cap ? *cap : 1024;
	while (ncap < need)
		ncap *= 2;
	nb = realloc(*buf, ncap);
	if (!nb)
		return -ENOMEM;
	*buf = nb;
	*cap = ncap;
	return 0;
}

static const char *status_reason(unsigned code)
{
	switch (code) {
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 206: return "Partial Content";
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 304: return "Not Modified";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 413: return "Content Too Large";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	default: return "Status";
	}
}

/* ------------------------------------------------------------------ stats */

static int64_t stats_inflight_inc(struct mock_ctx *ctx)
{
	int64_t v = atomic_fetch_add_explicit(&ctx->inflight, 1, memory_order_relaxed) + 1;
	int64_t m = atomic_load_explicit(&ctx->max_inflight, memory_order_relaxed);

	while (v > m && !atomic_compare_exchange_weak_explicit(&ctx->max_inflight, &m, v,
				memory_order_relaxed, memory_order_relaxed))
		;
	return v;
}

/* Count r as completed (dir > 0) or take that back (dir < 0) when the write
 * that should have finished it came up short. Taking back restores inflight
 * without touching max_inflight: the request never really left. */
static void req_account(struct mock_ctx *ctx, struct req *r, int dir)
{
	if (dir > 0) {
		if (r->kind == REQ_NORMAL)
			atomic_fetch_add_explicit(&ctx->served, 1, memory_order_relaxed);
		if (r->flags & REQ_FL_COUNTED)
			atomic_fetch_sub_explicit(&ctx->inflight, 1, memory_order_relaxed);
		r->flags |= REQ_FL_ACCOUNTED;
	} else {
		if (r->kind == REQ_NORMAL)
			atomic_fetch_sub_explicit(&ctx->served, 1, memory_order_relaxed);
		if (r->flags & REQ_FL_COUNTED)
			atomic_fetch_add_explicit(&ctx->inflight, 1, memory_order_relaxed);
		r->flags &= ~REQ_FL_ACCOUNTED;
	}
}

/* ------------------------------------------------------------- timer heap */

static void heap_set(struct mock_loop *l, unsigned i, struct mock_timer *t)
{
	l->heap[i] = t;
	t->idx = (int32_t)i;
}

static void heap_sift_up(struct mock_loop *l, unsigned i)
{
	struct mock_timer *t = l->heap[i];

	while (i > 0) {
		unsigned parent = (i - 1) / 2;
		if (l->heap[parent]->deadline <= t->deadline)
			break;
		heap_set(l, i, l->heap[parent]);
		i = parent;
	}
	heap_set(l, i, t);
}

static void heap_sift_down(struct mock_loop *l, unsigned i)
{
	struct mock_timer *t = l->heap[i];

	for (;;) {
		unsigned child = 2 * i + 1;
		if (child >= l->nheap)
			break;
		if (child + 1 < l->nheap && l->heap[child + 1]->deadline < l->heap[child]->deadline)
			child++;
		if (t->deadline <= l->heap[child]->deadline)
			break;
		heap_set(l, i, l->heap[child]);
		i = child;
	}
	heap_set(l, i, t);
}

/* Arm t (not armed) at t->deadline. Returns 0 or -ENOMEM. */
static int heap_push(struct mock_loop *l, struct mock_timer *t)
{
	assert(t->idx < 0);
	if (l->nheap == l->heap_cap) {
		unsigned ncap = l->heap_cap ? l->heap_cap * 2 : 64;
		struct mock_timer **nh = realloc(l->heap, ncap * sizeof(*nh));
		if (!nh)
			return -ENOMEM;
		l->heap = nh;
		l->heap_cap = ncap;
	}
	l->heap[l->nheap] = t;
	t->idx = (int32_t)l->nheap++;
	heap_sift_up(l, (unsigned)t->idx);
	return 0;
}

/* Disarm t; harmless when it is not armed. */
static void heap_remove(struct mock_loop *l, struct mock_timer *t)
{
	unsigned i;

	if (t->idx < 0)
		return;
	i = (unsigned)t->idx;
	t->idx = -1;
	if (i == --l->nheap)
		return;
	heap_set(l, i, l->heap[l->nheap]);
	if (i > 0 && l->heap[(i - 1) / 2]->deadline > l->heap[i]->deadline)
		heap_sift_up(l, i);
	else
		heap_sift_down(l, i);
}

/* --------------------------------------------------------------- requests */

/* A clean request from the loop's free list (or the heap), with the
 * defaults of the command line. NULL when out of memory. */
static struct req *req_get(struct mock_loop *l)
{
	const struct mock_opts *o = &l->ctx->opt;
	struct req *r;
	char *scratch = NULL;
	struct mock_hdr *hdrs = NULL;
	uint32_t scap = 0, hcap = 0;

	if (!list_empty(&l->free_reqs)) {
		r = container_of(list_pop_front(&l->free_reqs), struct req, node);
		scratch = r->scratch;
		scap = r->scratch_cap;
		hdrs = r->hdrs;
		hcap = r->hdr_cap;
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
	r->timer.idx = -1;
	r->timer.kind = TIMER_REQ;
	r->status = o->status;
	r->chunks = o->chunks;
	r->interval_ns = l->ctx->interval_ns;
	r->size = o->size;
	return r;
}

/* Give r (unlinked, timer disarmed) back to the free list. */
static void req_put(struct mock_loop *l, struct req *r)
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
	list_push_front(&l->free_reqs, &r->node);
}

/* Remove r from its connection, releasing its share of inflight if it still
 * holds one (the connection died before the response was written). */
static void req_release(struct mock_loop *l, struct conn *c, struct req *r)
{
	heap_remove(l, &r->timer);
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

static char *out_reserve(struct conn *c, size_t n);
static void out_commit(struct conn *c, char *end);

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
	if (r->kind == REQ_NORMAL) {
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

	(void)at;
	c->cur->body_len += len;
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

/* ---------------------------------------------------------------- output */

static inline size_t out_pending(const struct conn *c)
{
	return c->out_len - c->out_off;
}

/* Room for n more bytes at the end of c->out, compacting or growing it.
 * Returns where to write, or NULL when out of memory. */
static char *out_reserve(struct conn *c, size_t n)
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

static void out_commit(struct conn *c, char *end)
{
	size_t n = (size_t)(end - (c->out + c->out_len));

	c->out_len += n;
	c->out_queued += n;
}

/* r's response is now fully queued. */
static void req_queued(struct conn *c, struct req *r)
{
	r->end_mark = c->out_queued;
	r->state = RS_FLUSHING;
	if (r->flags & REQ_FL_LAST)
		c->flags |= CONN_FL_CLOSING;
}

#define MOCK_HEAD_MAX(ctx) (320 + (ctx)->id_len)

/* A response head is put_status(), the caller's entity headers, then
 * put_head_end(); together they need MOCK_HEAD_MAX bytes. */
static char *put_status(char *p, unsigned status)
{
	const char *reason = status_reason(status);

	p = PUTS(p, "HTTP/1.1 ");
	p = put_u64(p, status);
	*p++ = ' ';
	p = put(p, reason, strlen(reason));
	return PUTS(p, "\r\n");
}

static char *put_head_end(struct mock_ctx *ctx, char *p, const struct req *r)
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
static int emit_simple(struct mock_ctx *ctx, struct conn *c, struct req *r, unsigned status,
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

#define MOCK_CHUNK_MAX(ctx) (64 + (ctx)->id_json_len)

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
static int emit_next_chunk(struct mock_loop *l, struct conn *c, struct req *r)
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
static int emit(struct mock_loop *l, struct conn *c, struct req *r)
{
	struct mock_ctx *ctx = l->ctx;
	char buf[256], *p = buf;

	switch (r->kind) {
	case REQ_NORMAL:
		return emit_normal(l, c, r);
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

/* ------------------------------------------------------------ connections */

static void conn_close(struct mock_loop *l, struct conn *c)
{
	if (c->flags & CONN_FL_DEAD)
		return;
	heap_remove(l, &c->linger);
	while (!list_empty(&c->reqs))
		req_release(l, c, container_of(c->reqs.next, struct req, node));
	c->cur = NULL;
	close(c->fd);
	c->fd = -1;
	c->flags |= CONN_FL_DEAD;
	list_del_init(&c->node);
	list_push_back(&l->graveyard, &c->node);
}

/* Produce the responses that may go now, in order. Returns 1 when it stopped
 * because too much output is pending, 0 otherwise, -ENOMEM. */
static int conn_pump(struct mock_loop *l, struct conn *c)
{
	struct list *pos, *tmp;

	list_for_each_safe(pos, tmp, &c->reqs) {
		struct req *r = container_of(pos, struct req, node);
		int err;

		if (r->state == RS_FLUSHING)
			continue;
		if (r->state != RS_READY)
			break;
		if (out_pending(c) >= MOCK_OUT_HIGH)
			return 1;
		if (r->flags & REQ_FL_RESET) {
			/* Parsing stopped after it, so it is the last request. */
			c->flags |= CONN_FL_NO_READ | CONN_FL_CLOSING | CONN_FL_ABORT;
			req_release(l, c, r);
			break;
		}
		err = emit(l, c, r);
		if (err)
			return err;
		if (r->state != RS_FLUSHING)
			break;
	}
	return 0;
}

/* Write what is pending. Responses wholly covered by what is about to be
 * written are counted as completed before the write (so that a client that
 * reacts to one at once never sees it still in flight); counting is taken
 * back for those the write did not finish. Returns 0, 1 when the connection
 * should now be closed (its last response is out), or -errno. */
static int conn_flush(struct mock_loop *l, struct conn *c)
{
	struct mock_ctx *ctx = l->ctx;
	struct list *pos, *tmp;
	int err = 0;

	for (pos = c->reqs.next; pos != &c->reqs; pos = pos->next) {
		struct req *r = container_of(pos, struct req, node);
		if (r->state != RS_FLUSHING)
			break;
		if (!(r->flags & REQ_FL_ACCOUNTED))
			req_account(ctx, r, 1);
	}
	while (out_pending(c)) {
		ssize_t n = write(c->fd, c->out + c->out_off, out_pending(c));
		if (n >= 0) {
			c->out_off += (size_t)n;
			c->out_written += (uint64_t)n;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			err = -errno;
		break;
	}
	if (c->out_off == c->out_len) {
		c->out_off = c->out_len = 0;
		if (c->out_cap > MOCK_KEEP_OUT) {
			free(c->out);
			c->out = NULL;
			c->out_cap = 0;
		}
	}
	list_for_each_safe(pos, tmp, &c->reqs) {
		struct req *r = container_of(pos, struct req, node);
		if (r->state != RS_FLUSHING)
			break;
		if (r->end_mark <= c->out_written) {
			list_del_init(&r->node);
			c->nreq--;
			req_put(l, r);
		} else if (r->flags & REQ_FL_ACCOUNTED) {
			req_account(ctx, r, -1);
		}
	}
	if (err)
		return err;
	if ((c->flags & CONN_FL_CLOSING) && !out_pending(c) && list_empty(&c->reqs))
		return 1;
	return 0;
}

static void conn_update(struct mock_loop *l, struct conn *c)
{
	uint32_t want = 0;

	if (c->flags & CONN_FL_LINGER) {
		want = EPOLLIN;
	} else {
		if (!(c->flags & CONN_FL_NO_READ) && c->nreq < MOCK_MAX_PIPELINE &&
		    out_pending(c) < MOCK_OUT_HIGH)
			want |= EPOLLIN;
		if (!(c->flags & CONN_FL_EOF))
			want |= EPOLLRDHUP;
		if (out_pending(c))
			want |= EPOLLOUT;
	}
	if (want != c->events) {
		struct epoll_event ev = { .events = want, .data.ptr = c };
		if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) {
			conn_close(l, c);
			return;
		}
		c->events = want;
	}
}

/* The last response is out: close at once (abort), or shut our side and wait
 * briefly for the peer's EOF so that unread pipelined input does not turn
 * the close into a reset that could destroy the response in flight. */
static void conn_finish(struct mock_loop *l, struct conn *c)
{
	if (c->flags & (CONN_FL_ABORT | CONN_FL_EOF)) {
		conn_close(l, c);
		return;
	}
	shutdown(c->fd, SHUT_WR);
	c->flags |= CONN_FL_LINGER;
	c->linger.deadline = l->now + MOCK_LINGER_NS;
	if (heap_push(l, &c->linger) < 0) {
		conn_close(l, c);
		return;
	}
	conn_update(l, c);
}

/* Move c forward after anything happened to it: produce what may go, write
 * it, close or update the epoll interest. c may be dead on return. */
static void conn_kick(struct mock_loop *l, struct conn *c)
{
	int rc;

	if (c->flags & (CONN_FL_DEAD | CONN_FL_LINGER))
		return;
	for (;;) {
		int more = conn_pump(l, c);
		if (more < 0)
			goto close;
		rc = conn_flush(l, c);
		if (rc < 0)
			goto close;
		if (rc > 0) {
			conn_finish(l, c);
			return;
		}
		if (!more || out_pending(c) >= MOCK_OUT_HIGH)
			break;
	}
	conn_update(l, c);
	return;
close:
	conn_close(l, c);
}

/* A parse error: answer it in turn with 400 (431 for an oversized head) and
 * close. The request being parsed, if any, becomes the error response. */
static void conn_parse_error(struct mock_loop *l, struct conn *c)
{
	struct req *r = c->cur;

	c->cur = NULL;
	c->flags |= CONN_FL_NO_READ;
	if (!r) {
		r = req_get(l);
		if (!r) {
			conn_close(l, c);
			return;
		}
		r->conn = c;
		list_push_back(&c->reqs, &r->node);
		c->nreq++;
	}
	if (r->flags & REQ_FL_COUNTED) {
		atomic_fetch_sub_explicit(&l->ctx->inflight, 1, memory_order_relaxed);
		r->flags &= ~REQ_FL_COUNTED;
	}
	r->kind = REQ_ERROR;
	r->status = r->err_status ? r->err_status : 400;
	r->flags &= ~(REQ_FL_RESET | REQ_FL_HEAD | REQ_FL_NO_BODY | REQ_FL_KA_HDR);
	r->flags |= REQ_FL_LAST;
	r->state = RS_READY;
}

static void conn_parse(struct mock_loop *l, struct conn *c, const char *buf, size_t n)
{
	enum llhttp_errno e = llhttp_execute(&c->parser, buf, n);

	switch (e) {
	case HPE_OK:
		return;
	case HPE_PAUSED:
		/* after a request that ends the connection; the rest is ignored */
		c->flags |= CONN_FL_NO_READ;
		return;
	case HPE_PAUSED_UPGRADE:
		/* Upgrade/CONNECT: answered as a plain request, then closed. */
		c->flags |= CONN_FL_NO_READ;
		if (c->cur)
			conn_parse_error(l, c);
		else if (!list_empty(&c->reqs))
			container_of(c->reqs.prev, struct req, node)->flags |= REQ_FL_LAST;
		return;
	default:
		conn_parse_error(l, c);
		return;
	}
}

/* The peer sent EOF. Work still in progress is aborted (the client is gone);
 * responses already produced are flushed, then the connection closes. */
static void conn_on_eof(struct mock_loop *l, struct conn *c)
{
	struct list *pos;

	if (c->flags & CONN_FL_EOF)
		return;
	c->flags |= CONN_FL_EOF | CONN_FL_NO_READ | CONN_FL_ABORT;
	if (c->cur)
		req_release(l, c, c->cur);
	if (conn_pump(l, c) < 0) {
		conn_close(l, c);
		return;
	}
	for (pos = c->reqs.next; pos != &c->reqs; pos = pos->next) {
		if (container_of(pos, struct req, node)->state != RS_FLUSHING) {
			conn_close(l, c);
			return;
		}
	}
	c->flags |= CONN_FL_CLOSING;
}

static void conn_on_readable(struct mock_loop *l, struct conn *c)
{
	if (c->flags & CONN_FL_LINGER) {
		for (;;) {
			ssize_t n = read(c->fd, l->rbuf, MOCK_READ_BUF);
			if (n > 0)
				continue;
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				return;
			conn_close(l, c);
			return;
		}
	}
	for (int i = 0; i < 4; i++) {
		ssize_t n;

		if ((c->flags & CONN_FL_NO_READ) || c->nreq >= MOCK_MAX_PIPELINE)
			return;
		n = read(c->fd, l->rbuf, MOCK_READ_BUF);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				conn_close(l, c);
			return;
		}
		if (n == 0) {
			conn_on_eof(l, c);
			return;
		}
		conn_parse(l, c, l->rbuf, (size_t)n);
		if ((c->flags & CONN_FL_DEAD) || n < MOCK_READ_BUF)
			return;
	}
}

static void conn_on_event(struct mock_loop *l, struct conn *c, uint32_t ev)
{
	if (c->flags & CONN_FL_DEAD)
		return;
	if (ev & EPOLLERR) {
		conn_close(l, c);
		return;
	}
	if (ev & EPOLLIN)
		conn_on_readable(l, c);
	if (c->flags & CONN_FL_DEAD)
		return;
	if (ev & EPOLLHUP) {
		conn_close(l, c);
		return;
	}
	if ((ev & EPOLLRDHUP) && !(c->flags & CONN_FL_LINGER)) {
		conn_on_eof(l, c);
		if (c->flags & CONN_FL_DEAD)
			return;
	}
	conn_kick(l, c);
}

static void loop_accept(struct mock_loop *l)
{
	for (int i = 0; i < 64; i++) {
		struct epoll_event ev;
		struct conn *c;
		int one = 1;
		int fd = accept4(l->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				fprintf(stderr, "mock-replica: accept: %s\n", strerror(errno));
			return;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->fd = fd;
		c->loop = l;
		list_init(&c->node);
		list_init(&c->reqs);
		c->linger.idx = -1;
		c->linger.kind = TIMER_LINGER;
		llhttp_init(&c->parser, HTTP_REQUEST, &l->ctx->settings);
		c->parser.data = c;
		c->events = EPOLLIN | EPOLLRDHUP;
		ev.events = c->events;
		ev.data.ptr = c;
		if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
			close(fd);
			free(c);
			continue;
		}
		list_push_back(&l->conns, &c->node);
	}
}

/* ------------------------------------------------------------------- loop */

static void loop_timers(struct mock_loop *l)
{
	while (l->nheap && l->heap[0]->deadline <= l->now) {
		struct mock_timer *t = l->heap[0];
		struct conn *c;
		struct req *r;

		heap_remove(l, t);
		if (t->kind == TIMER_LINGER) {
			conn_close(l, container_of(t, struct conn, linger));
			continue;
		}
		r = container_of(t, struct req, timer);
		c = r->conn;
		if (r->state == RS_WAITING) {
			r->state = RS_READY;
		} else if (r->state == RS_STREAMING) {
			if (emit_next_chunk(l, c, r) < 0) {
				conn_close(l, c);
				continue;
			}
		}
		conn_kick(l, c);
	}
}

static void loop_reap(struct mock_loop *l)
{
	while (!list_empty(&l->graveyard)) {
		struct conn *c = container_of(list_pop_front(&l->graveyard), struct conn, node);
		free(c->out);
		free(c);
	}
}

static int loop_wait(struct mock_loop *l, struct epoll_event *evs)
{
	struct timespec ts, *tp = NULL;
	uint64_t rel = 0;
	int ms = -1, n;

	if (l->nheap) {
		uint64_t d = l->heap[0]->deadline;
		rel = d > l->now ? d - l->now : 0;
		ts.tv_sec = (time_t)(rel / 1000000000ull);
		ts.tv_nsec = (long)(rel % 1000000000ull);
		tp = &ts;
	}
	if (!l->no_pwait2) {
		n = epoll_pwait2(l->epfd, evs, MOCK_MAX_EVENTS, tp, NULL);
		if (n >= 0 || errno != ENOSYS)
			return n;
		l->no_pwait2 = 1;
	}
	if (tp)
		ms = rel / 1000000ull >= INT_MAX ? INT_MAX : (int)((rel + 999999ull) / 1000000ull);
	return epoll_wait(l->epfd, evs, MOCK_MAX_EVENTS, ms);
}

static void *loop_run(void *arg)
{
	struct mock_loop *l = arg;
	struct mock_ctx *ctx = l->ctx;
	struct epoll_event evs[MOCK_MAX_EVENTS];

	/* The service delay is an epoll_pwait2 timeout. With the default 50 us timer
	 * slack the kernel may fire it up to 50 us late, so "--delay-ms 2" measured
	 * about 2.04 ms a request: replicas slower than configured, and every
	 * "fraction of ideal" in bench/compare low by ~2%. 1 ns of slack keeps the
	 * delay what the command line says. Best effort: on failure the delay is
	 * merely a little long. */
	(void)prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);

	while (!l->stop) {
		int n;

		l->now = mono_ns();
		n = loop_wait(l, evs);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "mock-replica: epoll_wait: %s\n", strerror(errno));
			atomic_store(&ctx->failed, 1);
			pthread_kill(ctx->main_thread, SIGTERM);
			break;
		}
		l->now = mono_ns();
		for (int i = 0; i < n; i++) {
			void *p = evs[i].data.ptr;
			if (p == &l->lfd)
				loop_accept(l);
			else if (p == &ctx->stop_fd)
				l->stop = 1;
			else
				conn_on_event(l, p, evs[i].events);
		}
		loop_timers(l);
		loop_reap(l);
	}
	return NULL;
}

/* Set up l around its listening socket lfd (taken over). Returns 0/-errno. */
static int loop_init(struct mock_ctx *ctx, struct mock_loop *l, unsigned idx, int lfd)
{
	struct epoll_event ev;
	int err;

	memset(l, 0, sizeof(*l));
	l->epfd = -1;
	l->ctx = ctx;
	l->idx = idx;
	l->lfd = lfd;
	l->rng = mono_ns() ^ (0x9E3779B97F4A7C15ull * (idx + 1)) ^ (uint64_t)getpid();
	if (!l->rng)
		l->rng = 1;
	list_init(&l->conns);
	list_init(&l->graveyard);
	list_init(&l->free_reqs);
	l->rbuf = malloc(MOCK_READ_BUF);
	if (!l->rbuf)
		return -ENOMEM;
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0)
		return -errno;
	ev.events = EPOLLIN;
	ev.data.ptr = &l->lfd;
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, lfd, &ev) < 0)
		goto fail;
	ev.events = EPOLLIN;
	ev.data.ptr = &ctx->stop_fd;
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, ctx->stop_fd, &ev) < 0)
		goto fail;
	return 0;
fail:
	err = -errno;
	return err;
}

/* Free everything l owns (connections included). Safe on a partly set up l. */
static void loop_destroy(struct mock_loop *l)
{
	while (!list_empty(&l->conns))
		conn_close(l, container_of(l->conns.next, struct conn, node));
	loop_reap(l);
	while (!list_empty(&l->free_reqs)) {
		struct req *r = container_of(list_pop_front(&l->free_reqs), struct req, node);
		free(r->scratch);
		free(r->hdrs);
		free(r);
	}
	free(l->heap);
	l->heap = NULL;
	free(l->rbuf);
	l->rbuf = NULL;
	free(l->tmp);
	l->tmp = NULL;
	if (l->epfd >= 0)
		close(l->epfd);
	if (l->lfd >= 0)
		close(l->lfd);
	l->epfd = l->lfd = -1;
}

/* ------------------------------------------------------- setup and main */

static void usage(FILE *f)
{
	fputs("usage: mock-replica [options]\n"
	      "  --listen HOST:PORT        default 127.0.0.1:0; prints 'READY <port>' once listening\n"
	      "  --listen unix:/PATH       a unix stream socket instead (READY 0; removed at exit)\n"
	      "  --id NAME                 default mock (X-Mock-Id header, \"id\" field)\n"
	      "  --threads N               event loops on SO_REUSEPORT listeners, default 1\n"
	      "  --delay-ms F              service delay per request, default 0\n"
	      "  --jitter-ms F             delay += U(-F, +F), clamped at 0\n"
	      "  --size N                  pad JSON bodies to at least N bytes\n"
	      "  --chunks K                stream K SSE events, chunked\n"
	      "  --chunk-interval-ms F     time between events\n"
	      "  --close-after N           close connections after N responses\n"
	      "  --status CODE             status of normal responses, default 200\n"
	      "request headers: X-Mock-Delay-Ms, X-Mock-Status, X-Mock-Chunks,\n"
	      "  X-Mock-Chunk-Interval-Ms, X-Mock-Size, X-Mock-Close: 1, X-Mock-Reset: 1,\n"
	      "  X-Mock-No-Body: 1\n"
	      "control: GET /-/stats, POST /-/stats/reset, GET /-/healthz\n", f);
}

static int parse_double(const char *s, double min, double max, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= min && v <= max))
		return -EINVAL;
	*out = v;
	return 0;
}

static int parse_uint(const char *s, unsigned long long min, unsigned long long max,
		      unsigned long long *out)
{
	char *end;
	unsigned long long v;

	if (*s == '-' || *s == '\0')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

/* Fill o from argv. Returns 0, 1 for --help, -EINVAL (message printed). */
static int mock_parse_args(struct mock_opts *o, int argc, char **argv)
{
	enum { O_LISTEN = 256, O_ID, O_DELAY, O_JITTER, O_SIZE, O_CHUNKS, O_INTERVAL,
	       O_CLOSE_AFTER, O_STATUS, O_THREADS, O_HELP };
	static const struct option longopts[] = {
		{ "listen", required_argument, NULL, O_LISTEN },
		{ "id", required_argument, NULL, O_ID },
		{ "delay-ms", required_argument, NULL, O_DELAY },
		{ "jitter-ms", required_argument, NULL, O_JITTER },
		{ "size", required_argument, NULL, O_SIZE },
		{ "chunks", required_argument, NULL, O_CHUNKS },
		{ "chunk-interval-ms", required_argument, NULL, O_INTERVAL },
		{ "close-after", required_argument, NULL, O_CLOSE_AFTER },
		{ "status", required_argument, NULL, O_STATUS },
		{ "threads", required_argument, NULL, O_THREADS },
		{ "help", no_argument, NULL, O_HELP },
		{ NULL, 0, NULL, 0 },
	};
	int opt;

	o->listen = "127.0.0.1:0";
	o->id = "mock";
	o->status = 200;
	o->threads = 1;
	while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		unsigned long long u = 0;
		int err = 0;

		switch (opt) {
		case O_LISTEN: o->listen = optarg; break;
		case O_ID: o->id = optarg; break;
		case O_DELAY: err = parse_double(optarg, 0, 1e9, &o->delay_ms); break;
		case O_JITTER: err = parse_double(optarg, 0, 1e9, &o->jitter_ms); break;
		case O_INTERVAL: err = parse_double(optarg, 0, 1e9, &o->chunk_interval_ms); break;
		case O_SIZE:
			err = parse_uint(optarg, 0, 1ull << 30, &u);
			o->size = u;
			break;
		case O_CHUNKS:
			err = parse_uint(optarg, 0, 1000000, &u);
			o->chunks = (unsigned)u;
			break;
		case O_CLOSE_AFTER:
			err = parse_uint(optarg, 0, UINT_MAX, &u);
			o->close_after = (unsigned)u;
			break;
		case O_STATUS:
			err = parse_uint(optarg, 200, 599, &u);
			o->status = (unsigned)u;
			break;
		case O_THREADS:
			err = parse_uint(optarg, 1, 256, &u);
			o->threads = (unsigned)u;
			break;
		case 'h':
		case O_HELP:
			return 1;
		default:
			return -EINVAL;
		}
		if (err) {
			fprintf(stderr, "mock-replica: bad value for --%s: '%s'\n",
				longopts[opt - O_LISTEN].name, optarg);
			return -EINVAL;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "mock-replica: unexpected argument '%s'\n", argv[optind]);
		return -EINVAL;
	}
	if (!*o->id || strlen(o->id) > MOCK_MAX_ID) {
		fprintf(stderr, "mock-replica: --id must be 1..%d bytes\n", MOCK_MAX_ID);
		return -EINVAL;
	}
	for (const char *s = o->id; *s; s++) {
		if ((unsigned char)*s < 0x20 || *s == 0x7f) {
			fprintf(stderr, "mock-replica: --id must not contain control characters\n");
			return -EINVAL;
		}
	}
	return 0;
}

/* Resolve HOST:PORT ("[v6]:port" too; an empty host is the wildcard), or
 * unix:/path (a stream socket on this machine; a stale file at the path is
 * removed first, as a restarted server would). Returns 0 or -EINVAL
 * (message printed). */
static int mock_resolve(const char *spec, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[256];
	const char *colon, *port, *h = spec;
	size_t hlen;
	struct addrinfo hints, *res = NULL;
	int rc;

	if (strncmp(spec, "unix:", 5) == 0) {
		struct sockaddr_un *un = (struct sockaddr_un *)ss;
		size_t plen = strlen(spec + 5);

		if (plen == 0 || plen >= sizeof(un->sun_path))
			goto bad;
		memset(ss, 0, sizeof(*ss));
		un->sun_family = AF_UNIX;
		memcpy(un->sun_path, spec + 5, plen);
		*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen + 1);
		unlink(un->sun_path);
		return 0;
	}
	colon = strrchr(spec, ':');
	if (!colon)
		goto bad;
	port = colon + 1;
	hlen = (size_t)(colon - spec);
	if (hlen >= 2 && spec[0] == '[' && spec[hlen - 1] == ']') {
		h++;
		hlen -= 2;
	}
	if (hlen >= sizeof(host) || !*port)
		goto bad;
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	rc = getaddrinfo(hlen ? host : NULL, port, &hints, &res);
	if (rc) {
		fprintf(stderr, "mock-replica: --listen %s: %s\n", spec, gai_strerror(rc));
		return -EINVAL;
	}
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
bad:
	fprintf(stderr, "mock-replica: --listen wants HOST:PORT or unix:/PATH, got '%s'\n", spec);
	return -EINVAL;
}

/* A non-blocking listening socket on ss. Returns the fd or -errno. */
static int mock_listen_one(const struct sockaddr_storage *ss, socklen_t len, int reuseport)
{
	int one = 1;
	int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int err;

	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
		goto fail;
	if (bind(fd, (const struct sockaddr *)ss, len) < 0)
		goto fail;
	if (listen(fd, 4096) < 0)
		goto fail;
	return fd;
fail:
	err = -errno;
	close(fd);
	return err;
}

/* The port of ss; for a unix socket, a dummy 0 (READY prints 0). */
static uint16_t *ss_port(struct sockaddr_storage *ss)
{
	static __thread uint16_t none;

	if (ss->ss_family == AF_UNIX) {
		none = 0;
		return &none;
	}
	if (ss->ss_family == AF_INET6)
		return &((struct sockaddr_in6 *)ss)->sin6_port;
	return &((struct sockaddr_in *)ss)->sin_port;
}

/* Derived, read-only parts of the context. Returns 0 or -ENOMEM. */
static int mock_ctx_init(struct mock_ctx *ctx)
{
	const struct mock_opts *o = &ctx->opt;
	char *p;

	ctx->id_len = strlen(o->id);
	ctx->id_json = malloc(6 * ctx->id_len + 3);
	if (!ctx->id_json)
		return -ENOMEM;
	p = ctx->id_json;
	*p++ = '"';
	p = put_json_str(p, o->id, ctx->id_len);
	*p++ = '"';
	*p = '\0';
	ctx->id_json_len = (size_t)(p - ctx->id_json);
	ctx->delay_ns = ms_to_ns(o->delay_ms);
	ctx->jitter_ns = ms_to_ns(o->jitter_ms);
	ctx->interval_ns = ms_to_ns(o->chunk_interval_ms);

	llhttp_settings_init(&ctx->settings);
	ctx->settings.on_message_begin = on_message_begin;
	ctx->settings.on_url = on_url;
	ctx->settings.on_header_field = on_header_field;
	ctx->settings.on_header_field_complete = on_header_field_complete;
	ctx->settings.on_header_value = on_header_value;
	ctx->settings.on_header_value_complete = on_header_value_complete;
	ctx->settings.on_headers_complete = on_headers_complete;
	ctx->settings.on_body = on_body;
	ctx->settings.on_message_complete = on_message_complete;
	return 0;
}

int main(int argc, char **argv)
{
	struct mock_ctx ctx;
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);
	sigset_t sigs;
	unsigned n, started = 0;
	int rc = 1, sig, err;
	uint64_t one = 1;

	memset(&ctx, 0, sizeof(ctx));
	ctx.stop_fd = -1;
	err = mock_parse_args(&ctx.opt, argc, argv);
	if (err) {
		usage(err > 0 ? stdout : stderr);
		return err > 0 ? 0 : 2;
	}
	if (mock_ctx_init(&ctx) < 0)
		goto out;
	if (mock_resolve(ctx.opt.listen, &ss, &sslen) < 0) {
		rc = 2;
		goto out;
	}

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL); /* inherited by the loops */
	ctx.main_thread = pthread_self();

	ctx.stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (ctx.stop_fd < 0) {
		perror("mock-replica: eventfd");
		goto out;
	}
	n = ctx.opt.threads;
	ctx.loops = calloc(n, sizeof(*ctx.loops));
	if (!ctx.loops)
		goto out;
	for (unsigned i = 0; i < n; i++) {
		/* A unix path binds once (SO_REUSEPORT does not spread unix
		 * sockets): the other loops share the first one's socket, each
		 * with its own descriptor, and race for accepts. */
		int fd = ss.ss_family == AF_UNIX && i > 0 ? fcntl(ctx.loops[0].lfd, F_DUPFD_CLOEXEC, 0)
							  : mock_listen_one(&ss, sslen, n > 1 && ss.ss_family != AF_UNIX);
		if (fd < 0 && ss.ss_family == AF_UNIX && i > 0)
			fd = -errno;
		if (fd < 0) {
			fprintf(stderr, "mock-replica: listen on %s: %s\n", ctx.opt.listen, strerror(-fd));
			goto out;
		}
		if (i == 0) {
			struct sockaddr_storage bound;
			socklen_t blen = sizeof(bound);
			if (getsockname(fd, (struct sockaddr *)&bound, &blen) < 0) {
				close(fd);
				goto out;
			}
			*ss_port(&ss) = *ss_port(&bound); /* the others join port 0's pick */
		}
		err = loop_init(&ctx, &ctx.loops[i], i, fd);
		ctx.nloops = i + 1;
		if (err < 0) {
			fprintf(stderr, "mock-replica: %s\n", strerror(-err));
			goto out;
		}
	}

	printf("READY %u\n", (unsigned)ntohs(*ss_port(&ss)));
	fflush(stdout);

	for (unsigned i = 0; i < n; i++) {
		err = pthread_create(&ctx.loops[i].thread, NULL, loop_run, &ctx.loops[i]);
		if (err) {
			fprintf(stderr, "mock-replica: pthread_create: %s\n", strerror(err));
			atomic_store(&ctx.failed, 1);
			break;
		}
		ctx.loops[i].started = 1;
		started++;
	}
	if (started == n) {
		do {
			err = sigwait(&sigs, &sig);
		} while (err == EINTR);
	}
	if (write(ctx.stop_fd, &one, sizeof(one)) < 0)
		perror("mock-replica: eventfd write");
	for (unsigned i = 0; i < n; i++)
		if (ctx.loops[i].started)
			pthread_join(ctx.loops[i].thread, NULL);
	rc = atomic_load(&ctx.failed) ? 1 : 0;
out:
	for (unsigned i = 0; i < ctx.nloops; i++)
		loop_destroy(&ctx.loops[i]);
	free(ctx.loops);
	if (ctx.stop_fd >= 0)
		close(ctx.stop_fd);
	if (ctx.nloops && ss.ss_family == AF_UNIX)
		unlink(((struct sockaddr_un *)&ss)->sun_path);
	free(ctx.id_json);
	return rc;
}
