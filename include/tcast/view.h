/*
 * view.h - views: what a consumer needs from an artifact, planned and
 * realized into memory the caller owns.
 *
 * A view selects tensors, slices any dimensions (several per tensor,
 * step 1), swaps two dimensions and casts among F16, BF16 and F32 (or to the
 * same dtype).  A spec is built with calls or parsed from JSON
 * (docs/formats.md, "Views"); tc_view_push starts a view of the view built
 * so far, and planning folds every level into one spec.  A plan is made
 * against an attached artifact (read from its host mapping) or a
 * safetensors file or folder (read with pread: only the byte ranges the
 * view needs).  Planning reads no tensor data; every error names the
 * tensor, the dimension and the bound, and nothing is realized.
 *
 * A view is realized into host memory (tc_view_realize), into GPU memory
 * the caller owns (tc_view_realize_gpu: 2D copies, transposes and casts by
 * a GPU kernel), or kept by the daemon as an artifact of its own under the
 * view id (tc_view_attach), so every later realization of the same view,
 * in any process, is a zero-copy attach on the host or a GPU.
 */
#ifndef TCAST_VIEW_H
#define TCAST_VIEW_H

#include <stddef.h>
#include <stdint.h>

#include "client.h"
#include "export.h"

typedef struct tc_view tc_view;
typedef struct tc_view_plan tc_view_plan;

/* ------------------------------------------------------------------ spec */

/* An empty spec (every tensor, unchanged).  *out is owned by the caller
 * (tc_view_free).  Returns 0 or -ENOMEM. */
TC_API int tc_view_new(tc_view **out);
/* A spec from its JSON form: one level object or an array of levels.
 * Returns 0, TC_EINVAL (err says where), TC_ELIMIT or -ENOMEM. */
TC_API int tc_view_parse(const char *json, tc_view **out, char *err,
			 size_t errlen);
/* Keep `name` (in call order); without any select every tensor is kept. */
TC_API int tc_view_select(tc_view *v, const char *name);
/* Keep [start, stop) of dimension `dim` of `name`; stop UINT64_MAX means
 * to the end of the dimension. */
TC_API int tc_view_slice(tc_view *v, const char *name, uint32_t dim,
			 uint64_t start, uint64_t stop);
/* Swap dims dim0 and dim1 of `name`, or of every tensor of rank above both
 * when `name` is NULL. */
TC_API int tc_view_transpose(tc_view *v, const char *name, uint32_t dim0,
			     uint32_t dim1);
/* Cast `name` (NULL: every tensor) to `dtype` (enum tc_dtype). */
TC_API int tc_view_cast(tc_view *v, const char *name, int32_t dtype);
/* Later calls describe a view of the view built so far (its names, its
 * dims after its transposes).  Returns 0, TC_ELIMIT or -ENOMEM. */
TC_API int tc_view_push(tc_view *v);
/* NULL is a no-op. */
TC_API void tc_view_free(tc_view *v);
/* Builders return 0, TC_EINVAL (NULL or empty name, unknown dtype),
 * TC_ELIMIT or -ENOMEM.  Table checks happen when planning. */

/* ------------------------------------------------------------------ plan */

/* Plan `v` against an attached artifact; the plan holds a reference on
 * `a`.  *out is owned by the caller (tc_view_plan_free).  Returns 0,
 * TC_ENOTFOUND, TC_EINVAL, TC_EBADDTYPE, TC_ELIMIT or -ENOMEM; `err` names
 * the tensor, the dimension and the bound. */
TC_API int tc_view_plan_artifact(const tc_view *v, tc_artifact *a,
				 tc_view_plan **out, char *err, size_t errlen);
/* Plan `v` against a safetensors file or Hugging Face folder (opened and
 * validated as tc_st_verify does; the plan keeps the files open).  Its
 * view id covers the path, not the content (no content id is computed).
 * Returns what tc_view_plan_artifact returns, or tc_st_verify's codes. */
TC_API int tc_view_plan_path(const tc_view *v, const char *path,
			     tc_view_plan **out, char *err, size_t errlen);
