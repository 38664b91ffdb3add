/* Unit tests of addr_parse: the syntax every caller shares, what the flags
 * allow (any address, port 0), and that each refusal says why. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <sys/un.h>

#include "ringroute/addr.h"

static int parse(const char *s, unsigned flags, struct sockaddr_in *sa, char *err, size_t n)
{
	err[0] = '\0';
	return addr_parse(s, strlen(s), flags, sa, err, n);
}

static void test_good(void **state)
{
	struct sockaddr_in sa;
	char err[128];
	(void)state;

	assert_int_equal(parse("127.0.0.1:9001", 0, &sa, err, sizeof(err)), 0);
	assert_int_equal(sa.sin_family, AF_INET);
	assert_int_equal(ntohs(sa.sin_port), 9001);
	assert_int_equal(ntohl(sa.sin_addr.s_addr), INADDR_LOOPBACK);
	assert_int_equal(parse("localhost:1", 0, &sa, err, sizeof(err)), 0);
	assert_int_equal(ntohl(sa.sin_addr.s_addr), INADDR_LOOPBACK);
	assert_int_equal(ntohs(sa.sin_port), 1);
	assert_int_equal(parse("10.1.2.3:65535", 0, &sa, err, sizeof(err)), 0);
	assert_int_equal(ntohl(sa.sin_addr.s_addr), 0x0a010203);
	assert_int_equal(parse("10.1.2.3:00080", 0, &sa, err, sizeof(err)), 0);
	assert_int_equal(ntohs(sa.sin_port), 80);
	/* listeners */
	assert_int_equal(parse(":8080", ADDR_F_ANY, &sa, err, sizeof(err)), 0);
	assert_int_equal(sa.sin_addr.s_addr, htonl(INADDR_ANY));
	assert_int_equal(parse("*:0", ADDR_F_ANY | ADDR_F_PORT0, &sa, err, sizeof(err)), 0);
	assert_int_equal(ntohs(sa.sin_port), 0);
	assert_int_equal(parse("0.0.0.0:0", ADDR_F_PORT0, &sa, err, sizeof(err)), 0);
	/* length-bounded: no NUL needed */
	assert_int_equal(addr_parse("127.0.0.1:80trailing", 12, 0, &sa, err, sizeof(err)), 0);
	assert_int_equal(ntohs(sa.sin_port), 80);
}

static void test_bad(void **state)
{
	static const struct {
		const char *in;
		unsigned flags;
		const char *why;
	} bad[] = {
		{ "127.0.0.1", 0, "no ':'" },
		{ "", 0, "no ':'" },
		{ "127.0.0.1:", 0, "no port" },
		{ "127.0.0.1:0", 0, "port 0 out of range 1..65535" },
		{ "127.0.0.1:65536", ADDR_F_PORT0, "port 65536 out of range 0..65535" },
		{ "localhost:999999", 0, "out of range" },
		{ "127.0.0.1:80x", 0, "not a decimal number" },
		{ "127.0.0.1:+80", 0, "not a decimal number" },
		{ "127.0.0.1: 80", 0, "not a decimal number" },
		{ "127.0.0.1:-1", ADDR_F_PORT0, "not a decimal number" },
		{ ":80", 0, "no address" },
		{ "*:80", 0, "'*' is not an IPv4 address" },
		{ "example.com:80", ADDR_F_ANY, "'example.com' is not an IPv4 address or localhost" },
		{ "256.0.0.1:80", 0, "not an IPv4 address" },
		{ "::1:80", 0, "not an IPv4 address" },
		{ "[::1]:80", 0, "not an IPv4 address" },
		{ "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:1", 0, "too long" },
	};
	struct sockaddr_in sa, orig;
	char err[128];
	(void)state;

	memset(&orig, 0x5a, sizeof(orig));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		sa = orig;
		if (parse(bad[i].in, bad[i].flags, &sa, err, sizeof(err)) != -EINVAL)
			fail_msg("accepted '%s'", bad[i].in);
		if (!strstr(err, bad[i].why))
			fail_msg("'%s': reason '%s' does not contain '%s'", bad[i].in, err, bad[i].why);
		assert_memory_equal(&sa, &orig, sizeof(sa)); /* untouched */
	}
	/* no room for a reason is fine */
	assert_int_equal(addr_parse("x", 1, 0, &sa, NULL, 0), -EINVAL);
}

/* The replica forms: [IPV6]:PORT and unix:/PATH, with the lengths connect
 * wants, canonical formatting, and equality on the address alone. */
