/* ringroutectl: the command-line client of ringroute's control socket.
 *
 * A thin client: every command is one or two HTTP/1.1 requests over the
 * Unix socket (--socket, $RINGROUTE_SOCKET, /run/ringroute.sock), spoken
 * here directly so the tool needs nothing but jansson. Output is a readable
 * table or message, or JSON with --json.
 *
 * The commands are the rows of one table, commands[]: dispatch, `help`,
 * `COMMAND --help`, the usage shown with a usage error and the "usage" of a
 * JSON error all come from it, so a command cannot exist in one of them and
 * be missing from another. backend and endpoint share their list, get, set
 * and rm code; what differs between them is data (struct view).
 *
 * Exit status: 0 success; 1 the server refused (its message is printed),
 * the thing named does not exist, or the server could not be reached; 2
 * usage error (the command's usage is printed). Every error is printed by
 * report(): "ringroutectl: MESSAGE" on stderr, or with --json one line
 * {"error": MESSAGE[, "status": HTTP status][, "usage": TEXT]} on stderr:
 * stdout carries results only, whatever happens. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#define EXIT_SERVER 1
#define EXIT_USAGE 2
#define WATCH_MAX_CHUNK (64u << 20) /* a queues line is far smaller */

static const char usage_line[] = "usage: ringroutectl [--socket PATH] [--json] NOUN VERB ...";

static const char usage_footer[] =
	"global options (anywhere on the line):\n"
	"  --socket PATH  the control socket (else $RINGROUTE_SOCKET,\n"
	"                 else /run/ringroute.sock)\n"
	"  --json         print JSON; errors too, as {\"error\": ...} lines on stderr\n"
	"  -h, --help     this text; after a command: that command's usage\n"
	"exit status: 0 done; 1 refused, not found or unreachable; 2 usage error\n"
	"ringroutectl help COMMAND: what COMMAND does, with its options\n";

/* Everything a command needs: where to connect and how to print. */
struct ctl {
	const char *socket;
	bool json;
};

/* How one option of "NOUN set" changes the object (see parse_set_opts). */
enum opt_kind {
	O_UINT32,   /* an integer 0..2^32-1 */
	O_UINT63,   /* an integer 0..2^63-1 */
	O_POLICY,   /* p2c, round_robin, least_load or prefix */
	O_BOOL,     /* true or false */
	O_STRING,   /* any string: the server validates it */
	O_METHODS,  /* M[,M...] -> ["M", ...] */
	O_LIST,     /* A[,B...] -> ["A", "B", ...]: the server validates the names */
	O_WEIGHTS,  /* B=W[,B=W...] -> {"B": W, ...} */
	O_REPLICA,  /* ID=HOST:PORT -> key.ID = "HOST:PORT" */
};

struct set_opt {
	const char *opt;   /* "--max-ongoing" */
	const char *key;   /* the object's key it sets */
	const char *sub;   /* a key inside key (health_check.path), or NULL */
	enum opt_kind kind;
	const char *none;  /* the value that removes key altogether, or NULL */
};

/* One column of "NOUN list": key's value, the count of its members
 * (count), or absent when the object has no key. */
struct column {
	const char *head, *key, *absent;
	bool count;
};

/* One row of "NOUN get" (absent: shown when the object has no key). */
struct field {
	const char *key, *absent;
};

/* What backend and endpoint commands differ in: data, not code. */
struct view {
	const char *coll;                  /* "backends": /v1/backends, the config's key */
	const struct column *columns;      /* list */
	const struct field *fields;        /* get, before any other key */
	const struct set_opt *opts;        /* set */
	const char *const *required;       /* keys a new object must be given */
	const char *required_opts;         /* the options that give them, for the message */
};

struct command;
typedef int (*cmd_fn)(const struct ctl *ctl, const struct command *c, int argc, char **argv);

struct command {
	const char *noun;
	const char *verb;   /* NULL: a command of one word */
	const char *args;   /* the synopsis after the words; '\n' starts a continuation line */
	const char *help;   /* what it does, then its options */
	cmd_fn run;         /* argv: what follows the command's words */
	const struct view *view;
};

static int cmd_config_get(const struct ctl *, const struct command *, int, char **);
static int cmd_config_apply(const struct ctl *, const struct command *, int, char **);
static int cmd_list(const struct ctl *, const struct command *, int, char **);
static int cmd_get(const struct ctl *, const struct command *, int, char **);
static int cmd_set(const struct ctl *, const struct command *, int, char **);
static int cmd_rm(const struct ctl *, const struct command *, int, char **);
static int cmd_replica_list(const struct ctl *, const struct command *, int, char **);
static int cmd_replica_add(const struct ctl *, const struct command *, int, char **);
static int cmd_replica_rm(const struct ctl *, const struct command *, int, char **);
static int cmd_replica_drain(const struct ctl *, const struct command *, int, char **);
static int cmd_stats(const struct ctl *, const struct command *, int, char **);
static int cmd_queues(const struct ctl *, const struct command *, int, char **);
static int cmd_help(const struct ctl *, const struct command *, int, char **);

static const struct set_opt backend_opts[] = {
	{ "--max-ongoing", "max_ongoing_requests", NULL, O_UINT32, NULL },
	{ "--max-queued", "max_queued_requests", NULL, O_UINT32, NULL },
	{ "--queue-timeout-ms", "queue_timeout_ms", NULL, O_UINT32, NULL },
	{ "--connect-timeout-ms", "connect_timeout_ms", NULL, O_UINT32, NULL },
	{ "--request-timeout-ms", "request_timeout_ms", NULL, O_UINT32, NULL },
	{ "--retries", "retries", NULL, O_UINT32, NULL },
	{ "--slow-start-ms", "slow_start_ms", NULL, O_UINT32, NULL },
	{ "--retry-on", "retry_on", NULL, O_LIST, NULL },
	{ "--retry-budget-percent", "retry_budget_percent", NULL, O_UINT32, NULL },
	{ "--policy", "policy", NULL, O_POLICY, NULL },
	{ "--load-reports", "load_reports", NULL, O_BOOL, NULL },
	{ "--load-scrape-ms", "load_scrape_ms", NULL, O_UINT32, NULL },
	{ "--load-max-age-ms", "load_max_age_ms", NULL, O_UINT32, NULL },
	{ "--load-queue-metric", "load_metrics", "queue", O_STRING, NULL },
	{ "--load-kv-metric", "load_metrics", "kv_cache", O_STRING, NULL },
	{ "--health-check", "health_check", "path", O_STRING, "none" },
	{ "--health-interval-ms", "health_check", "interval_ms", O_UINT32, NULL },
	{ "--health-rise", "health_check", "rise", O_UINT32, NULL },
	{ "--health-fall", "health_check", "fall", O_UINT32, NULL },
	{ "--consecutive-failures", "outlier_detection", "consecutive_failures", O_UINT32, NULL },
	{ "--base-ejection-ms", "outlier_detection", "base_ejection_ms", O_UINT32, NULL },
	{ "--max-ejection-ms", "outlier_detection", "max_ejection_ms", O_UINT32, NULL },
	{ "--max-ejection-percent", "outlier_detection", "max_ejection_percent", O_UINT32, NULL },
	{ "--count-5xx", "outlier_detection", "count_5xx", O_BOOL, NULL },
	{ "--queue-when-unavailable", "queue_when_unavailable", NULL, O_BOOL, NULL },
	{ "--replica", "replicas", NULL, O_REPLICA, NULL },
	{ NULL, NULL, NULL, 0, NULL },
};

static const struct set_opt endpoint_opts[] = {
	{ "--route", "route", NULL, O_STRING, NULL },
	{ "--methods", "methods", NULL, O_METHODS, "any" },
	{ "--traffic", "traffic", NULL, O_WEIGHTS, NULL },
	{ "--shadow", "shadow", NULL, O_WEIGHTS, "none" },
	{ "--call-method", "call_method", NULL, O_STRING, "none" },
	{ "--max-body-bytes", "max_body_bytes", NULL, O_UINT63, NULL },
	{ NULL, NULL, NULL, 0, NULL },
};

static const struct column backend_columns[] = {
	{ "REPLICAS", "replicas", "0", true },
	{ "MAX_ONGOING", "max_ongoing_requests", "-", false },
	{ "MAX_QUEUED", "max_queued_requests", "-", false },
	{ "QUEUE_TIMEOUT_MS", "queue_timeout_ms", "-", false },
	{ "RETRIES", "retries", "-", false },
	{ "POLICY", "policy", "-", false },
	{ "HEALTH_CHECK", "health_check", "none", false },
	{ NULL, NULL, NULL, false },
};

static const struct column endpoint_columns[] = {
	{ "ROUTE", "route", "-", false },
	{ "METHODS", "methods", "any", false },
	{ "TRAFFIC", "traffic", "-", false },
	{ "SHADOW", "shadow", "none", false },
	{ "CALL_METHOD", "call_method", "none", false },
	{ NULL, NULL, NULL, false },
};

static const struct field backend_fields[] = {
	{ "max_ongoing_requests", "-" }, { "max_queued_requests", "-" },
	{ "queue_timeout_ms", "-" },     { "connect_timeout_ms", "-" },
	{ "request_timeout_ms", "-" },   { "retries", "-" },
	{ "retry_on", "-" },             { "retry_budget_percent", "-" },
	{ "policy", "-" },               { "health_check", "none" },
	{ "outlier_detection", "-" },    { "queue_when_unavailable", "-" },
	{ "slow_start_ms", "-" },
	{ NULL, NULL },
};

