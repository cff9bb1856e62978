/*
 * test_realize.c - tc_realize against a real daemon: the four sources,
 * every fallback and its reason, in host memory and on GPUs of the fake
 * driver (imports straight to the GPU, replicas made from a host copy, a
 * daemon with no GPU tier), and puts of GPU memory (durable ones write
 * their shared-disk copy from the GPU replica).  The Python SDK calls the same
 * function, so tests/python/test_api.py and test_realize_gpu.py check the same
 * rules from the other side.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "gpu/vmm.h"
#include "tcast/client.h"
#include "tcast/errors.h"
#include "tlib.h"

#define MiB ((uint64_t)1 << 20)

#ifndef TC_FAKECUDA_PATH
#error "TC_FAKECUDA_PATH must name the fake driver"
#endif

static struct t_daemon D;

static void start(const char *cuda_lib)
{
	char *saved = getenv("TCAST_CUDA_LIB");

	saved = saved ? strdup(saved) : NULL;
	setenv("TCAST_CUDA_LIB", cuda_lib, 1);
	t_daemon_start(&D, "256MiB", NULL);
	if (saved)
		setenv("TCAST_CUDA_LIB", saved, 1);
	free(saved);
}

static int realize(tc_client *c, const char *ref, const char *path, int src,
		   int dev, const char *key, tc_artifact **a,
		   struct tc_realize_info *info)
{
	struct tc_opts io = { 0 };
	struct tc_realize_opts o = { 0 };

	if (key) {
		io.field_mask = TC_OPT_KEY;
		io.key = key;
	}
	o.field_mask = TC_REALIZE_SOURCE | TC_REALIZE_DEVICE |
		       TC_REALIZE_IMPORT;
	o.source = src;
	o.device = dev;
	o.import = &io;
	return tc_realize(c, ref, path, &o, a, info);
}

#define assert_has(s, sub)                                                  \
	do {                                                                \
		if (!strstr((s), (sub)))                                    \
			fail_msg("'%s' does not contain '%s'", (s), (sub)); \
	} while (0)

static void test_realize__host_sources(void **state)
{
	struct tc_realize_info info;
	const char *file = t_data("dtypes.safetensors");
	tc_artifact *a;
	tc_client *c;
	char id[TC_ID_BUFLEN];
	int rc;

	(void)state;
	start("/nonexistent/libcuda.so.1");
	c = t_connect(D.sock);

	/* auto: not held, so imported (publishing the key), and said so */
	rc = realize(c, "r:k", file, TC_SOURCE_AUTO, -1, "r:k", &a, &info);
	assert_int_equal(rc, 0);
	assert_int_equal(info.served, TC_SERVED_DISK);
	assert_int_equal(info.imported, 1);
	assert_int_equal(info.device, -1);
	assert_int_equal(tc_artifact_device(a), -1);
	assert_true(info.import_ns > 0 && info.attach_ns > 0);
	assert_has(info.fallback_reason, "not held locally");
	assert_has(info.fallback_reason, "r:k");
	assert_string_equal(info.import.id, tc_artifact_id(a));
	assert_true(tc_artifact_count(a) > 0);
	snprintf(id, sizeof(id), "%s", tc_artifact_id(a));
	tc_artifact_close(a);

	/* auto again: the key is held now */
	rc = realize(c, "r:k", file, TC_SOURCE_AUTO, -1, NULL, &a, &info);
	assert_int_equal(rc, 0);
	assert_int_equal(info.served, TC_SERVED_LOCAL);
	assert_int_equal(info.imported, 0);
	assert_string_equal(info.fallback_reason, "");
	assert_string_equal(tc_artifact_id(a), id);
	tc_artifact_close(a);

	/* local_only */
	rc = realize(c, NULL, file, TC_SOURCE_LOCAL_ONLY, -1, NULL, &a, &info);
	assert_int_equal(rc, TC_EINVAL);
	assert_null(a);
	assert_has(tc_client_errmsg(c), "needs a key or an artifact id");
	rc = realize(c, "r:none", file, TC_SOURCE_LOCAL_ONLY, -1, NULL, &a,
		     &info);
	assert_int_equal(rc, TC_ENOTFOUND);
	assert_has(tc_client_errmsg(c), "r:none");

	/* disk_only: deduplicated against what the daemon holds */
	rc = realize(c, "r:k", NULL, TC_SOURCE_DISK_ONLY, -1, NULL, &a, &info);
	assert_int_equal(rc, TC_EINVAL);
	assert_has(tc_client_errmsg(c), "needs a disk path");
	rc = realize(c, "r:k", file, TC_SOURCE_DISK_ONLY, -1, NULL, &a, &info);
	assert_int_equal(rc, 0);
	assert_int_equal(info.served, TC_SERVED_DISK);
	assert_int_equal(info.import.deduplicated, 1);
	tc_artifact_close(a);
	rc = realize(c, "r:k", "/nonexistent/m.safetensors",
		     TC_SOURCE_DISK_ONLY, -1, NULL, &a, &info);
	assert_int_equal(rc, -ENOENT);
	assert_null(a);

	/* disk_first: an unreadable file falls back to the local replica */
	rc = realize(c, "r:k", "/nonexistent/m.safetensors",
		     TC_SOURCE_DISK_FIRST, -1, NULL, &a, &info);
	assert_int_equal(rc, 0);
	assert_int_equal(info.served, TC_SERVED_LOCAL);
	assert_int_equal(info.imported, 0);
	assert_has(info.fallback_reason, "disk unavailable");
	assert_has(info.fallback_reason, "/nonexistent/m.safetensors");
	tc_artifact_close(a);
	rc = realize(c, id, NULL, TC_SOURCE_DISK_FIRST, -1, NULL, &a, &info);
	assert_int_equal(rc, 0);
	assert_string_equal(info.fallback_reason,
			    "no disk path; attached the local replica");
	tc_artifact_close(a);
	rc = realize(c, id, file, TC_SOURCE_DISK_FIRST, -1, NULL, &a, &info);
	assert_int_equal(rc, 0);
	assert_int_equal(info.served, TC_SERVED_DISK);
	assert_string_equal(info.fallback_reason, "");
	tc_artifact_close(a);

	/* both sources fail: the message names both */
	rc = realize(c, "r:none", "/nonexistent/m.safetensors", TC_SOURCE_AUTO,
		     -1, NULL, &a, &info);
	assert_int_equal(rc, -ENOENT);
	assert_has(tc_client_errmsg(c), "r:none");
	assert_has(tc_client_errmsg(c), "importing from disk");

	/* bad requests */
	assert_int_equal(realize(c, NULL, NULL, TC_SOURCE_AUTO, -1, NULL, &a,
				 &info),
			 TC_EINVAL);
	assert_has(tc_client_errmsg(c), "nothing to realize");
	assert_int_equal(realize(c, id, NULL, 9, -1, NULL, &a, &info),
			 TC_EINVAL);
	assert_has(tc_client_errmsg(c), "unknown source 9");
	assert_int_equal(realize(c, id, NULL, TC_SOURCE_AUTO, -7, NULL, &a,
				 &info),
			 TC_EINVAL);
	/* NULL options and info: auto, host */
	assert_int_equal(tc_realize(c, id, NULL, NULL, &a, NULL), 0);
	tc_artifact_close(a);
	assert_string_equal(tc_source_name(TC_SOURCE_DISK_FIRST), "disk_first");
	assert_null(tc_source_name(4));

	tc_client_close(c);
	assert_int_equal(t_daemon_stop(&D), 0);
}

