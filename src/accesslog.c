/* The access log (see accesslog.h): the line formatter, the shards' rings
 * and the logger thread that writes them. */
#include "ringroute/accesslog.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "ringroute/alloc.h"
#include "ringroute/clock.h"
#include "ringroute/log.h"
#include "ringroute/metrics.h"

#define ALOG_STOP_WAIT_MS 1000u /* at exit, an output that takes nothing for this long is given up */
#define ALOG_POLL_MS 100        /* an output that waits for room is looked at again this often */
#define ALOG_WARN_EVERY_MS 10000u /* drops are reported at most this often */

/* ---- formatting ---- */

int accesslog_format_parse(const char *s, enum accesslog_format *out)
{
	if (strcmp(s, "text") == 0)
		*out = ACCESSLOG_TEXT;
	else if (strcmp(s, "json") == 0)
		*out = ACCESSLOG_JSON;
	else
		return -1;
	return 0;
}

/* A text field: "-" when empty, every byte outside 0x21..0x7e and '\' as
 * \xHH, so a value never holds a space or a line end; a value that is just
 * "-" becomes \x2d so that it does not read as empty. */
static int put_text(struct strbuf *sb, const char *p, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	char *o;

	if (!p || !n)
		return sb_put(sb, "-", 1);
	if (n == 1 && p[0] == '-')
		return sb_put(sb, "\\x2d", 4);
	if (n > ((size_t)-1) / 4 || sb_reserve(sb, n * 4))
		return -ENOMEM;
	o = sb->p + sb->len;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c > 0x20 && c < 0x7f && c != '\\') {
			*o++ = (char)c;
		} else {
			*o++ = '\\';
			*o++ = 'x';
			*o++ = hex[c >> 4];
			*o++ = hex[c & 15];
		}
	}
	sb->len = (size_t)(o - sb->p);
	sb->p[sb->len] = '\0';
	return 0;
}

