/*
 * view.h - the view planner and its host executors.
 *
 * A view selects what a consumer needs from an artifact: a subset of the
 * tensors, slices on any dimensions (tensor-parallel shards), a swap of two
 * dimensions, a dtype cast.  Views compose: a view of a view is one more
 * level of the same spec, and planning folds every level into one
 * normalized spec per output tensor (source slices on every dimension, a
 * permutation, an output dtype).
 *
 * Planning is pure: a source table (names, dtypes, shapes, offsets in the
 * artifact's byte space) and a spec go in; the view's own table (offsets
 * aligned to TC_ALIGN in the view's byte space) and, per output tensor, the
 * source byte runs to gather come out, with nothing read.  The executors
 * (view_exec.c) then apply a plan from memory (a mapped host replica) or
 * from a safetensors source, reading only the planned byte ranges.
 *
 * Depends only on src/common.  docs/formats.md ("Views") is the contract:
 * the order a level applies its parts in, the casts allowed, the view id.
 */
#ifndef TC_VIEW_H
#define TC_VIEW_H

#include <stddef.h>
#include <stdint.h>

#include "common/hash.h"
#include "common/tensor.h"
#include "format.h"

#define TC_VIEW_MAX_LEVELS 64	      /* views of views */
#define TC_VIEW_MAX_OPS	   1048576    /* slices, transposes, casts per spec */
#define TC_VIEW_MAX_RUNS   (1u << 22) /* run entries per plan */
#define TC_VIEW_END	   UINT64_MAX /* a slice's stop: to the end */
#define TC_VIEW_ID_PREFIX  "view:"
#define TC_VIEW_ID_LEN	   (5 + TC_ID_LEN) /* "view:" + an artifact id */
/* A kept view's metadata "tcast.view_parts": ranges of its byte space
 * that are one contiguous range of its source's, at least this long (a
 * copy of less between GPUs is latency, not bandwidth), at most this many
 * (the daemon's fill copies each on its own). */
#define TC_VIEW_PART_MIN  ((uint64_t)64 << 10)
#define TC_VIEW_MAX_PARTS 4096

/* ------------------------------------------------------------------ spec */

enum tc__view_op_kind {
	TC__VIEW_SLICE = 1,
	TC__VIEW_TRANSPOSE = 2,
	TC__VIEW_CAST = 3,
};

/* One part of a level.  `name` NULL means every tensor (transpose and cast
 * only); a transpose for every tensor skips tensors of lower rank. */
struct tc__view_op {
	char *name;	/* owned, or NULL */
	uint8_t kind;	/* enum tc__view_op_kind */
	uint32_t dim;	/* slice: the dim; transpose: the first dim */
	uint32_t dim1;	/* transpose: the second dim */
	uint64_t start; /* slice: first index */
	uint64_t stop;	/* slice: one past the last index */
	int dtype;	/* cast: enum tc_dtype */
};

/* One level: names (when has_names), then slices in the level's input
 * coordinates, then transposes, then casts. */
struct tc__view_level {
	char **names; /* owned, nnames entries */
	uint32_t nnames;
	int has_names;
	struct tc__view_op *ops; /* owned, nops entries */
	uint32_t nops;
};

/* A spec: levels[0] applies to the artifact, levels[i] to the output of
 * levels[i - 1].  Always at least one level after init. */
struct tc__view_spec {
	struct tc__view_level *levels; /* owned */
	uint32_t nlevels;
};

/* Builders return 0, TC_EINVAL (a NULL or empty name, an unknown dtype),
 * TC_ELIMIT or -ENOMEM; everything that needs the table is checked when
 * planning. */
int tc__view_spec_init(struct tc__view_spec *s);
void tc__view_spec_release(struct tc__view_spec *s);
int tc__view_spec_select(struct tc__view_spec *s, const char *name);
int tc__view_spec_slice(struct tc__view_spec *s, const char *name, uint32_t dim,
			uint64_t start, uint64_t stop);
int tc__view_spec_transpose(struct tc__view_spec *s, const char *name,
			    uint32_t dim0, uint32_t dim1);
int tc__view_spec_cast(struct tc__view_spec *s, const char *name, int dtype);
/* Start a new level: later parts apply to the view built so far. */
int tc__view_spec_push(struct tc__view_spec *s);
/* Parse the JSON form (docs/formats.md): one level object or an array of
 * them.  Returns 0, TC_EINVAL (err says where) or -ENOMEM. */
int tc__view_spec_parse(const char *json, size_t len, struct tc__view_spec *s,
			char *err, size_t errlen);

/* True when `from` may be cast to `to`: the same dtype, or both among
 * F16, BF16 and F32. */
