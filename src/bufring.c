#include "ringroute/bufring.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "ringroute/alloc.h"

int bufring_init(struct bufring *b, struct io_uring *ring, uint16_t bgid, uint32_t nbufs,
		 uint32_t bufsz)
{
	struct io_uring_buf_reg reg;
	size_t ring_bytes = (size_t)nbufs * sizeof(struct io_uring_buf);
	int ret;

	memset(b, 0, sizeof(*b));
	if (nbufs == 0 || (nbufs & (nbufs - 1)) || nbufs > 32768)
		return -EINVAL;
	b->br = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (b->br == MAP_FAILED) {
		b->br = NULL;
		return -errno;
	}
	b->base = mmap(NULL, (size_t)nbufs * bufsz, PROT_READ | PROT_WRITE,
		       MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (b->base == MAP_FAILED) {
		ret = -errno;
		b->base = NULL;
		goto err_ring;
	}
	b->refs = mi_calloc(nbufs, sizeof(*b->refs));
	if (!b->refs) {
		ret = -ENOMEM;
		goto err_base;
	}
	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (unsigned long)b->br;
	reg.ring_entries = nbufs;
	reg.bgid = bgid;
	ret = io_uring_register_buf_ring(ring, &reg, 0);
	if (ret)
		goto err_refs;
	b->nbufs = nbufs;
	b->bufsz = bufsz;
	b->bgid = bgid;
	b->in_kernel = nbufs;
	io_uring_buf_ring_init(b->br);
	for (uint32_t i = 0; i < nbufs; i++)
		io_uring_buf_ring_add(b->br, bufring_ptr(b, i), bufsz, (unsigned short)i,
				      io_uring_buf_ring_mask(nbufs), (int)i);
	io_uring_buf_ring_advance(b->br, (int)nbufs);
	return 0;

err_refs:
	mi_free(b->refs);
	b->refs = NULL;
err_base:
	munmap(b->base, (size_t)nbufs * bufsz);
	b->base = NULL;
err_ring:
	munmap(b->br, ring_bytes);
	b->br = NULL;
	return ret;
}

void bufring_destroy(struct bufring *b, struct io_uring *ring)
{
	if (!b->br)
		return;
	io_uring_unregister_buf_ring(ring, b->bgid);
	munmap(b->base, (size_t)b->nbufs * b->bufsz);
	munmap(b->br, (size_t)b->nbufs * sizeof(struct io_uring_buf));
	mi_free(b->refs);
	memset(b, 0, sizeof(*b));
}

void bufring_unref(struct bufring *b, uint32_t bid)
{
	assert(bid < b->nbufs && b->refs[bid] > 0);
	if (--b->refs[bid])
		return;
	io_uring_buf_ring_add(b->br, bufring_ptr(b, bid), b->bufsz, (unsigned short)bid,
			      io_uring_buf_ring_mask(b->nbufs), 0);
	io_uring_buf_ring_advance(b->br, 1);
	b->in_kernel++;
}
