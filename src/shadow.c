/* Shadow copies (see shadow.h). */
#include "ringroute/shadow.h"

#include "ringroute/alloc.h"
#include "ringroute/metrics.h"
#include "ringroute/queue.h"
#include "ringroute/router.h"
#include "ringroute/shard.h"
#include "ringroute/upstream.h"

/* One copy in flight. */
struct shadow_copy {
	struct list node;          /* in the original's list while it takes the body */
	struct config *cfg;        /* referenced: be points into it */
	const struct backend_cfg *be;
	struct replica_state *rs;  /* the slot it holds */
	struct upstream *up;       /* NULL once the exchange ended */
	bool body_done;            /* the original's body is complete */
};

static const char *const result_names[SHADOW_R_COUNT] = {
	[SHADOW_SENT] = "sent",
	[SHADOW_DROPPED_NO_SLOT] = "dropped_no_slot",
	[SHADOW_DROPPED_ERROR] = "dropped_error",
	[SHADOW_CUT_SLOW] = "cut_slow",
	[SHADOW_CUT_ERROR] = "cut_error",
	[SHADOW_CUT_INCOMPLETE] = "cut_incomplete",
};

_Static_assert(SHADOW_R_COUNT <= METRICS_SHADOW_RESULTS, "backend_metrics.shadow is too small");

const char *shadow_result_name(enum shadow_result r)
{
	return (unsigned)r < SHADOW_R_COUNT ? result_names[r] : "unknown";
}

static void count(struct shard *s, const struct backend_cfg *be, enum shadow_result r)
{
	struct backend_metrics *bm = registry_backend_metrics(be->state, s->id);

	if (bm)
		counter_add(&bm->shadow[r], 1);
}

/* The copy is done: its slot goes to the next waiter, its memory back. */
static void copy_free(struct shard *s, struct shadow_copy *sc)
{
	if (list_linked(&sc->node))
		list_del_init(&sc->node);
	if (sc->up)
		upstream_abort(s, sc->up);
	router_replica_release(sc->rs);
	queue_slot_freed(s, sc->be->state);
	config_unref(sc->cfg);
	mi_free(sc);
}

/* ---- the copy's side of its upstream: everything is discarded ---- */

static int sc_on_head(struct shard *s, void *owner, const struct resp_head *rh)
{
	(void)s, (void)owner, (void)rh;
	return UP_BODY_RAW;
}

static int sc_on_interim(struct shard *s, void *owner, const struct resp_head *rh)
{
	(void)s, (void)owner, (void)rh;
	return 0;
}

static void sc_on_body(struct shard *s, void *owner, uint32_t bid, const char *p, size_t len)
{
	(void)s, (void)owner, (void)bid, (void)p, (void)len;
}

static void sc_on_done(struct shard *s, void *owner)
{
	struct shadow_copy *sc = owner;

	sc->up = NULL;
	copy_free(s, sc);
}

static void sc_on_failed(struct shard *s, void *owner, enum up_failure f, int reused)
{
	(void)f, (void)reused; /* a copy's failure affects nobody */
	sc_on_done(s, owner);
}

static void sc_on_drained(struct shard *s, void *owner)
{
	(void)s, (void)owner;
}

static size_t sc_pending(const void *owner)
{
	(void)owner;
	return 0;
}

static bool sc_body_done(const void *owner)
{
	return ((const struct shadow_copy *)owner)->body_done;
}

static const struct upstream_events shadow_events = {
	.on_head = sc_on_head,
	.on_interim = sc_on_interim,
	.on_body = sc_on_body,
	.on_end = sc_on_done,
	.on_failed = sc_on_failed,
	.on_drained = sc_on_drained,
	.on_gone = sc_on_done,
	.pending = sc_pending,
	.body_done = sc_body_done,
};

void shadow_start(struct shard *s, struct list *copies, struct config *cfg,
		  const struct endpoint_cfg *ep, const char *head, size_t head_len, bool is_head)
{
	for (size_t i = 0; i < ep->nshadow; i++) {
		const struct backend_cfg *be = ep->shadow[i].backend;
		struct upstream_req ur;
		struct shadow_copy *sc;
		int idx;

		if (router_rand_unit(&s->rng) >= ep->shadow[i].weight)
			continue;
		/* A copy never waits: no free slot, no copy. */
		idx = router_pick_replica(be, NULL, 0, &s->rng, &s->rr_cursor);
		if (idx < 0) {
			count(s, be, SHADOW_DROPPED_NO_SLOT);
			continue;
		}
		sc = mi_zalloc(sizeof(*sc));
		if (!sc) {
			router_replica_release(be->replicas[idx].state);
			queue_slot_freed(s, be->state);
			count(s, be, SHADOW_DROPPED_ERROR);
			continue; /* best effort */
		}
		list_init(&sc->node);
		sc->cfg = cfg;
		config_ref(cfg);
		sc->be = be;
		sc->rs = be->replicas[idx].state;
		ur = (struct upstream_req){
			.ev = &shadow_events,
			.owner = sc,
			.head = head,
			.head_len = head_len,
			.connect_timeout_ms = be->connect_timeout_ms,
			.request_timeout_ms = be->request_timeout_ms,
			.is_head = is_head,
		};
		if (upstream_start(s, &ur, sc->rs, &be->replicas[idx].addr, 0, &sc->up)) {
			sc->up = NULL;
			copy_free(s, sc);
			count(s, be, SHADOW_DROPPED_ERROR);
			continue;
		}
		list_push_back(copies, &sc->node);
		count(s, be, SHADOW_SENT);
	}
}

void shadow_body(struct shard *s, struct list *copies, uint32_t bid, const char *p, size_t len)
{
	struct list *pos, *tmp;

	list_for_each_safe(pos, tmp, copies) {
		struct shadow_copy *sc = container_of(pos, struct shadow_copy, node);

		/* A slow copy must never hold the client back: cut it. */
		if (sc->up && upstream_congested(sc->up)) {
			count(s, sc->be, SHADOW_CUT_SLOW);
			copy_free(s, sc);
		} else if (!sc->up || upstream_body(s, sc->up, bid, p, len)) {
			count(s, sc->be, SHADOW_CUT_ERROR);
			copy_free(s, sc);
		}
	}
}

void shadow_detach(struct list *copies)
{
	struct list *n;

	while ((n = list_pop_front(copies)))
		container_of(n, struct shadow_copy, node)->body_done = true;
}

void shadow_abort(struct shard *s, struct list *copies)
{
	struct list *n;

	while ((n = list_pop_front(copies))) {
		struct shadow_copy *sc = container_of(n, struct shadow_copy, node);

		count(s, sc->be, SHADOW_CUT_INCOMPLETE);
		copy_free(s, sc);
	}
}
