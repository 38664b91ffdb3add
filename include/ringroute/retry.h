/* Retries: the request bytes kept so that a request can be sent again, and
 * the decision whether a failed attempt is tried again (README "Retries").
 * Pure bookkeeping: the request layer acts on the decision. */
#ifndef RINGROUTE_RETRY_H
#define RINGROUTE_RETRY_H

#include <stddef.h>
#include <stdint.h>

#include "ringroute/request.h"

struct shard;

/* Keep body bytes of req for a replay (a provided buffer is referenced,
 * other bytes copied). Past REPLAY_MAX, or when memory runs out, nothing
 * is kept any more and req cannot be retried (REQ_F_NO_REPLAY). */
void retry_keep(struct shard *s, struct request *req, uint32_t bid, const char *p, size_t len);
/* Drop what was kept and forbid retries (the response began, or req ends). */
void retry_forbid(struct shard *s, struct request *req);
/* Free the kept bytes' bookkeeping (req ends). */
void retry_free(struct shard *s, struct request *req);

enum retry_action {
	RETRY_NONE = 0,     /* answer the failure */
	RETRY_FRESH,        /* same replica, new connection (a pooled one died idle) */
	RETRY_OTHER,        /* another replica (this one refused or timed out connecting) */
};

/* What to do after an attempt of req failed with f. reused: the attempt
 * ran on a pooled connection that died before any response byte. */
enum retry_action retry_decide(const struct request *req, enum up_failure f, int reused);

#endif
