/*
 * test_runs.c - tc_tensor_runs (src/client/runs.c): the grouping of a
 * tensor table into runs that one strided view and one unbind make.
 *
 * The layouts a binding meets: a decoder's layers (alike weights
 * interleaved, in the order of sorted names), equal tensors of unrelated
 * names, aliases, sub-byte and empty tensors, and random tables checked
 * against the contract: order is a permutation, each run's members share
 * dtype and shape at equal spacing in offset order, and the tensors in no
 * run follow in table order.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tcast/client.h"
#include "tcast/dtype.h"
#include "tcast/errors.h"

#define MAXT 512

struct table {
	struct tc_tensor_info t[MAXT];
	char names[MAXT][48];
	uint32_t n;
	uint64_t end;
};

static void add(struct table *tb, const char *name, int dtype, uint32_t ndim,
		const uint64_t *shape, uint64_t offset)
{
	struct tc_tensor_info *x = &tb->t[tb->n];
	uint64_t numel = 1;

	snprintf(tb->names[tb->n], sizeof(tb->names[0]), "%s", name);
	memset(x, 0, sizeof(*x));
	x->name = tb->names[tb->n];
	x->dtype = dtype;
	x->ndim = ndim;
	x->offset = offset;
	for (uint32_t d = 0; d < ndim; d++) {
		x->shape[d] = shape[d];
		numel *= shape[d];
	}
	x->nbytes = (numel * tc_dtype_bits(dtype) + 7) / 8;
	if (offset + x->nbytes > tb->end)
		tb->end = offset + x->nbytes;
	tb->n++;
}

/* Append at the end of the byte space, 64-byte aligned. */
static void push(struct table *tb, const char *name, int dtype, uint32_t ndim,
		 const uint64_t *shape)
{
	add(tb, name, dtype, ndim, shape, (tb->end + 63) / 64 * 64);
}

struct result {
	struct tc_tensor_run runs[MAXT];
	uint32_t order[MAXT];
	int64_t nruns;
};

/* The contract, for any table. */
static void check_contract(const struct table *tb, uint32_t min_run,
			   const struct result *r)
{
	uint8_t seen[MAXT] = { 0 };
	uint32_t at = 0;

	assert_true(r->nruns >= 0);
	for (int64_t k = 0; k < r->nruns; k++) {
		const struct tc_tensor_run *run = &r->runs[k];
		const struct tc_tensor_info *p = &tb->t[r->order[run->first]];

		assert_int_equal(run->first, at);
		assert_true(run->count >= min_run);
		assert_true(run->spacing > 0);
		assert_int_equal(run->offset, p->offset);
		for (uint32_t i = 0; i < run->count; i++) {
			const struct tc_tensor_info *x =
				&tb->t[r->order[at + i]];

			assert_int_equal(x->dtype, p->dtype);
			assert_int_equal(x->ndim, p->ndim);
			assert_memory_equal(x->shape, p->shape,
					    sizeof(x->shape[0]) * x->ndim);
			assert_int_equal(x->offset,
					 run->offset + i * run->spacing);
			assert_true(x->nbytes > 0);
			assert_int_equal(tc_dtype_bits(x->dtype) % 8, 0);
		}
		at += run->count;
	}
	for (uint32_t i = 0; i < tb->n; i++) {
		assert_true(r->order[i] < tb->n);
		assert_false(seen[r->order[i]]);
		seen[r->order[i]] = 1;
	}
	for (uint32_t i = at + 1; i < tb->n; i++)
		assert_true(r->order[i - 1] < r->order[i]);
}

static void runs_of(const struct table *tb, uint32_t min_run, struct result *r)
{
	memset(r, 0xff, sizeof(*r));
	r->nruns = tc_tensor_runs(tb->t, tb->n, min_run, r->runs, r->order);
	check_contract(tb, min_run, r);
}

/* The run holding table position p, or -1. */
static int64_t run_of(const struct result *r, uint32_t p)
{
	for (int64_t k = 0; k < r->nruns; k++)
		for (uint32_t i = 0; i < r->runs[k].count; i++)
			if (r->order[r->runs[k].first + i] == p)
				return k;
	return -1;
}

/* A decoder: per layer q and o alike (interleaved), k and v alike, a norm;
 * the table in sorted-name order (layer 0, 1, 10, 11, 2, ...), the bytes
 * in layer order, as a safetensors file written from a state dict is. */
static void decoder_layers(void **state)
{
	/* A layer's weights in sorted-name order, where each lies in it. */
	static const struct {
		const char *name;
		int dtype;
		uint32_t ndim;
		uint64_t shape[2];
		uint64_t at;
	} w[] = {
		{ "k", TC_DTYPE_F32, 2, { 2, 16 }, 1024 },
		{ "norm", TC_DTYPE_BF16, 1, { 16 }, 1280 },
		{ "o", TC_DTYPE_F32, 2, { 8, 16 }, 512 },
		{ "q", TC_DTYPE_F32, 2, { 8, 16 }, 0 },
		{ "v", TC_DTYPE_F32, 2, { 2, 16 }, 1152 },
	};
	const uint64_t layer_bytes = 1344; /* the norm's 32 bytes, 64-aligned */
	static struct table tb;
	static struct result r;
	char order[12][8], name[48];

	(void)state;
	memset(&tb, 0, sizeof(tb));
	for (int l = 0; l < 12; l++)
		snprintf(order[l], sizeof(order[l]), "%d", l);
	qsort(order, 12, sizeof(order[0]),
	      (int (*)(const void *, const void *))strcmp);
	for (int i = 0; i < 12; i++) {
		int l = atoi(order[i]);

		for (int j = 0; j < 5; j++) {
			snprintf(name, sizeof(name), "model.layers.%d.%s", l,
				 w[j].name);
			add(&tb, name, w[j].dtype, w[j].ndim, w[j].shape,
			    (uint64_t)l * layer_bytes + w[j].at);
		}
	}
	runs_of(&tb, 4, &r);
	assert_int_equal(r.nruns, 5); /* one per weight, not per shape */
	for (int64_t k = 0; k < r.nruns; k++) {
		assert_int_equal(r.runs[k].count, 12);
		assert_int_equal(r.runs[k].spacing, layer_bytes);
	}
	/* q and o of one layer: alike, in different runs. */
	assert_int_not_equal(run_of(&r, 3), run_of(&r, 2));
}

