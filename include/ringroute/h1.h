/* The HTTP/1.1 client connection: parsing requests with llhttp (plus the
 * conformance checks of http_check_request and http_scan_head), header and
 * keep-alive timeouts, pipelining (one request at a time; the next waits
 * unparsed in the input queue, so responses go out in order), error
 * replies, and writing the response the request layer hands it.
 *
 * An idle connection holds its socket and a small struct h1_conn only: the
 * parsing state (llhttp, the header table, the head buffer) is taken from
 * the shard's pool when a request's first byte arrives and given back when
 * the connection is idle again. */
#ifndef RINGROUTE_H1_H
#define RINGROUTE_H1_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include "ringroute/http.h"
#include "ringroute/sock.h"
#include "ringroute/timer.h"
#include "ringroute/upstream.h"

struct shard;
struct request;

#define H1_KEEPALIVE_TIMEOUT_MS 75000u
#define H1_DEFAULT_HEADER_TIMEOUT_MS 10000u
#define H1_POOL_MAX 256u       /* parsing states kept per shard for reuse */

/* Connection flags. */
enum {
	H1_F_IN_BODY   = 1u << 0,  /* current request's head done, body being read */
	H1_F_MSG_DONE  = 1u << 1,  /* current request fully received */
	H1_F_CLOSE     = 1u << 2,  /* close once the current response is sent */
	H1_F_RESP_HEAD = 1u << 3,  /* response head already queued to the client */
	H1_F_DISCARD   = 1u << 4,  /* request answered early: read and drop its body */
	H1_F_LINGER    = 1u << 5,  /* closing after output drains */
	H1_F_BEGUN     = 1u << 6,  /* a request head has started arriving */
	H1_F_IN_PARSE  = 1u << 7,  /* h1_on_input is running for this connection */
};

/* Parsing state of one request (pooled per shard). */
struct h1_parser {
	struct http_parser hp;     /* hp.p.data = the connection */
	struct h1_parser *next;    /* shard.free_parsers */
};

struct h1_conn {
	struct sock sk;
	struct shard *s;
	struct h1_parser *ps;      /* while a request is being parsed; NULL when idle */
	struct request *req;       /* current request, or NULL between requests */
	uint32_t flags;            /* H1_F_* */
	uint32_t head_bytes;       /* bytes of the current request head received */
	struct timer timer;        /* header / keep-alive idle timeout */
	struct list all;           /* in shard.clients */
	char ip[INET6_ADDRSTRLEN];
	uint16_t port;             /* the client's, for the access log (ip:port) */
};

/* The head an HTTP/1.1 client gets for the replica's head rh (the socket-
 * free part of writing a response, shared with the fuzz target): hop-by-
 * hop headers dropped, no Content-Length on a 204, a chunked body decoded
 * for an HTTP/1.0 client, X-Request-Id: request_id (NULL: none) instead of
 * the replica's, Connection: close when *close is set or the body is
 * delimited by the close (then *close becomes true). Returns the enum
 * up_body_mode to hand the body in, or -ENOMEM. */
int h1_response_head(struct strbuf *out, const struct resp_head *rh, bool http10, bool is_head,
		     const char *request_id, bool *close);

/* A connection accepted on fd: it is now the shard's (closed on error). */
void h1_accept(struct shard *s, int fd);
/* SIGTERM: idle connections close now, busy ones after their response. */
void h1_shard_stop(struct shard *s);
/* The drain timed out: every request still open ends now with 503 and
 * reason shutdown (cut, if its response began), so it is counted and
 * logged once like any other; every connection closes. */
void h1_shard_abort(struct shard *s);
/* After the loop: free the pooled parsing states. */
void h1_shard_teardown(struct shard *s);

#endif
