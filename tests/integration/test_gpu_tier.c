/*
 * test_gpu_tier.c - the daemon's GPU tier end to end on the fake CUDA
 * driver: a real daemon (TCAST_CUDA_LIB pointing at tests/fakecuda), real
 * client processes importing its VMM fds, budgets, eviction, leases,
 * driver failures and leak checks.
 *
 * Client processes are this binary run again ("--child MODE ..."), never
 * a bare fork: CUDA cannot be used in a child forked after the driver was
 * initialised, and this process initialises it in the first test.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "gpu/vmm.h"
#include "tcast/client.h"
#include "tcast/dlpack.h"
#include "tcast/errors.h"
#include "tlib.h"

#ifndef TC_FAKECUDA_PATH
#error "TC_FAKECUDA_PATH must name the fake driver"
#endif

#define MiB ((uint64_t)1 << 20)

static struct t_daemon D;

/* --------------------------------------------------------------- helpers */

/* Start a daemon with `env` ("NAME=value", NULL-terminated) set for it
 * only, and extra daemon arguments after it. */
static void daemon_start(const char *const *env, ...)
{
	char *saved[8] = { 0 }, names[8][64];
	const char *args[8] = { 0 };
	int n = 0, na = 0;
	va_list ap;

	/* A failed test leaves its daemon running: stop it first. */
	if (D.pid > 0)
		t_daemon_stop(&D);

	for (; env && env[n]; n++) {
		const char *eq = strchr(env[n], '=');
		const char *old;

		snprintf(names[n], sizeof(names[n]), "%.*s", (int)(eq - env[n]),
			 env[n]);
		old = getenv(names[n]);
		saved[n] = old ? strdup(old) : NULL;
		setenv(names[n], eq + 1, 1);
	}
	va_start(ap, env);
	for (const char *a; (a = va_arg(ap, const char *)) && na < 7;)
		args[na++] = a;
	va_end(ap);
	t_daemon_start(&D, "256MiB", args[0], args[1], args[2], args[3],
		       args[4], args[5], args[6], NULL);
	for (int i = 0; i < n; i++) {
		if (saved[i])
			setenv(names[i], saved[i], 1);
		else
			unsetenv(names[i]);
		free(saved[i]);
	}
}

static void daemon_stop(void)
{
	assert_int_equal(t_daemon_stop(&D), 0);
}

static json_t *get_json(tc_client *c, const char *ref)
{
	char *s;
	json_t *j;
	int rc = ref ? tc_inspect_json(c, ref, &s) : tc_status_json(c, &s);

	if (rc < 0)
		fail_msg("json: %s", tc_client_errmsg(c));
	j = json_loads(s, 0, NULL);
	tc_free(s);
	assert_non_null(j);
	return j;
}

/* A field of GPU `dev` in STATUS. */
static long long gpu_stat(tc_client *c, int dev, const char *field)
{
	json_t *j = get_json(c, NULL);
	json_t *d = json_array_get(json_object_get(json_object_get(j, "gpu"),
						   "devices"),
				   (size_t)dev);
	const char *dot = strchr(field, '.');
	long long v;

	/* "spare.bytes": a member of an object member. */
	if (d && dot) {
		char head[32];

		snprintf(head, sizeof(head), "%.*s", (int)(dot - field), field);
		d = json_object_get(d, head);
		field = dot + 1;
	}
	v = d ? json_integer_value(json_object_get(d, field)) : -1;
	json_decref(j);
	return v;
}

static long long gpu_total(tc_client *c, const char *field)
{
	json_t *j = get_json(c, NULL);
	long long v = json_integer_value(
		json_object_get(json_object_get(j, "gpu"), field));

	json_decref(j);
	return v;
}

/* The GPU replica entry of `ref` on GPU ordinal `dev` (daemon's), or
 * NULL; the caller decrefs the returned document *doc. */
static json_t *gpu_replica(tc_client *c, const char *ref, int dev, json_t **doc)
{
	json_t *reps, *r;
	size_t i;

	*doc = get_json(c, ref);
	reps = json_object_get(*doc, "replicas");
	json_array_foreach(reps, i, r)
	{
		if (!strcmp(json_string_value(json_object_get(r, "tier")),
			    "gpu") &&
		    json_integer_value(json_object_get(r, "ordinal")) == dev)
			return r;
	}
	return NULL;
}

static long long replica_leases(tc_client *c, const char *ref, int dev)
{
	json_t *doc, *r = gpu_replica(c, ref, dev, &doc);
	long long v = r ? json_integer_value(json_object_get(r, "leases")) : -1;

	json_decref(doc);
	return v;
}

/* Put `bytes` bytes of a seed-dependent pattern as one U8 tensor. */
static void put_blob(tc_client *c, const char *key, uint64_t bytes,
		     uint32_t seed, char id[TC_ID_BUFLEN])
{
	struct tc_tensor_desc d = { "blob", TC_DTYPE_U8, 1, &bytes };
	struct tc_opts o = { TC_OPT_KEY, key, NULL, 0, NULL, NULL, 0, 0 };
	struct tc_result r;
	uint8_t *p;
	tc_put *put;

	if (tc_put_begin(c, &d, 1, NULL, &o, &put) < 0)
		fail_msg("put: %s", tc_client_errmsg(c));
	p = tc_put_data(put, 0);
	for (uint64_t i = 0; i < bytes; i++)
		p[i] = (uint8_t)((i * 2654435761u) >> 13 ^ seed);
	if (tc_put_commit(put, &r) < 0)
		fail_msg("commit: %s", tc_client_errmsg(c));
	if (id)
		memcpy(id, r.id, TC_ID_BUFLEN);
}

/* SHA-256 of an artifact's byte space, read from wherever it lives. */
static void artifact_sha(tc_artifact *a, char hex[65])
{
	uint64_t n = tc_artifact_size(a);
	void *buf;
	char err[256];

	if (tc_artifact_device(a) < 0) {
		t_sha256_hex(tc_artifact_data(a), n, hex);
		return;
	}
	buf = malloc(n ? n : 1);
	assert_non_null(buf);
	if (tc__gpu_dtoh(tc_artifact_device(a), buf,
			 (uint64_t)(uintptr_t)tc_artifact_data(a), n, NULL, err,
			 sizeof(err)) < 0)
		fail_msg("dtoh: %s", err);
	t_sha256_hex(buf, n, hex);
	free(buf);
}

static void host_sha(tc_client *c, const char *ref, char hex[65])
{
	tc_artifact *a;

	assert_int_equal(tc_attach(c, ref, &a), 0);
	artifact_sha(a, hex);
	tc_artifact_close(a);
}

static tc_artifact *attach_gpu_ok(tc_client *c, const char *ref, int dev)
{
	tc_artifact *a = NULL;
	int rc = tc_attach_gpu(c, ref, dev, &a);

	if (rc < 0)
		fail_msg("attach_gpu '%s' on %d: %s: %s", ref, dev,
			 tc_err_name(rc), tc_client_errmsg(c));
	assert_int_equal(tc_artifact_device(a), dev);
	return a;
}

/* Attach `ref` on GPU `dev`, check its bytes against the host copy by
 * SHA-256, and close it. */
static void gpu_copy_matches_host(tc_client *c, const char *ref, int dev)
{
	char hex[65], h2[65];
	tc_artifact *a;

	host_sha(c, ref, hex);
	a = attach_gpu_ok(c, ref, dev);
	artifact_sha(a, h2);
	assert_string_equal(h2, hex);
	tc_artifact_close(a);
}

static int count_maps(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	int n = 0, ch;

	while ((ch = fgetc(f)) != EOF)
		n += ch == '\n';
	fclose(f);
	return n;
}

/* Run this binary as "--child MODE SOCK REF ORDINAL" with `env` changes
 * ("NAME=value" sets, "-NAME" unsets).  *out reads its stdout. */
static pid_t spawn(const char *mode, const char *ref, int ordinal,
		   const char *const *env, int *out)
{
	char ord[16];
	int p[2];
	pid_t pid;

	snprintf(ord, sizeof(ord), "%d", ordinal);
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	pid = t_spawn_self((const char *const[]){ mode, D.sock, ref, ord,
						  NULL },
			   env, p[1], -1);
	assert_true(pid > 0);
	close(p[1]);
	*out = p[0];
	return pid;
}

/* Run a child to the end; its first output line goes to `line`. */
static int run_child(const char *mode, const char *ref, int ordinal,
		     const char *const *env, char *line, size_t len)
{
	char scratch[256];
	int fd;
	pid_t pid = spawn(mode, ref, ordinal, env, &fd);

	t_read_line(fd, line ? line : scratch, line ? len : sizeof(scratch));
	close(fd);
	return t_wait_status(pid);
}

/* Output of `tcast --socket D.sock ARGS` (malloc'd). */
static char *cli_output(const char *args)
{
	char cmd[1024], chunk[4096], *buf = NULL;
	size_t len = 0, n;
	FILE *p, *m = open_memstream(&buf, &len);

	snprintf(cmd, sizeof(cmd), "%s/tcast --socket '%s' %s", TC_TEST_BIN,
		 D.sock, args);
	p = popen(cmd, "r");
	assert_non_null(p);
	while ((n = fread(chunk, 1, sizeof(chunk), p)) > 0)
		fwrite(chunk, 1, n, m);
	assert_int_equal(pclose(p), 0);
	fclose(m);
	return buf;
}

/* ---------------------------------------------------------------- child */

static int child_main(int argc, char **argv)
{
	const char *mode = argv[2], *sock = argv[3], *ref = argv[4];
	int dev = atoi(argv[5]), rc;
	char err[512], hex[65];
	tc_client *c;
	tc_artifact *a;

	if (tc_client_connect(sock, &c, err, sizeof(err)) < 0) {
		printf("connect: %s\n", err);
		return 10;
	}
	if (!strcmp(mode, "gput")) {
		/* A put of 3 MiB from GPU `dev`, half written, then this
		 * process waits to be killed with the put unsealed. */
		uint64_t n = 3 * MiB;
		struct tc_tensor_desc d = { "w", TC_DTYPE_U8, 1, &n };
		struct tc_opts o = { .field_mask = TC_OPT_DEVICE,
				     .device = dev };
		tc_put *p;

		rc = tc_put_begin(c, &d, 1, NULL, &o, &p);
		if (rc < 0) {
			printf("put: %s: %s\n", tc_err_name(rc),
			       tc_client_errmsg(c));
			return 18;
		}
		memset(tc_put_data(p, 0), 0x33, (size_t)n / 2);
		printf("ready\n");
		fflush(stdout);
		pause();
		return 0;
	}
	rc = tc_attach_gpu(c, ref, dev, &a);
	if (!strcmp(mode, "nodriver")) {
		printf("%s %s\n", tc_err_name(rc), tc_client_errmsg(c));
		if (rc == 0)
			tc_artifact_close(a);
		tc_client_close(c);
		return rc == TC_ENODEV ? 0 : 11;
	}
	if (rc < 0) {
		printf("attach: %s: %s\n", tc_err_name(rc),
		       tc_client_errmsg(c));
		tc_client_close(c);
		return 12;
	}
	if (!strcmp(mode, "sha")) {
		void *dl;
		struct tc_DLManagedTensorVersioned *m;

		artifact_sha(a, hex);
		if (tc_artifact_dlpack(a, 0, 1, &dl) < 0)
			return 13;
		m = dl;
		printf("%s %d %d %d\n", hex, tc_artifact_device(a),
		       m->dl_tensor.device.device_type,
		       m->dl_tensor.device.device_id);
		m->deleter(m);
	} else if (!strcmp(mode, "write")) {
		/* A CPU write through the fake's read-only mapping: the
		 * parent expects SIGSEGV. */
		fflush(stdout);
		*(volatile uint8_t *)tc_artifact_data(a) = 0x5a;
		printf("wrote\n");
		return 14;
	} else if (!strcmp(mode, "copy")) {
		uint8_t before[64], after[64], junk[64];
		uint64_t dptr = (uint64_t)(uintptr_t)tc_artifact_data(a);

		memset(junk, 0xee, sizeof(junk));
		if (tc__gpu_dtoh(dev, before, dptr, 64, NULL, err,
				 sizeof(err)) < 0)
			return 15;
		rc = tc__gpu_htod(dev, dptr, junk, 64, NULL, err, sizeof(err));
		if (tc__gpu_dtoh(dev, after, dptr, 64, NULL, err, sizeof(err)) <
		    0)
			return 16;
		printf("%s %s\n", tc_err_name(rc), err);
		if (rc != TC_ECUDA || memcmp(before, after, 64))
			return 17;
	} else if (!strcmp(mode, "hold")) {
		printf("ready\n");
		fflush(stdout);
		pause();
	}
	tc_artifact_close(a);
	tc_client_close(c);
	return 0;
}

/* ----------------------------------------------------------------- tests */

