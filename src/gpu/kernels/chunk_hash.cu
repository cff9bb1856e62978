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

/*
 * A warp's 32 whole leaves (32 KiB of one digest chunk) copied and hashed
 * together.  Each lane still compresses its own leaf, but the warp moves
 * the bytes: for every block, lane L loads and stores 16 bytes of leaf
 * (8k + L/4), so four lanes cover one leaf's 64-byte block and an access
 * touches 8 cache lines, not 32; the words reach their leaf's lane
 * through shared memory, transposed (rows of 33 words: no bank is hit
 * twice by a read).  With one lane per leaf, each lane's loads and stores
 * were 1 KiB apart, and the L1's wavefronts made the fused kernel slower
 * than a copy then a hash.
 */
__device__ static void b3_copy_load(const struct b3_copy_args *ca,
				    struct b3_segc *sc, b3_u64 wbase,
				    unsigned lane, b3_u32 b, b3_u32 nx[4][4])
{
	const struct b3_seg *sg = (const struct b3_seg *)ca->segs;

#pragma unroll
	for (int k = 0; k < 4; k++)
		b3_gather16(sg, ca->nseg, sc,
			    wbase + (8 * k + lane / 4) * B3_LEAF_BYTES +
				    b * B3_BLOCK_BYTES + 16 * (lane % 4),
			    16, nx[k]);
}

/*
 * The loads of block b + 1 are issued before block b is compressed, so
 * a warp's next 64-byte blocks are on their way while it spends ~700
 * instructions on the current one: loaded then used at once, every block
 * waited the whole memory latency, and the fused kernel took the hash's
 * time plus most of a copy's.
 */
__device__ static void b3_copy_warp(const struct b3_copy_args *ca,
				    b3_u64 w0, unsigned lane,
				    b3_u32 (*sm)[33])
{
	const struct b3_args *a = &ca->a;
	const struct b3_seg *sg = (const struct b3_seg *)ca->segs;
	b3_u64 per = a->chunk_bytes / B3_LEAF_BYTES;
	b3_u64 c = a->chunk0 + w0 / per, j0 = w0 % per;
	b3_u64 wbase = c * a->chunk_bytes + j0 * B3_LEAF_BYTES;
	struct b3_segc sc;
	b3_u32 cv[8], q = lane % 4, *out = (b3_u32 *)a->cvs + (w0 + lane) * 8;
	b3_u32 nx[4][4];

	b3_segc_find(sg, ca->nseg, &sc, wbase + (lane / 4) * B3_LEAF_BYTES);
	for (int w = 0; w < 8; w++)
		cv[w] = b3_iv(w);
	b3_copy_load(ca, &sc, wbase, lane, 0, nx);
#pragma unroll 1
	for (b3_u32 b = 0; b < B3_LEAF_BYTES / B3_BLOCK_BYTES; b++) {
		b3_u32 m[16];

#pragma unroll
		for (int k = 0; k < 4; k++) {
			b3_u32 leaf = 8 * k + lane / 4;
			b3_u64 off = wbase + leaf * B3_LEAF_BYTES +
				     b * B3_BLOCK_BYTES + 16 * q;

			b3_st16((b3_u8 *)a->data + off, nx[k]);
#pragma unroll
			for (int t = 0; t < 4; t++)
				sm[4 * q + t][leaf] = nx[k][t];
		}
		__syncwarp();
#pragma unroll
		for (int w = 0; w < 16; w++)
			m[w] = sm[w][lane];
		__syncwarp();
		if (b + 1 < B3_LEAF_BYTES / B3_BLOCK_BYTES)
			b3_copy_load(ca, &sc, wbase, lane, b + 1, nx);
		b3_compress(cv, m, j0 + lane, B3_BLOCK_BYTES,
			    b3_block_flags(b, B3_LEAF_BYTES / B3_BLOCK_BYTES,
					   0));
	}
	for (int w = 0; w < 8; w++)
		out[w] = cv[w];
}

/* tc_b3_leaves fused with the copy of a put's sources into the
 * destination; tc_b3_parents finishes it.  Warps whose 32 leaves are all
 * whole (all but a chunk's or the space's last) take b3_copy_warp; the
 * rest, lane by lane, b3_copy_leaf_at (what the fake driver runs). */
extern "C" __global__ void tc_b3_copy_leaves(struct b3_copy_args ca)
{
	__shared__ b3_u32 sm[4][16][33]; /* blockDim.x == 128: 4 warps */
	b3_u64 per = ca.a.chunk_bytes / B3_LEAF_BYTES;
	b3_u64 total = ca.a.nchunks * per;
	b3_u64 step = (b3_u64)gridDim.x * blockDim.x;
	unsigned lane = threadIdx.x % 32, wid = threadIdx.x / 32;

	for (b3_u64 w0 = (b3_u64)blockIdx.x * blockDim.x + 32 * wid;
	     w0 < total; w0 += step) {
		b3_u64 i = w0 + lane, c = ca.a.chunk0 + i / per, j = i % per;
		b3_u64 len = i < total ? b3_chunk_len(ca.a.size,
						      ca.a.chunk_bytes, c) :
					 0;
		bool whole = i < total &&
			     len >= (j + 1) * (b3_u64)B3_LEAF_BYTES;

		if (per % 32 == 0 && __all_sync(0xffffffffu, whole))
			b3_copy_warp(&ca, w0, lane, sm[wid]);
		else if (i < total)
			b3_copy_leaf_at(&ca, i);
	}
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
