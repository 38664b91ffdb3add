/* Cross-core messages over IORING_OP_MSG_RING (xring.c): a message is a
 * doorbell whose CQE on the target ring carries OP_MSG as user_data and the
 * message kind as res; a payload (a config snapshot) waits in an atomic slot
 * of the target shard. */
#ifndef RINGROUTE_XRING_H
#define RINGROUTE_XRING_H

#include "ringroute/shard.h"

/* Post kind to shard t from shard s's ring. Best effort: a message that
 * finds no SQE is lost, which only delays a wake-up until t's own queue
 * tick (queue.c) retries. */
void xring_msg(struct shard *s, struct shard *t, enum msg_kind kind);

#endif
