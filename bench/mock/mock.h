/* mock-replica: the types shared by the files of bench/mock/. A fast HTTP/1.1 server that stands in for a GPU model server
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
#ifndef MOCK_H
#define MOCK_H

#include <llhttp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>

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
	/* --llm: the LLM model of llm.c (see bench/README-mock.md) */
	int llm;                   /* --llm */
	const char *model;         /* --model, the default "model" of answers */
	unsigned block_tokens;     /* --block-tokens, KV cache block size */
	unsigned kv_blocks;        /* --kv-blocks, KV cache size in blocks */
	unsigned max_batch;        /* --max-batch, sequences decoded together */
	unsigned max_tokens;       /* --max-tokens, output tokens when a request names none */
	double prefill_us;         /* --prefill-us-per-token, per uncached prompt token */
	double decode_us;          /* --decode-us-per-token, one decode step */
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
	TIMER_LLM = 3,     /* struct llm_engine: the current batch step is over */
};

struct mock_timer {
	uint64_t deadline;  /* CLOCK_MONOTONIC ns */
	int32_t idx;        /* position in the loop's heap, -1 when not armed */
	uint8_t kind;
};

/* ------------------------------------------------------ requests and conns */

enum req_kind { REQ_NORMAL, REQ_STATS, REQ_STATS_RESET, REQ_HEALTHZ, REQ_ERROR,
	/* --llm only (llm.c): */
	REQ_LLM,       /* POST /v1/chat/completions or /v1/completions; counted like REQ_NORMAL */
	REQ_METRICS,   /* GET /metrics (Prometheus text) */
	REQ_MODELS,    /* GET /v1/models */
	REQ_LLM_RESET, /* POST /-/llm/reset: empty the KV cache, zero the counters */
};

