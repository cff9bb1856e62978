/*
 * cli.c - helpers shared by the verbs: global options, errors and usage,
 * strict option values, terminal-safe text, sizes, rates and progress.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "store/config.h"
#include "tcast/errors.h"

struct cli_global cli;

int cli_take_global(int argc, char **argv)
{
	int out = 1, i;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "--")) /* operands from here on */
			break;
		if (!strcmp(a, "--json")) {
			cli.json = true;
		} else if (!strcmp(a, "--socket") ||
			   !strncmp(a, "--socket=", 9)) {
			const char *v = a[8] == '='  ? a + 9 :
					i + 1 < argc ? argv[++i] :
						       NULL;

			if (!v || !*v) {
				cli_usage_error("--socket needs a PATH");
				return -1;
			}
			cli.socket = v;
		} else {
			argv[out++] = argv[i];
		}
	}
	for (; i < argc; i++)
		argv[out++] = argv[i];
	argv[out] = NULL;
	return out;
}

/* The error document, with what a half-done verb had done (cli.partial). */
static void put_error_json(int rc, const char *msg, bool usage)
{
	json_t *j = cli.partial ? cli.partial : json_object();

	cli.partial = NULL;
	json_object_set_new(j, "error",
			    json_pack("{s:s, s:s, s:i, s:b}", "code",
				      tc_err_name(rc), "message", msg, "errno",
				      rc, "usage", usage));
	cli_put_json(j);
}

int cli_fail(int rc, const char *msg)
{
	if (!msg || !*msg)
		msg = tc_strerror(rc);
	fprintf(stderr, "error: %s: %s\n", tc_err_name(rc), cli_esc_msg(msg));
	if (cli.json)
		put_error_json(rc, msg, false);
	return EXIT_RUNTIME;
}

void cli_print_usage(const struct cli_verb *v, FILE *f)
{
	if (v && v->usage)
		fprintf(f, "usage: %s\n", v->usage);
	else
		fprintf(f, "usage: tcast [--socket PATH] [--json] VERB "
			   "[ARGS]; 'tcast help' lists the verbs\n");
}

int cli_usage_error(const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "error: %s: %s\n", tc_err_name(TC_EINVAL), msg);
	if (cli.verb && cli.verb->usage) {
		/* The synopsis only; the options are one --help away. */
		const char *end = strstr(cli.verb->usage, "\n\n");

		fprintf(stderr, "usage: %.*s\n'tcast help %s' for more.\n",
			end ? (int)(end - cli.verb->usage) :
			      (int)strlen(cli.verb->usage),
			cli.verb->usage, cli.verb->name);
	} else {
		cli_print_usage(cli.verb, stderr);
	}
	if (cli.json)
		put_error_json(TC_EINVAL, msg, true);
	return EXIT_USAGE;
}

/* ------------------------------------------------------ option values */

int cli_opt(int argc, char **argv, int *i, const char *name, const char **val)
{
	const char *a = argv[*i];
	size_t n = strlen(name);

	if (strncmp(a, name, n))
		return 0;
	if (a[n] == '=') {
		*val = a + n + 1;
		return 1;
	}
	if (a[n])
		return 0;
	if (*i + 1 >= argc) {
		cli_usage_error("%s needs a value", name);
		return -1;
	}
	*val = argv[++*i];
	return 1;
}

int cli_operands(int argc, char **argv, int min, int max, const char **ops)
{
	bool opts = true;
	int n = 0;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (opts && !strcmp(a, "--")) {
			opts = false;
			continue;
		}
		if (opts && a[0] == '-' && a[1]) {
			cli_usage_error("unknown option '%s'", cli_esc(a));
			return -1;
		}
		if (n == max) {
			cli_usage_error("unexpected argument '%s'", cli_esc(a));
			return -1;
		}
		ops[n++] = a;
	}
	if (n < min) {
		cli_usage_error("missing argument");
		return -1;
	}
	return n;
}

int cli_parse_uint(const char *opt, const char *val, uint64_t lo, uint64_t hi,
		   uint64_t *out)
{
	unsigned long long v;
	char *end;

	/* strtoull alone takes "-1", " 7", "0x10" and wraps: digits only. */
	if (!*val || strspn(val, "0123456789") != strlen(val))
		goto bad;
	errno = 0;
	v = strtoull(val, &end, 10);
	if (errno || *end || v < lo || v > hi)
		goto bad;
	*out = v;
	return 0;
bad:
	return cli_usage_error("%s: '%s' is not a whole number in %llu..%llu",
			       opt, cli_esc(val), (unsigned long long)lo,
			       (unsigned long long)hi);
}

int cli_parse_size(const char *opt, const char *val, uint64_t *out)
{
	/* tc__parse_size is strtod underneath: refuse what strtod would
	 * take that is no size ("-1", " 5", "inf", "0x10", "1e3"). */
	if (!(*val >= '0' && *val <= '9') || strpbrk(val, "xXeE-+ ") != NULL ||
	    tc__parse_size(val, out) < 0 || *out == 0)
		return cli_usage_error(
			"%s: '%s' is not a size (e.g. 8GiB, 512MiB, 1.5G)", opt,
			cli_esc(val));
	return 0;
}

