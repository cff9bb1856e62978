/*
 * kernels.c - tcast's own GPU kernels: the view kernel (permute + cast)
 * and the chunk-hash kernels (BLAKE3 of digest chunks in device memory).
 *
 * Each module is PTX checked in as a C string (scripts/gen-ptx.sh), loaded
 * once per device and process with cuModuleLoadData (the driver compiles
 * it for the GPU it finds), so the build needs no CUDA toolkit.  A module
 * the driver refuses stays refused, with its reason, for the process:
 * callers fall back to their host path and say why.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tcast/errors.h"
#include "common/compiler.h"
#include "common/hash.h"
#include "cu.h"
#include "gpu_internal.h"
#include "vmm.h"

#include "chunk_hash_ptx.h"
#include "view_permute_ptx.h"

_Static_assert(sizeof(struct tc__gpu_permute) == 296,
	       "struct tc__gpu_permute is the kernel's 296-byte parameter");

#define KMAX_DEV 64 /* devices whose modules we cache */
#define KFN_MAX	 3  /* functions of one module */

enum kmod { KMOD_VIEW, KMOD_HASH, KMOD_N };

static const struct {
	const char *ptx;
	const unsigned char *sm90; /* the same compiled for Hopper */
	const char *what;
	const char *entry[KFN_MAX]; /* functions, in the order kernel_get gives
				     */
} kmods[KMOD_N] = {
	[KMOD_VIEW] = { tc__view_permute_ptx,
			tc__view_permute_sm90,
			"view",
			{ "tc_view_permute" } },
	[KMOD_HASH] = { tc__chunk_hash_ptx,
			tc__chunk_hash_sm90,
			"chunk hash",
			{ "tc_b3_leaves", "tc_b3_parents",
			  "tc_b3_copy_leaves" } },
};

static int hash_selftest(const struct tc__cu *cu, int ordinal,
			 const CUfunction fn[KFN_MAX], char *err,
			 size_t errlen);

/* Per device and module: the loaded functions, or the sticky reason it
 * did not load.  Guarded by kernel_lock; a loaded function never
 * changes. */
static pthread_mutex_t kernel_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	int state; /* 0 not tried, 1 loaded, < 0 the error */
	CUmodule mod;
	CUfunction fn[KFN_MAX];
	char why[256];
} kernels[KMAX_DEV][KMOD_N];

/* Inside the device's context: load module k once; fn gets its entries. */
static int kernel_get(const struct tc__cu *cu, int ordinal, enum kmod k,
		      CUfunction *fn, char *err, size_t errlen)
{
	const char *call = "cuModuleLoadData";
	CUresult r;
	int ret;

	if (ordinal < 0 || ordinal >= KMAX_DEV)
		return tc__cu_seterr(TC_EDEVICE, err, errlen,
				     "no %s kernel for GPU %d", kmods[k].what,
				     ordinal);
	pthread_mutex_lock(&kernel_lock);
	if (kernels[ordinal][k].state == 0) {
		__typeof__(kernels[0][0]) *kk = &kernels[ordinal][k];

		/* Hopper's machine code first (no JIT); any other GPU
		 * refuses it, and the driver compiles the PTX instead. */
		r = cu->fn.cuModuleLoadData(&kk->mod, kmods[k].sm90);
		if (r != CUDA_SUCCESS)
			r = cu->fn.cuModuleLoadData(&kk->mod, kmods[k].ptx);
		for (int i = 0;
		     r == CUDA_SUCCESS && i < KFN_MAX && kmods[k].entry[i];
		     i++) {
			call = "cuModuleGetFunction";
			r = cu->fn.cuModuleGetFunction(&kk->fn[i], kk->mod,
						       kmods[k].entry[i]);
			if (r != CUDA_SUCCESS)
				cu->fn.cuModuleUnload(kk->mod);
		}
		if (r == CUDA_SUCCESS) {
			kk->state = 1;
			/* Ids are made from these digests: a kernel that
			 * disagrees with the host (a driver's or JIT's bug)
			 * is never used. */
			if (k == KMOD_HASH &&
			    hash_selftest(cu, ordinal, kk->fn, kk->why,
					  sizeof(kk->why)) < 0) {
				cu->fn.cuModuleUnload(kk->mod);
				kk->state = TC_ENOTSUP;
			}
		} else {
			tc__cu_fail(cu, r, call, kk->why, sizeof(kk->why),
				    "cannot load the %s kernel on GPU %d",
				    kmods[k].what, ordinal);
			kk->state = TC_ENOTSUP;
		}
	}
	ret = kernels[ordinal][k].state;
	if (ret == 1)
		memcpy(fn, kernels[ordinal][k].fn,
		       sizeof(kernels[ordinal][k].fn));
	else
		tc__cu_seterr(ret, err, errlen, "%s", kernels[ordinal][k].why);
	pthread_mutex_unlock(&kernel_lock);
	return ret < 0 ? ret : 0;
}

