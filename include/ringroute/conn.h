/* Client connections and the requests they carry (the shard's front half),
 * and upstream connections to replicas (the back half). These are the hooks
 * the shard's completion dispatcher calls. */
#ifndef RINGROUTE_CONN_H
#define RINGROUTE_CONN_H

#include "ringroute/shard.h"

/* conn.c: client side */
void client_accept(struct shard *s, int fd);
void client_on_input(struct shard *s, struct sock *sk);
void client_on_sent(struct shard *s, struct sock *sk);
void client_on_error(struct shard *s, struct sock *sk, int err);
void client_free(struct shard *s, struct sock *sk);
/* Try to dispatch queued requests (a slot may have freed). Returns how many
 * left the queue for a replica. */
int client_retry_queued(struct shard *s);
/* A new snapshot is current: close what the old one no longer names. */
void client_config_changed(struct shard *s, struct config *old);

/* Per-shard set-up of the queue timer; stop (SIGTERM: idle connections
 * close now, busy ones after their response); teardown after the loop. */
void client_shard_init(struct shard *s);
void client_shard_stop(struct shard *s);
void client_shard_teardown(struct shard *s);

/* upstream.c: replica side */
void upstream_on_connect(struct shard *s, struct sock *sk, int res);
void upstream_on_input(struct shard *s, struct sock *sk);
void upstream_on_sent(struct shard *s, struct sock *sk);
void upstream_on_error(struct shard *s, struct sock *sk, int err);
void upstream_free(struct shard *s, struct sock *sk);
/* Close every idle pooled connection of replica r on this shard. */
void upstream_pool_drain(struct shard *s, struct replica_state *r);

#endif
