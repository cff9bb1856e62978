/*
 * gsp.h - the global-store protocol: frames and records shared by the
 * global store (src/global), the daemon's cluster client (src/store) and
 * the CLI.
 *
 * A TCP connection first runs the cluster handshake (net/auth.h), then
 * carries frames: a 20-byte header (u32 magic "TCG1", u16 version, u16
 * type, u32 flags, u32 req_id, u32 body_len), then the body.  Integers are
 * little-endian; `str` is a u32 length then bytes.  A reply repeats type
 * and req_id with TC_GSP_REPLY set; its body starts with i32 status and,
 * when negative, str message.  Every field has a limit (below); a decoder
 * reads only through a bounded cursor and refuses trailing bytes.  A
 * protocol error closes the connection.  Depends only on src/common.
 */
#ifndef TC_GSP_H
#define TC_GSP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

#define TC_GSP_MAGIC	   0x31474354u /* "TCG1" on the wire */
#define TC_GSP_VERSION	   1
#define TC_GSP_HDR	   20
#define TC_GSP_MAX_BODY	   ((uint32_t)32 << 20) /* any frame body */
#define TC_GSP_MAX_NAME	   64			/* node names, labels */
#define TC_GSP_MAX_ADDR	   128			/* "host:port" */
#define TC_GSP_MAX_ID	   128			/* artifact ids */
#define TC_GSP_MAX_KEY	   512			/* keys (as the local store) */
#define TC_GSP_MAX_POLICY  32			/* policy names */
#define TC_GSP_MAX_MSG	   1024			/* error messages */
#define TC_GSP_MAX_TABLE   ((uint32_t)16 << 20) /* encoded tensor table */
#define TC_GSP_MAX_CHUNKS  ((uint32_t)1 << 24)	/* 64 TiB at 4 MiB chunks */
#define TC_GSP_MAX_REPL	   65536		/* replicas in one REGISTER */
#define TC_GSP_MAX_SOURCES 64			/* sources in one reply */
#define TC_GSP_MAX_HISTORY 1024			/* key history entries */
#define TC_GSP_MAX_TIER	   3			/* tiers below */

#define TC_GSP_REPLY 0x1u /* this frame answers req_id */

/* Replica tiers, in the order a source query prefers them on one node. */
enum tc_gsp_tier {
	TC_GSP_TIER_HOST = 0,	/* a sealed memfd in a daemon */
	TC_GSP_TIER_GPU = 1,	/* a VMM allocation (device = ordinal) */
	TC_GSP_TIER_DISK = 2,	/* a file on a shared directory */
	TC_GSP_TIER_SHARED = 3, /* shared disk visible to every node */
};

/* KEY_SET flags. */
#define TC_GSP_KF_EXPECT 0x1u /* move only if the key is at expect_gen */
#define TC_GSP_KF_PREV                                                \
	0x2u /* move only if the key names `prev` (a str after        \
		expect_gen): how a daemon forwards its own CAS, whose \
		generations are local */

enum tc_gsp_type {
#define GSP(name, id) TC_GSP_##name = (id),
#include "gsp_msgs.def"
#undef GSP
	TC_GSP__MAX
};

struct tc__gsp_hdr {
	uint16_t type;	   /* enum tc_gsp_type */
	uint32_t flags;	   /* TC_GSP_REPLY */
	uint32_t req_id;   /* echoed by the reply */
	uint32_t body_len; /* <= TC_GSP_MAX_BODY */
};

/* A node as it registers.  Strings are NUL-terminated. */
struct tc__gsp_node {
	char name[TC_GSP_MAX_NAME + 1];	     /* unique in the cluster */
	uint64_t epoch;			     /* random per daemon start */
	char peer_addr[TC_GSP_MAX_ADDR + 1]; /* its peer server, or "" */
	char zone[TC_GSP_MAX_NAME + 1];	     /* topology labels, may be "" */
	char rack[TC_GSP_MAX_NAME + 1];
	char host[TC_GSP_MAX_NAME + 1];
};

/* One replica a node holds.  `have` (owned, tc__free) is NULL when the
 * replica is complete, else a bitmap of ceil(nchunks / 8) bytes (chunk i
 * is bit i % 8 of byte i / 8). */