static int kernel_ready(int ordinal, enum kmod k, char *err, size_t errlen)
{
	const struct tc__cu *cu;
	struct tc__cu_guard g;
	CUfunction fn[KFN_MAX];
	int ret;

	ret = tc__gpu_enter(ordinal, NULL, &cu, &g, err, errlen);
	if (ret < 0)
		return ret;
	ret = kernel_get(cu, ordinal, k, fn, err, errlen);
	tc__cu_leave(cu, &g);
	return ret;
}

/* ------------------------------------------------------------------------ */
/* The view kernel                                                           */
/* ------------------------------------------------------------------------ */

int tc__gpu_permute_ready(int ordinal, char *err, size_t errlen)
{
	return kernel_ready(ordinal, KMOD_VIEW, err, errlen);
}

static bool kind_ok(uint32_t k)
{
	switch (k) {
	case TC_GPU_KIND_B1:
	case TC_GPU_KIND_B2:
	case TC_GPU_KIND_B4:
	case TC_GPU_KIND_B8:
	case TC_GPU_KIND_F16:
	case TC_GPU_KIND_BF16:
	case TC_GPU_KIND_F32:
		return true;
	}
	return false;
}

int tc__gpu_permute(int ordinal, const struct tc__gpu_permute *a,
		    struct tc__gpu_stream *s, char *err, size_t errlen)
{
	struct tc__gpu_permute args = *a;
	const struct tc__cu *cu;
	struct tc__cu_guard g;
	CUfunction fn[KFN_MAX];
	CUresult r;
	void *params[1] = { &args };
	uint64_t blocks;
	int ret;

	if (a->ndim == 0 || a->ndim > 16 || !kind_ok(a->src_kind) ||
	    !kind_ok(a->dst_kind) ||
	    (a->src_kind != a->dst_kind &&
	     ((a->src_kind >> 8) == 0 || (a->dst_kind >> 8) == 0)))
		return tc__cu_seterr(TC_EINVAL, err, errlen,
				     "view kernel: bad arguments (ndim %u, "
				     "kinds 0x%x -> 0x%x)",
				     a->ndim, a->src_kind, a->dst_kind);
	if (a->n == 0)
		return 0;
	ret = tc__gpu_enter(ordinal, s, &cu, &g, err, errlen);
	if (ret < 0)
		return ret;
	ret = kernel_get(cu, ordinal, KMOD_VIEW, fn, err, errlen);
	if (ret < 0)
		goto out;
	args.pad = 0;
	blocks = (a->n + 255) / 256;
	if (blocks > (1u << 20)) /* grid-stride beyond this */
		blocks = 1u << 20;
	r = cu->fn.cuLaunchKernel(fn[0], (unsigned)blocks, 1, 1, 256, 1, 1, 0,
				  s ? s->s : NULL, params, NULL);
	if (r == CUDA_SUCCESS && !s)
		r = cu->fn.cuStreamSynchronize(NULL);
	if (r != CUDA_SUCCESS)
		ret = tc__cu_fail(cu, r, "cuLaunchKernel", err, errlen,
				  "cannot run the view kernel on GPU %d "
				  "(%" PRIu64 " elements)",
				  ordinal, a->n);
out:
	tc__cu_leave(cu, &g);
	return ret;
}