/* One inspect field: the tiers of an artifact's replicas, "gpu,host". */
static void tiers(tc_client *c, const char *id, char *out, size_t len)
{
	json_t *j, *r;
	size_t i;
	char *s;

	out[0] = '\0';
	assert_int_equal(tc_inspect_json(c, id, &s), 0);
	j = json_loads(s, 0, NULL);
	tc_free(s);
	json_array_foreach(json_object_get(j, "replicas"), i, r)
	{
		if (out[0])
			strncat(out, ",", len - strlen(out) - 1);
		strncat(out, json_string_value(json_object_get(r, "tier")),
			len - strlen(out) - 1);
	}
	json_decref(j);
}

/* Bytes of GPU 0's spare allocation (kept for the next put of its size). */
static long long gpu_spare(tc_client *c)
{
	json_t *j = t_status(c);
	json_t *d = json_array_get(
		json_object_get(json_object_get(j, "gpu"), "devices"), 0);
	long long v = json_integer_value(
		json_object_get(json_object_get(d, "spare"), "bytes"));

	json_decref(j);
	return v;
}

/* GPU budget bytes in use on the daemon's GPU 0. */
static long long gpu_used(tc_client *c)
{
	json_t *j = t_status(c);
	json_t *d = json_array_get(
		json_object_get(json_object_get(j, "gpu"), "devices"), 0);
	long long v = d ? json_integer_value(json_object_get(d, "used_bytes")) :
			  -1;

	json_decref(j);
	return v;
}

