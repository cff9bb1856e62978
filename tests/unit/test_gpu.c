/*
 * test_gpu.c - src/gpu against the fake driver (tests/fakecuda).
 *
 * main() points TCAST_CUDA_LIB at the fake built next to this test (two
 * fake GPUs of 64 MiB each) and runs the cases below.  Cases that need a
 * process in another state (no driver, no device, no VMM, a second
 * importer) run this binary again as a child: see tests/gpu/gpu_test.h.
 * Every case checks that it leaves no fd open and no fake device memory
 * allocated.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "tcast/errors.h"
#include "common/compiler.h"
#include "common/hash.h"
#include "common/log.h"
#include "gpu/kernels/b3core.h"
#include "gpu/vmm.h"
#include "../gpu/gpu_test.h"

#define MiB	 ((uint64_t)1 << 20)
#define FAKE_MEM (64 * MiB) /* TC_FAKECUDA_MEM_BYTES for the tests */
#define GRAN	 (2 * MiB)  /* the fake's granularity */

static char err[256];

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

static void assert_mem_empty(const struct tc__gpu_mem *m)
{
	assert_int_equal(m->dptr, 0);
	assert_int_equal(m->handle, 0);
	assert_int_equal(m->size, 0);
	assert_int_equal(m->fd, -1);
}

/* Every fake GPU has its whole budget free again. */
static void assert_no_device_memory_used(void)
{
	for (int i = 0; i < 2; i++) {
		uint64_t fr, tot;

		assert_int_equal(
			tc__gpu_mem_info(i, &fr, &tot, err, sizeof(err)), 0);
		assert_int_equal(tot, FAKE_MEM);
		assert_int_equal(fr, FAKE_MEM);
	}
}

static void assert_err_has(const char *needle)
{
	if (!strstr(err, needle))
		fail_msg("message '%s' lacks '%s'", err, needle);
}

/* Sweeps fail the context restore too, which only logs: keep it quiet. */
static int saved_level;

static void quiet(void)
{
	saved_level = tc__log_level;
	tc__log_level = -1;
}

static void loud(void)
{
	tc__log_level = saved_level;
}

static void digest_of(const void *p, size_t n, struct tc__digest *d)
{
	tc__hash256(p, n, d);
}

/* ------------------------------------------------------------------------ */
/* The child side                                                            */
/* ------------------------------------------------------------------------ */

/* What the parent asks a child importer to do. */
struct child_req {
	uint64_t size;			 /* exporter's mem.size */
	uint8_t uuid[TC_GPU_UUID_BYTES]; /* GPU it lives on */
	uint32_t flags;			 /* TC_GPU_READ_ONLY or 0 */
	uint8_t fill;		  /* RW: byte written to the first 4 KiB */
	struct tc__digest digest; /* expected content */
};

/* What a child reports back. */
struct child_reply {
	int ret;       /* 0, or the first failing code */
	int ndev;      /* devices the child sees */
	int ordinal;   /* where the import landed */
	int write_ret; /* result of the write attempt */
	int fd_delta;  /* fds after minus before (0: no leak) */
	int data_ok;   /* content matched, before and after */
	uint8_t uuid0[TC_GPU_UUID_BYTES]; /* child's ordinal 0 */
	char msg[256];			  /* tcast message of the failure */
};

static int child_import(int sock, struct child_reply *rep)
{
	struct child_req req;
	struct tc__gpu_mem m;
	struct tc__digest d1, d2;
	uint8_t *buf = NULL, junk[4096];
	int fd, fds0, ret;

	ret = t_recv(sock, &fd, &req, sizeof(req));
	if (ret < 0 || fd < 0)
		return rep->ret = ret < 0 ? ret : -EPROTO;
	fds0 = t_count_fds() - 1; /* the received fd is closed below */
	ret = tc__gpu_device_find(req.uuid, rep->msg, sizeof(rep->msg));
	if (ret < 0)
		goto out_close;
	rep->ordinal = ret;
	ret = tc__gpu_import(rep->ordinal, fd, req.size, req.flags, &m,
			     rep->msg, sizeof(rep->msg));
	/* The driver holds its own reference: the fd can go at once. */
	close(fd);
	fd = -1;
	if (ret < 0)
		goto out;
	buf = malloc(req.size);
	if (!buf) {
		ret = -ENOMEM;
		goto out_release;
	}
	ret = tc__gpu_mem_read(&m, 0, buf, req.size, NULL, rep->msg,
			       sizeof(rep->msg));
	if (ret < 0)
		goto out_release;
	digest_of(buf, req.size, &d1);
	memset(junk, req.fill, sizeof(junk));
	if (req.flags & TC_GPU_READ_ONLY) {
		/* Both kinds of device write must be refused. */
		rep->write_ret = tc__gpu_memset8(m.device, m.dptr, 0xEE, 4096,
						 NULL, NULL, 0);
		if (rep->write_ret == TC_ECUDA)
			rep->write_ret = tc__gpu_mem_write(
				&m, 0, junk, sizeof(junk), NULL, NULL, 0);
	} else {
		rep->write_ret = tc__gpu_mem_write(&m, 0, junk, sizeof(junk),
						   NULL, NULL, 0);
	}
	ret = tc__gpu_mem_read(&m, 0, buf, req.size, NULL, rep->msg,
			       sizeof(rep->msg));
	if (ret < 0)
		goto out_release;
	digest_of(buf, req.size, &d2);
	if (req.flags & TC_GPU_READ_ONLY)
		rep->data_ok = !memcmp(&d1, &req.digest, sizeof(d1)) &&
			       !memcmp(&d2, &req.digest, sizeof(d2));
	else
		rep->data_ok = !memcmp(&d1, &req.digest, sizeof(d1)) &&
			       !memcmp(buf, junk, sizeof(junk));
out_release:
	tc__gpu_release(&m);
out:
	free(buf);
out_close:
	if (fd >= 0)
		close(fd);
	rep->fd_delta = t_count_fds() - fds0;
	return rep->ret = ret;
}

static int child_main(const char *mode, int sock)
{
	struct child_reply rep;
	struct tc__gpu_info info;

	memset(&rep, 0, sizeof(rep));
	rep.ret = tc__gpu_init(rep.msg, sizeof(rep.msg));
	if (rep.ret == 0) {
		rep.ndev = tc__gpu_device_count(NULL, 0);
		if (tc__gpu_device_info(0, &info, NULL, 0) == 0)
			memcpy(rep.uuid0, info.uuid, sizeof(rep.uuid0));
		if (!strcmp(mode, "import")) {
			child_import(sock, &rep);
		} else if (!strcmp(mode, "alloc")) {
			struct tc__gpu_mem m;

			rep.ret = tc__gpu_alloc(0, MiB, 0, &m, rep.msg,
						sizeof(rep.msg));
			tc__gpu_release(&m);
		}
	}
	if (t_send(sock, -1, &rep, sizeof(rep)) < 0)
		return 2;
	close(sock);
	return 0;
}

/* Spawn a child in `mode` with `env` changes, optionally hand it req + fd,
 * and collect its reply. */
static void run_child(const char *mode, const char *const env[],
		      const struct child_req *req, int fd,
		      struct child_reply *rep)
{
	int sock = -1, st;
	pid_t pid = t_spawn_child(mode, env, &sock);

	assert_true(pid > 0);
	if (req)
		assert_int_equal(t_send(sock, fd, req, sizeof(*req)), 0);
	assert_int_equal(t_recv(sock, NULL, rep, sizeof(*rep)), 0);
	close(sock);
	st = t_wait_status(pid);
	assert_int_equal(st, 0);
}

/* ------------------------------------------------------------------------ */
/* Driver and devices                                                        */
/* ------------------------------------------------------------------------ */

static void test_gpu__load(void **state)
{
	const char *path;
	int v;

	assert_int_equal(tc__gpu_init(err, sizeof(err)), 0);
	assert_int_equal(tc__gpu_device_count(err, sizeof(err)), 2);
	assert_int_equal(tc__gpu_driver_version(&v, &path, err, sizeof(err)),
			 0);
	assert_int_equal(v, 12080);
	assert_string_equal(path, TC_FAKECUDA_PATH);
	assert_string_equal(tc__gpu_cuda_error_name(2),
			    "CUDA_ERROR_OUT_OF_MEMORY");
	assert_string_equal(tc__gpu_cuda_error_name(123456),
			    "CUDA error 123456");
}

