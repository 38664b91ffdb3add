/* mock-replica --llm: an OpenAI-compatible LLM server's cost model, to
 * measure inference-aware routing with (bench/README-mock.md, "LLM mode").
 *
 * Endpoints: POST /v1/chat/completions (prompt = messages[].content in
 * order), POST /v1/completions (prompt = "prompt"), with or without
 * "stream": true; GET /v1/models; GET /metrics (vLLM-named gauges).
 *
 * Cost model (all event driven, on the loop's timer heap; no thread sleeps):
 * * 1 token = 4 bytes of prompt text (the last partial token counts as one);
 *   every output token is 4 bytes of text.
 * * KV cache: blocks of --block-tokens tokens; block i's hash is XXH64 of its
 *   bytes seeded with block i-1's hash (a chain: a block hits only after the
 *   same whole prefix). An LRU of --kv-blocks blocks. A sequence's cached
 *   prefix is the longest run of its leading blocks found in the cache when
 *   it joins the batch (those are touched); at least the last prompt token is
 *   always computed. After its prefill the prompt's full blocks are cached;
 *   when it finishes, the blocks of prompt + output too (the next turn of a
 *   conversation resends both).
 * * Continuous batching: up to --max-batch sequences run; more wait in FIFO
 *   order. The engine runs steps back to back while it has work. A step
 *   takes --prefill-us-per-token for every uncached prompt token of the
 *   sequences that join with it, plus --decode-us-per-token when a sequence
 *   that had already joined is in the batch. At its end every running
 *   sequence has one more token (a joining one its first). So time to first
 *   token = queueing + the step it joins in; a long prefill stalls the batch.
 * * Load: running, waiting, and KV use = blocks held by running sequences
 *   (prompt + generated so far; a block shared by several counted once, as
 *   vLLM's block pool counts it) / --kv-blocks, at most 1.
 *
 * Single-loop only (--threads 1): the engine belongs to loop 0, no locks.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>
#include <xxhash.h>

#include "mock.h"

#define LLM_MAX_BODY      (8u << 20)  /* request body bytes, else 413 */
#define LLM_MAX_TOKENS    65536       /* max_tokens bound */
#define LLM_MAX_MODEL     256         /* bytes of a request's "model" */
#define LLM_KEEP_BUF      (256 * 1024) /* recycled requests keep buffers up to this size */
#define LLM_EVENT_MAX(mjl) (384 + (mjl)) /* one SSE event without usage, model_json_len mjl */

struct kv_block {
	uint64_t hash;
	int32_t next;              /* bucket chain, -1 at the end */
	uint32_t bucket;
	struct list lru;           /* engine->lru, most recent first */
};

struct llm_engine {
	struct mock_timer timer;   /* TIMER_LLM: end of the current step */
	int stepping;
	uint64_t step_end;         /* deadline of the last step (back-to-back base) */
	struct list waiting, running, kick;
	unsigned nwaiting, nrunning;
	/* KV cache */
	struct kv_block *blocks;
	uint32_t nblocks, used;
	int32_t *buckets;
	uint32_t bucket_mask;
	struct list lru;
	/* counters (tokens) for /metrics */
	uint64_t prefix_queries, prefix_hits, prompt_tokens, generation_tokens, success;
	uint64_t next_num;
};

static const char *const llm_words[8] = { " the", " and", " for", " you", " can", " not",
					   " all", " one" };

/* ------------------------------------------------------------- KV cache */

static uint32_t kv_bucket(const struct llm_engine *e, uint64_t h)
{
	return (uint32_t)(h ^ (h >> 32)) & e->bucket_mask;
}

static int32_t kv_find(const struct llm_engine *e, uint64_t h)
{
	for (int32_t i = e->buckets[kv_bucket(e, h)]; i >= 0; i = e->blocks[i].next)
		if (e->blocks[i].hash == h)
			return i;
	return -1;
}

static void kv_touch(struct llm_engine *e, int32_t i)
{
	list_del_init(&e->blocks[i].lru);
	list_push_front(&e->lru, &e->blocks[i].lru);
}

/* Cache block hash h (touch it when it is there); evicts the least recently
 * used block when full. */
