/* Fuzz target: control API edits (ctl_api_edit_doc, src/ctl_api.c), the
 * pure core of every PUT/DELETE on the control socket: routing of method
 * and target, the whole-document edit, and validation of the result.
 *
 * Feeds: the input is "METHOD TARGET\n" then the body (all raw bytes, no
 * NUL needed); the edit is applied to a fixed valid document (two
 * backends, two endpoints, a shadow), then a second request from the rest
 * of the input after a line "\n--\n" (if any) is applied to the result, so
 * sequences of edits are explored.
 *
 * Asserts:
 *  - the status is one the contract names (200, 400, 404, 405, 409, 500);
 *  - 200 for a change leaves a document that config_parse accepts and
 *    whose canonical JSON parses back to itself (what the server would make
 *    current is always valid);
 *  - a non-200 answer carries a NUL-terminated, non-empty message;
 *  - no leak (LeakSanitizer after every input), no ASan/UBSan report. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "ringroute/config.h"
#include "ringroute/ctl_api.h"

#include "harness.h"

static const char base_doc[] =
	"{\"backends\": {"
	"\"a\": {\"max_ongoing_requests\": 2, \"replicas\": {\"r1\": \"127.0.0.1:9001\"}},"
	"\"b\": {\"policy\": \"round_robin\", \"replicas\": {\"r1\": \"127.0.0.1:9002\","
	" \"r2\": \"127.0.0.1:9003\"}, \"health_check\": {\"path\": \"/h\", \"interval_ms\": 500}}},"
	"\"endpoints\": {"
	"\"e1\": {\"route\": \"/predict\", \"methods\": [\"POST\"], \"traffic\": {\"a\": 0.9, \"b\": 0.1}},"
	"\"e2\": {\"route\": \"/\", \"traffic\": {\"b\": 1}, \"shadow\": {\"a\": 0.5}}}}";

/* One "METHOD TARGET\nBODY" request from data[0, n) applied to *doc. */
static void one_edit(json_t **doc, const char *data, size_t n)
{
	const char *sp = memchr(data, ' ', n), *nl;
	char method[16], err[512];
	json_t *before;
	size_t ml;
	int st;

	if (!sp)
		return;
	ml = (size_t)(sp - data);
	if (ml == 0 || ml >= sizeof(method))
		return;
	memcpy(method, data, ml);
	method[ml] = '\0';
	nl = memchr(sp + 1, '\n', n - ml - 1);
	if (!nl)
		nl = data + n;
	memset(err, 'x', sizeof(err));
	err[0] = '\0';
	before = json_deep_copy(*doc);
	FZ_ASSERT(before != NULL, "out of memory");
	st = ctl_api_edit_doc(doc, method, sp + 1, (size_t)(nl - sp - 1),
			      nl < data + n ? nl + 1 : NULL, nl < data + n ? (size_t)(data + n - nl - 1) : 0,
			      err, sizeof(err));
	FZ_ASSERT(st == 200 || st == 400 || st == 404 || st == 405 || st == 409 || st == 500,
		  "status %d", st);
	if (st != 200) {
		FZ_ASSERT(memchr(err, '\0', sizeof(err)) != NULL, "message not terminated");
		FZ_ASSERT(err[0] != '\0', "status %d without a message", st);
		/* The server throws a refused edit's document away (ctl_api.h):
		 * the next edit starts from what was current. */
		json_decref(*doc);
		*doc = before;
		return;
	}
	json_decref(before);
	/* What would become current must validate, and be a fixed point. */
	{
		char *text = json_dumps(*doc, JSON_COMPACT | JSON_SORT_KEYS);
		struct config *c = NULL, *again = NULL;
		int rc;

		FZ_ASSERT(text != NULL, "200 with a document that does not dump");
		rc = config_parse(text, strlen(text), "edited", NULL, &c, err, sizeof(err));
		if (rc)
			fz_dump("edited", text, strlen(text));
		FZ_ASSERT(rc == 0, "200 but the result does not validate: %s", err);
		rc = config_parse(c->json, strlen(c->json), "canonical", NULL, &again, err, sizeof(err));
		FZ_ASSERT(rc == 0 && strcmp(again->json, c->json) == 0, "canonical JSON not a fixed point");
		config_unref(again);
		config_unref(c);
		free(text);
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fz_dns_offline();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data, *sep;
	json_error_t jerr;
	json_t *doc = json_loads(base_doc, 0, &jerr);

	FZ_ASSERT(doc != NULL, "base document: %s", jerr.text);
	sep = size >= 4 ? memmem(p, size, "\n--\n", 4) : NULL;
	if (sep) {
		one_edit(&doc, p, (size_t)(sep - p));
		one_edit(&doc, sep + 4, size - (size_t)(sep - p) - 4);
	} else {
		one_edit(&doc, p, size);
	}
	json_decref(doc);
	return 0;
}
