/*
 * obj.h - the daemon's artifacts, keys, memory budget and leases.
 *
 * An artifact (struct tc__obj) is immutable once inserted: its bytes live in
 * a sealed memfd and its tensor table never changes.  Clients hold leases
 * (counted per connection by the server); an artifact with leases is never
 * evicted or freed; `rm` of a leased artifact hides it and the memory is
 * returned when the last lease goes.  Eviction picks the least recently
 * used artifact without leases whose policy allows it.
 *
 * Keys name artifacts and keep a version history.  A key is created by the
 * first publish; moving it to another artifact needs the caller to state the
 * generation it expects (compare-and-swap), so two publishers cannot
 * overwrite each other unknowingly.  A key whose artifact was evicted stays
 * and says so.  Everything here runs on the loop thread only.
 */
#ifndef TC_OBJ_H
#define TC_OBJ_H

#include <stdbool.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/hash.h"
#include "common/map.h"
#include "common/tensor.h"
#include "replica.h"
#include "shm.h"

struct tc__obj;
struct tc__obj_gpu;

/*
 * What obj.c asks of a tier that holds replicas of an artifact besides its
 * host segment (today the GPU tier, gpu_tier.c).  obj.c includes no tier:
 * the tier sets these with the replica state it hangs on the artifact, and
 * obj.c calls them only while that state exists.
 */
struct tc__obj_gpu_ops {
	/* The artifact is freed: release every replica (none may be leased
	 * or filling) and what they hold of it (a host pinning), and the
	 * tier's state; called before the host segment is freed. */
	void (*free)(struct tc__obj *o);
	/* The artifact was removed but is still leased: free the replicas
	 * no client maps. */
	void (*trim)(struct tc__obj *o);
	/* Append one JSON object per replica to `arr` (a json_t array). */
	void (*json)(const struct tc__obj *o, void *arr);
};

#define TC_KEY_MAX     512 /* bytes in a key name */
#define TC_KEY_HISTORY 64  /* versions remembered per key */

/* TensorCast's profiles (docs/durable.md).  The host copy's treatment is
 * here; the shared-disk copy of durable, ha and cold lives in durable.h.
 * Ordered from weakest to strongest host retention: a deduplicated
 * import keeps the stronger. */
enum tc__policy {
	TC_POLICY_CACHE,   /* evictable; may evict others to fit */
	TC_POLICY_COLD,	   /* disk copy required; host copy kept for a TTL */
	TC_POLICY_DURABLE, /* disk copy required; host copy best effort */
	TC_POLICY_HA,	   /* durable, and a replica on another node */
	TC_POLICY_WARM,	   /* evictable; refuse rather than evict others */
	TC_POLICY_PINNED,  /* never evicted; refuse rather than evict others */
};

/* The policy needs the shared-disk tier (durable, ha, cold). */
bool tc__policy_on_disk(enum tc__policy p);

/*
 * `host` is the artifact's place in the host tier (replica.h): READY while
 * it is in the table, EVICTING once removed (`dead`) while leases still
 * hold it, FILLING from tc__objs_fill until tc__objs_insert (its bytes
 * charged while they load), IDLE before (or when held on GPUs only).  Its
 * leases are the artifact's: any hold (a host attach, a GPU replica's lease, a
 * job) keeps the host copy from eviction.  An artifact held on GPUs only is in
 * the host tier too, with 0 bytes: listed, never chosen as a victim. Invariant:
 * dead <=> host.state == TC_REPLICA_EVICTING.
 */
struct tc__obj {
	char id[TC_ID_LEN + 1];
	struct tc__digest digest;
	struct tc__shm *shm;	    /* owned; sealed */
	struct tc__table table;	    /* owned; laid out */
	struct tc__buf attach_body; /* owned: id, size and encoded table */
	struct tc__replica host;    /* the host replica: bytes, leases, LRU */
	uint32_t nkeys;		    /* keys whose current target this is */
	bool dead;		    /* removed; free at zero leases */
	enum tc__policy policy;
	char source[512];	 /* where it came from, for inspect */
	uint64_t created_ms;	 /* unix time */
	double load_seconds;	 /* import/put duration */
	struct tc__obj_gpu *gpu; /* owned: GPU replicas (gpu_tier.h), or NULL */
	const struct tc__obj_gpu_ops *gpu_ops; /* set with `gpu` */
	uint64_t expires_ms; /* unix time its TTL passes; 0 = never */
	bool persisting; /* its shared-disk copy is being written (leased) */
	char persist_err[256];	   /* why the last such write failed, or "" */
	struct tc__digest *chunks; /* owned: the chunk digests, for peers */
	uint64_t nchunks;
};

