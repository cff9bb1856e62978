/*
 * peer.c - copies between two GPUs of this process: whether a pair can
 * reach each other directly (NVLink or PCIe peer-to-peer), and a copy
 * from an allocation of one device into memory of another.
 *
 * A VMM allocation (vmm.c) is reachable only by the devices cuMemSetAccess
 * granted, whatever cuCtxEnablePeerAccess says (that call covers
 * cuMemAlloc memory): so a peer copy first grants the destination device
 * read access to the source allocation, then queues cuMemcpyPeerAsync on
 * the destination's context, whose copy engines pull the bytes over the
 * link.  A pair without a link still copies (the driver stages through
 * host memory), only slower: callers measure, never assume (the daemon's
 * GPU tier keeps the rates it saw per pair).
 *
 * Part of src/gpu: only the driver table below it.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "tcast/errors.h"
#include "cu.h"
#include "gpu_internal.h"
#include "vmm.h"

#define PEER_MAX_DEV 64 /* pairs whose state is cached */

/* Per ordered pair (destination, source): 0 unknown, 1 yes, 2 no; and
 * whether cuCtxEnablePeerAccess was tried.  Guarded by peer_lock. */
static pthread_mutex_t peer_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned char peer_can[PEER_MAX_DEV][PEER_MAX_DEV];
static bool peer_enabled[PEER_MAX_DEV][PEER_MAX_DEV];

int tc__gpu_can_access_peer(int dst, int src, char *err, size_t errlen)
{
	const struct tc__cu *cu;
	const struct tc__cu_dev *dd, *sd;
	int ret, can = 0;
	CUresult r;

	ret = tc__cu_get(&cu, err, errlen);
	if (ret < 0)
		return ret;
	dd = tc__cu_dev(cu, dst, err, errlen);
	sd = dd ? tc__cu_dev(cu, src, err, errlen) : NULL;
	if (!sd)
		return TC_EDEVICE;
	if (dst == src)
		return 1;
	if (dst < PEER_MAX_DEV && src < PEER_MAX_DEV) {
		pthread_mutex_lock(&peer_lock);
		can = peer_can[dst][src];
		pthread_mutex_unlock(&peer_lock);
		if (can)
			return can == 1;
	}
	r = cu->fn.cuDeviceCanAccessPeer(&can, dd->dev, sd->dev);
	if (r)
		return tc__cu_fail(cu, r, "cuDeviceCanAccessPeer", err, errlen,
				   "cannot ask whether GPU %d reaches GPU %d",
				   dst, src);
	if (dst < PEER_MAX_DEV && src < PEER_MAX_DEV) {
		pthread_mutex_lock(&peer_lock);
		peer_can[dst][src] = can ? 1 : 2;
		pthread_mutex_unlock(&peer_lock);
	}
	return can != 0;
}

/* Inside dst's context: let it reach src's context (cuMemAlloc memory;
 * VMM memory needs the grants of grant()), once per pair.  A refusal
 * only costs speed: the copy is staged. */
static void enable_once(const struct tc__cu *cu, int dst, int src,
			CUcontext sctx)
{
	bool todo = false;
	CUresult r;

	if (dst >= PEER_MAX_DEV || src >= PEER_MAX_DEV)
		return;
	pthread_mutex_lock(&peer_lock);
	if (!peer_enabled[dst][src]) {
		peer_enabled[dst][src] = true;
		todo = peer_can[dst][src] == 1;
	}
	pthread_mutex_unlock(&peer_lock);
	if (!todo)
		return;
	r = cu->fn.cuCtxEnablePeerAccess(sctx, 0);
	if (r && r != CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED)
		tc__cu_fail(cu, r, "cuCtxEnablePeerAccess", NULL, 0,
			    "GPU %d cannot enable access to GPU %d", dst, src);
}

/* Grant device `dev` access to all of `m` (an allocation of another
 * device, mapped in this process): `flags` CU_MEM_ACCESS_FLAGS_PROT_*.
 * Idempotent; what other devices were granted is left as it is. */
static int grant(const struct tc__cu *cu, const struct tc__gpu_mem *m, int dev,
		 CUmemAccess_flags flags, char *err, size_t errlen)
{
	CUresult r = tc__cu_set_access(cu, dev, m->dptr, m->size, flags);

	if (r)
		return tc__cu_fail(
			cu, r, "cuMemSetAccess", err, errlen,
			"cannot let GPU %d reach GPU %d's allocation", dev,
			m->device);
	return 0;
}

int tc__gpu_peer_copy(const struct tc__gpu_mem *dst, uint64_t doff,
		      const struct tc__gpu_mem *src, uint64_t off, uint64_t n,
		      struct tc__gpu_stream *s, char *err, size_t errlen)
{
	const char *what = "cuMemcpyPeerAsync";
	int dst_ord = dst->device, ret, can;
	const struct tc__cu *cu;
	struct tc__cu_guard g;
	CUcontext dctx, sctx;
	CUresult r;

	if (n == 0)
		return 0;
	if (off > src->size || n > src->size - off || doff > dst->size ||
	    n > dst->size - doff)
		return tc__cu_seterr(
			TC_EINVAL, err, errlen,
			"peer copy of %" PRIu64 " bytes from %" PRIu64
			" to %" PRIu64 " past the end of an "
			"allocation (%" PRIu64 " and %" PRIu64 " bytes)",
			n, off, doff, src->size, dst->size);
	can = tc__gpu_can_access_peer(dst_ord, src->device, err, errlen);
	if (can < 0)
		return can;
	ret = tc__gpu_enter(dst_ord, s, &cu, &g, err, errlen);
	if (ret < 0)
		return ret;
	ret = tc__cu_ctx(cu, src->device, &sctx, err, errlen);
	if (ret == 0)
		ret = tc__cu_ctx(cu, dst_ord, &dctx, err, errlen);
	if (ret < 0)
		goto out;
	if (can && dst_ord != src->device) {
		enable_once(cu, dst_ord, src->device, sctx);
		/* Without the grants the copy engines cannot reach the other
		 * GPU's memory over the link: the destination's read the
		 * source, and (should the driver push from the source's
		 * side) the source's write the destination. */
		ret = grant(cu, src, dst_ord, CU_MEM_ACCESS_FLAGS_PROT_READ,
			    err, errlen);
		if (ret == 0)
			ret = grant(cu, dst, src->device,
				    CU_MEM_ACCESS_FLAGS_PROT_READWRITE, err,
				    errlen);
		if (ret < 0)
			goto out;
	}
	r = cu->fn.cuMemcpyPeerAsync(dst->dptr + doff, dctx, src->dptr + off,
				     sctx, n, s ? s->s : NULL);
	if (r == CUDA_SUCCESS && !s) {
		r = cu->fn.cuStreamSynchronize(NULL);
		what = "cuStreamSynchronize";
	}
	if (r)
		ret = tc__cu_fail(cu, r, what, err, errlen,
				  "cannot copy %" PRIu64
				  " bytes from GPU %d to GPU %d",
				  n, src->device, dst_ord);
out:
	tc__cu_leave(cu, &g);
	return ret;
}
