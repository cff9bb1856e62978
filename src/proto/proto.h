/*
 * proto.h - frames and bodies of the local protocol, shared by the daemon
 * and libtcast.
 *
 * Every frame is a fixed 24-byte header, then `body_len` bytes of body,
 * with `nfds` file descriptors attached (SCM_RIGHTS) to the frame's bytes.
 * All integers are little-endian.  A reply repeats the request's type and
 * req_id with TC_PF_REPLY set; its body starts with an i32 status and, when
 * the status is negative, a string message.  Bodies are decoded only through
 * a bounded cursor (common/buf.h) and every length has a hard limit; a
 * protocol error ends the connection.  Depends only on src/common.
 */
#ifndef TC_PROTO_H
#define TC_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/tensor.h"

#define TC_PROTO_MAGIC	  0x31435354u /* "TSC1" on the wire */
#define TC_PROTO_VERSION  2	      /* 2: ids are "tc2:" + 64 hex (BLAKE3) */
#define TC_FRAME_HDR	  24	      /* header bytes */
#define TC_PROTO_MAX_BODY ((uint32_t)256 << 20) /* bytes of one body */
#define TC_PROTO_MAX_FDS  4			/* fds on one frame */
#define TC_PROTO_MAX_STR  4096			/* keys, paths, messages */
#define TC_PROTO_MAX_JSON ((uint32_t)64 << 20)	/* JSON replies */

/* Frame flags. */
#define TC_PF_REPLY 0x1u /* this frame answers req_id */
#define TC_PF_KNOWN 0x1u /* every flag this version understands */

/* Request flags inside bodies. */
#define TC_RF_PROGRESS 0x1u /* IMPORT: send PROGRESS frames */
#define TC_RF_EXPECT   0x2u /* IMPORT/CREATE/KEY_SET: compare-and-swap */
#define TC_RF_GPU                                         \
	0x8u /* IMPORT: straight to a GPU; u32 device and \
		  str uuid follow expect_gen */

#define TC_RF_SHARDS                                                  \
	0x10u /* IMPORT: a folder the client resolved; u32 n and n    \
		 shard names follow (after the GPU fields), the fd is \
		 a socket that then carries the n shard fds */
#define TC_IMPORT_FDS_PER_MSG 8 /* shard fds per message on that socket */
#define TC_RF_NOWAIT                                                 \
	0x20u /* IMPORT/CREATE: reply before the shared-disk copy is \
		 durable (INSPECT says when it is) */
#define TC_RF_TTL                                                  \
	0x40u /* IMPORT/CREATE: u64 ttl_ms follows expect_gen; the \
		 artifact goes when it passes */
#define TC_RF_VIEW                                                     \
	0x80u /* IMPORT with TC_RF_GPU: str view spec (JSON, at most   \
		 TC_PROTO_MAX_VIEW bytes) follows the GPU fields; only \
		 the view's byte ranges are loaded, into an artifact   \
		 whose table is the view's */
#define TC_PROTO_MAX_VIEW ((size_t)1 << 20)
/* RM: an optional u32 of flags after the reference. */
#define TC_RM_KEEP_DISK 0x1u /* leave the shared-disk copy in place */
/* IMPORT/SEAL replies end with u32 persistence and str degraded (what a
 * "should" of the policy could not do, or ""). */
#define TC_PERSIST_MEMORY  0 /* in memory only (lost with the daemon) */
#define TC_PERSIST_DURABLE 1 /* on the shared disk and in the metadata */
#define TC_PERSIST_PENDING 2 /* being written (TC_RF_NOWAIT) */

/* ATTACH and ATTACH_GPU replies end with an optional u32 origin: how the
 * replica the reply hands out came to be for this request.  Clients read
 * it when present (daemons before it end the reply at the table). */
#define TC_ORIGIN_HELD 0 /* in memory already (or filled from it) */
#define TC_ORIGIN_SHARED_HOST                      \
	1 /* loaded from the shared disk into host \
	     memory for this request */
#define TC_ORIGIN_SHARED_GPU                                           \
	2		       /* loaded from the shared disk straight \
				  into this GPU replica (no host copy) */
#define TC_ORIGIN_SPILL_HOST 3 /* the same from the spill folder */
#define TC_ORIGIN_SPILL_GPU  4

/* BIND's u32 flags, and SWAP's optional u32 flags after the reference
 * (absent: the binding keeps its setting; present: it is set anew). */
#define TC_BIND_F_PUBLISH                                 \
	0x1u /* the binding is a source for peers and the \
		global store (tier gpu) */

/* ATTACH_GPU: no daemon ordinal given, the UUID names the GPU. */
#define TC_GPU_ANY_DEVICE 0xffffffffu

enum tc_msg_type {
#define MSG(name, id, handler, flags) TC_MSG_##name = (id),
#include "msgs.def"
#undef MSG
	TC_MSG__MAX
};

struct tc__frame_hdr {
	uint16_t version;
	uint16_t type;	 /* enum tc_msg_type */
	uint32_t flags;	 /* TC_PF_* */
	uint32_t req_id; /* chosen by the client, echoed in the reply */
	uint32_t body_len;
	uint16_t nfds;
};

/* Name of a message type ("ATTACH") or "?" (static storage). */
const char *tc__proto_name(int type);
void tc__frame_encode(const struct tc__frame_hdr *h, uint8_t out[TC_FRAME_HDR]);
/* Decode and validate a header: magic, version, known type and flags,
 * body_len and nfds within limits.  Returns 0, TC_EPROTO, TC_EVERSION or
 * TC_ELIMIT; `err` says which field was wrong. */
