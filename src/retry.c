/* Retries (see retry.h). */
#include "ringroute/retry.h"

#include <errno.h>
#include <string.h>

#include "ringroute/alloc.h"
#include "ringroute/bufring.h"
#include "ringroute/router.h"
#include "ringroute/shard.h"

static void replay_clear(struct shard *s, struct request *req)
{
	for (uint32_t i = 0; i < req->nreplay; i++) {
		if (req->replay[i].bid >= 0)
			bufring_unref(&s->br, (uint32_t)req->replay[i].bid);
		mi_free(req->replay[i].own);
	}
	req->nreplay = 0;
	req->replay_bytes = 0;
}

void retry_forbid(struct shard *s, struct request *req)
{
	replay_clear(s, req);
	req->flags |= REQ_F_NO_REPLAY;
}

void retry_free(struct shard *s, struct request *req)
{
	replay_clear(s, req);
	mi_free(req->replay);
	req->replay = NULL;
	req->capreplay = 0;
}

/* Append one segment to req's kept bytes: the buffer referenced, or
 * the bytes copied. 0 or -ENOMEM (nothing changed). */
static int keep_seg(struct shard *s, struct request *req, uint32_t bid, const char *p, size_t len)
{
	struct seg g = {.p = p, .len = (uint32_t)len, .bid = (int32_t)bid, .own = NULL};

	if (req->nreplay == req->capreplay) {
		uint32_t cap = req->capreplay ? req->capreplay * 2 : 8;
		struct seg *v = mi_realloc(req->replay, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		req->replay = v;
		req->capreplay = cap;
	}
	if (bid == BID_NONE || bufring_ref(&s->br, bid)) {
		char *own = mi_malloc(len);
		if (!own)
			return -ENOMEM;
		memcpy(own, p, len);
		g = (struct seg){.p = own, .len = (uint32_t)len, .bid = -1, .own = own};
	}
	req->replay[req->nreplay++] = g;
	req->replay_bytes += len;
	return 0;
}

void retry_keep(struct shard *s, struct request *req, uint32_t bid, const char *p, size_t len)
{
	if (req->flags & REQ_F_NO_REPLAY)
		return;
	if (req->replay_bytes + len > REPLAY_MAX || keep_seg(s, req, bid, p, len))
		retry_forbid(s, req);
}

int retry_hold(struct shard *s, struct request *req, uint32_t bid, const char *p, size_t len)
{
	if (!len)
		return 0;
	/* Past HOLD_REF_MAX the bytes are copied: a body held up to 64 MiB
	 * must not pin the shard's whole receive ring (1024 buffers), which
	 * would leave nothing to read its own rest into. */
	if (req->replay_bytes >= HOLD_REF_MAX)
		bid = BID_NONE;
	return keep_seg(s, req, bid, p, len);
}

int retry_replace(struct shard *s, struct request *req, char *own, size_t len)
{
	replay_clear(s, req);
	if (!len) {
		mi_free(own);
		return 0;
	}
	if (!req->capreplay) {
		struct seg *v = mi_malloc(sizeof(*v));
		if (!v) {
			mi_free(own);
			return -ENOMEM;
		}
		req->replay = v;
		req->capreplay = 1;
	}
	req->replay[0] = (struct seg){.p = own, .len = (uint32_t)len, .bid = -1, .own = own};
	req->nreplay = 1;
	req->replay_bytes = len;
	return 0;
}

static const char *const retry_on_names[RETRY_ON_NAMES] = {
	"connect-failure", "reset-before-response", "503", "429",
};

const char *retry_on_name(unsigned i)
{
	return i < RETRY_ON_NAMES ? retry_on_names[i] : NULL;
}

int retry_idempotent(unsigned method)
{
	switch (method) {
	case HTTP_GET: case HTTP_HEAD: case HTTP_OPTIONS: case HTTP_TRACE:
	case HTTP_PUT: case HTTP_DELETE:
		return 1;
	}
	return 0;
}

enum retry_action retry_decide(const struct request *req, enum retry_cause c, int reused)
{
	static const uint32_t bit[] = {
		[RETRY_CAUSE_CONNECT] = RETRY_ON_CONNECT,
		[RETRY_CAUSE_RESET] = RETRY_ON_RESET,
		[RETRY_CAUSE_503] = RETRY_ON_503,
		[RETRY_CAUSE_429] = RETRY_ON_429,
		[RETRY_CAUSE_TIMEOUT] = 0,
		[RETRY_CAUSE_OTHER] = 0,
	};

	if (req->flags & REQ_F_NO_REPLAY)
		return RETRY_NONE;
	/* A pooled keep-alive connection died under us before answering: the
	 * replica probably closed it while idle, and never saw the request.
	 * Once more, fresh, whatever the method and retry_on. */
	if (reused && c != RETRY_CAUSE_TIMEOUT && !(req->flags & REQ_F_FRESH_DONE) && req->rs)
		return RETRY_FRESH;
	if (!req->be || req->tries >= req->be->retries || !(req->be->retry_on & bit[c]))
		return RETRY_NONE;
	/* A fresh connection that took the request and closed may have run
	 * it: only a method that may run twice is sent again. */
	if (c == RETRY_CAUSE_RESET && !req->idempotent)
		return RETRY_NONE;
	return RETRY_OTHER;
}

int retry_budget_allows(uint32_t retrying, uint32_t inflight, uint32_t pct)
{
	uint64_t cap = (uint64_t)inflight * pct / 100u;

	if (cap < RETRY_BUDGET_FLOOR)
		cap = RETRY_BUDGET_FLOOR;
	return retrying < cap;
}

int retry_budget_take(struct backend_state *bs, uint32_t pct)
{
	uint32_t r = atomic_load_explicit(&bs->retrying, memory_order_relaxed);

	do {
		if (!retry_budget_allows(r, atomic_load_explicit(&bs->inflight, memory_order_relaxed),
					 pct))
			return 0;
	} while (!atomic_compare_exchange_weak_explicit(&bs->retrying, &r, r + 1,
							memory_order_relaxed,
							memory_order_relaxed));
	return 1;
}

void retry_budget_put(struct backend_state *bs)
{
	atomic_fetch_sub_explicit(&bs->retrying, 1, memory_order_relaxed);
}

uint32_t retry_backoff_ms(uint64_t *rng, uint32_t attempt)
{
	uint32_t span = RETRY_BACKOFF_BASE_MS * (attempt ? attempt : 1);

	return span / 2 + (uint32_t)(router_rand(rng) % (span - span / 2 + 1));
}

uint32_t retry_after_seconds(const char *v, size_t n)
{
	uint64_t x = 0;
	size_t i = 0;

	while (i < n && (v[i] == ' ' || v[i] == '\t'))
		i++;
	while (n > i && (v[n - 1] == ' ' || v[n - 1] == '\t'))
		n--;
	if (i == n)
		return 0;
	for (; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return 0;
		if (x < RETRY_AFTER_MAX_S)
			x = x * 10 + (uint64_t)(v[i] - '0');
	}
	return x > RETRY_AFTER_MAX_S ? RETRY_AFTER_MAX_S : (uint32_t)x;
}
