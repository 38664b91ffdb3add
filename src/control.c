/* The control thread: the control socket (Unix, read-write), the admin port
 * (TCP, read-only), queue watch streams and queue-length reports, all served
 * by one poll() loop. See DESIGN.md "Control plane".
 *
 * A change (PUT/DELETE through the control socket, or a SIGHUP reload) is a
 * read-modify-write of the whole document: the current snapshot's canonical
 * JSON is loaded, edited, dumped and validated by config_parse() as a whole,
 * then made current by proxy_change(). ctl->change_lock is held from the read
 * to the apply, so two changes never interleave and a failed one leaves
 * nothing behind.
 *
 * The loop never blocks on a peer: every socket is non-blocking, responses
 * that do not fit in the kernel buffer wait in the connection's output buffer,
 * and the report POST is a small state machine (non-blocking connect, send,
 * read the status line) with a deadline. Handlers run on the loop, so a slow
 * handler delays the others: they only touch in-memory state (proxy_change
 * waits for the MSG_RING deliveries, which do not wait for the shards). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <llhttp.h>

#include "ringroute/alloc.h"

#include "ringroute/config.h"
#include "ringroute/control.h"
#include "ringroute/http.h"
#include "ringroute/list.h"
#include "ringroute/proxy.h"

#define CTL_MAX_BODY        (1u << 20)   /* request body limit: 413 above */
#define CTL_MAX_HEAD        (64u << 10)  /* request line + headers: 431 above */
#define CTL_MAX_CONNS       256          /* more are accepted and closed at once */
#define CTL_OUT_HIGH        (256u << 10) /* stop reading a conn with this much unsent */
#define CTL_OUT_MAX         (8u << 20)   /* a watcher this far behind is dropped */
#define CTL_IDLE_MS         60000        /* idle keep-alive / stuck request timeout */
#define CTL_REPORT_TIMEOUT  2000         /* a report POST may take at most this long */
#define CTL_LOG_EVERY_MS    60000        /* report failures are logged this often */
#define CTL_READ_CHUNK      16384

/* A growable byte buffer (mi_* memory). */
struct buf {
	char *p;
	size_t len, cap;
};

/* Makes room for n more bytes. 0 or -ENOMEM (buf unchanged). */
static int buf_reserve(struct buf *b, size_t n)
{
	size_t cap = b->cap ? b->cap : 256;
	char *p;

	if (b->len + n <= b->cap)
		return 0;
	while (cap < b->len + n)
		cap *= 2;
	p = mi_realloc(b->p, cap);
	if (!p)
		return -ENOMEM;
	b->p = p;
	b->cap = cap;
	return 0;
}

/* Appends n bytes and keeps a NUL after them. 0 or -ENOMEM (unchanged). */
static int buf_add(struct buf *b, const void *data, size_t n)
{
	if (buf_reserve(b, n + 1))
		return -ENOMEM;
	memcpy(b->p + b->len, data, n);
	b->len += n;
	b->p[b->len] = '\0'; /* always a C string too */
	return 0;
}

/* Appends formatted text. 0 or -ENOMEM (unchanged). */
__attribute__((format(printf, 2, 3)))
static int buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || buf_reserve(b, (size_t)n + 1))
		return -ENOMEM;
	va_start(ap, fmt);
	vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return 0;
}

static void buf_reset(struct buf *b)
{
	b->len = 0;
	if (b->p)
		b->p[0] = '\0';
}

static void buf_free(struct buf *b)
{
	mi_free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}

