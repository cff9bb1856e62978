/*
 * test_view.c - src/format/view.c and view_exec.c: the view planner, its
 * JSON form, view ids, casts, and the host and disk executors.
 *
 * Executors are checked against a naive element-by-element reference on
 * random shapes, slices, swaps and casts; the disk executor also against
 * its read counters (a row shard reads exactly its bytes, in one pread).
 * Every bad input is checked with its code and the exact message.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <setjmp.h>
#include <cmocka.h>

#include "common/alloc.h"
#include "format/format.h"
#include "format/view.h"
#include "tcast/dtype.h"
#include "tcast/errors.h"
#include "tlib.h"
#include "vcase.h"

#define MSG 1024

/* ---------------------------------------------------------------- tables */

struct tdesc {
	const char *name;
	int dtype;
	uint32_t ndim;
	uint64_t shape[4];
};

static void make_table(struct tc__table *t, const struct tdesc *d, uint32_t n)
{
	tc__table_init(t);
	t->tensors = calloc(n, sizeof(*t->tensors));
	assert_non_null(t->tensors);
	for (uint32_t i = 0; i < n; i++) {
		struct tc__tensor *x = &t->tensors[i];

		x->name = tc__strdup(d[i].name);
		x->dtype = (uint8_t)d[i].dtype;
		x->ndim = (uint8_t)d[i].ndim;
		memcpy(x->shape, d[i].shape, sizeof(d[i].shape));
		assert_int_equal(tc__tensor_nbytes(x->dtype, x->ndim, x->shape,
						   &x->nbytes),
				 0);
		t->ntensors = i + 1;
	}
	assert_int_equal(tc__table_layout(t), 0);
}

static const struct tdesc base_tensors[] = {
	{ "w", TC_DTYPE_BF16, 2, { 8, 6 } },
	{ "b", TC_DTYPE_F32, 1, { 8 } },
	{ "i", TC_DTYPE_I32, 2, { 4, 4 } },
	{ "f8", TC_DTYPE_F8_E4M3, 1, { 16 } },
	{ "x", TC_DTYPE_F16, 3, { 3, 4, 5 } },
};

static void base_table(struct tc__table *t)
{
	make_table(t, base_tensors,
		   sizeof(base_tensors) / sizeof(base_tensors[0]));
}

/* Plan `json` against the base table; returns the code, message in err. */
static int plan_json(const char *json, struct tc__view_plan *p, char *err)
{
	struct tc__table t;
	struct tc__view_spec s;
	int ret;

	base_table(&t);
	err[0] = 0;
	ret = tc__view_spec_parse(json, strlen(json), &s, err, MSG);
	if (ret == 0) {
		ret = tc__view_plan(&t, "tc1:0123", &s, p, err, MSG);
		tc__view_spec_release(&s);
	}
	tc__table_release(&t);
	return ret;
}

/* ------------------------------------------------------------ planning */

static void test_view__row_shard_is_one_run(void **state)
{
	struct tc__view_plan p;
	char err[MSG];

	assert_int_equal(
		plan_json("{\"names\":[\"w\"],\"slices\":{\"w\":[[0,2,6]]}}",
			  &p, err),
		0);
	assert_int_equal(p.out.ntensors, 1);
	assert_string_equal(p.out.tensors[0].name, "w");
	assert_int_equal(p.out.tensors[0].shape[0], 4);
	assert_int_equal(p.out.tensors[0].shape[1], 6);
	assert_int_equal(p.t[0].nruns, 1);
	assert_int_equal(p.t[0].runs[0].count, 1);
	assert_int_equal(p.t[0].runs[0].len, 4 * 6 * 2);
	assert_int_equal(p.t[0].runs[0].src, 0 + 2 * 6 * 2); /* w at 0 */
	assert_int_equal(p.t[0].flags, 0);
	assert_int_equal(p.bytes_needed, 48);
	assert_int_equal(p.out.total_bytes, 48);
	assert_true(!strncmp(p.id, "view:", 5));
	tc__view_plan_release(&p);
}