/* ------------------------------------------------------------------------ */
/* The chunk-hash kernels                                                    */
/* ------------------------------------------------------------------------ */

/* Digest chunks per pair of launches: bounds the scratch (two chaining
 * values of 32 bytes per 1 KiB leaf: 64 MiB for 256 chunks of 4 MiB). */
#define HASH_BATCH 256

_Static_assert(sizeof(struct tc__gpu_b3) == 64,
	       "struct tc__gpu_b3 is the kernels' 64-byte parameter");
_Static_assert(sizeof(struct tc__gpu_b3_copy) == 80 &&
		       sizeof(struct tc__gpu_seg) == 24,
	       "the fused kernel's parameter and segments");

int tc__gpu_hash_ready(int ordinal, char *err, size_t errlen)
{
	return kernel_ready(ordinal, KMOD_HASH, err, errlen);
}

/* Both kernels over a's chunks, on stream st (NULL: the legacy one). */
static CUresult b3_launch(const struct tc__cu *cu, const CUfunction fn[KFN_MAX],
			  struct tc__gpu_b3 *a, CUstream st)
{
	uint64_t nl = a->nchunks * (a->chunk_bytes / 1024);
	void *params[1] = { a };
	CUresult r;

	r = cu->fn.cuLaunchKernel(
		fn[0], (unsigned)TC_MIN((nl + 127) / 128, (uint64_t)1 << 20), 1,
		1, 128, 1, 1, 0, st, params, NULL);
	if (r == CUDA_SUCCESS)
		r = cu->fn.cuLaunchKernel(fn[1], (unsigned)a->nchunks, 1, 1,
					  256, 1, 1, 0, st, params, NULL);
	return r;
}

static CUresult b3_copy_launch(const struct tc__cu *cu, const CUfunction fn[],
			       struct tc__gpu_b3_copy *ca, CUstream st)
{
	uint64_t nl = ca->a.nchunks * (ca->a.chunk_bytes / 1024);
	void *p0[1] = { ca }, *p1[1] = { &ca->a };
	CUresult r;

	r = cu->fn.cuLaunchKernel(
		fn[2], (unsigned)TC_MIN((nl + 127) / 128, (uint64_t)1 << 20), 1,
		1, 128, 1, 1, 0, st, p0, NULL);
	if (r == CUDA_SUCCESS)
		r = cu->fn.cuLaunchKernel(fn[1], (unsigned)ca->a.nchunks, 1, 1,
					  256, 1, 1, 0, st, p1, NULL);
	return r;
}

/*
 * The self-tests' device memory: known bytes at 0, then each test's
 * destination and scratch at fixed places (all far below 512 KiB).
 */
enum {
	ST_BYTES = 512 << 10,
	ST_DATA = 80000,     /* known bytes at 0 */
	ST_DST = 160 << 10,  /* a fused copy's destination */
	ST_CVS = 256 << 10,  /* chaining values */
	ST_TMP = 320 << 10,  /* their ping-pong */
	ST_OUT = 384 << 10,  /* digests */
	ST_SEGS = 448 << 10, /* a fused copy's segment table */
};

