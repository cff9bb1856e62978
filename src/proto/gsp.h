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

#define TC_GSP_MAGIC	    0x31474354u /* "TCG1" on the wire */
#define TC_GSP_VERSION	    1
#define TC_GSP_HDR	    20
#define TC_GSP_MAX_BODY	    ((uint32_t)32 << 20) /* any frame body */
#define TC_GSP_MAX_NAME	    64			 /* node names, labels */
#define TC_GSP_MAX_ADDR	    128			 /* "host:port" */
#define TC_GSP_MAX_ID	    128			 /* artifact ids */
#define TC_GSP_MAX_KEY	    512			 /* keys (as the local store) */
#define TC_GSP_MAX_POLICY   32			 /* policy names */
#define TC_GSP_MAX_MSG	    1024		 /* error messages */
#define TC_GSP_MAX_TABLE    ((uint32_t)16 << 20) /* encoded tensor table */
#define TC_GSP_MAX_CHUNKS   ((uint32_t)1 << 24)	 /* 64 TiB at 4 MiB chunks */
#define TC_GSP_MAX_REPL	    65536		 /* replicas in one REGISTER */
#define TC_GSP_MAX_SOURCES  64			 /* sources in one reply */
#define TC_GSP_MAX_HISTORY  1024		 /* key history entries */
#define TC_GSP_MAX_KEYS_GET 1024		 /* keys in one KEYS_GET */
#define TC_GSP_MAX_TIER	    3			 /* tiers below */
#define TC_GSP_MAX_GROUP    256			 /* group names */
#define TC_GSP_MAX_RANKS    4096		 /* ranks in one group */
#define TC_GSP_MAX_REASON   512			 /* an abort's reason */
#define TC_GSP_MAX_WAIT_MS  600000		 /* GROUP_GET's wait_ms */
#define TC_GSP_MAX_GROUP_MS 86400000		 /* a group's timeout_ms */
#define TC_GSP_MIN_LEASE_MS 100			 /* a rank's lease_ms */
#define TC_GSP_MAX_LEASE_MS 600000
#define TC_GSP_NO_RANK	    0xffffffffu /* ABORT by an operator, not a rank */

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
/* Neither EXPECT nor PREV: a plain set (create, or confirm the same id)
 * whose new key starts at expect_gen rather than 1.  A daemon publishes
 * a key it made while alone or while the store was down this way, so the
 * cluster's generation and its own agree (docs/cluster.md). */
#define TC_GSP_KF_AT 0x4u

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

/*
 * Group realization (GROUP_* messages, docs/cluster.md#groups): a group
 * (name, ranks expected, timeout) is created; each rank joins it with its
 * node and a lease it renews by joining again, then reports prepared;
 * the store makes one decision, commit or abort, by compare-and-swap in
 * its database transaction.  A group's state only moves open -> commit
 * or open -> abort.
 */
enum tc_gsp_group_state {
	TC_GSP_GSTATE_OPEN = 0,
	TC_GSP_GSTATE_COMMIT = 1,
	TC_GSP_GSTATE_ABORT = 2,
};

/* A GROUP_* request body, decoded.  Which fields a type carries:
 *   CREATE  group, ranks, timeout_ms
 *   JOIN    group, rank, node ("" = tied to no node), lease_ms
 *   PREPARE group, rank, id (what the rank staged)
 *   ABORT   group, rank (TC_GSP_NO_RANK: an operator), reason
 *   GET     group, wait_ms (0: answer now; else when decided or after
 *           wait_ms, whichever is first) */
struct tc__gsp_group_req {
	char group[TC_GSP_MAX_GROUP + 1];
	uint32_t rank;
	uint32_t ranks;
	uint32_t timeout_ms;
	uint32_t lease_ms;
	uint32_t wait_ms;
	char node[TC_GSP_MAX_NAME + 1];
	char id[TC_GSP_MAX_ID + 1];
	char reason[TC_GSP_MAX_REASON + 1];
};

/* One joined rank of a group record. */
struct tc__gsp_member {
	uint32_t rank;
	char node[TC_GSP_MAX_NAME + 1]; /* "" = tied to no node */
	uint32_t lease_ms;		/* its lease's length */
	uint32_t lease_left_ms;		/* 0 once lapsed */
	uint8_t prepared;		/* 1: reported prepared */
	char id[TC_GSP_MAX_ID + 1];	/* what it staged, "" before */
};

/* A group as every GROUP_* reply carries it.  `members` (owned, tc__free
 * through tc__gsp_group_release) lists the ranks that joined, by rank. */
