/* Per-backend queues and the cross-shard wake-ups (see queue.h). */
#include "ringroute/queue.h"

#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include <xxhash.h>

#include "ringroute/alloc.h"
#include "ringroute/shard.h"
#include "ringroute/timer.h"
#include "ringroute/xring.h"

#define KEY_TIME_MASK ((1ull << 56) - 1)

/* This shard's queue for bs, created on first use. NULL on ENOMEM. */
static struct bqueue *bq_get(struct shard *s, struct backend_state *bs)
{
	struct list *pos, *tmp;
	struct bqueue *q;

	list_for_each_safe(pos, tmp, &s->queued) {
		q = container_of(pos, struct bqueue, node);
		if (q->bs == bs)
			return q;
	}
	q = mi_zalloc(sizeof(*q));
	if (!q)
		return NULL;
	list_init(&q->node);
	for (unsigned i = 0; i < QUEUE_TENANT_HASH; i++)
		list_init(&q->tenants[i]);
	for (unsigned p = 0; p < QUEUE_LEVELS; p++) {
		list_init(&q->ring[p]);
		list_init(&q->age[p]);
	}
	q->bs = bs;
	atomic_fetch_add(&bs->refs, 1);
	list_push_back(&s->queued, &q->node);
	return q;
}

static uint64_t entry_deadline_key(const struct queue_entry *e)
{
	return e->req_deadline_us ? e->req_deadline_us : UINT64_MAX;
}

/* Tenant t's start tag in bs now: where its next request stands in the
 * fair order of the whole process. */
static uint64_t tenant_start(struct backend_state *bs, const struct qtenant *t)
{
	uint64_t v = atomic_load_explicit(&bs->vclock, memory_order_relaxed);
	uint64_t f = atomic_load_explicit(&bs->tenant_finish[t->bucket], memory_order_relaxed);

	return f > v ? f : v;
}

uint64_t queue_entry_key(const struct queue_entry *e)
{
	uint64_t t;

	if (e->fair && e->bq && e->tenant)
		t = tenant_start(e->bq->bs, e->tenant);
	else
		t = e->edf && e->req_deadline_us ? e->req_deadline_us : e->t_queued_us;
	return ((uint64_t)(QUEUE_PRIO_MAX - e->prio) << 56) | (t & KEY_TIME_MASK);
}

/* Publish this shard's best waiter (its key), its oldest one (the
 * reports' oldest wait) and its lowest priority (cross-shard eviction). */
static void bq_publish(struct shard *s, struct bqueue *q)
{
	uint64_t bit = 1ull << s->id;

	if (q->n) {
		uint64_t oldest = UINT64_MAX;
		for (unsigned p = 0; p < QUEUE_LEVELS; p++)
			if (q->level_n[p]) {
				struct queue_entry *o =
					container_of(q->age[p].next, struct queue_entry, age_node);
				if (o->t_queued_us < oldest)
					oldest = o->t_queued_us;
			}
		atomic_store(&q->bs->best_key[s->id], queue_entry_key(queue_front(q)));
		atomic_store(&q->bs->oldest_ns[s->id], oldest);
		atomic_store(&q->bs->lowest_prio[s->id], (uint8_t)__builtin_ctz(q->levels));
		atomic_fetch_or(&q->bs->waiting_shards, bit);
	} else {
		atomic_fetch_and(&q->bs->waiting_shards, ~bit);
	}
}

void queue_arm_tick(struct shard *s)
{
	if (!timer_armed(&s->queue_tick))
		timer_arm(&s->tw, &s->queue_tick, QUEUE_TICK_MS);
}

/* q's tenant name[0..len), made on first use. NULL on ENOMEM. */
static struct qtenant *tenant_get(struct bqueue *q, const char *name, size_t len, uint64_t hash)
{
	struct list *head = &q->tenants[hash % QUEUE_TENANT_HASH], *pos, *tmp;
	uint32_t n = len < QUEUE_TENANT_NAME_MAX ? (uint32_t)len : QUEUE_TENANT_NAME_MAX;
	struct qtenant *t;

	list_for_each_safe(pos, tmp, head) {
		t = container_of(pos, struct qtenant, hnode);
		if (t->hash == hash && t->len == n && memcmp(t->name, name, n) == 0)
			return t;
	}
	t = mi_zalloc(sizeof(*t));
	if (!t)
		return NULL;
	for (unsigned p = 0; p < QUEUE_LEVELS; p++) {
		list_init(&t->lv[p].ring);
		list_init(&t->lv[p].entries);
	}
	t->hash = hash;
	t->bucket = (uint32_t)(hash & (TENANT_BUCKETS - 1));
	t->len = n;
	memcpy(t->name, name, n);
	t->weight = 1;
	list_init(&t->hnode);
	list_push_back(head, &t->hnode);
	return t;
}

