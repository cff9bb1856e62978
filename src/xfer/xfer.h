/*
 * xfer.h - one transfer: an artifact's byte space from a source to a
 * sink, run on the calling (worker) thread.
 *
 * Sources: safetensors files laid out as an artifact (the chunk digests
 * are computed on the way), host memory (pinned or not), a GPU
 * allocation on the sink's device, or one on another device (a sibling
 * GPU's replica: a peer copy, src/gpu/peer.c).  Sinks: host memory (a writable
 * memfd mapping, or a caller's buffer) or a GPU allocation, which the transfer
 * makes when it is still empty and whose tail past the byte space it zeroes
 * (clients see only what the artifact says), or a file written with pwrite,
 * or a copy on disk in tcast's native layout (a temporary of format.h,
 * written by several threads; its commit is the caller's, once the id is
 * known).  From host memory or a GPU the chunk digests may be computed on
 * the way too (`chunks`), so a put's bytes are read once to be hashed and
 * written.  The daemon's disk import, GPU replica fill, binding fill, the
 * shared-disk and spill copies of puts and evictions, and the host copy
 * of an artifact held on GPUs only are each one call; a peer module gets
 * the same engines without knowing the daemon.
 *
 * Pairs: FILES -> HOST, GPU (a range plan: GPU only); HOST -> HOST, GPU,
 * DISK; GPU, PEER -> HOST, GPU, DISK.  Not FILES -> DISK (the GPU loader's
 * tee writes a copy of what it reads: gpu_loader.h).
 *
 * Part of src/xfer (uses common, net, format, gpu): nothing here knows
 * artifacts, connections or budgets.  libtcast does not link src/xfer
 * (the layering and its io_uring dependency): a client's put writes its
 * own tensors into the memory the daemon made, and an export copies the
 * attached artifact's memfd to a file (docs/design.md says why neither
 * needs an engine of its own).
 */
#ifndef TC_XFER_H
#define TC_XFER_H

#include <stdbool.h>
#include <stdint.h>

#include "common/hash.h"
#include "format/format.h"
#include "gpu/vmm.h"
#include "gpu_loader.h"
#include "loader.h"

enum tc__xfer_src {
	TC_XFER_FROM_FILES, /* files: every tensor, read and hashed */
	TC_XFER_FROM_HOST,  /* host: `bytes` bytes of host memory */
	TC_XFER_FROM_GPU,   /* gpu: `bytes` bytes on the sink's device */
	TC_XFER_FROM_PEER,  /* gpu: `bytes` bytes of an allocation of another
			       device (gpu_src->device), mapped here */
};

enum tc__xfer_sink {
	TC_XFER_TO_HOST, /* host_dst: writable, zero-filled, >= bytes; or
			    host_fd, a file (memfd) >= bytes long */
	TC_XFER_TO_GPU,	 /* gpu_dst, allocated here when empty */
	TC_XFER_TO_DISK, /* disk_dst: a native temporary of `bytes` */
};

/* A range of a GPU sink copied from another GPU's allocation that holds
 * the same bytes (a sibling GPU's replica of an artifact sharing them: a
 * tensor-parallel rank's view holds the replicated tensors every rank's
 * view holds) instead of from the transfer's host source. */
struct tc__xfer_part {
	uint64_t dst_off;	       /* in the sink's byte space */
	uint64_t src_off;	       /* in `src` */
	uint64_t len;		       /* bytes */
	const struct tc__gpu_mem *src; /* borrowed: another device's */
	/* NULL: `src` holds these bytes now.  Else `src` is still being
	 * filled (another transfer running beside this one): the part is
	 * copied last, once x->part_wait(gate, part) says the bytes are
	 * there (and *src is then valid), or from the host source when it
	 * says they will not be. */
	void *gate;
};

/* A range of a sink's byte space. */
struct tc__xfer_range {
	uint64_t off;
	uint64_t len;
};

/*
 * One transfer.  The caller fills the source, the sink and the options;
 * tc__xfer_run fills the results.  Nothing is owned: every pointer is
 * borrowed for the call, and a GPU allocation made here belongs to the
 * caller whatever the result (tc__gpu_release frees it).
 */
