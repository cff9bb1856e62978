/*
 * fake_b3.c - the chunk-hash kernels of the fake driver, on the host:
 * block after block and thread after thread, the leaves in index order,
 * then each chunk's merge level by level, through the very arithmetic the
 * kernels are compiled from (src/gpu/kernels/b3core.h).
 *
 * Compiled optimised and without sanitizers even in the sanitized build
 * (tests/fakecuda/CMakeLists.txt): instrumented, this scalar BLAKE3 ran at
 * 12 MB/s and GPU puts in the sanitized suite took minutes.  The launch's
 * arguments and ranges are checked in fakecuda.c, which stays
 * instrumented.
 */
#include <stdint.h>

#include "fake_b3.h"

void fake_b3_run(const struct b3_args *a, int leaves)
{
	uint64_t per = a->chunk_bytes / B3_LEAF_BYTES;

	if (leaves) {
		for (uint64_t i = 0; i < a->nchunks * per; i++)
			b3_leaf_at(a, i);
		return;
	}
	for (uint64_t k = 0; k < a->nchunks; k++) {
		uint32_t *in = (uint32_t *)(uintptr_t)a->cvs + k * per * 8;
		uint32_t *to = (uint32_t *)(uintptr_t)a->tmp + k * per * 8;
		uint64_t n = b3_leaves(
			b3_chunk_len(a->size, a->chunk_bytes, a->chunk0 + k));

		while (n > 2) {
			uint32_t *sw = in;

			n = b3_level(in, to, n, 0, 1);
			in = to;
			to = sw;
		}
		b3_root(in, n, (uint32_t *)(uintptr_t)a->out + k * 8);
	}
}

void fake_b3_copy_run(const struct b3_copy_args *ca)
{
	uint64_t per = ca->a.chunk_bytes / B3_LEAF_BYTES;

	for (uint64_t i = 0; i < ca->a.nchunks * per; i++)
		b3_copy_leaf_at(ca, i);
}
