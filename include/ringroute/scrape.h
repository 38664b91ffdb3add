/* The load scrape (backend "load_scrape_ms", docs/config.md): a helper
 * thread (ticker.h) that GETs /metrics of every replica of the backends
 * that ask for it, every load_scrape_ms, all replicas at once (probe.h),
 * and publishes the gauges named in load_metrics as the replica's load
 * report (load.h). A scrape that fails (refused, timeout, not 2xx) leaves
 * the last report to age out; one whose named gauges do not parse counts
 * as a bad report. */
#ifndef RINGROUTE_SCRAPE_H
#define RINGROUTE_SCRAPE_H

struct proxy;
struct scrape;

/* Starts the thread, which reads p's current snapshot every turn. 0 and
 * *out, or -errno (nothing started). */
int scrape_start(struct proxy *p, struct scrape **out);
/* Stops and joins it (a scrape in progress is waited for, at most its
 * deadline), frees s. NULL: nothing. */
void scrape_stop(struct scrape *s);

#endif