static void test_realize__gpu(void **state)
{
	struct tc_realize_info info;
	struct tc_tensor_desc d;
	uint64_t shape[1] = { 4096 };
	struct tc_result res;
	tc_artifact *a;
	tc_client *c;
	tc_put *p;
	char id[TC_ID_BUFLEN], t[64];
	int rc;

	(void)state;
	start(TC_FAKECUDA_PATH);
	c = t_connect(D.sock);

	/* from disk to a GPU: the daemon's loader, no host copy */
	rc = realize(c, NULL, t_data("many-tensors.safetensors"),
		     TC_SOURCE_AUTO, 0, NULL, &a, &info);
	assert_int_equal(rc, 0);
	assert_int_equal(info.served, TC_SERVED_DISK);
	assert_int_equal(info.gpu_direct, 1);
	assert_int_equal(info.device, 0);
	assert_int_equal(tc_artifact_device(a), 0);
	assert_string_equal(info.fallback_reason, "");
	snprintf(id, sizeof(id), "%s", tc_artifact_id(a));
	tc_artifact_close(a);
	tiers(c, id, t, sizeof(t));
	assert_string_equal(t, "gpu");

	/* held on GPU 0 only: GPU 1 is served by a peer copy of GPU 0's
	 * replica (a sibling source); host memory by a host copy made from
	 * a GPU replica (GPU -> host, the transfer engine) */
	rc = realize(c, id, NULL, TC_SOURCE_LOCAL_ONLY, 0, NULL, &a, &info);
	assert_int_equal(rc, 0);
	assert_int_equal(info.served, TC_SERVED_LOCAL);
	{
		tc_artifact *h;
		uint64_t n = tc_artifact_size(a);

		rc = realize(c, id, NULL, TC_SOURCE_LOCAL_ONLY, -1, NULL, &h,
			     &info);
		assert_int_equal(rc, 0);
		assert_int_equal(info.served, TC_SERVED_LOCAL);
		assert_int_equal(info.device, -1);
		assert_int_equal(tc_artifact_device(h), -1);
		/* the fake's device memory is host-addressable */
		assert_memory_equal(tc_artifact_data(h), tc_artifact_data(a),
				    n);
		tc_artifact_close(h);
		tiers(c, id, t, sizeof(t));
		assert_true(!strcmp(t, "host,gpu") || !strcmp(t, "gpu,host"));
	}
	tc_artifact_close(a);
	rc = realize(c, id, NULL, TC_SOURCE_LOCAL_ONLY, 1, NULL, &a, &info);
	assert_int_equal(rc, 0);
	assert_int_equal(info.served, TC_SERVED_LOCAL);
	assert_int_equal(tc_artifact_device(a), 1);
	tc_artifact_close(a);

	/* a host artifact on GPU 1: the daemon copies its host copy once */
	d.name = "w";
	d.dtype = TC_DTYPE_F32;
	d.ndim = 1;
	d.shape = shape;
	assert_int_equal(tc_put_begin(c, &d, 1, NULL, NULL, &p), 0);
	for (uint32_t i = 0; i < 4096; i++)
		((float *)tc_put_data(p, 0))[i] = (float)i;
	assert_int_equal(tc_put_commit(p, &res), 0);
	rc = realize(c, res.id, NULL, TC_SOURCE_AUTO, 1, NULL, &a, &info);
	assert_int_equal(rc, 0);
	assert_int_equal(info.served, TC_SERVED_LOCAL);
	assert_int_equal(info.device, 1);
	/* the fake maps device memory at host addresses */
	assert_true(((const float *)tc_artifact_data(a))[4095] == 4095.0f);
	tc_artifact_close(a);
	tiers(c, res.id, t, sizeof(t));
	assert_true(!strcmp(t, "host,gpu") || !strcmp(t, "gpu,host"));

	tc_client_close(c);
	assert_int_equal(t_daemon_stop(&D), 0);
}

