/*
 * test_gpu_tier_real.c - the daemon's GPU tier end to end on the real CUDA
 * driver: a real daemon, this process and freshly exec'd client processes
 * attaching one replica, read-only, budgets and eviction, a killed client,
 * attach/detach cycles without leaks, and a client that keeps reading
 * after the daemon is killed.
 *
 * Run on a GPU machine: `build/tests/test_gpu_tier_real` (or ctest -R
 * gpu/test_gpu_tier_real).  Exits 77 (skipped) without a driver, a GPU, or
 * VMM with POSIX fds.  ctest also runs it on the fake driver with a small
 * size (gpu/test_gpu_tier_real_on_fake) so it cannot rot.
 *
 * Environment: TC_GPU_TEST_BYTES (the large artifact, default 1 GiB),
 * TC_GPU_TEST_DEVICE (this process's ordinal, default 0), TCAST_CUDA_LIB.
 * Prints "[info]" lines: attach times (first = pin + allocate + copy in
 * the daemon; again = import + map only) and rates.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/hash.h"
#include "gpu/vmm.h"
#include "tcast/client.h"
#include "tcast/dlpack.h"
#include "tcast/errors.h"
#include "gpu_test.h"

#define MiB ((uint64_t)1 << 20)
#define GiB ((uint64_t)1 << 30)

static struct t_daemon D;
static int dev;	     /* TC_GPU_TEST_DEVICE */
static uint64_t big; /* TC_GPU_TEST_BYTES */

#define info(...)                              \
	do {                                   \
		printf("[info] " __VA_ARGS__); \
		fflush(stdout);                \
	} while (0)

/* A field of the daemon's GPU whose UUID is this process's `dev`. */
static long long gpu_stat(tc_client *c, const char *field)
{
	struct tc__gpu_info gi;
	json_t *j = t_status(c), *d;
	long long v = -1;
	size_t i;

	assert_int_equal(tc__gpu_device_info(dev, &gi, NULL, 0), 0);
	json_array_foreach(
		json_object_get(json_object_get(j, "gpu"), "devices"), i, d)
	{
		if (!strcmp(json_string_value(json_object_get(d, "uuid")),
			    gi.uuid_str))
			v = json_integer_value(json_object_get(d, field));
	}
	json_decref(j);
	return v;
}

static void put_blob(tc_client *c, const char *key, uint64_t bytes,
		     uint32_t seed)
{
	struct tc_tensor_desc d = { "blob", TC_DTYPE_U8, 1, &bytes };
	struct tc_opts o = { TC_OPT_KEY, key, NULL, 0, NULL, NULL, 0, 0 };
	uint64_t *w;
	tc_put *p;

	if (tc_put_begin(c, &d, 1, NULL, &o, &p) < 0)
		fail_msg("put: %s", tc_client_errmsg(c));
	w = tc_put_data(p, 0);
	for (uint64_t i = 0, x = seed * 0x9E3779B97F4A7C15ull + 1;
	     i < bytes / 8; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		w[i] = x + i;
	}
	if (tc_put_commit(p, NULL) < 0)
		fail_msg("commit: %s", tc_client_errmsg(c));
}

/* BLAKE3 of an attached artifact's byte space, read back in pinned-free
 * 64 MiB pieces wherever it lives. */
static struct tc__digest artifact_hash(tc_artifact *a)
{
	uint64_t n = tc_artifact_size(a), piece = 64 * MiB;
	struct tc__hasher *h = tc__hasher_new();
	struct tc__digest d;
	char err[256];
	void *buf = malloc(piece);

	assert_non_null(h);
	assert_non_null(buf);
	for (uint64_t off = 0; off < n; off += piece) {
		uint64_t k = n - off < piece ? n - off : piece;

		if (tc_artifact_device(a) < 0) {
			tc__hasher_update(
				h, (const uint8_t *)tc_artifact_data(a) + off,
				k);
			continue;
		}
		if (tc__gpu_dtoh(tc_artifact_device(a), buf,
				 (uint64_t)(uintptr_t)tc_artifact_data(a) + off,
				 k, NULL, err, sizeof(err)) < 0)
			fail_msg("dtoh: %s", err);
		tc__hasher_update(h, buf, k);
	}
	tc__hasher_final(h, &d);
	tc__hasher_free(h);
	free(buf);
	return d;
}

