/*
 * test_view.c - the view ABI (include/tcast/view.h) against a real daemon:
 * a Hugging Face folder imported and attached, the same views realized
 * from the host mapping and from the folder on disk (reading only the
 * planned ranges), zero-copy offsets, and bad specs refused with their
 * messages while the daemon keeps serving.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>
#include <cmocka.h>

#include "tcast/tcast.h"
#include "tlib.h"

static struct t_daemon D;

static int setup(void **state)
{
	t_daemon_start(&D, "256MiB", NULL);
	return 0;
}

static int teardown(void **state)
{
	t_daemon_stop(&D);
	return 0;
}

/* The first tensor of rank 2 with both dims >= 4 and a float dtype. */
static int64_t pick_matrix(tc_artifact *a)
{
	const struct tc_tensor_info *t = tc_artifact_tensors(a);

	for (uint32_t i = 0; i < tc_artifact_count(a); i++)
		if (t[i].ndim == 2 && t[i].shape[0] >= 4 &&
		    t[i].shape[1] >= 4 &&
		    (t[i].dtype == TC_DTYPE_BF16 ||
		     t[i].dtype == TC_DTYPE_F16 || t[i].dtype == TC_DTYPE_F32))
			return i;
	fail_msg("tiny-llama has no float matrix");
	return -1;
}

/* Realize `json` from the attached artifact and from the folder: the same
 * bytes; returns the host plan (caller frees) and its bytes. */
static tc_view_plan *both(tc_artifact *a, const char *json, uint8_t **out,
			  struct tc_view_stats *disk)
{
	char err[512];
	tc_view *v;
	tc_view_plan *pa, *pd;
	uint8_t *x, *y;

	if (tc_view_parse(json, &v, err, sizeof(err)))
		fail_msg("%s", err);
	if (tc_view_plan_artifact(v, a, &pa, err, sizeof(err)))
		fail_msg("%s", err);
	if (tc_view_plan_path(v, t_data("tiny-llama"), &pd, err, sizeof(err)))
		fail_msg("%s", err);
	tc_view_free(v);
	assert_int_equal(tc_view_plan_size(pa), tc_view_plan_size(pd));
	x = malloc(tc_view_plan_size(pa) + 1);
	y = malloc(tc_view_plan_size(pd) + 1);
	if (tc_view_realize(pa, x, tc_view_plan_size(pa), err, sizeof(err)))
		fail_msg("%s", err);
	if (tc_view_realize(pd, y, tc_view_plan_size(pd), err, sizeof(err)))
		fail_msg("%s", err);
	assert_memory_equal(x, y, tc_view_plan_size(pa));
	assert_int_equal(tc_view_plan_stats(pd, disk), 0);
	tc_view_plan_free(pd);
	free(y);
	*out = x;
	return pa;
}

