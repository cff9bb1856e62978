/*
 * idx_parse.c - model.safetensors.index.json.
 *
 * Only weight_map matters: {"<tensor>": "<shard file>", ...}.  Everything
 * else ("metadata" with its advisory total_size, unknown keys) is ignored,
 * never used to size anything.  Shard names come from a hostile file and are
 * later opened relative to the model folder, so each must be a single plain
 * basename (hostile-inputs.md 1.2.1): the path escape reported in 2026
 * against several loaders is refused here, before any open.
 *
 * jansson parses the JSON (JSON_REJECT_DUPLICATES; it also refuses \u0000,
 * which shard_name_problem checks again); a lexical pre-scan first
 * bounds the number of JSON values so a 64 MB index of "[0,0,0,..." cannot
 * cost gigabytes of DOM.
 */
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "format.h"
#include "fmt_internal.h"
#include "tcast/errors.h"

/* Values a legitimate index needs: one key and one value per tensor, plus
 * room for metadata.  jansson spends ~50-100 bytes per value. */
#define IDX_MAX_VALUES (2 * (uint64_t)TC_MAX_TENSORS + 65536)

/* Count value separators and container openings outside strings. */
static uint64_t count_values(const char *json, size_t len)
{
	uint64_t n = 1;
	bool in_str = false;

	for (size_t i = 0; i < len; i++) {
		char c = json[i];

		if (in_str) {
			if (c == '\\')
				i++;
			else if (c == '"')
				in_str = false;
		} else if (c == '"') {
			in_str = true;
		} else if (c == ',' || c == ':' || c == '[' || c == '{') {
			n++;
		}
	}
	return n;
}

/* hostile-inputs.md 1.2.1: one relative basename naming a .safetensors
 * file; no '/', no '\\', not "." or "..", not empty, no NUL, no control
 * characters, at most NAME_MAX bytes. */
static const char *shard_name_problem(const char *s, size_t len)
{
	static const char suffix[] = ".safetensors";
	const size_t slen = sizeof(suffix) - 1;

	if (len == 0)
		return "is empty";
	if (strlen(s) != len)
		return "contains a NUL byte";
	if (len > TC_FMT_NAME_MAX)
		return "is longer than 255 bytes";
	if (!strcmp(s, ".") || !strcmp(s, ".."))
		return "is not a file name";
	if (s[0] == '/')
		return "is an absolute path";
	if (strchr(s, '/'))
		return "is a path, not a plain file name";
	if (strchr(s, '\\'))
		return "contains a backslash";
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return "contains a control character";
	if (len <= slen || strcmp(s + len - slen, suffix))
		return "does not end in '.safetensors'";
	return NULL;
}

/* "prefix-KKKKK-of-NNNNN.safetensors" -> k, n; false if not that shape. */
static bool shard_k_of_n(const char *s, unsigned long *k, unsigned long *n)
{
	const char *of = NULL, *p,
		   *end = s + strlen(s) - strlen(".safetensors");
	const char *kb;

	for (p = s; p + 4 <= end; p++)
		if (!memcmp(p, "-of-", 4))
			of = p;
	if (!of || of + 4 == end)
		return false;
	for (p = of + 4; p < end; p++)
		if (*p < '0' || *p > '9')
			return false;
	kb = of;
	while (kb > s && kb[-1] >= '0' && kb[-1] <= '9')
		kb--;
	if (kb == of || kb == s || kb[-1] != '-' || of - kb > 9 ||
	    end - (of + 4) > 9)
		return false;
	*k = strtoul(kb, NULL, 10);
	*n = strtoul(of + 4, NULL, 10);
	return true;
}

void tc__idx_release(struct tc__index *idx)
{
	if (!idx)
		return;
	for (uint32_t i = 0; i < idx->nshards; i++)
		tc__free(idx->shards[i]);
	for (uint32_t i = 0; i < idx->nentries; i++)
		tc__free(idx->entries[i].tensor);
	tc__free(idx->shards);
	tc__free(idx->entries);
	memset(idx, 0, sizeof(*idx));
}

/* Shard id for `name`, adding it on first sight.  `ids` maps names to ids
 * (jansson's hashtable is seeded, so crafted names cannot make it slow). */
