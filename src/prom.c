/* GET /metrics in the Prometheus text format (see prom.h). Runs on the
 * control thread: it reads the shards' counters (summed by proxy.c), the
 * current snapshot and /proc/self, and never touches a shard. */
#include "ringroute/accesslog.h"
#include "ringroute/prom.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "ringroute/alloc.h"
#include "ringroute/clock.h"
#include "ringroute/instance.h"
#include "ringroute/load.h"
#include "ringroute/proxy.h"
#include "ringroute/request.h"
#include "ringroute/shadow.h"
#include "ringroute/shard.h"
#include "ringroute/upstream.h"
#include "ringroute/version.h"

/* ---- the writers ---- */

static void put(struct prom *w, const char *p, size_t n)
{
	if (!w->err)
		w->err = sb_put(&w->sb, p, n);
}

static void puts_(struct prom *w, const char *s)
{
	put(w, s, strlen(s));
}

void prom_put_label_value(struct prom *w, const char *v)
{
	const char *run = v;

	for (; *v; v++) {
		const char *esc = *v == '\\' ? "\\\\" : *v == '"' ? "\\\"" : *v == '\n' ? "\\n" : NULL;
		if (!esc)
			continue;
		put(w, run, (size_t)(v - run));
		puts_(w, esc);
		run = v + 1;
	}
	put(w, run, (size_t)(v - run));
}

