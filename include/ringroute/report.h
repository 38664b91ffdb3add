/* report: the --report-url client. Every report interval the control loop
 * hands it the queues JSON line and it POSTs it to the URL, as a small
 * non-blocking state machine (connect, send, read the status line) with a
 * deadline, so a slow or dead collector never blocks the control loop.
 * Failures are logged at most once a minute (and once when reports succeed
 * again). Only the control thread touches a struct report. */
#ifndef RINGROUTE_REPORT_H
#define RINGROUTE_REPORT_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ringroute/strbuf.h"

#define REPORT_TIMEOUT_MS   2000   /* a report POST may take at most this long */
#define REPORT_LOG_EVERY_MS 60000  /* failures are logged this often */

enum report_phase {
	REPORT_IDLE = 0,        /* no report in flight: fd is -1 */
	REPORT_CONNECTING,      /* non-blocking connect in progress: wait POLLOUT */
	REPORT_SENDING,         /* request partly sent: wait POLLOUT */
	REPORT_READING,         /* waiting for the status line: wait POLLIN */
};

struct report {
	char *url;              /* as given, for messages */
	char *host;             /* Host header */
	char *path;
	struct sockaddr_in addr;
	enum report_phase phase;
	int fd;
	uint64_t deadline_ms;   /* clock_now_ms() time the one in flight fails */
	struct strbuf req;
	size_t req_off;         /* bytes of req sent */
	char status[64];        /* start of the response */
	size_t status_len;
	uint64_t last_log_ms;   /* 0: never logged */
	unsigned failures;      /* since the last message */
	bool failing;           /* the last message was a failure */
	uint64_t nsent;         /* reports answered 2xx, ever */
	uint64_t nfailed;       /* reports failed (refused, timed out, non-2xx), ever */
};

/* Parses url ("http://HOST[:PORT][/PATH]", HOST an IPv4 literal or
 * localhost, PORT 1..65535, default 80) into a zeroed *r. Returns 0, or
 * -EINVAL with err holding the reason, or -ENOMEM. On failure r may hold
 * some strings: report_destroy() frees them. */
int report_init(struct report *r, const char *url, char *err, size_t errlen);
/* Closes the one in flight and frees what r owns; r stays valid (idle). */
void report_destroy(struct report *r);

/* Starts a POST of body (one JSON line, copied) due within
 * min(interval_ms, REPORT_TIMEOUT_MS). An unfinished previous report is
 * counted as timed out first. Failures are counted and logged, never
 * returned: the next interval simply tries again. */
void report_start(struct report *r, const char *body, uint32_t interval_ms);
/* Advances the report in flight on poll revents of r->fd. */
void report_step(struct report *r, short revents);
/* Fails the report in flight if now is past its deadline. */
void report_check_deadline(struct report *r, uint64_t now_ms);
/* The poll events the report in flight waits for; 0 when idle. */
short report_poll_events(const struct report *r);

#endif
