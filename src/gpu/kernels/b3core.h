/*
 * b3core.h - BLAKE3 for digest chunks held in GPU memory: the compression
 * function and the leaf rule, written once for two compilers.
 *
 * nvcc compiles it into the chunk-hash kernels (chunk_hash.cu, turned into
 * PTX by scripts/gen-ptx.sh); the C compiler compiles the same text into
 * the fake driver (tests/fakecuda), whose kernels run on the host and are
 * checked against upstream's BLAKE3 in CI.  So the arithmetic that decides
 * every artifact id on a GPU is tested on every commit, not only when a
 * GPU is lent.
 *
 * A digest chunk (TC_CHUNK_BYTES, the last one shorter) is hashed as plain
 * unkeyed BLAKE3-256.  Its 1 KiB BLAKE3 chunks ("leaves") are compressed
 * independently, one per GPU thread; the leaves' chaining values are then
 * merged pairwise, level by level, an odd last node going up unchanged.
 * That is BLAKE3's left-complete tree: for n leaves the left subtree holds
 * the largest power of two below n, which level-wise pairing reproduces.
 */
#ifndef TC_B3CORE_H
#define TC_B3CORE_H

#ifdef __CUDACC__
#define B3_FN __device__ __forceinline__ static
typedef unsigned long long b3_u64;
typedef unsigned int b3_u32;
typedef unsigned char b3_u8;
#else
#include <stdint.h>
#include <string.h>
#define B3_FN static inline
typedef uint64_t b3_u64;
typedef uint32_t b3_u32;
typedef uint8_t b3_u8;
#endif

#define B3_LEAF_BYTES  1024u
#define B3_BLOCK_BYTES 64u
#define B3_CHUNK_START 1u
#define B3_CHUNK_END   2u
#define B3_PARENT      4u
#define B3_ROOT	       8u

/* The kernels' parameter block (struct tc__gpu_b3 in src/gpu/vmm.h). */
struct b3_args {
	b3_u64 data;	/* device address of byte 0 of the byte space */
	b3_u64 size;	/* bytes in the byte space */
	b3_u64 chunk0;	/* first digest chunk of this launch */
	b3_u64 nchunks; /* digest chunks in this launch */
	b3_u64 cvs;	/* scratch: 8 words per leaf of this launch */
	b3_u64 tmp;	/* scratch of the same size (ping-pong) */
	b3_u64 out;	/* nchunks digests, 32 bytes each */
	b3_u64 chunk_bytes;
};

/* Bytes [off, off + len) of a byte space come from device address src. */
struct b3_seg {
	b3_u64 off, len, src;
};

/* The fused kernel's parameter block (struct tc__gpu_b3_copy in vmm.h):
 * a.data is the destination; the byte space is the segments, in order of
 * off and not overlapping, with zeros in the gaps between them. */
struct b3_copy_args {
	struct b3_args a;
	b3_u64 segs; /* device address of nseg struct b3_seg */
	b3_u64 nseg;
};

B3_FN b3_u32 b3_iv(int i)
{
	const b3_u32 iv[8] = { 0x6A09E667u, 0xBB67AE85u, 0x3C6EF372u,
			       0xA54FF53Au, 0x510E527Fu, 0x9B05688Cu,
			       0x1F83D9ABu, 0x5BE0CD19u };
	return iv[i];
}

B3_FN b3_u32 b3_rotr(b3_u32 x, int n)
{
	return (x >> n) | (x << (32 - n));
}

/* Four message words from / to 16 aligned bytes: one 16-byte access
 * where a GPU thread would otherwise make four.  Threads of a warp hash
 * leaves 1 KiB apart, so each of their loads touches 32 cache lines: with
 * 4-byte loads the L1's wavefronts, not the arithmetic, bounded the hash
 * (~3.4 bytes per clock per multiprocessor). */
#ifdef __CUDACC__
B3_FN void b3_ld16(const b3_u8 *p, b3_u32 *m)
{
	uint4 x = __ldg((const uint4 *)p);

	m[0] = x.x;
	m[1] = x.y;
	m[2] = x.z;
	m[3] = x.w;
}

B3_FN void b3_st16(b3_u8 *p, const b3_u32 *m)
{
	*(uint4 *)p = make_uint4(m[0], m[1], m[2], m[3]);
}
#else
B3_FN void b3_ld16(const b3_u8 *p, b3_u32 *m)
{
	memcpy(m, p, 16); /* little endian, like every GPU */
}

