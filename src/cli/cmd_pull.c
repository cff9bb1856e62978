/*
 * cmd_pull.c - tcast pull REF [--from HOST:PORT ...] [--view SPEC]
 *              [--device D [--host-copy]]
 *
 * Pulls an artifact from peer daemons into the local daemon as a host
 * replica (pull_sink.c: straight into a put's memory, then committed and
 * hashed once more), registered under its id and the key, when REF is a
 * key.  With --view, only the chunks covering the view's byte ranges are
 * pulled and the daemon keeps the view (under its view id).  With
 * --device the chunks go straight into a GPU replica the daemon owns
 * (through pinned staging, verified before each copy), and no host
 * replica is made; --host-copy (and a view) makes the host replica first
 * and the GPU replica from it (the daemon's pinned fill).  This file
 * picks the sources and reports.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "common/failpoint.h"
#include "common/clock.h"
#include "net/tls.h"
#include "peer/peer.h"
#include "proto/gsp.h"
#include "tcast/errors.h"

/* Another receiver's address is a source a fan-out pulls from too:
 * every host replica, complete or filling, and every GPU replica (its
 * peer server stages chunks device to host), on another node. */
static int usable(const struct tc__gsp_source *s)
{
	return s->distance != 0 && s->peer_addr[0] &&
	       (s->tier == TC_GSP_TIER_HOST || s->tier == TC_GSP_TIER_GPU);
}

/* A node with a host and a GPU replica is listed twice: one source. */
static bool listed(char (*addr)[TC_PEER_ADDR_MAX], int n, const char *a)
{
	for (int i = 0; i < n; i++)
		if (!strcmp(addr[i], a))
			return true;
	return false;
}

static int discover(void *arg, char (*addr)[TC_PEER_ADDR_MAX], int max)
{
	static struct tc__gsp_source src[TC_GSP_MAX_SOURCES];
	char id[TC_GSP_MAX_ID + 1], err[512];
	uint64_t gen;
	uint32_t n = 0;
	int k = 0;

	if (cli_cluster_sources(arg, TC_GSP_MAX_SOURCES, id, &gen, src, &n, err,
				sizeof(err)) < 0)
		return 0; /* the store is away: go on with what we have */
	for (uint32_t i = 0; i < n && k < max; i++)
		if (usable(&src[i]) && !listed(addr, k, src[i].peer_addr))
			snprintf(addr[k++], TC_PEER_ADDR_MAX, "%s",
				 src[i].peer_addr);
	return k;
}

static double gbps(uint64_t bytes, uint64_t ns)
{
	return ns ? (double)bytes / (double)ns : 0.0;
}

static json_t *sources_json(const struct tc__peer_pull_result *r)
{
	json_t *a = json_array();

	for (int i = 0; i < r->nsources; i++) {
		const struct tc__peer_source_stats *s = &r->src[i];

		json_array_append_new(
			a,
			json_pack("{s:s, s:i, s:i, s:I, s:I, s:f, s:i, s:i, "
				  "s:b, s:b, s:s?}",
				  "addr", s->addr, "streams", (int)s->streams,
				  "streams_retired", (int)s->retired, "bytes",
				  (json_int_t)s->bytes, "chunks",
				  (json_int_t)s->chunks, "gbps",
				  gbps(s->bytes, r->ns), "bad_chunks",
				  (int)s->bad_chunks, "declined",
				  (int)s->declined, "filling", s->partial,
				  "failed", s->failed, "error",
				  s->failed ? s->err : NULL));
	}
	return a;
}

/* The daemon's configuration value `key` as a string into out ("" when it
 * has none or the daemon does not say). */
static void config_from_daemon(tc_client *c, const char *key, char *out,
			       size_t len)
{
	char *doc = NULL;
	json_t *j = NULL;
	const char *v;

	if (tc_status_json(c, &doc) == 0)
		j = json_loads(doc, 0, NULL);
	v = json_string_value(
		json_object_get(json_object_get(j, "config"), key));
	snprintf(out, len, "%s", v ? v : "");
	json_decref(j);
	tc_free(doc);
}

static int secret_from_daemon(tc_client *c, char *path, size_t len)
{
	config_from_daemon(c, "cluster_secret_file", path, len);
	return path[0] ? 0 : -1;
}

/* This node's name for handshakes: the daemon's node_name, else the host
 * name (receivers on one host, or in network namespaces of one, share
 * that; a seed tells fan-out receivers apart by name and address). */
