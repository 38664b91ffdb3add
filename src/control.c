/* control: the glue main.c sees (control.h). It owns the API state
 * (ctl_api: routes, edits, change_lock) and the server that feeds it
 * (ctl_http: sockets, connections, watch streams, reports), and lets SIGHUP
 * reloads go through the same serialised change path. */
#include "ringroute/control.h"

#include <errno.h>

#include "ringroute/alloc.h"
#include "ringroute/ctl_api.h"
#include "ringroute/ctl_http.h"

struct control {
	struct ctl_api api;
	struct ctl_http *http;
};

/* See control.h. */
int control_start(struct proxy *p, struct control **out, uint16_t *admin_port)
{
	struct control *ctl;
	int rc;

	*out = NULL;
	*admin_port = 0;
	ctl = mi_zalloc(sizeof(*ctl));
	if (!ctl)
		return -ENOMEM;
	rc = ctl_api_init(&ctl->api, p);
	if (rc)
		goto fail_free;
	rc = ctl_http_start(&ctl->api, &ctl->http, admin_port);
	if (rc)
		goto fail_api;
	*out = ctl;
	return 0;
fail_api:
	ctl_api_destroy(&ctl->api);
fail_free:
	mi_free(ctl);
	return rc;
}

/* See control.h. The server goes first: nothing calls the API after it. */
void control_stop(struct control *ctl)
{
	if (!ctl)
		return;
	ctl_http_stop(ctl->http);
	ctl->http = NULL;
	ctl_api_destroy(&ctl->api);
	mi_free(ctl);
}

/* See control.h. */
int control_reload(struct control *ctl, const char *path, char *err, size_t errlen)
{
	return ctl_api_reload(&ctl->api, path, err, errlen);
}