int tc__view_cast_ok(int from, int to);

/* ------------------------------------------------------------------ plan */

#define TC__VIEW_F_TRANSPOSE (1u << 0) /* permute after gathering */
#define TC__VIEW_F_CAST	     (1u << 1) /* convert the dtype after that */

/*
 * `count` pieces of `len` bytes: piece j starts at src + j * stride in the
 * source byte space and lands at dst + j * len in the tensor's gather
 * buffer (the sliced tensor, packed, in the source dtype).  A row shard of
 * a contiguous tensor is one run of count 1; a column shard of a matrix is
 * one run of count rows.
 */
struct tc__view_run {
	uint64_t src;
	uint64_t dst;
	uint64_t len;
	uint64_t count;
	uint64_t stride;
};

/* How one output tensor is made.  Invariant: the runs cover the gather
 * buffer [0, gather_bytes) exactly once, in increasing src order. */
struct tc__view_tplan {
	uint32_t src_index;	      /* tensor in the source table */
	int src_dtype;		      /* enum tc_dtype */
	int dst_dtype;		      /* == out.tensors[i].dtype */
	uint8_t ndim;		      /* rank */
	uint64_t gshape[TC_MAX_RANK]; /* sliced shape, source dim order */
	uint8_t perm[TC_MAX_RANK];    /* output dim d is source dim perm[d] */
	uint32_t flags;		      /* TC__VIEW_F_* */
	uint64_t gather_bytes;	      /* bytes of the gather buffer */
	struct tc__view_run *runs;    /* owned */
	uint32_t nruns;
};

struct tc__view_plan {
	struct tc__table out;	     /* the view's table and byte space */
	struct tc__view_tplan *t;    /* owned, out.ntensors entries */
	uint64_t bytes_needed;	     /* source bytes the runs cover */
	uint64_t artifact_bytes;     /* the source table's byte space */
	char id[TC_VIEW_ID_LEN + 1]; /* "view:" + a digest id */
};

/*
 * Resolve `spec` against `src` (offsets set: tc__table_layout or an
 * attached artifact's table).  `artifact_id` (may be "") enters the view
 * id.  On success `out` holds the plan (tc__view_plan_release).  Returns 0,
 * TC_ENOTFOUND (a tensor that is not there), TC_EINVAL (a dim out of range,
 * a slice outside the shape, empty or reversed, a bad transpose, a name
 * given twice), TC_EBADDTYPE (a cast the dtype does not allow, a sub-byte
 * slice that does not fall on bytes), TC_ELIMIT or -ENOMEM; `err` names the
 * tensor, the dimension and the bound, and `out` is left empty.
 */
int tc__view_plan(const struct tc__table *src, const char *artifact_id,
		  const struct tc__view_spec *spec, struct tc__view_plan *out,
		  char *err, size_t errlen);
void tc__view_plan_release(struct tc__view_plan *p);

/* Run entries expanded: how many contiguous pieces tensor i reads. */
uint64_t tc__view_tplan_pieces(const struct tc__view_tplan *t);

/* -------------------------------------------------------------- executors */

/* What an executor read (disk) or copied (host). */
struct tc__view_io {
	uint64_t bytes_read; /* bytes read from files (pread) or memory */
	uint64_t reads;	     /* pread calls (disk) */
};

/*
 * Make output tensor i of `p` at `dst` (dst_len >= out.tensors[i].nbytes)
 * from the source byte space at `src` (src_len bytes).  Returns 0, TC_EINVAL
 * (dst too small, runs outside src) or -ENOMEM (a transpose's scratch).
 */
int tc__view_exec_host(const struct tc__view_plan *p, uint32_t i,
		       const void *src, uint64_t src_len, void *dst,
		       uint64_t dst_len, struct tc__view_io *io, char *err,
		       size_t errlen);

/*
 * The same from a safetensors source whose table `p` was planned against
 * (s->table with offsets from tc__table_layout): only the planned byte
 * ranges are read, with pread, pieces less than a page apart coalesced.
 * Returns 0, TC_EINVAL, TC_EBADFILE (the file shrank), -ENOMEM or -errno.
 */
int tc__view_exec_source(const struct tc__view_plan *p, uint32_t i,
			 const struct tc__source *s, void *dst,
			 uint64_t dst_len, struct tc__view_io *io, char *err,
			 size_t errlen);

/* Element conversions (round to nearest even), exported for tests:
 * n elements from `in` (dtype from) to `out` (dtype to); both among F16,
 * BF16, F32, or equal. */
void tc__view_cast(int from, int to, const void *in, void *out, uint64_t n);

#endif /* TC_VIEW_H */
