/* addr: see addr.h. */
#include "ringroute/addr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* Writes the reason into err (when there is room) and returns -EINVAL. */
__attribute__((format(printf, 3, 4)))
static int addr_fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

/* "unix:/path": the path must be absolute (a relative one would depend on
 * the directory ringroute was started in) and fit sun_path with its NUL. */
static int parse_unix(const char *path, size_t plen, struct rr_addr *out, char *err,
		      size_t errlen)
{
	struct rr_addr a = { 0 };

	if (plen == 0)
		return addr_fail(err, errlen, "no path after 'unix:'");
	if (path[0] != '/')
		return addr_fail(err, errlen, "unix socket path must be absolute (start with '/')");
	if (plen >= sizeof(a.u.un.sun_path))
		return addr_fail(err, errlen, "unix socket path longer than %zu bytes",
				 sizeof(a.u.un.sun_path) - 1);
	if (memchr(path, '\0', plen))
		return addr_fail(err, errlen, "unix socket path contains a NUL byte");
	a.u.un.sun_family = AF_UNIX;
	memcpy(a.u.un.sun_path, path, plen);
	a.len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen + 1);
	*out = a;
	return 0;
}

/* 1 if s is a well-formed DNS name (see addr.h). The last label must not
 * be all digits, so "256.0.0.1" stays a bad IPv4 address, not a name. */
static int name_ok(const char *s)
{
	size_t label = 0, total = strlen(s);
	bool digits = true;

	if (total == 0 || total > ADDR_NAME_MAX - 1 || s[0] == '.')
		return 0;
	for (; *s; s++) {
		char ch = *s;
		if (ch == '.') {
			if (label == 0)
				return 0;
			if (s[1])
				digits = true;
			label = 0;
			continue;
		}
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '-' || ch == '_'))
			return 0;
		if (ch < '0' || ch > '9')
			digits = false;
		if (++label > 63)
			return 0;
	}
	return !digits;
}

/* "srv:NAME" (after the prefix): NAME into name (ADDR_NAME_MAX bytes),
 * checked as addr.h says. ADDR_IS_SRV or -EINVAL. */
static int parse_srv(const char *s, size_t len, struct rr_addr *out, char *name, char *err,
		     size_t errlen)
{
	const char *dot;

	if (len == 0)
		return addr_fail(err, errlen, "no name after 'srv:'");
	if (len >= ADDR_NAME_MAX)
		return addr_fail(err, errlen, "SRV name longer than %d bytes", ADDR_NAME_MAX - 1);
	if (memchr(s, '\0', len))
		return addr_fail(err, errlen, "SRV name contains a NUL byte");
	memcpy(name, s, len);
	name[len] = '\0';
	if (!name_ok(name)) {
		name[0] = '\0';
		return addr_fail(err, errlen, "'%.*s' is not a DNS name", (int)len, s);
	}
	/* _SERVICE._PROTO.NAME: two '_' labels, then at least one more */
	dot = name[0] == '_' ? strchr(name, '.') : NULL;
	if (!dot || dot[1] != '_' || !(dot = strchr(dot + 1, '.')) || !dot[1]) {
		name[0] = '\0';
		return addr_fail(err, errlen, "'%.*s' is not _SERVICE._PROTO.NAME", (int)len, s);
	}
	*out = (struct rr_addr){ 0 };
	return ADDR_IS_SRV;
}

/* The one parser behind addr_parse_sa and addr_parse_name (name: where a
 * DNS name goes, or NULL when none is allowed). The last ':' splits ADDR
 * from PORT, so "::1:80" is refused (an IPv6 address needs its brackets),
 * not misread. */