/* Digests and (fused) bytes of a launch compared with the host's. */
static int selftest_check(const struct tc__cu *cu, uint64_t base,
			  const uint8_t *want, uint64_t n, uint64_t ch,
			  bool bytes, const char *what, char *why,
			  size_t whylen)
{
	struct tc__digest got[8], d;
	uint64_t nch = (n + ch - 1) / ch;
	uint8_t *back = bytes ? malloc(n) : NULL;
	CUresult r;

	if (bytes && !back)
		return tc__cu_seterr(TC_ENOTSUP, why, whylen, "out of memory");
	r = cu->fn.cuMemcpyDtoH(got, base + ST_OUT, nch * sizeof(got[0]));
	if (r == CUDA_SUCCESS && bytes)
		r = cu->fn.cuMemcpyDtoH(back, base + ST_DST, n);
	if (r != CUDA_SUCCESS) {
		free(back);
		return tc__cu_fail(cu, r, "cuMemcpyDtoH", why, whylen,
				   "%s: read back", what);
	}
	if (bytes && memcmp(back, want, n)) {
		free(back);
		return tc__cu_seterr(TC_ENOTSUP, why, whylen,
				     "%s: wrong bytes copied", what);
	}
	free(back);
	for (uint64_t k = 0; k < nch; k++) {
		tc__hash256(want + k * ch, TC_MIN(ch, n - k * ch), &d);
		if (!tc__digest_eq(&got[k], &d))
			return tc__cu_seterr(TC_ENOTSUP, why, whylen,
					     "%s: chunk %" PRIu64
					     "'s digest differs from the "
					     "host's",
					     what, k);
	}
	return 0;
}

/*
 * The fused kernel on the self-test's known bytes, twice: a 9,000-byte
 * space in 7 KiB chunks (lane by lane: 7 leaves per chunk) and a
 * 72,000-byte space in 32 KiB chunks (whole warps, then lane by lane for
 * the short last chunk), each of three segments with padding between
 * them, one source not 16-byte aligned, the space ending mid-block.
 */
static int copy_selftest(const struct tc__cu *cu, const CUfunction fn[],
			 uint64_t base, const uint8_t *data, char *why,
			 size_t whylen)
{
	static const struct {
		uint64_t n, ch;
		struct tc__gpu_seg seg[3];
	} cases[2] = {
		{ 9000,
		  7168,
		  { { 0, 1000, 0 }, { 1024, 4000, 3 }, { 5120, 3880, 8000 } } },
		{ 72000,
		  32768,
		  { { 0, 30000, 0 },
		    { 30208, 20000, 5 },
		    { 50432, 21568, 40000 } } },
	};
	uint8_t *want = malloc(72000);
	int ret = 0;

	if (!want)
		return tc__cu_seterr(TC_ENOTSUP, why, whylen, "out of memory");
	for (int c = 0; ret == 0 && c < 2; c++) {
		struct tc__gpu_seg segs[3];
		struct tc__gpu_b3_copy ca = {
			.a = { .data = base + ST_DST,
			       .size = cases[c].n,
			       .nchunks = (cases[c].n + cases[c].ch - 1) /
					  cases[c].ch,
			       .cvs = base + ST_CVS,
			       .tmp = base + ST_TMP,
			       .out = base + ST_OUT,
			       .chunk_bytes = cases[c].ch },
			.segs = base + ST_SEGS,
			.nseg = 3,
		};
		CUresult r;

		memset(want, 0, cases[c].n);
		for (int i = 0; i < 3; i++) {
			segs[i] = cases[c].seg[i];
			segs[i].src += base;
			memcpy(want + segs[i].off, data + cases[c].seg[i].src,
			       segs[i].len);
		}
		r = cu->fn.cuMemcpyHtoD(base + ST_SEGS, segs, sizeof(segs));
		if (r == CUDA_SUCCESS)
			r = b3_copy_launch(cu, fn, &ca, NULL);
		if (r != CUDA_SUCCESS)
			ret = tc__cu_fail(cu, r, "cuLaunchKernel", why, whylen,
					  "fused launch");
		else
			ret = selftest_check(cu, base, want, cases[c].n,
					     cases[c].ch, true, "fused kernel",
					     why, whylen);
	}
	free(want);
	return ret;
}

