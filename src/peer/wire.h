/*
 * wire.h - the peer data protocol: frames between tcast daemons over TCP.
 *
 * Every connection starts with the cluster-secret handshake (auth.h); then
 * the receiver sends requests and the sender answers in order:
 *
 *   MANIFEST_REQ {ref}             -> MANIFEST {id, table, chunk digests}
 *                                     or ERROR
 *   GET {id, first, count[, flags]} -> count x (DATA {chunk, nbytes} +
 *                                     bytes, or ERROR TC_ENOTFOUND from a
 *                                     source still filling: that chunk is
 *                                     not there yet, or ERROR TC_EBUSY to
 *                                     a GET flagged SHARES: sent to
 *                                     another receiver moments ago, ask
 *                                     the peers, with an optional hint:
 *                                     a chunk to ask for instead), or
 *                                     one ERROR
 *   HAVE_REQ {id}                  -> HAVE {complete, nchunks, held bitmap,
 *                                     fetching bitmap}
 *                                     or ERROR
 *   REPLICATE_REQ {id, source}     -> REPLICATED {bytes, ns} once the
 *                                     receiving daemon holds id, pulled
 *                                     from source ("host:port"), or ERROR
 *                                     with why it could not (policy ha)
 *
 * A frame is a 12-byte header (magic, version, type, flags, body length)
 * and a body read with a bounded cursor.  A DATA frame's body is only its
 * header fields; the chunk's raw bytes follow it on the stream, so the
 * sender can hand them to sendfile(2) and the receiver can recv(2) them
 * straight into the destination.  Every field has a limit; a frame that
 * breaks one ends the connection.  The decoder is fuzzed
 * (tests/fuzz/fuzz_peer_wire.c).
 */
#ifndef TC_PEER_WIRE_H
#define TC_PEER_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/hash.h"
#include "common/tensor.h"
#include "transport.h"

#define TC_PEER_MAGIC	     0x31504354u /* "TCP1" little-endian */
#define TC_PEER_VERSION	     1
#define TC_PEER_HDR_BYTES    12
#define TC_PEER_MAX_CTRL     4096 /* body of any frame but MANIFEST */
#define TC_PEER_MAX_MANIFEST ((uint32_t)64 << 20) /* table + digests */
#define TC_PEER_MAX_REF	     1024 /* bytes of a key or id in a request */
#define TC_PEER_MAX_GET	     16	  /* chunks in one GET */
#define TC_PEER_MAX_ERRMSG   256
/* GET flags (an optional trailing u8; absent = 0).  SHARES: the asker
 * serves what it gets to the other receivers of the artifact (a fan-out),
 * so a sealed source may decline a chunk it has just sent to another
 * such receiver (ERROR TC_EBUSY) and spend its link on chunks nobody
 * has yet. */
#define TC_PEER_GET_SHARES 0x01u
/* 2^40 chunks of 4 MiB would be 4 EiB: cap the count so that
 * nchunks * TC_DIGEST_BYTES fits the manifest limit. */
#define TC_PEER_MAX_CHUNKS ((TC_PEER_MAX_MANIFEST - 65536) / TC_DIGEST_BYTES)
/* HAVE: u8 + u64 + 2 x (u32 + a bitmap of at most TC_PEER_MAX_CHUNKS
 * bits) */
#define TC_PEER_MAX_HAVE (17 + 2 * ((TC_PEER_MAX_CHUNKS + 7) / 8))

enum tc__peer_type {
	TC_PEER_MANIFEST_REQ = 1,
	TC_PEER_MANIFEST = 2,
	TC_PEER_GET = 3,
	TC_PEER_DATA = 4,
	TC_PEER_ERROR = 5,
	TC_PEER_HAVE_REQ = 6, /* which chunks do you hold? */
	TC_PEER_HAVE = 7, /* these (a source still filling sends a bitmap) */
	TC_PEER_REPLICATE_REQ = 8, /* pull id from source into your daemon */
	TC_PEER_REPLICATED = 9,	   /* done: bytes and time it took */
	TC_PEER__TYPES
};

struct tc__peer_hdr {
	uint8_t type; /* enum tc__peer_type */
	uint32_t len; /* body bytes (checked against the type's limit) */
};

/* One decoded frame.  Strings are NUL-terminated copies; table and
 * digests are owned (tc__peer_msg_release). */