struct tc__gsp_replica {
	char id[TC_GSP_MAX_ID + 1];
	uint8_t tier;	 /* enum tc_gsp_tier */
	uint32_t device; /* GPU ordinal; 0 otherwise */
	uint64_t size;	 /* artifact bytes */
	uint32_t nchunks;
	uint8_t *have; /* owned; NULL = every chunk */
};

/* An artifact's record: what a node needs to pull it.  `table` and
 * `digests` are owned (tc__free) and may be NULL (length 0). */
struct tc__gsp_artifact {
	char id[TC_GSP_MAX_ID + 1];
	uint64_t size;
	uint32_t nchunks;
	char policy[TC_GSP_MAX_POLICY + 1];
	uint8_t *table; /* the local protocol's table encoding */
	uint32_t table_len;
	uint8_t *digests; /* nchunks x 32 bytes, or none */
	uint32_t digests_len;
};

/* One ranked source of a SOURCES / RESOLVE reply. */
struct tc__gsp_source {
	uint64_t node_id;
	char name[TC_GSP_MAX_NAME + 1];
	char peer_addr[TC_GSP_MAX_ADDR + 1];
	uint8_t tier;
	uint32_t device;
	uint8_t complete;  /* 1: every chunk */
	uint32_t distance; /* 0 same node, 1 host, 2 rack, 3 zone, 4 other,
			      5 shared disk */
	uint32_t uploads;  /* its uploads in flight, last heartbeat */
};

const char *tc__gsp_name(int type);
const char *tc__gsp_tier_name(int tier);
void tc__gsp_hdr_encode(const struct tc__gsp_hdr *h, uint8_t out[TC_GSP_HDR]);
/* Magic, version, known type, known flags, body_len within limits.
 * Returns 0, TC_EPROTO, TC_EVERSION or TC_ELIMIT with `err`. */
int tc__gsp_hdr_decode(const uint8_t in[TC_GSP_HDR], struct tc__gsp_hdr *h,
		       char *err, size_t errlen);
/* Start a frame in `b`; tc__gsp_finish patches its body length. */
size_t tc__gsp_begin(struct tc__buf *b, int type, uint32_t flags,
		     uint32_t req_id);
void tc__gsp_finish(struct tc__buf *b, size_t off);
/* A reply header and status (and message when status < 0). */
size_t tc__gsp_reply_begin(struct tc__buf *b, int type, uint32_t req_id,
			   int status, const char *msg);

/*
 * Field readers: each reads one field, checks its limit and content
 * (names and labels: printable ASCII without spaces; ids: the same; keys:
 * tc__name_check) and returns 0, TC_EPROTO (truncated, bad content) or
 * TC_ELIMIT, with `err` naming the field.
 */
int tc__gsp_get_name(struct tc__cur *c, const char *field, char *dst,
		     size_t max, bool empty_ok, char *err, size_t errlen);
int tc__gsp_get_key(struct tc__cur *c, char *dst, char *err, size_t errlen);
/* The body must be used up. */
int tc__gsp_end(const struct tc__cur *c, char *err, size_t errlen);

void tc__gsp_put_node(struct tc__buf *b, const struct tc__gsp_node *n);
int tc__gsp_get_node(struct tc__cur *c, struct tc__gsp_node *n, char *err,
		     size_t errlen);
void tc__gsp_put_replica(struct tc__buf *b, const struct tc__gsp_replica *r);
/* On failure `r` holds nothing to free. */
int tc__gsp_get_replica(struct tc__cur *c, struct tc__gsp_replica *r, char *err,
			size_t errlen);
void tc__gsp_replica_release(struct tc__gsp_replica *r);
void tc__gsp_put_artifact(struct tc__buf *b, const struct tc__gsp_artifact *a);
int tc__gsp_get_artifact(struct tc__cur *c, struct tc__gsp_artifact *a,
			 char *err, size_t errlen);
void tc__gsp_artifact_release(struct tc__gsp_artifact *a);
void tc__gsp_put_source(struct tc__buf *b, const struct tc__gsp_source *s);
int tc__gsp_get_source(struct tc__cur *c, struct tc__gsp_source *s, char *err,
		       size_t errlen);
/* Bitmap bytes for n chunks. */
static inline uint32_t tc__gsp_bitmap_len(uint32_t nchunks)
{
	return (nchunks + 7) / 8;
}

#endif /* TC_GSP_H */
