/* mock-replica: options, listening sockets, the process context and main(). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "mock.h"

/* ------------------------------------------------------- setup and main */

static void usage(FILE *f)
{
	fputs("usage: mock-replica [options]\n"
	      "  --listen HOST:PORT        default 127.0.0.1:0; prints 'READY <port>' once listening\n"
	      "  --listen unix:/PATH       a unix stream socket instead (READY 0; removed at exit)\n"
	      "  --id NAME                 default mock (X-Mock-Id header, \"id\" field)\n"
	      "  --threads N               event loops on SO_REUSEPORT listeners, default 1\n"
	      "  --delay-ms F              service delay per request, default 0\n"
	      "  --jitter-ms F             delay += U(-F, +F), clamped at 0\n"
	      "  --size N                  pad JSON bodies to at least N bytes\n"
	      "  --chunks K                stream K SSE events, chunked\n"
	      "  --chunk-interval-ms F     time between events\n"
	      "  --close-after N           close connections after N responses\n"
	      "  --status CODE             status of normal responses, default 200\n"
	      "  --llm                     also an OpenAI-compatible LLM server (POST /v1/chat/completions,\n"
	      "                            /v1/completions, GET /v1/models, /metrics); needs --threads 1\n"
	      "  --model NAME              model name of answers, default mock-llm\n"
	      "  --block-tokens N          KV cache block, tokens (4 prompt bytes each), default 16\n"
	      "  --kv-blocks N             KV cache size, blocks, default 2048\n"
	      "  --max-batch N             sequences decoded together, default 8\n"
	      "  --max-tokens N            output tokens when a request names none, default 16\n"
	      "  --prefill-us-per-token F  per uncached prompt token, default 200\n"
	      "  --decode-us-per-token F   one decode step (a token of every running sequence), default 10000\n"
	      "request headers: X-Mock-Delay-Ms, X-Mock-Status, X-Mock-Chunks,\n"
	      "  X-Mock-Chunk-Interval-Ms, X-Mock-Size, X-Mock-Close: 1, X-Mock-Reset: 1,\n"
	      "  X-Mock-No-Body: 1\n"
	      "control: GET /-/stats, POST /-/stats/reset, GET /-/healthz; --llm: POST /-/llm/reset\n", f);
}

static int parse_double(const char *s, double min, double max, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= min && v <= max))
		return -EINVAL;
	*out = v;
	return 0;
}

