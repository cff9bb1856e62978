/*
 * vmm.h - GPU memory for the rest of tcast: devices, exportable VMM
 * allocations shared as POSIX file descriptors, copies, streams, events and
 * pinned host registrations.
 *
 * This is the only GPU interface the daemon, libtcast and the CLI use, and
 * it has no CUDA types: device addresses are uint64_t, streams and events
 * are opaque.  Underneath, the CUDA driver is dlopen()ed on first use
 * (cu.h); with no driver every call returns TC_ENODEV, so callers need no
 * #ifdef.  Work runs in each device's primary context, the one the CUDA
 * runtime (and so torch) uses, and every call restores the calling thread's
 * current context before it returns.
 *
 * Errors: 0 is success; TC_ENODEV (no usable driver), TC_EDEVICE (bad
 * ordinal or unknown UUID), TC_ENOTSUP (the GPU cannot do VMM with POSIX
 * fds), TC_EINVAL (bad argument) or TC_ECUDA (a driver call failed; the raw
 * CUresult is in tc__gpu_last_cuda_error()).  Every function that can fail
 * takes `char *err, size_t errlen` (err may be NULL) and writes the reason
 * there, in the house wording, e.g.
 *   cannot allocate 2097152 bytes on GPU 0: cuMemCreate:
 *   CUDA_ERROR_OUT_OF_MEMORY (out of memory)
 *
 * Ownership (docs/gpu.md has the long form): an allocation's memory lives
 * until every handle, exported fd and mapping of it is gone, in every
 * process.  A process that imported it keeps it alive even if the exporter
 * exits.  So the daemon's accounting must count what clients still map.
 *
 * All functions are thread-safe.  They are not usable in a child forked
 * after the driver was initialised (CUDA forbids it); there they return
 * TC_ENODEV.
 */
#ifndef TC_GPU_VMM_H
#define TC_GPU_VMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "device.h"

/* Flags for tc__gpu_alloc, tc__gpu_import and tc__gpu_host_register.
 * TC_GPU_READ_ONLY: import maps PROT_READ; host_register is told the range
 * is mapped read-only.  TC_GPU_RDMA: alloc asks for gpuDirectRDMACapable
 * memory (so a NIC may register it later). */
#define TC_GPU_READ_ONLY 0x1
#define TC_GPU_RDMA	 0x2
/* tc__gpu_import only: return once mapped and let a thread grant this
 * device's access (cuMemSetAccess: ~0.6 ms of a 16 GiB import on an H100,
 * half a fresh process's attach); tc__gpu_access_wait before any device
 * reads it.  The caller meanwhile builds what needs only the address. */
#define TC_GPU_ACCESS_LATER 0x4

/* Flags for tc__gpu_event_create. */
#define TC_GPU_EVENT_TIMING 0x1 /* keep timestamps (else cheaper sync-only) */

/*
 * One VMM allocation mapped into this process.
 *
 * Made by tc__gpu_alloc (the owner: mapped read-write, fd exported) or by
 * tc__gpu_import (a borrower: mapped with the access it asked for, fd -1).
 * Caller-allocated; tc__gpu_mem_init() puts it in the empty state and
 * tc__gpu_release() returns it there.
 *
 * Invariant: either empty (dptr == 0, handle == 0, fd == -1, size == 0) or
 * complete (dptr != 0, handle != 0, size a non-zero multiple of the device's
 * minimum granularity, [dptr, dptr + size) mapped with the access in flags).
 */
struct tc__gpu_access;

struct tc__gpu_mem {
	uint64_t dptr;	 /* device address of byte 0 of the mapping */
	uint64_t size;	 /* bytes mapped; the requested size rounded up */
	uint64_t handle; /* driver allocation handle: private to src/gpu */
	int device;	 /* ordinal in this process */
	int fd;		 /* owned: the exported POSIX fd, or -1.  Send it
			    (SCM_RIGHTS dups it), never close it yourself:
			    tc__gpu_release() does */
	unsigned flags;	 /* TC_GPU_* it was made with */
	struct tc__gpu_access *access; /* owned: the access still being
					  granted (TC_GPU_ACCESS_LATER), or
					  NULL */
};

