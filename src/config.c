/* Config snapshots: JSON document -> validated, immutable struct config.
 *
 * The snapshot is canonical: backends are ordered by name, replicas by id,
 * traffic/shadow entries by backend (so by name too) and endpoints by route
 * length, longest first, ties by route. The order of keys in the document
 * therefore never changes a routing decision, and config->json (written from
 * the snapshot, defaults filled in) parses back to an equal snapshot. */
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <llhttp.h>

#include "ringroute/addr.h"
#include "ringroute/config.h"
#include "ringroute/model.h"
#include "ringroute/multiplex.h"
#include "ringroute/prefix.h"
#include "ringroute/retry.h"

/* One place for defaults and bounds, shared by parsing and documentation. */
#define DEF_MAX_ONGOING     100
#define DEF_MAX_QUEUED      1024
#define DEF_QUEUE_TIMEOUT   5000
#define DEF_CONNECT_TIMEOUT 1000
#define DEF_REQUEST_TIMEOUT 60000
#define DEF_RETRIES         2
#define DEF_HC_INTERVAL     2000
#define MIN_HC_INTERVAL     100
#define DEF_RETRY_BUDGET    20
#define DEF_HC_RISE         2
#define DEF_HC_FALL         3
#define MAX_HC_STREAK       100
/* outlier_detection (docs/config.md): Envoy's defaults, except the percent
 * (Envoy's 10% would never eject one of the usual 2..9 replicas). */
#define DEF_OD_FAILURES     5
#define MAX_OD_FAILURES     1000
#define DEF_OD_BASE_MS      30000
#define DEF_OD_MAX_MS       300000
#define MAX_OD_MS           3600000
#define DEF_OD_PERCENT      50

/* Largest config file config_load_file() reads: a guard against pointing it
 * at something that is not a config, not a real limit. */
#define CONFIG_MAX_FILE (64u << 20)

/* llhttp method names, indexed by llhttp_method_t. Built from llhttp's own
 * table so a new llhttp cannot drift from it. */
static const struct {
	unsigned num;
	const char *name;
} method_names[] = {
#define RR_METHOD_ENTRY(NUM, NAME, STRING) { NUM, #STRING },
	HTTP_ALL_METHOD_MAP(RR_METHOD_ENTRY)
#undef RR_METHOD_ENTRY
};

/* Parsing context: where errors go and where states come from. */
struct parse_ctx {
	const char *source;
	char *err;
	size_t errlen;
	struct replica_registry *reg;
};

/* Writes "source: path: reason" into ctx->err. Always returns -EINVAL so a
 * caller can `return fail(...)`. */