static const struct field endpoint_fields[] = {
	{ "route", "-" },        { "methods", "any" },     { "traffic", "-" },
	{ "shadow", "none" },    { "call_method", "none" }, { "max_body_bytes", "-" },
	{ NULL, NULL },
};

static const char *const endpoint_required[] = { "route", "traffic", NULL };
static const char *const nothing_required[] = { NULL };

static const struct view backend_view = {
	"backends", backend_columns, backend_fields, backend_opts, nothing_required, "",
};
static const struct view endpoint_view = {
	"endpoints", endpoint_columns, endpoint_fields, endpoint_opts, endpoint_required,
	"--route and --traffic",
};

/* The merge rule of set, said once for both nouns. */
#define SET_MERGE_HELP                                                                  \
	"On an existing one only the fields given change: the current object is read,\n" \
	"the options are applied to it in order and the result is put back whole (a\n"   \
	"change someone else makes between that read and the write is lost).\n"

static const struct command commands[] = {
	{ "config", "get", "",
	  "Prints the current config: the canonical document, every default filled in,\n"
	  "indented. --json: the document as the server sends it (one line).\n",
	  cmd_config_get, NULL },
	{ "config", "apply", "FILE",
	  "Replaces the whole config with FILE (- reads stdin). The document is\n"
	  "validated whole: a refused one (exit 1, the server names the bad field)\n"
	  "changes nothing.\n",
	  cmd_config_apply, NULL },
	{ "backend", "list", "",
	  "One line per backend: NAME REPLICAS MAX_ONGOING MAX_QUEUED QUEUE_TIMEOUT_MS\n"
	  "RETRIES POLICY HEALTH_CHECK. --json: {\"version\": N, \"backends\": {NAME: {...}}}.\n",
	  cmd_list, &backend_view },
	{ "backend", "get", "NAME",
	  "Every field of backend NAME (FIELD VALUE), then its replicas (REPLICA\n"
	  "ADDRESS). --json: {\"version\": N, \"name\": NAME, \"backend\": {...}}.\n"
	  "An unknown NAME exits 1.\n",
	  cmd_get, &backend_view },
	{ "backend", "set",
	  "NAME [--max-ongoing N] [--max-queued N]\n"
	  "[--queue-timeout-ms N] [--connect-timeout-ms N]\n"
	  "[--request-timeout-ms N] [--retries N]\n"
	  "[--retry-on C[,C...]] [--retry-budget-percent N]\n"
	  "[--policy p2c|round_robin|least_load|prefix]\n"
	  "[--load-reports true|false] [--load-scrape-ms N]\n"
	  "[--load-max-age-ms N] [--load-queue-metric NAME]\n"
	  "[--load-kv-metric NAME]\n"
	  "[--health-check PATH|none]\n"
	  "[--health-interval-ms N] [--health-rise N]\n"
	  "[--health-fall N]\n"
	  "[--consecutive-failures N] [--base-ejection-ms N]\n"
	  "[--max-ejection-ms N] [--max-ejection-percent N]\n"
	  "[--count-5xx true|false] [--queue-when-unavailable true|false]\n"
	  "[--replica ID=HOST:PORT ...]",
	  "Creates backend NAME (what is not given takes its default) or changes it.\n"
	  SET_MERGE_HELP
	  "  --max-ongoing N          max_ongoing_requests: in flight per replica, >= 1\n"
	  "  --max-queued N           max_queued_requests: waiting, process-wide; 0: none\n"
	  "  --queue-timeout-ms N     queue_timeout_ms: a queued request gets 503 after it\n"
	  "  --connect-timeout-ms N   connect_timeout_ms, >= 1\n"
	  "  --request-timeout-ms N   request_timeout_ms: idle timeout on the replica, >= 1\n"
	  "  --retries N              retries: tries on another replica after the first\n"
	  "  --slow-start-ms N        slow_start_ms: a new or recovered replica's share\n"
	  "                           ramps up over N ms; 0: off\n"
	  "  --retry-on C[,C...]      retry_on: connect-failure, reset-before-response\n"
	  "                           (idempotent methods only), 503, 429\n"
	  "  --retry-budget-percent N retry_budget_percent: retries in flight, at most\n"
	  "                           this share of the backend's requests (0..100)\n"
	  "  --policy P               policy: p2c, round_robin, least_load or prefix\n"
	  "  --load-reports B         load_reports: ask replicas for endpoint-load-metrics\n"
	  "  --load-scrape-ms N       load_scrape_ms: scrape /metrics every N ms; 0: off\n"
	  "  --load-max-age-ms N      load_max_age_ms: older reports are not used\n"
	  "  --load-queue-metric M    load_metrics.queue: the scraped queue gauge\n"
	  "  --load-kv-metric M       load_metrics.kv_cache: the scraped KV-cache gauge\n"
	  "  --health-check PATH      health_check.path; none removes the health check\n"
	  "  --health-interval-ms N   health_check.interval_ms, >= 100 (needs a path)\n"
	  "  --health-rise N          health_check.rise: successes in a row to turn healthy\n"
	  "  --health-fall N          health_check.fall: failures in a row to turn unhealthy\n"
	  "  --consecutive-failures N outlier_detection.consecutive_failures: failures\n"
	  "                           in a row that eject a replica; 0: no ejection\n"
	  "  --base-ejection-ms N     outlier_detection.base_ejection_ms: the first\n"
	  "                           ejection; the k-th in a row lasts k times it\n"
	  "  --max-ejection-ms N      outlier_detection.max_ejection_ms: its cap\n"
	  "  --max-ejection-percent N outlier_detection.max_ejection_percent, 0..100\n"
	  "  --count-5xx B            outlier_detection.count_5xx: 5xx answers are failures\n"
	  "  --queue-when-unavailable B  queue_when_unavailable: while no replica is up,\n"
	  "                           queue (true) instead of 503 at once (false)\n"
	  "  --replica ID=HOST:PORT   adds replica ID or moves it (repeatable); the other\n"
	  "                           replicas stay (replica rm removes one)\n",
	  cmd_set, &backend_view },
	{ "backend", "rm", "NAME",
	  "Removes backend NAME. Refused (exit 1) while an endpoint names it in its\n"
	  "traffic or shadow. Its replicas drain: requests in flight finish.\n",
	  cmd_rm, &backend_view },
	{ "replica", "list", "BACKEND",
	  "The replicas of BACKEND: REPLICA ADDRESS WEIGHT DRAIN. --json: {\"version\": N,\n"
	  "\"backend\": BACKEND, \"replicas\": {ID: \"HOST:PORT\" or {\"address\", \"weight\",\n"
	  "\"drain\"}}}. An unknown BACKEND\n"
	  "exits 1. (stats shows what each replica is doing.)\n",
	  cmd_replica_list, NULL },
	{ "replica", "add", "BACKEND ID HOST:PORT [--weight N]",
	  "Adds replica ID to BACKEND, or moves it to HOST:PORT. Two replicas of one\n"
	  "backend on one address are refused (they would double its cap).\n"
	  "  --weight N   its share of the backend's requests against the others'\n"
	  "               weights, 1..10000 (default 1)\n",
	  cmd_replica_add, NULL },
	{ "replica", "rm", "BACKEND ID",
	  "Removes replica ID of BACKEND: its requests in flight finish, no new ones\n"
	  "start.\n",
	  cmd_replica_rm, NULL },
	{ "replica", "drain", "BACKEND ID",
	  "Drains replica ID of BACKEND: it stays in the config but gets no new\n"
	  "requests; those in flight finish. stats shows it draining. Kept in the\n"
	  "state file (--state) across restarts until replica enable.\n",
	  cmd_replica_drain, NULL },
	{ "replica", "enable", "BACKEND ID",
	  "Undoes replica drain: replica ID of BACKEND gets new requests again.\n",
	  cmd_replica_drain, NULL },
	{ "endpoint", "list", "",
	  "One line per endpoint: NAME ROUTE METHODS TRAFFIC SHADOW CALL_METHOD.\n"
	  "--json: {\"version\": N, \"endpoints\": {NAME: {...}}}.\n",
	  cmd_list, &endpoint_view },
	{ "endpoint", "get", "NAME",
	  "Every field of endpoint NAME (FIELD VALUE). --json: {\"version\": N,\n"
	  "\"name\": NAME, \"endpoint\": {...}}. An unknown NAME exits 1.\n",
	  cmd_get, &endpoint_view },
	{ "endpoint", "set",
	  "NAME [--route /PATH] [--methods M[,M...]|any]\n"
	  "[--traffic B=W[,B=W...]]\n"
	  "[--shadow B=P[,B=P...]|none]\n"
	  "[--call-method M|none] [--max-body-bytes N]",
	  "Creates endpoint NAME (--route and --traffic are then required) or changes it.\n"
	  SET_MERGE_HELP
	  "  --route /PATH            route: a path prefix, at a segment boundary\n"
	  "  --methods M[,M...]       methods, e.g. GET,POST; any: every method\n"
	  "  --traffic B=W[,B=W...]   traffic, the whole split: weights >= 0, each\n"
	  "                           backend gets W / (sum of the weights)\n"
	  "  --shadow B=P[,B=P...]    shadow, every shadow copy: each backend B gets a\n"
	  "                           copy with probability P in [0, 1]; none: no copies\n"
	  "  --call-method M          call_method (X-Serve-Call-Method); none removes it\n"
	  "  --max-body-bytes N       max_body_bytes: larger bodies get 413\n",
	  cmd_set, &endpoint_view },
	{ "endpoint", "rm", "NAME",
	  "Removes endpoint NAME: its route answers 404 (or a shorter route's\n"
	  "endpoint takes it); requests in flight finish.\n",
	  cmd_rm, &endpoint_view },
	{ "stats", NULL, "",
	  "One line per replica: BACKEND REPLICA ADDRESS ONGOING REQUESTS ERRORS STATE\n"
	  "(ok, unhealthy, draining, ejected, retry-after: out while its Retry-After lasts)\n"
	  "LAST_PROBE (the last health probe's result, - without a health check).\n"
	  "--json: GET /v1/stats as the server sends it.\n",
	  cmd_stats, NULL },
	{ "queues", NULL, "[--watch]",
	  "One line per backend: BACKEND QUEUED ONGOING REPLICAS BY_PRIORITY (the\n"
	  "waiters of each priority, \"P:n\" highest first) OLDEST_WAIT_MS. --watch: a new view\n"
	  "every report interval (--report-interval-ms) until interrupted; with --json\n"
	  "one NDJSON line each.\n",
	  cmd_queues, NULL },
	{ "help", NULL, "[NOUN [VERB]]",
	  "Prints the usage of one command, of every command of NOUN, or of all.\n"
	  "COMMAND --help (or -h) does the same. An unknown command exits 2.\n",
	  cmd_help, NULL },
	{ NULL, NULL, NULL, NULL, NULL, NULL },
};