static int parse(const char *s, size_t len, unsigned flags, struct rr_addr *out, char *name,
		 char *err, size_t errlen)
{
	const char *colon = NULL;
	char host[INET6_ADDRSTRLEN + 16];
	struct rr_addr a = { 0 };
	unsigned long port = 0;
	size_t hlen, plen;
	unsigned long minport = (flags & ADDR_F_PORT0) ? 0 : 1;
	const char *what = !name ? ((flags & ADDR_F_IPV6) ? "an IPv4 address, [IPv6] or localhost"
						       : "an IPv4 address or localhost")
				 : "an IPv4 address, [IPv6], localhost or a DNS name";

	if ((flags & ADDR_F_UNIX) && len >= 5 && memcmp(s, "unix:", 5) == 0)
		return parse_unix(s + 5, len - 5, out, err, errlen);
	if ((flags & ADDR_F_SRV) && name && len >= 4 && memcmp(s, "srv:", 4) == 0)
		return parse_srv(s + 4, len - 4, out, name, err, errlen);
	if (!(flags & ADDR_F_NAME))
		name = NULL; /* "srv:" only */
	if ((flags & ADDR_F_IPV6) && len && s[0] == '[') {
		/* The port follows the ']' at once: "[::1]" alone is a
		 * missing port, not a port "1]". */
		const char *close = memchr(s, ']', len);
		if (!close)
			return addr_fail(err, errlen, "no ']' closing the IPv6 address");
		if (close + 1 < s + len && close[1] == ':')
			colon = close + 1;
	} else {
		for (size_t i = len; i > 0; i--) {
			if (s[i - 1] == ':') {
				colon = s + i - 1;
				break;
			}
		}
	}
	if (!colon)
		return addr_fail(err, errlen, "no ':' between address and port");
	hlen = (size_t)(colon - s);
	plen = len - hlen - 1;
	if (plen == 0)
		return addr_fail(err, errlen, "no port after ':'");
	if (plen > 5)
		return addr_fail(err, errlen, "port '%.*s' out of range %lu..65535",
				 plen > 20 ? 20 : (int)plen, colon + 1, minport);
	for (size_t i = 0; i < plen; i++) {
		char ch = colon[1 + i];
		if (ch < '0' || ch > '9')
			return addr_fail(err, errlen, "port '%.*s' is not a decimal number",
					 (int)plen, colon + 1);
		port = port * 10 + (unsigned long)(ch - '0');
	}
	if (port < minport || port > 65535)
		return addr_fail(err, errlen, "port %lu out of range %lu..65535", port, minport);
	if (name && hlen < ADDR_NAME_MAX && hlen >= sizeof(host)) {
		memcpy(name, s, hlen);
		name[hlen] = '\0';
		if (name_ok(name)) {
			a.u.in.sin_port = htons((uint16_t)port);
			*out = a;
			return ADDR_IS_NAME;
		}
	}
	if (hlen >= sizeof(host))
		return addr_fail(err, errlen, "address too long (not %s)", what);
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	if ((flags & ADDR_F_IPV6) && hlen >= 1 && host[0] == '[') {
		host[hlen - 1] = '\0'; /* the ']' found above */
		if (inet_pton(AF_INET6, host + 1, &a.u.in6.sin6_addr) != 1)
			return addr_fail(err, errlen, "'%s' is not an IPv6 address", host + 1);
		a.u.in6.sin6_family = AF_INET6;
		a.u.in6.sin6_port = htons((uint16_t)port);
		a.len = sizeof(a.u.in6);
		*out = a;
		return 0;
	}
	a.u.in.sin_family = AF_INET;
	a.u.in.sin_port = htons((uint16_t)port);
	a.len = sizeof(a.u.in);
	if ((flags & ADDR_F_ANY) && (hlen == 0 || strcmp(host, "*") == 0)) {
		a.u.in.sin_addr.s_addr = htonl(INADDR_ANY);
	} else if (hlen == 0) {
		return addr_fail(err, errlen, "no address before ':'");
	} else if (strcmp(host, "localhost") == 0) {
		a.u.in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	} else if (inet_pton(AF_INET, host, &a.u.in.sin_addr) != 1) {
		if (name && name_ok(host)) {
			memcpy(name, host, hlen + 1);
			a = (struct rr_addr){ 0 };
			a.u.in.sin_port = htons((uint16_t)port);
			*out = a;
			return ADDR_IS_NAME;
		}
		return addr_fail(err, errlen, "'%s' is not %s", host, what);
	}
	*out = a;
	return 0;
}

/* See addr.h. */
int addr_parse_sa(const char *s, size_t len, unsigned flags, struct rr_addr *out, char *err,
		  size_t errlen)
{
	return parse(s, len, flags & ~(unsigned)ADDR_F_NAME, out, NULL, err, errlen);
}

/* See addr.h. */
int addr_parse_name(const char *s, size_t len, unsigned flags, struct rr_addr *out,
		    char host[ADDR_NAME_MAX], char *err, size_t errlen)
{
	host[0] = '\0'; /* "" unless a name */
	return parse(s, len, flags, out, (flags & (ADDR_F_NAME | ADDR_F_SRV)) ? host : NULL, err,
		     errlen);
}

/* See addr.h. */
int addr_parse(const char *s, size_t len, unsigned flags, struct sockaddr_in *out, char *err,
	       size_t errlen)
{
	struct rr_addr a;
	int rc = addr_parse_sa(s, len, flags & (ADDR_F_ANY | ADDR_F_PORT0), &a, err, errlen);

	if (!rc)
		*out = a.u.in;
	return rc;
}

/* See addr.h. */
char *addr_format(const struct rr_addr *a, char *buf, size_t n)
{
	char ip[INET6_ADDRSTRLEN];

	switch (a->u.sa.sa_family) {
	case AF_INET:
		inet_ntop(AF_INET, &a->u.in.sin_addr, ip, sizeof(ip));
		snprintf(buf, n, "%s:%u", ip, (unsigned)ntohs(a->u.in.sin_port));
		break;
	case AF_INET6:
		inet_ntop(AF_INET6, &a->u.in6.sin6_addr, ip, sizeof(ip));
		snprintf(buf, n, "[%s]:%u", ip, (unsigned)ntohs(a->u.in6.sin6_port));
		break;
	case AF_UNIX:
		snprintf(buf, n, "unix:%s", a->u.un.sun_path);
		break;
	default:
		snprintf(buf, n, "(family %d)", (int)a->u.sa.sa_family);
	}
	return buf;
}

/* See addr.h. */
uint16_t addr_port(const struct rr_addr *a)
{
	if (a->u.sa.sa_family == AF_INET)
		return ntohs(a->u.in.sin_port);
	if (a->u.sa.sa_family == AF_INET6)
		return ntohs(a->u.in6.sin6_port);
	return 0;
}

/* See addr.h. The parser zeroes every byte it does not set, so comparing
 * the parts that name the address is enough (and independent of padding). */
bool addr_equal(const struct rr_addr *a, const struct rr_addr *b)
{
	if (a->u.sa.sa_family != b->u.sa.sa_family)
		return false;
	switch (a->u.sa.sa_family) {
	case AF_INET:
		return a->u.in.sin_addr.s_addr == b->u.in.sin_addr.s_addr &&
		       a->u.in.sin_port == b->u.in.sin_port;
	case AF_INET6:
		return memcmp(&a->u.in6.sin6_addr, &b->u.in6.sin6_addr, 16) == 0 &&
		       a->u.in6.sin6_port == b->u.in6.sin6_port;
	case AF_UNIX:
		return strcmp(a->u.un.sun_path, b->u.un.sun_path) == 0;
	default:
		return false;
	}
}
