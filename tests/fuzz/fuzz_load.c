/* Fuzz target: the parsers of server-reported load (src/load.c): the ORCA
 * endpoint-load-metrics header value (load_parse_orca) and a Prometheus
 * text scrape (load_parse_prom), both bytes a replica sends.
 *
 * Feeds: data[0] bit 0 chooses the parser (0: ORCA, 1: Prometheus with
 * the default gauge names); data[1..] is the input, copied into a buffer
 * of exactly its size, so reading one byte past it is an ASan report.
 *
 * Asserts:
 *  - the contract: LOAD_OK with at least one field, LOAD_NONE and LOAD_BAD
 *    with none (the report is all zero);
 *  - values in range: KV use <= LOAD_KV_ONE, the queue <= LOAD_QUEUE_MAX,
 *    each field zero unless its have bit is set;
 *  - the parse is a function of the bytes: a second run agrees;
 *  - no ASan/UBSan report. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ringroute/load.h"

#include "harness.h"

static enum load_parse run(int prom, const char *p, size_t n, struct load_report *r)
{
	if (prom)
		return load_parse_prom(p, n, "vllm:num_requests_waiting", "vllm:gpu_cache_usage_perc",
				       r);
	return load_parse_orca(p, n, r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct load_report r, again;
	enum load_parse rc, rc2;
	char *buf;
	int prom;

	if (size < 1)
		return 0;
	prom = data[0] & 1;
	buf = malloc(size - 1 ? size - 1 : 1);
	if (!buf)
		return 0;
	memcpy(buf, data + 1, size - 1);
	memset(&r, 0xa5, sizeof(r));
	rc = run(prom, buf, size - 1, &r);
	FZ_ASSERT(rc == LOAD_OK || rc == LOAD_NONE || rc == LOAD_BAD, "result %d", (int)rc);
	if (rc == LOAD_OK)
		FZ_ASSERT(r.have != 0, "LOAD_OK without a field");
	else
		FZ_ASSERT(r.have == 0 && r.queue == 0 && r.kv_ppm == 0, "fields set without LOAD_OK");
	FZ_ASSERT(!(r.have & ~(uint32_t)(LOAD_HAVE_QUEUE | LOAD_HAVE_KV)), "have %#x", r.have);
	FZ_ASSERT(r.kv_ppm <= LOAD_KV_ONE, "kv %u", r.kv_ppm);
	FZ_ASSERT(r.queue <= LOAD_QUEUE_MAX, "queue %u", r.queue);
	FZ_ASSERT((r.have & LOAD_HAVE_QUEUE) || r.queue == 0, "queue without its bit");
	FZ_ASSERT((r.have & LOAD_HAVE_KV) || r.kv_ppm == 0, "kv without its bit");
	rc2 = run(prom, buf, size - 1, &again);
	FZ_ASSERT(rc2 == rc && memcmp(&r, &again, sizeof(r)) == 0, "second parse differs");
	free(buf);
	return 0;
}