/* Drops the first n bytes. */
static void buf_consume(struct buf *b, size_t n)
{
	if (n >= b->len) {
		buf_reset(b);
		return;
	}
	memmove(b->p, b->p + n, b->len - n);
	b->len -= n;
	b->p[b->len] = '\0';
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Connection flags. */
enum {
	CC_F_ADMIN = 1u << 0, /* accepted on the admin port: read-only resources */
	CC_F_WATCH = 1u << 1, /* streaming /v1/queues?watch=1: no further requests */
	CC_F_CLOSE = 1u << 2, /* close once the output buffer is flushed */
	CC_F_DEAD  = 1u << 3, /* close at the next safe point of the loop */
	CC_F_TOOBIG = 1u << 4, /* request refused while parsing: status in err_status */
};

struct control;

struct ctl_conn {
	struct list node;       /* in control.conns */
	struct control *ctl;
	int fd;
	unsigned flags;
	uint64_t last_ms;       /* last byte in or out, for the idle timeout */
	llhttp_t parser;
	/* the request being parsed */
	struct buf url;
	struct buf body;
	size_t head_bytes;
	int err_status;         /* 413/431 decided by a callback */
	/* bytes received but not parsed yet (parsing stops after each request) */
	struct buf in;
	/* bytes to send; out_off of them are sent already */
	struct buf out;
	size_t out_off;
};

enum report_phase {
	REPORT_IDLE = 0,
	REPORT_CONNECTING,
	REPORT_SENDING,
	REPORT_READING,
};

/* --report-url: where to POST the queues JSON every report interval. */
struct report {
	char *url;              /* as given, for messages */
	char *host;             /* Host header */
	char *path;
	struct sockaddr_in addr;
	enum report_phase phase;
	int fd;
	uint64_t deadline_ms;
	struct buf req;
	size_t req_off;
	char status[64];        /* start of the response */
	size_t status_len;
	uint64_t last_log_ms;   /* 0: never logged */
	unsigned failures;      /* since the last message */
	bool failing;           /* the last message was a failure */
};

struct control {
	struct proxy *p;
	pthread_t thread;
	bool thread_started;
	_Atomic int stop;
	int wake_fd;            /* eventfd: control_stop() wakes the loop */
	int unix_fd;            /* -1: no control socket */
	char *unix_path;
	int admin_fd;           /* -1: no admin port */
	pthread_mutex_t change_lock; /* held for a whole read-modify-write */
	llhttp_settings_t settings;
	struct list conns;
	unsigned nconns;
	uint32_t report_ms;
	uint64_t next_report_ms;
	bool has_report;
	struct report report;
	/* poll set, rebuilt every iteration */
	struct pollfd *pfds;
	struct ctl_conn **pconns;
	size_t pcap;
};

/* ------------------------------------------------------------------ */
/* responses */


/* Queues one complete response on c. extra: more header lines, each ending
 * in CRLF, or NULL. A connection marked CC_F_CLOSE gets Connection: close.
 * On ENOMEM the connection is dropped (there is no way to answer). */
static void conn_respond(struct ctl_conn *c, int status, const char *ctype, const char *body,
			 size_t len, const char *extra, bool head_only)
{
	int rc = buf_printf(&c->out,
			    "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
			    "Cache-Control: no-store\r\n%s%s\r\n",
			    status, http_reason(status), ctype, len, extra ? extra : "",
			    (c->flags & CC_F_CLOSE) ? "Connection: close\r\n" : "");
	if (!rc && !head_only && len)
		rc = buf_add(&c->out, body, len);
	if (rc)
		c->flags |= CC_F_DEAD;
}

/* Sends j (reference stolen) as a JSON response, one line. */
static void conn_respond_json(struct ctl_conn *c, int status, json_t *j, const char *extra,
			      bool head_only)
{
	char *text = j ? json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;

	json_decref(j);
	if (!text) {
		c->flags |= CC_F_DEAD;
		return;
	}
	{
		size_t n = strlen(text);
		char *line = mi_malloc(n + 2);
		if (!line) {
			free(text);
			c->flags |= CC_F_DEAD;
			return;
		}
		memcpy(line, text, n);
		line[n] = '\n';
		line[n + 1] = '\0';
		conn_respond(c, status, "application/json", line, n + 1, extra, head_only);
		mi_free(line);
	}
	free(text);
}

/* Queues {"error": message} with status; extra as conn_respond. */
__attribute__((format(printf, 4, 5)))
static void conn_error(struct ctl_conn *c, int status, const char *extra, const char *fmt, ...)
{
	char msg[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	conn_respond_json(c, status, json_pack("{s:s}", "error", msg), extra, false);
}

/* ------------------------------------------------------------------ */
/* config helpers */


/* The current config version. */
static uint64_t ctl_version(struct proxy *p)
{
	struct config *c = proxy_config_get(p);
	uint64_t v = c->version;

	config_unref(c);
	return v;
}

/* The queues view: {"backends": {name: {queued, ongoing, replicas}},
 * "version": N, "time": unix seconds}. NULL on ENOMEM. */
static json_t *ctl_queues_json(struct proxy *p)
{
	json_t *bes = proxy_queues_json(p);

	if (!bes)
		return NULL;
	return json_pack("{s:o,s:I,s:I}", "backends", bes, "version", (json_int_t)ctl_version(p),
			 "time", (json_int_t)time(NULL));
}

/* The edits a change can make to the document. */
enum edit_kind {
	EDIT_CONFIG,       /* replace the whole document */
	EDIT_BACKEND_PUT,
	EDIT_BACKEND_DEL,
	EDIT_REPLICA_PUT,
	EDIT_REPLICA_DEL,
	EDIT_ENDPOINT_PUT,
	EDIT_ENDPOINT_DEL,
};

struct edit {
	enum edit_kind kind;
	const char *name;     /* backend or endpoint */
	const char *id;       /* replica */
	json_t *value;        /* borrowed: the new document / object / address */
};

/* Returns the endpoint (and "traffic"/"shadow") of doc that names backend,
 * or NULL when none does. */
static const char *backend_user(json_t *doc, const char *backend, const char **where)
{
	json_t *eps = json_object_get(doc, "endpoints"), *ep;
	const char *name;

	json_object_foreach(eps, name, ep) {
		if (json_object_get(json_object_get(ep, "traffic"), backend)) {
			*where = "traffic";
			return name;
		}
		if (json_object_get(json_object_get(ep, "shadow"), backend)) {
			*where = "shadow";
			return name;
		}
	}
	return NULL;
}

/* Applies e to *doc (which the caller owns; EDIT_CONFIG replaces it).
 * Returns 0, -ENOENT (the thing to change is missing), -EBUSY (a backend
 * still in use), -EINVAL (malformed value) or -ENOMEM, with err set. */
static int edit_apply(json_t **doc, const struct edit *e, char *err, size_t errlen)
{
	json_t *bes = json_object_get(*doc, "backends");
	json_t *eps = json_object_get(*doc, "endpoints");
	json_t *b, *reps;
	const char *user, *where = NULL;

	switch (e->kind) {
	case EDIT_CONFIG:
		json_decref(*doc);
		*doc = json_incref(e->value);
		return 0;
	case EDIT_BACKEND_PUT:
		if (json_object_set(bes, e->name, e->value))
			goto nomem;
		return 0;
	case EDIT_BACKEND_DEL:
		if (!json_object_get(bes, e->name)) {
			snprintf(err, errlen, "backends.%s: no such backend", e->name);
			return -ENOENT;
		}
		user = backend_user(*doc, e->name, &where);
		if (user) {
			snprintf(err, errlen,
				 "backends.%s: still used by endpoint \"%s\" (endpoints.%s.%s.%s); "
				 "change or delete the endpoint first",
				 e->name, user, user, where, e->name);
			return -EBUSY;
		}
		json_object_del(bes, e->name);
		return 0;
	case EDIT_REPLICA_PUT:
	case EDIT_REPLICA_DEL:
		b = json_object_get(bes, e->name);
		if (!b) {
			snprintf(err, errlen, "backends.%s: no such backend", e->name);
			return -ENOENT;
		}
		reps = json_object_get(b, "replicas");
		if (!reps) {
			reps = json_object();
			if (json_object_set_new(b, "replicas", reps))
				goto nomem;
		}
		if (e->kind == EDIT_REPLICA_PUT) {
			if (json_object_set(reps, e->id, e->value))
				goto nomem;
			return 0;
		}
		if (!json_object_get(reps, e->id)) {
			snprintf(err, errlen, "backends.%s.replicas.%s: no such replica", e->name, e->id);
			return -ENOENT;
		}
		json_object_del(reps, e->id);
		return 0;
	case EDIT_ENDPOINT_PUT:
		if (json_object_set(eps, e->name, e->value))
			goto nomem;
		return 0;
	case EDIT_ENDPOINT_DEL:
		if (!json_object_get(eps, e->name)) {
			snprintf(err, errlen, "endpoints.%s: no such endpoint", e->name);
			return -ENOENT;
		}
		json_object_del(eps, e->name);
		return 0;
	}
	snprintf(err, errlen, "unknown edit");
	return -EINVAL;
nomem:
	snprintf(err, errlen, "out of memory");
	return -ENOMEM;
}

/* config_parse() messages start with "<source>: ": the document is ours, not
 * a file, so only the JSON path and the reason are worth showing. */
static void strip_source(char *err, const char *source)
{
	size_t n = strlen(source);

	if (strncmp(err, source, n) == 0 && err[n] == ':' && err[n + 1] == ' ')
		memmove(err, err + n + 2, strlen(err + n + 2) + 1);
}

/* One change: read the current document, apply e, validate the result as a
 * whole and make it current. Holds change_lock throughout. On success
 * returns 0 and *out = the new current snapshot (a reference of the
 * caller's); else -errno as edit_apply, or -EINVAL (the result does not
 * validate), or the -errno of proxy_change, with err set and nothing
 * changed. */
static int ctl_change(struct control *ctl, const struct edit *e, struct config **out, char *err,
		      size_t errlen)
{
	struct proxy *p = ctl->p;
	struct config *cur, *next = NULL;
	json_error_t jerr;
	json_t *doc;
	char *text;
	int rc;

	pthread_mutex_lock(&ctl->change_lock);
	cur = proxy_config_get(p);
	doc = json_loads(cur->json, 0, &jerr);
	config_unref(cur);
	if (!doc) {
		snprintf(err, errlen, "current config does not load: %s", jerr.text);
		rc = -EIO;
		goto out_unlock;
	}
	rc = edit_apply(&doc, e, err, errlen);
	if (rc)
		goto out_doc;
	text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
	if (!text) {
		snprintf(err, errlen, "out of memory");
		rc = -ENOMEM;
		goto out_doc;
	}
	rc = config_parse(text, strlen(text), "config", &p->registry, &next, err, errlen);
	free(text);
	if (rc) {
		strip_source(err, "config");
		goto out_doc;
	}
	rc = proxy_change(p, next, err, errlen); /* takes our reference */
	if (rc) {
		/* Applied or not? Only the pointer is compared: next may be
		 * gone if it was refused. change_lock keeps other changes out. */
		bool applied;
		pthread_mutex_lock(&p->config_lock);
		applied = p->config == next;
		pthread_mutex_unlock(&p->config_lock);
		if (applied) {
			/* A shard could not be reached: current anyway. */
			fprintf(stderr, "ringroute: control: %s\n", err);
			rc = 0;
		} else if (rc == -ENOENT || rc == -EINVAL || rc == -EBUSY) {
			rc = -EIO; /* never mistaken for 404/400/409 */
		}
	}
	next = NULL;
	if (!rc)
		*out = proxy_config_get(p);
out_doc:
	json_decref(doc);
out_unlock:
	pthread_mutex_unlock(&ctl->change_lock);
	return rc;
}

/* See control.h. */
int control_reload(struct control *ctl, const char *path, char *err, size_t errlen)
{
	struct config *next = NULL;
	int rc;

	pthread_mutex_lock(&ctl->change_lock);
	rc = config_load_file(path, &ctl->p->registry, &next, err, errlen);
	if (!rc)
		rc = proxy_change(ctl->p, next, err, errlen);
	pthread_mutex_unlock(&ctl->change_lock);
	return rc;
}

/* The HTTP status of a change's -errno. */
static int errno_status(int rc)
{
	switch (rc) {
	case -EINVAL: return 400;
	case -ENOENT: return 404;
	case -EBUSY: return 409;
	default: return 500;
	}
}

/* ------------------------------------------------------------------ */
/* request routing */

static int hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* Percent-decodes [s, s+n) into a new string; NULL if malformed (bad
 * escape, %00), empty or out of memory. */
static char *url_decode(const char *s, size_t n)
{
	char *out, *o;

	if (n == 0)
		return NULL;
	out = mi_malloc(n + 1);
	if (!out)
		return NULL;
	o = out;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '%') {
			int hi = i + 2 < n ? hexval(s[i + 1]) : -1;
			int lo = i + 2 < n ? hexval(s[i + 2]) : -1;
			if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
				mi_free(out);
				return NULL;
			}
			*o++ = (char)(hi * 16 + lo);
			i += 2;
		} else {
			*o++ = s[i];
		}
	}
	*o = '\0';
	return out;
}