/* ------------------------------------------------------------------ */
/* errors and usage */

/* --json, set by main before anything can fail: how report() prints. */
static bool json_errors;

/* Writes "PREFIXnoun verb ARGS", each continuation line of ARGS aligned
 * under its first. */
static void write_synopsis(FILE *f, const char *prefix, const struct command *c)
{
	int col = fprintf(f, "%s%s%s%s%s", prefix, c->noun, c->verb ? " " : "",
			  c->verb ? c->verb : "", *c->args ? " " : "");

	for (const char *s = c->args;;) {
		const char *nl = strchr(s, '\n');
		fprintf(f, "%.*s\n", nl ? (int)(nl - s) : (int)strlen(s), s);
		if (!nl)
			break;
		s = nl + 1;
		fprintf(f, "%*s", col > 0 ? col : 0, "");
	}
}

/* Writes the usage of a scope: command c, else every command of noun,
 * else all of them with the global options. */
static void write_usage(FILE *f, const struct command *c, const char *noun)
{
	fprintf(f, "%s\n", usage_line);
	if (!c && !noun)
		fputs("commands:\n", f);
	for (const struct command *k = commands; k->noun; k++)
		if (c ? k == c : !noun || !strcmp(k->noun, noun))
			write_synopsis(f, "  ", k);
	if (c || noun)
		fprintf(f, "ringroutectl help %s%s%s: what it does, with its options\n",
			c ? c->noun : noun, c && c->verb ? " " : "", c && c->verb ? c->verb : "");
	else
		fputs(usage_footer, f);
}

/* Writes the help of command c: its synopsis, what it does, its options. */
static void write_help(FILE *f, const struct command *c)
{
	write_synopsis(f, "usage: ringroutectl ", c);
	fprintf(f, "\n%s", c->help);
}

/* A JSON string of s; bytes that are not UTF-8 (a file name, a server's
 * garbage) become '?' rather than losing the message. NULL on ENOMEM. */
static json_t *json_text(const char *s)
{
	json_t *j = json_string(s);
	char *copy;

	if (j || !(copy = strdup(s)))
		return j;
	for (char *p = copy; *p; p++)
		if ((unsigned char)*p >= 0x80)
			*p = '?';
	j = json_string(copy);
	free(copy);
	return j;
}

/* The one place errors are printed (see the top of the file). status: the
 * HTTP status of a refusal, or 0; usage: the text that goes with a usage
 * error, or NULL. Returns code, for `return report(...)`. */
static int vreport(int code, int status, const char *usage, const char *fmt, va_list ap)
{
	char msg[4096];

	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (json_errors) {
		json_t *j = json_pack("{s:o*}", "error", json_text(msg));
		char *line;
		if (j && status)
			json_object_set_new(j, "status", json_integer(status));
		if (j && usage)
			json_object_set_new(j, "usage", json_text(usage));
		line = j ? json_dumps(j, JSON_COMPACT) : NULL;
		fprintf(stderr, "%s\n", line ? line : "{\"error\":\"out of memory\"}");
		free(line);
		json_decref(j);
	} else {
		fprintf(stderr, "ringroutectl: %s\n%s", msg, usage ? usage : "");
	}
	return code;
}

/* report() for everything that is not a usage error: exit 1. */
__attribute__((format(printf, 1, 2)))
static int fail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vreport(EXIT_SERVER, 0, NULL, fmt, ap);
	va_end(ap);
	return EXIT_SERVER;
}

/* report() with a variable list of arguments. */
__attribute__((format(printf, 4, 5)))
static int report(int code, int status, const char *usage, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vreport(code, status, usage, fmt, ap);
	va_end(ap);
	return code;
}

/* A usage error: the message (after c's words when c is given) and the
 * usage of c, else of noun's commands, else of all. Returns EXIT_USAGE. */
__attribute__((format(printf, 3, 4)))
static int usage_error(const struct command *c, const char *noun, const char *fmt, ...)
{
	char msg[2048], *usage = NULL;
	size_t ulen = 0;
	FILE *f = open_memstream(&usage, &ulen);
	va_list ap;

	if (f) {
		write_usage(f, c, noun);
		fclose(f);
	}
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	report(EXIT_USAGE, 0, usage, "%s%s%s%s%s", c ? c->noun : "", c && c->verb ? " " : "",
	       c && c->verb ? c->verb : "", c ? ": " : "", msg);
	free(usage);
	return EXIT_USAGE;
}

/* ------------------------------------------------------------------ */
/* HTTP over the Unix socket */

struct response {
	int status;
	char *body;        /* NUL-terminated, decoded */
	size_t len;
	json_int_t version; /* X-Ringroute-Version, -1 when absent */
};

static void response_free(struct response *r)
{
	free(r->body);
	r->body = NULL;
}