struct tc__xfer {
	enum tc__xfer_src from;
	const struct tc__source *files;	   /* FILES: laid out */
	const struct tc__load_plan *plan;  /* FILES, TO_GPU, optional: only
					      these runs of `files`, into a
					      byte space of files->table's
					      size (a view: view_ranges.h) */
	const void *host;		   /* HOST */
	const struct tc__gpu_pinning *pin; /* HOST, optional: `host` pinned
					      (copied at the pinned rate) */
	bool staged; /* HOST, unpinned: through the pinned staging ring
			(large copies), else one direct write */
	const struct tc__xfer_part *parts; /* HOST -> GPU, optional: these
					      ranges (increasing dst_off, not
					      overlapping, inside `bytes`)
					      peer-copied from their GPUs,
					      only the rest from `host` */
	uint32_t nparts;
	/* HOST -> GPU, optional: these ranges of the sink (increasing, not
	 * overlapping, inside `bytes`, none holding a gated part) are filled
	 * before anything else, in order, and first_done(arg, x, k) is
	 * called once range k is complete on the device: other transfers
	 * copying from this sink wait for that (gated parts of theirs). */
	const struct tc__xfer_range *first;
	uint32_t nfirst;
	void (*first_done)(void *arg, const struct tc__xfer *x, uint32_t k);
	void *first_arg;
	/* Gated parts (part->gate): block until the part's bytes are in
	 * its source; 0: copy them now (part_end(gate) follows the copy),
	 * < 0: fill the part from the host source instead. */
	int (*part_wait)(void *gate, const struct tc__xfer_part *p);
	void (*part_end)(void *gate);
	const struct tc__gpu_mem *gpu_src; /* GPU, PEER */
	uint64_t bytes; /* HOST, GPU, PEER: bytes to move (FILES: the
			   table's) */

	enum tc__xfer_sink to;
	void *host_dst;		     /* TO_HOST (or NULL with host_fd) */
	int host_fd;		     /* TO_HOST, host_dst NULL: the sink's
					file, written with pwrite */
	struct tc__gpu_mem *gpu_dst; /* TO_GPU */
	int ordinal;		     /* TO_GPU: the device */
	uint64_t alloc_bytes;	     /* TO_GPU, gpu_dst empty: its size */
	bool keep_tail; /* TO_GPU: leave the bytes past `bytes` as they are
			   (a partial copy the caller completes), not
			   zeroed */
	struct tc__native_tmp *disk_dst; /* TO_DISK: begun (format.h) */
	int writers; /* TO_DISK: threads writing (the disk's queue depth) */

	int nthreads;			      /* reader or copy threads */
	const struct tc__gpu_load_opts *load; /* FILES -> GPU: the loader's
						 knobs (NULL: defaults) */
	struct tc__digest *chunks;	      /* tc__chunk_count(bytes) digests
						 out: FILES always; HOST, GPU,
						 PEER -> HOST (by fd), DISK when
						 not NULL (hashed on the way) */
	struct tc__load_progress *prog;	      /* FILES, optional */

	/* Results. */
	struct tc__gpu_load_stats stats; /* FILES -> GPU */
	double alloc_seconds;		 /* TO_GPU: allocation time */
	uint64_t part_bytes;		 /* bytes copied from `parts` */
	uint64_t gated_bytes;		 /* of which from gated parts */
	uint64_t host_bytes; /* HOST -> GPU: bytes copied from `host` */
	bool alloc_oom;	     /* the allocation ran out of memory */
	int sink_rc; /* HOST, GPU, PEER -> a file or DISK: the writes' result
			(0 or -errno); a failed write stops the writes, not
			the hash, so the caller still learns the id */
};

/*
 * Run `x`.  Returns 0, or a negative code with `err` naming what failed:
 * -errno or TC_EBADFILE from reads, TC_ECUDA, TC_ENODEV, TC_EINVAL, -ENOMEM,
 * -ECANCELED (x->prog's cancel), TC_ENOTSUP for a pair of source and sink
 * not implemented (FILES -> DISK, a plan to host memory).  A sink's failed
 * write is x->sink_rc, not the result (with err set when the result is
 * 0): the hash went on.
 */
int tc__xfer_run(struct tc__xfer *x, char *err, size_t errlen);

#endif /* TC_XFER_H */
