/*
 * gsc.h - a blocking client of the global store (proto/gsp.h over TCP,
 * after the cluster handshake of net/auth.h).
 *
 * Used by the daemon's cluster thread (cluster.c), the CLI (`tcast global
 * status`), tests and benchmarks.  One request at a time per handle (or a
 * pipeline: tc__gsc_send several, then tc__gsc_recv as many); every call
 * is bounded by the handle's timeout.  Not thread-safe: callers that share
 * a handle hold their own lock.
 */
#ifndef TC_GSC_H
#define TC_GSC_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "net/auth.h"
#include "net/tls.h"
#include "proto/gsp.h"

struct tc__gsc {
	int fd;			     /* -1 when not connected */
	struct tc__tls_ctx *tls_ctx; /* borrowed; NULL: plain TCP (set it
					after tc__gsc_init to use TLS) */
	struct tc__tls *tls;	     /* the connection's TLS, or NULL */
	int timeout_ms;		     /* per call */
	uint32_t next_req;	     /* req_id of the next request */
	struct tc__buf out;	     /* frame being sent */
	uint8_t *in;		     /* reply being read (owned) */
	size_t in_cap;
	char err[1024]; /* why the last call failed */
};

void tc__gsc_init(struct tc__gsc *g, int timeout_ms);
/* Connect to HOST:PORT (through TLS when g->tls_ctx is set: the TLS
 * handshake, then the cluster handshake inside it) and authenticate as
 * `role` named `name`.  Returns 0, or a negative code with g->err
 * (TC_ECLOSED with "refused us" for a wrong secret, TC_EPERM for a
 * certificate refused). */
int tc__gsc_connect(struct tc__gsc *g, const char *addr,
		    const struct tc__auth_secret *sec, int role,
		    const char *name);
void tc__gsc_close(struct tc__gsc *g);

/* Send one request (body of `len` bytes); returns its req_id or < 0. */
int tc__gsc_send(struct tc__gsc *g, int type, const void *body, size_t len);
/* Read the next reply: its status (0 or the server's negative code, with
 * g->err = its message), *reply over the rest of its body (valid until the
 * next call).  A broken connection is closed and gives TC_ECLOSED or
 * -ETIMEDOUT. */
int tc__gsc_recv(struct tc__gsc *g, struct tc__cur *reply);
/* send + recv. */
int tc__gsc_call(struct tc__gsc *g, int type, const void *body, size_t len,
		 struct tc__cur *reply);

/* REGISTER: the node and its whole inventory.  Returns 0 with node id,
 * lease and heartbeat period, or < 0. */
int tc__gsc_register(struct tc__gsc *g, const struct tc__gsp_node *node,
		     const struct tc__gsp_replica *reps, uint32_t n,
		     uint64_t *node_id, uint32_t *lease_ms,
		     uint32_t *heartbeat_ms);
int tc__gsc_heartbeat(struct tc__gsc *g, uint32_t uploads, uint64_t tx_bps);
/* REPLICA_ADD, with the artifact's record when `a` is not NULL. */
int tc__gsc_replica_add(struct tc__gsc *g, const struct tc__gsp_replica *r,
			const struct tc__gsp_artifact *a);
int tc__gsc_replica_del(struct tc__gsc *g, const char *id, int tier,
			uint32_t device);
/* KEY_SET; `prev` (with TC_GSP_KF_PREV) is the id the key must name. */
int tc__gsc_key_set(struct tc__gsc *g, const char *key, const char *id,
		    uint32_t flags, uint64_t expect_gen, const char *prev,
		    uint64_t *gen);
/* Take back version `gen` (naming `id`) of `key`, which this node
 * published and then could not keep: KEY_HISTORY finds the version before
 * it, and a KEY_SET with EXPECT `gen` moves the key back to it (one more
 * generation).  Returns 0 (moved back; *back = the new generation),
 * 1 (nothing to do: the key has moved on since), TC_ENOTFOUND (no earlier
 * version naming an artifact: the key stays, naming what no node holds),
 * TC_ECONFLICT (moved meanwhile) or another code, with g->err. */
int tc__gsc_key_undo(struct tc__gsc *g, const char *key, const char *id,
		     uint64_t gen, uint64_t *back);
/* KEY_GET: the id (TC_GSP_MAX_ID + 1 bytes) and generation `key` has
 * cluster-wide; TC_ENOTFOUND when the store has no such key. */
int tc__gsc_key_get(struct tc__gsc *g, const char *key, char *id,
		    uint64_t *gen);
/* One key's value in a KEYS_GET answer. */
struct tc__gsc_keyval {
	int rc;			    /* 0, or TC_ENOTFOUND: no such key */
	char id[TC_GSP_MAX_ID + 1]; /* what it names cluster-wide */
	uint64_t gen;		    /* at this generation */
};
/* KEYS_GET: the values of `n` keys (1..TC_GSP_MAX_KEYS_GET) in one
 * request, into out[0..n-1].  Returns 0, or a negative code for the whole
 * call (a store older than KEYS_GET closes the connection on it:
 * TC_ECLOSED; the caller falls back to tc__gsc_key_get). */
int tc__gsc_keys_get(struct tc__gsc *g, const char *const *keys, uint32_t n,
		     struct tc__gsc_keyval *out);
/* RESOLVE a key or an artifact id for `requester` (a node name, or ""):
 * id (TC_GSP_MAX_ID + 1 bytes), generation (0 for an id), up to `max`
 * sources into src[]; *nsrc gets their count. */
int tc__gsc_resolve(struct tc__gsc *g, const char *what, const char *requester,
		    uint32_t max, char *id, uint64_t *gen,
		    struct tc__gsp_source *src, uint32_t *nsrc);
/* PEERS: up to `max` (1..TC_GSP_MAX_SOURCES) live nodes other than
 * `requester` with a peer address, ranked by topology from it, into
 * src[]; *nsrc gets their count. */
int tc__gsc_peers(struct tc__gsc *g, const char *requester, uint32_t max,
		  struct tc__gsp_source *src, uint32_t *nsrc);
/* GROUP_CREATE / JOIN / PREPARE / ABORT / GET (`type`) with request `q`
 * (proto/gsp.h says which fields each uses).  On success *out is the
 * group's record (release with tc__gsp_group_release).  A GET with
 * q->wait_ms > 0 blocks until the group is decided or wait_ms passed
 * (the call's timeout is extended by wait_ms).  Returns 0 or the
 * store's code with g->err (TC_ENOTFOUND, TC_ECONFLICT, TC_EINVAL,
 * TC_ELIMIT, TC_EPROTO), or a connection error. */
int tc__gsc_group(struct tc__gsc *g, int type,
		  const struct tc__gsp_group_req *q, struct tc__gsp_group *out);
/* STATUS: the JSON document (malloc'd, free()). */
int tc__gsc_status(struct tc__gsc *g, char **json);

#endif /* TC_GSC_H */
