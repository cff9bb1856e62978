/*
 * hash.c - BLAKE3-256 digests (upstream's C implementation, see
 * CMakeLists.txt), and artifact ids built from them.
 */
#include <blake3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"

_Static_assert(BLAKE3_OUT_LEN == TC_DIGEST_BYTES, "digest size");

void tc__hash256(const void *p, size_t n, struct tc__digest *out)
{
	blake3_hasher h;

	blake3_hasher_init(&h);
	blake3_hasher_update(&h, p, n);
	blake3_hasher_finalize(&h, out->b, TC_DIGEST_BYTES);
}

struct tc__hasher *tc__hasher_new(void)
{
	blake3_hasher *h = malloc(sizeof(*h));

	if (h)
		blake3_hasher_init(h);
	return (struct tc__hasher *)h;
}

void tc__hasher_reset(struct tc__hasher *h)
{
	blake3_hasher_init((blake3_hasher *)h);
}

void tc__hasher_update(struct tc__hasher *h, const void *p, size_t n)
{
	blake3_hasher_update((blake3_hasher *)h, p, n);
}

void tc__hasher_final(struct tc__hasher *h, struct tc__digest *out)
{
	blake3_hasher_finalize((blake3_hasher *)h, out->b, TC_DIGEST_BYTES);
}

void tc__hasher_free(struct tc__hasher *h)
{
	free(h);
}

uint64_t tc__chunk_count(uint64_t size)
{
	return size / TC_CHUNK_BYTES + (size % TC_CHUNK_BYTES != 0);
}

void tc__digest_root(const void *canon_table, size_t table_len,
		     const struct tc__digest *chunks, uint64_t nchunks,
		     struct tc__digest *out)
{
	blake3_hasher h;

	blake3_hasher_init(&h);
	blake3_hasher_update(&h, canon_table, table_len);
	/* struct tc__digest is exactly its 32 bytes: hash the array whole. */
	_Static_assert(sizeof(struct tc__digest) == TC_DIGEST_BYTES, "packed");
	if (nchunks)
		blake3_hasher_update(&h, chunks,
				     (size_t)nchunks * TC_DIGEST_BYTES);
	blake3_hasher_finalize(&h, out->b, TC_DIGEST_BYTES);
}

int tc__digest_eq(const struct tc__digest *a, const struct tc__digest *b)
{
	uint8_t d = 0;

	for (int i = 0; i < TC_DIGEST_BYTES; i++)
		d |= a->b[i] ^ b->b[i];
	return d == 0;
}

void tc__digest_hex(const struct tc__digest *d, char out[TC_DIGEST_HEX + 1])
{
	static const char hx[] = "0123456789abcdef";

	for (int i = 0; i < TC_DIGEST_BYTES; i++) {
		out[2 * i] = hx[d->b[i] >> 4];
		out[2 * i + 1] = hx[d->b[i] & 15];
	}
	out[TC_DIGEST_HEX] = '\0';
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
