/*
 * cmd_verify.c - `tcast verify [--json] PATH...`.
 *
 * Argument parsing only; the check is tc_st_verify() in libtcast.
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "tcast/errors.h"
#include "tcast/st.h"

#define VERIFY_MSG_LEN	2048
#define VERIFY_JSON_LEN 65536

static void usage(FILE *f)
{
	fprintf(f,
		"usage: tcast verify [--json] PATH...\n"
		"\n"
		"Check safetensors files and model folders (index and shards,\n"
		"Hugging Face cache snapshots) without loading tensor data.\n"
		"\n"
		"  --json  one JSON object per path on stdout\n"
		"\n"
		"Exit status: 0 all valid, 1 any invalid, 2 usage error.\n");
}

int cmd_verify(int argc, char **argv)
{
	static char out[VERIFY_JSON_LEN];
	/* main() may already have taken --json into cli.json. */
	bool json = cli.json, opts = true;
	int i, first = 0, failed = 0, ret;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (opts && !strcmp(a, "--")) {
			opts = false;
		} else if (opts && !strcmp(a, "--json")) {
			json = true;
		} else if (opts && (!strcmp(a, "-h") || !strcmp(a, "--help"))) {
			usage(stdout);
			return 0;
		} else if (opts && a[0] == '-' && a[1]) {
			fprintf(stderr, "error: unknown option '%s'\n", a);
			usage(stderr);
			return EXIT_USAGE;
		} else if (!first) {
			first = i;
		}
	}
	if (!first) {
		fprintf(stderr, "error: no PATH given\n");
		usage(stderr);
		return EXIT_USAGE;
	}
	opts = true;
	for (i = 1; i < argc; i++) {
		const char *a = argv[i];

		/* Skip the options seen above; paths may follow "--". */
		if (opts && !strcmp(a, "--")) {
			opts = false;
			continue;
		}
		if (opts && a[0] == '-' && a[1])
			continue;
		if (json) {
			ret = tc_st_verify_json(a, out, sizeof(out));
			if (out[0])
				printf("%s\n", out);
			if (ret < 0) {
				char msg[VERIFY_MSG_LEN];

				tc_st_verify(a, msg, sizeof(msg));
				fprintf(stderr, "error: %s: %s\n",
					tc_err_name(ret), msg);
			}
		} else {
			ret = tc_st_verify(a, out, VERIFY_MSG_LEN);
			if (ret < 0)
				fprintf(stderr, "error: %s: %s\n",
					tc_err_name(ret), out);
			else
				printf("%s\n", out);
		}
		if (ret < 0)
			failed = EXIT_RUNTIME;
	}
	fflush(stdout);
	return failed;
}
