/*
 * st.h - safetensors files and Hugging Face model folders.
 *
 * Checks that need no daemon: tcast reads the file or folder exactly as the
 * daemon would before loading it (docs/formats.md says what is accepted and
 * what is rejected) and reports the result.  No tensor data is read.
 */
#ifndef TCAST_ST_H
#define TCAST_ST_H

#include <stddef.h>

#include "export.h"

/*
 * Validate the headers and geometry of `path`: one .safetensors file, or a
 * folder (model.safetensors.index.json and its shards, model.safetensors,
 * a single *.safetensors, a Hugging Face cache snapshot or repository).
 *
 * On success writes a one-line summary into msg, e.g.
 *   "ok: tiny-llama: 6 files, 30 tensors, 287,616 bytes, dtypes BF16"
 * (path as given; bytes are tensor bytes; dtypes in tcast's dtype order).
 * On failure writes the message naming the file, the tensor and what is
 * wrong.  msg is always NUL-terminated when msglen > 0 and may be cut.
 *
 * Returns 0, TC_EINVAL (path is NULL), TC_EBADFILE, TC_EBADINDEX,
 * TC_EBADDTYPE, TC_ELIMIT, TC_ENOTFOUND (a folder with nothing to read),
 * -ENOMEM, or a negated errno from opening or reading (-ENOENT, -EACCES,
 * -ELOOP, -EIO, -EMFILE, ...).
 */
TC_API int tc_st_verify(const char *path, char *msg, size_t msglen);

/*
 * Same check; writes one JSON object (no newline) into json:
 *   {"path":"...","ok":true,"files":6,"tensors":30,"bytes":287616,
 *    "dtypes":["BF16"]}
 *   {"path":"...","ok":false,"error":"TC_EBADFILE","code":-4005,
 *    "message":"..."}
 * Strings are valid UTF-8 (bytes that are not become U+FFFD).
 * Returns what tc_st_verify returns, or -ERANGE when jsonlen is too small
 * for the object (json is then "" when jsonlen > 0).
 */
TC_API int tc_st_verify_json(const char *path, char *json, size_t jsonlen);

#endif /* TCAST_ST_H */
