/*
 * view_gpu.h - applying a view plan onto a GPU (libtcast internal).
 *
 * The source is a host mapping (an attached host replica), a GPU mapping
 * on the same device (a GPU replica), or a safetensors source (read with
 * pread on the host first).  Plain tensors (whole tensors, row and column
 * shards) are gathered straight into the destination with 2D copies, one
 * per run (a column shard of a matrix is one cuMemcpy2D of `rows` rows).
 * Transposes and casts are made either on the GPU (the pieces gathered
 * into device scratch, then the view kernel permutes and converts into the
 * destination) or on the host (the host executor into a host buffer, then
 * one copy): TC_VIEW_GPU_KERNEL or TC_VIEW_GPU_HOST, auto picks the
 * kernel when it loads (docs/formats.md, "Views on a GPU", says why).
 */
#ifndef TC_CLIENT_VIEW_GPU_H
#define TC_CLIENT_VIEW_GPU_H

#include <stdint.h>

#include "format/format.h"
#include "format/view.h"
#include "gpu/vmm.h"

/* Per call: scratch reused across the tensors of one realization. */
struct tc__view_gpu_ctx {
	int device;		    /* CUDA ordinal here */
	struct tc__gpu_stream *s;   /* where the work is queued (borrowed) */
	uint32_t mode;		    /* TC_VIEW_GPU_* (include/tcast/view.h) */
	struct tc__gpu_mem scratch; /* device gather buffer, grown */
	uint8_t *host;		    /* host buffer, grown, owned */
	uint64_t host_len;
	uint32_t kernel_tensors; /* tensors transformed by the kernel */
	uint32_t host_tensors;	 /* tensors transformed on the host */
	char kernel_err[256];	 /* why the kernel was not used, or "" */
};

void tc__view_gpu_ctx_init(struct tc__view_gpu_ctx *x, int device,
			   struct tc__gpu_stream *s, uint32_t mode);
/* Wait for the queued work, then free the scratch.  Returns 0 or the
 * stream's error. */
int tc__view_gpu_ctx_release(struct tc__view_gpu_ctx *x, char *err,
			     size_t errlen);

/*
 * Make output tensor i of `p` at device address dst (dst_len bytes) on
 * x->device.  Exactly one source: `src_host` (src_len bytes of host
 * memory), `src_dev` (a device address on x->device, src_len bytes), or
 * `source` (files).  Queued on x->s; the host buffers stay valid until
 * tc__view_gpu_ctx_release.  Returns 0, TC_EINVAL, TC_ENOTSUP, TC_ECUDA,
 * TC_EBADFILE, -ENOMEM or -errno.
 */
int tc__view_exec_gpu(const struct tc__view_plan *p, uint32_t i,
		      const void *src_host, uint64_t src_dev, uint64_t src_len,
		      const struct tc__source *source, uint64_t dst,
		      uint64_t dst_len, struct tc__view_gpu_ctx *x,
		      struct tc__view_io *io, char *err, size_t errlen);

#endif /* TC_CLIENT_VIEW_GPU_H */