int tc__frame_decode(const uint8_t in[TC_FRAME_HDR], struct tc__frame_hdr *h,
		     char *err, size_t errlen);

/* Start a frame in `b` (header space reserved); tc__frame_finish patches the
 * body length.  Returns the offset of the header. */
size_t tc__frame_begin(struct tc__buf *b, int type, uint32_t flags,
		       uint32_t req_id, uint16_t nfds);
void tc__frame_finish(struct tc__buf *b, size_t hdr_off);

/*
 * Tensor tables on the wire:
 *   u32 ntensors, then per tensor: str name, u8 dtype, u8 ndim,
 *   u64 shape[ndim], u64 offset, u64 nbytes;
 *   u32 nmeta, then per entry: str key, str value; u64 total_bytes.
 * The same bytes are the canonical table whose digest is part of an
 * artifact's id.
 */
void tc__proto_put_table(struct tc__buf *b, const struct tc__table *t);
/* The layout of a table (names, dtypes, shapes, offsets, total; no
 * metadata): equal encodings mean one artifact can replace the other in
 * place (binding swaps). */
void tc__proto_put_layout(struct tc__buf *b, const struct tc__table *t);
/* Decode and validate a table: names non-empty and unique, dtypes known,
 * nbytes == size(shape, dtype), when `check_layout` offsets ascending,
 * aligned to TC_ALIGN, non-overlapping and inside total_bytes.  On failure
 * `out` is released and `err` names the tensor.  Returns 0, TC_EPROTO,
 * TC_ELIMIT, TC_EBADDTYPE, TC_EINVAL or -ENOMEM. */
int tc__proto_get_table(struct tc__cur *c, int check_layout,
			struct tc__table *out, char *err, size_t errlen);

/* PUT_SERVE body: u64 handle, str id (<= 128 bytes), u64 nchunks
 * (<= 2^24), nchunks x 32-byte digests.  `*digests` points into the
 * cursor's buffer.  Returns 0, TC_EPROTO (truncated, trailing bytes) or
 * TC_ELIMIT, with `err` set. */
#define TC_PROTO_MAX_CHUNKS ((uint64_t)1 << 24)
int tc__proto_get_put_serve(struct tc__cur *c, uint64_t *handle, char *id,
			    size_t idlen, uint64_t *nchunks,
			    const uint8_t **digests, char *err, size_t errlen);
/* SEAL_GPU body: u64 handle, then optionally u64 nchunks (1..2^24) and
 * nchunks x 32-byte digests: the chunk digests the client computed while
 * copying (*nchunks 0 when the body ends after the handle, as from
 * clients before them).  `*digests` points into the cursor's buffer.
 * Returns 0, TC_EPROTO or TC_ELIMIT, with `err` set. */
int tc__proto_get_seal_gpu(struct tc__cur *c, uint64_t *handle,
			   uint64_t *nchunks, const uint8_t **digests,
			   char *err, size_t errlen);
/* The binding flags of BIND (required) or SWAP (optional: *present false
 * when the body ends here, as from clients before them).  Returns 0,
 * TC_EPROTO (a truncated field) or TC_EINVAL (an unknown flag) with
 * `err`. */
int tc__proto_get_bind_flags(struct tc__cur *c, bool optional, uint32_t *flags,
			     bool *present, char *err, size_t errlen);
/* PUT_HAVE body: u64 handle, u32 flags (bit 0 FETCHING, no other), u32 n
 * (<= 65536), n x u64 chunk.  `*chunks` points into the cursor's buffer
 * (read them with tc__cur_read_u64 on a cursor over n * 8 bytes).
 * Returns 0 or TC_EPROTO with `err` set. */
#define TC_PROTO_MAX_HAVE 65536

/* IMPORT's view spec (TC_RF_VIEW): a string of at most TC_PROTO_MAX_VIEW
 * bytes, copied NUL-terminated into *out (tc__free).  Returns 0, TC_EPROTO
 * (missing, too long, a NUL inside) or -ENOMEM, with `err`. */
int tc__proto_get_view_spec(struct tc__cur *c, char **out, char *err,
			    size_t errlen);
int tc__proto_get_put_have(struct tc__cur *c, uint64_t *handle, uint32_t *flags,
			   uint32_t *n, const uint8_t **chunks, char *err,
			   size_t errlen);

/* GROUP (26): a group of the global store (docs/cluster.md#groups),
 * relayed by a daemon in the cluster with its own secret.  Body: u32 op,
 * then for op CREATE, JOIN, PREPARE, ABORT or GET (the global store's
 * message ids, 13..17) that message's request body (proto/gsp.h); for op
 * TC_PROTO_GROUP_HOLD: str group, u32 ranks (0: join only, else create
 * first), u32 timeout_ms (1..86,400,000 when ranks > 0, else ignored),
 * u32 rank (< ranks when ranks > 0), u32 lease_ms (100..600,000): the
 * daemon creates and joins for its own node and renews the rank's lease
 * for as long as this connection stays open; when it closes first, the
 * daemon aborts the group for that rank.  HOLD fills q->group, ranks,
 * timeout_ms, rank and lease_ms.  Returns 0, TC_EPROTO or TC_EINVAL with
 * `err` set. */
#define TC_PROTO_GROUP_HOLD 0x100u
struct tc__gsp_group_req;
int tc__proto_get_group(struct tc__cur *c, uint32_t *op,
			struct tc__gsp_group_req *q, char *err, size_t errlen);
void tc__proto_put_group(struct tc__buf *b, uint32_t op,
			 const struct tc__gsp_group_req *q);

#endif /* TC_PROTO_H */