/*
 * One copy call that fills every tensor takes the fused copy+hash: the
 * daemon seals with the client's digests (STATUS
 * gpu_puts_hashed_by_client), and the id is the one a host put of the same
 * bytes gets, padding between tensors and chunk boundaries included (five
 * tensors over 9 MiB: three digest chunks, odd sizes, one source not
 * 16-byte aligned).  A put whose caller also took a device pointer
 * (tc_put_data) may have been written after the copy: the daemon hashes
 * it, and the id is right either way.
 */
static void test_realize__put_from_device_fused(void **state)
{
	enum { NT = 5 };
	static const uint64_t len[NT] = { 3 * MiB + 5, 1, 4 * MiB + 999, 77,
					  2 * MiB };
	uint64_t shape[NT][1], srcoff[NT], idx_src[NT], off = 0;
	struct tc_tensor_desc d[NT];
	struct tc_opts o = { 0 };
	struct tc_result res, hres;
	struct tc__gpu_mem src;
	uint32_t idx[NT];
	uint8_t *host = malloc(10 * MiB);
	char err[512], name[NT][8];
	tc_client *c;
	tc_put *p;

	(void)state;
	assert_non_null(host);
	for (uint64_t i = 0; i < 10 * MiB; i++)
		host[i] = (uint8_t)((i * 2654435761u) >> 7);
	start(TC_FAKECUDA_PATH);
	c = t_connect(D.sock);
	assert_int_equal(tc__gpu_alloc(0, 11 * MiB, 0, &src, err, sizeof(err)),
			 0);
	assert_int_equal(tc__gpu_mem_write(&src, 0, host, 10 * MiB, NULL, err,
					   sizeof(err)),
			 0);
	for (int i = 0; i < NT; i++) {
		snprintf(name[i], sizeof(name[i]), "t%d", i);
		shape[i][0] = len[i];
		d[i] = (struct tc_tensor_desc){ name[i], TC_DTYPE_U8, 1,
						shape[i] };
		srcoff[i] = off + (i == 2 ? 3 : 0); /* one unaligned source */
		off += len[i] + 64;
		/* copied in reverse order: the table's order is the daemon's */
		idx[i] = (uint32_t)(NT - 1 - i);
	}
	for (int i = 0; i < NT; i++)
		idx_src[i] = src.dptr + srcoff[idx[i]];
	o.field_mask = TC_OPT_DEVICE;
	o.device = 0;
	for (int round = 0; round < 2; round++) {
		long long before = t_status_int(c, "gpu_puts_hashed_by_client");

		assert_int_equal(tc_put_begin(c, d, NT, NULL, &o, &p), 0);
		if (round == 1)
			assert_non_null(tc_put_data(p, 1));
		assert_int_equal(tc_put_copy_from_device(p, NT, idx, idx_src),
				 0);
		assert_int_equal(tc_put_commit(p, &res), 0);
		assert_int_equal(t_status_int(c, "gpu_puts_hashed_by_client"),
				 before + (round == 0));
		/* the same bytes from host memory: the same id */
		assert_int_equal(tc_put_begin(c, d, NT, NULL, NULL, &p), 0);
		for (int i = 0; i < NT; i++)
			assert_int_equal(tc_put_write(p, tc_put_offset(p, i),
						      host + srcoff[i], len[i]),
					 0);
		assert_int_equal(tc_put_commit(p, &hres), 0);
		assert_string_equal(hres.id, res.id);
		assert_int_equal(hres.deduplicated, 1);
		assert_int_equal(tc_rm(c, res.id), 0);
	}
	tc__gpu_release(&src);
	tc_client_close(c);
	assert_int_equal(t_daemon_stop(&D), 0);
	free(host);
}

