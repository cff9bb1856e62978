/*
 * vcase.c - see vcase.h.
 */
#include <string.h>

#include "format/view.h"
#include "tcast/dtype.h"
#include "vcase.h"

static const int dts[] = { TC_DTYPE_BF16, TC_DTYPE_F16, TC_DTYPE_F32,
			   TC_DTYPE_I8, TC_DTYPE_I64 };

void t_vcase_reference(const struct t_vcase *c, const uint8_t *src,
		       uint8_t *out)
{
	size_t is = tc_dtype_bits(c->src_dt) / 8;
	size_t os = tc_dtype_bits(c->dst_dt) / 8;
	uint64_t oshape[4], idx[4] = { 0 }, sidx[4], n = 1;
	uint32_t perm[4];

	for (uint32_t d = 0; d < c->ndim; d++)
		perm[d] = d;
	if (c->swap) {
		perm[c->d0] = c->d1;
		perm[c->d1] = c->d0;
	}
	for (uint32_t d = 0; d < c->ndim; d++) {
		oshape[d] = c->stop[perm[d]] - c->start[perm[d]];
		n *= oshape[d];
	}
	for (uint64_t e = 0; e < n; e++) {
		uint64_t rem = e, off = 0;

		for (int d = (int)c->ndim - 1; d >= 0; d--) {
			idx[d] = rem % oshape[d];
			rem /= oshape[d];
		}
		for (uint32_t d = 0; d < c->ndim; d++)
			sidx[perm[d]] = idx[d] + c->start[perm[d]];
		for (uint32_t d = 0; d < c->ndim; d++)
			off = off * c->shape[d] + sidx[d];
		tc__view_cast(c->src_dt, c->dst_dt, src + off * is,
			      out + e * os, 1);
	}
}

void t_vcase_random(struct t_rng *rng, struct t_vcase *c)
{
	memset(c, 0, sizeof(*c));
	c->ndim = 1 + (uint32_t)t_rng_below(rng, 4);
	c->src_dt = dts[t_rng_below(rng, 5)];
	c->dst_dt = c->src_dt;
	if (tc_dtype_bits(c->src_dt) <= 32 && c->src_dt != TC_DTYPE_I8 &&
	    t_rng_below(rng, 2))
		c->dst_dt = dts[t_rng_below(rng, 3)];
	for (uint32_t d = 0; d < c->ndim; d++) {
		c->shape[d] = 1 + t_rng_below(rng, c->ndim > 2 ? 7 : 40);
		c->stop[d] = c->shape[d];
		if (t_rng_below(rng, 2)) {
			c->start[d] = t_rng_below(rng, c->shape[d]);
			c->stop[d] =
				c->start[d] + 1 +
				t_rng_below(rng, c->shape[d] - c->start[d]);
			c->sliced[d] = 1;
		}
	}
	if (c->ndim >= 2 && t_rng_below(rng, 2)) {
		c->swap = 1;
		c->d0 = (int)t_rng_below(rng, c->ndim);
		do
			c->d1 = (int)t_rng_below(rng, c->ndim);
		while (c->d1 == c->d0);
	}
}
