/*
 * cluster.h - the daemon's membership in a cluster (`global: HOST:PORT`).
 *
 * A thread of its own keeps one authenticated connection to the global
 * store: it registers the node (name, epoch, peer address, zone/rack/host
 * labels) with its whole replica inventory, heartbeats, and sends replica
 * and key changes as the event loop reports them through the hooks below
 * (which only queue, under a mutex, and never block the loop).  When the
 * global store is unreachable the daemon goes on serving local clients;
 * the thread retries with jittered backoff (100 ms doubling to 5 s) and
 * re-registers with the full inventory when it is back, so nothing the
 * daemon holds is lost to the cluster's view.
 */
#ifndef TC_CLUSTER_H
#define TC_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/gsp.h"

struct tc__cluster;
struct tc__store_config;
struct tc__table;
struct tc__gsc_keyval; /* gsc.h */

/* Load the secret (refusing a readable file), pick an epoch and start the
 * thread.  *out stays NULL when the config names no global store.
 * Returns 0 or a negative code with `err`. */
int tc__cluster_start(const struct tc__store_config *cfg,
		      struct tc__cluster **out, char *err, size_t errlen);
/* Leave the cluster (DEREGISTER within 1 s, best effort), stop the
 * thread, free.  NULL is a no-op. */
void tc__cluster_stop(struct tc__cluster *cl);

/* Hooks, from the loop thread.  The table is encoded at once (borrowed
 * only for the call).  Tier gpu counts copies: one record per (id,
 * device) however many GPU copies (a replica, published bindings) add
 * it, deleted by the last del. */
void tc__cluster_replica_add(struct tc__cluster *cl, const char *id, int tier,
			     uint32_t device, uint64_t size,
			     const struct tc__table *t, const char *policy);
void tc__cluster_replica_del(struct tc__cluster *cl, const char *id, int tier,
			     uint32_t device);
/* A key now names `id`; `prev` is what it named before ("" when new). */
/* A put fills `id` here (a pull in progress): a partial host replica
 * whose chunks filling_have names; up=false when it ends unsealed.  A
 * sealed host replica of `id` wins over a filling one. */
void tc__cluster_filling(struct tc__cluster *cl, const char *id,
			 const struct tc__table *t, const char *policy,
			 bool up);
/* Chunks of a filling replica verified in place; the global store hears
 * of them at most every TC_CLUSTER_HAVE_MS (batched). */
void tc__cluster_filling_have(struct tc__cluster *cl, const char *id,
			      const uint64_t *chunks, uint32_t n);
#define TC_CLUSTER_HAVE_MS 250
/* `gen`: the key's generation here (a new key keeps it at the global
 * store, TC_GSP_KF_AT). */
void tc__cluster_key_set(struct tc__cluster *cl, const char *key,
			 const char *id, const char *prev, uint64_t gen);
/* The peer server's bound address (port 0 resolved), once known. */
void tc__cluster_set_peer_addr(struct tc__cluster *cl, const char *addr);
/* Uploads in flight, for the next heartbeat. */
void tc__cluster_set_uploads(struct tc__cluster *cl, uint32_t uploads);

/* RESOLVE a key or id cluster-wide (blocking, bounded by 2 s; call it
 * off the loop thread).  TC_ENODAEMON at once when the global store is
 * unreachable.  Returns 0 or a negative code with `err`. */
int tc__cluster_resolve(struct tc__cluster *cl, const char *what, char *id,
			uint64_t *gen, struct tc__gsp_source *src, uint32_t max,
			uint32_t *nsrc, char *err, size_t errlen);

/* tc__gsc_key_undo on the node's connection (blocking, bounded like
 * resolve; off the loop thread): take back version `gen` of `key`, which
 * this node's key gate published and the node then failed to keep. */
int tc__cluster_key_undo(struct tc__cluster *cl, const char *key,
			 const char *id, uint64_t gen, uint64_t *back,
			 char *err, size_t errlen);