#define MAX_SEGS 6

/* Splits the path (before '?') into at most MAX_SEGS raw segments. Returns
 * the count, or -1 if there are too many or one is empty. */
static int split_path(const char *path, size_t len, const char *seg[], size_t seglen[])
{
	int n = 0;
	size_t i = 0;

	if (len == 0 || path[0] != '/')
		return -1;
	i = 1;
	if (len == 1)
		return 0;
	while (i <= len) {
		size_t j = i;
		while (j < len && path[j] != '/')
			j++;
		if (j == i || n == MAX_SEGS)
			return -1;
		seg[n] = path + i;
		seglen[n] = j - i;
		n++;
		i = j + 1;
	}
	return n;
}

static bool seg_is(const char *s, size_t n, const char *lit)
{
	return strlen(lit) == n && memcmp(s, lit, n) == 0;
}

/* True if the query string (without '?') asks for watch=1/true. */
static bool query_watch(const char *q)
{
	while (q && *q) {
		const char *amp = strchr(q, '&');
		size_t n = amp ? (size_t)(amp - q) : strlen(q);
		if ((n == 7 && !memcmp(q, "watch=1", 7)) || (n == 10 && !memcmp(q, "watch=true", 10)) ||
		    (n == 5 && !memcmp(q, "watch", 5)))
			return true;
		q = amp ? amp + 1 : NULL;
	}
	return false;
}

enum route_kind {
	R_NONE = 0,
	R_HEALTHZ,
	R_METRICS,
	R_STATS,
	R_QUEUES,
	R_CONFIG,
	R_BACKEND,
	R_REPLICA,
	R_ENDPOINT,
};

struct route {
	enum route_kind kind;
	char *name;   /* decoded: backend / endpoint */
	char *id;     /* decoded: replica id */
	bool watch;
};

static void route_free(struct route *r)
{
	mi_free(r->name);
	r->name = NULL;
	mi_free(r->id);
	r->id = NULL;
}

/* Matches a request target to a resource. r->kind stays R_NONE when
 * nothing matches (or on ENOMEM, answered the same: 404). */
static void route_match(const char *url, struct route *r)
{
	const char *q = strchr(url, '?');
	size_t len = q ? (size_t)(q - url) : strlen(url);
	const char *seg[MAX_SEGS];
	size_t sl[MAX_SEGS];
	int n = split_path(url, len, seg, sl);

	memset(r, 0, sizeof(*r));
	if (n == 1 && seg_is(seg[0], sl[0], "healthz"))
		r->kind = R_HEALTHZ;
	else if (n == 1 && seg_is(seg[0], sl[0], "metrics"))
		r->kind = R_METRICS;
	if (n < 2 || !seg_is(seg[0], sl[0], "v1"))
		return;
	if (n == 2 && seg_is(seg[1], sl[1], "stats")) {
		r->kind = R_STATS;
	} else if (n == 2 && seg_is(seg[1], sl[1], "queues")) {
		r->kind = R_QUEUES;
		r->watch = query_watch(q ? q + 1 : NULL);
	} else if (n == 2 && seg_is(seg[1], sl[1], "config")) {
		r->kind = R_CONFIG;
	} else if (n == 3 && seg_is(seg[1], sl[1], "backends")) {
		r->name = url_decode(seg[2], sl[2]);
		if (r->name)
			r->kind = R_BACKEND;
	} else if (n == 5 && seg_is(seg[1], sl[1], "backends") &&
		   seg_is(seg[3], sl[3], "replicas")) {
		r->name = url_decode(seg[2], sl[2]);
		r->id = url_decode(seg[4], sl[4]);
		if (r->name && r->id)
			r->kind = R_REPLICA;
		else
			route_free(r);
	} else if (n == 3 && seg_is(seg[1], sl[1], "endpoints")) {
		r->name = url_decode(seg[2], sl[2]);
		if (r->name)
			r->kind = R_ENDPOINT;
	}
}

/* Starts a queue watch stream on c: headers, then one line at once and one
 * per report interval (ctl_tick). */
static void conn_start_watch(struct control *ctl, struct ctl_conn *c);

/* Parses the request body as JSON (any value). NULL with err set
 * ("body:line:column: reason") when it is not JSON. */
static json_t *body_json(struct ctl_conn *c, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *j = json_loadb(c->body.p ? c->body.p : "", c->body.len,
			       JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);

	if (!j)
		snprintf(err, errlen, "body:%d:%d: %s", jerr.line, jerr.column, jerr.text);
	return j;
}

/* Extracts the canonical object of one resource from snapshot c (or NULL). */
static json_t *snapshot_get(const struct config *c, const char *section, const char *name)
{
	json_error_t jerr;
	json_t *doc = json_loads(c->json, 0, &jerr), *v = NULL;

	if (doc) {
		v = json_object_get(json_object_get(doc, section), name);
		json_incref(v);
		json_decref(doc);
	}
	return v;
}

/* Answers a change request: performs e and replies 200 with the version
 * (and the resource, from the new snapshot), or the error. */
static void conn_change(struct control *ctl, struct ctl_conn *c, const struct edit *e)
{
	struct config *next = NULL;
	char err[1024] = "";
	json_t *res;
	int rc = ctl_change(ctl, e, &next, err, sizeof(err));

	if (rc) {
		conn_error(c, errno_status(rc), NULL, "%s", err);
		return;
	}
	res = json_pack("{s:I}", "version", (json_int_t)next->version);
	if (res) {
		switch (e->kind) {
		case EDIT_BACKEND_PUT:
			json_object_set_new(res, "name", json_string(e->name));
			json_object_set_new(res, "backend", snapshot_get(next, "backends", e->name));
			break;
		case EDIT_ENDPOINT_PUT:
			json_object_set_new(res, "name", json_string(e->name));
			json_object_set_new(res, "endpoint", snapshot_get(next, "endpoints", e->name));
			break;
		case EDIT_REPLICA_PUT:
			json_object_set_new(res, "backend", json_string(e->name));
			json_object_set_new(res, "id", json_string(e->id));
			json_object_set(res, "address", e->value);
			break;
		default:
			break;
		}
	}
	config_unref(next);
	conn_respond_json(c, 200, res, NULL, false);
}