static void name_from_daemon(tc_client *c, char *name, size_t len)
{
	config_from_daemon(c, "node_name", name, len);
	if (name[0])
		return;
	if (gethostname(name, len - 1) < 0)
		snprintf(name, len, "tcast");
	name[len - 1] = '\0'; /* truncated names need not end */
}

/* The daemon's TLS settings (tls, tls_cert, tls_key, tls_ca,
 * tls_verify_name), which --tls* flags then override key by key. */
static void tls_from_daemon(tc_client *c, struct tc__tls_config *t)
{
	static const char *const keys[] = { "tls", "tls_cert", "tls_key",
					    "tls_ca", "tls_verify_name" };
	char *doc = NULL, why[256];
	json_t *j = NULL, *cfg;

	if (tc_status_json(c, &doc) == 0)
		j = json_loads(doc, 0, NULL);
	cfg = json_object_get(j, "config");
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		const char *v =
			json_string_value(json_object_get(cfg, keys[i]));

		if (v)
			(void)tc__tls_config_set(t, keys[i], v, why,
						 sizeof(why));
	}
	json_decref(j);
	tc_free(doc);
}

/* No --from: the sources the global store ranks for `ref`, through the
 * local daemon (a node in a cluster); this node's own entries skipped. */
static int global_sources(const char *ref, char *id,
			  char addr[][TC_GSP_MAX_ADDR + 1], const char **out,
			  int *nout)
{
	static struct tc__gsp_source src[TC_GSP_MAX_SOURCES];
	uint64_t gen;
	uint32_t n = 0;
	int rc =
		cli_cluster_resolve(ref, TC_GSP_MAX_SOURCES, id, &gen, src, &n);

	char hold[16];
	/* Failpoint pull.hold_sources (tests): start from the sealed
	 * sources only; receivers still filling join by discovery, all at
	 * once (pull.c), whenever each started. */
	bool sealed_only =
		tc__failpoint_arg("pull.hold_sources", hold, sizeof(hold));

	if (rc)
		return rc;
	for (uint32_t i = 0; i < n && *nout < TC_PEER_MAX_SOURCES; i++) {
		bool dup = false;

		for (int j = 0; j < *nout; j++)
			dup = dup || !strcmp(out[j], src[i].peer_addr);
		if (!usable(&src[i]) || dup ||
		    (sealed_only && !src[i].complete))
			continue;
		snprintf(addr[*nout], TC_GSP_MAX_ADDR + 1, "%s",
			 src[i].peer_addr);
		out[*nout] = addr[*nout];
		(*nout)++;
	}
	if (!*nout)
		return cli_fail(TC_ENOTFOUND,
				"no peer holds it: the global store knows no "
				"host or GPU replica of it on another node "
				"with a peer address (or pass --from "
				"HOST:PORT)");
	return 0;
}

static void report_failed_sources(const struct tc__peer_pull_result *r)
{
	if (cli.json)
		cli.partial = json_pack("{s:o}", "sources", sources_json(r));
	else
		for (int i = 0; i < r->nsources; i++)
			if (r->src[i].failed)
				fprintf(stderr, "  %s: %s\n",
					cli_esc(r->src[i].addr),
					cli_esc(r->src[i].err));
}

/*
 * A pull of a key leaves the key naming the pulled artifact here.  A key
 * this daemon does not have is created.  One it has is moved: outside a
 * cluster by compare-and-swap of the generation read now (so a local move
 * meanwhile is refused when the put begins, before any byte is pulled);
 * in a cluster by a plain set, which the daemon confirms with the global
 * store (whose key names what we pull) and adopts at the cluster's
 * generation (docs/cluster.md "Keys across the cluster").  Returns false
 * when the daemon cannot say.
 */
static bool local_key_gen(tc_client *c, const char *key, struct tc_opts *o)
{
	char *doc = NULL;
	json_t *j = NULL, *g;
	const char *global;
	int rc = tc_keys_json(c, key, &doc);

	if (rc == TC_ENOTFOUND)
		return true; /* new here: created */
	if (rc == 0)
		j = json_loads(doc, 0, NULL);
	tc_free(doc);
	g = json_object_get(j, "generation");
	if (!json_is_integer(g)) {
		json_decref(j);
		return false;
	}
	o->expect_gen = (uint64_t)json_integer_value(g);
	json_decref(j);
	doc = NULL;
	j = NULL;
	if (tc_status_json(c, &doc) == 0)
		j = json_loads(doc, 0, NULL);
	tc_free(doc);
	global = json_string_value(
		json_object_get(json_object_get(j, "config"), "global"));
	if (!global || !*global)
		o->field_mask |= TC_OPT_EXPECT;
	json_decref(j);
	return true;
}

