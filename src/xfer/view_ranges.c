/*
 * view_ranges.c - a view plan's pieces as file runs (view_ranges.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "tcast/errors.h"
#include "view_ranges.h"

static int by_dst(const void *a, const void *b)
{
	const struct tc__load_run *x = a, *y = b;

	return x->dst < y->dst ? -1 : x->dst > y->dst;
}

int tc__view_ranges(const struct tc__source *src, const struct tc__view_plan *v,
		    const uint64_t *dst_of, uint64_t size,
		    struct tc__load_plan *out, char *err, size_t errlen)
{
	struct tc__load_run *runs;
	uint64_t n = 0, k = 0;

	memset(out, 0, sizeof(*out));
	if (!size)
		size = v->out.total_bytes;
	for (uint32_t i = 0; i < v->out.ntensors; i++) {
		const struct tc__view_tplan *t = &v->t[i];
		uint64_t base = dst_of ? dst_of[i] : v->out.tensors[i].offset;

		if (!dst_of && t->flags) {
			snprintf(err, errlen,
				 "view: tensor '%s' is transposed or cast: "
				 "its gather buffer needs a place of its own",
				 v->out.tensors[i].name);
			return TC_EINVAL;
		}
		if (t->gather_bytes &&
		    (base > size || t->gather_bytes > size - base)) {
			snprintf(err, errlen,
				 "view: tensor '%s': its %" PRIu64
				 " bytes at %" PRIu64
				 " end past the range plan (%" PRIu64 " bytes)",
				 v->out.tensors[i].name, t->gather_bytes, base,
				 size);
			return TC_EINVAL;
		}
		n += t->nruns;
	}
	runs = tc__calloc(n ? n : 1, sizeof(*runs));
	if (!runs) {
		snprintf(err, errlen, "view: out of memory");
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < v->out.ntensors; i++) {
		const struct tc__view_tplan *t = &v->t[i];
		const struct tc__tensor *s = &src->table.tensors[t->src_index];
		uint64_t base = dst_of ? dst_of[i] : v->out.tensors[i].offset;

		for (uint32_t r = 0; r < t->nruns; r++) {
			const struct tc__view_run *x = &t->runs[r];
			struct tc__load_run *y = &runs[k++];

			y->dst = base + x->dst;
			y->off = s->src_offset + (x->src - s->offset);
			y->len = x->len;
			y->count = x->count;
			y->stride = x->count > 1 ? x->stride : x->len;
			y->file = s->src_file;
			y->name = v->out.tensors[i].name;
		}
	}
	qsort(runs, n, sizeof(*runs), by_dst);
	for (uint64_t r = 1; r < n; r++)
		if (runs[r].dst <
		    runs[r - 1].dst + runs[r - 1].len * runs[r - 1].count) {
			snprintf(err, errlen,
				 "view: the gather buffers of '%s' and '%s' "
				 "overlap in the range plan",
				 runs[r - 1].name, runs[r].name);
			tc__free(runs);
			return TC_EINVAL;
		}
	out->runs = runs;
	out->nruns = n;
	out->size = size;
	return 0;
}