__attribute__((format(printf, 3, 4)))
static int fail(struct parse_ctx *ctx, const char *path, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (!ctx->err || ctx->errlen == 0)
		return -EINVAL;
	n = snprintf(ctx->err, ctx->errlen, "%s: %s: ", ctx->source, path);
	if (n >= 0 && (size_t)n < ctx->errlen) {
		va_start(ap, fmt);
		vsnprintf(ctx->err + n, ctx->errlen - (size_t)n, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

/* Allocation failure: reported like any error, but as -ENOMEM. */
static int fail_nomem(struct parse_ctx *ctx, const char *path)
{
	fail(ctx, path, "out of memory");
	return -ENOMEM;
}

/* Joins "prefix.key" into buf. A path too long for buf is cut short with
 * "...": it only ever goes into a message. */
static const char *join(char *buf, size_t len, const char *prefix, const char *key)
{
	int n;

	if (prefix && *prefix)
		n = snprintf(buf, len, "%s.%s", prefix, key);
	else
		n = snprintf(buf, len, "%s", key);
	if ((n < 0 || (size_t)n >= len) && len > 4)
		memcpy(buf + len - 4, "...", 4);
	return buf;
}

#define PATH_MAX_LEN 512

/* Rejects any key of obj that is not in allowed (NULL terminated): a typo in
 * a key must fail loudly instead of silently taking the default. */
static int check_keys(struct parse_ctx *ctx, json_t *obj, const char *path,
		      const char *const *allowed)
{
	const char *key;
	json_t *val;
	char p[PATH_MAX_LEN];

	json_object_foreach(obj, key, val) {
		size_t i;
		for (i = 0; allowed[i]; i++)
			if (strcmp(key, allowed[i]) == 0)
				break;
		if (!allowed[i])
			return fail(ctx, join(p, sizeof(p), path, key), "unknown key");
	}
	return 0;
}

/* Reads an optional integer field key of obj into *out, checking
 * min <= value <= max; def when absent. 0 or -EINVAL. */
static int get_uint(struct parse_ctx *ctx, json_t *obj, const char *path, const char *key,
		    uint64_t min, uint64_t max, uint64_t def, uint64_t *out)
{
	json_t *v = json_object_get(obj, key);
	char p[PATH_MAX_LEN];
	json_int_t x;

	if (!v) {
		*out = def;
		return 0;
	}
	join(p, sizeof(p), path, key);
	if (!json_is_integer(v))
		return fail(ctx, p, "must be an integer >= %" PRIu64, min);
	x = json_integer_value(v);
	if (x < 0 || (uint64_t)x < min)
		return fail(ctx, p, "must be an integer >= %" PRIu64, min);
	if ((uint64_t)x > max)
		return fail(ctx, p, "must be an integer <= %" PRIu64, max);
	*out = (uint64_t)x;
	return 0;
}

static int get_u32(struct parse_ctx *ctx, json_t *obj, const char *path, const char *key,
		   uint32_t min, uint32_t def, uint32_t *out)
{
	uint64_t v;
	int rc = get_uint(ctx, obj, path, key, min, UINT32_MAX, def, &v);
	if (rc == 0)
		*out = (uint32_t)v;
	return rc;
}

/* Names (backends, replicas, endpoints) end up in registry keys and control
 * API paths, where '/' is a separator; control characters would end up in
 * logs and metrics labels. 1 if acceptable. */
static int name_ok(const char *s)
{
	if (!*s)
		return 0;
	for (; *s; s++)
		if (*s == '/' || (unsigned char)*s < 0x20 || *s == 0x7f)
			return 0;
	return 1;
}

/* 1 if s may go into a request line or header value as is: no controls,
 * no spaces (CR/LF would let a config inject headers). */
static int token_ok(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s <= 0x20 || *s == 0x7f)
			return 0;
	return 1;
}


/* Frees a snapshot whatever its stage of construction: every array is
 * calloc'ed with its count set right away, so NULL members are skipped. */
static void config_free(struct config *c)
{
	if (!c)
		return;
	for (size_t i = 0; c->backends && i < c->nbackends; i++) {
		struct backend_cfg *b = &c->backends[i];
		for (size_t j = 0; b->replicas && j < b->nreplicas; j++) {
			struct replica_cfg *r = &b->replicas[j];
			registry_replica_unref(r->state);
			free(r->id);
			free(r->spec_id);
			free(r->host);
			free(r->address);
		}
		free(b->replicas);
		registry_backend_unref(b->state);
		free(b->name);
		free(b->hc_path);
		free(b->load_queue_metric);
		free(b->load_kv_metric);
		free(b->model_rewrite);
	}
	free(c->backends);
	for (size_t i = 0; c->endpoints && i < c->nendpoints; i++) {
		struct endpoint_cfg *e = &c->endpoints[i];
		free(e->name);
		free(e->route);
		free(e->call_method);
		free(e->traffic);
		free(e->shadow);
		for (size_t j = 0; e->models && j < e->nmodels; j++)
			free(e->models[j]);
		free(e->models);
		free(e->model_header);
		free(e->priority_header);
		free(e->timeout_header);
		free(e->fairness_header);
		for (size_t j = 0; e->tenant_weights && j < e->ntenant_weights; j++)
			free(e->tenant_weights[j].name);
		free(e->tenant_weights);
	}
	free(c->endpoints);
	free(c->json);
	free(c);
}

/* See config.h. */
void config_unref(struct config *c)
{
	if (!c)
		return;
	uint32_t prev = atomic_fetch_sub(&c->refs, 1);
	assert(prev > 0);
	if (prev == 1)
		config_free(c);
}

static int cmp_str_ptr(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sorted copy of obj's keys (pointers into obj, valid while obj lives);
 * *n gets the count. NULL with *n == 0 for an empty object; NULL with
 * *n != 0 on allocation failure. */
static const char **sorted_keys(json_t *obj, size_t *n)
{
	const char **keys;
	const char *key;
	json_t *val;
	size_t i = 0;

	*n = json_object_size(obj);
	if (*n == 0)
		return NULL;
	keys = calloc(*n, sizeof(*keys));
	if (!keys)
		return NULL;
	json_object_foreach(obj, key, val)
		keys[i++] = key;
	qsort(keys, *n, sizeof(*keys), cmp_str_ptr);
	return keys;
}

static const char *const backend_keys[] = {
	"max_ongoing_requests", "max_queued_requests", "queue_timeout_ms",
	"connect_timeout_ms", "request_timeout_ms", "retries", "policy",
	"health_check", "replicas", "retry_on", "retry_budget_percent", "outlier_detection",
	"queue_when_unavailable", "slow_start_ms",
	"load_reports", "load_scrape_ms", "load_metrics", "load_max_age_ms",
	"model_rewrite", "multiplex", "prefix", /* routing on the body */
	NULL,
};
static const char *const hc_keys[] = { "path", "interval_ms", "rise", "fall", NULL };
static const char *const od_keys[] = {
	"consecutive_failures", "base_ejection_ms", "max_ejection_ms", "max_ejection_percent",
	"count_5xx", NULL,
};
static const char *const endpoint_keys[] = {
	"route", "methods", "call_method", "max_body_bytes", "traffic", "shadow",
	"models", "model_header", "route_body_max_bytes", /* routing by model */
	"priority", "priority_header", "timeout_header", "timeout_ms", "fairness_header",
	"tenant_weights", "max_queued_per_tenant", "queue_order", NULL,
};

/* The cache key of a resolved address: the name, or "srv:" + the SRV
 * name (dns.h DNS_SRV_PREFIX). */
#define REPLICA_HOST_MAX (ADDR_NAME_MAX + sizeof(DNS_SRV_PREFIX))

/* The addresses one document entry stands for: one for a literal, one per
 * address of a DNS name (port set), one per address of an SRV record's
 * target ("srv:NAME": the record's port, *weights its weight). host gets
 * the cache key ("" for a literal). 0 with *out (malloc'ed), *n and
 * *weights (malloc'ed for SRV, else NULL), or -errno with ctx->err set
 * (bad address, unresolvable name). */
static int replica_addrs(struct parse_ctx *ctx, const char *rp, const char *value,
			 struct rr_addr **out, uint32_t **weights, size_t *n,
			 char host[REPLICA_HOST_MAX])
{
	struct rr_addr a;
	char why[256], name[ADDR_NAME_MAX];
	int rc = addr_parse_name(value, strlen(value),
				 ADDR_F_IPV6 | ADDR_F_UNIX | ADDR_F_NAME | ADDR_F_SRV, &a, name, why,
				 sizeof(why));

	*weights = NULL;
	host[0] = '\0';
	if (rc < 0)
		return fail(ctx, rp,
			    "bad address \"%s\": expected IPV4:PORT, localhost:PORT, [IPV6]:PORT, "
			    "NAME:PORT (port 1..65535), unix:/PATH or srv:_SERVICE._PROTO.NAME (%s)",
			    value, why);
	if (rc == 0) {
		*out = malloc(sizeof(**out));
		if (!*out)
			return fail_nomem(ctx, rp);
		**out = a;
		*n = 1;
		return 0;
	}
	snprintf(host, REPLICA_HOST_MAX, "%s%s", rc == ADDR_IS_SRV ? DNS_SRV_PREFIX : "", name);
	/* Off the shards: the control thread, main at start, or dns.c. */
	rc = dns_lookup(ctx->reg ? &ctx->reg->dns : NULL, host, out, weights, n, why, sizeof(why));
	if (rc == -ENOMEM)
		return fail_nomem(ctx, rp);
	if (rc)
		return fail(ctx, rp, "cannot resolve %s: %s", host, why);
	if (*weights)
		return 0; /* SRV: each address has its record's port */
	for (size_t i = 0; i < *n; i++) {
		if ((*out)[i].u.sa.sa_family == AF_INET6)
			(*out)[i].u.in6.sin6_port = a.u.in.sin_port;
		else
			(*out)[i].u.in.sin_port = a.u.in.sin_port;
	}
	return 0;
}

static int get_bool_key(struct parse_ctx *ctx, json_t *obj, const char *path, const char *key,
			bool def, bool *out);
static int get_u32_in(struct parse_ctx *ctx, json_t *obj, const char *path, const char *key,
		      uint32_t min, uint32_t max, uint32_t def, uint32_t *out);

static const char *const replica_keys[] = { "address", "weight", "drain", NULL };

/* What one document entry says beside its address: the string form is
 * weight 1, not drained; the object form {"address", "weight", "drain"}
 * sets them. Borrowed from the document (valid while it is). */
struct replica_spec {
	const char *address;
	uint32_t weight;
	bool drain;
};

/* Reads entry v (path rp) into *sp. 0 or -EINVAL with ctx->err set. */
static int replica_spec(struct parse_ctx *ctx, const char *rp, json_t *v, struct replica_spec *sp)
{
	char ap[PATH_MAX_LEN];
	int rc;

	sp->weight = 1;
	sp->drain = false;
	if (json_is_string(v)) {
		sp->address = json_string_value(v);
		return 0;
	}
	if (!json_is_object(v))
		return fail(ctx, rp, "must be a string \"host:port\" or an object "
			    "{\"address\": \"host:port\", \"weight\": N, \"drain\": BOOL}");
	if ((rc = check_keys(ctx, v, rp, replica_keys)) ||
	    (rc = get_u32_in(ctx, v, rp, "weight", 1, MAX_REPLICA_WEIGHT, 1, &sp->weight)) ||
	    (rc = get_bool_key(ctx, v, rp, "drain", false, &sp->drain)))
		return rc;
	sp->address = json_string_value(json_object_get(v, "address"));
	if (!sp->address)
		return fail(ctx, join(ap, sizeof(ap), rp, "address"), "must be a string \"host:port\"");
	return 0;
}

/* Fills b (zeroed, name already set) from its JSON object. 0 or -errno with
 * ctx->err set; partial contents are left for config_free. An id whose
 * address is a DNS name becomes one replica per address, "ID/ADDRESS"
 * (ids cannot hold '/', so these never collide with a written id). */
static int parse_replicas(struct parse_ctx *ctx, struct backend_cfg *b, json_t *obj,
			  const char *path)
{
	char p[PATH_MAX_LEN], rp[PATH_MAX_LEN];
	const char **ids = NULL;
	struct replica_spec *specs = NULL;
	struct rr_addr **addrs = NULL;
	uint32_t **srvw = NULL;
	char (*hosts)[REPLICA_HOST_MAX] = NULL;
	size_t *naddrs = NULL, n, total = 0;
	int rc = 0;

	join(p, sizeof(p), path, "replicas");
	if (!json_is_object(obj))
		return fail(ctx, p, "must be an object of id -> \"host:port\"");
	ids = sorted_keys(obj, &n);
	if (!ids && n)
		return fail_nomem(ctx, p);
	if (n == 0)
		return 0;
	addrs = calloc(n, sizeof(*addrs));
	naddrs = calloc(n, sizeof(*naddrs));
	specs = calloc(n, sizeof(*specs));
	srvw = calloc(n, sizeof(*srvw));
	hosts = calloc(n, sizeof(*hosts));
	if (!addrs || !naddrs || !specs || !srvw || !hosts) {
		rc = fail_nomem(ctx, p);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		json_t *v = json_object_get(obj, ids[i]);

		join(rp, sizeof(rp), p, ids[i]);
		if (!name_ok(ids[i])) {
			rc = fail(ctx, rp, "replica id must be non-empty, without '/' or control characters");
			goto out;
		}
		rc = replica_spec(ctx, rp, v, &specs[i]);
		if (rc)
			goto out;
		rc = replica_addrs(ctx, rp, specs[i].address, &addrs[i], &srvw[i], &naddrs[i],
				   hosts[i]);
		if (rc)
			goto out;
		total += naddrs[i];
	}
	b->replicas = calloc(total, sizeof(*b->replicas));
	if (!b->replicas) {
		rc = fail_nomem(ctx, p);
		goto out;
	}
	b->nreplicas = total;
	total = 0;
	for (size_t i = 0; i < n; i++) {
		const char *value = specs[i].address;
		const char *host = hosts[i];

		join(rp, sizeof(rp), p, ids[i]);
		for (size_t k = 0; k < naddrs[i]; k++) {
			struct replica_cfg *r = &b->replicas[total++];
			char ip[ADDR_STRLEN];
			char *key = NULL;

			r->addr = addrs[i][k];
			r->weight = r->doc_weight = specs[i].weight;
			if (srvw[i]) {
				/* SRV weight w: the document's weight times w (0 as
				 * 1), at most MAX_REPLICA_WEIGHT */
				uint64_t w = (uint64_t)r->weight * (srvw[i][k] ? srvw[i][k] : 1);
				r->weight = w > MAX_REPLICA_WEIGHT ? MAX_REPLICA_WEIGHT : (uint32_t)w;
			}
			r->drain = specs[i].drain;
			if (r->weight != b->replicas[0].weight)
				b->weighted = true;
			addr_format(&r->addr, ip, sizeof(ip));
			/* One server behind two ids would get two slots' worth
			 * of max_ongoing_requests, each id counting only its
			 * own: the cap the operator wrote would be doubled.
			 * Parsed addresses are compared, so "localhost:N" and
			 * "127.0.0.1:N", or "[::1]:N" and "[0:0::1]:N", are one
			 * (and so is a name resolving to a literal's address).
			 * Ids are visited in sorted order: the later id of a
			 * pair is reported, whatever the key order. */
			for (size_t j = 0; j + 1 < total; j++) {
				const struct replica_cfg *o = &b->replicas[j];
				if (addr_equal(&o->addr, &r->addr)) {
					rc = fail(ctx, rp,
						  "same address %s as %s.%s: two replicas on one address "
						  "would double its max_ongoing_requests",
						  ip, p, o->spec_id ? o->spec_id : o->id);
					goto out;
				}
			}
			r->address = strdup(value);
			if (host[0]) {
				r->host = strdup(host);
				r->spec_id = strdup(ids[i]);
				if (asprintf(&r->id, "%s/%s", ids[i], ip) < 0)
					r->id = NULL;
			} else {
				r->id = strdup(ids[i]);
			}
			if (!r->id || !r->address || (host[0] && (!r->host || !r->spec_id))) {
				rc = fail_nomem(ctx, rp);
				goto out;
			}
			/* The key uses the parsed address, so "localhost:9000"
			 * and "127.0.0.1:9000" share one state (they are one
			 * server). */
			if (asprintf(&key, "%s/%s@%s", b->name, r->id, ip) < 0) {
				rc = fail_nomem(ctx, rp);
				goto out;
			}
			r->state = registry_replica(ctx->reg, key, &r->addr);
			free(key);
			if (!r->state) {
				rc = fail_nomem(ctx, rp);
				goto out;
			}
		}
	}
out:
	for (size_t i = 0; addrs && i < n; i++)
		free(addrs[i]);
	for (size_t i = 0; srvw && i < n; i++)
		free(srvw[i]);
	free(addrs);
	free(srvw);
	free(hosts);
	free(naddrs);
	free(specs);
	free(ids);
	return rc;
}

/* The retry policy of b: retry_on (an array of retry_on_name()s, each at
 * most once; absent: RETRY_ON_DEFAULT) and retry_budget_percent. */
static int parse_retry_policy(struct parse_ctx *ctx, struct backend_cfg *b, json_t *obj,
			      const char *path)
{
	char p[PATH_MAX_LEN];
	json_t *v = json_object_get(obj, "retry_on"), *x;
	uint64_t pct;
	size_t i;
	int rc;

	if ((rc = get_uint(ctx, obj, path, "retry_budget_percent", 0, 100, DEF_RETRY_BUDGET, &pct)))
		return rc;
	b->retry_budget_percent = (uint32_t)pct;
	b->retry_on = RETRY_ON_DEFAULT;
	if (!v)
		return 0;
	join(p, sizeof(p), path, "retry_on");
	if (!json_is_array(v))
		return fail(ctx, p, "must be an array of \"connect-failure\", "
			    "\"reset-before-response\", \"503\", \"429\"");
	b->retry_on = 0;
	json_array_foreach(v, i, x) {
		const char *name = json_string_value(x);
		unsigned k;

		for (k = 0; name && k < RETRY_ON_NAMES; k++)
			if (strcmp(name, retry_on_name(k)) == 0)
				break;
		if (!name || k == RETRY_ON_NAMES)
			return fail(ctx, p, "element %zu: must be \"connect-failure\", "
				    "\"reset-before-response\", \"503\" or \"429\"", i);
		if (b->retry_on & (1u << k))
			return fail(ctx, p, "element %zu: \"%s\" named twice", i, name);
		b->retry_on |= 1u << k;
	}
	return 0;
}

/* An optional boolean key of obj into *out; def when absent. 0 or -EINVAL. */
static int get_bool_key(struct parse_ctx *ctx, json_t *obj, const char *path, const char *key,
			bool def, bool *out)
{
	json_t *v = json_object_get(obj, key);
	char p[PATH_MAX_LEN];

	if (!v) {
		*out = def;
		return 0;
	}
	if (!json_is_boolean(v))
		return fail(ctx, join(p, sizeof(p), path, key), "must be true or false");
	*out = json_is_true(v);
	return 0;
}

/* get_uint for a uint32_t field. */
static int get_u32_in(struct parse_ctx *ctx, json_t *obj, const char *path, const char *key,
		      uint32_t min, uint32_t max, uint32_t def, uint32_t *out)
{
	uint64_t v;
	int rc = get_uint(ctx, obj, path, key, min, max, def, &v);

	if (rc == 0)
		*out = (uint32_t)v;
	return rc;
}

/* outlier_detection and queue_when_unavailable of backend obj (outlier.h),
 * defaults filled in when absent (od NULL: jansson's getters find no key in
 * it, so every field takes its default). 0 or -EINVAL. */
static int parse_outlier(struct parse_ctx *ctx, struct backend_cfg *b, json_t *obj,
			 const char *path)
{
	struct outlier_cfg *o = &b->outlier;
	json_t *od = json_object_get(obj, "outlier_detection");
	char op[PATH_MAX_LEN];
	int rc;

	join(op, sizeof(op), path, "outlier_detection");
	if (od && !json_is_object(od))
		return fail(ctx, op, "must be an object {\"consecutive_failures\": N, ...}");
	if ((rc = check_keys(ctx, od, op, od_keys)) ||
	    (rc = get_u32_in(ctx, od, op, "consecutive_failures", 0, MAX_OD_FAILURES,
			     DEF_OD_FAILURES, &o->consecutive_failures)) ||
	    (rc = get_u32_in(ctx, od, op, "base_ejection_ms", 1, MAX_OD_MS, DEF_OD_BASE_MS,
			     &o->base_ejection_ms)))
		return rc;
	/* The cap may not be below the base: the first ejection would be cut. */
	if ((rc = get_u32_in(ctx, od, op, "max_ejection_ms", o->base_ejection_ms, MAX_OD_MS,
			     DEF_OD_MAX_MS > o->base_ejection_ms ? DEF_OD_MAX_MS : o->base_ejection_ms,
			     &o->max_ejection_ms)) ||
	    (rc = get_u32_in(ctx, od, op, "max_ejection_percent", 0, 100, DEF_OD_PERCENT,
			     &o->max_ejection_percent)) ||
	    (rc = get_bool_key(ctx, od, op, "count_5xx", false, &o->count_5xx)))
		return rc;
	return get_bool_key(ctx, obj, path, "queue_when_unavailable", false,
			    &b->queue_when_unavailable);
}

static const char *const lm_keys[] = { "queue", "kv_cache", NULL };
#define DEF_LOAD_QUEUE_METRIC "vllm:num_requests_waiting"
#define DEF_LOAD_KV_METRIC    "vllm:gpu_cache_usage_perc"
#define DEF_LOAD_MAX_AGE_MS   2000
#define MIN_LOAD_SCRAPE_MS    100
#define MAX_LOAD_MS           3600000

/* A Prometheus metric name: [a-zA-Z_:][a-zA-Z0-9_:]*. */
static int metric_name_ok(const char *s)
{
	if (!*s || (*s >= '0' && *s <= '9'))
		return 0;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '_' || *s == ':'))
			return 0;
	return 1;
}

/* One gauge name of load_metrics (lp) into *out (malloc'ed), def when
 * absent. 0 or -errno. */
static int load_metric(struct parse_ctx *ctx, json_t *lm, const char *lp, const char *key,
		       const char *def, char **out)
{
	json_t *v = json_object_get(lm, key);
	const char *s = v ? json_string_value(v) : def;
	char p[PATH_MAX_LEN];

	join(p, sizeof(p), lp, key);
	if (!s || !metric_name_ok(s))
		return fail(ctx, p, "must be a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)");
	*out = strdup(s);
	return *out ? 0 : fail_nomem(ctx, p);
}

/* Server-reported load of backend obj (load.h): load_reports,
 * load_scrape_ms (0, or MIN_LOAD_SCRAPE_MS..MAX_LOAD_MS), load_metrics
 * {"queue", "kv_cache"} and load_max_age_ms, defaults when absent. 0 or
 * -errno. */
static int parse_load(struct parse_ctx *ctx, struct backend_cfg *b, json_t *obj,
		      const char *path)
{
	json_t *lm = json_object_get(obj, "load_metrics");
	char p[PATH_MAX_LEN];
	int rc;

	join(p, sizeof(p), path, "load_metrics");
	if (lm && !json_is_object(lm))
		return fail(ctx, p, "must be an object {\"queue\": \"gauge\", \"kv_cache\": \"gauge\"}");
	if ((rc = get_bool_key(ctx, obj, path, "load_reports", false, &b->load_reports)) ||
	    (rc = get_u32_in(ctx, obj, path, "load_scrape_ms", 0, MAX_LOAD_MS, 0,
			     &b->load_scrape_ms)) ||
	    (rc = get_u32_in(ctx, obj, path, "load_max_age_ms", 1, MAX_LOAD_MS,
			     DEF_LOAD_MAX_AGE_MS, &b->load_max_age_ms)) ||
	    (rc = check_keys(ctx, lm, p, lm_keys)) ||
	    (rc = load_metric(ctx, lm, p, "queue", DEF_LOAD_QUEUE_METRIC, &b->load_queue_metric)) ||
	    (rc = load_metric(ctx, lm, p, "kv_cache", DEF_LOAD_KV_METRIC, &b->load_kv_metric)))
		return rc;
	if (b->load_scrape_ms && b->load_scrape_ms < MIN_LOAD_SCRAPE_MS) {
		char sp[PATH_MAX_LEN];
		return fail(ctx, join(sp, sizeof(sp), path, "load_scrape_ms"),
			    "must be 0 (off) or at least %u", MIN_LOAD_SCRAPE_MS);
	}
	return 0;
}

/* ---- routing on the request body (issue 11) ---- */

#define DEF_PREFIX_BLOCK     64
#define DEF_PREFIX_ABS       32
#define DEF_PREFIX_REL       1.5
#define DEF_PREFIX_ENTRIES   65536
#define DEF_PREFIX_BYTES_PER_LOAD 1024 /* docs/config.md: prefill of ~256 tokens = one request */
#define MAX_PREFIX_ENTRIES   (1u << 24)
#define MIN_PREFIX_ENTRIES   64
#define DEF_MODEL_HEADER     "X-Model"
#define DEF_ROUTE_BODY_MAX   1048576
#define MAX_ROUTE_BODY_MAX   (64ull << 20)

static const char *const mux_keys[] = { "max_models_per_replica", NULL };
static const char *const prefix_keys[] = {
	"block_bytes", "balance_abs", "balance_rel", "table_entries", "bytes_per_load", NULL,
};

/* A model name as config takes it: non-empty, at most MODEL_NAME_MAX
 * bytes, no control bytes, '"' or '\\' (it is written into JSON bodies
 * and compared with decoded ones as is). */
static int model_name_ok(const char *s)
{
	size_t n = strlen(s);

	if (!n || n > MODEL_NAME_MAX)
		return 0;
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f || *s == '"' || *s == '\\')
			return 0;
	return 1;
}

