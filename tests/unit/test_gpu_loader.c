/*
 * test_gpu_loader.c - src/xfer/gpu_loader.c against the fake driver:
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
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "common/compiler.h"
#include "common/hash.h"
#include "format/format.h"
#include "gpu/vmm.h"
#include "xfer/gpu_loader.h"
#include "xfer/ioring.h"
#include "xfer/loader.h"
#include "xfer/xfer.h"
#include "tcast/errors.h"
#include "tlib.h"

static bool have_uring(void)
{
	static int have = -1;
	struct tc__ioring *r;

	if (have < 0) {
		have = tc__ioring_new(4, 1, &r) == 0;
		tc__ioring_free(r);
		if (!have)
			print_message("io_uring unavailable here: its "
				      "variants run as pread\n");
	}
	return have;
}

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

/* Whether `path` can be opened with O_DIRECT here (not on tmpfs). */
static bool direct_ok(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECT);

	if (fd < 0)
		return false;
	close(fd);
	return true;
}

static uint64_t payload(const struct tc__source *src)
{
	uint64_t n = 0;

	for (uint32_t i = 0; i < src->table.ntensors; i++)
		n += src->table.tensors[i].nbytes;
	return n;
}

static void load_and_compare_io(struct ref *r, int nthreads, int depth,
				int direct, int stage, int io)
{
	struct tc__gpu_load_opts o = { .nthreads = nthreads,
				       .depth = depth,
				       .direct = direct,
				       .stage_chunks = stage,
				       .io = io };
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
	/* The timeline the daemon logs: inside the load's wall time, and
	 * reads counted wherever a unit was read. */
	assert_true(st.first_copy_seconds >= 0 &&
		    st.first_copy_seconds <= st.seconds);
	assert_true(st.tail_seconds >= 0 && st.tail_seconds <= st.seconds);
	assert_true(st.wait_thread_seconds >= 0);
	if (payload(r->src))
		assert_true(st.read_thread_seconds > 0 &&
			    st.first_copy_seconds > 0);
	/* Where the digests were made, as the daemon's log reports it. */
	if (getenv("TCAST_GPU_HASH_HOST"))
		assert_false(st.gpu_hash);
	else if (!getenv("TC_FAKECUDA_FAIL"))
		assert_true(st.gpu_hash);
	/* Every byte went through the engine asked for. */
	if (io == TC_IO_URING) {
		assert_int_equal(st.uring_bytes, payload(r->src));
		assert_int_equal(st.uring_errno, 0);
	} else if (io == TC_IO_PREAD) {
		assert_int_equal(st.uring_bytes, 0);
	} else if (have_uring()) {
		/* auto: io_uring for what bypasses the page cache only. */
		assert_int_equal(st.uring_bytes, st.direct_bytes);
	}
	if (direct == 1 && direct_ok(r->src->files[0].name))
		assert_int_equal(st.direct_bytes, payload(r->src));
	if (direct == 0)
		assert_int_equal(st.direct_bytes, 0);
	assert_int_equal(
		tc__gpu_mem_read(&m, 0, back, size, NULL, err, sizeof(err)), 0);
	assert_memory_equal(back, r->bytes, size);
	assert_memory_equal(chunks, r->chunks, r->nchunks * sizeof(*chunks));
	tc__gpu_release(&m);
	free(back);
	free(chunks);
}

/* Both read engines, where this kernel has io_uring (it is tested
 * without it below, under a seccomp filter). */
static void load_and_compare(struct ref *r, int nthreads, int depth, int direct,
			     int stage)
{
	load_and_compare_io(r, nthreads, depth, direct, stage, TC_IO_PREAD);
	load_and_compare_io(r, nthreads, depth, direct, stage, TC_IO_AUTO);
	load_and_compare_io(r, nthreads, depth, direct, stage, TC_IO_MMAP);
	if (have_uring())
		load_and_compare_io(r, nthreads, depth, direct, stage,
				    TC_IO_URING);
}

