/*
 * test_gpu_real.c - src/gpu against the real CUDA driver.
 *
 * Run on a GPU machine: build, then `build/tests/test_gpu_real` (or ctest -R
 * gpu/test_gpu_real).  Exits 77 (skipped) when libcuda.so.1 cannot be
 * loaded, no GPU is visible, or the GPU lacks VMM with POSIX fds.
 *
 * What it proves, with the facts it measures printed as "[info]" lines:
 *   - the driver table loads (real symbol names) and devices enumerate
 *     with UUIDs;
 *   - exportable VMM allocations round-trip data (sync, async, memset,
 *     device-to-device), and a read-only import refuses device writes
 *     while the context stays usable;
 *   - cuMemHostRegister of a memfd mapping works (also read-only), and the
 *     pinned vs pageable copy rates;
 *   - a TC_GPU_TEST_BYTES (default 1 GiB) allocation exported as an fd,
 *     passed with SCM_RIGHTS to a freshly exec'd child, imported read-only
 *     there (import + map timed), the fd closed at once, the exporter's
 *     allocation released, and the child still reads data whose checksum
 *     matches - the lifetime rule docs/gpu.md relies on;
 *   - out-of-memory is reported as such; no fd leaks; the caller's CUDA
 *     context is left as it was.
 *
 * Environment: TC_GPU_TEST_BYTES (size of the big allocation),
 * TC_GPU_TEST_DEVICE (ordinal, default 0), TCAST_CUDA_LIB (driver; ctest's
 * gpu/test_gpu_real_on_fake points it at the fake).
 */
#include <dlfcn.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <cmocka.h>

#include "tcast/errors.h"
#include "common/compiler.h"
#include "common/hash.h"
#include "common/log.h"
#include "gpu/vmm.h"
#include "gpu_test.h"

#define MiB ((uint64_t)1 << 20)
#define GiB ((uint64_t)1 << 30)

static int dev;	      /* TC_GPU_TEST_DEVICE */
static uint64_t big;  /* TC_GPU_TEST_BYTES */
static uint64_t gran; /* minimum granularity of dev */
static char err[512];

#define info(...)                              \
	do {                                   \
		printf("[info] " __VA_ARGS__); \
		fflush(stdout);                \
	} while (0)

#define check_ok(expr)                                                    \
	do {                                                              \
		int ret_ = (expr);                                        \
		if (ret_ != 0)                                            \
			fail_msg("%s = %s: %s", #expr, tc_err_name(ret_), \
				 err);                                    \
	} while (0)

static double gbps(uint64_t bytes, double ms)
{
	return ms > 0 ? (double)bytes / (ms * 1e6) : 0;
}