static int parse_uint(const char *s, unsigned long long min, unsigned long long max,
		      unsigned long long *out)
{
	char *end;
	unsigned long long v;

	if (*s == '-' || *s == '\0')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

/* Fill o from argv. Returns 0, 1 for --help, -EINVAL (message printed). */
static int mock_parse_args(struct mock_opts *o, int argc, char **argv)
{
	enum { O_LISTEN = 256, O_ID, O_DELAY, O_JITTER, O_SIZE, O_CHUNKS, O_INTERVAL,
	       O_CLOSE_AFTER, O_STATUS, O_THREADS, O_LLM, O_MODEL, O_BLOCK_TOKENS, O_KV_BLOCKS,
	       O_MAX_BATCH, O_MAX_TOKENS, O_PREFILL_US, O_DECODE_US, O_HELP };
	static const struct option longopts[] = {
		{ "listen", required_argument, NULL, O_LISTEN },
		{ "id", required_argument, NULL, O_ID },
		{ "delay-ms", required_argument, NULL, O_DELAY },
		{ "jitter-ms", required_argument, NULL, O_JITTER },
		{ "size", required_argument, NULL, O_SIZE },
		{ "chunks", required_argument, NULL, O_CHUNKS },
		{ "chunk-interval-ms", required_argument, NULL, O_INTERVAL },
		{ "close-after", required_argument, NULL, O_CLOSE_AFTER },
		{ "status", required_argument, NULL, O_STATUS },
		{ "threads", required_argument, NULL, O_THREADS },
		{ "llm", no_argument, NULL, O_LLM },
		{ "model", required_argument, NULL, O_MODEL },
		{ "block-tokens", required_argument, NULL, O_BLOCK_TOKENS },
		{ "kv-blocks", required_argument, NULL, O_KV_BLOCKS },
		{ "max-batch", required_argument, NULL, O_MAX_BATCH },
		{ "max-tokens", required_argument, NULL, O_MAX_TOKENS },
		{ "prefill-us-per-token", required_argument, NULL, O_PREFILL_US },
		{ "decode-us-per-token", required_argument, NULL, O_DECODE_US },
		{ "help", no_argument, NULL, O_HELP },
		{ NULL, 0, NULL, 0 },
	};
	int opt;

	o->listen = "127.0.0.1:0";
	o->id = "mock";
	o->status = 200;
	o->threads = 1;
	o->model = "mock-llm";
	o->block_tokens = 16;
	o->kv_blocks = 2048;
	o->max_batch = 8;
	o->max_tokens = 16;
	o->prefill_us = 200;
	o->decode_us = 10000;
	while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		unsigned long long u = 0;
		int err = 0;

		switch (opt) {
		case O_LISTEN: o->listen = optarg; break;
		case O_ID: o->id = optarg; break;
		case O_DELAY: err = parse_double(optarg, 0, 1e9, &o->delay_ms); break;
		case O_JITTER: err = parse_double(optarg, 0, 1e9, &o->jitter_ms); break;
		case O_INTERVAL: err = parse_double(optarg, 0, 1e9, &o->chunk_interval_ms); break;
		case O_SIZE:
			err = parse_uint(optarg, 0, 1ull << 30, &u);
			o->size = u;
			break;
		case O_CHUNKS:
			err = parse_uint(optarg, 0, 1000000, &u);
			o->chunks = (unsigned)u;
			break;
		case O_CLOSE_AFTER:
			err = parse_uint(optarg, 0, UINT_MAX, &u);
			o->close_after = (unsigned)u;
			break;
		case O_STATUS:
			err = parse_uint(optarg, 200, 599, &u);
			o->status = (unsigned)u;
			break;
		case O_THREADS:
			err = parse_uint(optarg, 1, 256, &u);
			o->threads = (unsigned)u;
			break;
		case O_LLM: o->llm = 1; break;
		case O_MODEL: o->model = optarg; break;
		case O_BLOCK_TOKENS:
			err = parse_uint(optarg, 1, 4096, &u);
			o->block_tokens = (unsigned)u;
			break;
		case O_KV_BLOCKS:
			err = parse_uint(optarg, 1, 1u << 24, &u);
			o->kv_blocks = (unsigned)u;
			break;
		case O_MAX_BATCH:
			err = parse_uint(optarg, 1, 65536, &u);
			o->max_batch = (unsigned)u;
			break;
		case O_MAX_TOKENS:
			err = parse_uint(optarg, 1, 65536, &u);
			o->max_tokens = (unsigned)u;
			break;
		case O_PREFILL_US: err = parse_double(optarg, 0, 1e7, &o->prefill_us); break;
		case O_DECODE_US: err = parse_double(optarg, 0, 1e8, &o->decode_us); break;
		case 'h':
		case O_HELP:
			return 1;
		default:
			return -EINVAL;
		}
		if (err) {
			fprintf(stderr, "mock-replica: bad value for --%s: '%s'\n",
				longopts[opt - O_LISTEN].name, optarg);
			return -EINVAL;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "mock-replica: unexpected argument '%s'\n", argv[optind]);
		return -EINVAL;
	}
	if (o->llm && o->threads != 1) {
		/* the batch and the KV cache are one GPU's state, owned by one loop */
		fprintf(stderr, "mock-replica: --llm needs --threads 1\n");
		return -EINVAL;
	}
	if (!*o->model || strlen(o->model) > MOCK_MAX_ID) {
		fprintf(stderr, "mock-replica: --model must be 1..%d bytes\n", MOCK_MAX_ID);
		return -EINVAL;
	}
	for (const char *s = o->model; *s; s++) {
		/* it is also a Prometheus label value, which has no \u escapes */
		if ((unsigned char)*s < 0x20 || *s == 0x7f) {
			fprintf(stderr, "mock-replica: --model must not contain control characters\n");
			return -EINVAL;
		}
	}
	if (!*o->id || strlen(o->id) > MOCK_MAX_ID) {
		fprintf(stderr, "mock-replica: --id must be 1..%d bytes\n", MOCK_MAX_ID);
		return -EINVAL;
	}
	for (const char *s = o->id; *s; s++) {
		if ((unsigned char)*s < 0x20 || *s == 0x7f) {
			fprintf(stderr, "mock-replica: --id must not contain control characters\n");
			return -EINVAL;
		}
	}
	return 0;
}