static void test_gpu__devices(void **state)
{
	struct tc__gpu_info a, b;
	uint8_t zero[TC_GPU_UUID_BYTES] = { 0 };

	assert_int_equal(tc__gpu_device_info(0, &a, err, sizeof(err)), 0);
	assert_int_equal(tc__gpu_device_info(1, &b, err, sizeof(err)), 0);
	assert_int_equal(a.ordinal, 0);
	assert_int_equal(b.ordinal, 1);
	assert_string_equal(a.name, "tcast fake GPU 0");
	assert_string_equal(a.pci_bus_id, "0000:10:00.0");
	assert_string_equal(b.pci_bus_id, "0000:11:00.0");
	assert_int_equal(a.total_bytes, FAKE_MEM);
	assert_true(a.vmm && a.posix_fd && a.rdma && a.host_register &&
		    a.host_register_ro);
	assert_int_equal(a.cc_major, 9);
	assert_int_equal(strlen(a.uuid_str), TC_GPU_UUID_STRLEN - 1);
	assert_memory_not_equal(a.uuid, b.uuid, TC_GPU_UUID_BYTES);
	assert_int_equal(tc__gpu_device_find(b.uuid, err, sizeof(err)), 1);
	assert_int_equal(tc__gpu_device_find(a.uuid, err, sizeof(err)), 0);

	assert_int_equal(tc__gpu_device_find(zero, err, sizeof(err)),
			 TC_EDEVICE);
	assert_err_has("GPU-00000000-0000-0000-0000-000000000000");
	assert_int_equal(tc__gpu_device_info(2, &a, err, sizeof(err)),
			 TC_EDEVICE);
	assert_string_equal(err, "no GPU with ordinal 2 (2 visible)");
	assert_int_equal(tc__gpu_device_info(-1, &a, NULL, 0), TC_EDEVICE);
}

static void test_gpu__uuid_text(void **state)
{
	uint8_t u[TC_GPU_UUID_BYTES], v[TC_GPU_UUID_BYTES];
	char s[TC_GPU_UUID_STRLEN];

	for (int i = 0; i < TC_GPU_UUID_BYTES; i++)
		u[i] = (uint8_t)(i * 17 + 3);
	tc__gpu_uuid_format(u, s);
	assert_string_equal(s, "GPU-03142536-4758-697a-8b9c-adbecfe0f102");
	assert_int_equal(tc__gpu_uuid_parse(s, v), 0);
	assert_memory_equal(u, v, sizeof(u));
	assert_int_equal(tc__gpu_uuid_parse(s + 4, v), 0);
	assert_memory_equal(u, v, sizeof(u));
	assert_int_equal(tc__gpu_uuid_parse(
				 "MIG-03142536-4758-697A-8B9C-ADBECFE0F102", v),
			 0);
	assert_memory_equal(u, v, sizeof(u));
	assert_int_equal(tc__gpu_uuid_parse("GPU-0314253-64758-697a-8b9c-"
					    "adbecfe0f102",
					    v),
			 TC_EINVAL);
	assert_int_equal(tc__gpu_uuid_parse("GPU-03142536-4758-697a-8b9c-"
					    "adbecfe0f10g",
					    v),
			 TC_EINVAL);
	assert_int_equal(tc__gpu_uuid_parse("", v), TC_EINVAL);
}

/* A GPU named by ordinal carries the environment that decides ordinals:
 * equal here, not equal once a variable differs; malformed refs are
 * refused, UUIDs are not refs. */
static void test_gpu__ordinal_ref(void **state)
{
	char ref[TC_GPU_REF_MAX];
	const char *cvd = getenv("CUDA_VISIBLE_DEVICES");
	char *keep = cvd ? strdup(cvd) : NULL;
	bool same;
	int n;

	(void)state;
	assert_int_equal(tc__gpu_ordinal_ref(3, ref, sizeof(ref)), 0);
	assert_true(!strncmp(ref, "cuda:3|CUDA_VISIBLE_DEVICES", 27));
	assert_int_equal(tc__gpu_ordinal_ref_parse(ref, &n, &same), 1);
	assert_int_equal(n, 3);
	assert_true(same);
	setenv("CUDA_VISIBLE_DEVICES", "1,0", 1);
	assert_int_equal(tc__gpu_ordinal_ref_parse(ref, &n, &same), 1);
	assert_false(same);
	assert_int_equal(tc__gpu_ordinal_ref(0, ref, sizeof(ref)), 0);
	assert_non_null(strstr(ref, "|CUDA_VISIBLE_DEVICES=1,0|"));
	assert_int_equal(tc__gpu_ordinal_ref_parse(ref, &n, &same), 1);
	assert_true(same);
	setenv("CUDA_VISIBLE_DEVICES", "a|b", 1); /* cannot be carried */
	assert_int_equal(tc__gpu_ordinal_ref(0, ref, sizeof(ref)), TC_EINVAL);
	assert_int_equal(tc__gpu_ordinal_ref(0, ref, 8), TC_EINVAL);
	if (keep)
		setenv("CUDA_VISIBLE_DEVICES", keep, 1);
	else
		unsetenv("CUDA_VISIBLE_DEVICES");
	free(keep);
	assert_int_equal(tc__gpu_ordinal_ref_parse("cuda:x", &n, &same),
			 TC_EINVAL);
	assert_int_equal(tc__gpu_ordinal_ref_parse("cuda:99999999", &n, &same),
			 TC_EINVAL);
	assert_int_equal(tc__gpu_ordinal_ref_parse("cuda:1x", &n, &same),
			 TC_EINVAL);
	assert_int_equal(tc__gpu_ordinal_ref_parse(
				 "GPU-03142536-4758-697a-8b9c-adbecfe0f102", &n,
				 &same),
			 0);
}

static void test_gpu__visible_devices(void **state)
{
	const char *env[] = { "CUDA_VISIBLE_DEVICES=1", NULL };
	struct child_reply rep;
	struct tc__gpu_info b;

	/* Ordinals differ between processes; UUIDs do not. */
	assert_int_equal(tc__gpu_device_info(1, &b, err, sizeof(err)), 0);
	run_child("info", env, NULL, -1, &rep);
	assert_int_equal(rep.ret, 0);
	assert_int_equal(rep.ndev, 1);
	assert_memory_equal(rep.uuid0, b.uuid, TC_GPU_UUID_BYTES);
}

static void test_gpu__granularity(void **state)
{
	uint64_t gmin, grec;

	assert_int_equal(tc__gpu_granularity(0, &gmin, &grec, err, sizeof(err)),
			 0);
	assert_int_equal(gmin, GRAN);
	assert_true(grec >= gmin);
	assert_int_equal(tc__gpu_granularity(7, &gmin, NULL, err, sizeof(err)),
			 TC_EDEVICE);
	assert_int_equal(gmin, 0);
}

/* ------------------------------------------------------------------------ */
/* Allocations and copies                                                    */
/* ------------------------------------------------------------------------ */

static void test_gpu__alloc_release(void **state)
{
	struct tc__gpu_mem m;
	uint64_t fr, tot;
	int fds = t_count_fds();

	assert_int_equal(tc__gpu_alloc(0, 1, 0, &m, err, sizeof(err)), 0);
	assert_int_equal(m.size, GRAN);
	assert_true(m.dptr != 0 && m.dptr % GRAN == 0);
	assert_true(m.fd >= 0);
	assert_int_equal(m.device, 0);
	/* Ours, and the fake's memfd (a real driver keeps its own). */
	assert_int_equal(t_count_fds(), fds + 2);
	assert_int_equal(tc__gpu_mem_info(0, &fr, &tot, err, sizeof(err)), 0);
	assert_int_equal(fr, tot - GRAN);
	tc__gpu_release(&m);
	assert_mem_empty(&m);
	tc__gpu_release(&m); /* empty: a no-op */
	assert_int_equal(t_count_fds(), fds);
	assert_no_device_memory_used();

	assert_int_equal(tc__gpu_alloc(1, 5 * MiB, TC_GPU_RDMA, &m, err,
				       sizeof(err)),
			 0);
	assert_int_equal(m.size, 6 * MiB);
	assert_int_equal(m.device, 1);
	tc__gpu_release(&m);

	assert_int_equal(tc__gpu_alloc(0, 0, 0, &m, err, sizeof(err)),
			 TC_EINVAL);
	assert_mem_empty(&m);
	assert_int_equal(tc__gpu_alloc(0, MiB, 0x80, &m, err, sizeof(err)),
			 TC_EINVAL);
	assert_int_equal(tc__gpu_alloc(0, UINT64_MAX, 0, &m, err, sizeof(err)),
			 TC_EINVAL);
	assert_int_equal(tc__gpu_alloc(2, MiB, 0, &m, err, sizeof(err)),
			 TC_EDEVICE);
	assert_mem_empty(&m);
	assert_int_equal(t_count_fds(), fds);
	assert_no_device_memory_used();
}

