#include "ringroute/http.h"
#include "ringroute/list.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <ctype.h>

#include "ringroute/alloc.h"

void http_head_reset(struct http_head *h)
{
	h->len = 0;
	h->url_off = h->url_len = 0;
	h->nhdrs = 0;
	h->in_value = 0;
	h->too_large = 0;
}

void http_head_free(struct http_head *h)
{
	mi_free(h->buf);
	h->buf = NULL;
	h->cap = 0;
	http_head_reset(h);
}

/* Append bytes plus a NUL kept just past them, so names and values can be
 * used as C strings; a later append overwrites that NUL when it continues
 * the same token. */
/* Make *buf (capacity *cap) hold at least need bytes, doubling from first.
 * Returns 0 or -ENOMEM (then *buf is unchanged). */
static int buf_reserve(char **buf, size_t *cap, size_t need, size_t first)
{
	size_t ncap = *cap ? *cap : first;
	char *p;
	if (need <= *cap)
		return 0;
	while (ncap < need)
		ncap *= 2;
	p = mi_realloc(*buf, ncap);
	if (!p)
		return -ENOMEM;
	*buf = p;
	*cap = ncap;
	return 0;
}

static int head_append(struct http_head *h, const char *at, size_t len)
{
	size_t cap = h->cap;

	if (h->len + len + 1 > HTTP_MAX_HEAD || buf_reserve(&h->buf, &cap, h->len + len + 1, 1024)) {
		h->too_large = 1;
		return -1;
	}
	h->cap = (uint32_t)cap;
	memcpy(h->buf + h->len, at, len);
	h->len += (uint32_t)len;
	h->buf[h->len] = '\0';
	return 0;
}

int http_head_url(struct http_head *h, const char *at, size_t len)
{
	if (h->url_len == 0)
		h->url_off = h->len;
	h->url_len += (uint32_t)len;
	return head_append(h, at, len);
}

int http_head_field(struct http_head *h, const char *at, size_t len)
{
	struct http_hdr *x;

	if (h->nhdrs == 0 || h->in_value) {
		if (h->nhdrs == HTTP_MAX_HEADERS) {
			h->too_large = 1;
			return -1;
		}
		if (h->len) /* step over the NUL that ends the previous token */
			h->len++;
		x = &h->hdrs[h->nhdrs++];
		memset(x, 0, sizeof(*x));
		x->name_off = h->len;
		h->in_value = 0;
	} else {
		x = &h->hdrs[h->nhdrs - 1];
	}
	x->name_len += (uint32_t)len;
	return head_append(h, at, len);
}

int http_head_value(struct http_head *h, const char *at, size_t len)
{
	struct http_hdr *x;

	if (h->nhdrs == 0)
		return 0;
	x = &h->hdrs[h->nhdrs - 1];
	if (!h->in_value) {
		h->len++; /* keep the name's NUL */
		x->value_off = h->len;
		h->in_value = 1;
	}
	x->value_len += (uint32_t)len;
	return head_append(h, at, len);
}

int http_head_value_done(struct http_head *h)
{
	return h->in_value ? 0 : http_head_value(h, "", 0);
}

static struct http_parser *hp_of(llhttp_t *p)
{
	return container_of(p, struct http_parser, p);
}

static int hp_on_url(llhttp_t *p, const char *at, size_t len)
{
	return http_head_url(&hp_of(p)->hd, at, len) ? HPE_USER : 0;
}

static int hp_on_field(llhttp_t *p, const char *at, size_t len)
{
	return http_head_field(&hp_of(p)->hd, at, len) ? HPE_USER : 0;
}

static int hp_on_value(llhttp_t *p, const char *at, size_t len)
{
	return http_head_value(&hp_of(p)->hd, at, len) ? HPE_USER : 0;
}

static int hp_on_value_done(llhttp_t *p)
{
	return http_head_value_done(&hp_of(p)->hd) ? HPE_USER : 0;
}

static int hp_on_headers(llhttp_t *p)
{
	struct http_parser *hp = hp_of(p);
	int st = p->status_code;

	hp->event = HTTP_EV_HEADERS;
	/* A response to HEAD, and a 1xx, 204 or 304 response, has no body
	 * whatever its headers say (RFC 9112 6.3): tell llhttp (return 1),
	 * which then completes the message at once and pauses there instead.
	 * Bytes the replica sent after it are never a body. */
	if (p->type == HTTP_RESPONSE && ((st >= 100 && st < 200) || st == 204 || st == 304))
		return 1;
	return hp->no_body ? 1 : HPE_PAUSED;
}