static void test_view__column_shard_is_rows_times_run(void **state)
{
	struct tc__view_plan p;
	char err[MSG];

	assert_int_equal(plan_json("{\"slices\":{\"w\":[[1,2,5]]}}", &p, err),
			 0);
	assert_int_equal(p.out.ntensors, 5); /* no names: every tensor */
	assert_int_equal(p.t[0].nruns, 1);
	assert_int_equal(p.t[0].runs[0].count, 8);
	assert_int_equal(p.t[0].runs[0].len, 3 * 2);
	assert_int_equal(p.t[0].runs[0].stride, 6 * 2);
	assert_int_equal(p.t[0].runs[0].src, 2 * 2);
	/* Untouched tensors: one run each, offsets aligned in the view. */
	for (uint32_t i = 1; i < p.out.ntensors; i++) {
		assert_int_equal(p.t[i].nruns, 1);
		assert_int_equal(p.out.tensors[i].offset % TC_ALIGN, 0);
	}
	/* 3-D: a slice on the middle dim is one run per outer index. */
	tc__view_plan_release(&p);
	assert_int_equal(plan_json("{\"names\":[\"x\"],"
				   "\"slices\":{\"x\":[[1,1,3]]}}",
				   &p, err),
			 0);
	assert_int_equal(p.t[0].nruns, 1); /* count 3, stride 4*5*2 */
	assert_int_equal(p.t[0].runs[0].count, 3);
	assert_int_equal(p.t[0].runs[0].len, 2 * 5 * 2);
	assert_int_equal(p.t[0].runs[0].stride, 4 * 5 * 2);
	tc__view_plan_release(&p);
	/* Both last dims sliced: the first dim is enumerated. */
	assert_int_equal(plan_json("{\"names\":[\"x\"],"
				   "\"slices\":{\"x\":[[1,1,3],[2,0,2]]}}",
				   &p, err),
			 0);
	assert_int_equal(p.t[0].nruns, 3);
	assert_int_equal(p.t[0].runs[1].count, 2);
	assert_int_equal(p.t[0].runs[1].len, 2 * 2);
	assert_int_equal(tc__view_tplan_pieces(&p.t[0]), 6);
	assert_int_equal(p.t[0].gather_bytes, 3 * 2 * 2 * 2);
	tc__view_plan_release(&p);
}

static void test_view__transpose_cast_flags(void **state)
{
	struct tc__view_plan p;
	char err[MSG];

	assert_int_equal(plan_json("{\"names\":[\"w\",\"b\"],"
				   "\"transpose\":[0,1],\"dtype\":\"F32\"}",
				   &p, err),
			 0);
	/* The transpose for all skips rank-1 tensors. */
	assert_int_equal(p.out.tensors[0].shape[0], 6);
	assert_int_equal(p.out.tensors[0].shape[1], 8);
	assert_int_equal(p.out.tensors[0].dtype, TC_DTYPE_F32);
	assert_int_equal(p.out.tensors[0].nbytes, 8 * 6 * 4);
	assert_int_equal(p.t[0].flags, TC__VIEW_F_TRANSPOSE | TC__VIEW_F_CAST);
	assert_int_equal(p.t[1].flags, 0); /* F32 -> F32 is the identity */
	assert_int_equal(p.out.tensors[1].shape[0], 8);
	tc__view_plan_release(&p);
}

