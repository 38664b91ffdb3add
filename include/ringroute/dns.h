/* dns: the names in replica addresses ("model.ns.svc:8000"), resolved off
 * the shards. A name resolved once is cached with its addresses in the
 * replica registry (struct dns_cache), so that a snapshot built again from
 * the same document (a control edit, SIGHUP, a refresh) finds the same
 * replicas without a lookup; the refresh thread re-resolves every cached
 * name every dns_refresh_ms and, when a set changed, rebuilds the current
 * snapshot from its own document through proxy_change: replicas of new
 * addresses are added, those of vanished ones drain like any removed
 * replica. A name that stops resolving keeps its last addresses.
 *
 * A "srv:_SERVICE._PROTO.NAME" host is cached and refreshed the same way,
 * its set being the SRV targets' addresses with the records' ports (a
 * replica restarted on another port behind the same name is found).
 *
 * Resolution is c-ares (libc-ares-dev) over /etc/hosts and the system's
 * resolv.conf, or, as a test hook, only the DNS server named by the
 * environment variable RR_DNS_SERVER ("127.0.0.1:5353"). */
#ifndef RINGROUTE_DNS_H
#define RINGROUTE_DNS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "ringroute/addr.h"
#include "ringroute/list.h"

struct proxy;
struct dns;

#define DNS_DEFAULT_REFRESH_MS 5000u

/* Names and their last addresses (port 0; SRV: with ports, weights), owned by the replica registry.
 * gen counts changes of any set: a snapshot built at an older gen is out
 * of date. Any thread; the lock is never held across a lookup. */
struct dns_cache {
	pthread_mutex_t lock;
	struct list names;            /* struct dns_name */
	_Atomic uint64_t gen;
};

void dns_cache_init(struct dns_cache *dc);
void dns_cache_destroy(struct dns_cache *dc);

/* host "srv:NAME" (DNS_SRV_PREFIX) asks for NAME's SRV records instead:
 * the lowest priority's, each target's addresses with the record's port
 * and weight (dns.c resolve_srv). */
#define DNS_SRV_PREFIX "srv:"

/* The addresses of host (port 0 for a name, the records' for "srv:",
 * sorted, without duplicates): the cached ones, or a lookup now
 * (blocking: never call it on a shard) that is then cached. dc may be
 * NULL (no cache: always a lookup). Returns 0 with *out (malloc'ed, at
 * least one), *n and, when weights is not NULL, *weights (malloc'ed, n
 * SRV weights 0..65535; NULL for a name), or -ENOENT with err holding the
 * resolver's reason ("Domain name not found"), or -ENOMEM. */
int dns_lookup(struct dns_cache *dc, const char *host, struct rr_addr **out, uint32_t **weights,
	       size_t *n, char *err, size_t errlen);

/* Resolve host again and update its entry: a changed set bumps gen (and
 * is logged with both sets), a failure keeps the last set (logged once,
 * until it resolves again). A host not cached is left alone. Blocking. */
void dns_refresh(struct dns_cache *dc, const char *host);
/* Drop every cached name but the n hosts (those a snapshot still uses). */
void dns_keep_only(struct dns_cache *dc, char *const *hosts, size_t n);

/* Start the refresh thread (dns_refresh.c) of p (its registry's cache, its current
 * snapshot's dns_refresh_ms). 0 and *out, or -errno. */
int dns_start(struct proxy *p, struct dns **out);
/* Stop and join it; NULL is fine. */
void dns_stop(struct dns *d);

#endif
