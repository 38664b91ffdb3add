/* strbuf: the one growable byte buffer of the project (mi_* memory). Its
 * bytes are always followed by a NUL once anything was added, so a strbuf
 * can be used as a C string too (the NUL is not counted in len).
 * A zeroed struct is an empty buffer; sb_free() returns it to that state. */
#ifndef RINGROUTE_STRBUF_H
#define RINGROUTE_STRBUF_H

#include <stddef.h>

struct strbuf {
	char *p;        /* NULL until the first byte is added */
	size_t len;     /* bytes held, not counting the NUL after them */
	size_t cap;     /* bytes allocated at p */
};

/* Makes room for n more bytes plus the NUL. 0, or -ENOMEM with s unchanged. */
int sb_reserve(struct strbuf *s, size_t n);
/* Appends n bytes at p. 0, or -ENOMEM with s unchanged. */
int sb_put(struct strbuf *s, const char *p, size_t n);
/* Appends the C string str. 0, or -ENOMEM with s unchanged. */
int sb_puts(struct strbuf *s, const char *str);
/* Appends formatted text. 0, -ENOMEM (s unchanged) or -EINVAL (bad format). */
int sb_printf(struct strbuf *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends the n bytes at str as a JSON string literal (quotes included):
 * '"', '\\' and control bytes escaped, valid UTF-8 kept, every byte that is
 * not part of valid UTF-8 replaced by U+FFFD, so the output is always valid
 * JSON whatever the input (client-supplied paths and ids). 0 or -ENOMEM. */
int sb_put_json_str(struct strbuf *s, const char *str, size_t n);
/* Empties s, keeping its memory. */
void sb_reset(struct strbuf *s);
/* Drops the first n bytes (all of them when n >= len). */
void sb_consume(struct strbuf *s, size_t n);
/* Frees the memory; s is an empty buffer again. */
void sb_free(struct strbuf *s);

#endif
