/*
 * tensor.c - tensor tables: sizes and layout.
 */
#include <errno.h>
#include <string.h>

#include "alloc.h"
#include "compiler.h"
#include "tcast/dtype.h"
#include "tcast/errors.h"
#include "tensor.h"

void tc__table_init(struct tc__table *t)
{
	memset(t, 0, sizeof(*t));
}

int tc__table_copy(struct tc__table *dst, const struct tc__table *src)
{
	tc__table_init(dst);
	dst->total_bytes = src->total_bytes;
	dst->tensors = tc__calloc(src->ntensors ? src->ntensors : 1,
				  sizeof(*dst->tensors));
	dst->meta = tc__calloc(src->nmeta ? src->nmeta : 1, sizeof(*dst->meta));
	if (!dst->tensors || !dst->meta)
		goto out_release;
	for (uint32_t i = 0; i < src->ntensors; i++) {
		dst->tensors[i] = src->tensors[i];
		dst->tensors[i].name = tc__strdup(src->tensors[i].name);
		dst->ntensors = i + 1;
		if (!dst->tensors[i].name)
			goto out_release;
	}
	for (uint32_t i = 0; i < src->nmeta; i++) {
		dst->meta[i].key = tc__strdup(src->meta[i].key);
		dst->meta[i].val = tc__strdup(src->meta[i].val);
		dst->nmeta = i + 1;
		if (!dst->meta[i].key || !dst->meta[i].val)
			goto out_release;
	}
	return 0;

out_release:
	tc__table_release(dst);
	return -ENOMEM;
}

void tc__table_release(struct tc__table *t)
{
	for (uint32_t i = 0; i < t->ntensors; i++)
		tc__free(t->tensors[i].name);
	for (uint32_t i = 0; i < t->nmeta; i++) {
		tc__free(t->meta[i].key);
		tc__free(t->meta[i].val);
	}
	tc__free(t->tensors);
	tc__free(t->meta);
	tc__table_init(t);
}

int tc__tensor_nbytes(int dtype, uint32_t ndim, const uint64_t *shape,
		      uint64_t *out)
{
	uint32_t bits = tc_dtype_bits(dtype);
	uint64_t n = 1, nbits;

	if (bits == 0)
		return TC_EBADDTYPE;
	if (ndim > TC_MAX_RANK)
		return TC_ELIMIT;
	for (uint32_t i = 0; i < ndim; i++)
		if (__builtin_mul_overflow(n, shape[i], &n))
			return TC_ELIMIT;
	if (__builtin_mul_overflow(n, (uint64_t)bits, &nbits))
		return TC_ELIMIT;
	if (nbits % 8)
		return TC_ELIMIT;
	*out = nbits / 8;
	return 0;
}

int tc__table_layout(struct tc__table *t)
{
	uint64_t off = 0;

	for (uint32_t i = 0; i < t->ntensors; i++) {
		struct tc__tensor *x = &t->tensors[i];

		if (off > UINT64_MAX - (TC_ALIGN - 1))
			return TC_ELIMIT;
		off = TC_ALIGN_UP(off, (uint64_t)TC_ALIGN);
		x->offset = off;
		if (__builtin_add_overflow(off, x->nbytes, &off))
			return TC_ELIMIT;
	}
	t->total_bytes = off;
	return 0;
}

long tc__table_find(const struct tc__table *t, const char *name)
{
	for (uint32_t i = 0; i < t->ntensors; i++)
		if (!strcmp(t->tensors[i].name, name))
			return (long)i;
	return -1;
}
