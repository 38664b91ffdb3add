/* dns: see dns.h. */
#include "ringroute/dns.h"

#include <arpa/nameser.h>
#include <ares.h>
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ringroute/log.h"
#include "ringroute/strbuf.h"

struct dns_name {
	struct list node;             /* in dns_cache.names */
	char *host;
	struct rr_addr *addrs;        /* sorted; port 0 for a name, the records' for SRV */
	uint32_t *weights;            /* SRV: each record's weight; NULL for a name */
	size_t n;
	bool failing;                 /* the last refresh failed (logged once) */
};

/* ------------------------------------------------------------ lookups */

static pthread_once_t ares_once = PTHREAD_ONCE_INIT;
static int ares_init_rc;

static void ares_init_once(void)
{
	ares_init_rc = ares_library_init(ARES_LIB_INIT_ALL);
}

struct gai_result {
	bool done;
	int status;
	struct rr_addr *addrs;
	size_t n;
};

/* Orders addresses by family, then bytes: a set compares as an array. */
static int cmp_addr(const void *a, const void *b)
{
	const struct rr_addr *x = a, *y = b;
	int c;

	if (x->u.sa.sa_family != y->u.sa.sa_family)
		return x->u.sa.sa_family < y->u.sa.sa_family ? -1 : 1;
	/* then the port: an SRV set has several ports on one address */
	if (x->u.sa.sa_family == AF_INET)
		c = memcmp(&x->u.in.sin_addr, &y->u.in.sin_addr, 4);
	else
		c = memcmp(&x->u.in6.sin6_addr, &y->u.in6.sin6_addr, 16);
	return c ? c : (int)addr_port(x) - (int)addr_port(y);
}

static void on_addrinfo(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
	struct gai_result *r = arg;
	size_t cap = 0, k = 0;
	(void)timeouts;

	r->done = true;
	r->status = status;
	if (status != ARES_SUCCESS || !res)
		goto out;
	for (struct ares_addrinfo_node *a = res->nodes; a; a = a->ai_next)
		cap++;
	r->addrs = cap ? calloc(cap, sizeof(*r->addrs)) : NULL;
	if (!r->addrs) {
		r->status = cap ? ARES_ENOMEM : ARES_ENODATA;
		goto out;
	}
	for (struct ares_addrinfo_node *a = res->nodes; a; a = a->ai_next) {
		struct rr_addr *o = &r->addrs[k];
		if (a->ai_family == AF_INET && a->ai_addrlen >= sizeof(o->u.in)) {
			memcpy(&o->u.in, a->ai_addr, sizeof(o->u.in));
			o->u.in.sin_port = 0;
			o->len = sizeof(o->u.in);
		} else if (a->ai_family == AF_INET6 && a->ai_addrlen >= sizeof(o->u.in6)) {
			struct in6_addr ip = ((const struct sockaddr_in6 *)a->ai_addr)->sin6_addr;
			/* Only the address: scope and flow info are not part of
			 * a replica's identity. */
			o->u.in6.sin6_family = AF_INET6;
			o->u.in6.sin6_addr = ip;
			o->len = sizeof(o->u.in6);
		} else {
			continue;
		}
		k++;
	}
	qsort(r->addrs, k, sizeof(*r->addrs), cmp_addr);
	r->n = 0;
	for (size_t i = 0; i < k; i++)
		if (!r->n || cmp_addr(&r->addrs[r->n - 1], &r->addrs[i]))
			r->addrs[r->n++] = r->addrs[i];
	if (!r->n)
		r->status = ARES_ENODATA;
out:
	if (res)
		ares_freeaddrinfo(res);
}

/* A channel for one lookup: lookups are rare (load, edits, one per name
 * per refresh), so a channel kept between them would save nothing worth
 * its state. 0, or -ENOENT with err set. */