/* ---- driver and devices ------------------------------------------------ */

/* Load the driver (once per process).  Returns 0, TC_ENODEV (no driver, no
 * device, or forked after init), TC_ECUDA (enumeration failed) or
 * -ENOMEM; the result is sticky for the process.  Every other function calls it
 * first, so calling it is only needed to get the reason early. */
int tc__gpu_init(char *err, size_t errlen);

/* Whether this process has not loaded the CUDA driver at all (neither
 * tcast nor anyone else): naming a GPU by ordinal then spares a cuInit
 * (tc__gpu_ordinal_ref), and the environment is what any later cuInit
 * will read. */
bool tc__gpu_driver_untouched(void);

/* Number of visible GPUs (> 0), or TC_ENODEV / TC_ECUDA. */
int tc__gpu_device_count(char *err, size_t errlen);

/* Driver version as CUDA encodes it (12080 = 12.8) in *version, and the
 * library path that was loaded in *path (borrowed, static, may be NULL).
 * Returns 0, TC_ENODEV or TC_ECUDA. */
int tc__gpu_driver_version(int *version, const char **path, char *err,
			   size_t errlen);

/* Copy device `ordinal`'s description into *out.  Returns 0, TC_ENODEV,
 * TC_ECUDA or TC_EDEVICE. */
int tc__gpu_device_info(int ordinal, struct tc__gpu_info *out, char *err,
			size_t errlen);

/* Ordinal, in this process, of the GPU with this UUID: >= 0, or TC_EDEVICE
 * (not visible here), TC_ENODEV or TC_ECUDA. */
int tc__gpu_device_find(const uint8_t uuid[TC_GPU_UUID_BYTES], char *err,
			size_t errlen);

/* VMM granularity of device `ordinal` for exportable pinned memory: the
 * minimum (every size and address is a multiple of it; 2 MiB on current
 * GPUs) and the recommended one (either pointer may be NULL).  Creates the
 * device's primary context if needed.  Returns 0, TC_ENOTSUP (no VMM),
 * TC_EDEVICE, TC_ENODEV or TC_ECUDA. */
int tc__gpu_granularity(int ordinal, uint64_t *min_bytes, uint64_t *rec_bytes,
			char *err, size_t errlen);

/* Free and total device memory as the driver reports them.  Returns 0,
 * TC_EDEVICE, TC_ENODEV or TC_ECUDA. */
int tc__gpu_mem_info(int ordinal, uint64_t *free_bytes, uint64_t *total_bytes,
		     char *err, size_t errlen);

/* ---- allocations ------------------------------------------------------- */

/* Put *m in the empty state (fd = -1). */
void tc__gpu_mem_init(struct tc__gpu_mem *m);

/* Allocate at least `size` bytes on device `ordinal` (rounded up to the
 * minimum granularity), exportable as a POSIX fd, export it once into
 * out->fd and map it read-write for this process.  flags: 0 or
 * TC_GPU_RDMA.  On success *out is complete and owned by the caller, who
 * frees it with tc__gpu_release(); on failure *out is empty and nothing
 * leaks.  Returns 0, TC_EINVAL (size 0 or too large, unknown flag),
 * TC_EDEVICE, TC_ENOTSUP (no VMM or no POSIX-fd handles on this GPU),
 * TC_ENODEV or TC_ECUDA (CUDA_ERROR_OUT_OF_MEMORY when the GPU is full:
 * see tc__gpu_last_error_oom()). */
int tc__gpu_alloc(int ordinal, uint64_t size, unsigned flags,
		  struct tc__gpu_mem *out, char *err, size_t errlen);

