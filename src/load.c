/* Parsers of server-reported load: see load.h. Both read bytes a replica
 * sent, bounded by len (never past it, never NUL-terminated input), with
 * no allocation: a number is copied into a small stack buffer for strtod. */
#include "ringroute/load.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define NUM_MAX 64       /* longest number text read */
#define JSON_DEPTH 4     /* deeper JSON in a report is malformed */

/* Which field a key names. */
enum field { F_OTHER = 0, F_QUEUE, F_KV };

static int is_space(char c) { return c == ' ' || c == '\t'; }

/* A named_metrics key (without the "named_metrics." prefix). */
static enum field named_field(const char *k, size_t n)
{
#define IS(lit) (n == sizeof(lit) - 1 && memcmp(k, lit, n) == 0)
	if (IS("num_requests_waiting"))
		return F_QUEUE;
	if (IS("kv_cache_usage_perc") || IS("kv_cache_usage") || IS("kv_cache_utilization"))
		return F_KV;
#undef IS
	return F_OTHER;
}

/* Reads the number in p[0..n) (all of it): 0 with *out, -1 if it is not a
 * finite decimal number. strtod also takes hex, "inf", "nan": refused. */
static int read_number(const char *p, size_t n, double *out)
{
	char buf[NUM_MAX];
	char *end;

	if (n == 0 || n >= sizeof(buf))
		return -1;
	for (size_t i = 0; i < n; i++) {
		char c = p[i];
		if (!((c >= '0' && c <= '9') || c == '.' || c == '-' || c == '+' || c == 'e' ||
		      c == 'E'))
			return -1;
	}
	memcpy(buf, p, n);
	buf[n] = '\0';
	*out = strtod(buf, &end);
	if (end != buf + n || !isfinite(*out))
		return -1;
	return 0;
}

/* Puts value v of field f into r; -1 when out of range. */
static int take(struct load_report *r, enum field f, double v)
{
	if (f == F_QUEUE) {
		if (v < 0 || v > LOAD_QUEUE_MAX)
			return -1;
		r->queue = (uint32_t)(v + 0.5);
		r->have |= LOAD_HAVE_QUEUE;
	} else if (f == F_KV) {
		if (v < 0 || v > 1)
			return -1;
		r->kv_ppm = (uint32_t)(v * LOAD_KV_ONE + 0.5);
		r->have |= LOAD_HAVE_KV;
	}
	return 0;
}

static int key_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '.' || c == '-' || c == ':' || c == '/';
}

/* TEXT: "key=value, key=value": each key a run of key_char, each value a
 * number; whitespace around entries; an empty list is well formed. */
static enum load_parse parse_text(const char *p, const char *end, struct load_report *r)
{
	static const char nm[] = "named_metrics.";

	for (;;) {
		const char *k, *v;
		size_t kn;
		enum field f = F_OTHER;
		double x;

		while (p < end && is_space(*p))
			p++;
		if (p == end)
			break;
		for (k = p; p < end && key_char(*p); p++)
			;
		kn = (size_t)(p - k);
		if (!kn || p == end || *p != '=')
			return LOAD_BAD;
		v = ++p;
		while (p < end && *p != ',' && !is_space(*p))
			p++;
		if (read_number(v, (size_t)(p - v), &x))
			return LOAD_BAD;
		if (kn > sizeof(nm) - 1 && memcmp(k, nm, sizeof(nm) - 1) == 0)
			f = named_field(k + sizeof(nm) - 1, kn - (sizeof(nm) - 1));
		if (take(r, f, x))
			return LOAD_BAD;
		while (p < end && is_space(*p))
			p++;
		if (p == end)
			break;
		if (*p != ',')
			return LOAD_BAD;
		p++;
	}
	return r->have ? LOAD_OK : LOAD_NONE;
}

/* ---- JSON: a small recursive reader of one value (no allocation) ---- */

struct jr {
	const char *p, *end;
	struct load_report *r;
};

static void jr_ws(struct jr *j)
{
	while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
		j->p++;
}

/* A string at j->p: *s, *n: its raw bytes between the quotes (escapes left
 * as they are: keys we read have none). 0, or -1 if unterminated. */
static int jr_string(struct jr *j, const char **s, size_t *n)
{
	if (j->p == j->end || *j->p != '"')
		return -1;
	*s = ++j->p;
	while (j->p < j->end && *j->p != '"') {
		if ((unsigned char)*j->p < 0x20)
			return -1;
		if (*j->p == '\\' && ++j->p == j->end)
			return -1;
		j->p++;
	}
	if (j->p == j->end)
		return -1;
	*n = (size_t)(j->p - *s);
	j->p++;
	return 0;
}

static int jr_literal(struct jr *j, const char *lit)
{
	size_t n = strlen(lit);

	if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0)
		return -1;
	j->p += n;
	return 0;
}

/* One value. named: this value is the object of "named_metrics" (its
 * number members are the fields); f: what a number here means. */