struct tc__gsp_group {
	char name[TC_GSP_MAX_GROUP + 1];
	uint32_t ranks;		   /* expected */
	uint32_t timeout_ms;	   /* from creation to the deadline */
	uint8_t state;		   /* enum tc_gsp_group_state */
	uint64_t created_ms;	   /* wall clock, ms since the epoch */
	uint64_t decided_ms;	   /* wall clock; 0 while open */
	uint32_t deadline_left_ms; /* 0 once decided or past */
	uint32_t nprepared;
	int32_t by_rank; /* the rank an abort is about, or -1 */
	char by_node[TC_GSP_MAX_NAME + 1];  /* its node, or "" */
	char reason[TC_GSP_MAX_REASON + 1]; /* why it was decided */
	uint32_t nmembers;
	struct tc__gsp_member *members;
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
/* A KEY_GET reply's value: str id (TC_GSP_MAX_ID + 1 bytes), u64
 * generation.  Returns 0 or TC_EPROTO with err. */
int tc__gsp_get_key_value(struct tc__cur *c, char *id, uint64_t *gen, char *err,
			  size_t errlen);
/* KEYS_GET request: u32 n (1..TC_GSP_MAX_KEYS_GET), then n keys (str,
 * each as KEY_GET's), nothing after.  Reply: u32 n (the request's), then
 * for each key in order u8 found (0 or 1) and, when 1, its value as
 * KEY_GET's (str id, u64 generation). */
void tc__gsp_put_keys_get_req(struct tc__buf *b, const char *const *keys,
			      uint32_t n);
/* A KEYS_GET count (request or reply): 1..`max` (at most
 * TC_GSP_MAX_KEYS_GET).  Returns 0, TC_EPROTO (truncated, or 0) or
 * TC_ELIMIT with `err`. */
int tc__gsp_get_keys_count(struct tc__cur *c, uint32_t max, uint32_t *n,
			   char *err, size_t errlen);
/* One entry of a KEYS_GET reply; `id` NULL: the store has no such key. */
void tc__gsp_put_key_entry(struct tc__buf *b, const char *id, uint64_t gen);
/* Decode one: *found, and when true `id` (TC_GSP_MAX_ID + 1 bytes) and
 * *gen; else id "" and *gen 0.  Returns 0 or TC_EPROTO / TC_ELIMIT with
 * `err`. */
int tc__gsp_get_key_entry(struct tc__cur *c, bool *found, char *id,
			  uint64_t *gen, char *err, size_t errlen);
/* One entry of a KEY_HISTORY reply: u64 generation, str id (may be ""),
 * u64 unix ms.  Returns 0 or TC_EPROTO with err. */
int tc__gsp_get_key_version(struct tc__cur *c, uint64_t *gen, char *id,
			    uint64_t *unix_ms, char *err, size_t errlen);

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
const char *tc__gsp_group_state_name(int state);
/* Encode / decode the body of GROUP_* request `type` (checking every
 * field's limit and range, and that the body is used up).  Decode returns
 * 0, TC_EPROTO, TC_ELIMIT or TC_EINVAL (a value out of range) with `err`. */
void tc__gsp_put_group_req(struct tc__buf *b, int type,
			   const struct tc__gsp_group_req *r);
int tc__gsp_get_group_req(struct tc__cur *c, int type,
			  struct tc__gsp_group_req *r, char *err,
			  size_t errlen);
void tc__gsp_put_group(struct tc__buf *b, const struct tc__gsp_group *g);
/* On failure `g` holds nothing to free. */
int tc__gsp_get_group(struct tc__cur *c, struct tc__gsp_group *g, char *err,
		      size_t errlen);
void tc__gsp_group_release(struct tc__gsp_group *g);
/* Free text (an abort's reason): printable ASCII and spaces, at most
 * `max` bytes. */
int tc__gsp_get_text(struct tc__cur *c, const char *field, char *dst,
		     size_t max, char *err, size_t errlen);

/* PEERS request: str requester (a node name; "" = the connection's own
 * node), u32 max (0 = the store's default, else 1..TC_GSP_MAX_SOURCES).
 * Decode returns 0, TC_EPROTO, TC_ELIMIT or TC_EINVAL with `err`. */
void tc__gsp_put_peers_req(struct tc__buf *b, const char *requester,
			   uint32_t max);
int tc__gsp_get_peers_req(struct tc__cur *c, char *requester, uint32_t *max,
			  char *err, size_t errlen);
/* A source list as SOURCES, RESOLVE and PEERS replies end: u32 n (at most
 * `max`, itself at most TC_GSP_MAX_SOURCES), then n sources, and nothing
 * after.  Returns 0 with *n set, or TC_EPROTO / TC_ELIMIT with `err`. */
int tc__gsp_get_sources(struct tc__cur *c, struct tc__gsp_source *src,
			uint32_t max, uint32_t *n, char *err, size_t errlen);

/* Bitmap bytes for n chunks. */
static inline uint32_t tc__gsp_bitmap_len(uint32_t nchunks)
{
	return (nchunks + 7) / 8;
}

#endif /* TC_GSP_H */
