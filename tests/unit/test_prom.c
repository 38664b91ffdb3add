/* Unit tests of the Prometheus text writers (prom.c): label values escaped
 * as the exposition format says (backslash, double quote, line feed, and
 * nothing else), sample lines, a histogram's cumulative buckets ending
 * with le="+Inf" equal to _count and its exact _sum, and /proc/self/stat
 * parsing with a command name that holds spaces and parentheses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "ringroute/metrics.h"
#include "ringroute/prom.h"

static void check_escape(const char *in, const char *want)
{
	struct prom w = {0};

	prom_put_label_value(&w, in);
	assert_int_equal(w.err, 0);
	assert_string_equal(w.sb.p ? w.sb.p : "", want);
	sb_free(&w.sb);
}

static void test_label_escape(void **state)
{
	(void)state;
	check_escape("", "");
	check_escape("plain-name_1.2", "plain-name_1.2");
	check_escape("a\\b", "a\\\\b");
	check_escape("say \"hi\"", "say \\\"hi\\\"");
	check_escape("two\nlines", "two\\nlines");
	check_escape("\\\"\n", "\\\\\\\"\\n");
	check_escape("\\", "\\\\");
	/* Everything else is kept as is: tabs, braces, commas, '=', UTF-8. */
	check_escape("t\tb{c},d=e\xc3\xa9", "t\tb{c},d=e\xc3\xa9");
}

static void test_samples(void **state)
{
	struct prom w = {0};
	struct prom_labels l = {2, {"backend", "replica"}, {"b\"1", "r\\2"}};
	(void)state;

	prom_family(&w, "x_total", "counter", "Things.");
	prom_sample_u64(&w, "x_total", &l, 18446744073709551615ull);
	prom_sample_u64(&w, "x_total", NULL, 0);
	prom_family(&w, "y", "gauge", "A gauge.");
	prom_sample_f64(&w, "y", NULL, 1.5);
	assert_int_equal(w.err, 0);
	assert_string_equal(w.sb.p, "# HELP x_total Things.\n"
				    "# TYPE x_total counter\n"
				    "x_total{backend=\"b\\\"1\",replica=\"r\\\\2\"} 18446744073709551615\n"
				    "x_total 0\n"
				    "# HELP y A gauge.\n"
				    "# TYPE y gauge\n"
				    "y 1.500000\n");
	sb_free(&w.sb);
}

static void test_histogram(void **state)
{
	struct prom w = {0};
	struct prom_labels l = {1, {"endpoint"}, {""}};
	struct hist h;
	struct hist_sum hs = {0};
	uint64_t obs[] = {0, 500, 501, 1000000, 299999999, 300000000, 300000001, 3600000000ull};
	const char *p;
	char line[128];
	(void)state;

	memset(&h, 0, sizeof(h));
	for (size_t i = 0; i < sizeof(obs) / sizeof(obs[0]); i++)
		metrics_hist_observe(&h, obs[i]);
	metrics_hist_add(&hs, &h);
	prom_histogram(&w, "d_seconds", &l, &hs);
	assert_int_equal(w.err, 0);
	p = w.sb.p;
	/* le=0.0005 holds 0 and 500 us (the bound itself is in: "less or equal") */
	assert_non_null(strstr(p, "d_seconds_bucket{endpoint=\"\",le=\"0.0005\"} 2\n"));
	assert_non_null(strstr(p, "d_seconds_bucket{endpoint=\"\",le=\"0.001\"} 3\n"));
	assert_non_null(strstr(p, "d_seconds_bucket{endpoint=\"\",le=\"1\"} 4\n"));
	assert_non_null(strstr(p, "d_seconds_bucket{endpoint=\"\",le=\"120\"} 4\n"));
	assert_non_null(strstr(p, "d_seconds_bucket{endpoint=\"\",le=\"300\"} 6\n"));
	assert_non_null(strstr(p, "d_seconds_bucket{endpoint=\"\",le=\"+Inf\"} 8\n"));
	assert_non_null(strstr(p, "d_seconds_count{endpoint=\"\"} 8\n"));
	/* 0 + 500 + 501 + 1e6 + 299999999 + 3e8 + 300000001 + 3.6e9 us */
	assert_non_null(strstr(p, "d_seconds_sum{endpoint=\"\"} 4501.001001\n"));
	/* every bound once, in order, then +Inf, _sum, _count */
	for (unsigned b = 0; b < HIST_NBUCKETS; b++) {
		snprintf(line, sizeof(line), "le=\"%g\"}", (double)hist_bounds_us[b] / 1e6);
		assert_non_null(strstr(p, line));
		p = strstr(p, line) + strlen(line);
	}
	assert_non_null(strstr(p, "le=\"+Inf\""));
	assert_true(strstr(p, "_sum") < strstr(p, "_count"));
	assert_int_equal(hist_bounds_us[HIST_NBUCKETS - 1], 300000000);
	sb_free(&w.sb);
}

static void test_proc_stat(void **state)
{
	struct prom_proc pr;
	/* proc(5): pid (comm) state ppid pgrp session tty tpgid flags minflt
	 * cminflt majflt cmajflt utime stime cutime cstime priority nice
	 * num_threads itrealvalue starttime vsize rss ... */
	const char *stat = "4242 (ring (route) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 "
			   "250 150 0 0 20 0 3 0 12345 273367040 1157 18446744073709551615 1 1 "
			   "0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";
	(void)state;

	assert_int_equal(prom_parse_proc_stat(stat, 100, 4096, 1700000000, &pr), 0);
	assert_true(pr.cpu_seconds > 3.999 && pr.cpu_seconds < 4.001);
	assert_true(pr.start_time > 1700000123.449 && pr.start_time < 1700000123.451);
	assert_int_equal(pr.virtual_bytes, 273367040);
	assert_int_equal(pr.resident_bytes, 1157 * 4096);
	assert_int_equal(prom_parse_proc_stat("4242 (x) S 1 2 3", 100, 4096, 0, &pr), -1);
	assert_int_equal(prom_parse_proc_stat("no parenthesis", 100, 4096, 0, &pr), -1);
	assert_int_equal(prom_parse_proc_stat(stat, 0, 4096, 0, &pr), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_label_escape),
		cmocka_unit_test(test_samples),
		cmocka_unit_test(test_histogram),
		cmocka_unit_test(test_proc_stat),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
