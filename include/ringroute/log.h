/* The process log: one line per event on stderr, each starting with an
 * RFC 3339 UTC timestamp (milliseconds) and a level, as text
 *
 *     2026-12-02T01:30:00.123Z info  1 shard(s) listening on port 8080
 *
 * or, with --log-format json, one JSON object per line
 *
 *     {"time":"2026-12-02T01:30:00.123Z","level":"info","msg":"1 shard(s) ..."}
 *
 * Lines below the --log-level are not written. Any thread may log: a line is
 * formatted on the caller's stack and written with one write(2), so lines
 * from different threads never interleave. Logging is for rare events
 * (start, stop, changes, failures); the per-request record is the access
 * log (accesslog.h), never this. */
#ifndef RINGROUTE_LOG_H
#define RINGROUTE_LOG_H

#include <stdarg.h>
#include <stddef.h>

enum log_level { LOG_L_ERROR, LOG_L_WARN, LOG_L_INFO, LOG_L_DEBUG };
enum log_format { LOG_F_TEXT, LOG_F_JSON };

/* Before any thread starts (main): the format and the lowest level written.
 * Defaults: text, info. */
void log_setup(enum log_format fmt, enum log_level min);

/* "error", "warn", "info", "debug" -> 0 and *out; -1 for anything else. */
int log_level_parse(const char *s, enum log_level *out);
/* "text", "json" -> 0 and *out; -1 for anything else. */
int log_format_parse(const char *s, enum log_format *out);

/* True when a line at lvl would be written (skip costly formatting). */
int log_enabled(enum log_level lvl);

void rr_log(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void rr_vlog(enum log_level lvl, const char *fmt, va_list ap);

#define log_error(...) rr_log(LOG_L_ERROR, __VA_ARGS__)
#define log_warn(...) rr_log(LOG_L_WARN, __VA_ARGS__)
#define log_info(...) rr_log(LOG_L_INFO, __VA_ARGS__)
#define log_debug(...) rr_log(LOG_L_DEBUG, __VA_ARGS__)

/* Writes "YYYY-MM-DDTHH:MM:SS.mmmZ" (24 bytes and a NUL) for the realtime
 * clock into buf (at least 25 bytes). Shared with the access log. */
void log_time_rfc3339(char *buf, size_t len);

#endif