static int shard_id(struct tc__index *idx, json_t *ids, const char *name,
		    uint32_t *id, char *err, size_t errlen)
{
	json_t *v = json_object_get(ids, name);
	char **sh;

	if (v) {
		*id = (uint32_t)json_integer_value(v);
		return 0;
	}
	if (idx->nshards == TC_MAX_SHARDS) {
		tc__fmt_err(err, errlen, "weight_map names more than %d shards",
			    TC_MAX_SHARDS);
		return TC_ELIMIT;
	}
	/* Grow by powers of two: a reallocation exactly when full. */
	if ((idx->nshards & (idx->nshards - 1)) == 0) {
		sh = tc__reallocarray(idx->shards,
				      idx->nshards ? 2 * (size_t)idx->nshards :
						     1,
				      sizeof(*sh));
		if (!sh)
			return -ENOMEM;
		idx->shards = sh;
	}
	idx->shards[idx->nshards] = tc__strdup(name);
	if (!idx->shards[idx->nshards])
		return -ENOMEM;
	/* Owned by idx from here, so a failure below cannot leak it. */
	*id = idx->nshards++;
	v = json_integer(*id);
	if (!v || json_object_set_new(ids, name, v))
		return -ENOMEM;
	return 0;
}

/* hostile-inputs.md 1.2.4: names of the form k-of-n must agree on n, have
 * 1 <= k <= n, and, when every shard has that form, there must be n. */
static int check_k_of_n(const struct tc__index *idx, char *err, size_t errlen)
{
	unsigned long k, n, n0 = 0;
	uint32_t matched = 0;
	char q[TC_FMT_QUOTE];
	const char *first = NULL;

	for (uint32_t i = 0; i < idx->nshards; i++) {
		const char *s = idx->shards[i];

		if (!shard_k_of_n(s, &k, &n))
			continue;
		if (k == 0 || k > n) {
			tc__fmt_err(err, errlen,
				    "shard '%s' is numbered %lu of %lu",
				    tc__fmt_quote(q, s, strlen(s)), k, n);
			return TC_EBADINDEX;
		}
		if (matched && n != n0) {
			char q2[TC_FMT_QUOTE];

			tc__fmt_err(
				err, errlen,
				"shard '%s' says %lu shards but '%s' says %lu",
				tc__fmt_quote(q, s, strlen(s)), n,
				tc__fmt_quote(q2, first, strlen(first)), n0);
			return TC_EBADINDEX;
		}
		n0 = n;
		first = s;
		matched++;
	}
	if (matched && matched == idx->nshards && n0 != idx->nshards) {
		tc__fmt_err(
			err, errlen,
			"weight_map names %u shards but shard names say %lu",
			idx->nshards, n0);
		return TC_EBADINDEX;
	}
	return 0;
}

