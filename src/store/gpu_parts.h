/*
 * gpu_parts.h - a kept view's parts, and the progress of a view's GPU
 * fill that other fills copy from while it runs (docs/gpu.md,
 * "Tensor-parallel realization").
 *
 * A kept view (client/view_api.c) names its source ("tcast.view_of") and
 * the ranges of its byte space that are one contiguous range of the
 * source's ("tcast.view_parts": "dst:src:len ..."): the replicated
 * tensors of a tensor-parallel rank's view are held whole by every
 * rank's view.  The GPU tier (gpu_tier_sources.c) fills a view's replica partly
 * from other views' replicas on sibling GPUs: ready ones, and ones still
 * filling, whose fill (the lead) copies the ranges other ranks share
 * first and publishes how far it has got in a struct tc__gpu_pipe.
 *
 * This file holds what needs no tier state: parsing and intersecting
 * parts, choosing a lead's first ranges, and the pipe itself (shared by
 * the lead's worker and its followers' workers, under its lock).  Part
 * of src/store; uses common, gpu and xfer.
 */
#ifndef TC_GPU_PARTS_H
#define TC_GPU_PARTS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/tensor.h"
#include "gpu/vmm.h"
#include "xfer/xfer.h"

/* A follower gives up on its lead (and fills the ranges from host
 * memory) after this long without the lead completing a range (failpoint
 * gpu_pipe_stall_ms=N overrides it). */
#define TC_GPU_PIPE_STALL_MS 30000

/* The value of metadata `key` of t, or NULL. */
const char *tc__table_meta(const struct tc__table *t, const char *key);

/* Parse t's "tcast.view_parts" into *out (tc__malloc'd, *n entries:
 * dst_off in the view's byte space, src_off in the source's, increasing
 * dst, not overlapping, inside the byte space; src and gate NULL).
 * Returns false (and *out NULL) when there are none, they do not parse,
 * or on OOM. */
bool tc__view_parts_parse(const struct tc__table *t, struct tc__xfer_part **out,
			  uint32_t *n);

/* Append to the growable array (*pc, *npc, *cap; tc__realloc'd) a piece
 * for each range of source bytes that one of `mine` and one of `theirs`
 * (both as tc__view_parts_parse gives them) both cover, at least
 * TC_VIEW_PART_MIN bytes: dst_off in mine's byte space, src_off in
 * theirs', with `src` and `gate` as given.  Returns the pieces added
 * (fewer on OOM or past TC_VIEW_MAX_PARTS). */
uint32_t tc__view_parts_overlap(const struct tc__xfer_part *mine,
				uint32_t nmine,
				const struct tc__xfer_part *theirs,
				uint32_t ntheirs, const struct tc__gpu_mem *src,
				void *gate, struct tc__xfer_part **pc,
				uint32_t *npc, uint32_t *cap);

/* Order pieces by where they land (at one offset a ready piece before a
 * gated one) and trim overlaps: the first by position keeps the bytes,
 * what another still adds past it is kept when at least
 * TC_VIEW_PART_MIN.  Returns the pieces left (a prefix of pc). */
uint32_t tc__view_parts_trim(struct tc__xfer_part *pc, uint32_t npc);

/* A lead's first ranges: of each of its parts, the span of the source's
 * tensors it holds whole (the tensors a tensor-parallel split leaves
 * replicated; a shard holds part of a tensor), at least TC_VIEW_PART_MIN
 * bytes, in increasing dst.  Without the source's table (`src` NULL: not
 * held here) every part.  *out: tc__malloc'd, as parts are (NULL and 0
 * when none or on OOM). */
void tc__view_parts_lead(const struct tc__xfer_part *parts, uint32_t n,
			 const struct tc__table *src,
			 struct tc__xfer_part **out, uint32_t *nout);

/* ---- the progress of a lead fill ---- */

enum {
	TC_GPU_PIPE_FILLING, /* the lead copies; done_to says how far */
	TC_GPU_PIPE_DONE,    /* the lead's whole fill is on its GPU */
	TC_GPU_PIPE_FAILED,  /* the lead failed or gave up: copy nothing */
};

/*
 * The lead's side of a pipelined view fill.  The lead's worker fills its
 * first ranges (`lead`, in order) before anything else and moves done_to
 * to the end of each as it completes on the device; a follower's worker
 * copies a range of the lead's byte space once done_to has passed it (or
 * the state is DONE), holding `copying` meanwhile.  A lead that fails
 * waits for copying to reach 0 before its allocation goes; once its fill
 * is done, its replica is leased for the followers still running (held,
 * on the loop).  Invariant: state only leaves FILLING; done_to only
 * grows; mem is valid (dptr != 0) whenever done_to > 0 or state DONE.
 */
struct tc__gpu_pipe {
	pthread_mutex_t lock;
	pthread_cond_t cond;	/* done_to, state and copying changes */
	int refs;		/* the lead's job and each follower's */
	int state;		/* TC_GPU_PIPE_* */
	uint64_t done_to;	/* first ranges ending at or before it are
				   complete on the lead's GPU */
	uint64_t progress_ns;	/* when done_to last moved (or the pipe was
				   made) */
	int copying;		/* followers copying from mem now */
	struct tc__gpu_mem mem; /* the lead's allocation (borrowed) */
	/* Set when made, read-only after. */
	struct tc__xfer_part *lead;   /* owned: the first ranges, as parts
					 (dst_off: the lead's byte space,
					 src_off: the source's) */
	struct tc__xfer_range *first; /* owned: the same, as ranges */
	uint32_t nlead;
	/* Loop thread only. */
	int followers; /* follower jobs whose done() has not run */
	bool followed; /* some fill has followed it */
	void *held;    /* the lead's replica, leased for them, or NULL */
};

/* A pipe over `lead` (taken: freed with the pipe; may be NULL with
 * nlead 0), FILLING, one reference.  Returns 0 or -ENOMEM (lead freed). */
int tc__gpu_pipe_new(struct tc__xfer_part *lead, uint32_t nlead,
		     struct tc__gpu_pipe **out);
void tc__gpu_pipe_get(struct tc__gpu_pipe *p);
/* Drop a reference; the last frees it.  NULL is a no-op. */
void tc__gpu_pipe_put(struct tc__gpu_pipe *p);
/* Still FILLING: a new follower may wait on it. */
bool tc__gpu_pipe_live(struct tc__gpu_pipe *p);

/* The lead's worker: its first ranges up to `done_to` are complete in
 * `mem` (nothing once the pipe has left FILLING). */
void tc__gpu_pipe_publish(struct tc__gpu_pipe *p, const struct tc__gpu_mem *mem,
			  uint64_t done_to);
/* The lead's worker: its fill is over with `rc` (0: everything is in
 * `mem`).  On failure, returns once no follower copies any more, so the
 * allocation may go.  Nothing once the pipe has left FILLING. */
void tc__gpu_pipe_end(struct tc__gpu_pipe *p, int rc,
		      const struct tc__gpu_mem *mem);
/* A follower's worker: wait until [off, off + len) of the lead's byte
 * space is complete, then *mem is the lead's allocation and the caller
 * copies, then calls tc__gpu_pipe_copied.  Returns 0, -ECANCELED (the
 * lead failed) or -ETIMEDOUT (the lead completed no range for stall_ms);
 * then the caller copies nothing from it. */
int tc__gpu_pipe_wait(struct tc__gpu_pipe *p, uint64_t off, uint64_t len,
		      uint64_t stall_ms, struct tc__gpu_mem *mem);
void tc__gpu_pipe_copied(struct tc__gpu_pipe *p);

#endif /* TC_GPU_PARTS_H */