static int put_u64(struct strbuf *sb, uint64_t v)
{
	char b[24];
	int i = sizeof(b);

	do {
		b[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	return sb_put(sb, b + i, sizeof(b) - (size_t)i);
}

/* Microseconds as milliseconds with three decimals: 1234 -> "1.234". */
static int put_ms(struct strbuf *sb, uint64_t us)
{
	char frac[4] = {'.', (char)('0' + us / 100 % 10), (char)('0' + us / 10 % 10),
			(char)('0' + us % 10)};

	return put_u64(sb, us / 1000) | sb_put(sb, frac, 4);
}

static size_t len_of(const char *s) { return s ? strlen(s) : 0; }

static int format_text(const struct accesslog_rec *r, struct strbuf *sb)
{
	int ret = 0;

	ret |= put_text(sb, r->time, len_of(r->time));
	ret |= sb_put(sb, " ", 1) | put_text(sb, r->client, len_of(r->client));
	ret |= sb_put(sb, " ", 1) | put_text(sb, r->method, len_of(r->method));
	ret |= sb_put(sb, " ", 1) | put_text(sb, r->path, r->path_len);
	ret |= sb_put(sb, " ", 1) | put_text(sb, r->version, len_of(r->version));
	ret |= sb_put(sb, " ", 1);
	ret |= r->status > 0 ? put_u64(sb, (uint64_t)r->status) : sb_put(sb, "-", 1);
	ret |= sb_put(sb, " ", 1) | put_text(sb, r->endpoint, len_of(r->endpoint));
	ret |= sb_put(sb, " ", 1) | put_text(sb, r->backend, len_of(r->backend));
	ret |= sb_put(sb, " ", 1) | put_text(sb, r->replica, len_of(r->replica));
	ret |= sb_put(sb, " ", 1) | put_text(sb, r->request_id, r->request_id_len);
	ret |= sb_put(sb, " ", 1) | put_u64(sb, r->bytes_in);
	ret |= sb_put(sb, " ", 1) | put_u64(sb, r->bytes_out);
	ret |= sb_put(sb, " ", 1) | put_ms(sb, r->queue_us);
	ret |= sb_put(sb, " ", 1);
	ret |= r->ttfb_us >= 0 ? put_ms(sb, (uint64_t)r->ttfb_us) : sb_put(sb, "-", 1);
	ret |= sb_put(sb, " ", 1) | put_ms(sb, r->duration_us);
	ret |= sb_put(sb, " ", 1) | put_u64(sb, r->retries);
	ret |= sb_put(sb, " ", 1) | put_text(sb, r->reason, len_of(r->reason));
	return ret | sb_put(sb, "\n", 1);
}

/* ,"key": and a JSON string, or null when s is empty. */
static int put_json_field(struct strbuf *sb, const char *key, const char *s, size_t n)
{
	int ret = sb_puts(sb, key);

	return ret | (s && n ? sb_put_json_str(sb, s, n) : sb_put(sb, "null", 4));
}

static int format_json(const struct accesslog_rec *r, struct strbuf *sb)
{
	int ret = 0;

	ret |= put_json_field(sb, "{\"time\":", r->time, len_of(r->time));
	ret |= put_json_field(sb, ",\"client\":", r->client, len_of(r->client));
	ret |= put_json_field(sb, ",\"method\":", r->method, len_of(r->method));
	ret |= put_json_field(sb, ",\"path\":", r->path, r->path_len);
	ret |= put_json_field(sb, ",\"version\":", r->version, len_of(r->version));
	ret |= sb_puts(sb, ",\"status\":");
	ret |= r->status > 0 ? put_u64(sb, (uint64_t)r->status) : sb_put(sb, "null", 4);
	ret |= put_json_field(sb, ",\"endpoint\":", r->endpoint, len_of(r->endpoint));
	ret |= put_json_field(sb, ",\"backend\":", r->backend, len_of(r->backend));
	ret |= put_json_field(sb, ",\"replica\":", r->replica, len_of(r->replica));
	ret |= put_json_field(sb, ",\"request_id\":", r->request_id, r->request_id_len);
	ret |= sb_puts(sb, ",\"bytes_in\":") | put_u64(sb, r->bytes_in);
	ret |= sb_puts(sb, ",\"bytes_out\":") | put_u64(sb, r->bytes_out);
	ret |= sb_puts(sb, ",\"queue_ms\":") | put_ms(sb, r->queue_us);
	ret |= sb_puts(sb, ",\"ttfb_ms\":");
	ret |= r->ttfb_us >= 0 ? put_ms(sb, (uint64_t)r->ttfb_us) : sb_put(sb, "null", 4);
	ret |= sb_puts(sb, ",\"duration_ms\":") | put_ms(sb, r->duration_us);
	ret |= sb_puts(sb, ",\"retries\":") | put_u64(sb, r->retries);
	ret |= put_json_field(sb, ",\"reason\":", r->reason, len_of(r->reason));
	return ret | sb_put(sb, "}\n", 2);
}

int accesslog_format(const struct accesslog_rec *r, enum accesslog_format f, struct strbuf *out)
{
	int ret = f == ACCESSLOG_JSON ? format_json(r, out) : format_text(r, out);

	return ret ? -ENOMEM : 0;
}

/* ---- the rings ---- */

/* One shard's lines on their way to the logger: a byte ring with one
 * producer (the shard) and one consumer (the logger). head and tail count
 * bytes ever appended and ever taken; head moves only by whole lines, so
 * [tail, head) is always whole lines. Each side writes its own cache line. */
struct alog_ring {
	char *buf;                      /* cap bytes, cap a power of two (set at open) */
	uint64_t cap;
	_Alignas(64) _Atomic uint64_t head; /* the shard's: release after the bytes */
	uint64_t tail_seen;             /* the shard's last view of tail */
	counter_t dropped;              /* lines the shard dropped (shard-written) */
	_Alignas(64) _Atomic uint64_t tail; /* the logger's: release once written */
};

struct accesslog {
	char *path;                     /* NULL: stdout */
	enum accesslog_format fmt;
	int fd;                         /* the logger's (reopened by it) */
	bool regular;                   /* fd is a regular file: a write never waits for a reader */
	bool failing;                   /* the last write failed (warned once) */
	bool gave_up;                   /* stopping, the output took nothing: drop the rest */
	int evfd;                       /* wakes the logger */
	unsigned nrings;
	struct alog_ring *rings;        /* one per shard */
	struct iovec *iov;              /* the logger's: 2 per ring */
	uint64_t *ends;                 /* the logger's: the head each batch reaches, per ring */
	pthread_t thread;
	_Atomic int wake;               /* an eventfd write is pending: no need for another */
	_Atomic int reopen;
	_Atomic int stop;
	_Atomic uint64_t dropped;       /* lines the logger dropped (write errors, stop) */
	uint64_t warned_dropped;        /* the logger's: the count it last warned about */
	uint64_t warned_ms;             /* and when */
};

static void logger_wake(struct accesslog *al)
{
	uint64_t one = 1;
	ssize_t n = write(al->evfd, &one, sizeof(one)); /* non-blocking; cannot overflow */

	(void)n;
}

/* Appends n bytes to r. 0, or -1 when they do not fit (nothing written). */
static int ring_put(struct alog_ring *r, const char *p, size_t n)
{
	uint64_t h = atomic_load_explicit(&r->head, memory_order_relaxed);
	uint64_t off, first;

	if (n > r->cap)
		return -1;
	if (h + n - r->tail_seen > r->cap) {
		r->tail_seen = atomic_load_explicit(&r->tail, memory_order_acquire);
		if (h + n - r->tail_seen > r->cap)
			return -1;
	}
	off = h & (r->cap - 1);
	first = r->cap - off < n ? r->cap - off : n;
	memcpy(r->buf + off, p, first);
	memcpy(r->buf, p + first, n - first);
	atomic_store_explicit(&r->head, h + n, memory_order_release);
	return 0;
}

void accesslog_put(struct accesslog_shard *as, struct accesslog_rec *r, uint64_t now_us)
{
	struct alog_ring *ring = as->ring;
	uint64_t ms = now_us / 1000, used;

	if (ms != as->stamp_ms || !as->stamp[0]) {
		log_time_rfc3339(as->stamp, sizeof(as->stamp));
		as->stamp_ms = ms;
	}
	r->time = as->stamp;
	sb_reset(&as->line);
	if (accesslog_format(r, as->fmt, &as->line) || ring_put(ring, as->line.p, as->line.len)) {
		counter_add(&ring->dropped, 1);
		return;
	}
	/* Past half full: wake the logger now rather than at its next look. */
	used = atomic_load_explicit(&ring->head, memory_order_relaxed) - ring->tail_seen;
	if (used > ring->cap / 2) {
		ring->tail_seen = atomic_load_explicit(&ring->tail, memory_order_acquire);
		used = atomic_load_explicit(&ring->head, memory_order_relaxed) - ring->tail_seen;
		if (used > ring->cap / 2 && !atomic_load_explicit(&as->al->wake, memory_order_relaxed)) {
			atomic_store_explicit(&as->al->wake, 1, memory_order_relaxed);
			logger_wake(as->al);
		}
	}
}

void accesslog_shard_init(struct accesslog_shard *as, struct accesslog *al, unsigned id)
{
	memset(as, 0, sizeof(*as));
	if (!al || id >= al->nrings)
		return;
	as->al = al;
	as->ring = &al->rings[id];
	as->fmt = al->fmt;
}

void accesslog_shard_teardown(struct accesslog_shard *as)
{
	sb_free(&as->line);
	as->al = NULL;
	as->ring = NULL;
}

/* ---- the logger thread ---- */

/* Opens the output: path for appending, or a copy of stdout. Returns the
 * descriptor (and whether it is a regular file) or -errno. */
static int out_open(const char *path, bool *regular)
{
	struct stat st;
	int fd, err;

	/* O_NONBLOCK: a FIFO without a reader fails here (ENXIO) instead of
	 * hanging the start; on a regular file it changes nothing. */
	fd = path ? open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK, 0640)
		  : fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st)) {
		err = -errno;
		close(fd);
		return err;
	}
	*regular = S_ISREG(st.st_mode);
	return fd;
}

