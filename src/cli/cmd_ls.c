/*
 * cmd_ls.c - tcast ls, tcast inspect, tcast rm, tcast export, tcast status.
 *
 * The read verbs print what the daemon returns: JSON with --json, a table
 * for people otherwise.
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

/* Run one JSON-returning call and hand the document to `show`. */
static int with_json(int (*get)(tc_client *, const char *, char **),
		     const char *arg, void (*show)(json_t *))
{
	tc_client *c = cli_connect();
	char *doc = NULL;
	json_t *j;
	int rc;

	if (!c)
		return EXIT_RUNTIME;
	rc = get(c, arg, &doc);
	if (rc < 0) {
		rc = cli_fail(rc, tc_client_errmsg(c));
		tc_client_close(c);
		return rc;
	}
	j = cli.json || !show ? NULL : json_loads(doc, 0, NULL);
	if (j)
		show(j);
	else
		cli_print_json(doc);
	json_decref(j);
	tc_free(doc);
	tc_client_close(c);
	return 0;
}

static int get_list(tc_client *c, const char *arg, char **out)
{
	return tc_list_json(c, out);
}

static int get_status(tc_client *c, const char *arg, char **out)
{
	return tc_status_json(c, out);
}

static void show_list(json_t *j)
{
	json_t *a, *arts = json_object_get(j, "artifacts");
	size_t i;
	char b1[32], b2[32], b3[32];

	printf("%-36s %10s %8s %6s %-7s %s\n", "ID", "SIZE", "TENSORS",
	       "LEASES", "POLICY", "KEYS");
	json_array_foreach(arts, i, a)
	{
		json_t *keys = json_object_get(a, "keys"), *k;
		size_t n;

		printf("%-36s %10s %8lld %6lld %-7s ",
		       json_string_value(json_object_get(a, "id")),
		       cli_bytes((uint64_t)json_integer_value(
					 json_object_get(a, "bytes")),
				 b1, sizeof(b1)),
		       json_integer_value(json_object_get(a, "tensors")),
		       json_integer_value(json_object_get(a, "leases")),
		       json_string_value(json_object_get(a, "policy")));
		json_array_foreach(keys, n, k)
			printf("%s%s", n ? "," : "", json_string_value(k));
		putchar('\n');
	}
	printf("host memory: %s used of %s\n",
	       cli_bytes((uint64_t)json_integer_value(
				 json_object_get(j, "used_bytes")),
			 b2, sizeof(b2)),
	       cli_bytes((uint64_t)json_integer_value(
				 json_object_get(j, "budget_bytes")),
			 b3, sizeof(b3)));
}

int cmd_ls(int argc, char **argv)
{
	if (argc != 1)
		return cli_usage("tcast ls [--json]");
	return with_json(get_list, NULL, show_list);
}

static void show_replicas(json_t *reps)
{
	json_t *r;
	size_t i;
	char b[32];

	json_array_foreach(reps, i, r)
	{
		const char *tier =
			json_string_value(json_object_get(r, "tier"));

		if (tier && !strcmp(tier, "gpu"))
			printf("%s GPU %lld %s, %s, %s, leases %lld\n",
			       i ? "         " : "replicas:",
			       json_integer_value(
				       json_object_get(r, "ordinal")),
			       json_string_value(json_object_get(r, "device")),
			       cli_bytes((uint64_t)json_integer_value(
						 json_object_get(r, "bytes")),
					 b, sizeof(b)),
			       json_string_value(json_object_get(r, "state")),
			       json_integer_value(
				       json_object_get(r, "leases")));
		else
			printf("%s host memory (sealed memfd), %s\n",
			       i ? "         " : "replicas:",
			       cli_bytes((uint64_t)json_integer_value(
						 json_object_get(r, "bytes")),
					 b, sizeof(b)));
	}
}

static void show_inspect(json_t *j)
{
	json_t *ts = json_object_get(j, "tensor_table"), *t, *meta;
	const char *k;
	json_t *v;
	size_t i;
	char b[32];

	printf("id:       %s\n", json_string_value(json_object_get(j, "id")));
	printf("digest:   xxh3-128 %s (chunks of %lld bytes)\n",
	       json_string_value(json_object_get(j, "digest")),
	       json_integer_value(json_object_get(j, "chunk_bytes")));
	printf("size:     %s in %lld tensors\n",
	       cli_bytes((uint64_t)json_integer_value(
				 json_object_get(j, "bytes")),
			 b, sizeof(b)),
	       json_integer_value(json_object_get(j, "tensors")));
	printf("source:   %s\n",
	       json_string_value(json_object_get(j, "source")));
	printf("policy:   %s, leases %lld\n",
	       json_string_value(json_object_get(j, "policy")),
	       json_integer_value(json_object_get(j, "leases")));
	show_replicas(json_object_get(j, "replicas"));
	meta = json_object_get(j, "metadata");
	json_object_foreach(meta, k, v)
		printf("meta:     %s = %s\n", k, json_string_value(v));
	printf("%-48s %-8s %-20s %12s %10s\n", "TENSOR", "DTYPE", "SHAPE",
	       "OFFSET", "BYTES");
	json_array_foreach(ts, i, t)
	{
		json_t *shape = json_object_get(t, "shape"), *d;
		char sh[64] = "[";
		size_t n;

		json_array_foreach(shape, n, d)
		{
			size_t l = strlen(sh);

			snprintf(sh + l, sizeof(sh) - l, "%s%lld", n ? "," : "",
				 json_integer_value(d));
		}
		strncat(sh, "]", sizeof(sh) - strlen(sh) - 1);
		printf("%-48s %-8s %-20s %12lld %10lld\n",
		       json_string_value(json_object_get(t, "name")),
		       json_string_value(json_object_get(t, "dtype")), sh,
		       json_integer_value(json_object_get(t, "offset")),
		       json_integer_value(json_object_get(t, "nbytes")));
	}
}

