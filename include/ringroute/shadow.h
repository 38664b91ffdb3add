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