static void test_view__host_and_disk_agree(void **state)
{
	tc_client *c = t_connect(D.sock);
	struct tc_result r;
	struct tc_view_stats st;
	tc_artifact *a;
	tc_view_plan *p;
	uint8_t *x;
	char json[1024];
	const struct tc_tensor_info *ti, *vi;
	uint64_t rows, cols, es, rowb;
	const char *name;
	int64_t m;

	assert_int_equal(tc_import(c, t_data("tiny-llama"), NULL, &r), 0);
	assert_int_equal(tc_attach(c, r.id, &a), 0);
	m = pick_matrix(a);
	ti = &tc_artifact_tensors(a)[m];
	name = ti->name;
	rows = ti->shape[0];
	cols = ti->shape[1];
	es = tc_dtype_bits(ti->dtype) / 8;
	rowb = cols * es;

	/* A row shard: one range, zero-copy in the mapping, and from disk
	 * exactly its bytes. */
	snprintf(json, sizeof(json),
		 "{\"names\":[\"%s\"],\"slices\":{\"%s\":[[0,1,%llu]]}}", name,
		 name, (unsigned long long)(rows / 2));
	p = both(a, json, &x, &st);
	vi = tc_view_plan_tensors(p);
	assert_int_equal(vi[0].shape[0], rows / 2 - 1);
	assert_int_equal(tc_view_plan_source_offset(p, 0), ti->offset + rowb);
	assert_memory_equal(
		x, (const uint8_t *)tc_artifact_data(a) + ti->offset + rowb,
		vi[0].nbytes);
	assert_int_equal(st.bytes_read, (rows / 2 - 1) * rowb);
	assert_int_equal(st.bytes_needed, st.bytes_read);
	assert_int_equal(st.reads, 1);
	assert_int_equal(st.from_disk, 1);
	assert_true(st.header_bytes > 8);
	assert_true(!strncmp(tc_view_plan_id(p), "view:", 5));
	tc_view_plan_free(p);
	free(x);

	/* A column shard, transposed and cast to F32: element by element. */
	snprintf(json, sizeof(json),
		 "[{\"names\":[\"%s\"],\"slices\":{\"%s\":[[1,2,4]]}},"
		 "{\"transpose\":[0,1],\"dtype\":\"F32\"}]",
		 name, name);
	p = both(a, json, &x, &st);
	vi = tc_view_plan_tensors(p);
	assert_int_equal(vi[0].shape[0], 2);
	assert_int_equal(vi[0].shape[1], rows);
	assert_int_equal(vi[0].dtype, TC_DTYPE_F32);
	assert_int_equal(tc_view_plan_source_offset(p, 0), -1);
	for (uint64_t i = 0; i < 2; i++)
		for (uint64_t j = 0; j < rows; j++) {
			const uint8_t *s =
				(const uint8_t *)tc_artifact_data(a) +
				ti->offset + j * rowb + (2 + i) * es;
			float want, got;

			if (ti->dtype == TC_DTYPE_F32) {
				memcpy(&want, s, 4);
			} else {
				/* BF16 or F16 widen exactly. */
				uint16_t h;
				uint32_t bits;

				memcpy(&h, s, 2);
				if (ti->dtype == TC_DTYPE_BF16) {
					bits = (uint32_t)h << 16;
					memcpy(&want, &bits, 4);
				} else {
					continue; /* covered by unit tests */
				}
			}
			memcpy(&got, x + (i * rows + j) * 4, 4);
			assert_memory_equal(&got, &want, 4);
		}
	tc_view_plan_free(p);
	free(x);

	/* Bad specs: the message names the tensor, dim and bound; nothing
	 * is realized and the daemon still serves. */
	{
		char err[512];
		tc_view *v;
		tc_view_plan *bad = (tc_view_plan *)1;
		char want[512];

		assert_int_equal(tc_view_new(&v), 0);
		assert_int_equal(tc_view_slice(v, name, 0, 0, rows + 1), 0);
		assert_int_equal(tc_view_plan_artifact(v, a, &bad, err,
						       sizeof(err)),
				 TC_EINVAL);
		assert_null(bad);
		snprintf(want, sizeof(want),
			 "view: tensor '%s': dim 0: slice [0, %llu) outside "
			 "the shape (size %llu)",
			 name, (unsigned long long)(rows + 1),
			 (unsigned long long)rows);
		assert_string_equal(err, want);
		assert_int_equal(tc_view_plan_path(v, t_data("tiny-llama"),
						   &bad, err, sizeof(err)),
				 TC_EINVAL);
		assert_string_equal(err, want);
		tc_view_free(v);
		assert_int_equal(tc_view_new(&v), 0);
		assert_int_equal(tc_view_select(v, "no.such.weight"), 0);
		assert_int_equal(tc_view_plan_artifact(v, a, &bad, err,
						       sizeof(err)),
				 TC_ENOTFOUND);
		assert_string_equal(
			err,
			"view: no tensor 'no.such.weight' in the artifact");
		assert_int_equal(tc_view_cast(v, NULL, 999), TC_EINVAL);
		tc_view_free(v);
		assert_int_equal(tc_view_parse("{\"names\":3}", &v, err,
					       sizeof(err)),
				 TC_EINVAL);
		assert_null(v);
	}
	/* The plan holds its own reference: the artifact handle may go. */
	{
		tc_view *v;
		char err[512];
		uint8_t *buf;

		assert_int_equal(tc_view_new(&v), 0);
		assert_int_equal(
			tc_view_plan_artifact(v, a, &p, err, sizeof(err)), 0);
		tc_view_free(v);
		tc_artifact_close(a);
		buf = malloc(tc_view_plan_size(p));
		assert_int_equal(tc_view_realize(p, buf, tc_view_plan_size(p),
						 err, sizeof(err)),
				 0);
		assert_int_equal(tc_view_realize(p, buf, 1, err, sizeof(err)),
				 TC_EINVAL);
		free(buf);
		tc_view_plan_free(p);
	}
	assert_int_equal(tc_attach(c, r.id, &a), 0);
	tc_artifact_close(a);
	tc_client_close(c);
}

/* A plan against a table and memory the caller holds (a view pulled from
 * peers): same id and bytes as the plan of the attached artifact, and the
 * chunks its ranges touch. */
