/*
 * cmd_keys.c - tcast keys [KEY] | tcast keys set KEY REF [--expect GEN]
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

/* Unix milliseconds as ISO 8601 UTC: "2026-12-02T07:10:00.123Z". */
static const char *iso_utc(long long ms, char *buf, size_t len)
{
	time_t s = (time_t)(ms / 1000);
	struct tm tm;

	if (ms < 0 || !gmtime_r(&s, &tm)) {
		snprintf(buf, len, "?");
		return buf;
	}
	snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
		 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		 tm.tm_min, tm.tm_sec, (int)(ms % 1000));
	return buf;
}

static int keys_set(int argc, char **argv)
{
	const char *ops[3], *v, *key = NULL, *ref = NULL;
	uint64_t expect = 0, gen;
	int has_expect = 0, rc, m, n = 0;
	tc_client *c;

	for (int i = 2; i < argc; i++) {
		if ((m = cli_opt(argc, argv, &i, "--expect", &v))) {
			if (m < 0 || cli_parse_uint("--expect", v, 0,
						    UINT64_MAX, &expect))
				return EXIT_USAGE;
			has_expect = 1;
		} else if (argv[i][0] == '-' && argv[i][1]) {
			return cli_usage_error("unknown option '%s'",
					       cli_esc(argv[i]));
		} else if (n == 2) {
			return cli_usage_error("unexpected argument '%s'",
					       cli_esc(argv[i]));
		} else {
			ops[n++] = argv[i];
		}
	}
	if (n != 2)
		return cli_usage_error("keys set needs KEY and REF");
	key = ops[0];
	ref = ops[1];
	if (cli_parse_nonempty("KEY", key) || cli_parse_nonempty("REF", ref))
		return EXIT_USAGE;
	c = cli_connect();
	if (!c)
		return EXIT_RUNTIME;
	rc = tc_key_set(c, key, ref, has_expect, expect, &gen);
	if (rc < 0) {
		rc = cli_fail(rc, tc_client_errmsg(c));
	} else if (cli.json) {
		cli_put_json(json_pack("{s:s, s:s, s:I}", "key", key, "ref",
				       ref, "generation", (json_int_t)gen));
	} else {
		printf("%s -> %s (generation %llu)\n", cli_esc(key),
		       cli_esc(ref), (unsigned long long)gen);
	}
	tc_client_close(c);
	return rc;
}

static const char *str(json_t *j, const char *name)
{
	return cli_esc(json_string_value(json_object_get(j, name)));
}

static void show_keys(json_t *j)
{
	json_t *k, *keys = json_object_get(j, "keys"), *h;
	char when[40];
	size_t i;

	if (keys) {
		printf("%-40s %-36s %5s %s\n", "KEY", "ID", "GEN", "HELD");
		json_array_foreach(keys, i, k) printf(
			"%-40s %-36s %5lld %s\n", str(k, "key"), str(k, "id"),
			json_integer_value(json_object_get(k, "generation")),
			json_is_true(json_object_get(k, "held")) ? "yes" :
								   "no");
		return;
	}
	h = json_object_get(j, "history");
	printf("%s -> %s (generation %lld)\n", str(j, "key"), str(j, "id"),
	       json_integer_value(json_object_get(j, "generation")));
	json_array_foreach(h, i, k) printf(
		"  gen %-4lld %s  %s\n",
		json_integer_value(json_object_get(k, "generation")),
		str(k, "id"),
		iso_utc(json_integer_value(json_object_get(k, "unix_ms")), when,
			sizeof(when)));
}

/* Under --json each history entry keeps its raw "unix_ms" and gains
 * "time_utc", the same instant in ISO 8601. */
static void add_iso_times(json_t *j)
{
	json_t *k;
	char when[40];
	size_t i;

	json_array_foreach(json_object_get(j, "history"), i, k)
	{
		json_t *ms = json_object_get(k, "unix_ms");

		if (json_is_integer(ms))
			json_object_set_new(
				k, "time_utc",
				json_string(iso_utc(json_integer_value(ms),
						    when, sizeof(when))));
	}
}

int cmd_keys(int argc, char **argv)
{
	const char *key = NULL;
	char *doc = NULL;
	tc_client *c;
	json_t *j;
	int rc;

	if (argc >= 2 && !strcmp(argv[1], "set"))
		return keys_set(argc, argv);
	if (cli_operands(argc, argv, 0, 1, &key) < 0)
		return EXIT_USAGE;
	c = cli_connect();
	if (!c)
		return EXIT_RUNTIME;
	rc = tc_keys_json(c, key, &doc);
	if (rc < 0) {
		rc = cli_fail(rc, tc_client_errmsg(c));
		tc_client_close(c);
		return rc;
	}
	j = json_loads(doc, 0, NULL);
	if (!j) {
		cli_print_json(doc);
	} else if (cli.json) {
		add_iso_times(j);
		cli_put_json(json_incref(j));
	} else {
		show_keys(j);
	}
	json_decref(j);
	tc_free(doc);
	tc_client_close(c);
	return 0;
}
