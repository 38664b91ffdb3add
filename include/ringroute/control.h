/* The control plane: the control socket (--control PATH, Unix, mode 0600,
 * HTTP/1.1 + JSON, read-write) and the admin port (--admin ADDR:PORT, TCP,
 * read-only GETs), served by one control thread; plus queue-length reports
 * (--report-url). See README "Changing it live". */
#ifndef RINGROUTE_CONTROL_H
#define RINGROUTE_CONTROL_H

#include <stddef.h>
#include <stdint.h>

struct proxy;
struct control;

/* Bind the control socket and/or admin port named in p->opt and start the
 * control thread. *admin_port receives the admin port actually bound (0 if
 * none). Returns 0 and *out, or -errno with a message on stderr. */
int control_start(struct proxy *p, struct control **out, uint16_t *admin_port);
/* Stop the thread, close the sockets (unlinking the Unix socket), free. */
void control_stop(struct control *ctl);

/* Reload the config file at path as one change (SIGHUP), serialised with the
 * changes made through the control socket: a reload never interleaves with a
 * PUT/DELETE. Returns 0 when the new snapshot is current, or -errno with err
 * holding the reason (nothing changed, except for a shard that could not be
 * reached: see proxy_change). Callable from any thread. */
int control_reload(struct control *ctl, const char *path, char *err, size_t errlen);

#endif
