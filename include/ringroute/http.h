/* HTTP/1.1 message heads: collecting the head of a request or response from
 * llhttp callbacks (which may split any token across receive buffers), and
 * writing the rewritten head that ringroute forwards. Bodies never pass
 * through here: they are forwarded raw from the receive buffers. */
#ifndef RINGROUTE_HTTP_H
#define RINGROUTE_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <llhttp.h>

#include "ringroute/strbuf.h" /* heads are written into a strbuf */

#define HTTP_MAX_HEAD (64u * 1024u)   /* larger header blocks get 431 */
#define HTTP_MAX_HEADERS 256
#define HTTP_REQUEST_ID_MAX 128u      /* longest X-Request-Id kept from a client */

struct http_hdr {
	uint32_t name_off, name_len;
	uint32_t value_off, value_len;
	uint32_t flags;               /* HDR_F_* */
};

enum {
	HDR_F_HOP = 1u << 0,          /* hop-by-hop: never forwarded */
};

/* One message head being collected. buf holds the URL (requests) or the
 * reason phrase (responses) followed by every header name and value. */
struct http_head {
	char *buf;
	uint32_t len, cap;
	uint32_t url_off, url_len;    /* request target, or reason phrase */
	uint32_t nhdrs;
	int in_value;                 /* last callback was a value */
	int too_large;                /* head exceeded HTTP_MAX_HEAD / HTTP_MAX_HEADERS */
	struct http_hdr hdrs[HTTP_MAX_HEADERS];
};

void http_head_reset(struct http_head *h);
void http_head_free(struct http_head *h);
/* llhttp data callbacks feed these. Return 0, or -1 when the head is too
 * large (then h->too_large is set and the caller answers 431). */
int http_head_url(struct http_head *h, const char *at, size_t len);
int http_head_field(struct http_head *h, const char *at, size_t len);
int http_head_value(struct http_head *h, const char *at, size_t len);
/* on_header_value_complete: ends the header even when its value was empty. */
int http_head_value_done(struct http_head *h);

static inline const char *http_hdr_name(const struct http_head *h, const struct http_hdr *x)
{
	return h->buf + x->name_off;
}
static inline const char *http_hdr_value(const struct http_head *h, const struct http_hdr *x)
{
	return h->buf + x->value_off;
}
/* Case-insensitive lookup of the first header called name; NULL if absent. */
const struct http_hdr *http_head_find(const struct http_head *h, const char *name);
/* The integer value of header h of hd (X-Request-Priority,
 * X-Request-Timeout-Ms): an optional sign and 1..18 digits, nothing else.
 * 0 and *out, or -1 when it is not one (the caller ignores it). */
int http_hdr_int(const struct http_head *hd, const struct http_hdr *h, int64_t *out);
/* 1 when every header name is an RFC 9110 token (llhttp's non-strict build
 * lets "Host : x" through); 0 means answer 400. */
int http_head_valid(const struct http_head *h);
/* Mark every header called name (case-insensitive) as not forwarded. */
void http_head_mark_named(struct http_head *h, const char *name);
/* Mark hop-by-hop headers (the fixed list plus those named in Connection). */
void http_head_mark_hop(struct http_head *h);

enum { HTTP_EV_NONE = 0, HTTP_EV_HEADERS, HTTP_EV_MESSAGE };

/* An llhttp parser and the head it collects. The callbacks installed by
 * http_settings_init() pause at the end of the head and at the end of the
 * message, so the caller learns where the raw body starts and ends (the
 * pause position) and forwards those bytes untouched. Both the client and
 * the upstream side parse with one of these. */
/* Raw request-head bytes, fed as they are parsed (any split): catches what
 * llhttp accepts in some places and not in others. */
struct http_scan {
	unsigned prev_cr : 1;
	unsigned after_lf : 1;
	uint32_t lines;               /* line ends seen */
};
static inline void http_scan_init(struct http_scan *sc) { sc->prev_cr = sc->after_lf = 0; sc->lines = 0; }
/* Returns 0, -1 (obs-fold: a header line starting with SP or HTAB) or -2
 * (a bare LF where CRLF is required). */
int http_scan_head(struct http_scan *sc, const char *p, size_t n);
/* The error text for a non-zero http_scan_head result. */
const char *http_scan_reason(int bad);

#define HTTP_CHUNK_EXT_MAX 4096u /* chunk-extension bytes of one chunk line */

struct http_parser {
	llhttp_t p;                   /* p.data: the owner (client, upstream) */
	struct http_head hd;
	int event;                    /* HTTP_EV_*: why execute last paused */
	int no_body;                  /* response to HEAD: the head ends it */
	/* requests only (http_request_parser_start) */
	struct http_scan scan;        /* raw head bytes: bare LF, obs-fold */
	uint32_t ext_bytes;           /* chunk extensions of the current chunk line */
	char tail[4];                 /* last body bytes: a chunked body ends in CRLF CRLF */
};

