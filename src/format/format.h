/*
 * format.h - safetensors files, Hugging Face sharded folders, and the writer.
 *
 * Every byte read here is hostile (docs/formats.md, docs/hostile-inputs.md):
 * each declared length, offset and shape is validated with checked
 * arithmetic before anything is allocated or read from it, and every
 * rejection names the file, the tensor and what is wrong.  Files are read
 * with pread into owned buffers, never mapped, so a file truncated under us
 * gives an error, not SIGBUS.  Depends only on src/common.
 */
#ifndef TC_FORMAT_H
#define TC_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/hash.h"
#include "common/tensor.h"

#define TC_ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000) /* reference cap */
#define TC_IDX_MAX_BYTES ((uint64_t)64 << 20)	       /* index.json cap */
#define TC_MAX_SHARDS	 65536			       /* files per folder */
#define TC_IDX_NAME	 "model.safetensors.index.json"

/* ---------------------------------------------------------------- parsing */

/*
 * Parse the `len` JSON bytes of a header (the bytes after the 8-byte length
 * prefix).  `file_size` is the whole file's length, so the rule "last end +
 * 8 + N == file size" can be checked.  On success `out` (initialised by the
 * caller with tc__table_init) receives the tensors in data order with
 * src_file = file_index and src_offset = 8 + len + begin, plus __metadata__.
 * `offset` is not set (the store lays artifacts out).
 * Returns 0, TC_EBADFILE, TC_EBADDTYPE, TC_ELIMIT or -ENOMEM; on failure
 * `out` is left empty and `err` says what was wrong and where.
 */
int tc__st_parse_header(const char *json, size_t len, uint64_t file_size,
			uint32_t file_index, struct tc__table *out, char *err,
			size_t errlen);

/* Read the prefix and header of the open regular file `fd` with pread and
 * parse it as above.  *file_size receives the file length. */
int tc__st_read(int fd, uint32_t file_index, struct tc__table *out,
		uint64_t *file_size, char *err, size_t errlen);

/* A parsed model.safetensors.index.json. */
struct tc__index_entry {
	char *tensor;	/* owned */
	uint32_t shard; /* index into shards[] */
};

struct tc__index {
	char **shards; /* owned, distinct plain basenames, first-seen order */
	uint32_t nshards;
	struct tc__index_entry *entries; /* owned, weight_map order */
	uint32_t nentries;
};

/* Parse index JSON.  Shard names must be single relative basenames (no '/',
 * no '\\', not "." or "..", not empty, no NUL).  Returns 0, TC_EBADINDEX,
 * TC_ELIMIT or -ENOMEM. */
int tc__idx_parse(const char *json, size_t len, struct tc__index *out,
		  char *err, size_t errlen);
void tc__idx_release(struct tc__index *idx);

/* ---------------------------------------------------------------- sources */

struct tc__source_file {
	char *name;    /* owned: basename inside the folder, or the path */
	int fd;	       /* owned, O_RDONLY | O_CLOEXEC, a regular file */
	uint64_t size; /* bytes, as validated */
};

/*
 * A source is what an import reads: one safetensors file or a folder.
 * Invariant: every tensor's [src_offset, src_offset + nbytes) lies inside its
 * file's data section; table.tensors are ordered by (src_file, src_offset).
 */
struct tc__source {
	char *display;		       /* owned: what messages call it */
	struct tc__source_file *files; /* owned array */
	uint32_t nfiles;
	struct tc__table table; /* tensors and metadata (offsets unset) */
	/* A native folder (tcast.manifest.json): what the bytes must hash
	 * to, checked by tc__native_check after a load; "" otherwise. */
	struct tc__digest *expect_chunks; /* owned */
	uint64_t nexpect;
	char expect_id[TC_ID_LEN + 1];
};

/*
 * Open the file or folder that `fd` refers to (the caller keeps `fd`; the
 * source dups what it needs).  A folder is read as:
 *   1. model.safetensors.index.json present: exactly the shards it names,
 *      opened with openat(O_NONBLOCK) and required to be regular files after
 *      following symlinks (HF cache snapshots are symlinks into blobs/);
 *      every index entry must be in its shard and every shard tensor in the
 *      index; a tensor in two shards is an error;
 *   2. else model.safetensors;
 *   3. else exactly one *.safetensors file (several without an index is an
 *      error naming them).
 * Metadata of a folder: the first shard's __metadata__.
 * Returns 0 or a negative code; `err` names the file and the problem.
 */