static struct tc__digest host_hash(tc_client *c, const char *ref)
{
	tc_artifact *a;
	struct tc__digest d;

	assert_int_equal(tc_attach(c, ref, &a), 0);
	d = artifact_hash(a);
	tc_artifact_close(a);
	return d;
}

static tc_artifact *attach_gpu_ok(tc_client *c, const char *ref)
{
	tc_artifact *a = NULL;
	int rc = tc_attach_gpu(c, ref, dev, &a);

	if (rc < 0)
		fail_msg("attach_gpu '%s': %s: %s", ref, tc_err_name(rc),
			 tc_client_errmsg(c));
	return a;
}

/* This binary as "--child MODE SOCK REF ORDINAL"; *out reads its stdout. */
static pid_t spawn(const char *mode, const char *ref, int *out)
{
	char ord[16];
	int p[2];
	pid_t pid;

	snprintf(ord, sizeof(ord), "%d", dev);
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	pid = t_spawn_self((const char *const[]){ mode, D.sock, ref, ord,
						  NULL },
			   NULL, p[1], -1);
	assert_true(pid > 0);
	close(p[1]);
	*out = p[0];
	return pid;
}

/* ---------------------------------------------------------------- child */

static int child_main(char **argv)
{
	const char *mode = argv[2], *sock = argv[3], *ref = argv[4];
	struct tc__digest d;
	char err[512], hex[TC_DIGEST_HEX + 1];
	tc_client *c;
	tc_artifact *a;
	double t0;
	int rc;

	dev = atoi(argv[5]);
	if (tc_client_connect(sock, &c, err, sizeof(err)) < 0) {
		printf("connect: %s\n", err);
		return 10;
	}
	t0 = t_now_ms();
	rc = tc_attach_gpu(c, ref, dev, &a);
	if (rc < 0) {
		printf("attach: %s: %s\n", tc_err_name(rc),
		       tc_client_errmsg(c));
		tc_client_close(c);
		return 12;
	}
	if (!strcmp(mode, "hash")) {
		double ms = t_now_ms() - t0;

		d = artifact_hash(a);
		tc__digest_hex(&d, hex);
		printf("%s %.3f\n", hex, ms);
	} else if (!strcmp(mode, "hold")) {
		printf("ready\n");
		fflush(stdout);
		pause();
	} else if (!strcmp(mode, "orphan")) {
		/* Keep reading after the parent kills the daemon. */
		char line[16];

		printf("ready\n");
		fflush(stdout);
		if (read(0, line, 1) < 0)
			return 13;
		d = artifact_hash(a);
		tc__digest_hex(&d, hex);
		printf("%s\n", hex);
	}
	tc_artifact_close(a);
	tc_client_close(c);
	return 0;
}

/* ----------------------------------------------------------------- tests */

/* A large replica: first attach fills it in the daemon, the next ones
 * only import; a second process reads the same bytes; writes fail. */
