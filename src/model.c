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

/* p at a '"': past the closing quote, or NULL when the string does not
 * end. memchr finds each candidate quote (strings are most of a prompt's
 * bytes); a quote after an odd run of backslashes is escaped. */
static const char *skip_str(const char *p, const char *e)
{
	const char *q = p + 1;

	for (;;) {
		const char *b;
		size_t bs = 0;

		q = memchr(q, '"', (size_t)(e - q));
		if (!q)
			return NULL;
		for (b = q; b > p + 1 && b[-1] == '\\'; b--)
			bs++;
		if (!(bs & 1))
			return q + 1;
		q++;
	}
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

/* Called for each member of an object: key (raw), its value at v (e: the
 * end of the body). Returns the end of the value (it may walk the value
 * itself, or skip_value it), *stop set to end the walk; NULL when the
 * value is cut short or malformed. */
typedef const char *(*member_fn)(void *ctx, const char *k, size_t klen, const char *v,
				 const char *e, int *stop);

/* Walk the members of the object at p (a '{'). 1: stopped by fn, 0: the
 * whole object walked, -1: not an object or cut short; *end (if set) is
 * past the object when 0. */
static int each_member(const char *p, const char *e, member_fn fn, void *ctx, const char **end)
{
	p = ws(p, e);
	if (p >= e || *p != '{')
		return -1;
	p = ws(p + 1, e);
	if (p < e && *p == '}') {
		if (end)
			*end = p + 1;
		return 0;
	}
	for (;;) {
		const char *k, *ke, *v, *ve;
		int stop = 0;

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
		if (v >= e)
			return -1;
		ve = fn(ctx, k, (size_t)(ke - 1 - k), v, e, &stop);
		if (stop)
			return 1;
		if (!ve)
			return -1;
		p = ws(ve, e);
		if (p >= e)
			return -1;
		if (*p == '}') {
			if (end)
				*end = p + 1;
			return 0;
		}
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

static const char *find_model(void *ctx, const char *k, size_t klen, const char *v,
			      const char *e, int *stop)
{
	struct find_ctx *f = ctx;
	const char *ve = skip_value(v, e);

	if (ve && key_is(k, klen, "model")) {
		f->found = str_span(v, ve, f->val);
		*stop = 1; /* the first "model" decides, string or not */
	}
	return ve;
}

int model_find(const char *body, size_t len, struct model_span *val)
{
	struct find_ctx f = {.val = val, .found = 0};
	int r = each_member(body, body + len, find_model, &f, NULL);

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
	int have_prompt;             /* "prompt" seen: its spans replace any of "messages" */
	size_t nmsg;                 /* spans from "messages" (dropped if "prompt" comes) */
};

static void add_span(struct prompt_ctx *pc, const char *v, const char *ve)
{
	if (pc->n < pc->max && str_span(v, ve, &pc->spans[pc->n]))
		pc->n++;
}

/* Walk the array at v ('['), calling elem on each element; past it, or
 * NULL. One pass: the elements are read as they are skipped. */
static const char *each_elem(const char *v, const char *e,
			     const char *(*elem)(struct prompt_ctx *, const char *, const char *),
			     struct prompt_ctx *pc)
{
	const char *p = ws(v + 1, e);

	if (p < e && *p == ']')
		return p + 1;
	for (;;) {
		if (p >= e)
			return NULL; /* cut short: elem may read *p */
		p = elem(pc, p, e);
		if (!p)
			return NULL;
		p = ws(p, e);
		if (p >= e)
			return NULL;
		if (*p == ']')
			return p + 1;
		if (*p != ',')
			return NULL;
		p = ws(p + 1, e);
	}
}

static const char *prompt_string(struct prompt_ctx *pc, const char *v, const char *e)
{
	const char *ve = skip_value(v, e);

	if (ve)
		add_span(pc, v, ve);
	return ve;
}

static const char *find_text(void *ctx, const char *k, size_t klen, const char *v,
			     const char *e, int *stop)
{
	const char *ve = skip_value(v, e);

	(void)stop;
	if (ve && key_is(k, klen, "text"))
		add_span(ctx, v, ve);
	return ve;
}

/* A content part ({"type": "text", "text": "..."}): its "text" string. */
static const char *text_part(struct prompt_ctx *pc, const char *v, const char *e)
{
	const char *end;

	if (*v != '{')
		return skip_value(v, e);
	return each_member(v, e, find_text, pc, &end) == 0 ? end : NULL;
}

static const char *find_content(void *ctx, const char *k, size_t klen, const char *v,
				const char *e, int *stop)
{
	(void)stop;
	if (!key_is(k, klen, "content"))
		return skip_value(v, e);
	if (*v == '[') /* content parts, in order */
		return each_elem(v, e, text_part, ctx);
	{
		const char *ve = skip_value(v, e);
		if (ve)
			add_span(ctx, v, ve);
		return ve;
	}
}

static const char *message(struct prompt_ctx *pc, const char *v, const char *e)
{
	const char *end;

	if (*v != '{')
		return skip_value(v, e);
	return each_member(v, e, find_content, pc, &end) == 0 ? end : NULL;
}

static const char *find_prompt(void *ctx, const char *k, size_t klen, const char *v,
			       const char *e, int *stop)
{
	struct prompt_ctx *pc = ctx;

	(void)stop;
	if (key_is(k, klen, "prompt") && !pc->have_prompt) {
		pc->have_prompt = 1;
		pc->n -= pc->nmsg; /* "prompt" wins over "messages" */
		pc->nmsg = 0;
		if (*v == '"')
			return prompt_string(pc, v, e);
		if (*v == '[')
			return each_elem(v, e, prompt_string, pc);
		return skip_value(v, e);
	}
	if (key_is(k, klen, "messages") && !pc->have_prompt && !pc->nmsg && *v == '[') {
		size_t before = pc->n;
		const char *ve = each_elem(v, e, message, pc);
		pc->nmsg = pc->n - before;
		return ve;
	}
	return skip_value(v, e);
}

int model_prompt(const char *body, size_t len, struct model_span *spans, size_t max)
{
	struct prompt_ctx pc = {.spans = spans, .max = max};

	if (each_member(body, body + len, find_prompt, &pc, NULL) < 0)
		return -1;
	return (int)pc.n;
}
