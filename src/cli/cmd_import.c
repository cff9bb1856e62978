/*
 * cmd_import.c - tcast import PATH [--key KEY] [--policy P] [--expect GEN]
 *                [--device D]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int cmd_import(int argc, char **argv)
{
	/* Every policy the daemon knows; it refuses the disk-tier ones
	 * (durable, ha, cold) on a node without that tier, at run time. */
	static const char *const policies[] = { "cache",   "warm", "pinned",
						"durable", "ha",   "cold",
						NULL };
	/* By TC_PERSIST_* value. */
	static const char *const persist_names[] = { "memory", "durable",
						     "pending" };
	struct tc_opts o = { 0 };
	struct tc_result r;
	const char *path = NULL, *v;
	bool opts = true;
	char b1[32], b2[48], degraded[512];
	tc_client *c;
	uint64_t gen;
	int rc, m, persist;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (opts && !strcmp(a, "--")) {
			opts = false;
		} else if (opts && (m = cli_opt(argc, argv, &i, "--key", &v))) {
			if (m < 0 || cli_parse_nonempty("--key", v))
				return EXIT_USAGE;
			o.key = v;
			o.field_mask |= TC_OPT_KEY;
		} else if (opts &&
			   (m = cli_opt(argc, argv, &i, "--policy", &v))) {
			if (m < 0 || cli_parse_choice("--policy", v, policies))
				return EXIT_USAGE;
			o.policy = v;
			o.field_mask |= TC_OPT_POLICY;
		} else if (opts &&
			   (m = cli_opt(argc, argv, &i, "--device", &v))) {
			if (m < 0 || cli_parse_device("--device", v, &o.device))
				return EXIT_USAGE;
			o.field_mask |= TC_OPT_DEVICE;
		} else if (opts &&
			   (m = cli_opt(argc, argv, &i, "--expect", &v))) {
			if (m < 0 ||
			    cli_parse_uint("--expect", v, 0, UINT64_MAX, &gen))
				return EXIT_USAGE;
			o.expect_gen = gen;
			o.field_mask |= TC_OPT_EXPECT;
		} else if (opts && a[0] == '-' && a[1]) {
			return cli_usage_error("unknown option '%s'",
					       cli_esc(a));
		} else if (path) {
			return cli_usage_error("one PATH only ('%s' and '%s')",
					       cli_esc(path), cli_esc(a));
		} else {
			path = a;
		}
	}
	if (!path)
		return cli_usage_error("no PATH given");
	if ((o.field_mask & TC_OPT_EXPECT) && !o.key)
		return cli_usage_error("--expect needs --key");
	o.field_mask |= TC_OPT_PROGRESS;
	o.progress = cli_progress;
	c = cli_connect();
	if (!c)
		return EXIT_RUNTIME;
	cli_progress_begin();
	rc = tc_import(c, path, &o, &r);
	/* The bar's line ends whatever happened, before anything else. */
	cli_progress_end();
	if (rc < 0) {
		rc = cli_fail(rc, tc_client_errmsg(c));
		tc_client_close(c);
		return rc;
	}
	persist = tc_last_persistence(c, degraded, sizeof(degraded));
	if (cli.json) {
		cli_put_json(json_pack(
			"{s:s, s:I, s:I, s:f, s:b, s:I, s:s, s:s}", "id", r.id,
			"bytes", (json_int_t)r.bytes, "tensors",
			(json_int_t)r.ntensors, "seconds",
			(double)r.nanoseconds / 1e9, "deduplicated",
			r.deduplicated, "key_generation",
			(json_int_t)r.key_generation, "persistence",
			persist_names[persist >= 0 && persist <= 2 ? persist :
								     0],
			"degraded", degraded));
	} else {
		puts(cli_esc(r.id));
		fflush(stdout);
		fprintf(stderr, "%u tensors, %s in %.3f s%s%s", r.ntensors,
			cli_bytes(r.bytes, b1, sizeof(b1)),
			(double)r.nanoseconds / 1e9,
			cli_rate(r.bytes, r.nanoseconds, b2, sizeof(b2)),
			r.deduplicated ? ", already held" : "");
		if (o.key)
			fprintf(stderr, "; key '%s' at generation %llu",
				cli_esc(o.key),
				(unsigned long long)r.key_generation);
		if (persist == TC_PERSIST_DURABLE)
			fprintf(stderr, "; durable on the shared disk");
		else if (persist == TC_PERSIST_PENDING)
			fprintf(stderr, "; being written to the shared disk");
		if (degraded[0])
			fprintf(stderr, " (degraded: %s)", cli_esc(degraded));
		fputc('\n', stderr);
	}
	tc_client_close(c);
	return 0;
}