static void test_families(void **state)
{
	const unsigned f = ADDR_F_IPV6 | ADDR_F_UNIX;
	struct rr_addr a, b;
	char err[128], buf[ADDR_STRLEN];
	(void)state;

	assert_int_equal(addr_parse_sa("[::1]:9001", 10, f, &a, err, sizeof(err)), 0);
	assert_int_equal(a.u.sa.sa_family, AF_INET6);
	assert_int_equal(a.len, sizeof(struct sockaddr_in6));
	assert_int_equal(ntohs(a.u.in6.sin6_port), 9001);
	assert_string_equal(addr_format(&a, buf, sizeof(buf)), "[::1]:9001");
	assert_int_equal(addr_parse_sa("[0:0::1]:9001", 13, f, &b, err, sizeof(err)), 0);
	assert_true(addr_equal(&a, &b));
	assert_int_equal(addr_parse_sa("[::1]:9002", 10, f, &b, err, sizeof(err)), 0);
	assert_false(addr_equal(&a, &b));

	assert_int_equal(addr_parse_sa("unix:/run/m.sock", 16, f, &a, err, sizeof(err)), 0);
	assert_int_equal(a.u.sa.sa_family, AF_UNIX);
	assert_int_equal(a.len, offsetof(struct sockaddr_un, sun_path) + 11 + 1);
	assert_string_equal(addr_format(&a, buf, sizeof(buf)), "unix:/run/m.sock");
	assert_int_equal(addr_parse_sa("unix:/run/m.sock", 16, f, &b, err, sizeof(err)), 0);
	assert_true(addr_equal(&a, &b));
	assert_int_equal(addr_parse_sa("127.0.0.1:80", 12, f, &b, err, sizeof(err)), 0);
	assert_false(addr_equal(&a, &b));
	assert_string_equal(addr_format(&b, buf, sizeof(buf)), "127.0.0.1:80");

	static const struct {
		const char *in;
		unsigned flags;
		const char *why;
	} bad[] = {
		{ "[::1", f, "no ']'" },
		{ "[::1:80", f, "no ']'" },
		{ "[::1]", f, "no ':'" },
		{ "[::1]x:80", f, "no ':'" },
		{ "[::1]:0", f, "port 0 out of range" },
		{ "[::1]:", f, "no port" },
		{ "[1.2.3.4]:80", f, "not an IPv6 address" },
		{ "[]:80", f, "not an IPv6 address" },
		{ "::1:80", f, "not an IPv4 address, [IPv6] or localhost" },
		{ "[::1]:80", ADDR_F_UNIX, "not an IPv4 address or localhost" },
		{ "unix:", f, "no path after 'unix:'" },
		{ "unix:rel.sock", f, "must be absolute" },
		{ "unix:/x", ADDR_F_IPV6, "not a decimal number" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (addr_parse_sa(bad[i].in, strlen(bad[i].in), bad[i].flags, &a, err, sizeof(err)) !=
		    -EINVAL)
			fail_msg("accepted '%s'", bad[i].in);
		if (!strstr(err, bad[i].why))
			fail_msg("'%s': reason '%s' does not contain '%s'", bad[i].in, err, bad[i].why);
	}
	char longp[200] = "unix:/";
	memset(longp + 6, 'a', sizeof(longp) - 7);
	assert_int_equal(addr_parse_sa(longp, strlen(longp), f, &a, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "longer than 107 bytes"));
}

/* DNS names: well-formed ones come back as ADDR_IS_NAME with the port;
 * literals stay literals; malformed names and digit-only last labels are
 * refused; without ADDR_F_NAME a name is an error. */
static void test_names(void **state)
{
	const unsigned f = ADDR_F_IPV6 | ADDR_F_UNIX | ADDR_F_NAME;
	struct rr_addr a;
	char host[ADDR_NAME_MAX], err[128];
	static const char *const bad[] = {
		"example..com:80", ".x:80", "a b:80", "x!:80", "256.0.0.1:80", "1.2.3:80",
		"model.test:0", "model.test:", "model.test",
	};
	(void)state;

	assert_int_equal(addr_parse_name("model.ns.svc.cluster.local:8000", 31, f, &a, host, err,
					 sizeof(err)), ADDR_IS_NAME);
	assert_string_equal(host, "model.ns.svc.cluster.local");
	assert_int_equal(ntohs(a.u.in.sin_port), 8000);
	assert_int_equal(a.u.sa.sa_family, AF_UNSPEC);
	assert_int_equal(addr_parse_name("my_svc-1.test.:1", 16, f, &a, host, err, sizeof(err)),
			 ADDR_IS_NAME);
	assert_string_equal(host, "my_svc-1.test.");
	assert_int_equal(addr_parse_name("127.0.0.1:80", 12, f, &a, host, err, sizeof(err)), 0);
	assert_string_equal(host, "");
	assert_int_equal(addr_parse_name("localhost:80", 12, f, &a, host, err, sizeof(err)), 0);
	assert_int_equal(a.u.sa.sa_family, AF_INET);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (addr_parse_name(bad[i], strlen(bad[i]), f, &a, host, err, sizeof(err)) != -EINVAL)
			fail_msg("accepted '%s'", bad[i]);
	assert_int_equal(addr_parse_name("model.test:80", 13, ADDR_F_IPV6, &a, host, err, sizeof(err)),
			 -EINVAL);
	assert_non_null(strstr(err, "not an IPv4 address, [IPv6] or localhost"));
	char longname[300];
	memset(longname, 'a', 70);
	strcpy(longname + 70, ".test:80");
	assert_int_equal(addr_parse_name(longname, strlen(longname), f, &a, host, err, sizeof(err)),
			 -EINVAL); /* a label over 63 bytes */
}

/* "srv:_SERVICE._PROTO.NAME": ADDR_IS_SRV with the name (no port) under
 * ADDR_F_SRV only; names not of that form, empty, too long or with a NUL
 * are refused with a reason. */
static void test_srv(void **state)
{
	const unsigned f = ADDR_F_IPV6 | ADDR_F_UNIX | ADDR_F_NAME | ADDR_F_SRV;
	struct rr_addr a;
	char host[ADDR_NAME_MAX], err[128];
	static const struct {
		const char *in, *why;
	} bad[] = {
		{ "srv:", "no name after 'srv:'" },
		{ "srv:model.test", "is not _SERVICE._PROTO.NAME" },
		{ "srv:_http.model.test", "is not _SERVICE._PROTO.NAME" },
		{ "srv:_http._tcp", "is not _SERVICE._PROTO.NAME" },
		{ "srv:_http._tcp.", "is not _SERVICE._PROTO.NAME" },
		{ "srv:_http._tcp..x", "is not a DNS name" },
		{ "srv:_http._tcp.x:80", "is not a DNS name" },
		{ "srv:_http._tcp.a b", "is not a DNS name" },
	};
	(void)state;

	assert_int_equal(addr_parse_name("srv:_http._tcp.svc.ns.svc.cluster.local", 39, f, &a,
					 host, err, sizeof(err)), ADDR_IS_SRV);
	assert_string_equal(host, "_http._tcp.svc.ns.svc.cluster.local");
	assert_int_equal(a.u.sa.sa_family, AF_UNSPEC);
	assert_int_equal(addr_port(&a), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		if (addr_parse_name(bad[i].in, strlen(bad[i].in), f, &a, host, err, sizeof(err)) !=
		    -EINVAL)
			fail_msg("accepted '%s'", bad[i].in);
		if (!strstr(err, bad[i].why))
			fail_msg("'%s': '%s', wanted '%s'", bad[i].in, err, bad[i].why);
	}
	assert_int_equal(addr_parse_name("srv:_a._b.c\0d", 13, f, &a, host, err, sizeof(err)),
			 -EINVAL);
	assert_non_null(strstr(err, "NUL"));
	char longname[300] = "srv:_a._b.";
	for (size_t i = 0; i < 5; i++)
		strcat(longname, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.");
	strcat(longname, "x");
	assert_int_equal(addr_parse_name(longname, strlen(longname), f, &a, host, err, sizeof(err)),
			 -EINVAL);
	assert_non_null(strstr(err, "longer than 253"));
	/* without ADDR_F_SRV it is no form of its own (and no NAME:PORT) */
	assert_int_equal(addr_parse_name("srv:_http._tcp.x", 16, ADDR_F_NAME, &a, host, err,
					 sizeof(err)), -EINVAL);
	/* ADDR_F_SRV alone allows no NAME:PORT */
	assert_int_equal(addr_parse_name("model.test:80", 13, ADDR_F_SRV, &a, host, err,
					 sizeof(err)), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good),
		cmocka_unit_test(test_bad),
		cmocka_unit_test(test_families),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_srv),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