static void kv_insert(struct llm_engine *e, uint64_t h)
{
	int32_t i = kv_find(e, h);
	struct kv_block *b;

	if (i >= 0) {
		kv_touch(e, i);
		return;
	}
	if (e->used < e->nblocks) {
		i = (int32_t)e->used++;
	} else {
		int32_t *pp;
		b = container_of(e->lru.prev, struct kv_block, lru);
		i = (int32_t)(b - e->blocks);
		for (pp = &e->buckets[b->bucket]; *pp != i; pp = &e->blocks[*pp].next)
			;
		*pp = b->next;
		list_del_init(&b->lru);
	}
	b = &e->blocks[i];
	b->hash = h;
	b->bucket = kv_bucket(e, h);
	b->next = e->buckets[b->bucket];
	e->buckets[b->bucket] = i;
	list_push_front(&e->lru, &b->lru);
}

/* ------------------------------------------------------------- requests */

int llm_classify(struct req *r, int method, const char *url, size_t len)
{
	size_t n = len;

	for (size_t i = 0; i < len; i++) {
		if (url[i] == '?') {
			n = i;
			break;
		}
	}
#define PATH(lit) (n == sizeof(lit) - 1 && memcmp(url, lit, n) == 0)
	if (PATH("/v1/chat/completions") || PATH("/v1/completions")) {
		r->llm.chat = PATH("/v1/chat/completions");
		if (method != HTTP_POST) {
			r->llm.err_status = 405;
			r->llm.err = "use POST";
		}
		return REQ_LLM;
	}
	if ((method == HTTP_GET || method == HTTP_HEAD) && PATH("/metrics"))
		return REQ_METRICS;
	if ((method == HTTP_GET || method == HTTP_HEAD) && PATH("/v1/models"))
		return REQ_MODELS;
	if (method == HTTP_POST && PATH("/-/llm/reset"))
		return REQ_LLM_RESET;
#undef PATH
	return REQ_NORMAL;
}

void llm_on_header(struct req *r, const char *name, size_t nlen, const char *val, size_t vlen)
{
	static const char elm[] = "endpoint-load-metrics-format";

	if (nlen != sizeof(elm) - 1 || memcmp(name, elm, nlen) != 0)
		return;
	if (vlen == 4 && strncasecmp(val, "text", 4) == 0)
		r->llm.elm = LLM_ELM_TEXT;
	else if (vlen == 4 && strncasecmp(val, "json", 4) == 0)
		r->llm.elm = LLM_ELM_JSON;
	/* other formats (BIN) are not offered: no header, as vLLM does */
}

static void llm_fail(struct req *r, unsigned status, const char *msg)
{
	if (!r->llm.err_status) {
		r->llm.err_status = status;
		r->llm.err = msg;
	}
}

void llm_on_body(struct req *r, const char *at, size_t len)
{
	struct llm_seq *s = &r->llm;

	if (s->err_status)
		return;
	if (s->body_len + len > LLM_MAX_BODY) {
		llm_fail(r, 413, "request body too large");
		return;
	}
	if (buf_reserve(&s->body, &s->body_cap, s->body_len + len) < 0) {
		llm_fail(r, 500, "out of memory");
		return;
	}
	memcpy(s->body + s->body_len, at, len);
	s->body_len += len;
}

static int prompt_add(struct llm_seq *s, const char *p, size_t n)
{
	if (buf_reserve(&s->prompt, &s->prompt_cap, s->prompt_len + n + 1) < 0)
		return -1;
	memcpy(s->prompt + s->prompt_len, p, n);
	s->prompt_len += n;
	return 0;
}

/* Fill s->prompt from the parsed body. Returns NULL or the reason it is refused. */
static const char *llm_prompt(struct llm_seq *s, json_t *root)
{
	json_t *v;

	s->prompt_len = 0;
	if (!s->chat) {
		v = json_object_get(root, "prompt");
		if (!json_is_string(v))
			return "\"prompt\" must be a string";
		if (prompt_add(s, json_string_value(v), json_string_length(v)) < 0)
			return "out of memory";
		return NULL;
	}
	v = json_object_get(root, "messages");
	if (!json_is_array(v) || json_array_size(v) == 0)
		return "\"messages\" must be a non-empty array";
	for (size_t i = 0; i < json_array_size(v); i++) {
		json_t *m = json_array_get(v, i), *content;
		if (!json_is_object(m))
			return "\"messages\" items must be objects";
		content = json_object_get(m, "content");
		if (json_is_string(content)) {
			if (prompt_add(s, json_string_value(content), json_string_length(content)) < 0)
				return "out of memory";
		} else if (json_is_array(content)) {
			/* content parts: the "text" of each {"type":"text"} part */
			for (size_t j = 0; j < json_array_size(content); j++) {
				json_t *part = json_array_get(content, j);
				json_t *text = json_object_get(part, "text");
				if (!json_is_string(text))
					return "\"content\" parts must have a \"text\" string";
				if (prompt_add(s, json_string_value(text), json_string_length(text)) < 0)
					return "out of memory";
			}
		} else if (!json_is_null(content) && content) {
			return "\"content\" must be a string, an array of parts or null";
		}
	}
	return NULL;
}

