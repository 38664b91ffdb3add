/* Unit tests of strbuf: appends keep a NUL after the bytes, growth keeps
 * the content, formatting past the stack buffer, consume and reset. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "ringroute/strbuf.h"

static void test_put_and_nul(void **state)
{
	struct strbuf s = {0};
	(void)state;

	assert_int_equal(sb_put(&s, "ab", 2), 0);
	assert_int_equal(s.len, 2);
	assert_string_equal(s.p, "ab");
	assert_int_equal(sb_puts(&s, "cd"), 0);
	assert_string_equal(s.p, "abcd");
	assert_int_equal(sb_put(&s, "x\0y", 3), 0); /* binary bytes count */
	assert_int_equal(s.len, 7);
	assert_memory_equal(s.p + 4, "x\0y", 3);
	assert_int_equal(s.p[7], '\0');
	assert_int_equal(sb_put(&s, NULL, 0), 0);
	assert_int_equal(s.len, 7);
	sb_free(&s);
	assert_null(s.p);
	assert_int_equal(s.len, 0);
	assert_int_equal(s.cap, 0);
	sb_free(&s); /* twice is fine */
}

static void test_growth(void **state)
{
	struct strbuf s = {0};
	char want[10000];
	(void)state;

	for (size_t i = 0; i < sizeof(want); i++) {
		want[i] = (char)('a' + i % 26);
		assert_int_equal(sb_put(&s, &want[i], 1), 0);
		assert_true(s.cap > s.len);
	}
	assert_int_equal(s.len, sizeof(want));
	assert_memory_equal(s.p, want, sizeof(want));
	assert_int_equal(sb_reserve(&s, 100000), 0);
	assert_true(s.cap >= s.len + 100000 + 1);
	assert_memory_equal(s.p, want, sizeof(want));
	/* a size that cannot be represented is refused, s unchanged */
	assert_int_equal(sb_reserve(&s, SIZE_MAX), -ENOMEM);
	assert_int_equal(sb_put(&s, "z", SIZE_MAX - 1), -ENOMEM);
	assert_int_equal(s.len, sizeof(want));
	sb_free(&s);
}

static void test_printf(void **state)
{
	struct strbuf s = {0};
	char big[3000];
	(void)state;

	assert_int_equal(sb_printf(&s, "%d-%s", 42, "x"), 0);
	assert_string_equal(s.p, "42-x");
	memset(big, 'q', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	/* longer than the stack buffer: formatted in place */
	assert_int_equal(sb_printf(&s, "[%s]", big), 0);
	assert_int_equal(s.len, 4 + 2 + sizeof(big) - 1);
	assert_int_equal(s.p[4], '[');
	assert_int_equal(s.p[s.len - 1], ']');
	assert_int_equal(s.p[s.len], '\0');
	sb_free(&s);
}

static void test_reset_consume(void **state)
{
	struct strbuf s = {0};
	(void)state;

	sb_reset(&s); /* on an empty buffer */
	assert_int_equal(sb_puts(&s, "hello world"), 0);
	sb_consume(&s, 6);
	assert_string_equal(s.p, "world");
	assert_int_equal(s.len, 5);
	sb_consume(&s, 0);
	assert_string_equal(s.p, "world");
	sb_consume(&s, 99);
	assert_int_equal(s.len, 0);
	assert_string_equal(s.p, "");
	assert_int_equal(sb_puts(&s, "again"), 0);
	sb_reset(&s);
	assert_int_equal(s.len, 0);
	assert_string_equal(s.p, "");
	assert_true(s.cap > 0); /* memory kept */
	sb_free(&s);
}

/* Always valid JSON: escapes, UTF-8 kept, every other byte U+FFFD. */
static void test_json_str(void **state)
{
	static const struct { const char *in; size_t n; const char *out; } cases[] = {
		{"abc", 3, "\"abc\""},
		{"a\"b\\c", 5, "\"a\\\"b\\\\c\""},
		{"\n\x01\x7f", 3, "\"\\u000a\\u0001\\u007f\""},
		{"\xc3\xa9", 2, "\"\xc3\xa9\""},              /* é kept */
		{"\xe2\x82\xac\xf0\x9f\x98\x80", 7, "\"\xe2\x82\xac\xf0\x9f\x98\x80\""},
		{"\xff", 1, "\"\\ufffd\""},                     /* never UTF-8 */
		{"\xc3", 1, "\"\\ufffd\""},                     /* cut short */
		{"\xc0\xaf", 2, "\"\\ufffd\\ufffd\""},          /* overlong */
		{"\xed\xa0\x80", 3, "\"\\ufffd\\ufffd\\ufffd\""}, /* surrogate */
		{"\xf4\x90\x80\x80", 4, "\"\\ufffd\\ufffd\\ufffd\\ufffd\""}, /* > U+10FFFF */
		{"a\0b", 3, "\"a\\u0000b\""},
		{"", 0, "\"\""},
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct strbuf sb = {0};
		assert_int_equal(sb_put_json_str(&sb, cases[i].in, cases[i].n), 0);
		assert_string_equal(sb.p, cases[i].out);
		assert_int_equal(sb.len, strlen(cases[i].out));
		sb_free(&sb);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_put_and_nul),
		cmocka_unit_test(test_growth),
		cmocka_unit_test(test_printf),
		cmocka_unit_test(test_reset_consume),
		cmocka_unit_test(test_json_str),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