static int channel_open(ares_channel *ch, char *err, size_t errlen)
{
	struct ares_options o = { .timeout = 1000, .tries = 2 };
	int mask = ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES;
	const char *server = getenv("RR_DNS_SERVER");
	int rc;

	pthread_once(&ares_once, ares_init_once);
	if (ares_init_rc != ARES_SUCCESS) {
		snprintf(err, errlen, "%s", ares_strerror(ares_init_rc));
		return -ENOENT;
	}
	if (server) {
		/* Test hook: that server only, no hosts file, no search list. */
		o.lookups = (char *)"b";
		o.ndomains = 0;
		o.domains = NULL;
		mask |= ARES_OPT_LOOKUPS | ARES_OPT_DOMAINS;
	}
	rc = ares_init_options(ch, &o, mask);
	if (rc != ARES_SUCCESS) {
		snprintf(err, errlen, "%s", ares_strerror(rc));
		return -ENOENT;
	}
	if (server && (rc = ares_set_servers_ports_csv(*ch, server)) != ARES_SUCCESS) {
		snprintf(err, errlen, "RR_DNS_SERVER '%s': %s", server, ares_strerror(rc));
		ares_destroy(*ch);
		return -ENOENT;
	}
	return 0;
}

/* Runs ch until *done (the lookup's callback ran), then destroys it (a
 * lookup still open ends there, its callback run). poll, not select: the
 * process has far more than FD_SETSIZE descriptors. */
