/* Scanning JSON request bodies for routing (see model.h). */
#include "ringroute/model.h"

#include <stdint.h>
#include <string.h>

static const char *ws(const char *p, const char *e)
{
	while (p < e && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
		p++;
	return p;
}

/* p at a '"': past the closing quote, or NULL when the string does not end. */
static const char *skip_str(const char *p, const char *e)
{
	for (p++; p < e; p++) {
		if (*p == '\\') {
			if (++p == e)
				return NULL;
		} else if (*p == '"') {
			return p + 1;
		}
	}
	return NULL;
}

/* Past one value at p (a string, an object or array by bracket depth,
 * or a scalar up to a delimiter); NULL when cut short. Iterative: nesting
 * depth costs nothing. Brackets are counted, not matched ({] passes):
 * lenient by design. */
static const char *skip_value(const char *p, const char *e)
{
	const char *s = p;
	size_t depth = 0;

	if (p >= e)
		return NULL;
	if (*p == '"')
		return skip_str(p, e);
	if (*p == '{' || *p == '[') {
		while (p < e) {
			char c = *p;
			if (c == '"') {
				p = skip_str(p, e);
				if (!p)
					return NULL;
				continue;
			}
			if (c == '{' || c == '[') {
				depth++;
			} else if (c == '}' || c == ']') {
				if (--depth == 0)
					return p + 1;
			}
			p++;
		}
		return NULL;
	}
	while (p < e && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\t' &&
	       *p != '\r' && *p != '\n' && *p != '"' && *p != '{' && *p != '[' && *p != ':')
		p++;
	return p > s ? p : NULL;
}

/* Called for each member of an object: key (raw), the value [v, ve).
 * Returns 0 to go on, 1 to stop. */
typedef int (*member_fn)(void *ctx, const char *k, size_t klen, const char *v, const char *ve);

/* Walk the members of the object at p (a '{'). 1: stopped by fn, 0: the
 * whole object walked, -1: not an object or cut short. */
static int each_member(const char *p, const char *e, member_fn fn, void *ctx)
{
	p = ws(p, e);
	if (p >= e || *p != '{')
		return -1;
	p = ws(p + 1, e);
	if (p < e && *p == '}')
		return 0;
	for (;;) {
		const char *k, *ke, *v, *ve;

		if (p >= e || *p != '"')
			return -1;
		k = p + 1;
		ke = skip_str(p, e);
		if (!ke)
			return -1;
		p = ws(ke, e);
		if (p >= e || *p != ':')
			return -1;
		v = ws(p + 1, e);
		ve = skip_value(v, e);
		if (!ve)
			return -1;
		if (fn(ctx, k, (size_t)(ke - 1 - k), v, ve))
			return 1;
		p = ws(ve, e);
		if (p >= e)
			return -1;
		if (*p == '}')
			return 0;
		if (*p != ',')
			return -1;
		p = ws(p + 1, e);
	}
}

static int key_is(const char *k, size_t klen, const char *name)
{
	size_t n = strlen(name);

	return klen == n && memcmp(k, name, n) == 0;
}

/* A string value [v, ve) as a span of its contents; 0 if not a string. */
static int str_span(const char *v, const char *ve, struct model_span *out)
{
	if (ve - v < 2 || *v != '"')
		return 0;
	out->p = v + 1;
	out->len = (size_t)(ve - v - 2);
	return 1;
}

struct find_ctx {
	struct model_span *val;
	int found;
};

static int find_model(void *ctx, const char *k, size_t klen, const char *v, const char *ve)
{
	struct find_ctx *f = ctx;

	if (!key_is(k, klen, "model"))
		return 0;
	f->found = str_span(v, ve, f->val);
	return 1; /* the first "model" decides, string or not */
}

int model_find(const char *body, size_t len, struct model_span *val)
{
	struct find_ctx f = {.val = val, .found = 0};
	int r = each_member(body, body + len, find_model, &f);

	if (r < 0)
		return -1;
	return f.found;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static long hex4(const char *p, const char *e)
{
	long x = 0;

	if (e - p < 4)
		return -1;
	for (int i = 0; i < 4; i++) {
		int h = hexval(p[i]);
		if (h < 0)
			return -1;
		x = x * 16 + h;
	}
	return x;
}

long model_decode(const struct model_span *raw, char *out, size_t cap)
{
	const char *p = raw->p, *e = raw->p + raw->len;
	size_t n = 0;

	while (p < e) {
		char tmp[4];
		size_t tl = 1;

		if (*p != '\\') {
			tmp[0] = *p++;
		} else {
			if (++p == e)
				return -1;
			switch (*p++) {
			case '"': tmp[0] = '"'; break;
			case '\\': tmp[0] = '\\'; break;
			case '/': tmp[0] = '/'; break;
			case 'b': tmp[0] = '\b'; break;
			case 'f': tmp[0] = '\f'; break;
			case 'n': tmp[0] = '\n'; break;
			case 'r': tmp[0] = '\r'; break;
			case 't': tmp[0] = '\t'; break;
			case 'u': {
				long cp = hex4(p, e);
				if (cp < 0)
					return -1;
				p += 4;
				if (cp >= 0xD800 && cp <= 0xDBFF) {
					long lo;
					if (e - p < 6 || p[0] != '\\' || p[1] != 'u')
						return -1;
					lo = hex4(p + 2, e);
					if (lo < 0xDC00 || lo > 0xDFFF)
						return -1;
					p += 6;
					cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
				} else if (cp >= 0xDC00 && cp <= 0xDFFF) {
					return -1;
				}
				if (cp < 0x80) {
					tmp[0] = (char)cp;
				} else if (cp < 0x800) {
					tmp[0] = (char)(0xC0 | (cp >> 6));
					tmp[1] = (char)(0x80 | (cp & 0x3F));
					tl = 2;
				} else if (cp < 0x10000) {
					tmp[0] = (char)(0xE0 | (cp >> 12));
					tmp[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
					tmp[2] = (char)(0x80 | (cp & 0x3F));
					tl = 3;
				} else {
					tmp[0] = (char)(0xF0 | (cp >> 18));
					tmp[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
					tmp[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
					tmp[3] = (char)(0x80 | (cp & 0x3F));
					tl = 4;
				}
				break;
			}
			default:
				return -1;
			}
		}
		if (cap - n < tl)
			return -1;
		memcpy(out + n, tmp, tl);
		n += tl;
	}
	return (long)n;
}

struct prompt_ctx {
	struct model_span *spans;
	size_t max, n;
	int have_prompt;             /* "prompt" seen: "messages" no longer looked at */
	const char *msgs, *msgs_end; /* the "messages" array, if any */
};

/* The elements [v, ve) of an array, each handed to fn as (ctx, elem, end).
 * Stops quietly at anything it cannot walk: spans found so far stand. */
static void each_elem(const char *v, const char *ve, void (*fn)(struct prompt_ctx *, const char *,
								  const char *),
		      struct prompt_ctx *pc)
{
	const char *p = ws(v + 1, ve);

	while (p < ve && *p != ']') {
		const char *q = skip_value(p, ve);
		if (!q)
			return;
		fn(pc, p, q);
		p = ws(q, ve);
		if (p < ve && *p == ',')
			p = ws(p + 1, ve);
		else
			return;
	}
}

static void add_span(struct prompt_ctx *pc, const char *v, const char *ve)
{
	if (pc->n < pc->max && str_span(v, ve, &pc->spans[pc->n]))
		pc->n++;
}

static int find_content(void *ctx, const char *k, size_t klen, const char *v, const char *ve)
{
	struct prompt_ctx *pc = ctx;

	if (!key_is(k, klen, "content"))
		return 0;
	add_span(pc, v, ve);
	return 1;
}

static void message_content(struct prompt_ctx *pc, const char *v, const char *ve)
{
	if (*v == '{')
		each_member(v, ve, find_content, pc);
}

static int find_prompt(void *ctx, const char *k, size_t klen, const char *v, const char *ve)
{
	struct prompt_ctx *pc = ctx;

	if (key_is(k, klen, "prompt") && !pc->have_prompt) {
		pc->have_prompt = 1;
		if (*v == '"')
			add_span(pc, v, ve);
		else if (*v == '[')
			each_elem(v, ve, add_span, pc);
		return 0;
	}
	if (key_is(k, klen, "messages") && !pc->msgs && *v == '[') {
		pc->msgs = v;
		pc->msgs_end = ve;
	}
	return 0;
}

int model_prompt(const char *body, size_t len, struct model_span *spans, size_t max)
{
	struct prompt_ctx pc = {.spans = spans, .max = max};

	if (each_member(body, body + len, find_prompt, &pc) < 0)
		return -1;
	if (!pc.have_prompt && pc.msgs)
		each_elem(pc.msgs, pc.msgs_end, message_content, &pc);
	return (int)pc.n;
}