void prom_family(struct prom *w, const char *name, const char *type, const char *help)
{
	if (!w->err)
		w->err = sb_printf(&w->sb, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* name{k="v",...} and the space before the value. le: an extra last label
 * (histogram buckets) or NULL. */
static void put_series(struct prom *w, const char *name, const struct prom_labels *l,
		       const char *le)
{
	unsigned n = l ? l->n : 0;

	puts_(w, name);
	if (n || le) {
		puts_(w, "{");
		for (unsigned i = 0; i < n; i++) {
			if (i)
				puts_(w, ",");
			puts_(w, l->k[i]);
			puts_(w, "=\"");
			prom_put_label_value(w, l->v[i]);
			puts_(w, "\"");
		}
		if (le) {
			puts_(w, n ? ",le=\"" : "le=\"");
			puts_(w, le);
			puts_(w, "\"");
		}
		puts_(w, "}");
	}
	puts_(w, " ");
}

void prom_sample_u64(struct prom *w, const char *name, const struct prom_labels *l, uint64_t v)
{
	put_series(w, name, l, NULL);
	if (!w->err)
		w->err = sb_printf(&w->sb, "%llu\n", (unsigned long long)v);
}

void prom_sample_f64(struct prom *w, const char *name, const struct prom_labels *l, double v)
{
	put_series(w, name, l, NULL);
	if (!w->err)
		w->err = sb_printf(&w->sb, "%.6f\n", v);
}

/* name + suffix, for the _bucket, _sum and _count series. */
static const char *suffixed(char *buf, size_t len, const char *name, const char *suffix)
{
	snprintf(buf, len, "%s%s", name, suffix);
	return buf;
}

void prom_histogram(struct prom *w, const char *name, const struct prom_labels *l,
		    const struct hist_sum *h)
{
	char series[128], le[32];
	uint64_t cum = 0;

	suffixed(series, sizeof(series), name, "_bucket");
	for (unsigned b = 0; b < HIST_NBUCKETS; b++) {
		uint64_t us = hist_bounds_us[b];
		cum += h->bucket[b];
		/* The bound in seconds, exactly: "0.0005", "2.5", "300". */
		snprintf(le, sizeof(le), "%g", (double)us / 1e6);
		put_series(w, series, l, le);
		if (!w->err)
			w->err = sb_printf(&w->sb, "%llu\n", (unsigned long long)cum);
	}
	cum += h->bucket[HIST_NBUCKETS];
	put_series(w, series, l, "+Inf");
	if (!w->err)
		w->err = sb_printf(&w->sb, "%llu\n", (unsigned long long)cum);
	/* Microseconds as decimal seconds, without a float's rounding. */
	put_series(w, suffixed(series, sizeof(series), name, "_sum"), l, NULL);
	if (!w->err)
		w->err = sb_printf(&w->sb, "%llu.%06llu\n", (unsigned long long)(h->sum_us / 1000000),
				   (unsigned long long)(h->sum_us % 1000000));
	prom_sample_u64(w, suffixed(series, sizeof(series), name, "_count"), l, cum);
}

/* ---- /proc/self ---- */

int prom_parse_proc_stat(const char *text, long ticks, long page, uint64_t boot_time,
			 struct prom_proc *out)
{
	/* Fields after the command name, counted from 3 (state) as in proc(5). */
	unsigned long long f[25] = {0};
	const char *p = strrchr(text, ')');
	unsigned i;

	if (!p || ticks <= 0 || page <= 0)
		return -1;
	p++;
	for (i = 3; i <= 24; i++) {
		char *end;
		while (*p == ' ')
			p++;
		if (i == 3) { /* state: one letter */
			if (!*p)
				return -1;
			p++;
			continue;
		}
		errno = 0;
		f[i] = strtoull(p, &end, 10);
		if (end == p || errno)
			return -1;
		p = end;
	}
	out->cpu_seconds = (double)(f[14] + f[15]) / (double)ticks;
	out->start_time = (double)boot_time + (double)f[22] / (double)ticks;
	out->virtual_bytes = f[23];
	out->resident_bytes = f[24] * (unsigned long long)page;
	return 0;
}

/* The whole of a small /proc file into buf (NUL-terminated). 0 or -1. */
static int read_small(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t off = 0;

	if (fd < 0)
		return -1;
	while (off + 1 < len) {
		ssize_t n = read(fd, buf + off, len - 1 - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		off += (size_t)n;
	}
	close(fd);
	buf[off] = '\0';
	return off ? 0 : -1;
}

/* /proc/stat's btime (seconds since the epoch), or 0. Read line by line:
 * the intr line before it can be longer than any fixed buffer. */
static uint64_t boot_time(void)
{
	FILE *f = fopen("/proc/stat", "re");
	char *line = NULL;
	size_t cap = 0;
	uint64_t bt = 0;

	if (!f)
		return 0;
	while (!bt && getline(&line, &cap, f) > 0)
		if (strncmp(line, "btime ", 6) == 0)
			bt = strtoull(line + 6, NULL, 10);
	free(line); /* getline's, libc's malloc */
	fclose(f);
	return bt;
}

/* Open descriptors, not counting the one this count reads through. */
static int open_fds(uint64_t *n)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;

	if (!d)
		return -1;
	*n = 0;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.' && atoi(e->d_name) != dirfd(d))
			(*n)++;
	closedir(d);
	return 0;
}

/* The standard process_* families, from /proc/self. A file that cannot
 * be read leaves its families out rather than report a wrong value. */
static void put_process(struct prom *w)
{
	char stat[1024];
	struct prom_proc pr;
	struct rlimit rl;
	uint64_t fds, boot = boot_time();

	if (read_small("/proc/self/stat", stat, sizeof(stat)) == 0 &&
	    prom_parse_proc_stat(stat, sysconf(_SC_CLK_TCK), sysconf(_SC_PAGESIZE), boot, &pr) == 0) {
		prom_family(w, "process_cpu_seconds_total", "counter",
			    "Total user and system CPU time spent in seconds.");
		prom_sample_f64(w, "process_cpu_seconds_total", NULL, pr.cpu_seconds);
		if (boot) {
			prom_family(w, "process_start_time_seconds", "gauge",
				    "Start time of the process since unix epoch in seconds.");
			prom_sample_f64(w, "process_start_time_seconds", NULL, pr.start_time);
		}
		prom_family(w, "process_virtual_memory_bytes", "gauge",
			    "Virtual memory size in bytes.");
		prom_sample_u64(w, "process_virtual_memory_bytes", NULL, pr.virtual_bytes);
		prom_family(w, "process_resident_memory_bytes", "gauge",
			    "Resident memory size in bytes.");
		prom_sample_u64(w, "process_resident_memory_bytes", NULL, pr.resident_bytes);
	}
	if (open_fds(&fds) == 0) {
		prom_family(w, "process_open_fds", "gauge", "Number of open file descriptors.");
		prom_sample_u64(w, "process_open_fds", NULL, fds);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		prom_family(w, "process_max_fds", "gauge",
			    "Maximum number of open file descriptors.");
		prom_sample_u64(w, "process_max_fds", NULL,
				rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t)rl.rlim_cur);
	}
}

/* ---- ringroute's families ---- */

static void put_process_state(struct prom *w, struct proxy *p, const struct config *c)
{
	struct prom_labels l = {1, {"version"}, {version_string()}};
	struct shards_sum sh;

	prom_family(w, "ringroute_build_info", "gauge",
		    "Always 1: the version of this ringroute is its label.");
	prom_sample_u64(w, "ringroute_build_info", &l, 1);
	prom_family(w, "ringroute_config_version", "gauge",
		    "Version of the current configuration: one more with every applied change.");
	prom_sample_u64(w, "ringroute_config_version", NULL, c->version);
	prom_family(w, "ringroute_instance", "gauge",
		    "Always 1: this instance's index and the instance count sharing every cap "
		    "(--instance-index/--instance-count or --peers) are its labels.");
	{
		char idx[16], cnt[16];
		struct prom_labels il = {2, {"index", "count"}, {idx, cnt}};
		uint32_t ii = atomic_load(&p->instance_index);
		if (ii == INSTANCE_NONE) /* not in its --peers set */
			snprintf(idx, sizeof(idx), "none");
		else
			snprintf(idx, sizeof(idx), "%u", (unsigned)ii);
		snprintf(cnt, sizeof(cnt), "%u", (unsigned)atomic_load(&p->instance_count));
		prom_sample_u64(w, "ringroute_instance", &il, 1);
	}
	prom_family(w, "ringroute_config_reloads_total", "counter",
		    "Configuration changes (control API writes, SIGHUP reloads) by result: "
		    "ok (applied) or error (refused).");
	l = (struct prom_labels){1, {"result"}, {"ok"}};
	prom_sample_u64(w, "ringroute_config_reloads_total", &l,
			atomic_load_explicit(&p->changes_ok, memory_order_relaxed));
	l.v[0] = "error";
	prom_sample_u64(w, "ringroute_config_reloads_total", &l,
			atomic_load_explicit(&p->changes_failed, memory_order_relaxed));
	proxy_sum_shards(p, &sh);
	prom_family(w, "ringroute_client_connections", "gauge", "Open client connections.");
	prom_sample_u64(w, "ringroute_client_connections", NULL,
			sh.accepted > sh.closed ? sh.accepted - sh.closed : 0);
	prom_family(w, "ringroute_access_log_dropped_lines_total", "counter",
		    "Access log lines dropped because the output was behind (never the requests).");
	prom_sample_u64(w, "ringroute_access_log_dropped_lines_total", NULL,
			accesslog_dropped(p->alog));
}

static const struct {
	const char *name, *help;
	size_t off;
} hists[] = {
	{"ringroute_request_duration_seconds",
	 "Time from the request head to the end of the response (or the error), by endpoint.",
	 offsetof(struct endpoint_sum, total)},
	{"ringroute_queue_wait_seconds",
	 "Time requests waited in their backend's queue for a replica slot, observed when the "
	 "wait ends (a slot, the queue timeout, the client leaving), by endpoint.",
	 offsetof(struct endpoint_sum, queue_wait)},
	{"ringroute_time_to_first_byte_seconds",
	 "Time from the request head to the replica's response head, by endpoint.",
	 offsetof(struct endpoint_sum, ttfb)},
};

static void put_endpoints(struct prom *w, struct proxy *p)
{
	struct endpoint_sum *e;
	size_t n = proxy_sum_endpoints(p, &e);
	char code[8];

	prom_family(w, "ringroute_requests_total", "counter",
		    "Requests ended, by endpoint (\"\" for those that matched none) and status "
		    "code (499: the client left first).");
	for (size_t k = 0; k < n; k++) {
		struct prom_labels l = {2, {"endpoint", "code"}, {e[k].name, code}};
		for (int st = 0; st < 600; st++) {
			if (!e[k].status[st])
				continue;
			snprintf(code, sizeof(code), "%d", st);
			prom_sample_u64(w, "ringroute_requests_total", &l, e[k].status[st]);
		}
	}
	for (size_t h = 0; h < sizeof(hists) / sizeof(hists[0]); h++) {
		prom_family(w, hists[h].name, "histogram", hists[h].help);
		for (size_t k = 0; k < n; k++) {
			struct prom_labels l = {1, {"endpoint"}, {e[k].name}};
			prom_histogram(w, hists[h].name, &l,
				       (const struct hist_sum *)((const char *)&e[k] + hists[h].off));
		}
	}
	mi_free(e);
}

/* The reasons that refuse a request without trying a replica. */
static const enum req_reason rejections[] = {REQ_R_QUEUE_FULL, REQ_R_QUEUE_TIMEOUT,
					    REQ_R_NO_HEALTHY_REPLICA};

static int shadowed(const struct config *c, const struct backend_cfg *b)
{
	for (size_t i = 0; i < c->nendpoints; i++)
		for (size_t k = 0; k < c->endpoints[i].nshadow; k++)
			if (c->endpoints[i].shadow[k].backend == b)
				return 1;
	return 0;
}

static void put_backends(struct prom *w, struct proxy *p, const struct config *c)
{
	struct backend_sum *sums = mi_calloc(c->nbackends ? c->nbackends : 1, sizeof(*sums));
	struct prom_labels l = {1, {"backend"}, {NULL}};

	if (!sums) {
		w->err = -ENOMEM;
		return;
	}
	for (size_t i = 0; i < c->nbackends; i++)
		proxy_sum_backend(p, c->backends[i].state, &sums[i]);

	prom_family(w, "ringroute_backend_queued_requests", "gauge",
		    "Requests waiting for a replica slot of the backend, process-wide.");
	for (size_t i = 0; i < c->nbackends; i++) {
		l.v[0] = c->backends[i].name;
		prom_sample_u64(w, "ringroute_backend_queued_requests", &l,
				atomic_load(&c->backends[i].state->queued));
	}
	prom_family(w, "ringroute_backend_max_queued_requests", "gauge",
		    "The backend's max_queued_requests as configured, for all instances together.");
	for (size_t i = 0; i < c->nbackends; i++) {
		l.v[0] = c->backends[i].name;
		prom_sample_u64(w, "ringroute_backend_max_queued_requests", &l,
				c->backends[i].max_queued_cfg);
	}
	prom_family(w, "ringroute_backend_instance_max_queued_requests", "gauge",
		    "This instance's share of max_queued_requests: more waiting requests are refused.");
	for (size_t i = 0; i < c->nbackends; i++) {
		l.v[0] = c->backends[i].name;
		prom_sample_u64(w, "ringroute_backend_instance_max_queued_requests", &l,
				c->backends[i].max_queued);
	}
	prom_family(w, "ringroute_rejected_requests_total", "counter",
		    "Requests the backend refused (503) without trying a replica, by reason.");
	for (size_t i = 0; i < c->nbackends; i++) {
		struct prom_labels lr = {2, {"backend", "reason"}, {c->backends[i].name}};
		for (size_t r = 0; r < sizeof(rejections) / sizeof(rejections[0]); r++) {
			lr.v[1] = req_reason_name(rejections[r]);
			prom_sample_u64(w, "ringroute_rejected_requests_total", &lr,
					sums[i].by_reason[rejections[r]]);
		}
	}
	prom_family(w, "ringroute_retries_total", "counter",
		    "Requests tried again after a failed attempt (a dead pooled connection, or "
		    "what the backend's retry_on names: a connect failure, a reset before the "
		    "response, a 503 or 429).");
	for (size_t i = 0; i < c->nbackends; i++) {
		l.v[0] = c->backends[i].name;
		prom_sample_u64(w, "ringroute_retries_total", &l, sums[i].retries);
	}
	prom_family(w, "ringroute_retry_budget_exhausted_total", "counter",
		    "Retries the backend's retry budget (retry_budget_percent) refused: the "
		    "request got the failure of its last attempt.");
	for (size_t i = 0; i < c->nbackends; i++) {
		l.v[0] = c->backends[i].name;
		prom_sample_u64(w, "ringroute_retry_budget_exhausted_total", &l,
				sums[i].retry_budget_exhausted);
	}
	prom_family(w, "ringroute_shadow_requests_total", "counter",
		    "Shadow copies to the backend: sent, or why one was dropped or cut.");
	for (size_t i = 0; i < c->nbackends; i++) {
		struct prom_labels ls = {2, {"backend", "result"}, {c->backends[i].name}};
		uint64_t any = 0;
		for (int r = 0; r < SHADOW_R_COUNT; r++)
			any |= sums[i].shadow[r];
		if (!any && !shadowed(c, &c->backends[i]))
			continue; /* not a shadow target: no series of zeros */
		for (int r = 0; r < SHADOW_R_COUNT; r++) {
			ls.v[1] = shadow_result_name((enum shadow_result)r);
			prom_sample_u64(w, "ringroute_shadow_requests_total", &ls, sums[i].shadow[r]);
		}
	}
	mi_free(sums);
}

/* One replica of the current snapshot, read once for every family. */
struct replica_row {
	struct prom_labels l;         /* backend, replica */
	struct replica_state *rs;
	uint32_t max_ongoing, max_ongoing_cfg; /* this instance's share, configured */
	struct pool_sum ps;
	uint32_t load_max_age_ms;     /* its backend's: whether the report is fresh */
};

/* Server-reported load (load.h): the last report of each replica (0 when
 * it has none), whether least_load reads it now, and the reports taken
 * and dropped as bad. */
static void put_replica_load(struct prom *w, const struct replica_row *rows, size_t n)
{
	uint64_t now = clock_now_ms();
	size_t k;

	prom_family(w, "ringroute_replica_reported_queue", "gauge",
		    "Requests waiting in the replica, as it last reported (load_reports, "
		    "load_scrape_ms); 0 without a report.");
	for (k = 0; k < n; k++)
		prom_sample_u64(w, "ringroute_replica_reported_queue", &rows[k].l,
				atomic_load(&rows[k].rs->load_report) >> 32);
	prom_family(w, "ringroute_replica_reported_kv_cache_usage", "gauge",
		    "The replica's KV-cache use (0..1), as it last reported; 0 without a report.");
	for (k = 0; k < n; k++)
		prom_sample_f64(w, "ringroute_replica_reported_kv_cache_usage", &rows[k].l,
				(double)(uint32_t)atomic_load(&rows[k].rs->load_report) /
					LOAD_KV_ONE);
	prom_family(w, "ringroute_replica_reported_load_fresh", "gauge",
		    "1 while the replica's last report is within load_max_age_ms (least_load "
		    "reads it), else 0.");
	for (k = 0; k < n; k++) {
		uint32_t q, kv;
		prom_sample_u64(w, "ringroute_replica_reported_load_fresh", &rows[k].l,
				load_fresh(rows[k].rs, now, rows[k].load_max_age_ms, &q, &kv) != 0);
	}
	prom_family(w, "ringroute_replica_load_reports_total", "counter",
		    "Load reports taken from the replica (endpoint-load-metrics headers and scrapes).");
	for (k = 0; k < n; k++)
		prom_sample_u64(w, "ringroute_replica_load_reports_total", &rows[k].l,
				atomic_load(&rows[k].rs->load_reports));
	prom_family(w, "ringroute_replica_load_reports_bad_total", "counter",
		    "Load reports of the replica dropped as malformed or out of range.");
	for (k = 0; k < n; k++)
		prom_sample_u64(w, "ringroute_replica_load_reports_bad_total", &rows[k].l,
				atomic_load(&rows[k].rs->load_bad));
}

static void put_replicas(struct prom *w, struct proxy *p, const struct config *c)
{
	size_t n = 0, k = 0;
	struct replica_row *rows;

	for (size_t i = 0; i < c->nbackends; i++)
		n += c->backends[i].nreplicas;
	rows = mi_calloc(n ? n : 1, sizeof(*rows));
	if (!rows) {
		w->err = -ENOMEM;
		return;
	}
	for (size_t i = 0; i < c->nbackends; i++)
		for (size_t r = 0; r < c->backends[i].nreplicas; r++, k++) {
			const struct backend_cfg *b = &c->backends[i];
			rows[k] = (struct replica_row){
				.l = {2, {"backend", "replica"}, {b->name, b->replicas[r].id}},
				.rs = b->replicas[r].state,
				.max_ongoing = b->max_ongoing,
				.max_ongoing_cfg = b->max_ongoing_cfg,
				.load_max_age_ms = b->load_max_age_ms,
			};
			proxy_sum_replica(p, rows[k].rs, &rows[k].ps);
		}

	prom_family(w, "ringroute_replica_ongoing_requests", "gauge",
		    "Requests and shadow copies in flight to the replica, process-wide.");
	for (k = 0; k < n; k++)
		prom_sample_u64(w, "ringroute_replica_ongoing_requests", &rows[k].l,
				atomic_load(&rows[k].rs->ongoing));
	prom_family(w, "ringroute_replica_max_ongoing_requests", "gauge",
		    "The replica's cap on requests in flight (its backend's max_ongoing_requests), "
		    "for all instances together.");
	for (k = 0; k < n; k++)
		prom_sample_u64(w, "ringroute_replica_max_ongoing_requests", &rows[k].l,
				rows[k].max_ongoing_cfg);
	prom_family(w, "ringroute_replica_instance_max_ongoing_requests", "gauge",
		    "This instance's share of the replica's cap: what it sends the replica at most.");
	for (k = 0; k < n; k++)
		prom_sample_u64(w, "ringroute_replica_instance_max_ongoing_requests", &rows[k].l,
				rows[k].max_ongoing);
	prom_family(w, "ringroute_replica_healthy", "gauge",
		    "1 while the replica passes its health check (always, without one), else 0.");
	for (k = 0; k < n; k++)
		prom_sample_u64(w, "ringroute_replica_healthy", &rows[k].l,
				atomic_load(&rows[k].rs->healthy) != 0);
	prom_family(w, "ringroute_replica_ejected", "gauge",
		    "1 while outlier detection keeps the replica out of the choice, else 0.");
	for (k = 0; k < n; k++)
		prom_sample_u64(w, "ringroute_replica_ejected", &rows[k].l,
				outlier_ms_left(rows[k].rs, clock_now_ms()) != 0);
	prom_family(w, "ringroute_outlier_ejections_total", "counter",
		    "Ejections of the replica by outlier detection, by the failure that caused "
		    "them: connect_failed, reset, timeout, bad_response, 5xx.");
	for (k = 0; k < n; k++) {
		struct prom_labels l = rows[k].l;
		l.k[l.n++] = "reason";
		for (int e = 0; e < OUTLIER_REASONS; e++) {
			l.v[2] = outlier_reason_name((enum outlier_reason)e);
			prom_sample_u64(w, "ringroute_outlier_ejections_total", &l,
					atomic_load(&rows[k].rs->outlier.ejections[e]));
		}
	}
	put_replica_load(w, rows, n);
	prom_family(w, "ringroute_replica_requests_total", "counter",
		    "Exchanges started with the replica: requests, retries and shadow copies.");
	for (k = 0; k < n; k++)
		prom_sample_u64(w, "ringroute_replica_requests_total", &rows[k].l,
				rows[k].ps.requests);
	prom_family(w, "ringroute_replica_errors_total", "counter",
		    "Exchanges with the replica that failed: ringroute_upstream_errors_total "
		    "summed over kind.");
	for (k = 0; k < n; k++) {
		uint64_t sum = 0;
		for (int e = 0; e < UP_ERR_COUNT; e++)
			sum += rows[k].ps.errors[e];
		prom_sample_u64(w, "ringroute_replica_errors_total", &rows[k].l, sum);
	}
	prom_family(w, "ringroute_upstream_errors_total", "counter",
		    "Exchanges with the replica that failed, by kind: connect_failed, "
		    "connect_timeout, reset, timeout, bad_response.");
	for (k = 0; k < n; k++) {
		struct prom_labels l = rows[k].l;
		l.k[l.n++] = "kind";
		for (int e = 0; e < UP_ERR_COUNT; e++) {
			l.v[2] = upstream_error_name((enum up_error)e);
			prom_sample_u64(w, "ringroute_upstream_errors_total", &l, rows[k].ps.errors[e]);
		}
	}
	mi_free(rows);
}

char *prom_metrics_text(struct proxy *p)
{
	struct config *c = proxy_config_get(p);
	struct prom w = {0};

	put_process_state(&w, p, c);
	put_endpoints(&w, p);
	put_backends(&w, p, c);
	put_replicas(&w, p, c);
	put_process(&w);
	config_unref(c);
	if (w.err) {
		sb_free(&w.sb);
		return NULL;
	}
	return w.sb.p; /* never NULL: ringroute_build_info is always there */
}