/* KEY_GET (blocking, bounded like resolve; off the loop thread): the id
 * (TC_GSP_MAX_ID + 1 bytes) and generation of `key` cluster-wide.
 * Returns 0, TC_ENOTFOUND (no such key there), TC_ENODAEMON (the store is
 * unreachable) or another code, with `err`. */
int tc__cluster_key_get(struct tc__cluster *cl, const char *key, char *id,
			uint64_t *gen, char *err, size_t errlen);
/* KEYS_GET (blocking, bounded like resolve; off the loop thread): the
 * values of `n` keys (1..TC_GSP_MAX_KEYS_GET) in one request, into
 * out[0..n-1] (rc 0 or TC_ENOTFOUND each).  Returns 0, TC_ENOTSUP when
 * the global store does not know KEYS_GET (an older store: it closed the
 * connection, which then reconnects; batches are not tried again for
 * KEYS_GET_RETRY_MS; ask key by key with tc__cluster_key_get),
 * TC_ENODAEMON or another code, with `err`. */
int tc__cluster_keys_get(struct tc__cluster *cl, const char *const *keys,
			 uint32_t n, struct tc__gsc_keyval *out, char *err,
			 size_t errlen);
/* PEERS (blocking, bounded like resolve; off the loop thread): up to
 * `max` live nodes other than this one with a peer address, ranked by
 * topology from here.  *nsrc = 0 means no other live node.  Returns 0 or
 * a negative code with `err` (TC_ENODAEMON: the store is unreachable). */
int tc__cluster_peers(struct tc__cluster *cl, struct tc__gsp_source *src,
		      uint32_t max, uint32_t *nsrc, char *err, size_t errlen);
/* Whether the node is registered with the global store right now. */
bool tc__cluster_connected(struct tc__cluster *cl);
/* KEY_SET at the global store, decided there before the daemon
 * acknowledges anything (blocking, bounded by 2 s per call; call it off
 * the loop thread): with `expect`, a compare-and-swap of the cluster's
 * generation `expect_gen` (0: create only if absent); without, create
 * the key or confirm it names `id`.  Queued changes of the same key go
 * first.  *gen gets the cluster's generation after it.  Returns 0,
 * TC_ECONFLICT (the store's message names the key and generations),
 * TC_ENODAEMON when the store is unreachable or the link broke during
 * the call (err says the change may or may not have happened), or
 * another store code, with `err`. */
int tc__cluster_key_cas(struct tc__cluster *cl, const char *key, const char *id,
			bool expect, uint64_t expect_gen, uint64_t *gen,
			char *err, size_t errlen);

/* A group operation of the global store for a local client
 * (proto/proto.h GROUP; blocking, call it off the loop thread): on the
 * node's connection (a JOIN with node "" ties the rank to this node), a
 * GET that waits on a connection of its own.  *out as tc__gsc_group.
 * Returns 0, TC_ENODAEMON when the store is unreachable, or the store's
 * code, with `err`. */
int tc__cluster_group(struct tc__cluster *cl, int type,
		      const struct tc__gsp_group_req *q,
		      struct tc__gsp_group *out, char *err, size_t errlen);
/* Keep renewing the JOIN `join` (every third of its lease) until the
 * group is decided or tc__cluster_hold_end(owner).  Returns 0 or
 * -ENOMEM. */
int tc__cluster_hold_add(struct tc__cluster *cl, uintptr_t owner,
			 const struct tc__gsp_group_req *join);
/* `owner` (a local connection) closed: every group it holds that is still
 * open is aborted for its rank (by the cluster thread, at once when the
 * store is reachable, else when it is back).  NULL cl is a no-op. */
void tc__cluster_hold_end(struct tc__cluster *cl, uintptr_t owner);

/* The "cluster" object of the daemon's STATUS (malloc'd JSON text). */
char *tc__cluster_status_json(struct tc__cluster *cl);

#endif /* TC_CLUSTER_H */
