/* Connections to replicas: per shard, a keep-alive pool per replica;
 * connect with a timeout; the response parsed with llhttp only to find its
 * head and its end. upstream hands the request layer a structured response
 * (req_on_response_head with a struct resp_head, body bytes, the end, or a
 * failure) and never touches a client: the client protocol writes it. */
#ifndef RINGROUTE_UPSTREAM_H
#define RINGROUTE_UPSTREAM_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include "ringroute/config.h"
#include "ringroute/http.h"
#include "ringroute/metrics.h"
#include "ringroute/sock.h"
#include "ringroute/timer.h"

struct shard;
struct upstream;

#define UPSTREAM_IDLE_TIMEOUT_MS 60000u
#define SINK_HIGH (256u * 1024u)  /* stop reading a peer while this much waits to be sent */

/* A replica's response head, parsed. */
struct resp_head {
	int status;
	uint16_t flags;               /* llhttp F_* (16 bits: F_TRANSFER_ENCODING is 0x200) */
	struct http_head *hd;         /* headers, hop-by-hop marked; the writer may mark more */
	const llhttp_t *p;
};

/* How the owner wants the response body. */
enum up_body_mode {
	UP_BODY_RAW = 0,              /* the bytes as received, framing included */
	UP_BODY_DECODED,              /* de-chunked data (for an HTTP/1.0 client) */
};

/* How an attempt failed. */
enum up_failure {
	UP_FAIL_CONNECT = 1,          /* refused, unreachable, or connect timed out */
	UP_FAIL_RESET,                /* closed or reset before the response ended */
	UP_FAIL_TIMEOUT,              /* request_timeout_ms without a byte */
	UP_FAIL_BAD_RESPONSE,         /* unparseable, 101, or bytes on an idle connection */
	UP_FAIL_NO_MEMORY,
};

/* What the owner of an exchange (a request, a shadow copy) hears from its
 * upstream. The upstream never knows what its owner is. on_end, on_failed
 * and on_gone come after the upstream detached itself: the owner forgets
 * its pointer to it then. */
struct upstream_events {
	/* The final head. Returns an enum up_body_mode, or -1 when the owner
	 * ended and aborted the upstream. */
	int (*on_head)(struct shard *s, void *owner, const struct resp_head *rh);
	/* An interim (1xx, not 101) head. 0, or -1 when the owner ended. */
	int (*on_interim)(struct shard *s, void *owner, const struct resp_head *rh);
	void (*on_body)(struct shard *s, void *owner, uint32_t bid, const char *p, size_t len);
	void (*on_end)(struct shard *s, void *owner);
	/* reused: a pooled connection that died before any response byte. */
	void (*on_failed)(struct shard *s, void *owner, enum up_failure f, int reused);
	/* The replica took the queued body: more may be sent. */
	void (*on_drained)(struct shard *s, void *owner);
	/* The connection was freed under its owner (shard teardown). */
	void (*on_gone)(struct shard *s, void *owner);
	/* Bytes waiting to go to the client (response back-pressure). */
	size_t (*pending)(const void *owner);
	/* Has the owner sent the whole request body? (reuse needs it) */
	bool (*body_done)(const void *owner);
};

/* One exchange to start: who owns it and what to send. Borrowed for the
 * upstream_start call only (the bytes are queued, referenced or copied). */
struct upstream_req {
	const struct upstream_events *ev;
	void *owner;
	const char *head;             /* request head to send */
	size_t head_len;
	const struct seg *body;       /* body bytes kept so far (replay) */
	uint32_t nbody;
	uint32_t connect_timeout_ms, request_timeout_ms;
	bool is_head;                 /* HEAD: the response has no body */
};

/* How a replica failed an exchange, as counted per replica
 * (ringroute_upstream_errors_total{kind}): finer than enum up_failure,
 * which says only what the owner does about it. */
enum up_error {
	UP_ERR_CONNECT_FAILED = 0,    /* refused or unreachable */
	UP_ERR_CONNECT_TIMEOUT,       /* not accepted within connect_timeout_ms */
	UP_ERR_RESET,                 /* closed or reset before the response ended */
	UP_ERR_TIMEOUT,               /* no byte for request_timeout_ms */
	UP_ERR_BAD_RESPONSE,          /* unparseable or non-conforming, a 101 */
	UP_ERR_COUNT,
};
/* "connect_failed", "connect_timeout", "reset", "timeout", "bad_response". */
const char *upstream_error_name(enum up_error e);

