/* The process: shards, the replica registry and the current config, as seen
 * by the control thread (control.c) and main.c. Shards never touch this
 * struct on the hot path except through the config snapshots sent to them. */
#ifndef RINGROUTE_PROXY_H
#define RINGROUTE_PROXY_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "ringroute/accesslog.h"
#include "ringroute/config.h"
#include "ringroute/metrics.h"
#include "ringroute/upstream.h"

struct shard;

struct proxy_options {
	const char *config_path;    /* --config */
	const char *listen;         /* --listen ADDR:PORT */
	unsigned nshards;           /* --shards, 0 = one per online CPU */
	const char *control_path;   /* --control PATH (Unix socket) or NULL */
	const char *admin;          /* --admin ADDR:PORT or NULL */
	const char *state_path;     /* --state FILE or NULL */
	const char *report_url;     /* --report-url http://host:port/path or NULL */
	uint32_t report_interval_ms;/* --report-interval-ms, default 1000 */
	uint32_t drain_timeout_ms;  /* --drain-timeout-ms, default 10000 */
	uint32_t drain_delay_ms;    /* --drain-delay-ms, default 0: SIGTERM to listener close */
	int ready_requires_healthy; /* --ready-requires-healthy: /readyz needs a healthy replica */
	int watch_config;           /* --watch-config: reload --config when it changes */
	uint32_t header_timeout_ms; /* --header-timeout-ms, default 10000: a request
	                             * head must arrive within this of its first byte */
	int pin;                    /* pin shard i to CPU i (--pin on|off|auto; auto:
	                             * only when there is a shard for every CPU) */
	const char *access_log;     /* --access-log PATH ("-": stdout) or NULL */
	enum accesslog_format access_log_format; /* --access-log-format, default text */
	uint32_t access_log_buffer_kb; /* --access-log-buffer, per shard */
	uint32_t instance_index;    /* --instance-index, default 0 */
	uint32_t instance_count;    /* --instance-count, default 1 */
	const char *peers;          /* --peers dns:NAME:PORT | ADDR:PORT,... or NULL */
};

/* Where the process is in its life, for /readyz (service.c). */
enum proxy_phase {
	PHASE_STARTING = 0, /* shards not all listening yet */
	PHASE_LIVE,         /* serving its first config or a later one */
	PHASE_DRAINING,     /* SIGTERM/SIGINT seen: going away */
};

struct proxy {
	struct proxy_options opt;
	_Atomic int phase;           /* enum proxy_phase: written by main, read by the control thread */
	/* Called by proxy_change with the new snapshot, config_lock held (so
	 * in version order), for systemd's STATUS=; NULL: nothing. */
	void (*on_change)(struct proxy *p, const struct config *c);
	struct replica_registry registry;
	pthread_mutex_t config_lock; /* serialises changes (control thread, SIGHUP) */
	struct config *config;       /* current snapshot, one reference held here */
	unsigned nshards;
	struct shard *shards[RR_MAX_SHARDS];
	uint16_t listen_port;        /* actual port (after binding port 0) */
	pthread_mutex_t xring_lock;  /* guards xring */
	void *xring;                 /* struct io_uring used to send MSG_RING to shards */
	/* Changes applied and refused (control API writes, SIGHUP), counted
	 * by proxy_count_change from the control and the main thread. */
	_Atomic uint64_t changes_ok, changes_failed;
	struct accesslog *alog;      /* --access-log, or NULL; outlives the shards */
	/* This instance is instance_index of instance_count (instance.h):
	 * written under config_lock by proxy_set_instance, read by
	 * proxy_change to share the caps of every snapshot; atomic for the
	 * readers that only show them (stats, /metrics). */
	_Atomic uint32_t instance_index, instance_count;
};

/* Apply a validated change: c becomes the current snapshot (version one
 * more than the current), is written to --state atomically (temp file,
 * fsync, rename) when configured, then published to every shard. Takes over
 * the caller's reference. Takes config_lock itself. Returns 0, or -errno
 * with err set when the state file could not be written (nothing changed). */
int proxy_change(struct proxy *p, struct config *c, char *err, size_t errlen);
/* The same, only if the current snapshot is still base (a change built
 * from base's document, e.g. its names resolved again, must not undo an
 * edit made meanwhile): else -EAGAIN, c dropped, nothing changed. */
int proxy_change_from(struct proxy *p, const struct config *base, struct config *c, char *err,
		      size_t errlen);

/* This instance becomes index of count (count >= 1, index < count):
 * when that differs from the current I/N, the current document is built
 * again with the new shares (instance_apply) and applied as one change
 * (the state file, the version, the shards: as any edit). Takes
 * config_lock itself. 0 (also when nothing changed), or -errno with err
 * set (then the previous I/N still hold). */
int proxy_set_instance(struct proxy *p, uint32_t index, uint32_t count, char *err,
		       size_t errlen);

/* Load path and apply it as one change (SIGHUP). Returns 0, or -errno
 * with err set (the file does not load, or as proxy_change). Callers that
 * serialise changes (ctl_api) hold their lock around it. */
int proxy_reload(struct proxy *p, const char *path, char *err, size_t errlen);

/* Count one configuration change, applied (ok) or refused, for
 * ringroute_config_reloads_total. proxy_change and proxy_reload count
 * their own; a caller that refuses a change before it reaches them (the
 * control API's validation) counts it here. Any thread. */
void proxy_count_change(struct proxy *p, bool ok);

/* Make c the current config and send it to every shard (MSG_RING). Takes
 * over the caller's reference. Call with config_lock held. Returns 0, or
 * -errno if a shard could not be reached (the change is still current). */
int proxy_publish(struct proxy *p, struct config *c);
/* Sets each replica state's draining flag as c says (a replica's "drain"),
 * and raises it on the replicas of old (NULL: none) that c no longer
 * names. proxy_publish does it; main for the first snapshot. */
void proxy_mark_draining(const struct config *old, const struct config *c);

/* Tell every shard to stop accepting, drain and exit its loop (SIGTERM).
 * Returns 0 or the first -errno of the broadcast. */
int proxy_stop_shards(struct proxy *p);

/* The current snapshot, with a reference for the caller (config_unref it).
 * For readers off the shards: control, health checks, stats. */
struct config *proxy_config_get(struct proxy *p);

/* Read-side views summed over shards; the caller owns the result. */
json_t *proxy_stats_json(struct proxy *p);   /* GET /v1/stats */
json_t *proxy_queues_json(struct proxy *p);  /* GET /v1/queues: {backend: {queued, ongoing, replicas}} */

/* Counters summed over shards at read time (for /v1/stats and prom.c's
 * /metrics): the shards only ever add to their own. Control thread. */
struct shards_sum {
	uint64_t accepted, closed;   /* client connections */
	uint64_t requests;           /* requests begun */
};
void proxy_sum_shards(struct proxy *p, struct shards_sum *out);
/* Every endpoint any shard has counted (those removed from the config
 * too; "" for unrouted requests), in *out (mi_free it). Returns how many;
 * 0 and NULL when there are none or memory ran out. */
size_t proxy_sum_endpoints(struct proxy *p, struct endpoint_sum **out);
void proxy_sum_backend(struct proxy *p, struct backend_state *bs, struct backend_sum *out);
void proxy_sum_replica(struct proxy *p, struct replica_state *rs, struct pool_sum *out);

#endif
