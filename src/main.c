/* ringroute: parse flags, load the config (the --state file wins when it
 * exists), start one shard per core and the control thread, then wait for
 * signals: SIGHUP reloads --config as one change, SIGTERM/SIGINT drain and
 * exit 0. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ringroute/addr.h"
#include "ringroute/alloc.h"
#include "ringroute/control.h"
#include "ringroute/health.h"
#include "ringroute/proxy.h"
#include "ringroute/shard.h"
#include "ringroute/xring.h"


static void usage(FILE *f)
{
	fprintf(f, "usage: ringroute --config FILE [--listen ADDR:PORT] [--shards N] [--control PATH]\n"
		   "                 [--admin ADDR:PORT] [--state FILE] [--report-url URL]\n"
		   "                 [--report-interval-ms N] [--drain-timeout-ms N] [--pin on|off|auto]\n"
		   "                 [--header-timeout-ms N]\n");
}

static int parse_uint(const char *s, unsigned long max, unsigned long *out)
{
	char *end;
	unsigned long v;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || end == s || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

static int parse_args(int argc, char **argv, struct proxy_options *o)
{
	static const struct option longopts[] = {
		{"config", required_argument, NULL, 'c'},
		{"listen", required_argument, NULL, 'l'},
		{"shards", required_argument, NULL, 's'},
		{"control", required_argument, NULL, 'C'},
		{"admin", required_argument, NULL, 'a'},
		{"state", required_argument, NULL, 'S'},
		{"report-url", required_argument, NULL, 'r'},
		{"report-interval-ms", required_argument, NULL, 'i'},
		{"drain-timeout-ms", required_argument, NULL, 'd'},
		{"header-timeout-ms", required_argument, NULL, 'H'},
		{"pin", required_argument, NULL, 'p'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int ch;
	unsigned long v;

	memset(o, 0, sizeof(*o));
	o->listen = "0.0.0.0:8080";
	o->report_interval_ms = 1000;
	o->drain_timeout_ms = 10000;
	o->header_timeout_ms = 10000;
	o->pin = -1;
	while ((ch = getopt_long(argc, argv, "c:l:s:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c': o->config_path = optarg; break;
		case 'l': o->listen = optarg; break;
		case 'C': o->control_path = optarg; break;
		case 'a': o->admin = optarg; break;
		case 'S': o->state_path = optarg; break;
		case 'r': o->report_url = optarg; break;
		case 's':
			if (parse_uint(optarg, RR_MAX_SHARDS, &v) || v == 0) {
				fprintf(stderr, "ringroute: --shards: expected 1..%d, got '%s'\n",
					RR_MAX_SHARDS, optarg);
				return -EINVAL;
			}
			o->nshards = (unsigned)v;
			break;
		case 'i':
		case 'd':
		case 'H':
			if (parse_uint(optarg, 3600000, &v) || v == 0) {
				fprintf(stderr, "ringroute: --%s: expected milliseconds, got '%s'\n",
					ch == 'i' ? "report-interval-ms"
					: ch == 'd' ? "drain-timeout-ms" : "header-timeout-ms", optarg);
				return -EINVAL;
			}
			if (ch == 'i')
				o->report_interval_ms = (uint32_t)v;
			else if (ch == 'd')
				o->drain_timeout_ms = (uint32_t)v;
			else
				o->header_timeout_ms = (uint32_t)v;
			break;
		case 'p':
			if (strcmp(optarg, "on") == 0)
				o->pin = 1;
			else if (strcmp(optarg, "off") == 0)
				o->pin = 0;
			else if (strcmp(optarg, "auto") == 0)
				o->pin = -1;
			else {
				fprintf(stderr, "ringroute: --pin: expected on, off or auto, got '%s'\n",
					optarg);
				return -EINVAL;
			}
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -EINVAL;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "ringroute: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return -EINVAL;
	}
	if (!o->config_path && !o->state_path) {
		fprintf(stderr, "ringroute: --config FILE is required\n");
		usage(stderr);
		return -EINVAL;
	}
	return 0;
}

/* The state file, when it exists, wins over --config (README). */
static struct config *load_initial(struct proxy *p)
{
	struct config *c = NULL;
	char err[1024];
	struct stat st;
	const char *path = p->opt.config_path;
	int ret;

	if (p->opt.state_path && stat(p->opt.state_path, &st) == 0)
		path = p->opt.state_path;
	if (!path) {
		fprintf(stderr, "ringroute: no --config and no state file at %s\n", p->opt.state_path);
		return NULL;
	}
	ret = config_load_file(path, &p->registry, &c, err, sizeof(err));
	if (ret) {
		fprintf(stderr, "ringroute: %s\n", err);
		return NULL;
	}
	c->version = 1;
	return c;
}

static void wait_shards(struct proxy *p, uint32_t timeout_ms)
{
	struct timespec ts = {0, 5 * 1000 * 1000};
	uint64_t waited = 0;
	/* Polling at 5 ms is only the drain deadline's clock; each shard
	 * leaves its loop by itself once its clients are done. */
	for (;;) {
		unsigned running = 0;
		for (unsigned i = 0; i < p->nshards; i++)
			running += atomic_load(&p->shards[i]->ready) &&
				   !atomic_load(&p->shards[i]->exited);
		if (!running || waited >= timeout_ms)
			return;
		nanosleep(&ts, NULL);
		waited += 5;
	}
}