static const char *const fake_env[] = { "TC_FAKECUDA_DEVICES=2", NULL };

/* Two processes per GPU share one replica; bytes equal the host copy;
 * DLPack says kDLCUDA on the client's own ordinal; inspect and status
 * show the replicas. */
static void test_gpu_tier__share_across_processes(void **state)
{
	static const char *const swap[] = { "CUDA_VISIBLE_DEVICES=1,0", NULL };
	char hex[65], line[256], want[300];
	tc_client *c;
	tc_artifact *a;
	json_t *doc, *r;
	void *dl;
	struct tc_DLManagedTensorVersioned *m;
	struct tc_DLManagedTensor *l;

	daemon_start(fake_env, NULL);
	c = t_connect(D.sock);
	{
		struct tc_opts o = { TC_OPT_KEY, "llama", NULL, 0,
				     NULL,	 NULL,	  0,	0 };

		if (tc_import(c, t_data("tiny-llama"), &o, NULL) < 0)
			fail_msg("import: %s", tc_client_errmsg(c));
	}
	host_sha(c, "llama", hex);
	/* Nothing loads the driver before the first GPU request. */
	doc = get_json(c, NULL);
	assert_string_equal(json_string_value(json_object_get(
				    json_object_get(doc, "gpu"), "state")),
			    "not loaded");
	json_decref(doc);

	/* GPU 0 seen as ordinal 0 here and as ordinal 1 by a process with
	 * CUDA_VISIBLE_DEVICES=1,0: the UUID maps them to one replica. */
	assert_int_equal(run_child("sha", "llama", 0, NULL, line, sizeof(line)),
			 0);
	snprintf(want, sizeof(want), "%s 0 %d 0", hex, TC_kDLCUDA);
	assert_string_equal(line, want);
	assert_int_equal(run_child("sha", "llama", 1, swap, line, sizeof(line)),
			 0);
	snprintf(want, sizeof(want), "%s 1 %d 1", hex, TC_kDLCUDA);
	assert_string_equal(line, want);
	assert_int_equal(gpu_stat(c, 0, "replicas"), 1);
	assert_int_equal(gpu_stat(c, 1, "replicas"), 0);
	assert_int_equal(gpu_total(c, "fills"), 1);

	/* And GPU 1, from two processes again. */
	assert_int_equal(run_child("sha", "llama", 1, NULL, line, sizeof(line)),
			 0);
	snprintf(want, sizeof(want), "%s 1 %d 1", hex, TC_kDLCUDA);
	assert_string_equal(line, want);
	assert_int_equal(run_child("sha", "llama", 0, swap, line, sizeof(line)),
			 0);
	snprintf(want, sizeof(want), "%s 0 %d 0", hex, TC_kDLCUDA);
	assert_string_equal(line, want);
	assert_int_equal(gpu_stat(c, 1, "replicas"), 1);
	assert_int_equal(gpu_total(c, "fills"), 2);

	/* In this process too, with DLPack in both forms. */
	a = attach_gpu_ok(c, "llama", 1);
	{
		char h2[65];

		artifact_sha(a, h2);
		assert_string_equal(h2, hex);
	}
	assert_int_equal(tc_artifact_dlpack(a, 2, 1, &dl), 0);
	m = dl;
	assert_int_equal(m->dl_tensor.device.device_type, TC_kDLCUDA);
	assert_int_equal(m->dl_tensor.device.device_id, 1);
	assert_int_equal(m->flags & TC_DLPACK_FLAG_READ_ONLY,
			 TC_DLPACK_FLAG_READ_ONLY);
	assert_ptr_equal(m->dl_tensor.data,
			 (const uint8_t *)tc_artifact_data(a) +
				 tc_artifact_tensors(a)[2].offset);
	assert_int_equal(tc_artifact_dlpack(a, 0, 0, &dl), 0);
	l = dl;
	assert_int_equal(l->dl_tensor.device.device_type, TC_kDLCUDA);
	assert_int_equal(replica_leases(c, "llama", 1), 1);
	tc_artifact_close(a); /* the DLPack tensors still hold it */
	assert_int_equal(replica_leases(c, "llama", 1), 1);
	m->deleter(m);
	l->deleter(l);
	assert_int_equal(replica_leases(c, "llama", 1), 0);

	/* inspect lists both GPU replicas next to the host one. */
	r = gpu_replica(c, "llama", 0, &doc);
	assert_non_null(r);
	assert_string_equal(json_string_value(json_object_get(r, "state")),
			    "ready");
	assert_int_equal(
		json_integer_value(json_object_get(r, "bytes")) % (2 * MiB), 0);
	assert_true(!strncmp(json_string_value(json_object_get(r, "device")),
			     "GPU-", 4));
	assert_int_equal(json_array_size(json_object_get(doc, "replicas")), 3);
	json_decref(doc);
	assert_true(gpu_stat(c, 0, "used_bytes") > 0);
	assert_true(gpu_stat(c, 0, "budget_bytes") >
		    gpu_stat(c, 0, "used_bytes"));

	/* The CLI shows them: inspect per replica, status per GPU. */
	{
		char *out = cli_output("inspect llama");

		assert_non_null(strstr(out, "replicas: host memory"));
		assert_non_null(strstr(out, "GPU 0 GPU-"));
		assert_non_null(strstr(out, "GPU 1 GPU-"));
		free(out);
		out = cli_output("daemon status");
		assert_non_null(strstr(out, "GPU 0 GPU-"));
		assert_non_null(strstr(out, "used of"));
		free(out);
	}
	tc_client_close(c);
	daemon_stop();
}

/* The client maps read-only: a CPU write through the fake's mapping
 * faults, a device copy into it fails and changes nothing. */
static void test_gpu_tier__read_only(void **state)
{
	char line[512];
	tc_client *c;

	daemon_start(fake_env, NULL);
	c = t_connect(D.sock);
	put_blob(c, "ro", 3 * MiB + 17, 1, NULL);
	/* Under ASan or TSan the fault must reach the kernel's default
	 * action. */
	static const char *const segv_env[] = { "ASAN_OPTIONS=handle_segv=0",
						"TSAN_OPTIONS=handle_segv=0",
						NULL };

	assert_int_equal(run_child("write", "ro", 0, segv_env, NULL, 0),
			 128 + SIGSEGV);
	assert_int_equal(run_child("copy", "ro", 1, NULL, line, sizeof(line)),
			 0);
	assert_non_null(strstr(line, "TC_ECUDA"));
	/* Both children are gone: so are their leases. */
	for (int i = 0; i < 200 && replica_leases(c, "ro", 0); i++)
		usleep(10000);
	assert_int_equal(replica_leases(c, "ro", 0), 0);
	tc_client_close(c);
	daemon_stop();
}

/* A per-GPU budget: unleased replicas are evicted LRU first; leased ones
 * never; what cannot fit is refused with a message. */
static void test_gpu_tier__budget_and_eviction(void **state)
{
	tc_client *c;
	tc_artifact *a, *b, *x;
	json_t *doc;
	int rc;

	daemon_start(fake_env, "--set", "gpu_memory=8MiB", NULL);
	c = t_connect(D.sock);
	put_blob(c, "e1", 3 * MiB, 1, NULL); /* 4 MiB on a GPU */
	put_blob(c, "e2", 3 * MiB, 2, NULL);
	put_blob(c, "e3", 3 * MiB, 3, NULL);
	put_blob(c, "big", 9 * MiB, 4, NULL);

	a = attach_gpu_ok(c, "e1", 0);
	tc_artifact_close(a);
	a = attach_gpu_ok(c, "e2", 0);
	tc_artifact_close(a);
	assert_int_equal(gpu_stat(c, 0, "used_bytes"), 8 * MiB);
	assert_int_equal(gpu_stat(c, 0, "budget_bytes"), 8 * MiB);
	/* e1 is the least recently used: it goes. */
	a = attach_gpu_ok(c, "e3", 0);
	assert_int_equal(gpu_stat(c, 0, "evictions"), 1);
	assert_null(gpu_replica(c, "e1", 0, &doc));
	json_decref(doc);
	assert_non_null(gpu_replica(c, "e2", 0, &doc));
	json_decref(doc);
	/* e3 held, e2 held: nothing can go. */
	b = attach_gpu_ok(c, "e2", 0);
	rc = tc_attach_gpu(c, "e1", 0, &x);
	assert_int_equal(rc, TC_ENOSPACE);
	assert_non_null(strstr(tc_client_errmsg(c), "held by clients"));
	/* Another GPU has its own budget. */
	x = attach_gpu_ok(c, "e1", 1);
	tc_artifact_close(x);
	/* Larger than the budget: refused whatever is evictable. */
	assert_int_equal(tc_attach_gpu(c, "big", 1, &x), TC_ENOSPACE);
	assert_non_null(strstr(tc_client_errmsg(c), "budget"));
	/* Let go of e2: e1 fits again on GPU 0, evicting e2. */
	tc_artifact_close(b);
	x = attach_gpu_ok(c, "e1", 0);
	assert_int_equal(gpu_stat(c, 0, "evictions"), 2);
	assert_null(gpu_replica(c, "e2", 0, &doc));
	json_decref(doc);
	tc_artifact_close(x);
	tc_artifact_close(a);

	/* Removing an artifact frees its replicas; one still mapped stays
	 * readable until the client lets go. */
	{
		char h1[65], h2[65];

		host_sha(c, "e3", h1);
		a = attach_gpu_ok(c, "e3", 1);
		assert_int_equal(tc_rm(c, "e3"), 0);
		artifact_sha(a, h2);
		assert_string_equal(h1, h2);
		assert_int_equal(gpu_stat(c, 1, "replicas"), 2);
		tc_artifact_close(a);
		/* e3 on GPU 0 was unleased: gone at rm; on GPU 1 at close. */
		for (int i = 0; i < 100 && gpu_stat(c, 1, "replicas") != 1; i++)
			usleep(10000);
		assert_int_equal(gpu_stat(c, 1, "replicas"), 1);
		assert_int_equal(gpu_stat(c, 0, "replicas"), 1);
	}
	/* Removing an artifact frees its replicas on every GPU; what
	 * stays charged is each GPU's spare (one allocation kept for the
	 * next put of its size), the LRU's first victim. */
	assert_int_equal(tc_rm(c, "e1"), 0);
	assert_int_equal(gpu_stat(c, 0, "replicas"), 0);
	assert_int_equal(gpu_stat(c, 1, "replicas"), 0);
	for (int i = 0; i < 2; i++) {
		assert_true(gpu_stat(c, i, "spare.bytes") > 0);
		assert_int_equal(gpu_stat(c, i, "used_bytes"), 0);
	}
	tc_client_close(c);
	daemon_stop();
}

/* A client killed with SIGKILL gives its GPU leases back. */
static void test_gpu_tier__killed_client_releases(void **state)
{
	char line[64];
	tc_client *c;
	int fd1, fd2;
	pid_t p1, p2;

	daemon_start(fake_env, "--set", "gpu_memory=2MiB", NULL);
	c = t_connect(D.sock);
	put_blob(c, "k1", MiB, 1, NULL);
	put_blob(c, "k2", MiB, 2, NULL);
	p1 = spawn("hold", "k1", 0, NULL, &fd1);
	p2 = spawn("hold", "k1", 0, NULL, &fd2);
	t_read_line(fd1, line, sizeof(line));
	assert_string_equal(line, "ready");
	t_read_line(fd2, line, sizeof(line));
	assert_string_equal(line, "ready");
	assert_int_equal(replica_leases(c, "k1", 0), 2);
	kill(p1, SIGKILL);
	kill(p2, SIGKILL);
	assert_int_equal(t_wait_status(p1), 128 + SIGKILL);
	assert_int_equal(t_wait_status(p2), 128 + SIGKILL);
	close(fd1);
	close(fd2);
	for (int i = 0; i < 200 && replica_leases(c, "k1", 0); i++)
		usleep(10000);
	assert_int_equal(replica_leases(c, "k1", 0), 0);
	/* Now unleased, it makes room for another. */
	tc_artifact_close(attach_gpu_ok(c, "k2", 0));
	assert_int_equal(gpu_stat(c, 0, "evictions"), 1);
	tc_client_close(c);
	daemon_stop();
}

