/* Allocation goes through mimalloc (mi_* calls). Sanitizer builds map those
 * calls to libc so AddressSanitizer / LeakSanitizer see every allocation
 * (mimalloc and ASan both want to own malloc). Never pass memory from one
 * family to the other's free. */
#ifndef RINGROUTE_ALLOC_H
#define RINGROUTE_ALLOC_H

#ifdef RR_SANITIZE
#include <stdlib.h>
#include <string.h>
#define mi_malloc(n) malloc(n)
#define mi_zalloc(n) calloc(1, (n))
#define mi_calloc(n, m) calloc((n), (m))
#define mi_realloc(p, n) realloc((p), (n))
#define mi_free(p) free(p)
#define mi_strdup(s) strdup(s)
#define mi_strndup(s, n) strndup((s), (n))
static inline void *rr_zalloc_aligned(size_t n, size_t a)
{
	void *p = NULL;
	if (posix_memalign(&p, a, n))
		return NULL;
	memset(p, 0, n);
	return p;
}
#define mi_zalloc_aligned(n, a) rr_zalloc_aligned((n), (a))
#define mi_malloc_aligned(n, a) rr_zalloc_aligned((n), (a))
#else
#include <mimalloc.h>
#endif

#endif