struct tc__key_version {
	uint64_t gen;
	char id[TC_ID_LEN + 1];
	uint64_t unix_ms;
};

struct tc__key {
	char *name;		/* owned */
	char id[TC_ID_LEN + 1]; /* current target ("" after rm of the target) */
	uint64_t gen;		/* current generation, starts at 1 */
	struct tc__key_version hist[TC_KEY_HISTORY]; /* ring of versions */
	uint32_t nhist;
	bool moved; /* moved by another node (tc__objs_key_moved_away) */
};

/* Who else must know when a host replica can be served or a key moves:
 * the daemon's main wires the peer server here (the store does not know
 * the peer layer).  Called on the loop thread; `replica` with up=true
 * when a sealed host replica enters the table (or comes back), false when
 * it leaves it (rm, eviction, exit); the callee dups what it keeps.
 * `key` with id "" when the key no longer names an artifact. */
struct tc__objs_observer {
	void *arg;
	void (*replica)(void *arg, const struct tc__obj *o, bool up);
	void (*key)(void *arg, const char *key, const char *id);
	/* A put is filling `id` (a pull in progress, PUT_SERVE): serve the
	 * chunks later named by filling_have from `fd` (O_RDWR memfd, dup
	 * it); up=false when the put ends without a sealed replica.
	 * filling_have with `fetching`: chunks it is fetching from a seed
	 * (not held yet). */
	void (*filling)(void *arg, const char *id, int fd,
			const struct tc__table *t,
			const struct tc__digest *chunks, uint64_t nchunks,
			bool up);
	void (*filling_have)(void *arg, const char *id, const uint64_t *chunks,
			     uint32_t n, bool fetching);
	/* peer requests being answered now (the node's load in routing);
	 * called from the cluster thread */
	uint32_t (*uploads)(void *arg);
	/* A GPU copy of artifact `id` (a GPU tier replica, or a binding
	 * published as a source) on the daemon's CUDA device `ordinal`
	 * became ready (up: t and chunks given) or is about to be released
	 * or rewritten (!up: t NULL): `size` bytes at `dptr`, the daemon's
	 * mapping, valid until the !up call returns (which must not return
	 * while anything still reads it).  dptr tells copies of one id on
	 * one device apart. */
	void (*gpu_replica)(void *arg, const char *id,
			    const struct tc__table *t,
			    const struct tc__digest *chunks, uint64_t nchunks,
			    int ordinal, uint64_t dptr, uint64_t size, bool up);
};

/* Who else wants to know when host replicas and keys change (the
 * cluster, cluster.h).  Called on the loop thread, synchronously; a hook
 * must only queue.  Unset (NULL) members are skipped. */
struct tc__objs_hooks {
	void *arg;
	/* `o` gained a host replica (inserted, revived or given a copy) */
	void (*added)(void *arg, const struct tc__obj *o);
	/* `o` lost its host replica (rm, eviction, removal) */
	void (*removed)(void *arg, const struct tc__obj *o);
	/* `key` names `id` now, at generation `gen`; `prev` is what it
	 * named ("" when new).  Not called for tc__objs_key_adopt: the
	 * global store decided that move itself. */
	void (*key_moved)(void *arg, const char *key, const char *id,
			  const char *prev, uint64_t gen);
	/* a put fills `id` (a partial replica, chunks as filling_have
	 * names them); up=false: it ended without becoming a replica */
	void (*filling)(void *arg, const char *id, const struct tc__table *t,
			const char *policy, bool up);
	void (*filling_have)(void *arg, const char *id, const uint64_t *chunks,
			     uint32_t n);
	/* A GPU copy of `id` (t and policy given when up) appeared on, or
	 * left, the daemon's device `ordinal`: calls are balanced per copy,
	 * and several copies of one id on one device may exist (a replica
	 * and published bindings). */
	void (*gpu)(void *arg, const char *id, const struct tc__table *t,
		    const char *policy, int ordinal, bool up);
};

struct tc__objs {
	const struct tc__objs_observer *observer; /* borrowed, or NULL */
	struct tc__map by_id; /* id -> struct tc__obj (live and dead) */
	struct tc__map keys;  /* name -> struct tc__key */
	/* the host tier: budget, used (its replicas: artifacts, fills and
	 * the server's spare), the LRU of live artifacts and the eviction
	 * count */
	struct tc__tier host;
	uint64_t inserted;	     /* counter for status */
	struct tc__objs_hooks hooks; /* zeroed by tc__objs_init: none */
	/* An artifact is about to be evicted for room (tc__objs_fill),
	 * before it goes: the spill tier's chance to keep a copy on disk
	 * (spill.h).  NULL: none.  Loop thread; must not block. */
	void (*evicting)(void *arg, struct tc__obj *o);
	void *evicting_arg;
};

