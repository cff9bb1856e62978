/*
 * hash.c - XXH3-128 digests (libxxhash).
 */
#include <stdio.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "hash.h"

static void from_xxh(XXH128_hash_t h, struct tc__digest *out)
{
	out->hi = h.high64;
	out->lo = h.low64;
}

void tc__hash128(const void *p, size_t n, struct tc__digest *out)
{
	from_xxh(XXH3_128bits(p, n), out);
}

struct tc__hasher *tc__hasher_new(void)
{
	XXH3_state_t *s = XXH3_createState();

	if (s)
		XXH3_128bits_reset(s);
	return (struct tc__hasher *)s;
}

void tc__hasher_reset(struct tc__hasher *h)
{
	XXH3_128bits_reset((XXH3_state_t *)h);
}

void tc__hasher_update(struct tc__hasher *h, const void *p, size_t n)
{
	XXH3_128bits_update((XXH3_state_t *)h, p, n);
}

void tc__hasher_final(struct tc__hasher *h, struct tc__digest *out)
{
	from_xxh(XXH3_128bits_digest((XXH3_state_t *)h), out);
}

void tc__hasher_free(struct tc__hasher *h)
{
	XXH3_freeState((XXH3_state_t *)h);
}

uint64_t tc__chunk_count(uint64_t size)
{
	return size / TC_CHUNK_BYTES + (size % TC_CHUNK_BYTES != 0);
}

static void put_be(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

void tc__digest_root(const struct tc__digest *table,
		     const struct tc__digest *chunks, uint64_t nchunks,
		     struct tc__digest *out)
{
	XXH3_state_t st;
	uint8_t b[16];

	XXH3_128bits_reset(&st);
	put_be(b, table->hi);
	put_be(b + 8, table->lo);
	XXH3_128bits_update(&st, b, 16);
	for (uint64_t i = 0; i < nchunks; i++) {
		put_be(b, chunks[i].hi);
		put_be(b + 8, chunks[i].lo);
		XXH3_128bits_update(&st, b, 16);
	}
	from_xxh(XXH3_128bits_digest(&st), out);
}

void tc__digest_hex(const struct tc__digest *d, char out[33])
{
	snprintf(out, 33, "%016llx%016llx", (unsigned long long)d->hi,
		 (unsigned long long)d->lo);
}

void tc__digest_id(const struct tc__digest *d, char out[TC_ID_LEN + 1])
{
	memcpy(out, TC_ID_PREFIX, 4);
	tc__digest_hex(d, out + 4);
}

int tc__is_id(const char *s)
{
	if (strncmp(s, TC_ID_PREFIX, 4))
		return 0;
	for (int i = 4; i < TC_ID_LEN; i++)
		if (!((s[i] >= '0' && s[i] <= '9') ||
		      (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return s[TC_ID_LEN] == '\0';
}
