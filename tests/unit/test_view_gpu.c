/*
 * test_view_gpu.c - views realized onto a GPU (src/client/view_gpu.c and
 * the strided copies and view kernel of src/gpu), on the fake driver.
 *
 * Random shapes, dtypes, slices, swaps and casts are realized from host
 * memory and from device memory, with the view kernel and with the host
 * transform, and each result is read back and compared with an
 * element-by-element reference (the same one test_view.c checks the host
 * executor with).  The fake runs the kernel's semantics on the host; the
 * PTX itself runs in tests/gpu/test_views_gpu.py on a GPU.  Failures: a
 * copy the driver refuses, a kernel that does not load (auto falls back to
 * the host and says why), a destination too small.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "client/view_gpu.h"
#include "common/alloc.h"
#include "format/format.h"
#include "format/view.h"
#include "gpu/vmm.h"
#include "tcast/dtype.h"
#include "tcast/errors.h"
#include "tcast/view.h"
#include "tlib.h"
#include "vcase.h"

#define MSG 1024

static struct t_rng rng;

static uint64_t rnd(uint64_t n)
{
	return t_rng_below(&rng, n);
}

/* A table of "pad" (so the tensor does not start at 0) and "t". */
static void make_table(struct tc__table *t, const struct t_vcase *c)
{
	tc__table_init(t);
	t->tensors = calloc(2, sizeof(*t->tensors));
	assert_non_null(t->tensors);
	t->tensors[0].name = tc__strdup("pad");
	t->tensors[0].dtype = TC_DTYPE_U8;
	t->tensors[0].ndim = 1;
	t->tensors[0].shape[0] = 1 + rnd(300);
	t->tensors[1].name = tc__strdup("t");
	t->tensors[1].dtype = (uint8_t)c->src_dt;
	t->tensors[1].ndim = (uint8_t)c->ndim;
	memcpy(t->tensors[1].shape, c->shape, sizeof(c->shape));
	t->ntensors = 2;
	for (int i = 0; i < 2; i++)
		assert_int_equal(tc__tensor_nbytes(t->tensors[i].dtype,
						   t->tensors[i].ndim,
						   t->tensors[i].shape,
						   &t->tensors[i].nbytes),
				 0);
	assert_int_equal(tc__table_layout(t), 0);
}

static void fill(const struct tc__table *t, const struct t_vcase *c,
		 uint8_t *data)
{
	for (uint64_t k = 0; k < t->total_bytes; k++)
		data[k] = (uint8_t)rnd(256);
	if (c->src_dt != TC_DTYPE_I8 && c->src_dt != TC_DTYPE_I64) {
		size_t es = tc_dtype_bits(c->src_dt) / 8;

		for (uint64_t k = 0; k < t->tensors[1].nbytes / es; k++) {
			float f = (float)((int)rnd(20001) - 10000) /
				  (float)(1 + rnd(97));

			tc__view_cast(TC_DTYPE_F32, c->src_dt, &f,
				      data + t->tensors[1].offset + k * es, 1);
		}
	}
}

static void make_plan(const struct tc__table *t, const struct t_vcase *c,
		      struct tc__view_spec *s, struct tc__view_plan *p)
{
	char err[MSG];

	assert_int_equal(tc__view_spec_init(s), 0);
	assert_int_equal(tc__view_spec_select(s, "t"), 0);
	for (uint32_t k = 0; k < c->ndim; k++)
		if (c->sliced[k])
			assert_int_equal(tc__view_spec_slice(s, "t", k,
							     c->start[k],
							     c->stop[k]),
					 0);
	if (c->swap)
		assert_int_equal(tc__view_spec_transpose(s, "t", c->d0, c->d1),
				 0);
	if (c->dst_dt != c->src_dt)
		assert_int_equal(tc__view_spec_cast(s, NULL, c->dst_dt), 0);
	if (tc__view_plan(t, "", s, p, err, MSG))
		fail_msg("%s", err);
}

