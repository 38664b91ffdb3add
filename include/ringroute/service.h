/* service: ringroute as a service to what runs it (docs/operations.md).
 *
 * * Readiness: GET /readyz on the admin port is 200 only while the proxy is
 *   live (every shard listening with its first config), not draining, and,
 *   with --ready-requires-healthy, some endpoint has a replica up.
 * * The drain: the first SIGTERM/SIGINT makes /readyz 503 and every shard
 *   answer with Connection: close (MSG_DRAIN), then waits --drain-delay-ms
 *   (load balancers notice and stop sending) unless a second signal comes;
 *   main then closes the listeners and waits for requests in flight.
 * * systemd's notify protocol (sd_notify(3), libsystemd): READY=1,
 *   RELOADING=1, STOPPING=1, STATUS= with the config version, WATCHDOG=1.
 *   Without NOTIFY_SOCKET every message is a no-op.
 * * The watchdog (WATCHDOG_USEC set by systemd): every half period main
 *   checks that each shard answered the MSG_PING it sent at the previous
 *   tick, pings systemd only if all did, and sends the next ping. A shard
 *   stuck anywhere (a blocking call, a loop that never ends) thus stops the
 *   pings and systemd restarts the process within WatchdogSec plus half of
 *   it. A shard's cost is one MSG_RING completion per half period.
 *
 * All of it runs on main's thread, except service_ready (the control
 * thread) and service_config_changed (whoever applies a change). */
#ifndef RINGROUTE_SERVICE_H
#define RINGROUTE_SERVICE_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "ringroute/config.h"

struct proxy;

struct service {
	struct proxy *p;
	uint64_t wd_period_ms;           /* half of WATCHDOG_USEC; 0: no watchdog */
	uint64_t wd_next_ms;             /* next tick (clock_now_ms) */
	uint64_t wd_seen[RR_MAX_SHARDS]; /* each shard's pongs when the last ping left */
	int wd_stalled;                  /* a shard missed a ping (logged once) */
};

/* Reads WATCHDOG_USEC (sd_watchdog_enabled) and hooks STATUS= to every
 * config change (p->on_change). Before the shards start. */
void service_init(struct service *svc, struct proxy *p);

/* Everything listens: phase live, READY=1 with the status, and the
 * watchdog's first ping to the shards. */
void service_live(struct service *svc);

/* Waits for one of the signals in set (blocked in every thread) and
 * returns it; 0 once deadline_ms (clock_now_ms; 0: none) has passed. Ticks
 * the watchdog meanwhile. */
int service_wait(struct service *svc, const sigset_t *set, uint64_t deadline_ms);

/* Around a reload (SIGHUP): RELOADING=1 before; READY=1 after, with the
 * status, and err when the reload was refused (NULL: it was applied). */
void service_reloading(struct service *svc);
void service_reloaded(struct service *svc, const char *err);

/* The first SIGTERM/SIGINT: phase draining (/readyz 503), STOPPING=1,
 * every shard told to close each connection after its response, then
 * --drain-delay-ms during which ringroute serves as before, cut short by a
 * second SIGTERM or SIGINT (other signals in set are ignored meanwhile).
 * The caller closes the listeners next (proxy_stop_shards). */
void service_drain(struct service *svc, const sigset_t *set);

/* Whether p should be sent traffic (GET /readyz): 1, or 0 with why set
 * ("starting", "draining", "no endpoint has a healthy replica"). Any
 * thread. */
int service_ready(struct proxy *p, char *why, size_t len);

/* Whether some endpoint of c sends traffic to a backend with a replica up
 * (router_replica_up): what --ready-requires-healthy asks of /readyz. */
int service_config_servable(const struct config *c);

#endif