/*
 * Hash 20,000 known bytes in chunks of 7 KiB on the GPU and on the host:
 * 7 leaves per chunk (a tree that is not a power of two), a last chunk of
 * 6 leaves ending mid-block; then the fused kernel (copy_selftest).
 * Returns 0, or TC_ENOTSUP with the reason (digests differ, or the test
 * could not run).
 */
static int hash_selftest(const struct tc__cu *cu, int ordinal,
			 const CUfunction fn[KFN_MAX], char *err, size_t errlen)
{
	enum { CH = 7168, N = 20000 };
	uint8_t *data = malloc(ST_DATA);
	struct tc__gpu_mem m;
	struct tc__gpu_b3 a;
	char why[256] = "";
	CUresult r;
	int ret;

	if (!data)
		return tc__cu_seterr(TC_ENOTSUP, err, errlen,
				     "chunk hash self-test: out of memory");
	for (int i = 0; i < ST_DATA; i++)
		data[i] = (uint8_t)((i * 2654435761u) >> 11);
	tc__gpu_mem_init(&m);
	ret = tc__gpu_alloc(ordinal, ST_BYTES, 0, &m, why, sizeof(why));
	if (ret == 0)
		ret = tc__gpu_htod(ordinal, m.dptr, data, ST_DATA, NULL, why,
				   sizeof(why));
	if (ret == 0) {
		a = (struct tc__gpu_b3){ .data = m.dptr,
					 .size = N,
					 .nchunks = (N + CH - 1) / CH,
					 .cvs = m.dptr + ST_CVS,
					 .tmp = m.dptr + ST_TMP,
					 .out = m.dptr + ST_OUT,
					 .chunk_bytes = CH };
		r = b3_launch(cu, fn, &a, NULL);
		if (r != CUDA_SUCCESS)
			ret = tc__cu_fail(cu, r, "cuLaunchKernel", why,
					  sizeof(why), "launch");
		else
			ret = selftest_check(cu, m.dptr, data, N, CH, false,
					     "hash kernel", why, sizeof(why));
	}
	if (ret == 0)
		ret = copy_selftest(cu, fn, m.dptr, data, why, sizeof(why));
	tc__gpu_release(&m);
	free(data);
	if (ret < 0)
		return tc__cu_seterr(TC_ENOTSUP, err, errlen,
				     "the chunk hash kernels failed their "
				     "self-test on GPU %d (%s)",
				     ordinal, why);
	return 0;
}

int tc__gpu_hash_chunks_dev(const struct tc__gpu_mem *m, uint64_t n,
			    struct tc__digest *out, char *err, size_t errlen)
{
	uint64_t nchunks = tc__chunk_count(n), leaves, scratch;
	struct tc__gpu_mem tmp;
	const struct tc__cu *cu;
	struct tc__cu_guard g;
	CUfunction fn[KFN_MAX];
	CUresult r = CUDA_SUCCESS;
	int ret;