/* cuMemCreate failing: a clean error, and the daemon keeps serving. */
static void test_gpu_tier__alloc_failure(void **state)
{
	static const char *const env[] = { "TC_FAKECUDA_DEVICES=2",
					   "TC_FAKECUDA_FAIL=cuMemCreate:1",
					   NULL };
	tc_client *c;
	tc_artifact *a;
	char h1[65], h2[65];
	int rc;

	daemon_start(env, NULL);
	c = t_connect(D.sock);
	put_blob(c, "f", 2 * MiB + 5, 7, NULL);
	rc = tc_attach_gpu(c, "f", 0, &a);
	assert_int_equal(rc, TC_ECUDA);
	assert_null(a);
	assert_non_null(strstr(tc_client_errmsg(c), "cuMemCreate"));
	assert_int_equal(gpu_total(c, "fill_failures"), 1);
	assert_int_equal(gpu_stat(c, 0, "used_bytes"), 0);
	assert_int_equal(gpu_stat(c, 0, "replicas"), 0);
	/* The next try allocates. */
	a = attach_gpu_ok(c, "f", 0);
	artifact_sha(a, h1);
	host_sha(c, "f", h2);
	assert_string_equal(h1, h2);
	tc_artifact_close(a);
	tc_client_close(c);
	daemon_stop();
}

/* Device lost after n driver calls, for a sweep of n: every request gets
 * an answer (success or an error), the daemon never crashes, host
 * requests keep working, and it exits cleanly. */
static void test_gpu_tier__device_lost(void **state)
{
	static const int ns[] = { 0, 1, 3, 6, 10, 15, 20, 30, 45, 70, 100 };
	int ok_total = 0, err_total = 0;

	for (size_t k = 0; k < sizeof(ns) / sizeof(ns[0]); k++) {
		char env_lost[64];
		const char *env[] = { "TC_FAKECUDA_DEVICES=2", env_lost, NULL };
		char ids[3][TC_ID_BUFLEN];
		tc_client *c;

		snprintf(env_lost, sizeof(env_lost),
			 "TC_FAKECUDA_LOST_AFTER=%d", ns[k]);
		daemon_start(env, NULL);
		c = t_connect(D.sock);
		for (int i = 0; i < 3; i++) {
			char key[16];

			snprintf(key, sizeof(key), "l%d", i);
			put_blob(c, key, MiB + (uint64_t)i, (uint32_t)i,
				 ids[i]);
		}
		for (int i = 0; i < 6; i++) {
			tc_artifact *a;
			int rc = tc_attach_gpu(c, ids[i % 3], i % 2, &a);

			if (rc == 0) {
				ok_total++;
				tc_artifact_close(a);
			} else {
				err_total++;
				/* Lost while the driver lists devices, a
				 * GPU reads as one without VMM. */
				if (rc != TC_ECUDA && rc != TC_ENODEV &&
				    rc != TC_ENOTSUP)
					fail_msg("n=%d: %s: %s", ns[k],
						 tc_err_name(rc),
						 tc_client_errmsg(c));
			}
		}
		{
			char h[65];

			host_sha(c, "l0", h);
		}
		assert_int_equal(tc_rm(c, "l1"), 0);
		json_decref(get_json(c, NULL));
		tc_client_close(c);
		daemon_stop();
	}
	/* The sweep covered both sides of the loss. */
	assert_true(ok_total > 0);
	assert_true(err_total > 0);
}

/* No driver in the daemon: TC_ENODEV with the reason, sticky, and
 * nothing else breaks.  No driver in the client: TC_ENODEV too. */
static void test_gpu_tier__no_driver(void **state)
{
	static const char *const env[] = { "TCAST_CUDA_LIB=/nonexistent/lib",
					   NULL };
	static const char *const cenv[] = { "TCAST_CUDA_LIB=/nonexistent/lib",
					    NULL };
	char line[512];
	tc_client *c;
	tc_artifact *a;
	json_t *j;

	daemon_start(env, NULL);
	c = t_connect(D.sock);
	put_blob(c, "n", MiB, 1, NULL);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(tc_attach_gpu(c, "n", 0, &a), TC_ENODEV);
		assert_non_null(strstr(tc_client_errmsg(c), "cannot use GPUs"));
		assert_non_null(strstr(tc_client_errmsg(c), "/nonexistent"));
	}
	j = get_json(c, NULL);
	assert_string_equal(json_string_value(json_object_get(
				    json_object_get(j, "gpu"), "state")),
			    "unavailable");
	json_decref(j);
	assert_int_equal(tc_attach(c, "n", &a), 0);
	tc_artifact_close(a);
	assert_int_equal(
		run_child("nodriver", "n", 0, cenv, line, sizeof(line)), 0);
	assert_non_null(strstr(line, "TC_ENODEV"));
	tc_client_close(c);
	daemon_stop();
}

/* 1,000 attach/detach cycles, half of them refilling a replica after an
 * eviction: no fd, mapping or device memory grows anywhere. */
static void test_gpu_tier__cycles_do_not_leak(void **state)
{
	long long free0, free1;
	int dfd0, dfd1, fd0, fd1, maps0, maps1;
	tc_client *c;
	tc_artifact *a;

	/* No host spare: its memfd would show up as a daemon fd. */
	daemon_start(fake_env, "--set", "gpu_memory=4MiB", "--set",
		     "host_spare=0", NULL);
	c = t_connect(D.sock);
	put_blob(c, "c0", MiB + 1, 1, NULL);
	put_blob(c, "c1", MiB + 2, 2, NULL);
	put_blob(c, "c2", 3 * MiB, 3, NULL);
	/* Warm up: both GPUs have a replica and a context. */
	tc_artifact_close(attach_gpu_ok(c, "c1", 0));
	tc_artifact_close(attach_gpu_ok(c, "c0", 0));
	tc_artifact_close(attach_gpu_ok(c, "c2", 1));
	dfd0 = t_daemon_fds(D.pid);
	fd0 = t_count_fds();
	maps0 = count_maps();
	free0 = gpu_stat(c, 0, "driver_free_bytes");
	assert_true(free0 > 0);
	for (int i = 0; i < 1000; i++) {
		/* GPU 0: c0 and c1 share a budget of two replicas, stay.
		 * GPU 1: c2 and c0 fit one at a time, so each attach evicts
		 * the other and fills again. */
		const char *ref = i % 2 ? (i % 4 == 1 ? "c2" : "c0") :
					  (i % 4 ? "c1" : "c0");
		int dev = i % 2;

		a = attach_gpu_ok(c, ref, dev);
		if (i % 100 == 0) {
			char h1[65], h2[65];

			artifact_sha(a, h1);
			host_sha(c, ref, h2);
			assert_string_equal(h1, h2);
		}
		tc_artifact_close(a);
	}
	tc_artifact_close(attach_gpu_ok(c, "c0", 0));
	tc_artifact_close(attach_gpu_ok(c, "c2", 1));
	dfd1 = t_daemon_fds(D.pid);
	fd1 = t_count_fds();
	maps1 = count_maps();
	free1 = gpu_stat(c, 0, "driver_free_bytes");
	assert_int_equal(dfd1, dfd0);
	assert_int_equal(fd1, fd0);
	assert_int_equal(maps1, maps0);
	assert_int_equal(free1, free0);
	assert_true(gpu_stat(c, 1, "evictions") >= 499);
	assert_true(gpu_total(c, "fills") >= 500);
	/* Everything released: the daemon holds no lease. */
	assert_int_equal(replica_leases(c, "c0", 0), 0);
	tc_client_close(c);
	daemon_stop();
}

/* Malformed ATTACH_GPU / RELEASE_GPU frames through the raw protocol. */
static void test_gpu_tier__bad_requests(void **state)
{
	struct tc__buf b = TC_BUF_INIT;
	struct tc__frame_hdr h;
	uint8_t *body;
	int fd, fds[4], nfds, status;
	tc_client *c;

	daemon_start(fake_env, NULL);
	c = t_connect(D.sock);
	put_blob(c, "b", MiB, 1, NULL);
	fd = t_raw_connect(D.sock);
	assert_true(fd >= 0);
	assert_int_equal(t_raw_hello(fd), 0);
	/* Unknown UUID, bad UUID text, bad ordinal, unknown flags, no
	 * device at all: error replies, the connection goes on. */
	{
		static const struct {
			uint32_t dev, flags;
			const char *uuid;
			int want;
		} cases[] = {
			{ 0xffffffffu, 0,
			  "GPU-00000000-0000-0000-0000-000000000000",
			  TC_EDEVICE },
			{ 0xffffffffu, 0, "not-a-uuid", TC_EINVAL },
			{ 7, 0, "", TC_EDEVICE },
			{ 0, 4, "", TC_EINVAL },
			{ 0xffffffffu, 0, "", TC_EINVAL },
		};

		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
			tc__buf_put_str(&b, "b");
			tc__buf_put_u32(&b, cases[i].dev);
			tc__buf_put_u32(&b, cases[i].flags);
			tc__buf_put_str(&b, cases[i].uuid);
			t_raw_send(fd, TC_MSG_ATTACH_GPU, 9, b.data, b.len,
				   NULL, 0);
			b.len = 0;
			assert_int_equal(t_raw_recv(fd, &h, &body, fds, &nfds),
					 0);
			memcpy(&status, body, 4);
			free(body);
			assert_int_equal(nfds, 0);
			assert_int_equal(status, cases[i].want);
		}
	}
	/* By the daemon's ordinal, no UUID: works, one fd. */
	tc__buf_put_str(&b, "b");
	tc__buf_put_u32(&b, 1);
	tc__buf_put_u32(&b, 0);
	tc__buf_put_str(&b, "");
	t_raw_send(fd, TC_MSG_ATTACH_GPU, 10, b.data, b.len, NULL, 0);
	b.len = 0;
	assert_int_equal(t_raw_recv(fd, &h, &body, fds, &nfds), 0);
	memcpy(&status, body, 4);
	free(body);
	assert_int_equal(status, 0);
	assert_int_equal(nfds, 1);
	close(fds[0]);
	assert_int_equal(replica_leases(c, "b", 1), 1);
	/* A release of something not held is ignored; a truncated one is a
	 * protocol error that ends the connection, and its lease. */
	tc__buf_put_str(
		&b,
		"tc2:0000000000000000000000000000000000000000000000000000000000000000");
	tc__buf_put_str(&b, "GPU-00000000-0000-0000-0000-000000000000");
	t_raw_send(fd, TC_MSG_RELEASE_GPU, 11, b.data, b.len, NULL, 0);
	b.len = 0;
	assert_int_equal(replica_leases(c, "b", 1), 1);
	tc__buf_put_str(
		&b,
		"tc2:0000000000000000000000000000000000000000000000000000000000000000");
	t_raw_send(fd, TC_MSG_RELEASE_GPU, 12, b.data, b.len, NULL, 0);
	b.len = 0;
	while (t_raw_recv(fd, &h, &body, fds, &nfds) == 0)
		free(body);
	for (int i = 0; i < 200 && replica_leases(c, "b", 1); i++)
		usleep(10000);
	assert_int_equal(replica_leases(c, "b", 1), 0);
	close(fd);
	tc__buf_release(&b);
	tc_client_close(c);
	daemon_stop();
}

/* An artifact evicted from host memory takes its GPU replicas along; a
 * GPU lease keeps an artifact in host memory. */
static void test_gpu_tier__host_eviction_frees_replicas(void **state)
{
	tc_client *c;
	tc_artifact *a, *x;

	daemon_start(fake_env, "--host-memory", "12MiB", NULL);
	c = t_connect(D.sock);
	put_blob(c, "h1", 5 * MiB, 1, NULL);
	a = attach_gpu_ok(c, "h1", 0);
	put_blob(c, "h2", 5 * MiB, 2, NULL);
	/* h1 is older but GPU-leased: h2 goes. */
	put_blob(c, "h3", 5 * MiB, 3, NULL);
	assert_int_equal(tc_attach(c, "h2", &x), TC_ENOTFOUND);
	assert_int_equal(gpu_stat(c, 0, "replicas"), 1);
	tc_artifact_close(a);
	/* Now h1 is the least recently used and nobody holds it. */
	put_blob(c, "h4", 5 * MiB, 4, NULL);
	assert_int_equal(tc_attach(c, "h1", &x), TC_ENOTFOUND);
	assert_int_equal(gpu_stat(c, 0, "replicas"), 0);
	/* Its allocation is the GPU's spare now, charged, nothing more. */
	assert_int_equal(gpu_stat(c, 0, "used_bytes"), 0);
	assert_true(gpu_stat(c, 0, "spare.bytes") > 0);
	tc_client_close(c);
	daemon_stop();
}

static void raw_attach_gpu(int fd, uint32_t req, const char *ref, uint32_t dev)
{
	struct tc__buf b = TC_BUF_INIT;

	tc__buf_put_str(&b, ref);
	tc__buf_put_u32(&b, dev);
	tc__buf_put_u32(&b, 0);
	tc__buf_put_str(&b, "");
	assert_int_equal(t_raw_send(fd, TC_MSG_ATTACH_GPU, req, b.data, b.len,
				    NULL, 0),
			 0);
	tc__buf_release(&b);
}

/* Requests that arrive while the driver loads and the replica fills all
 * get the one replica; a client that hangs up while waiting leaves no
 * lease behind. */
