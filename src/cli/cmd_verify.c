/*
 * cmd_verify.c - `tcast verify [--json] PATH...`.
 *
 * Argument parsing only; the check is tc_st_verify() in libtcast.  Under
 * --json the answers of every PATH go out as one document.
 */
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "tcast/errors.h"
#include "tcast/st.h"

#define VERIFY_MSG_LEN	2048
#define VERIFY_JSON_LEN 65536

int cmd_verify(int argc, char **argv)
{
	static char out[VERIFY_JSON_LEN];
	const char **paths = calloc((size_t)argc, sizeof(*paths));
	json_t *results = json_array();
	int n, failed = 0, ret;

	n = paths ? cli_operands(argc, argv, 1, argc, paths) : -1;
	if (n < 0) {
		failed = paths ? EXIT_USAGE : cli_fail(-ENOMEM, NULL);
		goto out_free;
	}
	for (int i = 0; i < n; i++) {
		const char *a = paths[i];
		char msg[VERIFY_MSG_LEN];
		json_t *r;

		if (cli.json) {
			ret = tc_st_verify_json(a, out, sizeof(out));
			r = out[0] ? json_loads(out, 0, NULL) : NULL;
			if (!r) /* the answer did not fit: say so */
				r = json_pack("{s:s, s:b, s:s, s:i, s:s}",
					      "path", a, "ok", 0, "error",
					      tc_err_name(ret), "code", ret,
					      "message",
					      "the report exceeds the buffer");
			json_array_append_new(results, r);
			if (ret < 0) {
				tc_st_verify(a, msg, sizeof(msg));
				fprintf(stderr, "error: %s: %s\n",
					tc_err_name(ret), cli_esc_msg(msg));
			}
		} else {
			ret = tc_st_verify(a, out, VERIFY_MSG_LEN);
			if (ret < 0)
				fprintf(stderr, "error: %s: %s\n",
					tc_err_name(ret), cli_esc(out));
			else
				printf("%s\n", cli_esc(out));
		}
		if (ret < 0)
			failed = EXIT_RUNTIME;
	}
	if (cli.json)
		cli_put_json(json_pack("{s:b, s:O}", "valid", !failed,
				       "results", results));
	fflush(stdout);
out_free:
	json_decref(results);
	free(paths);
	return failed;
}