int main(int argc, char **argv)
{
	struct proxy *p;
	struct sockaddr_in addr;
	char why[128];
	struct control *ctl = NULL;
	struct health *health = NULL;
	uint16_t admin_port = 0;
	sigset_t set;
	long ncpu;
	int ret, sig, code = 0;
	struct config *c;

	p = mi_zalloc(sizeof(*p));
	if (!p)
		return 1;
	if (parse_args(argc, argv, &p->opt)) {
		mi_free(p);
		return 2;
	}
	if (addr_parse(p->opt.listen, strlen(p->opt.listen), ADDR_F_ANY | ADDR_F_PORT0, &addr, why,
		       sizeof(why))) {
		fprintf(stderr, "ringroute: --listen: expected ADDR:PORT, got '%s': %s\n",
			p->opt.listen, why);
		mi_free(p);
		return 2;
	}
	registry_init(&p->registry);
	pthread_mutex_init(&p->config_lock, NULL);
	pthread_mutex_init(&p->xring_lock, NULL);
	c = load_initial(p);
	if (!c) {
		code = 1;
		goto out_registry;
	}
	p->config = c;
	ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	p->nshards = p->opt.nshards ? p->opt.nshards : (unsigned)(ncpu > 0 ? ncpu : 1);
	if (p->nshards > RR_MAX_SHARDS)
		p->nshards = RR_MAX_SHARDS;
	/* A shard per CPU owns the machine: pin. Fewer shards share it with
	 * other processes: let the scheduler move them to an idle core. */
	if (p->opt.pin < 0)
		p->opt.pin = ncpu > 0 && p->nshards >= (unsigned)ncpu;

	/* Signals are taken synchronously by this thread only. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	for (unsigned i = 0; i < p->nshards; i++) {
		ret = shard_create(p, i, &addr, &p->shards[i]);
		if (ret) {
			fprintf(stderr, "ringroute: cannot listen on %s: %s\n", p->opt.listen,
				strerror(-ret));
			p->nshards = i;
			code = 1;
			goto out_shards;
		}
		if (i == 0) {
			/* Port 0: every shard shares the port the first one got. */
			socklen_t len = sizeof(addr);
			getsockname(p->shards[0]->listen_fd, (struct sockaddr *)&addr, &len);
			p->listen_port = ntohs(addr.sin_port);
		}
		p->shards[i]->peers = p->shards;
		p->shards[i]->config = c;
		config_ref(c);
	}
	for (unsigned i = 0; i < p->nshards; i++)
		p->shards[i]->proxy_nshards = p->nshards;
	for (unsigned i = 0; i < p->nshards; i++) {
		ret = shard_start(p->shards[i]);
		if (ret) {
			fprintf(stderr, "ringroute: shard %u: io_uring unavailable: %s\n", i,
				strerror(-ret));
			code = ret == -ENOSYS || ret == -EPERM || ret == -EINVAL ? 77 : 1;
			goto out_stop;
		}
	}
	if (p->opt.control_path || p->opt.admin || p->opt.report_url) {
		ret = control_start(p, &ctl, &admin_port);
		if (ret) {
			code = 1;
			goto out_stop;
		}
	}
	ret = health_start(p, &health);
	if (ret) {
		fprintf(stderr, "ringroute: cannot start health checks: %s\n", strerror(-ret));
		code = 1;
		goto out_stop;
	}
	printf("LISTEN %u\n", p->listen_port);
	if (p->opt.admin)
		printf("ADMIN %u\n", admin_port);
	printf("READY\n");
	fflush(stdout);
	fprintf(stderr, "ringroute: %u shard(s) listening on port %u\n", p->nshards, p->listen_port);

	for (;;) {
		if (sigwait(&set, &sig))
			continue;
		if (sig == SIGHUP) {
			char err[1024];
			if (!p->opt.config_path) {
				fprintf(stderr, "ringroute: SIGHUP: no --config to reload\n");
				continue;
			}
			if (ctl)
				ret = control_reload(ctl, p->opt.config_path, err, sizeof(err));
			else {
				struct config *n = NULL;
				ret = config_load_file(p->opt.config_path, &p->registry, &n, err,
						       sizeof(err));
				if (!ret)
					ret = proxy_change(p, n, err, sizeof(err));
			}
			if (ret)
				fprintf(stderr, "ringroute: SIGHUP: reload refused: %s\n", err);
			else
				fprintf(stderr, "ringroute: SIGHUP: reloaded %s\n", p->opt.config_path);
			continue;
		}
		break;
	}
	fprintf(stderr, "ringroute: draining\n");
out_stop:
	health_stop(health);
	if (ctl)
		control_stop(ctl);
	proxy_stop_shards(p);
	wait_shards(p, p->opt.drain_timeout_ms);
	for (unsigned i = 0; i < p->nshards; i++)
		if (atomic_load(&p->shards[i]->ready) && !atomic_load(&p->shards[i]->exited)) {
			fprintf(stderr, "ringroute: drain timeout: exiting with requests in flight\n");
			fflush(stderr);
			_exit(code);
		}
out_shards:
	for (unsigned i = 0; i < p->nshards; i++)
		shard_join_and_destroy(p->shards[i]);
	xring_destroy(p);
	config_unref(p->config);
out_registry:
	registry_destroy(&p->registry);
	pthread_mutex_destroy(&p->config_lock);
	pthread_mutex_destroy(&p->xring_lock);
	mi_free(p);
	return code;
}
