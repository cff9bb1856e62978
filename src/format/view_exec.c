/*
 * view_exec.c - applying a view plan on the host: from memory (a mapped
 * host replica) or from a safetensors source read with pread.
 *
 * Each output tensor is made in two steps.  Gathering walks the plan's runs
 * and hands every piece to a sink: with no transform the piece is copied
 * straight to its place in the destination; with only a cast it is
 * converted on the way; with a transpose it is copied into a scratch
 * buffer (the sliced tensor, packed, in the source dtype).  Finishing then
 * permutes the scratch into the destination (a cache-blocked 2D transpose
 * when the last two dims swap, a strided walk otherwise) and casts.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/compiler.h"
#include "common/io.h"
#include "fmt_internal.h"
#include "tcast/dtype.h"
#include "tcast/errors.h"
#include "view.h"

#define STAGE_BYTES ((uint64_t)8 << 20) /* disk staging buffer */
#define GAP_BYTES   4096		/* read through gaps up to a page */
#define BLOCK	    32			/* transpose tile, elements */

/* ================================================================ casts */

static inline float f32_from_bits(uint32_t x)
{
	float f;

	memcpy(&f, &x, 4);
	return f;
}

static inline uint32_t f32_bits(float f)
{
	uint32_t x;

	memcpy(&x, &f, 4);
	return x;
}

static inline float bf16_to_f32(uint16_t h)
{
	return f32_from_bits((uint32_t)h << 16);
}

/* Round to nearest even; a NaN stays a (quiet) NaN of the same sign. */
static inline uint16_t f32_to_bf16(float f)
{
	uint32_t x = f32_bits(f);

	if ((x & 0x7fffffffu) > 0x7f800000u)
		return (uint16_t)((x >> 16) | 0x40);
	return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
}

static inline float f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16;
	uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;

	if (e == 0) /* zero or subnormal: m * 2^-24, exact in f32 */
		return f32_from_bits(f32_bits((float)m * 0x1p-24f) | sign);
	if (e == 31)
		return f32_from_bits(sign | 0x7f800000u | (m << 13));
	return f32_from_bits(sign | ((e + 112) << 23) | (m << 13));
}

/* Round to nearest even, overflow to infinity, subnormals kept. */
static inline uint16_t f32_to_f16(float f)
{
	uint32_t x = f32_bits(f);
	uint32_t sign = (x >> 16) & 0x8000;
	uint32_t ax = x & 0x7fffffffu;

	if (ax > 0x7f800000u) /* NaN: quiet, top payload bits kept */
		return (uint16_t)(sign | 0x7e00 | ((ax >> 13) & 0x3ff));
	if (ax >= 0x477ff000u) /* >= 65520 rounds past the largest: inf */
		return (uint16_t)(sign | 0x7c00);
	if (ax < 0x38800000u) {
		/* Below the smallest normal: adding 0.5 puts the value's
		 * 2^-24 units in the low mantissa bits, rounded by the FPU
		 * to nearest even (the default rounding mode). */
		float a = f32_from_bits(ax) + 0.5f;

		return (uint16_t)(sign | (f32_bits(a) - 0x3f000000u));
	}
	ax += 0xc8000fffu + ((ax >> 13) & 1); /* rebias 127 -> 15, round */
	return (uint16_t)(sign | (ax >> 13));
}

static inline float load_f(int dt, const uint8_t *p)
{
	uint16_t h;
	float f;

	switch (dt) {
	case TC_DTYPE_F32:
		memcpy(&f, p, 4);
		return f;
	case TC_DTYPE_BF16:
		memcpy(&h, p, 2);
		return bf16_to_f32(h);
	default: /* F16 */
		memcpy(&h, p, 2);
		return f16_to_f32(h);
	}
}