/* Import an allocation another process (or this one) exported, and map it
 * on device `ordinal` (find it with tc__gpu_device_find: ordinals differ
 * between processes).  fd is borrowed: the driver takes its own reference,
 * so the caller may close fd as soon as this returns.  size is the
 * exporter's out->size (a multiple of the granularity; the driver cannot
 * report it).  flags: TC_GPU_READ_ONLY maps it PROT_READ, so device writes
 * through this mapping fail (copies return TC_ECUDA); without it the
 * mapping is read-write.  Read-only is chosen by the importer: it catches
 * bugs, it is not a security boundary.  On success *out is complete (fd
 * -1) and owned by the caller (tc__gpu_release); on failure it is empty.
 * Returns 0, TC_EINVAL (bad fd, size or flags), TC_EDEVICE, TC_ENOTSUP,
 * TC_ENODEV or TC_ECUDA (e.g. the fd is not a CUDA allocation). */
int tc__gpu_import(int ordinal, int fd, uint64_t size, unsigned flags,
		   struct tc__gpu_mem *out, char *err, size_t errlen);

/* Wait for the access grant of an import made with TC_GPU_ACCESS_LATER
 * (at once for any other m).  Returns 0, or the grant's TC_ECUDA or
 * TC_EDEVICE: the mapping then stays unreadable, and m still has to be
 * released. */
int tc__gpu_access_wait(struct tc__gpu_mem *m, char *err, size_t errlen);

/* Export one more POSIX fd for m's allocation into *fd (owned by the
 * caller, who closes it; close-on-exec is not guaranteed).  *fd is -1 on
 * failure.  Returns 0, TC_EINVAL (m empty), TC_ENODEV or TC_ECUDA. */
int tc__gpu_export(const struct tc__gpu_mem *m, int *fd, char *err,
		   size_t errlen);

/* Unmap m, free its address range, release its handle and close its fd,
 * then leave *m empty.  An empty m is a no-op.  Driver failures (a lost
 * GPU) are logged and the rest of the teardown still runs, so host
 * resources never leak. */
void tc__gpu_release(struct tc__gpu_mem *m);

/* tc__gpu_release(m) on this process's release thread, and *m empty at
 * once.  Releasing an 8 GiB allocation takes 5-7 ms of driver time on an
 * H200 host (cuMemRelease): a thread that serves others (the daemon's
 * loop) hands it over instead of making everyone wait.  Memory is back on
 * the GPU a few ms later: tc__gpu_alloc that runs out of memory waits for
 * these releases and tries once more.  Without a thread (a forked child,
 * out of memory) it releases here.  Any thread. */
void tc__gpu_release_later(struct tc__gpu_mem *m);

/* Wait until every release handed to tc__gpu_release_later has ended.
 * Returns how many were pending when called. */
int tc__gpu_release_wait(void);

/* ---- streams and events ------------------------------------------------ */

struct tc__gpu_stream; /* opaque */
struct tc__gpu_event;  /* opaque */

/* Create a non-blocking stream on device `ordinal`.  *out is owned by the
 * caller (tc__gpu_stream_free), NULL on failure.  Returns 0, TC_EDEVICE,
 * TC_ENODEV, TC_ECUDA or -ENOMEM. */
int tc__gpu_stream_create(int ordinal, struct tc__gpu_stream **out, char *err,
			  size_t errlen);

/* Wrap a stream someone else owns (a torch stream's cuda_stream value; 1
 * and 2 are DLPack's legacy and per-thread default streams, 0 the NULL
 * stream).  tc__gpu_stream_free() frees the wrapper, never the stream.
 * Returns 0, TC_EDEVICE, TC_ENODEV or -ENOMEM. */
int tc__gpu_stream_wrap(int ordinal, uintptr_t handle,
			struct tc__gpu_stream **out, char *err, size_t errlen);

/* The raw CUstream value (for DLPack's stream argument). */
uintptr_t tc__gpu_stream_handle(const struct tc__gpu_stream *s);

/* Wait until all work queued on s is done.  Returns 0, TC_ENODEV or
 * TC_ECUDA. */