enum req_state {
	RS_PARSING,    /* headers or body still arriving */
	RS_WAITING,    /* service delay running */
	RS_READY,      /* response may be produced once all earlier ones are */
	RS_STREAMING,  /* chunked response started; timer drives the next chunk */
	RS_FLUSHING,   /* whole response queued in conn->out, up to end_mark */
	RS_LLM,        /* REQ_LLM in the engine: output appears as tokens are generated */
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

/* The LLM part of a REQ_LLM request (llm.c). Buffers are kept across
 * recycling, like scratch. */
enum llm_phase { LLM_NONE, LLM_WAITING, LLM_RUNNING, LLM_DONE };
enum llm_elm { LLM_ELM_NONE, LLM_ELM_TEXT, LLM_ELM_JSON }; /* endpoint-load-metrics-format */

struct llm_seq {
	struct list node;          /* engine->waiting or engine->running */
	uint8_t phase;             /* enum llm_phase */
	uint8_t chat;              /* /v1/chat/completions (else /v1/completions) */
	uint8_t stream, include_usage, prefilling, head_sent, elm;
	unsigned err_status;       /* request refused: status and message (static string) */
	const char *err;
	uint32_t prompt_tokens, cached_tokens, max_tokens, generated, emitted;
	uint64_t created;          /* unix seconds, for "created" */
	uint64_t num;              /* per-process request number, for "id" */
	char *model_json;          /* quoted, escaped; malloc'd per request */
	char *body;                /* request body */
	size_t body_len, body_cap;
	char *prompt;              /* prompt text (messages[].content concatenated) */
	size_t prompt_len, prompt_cap;
	uint64_t *hashes;          /* chain hashes of the prompt's full blocks */
	uint32_t nhash, hash_cap;
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
	struct llm_seq llm;        /* REQ_LLM only (buffers kept) */
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
	struct list kick;          /* on the LLM engine's list of connections to move on */
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
	struct llm_engine *llm;    /* --llm: the model's state (one loop only) */
};

/* --------------------------------------------------------------- util.c */

uint64_t mono_ns(void);
uint64_t ms_to_ns(double ms);
double loop_rand(struct mock_loop *l);

static inline char *put(char *p, const char *s, size_t n)
{
	memcpy(p, s, n);
	return p + n;
}

#define PUTS(p, lit) put((p), (lit), sizeof(lit) - 1)

char *put_u64(char *p, uint64_t v);
char *put_i64(char *p, int64_t v);
char *put_hex(char *p, uint64_t v);
char *put_json_str(char *p, const char *s, size_t n);
int buf_reserve(char **buf, size_t *cap, size_t need);
const char *status_reason(unsigned code);

/* -------------------------------------------------------------- stats.c */

int64_t stats_inflight_inc(struct mock_ctx *ctx);
void req_account(struct mock_ctx *ctx, struct req *r, int dir);

/* -------------------------------------------------------------- timer.c */

int heap_push(struct mock_loop *l, struct mock_timer *t);
void heap_remove(struct mock_loop *l, struct mock_timer *t);

/* --------------------------------------------------------------- http.c */

struct req *req_get(struct mock_loop *l);
void req_put(struct mock_loop *l, struct req *r);
void req_release(struct mock_loop *l, struct conn *c, struct req *r);
void http_settings_init(llhttp_settings_t *s);

/* ----------------------------------------------------------- response.c */

static inline size_t out_pending(const struct conn *c)
{
	return c->out_len - c->out_off;
}

#define MOCK_HEAD_MAX(ctx) (320 + (ctx)->id_len)
#define MOCK_CHUNK_MAX(ctx) (64 + (ctx)->id_json_len)

char *out_reserve(struct conn *c, size_t n);
void out_commit(struct conn *c, char *end);
void req_queued(struct conn *c, struct req *r);
char *put_status(char *p, unsigned status);
char *put_head_end(struct mock_ctx *ctx, char *p, const struct req *r);
int emit_simple(struct mock_ctx *ctx, struct conn *c, struct req *r, unsigned status,
		const char *body, size_t blen);
int emit_next_chunk(struct mock_loop *l, struct conn *c, struct req *r);
int emit(struct mock_loop *l, struct conn *c, struct req *r);

/* --------------------------------------------------------------- conn.c */

void conn_close(struct mock_loop *l, struct conn *c);
void conn_kick(struct mock_loop *l, struct conn *c);
void conn_on_event(struct mock_loop *l, struct conn *c, uint32_t ev);
void loop_accept(struct mock_loop *l);

/* ---------------------------------------------------------------- llm.c */

/* What a request on path url[0..len) is in LLM mode: REQ_LLM, REQ_METRICS,
 * REQ_MODELS, or REQ_NORMAL (not an LLM path). A REQ_LLM with a method other
 * than POST is answered 405. */
int llm_classify(struct req *r, int method, const char *url, size_t len);
/* A request header of a REQ_LLM (name lowercased). */
void llm_on_header(struct req *r, const char *name, size_t nlen, const char *val, size_t vlen);
/* Body bytes of a REQ_LLM (refused with 413 beyond the limit). */
void llm_on_body(struct req *r, const char *at, size_t len);
/* The whole request is in: parse it and queue it in the engine (state
 * RS_LLM), or make it an error answer (state RS_READY). */
void llm_submit(struct mock_loop *l, struct req *r);
/* Queue what r may send now (head, generated tokens, the end). r->state
 * becomes RS_FLUSHING once the response is complete. Returns 0/-ENOMEM. */
int llm_emit(struct mock_loop *l, struct conn *c, struct req *r);
/* Answer REQ_LLM errors, REQ_METRICS, REQ_MODELS, REQ_LLM_RESET (state RS_READY). */
int llm_emit_simple(struct mock_loop *l, struct conn *c, struct req *r);
/* r leaves (connection gone): take it out of the engine. */
void llm_abort(struct mock_loop *l, struct req *r);
/* Free r's LLM buffers when it is recycled (keep small ones). */
void llm_req_recycle(struct req *r, int keep);
/* The batch step ended (TIMER_LLM fired). */
void llm_step_done(struct mock_loop *l);
/* conn_close: drop c from the engine's kick list. */
void llm_conn_gone(struct conn *c);
int llm_engine_init(struct mock_loop *l);
void llm_engine_destroy(struct mock_loop *l);

/* --------------------------------------------------------------- loop.c */

void *loop_run(void *arg);
int loop_init(struct mock_ctx *ctx, struct mock_loop *l, unsigned idx, int lfd);
void loop_destroy(struct mock_loop *l);

#endif
