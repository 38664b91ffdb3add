/* strbuf: see strbuf.h. */
#include "ringroute/strbuf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ringroute/alloc.h"

#define SB_FIRST_CAP 512

/* See strbuf.h. Grows by doubling from SB_FIRST_CAP; refuses a size whose
 * computation would wrap. */
int sb_reserve(struct strbuf *s, size_t n)
{
	size_t need, cap = s->cap ? s->cap : SB_FIRST_CAP;
	char *p;

	if (n > (size_t)-1 - s->len - 1)
		return -ENOMEM;
	need = s->len + n + 1;
	if (need <= s->cap)
		return 0;
	while (cap < need) {
		if (cap > (size_t)-1 / 2) {
			cap = need;
			break;
		}
		cap *= 2;
	}
	p = mi_realloc(s->p, cap);
	if (!p)
		return -ENOMEM;
	s->p = p;
	s->cap = cap;
	return 0;
}

int sb_put(struct strbuf *s, const char *p, size_t n)
{
	if (sb_reserve(s, n))
		return -ENOMEM;
	if (n)
		memcpy(s->p + s->len, p, n);
	s->len += n;
	s->p[s->len] = '\0';
	return 0;
}

int sb_puts(struct strbuf *s, const char *str)
{
	return sb_put(s, str, strlen(str));
}

/* See strbuf.h. Short output (the common case: header lines) is formatted
 * once into a stack buffer; longer output a second time in place. */
int sb_printf(struct strbuf *s, const char *fmt, ...)
{
	char tmp[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0)
		return -EINVAL;
	if ((size_t)n < sizeof(tmp))
		return sb_put(s, tmp, (size_t)n);
	if (sb_reserve(s, (size_t)n))
		return -ENOMEM;
	va_start(ap, fmt);
	vsnprintf(s->p + s->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	s->len += (size_t)n;
	return 0;
}

void sb_reset(struct strbuf *s)
{
	s->len = 0;
	if (s->p)
		s->p[0] = '\0';
}

void sb_consume(struct strbuf *s, size_t n)
{
	if (n >= s->len) {
		sb_reset(s);
		return;
	}
	memmove(s->p, s->p + n, s->len - n);
	s->len -= n;
	s->p[s->len] = '\0';
}

void sb_free(struct strbuf *s)
{
	mi_free(s->p);
	s->p = NULL;
	s->len = s->cap = 0;
}

/* Length of the valid UTF-8 sequence at p (at most n bytes), or 0 when the
 * bytes there are not one (RFC 3629: no overlongs, no surrogates, <= U+10FFFF). */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
	unsigned char c = p[0];
	size_t len, i;
	unsigned cp;

	if (c < 0xC2 || c > 0xF4)
		return 0;
	len = c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
	if (n < len)
		return 0;
	cp = c & (0x7F >> len);
	for (i = 1; i < len; i++) {
		if ((p[i] & 0xC0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3F);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
	    (cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	return len;
}

/* See strbuf.h. */
int sb_put_json_str(struct strbuf *s, const char *str, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)str;
	size_t i = 0;

	/* Worst case: every byte becomes \u00XX or U+FFFD (6 bytes). */
	if (n > ((size_t)-1 - 2) / 6 || sb_reserve(s, n * 6 + 2))
		return -ENOMEM;
	s->p[s->len++] = '"';
	while (i < n) {
		unsigned char c = p[i];
		char *o = s->p + s->len;
		size_t k;

		if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\') {
			*o = (char)c;
			s->len++;
			i++;
		} else if (c == '"' || c == '\\') {
			o[0] = '\\';
			o[1] = (char)c;
			s->len += 2;
			i++;
		} else if (c < 0x80) {
			memcpy(o, "\\u00", 4);
			o[4] = hex[c >> 4];
			o[5] = hex[c & 15];
			s->len += 6;
			i++;
		} else if ((k = utf8_seq(p + i, n - i)) > 0) {
			memcpy(o, p + i, k);
			s->len += k;
			i += k;
		} else {
			memcpy(o, "\\ufffd", 6); /* not UTF-8: the replacement character */
			s->len += 6;
			i++;
		}
	}
	s->p[s->len++] = '"';
	s->p[s->len] = '\0';
	return 0;
}
