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

#include "ringroute/accesslog.h"
#include "ringroute/addr.h"
#include "ringroute/alloc.h"
#include "ringroute/control.h"
#include "ringroute/dns.h"
#include "ringroute/health.h"
#include "ringroute/scrape.h"
#include "ringroute/instance.h"
#include "ringroute/peers.h"
#include "ringroute/proxy.h"
#include "ringroute/service.h"
#include "ringroute/shard.h"
#include "ringroute/version.h"
#include "ringroute/watch.h"
#include "ringroute/xring.h"
#include "ringroute/log.h"


/* Every flag, in the order --help lists them: one table serves getopt,
 * --help and the man page's check (tests/e2e/test_cli.py compares them). */
enum opt_id {
	O_CONFIG = 256, O_LISTEN, O_SHARDS, O_CONTROL, O_ADMIN, O_STATE, O_REPORT_URL,
	O_REPORT_INTERVAL, O_DRAIN_TIMEOUT, O_HEADER_TIMEOUT, O_PIN, O_LOG_FORMAT,
	O_LOG_LEVEL, O_ACCESS_LOG, O_ACCESS_LOG_FORMAT, O_ACCESS_LOG_BUFFER, O_VERSION, O_HELP,
	O_DRAIN_DELAY, O_READY_HEALTHY, O_WATCH_CONFIG, O_INSTANCE_INDEX, O_INSTANCE_COUNT,
	O_PEERS,
};

struct flag {
	const char *name;
	int id;
	const char *arg;  /* metavariable, NULL for a switch */
	const char *def;  /* the default as the user writes it, NULL when none */
	const char *help; /* one sentence */
};

static const struct flag flags[] = {
	{"config", O_CONFIG, "FILE", NULL,
	 "Configuration file (JSON, docs/config.md); required unless --state names an existing file."},
	{"watch-config", O_WATCH_CONFIG, NULL, NULL,
	 "Reload --config when its content changes (inotify on its directory: ConfigMap updates)."},
	{"listen", O_LISTEN, "ADDR:PORT", "0.0.0.0:8080",
	 "Address the data-path listener binds (port 0: any free port, printed as LISTEN N)."},
	{"shards", O_SHARDS, "N", "one per online CPU", "Shards (event loops, one io_uring each)."},
	{"control", O_CONTROL, "PATH", NULL, "Unix socket serving the control API (ringroutectl)."},
	{"admin", O_ADMIN, "ADDR:PORT", NULL,
	 "TCP address serving /metrics, /healthz, /readyz and the read-only API."},
	{"state", O_STATE, "FILE", NULL,
	 "File the live configuration is saved to on every change; it wins over --config at start."},
	{"report-url", O_REPORT_URL, "URL", NULL,
	 "http://HOST[:PORT]/PATH that queue lengths are POSTed to (autoscalers)."},
	{"report-interval-ms", O_REPORT_INTERVAL, "MS", "1000", "Period of the --report-url POSTs."},
	{"drain-delay-ms", O_DRAIN_DELAY, "MS", "0",
	 "On SIGTERM, keep accepting and serving this long (/readyz 503) before closing the listeners."},
	{"drain-timeout-ms", O_DRAIN_TIMEOUT, "MS", "10000",
	 "Once the listeners closed, how long requests in flight may take to finish before exit."},
	{"ready-requires-healthy", O_READY_HEALTHY, NULL, NULL,
	 "/readyz answers 503 while no endpoint has a healthy replica."},
	{"header-timeout-ms", O_HEADER_TIMEOUT, "MS", "10000",
	 "A request head must arrive within this of its first byte (408 otherwise)."},
	{"pin", O_PIN, "on|off|auto", "auto",
	 "Pin shard i to CPU i; auto pins only when there is a shard for every CPU."},
	{"log-format", O_LOG_FORMAT, "text|json", "text", "Format of the process log on stderr."},
	{"log-level", O_LOG_LEVEL, "error|warn|info|debug", "info",
	 "Lowest level of the process log written."},
	{"access-log", O_ACCESS_LOG, "PATH", NULL,
	 "Write one line per request to PATH (- is stdout); SIGUSR1 reopens it (logrotate)."},
	{"access-log-format", O_ACCESS_LOG_FORMAT, "text|json", "text",
	 "Format of the access log lines (fields in docs/operations.md)."},
	{"access-log-buffer", O_ACCESS_LOG_BUFFER, "KIB", "1024",
	 "Access log lines each shard may hold while the file is behind; past it lines are dropped and counted."},
	{"instance-index", O_INSTANCE_INDEX, "I", "0",
	 "This instance's index among --instance-count (a StatefulSet ordinal): it enforces its share of every cap."},
	{"instance-count", O_INSTANCE_COUNT, "N", "1",
	 "Instances sharing every replica's max_ongoing_requests and every max_queued_requests exactly."},
	{"peers", O_PEERS, "SPEC", NULL,
	 "dns:NAME:PORT or ADDR:PORT,...: the instance index and count come from this peer set, resolved every 2 s (this instance: its own address and listen port)."},
	{"version", O_VERSION, NULL, NULL,
	 "Print the version, the git commit and the kernel's io_uring features, then exit."},
	{"help", O_HELP, NULL, NULL, "Print this help, then exit."},
};

