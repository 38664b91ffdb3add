/* ringroutectl: the command-line client of ringroute's control socket.
 *
 * A thin client: every command is one or two HTTP/1.1 requests over the
 * Unix socket (--socket, $RINGROUTE_SOCKET, /run/ringroute.sock), spoken
 * here directly so the tool needs nothing but jansson. Output is a readable
 * table or message, or the server's JSON with --json.
 *
 * Exit status: 0 success, 1 the server refused (its message is printed) or
 * could not be reached, 2 usage error (the usage line is printed). */
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

static const char usage_text[] =
	"commands:\n"
	"  config get\n"
	"  config apply FILE                       (FILE may be - for stdin)\n"
	"  backend set NAME [--max-ongoing N] [--max-queued N] [--queue-timeout-ms N]\n"
	"                   [--policy p2c|round_robin] [--replica ID=HOST:PORT ...]\n"
	"  backend rm NAME\n"
	"  replica add BACKEND ID HOST:PORT\n"
	"  replica rm BACKEND ID\n"
	"  endpoint set NAME --route /PATH [--methods GET,POST] --traffic B=W[,B=W...]\n"
	"                    [--shadow B=P[,B=P...]] [--call-method M]\n"
	"  endpoint rm NAME\n"
	"  stats\n"
	"  queues [--watch]\n"
	"socket: --socket PATH, else $RINGROUTE_SOCKET, else /run/ringroute.sock\n";

/* Everything a command needs: where to connect and how to print. */
struct ctl {
	const char *socket;
	bool json;
};

/* Prints "ringroutectl: msg" and the usage to stderr; returns EXIT_USAGE. */
__attribute__((format(printf, 1, 2)))
static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("ringroutectl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n%s\n%s", usage_line, usage_text);
	return EXIT_USAGE;
}

/* ------------------------------------------------------------------ */
/* HTTP over the Unix socket */

struct response {
	int status;
	char *body;      /* NUL-terminated, decoded */
	size_t len;
};

static void response_free(struct response *r)
{
	free(r->body);
	r->body = NULL;
}

/* Connects to the control socket. Returns the fd or -1 with a message. */
static int ctl_connect(const struct ctl *ctl)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(ctl->socket) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "ringroutectl: socket path too long: %s\n", ctl->socket);
		return -1;
	}
	strcpy(sa.sun_path, ctl->socket);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		fprintf(stderr, "ringroutectl: cannot connect to %s: %s\n", ctl->socket,
			strerror(errno));
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

/* One request, whole response. Returns 0 and *r, or -1 after printing why. */
static int http(const struct ctl *ctl, const char *method, const char *target, const char *body,
		struct response *r)
{
	char *buf = NULL, *sep, val[64];
	const char *why = "no status line or head";
	size_t len = 0, cap = 0, hl;
	int fd = ctl_connect(ctl), rc;

	memset(r, 0, sizeof(*r));
	if (fd < 0)
		return -1;
	rc = send_request(fd, method, target, body);
	if (rc) {
		fprintf(stderr, "ringroutectl: %s: send: %s\n", ctl->socket, strerror(-rc));
		close(fd);
		return -1;
	}
	for (;;) {
		ssize_t n;
		if (cap - len < 4096) {
			char *nb = realloc(buf, cap ? cap * 2 : 16384);
			if (!nb) {
				fprintf(stderr, "ringroutectl: out of memory\n");
				goto fail;
			}
			buf = nb;
			cap = cap ? cap * 2 : 16384;
		}
		n = recv(fd, buf + len, cap - len - 1, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fprintf(stderr, "ringroutectl: %s: recv: %s\n", ctl->socket, strerror(errno));
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
		fprintf(stderr, "ringroutectl: out of memory\n");
		goto fail;
	}
	memcpy(r->body, buf + hl, r->len);
	r->body[r->len] = '\0';
	free(buf);
	return 0;
bad:
	fprintf(stderr, "ringroutectl: %s: malformed response from the server: %s\n", ctl->socket,
		why);
fail:
	if (fd >= 0)
		close(fd);
	free(buf);
	return -1;
}

/* Prints the server's error for a non-2xx response; returns EXIT_SERVER. */
static int server_error(const struct response *r)
{
	json_t *j = json_loadb(r->body, r->len, JSON_DECODE_ANY, NULL);
	const char *msg = json_string_value(json_object_get(j, "error"));

	if (msg)
		fprintf(stderr, "ringroutectl: %s\n", msg);
	else
		fprintf(stderr, "ringroutectl: HTTP %d: %.*s\n", r->status, (int)r->len, r->body);
	json_decref(j);
	return EXIT_SERVER;
}

/* Does the request; on 2xx returns 0 with the body parsed into *out (may be
 * NULL if the caller wants nothing); else prints and returns an exit code. */
static int call(const struct ctl *ctl, const char *method, const char *target, const char *body,
		struct response *resp, json_t **out)
{
	int rc;