	if (!m->handle || n > m->size)
		return tc__cu_seterr(TC_EINVAL, err, errlen,
				     "cannot hash %" PRIu64
				     " bytes of a %" PRIu64
				     "-byte GPU allocation",
				     n, m->size);
	if (nchunks == 0)
		return 0;
	ret = kernel_ready(m->device, KMOD_HASH, err, errlen);
	if (ret < 0)
		return ret;
	leaves =
		TC_MIN(nchunks, (uint64_t)HASH_BATCH) * (TC_CHUNK_BYTES / 1024);
	scratch = 2 * leaves * 32 + HASH_BATCH * TC_DIGEST_BYTES;
	ret = tc__gpu_alloc(m->device, scratch, 0, &tmp, err, errlen);
	if (ret < 0)
		return ret;
	ret = tc__gpu_enter(m->device, NULL, &cu, &g, err, errlen);
	if (ret < 0)
		goto out_free;
	ret = kernel_get(cu, m->device, KMOD_HASH, fn, err, errlen);
	for (uint64_t c0 = 0; ret == 0 && c0 < nchunks; c0 += HASH_BATCH) {
		struct tc__gpu_b3 a = {
			.data = m->dptr,
			.size = n,
			.chunk0 = c0,
			.nchunks = TC_MIN((uint64_t)HASH_BATCH, nchunks - c0),
			.cvs = tmp.dptr,
			.tmp = tmp.dptr + leaves * 32,
			.out = tmp.dptr + 2 * leaves * 32,
			.chunk_bytes = TC_CHUNK_BYTES,
		};

		r = b3_launch(cu, fn, &a, NULL);
		if (r == CUDA_SUCCESS)
			r = cu->fn.cuMemcpyDtoH(&out[c0], a.out,
						a.nchunks * TC_DIGEST_BYTES);
		if (r != CUDA_SUCCESS)
			ret = tc__cu_fail(cu, r, "cuLaunchKernel", err, errlen,
					  "cannot hash chunks %" PRIu64
					  "..%" PRIu64 " on GPU %d",
					  c0, c0 + a.nchunks, m->device);
	}
	tc__cu_leave(cu, &g);
out_free:
	tc__gpu_release(&tmp);
	return ret;
}

uint64_t tc__gpu_hash_scratch_bytes(uint64_t nchunks)
{
	return 2 * nchunks * (TC_CHUNK_BYTES / 1024) * 32;
}

int tc__gpu_hash_chunks_async(int ordinal, uint64_t data, uint64_t size,
			      uint64_t c0, uint64_t nchunks, uint64_t scratch,
			      uint64_t dig, struct tc__gpu_stream *s, char *err,
			      size_t errlen)
{
	uint64_t leaves = nchunks * (TC_CHUNK_BYTES / 1024);
	struct tc__gpu_b3 a = {
		.data = data,
		.size = size,
		.chunk0 = c0,
		.nchunks = nchunks,
		.cvs = scratch,
		.tmp = scratch + leaves * 32,
		.out = dig + c0 * TC_DIGEST_BYTES,
		.chunk_bytes = TC_CHUNK_BYTES,
	};
	const struct tc__cu *cu;
	struct tc__cu_guard g;
	CUfunction fn[KFN_MAX];
	CUresult r;
	int ret;

	if (!s || nchunks == 0 || nchunks > HASH_BATCH ||
	    c0 + nchunks > tc__chunk_count(size))
		return tc__cu_seterr(TC_EINVAL, err, errlen,
				     "cannot queue the hash of chunks %" PRIu64
				     "..%" PRIu64 " of %" PRIu64 " bytes",
				     c0, c0 + nchunks, size);
	ret = tc__gpu_enter(ordinal, s, &cu, &g, err, errlen);
	if (ret < 0)
		return ret;
	ret = kernel_get(cu, ordinal, KMOD_HASH, fn, err, errlen);
	if (ret == 0) {
		r = b3_launch(cu, fn, &a, s->s);
		if (r != CUDA_SUCCESS)
			ret = tc__cu_fail(cu, r, "cuLaunchKernel", err, errlen,
					  "cannot hash chunks %" PRIu64
					  "..%" PRIu64 " on GPU %d",
					  c0, c0 + nchunks, ordinal);
	}
	tc__cu_leave(cu, &g);
	return ret;
}

static int segs_check(uint64_t size, const struct tc__gpu_seg *segs,
		      uint64_t nseg, char *err, size_t errlen)
{
	uint64_t end = 0;

	for (uint64_t i = 0; i < nseg; i++) {
		if (segs[i].off < end || segs[i].len == 0 ||
		    segs[i].len > size || segs[i].off > size - segs[i].len)
			return tc__cu_seterr(
				TC_EINVAL, err, errlen,
				"copy and hash: segment %" PRIu64 " [%" PRIu64
				", +%" PRIu64
				") is empty, out of order or outside the %" PRIu64
				"-byte space",
				i, segs[i].off, segs[i].len, size);
		end = segs[i].off + segs[i].len;
	}
	return 0;
}