int cli_parse_device(const char *opt, const char *val, int32_t *out)
{
	const char *n = val;
	uint64_t v;

	if (!strcmp(val, "cuda")) {
		*out = 0;
		return 0;
	}
	if (!strncmp(val, "cuda:", 5))
		n = val + 5;
	if (!*n || strspn(n, "0123456789") != strlen(n) || strlen(n) > 4 ||
	    (v = strtoull(n, NULL, 10)) > 1023)
		return cli_usage_error("%s: '%s' is not a device (cuda, cuda:N "
				       "or N, N in 0..1023)",
				       opt, cli_esc(val));
	*out = (int32_t)v;
	return 0;
}

int cli_parse_choice(const char *opt, const char *val,
		     const char *const *choices)
{
	char list[256] = "";
	size_t used = 0;

	for (const char *const *c = choices; *c; c++) {
		if (!strcmp(val, *c))
			return 0;
		if (used < sizeof(list))
			used += (size_t)snprintf(list + used,
						 sizeof(list) - used, "%s%s",
						 c == choices ? "" : ", ", *c);
	}
	return cli_usage_error("%s: '%s' is not one of %s", opt, cli_esc(val),
			       list);
}

int cli_parse_nonempty(const char *opt, const char *val)
{
	if (!*val)
		return cli_usage_error("%s: the value is empty", opt);
	return 0;
}

/* -------------------------------------------------------------- output */

/* True for the code points that move or hide text on a terminal: C1
 * controls and the bidi embeddings, overrides, isolates and marks. */
static bool hostile_cp(uint32_t cp)
{
	return (cp >= 0x80 && cp <= 0x9f) || (cp >= 0x202a && cp <= 0x202e) ||
	       (cp >= 0x2066 && cp <= 0x2069) || cp == 0x200e || cp == 0x200f ||
	       cp == 0x061c;
}

/* Length of the valid UTF-8 sequence at p (2..4) and its code point, or 0
 * when it is not one (stray, overlong, surrogate, beyond U+10FFFF). */
static int utf8_seq(const unsigned char *p, uint32_t *cp)
{
	static const uint32_t min[5] = { 0, 0, 0x80, 0x800, 0x10000 };
	int len;

	if ((p[0] & 0xe0) == 0xc0) {
		len = 2;
		*cp = p[0] & 0x1f;
	} else if ((p[0] & 0xf0) == 0xe0) {
		len = 3;
		*cp = p[0] & 0x0f;
	} else if ((p[0] & 0xf8) == 0xf0) {
		len = 4;
		*cp = p[0] & 0x07;
	} else {
		return 0;
	}
	for (int k = 1; k < len; k++) {
		if ((p[k] & 0xc0) != 0x80) /* also stops at the NUL */
			return 0;
		*cp = (*cp << 6) | (p[k] & 0x3f);
	}
	if (*cp < min[len] || *cp > 0x10ffff ||
	    (*cp >= 0xd800 && *cp <= 0xdfff))
		return 0;
	return len;
}

/* keep_bs: messages (from the daemon or libtcast) quote names already
 * escaped, so their backslashes are the escapes' own and are not doubled;
 * control and hostile characters are still neutralised, whoever made the
 * message. */
static const char *esc(const char *s, bool keep_bs)
{
	static char *ring[16];
	static unsigned next;
	const unsigned char *p = (const unsigned char *)s;
	char *out, *o;

	if (!s)
		return "";
	/* Worst case 4 output bytes per input byte ("\x1b"). */
	out = malloc(strlen(s) * 4 + 1);
	if (!out)
		return "(out of memory)";
	free(ring[next % 16]);
	ring[next++ % 16] = out;
	for (o = out; *p;) {
		uint32_t cp;
		int len;

		if (*p == '\\') {
			*o++ = '\\';
			if (!keep_bs)
				*o++ = '\\';
			p++;
		} else if (*p < 0x20 || *p == 0x7f) {
			o += sprintf(o, "\\x%02x", *p++);
		} else if (*p < 0x80) {
			*o++ = (char)*p++;
		} else if (!(len = utf8_seq(p, &cp))) {
			o += sprintf(o, "\\x%02x", *p++);
		} else if (hostile_cp(cp)) {
			o += sprintf(o, "\\u%04x", (unsigned)cp);
			p += len;
		} else {
			memcpy(o, p, (size_t)len);
			o += len;
			p += len;
		}
	}
	*o = '\0';
	return out;
}

const char *cli_esc(const char *s)
{
	return esc(s, false);
}

const char *cli_esc_msg(const char *s)
{
	return esc(s, true);
}

tc_client *cli_connect(void)
{
	char err[1024];
	tc_client *c;
	int rc = tc_client_connect(cli.socket, &c, err, sizeof(err));

	if (rc < 0) {
		cli_fail(rc, err);
		return NULL;
	}
	return c;
}

