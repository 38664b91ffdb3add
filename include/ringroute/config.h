/* Configuration: an immutable, reference-counted snapshot built from the JSON
 * document described in docs/config.md. Shards read a snapshot
 * without locks; the control thread builds a new one for every change.
 *
 * Replica runtime state (the global `ongoing` counter, health, per-shard
 * upstream pools) is NOT part of a snapshot: it lives in a registry keyed by
 * "backend/replica@address" so that it survives config changes, and every
 * snapshot that names a replica holds a reference to its state. */
#ifndef RINGROUTE_CONFIG_H
#define RINGROUTE_CONFIG_H

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ringroute/addr.h"
#include "ringroute/dns.h"
#include "ringroute/list.h"
#include "ringroute/outlier.h"

#define RR_MAX_SHARDS 64
#define QUEUE_LEVELS 11       /* priorities 0..10 queue; below 0 never does */
#define TENANT_BUCKETS 512    /* per-backend tenant counters (power of two) */
#define SERVICE_SAMPLES 32    /* service times kept per backend */
#define RR_DEFAULT_MAX_BODY (64ull << 20)

struct upstream_pool; /* per shard, defined by upstream.h */
struct mux_lru;       /* multiplex.h */
struct prefix_table;  /* prefix.h */
struct backend_metrics; /* per shard, defined by metrics.h */

/* Shared by all shards: one cache line of hot counters per replica. */
struct replica_state {
	_Atomic uint32_t ongoing;   /* requests in flight process-wide: the cap */
	_Atomic uint32_t healthy;   /* 1 unless health checks failed */
	_Atomic uint32_t draining;  /* removed from config: no new requests */
	_Atomic uint32_t refs;      /* snapshots + in-flight requests */
	_Atomic uint64_t ewma_us;   /* response latency, for reports */
	_Atomic uint64_t ejected_until_ms; /* 0, or ejected until then (outlier.h) */
	char pad[64 - 4 * 4 - 8 - 8];
	/* cold part */
	char *key;                  /* "backend/id@ADDRESS" (registry key, addr_format) */
	struct rr_addr addr;
	/* Retry-After of its last 503/429 (request.c): no new requests before
	 * this clock_now_ms(); 0 when none. Cold: read only while choosing. */
	_Atomic uint64_t not_before_ms;
	/* When it last became able to take new requests (clock_now_ms()):
	 * made, back to healthy, back from ejection, enabled after a drain.
	 * slow_start_ms ramps its weight from there (router_replica_weight);
	 * 0: long ago (a private state). Cold: read only by a weighted choice. */
	_Atomic uint64_t up_since_ms;
	/* Health checks (health.c writes, the stats read): the last probe's
	 * result (health_result(), health_reason() reads it), when healthy
	 * last changed (clock_now_ms(), 0: never), and the probes in a row
	 * that agreed (> 0 successes, < 0 failures; the checker's only). */
	_Atomic uint32_t hc_result;
	_Atomic uint64_t hc_changed_ms;
	int32_t hc_streak;
	/* Created lazily by each shard (release store); the control thread
	 * reads them for stats (acquire load). */
	_Atomic(struct upstream_pool *) pools[RR_MAX_SHARDS];
	struct list reg_node;       /* in replica_registry.replicas */
	struct replica_registry *reg; /* owner, set once; NULL: private, freed by last unref */
	struct outlier_state outlier; /* the rest of the ejection state (outlier.h) */
	/* Server-reported load (load.h): written by any shard that reads an
	 * endpoint-load-metrics header and by the scrape thread (last writer
	 * wins), read by the least_load choice and the stats. load_report:
	 * queue << 32 | KV-cache use in parts per million; load_ms: when
	 * (clock_now_ms()), 0: never; load_reports / load_bad: reports taken
	 * and dropped as malformed. Cold: only least_load reads it per pick. */
	_Atomic uint64_t load_report;
	_Atomic uint64_t load_ms;
	_Atomic uint64_t load_reports, load_bad;
	/* Model multiplexing (multiplex.h): the model ids this replica served
	 * recently, made at config load for a backend with "multiplex" (the
	 * control thread, before any shard sees the snapshot: release store)
	 * and freed with the state; NULL otherwise. */
	_Atomic(struct mux_lru *) mux;
} __attribute__((aligned(64)));

