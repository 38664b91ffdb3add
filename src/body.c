/* Held request bodies (see body.h). */
#include "ringroute/body.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

/* The chunked decoder's states. */
enum {
	CH_SIZE = 0,   /* hex digits of a chunk size */
	CH_EXT,        /* extensions up to the LF of the size line */
	CH_DATA,       /* chunk bytes */
	CH_DATA_END,   /* the CRLF after the data */
	CH_DONE,       /* the last chunk: trailers follow, not body */
};

int body_linear(const struct seg *g, size_t n, bool chunked, struct strbuf *out)
{
	uint64_t left = 0;
	int st = CH_SIZE, digits = 0;

	for (size_t i = 0; i < n; i++) {
		const char *p = g[i].p, *e = g[i].p + g[i].len;

		if (!chunked) {
			if (sb_put(out, p, g[i].len))
				return -ENOMEM;
			continue;
		}
		while (p < e && st != CH_DONE) {
			switch (st) {
			case CH_SIZE: {
				int h = (*p >= '0' && *p <= '9')   ? *p - '0'
					: (*p >= 'a' && *p <= 'f') ? *p - 'a' + 10
					: (*p >= 'A' && *p <= 'F') ? *p - 'A' + 10
								   : -1;
				if (h >= 0) {
					if (left >> 60)
						return -EINVAL;
					left = left * 16 + (uint64_t)h;
					digits++;
					p++;
					break;
				}
				if (!digits)
					return -EINVAL;
				st = CH_EXT;
				break;
			}
			case CH_EXT:
				if (*p++ == '\n') {
					st = left ? CH_DATA : CH_DONE;
					digits = 0;
				}
				break;
			case CH_DATA: {
				size_t take = (size_t)(e - p) < left ? (size_t)(e - p) : (size_t)left;
				if (sb_put(out, p, take))
					return -ENOMEM;
				p += take;
				left -= take;
				if (!left)
					st = CH_DATA_END;
				break;
			}
			case CH_DATA_END:
				if (*p == '\n')
					st = CH_SIZE;
				else if (*p != '\r')
					return -EINVAL;
				p++;
				break;
			}
		}
	}
	return 0;
}

int body_rewrite(const char *body, size_t len, size_t voff, size_t vend, const char *name,
		 struct strbuf *out)
{
	int ret = 0;

	if (voff > vend || vend > len)
		return -EINVAL;
	ret |= sb_reserve(out, len - (vend - voff) + strlen(name) + 2);
	ret |= sb_put(out, body, voff);
	ret |= sb_put(out, "\"", 1);
	ret |= sb_puts(out, name);
	ret |= sb_put(out, "\"", 1);
	ret |= sb_put(out, body + vend, len - vend);
	return ret ? -ENOMEM : 0;
}