/* Page-aligned anonymous host memory, faulted in. */
static void *host_alloc(size_t n)
{
	void *p = mmap(NULL, n, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	memset(p, 0, n);
	return p;
}

/* ------------------------------------------------------------------------ */
/* The child: a second process that imports                                  */
/* ------------------------------------------------------------------------ */

struct big_req {
	uint64_t size;
	uint8_t uuid[TC_GPU_UUID_BYTES];
	struct tc__digest digest;
};

struct big_reply {
	int phase;	  /* 1: imported, 2: done */
	int ret;	  /* 0 or the failing tcast code */
	double import_ms; /* tc__gpu_import (import + reserve + map + access) */
	double import2_ms; /* a second, read-write import of the same fd */
	double d2h_ms;	   /* reading everything back */
	int data_ok;	   /* checksum matched, and again after the write try */
	int write_ret;	   /* memset through the read-only mapping */
	int write_cuda;	   /* its CUresult */
	int fd_delta;	   /* fds after minus before */
	int pinned;	   /* the read-back buffer was registered */
	char msg[256];
	char write_msg[256];
};

static int child_big(int sock)
{
	struct big_req req;
	struct big_reply rep;
	struct tc__gpu_mem ro, rw;
	struct tc__digest d;
	uint8_t *buf = NULL, go;
	double t0;
	int fd, ord = -1, fds0, ret;

	memset(&rep, 0, sizeof(rep));
	rep.phase = 1;
	if (t_recv(sock, &fd, &req, sizeof(req)) < 0 || fd < 0)
		return 3;
	fds0 = t_count_own_fds() - 1;
	ret = tc__gpu_init(rep.msg, sizeof(rep.msg));
	if (ret < 0)
		goto out_report;
	ord = tc__gpu_device_find(req.uuid, rep.msg, sizeof(rep.msg));
	if (ord < 0) {
		ret = ord;
		goto out_report;
	}
	t0 = t_now_ms();
	tc__log_level = TC_LOG_DEBUG; /* the driver calls of a slow import */
	ret = tc__gpu_import(ord, fd, req.size, TC_GPU_READ_ONLY, &ro, rep.msg,
			     sizeof(rep.msg));
	rep.import_ms = t_now_ms() - t0;
	if (ret == 0) {
		t0 = t_now_ms();
		ret = tc__gpu_import(ord, fd, req.size, 0, &rw, rep.msg,
				     sizeof(rep.msg));
		rep.import2_ms = t_now_ms() - t0;
		tc__gpu_release(&rw);
	}
	/* Close our fd now: the imported handle must keep the memory. */
	close(fd);
	fd = -1;
out_report:
	rep.ret = ret;
	if (t_send(sock, -1, &rep, sizeof(rep)) < 0 || ret < 0)
		return ret < 0 ? 0 : 3;

	/* Wait until the exporter has released its allocation. */
	if (t_recv(sock, NULL, &go, 1) < 0)
		return 3;
	rep.phase = 2;
	buf = host_alloc(req.size);
	if (!buf) {
		rep.ret = -ENOMEM;
		goto out_done;
	}
	/* Pinned only for speed: carry on pageable if it is refused. */
	rep.pinned = tc__gpu_host_register(ord, buf, req.size, 0, NULL, 0) == 0;
	t0 = t_now_ms();
	rep.ret = tc__gpu_mem_read(&ro, 0, buf, req.size, NULL, rep.msg,
				   sizeof(rep.msg));
	rep.d2h_ms = t_now_ms() - t0;
	if (rep.ret == 0) {
		tc__hash256(buf, req.size, &d);
		rep.data_ok = !memcmp(&d, &req.digest, sizeof(d));
		rep.write_ret = tc__gpu_memset8(ord, ro.dptr, 0xEE, 4096, NULL,
						rep.write_msg,
						sizeof(rep.write_msg));
		rep.write_cuda = tc__gpu_last_cuda_error();
		/* Unchanged, and the context still works after the refusal. */
		rep.ret = tc__gpu_mem_read(&ro, 0, buf, MiB, NULL, rep.msg,
					   sizeof(rep.msg));
		if (rep.ret == 0) {
			tc__hash256(buf, req.size, &d);
			rep.data_ok = rep.data_ok &&
				      !memcmp(&d, &req.digest, sizeof(d));
		}
	}
	if (rep.pinned)
		tc__gpu_host_unregister(ord, buf, NULL, 0);
out_done:
	tc__gpu_release(&ro);
	if (buf)
		munmap(buf, req.size);
	/* The driver opens descriptors of its own as features are first
	 * used (device nodes, eventfds, shared memory), so the leak check is
	 * on repeated work once it is warm: export, import, release. */
	(void)fds0;
	{
		int warm = t_count_own_fds();

		for (int k = 0; k < 3 && ord >= 0; k++) {
			struct tc__gpu_mem m2, m3;
			int xfd = -1;

			tc__gpu_mem_init(&m2);
			tc__gpu_mem_init(&m3);
			if (tc__gpu_alloc(ord, 2 * MiB, 0, &m2, NULL, 0) == 0 &&
			    tc__gpu_export(&m2, &xfd, NULL, 0) == 0)
				tc__gpu_import(ord, xfd, m2.size,
					       TC_GPU_READ_ONLY, &m3, NULL, 0);
			if (xfd >= 0)
				close(xfd);
			tc__gpu_release(&m3);
			tc__gpu_release(&m2);
			if (k == 0)
				warm = t_count_own_fds();
		}
		rep.fd_delta = t_count_own_fds() - warm;
	}
	if (t_send(sock, -1, &rep, sizeof(rep)) < 0)
		return 3;
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Cases                                                                     */
/* ------------------------------------------------------------------------ */

static void test_real__devices(void **state)
{
	struct tc__gpu_info gi;
	uint8_t u[TC_GPU_UUID_BYTES];
	uint64_t fr, tot, rec;
	int n = tc__gpu_device_count(err, sizeof(err));

	assert_true(n > 0);
	for (int i = 0; i < n; i++) {
		check_ok(tc__gpu_device_info(i, &gi, err, sizeof(err)));
		info("GPU %d: %s %s pci %s cc %d.%d, %d SMs, %.1f GiB; vmm %d "
		     "posix_fd %d rdma %d host_register %d (read-only %d)\n",
		     i, gi.name, gi.uuid_str, gi.pci_bus_id, gi.cc_major,
		     gi.cc_minor, gi.sm_count, (double)gi.total_bytes / GiB,
		     gi.vmm, gi.posix_fd, gi.rdma, gi.host_register,
		     gi.host_register_ro);
		assert_int_equal(tc__gpu_device_find(gi.uuid, err, sizeof(err)),
				 i);
		assert_int_equal(tc__gpu_uuid_parse(gi.uuid_str, u), 0);
		assert_memory_equal(u, gi.uuid, sizeof(u));
	}
	check_ok(tc__gpu_granularity(dev, &gran, &rec, err, sizeof(err)));
	info("GPU %d VMM granularity: minimum %" PRIu64
	     " B, recommended %" PRIu64 " B\n",
	     dev, gran, rec);
	check_ok(tc__gpu_mem_info(dev, &fr, &tot, err, sizeof(err)));
	info("GPU %d memory: %.2f GiB free of %.2f GiB\n", dev,
	     (double)fr / GiB, (double)tot / GiB);
	assert_int_equal(tc__gpu_device_info(n, &gi, err, sizeof(err)),
			 TC_EDEVICE);
}

static void test_real__small_roundtrip(void **state)
{
	const size_t n = 8 * MiB;
	struct tc__gpu_mem m, ro;
	struct tc__gpu_stream *s;
	struct tc__gpu_event *e0, *e1;
	uint8_t *src = malloc(n), *dst = malloc(n);
	int fd, fds = t_count_fds();
	float ms;

	assert_true(src && dst);
	t_fill_pattern(src, n, 1);
	check_ok(tc__gpu_alloc(dev, n - 1, 0, &m, err, sizeof(err)));
	assert_int_equal(m.size % gran, 0);
	assert_true(m.size >= n - 1);
	assert_true(m.fd >= 0);
	check_ok(tc__gpu_mem_write(&m, 0, src, n, NULL, err, sizeof(err)));
	memset(dst, 0, n);
	check_ok(tc__gpu_mem_read(&m, 0, dst, n, NULL, err, sizeof(err)));
	assert_memory_equal(src, dst, n);

	check_ok(tc__gpu_dtod(dev, m.dptr, m.dptr + n / 2, n / 2, NULL, err,
			      sizeof(err)));
	check_ok(tc__gpu_memset8(dev, m.dptr + n / 2, 0x3C, 4096, NULL, err,
				 sizeof(err)));
	check_ok(tc__gpu_mem_read(&m, 0, dst, n, NULL, err, sizeof(err)));
	assert_memory_equal(dst, src + n / 2, n / 2);
	for (int i = 0; i < 4096; i++)
		assert_int_equal(dst[n / 2 + i], 0x3C);

	check_ok(tc__gpu_stream_create(dev, &s, err, sizeof(err)));
	check_ok(tc__gpu_event_create(dev, TC_GPU_EVENT_TIMING, &e0, err,
				      sizeof(err)));
	check_ok(tc__gpu_event_create(dev, TC_GPU_EVENT_TIMING, &e1, err,
				      sizeof(err)));
	check_ok(tc__gpu_event_record(e0, s, err, sizeof(err)));
	check_ok(tc__gpu_mem_write(&m, 0, src, n, s, err, sizeof(err)));
	check_ok(tc__gpu_mem_read(&m, 0, dst, n, s, err, sizeof(err)));
	check_ok(tc__gpu_event_record(e1, s, err, sizeof(err)));
	check_ok(tc__gpu_stream_sync(s, err, sizeof(err)));
	assert_memory_equal(src, dst, n);
	check_ok(tc__gpu_event_elapsed_ms(e0, e1, &ms, err, sizeof(err)));
	info("async pageable %zu MiB write+read on a stream: %.3f ms\n",
	     n / MiB, ms);

	/* Read-only import of our own export: writes refused, data intact,
	 * context still usable. */
	check_ok(tc__gpu_export(&m, &fd, err, sizeof(err)));
	check_ok(tc__gpu_import(dev, fd, m.size, TC_GPU_READ_ONLY, &ro, err,
				sizeof(err)));
	close(fd);
	assert_int_equal(tc__gpu_memset8(dev, ro.dptr, 0, 4096, NULL, err,
					 sizeof(err)),
			 TC_ECUDA);
	info("memset into a read-only mapping: %s\n", err);
	assert_int_equal(tc__gpu_mem_write(&ro, 0, dst, 4096, NULL, err,
					   sizeof(err)),
			 TC_ECUDA);
	info("copy into a read-only mapping: %s\n", err);
	check_ok(tc__gpu_mem_read(&ro, 0, dst, n, NULL, err, sizeof(err)));
	assert_memory_equal(src, dst, n);
	check_ok(tc__gpu_mem_write(&m, 0, src, 4096, NULL, err, sizeof(err)));

	tc__gpu_event_free(e0);
	tc__gpu_event_free(e1);
	tc__gpu_stream_free(s);
	tc__gpu_release(&ro);
	tc__gpu_release(&m);
	free(src);
	free(dst);
	assert_int_equal(t_count_fds(), fds);
}

static void test_real__host_register(void **state)
{
	const size_t n = TC_MIN(big, 256 * MiB);
	struct tc__gpu_mem m;
	uint8_t *rw, *ro, *pageable;
	double t0, t_pin, t_page, t_reg;
	int fd = memfd_create("tcast-test", MFD_CLOEXEC), ret;

	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)n), 0);
	rw = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ro = mmap(NULL, n, PROT_READ, MAP_SHARED, fd, 0);
	assert_true(rw != MAP_FAILED && ro != MAP_FAILED);
	t_fill_pattern(rw, n, 5);
	pageable = malloc(n);
	assert_non_null(pageable);
	memcpy(pageable, rw, n);
	check_ok(tc__gpu_alloc(dev, n, 0, &m, err, sizeof(err)));

	t0 = t_now_ms();
	check_ok(tc__gpu_host_register(dev, rw, n, 0, err, sizeof(err)));
	t_reg = t_now_ms() - t0;
	/* Warm up once, then time. */
	check_ok(tc__gpu_mem_write(&m, 0, rw, n, NULL, err, sizeof(err)));
	t0 = t_now_ms();
	check_ok(tc__gpu_mem_write(&m, 0, rw, n, NULL, err, sizeof(err)));
	t_pin = t_now_ms() - t0;
	t0 = t_now_ms();
	check_ok(tc__gpu_mem_write(&m, 0, pageable, n, NULL, err, sizeof(err)));
	t_page = t_now_ms() - t0;
	info("cuMemHostRegister of %zu MiB memfd mapping: %.2f ms\n", n / MiB,
	     t_reg);
	info("H2D %zu MiB: pinned memfd %.1f GB/s, pageable %.1f GB/s\n",
	     n / MiB, gbps(n, t_pin), gbps(n, t_page));
	check_ok(tc__gpu_host_unregister(dev, rw, err, sizeof(err)));

	/* Read-only mapping (what a sealed memfd gives a client). */
	ret = tc__gpu_host_register(dev, ro, n, 0, err, sizeof(err));
	info("register of a PROT_READ mapping without READ_ONLY: %s%s\n",
	     ret ? "refused: " : "accepted", ret ? err : "");
	if (ret == 0)
		check_ok(tc__gpu_host_unregister(dev, ro, err, sizeof(err)));
	check_ok(tc__gpu_host_register(dev, ro, n, TC_GPU_READ_ONLY, err,
				       sizeof(err)));
	check_ok(tc__gpu_mem_write(&m, 0, ro, n, NULL, err, sizeof(err)));
	check_ok(tc__gpu_host_unregister(dev, ro, err, sizeof(err)));
	assert_int_equal(tc__gpu_host_unregister(dev, ro, err, sizeof(err)),
			 TC_ECUDA);
	info("unregister twice: %s\n", err);

	tc__gpu_release(&m);
	free(pageable);
	munmap(rw, n);
	munmap(ro, n);
	close(fd);
}

