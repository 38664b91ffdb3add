/* The objects of the data path shared by conn.c (client side) and
 * upstream.c (replica side): client connections, requests and upstream
 * connections. Private to those two modules and the shard. */
#ifndef RINGROUTE_REQUEST_H
#define RINGROUTE_REQUEST_H

#include <llhttp.h>
#include <netinet/in.h>

#include "ringroute/config.h"
#include "ringroute/http.h"
#include "ringroute/metrics.h"
#include "ringroute/shard.h"

#define REPLAY_MAX (1u << 20)     /* request bytes kept for a retry */
#define SINK_HIGH (256u * 1024u)  /* stop reading a peer while this much waits to be sent */

/* Client flags. */
enum {
	CL_F_IN_BODY   = 1u << 0,  /* current request's head done, body being read */
	CL_F_MSG_DONE  = 1u << 1,  /* current request fully received */
	CL_F_CLOSE     = 1u << 2,  /* close once the current response is sent */
	CL_F_RESP_HEAD = 1u << 3,  /* response head already queued to the client */
	CL_F_DISCARD   = 1u << 4,  /* request rejected: read and drop its body */
	CL_F_LINGER    = 1u << 5,  /* closing after output drains */
	CL_F_BEGUN     = 1u << 6,  /* a request head has started arriving */
};

/* Request flags. */
enum {
	REQ_F_QUEUED     = 1u << 0, /* waiting in shard.queued for a slot */
	REQ_F_NO_REPLAY  = 1u << 1, /* body too large to keep: no retry */
	REQ_F_FRESH_DONE = 1u << 2, /* already retried once on a fresh connection */
	REQ_F_SHADOW     = 1u << 3, /* shadow copy: response discarded */
};

struct upstream;
struct client;

/* A shard's FIFO of requests waiting for a slot of one backend. */
struct bqueue {
	struct list node;          /* in shard.queued */
	struct backend_state *bs;  /* referenced */
	struct list reqs;          /* oldest first */
	uint32_t n;
};

struct request {
	struct shard *s;
	struct client *c;          /* NULL for shadow copies or once the client left */
	struct config *cfg;        /* referenced: the snapshot ep points into */
	struct config *be_cfg;     /* referenced when be was re-resolved in a newer one */
	const struct endpoint_cfg *ep;
	const struct backend_cfg *be;
	struct endpoint_metrics *em;
	struct replica_state *rs;  /* slot held on it while non-NULL */
	struct upstream *up;
	uint32_t flags;
	uint32_t tries;            /* replicas tried after a connect failure */
	uint64_t tried_mask;       /* replica indexes already tried */
	uint64_t t_start_us, t_queued_us, t_first_us;
	uint64_t q_deadline_us;     /* queue timeout, on the now_us() clock */
	struct list qnode;         /* in shard.queued */
	struct strbuf head;        /* request head sent upstream (kept for replay) */
	struct seg *replay;        /* body segments kept for replay (buffer refs) */
	uint32_t nreplay, capreplay;
	size_t replay_bytes;
	uint64_t body_bytes;
	char *shard_key;           /* X-Serve-Shard-Key copy, or NULL */
	size_t shard_key_len;
	int status;
	struct list shadows;       /* shadow copies still taking this body */
	struct list shadow_node;   /* a shadow copy: in its owner's shadows */
	struct bqueue *bq;         /* queue it waits in while REQ_F_QUEUED */
	int ridx;                  /* replica index in be, -1 if none */
	int is_head;               /* HEAD request: the response has no body */
	int http10;                /* HTTP/1.0 client: chunked responses are decoded */
};

struct client {
	struct sock sk;
	struct http_parser hp;     /* hp.p.data = this client */
	struct request *req;       /* current request, or NULL between requests */
	uint32_t flags;
	uint32_t head_bytes;       /* bytes of the current request head received */
	struct timer timer;        /* header / keep-alive idle timeout */
	struct list all;           /* in shard.clients */
	struct shard *s;
	char ip[INET_ADDRSTRLEN];
};

struct upstream_pool {
	struct list idle;          /* idle keep-alive connections (sock.node) */
	uint32_t nidle;
	counter_t requests, errors;
};

/* Upstream flags. */
enum {
	UP_F_REUSED    = 1u << 0,  /* taken from the pool: may be found dead */
	UP_F_GOT_BYTES = 1u << 1,  /* response bytes arrived for the current request */
	UP_F_IN_BODY   = 1u << 2,
	UP_F_CONNECTED = 1u << 3,
};

struct upstream {
	struct sock sk;
	struct replica_state *rs;  /* referenced */
	struct upstream_pool *pool;
	struct http_parser hp;     /* hp.p.data = this upstream */
	struct request *req;
	uint32_t flags;
	int dechunk;               /* forward decoded body (HTTP/1.0 client) */
	uint32_t cur_bid;          /* buffer being parsed, for on_body */
	struct timer timer;        /* connect / response timeout */
	struct shard *s;
};

/* upstream.c */
/* Start req on replica rs (a slot is already held): take a pooled
 * connection or connect a new one, queue the head and kept body. fresh
 * forces a new connection. Returns 0 or -errno (req untouched on error). */
int upstream_start(struct shard *s, struct request *req, struct replica_state *rs,
		   const struct sockaddr_in *addr, int fresh);
/* Queue body bytes of the request on its upstream (bid BID_NONE: copied). */
int upstream_body(struct shard *s, struct upstream *up, uint32_t bid, const char *p, size_t len);
/* The request is being abandoned (client gone or failed): close up. */
void upstream_abort(struct shard *s, struct upstream *up);

/* conn.c: called by upstream.c as the response progresses */
void req_response_head(struct shard *s, struct request *req, struct strbuf *head);
void req_response_body(struct shard *s, struct request *req, uint32_t bid, const char *p,
		       size_t len);
/* Response complete (status known). reusable: the upstream stays open. */
void req_response_done(struct shard *s, struct request *req);
/* The upstream failed. err: -errno; connect_failed: it never connected;
 * timed_out: request_timeout_ms passed. conn.c retries or answers. */
void req_upstream_failed(struct shard *s, struct request *req, int err, int connect_failed,
			 int timed_out, int reused);
int req_wants_close(const struct request *req); /* client will close after */
int req_is_head(const struct request *req);

#endif