static void test_gpu__copy_roundtrip(void **state)
{
	const size_t n = 4 * MiB;
	struct tc__gpu_mem m;
	struct tc__gpu_stream *s, *s1, *legacy;
	struct tc__gpu_event *e0, *e1, *plain;
	uint8_t *src = malloc(n), *dst = malloc(n);
	float ms;
	bool done;

	assert_non_null(src);
	assert_non_null(dst);
	t_fill_pattern(src, n, 7);
	assert_int_equal(tc__gpu_alloc(0, 3 * MiB + 1, 0, &m, err, sizeof(err)),
			 0);
	assert_int_equal(m.size, n);

	/* Synchronous, whole and partial. */
	assert_int_equal(
		tc__gpu_mem_write(&m, 0, src, n, NULL, err, sizeof(err)), 0);
	memset(dst, 0, n);
	assert_int_equal(
		tc__gpu_mem_read(&m, 0, dst, n, NULL, err, sizeof(err)), 0);
	assert_memory_equal(src, dst, n);
	assert_int_equal(tc__gpu_mem_read(&m, 12345, dst, 1000, NULL, err,
					  sizeof(err)),
			 0);
	assert_memory_equal(src + 12345, dst, 1000);

	/* Device to device and memset. */
	assert_int_equal(tc__gpu_dtod(0, m.dptr, m.dptr + MiB, MiB, NULL, err,
				      sizeof(err)),
			 0);
	assert_int_equal(tc__gpu_memset8(0, m.dptr + 2 * MiB, 0xAB, 4096, NULL,
					 err, sizeof(err)),
			 0);
	assert_int_equal(
		tc__gpu_mem_read(&m, 0, dst, n, NULL, err, sizeof(err)), 0);
	assert_memory_equal(dst, src + MiB, MiB);
	for (int i = 0; i < 4096; i++)
		assert_int_equal(dst[2 * MiB + i], 0xAB);

	/* Asynchronous on a stream, timed with events. */
	assert_int_equal(tc__gpu_stream_create(0, &s, err, sizeof(err)), 0);
	assert_int_equal(tc__gpu_event_create(0, TC_GPU_EVENT_TIMING, &e0, err,
					      sizeof(err)),
			 0);
	assert_int_equal(tc__gpu_event_create(0, TC_GPU_EVENT_TIMING, &e1, err,
					      sizeof(err)),
			 0);
	assert_int_equal(tc__gpu_event_create(0, 0, &plain, err, sizeof(err)),
			 0);
	assert_int_equal(tc__gpu_event_record(e0, s, err, sizeof(err)), 0);
	assert_int_equal(tc__gpu_mem_write(&m, 0, src, n, s, err, sizeof(err)),
			 0);
	memset(dst, 0, n);
	assert_int_equal(tc__gpu_mem_read(&m, 0, dst, n, s, err, sizeof(err)),
			 0);
	assert_int_equal(tc__gpu_event_record(e1, s, err, sizeof(err)), 0);
	assert_int_equal(tc__gpu_event_sync(e1, err, sizeof(err)), 0);
	assert_int_equal(tc__gpu_event_query(e1, &done, err, sizeof(err)), 0);
	assert_true(done);
	assert_int_equal(tc__gpu_stream_sync(s, err, sizeof(err)), 0);
	assert_memory_equal(src, dst, n);
	assert_int_equal(
		tc__gpu_event_elapsed_ms(e0, e1, &ms, err, sizeof(err)), 0);
	assert_true(ms >= 0);
	assert_int_equal(tc__gpu_event_elapsed_ms(e0, plain, &ms, err,
						  sizeof(err)),
			 TC_EINVAL);

	/* A borrowed stream: DLPack's legacy default stream (1). */
	assert_int_equal(tc__gpu_stream_wrap(0, 1, &legacy, err, sizeof(err)),
			 0);
	assert_int_equal(tc__gpu_stream_handle(legacy), 1);
	assert_int_equal(tc__gpu_event_record(plain, s, err, sizeof(err)), 0);
	assert_int_equal(
		tc__gpu_stream_wait_event(legacy, plain, err, sizeof(err)), 0);
	assert_int_equal(
		tc__gpu_mem_write(&m, 0, src, 64, legacy, err, sizeof(err)), 0);
	assert_int_equal(tc__gpu_stream_sync(legacy, err, sizeof(err)), 0);

	/* Misuse. */
	assert_int_equal(tc__gpu_stream_create(1, &s1, err, sizeof(err)), 0);
	assert_int_equal(tc__gpu_mem_write(&m, 0, src, 64, s1, err,
					   sizeof(err)),
			 TC_EINVAL);
	assert_err_has("stream of GPU 1");
	assert_int_equal(tc__gpu_event_record(e0, s1, err, sizeof(err)),
			 TC_EINVAL);
	assert_int_equal(tc__gpu_mem_write(&m, n - 10, src, 11, NULL, err,
					   sizeof(err)),
			 TC_EINVAL);
	assert_err_has("4194294, 4194305");
	assert_int_equal(tc__gpu_mem_read(&m, UINT64_MAX, dst, 2, NULL, err,
					  sizeof(err)),
			 TC_EINVAL);
	assert_int_equal(
		tc__gpu_mem_write(&m, 0, src, 0, NULL, err, sizeof(err)), 0);

	tc__gpu_stream_free(legacy);
	tc__gpu_stream_free(s1);
	tc__gpu_stream_free(s);
	tc__gpu_stream_free(NULL);
	tc__gpu_event_free(e0);
	tc__gpu_event_free(e1);
	tc__gpu_event_free(plain);
	tc__gpu_event_free(NULL);
	tc__gpu_release(&m);
	free(src);
	free(dst);
	assert_no_device_memory_used();
}

/* ------------------------------------------------------------------------ */
/* Sharing                                                                   */
/* ------------------------------------------------------------------------ */

static void test_gpu__import_second_process(void **state)
{
	/* The child sees only GPU 1, and as its ordinal 0: it must find the
	 * allocation's GPU by UUID. */
	const char *env[] = { "CUDA_VISIBLE_DEVICES=1", NULL };
	const size_t n = 6 * MiB;
	struct tc__gpu_mem m;
	struct tc__gpu_info info;
	struct child_req req;
	struct child_reply rep;
	uint8_t *buf = malloc(n);
	int fds = t_count_fds();

	assert_non_null(buf);
	assert_int_equal(tc__gpu_alloc(1, n, 0, &m, err, sizeof(err)), 0);
	t_fill_pattern(buf, n, 42);
	assert_int_equal(
		tc__gpu_mem_write(&m, 0, buf, n, NULL, err, sizeof(err)), 0);
	assert_int_equal(tc__gpu_device_info(1, &info, err, sizeof(err)), 0);

	memset(&req, 0, sizeof(req));
	req.size = m.size;
	memcpy(req.uuid, info.uuid, sizeof(req.uuid));
	req.flags = TC_GPU_READ_ONLY;
	req.fill = 0x5A;
	digest_of(buf, n, &req.digest);

	/* Read-only: the child reads the data, its writes are refused. */
	run_child("import", env, &req, m.fd, &rep);
	if (rep.ret)
		fail_msg("child: %s (%d)", rep.msg, rep.ret);
	assert_int_equal(rep.ordinal, 0);
	assert_true(rep.data_ok);
	assert_int_equal(rep.write_ret, TC_ECUDA);
	assert_int_equal(rep.fd_delta, 0);

	/* Read-write: the child's write shows up here (same memory). */
	req.flags = 0;
	run_child("import", env, &req, m.fd, &rep);
	if (rep.ret)
		fail_msg("child: %s (%d)", rep.msg, rep.ret);
	assert_true(rep.data_ok);
	assert_int_equal(rep.write_ret, 0);
	assert_int_equal(
		tc__gpu_mem_read(&m, 0, buf, 4096, NULL, err, sizeof(err)), 0);
	for (int i = 0; i < 4096; i++)
		assert_int_equal(buf[i], 0x5A);

	tc__gpu_release(&m);
	free(buf);
	assert_int_equal(t_count_fds(), fds);
	assert_no_device_memory_used();
}

static void test_gpu__readonly_refuses_writes(void **state)
{
	struct tc__gpu_mem owner, ro, rw;
	uint8_t buf[4096], back[4096];
	int fd, fds = t_count_fds();

	assert_int_equal(tc__gpu_alloc(0, GRAN, 0, &owner, err, sizeof(err)),
			 0);
	t_fill_pattern(buf, sizeof(buf), 3);
	assert_int_equal(tc__gpu_mem_write(&owner, 0, buf, sizeof(buf), NULL,
					   err, sizeof(err)),
			 0);
	assert_int_equal(tc__gpu_export(&owner, &fd, err, sizeof(err)), 0);
	assert_true(fd >= 0 && fd != owner.fd);
	assert_int_equal(tc__gpu_import(0, fd, owner.size, TC_GPU_READ_ONLY,
					&ro, err, sizeof(err)),
			 0);
	assert_int_equal(
		tc__gpu_import(0, fd, owner.size, 0, &rw, err, sizeof(err)), 0);
	close(fd);
	assert_true(ro.dptr != owner.dptr && rw.dptr != ro.dptr);
	assert_int_equal(ro.fd, -1);

	memset(back, 0, sizeof(back));
	assert_int_equal(tc__gpu_mem_write(&ro, 0, back, sizeof(back), NULL,
					   err, sizeof(err)),
			 TC_ECUDA);
	assert_err_has("cuMemcpyHtoD: CUDA_ERROR_INVALID_VALUE");
	assert_int_equal(tc__gpu_last_cuda_error(), 1);
	assert_false(tc__gpu_last_error_oom());
	assert_int_equal(tc__gpu_memset8(0, ro.dptr, 0, 16, NULL, err,
					 sizeof(err)),
			 TC_ECUDA);
	assert_err_has("cuMemsetD8");
	assert_int_equal(tc__gpu_dtod(0, ro.dptr, owner.dptr, 16, NULL, err,
				      sizeof(err)),
			 TC_ECUDA);
	/* Unchanged, and readable through every mapping. */
	assert_int_equal(tc__gpu_mem_read(&ro, 0, back, sizeof(back), NULL, err,
					  sizeof(err)),
			 0);
	assert_memory_equal(buf, back, sizeof(buf));
	/* Writes through a read-write import land in the same memory. */
	assert_int_equal(tc__gpu_memset8(0, rw.dptr, 0x11, 16, NULL, err,
					 sizeof(err)),
			 0);
	assert_int_equal(
		tc__gpu_mem_read(&ro, 0, back, 16, NULL, err, sizeof(err)), 0);
	for (int i = 0; i < 16; i++)
		assert_int_equal(back[i], 0x11);

	/* The exporter may go first: importers keep the memory alive. */
	tc__gpu_release(&owner);
	assert_int_equal(
		tc__gpu_mem_read(&ro, 16, back, 16, NULL, err, sizeof(err)), 0);
	assert_memory_equal(buf + 16, back, 16);
	tc__gpu_release(&ro);
	tc__gpu_release(&rw);
	assert_int_equal(t_count_fds(), fds);
	assert_no_device_memory_used();
}