static void test_real__import_big_in_child(void **state)
{
	struct tc__gpu_mem m;
	struct tc__gpu_info gi;
	struct big_req req;
	struct big_reply rep;
	uint8_t *stage, go = 1;
	double t0, t_alloc, t_fill;
	int pinned;
	int sock = -1, fds = t_count_fds();
	pid_t pid;
	int fd_memfd = memfd_create("tcast-stage", MFD_CLOEXEC);

	/* Stage the pattern in a pinned memfd, as the daemon will. */
	assert_true(fd_memfd >= 0);
	assert_int_equal(ftruncate(fd_memfd, (off_t)big), 0);
	stage = mmap(NULL, big, PROT_READ | PROT_WRITE, MAP_SHARED, fd_memfd,
		     0);
	assert_true(stage != MAP_FAILED);
	t_fill_pattern(stage, big, 77);
	memset(&req, 0, sizeof(req));
	tc__hash256(stage, big, &req.digest);
	pinned = tc__gpu_host_register(dev, stage, big, 0, err, sizeof(err));
	if (pinned < 0)
		info("staging stays pageable: %s\n", err);

	t0 = t_now_ms();
	check_ok(tc__gpu_alloc(dev, big, 0, &m, err, sizeof(err)));
	t_alloc = t_now_ms() - t0;
	t0 = t_now_ms();
	check_ok(tc__gpu_mem_write(&m, 0, stage, big, NULL, err, sizeof(err)));
	t_fill = t_now_ms() - t0;
	info("%.0f MiB: alloc+export+map %.2f ms; fill from %s memfd "
	     "%.1f GB/s\n",
	     (double)big / MiB, t_alloc, pinned == 0 ? "pinned" : "pageable",
	     gbps(big, t_fill));
	if (pinned == 0)
		check_ok(tc__gpu_host_unregister(dev, stage, err, sizeof(err)));
	munmap(stage, big);
	close(fd_memfd);

	check_ok(tc__gpu_device_info(dev, &gi, err, sizeof(err)));
	req.size = m.size;
	memcpy(req.uuid, gi.uuid, sizeof(req.uuid));
	pid = t_spawn_child("big", NULL, &sock);
	assert_true(pid > 0);
	assert_int_equal(t_send(sock, m.fd, &req, sizeof(req)), 0);
	assert_int_equal(t_recv(sock, NULL, &rep, sizeof(rep)), 0);
	if (rep.ret)
		fail_msg("child import failed: %s (%s)", rep.msg,
			 tc_err_name(rep.ret));
	info("child: import+map read-only %.0f MiB in %.3f ms (second, "
	     "read-write: %.3f ms)\n",
	     (double)big / MiB, rep.import_ms, rep.import2_ms);

	/* The exporter lets go first; the importer must keep the memory. */
	tc__gpu_release(&m);
	assert_int_equal(t_send(sock, -1, &go, 1), 0);
	assert_int_equal(t_recv(sock, NULL, &rep, sizeof(rep)), 0);
	close(sock);
	assert_int_equal(t_wait_status(pid), 0);
	if (rep.ret)
		fail_msg("child read failed: %s (%s)", rep.msg,
			 tc_err_name(rep.ret));
	info("child: read back (%s) %.1f GB/s after the exporter released; "
	     "checksum %s\n",
	     rep.pinned ? "pinned" : "pageable", gbps(big, rep.d2h_ms),
	     rep.data_ok ? "matches" : "DIFFERS");
	info("child: write through read-only mapping -> %s (%s)\n",
	     tc_err_name(rep.write_ret), rep.write_msg);
	assert_true(rep.data_ok);
	assert_int_equal(rep.write_ret, TC_ECUDA);
	assert_int_equal(rep.fd_delta, 0);
	assert_int_equal(t_count_fds(), fds);
}