static int hp_on_message(llhttp_t *p)
{
	hp_of(p)->event = HTTP_EV_MESSAGE;
	return HPE_PAUSED;
}

void http_settings_init(llhttp_settings_t *s)
{
	llhttp_settings_init(s);
	s->on_url = hp_on_url;       /* requests */
	s->on_status = hp_on_url;    /* responses: the reason phrase */
	s->on_header_field = hp_on_field;
	s->on_header_value = hp_on_value;
	s->on_header_value_complete = hp_on_value_done;
	s->on_headers_complete = hp_on_headers;
	s->on_message_complete = hp_on_message;
}

/* Chunk extensions are legal but carry nothing for us: bound them so a
 * chunk line cannot grow without end (no buffer holds them: a count). */
static int hp_on_chunk_ext(llhttp_t *p, const char *at, size_t len)
{
	struct http_parser *hp = hp_of(p);

	(void)at;
	hp->ext_bytes += (uint32_t)len;
	if (hp->ext_bytes > HTTP_CHUNK_EXT_MAX) {
		llhttp_set_error_reason(p, "chunk extension too long");
		return HPE_USER;
	}
	return 0;
}

static int hp_on_chunk_header(llhttp_t *p)
{
	hp_of(p)->ext_bytes = 0;
	return 0;
}

void http_request_settings_init(llhttp_settings_t *s)
{
	http_settings_init(s);
	s->on_chunk_extension_name = hp_on_chunk_ext;
	s->on_chunk_extension_value = hp_on_chunk_ext;
	s->on_chunk_header = hp_on_chunk_header;
}

void http_request_parser_start(struct http_parser *hp, const llhttp_settings_t *s, void *data)
{
	llhttp_init(&hp->p, HTTP_REQUEST, s);
	llhttp_set_lenient_transfer_encoding(&hp->p, 1);
	http_request_parser_next(hp, data);
}

void http_request_parser_next(struct http_parser *hp, void *data)
{
	hp->p.data = data;
	hp->event = HTTP_EV_NONE;
	hp->no_body = 0;
	http_head_reset(&hp->hd);
	http_scan_init(&hp->scan);
	hp->ext_bytes = 0;
	memset(hp->tail, 0, sizeof(hp->tail));
}

void http_body_seen(struct http_parser *hp, const char *p, size_t n)
{
	if (n >= sizeof(hp->tail)) {
		memcpy(hp->tail, p + n - sizeof(hp->tail), sizeof(hp->tail));
	} else {
		memmove(hp->tail, hp->tail + n, sizeof(hp->tail) - n);
		memcpy(hp->tail + sizeof(hp->tail) - n, p, n);
	}
}

int http_body_end_ok(const struct http_parser *hp)
{
	return !(hp->p.flags & F_CHUNKED) || memcmp(hp->tail, "\r\n\r\n", 4) == 0;
}

int http_hdr_int(const struct http_head *hd, const struct http_hdr *h, int64_t *out)
{
	const char *v = http_hdr_value(hd, h);
	size_t n = h->value_len, i = 0;
	int neg = 0;
	int64_t x = 0;

	if (n && (v[0] == '-' || v[0] == '+')) {
		neg = v[0] == '-';
		i = 1;
	}
	if (i == n || n - i > 18)
		return -1;
	for (; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -1;
		x = x * 10 + (v[i] - '0');
	}
	*out = neg ? -x : x;
	return 0;
}

const struct http_hdr *http_head_find(const struct http_head *h, const char *name)
{
	size_t n = strlen(name);
	for (uint32_t i = 0; i < h->nhdrs; i++) {
		const struct http_hdr *x = &h->hdrs[i];
		if (x->name_len == n && strncasecmp(h->buf + x->name_off, name, n) == 0)
			return x;
	}
	return NULL;
}

/* RFC 9110 5.6.2 tchar, as a table: header names are checked on every
 * request and response. */