static int jr_value(struct jr *j, int depth, bool named, enum field f)
{
	jr_ws(j);
	if (j->p == j->end)
		return -1;
	if (*j->p == '{' || *j->p == '[') {
		char close = *j->p == '{' ? '}' : ']';
		bool obj = close == '}';

		if (depth >= JSON_DEPTH)
			return -1;
		j->p++;
		jr_ws(j);
		if (j->p < j->end && *j->p == close) {
			j->p++;
			return 0;
		}
		for (;;) {
			bool sub_named = false;
			enum field sf = F_OTHER;

			if (obj) {
				const char *k;
				size_t kn;

				jr_ws(j);
				if (jr_string(j, &k, &kn))
					return -1;
				if (depth == 0 && kn == 13 && memcmp(k, "named_metrics", 13) == 0)
					sub_named = true;
				else if (named)
					sf = named_field(k, kn);
				jr_ws(j);
				if (j->p == j->end || *j->p != ':')
					return -1;
				j->p++;
			}
			if (jr_value(j, depth + 1, sub_named, sf))
				return -1;
			jr_ws(j);
			if (j->p == j->end)
				return -1;
			if (*j->p == close) {
				j->p++;
				return 0;
			}
			if (*j->p != ',')
				return -1;
			j->p++;
		}
	}
	if (named)
		return -1; /* named_metrics must be an object */
	if (*j->p == '"') {
		const char *s;
		size_t n;
		return f != F_OTHER ? -1 : jr_string(j, &s, &n);
	}
	if (*j->p == 't' || *j->p == 'f' || *j->p == 'n')
		return f != F_OTHER ? -1
				    : jr_literal(j, *j->p == 't' ? "true" : *j->p == 'f' ? "false" : "null");
	{
		const char *s = j->p;
		double x;

		while (j->p < j->end && ((*j->p >= '0' && *j->p <= '9') || *j->p == '.' ||
					 *j->p == '-' || *j->p == '+' || *j->p == 'e' || *j->p == 'E'))
			j->p++;
		if (read_number(s, (size_t)(j->p - s), &x))
			return -1;
		return take(j->r, f, x);
	}
}

static enum load_parse parse_json(const char *p, const char *end, struct load_report *r)
{
	struct jr j = { .p = p, .end = end, .r = r };

	jr_ws(&j);
	if (j.p == j.end || *j.p != '{')
		return LOAD_BAD; /* a report is an object */
	if (jr_value(&j, 0, false, F_OTHER))
		return LOAD_BAD;
	jr_ws(&j);
	if (j.p != j.end)
		return LOAD_BAD;
	return r->have ? LOAD_OK : LOAD_NONE;
}

/* See load.h. */
enum load_parse load_parse_orca(const char *v, size_t len, struct load_report *out)
{
	const char *end = v + len;
	enum load_parse rc;

	memset(out, 0, sizeof(*out));
	while (v < end && is_space(*v))
		v++;
	while (end > v && is_space(end[-1]))
		end--;
	if (end - v >= 4 && strncasecmp(v, "TEXT", 4) == 0 && (end - v == 4 || is_space(v[4])))
		rc = parse_text(v + 4, end, out);
	else if (end - v >= 4 && strncasecmp(v, "JSON", 4) == 0 && (end - v == 4 || is_space(v[4])))
		rc = parse_json(v + 4, end, out);
	else
		rc = LOAD_BAD; /* no form we read (the binary one comes in its own -bin header) */
	if (rc != LOAD_OK)
		memset(out, 0, sizeof(*out));
	return rc;
}

/* ---- Prometheus text exposition ---- */

/* Skips a label set "{k="v",...}" at *pp (escapes \" \\ \n inside values).
 * 0, or -1 when it does not end on this line. */
static int skip_labels(const char **pp, const char *end)
{
	const char *p = *pp + 1;
	bool in_str = false;

	for (; p < end && *p != '\n'; p++) {
		if (in_str) {
			if (*p == '\\') {
				if (p + 1 == end || p[1] == '\n')
					return -1;
				p++;
			} else if (*p == '"') {
				in_str = false;
			}
		} else if (*p == '"') {
			in_str = true;
		} else if (*p == '}') {
			*pp = p + 1;
			return 0;
		}
	}
	return -1;
}

/* See load.h. */
enum load_parse load_parse_prom(const char *text, size_t len, const char *queue_name,
				const char *kv_name, struct load_report *out)
{
	const char *p = text, *end = text + len;
	size_t qn = queue_name ? strlen(queue_name) : 0, kn = kv_name ? strlen(kv_name) : 0;
	double queue = 0, kv = 0;
	uint32_t have = 0;

	memset(out, 0, sizeof(*out));
	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p)), *v;
		enum field f = F_OTHER;
		double x;

		if (!eol)
			eol = end;
		while (p < eol && is_space(*p))
			p++;
		if (qn && (size_t)(eol - p) > qn && memcmp(p, queue_name, qn) == 0 &&
		    (p[qn] == '{' || is_space(p[qn])))
			f = F_QUEUE, p += qn;
		else if (kn && (size_t)(eol - p) > kn && memcmp(p, kv_name, kn) == 0 &&
			 (p[kn] == '{' || is_space(p[kn])))
			f = F_KV, p += kn;
		if (f == F_OTHER) { /* a comment, a blank line, another metric */
			p = eol + (eol < end);
			continue;
		}
		if (*p == '{' && skip_labels(&p, eol))
			return LOAD_BAD;
		while (p < eol && is_space(*p))
			p++;
		for (v = p; p < eol && !is_space(*p) && *p != '\r'; p++)
			;
		if (read_number(v, (size_t)(p - v), &x))
			return LOAD_BAD;
		/* the rest: an optional timestamp (not read) */
		if (f == F_QUEUE) {
			if (x < 0)
				return LOAD_BAD;
			queue += x;
		} else {
			if (x < 0 || x > 1)
				return LOAD_BAD;
			if (x > kv)
				kv = x;
		}
		have |= f == F_QUEUE ? LOAD_HAVE_QUEUE : LOAD_HAVE_KV;
		p = eol + (eol < end);
	}
	if ((have & LOAD_HAVE_QUEUE) && take(out, F_QUEUE, queue))
		goto bad;
	if ((have & LOAD_HAVE_KV) && take(out, F_KV, kv))
		goto bad;
	return out->have ? LOAD_OK : LOAD_NONE;
bad:
	memset(out, 0, sizeof(*out));
	return LOAD_BAD;
}