struct upstream_pool {
	struct list idle;          /* idle keep-alive connections (sock.node) */
	uint32_t nidle;
	counter_t requests;        /* exchanges started (requests and shadow copies) */
	counter_t errors[UP_ERR_COUNT]; /* exchanges failed, by kind */
};

/* A replica's pools summed over shards (for /v1/stats and /metrics). */
struct pool_sum {
	uint64_t requests;
	uint64_t errors[UP_ERR_COUNT];
};

void upstream_pool_add(struct pool_sum *sum, struct upstream_pool *pool);

/* Upstream flags. */
enum {
	UP_F_REUSED    = 1u << 0,  /* taken from the pool: may be found dead */
	UP_F_GOT_BYTES = 1u << 1,  /* response bytes arrived for the current request */
	UP_F_IN_BODY   = 1u << 2,  /* the final head was handed on */
	UP_F_CONNECTED = 1u << 3,
	UP_F_DECODED   = 1u << 4,  /* hand on de-chunked body bytes, not raw ones */
	UP_F_NO_BODY   = 1u << 5,  /* 204, 304 or a response to HEAD: the head is all */
	UP_F_HEAD_REQ  = 1u << 6,  /* the current request is a HEAD */
};

struct upstream {
	struct sock sk;
	struct shard *s;
	struct replica_state *rs;  /* referenced */
	struct upstream_pool *pool;
	struct http_parser hp;     /* hp.p.data = this upstream */
	const struct upstream_events *ev;
	void *owner;               /* NULL while idle in the pool */
	uint32_t request_timeout_ms;
	uint32_t flags;            /* UP_F_* */
	uint32_t cur_bid;          /* buffer being parsed, for on_body */
	struct timer timer;        /* connect / response / idle timeout */
};

/* Start the exchange ur on replica rs (the caller holds a slot on it):
 * take a pooled connection, or connect a new one (always when fresh), and
 * queue ur's head and body. Returns 0 and *out, or -errno (nothing
 * started); never calls an event from inside. */
int upstream_start(struct shard *s, const struct upstream_req *ur, struct replica_state *rs,
		   const struct rr_addr *addr, int fresh, struct upstream **out);
/* Queue body bytes of the request (bid BID_NONE: copied). 0 or -errno. */
int upstream_body(struct shard *s, struct upstream *up, uint32_t bid, const char *p, size_t len);
/* Is the replica slow to take the body (more than SINK_HIGH queued)? */
bool upstream_congested(const struct upstream *up);
/* The client drained its output: read the replica again. */
void upstream_resume(struct shard *s, struct upstream *up);
/* The owner is done with the exchange (abandoned, failed, cut): no event
 * comes any more; the connection closes. */
void upstream_abort(struct shard *s, struct upstream *up);
/* A new snapshot is current: idle connections to replicas the old one
 * named and that are now draining close. */
void upstream_config_changed(struct shard *s, struct config *old);
/* The socket-free core of reading a response, for up's input and for the
 * fuzz target: one llhttp run over data (a receive buffer, bid), heads and
 * body bytes handed to the owner's events. *used: bytes consumed. */
enum up_step {
	UP_STEP_MORE = 0,             /* all went to the parser: feed more */
	UP_STEP_END,                  /* the response is complete */
	UP_STEP_FAIL,                 /* not a valid response (or a 101) */
	UP_STEP_GONE,                 /* the owner ended meanwhile and aborted up */
};
enum up_step upstream_parse(struct shard *s, struct upstream *up, const char *data, uint32_t len,
			    uint32_t bid, uint32_t *used);
/* The replica closed: UP_STEP_END when that ends a close-delimited body,
 * else UP_STEP_FAIL. */
enum up_step upstream_parse_eof(struct upstream *up);
/* A connection's parser set for a new exchange (is_head: HEAD request). */
void upstream_parser_reset(struct upstream *up, bool is_head);
/* Close every idle pooled connection of replica r on this shard. */
void upstream_pool_drain(struct shard *s, struct replica_state *r);

#endif
