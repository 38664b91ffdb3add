/* addr: the one parser of "ADDR:PORT" (IPv4 only, like every socket of
 * ringroute). ADDR is a dotted IPv4 literal or "localhost" (127.0.0.1);
 * PORT is 1 to 5 decimal digits, no sign or spaces. What else is allowed
 * depends on the caller: a listener may bind any address and let the kernel
 * pick the port, a replica address may not. */
#ifndef RINGROUTE_ADDR_H
#define RINGROUTE_ADDR_H

#include <netinet/in.h>
#include <stddef.h>

enum {
	ADDR_F_ANY   = 1u << 0, /* "" or "*" as ADDR: INADDR_ANY (listeners) */
	ADDR_F_PORT0 = 1u << 1, /* port 0 allowed (bind: the kernel picks one) */
};

/* Parses the len bytes at s (no NUL needed) as ADDR:PORT under flags
 * (ADDR_F_*). Returns 0 with *out filled (family, address, port in network
 * order), or -EINVAL with *out untouched and err holding the reason without
 * the input, e.g. "port 70000 out of range 1..65535", "'example.com' is not
 * an IPv4 address or localhost" (err may be NULL when errlen is 0). The
 * caller puts the input and its own context around that reason. */
int addr_parse(const char *s, size_t len, unsigned flags, struct sockaddr_in *out, char *err,
	       size_t errlen);

#endif