/* TC_GPU_ACCESS_LATER: the import returns mapped, the grant runs on a
 * thread; after tc__gpu_access_wait the bytes read back.  A failed grant
 * is the wait's error; a release that never waited still leaves nothing
 * behind (the fake driver counts fds and device memory). */
static void test_gpu__import_access_later(void **state)
{
	struct tc__gpu_mem owner, ro;
	uint8_t buf[4096], back[4096];
	int fd, fds = t_count_fds();

	(void)state;
	assert_int_equal(tc__gpu_alloc(0, GRAN, 0, &owner, err, sizeof(err)),
			 0);
	t_fill_pattern(buf, sizeof(buf), 5);
	assert_int_equal(tc__gpu_mem_write(&owner, 0, buf, sizeof(buf), NULL,
					   err, sizeof(err)),
			 0);
	assert_int_equal(tc__gpu_export(&owner, &fd, err, sizeof(err)), 0);

	assert_int_equal(tc__gpu_import(0, fd, owner.size,
					TC_GPU_READ_ONLY | TC_GPU_ACCESS_LATER,
					&ro, err, sizeof(err)),
			 0);
	assert_true(ro.dptr != 0);
	assert_int_equal(tc__gpu_access_wait(&ro, err, sizeof(err)), 0);
	assert_null(ro.access);
	assert_int_equal(tc__gpu_access_wait(&ro, err, sizeof(err)), 0);
	assert_int_equal(tc__gpu_mem_read(&ro, 0, back, sizeof(back), NULL, err,
					  sizeof(err)),
			 0);
	assert_memory_equal(buf, back, sizeof(buf));
	tc__gpu_release(&ro);

	/* Released without a wait, the grant perhaps still running. */
	for (int i = 0; i < 8; i++) {
		assert_int_equal(tc__gpu_import(0, fd, owner.size,
						TC_GPU_READ_ONLY |
							TC_GPU_ACCESS_LATER,
						&ro, err, sizeof(err)),
				 0);
		tc__gpu_release(&ro);
	}

	setenv("TC_FAKECUDA_FAIL", "cuMemSetAccess:1", 1);
	assert_int_equal(tc__gpu_import(0, fd, owner.size,
					TC_GPU_READ_ONLY | TC_GPU_ACCESS_LATER,
					&ro, err, sizeof(err)),
			 0);
	assert_int_equal(tc__gpu_access_wait(&ro, err, sizeof(err)), TC_ECUDA);
	unsetenv("TC_FAKECUDA_FAIL");
	assert_err_has("cuMemSetAccess");
	tc__gpu_release(&ro);

	close(fd);
	tc__gpu_release(&owner);
	assert_int_equal(t_count_fds(), fds);
	assert_no_device_memory_used();
}

static void test_gpu__import_bad_input(void **state)
{
	struct tc__gpu_mem m;
	int p[2], fds = t_count_fds();

	assert_int_equal(tc__gpu_import(0, -1, GRAN, 0, &m, err, sizeof(err)),
			 TC_EINVAL);
	assert_mem_empty(&m);
	assert_int_equal(pipe(p), 0);
	assert_int_equal(tc__gpu_import(0, p[0], 0, 0, &m, err, sizeof(err)),
			 TC_EINVAL);
	assert_int_equal(tc__gpu_import(0, p[0], GRAN + 1, 0, &m, err,
					sizeof(err)),
			 TC_EINVAL);
	assert_err_has("granularity");
	assert_int_equal(tc__gpu_import(0, p[0], GRAN, 0x40, &m, err,
					sizeof(err)),
			 TC_EINVAL);
	assert_int_equal(tc__gpu_import(0, p[0], GRAN, 0, &m, err, sizeof(err)),
			 TC_ECUDA);
	assert_err_has("cannot import fd");
	assert_err_has("cuMemImportFromShareableHandle");
	assert_mem_empty(&m);
	assert_int_equal(tc__gpu_import(9, p[0], GRAN, 0, &m, err, sizeof(err)),
			 TC_EDEVICE);
	close(p[0]);
	assert_int_equal(tc__gpu_export(&m, &p[0], err, sizeof(err)),
			 TC_EINVAL);
	assert_int_equal(p[0], -1);
	close(p[1]);
	assert_int_equal(t_count_fds(), fds);
}

static void test_gpu__host_register(void **state)
{
	const size_t n = 4 * MiB;
	struct tc__gpu_mem m;
	uint8_t *rw, *ro, back[256];
	int fd = memfd_create("test-gpu", MFD_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)n), 0);
	rw = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ro = mmap(NULL, n, PROT_READ, MAP_SHARED, fd, 0);
	assert_true(rw != MAP_FAILED && ro != MAP_FAILED);
	t_fill_pattern(rw, n, 9);
	assert_int_equal(tc__gpu_alloc(0, n, 0, &m, err, sizeof(err)), 0);

	assert_int_equal(tc__gpu_host_register(0, rw, n, 0, err, sizeof(err)),
			 0);
	assert_int_equal(tc__gpu_host_register(0, rw + 4096, 4096, 0, err,
					       sizeof(err)),
			 TC_ECUDA);
	assert_err_has("CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED");
	assert_int_equal(
		tc__gpu_mem_write(&m, 0, rw, n, NULL, err, sizeof(err)), 0);
	assert_int_equal(tc__gpu_mem_read(&m, n - 256, back, 256, NULL, err,
					  sizeof(err)),
			 0);
	assert_memory_equal(back, rw + n - 256, 256);
	/* Registered for every context: usable from GPU 1 too. */
	assert_int_equal(tc__gpu_host_unregister(1, rw, err, sizeof(err)), 0);
	assert_int_equal(tc__gpu_host_unregister(0, rw, err, sizeof(err)),
			 TC_ECUDA);
	assert_err_has("CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED");

	/* A read-only mapping (a sealed memfd) needs TC_GPU_READ_ONLY. */
	assert_int_equal(tc__gpu_host_register(0, ro, n, 0, err, sizeof(err)),
			 TC_ECUDA);
	assert_int_equal(tc__gpu_host_register(0, ro, n, TC_GPU_READ_ONLY, err,
					       sizeof(err)),
			 0);
	assert_int_equal(tc__gpu_host_unregister(0, ro, err, sizeof(err)), 0);

	assert_int_equal(tc__gpu_host_register(0, NULL, n, 0, err, sizeof(err)),
			 TC_EINVAL);
	assert_int_equal(tc__gpu_host_register(0, rw, 0, 0, err, sizeof(err)),
			 TC_EINVAL);
	assert_int_equal(tc__gpu_host_register(0, rw, n, 0x10, err,
					       sizeof(err)),
			 TC_EINVAL);
	assert_int_equal(tc__gpu_host_register(5, rw, n, 0, err, sizeof(err)),
			 TC_EDEVICE);

	tc__gpu_release(&m);
	munmap(rw, n);
	munmap(ro, n);
	close(fd);
	assert_no_device_memory_used();
}

/* ------------------------------------------------------------------------ */
/* Failures                                                                  */
/* ------------------------------------------------------------------------ */