static void test_gpu_tier__concurrent_and_abandoned(void **state)
{
	struct tc__frame_hdr h;
	int fds[3], rfd[4], nfds, status;
	uint8_t *body;
	tc_client *c;

	daemon_start(fake_env, NULL);
	c = t_connect(D.sock);
	put_blob(c, "w", 64 * MiB, 9, NULL);
	for (int i = 0; i < 3; i++) {
		fds[i] = t_raw_connect(D.sock);
		assert_true(fds[i] >= 0);
		assert_int_equal(t_raw_hello(fds[i]), 0);
	}
	for (int i = 0; i < 3; i++)
		raw_attach_gpu(fds[i], 20 + (uint32_t)i, "w", 1);
	close(fds[2]); /* gone before the answer */
	for (int i = 0; i < 2; i++) {
		assert_int_equal(t_raw_recv(fds[i], &h, &body, rfd, &nfds), 0);
		memcpy(&status, body, 4);
		free(body);
		assert_int_equal(status, 0);
		assert_int_equal(h.req_id, 20 + (uint32_t)i);
		assert_int_equal(nfds, 1);
		close(rfd[0]);
	}
	assert_int_equal(gpu_total(c, "fills"), 1);
	for (int i = 0; i < 200 && replica_leases(c, "w", 1) != 2; i++)
		usleep(10000);
	assert_int_equal(replica_leases(c, "w", 1), 2);
	/* The connection goes on after the reply. */
	raw_attach_gpu(fds[0], 30, "w", 1);
	assert_int_equal(t_raw_recv(fds[0], &h, &body, rfd, &nfds), 0);
	free(body);
	assert_int_equal(nfds, 1);
	close(rfd[0]);
	assert_int_equal(replica_leases(c, "w", 1), 3);
	close(fds[0]);
	close(fds[1]);
	for (int i = 0; i < 200 && replica_leases(c, "w", 1); i++)
		usleep(10000);
	assert_int_equal(replica_leases(c, "w", 1), 0);
	assert_int_equal(gpu_total(c, "fills"), 1);
	tc_client_close(c);
	daemon_stop();
}

/* A large replica: the first fill goes through staging, then the daemon
 * pins the host copy in the background; the next GPU's fill copies from
 * the pinned pages.  Removing it unpins it (on a worker); removing one
 * whose pinning is still under way is safe too. */
static void test_gpu_tier__large_replica_pinned_after_first_fill(void **state)
{
	uint64_t n = 320 * MiB + 4097;
	char hex[65], h2[65];
	tc_artifact *a;
	tc_client *c;
	json_t *doc, *r;

	/* on_use: pinned after the first fill, not when put (see
	 * test_gpu_tier__eager_pin_and_reuse for the default). */
	daemon_start(fake_env, "--host-memory", "900MiB", "--set",
		     "gpu_pin_host=on_use", NULL);
	c = t_connect(D.sock);
	/* Other GPU copies first (an import straight to a GPU, a binding
	 * and its swap): pinning waits for them, and must not wait for
	 * ever once they are done. */
	{
		struct tc_opts o = { TC_OPT_DEVICE, NULL, NULL, 0,
				     NULL,	    NULL, 0,	0 };
		tc_artifact *bd;

		if (tc_import(c, t_data("tiny-llama"), &o, NULL) < 0)
			fail_msg("import: %s", tc_client_errmsg(c));
		put_blob(c, "s1", MiB, 1, NULL);
		put_blob(c, "s2", MiB, 2, NULL);
		assert_int_equal(tc_bind(c, "s1", 1, &bd), 0);
		assert_int_equal(tc_binding_swap(bd, "s2"), 0);
		tc_artifact_close(bd);
	}
	put_blob(c, "big", n, 5, NULL);
	gpu_copy_matches_host(c, "big", 0);
	host_sha(c, "big", hex);
	assert_int_equal(gpu_total(c, "fill_pinned_bytes"), 0);
	for (int i = 0; i < 500 && !gpu_total(c, "pinned_host_bytes"); i++)
		usleep(10000);
	assert_true(gpu_total(c, "pinned_host_bytes") >= (long long)n);

	a = attach_gpu_ok(c, "big", 1);
	artifact_sha(a, h2);
	assert_string_equal(h2, hex);
	tc_artifact_close(a);
	assert_int_equal(gpu_total(c, "fill_pinned_bytes"), (long long)n);
	r = gpu_replica(c, "big", 1, &doc);
	assert_non_null(r);
	assert_true(json_is_true(json_object_get(r, "pinned")));
	/* The fill's time, and the allocation's part of it. */
	assert_true(json_real_value(json_object_get(r, "alloc_seconds")) <=
		    json_real_value(json_object_get(r, "fill_seconds")));
	assert_true(json_real_value(json_object_get(r, "fill_seconds")) > 0);
	json_decref(doc);

	assert_int_equal(tc_rm(c, "big"), 0);
	assert_int_equal(gpu_total(c, "pinned_host_bytes"), 0);
	/* Removed while its pinning may still run. */
	put_blob(c, "big2", n, 6, NULL);
	a = attach_gpu_ok(c, "big2", 0);
	tc_artifact_close(a);
	assert_int_equal(tc_rm(c, "big2"), 0);
	for (int i = 0; i < 500 && gpu_total(c, "pinned_host_bytes"); i++)
		usleep(10000);
	assert_int_equal(gpu_total(c, "pinned_host_bytes"), 0);
	/* Still serving. */
	put_blob(c, "small", MiB, 7, NULL);
	host_sha(c, "small", hex);
	a = attach_gpu_ok(c, "small", 1);
	artifact_sha(a, h2);
	assert_string_equal(h2, hex);
	tc_artifact_close(a);
	tc_client_close(c);
	daemon_stop();
}

static bool replica_flag(tc_client *c, const char *ref, int dev,
			 const char *field)
{
	json_t *doc, *r = gpu_replica(c, ref, dev, &doc);
	bool v = r && json_is_true(json_object_get(r, field));

	json_decref(doc);
	return v;
}

static void wait_pinned(tc_client *c, long long bytes)
{
	for (int i = 0; i < 500 && gpu_total(c, "pinned_host_bytes") < bytes;
	     i++)
		usleep(10000);
	assert_true(gpu_total(c, "pinned_host_bytes") >= bytes);
}

/* The default gpu_pin_host=eager: once a GPU is in use, a large host
 * artifact is pinned when it is put, so even its first replica fills from
 * pinned memory.  An evicted replica of the same size is refilled in place
 * (no free + allocate: the driver scrubs freed memory while the next copy
 * runs), unless its lease ended with a connection rather than a release:
 * that process may live on and still map it. */
static void test_gpu_tier__eager_pin_and_reuse(void **state)
{
	uint64_t n = 320 * MiB + 4097; /* 322 MiB on a GPU */
	char line[64];
	tc_client *c;
	int fd;
	pid_t p;

	/* The fake GPU has little more than the budget: a fill that
	 * allocated beside a reused allocation would run out of memory. */
	static const char *const env[] = { "TC_FAKECUDA_DEVICES=2",
					   "TC_FAKECUDA_MEM_BYTES=700m", NULL };

	daemon_start(env, "--host-memory", "1400MiB", "--set",
		     "gpu_memory=400MiB", NULL);
	c = t_connect(D.sock);
	/* Before any GPU request nothing is pinned: no context is made for
	 * it. */
	put_blob(c, "early", 70 * MiB, 1, NULL);
	usleep(100000);
	assert_int_equal(gpu_total(c, "pinned_host_bytes"), 0);
	put_blob(c, "s", MiB, 2, NULL);
	tc_artifact_close(attach_gpu_ok(c, "s", 0));
	/* Small ones are pinned by their own fill; this one was not asked
	 * for a GPU yet. */
	long long small = gpu_total(c, "pinned_host_bytes");

	put_blob(c, "big", n, 3, NULL);
	wait_pinned(c, small + (long long)n);
	assert_int_equal(gpu_total(c, "fill_pinned_bytes"), MiB);
	gpu_copy_matches_host(c, "big", 0);
	assert_int_equal(gpu_total(c, "fill_pinned_bytes"), MiB + (long long)n);
	assert_true(replica_flag(c, "big", 0, "pinned"));
	assert_false(replica_flag(c, "big", 0, "reused_allocation"));

	/* Same size, other bytes: it evicts "s" (released) and "big"
	 * (allocation reused). */
	put_blob(c, "big2", n, 4, NULL);
	wait_pinned(c, small + 2 * (long long)n);
	gpu_copy_matches_host(c, "big2", 0);
	assert_true(replica_flag(c, "big2", 0, "reused_allocation"));
	assert_int_equal(gpu_stat(c, 0, "evictions"), 2);
	assert_int_equal(gpu_stat(c, 0, "reused_allocations"), 1);
	assert_int_equal(gpu_stat(c, 0, "used_bytes"), 322 * MiB);
	/* And back: big's bytes again, in big2's allocation. */
	gpu_copy_matches_host(c, "big", 0);
	assert_int_equal(gpu_stat(c, 0, "reused_allocations"), 2);

	/* A client killed while holding big: its lease ends with its
	 * connection, so big's memory is released at eviction, not reused. */
	p = spawn("hold", "big", 0, NULL, &fd);
	t_read_line(fd, line, sizeof(line));
	assert_string_equal(line, "ready");
	kill(p, SIGKILL);
	assert_int_equal(t_wait_status(p), 128 + SIGKILL);
	close(fd);
	for (int i = 0; i < 200 && replica_leases(c, "big", 0); i++)
		usleep(10000);
	assert_int_equal(replica_leases(c, "big", 0), 0);
	gpu_copy_matches_host(c, "big2", 0);
	assert_false(replica_flag(c, "big2", 0, "reused_allocation"));
	assert_int_equal(gpu_stat(c, 0, "reused_allocations"), 2);
	assert_int_equal(gpu_stat(c, 0, "evictions"), 4);

	/* Removing pinned artifacts unpins them. */
	assert_int_equal(tc_rm(c, "big"), 0);
	assert_int_equal(tc_rm(c, "big2"), 0);
	assert_int_equal(gpu_total(c, "pinned_host_bytes"), small);
	tc_client_close(c);
	daemon_stop();
}

/* gpu_memory is checked strictly at start-up. */
static void test_gpu_tier__config(void **state)
{
	static const char *const bad[] = { "gpu_memory=bogus", "gpu_memory=0",
					   "gpu_memory=0%", "gpu_memory=101%",
					   "gpu_memory=12x%" };
	char cmd[1024];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		FILE *p;
		char out[1024] = "";
		size_t n;
		int st;

		snprintf(cmd, sizeof(cmd),
			 "%s/tcast --socket /nonexistent/x.sock daemon run "
			 "--set %s 2>&1",
			 TC_TEST_BIN, bad[i]);
		p = popen(cmd, "r");
		assert_non_null(p);
		n = fread(out, 1, sizeof(out) - 1, p);
		out[n] = '\0';
		st = pclose(p);
		assert_true(WIFEXITED(st) && WEXITSTATUS(st) != 0);
		if (!strstr(out, "gpu_memory"))
			fail_msg("'%s': %s", bad[i], out);
	}
	/* A percentage works, and a size larger than the GPU is cut. */
	daemon_start(fake_env, "--set", "gpu_memory=50%", NULL);
	{
		tc_client *c = t_connect(D.sock);

		put_blob(c, "p", MiB, 1, NULL);
		tc_artifact_close(attach_gpu_ok(c, "p", 0));
		assert_int_equal(gpu_stat(c, 0, "budget_bytes"),
				 gpu_stat(c, 0, "total_bytes") / 2);
		tc_client_close(c);
	}
	daemon_stop();
	daemon_start(fake_env, "--set", "gpu_memory=1TiB", NULL);
	{
		tc_client *c = t_connect(D.sock);

		put_blob(c, "p", MiB, 1, NULL);
		tc_artifact_close(attach_gpu_ok(c, "p", 0));
		assert_int_equal(gpu_stat(c, 0, "budget_bytes"),
				 gpu_stat(c, 0, "total_bytes"));
		tc_client_close(c);
	}
	daemon_stop();
}

/* IMPORT straight to a GPU: the loader fills a replica, no host copy is
 * made, bytes equal a host import's, the same content imported for host
 * memory joins the same artifact, and evicting its only replica frees
 * a GPU-only artifact. */