/* GET of a single backend/endpoint: {"name": ..., "<kind>": object}. */
static void conn_get_one(struct control *ctl, struct ctl_conn *c, const char *section,
			 const char *kind, const char *name, bool head)
{
	struct config *cur = proxy_config_get(ctl->p);
	json_t *v = snapshot_get(cur, section, name);
	uint64_t version = cur->version;

	config_unref(cur);
	if (!v) {
		conn_error(c, 404, NULL, "%s.%s: no such %s", section, name, kind);
		return;
	}
	conn_respond_json(c, 200,
			  json_pack("{s:I,s:s,s:o}", "version", (json_int_t)version, "name", name,
				    kind, v),
			  NULL, head);
}

/* 405 with the Allow header listing what the resource takes. */
static void conn_not_allowed(struct ctl_conn *c, const char *allow, const char *method)
{
	char extra[128];

	snprintf(extra, sizeof(extra), "Allow: %s\r\n", allow);
	conn_error(c, 405, extra, "method %s not allowed here (allowed: %s)", method, allow);
}

/* Handles the replica PUT body: a JSON string or {"address": string}. */
static void conn_put_replica(struct control *ctl, struct ctl_conn *c, struct route *r)
{
	char err[1024];
	json_t *j = body_json(c, err, sizeof(err)), *addr;
	struct edit e = { .kind = EDIT_REPLICA_PUT, .name = r->name, .id = r->id };

	if (!j) {
		conn_error(c, 400, NULL, "%s", err);
		return;
	}
	addr = json_is_object(j) ? json_object_get(j, "address") : j;
	if (json_is_object(j)) {
		const char *key;
		json_t *v;
		json_object_foreach(j, key, v) {
			if (strcmp(key, "address")) {
				conn_error(c, 400, NULL, "body.%s: unknown key (expected \"address\")", key);
				json_decref(j);
				return;
			}
		}
	}
	if (!json_is_string(addr)) {
		conn_error(c, 400, NULL,
			   "%s: must be a string \"host:port\" or an object {\"address\": \"host:port\"}",
			   json_is_object(j) ? "body.address" : "body");
		json_decref(j);
		return;
	}
	e.value = addr;
	conn_change(ctl, c, &e);
	json_decref(j);
}

/* Handles one complete request on c (the parser holds its method, c->url
 * and c->body the rest). Queues exactly one response, or starts a watch. */
static void conn_handle(struct control *ctl, struct ctl_conn *c)
{
	llhttp_method_t m = (llhttp_method_t)llhttp_get_method(&c->parser);
	const char *method = llhttp_method_name(m);
	bool admin = (c->flags & CC_F_ADMIN) != 0;
	bool get = m == HTTP_GET || m == HTTP_HEAD, head = m == HTTP_HEAD;
	struct route r;
	char err[1024];
	struct edit e = {0};
	json_t *j;

	route_match(c->url.p ? c->url.p : "", &r);
	if (admin) {
		/* Read-only: every write is refused, whatever the path. */
		if (!get) {
			conn_error(c, 405, "Allow: GET, HEAD\r\n",
				   "the admin port is read-only (method %s): changes go through the "
				   "control socket (--control)",
				   method);
			goto out;
		}
		if (r.kind != R_HEALTHZ && r.kind != R_METRICS && r.kind != R_STATS &&
		    r.kind != R_QUEUES) {
			conn_error(c, 404, NULL,
				   "no such resource on the admin port: %s (serves /metrics, /healthz, "
				   "/v1/stats, /v1/queues)",
				   c->url.p ? c->url.p : "");
			goto out;
		}
	}
	switch (r.kind) {
	case R_NONE:
		conn_error(c, 404, NULL, "no such resource: %s", c->url.p ? c->url.p : "");
		break;
	case R_HEALTHZ:
		if (!get)
			conn_not_allowed(c, "GET, HEAD", method);
		else
			conn_respond_json(c, 200, json_pack("{s:b}", "ok", 1), NULL, head);
		break;
	case R_METRICS:
		if (!get) {
			conn_not_allowed(c, "GET, HEAD", method);
		} else {
			char *text = proxy_metrics_text(ctl->p);
			if (!text) {
				conn_error(c, 500, NULL, "out of memory");
				break;
			}
			conn_respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", text,
				     strlen(text), NULL, head);
			mi_free(text);
		}
		break;
	case R_STATS:
		if (!get)
			conn_not_allowed(c, "GET, HEAD", method);
		else
			conn_respond_json(c, 200, proxy_stats_json(ctl->p), NULL, head);
		break;
	case R_QUEUES:
		if (!get)
			conn_not_allowed(c, "GET, HEAD", method);
		else if (r.watch && !head)
			conn_start_watch(ctl, c);
		else
			conn_respond_json(c, 200, ctl_queues_json(ctl->p), NULL, head);
		break;
	case R_CONFIG:
		if (get) {
			struct config *cur = proxy_config_get(ctl->p);
			char extra[64];
			size_t n = strlen(cur->json);
			char *text = mi_malloc(n + 2);
			snprintf(extra, sizeof(extra), "X-Ringroute-Version: %" PRIu64 "\r\n",
				 cur->version);
			if (text) {
				memcpy(text, cur->json, n);
				text[n] = '\n';
				text[n + 1] = '\0';
				conn_respond(c, 200, "application/json", text, n + 1, extra, head);
				mi_free(text);
			} else {
				conn_error(c, 500, NULL, "out of memory");
			}
			config_unref(cur);
		} else if (m == HTTP_PUT) {
			j = body_json(c, err, sizeof(err));
			if (!j) {
				conn_error(c, 400, NULL, "%s", err);
				break;
			}
			e.kind = EDIT_CONFIG;
			e.value = j;
			conn_change(ctl, c, &e);
			json_decref(j);
		} else {
			conn_not_allowed(c, "GET, HEAD, PUT", method);
		}
		break;
	case R_BACKEND:
	case R_ENDPOINT: {
		bool be = r.kind == R_BACKEND;
		if (get) {
			conn_get_one(ctl, c, be ? "backends" : "endpoints", be ? "backend" : "endpoint",
				     r.name, head);
		} else if (m == HTTP_PUT) {
			j = body_json(c, err, sizeof(err));
			if (!j) {
				conn_error(c, 400, NULL, "%s", err);
				break;
			}
			if (!json_is_object(j)) {
				conn_error(c, 400, NULL, "body: must be a JSON object (the %s)",
					   be ? "backend" : "endpoint");
				json_decref(j);
				break;
			}
			e.kind = be ? EDIT_BACKEND_PUT : EDIT_ENDPOINT_PUT;
			e.name = r.name;
			e.value = j;
			conn_change(ctl, c, &e);
			json_decref(j);
		} else if (m == HTTP_DELETE) {
			e.kind = be ? EDIT_BACKEND_DEL : EDIT_ENDPOINT_DEL;
			e.name = r.name;
			conn_change(ctl, c, &e);
		} else {
			conn_not_allowed(c, "GET, HEAD, PUT, DELETE", method);
		}
		break;
	}
	case R_REPLICA:
		if (m == HTTP_PUT) {
			conn_put_replica(ctl, c, &r);
		} else if (m == HTTP_DELETE) {
			e.kind = EDIT_REPLICA_DEL;
			e.name = r.name;
			e.id = r.id;
			conn_change(ctl, c, &e);
		} else {
			conn_not_allowed(c, "PUT, DELETE", method);
		}
		break;
	}