int tc__gpu_stream_sync(struct tc__gpu_stream *s, char *err, size_t errlen);

/* Make future work on s wait for e (cross-stream ordering, DLPack's
 * producer side).  Returns 0, TC_ENODEV or TC_ECUDA. */
int tc__gpu_stream_wait_event(struct tc__gpu_stream *s, struct tc__gpu_event *e,
			      char *err, size_t errlen);

/* Wait until all work queued on device `ordinal` in this process (every
 * stream of its primary context, torch's included) is done: what must
 * precede unmapping memory that kernels queued elsewhere may still use.
 * Returns 0, TC_EDEVICE, TC_ENODEV or TC_ECUDA (also a sticky error of an
 * earlier launch). */
int tc__gpu_device_sync(int ordinal, char *err, size_t errlen);

/* Destroy a created stream (after its work completes) or free a wrapper.
 * NULL is a no-op. */
void tc__gpu_stream_free(struct tc__gpu_stream *s);

/* Create an event on device `ordinal`; flags 0 or TC_GPU_EVENT_TIMING.
 * *out is owned by the caller (tc__gpu_event_free).  Returns 0, TC_EINVAL,
 * TC_EDEVICE, TC_ENODEV, TC_ECUDA or -ENOMEM. */
int tc__gpu_event_create(int ordinal, unsigned flags,
			 struct tc__gpu_event **out, char *err, size_t errlen);

/* Record e on s (NULL: the NULL stream).  s must be on e's device.
 * Returns 0, TC_EINVAL, TC_ENODEV or TC_ECUDA. */
int tc__gpu_event_record(struct tc__gpu_event *e, struct tc__gpu_stream *s,
			 char *err, size_t errlen);

/* Block until e completes.  Returns 0, TC_ENODEV or TC_ECUDA. */
int tc__gpu_event_sync(struct tc__gpu_event *e, char *err, size_t errlen);

/* *done = whether e has completed.  Returns 0, TC_ENODEV or TC_ECUDA. */
int tc__gpu_event_query(struct tc__gpu_event *e, bool *done, char *err,
			size_t errlen);

/* Milliseconds between two completed timing events.  Returns 0, TC_EINVAL
 * (not timing events), TC_ENODEV or TC_ECUDA. */
int tc__gpu_event_elapsed_ms(struct tc__gpu_event *start,
			     struct tc__gpu_event *end, float *ms, char *err,
			     size_t errlen);

/* NULL is a no-op. */
void tc__gpu_event_free(struct tc__gpu_event *e);

/* ---- copies ------------------------------------------------------------ */

/*
 * Copies on device `ordinal`.  With s == NULL they are synchronous; with a
 * stream they are queued on it and the host buffer must stay valid (and
 * for real overlap be pinned: tc__gpu_host_register) until the stream is
 * synchronised.  s, when given, must belong to `ordinal` (TC_EINVAL).
 * Writing through a read-only mapping fails with TC_ECUDA (the driver says
 * CUDA_ERROR_INVALID_VALUE) and changes nothing.  n == 0 is a no-op.
 * Each returns 0, TC_EINVAL, TC_EDEVICE, TC_ENODEV or TC_ECUDA.
 */
int tc__gpu_htod(int ordinal, uint64_t dst, const void *src, uint64_t n,
		 struct tc__gpu_stream *s, char *err, size_t errlen);
int tc__gpu_dtoh(int ordinal, void *dst, uint64_t src, uint64_t n,
		 struct tc__gpu_stream *s, char *err, size_t errlen);
int tc__gpu_dtod(int ordinal, uint64_t dst, uint64_t src, uint64_t n,
		 struct tc__gpu_stream *s, char *err, size_t errlen);
int tc__gpu_memset8(int ordinal, uint64_t dst, uint8_t value, uint64_t n,
		    struct tc__gpu_stream *s, char *err, size_t errlen);

