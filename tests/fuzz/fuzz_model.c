/* Fuzz target: the JSON scan of request bodies (model.c), the held-body
 * de-chunking and model rewrite (body.c) and prefix block hashing
 * (prefix.c), on untrusted body bytes.
 *
 * Feeds: data[0] bit 0 says the body is chunked framing (de-chunked by
 * body_linear, split into segments at cut points from data[1], data[2]);
 * data[3] the block size (1..256); data[4..] the body.
 *
 * Asserts:
 *  - every span model_find and model_prompt report lies inside the body,
 *    and a found model's quotes are where the span says;
 *  - de-chunking gives the same bytes whatever the segment splits;
 *  - model_decode never writes past its buffer and, for a result, a model
 *    rewritten into the body is found again, decoded, as the new name;
 *  - prefix_hash gives the same chain for the prompt cut into spans as
 *    for the spans' bytes joined;
 *  - no sanitizer report. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ringroute/body.h"
#include "ringroute/model.h"
#include "ringroute/prefix.h"

#include "harness.h"

static void inside(const char *b, size_t n, const struct model_span *s)
{
	if (s->p < b || s->p + s->len > b + n)
		abort();
}

static void scan(const char *b, size_t n, uint32_t bb)
{
	struct model_span v, sp[MODEL_PROMPT_SPANS];
	char name[MODEL_NAME_MAX];
	int r = model_find(b, n, &v), np;

	if (r == 1) {
		struct strbuf out = {0};
		size_t voff = (size_t)(v.p - 1 - b);
		struct model_span w;

		inside(b, n, &v);
		if (v.p == b || v.p[-1] != '"' || v.p + v.len >= b + n || v.p[v.len] != '"')
			abort();
		(void)model_decode(&v, name, sizeof(name));
		if (body_rewrite(b, n, voff, voff + v.len + 2, "fz-model", &out) == 0) {
			long dl;
			if (model_find(out.p, out.len, &w) != 1)
				abort();
			dl = model_decode(&w, name, sizeof(name));
			if (dl != 8 || memcmp(name, "fz-model", 8) != 0)
				abort();
		}
		sb_free(&out);
	}
	np = model_prompt(b, n, sp, MODEL_PROMPT_SPANS);
	if (np > 0) {
		uint64_t h1[64], h2[64];
		struct strbuf joined = {0};
		struct model_span one;
		size_t n1, n2;

		for (int i = 0; i < np; i++) {
			inside(b, n, &sp[i]);
			if (sb_put(&joined, sp[i].p, sp[i].len))
				abort();
		}
		one = (struct model_span){joined.p ? joined.p : "", joined.len};
		n1 = prefix_hash(sp, (size_t)np, bb, h1, 64);
		n2 = prefix_hash(&one, 1, bb, h2, 64);
		if (n1 != n2 || memcmp(h1, h2, n1 * sizeof(h1[0])) != 0)
			abort();
		sb_free(&joined);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *b;
	size_t n;
	uint32_t bb;

	if (size < 4)
		return 0;
	bb = (uint32_t)data[3] + 1;
	b = (const char *)data + 4;
	n = size - 4;
	if (data[0] & 1) {
		struct fz_cuts cuts;
		struct seg g[FZ_MAX_CUTS + 1];
		struct strbuf whole = {0}, split = {0};
		size_t ng = 0, at = 0;
		int r1, r2;

		g[0] = (struct seg){.p = b, .len = (uint32_t)n, .bid = -1};
		r1 = body_linear(g, 1, true, &whole);
		fz_cuts_pick(data[1], data[2], n, &cuts);
		for (size_t i = 0; i < cuts.n; i++) {
			g[ng++] = (struct seg){.p = b + at, .len = (uint32_t)(cuts.at[i] - at), .bid = -1};
			at = cuts.at[i];
		}
		g[ng++] = (struct seg){.p = b + at, .len = (uint32_t)(n - at), .bid = -1};
		r2 = body_linear(g, ng, true, &split);
		if (r1 != r2 || (r1 == 0 && (whole.len != split.len ||
					     (whole.len && memcmp(whole.p, split.p, whole.len)))))
			abort();
		if (r1 == 0 && whole.len)
			scan(whole.p, whole.len, bb);
		sb_free(&whole);
		sb_free(&split);
		return 0;
	}
	scan(b, n, bb);
	return 0;
}
