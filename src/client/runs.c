/*
 * runs.c - tc_tensor_runs: which tensors of a table a binding can make
 * together.
 *
 * Tensors of one dtype and shape lying at equal spacing in the byte space
 * are one strided view of shape (count,) + shape, which one unbind splits:
 * a Python binding then gets the views out of the framework's C++ instead
 * of making one interpreted plan row and one call per tensor.  On an H100
 * host (2026-12-05) a fresh process's first tensor_dict of a 1,000-tensor
 * artifact spent ~1 ms of its ~5.5 ms building those rows.  A decoder's
 * layers repeat the same shapes at the layer's stride, interleaved with
 * the layer's other tensors (and, in a safetensors file, in the order of
 * sorted names: layer 1, 10, 100, 101, ...), so the grouping is by dtype
 * and shape over the whole table, members ordered by offset, not by
 * neighbours in table order.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "tcast/client.h"
#include "tcast/dtype.h"
#include "tcast/errors.h"

/* A candidate: table position and its group key beyond dtype and shape. */
struct cand {
	uint32_t pos;
	uint64_t key;
};

static int by_layout(const void *pa, const void *pb, void *arg)
{
	const struct cand *ca = pa, *cb = pb;
	const struct tc_tensor_info *t = arg;
	const struct tc_tensor_info *a = &t[ca->pos], *b = &t[cb->pos];

	if (a->dtype != b->dtype)
		return a->dtype < b->dtype ? -1 : 1;
	if (a->ndim != b->ndim)
		return a->ndim < b->ndim ? -1 : 1;
	for (uint32_t d = 0; d < a->ndim; d++)
		if (a->shape[d] != b->shape[d])
			return a->shape[d] < b->shape[d] ? -1 : 1;
	if (ca->key != cb->key)
		return ca->key < cb->key ? -1 : 1;
	if (a->offset != b->offset)
		return a->offset < b->offset ? -1 : 1;
	return ca->pos < cb->pos ? -1 : 1;
}

static bool same_group(const struct tc_tensor_info *t, const struct cand *a,
		       const struct cand *b)
{
	const struct tc_tensor_info *x = &t[a->pos], *y = &t[b->pos];

	return a->key == b->key && x->dtype == y->dtype && x->ndim == y->ndim &&
	       !memcmp(x->shape, y->shape, sizeof(x->shape[0]) * x->ndim);
}

/* Whole bytes per element and something to view: sub-byte dtypes pack
 * elements across tensor boundaries' bytes, empty tensors have no memory. */
static bool can_run(const struct tc_tensor_info *t)
{
	uint32_t bits = tc_dtype_bits(t->dtype);

	return t->ndim <= 16 && t->nbytes && bits && bits % 8 == 0;
}

/* FNV-1a of the name with every run of digits as one '#': the same weight
 * of every layer ("layers.#.self_attn.q_proj.weight") gets one key, so
 * q_proj and o_proj, alike in dtype and shape and interleaved in memory,
 * make two runs at the layer's stride instead of none.  A collision only
 * merges two groups: runs depend on offsets, never on names. */
static uint64_t masked_name_key(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch >= '0' && ch <= '9') {
			while (s[1] >= '0' && s[1] <= '9')
				s++;
			ch = '#';
		}
		h = (h ^ ch) * 0x100000001b3ull;
	}
	return h;
}

/* One grouping pass over the tensors not yet in a run, keyed by masked
 * name (by_name) or by dtype and shape alone: appends runs at runs[*nruns]
 * and their members at order[*w]. */
static void find_runs(const struct tc_tensor_info *t, uint32_t n,
		      uint32_t min_run, bool by_name, struct cand *c,
		      uint8_t *in_run, struct tc_tensor_run *runs,
		      uint32_t *nruns, uint32_t *order, uint32_t *w)
{
	uint32_t m = 0;

	for (uint32_t i = 0; i < n; i++)
		if (!in_run[i] && can_run(&t[i]))
			c[m++] = (struct cand){
				.pos = i,
				.key = by_name && t[i].name ?
					       masked_name_key(t[i].name) :
					       0,
			};
	qsort_r(c, m, sizeof(*c), by_layout, (void *)t);
	for (uint32_t a = 0; a < m;) {
		uint64_t d = 0, o = t[c[a].pos].offset;
		uint32_t b = a + 1;

		if (b < m && same_group(t, &c[a], &c[b]) &&
		    t[c[b].pos].offset > o) {
			d = t[c[b].pos].offset - o;
			while (b < m && same_group(t, &c[a], &c[b]) &&
			       t[c[b].pos].offset - t[c[b - 1].pos].offset == d)
				b++;
		}
		if (b - a < min_run) {
			a++; /* a is in no run; retry from its successor */
			continue;
		}
		runs[(*nruns)++] = (struct tc_tensor_run){
			.first = *w, .count = b - a, .offset = o, .spacing = d
		};
		for (; a < b; a++) {
			in_run[c[a].pos] = 1;
			order[(*w)++] = c[a].pos;
		}
	}
}

TC_API int64_t tc_tensor_runs(const struct tc_tensor_info *t, uint32_t n,
			      uint32_t min_run, struct tc_tensor_run *runs,
			      uint32_t *order)
{
	uint32_t w = 0, nruns = 0;
	uint8_t *in_run;
	struct cand *c;

	if (min_run < 2 || (n && (!t || !runs || !order)))
		return TC_EINVAL;
	in_run = tc__calloc(n ? n : 1, 1);
	c = tc__calloc(n ? n : 1, sizeof(*c));
	if (!in_run || !c) {
		tc__free(in_run);
		tc__free(c);
		return -ENOMEM;
	}
	/* By name first (a layer's alike weights apart), then whatever is
	 * left by dtype and shape alone (equal tensors of unrelated names). */
	find_runs(t, n, min_run, true, c, in_run, runs, &nruns, order, &w);
	find_runs(t, n, min_run, false, c, in_run, runs, &nruns, order, &w);
	for (uint32_t i = 0; i < n; i++)
		if (!in_run[i])
			order[w++] = i;
	tc__free(c);
	tc__free(in_run);
	return nruns;
}
