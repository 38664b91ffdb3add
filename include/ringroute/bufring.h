/* Provided buffer rings: the shard's receive buffers. The kernel picks a free
 * buffer for each multishot recv completion; ringroute then holds it, with a
 * reference count, for as long as any parse or send still points into it, and
 * gives it back to its ring when the last reference goes (zero-copy handoff:
 * bodies are sent onward straight from these buffers).
 *
 * Two groups share one buffer id space: group 0 (ids 0..n-1) feeds client
 * sockets, group 1 (ids n..2n-1) upstream sockets. Separate groups break the
 * cycle where clients uploading bodies hold every buffer while the replica
 * responses that would let them finish cannot be received. */
#ifndef RINGROUTE_BUFRING_H
#define RINGROUTE_BUFRING_H

#include <liburing.h>
#include <errno.h>
#include <stdint.h>

#define BUFRING_GROUPS 2

struct bufring {
	struct io_uring_buf_ring *br[BUFRING_GROUPS];
	char *base;          /* BUFRING_GROUPS * nbufs * bufsz bytes */
	uint16_t *refs;      /* per buffer id; 0 = owned by the kernel ring */
	uint32_t nbufs;      /* per group */
	uint32_t bufsz;
	uint32_t in_kernel[BUFRING_GROUPS]; /* buffers available to the kernel */
};

/* Register BUFRING_GROUPS groups (group ids 0 and 1) of nbufs (power of two,
 * <= 16384) buffers of bufsz bytes on ring. liburing 2.3 lacks
 * io_uring_setup_buf_ring, so ring memory is mmap'ed and registered by hand.
 * Returns 0 or -errno (-EINVAL or -ENOENT when the kernel lacks provided
 * buffer rings); nothing stays allocated on error. */
int bufring_init(struct bufring *b, struct io_uring *ring, uint32_t nbufs, uint32_t bufsz);
void bufring_destroy(struct bufring *b, struct io_uring *ring);

static inline char *bufring_ptr(const struct bufring *b, uint32_t bid)
{
	return b->base + (size_t)bid * b->bufsz;
}

static inline unsigned bufring_group(const struct bufring *b, uint32_t bid)
{
	return bid >= b->nbufs;
}

/* A completion handed buffer bid to us: it now has one reference. */
static inline void bufring_taken(struct bufring *b, uint32_t bid)
{
	b->refs[bid] = 1;
	b->in_kernel[bufring_group(b, bid)]--;
}

/* One more reference. Returns 0, or -EOVERFLOW when the count is
 * saturated (the caller copies the bytes instead of referencing them). */
static inline int bufring_ref(struct bufring *b, uint32_t bid)
{
	if (b->refs[bid] == UINT16_MAX)
		return -EOVERFLOW;
	b->refs[bid]++;
	return 0;
}

/* Drop one reference; the last one gives the buffer back to its ring. */
void bufring_unref(struct bufring *b, uint32_t bid);

#endif
