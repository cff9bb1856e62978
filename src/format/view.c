/*
 * view.c - the view planner: specs, their JSON form, planning, view ids.
 *
 * Pure functions over tables: nothing here reads tensor bytes.  The plan
 * says which source byte runs make each output tensor and what to do with
 * them afterwards (view_exec.c does it).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "common/alloc.h"
#include "common/compiler.h"
#include "fmt_internal.h"
#include "tcast/dtype.h"
#include "tcast/errors.h"
#include "view.h"

/* ================================================================ spec */

int tc__view_spec_init(struct tc__view_spec *s)
{
	memset(s, 0, sizeof(*s));
	s->levels = tc__calloc(1, sizeof(*s->levels));
	if (!s->levels)
		return -ENOMEM;
	s->nlevels = 1;
	return 0;
}

static void level_release(struct tc__view_level *l)
{
	for (uint32_t i = 0; i < l->nnames; i++)
		tc__free(l->names[i]);
	tc__free(l->names);
	for (uint32_t i = 0; i < l->nops; i++)
		tc__free(l->ops[i].name);
	tc__free(l->ops);
	memset(l, 0, sizeof(*l));
}

void tc__view_spec_release(struct tc__view_spec *s)
{
	for (uint32_t i = 0; i < s->nlevels; i++)
		level_release(&s->levels[i]);
	tc__free(s->levels);
	memset(s, 0, sizeof(*s));
}

static struct tc__view_level *top(struct tc__view_spec *s)
{
	return s->nlevels ? &s->levels[s->nlevels - 1] : NULL;
}

static int add_op(struct tc__view_spec *s, const struct tc__view_op *op,
		  const char *name)
{
	struct tc__view_level *l = top(s);
	struct tc__view_op *ops;
	char *dup = NULL;

	if (!l)
		return TC_EINVAL;
	if (l->nops >= TC_VIEW_MAX_OPS)
		return TC_ELIMIT;
	if (name) {
		if (!*name || strlen(name) > TC_MAX_NAME)
			return TC_EINVAL;
		dup = tc__strdup(name);
		if (!dup)
			return -ENOMEM;
	}
	ops = tc__reallocarray(l->ops, l->nops + 1, sizeof(*ops));
	if (!ops) {
		tc__free(dup);
		return -ENOMEM;
	}
	l->ops = ops;
	ops[l->nops] = *op;
	ops[l->nops].name = dup;
	l->nops++;
	return 0;
}

int tc__view_spec_select(struct tc__view_spec *s, const char *name)
{
	struct tc__view_level *l = top(s);
	char **names, *dup;

	if (!l || !name || !*name || strlen(name) > TC_MAX_NAME)
		return TC_EINVAL;
	if (l->nnames >= TC_MAX_TENSORS)
		return TC_ELIMIT;
	dup = tc__strdup(name);
	if (!dup)
		return -ENOMEM;
	names = tc__reallocarray(l->names, l->nnames + 1, sizeof(*names));
	if (!names) {
		tc__free(dup);
		return -ENOMEM;
	}
	l->names = names;
	names[l->nnames++] = dup;
	l->has_names = 1;
	return 0;
}

int tc__view_spec_slice(struct tc__view_spec *s, const char *name, uint32_t dim,
			uint64_t start, uint64_t stop)
{
	struct tc__view_op op = {
		.kind = TC__VIEW_SLICE, .dim = dim, .start = start, .stop = stop
	};

	if (!name)
		return TC_EINVAL;
	return add_op(s, &op, name);
}

int tc__view_spec_transpose(struct tc__view_spec *s, const char *name,
			    uint32_t dim0, uint32_t dim1)
{
	struct tc__view_op op = { .kind = TC__VIEW_TRANSPOSE,
				  .dim = dim0,
				  .dim1 = dim1 };

	return add_op(s, &op, name);
}

int tc__view_spec_cast(struct tc__view_spec *s, const char *name, int dtype)
{
	struct tc__view_op op = { .kind = TC__VIEW_CAST, .dtype = dtype };

	if (!tc_dtype_name(dtype))
		return TC_EINVAL;
	return add_op(s, &op, name);
}