static void test_tier_real__large_attach(void **state)
{
	char hex[TC_DIGEST_HEX + 1], want[TC_DIGEST_HEX + 1], line[160];
	struct tc__digest hd, gd;
	double t0, first_ms, again_ms, child_ms;
	tc_client *c;
	tc_artifact *a, *b;
	void *dl;
	struct tc_DLManagedTensorVersioned *m;
	uint8_t before[256], after[256];
	char err[256];
	int fd, rc;
	pid_t pid;

	t_daemon_start(&D, "64GiB", NULL);
	c = t_connect(D.sock);
	put_blob(c, "big", big, 1);
	hd = host_hash(c, "big");
	tc__digest_hex(&hd, want);

	t0 = t_now_ms();
	a = attach_gpu_ok(c, "big");
	first_ms = t_now_ms() - t0;
	t0 = t_now_ms();
	b = attach_gpu_ok(c, "big");
	again_ms = t_now_ms() - t0;
	info("attach of a %.0f MiB replica on GPU %d: first %.1f ms (daemon "
	     "pins, allocates and copies: %.2f GB/s end to end), again %.3f "
	     "ms (import + map)\n",
	     (double)big / MiB, dev, first_ms,
	     (double)big / (first_ms / 1e3) / 1e9, again_ms);
	gd = artifact_hash(a);
	tc__digest_hex(&gd, hex);
	assert_string_equal(hex, want);
	assert_ptr_not_equal(tc_artifact_data(a), tc_artifact_data(b));

	/* DLPack: a kDLCUDA tensor on this process's ordinal. */
	assert_int_equal(tc_artifact_dlpack(a, 0, 1, &dl), 0);
	m = dl;
	assert_int_equal(m->dl_tensor.device.device_type, TC_kDLCUDA);
	assert_int_equal(m->dl_tensor.device.device_id, dev);
	m->deleter(m);

	/* Read-only: a device write fails and changes nothing. */
	assert_int_equal(tc__gpu_dtoh(dev, before,
				      (uint64_t)(uintptr_t)tc_artifact_data(b),
				      sizeof(before), NULL, err, sizeof(err)),
			 0);
	rc = tc__gpu_memset8(dev, (uint64_t)(uintptr_t)tc_artifact_data(b), 0,
			     sizeof(before), NULL, err, sizeof(err));
	info("memset into the read-only attach: %s: %s\n", tc_err_name(rc),
	     err);
	assert_int_equal(rc, TC_ECUDA);
	assert_int_equal(tc__gpu_dtoh(dev, after,
				      (uint64_t)(uintptr_t)tc_artifact_data(b),
				      sizeof(after), NULL, err, sizeof(err)),
			 0);
	assert_memory_equal(before, after, sizeof(before));

	/* Another process, same replica. */
	pid = spawn("hash", "big", &fd);
	t_read_line(fd, line, sizeof(line));
	close(fd);
	assert_int_equal(t_wait_status(pid), 0);
	assert_int_equal(sscanf(line, "%64s %lf", hex, &child_ms), 2);
	assert_string_equal(hex, want);
	info("attach in a second process: %.3f ms\n", child_ms);
	assert_int_equal(gpu_stat(c, "replicas"), 1);
	tc_artifact_close(b);
	tc_artifact_close(a);
	tc_client_close(c);
	assert_int_equal(t_daemon_stop(&D), 0);
}