/* Resolve HOST:PORT ("[v6]:port" too; an empty host is the wildcard), or
 * unix:/path (a stream socket on this machine; a stale file at the path is
 * removed first, as a restarted server would). Returns 0 or -EINVAL
 * (message printed). */
static int mock_resolve(const char *spec, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[256];
	const char *colon, *port, *h = spec;
	size_t hlen;
	struct addrinfo hints, *res = NULL;
	int rc;

	if (strncmp(spec, "unix:", 5) == 0) {
		struct sockaddr_un *un = (struct sockaddr_un *)ss;
		size_t plen = strlen(spec + 5);

		if (plen == 0 || plen >= sizeof(un->sun_path))
			goto bad;
		memset(ss, 0, sizeof(*ss));
		un->sun_family = AF_UNIX;
		memcpy(un->sun_path, spec + 5, plen);
		*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen + 1);
		unlink(un->sun_path);
		return 0;
	}
	colon = strrchr(spec, ':');
	if (!colon)
		goto bad;
	port = colon + 1;
	hlen = (size_t)(colon - spec);
	if (hlen >= 2 && spec[0] == '[' && spec[hlen - 1] == ']') {
		h++;
		hlen -= 2;
	}
	if (hlen >= sizeof(host) || !*port)
		goto bad;
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	rc = getaddrinfo(hlen ? host : NULL, port, &hints, &res);
	if (rc) {
		fprintf(stderr, "mock-replica: --listen %s: %s\n", spec, gai_strerror(rc));
		return -EINVAL;
	}
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
bad:
	fprintf(stderr, "mock-replica: --listen wants HOST:PORT or unix:/PATH, got '%s'\n", spec);
	return -EINVAL;
}

/* A non-blocking listening socket on ss. Returns the fd or -errno. */
static int mock_listen_one(const struct sockaddr_storage *ss, socklen_t len, int reuseport)
{
	int one = 1;
	int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int err;

	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
		goto fail;
	if (bind(fd, (const struct sockaddr *)ss, len) < 0)
		goto fail;
	if (listen(fd, 4096) < 0)
		goto fail;
	return fd;
fail:
	err = -errno;
	close(fd);
	return err;
}

/* The port of ss; for a unix socket, a dummy 0 (READY prints 0). */
static uint16_t *ss_port(struct sockaddr_storage *ss)
{
	static __thread uint16_t none;

	if (ss->ss_family == AF_UNIX) {
		none = 0;
		return &none;
	}
	if (ss->ss_family == AF_INET6)
		return &((struct sockaddr_in6 *)ss)->sin6_port;
	return &((struct sockaddr_in *)ss)->sin_port;
}

/* Derived, read-only parts of the context. Returns 0 or -ENOMEM. */
static int mock_ctx_init(struct mock_ctx *ctx)
{
	const struct mock_opts *o = &ctx->opt;
	char *p;

	ctx->id_len = strlen(o->id);
	ctx->id_json = malloc(6 * ctx->id_len + 3);
	if (!ctx->id_json)
		return -ENOMEM;
	p = ctx->id_json;
	*p++ = '"';
	p = put_json_str(p, o->id, ctx->id_len);
	*p++ = '"';
	*p = '\0';
	ctx->id_json_len = (size_t)(p - ctx->id_json);
	ctx->delay_ns = ms_to_ns(o->delay_ms);
	ctx->jitter_ns = ms_to_ns(o->jitter_ms);
	ctx->interval_ns = ms_to_ns(o->chunk_interval_ms);

	http_settings_init(&ctx->settings);
	return 0;
}

