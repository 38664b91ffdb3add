/* What a JSON request body says for routing (docs/config.md "Routing by
 * model"): the top-level "model" string and the prompt ("prompt", or the
 * "content" strings of "messages" in order). Pure scanning over bytes the
 * caller holds: nothing is allocated, nothing outside the top-level object
 * is parsed beyond skipping it (strings and brackets), so a "model" inside
 * a nested object never counts. Lenient: it finds keys in well-formed
 * JSON and says "not JSON" (-1) for what it cannot walk; it does not
 * validate (the replica does). Keys are compared as written (an escaped
 * key such as "mod\u0065l" is not "model"); the first of duplicate keys
 * wins. */
#ifndef RINGROUTE_MODEL_H
#define RINGROUTE_MODEL_H

#include <stddef.h>

/* Bytes inside a JSON string of the body: between its quotes, escapes
 * as written (not decoded). */
struct model_span {
	const char *p;
	size_t len;
};

/* The longest model name compared (decoded); a longer one is no model. */
#define MODEL_NAME_MAX 256
/* The most prompt strings model_prompt reports; more are left out. */
#define MODEL_PROMPT_SPANS 64

/* Find the top-level "model" string of the JSON object body[0..len).
 * Returns 1 with *val (its raw contents; val->p - 1 is its opening
 * quote), 0 when body is an object without a top-level "model" string,
 * -1 when it is not a JSON object (or is cut short before the key). */
int model_find(const char *body, size_t len, struct model_span *val);

/* Decode the JSON escapes of a string's raw contents into out (at most
 * cap bytes, not NUL-terminated): \" \\ \/ \b \f \n \r \t and \uXXXX
 * (UTF-8, surrogate pairs joined). Returns the decoded length, or -1 for
 * a bad escape or when it does not fit. */
long model_decode(const struct model_span *raw, char *out, size_t cap);

/* The prompt of the JSON object body: the top-level "prompt" string (or
 * the strings of a "prompt" array), else the "content" of each element of
 * the top-level "messages" array, in order: a string, or the "text"
 * strings of an array of content parts ({"type": "text", "text": ...};
 * other contents are passed over). Up to max spans into *spans (raw
 * contents: prefix hashing hashes the bytes as written, escapes and all,
 * which is deterministic and costs no copy). Returns the number of spans
 * (0: no prompt), or -1 when body is not a JSON object. */
int model_prompt(const char *body, size_t len, struct model_span *spans, size_t max);

#endif
