/* --peers (docs/operations.md "Several instances"): a helper thread finds
 * this instance in its peer set and re-shares the caps when the set
 * changes. Above proxy: it calls proxy_set_instance. */
#ifndef RINGROUTE_PEERS_H
#define RINGROUTE_PEERS_H

#include <stddef.h>
#include <stdint.h>

struct proxy;

/* This instance's place in the --peers set now: resolve, then
 * instance_derive with the addresses it answers on (its --listen address
 * when that is not the wildcard, else this machine's IPv4 addresses from
 * getifaddrs) and the port it listens on. 0 with *index and *count; 1
 * when no peer is this instance (*index INSTANCE_NONE, *count the set's
 * size, err saying so); -1 with err set when resolution failed. Blocks
 * on DNS. */
int peers_find(struct proxy *p, uint32_t *index, uint32_t *count, char *err,
			size_t errlen);

/* Each round of the helper thread: peers_find, then proxy_set_instance.
 * Not in the set: INSTANCE_NONE (no share of any cap, /readyz 503: the
 * others' shares already sum to every cap). Resolution failed: the last
 * I/N stay. Each problem is logged once, until it changes. */

struct peers;
/* Starts the helper thread running a round every period. said: the
 * problem peers_find reported at start and the caller logged ("" or NULL:
 * none), not to be logged again while it stays. 0, or -errno. */
int peers_start(struct proxy *p, const char *said, struct peers **out);
void peers_stop(struct peers *ip); /* NULL: nothing */

#endif