static void test_gpu_tier__import_straight_to_gpu(void **state)
{
	char h1[65], h2[65], *s;
	struct tc_opts o = {
		TC_OPT_KEY | TC_OPT_DEVICE, "g:llama", NULL, 0, NULL, NULL, 1, 0
	};
	struct tc_result r, r2, r3;
	tc_artifact *a, *x;
	tc_client *c;
	json_t *j;

	/* Room for one 2 MiB replica per GPU: each import evicts. */
	daemon_start(fake_env, "--set", "gpu_memory=2MiB", NULL);
	c = t_connect(D.sock);
	assert_int_equal(tc_import(c, t_data("tiny-llama"), &o, &r), 0);
	assert_int_equal(tc_inspect_json(c, "g:llama", &s), 0);
	j = json_loads(s, 0, NULL);
	tc_free(s);
	assert_int_equal(json_integer_value(json_object_get(j, "mem_bytes")),
			 0);
	assert_int_equal(json_array_size(json_object_get(j, "replicas")), 1);
	assert_string_equal(
		json_string_value(json_object_get(
			json_array_get(json_object_get(j, "replicas"), 0),
			"tier")),
		"gpu");
	json_decref(j);
	a = attach_gpu_ok(c, "g:llama", 1);
	artifact_sha(a, h1);
	tc_artifact_close(a);
	/* Another GPU has no host replica to copy from, but GPU 1's: a
	 * peer copy (the only source, so no probe). */
	a = attach_gpu_ok(c, "g:llama", 0);
	artifact_sha(a, h2);
	assert_string_equal(h1, h2);
	tc_artifact_close(a);
	{
		json_t *doc, *rj = gpu_replica(c, "g:llama", 0, &doc);

		assert_non_null(rj);
		assert_string_equal(
			json_string_value(json_object_get(rj, "fill_source")),
			"gpu 1");
		json_decref(doc);
		rj = gpu_replica(c, "g:llama", 1, &doc);
		assert_string_equal(
			json_string_value(json_object_get(rj, "fill_source")),
			"import");
		json_decref(doc);
	}
	/* No host replica: a host attach makes it from a GPU replica (GPU
	 * -> host through the transfer engine, the digests checked): the
	 * same bytes. */
	assert_int_equal(tc_attach(c, "g:llama", &x), 0);
	artifact_sha(x, h2);
	assert_string_equal(h1, h2);
	tc_artifact_close(x);
	/* The same files imported for host memory: the same id (the digest
	 * does not depend on the path the bytes took), one artifact, which
	 * now has its host copy too. */
	assert_int_equal(tc_import(c, t_data("tiny-llama"), NULL, &r2), 0);
	assert_string_equal(r.id, r2.id);
	assert_int_equal(r2.deduplicated, 1);
	host_sha(c, r.id, h2);
	assert_string_equal(h1, h2);
	assert_int_equal(tc_attach(c, r.id, &x), 0);
	tc_artifact_close(x);
	/* A GPU-only artifact whose only replica is evicted is gone. */
	{
		struct tc_opts o2 = { TC_OPT_DEVICE, NULL, NULL, 0,
				      NULL,	     NULL, 1,	 0 };

		assert_int_equal(tc_import(c, t_data("dtypes.safetensors"), &o2,
					   &r3),
				 0);
		assert_int_equal(tc_import(c,
					   t_data("many-tensors.safetensors"),
					   &o2, &r2),
				 0);
		assert_int_equal(tc_inspect_json(c, r3.id, &s), TC_ENOTFOUND);
		assert_int_equal(tc_inspect_json(c, r.id, &s), 0); /* has host
								    */
		tc_free(s);
	}
	/* A failed load returns its GPU charge and serves on. */
	setenv("TC_FAKECUDA_FAIL", "cuMemcpyHtoDAsync_v2:1", 1);
	daemon_start(fake_env, NULL);
	unsetenv("TC_FAKECUDA_FAIL");
	tc_client_close(c);
	c = t_connect(D.sock);
	assert_int_equal(tc_import(c, t_data("tiny-llama"), &o, &r), TC_ECUDA);
	assert_non_null(strstr(tc_client_errmsg(c), "CUDA_ERROR"));
	assert_int_equal(gpu_stat(c, 1, "used_bytes"), 0);
	assert_int_equal(tc_import(c, t_data("tiny-llama"), &o, &r), 0);
	tc_client_close(c);
	daemon_stop();
}

/* A field of the sibling-source figures in STATUS (gpu.peer). */
static long long peer_stat(tc_client *c, const char *field)
{
	json_t *j = get_json(c, NULL);
	long long v = json_integer_value(json_object_get(
		json_object_get(json_object_get(j, "gpu"), "peer"), field));

	json_decref(j);
	return v;
}

/* The measured pair src -> dst in STATUS: its link and choice into the
 * buffers, its fills returned (-1: not listed). */
static long long peer_pair(tc_client *c, int src, int dst, char *link,
			   char *choice)
{
	json_t *j = get_json(c, NULL), *p;
	json_t *pairs = json_object_get(
		json_object_get(json_object_get(j, "gpu"), "peer"), "pairs");
	long long v = -1;
	size_t i;

	json_array_foreach(pairs, i, p)
	{
		if (json_integer_value(json_object_get(p, "src")) != src ||
		    json_integer_value(json_object_get(p, "dst")) != dst)
			continue;
		strcpy(link, json_string_value(json_object_get(p, "link")));
		strcpy(choice, json_string_value(json_object_get(p, "choice")));
		v = json_integer_value(json_object_get(p, "fills"));
	}
	json_decref(j);
	return v;
}

static const char *fill_source(tc_client *c, const char *ref, int dev,
			       char *buf)
{
	json_t *doc, *r = gpu_replica(c, ref, dev, &doc);

	assert_non_null(r);
	strcpy(buf, json_string_value(json_object_get(r, "fill_source")));
	json_decref(doc);
	return buf;
}

/* Sibling-GPU sources: a replica on GPU 1 of an artifact ready on GPU 0
 * is filled by a peer copy when that measured faster than the host
 * replica, and from the host replica otherwise.  The fake driver is
 * throttled (TC_FAKECUDA_GBPS) to make one or the other faster; the first
 * fill of a pair measures both (a probe), later fills use the rates. */
static void test_gpu_tier__sibling_gpu_source(void **state)
{
	static const char *const slow_host[] = {
		"TC_FAKECUDA_DEVICES=2", "TC_FAKECUDA_GBPS=htod=0.4,peer=8",
		NULL
	};
	static const char *const slow_peer[] = {
		"TC_FAKECUDA_DEVICES=2", "TC_FAKECUDA_GBPS=htod=8,peer=0.02",
		NULL
	};
	static const char *const no_link[] = { "TC_FAKECUDA_DEVICES=2",
					       "TC_FAKECUDA_NO_PEER=1", NULL };
	char id[TC_ID_BUFLEN], id2[TC_ID_BUFLEN], buf[32], link[32], ch[32];
	tc_artifact *a, *b;
	tc_client *c;

	daemon_start(slow_host, NULL);
	c = t_connect(D.sock);
	put_blob(c, "sib:a", 4 * MiB, 1, id);
	a = attach_gpu_ok(c, id, 0);
	assert_string_equal(fill_source(c, id, 0, buf), "host");
	/* GPU 1 probes both and takes the sibling, and its bytes are the
	 * artifact's; the attach says where they came from. */
	gpu_copy_matches_host(c, id, 1);
	assert_string_equal(fill_source(c, id, 1, buf), "gpu 0");
	{
		double g = 0;
		tc_artifact *x = attach_gpu_ok(c, id, 1);

		assert_int_equal(tc_artifact_fill_source(x, &g), 0);
		assert_true(g > 0);
		tc_artifact_close(x);
		assert_int_equal(tc_artifact_fill_source(a, NULL),
				 TC_FILL_HOST);
	}
	assert_int_equal(peer_stat(c, "probes"), 1);
	assert_int_equal(peer_stat(c, "fills"), 1);
	assert_true(peer_pair(c, 0, 1, link, ch) >= 1);
	assert_string_equal(link, "direct");
	assert_string_equal(ch, "peer");
	{
		char *out = cli_output("daemon status");

		assert_non_null(strstr(out, "GPU 0 -> GPU 1 (direct link)"));
		assert_non_null(strstr(out, "next fill peer"));
		free(out);
	}
	/* Known rates: the next artifact goes straight to the sibling. */
	put_blob(c, "sib:b", 4 * MiB, 2, id2);
	b = attach_gpu_ok(c, id2, 0);
	gpu_copy_matches_host(c, id2, 1);
	assert_string_equal(fill_source(c, id2, 1, buf), "gpu 0");
	assert_int_equal(peer_stat(c, "probes"), 1);
	assert_int_equal(peer_stat(c, "fills"), 2);
	/* The source replica was leased by the fill only: none left. */
	assert_int_equal(replica_leases(c, id2, 0), 1);
	tc_artifact_close(a);
	tc_artifact_close(b);
	/* Small artifacts are not worth a probe: the host replica. */
	put_blob(c, "sib:small", 64 << 10, 3, id);
	a = attach_gpu_ok(c, id, 0);
	gpu_copy_matches_host(c, id, 1);
	assert_string_equal(fill_source(c, id, 1, buf), "host");
	tc_artifact_close(a);
	tc_client_close(c);

	/* Peer copies slower than the host replica: the host serves. */
	daemon_start(slow_peer, NULL);
	c = t_connect(D.sock);
	put_blob(c, "sib:a", 4 * MiB, 1, id);
	a = attach_gpu_ok(c, id, 0);
	gpu_copy_matches_host(c, id, 1);
	assert_string_equal(fill_source(c, id, 1, buf), "host");
	assert_int_equal(peer_stat(c, "probes"), 1);
	assert_int_equal(peer_stat(c, "fills"), 0);
	assert_int_equal(peer_pair(c, 0, 1, link, ch), 1);
	assert_string_equal(ch, "host");
	tc_artifact_close(a);
	tc_client_close(c);

	/* No direct link: still measured (the driver stages the copy). */
	daemon_start(no_link, NULL);
	c = t_connect(D.sock);
	put_blob(c, "sib:a", 4 * MiB, 1, id);
	a = attach_gpu_ok(c, id, 1);
	gpu_copy_matches_host(c, id, 0);
	assert_true(peer_pair(c, 1, 0, link, ch) >= 0);
	assert_string_equal(link, "staged");
	tc_artifact_close(a);
	tc_client_close(c);
	daemon_stop();
}

/* The probe is fair: whichever source copies first into the new replica
 * pays the first write into fresh memory (TC_FAKECUDA_GBPS fresh=: the
 * fake's first touch of a page, 80x slower here).  Host copies at 4 GB/s
 * beat peer copies at 0.5 (8x: under ASan the host path's own work must
 * not close the gap), so the host replica must serve; a probe that
 * timed one round, host first, saw the host at the fresh rate and chose
 * the sibling. */
static void test_gpu_tier__probe_is_fair(void **state)
{
	static const char *const env[] = {
		"TC_FAKECUDA_DEVICES=2",
		"TC_FAKECUDA_GBPS=htod=4,peer=0.5,fresh=0.05", NULL
	};
	char id[TC_ID_BUFLEN], buf[32], link[32], ch[32];
	tc_artifact *a;
	tc_client *c;

	daemon_start(env, NULL);
	c = t_connect(D.sock);
	put_blob(c, "fair:a", 4 * MiB, 1, id);
	a = attach_gpu_ok(c, id, 0);
	gpu_copy_matches_host(c, id, 1);
	assert_int_equal(peer_stat(c, "probes"), 1);
	assert_string_equal(fill_source(c, id, 1, buf), "host");
	assert_int_equal(peer_stat(c, "fills"), 0);
	assert_int_equal(peer_pair(c, 0, 1, link, ch), 1);
	assert_string_equal(ch, "host");
	tc_artifact_close(a);
	tc_client_close(c);
	daemon_stop();
}

/* A binding on GPU 1 of an artifact whose replica is ready on GPU 0 (and
 * not on GPU 1) is filled as a replica would be: the first pair probes
 * both sources, the measured faster serves (here the sibling), and later
 * fills and swaps use the rates; gpu.peer counts them as bind_fills. */