B3_FN void b3_st16(b3_u8 *p, const b3_u32 *m)
{
	memcpy(p, m, 16);
}
#endif

/* Flags of block b of a leaf of nblocks blocks (root: B3_ROOT or 0). */
B3_FN b3_u32 b3_block_flags(b3_u32 b, b3_u32 nblocks, b3_u32 root)
{
	return (b == 0 ? B3_CHUNK_START : 0) |
	       (b == nblocks - 1 ? B3_CHUNK_END | root : 0);
}

#define B3_G(a, b, c, d, x, y)                   \
	do {                                     \
		v[a] = v[a] + v[b] + (x);        \
		v[d] = b3_rotr(v[d] ^ v[a], 16); \
		v[c] = v[c] + v[d];              \
		v[b] = b3_rotr(v[b] ^ v[c], 12); \
		v[a] = v[a] + v[b] + (y);        \
		v[d] = b3_rotr(v[d] ^ v[a], 8);  \
		v[c] = v[c] + v[d];              \
		v[b] = b3_rotr(v[b] ^ v[c], 7);  \
	} while (0)

/* cv = first 8 words of compress(cv, m, counter, len, flags). */
B3_FN void b3_compress(b3_u32 cv[8], const b3_u32 m[16], b3_u64 counter,
		       b3_u32 len, b3_u32 flags)
{
	/* BLAKE3's message schedule: round r reads word S[r][i]. */
	const unsigned char S[7][16] = {
		{ 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 },
		{ 2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8 },
		{ 3, 4, 10, 12, 13, 2, 7, 14, 6, 5, 9, 0, 11, 15, 8, 1 },
		{ 10, 7, 12, 9, 14, 3, 13, 15, 4, 0, 11, 2, 5, 8, 1, 6 },
		{ 12, 13, 9, 11, 15, 10, 14, 8, 7, 2, 5, 3, 0, 1, 6, 4 },
		{ 9, 14, 11, 5, 8, 12, 15, 1, 13, 3, 0, 10, 2, 6, 4, 7 },
		{ 11, 15, 5, 0, 1, 9, 8, 6, 14, 10, 2, 12, 3, 4, 7, 13 },
	};
	b3_u32 v[16];

	for (int i = 0; i < 8; i++)
		v[i] = cv[i];
	for (int i = 0; i < 4; i++)
		v[8 + i] = b3_iv(i);
	v[12] = (b3_u32)counter;
	v[13] = (b3_u32)(counter >> 32);
	v[14] = len;
	v[15] = flags;
#ifdef __CUDACC__
#pragma unroll
#endif
	for (int r = 0; r < 7; r++) {
		B3_G(0, 4, 8, 12, m[S[r][0]], m[S[r][1]]);
		B3_G(1, 5, 9, 13, m[S[r][2]], m[S[r][3]]);
		B3_G(2, 6, 10, 14, m[S[r][4]], m[S[r][5]]);
		B3_G(3, 7, 11, 15, m[S[r][6]], m[S[r][7]]);
		B3_G(0, 5, 10, 15, m[S[r][8]], m[S[r][9]]);
		B3_G(1, 6, 11, 12, m[S[r][10]], m[S[r][11]]);
		B3_G(2, 7, 8, 13, m[S[r][12]], m[S[r][13]]);
		B3_G(3, 4, 9, 14, m[S[r][14]], m[S[r][15]]);
	}
	for (int i = 0; i < 8; i++)
		cv[i] = v[i] ^ v[i + 8];
}

/* Leaves of a digest chunk of `len` bytes (len > 0). */
B3_FN b3_u64 b3_leaves(b3_u64 len)
{
	return (len + B3_LEAF_BYTES - 1) / B3_LEAF_BYTES;
}

/*
 * Leaf `j` of the digest chunk at `p` (len bytes) into cv.  A chunk of one
 * leaf is its own root: its last block carries ROOT and cv is the digest.
 * Whole 4-byte words are read where the leaf has them (p is 4-aligned:
 * chunks start at multiples of 1 KiB of an aligned allocation); the tail
 * is read byte by byte so nothing past the byte space is touched.
 */