/* Bounds-checked forms on an allocation: [off, off + n) must lie inside m
 * (TC_EINVAL otherwise).  Same returns as above. */
int tc__gpu_mem_write(const struct tc__gpu_mem *m, uint64_t off,
		      const void *src, uint64_t n, struct tc__gpu_stream *s,
		      char *err, size_t errlen);
int tc__gpu_mem_read(const struct tc__gpu_mem *m, uint64_t off, void *dst,
		     uint64_t n, struct tc__gpu_stream *s, char *err,
		     size_t errlen);

/* ---- copies between GPUs (peer.c) ------------------------------------- */

/* Whether device `dst` reaches device `src`'s memory directly (NVLink or
 * PCIe peer-to-peer; a device reaches itself): 1 or 0, or TC_ENODEV,
 * TC_EDEVICE, TC_ECUDA.  Cached per pair. */
int tc__gpu_can_access_peer(int dst, int src, char *err, size_t errlen);

/* Copy n bytes at `off` of `src` (an allocation of device src->device,
 * mapped in this process) to `doff` of `dst` (an allocation of another
 * device, or the same), by the destination's copy engines: when the pair
 * has a direct link the destination device is granted read access to all
 * of src and the source device read-write access to all of dst (kept:
 * cuMemSetAccess); without one the driver stages the copy through host
 * memory.  With s (a stream of dst's device) it is queued; without, done
 * on return.  Returns 0, TC_EINVAL (a range outside src or dst, a stream
 * of another device), TC_ENODEV, TC_EDEVICE or TC_ECUDA. */
int tc__gpu_peer_copy(const struct tc__gpu_mem *dst, uint64_t doff,
		      const struct tc__gpu_mem *src, uint64_t off, uint64_t n,
		      struct tc__gpu_stream *s, char *err, size_t errlen);

/* ---- strided copies and the view kernel -------------------------------- */

/*
 * Copy `height` rows of `width` bytes on device `ordinal`: row r goes from
 * src + r * spitch to dst + r * dpitch.  Each side is a device address
 * (dst_dev / src_dev) or a host pointer cast to uint64_t.  One
 * cuMemcpy2DAsync when the pitches fit the driver's limit, row by row
 * otherwise.  Synchronous with s == NULL, queued on s otherwise (host
 * memory must then stay valid until s is synchronised).  width or height
 * 0 is a no-op.  Returns 0, TC_EINVAL (a pitch below width), TC_EDEVICE,
 * TC_ENODEV or TC_ECUDA.
 */
int tc__gpu_copy_2d(int ordinal, uint64_t dst, bool dst_dev, uint64_t dpitch,
		    uint64_t src, bool src_dev, uint64_t spitch, uint64_t width,
		    uint64_t height, struct tc__gpu_stream *s, char *err,
		    size_t errlen);

/*
 * Copy `depth` blocks of `height` rows of `width` bytes: row r of block z
 * goes from src + z * sblock + r * spitch to dst + z * dblock + r * dpitch
 * (a slice of a 3D tensor, e.g. some rows and columns of every expert, in
 * one driver call instead of one 2D copy per block).  The driver wants
 * each block stride as a whole number of rows no smaller than the block
 * (sblock = spitch * k, k >= height; the same for dst); other strides, or
 * pitches past the driver's limit, go as one tc__gpu_copy_2d per block.
 * Same sides, stream and returns as tc__gpu_copy_2d.
 */
int tc__gpu_copy_3d(int ordinal, uint64_t dst, bool dst_dev, uint64_t dpitch,
		    uint64_t dblock, uint64_t src, bool src_dev,
		    uint64_t spitch, uint64_t sblock, uint64_t width,
		    uint64_t height, uint64_t depth, struct tc__gpu_stream *s,
		    char *err, size_t errlen);