/* Realize tensor 0 of p onto GPU 0 and read it back. */
static int realize(const struct tc__view_plan *p, const uint8_t *data,
		   uint64_t len, const struct tc__gpu_mem *src_dev,
		   uint32_t mode, uint8_t *got, struct tc__view_gpu_ctx *out,
		   char *err)
{
	struct tc__view_gpu_ctx x;
	struct tc__gpu_stream *s;
	struct tc__gpu_mem dst;
	struct tc__view_io io = { 0 };
	uint64_t n = p->out.tensors[0].nbytes;
	int ret;

	tc__gpu_mem_init(&dst);
	assert_int_equal(tc__gpu_alloc(0, n ? n : 1, 0, &dst, err, MSG), 0);
	assert_int_equal(tc__gpu_stream_create(0, &s, err, MSG), 0);
	tc__view_gpu_ctx_init(&x, 0, s, mode);
	ret = tc__view_exec_gpu(p, 0, src_dev ? NULL : data,
				src_dev ? src_dev->dptr : 0, len, NULL,
				dst.dptr, n, &x, &io, err, MSG);
	assert_int_equal(tc__view_gpu_ctx_release(&x, NULL, 0), 0);
	if (ret == 0) {
		assert_int_equal(io.bytes_read, p->bytes_needed);
		assert_int_equal(
			tc__gpu_mem_read(&dst, 0, got, n, NULL, err, MSG), 0);
	}
	if (out)
		*out = x;
	tc__gpu_stream_free(s);
	tc__gpu_release(&dst);
	return ret;
}

static void test_view_gpu__matches_reference(void **state)
{
	char err[MSG];

	for (int iter = 0; iter < 200; iter++) {
		struct t_vcase c;
		struct tc__table t;
		struct tc__view_spec s;
		struct tc__view_plan p;
		struct tc__gpu_mem src;
		uint8_t *data, *want, *got;
		uint64_t n;

		t_vcase_random(&rng, &c);
		make_table(&t, &c);
		data = malloc(t.total_bytes);
		assert_non_null(data);
		fill(&t, &c, data);
		make_plan(&t, &c, &s, &p);
		n = p.out.tensors[0].nbytes;
		want = calloc(1, n + 1);
		got = calloc(1, n + 1);
		t_vcase_reference(&c, data + t.tensors[1].offset, want);
		tc__gpu_mem_init(&src);
		assert_int_equal(
			tc__gpu_alloc(0, t.total_bytes, 0, &src, err, MSG), 0);
		assert_int_equal(tc__gpu_mem_write(&src, 0, data, t.total_bytes,
						   NULL, err, MSG),
				 0);
		for (uint32_t mode = TC_VIEW_GPU_AUTO; mode <= TC_VIEW_GPU_HOST;
		     mode++) {
			struct tc__view_gpu_ctx x;

			memset(got, 0xa5, n);
			if (realize(&p, data, t.total_bytes, NULL, mode, got,
				    &x, err))
				fail_msg("iter %d mode %u: %s", iter, mode,
					 err);
			assert_memory_equal(got, want, n);
			if (p.t[0].flags)
				assert_int_equal(mode == TC_VIEW_GPU_HOST ?
							 x.host_tensors :
							 x.kernel_tensors,
						 1);
			/* From a GPU replica: copies on the device; a
			 * transform needs the kernel. */
			memset(got, 0xa5, n);
			int ret = realize(&p, NULL, t.total_bytes, &src, mode,
					  got, NULL, err);

			if (p.t[0].flags && mode == TC_VIEW_GPU_HOST) {
				assert_int_equal(ret, TC_ENOTSUP);
				continue;
			}
			if (ret)
				fail_msg("iter %d mode %u (device): %s", iter,
					 mode, err);
			assert_memory_equal(got, want, n);
		}
		tc__gpu_release(&src);
		free(want);
		free(got);
		free(data);
		tc__view_plan_release(&p);
		tc__view_spec_release(&s);
		tc__table_release(&t);
	}
}