static uint64_t count_lines(const struct iovec *iov, int n)
{
	uint64_t lines = 0;

	for (int i = 0; i < n; i++) {
		const char *p = iov[i].iov_base, *end = p + iov[i].iov_len;
		while ((p = memchr(p, '\n', (size_t)(end - p)))) {
			lines++;
			p++;
		}
	}
	return lines;
}

/* Drops the first w bytes of the n iovecs at *iov (advancing *iov, *n). */
static void iov_advance(struct iovec **iov, int *n, size_t w)
{
	while (*n && w >= (*iov)->iov_len) {
		w -= (*iov)->iov_len;
		(*iov)++;
		(*n)--;
	}
	if (*n && w) {
		(*iov)->iov_base = (char *)(*iov)->iov_base + w;
		(*iov)->iov_len -= w;
	}
}

/* Shards cannot log (a write on their thread); the logger reports their
 * drops for them, at most every ALOG_WARN_EVERY_MS. */
static void warn_drops(struct accesslog *al)
{
	uint64_t d = accesslog_dropped(al), now;

	if (d == al->warned_dropped)
		return;
	now = clock_now_ms();
	if (al->warned_ms && now - al->warned_ms < ALOG_WARN_EVERY_MS)
		return;
	log_warn("access log: %llu line(s) dropped so far (%llu since the last report): "
		 "the output is behind or failing",
		 (unsigned long long)d, (unsigned long long)(d - al->warned_dropped));
	al->warned_dropped = d;
	al->warned_ms = now;
}