/* Connects to the control socket. Returns the fd or -1 after report(). */
static int ctl_connect(const struct ctl *ctl)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(ctl->socket) >= sizeof(sa.sun_path)) {
		fail("socket path too long: %s", ctl->socket);
		return -1;
	}
	strcpy(sa.sun_path, ctl->socket);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		fail("cannot connect to %s: %s", ctl->socket, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Sends one request (Connection: close). Returns 0 or -errno. */
static int send_request(int fd, const char *method, const char *target, const char *body)
{
	char head[1024];
	size_t blen = body ? strlen(body) : 0;
	int n, rc;

	n = snprintf(head, sizeof(head),
		     "%s %s HTTP/1.1\r\nHost: localhost\r\nUser-Agent: ringroutectl\r\n"
		     "Connection: close\r\n%s%s",
		     method, target, body ? "Content-Type: application/json\r\n" : "",
		     body ? "" : "\r\n");
	if (n < 0 || (size_t)n >= sizeof(head))
		return -ENAMETOOLONG;
	if (body) {
		size_t m = strlen(head);
		snprintf(head + m, sizeof(head) - m, "Content-Length: %zu\r\n\r\n", blen);
	}
	rc = write_all(fd, head, strlen(head));
	if (!rc && blen)
		rc = write_all(fd, body, blen);
	return rc;
}

/* Returns the value of header name in the head block (NUL-terminated,
 * copied into out), or NULL. */
static const char *find_header(const char *head, const char *name, char *out, size_t outlen)
{
	size_t nl = strlen(name);
	const char *l = strstr(head, "\r\n");

	while (l && l[2] != '\r') {
		const char *line = l + 2, *end = strstr(line, "\r\n");
		if (!end)
			break;
		if ((size_t)(end - line) > nl && strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
			const char *v = line + nl + 1;
			size_t n;
			while (*v == ' ' || *v == '\t')
				v++;
			n = (size_t)(end - v);
			if (n >= outlen)
				n = outlen - 1;
			memcpy(out, v, n);
			out[n] = '\0';
			return out;
		}
		l = end;
	}
	return NULL;
}

/* Parses a chunk-size line at p (hex digits, then an optional extension and
 * CRLF) within [p, lim). Returns 0 with *size and *next (the first data
 * byte), or -1 with why set: no digits, a size that does not fit in 64 bits,
 * or no CRLF yet. Every later bound is checked against lim by subtraction,
 * so a size of 2^64-1 cannot wrap around. */
static int chunk_line(const char *p, const char *lim, uint64_t *size, const char **next,
		      const char **why)
{
	const char *q = p, *crlf;
	uint64_t v = 0;

	while (q < lim && isxdigit((unsigned char)*q)) {
		int d = isdigit((unsigned char)*q) ? *q - '0' : (tolower((unsigned char)*q) - 'a' + 10);
		if (v > (UINT64_MAX >> 4)) {
			*why = "chunk size does not fit in 64 bits";
			return -1;
		}
		v = (v << 4) | (uint64_t)d;
		q++;
	}
	if (q == p) {
		*why = "chunk size is not a hex number";
		return -1;
	}
	crlf = memmem(q, (size_t)(lim - q), "\r\n", 2);
	if (!crlf) {
		*why = "chunk size line has no end";
		return -1;
	}
	*size = v;
	*next = crlf + 2;
	return 0;
}

/* Decodes a chunked body in place; returns the decoded length, or -1 with
 * *why set (a chunk size larger than what was received, a chunk not
 * followed by CRLF, a bad size line). */
static long dechunk(char *p, size_t len, const char **why)
{
	size_t in = 0, out = 0;

	for (;;) {
		const char *data;
		uint64_t size;
		if (in >= len) {
			*why = "chunked body ends without its last chunk";
			return -1;
		}
		if (chunk_line(p + in, p + len, &size, &data, why))
			return -1;
		in = (size_t)(data - p);
		if (size == 0)
			return (long)out;
		/* len - in cannot wrap (in <= len): compare sizes, never sums */
		if (size > len - in || len - in - size < 2) {
			*why = "chunk size larger than the response";
			return -1;
		}
		if (memcmp(p + in + size, "\r\n", 2)) {
			*why = "chunk not followed by CRLF";
			return -1;
		}
		memmove(p + out, p + in, (size_t)size);
		out += (size_t)size;
		in += (size_t)size + 2;
	}
}

/* Parses a Content-Length value: decimal digits only, no sign, at most
 * UINT64_MAX. 0 and *out, or -1. */
static int parse_content_length(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	if (!*s)
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
			return -1;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*out = v;
	return 0;
}

/* One request, whole response. Returns 0 and *r, or -1 after report(). */
static int http(const struct ctl *ctl, const char *method, const char *target, const char *body,
		struct response *r)
{
	char *buf = NULL, *sep, val[64];
	const char *why = "no status line or head";
	size_t len = 0, cap = 0, hl;
	int fd = ctl_connect(ctl), rc;

	memset(r, 0, sizeof(*r));
	r->version = -1;
	if (fd < 0)
		return -1;
	rc = send_request(fd, method, target, body);
	if (rc) {
		fail("%s: send: %s", ctl->socket, strerror(-rc));
		close(fd);
		return -1;
	}
	for (;;) {
		ssize_t n;
		if (cap - len < 4096) {
			char *nb = realloc(buf, cap ? cap * 2 : 16384);
			if (!nb) {
				fail("out of memory");
				goto fail;
			}
			buf = nb;
			cap = cap ? cap * 2 : 16384;
		}
		n = recv(fd, buf + len, cap - len - 1, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fail("%s: recv: %s", ctl->socket, strerror(errno));
			goto fail;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	fd = -1;
	if (!buf)
		goto bad;
	buf[len] = '\0';
	sep = strstr(buf, "\r\n\r\n");
	if (!sep || sscanf(buf, "HTTP/1.%*d %d", &r->status) != 1)
		goto bad;
	hl = (size_t)(sep - buf) + 4;
	sep[2] = '\0'; /* head ends with its last CRLF for find_header */
	if (find_header(buf, "X-Ringroute-Version", val, sizeof(val)))
		r->version = (json_int_t)strtoll(val, NULL, 10);
	if (find_header(buf, "Transfer-Encoding", val, sizeof(val)) && strstr(val, "chunked")) {
		long n = dechunk(buf + hl, len - hl, &why);
		if (n < 0)
			goto bad;
		len = hl + (size_t)n;
	} else if (find_header(buf, "Content-Length", val, sizeof(val))) {
		uint64_t cl;
		if (parse_content_length(val, &cl)) {
			why = "Content-Length is not a number that fits in 64 bits";
			goto bad;
		}
		if (cl > len - hl) { /* not hl + cl > len: that wraps */
			why = "Content-Length larger than the response";
			goto bad;
		}
		len = hl + (size_t)cl;
	}
	r->len = len - hl;
	r->body = malloc(r->len + 1);
	if (!r->body) {
		fail("out of memory");
		goto fail;
	}
	memcpy(r->body, buf + hl, r->len);
	r->body[r->len] = '\0';
	free(buf);
	return 0;
bad:
	fail("%s: malformed response from the server: %s", ctl->socket, why);
fail:
	if (fd >= 0)
		close(fd);
	free(buf);
	return -1;
}

/* Reports the server's error for a non-2xx response; returns EXIT_SERVER. */
static int server_error(const struct response *r)
{
	json_t *j = json_loadb(r->body, r->len, JSON_DECODE_ANY, NULL);
	const char *msg = json_string_value(json_object_get(j, "error"));
	size_t n = r->len;

	while (n && (r->body[n - 1] == '\n' || r->body[n - 1] == '\r'))
		n--;
	if (msg)
		report(EXIT_SERVER, r->status, NULL, "%s", msg);
	else
		report(EXIT_SERVER, r->status, NULL, "HTTP %d: %.*s", r->status, (int)n, r->body);
	json_decref(j);
	return EXIT_SERVER;
}

/* Takes a response: on 2xx returns 0 with the body parsed into *out (when
 * out is not NULL); else reports, frees resp and returns an exit code. */
static int take_response(struct response *resp, json_t **out)
{
	json_error_t jerr;
	int rc;

	if (resp->status < 200 || resp->status > 299) {
		rc = server_error(resp);
		response_free(resp);
		return rc;
	}
	if (!out)
		return 0;
	*out = json_loadb(resp->body, resp->len, JSON_DECODE_ANY, &jerr);
	if (!*out) {
		response_free(resp);
		return fail("server sent invalid JSON: %s", jerr.text);
	}
	return 0;
}

/* Does the request; see take_response. */
static int call(const struct ctl *ctl, const char *method, const char *target, const char *body,
		struct response *resp, json_t **out)
{
	if (http(ctl, method, target, body, resp))
		return EXIT_SERVER;
	return take_response(resp, out);
}

/* Percent-encodes a path segment into a new string. */
static char *seg_encode(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	char *out = malloc(strlen(s) * 3 + 1), *o = out;

	if (!out)
		return NULL;
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		    ch == '-' || ch == '_' || ch == '.' || ch == '~') {
			*o++ = (char)ch;
		} else {
			*o++ = '%';
			*o++ = hex[ch >> 4];
			*o++ = hex[ch & 15];
		}
	}
	*o = '\0';
	return out;
}

/* Builds "/v1/<kind>/<a>[/replicas/<b>]" with a and b encoded; NULL after
 * report() when out of memory. */
static char *target_of(const char *kind, const char *a, const char *b)
{
	char *ea = seg_encode(a), *eb = b ? seg_encode(b) : NULL, *t = NULL;

	if (ea && (!b || eb) &&
	    asprintf(&t, "/v1/%s/%s%s%s", kind, ea, b ? "/replicas/" : "", b ? eb : "") < 0)
		t = NULL;
	free(ea);
	free(eb);
	if (!t)
		fail("out of memory");
	return t;
}

/* GET /v1/COLL/NAME. Returns 0 with *resp and *doc (the parsed body,
 * {"version", "name", NOUN: {...}}); or, when missing_ok and the server
 * answers 404, 0 with *doc = NULL; else an exit code after report(). */
static int fetch_resource(const struct ctl *ctl, const char *coll, const char *name,
			  bool missing_ok, struct response *resp, json_t **doc)
{
	char *target = target_of(coll, name, NULL);
	int rc;

	*doc = NULL;
	if (!target)
		return EXIT_SERVER;
	rc = http(ctl, "GET", target, NULL, resp);
	free(target);
	if (rc)
		return EXIT_SERVER;
	if (missing_ok && resp->status == 404) {
		response_free(resp);
		return 0;
	}
	return take_response(resp, doc);
}

/* Prints the server's body as it came (one JSON line). */
static void print_raw(const struct response *resp)
{
	printf("%.*s%s", (int)resp->len, resp->body,
	       resp->len && resp->body[resp->len - 1] == '\n' ? "" : "\n");
}

/* Prints j as one compact JSON line (steals j). 0, or 1 after report(). */
static int print_json(json_t *j)
{
	char *s = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII) : NULL;

	json_decref(j);
	if (!s)
		return fail("out of memory");
	printf("%s\n", s);
	free(s);
	return 0;
}

/* Prints a change's result: the raw JSON with --json, else msg + version. */
static int print_change(const struct ctl *ctl, const struct response *resp, json_t *j,
			const char *msg)
{
	if (ctl->json)
		print_raw(resp);
	else
		printf("%s (version %" JSON_INTEGER_FORMAT ")\n", msg,
		       json_integer_value(json_object_get(j, "version")));
	return 0;
}

/* Sends a change (PUT/DELETE) and prints its result. target: stolen (NULL:
 * out of memory, reported); body: JSON (stolen) or NULL. Returns the exit
 * code. */
static int do_change(const struct ctl *ctl, const char *method, char *target, json_t *body,
		     const char *msg)
{
	struct response resp;
	char *text = NULL;
	json_t *j = NULL;
	int rc;

	if (!target) {
		json_decref(body);
		return EXIT_SERVER;
	}
	if (body) {
		text = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
		json_decref(body);
		if (!text) {
			free(target);
			return fail("out of memory");
		}
	}
	rc = call(ctl, method, target, text, &resp, &j);
	free(text);
	free(target);
	if (rc)
		return rc;
	rc = print_change(ctl, &resp, j, msg);
	json_decref(j);
	response_free(&resp);
	return rc;
}

/* ------------------------------------------------------------------ */
/* tables */

#define MAX_COLS 9

struct table {
	size_t ncols, nrows, cap;
	const char *head[MAX_COLS];
	char **cells;     /* nrows * ncols, owned */
	size_t width[MAX_COLS];
};

static void table_init(struct table *t, size_t ncols, const char *const *head)
{
	memset(t, 0, sizeof(*t));
	t->ncols = ncols;
	for (size_t i = 0; i < ncols; i++) {
		t->head[i] = head[i];
		t->width[i] = strlen(head[i]);
	}
}

