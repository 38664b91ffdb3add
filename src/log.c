/* The process log: see log.h. */
#include "ringroute/log.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ringroute/strbuf.h"

static _Atomic int log_fmt = LOG_F_TEXT;
static _Atomic int log_min = LOG_L_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void log_setup(enum log_format fmt, enum log_level min)
{
	atomic_store(&log_fmt, fmt);
	atomic_store(&log_min, min);
}

int log_level_parse(const char *s, enum log_level *out)
{
	for (int i = 0; i <= LOG_L_DEBUG; i++)
		if (strcmp(s, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	return -1;
}

int log_format_parse(const char *s, enum log_format *out)
{
	if (strcmp(s, "text") == 0)
		*out = LOG_F_TEXT;
	else if (strcmp(s, "json") == 0)
		*out = LOG_F_JSON;
	else
		return -1;
	return 0;
}

int log_enabled(enum log_level lvl)
{
	return (int)lvl <= atomic_load_explicit(&log_min, memory_order_relaxed);
}

void log_time_rfc3339(char *buf, size_t len)
{
	struct timespec ts;
	struct tm tm;
	size_t n;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + n, len - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

/* Writes all of line (a short write to a pipe is resumed; EINTR retried).
 * The log has nowhere to report its own failure: it is dropped. */
static void write_all(const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(STDERR_FILENO, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		p += w;
		n -= (size_t)w;
	}
}

void rr_vlog(enum log_level lvl, const char *fmt, va_list ap)
{
	char stamp[32], msg[2048], line[2048 + 64];
	int n;

	if (!log_enabled(lvl))
		return;
	log_time_rfc3339(stamp, sizeof(stamp));
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(msg))
		n = sizeof(msg) - 1; /* truncated: still one line */
	while (n > 0 && msg[n - 1] == '\n')
		msg[--n] = '\0';
	for (char *q = msg; (q = memchr(q, '\n', (size_t)(msg + n - q))); q++)
		*q = ' '; /* one event, one line */
	if (atomic_load_explicit(&log_fmt, memory_order_relaxed) == LOG_F_JSON) {
		struct strbuf sb = {0};
		if (sb_printf(&sb, "{\"time\":\"%s\",\"level\":\"%s\",\"msg\":", stamp,
			      level_names[lvl]) == 0 &&
		    sb_put_json_str(&sb, msg, (size_t)n) == 0 && sb_put(&sb, "}\n", 2) == 0)
			write_all(sb.p, sb.len);
		sb_free(&sb);
		return;
	}
	n = snprintf(line, sizeof(line), "%s %-5s %s\n", stamp, level_names[lvl], msg);
	if (n > 0)
		write_all(line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

void rr_log(enum log_level lvl, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	rr_vlog(lvl, fmt, ap);
	va_end(ap);
}