/* Equal tensors with nothing alike in their names: one run by dtype and
 * shape; too short a run, sub-byte and empty tensors: none. */
static void unrelated_names_and_exclusions(void **state)
{
	static const char *names[] = { "alpha", "beta", "gamma", "delta",
				       "eps" };
	uint64_t s4[1] = { 4 }, s0[2] = { 3, 0 }, s8[1] = { 8 };
	static struct table tb;
	static struct result r;

	(void)state;
	memset(&tb, 0, sizeof(tb));
	for (int i = 0; i < 5; i++)
		push(&tb, names[i], TC_DTYPE_F16, 1, s4);
	for (int i = 0; i < 3; i++)
		push(&tb, "short", TC_DTYPE_I32, 1, s8);
	for (int i = 0; i < 6; i++)
		push(&tb, "fp4", TC_DTYPE_F4, 1, s8);
	for (int i = 0; i < 6; i++)
		add(&tb, "empty", TC_DTYPE_F32, 2, s0, 64 * (uint64_t)i);
	runs_of(&tb, 4, &r);
	assert_int_equal(r.nruns, 1);
	assert_int_equal(r.runs[0].count, 5);
	assert_int_equal(r.runs[0].spacing, 64);
	for (uint32_t i = 5; i < tb.n; i++)
		assert_int_equal(run_of(&r, i), -1);
	/* A lower bar makes the three I32s a run, never the others. */
	runs_of(&tb, 2, &r);
	assert_int_equal(r.nruns, 2);
}

/* Two names at one offset (an alias): the run takes one of them; the
 * other is in no run (a zero spacing makes no strided view here). */
static void aliases(void **state)
{
	uint64_t s[1] = { 16 };
	static struct table tb;
	static struct result r;
	char name[48];

	(void)state;
	memset(&tb, 0, sizeof(tb));
	for (int i = 0; i < 6; i++) {
		snprintf(name, sizeof(name), "w.%d", i);
		add(&tb, name, TC_DTYPE_F32, 1, s, 64 * (uint64_t)i);
	}
	add(&tb, "tied", TC_DTYPE_F32, 1, s, 0);
	runs_of(&tb, 4, &r);
	assert_int_equal(r.nruns, 1);
	assert_int_equal(r.runs[0].count, 6);
	assert_int_equal(run_of(&r, 6), -1);
}

static void bad_arguments(void **state)
{
	struct tc_tensor_info t = { 0 };
	struct tc_tensor_run runs[1];
	uint32_t order[1];

	(void)state;
	assert_int_equal(tc_tensor_runs(&t, 1, 1, runs, order), TC_EINVAL);
	assert_int_equal(tc_tensor_runs(NULL, 1, 4, runs, order), TC_EINVAL);
	assert_int_equal(tc_tensor_runs(&t, 1, 4, runs, NULL), TC_EINVAL);
	assert_int_equal(tc_tensor_runs(NULL, 0, 4, NULL, NULL), 0);
}

/* Random tables: dtypes (sub-byte among them), shapes from a few, offsets
 * laid out, shuffled, repeated and overlapping; names with digits. */
static void random_tables(void **state)
{
	static const int dts[] = { TC_DTYPE_F32, TC_DTYPE_BF16, TC_DTYPE_U8,
				   TC_DTYPE_F4, TC_DTYPE_I64 };
	static struct table tb;
	static struct result r;
	char name[48];

	(void)state;
	srand(11);
	for (int round = 0; round < 300; round++) {
		uint32_t n = 1 + (uint32_t)rand() % MAXT;
		uint64_t stride = 16 * (1 + (uint64_t)(rand() % 8));

		memset(&tb, 0, sizeof(tb));
		for (uint32_t i = 0; i < n; i++) {
			uint64_t shape[2] = { (uint64_t)(rand() % 3),
					      1 + (uint64_t)(rand() % 2) };
			uint64_t off = rand() % 4 ? (uint64_t)i * stride :
						    (uint64_t)(rand() % 4096);

			snprintf(name, sizeof(name), "l.%d.w%d", rand() % 50,
				 rand() % 3);
			add(&tb, name, dts[rand() % 5], 1 + rand() % 2, shape,
			    off);
		}
		runs_of(&tb, 2 + (uint32_t)(rand() % 4), &r);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(decoder_layers),
		cmocka_unit_test(unrelated_names_and_exclusions),
		cmocka_unit_test(aliases),
		cmocka_unit_test(bad_arguments),
		cmocka_unit_test(random_tables),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