/* A column shard of a matrix is one run of `rows` pieces: one 2D copy. */
static void test_view_gpu__column_shard_is_one_2d_copy(void **state)
{
	struct t_vcase c = { .ndim = 2,
			     .shape = { 64, 96 },
			     .start = { 0, 24 },
			     .stop = { 64, 36 },
			     .sliced = { 0, 1 },
			     .src_dt = TC_DTYPE_BF16,
			     .dst_dt = TC_DTYPE_BF16 };
	struct tc__table t;
	struct tc__view_spec s;
	struct tc__view_plan p;
	uint8_t *data, want[64 * 12 * 2], got[64 * 12 * 2];
	char err[MSG];

	make_table(&t, &c);
	data = malloc(t.total_bytes);
	assert_non_null(data);
	fill(&t, &c, data);
	make_plan(&t, &c, &s, &p);
	assert_int_equal(p.t[0].nruns, 1);
	assert_int_equal(p.t[0].runs[0].count, 64);
	t_vcase_reference(&c, data + t.tensors[1].offset, want);
	/* The first 2D copy fails: the error says so, and a second try
	 * (the fault spent) gives the right bytes. */
	setenv("TC_FAKECUDA_FAIL", "cuMemcpy2DAsync:1:CUDA_ERROR_INVALID_VALUE",
	       1);
	assert_int_equal(realize(&p, data, t.total_bytes, NULL, 0, got, NULL,
				 err),
			 TC_ECUDA);
	assert_non_null(
		strstr(err, "cannot copy 64 rows of 24 bytes to GPU 0"));
	assert_non_null(strstr(err, "cuMemcpy2DAsync"));
	assert_int_equal(
		realize(&p, data, t.total_bytes, NULL, 0, got, NULL, err), 0);
	unsetenv("TC_FAKECUDA_FAIL");
	assert_memory_equal(got, want, sizeof(want));
	/* Two copies: the failed one and this one (counted from the
	 * change of the variable). */
	free(data);
	tc__view_plan_release(&p);
	tc__view_spec_release(&s);
	tc__table_release(&t);
}

/* Rows and columns of every expert of a [E, R, C] tensor: E runs of one
 * shape at equal distances, one 3D copy (from host and from device
 * memory); columns alone of every expert of a [E, R, C] tensor whose rows
 * are whole are one run already (one 2D copy). */
static void test_view_gpu__expert_slices_are_one_3d_copy(void **state)
{
	struct t_vcase c = { .ndim = 3,
			     .shape = { 8, 16, 24 },
			     .start = { 0, 4, 6 },
			     .stop = { 8, 12, 18 },
			     .sliced = { 0, 1, 1 },
			     .src_dt = TC_DTYPE_F16,
			     .dst_dt = TC_DTYPE_F16 };
	struct tc__table t;
	struct tc__view_spec s;
	struct tc__view_plan p;
	struct tc__gpu_mem src;
	uint8_t *data, want[8 * 8 * 12 * 2], got[8 * 8 * 12 * 2];
	char err[MSG];

	(void)state;
	make_table(&t, &c);
	data = malloc(t.total_bytes);
	assert_non_null(data);
	fill(&t, &c, data);
	make_plan(&t, &c, &s, &p);
	assert_int_equal(p.t[0].nruns, 8);
	t_vcase_reference(&c, data + t.tensors[1].offset, want);
	tc__gpu_mem_init(&src);
	assert_int_equal(tc__gpu_alloc(0, t.total_bytes, 0, &src, err, MSG), 0);
	assert_int_equal(tc__gpu_mem_write(&src, 0, data, t.total_bytes, NULL,
					   err, MSG),
			 0);
	/* The one 3D copy fails: the error names it and its shape; no 2D
	 * copy was made instead (a fault in the first 2D copy changes
	 * nothing). */
	setenv("TC_FAKECUDA_FAIL", "cuMemcpy3DAsync:1:CUDA_ERROR_INVALID_VALUE",
	       1);
	assert_int_equal(realize(&p, data, t.total_bytes, NULL, 0, got, NULL,
				 err),
			 TC_ECUDA);
	assert_non_null(
		strstr(err, "cannot copy 8 x 8 rows of 24 bytes to GPU 0"));
	assert_non_null(strstr(err, "cuMemcpy3DAsync"));
	setenv("TC_FAKECUDA_FAIL",
	       "cuMemcpy2DAsync:1+:CUDA_ERROR_INVALID_VALUE", 1);
	for (int dev = 0; dev < 2; dev++) {
		memset(got, 0xa5, sizeof(got));
		if (realize(&p, data, t.total_bytes, dev ? &src : NULL, 0, got,
			    NULL, err))
			fail_msg("from %s: %s", dev ? "device" : "host", err);
		assert_memory_equal(got, want, sizeof(want));
	}
	unsetenv("TC_FAKECUDA_FAIL");
	tc__gpu_release(&src);
	free(data);
	tc__view_plan_release(&p);
	tc__view_spec_release(&s);
	tc__table_release(&t);
}

