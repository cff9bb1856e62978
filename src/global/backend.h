/*
 * backend.h - where the global store keeps its metadata: an interface
 * (vtable) with SQLite as the first implementation (be_sqlite.c).
 *
 * The store keeps what routing needs in memory (state.c) and writes every
 * change through the backend; at start it loads everything back.  Leases
 * are never stored: they live in memory (as in etcd's lessor), and after a
 * restart a node is routed again only once it re-registers.
 *
 * Writes are grouped: the server calls begin() before the first write of a
 * loop turn and commit() before it sends the replies of that turn, so a
 * reply is never sent for a change that is not committed (group commit).
 *
 * An etcd backend maps onto it as docs/cluster.md says: nodes and replicas
 * under /tcast/nodes and /tcast/replicas, a key's compare-and-swap as a Txn
 * on its mod_revision, begin/commit as one Txn of at most 128 operations.
 */
#ifndef TC_GS_BACKEND_H
#define TC_GS_BACKEND_H

#include <stdint.h>

#include "proto/gsp.h"

struct tc__gs_backend;

/* Rows handed to load(): borrowed for the duration of the callback. */
struct tc__gs_load_cb {
	void *arg;
	int (*node)(void *arg, uint64_t id, const struct tc__gsp_node *n);
	/* table and digests are not loaded (fetched by artifact_get) */
	int (*artifact)(void *arg, const struct tc__gsp_artifact *a);
	int (*replica)(void *arg, uint64_t node_id,
		       const struct tc__gsp_replica *r);
	int (*key)(void *arg, const char *key, const char *id, uint64_t gen);
	/* A group (members not filled in), then each of its members; the
	 * group's deadline as wall-clock ms.  May be NULL. */
	int (*group)(void *arg, const struct tc__gsp_group *g,
		     int64_t deadline_ms);
	int (*member)(void *arg, const char *group,
		      const struct tc__gsp_member *m);
};

struct tc__gs_history {
	uint64_t gen;
	char id[TC_GSP_MAX_ID + 1];
	int64_t time_ms; /* wall clock when it was set */
};

struct tc__gs_backend_ops {
	const char *name; /* "sqlite" */
	/* Open the store at `where` (a file path for SQLite), creating it. */
	int (*open)(const char *where, int sync_full,
		    struct tc__gs_backend **out, char *err, size_t errlen);
	void (*close)(struct tc__gs_backend *be);
	int (*begin)(struct tc__gs_backend *be);
	/* 0 or a negative code; on failure the turn's writes are lost and
	 * the server answers them with an error instead. */
	int (*commit)(struct tc__gs_backend *be);
	int (*rollback)(struct tc__gs_backend *be);
	int (*load)(struct tc__gs_backend *be, const struct tc__gs_load_cb *cb);
	int (*node_put)(struct tc__gs_backend *be, uint64_t id,
			const struct tc__gsp_node *n);
	int (*artifact_put)(struct tc__gs_backend *be,
			    const struct tc__gsp_artifact *a);
	/* TC_ENOTFOUND when absent; `out` owns its blobs on success. */
	int (*artifact_get)(struct tc__gs_backend *be, const char *id,
			    struct tc__gsp_artifact *out);
	int (*replica_put)(struct tc__gs_backend *be, uint64_t node_id,
			   const struct tc__gsp_replica *r);
	int (*replica_del)(struct tc__gs_backend *be, uint64_t node_id,
			   const char *id, int tier, uint32_t device);
	int (*replica_del_node)(struct tc__gs_backend *be, uint64_t node_id);
	/* Key `key` -> `id` at generation `gen` (the caller did the compare);
	 * appends to its history. */
	int (*key_put)(struct tc__gs_backend *be, const char *key,
		       const char *id, uint64_t gen, int64_t time_ms);
	/* Up to `max` newest history entries, newest first; returns the
	 * count or a negative code. */
	int (*key_history)(struct tc__gs_backend *be, const char *key,
			   struct tc__gs_history *out, int max);
	/* A new group (open), with its deadline as wall-clock ms. */
	int (*group_put)(struct tc__gs_backend *be,
			 const struct tc__gsp_group *g, int64_t deadline_ms);
	/* A member's row (joined, node, prepared and what it staged). */
	int (*member_put)(struct tc__gs_backend *be, const char *group,
			  const struct tc__gsp_member *m);
	/* The decision, as a compare-and-swap in the database: moves the
	 * group from open to g->state with g's decided_ms, by_rank, by_node
	 * and reason only if it is still open there.  0, TC_ECONFLICT when
	 * it was decided already, TC_ENOTFOUND, or a negative code. */
	int (*group_decide)(struct tc__gs_backend *be,
			    const struct tc__gsp_group *g);
	/* Forget a group and its members. */
	int (*group_del)(struct tc__gs_backend *be, const char *group);
};

extern const struct tc__gs_backend_ops tc__gs_sqlite;

#endif /* TC_GS_BACKEND_H */
