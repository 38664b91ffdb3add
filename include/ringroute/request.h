/* The lifecycle of one request (docs/ARCHITECTURE.md "The path of one request"): route it,
 * dispatch it to a replica or queue it, retry it, copy it to shadows, hand
 * the replica's response to the client protocol, and end it exactly once.
 *
 * A client protocol (h1.c today, h2 later) creates a request with req_new
 * and its struct req_client_ops, describes it with struct req_info
 * (req_start), feeds its body (req_body / req_body_done) and learns how it
 * goes only through its ops: the response head as a structure, body bytes,
 * the end, or a failure with a status. The upstream side (upstream.c)
 * reports the replica's response to the request with the req_on_* calls.
 *
 * Ownership: the request layer owns every struct request. Each request
 * ends in exactly one place, req_end(), which records it once (metrics by
 * status, and its access log line) whether it was answered, failed,
 * rejected or abandoned, and frees it. Before that, the client protocol is told
 * (ops->on_end or ops->on_fail) and must drop its pointer then; after any
 * req_* call the protocol may only use the request if its own pointer is
 * still set. */
#ifndef RINGROUTE_REQUEST_H
#define RINGROUTE_REQUEST_H

#include <llhttp.h>
#include <netinet/in.h>
#include <stdbool.h>

#include "ringroute/config.h"
#include "ringroute/http.h"
#include "ringroute/metrics.h"
#include "ringroute/queue.h"
#include "ringroute/router.h"
#include "ringroute/sock.h"
#include "ringroute/upstream.h"

struct shard;
struct upstream;
struct request;

#define REPLAY_MAX (1u << 20)     /* request bytes kept for a retry */
#define REQ_MAX_INTERIM 8         /* more 1xx than this before the final response: 502 */

/* Why a request ended: a fixed set, documented in docs/ARCHITECTURE.md and
 * docs/operations.md (the access log's reason field: req_reason_name). New
 * ones go last: metrics count by this index. */
enum req_reason {
	REQ_R_OK = 0,
	REQ_R_CLIENT_ABORT,         /* client closed or reset before the end */
	REQ_R_BAD_REQUEST,          /* malformed or non-conforming request */
	REQ_R_HEADERS_TOO_LARGE,
	REQ_R_NO_ROUTE,
	REQ_R_METHOD_NOT_ALLOWED,
	REQ_R_BODY_TOO_LARGE,
	REQ_R_NOT_IMPLEMENTED,      /* transfer coding or upgrade we do not do */
	REQ_R_HTTP_VERSION,         /* HTTP/2 preface, unknown major version */
	REQ_R_QUEUE_FULL,
	REQ_R_QUEUE_TIMEOUT,
	REQ_R_UPSTREAM_CONNECT_FAILED,
	REQ_R_UPSTREAM_RESET,
	REQ_R_UPSTREAM_TIMEOUT,
	REQ_R_UPSTREAM_BAD_RESPONSE,
	REQ_R_NO_MEMORY,
	REQ_R_SHUTDOWN,
	REQ_R_NO_HEALTHY_REPLICA,   /* no replica of the backend up: at once, or at the queue
	                             * timeout with queue_when_unavailable */
	REQ_R_NO_MODEL,             /* no endpoint of the route names the request's model
	                             * and none is a catch-all (404) */
	REQ_R_EVICTED,              /* queued, its place taken by a higher priority (503) */
	REQ_R_DEADLINE,             /* its deadline passed while queued (504) */
	REQ_R_DEADLINE_UNREACHABLE, /* could not start before its deadline (503) */
	REQ_R_SHED,                 /* sheddable (priority < 0) and no free slot (503) */
	REQ_R_TENANT_QUEUE_FULL,    /* max_queued_per_tenant reached (503) */
	REQ_R_COUNT,
};
const char *req_reason_name(enum req_reason r);

/* Request flags. */
enum {
	REQ_F_NO_REPLAY   = 1u << 0, /* body too large to keep, or response begun: no retry */
	REQ_F_FRESH_DONE  = 1u << 1, /* already retried once on a fresh connection */
	REQ_F_BODY_DONE   = 1u << 3, /* the client sent the whole body */
	REQ_F_RESP_BEGUN  = 1u << 4, /* the response head went to the client */
	REQ_F_ENDED       = 1u << 5, /* in req_end: nothing may start again */
	REQ_F_OWN_ANSWER  = 1u << 6, /* ringroute answered it itself (req_fail before any response) */
	REQ_F_RETRYING    = 1u << 7, /* holds one retry of its backend's budget (retry.h) */
};

/* An X-Request-Id a client sends is kept when it is 1..REQ_ID_MAX visible
 * ASCII bytes (http_head_request_id); otherwise ringroute makes one. */
