/*
 * cmd_view.c - tcast inspect REF --view SPEC [--keep] [--device D].
 *
 * Plans a view (its JSON form, docs/formats.md "Views") against the
 * artifact and prints the view's table, its id, the bytes it needs against
 * the whole artifact, and whether the daemon keeps it already.  --keep
 * makes the daemon keep it (tc_view_attach: realized once into an
 * artifact under the view id), --device cuda:N with a GPU replica too.
 */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "tcast/errors.h"
#include "tcast/view.h"

static json_t *table_json(const tc_view_plan *p)
{
	const struct tc_tensor_info *ti = tc_view_plan_tensors(p);
	json_t *a = json_array();

	for (uint32_t i = 0; i < tc_view_plan_count(p); i++) {
		json_t *shape = json_array();

		for (uint32_t d = 0; d < ti[i].ndim; d++)
			json_array_append_new(
				shape,
				json_integer((json_int_t)ti[i].shape[d]));
		json_array_append_new(
			a, json_pack("{s:s, s:s, s:o, s:I, s:I}", "name",
				     ti[i].name, "dtype",
				     tc_dtype_name(ti[i].dtype), "shape", shape,
				     "offset", (json_int_t)ti[i].offset,
				     "nbytes", (json_int_t)ti[i].nbytes));
	}
	return a;
}

static void show(json_t *j)
{
	json_t *ts = json_object_get(j, "tensor_table"), *t;
	char b1[32], b2[32], b3[32];
	size_t i;

	printf("view:     %s\n",
	       cli_esc(json_string_value(json_object_get(j, "view_id"))));
	printf("of:       %s\n",
	       cli_esc(json_string_value(json_object_get(j, "artifact_id"))));
	printf("size:     %s in %zu tensors\n",
	       cli_bytes((uint64_t)json_integer_value(
				 json_object_get(j, "bytes")),
			 b1, sizeof(b1)),
	       json_array_size(ts));
	printf("reads:    %s of the artifact's %s (%.2f%%), %" PRIu64
	       " pieces\n",
	       cli_bytes((uint64_t)json_integer_value(
				 json_object_get(j, "bytes_needed")),
			 b2, sizeof(b2)),
	       cli_bytes((uint64_t)json_integer_value(
				 json_object_get(j, "artifact_bytes")),
			 b3, sizeof(b3)),
	       json_real_value(json_object_get(j, "read_percent")),
	       (uint64_t)json_integer_value(json_object_get(j, "pieces")));
	if (json_is_string(json_object_get(j, "kept_id")))
		printf("kept:     %s (%s)\n",
		       cli_esc(json_string_value(json_object_get(j, "kept_id"))),
		       cli_esc(json_string_value(json_object_get(j, "kept"))));
	else
		printf("kept:     no (--keep makes the daemon keep it)\n");
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
		       cli_esc(json_string_value(json_object_get(t, "name"))),
		       json_string_value(json_object_get(t, "dtype")), sh,
		       json_integer_value(json_object_get(t, "offset")),
		       json_integer_value(json_object_get(t, "nbytes")));
	}
}

int cli_inspect_view(const char *ref, const char *spec, bool keep,
		     int32_t device)
{
	struct tc_view_stats st;
	char err[1024] = "";
	tc_client *c;
	tc_view *v = NULL;
	tc_view_plan *p = NULL;
	tc_artifact *a = NULL, *kept = NULL;
	uint32_t flags = 0;
	json_t *j;
	char *text = NULL;
	int rc;

	rc = tc_view_parse(spec, &v, err, sizeof(err));
	if (rc < 0)
		return cli_usage_error("--view: %s", cli_esc(err));
	c = cli_connect();
	if (!c) {
		tc_view_free(v);
		return EXIT_RUNTIME;
	}
	rc = tc_attach(c, ref, &a);
	if (rc < 0) {
		rc = cli_fail(rc, tc_client_errmsg(c));
		goto out;
	}
	rc = tc_view_plan_artifact(v, a, &p, err, sizeof(err));
	if (rc < 0) {
		rc = cli_fail(rc, err);
		goto out;
	}
	if (keep) {
		rc = tc_view_attach(c, p, device, &kept, &flags, err,
				    sizeof(err));
		if (rc < 0) {
			rc = cli_fail(rc, err);
			goto out;
		}
	} else if (tc_keys_json(c, tc_view_plan_id(p), &text) == 0) {
		json_t *k = json_loads(text, 0, NULL);

		if (json_is_true(json_object_get(k, "held")))
			keep = true; /* report it: it is kept already */
		json_decref(k);
		tc_free(text);
		if (keep && tc_attach(c, tc_view_plan_id(p), &kept) == 0)
			flags = TC_VIEW_ATTACH_CACHED;
	}
	tc_view_plan_stats(p, &st);
	j = json_pack("{s:s, s:s, s:o, s:I, s:I, s:I, s:f, s:I}", "view_id",
		      tc_view_plan_id(p), "artifact_id", tc_artifact_id(a),
		      "tensor_table", table_json(p), "bytes",
		      (json_int_t)tc_view_plan_size(p), "bytes_needed",
		      (json_int_t)st.bytes_needed, "artifact_bytes",
		      (json_int_t)st.artifact_bytes, "read_percent",
		      st.artifact_bytes ? 100.0 * (double)st.bytes_needed /
						  (double)st.artifact_bytes :
					  0.0,
		      "pieces", (json_int_t)st.pieces);
	if (kept) {
		json_object_set_new(j, "kept_id",
				    json_string(tc_artifact_id(kept)));
		json_object_set_new(j, "kept",
				    json_string(flags & TC_VIEW_ATTACH_CACHED ?
							"held already" :
							"made now"));
		if (device >= 0)
			json_object_set_new(j, "device", json_integer(device));
	} else {
		json_object_set_new(j, "kept_id", json_null());
	}
	if (cli.json)
		cli_put_json(j);
	else {
		show(j);
		json_decref(j);
	}
	rc = 0;
out:
	tc_artifact_close(kept);
	tc_view_plan_free(p);
	tc_artifact_close(a);
	tc_view_free(v);
	tc_client_close(c);
	return rc;
}