/* Plan `v` against the table of artifact `artifact_id` whose byte space
 * (`size` bytes) the caller holds at `base` (borrowed: valid while the
 * plan is realized or kept), e.g. the chunks of it a peer pull fetched.
 * `tensors` carries names, dtypes, shapes and offsets (the daemon's
 * canonical layout).  The view id is the one tc_view_plan_artifact gives
 * for the same artifact; only the byte ranges the view needs are read
 * from `base` (tc_view_plan_chunks says which).  Returns what
 * tc_view_plan_artifact returns. */
TC_API int tc_view_plan_memory(const tc_view *v, const char *artifact_id,
			       const struct tc_tensor_info *tensors, uint32_t n,
			       uint64_t size, const void *base,
			       tc_view_plan **out, char *err, size_t errlen);
/* Which `chunk_bytes`-sized pieces of the source byte space the view
 * reads: sets bit k of `bits` (little-endian bit order, nchunks bits, the
 * caller zeroes them) for every chunk k a planned byte range touches, and
 * returns how many are set.  TC_EINVAL for a chunk size of 0. */
TC_API int64_t tc_view_plan_chunks(const tc_view_plan *p, uint64_t chunk_bytes,
				   uint8_t *bits, uint64_t nchunks);
/* NULL is a no-op. */
TC_API void tc_view_plan_free(tc_view_plan *p);

/* "view:" + a digest of the artifact id and the normalized spec: equal
 * specs (a full slice or none, a view of a view or the same view at once)
 * give equal ids.  Borrowed, valid while `p` lives. */
TC_API const char *tc_view_plan_id(const tc_view_plan *p);
/* The view's tensors, offsets aligned to 256 bytes in the view's own byte
 * space of tc_view_plan_size() bytes.  Borrowed, valid while `p` lives. */
TC_API uint32_t tc_view_plan_count(const tc_view_plan *p);
TC_API const struct tc_tensor_info *tc_view_plan_tensors(const tc_view_plan *p);
TC_API uint64_t tc_view_plan_size(const tc_view_plan *p);
/* Where output tensor i already lies, unchanged and contiguous, in the
 * source byte space (a whole tensor, a row shard): its byte offset there,
 * so a caller holding the mapping can use it without a copy.  -1 when the
 * tensor needs a gather, transpose or cast (or i is out of range). */
TC_API int64_t tc_view_plan_source_offset(const tc_view_plan *p, uint32_t i);

/* What a plan reads.  Counters accumulate over every realize call. */
struct tc_view_stats {
	uint64_t bytes_needed;	 /* source bytes the view covers */
	uint64_t artifact_bytes; /* the whole artifact's tensor byte space */
	uint64_t bytes_read;	 /* bytes read so far (files or memory) */
	uint64_t reads;		 /* pread calls so far (files) */
	uint64_t header_bytes;	 /* safetensors headers read when planning */
	uint64_t pieces;	 /* contiguous source pieces */
	uint32_t from_disk;	 /* 1: planned against a file or folder */
	uint32_t reserved;
};
TC_API int tc_view_plan_stats(const tc_view_plan *p, struct tc_view_stats *out);

/* ---------------------------------------------------------------- realize */

/* The whole view into `dst` (host memory, >= tc_view_plan_size bytes):
 * tensor i at tc_view_plan_tensors(p)[i].offset; padding is zeroed.
 * Returns 0, TC_EINVAL (dst too small), TC_ENOTSUP (the artifact is
 * attached on a GPU: attach on the host), TC_EBADFILE (a file shrank),
 * -ENOMEM or -errno. */
TC_API int tc_view_realize(tc_view_plan *p, void *dst, uint64_t len, char *err,
			   size_t errlen);
/* Output tensor i only, into `dst` (>= its nbytes). */
TC_API int tc_view_realize_tensor(tc_view_plan *p, uint32_t i, void *dst,
				  uint64_t len, char *err, size_t errlen);

/* ----------------------------------------------------------- on a GPU */

