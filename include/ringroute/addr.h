/* addr: the one parser of socket addresses as ringroute's flags and config
 * write them: "ADDR:PORT" where ADDR is a dotted IPv4 literal, "localhost"
 * (127.0.0.1) or, where the caller allows it, "[IPV6]:PORT"; and, where
 * allowed, "unix:/path" (a stream socket on this machine). PORT is 1 to 5
 * decimal digits, no sign or spaces. What else is allowed depends on the
 * caller: a listener may bind any address and let the kernel pick the
 * port, a replica address may not. */
#ifndef RINGROUTE_ADDR_H
#define RINGROUTE_ADDR_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>

enum {
	ADDR_F_ANY   = 1u << 0, /* "" or "*" as ADDR: INADDR_ANY (listeners) */
	ADDR_F_PORT0 = 1u << 1, /* port 0 allowed (bind: the kernel picks one) */
	ADDR_F_IPV6  = 1u << 2, /* "[IPV6]:PORT" allowed (addr_parse_sa only) */
	ADDR_F_UNIX  = 1u << 3, /* "unix:/path" allowed (addr_parse_sa only) */
	ADDR_F_NAME  = 1u << 4, /* "NAME:PORT", a DNS name (addr_parse_name only) */
	ADDR_F_SRV   = 1u << 5, /* "srv:_SERVICE._PROTO.NAME" (addr_parse_name only) */
};

/* The longest DNS name (RFC 1035: 253 characters written out) + NUL. */
#define ADDR_NAME_MAX 254

/* A socket address of any family ringroute connects to, with the length
 * connect() wants (for AF_UNIX: up to the path's NUL, not the whole
 * sockaddr_un, so two equal paths compare equal byte for byte). */
struct rr_addr {
	socklen_t len;
	union {
		struct sockaddr sa;
		struct sockaddr_in in;
		struct sockaddr_in6 in6;
		struct sockaddr_un un;
	} u;
};

/* "unix:" + the longest path a sockaddr_un holds, or "[v6]:65535". */
#define ADDR_STRLEN (5 + sizeof(((struct sockaddr_un *)0)->sun_path))

/* Parses the len bytes at s (no NUL needed) under flags (ADDR_F_*).
 * Returns 0 with *out filled (family, address, port in network order,
 * len), or -EINVAL with *out untouched and err holding the reason without
 * the input, e.g. "port 70000 out of range 1..65535", "'example.com' is
 * not an IPv4 address or localhost" (err may be NULL when errlen is 0).
 * The caller puts the input and its own context around that reason. */
int addr_parse_sa(const char *s, size_t len, unsigned flags, struct rr_addr *out, char *err,
		  size_t errlen);

/* Same, where a DNS name is allowed too (flags has ADDR_F_NAME): a host
 * that is no literal but a well-formed name (labels of letters, digits,
 * '-' and '_', at most 63 bytes each, the last not all digits) returns
 * ADDR_IS_NAME with host (ADDR_NAME_MAX bytes) holding it and out holding
 * only the port (family AF_UNSPEC, port in out->u.in.sin_port); else
 * host is "". */
#define ADDR_IS_NAME 1
/* With ADDR_F_SRV too, "srv:_SERVICE._PROTO.NAME" (the name of DNS SRV
 * records, which carry the ports: a Kubernetes headless Service publishes
 * "_http._tcp.SVC.NS.svc.cluster.local") returns ADDR_IS_SRV with host
 * holding the name without "srv:" and out zeroed (no port: each SRV
 * record has its own). The name must be well-formed as above, with at
 * least three labels, the first two starting with '_'. */
#define ADDR_IS_SRV 2
int addr_parse_name(const char *s, size_t len, unsigned flags, struct rr_addr *out,
		    char host[ADDR_NAME_MAX], char *err, size_t errlen);

/* The IPv4-only form, for the listeners and clients that bind or connect
 * IPv4 sockets: addr_parse_sa without ADDR_F_IPV6 / ADDR_F_UNIX. */
int addr_parse(const char *s, size_t len, unsigned flags, struct sockaddr_in *out, char *err,
	       size_t errlen);

/* Writes a in canonical form ("127.0.0.1:80", "[::1]:80", "unix:/p") to
 * buf (ADDR_STRLEN bytes are always enough); returns buf. */
char *addr_format(const struct rr_addr *a, char *buf, size_t n);

/* The port of an IPv4 or IPv6 address, in host order (0 for others). */
uint16_t addr_port(const struct rr_addr *a);

/* true when a and b are one socket address (same family, address, port or
 * path): what makes two replicas one server. */
bool addr_equal(const struct rr_addr *a, const struct rr_addr *b);

#endif