/* Fill s with the head-collecting, pausing callbacks; the owner may then
 * add its own (on_message_begin, on_body). */
void http_settings_init(llhttp_settings_t *s);
/* The same for requests, plus a bound on chunk extensions
 * (HTTP_CHUNK_EXT_MAX: past it the parser fails with HPE_USER). */
void http_request_settings_init(llhttp_settings_t *s);
/* (Re)start hp for a new request with settings s (from
 * http_request_settings_init), owned by data. Transfer-Encoding is left to
 * http_check_request (501 for a coding we lack), not refused by llhttp. */
void http_request_parser_start(struct http_parser *hp, const llhttp_settings_t *s, void *data);
/* The same for a parser standing at a message boundary (the previous
 * request ended cleanly): llhttp goes on by itself, only our per-message
 * state is reset, and the owner becomes data. */
void http_request_parser_next(struct http_parser *hp, void *data);
/* Body bytes of the request went by: remember its last bytes. */
void http_body_seen(struct http_parser *hp, const char *p, size_t n);
/* At the message end: did a chunked body end in CRLF CRLF? (llhttp lets a
 * bare LF end the trailer section; the head's rule holds here too.) */
int http_body_end_ok(const struct http_parser *hp);

/* The client's X-Request-Id that stands: the first one not marked
 * hop-by-hop whose value is 1..HTTP_REQUEST_ID_MAX bytes of visible ASCII
 * (0x21..0x7e: it goes into responses and the access log as it is), or
 * NULL. */
const struct http_hdr *http_head_request_id(const struct http_head *h);

/* Values added to a forwarded request. */
struct fwd_info {
	const char *client_ip;        /* for X-Forwarded-For */
	const char *request_id;       /* used when the client sent no valid one */
	const char *call_method;      /* endpoint default, or NULL */
	/* The backend reads load reports (load.h): sent as
	 * endpoint-load-metrics-format instead of any the client sent; NULL:
	 * the client's pass unchanged. */
	const char *load_format;
	/* The head is left open for a body held before routing (request.c):
	 * no Content-Length, Transfer-Encoding, Expect or
	 * endpoint-load-metrics-format of the client's (the request layer
	 * answered the Expect and writes the framing and load format once the
	 * held body decided them), and no final empty line. */
	bool open;
	bool drop_timeout;            /* leave out the client's X-Request-Timeout-Ms: the
	                               * request layer adds the remaining time itself */
};

/* Write the request head sent to a replica: "METHOD URL HTTP/1.1", the
 * client's end-to-end headers, X-Forwarded-For appended, X-Request-Id and
 * X-Serve-Call-Method added when absent, endpoint-load-metrics-format
 * when fi->load_format says so. Of the client's X-Request-Id
 * headers only http_head_request_id's is forwarded (in place); when there
 * is none, fi->request_id is added. Body framing headers
 * (Content-Length / Transfer-Encoding) pass unchanged because the body is
 * forwarded raw. Returns 0 or -ENOMEM. */
int http_write_request_head(struct strbuf *out, const struct http_head *h, const llhttp_t *p,
			    const struct fwd_info *fi);

/* Write the response head sent to the client: status line as HTTP/1.1,
 * end-to-end headers, plus "Connection: close" when close is set. A 1xx
 * head loses its Content-Length / Transfer-Encoding (it has no body).
 * request_id (NULL: none) is sent as X-Request-Id instead of any the
 * replica sent, so the client always sees the id of the access log. */
int http_write_response_head(struct strbuf *out, const struct http_head *h, const llhttp_t *p,
			     int close, const char *request_id);

/* A complete JSON error response (README "Errors": {"error": ..., "endpoint": ...}).
 * endpoint may be NULL (JSON null). retry_after > 0 adds Retry-After;
 * request_id (NULL: none) adds X-Request-Id. */
int http_write_error(struct strbuf *out, int status, const char *msg, const char *endpoint,
		     int close, int retry_after, const char *request_id);

const char *http_reason(int status);

/* Request conformance that llhttp leaves to us (RFC 9110 / 9112): HTTP/1.x
 * only; a request target of visible ASCII; header values without control
 * bytes; exactly one valid Host (uri-host[:port]) in HTTP/1.1, at most one
 * in HTTP/1.0; Transfer-Encoding only "chunked", once, and never in
 * HTTP/1.0; no Upgrade other than the ignorable h2c. Returns 0, or the
 * status to answer (400, 501, 505) with msg holding the reason. */
int http_check_request(const struct http_head *h, const llhttp_t *p, char *msg, size_t msglen);



#endif
