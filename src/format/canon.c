/*
 * canon.c - canonical table encoding (version 1).
 *
 *   magic   "tcast-table\n"                  12 bytes
 *   version u32 = 1
 *   total   u64  bytes of the artifact's byte space
 *   ntensor u32, then per tensor in artifact (offset) order:
 *     name   u32 length, UTF-8 bytes
 *     dtype  u8 length, safetensors dtype name ("BF16"), ASCII
 *     rank   u8, then rank x u64 dimensions
 *     offset u64, nbytes u64
 *   nmeta   u32, then per entry sorted by key bytes (memcmp, shorter
 *           first on a tie): u32 length + key, u32 length + value
 *
 * All integers little-endian.  Every field carries its length, so the form
 * is self-delimiting and the chunk digests can follow it unambiguously.
 * Metadata is sorted because a JSON object's key order carries no meaning.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "canon.h"
#include "common/alloc.h"
#include "tcast/dtype.h"

static int cmp_meta(const void *a, const void *b)
{
	const struct tc__meta *x = *(const struct tc__meta *const *)a;
	const struct tc__meta *y = *(const struct tc__meta *const *)b;
	size_t lx = strlen(x->key), ly = strlen(y->key);
	int c = memcmp(x->key, y->key, lx < ly ? lx : ly);

	if (c)
		return c;
	return lx < ly ? -1 : lx > ly;
}

static void put_bytes32(struct tc__buf *b, const char *s)
{
	size_t n = strlen(s);

	tc__buf_put_u32(b, (uint32_t)n);
	tc__buf_put(b, s, n);
}

void tc__canon_table(struct tc__buf *b, const struct tc__table *t)
{
	const struct tc__meta **m = NULL;

	tc__buf_put(b, TC_CANON_MAGIC, strlen(TC_CANON_MAGIC));
	tc__buf_put_u32(b, TC_CANON_VERSION);
	tc__buf_put_u64(b, t->total_bytes);
	tc__buf_put_u32(b, t->ntensors);
	for (uint32_t i = 0; i < t->ntensors; i++) {
		const struct tc__tensor *x = &t->tensors[i];
		const char *dt = tc_dtype_name(x->dtype);

		put_bytes32(b, x->name);
		dt = dt ? dt : "?";
		tc__buf_put_u8(b, (uint8_t)strlen(dt));
		tc__buf_put(b, dt, strlen(dt));
		tc__buf_put_u8(b, x->ndim);
		for (uint32_t d = 0; d < x->ndim; d++)
			tc__buf_put_u64(b, x->shape[d]);
		tc__buf_put_u64(b, x->offset);
		tc__buf_put_u64(b, x->nbytes);
	}
	tc__buf_put_u32(b, t->nmeta);
	if (t->nmeta) {
		m = tc__reallocarray(NULL, t->nmeta, sizeof(*m));
		if (!m) {
			b->oom = true;
			return;
		}
		for (uint32_t i = 0; i < t->nmeta; i++)
			m[i] = &t->meta[i];
		qsort(m, t->nmeta, sizeof(*m), cmp_meta);
		for (uint32_t i = 0; i < t->nmeta; i++) {
			put_bytes32(b, m[i]->key);
			put_bytes32(b, m[i]->val);
		}
		tc__free(m);
	}
}

int tc__canon_root(const struct tc__table *t, const struct tc__digest *chunks,
		   uint64_t nchunks, struct tc__digest *out)
{
	struct tc__buf b = TC_BUF_INIT;

	tc__canon_table(&b, t);
	if (b.oom) {
		tc__buf_release(&b);
		return -ENOMEM;
	}
	tc__digest_root(b.data, b.len, chunks, nchunks, out);
	tc__buf_release(&b);
	return 0;
}