/* The next write to a pipe-like output: whole lines, at most PIPE_BUF
 * bytes (a pipe takes such a write whole or not at all, so a line is never
 * cut there, even when the output is given up), copied into buf from the
 * iovecs (a line may wrap around the ring). Only a line longer than
 * PIPE_BUF goes in pieces. Returns the length. */
static size_t pipe_chunk(const struct iovec *iov, int n, char *buf)
{
	size_t len = 0;
	char *nl;

	for (int i = 0; i < n && len < PIPE_BUF; i++) {
		size_t k = iov[i].iov_len < PIPE_BUF - len ? iov[i].iov_len : PIPE_BUF - len;
		memcpy(buf + len, iov[i].iov_base, k);
		len += k;
	}
	nl = memrchr(buf, '\n', len);
	return nl ? (size_t)(nl - buf) + 1 : len;
}

/* Writes the n iovecs whole, resuming after short writes. An output that
 * is not a regular file (a pipe, a terminal, a socket) is waited on with
 * poll and written in pipe_chunk pieces, so the logger never sleeps in
 * write(2) and notices a stop; once stopping, an output that takes nothing
 * for ALOG_STOP_WAIT_MS is given up (and not waited on again). Returns 0,
 * or -errno with *iov, *n the part not written. */
static int out_write(struct accesslog *al, struct iovec **iov, int *n)
{
	uint64_t stuck_since = 0;
	char chunk[PIPE_BUF];

	while (*n) {
		ssize_t w;

		if (al->regular) {
			w = writev(al->fd, *iov, *n < IOV_MAX ? *n : IOV_MAX);
		} else if (al->gave_up) {
			return -EAGAIN;
		} else {
			struct pollfd pf = {.fd = al->fd, .events = POLLOUT};
			int pr = poll(&pf, 1, ALOG_POLL_MS);

			if (pr < 0 && errno != EINTR)
				return -errno;
			if (pr <= 0) {
				uint64_t now = clock_now_ms();
				if (!atomic_load(&al->stop)) {
					warn_drops(al); /* the shards drop meanwhile */
					continue;
				}
				if (!stuck_since)
					stuck_since = now;
				if (now - stuck_since >= ALOG_STOP_WAIT_MS) {
					al->gave_up = true;
					return -EAGAIN;
				}
				continue;
			}
			if ((pf.revents & (POLLERR | POLLNVAL)) && !(pf.revents & POLLOUT))
				return -EPIPE;
			w = write(al->fd, chunk, pipe_chunk(*iov, *n, chunk));
		}
		if (w < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return -errno;
		}
		stuck_since = 0;
		iov_advance(iov, n, (size_t)w);
	}
	return 0;
}