/* model_rewrite, multiplex and prefix of backend b; the process-wide
 * tables they need are made here, on the state (once: a table's size is
 * that of the document that first asked for it). 0 or -errno. */
static int parse_body_routing(struct parse_ctx *ctx, struct backend_cfg *b, json_t *obj,
			      const char *path)
{
	char p[PATH_MAX_LEN];
	json_t *v;
	int rc;

	v = json_object_get(obj, "model_rewrite");
	if (v) {
		const char *s = json_string_value(v);
		if (!s || !model_name_ok(s))
			return fail(ctx, join(p, sizeof(p), path, "model_rewrite"),
				    "must be a model name: 1..%d bytes, no control characters, "
				    "'\"' or '\\'", MODEL_NAME_MAX);
		b->model_rewrite = strdup(s);
		if (!b->model_rewrite)
			return fail_nomem(ctx, path);
	}
	v = json_object_get(obj, "multiplex");
	if (v) {
		join(p, sizeof(p), path, "multiplex");
		if (!json_is_object(v))
			return fail(ctx, p, "must be an object {\"max_models_per_replica\": N}");
		if ((rc = check_keys(ctx, v, p, mux_keys)))
			return rc;
		if (!json_object_get(v, "max_models_per_replica"))
			return fail(ctx, p, "max_models_per_replica: required");
		if ((rc = get_u32_in(ctx, v, p, "max_models_per_replica", 1, MUX_MAX_MODELS, 1,
				     &b->mux_max_models)))
			return rc;
		for (size_t i = 0; i < b->nreplicas; i++) {
			struct replica_state *r = b->replicas[i].state;
			struct mux_lru *l;
			if (atomic_load(&r->mux))
				continue;
			l = mux_lru_new();
			if (!l)
				return fail_nomem(ctx, p);
			atomic_store_explicit(&r->mux, l, memory_order_release);
		}
	}
	v = json_object_get(obj, "prefix");
	join(p, sizeof(p), path, "prefix");
	if (v && !json_is_object(v))
		return fail(ctx, p, "must be an object {\"block_bytes\": N, ...}");
	if ((rc = check_keys(ctx, v, p, prefix_keys)) ||
	    (rc = get_u32_in(ctx, v, p, "block_bytes", 1, PREFIX_MAX_BLOCK_BYTES, DEF_PREFIX_BLOCK,
			     &b->prefix.block_bytes)) ||
	    (rc = get_u32_in(ctx, v, p, "balance_abs", 0, UINT32_MAX, DEF_PREFIX_ABS,
			     &b->prefix.balance_abs)) ||
	    (rc = get_u32_in(ctx, v, p, "table_entries", MIN_PREFIX_ENTRIES, MAX_PREFIX_ENTRIES,
			     DEF_PREFIX_ENTRIES, &b->prefix.table_entries)) ||
	    (rc = get_u32_in(ctx, v, p, "bytes_per_load", 0, UINT32_MAX, DEF_PREFIX_BYTES_PER_LOAD,
			     &b->prefix.bytes_per_load)))
		return rc;
	b->prefix.balance_rel = DEF_PREFIX_REL;
	if (v && json_object_get(v, "balance_rel")) {
		json_t *x = json_object_get(v, "balance_rel");
		char rp[PATH_MAX_LEN];
		if (!json_is_number(x) || !isfinite(json_number_value(x)) ||
		    json_number_value(x) < 1.0)
			return fail(ctx, join(rp, sizeof(rp), p, "balance_rel"),
				    "must be a number >= 1");
		b->prefix.balance_rel = json_number_value(x);
	}
	if (b->policy == POLICY_PREFIX && !atomic_load(&b->state->prefix)) {
		struct prefix_table *t = prefix_table_new(b->prefix.table_entries);
		if (!t)
			return fail_nomem(ctx, p);
		atomic_store_explicit(&b->state->prefix, t, memory_order_release);
	}
	return 0;
}