/* Two tensors "a" (F32 [n]) and "b" (U8 [m]) put from GPU 0's memory: the
 * daemon keeps a GPU replica and no host copy, and the id is the one a
 * host put of the same bytes gets (which then joins it). */
static void test_realize__put_from_device(void **state)
{
	enum { NA = 300000, NB = 77 };
	struct tc_tensor_desc d[2];
	uint64_t sa[1] = { NA }, sb[1] = { NB };
	struct tc_opts o = { 0 };
	struct tc__gpu_mem src;
	struct tc_result res, hres;
	struct tc_realize_info info;
	float *a = malloc(NA * sizeof(float));
	uint8_t b[NB];
	uint32_t idx[1] = { 0 }, bad[1] = { 2 };
	uint64_t ptr[1];
	char err[512], t[64];
	tc_artifact *art;
	tc_client *c;
	tc_put *p;

	(void)state;
	for (int i = 0; i < NA; i++)
		a[i] = (float)i * 0.5f;
	for (int i = 0; i < NB; i++)
		b[i] = (uint8_t)(i * 7);
	start(TC_FAKECUDA_PATH);
	c = t_connect(D.sock);
	d[0] = (struct tc_tensor_desc){ "a", TC_DTYPE_F32, 1, sa };
	d[1] = (struct tc_tensor_desc){ "b", TC_DTYPE_U8, 1, sb };
	/* the caller's tensor "a" lives on GPU 0 */
	assert_int_equal(tc__gpu_alloc(0, 2 << 20, 0, &src, err, sizeof(err)),
			 0);
	assert_int_equal(tc__gpu_mem_write(&src, 0, a, NA * sizeof(float), NULL,
					   err, sizeof(err)),
			 0);
	o.field_mask = TC_OPT_DEVICE;
	o.device = 0;
	assert_int_equal(tc_put_begin(c, d, 2, NULL, &o, &p), 0);
	assert_int_equal(tc_put_device(p), 0);
	ptr[0] = src.dptr;
	assert_int_equal(tc_put_copy_from_device(p, 1, bad, ptr), TC_EINVAL);
	assert_int_equal(tc_put_copy_from_device(p, 1, idx, ptr), 0);
	/* a GPU put has no host memory file to write through */
	assert_int_equal(tc_put_write(p, 0, b, 1), TC_EINVAL);
	assert_non_null(strstr(tc_client_errmsg(c), "not a host put"));
	/* the fake's device memory is host-addressable: "b" written directly */
	memcpy(tc_put_data(p, 1), b, NB);
	assert_int_equal(tc_put_commit(p, &res), 0);
	assert_int_equal(res.deduplicated, 0);
	tiers(c, res.id, t, sizeof(t));
	assert_string_equal(t, "gpu");

	/* a host put of the same bytes: the same id, joined */
	assert_int_equal(tc_put_begin(c, d, 2, NULL, NULL, &p), 0);
	assert_int_equal(tc_put_device(p), -1);
	assert_int_equal(tc_put_copy_from_device(p, 1, idx, ptr), TC_EINVAL);
	memcpy(tc_put_data(p, 0), a, NA * sizeof(float));
	assert_int_equal(tc_put_write(p, tc_put_offset(p, 1), b, NB), 0);
	assert_int_equal(tc_put_commit(p, &hres), 0);
	assert_string_equal(hres.id, res.id);
	assert_int_equal(hres.deduplicated, 1);
	tiers(c, res.id, t, sizeof(t));
	assert_true(!strcmp(t, "host,gpu") || !strcmp(t, "gpu,host"));

	/* the GPU replica serves an attach there */
	assert_int_equal(realize(c, res.id, NULL, TC_SOURCE_LOCAL_ONLY, 0, NULL,
				 &art, &info),
			 0);
	assert_int_equal(info.device, 0);
	assert_memory_equal(tc_artifact_data(art), a, NA * sizeof(float));
	tc_artifact_close(art);

	/* a binding swapped to an artifact with a replica on its GPU is
	 * filled device to device, and the daemon says so */
	{
		char id2[TC_ID_BUFLEN], want[200], path[600];
		tc_artifact *bd;
		char *log;

		assert_int_equal(tc_put_begin(c, d, 2, NULL, &o, &p), 0);
		a[0] = -1.0f;
		memcpy(tc_put_data(p, 0), a, NA * sizeof(float));
		memcpy(tc_put_data(p, 1), b, NB);
		assert_int_equal(tc_put_commit(p, &hres), 0);
		snprintf(id2, sizeof(id2), "%s", hres.id);
		assert_int_equal(tc_bind(c, res.id, 0, &bd), 0);
		assert_int_equal(tc_binding_swap(bd, id2), 0);
		assert_memory_equal(tc_artifact_data(bd), a,
				    NA * sizeof(float));
		/* the old id stays when a swap is refused before copying */
		assert_int_equal(tc_binding_swap(bd, "r:none"), TC_ENOTFOUND);
		assert_string_equal(tc_artifact_id(bd), id2);
		tc_artifact_close(bd);
		snprintf(path, sizeof(path), "%s/daemon.log", D.dir);
		log = t_slurp(path, NULL);
		snprintf(want, sizeof(want),
			 "swapped to '%s' from its replica on that GPU (device "
			 "to device)",
			 id2);
		assert_has(log, want);
		free(log);
	}

	/* an aborted GPU put leaves nothing: its budget comes back */
	{
		long long used = gpu_used(c);

		assert_int_equal(tc_put_begin(c, d, 2, NULL, &o, &p), 0);
		assert_true(gpu_used(c) > used);
		tc_put_abort(p);
		assert_int_equal(gpu_used(c), used);
	}
	tc__gpu_release(&src);
	free(a);
	tc_client_close(c);
	assert_int_equal(t_daemon_stop(&D), 0);
}

