/* ctl_http: the control-plane HTTP/1.1 server. One thread runs one poll()
 * loop over the control socket (--control PATH, Unix, mode 0600,
 * read-write), the admin port (--admin ADDR:PORT, TCP, read-only), their
 * connections (parsed with llhttp, pipelining kept in order, idle
 * timeouts), the /v1/queues?watch=1 streams and the --report-url client
 * (report.h), whose timer is the loop's. Every request is answered by
 * ctl_api; this module only moves bytes. */
#ifndef RINGROUTE_CTL_HTTP_H
#define RINGROUTE_CTL_HTTP_H

#include <stdint.h>

struct ctl_api;
struct ctl_http;

/* Binds what api->p->opt names (control socket, admin port, report URL),
 * then starts the thread. *admin_port receives the admin port actually
 * bound (0 if none). Returns 0 and *out, or -errno with a message on
 * stderr and nothing left behind. api must outlive the server. */
int ctl_http_start(struct ctl_api *api, struct ctl_http **out, uint16_t *admin_port);
/* Stops the thread, closes every socket (unlinking the Unix socket) and
 * frees the server. NULL is a no-op. */
void ctl_http_stop(struct ctl_http *h);

#endif