static void test_gpu__out_of_memory(void **state)
{
	struct tc__gpu_mem all, more;
	int fds = t_count_fds();

	assert_int_equal(tc__gpu_alloc(0, FAKE_MEM, 0, &all, err, sizeof(err)),
			 0);
	assert_int_equal(tc__gpu_alloc(0, 1, 0, &more, err, sizeof(err)),
			 TC_ECUDA);
	assert_string_equal(err, "cannot allocate 2097152 bytes on GPU 0: "
				 "cuMemCreate: CUDA_ERROR_OUT_OF_MEMORY (out "
				 "of memory)");
	assert_true(tc__gpu_last_error_oom());
	assert_int_equal(tc__gpu_last_cuda_error(), 2);
	assert_mem_empty(&more);
	assert_int_equal(t_count_fds(), fds + 2); /* `all` only */
	/* The other GPU has its own budget. */
	assert_int_equal(tc__gpu_alloc(1, 1, 0, &more, err, sizeof(err)), 0);
	tc__gpu_release(&more);
	tc__gpu_release(&all);
	assert_int_equal(tc__gpu_alloc(0, FAKE_MEM + 1, 0, &more, err,
				       sizeof(err)),
			 TC_ECUDA);
	assert_true(tc__gpu_last_error_oom());
	assert_int_equal(t_count_fds(), fds);
	assert_no_device_memory_used();
}

/* A release handed to the release thread: the caller's struct is empty at
 * once, the memory comes back a little later, and an allocation that runs
 * out meanwhile waits for it instead of failing.  A forked child releases
 * on its own thread (it has no release thread, and must not wait for the
 * parent's). */
static void test_gpu__release_later(void **state)
{
	struct tc__gpu_mem all, again;
	int fds = t_count_fds(), st;
	struct timespec a, b;
	pid_t pid;

	(void)state;
	setenv("TC_FAKECUDA_RELEASE_DELAY_MS", "150", 1);
	assert_int_equal(tc__gpu_alloc(0, FAKE_MEM, 0, &all, err, sizeof(err)),
			 0);
	clock_gettime(CLOCK_MONOTONIC, &a);
	tc__gpu_release_later(&all);
	clock_gettime(CLOCK_MONOTONIC, &b);
	assert_mem_empty(&all);
	/* Handed over, not released here (that sleeps 150 ms). */
	assert_true((b.tv_sec - a.tv_sec) * 1000 +
			    (b.tv_nsec - a.tv_nsec) / 1000000 <
		    100);
	/* The whole GPU is still held: this waits for the release. */
	assert_int_equal(
		tc__gpu_alloc(0, FAKE_MEM, 0, &again, err, sizeof(err)), 0);
	assert_int_equal(tc__gpu_release_wait(), 0);
	tc__gpu_release_later(&again);
	assert_int_equal(tc__gpu_release_wait(), 1);
	assert_no_device_memory_used();
	assert_int_equal(t_count_fds(), fds);
	unsetenv("TC_FAKECUDA_RELEASE_DELAY_MS");

	/* A child: no thread to hand to, and the parent's state untouched. */
	assert_int_equal(tc__gpu_alloc(0, 1, 0, &all, err, sizeof(err)), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		alarm(10);
		tc__gpu_release_later(&all); /* its fd copy; no driver calls */
		_exit(all.fd == -1 && tc__gpu_release_wait() == 0 ? 0 : 1);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	tc__gpu_release_later(&all);
	tc__gpu_release_wait();
	assert_no_device_memory_used();
	assert_int_equal(t_count_fds(), fds);
}

/* Each driver call tc__gpu_alloc makes, failed on its own. */
static void test_gpu__inject_alloc_steps(void **state)
{
	static const char *const steps[] = {
		"cuMemCreate",	       "cuMemExportToShareableHandle",
		"cuMemAddressReserve", "cuMemMap",
		"cuMemSetAccess",      "cuCtxSetCurrent",
	};
	struct tc__gpu_mem m;
	char spec[96];
	int fds = t_count_fds();

	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		snprintf(spec, sizeof(spec), "%s:1", steps[i]);
		setenv("TC_FAKECUDA_FAIL", spec, 1);
		assert_int_equal(tc__gpu_alloc(0, MiB, 0, &m, err, sizeof(err)),
				 TC_ECUDA);
		unsetenv("TC_FAKECUDA_FAIL");
		assert_err_has(steps[i]);
		assert_err_has("CUDA_ERROR_OUT_OF_MEMORY");
		assert_mem_empty(&m);
		assert_int_equal(t_count_fds(), fds);
		assert_no_device_memory_used();
	}
	/* A named error, on the v2 symbol name. */
	setenv("TC_FAKECUDA_FAIL",
	       "cuMemcpyHtoD_v2:1:CUDA_ERROR_ILLEGAL_ADDRESS", 1);
	assert_int_equal(tc__gpu_alloc(0, MiB, 0, &m, err, sizeof(err)), 0);
	assert_int_equal(tc__gpu_htod(0, m.dptr, spec, 8, NULL, err,
				      sizeof(err)),
			 TC_ECUDA);
	unsetenv("TC_FAKECUDA_FAIL");
	assert_err_has("CUDA_ERROR_ILLEGAL_ADDRESS");
	assert_int_equal(tc__gpu_last_cuda_error(), 700);
	tc__gpu_release(&m);
	assert_int_equal(t_count_fds(), fds);
	assert_no_device_memory_used();
}

/* Fail the n-th driver call for n = 1, 2, ... until the operation succeeds
 * (SQLite's way): every failure must be clean. */
static void test_gpu__inject_sweep_alloc(void **state)
{
	struct tc__gpu_mem m;
	char spec[32];
	int n, ret, fds = t_count_fds();

	quiet();
	for (n = 1; n < 100; n++) {
		snprintf(spec, sizeof(spec), "*:%d", n);
		setenv("TC_FAKECUDA_FAIL", spec, 1);
		err[0] = '\0';
		ret = tc__gpu_alloc(1, 3 * MiB, 0, &m, err, sizeof(err));
		unsetenv("TC_FAKECUDA_FAIL");
		if (ret == 0) {
			tc__gpu_release(&m);
			break;
		}
		assert_int_equal(ret, TC_ECUDA);
		assert_err_has("CUDA_ERROR_OUT_OF_MEMORY");
		assert_mem_empty(&m);
		assert_int_equal(t_count_fds(), fds);
		assert_no_device_memory_used();
	}
	loud();
	/* enter (2 calls), create, export, reserve, map, set access. */
	assert_true(n > 6);
	assert_int_equal(t_count_fds(), fds);
	assert_no_device_memory_used();
}

static void test_gpu__inject_sweep_import(void **state)
{
	struct tc__gpu_mem owner, m;
	char spec[32];
	int n, ret, fds = t_count_fds();

	assert_int_equal(tc__gpu_alloc(0, GRAN, 0, &owner, err, sizeof(err)),
			 0);
	quiet();
	for (n = 1; n < 100; n++) {
		snprintf(spec, sizeof(spec), "*:%d", n);
		setenv("TC_FAKECUDA_FAIL", spec, 1);
		ret = tc__gpu_import(0, owner.fd, owner.size, TC_GPU_READ_ONLY,
				     &m, err, sizeof(err));
		unsetenv("TC_FAKECUDA_FAIL");
		if (ret == 0) {
			tc__gpu_release(&m);
			break;
		}
		assert_int_equal(ret, TC_ECUDA);
		assert_mem_empty(&m);
		assert_int_equal(t_count_fds(), fds + 2); /* owner's */
	}
	loud();
	assert_true(n > 5);
	tc__gpu_release(&owner);
	assert_int_equal(t_count_fds(), fds);
	assert_no_device_memory_used();
}

static void test_gpu__inject_sweep_stream_event(void **state)
{
	struct tc__gpu_stream *s;
	struct tc__gpu_event *e;
	char spec[32];
	int n, ret;

	quiet();
	for (n = 1; n < 20; n++) {
		snprintf(spec, sizeof(spec), "*:%d", n);
		setenv("TC_FAKECUDA_FAIL", spec, 1);
		ret = tc__gpu_stream_create(1, &s, err, sizeof(err));
		unsetenv("TC_FAKECUDA_FAIL");
		if (ret == 0)
			break;
		assert_int_equal(ret, TC_ECUDA);
		assert_null(s);
	}
	tc__gpu_stream_free(s);
	for (n = 1; n < 20; n++) {
		snprintf(spec, sizeof(spec), "*:%d", n);
		setenv("TC_FAKECUDA_FAIL", spec, 1);
		ret = tc__gpu_event_create(1, 0, &e, err, sizeof(err));
		unsetenv("TC_FAKECUDA_FAIL");
		if (ret == 0)
			break;
		assert_int_equal(ret, TC_ECUDA);
		assert_null(e);
	}
	loud();
	tc__gpu_event_free(e);
}

