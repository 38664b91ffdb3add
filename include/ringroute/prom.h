/* GET /metrics: the Prometheus text exposition format (0.0.4), exactly.
 *
 * Every family is written whole: its one HELP and TYPE, then all its
 * samples (a parser gives a family whose samples are interleaved with
 * another's no type: the Python client reads it as untyped). Label values
 * are escaped; histograms are cumulative _bucket series ending with
 * le="+Inf", then _sum and _count. The series are listed in
 * docs/operations.md ("Metrics").
 *
 * The writers below are pure (a strbuf, no proxy) so that the unit test
 * drives them; prom_metrics_text reads the proxy (counters summed over
 * shards, the current snapshot, /proc/self) on the control thread. */
#ifndef RINGROUTE_PROM_H
#define RINGROUTE_PROM_H

#include <stdint.h>

#include "ringroute/metrics.h"
#include "ringroute/strbuf.h"

struct proxy;

/* Output being written; err sticks at the first -ENOMEM (the text is then
 * not served). */
struct prom {
	struct strbuf sb;
	int err;
};

#define PROM_MAX_LABELS 4

/* The labels of one sample, in order: k[i]="v[i]". */
struct prom_labels {
	unsigned n;
	const char *k[PROM_MAX_LABELS];
	const char *v[PROM_MAX_LABELS];
};

/* Appends v as the text between a label value's quotes: backslash, double
 * quote and line feed become \\, \" and \n; every other byte is kept. */
void prom_put_label_value(struct prom *w, const char *v);
/* Starts a family: "# HELP name help" and "# TYPE name type". help must
 * not hold a backslash or a line feed. type: counter, gauge, histogram. */
void prom_family(struct prom *w, const char *name, const char *type, const char *help);
/* One sample line: name (l's labels, NULL for none) value. */
void prom_sample_u64(struct prom *w, const char *name, const struct prom_labels *l, uint64_t v);
void prom_sample_f64(struct prom *w, const char *name, const struct prom_labels *l, double v);
/* One histogram of family name with labels l: name_bucket{l,le} for every
 * bound of hist_bounds_us and +Inf (cumulative), name_sum (seconds),
 * name_count (the +Inf bucket). */
void prom_histogram(struct prom *w, const char *name, const struct prom_labels *l,
		    const struct hist_sum *h);

/* What /proc/self/stat says, in Prometheus' process_* units. */
struct prom_proc {
	double cpu_seconds;           /* utime + stime */
	double start_time;            /* seconds since the epoch */
	uint64_t virtual_bytes, resident_bytes;
};

/* Parses the text of /proc/PID/stat (the command name in parentheses may
 * hold spaces and parentheses). ticks: sysconf(_SC_CLK_TCK); page: the
 * page size; boot_time: /proc/stat's btime. 0, or -1 when malformed. */
int prom_parse_proc_stat(const char *text, long ticks, long page, uint64_t boot_time,
			 struct prom_proc *out);

/* The whole /metrics text (mi_free it), or NULL when out of memory. */
char *prom_metrics_text(struct proxy *p);

#endif
