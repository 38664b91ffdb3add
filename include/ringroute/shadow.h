/* Shadow copies (DESIGN "Routing semantics" 5): with probability
 * shadow[b], a copy of a request also goes to backend b. A copy takes a
 * slot like any request but never waits for one; its response is read and
 * discarded; a copy that cannot keep up with the client's body, or whose
 * body can never complete, is cut. A copy is itself a struct request
 * (REQ_F_SHADOW, no client ops), linked to its original while it still
 * takes the original's body. */
#ifndef RINGROUTE_SHADOW_H
#define RINGROUTE_SHADOW_H

#include <stddef.h>
#include <stdint.h>

struct shard;
struct request;

/* Roll the dice for each shadow of req's endpoint and start the copies
 * (req's forwarded head is written). Copies that find no slot are dropped. */
void shadow_start(struct shard *s, struct request *req);
/* Body bytes of req go to every copy still attached; a slow copy is cut. */
void shadow_body(struct shard *s, struct request *req, uint32_t bid, const char *p, size_t len);
/* req's body is complete: its copies live on alone. */
void shadow_detach(struct request *req);
/* req's body will never be complete: the copies still attached end. */
void shadow_abort(struct shard *s, struct request *req);

#endif