/* models, model_header and route_body_max_bytes of endpoint e. */
static int parse_endpoint_models(struct parse_ctx *ctx, struct endpoint_cfg *e, json_t *obj,
				 const char *path)
{
	char p[PATH_MAX_LEN], ip[PATH_MAX_LEN + 24];
	const char *s;
	json_t *v;
	size_t i;
	int rc;

	v = json_object_get(obj, "models");
	if (v) {
		json_t *m;
		join(p, sizeof(p), path, "models");
		if (!json_is_array(v) || json_array_size(v) == 0)
			return fail(ctx, p, "must be a non-empty array of model names");
		e->models = calloc(json_array_size(v), sizeof(*e->models));
		if (!e->models)
			return fail_nomem(ctx, p);
		json_array_foreach(v, i, m) {
			snprintf(ip, sizeof(ip), "%s[%zu]", p, i);
			s = json_string_value(m);
			if (!s || !model_name_ok(s))
				return fail(ctx, ip, "must be a model name: 1..%d bytes, no control "
					    "characters, '\"' or '\\'", MODEL_NAME_MAX);
			for (size_t j = 0; j < e->nmodels; j++)
				if (strcmp(e->models[j], s) == 0)
					return fail(ctx, ip, "\"%s\" named twice", s);
			e->models[e->nmodels] = strdup(s);
			if (!e->models[e->nmodels])
				return fail_nomem(ctx, ip);
			e->nmodels++;
		}
	}
	v = json_object_get(obj, "model_header");
	s = v ? json_string_value(v) : DEF_MODEL_HEADER;
	if (!s || !*s || !token_ok(s) || strchr(s, ':'))
		return fail(ctx, join(p, sizeof(p), path, "model_header"),
			    "must be a header name (non-empty, no spaces, ':' or control characters)");
	e->model_header = strdup(s);
	if (!e->model_header)
		return fail_nomem(ctx, path);
	if ((rc = get_uint(ctx, obj, path, "route_body_max_bytes", 0, MAX_ROUTE_BODY_MAX,
			   DEF_ROUTE_BODY_MAX, &e->route_body_max)))
		return rc;
	return 0;
}