/* Adds a row of ncols strings (copied). 0 or -ENOMEM. */
static int table_row(struct table *t, const char *const *cells)
{
	if (t->nrows == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 16;
		char **nc = realloc(t->cells, cap * t->ncols * sizeof(*nc));
		if (!nc)
			return -ENOMEM;
		t->cells = nc;
		t->cap = cap;
	}
	for (size_t i = 0; i < t->ncols; i++) {
		char *c = strdup(cells[i] ? cells[i] : "-");
		if (!c)
			return -ENOMEM;
		t->cells[t->nrows * t->ncols + i] = c;
		if (strlen(c) > t->width[i])
			t->width[i] = strlen(c);
	}
	t->nrows++;
	return 0;
}

static void table_print(struct table *t)
{
	for (size_t i = 0; i < t->ncols; i++)
		printf("%-*s%s", i + 1 < t->ncols ? (int)t->width[i] : 0, t->head[i],
		       i + 1 < t->ncols ? "  " : "\n");
	for (size_t r = 0; r < t->nrows; r++)
		for (size_t i = 0; i < t->ncols; i++)
			printf("%-*s%s", i + 1 < t->ncols ? (int)t->width[i] : 0,
			       t->cells[r * t->ncols + i], i + 1 < t->ncols ? "  " : "\n");
}

static void table_free(struct table *t)
{
	for (size_t i = 0; i < t->nrows * t->ncols; i++)
		free(t->cells[i]);
	free(t->cells);
	t->cells = NULL;
}

static void fmt_int(char *buf, size_t n, json_t *v)
{
	if (json_is_integer(v))
		snprintf(buf, n, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
	else
		snprintf(buf, n, "-");
}

/* Prints the queues view {"backends": {name: {queued, ongoing, replicas,
 * by_priority: {P: n}, oldest_wait_ms}}}: BY_PRIORITY lists "P:n" from the
 * highest priority down ("-" when none waits). */
static void print_queues(json_t *j)
{
	static const char *const head[] = { "BACKEND", "QUEUED", "ONGOING", "REPLICAS",
					    "BY_PRIORITY", "OLDEST_WAIT_MS" };
	json_t *bes = json_object_get(j, "backends"), *b;
	const char *name;
	struct table t;

	table_init(&t, 6, head);
	json_object_foreach(bes, name, b) {
		char q[32], o[32], r[32], bp[256], ow[32];
		const char *row[6] = { name, q, o, r, bp, ow };
		json_t *byp = json_object_get(b, "by_priority");
		size_t n = 0;
		fmt_int(q, sizeof(q), json_object_get(b, "queued"));
		fmt_int(o, sizeof(o), json_object_get(b, "ongoing"));
		fmt_int(r, sizeof(r), json_object_get(b, "replicas"));
		fmt_int(ow, sizeof(ow), json_object_get(b, "oldest_wait_ms"));
		bp[0] = '\0';
		for (int p = 10; p >= 0; p--) {
			char key[8];
			json_t *v;
			snprintf(key, sizeof(key), "%d", p);
			v = json_object_get(byp, key);
			if (!json_is_integer(v) || n >= sizeof(bp) - 32)
				continue;
			n += (size_t)snprintf(bp + n, sizeof(bp) - n, "%s%d:%" JSON_INTEGER_FORMAT,
					      n ? " " : "", p, json_integer_value(v));
		}
		if (!n)
			snprintf(bp, sizeof(bp), "-");
		if (table_row(&t, row))
			break;
	}
	table_print(&t);
	table_free(&t);
}

/* Prints stats: one line per replica. */
static void print_stats(json_t *j)
{
	static const char *const head[] = { "BACKEND", "REPLICA", "ADDRESS", "ONGOING",
					    "REQUESTS", "ERRORS", "STATE", "LOAD", "LAST_PROBE" };
	json_t *bes = json_object_get(j, "backends"), *b, *r;
	const char *bname, *rid;
	struct table t;

	table_init(&t, 9, head);
	json_object_foreach(bes, bname, b) {
		json_object_foreach(json_object_get(b, "replicas"), rid, r) {
			char o[32], q[32], e[32], ld[48] = "-";
			json_t *load = json_object_get(r, "load");
			json_t *ra = json_object_get(r, "retry_after_ms");
			const char *state = json_is_true(json_object_get(r, "draining")) ? "draining"
					    : json_is_false(json_object_get(r, "healthy")) ? "unhealthy"
					    : json_is_true(json_object_get(r, "ejected")) ? "ejected"
					    : json_integer_value(ra) > 0 ? "retry-after"
					    : "ok";
			/* last: the reason has spaces ("status 503") */
			const char *probe = json_string_value(
				json_object_get(json_object_get(r, "health"), "reason"));
			const char *row[9] = { bname, rid,
					       json_string_value(json_object_get(r, "address")), o, q,
					       e, state, ld, probe ? probe : "-" };
			/* the report least_load reads now: QUEUE/KV_CACHE_USAGE */
			if (json_is_true(json_object_get(load, "fresh")))
				snprintf(ld, sizeof(ld), "%" JSON_INTEGER_FORMAT "/%.2f",
					 json_integer_value(json_object_get(load, "queue")),
					 json_number_value(json_object_get(load, "kv_cache_usage")));
			fmt_int(o, sizeof(o), json_object_get(r, "ongoing"));
			fmt_int(q, sizeof(q), json_object_get(r, "requests"));
			fmt_int(e, sizeof(e), json_object_get(r, "errors"));
			if (table_row(&t, row))
				break;
		}
	}
	table_print(&t);
	table_free(&t);
}

/* Writes v as one cell: numbers and strings as they are, an array as
 * a,b and an object as k=v,k=v (in the server's order: sorted). */
static void write_value(FILE *f, json_t *v)
{
	const char *k;
	json_t *x;
	size_t i;
	bool first = true;

	switch (json_typeof(v)) {
	case JSON_OBJECT:
		json_object_foreach(v, k, x) {
			fprintf(f, "%s%s=", first ? "" : ",", k);
			write_value(f, x);
			first = false;
		}
		break;
	case JSON_ARRAY:
		json_array_foreach(v, i, x) {
			if (i)
				fputc(',', f);
			write_value(f, x);
		}
		break;
	case JSON_STRING:
		fputs(json_string_value(v), f);
		break;
	case JSON_INTEGER:
		fprintf(f, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		break;
	case JSON_REAL:
		fprintf(f, "%g", json_real_value(v));
		break;
	case JSON_TRUE:
		fputs("true", f);
		break;
	case JSON_FALSE:
		fputs("false", f);
		break;
	case JSON_NULL:
		fputs("null", f);
		break;
	}
}

/* v as a new string for a table cell; absent (v NULL) or empty: dflt.
 * NULL on ENOMEM. */
static char *cell_of(json_t *v, const char *dflt)
{
	char *s = NULL;
	size_t n = 0;
	FILE *f;

	if (v && (f = open_memstream(&s, &n)) != NULL) {
		write_value(f, v);
		if (fclose(f)) {
			free(s);
			s = NULL;
		}
	}
	if (!s || !*s) {
		free(s);
		s = strdup(dflt);
	}
	return s;
}

/* Adds a row whose cells are new strings (freed here, NULL: ENOMEM).
 * 0 or -ENOMEM. */
static int table_row_owned(struct table *t, char **cells)
{
	int rc = 0;

	for (size_t i = 0; i < t->ncols; i++)
		if (!cells[i])
			rc = -ENOMEM;
	if (!rc)
		rc = table_row(t, (const char *const *)cells);
	for (size_t i = 0; i < t->ncols; i++)
		free(cells[i]);
	return rc;
}

/* "NOUN list": one row per object of objs, the view's columns. */
static int print_list(const struct view *vw, json_t *objs)
{
	const char *head[MAX_COLS] = { "NAME" }, *name;
	char *cells[MAX_COLS];
	struct table t;
	size_t n = 1;
	json_t *o;
	int rc = 0;

	for (const struct column *col = vw->columns; col->head && n < MAX_COLS; col++)
		head[n++] = col->head;
	table_init(&t, n, head);
	json_object_foreach(objs, name, o) {
		size_t i = 1;
		cells[0] = strdup(name);
		for (const struct column *col = vw->columns; i < n; col++, i++) {
			json_t *v = json_object_get(o, col->key);
			if (col->count) {
				char num[32];
				snprintf(num, sizeof(num), "%zu", json_object_size(v));
				cells[i] = strdup(num);
			} else {
				cells[i] = cell_of(v, col->absent);
			}
		}
		if ((rc = table_row_owned(&t, cells)) != 0)
			break;
	}
	if (!rc)
		table_print(&t);
	table_free(&t);
	return rc ? fail("out of memory") : 0;
}

/* Prints a backend's replicas (the document's entries: "HOST:PORT" or
 * {"address", "weight", "drain"}) as REPLICA ADDRESS WEIGHT DRAIN; shared
 * by "backend get" and "replica list". 0 or an exit code. */
static int print_replicas(json_t *reps)
{
	static const char *const head[] = { "REPLICA", "ADDRESS", "WEIGHT", "DRAIN" };
	const char *id;
	struct table t;
	json_t *v;
	int rc = 0;

	table_init(&t, 4, head);
	json_object_foreach(reps, id, v) {
		json_t *w = json_is_object(v) ? json_object_get(v, "weight") : NULL;
		char *cells[4] = { strdup(id),
				   cell_of(json_is_object(v) ? json_object_get(v, "address") : v, "-"),
				   w ? cell_of(w, "1") : strdup("1"),
				   strdup(json_is_true(json_object_get(v, "drain")) ? "yes" : "no") };
		if ((rc = table_row_owned(&t, cells)) != 0)
			break;
	}
	if (!rc)
		table_print(&t);
	table_free(&t);
	return rc ? fail("out of memory") : 0;
}

/* "NOUN get": FIELD VALUE for the view's fields, then any other key (a
 * newer server's), then a backend's replicas as a table of their own. */
static int print_object(const struct view *vw, json_t *obj)
{
	static const char *const fhead[] = { "FIELD", "VALUE" };
	json_t *reps = json_object_get(obj, "replicas"), *v;
	const char *key;
	char *cells[2];
	struct table t;
	int rc = 0;

	table_init(&t, 2, fhead);
	for (const struct field *f = vw->fields; f->key && !rc; f++) {
		cells[0] = strdup(f->key);
		cells[1] = cell_of(json_object_get(obj, f->key), f->absent);
		rc = table_row_owned(&t, cells);
	}
	json_object_foreach(obj, key, v) {
		const struct field *f;
		for (f = vw->fields; f->key && strcmp(f->key, key); f++)
			;
		if (rc || f->key || !strcmp(key, "replicas"))
			continue;
		cells[0] = strdup(key);
		cells[1] = cell_of(v, "-");
		rc = table_row_owned(&t, cells);
	}
	if (!rc)
		table_print(&t);
	table_free(&t);
	if (rc || !reps)
		return rc ? fail("out of memory") : 0;
	printf("\n");
	return print_replicas(reps);
}

/* ------------------------------------------------------------------ */
/* commands */

/* A command that takes no argument: 0, or a usage error. */
static int no_args(const struct command *c, int argc, char **argv)
{
	if (argc == 0)
		return 0;
	return usage_error(c, NULL, "unexpected argument '%s'", argv[0]);
}

/* A command that takes exactly n positional arguments (what): 0, or a
 * usage error. None may look like an option: a NAME never starts with
 * '-' here, so a misplaced option is caught rather than taken for one. */
static int n_args(const struct command *c, int argc, char **argv, int n, const char *what)
{
	for (int i = 0; i < argc && i < n; i++)
		if (argv[i][0] == '-' && argv[i][1])
			return usage_error(c, NULL, "unknown option '%s' (expected %s)", argv[i],
					   what);
	if (argc != n)
		return usage_error(c, NULL, "expected %s", what);
	return 0;
}

static int cmd_get_print(const struct ctl *ctl, const char *target, void (*print)(json_t *))
{
	struct response resp;
	json_t *j = NULL;
	int rc = call(ctl, "GET", target, NULL, &resp, &j);

	if (rc)
		return rc;
	if (ctl->json)
		print_raw(&resp);
	else
		print(j);
	json_decref(j);
	response_free(&resp);
	return 0;
}

static void print_pretty(json_t *j)
{
	char *s = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);

	if (s)
		printf("%s\n", s);
	free(s);
}

/* Reads a whole file ("-": stdin) into a new string. NULL after report(). */
static char *read_file(const char *path)
{
	FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
	char *buf = NULL;
	size_t len = 0, cap = 0;

	if (!f) {
		fail("%s: %s", path, strerror(errno));
		return NULL;
	}
	for (;;) {
		size_t n;
		if (cap - len < 4096) {
			char *nb = realloc(buf, cap ? cap * 2 : 65536);
			if (!nb) {
				fail("out of memory");
				free(buf);
				buf = NULL;
				goto out;
			}
			buf = nb;
			cap = cap ? cap * 2 : 65536;
		}
		n = fread(buf + len, 1, cap - len - 1, f);
		len += n;
		if (n == 0)
			break;
	}
	if (ferror(f)) {
		fail("%s: read error", path);
		free(buf);
		buf = NULL;
		goto out;
	}
	buf[len] = '\0';
out:
	if (f != stdin)
		fclose(f);
	return buf;
}

static int cmd_config_get(const struct ctl *ctl, const struct command *c, int argc, char **argv)
{
	int rc = no_args(c, argc, argv);

	return rc ? rc : cmd_get_print(ctl, "/v1/config", print_pretty);
}

static int cmd_config_apply(const struct ctl *ctl, const struct command *c, int argc, char **argv)
{
	struct response resp;
	json_t *j = NULL;
	char *text;
	int rc;

	/* "-" (stdin) is a FILE, not an option */
	if (argc != 1)
		return usage_error(c, NULL, "expected FILE");
	text = read_file(argv[0]);
	if (!text)
		return EXIT_SERVER;
	rc = call(ctl, "PUT", "/v1/config", text, &resp, &j);
	free(text);
	if (rc)
		return rc;
	rc = print_change(ctl, &resp, j, "config applied");
	json_decref(j);
	response_free(&resp);
	return rc;
}

/* "NOUN list": GET /v1/config, one row per object of the view's section;
 * --json: {"version": N, COLL: {...}}. */
static int cmd_list(const struct ctl *ctl, const struct command *c, int argc, char **argv)
{
	const struct view *vw = c->view;
	struct response resp;
	json_t *doc = NULL, *objs;
	int rc = no_args(c, argc, argv);

	if (rc || (rc = call(ctl, "GET", "/v1/config", NULL, &resp, &doc)) != 0)
		return rc;
	objs = json_object_get(doc, vw->coll);
	if (!json_is_object(objs))
		rc = fail("server sent a config without \"%s\"", vw->coll);
	else if (ctl->json)
		rc = print_json(resp.version >= 0
					? json_pack("{s:I,s:O}", "version", resp.version, vw->coll, objs)
					: json_pack("{s:O}", vw->coll, objs));
	else
		rc = print_list(vw, objs);
	json_decref(doc);
	response_free(&resp);
	return rc;
}

/* "NOUN get NAME": GET /v1/COLL/NAME. */
static int cmd_get(const struct ctl *ctl, const struct command *c, int argc, char **argv)
{
	struct response resp;
	json_t *doc = NULL, *obj;
	int rc = n_args(c, argc, argv, 1, "NAME");

	if (rc || (rc = fetch_resource(ctl, c->view->coll, argv[0], false, &resp, &doc)) != 0)
		return rc;
	obj = json_object_get(doc, c->noun);
	if (!json_is_object(obj))
		rc = fail("server sent no \"%s\" object", c->noun);
	else if (ctl->json)
		print_raw(&resp);
	else
		rc = print_object(c->view, obj);
	json_decref(doc);
	response_free(&resp);
	return rc;
}

/* Parses an unsigned decimal integer option value, at most max. */
static int parse_uint(const struct command *c, const char *opt, const char *s, uint64_t max,
		      json_int_t *out)
{
	unsigned long long v;
	char *end;

	errno = 0;
	/* strtoull takes a sign and spaces (and wraps "-1"): digits only */
	v = isdigit((unsigned char)*s) ? strtoull(s, &end, 10) : 0;
	if (!isdigit((unsigned char)*s) || *end || errno || v > max)
		return usage_error(c, NULL, "%s: expected an integer 0..%" PRIu64 ", got '%s'", opt,
				   max, s);
	*out = (json_int_t)v;
	return 0;
}

/* Parses "a=0.9,b=0.1" into *out, a new object of numbers; a usage error
 * when malformed. */
static int parse_weights(const struct command *c, const char *opt, const char *s, json_t **out)
{
	json_t *o = json_object();
	char *copy = strdup(s), *save = NULL, *tok;

	if (!o || !copy)
		goto nomem;
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '='), *end;
		double w;
		if (!eq || eq == tok)
			goto bad;
		*eq = '\0';
		errno = 0;
		w = strtod(eq + 1, &end);
		if (!eq[1] || *end || errno)
			goto bad;
		if (json_object_set_new(o, tok, json_real(w)))
			goto nomem;
	}
	if (json_object_size(o) == 0)
		goto bad;
	free(copy);
	*out = o;
	return 0;
