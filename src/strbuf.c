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
