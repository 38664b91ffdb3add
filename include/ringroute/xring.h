/* Cross-core messages over IORING_OP_MSG_RING (xring.c): a message is a
 * doorbell whose CQE on the target ring carries OP_MSG as user_data and the
 * message kind as res; a payload (a config snapshot) waits in an atomic slot
 * of the target shard. */
#ifndef RINGROUTE_XRING_H
#define RINGROUTE_XRING_H

#include "ringroute/shard.h"

struct proxy;

/* Post kind to shard t from shard s's ring. Best effort: a message that
 * finds no SQE is lost, which only delays a wake-up until t's own queue
 * tick (queue.c) retries. */
void xring_msg(struct shard *s, struct shard *t, enum msg_kind kind);
/* From the control side (its own small ring, made on first use): post kind
 * to every started shard and wait until each message was delivered.
 * Returns 0 or the first -errno. Serialised by p->xring_lock. */
int xring_broadcast(struct proxy *p, enum msg_kind kind);
/* Free the control side's ring (after the shards are gone). */
void xring_destroy(struct proxy *p);

#endif
