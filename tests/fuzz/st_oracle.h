/*
 * st_oracle.h - cross-check of tcast's safetensors header parser.
 *
 * tcast parses headers with its own strict parser (src/format/st_parse.c);
 * jansson with JSON_REJECT_DUPLICATES is the reference for what is JSON.
 * The rule checked: whatever tcast accepts, jansson accepts too and reads
 * the same tensors (names, dtypes, shapes, offsets) and metadata.  tcast
 * may reject more (it is stricter: \u0000, "-0", unknown fields, geometry).
 * Included by tests/unit/test_format.c and tests/fuzz/fuzz_st_header.c.
 */
#ifndef TC_ST_ORACLE_H
#define TC_ST_ORACLE_H

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "common/tensor.h"
#include "tcast/dtype.h"

/* NULL when jansson agrees with tcast's accepted table `t` for the header
 * `json` of `len` bytes; else a static description of the mismatch. */
static const char *st_oracle_check(const char *json, size_t len,
				   const struct tc__table *t)
{
	static char why[256];
	json_error_t e;
	json_t *root, *meta, *v;
	const char *ret = NULL;
	size_t ntensors;

	root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &e);
	if (!root) {
		snprintf(why, sizeof(why), "jansson rejects: %s", e.text);
		return why;
	}
	if (!json_is_object(root)) {
		ret = "jansson: not an object";
		goto out;
	}
	meta = json_object_get(root, "__metadata__");
	ntensors = json_object_size(root) - (meta ? 1 : 0);
	if (ntensors != t->ntensors) {
		ret = "tensor count differs";
		goto out;
	}
	if ((meta ? json_object_size(meta) : 0) != t->nmeta) {
		ret = "metadata count differs";
		goto out;
	}
	for (uint32_t i = 0; i < t->nmeta; i++) {
		v = json_object_get(meta, t->meta[i].key);
		if (!json_is_string(v) ||
		    json_string_length(v) != strlen(t->meta[i].val) ||
		    strcmp(json_string_value(v), t->meta[i].val)) {
			ret = "metadata value differs";
			goto out;
		}
	}
	for (uint32_t i = 0; i < t->ntensors; i++) {
		const struct tc__tensor *x = &t->tensors[i];
		json_t *ent = json_object_get(root, x->name), *sh, *off;

		if (!json_is_object(ent) || json_object_size(ent) != 3) {
			ret = "tensor entry differs";
			goto out;
		}
		v = json_object_get(ent, "dtype");
		if (!json_is_string(v) ||
		    strcmp(json_string_value(v), tc_dtype_name(x->dtype))) {
			ret = "dtype differs";
			goto out;
		}
		sh = json_object_get(ent, "shape");
		if (!json_is_array(sh) || json_array_size(sh) != x->ndim) {
			ret = "rank differs";
			goto out;
		}
		for (uint32_t d = 0; d < x->ndim; d++) {
			v = json_array_get(sh, d);
			if (!json_is_integer(v) ||
			    (uint64_t)json_integer_value(v) != x->shape[d]) {
				ret = "shape differs";
				goto out;
			}
		}
		off = json_object_get(ent, "data_offsets");
		if (!json_is_array(off) || json_array_size(off) != 2 ||
		    !json_is_integer(json_array_get(off, 0)) ||
		    !json_is_integer(json_array_get(off, 1))) {
			ret = "data_offsets differ";
			goto out;
		}
		if ((uint64_t)json_integer_value(json_array_get(off, 0)) + 8 +
				    len !=
			    x->src_offset ||
		    (uint64_t)json_integer_value(json_array_get(off, 1)) -
				    (uint64_t)json_integer_value(
					    json_array_get(off, 0)) !=
			    x->nbytes) {
			ret = "offsets differ";
			goto out;
		}
	}
out:
	json_decref(root);
	return ret;
}

#endif /* TC_ST_ORACLE_H */
