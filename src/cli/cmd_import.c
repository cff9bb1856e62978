/*
 * cmd_import.c - tcast import PATH [--key KEY] [--policy P] [--expect GEN]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char usage[] =
	"tcast import PATH [--key KEY] [--policy cache|warm|pinned] "
	"[--expect GEN] [--device cuda:N] [--json]";

int cmd_import(int argc, char **argv)
{
	struct tc_opts o = { 0 };
	struct tc_result r;
	const char *path = NULL;
	char b1[32];
	tc_client *c;
	int rc;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--key") && i + 1 < argc) {
			o.key = argv[++i];
			o.field_mask |= TC_OPT_KEY;
		} else if (!strcmp(argv[i], "--policy") && i + 1 < argc) {
			o.policy = argv[++i];
			o.field_mask |= TC_OPT_POLICY;
		} else if (!strcmp(argv[i], "--device") && i + 1 < argc) {
			const char *d = argv[++i];

			if (!strncmp(d, "cuda:", 5))
				d += 5;
			else if (!strcmp(d, "cuda"))
				d = "0";
			o.device = atoi(d);
			o.field_mask |= TC_OPT_DEVICE;
		} else if (!strcmp(argv[i], "--expect") && i + 1 < argc) {
			o.expect_gen = strtoull(argv[++i], NULL, 10);
			o.field_mask |= TC_OPT_EXPECT;
		} else if (argv[i][0] == '-' || path) {
			return cli_usage(usage);
		} else {
			path = argv[i];
		}
	}
	if (!path)
		return cli_usage(usage);
	o.field_mask |= TC_OPT_PROGRESS;
	o.progress = cli_progress;
	c = cli_connect();
	if (!c)
		return EXIT_RUNTIME;
	rc = tc_import(c, path, &o, &r);
	if (rc < 0) {
		rc = cli_fail(rc, tc_client_errmsg(c));
		tc_client_close(c);
		return rc;
	}
	if (cli.json) {
		printf("{\"id\":\"%s\",\"bytes\":%llu,\"tensors\":%u,"
		       "\"seconds\":%.6f,\"deduplicated\":%s,"
		       "\"key_generation\":%llu}\n",
		       r.id, (unsigned long long)r.bytes, r.ntensors,
		       (double)r.nanoseconds / 1e9,
		       r.deduplicated ? "true" : "false",
		       (unsigned long long)r.key_generation);
	} else {
		puts(r.id);
		fprintf(stderr, "%u tensors, %s in %.3f s (%.2f GB/s)%s",
			r.ntensors, cli_bytes(r.bytes, b1, sizeof(b1)),
			(double)r.nanoseconds / 1e9,
			r.nanoseconds ?
				(double)r.bytes / (double)r.nanoseconds :
				0.0,
			r.deduplicated ? ", already held" : "");
		if (o.key)
			fprintf(stderr, "; key '%s' at generation %llu", o.key,
				(unsigned long long)r.key_generation);
		fputc('\n', stderr);
	}
	tc_client_close(c);
	return 0;
}
