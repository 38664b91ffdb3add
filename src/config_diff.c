/* What a change changed, in words, for the process log (log.h): compares
 * the canonical JSON of two snapshots section by section, then the
 * replicas DNS names stand for (which the JSON does not show). */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "ringroute/config.h"
#include "ringroute/strbuf.h"

static void sep(struct strbuf *out)
{
	if (out->len)
		sb_puts(out, "; ");
}

/* Appends to out, after "prefix", every key of b that a lacks ("K added"),
 * that differs ("K", or for two objects the same one level down: "K.SUB
 * added") and every key of a that b lacks ("K removed"). *first: no
 * separator before the next item yet. */
static void diff_keys(json_t *a, json_t *b, const char *prefix, int depth, int *first,
		      struct strbuf *out)
{
	const char *key;
	json_t *x, *y;

	json_object_foreach(b, key, x) {
		y = json_object_get(a, key);
		if (y && json_equal(x, y))
			continue;
		if (y && depth == 0 && json_is_object(x) && json_is_object(y)) {
			char sub[256];
			snprintf(sub, sizeof(sub), "%s%s.", prefix, key);
			diff_keys(y, x, sub, 1, first, out);
			continue;
		}
		sb_printf(out, "%s%s%s%s", *first ? "" : ", ", prefix, key, y ? "" : " added");
		*first = 0;
	}
	json_object_foreach(a, key, x) {
		if (json_object_get(b, key))
			continue;
		sb_printf(out, "%s%s%s removed", *first ? "" : ", ", prefix, key);
		*first = 0;
	}
}

/* Appends "NOUN NAME added|removed|changed (keys)" for every member of
 * section that differs between a and b. */
static void diff_section(json_t *a, json_t *b, const char *noun, struct strbuf *out)
{
	const char *name;
	json_t *va, *vb;

	json_object_foreach(b, name, vb) {
		int first = 1;

		va = json_object_get(a, name);
		if (va && json_equal(va, vb))
			continue;
		sep(out);
		if (!va) {
			sb_printf(out, "%s %s added", noun, name);
			continue;
		}
		sb_printf(out, "%s %s changed (", noun, name);
		diff_keys(va, vb, "", 0, &first, out);
		sb_puts(out, ")");
	}
	json_object_foreach(a, name, va) {
		if (!json_object_get(b, name)) {
			sep(out);
			sb_printf(out, "%s %s removed", noun, name);
		}
	}
}

/* 1 if b has a replica with id. */
static int has_replica(const struct backend_cfg *b, const char *id)
{
	for (size_t i = 0; i < b->nreplicas; i++)
		if (strcmp(b->replicas[i].id, id) == 0)
			return 1;
	return 0;
}

/* The replica of b with id, or NULL. */
static const struct replica_cfg *find_replica(const struct backend_cfg *b, const char *id)
{
	for (size_t i = 0; i < b->nreplicas; i++)
		if (strcmp(b->replicas[i].id, id) == 0)
			return &b->replicas[i];
	return NULL;
}

/* Appends "backend B resolved (replicas.ID/ADDRESS added, ... removed,
 * ... weight 50 -> 75)" for every backend whose DNS names stand for other
 * addresses (or, SRV records, weights) than before: a change the
 * documents, being equal, do not show. */
static void diff_resolved(const struct config *old, const struct config *new,
			  struct strbuf *out)
{
	for (size_t i = 0; i < new->nbackends; i++) {
		const struct backend_cfg *b = &new->backends[i], *a = config_backend(old, b->name);
		int first = 1;

		if (!a)
			continue;
		for (int pass = 0; pass < 2; pass++) {
			const struct backend_cfg *x = pass ? a : b, *y = pass ? b : a;
			for (size_t j = 0; j < x->nreplicas; j++) {
				if (!x->replicas[j].host || has_replica(y, x->replicas[j].id))
					continue;
				if (first) {
					sep(out);
					sb_printf(out, "backend %s resolved (", b->name);
				}
				sb_printf(out, "%sreplicas.%s %s", first ? "" : ", ", x->replicas[j].id,
					  pass ? "removed" : "added");
				first = 0;
			}
		}
		for (size_t j = 0; j < b->nreplicas; j++) {
			const struct replica_cfg *r = &b->replicas[j], *o;
			/* the document's weight is the same: the SRV record's changed */
			if (!r->host || !(o = find_replica(a, r->id)) || o->weight == r->weight ||
			    o->doc_weight != r->doc_weight)
				continue;
			if (first) {
				sep(out);
				sb_printf(out, "backend %s resolved (", b->name);
			}
			sb_printf(out, "%sreplicas.%s weight %u -> %u", first ? "" : ", ", r->id,
				  (unsigned)o->weight, (unsigned)r->weight);
			first = 0;
		}
		if (!first)
			sb_puts(out, ")");
	}
}

/* See config.h. */
int config_diff(const struct config *old, const struct config *new, struct strbuf *out)
{
	json_t *a = old ? json_loads(old->json, 0, NULL) : json_object();
	json_t *b = json_loads(new->json, 0, NULL);
	size_t len0 = out->len;

	if (!a || !b) {
		json_decref(a);
		json_decref(b);
		return -1;
	}
	diff_section(json_object_get(a, "backends"), json_object_get(b, "backends"), "backend",
		     out);
	diff_section(json_object_get(a, "endpoints"), json_object_get(b, "endpoints"),
		     "endpoint", out);
	if (old)
		diff_resolved(old, new, out);
	if (old && old->dns_refresh_ms != new->dns_refresh_ms) {
		sep(out);
		sb_printf(out, "dns_refresh_ms %u", (unsigned)new->dns_refresh_ms);
	}
	if (out->len == len0)
		sb_puts(out, "nothing changed");
	json_decref(a);
	json_decref(b);
	return 0;
}