/* Shared by all shards: per-backend queue bookkeeping (issue 3). */
struct backend_state {
	_Atomic uint64_t waiting_shards;        /* bit s: shard s has queued requests */
	_Atomic uint64_t oldest_ns[RR_MAX_SHARDS]; /* enqueue time of each shard's oldest waiter */
	_Atomic uint32_t queued;                /* total queued, for max_queued_requests */
	_Atomic uint32_t refs;
	/* The retry budget (retry.h), process-wide: requests routed to this
	 * backend not yet ended, and those of them that were retried. */
	_Atomic uint32_t inflight, retrying;
	/* Each shard's counters for this backend, made by the shard on first
	 * use (release store, registry_backend_metrics); the control thread
	 * sums them for /metrics (acquire load). */
	_Atomic(struct backend_metrics *) metrics[RR_MAX_SHARDS];
	char *name;
	struct list reg_node;
	struct replica_registry *reg; /* owner, set once; NULL: private, freed by last unref */
	/* Prefix-cache affinity (prefix.h): which replica served which prompt
	 * blocks, process-wide; made at config load for a backend with policy
	 * "prefix" (release store), sized then, freed with the state. */
	_Atomic(struct prefix_table *) prefix;
	/* Priorities, tenants, deadlines (queue.c, issue 12), shared by the
	 * shards. best_key[s]: queue_entry_key of shard s's best waiter
	 * (valid while its waiting_shards bit is set); lowest_prio[s]: the
	 * lowest priority queued there (0xff: none), for cross-shard
	 * eviction; evict_owed[s][p]: evictions shard s owes to arrivals of
	 * priority p elsewhere (they already hold the victims' places);
	 * evict_debt: owed evictions that found no victim, paid by the next
	 * removal anywhere (it keeps the place instead of freeing it). */
	_Atomic uint64_t best_key[RR_MAX_SHARDS];
	_Atomic uint8_t lowest_prio[RR_MAX_SHARDS];
	_Atomic uint32_t evict_owed[RR_MAX_SHARDS][QUEUE_LEVELS];
	_Atomic uint32_t evict_debt;
	_Atomic uint32_t queued_by_prio[QUEUE_LEVELS]; /* process-wide, for the reports */
	/* max_queued_per_tenant, process-wide: queued requests per bucket of
	 * a hash of the tenant name (tenants sharing a bucket share a bound). */
	_Atomic uint32_t tenant_queued[TENANT_BUCKETS];
	/* Tenant fairness, process-wide (start-time fair queueing): the
	 * virtual clock (the start tag of the last request served) and each
	 * tenant bucket's finish tag. A tenant's next request starts at
	 * max(vclock, finish) and moves finish on by QUEUE_QUANTUM / weight. */
	_Atomic uint64_t vclock;
	_Atomic uint64_t tenant_finish[TENANT_BUCKETS];
	/* Recent service times (dispatch to response end, us) of the last
	 * SERVICE_SAMPLES completions, any shard: the deadline estimator's
	 * median (queue_service_median). */
	_Atomic uint32_t service_us[SERVICE_SAMPLES];
	_Atomic uint32_t service_next;
} __attribute__((aligned(64)));

/* Owns the replica_state/backend_state objects. Only the control thread (and
 * config parsing) calls into it; shards only follow pointers they hold a
 * reference on. */
struct replica_registry {
	pthread_mutex_t lock;
	struct list replicas;
	struct list backends;
	struct dns_cache dns;         /* names of replica addresses (dns.h) */
};

void registry_init(struct replica_registry *reg);
/* Free every state whose refcount is zero; returns how many remain. */
size_t registry_collect(struct replica_registry *reg);
void registry_destroy(struct replica_registry *reg);
/* Returns the state for key with one more reference, creating it if needed;
 * NULL on allocation failure. reg may be NULL: then a private state is made. */
struct replica_state *registry_replica(struct replica_registry *reg, const char *key,
				       const struct rr_addr *addr);
