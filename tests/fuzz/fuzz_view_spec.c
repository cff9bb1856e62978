/*
 * fuzz_view_spec.c - libFuzzer target for the view spec's JSON form and the
 * planner and host executor behind it.
 *
 * Parses the input with tc__view_spec_parse, plans it against a fixed
 * table of mixed dtypes and ranks, and realizes every output tensor from a
 * source buffer.  Checks the plan's invariants (runs inside the source and
 * covering each gather buffer exactly, offsets aligned, shapes matching
 * nbytes) and aborts on a violation; ASan catches the rest.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/tensor.h"
#include "format/view.h"
#include "tcast/dtype.h"
#include "tcast/errors.h"

static const struct {
	const char *name;
	int dtype;
	uint8_t ndim;
	uint64_t shape[3];
} tensors[] = {
	{ "w", TC_DTYPE_BF16, 2, { 8, 6 } },
	{ "b", TC_DTYPE_F32, 1, { 8 } },
	{ "i", TC_DTYPE_I32, 2, { 4, 4 } },
	{ "x", TC_DTYPE_F16, 3, { 3, 4, 5 } },
	{ "q", TC_DTYPE_F4, 2, { 4, 8 } },
	{ "s", TC_DTYPE_F64, 0, { 0 } },
	{ "e", TC_DTYPE_F32, 2, { 0, 3 } },
};

static void check_plan(const struct tc__view_plan *p, uint64_t src_len)
{
	for (uint32_t i = 0; i < p->out.ntensors; i++) {
		const struct tc__view_tplan *t = &p->t[i];
		const struct tc__tensor *o = &p->out.tensors[i];
		uint64_t at = 0, nb;

		if (o->offset % TC_ALIGN ||
		    tc__tensor_nbytes(o->dtype, o->ndim, o->shape, &nb) ||
		    nb != o->nbytes)
			abort();
		for (uint32_t r = 0; r < t->nruns; r++) {
			const struct tc__view_run *x = &t->runs[r];

			if (x->dst != at || !x->count ||
			    x->src + (x->count - 1) * x->stride + x->len >
				    src_len)
				abort();
			at += x->len * x->count;
		}
		if (at != t->gather_bytes)
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint32_t n = sizeof(tensors) / sizeof(tensors[0]);
	struct tc__view_spec spec;
	struct tc__view_plan plan;
	struct tc__table t;
	uint8_t *src, *dst;
	char err[512];

	if (tc__view_spec_parse((const char *)data, size, &spec, err,
				sizeof(err)))
		return 0;
	tc__table_init(&t);
	t.tensors = tc__calloc(n, sizeof(*t.tensors));
	if (!t.tensors)
		abort();
	for (uint32_t i = 0; i < n; i++) {
		struct tc__tensor *x = &t.tensors[i];

		x->name = tc__strdup(tensors[i].name);
		x->dtype = (uint8_t)tensors[i].dtype;
		x->ndim = tensors[i].ndim;
		memcpy(x->shape, tensors[i].shape, sizeof(tensors[i].shape));
		if (tc__tensor_nbytes(x->dtype, x->ndim, x->shape, &x->nbytes))
			abort();
		t.ntensors = i + 1;
	}
	if (tc__table_layout(&t))
		abort();
	if (tc__view_plan(&t, "tc1:fuzz", &spec, &plan, err, sizeof(err)) ==
	    0) {
		check_plan(&plan, t.total_bytes);
		src = calloc(1, t.total_bytes + 1);
		dst = calloc(1, plan.out.total_bytes + 1);
		if (!src || !dst)
			abort();
		for (uint32_t i = 0; i < plan.out.ntensors; i++)
			if (tc__view_exec_host(&plan, i, src, t.total_bytes,
					       dst + plan.out.tensors[i].offset,
					       plan.out.tensors[i].nbytes, NULL,
					       err, sizeof(err)) == TC_EINVAL)
				abort();
		free(src);
		free(dst);
		tc__view_plan_release(&plan);
	}
	tc__table_release(&t);
	tc__view_spec_release(&spec);
	return 0;
}