out:
	route_free(&r);
}

/* ------------------------------------------------------------------ */
/* watch streams */

/* Appends one chunk holding line (plus '\n') to c. */
static void conn_chunk(struct ctl_conn *c, const char *line, size_t n)
{
	if (buf_printf(&c->out, "%zx\r\n", n + 1) || buf_add(&c->out, line, n) ||
	    buf_add(&c->out, "\n\r\n", 3))
		c->flags |= CC_F_DEAD;
	if (c->out.len - c->out_off > CTL_OUT_MAX)
		c->flags |= CC_F_DEAD; /* not reading: stop buffering for it */
}

static void conn_start_watch(struct control *ctl, struct ctl_conn *c)
{
	json_t *j = ctl_queues_json(ctl->p);
	char *line = j ? json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;

	json_decref(j);
	if (!line) {
		conn_error(c, 500, NULL, "out of memory");
		return;
	}
	/* The stream is the response and ends when the client goes, so a
	 * "Connection: close" request does not end it after one line. */
	c->flags = (c->flags & ~CC_F_CLOSE) | CC_F_WATCH;
	if (buf_printf(&c->out,
		       "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
		       "Transfer-Encoding: chunked\r\nCache-Control: no-store\r\n"
		       "X-Report-Interval-Ms: %u\r\n\r\n",
		       ctl->report_ms))
		c->flags |= CC_F_DEAD;
	conn_chunk(c, line, strlen(line));
	free(line);
}

/* ------------------------------------------------------------------ */
/* connections */

static struct ctl_conn *parser_conn(llhttp_t *parser)
{
	return parser->data;
}

static int on_message_begin(llhttp_t *parser)
{
	struct ctl_conn *c = parser_conn(parser);

	buf_reset(&c->url);
	buf_reset(&c->body);
	c->head_bytes = 0;
	c->err_status = 0;
	return 0;
}

/* Counts request-head bytes; 431 past CTL_MAX_HEAD. */
static int head_bytes(struct ctl_conn *c, size_t len)
{
	c->head_bytes += len;
	if (c->head_bytes > CTL_MAX_HEAD) {
		c->err_status = 431;
		return -1;
	}
	return 0;
}

static int on_url(llhttp_t *parser, const char *at, size_t len)
{
	struct ctl_conn *c = parser_conn(parser);

	if (head_bytes(c, len))
		return -1;
	return buf_add(&c->url, at, len) ? -1 : 0;
}

static int on_header_bytes(llhttp_t *parser, const char *at, size_t len)
{
	(void)at;
	return head_bytes(parser_conn(parser), len);
}

static int on_headers_complete(llhttp_t *parser)
{
	struct ctl_conn *c = parser_conn(parser);

	if ((parser->flags & F_CONTENT_LENGTH) && parser->content_length > CTL_MAX_BODY) {
		c->err_status = 413;
		return -1;
	}
	return 0;
}

static int on_body(llhttp_t *parser, const char *at, size_t len)
{
	struct ctl_conn *c = parser_conn(parser);

	if (c->body.len + len > CTL_MAX_BODY) {
		c->err_status = 413;
		return -1;
	}
	return buf_add(&c->body, at, len) ? -1 : 0;
}

/* Pauses the parser after each request: the loop answers it before looking
 * at the next one (pipelining keeps its order, watches end parsing). */
static int on_message_complete(llhttp_t *parser)
{
	(void)parser;
	return HPE_PAUSED;
}

/* Parses buffered input and answers each complete request, until the input
 * is used up, the connection must close or starts a watch, or its output is
 * backed up (parsing resumes when it drains). */
static void conn_parse(struct control *ctl, struct ctl_conn *c)
{
	while (c->in.len && !(c->flags & (CC_F_CLOSE | CC_F_DEAD | CC_F_WATCH)) &&
	       c->out.len - c->out_off < CTL_OUT_HIGH) {
		llhttp_errno_t rc = llhttp_execute(&c->parser, c->in.p, c->in.len);
		size_t used;

		if (rc == HPE_OK) {
			buf_reset(&c->in);
			return;
		}
		if (rc == HPE_PAUSED) {
			used = (size_t)(llhttp_get_error_pos(&c->parser) - c->in.p);
			buf_consume(&c->in, used);
			if (!llhttp_should_keep_alive(&c->parser))
				c->flags |= CC_F_CLOSE;
			llhttp_resume(&c->parser);
			conn_handle(ctl, c);
			continue;
		}
		/* Malformed, too big or an upgrade: answer and close. */
		c->flags |= CC_F_CLOSE;
		buf_reset(&c->in);
		if (c->err_status == 413)
			conn_error(c, 413, NULL, "request body larger than %u bytes", CTL_MAX_BODY);
		else if (c->err_status == 431)
			conn_error(c, 431, NULL, "request head larger than %u bytes", CTL_MAX_HEAD);
		else
			conn_error(c, 400, NULL, "malformed request: %s",
				   c->parser.reason ? c->parser.reason : llhttp_errno_name(rc));
		return;
	}
}

/* Sends what it can of c's output. Marks the conn dead on a write error or
 * once everything is sent on a conn that must close. */
static void conn_flush(struct ctl_conn *c)
{
	while (c->out_off < c->out.len) {
		ssize_t n = send(c->fd, c->out.p + c->out_off, c->out.len - c->out_off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				c->flags |= CC_F_DEAD;
			break;
		}
		c->out_off += (size_t)n;
		c->last_ms = now_ms();
	}
	if (c->out_off == c->out.len) {
		buf_reset(&c->out);
		c->out_off = 0;
		if (c->flags & CC_F_CLOSE)
			c->flags |= CC_F_DEAD;
	} else if (c->out_off > CTL_OUT_HIGH) {
		buf_consume(&c->out, c->out_off);
		c->out_off = 0;
	}
}

/* Reads what is there; EOF or an error marks the conn dead. */
static void conn_read(struct control *ctl, struct ctl_conn *c)
{
	char tmp[CTL_READ_CHUNK];

	for (;;) {
		ssize_t n = recv(c->fd, tmp, sizeof(tmp), MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				c->flags |= CC_F_DEAD;
			break;
		}
		if (n == 0) {
			/* Half-close: still answer what was asked, then close. */
			c->flags |= (c->flags & CC_F_WATCH) ? CC_F_DEAD : CC_F_CLOSE;
			break;
		}
		c->last_ms = now_ms();
		if (c->flags & CC_F_WATCH)
			continue; /* a watcher has nothing more to say: discard */
		if (buf_add(&c->in, tmp, (size_t)n)) {
			c->flags |= CC_F_DEAD;
			break;
		}
		if (c->in.len > CTL_MAX_BODY + CTL_MAX_HEAD + CTL_READ_CHUNK)
			break; /* parse before reading more */
	}
	/* A half-closed conn may still hold complete requests: parse them
	 * (CC_F_CLOSE stops the parse loop, so parse first). */
	if ((c->flags & CC_F_CLOSE) && !(c->flags & CC_F_DEAD) && c->in.len) {
		c->flags &= ~CC_F_CLOSE;
		conn_parse(ctl, c);
		c->flags |= CC_F_CLOSE;
	} else {
		conn_parse(ctl, c);
	}
	if ((c->flags & CC_F_CLOSE) && c->out_off == c->out.len)
		c->flags |= CC_F_DEAD;
}

