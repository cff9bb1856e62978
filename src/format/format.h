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

#include <stddef.h>
#include <stdint.h>

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

#endif /* TC_FORMAT_H */