/* Parse the body into s. Returns NULL or the reason it is refused (400). */
static const char *llm_parse(struct mock_ctx *ctx, struct llm_seq *s)
{
	json_error_t jerr;
	json_t *root, *v;
	const char *why = NULL, *model = ctx->opt.model;
	size_t mlen = strlen(model);
	json_int_t max_tokens = ctx->opt.max_tokens;

	root = json_loadb(s->body ? s->body : "", s->body_len, 0, &jerr);
	if (!root)
		return "body is not valid JSON";
	if (!json_is_object(root)) {
		why = "body must be a JSON object";
		goto out;
	}
	why = llm_prompt(s, root);
	if (why)
		goto out;
	v = json_object_get(root, "max_tokens");
	if (!v && s->chat)
		v = json_object_get(root, "max_completion_tokens");
	if (v && !json_is_null(v)) {
		if (!json_is_integer(v) || json_integer_value(v) < 1 ||
		    json_integer_value(v) > LLM_MAX_TOKENS) {
			why = "\"max_tokens\" must be an integer 1..65536";
			goto out;
		}
		max_tokens = json_integer_value(v);
	}
	v = json_object_get(root, "stream");
	if (v && !json_is_boolean(v) && !json_is_null(v)) {
		why = "\"stream\" must be a boolean";
		goto out;
	}
	s->stream = json_is_true(v);
	v = json_object_get(json_object_get(root, "stream_options"), "include_usage");
	s->include_usage = s->stream && json_is_true(v);
	v = json_object_get(root, "model");
	if (v && !json_is_null(v)) {
		if (!json_is_string(v) || json_string_length(v) == 0 ||
		    json_string_length(v) > LLM_MAX_MODEL) {
			why = "\"model\" must be a string of 1..256 bytes";
			goto out;
		}
		model = json_string_value(v);
		mlen = json_string_length(v);
	}
	s->max_tokens = (uint32_t)max_tokens;
	s->model_json = malloc(6 * mlen + 3);
	if (!s->model_json) {
		why = "out of memory";
		goto out;
	}
	{
		char *p = s->model_json;
		*p++ = '"';
		p = put_json_str(p, model, mlen);
		*p++ = '"';
		*p = '\0';
	}
out:
	json_decref(root);
	return why;
}

/* Chain hashes of the full blocks of text[0..len), continuing from block
 * `from` (whose predecessors are in s->hashes). Returns 0 or -1 (no memory). */
static int llm_hash_blocks(struct mock_ctx *ctx, struct llm_seq *s, const char *text, size_t len,
			   uint32_t from)
{
	size_t bbytes = (size_t)ctx->opt.block_tokens * 4;
	uint32_t n = (uint32_t)(len / bbytes);

	if (n > s->hash_cap) {
		uint64_t *nh = realloc(s->hashes, n * sizeof(*nh));
		if (!nh)
			return -1;
		s->hashes = nh;
		s->hash_cap = n;
	}
	for (uint32_t i = from; i < n; i++)
		s->hashes[i] = XXH64(text + (size_t)i * bbytes, bbytes, i ? s->hashes[i - 1] : 0);
	s->nhash = n;
	return 0;
}

static void llm_step_start(struct mock_loop *l, uint64_t base);

void llm_submit(struct mock_loop *l, struct req *r)
{
	struct mock_ctx *ctx = l->ctx;
	struct llm_engine *e = l->llm;
	struct llm_seq *s = &r->llm;
	const char *why;

	r->state = RS_READY;
	if (s->err_status)
		return;
	why = llm_parse(ctx, s);
	if (why) {
		llm_fail(r, strcmp(why, "out of memory") ? 400 : 500, why);
		return;
	}
	s->prompt_tokens = (uint32_t)((s->prompt_len + 3) / 4);
	if (!s->prompt_tokens)
		s->prompt_tokens = 1; /* an empty prompt still takes one step */
	if (llm_hash_blocks(ctx, s, s->prompt, s->prompt_len, 0) < 0) {
		llm_fail(r, 500, "out of memory");
		return;
	}
	s->created = (uint64_t)time(NULL);
	s->num = ++e->next_num;
	s->phase = LLM_WAITING;
	list_push_back(&e->waiting, &s->node);
	e->nwaiting++;
	r->state = RS_LLM;
	if (!e->stepping)
		llm_step_start(l, l->now);
}