bad:
	free(copy);
	json_decref(o);
	return usage_error(c, NULL, "%s: expected NAME=NUMBER[,NAME=NUMBER...], got '%s'", opt, s);
nomem:
	free(copy);
	json_decref(o);
	return fail("out of memory");
}

/* Parses "GET,POST" into *out, a new array of strings; a usage error when
 * empty. */
/* A comma-separated list of names as a JSON array; what: the form, for
 * the message of an empty one. */
static int parse_list(const struct command *c, const char *opt, const char *s, const char *what,
		      json_t **out)
{
	json_t *m = json_array();
	char *copy = strdup(s), *save = NULL, *tok;
	int rc = 0;

	for (tok = copy ? strtok_r(copy, ",", &save) : NULL; m && tok;
	     tok = strtok_r(NULL, ",", &save))
		if (json_array_append_new(m, json_string(tok)))
			rc = -ENOMEM;
	free(copy);
	if (!m || !copy || rc) {
		json_decref(m);
		return fail("out of memory");
	}
	if (json_array_size(m) == 0) {
		json_decref(m);
		return usage_error(c, NULL, "%s: expected %s, got '%s'", opt, what, s);
	}
	*out = m;
	return 0;
}

/* Option iterator for "--name VALUE" and "--name=VALUE". Returns 1 and
 * *val when argv[*i] is option name (advancing *i), 0 if it is not, -1 if
 * the value is missing. */
static int opt_value(int argc, char **argv, int *i, const char *name, const char **val)
{
	size_t n = strlen(name);

	if (strncmp(argv[*i], name, n))
		return 0;
	if (argv[*i][n] == '=') {
		*val = argv[*i] + n + 1;
		return 1;
	}
	if (argv[*i][n])
		return 0;
	if (*i + 1 >= argc)
		return -1;
	*val = argv[++*i];
	return 1;
}