static void test_gpu_tier__bind_from_sibling(void **state)
{
	static const char *const slow_host[] = {
		"TC_FAKECUDA_DEVICES=2", "TC_FAKECUDA_GBPS=htod=0.4,peer=8",
		NULL
	};
	char a[TC_ID_BUFLEN], b[TC_ID_BUFLEN], h1[65], h2[65];
	tc_artifact *ra, *rb, *bd;
	tc_client *c;

	daemon_start(slow_host, NULL);
	c = t_connect(D.sock);
	put_blob(c, "bsib:a", 4 * MiB, 1, a);
	put_blob(c, "bsib:b", 4 * MiB, 2, b);
	ra = attach_gpu_ok(c, a, 0);
	rb = attach_gpu_ok(c, b, 0);
	assert_int_equal(tc_bind(c, "bsib:a", 1, &bd), 0);
	artifact_sha(bd, h1);
	host_sha(c, a, h2);
	assert_string_equal(h1, h2);
	assert_int_equal(peer_stat(c, "probes"), 1);
	assert_int_equal(peer_stat(c, "bind_fills"), 1);
	assert_int_equal(peer_stat(c, "bind_fill_bytes"), 4 * MiB);
	assert_int_equal(peer_stat(c, "fills"), 0);
	/* Known rates: the swap copies from GPU 0 without a probe. */
	assert_int_equal(tc_binding_swap(bd, "bsib:b"), 0);
	artifact_sha(bd, h1);
	host_sha(c, b, h2);
	assert_string_equal(h1, h2);
	assert_int_equal(peer_stat(c, "probes"), 1);
	assert_int_equal(peer_stat(c, "bind_fills"), 2);
	/* The sources were leased by the fills only. */
	assert_int_equal(replica_leases(c, a, 0), 1);
	assert_int_equal(replica_leases(c, b, 0), 1);
	tc_artifact_close(bd);
	tc_artifact_close(ra);
	tc_artifact_close(rb);
	/* An artifact held on GPU 0 only (imported straight there): a
	 * binding on GPU 1 was refused for want of a host copy; the sibling
	 * is its only source now. */
	{
		struct tc_opts o = { TC_OPT_KEY | TC_OPT_DEVICE,
				     "bsib:g",
				     NULL,
				     0,
				     NULL,
				     NULL,
				     0,
				     0 };
		struct tc_result r;
		tc_artifact *g;

		assert_int_equal(tc_import(c, t_data("tiny-llama"), &o, &r), 0);
		g = attach_gpu_ok(c, "bsib:g", 0);
		artifact_sha(g, h2);
		assert_int_equal(tc_bind(c, "bsib:g", 1, &bd), 0);
		artifact_sha(bd, h1);
		assert_string_equal(h1, h2);
		assert_int_equal(peer_stat(c, "bind_fills"), 3);
		tc_artifact_close(bd);
		tc_artifact_close(g);
	}
	tc_client_close(c);
	daemon_stop();
}

/* Put a blob as a kept view would be put: with the metadata naming its
 * source and its parts (client/view_api.c).  Its first `shared` bytes
 * are the same whatever the seed (what views of one source share). */
static void put_view_blob(tc_client *c, uint64_t bytes, uint32_t seed,
			  uint64_t shared, const char *parts,
			  char id[TC_ID_BUFLEN])
{
	struct tc_tensor_desc d = { "blob", TC_DTYPE_U8, 1, &bytes };
	struct tc_result r;
	char meta[256];
	uint8_t *p;
	tc_put *put;

	snprintf(meta, sizeof(meta),
		 "{\"tcast.view\":\"view:x%u\",\"tcast.view_of\":\"tc2:"
		 "src\",\"tcast.view_parts\":\"%s\"}",
		 seed, parts);
	if (tc_put_begin(c, &d, 1, meta, NULL, &put) < 0)
		fail_msg("put: %s", tc_client_errmsg(c));
	p = tc_put_data(put, 0);
	for (uint64_t i = 0; i < bytes; i++)
		p[i] = (uint8_t)((i * 2654435761u) >> 13 ^
				 (i < shared ? 0 : seed));
	if (tc_put_commit(put, &r) < 0)
		fail_msg("commit: %s", tc_client_errmsg(c));
	memcpy(id, r.id, TC_ID_BUFLEN);
}

/* View parts are the client's word: two "views" of one source whose
 * metadata says they share 512 KiB but whose bytes differ.  The second's
 * fill on GPU 1 copies the range from the first's replica on GPU 0, finds
 * its chunk digests wrong, and fills again from host memory: the replica
 * holds its own bytes, nothing counts as a part fill. */
static void test_gpu_tier__view_parts_are_checked(void **state)
{
	char a[TC_ID_BUFLEN], b[TC_ID_BUFLEN], buf[32];
	tc_artifact *ra;
	tc_client *c;

	daemon_start(fake_env, NULL);
	c = t_connect(D.sock);
	put_view_blob(c, 1 * MiB, 1, 0, "0:0:524288", a);
	put_view_blob(c, 1 * MiB, 2, 0, "0:0:524288", b);
	ra = attach_gpu_ok(c, a, 0);
	gpu_copy_matches_host(c, b, 1);
	assert_string_equal(fill_source(c, b, 1, buf), "host");
	assert_int_equal(peer_stat(c, "part_rejected"), 1);
	assert_int_equal(peer_stat(c, "part_fills"), 0);
	tc_artifact_close(ra);
	tc_client_close(c);
	daemon_stop();
}

/* The state of `ref`'s replica on GPU `dev` ("filling", "ready"), or
 * NULL when it has none; into buf. */
static const char *replica_state(tc_client *c, const char *ref, int dev,
				 char *buf)
{
	json_t *doc, *r = gpu_replica(c, ref, dev, &doc);

	if (r)
		strcpy(buf, json_string_value(json_object_get(r, "state")));
	json_decref(doc);
	return r ? buf : NULL;
}

/* Views A and B of one source share their first MiB (parts
 * "0:0:1048576").  A's fill on GPU 0 is held back 1.5 s (failpoint
 * gpu_fill_lead_slow) so that B's fill on GPU 1 begins while A's runs.
 * Without `fail` or `env2`, B fills its other 3 MiB from host memory,
 * waits for A to complete the shared MiB and copies it GPU to GPU: host
 * memory gave 4 + 3 MiB (gpu.fill_host_bytes), the MiB counts as
 * pipelined.  Else they break A's side (more failpoints: A's failure told
 * to B, B's wait bounded to 200 ms; env2: A's allocation fails): B fills
 * everything from host memory, counted as pipelined_fallback_bytes.  B's
 * bytes are its own in every case, and A's replica keeps no lease of
 * B's once both are done.  `a_ok`: A's fill succeeds. */
static void pipelined_case(const char *fail, const char *env2, bool a_ok)
{
	char fp[256], a[TC_ID_BUFLEN], b[TC_ID_BUFLEN], st[32];
	const char *env[] = { "TC_FAKECUDA_DEVICES=2", fp, env2, NULL };
	bool lead = fail || env2;
	struct tc__frame_hdr h;
	int fd, rfd[4], nfds, status, i;
	uint8_t *body;
	tc_client *c;

	snprintf(fp, sizeof(fp), "TCAST_FAILPOINTS=gpu_fill_lead_slow=%s%s",
		 fail ? "," : "", fail ? fail : "");
	daemon_start(env, NULL);
	c = t_connect(D.sock);
	put_view_blob(c, 4 * MiB, 1, 1 * MiB, "0:0:1048576", a);
	put_view_blob(c, 4 * MiB, 2, 1 * MiB, "0:0:1048576", b);
	fd = t_raw_connect(D.sock);
	assert_true(fd >= 0);
	assert_int_equal(t_raw_hello(fd), 0);
	raw_attach_gpu(fd, 40, a, 0);
	for (i = 0; i < 500 && !replica_state(c, a, 0, st); i++)
		usleep(10000);
	assert_string_equal(replica_state(c, a, 0, st), "filling");
	gpu_copy_matches_host(c, b, 1);
	assert_int_equal(t_raw_recv(fd, &h, &body, rfd, &nfds), 0);
	memcpy(&status, body, 4);
	free(body);
	assert_int_equal(status == 0, a_ok);
	if (nfds)
		close(rfd[0]);
	assert_int_equal(peer_stat(c, "part_rejected"), 0);
	if (!lead) {
		assert_int_equal(peer_stat(c, "pipelined_fills"), 1);
		assert_int_equal(peer_stat(c, "pipelined_bytes"), 1 * MiB);
		assert_int_equal(peer_stat(c, "pipelined_leads"), 1);
		assert_int_equal(peer_stat(c, "pipelined_fallback_bytes"), 0);
		assert_int_equal(peer_stat(c, "part_fills"), 1);
		assert_int_equal(peer_stat(c, "part_fill_bytes"), 1 * MiB);
		assert_int_equal(gpu_total(c, "fill_host_bytes"), 7 * MiB);
	} else {
		assert_int_equal(peer_stat(c, "pipelined_fills"), 0);
		assert_int_equal(peer_stat(c, "pipelined_fallback_bytes"),
				 1 * MiB);
		assert_int_equal(peer_stat(c, "part_fills"), 0);
		assert_int_equal(gpu_total(c, "fill_host_bytes"),
				 (a_ok ? 8 : 4) * MiB);
	}
	/* The lead's replica is leased by its client only (not by B's
	 * fill any more), and by nobody once that client is gone. */
	if (a_ok)
		assert_int_equal(replica_leases(c, a, 0), 1);
	close(fd);
	for (i = 0; i < 200 && a_ok && replica_leases(c, a, 0) > 0; i++)
		usleep(10000);
	if (a_ok)
		assert_int_equal(replica_leases(c, a, 0), 0);
	assert_int_equal(replica_leases(c, b, 1), 0);
	tc_client_close(c);
	daemon_stop();
}

/* Pipelined view fills: a view's GPU fill that begins while another
 * view of its source fills on a sibling GPU copies the ranges they share
 * from that fill as it completes them; when that fill fails, gives up
 * or stalls, from host memory, never waiting for good. */
static void test_gpu_tier__pipelined_view_parts(void **state)
{
	pipelined_case(NULL, NULL, true);
	pipelined_case("gpu_fill_lead_fail=", NULL, true);
	pipelined_case("gpu_pipe_stall_ms=200", NULL, true);
	/* A's allocation (the second cuMemCreate: B's, made while A is
	 * held back, is the first) fails. */
	pipelined_case(NULL,
		       "TC_FAKECUDA_FAIL=cuMemCreate:2:CUDA_ERROR_UNKNOWN",
		       false);
}

/* bind + swap: daemon-owned GPU memory at stable addresses, refilled in
 * place by an artifact of the same layout; another layout is refused
 * without writing; closing gives the budget back. */
static void test_gpu_tier__bind_and_swap(void **state)
{
	char a[TC_ID_BUFLEN], b[TC_ID_BUFLEN], cc[TC_ID_BUFLEN], h1[65], h2[65];
	tc_artifact *bd, *x;
	const void *p0;
	long long used;
	tc_client *c;

	daemon_start(fake_env, NULL);
	c = t_connect(D.sock);
	put_blob(c, "bind:a", 3 * MiB, 1, a);
	put_blob(c, "bind:b", 3 * MiB, 2, b);
	put_blob(c, "bind:c", 2 * MiB, 3, cc);
	assert_int_equal(tc_bind(c, "bind:a", 1, &bd), 0);
	assert_string_equal(tc_artifact_id(bd), a);
	assert_int_equal(tc_artifact_device(bd), 1);
	artifact_sha(bd, h1);
	host_sha(c, a, h2);
	assert_string_equal(h1, h2);
	p0 = tc_artifact_data(bd);
	used = gpu_stat(c, 1, "used_bytes");
	assert_true(used >= (long long)(3 * MiB));
	/* In place: the same address now holds b. */
	assert_int_equal(tc_binding_swap(bd, "bind:b"), 0);
	assert_ptr_equal(tc_artifact_data(bd), p0);
	assert_string_equal(tc_artifact_id(bd), b);
	artifact_sha(bd, h1);
	host_sha(c, b, h2);
	assert_string_equal(h1, h2);
	/* Another layout: refused, nothing written. */
	assert_int_equal(tc_binding_swap(bd, "bind:c"), TC_ESHAPE);
	assert_non_null(strstr(tc_client_errmsg(c), "layout"));
	artifact_sha(bd, h1);
	assert_string_equal(h1, h2);
	assert_int_equal(tc_binding_swap(bd, "no:such"), TC_ENOTFOUND);
	/* Closing the binding returns its GPU budget. */
	tc_artifact_close(bd);
	for (int i = 0; i < 200 && gpu_stat(c, 1, "used_bytes") >= used; i++)
		usleep(10000);
	assert_true(gpu_stat(c, 1, "used_bytes") < used);
	/* A plain attach is not a binding. */
	x = attach_gpu_ok(c, "bind:a", 1);
	assert_int_equal(tc_binding_swap(x, "bind:b"), TC_EINVAL);
	tc_artifact_close(x);
	tc_client_close(c);
	daemon_stop();
}

/* A binding is a private replica: charged to its GPU's budget like a
 * replica, but never on the LRU, so never evicted to make room. */