static void test_view__memory_plan_and_chunks(void **state)
{
	tc_client *c = t_connect(D.sock);
	struct tc_result r;
	tc_artifact *a;
	tc_view *v;
	tc_view_plan *pa, *pm;
	char err[512];
	uint8_t *x, *y, bits[8];

	assert_int_equal(tc_import(c, t_data("tiny-llama"), NULL, &r), 0);
	assert_int_equal(tc_attach(c, r.id, &a), 0);
	assert_int_equal(
		tc_view_parse("{\"dtype\":\"F32\",\"transpose\":[0,1]}", &v,
			      err, sizeof(err)),
		0);
	assert_int_equal(tc_view_plan_artifact(v, a, &pa, err, sizeof(err)), 0);
	assert_int_equal(tc_view_plan_memory(
				 v, tc_artifact_id(a), tc_artifact_tensors(a),
				 tc_artifact_count(a), tc_artifact_size(a),
				 tc_artifact_data(a), &pm, err, sizeof(err)),
			 0);
	assert_string_equal(tc_view_plan_id(pa), tc_view_plan_id(pm));
	x = malloc(tc_view_plan_size(pa));
	y = malloc(tc_view_plan_size(pm));
	assert_int_equal(tc_view_realize(pa, x, tc_view_plan_size(pa), err,
					 sizeof(err)),
			 0);
	assert_int_equal(tc_view_realize(pm, y, tc_view_plan_size(pm), err,
					 sizeof(err)),
			 0);
	assert_memory_equal(x, y, tc_view_plan_size(pa));
	free(x);
	free(y);
	tc_view_plan_free(pa);
	tc_view_plan_free(pm);
	tc_view_free(v);
	tc_artifact_close(a);
	tc_client_close(c);

	/* Chunks of 1 MiB over a made-up table (nothing is read):
	 * w F32 [2048, 1024] (8 MiB at 0), x U8 [4, 4 MiB] (16 MiB at 8 MiB).
	 */
	{
		struct tc_tensor_info t[2] = {
			{ .name = "w",
			  .dtype = TC_DTYPE_F32,
			  .ndim = 2,
			  .shape = { 2048, 1024 },
			  .offset = 0,
			  .nbytes = 8u << 20 },
			{ .name = "x",
			  .dtype = TC_DTYPE_U8,
			  .ndim = 2,
			  .shape = { 4, 4u << 20 },
			  .offset = 8u << 20,
			  .nbytes = 16u << 20 },
		};
		static const struct {
			const char *spec;
			int64_t n;
			uint8_t bits[3];
		} cases[] = {
			/* rank 1 of 2 of w: chunks 4..7 */
			{ "{\"names\":[\"w\"],\"slices\":{\"w\":[[0,1024,2048]]}}",
			  4,
			  { 0xf0, 0, 0 } },
			/* a column shard of narrow rows: every chunk of w */
			{ "{\"names\":[\"w\"],\"slices\":{\"w\":[[1,0,8]]}}",
			  8,
			  { 0xff, 0, 0 } },
			/* a column shard of 4 MiB rows: one chunk per row */
			{ "{\"names\":[\"x\"],\"slices\":{\"x\":[[1,0,100]]}}",
			  4,
			  { 0, 0x11, 0x11 } },
			/* a subset: x whole */
			{ "{\"names\":[\"x\"]}", 16, { 0, 0xff, 0xff } },
		};
		static uint8_t mem[16];

		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
			assert_int_equal(tc_view_parse(cases[i].spec, &v, err,
						       sizeof(err)),
					 0);
			assert_int_equal(tc_view_plan_memory(v, "tc2:made-up",
							     t, 2, 24u << 20,
							     mem, &pm, err,
							     sizeof(err)),
					 0);
			memset(bits, 0, sizeof(bits));
			assert_int_equal(tc_view_plan_chunks(pm, 1u << 20, bits,
							     24),
					 cases[i].n);
			assert_memory_equal(bits, cases[i].bits, 3);
			assert_int_equal(tc_view_plan_chunks(pm, 0, bits, 24),
					 TC_EINVAL);
			tc_view_plan_free(pm);
			tc_view_free(v);
		}
		/* A table that does not fit its byte space: refused. */
		assert_int_equal(tc_view_new(&v), 0);
		assert_int_equal(tc_view_plan_memory(v, "tc2:made-up", t, 2,
						     16u << 20, mem, &pm, err,
						     sizeof(err)),
				 TC_EINVAL);
		assert_string_equal(err,
				    "view: tensor 'x' lies outside the byte "
				    "space");
		assert_int_equal(tc_view_plan_memory(v, NULL, t, 2, 24u << 20,
						     mem, &pm, err,
						     sizeof(err)),
				 TC_EINVAL);
		tc_view_free(v);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_view__host_and_disk_agree),
		cmocka_unit_test(test_view__memory_plan_and_chunks),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
