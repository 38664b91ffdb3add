#include "ringroute/health.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ringroute/alloc.h"
#include "ringroute/proxy.h"

#define HEALTH_TICK_MS 100

struct health {
	struct proxy *p;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int stop;
};

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Wait for fd to be ready for events until deadline. 1 ready, 0 not. */
static int wait_fd(int fd, short events, uint64_t deadline)
{
	struct pollfd pfd = {.fd = fd, .events = events};
	uint64_t now = mono_ms();
	if (now >= deadline)
		return 0;
	return poll(&pfd, 1, (int)(deadline - now)) == 1 && !(pfd.revents & POLLNVAL);
}

/* One probe: 1 when the replica answered 2xx before timeout_ms, else 0. */
static int probe(const struct sockaddr_in *addr, const char *path, uint32_t timeout_ms)
{
	uint64_t deadline = mono_ms() + timeout_ms;
	char req[1024], resp[64];
	int fd, len, n, got = 0, ok = 0, soerr = 0;
	socklen_t sl = sizeof(soerr);

	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return 0;
	if (connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) && errno != EINPROGRESS)
		goto out;
	if (!wait_fd(fd, POLLOUT, deadline) || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) ||
	    soerr)
		goto out;
	len = snprintf(req, sizeof(req),
		       "GET %s HTTP/1.1\r\nHost: ringroute-health\r\nConnection: close\r\n\r\n", path);
	if (send(fd, req, (size_t)len, MSG_NOSIGNAL) != len)
		goto out;
	while (got < 12 && wait_fd(fd, POLLIN, deadline)) {
		n = (int)recv(fd, resp + got, sizeof(resp) - 1 - (size_t)got, 0);
		if (n <= 0)
			break;
		got += n;
	}
	resp[got] = '\0';
	/* "HTTP/1.x 2xx" */
	ok = got >= 12 && strncmp(resp, "HTTP/1.", 7) == 0 && resp[9] == '2';
out:
	close(fd);
	return ok;
}

/* Last probe time per backend, by name, across config changes. */
struct hc_slot {
	char *name;
	uint64_t last_ms;
};

static void *health_main(void *arg)
{
	struct health *h = arg;
	struct hc_slot *slots = NULL;
	size_t nslots = 0;

	pthread_mutex_lock(&h->lock);
	while (!h->stop) {
		struct timespec until;
		struct config *c;
		uint64_t now = mono_ms();

		pthread_mutex_unlock(&h->lock);
		c = proxy_config_get(h->p);
		for (size_t i = 0; i < c->nbackends; i++) {
			const struct backend_cfg *b = &c->backends[i];
			struct hc_slot *slot = NULL;
			if (!b->hc_path)
				continue;
			for (size_t k = 0; k < nslots; k++)
				if (strcmp(slots[k].name, b->name) == 0)
					slot = &slots[k];
			if (!slot) {
				struct hc_slot *v = mi_realloc(slots, (nslots + 1) * sizeof(*v));
				if (!v)
					continue;
				slots = v;
				slot = &slots[nslots++];
				slot->name = mi_strdup(b->name);
				slot->last_ms = 0;
			}
			if (slot->last_ms && now - slot->last_ms < b->hc_interval_ms)
				continue;
			slot->last_ms = now;
			for (size_t r = 0; r < b->nreplicas; r++) {
				uint32_t t = b->hc_interval_ms / 2 < 1000 ? b->hc_interval_ms / 2 : 1000;
				int ok = probe(&b->replicas[r].addr, b->hc_path, t);
				if (atomic_exchange(&b->replicas[r].state->healthy, (uint32_t)ok) !=
				    (uint32_t)ok)
					fprintf(stderr, "ringroute: replica %s/%s is %s\n", b->name,
						b->replicas[r].id, ok ? "healthy" : "unhealthy");
			}
		}
		config_unref(c);
		pthread_mutex_lock(&h->lock);
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += HEALTH_TICK_MS * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		if (!h->stop)
			pthread_cond_timedwait(&h->cond, &h->lock, &until);
	}
	pthread_mutex_unlock(&h->lock);
	for (size_t k = 0; k < nslots; k++)
		mi_free(slots[k].name);
	mi_free(slots);
	return NULL;
}

int health_start(struct proxy *p, struct health **out)
{
	struct health *h = mi_zalloc(sizeof(*h));
	int ret;
	if (!h)
		return -ENOMEM;
	h->p = p;
	pthread_mutex_init(&h->lock, NULL);
	pthread_cond_init(&h->cond, NULL);
	ret = pthread_create(&h->thread, NULL, health_main, h);
	if (ret) {
		pthread_cond_destroy(&h->cond);
		pthread_mutex_destroy(&h->lock);
		mi_free(h);
		return -ret;
	}
	*out = h;
	return 0;
}

void health_stop(struct health *h)
{
	if (!h)
		return;
	pthread_mutex_lock(&h->lock);
	h->stop = 1;
	pthread_cond_signal(&h->cond);
	pthread_mutex_unlock(&h->lock);
	pthread_join(h->thread, NULL);
	pthread_cond_destroy(&h->cond);
	pthread_mutex_destroy(&h->lock);
	mi_free(h);
}
