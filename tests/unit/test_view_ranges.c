/*
 * test_view_ranges.c - views of a safetensors file loaded by the GPU
 * loader from a range plan (src/xfer/view_ranges.c, tc__gpu_load_plan)
 * against the fake driver: row, column and row+column shards and subsets
 * land on the "GPU" with the bytes of slicing the full tensors, the
 * digests of those bytes, and only the view's bytes read (the loader's
 * counters); transposed or cast tensors' gather buffers land where asked;
 * bad plans are clean errors.
 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/compiler.h"
#include "common/hash.h"
#include "format/format.h"
#include "format/view.h"
#include "gpu/vmm.h"
#include "tcast/dtype.h"
#include "tcast/errors.h"
#include "xfer/gpu_loader.h"
#include "xfer/ioring.h"
#include "xfer/loader.h"
#include "xfer/view_ranges.h"

/* Matrices of every element size, some larger than a staging unit (4 MiB)
 * so runs cross units and windows, with an unpadded header so file
 * offsets are unaligned (the O_DIRECT bounce path). */
static const struct {
	const char *name, *dtype;
	uint64_t rows, cols, esize;
} mats[] = {
	{ "a.weight", "BF16", 1536, 1600, 2 }, /* 4.7 MiB */
	{ "b.weight", "F32", 40, 33, 4 },
	{ "c.weight", "U8", 700, 9001, 1 }, /* 6 MiB */
	{ "d.bias", "F64", 3, 5, 8 },
};
#define NMATS (sizeof(mats) / sizeof(mats[0]))

struct model {
	char dir[32], path[64];
	uint8_t *data; /* the data section */
	uint64_t off[NMATS];
	struct tc__source *src;
};

static uint8_t byte_at(uint64_t b)
{
	return (uint8_t)((b * 2654435761u) >> 13);
}