void llm_abort(struct mock_loop *l, struct req *r)
{
	struct llm_engine *e = l->llm;
	struct llm_seq *s = &r->llm;

	if (!e || !list_linked(&s->node))
		return;
	list_del_init(&s->node);
	if (s->phase == LLM_WAITING)
		e->nwaiting--;
	else if (s->phase == LLM_RUNNING)
		e->nrunning--;
	s->phase = LLM_NONE;
}

void llm_req_recycle(struct req *r, int keep)
{
	struct llm_seq *s = &r->llm;

	free(s->model_json);
	s->model_json = NULL;
	if (!keep || s->body_cap > LLM_KEEP_BUF) {
		free(s->body);
		s->body = NULL;
		s->body_cap = 0;
	}
	if (!keep || s->prompt_cap > LLM_KEEP_BUF) {
		free(s->prompt);
		s->prompt = NULL;
		s->prompt_cap = 0;
	}
	if (!keep || s->hash_cap > LLM_KEEP_BUF / 8) {
		free(s->hashes);
		s->hashes = NULL;
		s->hash_cap = 0;
	}
	s->body_len = s->prompt_len = 0;
}

void llm_conn_gone(struct conn *c)
{
	list_del_init(&c->kick);
}

/* --------------------------------------------------------------- engine */

static struct req *seq_req(struct llm_seq *s)
{
	return container_of(s, struct req, llm);
}

/* Start a step at base if there is work: admit waiting sequences (FIFO) up
 * to --max-batch, price the step, arm the timer. */
static void llm_step_start(struct mock_loop *l, uint64_t base)
{
	struct mock_ctx *ctx = l->ctx;
	struct llm_engine *e = l->llm;
	uint64_t prefill = 0;
	int decoding = e->nrunning > 0;
	double ns;

	while (e->nrunning < ctx->opt.max_batch && !list_empty(&e->waiting)) {
		struct llm_seq *s = container_of(list_pop_front(&e->waiting), struct llm_seq, node);
		uint32_t hit = 0, cached;

		e->nwaiting--;
		while (hit < s->nhash) {
			int32_t i = kv_find(e, s->hashes[hit]);
			if (i < 0)
				break;
			kv_touch(e, i);
			hit++;
		}
		cached = hit * ctx->opt.block_tokens;
		if (cached >= s->prompt_tokens)
			cached = s->prompt_tokens - 1; /* the last token is always computed */
		s->cached_tokens = cached;
		s->prefilling = 1;
		s->phase = LLM_RUNNING;
		prefill += s->prompt_tokens - cached;
		e->prefix_queries += s->prompt_tokens;
		e->prefix_hits += cached;
		e->prompt_tokens += s->prompt_tokens;
		list_push_back(&e->running, &s->node);
		e->nrunning++;
	}
	if (!e->nrunning)
		return;
	ns = (double)prefill * ctx->opt.prefill_us * 1e3 + (decoding ? ctx->opt.decode_us * 1e3 : 0);
	e->stepping = 1;
	e->timer.deadline = base + (uint64_t)ns;
	if (heap_push(l, &e->timer) < 0)
		e->stepping = 0; /* out of memory: the next request retries */
}

static void kick_later(struct llm_engine *e, struct conn *c)
{
	if (!list_linked(&c->kick))
		list_push_back(&e->kick, &c->kick);
}

/* Cache the blocks of prompt + output once s has finished. */
static void llm_cache_output(struct mock_ctx *ctx, struct llm_engine *e, struct llm_seq *s)
{
	uint32_t from = s->nhash;
	size_t len = s->prompt_len;

	for (uint32_t i = 0; i < s->generated; i++)
		if (prompt_add(s, llm_words[i % 8], 4) < 0)
			return;
	if (llm_hash_blocks(ctx, s, s->prompt, s->prompt_len, from) < 0)
		return;
	for (uint32_t i = from; i < s->nhash; i++)
		kv_insert(e, s->hashes[i]);
	s->prompt_len = len;
}