	if (http(ctl, method, target, body, resp))
		return EXIT_SERVER;
	if (resp->status < 200 || resp->status > 299) {
		rc = server_error(resp);
		response_free(resp);
		return rc;
	}
	if (out) {
		json_error_t jerr;
		*out = json_loadb(resp->body, resp->len, JSON_DECODE_ANY, &jerr);
		if (!*out) {
			fprintf(stderr, "ringroutectl: server sent invalid JSON: %s\n", jerr.text);
			response_free(resp);
			return EXIT_SERVER;
		}
	}
	return 0;
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

/* Builds "/v1/<kind>/<a>[/replicas/<b>]" with a and b encoded. */
static char *target_of(const char *kind, const char *a, const char *b)
{
	char *ea = seg_encode(a), *eb = b ? seg_encode(b) : NULL, *t = NULL;

	if (ea && (!b || eb) &&
	    asprintf(&t, "/v1/%s/%s%s%s", kind, ea, b ? "/replicas/" : "", b ? eb : "") < 0)
		t = NULL;
	free(ea);
	free(eb);
	if (!t)
		fprintf(stderr, "ringroutectl: out of memory\n");
	return t;
}

/* Prints a change's result: the raw JSON with --json, else msg + version. */
static int print_change(const struct ctl *ctl, const struct response *resp, json_t *j,
			const char *msg)
{
	if (ctl->json)
		printf("%.*s%s", (int)resp->len, resp->body,
		       resp->len && resp->body[resp->len - 1] == '\n' ? "" : "\n");
	else
		printf("%s (version %" JSON_INTEGER_FORMAT ")\n", msg,
		       json_integer_value(json_object_get(j, "version")));
	return 0;
}

/* Sends a change (PUT/DELETE) and prints its result. body: JSON (stolen) or
 * NULL. Returns the exit code. */
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
			fprintf(stderr, "ringroutectl: out of memory\n");
			return EXIT_SERVER;
		}
	}
	rc = call(ctl, method, target, text ? text : NULL, &resp, &j);
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

#define MAX_COLS 8

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

