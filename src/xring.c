/* Cross-core messages over IORING_OP_MSG_RING. A message is a doorbell: its
 * CQE on the target ring carries OP_MSG as user_data and the message kind as
 * res; any payload (a config snapshot) waits in an atomic slot of the
 * target shard. Shards message each other from their own rings; the control
 * thread has a small ring of its own for that. */
#include <errno.h>
#include <string.h>

#include <liburing.h>
#include "ringroute/alloc.h"

#include "ringroute/proxy.h"
#include "ringroute/shard.h"
#include "ringroute/sock.h"
#include "ringroute/xring.h"

void xring_msg(struct shard *s, struct shard *t, enum msg_kind kind)
{
	struct io_uring_sqe *sqe = sock_sqe(s);

	if (!sqe)
		return;
	io_uring_prep_msg_ring(sqe, t->ring.ring_fd, (unsigned)kind, (uint64_t)OP_MSG, 0);
	/* Our own completion for the send: ignored. */
	io_uring_sqe_set_data64(sqe, sock_ud_raw(OP_CANCEL, SOCK_UD_NONE));
}

int xring_broadcast(struct proxy *p, enum msg_kind kind)
{
	struct io_uring *ring;
	unsigned sent = 0;
	int ret = 0;

	pthread_mutex_lock(&p->xring_lock);
	ring = p->xring;
	if (!ring) {
		ring = mi_zalloc(sizeof(*ring));
		if (!ring || io_uring_queue_init(64, ring, 0)) {
			mi_free(ring);
			pthread_mutex_unlock(&p->xring_lock);
			return -ENOMEM;
		}
		p->xring = ring;
	}
	for (unsigned i = 0; i < p->nshards; i++) {
		struct io_uring_sqe *sqe;
		if (!atomic_load(&p->shards[i]->ready))
			continue; /* never started (start-up failed): no ring */
		sqe = io_uring_get_sqe(ring);
		if (!sqe) {
			io_uring_submit(ring);
			sqe = io_uring_get_sqe(ring);
		}
		io_uring_prep_msg_ring(sqe, p->shards[i]->ring.ring_fd, (unsigned)kind,
				       (uint64_t)OP_MSG, 0);
		io_uring_sqe_set_data64(sqe, i);
		sent++;
	}
	io_uring_submit(ring);
	for (unsigned i = 0; i < sent; i++) {
		struct io_uring_cqe *cqe;
		if (io_uring_wait_cqe(ring, &cqe))
			break;
		if (cqe->res < 0 && !ret)
			ret = cqe->res;
		io_uring_cqe_seen(ring, cqe);
	}
	pthread_mutex_unlock(&p->xring_lock);
	return ret;
}

void xring_destroy(struct proxy *p)
{
	struct io_uring *ring = p->xring;
	if (!ring)
		return;
	io_uring_queue_exit(ring);
	mi_free(ring);
	p->xring = NULL;
}