static inline void store_f(int dt, uint8_t *p, float f)
{
	uint16_t h;

	switch (dt) {
	case TC_DTYPE_F32:
		memcpy(p, &f, 4);
		return;
	case TC_DTYPE_BF16:
		h = f32_to_bf16(f);
		break;
	default: /* F16 */
		h = f32_to_f16(f);
		break;
	}
	memcpy(p, &h, 2);
}

void tc__view_cast(int from, int to, const void *in, void *out, uint64_t n)
{
	const uint8_t *s = in;
	uint8_t *d = out;
	size_t is = tc_dtype_bits(from) / 8, os = tc_dtype_bits(to) / 8;

	if (from == to) {
		memmove(out, in, n * is);
		return;
	}
	/* One loop per pair so the switches fold away. */
#define CAST_LOOP(F, T)                                                \
	do {                                                           \
		for (uint64_t i = 0; i < n; i++)                       \
			store_f(T, d + i * os, load_f(F, s + i * is)); \
	} while (0)
	if (from == TC_DTYPE_F32 && to == TC_DTYPE_BF16)
		CAST_LOOP(TC_DTYPE_F32, TC_DTYPE_BF16);
	else if (from == TC_DTYPE_F32 && to == TC_DTYPE_F16)
		CAST_LOOP(TC_DTYPE_F32, TC_DTYPE_F16);
	else if (from == TC_DTYPE_BF16 && to == TC_DTYPE_F32)
		CAST_LOOP(TC_DTYPE_BF16, TC_DTYPE_F32);
	else if (from == TC_DTYPE_F16 && to == TC_DTYPE_F32)
		CAST_LOOP(TC_DTYPE_F16, TC_DTYPE_F32);
	else if (from == TC_DTYPE_BF16 && to == TC_DTYPE_F16)
		CAST_LOOP(TC_DTYPE_BF16, TC_DTYPE_F16);
	else
		CAST_LOOP(TC_DTYPE_F16, TC_DTYPE_BF16);
#undef CAST_LOOP
}

/* ============================================================ transpose */

/* out[c][r] = in[r][c] for an R x C matrix, in BLOCK x BLOCK tiles so both
 * sides stay in cache. */
#define T2D(NAME, TYPE)                                                          \
	static void NAME(const uint8_t *in, uint8_t *out, uint64_t R,            \
			 uint64_t C)                                             \
	{                                                                        \
		for (uint64_t r0 = 0; r0 < R; r0 += BLOCK)                       \
			for (uint64_t c0 = 0; c0 < C; c0 += BLOCK) {             \
				uint64_t re = TC_MIN(r0 + BLOCK, R);             \
				uint64_t ce = TC_MIN(c0 + BLOCK, C);             \
				for (uint64_t c = c0; c < ce; c++)               \
					for (uint64_t r = r0; r < re; r++)       \
						memcpy(out + (c * R +            \
							      r) * sizeof(TYPE), \
						       in + (r * C +             \
							     c) * sizeof(TYPE),  \
						       sizeof(TYPE));            \
			}                                                        \
	}
T2D(t2d_1, uint8_t)
T2D(t2d_2, uint16_t)
T2D(t2d_4, uint32_t)
T2D(t2d_8, uint64_t)
#undef T2D

static void transpose2d(const uint8_t *in, uint8_t *out, uint64_t R, uint64_t C,
			size_t es)
{
	switch (es) {
	case 1:
		t2d_1(in, out, R, C);
		break;
	case 2:
		t2d_2(in, out, R, C);
		break;
	case 4:
		t2d_4(in, out, R, C);
		break;
	default:
		t2d_8(in, out, R, C);
		break;
	}
}