/* Equivalent specs name the same view; different ones do not. */
static void test_view__ids(void **state)
{
	const char *same[] = {
		"{\"names\":[\"w\"],\"slices\":{\"w\":[[0,2,6]]}}",
		"{\"names\":[\"w\"],\"slices\":{\"w\":[[0,2,6],[1,0,6]]}}",
		"[{\"names\":[\"w\"],\"slices\":{\"w\":[[0,1,7]]}},"
		"{\"slices\":{\"w\":[[0,1,5]]}}]",
		"[{\"names\":[\"w\"],\"transpose\":[0,1]},"
		"{\"slices\":{\"w\":[[1,2,6]]},\"transpose\":[0,1]}]",
		"{\"names\":[\"w\"],\"slices\":{\"w\":[[0,2,6]]},"
		"\"dtype\":\"BF16\"}",
		"[{\"names\":[\"w\"],\"slices\":{\"w\":[[0,2,null]]}},"
		"{\"slices\":{\"w\":[[0,0,4]]}}]",
	};
	const char *other[] = {
		"{\"names\":[\"w\"],\"slices\":{\"w\":[[0,2,5]]}}",
		"{\"names\":[\"w\"],\"slices\":{\"w\":[[0,2,6]]},"
		"\"dtype\":\"F32\"}",
		"{\"names\":[\"w\"],\"slices\":{\"w\":[[0,2,6]]},"
		"\"transpose\":[1,0]}",
		"{\"names\":[\"w\",\"b\"],\"slices\":{\"w\":[[0,2,6]]}}",
	};
	struct tc__view_plan p;
	char err[MSG], id[TC_VIEW_ID_LEN + 1];

	assert_int_equal(plan_json(same[0], &p, err), 0);
	strcpy(id, p.id);
	tc__view_plan_release(&p);
	for (size_t i = 1; i < sizeof(same) / sizeof(same[0]); i++) {
		assert_int_equal(plan_json(same[i], &p, err), 0);
		assert_string_equal(p.id, id);
		assert_int_equal(p.out.tensors[0].shape[0], 4);
		tc__view_plan_release(&p);
	}
	for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++) {
		assert_int_equal(plan_json(other[i], &p, err), 0);
		assert_string_not_equal(p.id, id);
		tc__view_plan_release(&p);
	}
	/* The artifact id enters the view id. */
	{
		struct tc__table t;
		struct tc__view_spec s;

		base_table(&t);
		assert_int_equal(tc__view_spec_parse(same[0], strlen(same[0]),
						     &s, err, MSG),
				 0);
		assert_int_equal(
			tc__view_plan(&t, "tc1:other", &s, &p, err, MSG), 0);
		assert_string_not_equal(p.id, id);
		tc__view_plan_release(&p);
		tc__view_spec_release(&s);
		tc__table_release(&t);
	}
}

/* --------------------------------------------------------------- bad input */

struct bad {
	const char *json;
	int code;
	const char *msg;
};

