/*
 * fuzz_native.c - libFuzzer target for the native layout's manifest
 * (tcast.manifest.json, src/format/native.c).
 *
 * Feeds the input to tc__native_parse and checks what it returns: tensors
 * laid out as the store lays them (ascending, 256-aligned, inside
 * total_bytes), one chunk digest per 4 MiB, an id; and that writing the
 * parsed manifest back and parsing it again gives the same id.  On
 * failure nothing may be left allocated or half-filled.  Any violation
 * aborts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/hash.h"
#include "format/format.h"

static void check(const struct tc__native *n)
{
	const struct tc__table *t = &n->table;
	uint64_t end = 0;
	struct tc__native again;
	char err[512], *json;

	if (t->ntensors > TC_MAX_TENSORS || !tc__is_id(n->id) ||
	    n->nchunks != tc__chunk_count(t->total_bytes))
		abort();
	for (uint32_t i = 0; i < t->ntensors; i++) {
		const struct tc__tensor *x = &t->tensors[i];

		if (x->offset % TC_ALIGN || x->offset < end || !x->name[0] ||
		    x->src_file != 1 || x->src_offset != x->offset)
			abort();
		end = x->offset + x->nbytes;
		if (end > t->total_bytes)
			abort();
	}
	json = tc__native_manifest(t, n->chunks, n->nchunks, n->id);
	if (!json)
		return;
	if (tc__native_parse(json, strlen(json), t->total_bytes, &again, err,
			     sizeof(err)) != 0 ||
	    strcmp(again.id, n->id))
		abort();
	tc__native_release(&again);
	free(json);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tc__native n;
	char err[512];

	if (tc__native_parse((const char *)data, size, UINT64_MAX, &n, err,
			     sizeof(err)) == 0)
		check(&n);
	else if (n.chunks || n.table.ntensors || n.table.tensors ||
		 n.table.nmeta)
		abort();
	tc__native_release(&n);
	return 0;
}