/* Endpoints sharing a route must differ by models: at most one of them
 * without models (the catch-all), no model named by two of them. Called
 * for e against each endpoint f parsed before it with the same route.
 * 0 or -EINVAL. */
static int check_route_models(struct parse_ctx *ctx, const struct endpoint_cfg *e,
			      const struct endpoint_cfg *f, const char *path)
{
	char rp[PATH_MAX_LEN];

	if (!e->nmodels && !f->nmodels)
		return fail(ctx, join(rp, sizeof(rp), path, "route"),
			    "duplicate route \"%s\" (also endpoints.%s.route)", e->route, f->name);
	for (size_t i = 0; i < e->nmodels; i++)
		for (size_t j = 0; j < f->nmodels; j++)
			if (strcmp(e->models[i], f->models[j]) == 0)
				return fail(ctx, join(rp, sizeof(rp), path, "models"),
					    "model \"%s\" also named by endpoints.%s, which has "
					    "the same route", e->models[i], f->name);
	return 0;
}

static int parse_backend(struct parse_ctx *ctx, struct backend_cfg *b, json_t *obj,
			 const char *path)
{
	char p[PATH_MAX_LEN];
	json_t *v, *hc;
	int rc;

	if (!name_ok(b->name))
		return fail(ctx, path, "backend name must be non-empty, without '/' or control characters");
	if (!json_is_object(obj))
		return fail(ctx, path, "must be an object");
	if ((rc = check_keys(ctx, obj, path, backend_keys)) != 0)
		return rc;
	if ((rc = get_u32(ctx, obj, path, "max_ongoing_requests", 1, DEF_MAX_ONGOING, &b->max_ongoing)) ||
	    (rc = get_u32(ctx, obj, path, "max_queued_requests", 0, DEF_MAX_QUEUED, &b->max_queued)) ||
	    (rc = get_u32(ctx, obj, path, "queue_timeout_ms", 0, DEF_QUEUE_TIMEOUT, &b->queue_timeout_ms)) ||
	    (rc = get_u32(ctx, obj, path, "connect_timeout_ms", 1, DEF_CONNECT_TIMEOUT, &b->connect_timeout_ms)) ||
	    (rc = get_u32(ctx, obj, path, "request_timeout_ms", 1, DEF_REQUEST_TIMEOUT, &b->request_timeout_ms)) ||
	    (rc = get_u32(ctx, obj, path, "retries", 0, DEF_RETRIES, &b->retries)) ||
	    (rc = get_u32(ctx, obj, path, "slow_start_ms", 0, 0, &b->slow_start_ms)) ||
	    (rc = parse_retry_policy(ctx, b, obj, path)))
		return rc;
	/* Alone until instance_apply says otherwise: the whole caps. */
	b->max_ongoing_cfg = b->max_ongoing;
	b->max_queued_cfg = b->max_queued;

	b->policy = POLICY_P2C;
	v = json_object_get(obj, "policy");
	if (v) {
		const char *s = json_string_value(v);
		if (s && strcmp(s, "p2c") == 0)
			b->policy = POLICY_P2C;
		else if (s && strcmp(s, "round_robin") == 0)
			b->policy = POLICY_RR;
		else if (s && strcmp(s, "least_load") == 0)
			b->policy = POLICY_LEAST_LOAD;
		else if (s && strcmp(s, "prefix") == 0)
			b->policy = POLICY_PREFIX;
		else
			return fail(ctx, join(p, sizeof(p), path, "policy"),
				    "must be \"p2c\", \"round_robin\", \"least_load\" or \"prefix\"");
	}

	hc = json_object_get(obj, "health_check");
	if (hc) {
		char hp[PATH_MAX_LEN];
		const char *s;

		join(hp, sizeof(hp), path, "health_check");
		if (!json_is_object(hc))
			return fail(ctx, hp, "must be an object {\"path\": \"/...\", \"interval_ms\": N}");
		if ((rc = check_keys(ctx, hc, hp, hc_keys)) != 0)
			return rc;
		v = json_object_get(hc, "path");
		s = json_string_value(v);
		if (!s || s[0] != '/' || !token_ok(s))
			return fail(ctx, join(p, sizeof(p), hp, "path"),
				    "must be a string starting with '/', without spaces or control characters");
		b->hc_path = strdup(s);
		if (!b->hc_path)
			return fail_nomem(ctx, hp);
		if ((rc = get_u32(ctx, hc, hp, "interval_ms", MIN_HC_INTERVAL, DEF_HC_INTERVAL,
				  &b->hc_interval_ms)) != 0)
			return rc;
		{
			uint64_t rise, fall;
			if ((rc = get_uint(ctx, hc, hp, "rise", 1, MAX_HC_STREAK, DEF_HC_RISE, &rise)) ||
			    (rc = get_uint(ctx, hc, hp, "fall", 1, MAX_HC_STREAK, DEF_HC_FALL, &fall)))
				return rc;
			b->hc_rise = (uint32_t)rise;
			b->hc_fall = (uint32_t)fall;
		}
	}

	if ((rc = parse_outlier(ctx, b, obj, path)) != 0 ||
	    (rc = parse_load(ctx, b, obj, path)) != 0)
		return rc;

	v = json_object_get(obj, "replicas");
	if (v && (rc = parse_replicas(ctx, b, v, path)) != 0)
		return rc;
	if (b->slow_start_ms)
		b->weighted = true; /* ramping weights differ even when the configured ones don't */

	b->state = registry_backend(ctx->reg, b->name);
	if (!b->state)
		return fail_nomem(ctx, path);
	return parse_body_routing(ctx, b, obj, path);
}