static void test_view__bad_input(void **state)
{
	static const struct bad cases[] = {
		{ "{\"names\":[\"nope\"]}", TC_ENOTFOUND,
		  "view: no tensor 'nope' in the artifact" },
		{ "{\"slices\":{\"nope\":[[0,0,1]]}}", TC_ENOTFOUND,
		  "view: no tensor 'nope' in the artifact" },
		{ "{\"slices\":{\"w\":[[2,0,1]]}}", TC_EINVAL,
		  "view: tensor 'w': dim 2 out of range (rank 2)" },
		{ "{\"slices\":{\"w\":[[0,0,9]]}}", TC_EINVAL,
		  "view: tensor 'w': dim 0: slice [0, 9) outside the shape "
		  "(size 8)" },
		{ "{\"slices\":{\"w\":[[1,3,3]]}}", TC_EINVAL,
		  "view: tensor 'w': dim 1: empty slice [3, 3)" },
		{ "{\"slices\":{\"w\":[[1,5,2]]}}", TC_EINVAL,
		  "view: tensor 'w': dim 1: reversed slice [5, 2)" },
		{ "{\"slices\":{\"w\":[[1,0,2],[1,2,4]]}}", TC_EINVAL,
		  "view: tensor 'w': dim 1 sliced twice" },
		{ "{\"names\":[\"i\"],\"dtype\":\"BF16\"}", TC_EBADDTYPE,
		  "view: tensor 'i': cannot cast I32 to BF16 (casts are among "
		  "F16, BF16 and F32, or to the same dtype)" },
		{ "{\"dtype\":{\"f8\":\"BF16\"}}", TC_EBADDTYPE,
		  "view: tensor 'f8': cannot cast F8_E4M3 to BF16 (casts are "
		  "among F16, BF16 and F32, or to the same dtype)" },
		{ "{\"dtype\":{\"w\":\"F64\"}}", TC_EBADDTYPE,
		  "view: tensor 'w': cannot cast BF16 to F64 (casts are among "
		  "F16, BF16 and F32, or to the same dtype)" },
		{ "{\"transpose\":{\"b\":[0,1]}}", TC_EINVAL,
		  "view: tensor 'b': transpose dim 1 out of range (rank 1)" },
		{ "{\"transpose\":{\"w\":[1,1]}}", TC_EINVAL,
		  "view: tensor 'w': transpose of dim 1 with itself" },
		{ "{\"names\":[\"w\",\"w\"]}", TC_EINVAL,
		  "view: tensor 'w' named twice" },
		{ "{\"names\":[\"w\"],\"slices\":{\"b\":[[0,0,1]]}}", TC_EINVAL,
		  "view: tensor 'b' is sliced but not in names" },
		{ "[{\"names\":[\"w\"],\"slices\":{\"w\":[[0,0,4]]}},"
		  "{\"slices\":{\"w\":[[0,0,5]]}}]",
		  TC_EINVAL,
		  "view: tensor 'w': dim 0: slice [0, 5) outside the shape "
		  "(size 4) (view level 2)" },
		{ "[{\"names\":[\"w\"]},{\"names\":[\"b\"]}]", TC_ENOTFOUND,
		  "view: no tensor 'b' in the view (view level 2)" },
		{ "{\"slices\":{\"w\":[[0,-1,2]]}}", TC_EINVAL,
		  "view spec level 0: slices['w'][0] must be [dim, start, "
		  "stop] with non-negative integers" },
		{ "{\"slice\":{}}", TC_EINVAL,
		  "view spec level 0: unknown field 'slice' (names, slices, "
		  "transpose, dtype)" },
		{ "{\"dtype\":\"FP32\"}", TC_EINVAL,
		  "view spec level 0: dtype must be a dtype name (\"F32\") or "
		  "{name: dtype name}" },
		{ "{\"names\":[1]}", TC_EINVAL,
		  "view spec level 0: names[0] is not a string" },
		{ "{", TC_EINVAL,
		  "view spec: invalid JSON at 1: string or '}' expected near "
		  "end of file" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct tc__view_plan p;
		char err[MSG];
		int ret = plan_json(cases[i].json, &p, err);

		if (ret != cases[i].code || strcmp(err, cases[i].msg))
			fail_msg("case %zu %s: got %d '%s', want %d '%s'", i,
				 cases[i].json, ret, err, cases[i].code,
				 cases[i].msg);
		/* Nothing left half-made. */
		assert_null(p.t);
		assert_int_equal(p.out.ntensors, 0);
	}
}

static void test_view__sub_byte(void **state)
{
	static const struct tdesc d[] = { { "q", TC_DTYPE_F4, 2, { 4, 8 } } };
	struct tc__table t;
	struct tc__view_spec s;
	struct tc__view_plan p;
	char err[MSG];

	make_table(&t, d, 1);
	assert_int_equal(tc__view_spec_init(&s), 0);
	assert_int_equal(tc__view_spec_slice(&s, "q", 1, 1, 4), 0);
	assert_int_equal(tc__view_plan(&t, "", &s, &p, err, MSG), TC_EBADDTYPE);
	assert_string_equal(err, "view: tensor 'q': dim 1: slice [1, 4) of "
				 "F4 does not fall on bytes");
	tc__view_spec_release(&s);
	/* Whole rows of 8 F4 are 4 bytes: fine. */
	assert_int_equal(tc__view_spec_init(&s), 0);
	assert_int_equal(tc__view_spec_slice(&s, "q", 0, 1, 3), 0);
	assert_int_equal(tc__view_plan(&t, "", &s, &p, err, MSG), 0);
	assert_int_equal(p.t[0].runs[0].src, 4);
	assert_int_equal(p.t[0].runs[0].len, 8);
	tc__view_plan_release(&p);
	tc__view_spec_release(&s);
	tc__table_release(&t);
}

/* ------------------------------------------------------------------ casts */

static uint16_t to16(int dt, float f)
{
	uint16_t h;

	tc__view_cast(TC_DTYPE_F32, dt, &f, &h, 1);
	return h;
}

static float from16(int dt, uint16_t h)
{
	float f;

	tc__view_cast(dt, TC_DTYPE_F32, &h, &f, 1);
	return f;
}

static void test_view__casts(void **state)
{
	/* bf16: round to nearest even on the dropped 16 bits. */
	assert_int_equal(to16(TC_DTYPE_BF16, 1.0f), 0x3f80);
	assert_int_equal(to16(TC_DTYPE_BF16, 1.0f + 0x1p-8f), 0x3f80);
	assert_int_equal(to16(TC_DTYPE_BF16, 1.0f + 0x1p-8f + 0x1p-16f),
			 0x3f81);
	assert_int_equal(to16(TC_DTYPE_BF16, 1.0f + 3 * 0x1p-8f), 0x3f82);
	assert_int_equal(to16(TC_DTYPE_BF16, INFINITY), 0x7f80);
	assert_true(isnan(from16(TC_DTYPE_BF16, to16(TC_DTYPE_BF16, NAN))));
	/* f16: normal, ties, overflow, subnormals. */
	assert_int_equal(to16(TC_DTYPE_F16, 1.0f), 0x3c00);
	assert_int_equal(to16(TC_DTYPE_F16, -2.0f), 0xc000);
	assert_int_equal(to16(TC_DTYPE_F16, 65504.0f), 0x7bff);
	assert_int_equal(to16(TC_DTYPE_F16, 65519.0f), 0x7bff);
	assert_int_equal(to16(TC_DTYPE_F16, 65520.0f), 0x7c00);
	assert_int_equal(to16(TC_DTYPE_F16, 0x1p-24f), 0x0001);
	assert_int_equal(to16(TC_DTYPE_F16, 0x1p-25f), 0x0000); /* tie: even */
	assert_int_equal(to16(TC_DTYPE_F16, 3 * 0x1p-25f), 0x0002);
	assert_int_equal(to16(TC_DTYPE_F16, 0x1p-14f), 0x0400);
	assert_int_equal(to16(TC_DTYPE_F16, 1.0f + 0x1p-11f), 0x3c00);
	assert_int_equal(to16(TC_DTYPE_F16, 1.0f + 3 * 0x1p-11f), 0x3c02);
	assert_true(isnan(from16(TC_DTYPE_F16, to16(TC_DTYPE_F16, NAN))));
	/* Every f16 survives f16 -> f32 -> f16, and bf16 likewise. */
	for (uint32_t h = 0; h < 0x10000; h++) {
		float f = from16(TC_DTYPE_F16, (uint16_t)h);

		if (!isnan(f))
			assert_int_equal(to16(TC_DTYPE_F16, f), h);
		f = from16(TC_DTYPE_BF16, (uint16_t)h);
		if (!isnan(f))
			assert_int_equal(to16(TC_DTYPE_BF16, f), h);
	}
	/* bf16 -> f16 is one rounding: 1 + 2^-7 + 2^-10... */
	{
		uint16_t b = to16(TC_DTYPE_BF16, 1.0f + 0x1p-7f), h;

		tc__view_cast(TC_DTYPE_BF16, TC_DTYPE_F16, &b, &h, 1);
		assert_int_equal(h, to16(TC_DTYPE_F16, 1.0f + 0x1p-7f));
		assert_int_equal(tc__view_cast_ok(TC_DTYPE_F16, TC_DTYPE_BF16),
				 1);
		assert_int_equal(tc__view_cast_ok(TC_DTYPE_I8, TC_DTYPE_I8), 1);
		assert_int_equal(tc__view_cast_ok(TC_DTYPE_I8, TC_DTYPE_F32),
				 0);
	}
}

/* -------------------------------------------------- executors vs reference */

static struct t_rng rng;

static uint64_t rnd(uint64_t n)
{
	return t_rng_below(&rng, n);
}

static char *write_file(const char *dir, const struct tc__table *t,
			const uint8_t *data)
{
	char *path = malloc(512);
	char err[MSG];

	assert_non_null(path);
	snprintf(path, 512, "%s/m.safetensors", dir);
	if (tc__st_write_path(path, t, data, TC_ST_WRITE_FORCE, err, MSG))
		fail_msg("%s", err);
	return path;
}

static void test_view__executors_match_reference(void **state)
{
	char *dir = t_tmpdir();

	t_rng_init(&rng, 7);
	for (int iter = 0; iter < 300; iter++) {
		struct t_vcase c;
		struct tdesc d[2] = {
			{ "pad", TC_DTYPE_U8, 1, { 1 + rnd(300) } },
			{ "t", 0, 0, { 0 } },
		};
		struct tc__table t, *dt;
		struct tc__view_spec s;
		struct tc__view_plan p;
		struct tc__source *src;
		struct tc__view_io hio = { 0 }, dio = { 0 };
		uint8_t *data, *want, *got, *got2;
		char err[MSG], *path;
		uint64_t nout;

		t_vcase_random(&rng, &c);
		d[1].dtype = c.src_dt;
		d[1].ndim = c.ndim;
		memcpy(d[1].shape, c.shape, sizeof(c.shape));
		make_table(&t, d, 2);
		data = malloc(t.total_bytes);
		assert_non_null(data);
		for (uint64_t k = 0; k < t.total_bytes; k++)
			data[k] = (uint8_t)random();
		/* Keep floats finite so NaN payloads do not matter. */
		if (c.src_dt != TC_DTYPE_I8 && c.src_dt != TC_DTYPE_I64) {
			size_t es = tc_dtype_bits(c.src_dt) / 8;

			for (uint64_t k = 0; k < t.tensors[1].nbytes / es;
			     k++) {
				float f = (float)((int)rnd(20001) - 10000) /
					  (float)(1 + rnd(97));

				tc__view_cast(
					TC_DTYPE_F32, c.src_dt, &f,
					data + t.tensors[1].offset + k * es, 1);
			}
		}
		assert_int_equal(tc__view_spec_init(&s), 0);
		assert_int_equal(tc__view_spec_select(&s, "t"), 0);
		for (uint32_t k = 0; k < c.ndim; k++)
			if (c.sliced[k])
				assert_int_equal(tc__view_spec_slice(&s, "t", k,
								     c.start[k],
								     c.stop[k]),
						 0);
		if (c.swap)
			assert_int_equal(tc__view_spec_transpose(&s, "t", c.d0,
								 c.d1),
					 0);
		if (c.dst_dt != c.src_dt)
			assert_int_equal(tc__view_spec_cast(&s, NULL, c.dst_dt),
					 0);
		if (tc__view_plan(&t, "", &s, &p, err, MSG))
			fail_msg("iter %d: %s", iter, err);
		nout = p.out.tensors[0].nbytes;
		want = calloc(1, nout + 1);
		got = calloc(1, nout + 1);
		got2 = calloc(1, nout + 1);
		t_vcase_reference(&c, data + t.tensors[1].offset, want);
		assert_int_equal(tc__view_exec_host(&p, 0, data, t.total_bytes,
						    got, nout, &hio, err, MSG),
				 0);
		assert_memory_equal(got, want, nout);
		/* From a file: the same bytes, and no more read than the
		 * runs cover plus the gaps (under a page each) between. */
		path = write_file(dir, &t, data);
		assert_int_equal(tc__source_open(path, &src, err, MSG), 0);
		dt = &src->table;
		assert_int_equal(tc__table_layout(dt), 0);
		tc__view_plan_release(&p);
		assert_int_equal(tc__view_plan(dt, "", &s, &p, err, MSG), 0);
		assert_int_equal(tc__view_exec_source(&p, 0, src, got2, nout,
						      &dio, err, MSG),
				 0);
		assert_memory_equal(got2, want, nout);
		assert_true(dio.bytes_read >= p.bytes_needed);
		assert_true(dio.bytes_read <=
			    p.bytes_needed +
				    4096 * tc__view_tplan_pieces(&p.t[0]));
		assert_int_equal(hio.bytes_read, p.bytes_needed);
		tc__source_free(src);
		unlink(path);
		free(path);
		free(want);
		free(got);
		free(got2);
		free(data);
		tc__view_plan_release(&p);
		tc__view_spec_release(&s);
		tc__table_release(&t);
	}
	t_rmtree(dir);
	free(dir);
}

/* A 1/8 row shard of a big tensor reads exactly its bytes, in one pread
 * straight into the destination. */
static void test_view__disk_row_shard_reads_only_its_bytes(void **state)
{
	static const struct tdesc d[] = {
		{ "emb", TC_DTYPE_BF16, 2, { 4096, 2048 } },
		{ "w", TC_DTYPE_BF16, 2, { 256, 16384 } },
	};
	struct tc__table t;
	struct tc__view_spec s;
	struct tc__view_plan p;
	struct tc__source *src;
	struct tc__view_io io = { 0 };
	char err[MSG], *dir = t_tmpdir(), *path;
	uint8_t *data, *got;

	make_table(&t, d, 2);
	data = malloc(t.total_bytes);
	for (uint64_t k = 0; k < t.total_bytes; k++)
		data[k] = (uint8_t)(k * 2654435761u >> 13);
	path = write_file(dir, &t, data);
	assert_int_equal(tc__source_open(path, &src, err, MSG), 0);
	assert_int_equal(tc__table_layout(&src->table), 0);
	assert_int_equal(tc__view_spec_init(&s), 0);
	assert_int_equal(tc__view_spec_slice(&s, "emb", 0, 512, 1024), 0);
	assert_int_equal(tc__view_spec_slice(&s, "w", 0, 32, 64), 0);
	assert_int_equal(tc__view_plan(&src->table, "", &s, &p, err, MSG), 0);
	got = malloc(p.out.total_bytes);
	for (uint32_t i = 0; i < 2; i++)
		assert_int_equal(
			tc__view_exec_source(
				&p, i, src, got + p.out.tensors[i].offset,
				p.out.tensors[i].nbytes, &io, err, MSG),
			0);
	assert_int_equal(io.bytes_read, (512 * 4096) + (32 * 32768));
	assert_int_equal(io.bytes_read * 8, p.artifact_bytes);
	assert_int_equal(io.reads, 2);
	assert_memory_equal(got, data + t.tensors[0].offset + 512 * 4096,
			    512 * 4096);
	assert_memory_equal(got + p.out.tensors[1].offset,
			    data + t.tensors[1].offset + 32 * 32768,
			    32 * 32768);
	/* A column shard: rows x run.  Rows of 4 KiB leave gaps under a
	 * page between pieces: read through, in windows of 8 MiB. */
	tc__view_plan_release(&p);
	tc__view_spec_release(&s);
	assert_int_equal(tc__view_spec_init(&s), 0);
	assert_int_equal(tc__view_spec_slice(&s, "emb", 1, 256, 512), 0);
	assert_int_equal(tc__view_spec_slice(&s, "w", 1, 2048, 4096), 0);
	assert_int_equal(tc__view_plan(&src->table, "", &s, &p, err, MSG), 0);
	assert_int_equal(p.t[0].nruns, 1);
	assert_int_equal(p.t[0].runs[0].count, 4096);
	memset(&io, 0, sizeof(io));
	assert_int_equal(tc__view_exec_source(&p, 0, src, got,
					      p.out.tensors[0].nbytes, &io, err,
					      MSG),
			 0);
	for (uint64_t r = 0; r < 4096; r++)
		assert_memory_equal(got + r * 512,
				    data + t.tensors[0].offset + r * 4096 + 512,
				    512);
	assert_int_equal(io.reads, 2);
	assert_int_equal(io.bytes_read, 2 * (2047 * 4096 + 512));
	/* Rows of 32 KiB: the 28 KiB gaps are skipped, one pread a row. */
	memset(&io, 0, sizeof(io));
	assert_int_equal(tc__view_exec_source(&p, 1, src, got,
					      p.out.tensors[1].nbytes, &io, err,
					      MSG),
			 0);
	for (uint64_t r = 0; r < 256; r++)
		assert_memory_equal(
			got + r * 4096,
			data + t.tensors[1].offset + r * 32768 + 4096, 4096);
	assert_int_equal(io.reads, 256);
	assert_int_equal(io.bytes_read, 256 * 4096);
	assert_int_equal(io.bytes_read * 8, t.tensors[1].nbytes);
	/* Bad destination: refused before anything is read. */
	assert_int_equal(tc__view_exec_source(&p, 0, src, got, 10, &io, err,
					      MSG),
			 TC_EINVAL);
	assert_string_equal(err, "view: tensor 'emb': destination holds 10 "
				 "bytes, the view needs 2097152");
	assert_int_equal(tc__view_exec_host(&p, 0, data, 100, got,
					    p.out.tensors[0].nbytes, NULL, err,
					    MSG),
			 TC_EINVAL);
	assert_string_equal(err, "view: tensor 'emb': run 0 ends past the "
				 "source (100 bytes)");
	tc__view_plan_release(&p);
	tc__view_spec_release(&s);
	tc__source_free(src);
	tc__table_release(&t);
	free(got);
	free(data);
	free(path);
	t_rmtree(dir);
	free(dir);
}

/* Allocation failures anywhere in parse + plan leave nothing behind. */
static void test_view__alloc_failures(void **state)
{
	const char *json = "[{\"names\":[\"w\",\"x\"],"
			   "\"slices\":{\"x\":[[1,1,3],[2,0,2]]}},"
			   "{\"transpose\":[0,1],\"dtype\":\"F32\"}]";
	struct tc__table t;

	base_table(&t);
	for (long n = 1;; n++) {
		struct tc__view_spec s;
		struct tc__view_plan p;
		char err[MSG];
		int ret;

		tc__alloc_fail_after(n);
		ret = tc__view_spec_parse(json, strlen(json), &s, err, MSG);
		if (ret == 0) {
			ret = tc__view_plan(&t, "", &s, &p, err, MSG);
			tc__view_spec_release(&s);
			if (ret == 0)
				tc__view_plan_release(&p);
		}
		tc__alloc_fail_after(0);
		if (ret == 0)
			break;
		assert_true(ret == -ENOMEM);
		assert_true(n < 1000);
	}
	tc__table_release(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_view__row_shard_is_one_run),
		cmocka_unit_test(test_view__column_shard_is_rows_times_run),
		cmocka_unit_test(test_view__transpose_cast_flags),
		cmocka_unit_test(test_view__ids),
		cmocka_unit_test(test_view__bad_input),
		cmocka_unit_test(test_view__sub_byte),
		cmocka_unit_test(test_view__casts),
		cmocka_unit_test(test_view__executors_match_reference),
		cmocka_unit_test(
			test_view__disk_row_shard_reads_only_its_bytes),
		cmocka_unit_test(test_view__alloc_failures),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