/* --view: only the chunks the view reads; the daemon keeps the view. */
static int pull_view(tc_client *c, const tc_view *v, int32_t device,
		     struct tc__peer_pull_opts *po,
		     struct tc__peer_pull_result *r, uint64_t t0, char *err,
		     size_t errlen)
{
	struct cli_view_pulled vp;
	char b1[32], b2[32], b3[48];
	uint64_t t1;
	int rc;

	rc = cli_pull_view(c, v, device, po, r, &vp, &t1, err, errlen);
	if (rc < 0) {
		report_failed_sources(r);
		return cli_fail(rc, err);
	}
	if (cli.json) {
		cli_put_json(json_pack(
			"{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:b, "
			"s:f, s:f, s:f, s:o}",
			"id", vp.kept_id, "view_id", vp.view_id, "view_of",
			r->id, "bytes", (json_int_t)vp.bytes, "artifact_bytes",
			(json_int_t)r->bytes, "bytes_needed",
			(json_int_t)vp.bytes_needed, "bytes_pulled",
			(json_int_t)r->want_bytes, "chunks_pulled",
			(json_int_t)r->want_chunks, "chunks",
			(json_int_t)r->nchunks, "held_already", vp.held,
			"seconds", (double)(tc__mono_ns() - t0) / 1e9,
			"transfer_seconds", (double)r->ns / 1e9, "gbps",
			gbps(r->want_bytes, r->ns), "sources",
			sources_json(r)));
		return 0;
	}
	puts(vp.kept_id);
	fflush(stdout);
	fprintf(stderr, "view %s of %s: %s\n", vp.view_id, r->id,
		vp.held ? "kept here already, nothing pulled" : "kept");
	fprintf(stderr,
		"pulled %s of %s (%llu of %llu chunks) in %.3f s%s "
		"(+%.3f s to make the view)\n",
		cli_bytes(r->want_bytes, b1, sizeof(b1)),
		cli_bytes(r->bytes, b2, sizeof(b2)),
		(unsigned long long)r->want_chunks,
		(unsigned long long)r->nchunks, (double)r->ns / 1e9,
		cli_rate(r->want_bytes, r->ns, b3, sizeof(b3)),
		(double)(tc__mono_ns() - t1) / 1e9);
	for (int i = 0; i < r->nsources; i++) {
		const struct tc__peer_source_stats *s = &r->src[i];

		fprintf(stderr, "  %s: %s%s, %u streams, %u bad chunks%s%s\n",
			cli_esc(s->addr), cli_bytes(s->bytes, b1, sizeof(b1)),
			cli_rate(s->bytes, r->ns, b3, sizeof(b3)), s->streams,
			s->bad_chunks, s->failed ? "; dropped: " : "",
			s->failed ? cli_esc(s->err) : "");
	}
	return 0;
}

#define NTLS 5 /* --tls, --tls-cert, --tls-key, --tls-ca, --tls-verify-name */

