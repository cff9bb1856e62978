/*
 * test_gpu_loader.c - src/store/gpu_loader.c against the fake driver:
 * every source of tests/data lands on the "GPU" with the same bytes and
 * the same chunk digests as the host loader, for every thread count,
 * staging depth and read mode; failures are clean errors with no leaks.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "common/hash.h"
#include "format/format.h"
#include "gpu/vmm.h"
#include "store/gpu_loader.h"
#include "store/loader.h"
#include "tcast/errors.h"
#include "tlib.h"

/* Host reference: bytes and chunk digests from the memfd loader. */
struct ref {
	struct tc__source *src;
	uint8_t *bytes;
	struct tc__digest *chunks;
	uint64_t nchunks;
};

static void ref_open(struct ref *r, const char *path)
{
	char err[512];
	int rc = tc__source_open(path, &r->src, err, sizeof(err));

	if (rc < 0)
		fail_msg("%s", err);
	assert_int_equal(tc__table_layout(&r->src->table), 0);
	r->nchunks = tc__chunk_count(r->src->table.total_bytes);
	r->bytes = calloc(1, r->src->table.total_bytes + 1);
	r->chunks = calloc(r->nchunks + 1, sizeof(*r->chunks));
	assert_int_equal(tc__load_source(r->src, r->bytes, 1, r->chunks, NULL,
					 err, sizeof(err)),
			 0);
}

static void ref_close(struct ref *r)
{
	tc__source_free(r->src);
	free(r->bytes);
	free(r->chunks);
}

static void load_and_compare(struct ref *r, int nthreads, int depth, int direct,
			     int stage)
{
	struct tc__gpu_load_opts o = { nthreads, depth, direct, stage };
	struct tc__gpu_load_stats st;
	struct tc__gpu_mem m;
	struct tc__digest *chunks = calloc(r->nchunks + 1, sizeof(*chunks));
	uint64_t size = r->src->table.total_bytes;
	uint8_t *back = malloc(size + 1);
	char err[512];
	int rc;

	tc__gpu_mem_init(&m);
	assert_int_equal(
		tc__gpu_alloc(0, size ? size : 1, 0, &m, err, sizeof(err)), 0);
	/* Garbage where padding will go: the loader must zero it. */
	assert_int_equal(tc__gpu_memset8(0, m.dptr, 0xAB, m.size, NULL, err,
					 sizeof(err)),
			 0);
	rc = tc__gpu_load_source(r->src, &m, &o, chunks, NULL, &st, err,
				 sizeof(err));
	if (rc < 0)
		fail_msg("load: %s", err);
	assert_int_equal(st.bytes, size);
	assert_int_equal(
		tc__gpu_mem_read(&m, 0, back, size, NULL, err, sizeof(err)), 0);
	assert_memory_equal(back, r->bytes, size);
	assert_memory_equal(chunks, r->chunks, r->nchunks * sizeof(*chunks));
	tc__gpu_release(&m);
	free(back);
	free(chunks);
}

static void test_gpu_loader__matches_host_loader(void **state)
{
	static const char *const items[] = { "dtypes.safetensors",
					     "many-tensors.safetensors",
					     "tiny-llama" };

	for (size_t i = 0; i < 3; i++) {
		struct ref r;

		ref_open(&r, t_data(items[i]));
		for (int direct = 0; direct <= 1; direct++) {
			load_and_compare(&r, 1, 1, direct, 1);
			load_and_compare(&r, 2, 2, direct, 2);
			load_and_compare(&r, 4, 3, direct, 0);
		}
		load_and_compare(&r, 2, 2, -1, 0);
		ref_close(&r);
	}
}

/* A model bigger than one chunk, tensors straddling chunk boundaries at
 * unaligned file offsets: exercises the O_DIRECT bounce path for real. */
/* A model bigger than one chunk, tensors straddling chunk boundaries at
 * unaligned file offsets (the header is not padded).  Returns the header
 * length; *data_bytes the data section's. */
static size_t write_model(const char *path, uint64_t *data_bytes)
{
	uint64_t n, sizes[5] = { 3, 5 << 20, 1234567, 9 << 20, 77 }, off = 0;
	char hdr[4096];
	size_t hl = 0;
	FILE *f;

	hl += (size_t)sprintf(hdr, "{");
	for (int i = 0; i < 5; i++) {
		hl += (size_t)sprintf(
			hdr + hl,
			"%s\"t%d\":{\"dtype\":\"U8\",\"shape\":[%llu],"
			"\"data_offsets\":[%llu,%llu]}",
			i ? "," : "", i, (unsigned long long)sizes[i],
			(unsigned long long)off,
			(unsigned long long)(off + sizes[i]));
		off += sizes[i];
	}
	hl += (size_t)sprintf(hdr + hl, "}");
	n = hl;
	f = fopen(path, "wb");
	fwrite(&n, 8, 1, f);
	fwrite(hdr, 1, hl, f);
	for (uint64_t b = 0; b < off; b++)
		fputc((int)((b * 2654435761u) >> 13), f);
	fclose(f);
	*data_bytes = off;
	return hl;
}