static void test_gpu__device_lost(void **state)
{
	struct tc__gpu_mem m, m2;
	struct tc__gpu_stream *s;
	struct tc__gpu_event *e;
	uint64_t fr, tot;
	uint8_t buf[64] = { 0 };
	int lvl = tc__log_level, fds = t_count_fds();

	assert_int_equal(tc__gpu_alloc(1, GRAN, 0, &m, err, sizeof(err)), 0);
	assert_int_equal(tc__gpu_stream_create(1, &s, err, sizeof(err)), 0);
	assert_int_equal(tc__gpu_event_create(1, 0, &e, err, sizeof(err)), 0);

	setenv("TC_FAKECUDA_LOST_AFTER", "0", 1);
	assert_int_equal(tc__gpu_mem_write(&m, 0, buf, sizeof(buf), NULL, err,
					   sizeof(err)),
			 TC_ECUDA);
	assert_err_has("CUDA_ERROR_DEVICE_UNAVAILABLE");
	assert_int_equal(tc__gpu_last_cuda_error(), 46);
	assert_int_equal(tc__gpu_mem_info(1, &fr, &tot, err, sizeof(err)),
			 TC_ECUDA);
	assert_int_equal(tc__gpu_alloc(1, GRAN, 0, &m2, err, sizeof(err)),
			 TC_ECUDA);
	assert_mem_empty(&m2);
	assert_int_equal(tc__gpu_stream_sync(s, err, sizeof(err)), TC_ECUDA);
	/* Teardown still frees everything host-side (quietly: it warns). */
	tc__log_level = TC_LOG_ERROR - 1;
	tc__gpu_event_free(e);
	tc__gpu_stream_free(s);
	tc__gpu_release(&m);
	tc__log_level = lvl;
	assert_mem_empty(&m);
	unsetenv("TC_FAKECUDA_LOST_AFTER");
	assert_int_equal(t_count_fds(), fds);
	assert_no_device_memory_used();
}

static void test_gpu__no_driver(void **state)
{
	const char *env[] = { "TCAST_CUDA_LIB=/nonexistent/libcuda.so.1",
			      NULL };
	struct child_reply rep;

	run_child("info", env, NULL, -1, &rep);
	assert_int_equal(rep.ret, TC_ENODEV);
	if (!strstr(rep.msg, "cannot load CUDA driver "
			     "'/nonexistent/libcuda.so.1'"))
		fail_msg("unexpected: %s", rep.msg);
}

static void test_gpu__not_a_driver(void **state)
{
	/* A library that loads but is not libcuda. */
	const char *env[] = { "TCAST_CUDA_LIB=libm.so.6", NULL };
	struct child_reply rep;

	run_child("info", env, NULL, -1, &rep);
	assert_int_equal(rep.ret, TC_ENODEV);
	if (!strstr(rep.msg, "lacks 'cuGetErrorName'"))
		fail_msg("unexpected: %s", rep.msg);
}

static void test_gpu__init_failures(void **state)
{
	const char *init[] = { "TC_FAKECUDA_FAIL=cuInit:1:CUDA_ERROR_UNKNOWN",
			       NULL };
	const char *name[] = { "TC_FAKECUDA_FAIL=cuDeviceGetName:2", NULL };
	const char *uuid[] = { "TC_FAKECUDA_FAIL=cuDeviceGetUuid:1", NULL };
	struct child_reply rep;

	/* cuInit failing means no usable GPU. */
	run_child("info", init, NULL, -1, &rep);
	assert_int_equal(rep.ret, TC_ENODEV);
	if (!strstr(rep.msg, "cuInit: CUDA_ERROR_UNKNOWN (unknown error)"))
		fail_msg("unexpected: %s", rep.msg);
	/* Enumeration failing is a driver error, and sticky. */
	run_child("info", name, NULL, -1, &rep);
	assert_int_equal(rep.ret, TC_ECUDA);
	if (!strstr(rep.msg, "cannot enumerate GPU 1: cuDeviceGetName"))
		fail_msg("unexpected: %s", rep.msg);
	run_child("info", uuid, NULL, -1, &rep);
	assert_int_equal(rep.ret, TC_ECUDA);
	if (!strstr(rep.msg, "cuDeviceGetUuid: CUDA_ERROR_OUT_OF_MEMORY"))
		fail_msg("unexpected: %s", rep.msg);
}

static void test_gpu__no_device(void **state)
{
	const char *none[] = { "TC_FAKECUDA_DEVICES=0", NULL };
	const char *hidden[] = { "CUDA_VISIBLE_DEVICES=", NULL };
	struct child_reply rep;

	run_child("info", none, NULL, -1, &rep);
	assert_int_equal(rep.ret, TC_ENODEV);
	if (!strstr(rep.msg, "cuInit: CUDA_ERROR_NO_DEVICE"))
		fail_msg("unexpected: %s", rep.msg);
	run_child("info", hidden, NULL, -1, &rep);
	assert_int_equal(rep.ret, TC_ENODEV);
}

static void test_gpu__no_vmm(void **state)
{
	const char *env[] = { "TC_FAKECUDA_NO_VMM=1", NULL };
	struct child_reply rep;

	run_child("alloc", env, NULL, -1, &rep);
	assert_int_equal(rep.ret, TC_ENOTSUP);
	if (!strstr(rep.msg, "does not support virtual memory management"))
		fail_msg("unexpected: %s", rep.msg);
}

static void test_gpu__forked_child_refused(void **state)
{
	struct tc__gpu_mem m;
	int fds = t_count_fds();
	pid_t pid;

	assert_int_equal(tc__gpu_alloc(0, GRAN, 0, &m, err, sizeof(err)), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		uint64_t fr, tot;
		char msg[256];
		int ret = tc__gpu_mem_info(0, &fr, &tot, msg, sizeof(msg));

		/* The inherited fd copy is still released. */
		tc__gpu_release(&m);
		_exit(ret == TC_ENODEV && strstr(msg, "forked") && m.fd == -1 ?
			      0 :
			      1);
	}
	assert_int_equal(t_wait_status(pid), 0);
	tc__gpu_release(&m);
	assert_int_equal(t_count_fds(), fds);
	assert_no_device_memory_used();
}

/* tcast must leave the calling thread's CUDA context as it found it, or it
 * would move torch's current device under it. */
static void test_gpu__context_restored(void **state)
{
	typedef int (*get_fn)(void **);
	typedef int (*set_fn)(void *);
	typedef int (*retain_fn)(void **, int);
	typedef int (*release_fn)(int);
	void *dl = dlopen(TC_FAKECUDA_PATH, RTLD_NOW | RTLD_NOLOAD);
	get_fn get;
	set_fn set;
	retain_fn retain;
	release_fn release;
	struct tc__gpu_mem m;
	uint64_t fr, tot;
	void *ctx0, *cur;

	assert_non_null(dl);
	get = (get_fn)dlsym(dl, "cuCtxGetCurrent");
	set = (set_fn)dlsym(dl, "cuCtxSetCurrent");
	retain = (retain_fn)dlsym(dl, "cuDevicePrimaryCtxRetain");
	release = (release_fn)dlsym(dl, "cuDevicePrimaryCtxRelease_v2");
	assert_true(get && set && retain && release);

	assert_int_equal(set(NULL), 0);
	assert_int_equal(tc__gpu_mem_info(1, &fr, &tot, err, sizeof(err)), 0);
	assert_int_equal(get(&cur), 0);
	assert_null(cur);

	assert_int_equal(retain(&ctx0, 0), 0);
	assert_int_equal(set(ctx0), 0);
	assert_int_equal(tc__gpu_alloc(1, GRAN, 0, &m, err, sizeof(err)), 0);
	assert_int_equal(
		tc__gpu_memset8(1, m.dptr, 1, 8, NULL, err, sizeof(err)), 0);
	tc__gpu_release(&m);
	assert_int_equal(get(&cur), 0);
	assert_ptr_equal(cur, ctx0);
	assert_int_equal(set(NULL), 0);
	assert_int_equal(release(0), 0);
	dlclose(dl);
}

struct thread_arg {
	int device;
	int failures;
};

static void *thread_main(void *p)
{
	struct thread_arg *a = p;
	uint8_t in[8192], out[8192];
	char msg[256];

	t_fill_pattern(in, sizeof(in), (uint64_t)a->device);
	for (int i = 0; i < 25; i++) {
		struct tc__gpu_mem m;

		if (tc__gpu_alloc(a->device, GRAN, 0, &m, msg, sizeof(msg)) ||
		    tc__gpu_mem_write(&m, 100, in, sizeof(in), NULL, msg,
				      sizeof(msg)) ||
		    tc__gpu_mem_read(&m, 100, out, sizeof(out), NULL, msg,
				     sizeof(msg)) ||
		    memcmp(in, out, sizeof(in)))
			a->failures++;
		tc__gpu_release(&m);
	}
	return NULL;
}

