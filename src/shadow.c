/* Shadow copies (see shadow.h). */
#include "ringroute/shadow.h"

#include "ringroute/alloc.h"
#include "ringroute/clock.h"
#include "ringroute/request.h"
#include "ringroute/router.h"
#include "ringroute/shard.h"
#include "ringroute/upstream.h"

void shadow_start(struct shard *s, struct request *req)
{
	const struct endpoint_cfg *ep = req->ep;

	for (size_t i = 0; i < ep->nshadow; i++) {
		struct request *sh;

		if (router_rand_unit(&s->rng) >= ep->shadow[i].weight)
			continue;
		sh = mi_zalloc(sizeof(*sh));
		if (!sh)
			return; /* a copy is best effort */
		sh->s = s;
		sh->flags = REQ_F_SHADOW | REQ_F_NO_REPLAY;
		sh->cfg = req->cfg;
		config_ref(sh->cfg);
		sh->ep = ep;
		sh->be = ep->shadow[i].backend;
		sh->ridx = -1;
		sh->is_head = req->is_head;
		sh->t_start_us = req->t_start_us;
		queue_entry_init(&sh->qe);
		list_init(&sh->shadows);
		list_init(&sh->shadow_node);
		if (sb_put(&sh->head, req->head.p, req->head.len)) {
			req_end(s, sh);
			return;
		}
		list_push_back(&req->shadows, &sh->shadow_node);
		req_dispatch(s, sh, 0); /* may end sh (no free slot) */
	}
}

void shadow_body(struct shard *s, struct request *req, uint32_t bid, const char *p, size_t len)
{
	struct list *pos, *tmp;

	list_for_each_safe(pos, tmp, &req->shadows) {
		struct request *sh = container_of(pos, struct request, shadow_node);

		/* A slow shadow must never hold the client back: cut it. */
		if (!sh->up || upstream_congested(sh->up) || upstream_body(s, sh->up, bid, p, len))
			req_end(s, sh);
	}
}

void shadow_detach(struct request *req)
{
	struct list *n;

	while ((n = list_pop_front(&req->shadows)))
		container_of(n, struct request, shadow_node)->flags |= REQ_F_BODY_DONE;
}

void shadow_abort(struct shard *s, struct request *req)
{
	struct list *n;

	while ((n = list_pop_front(&req->shadows)))
		req_end(s, container_of(n, struct request, shadow_node));
}