/* Index of backend name in c->backends (sorted by name), or -1. */
static long backend_index(const struct config *c, const char *name)
{
	size_t lo = 0, hi = c->nbackends;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int d = strcmp(name, c->backends[mid].name);
		if (d == 0)
			return (long)mid;
		if (d < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return -1;
}

/* Parses a traffic (is_shadow 0) or shadow (1) object into *out and *n, ordered
 * by backend index, with cumulative weights. */
static int parse_weights(struct parse_ctx *ctx, struct config *c, json_t *obj,
			 const char *path, int is_shadow, struct weighted **out, size_t *n)
{
	const char *what = is_shadow ? "shadow" : "traffic";
	char p[PATH_MAX_LEN], wp[PATH_MAX_LEN];
	const char **names = NULL;
	struct weighted *w;
	double cum = 0;
	size_t cnt;
	int rc = 0;

	join(p, sizeof(p), path, what);
	if (!json_is_object(obj))
		return fail(ctx, p, is_shadow ? "must be an object of backend -> probability"
					      : "must be an object of backend -> weight");
	/* Backends are sorted by name, so sorting by name orders by index. */
	names = sorted_keys(obj, &cnt);
	if (!names && cnt)
		return fail_nomem(ctx, p);
	if (cnt == 0) {
		if (is_shadow)
			return 0;
		return fail(ctx, p, "must name at least one backend");
	}
	w = calloc(cnt, sizeof(*w));
	if (!w) {
		rc = fail_nomem(ctx, p);
		goto out;
	}
	*out = w;
	*n = cnt;
	for (size_t i = 0; i < cnt; i++) {
		json_t *v = json_object_get(obj, names[i]);
		long bi = backend_index(c, names[i]);
		double x;

		join(wp, sizeof(wp), p, names[i]);
		if (bi < 0) {
			rc = fail(ctx, wp, "unknown backend");
			goto out;
		}
		if (!json_is_number(v)) {
			rc = fail(ctx, wp, is_shadow ? "must be a number in [0, 1]" : "must be a number >= 0");
			goto out;
		}
		x = json_number_value(v);
		if (!isfinite(x) || x < 0 || (is_shadow && x > 1)) {
			rc = fail(ctx, wp, is_shadow ? "must be a number in [0, 1]" : "must be a number >= 0");
			goto out;
		}
		cum += x;
		w[i].backend = &c->backends[bi];
		w[i].weight = x;
		w[i].cum = cum;
	}
	if (!is_shadow && !(cum > 0 && isfinite(cum)))
		rc = fail(ctx, p, "weights must sum to a finite number > 0");
out:
	free(names);
	return rc;
}

/* Parses methods: a non-empty array of llhttp method names -> bit mask. */
static int parse_methods(struct parse_ctx *ctx, json_t *arr, const char *path, uint64_t *mask)
{
	char p[PATH_MAX_LEN], ip[PATH_MAX_LEN + 24];
	size_t i;
	json_t *v;

	join(p, sizeof(p), path, "methods");
	if (!json_is_array(arr) || json_array_size(arr) == 0)
		return fail(ctx, p, "must be a non-empty array of method names such as \"GET\"");
	*mask = 0;
	json_array_foreach(arr, i, v) {
		const char *s = json_string_value(v);
		size_t k;

		snprintf(ip, sizeof(ip), "%s[%zu]", p, i);
		if (!s)
			return fail(ctx, ip, "must be a method name string");
		for (k = 0; k < sizeof(method_names) / sizeof(method_names[0]); k++)
			if (method_names[k].num < 64 && strcmp(s, method_names[k].name) == 0)
				break;
		if (k == sizeof(method_names) / sizeof(method_names[0]))
			return fail(ctx, ip, "unknown method \"%s\"", s);
		*mask |= 1ull << method_names[k].num;
	}
	return 0;
}

#define DEF_PRIORITY_HEADER "X-Request-Priority"
#define DEF_TIMEOUT_HEADER "X-Request-Timeout-Ms"
#define MAX_TENANT_WEIGHT 1000

/* An optional header name key of obj into *out, lowercased (what
 * http_head_find compares with): def when absent, NULL for null or "".
 * 0, -EINVAL or -ENOMEM. */
static int get_header_name(struct parse_ctx *ctx, json_t *obj, const char *path,
			   const char *key, const char *def, char **out)
{
	json_t *v = json_object_get(obj, key);
	char p[PATH_MAX_LEN];
	const char *s = def;

	join(p, sizeof(p), path, key);
	if (v && json_is_null(v))
		s = NULL;
	else if (v) {
		s = json_string_value(v);
		if (!s)
			return fail(ctx, p, "must be a header name (a string), \"\" or null");
		for (const char *c = s; *c; c++)
			if ((unsigned char)*c <= 0x20 || *c == 0x7f || *c == ':' || *c == '"' ||
			    (unsigned char)*c >= 0x80)
				return fail(ctx, p, "must be a header name: no spaces, ':' or control characters");
		if (!*s)
			s = NULL;
	}
	*out = NULL;
	if (!s)
		return 0;
	*out = strdup(s);
	if (!*out)
		return fail_nomem(ctx, p);
	for (char *c = *out; *c; c++)
		if (*c >= 'A' && *c <= 'Z')
			*c = (char)(*c - 'A' + 'a');
	return 0;
}

static int cmp_tenant_weight(const void *a, const void *b)
{
	return strcmp(((const struct tenant_weight *)a)->name,
		      ((const struct tenant_weight *)b)->name);
}

/* The keys of issue 12 of endpoint obj (priority, its headers, deadlines,
 * tenants, queue order; docs/config.md), defaults when absent. 0 or
 * -EINVAL / -ENOMEM with ctx->err set. */
static int parse_endpoint_queueing(struct parse_ctx *ctx, struct endpoint_cfg *e, json_t *obj,
				   const char *path)
{
	char p[PATH_MAX_LEN];
	json_t *v;
	int rc;

	v = json_object_get(obj, "priority");
	e->priority = 0;
	if (v) {
		join(p, sizeof(p), path, "priority");
		if (!json_is_integer(v) || json_integer_value(v) < -10 || json_integer_value(v) > 10)
			return fail(ctx, p, "must be an integer in [-10, 10]");
		e->priority = (int32_t)json_integer_value(v);
	}
	if ((rc = get_header_name(ctx, obj, path, "priority_header", DEF_PRIORITY_HEADER,
				  &e->priority_header)) ||
	    (rc = get_header_name(ctx, obj, path, "timeout_header", DEF_TIMEOUT_HEADER,
				  &e->timeout_header)) ||
	    (rc = get_header_name(ctx, obj, path, "fairness_header", NULL, &e->fairness_header)) ||
	    (rc = get_u32(ctx, obj, path, "timeout_ms", 0, 0, &e->timeout_ms)) ||
	    (rc = get_u32(ctx, obj, path, "max_queued_per_tenant", 0, 0, &e->max_queued_per_tenant)))
		return rc;
	v = json_object_get(obj, "queue_order");
	e->queue_edf = false;
	if (v) {
		const char *s = json_string_value(v);
		join(p, sizeof(p), path, "queue_order");
		if (!s || (strcmp(s, "fifo") && strcmp(s, "edf")))
			return fail(ctx, p, "must be \"fifo\" or \"edf\"");
		e->queue_edf = strcmp(s, "edf") == 0;
	}
	v = json_object_get(obj, "tenant_weights");
	if (v) {
		const char *key;
		json_t *w;
		size_t i = 0;

		join(p, sizeof(p), path, "tenant_weights");
		if (!json_is_object(v))
			return fail(ctx, p, "must be an object {\"tenant\": weight, ...}");
		e->ntenant_weights = 0;
		e->tenant_weights = calloc(json_object_size(v) + 1, sizeof(*e->tenant_weights));
		if (!e->tenant_weights)
			return fail_nomem(ctx, p);
		json_object_foreach(v, key, w) {
			char wp[PATH_MAX_LEN];
			join(wp, sizeof(wp), p, key);
			if (!json_is_integer(w) || json_integer_value(w) < 1 ||
			    json_integer_value(w) > MAX_TENANT_WEIGHT)
				return fail(ctx, wp, "must be an integer weight in [1, %d]",
					    MAX_TENANT_WEIGHT);
			e->tenant_weights[i].name = strdup(key);
			if (!e->tenant_weights[i].name)
				return fail_nomem(ctx, wp);
			e->tenant_weights[i].weight = (uint32_t)json_integer_value(w);
			e->ntenant_weights = ++i;
		}
		qsort(e->tenant_weights, e->ntenant_weights, sizeof(*e->tenant_weights),
		      cmp_tenant_weight);
	}
	return 0;
}

/* The endpoint keys of issue 12 that differ from their defaults, into o
 * (the canonical document lists them only then). 0 or -1 (ENOMEM). */
static int endpoint_queueing_to_json(const struct endpoint_cfg *e, json_t *o)
{
	int rc = 0;

	if (e->priority)
		rc |= json_object_set_new(o, "priority", json_integer(e->priority));
	if (!e->priority_header || strcasecmp(e->priority_header, DEF_PRIORITY_HEADER))
		rc |= json_object_set_new(o, "priority_header", e->priority_header
					  ? json_string(e->priority_header) : json_null());
	if (!e->timeout_header || strcasecmp(e->timeout_header, DEF_TIMEOUT_HEADER))
		rc |= json_object_set_new(o, "timeout_header", e->timeout_header
					  ? json_string(e->timeout_header) : json_null());
	if (e->timeout_ms)
		rc |= json_object_set_new(o, "timeout_ms", json_integer(e->timeout_ms));
	if (e->fairness_header)
		rc |= json_object_set_new(o, "fairness_header", json_string(e->fairness_header));
	if (e->max_queued_per_tenant)
		rc |= json_object_set_new(o, "max_queued_per_tenant",
					  json_integer(e->max_queued_per_tenant));
	if (e->queue_edf)
		rc |= json_object_set_new(o, "queue_order", json_string("edf"));
	if (e->ntenant_weights) {
		json_t *w = json_object();
		rc |= json_object_set_new(o, "tenant_weights", w);
		for (size_t i = 0; w && i < e->ntenant_weights; i++)
			rc |= json_object_set_new(w, e->tenant_weights[i].name,
						  json_integer(e->tenant_weights[i].weight));
	}
	return rc ? -1 : 0;
}

static int parse_endpoint(struct parse_ctx *ctx, struct config *c, struct endpoint_cfg *e,
			  json_t *obj, const char *path)
{
	char p[PATH_MAX_LEN];
	const char *s;
	json_t *v;
	int rc;

	if (!name_ok(e->name))
		return fail(ctx, path, "endpoint name must be non-empty, without '/' or control characters");
	if (!json_is_object(obj))
		return fail(ctx, path, "must be an object");
	if ((rc = check_keys(ctx, obj, path, endpoint_keys)) != 0)
		return rc;

	join(p, sizeof(p), path, "route");
	v = json_object_get(obj, "route");
	if (!v)
		return fail(ctx, p, "required");
	s = json_string_value(v);
	/* '?' and '#' can never match: the query is stripped before matching. */
	if (!s || s[0] != '/' || !token_ok(s) || strpbrk(s, "?#"))
		return fail(ctx, p, "must be a path starting with '/', without spaces, '?' or '#'");
	e->route = strdup(s);
	if (!e->route)
		return fail_nomem(ctx, p);
	e->route_len = strlen(s);

	v = json_object_get(obj, "methods");
	if (v && (rc = parse_methods(ctx, v, path, &e->methods)) != 0)
		return rc;

	v = json_object_get(obj, "call_method");
	if (v) {
		join(p, sizeof(p), path, "call_method");
		s = json_string_value(v);
		if (!s || !*s || !token_ok(s))
			return fail(ctx, p, "must be a non-empty string without spaces or control characters");
		e->call_method = strdup(s);
		if (!e->call_method)
			return fail_nomem(ctx, p);
	}

	uint64_t mb;
	if ((rc = get_uint(ctx, obj, path, "max_body_bytes", 0, INT64_MAX, RR_DEFAULT_MAX_BODY, &mb)) != 0)
		return rc;
	e->max_body_bytes = mb;

	v = json_object_get(obj, "traffic");
	if (!v)
		return fail(ctx, join(p, sizeof(p), path, "traffic"), "required");
	if ((rc = parse_weights(ctx, c, v, path, 0, &e->traffic, &e->ntraffic)) != 0)
		return rc;
	v = json_object_get(obj, "shadow");
	if (v && (rc = parse_weights(ctx, c, v, path, 1, &e->shadow, &e->nshadow)) != 0)
		return rc;
	if ((rc = parse_endpoint_models(ctx, e, obj, path)) != 0)
		return rc;
	return parse_endpoint_queueing(ctx, e, obj, path);
}

/* Longest route first; equal lengths by route text; endpoints sharing a
 * route (they differ by models) by name. */
static int cmp_endpoint(const void *a, const void *b)
{
	const struct endpoint_cfg *x = a, *y = b;
	int d;

	if (x->route_len != y->route_len)
		return x->route_len > y->route_len ? -1 : 1;
	d = strcmp(x->route, y->route);
	return d ? d : strcmp(x->name, y->name);
}

/* A replica's entry: the string form while it says nothing beyond the
 * address (weight 1, not drained), so documents and state files written
 * before the object form existed read back unchanged. */
static json_t *replica_to_json(const struct replica_cfg *r)
{
	uint32_t w = r->doc_weight ? r->doc_weight : r->weight;

	if (w == 1 && !r->drain)
		return json_string(r->address);
	return json_pack("{s:s, s:I, s:b}", "address", r->address, "weight", (json_int_t)w,
			 "drain", r->drain);
}

/* The document's name of a policy (parse_backend reads them). */
static const char *policy_name(enum backend_policy p)
{
	switch (p) {
	case POLICY_RR:
		return "round_robin";
	case POLICY_LEAST_LOAD:
		return "least_load";
	case POLICY_PREFIX:
		return "prefix";
	case POLICY_P2C:
		break;
	}
	return "p2c";
}

/* Whether any load key of b (parse_load) differs from its default. */
static bool load_keys_set(const struct backend_cfg *b)
{
	return b->load_reports || b->load_scrape_ms || b->load_max_age_ms != DEF_LOAD_MAX_AGE_MS ||
	       strcmp(b->load_queue_metric, DEF_LOAD_QUEUE_METRIC) != 0 ||
	       strcmp(b->load_kv_metric, DEF_LOAD_KV_METRIC) != 0;
}

/* The body-routing keys of backend b into o: each only when set (policy
 * "prefix" writes its "prefix" object whole), so documents without them
 * read back as they were. 0 or -1 (ENOMEM). */
static int body_routing_to_json(const struct backend_cfg *b, json_t *o)
{
	if (b->model_rewrite && json_object_set_new(o, "model_rewrite", json_string(b->model_rewrite)))
		return -1;
	if (b->mux_max_models &&
	    json_object_set_new(o, "multiplex", json_pack("{s:I}", "max_models_per_replica",
							  (json_int_t)b->mux_max_models)))
		return -1;
	if (b->policy == POLICY_PREFIX &&
	    json_object_set_new(o, "prefix",
				json_pack("{s:I, s:I, s:f, s:I, s:I}", "block_bytes",
					  (json_int_t)b->prefix.block_bytes, "balance_abs",
					  (json_int_t)b->prefix.balance_abs, "balance_rel",
					  b->prefix.balance_rel, "table_entries",
					  (json_int_t)b->prefix.table_entries, "bytes_per_load",
					  (json_int_t)b->prefix.bytes_per_load)))
		return -1;
	return 0;
}

/* models, model_header and route_body_max_bytes of e into o: with models
 * all three, else each only when not its default. 0 or -1. */
static int endpoint_models_to_json(const struct endpoint_cfg *e, json_t *o)
{
	if (e->nmodels) {
		json_t *m = json_array();
		if (json_object_set_new(o, "models", m))
			return -1;
		for (size_t i = 0; i < e->nmodels; i++)
			if (json_array_append_new(m, json_string(e->models[i])))
				return -1;
	}
	if ((e->nmodels || strcmp(e->model_header, DEF_MODEL_HEADER) != 0) &&
	    json_object_set_new(o, "model_header", json_string(e->model_header)))
		return -1;
	if ((e->nmodels || e->route_body_max != DEF_ROUTE_BODY_MAX) &&
	    json_object_set_new(o, "route_body_max_bytes", json_integer((json_int_t)e->route_body_max)))
		return -1;
	return 0;
}

/* Builds the canonical document of c (defaults included). NULL on ENOMEM. */
static json_t *config_to_json(const struct config *c)
{
	json_t *root = json_object(), *bs = json_object(), *es = json_object();

	if (!root || !bs || !es)
		goto fail;
	if (json_object_set(root, "backends", bs) || json_object_set(root, "endpoints", es) ||
	    json_object_set_new(root, "dns_refresh_ms", json_integer(c->dns_refresh_ms)))
		goto fail;
	for (size_t i = 0; i < c->nbackends; i++) {
		const struct backend_cfg *b = &c->backends[i];
		json_t *reps = json_object();
		json_t *o = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:s, s:o*}",
				      "max_ongoing_requests", (json_int_t)b->max_ongoing_cfg,
				      "max_queued_requests", (json_int_t)b->max_queued_cfg,
				      "queue_timeout_ms", (json_int_t)b->queue_timeout_ms,
				      "connect_timeout_ms", (json_int_t)b->connect_timeout_ms,
				      "request_timeout_ms", (json_int_t)b->request_timeout_ms,
				      "retries", (json_int_t)b->retries,
				      "policy", policy_name(b->policy),
				      "replicas", reps);
		if (!o)
			goto fail;
		if (json_object_set_new(bs, b->name, o))
			goto fail;
		{
			json_t *ro = json_array();
			if (json_object_set_new(o, "retry_on", ro) ||
			    json_object_set_new(o, "retry_budget_percent",
						json_integer((json_int_t)b->retry_budget_percent)))
				goto fail;
			for (unsigned k = 0; k < RETRY_ON_NAMES; k++)
				if ((b->retry_on & (1u << k)) &&
				    json_array_append_new(ro, json_string(retry_on_name(k))))
					goto fail;
		}
		for (size_t j = 0; j < b->nreplicas; j++)
			if (json_object_set_new(reps,
						b->replicas[j].spec_id ? b->replicas[j].spec_id
								       : b->replicas[j].id,
						replica_to_json(&b->replicas[j])))
				goto fail;
		if (json_object_set_new(o, "outlier_detection",
					json_pack("{s:I, s:I, s:I, s:I, s:b}", "consecutive_failures",
						  (json_int_t)b->outlier.consecutive_failures,
						  "base_ejection_ms",
						  (json_int_t)b->outlier.base_ejection_ms,
						  "max_ejection_ms",
						  (json_int_t)b->outlier.max_ejection_ms,
						  "max_ejection_percent",
						  (json_int_t)b->outlier.max_ejection_percent,
						  "count_5xx", b->outlier.count_5xx)) ||
		    json_object_set_new(o, "queue_when_unavailable",
					json_boolean(b->queue_when_unavailable)) ||
		    json_object_set_new(o, "slow_start_ms", json_integer((json_int_t)b->slow_start_ms)))
			goto fail;
		/* The load keys only where one differs from its default, so the
		 * documents of backends that read no load stay as they were. */
		if (load_keys_set(b) &&
		    (json_object_set_new(o, "load_reports", json_boolean(b->load_reports)) ||
		    json_object_set_new(o, "load_scrape_ms", json_integer((json_int_t)b->load_scrape_ms)) ||
		    json_object_set_new(o, "load_max_age_ms",
					json_integer((json_int_t)b->load_max_age_ms)) ||
		    json_object_set_new(o, "load_metrics",
					json_pack("{s:s, s:s}", "queue", b->load_queue_metric,
						  "kv_cache", b->load_kv_metric))))
			goto fail;
		if (body_routing_to_json(b, o))
			goto fail;
		if (b->hc_path &&
		    json_object_set_new(o, "health_check",
					json_pack("{s:s, s:I, s:I, s:I}", "path", b->hc_path,
						  "interval_ms", (json_int_t)b->hc_interval_ms,
						  "rise", (json_int_t)b->hc_rise,
						  "fall", (json_int_t)b->hc_fall)))
			goto fail;
	}
	for (size_t i = 0; i < c->nendpoints; i++) {
		const struct endpoint_cfg *e = &c->endpoints[i];
		json_t *t = json_object(), *o;

		o = json_pack("{s:s, s:I, s:o*}", "route", e->route,
			      "max_body_bytes", (json_int_t)e->max_body_bytes, "traffic", t);
		if (!o)
			goto fail;
		if (json_object_set_new(es, e->name, o))
			goto fail;
		for (size_t j = 0; j < e->ntraffic; j++)
			if (json_object_set_new(t, e->traffic[j].backend->name,
						json_real(e->traffic[j].weight)))
				goto fail;
		if (e->nshadow) {
			json_t *s = json_object();
			if (json_object_set_new(o, "shadow", s))
				goto fail;
			for (size_t j = 0; j < e->nshadow; j++)
				if (json_object_set_new(s, e->shadow[j].backend->name,
							json_real(e->shadow[j].weight)))
					goto fail;
		}
		if (e->methods) {
			json_t *m = json_array();
			if (json_object_set_new(o, "methods", m))
				goto fail;
			for (size_t k = 0; k < sizeof(method_names) / sizeof(method_names[0]); k++)
				if (method_names[k].num < 64 && (e->methods & (1ull << method_names[k].num)) &&
				    json_array_append_new(m, json_string(method_names[k].name)))
					goto fail;
		}
		if (e->call_method &&
		    json_object_set_new(o, "call_method", json_string(e->call_method)))
			goto fail;
		if (endpoint_models_to_json(e, o) || endpoint_queueing_to_json(e, o))
			goto fail;
	}
	json_decref(bs);
	json_decref(es);
	return root;