/* A daemon on the fake driver whose shared disk is <dir>/shared. */
static void start_shared(const char *dir, bool again)
{
	char set[600];

	snprintf(set, sizeof(set), "shared_disk=%s/shared", dir);
	setenv("TCAST_CUDA_LIB", TC_FAKECUDA_PATH, 1);
	if (again)
		t_daemon_restart(&D, "256MiB", "--set", set, NULL);
	else
		t_daemon_start(&D, "256MiB", "--set", set, NULL);
}

/* One integer of STATUS's "durable" object. */
static long long durable_int(tc_client *c, const char *field)
{
	json_t *j = t_status(c);
	long long v = json_integer_value(
		json_object_get(json_object_get(j, "durable"), field));

	json_decref(j);
	return v;
}

/*
 * A durable put of GPU memory (issue 11): SEAL_GPU writes the shared-disk
 * copy from the GPU replica (GPU -> disk through pinned staging, the
 * transfer engine's pair), hashed on the same read when the daemon
 * hashes (round 1) or with the client's fused digests adopted (round 0).
 * The put is durable when it replies, with no host copy; the data file
 * holds the bytes, and after a kill -9 a host attach loads them from it
 * (every chunk checked against the manifest).  A failed disk write fails
 * the put and leaves nothing: no artifact, its GPU budget back.
 */
