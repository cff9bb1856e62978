/*
 * cli.c - helpers shared by the verbs.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "tcast/errors.h"

struct cli_global cli;

int cli_take_global(int argc, char **argv)
{
	int out = 1;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json")) {
			cli.json = true;
		} else if (!strcmp(argv[i], "--socket") && i + 1 < argc) {
			cli.socket = argv[++i];
		} else if (!strncmp(argv[i], "--socket=", 9)) {
			cli.socket = argv[i] + 9;
		} else {
			argv[out++] = argv[i];
		}
	}
	argv[out] = NULL;
	return out;
}

int cli_fail(int rc, const char *msg)
{
	fprintf(stderr, "error: %s: %s\n", tc_err_name(rc),
		msg && *msg ? msg : tc_strerror(rc));
	return EXIT_RUNTIME;
}

int cli_usage(const char *usage)
{
	fprintf(stderr, "usage: %s\n", usage);
	return EXIT_USAGE;
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

void cli_print_json(const char *json)
{
	json_t *j;

	if (cli.json) {
		puts(json);
		return;
	}
	j = json_loads(json, 0, NULL);
	if (!j) {
		puts(json);
		return;
	}
	json_dumpf(j, stdout, JSON_INDENT(2));
	putchar('\n');
	json_decref(j);
}

void cli_progress(uint64_t done, uint64_t total, void *arg)
{
	char a[32], b[32];
	int width = 30, fill;

	if (!isatty(STDERR_FILENO) || total == 0)
		return;
	fill = (int)((double)done / (double)total * width);
	fprintf(stderr, "\r[%.*s%*s] %3d%% %s / %s ", fill,
		"##############################", width - fill, "",
		(int)(100.0 * (double)done / (double)total),
		cli_bytes(done, a, sizeof(a)), cli_bytes(total, b, sizeof(b)));
	if (done >= total)
		fputc('\n', stderr);
	fflush(stderr);
}