static void tenant_put(struct qtenant *t)
{
	if (t->n)
		return;
	list_del_init(&t->hnode);
	mi_free(t);
}

/* The place a leaving entry held: it pays an owed eviction that found no
 * victim (the backend's debt), else it frees a place of max_queued. */
static void place_release(struct backend_state *bs)
{
	uint32_t d = atomic_load(&bs->evict_debt);

	while (d)
		if (atomic_compare_exchange_weak(&bs->evict_debt, &d, d - 1))
			return;
	atomic_fetch_sub(&bs->queued, 1);
}

static void tenant_release(struct backend_state *bs, struct queue_entry *e)
{
	if (e->tenant_counted) {
		atomic_fetch_sub(&bs->tenant_queued[e->tenant_bucket], 1);
		e->tenant_counted = false;
	}
}

/* Unlink e from q and everything it is counted in, except its place
 * (bs->queued): the caller frees that or hands it on. */
static void entry_unlink(struct shard *s, struct bqueue *q, struct queue_entry *e)
{
	struct qtenant *t = e->tenant;
	struct qtenant_level *tl = &t->lv[e->prio];

	list_del_init(&e->node);
	list_del_init(&e->age_node);
	timer_cancel(&s->tw, &e->timer);
	if (--tl->n == 0)
		list_del_init(&tl->ring);
	t->n--;
	tenant_put(t);
	if (--q->level_n[e->prio] == 0)
		q->levels &= ~(1u << e->prio);
	q->n--;
	atomic_fetch_sub(&q->bs->queued_by_prio[e->prio], 1);
	tenant_release(q->bs, e);
	e->bq = NULL;
	e->tenant = NULL;
}

/* The youngest waiter of q's lowest priority, if that is below prio. */
static struct queue_entry *lowest_below(struct bqueue *q, int prio)
{
	int low;

	if (!q->n)
		return NULL;
	low = __builtin_ctz(q->levels);
	if (low >= prio)
		return NULL;
	return container_of(q->age[low].prev, struct queue_entry, age_node);
}

/* The other shard that published the lowest priority below prio for bs,
 * or -1. */
static int remote_lowest(const struct shard *s, struct backend_state *bs, int prio)
{
	uint64_t mask = atomic_load(&bs->waiting_shards);
	int best = -1, bp = prio;

	for (unsigned i = 0; mask && i < s->proxy_nshards; i++) {
		int lp;
		if (!(mask & (1ull << i)) || i == s->id)
			continue;
		lp = atomic_load(&bs->lowest_prio[i]);
		if (lp < bp) {
			bp = lp;
			best = (int)i;
		}
	}
	return best;
}

/* Link e into q at its priority and tenant (FIFO, or by deadline). */
static void entry_link(struct bqueue *q, struct qtenant *t, struct queue_entry *e)
{
	struct qtenant_level *tl = &t->lv[e->prio];
	struct list *pos = &tl->entries;

	if (e->edf) {
		/* From the back: O(1) while deadlines come in order (one timeout). */
		while (pos->prev != &tl->entries) {
			struct queue_entry *p = container_of(pos->prev, struct queue_entry, node);
			if (p->edf && entry_deadline_key(p) <= entry_deadline_key(e))
				break;
			if (!p->edf)
				break;
			pos = pos->prev;
		}
	}
	list_insert_before(pos, &e->node);
	if (tl->n++ == 0)
		list_push_back(&q->ring[e->prio], &tl->ring);
	t->n++;
	list_push_back(&q->age[e->prio], &e->age_node);
	q->level_n[e->prio]++;
	q->levels |= 1u << e->prio;
	q->n++;
	e->tenant = t;
	e->bq = q;
	atomic_fetch_add(&q->bs->queued_by_prio[e->prio], 1);
}

/* The youngest waiter of tenant t at its lowest priority below prio (the
 * tail: with edf, the latest deadline), or NULL. */
static struct queue_entry *tenant_lowest_below(struct qtenant *t, int prio)
{
	for (int p = 0; p < prio; p++)
		if (t->lv[p].n)
			return container_of(t->lv[p].entries.prev, struct queue_entry, node);
	return NULL;
}

int queue_add(struct shard *s, struct backend_state *bs, uint32_t max_queued,
	      struct queue_entry *e, uint64_t now_us, uint32_t timeout_ms,
	      struct queue_entry **victim)
{
	struct queue_entry *v = NULL;
	struct bqueue *q;
	struct qtenant *t;
	uint64_t hash, dl;
	int owed = -1, swap = 0;

