/* The socket layer of a shard: the socket table (index + generation), the
 * output queue of each socket (one sendmsg in flight), its input queue (the
 * provided buffers a multishot recv filled), recv arming and back-pressure,
 * and the completions of recv/send/connect/cancel.
 *
 * Every socket a shard owns starts with a struct sock, embedded in its
 * owner (an h1 client connection, an upstream connection). What differs by
 * kind of owner goes through its struct sock_ops, never a kind switch.
 *
 * The generation of a slot lives in the table (shard.sock_gen) and grows
 * every time the slot is reused, so a completion that names a freed and
 * reused slot is recognised as stale (sock_lookup) and dropped. */
#ifndef RINGROUTE_SOCK_H
#define RINGROUTE_SOCK_H

#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <liburing.h>

#include "ringroute/list.h"

struct shard;
struct sock;

enum op {
	OP_NONE = 0,
	OP_ACCEPT,    /* multishot accept on the listener */
	OP_RECV,      /* multishot recv with provided buffers */
	OP_SEND,      /* sendmsg of the socket's output queue */
	OP_CONNECT,   /* upstream connect */
	OP_CANCEL,    /* cancellation of a recv; result ignored */
	OP_MSG,       /* MSG_RING message from the control thread or a shard */
	OP_TIMEOUT,   /* accept back-off timer (EMFILE/ENFILE) */
	OP_MAX,
};

#define SOCK_UD_LISTENER 0xffffffffu /* idx of the listener's ops */
#define SOCK_UD_NONE     0xfffffffeu /* idx of ops whose result is ignored */

/* Behaviour by kind of owner. Every hook gets the shard and the socket;
 * the owner finds itself with container_of. */
struct sock_ops {
	const char *name;          /* "client", "upstream": for messages */
	unsigned buf_group;        /* provided-buffer group its recvs use */
	/* Input was queued in sk->in, or EOF was seen (SK_F_EOF). */
	void (*on_input)(struct shard *s, struct sock *sk);
	/* A sendmsg completed without error (output may be drained). */
	void (*on_sent)(struct shard *s, struct sock *sk);
	/* A recv or send failed with err (-errno); sk->error holds it. */
	void (*on_error)(struct shard *s, struct sock *sk, int err);
	/* The connect finished with res (0 or -errno). NULL: never connects. */
	void (*on_connect)(struct shard *s, struct sock *sk, int res);
	/* No SQE names sk any more and its fd is closed: free the owner. */
	void (*on_free)(struct shard *s, struct sock *sk);
};

/* Socket flags. */
enum {
	SK_F_RECV_ARMED = 1u << 0,  /* a multishot recv is in flight */
	SK_F_SENDING    = 1u << 1,  /* a sendmsg is in flight (one per socket) */
	SK_F_CLOSING    = 1u << 2,  /* being torn down: wait for SQEs, then free */
	SK_F_EOF        = 1u << 3,  /* peer sent FIN */
	SK_F_RECV_OFF   = 1u << 4,  /* owner does not want input now (back-pressure) */
	SK_F_REARM      = 1u << 5,  /* on the shard's re-arm list (no buffers, no SQE) */
	SK_F_CONNECTING = 1u << 6,  /* connect in flight: no sends yet */
	SK_F_CANCELING  = 1u << 7,  /* a cancel of the recv is in flight */
};

/* An output segment: bytes in a provided buffer (bid >= 0, referenced) or
 * in memory owned by the segment (own != NULL, freed when sent). */
struct seg {
	const char *p;
	uint32_t len;
	int32_t bid;
	void *own;
};

#define BID_NONE UINT32_MAX /* bytes not in a provided buffer */

/* Received bytes not yet consumed by the parser: in a provided buffer, or
 * (bid == BID_NONE) in memory of their own after sock_in_spill(). */
struct inbuf {
	uint32_t bid;
	uint32_t off, len;
	char *mem;
};

#define SOCK_IOV_MAX 32
#define SOCK_INQ_MAX 2     /* a paused socket's recv is cancelled when this many
                            * buffers wait: bounds what idle-waiting peers hold */

/* The iovecs of the one sendmsg in flight: taken from the shard when a
 * send starts and given back when it completes, so an idle socket holds
 * none (memory per idle connection). */
struct sock_send {
	struct msghdr msg;
	struct iovec iov[SOCK_IOV_MAX];
	uint32_t n;                /* segments in this sendmsg */
	struct sock_send *next;    /* shard's free list */
};