fail:
	json_decref(bs);
	json_decref(es);
	json_decref(root);
	return NULL;
}

static const char *const top_keys[] = { "backends", "endpoints", "dns_refresh_ms", NULL };
#define MIN_DNS_REFRESH 100

/* Builds the snapshot from a parsed document. */
static int config_build(struct parse_ctx *ctx, json_t *root, struct config **out)
{
	const char **names = NULL;
	struct config *c;
	json_t *bs, *es, *doc = NULL;
	size_t n;
	int rc;

	if (!json_is_object(root))
		return fail(ctx, "(top level)", "must be an object with \"backends\" and \"endpoints\"");
	if ((rc = check_keys(ctx, root, "", top_keys)) != 0)
		return rc;
	bs = json_object_get(root, "backends");
	es = json_object_get(root, "endpoints");
	if (!bs)
		return fail(ctx, "backends", "required");
	if (!json_is_object(bs))
		return fail(ctx, "backends", "must be an object of name -> backend");
	if (!es)
		return fail(ctx, "endpoints", "required");
	if (!json_is_object(es))
		return fail(ctx, "endpoints", "must be an object of name -> endpoint");

	c = calloc(1, sizeof(*c));
	if (!c)
		return fail_nomem(ctx, "(top level)");
	atomic_init(&c->refs, 1);
	c->version = 1;
	/* Read before any lookup: a set changed during this parse makes the
	 * snapshot out of date, and the next refresh builds it again. */
	c->dns_gen = ctx->reg ? atomic_load(&ctx->reg->dns.gen) : 0;
	if ((rc = get_u32(ctx, root, "", "dns_refresh_ms", MIN_DNS_REFRESH, DNS_DEFAULT_REFRESH_MS,
			  &c->dns_refresh_ms)) != 0) {
		config_free(c);
		return rc;
	}

	names = sorted_keys(bs, &n);
	if (!names && n) {
		rc = fail_nomem(ctx, "backends");
		goto err;
	}
	if (n) {
		c->backends = calloc(n, sizeof(*c->backends));
		if (!c->backends) {
			rc = fail_nomem(ctx, "backends");
			goto err;
		}
		c->nbackends = n;
	}
	for (size_t i = 0; i < n; i++) {
		struct backend_cfg *b = &c->backends[i];
		char p[PATH_MAX_LEN];

		join(p, sizeof(p), "backends", names[i]);
		b->index = (uint32_t)i;
		b->name = strdup(names[i]);
		if (!b->name) {
			rc = fail_nomem(ctx, p);
			goto err;
		}
		if ((rc = parse_backend(ctx, b, json_object_get(bs, names[i]), p)) != 0)
			goto err;
	}
	free(names);

	names = sorted_keys(es, &n);
	if (!names && n) {
		rc = fail_nomem(ctx, "endpoints");
		goto err;
	}
	if (n) {
		c->endpoints = calloc(n, sizeof(*c->endpoints));
		if (!c->endpoints) {
			rc = fail_nomem(ctx, "endpoints");
			goto err;
		}
		c->nendpoints = n;
	}
	for (size_t i = 0; i < n; i++) {
		struct endpoint_cfg *e = &c->endpoints[i];
		char p[PATH_MAX_LEN];

		join(p, sizeof(p), "endpoints", names[i]);
		e->name = strdup(names[i]);
		if (!e->name) {
			rc = fail_nomem(ctx, p);
			goto err;
		}
		if ((rc = parse_endpoint(ctx, c, e, json_object_get(es, names[i]), p)) != 0)
			goto err;
		/* Names are visited in sorted order, so the later name of a
		 * pair is the one reported: stable whatever the key order. */
		for (size_t j = 0; j < i; j++) {
			if (strcmp(c->endpoints[j].route, e->route) == 0 &&
			    (rc = check_route_models(ctx, e, &c->endpoints[j], p)) != 0)
				goto err;
		}
	}
	free(names);
	names = NULL;
	if (c->nendpoints > 1)
		qsort(c->endpoints, c->nendpoints, sizeof(*c->endpoints), cmp_endpoint);
	/* A route whose endpoints name models is routed by the model. */
	for (size_t i = 0; i < c->nendpoints; i++)
		for (size_t j = 0; j < c->nendpoints; j++)
			if (c->endpoints[j].nmodels &&
			    strcmp(c->endpoints[i].route, c->endpoints[j].route) == 0)
				c->endpoints[i].route_models = true;

	doc = config_to_json(c);
	if (!doc) {
		rc = fail_nomem(ctx, "(top level)");
		goto err;
	}
	c->json = json_dumps(doc, JSON_SORT_KEYS | JSON_COMPACT);
	json_decref(doc);
	if (!c->json) {
		rc = fail_nomem(ctx, "(top level)");
		goto err;
	}
	*out = c;
	return 0;
err:
	free(names);
	config_free(c);
	return rc;
}

