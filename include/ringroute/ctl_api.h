/* ctl_api: the control API (README "Changing it live"): which resource a
 * request names and which methods it takes, the whole-document edits
 * behind every change, their validation by config_parse() and their
 * application by proxy_change(). It speaks in structures: ctl_http hands it
 * a parsed request (struct ctl_req) and serialises the answer it gets back
 * (struct ctl_resp); no socket or byte stream reaches this module.
 *
 * A change (PUT/DELETE, or a SIGHUP reload) is a read-modify-write of the
 * whole document: the current snapshot's canonical JSON is loaded, edited,
 * dumped and validated as a whole, then made current. change_lock is held
 * from the read to the apply, so two changes never interleave and a failed
 * one leaves nothing behind. */
#ifndef RINGROUTE_CTL_API_H
#define RINGROUTE_CTL_API_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "ringroute/strbuf.h"

struct proxy;

struct ctl_api {
	struct proxy *p;
	pthread_mutex_t change_lock;  /* held for a whole read-modify-write */
};

/* What the serving side reports about itself in GET /v1/stats ("control"). */
struct ctl_server_stats {
	unsigned conns;               /* open control/admin connections */
	unsigned watchers;            /* of which streaming /v1/queues?watch=1 */
	bool has_report;              /* --report-url given */
	uint64_t reports_sent;        /* reports answered 2xx */
	uint64_t reports_failed;      /* reports refused, timed out or non-2xx */
};

/* Request flags. */
enum {
	CTL_REQ_F_ADMIN = 1u << 0,    /* from the admin port: read-only resources only */
};

/* One complete request, borrowed for the duration of ctl_api_handle(). */
struct ctl_req {
	const char *method;           /* "GET", "PUT", ... (llhttp's names) */
	const char *target;           /* request target: path and query */
	size_t target_len;
	const char *body;             /* may be NULL when body_len is 0 */
	size_t body_len;
	unsigned flags;               /* CTL_REQ_F_* */
	const struct ctl_server_stats *server; /* for /v1/stats; may be NULL */
};

/* Response flags. */
enum {
	CTL_RESP_F_NO_BODY = 1u << 0, /* HEAD: send the head only (Content-Length of body) */
	CTL_RESP_F_WATCH   = 1u << 1, /* start a queues watch stream; status/body unused */
};

/* One answer. The body is owned: ctl_api_resp_free() it. */
struct ctl_resp {
	int status;
	const char *ctype;            /* static string */
	char extra[128];              /* more header lines, each ending in CRLF, or "" */
	struct strbuf body;
	unsigned flags;               /* CTL_RESP_F_* */
};

/* Sets up api for p (which must outlive it). 0 or -errno. */
int ctl_api_init(struct ctl_api *api, struct proxy *p);
void ctl_api_destroy(struct ctl_api *api);

/* Answers req: routes it, performs the change it asks for (serialised with
 * every other change), or reads the state it asks for. Returns 0 with *resp
 * filled (any status, 2xx to 5xx: the caller sends it, then
 * ctl_api_resp_free()s it), or -ENOMEM when not even an error answer could
 * be built (resp is empty: drop the connection). Only reads of the proxy's
 * state and changes touch api->p: an unknown resource, a wrong method or a
 * bad body is answered without it. */
int ctl_api_handle(struct ctl_api *api, const struct ctl_req *req, struct ctl_resp *resp);

/* Fills resp with {"error": message} and status (for errors found before a
 * request reaches the API: 400 malformed, 413, 431). 0 or -ENOMEM (resp is
 * empty). */
int ctl_api_error(struct ctl_resp *resp, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void ctl_api_resp_free(struct ctl_resp *resp);

/* The queues view, one JSON line without the newline:
 * {"backends": {name: {queued, ongoing, replicas}}, "version": N, "time": unix s}.
 * Returns a string to free() (jansson's allocator), or NULL on ENOMEM. */
char *ctl_api_queues_line(struct ctl_api *api);

/* Reloads the config file at path as one change (SIGHUP), serialised with
 * the changes made through the API. 0 when the new snapshot is current, or
 * -errno with err set (see control_reload). Callable from any thread. */
int ctl_api_reload(struct ctl_api *api, const char *path, char *err, size_t errlen);

/* The pure core of a change, without a proxy (fuzz target, unit tests):
 * routes the request like ctl_api_handle, and for a change applies it to
 * *doc (owned by the caller, replaced for PUT /v1/config) and validates the
 * result with config_parse(reg = NULL). target/body need no NUL.
 * Returns the HTTP status the server would answer: 200 (a valid change
 * applied to *doc, or a read, which changes nothing), 400 (bad body, or
 * the result does not validate), 404 (no such resource, or the thing to
 * change is missing), 405 (method), 409 (backend still in use), 500 (out of
 * memory). On any status but 200 err holds the message; *doc may then hold
 * a partial edit (the server throws its copy away). */
int ctl_api_edit_doc(json_t **doc, const char *method, const char *target, size_t target_len,
		     const char *body, size_t body_len, char *err, size_t errlen);

#endif
