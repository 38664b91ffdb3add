/* Provided buffer ring: the shard's receive buffers. The kernel picks a free
 * buffer for each multishot recv completion; ringroute then holds it, with a
 * reference count, for as long as any parse or send still points into it, and
 * gives it back to the ring when the last reference goes (zero-copy handoff:
 * bodies are sent onward straight from these buffers). */
#ifndef RINGROUTE_BUFRING_H
#define RINGROUTE_BUFRING_H

#include <liburing.h>
#include <stdint.h>

struct bufring {
	struct io_uring_buf_ring *br;
	char *base;          /* nbufs * bufsz bytes */
	uint16_t *refs;      /* per buffer; 0 = owned by the kernel ring */
	uint32_t nbufs;
	uint32_t bufsz;
	uint32_t in_kernel;  /* buffers currently available to the kernel */
	uint16_t bgid;
};

/* Register nbufs (power of two, <= 32768) buffers of bufsz bytes as group
 * bgid on ring. liburing 2.3 lacks io_uring_setup_buf_ring, so the ring
 * memory is mmap'ed and registered by hand. Returns 0 or -errno (-EINVAL or
 * -ENOENT when the kernel lacks provided buffer rings). */
int bufring_init(struct bufring *b, struct io_uring *ring, uint16_t bgid, uint32_t nbufs,
		 uint32_t bufsz);
void bufring_destroy(struct bufring *b, struct io_uring *ring);

static inline char *bufring_ptr(const struct bufring *b, uint32_t bid)
{
	return b->base + (size_t)bid * b->bufsz;
}

/* A completion handed buffer bid to us: it now has one reference. */
static inline void bufring_taken(struct bufring *b, uint32_t bid)
{
	b->refs[bid] = 1;
	b->in_kernel--;
}

static inline void bufring_ref(struct bufring *b, uint32_t bid) { b->refs[bid]++; }

/* Drop one reference; the last one gives the buffer back to the kernel. */
void bufring_unref(struct bufring *b, uint32_t bid);

#endif
