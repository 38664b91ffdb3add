/* Retries: the request bytes kept so that a request can be sent again, and
 * the decision whether a failed attempt is tried again (README "Retries").
 * Pure bookkeeping: the request layer acts on the decision. */
#ifndef RINGROUTE_RETRY_H
#define RINGROUTE_RETRY_H

#include <stddef.h>
#include <stdint.h>

#include "ringroute/request.h"

struct shard;
struct backend_state;

/* Keep body bytes of req for a replay (a provided buffer is referenced,
 * other bytes copied). Past REPLAY_MAX, or when memory runs out, nothing
 * is kept any more and req cannot be retried (REQ_F_NO_REPLAY). */
void retry_keep(struct shard *s, struct request *req, uint32_t bid, const char *p, size_t len);
/* A body held before routing (request.c): the same kept segments, with no
 * REPLAY_MAX bound (the caller bounds it by route_body_max_bytes). They
 * are what the first attempt sends, and a retry's replay while within
 * REPLAY_MAX (retry_keep forbids beyond). The first HOLD_REF_MAX bytes
 * are the receive buffers, referenced; the rest is copied. 0, or -ENOMEM
 * with nothing kept of these bytes. */
int retry_hold(struct shard *s, struct request *req, uint32_t bid, const char *p, size_t len);
#define HOLD_REF_MAX (256u << 10) /* held bytes beyond this are copied, not referenced */
/* Replace what was kept by own[0..len) (mi_malloc'ed): the rewritten
 * body. own belongs to req from now on: 0, or -ENOMEM with own freed and
 * nothing kept. */
int retry_replace(struct shard *s, struct request *req, char *own, size_t len);
/* Drop what was kept and forbid retries (the response began, or req ends). */
void retry_forbid(struct shard *s, struct request *req);
/* Free the kept bytes' bookkeeping (req ends). */
void retry_free(struct shard *s, struct request *req);

/* What a backend's retry_on may name (docs/config.md). */
enum {
	RETRY_ON_CONNECT = 1u << 0,  /* "connect-failure": refused, unreachable, connect timeout */
	RETRY_ON_RESET   = 1u << 1,  /* "reset-before-response": closed before any response
	                              * byte; idempotent methods only, whatever retry_on says */
	RETRY_ON_503     = 1u << 2,  /* "503": the replica's 503 is not forwarded */
	RETRY_ON_429     = 1u << 3,  /* "429": likewise */
};
#define RETRY_ON_DEFAULT (RETRY_ON_CONNECT | RETRY_ON_RESET)
#define RETRY_ON_NAMES 4
/* The name of bit i of retry_on (i < RETRY_ON_NAMES), as config.c reads
 * and writes it. */
const char *retry_on_name(unsigned i);

/* What failed an attempt, as retry_on sees it. */
enum retry_cause {
	RETRY_CAUSE_CONNECT = 0,     /* the replica never took the request */
	RETRY_CAUSE_RESET,           /* closed or reset before any response byte */
	RETRY_CAUSE_503,             /* answered 503 */
	RETRY_CAUSE_429,             /* answered 429 */
	RETRY_CAUSE_TIMEOUT,         /* no byte for request_timeout_ms: never retried (it
	                              * may be running, and long) */
	RETRY_CAUSE_OTHER,           /* a bad response, no memory: never on another replica */
};

enum retry_action {
	RETRY_NONE = 0,     /* answer the failure */
	RETRY_FRESH,        /* same replica, new connection (a pooled one died idle) */
	RETRY_OTHER,        /* another replica, after a backoff, within the budget */
};

/* What to do after an attempt of req failed with cause c. reused: the
 * attempt ran on a pooled connection that died before any response byte.
 * Reads only req's flags, tries, idempotent, rs and be (retries,
 * retry_on): pure. */
enum retry_action retry_decide(const struct request *req, enum retry_cause c, int reused);

/* RFC 9110 9.2.2: may a request with this llhttp method be sent twice?
 * GET HEAD OPTIONS TRACE PUT DELETE. */
int retry_idempotent(unsigned method);

/* The retry budget: retries in flight (requests of the backend that were
 * retried and have not ended) stay within pct percent of its requests in
 * flight, but a quiet backend may always have RETRY_BUDGET_FLOOR: so that
 * retries cannot multiply the load on a backend that fails everything. */
#define RETRY_BUDGET_FLOOR 3u
/* Would one more retry fit? Pure: retrying and inflight as read. */
int retry_budget_allows(uint32_t retrying, uint32_t inflight, uint32_t pct);
/* Take one retry of the budget of bs (atomically, against the other
 * shards): 1 taken (give it back with retry_budget_put when the request
 * ends), 0 refused. */
int retry_budget_take(struct backend_state *bs, uint32_t pct);
void retry_budget_put(struct backend_state *bs);

/* The wait before try number attempt (1, 2, ...) on another replica:
 * RETRY_BACKOFF_BASE_MS * attempt, its upper half jittered (equal jitter):
 * never 0, so that a retry does not land in the very instant of the
 * failure it runs from, and spread so that the failed requests of one
 * burst do not come back as one burst. */
#define RETRY_BACKOFF_BASE_MS 20u
uint32_t retry_backoff_ms(uint64_t *rng, uint32_t attempt);

/* The delta-seconds of a Retry-After value (v, n bytes), capped at
 * RETRY_AFTER_MAX_S; 0 when absent, 0, or not delta-seconds (an
 * HTTP-date is not honoured). */
#define RETRY_AFTER_MAX_S 300u
uint32_t retry_after_seconds(const char *v, size_t n);

#endif
