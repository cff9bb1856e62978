/*
 * canon.h - the canonical byte form of a tensor table, the input of an
 * artifact's id (docs/formats.md, "Canonical table, version 1").
 *
 * It is defined here, not by the local protocol's codec, so that changing
 * the wire never changes an id: the same tensors with the same bytes get
 * the same id from every build that speaks version 1 of this form.
 */
#ifndef TC_FORMAT_CANON_H
#define TC_FORMAT_CANON_H

#include "common/buf.h"
#include "common/hash.h"
#include "common/tensor.h"

#define TC_CANON_MAGIC	 "tcast-table\n" /* 12 bytes, no NUL */
#define TC_CANON_VERSION 1

/* Append the canonical encoding of `t` to b (b->oom on failure). */
void tc__canon_table(struct tc__buf *b, const struct tc__table *t);

/* The artifact id's root digest: BLAKE3(canonical table || chunks).
 * Returns 0 or -ENOMEM. */
int tc__canon_root(const struct tc__table *t, const struct tc__digest *chunks,
		   uint64_t nchunks, struct tc__digest *out);

#endif /* TC_FORMAT_CANON_H */