/* See config.h. On error *out is left untouched. */
int config_parse(const char *text, size_t len, const char *source,
		 struct replica_registry *reg, struct config **out, char *err, size_t errlen)
{
	struct parse_ctx ctx = { .source = source ? source : "config", .err = err,
				 .errlen = errlen, .reg = reg };
	json_error_t jerr;
	json_t *root;
	int rc;

	if (err && errlen)
		err[0] = '\0';
	root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		if (err && errlen)
			snprintf(err, errlen, "%s:%d:%d: %s", ctx.source, jerr.line, jerr.column,
				 jerr.text);
		return -EINVAL;
	}
	rc = config_build(&ctx, root, out);
	json_decref(root);
	return rc;
}

/* See config.h. Read errors are reported as "path: strerror" and returned as
 * -errno; parse errors as config_parse. */
int config_load_file(const char *path, struct replica_registry *reg, struct config **out,
		     char *err, size_t errlen)
{
	struct stat st;
	char *buf = NULL;
	size_t got = 0;
	int fd, rc;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		goto fail_msg;
	}
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		goto fail_close;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = -EINVAL;
		goto fail_close;
	}
	if ((uint64_t)st.st_size > CONFIG_MAX_FILE) {
		rc = -EFBIG;
		goto fail_close;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		rc = -ENOMEM;
		goto fail_close;
	}
	while (got < (size_t)st.st_size) {
		ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			rc = -errno;
			goto fail_free;
		}
		if (r == 0)
			break; /* truncated under us: parse what is there */
		got += (size_t)r;
	}
	close(fd);
	rc = config_parse(buf, got, path, reg, out, err, errlen);
	free(buf);
	return rc;

fail_free:
	free(buf);
fail_close:
	close(fd);
fail_msg:
	if (err && errlen)
		snprintf(err, errlen, "%s: %s", path,
			 rc == -EINVAL ? "not a regular file" : strerror(-rc));
	return rc;
}

/* See config.h: lookup by backend name (binary search, backends are sorted). */
const struct backend_cfg *config_backend(const struct config *c, const char *name)
{
	long i = backend_index(c, name);
	return i < 0 ? NULL : &c->backends[i];
}

/* Lookup by endpoint name (linear: endpoints are sorted by route). */
const struct endpoint_cfg *config_endpoint(const struct config *c, const char *name)
{
	for (size_t i = 0; i < c->nendpoints; i++)
		if (strcmp(c->endpoints[i].name, name) == 0)
			return &c->endpoints[i];
	return NULL;
}
