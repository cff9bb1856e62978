/*
 * hash.h - content digests of artifacts.
 *
 * An artifact's byte space is cut into TC_CHUNK_BYTES chunks; each chunk is
 * hashed with XXH3-128 (so chunks can be hashed in parallel and checked one by
 * one on transfer), and the root digest is XXH3-128 over the digest of the
 * canonical tensor table followed by every chunk digest in order.  The root
 * names the artifact ("tc1:" + 32 hex digits): the same tensors with the same
 * bytes get the same id, from a file, a client put or a peer.
 */
#ifndef TC_HASH_H
#define TC_HASH_H

#include <stddef.h>
#include <stdint.h>

#define TC_CHUNK_BYTES ((uint64_t)4 << 20) /* digest chunk size */
#define TC_ID_PREFIX   "tc1:"
#define TC_ID_LEN      36 /* "tc1:" + 32 hex digits, without NUL */

struct tc__digest {
	uint64_t hi;
	uint64_t lo;
};

/* One-shot XXH3-128 of n bytes. */
void tc__hash128(const void *p, size_t n, struct tc__digest *out);

/* Streaming XXH3-128 (a chunk hashed piece by piece while it is hot). */
struct tc__hasher;
struct tc__hasher *tc__hasher_new(void); /* NULL on OOM */
void tc__hasher_reset(struct tc__hasher *h);
void tc__hasher_update(struct tc__hasher *h, const void *p, size_t n);
void tc__hasher_final(struct tc__hasher *h, struct tc__digest *out);
void tc__hasher_free(struct tc__hasher *h);

/* Number of chunks for a byte space of `size` bytes (0 for 0). */
uint64_t tc__chunk_count(uint64_t size);
/* Root digest from the table digest and the chunk digests. */
void tc__digest_root(const struct tc__digest *table,
		     const struct tc__digest *chunks, uint64_t nchunks,
		     struct tc__digest *out);
/* 32 lowercase hex digits and a NUL into out. */
void tc__digest_hex(const struct tc__digest *d, char out[33]);
/* "tc1:<hex>" and a NUL into out (TC_ID_LEN + 1 bytes). */
void tc__digest_id(const struct tc__digest *d, char out[TC_ID_LEN + 1]);
/* True when s has the exact shape of an artifact id. */
int tc__is_id(const char *s);

#endif /* TC_HASH_H */