int cmd_pull(int argc, char **argv)
{
	static const char *const policies[] = { "cache", "warm", "pinned",
						NULL };
	const char *sources[TC_PEER_MAX_SOURCES];
	struct tc__peer_pull_opts po = { 0 };
	struct tc__peer_pull_result *r = NULL;
	struct tc__auth_secret *secret = NULL;
	static struct tc__tls_config tls;
	const char *tls_flag[NTLS] = { NULL };
	static const char *const tls_opt[NTLS] = { "--tls", "--tls-cert",
						   "--tls-key", "--tls-ca",
						   "--tls-verify-name" };
	static const char *const tls_key[NTLS] = { "tls", "tls_cert", "tls_key",
						   "tls_ca",
						   "tls_verify_name" };
	struct tc__tls_ctx *tls_ctx = NULL;
	struct tc_opts o = { 0 };
	struct tc_result res;
	tc_client *tcl = NULL;
	const char *ref = NULL, *v, *secret_file = NULL;
	char spath[4096], err[2048], b1[32], b2[48], host[64] = "";
	static char gid[TC_GSP_MAX_ID + 1];
	static char gaddr[TC_PEER_MAX_SOURCES][TC_GSP_MAX_ADDR + 1];
	uint64_t streams = 0, timeout = 5000, t0, t1; /* streams 0: chosen */
	int nsrc = 0, rc, m;
	int32_t device = -1;
	uint64_t gpu_ns = 0;
	bool nokey = false, host_copy = false;
	const char *view_spec = NULL;
	tc_view *view = NULL;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if ((m = cli_opt(argc, argv, &i, "--from", &v))) {
			if (m < 0 || cli_parse_nonempty("--from", v))
				return EXIT_USAGE;
			if (nsrc == TC_PEER_MAX_SOURCES)
				return cli_usage_error("at most %d --from",
						       TC_PEER_MAX_SOURCES);
			sources[nsrc++] = v;
		} else if ((m = cli_opt(argc, argv, &i, "--streams", &v))) {
			if (m < 0 ||
			    cli_parse_uint("--streams", v, 1,
					   TC_PEER_MAX_STREAMS, &streams))
				return EXIT_USAGE;
		} else if ((m = cli_opt(argc, argv, &i, "--timeout-ms", &v))) {
			if (m < 0 || cli_parse_uint("--timeout-ms", v, 100,
						    600000, &timeout))
				return EXIT_USAGE;
		} else if ((m = cli_opt(argc, argv, &i, "--secret-file", &v))) {
			if (m < 0 || cli_parse_nonempty("--secret-file", v))
				return EXIT_USAGE;
			secret_file = v;
		} else if ((m = cli_opt(argc, argv, &i, "--key", &v))) {
			if (m < 0 || cli_parse_nonempty("--key", v))
				return EXIT_USAGE;
			o.key = v;
		} else if ((m = cli_opt(argc, argv, &i, "--policy", &v))) {
			if (m < 0 || cli_parse_choice("--policy", v, policies))
				return EXIT_USAGE;
			o.policy = v;
			o.field_mask |= TC_OPT_POLICY;
		} else if ((m = cli_opt(argc, argv, &i, "--device", &v))) {
			if (m < 0 || cli_parse_device("--device", v, &device))
				return EXIT_USAGE;
		} else if ((m = cli_opt(argc, argv, &i, "--view", &v))) {
			if (m < 0 || cli_parse_nonempty("--view", v))
				return EXIT_USAGE;
			view_spec = v;
		} else if (!strcmp(a, "--no-key")) {
			nokey = true;
		} else if (!strncmp(a, "--tls", 5)) {
			int k;

			for (k = 0; k < NTLS; k++)
				if ((m = cli_opt(argc, argv, &i, tls_opt[k],
						 &v)))
					break;
			if (k == NTLS)
				return cli_usage_error("unknown option '%s'",
						       cli_esc(a));
			if (m < 0)
				return EXIT_USAGE;
			tls_flag[k] = v;
		} else if (!strcmp(a, "--host-copy")) {
			host_copy = true;
		} else if (a[0] == '-' && a[1]) {
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
	if (view_spec && (o.key || nokey || o.policy))
		return cli_usage_error(
			"--view keeps the view under its view id (policy "
			"cache): --key, --no-key and --policy do not apply");
	if (view_spec) {
		rc = tc_view_parse(view_spec, &view, err, sizeof(err));
		if (rc < 0)
			return cli_usage_error("--view: %s", cli_esc(err));
		nokey = true; /* the view id is its key */
	}
	if (host_copy && device < 0)
		return cli_usage_error("--host-copy goes with --device");
	if (device >= 0 && !host_copy && !view_spec) {
		/* Straight into the GPU replica (a GPU put). */
		o.device = device;
		o.field_mask |= TC_OPT_DEVICE;
	}
	/* A key pulled is registered under that key here too. */
	if (!o.key && !nokey && !tc__is_id(ref))
		o.key = ref;
	if (!nsrc) {
		rc = global_sources(ref, gid, gaddr, sources, &nsrc);
		if (rc) {
			tc_view_free(view);
			return rc;
		}
		ref = gid; /* the sources serve the id the key named */
		/* Receivers that start after us join as they appear. */
		po.discover.fn = discover;
		po.discover.arg = gid;
	}
	if (o.key && !nokey)
		o.field_mask |= TC_OPT_KEY;
	tcl = cli_connect();
	if (!tcl) {
		tc_view_free(view);
		return EXIT_RUNTIME;
	}
	if ((o.field_mask & TC_OPT_KEY) && !local_key_gen(tcl, o.key, &o)) {
		rc = cli_fail(TC_EINVAL, "cannot read the local daemon's keys");
		goto out_close;
	}
	if (!secret_file && getenv("TCAST_CLUSTER_SECRET_FILE") &&
	    *getenv("TCAST_CLUSTER_SECRET_FILE"))
		secret_file = getenv("TCAST_CLUSTER_SECRET_FILE");
	if (!secret_file && secret_from_daemon(tcl, spath, sizeof(spath)) == 0)
		secret_file = spath;
	if (!secret_file) {
		rc = cli_fail(TC_EBADCONFIG,
			      "no cluster secret: pass --secret-file or set "
			      "cluster_secret_file in the daemon's config");
		goto out_close;
	}
	secret = calloc(1, sizeof(*secret));
	r = calloc(1, sizeof(*r));
	if (!secret || !r) {
		rc = cli_fail(-ENOMEM, NULL);
		goto out_close;
	}
	rc = tc__auth_load_secret(secret_file, secret, err, sizeof(err));
	if (rc < 0) {
		rc = cli_fail(rc, err);
		goto out_close;
	}
	/* TLS as the daemon has it, flags on top. */
	tls_from_daemon(tcl, &tls);
	for (int k = 0; k < NTLS; k++) {
		char why[512];

		if (tls_flag[k] &&
		    tc__tls_config_set(&tls, tls_key[k], tls_flag[k], why,
				       sizeof(why)) < 0) {
			rc = cli_usage_error("%s: %s", tls_opt[k], why);
			goto out_close;
		}
	}
	rc = tc__tls_ctx_new(&tls, &tls_ctx, err, sizeof(err));
	if (rc < 0) {
		rc = cli_fail(rc, err);
		goto out_close;
	}
	po.tls = tls_ctx;
	po.ref = ref;
	po.sources = sources;
	po.nsources = nsrc;
	po.streams = (int)streams;
	po.timeout_ms = (int)timeout;
	po.secret = secret;
	name_from_daemon(tcl, host, sizeof(host));
	po.name = host;
	t0 = tc__mono_ns();
	if (view) {
		rc = pull_view(tcl, view, device, &po, r, t0, err, sizeof(err));
		goto out_close;
	}
	rc = cli_pull_into(tcl, &o, &po, r, &res, &t1, err, sizeof(err));
	if (rc < 0) {
		report_failed_sources(r);
		rc = cli_fail(rc, err);
		goto out_close;
	}
	if (device >= 0 && host_copy) {
		/* The GPU replica is made by the local daemon from the host
		 * replica just registered (pinned, docs/gpu.md). */
		tc_artifact *ga;
		uint64_t g0 = tc__mono_ns();

		rc = tc_attach_gpu(tcl, res.id, device, &ga);
		if (rc < 0) {
			rc = cli_fail(rc, tc_client_errmsg(tcl));
			goto out_close;
		}
		tc_artifact_close(ga);
		gpu_ns = tc__mono_ns() - g0;
	}
	if (cli.json) {
		cli_put_json(json_pack(
			"{s:s, s:s?, s:I, s:I, s:f, s:f, s:f, s:o, s:f, s:b, "
			"s:b}",
			"id", res.id, "key",
			(o.field_mask & TC_OPT_KEY) ? o.key : NULL, "bytes",
			(json_int_t)r->bytes, "chunks", (json_int_t)r->nchunks,
			"seconds", (double)(tc__mono_ns() - t0) / 1e9,
			"transfer_seconds", (double)r->ns / 1e9, "gbps",
			gbps(r->bytes, r->ns), "sources", sources_json(r),
			"gpu_seconds", (double)gpu_ns / 1e9, "gpu_direct",
			(o.field_mask & TC_OPT_DEVICE) != 0, "in_place",
			r->in_place));
	} else {
		puts(res.id);
		fflush(stdout);
		fprintf(stderr, "%s in %.3f s%s (+%.3f s to register)\n",
			cli_bytes(r->bytes, b1, sizeof(b1)),
			(double)r->ns / 1e9,
			cli_rate(r->bytes, r->ns, b2, sizeof(b2)),
			(double)(tc__mono_ns() - t1) / 1e9);
		for (int i = 0; i < r->nsources; i++) {
			const struct tc__peer_source_stats *s = &r->src[i];

			fprintf(stderr,
				"  %s: %s%s, %u streams, %u bad chunks%s%s\n",
				cli_esc(s->addr),
				cli_bytes(s->bytes, b1, sizeof(b1)),
				cli_rate(s->bytes, r->ns, b2, sizeof(b2)),
				s->streams, s->bad_chunks,
				s->failed ? "; dropped: " : "",
				s->failed ? cli_esc(s->err) : "");
		}
	}
	rc = 0;
out_close:
	tc_view_free(view);
	free(r);
	tc__tls_ctx_free(tls_ctx);
	if (secret)
		tc__auth_secret_wipe(secret);
	free(secret);
	tc_client_close(tcl);
	return rc;
}
