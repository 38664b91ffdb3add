/* A shard: one thread pinned to one core, one io_uring, its own listener,
 * buffer ring, timer wheel, connections and queues. Nothing here is touched
 * by another thread except through MSG_RING messages (xring.c) and the
 * atomic replica counters.
 *
 * struct shard is the per-shard context every data-path module is handed
 * (sock, h1, request, queue, upstream read and write their own parts of
 * it); the functions of shard.c are the loop: one place decodes every
 * completion (user_data carries {op, socket index, generation}, sock.h) and
 * dispatches it. */
#ifndef RINGROUTE_SHARD_H
#define RINGROUTE_SHARD_H

#include <liburing.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/uio.h>

#include "ringroute/accesslog.h"
#include "ringroute/bufring.h"
#include "ringroute/config.h"
#include "ringroute/list.h"
#include "ringroute/metrics.h"
#include "ringroute/timer.h"

struct proxy;
struct sock;
struct sock_send;

enum msg_kind {
	MSG_CONFIG = 1, /* a new snapshot waits in shard.next_config */
	MSG_WAKE,       /* a slot freed elsewhere: retry queued requests */
	MSG_STOP,       /* close the listener, drain, exit the loop */
	MSG_DRAIN,      /* SIGTERM: keep serving, but every response closes its connection */
	MSG_PING,       /* the watchdog: answer by bumping pongs (service.c) */
	MSG_ABORT,      /* the drain timed out: end what is still open (shutdown) */
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
	int draining;             /* MSG_DRAIN or MSG_STOP seen: responses say Connection: close */
	uint32_t header_timeout_ms; /* --header-timeout-ms */
	/* socket table (sock.c) */
	struct sock **socks;
	uint32_t *sock_gen;       /* generation of each slot: survives reuse */
	uint32_t nsocks, cap_socks;
	uint32_t *free_idx;
	uint32_t nfree;
	struct sock_send *free_sends; /* iovec blocks of finished sends */
	int flush_retry;          /* a flush found no SQE: wait briefly, not forever */
	/* accept (shard.c) */
	int accept_armed;         /* the multishot accept is in flight */
	int accept_paused;        /* at the open-files limit: waiting on accept_backoff */
	uint32_t accept_backoff_ms;
	struct timer accept_timer;
	uint32_t nclients;        /* open client connections */
	struct list rearm;        /* sockets waiting for buffers */
	struct list dead;         /* sockets to free at the top of the loop */
	struct list flushq;       /* sockets whose sendmsg waits for the end of the batch */
	struct list queued;       /* struct bqueue of each backend with waiters here (queue.c) */
	struct list clients;      /* every open client connection (h1.c) */
	struct h1_parser *free_parsers; /* parsing state of finished requests (h1.c) */
	uint32_t nfree_parsers;
	int retry_pending;        /* a slot freed here: retry the queue after this completion */
	struct timer queue_tick;  /* retries queued requests while any wait */
	sem_t started;            /* posted once init finished (init_err says how) */
	int init_err;
	struct shard_metrics metrics;
	struct accesslog_shard alog; /* this shard's access log lines (accesslog.h) */
	_Atomic int ready;        /* set once the loop runs */
	_Atomic uint64_t pongs;   /* MSG_PINGs answered: main's watchdog sees the loop turn */
	_Atomic int exited;
};

/* Create shard id (listener on addr with SO_REUSEPORT; the ring and the
 * buffer ring are made by the shard's own thread). Returns 0 or -errno; on
 * error nothing is left allocated. */
int shard_create(struct proxy *p, unsigned id, const struct rr_addr *addr,
		 struct shard **out);
/* Start the shard's thread (pinned to CPU id % online CPUs when
 * p->opt.pin). Returns 0 or the -errno of its ring set-up. */
int shard_start(struct shard *s);
void shard_join_and_destroy(struct shard *s);

#endif