#define NFLAGS (sizeof(flags) / sizeof(flags[0]))

static void usage(FILE *f)
{
	fprintf(f, "usage: ringroute --config FILE [OPTION]...\n\n"
		   "Routes HTTP requests to model-server replicas (docs/config.md).\n\n");
	for (size_t i = 0; i < NFLAGS; i++) {
		char left[64];
		snprintf(left, sizeof(left), "--%s%s%s", flags[i].name, flags[i].arg ? " " : "",
			 flags[i].arg ? flags[i].arg : "");
		fprintf(f, "  %-34s %s", left, flags[i].help);
		if (flags[i].def)
			fprintf(f, " Default: %s.", flags[i].def);
		fputc('\n', f);
	}
	fprintf(f, "\nSignals: SIGHUP reloads --config, SIGUSR1 reopens --access-log, "
		   "SIGTERM/SIGINT drain and exit 0 (a second one skips the drain delay).\n");
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

/* Milliseconds for flag name: min..3600000, else the message and -EINVAL. */
static int parse_ms_min(const char *name, const char *arg, unsigned long min, uint32_t *out)
{
	unsigned long v;

	if (parse_uint(arg, 3600000, &v) || v < min) {
		log_error("--%s: expected milliseconds (%lu..3600000), got '%s'", name, min, arg);
		return -EINVAL;
	}
	*out = (uint32_t)v;
	return 0;
}

/* A period or timeout: 1..3600000. */
static int parse_ms(const char *name, const char *arg, uint32_t *out)
{
	return parse_ms_min(name, arg, 1, out);
}

/* Fills o from argv. 0; 1 when --help or --version was printed (exit 0);
 * -EINVAL after printing what is wrong (exit 2). */
static int parse_args(int argc, char **argv, struct proxy_options *o)
{
	struct option longopts[NFLAGS + 1];
	enum log_format log_fmt = LOG_F_TEXT;
	enum log_level log_min = LOG_L_INFO;
	int ch, idx, instance_set = 0;
	unsigned long v;

	memset(longopts, 0, sizeof(longopts));
	for (size_t i = 0; i < NFLAGS; i++)
		longopts[i] = (struct option){flags[i].name,
					      flags[i].arg ? required_argument : no_argument, NULL,
					      flags[i].id};
	memset(o, 0, sizeof(*o));
	o->listen = "0.0.0.0:8080";
	o->report_interval_ms = 1000;
	o->drain_timeout_ms = 10000;
	o->header_timeout_ms = 10000;
	o->pin = -1;
	o->access_log_format = ACCESSLOG_TEXT;
	o->access_log_buffer_kb = ACCESSLOG_BUFFER_KB_DEFAULT;
	o->instance_count = 1;
	opterr = 0; /* getopt's own messages carry no timestamp: ours below */
	while ((ch = getopt_long(argc, argv, ":c:l:s:h", longopts, &idx)) != -1) {
		switch (ch) {
		case 'c': case O_CONFIG: o->config_path = optarg; break;
		case 'l': case O_LISTEN: o->listen = optarg; break;
		case O_CONTROL: o->control_path = optarg; break;
		case O_ADMIN: o->admin = optarg; break;
		case O_STATE: o->state_path = optarg; break;
		case O_REPORT_URL: o->report_url = optarg; break;
		case 's':
		case O_SHARDS:
			if (parse_uint(optarg, RR_MAX_SHARDS, &v) || v == 0) {
				log_error("--shards: expected 1..%d, got '%s'", RR_MAX_SHARDS, optarg);
				return -EINVAL;
			}
			o->nshards = (unsigned)v;
			break;
		case O_REPORT_INTERVAL:
			if (parse_ms("report-interval-ms", optarg, &o->report_interval_ms))
				return -EINVAL;
			break;
		case O_DRAIN_TIMEOUT:
			if (parse_ms("drain-timeout-ms", optarg, &o->drain_timeout_ms))
				return -EINVAL;
			break;
		case O_DRAIN_DELAY:
			if (parse_ms_min("drain-delay-ms", optarg, 0, &o->drain_delay_ms))
				return -EINVAL;
			break;
		case O_READY_HEALTHY: o->ready_requires_healthy = 1; break;
		case O_WATCH_CONFIG: o->watch_config = 1; break;
		case O_HEADER_TIMEOUT:
			if (parse_ms("header-timeout-ms", optarg, &o->header_timeout_ms))
				return -EINVAL;
			break;
		case O_PIN:
			if (strcmp(optarg, "on") == 0)
				o->pin = 1;
			else if (strcmp(optarg, "off") == 0)
				o->pin = 0;
			else if (strcmp(optarg, "auto") == 0)
				o->pin = -1;
			else {
				log_error("--pin: expected on, off or auto, got '%s'", optarg);
				return -EINVAL;
			}
			break;
		case O_LOG_FORMAT:
			if (log_format_parse(optarg, &log_fmt)) {
				log_error("--log-format: expected text or json, got '%s'", optarg);
				return -EINVAL;
			}
			log_setup(log_fmt, log_min);
			break;
		case O_LOG_LEVEL:
			if (log_level_parse(optarg, &log_min)) {
				log_error("--log-level: expected error, warn, info or debug, got '%s'",
					  optarg);
				return -EINVAL;
			}
			log_setup(log_fmt, log_min);
			break;
		case O_ACCESS_LOG: o->access_log = optarg; break;
		case O_ACCESS_LOG_FORMAT:
			if (accesslog_format_parse(optarg, &o->access_log_format)) {
				log_error("--access-log-format: expected text or json, got '%s'", optarg);
				return -EINVAL;
			}
			break;
		case O_ACCESS_LOG_BUFFER:
			if (parse_uint(optarg, ACCESSLOG_BUFFER_KB_MAX, &v) ||
			    v < ACCESSLOG_BUFFER_KB_MIN) {
				log_error("--access-log-buffer: expected KiB (%u..%u), got '%s'",
					  ACCESSLOG_BUFFER_KB_MIN, ACCESSLOG_BUFFER_KB_MAX, optarg);
				return -EINVAL;
			}
			o->access_log_buffer_kb = (uint32_t)v;
			break;
		case O_INSTANCE_INDEX:
			if (parse_uint(optarg, INSTANCE_MAX_PEERS - 1, &v)) {
				log_error("--instance-index: expected 0..%d, got '%s'",
					  INSTANCE_MAX_PEERS - 1, optarg);
				return -EINVAL;
			}
			o->instance_index = (uint32_t)v;
			instance_set = 1;
			break;
		case O_INSTANCE_COUNT:
			if (parse_uint(optarg, INSTANCE_MAX_PEERS, &v) || v == 0) {
				log_error("--instance-count: expected 1..%d, got '%s'",
					  INSTANCE_MAX_PEERS, optarg);
				return -EINVAL;
			}
			o->instance_count = (uint32_t)v;
			instance_set = 1;
			break;
		case O_PEERS: {
			char why[256];
			if (instance_peers_check(optarg, why, sizeof(why))) {
				log_error("--peers: %s, got '%s'", why, optarg);
				return -EINVAL;
			}
			o->peers = optarg;
			break;
		}
		case O_VERSION:
			version_print(stdout);
			return 1;
		case 'h':
		case O_HELP:
			usage(stdout);
			return 1;
		case ':':
			log_error("%s: missing value (try --help)", argv[optind - 1]);
			return -EINVAL;
		default:
			log_error("unknown option '%s' (try --help)", argv[optind - 1]);
			return -EINVAL;
		}
	}
	if (optind < argc) {
		log_error("unexpected argument '%s' (try --help)", argv[optind]);
		return -EINVAL;
	}
	if (!o->config_path && !o->state_path) {
		log_error("--config FILE is required (try --help)");
		return -EINVAL;
	}
	if (o->instance_index >= o->instance_count) {
		log_error("--instance-index %u: expected below --instance-count %u",
			  (unsigned)o->instance_index, (unsigned)o->instance_count);
		return -EINVAL;
	}
	if (o->peers && instance_set) {
		log_error("--peers derives the instance index and count: "
			  "not with --instance-index/--instance-count");
		return -EINVAL;
	}
	if (o->watch_config && !o->config_path) {
		log_error("--watch-config needs --config FILE");
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
		log_error("no --config and no state file at %s", p->opt.state_path);
		return NULL;
	}
	ret = config_load_file(path, &p->registry, &c, err, sizeof(err));
	if (ret) {
		log_error("%s", err);
		return NULL;
	}
	c->version = 1;
	return c;
}

/* Started shards that have not left their loop yet. */
static unsigned shards_running(struct proxy *p)
{
	unsigned n = 0;

	for (unsigned i = 0; i < p->nshards; i++)
		n += atomic_load(&p->shards[i]->ready) && !atomic_load(&p->shards[i]->exited);
	return n;
}

static void wait_shards(struct proxy *p, uint32_t timeout_ms)
{
	struct timespec ts = {0, 5 * 1000 * 1000};
	uint64_t waited = 0;
	/* Polling at 5 ms is only the drain deadline's clock; each shard
	 * leaves its loop by itself once its clients are done. */
	for (;;) {
		if (!shards_running(p) || waited >= timeout_ms)
			return;
		nanosleep(&ts, NULL);
		waited += 5;
	}
}

int main(int argc, char **argv)
{
	struct proxy *p;
	struct rr_addr addr;
	char why[128];
	struct control *ctl = NULL;
	struct dns *dns = NULL;
	struct health *health = NULL;
	struct scrape *scrape = NULL;
	struct config_watch *watch = NULL;
	struct peers *peers = NULL;
	char perr[256] = ""; /* --peers' problem at start, said once */
	struct service svc;
	uint16_t admin_port = 0;
	sigset_t set;
	long ncpu;
	int ret, sig, code = 0;
	struct config *c;

	p = mi_zalloc(sizeof(*p));
	if (!p)
		return 1;
	ret = parse_args(argc, argv, &p->opt);
	if (ret) {
		mi_free(p);
		return ret > 0 ? 0 : 2;
	}
	if (addr_parse_sa(p->opt.listen, strlen(p->opt.listen), ADDR_F_ANY | ADDR_F_PORT0 | ADDR_F_IPV6,
			  &addr, why, sizeof(why))) {
		log_error("--listen: expected ADDR:PORT, got '%s': %s",
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
	proxy_mark_draining(NULL, c); /* "drain": true in --config or --state */
	p->config = c;
	/* --peers starts as 0 of 1 until it looks for itself (below). */
	atomic_store(&p->instance_index, p->opt.instance_index);
	atomic_store(&p->instance_count, p->opt.instance_count);
	instance_apply(c, p->opt.instance_index, p->opt.instance_count);
	service_init(&svc, p);
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
	sigaddset(&set, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	/* The logger thread inherits the mask set above; shards find it in p. */
	if (p->opt.access_log && accesslog_open(&p->alog, p->opt.access_log,
						p->opt.access_log_format, p->nshards,
						p->opt.access_log_buffer_kb)) {
		p->nshards = 0; /* none created yet */
		code = 1;
		goto out_shards;
	}

	for (unsigned i = 0; i < p->nshards; i++) {
		ret = shard_create(p, i, &addr, &p->shards[i]);
		if (ret) {
			log_error("cannot listen on %s: %s", p->opt.listen,
				strerror(-ret));
			p->nshards = i;
			code = 1;
			goto out_shards;
		}
		if (i == 0) {
			/* Port 0: every shard shares the port the first one got. */
			socklen_t len = sizeof(addr.u);
			getsockname(p->shards[0]->listen_fd, &addr.u.sa, &len);
			p->listen_port = addr_port(&addr);
		}
		p->shards[i]->peers = p->shards;
		p->shards[i]->config = c;
		config_ref(c);
	}
	for (unsigned i = 0; i < p->nshards; i++)
		p->shards[i]->proxy_nshards = p->nshards;
	if (p->opt.peers) {
		/* The listen port is known now; no shard runs yet, so the first
		 * snapshot can still take the shares it starts with. */
		uint32_t pi, pn;
		int prc = peers_find(p, &pi, &pn, perr, sizeof(perr));
		if (prc < 0) {
			/* Not ready, no share, until a round finds it. */
			pi = INSTANCE_NONE;
			pn = 1;
		}
		atomic_store(&p->instance_index, pi);
		atomic_store(&p->instance_count, pn);
		instance_apply(c, pi, pn);
		if (prc)
			log_warn("--peers: %s; not ready, no share of any cap until it is in the set",
				 perr);
		else
			log_info("instance %u of %u", (unsigned)pi, (unsigned)pn);
		if (!prc)
			perr[0] = '\0';
	} else if (p->opt.instance_count > 1) {
		log_info("instance %u of %u", (unsigned)p->opt.instance_index,
			 (unsigned)p->opt.instance_count);
	}
	for (unsigned i = 0; i < p->nshards; i++) {
		ret = shard_start(p->shards[i]);
		if (ret) {
			log_error("shard %u: io_uring unavailable: %s", i,
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
		log_error("cannot start health checks: %s", strerror(-ret));
		code = 1;
		goto out_stop;
	}
	ret = dns_start(p, &dns);
	if (ret) {
		log_error("cannot start the DNS refresh: %s", strerror(-ret));
		code = 1;
		goto out_stop;
	}
	ret = scrape_start(p, &scrape);
	if (ret) {
		log_error("cannot start the load scrape: %s", strerror(-ret));
		code = 1;
		goto out_stop;
	}
	if (p->opt.watch_config && config_watch_start(p->opt.config_path, &watch)) {
		code = 1;
		goto out_stop;
	}
	if (p->opt.peers && (ret = peers_start(p, perr, &peers))) {
		log_error("cannot start --peers: %s", strerror(-ret));
		code = 1;
		goto out_stop;
	}
	/* Live (/readyz 200, READY=1) before the READY line: whoever waits
	 * on that line may ask /readyz at once. */
	service_live(&svc);
	printf("LISTEN %u\n", p->listen_port);
	if (p->opt.admin)
		printf("ADMIN %u\n", admin_port);
	printf("READY\n");
	fflush(stdout);
	log_info("%u shard(s) listening on port %u", p->nshards, p->listen_port);

	for (;;) {
		sig = service_wait(&svc, &set, 0);
		if (sig == SIGUSR1) {
			if (p->alog)
				accesslog_reopen(p->alog);
			else
				log_info("SIGUSR1: no --access-log to reopen");
			continue;
		}
		if (sig == SIGHUP) {
			char err[1024];
			if (!p->opt.config_path) {
				log_warn("SIGHUP: no --config to reload");
				continue;
			}
			service_reloading(&svc);
			if (ctl)
				ret = control_reload(ctl, p->opt.config_path, err, sizeof(err));
			else
				ret = proxy_reload(p, p->opt.config_path, err, sizeof(err));
			if (ret)
				log_warn("SIGHUP: reload refused: %s", err);
			else
				log_info("SIGHUP: reloaded %s", p->opt.config_path);
			service_reloaded(&svc, ret ? err : NULL);
			continue;
		}
		break;
	}
	log_info("draining");
	service_drain(&svc, &set);
out_stop:
	/* The admin port answers (/readyz 503, /metrics) until the shards are
	 * done; the listeners close first. */
	config_watch_stop(watch);
	peers_stop(peers); /* no re-share while the shards stop */
	dns_stop(dns); /* no refresh reaches shards that are stopping */
	proxy_stop_shards(p);
	wait_shards(p, p->opt.drain_timeout_ms);
	health_stop(health);
	scrape_stop(scrape);
	if (ctl)
		control_stop(ctl);
	if (shards_running(p)) {
		/* Timed out: the requests still open end as shutdown (503, or
		 * cut), counted and logged like any other; a shard that cannot
		 * finish even that within a second is left behind. */
		log_warn("drain timeout: ending the requests still in flight (reason shutdown)");
		xring_broadcast(p, MSG_ABORT);
		wait_shards(p, 1000);
	}
	if (shards_running(p)) {
		log_warn("drain timeout: exiting with shards still running");
		accesslog_flush(p->alog, 1000); /* the lines of those that ended */
		fflush(stderr);
		_exit(code);
	}
out_shards:
	for (unsigned i = 0; i < p->nshards; i++)
		shard_join_and_destroy(p->shards[i]);
	accesslog_close(p->alog); /* after the shards: their last lines */
	xring_destroy(p);
	config_unref(p->config);
out_registry:
	registry_destroy(&p->registry);
	pthread_mutex_destroy(&p->config_lock);
	pthread_mutex_destroy(&p->xring_lock);
	mi_free(p);
	return code;
}
