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

/* See addr.h. The last ':' splits ADDR from PORT, so "::1:80" is refused
 * as an address (IPv6 is not supported), not misread. */
int addr_parse(const char *s, size_t len, unsigned flags, struct sockaddr_in *out, char *err,
	       size_t errlen)
{
	const char *colon = NULL;
	char host[INET_ADDRSTRLEN + 16];
	struct sockaddr_in sa = { .sin_family = AF_INET };
	unsigned long port = 0;
	size_t hlen, plen;
	unsigned long minport = (flags & ADDR_F_PORT0) ? 0 : 1;

	for (size_t i = len; i > 0; i--) {
		if (s[i - 1] == ':') {
			colon = s + i - 1;
			break;
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
	sa.sin_port = htons((uint16_t)port);
	if (hlen >= sizeof(host))
		return addr_fail(err, errlen, "address too long (not an IPv4 address)");
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	if ((flags & ADDR_F_ANY) && (hlen == 0 || strcmp(host, "*") == 0)) {
		sa.sin_addr.s_addr = htonl(INADDR_ANY);
	} else if (hlen == 0) {
		return addr_fail(err, errlen, "no address before ':'");
	} else if (strcmp(host, "localhost") == 0) {
		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	} else if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
		return addr_fail(err, errlen, "'%s' is not an IPv4 address or localhost", host);
	}
	*out = sa;
	return 0;
}