/* Prints the queues view {"backends": {name: {queued, ongoing, replicas}}}. */
static void print_queues(json_t *j)
{
	static const char *const head[] = { "BACKEND", "QUEUED", "ONGOING", "REPLICAS" };
	json_t *bes = json_object_get(j, "backends"), *b;
	const char *name;
	struct table t;

	table_init(&t, 4, head);
	json_object_foreach(bes, name, b) {
		char q[32], o[32], r[32];
		const char *row[4] = { name, q, o, r };
		fmt_int(q, sizeof(q), json_object_get(b, "queued"));
		fmt_int(o, sizeof(o), json_object_get(b, "ongoing"));
		fmt_int(r, sizeof(r), json_object_get(b, "replicas"));
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
					    "REQUESTS", "ERRORS", "STATE" };
	json_t *bes = json_object_get(j, "backends"), *b, *r;
	const char *bname, *rid;
	struct table t;

	table_init(&t, 7, head);
	json_object_foreach(bes, bname, b) {
		json_object_foreach(json_object_get(b, "replicas"), rid, r) {
			char o[32], q[32], e[32];
			const char *state = json_is_true(json_object_get(r, "draining")) ? "draining"
					    : json_is_false(json_object_get(r, "healthy")) ? "unhealthy"
					    : "ok";
			const char *row[7] = { bname, rid,
					       json_string_value(json_object_get(r, "address")), o, q,
					       e, state };
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

/* ------------------------------------------------------------------ */
/* commands */

static int cmd_get_print(const struct ctl *ctl, const char *target, void (*print)(json_t *))
{
	struct response resp;
	json_t *j = NULL;
	int rc = call(ctl, "GET", target, NULL, &resp, &j);

	if (rc)
		return rc;
	if (ctl->json)
		printf("%.*s%s", (int)resp.len, resp.body,
		       resp.len && resp.body[resp.len - 1] == '\n' ? "" : "\n");
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

/* Reads a whole file ("-": stdin) into a new string. NULL after a message. */
static char *read_file(const char *path)
{
	FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
	char *buf = NULL;
	size_t len = 0, cap = 0;

	if (!f) {
		fprintf(stderr, "ringroutectl: %s: %s\n", path, strerror(errno));
		return NULL;
	}
	for (;;) {
		size_t n;
		if (cap - len < 4096) {
			char *nb = realloc(buf, cap ? cap * 2 : 65536);
			if (!nb) {
				fprintf(stderr, "ringroutectl: out of memory\n");
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
		fprintf(stderr, "ringroutectl: %s: read error\n", path);
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

static int cmd_config(const struct ctl *ctl, int argc, char **argv)
{
	if (argc < 1)
		return usage_error("config: missing verb (get, apply)");
	if (!strcmp(argv[0], "get")) {
		if (argc != 1)
			return usage_error("config get: takes no arguments");
		return cmd_get_print(ctl, "/v1/config", print_pretty);
	}
	if (!strcmp(argv[0], "apply")) {
		struct response resp;
		json_t *j = NULL;
		char *text;
		int rc;
		if (argc != 2)
			return usage_error("config apply: expected FILE");
		text = read_file(argv[1]);
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
	return usage_error("config: unknown verb '%s' (get, apply)", argv[0]);
}

/* Parses a non-negative integer option value. */
static int parse_count(const char *opt, const char *s, json_int_t *out)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (!*s || *end || errno || v < 0 || v > 0xffffffffll)
		return usage_error("%s: expected a non-negative integer, got '%s'", opt, s);
	*out = (json_int_t)v;
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

/* Fetches the current config document (for set = get + merge + put). */
static int get_config(const struct ctl *ctl, json_t **doc)
{
	struct response resp;
	int rc = call(ctl, "GET", "/v1/config", NULL, &resp, doc);

	if (!rc)
		response_free(&resp);
	return rc;
}

/* "NOUN rm NAME": DELETE /v1/COLLECTION/NAME. */
static int cmd_rm(const struct ctl *ctl, const char *noun, const char *collection, int argc,
		  char **argv)
{
	char msg[512];
	if (argc != 2)
		return usage_error("%s rm: expected NAME", noun);
	snprintf(msg, sizeof(msg), "%s %s removed", noun, argv[1]);
	return do_change(ctl, "DELETE", target_of(collection, argv[1], NULL), NULL, msg);
}

static int cmd_backend(const struct ctl *ctl, int argc, char **argv)
{
	if (argc < 1)
		return usage_error("backend: missing verb (set, rm)");
	if (!strcmp(argv[0], "rm"))
		return cmd_rm(ctl, "backend", "backends", argc, argv);
	if (!strcmp(argv[0], "set")) {
		json_t *set = json_object(), *reps = json_object(), *doc = NULL, *b;
		const char *name, *val;
		char msg[512];
		int rc = 0;

		if (argc < 2 || argv[1][0] == '-') {
			rc = usage_error("backend set: expected NAME");
			goto out;
		}
		name = argv[1];
		for (int i = 2; i < argc && !rc; i++) {
			static const struct { const char *opt, *key; } nums[] = {
				{ "--max-ongoing", "max_ongoing_requests" },
				{ "--max-queued", "max_queued_requests" },
				{ "--queue-timeout-ms", "queue_timeout_ms" },
			};
			int r = 0;
			size_t k;
			for (k = 0; k < sizeof(nums) / sizeof(nums[0]); k++) {
				r = opt_value(argc, argv, &i, nums[k].opt, &val);
				if (r)
					break;
			}
			if (r > 0) {
				json_int_t v = 0;
				rc = parse_count(nums[k].opt, val, &v);
				if (!rc)
					json_object_set_new(set, nums[k].key, json_integer(v));
				continue;
			}
			if (r == 0 && (r = opt_value(argc, argv, &i, "--policy", &val)) > 0) {
				if (strcmp(val, "p2c") && strcmp(val, "round_robin"))
					rc = usage_error("--policy: expected p2c or round_robin, got '%s'", val);
				else
					json_object_set_new(set, "policy", json_string(val));
				continue;
			}
			if (r == 0 && (r = opt_value(argc, argv, &i, "--replica", &val)) > 0) {
				const char *eq = strchr(val, '=');
				char id[256];
				if (!eq || eq == val || !eq[1] || (size_t)(eq - val) >= sizeof(id)) {
					rc = usage_error("--replica: expected ID=HOST:PORT, got '%s'", val);
					continue;
				}
				memcpy(id, val, (size_t)(eq - val));
				id[eq - val] = '\0';
				json_object_set_new(reps, id, json_string(eq + 1));
				continue;
			}
			if (r < 0)
				rc = usage_error("%s: missing value", argv[i]);
			else
				rc = usage_error("backend set: unknown argument '%s'", argv[i]);
		}
		if (rc)
			goto out;
		rc = get_config(ctl, &doc);
		if (rc)
			goto out;
		b = json_object_get(json_object_get(doc, "backends"), name);
		b = b ? json_deep_copy(b) : json_object();
		if (!json_object_get(b, "replicas"))
			json_object_set_new(b, "replicas", json_object());
		json_object_update(b, set);
		json_object_update(json_object_get(b, "replicas"), reps);
		snprintf(msg, sizeof(msg), "backend %s set", name);
		rc = do_change(ctl, "PUT", target_of("backends", name, NULL), b, msg);
	out:
		json_decref(doc);
		json_decref(set);
		json_decref(reps);
		return rc;
	}
	return usage_error("backend: unknown verb '%s' (set, rm)", argv[0]);
}

static int cmd_replica(const struct ctl *ctl, int argc, char **argv)
{
	char msg[1024];

	if (argc < 1)
		return usage_error("replica: missing verb (add, rm)");
	if (!strcmp(argv[0], "add")) {
		if (argc != 4)
			return usage_error("replica add: expected BACKEND ID HOST:PORT");
		snprintf(msg, sizeof(msg), "replica %s/%s = %s added", argv[1], argv[2], argv[3]);
		return do_change(ctl, "PUT", target_of("backends", argv[1], argv[2]),
				 json_string(argv[3]), msg);
	}
	if (!strcmp(argv[0], "rm")) {
		if (argc != 3)
			return usage_error("replica rm: expected BACKEND ID");
		snprintf(msg, sizeof(msg), "replica %s/%s removed", argv[1], argv[2]);
		return do_change(ctl, "DELETE", target_of("backends", argv[1], argv[2]), NULL, msg);
	}
	return usage_error("replica: unknown verb '%s' (add, rm)", argv[0]);
}

/* Parses "a=0.9,b=0.1" into a new object of numbers; NULL on a usage error
 * (printed). */
static json_t *parse_weights(const char *opt, const char *s)
{
	json_t *o = json_object();
	char *copy = strdup(s), *save = NULL, *tok;

	if (!o || !copy)
		goto bad;
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
		json_object_set_new(o, tok, json_real(w));
	}
	if (json_object_size(o) == 0)
		goto bad;
	free(copy);
	return o;
bad:
	usage_error("%s: expected NAME=WEIGHT[,NAME=WEIGHT...], got '%s'", opt, s);
	free(copy);
	json_decref(o);
	return NULL;
}

static int cmd_endpoint(const struct ctl *ctl, int argc, char **argv)
{
	if (argc < 1)
		return usage_error("endpoint: missing verb (set, rm)");
	if (!strcmp(argv[0], "rm"))
		return cmd_rm(ctl, "endpoint", "endpoints", argc, argv);
	if (!strcmp(argv[0], "set")) {
		json_t *set = json_object(), *doc = NULL, *e;
		const char *name, *val;
		char msg[512];
		int rc = 0;

		if (argc < 2 || argv[1][0] == '-') {
			rc = usage_error("endpoint set: expected NAME");
			goto out;
		}
		name = argv[1];
		for (int i = 2; i < argc && !rc; i++) {
			int r;
			if ((r = opt_value(argc, argv, &i, "--route", &val)) > 0) {
				json_object_set_new(set, "route", json_string(val));
			} else if (!r && (r = opt_value(argc, argv, &i, "--methods", &val)) > 0) {
				json_t *m = json_array();
				char *copy = strdup(val), *save = NULL, *tok;
				for (tok = copy ? strtok_r(copy, ",", &save) : NULL; tok;
				     tok = strtok_r(NULL, ",", &save))
					json_array_append_new(m, json_string(tok));
				free(copy);
				if (json_array_size(m) == 0) {
					json_decref(m);
					rc = usage_error("--methods: expected METHOD[,METHOD...]");
				} else {
					json_object_set_new(set, "methods", m);
				}
			} else if (!r && (r = opt_value(argc, argv, &i, "--traffic", &val)) > 0) {
				json_t *w = parse_weights("--traffic", val);
				if (!w)
					rc = EXIT_USAGE;
				else
					json_object_set_new(set, "traffic", w);
			} else if (!r && (r = opt_value(argc, argv, &i, "--shadow", &val)) > 0) {
				json_t *w = parse_weights("--shadow", val);
				if (!w)
					rc = EXIT_USAGE;
				else
					json_object_set_new(set, "shadow", w);
			} else if (!r && (r = opt_value(argc, argv, &i, "--call-method", &val)) > 0) {
				json_object_set_new(set, "call_method", json_string(val));
			} else if (r < 0) {
				rc = usage_error("%s: missing value", argv[i]);
			} else {
				rc = usage_error("endpoint set: unknown argument '%s'", argv[i]);
			}
		}
		if (rc)
			goto out;
		rc = get_config(ctl, &doc);
		if (rc)
			goto out;
		e = json_object_get(json_object_get(doc, "endpoints"), name);
		if (!e && (!json_object_get(set, "route") || !json_object_get(set, "traffic"))) {
			rc = usage_error("endpoint set: %s is a new endpoint: --route and --traffic are required",
					 name);
			goto out;
		}
		e = e ? json_deep_copy(e) : json_object();
		json_object_update(e, set);
		snprintf(msg, sizeof(msg), "endpoint %s set", name);
		rc = do_change(ctl, "PUT", target_of("endpoints", name, NULL), e, msg);
	out:
		json_decref(doc);
		json_decref(set);
		return rc;
	}
	return usage_error("endpoint: unknown verb '%s' (set, rm)", argv[0]);
}

/* queues --watch: prints every NDJSON line as it comes (a table each with a
 * time line, or the raw line with --json) until the server closes. */
static int cmd_watch(const struct ctl *ctl)
{
	char *buf = NULL, *line = NULL;
	size_t len = 0, cap = 0, llen = 0, lcap = 0;
	bool in_body = false;
	int fd = ctl_connect(ctl), rc = EXIT_SERVER;

	if (fd < 0)
		return EXIT_SERVER;
	if (send_request(fd, "GET", "/v1/queues?watch=1", NULL)) {
		fprintf(stderr, "ringroutectl: %s: send: %s\n", ctl->socket, strerror(errno));
		goto out;
	}
	for (;;) {
		ssize_t n;
		if (cap - len < 4096) {
			char *nb = realloc(buf, cap ? cap * 2 : 16384);
			if (!nb)
				goto out;
			buf = nb;
			cap = cap ? cap * 2 : 16384;
		}
		n = recv(fd, buf + len, cap - len - 1, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (in_body) {
				fprintf(stderr, "ringroutectl: the server closed the stream\n");
			} else {
				buf[len] = '\0';
				fprintf(stderr, "ringroutectl: %s\n",
					n < 0 ? strerror(errno) : "connection closed");
			}
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
				fprintf(stderr, "ringroutectl: %s: malformed stream from the server: %s\n",
					ctl->socket, why);
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
				fprintf(stderr, "ringroutectl: %s: malformed stream from the server: "
					"chunk size %" PRIu64 " larger than %u bytes\n",
					ctl->socket, size, WATCH_MAX_CHUNK);
				goto out;
			}
			if (len - hdr < size + 2)
				break;
			if (memcmp(buf + hdr + size, "\r\n", 2)) {
				fprintf(stderr, "ringroutectl: %s: malformed stream from the server: "
					"chunk not followed by CRLF\n", ctl->socket);
				goto out;
			}
			if (llen + size + 1 > lcap) {
				char *nl = realloc(line, llen + size + 1);
				if (!nl)
					goto out;
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
	int n = 0, rc;

	if (!ctl.socket || !*ctl.socket)
		ctl.socket = "/run/ringroute.sock";
	if (!args)
		return EXIT_SERVER;
	/* Global options may come anywhere; everything else is the command. */
	for (int i = 1; i < argc; i++) {
		const char *val;
		int r;
		if (!strcmp(argv[i], "--json")) {
			ctl.json = true;
		} else if ((r = opt_value(argc, argv, &i, "--socket", &val)) != 0) {
			if (r < 0 || !*val) {
				free(args);
				return usage_error("--socket: missing PATH");
			}
			ctl.socket = val;
		} else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			printf("%s\n%s", usage_line, usage_text);
			free(args);
			return 0;
		} else {
			args[n++] = argv[i];
		}
	}
	if (n == 0) {
		rc = usage_error("missing command");
	} else if (!strcmp(args[0], "config")) {
		rc = cmd_config(&ctl, n - 1, args + 1);
	} else if (!strcmp(args[0], "backend")) {
		rc = cmd_backend(&ctl, n - 1, args + 1);
	} else if (!strcmp(args[0], "replica")) {
		rc = cmd_replica(&ctl, n - 1, args + 1);
	} else if (!strcmp(args[0], "endpoint")) {
		rc = cmd_endpoint(&ctl, n - 1, args + 1);
	} else if (!strcmp(args[0], "stats")) {
		rc = n != 1 ? usage_error("stats: takes no arguments")
			    : cmd_get_print(&ctl, "/v1/stats", print_stats);
	} else if (!strcmp(args[0], "queues")) {
		if (n == 1)
			rc = cmd_get_print(&ctl, "/v1/queues", print_queues);
		else if (n == 2 && !strcmp(args[1], "--watch"))
			rc = cmd_watch(&ctl);
		else
			rc = usage_error("queues: unknown argument '%s'", args[1]);
	} else {
		rc = usage_error("unknown command '%s'", args[0]);
	}
	free(args);
	return rc;
}
