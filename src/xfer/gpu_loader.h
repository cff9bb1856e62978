/*
 * gpu_loader.h - safetensors sources straight into GPU memory.
 *
 * The artifact's byte space is processed one 4 MiB digest chunk at a time.
 * Each reader thread owns a small ring of pinned staging buffers and one
 * stream: it reads a chunk's tensor bytes into a free buffer (pread from
 * the page cache, or O_DIRECT for cold files) and queues one host-to-device
 * copy of it; the buffer is reused once the copy's event has fired.  So
 * disk, CPU and PCIe work overlap, and staging memory is threads x depth x
 * 4 MiB whatever the model's size.  The chunks are hashed on the GPU once
 * all are in (src/gpu/kernels/chunk_hash.cu); where those kernels cannot
 * run, each thread hashes its chunk while it is in cache, before the copy.
 *
 * Part of src/xfer (uses common, net, format, gpu): the engines that move
 * bytes for the daemon and, later, the peer module; nothing here knows
 * artifacts, connections or budgets.
 */
#ifndef TC_GPU_LOADER_H
#define TC_GPU_LOADER_H

#include <stdint.h>

#include "common/hash.h"
#include "format/format.h"
#include "gpu/vmm.h"
#include "loader.h"

/* How the loader reads files. */
enum tc__io_engine {
	TC_IO_AUTO = 0,	 /* O_DIRECT reads through io_uring where the kernel
			    allows it, else pread; page-cached reads pread,
			    short ones (< 64 KiB) copied from a mapping */
	TC_IO_PREAD = 1, /* one pread at a time per thread */
	TC_IO_URING = 2, /* io_uring or fail (benchmarks, tests) */
	TC_IO_MMAP = 3,	 /* page-cached files copied from a read-only shared
			    mapping (a file that shrinks under it is caught,
			    SIGBUS included: TC_EBADFILE); others as auto */
};

struct tc__gpu_load_opts {
	int nthreads; /* reader threads (each with its own stream) */
	int depth;    /* staging buffers per thread (>= 2 to overlap) */
	int direct;   /* 1: O_DIRECT reads, 0: buffered, -1: per file, direct
			 when the file is not in the page cache */
	int stage_chunks;   /* digest chunks per staging buffer and copy;
			       0 means 1 (4 MiB: on an H200 4 MiB
			       units ran at 47.8 GB/s, 16 MiB at 35) */
	uint64_t copy_unit; /* bytes per staging buffer when copying host
			       memory (tc__gpu_copy_host_opts); 0: 4 MiB */
	int io;		    /* enum tc__io_engine */
	/* Optional: each unit, once read, is also written here at its
	 * offset (a durable import's shared-disk copy, from the same read:
	 * the staging buffer is page-aligned, so the bulk goes O_DIRECT
	 * while the unit's DMA runs).  NULL: none.  A failed write fails
	 * the load. */
	struct tc__native_tmp *tee;
};

struct tc__gpu_load_stats {
	uint64_t bytes;	       /* artifact bytes copied to the GPU */
	uint64_t direct_bytes; /* of which read with O_DIRECT */
	double seconds;	       /* wall time of the whole load */
	uint64_t uring_bytes;  /* of `bytes`, read through io_uring */
	int uring_errno;       /* why io_uring was not used (0: it was, or
				  it was not asked for) */
	uint64_t tee_bytes;    /* of `bytes`, also written to o->tee */
	uint64_t read_bytes;   /* asked of the files: the tensors' (or the
				  runs') bytes, O_DIRECT reads rounded out
				  to the file's alignment */
	uint64_t reads;	       /* read calls (pread, or queued on io_uring) */
	bool gpu_hash;	       /* the chunks were hashed on the GPU */
	/* Where the wall time went, to tell a slow source from a slow bus:
	 * until the first copy was queued; the readers' seconds in reads
	 * (summed over threads) and waiting for a staging buffer's copy to
	 * end (summed: a bus-bound load waits, a read-bound one does not);
	 * and after the last worker's copies ended (digests, teardown). */
	double first_copy_seconds;
	double read_thread_seconds;
	double wait_thread_seconds;
	double tail_seconds;
};

/*
 * Load every tensor of `src` (laid out by tc__table_layout) into `dst`,
 * which must hold at least src->table.total_bytes, and store the chunk
 * digests in `chunks` (tc__chunk_count(total) entries).  `prog` may be NULL.
 * Returns 0, or a negative code with `err` naming the file, tensor or CUDA
 * call: -errno from reads, TC_EBADFILE (a file shrank), TC_ECUDA,
 * TC_ENODEV, -ENOMEM, -ECANCELED.  Nothing leaks on any path.
 */
int tc__gpu_load_source(const struct tc__source *src,
			const struct tc__gpu_mem *dst,
			const struct tc__gpu_load_opts *o,
			struct tc__digest *chunks,
			struct tc__load_progress *prog,
			struct tc__gpu_load_stats *stats, char *err,
			size_t errlen);

/*
 * The same for a range plan of `src` (loader.h): plan->size bytes of `dst`
 * filled, only the runs' bytes read, gaps zeroed, and the digests of that
 * byte space in `chunks` (tc__chunk_count(plan->size) entries).  This is
 * how a view of a file reaches a GPU at the loader's rate: its runs are
 * read by the same threads into the same pinned staging and copied by the
 * same streams as a whole file.  Short runs (a column shard: one piece per
 * row) are read piece by piece into staging, packed, so each staging unit
 * still crosses the bus as one large copy; see tc__xfer_view_plan.  Besides
 * the errors above, TC_EINVAL for a plan whose runs are empty, overlap,
 * end past plan->size or name no file.
 */
