/*
 * view_gpu.c - applying a view plan onto a GPU (view_gpu.h).
 *
 * The plan's runs say which source pieces make each output tensor's
 * gather buffer (the sliced tensor, packed, in the source dtype).  Here a
 * run of `count` pieces becomes one 2D copy (rows of `len` bytes, source
 * pitch `stride`, destination pitch `len`), so a column shard of a matrix
 * moves in one driver call instead of one per row, and runs that repeat
 * one shape at equal distances become one 3D copy (a slice of every
 * expert of a 3D tensor in one call instead of one per expert).  For a plain
 * tensor the gather buffer is the output itself; otherwise it is device scratch
 * that the view kernel permutes and converts into the output, or the whole
 * tensor is made on the host and copied once.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/compiler.h"
#include "tcast/dtype.h"
#include "tcast/errors.h"
#include "tcast/view.h"
#include "view_gpu.h"

static void verr(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void verr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

void tc__view_gpu_ctx_init(struct tc__view_gpu_ctx *x, int device,
			   struct tc__gpu_stream *s, uint32_t mode)
{
	memset(x, 0, sizeof(*x));
	x->device = device;
	x->s = s;
	x->mode = mode;
	tc__gpu_mem_init(&x->scratch);
}

int tc__view_gpu_ctx_release(struct tc__view_gpu_ctx *x, char *err,
			     size_t errlen)
{
	int ret = tc__gpu_stream_sync(x->s, err, errlen);

	tc__gpu_release(&x->scratch);
	tc__free(x->host);
	x->host = NULL;
	x->host_len = 0;
	return ret;
}

/* The kernel's element kind for a dtype, or 0 when it has none. */
static uint32_t kind_of(int dtype)
{
	switch (dtype) {
	case TC_DTYPE_F16:
		return TC_GPU_KIND_F16;
	case TC_DTYPE_BF16:
		return TC_GPU_KIND_BF16;
	case TC_DTYPE_F32:
		return TC_GPU_KIND_F32;
	}
	switch (tc_dtype_bits(dtype)) {
	case 8:
		return TC_GPU_KIND_B1;
	case 16:
		return TC_GPU_KIND_B2;
	case 32:
		return TC_GPU_KIND_B4;
	case 64:
		return TC_GPU_KIND_B8;
	}
	return 0;
}

/* How many runs from `r` on repeat run r's shape (len, count, stride) at
 * one source and one destination distance: they are one copy. */
static uint32_t same_shape(const struct tc__view_tplan *t, uint32_t r)
{
	const struct tc__view_run *a = &t->runs[r];
	uint32_t k = 1;

	if (r + 1 >= t->nruns)
		return 1;
	for (; r + k < t->nruns; k++) {
		const struct tc__view_run *p = &t->runs[r + k - 1],
					  *q = &t->runs[r + k];

		if (q->len != a->len || q->count != a->count ||
		    q->stride != a->stride || q->src <= p->src ||
		    q->dst <= p->dst ||
		    q->src - p->src != t->runs[r + 1].src - a->src ||
		    q->dst - p->dst != t->runs[r + 1].dst - a->dst)
			break;
	}
	return k;
}

/*
 * The runs of tensor t into `base` (device), from host or device memory.
 * Runs that repeat one shape at equal distances (the same rows and
 * columns of every expert of a [E, R, C] tensor) are one driver call: a
 * 2D copy when each run is one piece, a 3D copy when each is a 2D block;
 * every other run is one 2D copy.
 */
static int gather(const struct tc__view_tplan *t, const void *src_host,
		  uint64_t src_dev, uint64_t base, struct tc__view_gpu_ctx *x,
		  struct tc__view_io *io, char *err, size_t errlen)
{
	uint32_t k;

	for (uint32_t r = 0; r < t->nruns; r += k) {
		const struct tc__view_run *run = &t->runs[r];
		uint64_t from =
			src_host ? (uint64_t)(uintptr_t)src_host + run->src :
				   src_dev + run->src;
		uint64_t ds, dd;
		int ret;

		k = same_shape(t, r);
		ds = k > 1 ? t->runs[r + 1].src - run->src : 0;
		dd = k > 1 ? t->runs[r + 1].dst - run->dst : 0;
		if (k > 1 && run->count == 1)
			ret = tc__gpu_copy_2d(x->device, base + run->dst, true,
					      dd, from, !src_host, ds, run->len,
					      k, x->s, err, errlen);
		else if (k > 1)
			ret = tc__gpu_copy_3d(x->device, base + run->dst, true,
					      run->len, dd, from, !src_host,
					      run->stride, ds, run->len,
					      run->count, k, x->s, err, errlen);
		else
			ret = tc__gpu_copy_2d(
				x->device, base + run->dst, true, run->len,
				from, !src_host,
				run->count > 1 ? run->stride : run->len,
				run->len, run->count, x->s, err, errlen);
		if (ret < 0)
			return ret;
		if (io)
			io->bytes_read += run->len * run->count * k;
	}
	return 0;
}

static int grow_scratch(struct tc__view_gpu_ctx *x, uint64_t n, char *err,
			size_t errlen)
{
	int ret;

	if (x->scratch.size >= n)
		return 0;
	/* The kernel of the previous tensor may still read the old one. */
	ret = tc__gpu_stream_sync(x->s, err, errlen);
	if (ret < 0)
		return ret;
	tc__gpu_release(&x->scratch);
	return tc__gpu_alloc(x->device, n, 0, &x->scratch, err, errlen);
}