static const unsigned char tchar_tab[256] = {
	['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
	['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1,
	['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
	['8'] = 1, ['9'] = 1,
	['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1,
	['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1,
	['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
	['Y'] = 1, ['Z'] = 1,
	['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1,
	['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1,
	['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
	['y'] = 1, ['z'] = 1,
};

static inline int is_tchar(unsigned char ch) { return tchar_tab[ch]; }

int http_head_valid(const struct http_head *h)
{
	for (uint32_t i = 0; i < h->nhdrs; i++) {
		const struct http_hdr *x = &h->hdrs[i];
		if (!x->name_len)
			return 0;
		for (uint32_t k = 0; k < x->name_len; k++)
			if (!is_tchar((unsigned char)h->buf[x->name_off + k]))
				return 0;
	}
	return 1;
}

static int name_is(const struct http_head *h, const struct http_hdr *x, const char *name, size_t n)
{
	return x->name_len == n && strncasecmp(h->buf + x->name_off, name, n) == 0;
}

void http_head_mark_named(struct http_head *h, const char *name)
{
	size_t n = strlen(name);

	for (uint32_t i = 0; i < h->nhdrs; i++)
		if (name_is(h, &h->hdrs[i], name, n))
			h->hdrs[i].flags |= HDR_F_HOP;
}

void http_head_mark_hop(struct http_head *h)
{
	static const char *const fixed[] = {"connection", "keep-alive", "proxy-connection", "te",
					    "trailer", "upgrade", "proxy-authorization",
					    "proxy-authenticate"};
	for (uint32_t i = 0; i < h->nhdrs; i++) {
		struct http_hdr *x = &h->hdrs[i];
		for (size_t k = 0; k < sizeof(fixed) / sizeof(fixed[0]); k++)
			if (name_is(h, x, fixed[k], strlen(fixed[k])))
				x->flags |= HDR_F_HOP;
	}
	/* Headers named in any Connection header are hop-by-hop too, except
	 * the framing ones we must keep because bodies are forwarded raw. */
	for (uint32_t i = 0; i < h->nhdrs; i++) {
		const struct http_hdr *c = &h->hdrs[i];
		const char *v, *end;
		if (!name_is(h, c, "connection", 10))
			continue;
		v = h->buf + c->value_off;
		end = v + c->value_len;
		while (v < end) {
			const char *tok;
			size_t tl;
			while (v < end && (*v == ' ' || *v == '\t' || *v == ','))
				v++;
			tok = v;
			while (v < end && *v != ',' && *v != ' ' && *v != '\t')
				v++;
			tl = (size_t)(v - tok);
			if (!tl || (tl == 14 && strncasecmp(tok, "content-length", 14) == 0) ||
			    (tl == 17 && strncasecmp(tok, "transfer-encoding", 17) == 0))
				continue;
			for (uint32_t k = 0; k < h->nhdrs; k++)
				if (name_is(h, &h->hdrs[k], tok, tl))
					h->hdrs[k].flags |= HDR_F_HOP;
		}
	}
}

/* "Name: value\r\n", with one reservation: every forwarded header goes
 * through here on the hot path. */
static int put_header(struct strbuf *out, const struct http_head *h, const struct http_hdr *x)
{
	char *w;

	if (sb_reserve(out, (size_t)x->name_len + x->value_len + 4))
		return -ENOMEM;
	w = out->p + out->len;
	memcpy(w, h->buf + x->name_off, x->name_len);
	w += x->name_len;
	*w++ = ':';
	*w++ = ' ';
	memcpy(w, h->buf + x->value_off, x->value_len);
	w += x->value_len;
	*w++ = '\r';
	*w++ = '\n';
	*w = '\0';
	out->len = (size_t)(w - out->p);
	return 0;
}

/* "X-Request-Id: id\r\n" (on every response: no printf). */
static int put_request_id(struct strbuf *out, const char *id)
{
	return sb_put(out, "X-Request-Id: ", 14) | sb_puts(out, id) | sb_put(out, "\r\n", 2);
}

const struct http_hdr *http_head_request_id(const struct http_head *h)
{
	for (uint32_t i = 0; i < h->nhdrs; i++) {
		const struct http_hdr *x = &h->hdrs[i];
		const char *v = h->buf + x->value_off;
		uint32_t k = 0;

		if ((x->flags & HDR_F_HOP) || !name_is(h, x, "x-request-id", 12))
			continue;
		if (!x->value_len || x->value_len > HTTP_REQUEST_ID_MAX)
			continue;
		while (k < x->value_len && v[k] > 0x20 && v[k] < 0x7f)
			k++;
		if (k == x->value_len)
			return x;
	}
	return NULL;
}

int http_write_request_head(struct strbuf *out, const struct http_head *h, const llhttp_t *p,
			    const struct fwd_info *fi)
{
	const struct http_hdr *rid = http_head_request_id(h);
	int have_cm = 0, ret = 0;

	ret |= sb_puts(out, llhttp_method_name((llhttp_method_t)p->method));
	ret |= sb_put(out, " ", 1);
	ret |= sb_put(out, h->buf + h->url_off, h->url_len);
	ret |= sb_put(out, " HTTP/1.1\r\n", 11);
	for (uint32_t i = 0; i < h->nhdrs; i++) {
		const struct http_hdr *x = &h->hdrs[i];
		if (x->flags & HDR_F_HOP)
			continue;
		if (name_is(h, x, "x-forwarded-for", 15))
			continue; /* rewritten below, joined with ours */
		if (name_is(h, x, "x-request-id", 12) && x != rid)
			continue; /* one id per request: the one that stands */
		if (fi->drop_timeout && name_is(h, x, "x-request-timeout-ms", 20))
			continue; /* the remaining time replaces it (request.c) */
		if (name_is(h, x, "x-serve-call-method", 19))
			have_cm = 1;
		if (fi->open && (name_is(h, x, "content-length", 14) ||
				 name_is(h, x, "transfer-encoding", 17) || name_is(h, x, "expect", 6) ||
				 name_is(h, x, "endpoint-load-metrics-format", 28)))
			continue;
		if (fi->load_format && name_is(h, x, "endpoint-load-metrics-format", 28))
			continue; /* ours replaces it */
		ret |= put_header(out, h, x);
	}
	/* Every X-Forwarded-For line the client sent is one list (RFC 9110
	 * 5.3); empty ones add nothing. Ours goes last. */
	ret |= sb_put(out, "X-Forwarded-For: ", 17);
	for (uint32_t i = 0; i < h->nhdrs; i++) {
		const struct http_hdr *x = &h->hdrs[i];
		if (!(x->flags & HDR_F_HOP) && x->value_len && name_is(h, x, "x-forwarded-for", 15)) {
			ret |= sb_put(out, h->buf + x->value_off, x->value_len);
			ret |= sb_put(out, ", ", 2);
		}
	}
	ret |= sb_puts(out, fi->client_ip);
	ret |= sb_put(out, "\r\n", 2);
	if (!rid && fi->request_id)
		ret |= sb_printf(out, "X-Request-Id: %s\r\n", fi->request_id);
	if (!have_cm && fi->call_method)
		ret |= sb_printf(out, "X-Serve-Call-Method: %s\r\n", fi->call_method);
	if (fi->load_format)
		ret |= sb_printf(out, "endpoint-load-metrics-format: %s\r\n", fi->load_format);
	if (!fi->open)
		ret |= sb_put(out, "\r\n", 2);
	return ret ? -ENOMEM : 0;
}

int http_write_response_head(struct strbuf *out, const struct http_head *h, const llhttp_t *p,
			     int close, const char *request_id)
{
	int interim = p->status_code >= 100 && p->status_code < 200;
	int ret = sb_printf(out, "HTTP/1.1 %d ", p->status_code);
	int phrase_ok = 1;

	/* reason-phrase = *( HTAB / SP / VCHAR / obs-text ): llhttp lets other
	 * bytes through, and a client could read them as a line end; ours
	 * stands in for such a phrase (found by tests/fuzz/fuzz_response). */
	for (uint32_t i = 0; i < h->url_len; i++) {
		unsigned char ch = (unsigned char)h->buf[h->url_off + i];
		if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
			phrase_ok = 0;
	}
	/* No reason phrase and no header: h->buf is still NULL, and NULL + 0
	 * is undefined (found by tests/fuzz/fuzz_response). */
	if (h->url_len && phrase_ok)
		ret |= sb_put(out, h->buf + h->url_off, h->url_len);
	else if (!phrase_ok)
		ret |= sb_puts(out, http_reason(p->status_code));
	ret |= sb_put(out, "\r\n", 2);
	for (uint32_t i = 0; i < h->nhdrs; i++) {
		const struct http_hdr *x = &h->hdrs[i];
		if (x->flags & HDR_F_HOP)
			continue;
		/* A 1xx has no content (RFC 9110 15.2): the replica side never
		 * reads one, but a client that honours a Content-Length or
		 * Transfer-Encoding on it (llhttp does) would take the final
		 * response for its body (found by tests/fuzz/fuzz_response). */
		if (interim && (name_is(h, x, "content-length", 14) ||
				name_is(h, x, "transfer-encoding", 17)))
			continue;
		if (request_id && name_is(h, x, "x-request-id", 12))
			continue; /* ours below */
		ret |= put_header(out, h, x);
	}
	if (request_id)
		ret |= put_request_id(out, request_id);
	if (close)
		ret |= sb_put(out, "Connection: close\r\n", 19);
	ret |= sb_put(out, "\r\n", 2);
	return ret ? -ENOMEM : 0;
}

const char *http_reason(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 200: return "OK";
	case 204: return "No Content";
	case 304: return "Not Modified";
	case 400: return "Bad Request";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 413: return "Content Too Large";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 501: return "Not Implemented";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	default: return "Unknown";
	}
}

static int put_json_string(struct strbuf *s, const char *str)
{
	int ret = sb_put(s, "\"", 1);
	for (const unsigned char *c = (const unsigned char *)str; *c; c++) {
		if (*c == '"' || *c == '\\') {
			char e[2] = {'\\', (char)*c};
			ret |= sb_put(s, e, 2);
		} else if (*c < 0x20) {
			ret |= sb_printf(s, "\\u%04x", *c);
		} else {
			ret |= sb_put(s, (const char *)c, 1);
		}
	}
	return ret | sb_put(s, "\"", 1);
}

int http_write_error(struct strbuf *out, int status, const char *msg, const char *endpoint,
		     int close, int retry_after, const char *request_id)
{
	struct strbuf body = {0};
	int ret = sb_puts(&body, "{\"error\": ");
	ret |= put_json_string(&body, msg);
	ret |= sb_puts(&body, ", \"endpoint\": ");
	ret |= endpoint ? put_json_string(&body, endpoint) : sb_puts(&body, "null");
	ret |= sb_puts(&body, "}\n");
	if (!ret) {
		ret |= sb_printf(out,
				 "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
				 "Content-Length: %zu\r\n",
				 status, http_reason(status), body.len);
		if (retry_after > 0)
			ret |= sb_printf(out, "Retry-After: %d\r\n", retry_after);
		if (request_id)
			ret |= put_request_id(out, request_id);
		if (close)
			ret |= sb_puts(out, "Connection: close\r\n");
		ret |= sb_put(out, "\r\n", 2);
		ret |= sb_put(out, body.p, body.len);
	}
	mi_free(body.p);
	return ret ? -ENOMEM : 0;
}

/* ---- request conformance (RFC 9110 / RFC 9112) ---- */


/* uri-host [ ":" port ] (RFC 9110 7.2), without the comma that reg-name
 * allows: a comma here is a list of hosts, which is never valid. */
static int host_valid(const char *v, size_t n)
{
	size_t i = 0;

	if (n == 0)
		return 1; /* empty: allowed for a target without authority */
	if (v[0] == '[') {
		/* IP-literal: hex digits, ':' and '.' (IPv4-embedded), or an
		 * IPvFuture "v..." we do not accept. */
		for (i = 1; i < n && v[i] != ']'; i++)
			if (!isxdigit((unsigned char)v[i]) && v[i] != ':' && v[i] != '.')
				return 0;
		if (i == n || i == 1)
			return 0;
		i++;
	} else {
		for (; i < n && v[i] != ':'; i++) {
			unsigned char ch = (unsigned char)v[i];
			if (!(isalnum(ch) || strchr("-._~!$&'()*+;=%", ch)))
				return 0;
		}
		if (i == 0)
			return 0;
	}
	if (i == n)
		return 1;
	if (v[i] != ':' || n - i - 1 > 5)
		return 0;
	for (i++; i < n; i++)
		if (!isdigit((unsigned char)v[i]))
			return 0;
	return 1;
}

/* Transfer-Encoding of a request: a list of codings whose only member we
 * implement is chunked, once, last. Returns 0, 400 or 501. */
static int te_check(const struct http_head *h, char *msg, size_t msglen)
{
	int chunked = 0, any = 0;

	for (uint32_t i = 0; i < h->nhdrs; i++) {
		const struct http_hdr *x = &h->hdrs[i];
		const char *v = h->buf + x->value_off, *end = v + x->value_len;

		if (!name_is(h, x, "transfer-encoding", 17))
			continue;
		any = 1;
		for (;;) {
			const char *tok;
			size_t tl;

			while (v < end && (*v == ' ' || *v == '\t'))
				v++;
			tok = v;
			while (v < end && is_tchar((unsigned char)*v))
				v++;
			tl = (size_t)(v - tok);
			while (v < end && (*v == ' ' || *v == '\t'))
				v++;
			if (!tl || (v < end && *v != ',')) {
				snprintf(msg, msglen, "malformed Transfer-Encoding");
				return 400;
			}
			if (tl == 7 && strncasecmp(tok, "chunked", 7) == 0) {
				if (chunked) {
					snprintf(msg, msglen, "chunked applied more than once");
					return 400;
				}
				chunked = 1;
			} else {
				snprintf(msg, msglen,
					 "transfer coding \"%.*s\" is not implemented (only chunked is)",
					 (int)(tl > 64 ? 64 : tl), tok);
				return 501;
			}
			if (v == end)
				break;
			v++; /* ',' */
		}
	}
	if (any && !chunked) {
		snprintf(msg, msglen, "malformed Transfer-Encoding");
		return 400;
	}
	return 0;
}

int http_check_request(const struct http_head *h, const llhttp_t *p, char *msg, size_t msglen)
{
	const struct http_hdr *host = NULL;
	int st, has_te = 0;

	if (p->http_major != 1) {
		snprintf(msg, msglen, "HTTP version not supported: use HTTP/1.1");
		return 505;
	}
	for (uint32_t i = 0; i < h->url_len; i++) {
		unsigned char ch = (unsigned char)h->buf[h->url_off + i];
		if (ch < 0x21 || ch > 0x7e) {
			snprintf(msg, msglen, "invalid byte in request target");
			return 400;
		}
	}
	if (!http_head_valid(h)) {
		snprintf(msg, msglen, "malformed header");
		return 400;
	}
	for (uint32_t i = 0; i < h->nhdrs; i++) {
		const struct http_hdr *x = &h->hdrs[i];
		if (name_is(h, x, "transfer-encoding", 17))
			has_te = 1;
		for (uint32_t k = 0; k < x->value_len; k++) {
			unsigned char ch = (unsigned char)h->buf[x->value_off + k];
			if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
				snprintf(msg, msglen, "invalid byte in header value");
				return 400;
			}
		}
		if (name_is(h, x, "host", 4)) {
			if (host) {
				snprintf(msg, msglen, "more than one Host header");
				return 400;
			}
			host = x;
		}
	}
	if (!host && p->http_minor >= 1) {
		snprintf(msg, msglen, "missing Host header");
		return 400;
	}
	if (host && !host_valid(h->buf + host->value_off, host->value_len)) {
		snprintf(msg, msglen, "invalid Host header");
		return 400;
	}
	if (has_te) {
		if (p->http_minor == 0) {
			snprintf(msg, msglen, "Transfer-Encoding in an HTTP/1.0 request");
			return 400;
		}
		st = te_check(h, msg, msglen);
		if (st)
			return st;
	}
	{
		const struct http_hdr *up = http_head_find(h, "upgrade");
		/* h2c may be ignored (RFC 9110 7.8: the server may ignore
		 * Upgrade); anything else would be lost silently: refuse it. */
		if (up && !(up->value_len == 3 &&
			    strncasecmp(h->buf + up->value_off, "h2c", 3) == 0)) {
			snprintf(msg, msglen, "Upgrade to \"%.*s\" is not supported",
				 (int)(up->value_len > 64 ? 64 : up->value_len),
				 h->buf + up->value_off);
			return 501;
		}
	}
	return 0;
}

int http_scan_head(struct http_scan *sc, const char *p, size_t n)
{
	const char *end = p + n, *q = p;

	if (!n)
		return 0;
	/* A line that began with this buffer: obs-fold if it starts with
	 * whitespace after an earlier line end. */
	if (sc->after_lf && (*p == ' ' || *p == '\t'))
		return -1;
	/* Only line ends matter: jump from one LF to the next (memchr is
	 * vectorised; a byte loop cost 3.6% of the CPU on bench tiny). */
	while (q < end && (q = memchr(q, '\n', (size_t)(end - q)))) {
		if (!(q > p ? q[-1] == '\r' : sc->prev_cr))
			return -2; /* bare LF */
		sc->lines++;
		if (q + 1 < end && (q[1] == ' ' || q[1] == '\t'))
			return -1; /* obs-fold */
		q++;
	}
	sc->prev_cr = end[-1] == '\r';
	sc->after_lf = end[-1] == '\n';
	return 0;
}

const char *http_scan_reason(int bad)
{
	return bad == -1 ? "obs-fold in request head" : "bare LF in request head (CRLF required)";
}
