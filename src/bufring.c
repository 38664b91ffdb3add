#include "ringroute/bufring.h"

#include <assert.h>
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "ringroute/alloc.h"

static void free_rings(struct bufring *b, struct io_uring *ring, unsigned registered)
{
	size_t ring_bytes = (size_t)b->nbufs * sizeof(struct io_uring_buf);
	for (unsigned g = 0; g < BUFRING_GROUPS; g++) {
		if (g < registered)
			io_uring_unregister_buf_ring(ring, (int)g);
		if (b->br[g])
			munmap(b->br[g], ring_bytes);
		b->br[g] = NULL;
	}
}

int bufring_init(struct bufring *b, struct io_uring *ring, uint32_t nbufs, uint32_t bufsz)
{
	size_t ring_bytes = (size_t)nbufs * sizeof(struct io_uring_buf);
	size_t data_bytes = (size_t)BUFRING_GROUPS * nbufs * bufsz;
	unsigned g, registered = 0;
	int ret;

	memset(b, 0, sizeof(*b));
	if (nbufs == 0 || (nbufs & (nbufs - 1)) || nbufs > 16384)
		return -EINVAL;
	b->nbufs = nbufs;
	b->bufsz = bufsz;
	b->base = mmap(NULL, data_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (b->base == MAP_FAILED) {
		b->base = NULL;
		return -errno;
	}
	b->refs = mi_calloc((size_t)BUFRING_GROUPS * nbufs, sizeof(*b->refs));
	if (!b->refs) {
		ret = -ENOMEM;
		goto err_base;
	}
	for (g = 0; g < BUFRING_GROUPS; g++) {
		struct io_uring_buf_reg reg;

		b->br[g] = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE,
				MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
		if (b->br[g] == MAP_FAILED) {
			b->br[g] = NULL;
			ret = -errno;
			goto err_rings;
		}
		memset(&reg, 0, sizeof(reg));
		reg.ring_addr = (unsigned long)b->br[g];
		reg.ring_entries = nbufs;
		reg.bgid = (uint16_t)g;
		ret = io_uring_register_buf_ring(ring, &reg, 0);
		if (ret)
			goto err_rings;
		registered++;
		io_uring_buf_ring_init(b->br[g]);
		for (uint32_t i = 0; i < nbufs; i++) {
			uint32_t bid = g * nbufs + i;
			io_uring_buf_ring_add(b->br[g], bufring_ptr(b, bid), bufsz, (unsigned short)bid,
					      io_uring_buf_ring_mask(nbufs), (int)i);
		}
		io_uring_buf_ring_advance(b->br[g], (int)nbufs);
		b->in_kernel[g] = nbufs;
	}
	return 0;

err_rings:
	free_rings(b, ring, registered);
	mi_free(b->refs);
	b->refs = NULL;
err_base:
	munmap(b->base, data_bytes);
	b->base = NULL;
	return ret;
}

void bufring_destroy(struct bufring *b, struct io_uring *ring)
{
	if (!b->base)
		return;
	free_rings(b, ring, BUFRING_GROUPS);
	munmap(b->base, (size_t)BUFRING_GROUPS * b->nbufs * b->bufsz);
	mi_free(b->refs);
	memset(b, 0, sizeof(*b));
}

void bufring_unref(struct bufring *b, uint32_t bid)
{
	unsigned g = bufring_group(b, bid);
	assert(bid < BUFRING_GROUPS * b->nbufs && b->refs[bid] > 0);
	if (--b->refs[bid])
		return;
	io_uring_buf_ring_add(b->br[g], bufring_ptr(b, bid), b->bufsz, (unsigned short)bid,
			      io_uring_buf_ring_mask(b->nbufs), 0);
	io_uring_buf_ring_advance(b->br[g], 1);
	b->in_kernel[g]++;
}