static void test_gpu__threads(void **state)
{
	pthread_t t[4];
	struct thread_arg args[4];

	for (int i = 0; i < 4; i++) {
		args[i].device = i % 2;
		args[i].failures = 0;
		assert_int_equal(
			pthread_create(&t[i], NULL, thread_main, &args[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(args[i].failures, 0);
	}
	assert_no_device_memory_used();
}

/* b3core.h's tree for chunks of `chunk_bytes`, run on the host as the
 * kernels run it (leaves, then level by level). */
static void b3_host(const uint8_t *p, uint64_t size, uint64_t chunk_bytes,
		    struct tc__digest *out)
{
	uint64_t per = chunk_bytes / B3_LEAF_BYTES, nch;
	uint32_t *cvs, *tmp;
	struct b3_args a;

	nch = (size + chunk_bytes - 1) / chunk_bytes;
	cvs = calloc(nch * per, 32);
	tmp = calloc(nch * per, 32);
	assert_non_null(cvs);
	assert_non_null(tmp);
	a = (struct b3_args){
		(uintptr_t)p,	size,		0,	    nch, (uintptr_t)cvs,
		(uintptr_t)tmp, (uintptr_t)out, chunk_bytes
	};
	for (uint64_t i = 0; i < nch * per; i++)
		b3_leaf_at(&a, i);
	for (uint64_t k = 0; k < nch; k++) {
		uint32_t *in = cvs + k * per * 8, *to = tmp + k * per * 8;
		uint64_t n = b3_leaves(b3_chunk_len(size, chunk_bytes, k));

		while (n > 2) {
			uint32_t *sw = in;

			n = b3_level(in, to, n, 0, 1);
			in = to;
			to = sw;
		}
		b3_root(in, n, (uint32_t *)out[k].b);
	}
	free(cvs);
	free(tmp);
}

/* The kernels' arithmetic is BLAKE3: every tree shape (1 to 13 leaves per
 * chunk, partial blocks, partial leaves) against upstream's C code. */
static void test_gpu__chunk_hash_core_is_blake3(void **state)
{
	static const uint64_t cb[] = { 1024, 3072, 5120, 7168, 13312 };
	uint8_t *mem = malloc(40032), *buf;

	assert_non_null(mem);
	/* At a 16-byte aligned base whole leaves take the 16-byte loads, at
	 * base + 4 the word-by-word path (which needs 4-byte alignment, as
	 * every allocation gives): both are checked. */
	for (int shift = 0; shift <= 4; shift += 4)
		for (size_t c = 0; c < sizeof(cb) / sizeof(cb[0]); c++)
			for (uint64_t size = 1; size < 40000;
			     size += 1 + size / 3 + (size % 61)) {
				uint64_t nch = (size + cb[c] - 1) / cb[c];
				struct tc__digest got[40], want;

				buf = mem + 16 + shift;
				for (int i = 0; i < 40000 - shift; i++)
					buf[i] = (uint8_t)(i * 131 + (i >> 7));
				b3_host(buf, size, cb[c], got);
				for (uint64_t k = 0; k < nch; k++) {
					uint64_t len =
						b3_chunk_len(size, cb[c], k);

					tc__hash256(buf + k * cb[c], len,
						    &want);
					if (!tc__digest_eq(&got[k], &want))
						fail_msg(
							"chunk %llu of %llu bytes "
							"(chunks of %llu): digest "
							"differs",
							(unsigned long long)k,
							(unsigned long long)size,
							(unsigned long long)
								cb[c]);
				}
			}
	free(mem);
}

/* tc__gpu_hash_chunks_dev on the fake: the launches, the scratch and the
 * copy of the digests back, for sizes around the leaf and chunk bounds. */
static void test_gpu__chunk_hash_on_device(void **state)
{
	static const uint64_t sizes[] = { 1,	       1000,	     1024,
					  1025,	       4 * MiB - 1,  4 * MiB,
					  4 * MiB + 3, 9 * MiB + 517 };
	struct tc__gpu_mem m;
	uint8_t *host = malloc(10 * MiB);
	struct tc__digest got[3], want;

	assert_non_null(host);
	for (uint64_t i = 0; i < 10 * MiB; i++)
		host[i] = (uint8_t)((i * 2654435761u) >> 13);
	assert_int_equal(tc__gpu_hash_ready(0, err, sizeof(err)), 0);
	assert_int_equal(tc__gpu_alloc(0, 10 * MiB, 0, &m, err, sizeof(err)),
			 0);
	assert_int_equal(tc__gpu_mem_write(&m, 0, host, 10 * MiB, NULL, err,
					   sizeof(err)),
			 0);
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		uint64_t n = tc__chunk_count(sizes[i]);

		memset(got, 0, sizeof(got));
		assert_int_equal(tc__gpu_hash_chunks_dev(&m, sizes[i], got, err,
							 sizeof(err)),
				 0);
		for (uint64_t k = 0; k < n; k++) {
			tc__hash256(host + k * TC_CHUNK_BYTES,
				    TC_MIN(TC_CHUNK_BYTES,
					   sizes[i] - k * TC_CHUNK_BYTES),
				    &want);
			assert_true(tc__digest_eq(&got[k], &want));
		}
	}
	/* Beyond the allocation: refused, nothing launched. */
	assert_int_equal(tc__gpu_hash_chunks_dev(&m, m.size + 1, got, err,
						 sizeof(err)),
			 TC_EINVAL);
	assert_non_null(strstr(err, "cannot hash"));
	tc__gpu_release(&m);
	free(host);
	assert_no_device_memory_used();
}

/*
 * tc__gpu_copy_hash on the fake (the fused kernel's own arithmetic,
 * b3core.h): random layouts of segments, as a put's table lays tensors
 * out (256-byte aligned offsets, odd lengths, padding between them),
 * from sources at any alignment; the destination must hold the byte
 * space exactly (zeros in the gaps) and the digests must be the host's
 * digests of it.  Bad segment lists are refused before any launch.
 */
static void test_gpu__copy_hash(void **state)
{
	uint64_t space = 9 * MiB + 700, srcn = 10 * MiB;
	uint8_t *host = malloc(srcn), *want = malloc(space),
		*back = malloc(space);
	struct tc__gpu_seg segs[64], bad[2];
	struct tc__digest got[3], dig;
	struct tc__gpu_mem src, dst;
	uint64_t seed = 0x9e3779b97f4a7c15ull;

	assert_true(host && want && back);
	for (uint64_t i = 0; i < srcn; i++)
		host[i] = (uint8_t)((i * 2654435761u) >> 9);
	assert_int_equal(tc__gpu_alloc(0, srcn, 0, &src, err, sizeof(err)), 0);
	assert_int_equal(tc__gpu_alloc(0, space, 0, &dst, err, sizeof(err)), 0);
	assert_int_equal(tc__gpu_mem_write(&src, 0, host, srcn, NULL, err,
					   sizeof(err)),
			 0);
	for (int round = 0; round < 6; round++) {
		uint64_t off = 0, n = 0, used;

		memset(want, 0, space);
		while (n < 64 && off < space) {
			uint64_t len, so;

			seed = seed * 6364136223846793005ull +
			       1442695040888963407ull;
			len = 1 + (seed >> 33) % (round < 3 ? 700000 : 3000);
			if (len > space - off)
				len = space - off;
			so = (seed >> 13) % (srcn - len);
			if (round % 2 == 0)
				so &= ~(uint64_t)255; /* aligned sources */
			segs[n++] =
				(struct tc__gpu_seg){ off, len, src.dptr + so };
			memcpy(want + off, host + so, len);
			off = TC_ALIGN_UP(off + len, (uint64_t)256);
		}
		used = n ? segs[n - 1].off + segs[n - 1].len : 0;
		assert_int_equal(tc__gpu_memset8(0, dst.dptr, 0xA5, space, NULL,
						 err, sizeof(err)),
				 0);
		assert_int_equal(tc__gpu_copy_hash(0, dst.dptr, used, segs, n,
						   got, err, sizeof(err)),
				 0);
		assert_int_equal(tc__gpu_mem_read(&dst, 0, back, space, NULL,
						  err, sizeof(err)),
				 0);
		assert_memory_equal(back, want, used);
		for (uint64_t i = used; i < space; i++)
			assert_int_equal(back[i], 0xA5); /* nothing past it */
		for (uint64_t k = 0; k < tc__chunk_count(used); k++) {
			tc__hash256(want + k * TC_CHUNK_BYTES,
				    TC_MIN(TC_CHUNK_BYTES,
					   used - k * TC_CHUNK_BYTES),
				    &dig);
			if (!tc__digest_eq(&got[k], &dig))
				fail_msg(
					"round %d: chunk %llu's digest differs",
					round, (unsigned long long)k);
		}
	}
	/* Overlapping, empty and outside: refused with the segment named. */
	bad[0] = (struct tc__gpu_seg){ 0, 4096, src.dptr };
	bad[1] = (struct tc__gpu_seg){ 4000, 10, src.dptr };
	assert_int_equal(tc__gpu_copy_hash(0, dst.dptr, space, bad, 2, got, err,
					   sizeof(err)),
			 TC_EINVAL);
	assert_non_null(strstr(err, "segment 1"));
	bad[1] = (struct tc__gpu_seg){ 4096, 0, src.dptr };
	assert_int_equal(tc__gpu_copy_hash(0, dst.dptr, space, bad, 2, got, err,
					   sizeof(err)),
			 TC_EINVAL);
	bad[1] = (struct tc__gpu_seg){ space - 5, 10, src.dptr };
	assert_int_equal(tc__gpu_copy_hash(0, dst.dptr, space, bad, 2, got, err,
					   sizeof(err)),
			 TC_EINVAL);
	assert_non_null(strstr(err, "outside"));
	tc__gpu_release(&src);
	tc__gpu_release(&dst);
	free(host);
	free(want);
	free(back);
	assert_no_device_memory_used();
}

/* Device-to-device copies of any size and alignment, on a stream or
 * blocking, move exactly their range; a range outside the allocations
 * fails as a GPU's would. */
static void test_gpu__copy_d2d(void **state)
{
	static const uint64_t sizes[] = { 1,	   4095,	 MiB,
					  MiB + 1, 3 * MiB + 17, 4 * MiB - 3 };
	static const uint64_t offs[] = { 0, 16, 1, 7 };
	uint8_t *host = malloc(5 * MiB), *back = malloc(5 * MiB);
	struct tc__gpu_stream *s;
	struct tc__gpu_mem a, b;

	(void)state;
	assert_true(host && back);
	for (uint64_t i = 0; i < 5 * MiB; i++)
		host[i] = (uint8_t)((i * 2654435761u) >> 17);
	assert_int_equal(tc__gpu_alloc(0, 5 * MiB, 0, &a, err, sizeof(err)), 0);
	assert_int_equal(tc__gpu_alloc(0, 5 * MiB, 0, &b, err, sizeof(err)), 0);
	assert_int_equal(tc__gpu_mem_write(&a, 0, host, 5 * MiB, NULL, err,
					   sizeof(err)),
			 0);
	assert_int_equal(tc__gpu_stream_create(0, &s, err, sizeof(err)), 0);
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		for (size_t j = 0; j < 4; j++) {
			uint64_t so = offs[j], dof = offs[(j + 1) % 4];

			assert_int_equal(tc__gpu_memset8(0, b.dptr, 0, b.size,
							 NULL, err,
							 sizeof(err)),
					 0);
			assert_int_equal(tc__gpu_dtod(0, b.dptr + dof,
						      a.dptr + so, sizes[i],
						      j % 2 ? s : NULL, err,
						      sizeof(err)),
					 0);
			assert_int_equal(
				tc__gpu_stream_sync(s, err, sizeof(err)), 0);
			assert_int_equal(tc__gpu_mem_read(&b, 0, back, 5 * MiB,
							  NULL, err,
							  sizeof(err)),
					 0);
			assert_memory_equal(back + dof, host + so, sizes[i]);
			/* nothing beyond the range */
			assert_int_equal(back[dof + sizes[i]], 0);
			if (dof)
				assert_int_equal(back[dof - 1], 0);
		}
	/* Past the end of the destination: refused like a GPU's fault. */
	assert_int_equal(tc__gpu_dtod(0, b.dptr + MiB, a.dptr, b.size, NULL,
				      err, sizeof(err)),
			 TC_ECUDA);
	tc__gpu_stream_free(s);
	tc__gpu_release(&a);
	tc__gpu_release(&b);
	free(host);
	free(back);
	assert_no_device_memory_used();
}

/* A peer copy moves real bytes between two fake GPUs' memory: the
 * destination device is granted read access to the source allocation
 * first (VMM memory is reachable only where cuMemSetAccess says), the
 * range is checked against the source, and a copy with a stream is done
 * once the stream is. */
static void test_gpu__peer_copy(void **state)
{
	uint8_t *host = malloc(3 * MiB), *back = malloc(3 * MiB);
	struct tc__gpu_stream *s;
	struct tc__gpu_mem a, b;

	(void)state;
	assert_true(host && back);
	for (uint64_t i = 0; i < 3 * MiB; i++)
		host[i] = (uint8_t)((i * 2654435761u) >> 11);
	assert_int_equal(tc__gpu_can_access_peer(1, 0, err, sizeof(err)), 1);
	assert_int_equal(tc__gpu_can_access_peer(0, 0, err, sizeof(err)), 1);
	assert_int_equal(tc__gpu_can_access_peer(0, 9, err, sizeof(err)),
			 TC_EDEVICE);
	assert_int_equal(tc__gpu_alloc(0, 3 * MiB, 0, &a, err, sizeof(err)), 0);
	assert_int_equal(tc__gpu_alloc(1, 3 * MiB, 0, &b, err, sizeof(err)), 0);
	assert_int_equal(tc__gpu_mem_write(&a, 0, host, 3 * MiB, NULL, err,
					   sizeof(err)),
			 0);
	assert_int_equal(tc__gpu_memset8(1, b.dptr, 0, b.size, NULL, err,
					 sizeof(err)),
			 0);
	assert_int_equal(tc__gpu_peer_copy(&b, 8, &a, 16, 2 * MiB + 5, NULL,
					   err, sizeof(err)),
			 0);
	assert_int_equal(tc__gpu_mem_read(&b, 0, back, 3 * MiB, NULL, err,
					  sizeof(err)),
			 0);
	assert_memory_equal(back + 8, host + 16, 2 * MiB + 5);
	assert_int_equal(back[7], 0);
	assert_int_equal(back[8 + 2 * MiB + 5], 0);
	/* On a stream of the destination, twice (the grant is kept). */
	assert_int_equal(tc__gpu_stream_create(1, &s, err, sizeof(err)), 0);
	assert_int_equal(tc__gpu_peer_copy(&b, 0, &a, 0, 3 * MiB, s, err,
					   sizeof(err)),
			 0);
	assert_int_equal(tc__gpu_stream_sync(s, err, sizeof(err)), 0);
	assert_int_equal(tc__gpu_mem_read(&b, 0, back, 3 * MiB, NULL, err,
					  sizeof(err)),
			 0);
	assert_memory_equal(back, host, 3 * MiB);
	/* A stream of another device, a range past the source: refused. */
	assert_int_equal(tc__gpu_peer_copy(&a, 0, &b, 0, MiB, s, err,
					   sizeof(err)),
			 TC_EINVAL);
	assert_int_equal(tc__gpu_peer_copy(&b, 0, &a, MiB, a.size, NULL, err,
					   sizeof(err)),
			 TC_EINVAL);
	assert_int_equal(tc__gpu_peer_copy(&b, MiB, &a, 0, b.size, NULL, err,
					   sizeof(err)),
			 TC_EINVAL);
	tc__gpu_stream_free(s);
	/* The source's own device still writes it (the grant added a
	 * reader, it did not replace the owner's access). */
	assert_int_equal(tc__gpu_mem_write(&a, 0, host + 1, MiB, NULL, err,
					   sizeof(err)),
			 0);
	tc__gpu_release(&a);
	tc__gpu_release(&b);
	free(host);
	free(back);
	assert_no_device_memory_used();
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_gpu__load),
		cmocka_unit_test(test_gpu__peer_copy),
		cmocka_unit_test(test_gpu__devices),
		cmocka_unit_test(test_gpu__uuid_text),
		cmocka_unit_test(test_gpu__ordinal_ref),
		cmocka_unit_test(test_gpu__visible_devices),
		cmocka_unit_test(test_gpu__granularity),
		cmocka_unit_test(test_gpu__alloc_release),
		cmocka_unit_test(test_gpu__copy_roundtrip),
		cmocka_unit_test(test_gpu__import_second_process),
		cmocka_unit_test(test_gpu__readonly_refuses_writes),
		cmocka_unit_test(test_gpu__import_bad_input),
		cmocka_unit_test(test_gpu__import_access_later),
		cmocka_unit_test(test_gpu__host_register),
		cmocka_unit_test(test_gpu__out_of_memory),
		cmocka_unit_test(test_gpu__release_later),
		cmocka_unit_test(test_gpu__inject_alloc_steps),
		cmocka_unit_test(test_gpu__inject_sweep_alloc),
		cmocka_unit_test(test_gpu__inject_sweep_import),
		cmocka_unit_test(test_gpu__inject_sweep_stream_event),
		cmocka_unit_test(test_gpu__device_lost),
		cmocka_unit_test(test_gpu__no_driver),
		cmocka_unit_test(test_gpu__not_a_driver),
		cmocka_unit_test(test_gpu__init_failures),
		cmocka_unit_test(test_gpu__no_device),
		cmocka_unit_test(test_gpu__no_vmm),
		cmocka_unit_test(test_gpu__forked_child_refused),
		cmocka_unit_test(test_gpu__context_restored),
		cmocka_unit_test(test_gpu__threads),
		cmocka_unit_test(test_gpu__chunk_hash_core_is_blake3),
		cmocka_unit_test(test_gpu__chunk_hash_on_device),
		cmocka_unit_test(test_gpu__copy_hash),
		cmocka_unit_test(test_gpu__copy_d2d),
	};

	if (argc == 4 && !strcmp(argv[1], "--child"))
		return child_main(argv[2], atoi(argv[3]));
	/* Children inherit this environment (plus their own changes). */
	setenv("TCAST_CUDA_LIB", TC_FAKECUDA_PATH, 1);
	setenv("TC_FAKECUDA_DEVICES", "2", 1);
	setenv("TC_FAKECUDA_MEM_BYTES", "64m", 1);
	unsetenv("TC_FAKECUDA_FAIL");
	unsetenv("TC_FAKECUDA_LOST_AFTER");
	unsetenv("TC_FAKECUDA_NO_VMM");
	unsetenv("CUDA_VISIBLE_DEVICES");
	return cmocka_run_group_tests(tests, NULL, NULL);
}
