/* watch: see watch.h. */
#include "ringroute/watch.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <xxhash.h>

#include "ringroute/alloc.h"
#include "ringroute/log.h"
#include "ringroute/strbuf.h"

/* Events are taken in bursts: a ConfigMap update or an editor's save is
 * several (create, rename, delete); the file is read once they pause. */
#define WATCH_QUIET_MS 50

/* A change: a file written and closed, or a name created or renamed into
 * the directory (ConfigMap ..data swap, editor save, ln -sfn). */
#define WATCH_MASK (IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE)

struct config_watch {
	char *path;
	int ino_fd;
	int wake_fd;          /* eventfd: config_watch_stop() wakes the thread */
	pthread_t thread;
	uint64_t hash;        /* content last seen */
	int have_hash;        /* 0: the file could not be read last time */
};

/* Hashes the file's content. 0, or -errno (missing for a moment during a
 * swap, unreadable: the next event looks again). */
static int file_hash(const char *path, uint64_t *out)
{
	struct strbuf sb = {0};
	char buf[16384];
	int fd = open(path, O_RDONLY | O_CLOEXEC), rc = 0;

	if (fd < 0)
		return -errno;
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = -errno;
			break;
		}
		if (n == 0)
			break;
		if (sb_put(&sb, buf, (size_t)n)) {
			rc = -ENOMEM;
			break;
		}
	}
	close(fd);
	if (!rc)
		*out = XXH64(sb.p ? sb.p : "", sb.len, 0);
	sb_free(&sb);
	return rc;
}

/* Reads every queued event (their names do not matter: the content
 * decides). 0, or -1 on an error other than "nothing more". */
static int drain_events(int fd)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));

	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n > 0)
			continue;
		if (n < 0 && errno == EINTR)
			continue;
		return n < 0 && errno != EAGAIN ? -1 : 0;
	}
}

static void *watch_thread(void *arg)
{
	struct config_watch *w = arg;

	for (;;) {
		struct pollfd pf[2] = {
			{ .fd = w->ino_fd, .events = POLLIN },
			{ .fd = w->wake_fd, .events = POLLIN },
		};
		uint64_t h;
		int n = poll(pf, 2, -1);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			log_error("--watch-config: poll: %s", strerror(errno));
			return NULL;
		}
		if (pf[1].revents)
			return NULL;
		/* Wait for the burst to end: poll again until quiet. */
		do {
			if (drain_events(w->ino_fd)) {
				log_error("--watch-config: inotify: %s", strerror(errno));
				return NULL;
			}
			n = poll(pf, 2, WATCH_QUIET_MS);
			if (n > 0 && pf[1].revents)
				return NULL;
		} while (n > 0 || (n < 0 && errno == EINTR));
		if (file_hash(w->path, &h))
			continue;
		if (w->have_hash && h == w->hash)
			continue;
		w->hash = h;
		w->have_hash = 1;
		log_info("--watch-config: %s changed: reloading", w->path);
		kill(getpid(), SIGHUP);
	}
}

/* Frees what config_watch_start made; the thread must not be running. */
static void watch_free(struct config_watch *w)
{
	if (w->ino_fd >= 0)
		close(w->ino_fd);
	if (w->wake_fd >= 0)
		close(w->wake_fd);
	mi_free(w->path);
	mi_free(w);
}

int config_watch_start(const char *path, struct config_watch **out)
{
	struct config_watch *w = mi_zalloc(sizeof(*w));
	char *dir;
	int rc;

	*out = NULL;
	if (!w)
		return -ENOMEM;
	w->ino_fd = w->wake_fd = -1;
	w->path = mi_strdup(path);
	dir = mi_strdup(path);
	if (!w->path || !dir) {
		mi_free(dir);
		watch_free(w);
		return -ENOMEM;
	}
	w->ino_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (w->ino_fd < 0 || w->wake_fd < 0 ||
	    inotify_add_watch(w->ino_fd, dirname(dir), WATCH_MASK) < 0) {
		rc = -errno;
		log_error("--watch-config: cannot watch the directory of %s: %s", path,
			  strerror(-rc));
		mi_free(dir);
		watch_free(w);
		return rc;
	}
	mi_free(dir);
	w->have_hash = file_hash(path, &w->hash) == 0;
	rc = -pthread_create(&w->thread, NULL, watch_thread, w);
	if (rc) {
		log_error("--watch-config: cannot start thread: %s", strerror(-rc));
		watch_free(w);
		return rc;
	}
	*out = w;
	return 0;
}

void config_watch_stop(struct config_watch *w)
{
	uint64_t one = 1;

	if (!w)
		return;
	if (write(w->wake_fd, &one, sizeof(one)) < 0)
		log_error("--watch-config: wake: %s", strerror(errno));
	pthread_join(w->thread, NULL);
	watch_free(w);
}