int tc__gpu_load_plan(const struct tc__source *src,
		      const struct tc__load_plan *plan,
		      const struct tc__gpu_mem *dst,
		      const struct tc__gpu_load_opts *o,
		      struct tc__digest *chunks, struct tc__load_progress *prog,
		      struct tc__gpu_load_stats *stats, char *err,
		      size_t errlen);

/*
 * Copy `n` bytes of host memory that is not pinned (a sealed memfd
 * mapping, say) to byte 0 of `dst` through staging rings: up to 8 threads
 * (one per 512 MiB, at least two; `nthreads` is a ceiling) each memcpy 4
 * MiB pieces into their pinned buffers and queue the DMA.  Pinning the
 * source first costs more than this copy (the driver pins at 17-35 GB/s
 * and holds a lock that stalls every other driver call meanwhile).
 * Returns 0, TC_EINVAL, TC_ECUDA, TC_ENODEV or -errno with `err`.
 */
int tc__gpu_copy_host(const void *src, uint64_t n,
		      const struct tc__gpu_mem *dst, int nthreads, char *err,
		      size_t errlen);

/* The same with every knob given (benchmarks): o->nthreads threads exactly,
 * o->depth buffers of o->copy_unit bytes each. */
int tc__gpu_copy_host_opts(const void *src, uint64_t n,
			   const struct tc__gpu_mem *dst,
			   const struct tc__gpu_load_opts *o, char *err,
			   size_t errlen);

/* Host memory pinned by tc__gpu_pin: `nsegs` registrations of `seg` bytes
 * (the last may be shorter), contiguous from `base`, `bytes` in all.
 * Zeroed: nothing pinned. */
struct tc__gpu_pinning {
	int device; /* the ordinal they were registered through */
	uint8_t *base;
	uint64_t seg;
	uint64_t nsegs;
	uint64_t bytes;
};

/* Pin `n` bytes at page-aligned `p` read-only, in pieces of `piece` bytes
 * (a page multiple): each piece holds the driver's lock only briefly, so
 * other driver calls in the process interleave.  Returns 0, or TC_EINVAL,
 * TC_ECUDA (RLIMIT_MEMLOCK, a driver without read-only registration),
 * TC_ENODEV with `err` and nothing left pinned. */
int tc__gpu_pin(int ordinal, void *p, uint64_t n, uint64_t piece,
		struct tc__gpu_pinning *pin, char *err, size_t errlen);

/* The same a burst at a time: pin about `budget` more bytes of the range
 * `pin` has begun (zeroed: begin it).  Returns 1 once all `n` bytes are
 * pinned, 0 while some remain, or an error as tc__gpu_pin (with nothing
 * left pinned). */
int tc__gpu_pin_more(struct tc__gpu_pinning *pin, int ordinal, void *p,
		     uint64_t n, uint64_t piece, uint64_t budget, char *err,
		     size_t errlen);

/* Copy the first `n` bytes of pinned memory to byte 0 of `dst` at the
 * pinned rate (one copy per piece, over a few streams).  Returns 0,
 * TC_EINVAL, TC_ECUDA or TC_ENODEV with `err`. */
int tc__gpu_copy_pinned(const struct tc__gpu_pinning *pin, uint64_t n,
			const struct tc__gpu_mem *dst, char *err,
			size_t errlen);

/* Chunk digests (tc__chunk_count(n) entries into `chunks`) of the first
 * `n` bytes of a GPU allocation, as a host import would compute them: by
 * the chunk-hash kernels on that GPU (tc__gpu_hash_chunks_dev); where they
 * cannot run (or with TCAST_GPU_HASH_HOST set, to compare), `nthreads`
 * threads copy 4 MiB chunks into pinned staging and hash them, the next
 * chunk's copy overlapping this one's hash.  Returns 0, TC_EINVAL,
 * TC_ECUDA or TC_ENODEV with `err`. */
int tc__gpu_hash_chunks(const struct tc__gpu_mem *src, uint64_t n, int nthreads,
			struct tc__digest *chunks, char *err, size_t errlen);

/* Where tc__gpu_read_out puts GPU bytes: host memory (`host`, copied
 * straight into it), else a file written with pwrite (`fd` >= 0) or a
 * native temporary (`w`, tc__native_write_data), each chunk through
 * pinned staging.  Offsets are the byte space's. */
struct tc__gpu_out {
	uint8_t *host;		  /* n bytes, or NULL */
	int fd;			  /* host NULL, w NULL: this file */
	struct tc__native_tmp *w; /* host NULL: this temporary */
};

/* The first `n` bytes of a GPU allocation to `out`, 4 MiB chunks on
 * `nthreads` threads (the next chunk's copy overlaps this one's hash and
 * write), hashed on the way when `chunks` is not NULL.  Returns the
 * copies' and hashing's result (0, TC_EINVAL, TC_ECUDA or TC_ENODEV with
 * `err`); *wrc gets the writes' (0 or -errno: a failed write stops the
 * writes, not the hashing). */
int tc__gpu_read_out(const struct tc__gpu_mem *src, uint64_t n, int nthreads,
		     const struct tc__gpu_out *out, struct tc__digest *chunks,
		     int *wrc, char *err, size_t errlen);

/* Unpin all of `pin` and zero it (~6 ms per GiB).  Zeroed: a no-op. */
void tc__gpu_unpin(struct tc__gpu_pinning *pin);

/* Unregister and unmap the pinned staging buffers kept between loads (at
 * daemon exit, with no load or fill running). */
void tc__gpu_stage_pool_drain(void);

#endif /* TC_GPU_LOADER_H */