struct sock {
	int fd;
	uint32_t idx, gen;
	const struct sock_ops *ops;
	uint32_t flags;
	uint32_t sqes;            /* SQEs in flight that name this socket */
	int error;                /* first error seen (-errno), 0 if none */
	/* output queue: a ring of segments, one sendmsg in flight */
	struct seg *out;
	uint32_t out_head, out_n, out_cap;
	size_t out_bytes;
	struct sock_send *send;   /* while SK_F_SENDING */
	/* input queue (grows: a multishot recv may deliver more before its
	 * cancellation lands); freed when empty */
	struct inbuf *in;
	uint32_t in_head, in_n, in_cap;
	struct list node;         /* owner's list (pool idle list, ...) */
	struct list rearm;        /* shard.rearm: recv to arm later */
	struct list flush;        /* shard.flushq: output to send before the next wait */
};

static inline uint64_t sock_ud(enum op op, const struct sock *sk)
{
	return (uint64_t)op | ((uint64_t)(sk->gen & 0xffffff) << 8) | ((uint64_t)sk->idx << 32);
}
static inline uint64_t sock_ud_raw(enum op op, uint32_t idx)
{
	return (uint64_t)op | ((uint64_t)idx << 32);
}
static inline enum op sock_ud_op(uint64_t ud) { return (enum op)(ud & 0xff); }
static inline uint32_t sock_ud_idx(uint64_t ud) { return (uint32_t)(ud >> 32); }

/* An SQE from the shard's ring, submitting first if the SQ is full.
 * Returns NULL when the ring refuses submissions (a few tries, never a
 * spin): the caller fails or defers that one operation. */
struct io_uring_sqe *sock_sqe(struct shard *s);

/* Give sk (memory the caller's, embedded in its owner) a slot of the
 * table, with a generation no earlier socket of that slot had. Returns 0
 * or -ENOMEM. */
int sock_register(struct shard *s, struct sock *sk, int fd, const struct sock_ops *ops);
/* The live socket that user_data ud names, or NULL when its slot is free
 * or was reused since (stale completion). */
struct sock *sock_lookup(struct shard *s, uint64_t ud);

/* Start tearing sk down: shutdown(2), cancel its SQEs, drop queued output
 * not in flight and queued input. ops->on_free runs from the loop
 * (sock_reap) once no SQE names it. The owner takes sk off its own lists
 * first. */
void sock_close(struct shard *s, struct sock *sk);

/* Queue bytes for sending. sock_push_copy copies; sock_push_buf references
 * a provided buffer (copies when its reference count is saturated);
 * sock_push_owned takes ownership of mi_malloc'ed memory (freed on error
 * too). Return 0, -EPIPE (closing) or -ENOMEM. */
int sock_push_copy(struct shard *s, struct sock *sk, const void *p, size_t len);
int sock_push_buf(struct shard *s, struct sock *sk, uint32_t bid, const char *p, size_t len);
int sock_push_owned(struct shard *s, struct sock *sk, void *own, const char *p, size_t len);
/* Start a sendmsg if none is in flight and output is queued. */
void sock_flush(struct shard *s, struct sock *sk);
/* Like sock_flush, but the sendmsg is prepared at the end of the completion
 * batch (sock_flush_deferred), after queued requests were dispatched to
 * freed slots: what a batch produced for one peer leaves in one sendmsg. */
void sock_flush_later(struct shard *s, struct sock *sk);
void sock_flush_deferred(struct shard *s);

/* Arm a multishot recv if none is armed and the socket wants input. */
void sock_want_input(struct shard *s, struct sock *sk);
/* Owner stops wanting input: no new recv is armed; a recv in flight is
 * cancelled once SOCK_INQ_MAX buffers are waiting. */
void sock_pause_input(struct shard *s, struct sock *sk);
/* Consume n bytes from the front input buffer, dropping it when empty. */
void sock_in_consume(struct shard *s, struct sock *sk, uint32_t n);
/* Drop all queued input. */
void sock_in_clear(struct shard *s, struct sock *sk);
/* Bytes queued as input. */
size_t sock_in_bytes(const struct sock *sk);
/* Copy queued input out of the provided buffers and give those back: for a
 * peer that may wait long (queued request), so that waiting peers never
 * hold the buffers that the requests being served need. */
void sock_in_spill(struct shard *s, struct sock *sk);
const char *sock_in_ptr(const struct shard *s, const struct inbuf *b);

/* Completion of an op that names sk (the shard decoded it). */
void sock_complete(struct shard *s, struct sock *sk, struct io_uring_cqe *cqe);
/* A completion for a stale or unknown socket: give its buffer back. */
void sock_drop_cqe(struct shard *s, struct io_uring_cqe *cqe);
/* Loop hooks: free closed sockets; arm recvs that waited for buffers. */
void sock_reap(struct shard *s);
void sock_rearm_waiting(struct shard *s);
/* Loop end: free every socket still open without waiting for the kernel. */
void sock_table_teardown(struct shard *s);

#endif
