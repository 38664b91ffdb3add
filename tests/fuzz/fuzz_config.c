/* Fuzz target: config_parse() (include/ringroute/config.h) on arbitrary
 * documents, with no registry (reg NULL: private replica/backend states,
 * freed by the snapshot's last unref).
 *
 * Feeds: the whole input is the JSON document text (not NUL-terminated).
 *
 * Asserts:
 *  - the contract: 0 with a snapshot (refcount 1), or -EINVAL with no
 *    snapshot and a non-empty, NUL-terminated error message;
 *  - the canonical form is a fixed point (config.c's header comment:
 *    config->json parses back to an equal snapshot): config->json parses
 *    and its own canonical JSON is byte-identical;
 *  - config_unref frees everything: LeakSanitizer runs after every input,
 *    so a leak on any error path is a crash;
 *  - no ASan/UBSan report. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ringroute/config.h"

#include "harness.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fz_dns_offline();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config *c = NULL, *again = NULL;
	char err[512];
	int rc;

	memset(err, 'x', sizeof(err));
	rc = config_parse((const char *)data, size, "fuzz.json", NULL, &c, err, sizeof(err));
	FZ_ASSERT(memchr(err, '\0', sizeof(err)) != NULL, "error message not terminated");
	if (rc) {
		FZ_ASSERT(rc == -EINVAL, "config_parse returned %d", rc);
		FZ_ASSERT(c == NULL, "snapshot returned with an error");
		FZ_ASSERT(err[0] != '\0', "error without a message");
		return 0;
	}
	FZ_ASSERT(c != NULL, "success without a snapshot");
	FZ_ASSERT(atomic_load(&c->refs) == 1, "fresh snapshot with %u refs", atomic_load(&c->refs));
	FZ_ASSERT(c->json != NULL, "no canonical JSON");

	rc = config_parse(c->json, strlen(c->json), "canonical", NULL, &again, err, sizeof(err));
	if (rc) {
		fz_dump("canonical", c->json, strlen(c->json));
		FZ_ASSERT(0, "canonical JSON does not parse: %s", err);
	}
	if (strcmp(again->json, c->json) != 0) {
		fz_dump("canonical", c->json, strlen(c->json));
		fz_dump("canonical of canonical", again->json, strlen(again->json));
		FZ_ASSERT(0, "canonical JSON is not a fixed point");
	}
	config_unref(again);
	config_unref(c);
	return 0;
}