/* Budget and eviction, a killed client, cycles without leaks. */
static void test_tier_real__budget_leases_cycles(void **state)
{
	uint64_t small = 64 * MiB;
	long long free0, free1;
	int dfd0, dfd1, fd;
	char line[64];
	tc_client *c;
	tc_artifact *a;
	pid_t pid;
	double t0;

	t_daemon_start(&D, "4GiB", "--set", "gpu_memory=160MiB", NULL);
	c = t_connect(D.sock);
	put_blob(c, "s1", small, 11);
	put_blob(c, "s2", small, 12);
	put_blob(c, "s3", small, 13);
	tc_artifact_close(attach_gpu_ok(c, "s1"));
	tc_artifact_close(attach_gpu_ok(c, "s2"));
	/* s1 is least recently used and unleased: s3 evicts it. */
	tc_artifact_close(attach_gpu_ok(c, "s3"));
	assert_int_equal(gpu_stat(c, "evictions"), 1);
	assert_int_equal(gpu_stat(c, "replicas"), 2);

	/* A client holding s2 is killed: its lease comes back. */
	pid = spawn("hold", "s2", &fd);
	t_read_line(fd, line, sizeof(line));
	assert_string_equal(line, "ready");
	assert_int_equal(gpu_stat(c, "leases"), 1);
	kill(pid, SIGKILL);
	assert_int_equal(t_wait_status(pid), 128 + SIGKILL);
	close(fd);
	for (int i = 0; i < 300 && gpu_stat(c, "leases"); i++)
		usleep(10000);
	assert_int_equal(gpu_stat(c, "leases"), 0);

	/* Cycles: attach/detach cached replicas, and refills by eviction;
	 * the daemon's fds and the driver's free memory do not move. */
	dfd0 = t_daemon_fds(D.pid);
	free0 = gpu_stat(c, "driver_free_bytes");
	t0 = t_now_ms();
	for (int i = 0; i < 1000; i++) {
		a = attach_gpu_ok(c, i % 2 ? "s2" : "s3");
		tc_artifact_close(a);
	}
	info("1000 attach/detach cycles of a cached 64 MiB replica: %.3f ms "
	     "each\n",
	     (t_now_ms() - t0) / 1000);
	t0 = t_now_ms();
	/* Three artifacts in turn with room for two: every one misses. */
	for (int i = 0; i < 50; i++) {
		static const char *const refs[] = { "s1", "s2", "s3" };

		a = attach_gpu_ok(c, refs[i % 3]);
		tc_artifact_close(a);
	}
	info("50 attaches that each evict and refill 64 MiB: %.2f ms each\n",
	     (t_now_ms() - t0) / 50);
	assert_true(gpu_stat(c, "evictions") >= 50);
	tc_artifact_close(attach_gpu_ok(c, "s2"));
	tc_artifact_close(attach_gpu_ok(c, "s3"));
	dfd1 = t_daemon_fds(D.pid);
	free1 = gpu_stat(c, "driver_free_bytes");
	info("daemon fds %d -> %d, driver free bytes %lld -> %lld\n", dfd0,
	     dfd1, free0, free1);
	assert_int_equal(dfd1, dfd0);
	/* Another process may use the same GPU: allow it a little drift. */
	assert_true(llabs(free1 - free0) <= (long long)(64 * MiB));
	tc_client_close(c);
	assert_int_equal(t_daemon_stop(&D), 0);
}

/* The daemon dies; a client's mapping stays valid and correct. */
static void test_tier_real__daemon_dies_while_mapped(void **state)
{
	char want[TC_DIGEST_HEX + 1], line[160];
	struct tc__digest hd;
	int out, in[2];
	tc_client *c;
	pid_t pid;

	t_daemon_start(&D, "4GiB", NULL);
	c = t_connect(D.sock);
	put_blob(c, "o", 32 * MiB, 21);
	hd = host_hash(c, "o");
	tc__digest_hex(&hd, want);
	assert_int_equal(pipe(in), 0);
	{
		/* The child's stdin is our pipe: one byte means "read now". */
		int saved = dup(0);

		dup2(in[0], 0);
		pid = spawn("orphan", "o", &out);
		dup2(saved, 0);
		close(saved);
		close(in[0]);
	}
	t_read_line(out, line, sizeof(line));
	assert_string_equal(line, "ready");
	tc_client_close(c);
	kill(D.pid, SIGKILL);
	waitpid(D.pid, NULL, 0);
	D.pid = 0;
	assert_int_equal(write(in[1], "g", 1), 1);
	t_read_line(out, line, sizeof(line));
	assert_string_equal(line, want);
	assert_int_equal(t_wait_status(pid), 0);
	close(in[1]);
	close(out);
	t_rmtree(D.dir);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tier_real__large_attach),
		cmocka_unit_test(test_tier_real__budget_leases_cycles),
		cmocka_unit_test(test_tier_real__daemon_dies_while_mapped),
	};
	struct tc__gpu_info gi;
	char err[512];
	int ret;

	if (argc >= 6 && !strcmp(argv[1], "--child"))
		return child_main(argv);
	ret = t_gpu_start(&big, &dev);
	if (ret >= 0)
		return ret;
	if (tc__gpu_device_info(dev, &gi, err, sizeof(err)) < 0) {
		printf("SKIP: %s\n", err);
		return 77;
	}
	if (!gi.vmm || !gi.posix_fd) {
		printf("SKIP: GPU %d (%s) lacks VMM with POSIX fds\n", dev,
		       gi.name);
		return 77;
	}
	info("GPU %d: %s %s; large artifact %.0f MiB\n", dev, gi.uuid_str,
	     gi.name, (double)big / MiB);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
