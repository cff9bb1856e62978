/*
 * cmd_keys.c - tcast keys [KEY] | tcast keys set KEY ID [--expect GEN]
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char usage[] = "tcast keys [KEY] [--json]\n"
			    "       tcast keys set KEY ID [--expect GEN]";

static int keys_set(int argc, char **argv)
{
	uint64_t expect = 0, gen;
	int has_expect = 0, rc;
	tc_client *c;

	if (argc == 6 && !strcmp(argv[4], "--expect")) {
		has_expect = 1;
		expect = strtoull(argv[5], NULL, 10);
	} else if (argc != 4) {
		return cli_usage(usage);
	}
	c = cli_connect();
	if (!c)
		return EXIT_RUNTIME;
	rc = tc_key_set(c, argv[2], argv[3], has_expect, expect, &gen);
	if (rc < 0) {
		rc = cli_fail(rc, tc_client_errmsg(c));
	} else if (cli.json) {
		printf("{\"key\":\"%s\",\"generation\":%llu}\n", argv[2],
		       (unsigned long long)gen);
	} else {
		printf("%s -> %s (generation %llu)\n", argv[2], argv[3],
		       (unsigned long long)gen);
	}
	tc_client_close(c);
	return rc;
}

int cmd_keys(int argc, char **argv)
{
	char *doc = NULL;
	tc_client *c;
	json_t *j, *k, *keys;
	size_t i;
	int rc;

	if (argc >= 2 && !strcmp(argv[1], "set"))
		return keys_set(argc, argv);
	if (argc > 2)
		return cli_usage(usage);
	c = cli_connect();
	if (!c)
		return EXIT_RUNTIME;
	rc = tc_keys_json(c, argc == 2 ? argv[1] : NULL, &doc);
	if (rc < 0) {
		rc = cli_fail(rc, tc_client_errmsg(c));
		tc_client_close(c);
		return rc;
	}
	j = json_loads(doc, 0, NULL);
	if (cli.json || !j) {
		puts(doc);
	} else if ((keys = json_object_get(j, "keys"))) {
		printf("%-40s %-36s %5s %s\n", "KEY", "ID", "GEN", "HELD");
		json_array_foreach(keys, i, k) printf(
			"%-40s %-36s %5lld %s\n",
			json_string_value(json_object_get(k, "key")),
			json_string_value(json_object_get(k, "id")),
			json_integer_value(json_object_get(k, "generation")),
			json_is_true(json_object_get(k, "held")) ? "yes" :
								   "no");
	} else {
		json_t *h = json_object_get(j, "history");

		printf("%s -> %s (generation %lld)\n",
		       json_string_value(json_object_get(j, "key")),
		       json_string_value(json_object_get(j, "id")),
		       json_integer_value(json_object_get(j, "generation")));
		json_array_foreach(h, i, k) printf(
			"  gen %-4lld %s  unix_ms %lld\n",
			json_integer_value(json_object_get(k, "generation")),
			json_string_value(json_object_get(k, "id")),
			json_integer_value(json_object_get(k, "unix_ms")));
	}
	json_decref(j);
	tc_free(doc);
	tc_client_close(c);
	return 0;
}