static void test_realize__durable_put_from_device(void **state)
{
	enum { N = 5 * MiB + 77 };
	uint64_t shape[1] = { N };
	struct tc_tensor_desc d = { "w", TC_DTYPE_U8, 1, shape };
	struct tc_opts o = { 0 };
	struct tc__gpu_mem src;
	struct tc_result res;
	uint8_t *host = malloc(N);
	char err[512], id[2][TC_ID_BUFLEN], t[64], path[900], *dir, *data;
	uint32_t idx[1] = { 0 };
	uint64_t ptr[1];
	tc_artifact *a;
	tc_client *c;
	size_t len;
	tc_put *p;

	(void)state;
	assert_non_null(host);
	dir = t_tmpdir();
	snprintf(path, sizeof(path), "%s/shared", dir);
	assert_int_equal(mkdir(path, 0700), 0);
	start_shared(dir, false);
	c = t_connect(D.sock);
	assert_int_equal(tc__gpu_alloc(0, N, 0, &src, err, sizeof(err)), 0);
	o.field_mask = TC_OPT_DEVICE | TC_OPT_POLICY;
	o.device = 0;
	o.policy = "durable";
	for (int round = 0; round < 2; round++) {
		long long hashed = t_status_int(c, "gpu_puts_hashed_by_client");

		for (uint64_t i = 0; i < N; i++)
			host[i] = (uint8_t)(((i * 2654435761u) >> 9) + round);
		assert_int_equal(tc__gpu_mem_write(&src, 0, host, N, NULL, err,
						   sizeof(err)),
				 0);
		ptr[0] = src.dptr;
		assert_int_equal(tc_put_begin(c, &d, 1, NULL, &o, &p), 0);
		if (round == 1) /* handed out: the daemon hashes */
			assert_non_null(tc_put_data(p, 0));
		assert_int_equal(tc_put_copy_from_device(p, 1, idx, ptr), 0);
		assert_int_equal(tc_put_commit(p, &res), 0);
		assert_int_equal(tc_last_persistence(c, NULL, 0),
				 TC_PERSIST_DURABLE);
		assert_int_equal(t_status_int(c, "gpu_puts_hashed_by_client"),
				 hashed + (round == 0));
		snprintf(id[round], sizeof(id[round]), "%s", res.id);
		tiers(c, res.id, t, sizeof(t));
		assert_string_equal(t, "gpu,disk");
		snprintf(path, sizeof(path), "%s/shared/tcast/%s/tcast.data",
			 dir, res.id + 4);
		data = t_slurp(path, &len);
		assert_non_null(data);
		assert_true(len >= N);
		assert_memory_equal(data, host, N);
		free(data);
	}
	assert_int_equal(durable_int(c, "artifacts"), 2);
	assert_int_equal(durable_int(c, "filling_bytes"), 0);
	assert_int_equal(durable_int(c, "bytes"), 2 * N);
	tc_client_close(c);

	/* kill -9, then a host attach loads the copy the GPU put wrote */
	kill(D.pid, SIGKILL);
	assert_int_equal(t_wait_status(D.pid), 128 + SIGKILL);
	start_shared(dir, true);
	c = t_connect(D.sock);
	for (int round = 0; round < 2; round++) {
		for (uint64_t i = 0; i < N; i++)
			host[i] = (uint8_t)(((i * 2654435761u) >> 9) + round);
		assert_int_equal(tc_attach(c, id[round], &a), 0);
		assert_int_equal(tc_artifact_size(a), N);
		assert_memory_equal(tc_artifact_data(a), host, N);
		tc_artifact_close(a);
	}
	tc_client_close(c);
	kill(D.pid, SIGKILL); /* a stop would remove its folder */
	assert_int_equal(t_wait_status(D.pid), 128 + SIGKILL);

	/* the disk fails at fsync: the put fails, nothing stays */
	putenv((char *)"TCAST_FAILPOINTS=durable_fsync=");
	start_shared(dir, true);
	unsetenv("TCAST_FAILPOINTS");
	c = t_connect(D.sock);
	host[0] ^= 0xff;
	assert_int_equal(
		tc__gpu_mem_write(&src, 0, host, N, NULL, err, sizeof(err)), 0);
	assert_int_equal(tc_put_begin(c, &d, 1, NULL, &o, &p), 0);
	assert_int_equal(tc_put_copy_from_device(p, 1, idx, ptr), 0);
	assert_int_equal(tc_put_commit(p, &res), -EIO);
	assert_has(tc_client_errmsg(c), "cannot fsync");
	/* Nothing else on that GPU: the failed put's replica went with its
	 * artifact (its allocation kept as the GPU's spare, shown apart). */
	assert_int_equal(gpu_used(c), 0);
	assert_true(gpu_spare(c) > 0);
	assert_int_equal(durable_int(c, "artifacts"), 2);
	assert_int_equal(durable_int(c, "filling_bytes"), 0);
	assert_int_equal(durable_int(c, "write_failures"), 1);
	assert_int_equal(durable_int(c, "bytes"), 2 * N);
	assert_int_equal(t_status_int(c, "artifacts"), 0);
	tc_client_close(c);
	assert_int_equal(t_daemon_stop(&D), 0);
	tc__gpu_release(&src);
	t_rmtree(dir);
	free(dir);
	free(host);
}