static void test_gpu_tier__binding_never_evicted(void **state)
{
	char a[TC_ID_BUFLEN], h1[65], h2[65];
	tc_artifact *bd, *x, *y;
	json_t *doc;
	tc_client *c;

	daemon_start(fake_env, "--set", "gpu_memory=8MiB", NULL);
	c = t_connect(D.sock);
	put_blob(c, "p1", 3 * MiB, 1, a); /* 4 MiB on a GPU */
	put_blob(c, "p2", 3 * MiB, 2, NULL);
	put_blob(c, "p3", 3 * MiB, 3, NULL);
	assert_int_equal(tc_bind(c, "p1", 0, &bd), 0);
	x = attach_gpu_ok(c, "p2", 0);
	tc_artifact_close(x);
	assert_int_equal(gpu_stat(c, 0, "used_bytes"), 8 * MiB);
	assert_int_equal(gpu_stat(c, 0, "replicas"), 2);
	/* Room for p3: the unleased replica of p2 goes, the binding (older,
	 * unleased as far as the tier knows) stays. */
	x = attach_gpu_ok(c, "p3", 0);
	assert_int_equal(gpu_stat(c, 0, "evictions"), 1);
	assert_null(gpu_replica(c, "p2", 0, &doc));
	json_decref(doc);
	artifact_sha(bd, h1);
	host_sha(c, a, h2);
	assert_string_equal(h1, h2);
	/* Nothing else can go: refused, the binding untouched. */
	assert_int_equal(tc_attach_gpu(c, "p2", 0, &y), TC_ENOSPACE);
	assert_int_equal(gpu_stat(c, 0, "evictions"), 1);
	/* Unbound, its charge comes back and p2 fits. */
	tc_artifact_close(bd);
	for (int i = 0;
	     i < 200 && gpu_stat(c, 0, "used_bytes") > (long long)(4 * MiB);
	     i++)
		usleep(10000);
	assert_int_equal(gpu_stat(c, 0, "used_bytes"), 4 * MiB);
	y = attach_gpu_ok(c, "p2", 0);
	assert_int_equal(gpu_stat(c, 0, "evictions"), 1);
	tc_artifact_close(y);
	tc_artifact_close(x);
	tc_client_close(c);
	daemon_stop();
}

/* An import straight to GPU `device` on its own connection (a thread), so
 * the test can read STATUS while it loads. */
struct gimport {
	const char *path;
	int device;
	pthread_t thread;
	int rc;
	char id[TC_ID_BUFLEN];
	char err[512];
};

static void *gimport_run(void *arg)
{
	struct gimport *g = arg;
	struct tc_opts o = { .field_mask = TC_OPT_DEVICE, .device = g->device };
	struct tc_result r;
	char err[256];
	tc_client *c;

	if (tc_client_connect(D.sock, &c, err, sizeof(err)) < 0) {
		g->rc = -1;
		snprintf(g->err, sizeof(g->err), "connect: %s", err);
		return NULL;
	}
	g->rc = tc_import(c, g->path, &o, &r);
	if (g->rc == 0)
		memcpy(g->id, r.id, TC_ID_BUFLEN);
	snprintf(g->err, sizeof(g->err), "%s", tc_client_errmsg(c));
	tc_client_close(c);
	return NULL;
}

static void gimport_start(struct gimport *g, const char *path, int device)
{
	memset(g, 0, sizeof(*g));
	g->path = path;
	g->device = device;
	assert_int_equal(pthread_create(&g->thread, NULL, gimport_run, g), 0);
}

/* Poll GPU `dev`'s filling_bytes until it is `want` (at most 5 s). */
static long long wait_filling(tc_client *c, int dev, long long want)
{
	long long v = -1;

	for (int i = 0; i < 500; i++) {
		v = gpu_stat(c, dev, "filling_bytes");
		if (v == want)
			break;
		usleep(10000);
	}
	return v;
}

/*
 * Every GPU fill is a FILLING replica of its GPU's tier (issue 11): an
 * import straight to a GPU, a put of CUDA tensors.  STATUS shows its bytes
 * as filling_bytes (part of used_bytes) while it runs and 0 after; a
 * refusal for room says what is being filled; a fill that fails midway
 * and a put whose client is killed give their charge back.  The
 * failpoints hold each GPU import 1.5 s once its allocation is filled,
 * and fail the one of many-tensors there.
 */
static void test_gpu_tier__fills_are_filling_replicas(void **state)
{
	static const char *const env[] = {
		"TC_FAKECUDA_DEVICES=2",
		"TCAST_FAILPOINTS=import_gpu_slow=.safetensors,"
		"import_gpu_fail=many-tensors",
		NULL
	};
	const long long G = 2 * MiB; /* a small artifact's charge */
	struct gimport g;
	char line[256], want[256];
	tc_artifact *a, *x;
	tc_client *c;
	tc_put *p;
	pid_t pid;
	int fd;

	daemon_start(env, "--set", "gpu_memory=4MiB", NULL);
	c = t_connect(D.sock);

	/* An import to GPU 1: FILLING while it loads, READY after. */
	gimport_start(&g, t_data("dtypes.safetensors"), 1);
	assert_int_equal(wait_filling(c, 1, G), G);
	assert_int_equal(gpu_stat(c, 1, "used_bytes"), G);
	assert_int_equal(gpu_stat(c, 1, "replicas"), 1);
	assert_int_equal(pthread_join(g.thread, NULL), 0);
	if (g.rc < 0)
		fail_msg("import: %s", g.err);
	assert_int_equal(gpu_stat(c, 1, "filling_bytes"), 0);
	assert_int_equal(gpu_stat(c, 1, "used_bytes"), G);
	assert_int_equal(gpu_stat(c, 1, "replicas"), 1);

	/* Held by a client, it cannot make room for what follows. */
	a = attach_gpu_ok(c, g.id, 1);

	/* An import that fails midway: charged while it runs ... */
	gimport_start(&g, t_data("many-tensors.safetensors"), 1);
	assert_int_equal(wait_filling(c, 1, G), G);
	assert_int_equal(gpu_stat(c, 1, "used_bytes"), 2 * G);
	/* ... so the budget is full, and a refusal says by what. */
	{
		uint64_t n = 1;
		struct tc_tensor_desc d = { "one", TC_DTYPE_U8, 1, &n };
		struct tc_opts o = { .field_mask = TC_OPT_DEVICE, .device = 1 };

		assert_int_equal(tc_put_begin(c, &d, 1, NULL, &o, &p),
				 TC_ENOSPACE);
		snprintf(want, sizeof(want),
			 "GPU 1 budget exhausted: need %lld bytes, 0 of %lld "
			 "free; %lld held by clients, %lld being filled",
			 G, 2 * G, G, G);
		if (!strstr(tc_client_errmsg(c), want))
			fail_msg("refusal '%s' lacks '%s'", tc_client_errmsg(c),
				 want);
	}
	assert_int_equal(pthread_join(g.thread, NULL), 0);
	assert_int_equal(g.rc, -EIO);
	assert_non_null(strstr(g.err, "failed midway"));
	/* ... and its charge came back; the held replica is untouched. */
	assert_int_equal(gpu_stat(c, 1, "filling_bytes"), 0);
	assert_int_equal(gpu_stat(c, 1, "used_bytes"), G);
	assert_int_equal(gpu_stat(c, 1, "replicas"), 1);
	assert_int_equal(gpu_stat(c, 1, "evictions"), 0);
	tc_artifact_close(a);

	/* A GPU put is FILLING from CREATE_GPU to SEAL_GPU ... */
	{
		uint64_t n = MiB;
		struct tc_tensor_desc d = { "w", TC_DTYPE_U8, 1, &n };
		struct tc_opts o = { .field_mask = TC_OPT_DEVICE, .device = 0 };
		struct tc_result r, r2;

		assert_int_equal(tc_put_begin(c, &d, 1, NULL, &o, &p), 0);
		assert_int_equal(gpu_stat(c, 0, "filling_bytes"), G);
		assert_int_equal(gpu_stat(c, 0, "used_bytes"), G);
		/* The fake's device memory is host-addressable. */
		memset(tc_put_data(p, 0), 0x44, (size_t)n);
		assert_int_equal(tc_put_commit(p, &r), 0);
		assert_int_equal(gpu_stat(c, 0, "filling_bytes"), 0);
		assert_int_equal(gpu_stat(c, 0, "used_bytes"), G);
		assert_int_equal(gpu_stat(c, 0, "replicas"), 1);
		x = attach_gpu_ok(c, r.id, 0);
		tc_artifact_close(x);
		/* The same bytes put again: its fill goes at the seal, the
		 * replica there stays, charged once; the fill's allocation
		 * is kept as the GPU's spare (charged, no replica). */
		assert_int_equal(tc_put_begin(c, &d, 1, NULL, &o, &p), 0);
		assert_int_equal(gpu_stat(c, 0, "filling_bytes"), G);
		assert_int_equal(gpu_stat(c, 0, "used_bytes"), 2 * G);
		memset(tc_put_data(p, 0), 0x44, (size_t)n);
		assert_int_equal(tc_put_commit(p, &r2), 0);
		assert_string_equal(r2.id, r.id);
		assert_int_equal(r2.deduplicated, 1);
		assert_int_equal(gpu_stat(c, 0, "filling_bytes"), 0);
		assert_int_equal(gpu_stat(c, 0, "used_bytes"), G);
		assert_int_equal(gpu_stat(c, 0, "spare.bytes"), G);
		assert_int_equal(gpu_stat(c, 0, "replicas"), 1);
		/* A removed replica's allocation goes when a spare is held
		 * already: one spare per GPU. */
		assert_int_equal(tc_rm(c, r.id), 0);
		assert_int_equal(gpu_stat(c, 0, "used_bytes"), 0);
		assert_int_equal(gpu_stat(c, 0, "spare.bytes"), G);
		assert_int_equal(gpu_stat(c, 0, "spare.kept"), 1);
	}

	/* ... and one whose client is killed with it open gives its
	 * charge back once the daemon sees the connection go. */
	pid = spawn("gput", "-", 0, NULL, &fd);
	t_read_line(fd, line, sizeof(line));
	assert_string_equal(line, "ready");
	assert_int_equal(gpu_stat(c, 0, "filling_bytes"), 2 * G);
	assert_int_equal(gpu_stat(c, 0, "used_bytes"), 2 * G);
	assert_int_equal(gpu_stat(c, 0, "replicas"), 1);
	kill(pid, SIGKILL);
	assert_int_equal(t_wait_status(pid), 128 + SIGKILL);
	close(fd);
	assert_int_equal(wait_filling(c, 0, 0), 0);
	assert_int_equal(gpu_stat(c, 0, "used_bytes"), 0);
	assert_int_equal(gpu_stat(c, 0, "replicas"), 0);
	tc_client_close(c);
	daemon_stop();
}

/* A GPU put of `n` bytes of `fill` on GPU 0; its result in *r. */
static void put_gpu_fill(tc_client *c, uint64_t n, int fill,
			 struct tc_result *r, bool on_gpu)
{
	struct tc_tensor_desc d = { "w", TC_DTYPE_U8, 1, &n };
	struct tc_opts o = { .field_mask = on_gpu ? TC_OPT_DEVICE : 0,
			     .device = 0 };
	tc_put *p;

	if (tc_put_begin(c, &d, 1, NULL, &o, &p) < 0)
		fail_msg("put: %s", tc_client_errmsg(c));
	/* The fake's device memory is host-addressable. */
	memset(tc_put_data(p, 0), fill, (size_t)n);
	if (tc_put_commit(p, r) < 0)
		fail_msg("commit: %s", tc_client_errmsg(c));
}

/* Imports straight to a GPU and replica fills from host memory take the
 * GPU's spare allocation of their size as puts do; what it held (0xee, or
 * another artifact's bytes) never reaches the new replica: its bytes,
 * padding between tensors included, are a host import's. */
static void test_gpu_tier__import_and_fill_take_spare(void **state)
{
	const long long G = 2 * MiB; /* the fake's granularity */
	struct tc_opts o = { .field_mask = TC_OPT_DEVICE, .device = 0 };
	struct tc_result r, rh, rs;
	char h1[65], h2[65];
	long long used0;
	tc_artifact *a;
	tc_client *c;

	(void)state;
	daemon_start(fake_env, "--set", "gpu_memory=8MiB", NULL);
	c = t_connect(D.sock);
	put_gpu_fill(c, 4096, 0xee, &rs, true);
	assert_int_equal(tc_rm(c, rs.id), 0);
	assert_int_equal(gpu_stat(c, 0, "spare.bytes"), G);
	used0 = gpu_stat(c, 0, "spare.used");

	/* An import straight to GPU 0 (six files, ~300 KB: one G). */
	assert_int_equal(tc_import(c, t_data("tiny-llama"), &o, &r), 0);
	assert_int_equal(gpu_stat(c, 0, "spare.used"), used0 + 1);
	assert_int_equal(gpu_stat(c, 0, "spare.bytes"), 0);
	assert_int_equal(gpu_stat(c, 0, "used_bytes"), G);
	assert_int_equal(tc_import(c, t_data("tiny-llama"), NULL, &rh), 0);
	assert_string_equal(rh.id, r.id);
	host_sha(c, rh.id, h1);
	a = attach_gpu_ok(c, r.id, 0);
	artifact_sha(a, h2);
	assert_string_equal(h1, h2);
	tc_artifact_close(a);
	assert_int_equal(tc_rm(c, r.id), 0);
	assert_int_equal(gpu_stat(c, 0, "spare.bytes"), G);

	/* A fill from the host replica: 0xee in the spare again first. */
	put_gpu_fill(c, 4096, 0xee, &rs, true);
	assert_int_equal(tc_rm(c, rs.id), 0);
	used0 = gpu_stat(c, 0, "spare.used");
	assert_int_equal(tc_import(c, t_data("tiny-llama"), NULL, &rh), 0);
	gpu_copy_matches_host(c, rh.id, 0);
	assert_int_equal(gpu_stat(c, 0, "spare.used"), used0 + 1);
	assert_int_equal(gpu_stat(c, 0, "spare.bytes"), 0);
	assert_int_equal(gpu_stat(c, 0, "used_bytes"), G);

	/* With gpu_spare=off nothing is kept, so nothing is taken. */
	tc_client_close(c);
	daemon_stop();
	daemon_start(fake_env, "--set", "gpu_memory=8MiB", "--set",
		     "gpu_spare=off", NULL);
	c = t_connect(D.sock);
	put_gpu_fill(c, 4096, 0xee, &rs, true);
	assert_int_equal(tc_rm(c, rs.id), 0);
	assert_int_equal(gpu_stat(c, 0, "spare.bytes"), 0);
	assert_int_equal(tc_import(c, t_data("tiny-llama"), &o, &r), 0);
	assert_int_equal(gpu_stat(c, 0, "spare.used"), 0);
	tc_client_close(c);
	daemon_stop();
}