static void test_gpu_loader__matches_host_loader(void **state)
{
	static const char *const items[] = { "dtypes.safetensors",
					     "many-tensors.safetensors",
					     "tiny-llama" };

	/* Chunks hashed by the GPU kernels behind each copy (the default),
	 * by the host threads (the fallback where the kernels cannot run),
	 * and with kernel launches failing: one (the whole space is hashed
	 * again on the GPU once it is in), then every one from the second
	 * on (hashed on the host from the GPU's bytes). */
	static const char *const fails[] = {
		NULL, NULL, "cuLaunchKernel:2:CUDA_ERROR_INVALID_VALUE",
		"cuLaunchKernel:2+:CUDA_ERROR_INVALID_VALUE"
	};

	for (int host_hash = 0; host_hash < 4; host_hash++) {
		if (host_hash == 1)
			setenv("TCAST_GPU_HASH_HOST", "1", 1);
		if (host_hash >= 2) {
			unsetenv("TCAST_GPU_HASH_HOST");
			setenv("TC_FAKECUDA_FAIL", fails[host_hash], 1);
		}
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
	unsetenv("TCAST_GPU_HASH_HOST");
	unsetenv("TC_FAKECUDA_FAIL");
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

/* A generated model in a new temporary folder dir (a mkdtemp template),
 * opened as r; returns write_model's header length. */
static size_t model_open(char *dir, char *path, size_t pathlen, uint64_t *off,
			 struct ref *r)
{
	size_t hl;

	assert_non_null(mkdtemp(dir));
	snprintf(path, pathlen, "%s/m.safetensors", dir);
	hl = write_model(path, off);
	ref_open(r, path);
	return hl;
}

static void model_close(const char *dir, const char *path, struct ref *r)
{
	ref_close(r);
	unlink(path);
	rmdir(dir);
}

/* A source truncated after parsing: a clean TC_EBADFILE naming the file
 * and a tensor, whichever engine reads (pread, auto, mmap), buffered or
 * direct (the first `n` of those six ways). */
static void shrunk_fails(struct ref *r, int n)
{
	for (int k = 0; k < n; k++) {
		struct tc__gpu_load_opts o = { .nthreads = 2,
					       .depth = 2,
					       .direct = k & 1,
					       .stage_chunks = 0,
					       .io = k < 2 ? TC_IO_PREAD :
						     k < 4 ? TC_IO_AUTO :
							     TC_IO_MMAP };
		struct tc__digest *ch = calloc(r->nchunks, sizeof(*ch));
		struct tc__gpu_mem m;
		char err[512];
		int fd0 = t_count_fds();

		tc__gpu_mem_init(&m);
		assert_int_equal(tc__gpu_alloc(0, r->src->table.total_bytes, 0,
					       &m, err, sizeof(err)),
				 0);
		assert_int_equal(tc__gpu_load_source(r->src, &m, &o, ch, NULL,
						     NULL, err, sizeof(err)),
				 TC_EBADFILE);
		assert_non_null(strstr(err, "m.safetensors"));
		assert_non_null(strstr(err, "shrank while reading tensor 't"));
		tc__gpu_release(&m);
		free(ch);
		assert_int_equal(t_count_fds(), fd0);
	}
}

static void test_gpu_loader__multi_chunk_unaligned(void **state)
{
	char dir[] = "/tmp/tcast-gl-XXXXXX", path[64];
	char dir2[] = "/tmp/tcast-gl-sigbus-XXXXXX";
	uint64_t off;
	size_t hl;
	struct ref r;

	hl = model_open(dir, path, sizeof(path), &off, &r);
	assert_true(r.nchunks >= 4);
	load_and_compare(&r, 3, 2, 1, 1);
	load_and_compare(&r, 3, 2, 0, 1);
	load_and_compare(&r, 1, 2, 0, 3); /* units straddle the tail */
	load_and_compare(&r, 2, 2, 1, 0);
	/* Truncated after parsing: a clean TC_EBADFILE naming the file and
	 * a tensor, whichever engine reads, buffered or direct. */
	assert_int_equal(truncate(path, 8 + (off_t)hl + (6 << 20)), 0);
	shrunk_fails(&r, 6);
	model_close(dir, path, &r);
	/* The same through a mapping whose pages are not populated first
	 * (failpoint loader_no_populate, armed in main for "sigbus"): the
	 * copy faults with SIGBUS and the loader says the file shrank. */
	hl = model_open(dir2, path, sizeof(path), &off, &r);
	assert_non_null(strstr(path, "sigbus"));
	assert_int_equal(truncate(path, 8 + (off_t)hl + (6 << 20)), 0);
	shrunk_fails(&r, 6);
	model_close(dir2, path, &r);
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

	model_open(dir, path, sizeof(path), &off, &r);
	for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++) {
		/* One thread, two buffers: the third chunk must wait for the
		 * first one's copy, so every call below is reached. */
		struct tc__gpu_load_opts o = { .nthreads = 1,
					       .depth = 2,
					       .direct = 0,
					       .stage_chunks = 1 };
		struct tc__digest ch[16];
		struct tc__gpu_mem m;
		char spec[96], err[512];
		int fd0 = t_count_fds(), rc;

		tc__gpu_mem_init(&m);
		assert_int_equal(tc__gpu_alloc(0, r.src->table.total_bytes, 0,
					       &m, err, sizeof(err)),
				 0);
		snprintf(spec, sizeof(spec), "%s:1", fns[i]);
		/* Staging buffers are kept between loads: none now, so the
		 * next load registers its own. */
		tc__gpu_stage_pool_drain();
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
	model_close(dir, path, &r);
}

/* Pinned staging buffers are kept between loads (no registration per
 * load) and given back to the driver by tc__gpu_stage_pool_drain. */
static void test_gpu_loader__staging_kept_between_loads(void **state)
{
	char dir[] = "/tmp/tcast-gl-XXXXXX", path[64], err[512];
	struct tc__gpu_load_opts o = { .nthreads = 2, .depth = 2 };
	struct tc__digest ch[16];
	struct tc__gpu_mem m;
	uint64_t off;
	struct ref r;

	model_open(dir, path, sizeof(path), &off, &r);
	tc__gpu_mem_init(&m);
	assert_int_equal(tc__gpu_alloc(0, r.src->table.total_bytes, 0, &m, err,
				       sizeof(err)),
			 0);
	tc__gpu_stage_pool_drain();
	assert_int_equal(tc__gpu_load_source(r.src, &m, &o, ch, NULL, NULL, err,
					     sizeof(err)),
			 0);
	/* The second load registers nothing: a failing registration does
	 * not touch it. */
	setenv("TC_FAKECUDA_FAIL", "cuMemHostRegister_v2:1", 1);
	memset(ch, 0, sizeof(ch));
	if (tc__gpu_load_source(r.src, &m, &o, ch, NULL, NULL, err,
				sizeof(err)) < 0)
		fail_msg("second load: %s", err);
	unsetenv("TC_FAKECUDA_FAIL");
	assert_memory_equal(ch, r.chunks, r.nchunks * sizeof(ch[0]));
	/* Pooled buffers serve only the device whose context registered
	 * them: a load to GPU 1 registers its own. */
	{
		struct tc__gpu_mem m1;

		tc__gpu_mem_init(&m1);
		assert_int_equal(tc__gpu_alloc(1, r.src->table.total_bytes, 0,
					       &m1, err, sizeof(err)),
				 0);
		setenv("TC_FAKECUDA_FAIL", "cuMemHostRegister_v2:1", 1);
		assert_int_equal(tc__gpu_load_source(r.src, &m1, &o, ch, NULL,
						     NULL, err, sizeof(err)),
				 TC_ECUDA);
		unsetenv("TC_FAKECUDA_FAIL");
		tc__gpu_release(&m1);
	}
	/* Drained, the next load registers again. */
	tc__gpu_stage_pool_drain();
	setenv("TC_FAKECUDA_FAIL", "cuMemHostRegister_v2:1", 1);
	assert_int_equal(tc__gpu_load_source(r.src, &m, &o, ch, NULL, NULL, err,
					     sizeof(err)),
			 TC_ECUDA);
	unsetenv("TC_FAKECUDA_FAIL");
	tc__gpu_release(&m);
	model_close(dir, path, &r);
}

static void test_gpu_loader__too_small_destination(void **state)
{
	struct tc__gpu_load_opts o = {
		.nthreads = 1, .depth = 2, .direct = 0, .stage_chunks = 0
	};
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

/* The ring on its own: more reads than slots, tags, both kinds of
 * descriptor, reads past the end. */
static void test_gpu_loader__ioring(void **state)
{
	char path[] = "/tmp/tcast-ior-XXXXXX";
	int fd = mkstemp(path), dfd;
	size_t n = (3 << 20) + 12345;
	uint8_t *want = malloc(n), *got = malloc(n + 4096), *at;
	struct tc__ioring *r;
	uint32_t file;

	if (!have_uring()) {
		skip();
		return;
	}
	for (size_t i = 0; i < n; i++)
		want[i] = (uint8_t)(i * 7 + (i >> 12));
	assert_int_equal(write(fd, want, n), (ssize_t)n);
	dfd = open(path, O_RDONLY | O_DIRECT);
	assert_int_equal(tc__ioring_new(4, 3, &r), 0);
	for (int direct = 0; direct <= 1 && (direct == 0 || dfd >= 0);
	     direct++) {
		memset(got, 0, n);
		/* 300 odd-sized reads across three tags, at most 4 at once. */
		for (size_t off = 0, i = 0; off < n; i++) {
			size_t len = TC_MIN(n - off, 1000 + (i * 7919) % 60000);

			assert_int_equal(tc__ioring_read(r, direct ? dfd : fd,
							 direct ? 4096 : 0,
							 got + off, len, off,
							 (unsigned)(i % 3), 9),
					 0);
			off += len;
		}
		assert_int_equal(tc__ioring_wait(r, 1), 0);
		assert_int_equal(tc__ioring_wait(r, TC_IORING_ALL), 0);
		assert_memory_equal(got, want, n);
	}
	/* Bad arguments are refused without harm. */
	assert_int_equal(tc__ioring_read(r, fd, 0, got, 1, 0, 3, 0), -EINVAL);
	assert_int_equal(tc__ioring_read(r, fd, 3000, got, 1, 0, 0, 0),
			 -EINVAL);
	/* Past the end: TC_EBADFILE, sticky, with the file and where. */
	assert_int_equal(tc__ioring_read(r, fd, 0, got, 8192, n - 100, 0, 5),
			 0);
	assert_int_equal(tc__ioring_wait(r, 0), TC_EBADFILE);
	tc__ioring_failure(r, &file, &at);
	assert_int_equal(file, 5);
	assert_ptr_equal(at, got + 100);
	assert_int_equal(tc__ioring_read(r, fd, 0, got, 1, 0, 0, 0),
			 TC_EBADFILE);
	tc__ioring_free(r);
	if (dfd >= 0) {
		assert_int_equal(tc__ioring_new(2, 1, &r), 0);
		assert_int_equal(tc__ioring_read(r, dfd, 4096, got, 100,
						 n + 5000, 0, 1),
				 0);
		assert_int_equal(tc__ioring_wait(r, TC_IORING_ALL),
				 TC_EBADFILE);
		tc__ioring_free(r);
		close(dfd);
	}
	assert_int_equal(tc__ioring_new(0, 1, &r), -EINVAL);
	close(fd);
	unlink(path);
	free(want);
	free(got);
}

/* As in a container whose seccomp profile refuses io_uring (Docker's
 * default does): auto falls back to pread and says why; asking for
 * io_uring is a clear error. */
/* Pinning in pieces: every piece registered read-only, a copy from them
 * lands every byte, unpinning leaves nothing registered, and a failing
 * registration or copy is a clean error with nothing left pinned. */
static void test_gpu_loader__pin_and_copy_pinned(void **state)
{
	uint64_t n = (5 << 20) + 123, map = TC_ALIGN_UP(n, 4096);
	uint8_t *src = mmap(NULL, map, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint8_t *back = malloc(n);
	struct tc__gpu_pinning pin;
	struct tc__gpu_mem m;
	char err[512];

	assert_true(src != MAP_FAILED);
	for (uint64_t i = 0; i < n; i++)
		src[i] = (uint8_t)(i * 131 + (i >> 16));
	mprotect(src, map, PROT_READ); /* as a sealed memfd is mapped */
	tc__gpu_mem_init(&m);
	assert_int_equal(tc__gpu_alloc(0, n, 0, &m, err, sizeof(err)), 0);

	assert_int_equal(
		tc__gpu_pin(0, src, map, 1 << 20, &pin, err, sizeof(err)), 0);
	assert_int_equal(pin.nsegs, 6); /* five whole pieces and the rest */
	assert_int_equal(pin.bytes, map);
	/* Really registered: the range cannot be registered again. */
	assert_int_equal(tc__gpu_host_register(0, src, map, TC_GPU_READ_ONLY,
					       err, sizeof(err)),
			 TC_ECUDA);
	assert_int_equal(tc__gpu_copy_pinned(&pin, n, &m, err, sizeof(err)), 0);
	assert_int_equal(
		tc__gpu_mem_read(&m, 0, back, n, NULL, err, sizeof(err)), 0);
	assert_memory_equal(back, src, n);
	/* More than is pinned, or than the destination holds. */
	assert_int_equal(tc__gpu_copy_pinned(&pin, map + 1, &m, err,
					     sizeof(err)),
			 TC_EINVAL);
	/* A failing copy is an error naming the call. */
	setenv("TC_FAKECUDA_FAIL", "cuMemcpyHtoDAsync_v2:3", 1);
	assert_int_equal(tc__gpu_copy_pinned(&pin, n, &m, err, sizeof(err)),
			 TC_ECUDA);
	unsetenv("TC_FAKECUDA_FAIL");
	assert_non_null(strstr(err, "CUDA_ERROR"));
	tc__gpu_unpin(&pin);
	assert_int_equal(pin.nsegs, 0);
	tc__gpu_unpin(&pin); /* zeroed: a no-op */

	/* A burst at a time: 2 MiB, 2 MiB, then the rest. */
	memset(&pin, 0, sizeof(pin));
	assert_int_equal(tc__gpu_pin_more(&pin, 0, src, map, 1 << 20, 2 << 20,
					  err, sizeof(err)),
			 0);
	assert_int_equal(pin.nsegs, 2);
	assert_int_equal(tc__gpu_pin_more(&pin, 0, src, map, 1 << 20, 2 << 20,
					  err, sizeof(err)),
			 0);
	assert_int_equal(tc__gpu_pin_more(&pin, 0, src, map, 1 << 20, 2 << 20,
					  err, sizeof(err)),
			 1);
	assert_int_equal(pin.nsegs, 6);
	assert_int_equal(pin.bytes, map);
	assert_int_equal(tc__gpu_copy_pinned(&pin, n, &m, err, sizeof(err)), 0);
	tc__gpu_unpin(&pin);
	/* Continuing a different range is refused, and undoes the first. */
	assert_int_equal(tc__gpu_pin_more(&pin, 0, src, map, 1 << 20, 1 << 20,
					  err, sizeof(err)),
			 0);
	assert_int_equal(tc__gpu_pin_more(&pin, 0, src + 4096, 4096, 4096, 4096,
					  err, sizeof(err)),
			 TC_EINVAL);
	assert_int_equal(pin.nsegs, 0);

	/* The fourth piece fails: the first three are undone. */
	setenv("TC_FAKECUDA_FAIL", "cuMemHostRegister_v2:4", 1);
	assert_int_equal(tc__gpu_pin(0, src, map, 1 << 20, &pin, err,
				     sizeof(err)),
			 TC_ECUDA);
	unsetenv("TC_FAKECUDA_FAIL");
	assert_int_equal(pin.nsegs, 0);
	/* Nothing of src is registered any more. */
	assert_int_equal(tc__gpu_host_register(0, src, map, TC_GPU_READ_ONLY,
					       err, sizeof(err)),
			 0);
	assert_int_equal(tc__gpu_host_unregister(0, src, err, sizeof(err)), 0);
	/* Not page-aligned. */
	assert_int_equal(tc__gpu_pin(0, src + 1, 4096, 4096, &pin, err,
				     sizeof(err)),
			 TC_EINVAL);
	assert_int_equal(tc__gpu_pin(0, src, map, 1000, &pin, err, sizeof(err)),
			 TC_EINVAL);
	tc__gpu_release(&m);
	munmap(src, map);
	free(back);
}

/* The child of the test below: io_uring refused by seccomp. */
static int child_no_uring(void)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
		BPF_STMT(BPF_RET | BPF_K,
			 SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { TC_ARRAY_SIZE(f), f };
	struct tc__gpu_load_opts o = {
		.nthreads = 2, .depth = 2, .direct = 1, .io = TC_IO_AUTO
	};
	struct tc__gpu_load_stats st;
	struct tc__digest *ch;
	struct tc__gpu_mem m;
	char err[512];
	struct ref r;
	int rc;

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) ||
	    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog))
		return 10;
	ref_open(&r, t_data("many-tensors.safetensors"));
	ch = calloc(r.nchunks + 1, sizeof(*ch));
	tc__gpu_mem_init(&m);
	if (tc__gpu_alloc(0, r.src->table.total_bytes, 0, &m, err,
			  sizeof(err)) < 0) {
		fprintf(stderr, "alloc: %s\n", err);
		return 11;
	}
	rc = tc__gpu_load_source(r.src, &m, &o, ch, NULL, &st, err,
				 sizeof(err));
	/* auto tries io_uring for O_DIRECT reads (where the file system
	 * has them), is refused, and reads with pread. */
	if (rc != 0 || st.uring_bytes != 0 ||
	    st.uring_errno != (direct_ok(r.src->files[0].name) ? EPERM : 0) ||
	    memcmp(ch, r.chunks, r.nchunks * sizeof(*ch))) {
		fprintf(stderr, "auto: rc %d uring_bytes %llu errno %d: %s\n",
			rc, (unsigned long long)st.uring_bytes, st.uring_errno,
			err);
		return 12;
	}
	o.io = TC_IO_URING;
	rc = tc__gpu_load_source(r.src, &m, &o, ch, NULL, &st, err,
				 sizeof(err));
	if (rc != -EPERM || !strstr(err, "io_uring is not available")) {
		fprintf(stderr, "uring: rc %d: %s\n", rc, err);
		return 13;
	}
	tc__gpu_release(&m);
	free(ch);
	ref_close(&r);
	return 0;
}

/* As in a container whose seccomp profile refuses io_uring (Docker's
 * default does): auto falls back to pread and says why; asking for
 * io_uring is a clear error. */
static void test_gpu_loader__no_uring_under_seccomp(void **state)
{
	pid_t pid = t_spawn_self((const char *const[]){ "no-uring", NULL },
				 NULL, -1, -1);

	assert_true(pid > 0);
	assert_int_equal(t_wait_status(pid), 0);
}

/*
 * xfer.h: every source to every sink it serves, bytes and digests as the
 * host loader's, the GPU sink allocated when empty and its tail past the
 * byte space zeroed (even over garbage, when refilled in place), GPU and
 * host memory out to host memory, files and native copies on disk
 * (hashed on the way; a refused write is the sink's failure, the digests
 * still right), and a pair it does not serve refused by name.
 */
static void test_gpu_loader__xfer_sources_and_sinks(void **state)
{
	struct tc__gpu_mem a, b;
	struct tc__digest *chunks;
	struct ref r;
	uint64_t n, tail;
	uint8_t *back, *host;
	char err[512];

	ref_open(&r, t_data("many-tensors.safetensors"));
	n = r.src->table.total_bytes;
	chunks = calloc(r.nchunks + 1, sizeof(*chunks));
	host = calloc(1, n + 1);
	tc__gpu_mem_init(&a);
	tc__gpu_mem_init(&b);

	/* files -> host memory */
	struct tc__xfer fh = { .from = TC_XFER_FROM_FILES,
			       .files = r.src,
			       .to = TC_XFER_TO_HOST,
			       .host_dst = host,
			       .nthreads = 2,
			       .chunks = chunks };
	assert_int_equal(tc__xfer_run(&fh, err, sizeof(err)), 0);
	assert_int_equal(fh.bytes, n);
	assert_memory_equal(host, r.bytes, n);
	assert_memory_equal(chunks, r.chunks, r.nchunks * sizeof(*chunks));

	/* files -> a GPU allocation the transfer makes */
	memset(chunks, 0, r.nchunks * sizeof(*chunks));
	struct tc__xfer fg = { .from = TC_XFER_FROM_FILES,
			       .files = r.src,
			       .to = TC_XFER_TO_GPU,
			       .gpu_dst = &a,
			       .ordinal = 0,
			       .alloc_bytes = n + 4096,
			       .nthreads = 2,
			       .chunks = chunks };
	assert_int_equal(tc__xfer_run(&fg, err, sizeof(err)), 0);
	assert_true(a.dptr != 0 && a.size >= n + 4096);
	back = malloc(a.size); /* the allocation is granularity-rounded */
	assert_int_equal(fg.stats.bytes, n);
	assert_memory_equal(chunks, r.chunks, r.nchunks * sizeof(*chunks));
	tail = a.size - n;
	assert_int_equal(tc__gpu_mem_read(&a, 0, back, n + tail, NULL, err,
					  sizeof(err)),
			 0);
	assert_memory_equal(back, r.bytes, n);
	for (uint64_t i = 0; i < tail; i++)
		assert_int_equal(back[n + i], 0);

	/* host -> GPU, staged and direct, refilled in place over garbage */
	for (int staged = 0; staged <= 1; staged++) {
		assert_int_equal(tc__gpu_memset8(0, a.dptr, 0xAB, a.size, NULL,
						 err, sizeof(err)),
				 0);
		struct tc__xfer hg = { .from = TC_XFER_FROM_HOST,
				       .host = r.bytes,
				       .staged = staged,
				       .bytes = n,
				       .to = TC_XFER_TO_GPU,
				       .gpu_dst = &a,
				       .ordinal = 0,
				       .nthreads = 2 };
		uint64_t dptr = a.dptr;

		assert_int_equal(tc__xfer_run(&hg, err, sizeof(err)), 0);
		assert_int_equal(a.dptr, dptr); /* no new allocation */
		assert_int_equal(tc__gpu_mem_read(&a, 0, back, a.size, NULL,
						  err, sizeof(err)),
				 0);
		assert_memory_equal(back, r.bytes, n);
		for (uint64_t i = n; i < a.size; i++)
			assert_int_equal(back[i], 0);
	}

	/* GPU -> GPU (device to device) */
	struct tc__xfer gg = { .from = TC_XFER_FROM_GPU,
			       .gpu_src = &a,
			       .bytes = n,
			       .to = TC_XFER_TO_GPU,
			       .gpu_dst = &b,
			       .ordinal = 0,
			       .alloc_bytes = n };
	assert_int_equal(tc__xfer_run(&gg, err, sizeof(err)), 0);
	assert_int_equal(
		tc__gpu_mem_read(&b, 0, back, n, NULL, err, sizeof(err)), 0);
	assert_memory_equal(back, r.bytes, n);

	/* GPU -> host memory, hashed on the way (on the GPU, and with
	 * TCAST_GPU_HASH_HOST on the host as each chunk arrives) */
	for (int on_host = 0; on_host <= 1; on_host++) {
		if (on_host)
			setenv("TCAST_GPU_HASH_HOST", "1", 1);
		memset(host, 0, n);
		memset(chunks, 0, r.nchunks * sizeof(*chunks));
		struct tc__xfer gh = { .from = TC_XFER_FROM_GPU,
				       .gpu_src = &a,
				       .bytes = n,
				       .to = TC_XFER_TO_HOST,
				       .host_dst = host,
				       .nthreads = 2,
				       .chunks = chunks };
		assert_int_equal(tc__xfer_run(&gh, err, sizeof(err)), 0);
		assert_memory_equal(host, r.bytes, n);
		assert_memory_equal(chunks, r.chunks,
				    r.nchunks * sizeof(*chunks));
		unsetenv("TCAST_GPU_HASH_HOST");
	}

	/* GPU -> a file (a memfd, pwrite through pinned staging), and host
	 * memory -> a file */
	for (int from_gpu = 0; from_gpu <= 1; from_gpu++) {
		int fd = memfd_create("xfer-test", MFD_CLOEXEC);

		assert_true(fd >= 0);
		assert_int_equal(ftruncate(fd, (off_t)n), 0);
		memset(chunks, 0, r.nchunks * sizeof(*chunks));
		struct tc__xfer gf = { .from = from_gpu ? TC_XFER_FROM_GPU :
							  TC_XFER_FROM_HOST,
				       .gpu_src = &a,
				       .host = r.bytes,
				       .bytes = n,
				       .to = TC_XFER_TO_HOST,
				       .host_fd = fd,
				       .nthreads = 2,
				       .chunks = chunks };
		assert_int_equal(tc__xfer_run(&gf, err, sizeof(err)), 0);
		assert_int_equal(gf.sink_rc, 0);
		memset(back, 0, n);
		assert_int_equal(pread(fd, back, n, 0), (ssize_t)n);
		assert_memory_equal(back, r.bytes, n);
		assert_memory_equal(chunks, r.chunks,
				    r.nchunks * sizeof(*chunks));
		/* a write the file refuses is the sink's failure, not the
		 * hash's: the digests still come */
		close(fd);
		fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		gf.host_fd = fd;
		memset(chunks, 0, r.nchunks * sizeof(*chunks));
		assert_int_equal(tc__xfer_run(&gf, err, sizeof(err)), 0);
		assert_int_equal(gf.sink_rc, -EBADF);
		assert_non_null(strstr(err, "cannot write the copy"));
		assert_memory_equal(chunks, r.chunks,
				    r.nchunks * sizeof(*chunks));
		close(fd);
	}

	/* host memory and GPU -> a native copy on disk (the shared disk's
	 * and the spill folder's writes), hashed on the way */
	{
		char *dir = t_tmpdir();
		int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

		assert_true(dfd >= 0);
		for (int from_gpu = 0; from_gpu <= 1; from_gpu++) {
			struct tc__native_tmp w;

			assert_int_equal(tc__native_begin(dfd, dir, n, &w, err,
							  sizeof(err)),
					 0);
			memset(chunks, 0, r.nchunks * sizeof(*chunks));
			struct tc__xfer hd = {
				.from = from_gpu ? TC_XFER_FROM_GPU :
						   TC_XFER_FROM_HOST,
				.gpu_src = &a,
				.host = r.bytes,
				.bytes = n,
				.to = TC_XFER_TO_DISK,
				.disk_dst = &w,
				.writers = 3,
				.nthreads = 2,
				.chunks = chunks
			};
			assert_int_equal(tc__xfer_run(&hd, err, sizeof(err)),
					 0);
			assert_int_equal(hd.sink_rc, 0);
			assert_memory_equal(chunks, r.chunks,
					    r.nchunks * sizeof(*chunks));
			int rfd = openat(w.dfd, TC_NATIVE_DATA,
					 O_RDONLY | O_CLOEXEC);

			assert_true(rfd >= 0);
			memset(back, 0, n);
			assert_int_equal(pread(rfd, back, n, 0), (ssize_t)n);
			assert_memory_equal(back, r.bytes, n);
			close(rfd);
			tc__native_abort(&w);
		}
		/* files -> disk: not served, said so */
		struct tc__native_tmp w;

		assert_int_equal(
			tc__native_begin(dfd, dir, n, &w, err, sizeof(err)), 0);
		struct tc__xfer fd_ = { .from = TC_XFER_FROM_FILES,
					.files = r.src,
					.to = TC_XFER_TO_DISK,
					.disk_dst = &w,
					.chunks = chunks };
		assert_int_equal(tc__xfer_run(&fd_, err, sizeof(err)),
				 TC_ENOTSUP);
		assert_non_null(strstr(err, "files to a disk copy"));
		tc__native_abort(&w);
		close(dfd);
		t_rmtree(dir);
		free(dir);
	}

	tc__gpu_release(&a);
	tc__gpu_release(&b);
	free(host);
	free(back);
	free(chunks);
	ref_close(&r);
}

/* A GPU whose hash kernels disagree with the host (a driver's or JIT's
 * bug) never makes a digest: the self-test refuses the kernels, with the
 * reason, and hashing falls back to the host, whose digests are right. */
/* HOST -> GPU with parts: the ranges the parts name come from another
 * GPU's allocation (at their own offsets there), the rest from host
 * memory at the same offsets, pinned (the gaps cross the pinned pieces),
 * staged or direct; parts out of order are refused. */
static void test_gpu_loader__xfer_parts(void **state)
{
	uint64_t n = (5 << 20) + 123, map = TC_ALIGN_UP(n, 4096);
	uint8_t *host = mmap(NULL, map, PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint8_t *back = malloc(n), *other = malloc(n);
	struct tc__gpu_mem sib, dst;
	struct tc__gpu_pinning pin;
	char err[512];

	assert_true(host != MAP_FAILED);
	for (uint64_t i = 0; i < n; i++) {
		host[i] = (uint8_t)(i * 131 + (i >> 16));
		other[i] = (uint8_t)~host[i];
	}
	/* GPU 1 holds other bytes, but the parts' ranges of ours: part 0
	 * (1.5 MiB, across pinned pieces) at 3 MiB there, part 1 at 0. */
	struct tc__xfer_part parts[2] = {
		{ .dst_off = (1 << 20) - 100,
		  .src_off = 3 << 20,
		  .len = (3 << 19) },
		{ .dst_off = 4 << 20, .src_off = 0, .len = 200 << 10 },
	};
	for (int k = 0; k < 2; k++)
		memcpy(other + parts[k].src_off, host + parts[k].dst_off,
		       parts[k].len);
	tc__gpu_mem_init(&sib);
	assert_int_equal(tc__gpu_alloc(1, n, 0, &sib, err, sizeof(err)), 0);
	assert_int_equal(tc__gpu_mem_write(&sib, 0, other, n, NULL, err,
					   sizeof(err)),
			 0);
	parts[0].src = parts[1].src = &sib;
	mprotect(host, map, PROT_READ);
	assert_int_equal(
		tc__gpu_pin(0, host, map, 1 << 20, &pin, err, sizeof(err)), 0);
	for (int how = 0; how < 3; how++) { /* pinned, staged, direct */
		struct tc__xfer x = { .from = TC_XFER_FROM_HOST,
				      .host = host,
				      .pin = how == 0 ? &pin : NULL,
				      .staged = how == 1,
				      .parts = parts,
				      .nparts = 2,
				      .bytes = n,
				      .to = TC_XFER_TO_GPU,
				      .gpu_dst = &dst,
				      .ordinal = 0,
				      .alloc_bytes = n,
				      .nthreads = 2 };

		tc__gpu_mem_init(&dst);
		assert_int_equal(tc__xfer_run(&x, err, sizeof(err)), 0);
		assert_int_equal(x.part_bytes, parts[0].len + parts[1].len);
		assert_int_equal(tc__gpu_mem_read(&dst, 0, back, n, NULL, err,
						  sizeof(err)),
				 0);
		assert_memory_equal(back, host, n);
		tc__gpu_release(&dst);
	}
	{
		struct tc__xfer_part bad[2] = { parts[1], parts[0] };
		struct tc__xfer x = { .from = TC_XFER_FROM_HOST,
				      .host = host,
				      .parts = bad,
				      .nparts = 2,
				      .bytes = n,
				      .to = TC_XFER_TO_GPU,
				      .gpu_dst = &dst,
				      .ordinal = 0,
				      .alloc_bytes = n };

		tc__gpu_mem_init(&dst);
		assert_int_equal(tc__xfer_run(&x, err, sizeof(err)), TC_EINVAL);
		assert_non_null(strstr(err, "overlaps"));
		tc__gpu_release(&dst);
	}
	tc__gpu_unpin(&pin);
	tc__gpu_release(&sib);
	munmap(host, map);
	free(back);
	free(other);
}

static void test_gpu_loader__hash_kernel_self_test(void **state)
{
	const uint64_t n = 5 * (1 << 20) + 77;
	struct tc__digest got[2], want;
	struct tc__gpu_mem m;
	uint8_t *src = malloc(n);
	char err[512];

	assert_non_null(src);
	for (uint64_t i = 0; i < n; i++)
		src[i] = (uint8_t)(i * 7 + (i >> 12));
	assert_int_equal(tc__gpu_alloc(1, n, 0, &m, err, sizeof(err)), 0);
	assert_int_equal(
		tc__gpu_mem_write(&m, 0, src, n, NULL, err, sizeof(err)), 0);
	setenv("TC_FAKECUDA_B3_WRONG", "1", 1);
	assert_int_equal(tc__gpu_hash_ready(1, err, sizeof(err)), TC_ENOTSUP);
	assert_non_null(strstr(err, "self-test"));
	unsetenv("TC_FAKECUDA_B3_WRONG");
	/* Refused for the process, even once the kernels would be right. */
	assert_int_equal(tc__gpu_hash_chunks_dev(&m, n, got, err, sizeof(err)),
			 TC_ENOTSUP);
	assert_int_equal(tc__gpu_hash_chunks(&m, n, 2, got, err, sizeof(err)),
			 0);
	for (int k = 0; k < 2; k++) {
		tc__hash256(src + (uint64_t)k * TC_CHUNK_BYTES,
			    k ? n - TC_CHUNK_BYTES : TC_CHUNK_BYTES, &want);
		assert_true(tc__digest_eq(&got[k], &want));
	}
	tc__gpu_release(&m);
	free(src);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		/* First: it needs a GPU whose kernels are not loaded yet. */
		cmocka_unit_test(test_gpu_loader__hash_kernel_self_test),
		cmocka_unit_test(test_gpu_loader__matches_host_loader),
		cmocka_unit_test(test_gpu_loader__multi_chunk_unaligned),
		cmocka_unit_test(test_gpu_loader__driver_failures),
		cmocka_unit_test(test_gpu_loader__staging_kept_between_loads),
		cmocka_unit_test(test_gpu_loader__too_small_destination),
		cmocka_unit_test(test_gpu_loader__ioring),
		cmocka_unit_test(test_gpu_loader__pin_and_copy_pinned),
		cmocka_unit_test(test_gpu_loader__no_uring_under_seccomp),
		cmocka_unit_test(test_gpu_loader__xfer_sources_and_sinks),
		cmocka_unit_test(test_gpu_loader__xfer_parts),
	};

	setenv("TCAST_CUDA_LIB", TC_FAKECUDA_PATH, 1);
	/* Sources under a folder named "sigbus" are copied from a mapping
	 * whose pages were not populated first (multi_chunk_unaligned). */
	setenv("TCAST_FAILPOINTS", "loader_no_populate=sigbus", 1);
	if (argc >= 3 && !strcmp(argv[1], "--child") &&
	    !strcmp(argv[2], "no-uring"))
		return child_no_uring();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
