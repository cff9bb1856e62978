/*
 * cmd_ls.c - tcast ls, tcast inspect, tcast rm, tcast export, tcast status.
 *
 * The read verbs print what the daemon returns: JSON with --json, a table
 * for people otherwise.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "client/client_internal.h"
#include "tcast/errors.h"

/* A string member, escaped for the terminal ("" when absent). */
static const char *str(json_t *j, const char *name)
{
	return cli_esc(json_string_value(json_object_get(j, name)));
}

static long long num(json_t *j, const char *name)
{
	return json_integer_value(json_object_get(j, name));
}

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
	(void)arg;
	return tc_list_json(c, out);
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

		printf("%-36s %10s %8lld %6lld %-7s ", str(a, "id"),
		       cli_bytes((uint64_t)num(a, "bytes"), b1, sizeof(b1)),
		       num(a, "tensors"), num(a, "leases"), str(a, "policy"));
		json_array_foreach(keys, n, k) printf(
			"%s%s", n ? "," : "", cli_esc(json_string_value(k)));
		putchar('\n');
	}
	printf("host memory: %s used of %s\n",
	       cli_bytes((uint64_t)num(j, "used_bytes"), b2, sizeof(b2)),
	       cli_bytes((uint64_t)num(j, "budget_bytes"), b3, sizeof(b3)));
}

int cmd_ls(int argc, char **argv)
{
	if (cli_operands(argc, argv, 0, 0, NULL) < 0)
		return EXIT_USAGE;
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
			       i ? "         " : "replicas:", num(r, "ordinal"),
			       str(r, "device"),
			       cli_bytes((uint64_t)num(r, "bytes"), b,
					 sizeof(b)),
			       str(r, "state"), num(r, "leases"));
		else if (tier &&
			 (!strcmp(tier, "disk") || !strcmp(tier, "spill")))
			printf("%s %s %s, %s\n", i ? "         " : "replicas:",
			       tier[0] == 'd' ? "shared disk" : "spill folder",
			       str(r, "path"),
			       cli_bytes((uint64_t)num(r, "bytes"), b,
					 sizeof(b)));
		else
			printf("%s host memory (sealed memfd), %s\n",
			       i ? "         " : "replicas:",
			       cli_bytes((uint64_t)num(r, "bytes"), b,
					 sizeof(b)));
	}
}

static void show_inspect(json_t *j)
{
	json_t *ts = json_object_get(j, "tensor_table"), *t, *meta, *alg;
	const char *k;
	json_t *v;
	size_t i;
	char b[32];

	printf("id:       %s\n", str(j, "id"));
	/* The digest's algorithm when the daemon names it. */
	alg = json_object_get(j, "digest_algorithm");
	printf("digest:   %s%s%s (chunks of %lld bytes)\n",
	       alg ? str(j, "digest_algorithm") : "", alg ? " " : "",
	       str(j, "digest"), num(j, "chunk_bytes"));
	printf("size:     %s in %lld tensors\n",
	       cli_bytes((uint64_t)num(j, "bytes"), b, sizeof(b)),
	       num(j, "tensors"));
	printf("source:   %s\n", str(j, "source"));
	printf("policy:   %s, leases %lld\n", str(j, "policy"),
	       num(j, "leases"));
	show_replicas(json_object_get(j, "replicas"));
	meta = json_object_get(j, "metadata");
	json_object_foreach(meta, k, v)
		printf("meta:     %s = %s\n", cli_esc(k),
		       cli_esc(json_string_value(v)));
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
		printf("%-48s %-8s %-20s %12lld %10lld\n", str(t, "name"),
		       str(t, "dtype"), sh, num(t, "offset"), num(t, "nbytes"));
	}
}

int cmd_inspect(int argc, char **argv)
{
	const char *ref = NULL, *spec = NULL, *v;
	bool keep = false, opts = true;
	int32_t device = -1;
	int m;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (opts && !strcmp(a, "--")) {
			opts = false;
		} else if (opts &&
			   (m = cli_opt(argc, argv, &i, "--view", &v))) {
			if (m < 0 || cli_parse_nonempty("--view", v))
				return EXIT_USAGE;
			spec = v;
		} else if (opts &&
			   (m = cli_opt(argc, argv, &i, "--device", &v))) {
			if (m < 0 || cli_parse_device("--device", v, &device))
				return EXIT_USAGE;
		} else if (opts && !strcmp(a, "--keep")) {
			keep = true;
		} else if (opts && a[0] == '-' && a[1]) {
			return cli_usage_error("unknown option '%s'",
					       cli_esc(a));
		} else if (ref) {
			return cli_usage_error("one REF only ('%s' and '%s')",
					       cli_esc(ref), cli_esc(a));
		} else {
			ref = a;
		}
	}
	if (!ref)
		return cli_usage_error("no REF given");
	if (!spec && (keep || device >= 0))
		return cli_usage_error("--keep and --device need --view");
	if (spec)
		return cli_inspect_view(ref, spec, keep || device >= 0, device);
	return with_json(tc_inspect_json, ref, show_inspect);
}

