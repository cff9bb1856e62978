/*
 * loader.h - fill artifact memory from safetensors sources, and hash it.
 *
 * The artifact's byte space is processed one digest chunk at a time by
 * several threads: each thread preads the tensor bytes that fall in its chunk
 * straight into the destination mapping, window by window, and hashes each
 * window while it is still in cache, so the digest costs no second pass
 * over memory.  Reads use pread into owned memory, so a file truncated
 * during the load is an error, never SIGBUS.
 *
 * Part of src/xfer (uses common, net, format, gpu): the engines that move
 * bytes for the daemon and, later, the peer module; nothing here knows
 * artifacts, connections or budgets.
 */
#ifndef TC_LOADER_H
#define TC_LOADER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/hash.h"
#include "common/tensor.h"
#include "format/format.h"

struct tc__load_progress {
	_Atomic uint64_t done_bytes; /* bytes of the byte space finished */
	_Atomic int cancel;	     /* set to stop the load early */
};

/* What every load of this process asked of its source files since it
 * started: bytes and reads (the host loader's and the GPU loader's; a
 * read rounded out for O_DIRECT counts what it read).  STATUS reports
 * them, so a test can tell how often each byte was read. */
void tc__load_counters(uint64_t *bytes, uint64_t *reads);
/* Add to them (the loaders' own accounting). */
void tc__load_count(uint64_t bytes, uint64_t reads);

/*
 * Copy every tensor of `src` (laid out by tc__table_layout) into `dst`, a
 * zero-filled writable mapping of at least src->table.total_bytes bytes,
 * with `nthreads` threads, and store the chunk digests in `chunks`
 * (tc__chunk_count(total_bytes) entries).  Returns 0, -errno from pread,
 * TC_EBADFILE for a file that shrank, -ECANCELED, or -ENOMEM; `err` names
 * the file and tensor.
 */
int tc__load_source(const struct tc__source *src, void *dst, int nthreads,
		    struct tc__digest *chunks, struct tc__load_progress *prog,
		    char *err, size_t errlen);

/* Where tc__load_range gets bytes from: `read` fills dst with `len` bytes
 * of source file `file` at offset `off`, returning 0, TC_EBADFILE (short)
 * or -errno.  NULL means plain pread on the source's fds. */
struct tc__reader {
	int (*read)(struct tc__reader *r, uint32_t file, uint8_t *dst,
		    uint64_t len, uint64_t off);
};

/* Index of the first tensor whose bytes end after byte `pos` of the
 * artifact (tensors are sorted by offset). */
uint32_t tc__load_first_tensor(const struct tc__table *t, uint64_t pos);

/*
 * Fill `buf` with bytes [w0, w1) of the artifact laid out from `src`:
 * buf[0] is byte w0.  *cursor is a tensor index at or before the first one
 * overlapping w0 (tc__load_first_tensor) and is advanced for the next
 * window.  With zero_gaps the alignment padding between tensors is zeroed
 * (for reused staging buffers; a fresh memfd is zero already).  Returns 0
 * or a negative code with `err` naming the file and tensor.
 */
int tc__load_range(const struct tc__source *src, uint8_t *buf, uint64_t w0,
		   uint64_t w1, uint32_t *cursor, bool zero_gaps,
		   struct tc__reader *rd, char *err, size_t errlen);

/*
 * A range plan: what a view of a source needs, as file runs.  Run r reads
 * `count` pieces of `len` bytes of file `file`, piece j at file offset
 * off + j * stride, and lays them out packed from byte `dst` of the plan's
 * byte space (piece j at dst + j * len).  Runs are sorted by dst and do not
 * overlap; what no run covers is zero.  A row shard of a tensor is one run
 * of count 1; a column shard of a matrix one run of count rows.  The
 * loaders fill a plan's byte space as they fill a table's (the same
 * threads, staging and digests), reading only the runs' bytes.
 */
struct tc__load_run {
	uint64_t dst;
	uint64_t off;
	uint64_t len;
	uint64_t count;
	uint64_t stride;
	uint32_t file;
	const char *name; /* for messages (borrowed): the tensor */
};

struct tc__load_plan {
	struct tc__load_run *runs; /* owned (tc__load_plan_release) */
	uint64_t nruns;
	uint64_t size; /* the byte space: at least every run's end */
};

void tc__load_plan_release(struct tc__load_plan *p);

/* Index of the first run whose bytes end after byte `pos`. */
uint64_t tc__load_plan_first(const struct tc__load_plan *p, uint64_t pos);

/*
 * tc__load_range for a plan: fill `buf` with bytes [w0, w1) of p's byte
 * space (gaps zeroed with zero_gaps), *cursor from tc__load_plan_first.
 * Reads go through `rd` (NULL: pread on src's fds), one per piece, or one
 * per run where its pieces are adjacent in the file.  Returns 0 or a
 * negative code with `err` naming the file and tensor.
 */
int tc__load_plan_range(const struct tc__source *src,
			const struct tc__load_plan *p, uint8_t *buf,
			uint64_t w0, uint64_t w1, uint64_t *cursor,
			bool zero_gaps, struct tc__reader *rd, char *err,
			size_t errlen);

/* Chunk digests of `size` bytes at `p` with `nthreads` threads. */
int tc__hash_chunks(const void *p, uint64_t size, int nthreads,
		    struct tc__digest *chunks);

/* tc__load_source writing into the file `fd` (a memfd; pwrite of each
 * window after it is hashed) instead of through a mapping: where faults
 * are dear (tc__faults_dear), a fresh segment fills several times
 * faster this way.  The file must be at least the table's size. */
int tc__load_source_fd(const struct tc__source *src, int fd, int nthreads,
		       struct tc__digest *chunks,
		       struct tc__load_progress *prog, char *err,
		       size_t errlen);

/* The same reading the bytes from `fd` (pread into a window per thread)
 * instead of through a mapping. */
int tc__hash_chunks_fd(int fd, uint64_t size, int nthreads,
		       struct tc__digest *chunks);

/* Nanoseconds the first read of a page of a fresh shared mapping costs on
 * this machine (measured once, ~0.5 ms on bare metal, ~8 ms on the dev
 * VM), and whether hashing sealed bytes should therefore read them
 * through their file rather than through a fresh mapping
 * (TCAST_HASH_BY_FILE=0|1 overrides; docs/design.md). */
uint64_t tc__page_fault_ns(void);
bool tc__faults_dear(void);

/* The same while `wthreads` more threads write the bytes to w
 * (tc__native_write_data) beside the hashing; chunks NULL: write only.
 * Returns the hashing's result; *wrc gets the writes' (0 or -errno). */
int tc__hash_chunks_write(const void *p, uint64_t size, int nthreads,
			  struct tc__digest *chunks, struct tc__native_tmp *w,
			  int wthreads, int *wrc);

#endif /* TC_LOADER_H */