void llm_step_done(struct mock_loop *l)
{
	struct mock_ctx *ctx = l->ctx;
	struct llm_engine *e = l->llm;
	struct list *pos, *tmp;

	e->stepping = 0;
	e->step_end = e->timer.deadline;
	list_for_each_safe(pos, tmp, &e->running) {
		struct llm_seq *s = container_of(pos, struct llm_seq, node);

		if (s->prefilling) {
			s->prefilling = 0;
			for (uint32_t i = 0; i < s->nhash; i++)
				kv_insert(e, s->hashes[i]);
		}
		s->generated++;
		e->generation_tokens++;
		if (s->generated >= s->max_tokens) {
			list_del_init(&s->node);
			e->nrunning--;
			s->phase = LLM_DONE;
			e->success++;
			llm_cache_output(ctx, e, s);
		}
		kick_later(e, seq_req(s)->conn);
	}
	/* back to back: the next step starts when this one ended, whatever the
	 * loop's lateness, so the modelled throughput is exact */
	llm_step_start(l, e->step_end);
	while (!list_empty(&e->kick)) {
		struct conn *c = container_of(list_pop_front(&e->kick), struct conn, kick);
		conn_kick(l, c);
	}
}

int llm_engine_init(struct mock_loop *l)
{
	const struct mock_opts *o = &l->ctx->opt;
	struct llm_engine *e = calloc(1, sizeof(*e));
	uint32_t nb = 1;

	if (!e)
		return -ENOMEM;
	l->llm = e;
	e->timer.idx = -1;
	e->timer.kind = TIMER_LLM;
	list_init(&e->waiting);
	list_init(&e->running);
	list_init(&e->kick);
	list_init(&e->lru);
	while (nb < 2 * o->kv_blocks)
		nb <<= 1;
	e->nblocks = o->kv_blocks;
	e->blocks = calloc(o->kv_blocks, sizeof(*e->blocks));
	e->buckets = malloc(nb * sizeof(*e->buckets));
	if (!e->blocks || !e->buckets)
		return -ENOMEM;
	for (uint32_t i = 0; i < o->kv_blocks; i++)
		list_init(&e->blocks[i].lru);
	memset(e->buckets, 0xff, nb * sizeof(*e->buckets));
	e->bucket_mask = nb - 1;
	return 0;
}

void llm_engine_destroy(struct mock_loop *l)
{
	struct llm_engine *e = l->llm;

	if (!e)
		return;
	heap_remove(l, &e->timer);
	free(e->blocks);
	free(e->buckets);
	free(e);
	l->llm = NULL;
}

/* ----------------------------------------------------------------- load */

/* Full prompt blocks sequences a and b share: their chain hashes are
 * equal up to some block and differ after it (a chain hash names the
 * whole prefix), so the first difference is found by binary search. */
static uint32_t shared_blocks(const struct llm_seq *a, const struct llm_seq *b)
{
	uint32_t lo = 0, hi = a->nhash < b->nhash ? a->nhash : b->nhash;

	while (lo < hi) { /* invariant: the first lo blocks are shared */
		uint32_t mid = lo + (hi - lo + 1) / 2;
		if (a->hashes[mid - 1] == b->hashes[mid - 1])
			lo = mid;
		else
			hi = mid - 1;
	}
	return lo;
}

/* KV use as vLLM reports it (kv_cache_usage_perc, from its block pool:
 * 1 - free blocks / all blocks): the blocks held by running sequences,
 * a block that several of them share (a common prefix) counted once.
 * Cached blocks no running sequence holds are free (evictable), not used.
 * Distinct blocks: each sequence's blocks (prompt + generated so far)
 * less the longest prefix it shares with an earlier one (the prefixes
 * form a tree). At most 1. */
static double llm_kv_usage(const struct mock_ctx *ctx, const struct llm_engine *e)
{
	uint64_t held = 0;
	double u;

	for (const struct list *pos = e->running.next; pos != &e->running; pos = pos->next) {
		const struct llm_seq *s = container_of(pos, const struct llm_seq, node);
		uint32_t shared = 0;

		for (const struct list *q = e->running.next; q != pos; q = q->next) {
			uint32_t k = shared_blocks(s, container_of(q, const struct llm_seq, node));
			if (k > shared)
				shared = k;
		}
		held += (s->prompt_tokens + s->generated + ctx->opt.block_tokens - 1) /
			ctx->opt.block_tokens - shared;
	}
	u = (double)held / (double)ctx->opt.kv_blocks;
	return u > 1 ? 1 : u;
}

/* The endpoint-load-metrics header (vLLM's spelling and values) or nothing. */
static char *put_load_header(struct mock_loop *l, char *p, const struct llm_seq *s)
{
	struct llm_engine *e = l->llm;
	double kv = llm_kv_usage(l->ctx, e);
	int n = 0;

	if (s->elm == LLM_ELM_TEXT)
		n = sprintf(p, "endpoint-load-metrics: TEXT named_metrics.kv_cache_usage_perc=%.4f, "
			       "named_metrics.num_requests_waiting=%u.0\r\n", kv, e->nwaiting);
	else if (s->elm == LLM_ELM_JSON)
		n = sprintf(p, "endpoint-load-metrics: JSON {\"named_metrics\": {\"kv_cache_usage_perc\": "
			       "%.4f, \"num_requests_waiting\": %u.0}}\r\n", kv, e->nwaiting);
	return p + n;
}