void tc__objs_init(struct tc__objs *s, uint64_t budget);
/* The live artifacts, most recently used first (the host tier's LRU):
 * for (o = tc__objs_first(s); o; o = tc__objs_next(o)). */
struct tc__obj *tc__objs_first(const struct tc__objs *s);
struct tc__obj *tc__objs_next(const struct tc__obj *o);
/* Free every artifact regardless of leases (daemon exit). */
void tc__objs_release(struct tc__objs *s);

/* Parse a policy name; returns 0, or TC_EINVAL for unknown names.  Whether
 * the shared-disk tier can honour durable, ha and cold is the caller's
 * check (durable.h). */
int tc__policy_parse(const char *name, enum tc__policy *out, char *err,
		     size_t errlen);
const char *tc__policy_name(enum tc__policy p);

/* Begin `o`'s host replica as a FILLING one of `bytes` (IDLE -> FILLING),
 * evicting LRU artifacts when `policy` allows: the bytes count in the host
 * tier's used (and filling) bytes from here.  Returns 0 or TC_ENOSPACE
 * with a message saying what holds the memory. */
int tc__objs_fill(struct tc__objs *s, struct tc__obj *o, uint64_t bytes,
		  enum tc__policy policy, char *err, size_t errlen);
/* Free `o`, never inserted, whose fill failed or was cancelled: its
 * FILLING replica goes (gone) and the host tier is uncharged.  NULL: no-op. */
void tc__objs_fill_free(struct tc__objs *s, struct tc__obj *o);

/* Insert `o`: its FILLING host replica becomes READY (an artifact held on
 * GPUs only, never filled on the host, joins with 0 bytes).  When a live
 * artifact with the same id exists, `o`'s fill goes (its bytes move to the
 * existing artifact when that had no host copy), `o` is freed and *out is
 * the existing one; else *out = o.  Returns 0 or -ENOMEM (o untouched). */
int tc__objs_insert(struct tc__objs *s, struct tc__obj *o,
		    struct tc__obj **out);
/* Key name or artifact id to a live artifact; NULL with a message. */
struct tc__obj *tc__objs_resolve(struct tc__objs *s, const char *ref, char *err,
				 size_t errlen, int *rc);
void tc__objs_touch(struct tc__objs *s, struct tc__obj *o);
void tc__objs_lease(struct tc__objs *s, struct tc__obj *o);
/* Remove `o` from the table (evicted: its keys dangle); freed now or at
 * its last lease. */
void tc__objs_kill(struct tc__objs *s, struct tc__obj *o);
/* Drop one lease; frees a dead artifact at zero. */
void tc__objs_unlease(struct tc__objs *s, struct tc__obj *o);
/* The checks of tc__objs_key_set that do not need the artifact: the key's
 * name, and with `expect` its generation.  Run before a load, so a CAS
 * import or put that cannot publish fills, loads and evicts nothing.
 * Returns 0, TC_EINVAL or TC_ECONFLICT with err set. */
int tc__objs_key_precheck(struct tc__objs *s, const char *key, bool expect,
			  uint64_t expect_gen, char *err, size_t errlen);
/* Take back an artifact that an import or put just inserted (not a
 * deduplicated one) when publishing its key failed: unless a key or a
 * lease has reached it since, it goes, and its memory with it. */
void tc__objs_discard_new(struct tc__objs *s, struct tc__obj *o);
/* Remove by key (the key, and the artifact when no other key names it) or
 * by id (the artifact and the keys naming it).  Leased artifacts are freed
 * at their last release. */
int tc__objs_rm(struct tc__objs *s, const char *ref, char *err, size_t errlen);

/* Point `key` at artifact `id`.  Without `expect`, only creating the key or
 * re-publishing the same artifact succeeds; with it, the key's current
 * generation must equal `expect_gen` (0 = the key must not exist).
 * *gen receives the key's generation after the call.  Returns 0, TC_EINVAL,
 * TC_ENOTFOUND, TC_ECONFLICT or -ENOMEM. */
int tc__objs_key_set(struct tc__objs *s, const char *key, const char *id,
		     bool expect, uint64_t expect_gen, uint64_t *gen, char *err,
		     size_t errlen);

/* The checks of tc__objs_key_set that come before any generation: the
 * key's name, and that `id` (a full id or a unique prefix) names a live
 * artifact, whose full id goes to full[TC_ID_LEN + 1].  Returns 0,
 * TC_EINVAL or TC_ENOTFOUND with err set. */
