/* The process: shards, the replica registry and the current config, as seen
 * by the control thread (control.c) and main.c. Shards never touch this
 * struct on the hot path except through the config snapshots sent to them. */
#ifndef RINGROUTE_PROXY_H
#define RINGROUTE_PROXY_H

#include <jansson.h>
#include <pthread.h>
#include <stdint.h>

#include "ringroute/accesslog.h"
#include "ringroute/config.h"

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
	uint32_t header_timeout_ms; /* --header-timeout-ms, default 10000: a request
	                             * head must arrive within this of its first byte */
	int pin;                    /* pin shard i to CPU i (--pin on|off|auto; auto:
	                             * only when there is a shard for every CPU) */
	const char *access_log;     /* --access-log PATH ("-": stdout) or NULL */
	enum accesslog_format access_log_format; /* --access-log-format, default text */
	uint32_t access_log_buffer_kb; /* --access-log-buffer, per shard */
};

struct proxy {
	struct proxy_options opt;
	struct replica_registry registry;
	pthread_mutex_t config_lock; /* serialises changes (control thread, SIGHUP) */
	struct config *config;       /* current snapshot, one reference held here */
	unsigned nshards;
	struct shard *shards[RR_MAX_SHARDS];
	uint16_t listen_port;        /* actual port (after binding port 0) */
	pthread_mutex_t xring_lock;  /* guards xring */
	void *xring;                 /* struct io_uring used to send MSG_RING to shards */
	struct accesslog *alog;      /* --access-log, or NULL; outlives the shards */
};

/* Apply a validated change: c becomes the current snapshot (version one
 * more than the current), is written to --state atomically (temp file,
 * fsync, rename) when configured, then published to every shard. Takes over
 * the caller's reference. Takes config_lock itself. Returns 0, or -errno
 * with err set when the state file could not be written (nothing changed). */
int proxy_change(struct proxy *p, struct config *c, char *err, size_t errlen);

/* Make c the current config and send it to every shard (MSG_RING). Takes
 * over the caller's reference. Call with config_lock held. Returns 0, or
 * -errno if a shard could not be reached (the change is still current). */
int proxy_publish(struct proxy *p, struct config *c);

/* Tell every shard to stop accepting, drain and exit its loop (SIGTERM).
 * Returns 0 or the first -errno of the broadcast. */
int proxy_stop_shards(struct proxy *p);

/* The current snapshot, with a reference for the caller (config_unref it).
 * For readers off the shards: control, health checks, stats. */
struct config *proxy_config_get(struct proxy *p);

/* Read-side views summed over shards; the caller owns the result. */
json_t *proxy_stats_json(struct proxy *p);   /* GET /v1/stats */
json_t *proxy_queues_json(struct proxy *p);  /* GET /v1/queues: {backend: {queued, ongoing, replicas}} */
char *proxy_metrics_text(struct proxy *p);   /* GET /metrics, Prometheus text; mi_free() it */

#endif
