/* instance: several ringroute processes sharing every cap exactly.
 *
 * Instance I of N enforces its share of each backend's max_ongoing_requests
 * and max_queued_requests, so that N instances behind an L4 balancer never
 * give a replica more than its cap nor queue more than the backend's bound
 * (docs/operations.md, "Several instances"). The share is computed once per
 * snapshot (instance_apply, from proxy_change and at start), so the data
 * path reads backend_cfg.max_ongoing / max_queued as before.
 *
 * I and N come from --instance-index/--instance-count, or from --peers:
 * a helper thread resolves the peer set every INSTANCE_PEERS_PERIOD_MS,
 * finds this instance in it by address (instance_derive, pure) and applies
 * a new I/N through proxy_set_instance when they change. */
#ifndef RINGROUTE_INSTANCE_H
#define RINGROUTE_INSTANCE_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>

struct config;
struct proxy;

#define INSTANCE_MAX_PEERS 256
/* The index of an instance that is not in its --peers set (or has not
 * found itself yet): its share of every cap is 0, and /readyz says 503
 * (docs/operations.md "Several instances"). */
#define INSTANCE_NONE UINT32_MAX
#define INSTANCE_PEERS_PERIOD_MS 2000

/* Instance index's share of cap among count instances: floor(cap/count),
 * plus one for index < cap % count, so the shares of 0..count-1 sum to cap
 * exactly. count 0 is taken as 1. May be 0 (cap < count); 0 for an
 * index >= count (INSTANCE_NONE). */
uint32_t instance_share(uint32_t cap, uint32_t index, uint32_t count);

/* Sets every backend's effective caps in c from its configured ones
 * (max_ongoing_cfg, max_queued_cfg) for instance index of count. A backend
 * whose max_ongoing share is 0 gets a queue bound of 0 too: this instance
 * answers its requests 503 at once instead of queueing them for a slot it
 * can never have. Only on a snapshot no shard has seen yet. */
void instance_apply(struct config *c, uint32_t index, uint32_t count);

/* The pure core of --peers: peers (any order, duplicates allowed, at most
 * INSTANCE_MAX_PEERS) is the resolved set; this instance is the peer whose
 * port is port and whose address is one of own[0..nown) (its interfaces'
 * addresses and its --listen address). Sorting the set by (address, port)
 * and dropping duplicates gives every instance the same order: its
 * position is I, the set's size N. Returns 0 with *index and *count,
 * or -1 when no peer is this instance (nothing written). */
int instance_derive(const struct sockaddr_in *peers, size_t npeers,
		    const struct sockaddr_in *own, size_t nown, uint16_t port,
		    uint32_t *index, uint32_t *count);

/* --peers: "dns:NAME:PORT" (NAME's IPv4 addresses, each with PORT,
 * resolved by dns_lookup: c-ares) or a
 * comma-separated list of ADDR:PORT literals. Returns 0 when spec has one
 * of these forms, else -EINVAL with err set. */
int instance_peers_check(const char *spec, char *err, size_t errlen);

/* Resolves spec once into out (at most INSTANCE_MAX_PEERS); returns how
 * many, or -1 with err set (resolution failed, or no address). Blocks
 * on DNS: the helper thread or start-up only. */
int instance_peers_resolve(const char *spec, struct sockaddr_in *out, size_t max, char *err,
			   size_t errlen);

#endif