/* Parses the options of "NOUN set NAME" into changes, an array of
 * [key, sub, value] that apply_changes() applies in order: value null
 * removes key, sub null sets key to value, else key.sub is set (key
 * created as an object if need be). Nothing is sent before every option
 * parsed. 0 or an exit code after report(). */
static int parse_set_opts(const struct command *c, int argc, char **argv, json_t *changes)
{
	for (int i = 0; i < argc; i++) {
		const struct set_opt *o;
		const char *val = NULL, *sub;
		char id[256];
		json_t *v = NULL;
		int r = 0, rc = 0;

		for (o = c->view->opts; o->opt; o++)
			if ((r = opt_value(argc, argv, &i, o->opt, &val)) != 0)
				break;
		if (r < 0)
			return usage_error(c, NULL, "%s: missing value", argv[i]);
		if (!o->opt)
			return usage_error(c, NULL, "unknown argument '%s'", argv[i]);
		sub = o->sub;
		if (o->none && !strcmp(val, o->none)) {
			sub = NULL; /* v stays NULL: remove the key */
		} else {
			switch (o->kind) {
			case O_UINT32:
			case O_UINT63: {
				json_int_t n = 0;
				rc = parse_uint(c, o->opt, val, o->kind == O_UINT32 ? UINT32_MAX : INT64_MAX,
						&n);
				v = rc ? NULL : json_integer(n);
				break;
			}
			case O_POLICY:
				if (strcmp(val, "p2c") && strcmp(val, "round_robin") &&
				    strcmp(val, "least_load") && strcmp(val, "prefix"))
					return usage_error(c, NULL,
							   "%s: expected p2c, round_robin, least_load or "
							   "prefix, got '%s'", o->opt, val);
				v = json_string(val);
				break;
			case O_BOOL:
				if (strcmp(val, "true") && strcmp(val, "false"))
					return usage_error(c, NULL, "%s: expected true or false, got '%s'",
							   o->opt, val);
				v = json_boolean(!strcmp(val, "true"));
				break;
			case O_STRING:
				v = json_text(val);
				break;
			case O_METHODS:
				rc = parse_list(c, o->opt, val, "METHOD[,METHOD...] or any", &v);
				break;
			case O_LIST:
				rc = parse_list(c, o->opt, val, "NAME[,NAME...]", &v);
				break;
			case O_WEIGHTS:
				rc = parse_weights(c, o->opt, val, &v);
				break;
			case O_REPLICA: {
				const char *eq = strchr(val, '=');
				if (!eq || eq == val || !eq[1] || (size_t)(eq - val) >= sizeof(id))
					return usage_error(c, NULL, "%s: expected ID=HOST:PORT, got '%s'",
							   o->opt, val);
				memcpy(id, val, (size_t)(eq - val));
				id[eq - val] = '\0';
				sub = id;
				v = json_text(eq + 1);
				break;
			}
			}
			if (rc)
				return rc;
			if (!v)
				return fail("out of memory");
		}
		if (json_array_append_new(changes, json_pack("[s,s?,o?]", o->key, sub, v)))
			return fail("out of memory");
	}
	return 0;
}

/* Applies parse_set_opts' changes to obj. 0 or -ENOMEM. */
static int apply_changes(json_t *obj, json_t *changes)
{
	json_t *ch;
	size_t i;

	json_array_foreach(changes, i, ch) {
		const char *key = json_string_value(json_array_get(ch, 0));
		const char *sub = json_string_value(json_array_get(ch, 1));
		json_t *v = json_array_get(ch, 2), *o;

		if (json_is_null(v)) {
			json_object_del(obj, key);
			continue;
		}
		if (!sub) {
			if (json_object_set(obj, key, v))
				return -ENOMEM;
			continue;
		}
		o = json_object_get(obj, key);
		if (!json_is_object(o)) {
			o = json_object();
			if (!o || json_object_set_new(obj, key, o))
				return -ENOMEM;
		}
		if (json_object_set(o, sub, v))
			return -ENOMEM;
	}
	return 0;
}

/* "NOUN set NAME [options]": read the object (404: a new one), apply the
 * options, put the result back whole. The merge happens here, not in the
 * server, so the server's one rule stays "PUT replaces". */
static int cmd_set(const struct ctl *ctl, const struct command *c, int argc, char **argv)
{
	const struct view *vw = c->view;
	json_t *changes = json_array(), *doc = NULL, *obj = NULL;
	struct response resp = { 0 };
	const char *name;
	char msg[512];
	int rc;

	if (!changes)
		return fail("out of memory");
	if (argc < 1 || (argv[0][0] == '-' && argv[0][1])) {
		rc = usage_error(c, NULL, "expected NAME before the options");
		goto out;
	}
	name = argv[0];
	if ((rc = parse_set_opts(c, argc - 1, argv + 1, changes)) != 0)
		goto out;
	if ((rc = fetch_resource(ctl, vw->coll, name, true, &resp, &doc)) != 0)
		goto out;
	if (doc && !json_is_object(json_object_get(doc, c->noun))) {
		rc = fail("server sent no \"%s\" object", c->noun);
		goto out;
	}
	obj = doc ? json_deep_copy(json_object_get(doc, c->noun)) : json_object();
	if (!obj || apply_changes(obj, changes)) {
		rc = fail("out of memory");
		goto out;
	}
	for (const char *const *k = vw->required; !doc && *k; k++) {
		if (!json_object_get(obj, *k)) {
			rc = usage_error(c, NULL, "%s is a new %s: %s are required", name, c->noun,
					 vw->required_opts);
			goto out;
		}
	}
	snprintf(msg, sizeof(msg), "%s %s %s", c->noun, name, doc ? "updated" : "created");
	rc = do_change(ctl, "PUT", target_of(vw->coll, name, NULL), obj, msg);
	obj = NULL;
out:
	json_decref(obj);
	json_decref(doc);
	json_decref(changes);
	response_free(&resp);
	return rc;
}

/* "NOUN rm NAME": DELETE /v1/COLL/NAME. */
static int cmd_rm(const struct ctl *ctl, const struct command *c, int argc, char **argv)
{
	char msg[512];
	int rc = n_args(c, argc, argv, 1, "NAME");

	if (rc)
		return rc;
	snprintf(msg, sizeof(msg), "%s %s removed", c->noun, argv[0]);
	return do_change(ctl, "DELETE", target_of(c->view->coll, argv[0], NULL), NULL, msg);
}

/* "replica list BACKEND": the backend's replicas; --json
 * {"version": N, "backend": NAME, "replicas": {...}}. */
static int cmd_replica_list(const struct ctl *ctl, const struct command *c, int argc, char **argv)
{
	struct response resp;
	json_t *doc = NULL, *reps;
	int rc = n_args(c, argc, argv, 1, "BACKEND");

	if (rc || (rc = fetch_resource(ctl, "backends", argv[0], false, &resp, &doc)) != 0)
		return rc;
	reps = json_object_get(json_object_get(doc, "backend"), "replicas");
	if (ctl->json) {
		rc = print_json(json_pack("{s:O*,s:s,s:O*}", "version", json_object_get(doc, "version"),
					  "backend", argv[0], "replicas", reps));
	} else {
		rc = print_replicas(reps);
	}
	json_decref(doc);
	response_free(&resp);
	return rc;
}

/* "replica add BACKEND ID HOST:PORT [--weight N]": the string form, or
 * {"address", "weight"} with --weight (the server checks its range). */
static int cmd_replica_add(const struct ctl *ctl, const struct command *c, int argc, char **argv)
{
	char msg[1024];
	json_int_t weight = -1; /* not given */
	json_t *body;
	int rc;

	if (argc >= 2 && !strcmp(argv[argc - 2], "--weight")) {
		if ((rc = parse_uint(c, "--weight", argv[argc - 1], UINT32_MAX, &weight)) != 0)
			return rc;
		argc -= 2;
	}
	if ((rc = n_args(c, argc, argv, 3, "BACKEND ID HOST:PORT [--weight N]")) != 0)
		return rc;
	snprintf(msg, sizeof(msg), "replica %s/%s = %s added", argv[0], argv[1], argv[2]);
	body = weight >= 0 ? json_pack("{s:o, s:I}", "address", json_text(argv[2]), "weight", weight)
			     : json_text(argv[2]);
	return do_change(ctl, "PUT", target_of("backends", argv[0], argv[1]), body, msg);
}

static int cmd_replica_rm(const struct ctl *ctl, const struct command *c, int argc, char **argv)
{
	char msg[1024];
	int rc = n_args(c, argc, argv, 2, "BACKEND ID");

	if (rc)
		return rc;
	snprintf(msg, sizeof(msg), "replica %s/%s removed", argv[0], argv[1]);
	return do_change(ctl, "DELETE", target_of("backends", argv[0], argv[1]), NULL, msg);
}

/* "replica drain|enable BACKEND ID": POST .../replicas/ID/drain or
 * /enable; the server edits the entry, so nothing else in it is lost. */
static int cmd_replica_drain(const struct ctl *ctl, const struct command *c, int argc, char **argv)
{
	char msg[1024], *t, *target = NULL;
	int rc = n_args(c, argc, argv, 2, "BACKEND ID");

	if (rc)
		return rc;
	t = target_of("backends", argv[0], argv[1]);
	if (!t)
		return EXIT_SERVER;
	if (asprintf(&target, "%s/%s", t, c->verb) < 0) {
		free(t);
		return fail("out of memory");
	}
	free(t);
	snprintf(msg, sizeof(msg), "replica %s/%s %s", argv[0], argv[1],
		 strcmp(c->verb, "drain") ? "enabled" : "draining");
	return do_change(ctl, "POST", target, NULL, msg);
}