struct backend_state *registry_backend(struct replica_registry *reg, const char *name);
void registry_replica_unref(struct replica_state *r);
void registry_backend_unref(struct backend_state *b);
/* Shard shard's counters for backend b, made on first use (the shard's
 * thread only). NULL only when out of memory (the event goes uncounted). */
struct backend_metrics *registry_backend_metrics(struct backend_state *b, unsigned shard);

enum backend_policy {
	POLICY_P2C = 0,   /* power of two choices on ongoing/max */
	POLICY_RR,        /* round robin over replicas with a free slot */
	POLICY_LEAST_LOAD, /* p2c on ongoing plus the replica's reported load (load.h) */
	POLICY_PREFIX,    /* prefix-cache affinity (prefix.h), else the least loaded */
};

/* A backend's "prefix" object (docs/config.md). */
struct prefix_cfg {
	uint32_t block_bytes;         /* the prompt is hashed in blocks of this many bytes */
	uint32_t balance_abs;         /* the cached replica is passed over when its load is */
	double balance_rel;           /* more than balance_abs above the least AND more than
	                               * balance_rel times the least */
	uint32_t table_entries;       /* slots of the process-wide table (a power of 2) */
	uint32_t bytes_per_load;      /* the cached replica is passed over when its load is more
	                               * than matched bytes / bytes_per_load requests above
	                               * the least loaded's; 0: only the balance bound */
};

#define MAX_REPLICA_WEIGHT 10000

/* A replica address with a DNS name stands for one replica per address the
 * name resolves to, each with id "ID/ADDRESS" (spec_id: ID, the key the
 * document has; host: the name). */
struct replica_cfg {
	char *id;
	char *spec_id;                /* the id written in the document, when it differs from id; else NULL */
	char *host;                   /* the DNS name of address, or NULL for a literal */
	char *address;                /* as written: "host:port", "[v6]:port", "unix:/path" */
	struct rr_addr addr;
	uint32_t weight;              /* 1..MAX_REPLICA_WEIGHT: its share against the others' */
	uint32_t doc_weight;          /* as written (srv: weight is this times the record's); 0: weight */
	bool drain;                   /* operator's drain: kept, but given nothing new */
	struct replica_state *state;  /* referenced */
};

struct backend_cfg {
	char *name;
	uint32_t index;               /* position in config.backends */
	/* The caps the router enforces: this instance's share of the
	 * configured ones (instance.h; all of them when it runs alone).
	 * max_ongoing 0: this instance sends the backend nothing. */
	uint32_t max_ongoing;
	uint32_t max_queued;          /* 0 = no queueing */
	uint32_t max_ongoing_cfg;     /* max_ongoing_requests as configured, >= 1 */
	uint32_t max_queued_cfg;      /* max_queued_requests as configured */
	uint32_t queue_timeout_ms;
	uint32_t connect_timeout_ms;
	uint32_t request_timeout_ms;
	uint32_t retries;
	uint32_t retry_on;            /* RETRY_ON_* bits (retry.h) */
	uint32_t retry_budget_percent; /* 0..100 */
	enum backend_policy policy;
	char *hc_path;                /* NULL: no health check */
	uint32_t hc_interval_ms;
	uint32_t hc_rise, hc_fall;    /* probes in a row that turn it healthy, unhealthy */
	struct outlier_cfg outlier;   /* outlier_detection */
	bool queue_when_unavailable;  /* queue (not 503 at once) while no replica is up */
	bool weighted;                /* weights differ or slow_start_ms: the choice reads them (router.c) */
	uint32_t slow_start_ms;       /* 0: off; else a replica's weight ramps up over this */
	size_t nreplicas;
	struct replica_cfg *replicas;
	struct backend_state *state;  /* referenced */
	/* Server-reported load (load.h, docs/config.md): ask for and read the
	 * ORCA header; scrape /metrics every load_scrape_ms (0: off) for the
	 * gauges named load_queue_metric / load_kv_metric; a report older
	 * than load_max_age_ms is not used. */
	bool load_reports;
	uint32_t load_scrape_ms;
	uint32_t load_max_age_ms;
	char *load_queue_metric;
	char *load_kv_metric;
	/* Routing on the request body (issue 11, docs/config.md). */
	char *model_rewrite;          /* the forwarded body's top-level "model", or NULL */
	uint32_t mux_max_models;      /* multiplex.max_models_per_replica; 0: no multiplexing */
	struct prefix_cfg prefix;     /* policy "prefix" */
};

