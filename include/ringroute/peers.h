/* --peers (docs/operations.md "Several instances"): a helper thread finds
 * this instance in its peer set and re-shares the caps when the set
 * changes. Above proxy: it calls proxy_set_instance. */
#ifndef RINGROUTE_PEERS_H
#define RINGROUTE_PEERS_H

#include <stddef.h>
#include <stdint.h>

struct proxy;

/* This instance's place in the --peers set now: resolve, then
 * instance_derive with this machine's IPv4 addresses (getifaddrs, plus
 * the --listen address) and the port it listens on. 0 with *index and
 * *count, or -1 with err set (resolution failed, or no peer is this
 * instance). Blocks on DNS. */
int peers_find(struct proxy *p, uint32_t *index, uint32_t *count, char *err,
			size_t errlen);

/* One round of the helper thread: peers_find, then
 * proxy_set_instance. An instance that cannot find itself keeps its
 * last I/N, with a warning. */
void peers_round(struct proxy *p);

struct peers;
/* Starts the helper thread running peers_round every period.
 * 0, or -errno. */
int peers_start(struct proxy *p, struct peers **out);
void peers_stop(struct peers *ip); /* NULL: nothing */

#endif