static int cmd_stats(const struct ctl *ctl, const struct command *c, int argc, char **argv)
{
	int rc = no_args(c, argc, argv);

	return rc ? rc : cmd_get_print(ctl, "/v1/stats", print_stats);
}

static int cmd_watch(const struct ctl *ctl);

static int cmd_queues(const struct ctl *ctl, const struct command *c, int argc, char **argv)
{
	if (argc == 0)
		return cmd_get_print(ctl, "/v1/queues", print_queues);
	if (argc == 1 && !strcmp(argv[0], "--watch"))
		return cmd_watch(ctl);
	/* argv[0] is --watch only when something follows it */
	return usage_error(c, NULL, "unknown argument '%s'", strcmp(argv[0], "--watch") ? argv[0] : argv[1]);
}

/* The verbs of noun, "list, get, set, rm", into buf. */
static const char *verbs_of(const char *noun, char *buf, size_t len)
{
	size_t n = 0;

	buf[0] = '\0';
	for (const struct command *k = commands; k->noun; k++)
		if (!strcmp(k->noun, noun) && k->verb && n < len)
			n += (size_t)snprintf(buf + n, len - n, "%s%s", n ? ", " : "", k->verb);
	return buf;
}

/* Finds the command the first words of w (n > 0) name. Returns it, with
 * *used = the words it took (1 or 2). NULL: *rc = 0 when w names only a
 * noun that has verbs and group_ok (help then shows the whole noun), else
 * *rc = EXIT_USAGE after a usage error. */
static const struct command *resolve(int n, char **w, bool group_ok, int *used, int *rc)
{
	bool noun = false;
	char verbs[256];

	*rc = 0;
	*used = 1;
	for (const struct command *k = commands; k->noun; k++) {
		if (strcmp(k->noun, w[0]))
			continue;
		noun = true;
		if (!k->verb)
			return k;
		if (n > 1 && !strcmp(k->verb, w[1])) {
			*used = 2;
			return k;
		}
	}
	if (!noun)
		*rc = usage_error(NULL, NULL, "unknown command '%s'", w[0]);
	else if (n < 2 && !group_ok)
		*rc = usage_error(NULL, w[0], "%s: missing verb (%s)", w[0],
				  verbs_of(w[0], verbs, sizeof(verbs)));
	else if (n >= 2)
		*rc = usage_error(NULL, w[0], "%s: unknown verb '%s' (%s)", w[0], w[1],
				  verbs_of(w[0], verbs, sizeof(verbs)));
	return NULL;
}

/* Help for the command the words name (words after it are ignored: they
 * are that command's arguments, as in "backend set NAME --help"), for
 * every command of a noun, or for all (n == 0). On stdout, exit 0; an
 * unknown command is a usage error. */
static int help_words(int n, char **w)
{
	const struct command *c;
	int used, rc;

	if (n == 0) {
		write_usage(stdout, NULL, NULL);
		return 0;
	}
	c = resolve(n, w, true, &used, &rc);
	if (rc)
		return rc;
	if (c) {
		write_help(stdout, c);
		return 0;
	}
	for (const struct command *k = commands; k->noun; k++) {
		if (strcmp(k->noun, w[0]))
			continue;
		if (k != commands && !strcmp(k[-1].noun, w[0]))
			fputc('\n', stdout);
		write_help(stdout, k);
	}
	return 0;
}

static int cmd_help(const struct ctl *ctl, const struct command *c, int argc, char **argv)
{
	(void)ctl;
	(void)c;
	return help_words(argc, argv);
}

/* queues --watch: prints every NDJSON line as it comes (a table each with a
 * time line, or the raw line with --json) until the server closes. */
static int cmd_watch(const struct ctl *ctl)
{
	char *buf = NULL, *line = NULL;
	size_t len = 0, cap = 0, llen = 0, lcap = 0;
	bool in_body = false;
	int fd = ctl_connect(ctl), rc = EXIT_SERVER, err;

	if (fd < 0)
		return EXIT_SERVER;
	if ((err = send_request(fd, "GET", "/v1/queues?watch=1", NULL)) != 0) {
		fail("%s: send: %s", ctl->socket, strerror(-err));
		goto out;
	}
	for (;;) {
		ssize_t n;
		if (cap - len < 4096) {
			char *nb = realloc(buf, cap ? cap * 2 : 16384);
			if (!nb) {
				fail("out of memory");
				goto out;
			}
			buf = nb;
			cap = cap ? cap * 2 : 16384;
		}
		n = recv(fd, buf + len, cap - len - 1, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (in_body)
				fail("the server closed the stream");
			else
				fail("%s: %s", ctl->socket, n < 0 ? strerror(errno) : "connection closed");
			goto out;
		}
		len += (size_t)n;
		buf[len] = '\0';
		if (!in_body) {
			char *sep = strstr(buf, "\r\n\r\n");
			int status = 0;
			size_t hl;
			if (!sep)
				continue;
			sscanf(buf, "HTTP/1.%*d %d", &status);
			if (status != 200) {
				struct response r = { .status = status, .body = sep + 4,
						      .len = len - (size_t)(sep + 4 - buf) };
				rc = server_error(&r);
				goto out;
			}
			hl = (size_t)(sep - buf) + 4;
			memmove(buf, buf + hl, len - hl);
			len -= hl;
			buf[len] = '\0';
			in_body = true;
		}
		/* Whole chunks out of buf into line; whole lines out of line. */
		for (;;) {
			const char *data, *why;
			uint64_t size;
			size_t hdr;
			if (!memmem(buf, len, "\r\n", 2))
				break;
			if (chunk_line(buf, buf + len, &size, &data, &why)) {
				fail("%s: malformed stream from the server: %s", ctl->socket, why);
				goto out;
			}
			hdr = (size_t)(data - buf);
			if (size == 0) {
				rc = 0;
				goto out;
			}
			/* One NDJSON line per chunk: a chunk this large is no
			 * queues line; refuse it rather than buffer without end
			 * (and compare by subtraction: sums could wrap). */
			if (size > WATCH_MAX_CHUNK) {
				fail("%s: malformed stream from the server: chunk size %" PRIu64
				     " larger than %u bytes", ctl->socket, size, WATCH_MAX_CHUNK);
				goto out;
			}
			if (len - hdr < size + 2)
				break;
			if (memcmp(buf + hdr + size, "\r\n", 2)) {
				fail("%s: malformed stream from the server: chunk not followed by CRLF",
				     ctl->socket);
				goto out;
			}
			if (llen + size + 1 > lcap) {
				char *nl = realloc(line, llen + size + 1);
				if (!nl) {
					fail("out of memory");
					goto out;
				}
				line = nl;
				lcap = llen + size + 1;
			}
			memcpy(line + llen, buf + hdr, size);
			llen += size;
			line[llen] = '\0';
			memmove(buf, buf + hdr + size + 2, len - hdr - size - 2);
			len -= hdr + size + 2;
			buf[len] = '\0';
		}
		for (char *nl; line && (nl = memchr(line, '\n', llen));) {
			size_t l = (size_t)(nl - line);
			*nl = '\0';
			if (ctl->json) {
				printf("%s\n", line);
			} else {
				json_t *j = json_loads(line, 0, NULL);
				if (j) {
					time_t t = (time_t)json_integer_value(json_object_get(j, "time"));
					struct tm tm;
					char ts[32] = "";
					if (localtime_r(&t, &tm))
						strftime(ts, sizeof(ts), "%H:%M:%S", &tm);
					printf("-- %s version %" JSON_INTEGER_FORMAT "\n", ts,
					       json_integer_value(json_object_get(j, "version")));
					print_queues(j);
					json_decref(j);
				}
			}
			fflush(stdout);
			memmove(line, nl + 1, llen - l - 1);
			llen -= l + 1;
			line[llen] = '\0';
		}
	}
out:
	close(fd);
	free(buf);
	free(line);
	return rc;
}

int main(int argc, char **argv)
{
	struct ctl ctl = { .socket = getenv("RINGROUTE_SOCKET") };
	char **args = calloc((size_t)argc + 1, sizeof(*args));
	const struct command *c;
	bool help = false;
	int n = 0, rc = 0, used;

	/* Before anything can fail: errors are JSON wherever --json stands. */
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--json"))
			json_errors = ctl.json = true;
	if (!ctl.socket || !*ctl.socket)
		ctl.socket = "/run/ringroute.sock";
	if (!args)
		return fail("out of memory");
	/* Global options may come anywhere; everything else is the command. */
	for (int i = 1; i < argc && !rc; i++) {
		const char *val;
		int r;
		if (!strcmp(argv[i], "--json")) {
			continue;
		} else if ((r = opt_value(argc, argv, &i, "--socket", &val)) != 0) {
			if (r < 0 || !*val)
				rc = usage_error(NULL, NULL, "--socket: missing PATH");
			else
				ctl.socket = val;
		} else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			help = true;
		} else {
			args[n++] = argv[i];
		}
	}
	if (rc) {
		/* a usage error, printed */
	} else if (help) {
		rc = help_words(n, args);
	} else if (n == 0) {
		rc = usage_error(NULL, NULL, "missing command");
	} else if ((c = resolve(n, args, false, &used, &rc)) != NULL) {
		rc = c->run(&ctl, c, n - used, args + used);
	}
	free(args);
	return rc;
}
