/* Unit tests for readiness (service.c): the phases (starting, live,
 * draining; "starting" cannot be seen from outside, the admin port opens
 * only just before the phase turns live) and what --ready-requires-healthy
 * asks of the replicas. A proxy without shards: only its phase, options
 * and current snapshot are read. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ringroute/proxy.h"
#include "ringroute/router.h"
#include "ringroute/service.h"

static const char doc[] =
	"{\"backends\": {"
	"   \"a\": {\"replicas\": {\"a1\": \"127.0.0.1:1\", \"a2\": \"127.0.0.1:2\"}},"
	"   \"b\": {\"replicas\": {\"b1\": \"127.0.0.1:3\"}},"
	"   \"shadow\": {\"replicas\": {\"s1\": \"127.0.0.1:4\"}},"
	"   \"idle\": {\"replicas\": {\"i1\": \"127.0.0.1:5\"}}},"
	" \"endpoints\": {"
	"   \"ea\": {\"route\": \"/a\", \"traffic\": {\"a\": 1, \"idle\": 0},"
	"          \"shadow\": {\"shadow\": 0.5}},"
	"   \"eb\": {\"route\": \"/b\", \"traffic\": {\"b\": 1}}}}";

struct fixture {
	struct proxy p;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char err[512];

	assert_non_null(f);
	pthread_mutex_init(&f->p.config_lock, NULL);
	if (config_parse(doc, strlen(doc), "test.json", NULL, &f->p.config, err, sizeof(err)))
		fail_msg("%s", err);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	config_unref(f->p.config);
	pthread_mutex_destroy(&f->p.config_lock);
	free(f);
	return 0;
}

static struct replica_state *replica(struct proxy *p, const char *backend, size_t i)
{
	const struct backend_cfg *b = config_backend(p->config, backend);

	assert_non_null(b);
	assert_true(i < b->nreplicas);
	return b->replicas[i].state;
}

static void set_healthy(struct proxy *p, const char *backend, int healthy)
{
	const struct backend_cfg *b = config_backend(p->config, backend);

	for (size_t i = 0; i < b->nreplicas; i++)
		atomic_store(&b->replicas[i].state->healthy, (uint32_t)healthy);
}

static void expect(struct proxy *p, int ready, const char *why)
{
	char got[128] = "";

	assert_int_equal(service_ready(p, got, sizeof(got)), ready);
	if (!ready)
		assert_string_equal(got, why);
}

static void test_phases(void **state)
{
	struct fixture *f = *state;

	/* The phase decides first, with or without the flag. */
	for (int flag = 0; flag <= 1; flag++) {
		f->p.opt.ready_requires_healthy = flag;
		atomic_store(&f->p.phase, PHASE_STARTING);
		expect(&f->p, 0, "starting");
		atomic_store(&f->p.phase, PHASE_LIVE);
		expect(&f->p, 1, NULL);
		atomic_store(&f->p.phase, PHASE_DRAINING);
		expect(&f->p, 0, "draining");
	}
}

static void test_requires_healthy(void **state)
{
	struct fixture *f = *state;

	atomic_store(&f->p.phase, PHASE_LIVE);
	set_healthy(&f->p, "a", 0);
	set_healthy(&f->p, "b", 0);
	/* Without the flag the replicas do not matter. */
	f->p.opt.ready_requires_healthy = 0;
	expect(&f->p, 1, NULL);
	f->p.opt.ready_requires_healthy = 1;
	expect(&f->p, 0, "no endpoint has a healthy replica");
	/* A backend only shadowed, or at weight 0, serves no endpoint. */
	assert_true(router_replica_up(replica(&f->p, "shadow", 0)));
	assert_true(router_replica_up(replica(&f->p, "idle", 0)));
	assert_false(service_config_servable(f->p.config));
	/* One replica of one endpoint is enough. */
	atomic_store(&replica(&f->p, "a", 1)->healthy, 1);
	expect(&f->p, 1, NULL);
	/* A draining replica (removed from the config) is not up. */
	atomic_store(&replica(&f->p, "a", 1)->draining, 1);
	expect(&f->p, 0, "no endpoint has a healthy replica");
	atomic_store(&replica(&f->p, "a", 1)->draining, 0);
	set_healthy(&f->p, "a", 0);
	set_healthy(&f->p, "b", 1);
	expect(&f->p, 1, NULL);
}

static void test_no_endpoints(void **state)
{
	static const char empty[] = "{\"backends\": {\"a\": {\"replicas\": {\"a1\": "
				    "\"127.0.0.1:1\"}}}, \"endpoints\": {}}";
	struct config *c = NULL;
	char err[512];

	(void)state;
	if (config_parse(empty, strlen(empty), "empty.json", NULL, &c, err, sizeof(err)))
		fail_msg("%s", err);
	assert_false(service_config_servable(c));
	config_unref(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_phases, setup, teardown),
		cmocka_unit_test_setup_teardown(test_requires_healthy, setup, teardown),
		cmocka_unit_test(test_no_endpoints),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