int tc__gpu_copy_hash(int ordinal, uint64_t dst, uint64_t size,
		      const struct tc__gpu_seg *segs, uint64_t nseg,
		      struct tc__digest *out, char *err, size_t errlen)
{
	uint64_t nchunks = tc__chunk_count(size), leaves, scratch, segb;
	struct tc__gpu_stream *s = NULL;
	struct tc__gpu_mem tmp;
	const struct tc__cu *cu;
	struct tc__cu_guard g;
	CUfunction fn[KFN_MAX];
	CUresult r = CUDA_SUCCESS;
	int ret;

	ret = segs_check(size, segs, nseg, err, errlen);
	if (ret < 0 || nchunks == 0)
		return ret;
	ret = kernel_ready(ordinal, KMOD_HASH, err, errlen);
	if (ret < 0)
		return ret;
	leaves =
		TC_MIN(nchunks, (uint64_t)HASH_BATCH) * (TC_CHUNK_BYTES / 1024);
	segb = TC_ALIGN_UP(nseg * sizeof(*segs), (uint64_t)256);
	scratch = 2 * leaves * 32 + nchunks * TC_DIGEST_BYTES + segb;
	tc__gpu_mem_init(&tmp);
	ret = tc__gpu_alloc(ordinal, scratch, 0, &tmp, err, errlen);
	if (ret == 0)
		ret = tc__gpu_stream_create(ordinal, &s, err, errlen);
	if (ret < 0)
		goto out_free;
	ret = tc__gpu_enter(ordinal, s, &cu, &g, err, errlen);
	if (ret < 0)
		goto out_free;
	ret = kernel_get(cu, ordinal, KMOD_HASH, fn, err, errlen);
	if (ret == 0)
		r = cu->fn.cuMemcpyHtoDAsync(tmp.dptr, segs,
					     nseg * sizeof(*segs), s->s);
	/* Batches queued back to back on one stream: the scratch of one
	 * batch is free again when the next starts, in stream order. */
	for (uint64_t c0 = 0; ret == 0 && r == CUDA_SUCCESS && c0 < nchunks;
	     c0 += HASH_BATCH) {
		struct tc__gpu_b3_copy ca = {
			.a = { .data = dst,
			       .size = size,
			       .chunk0 = c0,
			       .nchunks = TC_MIN((uint64_t)HASH_BATCH,
						 nchunks - c0),
			       .cvs = tmp.dptr + segb,
			       .tmp = tmp.dptr + segb + leaves * 32,
			       .out = tmp.dptr + segb + 2 * leaves * 32 +
				      c0 * TC_DIGEST_BYTES,
			       .chunk_bytes = TC_CHUNK_BYTES },
			.segs = tmp.dptr,
			.nseg = nseg,
		};

		r = b3_copy_launch(cu, fn, &ca, s->s);
	}
	if (ret == 0 && r == CUDA_SUCCESS)
		r = cu->fn.cuMemcpyDtoHAsync(out,
					     tmp.dptr + segb + 2 * leaves * 32,
					     nchunks * TC_DIGEST_BYTES, s->s);
	if (ret == 0 && r == CUDA_SUCCESS)
		r = cu->fn.cuStreamSynchronize(s->s);
	if (ret == 0 && r != CUDA_SUCCESS)
		ret = tc__cu_fail(cu, r, "cuLaunchKernel", err, errlen,
				  "cannot copy and hash %" PRIu64
				  " bytes (%" PRIu64 " segments) on GPU %d",
				  size, nseg, ordinal);
	tc__cu_leave(cu, &g);
out_free:
	tc__gpu_stream_free(s);
	tc__gpu_release(&tmp);
	return ret;
}
