/* The words for a health probe's result: see health_result.h. */
#include "ringroute/health_result.h"

#include <stdio.h>
#include <string.h>

const char *health_reason(uint32_t result, char *buf, size_t n)
{
	unsigned v = result & 0xffffu;

	switch ((enum health_kind)(result >> 16)) {
	case HEALTH_NONE: snprintf(buf, n, "not probed yet"); break;
	case HEALTH_OK: snprintf(buf, n, "ok"); break;
	case HEALTH_STATUS: snprintf(buf, n, "status %u", v); break;
	case HEALTH_TIMEOUT: snprintf(buf, n, "timeout"); break;
	case HEALTH_CONNECT: snprintf(buf, n, "connect: %s", strerror((int)v)); break;
	case HEALTH_CLOSED: snprintf(buf, n, "closed without answering"); break;
	case HEALTH_NOT_HTTP: snprintf(buf, n, "not an HTTP/1 answer"); break;
	case HEALTH_IO: snprintf(buf, n, "i/o: %s", strerror((int)v)); break;
	case HEALTH_PATH: snprintf(buf, n, "health_check path too long"); break;
	default: snprintf(buf, n, "unknown"); break;
	}
	return buf;
}
