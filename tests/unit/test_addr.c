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
		{ "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:1", 0, "too long" },
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good),
		cmocka_unit_test(test_bad),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