/* Unlinks, closes and frees c. Only at the loop's safe point (or at
 * teardown): nothing may hold c afterwards. */
static void conn_free(struct control *ctl, struct ctl_conn *c)
{
	list_del_init(&c->node);
	ctl->nconns--;
	close(c->fd);
	buf_free(&c->url);
	buf_free(&c->body);
	buf_free(&c->in);
	buf_free(&c->out);
	mi_free(c);
}

/* Accepts every pending connection on lfd. */
static void ctl_accept(struct control *ctl, int lfd, bool admin)
{
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct ctl_conn *c;

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				fprintf(stderr, "ringroute: control: accept: %s\n", strerror(errno));
			return;
		}
		if (ctl->nconns >= CTL_MAX_CONNS) {
			close(fd);
			continue;
		}
		c = mi_zalloc(sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		if (admin) {
			int one = 1;
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			c->flags |= CC_F_ADMIN;
		}
		c->fd = fd;
		c->ctl = ctl;
		c->last_ms = now_ms();
		list_init(&c->node);
		llhttp_init(&c->parser, HTTP_REQUEST, &ctl->settings);
		c->parser.data = c;
		list_push_back(&ctl->conns, &c->node);
		ctl->nconns++;
	}
}

/* ------------------------------------------------------------------ */
/* reports */

/* Parses "http://host[:port][/path]" (host: IPv4 literal or localhost).
 * 0 or -EINVAL. */
static int report_parse_url(struct report *r, const char *url)
{
	const char *h = url, *slash, *colon, *end;
	char host[256];
	unsigned long port = 80;
	size_t hl;

	if (strncmp(h, "http://", 7))
		return -EINVAL;
	h += 7;
	slash = strchr(h, '/');
	end = slash ? slash : h + strlen(h);
	colon = memchr(h, ':', (size_t)(end - h));
	hl = (size_t)((colon ? colon : end) - h);
	if (hl == 0 || hl >= sizeof(host))
		return -EINVAL;
	memcpy(host, h, hl);
	host[hl] = '\0';
	if (colon) {
		char *e;
		if (colon + 1 == end)
			return -EINVAL;
		port = strtoul(colon + 1, &e, 10);
		if (e != end || port == 0 || port > 65535)
			return -EINVAL;
	}
	memset(&r->addr, 0, sizeof(r->addr));
	r->addr.sin_family = AF_INET;
	r->addr.sin_port = htons((uint16_t)port);
	if (strcmp(host, "localhost") == 0)
		r->addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	else if (inet_pton(AF_INET, host, &r->addr.sin_addr) != 1)
		return -EINVAL;
	r->host = mi_strndup(h, (size_t)(end - h));
	r->path = mi_strdup(slash ? slash : "/");
	r->url = mi_strdup(url);
	if (!r->host || !r->path || !r->url)
		return -ENOMEM;
	return 0;
}

static void report_close(struct report *r)
{
	if (r->fd >= 0)
		close(r->fd);
	r->fd = -1;
	r->phase = REPORT_IDLE;
	buf_reset(&r->req);
	r->req_off = 0;
	r->status_len = 0;
}

/* Ends the current report as failed; logs at most once per minute. */
static void report_fail(struct report *r, const char *why)
{
	uint64_t now = now_ms();

	report_close(r);
	r->failures++;
	if (!r->last_log_ms || now - r->last_log_ms >= CTL_LOG_EVERY_MS) {
		fprintf(stderr, "ringroute: report to %s failed: %s (%u failure%s since the last message)\n",
			r->url, why, r->failures, r->failures == 1 ? "" : "s");
		r->last_log_ms = now;
		r->failures = 0;
		r->failing = true;
	}
}

static void report_done(struct report *r)
{
	report_close(r);
	if (r->failing) {
		fprintf(stderr, "ringroute: report to %s succeeds again\n", r->url);
		r->failing = false;
		r->failures = 0;
		r->last_log_ms = 0;
	}
}

/* Starts a POST of body to the report URL. An unfinished previous one is
 * counted as timed out. */
static void report_start(struct report *r, const char *body, uint32_t interval_ms)
{
	uint64_t now = now_ms();
	size_t n = strlen(body);
	int fd;

	if (r->phase != REPORT_IDLE)
		report_fail(r, "timed out");
	if (buf_printf(&r->req,
		       "POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: ringroute\r\n"
		       "Content-Type: application/json\r\nContent-Length: %zu\r\n"
		       "Connection: close\r\n\r\n",
		       r->path, r->host, n + 1) ||
	    buf_add(&r->req, body, n) || buf_add(&r->req, "\n", 1)) {
		report_fail(r, "out of memory");
		return;
	}
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		report_fail(r, strerror(errno));
		return;
	}
	r->fd = fd;
	r->deadline_ms = now + (interval_ms < CTL_REPORT_TIMEOUT ? interval_ms : CTL_REPORT_TIMEOUT);
	if (connect(fd, (struct sockaddr *)&r->addr, sizeof(r->addr)) == 0) {
		r->phase = REPORT_SENDING;
	} else if (errno == EINPROGRESS) {
		r->phase = REPORT_CONNECTING;
	} else {
		char why[128];
		snprintf(why, sizeof(why), "connect: %s", strerror(errno));
		report_fail(r, why);
	}
}

/* Advances the report on a poll event (revents) or deadline. */
static void report_step(struct report *r, short revents)
{
	char why[160];

	if (r->phase == REPORT_IDLE)
		return;
	if (r->phase == REPORT_CONNECTING && (revents & (POLLOUT | POLLERR | POLLHUP))) {
		int soerr = 0;
		socklen_t sl = sizeof(soerr);
		getsockopt(r->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
		if (soerr) {
			snprintf(why, sizeof(why), "connect: %s", strerror(soerr));
			report_fail(r, why);
			return;
		}
		r->phase = REPORT_SENDING;
	}
	if (r->phase == REPORT_SENDING) {
		while (r->req_off < r->req.len) {
			ssize_t n = send(r->fd, r->req.p + r->req_off, r->req.len - r->req_off,
					 MSG_NOSIGNAL | MSG_DONTWAIT);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				if (errno == EAGAIN || errno == EWOULDBLOCK)
					break;
				snprintf(why, sizeof(why), "send: %s", strerror(errno));
				report_fail(r, why);
				return;
			}
			r->req_off += (size_t)n;
		}
		if (r->req_off == r->req.len)
			r->phase = REPORT_READING;
	}
	if (r->phase == REPORT_READING && (revents & (POLLIN | POLLERR | POLLHUP))) {
		for (;;) {
			ssize_t n = recv(r->fd, r->status + r->status_len,
					 sizeof(r->status) - 1 - r->status_len, MSG_DONTWAIT);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				return;
			if (n < 0) {
				snprintf(why, sizeof(why), "recv: %s", strerror(errno));
				report_fail(r, why);
				return;
			}
			r->status_len += (size_t)n;
			r->status[r->status_len] = '\0';
			if (n == 0 || memchr(r->status, '\n', r->status_len) ||
			    r->status_len == sizeof(r->status) - 1)
				break;
		}
		/* "HTTP/1.x NNN ..." */
		if (r->status_len >= 12 && !strncmp(r->status, "HTTP/1.", 7) && r->status[9] == '2') {
			report_done(r);
		} else {
			char *nl = strpbrk(r->status, "\r\n");
			if (nl)
				*nl = '\0';
			snprintf(why, sizeof(why), "answer \"%.60s\"",
				 r->status_len ? r->status : "(connection closed)");
			report_fail(r, why);
		}
	}
}