/* Sibling-GPU sources as the daemon measured them: one line per pair
 * seen, with the host rate of its destination to compare. */
static void show_gpu_peers(json_t *p)
{
	json_t *x, *h;
	size_t i, k;

	if (!json_is_object(p) ||
	    (!json_array_size(json_object_get(p, "pairs")) &&
	     !num(p, "part_fills")))
		return;
	printf("GPU peer fills: %lld (%lld probes), bindings %lld, view "
	       "parts %lld (%lld bytes, %lld rejected)\n",
	       num(p, "fills"), num(p, "probes"), num(p, "bind_fills"),
	       num(p, "part_fills"), num(p, "part_fill_bytes"),
	       num(p, "part_rejected"));
	json_array_foreach(json_object_get(p, "pairs"), i, x)
	{
		double host = 0;

		json_array_foreach(json_object_get(p, "host_rates"), k, h)
		{
			if (num(h, "ordinal") == num(x, "dst"))
				host = json_number_value(
					json_object_get(h, "gbps"));
		}
		printf("  GPU %lld -> GPU %lld (%s link): %.1f GB/s over %lld "
		       "fills, host -> GPU %lld %.1f GB/s: next fill %s\n",
		       num(x, "src"), num(x, "dst"), str(x, "link"),
		       json_number_value(json_object_get(x, "gbps")),
		       num(x, "fills"), num(x, "dst"), host, str(x, "choice"));
	}
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
		printf("GPUs: %s%s%s\n", cli_esc(state),
		       json_object_get(g, "error") ? ": " : "",
		       json_object_get(g, "error") ? str(g, "error") : "");
		return;
	}
	json_array_foreach(json_object_get(g, "devices"), i, d)
	{
		printf("GPU %lld %s (%s): %s used of %s, %lld replicas, %lld "
		       "leases, %lld evictions\n",
		       num(d, "ordinal"), str(d, "uuid"), str(d, "name"),
		       cli_bytes((uint64_t)num(d, "used_bytes"), b1,
				 sizeof(b1)),
		       cli_bytes((uint64_t)num(d, "budget_bytes"), b2,
				 sizeof(b2)),
		       num(d, "replicas"), num(d, "leases"),
		       num(d, "evictions"));
	}
	show_gpu_peers(json_object_get(g, "peer"));
}

/* The spill tier's part of STATUS, when it has one. */
static void show_spill(json_t *sp)
{
	char b1[32], b2[32];

	if (!json_is_object(sp))
		return;
	printf("spill folder %s (%s): %lld artifacts, %s of %s; %lld spilled, "
	       "%lld dropped, %lld removed, %lld reloads (%lld failed)\n",
	       str(sp, "dir"), str(sp, "state"), num(sp, "artifacts"),
	       cli_bytes((uint64_t)num(sp, "bytes"), b1, sizeof(b1)),
	       cli_bytes((uint64_t)num(sp, "budget_bytes"), b2, sizeof(b2)),
	       num(sp, "spilled"), num(sp, "dropped"), num(sp, "removed"),
	       num(sp, "reloads"), num(sp, "reload_failures"));
}

/* The shared-disk tier's part of STATUS, when it has one. */
static void show_durable(json_t *d)
{
	char b1[32], b2[32];

	if (!json_is_object(d))
		return;
	printf("shared disk %s (%s): %lld artifacts, %s used, %s being "
	       "written; %lld written (%lld failed), %lld restores (%lld "
	       "failed)\n",
	       str(d, "shared_disk"), str(d, "state"), num(d, "artifacts"),
	       cli_bytes((uint64_t)num(d, "used_bytes"), b1, sizeof(b1)),
	       cli_bytes((uint64_t)num(d, "filling_bytes"), b2, sizeof(b2)),
	       num(d, "written"), num(d, "write_failures"), num(d, "restores"),
	       num(d, "restore_failures"));
}

static void show_status(json_t *j)
{
	json_t *cfg = json_object_get(j, "config");
	char b1[32], b2[32];

	printf("tcast daemon %s running, pid %lld, socket %s\n",
	       str(j, "version"), num(j, "pid"), str(j, "socket"));
	printf("uptime %.1f s, %lld clients, %lld artifacts, %lld keys\n",
	       (double)num(j, "uptime_ms") / 1000, num(j, "clients"),
	       num(j, "artifacts"), num(j, "keys"));
	printf("host memory %s used of %s, %lld evictions\n",
	       cli_bytes((uint64_t)num(j, "host_used_bytes"), b1, sizeof(b1)),
	       cli_bytes((uint64_t)num(j, "host_budget_bytes"), b2, sizeof(b2)),
	       num(j, "evictions"));
	show_gpus(json_object_get(j, "gpu"));
	show_durable(json_object_get(j, "durable"));
	show_spill(json_object_get(j, "spill"));
	if (cfg) {
		const char *k;
		json_t *v;

		printf("configuration:");
		json_object_foreach(cfg, k, v) printf(
			" %s=%s", cli_esc(k), cli_esc(json_string_value(v)));
		putchar('\n');
	}
}