static void test_gpu_loader__multi_chunk_unaligned(void **state)
{
	char dir[] = "/tmp/tcast-gl-XXXXXX", path[64];
	uint64_t off;
	size_t hl;
	struct ref r;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/m.safetensors", dir);
	hl = write_model(path, &off);
	ref_open(&r, path);
	assert_true(r.nchunks >= 4);
	load_and_compare(&r, 3, 2, 1, 1);
	load_and_compare(&r, 3, 2, 0, 1);
	load_and_compare(&r, 1, 2, 0, 3); /* units straddle the tail */
	load_and_compare(&r, 2, 2, 1, 0);
	/* Truncated after parsing: a clean TC_EBADFILE naming the file. */
	{
		struct tc__gpu_load_opts o = { 2, 2, 0, 0 };
		struct tc__digest *ch = calloc(r.nchunks, sizeof(*ch));
		struct tc__gpu_mem m;
		char err[512];
		int fd0 = t_count_fds();

		assert_int_equal(truncate(path, 8 + (off_t)hl + (6 << 20)), 0);
		tc__gpu_mem_init(&m);
		assert_int_equal(tc__gpu_alloc(0, r.src->table.total_bytes, 0,
					       &m, err, sizeof(err)),
				 0);
		assert_int_equal(tc__gpu_load_source(r.src, &m, &o, ch, NULL,
						     NULL, err, sizeof(err)),
				 TC_EBADFILE);
		assert_non_null(strstr(err, "m.safetensors"));
		tc__gpu_release(&m);
		free(ch);
		assert_int_equal(t_count_fds(), fd0);
	}
	ref_close(&r);
	unlink(path);
	rmdir(dir);
}

/* Every driver call the loader makes failing in turn: an error with the
 * driver's words, nothing leaked, and the next load works. */
static void test_gpu_loader__driver_failures(void **state)
{
	static const char *const fns[] = {
		"cuStreamCreate", "cuMemHostRegister_v2",
		"cuEventCreate",  "cuMemcpyHtoDAsync_v2",
		"cuEventRecord",  "cuEventSynchronize"
	};
	char dir[] = "/tmp/tcast-gl-XXXXXX", path[64];
	uint64_t off;
	struct ref r;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/m.safetensors", dir);
	write_model(path, &off);
	ref_open(&r, path);
	for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++) {
		/* One thread, two buffers: the third chunk must wait for the
		 * first one's copy, so every call below is reached. */
		struct tc__gpu_load_opts o = { 1, 2, 0, 1 };
		struct tc__digest ch[16];
		struct tc__gpu_mem m;
		char spec[96], err[512];
		int fd0 = t_count_fds(), rc;

		tc__gpu_mem_init(&m);
		assert_int_equal(tc__gpu_alloc(0, r.src->table.total_bytes, 0,
					       &m, err, sizeof(err)),
				 0);
		snprintf(spec, sizeof(spec), "%s:1", fns[i]);
		setenv("TC_FAKECUDA_FAIL", spec, 1);
		rc = tc__gpu_load_source(r.src, &m, &o, ch, NULL, NULL, err,
					 sizeof(err));
		unsetenv("TC_FAKECUDA_FAIL");
		if (rc != TC_ECUDA)
			fail_msg("%s: rc %d (%s)", fns[i], rc, err);
		assert_non_null(strstr(err, "CUDA_ERROR"));
		tc__gpu_release(&m);
		assert_int_equal(t_count_fds(), fd0);
	}
	load_and_compare(&r, 2, 2, 0, 0);
	ref_close(&r);
	unlink(path);
	rmdir(dir);
}

static void test_gpu_loader__too_small_destination(void **state)
{
	struct tc__gpu_load_opts o = { 1, 2, 0, 0 };
	struct tc__gpu_mem m;
	struct tc__digest ch[4];
	char err[512];
	struct ref r;

	ref_open(&r, t_data("tiny-llama"));
	tc__gpu_mem_init(&m);
	m.dptr = 1;
	m.size = 4096;
	assert_int_equal(tc__gpu_load_source(r.src, &m, &o, ch, NULL, NULL, err,
					     sizeof(err)),
			 TC_EINVAL);
	ref_close(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_gpu_loader__matches_host_loader),
		cmocka_unit_test(test_gpu_loader__multi_chunk_unaligned),
		cmocka_unit_test(test_gpu_loader__driver_failures),
		cmocka_unit_test(test_gpu_loader__too_small_destination),
	};

	setenv("TCAST_CUDA_LIB", TC_FAKECUDA_PATH, 1);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
