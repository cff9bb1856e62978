/*
 * hash.h - content digests of artifacts (BLAKE3-256).
 *
 * An artifact's byte space is cut into TC_CHUNK_BYTES chunks; each chunk is
 * hashed with BLAKE3 (so chunks can be hashed in parallel and checked one by
 * one on transfer), and the root digest is BLAKE3 over the canonical
 * encoding of the tensor table (format/canon.h, docs/formats.md) followed by
 * every chunk digest in order.  The root names the artifact ("tc2:" + 64 hex
 * digits): the same tensors with the same bytes get the same id, from a
 * file, a client put or a peer, and different bytes never share one (a
 * collision would be a BLAKE3 collision).  BLAKE3 is built from upstream's C
 * code as Debian ships it (CMakeLists.txt says where).
 */
#ifndef TC_HASH_H
#define TC_HASH_H

#include <stddef.h>
#include <stdint.h>

#define TC_CHUNK_BYTES	((uint64_t)4 << 20) /* digest chunk size */
#define TC_DIGEST_BYTES 32
#define TC_DIGEST_HEX	(2 * TC_DIGEST_BYTES) /* hex digits, without NUL */
#define TC_ID_PREFIX	"tc2:"
#define TC_ID_LEN	(4 + TC_DIGEST_HEX) /* "tc2:" + 64 hex, without NUL */

struct tc__digest {
	uint8_t b[TC_DIGEST_BYTES];
};

/* One-shot BLAKE3-256 of n bytes. */
void tc__hash256(const void *p, size_t n, struct tc__digest *out);

/* Streaming BLAKE3-256 (a chunk hashed piece by piece while it is hot). */
struct tc__hasher;
struct tc__hasher *tc__hasher_new(void); /* NULL on OOM */
void tc__hasher_reset(struct tc__hasher *h);
void tc__hasher_update(struct tc__hasher *h, const void *p, size_t n);
void tc__hasher_final(struct tc__hasher *h, struct tc__digest *out);
void tc__hasher_free(struct tc__hasher *h);

/* Number of chunks for a byte space of `size` bytes (0 for 0). */
uint64_t tc__chunk_count(uint64_t size);
/* Root digest: BLAKE3(canonical table bytes || chunk digests in order).
 * The canonical table encoding is self-delimiting, so the concatenation
 * is unambiguous. */
void tc__digest_root(const void *canon_table, size_t table_len,
		     const struct tc__digest *chunks, uint64_t nchunks,
		     struct tc__digest *out);
/* Constant-size comparison of two digests: 1 when equal. */
int tc__digest_eq(const struct tc__digest *a, const struct tc__digest *b);
/* 64 lowercase hex digits and a NUL into out. */
void tc__digest_hex(const struct tc__digest *d, char out[TC_DIGEST_HEX + 1]);
/* "tc2:<hex>" and a NUL into out (TC_ID_LEN + 1 bytes). */
void tc__digest_id(const struct tc__digest *d, char out[TC_ID_LEN + 1]);
/* True when s has the exact shape of an artifact id. */
int tc__is_id(const char *s);

#endif /* TC_HASH_H */