static void channel_run(ares_channel ch, const bool *done)
{
	while (!*done) {
		ares_socket_t socks[ARES_GETSOCK_MAXNUM];
		struct pollfd pfd[ARES_GETSOCK_MAXNUM];
		struct timeval tv, *tvp;
		/* The bits by hand, unsigned: ARES_GETSOCK_WRITABLE shifts an int
		 * 1 into its sign bit for the last socket. */
		unsigned bits = (unsigned)ares_getsock(ch, socks, ARES_GETSOCK_MAXNUM);
		int np = 0, ms;

		for (int i = 0; i < ARES_GETSOCK_MAXNUM; i++) {
			short ev = (short)(((bits >> i) & 1u ? POLLIN : 0) |
					   ((bits >> (i + ARES_GETSOCK_MAXNUM)) & 1u ? POLLOUT : 0));
			if (ev)
				pfd[np++] = (struct pollfd){ .fd = socks[i], .events = ev };
		}
		tvp = ares_timeout(ch, NULL, &tv);
		ms = tvp ? (int)(tvp->tv_sec * 1000 + tvp->tv_usec / 1000) + 1 : 1000;
		if (poll(pfd, (nfds_t)np, ms) < 0 && errno != EINTR)
			break;
		if (np == 0)
			ares_process_fd(ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
		for (int i = 0; i < np; i++)
			ares_process_fd(ch, (pfd[i].revents & (POLLIN | POLLERR | POLLHUP)) ? pfd[i].fd
										   : ARES_SOCKET_BAD,
					(pfd[i].revents & POLLOUT) ? pfd[i].fd : ARES_SOCKET_BAD);
	}
	ares_destroy(ch);
}

/* One blocking lookup of host (A and AAAA). */
static int resolve(const char *host, struct rr_addr **out, size_t *n, char *err, size_t errlen)
{
	struct ares_addrinfo_hints hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	struct gai_result r = { 0 };
	ares_channel ch;
	int rc = channel_open(&ch, err, errlen);

	if (rc)
		return rc;
	ares_getaddrinfo(ch, host, NULL, &hints, on_addrinfo, &r);
	channel_run(ch, &r.done);
	if (r.status != ARES_SUCCESS) {
		free(r.addrs);
		snprintf(err, errlen, "%s", ares_strerror(r.status));
		return r.status == ARES_ENOMEM ? -ENOMEM : -ENOENT;
	}
	*out = r.addrs;
	*n = r.n;
	return 0;
}

/* An SRV record with its target's addresses (port set). */
struct srv_entry {
	struct rr_addr addr;
	uint32_t weight;
};

struct srv_result {
	bool done;
	int status;
	struct ares_srv_reply *reply; /* ares_free_data */
};

static void on_srv(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct srv_result *r = arg;
	(void)timeouts;

	r->done = true;
	r->status = status;
	if (status == ARES_SUCCESS)
		r->status = ares_parse_srv_reply(abuf, alen, &r->reply);
	if (r->status == ARES_SUCCESS && !r->reply)
		r->status = ARES_ENODATA;
}

static int cmp_srv_entry(const void *a, const void *b)
{
	return cmp_addr(&((const struct srv_entry *)a)->addr, &((const struct srv_entry *)b)->addr);
}

/* One blocking lookup of the SRV records of name: those of the lowest
 * priority only (the others are backups, used when that group is gone
 * from DNS), each target resolved (A and AAAA) and given the record's
 * port and weight. A target that does not resolve is left out; none
 * resolving is a failure naming the first. Sorted by address and port,
 * without duplicates (the first record of an address wins). */
static int resolve_srv(const char *name, struct rr_addr **out, uint32_t **weights, size_t *n,
		       char *err, size_t errlen)
{
	struct srv_result r = { 0 };
	struct srv_entry *v = NULL;
	size_t nv = 0, cap = 0;
	unsigned prio = 65536;
	char why[256] = "";
	const char *first_bad = NULL;
	ares_channel ch;
	int rc = channel_open(&ch, err, errlen);

	if (rc)
		return rc;
	ares_query(ch, name, ns_c_in, ns_t_srv, on_srv, &r);
	channel_run(ch, &r.done);
	if (r.status != ARES_SUCCESS) {
		snprintf(err, errlen, "%s", ares_strerror(r.status));
		if (r.reply)
			ares_free_data(r.reply);
		return r.status == ARES_ENOMEM ? -ENOMEM : -ENOENT;
	}
	for (struct ares_srv_reply *x = r.reply; x; x = x->next)
		/* target "." : "the service is decidedly not available here" */
		if (x->port && strcmp(x->host, ".") && strcmp(x->host, "") && x->priority < prio)
			prio = x->priority;
	rc = 0;
	for (struct ares_srv_reply *x = r.reply; x && !rc; x = x->next) {
		struct rr_addr *a = NULL;
		size_t na = 0;
		char tw[256];

		if (x->priority != prio || !x->port || !strcmp(x->host, ".") || !x->host[0])
			continue;
		if (resolve(x->host, &a, &na, tw, sizeof(tw))) {
			if (!first_bad) {
				first_bad = x->host;
				snprintf(why, sizeof(why), "%s", tw);
			}
			continue;
		}
		if (nv + na > cap) {
			size_t nc = (nv + na) * 2;
			struct srv_entry *nvp = realloc(v, nc * sizeof(*v));
			if (!nvp) {
				rc = -ENOMEM;
				free(a);
				break;
			}
			v = nvp;
			cap = nc;
		}
		for (size_t k = 0; k < na; k++) {
			struct srv_entry *e = &v[nv++];
			e->addr = a[k];
			if (e->addr.u.sa.sa_family == AF_INET6)
				e->addr.u.in6.sin6_port = htons(x->port);
			else
				e->addr.u.in.sin_port = htons(x->port);
			e->weight = x->weight;
		}
		free(a);
	}
	if (!rc && nv == 0) {
		if (first_bad)
			snprintf(err, errlen, "no SRV target resolves (%s: %s)", first_bad, why);
		else
			snprintf(err, errlen, "no usable SRV record");
		rc = -ENOENT;
	}
	if (r.reply)
		ares_free_data(r.reply);
	if (!rc) {
		size_t m = 0;
		qsort(v, nv, sizeof(*v), cmp_srv_entry);
		for (size_t i = 0; i < nv; i++)
			if (!m || cmp_addr(&v[m - 1].addr, &v[i].addr))
				v[m++] = v[i];
		*out = malloc(m * sizeof(**out));
		*weights = malloc(m * sizeof(**weights));
		if (!*out || !*weights) {
			free(*out);
			free(*weights);
			rc = -ENOMEM;
		} else {
			for (size_t i = 0; i < m; i++) {
				(*out)[i] = v[i].addr;
				(*weights)[i] = v[i].weight;
			}
			*n = m;
		}
	}
	if (rc == -ENOMEM)
		snprintf(err, errlen, "out of memory");
	free(v);
	return rc;
}

/* A lookup of whatever host names (see dns.h): weights NULL for a name. */
static int lookup_any(const char *host, struct rr_addr **out, uint32_t **weights, size_t *n,
		      char *err, size_t errlen)
{
	*weights = NULL;
	if (strncmp(host, DNS_SRV_PREFIX, strlen(DNS_SRV_PREFIX)) == 0)
		return resolve_srv(host + strlen(DNS_SRV_PREFIX), out, weights, n, err, errlen);
	return resolve(host, out, n, err, errlen);
}

/* -------------------------------------------------------------- cache */

void dns_cache_init(struct dns_cache *dc)
{
	pthread_mutex_init(&dc->lock, NULL);
	list_init(&dc->names);
	atomic_init(&dc->gen, 0);
}

static void name_free(struct dns_name *e)
{
	list_del_init(&e->node);
	free(e->host);
	free(e->addrs);
	free(e->weights);
	free(e);
}

void dns_cache_destroy(struct dns_cache *dc)
{
	while (!list_empty(&dc->names))
		name_free(container_of(dc->names.next, struct dns_name, node));
	pthread_mutex_destroy(&dc->lock);
}

/* The entry of host, or NULL. Call with dc->lock held. */
static struct dns_name *name_find(struct dns_cache *dc, const char *host)
{
	for (struct list *pos = dc->names.next; pos != &dc->names; pos = pos->next) {
		struct dns_name *e = container_of(pos, struct dns_name, node);
		if (strcmp(e->host, host) == 0)
			return e;
	}
	return NULL;
}

static struct rr_addr *addrs_dup(const struct rr_addr *a, size_t n)
{
	struct rr_addr *c = malloc(n * sizeof(*c));

	if (c)
		memcpy(c, a, n * sizeof(*c));
	return c;
}

static uint32_t *weights_dup(const uint32_t *w, size_t n)
{
	uint32_t *c = w ? malloc(n * sizeof(*c)) : NULL;

	if (c)
		memcpy(c, w, n * sizeof(*c));
	return c;
}

/* See dns.h. */
int dns_lookup(struct dns_cache *dc, const char *host, struct rr_addr **out, uint32_t **weights,
	       size_t *n, char *err, size_t errlen)
{
	struct dns_name *e;
	struct rr_addr *addrs;
	uint32_t *w;
	size_t na;
	int rc;

	if (dc) {
		pthread_mutex_lock(&dc->lock);
		e = name_find(dc, host);
		if (e) {
			*out = addrs_dup(e->addrs, e->n);
			w = weights_dup(e->weights, e->n);
			*n = e->n;
		}
		pthread_mutex_unlock(&dc->lock);
		if (e) {
			if (!*out || (e->weights && !w)) {
				free(*out);
				free(w);
				return -ENOMEM;
			}
			if (weights)
				*weights = w;
			else
				free(w);
			return 0;
		}
	}
	rc = lookup_any(host, &addrs, &w, &na, err, errlen);
	if (rc)
		return rc;
	if (dc) {
		pthread_mutex_lock(&dc->lock);
		e = name_find(dc, host);
		if (!e) {
			/* A new name changes no snapshot made so far: gen stays. */
			e = calloc(1, sizeof(*e));
			if (e && (e->host = strdup(host)) && (e->addrs = addrs_dup(addrs, na)) &&
			    (!w || (e->weights = weights_dup(w, na)))) {
				e->n = na;
				list_init(&e->node);
				list_push_back(&dc->names, &e->node);
			} else if (e) {
				free(e->host);
				free(e->addrs);
				free(e);
			}
		}
		pthread_mutex_unlock(&dc->lock);
	}
	*out = addrs;
	*n = na;
	if (weights)
		*weights = w;
	else
		free(w);
	return 0;
}

/* ------------------------------------------------------------ refresh */

/* Appends "A, B" (the addresses of a set) to sb; an SRV set's with their
 * ports and weights ("127.0.0.1:8000 weight 50"). */
static void put_set(struct strbuf *sb, const struct rr_addr *a, const uint32_t *w, size_t n)
{
	char buf[ADDR_STRLEN];

	for (size_t i = 0; i < n; i++) {
		addr_format(&a[i], buf, sizeof(buf));
		/* port 0 (a name's): drop the ":0" (and IPv6's brackets stay) */
		if (addr_port(&a[i]) == 0)
			buf[strlen(buf) - 2] = '\0';
		sb_printf(sb, "%s%s", i ? ", " : "", buf);
		if (w)
			sb_printf(sb, " weight %u", (unsigned)w[i]);
	}
}

/* See dns.h. */
void dns_refresh(struct dns_cache *dc, const char *host)
{
	struct rr_addr *addrs = NULL;
	uint32_t *w = NULL;
	size_t na = 0;
	char why[256];
	int rc = lookup_any(host, &addrs, &w, &na, why, sizeof(why));
	struct dns_name *e;
	struct strbuf sb = { 0 };

	pthread_mutex_lock(&dc->lock);
	e = name_find(dc, host);
	if (!e) {
		/* Dropped meanwhile, or never cached (a parse will look it up). */
	} else if (rc) {
		if (!e->failing) {
			sb_printf(&sb, "dns: cannot resolve %s: %s; keeping its last addresses (", host, why);
			put_set(&sb, e->addrs, e->weights, e->n);
			sb_printf(&sb, ")");
			log_warn("%s", sb.p ? sb.p : "dns: cannot resolve a name");
		}
		e->failing = true;
	} else if (na != e->n || memcmp(addrs, e->addrs, na * sizeof(*addrs)) ||
		   !w != !e->weights || (w && memcmp(w, e->weights, na * sizeof(*w)))) {
		sb_printf(&sb, "dns: %s: now ", host);
		put_set(&sb, addrs, w, na);
		sb_printf(&sb, " (was ");
		put_set(&sb, e->addrs, e->weights, e->n);
		sb_printf(&sb, ")");
		log_info("%s", sb.p ? sb.p : "dns: a name changed");
		free(e->addrs);
		free(e->weights);
		e->addrs = addrs;
		e->weights = w;
		e->n = na;
		addrs = NULL;
		w = NULL;
		e->failing = false;
		atomic_fetch_add(&dc->gen, 1);
	} else if (e->failing) {
		log_info("dns: %s resolves again", host);
		e->failing = false;
	}
	pthread_mutex_unlock(&dc->lock);
	sb_free(&sb);
	free(addrs);
	free(w);
}

/* See dns.h. */
void dns_keep_only(struct dns_cache *dc, char *const *hosts, size_t n)
{
	pthread_mutex_lock(&dc->lock);
	for (struct list *pos = dc->names.next, *nx; pos != &dc->names; pos = nx) {
		struct dns_name *e = container_of(pos, struct dns_name, node);
		bool used = false;
		nx = pos->next;
		for (size_t k = 0; k < n && !used; k++)
			used = strcmp(hosts[k], e->host) == 0;
		if (!used)
			name_free(e);
	}
	pthread_mutex_unlock(&dc->lock);
}