B3_FN void b3_leaf(const b3_u8 *p, b3_u64 len, b3_u64 j, b3_u32 cv[8])
{
	b3_u64 off = j * B3_LEAF_BYTES;
	b3_u32 n =
		(b3_u32)(len - off < B3_LEAF_BYTES ? len - off : B3_LEAF_BYTES);
	b3_u32 nblocks = (n + B3_BLOCK_BYTES - 1) / B3_BLOCK_BYTES;
	b3_u32 root = b3_leaves(len) == 1 ? B3_ROOT : 0;
	const b3_u8 *leaf = p + off;

	for (int i = 0; i < 8; i++)
		cv[i] = b3_iv(i);
	for (b3_u32 b = 0; b < nblocks; b++) {
		b3_u32 m[16], blen = n - b * B3_BLOCK_BYTES;
		const b3_u8 *q = leaf + b * B3_BLOCK_BYTES;

		if (blen > B3_BLOCK_BYTES)
			blen = B3_BLOCK_BYTES;
			/* Word by word with constant indices, so m stays in
			 * registers (a byte loop indexing m spills it to the
			 * stack). */
#ifdef __CUDACC__
#pragma unroll
#endif
		for (b3_u32 w = 0; w < 16; w++) {
			b3_u32 x = 0;

			if (4 * w + 4 <= blen)
				x = ((const b3_u32 *)q)[w];
			else
				for (b3_u32 k = 0; k < 4; k++)
					if (4 * w + k < blen)
						x |= (b3_u32)q[4 * w + k]
						     << (8 * k);
			m[w] = x;
		}
		b3_compress(cv, m, j, blen, b3_block_flags(b, nblocks, root));
	}
}

/* A whole leaf, 16-byte aligned: the common case, without b3_leaf's
 * per-word bounds. */
B3_FN void b3_leaf_full(const b3_u8 *leaf, b3_u64 j, b3_u32 root, b3_u32 cv[8])
{
	for (int i = 0; i < 8; i++)
		cv[i] = b3_iv(i);
#ifdef __CUDACC__
#pragma unroll 1
#endif
	for (b3_u32 b = 0; b < B3_LEAF_BYTES / B3_BLOCK_BYTES; b++) {
		b3_u32 m[16];

#ifdef __CUDACC__
#pragma unroll
#endif
		for (int q = 0; q < 4; q++)
			b3_ld16(leaf + b * B3_BLOCK_BYTES + 16 * q, m + 4 * q);
		b3_compress(cv, m, j, B3_BLOCK_BYTES,
			    b3_block_flags(b, B3_LEAF_BYTES / B3_BLOCK_BYTES,
					   root));
	}
}

/* out = parent(l, r); the last merge of a chunk carries ROOT. */
B3_FN void b3_parent(const b3_u32 *l, const b3_u32 *r, int root, b3_u32 *out)
{
	b3_u32 m[16], cv[8];

	for (int i = 0; i < 8; i++) {
		m[i] = l[i];
		m[8 + i] = r[i];
		cv[i] = b3_iv(i);
	}
	b3_compress(cv, m, 0, B3_BLOCK_BYTES, B3_PARENT | (root ? B3_ROOT : 0));
	for (int i = 0; i < 8; i++)
		out[i] = cv[i];
}

/* Bytes of digest chunk c of a byte space of `size` bytes. */
B3_FN b3_u64 b3_chunk_len(b3_u64 size, b3_u64 chunk_bytes, b3_u64 c)
{
	b3_u64 off = c * chunk_bytes;

	return size - off < chunk_bytes ? size - off : chunk_bytes;
}

/* Leaf i of a launch (i counts leaves of full chunks from chunk0): its
 * chaining value into a->cvs; past the end of a short last chunk,
 * nothing. */
B3_FN void b3_leaf_at(const struct b3_args *a, b3_u64 i)
{
	b3_u64 per = a->chunk_bytes / B3_LEAF_BYTES;
	b3_u64 c = a->chunk0 + i / per, j = i % per;
	b3_u64 len = b3_chunk_len(a->size, a->chunk_bytes, c);
	b3_u32 cv[8], *out = (b3_u32 *)a->cvs + i * 8;
	const b3_u8 *p = (const b3_u8 *)a->data + c * a->chunk_bytes;

	if (j >= b3_leaves(len))
		return;
	if (len - j * B3_LEAF_BYTES >= B3_LEAF_BYTES && !((b3_u64)p & 15))
		b3_leaf_full(p + j * B3_LEAF_BYTES, j,
			     b3_leaves(len) == 1 ? B3_ROOT : 0, cv);
	else
		b3_leaf(p, len, j, cv);
	for (int k = 0; k < 8; k++)
		out[k] = cv[k];
}

