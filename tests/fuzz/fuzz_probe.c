/* Fuzz target: how a whole-answer probe (a load scrape, src/probe.c)
 * reads what a replica sends: the buffer growing up to its bound
 * (probe_grow), the early end at the head's Content-Length
 * (probe_whole_done) and the verdict (probe_judge, probe_body). probe.c
 * is included to reach them; no socket is opened: the bytes are put in
 * the buffer the way probe_step's recv would.
 *
 * Feeds: data[0] is the answer's bound (max_body: 1 + data[0] * 64
 * bytes); data[1] and data[2] choose the receive splits (harness.h);
 * data[3..] is the answer, then EOF unless the Content-Length ended it.
 *
 * Asserts:
 *  - done is called exactly once, with a kind a probe can end with;
 *  - the buffer never holds more than the bound;
 *  - an answer that ended early ended at or after its head, and a body
 *    (2xx or another status) lies inside what was read, after its head;
 *  - whole and split feeding agree on the verdict and the body;
 *  - no ASan/UBSan report (reads stay inside the NUL-terminated buffer). */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/probe.c"

#include "harness.h"

static int calls;
static enum health_kind got_kind;
static struct strbuf *got_out;

static void done(struct probe *pr, enum health_kind kind, unsigned value)
{
	const char *b;
	size_t n = 0;

	calls++;
	got_kind = kind;
	sb_printf(got_out, "kind %d value %u", (int)kind, value);
	b = probe_body(pr, &n);
	if (b) {
		FZ_ASSERT(b >= pr->resp + 4 && b + n <= pr->resp + pr->got, "body outside the answer");
		FZ_ASSERT(memcmp(b - 4, "\r\n\r\n", 4) == 0, "body not after the head");
		sb_printf(got_out, " body %zu:", n);
		sb_put(got_out, b, n);
	}
}

/* Feeds p[0..n) in the pieces cuts makes; the verdict into out. */
static void feed(const char *p, size_t n, size_t max, const struct fz_cuts *cuts,
		 struct strbuf *out)
{
	struct probe pr;
	size_t off = 0, k = 0;
	bool ended = false;

	memset(&pr, 0, sizeof(pr));
	pr.fd = -1;
	probe_buf_init(&pr, max);
	pr.done = done;
	pr.phase = PROBE_READING;
	calls = 0;
	got_out = out;
	while (off < n && !ended) {
		size_t end = k < cuts->n && cuts->at[k] < n ? cuts->at[k++] : n;
		if (end <= off)
			end = n;
		while (off < end && !ended) {
			size_t room;
			if (probe_grow(&pr)) {
				probe_finish(&pr, HEALTH_NOT_HTTP, 0);
				ended = true;
				break;
			}
			room = pr.cap - 1 - pr.got;
			if (room > end - off)
				room = end - off;
			memcpy(pr.resp + pr.got, p + off, room);
			pr.got += room;
			pr.resp[pr.got] = '\0';
			off += room;
			FZ_ASSERT(pr.got <= max, "%zu bytes held, bound %zu", pr.got, max);
			if (probe_whole_done(&pr)) {
				FZ_ASSERT(memmem(pr.resp, pr.got, "\r\n\r\n", 4), "ended before its head");
				probe_judge(&pr, false);
				ended = true;
			}
		}
	}
	if (!ended)
		probe_judge(&pr, true);
	FZ_ASSERT(calls == 1, "done called %d times", calls);
	FZ_ASSERT(got_kind == HEALTH_OK || got_kind == HEALTH_STATUS || got_kind == HEALTH_NOT_HTTP ||
			  got_kind == HEALTH_CLOSED,
		  "kind %d", (int)got_kind);
	if (pr.resp != pr.line)
		mi_free(pr.resp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct strbuf whole = {0}, split = {0};
	struct fz_cuts none = {0}, cuts;
	size_t max;

	if (size < 3)
		return 0;
	max = 1 + (size_t)data[0] * 64;
	fz_cuts_pick(data[1], data[2], size - 3, &cuts);
	feed((const char *)data + 3, size - 3, max, &none, &whole);
	feed((const char *)data + 3, size - 3, max, &cuts, &split);
	fz_expect_same(&whole, &split, &cuts);
	sb_free(&whole);
	sb_free(&split);
	return 0;
}
