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
struct request;

#define UPSTREAM_IDLE_TIMEOUT_MS 60000u

struct upstream_pool {
	struct list idle;          /* idle keep-alive connections (sock.node) */
	uint32_t nidle;
	counter_t requests, errors;
};

/* Upstream flags. */
enum {
	UP_F_REUSED    = 1u << 0,  /* taken from the pool: may be found dead */
	UP_F_GOT_BYTES = 1u << 1,  /* response bytes arrived for the current request */
	UP_F_IN_BODY   = 1u << 2,  /* the final head was handed on */
	UP_F_CONNECTED = 1u << 3,
	UP_F_DECODED   = 1u << 4,  /* hand on de-chunked body bytes, not raw ones */
	UP_F_NO_BODY   = 1u << 5,  /* 204, 304 or a response to HEAD: the head is all */
};

struct upstream {
	struct sock sk;
	struct shard *s;
	struct replica_state *rs;  /* referenced */
	struct upstream_pool *pool;
	struct http_parser hp;     /* hp.p.data = this upstream */
	struct request *req;       /* NULL while idle in the pool */
	uint32_t flags;            /* UP_F_* */
	uint32_t cur_bid;          /* buffer being parsed, for on_body */
	struct timer timer;        /* connect / response / idle timeout */
};

/* Start req on replica rs (the caller holds a slot on it): take a pooled
 * connection, or connect a new one (always when fresh), and queue the
 * request head and the body kept so far. Returns 0 (req->up is set), or
 * -errno with req untouched; never calls back into the request layer. */
int upstream_start(struct shard *s, struct request *req, struct replica_state *rs,
		   const struct sockaddr_in *addr, int fresh);
/* Queue body bytes of the request (bid BID_NONE: copied). 0 or -errno. */
int upstream_body(struct shard *s, struct upstream *up, uint32_t bid, const char *p, size_t len);
/* Is the replica slow to take the body (more than SINK_HIGH queued)? */
bool upstream_congested(const struct upstream *up);
/* The client drained its output: read the replica again. */
void upstream_resume(struct shard *s, struct upstream *up);
/* The request is being abandoned or failed: detach it and close. */
void upstream_abort(struct shard *s, struct upstream *up);
/* A new snapshot is current: idle connections to replicas the old one
 * named and that are now draining close. */
void upstream_config_changed(struct shard *s, struct config *old);
/* Close every idle pooled connection of replica r on this shard. */
void upstream_pool_drain(struct shard *s, struct replica_state *r);

#endif