/* The first segment that ends after byte `off` (nseg if none). */
B3_FN b3_u64 b3_seg_find(const struct b3_seg *sg, b3_u64 nseg, b3_u64 off)
{
	b3_u64 lo = 0, hi = nseg;

	while (lo < hi) {
		b3_u64 mid = lo + (hi - lo) / 2;

		if (sg[mid].off + sg[mid].len <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Byte `pos` of the byte space; *k: a segment at or before the one that
 * holds it (advanced; positions come in increasing order). */
B3_FN b3_u32 b3_seg_byte(const struct b3_seg *sg, b3_u64 nseg, b3_u64 *k,
			 b3_u64 pos)
{
	while (*k < nseg && sg[*k].off + sg[*k].len <= pos)
		(*k)++;
	if (*k == nseg || sg[*k].off > pos)
		return 0; /* a gap: alignment padding */
	return ((const b3_u8 *)sg[*k].src)[pos - sg[*k].off];
}

/*
 * A reader's segment, held in registers: segment k (the first that ends
 * after the offset last looked up), its bytes [lo, hi) from src; lo = hi
 * = ~0 past the last.  Tensors are mostly megabytes long, so a reader
 * checks registers, not the table, for nearly every 16 bytes, and looks
 * the table up again (a binary search) only when it leaves them.
 */
struct b3_segc {
	b3_u64 k, lo, hi, src;
};

B3_FN void b3_segc_load(const struct b3_seg *sg, b3_u64 nseg, struct b3_segc *c)
{
	if (c->k < nseg) {
		c->lo = sg[c->k].off;
		c->hi = sg[c->k].off + sg[c->k].len;
		c->src = sg[c->k].src;
	} else {
		c->lo = c->hi = ~(b3_u64)0;
		c->src = 0;
	}
}

/* The reader's segment for offset `off`. */
B3_FN void b3_segc_find(const struct b3_seg *sg, b3_u64 nseg, struct b3_segc *c,
			b3_u64 off)
{
	c->k = b3_seg_find(sg, nseg, off);
	b3_segc_load(sg, nseg, c);
}

/*
 * Bytes [off, off + n) of the byte space (n <= 16) into m[0..3], zero
 * past n: one 16-byte load when one segment holds all 16 at an aligned
 * source address (tensors start at multiples of 256 bytes, so nearly
 * every piece), else byte by byte (a tensor's last bytes and the padding
 * after them, or a source that is not 16-byte aligned).  c: the reader's
 * segment, any offset order.
 */
B3_FN void b3_gather16(const struct b3_seg *sg, b3_u64 nseg, struct b3_segc *c,
		       b3_u64 off, b3_u32 n, b3_u32 m[4])
{
	b3_u64 kk;

	if (off < c->lo || off >= c->hi)
		b3_segc_find(sg, nseg, c, off);
	if (n == 16 && c->lo <= off && off + 16 <= c->hi &&
	    !((c->src + (off - c->lo)) & 15)) {
		b3_ld16((const b3_u8 *)(c->src + (off - c->lo)), m);
		return;
	}
	kk = c->k;
#ifdef __CUDACC__
#pragma unroll
#endif
	for (b3_u32 w = 0; w < 4; w++) {
		b3_u32 x = 0;

		for (b3_u32 t = 0; t < 4; t++)
			if (4 * w + t < n)
				x |= b3_seg_byte(sg, nseg, &kk, off + 4 * w + t)
				     << (8 * t);
		m[w] = x;
	}
}

/* m[0..3]'s first n bytes to dst (16-byte aligned: a piece of the byte
 * space of a fresh allocation). */
B3_FN void b3_scatter16(b3_u8 *dst, const b3_u32 m[4], b3_u32 n)
{
	if (n == 16) {
		b3_st16(dst, m);
		return;
	}
	/* Constant indices into m, as in b3_leaf: m stays in registers. */
#ifdef __CUDACC__
#pragma unroll
#endif
	for (b3_u32 w = 0; w < 4; w++)
		for (b3_u32 t = 0; t < 4; t++)
			if (4 * w + t < n)
				dst[4 * w + t] = (b3_u8)(m[w] >> (8 * t));
}

/* Bytes of piece q (16 bytes each) of a block of blen bytes. */
B3_FN b3_u32 b3_piece_len(b3_u32 blen, b3_u32 q)
{
	return blen <= 16 * q ? 0 : blen - 16 * q >= 16 ? 16 : blen - 16 * q;
}

/*
 * Leaf i of a fused launch: its bytes gathered from the segments, written
 * to the destination and hashed in one pass, so a put of device memory
 * reads its sources once instead of copying and then reading the copy.
 */
B3_FN void b3_copy_leaf_at(const struct b3_copy_args *ca, b3_u64 i)
{
	const struct b3_args *a = &ca->a;
	const struct b3_seg *sg = (const struct b3_seg *)ca->segs;
	b3_u64 per = a->chunk_bytes / B3_LEAF_BYTES;
	b3_u64 c = a->chunk0 + i / per, j = i % per;
	b3_u64 len = b3_chunk_len(a->size, a->chunk_bytes, c);
	b3_u64 base = c * a->chunk_bytes + j * B3_LEAF_BYTES;
	struct b3_segc sc;
	b3_u32 cv[8], *out = (b3_u32 *)a->cvs + i * 8, n, nblocks, root;

	if (j >= b3_leaves(len))
		return;
	n = (b3_u32)(len - j * B3_LEAF_BYTES < B3_LEAF_BYTES ?
			     len - j * B3_LEAF_BYTES :
			     B3_LEAF_BYTES);
	nblocks = (n + B3_BLOCK_BYTES - 1) / B3_BLOCK_BYTES;
	root = b3_leaves(len) == 1 ? B3_ROOT : 0;
	b3_segc_find(sg, ca->nseg, &sc, base);
	for (int w = 0; w < 8; w++)
		cv[w] = b3_iv(w);
#ifdef __CUDACC__
#pragma unroll 1
#endif
	for (b3_u32 b = 0; b < nblocks; b++) {
		b3_u32 m[16], blen = n - b * B3_BLOCK_BYTES;
		b3_u64 off = base + b * B3_BLOCK_BYTES;

		if (blen > B3_BLOCK_BYTES)
			blen = B3_BLOCK_BYTES;
#ifdef __CUDACC__
#pragma unroll
#endif
		for (b3_u32 q = 0; q < 4; q++) {
			b3_u32 pn = b3_piece_len(blen, q);

			b3_gather16(sg, ca->nseg, &sc, off + 16 * q, pn,
				    m + 4 * q);
			if (pn)
				b3_scatter16((b3_u8 *)a->data + off + 16 * q,
					     m + 4 * q, pn);
		}
		b3_compress(cv, m, j, blen, b3_block_flags(b, nblocks, root));
	}
	for (int w = 0; w < 8; w++)
		out[w] = cv[w];
}

/* One level of a chunk's merge: the pairs t0, t0 + step, ... of the n
 * nodes at `in` into `to` (a GPU block's thread takes t0 = its index;
 * the fake driver takes them all), the odd last node carried up by the
 * caller with t0 == 0.  Returns the next level's node count. */
B3_FN b3_u64 b3_level(const b3_u32 *in, b3_u32 *to, b3_u64 n, b3_u64 t0,
		      b3_u64 step)
{
	b3_u64 pairs = n / 2;

	for (b3_u64 t = t0; t < pairs; t += step)
		b3_parent(in + 16 * t, in + 16 * t + 8, 0, to + 8 * t);
	if ((n & 1) && t0 == 0)
		for (int w = 0; w < 8; w++)
			to[8 * pairs + w] = in[8 * (n - 1) + w];
	return pairs + (n & 1);
}

/* The chunk's digest from its last one or two nodes. */
B3_FN void b3_root(const b3_u32 *in, b3_u64 n, b3_u32 *dig)
{
	if (n == 2)
		b3_parent(in, in + 8, 1, dig);
	else
		for (int w = 0; w < 8; w++)
			dig[w] = in[w];
}

#endif /* TC_B3CORE_H */