int tc__source_open_fd(int fd, const char *display, struct tc__source **out,
		       char *err, size_t errlen);
/* Same, opening `path` first (O_RDONLY | O_NONBLOCK | O_CLOEXEC). */
int tc__source_open(const char *path, struct tc__source **out, char *err,
		    size_t errlen);
/* Close every fd and free.  NULL is a no-op. */
void tc__source_free(struct tc__source *s);

/*
 * A source of shards that a client opened and resolved itself (a folder
 * import: docs/protocol.md, IMPORT with TC_RF_SHARDS): fds[i] (the caller
 * keeps them; they are dup'd) must be regular files, read in the order
 * given, named names[i] in messages; metadata from the first.  Nothing is
 * opened by path here, so the daemon reads only what the client could.
 */
int tc__source_open_shards(const int *fds, const char *const *names, uint32_t n,
			   const char *display, struct tc__source **out,
			   char *err, size_t errlen);

/* ----------------------------------------------------------------- writer */

/*
 * Write `t` as a safetensors file to `fd`: tensor i's bytes are read from
 * base + t->tensors[i].offset.  Tensors are ordered as the reference writer
 * orders them (dtype alignment descending, then name), metadata is kept and
 * "format": "pt" added when absent, and the header is padded with spaces to
 * a multiple of 8 bytes.  Returns 0, -errno from write(2), or -ENOMEM.
 */
int tc__st_write_fd(int fd, const struct tc__table *t, const void *base,
		    char *err, size_t errlen);
/* Write to a fresh O_EXCL temporary beside `path`, fsync, rename to
 * `path`, fsync the directory: a crash leaves the old file or the new one,
 * never half.  Refuses (TC_EINVAL) to replace anything but a regular file,
 * and (TC_EEXIST) a regular file without TC_ST_WRITE_FORCE.  The new file's
 * mode is 0666 & ~umask. */
#define TC_ST_WRITE_FORCE 1u /* replace an existing regular file */
int tc__st_write_path(const char *path, const struct tc__table *t,
		      const void *base, unsigned flags, char *err,
		      size_t errlen);
/* The same reading the byte space from the file `src_fd` (an artifact's
 * sealed memfd) instead of a mapping: each run goes file to file in the
 * kernel (tc__copy_fd), with no page-table fault per page of a fresh
 * mapping and no copy through user memory. */
int tc__st_write_fd_from(int fd, const struct tc__table *t, int src_fd,
			 char *err, size_t errlen);
int tc__st_write_path_from(const char *path, const struct tc__table *t,
			   int src_fd, unsigned flags, char *err,
			   size_t errlen);

/* ------------------------------------------------------- native layout */

/*
 * tcast's own layout (docs/formats.md, "Native layout"): a folder named by
 * the id's hex digits holding tcast.data (the artifact's byte space,
 * verbatim) and tcast.manifest.json (table, chunk digests, id).  A folder
 * with a manifest is read by tc__source_open* like a safetensors folder:
 * files[0] is the manifest (no tensor in it), files[1] the data, and
 * expect_* say what a load must hash to.
 */
#define TC_NATIVE_MANIFEST     "tcast.manifest.json"
#define TC_NATIVE_DATA	       "tcast.data"
#define TC_NATIVE_VERSION      1
#define TC_NATIVE_TMP_PREFIX   ".tmp-" /* writers' temporaries */
#define TC_NATIVE_MAX_MANIFEST ((uint64_t)64 << 20)

/* A parsed manifest: the table laid out (offsets set; src_file 1,
 * src_offset = offset), one digest per 4 MiB chunk, the id. */
struct tc__native {
	struct tc__table table;
	struct tc__digest *chunks; /* owned, nchunks */
	uint64_t nchunks;
	char id[TC_ID_LEN + 1];
};

/* Parse and check a manifest: keys, types, caps, names, dtypes, shapes,
 * the offsets against the canonical layout, the chunk count, and the id
 * against BLAKE3(canonical table || chunks).  data_size is the data file's
 * length (UINT64_MAX: not checked).  Returns 0, TC_EBADFILE, TC_EBADDTYPE,
 * TC_ELIMIT, TC_ENOTSUP (another version), TC_EDIGEST (the id lies) or
 * -ENOMEM; on failure `out` is empty. */
