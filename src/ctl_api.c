/* ctl_api: see ctl_api.h. Every request goes through api_plan(), which
 * decides from the method, the target and the body alone what the request
 * is: an error answer, a read, or an edit of the document. The server
 * (ctl_api_handle) and the pure entry point (ctl_api_edit_doc) both start
 * there and both apply edits with doc_change(), so there is one copy of the
 * routing and of the edit rules. */
#include "ringroute/ctl_api.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ringroute/alloc.h"
#include "ringroute/config.h"
#include "ringroute/service.h"
#include "ringroute/log.h"
#include "ringroute/prom.h"
#include "ringroute/proxy.h"

#define API_MAX_SEGS 6
#define API_ERR_LEN  1024

/* ------------------------------------------------------------------ */
/* responses */

static void resp_init(struct ctl_resp *resp, int status, const char *ctype)
{
	memset(resp, 0, sizeof(*resp));
	resp->status = status;
	resp->ctype = ctype;
}

void ctl_api_resp_free(struct ctl_resp *resp)
{
	sb_free(&resp->body);
}

/* Fills resp with j (reference stolen) as one JSON line. 0 or -ENOMEM
 * (j NULL counts as ENOMEM: it was a failed json_pack). */
static int resp_json(struct ctl_resp *resp, int status, json_t *j)
{
	char *text = j ? json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
	int rc;

	json_decref(j);
	resp_init(resp, status, "application/json");
	if (!text)
		return -ENOMEM;
	rc = sb_puts(&resp->body, text) || sb_put(&resp->body, "\n", 1) ? -ENOMEM : 0;
	free(text);
	if (rc)
		sb_free(&resp->body);
	return rc;
}

/* See ctl_api.h. */
int ctl_api_error(struct ctl_resp *resp, int status, const char *fmt, ...)
{
	char msg[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return resp_json(resp, status, json_pack("{s:s}", "error", msg));
}

/* ------------------------------------------------------------------ */
/* routes */

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

/* Percent-decodes [s, s+n) into a new string (mi_free it); NULL if
 * malformed (bad escape, %00, a raw NUL), empty or out of memory. */
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
		} else if (s[i] == '\0') {
			mi_free(out);
			return NULL;
		} else {
			*o++ = s[i];
		}
	}
	*o = '\0';
	return out;
}

/* Splits the path (before '?') into at most API_MAX_SEGS raw segments.
 * Returns the count, or -1 if there are too many or one is empty. */