static void test_real__out_of_memory(void **state)
{
	struct tc__gpu_mem m;
	uint64_t fr, tot;
	int fds = t_count_fds();

	check_ok(tc__gpu_mem_info(dev, &fr, &tot, err, sizeof(err)));
	assert_int_equal(tc__gpu_alloc(dev, tot + gran, 0, &m, err,
				       sizeof(err)),
			 TC_ECUDA);
	info("allocating more than the GPU has: %s\n", err);
	assert_true(tc__gpu_last_error_oom());
	assert_int_equal(m.fd, -1);
	assert_int_equal(t_count_fds(), fds);
}

static void test_real__context_restored(void **state)
{
	typedef int (*get_fn)(void **);
	typedef int (*set_fn)(void *);
	const char *path;
	void *dl, *cur = (void *)1;
	uint64_t fr, tot;
	get_fn get;
	set_fn set;
	int v;

	check_ok(tc__gpu_driver_version(&v, &path, err, sizeof(err)));
	dl = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
	assert_non_null(dl);
	get = (get_fn)dlsym(dl, "cuCtxGetCurrent");
	set = (set_fn)dlsym(dl, "cuCtxSetCurrent");
	assert_true(get && set);
	assert_int_equal(set(NULL), 0);
	check_ok(tc__gpu_mem_info(dev, &fr, &tot, err, sizeof(err)));
	assert_int_equal(get(&cur), 0);
	assert_null(cur);
	dlclose(dl);
}

/* A blocking memset or device-to-device copy (s == NULL) is finished when
 * it returns: work queued at once on a non-blocking stream (as the
 * loader's and every client's are) sees its result.  The driver's own
 * cuMemsetD8 / cuMemcpyDtoD return before the device is done. */
/* The last MiB of m, read on a non-blocking stream, is all v. */
static void expect_tail(const struct tc__gpu_mem *m, uint64_t n,
			struct tc__gpu_stream *s, uint8_t *tail, uint8_t v,
			const char *what)
{
	check_ok(tc__gpu_mem_read(m, n - (1 << 20), tail, 1 << 20, s, err,
				  sizeof(err)));
	check_ok(tc__gpu_stream_sync(s, err, sizeof(err)));
	for (int i = 0; i < 1 << 20; i++)
		if (tail[i] != v)
			fail_msg("%s not done: byte %d is %#x", what, i,
				 tail[i]);
}