int main(int argc, char **argv)
{
	struct mock_ctx ctx;
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);
	sigset_t sigs;
	unsigned n, started = 0;
	int rc = 1, sig, err;
	uint64_t one = 1;

	memset(&ctx, 0, sizeof(ctx));
	ctx.stop_fd = -1;
	err = mock_parse_args(&ctx.opt, argc, argv);
	if (err) {
		usage(err > 0 ? stdout : stderr);
		return err > 0 ? 0 : 2;
	}
	if (mock_ctx_init(&ctx) < 0)
		goto out;
	if (mock_resolve(ctx.opt.listen, &ss, &sslen) < 0) {
		rc = 2;
		goto out;
	}

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL); /* inherited by the loops */
	ctx.main_thread = pthread_self();

	ctx.stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (ctx.stop_fd < 0) {
		perror("mock-replica: eventfd");
		goto out;
	}
	n = ctx.opt.threads;
	ctx.loops = calloc(n, sizeof(*ctx.loops));
	if (!ctx.loops)
		goto out;
	for (unsigned i = 0; i < n; i++) {
		/* A unix path binds once (SO_REUSEPORT does not spread unix
		 * sockets): the other loops share the first one's socket, each
		 * with its own descriptor, and race for accepts. */
		int fd = ss.ss_family == AF_UNIX && i > 0 ? fcntl(ctx.loops[0].lfd, F_DUPFD_CLOEXEC, 0)
							  : mock_listen_one(&ss, sslen, n > 1 && ss.ss_family != AF_UNIX);
		if (fd < 0 && ss.ss_family == AF_UNIX && i > 0)
			fd = -errno;
		if (fd < 0) {
			fprintf(stderr, "mock-replica: listen on %s: %s\n", ctx.opt.listen, strerror(-fd));
			goto out;
		}
		if (i == 0) {
			struct sockaddr_storage bound;
			socklen_t blen = sizeof(bound);
			if (getsockname(fd, (struct sockaddr *)&bound, &blen) < 0) {
				close(fd);
				goto out;
			}
			*ss_port(&ss) = *ss_port(&bound); /* the others join port 0's pick */
		}
		err = loop_init(&ctx, &ctx.loops[i], i, fd);
		ctx.nloops = i + 1;
		if (err < 0) {
			fprintf(stderr, "mock-replica: %s\n", strerror(-err));
			goto out;
		}
	}

	printf("READY %u\n", (unsigned)ntohs(*ss_port(&ss)));
	fflush(stdout);

	for (unsigned i = 0; i < n; i++) {
		err = pthread_create(&ctx.loops[i].thread, NULL, loop_run, &ctx.loops[i]);
		if (err) {
			fprintf(stderr, "mock-replica: pthread_create: %s\n", strerror(err));
			atomic_store(&ctx.failed, 1);
			break;
		}
		ctx.loops[i].started = 1;
		started++;
	}
	if (started == n) {
		do {
			err = sigwait(&sigs, &sig);
		} while (err == EINTR);
	}
	if (write(ctx.stop_fd, &one, sizeof(one)) < 0)
		perror("mock-replica: eventfd write");
	for (unsigned i = 0; i < n; i++)
		if (ctx.loops[i].started)
			pthread_join(ctx.loops[i].thread, NULL);
	rc = atomic_load(&ctx.failed) ? 1 : 0;
out:
	for (unsigned i = 0; i < ctx.nloops; i++)
		loop_destroy(&ctx.loops[i]);
	free(ctx.loops);
	if (ctx.stop_fd >= 0)
		close(ctx.stop_fd);
	if (ctx.nloops && ss.ss_family == AF_UNIX)
		unlink(((struct sockaddr_un *)&ss)->sun_path);
	free(ctx.id_json);
	return rc;
}
