/* A request body held before routing (request.c, docs/ARCHITECTURE.md
 * "Held bodies"): its bytes as one run for scanning, and the rewrite of
 * its top-level "model". Pure: over segments the caller holds. */
#ifndef RINGROUTE_BODY_H
#define RINGROUTE_BODY_H

#include <stdbool.h>
#include <stddef.h>

#include "ringroute/sock.h"
#include "ringroute/strbuf.h"

/* The body bytes of the raw segments g[0..n) into out (appended): their
 * concatenation, or with chunked the chunk data alone (sizes, extensions,
 * line ends and trailers dropped; the framing was checked by the parser
 * already, and anything it could not have let through is -EINVAL).
 * 0, -ENOMEM, or -EINVAL. */
int body_linear(const struct seg *g, size_t n, bool chunked, struct strbuf *out);

/* body[0..len) with the string at [voff, vend) (quotes included) replaced
 * by "name" (name: no '"', '\\' or control bytes: config.c checks) into out.
 * 0 or -ENOMEM. */
int body_rewrite(const char *body, size_t len, size_t voff, size_t vend, const char *name,
		 struct strbuf *out);

#endif