int cmd_status(int argc, char **argv)
{
	char err[1024], sock[4096], *doc = NULL;
	tc_client *c;
	json_t *j;
	int rc;

	if (cli_operands(argc, argv, 0, 0, NULL) < 0)
		return EXIT_USAGE;
	rc = tc_client_connect(cli.socket, &c, err, sizeof(err));
	if (rc == TC_ENODAEMON) {
		/* The same answer as `tcast daemon status`: not an error
		 * message, a state, with exit status 1. */
		if (cli.socket)
			snprintf(sock, sizeof(sock), "%s", cli.socket);
		else if (tc_default_socket(sock, sizeof(sock)) < 0)
			sock[0] = '\0';
		if (cli.json)
			cli_put_json(json_pack("{s:b, s:s}", "running", 0,
					       "socket", sock));
		else
			printf("tcast daemon is not running on '%s'\n",
			       cli_esc(sock));
		return EXIT_RUNTIME;
	}
	if (rc < 0)
		return cli_fail(rc, err);
	rc = tc_status_json(c, &doc);
	if (rc < 0) {
		rc = cli_fail(rc, tc_client_errmsg(c));
		tc_client_close(c);
		return rc;
	}
	j = json_loads(doc, 0, NULL);
	if (j) {
		json_object_set_new(j, "running", json_true());
		if (cli.json)
			cli_put_json(json_incref(j));
		else
			show_status(j);
		json_decref(j);
	} else {
		cli_print_json(doc);
	}
	tc_free(doc);
	tc_client_close(c);
	return 0;
}

int cmd_rm(int argc, char **argv)
{
	const char **refs = calloc((size_t)argc, sizeof(*refs));
	json_t *removed = json_array();
	int rc = 0, n;
	tc_client *c;

	n = refs ? cli_operands(argc, argv, 1, argc, refs) : -1;
	if (n < 0) {
		rc = refs ? EXIT_USAGE : cli_fail(-ENOMEM, NULL);
		goto out_free;
	}
	c = cli_connect();
	if (!c) {
		rc = EXIT_RUNTIME;
		goto out_free;
	}
	for (int i = 0; i < n; i++) {
		rc = tc_rm(c, refs[i]);
		if (rc < 0) {
			/* Under --json the error says what went before. */
			cli.partial = json_pack("{s:O}", "removed", removed);
			rc = cli_fail(rc, tc_client_errmsg(c));
			break;
		}
		json_array_append_new(removed, json_string(refs[i]));
		if (!cli.json)
			printf("removed %s\n", cli_esc(refs[i]));
	}
	if (rc == 0 && cli.json)
		cli_put_json(json_pack("{s:O}", "removed", removed));
	tc_client_close(c);
out_free:
	json_decref(removed);
	free(refs);
	return rc;
}

int cmd_export(int argc, char **argv)
{
	const char *ops[2];
	char **args;
	struct stat st;
	uint32_t flags = 0;
	tc_client *c;
	int nargs = 0, rc;

	/* --force (-f) before a "--": replacing an existing file is asked
	 * for, never assumed; the rest is parsed as operands. */
	args = calloc((size_t)argc + 1, sizeof(*args));
	if (!args)
		return cli_fail(-ENOMEM, "out of memory");
	for (int i = 0, opts = 1; i < argc; i++) {
		if (i > 0 && opts && !strcmp(argv[i], "--"))
			opts = 0;
		if (i > 0 && opts &&
		    (!strcmp(argv[i], "--force") || !strcmp(argv[i], "-f"))) {
			flags |= TC_EXPORT_FORCE;
			continue;
		}
		args[nargs++] = argv[i];
	}
	rc = cli_operands(nargs, args, 2, 2, ops);
	free(args);
	if (rc < 0)
		return EXIT_USAGE;
	if (!strcmp(ops[1], "-")) {
		if (cli.json)
			return cli_usage_error(
				"--json and 'export REF -' would share stdout");
		if (isatty(STDOUT_FILENO))
			return cli_usage_error(
				"refusing to write safetensors bytes to a "
				"terminal: redirect stdout or give a file");
	}
	c = cli_connect();
	if (!c)
		return EXIT_RUNTIME;
	if (!strcmp(ops[1], "-"))
		rc = tc__client_export_fd(c, ops[0], STDOUT_FILENO);
	else
		rc = tc_export_ex(c, ops[0], ops[1], flags);
	if (rc < 0) {
		rc = cli_fail(rc, tc_client_errmsg(c));
	} else if (cli.json) {
		cli_put_json(json_pack("{s:s, s:s, s:I}", "ref", ops[0], "path",
				       ops[1], "bytes",
				       stat(ops[1], &st) == 0 ?
					       (json_int_t)st.st_size :
					       (json_int_t)-1));
	}
	tc_client_close(c);
	return rc;
}