/* ------------------------------------------------------------ responses */

/* The common start of every answer object: {"id":...,"object":...,"created":N,"model":M */
static char *put_obj_start(char *p, const struct llm_seq *s, const char *object)
{
	p = PUTS(p, "{\"id\":\"");
	p = put(p, s->chat ? "chatcmpl-" : "cmpl-", s->chat ? 9 : 5);
	p = put_u64(p, s->num);
	p = PUTS(p, "\",\"object\":\"");
	p = put(p, object, strlen(object));
	p = PUTS(p, "\",\"created\":");
	p = put_u64(p, s->created);
	p = PUTS(p, ",\"model\":");
	return put(p, s->model_json, strlen(s->model_json));
}

static char *put_usage(char *p, const struct llm_seq *s)
{
	p = PUTS(p, "\"usage\":{\"prompt_tokens\":");
	p = put_u64(p, s->prompt_tokens);
	p = PUTS(p, ",\"completion_tokens\":");
	p = put_u64(p, s->generated);
	p = PUTS(p, ",\"total_tokens\":");
	p = put_u64(p, (uint64_t)s->prompt_tokens + s->generated);
	p = PUTS(p, ",\"prompt_tokens_details\":{\"cached_tokens\":");
	p = put_u64(p, s->cached_tokens);
	return PUTS(p, "}}");
}

/* Queue one SSE event (data: EVENT\n\n) from l->tmp[0..n), chunk-framed
 * unless HTTP/1.0. */
static int put_event(struct conn *c, const struct req *r, const char *ev, size_t n)
{
	int framed = !(r->flags & REQ_FL_HTTP10);
	char *p = out_reserve(c, n + 32);

	if (!p)
		return -ENOMEM;
	if (framed) {
		p = put_hex(p, n + 8);
		p = PUTS(p, "\r\n");
	}
	p = PUTS(p, "data: ");
	p = put(p, ev, n);
	p = PUTS(p, "\n\n");
	if (framed)
		p = PUTS(p, "\r\n");
	out_commit(c, p);
	return 0;
}

static int llm_head(struct mock_loop *l, struct conn *c, struct req *r, size_t content_length)
{
	struct mock_ctx *ctx = l->ctx;
	struct llm_seq *s = &r->llm;
	char *p = out_reserve(c, MOCK_HEAD_MAX(ctx) + 256);

	if (!p)
		return -ENOMEM;
	p = put_status(p, 200);
	if (s->stream) {
		p = PUTS(p, "Content-Type: text/event-stream\r\nCache-Control: no-cache\r\n");
		if (!(r->flags & REQ_FL_HTTP10))
			p = PUTS(p, "Transfer-Encoding: chunked\r\n");
	} else {
		p = PUTS(p, "Content-Type: application/json\r\nContent-Length: ");
		p = put_u64(p, content_length);
		p = PUTS(p, "\r\n");
	}
	p = put_load_header(l, p, s);
	p = put_head_end(ctx, p, r);
	out_commit(c, p);
	s->head_sent = 1;
	return 0;
}

