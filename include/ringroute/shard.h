/* A shard: one thread pinned to one core, one io_uring, its own listener,
 * buffer ring, timer wheel, connections and queues. Nothing here is touched
 * by another thread except through MSG_RING messages (xring.c) and the
 * atomic replica counters.
 *
 * Every socket a shard owns (client or upstream) starts with a struct sock:
 * the shard's socket table gives it an index, and each SQE's user_data
 * carries {op, index, generation} so one place decodes every completion. */
#ifndef RINGROUTE_SHARD_H
#define RINGROUTE_SHARD_H

#include <liburing.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/uio.h>

#include "ringroute/bufring.h"
#include "ringroute/config.h"
#include "ringroute/list.h"
#include "ringroute/metrics.h"
#include "ringroute/timer.h"

struct proxy;

enum op {
	OP_NONE = 0,
	OP_ACCEPT,    /* multishot accept on the listener */
	OP_RECV,      /* multishot recv with provided buffers */
	OP_SEND,      /* sendmsg of the socket's output queue */
	OP_CONNECT,   /* upstream connect */
	OP_CANCEL,    /* cancellation of a recv; result ignored */
	OP_MSG,       /* MSG_RING message from the control thread or a shard */
};

enum msg_kind {
	MSG_CONFIG = 1, /* a new snapshot waits in shard.next_config */
	MSG_WAKE,       /* a slot freed elsewhere: retry queued requests */
	MSG_STOP,       /* stop accepting, drain, exit the loop */
};

enum sock_kind { SOCK_CLIENT, SOCK_UPSTREAM };