/* How tc_view_realize_gpu makes transposes and casts. */
#define TC_VIEW_GPU_AUTO   0u /* the kernel when it loads, else the host */
#define TC_VIEW_GPU_KERNEL 1u /* gathered on the GPU, then the view kernel */
#define TC_VIEW_GPU_HOST   2u /* made on the host, then one copy */

/*
 * The whole view into GPU memory at device address `dptr` (>=
 * tc_view_plan_size bytes, on this process's CUDA ordinal `device`),
 * tensor i at tc_view_plan_tensors(p)[i].offset, padding zeroed.  Plain
 * tensors (whole, row or column shards) move with one 2D copy per run
 * straight into place; transposes and casts per `mode`.  The source is the
 * plan's host attachment, its GPU attachment on the same device (copies
 * stay on the GPU; transposes and casts then need the kernel), or its
 * files (read on the host with pread, then copied: for the loader's rate,
 * import the view's slices with tc_import_view, attach them with
 * tc_attach_gpu and realize from that).  Work is queued on `stream` (a
 * CUstream value; 0 the NULL stream) and complete when this returns.
 * Returns 0, TC_EINVAL (dst too small), TC_ENOTSUP (the artifact is on
 * another GPU; a transform from a GPU attachment without the kernel),
 * TC_ENODEV, TC_EDEVICE, TC_ECUDA, TC_EBADFILE, -ENOMEM or -errno; err
 * says what and where.  On failure the destination's content is
 * unspecified.
 */
TC_API int tc_view_realize_gpu(tc_view_plan *p, int32_t device, uint64_t dptr,
			       uint64_t len, uintptr_t stream, uint32_t mode,
			       char *err, size_t errlen);
/* Output tensor i only, into `dptr` (>= its nbytes). */
TC_API int tc_view_realize_tensor_gpu(tc_view_plan *p, uint32_t i,
				      int32_t device, uint64_t dptr,
				      uint64_t len, uintptr_t stream,
				      uint32_t mode, char *err, size_t errlen);
/* How many tensors the GPU realizations of `p` transformed with the
 * kernel and on the host so far (either pointer may be NULL), and why the
 * kernel was not used ("" when it was, or was not needed). */
TC_API int tc_view_plan_gpu_counts(const tc_view_plan *p, uint64_t *kernel,
				   uint64_t *host, char *why, size_t whylen);

/* -------------------------------------------------- views kept as replicas */

#define TC_VIEW_ATTACH_CACHED 1u /* OUT: the daemon already held the view */

/*
 * The view as an artifact of the daemon, attached: its tensors are the
 * view's (tc_artifact_tensors gives the same table as the plan, offsets in
 * the view's byte space) and its key is tc_view_plan_id(p).  If the daemon
 * holds that key (another process realized the same view of the same
 * artifact), this is a zero-copy attach; otherwise the view is realized
 * from the plan's source straight into a new artifact's memory (put),
 * published under the view id and attached.  device < 0: a host
 * attachment; else a GPU replica of the view on that ordinal (the daemon
 * copies it once; later attaches on that GPU are zero-copy).  Only plans
 * made by tc_view_plan_artifact or tc_view_plan_memory (a file's view id
 * names a path, not content).  *out is owned by the caller (tc_artifact_close);
 * *flags (may be NULL) gets TC_VIEW_ATTACH_CACHED.  Returns 0, TC_ENOTSUP (a
 * plan of a file), TC_ECONFLICT (the key names an artifact of another table),
 * or what tc_put_begin, tc_put_commit, tc_key_set, tc_attach and tc_attach_gpu
 * return; err says what.  A failure leaves nothing behind (no key, no partial
 * artifact).
 */
TC_API int tc_view_attach(tc_client *c, tc_view_plan *p, int32_t device,
			  tc_artifact **out, uint32_t *flags, char *err,
			  size_t errlen);
/* A view bound on a GPU (stable addresses, refilled by swap) is a binding
 * of the kept view: tc_bind(c, tc_artifact_id(kept), device, &b), and
 * tc_binding_swap(b, id) with the kept id of the same view of the next
 * version (same layout). */

#endif /* TCAST_VIEW_H */
