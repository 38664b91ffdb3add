/* --peers: the helper thread that re-derives this instance's I and N from
 * its peer set every INSTANCE_PEERS_PERIOD_MS and applies a change through
 * proxy_set_instance (peers.h). The pure parts are instance.c. */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <stdio.h>
#include <string.h>

#include "ringroute/addr.h"
#include "ringroute/alloc.h"
#include "ringroute/instance.h"
#include "ringroute/log.h"
#include "ringroute/peers.h"
#include "ringroute/proxy.h"
#include "ringroute/ticker.h"

/* This machine's IPv4 addresses (every interface), plus the --listen
 * address when it is not the wildcard. */
static size_t own_addrs(struct proxy *p, struct sockaddr_in *out, size_t max)
{
	struct ifaddrs *ifa, *i;
	struct sockaddr_in l;
	size_t n = 0;

	if (p->opt.listen &&
	    addr_parse(p->opt.listen, strlen(p->opt.listen), ADDR_F_ANY | ADDR_F_PORT0, &l, NULL,
		       0) == 0 &&
	    l.sin_addr.s_addr != htonl(INADDR_ANY))
		out[n++] = l;
	if (getifaddrs(&ifa) == 0) {
		for (i = ifa; i && n < max; i = i->ifa_next)
			if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET)
				memcpy(&out[n++], i->ifa_addr, sizeof(*out));
		freeifaddrs(ifa);
	}
	return n;
}

int peers_find(struct proxy *p, uint32_t *index, uint32_t *count, char *err,
			size_t errlen)
{
	struct sockaddr_in peers[INSTANCE_MAX_PEERS], own[64];
	int n = instance_peers_resolve(p->opt.peers, peers, INSTANCE_MAX_PEERS, err, errlen);
	size_t nown;

	if (n < 0)
		return -1;
	nown = own_addrs(p, own, sizeof(own) / sizeof(own[0]));
	if (instance_derive(peers, (size_t)n, own, nown, p->listen_port, index, count)) {
		snprintf(err, errlen,
			 "none of the %d peers is this instance (port %u on one of this "
			 "machine's addresses)",
			 n, (unsigned)p->listen_port);
		return -1;
	}
	return 0;
}

void peers_round(struct proxy *p)
{
	char err[256];
	uint32_t index, count;

	if (peers_find(p, &index, &count, err, sizeof(err))) {
		log_warn("--peers: %s; keeping instance %u of %u", err,
			 (unsigned)atomic_load(&p->instance_index),
			 (unsigned)atomic_load(&p->instance_count));
		return;
	}
	if (proxy_set_instance(p, index, count, err, sizeof(err)))
		log_warn("--peers: %s", err);
}

struct peers {
	struct proxy *p;
	struct ticker *ticker;
};

static uint64_t peers_period(void *arg)
{
	(void)arg;
	return INSTANCE_PEERS_PERIOD_MS;
}

static void peers_tick(void *arg)
{
	peers_round(((struct peers *)arg)->p);
}

int peers_start(struct proxy *p, struct peers **out)
{
	struct peers *ip = mi_zalloc(sizeof(*ip));
	int rc;

	if (!ip)
		return -ENOMEM;
	ip->p = p;
	rc = ticker_start(peers_period, peers_tick, ip, &ip->ticker);
	if (rc) {
		mi_free(ip);
		return rc;
	}
	*out = ip;
	return 0;
}

void peers_stop(struct peers *ip)
{
	if (!ip)
		return;
	ticker_stop(ip->ticker);
	mi_free(ip);
}