struct tc__peer_msg {
	uint8_t type;
	char ref[TC_PEER_MAX_REF + 1];	  /* MANIFEST_REQ */
	char id[TC_ID_LEN + 1];		  /* MANIFEST, GET, HAVE_REQ,
					     REPLICATE_REQ */
	char source[TC_PEER_ADDR_MAX];	  /* REPLICATE_REQ: "host:port" */
	uint64_t bytes;			  /* REPLICATED: artifact bytes */
	uint64_t ns;			  /* REPLICATED: the pull's time */
	struct tc__table table;		  /* MANIFEST */
	struct tc__digest *chunks;	  /* MANIFEST: nchunks digests */
	uint64_t nchunks;		  /* MANIFEST, HAVE */
	uint8_t complete;		  /* HAVE: every chunk (no bitmap) */
	uint8_t *have;			  /* HAVE: ceil(nchunks/8) bytes, owned;
					     NULL when complete */
	uint8_t *fetching;		  /* HAVE: chunks it is fetching from a
					     sealed source (same size) */
	uint64_t first;			  /* GET: first chunk; DATA: chunk */
	uint32_t count;			  /* GET: chunks; DATA: payload bytes */
	uint8_t flags;			  /* GET: TC_PEER_GET_* */
	int32_t code;			  /* ERROR: a negative tcast code */
	uint64_t hint;			  /* ERROR TC_EBUSY to a GET: 1 + a
					     chunk to ask for instead (0:
					     none; optional trailing u64) */
	char msg[TC_PEER_MAX_ERRMSG + 1]; /* ERROR */
};

/* Check a frame header: magic, version, known type, no flag bits, body
 * length within the type's limit.  Returns 0 or TC_EPROTO/TC_EVERSION/
 * TC_ELIMIT with `err` naming the field. */
int tc__peer_hdr_decode(const uint8_t raw[TC_PEER_HDR_BYTES],
			struct tc__peer_hdr *out, char *err, size_t errlen);
/* Decode a body of `h`'s type.  A MANIFEST is fully validated: the table
 * (names, dtypes, layout), nchunks against the table's size, and the
 * root digest of table + chunks against the id, so a manifest that
 * decodes is one whose every chunk digest the id vouches for.  Returns 0
 * or a negative code with `err` set; `out` needs tc__peer_msg_release
 * either way. */
int tc__peer_msg_decode(const struct tc__peer_hdr *h, const uint8_t *body,
			struct tc__peer_msg *out, char *err, size_t errlen);
void tc__peer_msg_init(struct tc__peer_msg *m);
void tc__peer_msg_release(struct tc__peer_msg *m);

/* Encoders: append one whole frame (header + body) to b (b->oom on
 * failure). */
void tc__peer_put_manifest_req(struct tc__buf *b, const char *ref);
void tc__peer_put_manifest(struct tc__buf *b, const char *id,
			   const struct tc__table *t,
			   const struct tc__digest *chunks, uint64_t nchunks);
/* `flags` TC_PEER_GET_*: 0 sends the GET without its flags byte. */
void tc__peer_put_get(struct tc__buf *b, const char *id, uint64_t first,
		      uint32_t count, uint8_t flags);
/* The DATA frame only; the caller sends `nbytes` raw bytes after it. */
void tc__peer_put_data(struct tc__buf *b, uint64_t chunk, uint32_t nbytes);
void tc__peer_put_error(struct tc__buf *b, int code, const char *msg);
/* An ERROR with a hint (1 + a chunk; 0 sends none), for a seed's "ask your
 * peers": the chunk it would rather send this asker. */
void tc__peer_put_error_hint(struct tc__buf *b, int code, const char *msg,
			     uint64_t hint);
void tc__peer_put_have_req(struct tc__buf *b, const char *id);
void tc__peer_put_replicate_req(struct tc__buf *b, const char *id,
				const char *source);
void tc__peer_put_replicated(struct tc__buf *b, uint64_t bytes, uint64_t ns);
/* `have` NULL: complete (every chunk; `fetching` ignored). */
void tc__peer_put_have(struct tc__buf *b, uint64_t nchunks, const uint8_t *have,
		       const uint8_t *fetching);

#endif /* TC_PEER_WIRE_H */