int tc__native_parse(const char *json, size_t len, uint64_t data_size,
		     struct tc__native *out, char *err, size_t errlen);
void tc__native_release(struct tc__native *n);
/* The manifest of an artifact as compact JSON (malloc'd; NULL on OOM). */
char *tc__native_manifest(const struct tc__table *t,
			  const struct tc__digest *chunks, uint64_t nchunks,
			  const char *id);
/* Write artifact `id` (table t laid out, bytes at base, its chunk digests)
 * as folder <hex> of the folder `parent` (`where` names it in messages):
 * a temporary folder .tmp-w-<random>, fsync of both files and the
 * folder, rename (never over anything), fsync of `parent`.  A folder of
 * the same id already there is accepted.  Nothing is left behind on
 * failure.  Failpoints (common/failpoint.h, subject the id):
 * durable_enospc, durable_fsync, durable_rename.  Returns 0, TC_EINVAL,
 * TC_EEXIST (the name holds another artifact), -ENOMEM or -errno. */
int tc__native_write(int parent, const char *where, const char *id,
		     const struct tc__table *t, const void *base,
		     const struct tc__digest *chunks, uint64_t nchunks,
		     char *err, size_t errlen);
/*
 * The same in steps, so the data can be written while it is still being
 * hashed (before the id is known): begin makes the temporary folder
 * .tmp-w-<random> and its data file with the blocks reserved; write_data
 * writes a range of the byte space (thread-safe: several threads write
 * their own ranges; O_DIRECT for the block-aligned part when the file
 * system takes it); commit finishes with the id once known, or cleans up
 * when data_rc < 0.  begin fails with nothing left; after it, exactly one
 * of commit or abort must run.
 */
struct tc__native_tmp {
	int parent;	     /* the folder the artifact goes to */
	int dfd;	     /* the temporary folder */
	int fd;		     /* its data file, through the page cache */
	int direct_fd;	     /* the same file with O_DIRECT, or -1 */
	_Atomic bool direct; /* direct_fd still usable */
	uint64_t size;	     /* the byte space's length */
	char name[64];	     /* the temporary's name; "" when done */
};
int tc__native_begin(int parent, const char *where, uint64_t total_bytes,
		     struct tc__native_tmp *w, char *err, size_t errlen);
/* 0 or -errno (-EINVAL for a range outside the byte space). */
int tc__native_write_data(struct tc__native_tmp *w, const void *buf,
			  uint64_t off, uint64_t len);
/* The data is whole (data_rc 0; otherwise the error the writes had):
 * fsync it, write the manifest, fsync, rename to <hex of id>, fsync the
 * parent.  The same returns and failpoints as tc__native_write. */
int tc__native_commit(struct tc__native_tmp *w, const char *where,
		      const char *id, const struct tc__table *t,
		      const struct tc__digest *chunks, uint64_t nchunks,
		      int data_rc, char *err, size_t errlen);
void tc__native_abort(struct tc__native_tmp *w);
/* Is <hex of id> already in `parent` (a valid manifest of that id)?
 * 1 (and the parent fsynced), 0 when absent, or a negative code (the
 * name holds something else: TC_EEXIST, TC_EBADFILE...). */
int tc__native_have(int parent, const char *where, const char *id, char *err,
		    size_t errlen);
/* May temporary `name` of `parent` be removed?  False while its writer
 * (a process on this node or, on a file system with shared locks such as
 * NFSv4, another node) still runs: begin locks the data file until the
 * rename. */
bool tc__native_tmp_unowned(int parent, const char *name);
/* Remove folder <hex of id> of `parent` (manifest first).  0 when absent. */
int tc__native_remove(int parent, const char *id);
/* Read the manifest of folder `name` of `parent` (the data is not read). */
int tc__native_read_at(int parent, const char *name, struct tc__native *out,
		       char *err, size_t errlen);
/* Fill s (files, table, expect_*) from an open manifest and data file; s
 * takes both fds, also on failure.  Used by the folder reader. */
int tc__native_source(struct tc__source *s, int mfd, int datafd,
		      const char *where, char *err, size_t errlen);
/* After loading a native source: every chunk digest and the id must be
 * the manifest's.  0 for other sources.  Returns 0 or TC_EDIGEST. */
int tc__native_check(const struct tc__source *s,
		     const struct tc__digest *chunks, uint64_t n,
		     const char *id, char *err, size_t errlen);

#endif /* TC_FORMAT_H */