const char *cli_bytes(uint64_t n, char *buf, size_t len)
{
	static const char *const units[] = { "B",   "KiB", "MiB",
					     "GiB", "TiB", "PiB" };
	double v = (double)n;
	int u = 0;

	while (v >= 1024 && u < 5) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%llu B", (unsigned long long)n);
	else
		snprintf(buf, len, "%.1f %s", v, units[u]);
	return buf;
}

const char *cli_rate(uint64_t bytes, uint64_t ns, char *buf, size_t len)
{
	double gbs;

	/* Under a MiB or a millisecond the rate measures the round trip,
	 * not the path: say nothing rather than "(0.00 GB/s)". */
	if (bytes < ((uint64_t)1 << 20) || ns < 1000000) {
		snprintf(buf, len, "%s", "");
		return buf;
	}
	gbs = (double)bytes / (double)ns;
	if (gbs >= 1.0)
		snprintf(buf, len, " (%.2f GB/s)", gbs);
	else
		snprintf(buf, len, " (%.1f MB/s)", gbs * 1000.0);
	return buf;
}

void cli_put_json(json_t *j)
{
	char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;

	puts(s ? s :
		 "{\"error\":{\"code\":\"ENOMEM\",\"message\":\"out of "
		 "memory\"}}");
	fflush(stdout);
	free(s);
	json_decref(j);
}

void cli_print_json(const char *json)
{
	json_t *j;

	if (cli.json) {
		puts(json);
		return;
	}
	j = json_loads(json, 0, NULL);
	if (!j) {
		puts(cli_esc(json));
		return;
	}
	/* JSON escapes control characters; ensure_ascii escapes the bidi
	 * overrides too, so a pretty document is safe on a terminal. */
	json_dumpf(j, stdout, JSON_INDENT(2) | JSON_ENSURE_ASCII);
	putchar('\n');
	json_decref(j);
}

/* ------------------------------------------------------------ progress */

static volatile sig_atomic_t bar_open;

/* The user interrupted a bar: end its line, then die of the signal. */
static void on_interrupt(int sig)
{
	if (bar_open) {
		ssize_t w = write(STDERR_FILENO, "\n", 1);

		(void)w;
		bar_open = 0;
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

void cli_progress_begin(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_interrupt;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
}

void cli_progress_end(void)
{
	if (bar_open) {
		fputc('\n', stderr);
		fflush(stderr);
		bar_open = 0;
	}
	signal(SIGINT, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGHUP, SIG_DFL);
}

void cli_progress(uint64_t done, uint64_t total, void *arg)
{
	char a[32], b[32];
	int width = 30, fill;

	(void)arg;
	if (!isatty(STDERR_FILENO) || total == 0)
		return;
	if (done > total)
		done = total;
	fill = (int)((double)done / (double)total * width);
	/* Open before the first byte goes out: a signal that lands between
	 * the write and the flag must still end the line. */
	bar_open = 1;
	fprintf(stderr, "\r[%.*s%*s] %3d%% %s / %s ", fill,
		"##############################", width - fill, "",
		(int)(100.0 * (double)done / (double)total),
		cli_bytes(done, a, sizeof(a)), cli_bytes(total, b, sizeof(b)));
	if (done >= total) {
		fputc('\n', stderr);
		bar_open = 0;
	}
	fflush(stderr);
}

char *cli_log_tail(const char *path, int lines)
{
	char *buf = NULL, *p, *out, chunk[65536];
	size_t len = 0, k;
	FILE *f = fopen(path, "r"), *m;
	int n = 0;

	if (!f)
		return NULL;
	m = open_memstream(&buf, &len);
	if (!m) {
		fclose(f);
		return NULL;
	}
	while ((k = fread(chunk, 1, sizeof(chunk), f)) > 0)
		fwrite(chunk, 1, k, m);
	fclose(m);
	fclose(f);
	for (p = buf + len; p > buf && lines > 0; p--)
		if (p[-1] == '\n' && p != buf + len && ++n >= lines)
			break;
	if (lines == 0)
		p = buf + len;
	out = strdup(p);
	free(buf);
	return out;
}

int cli_spawn_service(int (*run)(void *arg, int ready_fd), void *arg,
		      pid_t *pid_out)
{
	int pfd[2], status;
	struct pollfd p;
	pid_t pid;
	char byte;

	if (pipe2(pfd, O_CLOEXEC) < 0)
		return -errno;
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		int e = -errno;

		close(pfd[0]);
		close(pfd[1]);
		return e;
	}
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);

		close(pfd[0]);
		setsid();
		dup2(null, STDIN_FILENO);
		dup2(null, STDOUT_FILENO);
		dup2(null, STDERR_FILENO);
		close(null);
		_exit(run(arg, pfd[1]));
	}
	close(pfd[1]);
	p.fd = pfd[0];
	p.events = POLLIN;
	if (poll(&p, 1, 60000) == 1 && read(pfd[0], &byte, 1) == 1) {
		close(pfd[0]);
		*pid_out = pid;
		return 0;
	}
	close(pfd[0]);
	if (waitpid(pid, &status, WNOHANG) == 0) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
	}
	return TC_ENODAEMON;
}
