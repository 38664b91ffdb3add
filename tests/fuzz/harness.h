/* Shared by the fuzz targets (tests/fuzz/fuzz_*.c): where to split the input
 * into "receive buffers", and how to report two outcomes that should have
 * been equal. Not a target itself (the CMake glob takes fuzz_*.c only).
 *
 * Every target that parses HTTP feeds the same bytes twice: whole (one
 * receive buffer) and split at cut points derived from the input's first
 * bytes, then asserts both runs produced the same outcome text. An llhttp
 * callback that assumes a token arrives in one piece, or a caller that
 * loses bytes at a pause, shows up as a difference. */
#ifndef RR_FUZZ_HARNESS_H
#define RR_FUZZ_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ringroute/alloc.h"
#include "ringroute/http.h"

#define FZ_MAX_CUTS 64

/* Names in replica addresses are looked up by config_parse (dns.h): point
 * the resolver at a port nothing answers on, so that every name fails at
 * once, the same way every run, and no input reaches a real DNS server. */
static inline void fz_dns_offline(void)
{
	setenv("RR_DNS_SERVER", "127.0.0.1:9", 1);
}

/* Cut points, ascending, each in (0, len). */
struct fz_cuts {
	size_t n;
	size_t at[FZ_MAX_CUTS];
};

/* Derive cut points for len bytes from two selector bytes: sel0 & 15 is
 * the number of random cuts (15: a cut after every byte, up to
 * FZ_MAX_CUTS, then one buffer for the rest), sel1 seeds their
 * positions. Deterministic, so a crash input reproduces. */
static inline void fz_cuts_pick(uint8_t sel0, uint8_t sel1, size_t len, struct fz_cuts *c)
{
	uint32_t x = 0x9e3779b9u ^ ((uint32_t)sel0 << 8) ^ sel1;
	size_t want = sel0 & 15;

	c->n = 0;
	if (len < 2)
		return;
	if (want == 15) {
		for (size_t i = 1; i < len && c->n < FZ_MAX_CUTS; i++)
			c->at[c->n++] = i;
		return;
	}
	for (size_t k = 0; k < want; k++) {
		size_t pos, i;
		x ^= x << 13; /* xorshift32 */
		x ^= x >> 17;
		x ^= x << 5;
		pos = 1 + x % (len - 1);
		/* insert sorted, dropping duplicates */
		for (i = 0; i < c->n && c->at[i] < pos; i++)
			;
		if (i < c->n && c->at[i] == pos)
			continue;
		memmove(&c->at[i + 1], &c->at[i], (c->n - i) * sizeof(c->at[0]));
		c->at[i] = pos;
		c->n++;
	}
}

/* Free a strbuf filled by sb_* (mi_* memory: libc in this build). */
static inline void fz_sb_free(struct strbuf *s)
{
	mi_free(s->p);
	s->p = NULL;
	s->len = s->cap = 0;
}

/* Print a byte string with C escapes, for crash reports. */
static inline void fz_dump(const char *label, const char *p, size_t n)
{
	fprintf(stderr, "%s (%zu bytes): \"", label, n);
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)p[i];
		if (ch == '\\' || ch == '"')
			fprintf(stderr, "\\%c", ch);
		else if (ch >= 0x20 && ch < 0x7f)
			fputc(ch, stderr);
		else if (ch == '\r')
			fputs("\\r", stderr);
		else if (ch == '\n')
			fputs("\\n\"\n  \"", stderr);
		else
			fprintf(stderr, "\\x%02x", ch);
	}
	fputs("\"\n", stderr);
}

/* Abort (a libFuzzer crash) when the whole and split outcomes differ. */
static inline void fz_expect_same(const struct strbuf *whole, const struct strbuf *split,
			   const struct fz_cuts *c)
{
	if (whole->len == split->len && (!whole->len || memcmp(whole->p, split->p, whole->len) == 0))
		return;
	fprintf(stderr, "whole and split feeding disagree; cuts:");
	for (size_t i = 0; i < c->n; i++)
		fprintf(stderr, " %zu", c->at[i]);
	fputc('\n', stderr);
	fz_dump("whole", whole->p ? whole->p : "", whole->len);
	fz_dump("split", split->p ? split->p : "", split->len);
	abort();
}

/* Abort with a message: an invariant of the code under test broke. */
#define FZ_ASSERT(cond, ...)                                                              \
	do {                                                                              \
		if (!(cond)) {                                                            \
			fprintf(stderr, "%s:%d: assertion failed: %s: ", __FILE__, __LINE__, \
				#cond);                                                   \
			fprintf(stderr, __VA_ARGS__);                                     \
			fputc('\n', stderr);                                              \
			abort();                                                          \
		}                                                                         \
	} while (0)

#endif