/* ------------------------------------------------------------------ */
/* the loop */

/* Every report interval: one queues line to every watcher and the POST to
 * --report-url. The JSON is built once and only when someone wants it. */
static void ctl_tick(struct control *ctl)
{
	struct list *pos, *tmp;
	bool watchers = false;
	json_t *j;
	char *line;

	list_for_each_safe(pos, tmp, &ctl->conns) {
		struct ctl_conn *c = container_of(pos, struct ctl_conn, node);
		if ((c->flags & (CC_F_WATCH | CC_F_DEAD)) == CC_F_WATCH)
			watchers = true;
	}
	if (!watchers && !ctl->has_report)
		return;
	j = ctl_queues_json(ctl->p);
	line = j ? json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
	json_decref(j);
	if (!line)
		return;
	list_for_each_safe(pos, tmp, &ctl->conns) {
		struct ctl_conn *c = container_of(pos, struct ctl_conn, node);
		if ((c->flags & (CC_F_WATCH | CC_F_DEAD)) == CC_F_WATCH) {
			conn_chunk(c, line, strlen(line));
			conn_flush(c);
		}
	}
	if (ctl->has_report)
		report_start(&ctl->report, line, ctl->report_ms);
	free(line);
}

/* Grows the poll arrays to hold n entries. 0 or -ENOMEM. */
static int ctl_poll_reserve(struct control *ctl, size_t n)
{
	struct pollfd *pf;
	struct ctl_conn **pc;

	if (n <= ctl->pcap)
		return 0;
	pf = mi_realloc(ctl->pfds, n * sizeof(*pf));
	if (!pf)
		return -ENOMEM;
	ctl->pfds = pf;
	pc = mi_realloc(ctl->pconns, n * sizeof(*pc));
	if (!pc)
		return -ENOMEM;
	ctl->pconns = pc;
	ctl->pcap = n;
	return 0;
}

/* The control thread: one poll() over the wake eventfd, the listeners, the
 * report socket and every connection; the report timer is the poll timeout.
 * Connections are freed only at the top of an iteration. Returns when
 * control_stop() sets ctl->stop and wakes it. */
static void *ctl_thread(void *arg)
{
	struct control *ctl = arg;
	struct report *rep = &ctl->report;

	ctl->next_report_ms = now_ms() + ctl->report_ms;
	while (!atomic_load(&ctl->stop)) {
		struct list *pos, *tmp;
		size_t n = 0, first_conn;
		int idx_unix = -1, idx_admin = -1, idx_report = -1, timeout, rc;
		uint64_t now = now_ms(), wake;

		if (now >= ctl->next_report_ms) {
			ctl_tick(ctl);
			ctl->next_report_ms += ctl->report_ms;
			if (ctl->next_report_ms <= now)
				ctl->next_report_ms = now + ctl->report_ms;
		}
		if (rep->phase != REPORT_IDLE && now >= rep->deadline_ms)
			report_fail(rep, "timed out");
		/* Safe point: nothing below holds a conn across this. */
		list_for_each_safe(pos, tmp, &ctl->conns) {
			struct ctl_conn *c = container_of(pos, struct ctl_conn, node);
			if (!(c->flags & CC_F_WATCH) && now - c->last_ms > CTL_IDLE_MS)
				c->flags |= CC_F_DEAD;
			if (c->flags & CC_F_DEAD)
				conn_free(ctl, c);
		}
		if (ctl_poll_reserve(ctl, 4 + ctl->nconns)) {
			/* Nothing to do but wait for memory. */
			usleep(10000);
			continue;
		}
		ctl->pfds[n++] = (struct pollfd){ .fd = ctl->wake_fd, .events = POLLIN };
		if (ctl->unix_fd >= 0) {
			idx_unix = (int)n;
			ctl->pfds[n++] = (struct pollfd){ .fd = ctl->unix_fd, .events = POLLIN };
		}
		if (ctl->admin_fd >= 0) {
			idx_admin = (int)n;
			ctl->pfds[n++] = (struct pollfd){ .fd = ctl->admin_fd, .events = POLLIN };
		}
		if (rep->phase != REPORT_IDLE) {
			idx_report = (int)n;
			ctl->pfds[n++] = (struct pollfd){
				.fd = rep->fd,
				.events = rep->phase == REPORT_READING ? POLLIN : POLLOUT };
		}
		first_conn = n;
		list_for_each_safe(pos, tmp, &ctl->conns) {
			struct ctl_conn *c = container_of(pos, struct ctl_conn, node);
			short ev = 0;
			/* A closing conn reads no more (a half-closed peer
			 * would make POLLIN fire forever). */
			if (c->out.len - c->out_off < CTL_OUT_HIGH && !(c->flags & CC_F_CLOSE))
				ev |= POLLIN;
			if (c->out_off < c->out.len)
				ev |= POLLOUT;
			ctl->pconns[n] = c;
			ctl->pfds[n++] = (struct pollfd){ .fd = c->fd, .events = ev };
		}
		wake = ctl->next_report_ms;
		if (rep->phase != REPORT_IDLE && rep->deadline_ms < wake)
			wake = rep->deadline_ms;
		timeout = wake > now ? (int)(wake - now) : 0;
		if (timeout > 1000)
			timeout = 1000; /* idle timeouts are checked at least every second */
		rc = poll(ctl->pfds, (nfds_t)n, timeout);
		if (rc < 0) {
			if (errno != EINTR) {
				fprintf(stderr, "ringroute: control: poll: %s\n", strerror(errno));
				usleep(10000);
			}
			continue;
		}
		if (ctl->pfds[0].revents & POLLIN) {
			uint64_t v;
			if (read(ctl->wake_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
				fprintf(stderr, "ringroute: control: wake: %s\n", strerror(errno));
		}
		if (atomic_load(&ctl->stop))
			break;
		if (idx_report >= 0 && ctl->pfds[idx_report].revents)
			report_step(rep, ctl->pfds[idx_report].revents);
		for (size_t i = first_conn; i < n; i++) {
			struct ctl_conn *c = ctl->pconns[i];
			short re = ctl->pfds[i].revents;
			if (!re || (c->flags & CC_F_DEAD))
				continue;
			if (re & (POLLIN | POLLHUP | POLLERR))
				conn_read(ctl, c);
			if (!(c->flags & CC_F_DEAD)) {
				size_t before = c->out.len - c->out_off;
				conn_flush(c);
				/* Output drained below the mark: parse what waits. */
				if (before >= CTL_OUT_HIGH && c->out.len - c->out_off < CTL_OUT_HIGH &&
				    c->in.len) {
					conn_parse(ctl, c);
					conn_flush(c);
				}
			}
		}
		/* New conns last: pconns[] above must not see a freed conn. */
		if (idx_unix >= 0 && (ctl->pfds[idx_unix].revents & POLLIN))
			ctl_accept(ctl, ctl->unix_fd, false);
		if (idx_admin >= 0 && (ctl->pfds[idx_admin].revents & POLLIN))
			ctl_accept(ctl, ctl->admin_fd, true);
	}
	return NULL;
}

/* ------------------------------------------------------------------ */
/* setup */

/* Binds the Unix control socket at path, mode 0600. A socket file left by a
 * dead process is replaced; a live one (something accepts on it) or a path
 * that is not a socket is refused. Returns the listening fd or -errno. */
static int ctl_listen_unix(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	mode_t old;
	int fd, rc;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "ringroute: --control %s: path too long (max %zu bytes)\n", path,
			sizeof(sa.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (lstat(path, &st) == 0) {
		int probe;
		if (!S_ISSOCK(st.st_mode)) {
			fprintf(stderr, "ringroute: --control %s: exists and is not a socket\n", path);
			rc = -EEXIST;
			goto fail_close;
		}
		probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			close(probe);
			fprintf(stderr, "ringroute: --control %s: another process is serving it\n",
				path);
			rc = -EADDRINUSE;
			goto fail_close;
		}
		if (probe >= 0)
			close(probe);
		unlink(path); /* stale */
	}
	/* The socket must never be reachable with looser permissions than
	 * 0600, not even between bind and chmod: narrow the umask around the
	 * bind. umask is per process, but only ever narrowed here, for an
	 * instant, and every other file this process makes is 0600 anyway. */
	old = umask(0177);
	rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (rc) {
		rc = -errno;
		fprintf(stderr, "ringroute: --control %s: bind: %s\n", path, strerror(-rc));
		goto fail_close;
	}
	if (chmod(path, 0600) || listen(fd, 64)) {
		rc = -errno;
		fprintf(stderr, "ringroute: --control %s: %s\n", path, strerror(-rc));
		goto fail_unlink;
	}
	return fd;
fail_unlink:
	unlink(path);
fail_close:
	close(fd);
	return rc;
}

/* Binds the admin TCP listener on "ADDR:PORT" (IPv4 literal, localhost or
 * empty for any; port 0 picks one). Returns the fd (and *port) or -errno. */
static int ctl_listen_tcp(const char *spec, uint16_t *port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	const char *colon = strrchr(spec, ':');
	char host[64], *end;
	unsigned long pt;
	socklen_t sl = sizeof(sa);
	int fd, one = 1, rc;

	if (!colon || (size_t)(colon - spec) >= sizeof(host))
		goto bad;
	memcpy(host, spec, (size_t)(colon - spec));
	host[colon - spec] = '\0';
	pt = strtoul(colon + 1, &end, 10);
	if (!colon[1] || *end || pt > 65535)
		goto bad;
	sa.sin_port = htons((uint16_t)pt);
	if (!host[0] || !strcmp(host, "*"))
		sa.sin_addr.s_addr = htonl(INADDR_ANY);
	else if (!strcmp(host, "localhost"))
		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	else if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
		goto bad;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 64) ||
	    getsockname(fd, (struct sockaddr *)&sa, &sl)) {
		rc = -errno;
		fprintf(stderr, "ringroute: --admin %s: %s\n", spec, strerror(-rc));
		close(fd);
		return rc;
	}
	*port = ntohs(sa.sin_port);
	return fd;
bad:
	fprintf(stderr, "ringroute: --admin: expected ADDR:PORT, got '%s'\n", spec);
	return -EINVAL;
}