static int parse_weight_map(json_t *wm, struct tc__index *idx, char *err,
			    size_t errlen)
{
	char q[TC_FMT_QUOTE], q2[TC_FMT_QUOTE];
	const char *key, *shard, *problem;
	const char *prev = NULL;
	uint32_t prev_id = 0;
	size_t n = json_object_size(wm), klen;
	json_t *ids, *val;
	void *it;
	int ret = 0;

	if (n == 0) {
		tc__fmt_err(err, errlen, "weight_map is empty");
		return TC_EBADINDEX;
	}
	if (n > TC_MAX_TENSORS) {
		tc__fmt_err(err, errlen, "weight_map has more than %d tensors",
			    TC_MAX_TENSORS);
		return TC_ELIMIT;
	}
	idx->entries = tc__calloc(n, sizeof(*idx->entries));
	if (!idx->entries)
		return -ENOMEM;
	ids = json_object();
	if (!ids)
		return -ENOMEM;
	/* jansson iterates objects in file order. */
	for (it = json_object_iter(wm); it;
	     it = json_object_iter_next(wm, it)) {
		struct tc__index_entry *e = &idx->entries[idx->nentries];

		key = json_object_iter_key(it);
		klen = json_object_iter_key_len(it);
		val = json_object_iter_value(it);
		if (klen == 0) {
			tc__fmt_err(err, errlen,
				    "weight_map has an empty tensor name");
			ret = TC_EBADINDEX;
			break;
		}
		if (strlen(key) != klen) {
			tc__fmt_err(
				err, errlen,
				"weight_map tensor '%s' contains a NUL byte",
				tc__fmt_quote(q, key, strlen(key)));
			ret = TC_EBADINDEX;
			break;
		}
		if (klen > TC_MAX_NAME) {
			tc__fmt_err(
				err, errlen,
				"weight_map tensor '%s' is %zu bytes, longer than %d",
				tc__fmt_quote(q, key, klen), klen, TC_MAX_NAME);
			ret = TC_ELIMIT;
			break;
		}
		if (!json_is_string(val)) {
			tc__fmt_err(
				err, errlen,
				"weight_map tensor '%s': shard is not a string",
				tc__fmt_quote(q, key, klen));
			ret = TC_EBADINDEX;
			break;
		}
		shard = json_string_value(val);
		problem = shard_name_problem(shard, json_string_length(val));
		if (problem) {
			tc__fmt_err(
				err, errlen,
				"weight_map tensor '%s': shard name '%s' %s",
				tc__fmt_quote(q, key, klen),
				tc__fmt_quote(q2, shard,
					      json_string_length(val)),
				problem);
			ret = TC_EBADINDEX;
			break;
		}
		e->tensor = tc__strndup(key, klen);
		if (!e->tensor) {
			ret = -ENOMEM;
			break;
		}
		idx->nentries++;
		/* Runs of one shard are the common case: skip the lookup. */
		if (prev && !strcmp(prev, shard)) {
			e->shard = prev_id;
			continue;
		}
		ret = shard_id(idx, ids, shard, &e->shard, err, errlen);
		if (ret < 0)
			break;
		prev = shard;
		prev_id = e->shard;
	}
	json_decref(ids);
	if (ret == 0)
		ret = check_k_of_n(idx, err, errlen);
	return ret;
}

int tc__idx_parse(const char *json, size_t len, struct tc__index *out,
		  char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *root, *wm;
	int ret;

	memset(out, 0, sizeof(*out));
	tc__fmt_err(err, errlen, "no error");
	if (len > TC_IDX_MAX_BYTES) {
		tc__fmt_err(err, errlen, "index is %zu bytes, more than %llu",
			    len, (unsigned long long)TC_IDX_MAX_BYTES);
		return TC_ELIMIT;
	}
	if (count_values(json, len) > IDX_MAX_VALUES) {
		tc__fmt_err(err, errlen, "index has more than %llu JSON values",
			    (unsigned long long)IDX_MAX_VALUES);
		return TC_ELIMIT;
	}
	/* No number of the index is used (total_size is advisory), so read
	 * integers as reals: a huge total_size must not fail the index. */
	root = json_loadb(json, len,
			  JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL,
			  &jerr);
	if (!root) {
		/* jansson 2.14 leaves the error empty when lex_init cannot
		 * allocate (and reports some later allocation failures as
		 * syntax errors, which cannot be told apart). */
		if (json_error_code(&jerr) == json_error_out_of_memory ||
		    !jerr.text[0]) {
			tc__fmt_err(err, errlen,
				    "out of memory parsing the index");
			return -ENOMEM;
		}
		tc__fmt_err(err, errlen, "invalid JSON at byte %d: %s",
			    jerr.position, jerr.text);
		return TC_EBADINDEX;
	}
	if (!json_is_object(root)) {
		tc__fmt_err(err, errlen, "index is not a JSON object");
		ret = TC_EBADINDEX;
		goto out_decref;
	}
	wm = json_object_get(root, "weight_map");
	if (!wm) {
		tc__fmt_err(err, errlen, "index has no weight_map");
		ret = TC_EBADINDEX;
		goto out_decref;
	}
	if (!json_is_object(wm)) {
		tc__fmt_err(err, errlen, "weight_map is not an object");
		ret = TC_EBADINDEX;
		goto out_decref;
	}
	ret = parse_weight_map(wm, out, err, errlen);
	if (ret == -ENOMEM)
		tc__fmt_err(err, errlen, "out of memory parsing the index");
	if (ret < 0)
		tc__idx_release(out);
out_decref:
	json_decref(root);
	return ret;
}
