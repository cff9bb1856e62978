/*
 * loader.h - fill artifact memory from safetensors sources, and hash it.
 *
 * The artifact's byte space is processed one digest chunk at a time by
 * several threads: each thread preads the tensor bytes that fall in its chunk
 * straight into the destination mapping, window by window, and hashes each
 * window while it is still in cache, so the digest costs no second pass
 * over memory.  Reads use pread into owned memory, so a file truncated
 * during the load is an error, never SIGBUS.
 */
#ifndef TC_LOADER_H
#define TC_LOADER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "common/hash.h"
#include "common/tensor.h"
#include "format/format.h"

struct tc__load_progress {
	_Atomic uint64_t done_bytes; /* bytes of the byte space finished */
	_Atomic int cancel;	     /* set to stop the load early */
};

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

/* Chunk digests of `size` bytes at `p` with `nthreads` threads. */
int tc__hash_chunks(const void *p, uint64_t size, int nthreads,
		    struct tc__digest *chunks);

/* Digest of the canonical table encoding (proto table codec). */
int tc__table_digest(const struct tc__table *t, struct tc__digest *out);

#endif /* TC_LOADER_H */