	*victim = NULL;
	if (e->prio < 0)
		e->prio = 0;
	if (e->prio > QUEUE_PRIO_MAX)
		e->prio = QUEUE_PRIO_MAX;
	if (!e->weight)
		e->weight = 1;
	q = bq_get(s, bs);
	if (!q)
		return -ENOMEM;
	hash = XXH64(e->tenant_name, e->tenant_len, 0);
	e->tenant_bucket = (uint32_t)(hash & (TENANT_BUCKETS - 1));
	t = tenant_get(q, e->tenant_name, e->tenant_len, hash);
	if (!t)
		return -ENOMEM;
	if (e->tenant_max) {
		if (atomic_fetch_add(&bs->tenant_queued[e->tenant_bucket], 1) >= e->tenant_max) {
			atomic_fetch_sub(&bs->tenant_queued[e->tenant_bucket], 1);
			/* At its bound: e takes the place of its own tenant's
			 * youngest lower waiter on this shard, both places. */
			v = tenant_lowest_below(t, e->prio);
			if (!v || !v->tenant_counted) {
				tenant_put(t);
				return -EDQUOT;
			}
			swap = 1;
		}
		e->tenant_counted = true;
	}
	if (!swap && atomic_fetch_add(&bs->queued, 1) >= max_queued) {
		atomic_fetch_sub(&bs->queued, 1);
		/* Full: e takes the place of a lower waiter, here or elsewhere. */
		v = lowest_below(q, e->prio);
		if (!v)
			owed = remote_lowest(s, bs, e->prio);
		if (!v && owed < 0) {
			tenant_release(bs, e);
			tenant_put(t);
			return -ENOSPC;
		}
	}
	if (swap)
		v->tenant_counted = false; /* its tenant place is e's */
	if (v) {
		/* Its place is e's now. t is pinned meanwhile: v may be its
		 * only waiter, and an empty tenant is freed. */
		t->n++;
		entry_unlink(s, q, v);
		t->n--;
	}
	if (!e->t_queued_us) {
		e->t_queued_us = now_us;
		e->deadline_us = now_us + (uint64_t)timeout_ms * 1000u;
	}
	e->t_entered_us = now_us;
	t->weight = e->weight;
	entry_link(q, t, e);
	bq_publish(s, q);
	queue_arm_tick(s);
	dl = e->deadline_us;
	if (e->req_deadline_us && e->req_deadline_us < dl)
		dl = e->req_deadline_us;
	timer_arm(&s->tw, &e->timer, dl > now_us ? (dl - now_us + 999) / 1000 : 0);
	if (owed >= 0) {
		atomic_fetch_add(&bs->evict_owed[owed][e->prio], 1);
		xring_msg(s, s->peers[owed], MSG_WAKE);
	}
	*victim = v;
	return 0;
}

void queue_remove(struct shard *s, struct queue_entry *e)
{
	struct bqueue *q = e->bq;

	if (!q)
		return;
	entry_unlink(s, q, e);
	place_release(q->bs);
	bq_publish(s, q);
}

void queue_take(struct shard *s, struct queue_entry *e)
{
	struct bqueue *q = e->bq;

	if (!q)
		return;
	if (e->fair) {
		/* The tenant's next request starts a quantum later; the
		 * clock moves to this one's start. Races between shards only
		 * blur the order by a request or so. */
		struct backend_state *bs = q->bs;
		uint64_t st = tenant_start(bs, e->tenant), v;
		atomic_store_explicit(&bs->tenant_finish[e->tenant->bucket],
				      st + QUEUE_QUANTUM / (e->tenant->weight ? e->tenant->weight : 1),
				      memory_order_relaxed);
		v = atomic_load_explicit(&bs->vclock, memory_order_relaxed);
		while (v < st && !atomic_compare_exchange_weak(&bs->vclock, &v, st))
			;
	}
	entry_unlink(s, q, e);
	place_release(q->bs);
	bq_publish(s, q);
}

struct queue_entry *queue_front(struct bqueue *q)
{
	struct qtenant_level *tl, *best = NULL;
	uint64_t bst = UINT64_MAX;
	struct list *pos, *tmp;
	int p;

	if (!q->n)
		return NULL;
	p = 31 - __builtin_clz(q->levels);
	tl = container_of(q->ring[p].next, struct qtenant_level, ring);
	if (tl->ring.next != &q->ring[p]) {
		/* Several tenants: the smallest start tag; ties in join order. */
		list_for_each_safe(pos, tmp, &q->ring[p]) {
			struct qtenant_level *x = container_of(pos, struct qtenant_level, ring);
			struct qtenant *t = container_of(x, struct qtenant, lv[p]);
			uint64_t st = tenant_start(q->bs, t);
			if (st < bst) {
				bst = st;
				best = x;
			}
		}
		tl = best;
	}
	return container_of(tl->entries.next, struct queue_entry, node);
}