#define REQ_ID_MAX HTTP_REQUEST_ID_MAX

/* What the client protocol knows of a request when its head is complete.
 * Pointers are borrowed for the req_start call only. */
struct req_info {
	unsigned method;              /* llhttp method */
	const char *url;              /* request target */
	size_t url_len;
	const struct http_head *hd;   /* headers, hop-by-hop ones marked */
	const llhttp_t *p;            /* the parser (version, method) for writing */
	const char *client_ip;
	uint32_t head_bytes;          /* bytes of the head as received */
	int64_t content_length;       /* -1 when not declared */
	bool is_head, http10, expect_continue;
	bool chunked;                 /* Transfer-Encoding: chunked (a body held before
	                               * routing is de-chunked to be read) */
};

/* The client protocol's side of a request. Every hook may be called from
 * any req_* function; none may end the request itself. */
struct req_client_ops {
	/* The final response head. Returns the enum up_body_mode it wants,
	 * or -errno when it cannot send it (the request then fails). */
	int (*on_head)(struct shard *s, struct request *req, const struct resp_head *rh);
	/* A 100 Continue from the replica for a client that asked for one. */
	void (*on_continue)(struct shard *s, struct request *req);
	void (*on_body)(struct shard *s, struct request *req, uint32_t bid, const char *p,
			size_t len);
	/* The response is complete; the request ends right after. */
	void (*on_end)(struct shard *s, struct request *req);
	/* The request failed with status (msg: the error text; retry_after:
	 * seconds or 0). If a response began already, the client can only be
	 * cut. The request ends right after. */
	void (*on_fail)(struct shard *s, struct request *req, int status, const char *msg,
			int retry_after);
	/* The request ended and was freed (after on_end or on_fail): the
	 * connection may go on with its next request. */
	void (*on_released)(struct shard *s, void *client);
	/* The replica took body bytes: the client may be read again. */
	void (*on_body_room)(struct shard *s, struct request *req);
	/* Bytes waiting to be sent to the client (response back-pressure). */
	size_t (*pending)(const struct request *req);
};

struct request {
	struct shard *s;
	const struct req_client_ops *cops; /* NULL once the client left or was told the end */
	void *client;                 /* the protocol's connection (for cops) */
	struct config *cfg;           /* referenced: the snapshot ep points into */
	struct config *be_cfg;        /* referenced when be was re-resolved in a newer one */
	const struct endpoint_cfg *ep;
	const struct backend_cfg *be;
	struct endpoint_metrics *em;
	struct replica_state *rs;     /* slot held on it while non-NULL */
	struct upstream *up;
	uint32_t flags;               /* REQ_F_* */
	uint32_t tries;               /* tries on another replica (retry_decide) */
	uint64_t tried_mask;          /* replica indexes already tried */
	uint64_t t_start_us, t_first_us;
	struct queue_entry qe;        /* in its backend's queue while waiting */
	struct strbuf head;           /* request head sent upstream (kept for replay) */
	struct seg *replay;           /* body segments kept for replay (buffer refs) */
	uint32_t nreplay, capreplay;
	size_t replay_bytes;
	uint64_t body_bytes;
	char *shard_key;              /* X-Serve-Shard-Key copy, or NULL */
	size_t shard_key_len;
	int status;                   /* what the client got (or 499) */
	enum req_reason reason;
	struct list shadows;          /* shadow copies still taking this body (shadow.c) */
	int ridx;                     /* replica index in be, -1 if none */
	unsigned interim;             /* 1xx responses seen */
	bool is_head;                 /* HEAD: the response has no body */
	bool http10;
	bool expect_continue;         /* the client sent Expect: 100-continue */
	bool idempotent;              /* its method may be sent twice (retry_idempotent) */
	/* The retry budget: the backend it is counted in flight on (its
	 * inflight, and retrying with REQ_F_RETRYING) until it ends. */
	struct backend_state *budget_bs;
	struct timer retry_timer;     /* the backoff before a retry on another replica */
	/* What the access log says of it (req_note; req_log in request.c). */
	const char *peer_ip;          /* the client's address: the protocol's connection's,
	                               * which outlives its requests */
	uint16_t peer_port;
	const char *method;           /* llhttp's name; NULL until req_note */
	char *path;                   /* the request target (at most ACCESSLOG_PATH_MAX bytes);
	                               * owned; NULL until req_note */
	uint32_t path_len;
	uint8_t http_major, http_minor; /* 0.0 until req_note */
	uint64_t bytes_in;            /* head bytes (req_note); the body is body_bytes */
	uint64_t bytes_out;           /* bytes queued for the client: the protocol adds them */
	uint64_t queue_us;            /* time spent queued, every wait summed */
	char rid[REQ_ID_MAX + 1];     /* X-Request-Id, NUL-terminated; "" until req_id */
	/* Who goes next (issue 12; req_classify): its priority (-10..10),
	 * its tenant (the fairness header's value, owned; NULL: tenant ""),
	 * its deadline (qe.req_deadline_us, 0: none). With a deadline the
	 * head is sent as head[0..head_base) + "X-Request-Timeout-Ms: N"
	 * + CRLF CRLF, N the time left at each attempt. */
	int prio;
	bool prio_hdr, deadline_hdr;  /* the head set them (else the endpoint's defaults) */
	char *tenant;
	size_t tenant_len;
	size_t head_base;
	uint64_t t_dispatch_us;       /* the current attempt's start, for service times */
	/* Routing on the body (docs/ARCHITECTURE.md "Held bodies"): while
	 * hold is set, body bytes are kept (req->replay, retry_hold) and
	 * nothing is routed; req_hold_decide chooses and sends them. */
	uint32_t hold;                /* REQ_HOLD_* bits: what the held body is read for */
	uint64_t hold_max;            /* route_body_max_bytes of the route */
	int64_t content_length;       /* as declared, -1 none */
	bool chunked;                 /* the client's body is chunked */
	bool client_cm;               /* the client sent X-Serve-Call-Method */
	unsigned method_num;          /* llhttp method (to match the model's endpoint) */
	char *model;                  /* the request's model (header or body), owned, or NULL */
	size_t model_len;
	char *mux_model;              /* serve_multiplexed_model_id, owned, or NULL */
	size_t mux_model_len;
	char *load_fmt;               /* the client's endpoint-load-metrics-format while the
	                               * head is open, owned, or NULL */
	size_t load_fmt_len;
	struct route_hint hint;       /* what the replica choice reads (router.h) */
	uint64_t *blocks;             /* prefix block hashes, owned (hint.blocks) */
};

