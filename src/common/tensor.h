/*
 * tensor.h - the in-memory description of a tensor and of a tensor table.
 *
 * One descriptor serves every layer: the safetensors parser fills it from a
 * file (src_* fields), the store lays tensors out in an artifact's linear
 * byte space (offset), and the protocol encodes tables of them.  Limits on
 * rank, name length and count live here so parsers and decoders agree.
 */
#ifndef TC_TENSOR_H
#define TC_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#define TC_MAX_RANK	  16	    /* dimensions per tensor */
#define TC_MAX_NAME	  1024	    /* bytes in a tensor name, without NUL */
#define TC_MAX_TENSORS	  262144    /* tensors per file, folder or artifact */
#define TC_MAX_META	  1024	    /* __metadata__ entries */
#define TC_MAX_META_BYTES (1 << 20) /* bytes in one metadata key or value */
#define TC_ALIGN	  256	    /* byte alignment of tensors in artifacts */

/*
 * Invariant: nbytes == ceil(prod(shape) * tc_dtype_bits(dtype) / 8) and the
 * product did not overflow; name is NUL-terminated UTF-8 with no NUL inside.
 */
struct tc__tensor {
	char *name;		     /* owned by the table that holds it */
	uint8_t dtype;		     /* enum tc_dtype */
	uint8_t ndim;		     /* 0..TC_MAX_RANK */
	uint64_t shape[TC_MAX_RANK]; /* elements per dimension */
	uint64_t nbytes;	     /* bytes of data */
	uint64_t offset;	     /* byte offset in the artifact */
	uint32_t src_file;	     /* index of the source file (parsers) */
	uint64_t src_offset;	     /* absolute offset in that file */
};

/* Metadata entry: string to string (safetensors __metadata__). */
struct tc__meta {
	char *key; /* owned */
	char *val; /* owned */
};

/* A set of tensors plus metadata.  Tensors are kept in artifact order. */
struct tc__table {
	struct tc__tensor *tensors; /* owned array of ntensors */
	uint32_t ntensors;
	struct tc__meta *meta; /* owned array of nmeta */
	uint32_t nmeta;
	uint64_t total_bytes; /* size of the artifact's byte space */
};

void tc__table_init(struct tc__table *t);
void tc__table_release(struct tc__table *t);
/* A deep copy of src (names, shapes, offsets, metadata) into dst, which
 * is overwritten.  Returns 0 or -ENOMEM (dst then empty). */
int tc__table_copy(struct tc__table *dst, const struct tc__table *src);
/* Compute nbytes from dtype and shape with checked arithmetic; returns 0,
 * TC_EBADDTYPE, or TC_ELIMIT on overflow or a sub-byte size that is not a
 * whole number of bytes. */
int tc__tensor_nbytes(int dtype, uint32_t ndim, const uint64_t *shape,
		      uint64_t *out);
/* Assign offsets in table order, each aligned to TC_ALIGN, and set
 * total_bytes.  Returns 0 or TC_ELIMIT on overflow. */
int tc__table_layout(struct tc__table *t);
/* Index of the tensor called `name`, or -1 (linear scan). */
long tc__table_find(const struct tc__table *t, const char *name);

#endif /* TC_TENSOR_H */
