/* PLACEHOLDER written by the lead so main.c links; the control-plane helper
 * replaces this whole file with the real control module. */
#include <errno.h>
#include <stdio.h>

#include "ringroute/control.h"

int control_start(struct proxy *p, struct control **out, uint16_t *admin_port)
{
	(void)p;
	*out = NULL;
	*admin_port = 0;
	fprintf(stderr, "ringroute: control plane not built yet\n");
	return -ENOSYS;
}

void control_stop(struct control *ctl) { (void)ctl; }

int control_reload(struct control *ctl, const char *path, char *err, size_t errlen)
{
	(void)ctl; (void)path;
	snprintf(err, errlen, "control plane not built yet");
	return -ENOSYS;
}