/* The spans waiting in every ring, up to 2 iovecs per ring; ends[i]: the
 * head they reach. Returns the number of iovecs; *big: some ring is more
 * than a quarter full (look again at once). */
static int collect(struct accesslog *al, struct iovec *iov, uint64_t *ends, bool *big)
{
	int n = 0;

	*big = false;
	for (unsigned i = 0; i < al->nrings; i++) {
		struct alog_ring *r = &al->rings[i];
		uint64_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
		uint64_t h = atomic_load_explicit(&r->head, memory_order_acquire);
		uint64_t off = t & (r->cap - 1), len = h - t, first;

		ends[i] = h;
		if (!len)
			continue;
		if (len > r->cap / 4)
			*big = true;
		first = r->cap - off < len ? r->cap - off : len;
		iov[n++] = (struct iovec){r->buf + off, first};
		if (len > first)
			iov[n++] = (struct iovec){r->buf, len - first};
	}
	return n;
}

/* Writes one batch, then gives the ring space back. Lines that could not
 * be written are dropped and counted. */
static void write_batch(struct accesslog *al, struct iovec *iov, int n, const uint64_t *ends)
{
	int ret = out_write(al, &iov, &n);
	const char *name = al->path ? al->path : "stdout";

	if (ret) {
		uint64_t lines = count_lines(iov, n);

		atomic_fetch_add(&al->dropped, lines);
		if (ret == -EAGAIN)
			log_warn("access log: %s took nothing for %u ms at exit: %llu line(s) not "
				 "written", name, ALOG_STOP_WAIT_MS, (unsigned long long)lines);
		else if (!al->failing)
			log_warn("access log: cannot write %s: %s; lines are dropped until it works",
				 name, strerror(-ret));
		al->failing = true;
	} else if (al->failing) {
		log_info("access log: writing %s again", name);
		al->failing = false;
	}
	for (unsigned i = 0; i < al->nrings; i++)
		atomic_store_explicit(&al->rings[i].tail, ends[i], memory_order_release);
}

/* SIGUSR1: the path again (logrotate moved the old file away). The old
 * file stays in use when the new one cannot be opened. */
static void do_reopen(struct accesslog *al)
{
	bool regular;
	int fd;

	if (!al->path) {
		log_info("SIGUSR1: the access log is stdout, nothing to reopen");
		return;
	}
	fd = out_open(al->path, &regular);
	if (fd < 0) {
		log_warn("SIGUSR1: cannot reopen access log %s: %s (still writing the old file)",
			 al->path, strerror(-fd));
		return;
	}
	close(al->fd);
	al->fd = fd;
	al->regular = regular;
	al->failing = false;
	log_info("SIGUSR1: access log %s reopened", al->path);
}

static void wait_wake(struct accesslog *al, int timeout_ms)
{
	struct pollfd pf = {.fd = al->evfd, .events = POLLIN};
	uint64_t v;

	if (poll(&pf, 1, timeout_ms) > 0 && read(al->evfd, &v, sizeof(v)) < 0)
		v = 0;
	atomic_store_explicit(&al->wake, 0, memory_order_relaxed);
}

static void *logger_main(void *arg)
{
	struct accesslog *al = arg;
	struct iovec *iov = al->iov;
	uint64_t *ends = al->ends;

	for (;;) {
		int stop = atomic_load(&al->stop), n;
		bool big;

		if (atomic_exchange(&al->reopen, 0))
			do_reopen(al);
		n = collect(al, iov, ends, &big);
		if (n)
			write_batch(al, iov, n, ends);
		else if (stop)
			break;
		if (!stop)
			warn_drops(al); /* at stop, accesslog_close says it all */
		/* Batches, not a line per write: wait for more unless a ring
		 * is filling up or this is the last pass. */
		if (!big && !stop)
			wait_wake(al, ACCESSLOG_FLUSH_MS);
	}
	return NULL;
}

static uint64_t round_pow2(uint64_t v)
{
	uint64_t p = 1;

	while (p < v)
		p <<= 1;
	return p;
}