/* The kernel does not load on GPU 1: auto makes the transform on the host
 * and keeps the reason; kernel mode fails with it. */
static void test_view_gpu__kernel_not_loaded(void **state)
{
	struct t_vcase c = { .ndim = 2,
			     .shape = { 5, 7 },
			     .stop = { 5, 7 },
			     .swap = 1,
			     .d0 = 0,
			     .d1 = 1,
			     .src_dt = TC_DTYPE_F32,
			     .dst_dt = TC_DTYPE_BF16 };
	struct tc__table t;
	struct tc__view_spec s;
	struct tc__view_plan p;
	struct tc__view_gpu_ctx x;
	struct tc__gpu_stream *st;
	struct tc__gpu_mem dst;
	uint8_t *data, want[70], got[70];
	char err[MSG];

	make_table(&t, &c);
	data = malloc(t.total_bytes);
	assert_non_null(data);
	fill(&t, &c, data);
	make_plan(&t, &c, &s, &p);
	t_vcase_reference(&c, data + t.tensors[1].offset, want);
	/* Both images refused: the Hopper cubin and the PTX. */
	setenv("TC_FAKECUDA_FAIL", "cuModuleLoadData:1+:218", 1);
	tc__gpu_mem_init(&dst);
	assert_int_equal(tc__gpu_alloc(1, 70, 0, &dst, err, MSG), 0);
	assert_int_equal(tc__gpu_stream_create(1, &st, err, MSG), 0);
	tc__view_gpu_ctx_init(&x, 1, st, TC_VIEW_GPU_AUTO);
	assert_int_equal(tc__view_exec_gpu(&p, 0, data, 0, t.total_bytes, NULL,
					   dst.dptr, 70, &x, NULL, err, MSG),
			 0);
	assert_int_equal(x.host_tensors, 1);
	assert_int_equal(x.kernel_tensors, 0);
	assert_non_null(
		strstr(x.kernel_err, "cannot load the view kernel on GPU 1"));
	assert_int_equal(tc__view_gpu_ctx_release(&x, NULL, 0), 0);
	assert_int_equal(tc__gpu_mem_read(&dst, 0, got, 70, NULL, err, MSG), 0);
	assert_memory_equal(got, want, 70);
	/* Sticky for the process: kernel mode says why. */
	tc__view_gpu_ctx_init(&x, 1, st, TC_VIEW_GPU_KERNEL);
	assert_int_equal(tc__view_exec_gpu(&p, 0, data, 0, t.total_bytes, NULL,
					   dst.dptr, 70, &x, NULL, err, MSG),
			 TC_ENOTSUP);
	assert_non_null(strstr(err, "cannot load the view kernel on GPU 1"));
	/* Too small a destination: nothing queued. */
	assert_int_equal(tc__view_exec_gpu(&p, 0, data, 0, t.total_bytes, NULL,
					   dst.dptr, 69, &x, NULL, err, MSG),
			 TC_EINVAL);
	assert_string_equal(err, "view: tensor 't': destination holds 69 "
				 "bytes, the view needs 70");
	assert_int_equal(tc__view_gpu_ctx_release(&x, NULL, 0), 0);
	unsetenv("TC_FAKECUDA_FAIL");
	tc__gpu_stream_free(st);
	tc__gpu_release(&dst);
	free(data);
	tc__view_plan_release(&p);
	tc__view_spec_release(&s);
	tc__table_release(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_view_gpu__matches_reference),
		cmocka_unit_test(test_view_gpu__column_shard_is_one_2d_copy),
		cmocka_unit_test(test_view_gpu__expert_slices_are_one_3d_copy),
		cmocka_unit_test(test_view_gpu__kernel_not_loaded),
	};
	uint64_t seed = t_rng_seed("TC_VIEW_GPU_SEED");

	setenv("TCAST_CUDA_LIB", TC_FAKECUDA_PATH, 1);
	setenv("TC_FAKECUDA_DEVICES", "2", 1);
	setenv("TC_FAKECUDA_MEM_BYTES", "256m", 1);
	unsetenv("TC_FAKECUDA_FAIL");
	unsetenv("CUDA_VISIBLE_DEVICES");
	fprintf(stderr, "TC_VIEW_GPU_SEED=%llu\n", (unsigned long long)seed);
	t_rng_init(&rng, seed);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