/* The GPU's spare: the allocation of a removed replica (or of a put
 * whose content was there already) is kept, charged, for the next GPU
 * put of its size, which then makes no allocation; what it held never
 * reaches the new artifact; it is the first victim when room is needed;
 * gpu_spare=off keeps none. */
static void test_gpu_tier__put_reuses_spare(void **state)
{
	const long long G = 2 * MiB; /* the fake's granularity */
	const uint64_t n1 = MiB + 100, n2 = 3 * MiB;
	struct tc_result ra, rb, rh, rc, rf;
	long long used1, evictions0;
	char h1[65], h2[65];
	tc_artifact *a;
	tc_client *c;
	uint8_t *want;

	daemon_start(fake_env, "--set", "gpu_memory=8MiB", NULL);
	c = t_connect(D.sock);
	put_gpu_fill(c, n1, 0xa1, &ra, true);
	assert_int_equal(tc_rm(c, ra.id), 0);
	assert_int_equal(gpu_stat(c, 0, "replicas"), 0);
	assert_int_equal(gpu_stat(c, 0, "spare.bytes"), G);
	assert_int_equal(gpu_stat(c, 0, "spare.kept"), 1);
	assert_int_equal(gpu_stat(c, 0, "used_bytes"), 0);

	/* The next put of that size takes it: charged once, as a fill. */
	put_gpu_fill(c, n1, 0xb2, &rb, true);
	assert_int_equal(gpu_stat(c, 0, "spare.used"), 1);
	assert_int_equal(gpu_stat(c, 0, "spare.bytes"), 0);
	assert_int_equal(gpu_stat(c, 0, "used_bytes"), G);
	assert_int_equal(gpu_stat(c, 0, "replicas"), 1);
	/* Its id is its own bytes' (a host put of them joins it), and the
	 * bytes on the GPU are those, not A's. */
	put_gpu_fill(c, n1, 0xb2, &rh, false);
	assert_string_equal(rh.id, rb.id);
	want = malloc(n1);
	assert_non_null(want);
	memset(want, 0xb2, n1);
	t_sha256_hex(want, n1, h2);
	free(want);
	a = attach_gpu_ok(c, rb.id, 0);
	artifact_sha(a, h1);
	assert_string_equal(h1, h2);
	tc_artifact_close(a);
	assert_int_equal(tc_rm(c, rb.id), 0);
	assert_int_equal(gpu_stat(c, 0, "spare.bytes"), G);
	assert_int_equal(gpu_stat(c, 0, "spare.kept"), 2);

	/* A kept allocation's old bytes never reach a new artifact: the
	 * daemon zeroes the padding between tensors it hashes, the client
	 * the tensors nobody wrote -- so each put below, of tensors x, y
	 * and z written in some ways and not others, gets the id a host put
	 * of the same bytes (zeros where unwritten) gets.  Before each, the
	 * spare is filled with 0xee everywhere (one tensor, no padding). */
	{
		enum { BY_DATA, ONLY_Y_DATA, ONLY_Y_COPY, NWAYS };
		uint64_t sz[3] = { 1000, 1000, 1000 }, big = 4096;
		struct tc_tensor_desc d3[3] = { { "x", TC_DTYPE_U8, 1, &sz[0] },
						{ "y", TC_DTYPE_U8, 1, &sz[1] },
						{ "z", TC_DTYPE_U8, 1,
						  &sz[2] } };
		struct tc_tensor_desc d1 = { "w", TC_DTYPE_U8, 1, &big };
		struct tc_opts o = { .field_mask = TC_OPT_DEVICE, .device = 0 };
		struct tc_opts h = { 0 };
		struct tc__gpu_mem src;
		uint8_t ybytes[1000];
		char err[256];

		memset(ybytes, 0x22, sizeof(ybytes));
		tc__gpu_mem_init(&src);
		assert_int_equal(tc__gpu_alloc(0, G, 0, &src, err, sizeof(err)),
				 0);
		assert_int_equal(tc__gpu_mem_write(&src, 0, ybytes,
						   sizeof(ybytes), NULL, err,
						   sizeof(err)),
				 0);
		for (int way = 0; way < NWAYS; way++) {
			long long used0 = gpu_stat(c, 0, "spare.used");
			struct tc_result rg, rh3;
			tc_put *p;

			assert_int_equal(tc_put_begin(c, &d1, 1, NULL, &o, &p),
					 0);
			memset(tc_put_data(p, 0), 0xee, (size_t)big);
			assert_int_equal(tc_put_commit(p, &rg), 0);
			assert_int_equal(tc_rm(c, rg.id), 0);
			assert_int_equal(gpu_stat(c, 0, "spare.bytes"), G);

			assert_int_equal(tc_put_begin(c, d3, 3, NULL, &o, &p),
					 0);
			assert_int_equal(gpu_stat(c, 0, "spare.used"),
					 used0 + 2);
			if (way == BY_DATA) {
				for (uint32_t i = 0; i < 3; i++)
					memset(tc_put_data(p, i), 0x21 + (int)i,
					       1000);
			} else if (way == ONLY_Y_DATA) {
				memset(tc_put_data(p, 1), 0x22, 1000);
			} else {
				uint32_t idx = 1;
				uint64_t at = src.dptr;

				assert_int_equal(tc_put_copy_from_device(
							 p, 1, &idx, &at),
						 0);
			}
			assert_int_equal(tc_put_commit(p, &rg), 0);
			assert_int_equal(tc_put_begin(c, d3, 3, NULL, &h, &p),
					 0);
			for (uint32_t i = 0; i < 3; i++)
				memset(tc_put_data(p, i),
				       way == BY_DATA ? 0x21 + (int)i :
				       i == 1	      ? 0x22 :
							0,
				       1000);
			assert_int_equal(tc_put_commit(p, &rh3), 0);
			if (strcmp(rh3.id, rg.id))
				fail_msg("way %d: GPU put %s, host put %s", way,
					 rg.id, rh3.id);
			assert_int_equal(tc_rm(c, rg.id), 0);
			assert_int_equal(gpu_stat(c, 0, "spare.bytes"), G);
		}
		tc__gpu_release(&src);
	}

	/* Another size fits beside it and leaves it alone ... */
	used1 = gpu_stat(c, 0, "spare.used");
	put_gpu_fill(c, n2, 0xc3, &rc, true);
	assert_int_equal(gpu_stat(c, 0, "spare.bytes"), G);
	assert_int_equal(gpu_stat(c, 0, "spare.used"), used1);
	assert_int_equal(gpu_stat(c, 0, "used_bytes"), 2 * G);
	/* ... and when room is needed it goes first, before C, which is
	 * older than nothing but the spare; no artifact lost a copy, so
	 * that is no eviction. */
	evictions0 = gpu_stat(c, 0, "evictions");
	put_gpu_fill(c, n2, 0xf4, &rf, true);
	assert_int_equal(gpu_stat(c, 0, "spare.bytes"), 0);
	assert_int_equal(gpu_stat(c, 0, "evictions"), evictions0);
	assert_int_equal(gpu_stat(c, 0, "used_bytes"), 4 * G);
	assert_int_equal(gpu_stat(c, 0, "replicas"), 2);
	a = attach_gpu_ok(c, rc.id, 0);
	tc_artifact_close(a);
	/* Full now, with no spare: a put of F's size takes F's allocation
	 * (the least recently used, unleased), and still gets the id of its
	 * own bytes. */
	{
		long long reused0 = gpu_stat(c, 0, "reused_allocations");
		struct tc_result rv, rvh;
		tc_artifact *x;

		put_gpu_fill(c, n2, 0x55, &rv, true);
		assert_int_equal(gpu_stat(c, 0, "reused_allocations"),
				 reused0 + 1);
		assert_int_equal(gpu_stat(c, 0, "replicas"), 2);
		assert_int_equal(tc_attach(c, rf.id, &x), TC_ENOTFOUND);
		put_gpu_fill(c, n2, 0x55, &rvh, false);
		assert_string_equal(rvh.id, rv.id);
	}
	tc_client_close(c);

	/* A spare nobody takes goes after a while (a minute; here, with
	 * the failpoint, half a second): rm gives the memory back. */
	{
		const char *const env[] = { "TC_FAKECUDA_DEVICES=2",
					    "TCAST_FAILPOINTS="
					    "gpu_spare_hold_ms=500",
					    NULL };

		daemon_start(env, NULL);
		c = t_connect(D.sock);
		put_gpu_fill(c, n1, 0xa1, &ra, true);
		assert_int_equal(tc_rm(c, ra.id), 0);
		assert_int_equal(gpu_stat(c, 0, "spare.bytes"), G);
		for (int i = 0; i < 400 && gpu_stat(c, 0, "spare.bytes"); i++)
			usleep(10000);
		assert_int_equal(gpu_stat(c, 0, "spare.bytes"), 0);
		assert_int_equal(gpu_stat(c, 0, "spare.kept"), 1);
		tc_client_close(c);
	}

	daemon_start(fake_env, "--set", "gpu_spare=off", NULL);
	c = t_connect(D.sock);
	put_gpu_fill(c, n1, 0xa1, &ra, true);
	assert_int_equal(tc_rm(c, ra.id), 0);
	assert_int_equal(gpu_stat(c, 0, "used_bytes"), 0);
	assert_int_equal(gpu_stat(c, 0, "spare.kept"), 0);
	tc_client_close(c);
	daemon_stop();
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_gpu_tier__share_across_processes),
		cmocka_unit_test(test_gpu_tier__read_only),
		cmocka_unit_test(test_gpu_tier__budget_and_eviction),
		cmocka_unit_test(test_gpu_tier__killed_client_releases),
		cmocka_unit_test(test_gpu_tier__alloc_failure),
		cmocka_unit_test(test_gpu_tier__device_lost),
		cmocka_unit_test(test_gpu_tier__no_driver),
		cmocka_unit_test(test_gpu_tier__cycles_do_not_leak),
		cmocka_unit_test(test_gpu_tier__bad_requests),
		cmocka_unit_test(test_gpu_tier__host_eviction_frees_replicas),
		cmocka_unit_test(test_gpu_tier__concurrent_and_abandoned),
		cmocka_unit_test(
			test_gpu_tier__large_replica_pinned_after_first_fill),
		cmocka_unit_test(test_gpu_tier__eager_pin_and_reuse),
		cmocka_unit_test(test_gpu_tier__config),
		cmocka_unit_test(test_gpu_tier__import_straight_to_gpu),
		cmocka_unit_test(test_gpu_tier__sibling_gpu_source),
		cmocka_unit_test(test_gpu_tier__probe_is_fair),
		cmocka_unit_test(test_gpu_tier__bind_from_sibling),
		cmocka_unit_test(test_gpu_tier__view_parts_are_checked),
		cmocka_unit_test(test_gpu_tier__pipelined_view_parts),
		cmocka_unit_test(test_gpu_tier__bind_and_swap),
		cmocka_unit_test(test_gpu_tier__binding_never_evicted),
		cmocka_unit_test(test_gpu_tier__fills_are_filling_replicas),
		cmocka_unit_test(test_gpu_tier__put_reuses_spare),
		cmocka_unit_test(test_gpu_tier__import_and_fill_take_spare),
	};

	/* This process and every daemon and child use the fake. */
	setenv("TCAST_CUDA_LIB", TC_FAKECUDA_PATH, 0);
	setenv("TC_FAKECUDA_DEVICES", "2", 0);
	if (argc >= 6 && !strcmp(argv[1], "--child"))
		return child_main(argc, argv);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