static void free_al(struct accesslog *al)
{
	for (unsigned i = 0; al->rings && i < al->nrings; i++)
		mi_free(al->rings[i].buf);
	mi_free(al->rings);
	mi_free(al->iov);
	mi_free(al->ends);
	if (al->evfd >= 0)
		close(al->evfd);
	if (al->fd >= 0)
		close(al->fd);
	mi_free(al->path);
	mi_free(al);
}

int accesslog_open(struct accesslog **out, const char *path, enum accesslog_format fmt,
		   unsigned nshards, uint32_t buffer_kb)
{
	const char *shown = strcmp(path, "-") == 0 ? "stdout" : path;
	struct accesslog *al = mi_zalloc(sizeof(*al));
	uint64_t cap = round_pow2((uint64_t)buffer_kb * 1024);
	int ret;

	if (!al)
		return -ENOMEM;
	al->fd = al->evfd = -1;
	al->fmt = fmt;
	al->nrings = nshards;
	if (strcmp(path, "-") != 0 && !(al->path = mi_strdup(path))) {
		ret = -ENOMEM;
		goto fail;
	}
	ret = out_open(al->path, &al->regular);
	if (ret < 0) {
		log_error("--access-log %s: %s%s", shown, strerror(-ret),
			  ret == -ENXIO ? " (a FIFO needs a reader)" : "");
		goto fail_quiet;
	}
	al->fd = ret;
	al->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (al->evfd < 0) {
		ret = -errno;
		goto fail;
	}
	al->rings = mi_zalloc_aligned(nshards * sizeof(*al->rings), 64);
	al->iov = mi_malloc(2 * nshards * sizeof(*al->iov));
	al->ends = mi_malloc(nshards * sizeof(*al->ends));
	if (!al->rings || !al->iov || !al->ends) {
		ret = -ENOMEM;
		goto fail;
	}
	for (unsigned i = 0; i < nshards; i++) {
		al->rings[i].cap = cap;
		al->rings[i].buf = mi_malloc(cap);
		if (!al->rings[i].buf) {
			ret = -ENOMEM;
			goto fail;
		}
	}
	ret = -pthread_create(&al->thread, NULL, logger_main, al);
	if (ret)
		goto fail;
	*out = al;
	return 0;
fail:
	log_error("--access-log %s: %s", shown, strerror(-ret));
fail_quiet:
	free_al(al);
	return ret;
}

void accesslog_reopen(struct accesslog *al)
{
	atomic_store(&al->reopen, 1);
	logger_wake(al);
}

uint64_t accesslog_dropped(struct accesslog *al)
{
	uint64_t n;

	if (!al)
		return 0;
	n = atomic_load(&al->dropped);
	for (unsigned i = 0; i < al->nrings; i++)
		n += counter_get(&al->rings[i].dropped);
	return n;
}

void accesslog_flush(struct accesslog *al, uint32_t timeout_ms)
{
	struct timespec ms = {0, 1000 * 1000};
	uint64_t until = clock_now_ms() + timeout_ms;
	uint64_t *want;

	if (!al)
		return;
	want = mi_malloc(al->nrings * sizeof(*want));
	if (!want)
		return;
	for (unsigned i = 0; i < al->nrings; i++)
		want[i] = atomic_load_explicit(&al->rings[i].head, memory_order_acquire);
	logger_wake(al);
	for (unsigned i = 0; i < al->nrings && clock_now_ms() < until; i++)
		while (atomic_load_explicit(&al->rings[i].tail, memory_order_acquire) < want[i] &&
		       clock_now_ms() < until)
			nanosleep(&ms, NULL); /* only on the way out: the logger does the work */
	mi_free(want);
}

uint64_t accesslog_close(struct accesslog *al)
{
	uint64_t dropped;

	if (!al)
		return 0;
	atomic_store(&al->stop, 1);
	logger_wake(al);
	pthread_join(al->thread, NULL);
	dropped = accesslog_dropped(al);
	if (dropped)
		log_warn("access log: %llu line(s) dropped in all", (unsigned long long)dropped);
	free_al(al);
	return dropped;
}