/* Socket flags. */
enum {
	SK_F_RECV_ARMED = 1u << 0,  /* a multishot recv is in flight */
	SK_F_SENDING    = 1u << 1,  /* a sendmsg is in flight (one per socket) */
	SK_F_CLOSING    = 1u << 2,  /* being torn down: wait for SQEs, then free */
	SK_F_EOF        = 1u << 3,  /* peer sent FIN */
	SK_F_RECV_OFF   = 1u << 4,  /* owner does not want input now (back-pressure) */
	SK_F_REARM      = 1u << 5,  /* on the shard's re-arm list after -ENOBUFS */
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

struct sock {
	int fd;
	uint32_t idx, gen;
	uint8_t kind;
	uint32_t flags;
	uint32_t sqes;            /* SQEs in flight that name this socket */
	int error;                /* first error seen (-errno), 0 if none */
	/* output queue: a ring of segments, one sendmsg in flight */
	struct seg *out;
	uint32_t out_head, out_n, out_cap;
	size_t out_bytes;
	uint32_t iov_n;           /* segments in the sendmsg in flight */
	struct iovec iov[SOCK_IOV_MAX];
	struct msghdr msg;
	/* input queue (grows: a multishot recv may deliver more before its
	 * cancellation lands) */
	struct inbuf *in;
	uint32_t in_head, in_n, in_cap;
	struct list node;         /* owner's list (pool idle list, ...) */
	struct list rearm;        /* shard.rearm after -ENOBUFS */
	struct list flush;        /* shard.flushq: output to send before the next wait */
};

struct shard {
	unsigned id;
	struct proxy *proxy;
	struct shard **peers;     /* every shard of the process, by id */
	unsigned proxy_nshards;
	struct io_uring ring;
	int listen_fd;
	pthread_t thread;
	struct bufring br;
	struct timer_wheel tw;
	struct config *config;    /* current snapshot (one reference) */
	_Atomic(struct config *) next_config; /* set by the control thread */
	uint64_t rng;
	uint32_t rr_cursor;
	int stopping;
	/* socket table */
	struct sock **socks;
	uint32_t nsocks, cap_socks;
	uint32_t *free_idx;
	uint32_t nfree;
	uint32_t nclients;        /* open client connections */
	struct list rearm;        /* sockets waiting for buffers */
	struct list dead;         /* sockets to free at the top of the loop */
	struct list flushq;       /* sockets whose sendmsg waits for the end of the batch */
	struct list queued;       /* requests waiting for a slot, oldest first */
	struct list clients;      /* every open client connection */
	int retry_pending;        /* a slot freed here: retry the queue after this completion */
	struct timer queue_tick;  /* retries queued requests while any wait */
	sem_t started;            /* posted once init finished (init_err says how) */
	int init_err;
	struct shard_metrics metrics;
	_Atomic int ready;        /* set once the loop runs */
	_Atomic int exited;
};

/* Create shard id (ring, buffer ring, listener on addr with SO_REUSEPORT).
 * Returns 0 or -errno; on error nothing is left allocated. */
int shard_create(struct proxy *p, unsigned id, const struct sockaddr_in *addr,
		 struct shard **out);
/* Start the shard's thread pinned to CPU (id % online CPUs). */
int shard_start(struct shard *s);
void shard_join_and_destroy(struct shard *s);

static inline uint64_t shard_ud(enum op op, const struct sock *sk)
{
	return (uint64_t)op | ((uint64_t)(sk->gen & 0xffffff) << 8) | ((uint64_t)sk->idx << 32);
}

/* Get an SQE, submitting first if the SQ is full. Never NULL. */
struct io_uring_sqe *shard_sqe(struct shard *s);
uint64_t shard_now_ms(struct shard *s);

/* Socket table. sock_register gives sk an index and generation; the memory
 * stays the caller's (embedded in a client or upstream struct). */
int sock_register(struct shard *s, struct sock *sk, int fd, enum sock_kind kind);
/* Start tearing sk down: shutdown(2), cancel its recv, drop queued output.
 * The owner's free hook runs from the loop once no SQE names it. */
void sock_close(struct shard *s, struct sock *sk);
/* Queue bytes for sending. sock_push_copy copies; sock_push_buf references
 * a provided buffer; sock_push_owned takes ownership of mi_malloc'ed memory. */
int sock_push_copy(struct shard *s, struct sock *sk, const void *p, size_t len);
int sock_push_buf(struct shard *s, struct sock *sk, uint32_t bid, const char *p, size_t len);
int sock_push_owned(struct shard *s, struct sock *sk, void *own, const char *p, size_t len);
/* Start a sendmsg if none is in flight and output is queued. */
void sock_flush(struct shard *s, struct sock *sk);
/* Like sock_flush, but the sendmsg is prepared at the end of the completion
 * batch, after queued requests were dispatched to freed slots. Responses to
 * clients go this way: a replica's next request leaves first, so the slot
 * idles for the shortest time, and a response's segments from one batch go
 * in one sendmsg. */
void sock_flush_later(struct shard *s, struct sock *sk);
/* Arm a multishot recv if none is armed and the socket wants input. */
void sock_want_input(struct shard *s, struct sock *sk);
/* Owner stops wanting input: no new recv is armed; a recv in flight is
 * cancelled once SOCK_INQ_MAX buffers are waiting. */
void sock_pause_input(struct shard *s, struct sock *sk);
/* Consume n bytes from the front input buffer, dropping it when empty. */
void sock_in_consume(struct shard *s, struct sock *sk, uint32_t n);
/* Drop all queued input. */
void sock_in_clear(struct shard *s, struct sock *sk);
/* Copy queued input out of the provided buffers and give those back: for a
 * peer that may wait long (queued request), so that waiting peers never
 * hold the buffers that the requests being served need. */
void sock_in_spill(struct shard *s, struct sock *sk);

static inline const char *sock_in_ptr(const struct shard *s, const struct inbuf *b)
{
	return (b->mem ? b->mem : bufring_ptr(&s->br, b->bid)) + b->off;
}

/* Send a MSG_RING message of kind to shard t from shard s's ring. */
void shard_msg(struct shard *s, struct shard *t, enum msg_kind kind);

#endif
