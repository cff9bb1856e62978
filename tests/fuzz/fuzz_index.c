/*
 * fuzz_index.c - libFuzzer target for model.safetensors.index.json.
 *
 * Feeds the input to tc__idx_parse and checks what it returns: every shard
 * name a distinct plain basename ending in .safetensors, every entry's
 * shard in range, names non-empty.  Any violation aborts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "format/format.h"

static void check(const struct tc__index *idx)
{
	for (uint32_t i = 0; i < idx->nshards; i++) {
		const char *s = idx->shards[i];
		size_t n = strlen(s);

		if (!n || n > 255 || strchr(s, '/') || strchr(s, '\\') ||
		    !strcmp(s, ".") || !strcmp(s, "..") || n <= 12 ||
		    strcmp(s + n - 12, ".safetensors"))
			abort();
		for (uint32_t j = 0; j < i; j++)
			if (!strcmp(s, idx->shards[j]))
				abort();
	}
	for (uint32_t i = 0; i < idx->nentries; i++)
		if (idx->entries[i].shard >= idx->nshards ||
		    !idx->entries[i].tensor[0])
			abort();
	if (idx->nentries && !idx->nshards)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tc__index idx;
	char err[512];

	if (tc__idx_parse((const char *)data, size, &idx, err, sizeof(err)) ==
	    0)
		check(&idx);
	else if (idx.nshards || idx.nentries || idx.shards || idx.entries)
		abort();
	tc__idx_release(&idx);
	return 0;
}