static void test_realize__daemon_without_gpu(void **state)
{
	struct tc_realize_info info;
	char id[TC_ID_BUFLEN];
	tc_artifact *a;
	tc_client *c;
	int rc;

	(void)state;
	start("/nonexistent/libcuda.so.1");
	c = t_connect(D.sock);
	rc = realize(c, NULL, t_data("dtypes.safetensors"), TC_SOURCE_AUTO, 0,
		     NULL, &a, &info);
	assert_int_equal(rc, 0);
	assert_int_equal(info.served, TC_SERVED_DISK);
	assert_int_equal(info.gpu_direct, 0);
	assert_int_equal(info.device, -1);
	assert_int_equal(tc_artifact_device(a), -1);
	assert_has(info.fallback_reason, "cannot load straight to GPU 0");
	assert_has(info.fallback_reason, "imported to host memory");
	snprintf(id, sizeof(id), "%s", info.import.id);
	tc_artifact_close(a);
	/* held now: attaching for GPU 0 falls back to the host copy */
	rc = realize(c, id, NULL, TC_SOURCE_LOCAL_ONLY, 0, NULL, &a, &info);
	assert_int_equal(rc, 0);
	assert_int_equal(info.device, -1);
	assert_has(info.fallback_reason, "no replica on GPU 0");
	tc_artifact_close(a);
	tc_client_close(c);
	assert_int_equal(t_daemon_stop(&D), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_realize__host_sources),
		cmocka_unit_test(test_realize__gpu),
		cmocka_unit_test(test_realize__put_from_device),
		cmocka_unit_test(test_realize__put_from_device_fused),
		cmocka_unit_test(test_realize__durable_put_from_device),
		cmocka_unit_test(test_realize__daemon_without_gpu),
	};

	/* This process is a client on the fake's GPUs throughout. */
	setenv("TCAST_CUDA_LIB", TC_FAKECUDA_PATH, 1);
	setenv("TC_FAKECUDA_DEVICES", "2", 1);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
