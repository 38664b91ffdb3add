/* mock-replica: the process-wide counters of GET /-/stats (atomics shared by
 * the loops). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mock.h"

/* ------------------------------------------------------------------ stats */

int64_t stats_inflight_inc(struct mock_ctx *ctx)
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
void req_account(struct mock_ctx *ctx, struct req *r, int dir)
{
	int counts = r->kind == REQ_NORMAL || r->kind == REQ_LLM;

	if (dir > 0) {
		if (counts)
			atomic_fetch_add_explicit(&ctx->served, 1, memory_order_relaxed);
		if (r->flags & REQ_FL_COUNTED)
			atomic_fetch_sub_explicit(&ctx->inflight, 1, memory_order_relaxed);
		r->flags |= REQ_FL_ACCOUNTED;
	} else {
		if (counts)
			atomic_fetch_sub_explicit(&ctx->served, 1, memory_order_relaxed);
		if (r->flags & REQ_FL_COUNTED)
			atomic_fetch_add_explicit(&ctx->inflight, 1, memory_order_relaxed);
		r->flags &= ~REQ_FL_ACCOUNTED;
	}
}