/* Element kinds of the view kernel: the low byte is the element size. */
#define TC_GPU_KIND_B1	 0x001 /* any 1-byte element, copied */
#define TC_GPU_KIND_B2	 0x002
#define TC_GPU_KIND_B4	 0x004
#define TC_GPU_KIND_B8	 0x008
#define TC_GPU_KIND_F16	 0x102 /* converted when the kinds differ */
#define TC_GPU_KIND_BF16 0x202
#define TC_GPU_KIND_F32	 0x304

/*
 * One launch of the view kernel (src/gpu/kernels/view_permute.cu): output
 * element o (row-major over oshape) is input element sum(idx_d *
 * istride[d]) of the packed input, converted from src_kind to dst_kind
 * (equal kinds: copied; else both among F16, BF16, F32).  The layout is
 * the kernel's parameter block: do not reorder.
 */
struct tc__gpu_permute {
	uint64_t dst;	      /* device address of the output */
	uint64_t src;	      /* device address of the packed input */
	uint64_t n;	      /* output elements */
	uint64_t oshape[16];  /* output shape, ndim entries used */
	uint64_t istride[16]; /* input stride in elements per output dim */
	uint32_t ndim;	      /* 1..16 */
	uint32_t src_kind;    /* TC_GPU_KIND_* */
	uint32_t dst_kind;    /* TC_GPU_KIND_* */
	uint32_t pad;	      /* zero */
};

/* Whether the view kernel loads on device `ordinal` (the PTX is compiled
 * by the driver on first use, once per device and process).  Returns 0,
 * TC_ENOTSUP (the driver refused the PTX: err says why), TC_EDEVICE,
 * TC_ENODEV or TC_ECUDA. */
int tc__gpu_permute_ready(int ordinal, char *err, size_t errlen);

/* Launch it on s (NULL: the NULL stream, and wait).  Returns 0, TC_EINVAL
 * (ndim 0 or above 16, a kind it does not know, a cast between kinds of
 * different families), TC_ENOTSUP, TC_EDEVICE, TC_ENODEV or TC_ECUDA. */
int tc__gpu_permute(int ordinal, const struct tc__gpu_permute *a,
		    struct tc__gpu_stream *s, char *err, size_t errlen);

/* ---- the chunk-hash kernels -------------------------------------------- */

/* The parameter block of tc_b3_leaves / tc_b3_parents
 * (src/gpu/kernels/b3core.h, struct b3_args): do not reorder. */
struct tc__gpu_b3 {
	uint64_t data, size;	  /* the byte space */
	uint64_t chunk0, nchunks; /* the digest chunks of this launch */
	uint64_t cvs, tmp;	  /* scratch, 32 bytes per leaf each */
	uint64_t out;		  /* nchunks digests */
	uint64_t chunk_bytes;	  /* TC_CHUNK_BYTES */
};

/* Whether the chunk-hash kernels load on device `ordinal`.  Returns as
 * tc__gpu_permute_ready. */
int tc__gpu_hash_ready(int ordinal, char *err, size_t errlen);

struct tc__digest;

/*
 * The BLAKE3-256 digest of every TC_CHUNK_BYTES chunk of the first n bytes
 * of m, computed on m's GPU (src/gpu/kernels/chunk_hash.cu): the same
 * digests tc__hash256 gives on the host, at device-memory speed instead of
 * the CPU's.  Work queued on other streams that writes m must be finished
 * (or the NULL stream ordered after it) first.  Takes 64 MiB of scratch
 * device memory for the call.  Returns 0, TC_EINVAL (n beyond m),
 * TC_ENOTSUP (the driver refused the PTX: err says why), TC_EDEVICE,
 * TC_ENODEV or TC_ECUDA (out of device memory for the scratch included).
 */
int tc__gpu_hash_chunks_dev(const struct tc__gpu_mem *m, uint64_t n,
			    struct tc__digest *out, char *err, size_t errlen);

/* Device scratch tc__gpu_hash_chunks_async needs for `nchunks` chunks of
 * at most TC_CHUNK_BYTES (two chaining values per 1 KiB leaf). */