/* Frees everything control_start may have set up; safe on a partial one.
 * The thread must not be running. */
static void ctl_destroy(struct control *ctl)
{
	struct list *pos, *tmp;

	list_for_each_safe(pos, tmp, &ctl->conns)
		conn_free(ctl, container_of(pos, struct ctl_conn, node));
	report_close(&ctl->report);
	buf_free(&ctl->report.req);
	mi_free(ctl->report.url);
	mi_free(ctl->report.host);
	mi_free(ctl->report.path);
	if (ctl->admin_fd >= 0)
		close(ctl->admin_fd);
	if (ctl->unix_fd >= 0) {
		close(ctl->unix_fd);
		unlink(ctl->unix_path);
	}
	mi_free(ctl->unix_path);
	if (ctl->wake_fd >= 0)
		close(ctl->wake_fd);
	mi_free(ctl->pfds);
	mi_free(ctl->pconns);
	pthread_mutex_destroy(&ctl->change_lock);
	mi_free(ctl);
}

/* See control.h. Sets up in order: state, wake eventfd, report URL, Unix
 * socket, admin port, thread; a failure unwinds what was done (ctl_destroy
 * copes with a partial setup). */
int control_start(struct proxy *p, struct control **out, uint16_t *admin_port)
{
	struct control *ctl;
	int rc;

	*out = NULL;
	*admin_port = 0;
	ctl = mi_zalloc(sizeof(*ctl));
	if (!ctl)
		return -ENOMEM;
	ctl->p = p;
	ctl->wake_fd = ctl->unix_fd = ctl->admin_fd = -1;
	ctl->report.fd = -1;
	list_init(&ctl->conns);
	pthread_mutex_init(&ctl->change_lock, NULL);
	ctl->report_ms = p->opt.report_interval_ms ? p->opt.report_interval_ms : 1000;
	llhttp_settings_init(&ctl->settings);
	ctl->settings.on_message_begin = on_message_begin;
	ctl->settings.on_url = on_url;
	ctl->settings.on_header_field = on_header_bytes;
	ctl->settings.on_header_value = on_header_bytes;
	ctl->settings.on_headers_complete = on_headers_complete;
	ctl->settings.on_body = on_body;
	ctl->settings.on_message_complete = on_message_complete;

	ctl->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (ctl->wake_fd < 0) {
		rc = -errno;
		fprintf(stderr, "ringroute: control: eventfd: %s\n", strerror(-rc));
		goto fail;
	}
	if (p->opt.report_url) {
		rc = report_parse_url(&ctl->report, p->opt.report_url);
		if (rc) {
			fprintf(stderr,
				"ringroute: --report-url: expected http://HOST[:PORT]/PATH with an "
				"IPv4 address or localhost, got '%s'\n",
				p->opt.report_url);
			goto fail;
		}
		ctl->has_report = true;
	}
	if (p->opt.control_path) {
		ctl->unix_path = mi_strdup(p->opt.control_path);
		if (!ctl->unix_path) {
			rc = -ENOMEM;
			goto fail;
		}
		rc = ctl_listen_unix(p->opt.control_path);
		if (rc < 0)
			goto fail;
		ctl->unix_fd = rc;
	}
	if (p->opt.admin) {
		rc = ctl_listen_tcp(p->opt.admin, admin_port);
		if (rc < 0)
			goto fail;
		ctl->admin_fd = rc;
	}
	rc = -pthread_create(&ctl->thread, NULL, ctl_thread, ctl);
	if (rc) {
		fprintf(stderr, "ringroute: control: cannot start thread: %s\n", strerror(-rc));
		goto fail;
	}
	ctl->thread_started = true;
	*out = ctl;
	return 0;
fail:
	*admin_port = 0;
	ctl_destroy(ctl);
	return rc;
}

/* See control.h. */
void control_stop(struct control *ctl)
{
	uint64_t one = 1;

	if (!ctl)
		return;
	atomic_store(&ctl->stop, 1);
	if (write(ctl->wake_fd, &one, sizeof(one)) < 0)
		fprintf(stderr, "ringroute: control: wake: %s\n", strerror(errno));
	if (ctl->thread_started)
		pthread_join(ctl->thread, NULL);
	ctl_destroy(ctl);
}
