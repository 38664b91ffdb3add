/* Concurrent HTTP GETs of replicas from a helper thread: the client that
 * the health checker (health.c) and the load scrape (scrape.c) share.
 *
 * A probe_set is one thread's set of probes in flight, each a
 * non-blocking connect, the request, and the answer, with one deadline
 * for all of it; probe_poll runs one poll() over all of them, so a replica
 * that never answers costs its own probe a timeout and delays no other.
 * A probe either reads only the status line (health: "HTTP/1.x NNN") or
 * the whole answer up to a size bound, delimited by its Content-Length or
 * the replica closing (the request is HTTP/1.0, so no chunked coding
 * comes back). A probe holds a reference on the snapshot it was started
 * from, which keeps its backend, replica and replica_state alive however
 * the config changes meanwhile. Not thread-safe: a set belongs to one thread. */
#ifndef RINGROUTE_PROBE_H
#define RINGROUTE_PROBE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ringroute/config.h"
#include "ringroute/health_result.h"

struct probe;
struct pollfd;

/* How a probe ended: kind HEALTH_OK or HEALTH_STATUS with value the
 * status, or the failure (health_result.h) with its errno or 0. For a
 * whole-answer probe, probe_body() gives the body then. Called once, on
 * the set's thread; the probe is closed and freed after it returns. */
typedef void (*probe_done_fn)(struct probe *pr, enum health_kind kind, unsigned value);

struct probe {
	struct config *cfg;           /* a reference: b and r point into it */
	const struct backend_cfg *b;
	const struct replica_cfg *r;
	void *arg;                    /* the starter's */
	probe_done_fn done;
	int fd;
	int phase;                    /* probe.c's */
	uint64_t deadline_ms;
	char req[1024];
	size_t req_len, req_off;
	size_t max;                   /* 0: the status line only; else the whole answer, at most this */
	char *resp;                   /* the answer so far (line, or a malloc'ed buffer) */
	size_t got, cap;
	size_t body_off, body_len;    /* whole answers: the body (at most its Content-Length) */
	char line[64];
};

/* Last start time per backend name, across config changes. */
struct probe_slot {
	char *name;
	uint64_t last_ms;
};

struct probe_set {
	struct probe **v;             /* in flight */
	size_t n, cap;
	struct pollfd *pfds;
	size_t pfds_cap;
	int wake_fd;                  /* eventfd: probe_set_wake() ends a wait */
	struct probe_slot *slots;
	size_t nslots;
};

/* 0, or -errno (no eventfd). */
int probe_set_init(struct probe_set *ps);
/* Closes the probes still in flight without calling done (the thread is
 * stopping) and frees everything. */
void probe_set_destroy(struct probe_set *ps);
/* From any thread: wakes a probe_poll in progress. */
void probe_set_wake(struct probe_set *ps);

/* Whether backend name is due at now for a round every interval_ms (its
 * first time: yes); when due, its last start becomes now. -ENOMEM when
 * the slot cannot be made (skip it this time). */
int probe_due(struct probe_set *ps, const char *name, uint32_t interval_ms, uint64_t now);

/* Starts GET path on replica r of backend b (both in c, which gets a
 * reference for the probe's lifetime), ending by timeout_ms from now.
 * max_body 0: only the status line is read ("HTTP/1.1" request with
 * Connection: close); else the whole answer up to max_body bytes (an
 * "HTTP/1.0" request; a longer answer fails as HEALTH_NOT_HTTP). A probe
 * that fails at once is done at once. 0, or -ENOMEM (nothing started). */
int probe_start(struct probe_set *ps, struct config *c, const struct backend_cfg *b,
		const struct replica_cfg *r, const char *path, size_t max_body, uint32_t timeout_ms,
		uint64_t now, probe_done_fn done, void *arg);

/* A whole-answer probe that ended HEALTH_OK or HEALTH_STATUS: its body
 * (*len bytes). NULL for status-line probes. */
const char *probe_body(const struct probe *pr, size_t *len);

/* Fails every probe past its deadline, then frees the finished ones. */
void probe_reap(struct probe_set *ps, uint64_t now);
/* Waits at most until wake_ms (or the earliest deadline, or a wake-up)
 * and advances every probe that got an event. 0, or -ENOMEM when the poll
 * set could not grow (the turn was skipped; deadlines still apply). */
int probe_poll(struct probe_set *ps, uint64_t wake_ms);

#endif