struct weighted {
	struct backend_cfg *backend;
	double weight;                /* as configured */
	double cum;                   /* cumulative weight up to and including this one */
};

/* One entry of an endpoint's tenant_weights. */
struct tenant_weight {
	char *name;
	uint32_t weight;              /* 1..1000 */
};

struct endpoint_cfg {
	char *name;
	char *route;                  /* path prefix, starts with '/' */
	size_t route_len;
	uint64_t methods;             /* bit (1 << llhttp_method_t); 0 = any method */
	char *call_method;            /* default X-Serve-Call-Method, or NULL */
	uint64_t max_body_bytes;
	size_t ntraffic;
	struct weighted *traffic;     /* weights sum > 0 */
	size_t nshadow;
	struct weighted *shadow;      /* weight = probability in [0,1] */
	/* Routing by model (issue 11, docs/config.md). Endpoints may share a
	 * route when they differ by models: they sit next to each other
	 * (sorted by route, then name) and router_match_model chooses. */
	char **models;                /* names this endpoint serves; NULL: any (catch-all) */
	size_t nmodels;
	char *model_header;           /* header naming the model ("X-Model") */
	uint64_t route_body_max;      /* route_body_max_bytes: body held to find the model */
	bool route_models;            /* some endpoint with this route names models */
	/* Who goes next in the queues (docs/config.md "Priorities, tenants
	 * and deadlines"; parse_endpoint_queueing in config.c). */
	int32_t priority;             /* -10..10, default 0; < 0: sheddable */
	char *priority_header;        /* lowercase header name, NULL: none read */
	char *timeout_header;         /* lowercase header name, NULL: none read */
	uint32_t timeout_ms;          /* deadline without a header; 0: none */
	char *fairness_header;        /* lowercase header name, NULL: no tenants */
	size_t ntenant_weights;
	struct tenant_weight *tenant_weights; /* sorted by name */
	uint32_t max_queued_per_tenant; /* 0: no bound */
	bool queue_edf;               /* queue_order "edf" */
};

struct config {
	_Atomic uint32_t refs;
	uint64_t version;             /* increases with every applied change */
	size_t nbackends;
	struct backend_cfg *backends;
	size_t nendpoints;
	struct endpoint_cfg *endpoints; /* sorted: longest route first */
	char *json;                   /* canonical JSON text of this snapshot */
	uint32_t dns_refresh_ms;      /* names re-resolved this often */
	uint64_t dns_gen;             /* registry dns.gen when built: older means names changed */
};

/* Parse and validate a whole config document.
 * text/len: the JSON; source: name used in messages (file name).
 * reg: registry to take replica/backend states from (may be NULL in tests).
 * Returns 0 and *out (refcount 1), or -EINVAL with err holding
 * "source:line:column: reason" for syntax errors and
 * "source: json.path: reason" for invalid values. Nothing is half-built. */
int config_parse(const char *text, size_t len, const char *source,
		 struct replica_registry *reg, struct config **out, char *err, size_t errlen);
/* Same, reading the file at path. -errno when the file cannot be read. */
int config_load_file(const char *path, struct replica_registry *reg, struct config **out,
		     char *err, size_t errlen);

static inline void config_ref(struct config *c) { atomic_fetch_add(&c->refs, 1); }
/* Drops a reference; the last one frees the snapshot and its state refs. */
void config_unref(struct config *c);

struct strbuf;
/* Appends to out what differs from old (NULL: nothing before) to new, in
 * words: "backend B added; backend A changed (replicas.r2 added,
 * max_ongoing_requests); endpoint E removed", or "nothing changed". For the
 * process log. 0, or -1 when a snapshot's JSON does not parse. */
int config_diff(const struct config *old, const struct config *new, struct strbuf *out);

const struct backend_cfg *config_backend(const struct config *c, const char *name);
const struct endpoint_cfg *config_endpoint(const struct config *c, const char *name);

#endif