int tc__view_spec_push(struct tc__view_spec *s)
{
	struct tc__view_level *l;

	if (s->nlevels >= TC_VIEW_MAX_LEVELS)
		return TC_ELIMIT;
	l = tc__reallocarray(s->levels, s->nlevels + 1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	s->levels = l;
	memset(&l[s->nlevels], 0, sizeof(*l));
	s->nlevels++;
	return 0;
}

/* ------------------------------------------------------------ JSON form */

static int json_u64(json_t *v, uint64_t *out)
{
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return -1;
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

static int parse_pair(json_t *v, uint32_t *a, uint32_t *b)
{
	uint64_t x, y;

	if (!json_is_array(v) || json_array_size(v) != 2 ||
	    json_u64(json_array_get(v, 0), &x) ||
	    json_u64(json_array_get(v, 1), &y) || x > UINT32_MAX ||
	    y > UINT32_MAX)
		return -1;
	*a = (uint32_t)x;
	*b = (uint32_t)y;
	return 0;
}

static int parse_level(json_t *o, uint32_t li, struct tc__view_spec *s,
		       char *err, size_t errlen)
{
	json_t *names, *slices, *tr, *dt, *v;
	const char *key;
	size_t i;
	int ret;

	if (!json_is_object(o)) {
		tc__fmt_err(err, errlen, "view spec level %u: not an object",
			    li);
		return TC_EINVAL;
	}
	json_object_foreach(o, key, v)
	{
		if (strcmp(key, "names") && strcmp(key, "slices") &&
		    strcmp(key, "transpose") && strcmp(key, "dtype")) {
			tc__fmt_err(err, errlen,
				    "view spec level %u: unknown field '%s' "
				    "(names, slices, transpose, dtype)",
				    li, key);
			return TC_EINVAL;
		}
	}
	names = json_object_get(o, "names");
	if (names && !json_is_null(names)) {
		if (!json_is_array(names)) {
			tc__fmt_err(err, errlen,
				    "view spec level %u: names must be an "
				    "array of strings",
				    li);
			return TC_EINVAL;
		}
		json_array_foreach(names, i, v)
		{
			if (!json_is_string(v)) {
				tc__fmt_err(err, errlen,
					    "view spec level %u: names[%zu] "
					    "is not a string",
					    li, i);
				return TC_EINVAL;
			}
			ret = tc__view_spec_select(s, json_string_value(v));
			if (ret < 0)
				goto out_builder;
		}
		top(s)->has_names = 1;
	}
	slices = json_object_get(o, "slices");
	if (slices && !json_is_null(slices)) {
		if (!json_is_object(slices))
			goto out_slices;
		json_object_foreach(slices, key, v)
		{
			json_t *e;
			size_t j;

			if (!json_is_array(v))
				goto out_slices;
			json_array_foreach(v, j, e)
			{
				uint64_t d, a, b;

				if (!json_is_array(e) ||
				    json_array_size(e) != 3 ||
				    json_u64(json_array_get(e, 0), &d) ||
				    json_u64(json_array_get(e, 1), &a) ||
				    (json_is_null(json_array_get(e, 2)) ?
					     (b = TC_VIEW_END, 0) :
					     json_u64(json_array_get(e, 2),
						      &b)) ||
				    d > UINT32_MAX) {
					tc__fmt_err(err, errlen,
						    "view spec level %u: "
						    "slices['%s'][%zu] must be "
						    "[dim, start, stop] with "
						    "non-negative integers",
						    li, key, j);
					return TC_EINVAL;
				}
				ret = tc__view_spec_slice(s, key, (uint32_t)d,
							  a, b);
				if (ret < 0)
					goto out_builder;
			}
		}
	}
	tr = json_object_get(o, "transpose");
	if (tr && !json_is_null(tr)) {
		uint32_t a, b;

		if (json_is_array(tr)) {
			if (parse_pair(tr, &a, &b))
				goto out_transpose;
			ret = tc__view_spec_transpose(s, NULL, a, b);
			if (ret < 0)
				goto out_builder;
		} else if (json_is_object(tr)) {
			json_object_foreach(tr, key, v)
			{
				if (parse_pair(v, &a, &b))
					goto out_transpose;
				ret = tc__view_spec_transpose(s, key, a, b);
				if (ret < 0)
					goto out_builder;
			}
		} else {
			goto out_transpose;
		}
	}
	dt = json_object_get(o, "dtype");
	if (dt && !json_is_null(dt)) {
		if (json_is_string(dt)) {
			int d = tc_dtype_from_name(json_string_value(dt));

			if (d < 0)
				goto out_dtype;
			ret = tc__view_spec_cast(s, NULL, d);
			if (ret < 0)
				goto out_builder;
		} else if (json_is_object(dt)) {
			json_object_foreach(dt, key, v)
			{
				int d = json_is_string(v) ?
						tc_dtype_from_name(
							json_string_value(v)) :
						-1;

				if (d < 0)
					goto out_dtype;
				ret = tc__view_spec_cast(s, key, d);
				if (ret < 0)
					goto out_builder;
			}
		} else {
			goto out_dtype;
		}
	}
	return 0;

out_slices:
	tc__fmt_err(err, errlen,
		    "view spec level %u: slices must be an object of "
		    "{name: [[dim, start, stop], ...]}",
		    li);
	return TC_EINVAL;
out_transpose:
	tc__fmt_err(err, errlen,
		    "view spec level %u: transpose must be [dim0, dim1] or "
		    "{name: [dim0, dim1]}",
		    li);
	return TC_EINVAL;
out_dtype:
	tc__fmt_err(err, errlen,
		    "view spec level %u: dtype must be a dtype name (\"F32\") "
		    "or {name: dtype name}",
		    li);
	return TC_EINVAL;
out_builder:
	tc__fmt_err(err, errlen, "view spec level %u: %s", li,
		    ret == -ENOMEM ? "out of memory" :
				     "a name is empty or too long, or a limit "
				     "was passed");
	return ret;
}

int tc__view_spec_parse(const char *json, size_t len, struct tc__view_spec *s,
			char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *root;
	int ret;

	ret = tc__view_spec_init(s);
	if (ret < 0)
		return ret;
	root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		tc__fmt_err(err, errlen, "view spec: invalid JSON at %d: %s",
			    jerr.position, jerr.text);
		ret = TC_EINVAL;
		goto out_release;
	}
	if (json_is_array(root)) {
		size_t i;
		json_t *v;

		if (json_array_size(root) > TC_VIEW_MAX_LEVELS) {
			tc__fmt_err(err, errlen,
				    "view spec: %zu levels (limit %d)",
				    json_array_size(root), TC_VIEW_MAX_LEVELS);
			ret = TC_ELIMIT;
			goto out_decref;
		}
		json_array_foreach(root, i, v)
		{
			if (i > 0 && (ret = tc__view_spec_push(s)) < 0)
				goto out_decref;
			ret = parse_level(v, (uint32_t)i, s, err, errlen);
			if (ret < 0)
				goto out_decref;
		}
	} else {
		ret = parse_level(root, 0, s, err, errlen);
		if (ret < 0)
			goto out_decref;
	}
	json_decref(root);
	return 0;

out_decref:
	json_decref(root);
out_release:
	tc__view_spec_release(s);
	return ret;
}

/* ================================================================ plan */

int tc__view_cast_ok(int from, int to)
{
	bool ff = from == TC_DTYPE_F16 || from == TC_DTYPE_BF16 ||
		  from == TC_DTYPE_F32;
	bool tf = to == TC_DTYPE_F16 || to == TC_DTYPE_BF16 ||
		  to == TC_DTYPE_F32;

	if (!tc_dtype_name(from) || !tc_dtype_name(to))
		return 0;
	return from == to || (ff && tf);
}

/* One output tensor while the levels are folded. */
struct vt {
	uint32_t src;
	uint8_t ndim;
	uint64_t start[TC_MAX_RANK]; /* per source dim */
	uint64_t stop[TC_MAX_RANK];
	uint8_t perm[TC_MAX_RANK]; /* output dim d is source dim perm[d] */
	int dtype;
	bool sliced[TC_MAX_RANK]; /* this level already sliced dim d */
};

static const char *where(uint32_t level, char *buf, size_t n)
{
	if (level == 0)
		buf[0] = 0;
	else
		snprintf(buf, n, " (view level %u)", level + 1);
	return buf;
}

static long vt_find(const struct vt *v, uint32_t n, const struct tc__table *src,
		    const char *name)
{
	for (uint32_t i = 0; i < n; i++)
		if (!strcmp(src->tensors[v[i].src].name, name))
			return (long)i;
	return -1;
}

static int not_found(const char *name, uint32_t level, char *err, size_t errlen)
{
	char w[48];

	tc__fmt_err(err, errlen, "view: no tensor '%s' in the %s%s", name,
		    level ? "view" : "artifact", where(level, w, sizeof(w)));
	return TC_ENOTFOUND;
}

/* Apply one level to the current set (*pv, *pn), replacing it. */
static int apply_level(const struct tc__table *src,
		       const struct tc__view_level *l, uint32_t level,
		       struct vt **pv, uint32_t *pn, char *err, size_t errlen)
{
	struct vt *cur = *pv, *nv = cur;
	uint32_t n = *pn;
	char w[48];

	where(level, w, sizeof(w));
	if (l->has_names) {
		nv = tc__calloc(l->nnames ? l->nnames : 1, sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		for (uint32_t i = 0; i < l->nnames; i++) {
			long k = vt_find(cur, n, src, l->names[i]);

			if (k < 0) {
				tc__free(nv);
				return not_found(l->names[i], level, err,
						 errlen);
			}
			for (uint32_t j = 0; j < i; j++)
				if (!strcmp(l->names[j], l->names[i])) {
					tc__free(nv);
					tc__fmt_err(err, errlen,
						    "view: tensor '%s' named "
						    "twice%s",
						    l->names[i], w);
					return TC_EINVAL;
				}
			nv[i] = cur[k];
		}
		tc__free(cur);
		*pv = nv;
		*pn = n = l->nnames;
	}
	for (uint32_t i = 0; i < n; i++)
		memset(nv[i].sliced, 0, sizeof(nv[i].sliced));
	/* Slices, in this level's input coordinates. */
	for (uint32_t o = 0; o < l->nops; o++) {
		const struct tc__view_op *op = &l->ops[o];
		struct vt *t;
		uint64_t ext, base, stop;
		uint8_t s;
		long k;

		if (op->kind != TC__VIEW_SLICE)
			continue;
		k = vt_find(nv, n, src, op->name);
		if (k < 0) {
			if (l->has_names && level == 0 &&
			    tc__table_find(src, op->name) >= 0) {
				tc__fmt_err(err, errlen,
					    "view: tensor '%s' is sliced but "
					    "not in names%s",
					    op->name, w);
				return TC_EINVAL;
			}
			return not_found(op->name, level, err, errlen);
		}
		t = &nv[k];
		if (op->dim >= t->ndim) {
			tc__fmt_err(err, errlen,
				    "view: tensor '%s': dim %u out of range "
				    "(rank %u)%s",
				    op->name, op->dim, t->ndim, w);
			return TC_EINVAL;
		}
		s = t->perm[op->dim];
		ext = t->stop[s] - t->start[s];
		stop = op->stop == TC_VIEW_END ? ext : op->stop;
		if (t->sliced[op->dim]) {
			tc__fmt_err(err, errlen,
				    "view: tensor '%s': dim %u sliced twice%s",
				    op->name, op->dim, w);
			return TC_EINVAL;
		}
		if (op->start > stop) {
			tc__fmt_err(err, errlen,
				    "view: tensor '%s': dim %u: reversed slice "
				    "[%" PRIu64 ", %" PRIu64 ")%s",
				    op->name, op->dim, op->start, stop, w);
			return TC_EINVAL;
		}
		if (op->start == stop) {
			tc__fmt_err(err, errlen,
				    "view: tensor '%s': dim %u: empty slice "
				    "[%" PRIu64 ", %" PRIu64 ")%s",
				    op->name, op->dim, op->start, stop, w);
			return TC_EINVAL;
		}
		if (stop > ext) {
			tc__fmt_err(err, errlen,
				    "view: tensor '%s': dim %u: slice [%" PRIu64
				    ", %" PRIu64 ") outside the shape (size "
				    "%" PRIu64 ")%s",
				    op->name, op->dim, op->start, stop, ext, w);
			return TC_EINVAL;
		}
		base = t->start[s];
		t->start[s] = base + op->start;
		t->stop[s] = base + stop;
		t->sliced[op->dim] = true;
	}
	/* Transposes. */
	for (uint32_t o = 0; o < l->nops; o++) {
		const struct tc__view_op *op = &l->ops[o];

		if (op->kind != TC__VIEW_TRANSPOSE)
			continue;
		if (op->name && vt_find(nv, n, src, op->name) < 0)
			return not_found(op->name, level, err, errlen);
		if (op->dim == op->dim1) {
			tc__fmt_err(err, errlen,
				    "view: %s%s%s: transpose of dim %u with "
				    "itself%s",
				    op->name ? "tensor '" : "every tensor",
				    op->name ? op->name : "",
				    op->name ? "'" : "", op->dim, w);
			return TC_EINVAL;
		}
		for (uint32_t i = 0; i < n; i++) {
			struct vt *t = &nv[i];
			const char *tn = src->tensors[t->src].name;
			uint32_t hi = TC_MAX(op->dim, op->dim1);
			uint8_t x;

			if (op->name && strcmp(op->name, tn))
				continue;
			if (hi >= t->ndim) {
				if (!op->name)
					continue; /* lower rank: unchanged */
				tc__fmt_err(err, errlen,
					    "view: tensor '%s': transpose dim "
					    "%u out of range (rank %u)%s",
					    tn, hi, t->ndim, w);
				return TC_EINVAL;
			}
			if (tc_dtype_bits(t->dtype) < 8) {
				tc__fmt_err(
					err, errlen,
					"view: tensor '%s': cannot "
					"transpose %s (sub-byte elements)%s",
					tn, tc_dtype_name(t->dtype), w);
				return TC_EBADDTYPE;
			}
			x = t->perm[op->dim];
			t->perm[op->dim] = t->perm[op->dim1];
			t->perm[op->dim1] = x;
		}
	}
	/* Casts. */
	for (uint32_t o = 0; o < l->nops; o++) {
		const struct tc__view_op *op = &l->ops[o];

		if (op->kind != TC__VIEW_CAST)
			continue;
		if (op->name && vt_find(nv, n, src, op->name) < 0)
			return not_found(op->name, level, err, errlen);
		for (uint32_t i = 0; i < n; i++) {
			struct vt *t = &nv[i];
			const char *tn = src->tensors[t->src].name;

			if (op->name && strcmp(op->name, tn))
				continue;
			if (!tc__view_cast_ok(t->dtype, op->dtype)) {
				tc__fmt_err(err, errlen,
					    "view: tensor '%s': cannot cast %s "
					    "to %s (casts are among F16, BF16 "
					    "and F32, or to the same dtype)%s",
					    tn, tc_dtype_name(t->dtype),
					    tc_dtype_name(op->dtype), w);
				return TC_EBADDTYPE;
			}
			t->dtype = op->dtype;
		}
	}
	return 0;
}

/* Byte offset of element index `bits_off` in bits, checked whole. */
static int bits_to_bytes(uint64_t bits, uint64_t *out)
{
	if (bits % 8)
		return -1;
	*out = bits / 8;
	return 0;
}

static int add_run(struct tc__view_tplan *tp, uint64_t src, uint64_t dst,
		   uint64_t len, uint64_t count, uint64_t stride,
		   uint64_t *total_runs)
{
	struct tc__view_run *r;

	if (count > 1 && stride == len) { /* adjacent pieces: one run */
		len *= count;
		count = 1;
	}
	if (tp->nruns) {
		r = &tp->runs[tp->nruns - 1];
		if (r->count == 1 && count == 1 && r->src + r->len == src &&
		    r->dst + r->len == dst) {
			r->len += len;
			return 0;
		}
	}
	if (*total_runs >= TC_VIEW_MAX_RUNS)
		return TC_ELIMIT;
	if ((tp->nruns & (tp->nruns - 1)) == 0) { /* grow at powers of two */
		r = tc__reallocarray(tp->runs, tp->nruns ? 2 * tp->nruns : 1,
				     sizeof(*r));
		if (!r)
			return -ENOMEM;
		tp->runs = r;
	}
	tp->runs[tp->nruns++] = (struct tc__view_run){ .src = src,
						       .dst = dst,
						       .len = len,
						       .count = count,
						       .stride = stride };
	(*total_runs)++;
	return 0;
}

/*
 * The runs of one tensor.  Dims after the last sliced one are whole, so a
 * piece is the sliced extent of that dim times the rest; the dim before it
 * becomes the run's count and stride; dims before that are enumerated.
 */
static int make_runs(const struct tc__tensor *st, const struct vt *v,
		     struct tc__view_tplan *tp, uint64_t *total_runs, char *err,
		     size_t errlen)
{
	uint64_t bits = tc_dtype_bits(st->dtype);
	uint64_t sbits[TC_MAX_RANK]; /* source stride of each dim, in bits */
	uint64_t idx[TC_MAX_RANK];
	uint64_t len, stride = 0, count = 1, dst = 0, acc = bits;
	int last = -1, n = v->ndim;

	if (!st->nbytes)
		return 0; /* no elements: nothing to read */
	for (int d = n - 1; d >= 0; d--) {
		sbits[d] = acc;
		acc *= st->shape[d]; /* cannot overflow: nbytes was checked */
		if (v->start[d] != 0 || v->stop[d] != st->shape[d])
			if (last < 0)
				last = d;
	}
	if (last < 0) { /* nothing sliced: the whole tensor */
		if (st->nbytes)
			return add_run(tp, st->offset, 0, st->nbytes, 1, 0,
				       total_runs);
		return 0;
	}
	if (bits_to_bytes((v->stop[last] - v->start[last]) * sbits[last],
			  &len)) {
		tc__fmt_err(err, errlen,
			    "view: tensor '%s': dim %d: slice [%" PRIu64
			    ", %" PRIu64 ") of %s does not fall on bytes",
			    st->name, last, v->start[last], v->stop[last],
			    tc_dtype_name(st->dtype));
		return TC_EBADDTYPE;
	}
	if (last > 0) {
		count = v->stop[last - 1] - v->start[last - 1];
		if (bits_to_bytes(sbits[last - 1], &stride))
			return TC_EBADDTYPE;
	}
	for (int d = 0; d < last; d++)
		idx[d] = v->start[d];
	for (;;) {
		uint64_t off_bits = 0, off;
		int ret;

		for (int d = 0; d < last - 1; d++)
			off_bits += idx[d] * sbits[d];
		if (last > 0)
			off_bits += v->start[last - 1] * sbits[last - 1];
		off_bits += v->start[last] * sbits[last];
		if (bits_to_bytes(off_bits, &off)) {
			tc__fmt_err(err, errlen,
				    "view: tensor '%s': dim %d: slice [%" PRIu64
				    ", %" PRIu64
				    ") of %s does not start on a byte",
				    st->name, last, v->start[last],
				    v->stop[last], tc_dtype_name(st->dtype));
			return TC_EBADDTYPE;
		}
		ret = add_run(tp, st->offset + off, dst, len, count, stride,
			      total_runs);
		if (ret == TC_ELIMIT) {
			tc__fmt_err(err, errlen,
				    "view: tensor '%s': the slices make more "
				    "than %u pieces",
				    st->name, TC_VIEW_MAX_RUNS);
			return ret;
		}
		if (ret < 0)
			return ret;
		dst += len * count;
		/* Next combination of the enumerated dims 0 .. last-2. */
		int d = last - 2;

		for (; d >= 0; d--) {
			if (++idx[d] < v->stop[d])
				break;
			idx[d] = v->start[d];
		}
		if (d < 0)
			break;
	}
	tp->gather_bytes = dst;
	return 0;
}

/* Canonical encoding of the normalized spec, hashed into the view id. */
static void put_u64(struct tc__hasher *h, uint64_t v)
{
	uint8_t b[8];

	for (int i = 0; i < 8; i++, v >>= 8)
		b[i] = (uint8_t)v;
	tc__hasher_update(h, b, 8);
}

static void put_str(struct tc__hasher *h, const char *s)
{
	size_t n = strlen(s);

	put_u64(h, n);
	tc__hasher_update(h, s, n);
}

static int view_id(const struct tc__table *src, const char *artifact_id,
		   const struct vt *v, uint32_t n, char *out)
{
	static const char magic[] = "tcast-view-1";
	struct tc__hasher *h = tc__hasher_new();
	struct tc__digest d;
	char id[TC_ID_LEN + 1];

	if (!h)
		return -ENOMEM;
	tc__hasher_update(h, magic, sizeof(magic));
	put_str(h, artifact_id ? artifact_id : "");
	put_u64(h, n);
	for (uint32_t i = 0; i < n; i++) {
		const struct tc__tensor *st = &src->tensors[v[i].src];

		put_str(h, st->name); /* output name */
		put_str(h, st->name); /* source name */
		put_u64(h, v[i].ndim);
		for (uint32_t k = 0; k < v[i].ndim; k++) {
			put_u64(h, v[i].start[k]);
			put_u64(h, v[i].stop[k]);
		}
		for (uint32_t k = 0; k < v[i].ndim; k++)
			put_u64(h, v[i].perm[k]);
		put_u64(h, (uint64_t)v[i].dtype);
	}
	tc__hasher_final(h, &d);
	tc__hasher_free(h);
	tc__digest_id(&d, id);
	snprintf(out, TC_VIEW_ID_LEN + 1, "%s%s", TC_VIEW_ID_PREFIX, id);
	return 0;
}

void tc__view_plan_release(struct tc__view_plan *p)
{
	if (p->t)
		for (uint32_t i = 0; i < p->out.ntensors; i++)
			tc__free(p->t[i].runs);
	tc__free(p->t);
	tc__table_release(&p->out);
	memset(p, 0, sizeof(*p));
}

int tc__view_plan(const struct tc__table *src, const char *artifact_id,
		  const struct tc__view_spec *spec, struct tc__view_plan *out,
		  char *err, size_t errlen)
{
	uint64_t total_runs = 0;
	struct vt *v;
	uint32_t n = src->ntensors;
	int ret;

	memset(out, 0, sizeof(*out));
	tc__table_init(&out->out);
	v = tc__calloc(n ? n : 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++) {
		const struct tc__tensor *st = &src->tensors[i];

		v[i].src = i;
		v[i].ndim = st->ndim;
		v[i].dtype = st->dtype;
		for (uint32_t d = 0; d < st->ndim; d++) {
			v[i].stop[d] = st->shape[d];
			v[i].perm[d] = (uint8_t)d;
		}
	}
	for (uint32_t li = 0; li < spec->nlevels; li++) {
		ret = apply_level(src, &spec->levels[li], li, &v, &n, err,
				  errlen);
		if (ret < 0)
			goto out_free_vt;
	}
	ret = -ENOMEM;
	out->out.tensors = tc__calloc(n ? n : 1, sizeof(*out->out.tensors));
	out->t = tc__calloc(n ? n : 1, sizeof(*out->t));
	if (!out->out.tensors || !out->t)
		goto out_release;
	for (uint32_t i = 0; i < n; i++) {
		const struct tc__tensor *st = &src->tensors[v[i].src];
		struct tc__tensor *ot = &out->out.tensors[i];
		struct tc__view_tplan *tp = &out->t[i];
		bool moved = false;

		ot->name = tc__strdup(st->name);
		if (!ot->name) {
			ret = -ENOMEM;
			goto out_release;
		}
		out->out.ntensors = i + 1;
		ot->dtype = (uint8_t)v[i].dtype;
		ot->ndim = v[i].ndim;
		tp->src_index = v[i].src;
		tp->src_dtype = st->dtype;
		tp->dst_dtype = v[i].dtype;
		tp->ndim = v[i].ndim;
		for (uint32_t d = 0; d < v[i].ndim; d++) {
			tp->gshape[d] = v[i].stop[d] - v[i].start[d];
			tp->perm[d] = v[i].perm[d];
		}
		for (uint32_t d = 0; d < v[i].ndim; d++) {
			ot->shape[d] = tp->gshape[v[i].perm[d]];
			/* Moving a dim of extent 1 moves no bytes. */
			if (v[i].perm[d] != d && tp->gshape[v[i].perm[d]] > 1)
				moved = true;
		}
		if (moved)
			tp->flags |= TC__VIEW_F_TRANSPOSE;
		if (tp->dst_dtype != tp->src_dtype)
			tp->flags |= TC__VIEW_F_CAST;
		ret = tc__tensor_nbytes(ot->dtype, ot->ndim, ot->shape,
					&ot->nbytes);
		if (ret < 0)
			goto out_release;
		ret = make_runs(st, &v[i], tp, &total_runs, err, errlen);
		if (ret < 0)
			goto out_release;
		if (!tp->gather_bytes)
			tp->gather_bytes = tp->nruns ? tp->runs[0].len : 0;
		out->bytes_needed += tp->gather_bytes;
	}
	ret = tc__table_layout(&out->out);
	if (ret < 0)
		goto out_release;
	out->artifact_bytes = src->total_bytes;
	ret = view_id(src, artifact_id, v, n, out->id);
	if (ret < 0)
		goto out_release;
	tc__free(v);
	return 0;

out_release:
	if (ret == -ENOMEM)
		tc__fmt_err(err, errlen, "view: out of memory");
	tc__view_plan_release(out);
	tc__table_init(&out->out);
out_free_vt:
	tc__free(v);
	return ret;
}

uint64_t tc__view_tplan_pieces(const struct tc__view_tplan *t)
{
	uint64_t n = 0;

	for (uint32_t i = 0; i < t->nruns; i++)
		n += t->runs[i].count;
	return n;
}