struct queue_entry *queue_owed_victim(struct shard *s, struct bqueue *q)
{
	struct backend_state *bs = q->bs;

	for (int p = QUEUE_PRIO_MAX; p >= 1; p--) {
		_Atomic uint32_t *o = &bs->evict_owed[s->id][p];
		uint32_t n = atomic_load(o);

		while (n) {
			struct queue_entry *v;
			if (!atomic_compare_exchange_weak(o, &n, n - 1))
				continue;
			v = lowest_below(q, p);
			if (v) {
				entry_unlink(s, q, v); /* its place went to the arrival */
				bq_publish(s, q);
				return v;
			}
			atomic_fetch_add(&bs->evict_debt, 1);
			n = atomic_load(o);
		}
	}
	return NULL;
}

/* The shard (other than skip) whose best waiter for bs goes before
 * (key, tie_id) -- ties go to the lower shard id -- or -1 if none does. */
static int best_waiter_shard(const struct shard *s, struct backend_state *bs, int skip,
			     uint64_t key, unsigned tie_id)
{
	uint64_t mask = atomic_load(&bs->waiting_shards);
	int best = -1;

	for (unsigned i = 0; mask && i < s->proxy_nshards; i++) {
		uint64_t ki;

		if (!(mask & (1ull << i)) || (int)i == skip)
			continue;
		ki = atomic_load(&bs->best_key[i]);
		if (ki < key || (ki == key && i < tie_id)) {
			key = ki;
			tie_id = i;
			best = (int)i;
		}
	}
	return best;
}

int queue_older_elsewhere(struct shard *s, struct bqueue *q, uint64_t key)
{
	atomic_store(&q->bs->best_key[s->id], key);
	int best = best_waiter_shard(s, q->bs, (int)s->id, key, s->id);

	if (best < 0)
		return 0;
	xring_msg(s, s->peers[best], MSG_WAKE);
	return 1;
}

void queue_slot_freed(struct shard *s, struct backend_state *bs)
{
	int best = best_waiter_shard(s, bs, -1, UINT64_MAX, UINT32_MAX);

	if (best < 0)
		return;
	if ((unsigned)best == s->id)
		s->retry_pending = 1;
	else
		xring_msg(s, s->peers[best], MSG_WAKE);
}

void queue_service_note(struct backend_state *bs, uint64_t us)
{
	uint32_t i = atomic_fetch_add_explicit(&bs->service_next, 1, memory_order_relaxed);

	atomic_store_explicit(&bs->service_us[i % SERVICE_SAMPLES],
			      us > UINT32_MAX ? UINT32_MAX : (uint32_t)(us ? us : 1),
			      memory_order_relaxed);
}

uint64_t queue_service_median(struct backend_state *bs)
{
	uint32_t v[SERVICE_SAMPLES], n = 0;

	for (unsigned i = 0; i < SERVICE_SAMPLES; i++) {
		uint32_t x = atomic_load_explicit(&bs->service_us[i], memory_order_relaxed);
		unsigned j = n;
		if (!x)
			continue; /* not written yet */
		while (j > 0 && v[j - 1] > x) {
			v[j] = v[j - 1];
			j--;
		}
		v[j] = x;
		n++;
	}
	return n ? v[n / 2] : 0;
}

uint64_t queue_wait_estimate_us(struct backend_state *bs, int prio, uint32_t max_ongoing)
{
	uint64_t ahead = 0;

	if (prio < 0)
		prio = 0;
	for (int p = prio; p < QUEUE_LEVELS; p++)
		ahead += atomic_load_explicit(&bs->queued_by_prio[p], memory_order_relaxed);
	return ahead * queue_service_median(bs) / (max_ongoing ? max_ongoing : 1);
}

void queue_shard_init(struct shard *s, void (*tick)(struct timer *t, void *ctx))
{
	timer_init(&s->queue_tick, tick);
}

void queue_shard_teardown(struct shard *s)
{
	struct list *pos;

	while ((pos = list_pop_front(&s->queued))) {
		struct bqueue *q = container_of(pos, struct bqueue, node);

		/* Entries left are their owners'; only unlink them. */
		for (unsigned p = 0; p < QUEUE_LEVELS; p++) {
			struct list *a;
			while ((a = list_pop_front(&q->age[p]))) {
				struct queue_entry *e = container_of(a, struct queue_entry, age_node);
				list_del_init(&e->node);
				timer_cancel(&s->tw, &e->timer);
				e->bq = NULL;
				e->tenant = NULL;
			}
		}
		for (unsigned i = 0; i < QUEUE_TENANT_HASH; i++) {
			struct list *h;
			while ((h = list_pop_front(&q->tenants[i])))
				mi_free(container_of(h, struct qtenant, hnode));
		}
		registry_backend_unref(q->bs);
		mi_free(q);
	}
}
