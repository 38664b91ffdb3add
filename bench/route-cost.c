/* bench/route-cost: what one replica choice costs, in ns, single-threaded, with
 * the slot taken and given back each time (no I/O): p2c; policy prefix on a
 * 205 B chat body (the model scan, the prompt scan, block hashing, the table
 * lookup and record, the least-loaded scan); multiplex (16 model ids, 4
 * replicas of 8). Usage: route-cost [ITERATIONS] (default 2000000), 3 rounds. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ringroute/model.h"
#include "ringroute/multiplex.h"
#include "ringroute/prefix.h"
#include "ringroute/router.h"

static const char doc[] =
	"{\"backends\": {"
	" \"prefix\": {\"policy\": \"prefix\", \"max_ongoing_requests\": 10000,"
	"  \"replicas\": {\"r1\": \"127.0.0.1:1\", \"r2\": \"127.0.0.1:2\"}},"
	" \"p2c\": {\"max_ongoing_requests\": 10000,"
	"  \"replicas\": {\"r1\": \"127.0.0.1:1\", \"r2\": \"127.0.0.1:2\"}},"
	" \"mux\": {\"multiplex\": {\"max_models_per_replica\": 8}, \"max_ongoing_requests\": 10000,"
	"  \"replicas\": {\"r1\": \"127.0.0.1:1\", \"r2\": \"127.0.0.1:2\", \"r3\": \"127.0.0.1:3\","
	"   \"r4\": \"127.0.0.1:4\"}}},"
	" \"endpoints\": {}}";

static const char body[] =
	"{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"You are a careful "
	"assistant. Answer in short sentences, cite your sources and never invent facts or "
	"numbers.\"},{\"role\":\"user\",\"content\":\"hello there\"}]}";

static double now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 2000000;
	struct config *c;
	char err[256];
	uint64_t rng = 1;
	volatile int sink = 0;
	const struct backend_cfg *p, *q, *m;

	if (n <= 0 || config_parse(doc, strlen(doc), "route-cost", NULL, &c, err, sizeof(err))) {
		fprintf(stderr, "route-cost: %s\n", n <= 0 ? "ITERATIONS must be > 0" : err);
		return 2;
	}
	p = config_backend(c, "prefix");
	q = config_backend(c, "p2c");
	m = config_backend(c, "mux");
	for (int round = 0; round < 3; round++) {
		double t0 = now_ns(), t1, t2, t3;

		for (long i = 0; i < n; i++) {
			int k = router_pick_replica(q, NULL, 0, &rng, NULL);
			router_replica_release(q->replicas[k].state);
			sink += k;
		}
		t1 = now_ns();
		for (long i = 0; i < n; i++) {
			struct model_span sp[MODEL_PROMPT_SPANS], mv;
			uint64_t h[64];
			struct route_hint hint = {.blocks = h};
			int ns, k;

			sink += model_find(body, sizeof(body) - 1, &mv);
			ns = model_prompt(body, sizeof(body) - 1, sp, MODEL_PROMPT_SPANS);
			hint.nblocks = prefix_hash(sp, (size_t)ns, p->prefix.block_bytes, h, 64);
			k = router_pick_replica_hint(p, &hint, NULL, 0, &rng, NULL, 0);
			router_replica_release(p->replicas[k].state);
			sink += k;
		}
		t2 = now_ns();
		for (long i = 0; i < n; i++) {
			struct route_hint hint = {.mux_id = mux_id("lora", 4) + (uint64_t)(i & 15)};
			int k = router_pick_replica_hint(m, &hint, NULL, 0, &rng, NULL, 0);
			router_replica_release(m->replicas[k].state);
			sink += k;
		}
		t3 = now_ns();
		printf("p2c %.1f ns, prefix %.1f ns, multiplex %.1f ns per choice\n", (t1 - t0) / n,
		       (t2 - t1) / n, (t3 - t2) / n);
	}
	config_unref(c);
	return sink == -1; /* sink keeps the choices from being optimised away */
}