int cmd_inspect(int argc, char **argv)
{
	if (argc != 2)
		return cli_usage("tcast inspect KEY|ID [--json]");
	return with_json(tc_inspect_json, argv[1], show_inspect);
}

/* The GPU tier's part of STATUS: its state, then one line per GPU. */
static void show_gpus(json_t *g)
{
	const char *state = json_string_value(json_object_get(g, "state"));
	json_t *d;
	size_t i;
	char b1[32], b2[32];

	if (!state)
		return;
	if (strcmp(state, "ready")) {
		printf("GPUs: %s%s%s\n", state,
		       json_object_get(g, "error") ? ": " : "",
		       json_object_get(g, "error") ?
			       json_string_value(json_object_get(g, "error")) :
			       "");
		return;
	}
	json_array_foreach(json_object_get(g, "devices"), i, d)
	{
		printf("GPU %lld %s (%s): %s used of %s, %lld replicas, %lld "
		       "leases, %lld evictions\n",
		       json_integer_value(json_object_get(d, "ordinal")),
		       json_string_value(json_object_get(d, "uuid")),
		       json_string_value(json_object_get(d, "name")),
		       cli_bytes((uint64_t)json_integer_value(
					 json_object_get(d, "used_bytes")),
				 b1, sizeof(b1)),
		       cli_bytes((uint64_t)json_integer_value(
					 json_object_get(d, "budget_bytes")),
				 b2, sizeof(b2)),
		       json_integer_value(json_object_get(d, "replicas")),
		       json_integer_value(json_object_get(d, "leases")),
		       json_integer_value(json_object_get(d, "evictions")));
	}
}

static void show_status(json_t *j)
{
	char b1[32], b2[32];

	printf("tcast daemon %s running, pid %lld, socket %s\n",
	       json_string_value(json_object_get(j, "version")),
	       json_integer_value(json_object_get(j, "pid")),
	       json_string_value(json_object_get(j, "socket")));
	printf("uptime %.1f s, %lld clients, %lld artifacts, %lld keys\n",
	       (double)json_integer_value(json_object_get(j, "uptime_ms")) /
		       1000,
	       json_integer_value(json_object_get(j, "clients")),
	       json_integer_value(json_object_get(j, "artifacts")),
	       json_integer_value(json_object_get(j, "keys")));
	printf("host memory %s used of %s, %lld evictions\n",
	       cli_bytes((uint64_t)json_integer_value(
				 json_object_get(j, "host_used_bytes")),
			 b1, sizeof(b1)),
	       cli_bytes((uint64_t)json_integer_value(
				 json_object_get(j, "host_budget_bytes")),
			 b2, sizeof(b2)),
	       json_integer_value(json_object_get(j, "evictions")));
	show_gpus(json_object_get(j, "gpu"));
}

int cmd_status(int argc, char **argv)
{
	return with_json(get_status, NULL, show_status);
}

int cmd_rm(int argc, char **argv)
{
	tc_client *c;
	int rc;

	if (argc < 2)
		return cli_usage("tcast rm KEY|ID...");
	c = cli_connect();
	if (!c)
		return EXIT_RUNTIME;
	for (int i = 1; i < argc; i++) {
		rc = tc_rm(c, argv[i]);
		if (rc < 0) {
			rc = cli_fail(rc, tc_client_errmsg(c));
			tc_client_close(c);
			return rc;
		}
	}
	tc_client_close(c);
	return 0;
}

int cmd_export(int argc, char **argv)
{
	tc_client *c;
	int rc;

	if (argc != 3)
		return cli_usage("tcast export KEY|ID OUT.safetensors");
	c = cli_connect();
	if (!c)
		return EXIT_RUNTIME;
	rc = tc_export(c, argv[1], argv[2]);
	if (rc < 0)
		rc = cli_fail(rc, tc_client_errmsg(c));
	tc_client_close(c);
	return rc;
}