static void model_open(struct model *m)
{
	char hdr[4096];
	uint64_t n, at = 0;
	size_t hl = 0;
	char err[512];
	FILE *f;

	snprintf(m->dir, sizeof(m->dir), "/tmp/tcast-vr-XXXXXX");
	assert_non_null(mkdtemp(m->dir));
	snprintf(m->path, sizeof(m->path), "%s/m.safetensors", m->dir);
	hl += (size_t)sprintf(hdr, "{");
	for (size_t i = 0; i < NMATS; i++) {
		uint64_t nb = mats[i].rows * mats[i].cols * mats[i].esize;

		m->off[i] = at;
		hl += (size_t)sprintf(
			hdr + hl,
			"%s\"%s\":{\"dtype\":\"%s\",\"shape\":[%llu,%llu],"
			"\"data_offsets\":[%llu,%llu]}",
			i ? "," : "", mats[i].name, mats[i].dtype,
			(unsigned long long)mats[i].rows,
			(unsigned long long)mats[i].cols,
			(unsigned long long)at, (unsigned long long)(at + nb));
		at += nb;
	}
	hl += (size_t)sprintf(hdr + hl, "}");
	n = hl;
	m->data = malloc(at);
	for (uint64_t b = 0; b < at; b++)
		m->data[b] = byte_at(b);
	f = fopen(m->path, "wb");
	fwrite(&n, 8, 1, f);
	fwrite(hdr, 1, hl, f);
	fwrite(m->data, 1, at, f);
	fclose(f);
	if (tc__source_open(m->path, &m->src, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	assert_int_equal(tc__table_layout(&m->src->table), 0);
}

static void model_close(struct model *m)
{
	tc__source_free(m->src);
	free(m->data);
	unlink(m->path);
	rmdir(m->dir);
}

static size_t mat_of(const char *name)
{
	for (size_t i = 0; i < NMATS; i++)
		if (!strcmp(mats[i].name, name))
			return i;
	fail_msg("no matrix '%s'", name);
	return 0;
}

/* The view's byte space made by slicing the full tensors here (the
 * reference): rows [r0, r1) and columns [c0, c1) of each tensor, clamped
 * to its shape (stop UINT64_MAX: to the end). */
static uint8_t *reference(const struct model *m, const struct tc__view_plan *v,
			  uint64_t r0, uint64_t r1, uint64_t c0, uint64_t c1)
{
	uint8_t *out = calloc(1, v->out.total_bytes + 1);

	for (uint32_t i = 0; i < v->out.ntensors; i++) {
		const struct tc__tensor *t = &v->out.tensors[i];
		size_t k = mat_of(t->name);
		uint64_t es = mats[k].esize, cols = mats[k].cols;
		uint64_t re = TC_MIN(r1, mats[k].rows), ce = TC_MIN(c1, cols);
		uint8_t *d = out + t->offset;

		assert_int_equal(t->nbytes, (re - r0) * (ce - c0) * es);
		for (uint64_t r = r0; r < re; r++) {
			memcpy(d, m->data + m->off[k] + (r * cols + c0) * es,
			       (ce - c0) * es);
			d += (ce - c0) * es;
		}
	}
	return out;
}

static void plan_view(const struct model *m, const char *json,
		      struct tc__view_plan *v)
{
	struct tc__view_spec spec;
	char err[512];

	assert_int_equal(tc__view_spec_parse(json, strlen(json), &spec, err,
					     sizeof(err)),
			 0);
	if (tc__view_plan(&m->src->table, "", &spec, v, err, sizeof(err)) < 0)
		fail_msg("%s: %s", json, err);
	tc__view_spec_release(&spec);
}

/* Load `v`'s range plan with the given knobs; check the bytes against
 * `ref`, the digests against hashing `ref`, and the read counters. */
static struct tc__gpu_load_stats load_check(const struct model *m,
					    const struct tc__view_plan *v,
					    const uint8_t *ref, int nthreads,
					    int direct, int io)
{
	struct tc__gpu_load_opts o = {
		.nthreads = nthreads, .depth = 2, .direct = direct, .io = io
	};
	struct tc__load_plan lp;
	struct tc__gpu_load_stats st;
	struct tc__gpu_mem g;
	uint64_t size = v->out.total_bytes, nch = tc__chunk_count(size);
	struct tc__digest *ch = calloc(nch + 1, sizeof(*ch)),
			  *want = calloc(nch + 1, sizeof(*want));
	uint8_t *back = malloc(size + 1);
	char err[512];

	if (tc__view_ranges(m->src, v, NULL, 0, &lp, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	tc__gpu_mem_init(&g);
	assert_int_equal(tc__gpu_alloc(0, size, 0, &g, err, sizeof(err)), 0);
	/* Garbage where the alignment padding goes: zeroed by the load. */
	assert_int_equal(tc__gpu_memset8(0, g.dptr, 0xAB, g.size, NULL, err,
					 sizeof(err)),
			 0);
	if (tc__gpu_load_plan(m->src, &lp, &g, &o, ch, NULL, &st, err,
			      sizeof(err)) < 0)
		fail_msg("load: %s", err);
	assert_int_equal(st.bytes, size);
	assert_int_equal(
		tc__gpu_mem_read(&g, 0, back, size, NULL, err, sizeof(err)), 0);
	assert_memory_equal(back, ref, size);
	assert_int_equal(tc__hash_chunks(ref, size, 1, want), 0);
	assert_memory_equal(ch, want, nch * sizeof(*ch));
	/* Only the view's bytes: exactly, through the page cache; with
	 * O_DIRECT each read rounded out to the file's alignment (at most
	 * 64 KiB a side, the loader's bound on it). */
	assert_true(st.read_bytes >= v->bytes_needed);
	if (st.direct_bytes == 0)
		assert_int_equal(st.read_bytes, v->bytes_needed);
	else
		assert_true(st.read_bytes <=
			    v->bytes_needed + st.reads * 2 * 65536);
	assert_true(st.reads >= lp.nruns);
	tc__gpu_release(&g);
	tc__load_plan_release(&lp);
	free(back);
	free(ch);
	free(want);
	return st;
}

static bool have_uring(void)
{
	struct tc__ioring *r;
	bool have = tc__ioring_new(4, 1, &r) == 0;

	tc__ioring_free(r);
	return have;
}

static void check_view(const struct model *m, const char *json, uint64_t r0,
		       uint64_t r1, uint64_t c0, uint64_t c1)
{
	struct tc__view_plan v;
	uint8_t *ref;

	plan_view(m, json, &v);
	ref = reference(m, &v, r0, r1, c0, c1);
	for (int direct = 0; direct <= 1; direct++) {
		load_check(m, &v, ref, 1, direct, TC_IO_PREAD);
		load_check(m, &v, ref, 3, direct, TC_IO_AUTO);
		if (have_uring())
			load_check(m, &v, ref, 2, direct, TC_IO_URING);
	}
	free(ref);
	tc__view_plan_release(&v);
}

static void test_view_ranges__shards(void **state)
{
	struct model m;

	(void)state;
	model_open(&m);
	/* Whole tensors, then a row shard of every tensor (one run each). */
	check_view(&m, "{}", 0, UINT64_MAX, 0, UINT64_MAX);
	check_view(&m,
		   "{\"slices\":{\"a.weight\":[[0,1,3]],\"b.weight\":[[0,1,3]],"
		   "\"c.weight\":[[0,1,3]],\"d.bias\":[[0,1,3]]}}",
		   1, 3, 0, UINT64_MAX);
	/* A column shard: one piece per row. */
	check_view(&m,
		   "{\"names\":[\"a.weight\",\"c.weight\"],"
		   "\"slices\":{\"a.weight\":[[1,200,400]],"
		   "\"c.weight\":[[1,200,400]]}}",
		   0, UINT64_MAX, 200, 400);
	check_view(&m,
		   "{\"names\":[\"b.weight\"],"
		   "\"slices\":{\"b.weight\":[[1,10,20]]}}",
		   0, UINT64_MAX, 10, 20);
	/* Row and column, on a subset. */
	check_view(&m,
		   "{\"names\":[\"a.weight\",\"c.weight\"],"
		   "\"slices\":{\"a.weight\":[[0,7,600],[1,3,1500]],"
		   "\"c.weight\":[[0,7,600],[1,3,1500]]}}",
		   7, 600, 3, 1500);
	model_close(&m);
}

/* direct = -1 (the daemon's choice): O_DIRECT when the view's own pages
 * are not in the page cache, buffered when they are. */
static void test_view_ranges__cached_or_direct(void **state)
{
	struct model m;
	struct tc__view_plan v;
	struct tc__gpu_load_stats st;
	uint8_t *ref;
	int fd;

	(void)state;
	model_open(&m);
	plan_view(
		&m,
		"{\"names\":[\"c.weight\"],\"slices\":{\"c.weight\":[[0,300,700]]}}",
		&v);
	ref = reference(&m, &v, 300, 700, 0, UINT64_MAX);
	st = load_check(&m, &v, ref, 2, -1, TC_IO_PREAD);
	assert_int_equal(st.direct_bytes, 0); /* just written: cached */
	fd = open(m.path, O_RDONLY);
	assert_int_equal(fdatasync(fd), 0);
	assert_int_equal(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
	close(fd);
	st = load_check(&m, &v, ref, 2, -1, TC_IO_PREAD);
	/* Evicted (where the file system allows O_DIRECT: not tmpfs). */
	fd = open(m.path, O_RDONLY | O_DIRECT);
	if (fd >= 0) {
		close(fd);
		assert_true(st.direct_bytes > 0);
	}
	free(ref);
	tc__view_plan_release(&v);
	model_close(&m);
}

/* Transposed or cast tensors: their gather buffers (the sliced source
 * bytes, before the view kernel) go where the caller puts them. */
static void test_view_ranges__gather_buffers(void **state)
{
	struct model m;
	struct tc__view_plan v;
	struct tc__load_plan lp;
	struct tc__gpu_load_opts o = { .nthreads = 2, .depth = 2 };
	struct tc__gpu_load_stats st;
	struct tc__gpu_mem g;
	uint64_t dst_of[2], size;
	struct tc__digest *ch;
	uint8_t *back, *ref;
	char err[512];

	(void)state;
	model_open(&m);
	plan_view(&m,
		  "{\"names\":[\"a.weight\",\"b.weight\"],"
		  "\"slices\":{\"a.weight\":[[1,10,20]],\"b.weight\":[[1,10,"
		  "20]]},\"transpose\":[0,1],\"dtype\":\"F32\"}",
		  &v);
	assert_true(v.t[0].flags != 0);
	/* Without places for them: refused. */
	assert_int_equal(tc__view_ranges(m.src, &v, NULL, 0, &lp, err,
					 sizeof(err)),
			 TC_EINVAL);
	assert_non_null(strstr(err, "transposed or cast"));
	/* Two gather buffers back to back, 4 KiB apart. */
	dst_of[0] = 0;
	dst_of[1] = TC_ALIGN_UP(v.t[0].gather_bytes, 4096);
	size = dst_of[1] + v.t[1].gather_bytes;
	assert_int_equal(tc__view_ranges(m.src, &v, dst_of, size - 1, &lp, err,
					 sizeof(err)),
			 TC_EINVAL);
	assert_non_null(strstr(err, "end past"));
	assert_int_equal(tc__view_ranges(m.src, &v, dst_of, size, &lp, err,
					 sizeof(err)),
			 0);
	ch = calloc(tc__chunk_count(size) + 1, sizeof(*ch));
	back = malloc(size);
	tc__gpu_mem_init(&g);
	assert_int_equal(tc__gpu_alloc(0, size, 0, &g, err, sizeof(err)), 0);
	assert_int_equal(tc__gpu_load_plan(m.src, &lp, &g, &o, ch, NULL, &st,
					   err, sizeof(err)),
			 0);
	assert_int_equal(st.read_bytes, v.bytes_needed);
	assert_int_equal(
		tc__gpu_mem_read(&g, 0, back, size, NULL, err, sizeof(err)), 0);
	for (uint32_t i = 0; i < 2; i++) {
		size_t k = mat_of(v.out.tensors[i].name);
		uint64_t es = mats[k].esize, cols = mats[k].cols;

		ref = malloc(v.t[i].gather_bytes);
		for (uint64_t r = 0; r < mats[k].rows; r++)
			memcpy(ref + r * 10 * es,
			       m.data + m.off[k] + (r * cols + 10) * es,
			       10 * es);
		assert_memory_equal(back + dst_of[i], ref, v.t[i].gather_bytes);
		free(ref);
	}
	tc__gpu_release(&g);
	tc__load_plan_release(&lp);
	tc__view_plan_release(&v);
	free(ch);
	free(back);
	model_close(&m);
}

/* Plans the loader refuses, and a file that shrank: clean errors. */
static void test_view_ranges__bad_plans(void **state)
{
	struct model m;
	struct tc__load_run runs[2] = {
		{ .dst = 0, .off = 8, .len = 100, .count = 1, .name = "x" },
		{ .dst = 50, .off = 8, .len = 100, .count = 1, .name = "y" },
	};
	struct tc__load_plan lp = { runs, 2, 4096 };
	struct tc__gpu_load_opts o = { .nthreads = 1, .depth = 2 };
	struct tc__view_plan v;
	struct tc__gpu_mem g;
	struct tc__digest ch[2];
	char err[512];

	(void)state;
	model_open(&m);
	tc__gpu_mem_init(&g);
	assert_int_equal(tc__gpu_alloc(0, 4096, 0, &g, err, sizeof(err)), 0);
	assert_int_equal(tc__gpu_load_plan(m.src, &lp, &g, &o, ch, NULL, NULL,
					   err, sizeof(err)),
			 TC_EINVAL);
	assert_non_null(strstr(err, "overlaps"));
	runs[1].dst = 100;
	runs[1].file = 7;
	assert_int_equal(tc__gpu_load_plan(m.src, &lp, &g, &o, ch, NULL, NULL,
					   err, sizeof(err)),
			 TC_EINVAL);
	runs[1].file = 0;
	lp.size = g.size + 1; /* larger than the allocation */
	assert_int_equal(tc__gpu_load_plan(m.src, &lp, &g, &o, ch, NULL, NULL,
					   err, sizeof(err)),
			 TC_EINVAL);
	assert_non_null(strstr(err, "smaller"));
	tc__gpu_release(&g);
	/* The file shrinks after planning: TC_EBADFILE naming the tensor. */
	plan_view(&m, "{\"names\":[\"c.weight\"]}", &v);
	assert_int_equal(
		tc__view_ranges(m.src, &v, NULL, 0, &lp, err, sizeof(err)), 0);
	assert_int_equal(truncate(m.path, 4096), 0);
	{
		struct tc__digest *c =
			calloc(tc__chunk_count(v.out.total_bytes), sizeof(*c));

		assert_int_equal(tc__gpu_alloc(0, v.out.total_bytes, 0, &g, err,
					       sizeof(err)),
				 0);
		assert_int_equal(tc__gpu_load_plan(m.src, &lp, &g, &o, c, NULL,
						   NULL, err, sizeof(err)),
				 TC_EBADFILE);
		assert_non_null(strstr(err, "c.weight"));
		free(c);
		tc__gpu_release(&g);
	}
	tc__load_plan_release(&lp);
	tc__view_plan_release(&v);
	model_close(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_view_ranges__shards),
		cmocka_unit_test(test_view_ranges__cached_or_direct),
		cmocka_unit_test(test_view_ranges__gather_buffers),
		cmocka_unit_test(test_view_ranges__bad_plans),
	};

	setenv("TCAST_CUDA_LIB", TC_FAKECUDA_PATH, 1);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
