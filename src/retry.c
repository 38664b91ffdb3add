/* Retries (see retry.h). */
#include "ringroute/retry.h"

#include <string.h>

#include "ringroute/alloc.h"
#include "ringroute/bufring.h"
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

void retry_keep(struct shard *s, struct request *req, uint32_t bid, const char *p, size_t len)
{
	struct seg g = {.p = p, .len = (uint32_t)len, .bid = (int32_t)bid, .own = NULL};

	if (req->flags & REQ_F_NO_REPLAY)
		return;
	if (req->replay_bytes + len > REPLAY_MAX)
		goto forbid;
	if (req->nreplay == req->capreplay) {
		uint32_t cap = req->capreplay ? req->capreplay * 2 : 8;
		struct seg *v = mi_realloc(req->replay, cap * sizeof(*v));
		if (!v)
			goto forbid;
		req->replay = v;
		req->capreplay = cap;
	}
	if (bid == BID_NONE || bufring_ref(&s->br, bid)) {
		char *own = mi_malloc(len);
		if (!own)
			goto forbid;
		memcpy(own, p, len);
		g = (struct seg){.p = own, .len = (uint32_t)len, .bid = -1, .own = own};
	}
	req->replay[req->nreplay++] = g;
	req->replay_bytes += len;
	return;
forbid:
	retry_forbid(s, req);
}

enum retry_action retry_decide(const struct request *req, enum up_failure f, int reused)
{
	int replayable = !(req->flags & REQ_F_NO_REPLAY);

	if (!replayable)
		return RETRY_NONE;
	/* A pooled keep-alive connection died under us before answering: the
	 * replica probably closed it while idle. Once more, fresh. */
	if (reused && f != UP_FAIL_TIMEOUT && !(req->flags & REQ_F_FRESH_DONE) && req->rs)
		return RETRY_FRESH;
	/* The replica never got the request: another one may take it. A
	 * failure after a fresh connection took it is not retried (it may
	 * have run). */
	if (f == UP_FAIL_CONNECT && req->be && req->tries < req->be->retries)
		return RETRY_OTHER;
	return RETRY_NONE;
}
