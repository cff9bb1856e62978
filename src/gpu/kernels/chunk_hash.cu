/*
 * chunk_hash.cu - the digest chunks of bytes in GPU memory, hashed where
 * they are (BLAKE3-256 per TC_CHUNK_BYTES chunk, as src/common/hash.h).
 *
 * Not compiled by the build: scripts/gen-ptx.sh turns it into PTX
 * (src/gpu/chunk_hash_ptx.h, checked in), loaded at run time with
 * cuModuleLoadData, like the view kernel.
 *
 * Two launches per batch of chunks.  tc_b3_leaves: one thread per 1 KiB
 * leaf compresses its 16 blocks into a chaining value; it is where the
 * time goes (7 rounds per 64 bytes), and with one thread per leaf every
 * multiprocessor is busy.  tc_b3_parents: one block per digest chunk
 * merges that chunk's chaining values level by level (ping-pong between
 * two scratch arrays, a barrier per level: 12 levels for 4 MiB), and its
 * first thread writes the digest.  The arithmetic is b3core.h, which the
 * fake driver runs on the host in CI.
 */
#include "b3core.h"

extern "C" __global__ void tc_b3_leaves(struct b3_args a)
{
	b3_u64 total = a.nchunks * (a.chunk_bytes / B3_LEAF_BYTES);
	b3_u64 step = (b3_u64)gridDim.x * blockDim.x;

	for (b3_u64 i = (b3_u64)blockIdx.x * blockDim.x + threadIdx.x;
	     i < total; i += step)
		b3_leaf_at(&a, i);
}

/* tc_b3_leaves fused with the copy of a put's sources into the
 * destination (b3_copy_leaf_at); tc_b3_parents finishes it. */
extern "C" __global__ void tc_b3_copy_leaves(struct b3_copy_args ca)
{
	b3_u64 total = ca.a.nchunks * (ca.a.chunk_bytes / B3_LEAF_BYTES);
	b3_u64 step = (b3_u64)gridDim.x * blockDim.x;

	for (b3_u64 i = (b3_u64)blockIdx.x * blockDim.x + threadIdx.x;
	     i < total; i += step)
		b3_copy_leaf_at(&ca, i);
}

extern "C" __global__ void tc_b3_parents(struct b3_args a)
{
	b3_u64 per = a.chunk_bytes / B3_LEAF_BYTES;

	for (b3_u64 k = blockIdx.x; k < a.nchunks; k += gridDim.x) {
		b3_u64 len = b3_chunk_len(a.size, a.chunk_bytes, a.chunk0 + k);
		b3_u64 n = b3_leaves(len);
		b3_u32 *in = (b3_u32 *)a.cvs + k * per * 8;
		b3_u32 *to = (b3_u32 *)a.tmp + k * per * 8;

		while (n > 2) {
			b3_u32 *sw = in;

			n = b3_level(in, to, n, threadIdx.x, blockDim.x);
			__syncthreads();
			in = to;
			to = sw;
		}
		if (threadIdx.x == 0)
			b3_root(in, n, (b3_u32 *)a.out + k * 8);
	}
}
