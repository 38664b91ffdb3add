/* Several instances, every cap exact: the shares (instance.h) and the
 * derivation of I and N from a peer set. The --peers thread is peers.c. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ringroute/addr.h"
#include "ringroute/config.h"
#include "ringroute/dns.h"
#include "ringroute/instance.h"

uint32_t instance_share(uint32_t cap, uint32_t index, uint32_t count)
{
	if (count == 0)
		count = 1;
	if (index >= count)
		return 0; /* INSTANCE_NONE: not in the set, no share */
	return cap / count + (index < cap % count ? 1 : 0);
}

void instance_apply(struct config *c, uint32_t index, uint32_t count)
{
	for (size_t i = 0; i < c->nbackends; i++) {
		struct backend_cfg *b = &c->backends[i];
		b->max_ongoing = instance_share(b->max_ongoing_cfg, index, count);
		b->max_queued = b->max_ongoing ? instance_share(b->max_queued_cfg, index, count) : 0;
	}
}

static int addr_cmp(const void *a, const void *b)
{
	const struct sockaddr_in *x = a, *y = b;
	uint32_t xa = ntohl(x->sin_addr.s_addr), ya = ntohl(y->sin_addr.s_addr);
	uint16_t xp = ntohs(x->sin_port), yp = ntohs(y->sin_port);

	if (xa != ya)
		return xa < ya ? -1 : 1;
	return xp < yp ? -1 : xp > yp;
}

int instance_derive(const struct sockaddr_in *peers, size_t npeers,
		    const struct sockaddr_in *own, size_t nown, uint16_t port,
		    uint32_t *index, uint32_t *count)
{
	struct sockaddr_in v[INSTANCE_MAX_PEERS];
	size_t n = 0;

	if (npeers > INSTANCE_MAX_PEERS)
		npeers = INSTANCE_MAX_PEERS;
	memcpy(v, peers, npeers * sizeof(*v));
	qsort(v, npeers, sizeof(*v), addr_cmp);
	for (size_t i = 0; i < npeers; i++)
		if (n == 0 || addr_cmp(&v[n - 1], &v[i]) != 0)
			v[n++] = v[i];
	for (size_t i = 0; i < n; i++) {
		if (ntohs(v[i].sin_port) != port)
			continue;
		for (size_t k = 0; k < nown; k++)
			if (own[k].sin_addr.s_addr == v[i].sin_addr.s_addr) {
				*index = (uint32_t)i;
				*count = (uint32_t)n;
				return 0;
			}
	}
	return -1;
}

/* "dns:NAME:PORT": NAME and PORT in *name and *port (NUL-terminated copies
 * in buf). 1 for that form, 0 for the literal list, -1 when malformed. */
static int split_dns(const char *spec, char *buf, size_t buflen, const char **name,
		     const char **port)
{
	char *colon;

	if (strncmp(spec, "dns:", 4) != 0)
		return 0;
	if (strlen(spec + 4) >= buflen)
		return -1;
	strcpy(buf, spec + 4);
	colon = strrchr(buf, ':');
	if (!colon || colon == buf || !colon[1])
		return -1;
	*colon = '\0';
	*name = buf;
	*port = colon + 1;
	for (const char *q = *port; *q; q++)
		if (*q < '0' || *q > '9')
			return -1;
	return atoi(*port) >= 1 && atoi(*port) <= 65535 && strlen(*port) <= 5 ? 1 : -1;
}

/* The literal form, parsed into out; count, or -1 with err set. */
static int parse_list(const char *spec, struct sockaddr_in *out, size_t max, char *err,
		      size_t errlen)
{
	size_t n = 0;
	const char *s = spec;

	for (;;) {
		const char *end = strchr(s, ',');
		size_t len = end ? (size_t)(end - s) : strlen(s);
		char why[128];
		struct sockaddr_in a;
		if (addr_parse(s, len, 0, &a, why, sizeof(why))) {
			snprintf(err, errlen, "'%.*s': %s", (int)len, s, why);
			return -1;
		}
		if (n == max) {
			snprintf(err, errlen, "more than %zu peers", max);
			return -1;
		}
		out[n++] = a;
		if (!end)
			return (int)n;
		s = end + 1;
	}
}

int instance_peers_check(const char *spec, char *err, size_t errlen)
{
	char buf[512];
	const char *name, *port;
	struct sockaddr_in v[INSTANCE_MAX_PEERS];
	int rc = split_dns(spec, buf, sizeof(buf), &name, &port);

	if (rc < 0) {
		snprintf(err, errlen, "expected dns:NAME:PORT or ADDR:PORT,ADDR:PORT,...");
		return -EINVAL;
	}
	if (rc == 0 && parse_list(spec, v, INSTANCE_MAX_PEERS, err, errlen) < 0)
		return -EINVAL;
	return 0;
}

int instance_peers_resolve(const char *spec, struct sockaddr_in *out, size_t max, char *err,
			   size_t errlen)
{
	char buf[512];
	const char *name, *port;
	struct rr_addr *addrs = NULL;
	size_t na = 0, n = 0;
	char why[256];
	int rc = split_dns(spec, buf, sizeof(buf), &name, &port);

	if (rc < 0) {
		snprintf(err, errlen, "malformed --peers");
		return -1;
	}
	if (rc == 0)
		return parse_list(spec, out, max, err, errlen);
	/* c-ares, as replica names (dns.h): the same resolver, hosts file
	 * and test hook. */
	rc = dns_lookup(NULL, name, &addrs, NULL, &na, why, sizeof(why));
	if (rc) {
		snprintf(err, errlen, "cannot resolve %s: %s", name, why);
		return -1;
	}
	for (size_t i = 0; i < na && n < max; i++)
		if (addrs[i].u.sa.sa_family == AF_INET) {
			out[n] = addrs[i].u.in;
			out[n++].sin_port = htons((uint16_t)atoi(port));
		}
	free(addrs);
	if (n == 0) {
		snprintf(err, errlen, "%s has no IPv4 address", name);
		return -1;
	}
	return (int)n;
}