int tc__objs_key_target(struct tc__objs *s, const char *key, const char *id,
			char *full, char *err, size_t errlen);
bool tc__objs_key_exists(struct tc__objs *s, const char *key);
/* The id `key` names here into id[len] ("" when it names nothing or does
 * not exist). */
void tc__objs_key_id(struct tc__objs *s, const char *key, char *id, size_t len);
/* Keys under this prefix are the node's own even in a cluster: group
 * realization's node-scope records (python/tcast/tools/
 * group_realization.py), whose ranks are one server's.  They are neither
 * published to nor decided by the global store, so two servers may run
 * node-scope groups of the same name. */
#define TC_KEY_NODE_PREFIX "tcast.group/"
bool tc__key_node_local(const char *key);
/* Record a key change the global store decided (a daemon in a cluster,
 * docs/cluster.md "Keys across the cluster"): `key` names `id` at the
 * cluster's generation `gen`, with no local compare and no key_moved
 * hook (the global store has it already).  The artifact may be gone by
 * now (removed meanwhile): the key then names it dangling, as after an
 * eviction.  Returns 0 or -ENOMEM. */
int tc__objs_key_adopt(struct tc__objs *s, const char *key, const char *id,
		       uint64_t gen);
/* Another node moved `key` cluster-wide: when this daemon's record is
 * still (`had_id`, `had_gen`), adopt (`id`, `gen`) as tc__objs_key_adopt
 * does, remembering that the move came from elsewhere (an attach of the
 * key, when `id` is not held here, says to pull it).  Returns 1 when the
 * key moved here, 0 when the record changed meanwhile (left alone), or
 * -ENOMEM. */
int tc__objs_key_moved_away(struct tc__objs *s, const char *key,
			    const char *had_id, uint64_t had_gen,
			    const char *id, uint64_t gen);

/* Recreate a key from the daemon's metadata at start (versions oldest
 * first, the last one current).  Returns 0 or -ENOMEM. */
struct tc__mdb_version;
int tc__objs_key_restore(struct tc__objs *s, const char *key,
			 const struct tc__mdb_version *v, uint32_t n);

/* Tell the observer and the hooks of a GPU copy of an artifact (struct
 * tc__objs_observer.gpu_replica): `o` when up (its id, table, chunk
 * digests and policy), NULL allowed when down (`id` names it).  Nothing
 * when o has no chunk digests (it could not be verified by a peer). */
void tc__objs_notify_gpu(struct tc__objs *s, const char *id,
			 const struct tc__obj *o, int ordinal, uint64_t dptr,
			 uint64_t size, bool up);

/* Allocate an empty artifact (caller fills shm, table, id). */
struct tc__obj *tc__obj_new(void);
/* Free an artifact that is not in the table. */
void tc__obj_free(struct tc__obj *o);
/* Compute the id from the table and chunk digests, build attach_body. */
int tc__obj_finish(struct tc__obj *o, const struct tc__digest *chunks,
		   uint64_t nchunks);

/* JSON documents for the read verbs (malloc'd strings; NULL on OOM). */
/* `not_artifacts`: budget bytes held for other things (the spare), left out
 * of used_bytes. */
/* `more`: a json_t array of entries to append (artifacts on the shared
 * disk only), consumed; NULL for none. */
char *tc__objs_list_json(struct tc__objs *s, uint64_t not_artifacts,
			 void *more);
char *tc__objs_inspect_json(struct tc__objs *s, struct tc__obj *o);
/* INSPECT in two halves: the summary (keys, leases, replicas) on the loop,
 * then the tensor table and the dump, which read only o's table (fixed
 * once inserted) and may run on a worker while o is leased.  head is a
 * json_t *, consumed by finish. */
void *tc__objs_inspect_head(struct tc__objs *s, struct tc__obj *o);
char *tc__obj_inspect_finish(void *head, const struct tc__obj *o);
/* The same for a table alone: an artifact known by its manifest only (on
 * the shared disk or in the spill folder, not in memory). */
char *tc__table_inspect_finish(void *head, const struct tc__table *t);
/* Host bytes a table costs beyond the artifact's segment (the table, its
 * names, the ATTACH body): charged to the budget with the segment. */
#define TC_TABLE_FREE_BYTES 4096 /* not charged (see tc__table_cost) */
uint64_t tc__table_cost(const struct tc__table *t);
char *tc__objs_keys_json(struct tc__objs *s, const char *key, int *rc,
			 char *err, size_t errlen);

#endif /* TC_OBJ_H */