uint64_t tc__gpu_hash_scratch_bytes(uint64_t nchunks);

/*
 * Queue on s (a stream of GPU `ordinal`) the digests of chunks
 * [c0, c0 + nchunks) of the `size`-byte space at device address data:
 * digest k lands at dig + 32 * k.  Ordered after what s already holds, so
 * a loader queues it behind the copy that fills those chunks and the hash
 * overlaps the next copies.  scratch holds tc__gpu_hash_scratch_bytes(
 * nchunks) and may be reused by the next call on the same stream.  The
 * kernels must be ready (tc__gpu_hash_ready).  Returns 0, TC_EINVAL,
 * TC_ENOTSUP, TC_EDEVICE or TC_ECUDA.
 */
int tc__gpu_hash_chunks_async(int ordinal, uint64_t data, uint64_t size,
			      uint64_t c0, uint64_t nchunks, uint64_t scratch,
			      uint64_t dig, struct tc__gpu_stream *s, char *err,
			      size_t errlen);

/* Bytes [off, off + len) of a byte space come from device address src
 * (struct b3_seg in b3core.h: do not reorder). */
struct tc__gpu_seg {
	uint64_t off, len, src;
};

/* The parameter block of tc_b3_copy_leaves (struct b3_copy_args). */
struct tc__gpu_b3_copy {
	struct tc__gpu_b3 a;
	uint64_t segs, nseg;
};

/*
 * Copy nseg segments of device memory into the `size`-byte space at dst
 * (zeros in the gaps between them) and compute its chunk digests in the
 * same pass: each byte is read once, where a copy then a hash reads it
 * twice.  segs are in increasing order of off, not overlapping, inside
 * size; any source alignment.  On stream s (NULL: a stream of its own);
 * returns when the bytes and out[tc__chunk_count(size)] are done.  Takes
 * scratch device memory for the call, like tc__gpu_hash_chunks_dev.
 * Returns 0, TC_EINVAL (a segment out of order or outside the space),
 * TC_ENOTSUP, TC_EDEVICE, TC_ENODEV or TC_ECUDA.
 */
int tc__gpu_copy_hash(int ordinal, uint64_t dst, uint64_t size,
		      const struct tc__gpu_seg *segs, uint64_t nseg,
		      struct tc__digest *out, char *err, size_t errlen);

/* ---- pinned host memory ------------------------------------------------ */

/* Page-lock an existing host mapping (a memfd mapping, say) for every
 * context (PORTABLE), so copies from it run at the pinned rate.  p and n
 * should cover whole pages of one mapping, already faulted in (register
 * pins what is there).  flags: TC_GPU_READ_ONLY when the mapping is
 * PROT_READ (a sealed memfd): the driver then pins it without asking for
 * write access.  The range must be unregistered before it is unmapped.
 * Returns 0, TC_EINVAL, TC_EDEVICE, TC_ENODEV or TC_ECUDA (e.g. already
 * registered). */
int tc__gpu_host_register(int ordinal, void *p, uint64_t n, unsigned flags,
			  char *err, size_t errlen);

/* Undo tc__gpu_host_register(p).  Returns 0, TC_EDEVICE, TC_ENODEV or
 * TC_ECUDA (not registered). */
int tc__gpu_host_unregister(int ordinal, void *p, char *err, size_t errlen);

/* ---- diagnostics ------------------------------------------------------- */

/* Raw CUresult of the last driver call that failed on this thread (0 if
 * none yet), for logs and metrics. */
int tc__gpu_last_cuda_error(void);

/* Whether that last failure was CUDA_ERROR_OUT_OF_MEMORY: the daemon
 * evicts and retries on it. */
bool tc__gpu_last_error_oom(void);

/* Symbolic name of a raw CUresult ("CUDA_ERROR_OUT_OF_MEMORY"), from the
 * driver when it is loaded; never NULL, static storage. */
const char *tc__gpu_cuda_error_name(int cuda_error);

#endif /* TC_GPU_VMM_H */
