/* --peers: the helper thread that re-derives this instance's I and N from
 * its peer set every INSTANCE_PEERS_PERIOD_MS and applies a change through
 * proxy_set_instance (peers.h). The pure parts are instance.c. */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "ringroute/addr.h"
#include "ringroute/alloc.h"
#include "ringroute/instance.h"
#include "ringroute/log.h"
#include "ringroute/peers.h"
#include "ringroute/proxy.h"
#include "ringroute/ticker.h"

/* The addresses this instance answers on: the --listen address when it
 * is not the wildcard (then it is that address and no other: several
 * instances on one machine, each bound to its own address, must not take
 * each other's place), else this machine's IPv4 addresses (every
 * interface). */
static size_t own_addrs(struct proxy *p, struct sockaddr_in *out, size_t max, bool *listen_only)
{
	struct ifaddrs *ifa, *i;
	struct sockaddr_in l;
	size_t n = 0;

	*listen_only = false;

	if (p->opt.listen &&
	    addr_parse(p->opt.listen, strlen(p->opt.listen), ADDR_F_ANY | ADDR_F_PORT0, &l, NULL,
		       0) == 0 &&
	    l.sin_addr.s_addr != htonl(INADDR_ANY)) {
		out[n++] = l;
		*listen_only = true;
		return n;
	}
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
	bool listen_only;

	if (n < 0)
		return -1;
	nown = own_addrs(p, own, sizeof(own) / sizeof(own[0]), &listen_only);
	if (instance_derive(peers, (size_t)n, own, nown, p->listen_port, index, count)) {
		snprintf(err, errlen,
			 "none of the %d peers is this instance (port %u on %s)", n,
			 (unsigned)p->listen_port,
			 listen_only ? "its --listen address" : "one of this machine's addresses");
		*index = INSTANCE_NONE;
		*count = (uint32_t)n;
		return 1;
	}
	return 0;
}

struct peers {
	struct proxy *p;
	struct ticker *ticker;
	char last_err[256];           /* the last round's problem, logged once */
};

/* Logs err when it is not the last round's problem too. */
static void say_once(struct peers *ip, const char *err, const char *then)
{
	if (strcmp(ip->last_err, err))
		log_warn("--peers: %s; %s", err, then);
	snprintf(ip->last_err, sizeof(ip->last_err), "%s", err);
}

/* One round (see peers.h). */
static void peers_round(struct peers *ip)
{
	struct proxy *p = ip->p;
	char err[256];
	uint32_t index, count;
	int rc = peers_find(p, &index, &count, err, sizeof(err));

	if (rc < 0) {
		/* The others cannot resolve it either, most likely: each keeps
		 * the share it has, so the sum stays the cap. */
		say_once(ip, err, "keeping the shares of the last set");
		return;
	}
	if (rc > 0)
		say_once(ip, err, "not ready, no share of any cap until it is in the set");
	else
		ip->last_err[0] = '\0';
	if (proxy_set_instance(p, index, count, err, sizeof(err)))
		log_warn("--peers: %s", err);
}

static uint64_t peers_period(void *arg)
{
	(void)arg;
	return INSTANCE_PEERS_PERIOD_MS;
}

static void peers_tick(void *arg)
{
	peers_round(arg);
}

int peers_start(struct proxy *p, const char *said, struct peers **out)
{
	struct peers *ip = mi_zalloc(sizeof(*ip));
	int rc;

	if (!ip)
		return -ENOMEM;
	ip->p = p;
	snprintf(ip->last_err, sizeof(ip->last_err), "%s", said ? said : "");
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