/* The packed gather buffer `in` (shape gshape) into `out` (dims permuted). */
static void permute(const struct tc__view_tplan *t, const uint8_t *in,
		    uint8_t *out, size_t es)
{
	uint64_t gst[TC_MAX_RANK], ost[TC_MAX_RANK], oshape[TC_MAX_RANK];
	uint64_t idx[TC_MAX_RANK] = { 0 }, acc = 1, total = 1;
	int n = t->ndim;
	bool last2 = n >= 2;

	for (int d = n - 1; d >= 0; d--) {
		gst[d] = acc;
		acc *= t->gshape[d];
	}
	total = acc;
	if (!total)
		return;
	for (int d = 0; d < n - 2; d++)
		if (t->perm[d] != d)
			last2 = false;
	if (last2 && t->perm[n - 2] == n - 1 && t->perm[n - 1] == n - 2) {
		uint64_t R = t->gshape[n - 2], C = t->gshape[n - 1];

		for (uint64_t b = 0; b < total / (R * C); b++)
			transpose2d(in + b * R * C * es, out + b * R * C * es,
				    R, C, es);
		return;
	}
	for (int d = 0; d < n; d++) {
		oshape[d] = t->gshape[t->perm[d]];
		ost[d] = gst[t->perm[d]];
	}
	/* Generic: walk the output in order, reading the input strided. */
	uint64_t inner = oshape[n - 1], istride = ost[n - 1] * es;
	uint8_t *o = out;

	for (;;) {
		const uint8_t *p = in;

		for (int d = 0; d < n - 1; d++)
			p += idx[d] * ost[d] * es;
		for (uint64_t k = 0; k < inner; k++, o += es, p += istride)
			memcpy(o, p, es);
		int d = n - 2;

		for (; d >= 0; d--) {
			if (++idx[d] < oshape[d])
				break;
			idx[d] = 0;
		}
		if (d < 0)
			break;
	}
}

/* ================================================================= sink */

struct sink {
	const struct tc__view_tplan *t;
	uint8_t *dst;	 /* the output tensor */
	uint8_t *gather; /* owned scratch when transposing, else NULL */
	size_t in_es;	 /* bytes per source element (0: sub-byte) */
	size_t out_es;	 /* bytes per output element */
};

static int sink_init(struct sink *k, const struct tc__view_tplan *t, void *dst)
{
	k->t = t;
	k->dst = dst;
	k->gather = NULL;
	k->in_es = tc_dtype_bits(t->src_dtype) / 8;
	k->out_es = tc_dtype_bits(t->dst_dtype) / 8;
	if ((t->flags & TC__VIEW_F_TRANSPOSE) && t->gather_bytes) {
		k->gather = tc__malloc(t->gather_bytes);
		if (!k->gather)
			return -ENOMEM;
	}
	return 0;
}

/* Is a piece copied as is into the destination? */
static bool sink_plain(const struct sink *k)
{
	return !k->gather && !(k->t->flags & TC__VIEW_F_CAST);
}

static void sink_put(struct sink *k, const uint8_t *src, uint64_t dst_off,
		     uint64_t len)
{
	if (k->gather)
		memcpy(k->gather + dst_off, src, len);
	else if (k->t->flags & TC__VIEW_F_CAST)
		tc__view_cast(k->t->src_dtype, k->t->dst_dtype, src,
			      k->dst + dst_off / k->in_es * k->out_es,
			      len / k->in_es);
	else
		memcpy(k->dst + dst_off, src, len);
}

static int sink_finish(struct sink *k)
{
	const struct tc__view_tplan *t = k->t;
	uint8_t *tmp;

	if (!k->gather)
		return 0;
	if (!(t->flags & TC__VIEW_F_CAST)) {
		permute(t, k->gather, k->dst, k->in_es);
		return 0;
	}
	tmp = tc__malloc(t->gather_bytes);
	if (!tmp)
		return -ENOMEM;
	permute(t, k->gather, tmp, k->in_es);
	tc__view_cast(t->src_dtype, t->dst_dtype, tmp, k->dst,
		      t->gather_bytes / k->in_es);
	tc__free(tmp);
	return 0;
}

static void sink_release(struct sink *k)
{
	tc__free(k->gather);
	k->gather = NULL;
}