static void test_real__blocking_means_done(void **state)
{
	uint64_t n = (uint64_t)2 << 30;
	struct tc__gpu_mem a, b;
	struct tc__gpu_stream *s;
	uint8_t *tail = malloc(1 << 20);

	tc__gpu_mem_init(&a);
	tc__gpu_mem_init(&b);
	check_ok(tc__gpu_alloc(dev, n, 0, &a, err, sizeof(err)));
	check_ok(tc__gpu_alloc(dev, n, 0, &b, err, sizeof(err)));
	check_ok(tc__gpu_stream_create(dev, &s, err, sizeof(err)));
	for (int round = 0; round < 4; round++) {
		uint8_t v = (uint8_t)(0x11 * (round + 1));

		check_ok(tc__gpu_memset8(dev, a.dptr, v, n, NULL, err,
					 sizeof(err)));
		expect_tail(&a, n, s, tail, v, "memset");
		check_ok(tc__gpu_dtod(dev, b.dptr, a.dptr, n, NULL, err,
				      sizeof(err)));
		expect_tail(&b, n, s, tail, v, "dtod");
	}
	tc__gpu_stream_free(s);
	tc__gpu_release(&a);
	tc__gpu_release(&b);
	free(tail);
}

/* The chunk-hash kernels on this GPU give the host's digests: every chunk
 * of `big` bytes less an odd tail (a short last chunk, a partial leaf and
 * block), timed. */