static int llm_emit_stream(struct mock_loop *l, struct conn *c, struct req *r)
{
	struct llm_seq *s = &r->llm;
	size_t mjl = strlen(s->model_json);
	char *p;
	int err;

	if (!s->head_sent) {
		if ((r->flags & REQ_FL_HTTP10) && !(r->flags & REQ_FL_LAST)) {
			/* no chunked framing in 1.0: the close ends the stream */
			r->flags |= REQ_FL_LAST;
			c->flags |= CONN_FL_NO_READ;
			while (c->reqs.prev != &r->node)
				req_release(l, c, container_of(c->reqs.prev, struct req, node));
		}
		err = llm_head(l, c, r, 0);
		if (err)
			return err;
	}
	if (buf_reserve(&l->tmp, &l->tmp_cap, LLM_EVENT_MAX(mjl) + 256) < 0)
		return -ENOMEM;
	while (s->emitted < s->generated) {
		uint32_t i = s->emitted++;
		int last = s->emitted == s->max_tokens;

		p = put_obj_start(l->tmp, s, s->chat ? "chat.completion.chunk" : "text_completion");
		p = PUTS(p, ",\"choices\":[{\"index\":0,");
		if (s->chat) {
			p = PUTS(p, "\"delta\":{");
			if (i == 0)
				p = PUTS(p, "\"role\":\"assistant\",");
			p = PUTS(p, "\"content\":\"");
			p = put(p, llm_words[i % 8], 4);
			p = PUTS(p, "\"},");
		} else {
			p = PUTS(p, "\"text\":\"");
			p = put(p, llm_words[i % 8], 4);
			p = PUTS(p, "\",\"logprobs\":null,");
		}
		p = last ? PUTS(p, "\"finish_reason\":\"length\"}]}") : PUTS(p, "\"finish_reason\":null}]}");
		err = put_event(c, r, l->tmp, (size_t)(p - l->tmp));
		if (err)
			return err;
	}
	if (s->phase != LLM_DONE || s->emitted < s->generated)
		return 0;
	if (s->include_usage) {
		p = put_obj_start(l->tmp, s, s->chat ? "chat.completion.chunk" : "text_completion");
		p = PUTS(p, ",\"choices\":[],");
		p = put_usage(p, s);
		*p++ = '}';
		err = put_event(c, r, l->tmp, (size_t)(p - l->tmp));
		if (err)
			return err;
	}
	err = put_event(c, r, "[DONE]", 6);
	if (err)
		return err;
	if (!(r->flags & REQ_FL_HTTP10)) {
		p = out_reserve(c, 5);
		if (!p)
			return -ENOMEM;
		out_commit(c, PUTS(p, "0\r\n\r\n"));
	}
	req_queued(c, r);
	return 0;
}

static int llm_emit_whole(struct mock_loop *l, struct conn *c, struct req *r)
{
	struct llm_seq *s = &r->llm;
	size_t mjl = strlen(s->model_json), n;
	char *p;
	int err;

	if (s->phase != LLM_DONE)
		return 0;
	if (buf_reserve(&l->tmp, &l->tmp_cap, 512 + mjl + 4 * (size_t)s->generated) < 0)
		return -ENOMEM;
	p = put_obj_start(l->tmp, s, s->chat ? "chat.completion" : "text_completion");
	p = PUTS(p, ",\"choices\":[{\"index\":0,");
	p = s->chat ? PUTS(p, "\"message\":{\"role\":\"assistant\",\"content\":\"") : PUTS(p, "\"text\":\"");
	for (uint32_t i = 0; i < s->generated; i++)
		p = put(p, llm_words[i % 8], 4);
	p = s->chat ? PUTS(p, "\"},") : PUTS(p, "\",\"logprobs\":null,");
	p = PUTS(p, "\"finish_reason\":\"length\"}],");
	p = put_usage(p, s);
	*p++ = '}';
	n = (size_t)(p - l->tmp);
	err = llm_head(l, c, r, n);
	if (err)
		return err;
	if (!(r->flags & REQ_FL_HEAD)) {
		p = out_reserve(c, n);
		if (!p)
			return -ENOMEM;
		out_commit(c, put(p, l->tmp, n));
	}
	s->emitted = s->generated;
	req_queued(c, r);
	return 0;
}

int llm_emit(struct mock_loop *l, struct conn *c, struct req *r)
{
	return r->llm.stream ? llm_emit_stream(l, c, r) : llm_emit_whole(l, c, r);
}