static int check_dst(const struct tc__view_plan *p, uint32_t i,
		     uint64_t dst_len, char *err, size_t errlen)
{
	if (i >= p->out.ntensors) {
		tc__fmt_err(err, errlen, "view: no output tensor #%u (%u)", i,
			    p->out.ntensors);
		return TC_EINVAL;
	}
	if (dst_len < p->out.tensors[i].nbytes) {
		tc__fmt_err(err, errlen,
			    "view: tensor '%s': destination holds %" PRIu64
			    " bytes, the view needs %" PRIu64,
			    p->out.tensors[i].name, dst_len,
			    p->out.tensors[i].nbytes);
		return TC_EINVAL;
	}
	return 0;
}

/* ============================================================ from memory */

int tc__view_exec_host(const struct tc__view_plan *p, uint32_t i,
		       const void *src, uint64_t src_len, void *dst,
		       uint64_t dst_len, struct tc__view_io *io, char *err,
		       size_t errlen)
{
	const struct tc__view_tplan *t;
	struct sink k;
	int ret;

	ret = check_dst(p, i, dst_len, err, errlen);
	if (ret < 0)
		return ret;
	t = &p->t[i];
	/* Check every run against the source before writing anything. */
	for (uint32_t r = 0; r < t->nruns; r++) {
		const struct tc__view_run *run = &t->runs[r];
		uint64_t end;

		if (__builtin_mul_overflow(run->count - 1, run->stride, &end) ||
		    __builtin_add_overflow(end, run->src, &end) ||
		    __builtin_add_overflow(end, run->len, &end) ||
		    end > src_len) {
			tc__fmt_err(err, errlen,
				    "view: tensor '%s': run %u ends past the "
				    "source (%" PRIu64 " bytes)",
				    p->out.tensors[i].name, r, src_len);
			return TC_EINVAL;
		}
	}
	ret = sink_init(&k, t, dst);
	if (ret < 0)
		goto out_nomem;
	for (uint32_t r = 0; r < t->nruns; r++) {
		const struct tc__view_run *run = &t->runs[r];

		for (uint64_t j = 0; j < run->count; j++)
			sink_put(&k,
				 (const uint8_t *)src + run->src +
					 j * run->stride,
				 run->dst + j * run->len, run->len);
		if (io)
			io->bytes_read += run->len * run->count;
	}
	ret = sink_finish(&k);
	sink_release(&k);
	if (ret < 0)
		goto out_nomem;
	return 0;

out_nomem:
	tc__fmt_err(err, errlen, "view: tensor '%s': out of memory",
		    p->out.tensors[i].name);
	return ret;
}

/* ============================================================== from disk */

/* A cursor over the pieces of a tensor's runs. */
struct cursor {
	const struct tc__view_tplan *t;
	uint32_t r;
	uint64_t j;
};

static bool cur_get(const struct cursor *c, uint64_t *src, uint64_t *dst,
		    uint64_t *len)
{
	const struct tc__view_run *run;

	if (c->r >= c->t->nruns)
		return false;
	run = &c->t->runs[c->r];
	*src = run->src + c->j * run->stride;
	*dst = run->dst + c->j * run->len;
	*len = run->len;
	return true;
}

static void cur_next(struct cursor *c)
{
	if (++c->j >= c->t->runs[c->r].count) {
		c->j = 0;
		c->r++;
	}
}

