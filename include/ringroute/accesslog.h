/* The access log: one line per request, written once when the request ends
 * (request.c: req_end), however it ended. --access-log PATH (- is stdout),
 * --access-log-format text|json; the fields, their order and the reasons
 * are documented in docs/operations.md ("Access log").
 *
 * Decision: each shard formats its lines itself and appends them to its own
 * byte ring (struct alog_ring: single producer, the shard; single consumer,
 * one logger thread), and the logger thread writes what the rings hold with
 * writev. Why not io_uring writes from the shard: a write to a regular file
 * is executed by io_uring's worker threads anyway (files have no
 * non-blocking write), the shard would own buffers until each write
 * completes and would have to handle short writes, errors and the reopen on
 * SIGUSR1 in its loop; the thread keeps all of that (and every syscall on
 * the file) off the shards. Why a byte ring rather than handing over whole
 * buffers: the logger sees a line as soon as it is appended, so no shard
 * needs a flush timer and a quiet shard's last lines are not held back; the
 * ring costs the shard a memcpy and a release store per line.
 *
 * What a shard pays per request: filling a struct accesslog_rec, formatting
 * it (accesslog_format, no allocation once its line buffer grew) and the
 * copy into its ring. It never takes a lock and never makes a syscall,
 * except one eventfd write when its ring passes half full, to wake the
 * logger early (the logger otherwise looks every ACCESSLOG_FLUSH_MS).
 *
 * Bounded memory: a ring is --access-log-buffer KiB per shard. A line that
 * does not fit (the logger is behind: slow disk, a pipe nobody reads) is
 * dropped and counted (accesslog_dropped, "access_log_dropped" in
 * /v1/stats); the request is never held back. Lines the logger cannot
 * write (an error from the file, or an output still blocked when ringroute
 * stops) are dropped and counted too.
 *
 * SIGUSR1 (logrotate): accesslog_reopen asks the logger to open PATH again;
 * lines already in the rings go to the new file, none is lost. */
#ifndef RINGROUTE_ACCESSLOG_H
#define RINGROUTE_ACCESSLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ringroute/strbuf.h"

#define ACCESSLOG_FLUSH_MS 100u         /* the logger looks at the rings this often */
#define ACCESSLOG_BUFFER_KB_DEFAULT 1024u /* ring per shard */
#define ACCESSLOG_BUFFER_KB_MIN 64u      /* a line can be ~30 KiB (a 4 KiB path escaped) */
#define ACCESSLOG_BUFFER_KB_MAX (1024u * 1024u)
#define ACCESSLOG_PATH_MAX 4096u        /* longer request targets are cut here */

enum accesslog_format { ACCESSLOG_TEXT, ACCESSLOG_JSON };

/* "text", "json" -> 0 and *out; -1 for anything else. */
int accesslog_format_parse(const char *s, enum accesslog_format *out);

/* One finished request, as a line shows it. Strings are borrowed for the
 * call; a NULL string (or length 0) is printed as "-" in text and null in
 * JSON. Durations are microseconds, printed as fractional milliseconds. */
struct accesslog_rec {
	const char *time;             /* RFC 3339 UTC, milliseconds: when it ended */
	const char *client;           /* "ADDR:PORT" */
	const char *method;
	const char *path;             /* request target as sent (query included) */
	size_t path_len;
	const char *version;          /* "HTTP/1.1" */
	int status;                   /* 0: none (printed as "-" / null) */
	const char *endpoint, *backend, *replica;
	const char *request_id;
	size_t request_id_len;
	uint64_t bytes_in;            /* from the client: head and body */
	uint64_t bytes_out;           /* to the client: head and body */
	uint64_t queue_us;            /* waiting for a replica slot */
	int64_t ttfb_us;              /* to the first response byte; -1: none was sent */
	uint64_t duration_us;
	uint32_t retries;
	const char *reason;           /* req_reason_name() */
};

/* Appends r as one line (ending in '\n') to out, in format f. The pure core
 * of the log (tests/unit/test_accesslog.c): values from clients (path,
 * request id) are escaped so that a line is always one line, and in JSON
 * always valid JSON (sb_put_json_str). Text: the fields in the order of
 * struct accesslog_rec, separated by one space; bytes outside 0x21..0x7e
 * and '\' are written \xHH, an empty value "-", a value that is just "-"
 * \x2d. Returns 0 or -ENOMEM (out may then hold part of the line). */
int accesslog_format(const struct accesslog_rec *r, enum accesslog_format f, struct strbuf *out);

struct accesslog;
struct alog_ring;

/* A shard's side of the log (embedded in struct shard). Only its shard
 * touches it. */
struct accesslog_shard {
	struct accesslog *al;         /* NULL: no access log */
	struct alog_ring *ring;
	enum accesslog_format fmt;
	struct strbuf line;           /* the line being formatted, reused */
	uint64_t stamp_ms;            /* monotonic ms the cached stamp is for */
	char stamp[32];               /* log_time_rfc3339, cached for one ms */
};

/* Opens path ("-": stdout) for appending (created 0640 if absent; a FIFO
 * must have a reader), makes a ring of buffer_kb KiB for each of nshards
 * shards and starts the logger thread (call with the signals the main
 * thread takes already blocked: the thread inherits the mask). Returns 0
 * with *out, or -errno after logging why. */
int accesslog_open(struct accesslog **out, const char *path, enum accesslog_format fmt,
		   unsigned nshards, uint32_t buffer_kb);
/* Shard id's side (on the shard's thread, before its loop): as->al NULL
 * when al is NULL. */
void accesslog_shard_init(struct accesslog_shard *as, struct accesslog *al, unsigned id);
/* After the shard's loop: frees its line buffer (its ring is al's). */
void accesslog_shard_teardown(struct accesslog_shard *as);

static inline bool accesslog_on(const struct accesslog_shard *as) { return as->al != NULL; }

/* The shard's line for r, which ends now (now_us: clock_now_us()): sets
 * r->time, formats, appends to the ring, or drops the line and counts it
 * when the ring is full or memory is short. Never blocks. */
void accesslog_put(struct accesslog_shard *as, struct accesslog_rec *r, uint64_t now_us);

/* SIGUSR1 (any thread): the logger opens the path again, soon. */
void accesslog_reopen(struct accesslog *al);
/* Lines dropped so far: rings full, write errors, left at stop (any
 * thread; 0 when al is NULL). */
uint64_t accesslog_dropped(struct accesslog *al);
/* Waits (at most timeout_ms) until every line put before the call is
 * written; shards may go on putting lines meanwhile. For an exit that
 * cannot wait for the shards (drain timeout). */
void accesslog_flush(struct accesslog *al, uint32_t timeout_ms);
/* After every shard is gone: writes what the rings still hold (giving up
 * after about a second on an output that takes nothing), stops the
 * logger, closes the file and frees al. Returns the lines dropped over
 * its life (also logged when any were); NULL: nothing, 0. */
uint64_t accesslog_close(struct accesslog *al);

#endif