static int llm_emit_metrics(struct mock_loop *l, struct conn *c, struct req *r)
{
	struct mock_ctx *ctx = l->ctx;
	struct llm_engine *e = l->llm;
	size_t mjl = 6 * strlen(ctx->opt.model) + 2, cap = 4096 + 16 * mjl;
	double kv = llm_kv_usage(ctx, e);
	char lbl[6 * MOCK_MAX_ID + 32], *q = lbl;
	int n;

	q = PUTS(q, "{model_name=\"");
	q = put_json_str(q, ctx->opt.model, strlen(ctx->opt.model)); /* same escapes as Prometheus' */
	q = PUTS(q, "\"}");
	*q = '\0';
	if (buf_reserve(&l->tmp, &l->tmp_cap, cap) < 0)
		return -ENOMEM;
	n = snprintf(l->tmp, cap,
		     "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
		     "# TYPE vllm:num_requests_running gauge\n"
		     "vllm:num_requests_running%s %u\n"
		     "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
		     "# TYPE vllm:num_requests_waiting gauge\n"
		     "vllm:num_requests_waiting%s %u\n"
		     "# HELP vllm:gpu_cache_usage_perc KV-cache usage. 1 means 100 percent usage.\n"
		     "# TYPE vllm:gpu_cache_usage_perc gauge\n"
		     "vllm:gpu_cache_usage_perc%s %.6f\n"
		     "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.\n"
		     "# TYPE vllm:kv_cache_usage_perc gauge\n"
		     "vllm:kv_cache_usage_perc%s %.6f\n"
		     "# HELP vllm:prefix_cache_queries_total Prefix cache queries, in queried tokens.\n"
		     "# TYPE vllm:prefix_cache_queries_total counter\n"
		     "vllm:prefix_cache_queries_total%s %llu\n"
		     "# HELP vllm:prefix_cache_hits_total Prefix cache hits, in cached tokens.\n"
		     "# TYPE vllm:prefix_cache_hits_total counter\n"
		     "vllm:prefix_cache_hits_total%s %llu\n"
		     "# HELP vllm:prompt_tokens_total Number of prefill tokens processed.\n"
		     "# TYPE vllm:prompt_tokens_total counter\n"
		     "vllm:prompt_tokens_total%s %llu\n"
		     "# HELP vllm:generation_tokens_total Number of generation tokens processed.\n"
		     "# TYPE vllm:generation_tokens_total counter\n"
		     "vllm:generation_tokens_total%s %llu\n"
		     "# HELP vllm:request_success_total Count of successfully processed requests.\n"
		     "# TYPE vllm:request_success_total counter\n"
		     "vllm:request_success_total%s %llu\n",
		     lbl, e->nrunning, lbl, e->nwaiting, lbl, kv, lbl, kv,
		     lbl, (unsigned long long)e->prefix_queries, lbl, (unsigned long long)e->prefix_hits,
		     lbl, (unsigned long long)e->prompt_tokens, lbl, (unsigned long long)e->generation_tokens,
		     lbl, (unsigned long long)e->success);
	if (n < 0 || (size_t)n >= cap)
		return -ENOMEM;
	{
		char *p = out_reserve(c, MOCK_HEAD_MAX(ctx) + 64 + (size_t)n);
		if (!p)
			return -ENOMEM;
		p = put_status(p, 200);
		p = PUTS(p, "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: ");
		p = put_u64(p, (uint64_t)n);
		p = PUTS(p, "\r\n");
		p = put_head_end(ctx, p, r);
		if (!(r->flags & REQ_FL_HEAD))
			p = put(p, l->tmp, (size_t)n);
		out_commit(c, p);
	}
	req_queued(c, r);
	return 0;
}

int llm_emit_simple(struct mock_loop *l, struct conn *c, struct req *r)
{
	struct mock_ctx *ctx = l->ctx;
	const char *msg;
	char *p;

	if (r->kind == REQ_METRICS)
		return llm_emit_metrics(l, c, r);
	if (r->kind == REQ_LLM_RESET) {
		/* between benchmark runs: every contender starts from a cold cache */
		struct llm_engine *e = l->llm;
		for (uint32_t i = 0; i < e->used; i++)
			list_del_init(&e->blocks[i].lru);
		memset(e->buckets, 0xff, ((size_t)e->bucket_mask + 1) * sizeof(*e->buckets));
		e->used = 0;
		e->prefix_queries = e->prefix_hits = e->prompt_tokens = 0;
		e->generation_tokens = e->success = 0;
		return emit_simple(ctx, c, r, 200, "{\"ok\":true}", 11);
	}
	if (buf_reserve(&l->tmp, &l->tmp_cap, 256 + 6 * strlen(ctx->opt.model)) < 0)
		return -ENOMEM;
	p = l->tmp;
	if (r->kind == REQ_MODELS) {
		p = PUTS(p, "{\"object\":\"list\",\"data\":[{\"id\":\"");
		p = put_json_str(p, ctx->opt.model, strlen(ctx->opt.model));
		p = PUTS(p, "\",\"object\":\"model\",\"owned_by\":\"mock-replica\"}]}");
		return emit_simple(ctx, c, r, 200, l->tmp, (size_t)(p - l->tmp));
	}
	/* a refused REQ_LLM: OpenAI's error shape */
	msg = r->llm.err ? r->llm.err : "bad request";
	p = PUTS(p, "{\"error\":{\"message\":\"");
	p = put_json_str(p, msg, strlen(msg));
	p = PUTS(p, "\",\"type\":\"invalid_request_error\",\"code\":");
	p = put_u64(p, r->llm.err_status ? r->llm.err_status : 400);
	p = PUTS(p, "}}");
	return emit_simple(ctx, c, r, r->llm.err_status ? r->llm.err_status : 400, l->tmp,
			   (size_t)(p - l->tmp));
}