static void test_real__chunk_hash(void **state)
{
	uint64_t n = big - 4093, nch = tc__chunk_count(n);
	struct tc__digest *got = calloc(nch, sizeof(*got)), want;
	uint8_t *src = malloc(n);
	struct timespec t0, t1;
	struct tc__gpu_mem m;
	double s;

	assert_true(got && src);
	t_fill_pattern(src, n, 7);
	check_ok(tc__gpu_hash_ready(dev, err, sizeof(err)));
	check_ok(tc__gpu_alloc(dev, n, 0, &m, err, sizeof(err)));
	check_ok(tc__gpu_mem_write(&m, 0, src, n, NULL, err, sizeof(err)));
	check_ok(tc__gpu_hash_chunks_dev(&m, n, got, err, sizeof(err)));
	clock_gettime(CLOCK_MONOTONIC, &t0);
	check_ok(tc__gpu_hash_chunks_dev(&m, n, got, err, sizeof(err)));
	clock_gettime(CLOCK_MONOTONIC, &t1);
	s = (double)(t1.tv_sec - t0.tv_sec) +
	    (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	info("chunk hash on the GPU: %llu MiB in %.3f ms, %.1f GB/s\n",
	     (unsigned long long)(n / MiB), s * 1e3, (double)n / s / 1e9);
	for (uint64_t k = 0; k < nch; k++) {
		tc__hash256(src + k * TC_CHUNK_BYTES,
			    TC_MIN(TC_CHUNK_BYTES, n - k * TC_CHUNK_BYTES),
			    &want);
		if (!tc__digest_eq(&got[k], &want))
			fail_msg("chunk %llu: the GPU's digest differs",
				 (unsigned long long)k);
	}
	tc__gpu_release(&m);
	free(src);
	free(got);
}

static double ms_since(const struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) * 1e3 +
	       (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

/*
 * A put's copy fused with its hash (tc__gpu_copy_hash) against the two
 * passes it replaces (1,000 copies on a stream, then the chunk hash of the
 * result), on `big` bytes cut into 1,000 tensors laid out as a table lays
 * them (256-byte aligned, odd sizes, one source not 16-byte aligned): the
 * same bytes and digests, each timed (best of 3).
 */
static void test_real__copy_hash(void **state)
{
	enum { NT = 1000 };
	uint64_t each = big / NT / 256 * 256 - 256, n, nch;
	struct tc__gpu_seg *segs = calloc(NT, sizeof(*segs));
	struct tc__digest *d1, *d2;
	struct tc__gpu_mem a, b, c;
	struct tc__gpu_stream *s;
	double fused = 1e30, two = 1e30, copy = 1e30;

	(void)state;
	assert_non_null(segs);
	for (int i = 0; i < NT; i++) {
		uint64_t len = each - (uint64_t)(i % 7) * 13;

		segs[i].off = (uint64_t)i * each;
		segs[i].len = len;
		segs[i].src = (uint64_t)i * each + (i == 17 ? 3 : 0);
	}
	n = segs[NT - 1].off + segs[NT - 1].len;
	nch = tc__chunk_count(n);
	d1 = calloc(tc__chunk_count(big), sizeof(*d1));
	d2 = calloc(tc__chunk_count(big), sizeof(*d2));
	assert_true(d1 && d2);
	check_ok(tc__gpu_alloc(dev, big, 0, &a, err, sizeof(err)));
	check_ok(tc__gpu_alloc(dev, big, 0, &b, err, sizeof(err)));
	check_ok(tc__gpu_alloc(dev, big, 0, &c, err, sizeof(err)));
	check_ok(tc__gpu_memset8(dev, a.dptr, 0x3C, big, NULL, err,
				 sizeof(err)));
	check_ok(tc__gpu_memset8(dev, a.dptr, 0x5D, big / 3, NULL, err,
				 sizeof(err)));
	for (int i = 0; i < NT; i++)
		segs[i].src += a.dptr;
	check_ok(tc__gpu_stream_create(dev, &s, err, sizeof(err)));
	for (int r = 0; r < 3; r++) {
		struct timespec t0;

		check_ok(tc__gpu_memset8(dev, b.dptr, 0, big, NULL, err,
					 sizeof(err)));
		clock_gettime(CLOCK_MONOTONIC, &t0);
		check_ok(tc__gpu_copy_hash(dev, b.dptr, n, segs, NT, d1, err,
					   sizeof(err)));
		fused = TC_MIN(fused, ms_since(&t0));

		check_ok(tc__gpu_memset8(dev, c.dptr, 0, big, NULL, err,
					 sizeof(err)));
		clock_gettime(CLOCK_MONOTONIC, &t0);
		for (int i = 0; i < NT; i++)
			check_ok(tc__gpu_dtod(dev, c.dptr + segs[i].off,
					      segs[i].src, segs[i].len, s, err,
					      sizeof(err)));
		check_ok(tc__gpu_stream_sync(s, err, sizeof(err)));
		copy = TC_MIN(copy, ms_since(&t0));
		check_ok(tc__gpu_hash_chunks_dev(&c, n, d2, err, sizeof(err)));
		two = TC_MIN(two, ms_since(&t0));
	}
	for (uint64_t k = 0; k < nch; k++)
		if (!tc__digest_eq(&d1[k], &d2[k]))
			fail_msg(
				"chunk %llu: fused and two-pass digests differ",
				(unsigned long long)k);
	/* The bytes too, gaps and what lies past n included: the two
	 * destinations hash equal over all of big. */
	check_ok(tc__gpu_hash_chunks_dev(&b, big, d1, err, sizeof(err)));
	check_ok(tc__gpu_hash_chunks_dev(&c, big, d2, err, sizeof(err)));
	for (uint64_t k = 0; k < tc__chunk_count(big); k++)
		if (!tc__digest_eq(&d1[k], &d2[k]))
			fail_msg("chunk %llu: the fused copy wrote other bytes",
				 (unsigned long long)k);
	info("put of %llu MiB as %d tensors: copy + hash fused %.3f ms "
	     "(%.1f GB/s); 1,000 copies %.3f ms then hash: %.3f ms "
	     "(%.1f GB/s)\n",
	     (unsigned long long)(n / MiB), NT, fused, gbps(n, fused), copy,
	     two, gbps(n, two));
	tc__gpu_stream_free(s);
	tc__gpu_release(&a);
	tc__gpu_release(&b);
	tc__gpu_release(&c);
	free(segs);
	free(d1);
	free(d2);
}

/*
 * Could a put beat the fused kernel with two streams?  The chunk hash is
 * bound by integer arithmetic, a copy by memory bandwidth: the same 1,000
 * tensors as test_real__copy_hash copied on one stream, each 256 MiB of
 * the result hashed on a second stream behind an event as soon as its
 * copies are done, so the hash of one piece runs beside the copies of the
 * next.  Timed (best of 3) beside the hash alone and the copies alone;
 * the digests must equal the fused kernel's.  Informational: which way
 * the put should go.
 */
/* Chunks one tc__gpu_hash_chunks_async call takes at most. */
#define HASH_CALL_CHUNKS 256

static void test_real__copy_hash_streams(void **state)
{
	enum { NT = 1000, NEV = 64 };
	const uint64_t piece = (uint64_t)256 << 20;
	uint64_t each = big / NT / 256 * 256 - 256, n, nch, scratch_len;
	struct tc__gpu_seg *segs = calloc(NT, sizeof(*segs));
	struct tc__digest *d1, *d2;
	struct tc__gpu_mem a, b, c, dig, scr;
	struct tc__gpu_stream *sa, *sb;
	struct tc__gpu_event *ev[NEV];
	double two = 1e30, hash = 1e30, copies = 1e30;

	(void)state;
	assert_non_null(segs);
	for (int i = 0; i < NT; i++) {
		segs[i].off = (uint64_t)i * each;
		segs[i].len = each - (uint64_t)(i % 7) * 13;
		segs[i].src = (uint64_t)i * each;
	}
	n = segs[NT - 1].off + segs[NT - 1].len;
	nch = tc__chunk_count(n);
	scratch_len = TC_ALIGN_UP(tc__gpu_hash_scratch_bytes(nch), 256);
	d1 = calloc(nch, sizeof(*d1));
	d2 = calloc(nch, sizeof(*d2));
	assert_true(d1 && d2);
	check_ok(tc__gpu_alloc(dev, big, 0, &a, err, sizeof(err)));
	check_ok(tc__gpu_alloc(dev, big, 0, &b, err, sizeof(err)));
	check_ok(tc__gpu_alloc(dev, big, 0, &c, err, sizeof(err)));
	check_ok(tc__gpu_alloc(dev, nch * TC_DIGEST_BYTES, 0, &dig, err,
			       sizeof(err)));
	check_ok(
		tc__gpu_alloc(dev, 2 * scratch_len, 0, &scr, err, sizeof(err)));
	check_ok(tc__gpu_memset8(dev, a.dptr, 0x47, big, NULL, err,
				 sizeof(err)));
	check_ok(tc__gpu_memset8(dev, a.dptr, 0x21, big / 5, NULL, err,
				 sizeof(err)));
	for (int i = 0; i < NT; i++)
		segs[i].src += a.dptr;
	check_ok(tc__gpu_stream_create(dev, &sa, err, sizeof(err)));
	check_ok(tc__gpu_stream_create(dev, &sb, err, sizeof(err)));
	for (int i = 0; i < NEV; i++)
		check_ok(
			tc__gpu_event_create(dev, 0, &ev[i], err, sizeof(err)));
	check_ok(tc__gpu_memset8(dev, b.dptr, 0, big, NULL, err, sizeof(err)));
	check_ok(tc__gpu_copy_hash(dev, b.dptr, n, segs, NT, d1, err,
				   sizeof(err)));
	for (int r = 0; r < 3; r++) {
		struct timespec t0;
		uint64_t h0 = 0;
		int ne = 0;

		/* The hash alone, of the fused result. */
		clock_gettime(CLOCK_MONOTONIC, &t0);
		for (uint64_t k = 0; k < nch; k += HASH_CALL_CHUNKS)
			check_ok(tc__gpu_hash_chunks_async(
				dev, b.dptr, n, k,
				TC_MIN((uint64_t)HASH_CALL_CHUNKS, nch - k),
				scr.dptr, dig.dptr, sb, err, sizeof(err)));
		check_ok(tc__gpu_stream_sync(sb, err, sizeof(err)));
		hash = TC_MIN(hash, ms_since(&t0));
		/* The copies alone. */
		clock_gettime(CLOCK_MONOTONIC, &t0);
		for (int i = 0; i < NT; i++)
			check_ok(tc__gpu_dtod(dev, c.dptr + segs[i].off,
					      segs[i].src, segs[i].len, sa, err,
					      sizeof(err)));
		check_ok(tc__gpu_stream_sync(sa, err, sizeof(err)));
		copies = TC_MIN(copies, ms_since(&t0));

		check_ok(tc__gpu_memset8(dev, c.dptr, 0, big, NULL, err,
					 sizeof(err)));
		clock_gettime(CLOCK_MONOTONIC, &t0);
		for (int i = 0; i < NT; i++) {
			uint64_t end = segs[i].off + segs[i].len, h1;

			check_ok(tc__gpu_dtod(dev, c.dptr + segs[i].off,
					      segs[i].src, segs[i].len, sa, err,
					      sizeof(err)));
			h1 = i == NT - 1 ? nch : end / TC_CHUNK_BYTES;
			h1 = TC_MIN(h1, h0 + HASH_CALL_CHUNKS);
			if (h1 > h0 && (i == NT - 1 ||
					(h1 - h0) * TC_CHUNK_BYTES >= piece)) {
				struct tc__gpu_event *e = ev[ne++ % NEV];

				check_ok(tc__gpu_event_record(e, sa, err,
							      sizeof(err)));
				check_ok(tc__gpu_stream_wait_event(
					sb, e, err, sizeof(err)));
				check_ok(tc__gpu_hash_chunks_async(
					dev, c.dptr, n, h0, h1 - h0,
					scr.dptr + (uint64_t)(ne % 2) *
							   scratch_len,
					dig.dptr, sb, err, sizeof(err)));
				h0 = h1;
			}
		}
		check_ok(tc__gpu_stream_sync(sb, err, sizeof(err)));
		two = TC_MIN(two, ms_since(&t0));
	}
	check_ok(tc__gpu_stream_sync(sa, err, sizeof(err)));
	check_ok(tc__gpu_mem_read(&dig, 0, d2, nch * TC_DIGEST_BYTES, NULL, err,
				  sizeof(err)));
	for (uint64_t k = 0; k < nch; k++)
		if (!tc__digest_eq(&d1[k], &d2[k]))
			fail_msg(
				"chunk %llu: two-stream and fused digests differ",
				(unsigned long long)k);
	info("put of %llu MiB as %d tensors on two streams (hash of each "
	     "256 MiB behind its copies): %.3f ms (%.1f GB/s); hash alone "
	     "%.3f ms (%.1f GB/s); copies alone %.3f ms (%.1f GB/s)\n",
	     (unsigned long long)(n / MiB), NT, two, gbps(n, two), hash,
	     gbps(n, hash), copies, gbps(n, copies));
	for (int i = 0; i < NEV; i++)
		tc__gpu_event_free(ev[i]);
	tc__gpu_stream_free(sa);
	tc__gpu_stream_free(sb);
	tc__gpu_release(&a);
	tc__gpu_release(&b);
	tc__gpu_release(&c);
	tc__gpu_release(&dig);
	tc__gpu_release(&scr);
	free(segs);
	free(d1);
	free(d2);
}

/* Milliseconds of the best of 5 d2d copies of n bytes: one blocking
 * copy, or (pieces > 1) that many equal pieces queued on one stream and
 * synchronised once, as a put of a model's tensors does. */
static double best_copy_ms(uint64_t dst, uint64_t src, uint64_t n,
			   uint64_t pieces)
{
	struct tc__gpu_stream *s = NULL;
	uint64_t each = n / pieces / 4096 * 4096; /* aligned, as tensors are */
	double best = 1e30, all[5];

	if (pieces > 1)
		check_ok(tc__gpu_stream_create(dev, &s, err, sizeof(err)));
	for (int r = 0; r < 5; r++) {
		struct timespec t0;
		double ms;

		clock_gettime(CLOCK_MONOTONIC, &t0);
		for (uint64_t i = 0; i < pieces; i++)
			check_ok(tc__gpu_dtod(
				dev, dst + i * each, src + i * each,
				pieces > 1 ? each : n, s, err, sizeof(err)));
		if (s)
			check_ok(tc__gpu_stream_sync(s, err, sizeof(err)));
		ms = ms_since(&t0);
		best = TC_MIN(best, ms);
		all[r] = ms;
	}
	/* Every run, not only the best: a copy that slows down from one run
	 * to the next (as swaps were seen to) shows here. */
	info("  runs: %.3f %.3f %.3f %.3f %.3f ms\n", all[0], all[1], all[2],
	     all[3], all[4]);
	tc__gpu_stream_free(s);
	return best;
}

/* A device-to-device copy moves exactly the bytes asked for at any
 * alignment; timed as one range and as 1,000 pieces on a stream (a put's
 * shape), the ceiling a swap or a put's copy is compared with. */
static void test_real__copy_d2d(void **state)
{
	static const uint64_t offs[][2] = { { 0, 0 }, { 1, 7 }, { 16, 3 } };
	uint64_t n = big - 4096;
	uint8_t *src = malloc(big), *back = malloc(big);
	struct tc__gpu_mem a, b;
	double ms;

	(void)state;
	assert_true(src && back);
	t_fill_pattern(src, big, 11);
	check_ok(tc__gpu_alloc(dev, big, 0, &a, err, sizeof(err)));
	check_ok(tc__gpu_alloc(dev, big, 0, &b, err, sizeof(err)));
	check_ok(tc__gpu_mem_write(&a, 0, src, big, NULL, err, sizeof(err)));
	for (int i = 0; i < 3; i++) {
		uint64_t so = offs[i][0], dof = offs[i][1], len = n - 4093 * i;

		check_ok(tc__gpu_memset8(dev, b.dptr, 0x5A, big, NULL, err,
					 sizeof(err)));
		check_ok(tc__gpu_dtod(dev, b.dptr + dof, a.dptr + so, len, NULL,
				      err, sizeof(err)));
		check_ok(tc__gpu_mem_read(&b, 0, back, big, NULL, err,
					  sizeof(err)));
		if (memcmp(back + dof, src + so, len))
			fail_msg("copy of %llu bytes (%llu -> %llu) differs",
				 (unsigned long long)len,
				 (unsigned long long)so,
				 (unsigned long long)dof);
		if (back[dof + len] != 0x5A || (dof && back[dof - 1] != 0x5A))
			fail_msg("the copy wrote outside its range");
	}
	for (int p = 0; p < 2; p++) {
		uint64_t pieces = p ? 1000 : 1, n2 = big / 4096 * 4096;

		ms = best_copy_ms(b.dptr, a.dptr, n2, pieces);
		info("d2d copy of %llu MiB as %llu piece(s): %.3f ms "
		     "(%.1f GB/s)\n",
		     (unsigned long long)(n2 / MiB), (unsigned long long)pieces,
		     ms, gbps(n2, ms));
	}
	tc__gpu_release(&a);
	tc__gpu_release(&b);
	free(src);
	free(back);
}

/* A 3D copy on the real driver (the CUDA_MEMCPY3D layout is ours, not a
 * header's): 5 blocks of 7 rows of 24 bytes, source rows 40 bytes apart
 * and blocks 11 rows apart, packed at the destination; from host memory
 * and device to device, each compared with the same gather on the host. */
static void test_real__copy_3d(void **state)
{
	enum { W = 24, H = 7, D = 5, SP = 40, SB = SP * 11 };
	uint8_t src[SB * D], want[W * H * D], got[W * H * D];
	struct tc__gpu_mem a, b;

	(void)state;
	t_fill_pattern(src, sizeof(src), 5);
	for (int z = 0; z < D; z++)
		for (int r = 0; r < H; r++)
			memcpy(want + (z * H + r) * W, src + z * SB + r * SP,
			       W);
	check_ok(tc__gpu_alloc(dev, sizeof(src), 0, &a, err, sizeof(err)));
	check_ok(tc__gpu_alloc(dev, sizeof(got), 0, &b, err, sizeof(err)));
	check_ok(tc__gpu_mem_write(&a, 0, src, sizeof(src), NULL, err,
				   sizeof(err)));
	for (int from_dev = 0; from_dev < 2; from_dev++) {
		check_ok(tc__gpu_memset8(dev, b.dptr, 0, b.size, NULL, err,
					 sizeof(err)));
		check_ok(tc__gpu_copy_3d(
			dev, b.dptr, true, W, W * H,
			from_dev ? a.dptr : (uint64_t)(uintptr_t)src, from_dev,
			SP, SB, W, H, D, NULL, err, sizeof(err)));
		check_ok(tc__gpu_mem_read(&b, 0, got, sizeof(got), NULL, err,
					  sizeof(err)));
		if (memcmp(got, want, sizeof(got)))
			fail_msg("3D copy from %s differs",
				 from_dev ? "device" : "host");
	}
	tc__gpu_release(&a);
	tc__gpu_release(&b);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_real__devices),
		cmocka_unit_test(test_real__small_roundtrip),
		cmocka_unit_test(test_real__host_register),
		cmocka_unit_test(test_real__import_big_in_child),
		cmocka_unit_test(test_real__out_of_memory),
		cmocka_unit_test(test_real__context_restored),
		cmocka_unit_test(test_real__blocking_means_done),
		cmocka_unit_test(test_real__chunk_hash),
		cmocka_unit_test(test_real__copy_d2d),
		cmocka_unit_test(test_real__copy_hash),
		cmocka_unit_test(test_real__copy_hash_streams),
		cmocka_unit_test(test_real__copy_3d),
	};
	struct tc__gpu_info gi;
	const char *path;
	int v, ret;

	if (argc == 4 && !strcmp(argv[1], "--child") && !strcmp(argv[2], "big"))
		return child_big(atoi(argv[3]));

	ret = t_gpu_start(&big, &dev);
	if (ret >= 0)
		return ret;
	tc__gpu_driver_version(&v, &path, NULL, 0);
	info("driver '%s', CUDA %d.%d, %d GPU(s) visible; testing GPU %d "
	     "with a %.0f MiB allocation\n",
	     path, v / 1000, v % 1000 / 10, tc__gpu_device_count(NULL, 0), dev,
	     (double)big / MiB);
	if (tc__gpu_device_info(dev, &gi, err, sizeof(err)) < 0) {
		printf("SKIP: %s\n", err);
		return 77;
	}
	if (!gi.vmm || !gi.posix_fd) {
		printf("SKIP: GPU %d (%s) lacks VMM with POSIX fds\n", dev,
		       gi.name);
		return 77;
	}
	/* TC_GPU_TEST_ONLY=pattern ("*copy_hash*"): one experiment in a
	 * short GPU session. */
	if (getenv("TC_GPU_TEST_ONLY"))
		cmocka_set_test_filter(getenv("TC_GPU_TEST_ONLY"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