int tc__view_exec_source(const struct tc__view_plan *p, uint32_t i,
			 const struct tc__source *s, void *dst,
			 uint64_t dst_len, struct tc__view_io *io, char *err,
			 size_t errlen)
{
	const struct tc__view_tplan *t;
	const struct tc__tensor *st;
	const struct tc__source_file *f;
	struct cursor c;
	struct sink k;
	uint8_t *stage = NULL;
	uint64_t src, doff, len;
	int ret;

	ret = check_dst(p, i, dst_len, err, errlen);
	if (ret < 0)
		return ret;
	t = &p->t[i];
	if (t->src_index >= s->table.ntensors) {
		tc__fmt_err(err, errlen,
			    "view: tensor '%s': planned against another table",
			    p->out.tensors[i].name);
		return TC_EINVAL;
	}
	st = &s->table.tensors[t->src_index];
	f = &s->files[st->src_file];
	ret = sink_init(&k, t, dst);
	if (ret < 0)
		goto out_nomem;
	c = (struct cursor){ .t = t };
	while (cur_get(&c, &src, &doff, &len)) {
		/* The piece's place in its file: runs lie inside the
		 * tensor, whose bytes lie inside its file (source.c). */
		uint64_t foff = st->src_offset + (src - st->offset);
		uint64_t ws, we;
		struct cursor c0;

		if (src < st->offset || src - st->offset + len > st->nbytes) {
			tc__fmt_err(err, errlen,
				    "view: tensor '%s': planned against "
				    "another table",
				    p->out.tensors[i].name);
			ret = TC_EINVAL;
			goto out_release;
		}
		if (len >= STAGE_BYTES && sink_plain(&k)) {
			/* Big and untouched (a row shard): straight into
			 * the destination. */
			ret = tc__pread_exact(f->fd, k.dst + doff, len, foff);
			if (ret < 0)
				goto out_read;
			if (io) {
				io->bytes_read += len;
				io->reads++;
			}
			cur_next(&c);
			continue;
		}
		if (!stage) {
			stage = tc__malloc(STAGE_BYTES);
			if (!stage) {
				ret = -ENOMEM;
				goto out_nomem_release;
			}
		}
		if (len >= STAGE_BYTES) {
			/* Big and transformed: through the stage in
			 * element-aligned chunks (STAGE_BYTES is a
			 * multiple of every element size). */
			for (uint64_t o = 0; o < len; o += STAGE_BYTES) {
				uint64_t n = TC_MIN(STAGE_BYTES, len - o);

				ret = tc__pread_exact(f->fd, stage, n,
						      foff + o);
				if (ret < 0)
					goto out_read;
				sink_put(&k, stage, doff + o, n);
				if (io) {
					io->bytes_read += n;
					io->reads++;
				}
			}
			cur_next(&c);
			continue;
		}
		/* Coalesce following pieces less than a page apart into one
		 * read of at most STAGE_BYTES. */
		c0 = c;
		ws = foff;
		we = foff + len;
		cur_next(&c);
		while (cur_get(&c, &src, &doff, &len)) {
			uint64_t qo = st->src_offset + (src - st->offset);

			if (qo < we || qo - we > GAP_BYTES ||
			    qo + len - ws > STAGE_BYTES || src < st->offset ||
			    src - st->offset + len > st->nbytes)
				break;
			we = qo + len;
			cur_next(&c);
		}
		ret = tc__pread_exact(f->fd, stage, we - ws, ws);
		if (ret < 0)
			goto out_read;
		if (io) {
			io->bytes_read += we - ws;
			io->reads++;
		}
		for (; c0.r != c.r || c0.j != c.j; cur_next(&c0)) {
			cur_get(&c0, &src, &doff, &len);
			sink_put(&k,
				 stage + (st->src_offset + (src - st->offset) -
					  ws),
				 doff, len);
		}
	}
	ret = sink_finish(&k);
	if (ret < 0)
		goto out_nomem_release;
	tc__free(stage);
	sink_release(&k);
	return 0;

out_read:
	tc__fmt_err(err, errlen, "view: tensor '%s': cannot read '%s': %s",
		    p->out.tensors[i].name, f->name, tc_strerror(ret));
	goto out_release;
out_nomem_release:
	tc__fmt_err(err, errlen, "view: tensor '%s': out of memory",
		    p->out.tensors[i].name);
out_release:
	tc__free(stage);
	sink_release(&k);
	return ret;

out_nomem:
	tc__fmt_err(err, errlen, "view: tensor '%s': out of memory",
		    p->out.tensors[i].name);
	return ret;
}