static int split_path(const char *path, size_t len, const char *seg[], size_t seglen[])
{
	int n = 0;
	size_t i;

	if (len == 0 || path[0] != '/')
		return -1;
	i = 1;
	if (len == 1)
		return 0;
	while (i <= len) {
		size_t j = i;
		while (j < len && path[j] != '/')
			j++;
		if (j == i || n == API_MAX_SEGS)
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

/* True if the query string [q, q+n) (without '?') asks for watch=1/true. */
static bool query_watch(const char *q, size_t n)
{
	const char *end = q + n;

	while (q && q < end) {
		const char *amp = memchr(q, '&', (size_t)(end - q));
		size_t l = amp ? (size_t)(amp - q) : (size_t)(end - q);
		if ((l == 7 && !memcmp(q, "watch=1", 7)) || (l == 10 && !memcmp(q, "watch=true", 10)) ||
		    (l == 5 && !memcmp(q, "watch", 5)))
			return true;
		q = amp ? amp + 1 : NULL;
	}
	return false;
}

enum route_kind {
	R_NONE = 0,
	R_HEALTHZ,
	R_READYZ,
	R_METRICS,
	R_STATS,
	R_QUEUES,
	R_CONFIG,
	R_BACKEND,
	R_REPLICA,
	R_REPLICA_DRAIN,   /* .../replicas/ID/drain or /enable (route.drain) */
	R_ENDPOINT,
};

struct route {
	enum route_kind kind;
	char *name;   /* decoded: backend / endpoint (mi_*) */
	char *id;     /* decoded: replica id (mi_*) */
	bool watch;
	bool drain;   /* R_REPLICA_DRAIN: drain (true) or enable */
};

static void route_free(struct route *r)
{
	mi_free(r->name);
	r->name = NULL;
	mi_free(r->id);
	r->id = NULL;
}

/* Matches the request target [url, url+len) to a resource. r->kind stays
 * R_NONE when nothing matches (or on ENOMEM, answered the same: 404). */
static void route_match(const char *url, size_t len, struct route *r)
{
	const char *q = memchr(url, '?', len);
	size_t plen = q ? (size_t)(q - url) : len;
	const char *seg[API_MAX_SEGS];
	size_t sl[API_MAX_SEGS];
	int n = split_path(url, plen, seg, sl);

	memset(r, 0, sizeof(*r));
	if (n == 1 && seg_is(seg[0], sl[0], "healthz"))
		r->kind = R_HEALTHZ;
	else if (n == 1 && seg_is(seg[0], sl[0], "readyz"))
		r->kind = R_READYZ;
	else if (n == 1 && seg_is(seg[0], sl[0], "metrics"))
		r->kind = R_METRICS;
	if (n < 2 || !seg_is(seg[0], sl[0], "v1"))
		return;
	if (n == 2 && seg_is(seg[1], sl[1], "stats")) {
		r->kind = R_STATS;
	} else if (n == 2 && seg_is(seg[1], sl[1], "queues")) {
		r->kind = R_QUEUES;
		r->watch = q && query_watch(q + 1, len - plen - 1);
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
	} else if (n == 6 && seg_is(seg[1], sl[1], "backends") &&
		   seg_is(seg[3], sl[3], "replicas") &&
		   (seg_is(seg[5], sl[5], "drain") || seg_is(seg[5], sl[5], "enable"))) {
		r->name = url_decode(seg[2], sl[2]);
		r->id = url_decode(seg[4], sl[4]);
		r->drain = seg_is(seg[5], sl[5], "drain");
		if (r->name && r->id)
			r->kind = R_REPLICA_DRAIN;
		else
			route_free(r);
	} else if (n == 3 && seg_is(seg[1], sl[1], "endpoints")) {
		r->name = url_decode(seg[2], sl[2]);
		if (r->name)
			r->kind = R_ENDPOINT;
	}
}

/* ------------------------------------------------------------------ */
/* document edits */

/* The edits a change can make to the document. */
enum edit_kind {
	EDIT_CONFIG,       /* replace the whole document */
	EDIT_BACKEND_PUT,
	EDIT_BACKEND_DEL,
	EDIT_REPLICA_PUT,
	EDIT_REPLICA_DEL,
	EDIT_REPLICA_DRAIN, /* value: json true (drain) or false (enable) */
	EDIT_ENDPOINT_PUT,
	EDIT_ENDPOINT_DEL,
};

struct edit {
	enum edit_kind kind;
	const char *name;     /* backend or endpoint */
	const char *id;       /* replica */
	json_t *value;        /* borrowed: the new document / object / address */
};

/* Sets "drain" of replica id in reps to v (true/false), turning the string
 * form into the object form; the rest of the entry is kept as written and
 * config_parse validates it. The snapshot's canonical JSON turns an entry
 * that says nothing beyond its address back into the string form. */
static int replica_set_drain(json_t *reps, const char *id, json_t *v, char *err, size_t errlen)
{
	json_t *cur = json_object_get(reps, id);

	if (json_is_string(cur)) {
		json_t *o = json_pack("{s:O}", "address", cur);
		if (!o || json_object_set_new(reps, id, o))
			goto nomem;
		cur = o;
	}
	if (!json_is_object(cur)) {
		snprintf(err, errlen, "replicas.%s: must be a string or an object", id);
		return -EINVAL;
	}
	if (json_object_set(cur, "drain", v))
		goto nomem;
	return 0;
nomem:
	snprintf(err, errlen, "out of memory");
	return -ENOMEM;
}

/* Returns the endpoint (and "traffic"/"shadow" in *where) of doc that names
 * backend, or NULL when none does. */
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

/* The object doc[key], created empty when absent and create is set.
 * Returns it, or NULL with err set: -EINVAL (*rc) when doc or the member is
 * not an object, -ENOMEM. A missing member without create is NULL with
 * *rc = 0 (the caller decides: usually "no such ..."). */
static json_t *doc_object(json_t *doc, const char *key, bool create, int *rc, const char *path,
			  char *err, size_t errlen)
{
	json_t *o = json_object_get(doc, key);

	*rc = 0;
	if (!json_is_object(doc)) {
		snprintf(err, errlen, "%s: must be a JSON object", path);
		*rc = -EINVAL;
		return NULL;
	}
	if (o && !json_is_object(o)) {
		snprintf(err, errlen, "%s.%s: must be a JSON object", path, key);
		*rc = -EINVAL;
		return NULL;
	}
	if (!o && create) {
		o = json_object();
		if (!o || json_object_set_new(doc, key, o)) {
			snprintf(err, errlen, "out of memory");
			*rc = -ENOMEM;
			return NULL;
		}
	}
	return o;
}

/* Applies e to *doc (which the caller owns; EDIT_CONFIG replaces it).
 * Returns 0, -ENOENT (the thing to change is missing), -EBUSY (a backend
 * still in use), -EINVAL (malformed document or value) or -ENOMEM, with
 * err set. Nothing is changed unless 0 is returned. */
static int edit_apply(json_t **doc, const struct edit *e, char *err, size_t errlen)
{
	bool put = e->kind == EDIT_BACKEND_PUT || e->kind == EDIT_ENDPOINT_PUT ||
		   e->kind == EDIT_REPLICA_PUT;
	json_t *bes, *eps, *b, *reps;
	const char *user, *where = NULL;
	int rc;

	if (e->kind == EDIT_CONFIG) {
		json_decref(*doc);
		*doc = json_incref(e->value);
		return 0;
	}
	bes = doc_object(*doc, "backends", put && e->kind == EDIT_BACKEND_PUT, &rc, "config", err,
			 errlen);
	if (rc)
		return rc;
	eps = doc_object(*doc, "endpoints", e->kind == EDIT_ENDPOINT_PUT, &rc, "config", err,
			 errlen);
	if (rc)
		return rc;
	switch (e->kind) {
	case EDIT_CONFIG:
		break;
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
	case EDIT_REPLICA_DRAIN:
		b = json_object_get(bes, e->name);
		if (!b) {
			snprintf(err, errlen, "backends.%s: no such backend", e->name);
			return -ENOENT;
		}
		if (!json_is_object(b)) {
			snprintf(err, errlen, "backends.%s: must be a JSON object", e->name);
			return -EINVAL;
		}
		reps = json_object_get(b, "replicas");
		if (reps && !json_is_object(reps)) {
			snprintf(err, errlen, "backends.%s.replicas: must be a JSON object", e->name);
			return -EINVAL;
		}
		if (e->kind == EDIT_REPLICA_PUT) {
			if (!reps) {
				reps = json_object();
				if (!reps || json_object_set_new(b, "replicas", reps))
					goto nomem;
			}
			if (json_object_set(reps, e->id, e->value))
				goto nomem;
			return 0;
		}
		if (!json_object_get(reps, e->id)) {
			snprintf(err, errlen, "backends.%s.replicas.%s: no such replica", e->name, e->id);
			return -ENOENT;
		}
		if (e->kind == EDIT_REPLICA_DRAIN)
			return replica_set_drain(reps, e->id, e->value, err, errlen);
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

/* Applies e to *doc and validates the result as a whole with config_parse
 * (replica states from reg; NULL: private ones). Returns 0 and, when out is
 * not NULL, *out = the new snapshot (the caller's reference; else it is
 * dropped); or -errno as edit_apply, or -EINVAL (the result does not
 * validate), or -ENOMEM, with err set. *doc is the caller's either way. */
static int doc_change(json_t **doc, const struct edit *e, struct replica_registry *reg,
		      struct config **out, char *err, size_t errlen)
{
	struct config *next = NULL;
	char *text;
	int rc;

	rc = edit_apply(doc, e, err, errlen);
	if (rc)
		return rc;
	if (!json_is_object(*doc)) {
		/* api_plan refuses such bodies already: never dump a non-object
		 * (json_dumps fails on it, which looks like ENOMEM). */
		snprintf(err, errlen, "body: must be a JSON object (the whole config)");
		return -EINVAL;
	}
	text = json_dumps(*doc, JSON_COMPACT | JSON_SORT_KEYS);
	if (!text) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	rc = config_parse(text, strlen(text), "config", reg, &next, err, errlen);
	free(text);
	if (rc) {
		strip_source(err, "config");
		return rc;
	}
	if (out)
		*out = next;
	else
		config_unref(next);
	return 0;
}

/* The HTTP status of a change's -errno. */
static int errno_status(int rc)
{
	switch (rc) {
	case 0: return 200;
	case -EINVAL: return 400;
	case -ENOENT: return 404;
	case -EBUSY: return 409;
	default: return 500;
	}
}

/* ------------------------------------------------------------------ */
/* planning: what a request asks for */

enum api_method { M_OTHER = 0, M_GET, M_HEAD, M_PUT, M_DELETE, M_POST };

static enum api_method method_of(const char *m)
{
	if (!strcmp(m, "GET"))
		return M_GET;
	if (!strcmp(m, "HEAD"))
		return M_HEAD;
	if (!strcmp(m, "PUT"))
		return M_PUT;
	if (!strcmp(m, "DELETE"))
		return M_DELETE;
	if (!strcmp(m, "POST"))
		return M_POST;
	return M_OTHER;
}

enum plan_kind {
	PLAN_ERROR,   /* answer status with err (and Allow: allow for 405) */
	PLAN_READ,    /* a GET/HEAD of route r */
	PLAN_EDIT,    /* perform edit e */
};

struct plan {
	enum plan_kind kind;
	enum api_method m;
	const char *method;
	struct route r;
	struct edit e;
	json_t *body;          /* owned: the parsed body, e.value borrows from it */
	int status;            /* PLAN_ERROR */
	const char *allow;     /* PLAN_ERROR 405: the methods allowed */
	char err[API_ERR_LEN];
};

static void plan_free(struct plan *pl)
{
	route_free(&pl->r);
	json_decref(pl->body);
	pl->body = NULL;
}

/* Ends planning with an error answer. Returns PLAN_ERROR. */
__attribute__((format(printf, 3, 4)))
static enum plan_kind plan_fail(struct plan *pl, int status, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(pl->err, sizeof(pl->err), fmt, ap);
	va_end(ap);
	pl->status = status;
	return pl->kind = PLAN_ERROR;
}

static enum plan_kind plan_not_allowed(struct plan *pl, const char *allow)
{
	pl->allow = allow;
	return plan_fail(pl, 405, "method %s not allowed here (allowed: %s)", pl->method, allow);
}

/* Parses the body as JSON (any value) into pl->body. 0, or -1 after
 * plan_fail (400 "body:line:column: reason"). */
static int plan_body(struct plan *pl, const char *body, size_t body_len)
{
	json_error_t jerr;

	pl->body = json_loadb(body ? body : "", body_len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES,
			      &jerr);
	if (!pl->body) {
		plan_fail(pl, 400, "body:%d:%d: %s", jerr.line, jerr.column, jerr.text);
		return -1;
	}
	return 0;
}

/* Body of PUT /v1/backends/B/replicas/R: a JSON string or
 * {"address": string, "weight": N, "drain": BOOL} (the document's entry,
 * stored as given: config_parse checks weight and drain). Sets
 * pl->e.value, or plan_fail()s. */
static enum plan_kind plan_replica_put(struct plan *pl)
{
	static const char *const keys[] = { "address", "weight", "drain", NULL };
	json_t *j = pl->body, *addr;
	const char *key;
	json_t *v;

	addr = json_is_object(j) ? json_object_get(j, "address") : j;
	if (json_is_object(j)) {
		json_object_foreach(j, key, v) {
			size_t i;
			for (i = 0; keys[i] && strcmp(key, keys[i]); i++)
				;
			if (!keys[i])
				return plan_fail(pl, 400,
						 "body.%s: unknown key (expected \"address\", "
						 "\"weight\", \"drain\")",
						 key);
		}
	}
	if (!json_is_string(addr))
		return plan_fail(pl, 400,
				 "%s: must be a string \"host:port\" or an object {\"address\": \"host:port\"}",
				 json_is_object(j) ? "body.address" : "body");
	pl->e = (struct edit){ .kind = EDIT_REPLICA_PUT, .name = pl->r.name, .id = pl->r.id,
			       .value = json_object_size(j) > 1 ? j : addr };
	return pl->kind = PLAN_EDIT;
}

/* Decides what a request is from its method, target and body alone (no
 * proxy, no document): an error answer, a read of a resource or an edit.
 * admin: the admin port, where only reads of the read-only resources are
 * served. Fills *pl (plan_free() it in every case) and returns pl->kind. */
static enum plan_kind api_plan(const char *method, const char *target, size_t target_len,
			       const char *body, size_t body_len, bool admin, struct plan *pl)
{
	bool get;

	memset(pl, 0, sizeof(*pl));
	pl->method = method;
	pl->m = method_of(method);
	get = pl->m == M_GET || pl->m == M_HEAD;
	route_match(target, target_len, &pl->r);
	if (admin) {
		/* Read-only: every write is refused, whatever the path. */
		if (!get) {
			pl->allow = "GET, HEAD";
			return plan_fail(pl, 405,
					 "the admin port is read-only (method %s): changes go through "
					 "the control socket (--control)",
					 method);
		}
		if (pl->r.kind != R_HEALTHZ && pl->r.kind != R_READYZ && pl->r.kind != R_METRICS &&
		    pl->r.kind != R_STATS && pl->r.kind != R_QUEUES)
			return plan_fail(pl, 404,
					 "no such resource on the admin port: %.*s (serves /metrics, "
					 "/healthz, /readyz, /v1/stats, /v1/queues)",
					 (int)target_len, target);
	}
	switch (pl->r.kind) {
	case R_NONE:
		return plan_fail(pl, 404, "no such resource: %.*s", (int)target_len, target);
	case R_HEALTHZ:
	case R_READYZ:
	case R_METRICS:
	case R_STATS:
	case R_QUEUES:
		if (!get)
			return plan_not_allowed(pl, "GET, HEAD");
		return pl->kind = PLAN_READ;
	case R_CONFIG:
		if (get)
			return pl->kind = PLAN_READ;
		if (pl->m != M_PUT)
			return plan_not_allowed(pl, "GET, HEAD, PUT");
		if (plan_body(pl, body, body_len))
			return PLAN_ERROR;
		if (!json_is_object(pl->body))
			return plan_fail(pl, 400,
					 "body: must be a JSON object (the whole config, with "
					 "\"backends\" and \"endpoints\"), not %s",
					 json_is_null(pl->body) ? "null" :
					 json_is_array(pl->body) ? "an array" :
					 json_is_string(pl->body) ? "a string" :
					 json_is_boolean(pl->body) ? "a boolean" : "a number");
		pl->e = (struct edit){ .kind = EDIT_CONFIG, .value = pl->body };
		return pl->kind = PLAN_EDIT;
	case R_BACKEND:
	case R_ENDPOINT: {
		bool be = pl->r.kind == R_BACKEND;
		if (get)
			return pl->kind = PLAN_READ;
		if (pl->m == M_DELETE) {
			pl->e = (struct edit){ .kind = be ? EDIT_BACKEND_DEL : EDIT_ENDPOINT_DEL,
					       .name = pl->r.name };
			return pl->kind = PLAN_EDIT;
		}
		if (pl->m != M_PUT)
			return plan_not_allowed(pl, "GET, HEAD, PUT, DELETE");
		if (plan_body(pl, body, body_len))
			return PLAN_ERROR;
		if (!json_is_object(pl->body))
			return plan_fail(pl, 400, "body: must be a JSON object (the %s)",
					 be ? "backend" : "endpoint");
		pl->e = (struct edit){ .kind = be ? EDIT_BACKEND_PUT : EDIT_ENDPOINT_PUT,
				       .name = pl->r.name, .value = pl->body };
		return pl->kind = PLAN_EDIT;
	}
	case R_REPLICA:
		if (pl->m == M_DELETE) {
			pl->e = (struct edit){ .kind = EDIT_REPLICA_DEL, .name = pl->r.name,
					       .id = pl->r.id };
			return pl->kind = PLAN_EDIT;
		}
		if (pl->m != M_PUT)
			return plan_not_allowed(pl, "PUT, DELETE");
		if (plan_body(pl, body, body_len))
			return PLAN_ERROR;
		return plan_replica_put(pl);
	case R_REPLICA_DRAIN:
		if (pl->m != M_POST)
			return plan_not_allowed(pl, "POST");
		pl->e = (struct edit){ .kind = EDIT_REPLICA_DRAIN, .name = pl->r.name,
				       .id = pl->r.id,
				       .value = pl->r.drain ? json_true() : json_false() };
		return pl->kind = PLAN_EDIT;
	}
	return plan_fail(pl, 404, "no such resource: %.*s", (int)target_len, target);
}

/* ------------------------------------------------------------------ */
/* the pure entry point */

/* See ctl_api.h. */
int ctl_api_edit_doc(json_t **doc, const char *method, const char *target, size_t target_len,
		     const char *body, size_t body_len, char *err, size_t errlen)
{
	struct plan pl;
	int status;

	switch (api_plan(method, target, target_len, body, body_len, false, &pl)) {
	case PLAN_ERROR:
		snprintf(err, errlen, "%s", pl.err);
		status = pl.status;
		break;
	case PLAN_READ:
		status = 200;
		if (pl.r.kind == R_BACKEND || pl.r.kind == R_ENDPOINT) {
			const char *sec = pl.r.kind == R_BACKEND ? "backends" : "endpoints";
			if (!json_object_get(json_object_get(*doc, sec), pl.r.name)) {
				snprintf(err, errlen, "%s.%s: no such %s", sec, pl.r.name,
					 pl.r.kind == R_BACKEND ? "backend" : "endpoint");
				status = 404;
			}
		}
		break;
	case PLAN_EDIT:
	default:
		status = errno_status(doc_change(doc, &pl.e, NULL, NULL, err, errlen));
		break;
	}
	plan_free(&pl);
	return status;
}

/* ------------------------------------------------------------------ */
/* the server side: changes and reads of the proxy */

int ctl_api_init(struct ctl_api *api, struct proxy *p)
{
	int rc;

	api->p = p;
	rc = pthread_mutex_init(&api->change_lock, NULL);
	return -rc;
}

void ctl_api_destroy(struct ctl_api *api)
{
	pthread_mutex_destroy(&api->change_lock);
}

/* The current config version. */
static uint64_t api_version(struct proxy *p)
{
	struct config *c = proxy_config_get(p);
	uint64_t v = c->version;

	config_unref(c);
	return v;
}

static json_t *api_queues_json(struct proxy *p)
{
	json_t *bes = proxy_queues_json(p);

	if (!bes)
		return NULL;
	return json_pack("{s:o,s:I,s:I}", "backends", bes, "version", (json_int_t)api_version(p),
			 "time", (json_int_t)time(NULL));
}

/* See ctl_api.h. */
char *ctl_api_queues_line(struct ctl_api *api)
{
	json_t *j = api_queues_json(api->p);
	char *line = j ? json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;

	json_decref(j);
	return line;
}

/* One change against the proxy: read the current document, doc_change()
 * it, make the result current. Holds change_lock throughout. On success
 * returns 0 and *out = the new current snapshot (a reference of the
 * caller's); else -errno as doc_change, -EIO (the current document does
 * not load) or the -errno of proxy_change, with err set and nothing
 * changed. */
static int api_change(struct ctl_api *api, const struct edit *e, struct config **out, char *err,
		      size_t errlen)
{
	struct proxy *p = api->p;
	struct config *cur, *next = NULL;
	json_error_t jerr;
	json_t *doc;
	int rc;

	pthread_mutex_lock(&api->change_lock);
	cur = proxy_config_get(p);
	doc = json_loads(cur->json, 0, &jerr);
	config_unref(cur);
	if (!doc) {
		snprintf(err, errlen, "current config does not load: %s", jerr.text);
		rc = -EIO;
		proxy_count_change(p, false);
		goto out_unlock;
	}
	rc = doc_change(&doc, e, &p->registry, &next, err, errlen);
	if (rc) {
		proxy_count_change(p, false); /* refused: proxy_change never saw it */
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
			log_warn("control: %s", err);
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
	pthread_mutex_unlock(&api->change_lock);
	return rc;
}

/* See ctl_api.h. */
int ctl_api_reload(struct ctl_api *api, const char *path, char *err, size_t errlen)
{
	int rc;

	pthread_mutex_lock(&api->change_lock);
	rc = proxy_reload(api->p, path, err, errlen);
	pthread_mutex_unlock(&api->change_lock);
	return rc;
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

/* Performs an edit and answers 200 with the version (and the resource,
 * from the new snapshot), or the error. 0 or -ENOMEM (resp empty). */
static int api_edit(struct ctl_api *api, const struct edit *e, struct ctl_resp *resp)
{
	struct config *next = NULL;
	char err[API_ERR_LEN] = "";
	json_t *res;
	int rc = api_change(api, e, &next, err, sizeof(err));

	if (rc)
		return ctl_api_error(resp, errno_status(rc), "%s", err);
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
	return resp_json(resp, 200, res);
}

/* GET /v1/stats: the proxy's stats plus "control", what the server says
 * about itself (when it did). NULL on ENOMEM. */
static json_t *api_stats_json(struct ctl_api *api, const struct ctl_server_stats *st)
{
	json_t *j = proxy_stats_json(api->p);

	/* Lines the access log could not keep (accesslog.h); 0 without one. */
	if (j && json_object_set_new(j, "access_log_dropped",
				     json_integer((json_int_t)accesslog_dropped(api->p->alog)))) {
		json_decref(j);
		return NULL;
	}

	if (j && st &&
	    json_object_set_new(j, "control",
				json_pack("{s:I,s:I,s:b,s:I,s:I}", "connections", (json_int_t)st->conns,
					  "watchers", (json_int_t)st->watchers, "report",
					  st->has_report, "reports_sent",
					  (json_int_t)st->reports_sent, "reports_failed",
					  (json_int_t)st->reports_failed))) {
		json_decref(j);
		return NULL;
	}
	return j;
}

/* Answers a read (GET/HEAD) of route r. 0 or -ENOMEM (resp empty). */
static int api_read(struct ctl_api *api, const struct plan *pl, const struct ctl_req *req,
		    struct ctl_resp *resp)
{
	struct config *cur;
	char *text;
	json_t *v;
	uint64_t version;
	int rc;

	switch (pl->r.kind) {
	case R_HEALTHZ:
		return resp_json(resp, 200, json_pack("{s:b}", "ok", 1));
	case R_READYZ: {
		/* Liveness stays /healthz: a draining or starting proxy is
		 * alive, only not to be sent traffic. */
		char why[128];
		if (service_ready(api->p, why, sizeof(why)))
			return resp_json(resp, 200, json_pack("{s:b}", "ready", 1));
		return resp_json(resp, 503, json_pack("{s:b,s:s}", "ready", 0, "reason", why));
	}
	case R_METRICS:
		text = prom_metrics_text(api->p);
		if (!text)
			return ctl_api_error(resp, 500, "out of memory");
		resp_init(resp, 200, "text/plain; version=0.0.4; charset=utf-8");
		rc = sb_puts(&resp->body, text);
		mi_free(text);
		return rc;
	case R_STATS:
		return resp_json(resp, 200, api_stats_json(api, req->server));
	case R_QUEUES:
		if (pl->r.watch && pl->m == M_GET) {
			resp_init(resp, 200, "application/x-ndjson");
			resp->flags |= CTL_RESP_F_WATCH;
			return 0;
		}
		return resp_json(resp, 200, api_queues_json(api->p));
	case R_CONFIG:
		cur = proxy_config_get(api->p);
		resp_init(resp, 200, "application/json");
		snprintf(resp->extra, sizeof(resp->extra), "X-Ringroute-Version: %" PRIu64 "\r\n",
			 cur->version);
		rc = sb_puts(&resp->body, cur->json) || sb_put(&resp->body, "\n", 1) ? -ENOMEM : 0;
		config_unref(cur);
		if (rc) {
			sb_free(&resp->body);
			return ctl_api_error(resp, 500, "out of memory");
		}
		return 0;
	case R_BACKEND:
	case R_ENDPOINT: {
		bool be = pl->r.kind == R_BACKEND;
		const char *section = be ? "backends" : "endpoints", *kind = be ? "backend" : "endpoint";
		cur = proxy_config_get(api->p);
		v = snapshot_get(cur, section, pl->r.name);
		version = cur->version;
		config_unref(cur);
		if (!v)
			return ctl_api_error(resp, 404, "%s.%s: no such %s", section, pl->r.name, kind);
		return resp_json(resp, 200,
				 json_pack("{s:I,s:s,s:o}", "version", (json_int_t)version, "name",
					   pl->r.name, kind, v));
	}
	case R_NONE:
	case R_REPLICA:
	case R_REPLICA_DRAIN:
		break;
	}
	return ctl_api_error(resp, 500, "internal error: no reader for this resource");
}

/* See ctl_api.h. */
int ctl_api_handle(struct ctl_api *api, const struct ctl_req *req, struct ctl_resp *resp)
{
	struct plan pl;
	int rc;

	switch (api_plan(req->method, req->target, req->target_len, req->body, req->body_len,
			 (req->flags & CTL_REQ_F_ADMIN) != 0, &pl)) {
	case PLAN_ERROR:
		/* Only a write's body gets a 400 from planning: a refused change. */
		if (pl.status == 400)
			proxy_count_change(api->p, false);
		rc = ctl_api_error(resp, pl.status, "%s", pl.err);
		if (!rc && pl.allow)
			snprintf(resp->extra, sizeof(resp->extra), "Allow: %s\r\n", pl.allow);
		break;
	case PLAN_READ:
		rc = api_read(api, &pl, req, resp);
		break;
	case PLAN_EDIT:
	default:
		rc = api_edit(api, &pl.e, resp);
		break;
	}
	if (!rc && pl.m == M_HEAD)
		resp->flags |= CTL_RESP_F_NO_BODY;
	plan_free(&pl);
	if (rc)
		ctl_api_resp_free(resp);
	return rc;
}