/* What a held body is read for. */
enum {
	REQ_HOLD_MODEL   = 1u << 0,   /* the endpoint depends on the body's model */
	REQ_HOLD_BACKEND = 1u << 1,   /* the backend reads it (model_rewrite, prefix,
	                               * multiplex by the body's model) */
};

/* ---- for the client protocol ---- */

/* A new request of the protocol connection client, on the shard's current
 * snapshot. peer_ip, peer_port: the client's address (for the access log);
 * peer_ip is borrowed: the connection outlives its requests. NULL on ENOMEM
 * (the protocol answers 503 itself and closes). */
struct request *req_new(struct shard *s, const struct req_client_ops *ops, void *client,
			const char *peer_ip, uint16_t peer_port);
/* What the client sent, for the access log and the responses: ri->head_bytes
 * always; the client's X-Request-Id when ri->hd is set (a whole head, its
 * hop-by-hop headers marked) and it is a sane one; the method, target
 * (copied, cut at ACCESSLOG_PATH_MAX) and version when ri->url is set (the
 * request line was parsed). Call once, before req_start or req_fail; only
 * these fields of ri are read. */
void req_note(struct request *req, const struct req_info *ri);
/* The request's id (NUL-terminated), the one its X-Request-Id headers and
 * its log line carry: the client's (taken by req_note), else one made now
 * (16 hex digits) and kept. */
const char *req_id(struct request *req);
/* The head is complete: route, check limits, start shadows, dispatch or
 * queue. May end the request (404, 405, 413, 503...). */
void req_start(struct shard *s, struct request *req, const struct req_info *ri);
/* Raw body bytes (framing included) of the request; bid: the provided
 * buffer holding them, or BID_NONE. Returns 0, or -1 when the request
 * ended (413, forwarding failed). */
int req_body(struct shard *s, struct request *req, uint32_t bid, const char *p, size_t len);
/* The whole body was received. */
void req_body_done(struct shard *s, struct request *req);
/* Must the protocol hold body bytes back now (queued, connecting, or the
 * replica is slow)? ops->on_body_room says when to try again. */
bool req_body_blocked(const struct request *req);
/* The client's output drained below SINK_HIGH: the replica may be read. */
void req_client_drained(struct shard *s, struct request *req);
/* The one way to fail a request: tell the client (ops->on_fail), cut the
 * replica and shadows, end it. Also for requests the protocol rejects
 * before req_start (400, 431, 501, 505). */
void req_fail(struct shard *s, struct request *req, int status, enum req_reason reason,
	      const char *msg);
/* The client left (or its connection is torn down): end the request with
 * 499 without telling it. */
void req_abandon(struct shard *s, struct request *req, enum req_reason reason);

/* ---- for the shard ---- */

/* Dispatch queued requests (a slot may have freed). Returns how many left
 * their queue for a replica. */
int req_retry_queued(struct shard *s);
void req_shard_init(struct shard *s);

#endif