static int grow_host(struct tc__view_gpu_ctx *x, uint64_t n)
{
	uint8_t *b;

	if (x->host_len >= n)
		return 0;
	b = tc__malloc(n);
	if (!b)
		return -ENOMEM;
	tc__free(x->host);
	x->host = b;
	x->host_len = n;
	return 0;
}

/* The permutation and cast of t by the kernel, scratch -> dst. */
static int run_kernel(const struct tc__view_tplan *t, uint64_t src,
		      uint64_t dst, struct tc__view_gpu_ctx *x, char *err,
		      size_t errlen)
{
	struct tc__gpu_permute a;
	uint64_t gst[TC_MAX_RANK], acc = 1;
	int n = t->ndim;

	memset(&a, 0, sizeof(a));
	a.dst = dst;
	a.src = src;
	a.src_kind = kind_of(t->src_dtype);
	a.dst_kind = kind_of(t->dst_dtype);
	if (n == 0) { /* a scalar: one element */
		a.ndim = 1;
		a.oshape[0] = 1;
		a.istride[0] = 1;
		a.n = 1;
		return tc__gpu_permute(x->device, &a, x->s, err, errlen);
	}
	for (int d = n - 1; d >= 0; d--) {
		gst[d] = acc;
		acc *= t->gshape[d];
	}
	a.n = acc;
	a.ndim = (uint32_t)n;
	for (int d = 0; d < n; d++) {
		a.oshape[d] = t->gshape[t->perm[d]];
		a.istride[d] = gst[t->perm[d]];
	}
	return tc__gpu_permute(x->device, &a, x->s, err, errlen);
}

int tc__view_exec_gpu(const struct tc__view_plan *p, uint32_t i,
		      const void *src_host, uint64_t src_dev, uint64_t src_len,
		      const struct tc__source *source, uint64_t dst,
		      uint64_t dst_len, struct tc__view_gpu_ctx *x,
		      struct tc__view_io *io, char *err, size_t errlen)
{
	const struct tc__view_tplan *t;
	const struct tc__tensor *ot;
	bool kernel = false;
	int ret;

	if (i >= p->out.ntensors) {
		verr(err, errlen, "view: no output tensor #%u (%u)", i,
		     p->out.ntensors);
		return TC_EINVAL;
	}
	t = &p->t[i];
	ot = &p->out.tensors[i];
	if (dst_len < ot->nbytes) {
		verr(err, errlen,
		     "view: tensor '%s': destination holds %" PRIu64
		     " bytes, the view needs %" PRIu64,
		     ot->name, dst_len, ot->nbytes);
		return TC_EINVAL;
	}
	if (!ot->nbytes)
		return 0;
	if (!source) {
		/* Every run inside the source before anything moves. */
		for (uint32_t r = 0; r < t->nruns; r++) {
			const struct tc__view_run *run = &t->runs[r];
			uint64_t end;

			if (__builtin_mul_overflow(run->count - 1, run->stride,
						   &end) ||
			    __builtin_add_overflow(end, run->src, &end) ||
			    __builtin_add_overflow(end, run->len, &end) ||
			    end > src_len) {
				verr(err, errlen,
				     "view: tensor '%s': run %u ends "
				     "past the source (%" PRIu64 " bytes)",
				     ot->name, r, src_len);
				return TC_EINVAL;
			}
		}
		if (!t->flags)
			return gather(t, src_host, src_dev, dst, x, io, err,
				      errlen);
		if (x->mode != TC_VIEW_GPU_HOST && kind_of(t->src_dtype) &&
		    kind_of(t->dst_dtype)) {
			if (x->mode == TC_VIEW_GPU_KERNEL) {
				kernel = true;
			} else if (!x->kernel_err[0]) {
				kernel = tc__gpu_permute_ready(
						 x->device, x->kernel_err,
						 sizeof(x->kernel_err)) == 0;
				if (kernel)
					x->kernel_err[0] = 0;
			}
		}
		if (!kernel && !src_host) {
			verr(err, errlen,
			     "view: tensor '%s': a transpose or cast "
			     "from a GPU replica needs the view kernel "
			     "(%s)",
			     ot->name,
			     x->kernel_err[0] ? x->kernel_err :
						"not requested");
			return TC_ENOTSUP;
		}
	}
	if (kernel) {
		ret = grow_scratch(x, t->gather_bytes, err, errlen);
		if (ret < 0)
			return ret;
		ret = gather(t, src_host, src_dev, x->scratch.dptr, x, io, err,
			     errlen);
		if (ret < 0)
			return ret;
		ret = run_kernel(t, x->scratch.dptr, dst, x, err, errlen);
		if (ret == 0)
			x->kernel_tensors++;
		return ret;
	}
	/* On the host, then one copy. */
	if (grow_host(x, ot->nbytes) < 0) {
		verr(err, errlen, "view: tensor '%s': out of memory", ot->name);
		return -ENOMEM;
	}
	ret = source ? tc__view_exec_source(p, i, source, x->host, ot->nbytes,
					    io, err, errlen) :
		       tc__view_exec_host(p, i, src_host, src_len, x->host,
					  ot->nbytes, io, err, errlen);
	if (ret < 0)
		return ret;
	if (t->flags)
		x->host_tensors++;
	return tc__gpu_htod(x->device, dst, x->host, ot->nbytes, x->s, err,
			    errlen);
}
