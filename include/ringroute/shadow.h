/* Shadow copies (docs/config.md "Shadow probabilities"): with probability
 * shadow[b], a copy of a request also goes to backend b. A copy takes a
 * slot like any request but never waits for one; its response is read and
 * discarded; a copy that cannot keep up with the client's body, or whose
 * body can never complete, is cut. Its failure never affects the client.
 *
 * A copy is an upstream exchange of its own (struct shadow_copy, private to
 * shadow.c), listed on its original request while it still takes the
 * original's body; after that it lives on alone and frees itself when its
 * exchange ends. */
#ifndef RINGROUTE_SHADOW_H
#define RINGROUTE_SHADOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ringroute/config.h"
#include "ringroute/list.h"

struct shard;

/* What became of a shadow copy, counted per backend
 * (ringroute_shadow_requests_total{result}): it was sent, or why it was
 * dropped before it started or cut while taking the original's body. */
enum shadow_result {
	SHADOW_SENT = 0,          /* the copy started */
	SHADOW_DROPPED_NO_SLOT,   /* no replica had a free slot (a copy never waits) */
	SHADOW_DROPPED_ERROR,     /* out of memory, or its connection could not start */
	SHADOW_CUT_SLOW,          /* its replica took the body slower than the client sent it */
	SHADOW_CUT_ERROR,         /* a body chunk could not be queued to it */
	SHADOW_CUT_INCOMPLETE,    /* the original ended before its body was complete */
	SHADOW_R_COUNT,
};
/* "sent", "dropped_no_slot", "dropped_error", "cut_slow", "cut_error",
 * "cut_incomplete". */
const char *shadow_result_name(enum shadow_result r);

/* Roll the dice for each shadow of ep and start the copies, each sent
 * head (the original's forwarded head) and linked on copies. cfg is the
 * snapshot ep points into (each copy references it). */
void shadow_start(struct shard *s, struct list *copies, struct config *cfg,
		  const struct endpoint_cfg *ep, const char *head, size_t head_len, bool is_head);
/* Body bytes go to every copy on copies; a slow copy is cut. */
void shadow_body(struct shard *s, struct list *copies, uint32_t bid, const char *p, size_t len);
/* The body is complete: the copies live on alone. */
void shadow_detach(struct list *copies);
/* The body will never be complete: the copies on copies end. */
void shadow_abort(struct shard *s, struct list *copies);

#endif
